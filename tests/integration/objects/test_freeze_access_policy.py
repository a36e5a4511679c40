"""Freezing by the container's stored access policy, against Azurite: real SAS writers, real refusals.

A writer holds a SAS token bound to the policy ``writers`` (``si=writers``); another
policy ``readers`` and the container's public access level must come through a freeze
and an unfreeze untouched.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import AccessPolicy, BlobServiceClient, ContainerClient, generate_container_sas

import devstack
from bascule.governance.routing import RoutingRegistry
from bascule.objects.freeze import freeze, frozen_by, unfreeze
from bascule.objects.freeze_access_policy import RECORD, PolicyFreezeError, read_policies, sas_probe
from bascule.objects.freeze_leases import FreezeError
from bascule.objects.phases import PhaseFailed
from bascule.objects.preflight import preflight_object_store
from bascule.storage.azure_blob import AzureBlobContainer
from bascule.storage.s3 import S3Bucket
from bascule.workload import Freeze, parse_manifest

pytestmark = pytest.mark.integration

EXPIRY = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
START = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
POLICY = Freeze(method="stored_access_policy", policy_id="writers", probe_timeout_seconds=10)


class Counter:
    """A ``raw_response_hook``: every response the SDK gets, by method: the proof of O(1), not an estimate."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    def __call__(self, response) -> None:  # type: ignore[no-untyped-def]
        self.requests.append(response.http_request.method)


def _service(blob_service, counter: Counter) -> BlobServiceClient:
    return BlobServiceClient(
        blob_service.url,
        credential={"account_name": devstack.AZURITE_ACCOUNT, "account_key": devstack.AZURITE_KEY},
        raw_response_hook=counter,
    )


def _make(blob_service, name: str, blobs: int = 3) -> ContainerClient:
    container = blob_service.get_container_client(name)
    if container.exists():
        container.delete_container()
    container.create_container(metadata={"owner": "data-platform"}, public_access="blob")
    container.set_container_access_policy(
        {
            "writers": AccessPolicy(permission="racwl", start=START, expiry=EXPIRY),
            "readers": AccessPolicy(permission="rl", expiry=EXPIRY),
            "legacy-writers": AccessPolicy(permission="rcwl", expiry=EXPIRY),
        },
        public_access="blob",
    )
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: container.upload_blob(f"data/{i:04d}.csv", b"1,2\n", overwrite=True), range(blobs)))
    return container


@pytest.fixture
def container(blob_service, request: pytest.FixtureRequest):
    client = _make(blob_service, f"policy-{abs(hash(request.node.name)) % 10**8}")
    yield client
    client.delete_container()


def _writer(container: ContainerClient, policy_id: str = "writers") -> ContainerClient:
    """What an application holds: a container SAS bound to the policy, no permission of its own."""
    sas = generate_container_sas(
        container.account_name, container.container_name, account_key=devstack.AZURITE_KEY, policy_id=policy_id
    )
    return ContainerClient(container.url.rsplit("/", 1)[0], container.container_name, credential=sas)


def _acl(container: ContainerClient):
    public_access, policies = read_policies(container)
    return public_access, {k: v.to_dict() for k, v in policies.items()}


