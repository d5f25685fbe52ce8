"""Accounts that are other rclone remotes (personal accounts): their credentials are lent to the
destination's remote through rclone's environment, so users without service accounts rotate too.
Real rclone, real WebDAV quota server whose users are the accounts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cloudplow.rclone.command import backend_remotes, credential_env
from tests.conftest import assert_nothing_lost, make_source, obscure, run_cli

QUOTA = 3_000_000


def test_credentials_are_lent_to_every_remote_of_the_same_backend_under_the_destination() -> None:
    dump = {
        "secret": {"type": "crypt", "remote": "gd:enc", "password": "x"},
        "gd": {"type": "drive", "team_drive": "T1", "client_id": "a-id", "token": "{a}"},
        "gd2": {
            "type": "drive",
            "team_drive": "T2",
            "client_id": "b-id",
            "client_secret": "b-s",
            "token": "{b}",
        },
    }

    targets = backend_remotes(dump, "secret", "drive")
    env = credential_env(dump, targets, "gd2")

    assert targets == ["gd"]
    assert env == {
        "RCLONE_CONFIG_GD_CLIENT_ID": "b-id",
        "RCLONE_CONFIG_GD_CLIENT_SECRET": "b-s",
        "RCLONE_CONFIG_GD_TOKEN": "{b}",
    }  # where it points (team_drive) stays the destination's


def write_remotes_config(tmp_path: Path, server, source: Path, remotes: list[str]) -> Path:
    sections = [f"[dav]\ntype = webdav\nurl = {server.url}\nvendor = other\npacer_min_sleep = 1ms\n"]
    for remote, user in (("dav2", "bob"), ("dav3", "carol")):
        sections.append(
            f"[{remote}]\ntype = webdav\nurl = {server.url}\nvendor = other\n"
            f"user = {user}\npass = {obscure(user)}\n"
        )
    (tmp_path / "rclone.conf").write_text("\n".join(sections), encoding="utf-8")
    config = {
        "rclone": {"config": "rclone.conf"},
        "state_dir": "state",
        "uploaders": {
            "media": {
                "source": str(source),
                "destination": "dav:media",
                "accounts": {"remotes": remotes},
                "quota": {"per_account": QUOTA, "reserve": 0},
                "filters": {"min_age": "0s"},
                "transfers": 2,
            }
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.integration
def test_personal_account_remotes_rotate_like_service_accounts(tmp_path, quota_server):
    server = quota_server({"alice": QUOTA, "bob": QUOTA, "carol": QUOTA})
    source = tmp_path / "source"
    original = make_source(source, [400_000] * 12)  # 4.8 MB: more than one account holds
    config = write_remotes_config(tmp_path, server, source, ["dav2", "dav3"])

    completed = run_cli(config, "upload")

    assert completed.returncode == 0, completed.stderr
    usage = server.usage()
    assert usage["bob"].committed_bytes == 2_800_000  # 7 files of 400 kB fit in 3 MB
    assert usage["carol"].committed_bytes == 4_800_000 - 2_800_000
    assert "alice" not in usage or usage["alice"].committed_bytes == 0
    assert_nothing_lost(original, source, server.root / "media")
    quota = run_cli(config, "quota")
    assert "dav2" in quota.stdout and "dav3" in quota.stdout
    assert obscure("bob") not in completed.stdout + completed.stderr


@pytest.mark.integration
def test_an_account_remote_that_is_not_configured_is_a_clear_error(tmp_path, quota_server):
    server = quota_server({"bob": QUOTA})
    source = tmp_path / "source"
    make_source(source, [1000])
    config = write_remotes_config(tmp_path, server, source, ["dav2", "gdrive9"])

    completed = run_cli(config, "upload")

    assert completed.returncode != 0
    assert (
        completed.stderr.strip()
        .splitlines()[-1]
        .endswith("uploaders.media.accounts.remotes: no remote 'gdrive9' in rclone's configuration")
    ), completed.stderr
    assert (source / "show0/season0/file0000.mkv").is_file()
