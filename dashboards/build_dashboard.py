"""Writes nstrack-leaks.json, the Grafana dashboard for namespace leaks (run: python build_dashboard.py).

Kept as code so every panel's PromQL is in one readable list; tests/privileged/test_prometheus.py
evaluates each of them against a real Prometheus scraping `nstrack serve`.
"""

from __future__ import annotations

import json
from pathlib import Path

# (title, unit, [(expr, legend)], panel type, width)
PANELS = [
    ("Live namespaces by type", "short", [("sum by (ns_type) (nstrack_namespaces{instance=~\"$instance\"})", "{{ns_type}}")], "timeseries", 12),
    ("Orphaned namespaces (alive, no process inside)", "short",
     [("sum by (ns_type, held_by) (nstrack_orphaned_namespaces{instance=~\"$instance\"})", "{{ns_type}} held by {{held_by}}")], "timeseries", 12),
    ("Creations per second", "ops", [("sum by (ns_type) (rate(nstrack_namespaces_created_total{instance=~\"$instance\"}[5m]))", "{{ns_type}}")], "timeseries", 8),
    ("Frees per second", "ops", [("sum by (ns_type) (rate(nstrack_namespaces_destroyed_total{instance=~\"$instance\"}[5m]))", "{{ns_type}}")], "timeseries", 8),
    ("Net growth per hour (leak rate)", "short",
     [("sum by (ns_type) (increase(nstrack_namespaces_created_total{instance=~\"$instance\"}[1h])) - sum by (ns_type) (increase(nstrack_namespaces_destroyed_total{instance=~\"$instance\"}[1h]))", "{{ns_type}}")], "timeseries", 8),
    ("Top creators (namespaces created per second, by command)", "ops",
     [("topk(10, sum by (comm) (rate(nstrack_namespaces_created_by_comm_total{instance=~\"$instance\"}[5m])))", "{{comm}}")], "timeseries", 12),
    ("Oldest orphan age", "s", [("max by (ns_type) (nstrack_oldest_orphan_age_seconds{instance=~\"$instance\"})", "{{ns_type}}")], "timeseries", 12),
    ("Namespace lifetime p50 / p90", "s",
     [("histogram_quantile(0.5, sum by (le, ns_type) (rate(nstrack_namespace_lifetime_seconds_bucket{instance=~\"$instance\"}[1h])))", "p50 {{ns_type}}"),
      ("histogram_quantile(0.9, sum by (le, ns_type) (rate(nstrack_namespace_lifetime_seconds_bucket{instance=~\"$instance\"}[1h])))", "p90 {{ns_type}}")], "timeseries", 12),
    ("Tracker up", "short", [("min(nstrack_tracking_up{instance=~\"$instance\"})", "up")], "stat", 4),
    ("Tracking mode", "short", [("max by (mode) (nstrack_tracking_mode_info{instance=~\"$instance\"}) == 1", "{{mode}}")], "stat", 4),
    ("Events lost (10m)", "short", [("sum(increase(nstrack_events_lost_total{instance=~\"$instance\"}[10m]))", "lost")], "stat", 4),
    ("Free latency bound", "s", [("max(nstrack_free_latency_bound_seconds{instance=~\"$instance\"})", "bound")], "stat", 4),
    ("Scan duration", "s", [("max by (scan) (nstrack_scan_duration_seconds{instance=~\"$instance\"})", "{{scan}}")], "timeseries", 4),
    ("Changes only rescans found", "short", [("sum by (kind) (increase(nstrack_missed_changes_total{instance=~\"$instance\"}[1h]))", "{{kind}}")], "timeseries", 4),
]


def queries() -> list[str]:
    return [expr for _, _, targets, _, _ in PANELS for expr, _ in targets]


def build() -> dict[str, object]:
    panels = []
    x = y = 0
    for i, (title, unit, targets, kind, width) in enumerate(PANELS):
        if x + width > 24:
            x, y = 0, y + 8
        panels.append({
            "id": i + 1,
            "title": title,
            "type": kind,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"x": x, "y": y, "w": width, "h": 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + j), "expr": expr, "legendFormat": legend,
                         "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                        for j, (expr, legend) in enumerate(targets)],
        })
        x += width
    return {
        "title": "nstrack: namespace leaks",
        "uid": "nstrack-leaks",
        "description": "Live namespaces, orphans (alive with no process inside) and what holds them, leak rates, "
                       "and tracker health, from nstrack serve. Creators are not metrics (unbounded labels): "
                       "use `nstrack watch` or /namespaces?orphaned=true on the node.",
        "tags": ["nstrack", "namespaces", "kubernetes"],
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
            {"name": "instance", "type": "query", "label": "Node", "includeAll": True, "multi": True,
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": "label_values(nstrack_build_info, instance)", "refresh": 2},
        ]},
        "panels": panels,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("nstrack-leaks.json")
    out.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"written: {out}")
