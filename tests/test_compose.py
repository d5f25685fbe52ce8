"""Checks of the container files: Dockerfile, .dockerignore, docker/entrypoint.sh,
docker/config.yaml, docker-compose.yml and alertmanager/alertmanager.yml.

No Docker engine runs here, so no image is built and no stack started. Each
file is checked by the tool that understands it instead (check-jsonschema with
the compose specification it vendors, shellcheck, amtool, cloudplow's own
configuration loader), the entrypoint runs against stand-in commands, the
image's HEALTHCHECK command runs against a real `cloudplow run`, and the
contracts between the files are compared: mounts that exist, the port
Prometheus scrapes, the alert the inhibit rule names. A missing tool fails a
test, it never skips one: `make compose-tools` installs them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudplow.config import load_config, schema
from tests.conftest import free_port

REPOSITORY = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPOSITORY / "docker-compose.yml"
DOCKERFILE = REPOSITORY / "Dockerfile"
DOCKERIGNORE = REPOSITORY / ".dockerignore"
ENTRYPOINT = REPOSITORY / "docker" / "entrypoint.sh"
CONTAINER_CONFIG = REPOSITORY / "docker" / "config.yaml"
ALERTMANAGER_CONFIG = REPOSITORY / "alertmanager" / "alertmanager.yml"
PROMETHEUS_DIR = REPOSITORY / "prometheus"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
SERVICES = {"cloudplow", "prometheus", "grafana", "alertmanager"}
METRICS_PORT = 47949
# The container folders that docker/config.yaml's paths lie under; the tests move them into tmp_path.
CONTAINER_ROOTS = ("/config", "/data")
# SOURCE:TARGET[:MODE], where SOURCE may be ${VARIABLE:-default} (whose ":-" is no separator).
SHORT_VOLUME = re.compile(r"(?P<source>\$\{[^}]*\}|[^:]+):(?P<target>/[^:]*)(?::(?P<mode>ro|rw))?")


def require_tool(name: str) -> str:
    """Given a program name, return its path. Fail (not skip) when it is missing."""
    found = shutil.which(name)
    assert found, f"{name} is not installed: run `make compose-tools`"
    return found


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def dockerfile(keyword: str) -> list[str]:
    return [arguments for found, arguments in dockerfile_instructions() if found == keyword]


def exec_form(arguments: str) -> list[str]:
    """Given an instruction's arguments, return its exec-form list. Fail on shell form."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        value = None
    assert isinstance(value, list) and value and all(isinstance(item, str) for item in value), (
        f"not exec form (a JSON list of strings): {arguments}"
    )
    return value


