"""The compose stack, built and brought up for real with Debian's podman and podman-compose.

The project's image is built from the repository's Dockerfile and the stack
started from its docker-compose.yml, both unchanged, the way a user runs them
(podman, podman-compose, mmdebstrap: `make container-tools`). The base images
they name are built from Debian's packages here, because the public image
registries cannot be reached; tests/podman_stack.py says how, and which podman
configuration this machine needs.

One file is added beside docker-compose.yml, for the test alone
(stack-test.yml, written below):

- Grafana is replaced by a STAND-IN: no Grafana image or binary can be had
  here. It is a few lines of Python in the python base image that checks what
  the real one would be given (the provisioning and dashboard mounts, an admin
  password that is set and not "admin") and answers /api/health. The
  dashboards themselves are proven against a real Prometheus by
  tests/test_monitoring_live.py.
- cloudplow uploads to a WebDAV server (`rclone serve webdav`, from the
  cloudplow image) slowed by --bwlimit, so that a session is running when the
  container is stopped.

The services publish fixed ports on 127.0.0.1 (47949, 9090, 9093, 3000), so
one such test runs at a time on a machine (a lock) and they must be free.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import podman_stack
from tests.podman_stack import podman

REPOSITORY = Path(__file__).resolve().parent.parent
PROJECT = "cloudplow"
IMAGE = "localhost/cloudplow:local"
PUID, PGID = 1234, 2345
PORTS = {"cloudplow": 47949, "prometheus": 9090, "alertmanager": 9093, "grafana": 3000}
IMAGE_LIMIT_BYTES = 250 * 10**6
WAIT_SECONDS = 120
MEDIA_FILES = 3
MEDIA_FILE_BYTES = 16 * 2**20
PROJECT_LABEL = f"label=io.podman.compose.project={PROJECT}"

GRAFANA_STAND_IN = '''"""Grafana STAND-IN for tests/test_compose_stack.py: no Grafana image can be had."""
import http.server
import json
import os
import sys
from pathlib import Path

password = os.environ.get("GF_SECURITY_ADMIN_PASSWORD", "")
problems = []
if not password or password == "admin":
    problems.append("GF_SECURITY_ADMIN_PASSWORD is empty or admin")
if not list(Path("/etc/grafana/provisioning").rglob("*.yml")):
    problems.append("no provisioning files in /etc/grafana/provisioning")
if not list(Path("/var/lib/grafana/dashboards").glob("*.json")):
    problems.append("no dashboards in /var/lib/grafana/dashboards")
if problems:
    sys.exit("grafana stand-in: " + "; ".join(problems))


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"database": "ok", "version": "stand-in"}).encode()
        self.send_response(200 if self.path == "/api/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)


http.server.ThreadingHTTPServer(("0.0.0.0", 3000), Health).serve_forever()
'''

OVERRIDE = {
    "services": {
        "grafana": {
            # STAND-IN for Grafana: see the module docstring.
            "image": "docker.io/library/python:3.11-slim-bookworm",
            "user": "65534:65534",
            "command": ["python3", "/stand-in/grafana.py"],
            "volumes": ["./stand-in:/stand-in:ro"],
        },
        "webdav": {
            "image": "cloudplow:local",
            "user": "65534:65534",
            "entrypoint": ["rclone"],
            "command": ["serve", "webdav", "/tmp/dav", "--addr", ":8080"],
        },
        "cloudplow": {"depends_on": ["webdav"]},
    }
}


def container(service: str) -> str:
    return f"{PROJECT}_{service}_1"


def duration_seconds(text: str) -> int:
    match = re.fullmatch(r"(\d+)(s|m)", str(text))
    assert match, f"cannot read the duration {text!r}"
    return int(match[1]) * (60 if match[2] == "m" else 1)


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def get_json(url: str) -> Any:
    status, body = get(url)
    assert status == 200, f"{url}: {status} {body[:300]!r}"
    return json.loads(body)


def wait_for(what: str, probe, seconds: float = WAIT_SECONDS):
    """Call probe() until it returns something true; return it. Fail after `seconds`."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (OSError, AssertionError, ValueError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(2)
    raise AssertionError(f"{what}: not within {seconds:.0f} s (last: {last!r})")


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Stack:
    """The compose project in a temporary folder, with podman configured for the test."""

    def __init__(self, directory: Path, environment: dict[str, str]):
        self.directory = directory
        self.environment = environment
        self.log = directory / "compose.log"
        self.timings: dict[str, float] = {}

    @property
    def config_dir(self) -> Path:
        return self.directory / "config"

    def compose(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [
            podman_stack.require_tool("podman-compose"),
            "-p",
            PROJECT,
            "-f",
            "docker-compose.yml",
            "-f",
            "stack-test.yml",
            *arguments,
        ]
        result = subprocess.run(
            command,
            cwd=self.directory,
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}\n")
        assert not check or result.returncode == 0, f"podman-compose {arguments}: {result.stderr[-2000:]}"
        return result

    def leftovers(self) -> dict[str, list[str]]:
        """Return what of the project podman still has: containers, volumes, networks, pods."""
        env = self.environment
        return {
            "containers": podman(env, "ps", "-a", "-q", "--filter", PROJECT_LABEL).split(),
            "volumes": podman(env, "volume", "ls", "-q", "--filter", PROJECT_LABEL).split(),
            "networks": podman(env, "network", "ls", "-q", "--filter", PROJECT_LABEL).split(),
            "pods": podman(env, "pod", "ps", "-q", "--filter", PROJECT_LABEL).split(),
        }

    def remove_leftovers(self) -> None:
        env = self.environment
        found = self.leftovers()
        if found["containers"]:
            podman(env, "rm", "-f", "-t", "5", *found["containers"])
        if found["pods"]:
            podman(env, "pod", "rm", "-f", *found["pods"])
        if found["volumes"]:
            podman(env, "volume", "rm", "-f", *found["volumes"])
        if found["networks"]:
            podman(env, "network", "rm", "-f", *found["networks"])

    def last_session_state(self) -> str | None:
        ledger = self.config_dir / "state" / "cloudplow.sqlite3"
        if not ledger.exists():
            return None
        with contextlib.closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=10)) as db:
            row = db.execute("SELECT state FROM sessions ORDER BY id DESC LIMIT 1").fetchone()
        return row[0] if row else None


