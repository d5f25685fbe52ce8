"""The throttle: active streams on the media servers -> the upload rate rclone may use.

    poller thread: every server's `poll()` when due (media_servers.py)
      └─ streams per server -> summed -> each server's table -> the strictest rate
    stage loop (rclone/stage.py): asks `rate()` at each poll and sets it through
      rclone's RC (core/bwlimit); a new stage starts with --bwlimit at that rate

Several servers add their counts; every server's table is applied to the sum
and the lowest limited rate wins (0 = unlimited: fewer streams than any key).
A server that is down or refuses the token logs one warning per outage and
keeps its last count for two more polls; from the third failed poll on it
counts nothing, so a dead server never holds uploads down. Nothing here can
stop an upload: the stage loop treats a failing rate provider as "no change".

An uploader with `throttle: false`, or whose rclone_flags set --bwlimit
itself, is never throttled (`applies_to`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cloudplow.config import Uploader
from cloudplow.config.load import MediaServer
from cloudplow.integrations.media_servers import (
    MediaServerClient,
    MediaServerError,
    client_for,
    count_streams,
)
from cloudplow.units import format_size

logger = logging.getLogger(__name__)

FAILED_POLLS_BEFORE_LIFT = 3


def rate_for(streams: int, table: Sequence[tuple[int, int]]) -> int:
    """
    Given active streams and a table of (streams, bytes per second) in
    ascending streams, return the rate of the highest key not above the
    count; 0 (unlimited) below every key.
    """
    rate = 0
    for threshold, bytes_per_second in table:
        if streams >= threshold:
            rate = bytes_per_second
    return rate


def user_sets_bwlimit(flags: Sequence[str]) -> bool:
    return any(flag == "--bwlimit" or flag.startswith("--bwlimit=") for flag in flags)


def applies_to(uploader: Uploader) -> bool:
    """Whether media-server throttling slows this uploader (its own --bwlimit wins over it)."""
    return uploader.throttle and not user_sets_bwlimit(uploader.rclone_flags)


@dataclass
class _ServerState:
    server: MediaServer
    client: MediaServerClient
    next_poll_at: float = 0.0
    streams: int = 0  # counted at the last answer
    failed_polls: int = 0  # in a row
    error: str | None = None
    answered: bool = False  # at least once

    @property
    def counted(self) -> int:
        """The streams this server adds now: none once it failed often enough."""
        return 0 if self.failed_polls >= FAILED_POLLS_BEFORE_LIFT else self.streams

    @property
    def state(self) -> str:
        if self.failed_polls >= FAILED_POLLS_BEFORE_LIFT:
            return "lifted"  # failing, and no longer counted
        if self.failed_polls:
            return "failing"
        return "ok" if self.answered else "unknown"


class Throttle:
    """Polls the media servers on its own thread and answers the rate uploads may use now."""

    def __init__(
        self,
        servers: Sequence[tuple[MediaServer, MediaServerClient]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._states = [_ServerState(server, client) for server, client in servers]
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_rate: int | None = None

    @classmethod
    def from_config(cls, servers: Sequence[MediaServer], **kwargs: object) -> Throttle:
        return cls([(server, client_for(server)) for server in servers], **kwargs)  # type: ignore[arg-type]

    # --- polling -------------------------------------------------------------------------------

    def poll_due(self) -> None:
        """Poll every server whose `poll` interval has passed; never raises."""
        for state in self._states:
            now = self._clock()
            if now < state.next_poll_at:
                continue
            state.next_poll_at = now + state.server.poll_seconds
            try:
                streams = state.client.poll()
            except MediaServerError as error:
                self._failed(state, str(error))
                continue
            except Exception as error:  # a peer's bug is a peer's failure: never the upload's
                logger.exception("%s: polling failed", state.server.name)
                self._failed(state, f"failed ({type(error).__name__})")
                continue
            counted = count_streams(streams, ignore_local=state.server.ignore_local)
            with self._lock:
                if state.failed_polls:
                    logger.info("%s answers again: %d active stream(s)", state.server.name, counted)
                state.streams, state.failed_polls, state.error, state.answered = counted, 0, None, True
        self._log_rate_change()

    def _failed(self, state: _ServerState, reason: str) -> None:
        with self._lock:
            state.failed_polls += 1
            state.error = reason
            failed = state.failed_polls
        if failed == 1:  # one warning per outage
            logger.warning(
                "%s: %s; its streams count as before for %d more poll(s), then not at all",
                state.server.name,
                reason,
                FAILED_POLLS_BEFORE_LIFT - 1,
            )
        elif failed == FAILED_POLLS_BEFORE_LIFT:
            logger.info("%s: still %s; its streams no longer slow uploads", state.server.name, reason)

    def _log_rate_change(self) -> None:
        rate, streams = self.rate(), self.streams()
        if rate != self._last_rate:
            if self._last_rate is not None or rate:
                shown = f"{format_size(rate)}/s" if rate else "unlimited"
                logger.info("media servers: %d active stream(s); upload rate %s", streams, shown)
            self._last_rate = rate

    def start(self) -> Throttle:
        """Poll once now (so the first stage starts at the right rate), then on a thread."""
        if not self._states or self._thread is not None:
            return self
        self.poll_due()
        self._thread = threading.Thread(target=self._run, name="throttle", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_due()
            next_at = min(state.next_poll_at for state in self._states)
            self._stop.wait(min(1.0, max(0.05, next_at - self._clock())))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        for state in self._states:
            close = getattr(state.client, "close", None)
            if close is not None:
                close()

    # --- what the rest reads -------------------------------------------------------------------

    def streams(self) -> int:
        """Active streams now, summed over the servers that still count."""
        with self._lock:
            return sum(state.counted for state in self._states)

    def rate(self) -> int:
        """Bytes per second uploads may use now; 0: unlimited."""
        total = self.streams()
        limited = [rate_for(total, state.server.throttle) for state in self._states]
        return min((rate for rate in limited if rate > 0), default=0)

    def rate_limit_for(self, uploader: Uploader) -> Callable[[], int] | None:
        """The rate provider a stage of this uploader follows, or None if it is never throttled."""
        return self.rate if self._states and applies_to(uploader) else None

    def snapshot(self) -> dict:
        """JSON-able state for /status and the metrics; server names carry no credentials."""
        with self._lock:
            servers = [
                {
                    "name": state.server.name,
                    "kind": state.server.kind,
                    "state": state.state,
                    "streams": state.counted,
                    "error": state.error,
                }
                for state in self._states
            ]
        return {
            "rate_bytes": self.rate(),
            "streams": sum(server["streams"] for server in servers),
            "servers": servers,
        }
