"""migrate-config: an old cloudplow config.json (and the fork's quota cache) into config.yaml and the ledger.

The old file is written in the format of l3uddz/cloudplow's config.json.sample
and README, every section filled, several remotes; the converted file is loaded
with load_config and each value checked for meaning the same thing.
"""

from __future__ import annotations

import datetime
import json
import random
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from cloudplow import cli
from cloudplow.config import load_config
from cloudplow.ledger import Ledger
from cloudplow.migrate import account_for_key_file, convert
from tests.conftest import RCLONE, run_cli
from tests.test_config import write_service_account

GIB = 2**30
MIB = 2**20
UA = "Mozilla/5.0 (X11; Linux x86_64) cloudplow-test"

# Every credential planted in the old file: none may ever be printed.
SECRETS = {
    "plex": "PLEXTOKEN-s3cret-1",
    "sab": "SABKEY-s3cret-2",
    "nzb_password": "NZBPASS-s3cret-3",
    "pushover_app": "POAPP-s3cret-4",
    "pushover_user": "POUSER-s3cret-5",
    "slack_c": "SLACKC-s3cret-6",
    "apprise": "json://127.0.0.1:8000/APPRISE-s3cret-7",
    "bearer": "BEARER-s3cret-8",
}


@pytest.fixture
def old_setup(tmp_path: Path) -> dict[str, Any]:
    """A machine the old cloudplow ran on: folders, keys, rclone.conf, and its config.json."""
    media, downloads, boxed = tmp_path / "local/Media", tmp_path / "local/Downloads", tmp_path / "local/Box"
    for folder in (media, downloads, boxed, tmp_path / "local/.unionfs-fuse"):
        folder.mkdir(parents=True)
    accounts = tmp_path / "service_accounts"
    for name in ("sa1", "sa2", "sa3"):
        write_service_account(accounts, name)
    rclone_conf = tmp_path / "rclone.conf"
    rclone_conf.write_text("[google]\ntype = drive\n\n[box]\ntype = box\n")
    old = {
        "core": {"dry_run": False, "rclone_binary_path": RCLONE, "rclone_config_path": str(rclone_conf)},
        "hidden": {str(tmp_path / "local/.unionfs-fuse"): {"hidden_remotes": ["google", "box"]}},
        "notifications": {
            "Apprise": {"service": "apprise", "url": SECRETS["apprise"], "title": ""},
            "Pushover": {
                "service": "pushover",
                "app_token": SECRETS["pushover_app"],
                "user_token": SECRETS["pushover_user"],
                "priority": 1,
            },
            "Slack": {
                "service": "slack",
                "webhook_url": f"https://hooks.slack.com/services/TA1/BB2/{SECRETS['slack_c']}",
                "channel": "uploads",
                "sender_name": "cloudplow",
                "sender_icon": ":heavy_exclamation_mark:",
            },
        },
        "nzbget": {"enabled": True, "url": f"http://nzbget:{SECRETS['nzb_password']}@127.0.0.1:6789"},
        "sabnzbd": {"enabled": True, "url": "http://127.0.0.1:8080/", "apikey": SECRETS["sab"]},
        "plex": {
            "enabled": True,
            "url": "http://127.0.0.1:32400",
            "token": SECRETS["plex"],
            "poll_interval": 60,
            "max_streams_before_throttle": 2,
            "ignore_local_streams": True,
            "notifications": True,
            "rclone": {
                "throttle_speeds": {"0": "100M", "1": "50M", "2": "40M", "3": "30M", "5": "10M"},
                "url": "http://localhost:7949",
            },
        },
        "remotes": {
            "google": {
                "hidden_remote": "google:",
                "rclone_excludes": ["**partial~", "**_HIDDEN~", ".unionfs/**", ".unionfs-fuse/**"],
                "rclone_extras": {
                    "--checkers": 16,
                    "--drive-chunk-size": "64M",
                    "--stats": "60s",
                    "--transfers": 8,
                    "--verbose": 1,
                    "--skip-links": None,
                    "--drive-stop-on-upload-limit": None,
                    "--webdav-bearer-token": SECRETS["bearer"],
                    "--user-agent": UA,
                },
                "rclone_sleeps": {
                    "Failed to copy: googleapi: Error 403: User rate limit exceeded": {
                        "count": 5,
                        "sleep": 25,
                        "timeout": 3600,
                    },
                    " 0/s,": {"count": 15, "sleep": 25, "timeout": 140},
                },
                "rclone_command": "move",
                "remove_empty_dir_depth": 2,
                "sync_remote": "google:/Media",
                "upload_folder": str(media),
                "upload_remote": "google:/Media",
            },
            "google_downloads": {
                "hidden_remote": "",
                "rclone_excludes": [],
                "rclone_extras": {"--checkers": 32, "--transfers": 16, "--skip-links": None},
                "rclone_sleeps": {},
                "rclone_command": "copy",
                "remove_empty_dir_depth": 2,
                "sync_remote": "",
                "upload_folder": str(downloads),
                "upload_remote": "google:/Downloads",
            },
            "Box.Media": {
                "hidden_remote": "box:",
                "rclone_excludes": ["**partial~"],
                "rclone_extras": {"--checkers": 8},
                "rclone_command": "sync",
                "remove_empty_dir_depth": 1,
                "sync_remote": "box:/Backups",
                "upload_folder": str(boxed),
                "upload_remote": "box:/Media",
            },
            "box": {"hidden_remote": "box:", "sync_remote": "box:/Backups"},
            "local_torrents": {"sync_remote": str(tmp_path / "torrents")},
        },
        "syncer": {
            "google2box": {
                "rclone_extras": {"--bwlimit": "80M", "--checkers": 32, "--stats": "60s", "--transfers": 16},
                "service": "scaleway",
                "sync_from": "google",
                "sync_interval": 24,
                "sync_to": "box",
                "tool_path": "/home/seed/go/bin/scw",
                "use_copy": True,
                "instance_destroy": False,
            },
            "torrents2google": {
                "service": "local",
                "sync_from": "local_torrents",
                "sync_to": "google",
                "sync_interval": 26,
                "use_copy": False,
            },
        },
        "uploader": {
            "google": {
                "can_be_throttled": True,
                "check_interval": 30,
                "exclude_open_files": True,
                "max_size_gb": 200,
                "opened_excludes": ["/downloads/"],
                "schedule": {"allowed_from": "04:00", "allowed_until": "08:00", "enabled": True},
                "size_excludes": ["downloads/*"],
                "service_account_path": str(accounts),
                "mover": {
                    "enabled": True,
                    "move_from_remote": "staging:Media",
                    "move_to_remote": "gdrive:Media",
                    "rclone_extras": {"--delete-empty-src-dirs": None, "--stats": "60s"},
                },
            },
            "google_downloads": {
                "can_be_throttled": False,
                "check_interval": 15,
                "exclude_open_files": False,
                "max_size_gb": 1.5,
                "schedule": {},
            },
            "Box.Media": {
                "check_interval": 60,
                "max_size_gb": 400,
                "schedule": {"allowed_from": "22:00", "allowed_until": "06:00", "enabled": False},
                "no_such_key": 1,
            },
        },
        "unknown_section": {"x": 1},
    }
    old_path = tmp_path / "config.json"
    old_path.write_text(json.dumps(old, indent=4))
    return {"root": tmp_path, "old": old, "old_path": old_path, "accounts": accounts, "media": media}


