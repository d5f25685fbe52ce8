"""One upload session: scan, plan, run a stage, re-read the ledger, re-plan, rotate.

    scan source -> queue -> [ account states from the ledger -> plan -> run the
    first stage -> record ] ... until the plan is empty

Each turn runs only the first stage of a fresh plan, so the next stage is
planned on what really happened (files that failed, a limit the provider
enforced early). Every turn removes the stage's files from the queue or blocks
its account, so a session always ends. Files refused because of the limit, or
because the account's credentials were refused (the account is then broken
for the rest of the session), go back to the queue for the next account;
files that failed for another reason are not tried again in this session.

Every queued file ends the session uploaded or in `files_left` under a reason
(events.FILES_LEFT_REASONS). Exit codes (the `upload` command's contract): 0
every eligible file was uploaded or there was nothing to do; 3 the only files
left wait for quota (reasons quota, too_large: they stay in the source,
untouched); 1 any other file left, or a failure.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import logging
import os
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cloudplow import events
from cloudplow.config import Config, Uploader
from cloudplow.config.load import Account, service_account_identity
from cloudplow.events import Event, Listener
from cloudplow.ledger import Ledger
from cloudplow.live import LiveState
from cloudplow.plan import Plan, PlanSettings, Stage, plan_uploads
from cloudplow.quota import AccountReport, account_reports, block_until
from cloudplow.rclone import command, execute
from cloudplow.rclone.errors import failure_reason
from cloudplow.rclone.stage import FileEvent, StageRequest, StageResult, run_stage
from cloudplow.scan import QueuedFile, ScanResult, scan, size_distribution
from cloudplow.tidy import remove_emptied_folders
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
    skipped_files: int = 0  # rclone had nothing to do: the file is at the destination already
    left_files: int = 0
    left_bytes: int = 0
    accounts: list[dict] = field(default_factory=list)
    removed_folders: int = 0  # source folders the session emptied (move mode)
    # Every queued file not uploaded, by why (events.FILES_LEFT_REASONS): exit 0 only when empty.
    files_left: dict[str, list[str]] = field(default_factory=dict)
    broken_accounts: list[str] = field(default_factory=list)  # credentials refused in this session

    def leave(self, reason: str, path: str) -> None:
        self.files_left.setdefault(reason, []).append(path)

    def files_left_counts(self) -> dict[str, int]:
        return {reason: len(self.files_left.get(reason, ())) for reason in events.FILES_LEFT_REASONS}


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
        if account.remote is not None:
            env.update(_remote_account_env(dump, uploader, account.remote))
        runtimes.append(AccountRuntime(account.name, env))
    return runtimes, bool(drives)


def _remote_account_env(
    dump: dict[str, dict[str, str]], uploader: Uploader, account_remote: str
) -> dict[str, str]:
    """
    Given rclone's configuration and an account that names another remote,
    return the environment that lends its credentials to the destination's
    remotes of the same backend. Raise SessionError if that cannot be done.
    """
    where = f"uploaders.{uploader.name}.accounts.remotes"
    if account_remote not in dump:
        raise SessionError(f"{where}: no remote {account_remote!r} in rclone's configuration")
    backend = dump[account_remote].get("type", "")
    targets = [
        name for name in command.backend_remotes(dump, uploader.remote, backend) if name != account_remote
    ]
    if not targets:
        raise SessionError(
            f"{where}: {account_remote!r} is a {backend or 'typeless'} remote, but the destination"
            f" {uploader.remote!r} writes through no {backend or 'such'} remote to lend its credentials to"
        )
    return command.credential_env(dump, targets, account_remote)


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
    rate_limit: Callable[[], int] | None = None,
) -> SessionResult:
    """
    Given an uploader, run one whole upload session and return its result,
    reporting progress to `live` and announcing what happens to `listeners`
    as it goes; every stage follows `rate_limit` (bytes per second wanted
    now, 0: unlimited) when one is given. Raise UploaderBusy if another process is uploading it,
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
        rate_limit=rate_limit,
    )
    with uploader_lock(config.state_dir, uploader.name):
        ledger.mark_interrupted_sessions(uploader.name, now=clock())
        bind_identities(ledger, uploader)
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
    # Accounts whose credentials were refused in this session -> their key's fingerprint then.
    broken: dict[str, str | None] = field(default_factory=dict)
    rate_limit: Callable[[], int] | None = None

    def announce(self, kind: str, **data: object) -> None:
        events.announce(self.listeners, Event(kind, self.uploader.name, self.clock(), data))


