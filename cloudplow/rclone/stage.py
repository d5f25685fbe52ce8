"""Running one stage: one rclone process uploading one explicit file list through one account.

While rclone runs, two things watch it:
- a reader thread parses its JSON log (`--use-json-log`) line by line and
  reports every file the moment it is copied, deleted from the source or
  failed, so the ledger is right even if cloudplow dies mid-stage;
- the calling thread polls `core/stats` (with its group) for live progress,
  and stops rclone when a file fails with the provider's limit message
  (outside Google Drive rclone keeps going and every further upload would
  be refused or wasted), when no byte moves for `stall_timeout`, or when
  asked to stop.
Then the exit code is read together with the error text (see exitcodes.py).
After a stop (on request or at the limit), the files rclone was still sending
are looked up at the destination: an upload the provider completed just
before rclone was stopped, and so never logged, still counts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import requests

from cloudplow.rclone import execute
from cloudplow.rclone.command import present_sizes, upload_command
from cloudplow.rclone.errors import credentials_refused
from cloudplow.rclone.exitcodes import ExitKind, classify_exit
from cloudplow.rclone.rc import RcClient, free_port, new_credentials
from cloudplow.units import format_size

logger = logging.getLogger(__name__)

_PORT_IN_USE = re.compile(r"address already in use|failed to start remote control", re.IGNORECASE)


@dataclass(frozen=True)
class StageRequest:
    binary: str
    mode: str  # move | copy
    source: Path | str  # a local folder, or remote:path for syncers and movers
    destination: str
    paths: tuple[str, ...]  # relative to source
    transfers: int
    env: Mapping[str, str]
    config_path: Path | None
    drive: bool
    user_flags: tuple[str, ...]
    limit_patterns: tuple[re.Pattern[str], ...]
    stall_timeout_seconds: float
    work_dir: Path  # where the file list is written
    secrets: tuple[str, ...] = ()  # values to mask in anything kept or logged
    poll_interval_seconds: float = 1.0
    # Bytes per second wanted now (0: unlimited), asked at every poll and set through the RC
    # when it changes; None: never limited (the media-server throttle, integrations/throttle.py).
    rate_limit: Callable[[], int] | None = None


@dataclass(frozen=True)
class FileEvent:
    kind: str  # uploaded | failed | deleted
    path: str
    size: int | None = None
    started_at: float | None = None
    error: str | None = None
    limit: bool = False  # failed with the provider's limit message
    sent_bytes: int = 0  # of a failed upload: what rclone had sent at its last poll


class StageListener(Protocol):
    def on_file(self, event: FileEvent) -> None: ...
    def on_progress(self, stats: dict) -> None: ...


@dataclass
class StageResult:
    outcome: str  # completed | failed | limit | fatal | stalled | interrupted | broken
    exit_code: int | None
    message: str
    uploaded: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # path -> error (not limit)
    limit_failed: set[str] = field(default_factory=set)  # refused or aborted by the limit
    deleted: set[str] = field(default_factory=set)  # removed from the source (move)
    limit_message: str | None = None
    # The account's credentials were refused (outcome "broken"): these files failed with it,
    # neither uploaded nor failed for themselves; they go to the next account.
    refused: set[str] = field(default_factory=set)
    refused_message: str | None = None

    @property
    def uploaded_bytes(self) -> int:
        return sum(self.uploaded.values())


class _LogWatcher:
    """Parses rclone's JSON log on its own thread and keeps the stage's per-file results."""

    def __init__(self, request: StageRequest, listener: StageListener):
        self.request = request
        self.listener = listener
        self.lock = threading.Lock()
        self.result = StageResult(outcome="completed", exit_code=None, message="")
        self.limit_seen = threading.Event()
        self.refused_seen = threading.Event()
        self.error_lines: deque[str] = deque(maxlen=20)
        self.started_at: dict[str, float] = {}
        self.sizes: dict[str, int] = {}  # files seen transferring -> their size
        self.sent_bytes: dict[str, int] = {}  # files seen transferring -> bytes sent at the last poll

    def mask(self, text: str) -> str:
        return execute.masked([text], self.request.secrets)

    def is_limit(self, text: str) -> bool:
        return any(pattern.search(text) for pattern in self.request.limit_patterns)

    def follow(self, stream: IO[bytes]) -> None:
        for raw_line in stream:
            line = raw_line.decode("utf-8", errors="replace").strip()
            if line:
                try:
                    self.handle(line)
                except Exception:  # a listener failure must not kill the reader: rclone would block
                    logger.exception("while handling rclone output")

    def handle(self, line: str) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            # rclone prints usage errors and panics before its JSON logger starts.
            self.error_lines.append(self.mask(line))
            if self.is_limit(line):
                self.note_limit(self.mask(line))
            return
        level = str(record.get("level", ""))
        message = self.mask(str(record.get("msg", "")))
        path = record.get("object")
        if isinstance(path, str) and message.startswith(("Copied", "Moved")):
            size = record.get("size")
            size = int(size) if isinstance(size, int | float) else None
            with self.lock:
                self.result.uploaded[path] = size if size is not None else 0
                self.result.failed.pop(path, None)
                self.result.limit_failed.discard(path)
            self.listener.on_file(
                FileEvent("uploaded", path, size=size, started_at=self.started_at.get(path))
            )
        elif isinstance(path, str) and message == "Deleted":
            with self.lock:
                self.result.deleted.add(path)
            self.listener.on_file(FileEvent("deleted", path))
        elif level in ("error", "critical", "fatal", "emergency", "alert"):
            self.error_lines.append(f"{path}: {message}" if isinstance(path, str) else message)
            limit = self.is_limit(message)
            if limit:
                self.note_limit(message)
            elif credentials_refused(message, self.request.limit_patterns):
                with self.lock:
                    if self.result.refused_message is None:
                        self.result.refused_message = message
                    if isinstance(path, str):
                        self.result.refused.add(path)
                self.refused_seen.set()
                return
            if isinstance(path, str):
                with self.lock:
                    # `rclone move` follows "Failed to copy" with "Not deleting source as
                    # copy failed" for the same file: one failure, reported once.
                    already_reported = path in self.result.limit_failed or path in self.result.failed
                    if limit:
                        self.result.limit_failed.add(path)
                    else:
                        self.result.failed.setdefault(path, message)
                if already_reported:
                    return
                self.listener.on_file(
                    FileEvent(
                        "failed",
                        path,
                        error=message,
                        limit=limit,
                        started_at=self.started_at.get(path),
                        sent_bytes=self.sent_bytes.get(path, 0),
                    )
                )

    def note_limit(self, message: str) -> None:
        with self.lock:
            if self.result.limit_message is None:
                self.result.limit_message = message
        self.limit_seen.set()

    def note_transferring(self, stats: dict, now: float) -> None:
        for transfer in stats.get("transferring") or ():
            name = transfer.get("name")
            if isinstance(name, str):
                self.started_at.setdefault(name, now)
                self.sent_bytes[name] = int(transfer.get("bytes") or 0)
                if isinstance(transfer.get("size"), int):
                    self.sizes[name] = transfer["size"]

    def settle_cut_off(self, request: StageRequest) -> None:
        """
        After rclone was stopped, look at the destination for the files it was
        still transferring: one whose upload the provider completed before rclone
        could log it is there whole, and counts against the account's quota.
        Report those as uploaded.
        """
        with self.lock:
            settled = set(self.result.uploaded) | set(self.result.failed) | self.result.limit_failed
        cut_off = {path: size for path, size in self.sizes.items() if path not in settled}
        if not cut_off:
            return
        files_from = request.work_dir / "cut-off.txt"
        files_from.write_bytes(b"".join(os.fsencode(path) + b"\n" for path in cut_off))
        try:
            present = present_sizes(
                request.binary,
                destination=request.destination,
                files_from=files_from,
                config_path=request.config_path,
                env=request.env,
                secrets=request.secrets,
            )
        except execute.RcloneError as error:
            logger.warning("could not check the destination for uploads cut off by the stop: %s", error)
            return
        for path, size in cut_off.items():
            if present.get(path) == size:
                logger.info("%s: found whole at the destination after rclone stopped", path)
                with self.lock:
                    self.result.uploaded[path] = size
                self.listener.on_file(
                    FileEvent("uploaded", path, size=size, started_at=self.started_at.get(path))
                )


class _RateFollower:
    """Keeps rclone's bandwidth limit where `request.rate_limit` wants it; its failure changes nothing."""

    def __init__(self, request: StageRequest):
        self.rate_limit = request.rate_limit
        if self.rate_limit is not None and any(
            flag == "--bwlimit" or flag.startswith("--bwlimit=") for flag in request.user_flags
        ):
            logger.info("rclone_flags set --bwlimit: the media-server throttle leaves this stage alone")
            self.rate_limit = None
        self.applied = 0

    def wanted(self) -> int | None:
        if self.rate_limit is None:
            return None
        try:
            return max(0, int(self.rate_limit()))
        except Exception:
            logger.exception("the upload rate could not be read; keeping rclone's")
            return None

    def start_flags(self) -> tuple[str, ...]:
        """The flags that start rclone at the rate wanted now."""
        wanted = self.wanted() or 0
        self.applied = wanted
        return ("--bwlimit", f"{wanted}B") if wanted else ()

    def follow(self, rc_client: RcClient) -> None:
        wanted = self.wanted()
        if wanted is None or wanted == self.applied:
            return
        try:
            rc_client.call("core/bwlimit", rate=f"{wanted}B" if wanted else "off")
        except (requests.RequestException, ValueError):
            return  # rclone not up yet, or going down: tried again at the next poll
        logger.info("upload rate now %s", f"{format_size(wanted)}/s" if wanted else "unlimited")
        self.applied = wanted