def assert_no_secret(text: str) -> None:
    for name, secret in SECRETS.items():
        assert secret not in text, f"secret {name} printed"


def test_every_section_converts_to_a_config_that_means_the_same(old_setup, capsys) -> None:
    output = old_setup["root"] / "new/config.yaml"

    exit_code = cli.main(["migrate-config", str(old_setup["old_path"]), "--output", str(output)])

    printed = capsys.readouterr()
    assert exit_code == 0, printed.out + printed.err
    assert_no_secret(printed.out + printed.err)
    assert f"check-config: {output} passes" in printed.out
    config = load_config(output)
    root, media = old_setup["root"], old_setup["media"]

    assert config.rclone_binary == RCLONE and config.rclone_config == root / "rclone.conf"
    assert list(config.uploaders) == ["google", "google_downloads", "box-media"]

    google = config.uploaders["google"]
    assert (google.source, google.destination, google.mode) == (media, "google:/Media", "move")
    assert google.accounts_dir == old_setup["accounts"]
    assert [account.name for account in google.accounts] == ["sa1", "sa2", "sa3"]
    assert google.check.interval_seconds == 30 * 60
    assert google.check.min_queue_bytes == 200 * GIB
    assert google.check.max_age_seconds == 365 * 86400 and google.check.min_free_bytes == 0
    assert (google.schedule.start, google.schedule.end) == (datetime.time(4, 0), datetime.time(8, 0))
    assert google.filters.exclude == ("**partial~", "**_HIDDEN~", ".unionfs/**", ".unionfs-fuse/**")
    assert google.filters.exclude_open_files is True
    assert google.transfers == 8
    assert google.rclone_flags == (
        "--checkers", "16", "--drive-chunk-size", "64M", "--skip-links",
        "--webdav-bearer-token", SECRETS["bearer"], "--user-agent", UA,
    )  # fmt: skip
    assert google.remove_empty_dirs is True and google.throttle is True

    downloads = config.uploaders["google_downloads"]
    assert (downloads.mode, downloads.throttle, downloads.filters.exclude_open_files) == (
        "copy",
        False,
        False,
    )
    assert downloads.filters.exclude == () and downloads.schedule is None
    assert downloads.check.interval_seconds == 15 * 60 and downloads.check.min_queue_bytes == int(1.5 * GIB)
    assert downloads.transfers == 16 and downloads.rclone_flags == ("--checkers", "32", "--skip-links")

    boxed = config.uploaders["box-media"]
    assert boxed.mode == "move"  # old cloudplow ran move when rclone_command said sync
    assert boxed.schedule is None  # disabled in the old file
    assert boxed.check.min_queue_bytes == 400 * GIB and boxed.check.interval_seconds == 3600
    assert boxed.transfers == 8  # cloudplow's default: the old file set none

    (plex,) = config.media_servers
    assert (plex.kind, plex.url, plex.token, plex.poll_seconds, plex.ignore_local) == (
        "plex", "http://127.0.0.1:32400", SECRETS["plex"], 60, True,
    )  # fmt: skip
    # From max_streams_before_throttle (2) up; 4 streams took the nearest key, 3, as before.
    assert plex.throttle == ((2, 40 * MIB), (3, 30 * MIB), (5, 10 * MIB))

    sabnzbd, nzbget = config.downloaders
    assert (sabnzbd.kind, sabnzbd.url, sabnzbd.api_key) == (
        "sabnzbd",
        "http://127.0.0.1:8080",
        SECRETS["sab"],
    )
    assert (nzbget.kind, nzbget.url, nzbget.username, nzbget.password) == (
        "nzbget", "http://127.0.0.1:6789", "nzbget", SECRETS["nzb_password"],
    )  # fmt: skip

    assert config.notifications is not None
    assert config.notifications.urls == (
        SECRETS["apprise"],
        f"pover://{SECRETS['pushover_user']}@{SECRETS['pushover_app']}?priority=1",
        f"slack://cloudplow@TA1/BB2/{SECRETS['slack_c']}/#uploads",
    )

    (hidden,) = config.hidden
    assert hidden.folder == root / "local/.unionfs-fuse" and hidden.remotes == ("google:", "box:")

    assert list(config.syncers) == ["google2box"]  # torrents2google reads a local folder
    syncer = config.syncers["google2box"]
    assert (syncer.source, syncer.destination, syncer.mode) == ("google:/Media", "box:/Backups", "copy")
    assert syncer.interval_seconds == 24 * 3600 and syncer.transfers == 16
    assert syncer.rclone_flags == ("--bwlimit", "80M", "--checkers", "32")

    assert list(config.movers) == ["google-mover"]
    mover = config.movers["google-mover"]
    assert (mover.source, mover.destination, mover.after) == ("staging:Media", "gdrive:Media", "google")

    # Every key left out is listed with its reason.
    out = printed.out
    for key in (
        "unknown_section: unknown section",
        "remotes.google.rclone_extras.--stats: cloudplow manages it",
        "remotes.google.rclone_extras.--verbose: cloudplow manages it",
        "remotes.google.rclone_extras.--drive-stop-on-upload-limit: cloudplow adds it",
        "remotes.google.rclone_sleeps: replaced",
        "uploader.google.size_excludes:",
        "uploader.google.opened_excludes:",
        "uploader.google.mover.rclone_extras:",
        "uploader.Box.Media.no_such_key: unknown key",
        "uploader.Box.Media.schedule: disabled",
        "plex.rclone.url:",
        "plex.notifications:",
        "syncer.google2box.tool_path:",
        "syncer.torrents2google.sync_from: its sync_remote is a local folder",
        "uploader.Box.Media: renamed to uploaders.box-media",
        "remotes.google.rclone_extras.--transfers: the transfers key",
    ):
        assert f"  {key}" in out, key
    assert stat.S_IMODE(output.stat().st_mode) == 0o600


