"""Load the YAML configuration file, validate it and return frozen dataclasses.

This is the edge between the file a person writes and the rest of cloudplow:
everything downstream receives a `Config` whose sizes are bytes, durations
seconds, paths absolute and accounts resolved, and never sees YAML. The walk
is driven by `schema.ROOT`; every problem is collected as "key.path: reason"
and raised together as one ConfigError, so a user fixes them in one pass.
Account credentials (env values) are secrets: they never appear in an error,
a repr or the summary.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import os
import re
import shutil
import socket
import textwrap
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cloudplow.config import schema
from cloudplow.config.schema import Key
from cloudplow.units import format_duration, format_size, parse_duration, parse_size

MASK = "***"
DEFAULT_CONFIG_FILE = "config.yaml"
CONFIG_ENV_VARIABLE = "CLOUDPLOW_CONFIG"

KeyT = TypeVar("KeyT")
ValueT = TypeVar("ValueT")


class FrozenMapping(Mapping[KeyT, ValueT]):
    """A read-only mapping, so a loaded Config cannot be changed by accident."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[KeyT, ValueT] | Iterable[tuple[KeyT, ValueT]] = ()) -> None:
        self._items: dict[KeyT, ValueT] = dict(items)

    def __getitem__(self, key: KeyT) -> ValueT:
        return self._items[key]

    def __iter__(self) -> Iterator[KeyT]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"


class SecretEnv(FrozenMapping[str, str]):
    """Environment overrides whose values are credentials: the repr shows names only."""

    __slots__ = ()

    def __repr__(self) -> str:
        masked = dict.fromkeys(self, MASK)
        return f"{type(self).__name__}({masked!r})"


@dataclass(frozen=True, slots=True)
class Account:
    """
    One identity with its own upload quota: env overrides, a service-account
    key, or another rclone remote whose credentials replace the destination's.
    """

    name: str
    env: Mapping[str, str]
    service_account_file: Path | None
    remote: str | None = None
    # A service account's client_email: the ledger's key for it, whatever its file is called.
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class Quota:
    per_account_bytes: int
    window_seconds: float
    reserve_bytes: int
    overshoot: bool
    limit_patterns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Check:
    interval_seconds: float
    min_queue_bytes: int
    max_age_seconds: float
    min_free_bytes: int
    watch: bool = False


@dataclass(frozen=True, slots=True)
class Filters:
    min_age_seconds: float
    exclude: tuple[str, ...]
    exclude_open_files: bool


@dataclass(frozen=True, slots=True)
class Schedule:
    """Local-time window for starting sessions; `end` earlier than `start` crosses midnight."""

    start: datetime.time
    end: datetime.time


@dataclass(frozen=True, slots=True)
class Uploader:
    name: str
    source: Path
    destination: str
    remote: str
    mode: str
    accounts: tuple[Account, ...]
    accounts_dir: Path | None
    quota: Quota
    check: Check
    filters: Filters
    schedule: Schedule | None
    transfers: int
    stall_timeout_seconds: float
    rclone_flags: tuple[str, ...]
    remove_empty_dirs: bool = True
    throttle: bool = True
    # Syncers and movers run as uploaders whose source is a remote: `remote_source` is what
    # rclone reads, `source` is unused (it is the state_dir), `kind` names the config section.
    remote_source: str | None = None
    kind: str = "uploader"  # uploader | syncer | mover

    @property
    def key_path(self) -> str:
        """Where this job is configured, for errors: uploaders.NAME, syncers.NAME or movers.NAME."""
        return f"{self.kind}s.{self.name}"

    def __repr__(self) -> str:
        # Flag values may be credentials (--webdav-pass): mask them like the summary does.
        shown = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        shown["rclone_flags"] = mask_argv(self.rclone_flags)
        return "Uploader(" + ", ".join(f"{name}={value!r}" for name, value in shown.items()) + ")"


@dataclass(frozen=True, slots=True)
class MediaServer:
    kind: str  # plex | jellyfin | emby
    url: str = field(repr=False)
    token: str = field(repr=False)
    poll_seconds: float
    ignore_local: bool
    throttle: tuple[tuple[int, int], ...]  # (active streams, bytes per second), ascending streams

    @property
    def name(self) -> str:
        """A label safe to show: kind and host:port, never credentials."""
        return f"{self.kind}@{safe_url(self.url)}"


@dataclass(frozen=True, slots=True)
class Downloader:
    kind: str  # sabnzbd | nzbget | qbittorrent
    url: str = field(repr=False)
    api_key: str | None = field(repr=False)
    username: str | None
    password: str | None = field(repr=False)

    @property
    def name(self) -> str:
        """A label safe to show: kind and host:port, never credentials."""
        return f"{self.kind}@{safe_url(self.url)}"


@dataclass(frozen=True, slots=True)
class Notifications:
    urls: tuple[str, ...] = field(repr=False)
    events: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StateStore:
    url: str | None = field(repr=False)  # PostgreSQL; None: SQLite in state_dir
    host: str


@dataclass(frozen=True, slots=True)
class Mover:
    name: str
    source: str
    destination: str
    after: str  # the uploader whose sessions it follows


@dataclass(frozen=True, slots=True)
class Syncer:
    """A remote-to-remote copy or sync with its own account pool; planned like an upload."""

    name: str
    source: str
    destination: str
    remote: str  # the destination's remote, which the accounts apply to
    mode: str  # copy | sync
    accounts: tuple[Account, ...]
    accounts_dir: Path | None
    quota: Quota
    interval_seconds: float
    transfers: int
    stall_timeout_seconds: float
    rclone_flags: tuple[str, ...]

    def __repr__(self) -> str:
        shown = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        shown["rclone_flags"] = mask_argv(self.rclone_flags)
        return "Syncer(" + ", ".join(f"{name}={value!r}" for name, value in shown.items()) + ")"


