"""The media-server throttle: the table, several servers, outages, who is throttled, and the real rclone
following the rate mid-stage while streams start and end on a local Plex."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import pytest

from cloudplow.config.load import MediaServer
from cloudplow.integrations.media_servers import MediaServerError, PlexClient, Stream, client_for
from cloudplow.integrations.throttle import FAILED_POLLS_BEFORE_LIFT, Throttle, applies_to, rate_for
from cloudplow.rclone.stage import FileEvent, StageRequest, _RateFollower, run_stage
from cloudplow.session import run_session
from tests.conftest import RCLONE, make_source, obscure
from tests.fake_media import FakeSession
from tests.test_session import setup, uploading

REMOTE, HOME = "203.0.113.7", "192.168.1.20"
TABLE = ((1, 50_000_000), (3, 20_000_000), (5, 8_000_000))


def server_for(fake, *, table=TABLE, poll=0.05, ignore_local=True) -> MediaServer:
    return MediaServer(
        kind=fake.kind,
        url=fake.url,
        token=fake.token,
        poll_seconds=poll,
        ignore_local=ignore_local,
        throttle=table,
    )


def remote(count: int) -> list[FakeSession]:
    return [FakeSession(REMOTE)] * count


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("streams", "rate"),
    [
        (0, 0),
        (1, 50_000_000),
        (2, 50_000_000),
        (3, 20_000_000),
        (4, 20_000_000),
        (5, 8_000_000),
        (9, 8_000_000),
    ],
)
def test_the_highest_key_not_above_the_count_wins_below_every_key_unlimited(streams, rate):
    assert rate_for(streams, TABLE) == rate


def test_several_servers_add_their_counts_and_the_strictest_table_wins(media_server):
    plex, jellyfin, emby = media_server("plex"), media_server("jellyfin"), media_server("emby")
    clock = Clock()
    throttle = Throttle(
        [
            (server, client_for(server))
            for server in (
                server_for(plex),
                server_for(jellyfin, table=((2, 30_000_000),)),
                server_for(emby, table=((4, 1_000_000),)),
            )
        ],
        clock=clock,
    )
    plex.set_sessions([*remote(1), FakeSession(HOME)])
    jellyfin.set_sessions([*remote(1), FakeSession(REMOTE, paused=True)])
    emby.set_sessions([FakeSession(HOME)])
    throttle.poll_due()
    assert throttle.streams() == 2
    assert throttle.rate() == 30_000_000  # plex's table says 50 MB/s for 2, jellyfin's 30: the lower
    emby.set_sessions(remote(2))
    clock.now += 1
    throttle.poll_due()
    assert throttle.streams() == 4
    assert throttle.rate() == 1_000_000
    snapshot = throttle.snapshot()
    assert snapshot["rate_bytes"] == 1_000_000 and snapshot["streams"] == 4
    assert [(server["kind"], server["streams"], server["state"]) for server in snapshot["servers"]] == [
        ("plex", 1, "ok"),
        ("jellyfin", 1, "ok"),
        ("emby", 2, "ok"),
    ]
    assert all(plex.token not in str(server) for server in snapshot["servers"])


def test_each_server_is_polled_at_its_own_interval(media_server):
    plex = media_server("plex")
    clock = Clock()
    throttle = Throttle([(server_for(plex, poll=30), client_for(server_for(plex, poll=30)))], clock=clock)
    for now in (0, 10, 29.9, 30, 45, 60):
        clock.now = now
        throttle.poll_due()
    assert len(plex.requests) == 3  # at 0, 30 and 60


def test_an_outage_warns_once_and_lifts_the_throttle_after_three_failed_polls(media_server, caplog):
    plex = media_server("plex")
    clock = Clock()
    server = server_for(plex)
    throttle = Throttle([(server, PlexClient(server))], clock=clock)
    plex.set_sessions(remote(3))
    throttle.poll_due()
    assert throttle.rate() == 20_000_000
    plex.token = "rotated"  # the server now refuses the configured token
    caplog.set_level(logging.INFO, logger="cloudplow.integrations.throttle")
    rates = []
    for _ in range(FAILED_POLLS_BEFORE_LIFT + 2):
        clock.now += 1
        throttle.poll_due()
        rates.append(throttle.rate())
    # The last count holds for two more polls; from the third failed poll on, nothing is counted.
    assert rates == [20_000_000, 20_000_000, 0, 0, 0]
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1, [record.getMessage() for record in warnings]
    assert "refused the token (HTTP 401)" in warnings[0].getMessage()
    assert server.token not in caplog.text and "rotated" not in caplog.text
    assert throttle.snapshot()["servers"][0]["state"] == "lifted"

    plex.token = server.token  # back
    clock.now += 1
    throttle.poll_due()
    assert throttle.rate() == 20_000_000
    assert "answers again: 3 active stream(s)" in caplog.text
    plex.token = "rotated again"  # a second outage warns again
    clock.now += 1
    throttle.poll_due()
    assert len([record for record in caplog.records if record.levelno == logging.WARNING]) == 2


def test_a_server_that_raises_something_unexpected_is_only_a_failed_poll(media_server):
    class Broken:
        name = "broken"

        def poll(self) -> list[Stream]:
            raise RuntimeError("bug in a peer")

    plex = media_server("plex")
    clock = Clock()
    throttle = Throttle([(server_for(plex), Broken())], clock=clock)  # type: ignore[list-item]
    for _ in range(FAILED_POLLS_BEFORE_LIFT):
        clock.now += 1
        throttle.poll_due()
    assert throttle.rate() == 0
    assert throttle.snapshot()["servers"][0]["error"] == "failed (RuntimeError)"


def test_a_down_server_counts_nothing_from_the_start(media_server):
    plex = media_server("plex")
    plex.stop()
    clock = Clock()
    throttle = Throttle([(server_for(plex), client_for(server_for(plex)))], clock=clock)
    throttle.poll_due()
    assert throttle.rate() == 0
    with pytest.raises(MediaServerError):
        client_for(server_for(plex)).poll()


def test_uploaders_with_throttle_false_or_their_own_bwlimit_are_never_throttled(tmp_path, media_server):
    config, uploader, ledger, runtimes = setup(tmp_path, [1000])
    plex = media_server("plex")
    throttle = Throttle([(server_for(plex), client_for(server_for(plex)))])
    assert applies_to(uploader) and throttle.rate_limit_for(uploader) == throttle.rate
    off = dataclasses.replace(uploader, throttle=False)
    assert not applies_to(off) and throttle.rate_limit_for(off) is None
    assert not applies_to(dataclasses.replace(uploader, rclone_flags=("--checkers", "4", "--bwlimit", "1M")))
    assert Throttle([]).rate_limit_for(uploader) is None  # no servers: nothing to follow

    # And the session hands the rate to its stages only for an uploader that is throttled.
    for candidate, expected in ((uploader, throttle.rate), (off, None)):
        runner, calls = uploading()
        run_session(
            config,
            candidate,
            ledger,
            runner=runner,
            binary="rclone",
            accounts=runtimes,
            drive=False,
            rate_limit=throttle.rate,
        )
        assert calls and all(call.rate_limit == expected for call in calls)


# --- the real rclone follows the rate --------------------------------------------------------

MEASURE_TABLE = ((1, 400_000), (3, 100_000))  # bytes per second
FILE_BYTES = 12_000_000


class Samples:
    """Stage listener: (time, bytes) at every core/stats poll, and the stream schedule driven by time."""

    def __init__(self, plex):
        self.plex = plex
        self.points: list[tuple[float, int]] = []
        self.started_at: float | None = None
        self.switched: dict[str, float] = {}

    def on_file(self, event: FileEvent) -> None:
        pass

    def on_progress(self, stats: dict) -> None:
        now = time.monotonic()
        sent = int(stats.get("bytes") or 0)
        self.points.append((now, sent))
        if self.started_at is None and sent > 0:
            self.started_at = now
        if self.started_at is None:
            return
        elapsed = now - self.started_at
        if elapsed >= 4 and "three" not in self.switched:
            self.plex.set_sessions([*remote(3), FakeSession(HOME)])  # two more people start watching
            self.switched["three"] = now
        elif elapsed >= 9 and "none" not in self.switched:
            self.plex.set_sessions([FakeSession(HOME)])  # they stop; only the living room is left
            self.switched["none"] = now

    def rate_between(self, start: float, end: float) -> float:
        inside = [(at, sent) for at, sent in self.points if start <= at <= end]
        assert len(inside) >= 3, f"too few samples between {start} and {end}: {self.points}"
        (first_at, first), (last_at, last) = inside[0], inside[-1]
        return (last - first) / (last_at - first_at)


@pytest.mark.integration
def test_the_real_rclone_follows_the_table_as_streams_start_and_end_mid_stage(
    tmp_path, quota_server, media_server, caplog
):
    caplog.set_level(logging.INFO, logger="cloudplow.rclone.stage")
    dav = quota_server({"alice": 10 * FILE_BYTES})
    (tmp_path / "rclone.conf").write_text(
        f"[dav]\ntype = webdav\nurl = {dav.url}\nvendor = other\npacer_min_sleep = 1ms\n", encoding="utf-8"
    )
    source = tmp_path / "source"
    (path,) = make_source(source, [FILE_BYTES])
    plex = media_server("plex")
    plex.set_sessions([*remote(1), FakeSession(HOME)])  # one remote stream; the local one never counts
    server = server_for(plex, table=MEASURE_TABLE, poll=0.2)
    throttle = Throttle([(server, PlexClient(server))]).start()
    samples = Samples(plex)
    request = StageRequest(
        binary=RCLONE,
        mode="copy",
        source=source,
        destination="dav:media",
        paths=(path,),
        transfers=1,
        env={"RCLONE_CONFIG_DAV_USER": "alice", "RCLONE_CONFIG_DAV_PASS": obscure("alice")},
        config_path=tmp_path / "rclone.conf",
        drive=False,
        user_flags=(),
        limit_patterns=(),
        stall_timeout_seconds=60,
        work_dir=tmp_path / "work",
        poll_interval_seconds=0.25,
        rate_limit=throttle.rate,
    )
    try:
        began = time.monotonic()
        result = run_stage(request, samples, threading.Event())
        ended = time.monotonic()
    finally:
        throttle.stop()
    assert result.outcome == "completed", result.message
    assert result.uploaded == {path: FILE_BYTES}
    assert dav.usage()["alice"].committed_bytes == FILE_BYTES
    assert {"three", "none"} <= samples.switched.keys(), samples.points

    assert samples.started_at is not None
    # Skip 1.5 s after each change: the throttle polls every 0.2 s, the stage every 0.25 s.
    one_stream = samples.rate_between(samples.started_at + 0.5, samples.switched["three"])
    three_streams = samples.rate_between(samples.switched["three"] + 1.5, samples.switched["none"])
    # The rest, from the moment the streams ended to rclone's exit (the throttle's and the stage's
    # polling delay and rclone's exit included, so the true rate is higher still).
    sent_at_end_of_streams = max(sent for at, sent in samples.points if at <= samples.switched["none"])
    unlimited = (FILE_BYTES - sent_at_end_of_streams) / (ended - samples.switched["none"])
    print(
        f"\nmeasured: 1 stream {one_stream / 1e3:.0f} kB/s (table 400), 3 streams {three_streams / 1e3:.0f}"
        f" kB/s (table 100), none: {unlimited / 1e3:.0f} kB/s or more (unlimited) for the last"
        f" {(FILE_BYTES - sent_at_end_of_streams) / 1e6:.1f} MB;"
        f" {ended - began:.1f} s in all"
    )
    assert 0.6 * 400_000 <= one_stream <= 1.3 * 400_000
    assert 0.5 * 100_000 <= three_streams <= 1.5 * 100_000
    assert unlimited >= 3 * 400_000  # it recovers: well above the highest limit of the table
    # rclone started at 400 kB/s (--bwlimit), so the RC changed the rate exactly twice.
    changes = [record.getMessage() for record in caplog.records if "upload rate now" in record.getMessage()]
    assert changes == ["upload rate now 100.00 kB/s", "upload rate now unlimited"]


def test_a_stage_starts_at_the_current_rate_and_an_own_bwlimit_wins(tmp_path):
    def request(**overrides) -> StageRequest:
        values = dict(
            binary=RCLONE,
            mode="copy",
            source=tmp_path,
            destination="dav:media",
            paths=("a",),
            transfers=1,
            env={},
            config_path=None,
            drive=False,
            user_flags=(),
            limit_patterns=(),
            stall_timeout_seconds=60,
            work_dir=tmp_path / "work",
        )
        values.update(overrides)
        return StageRequest(**values)

    assert _RateFollower(request(rate_limit=lambda: 123_456)).start_flags() == ("--bwlimit", "123456B")
    assert _RateFollower(request(rate_limit=lambda: 0)).start_flags() == ()
    assert _RateFollower(request()).start_flags() == ()
    own = _RateFollower(request(rate_limit=lambda: 5, user_flags=("--bwlimit", "1M")))
    assert own.start_flags() == () and own.wanted() is None

    def broken() -> int:
        raise RuntimeError("peer bug")

    assert _RateFollower(request(rate_limit=broken)).wanted() is None  # no change, no crash
