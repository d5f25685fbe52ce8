"""Notifications through the real apprise, `json://` to a local HTTP sink: bodies, filters, secrets,
coalescing with a test clock, failed deliveries, and the `upload` command sending them."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from cloudplow import events
from cloudplow.config import load_config
from cloudplow.events import Event
from cloudplow.integrations.notifications import (
    ACCOUNT_BROKEN,
    FAILED,
    KINDS,
    POOL_EXHAUSTED,
    SESSION_FINISHED,
    Coalescer,
    Message,
    Notifier,
    config_secrets,
    message_for,
)
from tests.conftest import free_port, make_source, run_cli, write_config

NOW = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC


class Sink:
    """An HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it (or answers 500)."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.status = 200
        self.arrived = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                document = json.loads(self.rfile.read(length))
                with sink.arrived:
                    if sink.status == 200:
                        sink.bodies.append(document)
                    sink.arrived.notify_all()
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 20) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.bodies) < count and time.monotonic() < deadline:
                self.arrived.wait(0.1)
        assert len(self.bodies) >= count, (
            f"{len(self.bodies)} of {count} notifications arrived: {self.bodies}"
        )
        return list(self.bodies)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def sink():
    started = Sink()
    yield started
    started.stop()


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


def ended(
    exit_code=0, *, uploaded_files=3, uploaded_bytes=3_000_000, left_files=0, left_bytes=0, **extra
) -> Event:
    data = {
        "session_id": 7,
        "exit_code": exit_code,
        "state": "finished",
        "message": "all 3 queued file(s) uploaded",
        "uploaded_files": uploaded_files,
        "uploaded_bytes": uploaded_bytes,
        "left_files": left_files,
        "left_bytes": left_bytes,
        "stages": 2,
        "accounts_used": ["alice", "bob"],
        "duration_seconds": 754.0,
        "frees_at": None,
        **extra,
    }
    return Event(events.SESSION_ENDED, "media", NOW, data)


def test_messages_say_what_people_want_to_know():
    finished = message_for(ended())
    assert finished == Message(
        SESSION_FINISHED,
        "cloudplow: media: session finished",
        "Session 7 of media uploaded 3 files, 3.00 MB through 2 account(s) (alice, bob) in 12m34s.",
    )
    exhausted = message_for(ended(3, left_files=40, left_bytes=300 * 10**9, frees_at=NOW + 5 * 3600 + 180))
    assert exhausted is not None and exhausted.kind == POOL_EXHAUSTED
    assert "40 files, 300.00 GB are left" in exhausted.body
    assert "The first account frees up at 2026-05-29 01:29 UTC (in 5h3m)." in exhausted.body
    never = message_for(ended(3, left_files=1, left_bytes=10))
    assert never is not None and "No account frees up on its own" in never.body
    failed = message_for(ended(1, message="2 file(s) failed; they stay in the source", left_files=2))
    assert failed is not None and failed.kind == FAILED
    assert "ended with exit code 1: 2 file(s) failed; they stay in the source." in failed.body
    interrupted = message_for(ended(1, state="interrupted", left_files=4, left_bytes=4000))
    assert interrupted is not None and interrupted.kind == SESSION_FINISHED
    assert (
        "was interrupted after uploading 3 files" in interrupted.body
        and "4 files, 4.00 kB stay" in interrupted.body
    )
    broken = message_for(
        Event(events.ACCOUNT_BROKEN, "media", NOW, {"account": "bob", "message": "invalid_grant"})
    )
    assert broken == Message(
        ACCOUNT_BROKEN,
        "cloudplow: media: account bob is broken",
        "Account bob of media is broken and left out of the pool: invalid_grant",
    )
    start_failed = message_for(Event(events.SESSION_FAILED, "media", NOW, {"message": "cannot scan /mnt"}))
    assert start_failed == Message(FAILED, "cloudplow: media: session failed", "media: cannot scan /mnt")
    # Quiet: a session with nothing queued, and the events nobody is told of.
    assert message_for(ended(uploaded_files=0, uploaded_bytes=0)) is None
    for kind in (events.STAGE_STARTED, events.FILE_DONE, events.PROGRESS, events.ACCOUNT_BLOCKED):
        assert message_for(Event(kind, "media", NOW, {})) is None


