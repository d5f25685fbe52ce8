"""One upload session: scan, plan, run a stage, re-read the ledger, re-plan, rotate.

    scan source -> queue -> [ account states from the ledger -> plan -> run the
    first stage -> record ] ... until the plan is empty

Each turn runs only the first stage of a fresh plan, so the next stage is
planned on what really happened (files that failed, a limit the provider
enforced early). Every turn removes the stage's files from the queue or blocks
its account, so a session always ends. Files refused because of the limit go
back to the queue for the next account; files that failed for another reason
are not tried again in this session.

Exit codes (the `upload` command's contract): 0 everything planned was
uploaded or there was nothing to do; 3 files remain because no account has
quota left for them (they stay in the source, untouched); 1 failures.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cloudplow import events
from cloudplow.config import Config, Uploader
from cloudplow.events import Event, Listener
from cloudplow.ledger import Ledger
from cloudplow.live import LiveState
from cloudplow.plan import Plan, PlanSettings, Stage, plan_uploads
from cloudplow.quota import AccountReport, account_reports, block_until
from cloudplow.rclone import command, execute
from cloudplow.rclone.stage import FileEvent, StageRequest, StageResult, run_stage
from cloudplow.scan import QueuedFile, ScanResult, scan, size_distribution
from cloudplow.units import format_size

logger = logging.getLogger(__name__)
# The periodic progress lines: `upload` on a terminal draws a live display instead.
PROGRESS_LOGGER = f"{__name__}.progress"
progress_logger = logging.getLogger(PROGRESS_LOGGER)

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_OUT_OF_QUOTA = 3

StageRunner = Callable[[StageRequest, "_Recorder", threading.Event], StageResult]


class SessionError(Exception):
    """The session cannot start: a clear one-line reason for the user."""


class UploaderBusy(SessionError):
    """Another cloudplow process is uploading this uploader now."""


@dataclass(frozen=True)
class AccountRuntime:
    """An account ready for rclone: its name and the environment that selects it."""

    name: str
    env: dict[str, str]


@dataclass
class SessionResult:
    uploader: str
    exit_code: int
    message: str
    session_id: int | None = None
    queued_files: int = 0
    queued_bytes: int = 0
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    stages: int = 0
    failed_files: int = 0
    deferred_files: int = 0  # larger than a whole account's quota (overshoot off)
    skipped_files: int = 0  # rclone had nothing to do: gone from the source or already there
    left_files: int = 0
    left_bytes: int = 0
    accounts: list[dict] = field(default_factory=list)


def plan_settings(uploader: Uploader) -> PlanSettings:
    return PlanSettings(
        reserve_bytes=uploader.quota.reserve_bytes,
        overshoot=uploader.quota.overshoot,
        max_transfers=uploader.transfers,
    )


def reports_now(ledger: Ledger, uploader: Uploader, now: float) -> list[AccountReport]:
    """Return every account's standing in rotation order, as the planner will see it."""
    return account_reports(
        ledger,
        [account.name for account in uploader.accounts],
        configured_quota_bytes=uploader.quota.per_account_bytes,
        window_seconds=uploader.quota.window_seconds,
        now=now,
    )


def scan_uploader(uploader: Uploader, ledger: Ledger, now: float) -> ScanResult:
    """
    Scan the uploader's source; in copy mode, leave out files this uploader
    already uploaded. Raise SessionError if the source cannot be listed.
    """
    try:
        result = scan(
            uploader.source,
            now=now,
            min_age_seconds=uploader.filters.min_age_seconds,
            exclude=uploader.filters.exclude,
            exclude_open_files=uploader.filters.exclude_open_files,
        )
    except OSError as error:
        # A missing or unmounted source must not look like an empty queue.
        raise SessionError(
            f"uploaders.{uploader.name}.source: cannot scan {uploader.source}: {error.strerror or error}"
        ) from error
    if uploader.mode != "copy":
        return result
    uploaded = ledger.uploaded_sizes(uploader.name)
    files = tuple(queued for queued in result.files if uploaded.get(queued.path) != queued.size)
    if len(files) == len(result.files):
        return result
    oldest = min((queued.mtime for queued in files), default=None)
    return ScanResult(
        files=files,
        distribution=size_distribution([queued.size for queued in files]),
        skipped_young=result.skipped_young,
        skipped_excluded=result.skipped_excluded,
        skipped_open=result.skipped_open,
        skipped_unreadable=result.skipped_unreadable,
        oldest_mtime=oldest,
    )


