"""Smoke run of the quota simulator (bench/simulate.py) and unit tests of its provider model.

The simulator is a benchmark, not part of cloudplow, but its numbers are only
worth publishing if its provider obeys the facts in DESIGN.md and cloudplow's
run through it keeps its promises; both are checked here on tiny workloads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import sim_workloads
import simulate
from sim_provider import Provider, run_stage
from sim_strategies import (
    SimSettings,
    run_cloudplow,
    run_naive,
    run_seed_tiers,
    seed_tier,
)

from cloudplow.plan import AccountState, PlanSettings, plan_uploads
from cloudplow.scan import QueuedFile

GB = 10**9
DAY = 86400.0


def files(*sizes: int) -> list[QueuedFile]:
    return [QueuedFile(f"f{index:03d}", size, 0.0) for index, size in enumerate(sizes)]


# --- the provider model ------------------------------------------------------------------


def test_the_first_upload_crossing_the_limit_completes_the_others_fail_later_ones_are_refused() -> None:
    provider = Provider(quota_bytes=100, window_seconds=DAY)
    assert provider.start("a", 0.0) and provider.start("a", 0.0) and provider.start("a", 0.0)
    assert provider.complete("a", 60, 1.0)  # 60: below the limit
    assert provider.complete("a", 60, 2.0)  # 120: crosses it, and completes
    assert not provider.complete("a", 60, 3.0)  # in flight at the crossing: fails
    assert not provider.start("a", 4.0)  # refused at once
    assert provider.used_bytes("a", 4.0) == 120
    assert provider.start("b", 4.0), "accounts are independent"
    # Rolling window: the first commit ages out a day after it ended, the second one later.
    assert not provider.start("a", 1.0 + DAY - 0.1)
    assert provider.start("a", 2.0 + DAY)
    assert provider.used_bytes("a", 2.0 + DAY) == 0


def test_an_upload_that_reaches_the_limit_exactly_does_not_cross_it() -> None:
    provider = Provider(quota_bytes=100)
    assert provider.complete("a", 100, 1.0)
    assert provider.start("a", 1.0) and provider.complete("a", 1, 2.0)
    assert not provider.start("a", 2.0)


def test_bandwidth_is_shared_equally_among_the_transfers_in_flight() -> None:
    outcome = run_stage(
        Provider(10**6), "a", files(100, 300), start=10.0, transfers=2, bandwidth_bytes_per_second=100.0
    )
    # Both at 50 B/s until the small one ends at t=2; the large one then has 200 B alone at 100 B/s.
    assert [(upload.size, started, ended) for upload, started, ended in outcome.committed] == [
        (100, 10.0, 12.0),
        (300, 10.0, 14.0),
    ]
    assert outcome.end == 14.0 and outcome.wasted_bytes == 0


def test_a_stage_stops_at_the_first_limit_error_and_wastes_what_was_in_flight() -> None:
    provider = Provider(quota_bytes=100)
    # Four at once at 1 B/s: 10 ends at t=10; then three at 4/3 B/s: 100 ends at t=77.5
    # (110: crosses, completes); then two at 2 B/s: 110 ends at t=82.5 and fails, and the
    # stage stops there: the 150 in flight is aborted with its 110 bytes sent.
    outcome = run_stage(
        provider, "a", files(10, 100, 110, 150), start=0.0, transfers=4, bandwidth_bytes_per_second=4.0
    )
    assert [(upload.size, ended) for upload, _, ended in outcome.committed] == [(10, 10.0), (100, 77.5)]
    assert outcome.limit and [upload.size for upload in outcome.limit_failed] == [110]
    assert [upload.size for upload in outcome.aborted] == [150]
    assert outcome.wasted_bytes == 110 + 110 and outcome.end == 82.5
    assert provider.committed_bytes == {"a": 110} and provider.failed_uploads == 1


def test_a_stage_stopped_by_a_refusal_aborts_the_uploads_in_flight() -> None:
    provider = Provider(quota_bytes=100)
    # Two at once, 1 B/s each: 50 ends at t=50 (50 committed) and 500 starts; 60 ends at
    # t=60 (110: crosses, completes) and its slot starts the 5, refused at once: the stage
    # stops and the 500 in flight is aborted with the 10 bytes it had sent.
    outcome = run_stage(
        provider, "a", files(50, 60, 500, 5), start=0.0, transfers=2, bandwidth_bytes_per_second=2.0
    )
    assert [(upload.size, ended) for upload, _, ended in outcome.committed] == [(50, 50.0), (60, 60.0)]
    assert outcome.limit and [upload.size for upload in outcome.limit_failed] == [5]
    assert [upload.size for upload in outcome.aborted] == [500]
    assert outcome.wasted_bytes == 10 and outcome.end == 60.0
    assert provider.refused_uploads == 1 and provider.failed_uploads == 0


def test_cautious_cutoff_is_not_atomic_when_transfers_start_together() -> None:
    # rclone checks --max-transfer against the bytes already started: three 80 GB
    # files starting together all pass a 100 GB limit.
    together = run_stage(
        Provider(10**15),
        "a",
        files(80 * GB, 80 * GB, 80 * GB),
        start=0.0,
        transfers=3,
        bandwidth_bytes_per_second=1e9,
        max_transfer_bytes=100 * GB,
    )
    assert together.committed_bytes == 240 * GB and not together.cutoff
    one_at_a_time = run_stage(
        Provider(10**15),
        "a",
        files(80 * GB, 80 * GB, 80 * GB),
        start=0.0,
        transfers=1,
        bandwidth_bytes_per_second=1e9,
        max_transfer_bytes=100 * GB,
    )
    assert one_at_a_time.committed_bytes == 80 * GB and one_at_a_time.cutoff


def test_seed_tiers_follow_the_fork() -> None:
    quota = 750 * GB
    assert seed_tier(quota, quota) == (375 * GB, 600 * GB, 8)
    assert seed_tier(400 * GB, quota) == (240 * GB, 200 * GB, 4)
    assert seed_tier(200 * GB, quota) == (140 * GB, 60 * GB, 6)
    assert seed_tier(100 * GB, quota) == (80 * GB, 20 * GB, 8)


def test_the_planner_packs_the_large_workload_to_the_ceiling() -> None:
    # Files of 10 to 80 GB only: a pure largest-first greedy left up to 9.6 GB of an account
    # unused (ten 74 GB files, then no 10 GB file fits); the end-of-account look-ahead closes it.
    large = sim_workloads.large(30_000 * GB, seed=1)
    accounts = [AccountState(f"a{index:02d}", 750 * GB, 0) for index in range(14)]
    plan = plan_uploads(large, accounts, PlanSettings(reserve_bytes=GB, overshoot=False, max_transfers=8))
    gaps = [749 * GB - stage.planned_bytes for stage in plan.stages]
    assert len(gaps) == 14 and max(gaps) < 0.0005 * 750 * GB, gaps  # within 0.05 points


# --- the strategies on tiny workloads ------------------------------------------------------


@pytest.fixture(scope="module")
def media() -> list[QueuedFile]:
    return sim_workloads.media(1_600 * GB, seed=3)  # ~2,900 files: fills two accounts


def test_cloudplow_without_overshoot_reaches_the_ceiling_and_wastes_nothing(media, tmp_path) -> None:
    settings = SimSettings()
    for reserve_bytes in (GB, 0):
        result = run_cloudplow(
            media,
            accounts=2,
            settings=settings,
            per_account_bytes=settings.provider_quota_bytes,
            reserve_bytes=reserve_bytes,
            overshoot=False,
            work_dir=tmp_path / str(reserve_bytes),
        )
        ceiling = (settings.provider_quota_bytes - reserve_bytes) / settings.provider_quota_bytes
        utilizations = result.first_window_utilizations()
        assert len(utilizations) == 2
        assert all(ceiling - 0.0005 <= value <= ceiling for value in utilizations), utilizations
        assert result.wasted_bytes == 0 and result.failed_uploads == result.refused_uploads == 0
        assert result.left_files == 0 and result.drained_at is not None
        assert result.drained_at > DAY, "1.6 TB through two accounts needs a second window"


def test_cloudplow_with_overshoot_passes_the_limit_without_waste(media, tmp_path) -> None:
    settings = SimSettings()
    result = run_cloudplow(
        media,
        accounts=2,
        settings=settings,
        per_account_bytes=settings.provider_quota_bytes,
        reserve_bytes=GB,
        overshoot=True,
        work_dir=tmp_path,
    )
    utilizations = result.first_window_utilizations()
    assert len(utilizations) == 2 and min(utilizations) > 1.0
    assert result.wasted_bytes == 0 and result.failed_uploads == result.refused_uploads == 0


def test_cloudplow_with_the_unit_mistake_hits_the_limit_and_blocks(media, tmp_path) -> None:
    settings = SimSettings()
    result = run_cloudplow(
        media,
        accounts=2,
        settings=settings,
        per_account_bytes=750 * 2**30,
        reserve_bytes=GB,
        overshoot=False,
        work_dir=tmp_path,
    )
    assert result.wasted_bytes > 0 and result.failed_uploads + result.refused_uploads > 0
    assert result.left_files == 0, "the limit sends files back to the queue, none is lost"


def test_naive_and_seed_tiers_waste_bytes_at_the_limit(media) -> None:
    settings = SimSettings()
    naive = run_naive(media, accounts=2, settings=settings)
    assert naive.wasted_bytes > 0 and naive.left_files == 0
    large = sim_workloads.large(1_600 * GB, seed=3)
    seed = run_seed_tiers(large, accounts=2, settings=settings, assumed_quota_bytes=750 * 2**30)
    assert seed.wasted_bytes > 0 and seed.left_files == 0


def test_the_command_prints_tables_for_a_quick_run(tmp_path, capsys) -> None:
    sizes = tmp_path / "sizes.txt"
    sizes.write_text(
        "# my library\n" + "\n".join(str(30 * GB + index * GB // 7) for index in range(60)) + "\n"
    )
    output = tmp_path / "simulator.md"
    arguments = ["--quick", "--jobs", "1", "--accounts", "2", "--sizes", str(sizes), "--output", str(output)]
    assert simulate.main([*arguments, "--workloads", "media", "--strategies", "cloudplow,naive"]) == 0
    report = output.read_text()
    assert report in capsys.readouterr().out
    assert "### media" in report and "### sizes.txt" in report
    assert "| 2 | cloudplow, overshoot off, reserve 1.00 GB | 2 | 99.867 % | 99.867 % | 0 |" in report
    assert "Machine:" in report and "bench/simulate.py --quick --jobs 1" in report


def test_a_sizes_file_with_garbage_names_the_line(tmp_path) -> None:
    sizes = tmp_path / "sizes.txt"
    sizes.write_text("100\n12 GB\n")
    with pytest.raises(ValueError, match=r"sizes.txt:2: expected an integer of bytes"):
        sim_workloads.from_sizes_file(sizes)
