"""Prometheus metrics: one collector that reads the ledger and the live state at each scrape.

Nothing is pushed into metric objects as things happen; `collect()` takes a
snapshot (account usage from the ledger's rolling window, persistent totals
from its counters table, the running stage from LiveState) and yields
families. A sample of its output:

    cloudplow_account_used_bytes{account="alice",uploader="media"} 7.4997e+11
    cloudplow_account_remaining_bytes{account="alice",uploader="media"} 3.0e+07
    cloudplow_account_blocked{account="bob",uploader="media"} 1.0
    cloudplow_uploaded_bytes_total{account="alice",uploader="media"} 2.2499e+12
    cloudplow_queue_bytes{uploader="media"} 1.3e+12
    cloudplow_session_active{uploader="media"} 1.0
    cloudplow_session_stage{uploader="media"} 3.0
    cloudplow_transfer_speed_bytes{uploader="media"} 1.1e+08
    cloudplow_downloader_paused{downloader="sabnzbd@127.0.0.1:8080"} 1.0

Labels are bounded: uploader, account, fixed enums, and transfer slots
numbered 0..transfers-1 (never file names).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cloudplow import __version__, events
from cloudplow.config import Config, Uploader
from cloudplow.ledger import Ledger
from cloudplow.live import LiveState, UploaderLive
from cloudplow.quota import account_report
from cloudplow.rclone.exitcodes import EXIT_CODES
from cloudplow.scan import HISTOGRAM_BUCKETS
from cloudplow.triggers import REASONS

KNOWN_EXIT_CODES = frozenset({*(str(code) for code in EXIT_CODES), "143"})
UPLOADER_STATES = ("idle", "checking", "uploading")
# Not a `quantile` label: Prometheus reserves it for summaries (promtool rejects it on a gauge).
PERCENTILES = (("50", "p50"), ("90", "p90"), ("95", "p95"), ("99", "p99"), ("100", "max"))
ROTATION_REASONS = ("filled", "limit", "stalled", "errors", "broken", "other")
STAGE_OUTCOMES = ("completed", "failed", "limit", "fatal", "stalled", "interrupted", "broken")


class CloudplowCollector(Collector):
    """Yields every cloudplow_* family from the ledger and the live state, fresh at each scrape."""

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        live: LiveState,
        *,
        rclone_version: str = "unknown",
        scheduler_running: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.ledger = ledger
        self.live = live
        self.rclone_version = rclone_version
        self.scheduler_running = scheduler_running
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        return []  # families depend on the configuration; registering needs no pre-description

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        live = self.live.snapshot()
        counters = self.ledger.counters()
        uploaders = self.config.pools()

        info = InfoMetricFamily("cloudplow_build", "cloudplow and rclone versions")
        info.add_metric([], {"version": __version__, "rclone_version": self.rclone_version})
        yield info
        yield GaugeMetricFamily(
            "cloudplow_scheduler_running",
            "1 while the daemon's scheduler runs",
            value=1 if self.scheduler_running() else 0,
        )

        yield from self._accounts(uploaders, live, now)
        yield from self._counters(uploaders, counters)
        yield from self._queue(uploaders, live)
        yield from self._sessions(uploaders, live)
        yield from self._accounting(uploaders)
        yield self._downloaders()

    def _accounting(self, uploaders: list) -> Iterator[Metric]:
        """Broken accounts and the files the last session left, by reason (every series exists)."""
        broken_accounts = self.ledger.broken_accounts()
        broken = GaugeMetricFamily(
            "cloudplow_account_broken",
            "1 while the account's credentials are refused (401, a 403 that is not the limit,"
            " invalid_grant, an unreadable key); retried at the next session",
            labels=["uploader", "account"],
        )
        files_left = GaugeMetricFamily(
            "cloudplow_files_left",
            "Files the uploader's last finished session did not upload, by reason",
            labels=["uploader", "reason"],
        )
        for uploader in uploaders:
            for account in uploader.accounts:
                broken.add_metric([uploader.name, account.name], 1 if account.name in broken_accounts else 0)
            counts = self.ledger.last_files_left(uploader.name)
            for reason in events.FILES_LEFT_REASONS:
                files_left.add_metric([uploader.name, reason], counts.get(reason, 0))
        yield broken
        yield files_left

    def _downloaders(self) -> Metric:
        paused = GaugeMetricFamily(
            "cloudplow_downloader_paused",
            "1 while cloudplow holds the download client paused for an upload",
            labels=["downloader"],
        )
        held = self.live.downloaders()
        for downloader in self.config.downloaders:
            paused.add_metric([downloader.name], 1 if held.get(downloader.name) else 0)
        return paused

    def _accounts(self, uploaders: list, live: dict, now: float) -> Iterator[Metric]:
        labels = ["uploader", "account"]
        families = {
            "used": GaugeMetricFamily(
                "cloudplow_account_used_bytes",
                "Bytes the account uploaded in the rolling window",
                labels=labels,
            ),
            "remaining": GaugeMetricFamily(
                "cloudplow_account_remaining_bytes",
                "Bytes the account may still upload in the window",
                labels=labels,
            ),
            "quota": GaugeMetricFamily(
                "cloudplow_account_quota_bytes",
                "Effective per-window quota (lowered by an observed limit)",
                labels=labels,
            ),
            "blocked": GaugeMetricFamily(
                "cloudplow_account_blocked",
                "1 while the account is blocked after a limit error",
                labels=labels,
            ),
            "blocked_until": GaugeMetricFamily(
                "cloudplow_account_blocked_until_timestamp_seconds",
                "When the account's block ends (0: not blocked)",
                labels=labels,
            ),
            "frees_at": GaugeMetricFamily(
                "cloudplow_account_frees_at_timestamp_seconds",
                "When the oldest upload in the window ages out and frees bytes (0: nothing to free);"
                " subtract time() for the seconds left",
                labels=labels,
            ),
        }
        # Per uploader, not per account: every account of an uploader has the same configured
        # quota, and a series per account would only repeat it (500 accounts, 500 series).
        configured = GaugeMetricFamily(
            "cloudplow_account_configured_quota_bytes",
            "Configured per-window quota of each of the uploader's accounts",
            labels=["uploader"],
        )
        pool = GaugeMetricFamily("cloudplow_accounts", "Accounts in the uploader's pool", labels=["uploader"])
        available = GaugeMetricFamily(
            "cloudplow_accounts_available",
            "Accounts that can take a queued file now: not blocked, and room above the reserve for"
            " the smallest queued file (with overshoot: below the limit)",
            labels=["uploader"],
        )
        for uploader in uploaders:
            names = [account.name for account in uploader.accounts]
            usages = self.ledger.usage(names, now=now, window_seconds=uploader.quota.window_seconds)
            available_count = 0
            for usage in usages:
                report = account_report(
                    usage,
                    configured_quota_bytes=uploader.quota.per_account_bytes,
                    window_seconds=uploader.quota.window_seconds,
                )
                values = [uploader.name, report.name]
                families["used"].add_metric(values, report.used_bytes)
                families["remaining"].add_metric(values, report.remaining_bytes)
                families["quota"].add_metric(values, report.quota_bytes)
                families["blocked"].add_metric(values, 1 if report.blocked_until else 0)
                families["blocked_until"].add_metric(values, report.blocked_until or 0)
                families["frees_at"].add_metric(values, report.frees_at or 0)
                if not report.blocked_until and _can_take(
                    report.remaining_bytes, uploader, live.get(uploader.name)
                ):
                    available_count += 1
            configured.add_metric([uploader.name], uploader.quota.per_account_bytes)
            pool.add_metric([uploader.name], len(names))
            available.add_metric([uploader.name], available_count)
        yield from families.values()
        yield configured
        yield pool
        yield available

    def _counters(self, uploaders: list, counters: list) -> Iterator[Metric]:
        by_key: dict[tuple[str, str, str, str], float] = {
            (uploader, name, account, label): value for uploader, name, account, label, value in counters
        }
        per_account = {
            "uploaded_bytes": CounterMetricFamily(
                "cloudplow_uploaded_bytes", "Bytes uploaded", labels=["uploader", "account"]
            ),
            "uploaded_files": CounterMetricFamily(
                "cloudplow_uploaded_files", "Files uploaded", labels=["uploader", "account"]
            ),
            "limit_hits": CounterMetricFamily(
                "cloudplow_limit_hits", "Provider limit errors", labels=["uploader", "account"]
            ),
            "wasted_bytes": CounterMetricFamily(
                "cloudplow_wasted_bytes",
                "Bytes sent for uploads that then failed",
                labels=["uploader", "account"],
            ),
        }
        rotations = CounterMetricFamily(
            "cloudplow_rotations", "Moves to the next account, by reason", labels=["uploader", "reason"]
        )
        stages = CounterMetricFamily(
            "cloudplow_stages", "Stages run, by outcome", labels=["uploader", "outcome"]
        )
        exits = CounterMetricFamily(
            "cloudplow_rclone_exits", "rclone exits, by exit code", labels=["uploader", "code"]
        )
        checks = CounterMetricFamily(
            "cloudplow_checks", "Scheduled checks, by decision", labels=["uploader", "reason"]
        )
        for uploader in uploaders:
            # Children exist at 0 before anything happened, so rate() and alerts see them.
            for account in uploader.accounts:
                for name, family in per_account.items():
                    family.add_metric(
                        [uploader.name, account.name], by_key.get((uploader.name, name, account.name, ""), 0)
                    )
            for reason in ROTATION_REASONS:
                rotations.add_metric(
                    [uploader.name, reason], by_key.get((uploader.name, "rotations", "", reason), 0)
                )
            for reason in REASONS:
                checks.add_metric(
                    [uploader.name, reason], by_key.get((uploader.name, "checks", "", reason), 0)
                )
            for outcome in STAGE_OUTCOMES:
                stages.add_metric(
                    [uploader.name, outcome], by_key.get((uploader.name, "stages", "", outcome), 0)
                )
            # Every code rclone documents, and SIGTERM's 143 (cloudplow stopping it), exist at 0
            # from the start: increase() and alerts miss the first exit of a series born at 1.
            codes = KNOWN_EXIT_CODES | {
                label
                for (name_uploader, name, _, label) in by_key
                if name_uploader == uploader.name and name == "rclone_exits"
            }
            for code in sorted(codes, key=int):
                exits.add_metric(
                    [uploader.name, code], by_key.get((uploader.name, "rclone_exits", "", code), 0)
                )
        yield from per_account.values()
        yield rotations
        yield stages
        yield exits
        yield checks

    def _queue(self, uploaders: list, live: dict) -> Iterator[Metric]:
        queue_bytes = GaugeMetricFamily(
            "cloudplow_queue_bytes", "Bytes queued for upload", labels=["uploader"]
        )
        queue_files = GaugeMetricFamily(
            "cloudplow_queue_files", "Files queued for upload", labels=["uploader"]
        )
        oldest = GaugeMetricFamily(
            "cloudplow_queue_oldest_file_timestamp_seconds",
            "Modification time of the oldest queued file (0: none)",
            labels=["uploader"],
        )
        histogram = HistogramMetricFamily(
            "cloudplow_queue_file_size_bytes",
            "Sizes of the queued files at the latest scan",
            labels=["uploader"],
        )
        percentiles = GaugeMetricFamily(
            "cloudplow_queue_file_size_percentile_bytes",
            "Exact nearest-rank percentiles of the queued file sizes at the latest scan (100: the largest)",
            labels=["uploader", "percentile"],
        )
        for uploader in uploaders:
            state = live.get(uploader.name) or UploaderLive()
            queue_bytes.add_metric([uploader.name], state.queue_bytes)
            queue_files.add_metric([uploader.name], state.queue_files)
            oldest.add_metric([uploader.name], state.queue_oldest_mtime or 0)
            distribution = state.queue_distribution or {}
            counts = {str(bucket["le"]): bucket["count"] for bucket in distribution.get("buckets", ())}
            buckets = [(_le(bound), counts.get(_le_key(bound), 0)) for bound in HISTOGRAM_BUCKETS]
            histogram.add_metric([uploader.name], buckets, distribution.get("total_bytes", 0))
            for percentile, key in PERCENTILES:
                percentiles.add_metric([uploader.name, percentile], distribution.get(key, 0))
        yield from (queue_bytes, queue_files, oldest, histogram, percentiles)

    def _sessions(self, uploaders: list, live: dict) -> Iterator[Metric]:
        label = ["uploader"]

        def gauge(name: str, documentation: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, documentation, labels=label)

        active = gauge("cloudplow_session_active", "1 while a session runs")
        state_family = GaugeMetricFamily(
            "cloudplow_uploader_state", "The uploader's state (one is 1)", labels=["uploader", "state"]
        )
        stage = gauge("cloudplow_session_stage", "Number of the running stage in the session (0: none)")
        account_index = gauge(
            "cloudplow_session_account_index", "1-based position of the stage's account in the pool (0: none)"
        )
        account_info = GaugeMetricFamily(
            "cloudplow_session_account", "The stage's account (1)", labels=["uploader", "account"]
        )
        session_bytes = gauge("cloudplow_session_uploaded_bytes", "Bytes uploaded in the running session")
        session_files = gauge("cloudplow_session_uploaded_files", "Files uploaded in the running session")
        session_started = gauge(
            "cloudplow_session_start_timestamp_seconds", "When the running session started (0: none)"
        )
        planned_bytes = gauge("cloudplow_stage_planned_bytes", "Bytes planned for the running stage")
        planned_files = gauge("cloudplow_stage_planned_files", "Files planned for the running stage")
        transfers = gauge("cloudplow_stage_transfers", "Parallel transfers of the running stage")
        overshoot = gauge("cloudplow_stage_overshoot", "1 when the running stage is an overshoot stage")
        stage_bytes = gauge("cloudplow_stage_transferred_bytes", "Bytes rclone moved in the running stage")
        speed = gauge("cloudplow_transfer_speed_bytes", "Upload speed of the running stage, bytes per second")
        eta = gauge("cloudplow_stage_eta_seconds", "rclone's estimate of the time left in the stage")
        active_transfers = gauge("cloudplow_active_transfers", "Files being uploaded now")
        slot_labels = ["uploader", "slot"]
        slot_bytes = GaugeMetricFamily(
            "cloudplow_transfer_bytes", "Bytes sent of the file in a transfer slot", labels=slot_labels
        )
        slot_size = GaugeMetricFamily(
            "cloudplow_transfer_size_bytes", "Size of the file in a transfer slot", labels=slot_labels
        )
        last_check = gauge("cloudplow_last_check_timestamp_seconds", "When the last check ran (0: never)")
        next_check = gauge("cloudplow_next_check_timestamp_seconds", "When the next check runs (0: none)")
        last_upload = gauge(
            "cloudplow_last_upload_timestamp_seconds", "When the uploader last uploaded a file (0: never)"
        )
        trigger = GaugeMetricFamily(
            "cloudplow_last_check_decision",
            "Why the last check did or did not start a session (the reason is 1)",
            labels=["uploader", "reason"],
        )
        for uploader in uploaders:
            state = live.get(uploader.name) or UploaderLive()  # an idle one: every value 0
            name = uploader.name
            running = state.session_id is not None
            stats = state.stats
            active.add_metric([name], 1 if running else 0)
            for candidate in UPLOADER_STATES:
                state_family.add_metric([name, candidate], 1 if state.state == candidate else 0)
            stage.add_metric([name], state.stage_number)
            account_index.add_metric([name], state.stage_account_index)
            if state.stage_account:
                account_info.add_metric([name, state.stage_account], 1)
            session_bytes.add_metric([name], state.session_uploaded_bytes)
            session_files.add_metric([name], state.session_uploaded_files)
            session_started.add_metric([name], state.session_started_at or 0)
            planned_bytes.add_metric([name], state.stage_planned_bytes)
            planned_files.add_metric([name], state.stage_planned_files)
            transfers.add_metric([name], state.stage_transfers)
            overshoot.add_metric([name], 1 if state.stage_overshoot else 0)
            stage_bytes.add_metric([name], stats.get("bytes", 0))
            speed.add_metric([name], stats.get("speed", 0))
            eta.add_metric([name], stats.get("eta") or 0)
            in_flight = list(stats.get("transferring") or ())
            active_transfers.add_metric([name], len(in_flight))
            slots = max(state.stage_transfers, len(in_flight))
            for slot in range(slots):
                transfer = in_flight[slot] if slot < len(in_flight) else {}
                slot_bytes.add_metric([name, str(slot)], transfer.get("bytes", 0))
                slot_size.add_metric([name, str(slot)], transfer.get("size", 0))
            last_check.add_metric([name], state.last_check_at or 0)
            next_check.add_metric([name], state.next_check_at or 0)
            last_upload.add_metric([name], self.ledger.last_upload_at(name) or 0)
            for reason in REASONS:
                fired = state.last_trigger == reason
                trigger.add_metric([name, reason], 1 if fired else 0)
        yield from (
            active,
            state_family,
            stage,
            account_index,
            account_info,
            session_bytes,
            session_files,
            session_started,
            planned_bytes,
            planned_files,
            transfers,
            overshoot,
            stage_bytes,
            speed,
            eta,
            active_transfers,
            slot_bytes,
            slot_size,
            last_check,
            next_check,
            last_upload,
            trigger,
        )


def _can_take(remaining_bytes: int, uploader: Uploader, state: UploaderLive | None) -> bool:
    """Whether an unblocked account with this much left can take a file of the latest queue."""
    if uploader.quota.overshoot:
        return remaining_bytes > 0  # the provider lets the first upload that crosses complete
    smallest_bytes = state.queue_smallest_bytes if state and state.queue_files else 1
    return remaining_bytes - uploader.quota.reserve_bytes >= max(1, smallest_bytes)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else str(float(bound))


def _le_key(bound: float) -> str:
    return "+Inf" if bound == float("inf") else str(int(bound))


class ThrottleCollector(Collector):
    """
    The media-server throttle, from its snapshot at each scrape (see cloudplow/integrations/):

        cloudplow_media_streams{server="plex@127.0.0.1:32400"} 2.0
        cloudplow_media_server_up{server="plex@127.0.0.1:32400"} 1.0
        cloudplow_throttle_rate_bytes{uploader="media"} 2e+07

    A server label is the server's kind and host:port, never a credential. The rate is per
    uploader: 0 means unlimited, and an uploader the throttle does not apply to is always 0.
    """

    def __init__(self, snapshot: Callable[[], dict]):
        self.snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot()
        streams = GaugeMetricFamily(
            "cloudplow_media_streams",
            "Active streams the media server counts for the throttle (0 once it failed 3 polls)",
            labels=["server"],
        )
        up = GaugeMetricFamily(
            "cloudplow_media_server_up", "1 when the media server answered its last poll", labels=["server"]
        )
        for server in snapshot.get("servers", ()):
            streams.add_metric([server["name"]], server["streams"])
            up.add_metric([server["name"]], 1 if server["state"] == "ok" else 0)
        rate = GaugeMetricFamily(
            "cloudplow_throttle_rate_bytes",
            "Upload rate the media-server throttle allows the uploader now, bytes per second (0: unlimited)",
            labels=["uploader"],
        )
        for uploader, rate_bytes in snapshot.get("uploaders", {}).items():
            rate.add_metric([uploader], rate_bytes)
        yield from (streams, up, rate)


class NotificationsCollector(Collector):
    """
    Deliveries of notifications, from the notifier's counts at each scrape:

        cloudplow_notifications_sent_total 4.0
        cloudplow_notifications_failed_total 1.0
    """

    def __init__(self, counts: Callable[[], tuple[int, int]]):
        self.counts = counts

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        sent, failed = self.counts()
        yield CounterMetricFamily(
            "cloudplow_notifications_sent", "Notifications delivered (one per URL)", value=sent
        )
        yield CounterMetricFamily(
            "cloudplow_notifications_failed",
            "Notifications that could not be delivered (one per URL)",
            value=failed,
        )
