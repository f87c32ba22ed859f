"""A real Prometheus on loopback scrapes `nstrack serve`; every dashboard and alert query evaluates and moves."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .scenario import ASYNC_FREE_GRACE, stop_child
from .serving import Served, free_port, serve
from .test_serve import bound_netns

DASH = Path(__file__).resolve().parents[2] / "dashboards"


class Prom:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.load(r)

    def value(self, query: str) -> float:
        res = self.api("query", query=query)
        assert res["status"] == "success", res
        vec = res["data"]["result"]
        return float(vec[0]["value"][1]) if vec else 0.0

    def wait_value(self, query: str, ok: Any, timeout: float) -> float:
        """The query's value once ``ok(value)``, or the last one after ``timeout`` seconds (an instant query
        right after a failed scrape finds no series: 0)."""
        end = time.monotonic() + timeout
        while True:
            v = self.value(query)
            if ok(v) or time.monotonic() > end:
                return v
            time.sleep(0.5)

    def scrapes(self, srv: Served) -> str:
        """How Prometheus' scrapes of nstrack went, and serve's last lines: for assertion messages."""
        targets = self.api("targets")["data"]["activeTargets"]
        state = [{k: t.get(k) for k in ("health", "lastError", "lastScrapeDuration", "lastScrape")} for t in targets]
        return f"targets: {state}\nserve's log:\n{srv.log_tail()}"


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Served, Prom]]:
    prometheus = shutil.which("prometheus")
    assert prometheus, "Debian's prometheus package is installed by `make setup`"
    with serve("--rescan-seconds", "0.5", "--holders-seconds", "0.5") as srv, \
            tempfile.TemporaryDirectory(prefix="nstrack-prom-") as d:
        port = free_port()
        cfg = Path(d) / "prometheus.yml"
        cfg.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(DASH / "alerts.yml")],
            "scrape_configs": [{"job_name": "nstrack", "static_configs": [{"targets": [f"127.0.0.1:{srv.port}"]}]}],
        }))
        proc = subprocess.Popen([prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={d}/data",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            prom = Prom(port)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if prom.value('up{job="nstrack"}') == 1:
                        break
                except OSError:
                    pass
                assert proc.poll() is None, f"prometheus exited {proc.returncode}"
                assert time.monotonic() < deadline, "prometheus never scraped nstrack"
                time.sleep(0.5)
            yield srv, prom
        finally:
            stop_child(proc)


def dashboard_queries() -> list[str]:
    spec = importlib.util.spec_from_file_location("build_dashboard", DASH / "build_dashboard.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return [q.replace("$instance", ".*") for q in mod.queries()]


def alert_queries() -> list[str]:
    return [r["expr"] for r in yaml.safe_load((DASH / "alerts.yml").read_text())["groups"][0]["rules"]]


def test_every_query_evaluates(stack: tuple[Served, Prom]) -> None:
    srv, prom = stack
    for q in dashboard_queries() + alert_queries():
        res = prom.api("query", query=q)
        assert res["status"] == "success", (q, res)
    # the live namespace panel has data for every type (at the latest scrape: waited for, since one that
    # timed out, in a loaded VM, leaves none for a moment)
    count = prom.wait_value('count(nstrack_namespaces{job="nstrack"})', lambda v: v == 8, 30)
    assert count == 8, prom.scrapes(srv)
    deadline = time.monotonic() + 30
    while True:
        rules = prom.api("rules")["data"]["groups"][0]["rules"]
        if all(r.get("lastEvaluation", "").startswith("20") for r in rules) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {r["name"]: r["health"] for r in rules} == {r: "ok" for r in (
        "NstrackOrphanedNamespacesGrowing", "NstrackNamespaceLeakRate", "NstrackTrackerDown", "NstrackEventsLost")}


def test_orphan_panel_moves(stack: tuple[Served, Prom]) -> None:
    srv, prom = stack
    q = 'sum(nstrack_orphaned_namespaces{job="nstrack",ns_type="net",held_by="mount"})'
    base = prom.value(q)

    def wait_for(want: float, timeout: float) -> float:
        end = time.monotonic() + timeout
        while True:
            v = prom.value(q)
            if v == want or time.monotonic() > end:
                return v
            time.sleep(0.5)

    with bound_netns(3):
        assert wait_for(base + 3, 15) == base + 3, prom.scrapes(srv)
        created = prom.wait_value('sum(nstrack_namespaces_created_total{job="nstrack",ns_type="net"})',
                                  lambda v: v >= 3, 15)
        assert created >= 3, prom.scrapes(srv)
    assert wait_for(base, ASYNC_FREE_GRACE + 15) == base, prom.scrapes(srv)
    # the orphan gauge drops when the mounts go; the frees come later (net namespaces are freed by a
    # kernel worker) and reach Prometheus at its next scrape: wait for them too
    destroyed = 'sum(nstrack_namespaces_destroyed_total{job="nstrack",ns_type="net"})'
    assert prom.wait_value(destroyed, lambda v: v >= 3, ASYNC_FREE_GRACE + 15) >= 3, prom.scrapes(srv)
