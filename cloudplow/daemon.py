"""`cloudplow run`: the scheduler, the checks, the HTTP server and a clean stop.

    APScheduler (one job per uploader, every check.interval, UTC)
      └─ check: scan, evaluate the triggers (triggers.py), maybe run a session
    HTTP: /metrics (metrics.py), /status (status.py), /healthz

SIGTERM or SIGINT sets one stop event: a running stage stops its rclone, the
session records what finished and ends as interrupted, the scheduler waits
for it, and the process exits 0.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry, ProcessCollector

from cloudplow import __version__, events
from cloudplow.clean import CleanResult, clean_folder
from cloudplow.config import Config, Uploader
from cloudplow.events import Event, Listener
from cloudplow.http import HttpServer, create_app, exposure_warning, http_url
from cloudplow.integrations import Integrations, integrations_for
from cloudplow.jobs import movers_after, run_job
from cloudplow.ledger import Ledger
from cloudplow.live import LiveState
from cloudplow.metrics import CloudplowCollector
from cloudplow.plan import plan_uploads
from cloudplow.rclone import command, execute
from cloudplow.scan import ScanResult
from cloudplow.session import (
    SessionError,
    UploaderBusy,
    bind_identities,
    plan_settings,
    reports_now,
    run_session,
    scan_uploader,
)
from cloudplow.status import status_document
from cloudplow.triggers import Decision, TriggerInputs, evaluate
from cloudplow.units import format_duration
from cloudplow.watch import SourceWatcher

logger = logging.getLogger(__name__)


def check_triggers(uploader: Uploader, ledger: Ledger, now: float) -> tuple[ScanResult, Decision]:
    """
    Given an uploader, scan its source and measure what its triggers need;
    return the scan and the decision. Raise SessionError if the source cannot
    be scanned.
    """
    scanned = scan_uploader(uploader, ledger, now)
    states = [report.to_state() for report in reports_now(ledger, uploader, now)]
    try:
        free_bytes = shutil.disk_usage(uploader.source).free
    except OSError as error:
        raise SessionError(f"uploaders.{uploader.name}.source: {error.strerror or error}") from error
    decision = evaluate(
        uploader.check,
        uploader.schedule,
        TriggerInputs(
            now=now,
            local_time=datetime.fromtimestamp(now).astimezone().time(),
            queue_files=len(scanned.files),
            queue_bytes=scanned.distribution.total_bytes,
            oldest_mtime=scanned.oldest_mtime,
            free_bytes=free_bytes,
            plannable=bool(plan_uploads(scanned.files, states, plan_settings(uploader)).stages),
        ),
    )
    return scanned, decision


class _SkippedRunFilter(logging.Filter):
    """Drops APScheduler's warning for a check skipped because a session still runs: expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


