"""The command line: argparse subcommands, thin glue over config, session, ledger and quota.

Errors are raised deep down and caught here, where they become one readable
line on stderr and an exit code: 2 for configuration and usage errors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import requests
from rich.console import Console

from cloudplow import __version__, events
from cloudplow.clean import clean_hidden
from cloudplow.config import Config, ConfigError, Uploader, default_config_path, load_config, summarize
from cloudplow.daemon import check_triggers, run_daemon
from cloudplow.events import Event
from cloudplow.integrations import Integrations, integrations_for
from cloudplow.jobs import movers_after, run_job
from cloudplow.ledger import Ledger
from cloudplow.live import LiveState
from cloudplow.migrate import MigrateError, migrate
from cloudplow.progress import ProgressDisplay
from cloudplow.rclone import execute
from cloudplow.session import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_OUT_OF_QUOTA,
    EXIT_USAGE,
    PROGRESS_LOGGER,
    SessionError,
    SessionResult,
    UploaderBusy,
    bind_identities,
    display_path,
    plan_for,
    reports_now,
    run_session,
    summarize_plan,
)
from cloudplow.status import status_document
from cloudplow.units import format_duration, format_size

logger = logging.getLogger("cloudplow")


class UsageError(Exception):
    """A command-line mistake the user can fix: exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudplow",
        description="Quota-aware staged uploads of a media library through a pool of rclone accounts.",
    )
    parser.add_argument(
        "--config", help="configuration file (default: $CLOUDPLOW_CONFIG, else ./config.yaml)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("--version", action="version", version=f"cloudplow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("check-config", help="validate the configuration and print a summary")
    commands.add_parser("run", help="the daemon: scheduled checks and uploads, /metrics, /status, /healthz")

    upload = commands.add_parser("upload", help="run one upload session per uploader now")
    upload.add_argument("names", nargs="*", metavar="NAME", help="uploaders (default: all)")
    upload.add_argument("--dry-run", action="store_true", help="plan and print; start no rclone")
    upload.add_argument(
        "--check", action="store_true", help="only upload the uploaders whose triggers fire now"
    )
    upload.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no live progress display (on a terminal) and no periodic progress lines (otherwise)",
    )

    plan = commands.add_parser("plan", help="print the stage plan; upload nothing")
    plan.add_argument("name", nargs="?", metavar="NAME")
    plan.add_argument("--json", action="store_true")

    quota = commands.add_parser("quota", help="per-account used, remaining, reset and blocks")
    quota.add_argument("name", nargs="?", metavar="NAME")
    quota.add_argument("--json", action="store_true")

    status = commands.add_parser("status", help="uploaders, recent sessions and accounts")
    status.add_argument("--json", action="store_true")

    sync = commands.add_parser("sync", help="run the syncers now (remote to remote, quota-aware)")
    sync.add_argument("names", nargs="*", metavar="NAME", help="syncers (default: all)")

    commands.add_parser("clean", help="delete on the remotes what unionfs-fuse whiteouts (hidden) hide")

    migrate = commands.add_parser(
        "migrate-config",
        help="convert an old cloudplow config.json into config.yaml (and its quota cache into the ledger)",
        description="Exit 0: written and passes check-config; 1: written, with problems listed to fix; "
        "2: nothing written (unreadable input, or the output exists without --force).",
    )
    migrate.add_argument("old_config", metavar="OLD.json", help="the old cloudplow's config.json")
    migrate.add_argument(
        "--quota-cache", metavar="FILE", help="the staged fork's sa_quota_cache.json: usage to carry over"
    )
    migrate.add_argument(
        "--output",
        metavar="PATH",
        help="where to write (default: --config, $CLOUDPLOW_CONFIG, else ./config.yaml)",
    )
    migrate.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if arguments.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    try:
        if arguments.command == "migrate-config":
            return _migrate_config(arguments)
        config = load_config(default_config_path(arguments.config, os.environ))
        handler = _COMMANDS[arguments.command]
        return handler(config, arguments)
    except (ConfigError, UsageError, MigrateError) as error:
        print(f"cloudplow: {error}", file=sys.stderr)
        return EXIT_USAGE
    except SessionError as error:
        print(f"cloudplow: {error}", file=sys.stderr)
        return EXIT_FAILURES
    except KeyboardInterrupt:
        print("cloudplow: interrupted", file=sys.stderr)
        return EXIT_FAILURES


def _selected(config: Config, names: Sequence[str]) -> list[Uploader]:
    unknown = [name for name in names if name not in config.uploaders]
    if unknown:
        known = ", ".join(config.uploaders)
        raise UsageError(f"no uploader named {', '.join(unknown)} (configured: {known})")
    return [config.uploaders[name] for name in names] if names else list(config.uploaders.values())