def test_the_real_apprise_delivers_json_bodies_to_the_sink(sink):
    notifier = Notifier([sink.url], KINDS, clock=Clock())
    try:
        notifier.on_event(ended())
        notifier.on_event(
            Event(events.ACCOUNT_BROKEN, "media", NOW, {"account": "bob", "message": "revoked"})
        )
        bodies = sink.wait_for(2)
    finally:
        notifier.close()
    by_title = {body["title"]: body for body in bodies}
    finished = by_title["cloudplow: media: session finished"]
    assert finished["message"] == (
        "Session 7 of media uploaded 3 files, 3.00 MB through 2 account(s) (alice, bob) in 12m34s."
    )
    assert finished["type"] == "info" and finished["version"] == "1.0"
    assert by_title["cloudplow: media: account bob is broken"]["message"].endswith(": revoked")
    assert notifier.counts() == (2, 0)


def test_only_the_configured_events_are_sent(sink):
    notifier = Notifier([sink.url], [FAILED], clock=Clock())
    try:
        notifier.on_event(ended())  # session_finished: not asked for
        notifier.on_event(Event(events.SESSION_FAILED, "media", NOW, {"message": "boom"}))
        bodies = sink.wait_for(1)
        time.sleep(0.5)
    finally:
        notifier.close()
    assert [body["title"] for body in sink.bodies] == ["cloudplow: media: session failed"]
    assert bodies[0]["message"] == "media: boom"


def test_no_secret_reaches_a_message(tmp_path, sink):
    document = {
        "state_dir": "state",
        "uploaders": {
            "media": {
                "source": "source",
                "destination": "remote:media",
                "accounts": {
                    "list": [{"name": "alice", "env": {"RCLONE_CONFIG_DAV_PASS": "hunter2-password"}}]
                },
            }
        },
        "media_servers": [{"kind": "plex", "url": "http://127.0.0.1:32400", "token": "plex-token-abcdef"}],
        "notifications": {"urls": [sink.url]},
    }
    (tmp_path / "source").mkdir()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    config = load_config(tmp_path / "config.yaml")
    secrets = config_secrets(config)
    assert {"hunter2-password", "plex-token-abcdef", sink.url} <= set(secrets)
    notifier = Notifier([sink.url], KINDS, secrets=secrets, clock=Clock())
    try:
        leaky = f"rclone said: password hunter2-password refused by {sink.url} (token plex-token-abcdef)"
        notifier.on_event(Event(events.SESSION_FAILED, "media", NOW, {"message": leaky}))
        (body,) = sink.wait_for(1)
    finally:
        notifier.close()
    text = json.dumps(body)
    for secret in secrets:
        assert secret not in text
    assert body["message"] == "media: rclone said: password *** refused by *** (token ***)"


def test_bursts_are_coalesced_to_one_message_per_kind_per_minute():
    coalescer = Coalescer(60)
    first = Message(SESSION_FINISHED, "t1", "b1")
    assert coalescer.offer(first, 0) == first
    assert coalescer.offer(Message(SESSION_FINISHED, "cloudplow: t2", "b2"), 10) is None
    assert coalescer.offer(Message(SESSION_FINISHED, "cloudplow: t3", "b3"), 20) is None
    other = Message(FAILED, "f", "x")
    assert coalescer.offer(other, 30) == other  # another kind has its own minute
    assert coalescer.due(59) == []
    (combined,) = coalescer.due(60)
    assert combined.kind == SESSION_FINISHED
    assert combined.title == "cloudplow: 2 × session finished"
    assert combined.body == "t2\nb2\n\nt3\nb3"
    assert coalescer.due(200) == []
    # The combined message started a new minute: the next one waits for it.
    assert coalescer.offer(Message(SESSION_FINISHED, "t4", "b4"), 100) is None
    assert coalescer.due(119) == [] and len(coalescer.due(120)) == 1
    assert coalescer.offer(Message(SESSION_FINISHED, "t5", "b5"), 181) is not None