@dataclass(frozen=True, slots=True)
class HiddenFolder:
    folder: Path
    remotes: tuple[str, ...]
    interval_seconds: float


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    rclone_binary: str | None
    rclone_config: Path | None
    state_dir: Path
    server_host: str
    server_port: int
    uploaders: Mapping[str, Uploader]
    media_servers: tuple[MediaServer, ...] = ()
    downloaders: tuple[Downloader, ...] = ()
    notifications: Notifications | None = None
    state: StateStore = StateStore(None, "localhost")
    movers: Mapping[str, Mover] = field(default_factory=lambda: FrozenMapping())
    syncers: Mapping[str, Syncer] = field(default_factory=lambda: FrozenMapping())
    hidden: tuple[HiddenFolder, ...] = ()
    # Syncers and movers as the uploaders the session runs (see Uploader.remote_source).
    jobs: Mapping[str, Uploader] = field(default_factory=lambda: FrozenMapping())
    # A credential: kept out of repr, so a logged or printed Config never shows it.
    server_token: str | None = field(default=None, repr=False)

    def pools(self) -> list[Uploader]:
        """Every uploader, syncer and mover, as the metrics and /status show them."""
        return [*self.uploaders.values(), *self.jobs.values()]


DEFAULT_ACCOUNT = Account("default", SecretEnv(), None)


class ConfigError(Exception):
    """
    The configuration cannot be used. `errors` holds every problem found, each
    one line "key.path: reason"; str() is the first plus " (and N more)".
    """

    def __init__(self, errors: str | Sequence[str]) -> None:
        messages = [errors] if isinstance(errors, str) else list(errors)
        # A reason may quote a YAML scalar or a path; keep every message on one line.
        self.errors: list[str] = [" ".join(message.split()) for message in messages] or [
            "configuration: invalid"
        ]
        more = len(self.errors) - 1
        super().__init__(self.errors[0] + (f" (and {more} more)" if more else ""))


def default_config_path(argv_path: str | None, environ: Mapping[str, str]) -> Path:
    """
    Given the --config argument (or None) and the environment, return the
    configuration file to use: --config, else $CLOUDPLOW_CONFIG, else
    ./config.yaml.
    """
    if argv_path:
        return Path(argv_path).expanduser()
    if environ.get(CONFIG_ENV_VARIABLE):
        return Path(environ[CONFIG_ENV_VARIABLE]).expanduser()
    return Path(DEFAULT_CONFIG_FILE)


def load_config(path: Path) -> Config:
    """
    Given the path of a YAML configuration file, return it validated as a
    Config. Raise ConfigError listing every problem if the file cannot be read
    or parsed, or any key is unknown, missing or invalid.
    """
    config_path = Path(path).expanduser().absolute()
    document = _read_document(config_path)
    context = _Context(config_path.parent)
    values = _parse_section(schema.ROOT, document, "", context)

    rclone = values["rclone"]
    server = values["server"]
    rclone_binary = None
    rclone_config = None
    if _valid(rclone):
        rclone_binary = _check_binary(rclone["binary"], "rclone.binary", context)
        rclone_config = rclone["config"]
    state_dir = values["state_dir"]
    if _valid(state_dir) and state_dir.exists() and not state_dir.is_dir():
        context.error("state_dir", f"{str(state_dir)!r} exists and is not a folder")

    uploaders: dict[str, Uploader] = {}
    if _valid(values["uploaders"]):
        for name, section in values["uploaders"].items():
            uploader = _build_uploader(name, section, f"uploaders.{name}", context)
            if uploader is not None:
                uploaders[name] = uploader
        _check_overlapping_sources(uploaders, context)
    syncers = _build_syncers(values["syncers"], uploaders, context)
    movers = _build_movers(values["movers"], uploaders, syncers, context)

    if context.errors:
        raise ConfigError(context.errors)
    return Config(
        path=config_path,
        rclone_binary=rclone_binary,
        rclone_config=rclone_config,
        state_dir=state_dir,
        server_host=server["host"],
        server_port=server["port"],
        uploaders=FrozenMapping(uploaders),
        media_servers=tuple(
            MediaServer(
                kind=entry["kind"],
                url=entry["url"],
                token=entry["token"],
                poll_seconds=entry["poll"],
                ignore_local=entry["ignore_local"],
                throttle=entry["throttle"],
            )
            for entry in values["media_servers"] or ()
        ),
        downloaders=tuple(
            Downloader(
                kind=entry["kind"],
                url=entry["url"],
                api_key=entry["api_key"],
                username=entry["username"],
                password=entry["password"],
            )
            for entry in values["downloaders"] or ()
        ),
        notifications=(
            Notifications(urls=values["notifications"]["urls"], events=values["notifications"]["events"])
            if values["notifications"] is not None
            else None
        ),
        state=StateStore(
            url=values["state"]["url"] if values["state"] is not None else None,
            host=(values["state"] or {}).get("host") or socket.gethostname(),
        ),
        movers=FrozenMapping(movers),
        syncers=FrozenMapping(syncers),
        hidden=tuple(
            HiddenFolder(folder=entry["folder"], remotes=entry["remotes"], interval_seconds=entry["interval"])
            for entry in values["hidden"] or ()
        ),
        jobs=FrozenMapping(_job_uploaders(syncers, movers, uploaders, state_dir)),
        server_token=server["token"],
    )


def summarize(config: Config) -> str:
    """
    Given a loaded Config, return a multi-line summary for people (what
    `cloudplow check-config` prints). Account env values and values of
    secret-looking rclone flags are masked.
    """
    host = f"[{config.server_host}]" if ":" in config.server_host else config.server_host
    lines = [
        f"config:    {config.path}",
        f"rclone:    {config.rclone_binary or 'bundled rclone (else rclone on PATH)'}",
        f"rclone.conf: {config.rclone_config or 'rclone default'}",
        f"state_dir: {config.state_dir}",
        f"server:    http://{host}:{config.server_port} (/metrics, /status, /healthz)",
        f"server.token: {MASK if config.server_token else 'none (/metrics and /status answer anyone)'}",
    ]
    for uploader in config.uploaders.values():
        lines.append("")
        lines.extend(_summarize_uploader(uploader))
    lines.extend(_summarize_jobs(config))
    return "\n".join(lines) + "\n"


