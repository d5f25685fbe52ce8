"""Every file accounted for, and broken accounts skipped: the real CLI, the real rclone and the
local WebDAV quota server (issue 9, items 1 and 2)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
import unicodedata
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from cloudplow.config import load_config
from cloudplow.ledger import Ledger
from cloudplow.live import LiveState
from cloudplow.metrics import CloudplowCollector
from cloudplow.rclone.stage import StageRequest, run_stage
from tests.conftest import RCLONE, make_source, obscure, run_cli, tree_digests, write_config

pytestmark = pytest.mark.integration

NFC = unicodedata.normalize("NFC", "café.nfo")
NFD = unicodedata.normalize("NFD", "café.nfo")


def metrics_of(config_path: Path) -> CollectorRegistry:
    """The collector the daemon serves, over the ledger the CLI wrote."""
    config = load_config(config_path)
    registry = CollectorRegistry()
    registry.register(CloudplowCollector(config, Ledger.in_state_dir(config.state_dir), LiveState()))
    return registry


def status_json(config: Path) -> dict:
    completed = run_cli(config, "status", "--json")
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)["uploaders"]["media"]


def test_an_nfc_nfd_pair_uploads_as_two_files_and_a_second_run_overwrites_neither(tmp_path, quota_server):
    server = quota_server({"alice": 10**8})
    source = tmp_path / "source"
    (source / "show").mkdir(parents=True)
    (source / "show" / NFC).write_bytes(b"spelled NFC")
    (source / "show" / NFD).write_bytes(b"spelled NFD, and longer")
    for name in (NFC, NFD):
        os.utime(source / "show" / name, (1_600_000_000, 1_600_000_000))
    config = write_config(tmp_path, server, users=["alice"], quota_bytes=10**8, source=source)

    first = run_cli(config, "upload")

    assert first.returncode == 0, first.stdout + first.stderr
    assert "Uploaded 2 file(s)" in first.stdout and "0 file(s) left" in first.stdout
    folder = server.root / "media" / "show"
    assert sorted(os.listdir(os.fsencode(folder))) == sorted([NFC.encode(), NFD.encode()])
    assert (folder / NFC).read_bytes() == b"spelled NFC"
    assert (folder / NFD).read_bytes() == b"spelled NFD, and longer"
    assert not (source / "show").exists()  # moved away, and the emptied folder with them

    # A new version of one spelling: the second run replaces that one and only that one.
    (source / "show").mkdir()
    (source / "show" / NFC).write_bytes(b"NFC, second version")
    os.utime(source / "show" / NFC, (1_600_000_100, 1_600_000_100))

    second = run_cli(config, "upload")

    assert second.returncode == 0, second.stdout + second.stderr
    assert "Uploaded 1 file(s)" in second.stdout
    assert (folder / NFC).read_bytes() == b"NFC, second version"
    assert (folder / NFD).read_bytes() == b"spelled NFD, and longer"
    assert len(os.listdir(folder)) == 2


def test_an_undecodable_name_is_left_with_its_reason_and_exit_1(tmp_path, quota_server):
    server = quota_server({"alice": 10**8})
    source = tmp_path / "source"
    original = make_source(source, [1000, 2000])
    undecodable = os.fsencode(source / "show0") + b"/bad\xff\xfename.nfo"
    with open(undecodable, "wb") as handle:
        handle.write(b"a name that is not UTF-8")
    os.utime(undecodable, (1_600_000_000, 1_600_000_000))
    config = write_config(tmp_path, server, users=["alice"], quota_bytes=10**8, source=source)

    completed = run_cli(config, "upload")

    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "Uploaded 2 file(s)" in completed.stdout and "1 file(s) left" in completed.stdout
    assert "left (undecodable name): 1 file(s)" in completed.stdout
    assert "show0/bad\\xff\\xfename.nfo" in completed.stdout
    assert "skipped" not in completed.stdout
    assert os.path.exists(undecodable), "left in the source, untouched"
    assert set(tree_digests(server.root / "media")) == set(original)
    status = status_json(config)
    assert status["files_left"]["undecodable_name"] == 1
    assert sum(status["files_left"].values()) == 1
    registry = metrics_of(config)
    assert (
        registry.get_sample_value("cloudplow_files_left", {"uploader": "media", "reason": "undecodable_name"})
        == 1
    )
    assert registry.get_sample_value("cloudplow_files_left", {"uploader": "media", "reason": "failed"}) == 0


def test_a_wrong_password_among_three_accounts_is_skipped_and_the_others_upload_everything(
    tmp_path, quota_server
):
    users = ["alice", "bob", "carol"]
    server = quota_server(dict.fromkeys(users, 10**8))
    source = tmp_path / "source"
    original = make_source(source, [1_000_000] * 6)
    config = write_config(
        tmp_path,
        server,
        users=users,
        quota_bytes=3_500_000,  # three files per account: bob's three must go to carol
        source=source,
        transfers=2,
        account_env={"bob": {"RCLONE_CONFIG_DAV_PASS": obscure("not bob's password")}},
    )

    completed = run_cli(config, "upload")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Uploaded 6 file(s)" in completed.stdout and "0 file(s) left" in completed.stdout
    assert "account bob is broken" in completed.stdout
    assert "not bob's password" not in completed.stdout + completed.stderr
    assert tree_digests(server.root / "media") == original
    usage = server.usage()
    assert usage["alice"].committed_files == 3 and usage["carol"].committed_files == 3
    assert usage["bob"].committed_files == 0
    state_dir = tmp_path / "state"
    with sqlite3.connect(state_dir / "cloudplow.sqlite3") as connection:
        bob_rows = connection.execute("SELECT COUNT(*) FROM files WHERE account='bob'").fetchone()[0]
        outcomes = dict(connection.execute("SELECT account, outcome FROM stages").fetchall())
    assert bob_rows == 0, "the files in flight with bob are neither lost nor counted"
    assert outcomes["bob"] == "broken"

    quota = run_cli(config, "quota", "--json")
    accounts = {account["name"]: account for account in json.loads(quota.stdout)["media"]}
    assert accounts["bob"]["broken"] is True and "401" in accounts["bob"]["broken_message"]
    assert accounts["alice"]["broken"] is False and accounts["carol"]["broken"] is False
    assert accounts["bob"]["used_bytes"] == 0
    table = run_cli(config, "quota").stdout
    assert "BROKEN: credentials refused" in table
    status = {account["name"]: account for account in status_json(config)["accounts"]}
    assert status["bob"]["broken"] is True and status["carol"]["broken"] is False
    registry = metrics_of(config)
    for user, broken in (("alice", 0), ("bob", 1), ("carol", 0)):
        assert (
            registry.get_sample_value("cloudplow_account_broken", {"uploader": "media", "account": user})
            == broken
        )
    assert (
        registry.get_sample_value("cloudplow_stages_total", {"uploader": "media", "outcome": "broken"}) == 1
    )


def test_a_403_that_is_not_the_limit_breaks_the_account_until_a_later_session_finds_it_working(
    tmp_path, quota_server
):
    users = ["alice", "bob", "carol"]
    server = quota_server(dict.fromkeys(users, 10**8))
    server.refuse("carol", 403)
    source = tmp_path / "source"
    original = make_source(source, [1_000_000] * 9)
    config = write_config(
        tmp_path,
        server,
        users=users,
        quota_bytes=3_500_000,
        source=source,
        transfers=2,
        account_env={"alice": {"RCLONE_CONFIG_DAV_PASS": obscure("wrong")}},
    )

    first = run_cli(config, "upload")

    # alice (401) and carol (403) are broken: bob takes his three files, six are left for them.
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Uploaded 3 file(s)" in first.stdout and "6 file(s) left" in first.stdout
    assert "left (broken account): 6 file(s)" in first.stdout
    assert server.usage()["bob"].committed_files == 3
    registry = metrics_of(config)
    left = {"uploader": "media", "reason": "broken_account"}
    assert registry.get_sample_value("cloudplow_files_left", left) == 6
    assert registry.get_sample_value("cloudplow_files_left", {"uploader": "media", "reason": "quota"}) == 0
    for user, broken in (("alice", 1), ("bob", 0), ("carol", 1)):
        assert (
            registry.get_sample_value("cloudplow_account_broken", {"uploader": "media", "account": user})
            == broken
        )
    accounts = {account["name"]: account for account in status_json(config)["accounts"]}
    assert "Access denied" in accounts["carol"]["broken_message"]

    # carol is let in again; alice's password is still wrong. The next session tries both.
    server.refuse("carol", None)
    second = run_cli(config, "upload")

    # bob and carol are full now, alice still has room but refuses: her files are left for her.
    assert second.returncode == 1, second.stdout + second.stderr
    assert "Uploaded 3 file(s)" in second.stdout and "left (broken account): 3 file(s)" in second.stdout
    assert server.usage()["carol"].committed_files == 3
    registry = metrics_of(config)
    assert (
        registry.get_sample_value("cloudplow_account_broken", {"uploader": "media", "account": "carol"}) == 0
    )
    assert (
        registry.get_sample_value("cloudplow_account_broken", {"uploader": "media", "account": "alice"}) == 1
    )
    assert registry.get_sample_value("cloudplow_files_left", left) == 3
    uploaded = tree_digests(server.root / "media")
    assert len(uploaded) == 6 and all(original[path] == digest for path, digest in uploaded.items())


def service_account_key(folder: Path, name: str, email: str) -> Path:
    path = folder / f"{name}.json"
    path.write_text(
        json.dumps({"type": "service_account", "client_email": email, "private_key": "not a real key"}),
        encoding="utf-8",
    )
    return path


def test_renaming_a_key_file_keeps_its_usage(tmp_path):
    keys = tmp_path / "sa"
    keys.mkdir()
    service_account_key(keys, "first", "uploader-1@project.iam.gserviceaccount.com")
    service_account_key(keys, "second", "uploader-2@project.iam.gserviceaccount.com")
    (tmp_path / "source").mkdir()
    document = {
        "state_dir": "state",
        "uploaders": {
            "media": {
                "source": "source",
                "destination": "gdrive:media",
                "accounts": {"dir": "sa"},
                "quota": {"per_account": "10MB", "reserve": 0},
            }
        },
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    quota = json.loads(run_cli(config, "quota", "--json").stdout)["media"]
    assert [account["used_bytes"] for account in quota] == [0, 0]
    now = time.time()
    with Ledger.in_state_dir(tmp_path / "state") as ledger:
        session_id = ledger.start_session(
            "media", now=now, trigger="manual", queue_files=1, queue_bytes=1, distribution=None
        )
        stage_id = ledger.start_stage(
            session_id,
            number=1,
            account="first",
            transfers=1,
            overshoot=False,
            planned_files=1,
            planned_bytes=4_000_000,
            now=now,
        )
        ledger.record_file(
            session_id=session_id,
            stage_id=stage_id,
            uploader="media",
            account="first",
            path="a.mkv",
            size=4_000_000,
            started_at=now - 10,
            ended_at=now - 5,
            outcome="uploaded",
        )

    # first.json becomes zzz.json (and sorts last); second.json becomes first.json.
    (keys / "first.json").rename(keys / "zzz.json")
    (keys / "second.json").rename(keys / "first.json")
    quota = {
        account["name"]: account for account in json.loads(run_cli(config, "quota", "--json").stdout)["media"]
    }

    assert quota["zzz"]["used_bytes"] == 4_000_000, "the usage follows uploader-1's client_email"
    assert quota["first"]["used_bytes"] == 0, "uploader-2 under the old name starts with its own usage"


class RevokeAfterFirstUpload:
    """A stage listener that revokes the user's credentials at the server once a file is uploaded."""

    def __init__(self, server, user: str):
        self.server, self.user = server, user
        self.files = []

    def on_file(self, event) -> None:
        self.files.append(event)
        if event.kind == "uploaded":
            self.server.refuse(self.user, 401)

    def on_progress(self, stats: dict) -> None:
        pass


