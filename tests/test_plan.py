"""The planner: exact plans on small cases, and its invariants on random ones (hypothesis)."""

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudplow.plan import AccountState, PlanSettings, plan_uploads
from cloudplow.scan import QueuedFile

GB = 10**9
MB = 10**6


def queued(*sizes: int) -> list[QueuedFile]:
    return [QueuedFile(f"f{index:03d}", size, 0.0) for index, size in enumerate(sizes)]


def test_packs_largest_first_and_fills_the_gap_with_small_files():
    files = queued(6 * GB, 5 * GB, 3 * GB, 1 * GB, 1 * GB)
    plan = plan_uploads(files, [AccountState("a", 10 * GB, 0)], PlanSettings(0, False, 8))
    assert len(plan.stages) == 1
    assert sorted(f.size for f in plan.stages[0].files) == [1 * GB, 3 * GB, 6 * GB]
    assert plan.stages[0].planned_bytes == 10 * GB
    assert [f.size for f in plan.waiting] == [5 * GB, 1 * GB]
    assert plan.deferred == ()


def test_reserve_and_used_bytes_shrink_capacity():
    files = queued(4 * GB, 3 * GB, 2 * GB)
    accounts = [AccountState("a", 10 * GB, 4 * GB)]
    plan = plan_uploads(files, accounts, PlanSettings(1 * GB, False, 8))
    # 10 - 4 - 1 = 5 GB: 4 GB then nothing else fits (3 and 2 are too big for the 1 GB gap)
    assert [f.size for f in plan.stages[0].files] == [4 * GB]


def test_rotates_through_accounts_in_order_and_skips_blocked_ones():
    files = queued(*[GB] * 7)
    accounts = [
        AccountState("a", 3 * GB, 0),
        AccountState("b", 3 * GB, 0, blocked=True),
        AccountState("c", 3 * GB, 0),
    ]
    plan = plan_uploads(files, accounts, PlanSettings(0, False, 8))
    assert [(s.account, len(s.files)) for s in plan.stages] == [("a", 3), ("c", 3)]
    assert len(plan.waiting) == 1


def test_transfers_capped_by_setting_and_by_file_count():
    plan = plan_uploads(queued(*[GB] * 20), [AccountState("a", 30 * GB, 0)], PlanSettings(0, False, 8))
    assert plan.stages[0].transfers == 8
    plan = plan_uploads(queued(GB, GB), [AccountState("a", 30 * GB, 0)], PlanSettings(0, False, 8))
    assert plan.stages[0].transfers == 2


def test_files_larger_than_any_account_are_deferred_not_failed():
    files = queued(50 * GB, GB)
    plan = plan_uploads(files, [AccountState("a", 10 * GB, 0)], PlanSettings(0, False, 8))
    assert [f.size for f in plan.deferred] == [50 * GB]
    assert plan.planned_files == 1


def test_overshoot_adds_one_single_file_stage_per_account_below_its_limit():
    files = queued(50 * GB, 9 * GB, 3 * GB)
    plan = plan_uploads(files, [AccountState("a", 10 * GB, 0)], PlanSettings(0, True, 8))
    assert [(s.account, [f.size for f in s.files], s.transfers, s.overshoot) for s in plan.stages] == [
        ("a", [9 * GB], 1, False),
        ("a", [50 * GB], 1, True),
    ]
    assert [f.size for f in plan.waiting] == [3 * GB]


def test_overshoot_with_small_files_is_one_stage_that_crosses_the_limit():
    # A reserve larger than every file left: the normal stage cannot take them, and a stage
    # per file would mean a thousand rclone runs. One sequential stage crosses instead.
    files = queued(*([100 * MB] * 1000))
    plan = plan_uploads(files, [AccountState("a", 10 * GB, 9 * GB)], PlanSettings(GB + MB, True, 8))
    assert [(s.overshoot, len(s.files), s.transfers) for s in plan.stages] == [(True, 11, 1)]
    assert plan.stages[0].planned_bytes == 1100 * MB  # 10 files reach the limit, the 11th crosses it
    assert len(plan.waiting) + len(plan.deferred) == 989


def test_overshoot_needs_the_account_strictly_below_its_limit():
    files = queued(5 * GB, 5 * GB, 5 * GB)
    plan = plan_uploads(files, [AccountState("a", 10 * GB, 0)], PlanSettings(0, True, 8))
    assert [s.overshoot for s in plan.stages] == [False]


