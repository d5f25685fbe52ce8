"""The Grafana files (grafana/): dashboard structure, provisioning, and the PromQL in every panel.

No Grafana runs here, so these checks stand in for it: every dashboard is valid JSON with fixed
uids, every panel and target names the provisioned datasource, every metric an expression uses is
one the real collector exposes (or a recording rule), and every expression parses, checked by
`promtool check rules`. tests/test_monitoring_live.py imports `dashboard_queries()` and
`template_queries()` to run the same expressions against a real Prometheus.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cloudplow.config import load_config
from cloudplow.integrations import integrations_for
from cloudplow.ledger import Ledger
from cloudplow.live import LiveState
from cloudplow.metrics import CloudplowCollector
from cloudplow.scan import size_distribution

REPOSITORY = Path(__file__).resolve().parent.parent
GRAFANA = REPOSITORY / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES_FILE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS_FILE = GRAFANA / "provisioning" / "dashboards" / "cloudplow.yml"
PROMETHEUS = REPOSITORY / "prometheus"
DASHBOARDS_PATH = "/var/lib/grafana/dashboards"  # where docker-compose.yml mounts grafana/dashboards
PROMETHEUS_URL = "http://prometheus:9090"

# Recorded by prometheus/rules/*.yml; dashboards may use them as if the collector exposed them.
RECORDING_RULES = frozenset(
    {
        "uploader:cloudplow_account_remaining_bytes:sum",
        "uploader:cloudplow_account_quota_bytes:sum",
        "uploader:cloudplow_uploaded_bytes:rate5m",
        "uploader:cloudplow_uploaded_bytes:rate1h",
        "uploader:cloudplow_rclone_errors:rate5m",
    }
)
# Bytes, byte rates, seconds, timestamps, counts, ratios, and "none" for states.
UNITS = frozenset({"decbytes", "Bps", "s", "dateTimeAsIso", "short", "percentunit", "none"})
# What the live test substitutes; Grafana's own variables stand for a 1 h range and a 1 m rate window.
VARIABLES = ("uploader", "account", "__rate_interval", "__range")
UPLOADER_FILTER = 'uploader=~"$uploader"'
# Series about the host's peers rather than an uploader (a media server is shared by all): they have
# no uploader label to filter by.
HOST_WIDE = frozenset({"cloudplow_media_streams", "cloudplow_media_server_up"})

# Words that can stand where a metric name could but are not one.
PROMQL_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "atan2",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    }
)
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
MATCHERS = re.compile(r"\{[^{}]*\}")
RANGES = re.compile(r"\[[^\[\]]*\]")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
IDENTIFIER = re.compile(r"(?<![\w.:$])[a-zA-Z_:][\w:]*")
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
LABEL_EQUALS = re.compile(r'(\w+)\s*=\s*"([^"$]*)"')


# --- reading the files (also imported by tests/test_monitoring_live.py) ---------------------------


def provisioned_datasource() -> dict:
    """Return the one datasource grafana/provisioning/datasources/prometheus.yml provisions."""
    document = yaml.safe_load(DATASOURCES_FILE.read_text(encoding="utf-8"))
    (datasource,) = document["datasources"]
    return datasource


def load_dashboards() -> dict[str, dict]:
    """Return every grafana/dashboards/*.json, parsed, by file name."""
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in DASHBOARD_FILES}


def iter_panels(panels: list[dict]) -> Iterator[dict]:
    """Yield every panel, rows included, and the panels nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def template_expression(variable: dict) -> str:
    """Given a query variable, return its query (a string, or the Prometheus query editor's object)."""
    query = variable.get("query", "")
    return query.get("query", "") if isinstance(query, dict) else query


def substitute(
    expression: str,
    *,
    uploader: str = "media",
    account: str = ".*",
    rate_interval: str = "1m",
    range_: str = "1h",
) -> str:
    """
    Given a panel expression, return it with Grafana's variables replaced the way Grafana would
    for the given values (account ".*": the "All" choice). Raise ValueError on any other variable.
    """
    values = {"uploader": uploader, "account": account, "__rate_interval": rate_interval, "__range": range_}

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise ValueError(f"${name} is not one of the variables {VARIABLES}, in: {expression}")
        return values[name]

    return VARIABLE.sub(value, expression)


def dashboard_queries(uploader: str = "media", account: str = ".*") -> list[tuple[str, str, str]]:
    """Return (dashboard uid, panel title, expression with the variables substituted) for every target."""
    return [
        (dashboard["uid"], panel["title"], substitute(target["expr"], uploader=uploader, account=account))
        for dashboard in load_dashboards().values()
        for panel in iter_panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
    ]


def template_queries(uploader: str = "media") -> list[tuple[str, str, str]]:
    """
    Return (dashboard uid, variable name, query with $uploader substituted) for every query
    variable; the queries are Grafana's `label_values(selector, label)`, not PromQL.
    """
    return [
        (dashboard["uid"], variable["name"], substitute(template_expression(variable), uploader=uploader))
        for dashboard in load_dashboards().values()
        for variable in dashboard.get("templating", {}).get("list", [])
        if variable.get("type") == "query"
    ]


def label_values_selector(query: str) -> str:
    """Given `label_values(selector, label)`, return the selector, which is PromQL."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
    assert match, f"not a label_values(selector, label) query: {query}"
    return match.group(1)


def metric_selectors(expression: str) -> list[tuple[str, str]]:
    """
    Given a PromQL expression, return (metric name, its label matchers between braces, or "") for
    every vector selector. Strings, matchers, ranges and grouping labels are blanked out first
    (keeping positions), so label names and durations are not taken for metric names.
    """

    def blank(match: re.Match) -> str:
        text = match.group(0)
        return text[0] + " " * (len(text) - 2) + text[-1]

    masked = STRING.sub(blank, expression)
    masked = MATCHERS.sub(blank, masked)
    masked = RANGES.sub(blank, masked)
    masked = GROUPING.sub(lambda match: " " * len(match.group(0)), masked)
    selectors = []
    for match in IDENTIFIER.finditer(masked):
        name = match.group(0)
        rest = masked[match.end() :]
        if name.lower() in PROMQL_KEYWORDS or rest.lstrip().startswith("("):
            continue  # an operator, an aggregation or a function
        braces = re.match(r"\s*\{", rest)
        matchers = ""
        if braces:
            start = match.end() + braces.end() - 1
            matchers = expression[start : masked.index("}", start) + 1]
        selectors.append((name, matchers))
    return selectors


def run_promtool_check_rules(expressions: list[str], directory: Path) -> subprocess.CompletedProcess:
    """Write the expressions as recording rules panel:check:N and run `promtool check rules` on them."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs it (Debian's prometheus package)"
    rules = [{"record": f"panel:check:{number}", "expr": expr} for number, expr in enumerate(expressions)]
    path = directory / "dashboard-expressions.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8")
    return subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120, check=False
    )


# --- what the real collector exposes ----------------------------------------------------------


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, str]]]:
    """
    Render a real CloudplowCollector with a stage running (so the series that exist only then,
    such as cloudplow_session_account and the transfer slots, are there too); return the label
    sets of every sample by sample name (`_total`, `_bucket`, `_sum`, `_count` included).
    """
    directory = tmp_path_factory.mktemp("collector")
    (directory / "source").mkdir()
    document = {
        "state_dir": "state",
        "uploaders": {
            "media": {
                "source": "source",
                "destination": "remote:media",
                "accounts": {"list": [{"name": name, "env": {"SECRET": "x"}} for name in ("alice", "bob")]},
                "quota": {"per_account": 10**7, "window": "24h", "reserve": 0},
                "transfers": 2,
            }
        },
        # Configured, never polled here: their collectors expose every series at 0.
        "media_servers": [{"kind": "plex", "url": "http://127.0.0.1:9", "token": "unused-token"}],
        "notifications": {"urls": ["json://127.0.0.1:9/hook"]},
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    config = load_config(directory / "config.yaml")
    sizes = [10**6, 3 * 10**6]
    live = LiveState()
    live.update(
        "media",
        state="uploading",
        queue_files=len(sizes),
        queue_bytes=sum(sizes),
        queue_distribution=size_distribution(sizes).to_dict(),
        queue_oldest_mtime=1_700_000_000.0,
        last_trigger="min_queue",
        session_id=1,
        session_started_at=1_700_000_000.0,
        stage_number=1,
        stage_account="alice",
        stage_account_index=1,
        stage_planned_bytes=sum(sizes),
        stage_planned_files=len(sizes),
        stage_transfers=2,
        stats={"bytes": 10, "speed": 1.0, "eta": 5, "transferring": [{"size": 10**6, "bytes": 10}]},
    )
    registry = CollectorRegistry(auto_describe=False)
    integrations = integrations_for(config)
    with Ledger.in_state_dir(config.state_dir) as ledger:
        registry.register(CloudplowCollector(config, ledger, live))
        for collector in integrations.collectors:
            registry.register(collector)
        text = generate_latest(registry).decode()
    integrations.close()
    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(dict(sample.labels))
    return samples


# --- provisioning -----------------------------------------------------------------------------


def test_datasource_provisioning():
    document = yaml.safe_load(DATASOURCES_FILE.read_text(encoding="utf-8"))
    assert document["apiVersion"] == 1
    (datasource,) = document["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == PROMETHEUS_URL
    assert datasource["uid"] == "cloudplow-prometheus"  # the one place the test names it
    assert datasource["isDefault"] is True


def test_dashboard_provider_provisioning():
    document = yaml.safe_load(PROVIDERS_FILE.read_text(encoding="utf-8"))
    assert document["apiVersion"] == 1
    (provider,) = document["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "cloudplow"
    assert provider["options"]["path"] == DASHBOARDS_PATH


def test_grafana_rate_interval_follows_the_scrape_interval():
    """Grafana derives $__rate_interval from timeInterval: it must be Prometheus' scrape interval."""
    document = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = [job for job in document["scrape_configs"] if job["job_name"] == "cloudplow"]
    scrape_interval = job.get("scrape_interval", document.get("global", {}).get("scrape_interval", "1m"))
    assert provisioned_datasource()["jsonData"]["timeInterval"] == scrape_interval


def recorded_rule_names() -> set[str]:
    """Return the names every prometheus/rules/*.yml records (the promtool test files left out)."""
    names = set()
    for path in sorted((PROMETHEUS / "rules").glob("*.yml")):
        if path.name.endswith("_test.yml"):
            continue
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in document.get("groups", []):
            names.update(rule["record"] for rule in group.get("rules", []) if "record" in rule)
    return names


def test_the_recording_rules_the_dashboards_use_are_recorded():
    used = {
        name
        for _, _, expr in dashboard_queries()
        for name, _ in metric_selectors(expr)
        if name in RECORDING_RULES
    }
    assert used, "the dashboards use no recording rule: RECORDING_RULES is stale"
    assert used <= recorded_rule_names(), used - recorded_rule_names()


# --- dashboard structure ----------------------------------------------------------------------


def test_four_dashboards_of_valid_json_with_unique_uids_and_titles():
    dashboards = load_dashboards()  # json.loads raises on invalid JSON
    assert len(dashboards) == 4, sorted(dashboards)
    uids = [dashboard["uid"] for dashboard in dashboards.values()]
    titles = [dashboard["title"] for dashboard in dashboards.values()]
    assert len(set(uids)) == len(uids), uids
    assert len(set(titles)) == len(titles), titles
    assert all(uid.startswith("cloudplow-") for uid in uids), uids


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.name)
def test_dashboard_settings_and_links(path: Path):
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] == 39
    assert dashboard["id"] is None  # provisioning assigns it; a fixed one clashes between instances
    assert "cloudplow" in dashboard["tags"]
    assert dashboard["time"] == {"from": "now-6h", "to": "now"}
    assert dashboard["refresh"] == "10s"
    # A link to every dashboard tagged cloudplow, keeping the time range and the uploader.
    assert any(
        link["type"] == "dashboards"
        and "cloudplow" in link["tags"]
        and link["includeVars"]
        and link["keepTime"]
        for link in dashboard["links"]
    ), dashboard["links"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.name)
def test_every_panel_and_target_uses_the_provisioned_datasource(path: Path):
    uid = provisioned_datasource()["uid"]
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    panels = list(iter_panels(dashboard["panels"]))
    assert panels
    for panel in panels:
        assert panel.get("datasource") == {"type": "prometheus", "uid": uid}, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource") == {"type": "prometheus", "uid": uid}, panel["title"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.name)
def test_panel_ids_grid_positions_units_and_ref_ids(path: Path):
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    panels = list(iter_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(set(ids)) == len(ids), ids
    for panel in panels:
        title = panel["title"]
        assert title, panel["id"]
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys(), title
        assert grid["h"] > 0 and grid["w"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, title
        if panel["type"] == "row":
            continue
        assert panel["fieldConfig"]["defaults"].get("unit") in UNITS, title
        ref_ids = [target.get("refId") for target in panel["targets"]]
        assert all(ref_ids), title
        assert len(set(ref_ids)) == len(ref_ids), (title, ref_ids)


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.name)
def test_template_variables(path: Path):
    uid = provisioned_datasource()["uid"]
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    uploader = variables["uploader"]
    assert template_expression(uploader) == "label_values(cloudplow_accounts, uploader)"
    assert uploader["includeAll"] is True and uploader["multi"] is True
    for variable in variables.values():
        assert variable["type"] == "query", variable["name"]
        assert variable["datasource"] == {"type": "prometheus", "uid": uid}, variable["name"]
    if "account" in variables:
        assert (
            template_expression(variables["account"])
            == 'label_values(cloudplow_account_quota_bytes{uploader=~"$uploader"}, account)'
        )
    expressions = [
        target["expr"] for panel in iter_panels(dashboard["panels"]) for target in panel.get("targets", [])
    ]
    used = {match.group(1) or match.group(2) for expr in expressions for match in VARIABLE.finditer(expr)}
    assert used <= set(VARIABLES), used
    assert used & {"account"} <= variables.keys(), "a panel uses $account, the dashboard lacks it"


def test_every_selector_is_filtered_by_uploader(exposed: dict[str, list[dict[str, str]]]):
    for dashboard in load_dashboards().values():
        for panel in iter_panels(dashboard["panels"]):
            for target in panel.get("targets", []):
                selectors = metric_selectors(target["expr"])
                assert selectors, (dashboard["uid"], panel["title"])
                for name, matchers in selectors:
                    if name in HOST_WIDE:
                        assert all("uploader" not in labels for labels in exposed[name]), name
                        continue
                    assert UPLOADER_FILTER in matchers, (dashboard["uid"], panel["title"], name)


# --- the expressions against the collector and promtool ---------------------------------------


def test_every_metric_is_exposed_or_recorded(exposed: dict[str, list[dict[str, str]]]):
    expressions = [expr for _, _, expr in dashboard_queries()]
    expressions += [label_values_selector(query) for _, _, query in template_queries()]
    for expression in expressions:
        for name, matchers in metric_selectors(expression):
            if name in RECORDING_RULES:
                continue
            assert name in exposed, f"{name} (in {expression}) is neither exposed nor a recording rule"
            # A fixed label value (percentile="100", state="idle") must be one the collector uses.
            for label, value in LABEL_EQUALS.findall(matchers):
                assert any(labels.get(label) == value for labels in exposed[name]), (name, label, value)


def test_the_selector_parser_sees_metrics_not_labels_functions_or_durations():
    expression = (
        'sum by (uploader, account) (increase(cloudplow_uploaded_bytes_total{uploader=~"m"}[1d]))'
        " / on (uploader) group_left (x) (uploader:cloudplow_uploaded_bytes:rate1h > 1e+06) * time()"
        ' or label_replace(cloudplow_session_active * 0, "account", "none", "", "")'
    )
    assert metric_selectors(expression) == [
        ("cloudplow_uploaded_bytes_total", '{uploader=~"m"}'),
        ("uploader:cloudplow_uploaded_bytes:rate1h", ""),
        ("cloudplow_session_active", ""),
    ]


def test_every_expression_parses_with_promtool(tmp_path: Path):
    queries = dashboard_queries()
    queries += [(uid, name, label_values_selector(query)) for uid, name, query in template_queries()]
    expressions = list(dict.fromkeys(expr for _, _, expr in queries))  # each expression once
    result = run_promtool_check_rules(expressions, tmp_path)
    where = "\n".join(f"panel:check:{number}: {expr}" for number, expr in enumerate(expressions))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{where}"
    assert f"SUCCESS: {len(expressions)} rules found" in result.stdout, result.stdout


def test_promtool_rejects_a_broken_expression(tmp_path: Path):
    """The check above would pass vacuously if promtool accepted anything."""
    result = run_promtool_check_rules(
        ['sum by (uploader (cloudplow_queue_bytes{uploader=~"media"})'], tmp_path
    )
    assert result.returncode != 0