def _run_locked(context: _Context, trigger: str, scanned: ScanResult) -> SessionResult:
    uploader, ledger, clock = context.uploader, context.ledger, context.clock
    queue: dict[str, QueuedFile] = {queued.path: queued for queued in scanned.files}
    result = SessionResult(
        uploader.name, EXIT_OK, "", queued_files=len(queue), queued_bytes=scanned.distribution.total_bytes
    )
    for path in [path for path in queue if not _decodable(path)]:
        # rclone would send the raw bytes, which no provider stores as they are (the WebDAV
        # server drops the connection; Drive's API takes UTF-8 only), and its log would
        # name the file with U+FFFD in place of them. The user must rename it.
        del queue[path]
        result.leave("undecodable_name", path)
        logger.warning(
            "%s: %s: the name is not UTF-8; rename it to upload it", uploader.name, display_path(path)
        )
    for path in _colliding(context, queue):
        del queue[path]
        result.leave("name_collision", path)
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
    moved: list[str] = []  # paths uploaded, so gone from the source in move mode
    while queue and not context.stop_event.is_set():
        reports = reports_now(ledger, uploader, clock())
        _retry_changed_keys(context)
        plan = plan_uploads(list(queue.values()), _planner_states(context, reports), plan_settings(uploader))
        if not plan.stages:
            break
        stage = plan.stages[0]
        key_problem = _key_problem(_account(uploader, stage.account))
        if key_problem is not None:
            _mark_broken(context, result, stage.account, key_problem)
            continue
        if previous is not None and previous[0] != stage.account:
            ledger.increment(uploader.name, "rotations", label=_ROTATION_REASONS.get(previous[1], "other"))
        account_index = [report.name for report in reports].index(stage.account)
        accounts_used.add(stage.account)
        outcome = _run_one_stage(context, result, stage, account_index, len(reports))
        moved.extend(outcome.uploaded)
        previous = (stage.account, outcome.outcome)
        _settle(queue, stage, outcome, result, context)
        if outcome.outcome == "broken":
            _mark_broken(context, result, stage.account, outcome.refused_message or outcome.message)
        elif (outcome.outcome in ("completed", "limit") or outcome.uploaded) and ledger.clear_broken(
            stage.account
        ):
            logger.info("%s: account %s works again", uploader.name, stage.account)
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
    final_reports = reports_now(ledger, uploader, clock())
    _leave_queue(context, result, queue, final_reports, interrupted=interrupted, fatal=bool(fatal_message))
    _conclude_session(result, queue, uploader, interrupted=interrupted, fatal_message=fatal_message)
    if uploader.mode == "move" and uploader.remove_empty_dirs and moved:
        result.removed_folders = len(remove_emptied_folders(uploader.source, moved))
    result.accounts = [report.to_dict() for report in final_reports]
    ledger.record_files_left(result.session_id, result.files_left_counts())
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
        files_left={reason: count for reason, count in result.files_left_counts().items() if count},
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
        source=uploader.remote_source or uploader.source,
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
        rate_limit=context.rate_limit if uploader.throttle else None,
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