def plan_for(config: Config, uploader: Uploader, ledger: Ledger, now: float) -> tuple[ScanResult, Plan]:
    """Scan and plan without uploading anything (for `plan` and `upload --dry-run`)."""
    scanned = scan_uploader(uploader, ledger, now)
    states = [report.to_state() for report in reports_now(ledger, uploader, now)]
    return scanned, plan_uploads(scanned.files, states, plan_settings(uploader))


def account_runtimes(config: Config, uploader: Uploader, binary: str) -> tuple[list[AccountRuntime], bool]:
    """
    Given an uploader, return its accounts with the environment that selects
    each, and whether the destination uploads through Google Drive. A service
    account file is handed to every drive remote under the destination.
    Raise SessionError if service accounts are configured but no drive remote is.
    """
    try:
        dump = command.config_dump(binary, config.rclone_config)
    except execute.RcloneError as error:
        raise SessionError(f"reading rclone's configuration failed: {error}") from error
    drives = command.drive_remotes(dump, uploader.remote)
    runtimes = []
    for account in uploader.accounts:
        env = dict(account.env)
        if account.service_account_file is not None:
            if not drives:
                raise SessionError(
                    f"uploaders.{uploader.name}.accounts.dir: the destination remote"
                    f" '{uploader.remote}' has no Google Drive remote to give service accounts to"
                )
            env.update(command.service_account_env(drives, account.service_account_file))
        runtimes.append(AccountRuntime(account.name, env))
    return runtimes, bool(drives)


@contextmanager
def uploader_lock(state_dir: Path, uploader: str) -> Iterator[None]:
    """
    Hold the uploader's lock for a session, across processes: the CLI and the
    daemon never upload the same uploader at once. The kernel releases the
    lock when its process dies, so a crashed session leaves no stale lock.
    Raise UploaderBusy if another process holds it.
    """
    lock_dir = state_dir / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock_path = lock_dir / f"{uploader}.lock"
    with open(lock_path, "a+", encoding="utf-8") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "another process"
            raise UploaderBusy(
                f"uploader '{uploader}' is being uploaded by {holder}; try again when it ends"
            ) from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"pid {os.getpid()}")
        lock_file.flush()
        try:
            yield
        finally:
            lock_file.seek(0)
            lock_file.truncate()
            fcntl.flock(lock_file, fcntl.LOCK_UN)


