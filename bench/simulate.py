"""Quota simulator: cloudplow's planner and ledger against the alternatives, on the same workloads.

Replays seeded workloads (or a file of sizes) against a simulated provider
that obeys the facts in ../shared/DESIGN.md (a per-account limit Q over a
rolling 24 h window; the first upload that crosses it completes, the others in
flight fail and their bytes are wasted, later ones are refused; bandwidth
shared equally among concurrent transfers) and compares, in one run:

- cloudplow, overshoot off and on, reserve 1 GB and 0: `run_session` itself
  with a real SQLite ledger and a simulated clock (sim_strategies.py);
- cloudplow configured with the same number in GiB (the unit mistake);
- seed-tiers: the fork's staged tiers with a non-atomic `--cutoff-mode
  cautious`, with 750 GB and with the fork's 750 GiB;
- naive: 8 transfers until the limit error, then the next account.

    .venv/bin/python bench/simulate.py            # the full run, writes bench/results/simulator.md
    .venv/bin/python bench/simulate.py --quick    # tiny totals, a few seconds
    .venv/bin/python bench/simulate.py --sizes my-library.txt --accounts 10

`--sizes FILE` replays a library: one integer of bytes per line (for example
`find /mnt/local/Media -type f -printf '%s\\n' > sizes.txt`).
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import platform
import shlex
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sim_workloads
from sim_strategies import RunResult, SimSettings, run_cloudplow, run_naive, run_seed_tiers

from cloudplow.scan import QueuedFile
from cloudplow.units import format_size, parse_duration, parse_size

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "simulator.md"
TARGET_TOLERANCE_POINTS = 0.05


@dataclass(frozen=True)
class Strategy:
    key: str
    kind: str  # cloudplow | seed-tiers | naive
    overshoot: bool = False
    reserve_bytes: int = 10**9
    unit_mistake: bool = False  # configured with the quota's number in GiB

    def label(self, quota_bytes: int) -> str:
        if self.kind == "naive":
            return "naive, 8 transfers"
        unit = f", {quota_bytes / 10**9:g} GiB configured" if self.unit_mistake else ""
        if self.kind == "seed-tiers":
            return f"seed-tiers{unit}"
        overshoot = "overshoot on" if self.overshoot else "overshoot off"
        return f"cloudplow, {overshoot}, reserve {format_size(self.reserve_bytes)}{unit}"

    def ceiling(self, quota_bytes: int) -> float | None:
        """With overshoot off, no planner passes (Q - reserve) / Q."""
        if self.kind != "cloudplow" or self.overshoot or self.unit_mistake:
            return None
        return (quota_bytes - self.reserve_bytes) / quota_bytes


STRATEGIES = (
    Strategy("cloudplow", "cloudplow"),
    Strategy("cloudplow-overshoot", "cloudplow", overshoot=True),
    Strategy("cloudplow-reserve0", "cloudplow", reserve_bytes=0),
    Strategy("cloudplow-overshoot-reserve0", "cloudplow", overshoot=True, reserve_bytes=0),
    Strategy("cloudplow-gib", "cloudplow", unit_mistake=True),
    Strategy("seed-tiers", "seed-tiers"),
    Strategy("seed-tiers-gib", "seed-tiers", unit_mistake=True),
    Strategy("naive", "naive"),
)
STRATEGY_KEYS = tuple(strategy.key for strategy in STRATEGIES)


@dataclass(frozen=True)
class WorkloadSpec:
    name: str
    total_bytes: int = 0
    seed: int = 1
    sizes_file: str | None = None


@functools.lru_cache(maxsize=4)
def build_workload(spec: WorkloadSpec) -> tuple[QueuedFile, ...]:
    """Given a workload spec, return its files (cached per process: every strategy gets the same)."""
    if spec.sizes_file is not None:
        return tuple(sim_workloads.from_sizes_file(Path(spec.sizes_file)))
    generator = {"media": sim_workloads.media, "large": sim_workloads.large, "small": sim_workloads.small}
    return tuple(generator[spec.name](spec.total_bytes, spec.seed))


@dataclass(frozen=True)
class Case:
    workload: WorkloadSpec
    accounts: int
    strategy: Strategy
    settings: SimSettings
    temp_root: str | None


def run_case(case: Case) -> tuple[Case, RunResult, float]:
    """Run one strategy on one workload with one number of accounts; return its result and wall time."""
    started = time.perf_counter()
    files = build_workload(case.workload)
    quota_bytes = case.settings.provider_quota_bytes
    configured_bytes = quota_bytes * 2**30 // 10**9 if case.strategy.unit_mistake else quota_bytes
    label = case.strategy.label(quota_bytes)
    if case.strategy.kind == "cloudplow":
        with tempfile.TemporaryDirectory(prefix="cloudplow-sim-", dir=case.temp_root) as work_dir:
            result = run_cloudplow(
                files,
                accounts=case.accounts,
                settings=case.settings,
                per_account_bytes=configured_bytes,
                reserve_bytes=case.strategy.reserve_bytes,
                overshoot=case.strategy.overshoot,
                work_dir=Path(work_dir),
                strategy=label,
            )
    elif case.strategy.kind == "seed-tiers":
        result = run_seed_tiers(
            files,
            accounts=case.accounts,
            settings=case.settings,
            assumed_quota_bytes=configured_bytes,
            strategy=label,
        )
    else:
        result = run_naive(files, accounts=case.accounts, settings=case.settings, strategy=label)
    return case, result, time.perf_counter() - started


# --- the report ---------------------------------------------------------------------------


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.3f} %"


def drain_text(result: RunResult) -> str:
    if result.drained_at is not None:
        return f"{result.drained_at / 3600:.1f}"
    return f"not drained in {result.horizon_seconds / 86400:g} days"


def result_row(case: Case, result: RunResult) -> list[str]:
    utilizations = result.first_window_utilizations()
    mean = statistics.fmean(utilizations) if utilizations else None
    lowest = min(utilizations) if utilizations else None
    return [
        str(case.accounts),
        result.strategy,
        str(len(utilizations)),
        percent(mean),
        percent(lowest),
        format_size(result.wasted_bytes) if result.wasted_bytes else "0",
        str(result.rotations),
        str(result.stages),
        f"{result.left_files}" + (f" ({format_size(result.left_bytes)})" if result.left_files else ""),
        drain_text(result),
    ]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


RESULT_HEADER = (
    "accounts",
    "strategy",
    "accounts counted",
    "mean utilization",
    "min utilization",
    "wasted",
    "rotations",
    "stages",
    "left (deferred) files",
    "hours to drain",
)


def has_target(strategy: Strategy) -> bool:
    """Issue 5 sets targets for cloudplow with overshoot off (reserve 1 GB and 0) and on (reserve 1 GB)."""
    if strategy.kind != "cloudplow" or strategy.unit_mistake:
        return False
    return not strategy.overshoot or strategy.reserve_bytes > 0


def target_rows(results: Sequence[tuple[Case, RunResult]]) -> tuple[list[list[str]], int, int]:
    """Return the target checks for cloudplow as table rows, and how many were met out of how many."""
    rows = []
    met = total = 0
    for case, result in results:
        strategy = case.strategy
        if not has_target(strategy):
            continue
        utilizations = result.first_window_utilizations()
        if not utilizations:
            continue
        mean, lowest = statistics.fmean(utilizations), min(utilizations)
        ceiling = strategy.ceiling(case.settings.provider_quota_bytes)
        if ceiling is not None:
            floor = ceiling - TARGET_TOLERANCE_POINTS / 100
            target = f"mean, min >= {percent(floor)} (ceiling {percent(ceiling)}); 0 wasted"
            ok = mean >= floor and lowest >= floor and result.wasted_bytes == 0
        else:
            target = "mean > 100 %; 0 wasted"
            ok = mean > 1.0 and result.wasted_bytes == 0
        met += ok
        total += 1
        rows.append(
            [
                case.workload.name,
                str(case.accounts),
                result.strategy,
                target,
                f"{percent(mean)} / {percent(lowest)}; wasted {format_size(result.wasted_bytes)}",
                "met" if ok else "**missed**",
            ]
        )
    return rows, met, total


def workload_rows(specs: Sequence[WorkloadSpec]) -> list[list[str]]:
    rows = []
    for spec in specs:
        sizes = sorted(queued.size for queued in build_workload(spec))
        rows.append(
            [
                spec.name,
                f"{len(sizes):,}",
                format_size(sum(sizes)),
                format_size(sizes[0]) if sizes else "—",
                format_size(sizes[len(sizes) // 2]) if sizes else "—",
                format_size(sizes[-1]) if sizes else "—",
                f"{sum(size < 10**7 for size in sizes):,}",
            ]
        )
    return rows


def machine_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()},"
        f" Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def render(
    results: Sequence[tuple[Case, RunResult]],
    specs: Sequence[WorkloadSpec],
    settings: SimSettings,
    arguments: argparse.Namespace,
    elapsed_seconds: float,
) -> str:
    quota = settings.provider_quota_bytes
    parts = [
        "**Quota simulator**: cloudplow's planner and ledger against the alternatives on the same workloads.",
        "",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine_description()}",
        f"- Command: `{arguments.command}` ({elapsed_seconds:.0f} s wall, {arguments.jobs} processes)",
        f"- Provider: Q = {format_size(quota)} per account per rolling {settings.window_seconds / 3600:g} h;"
        f" link {settings.bandwidth_bytes_per_second * 8 / 1e6:g} Mbit/s shared equally by the transfers"
        f" in flight; {settings.transfers} transfers; the daemon checks every"
        f" {settings.check_interval_seconds / 60:g} min; horizon {settings.horizon_seconds / 86400:g} days.",
        "",
        "### Workloads",
        "",
        markdown_table(
            ("workload", "files", "total", "smallest", "median", "largest", "files < 10 MB"),
            workload_rows(specs),
        ),
        "",
    ]
    for note in arguments.notes:
        parts += [f"- {note}"]
    parts += [
        "",
        "Utilization: committed bytes / Q over each account's first 24 h, for the accounts the strategy"
        " finished with (left for another account, or waited for quota) among those first used in the"
        " run's first 24 h; the account in use when the queue ran out is not counted. *Wasted*: bytes"
        " sent that the provider did not commit (uploads that failed or were aborted at the limit)."
        " *Rotations*: stages that started on another account than the previous stage. *Left*: files"
        " still in the source at the end. With overshoot off no planner can pass (Q - reserve) / Q:"
        f" {percent((quota - 10**9) / quota)} with the 1 GB reserve, 100 % with none.",
        "",
    ]
    for spec in specs:
        rows = [result_row(case, result) for case, result in results if case.workload == spec]
        parts += [f"### {spec.name}", "", markdown_table(RESULT_HEADER, rows), ""]
    rows, met, total = target_rows(results)
    parts += [
        f"### Targets for cloudplow: {met} of {total} met",
        "",
        f"Within {TARGET_TOLERANCE_POINTS} points of the ceiling with overshoot off (reserve 1 GB and 0),"
        " above 100 % with overshoot on (reserve 1 GB, the default), zero wasted bytes in all. Overshoot"
        " on with reserve 0 has no target: when the packing reaches the limit to the byte (as it does on"
        " `media`), the planner does not start an overshoot on an account exactly at its limit"
        " (tests/test_plan.py::test_overshoot_needs_the_account_strictly_below_its_limit), so it"
        " shows 100.000 % there.",
        "",
        markdown_table(("workload", "accounts", "strategy", "target", "mean / min", "result"), rows),
        "",
    ]
    return "\n".join(parts)


# --- command line -------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", help="comma-separated: media,large,small (default: all three)")
    parser.add_argument("--sizes", action="append", default=[], metavar="FILE", help="a workload file")
    parser.add_argument("--accounts", default="10,20,40", help="comma-separated account counts")
    parser.add_argument("--total", default="30TB", help="bytes of the media and large workloads")
    parser.add_argument(
        "--small-total",
        default="3TB",
        help="bytes of the small workload (default 3TB: 30TB of small files is ~600,000 files per run)",
    )
    parser.add_argument("--quota", default="750GB", help="the provider's limit per account per window")
    parser.add_argument("--window", default="24h")
    parser.add_argument("--bandwidth-mbit", type=float, default=1000.0)
    parser.add_argument("--transfers", type=int, default=8)
    parser.add_argument("--check-interval", default="30m")
    parser.add_argument("--horizon", default="30d")
    parser.add_argument("--strategies", default=",".join(STRATEGY_KEYS), help="comma-separated keys")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="tiny totals: a smoke run of a few seconds")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    arguments = parser.parse_args(argv)
    python = Path(sys.executable)
    if python.is_relative_to(ROOT):
        python = python.relative_to(ROOT)
    script = sys.argv[1:] if argv is None else list(argv)
    arguments.command = shlex.join([str(python), "bench/simulate.py", *script])
    if arguments.quick:
        arguments.total, arguments.small_total = "1600GB", "200GB"
        if arguments.accounts == "10,20,40":
            arguments.accounts = "2,3"
        if arguments.output == DEFAULT_OUTPUT:
            arguments.no_write = True
    unknown = set(arguments.strategies.split(",")) - set(STRATEGY_KEYS)
    if unknown:
        parser.error(f"unknown strategies {sorted(unknown)}; known: {', '.join(STRATEGY_KEYS)}")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    started = time.perf_counter()
    settings = SimSettings(
        provider_quota_bytes=parse_size(arguments.quota),
        window_seconds=parse_duration(arguments.window),
        bandwidth_bytes_per_second=arguments.bandwidth_mbit * 1e6 / 8,
        transfers=arguments.transfers,
        check_interval_seconds=parse_duration(arguments.check_interval),
        horizon_seconds=parse_duration(arguments.horizon),
    )
    names = arguments.workloads.split(",") if arguments.workloads else ([] if arguments.sizes else None)
    names = ["media", "large", "small"] if names is None else names
    specs = [
        WorkloadSpec(
            name,
            parse_size(arguments.small_total if name == "small" else arguments.total),
            arguments.seed,
        )
        for name in names
    ]
    specs += [WorkloadSpec(Path(path).name, sizes_file=str(Path(path).resolve())) for path in arguments.sizes]
    arguments.notes = []
    if "small" in names and parse_size(arguments.small_total) != parse_size(arguments.total):
        arguments.notes.append(
            f"`small` is scaled to {format_size(parse_size(arguments.small_total))} (not"
            f" {format_size(parse_size(arguments.total))}) to keep the file count, and the run time, down:"
            " every cloudplow upload is a real ledger transaction. Its utilization columns count only the"
            " accounts it fills; `--small-total 30TB` runs the full size."
        )
    temp_root = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    chosen = [strategy for strategy in STRATEGIES if strategy.key in arguments.strategies.split(",")]
    cases = [
        Case(spec, int(accounts), strategy, settings, temp_root)
        for spec in specs
        for accounts in arguments.accounts.split(",")
        for strategy in chosen
    ]
    # Longest first (cloudplow on many files), so the processes finish together.
    order = sorted(
        range(len(cases)),
        key=lambda index: (
            -(
                len(build_workload(cases[index].workload))
                * (5 if cases[index].strategy.kind == "cloudplow" else 1)
            )
        ),
    )
    finished: dict[int, tuple[RunResult, float]] = {}
    if arguments.jobs > 1:
        with multiprocessing.get_context("fork").Pool(arguments.jobs) as pool:
            for index, (_, result, seconds) in zip(
                order, pool.imap(run_case, [cases[index] for index in order]), strict=True
            ):
                finished[index] = (result, seconds)
    else:
        for index in order:
            _, result, seconds = run_case(cases[index])
            finished[index] = (result, seconds)
    results = [(case, finished[index][0]) for index, case in enumerate(cases)]
    for index, case in enumerate(cases):
        print(
            f"  {case.workload.name} x{case.accounts} {case.strategy.key}: {finished[index][1]:.1f} s",
            file=sys.stderr,
        )
    report = render(results, specs, settings, arguments, time.perf_counter() - started)
    print(report)
    if not arguments.no_write:
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(report, encoding="utf-8")
        print(f"written to {arguments.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
