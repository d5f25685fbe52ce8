"""Building rclone command lines and account environments (no process is started here)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from cloudplow.rclone import execute

# Backends that wrap other remotes, and the option naming what they wrap.
_WRAPPER_OPTIONS = {
    "crypt": ("remote",),
    "chunker": ("remote",),
    "compress": ("remote",),
    "hasher": ("remote",),
    "alias": ("remote",),
    "cache": ("remote",),
    "union": ("upstreams",),
    "combine": ("upstreams",),
}

STATS_GROUP = "global_stats"  # the group rclone's command-line transfers report under


def upload_command(
    binary: str,
    *,
    mode: str,
    source: Path | str,
    destination: str,
    files_from: Path,
    transfers: int,
    rc_port: int,
    config_path: Path | None,
    drive: bool,
    user_flags: Sequence[str],
) -> tuple[str, ...]:
    """
    Given one stage's settings, return the rclone command that uploads exactly
    the files listed in `files_from` (one path a line, relative to `source`).
    The RC credentials are not in it: they travel as RCLONE_RC_USER/PASS in the
    environment, out of sight of `ps`.
    """
    argv = [
        binary,
        mode,
        str(source),
        destination,
        "--files-from-raw",
        str(files_from),
        "--transfers",
        str(transfers),
        "--use-json-log",
        "--verbose",
        "--stats",
        "0",
        "--rc",
        "--rc-addr",
        f"127.0.0.1:{rc_port}",
        # Compare names byte for byte: by default rclone folds NFC and NFD spellings of a name
        # into one, skips the second file as a "duplicate" and, on the next run, matches one
        # to the other's object at the destination and overwrites it.
        "--no-unicode-normalization",
    ]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    if drive:
        argv.append("--drive-stop-on-upload-limit")
    argv += list(user_flags)
    return tuple(argv)


def present_sizes(
    binary: str,
    *,
    destination: str,
    files_from: Path,
    config_path: Path | None,
    env: Mapping[str, str],
    secrets: Sequence[str] = (),
    timeout_seconds: float = 20.0,
) -> dict[str, int]:
    """
    Given a list of paths relative to `destination` (one a line, as for an
    upload), return path -> size of those present there, listed through the
    account in `env`. Short network timeouts: it runs while cloudplow stops.
    Raise RcloneError if rclone cannot list them.
    """
    argv = [
        binary,
        "lsjson",
        destination,
        "--files-from-raw",
        str(files_from),
        "--recursive",
        "--files-only",
        "--no-modtime",
        "--no-mimetype",
        "--contimeout",
        "5s",
        "--timeout",
        "5s",
        "--retries",
        "1",
        "--low-level-retries",
        "1",
    ]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    try:
        entries = json.loads(execute.run(argv, env=env, secrets=secrets, timeout_seconds=timeout_seconds))
    except ValueError as error:
        raise execute.RcloneError(f"rclone lsjson printed no JSON list: {error}") from error
    if not isinstance(entries, list):
        raise execute.RcloneError("rclone lsjson printed no JSON list")
    return {
        entry["Path"]: entry["Size"]
        for entry in entries
        if isinstance(entry, dict)
        and isinstance(entry.get("Path"), str)
        and isinstance(entry.get("Size"), int)
    }


def remote_name(destination: str) -> str:
    """Given `remote:path`, return `remote`."""
    return destination.split(":", 1)[0]


def drive_remotes(config_dump: Mapping[str, Mapping[str, str]], remote: str) -> list[str]:
    """
    Given rclone's configuration (as `rclone config dump` prints it) and a
    remote name, return the Google Drive remotes it uploads through, following
    crypt, union, chunker and the other wrappers, in a stable order.
    """
    return backend_remotes(config_dump, remote, "drive")


# Options of a remote that carry who it is, not where it points: what an account remote lends.
_CREDENTIAL_OPTION_RE = re.compile(
    r"token|pass|secret|user|credential|client_id|bearer|auth|key|account|impersonate", re.IGNORECASE
)


def credential_env(
    config_dump: Mapping[str, Mapping[str, str]], targets: Sequence[str], account: str
) -> dict[str, str]:
    """
    Given rclone's configuration, the remotes an upload goes through and
    another remote of the same backend (a personal account), return the
    environment that gives the targets that remote's credentials: its token,
    user, password, client id and secret, key files, but not where it points
    (url, team_drive, root folder). Empty options are passed as they are.
    """
    section = config_dump.get(account, {})
    return {
        f"RCLONE_CONFIG_{target.upper().replace('-', '_')}_{option.upper()}": str(value)
        for target in targets
        for option, value in section.items()
        if option != "type" and _CREDENTIAL_OPTION_RE.search(option)
    }


def backend_remotes(
    config_dump: Mapping[str, Mapping[str, str]], remote: str, backend_type: str
) -> list[str]:
    """
    Given rclone's configuration, a remote name and a backend type, return the
    remotes of that type it writes through, following crypt, union, chunker
    and the other wrappers, in a stable order.
    """
    found: list[str] = []
    seen: set[str] = set()
    pending = [remote]
    while pending:
        name = pending.pop(0)
        if name in seen or name not in config_dump:
            continue
        seen.add(name)
        section = config_dump[name]
        backend = section.get("type", "")
        if backend == backend_type:
            found.append(name)
        for option in _WRAPPER_OPTIONS.get(backend, ()):
            for target in str(section.get(option, "")).split():
                if ":" in target:
                    pending.append(remote_name(target))
    return found


def service_account_env(drive_remote_names: Sequence[str], key_file: Path) -> dict[str, str]:
    """Given the drive remotes and one service account key file, return rclone's env overrides."""
    return {
        f"RCLONE_CONFIG_{name.upper()}_SERVICE_ACCOUNT_FILE": str(key_file) for name in drive_remote_names
    }


