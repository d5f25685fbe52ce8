"""What is happening right now, in memory: the state the ledger does not hold.

The session and the daemon's checks write here as things happen (a check
started, a stage began, rclone's latest `core/stats`); the metrics collector
and /status read a copy at each scrape. Everything durable (usage, blocks,
totals) lives in the ledger instead, so a restart loses only this.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field


@dataclass
class UploaderLive:
    state: str = "idle"  # idle | checking | uploading
    # the latest scan (a check's or the session's), shrinking as files upload
    queue_files: int = 0
    queue_bytes: int = 0
    queue_distribution: dict | None = None
    queue_oldest_mtime: float | None = None
    queue_smallest_bytes: int = 0
    # the daemon's checks
    last_check_at: float | None = None
    next_check_at: float | None = None
    last_trigger: str = ""  # why the last check did or did not start a session
    last_trigger_fired: bool = False
    # the running session and stage
    session_id: int | None = None
    session_started_at: float | None = None
    session_uploaded_bytes: int = 0
    session_uploaded_files: int = 0
    stage_number: int = 0
    stage_account: str = ""
    stage_account_index: int = 0  # 1-based position in the pool
    accounts_in_pool: int = 0
    stage_planned_bytes: int = 0
    stage_planned_files: int = 0
    stage_transfers: int = 0
    stage_overshoot: bool = False
    stats: dict = field(default_factory=dict)  # rclone's latest core/stats for the stage


class LiveState:
    """Thread-safe live state of every uploader, by name."""

    def __init__(self, uploaders: list[str] | None = None):
        self._lock = threading.Lock()
        self._uploaders: dict[str, UploaderLive] = {name: UploaderLive() for name in uploaders or []}
        self._downloaders: dict[str, bool] = {}  # downloader name -> paused by this process

    def set_downloader(self, name: str, *, paused: bool) -> None:
        with self._lock:
            self._downloaders[name] = paused

    def downloaders(self) -> dict[str, bool]:
        """Return each configured downloader's name and whether this process holds it paused."""
        with self._lock:
            return dict(self._downloaders)

    def update(self, uploader: str, **changes: object) -> None:
        with self._lock:
            live = self._uploaders.setdefault(uploader, UploaderLive())
            for name, value in changes.items():
                if not hasattr(live, name):
                    raise AttributeError(f"UploaderLive has no field {name}")
                setattr(live, name, value)

    def file_uploaded(self, uploader: str, size: int) -> None:
        with self._lock:
            live = self._uploaders.setdefault(uploader, UploaderLive())
            live.session_uploaded_bytes += size
            live.session_uploaded_files += 1
            live.queue_bytes = max(0, live.queue_bytes - size)
            live.queue_files = max(0, live.queue_files - 1)

    def session_ended(self, uploader: str) -> None:
        with self._lock:
            live = self._uploaders.setdefault(uploader, UploaderLive())
            live.state = "idle"
            live.session_id = None
            live.session_started_at = None
            live.session_uploaded_bytes = live.session_uploaded_files = 0
            live.stage_number = 0
            live.stage_account = ""
            live.stage_account_index = 0
            live.stage_planned_bytes = live.stage_planned_files = live.stage_transfers = 0
            live.stage_overshoot = False
            live.stats = {}

    def snapshot(self) -> dict[str, UploaderLive]:
        """Return a deep copy, consistent at one instant, for a scrape or /status."""
        with self._lock:
            return copy.deepcopy(self._uploaders)