def _summarize_jobs(config: Config) -> list[str]:
    """Return the summary lines of everything beside the uploaders; credentials never appear."""
    lines: list[str] = []
    if config.syncers:
        lines.append("")
        for syncer in config.syncers.values():
            lines.append(
                f"syncer {syncer.name}: {syncer.mode} {syncer.source} -> {syncer.destination}, "
                f"{len(syncer.accounts)} account(s), every {format_duration(syncer.interval_seconds)}"
            )
    for mover in config.movers.values():
        lines.append(
            f"mover {mover.name}: {mover.source} -> {mover.destination} after uploader {mover.after}"
        )
    for hidden in config.hidden:
        lines.append(f"hidden: {hidden.folder} -> delete on {', '.join(hidden.remotes)}")
    if config.media_servers or config.downloaders or config.notifications:
        lines.append("")
    for server in config.media_servers:
        steps = ", ".join(f"{streams}+: {format_size(rate)}/s" for streams, rate in server.throttle)
        lines.append(
            f"media server {server.name}: every {format_duration(server.poll_seconds)}, "
            f"{'remote streams only' if server.ignore_local else 'all streams'}; throttle {steps or 'never'}"
        )
    for downloader in config.downloaders:
        lines.append(f"downloader {downloader.name}: paused while uploading")
    if config.notifications is not None:
        events = ", ".join(config.notifications.events)
        lines.append(f"notifications: {len(config.notifications.urls)} URL(s) for {events}")
    lines.append(
        f"state:     {'PostgreSQL' if config.state.url else 'SQLite in state_dir'} (host {config.state.host})"
    )
    return lines


# --- reading the file -------------------------------------------------------

_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


class _Loader(yaml.SafeLoader):
    """
    SafeLoader without YAML 1.1's base-60 and octal numbers, and with
    duplicate keys refused. Otherwise `from: 1:00` would load as the number 60,
    `transfers: 010` as 8, and a repeated key would silently win.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key_node.value!r}",
                        key_node.start_mark,
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_INT_TAG, re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Given YAML text, return the data as cloudplow reads it. Raise yaml.YAMLError if invalid."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _read_document(config_path: Path) -> dict[str, Any]:
    """
    Given the absolute path of the configuration file, return its top-level
    mapping. Raise ConfigError if it is missing, unreadable, not YAML or not a
    mapping.
    """
    where = str(config_path)
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a folder, not a configuration file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(f"{where}: cannot read ({error.strerror})") from None
    try:
        document = parse_yaml(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML: {_describe_yaml_error(error)}") from None
    if document is None:
        raise ConfigError(f"{where}: is empty; expected a mapping of keys such as uploaders:")
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: expected a mapping of keys at the top, got {_describe_type(document)}")
    return document


def _describe_yaml_error(error: yaml.YAMLError) -> str:
    """Given a YAML error, return its problem and position without quoting the file's text."""
    if isinstance(error, yaml.MarkedYAMLError):
        problem = error.problem or error.context or "cannot parse"
        mark = error.problem_mark or error.context_mark
        if mark is not None:
            return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
        return problem
    return type(error).__name__


# --- walking the schema -----------------------------------------------------

# Marks a value that failed validation; its error is already recorded.
_INVALID: Any = type("Invalid", (), {"__repr__": lambda self: "<invalid>"})()


class _Context:
    """Where relative paths start, and the errors found so far."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.errors: list[str] = []

    def error(self, path: str, reason: str) -> None:
        self.errors.append(f"{path}: {reason}")


def _valid(*values: Any) -> bool:
    return all(value is not _INVALID for value in values)


def _join(path: str, name: object) -> str:
    return f"{path}.{name}" if path else str(name)


def _describe(value: object) -> str:
    """Given a non-secret value, return how to quote it in an error."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "...'"
    return _describe_type(value)


