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
   sizes sorted once (ascending; the walk goes down from the end), and taken
   files are skipped with a union-find "previous free" array, so planning is
   O(n log n) for n files whatever the number of accounts. At a million
   files any Python work per file costs about a second, so the sorts key on
   attributes through C, the loop is inline, and far from an account's limit
   a whole run of files that fit is taken in one step instead of one by one,
   with the same result. bench/bench_scale.py
   measures it (bench/results/scale.md).

   The end of an account. Without small files (all 10 to 80 GB, say) the
   greedy can end an account with a gap nearly as large as the smallest file:
   ten 74 GB files leave 9 GB of a 749 GB capacity that no 10 GB file fills,
   where nine, a 73 GB and a 10 GB file close it to megabytes. So once an
   account holds files and what the next pick would leave could take at most
   two more files (less than three times the smallest queued file), the pick
   looks one file ahead: among that file and the TAIL_CANDIDATES largest that
   leave room for another, it takes the one that, followed by the largest
   file fitting after it, leaves the smallest gap. That costs
   O(TAIL_CANDIDATES log n) for the last few picks of an account, and the
   first file of every account is still the largest that fits.

3. Transfers. A stage's files add up to at most its account's capacity, so
   however many of them are in flight at once, their bytes cannot cross the
   limit: the stage may use all the transfers it is allowed (`transfers`,
   capped by its file count). This is the property rclone's
   `--max-transfer --cutoff-mode=cautious` cannot give when several
   transfers start together, and why every stage is an explicit file list.

4. Overshoot (optional). The provider lets the first upload that crosses the
   limit complete. With `overshoot` on, once an account is packed and still
   below its limit, one more stage crosses it with one transfer: the largest
   files left (the first is often one no account could take inside its
   quota), one after another, until their bytes pass the limit. Nothing else
   is ever in flight, so the crossing upload completes and the next one is
   refused before it sends a byte: nothing is wasted, and an account gets at
   most one such stage however small the files left are (a stage per file
   would mean a thousand rclone runs for a pool of subtitles).

5. What is left is reported, never failed: `deferred` holds files larger than
   any available account could take even at the start of this plan, and
   `waiting` the files that would fit an emptier account but found no room
   in this window. Both stay in the source for a later session.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress, islice
from operator import attrgetter

from cloudplow.scan import QueuedFile

