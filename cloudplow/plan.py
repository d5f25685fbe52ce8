"""The planner: which files go through which account, in which stage.

This is a pure function, `plan_uploads(queue, accounts, settings) -> Plan`: no
clock, no disk, no rclone. The session calls it before every stage with the
accounts as the ledger sees them at that moment, runs only the first stage,
and calls it again, so every stage is planned on what really happened.

The algorithm, and why:

1. Capacity. An account may take `quota - used - reserve` bytes now. Quota is
   the configured per-account limit, lowered to the limit the provider really
   enforced if a limit error was seen within the window (see `quota.py`).
   Blocked accounts take nothing.

2. Packing: greedy best fit, largest first, one account at a time, in the
   configured account order. For each account we repeatedly take the largest
   queued file that still fits its remaining capacity. This is first-fit
   decreasing seen from the bin's side: each account ends with a gap smaller
   than the smallest file left in the queue, so with a media library (many
   small files beside the large ones) every account ends within a few
   megabytes of its capacity. Large files go first, small ones fill the gaps,
   which is also what leaves the smallest files (cheapest to place later) for
   the end. Finding "the largest file that fits" is a binary search over the
   sizes sorted once, and taken files are skipped with a union-find "next
   free" array, so planning is O(n log n) for n files whatever the number of
   accounts: a million files plan in about a second.

3. Transfers. A stage's files add up to at most its account's capacity, so
   however many of them are in flight at once, their bytes cannot cross the
   limit: the stage may use all the transfers it is allowed (`transfers`,
   capped by its file count). This is the property rclone's
   `--max-transfer --cutoff-mode=cautious` cannot give when several
   transfers start together, and why every stage is an explicit file list.

4. Overshoot (optional). The provider lets the first upload that crosses the
   limit complete. With `overshoot` on, once an account is packed and still
   below its limit, one more stage uploads a single file on its own (one
   transfer, nothing else in flight to waste): the largest file left, which
   is often one no account could take inside its quota.

5. What is left is reported, never failed: `deferred` holds files larger than
   any available account could take even at the start of this plan, and
   `waiting` the files that would fit an emptier account but found no room
   in this window. Both stay in the source for a later session.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from cloudplow.scan import QueuedFile


@dataclass(frozen=True, slots=True)
class AccountState:
    """One account as the planner sees it: its effective quota and usage in the window now."""

    name: str
    quota_bytes: int
    used_bytes: int
    blocked: bool = False

    @property
    def remaining_bytes(self) -> int:
        return max(0, self.quota_bytes - self.used_bytes)


@dataclass(frozen=True, slots=True)
class PlanSettings:
    reserve_bytes: int
    overshoot: bool
    max_transfers: int


@dataclass(frozen=True, slots=True)
class Stage:
    """One rclone run: one account, an explicit file list and how many transfers."""

    account: str
    files: tuple[QueuedFile, ...]
    transfers: int
    overshoot: bool = False

    @property
    def planned_bytes(self) -> int:
        return sum(queued.size for queued in self.files)


@dataclass(frozen=True, slots=True)
class Plan:
    stages: tuple[Stage, ...]
    deferred: tuple[QueuedFile, ...]  # larger than any available account can take now
    waiting: tuple[QueuedFile, ...]  # would fit, but no account has room left in this window

    @property
    def planned_bytes(self) -> int:
        return sum(stage.planned_bytes for stage in self.stages)

    @property
    def planned_files(self) -> int:
        return sum(len(stage.files) for stage in self.stages)


def plan_uploads(
    queue: Sequence[QueuedFile], accounts: Sequence[AccountState], settings: PlanSettings
) -> Plan:
    """
    Given the queued files, the accounts in rotation order and the settings,
    return the stages that upload as many bytes as the accounts can take now,
    plus the files left over. No non-overshoot stage plans more than its
    account's remaining bytes minus the reserve; every file appears at most once.
    """
    order = sorted(range(len(queue)), key=lambda index: (-queue[index].size, queue[index].path))
    sizes = [queue[index].size for index in order]
    negated_sizes = [-size for size in sizes]  # ascending, for bisect
    count = len(sizes)
    # next_free[i] leads to the first position >= i whose file is not planned yet.
    next_free = list(range(count + 1))

    def first_free(position: int) -> int:
        root = position
        while next_free[root] != root:
            root = next_free[root]
        while next_free[position] != root:  # path compression
            next_free[position], position = root, next_free[position]
        return root

    def take(position: int) -> QueuedFile:
        next_free[position] = position + 1
        return queue[order[position]]

    available = [account for account in accounts if not account.blocked]
    largest_capacity = max(
        (account.remaining_bytes - settings.reserve_bytes for account in available), default=-1
    )
    stages: list[Stage] = []
    for account in available:
        capacity = account.remaining_bytes - settings.reserve_bytes
        chosen: list[QueuedFile] = []
        while capacity >= 0:
            position = first_free(bisect_left(negated_sizes, -capacity))
            if position >= count:
                break
            chosen.append(take(position))
            capacity -= sizes[position]
        if chosen:
            transfers = max(1, min(settings.max_transfers, len(chosen)))
            stages.append(Stage(account.name, tuple(chosen), transfers))
        planned_bytes = sum(queued.size for queued in chosen)
        if settings.overshoot and account.remaining_bytes - planned_bytes > 0:
            position = first_free(0)
            if position < count:
                stages.append(Stage(account.name, (take(position),), 1, overshoot=True))

    deferred: list[QueuedFile] = []
    waiting: list[QueuedFile] = []
    position = first_free(0)
    while position < count:
        left = queue[order[position]]
        (deferred if left.size > largest_capacity else waiting).append(left)
        position = first_free(position + 1)
    return Plan(tuple(stages), tuple(deferred), tuple(waiting))