def _describe_type(value: object) -> str:
    """Given any value, return its kind only, safe for secrets ("a list", "text")."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _parse(key: Key, value: Any, path: str, context: _Context) -> Any:
    """
    Given a key, the value found for it and its dotted path, return the value
    converted (bytes, seconds, Path, ...) or _INVALID after recording why.
    """
    if value is None:
        context.error(path, "has no value; give one or remove the key")
        return _INVALID
    return _PARSERS[key.kind](key, value, path, context)


def _parse_section(key: Key, value: Any, path: str, context: _Context) -> Any:
    if not isinstance(value, dict):
        context.error(path, f"expected a mapping of keys, got {_describe_type(value)}")
        return _INVALID
    known = [child.name for child in key.children]
    for name in value:
        if name not in known:
            context.error(_join(path, name), _unknown_key_reason(name, known))
    result: dict[str, Any] = {}
    for child in key.children:
        child_path = _join(path, child.name)
        if child.name in value:
            result[child.name] = _parse(child, value[child.name], child_path, context)
        elif child.required:
            context.error(child_path, "missing (required)")
            result[child.name] = _INVALID
        elif child.default is None:
            result[child.name] = None
        else:
            # Defaults go through the same parser, so "750GB" in the schema means what it says.
            result[child.name] = _parse(child, child.default, child_path, context)
    return result


def _unknown_key_reason(name: object, known: list[str]) -> str:
    close = difflib.get_close_matches(str(name), known, n=1)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key (expected {', '.join(known)})"


def _parse_named_sections(key: Key, value: Any, path: str, context: _Context) -> Any:
    if not isinstance(value, dict):
        context.error(path, f"expected a mapping of NAME: settings, got {_describe_type(value)}")
        return _INVALID
    if not value:
        context.error(path, "is empty; define at least one")
        return _INVALID
    result: dict[str, Any] = {}
    for name, section in value.items():
        if isinstance(name, int) and not isinstance(name, bool):
            name = str(name)  # YAML reads `2024:` as a number; as a name it is text
        name_path = _join(path, name)
        if not isinstance(name, str) or not re.fullmatch(key.pattern, name):
            context.error(name_path, f"bad name {name!r}: use only {key.pattern_doc}")
            _parse_section(key, section, name_path, context)  # still report what is inside
            continue
        result[name] = _parse_section(key, section, name_path, context)
    return result


def _parse_section_list(key: Key, value: Any, path: str, context: _Context) -> Any:
    if not isinstance(value, list):
        context.error(path, f"expected a list, got {_describe_type(value)}")
        return _INVALID
    if not value:
        context.error(path, "is empty; add at least one entry or remove the key")
        return _INVALID
    return [_parse_section(key, item, f"{path}[{index}]", context) for index, item in enumerate(value)]


def _parse_str(key: Key, value: Any, path: str, context: _Context) -> Any:
    if not isinstance(value, str) or not value.strip():
        context.error(path, f"expected text, got {_describe(value)}")
        return _INVALID
    if key.pattern and not re.fullmatch(key.pattern, value):
        context.error(path, f"bad value {value!r}: use only {key.pattern_doc}")
        return _INVALID
    return value


def _parse_int(key: Key, value: Any, path: str, context: _Context) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        context.error(path, f"expected a whole number, got {_describe(value)}")
        return _INVALID
    return _check_bounds(key, value, value, path, context)


def _parse_bool(key: Key, value: Any, path: str, context: _Context) -> Any:
    if not isinstance(value, bool):
        context.error(path, f"expected true or false, got {_describe(value)}")
        return _INVALID
    return value


def _parse_size(key: Key, value: Any, path: str, context: _Context) -> Any:
    try:
        size_bytes = parse_size(value)
    except ValueError as error:
        context.error(path, str(error))
        return _INVALID
    return _check_bounds(key, size_bytes, value, path, context)


def _parse_duration(key: Key, value: Any, path: str, context: _Context) -> Any:
    try:
        seconds = parse_duration(value)
    except ValueError as error:
        context.error(path, str(error))
        return _INVALID
    return _check_bounds(key, seconds, value, path, context)


def _check_bounds(key: Key, number: float, written: object, path: str, context: _Context) -> Any:
    """Given a converted number and what the user wrote, return it or _INVALID if out of range."""
    if key.positive and number <= 0:
        context.error(path, f"must be more than zero, got {_describe(written)}")
        return _INVALID
    if key.minimum is not None and number < key.minimum:
        context.error(path, f"must be at least {key.minimum:g}, got {_describe(written)}")
        return _INVALID
    if key.maximum is not None and number > key.maximum:
        context.error(path, f"must be at most {key.maximum:g}, got {_describe(written)}")
        return _INVALID
    return number


def _parse_path(key: Key, value: Any, path: str, context: _Context) -> Any:
    if not isinstance(value, str) or not value.strip():
        context.error(path, f"expected a path, got {_describe(value)}")
        return _INVALID
    resolved = context.base_dir / Path(value).expanduser()
    if key.must_exist == "dir":
        if not resolved.exists():
            context.error(path, f"no such folder {str(resolved)!r}")
            return _INVALID
        if not resolved.is_dir():
            context.error(path, f"{str(resolved)!r} is not a folder")
            return _INVALID
        if not os.access(resolved, os.R_OK | os.X_OK):
            context.error(path, f"cannot read folder {str(resolved)!r}")
            return _INVALID
    elif key.must_exist == "file":
        if not resolved.exists():
            context.error(path, f"no such file {str(resolved)!r}")
            return _INVALID
        if resolved.is_dir():
            context.error(path, f"{str(resolved)!r} is a folder, not a file")
            return _INVALID
        if not os.access(resolved, os.R_OK):
            context.error(path, f"cannot read file {str(resolved)!r}")
            return _INVALID
    return resolved


_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})")


def _parse_time(key: Key, value: Any, path: str, context: _Context) -> Any:
    match = _TIME_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        context.error(path, f'expected a time "HH:MM" such as "01:00", got {_describe(value)}')
        return _INVALID
    return datetime.time(int(match[1]), int(match[2]))


def _parse_choice(key: Key, value: Any, path: str, context: _Context) -> Any:
    if value not in key.choices:
        context.error(path, f"expected {' or '.join(key.choices)}, got {_describe(value)}")
        return _INVALID
    return value


# rclone's rule for remote names, roughly: word characters . + @ - and inner spaces.
_REMOTE_NAME_RE = re.compile(r"[\w.+@][\w.+@-]*(?: +[\w.+@-]+)*")


def _parse_remote(key: Key, value: Any, path: str, context: _Context) -> Any:
    expected = 'expected "remote:path" such as "gdrive:/Media"'
    if not isinstance(value, str) or not value.strip():
        context.error(path, f"{expected}, got {_describe(value)}")
        return _INVALID
    remote, colon, _ = value.partition(":")
    if not colon or "/" in remote or "\\" in remote:
        context.error(path, f"{expected}; {value!r} is a local path")
        return _INVALID
    if not remote:
        context.error(path, f"{expected}; {value!r} has no remote name before the colon")
        return _INVALID
    if "," in remote:
        context.error(
            path,
            f"connection-string options in {remote!r} are not supported; "
            "define a remote with those options in rclone.conf",
        )
        return _INVALID
    if not _REMOTE_NAME_RE.fullmatch(remote):
        context.error(path, f"bad remote name {remote!r}: use letters, digits, _ . + @ - and inner spaces")
        return _INVALID
    return value


def _parse_str_list(key: Key, value: Any, path: str, context: _Context) -> Any:
    if not isinstance(value, list):
        context.error(path, f"expected a list of text, got {_describe_type(value)}")
        return _INVALID
    items: list[str] = []
    for index, item in enumerate(value):
        if isinstance(item, str) and item:
            items.append(item)
        elif item == "":
            context.error(f"{path}[{index}]", "is empty")
        else:
            context.error(f"{path}[{index}]", f"expected text, got {_describe(item)}")
    return tuple(items) if len(items) == len(value) else _INVALID


def _parse_regex_list(key: Key, value: Any, path: str, context: _Context) -> Any:
    patterns = _parse_str_list(key, value, path, context)
    if not _valid(patterns):
        return _INVALID
    if not patterns:
        context.error(
            path,
            "needs at least one pattern, or cloudplow cannot tell a quota hit from other errors",
        )
        return _INVALID
    valid = True
    for index, pattern in enumerate(patterns):
        try:
            compiled = re.compile(pattern, re.IGNORECASE)
        except re.error as error:
            context.error(f"{path}[{index}]", f"bad regular expression {pattern!r}: {error}")
            valid = False
            continue
        if compiled.search("") is not None:
            context.error(
                f"{path}[{index}]",
                f"{pattern!r} matches empty text, so every error would count as a quota hit",
            )
            valid = False
    return patterns if valid else _INVALID


_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _parse_env(key: Key, value: Any, path: str, context: _Context) -> Any:
    # Values are credentials: errors name the variable and the kind of value, never the value.
    if not isinstance(value, dict):
        context.error(path, f"expected a mapping of VARIABLE: value, got {_describe_type(value)}")
        return _INVALID
    env: dict[str, str] = {}
    valid = True
    for name, setting in value.items():
        shown_name = str(name).split("=", 1)[0] + (f"={MASK}" if "=" in str(name) else "")
        setting_path = _join(path, shown_name)
        if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name):
            context.error(
                setting_path,
                "not an environment variable name (letters, digits and _, not starting with a digit)",
            )
            valid = False
        elif isinstance(setting, bool):
            env[name] = str(setting).lower()
        elif isinstance(setting, str | int | float):
            env[name] = str(setting)
        else:
            context.error(setting_path, f"expected a text value, got {_describe_type(setting)}")
            valid = False
    return SecretEnv(env) if valid else _INVALID


_FLAG_NAME_RE = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_-]*")


def _parse_flags(key: Key, value: Any, path: str, context: _Context) -> Any:
    # Flag values may be credentials (--webdav-pass): errors never quote them.
    if not isinstance(value, dict):
        context.error(path, f"expected a mapping of --flag: value, got {_describe_type(value)}")
        return _INVALID
    argv: list[str] = []
    valid = True
    for flag, setting in value.items():
        flag_path = _join(path, flag)
        if not isinstance(flag, str):
            context.error(flag_path, "expected a flag name such as --checkers")
            valid = False
            continue
        managed_reason = schema.managed_flag_reason(flag)
        if managed_reason is not None:
            context.error(flag_path, f"managed by cloudplow: {managed_reason}")
            valid = False
            continue
        if not _FLAG_NAME_RE.fullmatch(flag):
            if "=" in flag:
                reason = "give the value as the key's value ({--checkers: 16}), not after ="
            else:
                reason = "expected a long rclone flag starting with --, such as --checkers"
            context.error(flag_path, reason)
            valid = False
            continue
        for setting_item in setting if isinstance(setting, list) else [setting]:
            if setting_item is True:
                argv.append(flag)
            elif setting_item is False:
                pass
            elif isinstance(setting_item, str | int | float):
                argv.extend([flag, str(setting_item)])
            else:
                context.error(
                    flag_path,
                    f"expected text, a number, true/false or a list of them, "
                    f"got {_describe_type(setting_item)}",
                )
                valid = False
                break
    return tuple(argv) if valid else _INVALID


def _parse_secret(key: Key, value: Any, path: str, context: _Context) -> Any:
    # A credential: the error says what kind of value it got, never the value.
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        context.error(path, f"expected text, got {_describe_type(value) if value != '' else 'nothing'}")
        return _INVALID
    if key.pattern and not re.fullmatch(key.pattern, str(value)):
        context.error(path, f"use {key.pattern_doc} (value not shown)")
        return _INVALID
    return str(value)


def safe_url(url: str) -> str:
    """Given a URL, return host[:port] only: no user, password, path or query (for labels and logs)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "?"
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


