"""The strategies bench/simulate.py compares, each driving the simulated provider.

- `run_cloudplow`: ours, through the code the daemon runs. Every session is
  `cloudplow.session.run_session` itself (plan with the ledger's account
  states, run the first stage, record, re-plan; block an account at a limit
  error), over a real `Ledger` in a temporary SQLite file, with the simulated
  clock as its clock and a stage runner that plays each stage against the
  provider instead of starting rclone. Between sessions the daemon checks
  again every `check_interval` (30 min): the simulation jumps to the first
  check at which an upload ages out of the window or a block ends, since the
  plan cannot change before that.
- `run_seed_tiers`: the fork's staged tiers (issue 5), with its own usage
  bookkeeping and `--cutoff-mode=cautious`.
- `run_naive`: 8 transfers in queue order until the provider's limit error,
  then the next account; an account that errored is left alone for 25 h
  (plain cloudplow's sleep after "User rate limit exceeded").

All three share `Tracker`, which records what the tables report.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from sim_provider import DAY_SECONDS, LIMIT_MESSAGE, Provider, StageOutcome, Upload, run_stage

from cloudplow.config import load_config
from cloudplow.ledger import Ledger
from cloudplow.quota import account_reports
from cloudplow.rclone.stage import FileEvent, StageRequest, StageResult
from cloudplow.scan import QueuedFile, ScanResult, size_distribution
from cloudplow.session import AccountRuntime, run_session

GIB = 2**30


@dataclass(frozen=True)
class SimSettings:
    """What every strategy of one run shares: the provider and the link."""

    provider_quota_bytes: int = 750 * 10**9
    window_seconds: float = DAY_SECONDS
    bandwidth_bytes_per_second: float = 125e6  # 1 Gbit/s
    transfers: int = 8
    check_interval_seconds: float = 1800.0
    horizon_seconds: float = 30 * DAY_SECONDS


@dataclass
class AccountUse:
    """How a strategy used one account in the first window after it first started a stage on it."""

    account: str
    first_started_at: float
    first_round_end: str = ""  # rotated | waited | drained | horizon
    first_window_bytes: int = 0  # committed within [first_started_at, first_started_at + window)


@dataclass
class RunResult:
    strategy: str
    accounts: int
    quota_bytes: int
    uses: list[AccountUse]
    wasted_bytes: int
    rotations: int
    stages: int
    committed_bytes: int
    left_files: int
    left_bytes: int
    drained_at: float | None  # seconds from the start, None if not drained within the horizon
    horizon_seconds: float
    window_seconds: float
    refused_uploads: int = 0
    failed_uploads: int = 0

    def first_window_utilizations(self) -> list[float]:
        """
        Return, for each account the strategy finished with, its committed
        bytes in its first window (24 h from the first stage on it) over the
        provider's quota. Counted: accounts first used within the run's first
        window whose first stretch of stages ended by moving to another
        account or by waiting for quota; an account still in use when the
        queue ran out (or at the horizon) is left out: nothing was left to fill it.
        """
        return [
            use.first_window_bytes / self.quota_bytes
            for use in self.uses
            if use.first_started_at < self.window_seconds and use.first_round_end in ("rotated", "waited")
        ]


class Tracker:
    """Counts rotations, stages, wasted bytes and each account's first window, alike for every strategy."""

    def __init__(self, window_seconds: float) -> None:
        self.window_seconds = window_seconds
        self.uses: dict[str, AccountUse] = {}
        self.current: str | None = None  # the account of the stretch of stages in progress
        self.previous_account: str | None = None
        self.rotations = 0
        self.stages = 0
        self.wasted_bytes = 0
        self.last_commit_at: float | None = None

    def stage(self, account: str, now: float) -> None:
        self.stages += 1
        if self.previous_account is not None and self.previous_account != account:
            self.rotations += 1
        self.previous_account = account
        if self.current is not None and self.current != account:
            self._close("rotated")
        self.current = account
        if account not in self.uses:
            self.uses[account] = AccountUse(account, now)

    def commit(self, account: str, size: int, now: float) -> None:
        use = self.uses[account]
        if now < use.first_started_at + self.window_seconds:
            use.first_window_bytes += size
        self.last_commit_at = now

    def wait(self) -> None:
        """The strategy has nothing to do until quota frees: it has finished with the current account."""
        if self.current is not None:
            self._close("waited")

    def _close(self, end: str) -> None:
        assert self.current is not None
        use = self.uses[self.current]
        if not use.first_round_end:
            use.first_round_end = end
        self.current = None

    def result(
        self,
        strategy: str,
        settings: SimSettings,
        provider: Provider,
        accounts: int,
        left: Sequence[Upload],
    ) -> RunResult:
        if self.current is not None:
            self._close("horizon" if left else "drained")
        return RunResult(
            strategy=strategy,
            accounts=accounts,
            quota_bytes=settings.provider_quota_bytes,
            uses=list(self.uses.values()),
            wasted_bytes=self.wasted_bytes,
            rotations=self.rotations,
            stages=self.stages,
            committed_bytes=sum(provider.committed_bytes.values()),
            left_files=len(left),
            left_bytes=sum(upload.size for upload in left),
            drained_at=self.last_commit_at if not left and self.last_commit_at is not None else None,
            horizon_seconds=settings.horizon_seconds,
            window_seconds=settings.window_seconds,
            refused_uploads=provider.refused_uploads,
            failed_uploads=provider.failed_uploads,
        )


