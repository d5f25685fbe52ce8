"""Removing the source folders a move session emptied: unit cases on a real folder tree, and
end to end with the real rclone and the WebDAV quota server."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from cloudplow.tidy import emptied_folder_candidates, remove_emptied_folders
from tests.conftest import make_source, run_cli, write_config


def touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_candidates_are_every_folder_above_the_moved_files_deepest_first() -> None:
    candidates = emptied_folder_candidates(["a/b/c/one.mkv", "a/b/two.mkv", "top.mkv", "x/y.nfo"])

    assert candidates == [PurePosixPath(p) for p in ("a/b/c", "a/b", "a", "x")]


def test_only_emptied_folders_go_and_never_the_source(tmp_path: Path) -> None:
    source = tmp_path / "source"
    moved = ["show/s1/e1.mkv", "show/s1/e2.mkv", "show/s2/e1.mkv", "film/film.mkv", "top.mkv"]
    for path in moved:
        touch(source / path)
    touch(source / "show/s2/e2.mkv")  # a file the session left (quota, failure ...)
    (source / "untouched-empty").mkdir()  # empty before the session: not the session's doing
    for path in moved:
        (source / path).unlink()  # what rclone move did
    touch(source / "film/arrived-meanwhile.nfo")  # a downloader wrote it during the session

    removed = remove_emptied_folders(source, moved)

    assert removed == ["show/s1"]
    assert source.is_dir()
    assert (source / "show/s2/e2.mkv").is_file() and (source / "film/arrived-meanwhile.nfo").is_file()
    assert (source / "untouched-empty").is_dir()


def test_a_whole_emptied_tree_goes_but_the_source_stays(tmp_path: Path) -> None:
    source = tmp_path / "source"
    moved = ["a/b/c/one.mkv", "a/two.mkv"]
    for path in moved:
        touch(source / path)
        (source / path).unlink()

    assert remove_emptied_folders(source, moved) == ["a/b/c", "a/b", "a"]
    assert source.is_dir() and list(source.iterdir()) == []
    # Folders that are already gone are no error.
    assert remove_emptied_folders(source, moved) == []


def test_a_symlinked_folder_is_left_alone(tmp_path: Path) -> None:
    source, elsewhere = tmp_path / "source", tmp_path / "elsewhere"
    (elsewhere / "empty").mkdir(parents=True)
    source.mkdir()
    os.symlink(elsewhere / "empty", source / "link")

    assert remove_emptied_folders(source, ["link/gone.mkv"]) == []
    assert (elsewhere / "empty").is_dir() and (source / "link").is_symlink()


@pytest.mark.integration
@pytest.mark.parametrize("remove_empty_dirs", [True, False])
def test_a_move_session_removes_the_folders_it_emptied(tmp_path, quota_server, remove_empty_dirs):
    server = quota_server({"alice": 50_000_000})
    source = tmp_path / "source"
    make_source(source, [20_000] * 21)  # show0..show6 / season0..2
    touch(source / "show3/season0/download.partial~")  # excluded, so it stays with its folder
    config = write_config(
        tmp_path,
        server,
        users=["alice"],
        quota_bytes=50_000_000,
        source=source,
        extra={"remove_empty_dirs": remove_empty_dirs},
    )

    completed = run_cli(config, "upload")

    assert completed.returncode == 0, completed.stderr
    assert len(list((server.root / "media").rglob("*.mkv"))) == 21
    folders = sorted(path.relative_to(source).as_posix() for path in source.rglob("*") if path.is_dir())
    if remove_empty_dirs:
        assert folders == ["show3", "show3/season0"]
    else:
        assert len(folders) == 7 + 21  # every show and season folder
