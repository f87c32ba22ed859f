"""Rendering of the Prometheus collector from a real replica and real holder records (no kernel)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from nstrack.config import Config
from nstrack.model.holders import aggregate
from nstrack.model.records import Event, MountRecord, NSRecord, TaskRecord
from nstrack.model.replica import Replica, boot_ns
from nstrack.service import Lifetimes
from nstrack.views.metrics import NstrackCollector

NET0, NET1, NET2 = 4026531833, 4026532500, 4026532501


def fake_service(per_namespace: bool = False, limit: int = 1000) -> SimpleNamespace:
    """The state a Service exposes to the collector, built from real model objects."""
    replica = Replica()
    now = boot_ns()
    replica.reconcile([NSRecord("net", NET0, 1, 0, 0, 3)], now - 10**9, startup=True)
    replica.apply(Event("created", "net", NET1, 2, now - 120 * 10**9, 0, 0, 5, 5, "ip", 1, "unshare"))
    replica.apply(Event("created", "net", NET2, 3, now - 60 * 10**9, 0, 0, 5, 5, "ip", 1, "unshare"))
    entries = aggregate(
        [NSRecord("net", NET0, 1, 0, 0, 3), NSRecord("net", NET1, 2, 0, 0, 1), NSRecord("net", NET2, 3, 0, 0, 1)],
        [TaskRecord(1, 1, (NET0, 1, 2, 3, 4, 5, 6, 7, 4, 7), "init")],
        mounts=[MountRecord(1, "/run/netns/a", "net", NET1)],
        replica=replica,
    )
    lifetimes = Lifetimes()
    lifetimes.observe("net", 42.0)
    stats = SimpleNamespace(events=7, lost_events=2, rescans=5, rescans_for_loss=1, last_scan=None, attached=["a", "b"],
                            brief=4)
    tracker = SimpleNamespace(replica=replica, stats=stats, free_latency_bound=2.0)
    return SimpleNamespace(
        lock=threading.RLock(), tracker=tracker, catch_up=lambda: None, entries=entries, entries_complete=True, lifetimes=lifetimes,
        holder_scan_seconds=0.004, health=lambda: (True, "ok"), mode="tracepoint", started_at=1.0,
        findings=SimpleNamespace(kernel="6.18.44", libbpf="1.1"),
        config=Config(per_namespace_metrics=per_namespace, per_namespace_limit=limit),
    )


def render(svc: SimpleNamespace, openmetrics: bool = False) -> str:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NstrackCollector(svc))  # type: ignore[arg-type]
    return (generate_openmetrics if openmetrics else generate_latest)(reg).decode()


def value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not in output")


def test_families_and_values() -> None:
    text = render(fake_service())
    assert value(text, 'nstrack_namespaces{ns_type="net"}') == 3
    assert value(text, 'nstrack_namespaces{ns_type="time"}') == 0
    assert value(text, 'nstrack_namespaces_created_total{ns_type="net"}') == 2
    assert value(text, 'nstrack_namespaces_created_by_comm_total{comm="ip",ns_type="net"}') == 2
    assert value(text, 'nstrack_orphaned_namespaces{held_by="mount",ns_type="net"}') == 1
    assert value(text, 'nstrack_orphaned_namespaces{held_by="kernel",ns_type="net"}') == 1
    age = value(text, 'nstrack_oldest_orphan_age_seconds{ns_type="net"}')
    assert 119 < age < 200  # the older orphan was created 120 s ago
    assert value(text, 'nstrack_namespace_lifetime_seconds_bucket{le="60.0",ns_type="net"}') == 1
    assert value(text, 'nstrack_namespace_lifetime_seconds_bucket{le="10.0",ns_type="net"}') == 0
    assert value(text, "nstrack_events_lost_total") == 2
    assert value(text, "nstrack_short_lived_namespaces_total") == 4
    assert value(text, 'nstrack_rescans_total{reason="lost_events"}') == 1
    assert value(text, 'nstrack_tracking_mode_info{mode="tracepoint"}') == 1
    assert value(text, 'nstrack_tracking_mode_info{mode="fentry"}') == 0
    assert 'nstrack_build_info{kernel="6.18.44",libbpf="1.1",version=' in text
    assert "type=" not in text.replace("ns_type=", "")  # the label is ns_type, never type
    assert "nstrack_namespace_info" not in text


def test_openmetrics_and_per_namespace_cap() -> None:
    text = render(fake_service(per_namespace=True, limit=2), openmetrics=True)
    assert text.rstrip().endswith("# EOF")
    assert text.count("nstrack_namespace_info{") == 2
    assert "nstrack_namespace_info_truncated 1.0" in text