def _parse_url(key: Key, value: Any, path: str, context: _Context) -> Any:
    # URLs may carry user:password@; errors never quote them.
    expected = 'expected an http(s) URL such as "http://127.0.0.1:8080"'
    if not isinstance(value, str) or not value.strip():
        context.error(path, f"{expected}, got {_describe_type(value)}")
        return _INVALID
    try:
        parts = urllib.parse.urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        context.error(path, f"{expected}; this one does not parse (bad port or brackets)")
        return _INVALID
    if parts.scheme not in ("http", "https") or not parts.hostname:
        context.error(path, f"{expected}; this one has no http(s) scheme or no host")
        return _INVALID
    return value.strip().rstrip("/")


def _parse_secret_list(key: Key, value: Any, path: str, context: _Context) -> Any:
    if not isinstance(value, list) or not value:
        context.error(path, f"expected a list of text with at least one entry, got {_describe_type(value)}")
        return _INVALID
    items = [_parse_secret(key, item, f"{path}[{index}]", context) for index, item in enumerate(value)]
    return tuple(items) if _valid(*items) else _INVALID


def _parse_choice_list(key: Key, value: Any, path: str, context: _Context) -> Any:
    if not isinstance(value, list):
        context.error(path, f"expected a list, got {_describe_type(value)}")
        return _INVALID
    valid = True
    for index, item in enumerate(value):
        if item not in key.choices:
            context.error(
                f"{path}[{index}]", f"expected one of {', '.join(key.choices)}, got {_describe(item)}"
            )
            valid = False
        elif value.index(item) != index:
            context.error(f"{path}[{index}]", f"{item!r} is listed twice")
            valid = False
    return tuple(value) if valid else _INVALID