def config_dump(binary: str, config_path: Path | None) -> dict[str, dict[str, str]]:
    """Return rclone's configuration as a mapping of remote name to options."""
    argv = [binary, "config", "dump"]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    dumped = json.loads(execute.run(argv) or "{}")
    return dumped if isinstance(dumped, dict) else {}


def obscure(binary: str, password: str) -> str:
    """Return `password` in rclone's obscured form (for rclone.conf or RCLONE_CONFIG_*_PASS)."""
    return execute.run([binary, "obscure", "-"], input_text=password, secrets=[password]).strip()


def version(binary: str) -> str:
    """Return rclone's version, such as `v1.75.2`."""
    first_line = execute.run([binary, "version"]).splitlines()[0]
    return first_line.split()[-1]


def object_kind(
    binary: str, target: str, *, config_path: Path | None, env: Mapping[str, str] | None = None
) -> str | None:
    """
    Given `remote:path`, return "file" or "dir" for what is there, or None if
    nothing is. Raise RcloneError if rclone cannot tell (remote down, refused).
    """
    # A remote that is down fails in seconds: the marker just waits for the next run.
    argv = [binary, "lsjson", "--stat", "--no-modtime", "--no-mimetype", "--retries", "1"]
    argv += ["--low-level-retries", "2", "--contimeout", "15s", target]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    try:
        entry = json.loads(execute.run(argv, env=env, timeout_seconds=120))
    except execute.RcloneError as error:
        if _NOT_FOUND_RE.search(str(error)):
            return None
        raise
    except ValueError as error:
        raise execute.RcloneError(f"rclone lsjson --stat printed no JSON: {error}") from error
    return "dir" if isinstance(entry, dict) and entry.get("IsDir") else "file"


# rclone's words, and its exit codes 3 and 4, for a path that is not there.
_NOT_FOUND_RE = re.compile(r"not found|exited [34]:", re.IGNORECASE)


def delete(
    binary: str, target: str, *, kind: str, config_path: Path | None, env: Mapping[str, str] | None = None
) -> None:
    """
    Given `remote:path` and what it is, delete it: a file with deletefile, a
    folder with purge (everything in it). Raise RcloneError if rclone fails.
    """
    argv = [binary, "deletefile" if kind == "file" else "purge", target]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    execute.run(argv, env=env, timeout_seconds=600)


def list_files(
    binary: str,
    remote_path: str,
    *,
    config_path: Path | None,
    env: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
) -> dict[str, tuple[int, str]]:
    """
    Given `remote:path`, return every file under it as path -> (size, modification
    time as rclone prints it), paths relative to `remote_path`; an absent folder
    is empty. Raise RcloneError if rclone cannot list it.
    """
    argv = [binary, "lsjson", remote_path, "--recursive", "--files-only", "--no-mimetype"]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    try:
        entries = json.loads(execute.run(argv, env=env, secrets=secrets, timeout_seconds=3600) or "[]")
    except execute.RcloneError as error:
        if re.search(r"directory not found|exited 3:", str(error)):
            return {}
        raise
    except ValueError as error:
        raise execute.RcloneError(f"rclone lsjson printed no JSON list: {error}") from error
    return {
        entry["Path"]: (entry["Size"], str(entry.get("ModTime", "")))
        for entry in entries
        if isinstance(entry, dict)
        and isinstance(entry.get("Path"), str)
        and isinstance(entry.get("Size"), int)
        and entry["Size"] >= 0
    }


def delete_files(
    binary: str,
    remote_path: str,
    *,
    files_from: Path,
    config_path: Path | None,
    env: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
) -> None:
    """Given `remote:path` and paths under it (one a line in files_from), delete them. Raise RcloneError."""
    argv = [binary, "delete", remote_path, "--files-from-raw", str(files_from)]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    execute.run(argv, env=env, secrets=secrets, timeout_seconds=3600)


def case_insensitive(
    binary: str,
    *,
    destination: str,
    config_path: Path | None,
    env: Mapping[str, str],
    secrets: Sequence[str] = (),
) -> bool:
    """
    Given a destination and an account's environment, return whether rclone
    reports the destination as case-insensitive (`rclone backend features`):
    there, two names that differ only in case, or in Unicode normalization,
    would be one file. Raise RcloneError if rclone cannot tell.
    """
    argv = [binary, "backend", "features", destination]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    try:
        features = json.loads(execute.run(argv, env=env, secrets=secrets, timeout_seconds=30)).get("Features")
    except (ValueError, AttributeError) as error:
        raise execute.RcloneError(f"rclone backend features printed no JSON object: {error}") from error
    if not isinstance(features, dict) or not isinstance(features.get("CaseInsensitive"), bool):
        raise execute.RcloneError(
            "rclone backend features did not say whether the destination is case-insensitive"
        )
    return features["CaseInsensitive"]