def write_project(directory: Path) -> None:
    """Copy what docker-compose.yml mounts beside it, and add the test's config, media and override."""
    shutil.copy2(REPOSITORY / "docker-compose.yml", directory / "docker-compose.yml")
    for folder in ("prometheus", "alertmanager", "grafana"):
        shutil.copytree(REPOSITORY / folder, directory / folder)
    (directory / "stack-test.yml").write_text(yaml.safe_dump(OVERRIDE, sort_keys=False), encoding="utf-8")
    (directory / "stand-in").mkdir()
    (directory / "stand-in" / "grafana.py").write_text(GRAFANA_STAND_IN, encoding="utf-8")
    config_dir = directory / "config"
    config_dir.mkdir()
    (config_dir / "rclone.conf").write_text(
        "[dav]\ntype = webdav\nurl = http://webdav:8080\nvendor = other\n", encoding="utf-8"
    )
    config = {
        "rclone": {"config": "/config/rclone.conf"},
        "state_dir": "/config/state",
        "server": {"host": "0.0.0.0", "port": PORTS["cloudplow"]},
        "uploaders": {
            "media": {
                "source": "/data/media",
                "destination": "dav:/upload",
                "mode": "copy",
                "quota": {"per_account": "10GB", "window": "24h", "reserve": 0},
                "check": {"interval": "30s", "min_queue": 0, "max_age": "12h", "min_free": 0},
                "filters": {"min_age": "0s", "exclude_open_files": False},
                "transfers": 2,
                # Slow enough that the session is still running when the container is stopped.
                "rclone_flags": {"--bwlimit": "256k"},
            }
        },
    }
    (config_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    media = directory / "media"
    media.mkdir()
    for number in range(MEDIA_FILES):
        (media / f"episode-{number}.mkv").write_bytes(os.urandom(MEDIA_FILE_BYTES))


@pytest.fixture(scope="module")
def podman_environment(tmp_path_factory) -> Iterator[dict[str, str]]:
    """Podman configured for the test (tests/podman_stack.py), with this machine's lock held."""
    for tool in ("podman", "podman-compose", "mmdebstrap", "runc"):
        podman_stack.require_tool(tool)
    grace = duration_seconds(
        yaml.safe_load((REPOSITORY / "docker-compose.yml").read_text(encoding="utf-8"))["services"][
            "cloudplow"
        ]["stop_grace_period"]
    )
    run_dir = tmp_path_factory.mktemp("podman")
    with podman_stack.exclusive(podman_stack.PODMAN_HOME):
        yield podman_stack.write_configuration(podman_stack.PODMAN_HOME, run_dir, stop_timeout_seconds=grace)


@pytest.fixture(scope="module")
def image(podman_environment) -> dict[str, float]:
    """Build the base images (if their recipe changed) and the project's image; return timings."""
    timings = {}
    started = time.monotonic()
    podman_stack.ensure_base_images(podman_environment)
    timings["base_images_seconds"] = time.monotonic() - started
    ca_bundle = podman_stack.trust_store()
    secret = ["--secret", f"id=pip-ca,src={ca_bundle}"] if ca_bundle else []
    started = time.monotonic()
    # docker format: the OCI format has no HEALTHCHECK.
    podman(
        podman_environment,
        "build",
        "--quiet",
        "--format",
        "docker",
        *secret,
        "-t",
        IMAGE,
        str(REPOSITORY),
        timeout=900,
    )
    timings["build_seconds"] = time.monotonic() - started
    (inspected,) = json.loads(podman(podman_environment, "image", "inspect", IMAGE))
    timings["image_megabytes"] = inspected["Size"] / 1e6
    return timings


@pytest.fixture(scope="module")
def stack(tmp_path_factory, podman_environment, image) -> Iterator[Stack]:
    """The compose stack, up; always down and removed afterwards."""
    directory = tmp_path_factory.mktemp("compose")
    write_project(directory)
    environment = {
        **podman_environment,
        "PUID": str(PUID),
        "PGID": str(PGID),
        "TZ": "Etc/UTC",
        "MEDIA_DIR": str(directory / "media"),
    }
    stack = Stack(directory, environment)
    stack.timings.update(image)
    # What an interrupted earlier run may have left.
    stack.remove_leftovers()
    busy = [f"{name} {port}" for name, port in PORTS.items() if not port_is_free(port)]
    assert not busy, f"ports the stack publishes on 127.0.0.1 are taken: {busy}"
    make = subprocess.run(
        ["make", "-s", "-C", str(directory), "-f", str(REPOSITORY / "Makefile"), "grafana-password"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert make.returncode == 0, make.stderr
    started = time.monotonic()
    try:
        stack.compose("up", "-d")
        wait_for(
            "cloudplow healthy",
            lambda: (
                subprocess.run(
                    ["podman", "healthcheck", "run", container("cloudplow")],
                    env=environment,
                    capture_output=True,
                    timeout=60,
                    check=False,
                ).returncode
                == 0
            ),
        )
        stack.timings["start_to_healthy_seconds"] = time.monotonic() - started
        yield stack
    finally:
        stack.compose("down", "-v", check=False)
        stack.remove_leftovers()
        print(f"compose stack timings: {json.dumps({k: round(v, 1) for k, v in stack.timings.items()})}")


def test_make_writes_a_random_private_grafana_password_and_compose_refuses_to_run_without_one(
    tmp_path, podman_environment
):
    shutil.copy2(REPOSITORY / "docker-compose.yml", tmp_path / "docker-compose.yml")
    refused = subprocess.run(
        [podman_stack.require_tool("podman-compose"), "-f", "docker-compose.yml", "ps"],
        cwd=tmp_path,
        env={key: value for key, value in podman_environment.items() if key != "GRAFANA_ADMIN_PASSWORD"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "set GRAFANA_ADMIN_PASSWORD in .env" in refused.stdout + refused.stderr

    def make() -> str:
        result = subprocess.run(
            ["make", "-s", "-C", str(tmp_path), "-f", str(REPOSITORY / "Makefile"), "grafana-password"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return (tmp_path / ".env").read_text(encoding="utf-8")

    first = make()
    (password,) = re.findall(r"^GRAFANA_ADMIN_PASSWORD=(.+)$", first, re.M)
    assert len(password) >= 24 and password != "admin"
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    assert make() == first, "a second make keeps the password"
    (other_dir := tmp_path / "other").mkdir()
    shutil.copy2(REPOSITORY / "docker-compose.yml", other_dir / "docker-compose.yml")
    subprocess.run(
        ["make", "-s", "-C", str(other_dir), "-f", str(REPOSITORY / "Makefile"), "grafana-password"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert (other_dir / ".env").read_text(encoding="utf-8") != first, "each .env gets its own password"
    accepted = subprocess.run(
        [podman_stack.require_tool("podman-compose"), "-f", "docker-compose.yml", "ps"],
        cwd=tmp_path,
        env=podman_environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # podman-compose 1.0.3 has no `config`: `ps` reads the file (and lists nothing).
    assert accepted.returncode == 0, accepted.stderr
    assert ".env" in (REPOSITORY / ".gitignore").read_text(encoding="utf-8").split()


def test_the_image_is_small_and_holds_no_ca_from_the_build(podman_environment, image):
    (inspected,) = json.loads(podman(podman_environment, "image", "inspect", IMAGE))
    assert inspected["Size"] < IMAGE_LIMIT_BYTES, f"image is {inspected['Size'] / 1e6:.0f} MB"
    environment = inspected["Config"].get("Env") or []
    assert not [item for item in environment if item.startswith(("PIP_CERT=", "SSL_CERT", "REQUESTS_CA"))]
    # Built in docker format: the OCI format has no HEALTHCHECK.
    assert inspected["Healthcheck"]["Test"][0] == "CMD"
    # The CAs this host added to its trust store (a TLS proxy's): in no file of the image.
    markers = []
    for certificate in sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt")):
        body = [line for line in certificate.read_text(encoding="ascii").splitlines() if "-----" not in line]
        if len(body) > 2:
            markers.append(body[1].encode())
    root = Path(podman(podman_environment, "image", "mount", IMAGE).strip())
    try:
        assert not (root / "run" / "secrets" / "pip-ca").exists()
        scanned = 0
        for path in root.rglob("*"):
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            scanned += 1
            for marker in markers:
                assert marker not in data, f"the build's CA is baked into {path.relative_to(root)}"
        assert scanned > 1000
    finally:
        podman(podman_environment, "image", "unmount", IMAGE)


def test_the_entrypoint_changes_no_owner_through_a_symbolic_link(tmp_path, podman_environment, image):
    config_dir = tmp_path / "config"
    (config_dir / "state").mkdir(parents=True)
    (config_dir / "rclone.conf").symlink_to("/etc/shadow")
    (config_dir / "state" / "passwd").symlink_to("/etc/passwd")
    (config_dir / "state" / "bin").symlink_to("/usr/local/bin")
    (config_dir / "state" / "cloudplow.sqlite3").write_bytes(b"")
    (config_dir / "state" / "cloudplow.sqlite3").chmod(0o644)
    outside = ("/etc/shadow", "/etc/passwd", "/usr/local/bin", "/usr/local/bin/rclone")
    inside = ("/config", "/config/state", "/config/state/passwd", "/config/state/cloudplow.sqlite3")

    def owners(*entrypoint: str) -> tuple[dict[str, list[str]], str]:
        options = ["--rm", "-e", f"PUID={PUID}", "-e", f"PGID={PGID}", "-v", f"{config_dir}:/config"]
        result = subprocess.run(
            ["podman", "run", *options, *entrypoint, IMAGE, "stat", "-c", "%n %u:%g %a", *outside, *inside],
            env=podman_environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}, result.stderr

    # The image as built (stat run directly, no entrypoint), then through the real entrypoint as root.
    before, _stderr = owners("--entrypoint", "")
    after, stderr = owners()
    for path in outside:
        assert after[path] == before[path], f"the entrypoint changed {path}: {before[path]} -> {after[path]}"
    assert after["/config"][0] == f"{PUID}:{PGID}"
    assert after["/config/state"] == [f"{PUID}:{PGID}", "700"]
    # The link itself is the user's; what it points to is not.
    assert after["/config/state/passwd"][0] == f"{PUID}:{PGID}"
    assert after["/config/state/cloudplow.sqlite3"] == [f"{PUID}:{PGID}", "600"]
    assert "rclone.conf is a symbolic link" in stderr


def test_the_healthcheck_passes(stack):
    check = subprocess.run(
        ["podman", "healthcheck", "run", container("cloudplow")],
        env=stack.environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    (inspected,) = json.loads(podman(stack.environment, "inspect", container("cloudplow")))
    health = inspected["State"].get("Health") or inspected["State"]["Healthcheck"]
    assert health["Status"] == "healthy", health


def test_status_answers_on_the_published_port(stack):
    document = get_json(f"http://127.0.0.1:{PORTS['cloudplow']}/status")
    assert set(document["uploaders"]) == {"media"}
    assert document["state_dir"] == "/config/state"


def test_cloudplow_runs_as_puid_pgid_never_root(stack):
    wait_for("rclone running", lambda: stack.last_session_state() == "running")
    rows = podman(stack.environment, "top", container("cloudplow"), "huser", "hgroup", "args")
    processes = [line.split(None, 2) for line in rows.splitlines()[1:] if line.strip()]
    # The init (`init: true`, podman's catatonit at /run/podman-init) stays root to pass signals on.
    init = [process for process in processes if process[2].startswith("/run/podman-init")]
    assert len(init) == 1 and init[0][0] == "root", rows
    ours = [process for process in processes if process not in init]
    assert any("cloudplow run" in process[2] for process in ours), rows
    assert any(process[2].startswith("rclone") or "/rclone " in process[2] for process in ours), rows
    for host_user, host_group, arguments in ours:
        assert (host_user, host_group) == (str(PUID), str(PGID)), f"{arguments} runs as {host_user}"


def test_state_is_in_config_private_to_the_user(stack):
    state_dir = stack.config_dir / "state"
    wait_for("the ledger", lambda: (state_dir / "cloudplow.sqlite3").exists())
    info = state_dir.stat()
    assert (info.st_uid, info.st_gid) == (PUID, PGID)
    assert stat.S_IMODE(info.st_mode) == 0o700
    files = [path for path in state_dir.rglob("*") if path.is_file()]
    assert files
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, f"{path.name} is {oct(mode)}"
        assert path.stat().st_uid == PUID


def test_prometheus_scrapes_cloudplow_with_every_rule_file_loaded(stack):
    base = f"http://127.0.0.1:{PORTS['prometheus']}"

    def cloudplow_target():
        targets = get_json(f"{base}/api/v1/targets")["data"]["activeTargets"]
        return [target for target in targets if target["labels"]["job"] == "cloudplow"]

    (target,) = wait_for(
        "the cloudplow target up", lambda: [t for t in cloudplow_target() if t["health"] == "up"]
    )
    assert target["labels"]["instance"] == f"cloudplow:{PORTS['cloudplow']}"

    prometheus_config = yaml.safe_load(
        (REPOSITORY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    )
    expected_rules = 0
    for rule_file in prometheus_config["rule_files"]:
        document = yaml.safe_load((REPOSITORY / "prometheus" / rule_file).read_text(encoding="utf-8"))
        expected_rules += sum(len(group["rules"]) for group in document["groups"])
    groups = get_json(f"{base}/api/v1/rules")["data"]["groups"]
    assert {group["file"] for group in groups} == {
        f"/etc/prometheus/{rule_file}" for rule_file in prometheus_config["rule_files"]
    }
    assert sum(len(group["rules"]) for group in groups) == expected_rules
    assert all(rule["health"] in ("ok", "unknown") for group in groups for rule in group["rules"])

    query = urllib.parse.urlencode({"query": '{job="cloudplow", __name__=~"cloudplow_.+"}'})
    series = wait_for(
        "a cloudplow series", lambda: get_json(f"{base}/api/v1/query?{query}")["data"]["result"]
    )
    assert all(item["metric"]["instance"] == target["labels"]["instance"] for item in series)


def test_alertmanager_is_ready(stack):
    status, _body = wait_for(
        "alertmanager ready",
        lambda: (result := get(f"http://127.0.0.1:{PORTS['alertmanager']}/-/ready"))[0] == 200 and result,
    )
    assert status == 200


def test_grafana_stand_in_gets_the_password_from_the_env_file(stack):
    status, body = get(f"http://127.0.0.1:{PORTS['grafana']}/api/health")
    assert status == 200, body
    (password,) = re.findall(
        r"^GRAFANA_ADMIN_PASSWORD=(.+)$", (stack.directory / ".env").read_text(encoding="utf-8"), re.M
    )
    (inspected,) = json.loads(podman(stack.environment, "inspect", container("grafana")))
    assert f"GF_SECURITY_ADMIN_PASSWORD={password}" in inspected["Config"]["Env"]


def test_podman_stop_ends_cloudplow_within_its_grace_period_with_the_session_interrupted(stack):
    wait_for("a running session", lambda: stack.last_session_state() == "running")
    grace = duration_seconds(
        yaml.safe_load((REPOSITORY / "docker-compose.yml").read_text(encoding="utf-8"))["services"][
            "cloudplow"
        ]["stop_grace_period"]
    )
    started = time.monotonic()
    podman(stack.environment, "stop", container("cloudplow"), timeout=grace + 60)
    elapsed = time.monotonic() - started
    stack.timings["stop_seconds"] = elapsed
    (inspected,) = json.loads(podman(stack.environment, "inspect", container("cloudplow")))
    assert inspected["State"]["ExitCode"] == 0, "killed, not stopped"
    assert elapsed < grace, f"{elapsed:.0f} s"
    assert stack.last_session_state() == "interrupted"


def test_the_stack_goes_down_leaving_no_container_volume_or_network(stack):
    stack.compose("down", "-v")
    left = stack.leftovers()
    assert left["containers"] == [] and left["volumes"] == [] and left["pods"] == []
    # Debian's podman-compose 1.0.3 removes no network on `down` (later versions do): the
    # project's own network is all it may leave, and removing it leaves nothing.
    assert left["networks"] in ([], [f"{PROJECT}_default"])
    for network in left["networks"]:
        podman(stack.environment, "network", "rm", network)
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": [], "pods": []}