def _parse_rate_table(key: Key, value: Any, path: str, context: _Context) -> Any:
    if not isinstance(value, dict):
        context.error(path, f"expected a mapping of active streams: rate, got {_describe_type(value)}")
        return _INVALID
    table: list[tuple[int, int]] = []
    valid = True
    for streams, rate in value.items():
        entry_path = _join(path, streams)
        if isinstance(streams, bool) or not isinstance(streams, int) or streams < 1:
            context.error(entry_path, "expected a whole number of streams, 1 or more, as the key")
            valid = False
            continue
        try:
            rate_bytes = parse_size(rate)
        except ValueError as error:
            context.error(entry_path, str(error))
            valid = False
            continue
        if rate_bytes <= 0:
            context.error(entry_path, "must be more than zero (remove the entry for unlimited)")
            valid = False
            continue
        table.append((streams, rate_bytes))
    return tuple(sorted(table)) if valid else _INVALID


_PARSERS: dict[str, Callable[[Key, Any, str, _Context], Any]] = {
    "section": _parse_section,
    "named_sections": _parse_named_sections,
    "section_list": _parse_section_list,
    "str": _parse_str,
    "int": _parse_int,
    "bool": _parse_bool,
    "size": _parse_size,
    "duration": _parse_duration,
    "path": _parse_path,
    "time": _parse_time,
    "choice": _parse_choice,
    "remote": _parse_remote,
    "str_list": _parse_str_list,
    "regex_list": _parse_regex_list,
    "env": _parse_env,
    "flags": _parse_flags,
    "secret": _parse_secret,
    "url": _parse_url,
    "secret_list": _parse_secret_list,
    "choice_list": _parse_choice_list,
    "rate_table": _parse_rate_table,
}


# --- checks across keys, and building the dataclasses -----------------------


def _check_binary(binary: Any, path: str, context: _Context) -> str | None:
    """
    Given rclone.binary as parsed, return it as cloudplow should run it: a
    bare name stays a name, a path becomes absolute. Record an error if it
    cannot be found or run.
    """
    if binary is None or not _valid(binary):
        return None
    if "/" not in binary and not binary.startswith("~"):
        if shutil.which(binary) is None:
            context.error(path, f"{binary!r} not found on PATH")
        return str(binary)
    program = context.base_dir / Path(binary).expanduser()
    if not program.is_file():
        context.error(path, f"no such file {str(program)!r}")
    elif not os.access(program, os.X_OK):
        context.error(path, f"{str(program)!r} is not executable")
    return str(program)


def _build_uploader(name: str, section: Any, path: str, context: _Context) -> Uploader | None:
    """
    Given an uploader's parsed section, return the Uploader, recording errors
    that involve several keys (accounts, reserve vs per_account, schedule).
    Return None if the section itself was not a mapping.
    """
    if not _valid(section):
        return None
    accounts = _build_accounts(section["accounts"], f"{path}.accounts", context)
    quota = _build_quota(section["quota"], f"{path}.quota", context)
    check = section["check"]
    if _valid(check):
        check = Check(
            interval_seconds=check["interval"],
            min_queue_bytes=check["min_queue"],
            max_age_seconds=check["max_age"],
            min_free_bytes=check["min_free"],
            watch=check["watch"],
        )
    filters = section["filters"]
    if _valid(filters):
        filters = Filters(
            min_age_seconds=filters["min_age"],
            exclude=filters["exclude"],
            exclude_open_files=filters["exclude_open_files"],
        )
    schedule = section["schedule"]
    if schedule is not None and _valid(schedule):
        start, end = schedule["from"], schedule["until"]
        if _valid(start, end) and start == end:
            context.error(
                f"{path}.schedule.until",
                "must differ from from; remove schedule to allow any time",
            )
        schedule = Schedule(start=start, end=end)
    destination = section["destination"]
    accounts_section = section["accounts"]
    accounts_dir = (
        accounts_section["dir"] if accounts_section is not None and _valid(accounts_section) else None
    )
    return Uploader(
        name=name,
        source=section["source"],
        destination=destination,
        remote=destination.partition(":")[0] if _valid(destination) else _INVALID,
        mode=section["mode"],
        accounts=accounts,
        accounts_dir=accounts_dir,
        quota=quota,
        check=check,
        filters=filters,
        schedule=schedule,
        transfers=section["transfers"],
        stall_timeout_seconds=section["stall_timeout"],
        rclone_flags=section["rclone_flags"],
        remove_empty_dirs=section["remove_empty_dirs"],
        throttle=section["throttle"],
    )


def _build_quota(quota: Any, path: str, context: _Context) -> Any:
    """Given a parsed quota section, return the Quota, recording a reserve not below per_account."""
    if not _valid(quota):
        return _INVALID
    per_account, reserve = quota["per_account"], quota["reserve"]
    if _valid(per_account, reserve) and reserve >= per_account:
        context.error(
            f"{path}.reserve",
            f"must be smaller than per_account ({format_size(per_account)}), got {format_size(reserve)}",
        )
    return Quota(
        per_account_bytes=per_account,
        window_seconds=quota["window"],
        reserve_bytes=reserve,
        overshoot=quota["overshoot"],
        limit_patterns=quota["limit_patterns"],
    )


def _build_syncers(sections: Any, uploaders: Mapping[str, Uploader], context: _Context) -> dict[str, Syncer]:
    """Given the parsed syncers (or None), return them by name; a name must not be an uploader's too."""
    syncers: dict[str, Syncer] = {}
    if sections is None or not _valid(sections):
        return syncers
    for name, section in sections.items():
        path = f"syncers.{name}"
        if not _valid(section):
            continue
        if name in uploaders:
            context.error(path, f"an uploader is named {name!r} too; their metrics and ledger would mix")
        destination = section["destination"]
        syncers[name] = Syncer(
            name=name,
            source=section["source"],
            destination=destination,
            remote=destination.partition(":")[0] if _valid(destination) else _INVALID,
            mode=section["mode"],
            accounts=_build_accounts(section["accounts"], f"{path}.accounts", context),
            accounts_dir=section["accounts"]["dir"]
            if section["accounts"] and _valid(section["accounts"])
            else None,
            quota=_build_quota(section["quota"], f"{path}.quota", context),
            interval_seconds=section["check"]["interval"] if _valid(section["check"]) else _INVALID,
            transfers=section["transfers"],
            stall_timeout_seconds=section["stall_timeout"],
            rclone_flags=section["rclone_flags"],
        )
    return syncers


