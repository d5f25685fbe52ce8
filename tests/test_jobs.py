"""Movers and syncers: remote-to-remote jobs planned, rotated and recorded like uploads. Real rclone
against real WebDAV quota servers (a server-side MOVE within one, copies between two)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
import yaml

from tests.conftest import obscure, run_cli

pytestmark = pytest.mark.integration


def put(root: Path, files: dict[str, int], seed: int = 3) -> dict[str, bytes]:
    generator = random.Random(seed)
    contents = {}
    for path, size in files.items():
        data = generator.randbytes(size)
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
        contents[path] = data
    return contents


def ledger(state_dir: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(state_dir / "cloudplow.sqlite3") as connection:
        return connection.execute(sql).fetchall()


def test_a_mover_moves_server_side_after_its_uploaders_session_through_its_pool(tmp_path, quota_server):
    server = quota_server({"alice": 1_000_000, "bob": 1_000_000})
    staged = put(
        server.root,
        {"staging/Show/s1/e1.mkv": 400_000, "staging/Show/s1/e2.mkv": 400_000, "staging/Film/f.mkv": 400_000},
    )
    (tmp_path / "rclone.conf").write_text(
        f"[dav]\ntype = webdav\nurl = {server.url}\nvendor = other\npacer_min_sleep = 1ms\n", encoding="utf-8"
    )
    (tmp_path / "local").mkdir()
    accounts = [
        {"name": user, "env": {"RCLONE_CONFIG_DAV_USER": user, "RCLONE_CONFIG_DAV_PASS": obscure(user)}}
        for user in ("alice", "bob")
    ]
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "rclone": {"config": "rclone.conf"},
                "state_dir": "state",
                "uploaders": {
                    "media": {
                        "source": "local",
                        "destination": "dav:media",
                        "accounts": {"list": accounts},
                        "quota": {"per_account": 1_000_000, "reserve": 0},
                        "filters": {"min_age": "0s"},
                    }
                },
                "movers": {"staging": {"from": "dav:staging", "to": "dav:media", "after": "media"}},
            }
        )
    )

    completed = run_cli(config, "upload", "media")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "staging: exit 0" in completed.stdout
    for path, data in staged.items():
        moved = server.root / path.replace("staging/", "media/", 1)
        assert moved.read_bytes() == data
        assert not (server.root / path).exists()
    assert not [path for path in (server.root / "staging").rglob("*")], "empty source folders removed"
    # Server-side: no upload reached the server, yet each account is charged what moved through it.
    usage = server.usage()
    assert all(usage[user].committed_bytes == 0 for user in ("alice", "bob"))
    charged = dict(
        ledger(
            tmp_path / "state",
            "SELECT account, SUM(size) FROM files WHERE uploader='staging' AND outcome='uploaded'"
            " GROUP BY account",
        )
    )
    assert charged == {"alice": 800_000, "bob": 400_000}
    quota = run_cli(config, "quota", "--json")
    assert quota.returncode == 0


def write_sync_config(tmp_path: Path, source_server, target_server, *, mode: str, quota: int) -> Path:
    (tmp_path / "rclone.conf").write_text(
        f"[src]\ntype = webdav\nurl = {source_server.url}\nvendor = other\nuser = reader\n"
        f"pass = {obscure('reader')}\npacer_min_sleep = 1ms\n"
        f"[dst]\ntype = webdav\nurl = {target_server.url}\nvendor = other\npacer_min_sleep = 1ms\n",
        encoding="utf-8",
    )
    (tmp_path / "local").mkdir(exist_ok=True)
    accounts = [
        {"name": user, "env": {"RCLONE_CONFIG_DST_USER": user, "RCLONE_CONFIG_DST_PASS": obscure(user)}}
        for user in ("x", "y")
    ]
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "rclone": {"config": "rclone.conf"},
                "state_dir": "state",
                "uploaders": {"media": {"source": "local", "destination": "dst:unused"}},
                "syncers": {
                    "backup": {
                        "source": "src:Media",
                        "destination": "dst:Backup",
                        "mode": mode,
                        "accounts": {"list": accounts},
                        "quota": {"per_account": quota, "reserve": 0},
                        "transfers": 2,
                    }
                },
            }
        )
    )
    return path


def test_a_syncer_plans_a_source_larger_than_one_account_through_its_pool(tmp_path, quota_server):
    source_server = quota_server({"reader": 10**9})
    target_server = quota_server({"x": 1_000_000, "y": 1_000_000})
    files = {f"Media/Show/e{index}.mkv": 300_000 for index in range(5)}
    contents = put(source_server.root, files)
    config = write_sync_config(tmp_path, source_server, target_server, mode="copy", quota=1_000_000)

    first = run_cli(config, "sync")

    assert first.returncode == 0, first.stdout + first.stderr
    for path, data in contents.items():
        assert (target_server.root / path.replace("Media/", "Backup/", 1)).read_bytes() == data
        assert (source_server.root / path).is_file(), "a copy leaves the source as it is"
    usage = target_server.usage()
    assert usage["x"].committed_bytes == 900_000 and usage["y"].committed_bytes == 600_000  # rotation
    assert usage["x"].wasted_bytes == usage["y"].wasted_bytes == 0
    stages = ledger(tmp_path / "state", "SELECT account FROM stages ORDER BY id")
    assert [account for (account,) in stages] == ["x", "y"]

    # Nothing changed: nothing to copy, no quota spent.
    second = run_cli(config, "sync", "backup")
    assert second.returncode == 0 and "nothing to upload" in second.stdout, second.stdout
    assert target_server.usage()["y"].committed_bytes == 600_000

    # More than the pool holds: what fits is copied, the rest waits, exit 3 as for upload.
    put(source_server.root, {f"Media/Film/f{index}.mkv": 200_000 for index in range(4)}, seed=9)
    third = run_cli(config, "sync")
    assert third.returncode == 3, third.stdout + third.stderr
    assert target_server.usage()["y"].committed_bytes == 1_000_000
    status = run_cli(config, "status", "--json")
    assert '"backup"' in status.stdout


def test_sync_mode_also_deletes_what_the_source_no_longer_has(tmp_path, quota_server):
    source_server = quota_server({"reader": 10**9})
    target_server = quota_server({"x": 10**7, "y": 10**7})
    put(source_server.root, {"Media/keep.mkv": 1000, "Media/dir/also.mkv": 1000})
    put(target_server.root, {"Backup/stale.mkv": 500, "Backup/dir/old.nfo": 10})
    config = write_sync_config(tmp_path, source_server, target_server, mode="sync", quota=10**7)

    completed = run_cli(config, "sync")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "deleted 2 file(s) at the destination that the source lacks" in completed.stdout
    left = sorted(
        path.relative_to(target_server.root).as_posix()
        for path in target_server.root.rglob("*")
        if path.is_file()
    )
    assert left == ["Backup/dir/also.mkv", "Backup/keep.mkv"]


def test_sync_with_an_unknown_name_is_a_usage_error(tmp_path, quota_server):
    source_server = quota_server({"reader": 10})
    target_server = quota_server({"x": 10, "y": 10})
    config = write_sync_config(tmp_path, source_server, target_server, mode="copy", quota=10)

    completed = run_cli(config, "sync", "nightly")

    assert completed.returncode == 2
    assert completed.stderr.strip() == "cloudplow: no syncer named nightly (configured: backup)"
