"""The alert rules, their promtool unit tests, the scrape config and the runbooks.

promtool comes from the system (Debian's ``prometheus`` package ships it). Without it these tests
skip, except under ``CI=true`` where a missing tool is a failure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.tools import need_binary

GRAFANA = Path(__file__).resolve().parent.parent / "grafana"
RULES = GRAFANA / "alerts" / "django-sent-otel.rules.yml"
RULE_TESTS = GRAFANA / "alerts" / "tests" / "django-sent-otel.test.yml"
PROMETHEUS_CONFIG = GRAFANA / "prometheus.yml"
RUNBOOKS = GRAFANA / "README.md"
RUNBOOK_URL = "https://github.com/django-sent-otel/django-sent-otel/blob/main/grafana/README.md"
ALERT_NAME = re.compile(r"^DjangoDelivery(?:[A-Z][a-z0-9]+)+$")
SEVERITIES = frozenset({"critical", "warning", "info"})


def promtool(*args: str | Path) -> None:
    path = shutil.which("promtool")
    need_binary(path, "promtool")
    assert path is not None
    result = subprocess.run(
        [path, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, (
        f"promtool {' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr}"
    )


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in alerts()]


def test_promtool_check_rules() -> None:
    promtool("check", "rules", RULES)


def test_promtool_test_rules() -> None:
    promtool("test", "rules", RULE_TESTS)


def test_promtool_check_config() -> None:
    promtool("check", "config", PROMETHEUS_CONFIG)


def test_every_alert_has_a_firing_and_a_control_case() -> None:
    firing: set[str] = set()
    control: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else control).add(check["alertname"])
    names = set(alert_names())
    assert names - firing == set(), "alerts without a case that fires"
    assert names - control == set(), "alerts without a control case (empty exp_alerts)"
    assert (firing | control) - names == set(), "tests for alerts that do not exist"


@pytest.mark.parametrize("rule", alerts(), ids=alert_names())
def test_alert_is_actionable(rule: dict[str, Any]) -> None:
    assert ALERT_NAME.match(rule["alert"])
    assert rule["labels"]["severity"] in SEVERITIES
    minutes = int(re.fullmatch(r"(\d+)m", rule["for"])[1])  # type: ignore[index]
    assert 1 <= minutes <= 30
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert "{{ $labels.job }}" in annotations["description"]
    assert annotations["runbook_url"] == f"{RUNBOOK_URL}#{rule['alert'].lower()}"


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_has_its_runbook() -> None:
    text = RUNBOOKS.read_text()
    runbooks = text.split("\n## Runbooks\n", 1)[1].split("\n## ", 1)[0]
    sections = re.findall(r"^### (.+)$", runbooks, re.MULTILINE)
    assert sorted(sections) == sorted(alert_names())
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
    for rule in alerts():
        assert rule["annotations"]["runbook_url"].split("#", 1)[1] in anchors