def _run(config: Config, arguments: argparse.Namespace) -> int:
    return run_daemon(config)


def _check_config(config: Config, arguments: argparse.Namespace) -> int:
    print(summarize(config))
    return EXIT_OK


def _upload(config: Config, arguments: argparse.Namespace) -> int:
    uploaders = _selected(config, arguments.names)
    if arguments.dry_run:
        with Ledger.in_state_dir(config.state_dir) as ledger:
            for uploader in uploaders:
                _print_plan(config, uploader, ledger, as_json=False)
        return EXIT_OK
    integrations = integrations_for(config).start()
    try:
        exit_codes = _upload_each(config, uploaders, arguments, integrations)
    finally:
        integrations.close()
    return _worst(exit_codes)


def _upload_each(
    config: Config, uploaders: Sequence[Uploader], arguments: argparse.Namespace, integrations: Integrations
) -> list[int]:
    exit_codes = []
    display = _progress_display(quiet=arguments.quiet)
    listeners = [*integrations.listeners, *([display] if display else [])]
    # SIGTERM stops the running stage cleanly, as in the daemon: the session records what
    # finished and ends, so the downloaders are resumed and nothing is lost.
    stop_event = threading.Event()
    previous_handler = signal.signal(signal.SIGTERM, lambda _signal, _frame: stop_event.set())
    try:
        with Ledger.in_state_dir(config.state_dir) as ledger:
            for uploader in uploaders:
                if stop_event.is_set():
                    break
                trigger = "manual"
                if arguments.check:
                    _, decision = check_triggers(uploader, ledger, time.time())
                    print(f"{uploader.name}: {'upload' if decision.fire else 'no upload'}: {decision.detail}")
                    if not decision.fire:
                        continue
                    trigger = decision.reason
                rate_limit = integrations.rate_limit_for(uploader)
                try:
                    with display.session(rate=rate_limit) if display else contextlib.nullcontext():
                        result = run_session(
                            config,
                            uploader,
                            ledger,
                            trigger=trigger,
                            stop_event=stop_event,
                            listeners=listeners,
                            rate_limit=rate_limit,
                        )
                except SessionError as error:
                    if isinstance(error, UploaderBusy):
                        raise
                    events.announce(
                        integrations.listeners,
                        Event(events.SESSION_FAILED, uploader.name, time.time(), {"message": str(error)}),
                    )
                    raise
                exit_codes.append(_print_result(result, "Uploaded"))
                for mover in movers_after(config, uploader.name):
                    if not stop_event.is_set():
                        job_result = run_job(
                            config, mover, ledger, trigger="after", stop_event=stop_event, listeners=listeners
                        )
                        exit_codes.append(_print_result(job_result))
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    return exit_codes


def _sync(config: Config, arguments: argparse.Namespace) -> int:
    unknown = [name for name in arguments.names if name not in config.syncers]
    if unknown:
        raise UsageError(
            f"no syncer named {', '.join(unknown)} (configured: {', '.join(config.syncers) or 'none'})"
        )
    names = arguments.names or list(config.syncers)
    if not names:
        raise UsageError("sync: no syncers are configured (the syncers key)")
    integrations = integrations_for(config).start()
    try:
        with Ledger.in_state_dir(config.state_dir) as ledger:
            return _worst(
                [
                    _print_result(run_job(config, name, ledger, listeners=integrations.listeners))
                    for name in names
                ]
            )
    finally:
        integrations.close()


def _print_result(result: SessionResult, verb: str = "Transferred") -> int:
    """Print one session's outcome line; return its exit code."""
    print(
        f"{result.uploader}: exit {result.exit_code}: {result.message}. {verb}"
        f" {result.uploaded_files} file(s), {format_size(result.uploaded_bytes)} in"
        f" {result.stages} stage(s); {result.left_files} file(s) left."
    )
    _print_files_left(result.files_left)
    for account in result.broken_accounts:
        print(f"  account {account} is broken: its credentials were refused (see `cloudplow quota`)")
    return result.exit_code


def _worst(exit_codes: Sequence[int]) -> int:
    for worst in (EXIT_FAILURES, EXIT_OUT_OF_QUOTA):
        if worst in exit_codes:
            return worst
    return EXIT_OK


def _clean(config: Config, arguments: argparse.Namespace) -> int:
    if not config.hidden:
        raise UsageError("clean: no hidden folders are configured (the hidden key)")
    try:
        result = clean_hidden(config)
    except execute.RcloneError as error:
        raise SessionError(str(error)) from error
    print(
        f"hidden: {result.markers} marker(s): {len(result.deleted)} deleted on the remotes,"
        f" {result.already_gone} already gone, {len(result.failed)} kept for the next run"
    )
    for failure in result.failed[:20]:
        print(f"  kept {failure}")
    return result.exit_code


FILES_LEFT_SHOWN = 10  # names printed per reason; the count says how many more


