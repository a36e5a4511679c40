"""The project's own scripts start the stand-ins, clients reach them, and stopping leaves nothing."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import boto3
import pytest
from azure.storage.blob import BlobServiceClient
from botocore.exceptions import ClientError

import devstack

pytestmark = pytest.mark.integration


def _pids_under(state: Path) -> dict[str, int]:  # every service, the SSE-C stand-in included
    return {name: int((state / f"{name}.pid").read_text()) for name in devstack.SERVICES}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_scripts_start_reach_and_stop_the_standins(tmp_path: Path) -> None:
    ports = devstack.Ports(azurite=devstack.free_port(), moto=devstack.free_port(), ssec=devstack.free_port())
    state = tmp_path / "state"
    devstack.up(state, ports)
    pids = _pids_under(state)
    try:
        blob = BlobServiceClient(
            devstack.azurite_url(ports.azurite),
            credential={"account_name": devstack.AZURITE_ACCOUNT, "account_key": devstack.AZURITE_KEY},
        )
        container = blob.create_container("standin-check")
        container.upload_blob("héllo wörld/a+b%20.txt", b"bonjour", overwrite=True)
        assert container.download_blob("héllo wörld/a+b%20.txt").readall() == b"bonjour"
        assert (state / "azurite").is_dir(), "Azurite must keep its data in the state folder"

        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{ports.moto}",
            region_name="fr-par",
            aws_access_key_id="x",
            aws_secret_access_key="y",
        )
        s3.create_bucket(Bucket="standin-check", CreateBucketConfiguration={"LocationConstraint": "fr-par"})
        s3.put_object(Bucket="standin-check", Key="a b/ü.txt", Body=b"salut")
        assert s3.get_object(Bucket="standin-check", Key="a b/ü.txt")["Body"].read() == b"salut"
        assert s3.get_bucket_location(Bucket="standin-check")["LocationConstraint"] == "fr-par"
        # Through the SSE-C stand-in, an object written with a key cannot be read without it.
        ssec = boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{ports.ssec}", region_name="fr-par",
            aws_access_key_id="x", aws_secret_access_key="y",
        )  # fmt: skip
        key = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": base64.b64decode(devstack.LOCAL_SSE_C_KEY)}
        ssec.put_object(Bucket="standin-check", Key="enc.txt", Body=b"chiffre", **key)
        with pytest.raises(ClientError) as refused:
            ssec.head_object(Bucket="standin-check", Key="enc.txt")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert ssec.get_object(Bucket="standin-check", Key="enc.txt", **key)["Body"].read() == b"chiffre"

        # Starting again is a no-op while they run: no second copy, no port clash.
        devstack.up(state, ports)
        assert _pids_under(state) == pids
    finally:
        stopped = devstack.down(state)
    assert sorted(stopped) == ["azurite", "moto", "ssec"]
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) still running after down()"
    assert not any((state / f"{name}.pid").exists() for name in devstack.SERVICES)
    assert devstack.down(state) == [], "a second down() must find nothing to stop"


def test_listens_on_loopback_only(standins: devstack.Ports) -> None:
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
    for port in (standins.azurite, standins.moto, standins.ssec):
        local = [line.split()[1] for line in listening if line.split()[3] == "0A"]  # 0A = LISTEN
        addresses = {addr.split(":")[0] for addr in local if int(addr.split(":")[1], 16) == port}
        assert addresses == {"0100007F"}, f"port {port} listens on {addresses}, expected 127.0.0.1 only"


def test_busy_port_gives_a_clear_error(tmp_path: Path, standins: devstack.Ports) -> None:
    with pytest.raises(RuntimeError, match=rf"port {standins.moto} for moto is already in use"):
        devstack.start_moto(tmp_path, standins.moto)
    assert not (tmp_path / "moto.pid").exists()


def test_connections_env_is_the_one_definition(standins: devstack.Ports) -> None:
    env = devstack.local_connections(standins)
    assert set(env) == {
        "AIRFLOW_CONN_HDH_AZURE_BLOB", "AIRFLOW_CONN_HDH_SCALEWAY_S3", "AIRFLOW_CONN_HDH_SCALEWAY_SSE_C",
        "AIRFLOW_VAR_BASCULE_DEPLOYMENT",
    }  # fmt: skip
    # The S3 connection goes through the SSE-C stand-in; the key is 32 bytes, base64, in the password.
    assert json.loads(env["AIRFLOW_CONN_HDH_SCALEWAY_S3"])["extra"]["endpoint_url"].endswith(f":{standins.ssec}")
    assert len(base64.b64decode(json.loads(env["AIRFLOW_CONN_HDH_SCALEWAY_SSE_C"])["password"])) == 32
    assert os.environ["AIRFLOW_CONN_HDH_SCALEWAY_S3"] == env["AIRFLOW_CONN_HDH_SCALEWAY_S3"]
    # Plain HTTP to the loopback stand-ins is allowed only because the deployment says local development.
    assert env["AIRFLOW_VAR_BASCULE_DEPLOYMENT"] == "local-development"
