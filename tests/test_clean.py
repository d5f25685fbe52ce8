"""The hidden cleaner on a real folder tree, with the real rclone deleting on the WebDAV server."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cloudplow.clean import find_markers, remote_target
from tests.conftest import free_port, obscure, run_cli

pytestmark = pytest.mark.integration


def touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_markers_and_their_targets(tmp_path: Path) -> None:
    touch(tmp_path / "Media/TV/Show/e1.mkv_HIDDEN~")
    touch(tmp_path / "Media/Old Film_HIDDEN~")
    touch(tmp_path / "Media/TV/not-a-marker.txt")

    markers = find_markers(tmp_path)

    assert markers == ["Media/Old Film_HIDDEN~", "Media/TV/Show/e1.mkv_HIDDEN~"]
    assert remote_target("gdrive:", markers[1]) == "gdrive:Media/TV/Show/e1.mkv"
    assert remote_target("gdrive:/", markers[0]) == "gdrive:/Media/Old Film"
    assert remote_target("gdrive:/Backup", markers[0]) == "gdrive:/Backup/Media/Old Film"


def write_clean_config(tmp_path: Path, server, hidden: Path, remotes: list[str]) -> Path:
    (tmp_path / "rclone.conf").write_text(
        f"[dav]\ntype = webdav\nurl = {server.url}\nvendor = other\nuser = alice\npass = {obscure('alice')}\n"
        f"[down]\ntype = webdav\nurl = http://127.0.0.1:{free_port()}\nvendor = other\n",
        encoding="utf-8",
    )
    (tmp_path / "media").mkdir(exist_ok=True)
    config = {
        "rclone": {"config": "rclone.conf"},
        "state_dir": "state",
        "uploaders": {"media": {"source": "media", "destination": "dav:media"}},
        "hidden": [{"folder": str(hidden), "remotes": remotes}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_clean_deletes_what_each_marker_hides_and_keeps_markers_it_could_not_clear(tmp_path, quota_server):
    server = quota_server({"alice": 10**9})
    remote = server.root
    for path in (
        "Media/TV/Show/e1.mkv",
        "Media/TV/Show/e2.mkv",
        "Media/Old Film/film.mkv",
        "Media/Old Film/x.srt",
    ):
        touch(remote / path)
    hidden = tmp_path / "unionfs-fuse"
    touch(hidden / "Media/TV/Show/e1.mkv_HIDDEN~", b"")
    touch(hidden / "Media/Old Film_HIDDEN~", b"")
    touch(hidden / "Media/TV/Show/gone-already.mkv_HIDDEN~", b"")

    # One remote of the two cannot be reached: the reachable one is cleaned, but every
    # marker stays, so the next run deletes on the other remote too.
    config = write_clean_config(tmp_path, server, hidden, ["dav:", "down:"])
    failing = run_cli(config, "clean")

    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "3 marker(s): 2 deleted on the remotes, 1 already gone, 3 kept for the next run" in failing.stdout
    assert len(find_markers(hidden)) == 3
    left = sorted(path.relative_to(remote).as_posix() for path in remote.rglob("*") if path.is_file())
    assert left == ["Media/TV/Show/e2.mkv"]

    # Once every remote answers (here: the unreachable one is dropped), the markers go.
    config = write_clean_config(tmp_path, server, hidden, ["dav:"])
    cleaned = run_cli(config, "clean")

    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert "3 marker(s): 0 deleted on the remotes, 3 already gone, 0 kept" in cleaned.stdout
    assert find_markers(hidden) == [] and hidden.is_dir()
    assert list(hidden.iterdir()) == []  # the metadata folders the markers were in are gone too

    # Nothing left to do is no error.
    again = run_cli(config, "clean")
    assert again.returncode == 0 and "0 marker(s)" in again.stdout


def test_clean_without_hidden_folders_is_a_usage_error(tmp_path):
    (tmp_path / "media").mkdir()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"uploaders": {"media": {"source": "media", "destination": "dav:x"}}}))

    completed = run_cli(path, "clean")

    assert completed.returncode == 2
    assert completed.stderr.strip() == "cloudplow: clean: no hidden folders are configured (the hidden key)"
