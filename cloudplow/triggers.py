"""When the daemon starts a session: the triggers, as one pure function.

A check fires when the queue is large enough (`min_queue`), its oldest file
old enough (`max_age`) or the source disk short of space (`min_free`), and
only inside the `schedule` window if one is set (a window may cross
midnight). A check that would fire but finds no account able to take any
queued file does not start a session: it would plan nothing. The clock and
every measurement are arguments.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cloudplow.config import Check, Schedule
from cloudplow.units import format_duration, format_size


@dataclass(frozen=True, slots=True)
class TriggerInputs:
    now: float  # seconds since the epoch
    local_time: datetime.time  # the schedule is in the host's local time
    queue_files: int
    queue_bytes: int
    oldest_mtime: float | None
    free_bytes: int  # on the source's file system
    plannable: bool  # some account can take some queued file now


@dataclass(frozen=True, slots=True)
class Decision:
    fire: bool
    reason: str  # one of REASONS
    detail: str  # for people


REASONS = (
    "min_queue",
    "max_age",
    "min_free",
    "outside_schedule",
    "empty_queue",
    "below_thresholds",
    "no_quota",
)


def in_window(schedule: Schedule | None, local_time: datetime.time) -> bool:
    """Given the schedule (or None: always) and a local time, return whether sessions may start."""
    if schedule is None:
        return True
    if schedule.start < schedule.end:
        return schedule.start <= local_time < schedule.end
    return local_time >= schedule.start or local_time < schedule.end  # crosses midnight


def evaluate(check: Check, schedule: Schedule | None, inputs: TriggerInputs) -> Decision:
    """Given the uploader's triggers, its schedule and what a check measured, decide."""
    if not in_window(schedule, inputs.local_time):
        assert schedule is not None
        return Decision(
            False, "outside_schedule", f"outside the schedule {schedule.start:%H:%M}-{schedule.end:%H:%M}"
        )
    if inputs.queue_files == 0:
        return Decision(False, "empty_queue", "nothing queued")
    fired: Decision | None = None
    if inputs.free_bytes < check.min_free_bytes:
        fired = Decision(
            True,
            "min_free",
            f"{format_size(inputs.free_bytes)} free on the source,"
            f" below min_free {format_size(check.min_free_bytes)}",
        )
    elif inputs.queue_bytes >= check.min_queue_bytes:
        fired = Decision(
            True,
            "min_queue",
            f"{format_size(inputs.queue_bytes)} queued, at least"
            f" min_queue {format_size(check.min_queue_bytes)}",
        )
    elif inputs.oldest_mtime is not None and inputs.now - inputs.oldest_mtime >= check.max_age_seconds:
        fired = Decision(
            True,
            "max_age",
            f"oldest file {format_duration(inputs.now - inputs.oldest_mtime)}"
            f" old, at least max_age {format_duration(check.max_age_seconds)}",
        )
    if fired is None:
        return Decision(
            False,
            "below_thresholds",
            f"{format_size(inputs.queue_bytes)} queued, below min_queue"
            f" {format_size(check.min_queue_bytes)}; nothing older than max_age"
            f" {format_duration(check.max_age_seconds)}",
        )
    if not inputs.plannable:
        return Decision(False, "no_quota", f"{fired.detail}, but no account can take any queued file now")
    return fired
