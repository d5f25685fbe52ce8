"""The shipped Prometheus configuration and rules (prometheus/): promtool accepts them, every alert
has unit tests that see it fire and stay quiet, and every metric they read is one cloudplow exposes.

promtool comes from Debian's prometheus package (`make promtool`); without it these tests fail.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from cloudplow.config import load_config
from cloudplow.ledger import Ledger
from cloudplow.live import LiveState
from cloudplow.metrics import CloudplowCollector

REPOSITORY = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPOSITORY / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "rules" / "cloudplow.yml"
RULE_TESTS = PROMETHEUS_DIR / "rules" / "cloudplow_test.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

# Names a dashboard relies on (grafana/): renaming one breaks its panels.
RECORDING_RULES = {
    "uploader:cloudplow_account_remaining_bytes:sum",
    "uploader:cloudplow_account_quota_bytes:sum",
    "uploader:cloudplow_uploaded_bytes:rate5m",
    "uploader:cloudplow_uploaded_bytes:rate1h",
    "uploader:cloudplow_rclone_errors:rate5m",
}
REQUIRED_ALERTS = {
    "CloudplowAccountNearQuota",
    "CloudplowPoolExhausted",
    "CloudplowUploadStalled",
    "CloudplowExporterDown",
    "CloudplowRcloneErrorsRising",
    "CloudplowQueueWontDrainToday",
    "CloudplowNoSuccessfulUpload",
    "CloudplowAccountBroken",
}
SEVERITIES = {"info", "warning", "critical"}
# Series Prometheus writes itself for every target, not cloudplow's exposition.
PROMETHEUS_SERIES = {"up"}
PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "offset", "bool", "inf", "nan"}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules(kind: str) -> list[dict]:
    """Given "alert" or "record", return those rules of cloudplow.yml, in file order."""
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if kind in rule]


def metric_names(expression: str) -> set[str]:
    """
    Given a PromQL expression, return the metric names it selects. Strings, label matchers,
    ranges and label lists (by, on, group_left ...) go first; a word then is a metric name
    unless a `(` follows it (a function or an aggregation) or it is a keyword.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    # The look-behind skips the exponent of 1e9 and the unit of a duration (offset 2d).
    for match in re.finditer(r"(?<![\w.:])[a-zA-Z_:][\w:]*", text):
        word = match.group()
        if word.lower() in PROMQL_KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def exposed_names(tmp_path: Path) -> set[str]:
    """Render a real CloudplowCollector (two accounts, empty ledger) and return its metric names."""
    (tmp_path / "source").mkdir()
    document = {
        "state_dir": "state",
        "uploaders": {
            "media": {
                "source": "source",
                "destination": "remote:media",
                "accounts": {"list": [{"name": name, "env": {"SECRET": "pw"}} for name in ("alice", "bob")]},
            }
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    config = load_config(tmp_path / "config.yaml")
    ledger = Ledger.in_state_dir(config.state_dir)
    try:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(CloudplowCollector(config, ledger, LiveState(list(config.uploaders))))
        text = generate_latest(registry).decode()
    finally:
        ledger.close()
    names = set()
    for line in text.splitlines():
        # `# TYPE` names families that have no sample yet (cloudplow_session_account when idle).
        name = line.split()[2] if line.startswith("# TYPE ") else line.split("{")[0].split(" ")[0]
        if name and not name.startswith("#"):
            names.add(re.sub(r"_(?:bucket|sum|count)$", "", name))
    return names


@pytest.fixture(scope="module")
def promtool() -> str:
    assert Path(PROMTOOL).is_file(), f"promtool not found at {PROMTOOL}: `make promtool` installs it"
    return PROMTOOL


def run_promtool(promtool: str, *arguments: str) -> None:
    completed = subprocess.run(
        [promtool, *arguments], cwd=REPOSITORY, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, f"promtool {' '.join(arguments)}:\n{completed.stdout}{completed.stderr}"


def test_promtool_accepts_the_configuration(promtool: str) -> None:
    run_promtool(promtool, "check", "config", str(CONFIG.relative_to(REPOSITORY)))


def test_promtool_accepts_the_rules(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", str(RULES.relative_to(REPOSITORY)))


def test_the_rule_unit_tests_pass(promtool: str) -> None:
    run_promtool(promtool, "test", "rules", str(RULE_TESTS.relative_to(REPOSITORY)))


def test_prometheus_loads_every_rule_file_and_no_unit_test() -> None:
    patterns = load(CONFIG)["rule_files"]
    loaded = {
        path.name
        for path in PROMETHEUS_DIR.glob("rules/*")
        if any(fnmatch.fnmatch(str(path.relative_to(PROMETHEUS_DIR)), pattern) for pattern in patterns)
    }
    rule_files = {path.name for path in PROMETHEUS_DIR.glob("rules/*.yml")} - {
        path.name for path in PROMETHEUS_DIR.glob("rules/*_test.yml")
    }
    assert loaded == rule_files


def test_recording_rules_and_alerts_the_dashboards_and_docs_name_exist() -> None:
    assert RECORDING_RULES - {rule["record"] for rule in rules("record")} == set()
    groups = {group["name"]: group for group in load(RULES)["groups"]}
    alerts = {rule["alert"] for rule in groups["cloudplow-alerts"]["rules"]}
    assert REQUIRED_ALERTS - alerts == set()
    assert {rule["alert"] for rule in rules("alert")} == alerts, "every alert in cloudplow-alerts"


@pytest.mark.parametrize("alert", rules("alert"), ids=lambda rule: rule["alert"])
def test_every_alert_has_a_severity_a_summary_and_a_description(alert: dict) -> None:
    assert alert["labels"]["severity"] in SEVERITIES
    assert alert["annotations"]["summary"].strip()
    assert alert["annotations"]["description"].strip()


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in load(RULE_TESTS)["tests"]:
        for case in group.get("alert_rule_test") or ():
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in rules("alert")}
    # A case naming no real alert passes while testing nothing.
    assert (firing | quiet) - alerts == set()
    assert alerts - firing == set(), "alerts no test sees firing"
    assert alerts - quiet == set(), "alerts no test sees quiet"


def test_metric_names_reads_promql() -> None:
    expression = (
        'sum by (uploader) (rate(a_total{code!="0", job=~"x|y"}[5m])) > on (uploader) group_left ()'
        " 1e9 * b:c:rate1h offset 2d and d == bool 0 or absent(up{job='z'})"
    )
    assert metric_names(expression) == {"a_total", "b:c:rate1h", "d", "up"}


def test_the_rules_read_only_metrics_cloudplow_exposes(tmp_path: Path) -> None:
    exposed = exposed_names(tmp_path)
    assert {"cloudplow_uploaded_bytes_total", "cloudplow_queue_file_size_bytes"} <= exposed
    recorded = {rule["record"] for rule in rules("record")}
    unknown = {}
    for rule in rules("record") + rules("alert"):
        missing = metric_names(rule["expr"]) - exposed - recorded - PROMETHEUS_SERIES
        if missing:
            unknown[rule.get("alert") or rule["record"]] = sorted(missing)
    assert unknown == {}