# How many other files a pick at the end of an account compares (see "The end of an account").
TAIL_CANDIDATES = 64


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
    # Ascending by size, equal sizes by path descending, so walking down from
    # the end meets the largest files first and equal sizes in path order. Both
    # sorts key on an attribute through C (no Python call per file), and the
    # one by path is linear on the path-sorted queue a scan hands over.
    ordered = sorted(queue, key=attrgetter("path"), reverse=True)
    ordered.sort(key=attrgetter("size"))
    sizes = [queued.size for queued in ordered]
    count = len(sizes)
    # free[p] is 1 while the file at position p is not planned; previous[p + 1]
    # leads (union-find) to 1 + the last free position <= p, 0 when none is.
    free = bytearray(b"\x01") * count
    previous = array("q", range(count + 1))

    def last_free_at_or_below(position: int) -> int:
        root = position + 1
        while previous[root] != root:
            root = previous[root]
        node = position + 1
        while previous[node] != root:  # path compression
            previous[node], node = root, previous[node]
        return root - 1

    lowest_free = 0  # moves up only: files are taken, never given back

    def end_game_pick(candidate: int, capacity: int, gap: int) -> int:
        """
        Given the position of the largest free file that fits `capacity` and
        the gap it would leave, return the position of the file to take: that
        one unless this is the end of the account and another file, followed
        by the largest file that fits after it, leaves a smaller gap.
        """
        nonlocal lowest_free
        while not free[lowest_free]:
            lowest_free += 1
        smallest = sizes[lowest_free]
        if lowest_free == candidate or gap >= 3 * smallest:
            return candidate
        after = last_free_at_or_below(bisect_right(sizes, gap, 0, candidate) - 1)
        best, best_gap = candidate, gap - sizes[after] if after >= 0 else gap
        if not best_gap:
            return candidate
        first = last_free_at_or_below(bisect_right(sizes, capacity - smallest, 0, candidate + 1) - 1)
        for _ in range(TAIL_CANDIDATES):
            if first < 0:
                break
            rest = capacity - sizes[first]
            second = last_free_at_or_below(bisect_right(sizes, rest, 0, candidate + 1) - 1)
            if second == first:
                second = last_free_at_or_below(first - 1)
            if second >= 0 and rest - sizes[second] < best_gap:
                best, best_gap = first, rest - sizes[second]
                if not best_gap:
                    break
            first = last_free_at_or_below(first - 1)
        return best

    available = [account for account in accounts if not account.blocked]
    largest_capacity = max(
        (account.remaining_bytes - settings.reserve_bytes for account in available), default=-1
    )
    stages: list[Stage] = []
    for account in available:
        starting_capacity = capacity = account.remaining_bytes - settings.reserve_bytes
        chosen: list[QueuedFile] = []
        # Invariant: no free file above `position` fits `capacity`. This loop
        # runs once per planned file, so it stays inline and bisects only when
        # the next free file down is too large.
        position = count - 1
        while capacity >= 0:
            if previous[position + 1] != position + 1:
                position = last_free_at_or_below(position)
            if position < 0:
                break
            size = sizes[position]
            if size > capacity:
                position = bisect_right(sizes, capacity, 0, position) - 1
                continue
            gap = capacity - size
            # Far from the end of the account, the files from here down are
            # taken one after another while they fit. Take, in one step, the
            # longest run of free ones after which at least three times this
            # size is left, so that none of them would have looked ahead: with
            # small files that is most of a plan. The run is found by
            # galloping, so its cost is in C and grows with the files taken.
            if gap >= 3 * size:
                room = gap - 2 * size  # capacity - 3 * size
                low, step, growing = position + 1, 2, True
                while step:
                    start = low - step
                    if start >= 0 and free.find(0, start, low) < 0:
                        chunk = sum(sizes[start:low])
                        if chunk <= room:
                            room -= chunk
                            low = start
                            if growing:
                                step *= 2
                            continue
                    growing = False
                    step //= 2
                if low < position:
                    previous[low + 1 : position + 2] = array("q", [low]) * (position + 1 - low)
                    free[low : position + 1] = bytes(position + 1 - low)
                    chosen.extend(reversed(ordered[low : position + 1]))
                    capacity -= gap - 2 * size - room
                    position = low - 1
                    continue
            if gap < 3 * size and gap and chosen:  # perhaps the end of the account: look ahead
                picked = end_game_pick(position, capacity, gap)
                if picked != position:
                    previous[picked + 1] = picked
                    free[picked] = 0
                    chosen.append(ordered[picked])
                    capacity -= sizes[picked]
                    continue
            previous[position + 1] = position
            free[position] = 0
            chosen.append(ordered[position])
            capacity -= size
            position -= 1
        if chosen:
            transfers = max(1, min(settings.max_transfers, len(chosen)))
            stages.append(Stage(account.name, tuple(chosen), transfers))
        planned_bytes = starting_capacity - capacity
        below_limit_bytes = account.remaining_bytes - planned_bytes
        if settings.overshoot and below_limit_bytes > 0:
            # One stage, one transfer: the largest files left, one after another, until
            # one crosses the limit. Only one upload is ever in flight, so the crossing
            # one completes and the next is refused before it sends a byte.
            crossing: list[QueuedFile] = []
            position = last_free_at_or_below(count - 1)
            while position >= 0 and below_limit_bytes >= 0:
                previous[position + 1] = position
                free[position] = 0
                crossing.append(ordered[position])
                below_limit_bytes -= sizes[position]
                position = last_free_at_or_below(position - 1)
            if crossing:
                stages.append(Stage(account.name, tuple(crossing), 1, overshoot=True))

    # Whatever is left, largest first: files above every capacity are deferred.
    cut = bisect_right(sizes, largest_capacity)
    deferred = list(compress(islice(ordered, cut, None), islice(free, cut, None)))
    deferred.reverse()
    waiting = list(compress(islice(ordered, cut), free))
    waiting.reverse()
    return Plan(tuple(stages), tuple(deferred), tuple(waiting))
