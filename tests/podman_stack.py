"""Podman for tests/test_compose_stack.py: its own configuration, the base images, one run at a time.

The test runs Debian's rootful podman with a configuration of its own, never
the host's: CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and
CONTAINERS_REGISTRIES_CONF point at files written under PODMAN_HOME. What they
set, and why (each found by trying on the Debian machines this project runs
on, where a root shell lacks CAP_SYS_RESOURCE and cgroups are v1 with a
cgroup2 tree holding one controller):

- runtime runc: crun 1.8 refuses cgroups in that hybrid layout ("cgroups in
  hybrid mode not supported, drop all controllers from cgroupv2"); runc works.
- cgroup_manager cgroupfs: no systemd runs the machine.
- default_ulimits at the shell's own hard limits: podman asks for more open
  files and processes than the shell has, and without CAP_SYS_RESOURCE the
  runtime's setrlimit fails ("setrlimit RLIMIT_NOFILE: Operation not
  permitted").
- stop_timeout: Debian's podman-compose 1.0.3 does not pass a service's
  stop_grace_period on to podman, so the test sets the same grace period here.

The images live in PODMAN_HOME/storage and stay there between runs (CI runs
in a fresh clone on the same machine); the run state (runroot, tmp_dir) is new
for every run, as after a reboot. A lock file lets one run at a time use them.

The public image registries cannot be reached here, so the base images the
Dockerfile and docker-compose.yml name are built from Debian's packages with
mmdebstrap, under those very names, and rebuilt only when their recipe below
changes (a label holds its hash). They stand in for the official images with
the same entry points, users and paths; their programs are Debian's versions
(prometheus 2.42, alertmanager 0.25), not the tags' ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PODMAN_HOME = Path(os.environ.get("CLOUDPLOW_PODMAN_HOME", "/var/tmp/cloudplow-podman"))
DEBIAN_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# Like Debian's slim images: no manuals, translations or documentation but the licences.
SLIM = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
)
RECIPE_LABEL = "org.cloudplow.test.recipe"
LOCK_WAIT_SECONDS = 900


@dataclasses.dataclass(frozen=True)
class BaseImage:
    """A stand-in for an official image: Debian packages, then hooks, then image settings."""

    name: str
    packages: tuple[str, ...]
    customize: tuple[str, ...]
    changes: tuple[str, ...]

    def recipe_hash(self) -> str:
        recipe = json.dumps([dataclasses.asdict(self), DEBIAN_SOURCES, SLIM], sort_keys=True)
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]


BASE_IMAGES = (
    # The official python image: Python in PATH as python, pip installing system-wide
    # (no EXTERNALLY-MANAGED marker), no bytecode files, LANG=C.UTF-8.
    BaseImage(
        name="docker.io/library/python:3.11-slim-bookworm",
        packages=("python3", "python3-pip", "python-is-python3"),
        customize=(
            'rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED',
            'find "$1"/usr/lib/python3* -depth -name __pycache__ -type d -exec rm -rf {} +',
        ),
        changes=("ENV LANG=C.UTF-8", 'CMD ["python3"]'),
    ),
    # prom/prometheus: /bin/prometheus as nobody, working in the /prometheus volume.
    BaseImage(
        name="docker.io/prom/prometheus:v3.5.0",
        packages=("prometheus",),
        customize=('install -d -o nobody -g nogroup "$1"/prometheus "$1"/etc/prometheus',),
        changes=(
            "USER nobody",
            "WORKDIR /prometheus",
            'VOLUME ["/prometheus"]',
            "EXPOSE 9090",
            'ENTRYPOINT ["/bin/prometheus"]',
            'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]',
        ),
    ),
    # prom/alertmanager: /bin/alertmanager (Debian's prometheus-alertmanager) as nobody.
    BaseImage(
        name="docker.io/prom/alertmanager:v0.28.1",
        packages=("prometheus-alertmanager",),
        customize=(
            'ln -s prometheus-alertmanager "$1"/usr/bin/alertmanager',
            'install -d -o nobody -g nogroup "$1"/alertmanager "$1"/etc/alertmanager',
        ),
        changes=(
            "USER nobody",
            "WORKDIR /alertmanager",
            'VOLUME ["/alertmanager"]',
            "EXPOSE 9093",
            'ENTRYPOINT ["/bin/alertmanager"]',
            'CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]',
        ),
    ),
)


def require_tool(name: str) -> str:
    """Given a program name, return its path. Fail (not skip) when it is missing."""
    found = shutil.which(name)
    assert found, f"{name} is not installed: run `make container-tools`"
    return found


def write_configuration(home: Path, run_dir: Path, *, stop_timeout_seconds: int) -> dict[str, str]:
    """
    Given the folder that keeps the images, a fresh folder for this run's state
    and the stop timeout, write the podman configuration described above and
    return the environment that makes podman (and podman-compose) use it.
    """
    config_dir = run_dir / "containers"
    config_dir.mkdir(parents=True, exist_ok=True)
    (home / "storage").mkdir(parents=True, exist_ok=True)
    (home / "networks").mkdir(parents=True, exist_ok=True)
    _soft, open_files = resource.getrlimit(resource.RLIMIT_NOFILE)
    _soft, processes = resource.getrlimit(resource.RLIMIT_NPROC)
    # conmon gets no more processes than pid_max either, 32768 on many machines.
    processes = min(processes, 32768) if processes != resource.RLIM_INFINITY else 32768
    open_files = min(open_files, 1048576) if open_files != resource.RLIM_INFINITY else 1048576
    (config_dir / "containers.conf").write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={open_files}:{open_files}", "nproc={processes}:{processes}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f"stop_timeout = {stop_timeout_seconds}\n"
        f'tmp_dir = "{run_dir / "tmp"}"\n'
        "[network]\n"
        'network_backend = "netavark"\n'
        f'network_config_dir = "{home / "networks"}"\n',
        encoding="utf-8",
    )
    (config_dir / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{home / "storage"}"\nrunroot = "{run_dir / "run"}"\n',
        encoding="utf-8",
    )
    # Short names (python:3.11-slim-bookworm, prom/prometheus) mean docker.io, as for Docker.
    (config_dir / "registries.conf").write_text(
        'unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n',
        encoding="utf-8",
    )
    return {
        **os.environ,
        "CONTAINERS_CONF": str(config_dir / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(config_dir / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(config_dir / "registries.conf"),
    }


@contextlib.contextmanager
def exclusive(home: Path) -> Iterator[None]:
    """Hold the lock on `home` (one stack test at a time on this machine: fixed ports)."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "lock", "w", encoding="utf-8") as lock:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, f"another run holds {home / 'lock'}"
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def podman(environment: dict[str, str], *arguments: str, timeout: float = 300) -> str:
    """Run podman with the test's configuration; return stdout. Fail with its stderr."""
    result = subprocess.run(
        [require_tool("podman"), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, f"podman {' '.join(arguments)}: {result.stderr.strip()}"
    return result.stdout


def image_label(environment: dict[str, str], name: str, label: str) -> str | None:
    """Return the label of a local image, or None if there is no such image (or label)."""
    result = subprocess.run(
        [require_tool("podman"), "image", "inspect", "--format", "json", name],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )
    if result.returncode != 0:
        return None
    (image,) = json.loads(result.stdout)
    return ((image.get("Config") or {}).get("Labels") or {}).get(label)


def build_base_image(environment: dict[str, str], image: BaseImage, work_dir: Path) -> None:
    """Build one stand-in base image with mmdebstrap and import it under its official name."""
    tarball = work_dir / (hashlib.sha256(image.name.encode()).hexdigest()[:12] + ".tar")
    command = [
        require_tool("mmdebstrap"),
        "--variant=minbase",
        "--quiet",
        # Merged /usr set up by mmdebstrap itself, without the usrmerge package (and its perl).
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        "--include=" + ",".join(image.packages),
        *(f"--dpkgopt={option}" for option in SLIM),
        *(f"--customize-hook={hook}" for hook in image.customize),
        "bookworm",
        str(tarball),
        *DEBIAN_SOURCES,
    ]
    # Without stdin mmdebstrap would read sources from it.
    result = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"mmdebstrap for {image.name}: {result.stderr[-3000:]}"
    changes = [*image.changes, f"LABEL {RECIPE_LABEL}={image.recipe_hash()}"]
    podman(
        environment,
        "import",
        "--quiet",
        *(argument for change in changes for argument in ("--change", change)),
        str(tarball),
        image.name,
    )
    tarball.unlink()


def ensure_base_images(environment: dict[str, str]) -> list[str]:
    """Build the base images whose recipe changed since they were built; return their names."""
    built = []
    for image in BASE_IMAGES:
        if image_label(environment, image.name, RECIPE_LABEL) == image.recipe_hash():
            continue
        with tempfile.TemporaryDirectory(prefix="cloudplow-mmdebstrap-", dir="/var/tmp") as work_dir:
            build_base_image(environment, image, Path(work_dir))
        built.append(image.name)
    return built


def trust_store() -> Path | None:
    """Return the host's CA bundle (which holds a TLS proxy's CA, if any), or None."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    debian = Path("/etc/ssl/certs/ca-certificates.crt")
    return debian if debian.is_file() else None