class _Recorder:
    """Receives one stage's events from the runner and writes them to the ledger at once."""

    def __init__(
        self,
        ledger: Ledger,
        live: LiveState,
        *,
        uploader: str,
        session_id: int,
        stage_id: int,
        account: str,
        sizes: dict[str, int],
        started_at: float,
        clock: Callable[[], float],
        listeners: Sequence[Listener] = (),
        stage_number: int = 0,
    ):
        self.ledger = ledger
        self.listeners = listeners
        self.stage_number = stage_number
        self.live = live
        self.uploader = uploader
        self.session_id = session_id
        self.stage_id = stage_id
        self.account = account
        self.sizes = sizes
        self.started_at = started_at
        self.clock = clock
        self._last_report_at = 0.0

    def on_file(self, event: FileEvent) -> None:
        if event.kind == "deleted":
            return
        size = event.size if event.size is not None else self.sizes.get(event.path, 0)
        outcome = "uploaded" if event.kind == "uploaded" else ("limit" if event.limit else "failed")
        self.ledger.record_file(
            session_id=self.session_id,
            stage_id=self.stage_id,
            uploader=self.uploader,
            account=self.account,
            path=event.path,
            size=size,
            started_at=event.started_at or self.started_at,
            ended_at=self.clock(),
            outcome=outcome,
            error=event.error,
        )
        if outcome == "uploaded":
            self.live.file_uploaded(self.uploader, size)
        else:
            # What was sent of a failed upload is lost quota and bandwidth.
            if event.sent_bytes:
                self.ledger.increment(self.uploader, "wasted_bytes", event.sent_bytes, account=self.account)
        if outcome == "failed":
            logger.warning("%s: %s", event.path, event.error)
        self._announce(events.FILE_DONE, path=event.path, size=size, outcome=outcome)

    def _announce(self, kind: str, **data: object) -> None:
        events.announce(
            self.listeners,
            Event(
                kind,
                self.uploader,
                self.clock(),
                {"stage": self.stage_number, "account": self.account, **data},
            ),
        )

    def on_progress(self, stats: dict) -> None:
        self.live.update(self.uploader, stats=stats)
        self._announce(events.PROGRESS, stats=stats)
        now = self.clock()
        if now - self._last_report_at >= 10:
            self._last_report_at = now
            progress_logger.info(
                "  %s of %s, %s/s, %d in flight",
                format_size(stats.get("bytes", 0)),
                format_size(stats.get("totalBytes", 0)),
                format_size(stats.get("speed", 0)),
                len(stats.get("transferring") or ()),
            )


def run_session(
    config: Config,
    uploader: Uploader,
    ledger: Ledger,
    *,
    trigger: str = "manual",
    stop_event: threading.Event | None = None,
    runner: StageRunner = run_stage,  # type: ignore[assignment]
    clock: Callable[[], float] = time.time,
    binary: str | None = None,
    accounts: Sequence[AccountRuntime] | None = None,
    drive: bool | None = None,
    live: LiveState | None = None,
    scanned: ScanResult | None = None,
    listeners: Sequence[Listener] = (),
) -> SessionResult:
    """
    Given an uploader, run one whole upload session and return its result,
    reporting progress to `live` and announcing what happens to `listeners`
    as it goes. Raise UploaderBusy if another process is uploading it,
    SessionError if it cannot start.
    """
    try:
        binary = binary or execute.find_rclone(config.rclone_binary)
    except execute.RcloneError as error:
        raise SessionError(str(error)) from error
    if accounts is None or drive is None:
        accounts, drive = account_runtimes(config, uploader, binary)
    context = _Context(
        config=config,
        uploader=uploader,
        ledger=ledger,
        live=live or LiveState(),
        runner=runner,
        clock=clock,
        stop_event=stop_event or threading.Event(),
        binary=binary,
        drive=drive,
        env_by_account={account.name: account.env for account in accounts},
        secrets=tuple(value for account in accounts for value in account.env.values() if value),
        limit_patterns=tuple(re.compile(pattern, re.IGNORECASE) for pattern in uploader.quota.limit_patterns),
        listeners=tuple(listeners),
    )
    with uploader_lock(config.state_dir, uploader.name):
        ledger.mark_interrupted_sessions(uploader.name, now=clock())
        try:
            return _run_locked(context, trigger, scanned or scan_uploader(uploader, ledger, clock()))
        finally:
            context.live.session_ended(uploader.name)


@dataclass(frozen=True)
class _Context:
    """What every stage of one session shares."""

    config: Config
    uploader: Uploader
    ledger: Ledger
    live: LiveState
    runner: StageRunner
    clock: Callable[[], float]
    stop_event: threading.Event
    binary: str
    drive: bool
    env_by_account: dict[str, dict[str, str]]
    secrets: tuple[str, ...]
    limit_patterns: tuple[re.Pattern[str], ...]
    listeners: tuple[Listener, ...] = ()

    def announce(self, kind: str, **data: object) -> None:
        events.announce(self.listeners, Event(kind, self.uploader.name, self.clock(), data))


