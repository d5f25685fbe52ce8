"""Migration from the old cloudplow: its config.json into config.yaml, its quota cache into the ledger.

`cloudplow migrate-config OLD.json` sits beside the other commands and before
everything else: it reads a config.json written for l3uddz/cloudplow (or the
staged fork skuid87/cloudplow), converts what has an equivalent, writes the
YAML file that `load_config` reads, and reports every key it could not carry
over and why. With `--quota-cache` it also records the fork's per-account usage
in the ledger, so the first session does not reuse accounts already spent.

What the conversion relies on (read from l3uddz/cloudplow's config.json.sample,
README.md, utils/config.py, utils/path.py, utils/rclone.py, cloudplow.py and
utils/notifications/*, and from skuid87/cloudplow's cloudplow.py,
config.json.sample and utils/dashboard_data.py):

- `uploader.X` names an entry of `remotes` ("the names have to match"); the
  pair is one uploader. `remotes.X.upload_folder` is the local folder,
  `upload_remote` the rclone destination, `rclone_command` move or copy
  (default move; the old code runs `move` when it says `sync`).
- `rclone_extras` become `--flag=value` arguments, a null value the bare flag.
  `rclone_excludes` become `--exclude` patterns.
- `uploader.X.check_interval` is in minutes. `max_size_gb` is compared with
  `du -s --block-size=1G`, so it counts GiB (2^30 bytes); uploading starts
  only when it is reached (no age or free-space trigger). `size_excludes` are
  `du --exclude` patterns left out of that count but still uploaded;
  `opened_excludes` are paths the open-file check ignores.
- `schedule` {enabled, allowed_from, allowed_until} in HH:MM bounds when
  automatic uploads start. `service_account_path` is a folder of *.json keys
  tried in turn. `can_be_throttled: false` exempts an uploader from Plex
  throttling. `mover` {enabled, move_from_remote, move_to_remote,
  rclone_extras} runs `rclone move` after each upload.
- `remove_empty_dir_depth` D runs `find UPLOAD_FOLDER -mindepth D -type d
  -empty -delete` after each upload.
- `rclone_sleeps` {phrase: {count, timeout, sleep}}: a phrase seen `count`
  times within `timeout` seconds aborts the upload and suspends the uploader
  for `sleep` hours.
- `plex`: {enabled, url, token, poll_interval (seconds),
  max_streams_before_throttle, ignore_local_streams, notifications,
  rclone: {url, throttle_speeds}}. Playing or buffering streams are counted;
  at `max_streams_before_throttle` or more the rate is the `throttle_speeds`
  entry for that count, else the nearest key (so counts past the last key
  take the last key's rate); below it uploads are not throttled. Rates are
  rclone `--bwlimit` values ("50M" = 50 MiB/s), which cloudplow's sizes read
  the same way.
- `nzbget` {enabled, url with user:pass@}; `sabnzbd` {enabled, url, apikey}
  (the fork): paused while uploading, resumed after.
- `notifications` {any name: {service, ...}}: `apprise` {url, title},
  `pushover` {app_token, user_token, priority -2..2}, `slack` {webhook_url,
  channel, sender_name, sender_icon}, and in the fork `googlechat`
  {webhook_url, thread_key}.
- `hidden` {unionfs folder: {hidden_remotes: [names of remotes]}}, each
  remote's `hidden_remote` being the remote path to delete on.
- `syncer` {name: {service local|scaleway, sync_from, sync_to (names of
  remotes whose `sync_remote` are the two ends), sync_interval (hours),
  use_copy (copy instead of sync), rclone_extras, tool_path,
  instance_destroy}}.
- The fork adds `dashboard` {enabled, host, port, refresh_interval, debug}
  and per uploader `chunked_upload` {enabled, chunk_size,
  generate_list_timeout}.
- The fork's sa_quota_cache.json is {uploader: {key file path: {bytes,
  reset_time, first_upload}}}: bytes uploaded through that key since
  first_upload, and reset_time = first_upload + 24 h, both seconds since the
  epoch. An entry whose reset_time has passed no longer counts.

Apprise URLs (from apprise's documentation): Pushover is
pover://USER_KEY@TOKEN[?priority=N], Slack is
slack://[BOTNAME@]TOKEN_A/TOKEN_B/TOKEN_C[/#CHANNEL] for a webhook
https://hooks.slack.com/services/TOKEN_A/TOKEN_B/TOKEN_C. Assumed, not
checked against apprise here: Google Chat is
gchat://WORKSPACE/KEY/TOKEN for
https://chat.googleapis.com/v1/spaces/WORKSPACE/messages?key=KEY&token=TOKEN.

Nothing here prints a value from the old file that could be a credential:
notes name keys and describe kinds of values only.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import sqlite3
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from cloudplow.config import Config, ConfigError, Uploader, load_config, schema
from cloudplow.ledger import Ledger
from cloudplow.units import format_size, parse_size

DEFAULT_WINDOW_SECONDS = 24 * 3600.0
# Old cloudplow started uploads on size alone; these keep the age and free-space triggers off.
NO_AGE_TRIGGER = "365d"


class MigrateError(Exception):
    """The old file or the quota cache cannot be used, or the output cannot be written: exit 2."""


@dataclass(frozen=True, slots=True)
class Note:
    """One key of the old file that was not carried over as it was, and why."""

    key: str  # dotted path in the old file, such as remotes.google.rclone_extras.--stats
    reason: str
    mapped: bool  # True: carried over with a change of meaning; False: not carried over


@dataclass(slots=True)
class Migration:
    """The new configuration as data, and every note about the conversion."""

    document: dict[str, Any]
    notes: list[Note] = field(default_factory=list)
    uploader_names: dict[str, str] = field(default_factory=dict)  # old uploader name -> new
    # Uploaders, movers and syncers share one ledger and metrics namespace: their names must differ.
    names_taken: set[str] = field(default_factory=set)

    def drop(self, key: str, reason: str) -> None:
        self.notes.append(Note(key, reason, mapped=False))

    def change(self, key: str, reason: str) -> None:
        self.notes.append(Note(key, reason, mapped=True))


@dataclass(frozen=True, slots=True)
class ImportedUsage:
    uploader: str
    account: str
    used_bytes: int
    frees_at: float


# --- reading ------------------------------------------------------------------


def read_json(path: Path, what: str) -> Any:
    """Given a path and what it is for people, return its JSON. Raise MigrateError in one line."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MigrateError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise MigrateError(f"{where}: is a folder, not {what}") from None
    except UnicodeDecodeError:
        raise MigrateError(f"{where}: not UTF-8 text") from None
    except OSError as error:
        raise MigrateError(f"{where}: cannot read ({error.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        # The message names the position only, never the text around it (it may hold tokens).
        raise MigrateError(
            f"{where}: not valid JSON ({error.msg}, line {error.lineno}, column {error.colno})"
        ) from None


def read_old_config(path: Path) -> dict[str, Any]:
    """Given the old config.json, return its top-level object. Raise MigrateError if it is not one."""
    document = read_json(path, "a cloudplow config.json")
    if not isinstance(document, dict):
        raise MigrateError(f"{path}: expected a JSON object of sections (core, remotes, uploader, ...)")
    return document


# --- converting ----------------------------------------------------------------

_KNOWN_TOP = (
    "core",
    "hidden",
    "notifications",
    "nzbget",
    "sabnzbd",
    "plex",
    "dashboard",
    "remotes",
    "syncer",
    "uploader",
)
_REMOTE_KEYS = (
    "hidden_remote",
    "rclone_excludes",
    "rclone_extras",
    "rclone_sleeps",
    "rclone_command",
    "remove_empty_dir_depth",
    "sync_remote",
    "upload_folder",
    "upload_remote",
)
_UPLOADER_KEYS = (
    "can_be_throttled",
    "check_interval",
    "exclude_open_files",
    "max_size_gb",
    "opened_excludes",
    "schedule",
    "size_excludes",
    "service_account_path",
    "mover",
    "chunked_upload",
)
_NAME_RE = re.compile(r"[^a-z0-9_-]+")


def convert(old: Mapping[str, Any]) -> Migration:
    """
    Given the old config.json as data, return the new configuration document
    and a note for every key not carried over as it was. Pure: reads no file.
    """
    migration = Migration(document={})
    for key in old:
        if key not in _KNOWN_TOP:
            migration.drop(str(key), "unknown section; cloudplow has no equivalent")
    remotes = _mapping(old, "remotes", migration)
    _convert_core(_mapping(old, "core", migration), migration)
    _convert_dashboard(_mapping(old, "dashboard", migration), migration)
    _convert_uploaders(_mapping(old, "uploader", migration), remotes, migration)
    _report_unused_remotes(remotes, old, migration)
    _convert_plex(_mapping(old, "plex", migration), migration)
    downloaders = [
        entry
        for entry in (
            _convert_sabnzbd(_mapping(old, "sabnzbd", migration), migration),
            _convert_nzbget(_mapping(old, "nzbget", migration), migration),
        )
        if entry is not None
    ]
    if downloaders:
        migration.document["downloaders"] = downloaders
    _convert_notifications(_mapping(old, "notifications", migration), migration)
    _convert_syncers(_mapping(old, "syncer", migration), remotes, migration)
    _convert_hidden(_mapping(old, "hidden", migration), remotes, migration)
    return migration


def _mapping(parent: Mapping[str, Any], key: str, migration: Migration, path: str = "") -> dict[str, Any]:
    """Return parent[key] if it is an object, {} if absent; note it if it is something else."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        migration.drop(_dotted(path, key), f"expected a JSON object, got {_kind(value)}; left out")
        return {}
    return value


def _dotted(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(value: object) -> str:
    """Given any value, return its kind only: safe for secrets."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text" if value else "empty text"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _unknown_keys(section: Mapping[str, Any], known: Sequence[str], path: str, migration: Migration) -> None:
    for key in section:
        if key not in known:
            migration.drop(_dotted(path, key), "unknown key; cloudplow has no equivalent")


def _text(section: Mapping[str, Any], key: str, path: str, migration: Migration) -> str | None:
    """Return a non-empty text value, None if absent or empty; note any other kind."""
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        migration.drop(_dotted(path, key), f"expected text, got {_kind(value)}; left out")
        return None
    return value


def _number(section: Mapping[str, Any], key: str, path: str, migration: Migration) -> float | None:
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        migration.drop(_dotted(path, key), f"expected a number, got {_kind(value)}; left out")
        return None
    return value


def _flag(section: Mapping[str, Any], key: str, path: str, migration: Migration) -> bool | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        migration.drop(_dotted(path, key), f"expected true or false, got {_kind(value)}; left out")
        return None
    return value


def new_name(old_name: str, taken: set[str]) -> str:
    """Given an old uploader, syncer or mover name, return a free name cloudplow accepts."""
    name = _NAME_RE.sub("-", old_name.lower()).strip("-") or "uploader"
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    taken.add(candidate)
    return candidate


def _convert_core(core: Mapping[str, Any], migration: Migration) -> None:
    _unknown_keys(core, ("dry_run", "rclone_binary_path", "rclone_config_path"), "core", migration)
    rclone: dict[str, Any] = {}
    binary = _text(core, "rclone_binary_path", "core", migration)
    if binary is not None:
        rclone["binary"] = binary
    config = _text(core, "rclone_config_path", "core", migration)
    if config is not None:
        rclone["config"] = config
    if rclone:
        migration.document["rclone"] = rclone
    if _flag(core, "dry_run", "core", migration):
        migration.drop(
            "core.dry_run",
            "true in the old file, and cloudplow has no such setting: it would upload for real. "
            "Use `cloudplow plan` or `cloudplow upload --dry-run` until you are ready",
        )


def _convert_dashboard(dashboard: Mapping[str, Any], migration: Migration) -> None:
    if not dashboard:
        return
    path = "dashboard"
    _unknown_keys(dashboard, ("enabled", "host", "port", "refresh_interval", "debug"), path, migration)
    for key in ("refresh_interval", "debug"):
        if key in dashboard:
            migration.drop(f"{path}.{key}", "the fork's dashboard is replaced by /status and Grafana")
    if not _flag(dashboard, "enabled", path, migration):
        migration.drop(path, "disabled in the old file: the server keeps its defaults (127.0.0.1:47949)")
        return
    server: dict[str, Any] = {}
    host = _text(dashboard, "host", path, migration)
    if host is not None:
        server["host"] = host
    port = _number(dashboard, "port", path, migration)
    if port is not None:
        if port == int(port) and 1 <= port <= 65535:
            server["port"] = int(port)
        else:
            migration.drop(f"{path}.port", "not a TCP port (1 to 65535); cloudplow's default is used")
    if server:
        migration.document["server"] = server
        exposed = host not in (None, "127.0.0.1", "::1", "localhost")
        migration.change(
            path,
            "server.host/port: they serve /metrics, /status and /healthz"
            + ("; this host is reachable from the network" if exposed else ""),
        )


def _convert_uploaders(
    uploaders: Mapping[str, Any], remotes: Mapping[str, Any], migration: Migration
) -> None:
    converted: dict[str, Any] = {}
    pending_movers: list[tuple[str, str, dict[str, str]]] = []
    taken = migration.names_taken
    for old_name, section in uploaders.items():
        path = f"uploader.{old_name}"
        if not isinstance(section, dict):
            migration.drop(path, f"expected a JSON object, got {_kind(section)}; left out")
            continue
        remote = remotes.get(old_name)
        if not isinstance(remote, dict):
            migration.drop(
                path, f"no remotes.{old_name} to join it with (old cloudplow requires one); left out"
            )
            continue
        name = new_name(old_name, taken)
        if name != old_name:
            migration.change(path, f"renamed to uploaders.{name} (names are a-z, 0-9, _ and -)")
        uploader = _convert_uploader(name, section, remote, path, f"remotes.{old_name}", migration)
        if uploader is None:
            continue
        migration.uploader_names[old_name] = name
        converted[name] = uploader
        mover = _convert_mover(name, _mapping(section, "mover", migration, path), f"{path}.mover", migration)
        if mover is not None:
            pending_movers.append((name, f"{path}.mover", mover))
    if converted:
        migration.document["uploaders"] = converted
    movers: dict[str, Any] = {}
    for uploader_name, mover_path, mover in pending_movers:
        # Named after its uploader, but not the same name: uploaders and movers share the ledger.
        mover_name = new_name(f"{uploader_name}-mover", taken)
        migration.change(mover_path, f"movers.{mover_name}, after uploader {uploader_name}")
        movers[mover_name] = mover
    if movers:
        migration.document["movers"] = movers


def _convert_uploader(
    name: str,
    section: Mapping[str, Any],
    remote: Mapping[str, Any],
    path: str,
    remote_path: str,
    migration: Migration,
) -> dict[str, Any] | None:
    """Given uploader.X and remotes.X, return the new uploader section, or None if it cannot be one."""
    _unknown_keys(section, _UPLOADER_KEYS, path, migration)
    _unknown_keys(remote, _REMOTE_KEYS, remote_path, migration)
    source = _text(remote, "upload_folder", remote_path, migration)
    destination = _text(remote, "upload_remote", remote_path, migration)
    if source is None or destination is None:
        missing = " and ".join(
            key for key, value in (("upload_folder", source), ("upload_remote", destination)) if value is None
        )
        migration.drop(path, f"{remote_path} has no {missing}; not an uploader")
        return None
    uploader: dict[str, Any] = {"source": source, "destination": destination}

    command = _text(remote, "rclone_command", remote_path, migration)
    if command is not None:
        command = command.lower()
        if command in ("move", "copy"):
            uploader["mode"] = command
        elif command == "sync":
            uploader["mode"] = "move"
            migration.change(
                f"{remote_path}.rclone_command",
                "sync: old cloudplow ran move for it, and so does this uploader",
            )
        else:
            migration.drop(f"{remote_path}.rclone_command", "neither move, copy nor sync; move is used")

    account_dir = _text(section, "service_account_path", path, migration)
    if account_dir is not None:
        uploader["accounts"] = {"dir": account_dir}

    check: dict[str, Any] = {}
    minutes = _number(section, "check_interval", path, migration)
    if minutes is not None:
        if minutes > 0:
            check["interval"] = f"{minutes:g}m" if minutes == int(minutes) else f"{round(minutes * 60)}s"
        else:
            migration.drop(f"{path}.check_interval", "must be more than zero; cloudplow's default is used")
    size_gib = _number(section, "max_size_gb", path, migration)
    if size_gib is not None:
        if size_gib >= 0:
            check["min_queue"] = f"{size_gib:g}GiB" if size_gib == int(size_gib) else int(size_gib * 2**30)
            check["max_age"] = NO_AGE_TRIGGER
            check["min_free"] = 0
            migration.change(
                f"{path}.max_size_gb",
                "check.min_queue, in GiB as du counted them. Old cloudplow uploaded on size alone, so "
                f"check.max_age is {NO_AGE_TRIGGER} and check.min_free 0; lower them to also upload "
                "files that waited long or when the disk fills",
            )
        else:
            migration.drop(f"{path}.max_size_gb", "negative; cloudplow's default is used")
    if check:
        uploader["check"] = check

    filters: dict[str, Any] = {}
    excludes = remote.get("rclone_excludes")
    if excludes is not None:
        if isinstance(excludes, list) and all(isinstance(item, str) and item for item in excludes):
            filters["exclude"] = list(excludes)
        else:
            migration.drop(f"{remote_path}.rclone_excludes", "expected a list of patterns; defaults used")
    open_files = _flag(section, "exclude_open_files", path, migration)
    if open_files is not None:
        filters["exclude_open_files"] = open_files
    if filters:
        uploader["filters"] = filters

    schedule = _convert_schedule(
        _mapping(section, "schedule", migration, path), f"{path}.schedule", migration
    )
    if schedule is not None:
        uploader["schedule"] = schedule

    flags, transfers = _convert_flags(
        _mapping(remote, "rclone_extras", migration, remote_path), f"{remote_path}.rclone_extras", migration
    )
    if transfers is not None:
        uploader["transfers"] = transfers
    if flags:
        uploader["rclone_flags"] = flags

    depth = _number(remote, "remove_empty_dir_depth", remote_path, migration)
    if depth is not None:
        uploader["remove_empty_dirs"] = True
        migration.change(
            f"{remote_path}.remove_empty_dir_depth",
            "remove_empty_dirs: true. cloudplow removes only the folders a session emptied, deepest "
            "first, never source itself; it keeps no minimum depth",
        )
    throttle = _flag(section, "can_be_throttled", path, migration)
    if throttle is not None:
        uploader["throttle"] = throttle

    if remote.get("rclone_sleeps"):
        migration.drop(
            f"{remote_path}.rclone_sleeps",
            "replaced: the planner sizes each stage to the quota left, a limit error "
            "(quota.limit_patterns) blocks only that account and the next one takes over, "
            "and stall_timeout stops a stage that stopped moving",
        )
    for key, reason in (
        (
            "size_excludes",
            "cloudplow counts every eligible file toward check.min_queue; "
            "to leave files out entirely, add them to filters.exclude",
        ),
        ("opened_excludes", "cloudplow leaves out every open file under source (filters.exclude_open_files)"),
    ):
        if section.get(key):
            migration.drop(f"{path}.{key}", reason)
    if section.get("chunked_upload"):
        migration.drop(
            f"{path}.chunked_upload",
            "replaced: every stage already passes rclone its exact file list (--files-from-raw)",
        )
    return uploader


def _convert_schedule(schedule: Mapping[str, Any], path: str, migration: Migration) -> dict[str, str] | None:
    if not schedule:
        return None
    _unknown_keys(schedule, ("enabled", "allowed_from", "allowed_until"), path, migration)
    if not _flag(schedule, "enabled", path, migration):
        if "allowed_from" in schedule or "allowed_until" in schedule:
            migration.drop(path, "disabled in the old file: sessions may start at any time")
        return None
    start = _text(schedule, "allowed_from", path, migration)
    end = _text(schedule, "allowed_until", path, migration)
    if (
        start is None
        or end is None
        or not all(re.fullmatch(r"\d{1,2}:\d{2}", value) for value in (start, end))
    ):
        migration.drop(path, 'enabled but allowed_from/allowed_until are not both "HH:MM"; no schedule')
        return None
    if start == end:
        migration.drop(path, "allowed_from equals allowed_until; no schedule")
        return None
    return {"from": start, "until": end}


def _convert_flags(
    extras: Mapping[str, Any], path: str, migration: Migration
) -> tuple[dict[str, Any], int | None]:
    """Given rclone_extras, return (rclone_flags, transfers); note every flag left out and why."""
    flags: dict[str, Any] = {}
    transfers: int | None = None
    for flag, value in extras.items():
        flag_path = f"{path}.{flag}"
        normalized = flag.lower().replace("_", "-")
        if normalized == "--transfers":
            if (
                isinstance(value, int | str)
                and not isinstance(value, bool)
                and str(value).isdigit()
                and int(value) > 0
            ):
                transfers = int(value)
                migration.change(flag_path, "the transfers key: an upper bound the planner may lower")
            else:
                migration.drop(flag_path, "not a whole number above zero; cloudplow's default is used")
            continue
        reason = schema.managed_flag_reason(flag)
        if reason is not None:
            migration.drop(flag_path, f"cloudplow manages it: {reason}")
            continue
        if normalized == "--drive-stop-on-upload-limit":
            migration.drop(flag_path, "cloudplow adds it itself for every Google Drive destination")
            continue
        if not re.fullmatch(r"--[A-Za-z0-9][A-Za-z0-9_-]*", flag):
            migration.drop(flag_path, "not a long rclone flag (--name); left out")
            continue
        if value is None or value is True:
            flags[flag] = True
        elif value is False:
            # Old cloudplow passed --flag=False; rclone_flags can only leave a flag out.
            migration.drop(
                flag_path,
                "false: cloudplow cannot pass --flag=false, only leave the flag out; "
                "if rclone's default for it is true, it now stays on",
            )
        elif isinstance(value, int | float | str):
            flags[flag] = value
        else:
            migration.drop(flag_path, f"expected text, a number or null, got {_kind(value)}; left out")
    return flags, transfers


def _convert_mover(
    uploader: str, mover: Mapping[str, Any], path: str, migration: Migration
) -> dict[str, str] | None:
    if not mover:
        return None
    _unknown_keys(mover, ("enabled", "move_from_remote", "move_to_remote", "rclone_extras"), path, migration)
    if not _flag(mover, "enabled", path, migration):
        migration.drop(path, "disabled in the old file; not migrated")
        return None
    source = _text(mover, "move_from_remote", path, migration)
    destination = _text(mover, "move_to_remote", path, migration)
    if source is None or destination is None:
        migration.drop(path, "needs both move_from_remote and move_to_remote; not migrated")
        return None
    if mover.get("rclone_extras"):
        migration.drop(
            f"{path}.rclone_extras",
            "movers take no extra flags: cloudplow runs a server-side rclone move with "
            "--delete-empty-src-dirs itself",
        )
    return {"from": source, "to": destination, "after": uploader}


def _report_unused_remotes(remotes: Mapping[str, Any], old: Mapping[str, Any], migration: Migration) -> None:
    """Note remotes that look like uploads but have no uploader entry (old cloudplow ignored them too)."""
    uploaders: Mapping[str, Any] = old["uploader"] if isinstance(old.get("uploader"), dict) else {}
    for name, remote in remotes.items():
        if not isinstance(remote, dict):
            migration.drop(f"remotes.{name}", f"expected a JSON object, got {_kind(remote)}; left out")
            continue
        if name in uploaders:
            continue
        _unknown_keys(remote, _REMOTE_KEYS, f"remotes.{name}", migration)
        if remote.get("upload_folder") and remote.get("upload_remote"):
            migration.drop(
                f"remotes.{name}.upload_folder",
                f"no uploader.{name} names this remote: old cloudplow never uploaded it, nor does this",
            )
        for key, reason in (
            ("rclone_sleeps", "replaced: a limit error blocks only that account and the planner rotates"),
            (
                "rclone_extras",
                "used only by uploads (syncers take their own), and this remote has no uploader",
            ),
            ("rclone_excludes", "used only by uploads, and this remote has no uploader"),
        ):
            if remote.get(key):
                migration.drop(f"remotes.{name}.{key}", reason)


def _rate_table(
    speeds: Mapping[str, Any], first: int, path: str, migration: Migration
) -> dict[int, str] | None:
    """
    Given throttle_speeds and max_streams_before_throttle, return the rate
    table that throttles exactly as old cloudplow did for every stream count
    from `first` up, or None if no speed is usable.
    """
    rates: dict[int, str] = {}
    for streams, rate in speeds.items():
        streams_path = f"{path}.{streams}"
        if not str(streams).isdigit():
            migration.drop(streams_path, "not a whole number of streams; left out")
            continue
        try:
            if parse_size(rate) <= 0:
                raise ValueError
        except ValueError:
            migration.drop(streams_path, "not an rclone rate such as 50M; left out")
            continue
        rates[int(streams)] = str(rate)
    if not rates:
        return None

    def old_rate(count: int) -> str:
        # The old lookup: the exact count, else the nearest key (first in file order on a tie).
        if count in rates:
            return rates[count]
        return rates[min(rates, key=lambda streams: abs(streams - count))]

    table: dict[int, str] = {}
    previous = None
    for count in range(max(first, 1), max(max(rates), first, 1) + 1):
        rate = old_rate(count)
        if rate != previous:
            table[count] = rate
            previous = rate
    below = sorted(streams for streams in rates if streams < max(first, 1))
    if below:
        migration.change(
            path,
            f"entries for {', '.join(map(str, below))} stream(s) left out: below "
            "max_streams_before_throttle old cloudplow did not throttle, and neither does this",
        )
    return table


def _convert_plex(plex: Mapping[str, Any], migration: Migration) -> None:
    if not plex:
        return
    path = "plex"
    _unknown_keys(
        plex,
        (
            "enabled",
            "url",
            "token",
            "poll_interval",
            "max_streams_before_throttle",
            "ignore_local_streams",
            "notifications",
            "verbose_notifications",
            "rclone",
        ),
        path,
        migration,
    )
    if not _flag(plex, "enabled", path, migration):
        migration.drop(path, "disabled in the old file; not migrated")
        return
    url = _text(plex, "url", path, migration)
    token = _text(plex, "token", path, migration)
    if url is None or token is None or not url.startswith(("http://", "https://")):
        migration.drop(path, "enabled but needs an http(s) url and a token; not migrated")
        return
    server: dict[str, Any] = {"kind": "plex", "url": url, "token": token}
    poll = _number(plex, "poll_interval", path, migration)
    if poll is not None and poll > 0:
        server["poll"] = f"{poll:g}s"
    ignore_local = _flag(plex, "ignore_local_streams", path, migration)
    if ignore_local is not None:
        server["ignore_local"] = ignore_local
    first = _number(plex, "max_streams_before_throttle", path, migration)
    first_count = int(first) if first is not None and first >= 0 else 1
    if first_count == 0:
        migration.change(
            f"{path}.max_streams_before_throttle",
            "0 throttled even without streams; cloudplow throttles from 1 stream up",
        )
    rclone = _mapping(plex, "rclone", migration, path)
    _unknown_keys(rclone, ("url", "throttle_speeds"), f"{path}.rclone", migration)
    speeds = _mapping(rclone, "throttle_speeds", migration, f"{path}.rclone")
    table = _rate_table(speeds, first_count, f"{path}.rclone.throttle_speeds", migration)
    if table is not None:
        server["throttle"] = table
    elif speeds or "rclone" in plex:
        migration.drop(f"{path}.rclone.throttle_speeds", "no usable speed; cloudplow's default table is used")
    if "url" in rclone:
        migration.drop(
            f"{path}.rclone.url", "cloudplow runs rclone's remote control itself, on a random port"
        )
    for key in ("notifications", "verbose_notifications"):
        if plex.get(key):
            migration.drop(f"{path}.{key}", "cloudplow sends no message when throttling changes")
    migration.document["media_servers"] = [server]


def _convert_sabnzbd(sabnzbd: Mapping[str, Any], migration: Migration) -> dict[str, Any] | None:
    if not sabnzbd:
        return None
    path = "sabnzbd"
    _unknown_keys(sabnzbd, ("enabled", "url", "apikey"), path, migration)
    if not _flag(sabnzbd, "enabled", path, migration):
        migration.drop(path, "disabled in the old file; not migrated")
        return None
    url = _text(sabnzbd, "url", path, migration)
    api_key = _text(sabnzbd, "apikey", path, migration)
    if url is None or api_key is None or not url.startswith(("http://", "https://")):
        migration.drop(path, "enabled but needs an http(s) url and an apikey; not migrated")
        return None
    return {"kind": "sabnzbd", "url": url.rstrip("/"), "api_key": api_key}


def _convert_nzbget(nzbget: Mapping[str, Any], migration: Migration) -> dict[str, Any] | None:
    if not nzbget:
        return None
    path = "nzbget"
    _unknown_keys(nzbget, ("enabled", "url"), path, migration)
    if not _flag(nzbget, "enabled", path, migration):
        migration.drop(path, "disabled in the old file; not migrated")
        return None
    url = _text(nzbget, "url", path, migration)
    try:
        parts = urllib.parse.urlsplit(url or "")
        host = parts.hostname
        port = parts.port
    except ValueError:
        host = port = None
    if url is None or parts.scheme not in ("http", "https") or not host:
        migration.drop(path, "enabled but its url is not an http(s) URL; not migrated")
        return None
    # The credentials move out of the URL into their own keys.
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{port}" if port else ""
    entry: dict[str, Any] = {
        "kind": "nzbget",
        "url": urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")),
    }
    if parts.username:
        entry["username"] = urllib.parse.unquote(parts.username)
    if parts.password:
        entry["password"] = urllib.parse.unquote(parts.password)
    return entry


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _convert_notifications(notifications: Mapping[str, Any], migration: Migration) -> None:
    urls: list[str] = []
    for name, entry in notifications.items():
        path = f"notifications.{name}"
        if not isinstance(entry, dict):
            migration.drop(path, f"expected a JSON object, got {_kind(entry)}; left out")
            continue
        service = str(entry.get("service", "")).lower()
        url = None
        if service == "apprise":
            _unknown_keys(entry, ("service", "url", "title"), path, migration)
            url = _text(entry, "url", path, migration)
            if _text(entry, "title", path, migration) not in (None, "Cloudplow"):
                migration.drop(f"{path}.title", "cloudplow titles its messages itself")
        elif service == "pushover":
            _unknown_keys(entry, ("service", "app_token", "user_token", "priority"), path, migration)
            app_token = _text(entry, "app_token", path, migration)
            user_token = _text(entry, "user_token", path, migration)
            if app_token and user_token:
                url = f"pover://{_quote(user_token)}@{_quote(app_token)}"
                priority = str(entry.get("priority", "0")).strip()
                if priority in ("-2", "-1", "1", "2"):
                    url += f"?priority={priority}"
                elif priority != "0":
                    migration.drop(f"{path}.priority", "not one of -2, -1, 0, 1, 2; normal priority is used")
        elif service == "slack":
            _unknown_keys(
                entry, ("service", "webhook_url", "channel", "sender_name", "sender_icon"), path, migration
            )
            url = _slack_url(entry, path, migration)
        elif service == "googlechat":
            _unknown_keys(entry, ("service", "webhook_url", "thread_key"), path, migration)
            url = _google_chat_url(entry, path, migration)
        else:
            migration.drop(
                path, "unknown service (expected apprise, pushover, slack or googlechat); left out"
            )
            continue
        if url is None:
            migration.drop(path, f"{service} without the keys it needs; left out")
            continue
        if service != "apprise":
            migration.change(path, f"{service} converted to its apprise URL")
        urls.append(url)
    if urls:
        migration.document["notifications"] = {"urls": urls}


def _slack_url(entry: Mapping[str, Any], path: str, migration: Migration) -> str | None:
    webhook = _text(entry, "webhook_url", path, migration)
    if webhook is None:
        return None
    match = re.fullmatch(r"https://hooks\.slack\.com/services/([^/]+)/([^/]+)/([^/?#]+)/?", webhook.strip())
    if match is None:
        migration.change(f"{path}.webhook_url", "not a hooks.slack.com webhook; kept as it was for apprise")
        return webhook.strip()
    sender = _text(entry, "sender_name", path, migration)
    url = (
        "slack://"
        + (f"{_quote(sender)}@" if sender else "")
        + "/".join(_quote(part) for part in match.groups())
    )
    channel = _text(entry, "channel", path, migration)
    if channel:
        url += f"/#{_quote(channel.lstrip('#'))}"
    if _text(entry, "sender_icon", path, migration) not in (None, ":heavy_exclamation_mark:"):
        migration.drop(f"{path}.sender_icon", "apprise sends its own icon")
    return url


def _google_chat_url(entry: Mapping[str, Any], path: str, migration: Migration) -> str | None:
    webhook = _text(entry, "webhook_url", path, migration)
    if webhook is None:
        return None
    parts = urllib.parse.urlsplit(webhook.strip())
    match = re.fullmatch(r"/v1/spaces/([^/]+)/messages", parts.path)
    query = urllib.parse.parse_qs(parts.query)
    if parts.hostname != "chat.googleapis.com" or match is None or "key" not in query or "token" not in query:
        migration.change(
            f"{path}.webhook_url", "not a chat.googleapis.com webhook; kept as it was for apprise"
        )
        return webhook.strip()
    if entry.get("thread_key"):
        migration.drop(f"{path}.thread_key", "apprise posts each message on its own")
    return f"gchat://{_quote(match[1])}/{_quote(query['key'][0])}/{_quote(query['token'][0])}"


def _convert_syncers(syncers: Mapping[str, Any], remotes: Mapping[str, Any], migration: Migration) -> None:
    converted: dict[str, Any] = {}
    taken = migration.names_taken
    for old_name, section in syncers.items():
        path = f"syncer.{old_name}"
        if not isinstance(section, dict):
            migration.drop(path, f"expected a JSON object, got {_kind(section)}; left out")
            continue
        _unknown_keys(
            section,
            (
                "rclone_extras",
                "service",
                "sync_from",
                "sync_to",
                "sync_interval",
                "tool_path",
                "use_copy",
                "instance_destroy",
            ),
            path,
            migration,
        )
        ends = []
        for key in ("sync_from", "sync_to"):
            remote_name = _text(section, key, path, migration)
            remote = remotes.get(remote_name) if remote_name is not None else None
            end = (
                _text(remote, "sync_remote", f"remotes.{remote_name}", migration)
                if isinstance(remote, dict)
                else None
            )
            if end is None:
                migration.drop(f"{path}.{key}", "names no remote with a sync_remote; the syncer is left out")
            elif ":" not in end or "/" in end.partition(":")[0]:
                migration.drop(
                    f"{path}.{key}",
                    "its sync_remote is a local folder; cloudplow's syncers go remote to remote "
                    "(an uploader with mode copy uploads a local folder); the syncer is left out",
                )
                end = None
            ends.append(end)
        if None in ends:
            continue
        name = new_name(old_name, taken)
        if name != old_name:
            migration.change(
                path, f"renamed to syncers.{name} (names are a-z, 0-9, _ and -, unlike any uploader)"
            )
        syncer: dict[str, Any] = {"source": ends[0], "destination": ends[1]}
        syncer["mode"] = "copy" if _flag(section, "use_copy", path, migration) else "sync"
        hours = _number(section, "sync_interval", path, migration)
        if hours is not None and hours > 0:
            syncer["check"] = {"interval": f"{hours:g}h"}
        flags, transfers = _convert_flags(
            _mapping(section, "rclone_extras", migration, path), f"{path}.rclone_extras", migration
        )
        if transfers is not None:
            syncer["transfers"] = transfers
        if flags:
            syncer["rclone_flags"] = flags
        service = _text(section, "service", path, migration)
        if service is not None and service != "local":
            migration.change(f"{path}.service", f"{service}: cloudplow runs every sync locally, with rclone")
        if "tool_path" in section:
            migration.drop(f"{path}.tool_path", "cloudplow runs rclone.binary for syncs too")
        if "instance_destroy" in section:
            migration.drop(f"{path}.instance_destroy", "no cloud instance is started any more")
        converted[name] = syncer
    if converted:
        migration.document["syncers"] = converted


def _convert_hidden(hidden: Mapping[str, Any], remotes: Mapping[str, Any], migration: Migration) -> None:
    converted: list[dict[str, Any]] = []
    for folder, section in hidden.items():
        path = f"hidden.{folder}"
        if not isinstance(section, dict):
            migration.drop(path, f"expected a JSON object, got {_kind(section)}; left out")
            continue
        _unknown_keys(section, ("hidden_remotes",), path, migration)
        names = section.get("hidden_remotes")
        if not isinstance(names, list):
            migration.drop(path, "no hidden_remotes list; left out")
            continue
        targets: list[str] = []
        for name in names:
            remote = remotes.get(name) if isinstance(name, str) else None
            target = remote.get("hidden_remote") if isinstance(remote, dict) else None
            if isinstance(target, str) and target:
                targets.append(target)
            else:
                migration.drop(f"{path}.hidden_remotes", f"{name!s:.40} names no remote with a hidden_remote")
        if targets:
            converted.append({"folder": folder, "remotes": targets})
        else:
            migration.drop(path, "no remote to clean on; left out")
    if converted:
        migration.document["hidden"] = converted


# --- writing -------------------------------------------------------------------


def render(migration: Migration, old_path: Path, now: float) -> str:
    """Return the new configuration file's text: a header, then the document as YAML."""
    when = datetime.datetime.fromtimestamp(now, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"# Converted from {old_path.name} by `cloudplow migrate-config` on {when}.\n"
        "# It holds credentials (tokens, API keys, passwords): keep it private.\n"
        "# Check it with `cloudplow --config THIS_FILE check-config`; every key is described in\n"
        "# config.yaml.sample and the README.\n"
    )
    return header + yaml.safe_dump(migration.document, sort_keys=False, allow_unicode=True, width=100)


def write_output(path: Path, text: str, *, force: bool) -> None:
    """
    Write the new configuration, readable by its owner only. Raise
    MigrateError if it exists and `force` is false, or it cannot be written.
    """
    if path.is_dir():
        raise MigrateError(f"{path}: is a folder; give --output a file name")
    if path.exists() and not force:
        raise MigrateError(f"{path}: exists; add --force to overwrite it, or choose another --output")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.chmod(temporary, 0o600)
            if force:
                os.replace(temporary, path)
            else:
                # link() fails if the file appeared meanwhile: never overwrite without --force.
                os.link(temporary, path)
                os.unlink(temporary)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
    except FileExistsError:
        raise MigrateError(
            f"{path}: exists; add --force to overwrite it, or choose another --output"
        ) from None
    except OSError as error:
        raise MigrateError(f"{path}: cannot write ({error.strerror})") from None


# --- the quota cache --------------------------------------------------------------


def account_for_key_file(uploader: Uploader | None, key_file: str) -> str:
    """
    Given the uploader (or None if the new config has none of that name) and a
    key file path from the quota cache, return the ledger's account name for
    it: the name the loaded configuration gave the key file of that name, so it
    follows however config/load.py names service accounts; without a match,
    the file's stem, as accounts.dir names them (sa1.json -> sa1).
    """
    file_name = Path(key_file).name
    if uploader is not None:
        for account in uploader.accounts:
            if account.service_account_file is not None and account.service_account_file.name == file_name:
                return account.name
    return Path(file_name).stem


def read_quota_cache(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Given sa_quota_cache.json, return it. Raise MigrateError if it is not {uploader: {key: {...}}}."""
    cache = read_json(path, "an sa_quota_cache.json")
    shape = f"{path}: expected {{uploader: {{key file: {{bytes, reset_time, first_upload}}}}}}"
    if not isinstance(cache, dict) or not all(isinstance(entries, dict) for entries in cache.values()):
        raise MigrateError(shape)
    return cache


def import_quota_cache(
    cache: Mapping[str, Mapping[str, Any]],
    config: Config,
    ledger: Ledger,
    uploader_names: Mapping[str, str],
    *,
    now: float,
    notes: list[Note],
) -> list[ImportedUsage]:
    """
    Record each cache entry still inside its window as usage of its account,
    ending when the cache says the account resets. Return what was imported;
    append a note for every entry left out.
    """
    imported: list[ImportedUsage] = []
    for old_uploader, entries in cache.items():
        name = uploader_names.get(old_uploader, old_uploader)
        uploader = config.uploaders.get(name)
        window = uploader.quota.window_seconds if uploader is not None else DEFAULT_WINDOW_SECONDS
        if uploader is None:
            notes.append(
                Note(
                    f"quota cache {old_uploader}",
                    "no uploader of that name; usage recorded by account",
                    False,
                )
            )
        for key_file, entry in entries.items():
            where = f"quota cache {old_uploader}.{Path(key_file).name}"
            used = _cache_number(entry, "bytes")
            reset_time = _cache_number(entry, "reset_time")
            if used is None or reset_time is None:
                notes.append(Note(where, "expected numbers bytes and reset_time; left out", False))
                continue
            if reset_time <= now or used <= 0:
                notes.append(Note(where, "already reset or empty; nothing to carry over", False))
                continue
            account = account_for_key_file(uploader, key_file)
            # Usage counts for one window from `at`: it ages out exactly at reset_time.
            ledger.import_usage(account, uploader=name, size=int(used), at=float(reset_time) - window)
            imported.append(ImportedUsage(name, account, int(used), float(reset_time)))
    return imported


def _cache_number(entry: object, key: str) -> float | None:
    value = entry.get(key) if isinstance(entry, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


# --- the command ------------------------------------------------------------------


def migrate(
    old_path: Path,
    output: Path,
    *,
    quota_cache: Path | None,
    force: bool,
    out: TextIO | None = None,
    now: float | None = None,
) -> int:
    """
    Given the old config.json, where to write config.yaml and optionally the
    fork's quota cache, convert, write, check and report on `out`. Return 0
    when the new file passes check-config, 1 when it was written but needs
    fixing (the problems are listed). Raise MigrateError, writing nothing,
    when an input cannot be read or the output exists without `force`.
    """
    now = time.time() if now is None else now
    out = sys.stdout if out is None else out
    if output.absolute() == old_path.absolute() or (
        output.exists() and old_path.exists() and output.samefile(old_path)
    ):
        raise MigrateError(f"{output}: is the old file itself; give --output another path")
    old = read_old_config(old_path)
    cache = read_quota_cache(quota_cache) if quota_cache is not None else None
    migration = convert(old)
    _drop_missing_binary(migration)
    if not migration.document.get("uploaders"):
        _print_notes(migration.notes, out)
        raise MigrateError(f"{old_path}: no uploader could be converted (see above); nothing written")
    write_output(output, render(migration, old_path, now), force=force)
    document = migration.document
    print(
        f"wrote {output}: {len(document['uploaders'])} uploader(s), {len(document.get('syncers', {}))} "
        f"syncer(s), {len(document.get('movers', {}))} mover(s), {len(document.get('media_servers', []))} "
        f"media server(s), {len(document.get('downloaders', []))} downloader(s), "
        f"{len(document.get('notifications', {}).get('urls', []))} notification URL(s), "
        f"{len(document.get('hidden', []))} hidden folder(s)",
        file=out,
    )
    try:
        config = load_config(output)
    except ConfigError as error:
        _print_notes(migration.notes, out)
        print(f"check-config: {output} does not pass yet; fix these, then run check-config:", file=out)
        for problem in error.errors:
            print(f"  {problem}", file=out)
        if cache is not None:
            print("quota cache: not imported; it needs a configuration that passes check-config", file=out)
        return 1
    if cache is not None:
        try:
            with Ledger.in_state_dir(config.state_dir) as ledger:
                imported = import_quota_cache(
                    cache, config, ledger, migration.uploader_names, now=now, notes=migration.notes
                )
        except (OSError, sqlite3.Error) as error:
            raise MigrateError(
                f"{config.state_dir}: {output} was written, but the quota cache could not be recorded"
                f" in the ledger ({getattr(error, 'strerror', None) or error}); nothing imported"
            ) from None
        for usage in imported:
            print(
                f"quota: {usage.uploader}/{usage.account}: {format_size(usage.used_bytes)} used, frees in "
                f"{max(0.0, usage.frees_at - now) / 3600:.1f} h",
                file=out,
            )
        print(f"quota cache: {len(imported)} account(s) imported into {config.state_dir}", file=out)
    _print_notes(migration.notes, out)
    print(f"check-config: {output} passes", file=out)
    return 0


def _drop_missing_binary(migration: Migration) -> None:
    """Leave out an rclone binary this machine lacks: the rclone installed with cloudplow serves."""
    rclone = migration.document.get("rclone", {})
    binary = rclone.get("binary")
    if binary is not None and os.path.isabs(binary) and not os.path.exists(binary):
        del rclone["binary"]
        if not rclone:
            del migration.document["rclone"]
        migration.change(
            "core.rclone_binary_path",
            "no such file here; left out, so cloudplow runs the rclone installed with it",
        )


def _print_notes(notes: Sequence[Note], out: TextIO) -> None:
    dropped = [note for note in notes if not note.mapped]
    changed = [note for note in notes if note.mapped]
    if dropped:
        print(f"not mapped ({len(dropped)}):", file=out)
        for note in dropped:
            print(f"  {note.key}: {note.reason}", file=out)
    if changed:
        print(f"mapped with a change ({len(changed)}):", file=out)
        for note in changed:
            print(f"  {note.key}: {note.reason}", file=out)