def _settle(
    queue: dict[str, QueuedFile], stage: Stage, outcome: StageResult, result: SessionResult, context: _Context
) -> None:
    """
    Take the stage's files out of the queue, except those refused by the
    limit or by the account's credentials, or never started because of
    either: they go to the next account. Anything else is done for this
    session: uploaded, or left with its reason.
    """
    for queued in stage.files:
        path = queued.path
        untouched = path not in outcome.uploaded and path not in outcome.failed
        if path in outcome.limit_failed or (untouched and outcome.outcome == "limit"):
            continue
        if path in outcome.refused or (untouched and outcome.outcome == "broken"):
            continue
        queue.pop(path, None)
        if path in outcome.uploaded:
            continue
        if path in outcome.failed:
            result.leave(failure_reason(outcome.failed[path]), path)
        elif path in outcome.deleted:
            # move: the destination already held it, so rclone only removed the source copy.
            result.skipped_files += 1
        elif outcome.outcome == "stalled":
            result.failed_files += 1
            result.leave("stalled", path)
        elif outcome.outcome == "interrupted":
            result.leave("interrupted", path)
        elif outcome.outcome == "fatal":
            result.leave("failed", path)
        elif not os.path.lexists(context.uploader.source / path):
            result.leave("vanished", path)
        elif context.uploader.mode == "copy":
            # rclone had nothing to do: the same file is at the destination already.
            result.skipped_files += 1
        else:
            # move leaves nothing in the source it handled: rclone silently passed this one by.
            result.leave("not_transferred", path)
            logger.warning("%s: %s: rclone neither uploaded it nor said why", context.uploader.name, path)


def _leave_queue(
    context: _Context,
    result: SessionResult,
    queue: dict[str, QueuedFile],
    reports: Sequence[AccountReport],
    *,
    interrupted: bool,
    fatal: bool,
) -> None:
    """Give every file still queued at the end its reason: why no account took it."""
    uploader = context.uploader
    if interrupted or fatal:
        for path in queue:
            result.leave("interrupted" if interrupted else "failed", path)
        return
    whole_account_bytes = uploader.quota.per_account_bytes - uploader.quota.reserve_bytes
    # Which files an account broken in this session would have taken: plan as if it worked.
    plan = None
    if context.broken:
        # The broken accounts' own blocks (a limit hit earlier) still hold.
        usable = [report.to_state() for report in reports]
        plan = plan_uploads(list(queue.values()), usable, plan_settings(uploader))
    for_broken = {queued.path for stage in plan.stages for queued in stage.files} if plan else set()
    for path, queued in queue.items():
        if not uploader.quota.overshoot and queued.size > whole_account_bytes:
            result.leave("too_large", path)
        elif path in for_broken:
            result.leave("broken_account", path)
        else:
            result.leave("quota", path)


def _conclude_session(
    result: SessionResult,
    queue: dict[str, QueuedFile],
    uploader: Uploader,
    *,
    interrupted: bool,
    fatal_message: str | None,
) -> None:
    """Set the session's exit code and message from what is left and what went wrong."""
    result.left_files = sum(len(paths) for paths in result.files_left.values())
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
    failures = sum(
        len(paths) for reason, paths in result.files_left.items() if reason not in events.WAITING_REASONS
    )
    if interrupted:
        result.exit_code, result.message = EXIT_FAILURES, "interrupted; files not uploaded stay in the source"
    elif fatal_message:
        result.exit_code, result.message = EXIT_FAILURES, f"stopped: {fatal_message}"
    elif result.failed_files or failures:
        result.exit_code = EXIT_FAILURES
        reasons = ", ".join(
            f"{len(result.files_left[reason])} {reason.replace('_', ' ')}"
            for reason in events.FILES_LEFT_REASONS
            if reason not in events.WAITING_REASONS and result.files_left.get(reason)
        )
        result.message = f"{failures or result.failed_files} file(s) not uploaded ({reasons})"
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
            result.message += f", {result.skipped_files} already at the destination"


# Why a session left an account for the next one, by the outcome of its last stage there.
_ROTATION_REASONS = {
    "completed": "filled",
    "limit": "limit",
    "stalled": "stalled",
    "failed": "errors",
    "broken": "broken",
}


