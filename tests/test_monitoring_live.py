"""Every dashboard query, every recording rule and the pool alert, proven against a real Prometheus.

The real Prometheus (Debian's package) scrapes the real daemon every second,
with the repository's prometheus.yml and rules, while the daemon uploads a
library larger than its pool through the real rclone to the WebDAV quota
server, until the pool runs dry. One account's provider limit is lower than
configured, so a limit error, wasted bytes, a lowered quota, a block and a
limit rotation happen too: the panels about them have something to show.
rclone is slowed to 1 MiB/s, so each stage lasts a few seconds and is
scraped while it runs; the series that exist only then (the stage's account,
transfer slots) are in Prometheus as well, which is why every query is asked
over the whole run (query_range, step 1 s) and not only at its end.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from datetime import datetime

import pytest
import yaml

from tests.conftest import REPOSITORY, PrometheusProcess, free_port, make_source, metric, write_config
from tests.fake_media import FakeSession
from tests.test_dashboards import dashboard_queries, template_queries

pytestmark = pytest.mark.integration

USERS = ["alice", "bob", "carol"]
QUOTA = 4_000_000  # configured per account
# bob's provider enforces less than configured: his stage ends at the limit, he is blocked.
PROVIDER_QUOTAS = {"alice": QUOTA, "bob": 2_000_000, "carol": QUOTA}
# 13.6 MB in 26 files from 80 kB up: more than the pool takes (about 10.8 MB).
SIZES = [1_200_000] * 8 + [400_000] * 8 + [80_000] * 10
SETTINGS = {"rclone_flags": {"--bwlimit": "1M"}, "check": {"interval": "2s", "min_queue": 0}}
ALERT = "CloudplowPoolExhausted"
RULE_FILES = sorted(
    path
    for path in (REPOSITORY / "prometheus" / "rules").glob("*.yml")
    if not path.name.endswith("_test.yml")
)
LABEL_VALUES = re.compile(r"\s*label_values\((?:(?P<selector>.*),)?\s*(?P<label>\w+)\s*\)\s*", re.DOTALL)

# Dashboard queries (panel expressions or template-variable queries, by expression or by panel
# title) that may have no data after this scenario, each with the reason. Empty: the scenario
# makes every panel show something. An entry must name a query of the dashboards and that query
# must still be empty here, so none outlives its reason.
EXPECTED_EMPTY: dict[str, str] = {}


def finite_samples(series: list[dict]) -> int:
    """Given a query_range result, return how many of its samples are numbers (not NaN, not ±Inf)."""
    return sum(math.isfinite(float(value)) for one in series for _, value in one["values"])


def rfc3339(text: str) -> float:
    """Given a time as Prometheus' API writes it (RFC 3339, nanoseconds), return a Unix timestamp."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")).timestamp()


def poll(
    condition: Callable[[], object], *, timeout: float, what: str, log: Callable[[], str] = str
) -> object:
    """Call `condition` every 0.2 s until it returns something true; return that, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{log()}")


def pool_alert_rule(prometheus: PrometheusProcess) -> tuple[dict, dict]:
    """Return the rule group and the rule of the pool alert, as Prometheus evaluates them."""
    for group in prometheus.api("rules", type="alert")["groups"]:
        for rule in group["rules"]:
            if rule["name"] == ALERT:
                return group, rule
    raise AssertionError(f"Prometheus did not load the alert {ALERT} from {RULE_FILES}")


def pool_alerts(prometheus: PrometheusProcess) -> list[dict]:
    """The pool alert's active (pending or firing) instances for uploader media."""
    return [
        alert
        for alert in prometheus.api("alerts")["alerts"]
        if alert["labels"].get("alertname") == ALERT and alert["labels"].get("uploader") == "media"
    ]