def account_names(count: int) -> list[str]:
    return [f"sa{index:03d}" for index in range(1, count + 1)]


def next_check(after: float, interval: float) -> float:
    """Given a time, return the daemon's first check at or after it (checks at 0, interval, ...)."""
    return math.ceil(after / interval) * interval


# --- cloudplow ------------------------------------------------------------------------------


class SimClock:
    """The simulated clock handed to run_session as `clock`: the runner moves it."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class SimStageRunner:
    """
    A cloudplow StageRunner that plays the stage against the provider: it
    reports each file to the session's recorder at the simulated moment it
    commits or meets the limit, and ends the stage at once at a limit error,
    as the real runner stops rclone (`run_stage` aborts the uploads in flight).
    """

    def __init__(
        self,
        provider: Provider,
        clock: SimClock,
        tracker: Tracker,
        settings: SimSettings,
        queue: dict[str, QueuedFile],
    ):
        self.provider = provider
        self.clock = clock
        self.tracker = tracker
        self.settings = settings
        self.queue = queue

    def __call__(self, request: StageRequest, listener, stop_event) -> StageResult:
        account = request.env["SIM_ACCOUNT"]
        files = [self.queue[path] for path in request.paths]
        self.tracker.stage(account, self.clock.now)
        result = StageResult("completed", 0, "rclone exited 0 (simulated)")

        def on_commit(upload: Upload, started_at: float, ended_at: float) -> None:
            self.clock.now = ended_at
            result.uploaded[upload.path] = upload.size
            self.tracker.commit(account, upload.size, ended_at)
            listener.on_file(FileEvent("uploaded", upload.path, size=upload.size, started_at=started_at))
            del self.queue[upload.path]

        def on_limit(upload: Upload, at: float) -> None:
            self.clock.now = at
            result.limit_failed.add(upload.path)
            result.limit_message = LIMIT_MESSAGE
            listener.on_file(
                FileEvent("failed", upload.path, size=upload.size, error=LIMIT_MESSAGE, limit=True)
            )

        outcome = run_stage(
            self.provider,
            account,
            files,
            start=self.clock.now,
            transfers=request.transfers,
            bandwidth_bytes_per_second=self.settings.bandwidth_bytes_per_second,
            on_commit=on_commit,
            on_limit=on_limit,
        )
        self.clock.now = outcome.end
        self.tracker.wasted_bytes += outcome.wasted_bytes
        if outcome.limit:
            result.outcome, result.exit_code = "limit", 7
            result.message = f"the provider's limit was reached: {LIMIT_MESSAGE}"
        return result


def run_cloudplow(
    files: Sequence[QueuedFile],
    *,
    accounts: int,
    settings: SimSettings,
    per_account_bytes: int,
    reserve_bytes: int,
    overshoot: bool,
    work_dir: Path,
    strategy: str = "cloudplow",
) -> RunResult:
    """
    Given a workload, run cloudplow's sessions on it against the provider, the
    daemon checking every `check_interval`, until it drains or the horizon.
    """
    names = account_names(accounts)
    (work_dir / "source").mkdir(parents=True, exist_ok=True)
    document = {
        "state_dir": str(work_dir / "state"),
        "uploaders": {
            "sim": {
                "source": str(work_dir / "source"),
                "destination": "sim:media",
                "mode": "move",
                "accounts": {"list": [{"name": name, "env": {"SIM_ACCOUNT": name}} for name in names]},
                "quota": {
                    "per_account": per_account_bytes,
                    "window": settings.window_seconds,
                    "reserve": reserve_bytes,
                    "overshoot": overshoot,
                },
                "transfers": settings.transfers,
                "filters": {"min_age": "0s", "exclude_open_files": False},
            }
        },
    }
    (work_dir / "config.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    config = load_config(work_dir / "config.yaml")
    uploader = config.uploaders["sim"]
    runtimes = [AccountRuntime(name, {"SIM_ACCOUNT": name}) for name in names]
    provider = Provider(settings.provider_quota_bytes, settings.window_seconds)
    tracker = Tracker(settings.window_seconds)
    clock = SimClock()
    queue = {queued.path: queued for queued in files}
    runner = SimStageRunner(provider, clock, tracker, settings, queue)
    with Ledger.in_state_dir(config.state_dir) as ledger, _quiet("cloudplow"):
        while queue and clock.now < settings.horizon_seconds:
            scanned = ScanResult(
                files=tuple(queue.values()),
                distribution=size_distribution([queued.size for queued in queue.values()]),
                skipped_young=0,
                skipped_excluded=0,
                skipped_open=0,
                skipped_unreadable=0,
                oldest_mtime=0.0,
            )
            run_session(
                config,
                uploader,
                ledger,
                trigger="simulated check",
                runner=runner,  # type: ignore[arg-type]
                clock=clock,
                binary="rclone",
                accounts=runtimes,
                drive=True,
                scanned=scanned,
            )
            if not queue:
                break
            # The session ended with nothing plannable: every account is full or blocked.
            tracker.wait()
            reports = account_reports(
                ledger,
                names,
                configured_quota_bytes=uploader.quota.per_account_bytes,
                window_seconds=uploader.quota.window_seconds,
                now=clock.now,
            )
            changes = [
                moment
                for report in reports
                for moment in (report.frees_at, report.blocked_until)
                if moment is not None and moment > clock.now
            ]
            if not changes:
                break  # fresh accounts cannot take what is left: it stays deferred
            clock.now = next_check(min(changes), settings.check_interval_seconds)
    return tracker.result(strategy, settings, provider, accounts, list(queue.values()))


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a logger's warnings (blocks and deferrals are expected here), then restore it."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# --- the fork's staged tiers ----------------------------------------------------------------

# q = remaining / quota -> (max-transfer, max-size) as fractions of remaining, transfers.
SEED_TIERS = ((0.8, 0.5, 0.8, 8), (0.5, 0.6, 0.5, 4), (0.25, 0.7, 0.3, 6), (0.0, 0.8, 0.2, 8))
SEED_DROP_BELOW_BYTES = 10 * GIB
SEED_SKIP_BELOW_BYTES = 1 * GIB


def seed_tier(remaining_bytes: int, quota_bytes: int) -> tuple[int, int, int]:
    """Given an account's remaining and quota, return the fork's (max_transfer, max_size, transfers)."""
    fraction = remaining_bytes / quota_bytes
    for threshold, transfer_share, size_share, transfers in SEED_TIERS:
        if fraction >= threshold:
            return int(transfer_share * remaining_bytes), int(size_share * remaining_bytes), transfers
    raise AssertionError("unreachable")


def run_seed_tiers(
    files: Sequence[QueuedFile],
    *,
    accounts: int,
    settings: SimSettings,
    assumed_quota_bytes: int,
    strategy: str = "seed-tiers",
) -> RunResult:
    """
    Given a workload, run the fork's algorithm on it: for each account in
    turn (skipped below 1 GiB remaining), stages of `rclone move --order-by
    size,desc --max-size S --max-transfer T --cutoff-mode cautious
    --transfers N` with the tier of the account's remaining, until it drops
    below 10 GiB remaining; then the next account. Remaining is the assumed
    quota minus what the fork saw committed in the last 24 h. A limit error
    (rclone with --drive-stop-on-upload-limit) ends the stage, and the account
    is left alone for a window. A stage that can start nothing ends the
    account too (the fork would loop on it forever).
    """
    names = account_names(accounts)
    provider = Provider(settings.provider_quota_bytes, settings.window_seconds)
    seen = Provider(assumed_quota_bytes, settings.window_seconds)  # the fork's own bookkeeping
    tracker = Tracker(settings.window_seconds)
    pending = sorted(files, key=lambda queued: (-queued.size, queued.path))  # --order-by size,desc
    banned_until: dict[str, float] = {}
    now = 0.0
    while pending and now < settings.horizon_seconds:
        progressed = False
        for account in names:
            if banned_until.get(account, -1.0) > now:
                continue
            remaining = assumed_quota_bytes - seen.used_bytes(account, now)
            if remaining < SEED_SKIP_BELOW_BYTES:
                continue
            while pending:
                max_transfer, max_size, transfers = seed_tier(remaining, assumed_quota_bytes)
                candidates = [queued for queued in pending if queued.size <= max_size]
                if not candidates:
                    break
                tracker.stage(account, now)
                outcome = _play(
                    provider, account, candidates, now, transfers, settings, tracker, max_transfer
                )
                now = outcome.end
                for upload, _, ended_at in outcome.committed:
                    seen.complete(account, upload.size, ended_at)
                if outcome.committed:
                    progressed = True
                    done = {upload.path for upload, _, _ in outcome.committed}
                    pending = [queued for queued in pending if queued.path not in done]
                if outcome.limit:
                    banned_until[account] = now + settings.window_seconds
                    break
                if not outcome.committed:
                    break
                remaining = assumed_quota_bytes - seen.used_bytes(account, now)
                if remaining < SEED_DROP_BELOW_BYTES:
                    break
            if not pending:
                break
        if not pending:
            break
        # One pass over the accounts is one session; the next starts at the daemon's next check,
        # or, if this one uploaded nothing, at the first check after some quota frees.
        tracker.wait()
        if progressed:
            now = next_check(now, settings.check_interval_seconds)
            continue
        changes = [moment for moment in banned_until.values() if moment > now]
        changes += [moment for name in names if (moment := seen.frees_at(name, now)) is not None]
        if not changes:
            break
        now = next_check(min(changes), settings.check_interval_seconds)
    return tracker.result(strategy, settings, provider, accounts, pending)


# --- naive ----------------------------------------------------------------------------------

NAIVE_BAN_SECONDS = 25 * 3600.0


def run_naive(
    files: Sequence[QueuedFile], *, accounts: int, settings: SimSettings, strategy: str = "naive"
) -> RunResult:
    """
    Given a workload, upload it in queue order with `transfers` at once
    through one account until the provider's limit error (the uploads in
    flight then fail), then through the next; an account that errored is
    left alone for 25 h. When every account is, wait for the first to return.
    """
    names = account_names(accounts)
    provider = Provider(settings.provider_quota_bytes, settings.window_seconds)
    tracker = Tracker(settings.window_seconds)
    queue = {queued.path: queued for queued in files}
    banned_until: dict[str, float] = {}
    now = 0.0
    while queue and now < settings.horizon_seconds:
        progressed = False
        for account in names:
            if banned_until.get(account, -1.0) > now:
                continue
            tracker.stage(account, now)
            outcome = _play(
                provider, account, list(queue.values()), now, settings.transfers, settings, tracker
            )
            now = outcome.end
            for upload, _, _ in outcome.committed:
                del queue[upload.path]
            progressed = progressed or bool(outcome.committed)
            if outcome.limit:
                banned_until[account] = now + NAIVE_BAN_SECONDS
            if not queue:
                break
        if not queue:
            break
        tracker.wait()
        if progressed:
            now = next_check(now, settings.check_interval_seconds)
            continue
        changes = [moment for moment in banned_until.values() if moment > now]
        if not changes:
            break
        now = next_check(min(changes), settings.check_interval_seconds)
    return tracker.result(strategy, settings, provider, accounts, list(queue.values()))


def _play(
    provider: Provider,
    account: str,
    files: Sequence[Upload],
    now: float,
    transfers: int,
    settings: SimSettings,
    tracker: Tracker,
    max_transfer_bytes: int | None = None,
) -> StageOutcome:
    outcome = run_stage(
        provider,
        account,
        files,
        start=now,
        transfers=transfers,
        bandwidth_bytes_per_second=settings.bandwidth_bytes_per_second,
        max_transfer_bytes=max_transfer_bytes,
        on_commit=lambda upload, _started, ended: tracker.commit(account, upload.size, ended),
    )
    tracker.wasted_bytes += outcome.wasted_bytes
    return outcome