def test_empty_inputs():
    assert plan_uploads([], [AccountState("a", GB, 0)], PlanSettings(0, True, 8)).stages == ()
    plan = plan_uploads(queued(GB), [], PlanSettings(0, True, 8))
    assert plan.stages == () and [f.size for f in plan.deferred] == [GB]


def test_zero_byte_files_fit_a_full_account():
    plan = plan_uploads(queued(0, 0), [AccountState("a", GB, GB)], PlanSettings(0, False, 8))
    assert plan.planned_files == 2


def test_runs_of_files_taken_at_once_keep_the_order_and_stop_at_planned_files():
    # Far from its limit an account takes whole runs of files in one step; the
    # result must be what one file at a time gives: largest first, equal sizes
    # in path order, and a run ends where an earlier account took files.
    tens = [QueuedFile(f"t{index:03d}", 10, 0.0) for index in range(100)]
    ones = [QueuedFile(f"o{index:03d}", 1, 0.0) for index in range(100)]
    files = tens + ones
    random.Random(1).shuffle(files)
    accounts = [AccountState("a", 55, 0), AccountState("b", 1000, 0)]
    plan = plan_uploads(files, accounts, PlanSettings(0, False, 8))
    assert [stage.files for stage in plan.stages] == [
        tuple(tens[:5] + ones[:5]),
        tuple(tens[5:] + ones[5:55]),
    ]
    assert plan.waiting == tuple(ones[55:])


accounts_strategy = st.lists(
    st.builds(
        AccountState,
        name=st.uuids().map(str),
        quota_bytes=st.integers(0, 100 * GB),
        used_bytes=st.integers(0, 120 * GB),
        blocked=st.booleans(),
    ),
    max_size=6,
    unique_by=lambda account: account.name,
)
files_strategy = st.lists(st.integers(0, 40 * GB), max_size=60).map(lambda sizes: queued(*sizes))


@settings(max_examples=300, deadline=None)
@given(
    files=files_strategy,
    accounts=accounts_strategy,
    reserve=st.integers(0, 5 * GB),
    overshoot=st.booleans(),
    transfers=st.integers(1, 16),
)
def test_invariants(files, accounts, reserve, overshoot, transfers):
    plan = plan_uploads(files, accounts, PlanSettings(reserve, overshoot, transfers))
    by_name = {account.name: account for account in accounts}

    # Every file exactly once across stages, deferred and waiting.
    placed = [f.path for s in plan.stages for f in s.files]
    placed += [f.path for f in plan.deferred] + [f.path for f in plan.waiting]
    assert Counter(placed) == Counter(f.path for f in files)

    for stage in plan.stages:
        account = by_name[stage.account]
        assert not account.blocked
        assert 1 <= stage.transfers <= transfers
        assert stage.transfers <= len(stage.files)
        if stage.overshoot:
            # One transfer, largest first, every file but the last still below the limit.
            assert stage.transfers == 1 and overshoot
            assert [f.size for f in stage.files] == sorted((f.size for f in stage.files), reverse=True)
    for name in {stage.account for stage in plan.stages}:
        account = by_name[name]
        normal = [s for s in plan.stages if s.account == name and not s.overshoot]
        overshoots = [s for s in plan.stages if s.account == name and s.overshoot]
        normal_bytes = sum(s.planned_bytes for s in normal)
        assert normal_bytes <= max(0, account.remaining_bytes - reserve) or (normal_bytes == 0)
        assert len(overshoots) <= 1
        if overshoots:
            assert normal_bytes < account.remaining_bytes  # it starts below the limit
            before_last = normal_bytes + overshoots[0].planned_bytes - overshoots[0].files[-1].size
            assert before_last <= account.remaining_bytes  # only the last file may cross
            crossed = normal_bytes + overshoots[0].planned_bytes > account.remaining_bytes
            assert crossed or (not plan.waiting and not plan.deferred)  # else it would take more

    # Deferred files are larger than any available account's capacity at the start.
    capacities = [a.remaining_bytes - reserve for a in accounts if not a.blocked]
    largest = max(capacities, default=-1)
    for left in plan.deferred:
        assert left.size > largest
    # A waiting file fits no account's capacity left after the plan (greedy leaves nothing that fits).
    for left in plan.waiting:
        assert left.size <= largest
        for account in accounts:
            if account.blocked:
                continue
            used = sum(s.planned_bytes for s in plan.stages if s.account == account.name and not s.overshoot)
            assert left.size > account.remaining_bytes - reserve - used