def _print_files_left(files_left: dict[str, list[str]]) -> None:
    """Print every reason files were left with, naming the first few files of each."""
    for reason, paths in files_left.items():
        print(f"  left ({reason.replace('_', ' ')}): {len(paths)} file(s)")
        for path in paths[:FILES_LEFT_SHOWN]:
            print(f"    {display_path(path)}")
        if len(paths) > FILES_LEFT_SHOWN:
            print(f"    ... and {len(paths) - FILES_LEFT_SHOWN} more")


def _progress_display(*, quiet: bool) -> ProgressDisplay | None:
    """
    The live display on a terminal, which replaces the periodic progress lines; none without a
    terminal (the lines stay) or with --quiet (neither).
    """
    terminal = sys.stderr.isatty()  # not rich's guess: FORCE_COLOR must not draw into a pipe
    if quiet or terminal:
        logging.getLogger(PROGRESS_LOGGER).setLevel(logging.WARNING)
    return ProgressDisplay(Console(stderr=True)) if terminal and not quiet else None


def _print_plan(config: Config, uploader: Uploader, ledger: Ledger, *, as_json: bool) -> dict:
    now = time.time()
    scanned, plan = plan_for(config, uploader, ledger, now)
    reports = reports_now(ledger, uploader, now)
    document = {
        "uploader": uploader.name,
        "queue": {
            "files": len(scanned.files),
            "bytes": scanned.distribution.total_bytes,
            "distribution": scanned.distribution.to_dict(),
        },
        "stages": summarize_plan(plan),
        "planned": {"files": plan.planned_files, "bytes": plan.planned_bytes},
        "deferred": [{"path": queued.path, "bytes": queued.size} for queued in plan.deferred],
        "waiting": {"files": len(plan.waiting), "bytes": sum(q.size for q in plan.waiting)},
        "accounts": [report.to_dict() for report in reports],
    }
    if as_json:
        return document
    print(
        f"{uploader.name}: {len(scanned.files)} file(s), "
        f"{format_size(scanned.distribution.total_bytes)} queued; plan of {len(plan.stages)} stage(s),"
        f" {plan.planned_files} file(s), {format_size(plan.planned_bytes)}"
    )
    rows = [("stage", "account", "files", "bytes", "transfers", "note")]
    for number, stage in enumerate(plan.stages, start=1):
        rows.append(
            (
                str(number),
                stage.account,
                str(len(stage.files)),
                format_size(stage.planned_bytes),
                str(stage.transfers),
                "overshoot: one file crosses the limit" if stage.overshoot else "",
            )
        )
    _print_table(rows)
    if plan.deferred:
        print(f"deferred: {len(plan.deferred)} file(s) larger than any account can take now:")
        for queued in plan.deferred[:10]:
            print(f"  {queued.path} ({format_size(queued.size)})")
    if plan.waiting:
        print(
            f"waiting: {len(plan.waiting)} file(s), {format_size(sum(q.size for q in plan.waiting))}"
            " for which no account has room in this window"
        )
    return document


def _plan(config: Config, arguments: argparse.Namespace) -> int:
    uploaders = _selected(config, [arguments.name] if arguments.name else [])
    with Ledger.in_state_dir(config.state_dir) as ledger:
        documents = [_print_plan(config, uploader, ledger, as_json=arguments.json) for uploader in uploaders]
    if arguments.json:
        print(json.dumps(documents if len(documents) != 1 else documents[0], indent=2))
    return EXIT_OK


def _format_time(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "-"
    local = datetime.fromtimestamp(timestamp).astimezone()
    return f"{local:%Y-%m-%d %H:%M} (in {format_duration(timestamp - now)})"


def _account_rows(accounts: Sequence[dict], now: float) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("account", "used", "remaining", "quota", "frees at", "blocked until")]
    for account in accounts:
        blocked = "-"
        if account["blocked_until"] is not None:
            blocked = f"{_format_time(account['blocked_until'], now)} ({account['block_reason']})"
        if account.get("broken"):
            blocked = f"BROKEN: credentials refused: {account.get('broken_message') or ''}".rstrip()
        rows.append(
            (
                account["name"],
                format_size(account["used_bytes"]),
                format_size(account["remaining_bytes"]),
                format_size(account["quota_bytes"]),
                _format_time(account["frees_at"], now),
                blocked,
            )
        )
    return rows


