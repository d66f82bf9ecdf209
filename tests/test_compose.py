"""docker-compose.yml is valid, and the stack it describes runs the CLI the rest of the suite tests.

``docker-compose config`` (Debian's docker-compose package) validates the file against the Compose
schema without a Docker engine. The YAML checks then pin what the schema cannot: every service built
from the gigapulse image runs a real ``gigapulse`` subcommand with options that parse, the start order
follows health, and the Dagster instance config asks only for variables the services set.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

import gigapulse.cli
from infra.broker import KAFKA_VERSION

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "infra" / "Dockerfile"
DAGSTER_YAML = REPO / "infra" / "dagster" / "dagster.yaml"
DAGSTER_HOME = "/opt/dagster/home"
ENV_EXAMPLE = REPO / ".env.example"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # safe_load resolves the anchors and merge keys, so services look as Compose sees them.
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _is_gigapulse_image(service: dict[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).startswith("gigapulse")


def _gigapulse_services(services) -> dict[str, dict[str, Any]]:
    found = {name: svc for name, svc in services.items() if _is_gigapulse_image(svc)}
    assert found, "no service is built from the gigapulse image"
    return found


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    assert isinstance(deps, dict), "depends_on must use the long form with a condition"
    return {name: spec["condition"] for name, spec in deps.items()}


def test_docker_compose_config_validates():
    binary = _compose_binary()
    proc = subprocess.run([binary, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config"], cwd=REPO,
                          capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert set(resolved["services"]) == set(yaml.safe_load(COMPOSE.read_text())["services"])


def test_image_entrypoint_is_gigapulse(services):
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r'^ENTRYPOINT \["gigapulse"\]$', dockerfile, re.MULTILINE)
    assert "pip install -c constraints.txt ." in dockerfile
    for name, svc in _gigapulse_services(services).items():
        assert "entrypoint" not in svc, f"{name} overrides the gigapulse entrypoint"
        assert svc["build"]["dockerfile"] == "infra/Dockerfile", name


def _service_names_from_image() -> list[str]:
    return sorted(_gigapulse_services(yaml.safe_load(COMPOSE.read_text())["services"]))


@pytest.mark.parametrize("name", _service_names_from_image())
def test_service_runs_a_cli_subcommand(services, name):
    command = services[name].get("command")
    assert isinstance(command, list) and command, f"{name}: command must be a non-empty list"
    _assert_cli_command(name, command)


def _assert_cli_command(name: str, command: list[str]) -> None:
    root = typer.main.get_command(gigapulse.cli.app)
    assert command[0] in root.commands, f"{name}: 'gigapulse {command[0]}' is not a CLI command"
    cmd, args, path = root, list(command), ["gigapulse"]
    while hasattr(cmd, "commands"):  # walk the sub-apps down to the command that runs
        assert args, f"{name}: 'gigapulse {' '.join(command)}' stops at a group"
        sub = args.pop(0)
        assert sub in cmd.commands, f"{name}: '{' '.join(path)} {sub}' does not exist"
        cmd = cmd.commands[sub]
        path.append(sub)
    # Parsing (not running) the arguments catches a renamed option or a bad value.
    cmd.make_context(" ".join(path), args)


def test_gigapulse_healthchecks_run_a_cli_subcommand(services):
    checks = {name: svc["healthcheck"]["test"] for name, svc in _gigapulse_services(services).items()
              if "healthcheck" in svc}
    assert "stream-worker" in checks
    for name, test in checks.items():
        if test[:2] == ["CMD", "gigapulse"]:
            _assert_cli_command(name, test[2:])


def test_stream_workers_serve_health_and_are_checked_with_it(services, monkeypatch):
    from transforms.settings import StreamSettings

    worker = services["stream-worker"]
    assert worker["healthcheck"]["test"][:3] == ["CMD", "gigapulse", "health"]
    env = worker["environment"]
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = StreamSettings()  # the values parse as the worker will read them
    assert settings.health_port is not None, "the worker must serve the endpoint its healthcheck asks"
    assert settings.health_host == "0.0.0.0"  # reachable from outside the container, not only loopback
    assert "ports" not in worker, "replicas cannot share a published host port"


def test_bridges_are_opt_in_and_keep_their_buffer(services):
    """The factory connectors need a plant to talk to: a profile, so `docker compose up` leaves them out."""
    from ingestion.bridges.settings import BridgeSettings

    bridges = {name: svc for name, svc in services.items() if name.startswith(("bridge-", "plant-"))}
    assert {"bridge-modbus", "plant-modbus"} <= set(bridges)
    for name, svc in bridges.items():
        assert svc.get("profiles") == ["bridges"], name
    bridge = services["bridge-modbus"]
    settings = BridgeSettings(**{k.removeprefix("GIGAPULSE_BRIDGE_").lower(): v
                                 for k, v in bridge["environment"].items() if k.startswith("GIGAPULSE_BRIDGE_")})
    assert any(v.endswith(f":{settings.buffer_dir}") and not v.startswith((".", "/")) for v in bridge["volumes"])
    assert settings.health_port is not None and settings.health_host == "0.0.0.0"


def test_kafka_is_single_node_kraft_with_a_healthcheck(services):
    kafka = services["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}", "compose and `gigapulse broker` run one Kafka"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert set(env["KAFKA_LISTENERS"].split(",")) == {"PLAINTEXT://:9092", "CONTROLLER://:9093"}
    for key, value in env.items():
        if key.endswith(("_REPLICATION_FACTOR", "_MIN_ISR")):
            assert int(value) == 1, key
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/kafka/data") for v in kafka["volumes"])
    assert env["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"


CLUSTER_BOOTSTRAP = "kafka-1:9092,kafka-2:9092,kafka-3:9092"


def test_cluster_profile_is_three_kraft_nodes_with_rf_3_and_min_isr_2(services):
    """The "cluster" profile: what `gigapulse broker start --nodes 3` runs on loopback, as three containers."""
    nodes = {name: svc for name, svc in services.items() if re.fullmatch(r"kafka-\d", name)}
    assert sorted(nodes) == ["kafka-1", "kafka-2", "kafka-3"]
    envs = [svc["environment"] for svc in nodes.values()]
    assert len({e["CLUSTER_ID"] for e in envs}) == 1 and len({e["KAFKA_NODE_ID"] for e in envs}) == 3
    for name, svc in nodes.items():
        env = svc["environment"]
        assert svc["image"] == f"apache/kafka:{KAFKA_VERSION}" and svc["profiles"] == ["cluster"], name
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://kafka-{env['KAFKA_NODE_ID']}:9092" == \
            f"PLAINTEXT://{name}:9092"
        for key, value in env.items():
            if key.endswith("_REPLICATION_FACTOR"):
                assert int(value) == 3, key
            if key.endswith(("_MIN_ISR", "MIN_INSYNC_REPLICAS")):
                assert int(value) == 2, key
        assert str(env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"]).lower() == "false"
        assert svc["volumes"] == [f"{name}-data:/var/lib/kafka/data"], "each node keeps its own log dir"
        assert "healthcheck" in svc
    init = services["topic-init-cluster"]
    assert init["command"][init["command"].index("--bootstrap") + 1] == CLUSTER_BOOTSTRAP
    assert init["command"][-4:] == ["--replication-factor", "3", "--min-insync-replicas", "2"]
    assert _depends_on(init) == dict.fromkeys(nodes, "service_healthy")
    cluster_services = {n for n, svc in services.items() if "cluster" in svc.get("profiles", ())}
    assert {"simulator-cluster", "stream-worker-cluster"} <= cluster_services
    assert "lake-cluster:/data" in services["stream-worker-cluster"]["volumes"]  # not the single broker's lake


def test_postgres_has_a_healthcheck(services):
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])


def test_start_order_follows_health(services):
    assert _depends_on(services["topic-init"]) == {"kafka": "service_healthy"}
    for name in ("simulator", "stream-worker"):
        assert _depends_on(services[name])["topic-init"] == "service_completed_successfully", name
    for name in ("dagster-webserver", "dagster-daemon"):
        assert _depends_on(services[name])["postgres"] == "service_healthy", name
    for name, svc in services.items():
        for dep, condition in _depends_on(svc).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no check"
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} must be one-shot for {name} to start"
            else:
                pytest.fail(f"{name} -> {dep}: condition {condition!r} does not wait for anything")


def test_gigapulse_services_reach_kafka_inside_the_network(services):
    for name, svc in _gigapulse_services(services).items():
        want = CLUSTER_BOOTSTRAP if "cluster" in svc.get("profiles", ()) else "kafka:9092"
        assert svc["environment"]["GIGAPULSE_BOOTSTRAP_SERVERS"] == want, name
    topic_init = services["topic-init"]["command"]
    assert topic_init[topic_init.index("--bootstrap") + 1] == "kafka:9092"


def test_lake_is_shared_by_its_writers_and_readers(services):
    for name in ("stream-worker", "lake-maintenance", "dagster-webserver", "dagster-daemon"):
        svc = services[name]
        assert svc["environment"]["GIGAPULSE_DATA_DIR"] == "/data", name
        assert "lake:/data" in svc["volumes"], name


def _env_refs(node: Any) -> set[str]:
    """Every ``{env: NAME}`` a Dagster config refers to."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(_env_refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_env_refs(v) for v in node)) if node else set()
    return set()


