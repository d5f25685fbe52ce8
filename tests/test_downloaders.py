"""Downloader pausing against the real SABnzbd, NZBGet and qBittorrent daemons.

Each daemon's paused state is read through its own API (tests/downloader_daemons.py),
before, during and after real uploads (real rclone, the WebDAV quota server). The
daemons start once for the module; each test begins with SABnzbd and NZBGet running
and the qBittorrent torrent `running` seeding, `user-paused` paused by its user.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cloudplow import events
from cloudplow.config.load import Downloader
from cloudplow.events import Event
from cloudplow.integrations.downloaders import (
    STATE_FILE,
    DownloaderPauser,
    client_for,
    process_identity,
)
from cloudplow.live import LiveState
from tests.conftest import (
    free_port,
    make_source,
    metric,
    rclone_processes_for,
    stop_process,
    tree_digests,
    write_config,
)
from tests.downloader_daemons import API_KEY, PASSWORD, Nzbget, Qbittorrent, Sabnzbd, wait_for

pytestmark = pytest.mark.integration

QUOTA = 50_000_000
SLOW = {"rclone_flags": {"--bwlimit": "1M"}}  # about 4 s for the slow source


@pytest.fixture(scope="module")
def daemons(tmp_path_factory) -> tuple[Sabnzbd, Nzbget, Qbittorrent]:
    """The three real daemons, started once for this module; stopped by pid at the end."""
    root = tmp_path_factory.mktemp("downloader-daemons")
    started = []
    try:
        for kind in (Sabnzbd, Nzbget, Qbittorrent):
            directory = root / kind.name
            directory.mkdir()
            started.append(kind(directory).start())
        yield tuple(started)
    finally:
        for daemon in started:
            daemon.stop()


@pytest.fixture
def downloaders(daemons):
    """Every test starts with SABnzbd and NZBGet running, torrent `running` seeding, `user-paused` paused."""
    sabnzbd, nzbget, qbittorrent = daemons
    sabnzbd.resume()
    nzbget.resume()
    qbittorrent.set_paused("running", False)
    qbittorrent.set_paused("user-paused", True)
    wait_for(
        lambda: qbittorrent.paused() == {"running": False, "user-paused": True},
        timeout=20,
        what="qBittorrent's torrents to settle",
    )
    assert not sabnzbd.is_paused() and not nzbget.is_paused()
    return daemons


def name_of(daemon) -> str:
    return f"{daemon.name}@127.0.0.1:{daemon.port}"


def configure(tmp_path, quota_server, daemons, *, sizes, extra=None, downloaders=None) -> tuple[Path, Path]:
    """Write a config with one uploader `media` and these downloaders; return (config, source)."""
    server = quota_server({"alice": QUOTA})
    source = tmp_path / "source"
    make_source(source, sizes)
    config = write_config(
        tmp_path, server, users=["alice"], quota_bytes=QUOTA, source=source, transfers=2, extra=extra
    )
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    document["downloaders"] = downloaders if downloaders is not None else [d.config() for d in daemons]
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    return config, source


def start_upload(config: Path, log_prefix: Path, *arguments: str) -> tuple[subprocess.Popen, Path]:
    log = log_prefix.with_suffix(".log")
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cloudplow", "--config", str(config), "upload", *arguments],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return process, log


def all_paused_by_us(daemons) -> bool:
    sabnzbd, nzbget, qbittorrent = daemons
    return sabnzbd.is_paused() and nzbget.is_paused() and qbittorrent.paused()["running"]


def state_entries(state_dir: Path) -> dict:
    path = state_dir / STATE_FILE
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return json.loads(text)["paused"] if text.strip() else {}


def test_an_upload_pauses_every_downloader_and_resumes_it_after(tmp_path, quota_server, downloaders):
    sabnzbd, nzbget, qbittorrent = downloaders
    config, source = configure(tmp_path, quota_server, downloaders, sizes=[500_000] * 8, extra=SLOW)
    process, log = start_upload(config, tmp_path / "upload")
    try:
        wait_for(lambda: len(state_entries(tmp_path / "state")) == 3, timeout=60, what="the state file")
        # qBittorrent applies a pause a moment after it answers.
        wait_for(lambda: all_paused_by_us(downloaders), timeout=20, what="every downloader paused")
        # During: the upload still runs, and the state file says what we paused, for whom, mode 0600.
        assert process.poll() is None, log.read_text()
        state_path = tmp_path / "state" / STATE_FILE
        assert stat.S_IMODE(state_path.stat().st_mode) == 0o600
        entries = state_entries(tmp_path / "state")
        assert set(entries) == {name_of(daemon) for daemon in downloaders}
        assert entries[name_of(qbittorrent)]["paused"] == [qbittorrent.hashes["running"]]
        assert all(entry["holders"] for entry in entries.values())
        assert qbittorrent.paused()["user-paused"]
        process.wait(timeout=120)
    finally:
        stop_process(process)
    output = log.read_text()
    assert process.returncode == 0, output
    assert tree_digests(source) == {}, "every file uploaded"
    # After: resumed, except the torrent its user had paused.
    assert not sabnzbd.is_paused() and not nzbget.is_paused()
    wait_for(lambda: not qbittorrent.paused()["running"], timeout=20, what="the torrent resumed")
    assert qbittorrent.paused()["user-paused"]
    assert state_entries(tmp_path / "state") == {}
    assert output.count("paused while uploading") == 3 and output.count("resumed") == 3, output
    state_text = (tmp_path / "state" / STATE_FILE).read_text(encoding="utf-8")
    for secret in (API_KEY, PASSWORD):
        assert secret not in output and secret not in state_text


def test_a_downloader_paused_before_the_upload_stays_paused(tmp_path, quota_server, downloaders):
    sabnzbd, nzbget, qbittorrent = downloaders
    sabnzbd.pause()
    qbittorrent.set_paused("running", True)  # every torrent paused by its user
    wait_for(lambda: qbittorrent.paused()["running"], timeout=20, what="the torrent paused")
    config, _ = configure(tmp_path, quota_server, downloaders, sizes=[500_000] * 8, extra=SLOW)
    process, log = start_upload(config, tmp_path / "upload")
    try:
        # The state file is written once every downloader was asked: wait for it, not the pause.
        wait_for(lambda: state_entries(tmp_path / "state"), timeout=60, what="what we paused written")
        assert process.poll() is None
        assert set(state_entries(tmp_path / "state")) == {name_of(nzbget)}
        assert nzbget.is_paused() and sabnzbd.is_paused()
        process.wait(timeout=120)
    finally:
        stop_process(process)
    output = log.read_text()
    assert process.returncode == 0, output
    assert not nzbget.is_paused(), "the one we paused is resumed"
    assert sabnzbd.is_paused(), "paused by its user before: stays paused"
    assert qbittorrent.paused() == {"running": True, "user-paused": True}
    assert output.count("already paused") == 2, output


def test_sigterm_mid_upload_resumes_the_downloaders(tmp_path, quota_server, downloaders):
    sabnzbd, nzbget, qbittorrent = downloaders
    config, _ = configure(tmp_path, quota_server, downloaders, sizes=[1_000_000] * 10, extra=SLOW)
    process, log = start_upload(config, tmp_path / "upload")
    try:
        wait_for(lambda: all_paused_by_us(downloaders), timeout=60, what="every downloader paused")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        stop_process(process)
    output = log.read_text()
    assert process.returncode == 1 and "interrupted" in output, output
    assert not sabnzbd.is_paused() and not nzbget.is_paused()
    wait_for(lambda: not qbittorrent.paused()["running"], timeout=20, what="the torrent resumed")
    assert qbittorrent.paused()["user-paused"]
    assert state_entries(tmp_path / "state") == {}
    assert rclone_processes_for(tmp_path / "state") == []


def test_a_killed_session_is_made_good_at_the_next_start(tmp_path, quota_server, downloaders):
    sabnzbd, nzbget, qbittorrent = downloaders
    nzbget.pause()  # its user paused it: it must stay paused through the crash and the recovery
    config, source = configure(tmp_path, quota_server, downloaders, sizes=[1_000_000] * 10, extra=SLOW)
    state_dir = tmp_path / "state"
    process, log = start_upload(config, tmp_path / "crashed")
    try:
        wait_for(lambda: state_entries(state_dir), timeout=60, what="what we paused written")
        process.kill()  # no handler runs: only the state file knows what was paused
        process.wait(timeout=20)
    finally:
        stop_process(process)
        for pid in rclone_processes_for(state_dir):
            os.kill(pid, signal.SIGKILL)
    entries = state_entries(state_dir)
    assert set(entries) == {name_of(sabnzbd), name_of(qbittorrent)}
    wait_for(lambda: qbittorrent.paused()["running"], timeout=20, what="the torrent paused")
    assert sabnzbd.is_paused()
    time.sleep(1)
    assert sabnzbd.is_paused() and qbittorrent.paused()["running"], "nothing resumes them yet"

    # The next start, with nothing left to upload (no stage, so no new pause), resumes them.
    for path in list(source.rglob("*")):
        if path.is_file():
            path.unlink()
    process, log = start_upload(config, tmp_path / "next")
    process.wait(timeout=60)
    output = log.read_text()
    assert process.returncode == 0, output
    assert not sabnzbd.is_paused()
    wait_for(lambda: not qbittorrent.paused()["running"], timeout=20, what="the torrent resumed")
    assert qbittorrent.paused()["user-paused"]
    assert nzbget.is_paused(), "paused by its user before the crash: stays paused"
    assert state_entries(state_dir) == {}
    assert output.count("resumed") == 2, output


def pauser_for(daemons, state_dir: Path, **keywords) -> DownloaderPauser:
    clients = [
        client_for(
            Downloader(
                kind=settings["kind"],
                url=settings["url"],
                api_key=settings.get("api_key"),
                username=settings.get("username"),
                password=settings.get("password"),
            )
        )
        for settings in (daemon.config() for daemon in daemons)
    ]
    return DownloaderPauser(clients, state_dir, **keywords)


def event(kind: str, uploader: str) -> Event:
    return Event(kind, uploader, time.time(), {})


def test_the_last_session_to_end_resumes_across_uploaders_and_processes(tmp_path, downloaders):
    sabnzbd, nzbget, qbittorrent = downloaders
    live = LiveState()
    ours = pauser_for(downloaders, tmp_path, live=live)
    assert live.downloaders() == dict.fromkeys((name_of(daemon) for daemon in downloaders), False)

    # Two uploaders of one process: paused at the first stage, resumed after the last session.
    ours.on_event(event(events.STAGE_STARTED, "movies"))
    wait_for(lambda: all_paused_by_us(downloaders), timeout=20, what="every downloader paused")
    assert all(live.downloaders().values())
    ours.on_event(event(events.STAGE_STARTED, "tv"))
    ours.on_event(event(events.SESSION_ENDED, "movies"))
    assert all_paused_by_us(downloaders), "tv still uploads"
    ours.on_event(event(events.SESSION_FAILED, "tv"))
    assert not sabnzbd.is_paused() and not nzbget.is_paused()
    wait_for(lambda: not qbittorrent.paused()["running"], timeout=20, what="the torrent resumed")
    assert not any(live.downloaders().values())

    # Another process (a live one, with its own identity) holds them too: it resumes, not us.
    other_process = subprocess.Popen(["sleep", "120"])
    try:
        theirs = pauser_for(downloaders, tmp_path, identity=process_identity(other_process.pid))
        theirs.on_event(event(events.STAGE_STARTED, "movies"))
        wait_for(lambda: all_paused_by_us(downloaders), timeout=20, what="every downloader paused")
        ours.on_event(event(events.STAGE_STARTED, "tv"))
        ours.on_event(event(events.SESSION_ENDED, "tv"))
        assert all_paused_by_us(downloaders), "the other process still uploads"
        ours.recover()
        assert all_paused_by_us(downloaders), "a live holder is not a crash"
        # It dies without resuming: our next start sees a dead holder and resumes.
        other_process.kill()
        other_process.wait(timeout=10)
        ours.recover()
        assert not sabnzbd.is_paused() and not nzbget.is_paused()
        wait_for(lambda: not qbittorrent.paused()["running"], timeout=20, what="the torrent resumed")
        assert qbittorrent.paused()["user-paused"]
        assert state_entries(tmp_path) == {}
    finally:
        stop_process(other_process)


def test_the_daemon_shows_the_pause_and_a_peer_that_is_down_only_warns(
    tmp_path, quota_server, downloaders, start_daemon
):
    sabnzbd, _, _ = downloaders
    down = f"http://127.0.0.1:{free_port()}"
    port = free_port()
    config, source = configure(
        tmp_path,
        quota_server,
        downloaders,
        sizes=[500_000] * 8,
        extra={**SLOW, "check": {"interval": "1h", "min_queue": 0}},
        downloaders=[
            sabnzbd.config(),
            {"kind": "nzbget", "url": down, "username": "x", "password": PASSWORD},
        ],
    )
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    document["server"] = {"host": "127.0.0.1", "port": port}
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    daemon = start_daemon(config, port)
    down_name = "nzbget@" + down.removeprefix("http://")

    daemon.wait_until(
        lambda: metric(daemon.metrics(), "cloudplow_downloader_paused", downloader=name_of(sabnzbd)) == 1,
        timeout=60,
        what="the paused gauge at 1",
    )
    assert sabnzbd.is_paused()
    assert metric(daemon.metrics(), "cloudplow_downloader_paused", downloader=down_name) == 0
    shown = {entry["name"]: entry["paused"] for entry in daemon.status()["downloaders"]}
    assert shown == {name_of(sabnzbd): True, down_name: False}
    daemon.wait_until(lambda: tree_digests(source) == {}, timeout=120, what="every file uploaded")
    daemon.wait_until(
        lambda: metric(daemon.metrics(), "cloudplow_downloader_paused", downloader=name_of(sabnzbd)) == 0,
        timeout=60,
        what="the paused gauge back at 0",
    )
    assert not sabnzbd.is_paused()
    assert daemon.stop() == 0
    log = daemon.log()
    assert log.count(f"downloader {down_name}: cannot reach it") == 1, log
    assert "Traceback" not in log and PASSWORD not in log
