"""`make bench`: run every benchmark one after another and write bench/RESULTS.md.

The benchmarks run in sequence, never together, so one's load does not skew
another's timings. Each writes (or prints) a markdown section; this script
collects them under one header with the machine, the date and the command.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"

# (title, script and its arguments, the section file it writes; None: keep what it prints)
BENCHMARKS: list[tuple[str, list[str], str | None]] = [
    ("Quota simulator: utilization, waste and drain time by strategy", ["simulate.py"], "simulator.md"),
    ("Real rclone: cloudplow upload against plain rclone copy", ["bench_rclone_overhead.py"], "overhead.md"),
    ("Scale: scan and plan of 1,000,000 files", ["bench_scale.py"], "scale.md"),
    ("/metrics with 500 accounts, and the idle daemon's memory", ["bench_metrics.py"], None),
    ("HTTP: 300 idle connections and a burst against the daemon", ["bench_http.py"], None),
    ("Container image: size, build and start times (podman)", ["bench_container.py"], None),
]


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, {platform.system()}"


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    sections = []
    failures = 0
    for title, arguments, section_file in BENCHMARKS:
        command = [sys.executable, str(BENCH / arguments[0]), *arguments[1:]]
        print(f"== {title}: {' '.join(command)}", flush=True)
        started = time.monotonic()
        completed = subprocess.run(command, capture_output=section_file is None, text=True, check=False)
        elapsed = time.monotonic() - started
        if completed.returncode != 0:
            failures += 1
            body = f"**failed** with exit code {completed.returncode}"
        elif section_file is None:
            body = completed.stdout.strip()
        else:
            body = (RESULTS / section_file).read_text(encoding="utf-8").strip()
        command_text = " ".join(["python", f"bench/{arguments[0]}", *arguments[1:]])
        sections.append(f"## {title}\n\n`{command_text}` ({elapsed:.0f} s)\n\n{body}\n")
        print(body if section_file is None else f"   -> bench/results/{section_file}", flush=True)
    header = (
        "# Benchmark results\n\n"
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()} by `make bench`"
        " (benchmarks run one after another).\n"
    )
    (BENCH / "RESULTS.md").write_text(header + "\n" + "\n".join(sections), encoding="utf-8")
    print("wrote bench/RESULTS.md")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
