"""`check.watch`: start a check soon after new files arrive, not only on the interval.

The daemon's interval is the floor; with watch on, an inotify watch (through
watchdog) on the uploader's source notes every file created, written or moved
in. Files younger than `filters.min_age` are not eligible anyway, so the
check waits for that long a quiet spell after the last event, and runs at
most once a minute however busy the folder is. Deletions are ignored: a move
session's own deletions must not schedule the next check.

    watchdog observer thread -> note() ; ticker thread -> ready? -> fire(name)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

logger = logging.getLogger(__name__)

MIN_GAP_SECONDS = 60.0


class Arrivals:
    """
    When to check, from the times files arrived: pure, the clock passed in.
    `due(now)` is true once the last arrival is `quiet_seconds` old and the
    last check this fired is `min_gap_seconds` old.
    """

    def __init__(self, quiet_seconds: float, min_gap_seconds: float = MIN_GAP_SECONDS):
        self.quiet_seconds = quiet_seconds
        self.min_gap_seconds = min_gap_seconds
        self.last_arrival_at: float | None = None
        self.last_fired_at: float | None = None
        self._lock = threading.Lock()

    def note(self, now: float) -> None:
        with self._lock:
            self.last_arrival_at = now

    def due(self, now: float) -> bool:
        with self._lock:
            if self.last_arrival_at is None or now - self.last_arrival_at < self.quiet_seconds:
                return False
            return self.last_fired_at is None or now - self.last_fired_at >= self.min_gap_seconds

    def fired(self, now: float) -> None:
        """The check ran: arrivals until now are dealt with."""
        with self._lock:
            self.last_fired_at = now
            if self.last_arrival_at is not None and self.last_arrival_at <= now:
                self.last_arrival_at = None


class _Handler(FileSystemEventHandler):
    def __init__(self, arrivals: Arrivals, clock: Callable[[], float]):
        self.arrivals = arrivals
        self.clock = clock

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "modified", "moved", "closed") and not event.is_directory:
            self.arrivals.note(self.clock())


class SourceWatcher:
    """
    Watches one uploader's source and calls `fire()` when a check is due.
    `fire` returns False when it could not start a check now (one is running):
    the arrivals then stay pending and it is asked again a second later.
    """

    def __init__(
        self,
        name: str,
        source: Path,
        *,
        quiet_seconds: float,
        fire: Callable[[], bool],
        clock: Callable[[], float] = time.time,
        min_gap_seconds: float = MIN_GAP_SECONDS,
    ):
        self.name = name
        self.source = source
        self.fire = fire
        self.clock = clock
        self.arrivals = Arrivals(quiet_seconds, min_gap_seconds)
        self._observer = Observer()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name=f"watch-{name}", daemon=True)

    def start(self) -> SourceWatcher:
        """Start watching. Raise OSError if the source cannot be watched (inotify limits)."""
        self._observer.schedule(_Handler(self.arrivals, self.clock), str(self.source), recursive=True)
        self._observer.start()
        self._ticker.start()
        logger.info("%s: watching %s for new files", self.name, self.source)
        return self

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            now = self.clock()
            if self.arrivals.due(now):
                try:
                    started = self.fire()
                except Exception:
                    logger.exception("%s: a check started by the watch failed to start", self.name)
                    started = True  # don't retry it every second
                if started:
                    self.arrivals.fired(now)

    def stop(self) -> None:
        self._stop.set()
        self._observer.stop()
        self._observer.join(timeout=5)
        if self._ticker.is_alive():
            self._ticker.join(timeout=5)