def _quota(config: Config, arguments: argparse.Namespace) -> int:
    uploaders = _selected(config, [arguments.name] if arguments.name else [])
    now = time.time()
    document = {}
    with Ledger.in_state_dir(config.state_dir) as ledger:
        broken = ledger.broken_accounts()
        for uploader in uploaders:
            bind_identities(ledger, uploader)
            reports = reports_now(ledger, uploader, now)
            document[uploader.name] = [
                {
                    **report.to_dict(),
                    "broken": report.name in broken,
                    "broken_since": broken[report.name][0] if report.name in broken else None,
                    "broken_message": broken[report.name][1] if report.name in broken else None,
                }
                for report in reports
            ]
            if not arguments.json:
                print(
                    f"{uploader.name}: {format_size(uploader.quota.per_account_bytes)} per account"
                    f" per {format_duration(uploader.quota.window_seconds)}"
                )
                _print_table(_account_rows(document[uploader.name], now))
    if arguments.json:
        print(json.dumps(document, indent=2))
    return EXIT_OK


def _daemon_status(config: Config) -> dict | None:
    """Return the running daemon's /status, or None when no daemon answers."""
    host = "127.0.0.1" if config.server_host in ("0.0.0.0", "") else config.server_host  # noqa: S104
    host = "::1" if host == "::" else host
    shown_host = f"[{host}]" if ":" in host else host
    headers = {"Authorization": f"Bearer {config.server_token}"} if config.server_token else {}
    try:
        response = requests.get(
            f"http://{shown_host}:{config.server_port}/status", headers=headers, timeout=3
        )
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError):
        return None
    # Another daemon may answer on that port (a demo, another config): only ours counts.
    ours = isinstance(document, dict) and document.get("state_dir") == str(config.state_dir)
    return document if ours and document.get("source") == "daemon" else None


def _status(config: Config, arguments: argparse.Namespace) -> int:
    now = time.time()
    document = _daemon_status(config)
    if document is None:
        with Ledger.in_state_dir(config.state_dir) as ledger:
            document = status_document(config, ledger, LiveState(), now=now, source="state_dir")
    if arguments.json:
        print(json.dumps(document, indent=2))
        return EXIT_OK
    origin = "running daemon" if document["source"] == "daemon" else "state directory; no daemon answered"
    print(f"cloudplow {document['version']} (from the {origin})")
    throttle = document.get("throttle")
    if throttle:
        rate = throttle["rate_bytes"]
        servers = ", ".join(
            f"{server['name']} {server['streams']} ({server['state']})" for server in throttle["servers"]
        )
        shown = f"{format_size(rate)}/s" if rate else "unlimited"
        print(f"throttle: {throttle['streams']} active stream(s), uploads {shown}; {servers}")
    for name, uploader in document["uploaders"].items():
        queue = uploader["queue"]
        queued = (
            ""
            if queue["files"] is None
            else f"; {queue['files']} file(s), {format_size(queue['bytes'])} queued"
        )
        print(
            f"{name}: {uploader['state']}: {uploader['source']} -> {uploader['destination']}"
            f" ({uploader['mode']}){queued}"
        )
        session = uploader["session"]
        if session and "stage" in session:
            print(
                f"  session {session['id']}: stage {session['stage']}, account {session['account']}"
                f" ({session['account_index']} of {session['accounts']}),"
                f" {format_size(session['stage_bytes'])} of {format_size(session['planned_bytes'])},"
                f" {format_size(session['speed'])}/s"
            )
            for transfer in session["active_transfers"]:
                sent, size = format_size(transfer["bytes"]), format_size(transfer["size"])
                print(f"    {transfer['name']}: {sent} of {size}")
        if uploader["next_check"]:
            next_check = _format_time(uploader["next_check"], now)
            print(f"  next check {next_check}; last decision: {uploader['last_decision']}")
        rows = [("session", "started", "state", "exit", "stages", "uploaded", "message")]
        for session in uploader["recent_sessions"]:
            exit_code = session["exit_code"]
            rows.append(
                (
                    str(session["id"]),
                    _format_time(session["started_at"], now).split(" (")[0],
                    session["state"],
                    "-" if exit_code is None else str(exit_code),
                    str(session["stages"]),
                    f"{session['uploaded_files']} / {format_size(session['uploaded_bytes'])}",
                    session["message"] or "",
                )
            )
        if len(rows) == 1:
            print("  no sessions yet")
        else:
            _print_table(rows)
        _print_table(_account_rows(uploader["accounts"], now))
    return EXIT_OK


def _migrate_config(arguments: argparse.Namespace) -> int:
    """Run migrate-config: it reads no cloudplow configuration, it writes one."""
    output = Path(arguments.output).expanduser() if arguments.output else None
    return migrate(
        Path(arguments.old_config).expanduser(),
        output or default_config_path(arguments.config, os.environ),
        quota_cache=Path(arguments.quota_cache).expanduser() if arguments.quota_cache else None,
        force=arguments.force,
    )


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


_COMMANDS = {
    "clean": _clean,
    "sync": _sync,
    "run": _run,
    "check-config": _check_config,
    "upload": _upload,
    "plan": _plan,
    "quota": _quota,
    "status": _status,
}