def test_dagster_services_share_postgres_storage(services):
    dagster_yaml = yaml.safe_load(DAGSTER_YAML.read_text())
    assert "postgres" in dagster_yaml["storage"]
    wanted = _env_refs(dagster_yaml)
    assert wanted >= {"DAGSTER_POSTGRES_USER", "DAGSTER_POSTGRES_PASSWORD", "DAGSTER_POSTGRES_DB",
                      "DAGSTER_POSTGRES_HOST"}
    postgres_env = services["postgres"]["environment"]
    for name in ("dagster-webserver", "dagster-daemon"):
        env = services[name]["environment"]
        assert env["DAGSTER_HOME"] == DAGSTER_HOME, name
        assert wanted <= set(env), f"{name} does not set {sorted(wanted - set(env))}"
        assert env["DAGSTER_POSTGRES_HOST"] == "postgres"
        assert env["DAGSTER_POSTGRES_USER"] == postgres_env["POSTGRES_USER"]
        assert env["DAGSTER_POSTGRES_PASSWORD"] == postgres_env["POSTGRES_PASSWORD"]
        assert env["DAGSTER_POSTGRES_DB"] == postgres_env["POSTGRES_DB"]
    assert re.search(rf"^COPY infra/dagster/dagster.yaml {DAGSTER_HOME}/dagster.yaml$", DOCKERFILE.read_text(),
                     re.MULTILINE)
    assert services["dagster-webserver"]["command"][:2] == ["jobs", "webserver"]
    assert services["dagster-daemon"]["command"] == ["jobs", "daemon"]


