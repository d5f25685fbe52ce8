"""What an upload session announces as it goes, and how it reaches its listeners.

The session knows nothing of notifications, downloaders, throttling or the
terminal display: it is handed a short list of listeners and tells each one
what happens. A listener that raises is logged and ignored, so no peer can
stop an upload.

Kinds and the `data` each carries (sizes in bytes, times in Unix seconds):

    session_started  session_id, trigger, queue_files, queue_bytes, accounts
    stage_started    session_id, stage, account, account_index, files, bytes, transfers, overshoot
    file_done        stage, account, path, size, outcome (uploaded | failed | limit)
    progress         stage, account, stats (rclone's core/stats)
    stage_ended      session_id, stage, account, outcome, uploaded_files, uploaded_bytes, message
    account_blocked  account, until, used_bytes, message
    account_broken   account, message
    session_ended    session_id, exit_code, state, message, uploaded_files, uploaded_bytes,
                     left_files, left_bytes, files_left (reason -> count), stages,
                     accounts_used, duration_seconds, frees_at (first account to free up, or None)
    session_failed   message (the session could not start or broke off with an error)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

logger = logging.getLogger(__name__)

SESSION_STARTED = "session_started"
STAGE_STARTED = "stage_started"
FILE_DONE = "file_done"
PROGRESS = "progress"
STAGE_ENDED = "stage_ended"
ACCOUNT_BLOCKED = "account_blocked"
ACCOUNT_BROKEN = "account_broken"
SESSION_ENDED = "session_ended"
SESSION_FAILED = "session_failed"

# Why a session left a file (SessionResult.files_left, session_ended's files_left,
# cloudplow_files_left): only "quota" and "too_large" wait for quota; every other is a failure.
FILES_LEFT_REASONS = (
    "quota",  # no account has room for it in this window
    "too_large",  # larger than a whole account's quota (quota.overshoot is off)
    "broken_account",  # only an account whose credentials were refused had room for it
    "undecodable_name",  # its name is not UTF-8: no provider can store it as it is
    "name_collision",  # the destination cannot keep it apart from another name
    "vanished",  # gone from the source before rclone read it
    "changed",  # changed while it was being uploaded
    "not_transferred",  # rclone neither uploaded it nor said why
    "failed",  # rclone reported an error for it, or the stage broke off before it
    "stalled",  # its stage moved no byte for stall_timeout
    "interrupted",  # the session was stopped before it was uploaded
)
WAITING_REASONS = frozenset({"quota", "too_large"})


@dataclass(frozen=True)
class Event:
    kind: str
    uploader: str
    at: float
    data: Mapping[str, object] = field(default_factory=dict)


class Listener(Protocol):
    def on_event(self, event: Event) -> None: ...


def announce(listeners: Sequence[Listener], event: Event) -> None:
    """Given listeners and an event, tell each one; a listener's failure is logged, never raised."""
    for listener in listeners:
        try:
            listener.on_event(event)
        except Exception:
            logger.exception("%s: a listener failed on %s", event.uploader, event.kind)
