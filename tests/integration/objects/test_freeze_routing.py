from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError

from bascule.governance.routing import Location, RoutingConflict, RoutingRegistry
from bascule.objects.freeze import freeze as freeze_source
from bascule.objects.freeze import frozen_by, lease_id_for, unfreeze

pytestmark = pytest.mark.integration


@pytest.fixture
def container(blob_service, request: pytest.FixtureRequest):
    service = blob_service
    name = f"freeze-{abs(hash(request.node.name)) % 10**8}"
    client = service.create_container(name, metadata={"owner": "data-platform"})
    for key in ("data/a.csv", "data/b c é.csv", "other/x.csv"):
        client.upload_blob(key, b"1,2\n", overwrite=True)
    yield client
    unfreeze(client, "", "w1")
    client.delete_container()


def test_freeze_blocks_writes_keeps_reads_and_unfreeze_restores(container) -> None:
    etags = {b.name: b.etag for b in container.list_blobs()}
    report = freeze_source(container, "data/", "w1")
    assert report.leased == 2 and report.failures == []
    assert frozen_by(container) == "w1"
    assert container.get_container_properties().metadata["owner"] == "data-platform", "existing metadata kept"
    assert container.download_blob("data/a.csv").readall() == b"1,2\n", "reads still work"
    with pytest.raises(HttpResponseError, match="lease"):
        container.upload_blob("data/a.csv", b"changed", overwrite=True)
    with pytest.raises(HttpResponseError):
        container.delete_blob("data/b c é.csv")
    container.upload_blob("other/x.csv", b"outside the prefix", overwrite=True)  # not frozen
    assert {b.name: b.etag for b in container.list_blobs(name_starts_with="data/")} == {
        k: v for k, v in etags.items() if k.startswith("data/")
    }, "leasing must not change ETags, or the delta sync would re-copy everything"

    assert freeze_source(container, "data/", "w1").leased == 2, "freezing twice is harmless"

    released = unfreeze(container, "data/", "w1")
    assert released.released == 2
    assert frozen_by(container) is None
    container.upload_blob("data/a.csv", b"writable again", overwrite=True)
    assert unfreeze(container, "data/", "w1").released == 0, "unfreezing twice is harmless"


def test_lease_id_is_stable_per_workload() -> None:
    assert lease_id_for("w1") == lease_id_for("w1") != lease_id_for("w2")


@pytest.fixture
def registry(s3_client, request: pytest.FixtureRequest) -> RoutingRegistry:
    client = s3_client
    bucket = f"routing-{abs(hash(request.node.name)) % 10**8}"
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "fr-par"})
    return RoutingRegistry(client, bucket)


AZURE = Location("azure", "https://hdh.blob.core.windows.net", "snds", "")
SCALEWAY = Location("scaleway", "https://s3.fr-par.scw.cloud", "hdh-snds", "")


def test_routing_switch_is_idempotent_and_keeps_history(registry: RoutingRegistry) -> None:
    assert registry.read("w1") == (None, None)
    assert registry.ensure("w1", AZURE, SCALEWAY, "run-1").live == "azure"
    routing, changed = registry.switch("w1", "scaleway", "run-1", "cutover approved by approver1")
    assert changed and routing.live_location() == SCALEWAY
    again, changed = registry.switch("w1", "scaleway", "run-1", "retry")
    assert not changed and again.live == "scaleway"
    back, changed = registry.switch("w1", "azure", "run-2", "rollback requested")
    assert changed
    assert [h["live"] for h in back.history] == ["azure", "scaleway", "azure"]
    assert registry.read("w1")[0].live == "azure"
    assert registry.ensure("w1", AZURE, SCALEWAY, "run-3").live == "azure", "ensure never resets a routing"


def test_concurrent_switch_is_detected(registry: RoutingRegistry) -> None:
    registry.ensure("w2", AZURE, SCALEWAY, "run-1")
    stale, stale_etag = registry.read("w2")
    registry.switch("w2", "scaleway", "run-1", "first")
    stale.live = "azure"
    with pytest.raises(RoutingConflict, match="changed while this run was switching it"):
        registry._write(stale, etag=stale_etag)