def healthcheck_command() -> list[str]:
    (healthcheck,) = dockerfile("HEALTHCHECK")
    _options, separator, command = healthcheck.partition(" CMD ")
    assert separator, f"HEALTHCHECK without CMD: {healthcheck}"
    return exec_form(command)


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Given a compose service, return its short-syntax volumes as (source, target, mode)."""
    mounts = []
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), f"use the short volume syntax: {volume}"
        match = SHORT_VOLUME.fullmatch(volume)
        assert match, f"cannot read the volume {volume!r}"
        mounts.append((match["source"], match["target"], match["mode"] or "rw"))
    return mounts


def container_config_document(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """
    Given a temporary folder, return docker/config.yaml rewritten so its
    container paths (/config, /data) lie under that folder, with the files they
    name made there: rclone.conf with the destination's remote, one
    service-account key, the media folder. Return the folder standing in for
    /config and the rewritten document.
    """
    document = yaml.safe_load(CONTAINER_CONFIG.read_text(encoding="utf-8"))

    def relocate(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: relocate(item) for key, item in value.items()}
        if isinstance(value, list):
            return [relocate(item) for item in value]
        if isinstance(value, str) and value.startswith(tuple(root + "/" for root in CONTAINER_ROOTS)):
            return str(tmp_path) + value
        return value

    document = relocate(document)
    config_dir = tmp_path / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    remotes = {uploader["destination"].partition(":")[0] for uploader in document["uploaders"].values()}
    (config_dir / "rclone.conf").write_text(
        "".join(f"[{remote}]\ntype = drive\nscope = drive\n\n" for remote in sorted(remotes)),
        encoding="utf-8",
    )
    for uploader in document["uploaders"].values():
        Path(uploader["source"]).mkdir(parents=True, exist_ok=True)
        accounts_dir = Path(uploader["accounts"]["dir"])
        accounts_dir.mkdir(parents=True, exist_ok=True)
        (accounts_dir / "sa1.json").write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "client_email": "sa1@project.iam.gserviceaccount.com",
                    "private_key": "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n",
                }
            ),
            encoding="utf-8",
        )
    return config_dir, document


# --- docker-compose.yml ------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification():
    assert CHECK_JSONSCHEMA.is_file(), "check-jsonschema is missing: pip install -e '.[test]'"
    # The builtin schema ships inside the package: no network is needed.
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_the_four_services_from_pinned_images():
    document = compose()
    assert "version" not in document, "the compose specification has no version key"
    services = document["services"]
    assert set(services) == SERVICES
    assert services["cloudplow"]["build"] == "."
    for name in SERVICES - {"cloudplow"}:
        image = services[name]["image"]
        _repository, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), f"{name}: pin {image}"
    assert re.fullmatch(r"prom/prometheus:v[23]\.\d+\.\d+", services["prometheus"]["image"])
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert services["alertmanager"]["image"].startswith("prom/alertmanager:v")
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name


def test_every_published_port_is_bound_to_loopback():
    services = compose()["services"]
    published: dict[str, set[int]] = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: write ports as quoted strings: {port!r}"
            address, host_port, container_port = port.split(":")
            assert address == "127.0.0.1", f"{name}: {port} is published beyond this machine"
            assert host_port == container_port, port
            published.setdefault(name, set()).add(int(container_port))
    assert 3000 in published["grafana"]
    assert 9090 in published["prometheus"]
    assert 9093 in published["alertmanager"]


def test_mounts_point_at_folders_in_the_repository():
    services = compose()["services"]
    repository_mounts = {
        "prometheus": {"./prometheus": "/etc/prometheus"},
        "grafana": {
            "./grafana/provisioning": "/etc/grafana/provisioning",
            "./grafana/dashboards": "/var/lib/grafana/dashboards",
        },
        "alertmanager": {"./alertmanager": "/etc/alertmanager"},
    }
    for name, expected in repository_mounts.items():
        mounts = {source: (target, mode) for source, target, mode in bind_mounts(services[name])}
        for source, target in expected.items():
            assert mounts.get(source) == (target, "ro"), f"{name}: mount {source}:{target}:ro"
            assert (REPOSITORY / source).is_dir(), f"{name} mounts {source}, which is not in the repository"
    for name in ("prometheus", "alertmanager"):
        service = services[name]
        (config_flag,) = [flag for flag in service["command"] if flag.startswith("--config.file=")]
        in_container = config_flag.partition("=")[2]
        host_file = None
        for source, target, _mode in bind_mounts(service):
            if in_container.startswith(target + "/"):
                host_file = REPOSITORY / source / in_container[len(target) + 1 :]
        assert host_file is not None and host_file.is_file(), (
            f"{name}: {config_flag} is not in the repository"
        )


def test_named_volumes_hold_the_data_and_are_declared():
    document = compose()
    declared = set(document.get("volumes", {}))
    for name, service in document["services"].items():
        for source, _target, _mode in bind_mounts(service):
            if not source.startswith(("./", "/", "$")):
                assert source in declared, f"{name}: volume {source} is not declared"
    prometheus = document["services"]["prometheus"]
    assert any(target == "/prometheus" for source, target, _ in bind_mounts(prometheus) if source in declared)
    assert "--storage.tsdb.path=/prometheus" in prometheus["command"]


def test_cloudplow_service_mounts_config_and_media_and_takes_puid_pgid_tz():
    service = compose()["services"]["cloudplow"]
    mounts = {target: source for source, target, _mode in bind_mounts(service)}
    assert mounts["/config"] == "./config"
    assert re.fullmatch(r"\$\{MEDIA_DIR:-[^}]+\}", mounts["/data/media"])
    assert {"PUID", "PGID", "TZ"} <= set(service["environment"])
    # The image's HEALTHCHECK applies; an override here would drift from it.
    assert "healthcheck" not in service
    # cloudplow takes up to 25 s to stop rclone and record the session; Docker's default is 10 s.
    assert service["stop_grace_period"] in ("1m", "60s")


def test_services_start_in_order_without_waiting_on_cloudplow_health():
    services = compose()["services"]
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_started"
    assert services["prometheus"]["depends_on"]["alertmanager"]["condition"] == "service_started"
    # Prometheus must run while cloudplow is unhealthy: that is when the alerts matter.
    assert "cloudplow" not in services["prometheus"].get("depends_on", {})


def test_prometheus_finds_cloudplow_and_alertmanager_by_service_name():
    prometheus_config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {
        target
        for job in prometheus_config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static.get("targets", [])
    }
    assert f"cloudplow:{METRICS_PORT}" in targets
    alertmanagers = {
        target
        for entry in prometheus_config["alerting"]["alertmanagers"]
        for static in entry.get("static_configs", [])
        for target in static.get("targets", [])
    }
    assert "alertmanager:9093" in alertmanagers


# --- Dockerfile and .dockerignore ---------------------------------------------


def test_dockerfile_runs_cloudplow_as_a_non_root_user_through_the_entrypoint():
    (base,) = dockerfile("FROM")
    assert re.fullmatch(r"python:3\.11-slim-(bookworm|trixie)", base), base
    (entrypoint,) = dockerfile("ENTRYPOINT")
    (cmd,) = dockerfile("CMD")
    entrypoint_path = exec_form(entrypoint)
    assert exec_form(cmd) == ["cloudplow", "run"]
    assert len(entrypoint_path) == 1
    # The entrypoint in the image is docker/entrypoint.sh, which drops to PUID:PGID.
    assert f"docker/entrypoint.sh {entrypoint_path[0]}" in dockerfile("COPY")
    script = ENTRYPOINT.read_text(encoding="utf-8")
    assert re.search(r"^exec setpriv --reuid \S+ --regid \S+ --init-groups -- \"\$@\"$", script, re.M)
    assert "USER" not in {keyword for keyword, _ in dockerfile_instructions()}, (
        "the entrypoint needs root to adjust PUID/PGID; it drops privileges itself"
    )
    assert os.access(ENTRYPOINT, os.X_OK), "docker/entrypoint.sh is not executable in the repository"


def test_dockerfile_configures_the_container_contract():
    environment = " ".join(dockerfile("ENV"))
    assert "CLOUDPLOW_CONFIG=/config/config.yaml" in environment.split()
    assert [exec_form(volume) for volume in dockerfile("VOLUME")] == [["/config"]]
    assert dockerfile("EXPOSE") == [str(METRICS_PORT)]
    (healthcheck,) = dockerfile("HEALTHCHECK")
    for option in ("--interval=", "--timeout=", "--start-period=", "--retries="):
        assert option in healthcheck, f"HEALTHCHECK sets no {option}"
    command = healthcheck_command()
    assert command[0] == "python"
    assert f"http://127.0.0.1:{METRICS_PORT}/healthz" in command[-1]
    installs = " ".join(dockerfile("RUN"))
    package = re.search(r"pip install (--no-compile )?/tmp/cloudplow(\s|$)", installs)
    assert package, "install the package, without extras"


def test_dockerignore_sends_only_what_the_image_copies():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "start from nothing, so ./config (credentials) never reaches the build"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    assert not allowed & {"config", "media", ".env", ".venv", ".git"}
    for copy in dockerfile("COPY"):
        *sources, _destination = copy.split()
        for source in sources:
            assert source.split("/")[0] in allowed, f"COPY {source} is excluded by .dockerignore"
            assert (REPOSITORY / source).exists(), f"COPY {source}: no such file"


def test_the_healthcheck_command_passes_against_a_running_daemon_and_fails_without_one(
    tmp_path, start_daemon
):
    config_dir, document = container_config_document(tmp_path)
    port = free_port()
    # Loopback for the test; the container listens on 0.0.0.0 (checked below).
    document["server"] = {"host": "127.0.0.1", "port": port}
    config = config_dir / "config.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    command = [sys.executable, *healthcheck_command()[1:]]
    command[-1] = command[-1].replace(f":{METRICS_PORT}/", f":{port}/")

    daemon = start_daemon(config, port)
    healthy = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert healthy.returncode == 0, healthy.stderr + daemon.log()

    assert daemon.stop() == 0, daemon.log()
    unhealthy = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert unhealthy.returncode != 0


# --- docker/config.yaml --------------------------------------------------------


def test_container_config_is_valid_with_its_paths_in_a_temporary_folder(tmp_path):
    config_dir, document = container_config_document(tmp_path)
    config = config_dir / "config.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

    loaded = load_config(config)

    assert (loaded.server_host, loaded.server_port) == ("0.0.0.0", METRICS_PORT)
    assert loaded.state_dir == config_dir / "state"
    assert loaded.rclone_config == config_dir / "rclone.conf"
    (uploader,) = loaded.uploaders.values()
    assert uploader.source == tmp_path / "data" / "media"
    assert uploader.accounts_dir == config_dir / "sa"
    assert [account.name for account in uploader.accounts] == ["sa1"]


def test_container_config_keeps_every_path_inside_the_container_mounts():
    """Every path key is under /config or /data, so the rewrite above covers them all."""
    document = yaml.safe_load(CONTAINER_CONFIG.read_text(encoding="utf-8"))
    path_keys = [dotted for dotted, key in schema.walk(schema.ROOT) if key.kind == "path"]
    found = 0
    for dotted in path_keys:
        values = [document]
        for part in dotted.split("."):
            if part == "<name>":
                values = [item for value in values for item in value.values()]
            else:
                values = [value[part] for value in values if isinstance(value, dict) and part in value]
        for value in values:
            found += 1
            assert value.startswith(tuple(root + "/" for root in CONTAINER_ROOTS)), f"{dotted}: {value}"
    assert found >= 4, "expected state_dir, rclone.config, source and accounts.dir"
    assert document["server"]["host"] == "0.0.0.0"


def test_the_cli_reads_the_configuration_the_image_names_in_its_environment(tmp_path):
    config_dir, document = container_config_document(tmp_path)
    config = config_dir / "config.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    environment = {**os.environ, "CLOUDPLOW_CONFIG": str(config)}
    result = subprocess.run(
        [sys.executable, "-m", "cloudplow", "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(config) in result.stdout


# --- docker/entrypoint.sh ------------------------------------------------------


def test_entrypoint_is_posix_sh_and_passes_shellcheck():
    assert ENTRYPOINT.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    syntax = subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr
    lint = subprocess.run(
        [require_tool("shellcheck"), "--shell=sh", "--severity=style", str(ENTRYPOINT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


STUB = """#!/bin/sh
printf '%s\\n' "$(basename "$0") $*" >> "$STUB_LOG"
case "$(basename "$0") $*" in
    "id -u") echo "$STUB_UID" ;;
    "getent group cloudplow") echo "cloudplow:x:1000:" ;;
    "getent passwd cloudplow") echo "cloudplow:x:1000:1000::/home/cloudplow:/usr/sbin/nologin" ;;
    setpriv*) echo "HOME=$HOME" >> "$STUB_LOG" ;;
