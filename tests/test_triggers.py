"""The daemon's triggers (cloudplow.triggers): size, age, free space, schedule window, quota gate.

Pure functions: every clock value and measurement is an argument, so nothing here reads the clock.
"""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudplow.config import Check, Schedule
from cloudplow.triggers import REASONS, Decision, TriggerInputs, evaluate, in_window

GB = 10**9
HOUR = 3600.0
NOW = 1_700_000_000.0
NOON = datetime.time(12, 0)

CHECK = Check(
    interval_seconds=1800.0, min_queue_bytes=200 * GB, max_age_seconds=12 * HOUR, min_free_bytes=50 * GB
)

# A queue that fires nothing: below min_queue, younger than max_age, plenty of free space.
QUIET = TriggerInputs(
    now=NOW,
    local_time=NOON,
    queue_files=10,
    queue_bytes=100 * GB,
    oldest_mtime=NOW - HOUR,
    free_bytes=500 * GB,
    plannable=True,
)


def decide(check: Check = CHECK, schedule: Schedule | None = None, **changes: object) -> Decision:
    """Evaluate QUIET with some measurements changed."""
    decision = evaluate(check, schedule, dataclasses.replace(QUIET, **changes))
    assert decision.reason in REASONS
    assert decision.detail
    return decision


def at(hour: int, minute: int = 0) -> datetime.time:
    return datetime.time(hour, minute)


def test_below_every_threshold_does_not_fire():
    decision = decide()
    assert (decision.fire, decision.reason) == (False, "below_thresholds")


def test_size_trigger_fires_at_exactly_min_queue():
    decision = decide(queue_bytes=200 * GB)
    assert (decision.fire, decision.reason) == (True, "min_queue")
    assert "min_queue" in decision.detail


def test_size_trigger_fires_above_min_queue():
    assert decide(queue_bytes=200 * GB + 1).reason == "min_queue"


def test_size_trigger_does_not_fire_one_byte_below_min_queue():
    decision = decide(queue_bytes=200 * GB - 1)
    assert (decision.fire, decision.reason) == (False, "below_thresholds")


def test_age_trigger_fires_at_exactly_max_age():
    decision = decide(oldest_mtime=NOW - 12 * HOUR)
    assert (decision.fire, decision.reason) == (True, "max_age")
    assert "max_age" in decision.detail


def test_age_trigger_does_not_fire_one_second_before_max_age():
    decision = decide(oldest_mtime=NOW - 12 * HOUR + 1)
    assert (decision.fire, decision.reason) == (False, "below_thresholds")


def test_age_trigger_without_an_oldest_file_does_not_fire():
    assert decide(oldest_mtime=None).reason == "below_thresholds"


def test_free_space_trigger_fires_below_min_free():
    decision = decide(free_bytes=50 * GB - 1)
    assert (decision.fire, decision.reason) == (True, "min_free")
    assert "min_free" in decision.detail


def test_free_space_trigger_does_not_fire_at_exactly_min_free():
    assert decide(free_bytes=50 * GB).reason == "below_thresholds"


def test_min_free_zero_never_fires_even_on_a_full_disk():
    check = dataclasses.replace(CHECK, min_free_bytes=0)
    decision = decide(check, free_bytes=0)
    assert (decision.fire, decision.reason) == (False, "below_thresholds")


def test_free_space_is_reported_first_when_several_triggers_fire():
    decision = decide(free_bytes=0, queue_bytes=300 * GB, oldest_mtime=NOW - 24 * HOUR)
    assert (decision.fire, decision.reason) == (True, "min_free")


def test_empty_queue_never_fires_even_with_the_disk_full():
    decision = decide(queue_files=0, queue_bytes=0, oldest_mtime=None, free_bytes=0)
    assert (decision.fire, decision.reason) == (False, "empty_queue")


@pytest.mark.parametrize(
    "changes",
    [
        {"queue_bytes": 300 * GB},
        {"oldest_mtime": NOW - 24 * HOUR},
        {"free_bytes": 0},
    ],
    ids=["min_queue", "max_age", "min_free"],
)
def test_a_firing_trigger_without_plannable_quota_starts_no_session(changes):
    decision = decide(plannable=False, **changes)
    assert (decision.fire, decision.reason) == (False, "no_quota")
    assert "no account" in decision.detail


def test_no_quota_is_not_reported_when_nothing_would_fire():
    assert decide(plannable=False).reason == "below_thresholds"


NORMAL = Schedule(start=at(1), end=at(7))
CROSSING = Schedule(start=at(22), end=at(6))


@pytest.mark.parametrize(
    ("local_time", "inside"),
    [(at(0, 59), False), (at(1), True), (at(6, 59), True), (at(7), False), (NOON, False)],
)
def test_normal_window_includes_its_start_and_excludes_its_end(local_time, inside):
    assert in_window(NORMAL, local_time) is inside


@pytest.mark.parametrize(
    ("local_time", "inside"),
    [
        (at(21, 59), False),
        (at(22), True),
        (at(23, 59), True),
        (at(0), True),
        (at(3), True),
        (at(5, 59), True),
        (at(6), False),
        (NOON, False),
    ],
)
def test_window_crossing_midnight(local_time, inside):
    assert in_window(CROSSING, local_time) is inside


def test_no_schedule_is_always_inside():
    assert in_window(None, at(0))
    assert in_window(None, at(23, 59))


@pytest.mark.parametrize("schedule", [NORMAL, CROSSING], ids=["normal", "crossing"])
def test_schedule_gate_holds_back_a_trigger_that_would_fire(schedule):
    decision = decide(schedule=schedule, local_time=at(12), queue_bytes=300 * GB, free_bytes=0)
    assert (decision.fire, decision.reason) == (False, "outside_schedule")
    assert f"{schedule.start:%H:%M}-{schedule.end:%H:%M}" in decision.detail


def test_schedule_gate_comes_before_the_empty_queue():
    decision = decide(schedule=NORMAL, local_time=at(12), queue_files=0, queue_bytes=0)
    assert decision.reason == "outside_schedule"


def test_inside_the_window_a_trigger_fires():
    decision = decide(schedule=CROSSING, local_time=at(3), queue_bytes=300 * GB)
    assert (decision.fire, decision.reason) == (True, "min_queue")


@given(
    bounds=st.lists(st.times(), min_size=2, max_size=2, unique=True).map(sorted),
    local_time=st.times(),
)
def test_a_crossing_window_is_the_complement_of_its_reverse(bounds, local_time):
    early, late = bounds
    crossing = Schedule(start=late, end=early)  # e.g. 22:00-06:00
    complement = Schedule(start=early, end=late)  # 06:00-22:00
    assert in_window(crossing, local_time) is not in_window(complement, local_time)
