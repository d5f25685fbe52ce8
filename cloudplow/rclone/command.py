"""Building rclone command lines and account environments (no process is started here)."""

from __future__ import annotations

import json
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
    source: Path,
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
        if backend == "drive":
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