def _run_locked(context: _Context, trigger: str, scanned: ScanResult) -> SessionResult:
    uploader, ledger, clock = context.uploader, context.ledger, context.clock
    queue: dict[str, QueuedFile] = {queued.path: queued for queued in scanned.files}
    result = SessionResult(
        uploader.name, EXIT_OK, "", queued_files=len(queue), queued_bytes=scanned.distribution.total_bytes
    )
    result.session_id = ledger.start_session(
        uploader.name,
        now=clock(),
        trigger=trigger,
        queue_files=len(queue),
        queue_bytes=result.queued_bytes,
        distribution=scanned.distribution.to_dict(),
    )
    context.live.update(
        uploader.name,
        state="uploading",
        session_id=result.session_id,
        session_started_at=clock(),
        session_uploaded_bytes=0,
        session_uploaded_files=0,
        queue_files=len(queue),
        queue_bytes=result.queued_bytes,
        queue_distribution=scanned.distribution.to_dict(),
        queue_oldest_mtime=scanned.oldest_mtime,
        queue_smallest_bytes=min((queued.size for queued in scanned.files), default=0),
        accounts_in_pool=len(context.env_by_account),
    )
    context.announce(
        events.SESSION_STARTED,
        session_id=result.session_id,
        trigger=trigger,
        queue_files=len(queue),
        queue_bytes=result.queued_bytes,
        accounts=len(context.env_by_account),
    )
    started_at = clock()
    logger.info(
        "%s: session %d: %d files, %s queued (%s)",
        uploader.name,
        result.session_id,
        len(queue),
        format_size(result.queued_bytes),
        trigger,
    )
    fatal_message: str | None = None
    interrupted = False
    previous: tuple[str, str] | None = None  # (account, outcome) of the last stage
    accounts_used: set[str] = set()
    while queue and not context.stop_event.is_set():
        reports = reports_now(ledger, uploader, clock())
        plan = plan_uploads(
            list(queue.values()), [report.to_state() for report in reports], plan_settings(uploader)
        )
        if not plan.stages:
            break
        stage = plan.stages[0]
        if previous is not None and previous[0] != stage.account:
            ledger.increment(uploader.name, "rotations", label=_ROTATION_REASONS.get(previous[1], "other"))
        account_index = [report.name for report in reports].index(stage.account)
        accounts_used.add(stage.account)
        outcome = _run_one_stage(context, result, stage, account_index, len(reports))
        previous = (stage.account, outcome.outcome)
        _settle(queue, stage, outcome, result)
        if outcome.outcome == "limit":
            _block(context, stage.account, outcome)
        elif outcome.outcome == "interrupted":
            interrupted = True
            break
        elif outcome.outcome == "fatal":
            fatal_message = outcome.message
            break
    # A stop that lands between stages, or as a stage ends for another reason, interrupts
    # the session only if files remain; after the last file it changes nothing.
    interrupted = interrupted or (context.stop_event.is_set() and bool(queue))
    _conclude_session(result, queue, uploader, interrupted=interrupted, fatal_message=fatal_message)
    final_reports = reports_now(ledger, uploader, clock())
    result.accounts = [report.to_dict() for report in final_reports]
    ledger.end_session(
        result.session_id,
        now=clock(),
        state="interrupted" if interrupted else "finished",
        exit_code=result.exit_code,
        message=result.message,
    )
    logger.info(
        "%s: session %d ended (exit %d): %s; %d file(s), %s uploaded in %d stage(s)",
        uploader.name,
        result.session_id,
        result.exit_code,
        result.message,
        result.uploaded_files,
        format_size(result.uploaded_bytes),
        result.stages,
    )
    context.announce(
        events.SESSION_ENDED,
        session_id=result.session_id,
        exit_code=result.exit_code,
        state="interrupted" if interrupted else "finished",
        message=result.message,
        uploaded_files=result.uploaded_files,
        uploaded_bytes=result.uploaded_bytes,
        left_files=result.left_files,
        left_bytes=result.left_bytes,
        stages=result.stages,
        accounts_used=sorted(accounts_used),
        duration_seconds=clock() - started_at,
        frees_at=min(
            (report.frees_at for report in final_reports if report.frees_at is not None), default=None
        ),
    )
    return result


