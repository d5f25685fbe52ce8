"""The command line: exit codes, one-line errors and what each command prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cloudplow import cli
from tests.test_config import BAD_CONFIGS, apply, minimal_document, tree, write_config

__all__ = ["tree"]  # the fixture, shared with test_config


@pytest.mark.parametrize(
    ("changes", "expected_path"),
    [pytest.param(case[1], case[2], id=case[0]) for case in BAD_CONFIGS],
)
def test_every_bad_configuration_exits_2_with_one_line_naming_the_key(
    tree: Path, changes, expected_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tree, apply(minimal_document(), changes))

    exit_code = cli.main(["--config", str(path), "check-config"])

    assert exit_code == 2
    error_output = capsys.readouterr().err
    assert error_output.count("\n") == 1, error_output
    assert error_output.startswith(f"cloudplow: {expected_path}: ")


def test_a_bad_configuration_through_a_real_process_has_no_traceback(tree: Path) -> None:
    path = write_config(tree, apply(minimal_document(), [(("uploaders", "media", "mode"), "sync")]))

    completed = subprocess.run(
        [sys.executable, "-m", "cloudplow", "--config", str(path), "upload"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 2
    assert completed.stderr.startswith("cloudplow: uploaders.media.mode: ")
    assert "Traceback" not in completed.stderr and completed.stderr.count("\n") == 1


def test_missing_config_file_names_it(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("CLOUDPLOW_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    assert cli.main(["status"]) == 2
    assert "config.yaml: no such file" in capsys.readouterr().err


def test_config_from_environment(tree: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CLOUDPLOW_CONFIG", str(write_config(tree, minimal_document())))

    assert cli.main(["check-config"]) == 0
    assert "media" in capsys.readouterr().out


def test_unknown_uploader_is_a_usage_error(tree: Path, capsys) -> None:
    path = write_config(tree, minimal_document())

    assert cli.main(["--config", str(path), "plan", "films"]) == 2
    assert capsys.readouterr().err.strip() == "cloudplow: no uploader named films (configured: media)"


def test_quota_and_status_on_an_empty_state_dir(tree: Path, capsys) -> None:
    path = write_config(tree, minimal_document())

    assert cli.main(["--config", str(path), "quota", "--json"]) == 0
    quota = json.loads(capsys.readouterr().out)
    assert quota["media"][0]["name"] == "default"
    assert quota["media"][0]["remaining_bytes"] == 750 * 10**9
    assert quota["media"][0]["blocked_until"] is None

    assert cli.main(["--config", str(path), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["uploaders"]["media"]["state"] == "idle"
    assert status["source"] == "state_dir"
    assert status["uploaders"]["media"]["recent_sessions"] == []