def run_stage(
    request: StageRequest,
    listener: StageListener,
    stop_event: threading.Event,
    clock: Callable[[], float] = time.time,
) -> StageResult:
    """
    Given a stage, run rclone on it until it ends, reporting files and progress
    to `listener` as they happen; return the stage's result. Stop rclone early
    when the limit is seen, when it stalls or when `stop_event` is set.
    """
    request.work_dir.mkdir(parents=True, exist_ok=True)
    files_from = request.work_dir / "files-from.txt"
    # fsencode: names that are not UTF-8 reach rclone as the bytes they are on disk.
    files_from.write_bytes(b"".join(os.fsencode(path) + b"\n" for path in request.paths))
    for _attempt in range(3):
        result = _run_once(request, listener, stop_event, clock, files_from)
        if result is not None:
            return result
        logger.info("the RC port was taken; starting rclone again on another port")
    return StageResult(
        outcome="fatal", exit_code=None, message="rclone could not start its remote control on 127.0.0.1"
    )


def _run_once(
    request: StageRequest,
    listener: StageListener,
    stop_event: threading.Event,
    clock: Callable[[], float],
    files_from: Path,
) -> StageResult | None:
    rc_user, rc_password = new_credentials()
    rc_port = free_port()
    rate = _RateFollower(request)
    argv = upload_command(
        request.binary,
        mode=request.mode,
        source=request.source,
        destination=request.destination,
        files_from=files_from,
        transfers=request.transfers,
        rc_port=rc_port,
        config_path=request.config_path,
        drive=request.drive,
        user_flags=(*request.user_flags, *rate.start_flags()),
    )
    env = {**request.env, "RCLONE_RC_USER": rc_user, "RCLONE_RC_PASS": rc_password}
    watcher = _LogWatcher(request, listener)
    process = execute.start(argv, env=env, secrets=(*request.secrets, rc_password))
    assert process.stderr is not None
    reader = threading.Thread(target=watcher.follow, args=(process.stderr,), daemon=True, name="rclone-log")
    reader.start()
    rc_client = RcClient(rc_port, rc_user, rc_password)
    stopped_for: str | None = None
    progress_signature: tuple = ()
    last_progress_at = clock()
    next_poll_at = 0.0
    try:
        while process.poll() is None:
            if watcher.limit_seen.wait(0.1):
                stopped_for = "limit"
            elif watcher.refused_seen.is_set():
                stopped_for = "broken"
            elif stop_event.is_set():
                stopped_for = "interrupted"
            if stopped_for:
                # What is in flight now is what the stop may cut off between the
                # provider's "done" and rclone's log line.
                stats = _poll(rc_client)
                if stats is not None:
                    watcher.note_transferring(stats, clock())
                execute.stop(process)
                break
            now = clock()
            if now >= next_poll_at:
                next_poll_at = now + request.poll_interval_seconds
                stats = _poll(rc_client)
                if stats is not None:
                    watcher.note_transferring(stats, now)
                    listener.on_progress(stats)
                    rate.follow(rc_client)
                    signature = tuple(
                        stats.get(key, 0) for key in ("bytes", "checks", "transfers", "deletes", "errors")
                    )
                    if signature != progress_signature:
                        progress_signature, last_progress_at = signature, now
            if now - last_progress_at > request.stall_timeout_seconds:
                stopped_for = "stalled"
                execute.stop(process)
                break
    finally:
        if process.poll() is None:
            execute.stop(process)
        reader.join(timeout=30)
        rc_client.close()
    exit_code = process.returncode
    result = watcher.result
    result.exit_code = exit_code
    last_error = watcher.error_lines[-1] if watcher.error_lines else ""
    if (
        stopped_for is None
        and exit_code != 0
        and not result.uploaded
        and any(_PORT_IN_USE.search(line) for line in watcher.error_lines)
    ):
        return None
    if stopped_for is None and watcher.limit_seen.is_set():
        stopped_for = "limit"
    if stopped_for is None and watcher.refused_seen.is_set() and not result.failed:
        stopped_for = "broken"
    if stopped_for in ("interrupted", "limit"):
        # A stalled stage moved nothing for stall_timeout: no upload can be cut off there.
        watcher.settle_cut_off(request)
    result.outcome, result.message = _conclude(
        stopped_for, exit_code, result, last_error, request.stall_timeout_seconds
    )
    return result