def _run_one_stage(
    context: _Context, result: SessionResult, stage: Stage, account_index: int, accounts: int
) -> StageResult:
    """Record, run and count one stage; return rclone's result for it."""
    uploader, ledger, clock = context.uploader, context.ledger, context.clock
    assert result.session_id is not None
    result.stages += 1
    now = clock()
    logger.info(
        "%s: stage %d: account %s (%d of %d), %d file(s), %s, %d transfer(s)%s",
        uploader.name,
        result.stages,
        stage.account,
        account_index + 1,
        accounts,
        len(stage.files),
        format_size(stage.planned_bytes),
        stage.transfers,
        ", overshoot" if stage.overshoot else "",
    )
    context.live.update(
        uploader.name,
        stage_number=result.stages,
        stage_account=stage.account,
        stage_account_index=account_index + 1,
        stage_planned_bytes=stage.planned_bytes,
        stage_planned_files=len(stage.files),
        stage_transfers=stage.transfers,
        stage_overshoot=stage.overshoot,
        stats={},
    )
    context.announce(
        events.STAGE_STARTED,
        session_id=result.session_id,
        stage=result.stages,
        account=stage.account,
        account_index=account_index + 1,
        files=len(stage.files),
        bytes=stage.planned_bytes,
        transfers=stage.transfers,
        overshoot=stage.overshoot,
    )
    stage_id = ledger.start_stage(
        result.session_id,
        number=result.stages,
        account=stage.account,
        transfers=stage.transfers,
        overshoot=stage.overshoot,
        planned_files=len(stage.files),
        planned_bytes=stage.planned_bytes,
        now=now,
    )
    recorder = _Recorder(
        ledger,
        context.live,
        uploader=uploader.name,
        session_id=result.session_id,
        stage_id=stage_id,
        account=stage.account,
        sizes={queued.path: queued.size for queued in stage.files},
        started_at=now,
        clock=clock,
        listeners=context.listeners,
        stage_number=result.stages,
    )
    request = StageRequest(
        binary=context.binary,
        mode=uploader.mode,
        source=uploader.source,
        destination=uploader.destination,
        paths=tuple(queued.path for queued in stage.files),
        transfers=stage.transfers,
        env=context.env_by_account[stage.account],
        config_path=context.config.rclone_config,
        drive=context.drive,
        user_flags=uploader.rclone_flags,
        limit_patterns=context.limit_patterns,
        stall_timeout_seconds=uploader.stall_timeout_seconds,
        work_dir=context.config.state_dir / "work" / uploader.name,
        secrets=context.secrets,
    )
    outcome = context.runner(request, recorder, context.stop_event)
    ledger.end_stage(
        stage_id, now=clock(), outcome=outcome.outcome, exit_code=outcome.exit_code, message=outcome.message
    )
    if outcome.exit_code is not None:
        ledger.increment(uploader.name, "rclone_exits", label=str(outcome.exit_code))
    ledger.increment(uploader.name, "stages", label=outcome.outcome)
    logger.info(
        "%s: stage %d %s: %d file(s), %s uploaded. %s",
        uploader.name,
        result.stages,
        outcome.outcome,
        len(outcome.uploaded),
        format_size(outcome.uploaded_bytes),
        outcome.message,
    )
    result.uploaded_files += len(outcome.uploaded)
    result.uploaded_bytes += outcome.uploaded_bytes
    result.failed_files += len(outcome.failed)
    context.announce(
        events.STAGE_ENDED,
        session_id=result.session_id,
        stage=result.stages,
        account=stage.account,
        outcome=outcome.outcome,
        uploaded_files=len(outcome.uploaded),
        uploaded_bytes=outcome.uploaded_bytes,
        message=outcome.message,
    )
    return outcome


