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
    _, prom = stack
    for q in dashboard_queries() + alert_queries():
        res = prom.api("query", query=q)
        assert res["status"] == "success", (q, res)
    # the live namespace panel has data for every type
    assert prom.value('count(nstrack_namespaces{job="nstrack"})') == 8
    deadline = time.monotonic() + 30
    while True:
        rules = prom.api("rules")["data"]["groups"][0]["rules"]
        if all(r.get("lastEvaluation", "").startswith("20") for r in rules) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {r["name"]: r["health"] for r in rules} == {r: "ok" for r in (
        "NstrackOrphanedNamespacesGrowing", "NstrackNamespaceLeakRate", "NstrackTrackerDown", "NstrackEventsLost")}


def test_orphan_panel_moves(stack: tuple[Served, Prom]) -> None:
    _, prom = stack
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
        assert wait_for(base + 3, 15) == base + 3
        created = prom.value('sum(nstrack_namespaces_created_total{job="nstrack",ns_type="net"})')
        assert created >= 3
    assert wait_for(base, ASYNC_FREE_GRACE + 15) == base
    # the orphan gauge drops when the mounts go; the frees come later (net namespaces are freed by a
    # kernel worker) and reach Prometheus at its next scrape: wait for them too
    destroyed = 'sum(nstrack_namespaces_destroyed_total{job="nstrack",ns_type="net"})'
    end = time.monotonic() + ASYNC_FREE_GRACE + 15
    while prom.value(destroyed) < 3 and time.monotonic() < end:
        time.sleep(0.5)
    assert prom.value(destroyed) >= 3