def test_the_converted_file_passes_check_config_in_a_real_process(old_setup) -> None:
    output = old_setup["root"] / "config.yaml"
    completed = run_cli(
        output, "migrate-config", str(old_setup["old_path"])
    )  # --config is the default output

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert_no_secret(completed.stdout + completed.stderr)
    checked = run_cli(output, "check-config")
    assert checked.returncode == 0, checked.stderr
    assert "uploader google:" in checked.stdout and "mover google-mover:" in checked.stdout
    assert_no_secret(checked.stdout + checked.stderr)


def test_an_existing_output_needs_force(old_setup) -> None:
    output = old_setup["root"] / "config.yaml"
    output.write_text("# mine\n")

    refused = run_cli(output, "migrate-config", str(old_setup["old_path"]))

    assert refused.returncode == 2
    assert (
        refused.stderr
        == f"cloudplow: {output}: exists; add --force to overwrite it, or choose another --output\n"
    )
    assert output.read_text() == "# mine\n" and refused.stdout == ""
    forced = run_cli(output, "migrate-config", str(old_setup["old_path"]), "--force")
    assert forced.returncode == 0, forced.stderr
    assert load_config(output).uploaders["google"].mode == "move"
    assert [path.name for path in output.parent.iterdir() if path.name.startswith(".config.yaml")] == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"core": {"rclone_config_path": "x"},\n "plex": {"token": "PLEXTOKEN-s3cret-1" ',
            "not valid JSON (",
        ),
        ("[1, 2]", "expected a JSON object of sections"),
        (b"\xff\xfe{}", "not UTF-8 text"),
    ],
    ids=["truncated", "not-an-object", "not-utf8"],
)
def test_bad_old_files_exit_2_with_one_line_and_write_nothing(tmp_path: Path, content, expected) -> None:
    old_path = tmp_path / "config.json"
    if isinstance(content, bytes):
        old_path.write_bytes(content)
    else:
        old_path.write_text(content)
    output = tmp_path / "config.yaml"

    completed = run_cli(output, "migrate-config", str(old_path))

    assert completed.returncode == 2
    assert completed.stderr.startswith(f"cloudplow: {old_path}: {expected}")
    assert completed.stderr.count("\n") == 1 and "Traceback" not in completed.stderr
    assert_no_secret(completed.stdout + completed.stderr)
    assert not output.exists()