def _settle(queue: dict[str, QueuedFile], stage: Stage, outcome: StageResult, result: SessionResult) -> None:
    """
    Take the stage's files out of the queue, except those refused by the
    limit or never started because of it: they go to the next account.
    Anything else (uploaded, failed, vanished, stalled) is done for this session.
    """
    for queued in stage.files:
        untouched = queued.path not in outcome.uploaded and queued.path not in outcome.failed
        if queued.path in outcome.limit_failed or (untouched and outcome.outcome == "limit"):
            continue
        queue.pop(queued.path, None)
        if untouched and queued.path not in outcome.deleted:
            if outcome.outcome == "stalled":
                result.failed_files += 1
            elif outcome.outcome == "completed":
                # rclone had nothing to do: gone from the source, or already there.
                result.skipped_files += 1


def _conclude_session(
    result: SessionResult,
    queue: dict[str, QueuedFile],
    uploader: Uploader,
    *,
    interrupted: bool,
    fatal_message: str | None,
) -> None:
    """Set the session's exit code and message from what is left and what went wrong."""
    result.left_files = len(queue)
    result.left_bytes = sum(queued.size for queued in queue.values())
    if not uploader.quota.overshoot:
        # Files that no account can take even in a fresh window: say so, or they wait forever.
        whole_account_bytes = uploader.quota.per_account_bytes - uploader.quota.reserve_bytes
        too_large = [queued for queued in queue.values() if queued.size > whole_account_bytes]
        result.deferred_files = len(too_large)
        for queued in too_large[:10]:
            logger.warning(
                "%s: deferred %s (%s): larger than a whole account's quota",
                uploader.name,
                queued.path,
                format_size(queued.size),
            )
    if interrupted:
        result.exit_code, result.message = EXIT_FAILURES, "interrupted; files not uploaded stay in the source"
    elif fatal_message:
        result.exit_code, result.message = EXIT_FAILURES, f"stopped: {fatal_message}"
    elif result.failed_files:
        result.exit_code = EXIT_FAILURES
        result.message = f"{result.failed_files} file(s) failed; they stay in the source"
    elif queue:
        result.exit_code = EXIT_OUT_OF_QUOTA
        result.message = (
            f"no account has quota left for the {len(queue)} file(s), {format_size(result.left_bytes)}"
            " still queued; they stay in the source for a later session"
        )
        if result.deferred_files:
            result.message += (
                f"; {result.deferred_files} of them are larger than a whole"
                " account's quota and need quota.overshoot"
            )
    elif not result.queued_files:
        result.message = "nothing to upload"
    else:
        result.message = f"all {result.uploaded_files} queued file(s) uploaded"
        if result.skipped_files:
            result.message += (
                f", {result.skipped_files} skipped (gone from the source or already at the destination)"
            )


# Why a session left an account for the next one, by the outcome of its last stage there.
_ROTATION_REASONS = {"completed": "filled", "limit": "limit", "stalled": "stalled", "failed": "errors"}


def _block(context: _Context, account: str, outcome: StageResult) -> None:
    """Block an account that hit the provider's limit, recording the limit it really had."""
    ledger, uploader, now = context.ledger, context.uploader, context.clock()
    usage = ledger.usage([account], now=now, window_seconds=uploader.quota.window_seconds)[0]
    until = block_until(usage, now=now, window_seconds=uploader.quota.window_seconds)
    ledger.block_account(
        account,
        uploader=uploader.name,
        now=now,
        until=until,
        reason="limit",
        observed_limit_bytes=usage.used_bytes,
        message=outcome.limit_message or outcome.message,
    )
    logger.warning(
        "%s: account %s hit the provider's limit at %s in the window; blocked until %s",
        uploader.name,
        account,
        format_size(usage.used_bytes),
        time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(until)),
    )
    context.announce(
        events.ACCOUNT_BLOCKED,
        account=account,
        until=until,
        used_bytes=usage.used_bytes,
        message=outcome.limit_message or outcome.message,
    )


def summarize_plan(plan: Plan) -> list[dict]:
    """Return the plan's stages as JSON-able dicts for `plan --json` and `upload --dry-run`."""
    return [
        {
            "account": stage.account,
            "files": len(stage.files),
            "bytes": stage.planned_bytes,
            "transfers": stage.transfers,
            "overshoot": stage.overshoot,
            "paths": [queued.path for queued in stage.files],
        }
        for stage in plan.stages
    ]
