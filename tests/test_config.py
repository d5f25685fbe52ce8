"""Tests for cloudplow.config: loading, validation errors, secrets, the sample and the reference."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudplow.config import (
    Account,
    Check,
    ConfigError,
    Filters,
    Quota,
    Schedule,
    Uploader,
    default_config_path,
    load_config,
    schema,
    summarize,
)
from cloudplow.config.sample import render_reference, render_sample

REPOSITORY = Path(__file__).resolve().parent.parent
SECRET = "hunter2-s3cret"
GB = 10**9
GIB = 2**30


def write_service_account(folder: Path, name: str, **overrides: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "type": "service_account",
        "client_email": f"{name}@project.iam.gserviceaccount.com",
        "private_key": "-----BEGIN PRIVATE KEY-----\nPRIVATE\n-----END PRIVATE KEY-----\n",
    }
    data.update(overrides)
    key_file = folder / f"{name}.json"
    key_file.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    return key_file


def write_config(folder: Path, document: Any, name: str = "config.yaml") -> Path:
    """Given a folder and a document (text or data), write it as YAML and return the path."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
    path.write_text(text)
    return path


def load_errors(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A folder with what the configurations below refer to, by relative path."""
    (tmp_path / "media").mkdir()
    (tmp_path / "tv").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file.txt").write_text("not a folder")
    (tmp_path / "rclone.conf").write_text("[gdrive]\ntype = drive\n")
    write_service_account(tmp_path / "sa", "sa2")
    write_service_account(tmp_path / "sa", "sa1")
    (tmp_path / "sa" / "README.txt").write_text("not a key")
    (tmp_path / "sa" / ".hidden.json").write_text("editor leftover")
    write_service_account(tmp_path / "bad_sa", "user", type="authorized_user")
    write_service_account(tmp_path / "no_key_sa", "sa1", private_key=None)
    (tmp_path / "broken_sa").mkdir()
    (tmp_path / "broken_sa" / "sa1.json").write_text("{not json")
    write_service_account(tmp_path / "alice_sa", "alice")
    return tmp_path


def minimal_document() -> dict[str, Any]:
    return {"uploaders": {"media": {"source": "./media", "destination": "gdrive:/Media"}}}


# --- a good configuration -----------------------------------------------------


def test_full_config_loads_with_exact_values(tree: Path) -> None:
    binary = tree / "bin" / "rclone"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    path = write_config(
        tree,
        """
rclone:
  binary: ./bin/rclone
  config: ./rclone.conf
state_dir: ./var/state
server: {host: 0.0.0.0, port: 8080}
uploaders:
  media:
    source: ./media
    destination: "gdrive:/Media"
    mode: copy
    accounts:
      dir: ./sa
      list:
        - name: alice
          env: {RCLONE_CONFIG_DAV_USER: alice, RCLONE_CONFIG_DAV_PASS: "hunter2-s3cret",
                RCLONE_CONFIG_DAV_PACER: 5, RCLONE_HARD_DELETE: true}
        - name: bob@example.com
    quota:
      per_account: 700GiB
      window: 12h
      reserve: 5G
      overshoot: true
      limit_patterns: ["rate limit", "quota.*exceeded"]
    check: {interval: 90s, min_queue: 1000000, max_age: 1h30m, min_free: 0}
    filters: {min_age: 0, exclude: ["*.tmp"], exclude_open_files: false}
    schedule: {from: "23:30", until: "06:00"}
    transfers: 4
    stall_timeout: 1d
    rclone_flags:
      --checkers: 16
      --fast-list: true
      --no-traverse: false
      --drive-chunk-size: 64M
      --header-upload: ["X-A: 1", "X-B: 2"]
      --bwlimit: 1.5
  tv:
    source: ./tv
    destination: "dav:"
""",
    )
    config = load_config(path)

    assert config.path == path
    assert config.rclone_binary == str(binary)
    assert config.rclone_config == tree / "rclone.conf"
    assert config.state_dir == tree / "var" / "state"
    assert (config.server_host, config.server_port) == ("0.0.0.0", 8080)
    assert list(config.uploaders) == ["media", "tv"]

    media = config.uploaders["media"]
    assert media == Uploader(
        name="media",
        source=tree / "media",
        destination="gdrive:/Media",
        remote="gdrive",
        mode="copy",
        accounts=(
            Account("sa1", {}, tree / "sa" / "sa1.json", identity="sa1@project.iam.gserviceaccount.com"),
            Account("sa2", {}, tree / "sa" / "sa2.json", identity="sa2@project.iam.gserviceaccount.com"),
            Account(
                "alice",
                {
                    "RCLONE_CONFIG_DAV_USER": "alice",
                    "RCLONE_CONFIG_DAV_PASS": SECRET,
                    "RCLONE_CONFIG_DAV_PACER": "5",
                    "RCLONE_HARD_DELETE": "true",
                },
                None,
            ),
            Account("bob@example.com", {}, None),
        ),
        accounts_dir=tree / "sa",
        quota=Quota(
            per_account_bytes=700 * GIB,
            window_seconds=12 * 3600,
            reserve_bytes=5 * GIB,
            overshoot=True,
            limit_patterns=("rate limit", "quota.*exceeded"),
        ),
        check=Check(
            interval_seconds=90,
            min_queue_bytes=1_000_000,
            max_age_seconds=5400,
            min_free_bytes=0,
        ),
        filters=Filters(min_age_seconds=0, exclude=("*.tmp",), exclude_open_files=False),
        schedule=Schedule(start=datetime.time(23, 30), end=datetime.time(6, 0)),
        transfers=4,
        stall_timeout_seconds=86400,
        rclone_flags=(
            "--checkers",
            "16",
            "--fast-list",
            "--drive-chunk-size",
            "64M",
            "--header-upload",
            "X-A: 1",
            "--header-upload",
            "X-B: 2",
            "--bwlimit",
            "1.5",
        ),
    )
    assert config.uploaders["tv"].remote == "dav"
    assert config.uploaders["tv"].destination == "dav:"


def test_defaults(tree: Path) -> None:
    config = load_config(write_config(tree, minimal_document()))

    assert config.rclone_binary is None
    assert config.rclone_config is None
    assert config.state_dir == tree / "state"
    assert (config.server_host, config.server_port) == ("127.0.0.1", 47949)
    assert config.uploaders["media"] == Uploader(
        name="media",
        source=tree / "media",
        destination="gdrive:/Media",
        remote="gdrive",
        mode="move",
        accounts=(Account("default", {}, None),),
        accounts_dir=None,
        quota=Quota(
            per_account_bytes=750 * GB,
            window_seconds=86400,
            reserve_bytes=1 * GB,
            overshoot=False,
            limit_patterns=("User rate limit exceeded",),
        ),
        check=Check(
            interval_seconds=1800,
            min_queue_bytes=200 * GB,
            max_age_seconds=12 * 3600,
            min_free_bytes=50 * GB,
        ),
        filters=Filters(
            min_age_seconds=300,
            exclude=("**partial~", "**_HIDDEN~", ".unionfs/**", ".unionfs-fuse/**"),
            exclude_open_files=True,
        ),
        schedule=None,
        transfers=8,
        stall_timeout_seconds=900,
        rclone_flags=(),
    )


@pytest.mark.parametrize(
    ("written", "expected_bytes"),
    [
        ("750GB", 750 * 10**9),
        ("750GiB", 750 * 2**30),
        ("750G", 750 * 2**30),
        ("1.5TB", 1_500_000_000_000),
        ("512MiB", 512 * 2**20),
        (123456789, 123456789),
    ],
)
def test_sizes(tree: Path, written: object, expected_bytes: int) -> None:
    document = minimal_document()
    document["uploaders"]["media"]["quota"] = {"per_account": written, "reserve": 0}
    config = load_config(write_config(tree, document))
    assert config.uploaders["media"].quota.per_account_bytes == expected_bytes


@pytest.mark.parametrize(
    ("written", "expected_seconds"),
    [("30s", 30), ("5m", 300), ("12h", 43200), ("1d", 86400), ("1h30m", 5400), (45, 45)],
)
def test_durations(tree: Path, written: object, expected_seconds: float) -> None:
    document = minimal_document()
    document["uploaders"]["media"]["check"] = {"interval": written}
    config = load_config(write_config(tree, document))
    assert config.uploaders["media"].check.interval_seconds == expected_seconds


def test_relative_paths_resolve_against_the_config_folder(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = {
        "rclone": {"config": "../rclone.conf"},
        "state_dir": "state",
        "uploaders": {
            "media": {
                "source": "../media",
                "destination": "gdrive:Media",
                "accounts": {"dir": "../sa"},
            }
        },
    }
    write_config(tree / "etc", document)
    elsewhere = tree / "empty"
    monkeypatch.chdir(elsewhere)

    config = load_config(Path("../etc/config.yaml"))

    assert config.path == elsewhere / "../etc/config.yaml"
    assert config.path.is_absolute()
    assert config.state_dir == config.path.parent / "state"
    assert config.rclone_config is not None
    assert config.rclone_config.resolve() == tree / "rclone.conf"
    assert config.uploaders["media"].source.resolve() == tree / "media"
    accounts_dir = config.uploaders["media"].accounts_dir
    assert accounts_dir is not None
    assert accounts_dir.resolve() == tree / "sa"


def test_unquoted_times_are_times_not_base_60_numbers(tree: Path) -> None:
    # YAML 1.1 reads 1:00 as 60; cloudplow's loader must not.
    text = (
        "uploaders:\n  media:\n    source: ./media\n    destination: gdrive:/x\n"
        "    schedule: {from: 1:00, until: 7:30}\n"
    )
    config = load_config(write_config(tree, text))
    assert config.uploaders["media"].schedule == Schedule(datetime.time(1, 0), datetime.time(7, 30))


def test_numeric_uploader_names_are_names(tree: Path) -> None:
    text = "uploaders:\n  2024:\n    source: ./media\n    destination: gdrive:/x\n"
    config = load_config(write_config(tree, text))
    assert list(config.uploaders) == ["2024"]
    assert config.uploaders["2024"].name == "2024"


def test_config_is_frozen(tree: Path) -> None:
    config = load_config(write_config(tree, minimal_document()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server_port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.uploaders["other"] = config.uploaders["media"]  # type: ignore[index]
    with pytest.raises(TypeError):
        config.uploaders["media"].accounts[0].env["X"] = "y"  # type: ignore[index]


def test_default_config_path() -> None:
    environ = {"CLOUDPLOW_CONFIG": "/etc/cloudplow.yaml"}
    assert default_config_path("/x/c.yaml", environ) == Path("/x/c.yaml")
    assert default_config_path(None, environ) == Path("/etc/cloudplow.yaml")
    assert default_config_path(None, {}) == Path("config.yaml")
    assert default_config_path(None, {"CLOUDPLOW_CONFIG": ""}) == Path("config.yaml")


# --- bad configurations -------------------------------------------------------

DELETE = object()
MANAGED = "managed by cloudplow"

# (test id, [(key path as a tuple, value or DELETE)], expected error key path, reason text)
BadCase = tuple[str, list[tuple[tuple[str, ...], Any]], str, str]
BAD_CONFIGS: list[BadCase] = [
    ("unknown-top-key", [(("colour",), "red")], "colour", "unknown key"),
    (
        "unknown-nested-key",
        [(("uploaders", "media", "quota", "per_acount"), "1GB")],
        "uploaders.media.quota.per_acount",
        "did you mean 'per_account'",
    ),
    ("unknown-server-key", [(("server", "hots"), "x")], "server.hots", "unknown key"),
    ("port-as-text", [(("server", "port"), "80")], "server.port", "expected a whole number"),
    ("port-too-big", [(("server", "port"), 70000)], "server.port", "at most 65535"),
    ("port-zero", [(("server", "port"), 0)], "server.port", "at least 1"),
    ("section-not-mapping", [(("server",), "x")], "server", "expected a mapping"),
    (
        "no-value",
        [(("uploaders", "media", "transfers"), None)],
        "uploaders.media.transfers",
        "has no value",
    ),
    (
        "bad-size",
        [(("uploaders", "media", "quota", "per_account"), "lots")],
        "uploaders.media.quota.per_account",
        "expected a size such as 750GB",
    ),
    (
        "negative-size",
        [(("uploaders", "media", "check", "min_free"), -1)],
        "uploaders.media.check.min_free",
        "negative",
    ),
    (
        "zero-per-account",
        [(("uploaders", "media", "quota", "per_account"), "0GB")],
        "uploaders.media.quota.per_account",
        "more than zero",
    ),
    (
        "bad-duration",
        [(("uploaders", "media", "check", "interval"), "soon")],
        "uploaders.media.check.interval",
        "expected a duration",
    ),
    (
        "zero-window",
        [(("uploaders", "media", "quota", "window"), "0s")],
        "uploaders.media.quota.window",
        "more than zero",
    ),
    (
        "zero-interval",
        [(("uploaders", "media", "check", "interval"), 0)],
        "uploaders.media.check.interval",
        "more than zero",
    ),
    (
        "zero-stall-timeout",
        [(("uploaders", "media", "stall_timeout"), "0m")],
        "uploaders.media.stall_timeout",
        "more than zero",
    ),
    (
        "reserve-not-below-per-account",
        [
            (("uploaders", "media", "quota", "per_account"), "10GB"),
            (("uploaders", "media", "quota", "reserve"), "10GB"),
        ],
        "uploaders.media.quota.reserve",
        "smaller than per_account",
    ),
    (
        "transfers-zero",
        [(("uploaders", "media", "transfers"), 0)],
        "uploaders.media.transfers",
        "at least 1",
    ),
    (
        "transfers-bool",
        [(("uploaders", "media", "transfers"), True)],
        "uploaders.media.transfers",
        "expected a whole number",
    ),
    (
        "overshoot-not-bool",
        [(("uploaders", "media", "quota", "overshoot"), "yes please")],
        "uploaders.media.quota.overshoot",
        "expected true or false",
    ),
    ("uploaders-missing", [(("uploaders",), DELETE)], "uploaders", "missing (required)"),
    ("uploaders-empty", [(("uploaders",), {})], "uploaders", "is empty"),
    ("uploaders-not-mapping", [(("uploaders",), ["media"])], "uploaders", "expected a mapping"),
    (
        "bad-uploader-name",
        [
            (("uploaders", "media"), DELETE),
            (("uploaders", "My Media"), {"source": "./media", "destination": "gdrive:"}),
        ],
        "uploaders.My Media",
        "bad name",
    ),
    (
        "source-missing",
        [(("uploaders", "media", "source"), DELETE)],
        "uploaders.media.source",
        "missing (required)",
    ),
    (
        "source-not-existing",
        [(("uploaders", "media", "source"), "./nowhere")],
        "uploaders.media.source",
        "no such folder",
    ),
    (
        "source-a-file",
        [(("uploaders", "media", "source"), "./a_file.txt")],
        "uploaders.media.source",
        "is not a folder",
    ),
    (
        "destination-local-path",
        [(("uploaders", "media", "destination"), "/mnt/x")],
        "uploaders.media.destination",
        "is a local path",
    ),
    (
        "destination-no-remote",
        [(("uploaders", "media", "destination"), ":path")],
        "uploaders.media.destination",
        "no remote name",
    ),
    (
        "destination-empty",
        [(("uploaders", "media", "destination"), "")],
        "uploaders.media.destination",
        'expected "remote:path"',
    ),
    (
        "destination-connection-string",
        [(("uploaders", "media", "destination"), "gdrive,shared_with_me:x")],
        "uploaders.media.destination",
        "connection-string",
    ),
    (
        "mode-sync",
        [(("uploaders", "media", "mode"), "sync")],
        "uploaders.media.mode",
        "expected move or copy, got 'sync'",
    ),
    (
        "accounts-empty",
        [(("uploaders", "media", "accounts"), {})],
        "uploaders.media.accounts",
        "give dir, remotes, list or a mix",
    ),
    (
        "accounts-dir-missing",
        [(("uploaders", "media", "accounts"), {"dir": "./no_sa"})],
        "uploaders.media.accounts.dir",
        "no such folder",
    ),
    (
        "accounts-dir-a-file",
        [(("uploaders", "media", "accounts"), {"dir": "./a_file.txt"})],
        "uploaders.media.accounts.dir",
        "is not a folder",
    ),
    (
        "accounts-dir-no-json",
        [(("uploaders", "media", "accounts"), {"dir": "./empty"})],
        "uploaders.media.accounts.dir",
        "no *.json",
    ),
    (
        "accounts-dir-not-service-account",
        [(("uploaders", "media", "accounts"), {"dir": "./bad_sa"})],
        "uploaders.media.accounts.dir",
        'user.json is not a service-account key: no "type"',
    ),
    (
        "accounts-dir-no-private-key",
        [(("uploaders", "media", "accounts"), {"dir": "./no_key_sa"})],
        "uploaders.media.accounts.dir",
        'no "private_key"',
    ),
    (
        "accounts-dir-broken-json",
        [(("uploaders", "media", "accounts"), {"dir": "./broken_sa"})],
        "uploaders.media.accounts.dir",
        "not valid JSON",
    ),
    (
        "accounts-list-empty",
        [(("uploaders", "media", "accounts"), {"list": []})],
        "uploaders.media.accounts.list",
        "is empty",
    ),
    (
        "duplicate-account-in-list",
        [(("uploaders", "media", "accounts"), {"list": [{"name": "a"}, {"name": "a"}]})],
        "uploaders.media.accounts.list[1].name",
        "duplicate account name 'a'",
    ),
    (
        "duplicate-account-dir-and-list",
        [(("uploaders", "media", "accounts"), {"dir": "./alice_sa", "list": [{"name": "alice"}]})],
        "uploaders.media.accounts.list[0].name",
        "already defined by uploaders.media.accounts.dir",
    ),
    (
        "bad-account-name",
        [(("uploaders", "media", "accounts"), {"list": [{"name": "al ice"}]})],
        "uploaders.media.accounts.list[0].name",
        "bad value 'al ice'",
    ),
    (
        "account-without-name",
        [(("uploaders", "media", "accounts"), {"list": [{"env": {"A": "b"}}]})],
        "uploaders.media.accounts.list[0].name",
        "missing (required)",
    ),
    (
        "env-not-mapping",
        [(("uploaders", "media", "accounts"), {"list": [{"name": "a", "env": ["A=b"]}]})],
        "uploaders.media.accounts.list[0].env",
        "expected a mapping of VARIABLE: value",
    ),
    (
        "env-value-list",
        [(("uploaders", "media", "accounts"), {"list": [{"name": "a", "env": {"A": ["b"]}}]})],
        "uploaders.media.accounts.list[0].env.A",
        "expected a text value, got a list",
    ),
    (
        "env-bad-name",
        [(("uploaders", "media", "accounts"), {"list": [{"name": "a", "env": {"1X": "b"}}]})],
        "uploaders.media.accounts.list[0].env.1X",
        "not an environment variable name",
    ),
    (
        "schedule-bad-time",
        [(("uploaders", "media", "schedule"), {"from": "25:00", "until": "07:00"})],
        "uploaders.media.schedule.from",
        'expected a time "HH:MM"',
    ),
    (
        "schedule-empty-window",
        [(("uploaders", "media", "schedule"), {"from": "01:00", "until": "1:00"})],
        "uploaders.media.schedule.until",
        "must differ from from",
    ),
    (
        "schedule-missing-until",
        [(("uploaders", "media", "schedule"), {"from": "01:00"})],
        "uploaders.media.schedule.until",
        "missing (required)",
    ),
    (
        "limit-patterns-empty",
        [(("uploaders", "media", "quota", "limit_patterns"), [])],
        "uploaders.media.quota.limit_patterns",
        "needs at least one pattern",
    ),
    (
        "limit-patterns-bad-regex",
        [(("uploaders", "media", "quota", "limit_patterns"), ["rate ("])],
        "uploaders.media.quota.limit_patterns[0]",
        "bad regular expression",
    ),
    (
        "limit-patterns-match-everything",
        [(("uploaders", "media", "quota", "limit_patterns"), ["ok", ".*"])],
        "uploaders.media.quota.limit_patterns[1]",
        "matches empty text",
    ),
    (
        "exclude-not-list",
        [(("uploaders", "media", "filters", "exclude"), "*.tmp")],
        "uploaders.media.filters.exclude",
        "expected a list of text",
    ),
    (
        "flag-without-dashes",
        [(("uploaders", "media", "rclone_flags"), {"checkers": 4})],
        "uploaders.media.rclone_flags.checkers",
        "starting with --",
    ),
    (
        "flag-with-equals",
        [(("uploaders", "media", "rclone_flags"), {"--checkers=4": True})],
        "uploaders.media.rclone_flags.--checkers=4",
        "not after =",
    ),
    (
        "flag-value-mapping",
        [(("uploaders", "media", "rclone_flags"), {"--x": {"a": 1}})],
        "uploaders.media.rclone_flags.--x",
        "got a mapping",
    ),
    (
        "flags-not-mapping",
        [(("uploaders", "media", "rclone_flags"), ["--fast-list"])],
        "uploaders.media.rclone_flags",
        "expected a mapping of --flag: value",
    ),
    (
        "rclone-config-missing",
        [(("rclone", "config"), "./missing.conf")],
        "rclone.config",
        "no such file",
    ),
    ("rclone-config-a-folder", [(("rclone", "config"), "./empty")], "rclone.config", "is a folder"),
    (
        "rclone-binary-missing",
        [(("rclone", "binary"), "./bin/rclone")],
        "rclone.binary",
        "no such file",
    ),
    (
        "rclone-binary-not-on-path",
        [(("rclone", "binary"), "no-such-rclone-program")],
        "rclone.binary",
        "not found on PATH",
    ),
    ("state-dir-a-file", [(("state_dir",), "./a_file.txt")], "state_dir", "is not a folder"),
    (
        "overlapping-sources",
        [(("uploaders", "tv"), {"source": "./media/..//media", "destination": "other:"})],
        "uploaders.tv.source",
        "overlaps uploaders.media.source",
    ),
]
BAD_CONFIGS += [
    (
        f"managed-flag{flag}",
        [(("uploaders", "media", "rclone_flags"), {flag: "x"})],
        f"uploaders.media.rclone_flags.{flag}",
        MANAGED,
    )
    for flag in (
        "--config",
        "--files-from",
        "--files-from-raw",
        "--rc",
        "--rc-addr",
        "--rc_user",
        "--use-json-log",
        "--log-file",
        "--log-level",
        "-v",
        "-vv",
        "--verbose",
        "--max-transfer",
        "--transfers",
        "--stats",
        "--dry-run",
        "--Log-Level",
    )
]


def apply(document: dict[str, Any], changes: list[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    for key_path, value in changes:
        parent = document
        for name in key_path[:-1]:
            parent = parent.setdefault(name, {})
        if value is DELETE:
            del parent[key_path[-1]]
        else:
            parent[key_path[-1]] = value
    return document


def test_there_are_at_least_twenty_bad_configurations() -> None:
    assert len({case[0] for case in BAD_CONFIGS}) == len(BAD_CONFIGS) >= 20


@pytest.mark.parametrize(
    ("changes", "expected_path", "expected_reason"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_CONFIGS],
)
def test_bad_configuration(
    tree: Path,
    changes: list[tuple[tuple[str, ...], Any]],
    expected_path: str,
    expected_reason: str,
) -> None:
    path = write_config(tree, apply(minimal_document(), changes))

    error = load_errors(path)

    # Each case breaks one thing, so exactly one error, named by its key path, on one line.
    assert error.errors == [error.errors[0]], error.errors
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"{expected_path}: "), message
    assert expected_reason in message


def test_all_errors_are_collected(tree: Path) -> None:
    document = apply(
        minimal_document(),
        [
            (("server", "port"), "eighty"),
            (("uploaders", "media", "quota", "per_account"), "lots"),
            (("uploaders", "media", "mode"), "sync"),
        ],
    )
    error = load_errors(write_config(tree, document))

    assert [message.split(":")[0] for message in error.errors] == [
        "server.port",
        "uploaders.media.mode",
        "uploaders.media.quota.per_account",
    ]
    assert str(error) == f"{error.errors[0]} (and 2 more)"
    assert (
        "uploaders.media.quota.per_account: expected a size such as 750GB, 750GiB, 750G or "
        "bytes, got 'lots'" in error.errors
    )


def test_errors_inside_a_badly_named_uploader_are_reported_too(tree: Path) -> None:
    document = {"uploaders": {"Media": {"source": "./media", "destination": "/local"}}}
    error = load_errors(write_config(tree, document))
    assert [message.split(":")[0] for message in error.errors] == [
        "uploaders.Media",
        "uploaders.Media.destination",
    ]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "no such file"),
        ("uploaders: [\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping of keys at the top, got a list"),
        ("", "is empty"),
        ("# only comments\n", "is empty"),
        ("server: {port: 1}\nserver: {port: 2}\n", "duplicate key 'server' (line 2, column 1)"),
        (b"state_dir: \xff\n", "not UTF-8"),
    ],
    ids=["missing", "not-yaml", "not-mapping", "empty", "comments-only", "duplicate", "binary"],
)
def test_bad_files(tmp_path: Path, content: str | bytes | None, reason: str) -> None:
    path = tmp_path / "config.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)

    error = load_errors(path)

    assert str(error).startswith(f"{path}: ")
    assert reason in str(error)
    assert "\n" not in str(error)


def test_a_folder_is_not_a_config_file(tmp_path: Path) -> None:
    assert "is a folder" in str(load_errors(tmp_path))


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root (as in CI) reads a file whatever its mode, so the refusal is simulated.
    path = write_config(tmp_path, minimal_document())

    def refuse(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    assert str(load_errors(path)) == f"{path}: cannot read (Permission denied)"


def test_config_error_from_one_message() -> None:
    error = ConfigError("state_dir: bad\nthing")
    assert error.errors == ["state_dir: bad thing"]
    assert str(error) == "state_dir: bad thing"


# --- secrets ------------------------------------------------------------------


def test_secrets_never_appear_in_errors_repr_or_summary(tree: Path) -> None:
    account = {"name": "alice", "env": {"RCLONE_CONFIG_DAV_PASS": SECRET}}
    broken_account = {
        "name": "bob",
        "env": {
            "RCLONE_CONFIG_DAV_PASS": [SECRET],
            f"RCLONE_CONFIG_DAV_USER={SECRET}": "x",
        },
    }
    good = apply(
        minimal_document(),
        [
            (("uploaders", "media", "accounts"), {"list": [account]}),
            (("uploaders", "media", "rclone_flags"), {"--webdav-pass": SECRET}),
        ],
    )
    bad = apply(good, [(("uploaders", "media", "accounts", "list"), [account, broken_account])])
    bad_yaml = f'uploaders:\n  media:\n    env: {{PASS: "{SECRET}\n'

    config = load_config(write_config(tree, good))
    error = load_errors(write_config(tree, bad, name="bad.yaml"))
    yaml_error = load_errors(write_config(tree, bad_yaml, name="bad_yaml.yaml"))

    assert config.uploaders["media"].accounts[0].env["RCLONE_CONFIG_DAV_PASS"] == SECRET
    summary = summarize(config)
    assert "alice" in summary
    for text in (summary, repr(config), str(config), str(error), repr(yaml_error.errors)):
        assert SECRET not in text
    assert "RCLONE_CONFIG_DAV_USER=***" in " ".join(error.errors)
    assert "--webdav-pass ***" in summary


# --- summary ------------------------------------------------------------------


def test_summary(tree: Path) -> None:
    document = apply(
        minimal_document(),
        [
            (("uploaders", "media", "accounts"), {"dir": "./sa", "list": [{"name": "alice"}]}),
            (("uploaders", "media", "schedule"), {"from": "22:00", "until": "06:00"}),
            (("uploaders", "media", "rclone_flags"), {"--checkers": 16}),
        ],
    )
    summary = summarize(load_config(write_config(tree, document)))

    for expected in (
        "uploader media:",
        f"source:      {tree / 'media'}",
        "destination: gdrive:/Media (remote 'gdrive')",
        "mode:        move",
        "accounts:    3",
        "sa1, sa2, alice",
        "750.00 GB (698.49 GiB) per account",
        "reserve 1.00 GB",
        "overshoot off",
        "every 30m",
        "queue >= 200.00 GB",
        "older than 12h",
        "free space < 50.00 GB",
        "22:00-06:00 local time (crosses midnight)",
        "transfers:   8",
        "--checkers 16",
        "http://127.0.0.1:47949",
    ):
        assert expected in summary, expected


def test_summary_of_the_implicit_account(tree: Path) -> None:
    summary = summarize(load_config(write_config(tree, minimal_document())))
    assert "accounts:    1 (implicit" in summary
    assert "schedule:    any time" in summary


# --- the sample and the reference ---------------------------------------------


def test_sample_file_is_the_rendered_sample() -> None:
    committed = (REPOSITORY / "config.yaml.sample").read_text()
    assert committed == render_sample(), (
        "config.yaml.sample is stale: python -m cloudplow.config.sample > config.yaml.sample"
    )


def test_sample_module_prints_the_sample() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cloudplow.config.sample"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPOSITORY,
    )
    assert result.stdout == render_sample()
    assert result.stderr == ""


def test_sample_loads_once_source_exists(tree: Path) -> None:
    text = (REPOSITORY / "config.yaml.sample").read_text()
    assert "/mnt/local/Media" in text
    path = write_config(tree, text.replace("/mnt/local/Media", str(tree / "media")))

    config = load_config(path)

    media = config.uploaders["media"]
    assert media.destination == "gdrive:/Media"
    assert media.accounts == (Account("default", {}, None),)
    assert media.schedule is None
    assert media.quota.overshoot is False
    assert media.rclone_flags == ("--checkers", "16", "--drive-chunk-size", "64M")


def test_sample_with_every_key_written_out_loads(tree: Path) -> None:
    text = (
        render_sample(all_keys=True)
        .replace("/mnt/local/Media", str(tree / "media"))
        .replace("/config/sa", str(tree / "sa"))
        .replace("binary: rclone", f"binary: {sys.executable}")
    )
    config = load_config(write_config(tree, text))

    media = config.uploaders["media"]
    assert [account.name for account in media.accounts] == ["sa1", "sa2", "gdrive2", "gdrive3", "alice"]
    assert [account.remote for account in media.accounts] == [None, None, "gdrive2", "gdrive3", None]
    assert media.schedule == Schedule(datetime.time(1, 0), datetime.time(7, 0))
    assert config.rclone_config == tree / "rclone.conf"


def test_sample_documents_every_key() -> None:
    full_sample = render_sample(all_keys=True)
    document = yaml.safe_load(full_sample)
    lines = full_sample.splitlines()
    for dotted_path, key in schema.walk(schema.ROOT):
        # Every key is present in the full sample ...
        node: Any = document
        for part in dotted_path.replace("[]", ".[]").split("."):
            node = next(iter(node.values())) if part == "<name>" else node[0] if part == "[]" else node[part]
        # ... on a line right below its documentation from the schema (names such as url
        # or quota appear in several sections; one of their lines has this key's doc).
        key_lines = [
            index
            for index, line in enumerate(lines)
            if line.strip().removeprefix("- ").startswith(f"{key.name}:")
        ]
        assert key_lines, dotted_path
        comments = []
        for key_line in key_lines:
            comment: list[str] = []
            index = key_line - 1
            while lines[index].lstrip().startswith("#"):
                comment.insert(0, lines[index].strip().removeprefix("#").strip())
                index -= 1
            comments.append(" ".join(comment))
        assert any(comment.startswith(key.doc) for comment in comments), dotted_path


def test_commented_sample_keeps_optional_keys_visible() -> None:
    sample = render_sample()
    assert "# accounts:" in sample
    assert "# dir: /config/sa" in sample
    assert '# from: "01:00"' in sample
    assert "# binary: rclone" in sample


def test_reference_has_a_row_per_key() -> None:
    reference = render_reference()
    rows = reference.splitlines()
    assert rows[0] == "| Key | Type | Default | Description |"
    paths = [path for path, _ in schema.walk(schema.ROOT)]
    assert len(rows) == len(paths) + 2
    for path, row in zip(paths, rows[2:], strict=True):
        assert row.startswith(f"| `{path}` |")
    assert "| `uploaders.<name>.quota.per_account` | size | `750GB` |" in reference
    assert "| `uploaders.<name>.source` | path | **required** |" in reference


# --- integrations, jobs beside the uploaders, the shared state ---------------

PLANTED = "pl4nted-s3cret"

INTEGRATIONS = {
    "media_servers": [
        {
            "kind": "plex",
            "url": "http://127.0.0.1:32400",
            "token": PLANTED,
            "throttle": {1: "50M", 3: "20MB"},
        },
        {"kind": "jellyfin", "url": "http://127.0.0.1:8096/", "token": PLANTED, "ignore_local": False},
    ],
    "downloaders": [
        {"kind": "sabnzbd", "url": "http://127.0.0.1:8080", "api_key": PLANTED},
        {"kind": "qbittorrent", "url": f"http://admin:{PLANTED}@127.0.0.1:8081", "username": "admin"},
    ],
    "notifications": {"urls": [f"json://127.0.0.1:8000/{PLANTED}"], "events": ["failed"]},
    "state": {"url": f"postgresql://cloudplow:{PLANTED}@db/cloudplow", "host": "seedbox-1"},
    "movers": {"staging": {"from": "staging:Media", "to": "gdrive:Media", "after": "media"}},
    "syncers": {
        "backup": {"source": "gdrive:/Media", "destination": "backup:/Media", "accounts": {"dir": "./sa"}}
    },
    "hidden": [{"folder": "./media", "remotes": ["gdrive:"]}],
}


def test_integrations_load_with_units_and_defaults(tree: Path) -> None:
    config = load_config(write_config(tree, {**minimal_document(), **INTEGRATIONS}))

    plex, jellyfin = config.media_servers
    assert plex.throttle == ((1, 50 * 2**20), (3, 20 * 10**6)) and plex.poll_seconds == 30
    assert plex.ignore_local and not jellyfin.ignore_local
    assert jellyfin.url == "http://127.0.0.1:8096" and jellyfin.throttle[0] == (1, 50 * 2**20)
    assert [downloader.name for downloader in config.downloaders] == [
        "sabnzbd@127.0.0.1:8080",
        "qbittorrent@127.0.0.1:8081",
    ]
    assert config.notifications is not None and config.notifications.events == ("failed",)
    assert config.state.host == "seedbox-1" and config.state.url is not None
    assert config.movers["staging"].after == "media"
    backup = config.syncers["backup"]
    assert backup.mode == "copy" and backup.interval_seconds == 86400 and backup.remote == "backup"
    assert [account.name for account in backup.accounts] == ["sa1", "sa2"]
    assert config.hidden[0].folder == tree / "media" and config.hidden[0].interval_seconds == 3600
    media = config.uploaders["media"]
    assert media.remove_empty_dirs and media.throttle and not media.check.watch
    # No credential in the summary or any repr.
    assert PLANTED not in summarize(config)
    assert PLANTED not in repr(config)


def test_without_integrations_the_defaults_are_empty(tree: Path) -> None:
    config = load_config(write_config(tree, minimal_document()))

    assert config.media_servers == () and config.downloaders == () and config.hidden == ()
    assert config.notifications is None and config.state.url is None and config.state.host
    assert not config.movers and not config.syncers


@pytest.mark.parametrize(
    ("changes", "expected_path", "expected_reason"),
    [
        (
            [(("media_servers",), [{"kind": "kodi", "url": "http://x", "token": "t"}])],
            "media_servers[0].kind",
            "expected plex or jellyfin or emby",
        ),
        (
            [(("media_servers",), [{"kind": "plex", "url": f"ftp://u:{PLANTED}@x", "token": "t"}])],
            "media_servers[0].url",
            "http(s) URL",
        ),
        (
            [(("media_servers",), [{"kind": "plex", "url": f"http://u:{PLANTED}@x:99999", "token": "t"}])],
            "media_servers[0].url",
            "does not parse",
        ),
        (
            [(("media_servers",), [{"kind": "plex", "url": "http://x"}])],
            "media_servers[0].token",
            "missing (required)",
        ),
        (
            [
                (
                    ("media_servers",),
                    [{"kind": "plex", "url": "http://x", "token": "t", "throttle": {0: "1M"}}],
                )
            ],
            "media_servers[0].throttle.0",
            "1 or more",
        ),
        (
            [
                (
                    ("media_servers",),
                    [{"kind": "plex", "url": "http://x", "token": "t", "throttle": {2: "fast"}}],
                )
            ],
            "media_servers[0].throttle.2",
            "size",
        ),
        (
            [(("downloaders",), [{"kind": "sabnzbd", "url": "http://x", "api_key": [PLANTED]}])],
            "downloaders[0].api_key",
            "expected text",
        ),
        ([(("notifications",), {"urls": [], "events": ["failed"]})], "notifications.urls", "at least one"),
        (
            [(("notifications",), {"urls": ["json://x"], "events": ["failed", "failed"]})],
            "notifications.events[1]",
            "listed twice",
        ),
        (
            [(("movers",), {"m": {"from": "a:x", "to": "b:y", "after": "tv"}})],
            "movers.m.after",
            "no uploader named 'tv'",
        ),
        (
            [(("syncers",), {"media": {"source": "a:x", "destination": "b:y"}})],
            "syncers.media",
            "an uploader is named",
        ),
        ([(("hidden",), [{"folder": "./media"}])], "hidden[0].remotes", "missing (required)"),
        (
            [(("uploaders", "media", "accounts"), {"remotes": ["gdrive/2"]})],
            "uploaders.media.accounts.remotes[0]",
            "bad remote name",
        ),
    ],
)
def test_bad_integration_settings(tree: Path, changes, expected_path: str, expected_reason: str) -> None:
    error = load_errors(write_config(tree, apply(minimal_document(), changes)))

    assert error.errors == [error.errors[0]], error.errors
    assert str(error).startswith(f"{expected_path}: "), str(error)
    assert expected_reason in str(error)
    assert PLANTED not in str(error)