def test_dagster_instance_config_is_valid(tmp_path):
    """Dagster's own schema check of the compose instance config (no Postgres needed), and the limits it sets."""
    from dagster._core.instance.config import ConcurrencyConfig, PoolGranularity, dagster_instance_config
    from dagster._core.run_coordinator import RunCoordinator
    from dagster._serdes.config_class import ConfigurableClassData

    from orchestration.definitions import DUCKDB_POOL, defs

    shutil.copy(DAGSTER_YAML, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    rc = config["run_coordinator"]
    coordinator = ConfigurableClassData(rc["module"], rc["class"], yaml.safe_dump(rc.get("config") or {})).rehydrate(
        as_type=RunCoordinator)
    concurrency = ConcurrencyConfig.from_concurrency_settings(config["concurrency"], coordinator.get_run_queue_config())
    assert concurrency.run_queue_config.max_concurrent_runs == 4
    # dagster.yaml has no per-pool limits, only a default: it is the DuckDB pool's limit as long as that
    # pool is the only one the definitions use.
    assert concurrency.pool_config.default_pool_limit == 1
    assert concurrency.pool_config.pool_granularity in (None, PoolGranularity.OP)
    executable = [defs.resolve_assets_def(spec.key) for spec in defs.resolve_all_asset_specs()]
    pools = {a.node_def.pool for a in executable if a.is_executable} - {None}  # lake tables are external
    assert pools == {DUCKDB_POOL}, "a second pool would get the DuckDB pool's default limit of 1: set its own"


def _compose_binary() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        message = "docker-compose is not installed (Debian package docker-compose)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def test_passwords_come_from_the_env_file_never_from_the_compose_file():
    """Every password is a required variable (no default to forget), and .env.example names each one."""
    text = COMPOSE.read_text()
    refs = re.findall(r"^\s*\w*PASSWORD\w*:\s*(.+)$", text, re.MULTILINE)
    assert refs, "no password setting found"
    example = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                   if line.strip() and not line.startswith("#"))
    for ref in refs:
        m = re.fullmatch(r"\$\{(\w+):\?[^}]+\}", ref.strip())
        assert m, f"a password is not a required variable: {ref}"
        assert m[1] in example, f"{m[1]} is missing from .env.example"
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_without_the_env_file_compose_stops_naming_the_password(tmp_path):
    binary = _compose_binary()
    (tmp_path / "docker-compose.yml").write_text(COMPOSE.read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_POSTGRES")}
    proc = subprocess.run([binary, "config"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert "DAGSTER_POSTGRES_PASSWORD" in proc.stderr and "set it in .env" in proc.stderr, proc.stderr


def test_the_dagster_ui_is_published_on_loopback_only(services):
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    assert any(svc.get("ports") for svc in services.values())


def test_the_webserver_command_binds_to_loopback_by_default():
    import inspect

    from orchestration.cli import jobs_webserver

    assert inspect.signature(jobs_webserver).parameters["host"].default == "127.0.0.1"