def test_credentials_revoked_mid_stage_stop_it_as_broken_and_count_only_what_was_uploaded(
    tmp_path, quota_server
):
    server = quota_server({"alice": 10**8})
    source = tmp_path / "source"
    make_source(source, [200_000] * 5)
    paths = tuple(sorted(path.relative_to(source).as_posix() for path in source.rglob("*.mkv")))
    (tmp_path / "rclone.conf").write_text(
        f"[dav]\ntype = webdav\nurl = {server.url}\nvendor = other\npacer_min_sleep = 1ms\n", encoding="utf-8"
    )
    request = StageRequest(
        binary=RCLONE,
        mode="move",
        source=source,
        destination="dav:media",
        paths=paths,
        transfers=1,
        env={"RCLONE_CONFIG_DAV_USER": "alice", "RCLONE_CONFIG_DAV_PASS": obscure("alice")},
        config_path=tmp_path / "rclone.conf",
        drive=False,
        user_flags=("--bwlimit", "2M"),  # slow enough that the revocation lands between files
        limit_patterns=(re.compile("User rate limit exceeded", re.IGNORECASE),),
        stall_timeout_seconds=60,
        work_dir=tmp_path / "work",
    )
    listener = RevokeAfterFirstUpload(server, "alice")

    result = run_stage(request, listener, threading.Event())

    assert result.outcome == "broken", result.message
    assert "401" in (result.refused_message or "")
    assert len(result.uploaded) >= 1 and not result.failed
    assert not [event for event in listener.files if event.kind == "failed"], "refusals are not failures"
    assert server.usage()["alice"].committed_files == len(result.uploaded)
    still_there = {path for path in paths if (source / path).exists()}
    assert still_there == set(paths) - set(result.uploaded), "every file not uploaded stays in the source"