def test_missing_files_exit_2_and_write_nothing(old_setup, capsys) -> None:
    root = old_setup["root"]
    output = root / "out.yaml"

    assert cli.main(["migrate-config", str(root / "nope.json"), "--output", str(output)]) == 2
    assert capsys.readouterr().err == f"cloudplow: {root / 'nope.json'}: no such file\n"
    missing_cache = root / "sa_quota_cache.json"
    arguments = ["migrate-config", str(old_setup["old_path"]), "--output", str(output)]
    assert cli.main([*arguments, "--quota-cache", str(missing_cache)]) == 2
    assert capsys.readouterr().err == f"cloudplow: {missing_cache}: no such file\n"
    missing_cache.write_text('["not", "a", "cache"]')
    assert cli.main([*arguments, "--quota-cache", str(missing_cache)]) == 2
    assert "expected {uploader: {key file:" in capsys.readouterr().err
    assert not output.exists()


def test_a_file_without_uploaders_is_refused(tmp_path: Path, capsys) -> None:
    old_path = tmp_path / "config.json"
    old_path.write_text(json.dumps({"core": {}, "uploader": {"google": {"max_size_gb": 1}}, "mystery": 1}))

    assert cli.main(["migrate-config", str(old_path), "--output", str(tmp_path / "c.yaml")]) == 2
    captured = capsys.readouterr()
    assert (
        captured.err
        == f"cloudplow: {old_path}: no uploader could be converted (see above); nothing written\n"
    )
    assert "  uploader.google: no remotes.google to join it with" in captured.out
    assert "  mystery: unknown section" in captured.out
    assert not (tmp_path / "c.yaml").exists()


