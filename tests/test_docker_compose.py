"""Static checks of docker-compose.yaml (the distributed stack in containers).

There is no Docker engine on the development machines or in CI, so the file is only parsed
with PyYAML (which resolves the ``<<: *anchor`` merge keys the way Compose does) and checked
for the properties Bascule relies on, and against scripts/celery_stack.py, the same stack as
processes, which the distributed tests run: the two cannot drift apart.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import celery_stack

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yaml"

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker-1",
    "airflow-worker-2",
)
WORKER_SERVICES = {f"airflow-{worker.replace('worker', 'worker-')}": worker for worker in celery_stack.WORKERS}
# Services that run Airflow code for the whole life of the stack (airflow-init only migrates).
LONG_RUNNING_AIRFLOW = tuple(s for s in AIRFLOW_SERVICES if s != "airflow-init")
REQUIRED_SERVICES = ("postgres", "redis", *AIRFLOW_SERVICES, "azurite", "minio")
NEED_HEALTHCHECK = ("postgres", "redis", "airflow-apiserver", *WORKER_SERVICES, "azurite", "minio")
CODE_MOUNTS = {"dags": "/opt/airflow/dags", "plugins": "/opt/airflow/plugins", "include": "/opt/airflow/include"}
AIRFLOW_VERSION = "3.3.2"
CELERY_PIN = "celery==5.6.3"

_DEFAULT = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def resolve(value: str) -> str:
    """Apply Compose's ``${VAR:-default}`` interpolation with no variable set (the defaults)."""
    return _DEFAULT.sub(lambda m: m.group("default") or "", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), (
        "docker-compose.yaml must be a mapping with a 'services' mapping"
    )
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...] form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def image_tag(image: str) -> str | None:
    """The tag of an image reference, or None when it has none (which means ``latest``)."""
    ref = resolve(image).split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def test_required_services_exist(services):
    missing = [name for name in REQUIRED_SERVICES if name not in services]
    assert not missing, f"docker-compose.yaml lacks the services {missing}"