esac
"""
STUBBED = (
    "id",
    "getent",
    "groupadd",
    "groupmod",
    "useradd",
    "usermod",
    "mkdir",
    "chown",
    "chmod",
    "setpriv",
    "cloudplow",
)


@pytest.fixture
def run_entrypoint(tmp_path):
    """
    Run docker/entrypoint.sh with every command that would change the system
    (and id/getent, to play root and an image user 1000:1000) replaced by a stub
    that records its arguments; return (exit code, stderr, recorded lines).
    """
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in STUBBED:
        (stubs / name).write_text(STUB, encoding="utf-8")
        (stubs / name).chmod(0o755)
    log = tmp_path / "calls.log"

    def run(*arguments: str, uid: int = 0, **environment: str) -> tuple[int, str, list[str]]:
        log.write_text("", encoding="utf-8")
        result = subprocess.run(
            ["sh", str(ENTRYPOINT), *arguments],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={
                "PATH": f"{stubs}:/usr/bin:/bin",
                "STUB_LOG": str(log),
                "STUB_UID": str(uid),
                "CLOUDPLOW_CONFIG": str(CONTAINER_CONFIG),
                **environment,
            },
        )
        return result.returncode, result.stderr, log.read_text(encoding="utf-8").splitlines()

    return run


def test_entrypoint_as_root_moves_the_user_to_puid_pgid_then_drops_to_it(run_entrypoint):
    code, stderr, calls = run_entrypoint("cloudplow", "run", PUID="1234", PGID="5678")
    assert code == 0, stderr
    assert "groupmod -o -g 5678 cloudplow" in calls
    assert "usermod -o -u 1234 -g 5678 cloudplow" in calls
    assert "chown -h 1234:5678 /home/cloudplow /config" in calls
    assert "chown -h -R 1234:5678 /config/state" in calls
    assert "chmod -R go-rwx /config/state" in calls
    assert not [call for call in calls if "-R" in call.split() and "/config/state" not in call]
    # Never a chown that follows a symbolic link (tests/test_compose_stack.py plants some).
    assert all(call.startswith("chown -h ") for call in calls if call.startswith("chown"))
    assert calls[-2:] == [
        "setpriv --reuid cloudplow --regid cloudplow --init-groups -- cloudplow run",
        "HOME=/home/cloudplow",
    ]


def test_entrypoint_keeps_the_image_user_for_the_default_ids(run_entrypoint):
    code, stderr, calls = run_entrypoint("cloudplow", "run")
    assert code == 0, stderr
    assert not [call for call in calls if call.split()[0] in ("groupmod", "usermod", "groupadd", "useradd")]
    assert "chown -h 1000:1000 /home/cloudplow /config" in calls
    assert calls[-2] == "setpriv --reuid cloudplow --regid cloudplow --init-groups -- cloudplow run"


def test_entrypoint_refuses_ids_that_are_not_numbers(run_entrypoint):
    code, stderr, calls = run_entrypoint("cloudplow", "run", PUID="root")
    assert code == 2
    assert "PUID and PGID must be numbers" in stderr
    assert not [call for call in calls if not call.startswith(("id ", "getent "))]


def test_entrypoint_not_as_root_runs_the_command_as_it_is(run_entrypoint):
    code, stderr, calls = run_entrypoint("--config", "/config/other.yaml", "status", uid=1000)
    assert code == 0, stderr
    # Options alone are cloudplow's: the entrypoint puts the program in front.
    assert calls == ["id -u", "cloudplow --config /config/other.yaml status"]


def test_entrypoint_says_where_the_example_is_when_the_configuration_is_missing(run_entrypoint, tmp_path):
    code, stderr, _calls = run_entrypoint(
        "cloudplow", "run", uid=1000, CLOUDPLOW_CONFIG=str(tmp_path / "missing.yaml")
    )
    assert code == 0
    assert "/usr/local/share/cloudplow/config.yaml" in stderr


# --- alertmanager/alertmanager.yml -------------------------------------------


def test_alertmanager_config_passes_amtool():
    result = subprocess.run(
        [require_tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_groups_by_uploader_and_the_down_alert_inhibits_the_rest():
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    route = config["route"]
    assert {"alertname", "uploader"} <= set(route["group_by"])
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert route["receiver"] in receivers
    assert receivers[route["receiver"]]["webhook_configs"][0]["url"].startswith("http://")
    (inhibit,) = config["inhibit_rules"]
    (source,) = inhibit["source_matchers"]
    name, operator, down_alert = source.split()
    assert (name, operator) == ("alertname", "=")
    assert f"alertname != {down_alert}" in inhibit["target_matchers"]

    # The inhibit rule only works if Prometheus really raises an alert by that name.
    alert_names = set()
    for rule_file in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        rules = yaml.safe_load(rule_file.read_text(encoding="utf-8")) or {}
        for group in rules.get("groups", []):
            alert_names.update(rule["alert"] for rule in group.get("rules", []) if "alert" in rule)
    assert down_alert in alert_names, (
        f"no alert {down_alert} in prometheus/rules/*.yml: {sorted(alert_names)}"
    )