def test_freeze_cuts_the_sas_writer_off_keeps_reads_and_unfreeze_restores_exactly(container) -> None:
    writer = _writer(container)
    writer.upload_blob("data/before.csv", b"acknowledged", overwrite=True)  # the policy lets it write
    acl_before = _acl(container)
    recorded: list[dict] = []

    report = freeze(container, "data/", "w1", config=POLICY, on_record=recorded.append)

    assert report.method == "stored_access_policy" and report.leased == 0
    assert report.policy_before == {"policy_id": "writers", "permission": "racwl", "start": START, "expiry": EXPIRY}
    assert recorded == [report.policy_before], "the evidence gets the policy before it changes"
    assert report.frozen_permission == "rl"
    assert report.probe_attempts == 1, "Azurite applies a policy change at once"
    assert 0 <= report.probe_wait_seconds < 5
    assert frozen_by(container) == "w1"
    assert container.get_container_properties().metadata["owner"] == "data-platform", "existing metadata kept"
    public_access, policies = _acl(container)
    assert public_access == "blob", "the public access level must not change (omitting it makes a container private)"
    assert policies["writers"] == {**acl_before[1]["writers"], "permission": "rl"}
    assert {k: v for k, v in policies.items() if k != "writers"} == {
        k: v for k, v in acl_before[1].items() if k != "writers"
    }, "the other policies are untouched"

    with pytest.raises(HttpResponseError) as refused:
        writer.upload_blob("data/during.csv", b"must be refused", overwrite=True)
    assert refused.value.status_code == 403
    with pytest.raises(HttpResponseError) as refused_overwrite:
        writer.upload_blob("data/before.csv", b"overwrite refused", overwrite=True)
    assert refused_overwrite.value.status_code == 403
    assert writer.download_blob("data/before.csv").readall() == b"acknowledged", "reads still work"
    assert "data/before.csv" in {b.name for b in writer.list_blobs(name_starts_with="data/")}, "listing still works"
    assert not any(b.name.startswith("_bascule_freeze_probe/") for b in container.list_blobs()), "no probe left"

    again = freeze(container, "data/", "w1", config=POLICY, on_record=recorded.append)
    assert again.policy_before == report.policy_before, "a re-freeze records the original, not the frozen policy"

    restored = unfreeze(container, "data/", "w1", config=POLICY)
    assert restored.policy_restored == report.policy_before and restored.released == 0
    assert _acl(container) == acl_before, "unfreeze restores exactly what was recorded"
    assert frozen_by(container) is None and RECORD not in container.get_container_properties().metadata
    writer.upload_blob("data/after.csv", b"writable again", overwrite=True)
    assert unfreeze(container, "data/", "w1", config=POLICY).policy_restored is None, "unfreezing twice is harmless"
    assert _acl(container) == acl_before


def test_a_missing_policy_is_refused_and_nothing_changes(container) -> None:
    acl_before, metadata_before = _acl(container), container.get_container_properties().metadata
    config = Freeze(method="stored_access_policy", policy_id="uploaders")
    with pytest.raises(PolicyFreezeError) as caught:
        freeze(container, "data/", "w1", config=config)
    message = str(caught.value)
    assert f"stored access policy 'uploaders' does not exist on container '{container.container_name}'" in message
    assert "['legacy-writers', 'readers', 'writers']" in message
    assert "cutover.freeze.policy_id" in message and "docs/runbooks.md#object-freeze-failed" in message
    assert _acl(container) == acl_before
    assert container.get_container_properties().metadata == metadata_before


def test_a_probe_still_accepted_restores_the_policy_and_stops(container) -> None:
    """The writers' real policy is ``legacy-writers``: freezing ``writers`` does not stop them."""
    acl_before = _acl(container)
    config = Freeze(method="stored_access_policy", policy_id="writers", probe_timeout_seconds=1.5)
    waits: list[float] = []
    started = time.monotonic()
    with pytest.raises(PolicyFreezeError) as caught:
        freeze(
            container, "data/", "w1", config=config,
            probe=sas_probe(container, "w1", "legacy-writers"),
            sleep=lambda s: (waits.append(s), time.sleep(s)),
        )  # fmt: skip
    waited = time.monotonic() - started
    message = str(caught.value)
    assert "a write with a SAS of policy 'writers'" in message and "was still accepted" in message
    assert "The policy is restored to 'racwl'" in message and "routing is unchanged" in message
    assert "docs/runbooks.md#object-freeze-failed" in message
    # Wall time, not the sum of sleeps: under load each probe write itself takes part of the timeout.
    assert waits and waited >= 1.5, "it waited the whole probe timeout for the policy change before giving up"
    assert _acl(container) == acl_before, "the policy is restored"
    assert frozen_by(container) is None
    _writer(container).upload_blob("data/still.csv", b"writable", overwrite=True)
    assert not any(b.name.startswith("_bascule_freeze_probe/") for b in container.list_blobs())


def test_a_probe_refused_only_after_a_while_is_waited_for(container) -> None:
    """Real Azure may take up to 30 s: the freeze returns only once the probe is refused, and says how long."""
    answers = iter([True, True, False])
    report = freeze(container, "data/", "w1", config=POLICY, probe=lambda: next(answers), sleep=lambda _: None)
    assert report.probe_attempts == 3
    unfreeze(container, "data/", "w1", config=POLICY)