def _colliding(context: _Context, queue: dict[str, QueuedFile]) -> list[str]:
    """
    Return the queued paths the destination could not keep apart from another
    queued path. rclone compares names byte for byte (--no-unicode-normalization),
    so NFC and NFD spellings, or names that differ only in case, are two files
    wherever the destination is case-sensitive. A case-insensitive destination
    (or one rclone cannot describe) would make one file of them, and a later
    run would overwrite one with the other: every name of such a group is left.
    """
    groups: dict[str, list[str]] = {}
    for path in queue:
        groups.setdefault(unicodedata.normalize("NFC", path).casefold(), []).append(path)
    colliding = [path for group in groups.values() if len(group) > 1 for path in group]
    if not colliding:
        return []
    first = next(iter(context.env_by_account.values()), {})
    try:
        insensitive = command.case_insensitive(
            context.binary,
            destination=context.uploader.destination,
            config_path=context.config.rclone_config,
            env=first,
            secrets=context.secrets,
        )
    except execute.RcloneError as error:
        logger.warning(
            "%s: cannot tell whether the destination is case-insensitive: %s", context.uploader.name, error
        )
        insensitive = True
    if not insensitive:
        return []
    for path in colliding:
        logger.warning(
            "%s: %s: the case-insensitive destination cannot keep it apart from a name that differs"
            " only in case or Unicode normalization; rename one",
            context.uploader.name,
            display_path(path),
        )
    return colliding


def _decodable(path: str) -> bool:
    """Whether a scanned path is valid UTF-8 (os.fsdecode keeps undecodable bytes as surrogates)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display_path(path: str) -> str:
    """Given a scanned path, return it printable: bytes that are not UTF-8 as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def bind_identities(ledger: Ledger, uploader: Uploader) -> None:
    """Keep each service account's usage under its current name, found by its key's client_email."""
    identities = {account.name: account.identity for account in uploader.accounts if account.identity}
    for old, new in ledger.bind_identities(identities):
        logger.info(
            "%s: account %s is now %s (same client_email): its usage goes with it", uploader.name, old, new
        )


def _account(uploader: Uploader, name: str) -> Account:
    return next(account for account in uploader.accounts if account.name == name)


def _key_fingerprint(account: Account) -> str | None:
    """Return a digest of the account's key file (None: no key file, or it cannot be read)."""
    if account.service_account_file is None:
        return None
    try:
        return hashlib.sha256(account.service_account_file.read_bytes()).hexdigest()
    except OSError:
        return None


def _key_problem(account: Account) -> str | None:
    """Given an account, return why its service-account key cannot be used now, or None."""
    key_file = account.service_account_file
    if key_file is None:
        return None
    try:
        key_file.read_bytes()
    except OSError as error:
        return f"service-account key {key_file} cannot be read ({error.strerror or error})"
    if service_account_identity(key_file) is None:
        return f"service-account key {key_file} is not a key with a client_email"
    return None


def _retry_changed_keys(context: _Context) -> None:
    """Give an account broken in this session another try once its key file has changed."""
    for name, fingerprint in list(context.broken.items()):
        account = _account(context.uploader, name)
        current = _key_fingerprint(account)
        if account.service_account_file is not None and current is not None and current != fingerprint:
            del context.broken[name]
            logger.info("%s: the key of account %s changed; trying it again", context.uploader.name, name)


def _planner_states(context: _Context, reports: Sequence[AccountReport]) -> list:
    """The accounts as the planner sees them: one broken in this session is out of rotation."""
    return [
        dataclasses.replace(report.to_state(), blocked=True)
        if report.name in context.broken
        else report.to_state()
        for report in reports
    ]


def _mark_broken(context: _Context, result: SessionResult, account: str, message: str) -> None:
    """Take an account whose credentials were refused out of this session and record it."""
    context.broken[account] = _key_fingerprint(_account(context.uploader, account))
    if account not in result.broken_accounts:
        result.broken_accounts.append(account)
    message = execute.masked([message], context.secrets)
    context.ledger.mark_broken(account, uploader=context.uploader.name, now=context.clock(), message=message)
    logger.warning(
        "%s: account %s is broken, its credentials were refused: %s; going on without it",
        context.uploader.name,
        account,
        message,
    )
    context.announce(events.ACCOUNT_BROKEN, account=account, message=message)


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