def _job_uploaders(
    syncers: Mapping[str, Syncer],
    movers: Mapping[str, Mover],
    uploaders: Mapping[str, Uploader],
    state_dir: Path,
) -> dict[str, Uploader]:
    """
    Given the validated syncers and movers, return each as the uploader the
    session runs: a syncer with its own pool, copying; a mover with the pool
    and quota of the uploader it follows (a server-side move is charged like
    an upload), moving and removing the source folders it empties.
    """
    jobs: dict[str, Uploader] = {}
    no_filters = Filters(min_age_seconds=0, exclude=(), exclude_open_files=False)
    for syncer in syncers.values():
        jobs[syncer.name] = Uploader(
            name=syncer.name,
            source=state_dir,
            destination=syncer.destination,
            remote=syncer.remote,
            mode="copy",
            accounts=syncer.accounts,
            accounts_dir=syncer.accounts_dir,
            quota=syncer.quota,
            check=Check(syncer.interval_seconds, 0, 0, 0),
            filters=no_filters,
            schedule=None,
            transfers=syncer.transfers,
            stall_timeout_seconds=syncer.stall_timeout_seconds,
            rclone_flags=syncer.rclone_flags,
            remove_empty_dirs=False,
            throttle=False,
            remote_source=syncer.source,
            kind="syncer",
        )
    for mover in movers.values():
        after = uploaders[mover.after]
        jobs[mover.name] = Uploader(
            name=mover.name,
            source=state_dir,
            destination=mover.destination,
            remote=mover.destination.partition(":")[0],
            mode="move",
            accounts=after.accounts,
            accounts_dir=after.accounts_dir,
            quota=after.quota,
            check=Check(after.check.interval_seconds, 0, 0, 0),
            filters=no_filters,
            schedule=None,
            transfers=after.transfers,
            stall_timeout_seconds=after.stall_timeout_seconds,
            rclone_flags=("--delete-empty-src-dirs",),
            remove_empty_dirs=False,
            throttle=False,
            remote_source=mover.source,
            kind="mover",
        )
    return jobs


def _build_movers(
    sections: Any, uploaders: Mapping[str, Uploader], taken: Mapping[str, object], context: _Context
) -> dict[str, Mover]:
    """Given the parsed movers (or None), return them by name; `after` must name an uploader."""
    movers: dict[str, Mover] = {}
    if sections is None or not _valid(sections):
        return movers
    for name, section in sections.items():
        if not _valid(section):
            continue
        after = section["after"]
        if _valid(after) and after not in uploaders:
            context.error(
                f"movers.{name}.after",
                f"no uploader named {after!r} (uploaders: {', '.join(uploaders) or 'none'})",
            )
        if name in uploaders or name in taken:
            context.error(
                f"movers.{name}", f"{name!r} also names an uploader or syncer; their ledger would mix"
            )
        movers[name] = Mover(name=name, source=section["from"], destination=section["to"], after=after)
    return movers


def _build_accounts(section: Any, path: str, context: _Context) -> tuple[Account, ...]:
    """
    Given the parsed accounts section (None when absent), return the accounts
    in order: service-account files sorted by name, then the list. Record
    unreadable or invalid key files and duplicate names.
    """
    if section is None:
        return (DEFAULT_ACCOUNT,)
    if not _valid(section):
        return ()
    if section["dir"] is None and section["list"] is None and section["remotes"] is None:
        context.error(
            path, "give dir, remotes, list or a mix; remove accounts to use the one implicit account"
        )
        return ()
    accounts: list[Account] = []
    defined_at: dict[str, str] = {}
    if section["dir"] is not None and _valid(section["dir"]):
        for key_file in _service_account_files(section["dir"], f"{path}.dir", context):
            accounts.append(
                Account(key_file.stem, SecretEnv(), key_file, identity=service_account_identity(key_file))
            )
            defined_at[key_file.stem] = f"{path}.dir ({key_file.name})"
    if section["remotes"] is not None and _valid(section["remotes"]):
        for index, remote in enumerate(section["remotes"]):
            remote_path = f"{path}.remotes[{index}]"
            remote = remote.removesuffix(":")
            if not re.fullmatch(schema.ACCOUNT_NAME_PATTERN, remote):
                context.error(remote_path, f"bad remote name {remote!r}: use the name as in rclone.conf")
            elif remote in defined_at:
                context.error(
                    remote_path, f"duplicate account name {remote!r}, already defined by {defined_at[remote]}"
                )
            else:
                defined_at[remote] = remote_path
                accounts.append(Account(remote, SecretEnv(), None, remote=remote))
    if section["list"] is not None and _valid(section["list"]):
        for index, entry in enumerate(section["list"]):
            if not _valid(entry) or not _valid(entry["name"]):
                continue
            name = entry["name"]
            if name in defined_at:
                context.error(
                    f"{path}.list[{index}].name",
                    f"duplicate account name {name!r}, already defined by {defined_at[name]}",
                )
                continue
            defined_at[name] = f"{path}.list[{index}]"
            accounts.append(Account(name, entry["env"], None))
    return tuple(accounts)