def test_on_a_case_insensitive_destination_names_it_cannot_keep_apart_are_left(tmp_path, quota_server):
    # rclone's local backend can report itself case-insensitive (as it is on macOS or Windows):
    # the one destination here that merges names. No quota is involved.
    server = quota_server({"alice": 10**8})
    source = tmp_path / "source"
    original = make_source(source, [1000])
    (source / "show").mkdir()
    for name, data in ((NFC, b"NFC"), (NFD, b"NFD"), ("Movie.mkv", b"upper"), ("movie.mkv", b"lower")):
        (source / "show" / name).write_bytes(data)
        os.utime(source / "show" / name, (1_600_000_000, 1_600_000_000))
    destination = tmp_path / "merging"
    config = write_config(
        tmp_path,
        server,
        users=["alice"],
        quota_bytes=10**8,
        source=source,
        extra={"destination": f"ci:{destination}"},
    )
    with open(tmp_path / "rclone.conf", "a", encoding="utf-8") as conf:
        conf.write("\n[ci]\ntype = local\ncase_insensitive = true\n")

    completed = run_cli(config, "upload")

    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "left (name collision): 4 file(s)" in completed.stdout
    for name in ("show/Movie.mkv", "show/movie.mkv", f"show/{NFC}", f"show/{NFD}"):
        assert f"    {name}\n" in completed.stdout
    assert tree_digests(destination) == original, "only the file without a twin went"
    assert len(list((source / "show").iterdir())) == 4, "the four twins stay in the source"
    assert status_json(config)["files_left"]["name_collision"] == 4