def test_the_notifier_holds_a_burst_until_its_minute_is_over(sink):
    clock = Clock()
    notifier = Notifier([sink.url], KINDS, clock=clock)
    try:
        for session_id in (1, 2, 3):
            notifier.on_event(ended(session_id=session_id))
        (first,) = sink.wait_for(1)
        time.sleep(0.6)  # the sender looked at the held ones several times: not due yet
        assert len(sink.bodies) == 1
        clock.now += 61
        bodies = sink.wait_for(2)
    finally:
        notifier.close()
    assert "Session 1 of media" in first["message"]
    assert bodies[1]["title"] == "cloudplow: 2 × session finished"
    assert "Session 2 of media" in bodies[1]["message"] and "Session 3 of media" in bodies[1]["message"]
    assert len(sink.bodies) == 2


def test_what_is_held_is_sent_when_cloudplow_stops(sink):
    notifier = Notifier([sink.url], KINDS, clock=Clock())
    notifier.on_event(ended(session_id=1))
    notifier.on_event(ended(session_id=2))
    notifier.close()
    assert [body["title"] for body in sink.wait_for(2)] == [
        "cloudplow: media: session finished",
        "cloudplow: media: session finished",
    ]


def test_a_failed_delivery_warns_counts_and_never_holds_the_session_up(sink, caplog):
    # A port that accepts connections and never answers: apprise waits for its timeout.
    import socket

    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(8)
    silent_url = f"json://127.0.0.1:{black_hole.getsockname()[1]}/hook?rto=1&cto=1"
    sink.status = 500
    caplog.set_level(logging.WARNING, logger="cloudplow.integrations.notifications")
    notifier = Notifier([silent_url, sink.url], KINDS, clock=Clock())
    try:
        started = time.monotonic()
        notifier.on_event(ended())
        notifier.on_event(Event(events.SESSION_FAILED, "media", NOW, {"message": "x"}))
        assert time.monotonic() - started < 0.5  # the session thread only queued them
        deadline = time.monotonic() + 30
        while notifier.counts()[1] < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        notifier.close()
        black_hole.close()
    assert notifier.counts() == (0, 4)
    warnings = [record.getMessage() for record in caplog.records if record.name.endswith("notifications")]
    assert "notification 'session_finished' to notifications.urls[0] (json://): not delivered" in warnings
    assert "notification 'failed' to notifications.urls[1] (json://): not delivered" in warnings
    assert all("127.0.0.1" not in warning for warning in warnings)  # the URL may hold a token


def test_the_upload_command_sends_the_session_finished_message(tmp_path, quota_server, sink):
    server = quota_server({"alice": 10**7})
    source = tmp_path / "source"
    make_source(source, [100_000, 200_000, 300_000])
    config = write_config(tmp_path, server, users=["alice"], quota_bytes=10**7, source=source)
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    document["notifications"] = {"urls": [sink.url], "events": ["session_finished", "failed"]}
    document["server"] = {"host": "127.0.0.1", "port": free_port()}
    config.write_text(yaml.safe_dump(document), encoding="utf-8")

    completed = run_cli(config, "upload")

    assert completed.returncode == 0, completed.stderr
    (body,) = sink.wait_for(1)
    assert body["title"] == "cloudplow: media: session finished"
    assert body["message"].startswith(
        "Session 1 of media uploaded 3 files, 600.00 kB through 1 account(s) (alice)"
    )
    secrets = config_secrets(load_config(config))
    assert secrets and not [secret for secret in secrets if secret in json.dumps(body)]