def test_requests_do_not_grow_with_the_number_of_blobs(blob_service) -> None:
    counts = {}
    for blobs in (10, 200):
        counter, probe_counter = Counter(), Counter()
        name = f"policy-count-{blobs}"
        _make(blob_service, name, blobs)
        container = _service(blob_service, counter).get_container_client(name)
        probe = sas_probe(container, "w1", "writers", raw_response_hook=probe_counter)
        freeze(container, "data/", "w1", config=POLICY, probe=probe)
        frozen = list(counter.requests) + list(probe_counter.requests)
        counter.requests.clear()
        unfreeze(container, "data/", "w1", config=POLICY)
        counts[blobs] = (frozen, list(counter.requests))
        container.delete_container()
    assert counts[10] == counts[200], counts
    frozen, unfrozen = counts[200]
    # read ACL, read metadata, write metadata, write ACL, one probe PUT (refused)
    assert len(frozen) == 5 and frozen.count("PUT") == 3, frozen
    # read metadata, read ACL, write ACL, write metadata
    assert len(unfrozen) == 4, unfrozen


def test_leases_are_refused_above_the_cap_before_any_lease(container) -> None:
    with pytest.raises(FreezeError) as caught:
        freeze(container, "data/", "w1", config=Freeze(method="leases", max_objects=2))
    assert "holds more than 2 blobs under prefix 'data/' (counted 3 before stopping)" in str(caught.value)
    assert "cutover.freeze.method: stored_access_policy" in str(caught.value)
    assert frozen_by(container) is None
    container.upload_blob("data/0000.csv", b"not leased", overwrite=True)


# -- preflight --------------------------------------------------------------------------

MANIFEST = """\
id: freeze_preflight
kind: object_store
description: Preflight of the freeze.
owner: data-platform
source: {{conn_id: hdh_azure_blob, container: {container}, prefix: data/}}
target: {{conn_id: hdh_scaleway_s3, bucket: freeze-preflight, region: fr-par, create_if_missing: true}}
evidence: {{conn_id: hdh_scaleway_s3, bucket: freeze-preflight-evidence, region: fr-par, create_if_missing: true}}
approvals: {{approvers: [approver1], required: 1}}
cutover:
  window: {{timezone: Europe/Paris, days: [sunday], start: "02:00", end: "05:00"}}
  freeze: {freeze}
"""


def _freeze_check(blob_service, s3_client, container: ContainerClient, freeze_yaml: str):
    text = MANIFEST.format(container=container.container_name, freeze=freeze_yaml)
    workload = parse_manifest(Path("freeze_preflight.yaml"), text)
    source = AzureBlobContainer(blob_service, container.container_name)
    report = preflight_object_store(
        workload, "freeze_preflight.yaml", source, S3Bucket(s3_client, "freeze-preflight"),
        S3Bucket(s3_client, workload.evidence.bucket),
    )  # fmt: skip
    [check] = [c for c in report.checks if c.name == "source_freeze"]
    return check


def test_preflight_refuses_leases_above_the_cap(blob_service, s3_client, container) -> None:
    check = _freeze_check(blob_service, s3_client, container, "{method: leases, max_objects: 2}")
    assert not check.ok
    assert check.detail.startswith(
        f"container '{container.container_name}' holds more than 2 blobs under prefix 'data/' (counted 3 before "
        "stopping); freezing by leases takes one request per blob while writers are blocked"
    )
    assert "Set cutover.freeze.method: stored_access_policy" in check.detail
    assert check.detail.endswith("in freeze_preflight.yaml")
    ok = _freeze_check(blob_service, s3_client, container, "{method: leases, max_objects: 3}")
    assert ok.ok and "3 blob(s) under 'data/' (cap 3)" in ok.detail
    assert "rotate the account keys, remove the role assignments" in ok.detail


