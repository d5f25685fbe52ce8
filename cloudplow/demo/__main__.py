"""`make run` without a config.yaml: a self-contained demo of a multi-account session.

It builds a small media library under ./.demo/source, starts the local WebDAV
quota server (the one the tests use) with three accounts of a small quota,
writes a configuration for them, and runs one real upload session with the
real rclone, which fills each account and rotates to the next.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
from pathlib import Path

import yaml

from cloudplow.config import load_config
from cloudplow.daemon import run_daemon
from cloudplow.demo.quotadav import QuotaDavServer
from cloudplow.ledger import Ledger
from cloudplow.rclone import command, execute
from cloudplow.session import run_session
from cloudplow.units import format_size

ACCOUNTS = ("alice", "bob", "carol")
QUOTA_BYTES = 50_000_000
FILES = 300


def build_library(source: Path, *, seed: int = 2026) -> int:
    """Create FILES files of media-like sizes under `source`; return their total size."""
    generator = random.Random(seed)  # noqa: S311 -- demo data, not secrets
    total = 0
    for index in range(FILES):
        kind = generator.random()
        if kind < 0.08:
            size, folder, suffix = generator.randint(2_000_000, 5_000_000), "Movies", "mkv"
        elif kind < 0.45:
            size, folder, suffix = generator.randint(300_000, 1_500_000), "TV", "mkv"
        else:
            size, folder, suffix = generator.randint(1_000, 60_000), "TV", "srt"
        path = source / folder / f"title{index % 23:02d}" / f"part{index:03d}.{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(generator.randbytes(size))
        total += size
    return total


def write_demo_config(directory: Path, server: QuotaDavServer, binary: str, port: int) -> Path:
    """Write the demo's rclone.conf and config.yaml; return the latter's path."""
    (directory / "rclone.conf").write_text(
        f"[dav]\ntype = webdav\nurl = {server.url}\nvendor = other\npacer_min_sleep = 1ms\n",
        encoding="utf-8",
    )
    config = {
        "rclone": {"config": "rclone.conf"},
        "state_dir": "state",
        "server": {"host": "127.0.0.1", "port": port},
        "uploaders": {
            "media": {
                "source": "source",
                "destination": "dav:Media",
                "mode": "move",
                "accounts": {
                    "list": [
                        {
                            "name": name,
                            "env": {
                                "RCLONE_CONFIG_DAV_USER": name,
                                "RCLONE_CONFIG_DAV_PASS": command.obscure(binary, name),
                            },
                        }
                        for name in ACCOUNTS
                    ]
                },
                "quota": {
                    "per_account": QUOTA_BYTES,
                    "window": "24h",
                    "reserve": "200kB",
                    "overshoot": False,
                },
                "filters": {"min_age": "0s"},
                "check": {"interval": "5s", "min_queue": 0},
                "transfers": 4,
                # Slow enough to watch, fast enough for a demo.
                "rclone_flags": {"--bwlimit": "4M"},
            }
        },
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudplow.demo", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path(".demo"), help="where the demo lives (wiped first)")
    parser.add_argument("--port", type=int, default=47949, help="the daemon's HTTP port")
    parser.add_argument("--once", action="store_true", help="run one session and exit, no daemon")
    options = parser.parse_args(arguments)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    directory = options.dir.resolve()
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "remote").mkdir(parents=True)
    total = build_library(directory / "source")
    print(
        f"demo: {FILES} files, {format_size(total)} in {directory / 'source'}; "
        f"{len(ACCOUNTS)} accounts of {format_size(QUOTA_BYTES)} each",
        flush=True,
    )
    binary = execute.find_rclone(None)
    with QuotaDavServer(directory / "remote", dict.fromkeys(ACCOUNTS, QUOTA_BYTES)) as server:
        config = load_config(write_demo_config(directory, server, binary, options.port))
        if options.once:
            with Ledger.in_state_dir(config.state_dir) as ledger:
                result = run_session(config, config.uploaders["media"], ledger, trigger="demo")
            print(f"demo: session ended with exit code {result.exit_code}: {result.message}")
        else:
            print(
                f"demo: the daemon checks every 5 s; open http://127.0.0.1:{options.port}/metrics"
                f" and http://127.0.0.1:{options.port}/status, or run"
                f" .venv/bin/cloudplow --config {directory / 'config.yaml'} status; Ctrl-C stops it",
                flush=True,
            )
            run_daemon(config)
        usage = server.usage()
    for name in ACCOUNTS:
        print(
            f"  {name:6} {format_size(usage[name].committed_bytes):>10} of "
            f"{format_size(QUOTA_BYTES)} ({usage[name].committed_bytes / QUOTA_BYTES:.2%}),"
            f" wasted {format_size(usage[name].wasted_bytes)}"
        )
    print(f"demo: uploaded files are in {directory / 'remote' / 'Media'}")
    print(f"demo: what stayed (no quota left) is in {directory / 'source'}")
    print(f"demo: the ledger is {config.state_dir / 'cloudplow.sqlite3'}; try")
    print(f"        .venv/bin/cloudplow --config {directory / 'config.yaml'} quota")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