def _service_account_files(folder: Path, path: str, context: _Context) -> list[Path]:
    """
    Given the accounts folder, return its valid service-account key files
    sorted by name. Record an error for each file that is not one, and if
    there are none. Hidden files are skipped (editor and sync leftovers).
    """
    try:
        candidates = sorted(
            entry
            for entry in folder.iterdir()
            if entry.suffix == ".json" and not entry.name.startswith(".") and entry.is_file()
        )
    except OSError as error:
        context.error(path, f"cannot list {str(folder)!r} ({error.strerror})")
        return []
    if not candidates:
        context.error(path, f"no *.json service-account keys in {str(folder)!r}")
        return []
    key_files = []
    for candidate in candidates:
        if not re.fullmatch(schema.ACCOUNT_NAME_PATTERN, candidate.stem):
            context.error(
                path,
                f"{candidate.name}: account name {candidate.stem!r} may contain only "
                "letters, digits, _ . @ and -",
            )
            continue
        problem = _service_account_problem(candidate)
        # A key that cannot be read now is the account's trouble, not the configuration's: the
        # session marks that account broken and goes on with the others.
        if problem is not None and not problem.startswith("cannot read"):
            context.error(path, f"{candidate.name} is not a service-account key: {problem}")
            continue
        key_files.append(candidate)
    return key_files


def service_account_identity(key_file: Path) -> str | None:
    """Given a service-account key file, return its client_email, or None if it cannot be read as one."""
    try:
        data = json.loads(key_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    email = data.get("client_email") if isinstance(data, dict) else None
    return email if isinstance(email, str) and email else None


def _service_account_problem(key_file: Path) -> str | None:
    """Given a JSON file, return why it is not a Google service-account key, or None if it is."""
    try:
        data = json.loads(key_file.read_text(encoding="utf-8"))
    except OSError as error:
        return f"cannot read ({error.strerror})"
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except json.JSONDecodeError as error:
        # The message names the position only, never the key material around it.
        return f"not valid JSON ({error.msg}, line {error.lineno})"
    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("type") != "service_account":
        return 'no "type": "service_account"'
    missing = [
        field
        for field in ("client_email", "private_key")
        if not isinstance(data.get(field), str) or not data[field]
    ]
    if missing:
        return "no " + " or ".join(f'"{field}"' for field in missing)
    return None


def _check_overlapping_sources(uploaders: Mapping[str, Uploader], context: _Context) -> None:
    """
    Record an error when two uploaders' sources are the same folder or one
    contains the other and either moves: both would upload, and delete, the
    same files.
    """
    seen: list[Uploader] = []
    for uploader in uploaders.values():
        if not _valid(uploader.source, uploader.mode):
            continue
        source = uploader.source.resolve()
        for earlier in seen:
            other = earlier.source.resolve()
            overlaps = source == other or other in source.parents or source in other.parents
            if overlaps and "move" in (uploader.mode, earlier.mode):
                context.error(
                    f"uploaders.{uploader.name}.source",
                    f"overlaps uploaders.{earlier.name}.source ({str(earlier.source)!r}); "
                    "with mode move both would upload and delete the same files",
                )
        seen.append(uploader)


# --- summary ----------------------------------------------------------------

# Flags whose values, or values that, look like credentials are masked in the summary.
_SECRET_FLAG_RE = re.compile(r"pass|secret|token|key|credential|auth|bearer", re.IGNORECASE)
_SECRET_VALUE_RE = re.compile(r"authorization|bearer|token", re.IGNORECASE)


def _format_size_both(size_bytes: int) -> str:
    return f"{format_size(size_bytes)} ({size_bytes / 2**30:.2f} GiB)"


def mask_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """
    Given rclone arguments, return them with the values of secret-looking
    flags (--webdav-pass, --drive-token, ...) and credential-looking values
    (Authorization headers) replaced by ***.
    """
    masked: list[str] = []
    for index, argument in enumerate(argv):
        previous = argv[index - 1] if index else ""
        is_value = not argument.startswith("-")
        if is_value and (_SECRET_FLAG_RE.search(previous) or _SECRET_VALUE_RE.search(argument)):
            masked.append(MASK)
        else:
            masked.append(argument)
    return tuple(masked)


def _summarize_uploader(uploader: Uploader) -> list[str]:
    quota, check, filters = uploader.quota, uploader.check, uploader.filters
    names = ", ".join(account.name for account in uploader.accounts)
    if uploader.accounts_dir is not None:
        origin = f" (service-account keys from {uploader.accounts_dir})"
    elif uploader.accounts == (DEFAULT_ACCOUNT,):
        origin = " (implicit: the remote as rclone.conf configures it)"
    else:
        origin = ""
    account_lines = textwrap.wrap(names, width=96, initial_indent=" " * 15, subsequent_indent=" " * 15)
    if uploader.schedule is None:
        schedule = "any time"
    else:
        start, end = uploader.schedule.start, uploader.schedule.end
        schedule = f"{start:%H:%M}-{end:%H:%M} local time" + (" (crosses midnight)" if end < start else "")
    patterns = ", ".join(repr(pattern) for pattern in quota.limit_patterns)
    return [
        f"uploader {uploader.name}:",
        f"  source:      {uploader.source}",
        f"  destination: {uploader.destination} (remote {uploader.remote!r})",
        f"  mode:        {uploader.mode}",
        f"  accounts:    {len(uploader.accounts)}{origin}",
        *account_lines,
        f"  quota:       {_format_size_both(quota.per_account_bytes)} per account "
        f"per {format_duration(quota.window_seconds)}, "
        f"reserve {_format_size_both(quota.reserve_bytes)}, "
        f"overshoot {'on' if quota.overshoot else 'off'}",
        f"  limit text:  {patterns}",
        f"  triggers:    every {format_duration(check.interval_seconds)}: queue >= "
        f"{format_size(check.min_queue_bytes)}, or oldest file older than "
        f"{format_duration(check.max_age_seconds)}, or free space < "
        f"{format_size(check.min_free_bytes)}",
        f"  schedule:    {schedule}",
        f"  filters:     files older than {format_duration(filters.min_age_seconds)}, "
        f"{len(filters.exclude)} exclude patterns, "
        f"{'skip' if filters.exclude_open_files else 'include'} open files",
        f"  transfers:   {uploader.transfers}, stall timeout "
        f"{format_duration(uploader.stall_timeout_seconds)}",
        f"  rclone flags: {' '.join(mask_argv(uploader.rclone_flags)) or 'none'}",
    ]