def test_common_anchor_is_used(compose):
    common = compose.get("x-airflow-common")
    assert isinstance(common, dict), "the shared 'x-airflow-common' block is missing"
    assert "${AIRFLOW_IMAGE_NAME:-" in common.get("image", ""), (
        "x-airflow-common image must be overridable via ${AIRFLOW_IMAGE_NAME:-...}"
    )


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_services_share_the_pinned_image(services, compose, name):
    image = services[name].get("image", "")
    expected = compose["x-airflow-common"]["image"]
    assert image == expected, f"{name} uses image {image!r}, not the shared x-airflow-common one {expected!r}"
    resolved = resolve(image)
    assert resolved.startswith("apache/airflow:"), f"{name}: default image {resolved!r} is not apache/airflow"
    tag = image_tag(image) or "latest"
    assert tag != "latest", f"{name}: Airflow image {resolved!r} is not pinned (tag latest)"
    assert tag.startswith(AIRFLOW_VERSION), f"{name}: Airflow image tag {tag!r} is not {AIRFLOW_VERSION}"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_executor_is_celery(services, name):
    executor = env_of(services[name]).get("AIRFLOW__CORE__EXECUTOR")
    assert executor == "CeleryExecutor", f"{name}: AIRFLOW__CORE__EXECUTOR is {executor!r}, expected CeleryExecutor"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_env_is_complete(services, name):
    env = env_of(services[name])
    for key in (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    ):
        assert env.get(key), f"{name}: environment variable {key} is missing or empty"
    assert env.get("AIRFLOW__CORE__LOAD_EXAMPLES", "").lower() == "false", (
        f"{name}: AIRFLOW__CORE__LOAD_EXAMPLES should be 'false', is {env.get('AIRFLOW__CORE__LOAD_EXAMPLES')!r}"
    )
    url = resolve(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert url == "http://airflow-apiserver:8080/execution/", (
        f"{name}: AIRFLOW__CORE__EXECUTION_API_SERVER_URL defaults to {url!r}, not the api-server's /execution/"
    )
    pythonpath = env.get("PYTHONPATH", "").split(":")
    for path in ("/opt/airflow/include", "/opt/airflow/plugins"):
        assert path in pythonpath, f"{name}: PYTHONPATH {env.get('PYTHONPATH')!r} lacks {path}"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_services_mount_the_code(services, name):
    volumes = [v for v in services[name].get("volumes", []) if isinstance(v, str)]
    targets = {v.split(":")[1]: v.split(":")[0] for v in volumes if v.count(":") >= 1}
    for folder, target in CODE_MOUNTS.items():
        assert target in targets, f"{name} does not mount ./{folder} at {target} (volumes: {volumes})"
        source = targets[target]
        assert source.startswith("./"), f"{name}: {target} is mounted from {source!r}, not a repo-relative path"
        assert (REPO / source).resolve().is_dir(), (
            f"{name}: mount source {source} for {target} does not exist in the repository"
        )


@pytest.mark.parametrize("name", NEED_HEALTHCHECK)
def test_healthchecks(services, name):
    health = services[name].get("healthcheck")
    assert isinstance(health, dict) and health.get("test"), f"{name} has no healthcheck test"
    assert not health.get("disable"), f"{name}'s healthcheck is disabled"


def test_apiserver_healthcheck_uses_monitor_health(services):
    test = " ".join(services["airflow-apiserver"]["healthcheck"]["test"])
    assert "/api/v2/monitor/health" in test, (
        f"airflow-apiserver healthcheck {test!r} does not hit /api/v2/monitor/health"
    )


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_worker_healthcheck_pings_celery(services, name):
    test = " ".join(services[name]["healthcheck"]["test"])
    assert "celery --app airflow.providers.celery.executors.celery_executor.app inspect ping" in test, (
        f"{name} healthcheck {test!r} does not run a celery inspect ping"
    )


def test_airflow_commands(services):
    expected = {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
        **{name: f"celery worker --celery-hostname {worker}@bascule" for name, worker in WORKER_SERVICES.items()},
    }
    for name, command in expected.items():
        got = services[name].get("command")
        got = " ".join(got) if isinstance(got, list) else got
        assert got == command, f"{name} runs {got!r}, expected the Airflow 3.3 subcommand {command!r}"
    init = services["airflow-init"]["command"]
    init = " ".join(init) if isinstance(init, list) else init
    assert "airflow db migrate" in init, "airflow-init does not run 'airflow db migrate'"
    assert services["airflow-init"].get("restart", "no") == "no", "airflow-init must run once (restart: 'no')"


def _published(port: Any) -> tuple[str, str]:
    """(host_ip, description) of one published port, short or long syntax."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), json.dumps(port)
    text = resolve(str(port))
    parts = text.split(":")
    # "CONTAINER", "HOST:CONTAINER" or "IP:HOST:CONTAINER"
    return (parts[0] if len(parts) == 3 else ""), text


def test_published_ports_bind_localhost(services):
    bad = []
    for name, service in services.items():
        for port in service.get("ports", []) or []:
            host_ip, text = _published(port)
            if host_ip != "127.0.0.1":
                bad.append(f"{name}: {text}")
    assert not bad, f"ports published beyond 127.0.0.1: {bad}"


def test_apiserver_published_on_8080(services):
    ports = [_published(p)[1] for p in services["airflow-apiserver"].get("ports", [])]
    assert "127.0.0.1:8080:8080" in ports, f"airflow-apiserver should publish 127.0.0.1:8080:8080, has {ports}"


@pytest.mark.parametrize("name", LONG_RUNNING_AIRFLOW)
def test_celery_is_pinned(services, name):
    extra = resolve(env_of(services[name]).get("_PIP_ADDITIONAL_REQUIREMENTS", ""))
    assert CELERY_PIN in extra.split(), (
        f"{name}: _PIP_ADDITIONAL_REQUIREMENTS defaults to {extra!r}; it must pin {CELERY_PIN} "
        "(celery 5.7.0 crashes the celery provider)"
    )


def test_no_other_celery_version(services):
    for name, service in services.items():
        extra = resolve(env_of(service).get("_PIP_ADDITIONAL_REQUIREMENTS", ""))
        others = [r for r in extra.split() if r.lower().startswith("celery") and r != CELERY_PIN]
        assert not others, f"{name}: _PIP_ADDITIONAL_REQUIREMENTS asks for {others}, not {CELERY_PIN}"


def _connection(services, name: str, var: str) -> dict[str, Any]:
    raw = env_of(services[name]).get(var)
    assert raw, f"{name}: connection variable {var} is missing"
    try:
        conn = json.loads(raw)
    except json.JSONDecodeError as exc:
        pytest.fail(f"{name}: {var} is not valid JSON ({exc}): {raw!r}")
    assert isinstance(conn, dict), f"{name}: {var} must be a JSON object, is {type(conn).__name__}"
    return conn


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_azure_connection(services, name):
    conn = _connection(services, name, "AIRFLOW_CONN_HDH_AZURE_BLOB")
    assert conn.get("conn_type") == "wasb", (
        f"{name}: AIRFLOW_CONN_HDH_AZURE_BLOB conn_type is {conn.get('conn_type')!r}"
    )
    assert conn.get("login") == "devstoreaccount1", f"{name}: Azurite account should be devstoreaccount1"
    assert conn.get("host") == "http://azurite:10000/devstoreaccount1", (
        f"{name}: Azure host {conn.get('host')!r} does not point at the azurite service"
    )
    assert conn.get("password"), f"{name}: AIRFLOW_CONN_HDH_AZURE_BLOB has no account key"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_scaleway_connection(services, name):
    conn = _connection(services, name, "AIRFLOW_CONN_HDH_SCALEWAY_S3")
    assert conn.get("conn_type") == "aws", (
        f"{name}: AIRFLOW_CONN_HDH_SCALEWAY_S3 conn_type is {conn.get('conn_type')!r}"
    )
    extra = conn.get("extra") or {}
    assert extra.get("endpoint_url") == "http://minio:9000", (
        f"{name}: S3 endpoint_url {extra.get('endpoint_url')!r} does not point at the minio service"
    )
    assert extra.get("region_name") == "fr-par", f"{name}: S3 region_name is {extra.get('region_name')!r}, not fr-par"
    kwargs = extra.get("config_kwargs") or {}
    for key in ("request_checksum_calculation", "response_checksum_validation"):
        assert kwargs.get(key) == "when_required", f"{name}: config_kwargs.{key} should be 'when_required'"
    minio = env_of(services["minio"])
    assert (conn.get("login"), conn.get("password")) == (
        minio.get("MINIO_ROOT_USER"),
        minio.get("MINIO_ROOT_PASSWORD"),
    ), f"{name}: S3 login/password do not match minio's MINIO_ROOT_USER/MINIO_ROOT_PASSWORD"


def test_no_image_uses_latest(services):
    bad = []
    for name, service in services.items():
        image = service.get("image")
        if image is None:
            continue
        tag = image_tag(image)
        if tag is None or tag == "latest":
            bad.append(f"{name}: {resolve(image)}")
    assert not bad, f"images not pinned to a tag (latest or no tag): {bad}"


def test_stand_ins(services):
    azurite = services["azurite"]
    assert resolve(azurite["image"]) == "mcr.microsoft.com/azure-storage/azurite:3.35.0", (
        f"azurite image is {azurite['image']!r}, expected mcr.microsoft.com/azure-storage/azurite:3.35.0"
    )
    command = azurite.get("command", "")
    command = " ".join(command) if isinstance(command, list) else command
    for flag in (
        "azurite-blob",
        "--blobHost 0.0.0.0",
        "--blobPort 10000",
        "--skipApiVersionCheck",
        "--disableTelemetry",
    ):
        assert flag in command, f"azurite command {command!r} lacks {flag!r}"
    region = env_of(services["minio"]).get("MINIO_REGION")
    assert region == "fr-par", f"minio MINIO_REGION is {region!r}, expected fr-par"


@pytest.mark.parametrize("name", ["airflow-scheduler", *WORKER_SERVICES])
def test_waits_for_init(services, name):
    depends = services[name].get("depends_on") or {}
    assert isinstance(depends, dict), f"{name}: depends_on must use the long form with conditions"
    cond = (depends.get("airflow-init") or {}).get("condition")
    assert cond == "service_completed_successfully", (
        f"{name}: depends_on airflow-init has condition {cond!r}, expected service_completed_successfully"
    )
    for dep in ("postgres", "redis"):
        cond = (depends.get(dep) or {}).get("condition")
        assert cond == "service_healthy", f"{name}: depends_on {dep} has condition {cond!r}, expected service_healthy"


def test_postgres_stand_ins(services, compose):
    source, target = services["pg-azure"], services["pg-scaleway"]
    command = source.get("command", "")
    command = " ".join(command) if isinstance(command, list) else command
    assert "wal_level=logical" in command, "the source must allow logical decoding"
    assert image_tag(resolve(source["image"])) == "15"
    # Scaleway Managed PostgreSQL can subscribe from PG16.
    assert image_tag(resolve(target["image"])) == "16"
    env = env_of(services["airflow-worker-1"])
    for name in ("AIRFLOW_CONN_HDH_AZURE_PG", "AIRFLOW_CONN_HDH_SCALEWAY_PG"):
        assert json.loads(env[name])["conn_type"] == "postgres", name


# -- the same stack as scripts/celery_stack.py, and no secret in the file ---------------------


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_settings_are_the_stack_scripts(services, name):
    env = env_of(services[name])
    drift = {k: (env.get(k), v) for k, v in celery_stack.SETTINGS.items() if env.get(k) != v}
    assert not drift, f"{name} differs from scripts/celery_stack.py SETTINGS (compose, script): {drift}"


def test_the_script_and_the_file_run_the_same_components(services):
    commands = {
        "api-server": "airflow-apiserver", "scheduler": "airflow-scheduler",
        "dag-processor": "airflow-dag-processor", "triggerer": "airflow-triggerer",
    }  # fmt: skip
    assert set(commands) == set(celery_stack.CORE)
    assert all(name in services for name in commands.values())
    assert len(WORKER_SERVICES) == 2 and all(name in services for name in WORKER_SERVICES)
    for name, worker in WORKER_SERVICES.items():
        assert env_of(services[name]).get("BASCULE_WORKER_HOSTNAME") == worker, name
        assert services[name].get("hostname") == worker, f"{name}: its log server is reached by this name"


_SECRET_NAMES = re.compile(r"FERNET|SECRET|PASSWORD|JWT", re.I)
_FROM_ENV_FILE = re.compile(r"^\$\{[A-Z0-9_]+:\?[^}]+\}$")


def test_secrets_come_from_the_env_file_only(services, tmp_path):
    """Every secret is a required ${VAR:?...} that scripts/celery_stack.py generates into .env."""
    generated = celery_stack.ensure_env_file(tmp_path / ".env")
    for name, service in services.items():
        for key, value in env_of(service).items():
            if _SECRET_NAMES.search(key) and key != "DUMB_INIT_SETSID":
                assert _FROM_ENV_FILE.match(value), f"{name}: {key} is {value!r}, not a required ${{VAR:?...}}"
                assert value[2:].split(":", 1)[0] in generated, f"{name}: {key} is not generated by celery_stack.py"
        for url_key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL"):
            url = env_of(service).get(url_key)
            if url:
                assert ":${" in url, f"{name}: {url_key} has no password from .env: {url!r}"
    for var in ("AIRFLOW_CONN_HDH_SCALEWAY_S3", "AIRFLOW_CONN_HDH_AZURE_PG", "AIRFLOW_CONN_HDH_SCALEWAY_PG"):
        password = _connection(services, "airflow-scheduler", var)["password"]
        assert _FROM_ENV_FILE.match(password), f"{var}: password {password!r} is written in the file"
    assert "admin/admin" not in COMPOSE_FILE.read_text() and "_AIRFLOW_WWW_USER_PASSWORD" not in COMPOSE_FILE.read_text()


def test_redis_requires_a_password_and_is_not_published(services):
    redis = services["redis"]
    assert "--requirepass" in " ".join(redis["command"]), "redis must require a password"
    assert not redis.get("ports"), "the broker must not be published to the host"


def test_local_development_is_opt_in_and_named(services):
    for name, service in services.items():
        assert "AIRFLOW_VAR_BASCULE_DEPLOYMENT" not in env_of(service), (
            f"{name}: no environment variable may set the deployment (docs/security.md)"
        )
    init = " ".join(services["airflow-init"]["command"])
    assert '"$${BASCULE_LOCAL_DEVELOPMENT}" == "true"' in init and "LOCAL DEVELOPMENT declared" in init
    assert env_of(services["airflow-init"])["BASCULE_LOCAL_DEVELOPMENT"] == "${BASCULE_LOCAL_DEVELOPMENT:-false}"
    assert "airflow variables set bascule_deployment production" in init, "the default is production"
