"""The simulated provider and the transfer engine of bench/simulate.py.

`Provider` obeys the facts about Google Drive in ../shared/DESIGN.md, per
account, over a rolling window (24 h by default):

- an upload that starts while the account is not over its limit is accepted;
  one that starts while it is over is refused at once (no bytes sent);
- when an upload completes, it fails (all its bytes wasted) if the account is
  already over the limit; otherwise it is committed, and if the committed bytes
  in the window now exceed the limit, the account is over: the first upload
  that crosses the limit completes, the others in flight will fail.

`run_stage` plays one rclone run against it: one account, an ordered file
list, up to `transfers` uploads at once sharing the bandwidth equally (the
completion times are recomputed at every start and finish), an optional
`--max-transfer` with `--cutoff-mode=cautious` checked the way rclone checks
it (against the bytes of the transfers already started, so transfers that
start at the same instant all pass), and a stop at the first limit error (what
both `--drive-stop-on-upload-limit` and cloudplow's runner do): the uploads in
flight at that moment are aborted and what they had sent is wasted.

Every quantity is an integer of bytes or a float of seconds on the simulated
clock; nothing here reads the real clock.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

DAY_SECONDS = 86400.0
LIMIT_MESSAGE = "User rate limit exceeded."


class Upload(Protocol):
    """What the engine needs of a file (cloudplow.scan.QueuedFile fits)."""

    @property
    def path(self) -> str: ...

    @property
    def size(self) -> int: ...


class Provider:
    """The per-account quota of the upload target, over a rolling window."""

    def __init__(self, quota_bytes: int, window_seconds: float = DAY_SECONDS):
        self.quota_bytes = quota_bytes
        self.window_seconds = window_seconds
        self._commits: dict[str, deque[tuple[float, int]]] = {}
        self._used: dict[str, int] = {}
        self.committed_bytes: dict[str, int] = {}  # all time, per account
        self.failed_uploads = 0
        self.refused_uploads = 0

    def used_bytes(self, account: str, now: float) -> int:
        """Given an account and a time, return the bytes it committed in the window ending then."""
        commits = self._commits.get(account)
        if not commits:
            return 0
        window_start = now - self.window_seconds
        used = self._used[account]
        while commits and commits[0][0] <= window_start:
            used -= commits.popleft()[1]
        self._used[account] = used
        return used

    def frees_at(self, account: str, now: float) -> float | None:
        """Return when the account's oldest commit in the window ages out, None if it has none."""
        self.used_bytes(account, now)
        commits = self._commits.get(account)
        return commits[0][0] + self.window_seconds if commits else None

    def over_limit(self, account: str, now: float) -> bool:
        return self.used_bytes(account, now) > self.quota_bytes

    def start(self, account: str, now: float) -> bool:
        """Return whether an upload starting now is accepted (False: refused at once)."""
        if self.over_limit(account, now):
            self.refused_uploads += 1
            return False
        return True

    def complete(self, account: str, size: int, now: float) -> bool:
        """Return whether an upload of `size` bytes finishing now is committed (False: failed)."""
        if self.over_limit(account, now):
            self.failed_uploads += 1
            return False
        self._commits.setdefault(account, deque()).append((now, size))
        self._used[account] = self._used.get(account, 0) + size
        self.committed_bytes[account] = self.committed_bytes.get(account, 0) + size
        return True


@dataclass
class StageOutcome:
    """What one simulated rclone run did."""

    end: float
    committed: list[tuple[Upload, float, float]] = field(default_factory=list)  # file, started, ended
    limit_failed: list[Upload] = field(default_factory=list)  # refused at start or failed at completion
    aborted: list[Upload] = field(default_factory=list)  # in flight when the stage stopped
    unstarted: list[Upload] = field(default_factory=list)
    wasted_bytes: int = 0  # sent and not committed
    limit: bool = False  # stopped at the provider's limit error
    cutoff: bool = False  # stopped starting transfers at --max-transfer (exit 8)

    @property
    def committed_bytes(self) -> int:
        return sum(upload.size for upload, _, _ in self.committed)


def run_stage(
    provider: Provider,
    account: str,
    files: Sequence[Upload],
    *,
    start: float,
    transfers: int,
    bandwidth_bytes_per_second: float,
    max_transfer_bytes: int | None = None,
    on_commit: Callable[[Upload, float, float], None] | None = None,
    on_limit: Callable[[Upload, float], None] | None = None,
) -> StageOutcome:
    """
    Given an account, the files in the order rclone starts them and the clock
    at the start, upload them with up to `transfers` at once and return what
    happened. `on_commit(file, started, ended)` and `on_limit(file, at)` are
    called the moment each file commits or meets the limit, in time order.
    """
    outcome = StageOutcome(end=start)
    # Equal shares: every transfer in flight advances at the same rate, so one
    # "virtual" byte counter (bytes sent per transfer since the stage began)
    # orders all completions; a file started at virtual v finishes at v + size.
    virtual = 0.0
    now = start
    in_flight: list[tuple[float, int, Upload, float, float]] = []  # finish, order, file, v0, t0
    next_index = 0
    started_bytes = 0
    starting_stopped = False
    sequence = 0

    def abort_in_flight() -> None:
        nonlocal starting_stopped
        starting_stopped = True
        for _, _, upload, started_virtual, _ in in_flight:
            outcome.aborted.append(upload)
            outcome.wasted_bytes += round(virtual - started_virtual)
        in_flight.clear()

    def start_transfers() -> None:
        """Fill the free transfer slots at this instant."""
        nonlocal next_index, started_bytes, starting_stopped, sequence
        started_before = started_bytes  # rclone's cautious check does not see simultaneous starts
        while not starting_stopped and len(in_flight) < transfers and next_index < len(files):
            upload = files[next_index]
            if max_transfer_bytes is not None and started_before + upload.size > max_transfer_bytes:
                outcome.cutoff = True
                starting_stopped = True
                return
            next_index += 1
            if not provider.start(account, now):
                outcome.limit = True
                outcome.limit_failed.append(upload)
                if on_limit is not None:
                    on_limit(upload, now)
                abort_in_flight()
                return
            started_bytes += upload.size
            sequence += 1
            heapq.heappush(in_flight, (virtual + upload.size, sequence, upload, virtual, now))

    start_transfers()
    while in_flight:
        finish = in_flight[0][0]
        now += (finish - virtual) * len(in_flight) / bandwidth_bytes_per_second
        virtual = finish
        while in_flight and in_flight[0][0] <= virtual + 1e-3:
            _, _, upload, _, started_at = heapq.heappop(in_flight)
            if provider.complete(account, upload.size, now):
                outcome.committed.append((upload, started_at, now))
                if on_commit is not None:
                    on_commit(upload, started_at, now)
            else:
                outcome.limit = True
                outcome.limit_failed.append(upload)
                outcome.wasted_bytes += upload.size
                if on_limit is not None:
                    on_limit(upload, now)
                abort_in_flight()
        start_transfers()
    outcome.end = now
    outcome.unstarted = list(files[next_index:])
    return outcome
