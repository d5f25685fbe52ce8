"""Syncers and movers: remote-to-remote jobs that run as upload sessions.

A syncer copies (or syncs) one remote to another through its own account
pool; a mover moves a staging remote server-side into the destination after
its uploader's session, charged to that uploader's pool because Google counts
server-side copies against the same daily quota. Neither is a copy of the
session: the configuration turns each into an Uploader whose source is a
remote (`Config.jobs`), this module lists that remote into a queue, and
`run_session` plans, runs, rotates and records it exactly as an upload, under
the job's own name in the ledger, the metrics and /status.

    list source (rclone lsjson) -> queue (minus what the destination has) -> run_session
    sync mode, after a complete copy: delete at the destination what the source lacks
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Sequence

from cloudplow.config import Config, Uploader
from cloudplow.events import Listener
from cloudplow.ledger import Ledger
from cloudplow.live import LiveState
from cloudplow.rclone import command, execute
from cloudplow.scan import QueuedFile, ScanResult, size_distribution
from cloudplow.session import (
    EXIT_FAILURES,
    EXIT_OK,
    AccountRuntime,
    SessionError,
    SessionResult,
    account_runtimes,
    run_session,
)

logger = logging.getLogger(__name__)


def _mtime(rclone_time: str) -> float:
    """Given a modification time as rclone lists it (RFC 3339), return Unix seconds (0 if unknown)."""
    try:
        return datetime.datetime.fromisoformat(rclone_time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def remote_queue(
    config: Config, job: Uploader, binary: str, runtimes: Sequence[AccountRuntime]
) -> tuple[ScanResult, set[str]]:
    """
    Given a job whose source is a remote, list it and return the queue of
    files to transfer, and the paths the destination holds that the source
    lacks. A copy leaves out files the destination already has with the same
    size and modification time (within a second), as rclone would skip them.
    Raise SessionError if a listing fails.
    """
    assert job.remote_source is not None
    secrets = tuple(value for runtime in runtimes for value in runtime.env.values() if value)
    # Listed through the first account: a mover's source is often the destination's remote.
    env = runtimes[0].env if runtimes else None
    try:
        source = command.list_files(
            binary, job.remote_source, config_path=config.rclone_config, env=env, secrets=secrets
        )
        present = (
            command.list_files(
                binary, job.destination, config_path=config.rclone_config, env=env, secrets=secrets
            )
            if job.mode == "copy"
            else {}
        )
    except execute.RcloneError as error:
        raise SessionError(f"{job.key_path}: cannot list the remotes: {error}") from error
    files = []
    for path, (size, modified) in sorted(source.items()):
        there = present.get(path)
        if there is not None and there[0] == size and abs(_mtime(there[1]) - _mtime(modified)) <= 1:
            continue
        files.append(QueuedFile(path, size, _mtime(modified)))
    scanned = ScanResult(
        files=tuple(files),
        distribution=size_distribution([queued.size for queued in files]),
        skipped_young=0,
        skipped_excluded=0,
        skipped_open=0,
        skipped_unreadable=0,
        oldest_mtime=min((queued.mtime for queued in files), default=None),
    )
    return scanned, set(present) - set(source)


def run_job(
    config: Config,
    name: str,
    ledger: Ledger,
    *,
    trigger: str = "manual",
    stop_event: threading.Event | None = None,
    binary: str | None = None,
    live: LiveState | None = None,
    listeners: Sequence[Listener] = (),
) -> SessionResult:
    """
    Given a syncer's or mover's name, run it now as one session and return its
    result (exit codes as for upload). A sync, once everything is copied, also
    deletes at the destination the files the source no longer has. Raise
    SessionError if it cannot start, UploaderBusy if it runs elsewhere.
    """
    job = config.jobs[name]
    try:
        binary = binary or execute.find_rclone(config.rclone_binary)
    except execute.RcloneError as error:
        raise SessionError(str(error)) from error
    runtimes, drive = account_runtimes(config, job, binary)
    scanned, extraneous = remote_queue(config, job, binary, runtimes)
    logger.info(
        "%s: %s -> %s: %d file(s) to transfer", name, job.remote_source, job.destination, len(scanned.files)
    )
    result = run_session(
        config,
        job,
        ledger,
        trigger=trigger,
        stop_event=stop_event,
        binary=binary,
        accounts=runtimes,
        drive=drive,
        live=live,
        scanned=scanned,
        listeners=listeners,
    )
    syncer = config.syncers.get(name)
    if syncer is not None and syncer.mode == "sync" and extraneous and result.exit_code == EXIT_OK:
        _delete_extraneous(config, job, binary, runtimes, sorted(extraneous), result)
    return result


def _delete_extraneous(
    config: Config,
    job: Uploader,
    binary: str,
    runtimes: Sequence[AccountRuntime],
    paths: list[str],
    result: SessionResult,
) -> None:
    """Delete at the destination what the source lacks (sync mode); a failure fails the result."""
    work_dir = config.state_dir / "work" / job.name
    work_dir.mkdir(parents=True, exist_ok=True)
    files_from = work_dir / "extraneous.txt"
    files_from.write_bytes(b"".join(path.encode("utf-8", "surrogateescape") + b"\n" for path in paths))
    try:
        command.delete_files(
            binary,
            job.destination,
            files_from=files_from,
            config_path=config.rclone_config,
            env=runtimes[0].env if runtimes else None,
            secrets=tuple(value for runtime in runtimes for value in runtime.env.values() if value),
        )
    except execute.RcloneError as error:
        result.exit_code = EXIT_FAILURES
        result.message += f"; deleting {len(paths)} file(s) the source lacks failed: {error}"
        logger.error("%s: %s", job.name, result.message)
        return
    finally:
        files_from.unlink(missing_ok=True)
    result.message += f"; deleted {len(paths)} file(s) at the destination that the source lacks"
    logger.info("%s: deleted %d file(s) at the destination that the source lacks", job.name, len(paths))


def movers_after(config: Config, uploader: str) -> list[str]:
    """Given an uploader's name, return the movers that follow its sessions."""
    return [mover.name for mover in config.movers.values() if mover.after == uploader]