def recording_rules() -> list[str]:
    return [
        rule["record"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "record" in rule
    ]


def template_values(prometheus: PrometheusProcess, query: str, start: float, end: float) -> list[str]:
    """
    Given a template variable's `label_values([selector,] label)`, return the values Grafana would
    offer over [start, end], through the label values API as Grafana's Prometheus datasource asks.
    """
    match = LABEL_VALUES.fullmatch(query)
    assert match, f"not a label_values() query: {query}"
    parameters: dict[str, object] = {"start": start, "end": end}
    if match["selector"]:
        parameters["match[]"] = match["selector"].strip()
    return prometheus.api(f"label/{match['label']}/values", **parameters)


def test_every_dashboard_query_and_rule_has_data_and_the_pool_alert_fires(
    tmp_path, quota_server, start_daemon, start_prometheus, media_server
):
    panels = dashboard_queries()
    templates = template_queries()
    assert panels and templates
    known = {title for _, title, _ in panels} | {expr for _, _, expr in panels} | {q for _, _, q in templates}
    stale = sorted(key for key in EXPECTED_EMPTY if key not in known)
    assert stale == [], f"EXPECTED_EMPTY names no dashboard query or panel any more: {stale}"

    server = quota_server(PROVIDER_QUOTAS)
    source = tmp_path / "source"
    make_source(source, SIZES, seed=31)
    port = free_port()
    config = write_config(
        tmp_path, server, users=USERS, quota_bytes=QUOTA, source=source, extra=SETTINGS, server_port=port
    )
    # A Plex with one remote stream, for the throttle panels (the uploader's own --bwlimit wins: its
    # rate stays 0, unlimited by the throttle).
    plex = media_server("plex")
    plex.set_sessions([FakeSession("203.0.113.7")])
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    document["media_servers"] = [{"kind": "plex", "url": plex.url, "token": plex.token, "poll": "1s"}]
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    # Prometheus first, scraping the daemon's port before the daemon listens: it sees every stage.
    prometheus = start_prometheus(port)
    daemon = start_daemon(config, port)
    start = prometheus.started_at

    # Early, with accounts available: an evaluation after Prometheus saw them leaves the alert quiet.
    poll(
        lambda: prometheus.query('cloudplow_accounts_available{uploader="media"} > 0'),
        timeout=15,
        what="Prometheus to scrape the daemon",
        log=prometheus.log,
    )
    scraped_at = time.time()
    poll(
        lambda: rfc3339(pool_alert_rule(prometheus)[0]["lastEvaluation"]) > scraped_at,
        timeout=10,
        what=f"an evaluation of {ALERT}",
        log=prometheus.log,
    )
    assert pool_alert_rule(prometheus)[1]["state"] == "inactive"
    assert pool_alerts(prometheus) == []
    assert metric(daemon.metrics(), "cloudplow_accounts_available", uploader="media") > 0, "checked too late"

    def pool_dry() -> bool:
        samples = daemon.metrics()
        return (
            metric(samples, "cloudplow_accounts_available", uploader="media") == 0
            and metric(samples, "cloudplow_queue_files", uploader="media") > 0
            and metric(samples, "cloudplow_session_active", uploader="media") == 0
        )

    daemon.wait_until(pool_dry, timeout=60, what="the pool to run dry")
    poll(
        lambda: any(alert["state"] == "firing" for alert in pool_alerts(prometheus)),
        timeout=30,
        what=f"{ALERT} to fire",
        log=lambda: f"the rule as Prometheus evaluates it: {pool_alert_rule(prometheus)[1]}",
    )
    end = time.time()

    def has_data(expression: str) -> bool:
        return finite_samples(prometheus.query_range(expression, start, end)) > 0

    # The scenario made what the panels show: a limit hit and a block, transfers scraped mid-stage.
    assert server.usage()["bob"].exceeded
    final = daemon.metrics()
    assert metric(final, "cloudplow_limit_hits_total", uploader="media", account="bob") >= 1
    assert metric(final, "cloudplow_account_blocked", uploader="media", account="bob") == 1
    # What cloudplow counts as wasted is what the provider received and threw away (it can only
    # be less, by what rclone sent after the last core/stats poll).
    wasted = metric(final, "cloudplow_wasted_bytes_total", uploader="media", account="bob")
    assert 0 < wasted <= server.usage()["bob"].wasted_bytes
    stage_accounts = prometheus.query_range('cloudplow_session_account{uploader="media"}', start, end)
    assert sorted(series["metric"]["account"] for series in stage_accounts) == USERS, "a stage went unseen"
    assert has_data('cloudplow_active_transfers{uploader="media"} > 0')
    assert has_data('cloudplow_transfer_bytes{uploader="media"} > 0')
    # Pending or firing, the alert never was while an account could take a file.
    assert not has_data(
        f'ALERTS{{alertname="{ALERT}", uploader="media"}}'
        ' and on (uploader) cloudplow_accounts_available{uploader="media"} > 0'
    )

    records = recording_rules()
    assert records, f"no recording rule in {RULE_FILES}"
    assert [name for name in records if not has_data(name)] == [], "recording rules without data"
    # Every rule, recording or alerting, evaluated without an error (a bad join fails only here).
    unhealthy = [
        (rule["name"], rule["health"], rule.get("lastError"))
        for group in prometheus.api("rules")["groups"]
        for rule in group["rules"]
        if rule["health"] != "ok"
    ]
    assert unhealthy == []

    empty = []
    for uid, title, expression in panels:
        if not has_data(expression):
            empty.append((f"{uid} / {title}: {expression}", {title, expression}))
    for uid, variable, query in templates:
        if not template_values(prometheus, query, start, end):
            empty.append((f"{uid} / ${variable}: {query}", {query}))
    unexpected = [where for where, keys in empty if not keys & EXPECTED_EMPTY.keys()]
    assert unexpected == [], "dashboard queries without data:\n" + "\n".join(unexpected)
    excepted_but_filled = sorted(set(EXPECTED_EMPTY) - {key for _, keys in empty for key in keys})
    assert excepted_but_filled == [], f"EXPECTED_EMPTY entries that have data now: {excepted_but_filled}"