class Daemon:
    """The scheduler, its checks and the HTTP server, sharing one ledger and one live state."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        listeners: Sequence[Listener] = (),
        integrations: Integrations | None = None,
    ):
        self.config = config
        self.clock = clock
        try:
            self.binary = execute.find_rclone(config.rclone_binary)
            self.rclone_version = command.version(self.binary)
        except execute.RcloneError as error:
            raise SessionError(str(error)) from error
        self.ledger = Ledger.in_state_dir(config.state_dir)
        for uploader in config.pools():
            bind_identities(self.ledger, uploader)  # renamed key files show their usage from the start
        self.live = LiveState([pool.name for pool in config.pools()])
        # Throttle, notifications, downloader pausing: what the configuration asks for.
        self.integrations = integrations or integrations_for(config, clock=clock, live=self.live)
        self.listeners = (*listeners, *self.integrations.listeners)
        self.stop_event = threading.Event()
        logging.getLogger("apscheduler.scheduler").addFilter(_SkippedRunFilter())
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={
                "default": ThreadPoolExecutor(
                    len(config.uploaders) + len(config.syncers) + len(config.hidden)
                )
            },
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )
        self.registry = CollectorRegistry(auto_describe=False)
        # process_start_time_seconds, memory and CPU: restarts and leaks show on the dashboards.
        ProcessCollector(registry=self.registry)
        self.registry.register(
            CloudplowCollector(
                config,
                self.ledger,
                self.live,
                rclone_version=self.rclone_version,
                scheduler_running=self.healthy,
                clock=clock,
            )
        )
        for collector in self.integrations.collectors:
            self.registry.register(collector)
        self.http: HttpServer | None = None
        self.watchers: list[SourceWatcher] = []
        self._checking: set[str] = set()  # uploaders whose check runs now
        self._checking_lock = threading.Lock()
        self._clean_lock = threading.Lock()

    def start(self) -> None:
        """Listen, then schedule the checks (the first one at once). Raise OSError if the port is taken."""
        self.integrations.start()
        app = create_app(self.registry, self.status, self.healthy, token=self.config.server_token)
        self.http = HttpServer(app, self.config.server_host, self.config.server_port).start()
        warning = exposure_warning(self.http.host, self.config.server_token)
        if warning:
            logger.warning("%s", warning)
        for uploader in self.config.uploaders.values():
            self.scheduler.add_job(
                self.check,
                IntervalTrigger(seconds=uploader.check.interval_seconds, timezone=UTC),
                args=[uploader.name],
                id=uploader.name,
                name=f"check {uploader.name}",
                next_run_time=datetime.now(UTC),
            )
        for syncer in self.config.syncers.values():
            self.scheduler.add_job(
                self.sync,
                IntervalTrigger(seconds=syncer.interval_seconds, timezone=UTC),
                args=[syncer.name],
                id=f"sync-{syncer.name}",
                name=f"sync {syncer.name}",
                next_run_time=datetime.now(UTC),
            )
        for index, hidden in enumerate(self.config.hidden):
            self.scheduler.add_job(
                self.clean,
                IntervalTrigger(seconds=hidden.interval_seconds, timezone=UTC),
                args=[index],
                id=f"clean-{index}",
                name=f"clean {hidden.folder}",
                next_run_time=datetime.now(UTC),
            )
        self.scheduler.start()
        for uploader in self.config.uploaders.values():
            if uploader.check.watch:
                self._watch(uploader)
        logger.info(
            "cloudplow %s (rclone %s): checking %s; metrics, status and health on %s%s",
            __version__,
            self.rclone_version,
            ", ".join(
                f"{name} every {format_duration(uploader.check.interval_seconds)}"
                for name, uploader in self.config.uploaders.items()
            ),
            self.http.url,
            " (/metrics and /status need the bearer token)" if self.config.server_token else "",
        )

    def _watch(self, uploader: Uploader) -> None:
        watcher = SourceWatcher(
            uploader.name,
            uploader.source,
            quiet_seconds=uploader.filters.min_age_seconds,
            fire=lambda: self.check_soon(uploader.name),
        )
        try:
            self.watchers.append(watcher.start())
        except OSError as error:
            # inotify limits (fs.inotify.max_user_watches) or a vanished source: the interval still works.
            logger.warning(
                "%s: cannot watch %s (%s); checking on the interval only",
                uploader.name,
                uploader.source,
                error,
            )

    def check_soon(self, name: str) -> bool:
        """Run the uploader's check now, unless one runs already; return whether it was asked for."""
        with self._checking_lock:
            if name in self._checking or self.stop_event.is_set():
                return False
        logger.info("%s: new files in the source: checking now", name)
        self.scheduler.modify_job(name, next_run_time=datetime.now(UTC))
        return True

    def sync(self, name: str) -> None:
        """Run one syncer or mover now, as a session; its failure is logged, never raised."""
        try:
            run_job(
                self.config,
                name,
                self.ledger,
                trigger="schedule" if name in self.config.syncers else "after",
                stop_event=self.stop_event,
                binary=self.binary,
                live=self.live,
                listeners=self.listeners,
            )
        except UploaderBusy as busy:
            logger.info("%s: %s", name, busy)
        except SessionError as error:
            logger.error("%s: %s", name, error)
            self._announce_failure(name, str(error))
        except Exception as error:
            logger.exception("%s: failed", name)
            self._announce_failure(name, f"failed: {type(error).__name__}")

    def clean(self, index: int | None = None) -> CleanResult:
        """Clean one hidden folder (or all of them): whiteouts become deletions on the remotes."""
        result = CleanResult()
        folders = self.config.hidden if index is None else (self.config.hidden[index],)
        with self._clean_lock:
            for hidden in folders:
                if self.stop_event.is_set():
                    break
                try:
                    if hidden.folder.is_dir():
                        clean_folder(self.binary, self.config, hidden, result)
                except Exception:
                    logger.exception("hidden: cleaning %s failed", hidden.folder)
        return result

    def healthy(self) -> bool:
        """True while the scheduler runs (it is what does the work)."""
        return bool(self.scheduler.running) and not self.stop_event.is_set()

    def status(self) -> dict:
        return status_document(
            self.config,
            self.ledger,
            self.live,
            now=self.clock(),
            source="daemon",
            rclone_version=self.rclone_version,
            integrations=self.integrations.status(self.config),
        )

    def _next_check_at(self, name: str, started_at: float) -> float:
        # Computed, not asked of the scheduler: a job that calls into the scheduler
        # while it shuts down (holding its locks, waiting for the job) deadlocks.
        # Runs due while a check is still running are skipped (max_instances 1), so
        # the next one is the first interval tick after now.
        interval = self.config.uploaders[name].check.interval_seconds
        ticks = max(1, math.ceil((self.clock() - started_at) / interval))
        return started_at + ticks * interval

    def check(self, name: str) -> None:
        """One scheduled check: scan, decide, and run a session when a trigger fires."""
        uploader = self.config.uploaders[name]
        now = self.clock()
        with self._checking_lock:
            self._checking.add(name)
        self.live.update(
            name, state="checking", last_check_at=now, next_check_at=now + uploader.check.interval_seconds
        )
        try:
            scanned, decision = check_triggers(uploader, self.ledger, now)
            self.live.update(
                name,
                queue_files=len(scanned.files),
                queue_bytes=scanned.distribution.total_bytes,
                queue_distribution=scanned.distribution.to_dict(),
                queue_oldest_mtime=scanned.oldest_mtime,
                queue_smallest_bytes=min((queued.size for queued in scanned.files), default=0),
                last_trigger=decision.reason,
                last_trigger_fired=decision.fire,
            )
            self.ledger.increment(name, "checks", label=decision.reason)
            if not decision.fire or self.stop_event.is_set():
                logger.info("%s: check: no session (%s)", name, decision.detail)
                return
            logger.info("%s: check: starting a session (%s)", name, decision.detail)
            run_session(
                self.config,
                uploader,
                self.ledger,
                trigger=decision.reason,
                stop_event=self.stop_event,
                live=self.live,
                scanned=scanned,
                binary=self.binary,
                clock=self.clock,
                listeners=self.listeners,
                rate_limit=self.integrations.rate_limit_for(uploader),
            )
            for mover in movers_after(self.config, name):
                if not self.stop_event.is_set():
                    self.sync(mover)
            if self.config.hidden and not self.stop_event.is_set():
                self.clean()
        except UploaderBusy as busy:
            logger.info("%s: check: %s", name, busy)
        except SessionError as error:
            logger.error("%s: %s", name, error)
            self._announce_failure(name, str(error))
        except Exception as error:
            # A check must never take the scheduler down with it; the next one tries again.
            logger.exception("%s: check failed", name)
            self._announce_failure(name, f"check failed: {type(error).__name__}")
        finally:
            with self._checking_lock:
                self._checking.discard(name)
            self.live.update(name, state="idle", next_check_at=self._next_check_at(name, now))

    def _announce_failure(self, name: str, message: str) -> None:
        events.announce(
            self.listeners, Event(events.SESSION_FAILED, name, self.clock(), {"message": message})
        )

    def stop(self, timeout_seconds: float = 25.0) -> None:
        """Stop a running stage's rclone, let the session record it, stop serving, close the ledger."""
        self.stop_event.set()
        for watcher in self.watchers:
            watcher.stop()
        if self.scheduler.running:
            finished = threading.Event()

            def shutdown() -> None:
                self.scheduler.shutdown(wait=True)
                finished.set()

            threading.Thread(target=shutdown, name="scheduler-shutdown", daemon=True).start()
            if not finished.wait(timeout_seconds):
                logger.warning("a session did not end within %.0f s of the stop request", timeout_seconds)
        if self.http is not None:
            self.http.stop()
        self.integrations.close()
        self.ledger.close()


def run_daemon(config: Config) -> int:
    """Run until SIGTERM or SIGINT, then stop cleanly and return 0."""
    stop_requested = threading.Event()

    def request_stop(signal_number: int, _frame: object) -> None:
        logger.info("%s received: stopping", signal.Signals(signal_number).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    daemon = Daemon(config)
    try:
        daemon.start()
    except OSError as error:
        daemon.stop()
        raise SessionError(
            f"server: cannot listen on {http_url(config.server_host, config.server_port)}:"
            f" {error.strerror or error}"
        ) from error
    while not stop_requested.wait(1.0):
        pass
    daemon.stop()
    logger.info("stopped")
    return 0
