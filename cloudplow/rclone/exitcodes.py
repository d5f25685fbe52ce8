"""rclone's exit codes, in one table, and what each means for a session."""

from __future__ import annotations

import enum


class ExitKind(enum.Enum):
    OK = "ok"
    ERRORS = "errors"  # some transfers failed; read the per-file errors
    NOT_FOUND = "not_found"
    RETRY = "retry"
    FATAL = "fatal"  # read the error text: a quota limit, a full drive, max-duration
    MAX_TRANSFER = "max_transfer"  # a rotation signal, not an error
    NOTHING = "nothing"
    SIGNAL = "signal"  # ended by a signal (cloudplow stopping it, or the system)
    UNKNOWN = "unknown"


# code: (kind, rclone's meaning)
EXIT_CODES: dict[int, tuple[ExitKind, str]] = {
    0: (ExitKind.OK, "success"),
    1: (ExitKind.ERRORS, "usage error or uncategorised transfer errors"),
    2: (ExitKind.ERRORS, "uncategorised error"),
    3: (ExitKind.NOT_FOUND, "directory not found"),
    4: (ExitKind.NOT_FOUND, "file not found"),
    5: (ExitKind.RETRY, "temporary error (retries exhausted)"),
    6: (ExitKind.ERRORS, "less serious errors (no retry)"),
    7: (ExitKind.FATAL, "fatal error (upload limit, full drive or another fatal error)"),
    8: (ExitKind.MAX_TRANSFER, "--max-transfer reached"),
    9: (ExitKind.NOTHING, "operation successful, but no files transferred"),
    10: (ExitKind.FATAL, "--max-duration reached"),
}


def classify_exit(code: int) -> tuple[ExitKind, str]:
    """Given rclone's exit code (negative: killed by that signal), return its kind and meaning."""
    if code < 0:
        return ExitKind.SIGNAL, f"ended by signal {-code}"
    return EXIT_CODES.get(code, (ExitKind.UNKNOWN, f"unknown exit code {code}"))