def _poll(rc_client: RcClient) -> dict | None:
    try:
        return rc_client.stats()
    except (requests.RequestException, ValueError):
        return None  # not up yet, or already going down


def _conclude(
    stopped_for: str | None,
    exit_code: int,
    result: StageResult,
    last_error: str,
    stall_timeout_seconds: float,
) -> tuple[str, str]:
    """Given why the stage ended and rclone's exit code, return (outcome, one-line message)."""
    if stopped_for == "limit":
        return "limit", f"the provider's limit was reached: {result.limit_message}"
    if stopped_for == "broken":
        return "broken", f"the account's credentials were refused: {result.refused_message}"
    if stopped_for == "stalled":
        return "stalled", f"no progress for {stall_timeout_seconds:.0f} s; rclone was stopped"
    if stopped_for == "interrupted":
        return "interrupted", "stopped on request"
    kind, meaning = classify_exit(exit_code)
    if exit_code in (130, 143):
        kind, meaning = ExitKind.SIGNAL, "ended by a signal"
    detail = f"rclone exited {exit_code} ({meaning})" + (f": {last_error}" if last_error else "")
    if kind in (ExitKind.OK, ExitKind.NOTHING, ExitKind.MAX_TRANSFER):
        return "completed", f"rclone exited {exit_code} ({meaning})"
    if kind is ExitKind.SIGNAL:
        return "interrupted", detail
    if kind in (ExitKind.ERRORS, ExitKind.RETRY, ExitKind.NOT_FOUND) and result.failed:
        return "failed", f"{len(result.failed)} file(s) failed; {detail}"
    return "fatal", detail