def test_a_converted_file_that_needs_fixing_is_written_and_its_problems_listed(old_setup, capsys) -> None:
    old = old_setup["old"]
    old["remotes"]["google"]["upload_folder"] = str(old_setup["root"] / "gone")
    old_setup["old_path"].write_text(json.dumps(old))
    output = old_setup["root"] / "config.yaml"

    exit_code = cli.main(["migrate-config", str(old_setup["old_path"]), "--output", str(output)])

    out = capsys.readouterr().out
    assert exit_code == 1 and output.exists()
    assert f"  uploaders.google.source: no such folder '{old_setup['root'] / 'gone'}'" in out
    assert_no_secret(out)


def test_a_dry_run_and_unusable_values_are_reported_not_guessed() -> None:
    migration = convert(
        {
            "core": {"dry_run": True},
            "remotes": {"a": {"upload_folder": "/x", "upload_remote": "r:/x", "rclone_extras": {"-P": None}}},
            "uploader": {"a": {"check_interval": "thirty", "max_size_gb": -1, "schedule": {"enabled": True}}},
            "plex": {"enabled": True, "url": "http://127.0.0.1:32400", "token": "t",
                     "max_streams_before_throttle": 0,
                     "rclone": {"throttle_speeds": {"0": "9M", "one": "5M", "2": "fast"}}},
        }
    )  # fmt: skip
    reasons = {note.key: note.reason for note in migration.notes}
    assert "cloudplow has no such setting" in reasons["core.dry_run"]
    assert "expected a number, got text" in reasons["uploader.a.check_interval"]
    assert reasons["uploader.a.max_size_gb"].startswith("negative")
    assert "not both" in reasons["uploader.a.schedule"]
    assert "not a long rclone flag" in reasons["remotes.a.rclone_extras.-P"]
    assert "not a whole number" in reasons["plex.rclone.throttle_speeds.one"]
    assert "not an rclone rate" in reasons["plex.rclone.throttle_speeds.2"]
    assert "from 1 stream up" in reasons["plex.max_streams_before_throttle"]
    uploader = migration.document["uploaders"]["a"]
    assert "check" not in uploader and "schedule" not in uploader and "rclone_flags" not in uploader
    # 0 streams throttled at 9M in the old file: cloudplow starts the table at 1 with that rate.
    assert migration.document["media_servers"][0]["throttle"] == {1: "9M"}