def test_preflight_refuses_a_missing_policy_and_names_the_unfreezable_writers(
    blob_service, s3_client, container
) -> None:
    missing = _freeze_check(blob_service, s3_client, container, "{method: stored_access_policy, policy_id: uploaders}")
    assert not missing.ok
    assert missing.detail.startswith(
        f"stored access policy 'uploaders' does not exist on container '{container.container_name}' "
        "(policies there: ['legacy-writers', 'readers', 'writers'])"
    )
    present = _freeze_check(blob_service, s3_client, container, "{method: stored_access_policy, policy_id: writers}")
    assert present.ok, present.detail
    assert "freeze by stored access policy 'writers' (now 'racwl'" in present.detail
    assert (
        "writers that authenticate with the account key or with an Entra ID role assignment are not stopped by "
        "this policy: rotate the account keys, remove the role assignments (docs/runbooks.md#object-freeze-writers)"
    ) in present.detail
    assert _acl(container)[1]["writers"]["permission"] == "racwl", "preflight changes nothing"


# -- inside the cutover phase -----------------------------------------------------------

CUTOVER_MANIFEST = """\
id: policy_cutover
kind: object_store
description: Cutover frozen by the stored access policy.
owner: data-platform
source: {{conn_id: hdh_azure_blob, container: {container}, prefix: data/}}
target: {{conn_id: hdh_scaleway_s3, bucket: {bucket}, region: fr-par}}
evidence: {{conn_id: hdh_scaleway_s3, bucket: {bucket}-evidence, region: fr-par}}
transfer: {{shards: 1}}
approvals: {{approvers: [approver1], required: 1}}
cutover:
  window: {{timezone: Europe/Paris, days: [sunday], start: "02:00", end: "05:00"}}
  freeze: {{method: stored_access_policy, policy_id: writers, probe_timeout_seconds: 10, delta_rounds: {rounds}}}
"""


def _run_cutover(blob_service, s3_client, container: ContainerClient, before_switch, after_round=None, rounds=3):
    from bascule.governance.evidence.store import EvidenceStore
    from bascule.governance.routing import RoutingRegistry
    from bascule.objects.phases import cutover, take_snapshot, transfer_shard

    bucket = f"cut-{container.container_name}"
    for made in (bucket, f"{bucket}-evidence"):
        s3_client.create_bucket(Bucket=made, CreateBucketConfiguration={"LocationConstraint": "fr-par"})
    text = CUTOVER_MANIFEST.format(container=container.container_name, bucket=bucket, rounds=rounds)
    workload = parse_manifest(Path("policy_cutover.yaml"), text)
    source, target = AzureBlobContainer(blob_service, container.container_name), S3Bucket(s3_client, bucket)
    evidence = EvidenceStore(s3_client, workload.evidence.bucket, workload.id)
    routing = RoutingRegistry(s3_client, workload.evidence.bucket)
    snapshot = take_snapshot(workload, source, evidence, "snap1")
    transfer_shard(workload, source, target, evidence, snapshot, 0, 1)
    _writer(container).upload_blob("data/late.csv", b"after the snapshot", overwrite=True)  # the delta
    record = cutover(
        workload, container_client=container, source=source, target=target, target_for=lambda _: target,
        evidence=evidence, routing=routing, snapshot=snapshot, run_id="r1", attempt=1, context={}, log=print,
        before_switch=before_switch, after_round=after_round or (lambda _: None),
    )  # fmt: skip
    return record, routing, evidence


def test_cutover_freezes_by_policy_and_records_the_wait(blob_service, s3_client, container) -> None:
    acl_before = _acl(container)
    refused: list[int] = []

    def writer_is_cut_off() -> None:  # the moment before routing switches
        with pytest.raises(HttpResponseError) as caught:
            _writer(container).upload_blob("data/too-late.csv", b"x", overwrite=True)
        refused.append(caught.value.status_code)

    record, routing, evidence = _run_cutover(blob_service, s3_client, container, writer_is_cut_off)
    assert refused == [403]
    assert record["freeze_method"] == "stored_access_policy"
    assert 0 <= record["probe_wait_seconds"] <= record["freeze_seconds"] <= record["freeze_to_switch_seconds"]
    assert record["freeze"]["policy_before"] == acl_before[1]["writers"]
    before_key = evidence.prefix + "snapshots/snap1/cutover-try1/freeze-policy-before.json"
    assert evidence.read_json(before_key) == acl_before[1]["writers"], "the policy as it was is in the evidence"
    assert routing.read("policy_cutover")[0].live == "scaleway"
    assert _acl(container)[1]["writers"]["permission"] == "rl", "the source stays frozen after the switch"


