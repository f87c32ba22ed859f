"""Alert rules (promtool's own unit tests) and the dashboard (current, every query valid PromQL)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import yaml

DASH = Path(__file__).resolve().parents[2] / "dashboards"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool (Debian's prometheus package) is installed by `make setup`"
    return path


def builder():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("build_dashboard", DASH / "build_dashboard.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_alert_rules_unit_tests() -> None:
    r = subprocess.run([promtool(), "test", "rules", "alerts_test.yml"], cwd=DASH, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_alert_rules_check() -> None:
    r = subprocess.run([promtool(), "check", "rules", "alerts.yml"], cwd=DASH, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    rules = yaml.safe_load((DASH / "alerts.yml").read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {"NstrackOrphanedNamespacesGrowing", "NstrackNamespaceLeakRate",
                                          "NstrackTrackerDown", "NstrackEventsLost"}


def test_dashboard_file_is_current_and_queries_parse(tmp_path: Path) -> None:
    mod = builder()
    assert json.loads((DASH / "nstrack-leaks.json").read_text()) == mod.build(), "run dashboards/build_dashboard.py"
    # promtool parses every query when they are written as recording rules
    rules = {"groups": [{"name": "dash", "rules": [{"record": f"dash:q{i}", "expr": q.replace("$instance", ".*")}
                                                  for i, q in enumerate(mod.queries())]}]}
    f = tmp_path / "dash.yml"
    f.write_text(yaml.safe_dump(rules))
    r = subprocess.run([promtool(), "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