def test_an_imported_quota_cache_shows_in_quota_with_the_right_remaining_bytes(old_setup) -> None:
    now = time.time()
    cache = {
        "google": {
            "/old/host/service_accounts/sa1.json": {
                "bytes": 300 * GIB,
                "first_upload": now - 3600,
                "reset_time": now + 23 * 3600,
            },
            "/old/host/service_accounts/sa2.json": {"bytes": 700 * GIB, "first_upload": now - 90000,
                                                   "reset_time": now - 3600},
            "/old/host/service_accounts/sa3.json": {"bytes": "lots", "reset_time": now + 60},
        },
        "retired": {"/old/sa9.json": {"bytes": 5 * GIB, "first_upload": now, "reset_time": now + 86400}},
    }  # fmt: skip
    cache_path = old_setup["root"] / "sa_quota_cache.json"
    cache_path.write_text(json.dumps(cache))
    output = old_setup["root"] / "config.yaml"

    completed = run_cli(
        output, "migrate-config", str(old_setup["old_path"]), "--quota-cache", str(cache_path)
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "quota cache: 2 account(s) imported" in completed.stdout
    assert "  quota cache google.sa2.json: already reset" in completed.stdout
    assert "  quota cache google.sa3.json: expected numbers" in completed.stdout
    quota = run_cli(output, "quota", "google", "--json")
    assert quota.returncode == 0, quota.stderr
    reports = {report["name"]: report for report in json.loads(quota.stdout)["google"]}
    assert reports["sa1"]["used_bytes"] == 300 * GIB
    assert reports["sa1"]["remaining_bytes"] == 750 * 10**9 - 300 * GIB
    assert reports["sa1"]["frees_at"] == pytest.approx(now + 23 * 3600, abs=1)
    assert reports["sa2"]["used_bytes"] == 0 and reports["sa2"]["remaining_bytes"] == 750 * 10**9
    assert reports["sa3"]["used_bytes"] == 0

    # A second import replaces the first: the usage is not counted twice.
    again = run_cli(
        output, "migrate-config", str(old_setup["old_path"]), "--quota-cache", str(cache_path), "--force"
    )
    assert again.returncode == 0, again.stderr
    reports = {
        report["name"]: report for report in json.loads(run_cli(output, "quota", "--json").stdout)["google"]
    }
    assert reports["sa1"]["used_bytes"] == 300 * GIB


def test_imported_usage_ages_out_at_the_reset_time(tmp_path: Path) -> None:
    window = 24 * 3600.0
    reset_time = 1_700_000_000.0
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.import_usage("sa1", uploader="google", size=5 * GIB, at=reset_time - window)

        (before,) = ledger.usage(["sa1"], now=reset_time - 1, window_seconds=window)
        (after,) = ledger.usage(["sa1"], now=reset_time + 1, window_seconds=window)

        assert before.used_bytes == 5 * GIB and before.oldest_at + window == reset_time
        assert after.used_bytes == 0
        assert ledger.sessions() == [] and ledger.uploaded_sizes("google") == {"": 5 * GIB}


def test_account_names_follow_the_loaded_configuration(old_setup) -> None:
    output = old_setup["root"] / "config.yaml"
    assert run_cli(output, "migrate-config", str(old_setup["old_path"])).returncode == 0
    uploader = load_config(output).uploaders["google"]

    assert account_for_key_file(uploader, "/elsewhere/sa2.json") == "sa2"
    assert account_for_key_file(None, "/elsewhere/sa7.json") == "sa7"


def test_the_forks_dashboard_becomes_the_server_only_when_it_was_enabled() -> None:
    base = {"remotes": {"a": {"upload_folder": "/x", "upload_remote": "r:/x"}}, "uploader": {"a": {}}}

    enabled = convert(
        {**base, "dashboard": {"enabled": True, "host": "0.0.0.0", "port": 8080, "debug": False}}
    )
    disabled = convert({**base, "dashboard": {"enabled": False, "host": "0.0.0.0", "port": 8080}})

    assert enabled.document["server"] == {"host": "0.0.0.0", "port": 8080}
    assert any("reachable from the network" in note.reason for note in enabled.notes)
    assert "server" not in disabled.document
    assert {note.key for note in disabled.notes} == {"dashboard"}


def test_a_false_flag_is_reported_not_silently_dropped() -> None:
    migration = convert(
        {
            "remotes": {
                "a": {"upload_folder": "/x", "upload_remote": "r:/x", "rclone_extras": {"--x": False}}
            },
            "uploader": {"a": {}},
        }
    )

    assert "rclone_flags" not in migration.document["uploaders"]["a"]
    (note,) = [note for note in migration.notes if note.key == "remotes.a.rclone_extras.--x"]
    assert "cannot pass --flag=false" in note.reason and not note.mapped


def test_the_old_file_is_never_overwritten(old_setup, capsys) -> None:
    old_path = old_setup["old_path"]
    before = old_path.read_text()

    assert cli.main(["migrate-config", str(old_path), "--output", str(old_path), "--force"]) == 2
    assert (
        capsys.readouterr().err
        == f"cloudplow: {old_path}: is the old file itself; give --output another path\n"
    )
    assert old_path.read_text() == before


def test_an_unwritable_state_dir_is_one_line(old_setup, capsys) -> None:
    cache_path = old_setup["root"] / "sa_quota_cache.json"
    cache_path.write_text(json.dumps({"google": {"sa1.json": {"bytes": 1, "reset_time": time.time() + 60}}}))
    (old_setup["root"] / "state/cloudplow.sqlite3").mkdir(parents=True)  # a folder where the ledger goes
    output = old_setup["root"] / "config.yaml"

    arguments = ["migrate-config", str(old_setup["old_path"]), "--output", str(output)]
    exit_code = cli.main([*arguments, "--quota-cache", str(cache_path)])

    err = capsys.readouterr().err
    assert exit_code == 2 and err.count("\n") == 1
    assert err.startswith(
        f"cloudplow: {old_setup['root'] / 'state'}: {output} was written, but the quota cache"
    )
    assert output.exists()


def test_the_throttle_table_gives_every_stream_count_the_old_rate() -> None:
    generator = random.Random(7)
    for _ in range(200):
        keys = generator.sample(range(0, 9), generator.randint(1, 6))
        speeds = {str(key): f"{generator.randint(1, 99)}M" for key in keys}
        first = generator.randint(1, 10)
        migration = convert(
            {
                "remotes": {"a": {"upload_folder": "/x", "upload_remote": "r:/x"}},
                "uploader": {"a": {}},
                "plex": {"enabled": True, "url": "http://127.0.0.1:32400", "token": "t",
                         "max_streams_before_throttle": first, "rclone": {"throttle_speeds": speeds}},
            }
        )  # fmt: skip
        table = migration.document["media_servers"][0]["throttle"]
        for streams in range(0, 14):
            # Old cloudplow: unthrottled below the threshold, else the exact key or the nearest one.
            if streams < first:
                old_rate = None
            elif str(streams) in speeds:
                old_rate = speeds[str(streams)]
            else:
                old_rate = speeds[min(speeds, key=lambda key: abs(int(key) - streams))]
            steps = [key for key in table if key <= streams]
            new_rate = table[max(steps)] if steps else None
            assert new_rate == old_rate, (speeds, first, streams, table)


def test_an_rclone_binary_missing_here_falls_back_to_the_bundled_one(old_setup, capsys) -> None:
    old = old_setup["old"]
    old["core"]["rclone_binary_path"] = str(old_setup["root"] / "no/rclone")
    old_setup["old_path"].write_text(json.dumps(old))
    output = old_setup["root"] / "config.yaml"

    assert cli.main(["migrate-config", str(old_setup["old_path"]), "--output", str(output)]) == 0
    assert "  core.rclone_binary_path: no such file here" in capsys.readouterr().out
    assert load_config(output).rclone_binary is None