def test_a_cutover_stopped_before_the_switch_unfreezes_and_leaves_routing(blob_service, s3_client, container) -> None:
    acl_before = _acl(container)

    def policy_says_no() -> None:
        raise PolicyFreezeError("stopped by the test before the switch")

    with pytest.raises(PolicyFreezeError, match="stopped by the test"):
        _run_cutover(blob_service, s3_client, container, policy_says_no)
    assert _acl(container) == acl_before, "the policy is restored as recorded"
    assert frozen_by(container) is None
    _writer(container).upload_blob("data/writable.csv", b"writers resume", overwrite=True)


# -- delta rounds: a writer the freeze does not stop -------------------------------------


def _unstoppable(container: ContainerClient):
    """A writer with the account key: no stored access policy can cut it off (docs/runbooks.md#object-freeze-writers)."""
    return container  # the fixture's client holds the account key


def test_a_change_after_the_delta_listing_is_synced_by_a_second_round(blob_service, s3_client, container) -> None:
    rounds: list[int] = []

    def late_change(number: int) -> None:  # lands after round 1 listed and copied, before its parity lists
        rounds.append(number)
        if number == 1:
            _unstoppable(container).upload_blob("data/0001.csv", b"changed after the delta listing", overwrite=True)
            _unstoppable(container).upload_blob("data/late-new.csv", b"new after the delta listing", overwrite=True)

    record, routing, evidence = _run_cutover(blob_service, s3_client, container, lambda: None, late_change)
    assert rounds == [1, 2], "the parity of round 1 caught the change, round 2 synced it and its parity held"
    assert record["delta_rounds"] == 2
    assert record["late_changes"] == [
        {"round": 1, "count": 2, "objects": ["data/0001.csv (modified)", "data/late-new.csv (new)"]}
    ]
    assert record["parity"]["success"] and record["parity"]["problems"] == 0
    assert record["delta"]["changed"] == ["data/late.csv"], "delta: what changed since the snapshot (round 1)"
    [round_2] = record["later_deltas"]
    assert (round_2["new"], round_2["modified"], round_2["copied"]) == (1, 1, 2), round_2
    assert routing.read("policy_cutover")[0].live == "scaleway"
    bucket = f"cut-{container.container_name}"
    for key, body in (
        ("0001.csv", b"changed after the delta listing"),  # the target has no prefix; the source's is data/
        ("late-new.csv", b"new after the delta listing"),
    ):
        assert s3_client.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key
    final = evidence.read_json(evidence.prefix + "snapshots/snap1/cutover-try1/round-2/parity.json")
    assert final["problem_count"] == 0 and final["objects"] == record["parity"]["objects"]


def test_a_writer_that_keeps_changing_fails_after_the_rounds_unfreezes_and_leaves_routing(
    blob_service, s3_client, container
) -> None:
    acl_before = _acl(container)
    rounds: list[int] = []

    def keeps_writing(number: int) -> None:
        rounds.append(number)
        _unstoppable(container).upload_blob("data/0002.csv", f"version {number}".encode(), overwrite=True)

    with pytest.raises(PhaseFailed) as caught:
        _run_cutover(blob_service, s3_client, container, lambda: None, keeps_writing, rounds=2)
    assert rounds == [1, 2], "exactly delta_rounds rounds, then it stops"
    message = str(caught.value)
    assert "the source kept changing after 2 delta round(s) (cutover.freeze.delta_rounds)" in message
    assert "['data/0002.csv (modified)']" in message
    assert "routing is unchanged" in message and message.endswith("(docs/runbooks.md#object-delta-not-settled)")
    routing = RoutingRegistry(s3_client, f"cut-{container.container_name}-evidence")
    current = routing.read("policy_cutover")[0]
    assert current is None or current.live == "azure", "routing never switched"
    assert _acl(container) == acl_before, "the policy is restored exactly as recorded"
    assert frozen_by(container) is None
    _writer(container).upload_blob("data/writable.csv", b"writers resume", overwrite=True)
