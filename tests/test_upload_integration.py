"""End to end: the real CLI, the real rclone, the local WebDAV quota server.

Quotas here are megabytes instead of 750 GB; the arithmetic is the same.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import assert_nothing_lost, make_source, run_cli, tree_digests, write_config

pytestmark = pytest.mark.integration

QUOTA = 24_000_000
USERS = ["alice", "bob", "carol"]


def media_sizes(total: int, seed: int) -> list[int]:
    """A small media library: films, episodes and many small extras, adding up to about `total`."""
    generator = random.Random(seed)
    sizes: list[int] = []
    while sum(sizes) < total:
        kind = generator.random()
        if kind < 0.15:
            sizes.append(generator.randint(3_000_000, 6_000_000))
        elif kind < 0.55:
            sizes.append(generator.randint(300_000, 2_000_000))
        else:
            sizes.append(generator.randint(2_000, 80_000))
    return sizes


def ledger_rows(state_dir: Path, sql: str, parameters=()) -> list[tuple]:
    with sqlite3.connect(state_dir / "cloudplow.sqlite3") as connection:
        return connection.execute(sql, parameters).fetchall()


def ledger_uploaded(state_dir: Path) -> dict[str, int]:
    return dict(
        ledger_rows(
            state_dir, "SELECT account, SUM(size) FROM files WHERE outcome='uploaded' GROUP BY account"
        )
    )


def test_three_accounts_are_filled_without_waste_and_the_rest_stays(tmp_path, quota_server):
    server = quota_server(dict.fromkeys(USERS, QUOTA))
    source = tmp_path / "source"
    original = make_source(source, media_sizes(int(3.5 * QUOTA), seed=7))
    config = write_config(
        tmp_path, server, users=USERS, quota_bytes=QUOTA, source=source, reserve_bytes=100_000, transfers=4
    )

    completed = run_cli(config, "upload")

    assert completed.returncode == 3, completed.stderr
    usage = server.usage()
    ledger = ledger_uploaded(tmp_path / "state")
    for user in USERS:
        assert usage[user].committed_bytes >= 0.99 * QUOTA, (user, usage[user])
        assert usage[user].committed_bytes <= QUOTA - 100_000
        assert usage[user].wasted_bytes == 0 and usage[user].failed_uploads == 0
        assert usage[user].refused_uploads == 0
        assert ledger[user] == usage[user].committed_bytes
    destination = server.root / "media"
    assert_nothing_lost(original, source, destination)
    uploaded = tree_digests(destination)
    left = tree_digests(source)
    assert set(uploaded).isdisjoint(left), "move mode leaves no uploaded file in the source"
    assert set(uploaded) | set(left) == set(original)
    assert sum(usage[user].committed_files for user in USERS) == len(uploaded)
    print("utilization", {user: usage[user].committed_bytes / QUOTA for user in USERS})

    # The accounts are now full: a second session plans nothing, uploads nothing, exits 3.
    again = run_cli(config, "upload")
    assert again.returncode == 3, again.stderr
    assert tree_digests(source) == left
    quota = json.loads(run_cli(config, "quota", "--json").stdout)["media"]
    assert [account["used_bytes"] for account in quota] == [ledger[user] for user in USERS]


def test_overshoot_stage_crosses_the_limit_with_exactly_one_file(tmp_path, quota_server):
    server = quota_server(dict.fromkeys(USERS[:2], QUOTA))
    source = tmp_path / "source"
    sizes = [*media_sizes(int(2.6 * QUOTA), seed=11), 9_000_000, 8_000_000]
    original = make_source(source, sizes)
    config = write_config(
        tmp_path,
        server,
        users=USERS[:2],
        quota_bytes=QUOTA,
        source=source,
        reserve_bytes=100_000,
        overshoot=True,
    )

    completed = run_cli(config, "upload")

    assert completed.returncode == 3, completed.stderr
    state = tmp_path / "state"
    overshoot_stages = ledger_rows(
        state, "SELECT id, account, planned_files, outcome FROM stages WHERE overshoot=1"
    )
    assert overshoot_stages, completed.stderr
    usage = server.usage()
    for stage_id, account, planned_files, outcome in overshoot_stages:
        assert planned_files == 1 and outcome == "completed"
        files = ledger_rows(state, "SELECT size, outcome FROM files WHERE stage_id=?", (stage_id,))
        assert len(files) == 1 and files[0][1] == "uploaded"
        assert usage[account].exceeded and usage[account].committed_bytes > QUOTA
    for user in USERS[:2]:
        assert usage[user].wasted_bytes == 0
        assert ledger_uploaded(state)[user] == usage[user].committed_bytes
    assert_nothing_lost(original, source, server.root / "media")


def test_overshoot_with_small_files_is_one_sequential_stage_per_account(tmp_path, quota_server):
    # The reserve is larger than every file: before, the last stretch of each account went
    # one rclone run per file. Now one stage with one transfer crosses the limit.
    quota = 2_000_000
    server = quota_server(dict.fromkeys(USERS[:2], quota))
    source = tmp_path / "source"
    original = make_source(source, [100_000] * 50)
    config = write_config(
        tmp_path,
        server,
        users=USERS[:2],
        quota_bytes=quota,
        source=source,
        reserve_bytes=500_000,
        overshoot=True,
    )

    completed = run_cli(config, "upload")

    assert completed.returncode == 3, completed.stderr
    stages = ledger_rows(
        tmp_path / "state", "SELECT account, overshoot, planned_files, transfers FROM stages"
    )
    assert stages == [
        ("alice", 0, 15, 4),
        ("alice", 1, 6, 1),  # 5 files reach the limit exactly, the 6th crosses it
        ("bob", 0, 15, 4),
        ("bob", 1, 6, 1),
    ]
    usage = server.usage()
    for user in USERS[:2]:
        assert usage[user].committed_bytes == 2_100_000 and usage[user].exceeded
        assert usage[user].wasted_bytes == 0 and usage[user].refused_uploads == 0
    assert_nothing_lost(original, source, server.root / "media")


def test_an_account_with_less_real_quota_is_blocked_and_the_session_moves_on(tmp_path, quota_server):
    # bob's provider-side limit is a third of what the configuration believes.
    server = quota_server({"alice": QUOTA, "bob": QUOTA // 3, "carol": QUOTA})
    source = tmp_path / "source"
    original = make_source(source, media_sizes(int(2.0 * QUOTA), seed=3))
    config = write_config(
        tmp_path, server, users=USERS, quota_bytes=QUOTA, source=source, reserve_bytes=100_000, transfers=4
    )

    completed = run_cli(config, "upload")

    # 2.33 quotas for 2.0 quotas of files: everything fits once bob is set aside.
    assert completed.returncode == 0, completed.stderr
    assert tree_digests(source) == {}, "every file was uploaded, none dropped"
    state = tmp_path / "state"
    blocks = ledger_rows(state, "SELECT account, observed_limit_bytes, reason FROM blocks")
    ledger = ledger_uploaded(state)
    usage = server.usage()
    assert [(account, reason) for account, _, reason in blocks] == [("bob", "limit")]
    assert blocks[0][1] == ledger["bob"] == usage["bob"].committed_bytes
    assert usage["bob"].committed_bytes > QUOTA // 3  # the crossing upload completed
    stages = ledger_rows(state, "SELECT account, outcome FROM stages ORDER BY number")
    bob_index = [account for account, _ in stages].index("bob")
    assert stages[bob_index][1] == "limit"
    assert "carol" in [account for account, _ in stages[bob_index + 1 :]]
    for user in USERS:
        assert ledger.get(user, 0) == usage[user].committed_bytes
    assert_nothing_lost(original, source, server.root / "media")
    quota = {a["name"]: a for a in json.loads(run_cli(config, "quota", "--json").stdout)["media"]}
    assert quota["bob"]["blocked_until"] is not None
    assert quota["bob"]["observed_limit_bytes"] == ledger["bob"]
    assert quota["bob"]["remaining_bytes"] == 0


def test_dry_run_and_plan_start_no_rclone(tmp_path, quota_server):
    server = quota_server(dict.fromkeys(USERS, QUOTA))
    source = tmp_path / "source"
    original = make_source(source, media_sizes(QUOTA, seed=5))
    config = write_config(tmp_path, server, users=USERS, quota_bytes=QUOTA, source=source)

    dry = run_cli(config, "upload", "--dry-run")
    plan = run_cli(config, "plan", "--json")

    assert dry.returncode == 0 and plan.returncode == 0, dry.stderr + plan.stderr
    document = json.loads(plan.stdout)
    assert document["planned"]["files"] == len(original)
    assert sum(stage["files"] for stage in document["stages"]) == len(original)
    assert all(usage.committed_files == 0 for usage in server.usage().values())
    assert tree_digests(source) == original
