"""Prometheus metrics: a custom Collector that builds every family from the replica at scrape time.

No global gauges are updated behind the scrape's back. Labels: ``ns_type`` (never ``type``) and, for
orphans, ``held_by`` (fd, mount, socket, child, zombie, kernel: the first kind of holder found, in that
order). Per-namespace series only with ``per_namespace_metrics``, capped at ``per_namespace_limit``.

Sample::

    nstrack_namespaces{ns_type="net"} 3.0
    nstrack_orphaned_namespaces{held_by="mount",ns_type="net"} 2.0
    nstrack_oldest_orphan_age_seconds{ns_type="net"} 812.4
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .. import __version__
from ..model.holders import Entry
from ..model.nstypes import MODES, TYPE_NAMES
from ..model.replica import wall_time

if TYPE_CHECKING:
    from ..kernel.tracker import Stats
    from ..service import Service

HELD_BY = ("fd", "mount", "socket", "child", "zombie", "kernel")


def held_by(e: Entry) -> str:
    h = e.holders
    if h.fds:
        return "fd"
    if h.mounts:
        return "mount"
    if h.sockets:
        return "socket"
    if h.children:
        return "child"
    if any(t.role == "zombie" for t in h.tasks):
        return "zombie"
    return "kernel"


@dataclass
class _State:
    """What one scrape reports, copied under the service's lock so that every family agrees."""

    now: float
    alive: Counter[str]
    created: dict[str, int]
    destroyed: dict[str, int]
    by_comm: dict[tuple[str, str], int]
    missed_creations: int
    missed_destroys: int
    stats: Stats  # the tracker's own (its counters only grow)
    entries: list[Entry]
    complete: bool
    buckets: dict[str, list[int]]
    sums: dict[str, float]
    born: dict[tuple[str, int], int]
    holder_scan: float
    last_scan: float
    health_ok: bool
    attached: int
    bound: float | None


class NstrackCollector(Collector):
    """Builds every family from the replica at each scrape (after ``Service.catch_up``), in parts:
    namespaces, orphans, lifetimes, the tracker's own health, and the opt-in per-namespace series."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        st = self._state()
        yield from _namespace_families(st)
        yield from _orphan_families(st)
        yield _lifetime_family(st)
        yield from _tracker_families(st, self.service)
        if self.service.config.per_namespace_metrics:
            yield from _per_namespace_families(st, self.service.config.per_namespace_limit)

    def _state(self) -> _State:
        svc = self.service
        now = time.time()
        svc.catch_up()
        with svc.lock:
            replica = svc.tracker.replica
            c = replica.counters
            stats = svc.tracker.stats
            lifetimes = svc.lifetimes
            return _State(
                now=now,
                alive=Counter(ns.type for ns in replica.alive.values()),
                created=dict(c.created),
                destroyed=dict(c.destroyed),
                by_comm=dict(c.by_comm),
                missed_creations=c.missed_creations,
                missed_destroys=c.missed_destroys,
                stats=stats,  # (read after the lock, as always: counters only grow)
                entries=list(svc.entries),
                complete=svc.entries_complete,
                buckets={t: list(b) for t, b in lifetimes.buckets.items()},
                sums=dict(lifetimes.sums),
                born={(ns.type, ns.inum): ns.born_ns for ns in replica.alive.values()},
                holder_scan=svc.holder_scan_seconds,
                last_scan=stats.last_scan.seconds if stats.last_scan else 0.0,
                health_ok=svc.health()[0],
                attached=len(stats.attached),
                bound=svc.tracker.free_latency_bound,
            )


def _namespace_families(st: _State) -> Iterator[Metric]:
    """Live namespaces, and those seen created and destroyed (by type, and created by command)."""
    g = GaugeMetricFamily("nstrack_namespaces", "Live namespaces, by type.", labels=["ns_type"])
    for t in TYPE_NAMES:
        g.add_metric([t], st.alive.get(t, 0))
    yield g
    cr = CounterMetricFamily("nstrack_namespaces_created", "Namespaces seen being created (or found new "
                             "by a rescan) since nstrack started.", labels=["ns_type"])
    de = CounterMetricFamily("nstrack_namespaces_destroyed", "Namespaces seen destroyed since nstrack "
                             "started.", labels=["ns_type"])
    for t in TYPE_NAMES:
        cr.add_metric([t], st.created.get(t, 0))
        de.add_metric([t], st.destroyed.get(t, 0))
    yield cr
    yield de
    bc = CounterMetricFamily("nstrack_namespaces_created_by_comm", "Namespaces seen being created, by type "
                             "and the creating process's command (at most 50 commands; the rest count "
                             "as '(other)'). For the dashboard's top creators.", labels=["ns_type", "comm"])
    for (t, comm), n in sorted(st.by_comm.items()):
        bc.add_metric([t, comm], n)
    yield bc


def _orphan_families(st: _State) -> Iterator[Metric]:
    """Orphaned namespaces by type and holder, and the oldest orphan's age per type."""
    orphans: Counter[tuple[str, str]] = Counter()
    oldest: dict[str, float] = {}
    for e in st.entries:
        if not e.orphaned:
            continue
        orphans[(e.type, held_by(e))] += 1
        b = st.born.get((e.type, e.inum))
        if b is not None:
            age = st.now - wall_time(b)
            oldest[e.type] = max(oldest.get(e.type, 0.0), age)
    o = GaugeMetricFamily("nstrack_orphaned_namespaces", "Live namespaces with no process inside, by "
                          "type and by what holds them.", labels=["ns_type", "held_by"])
    for t in TYPE_NAMES:
        for hb in HELD_BY:
            o.add_metric([t, hb], orphans.get((t, hb), 0))
    yield o
    a = GaugeMetricFamily("nstrack_oldest_orphan_age_seconds", "Age of the oldest orphaned namespace "
                          "(since created, or first seen), by type; 0 when there is none.",
                          labels=["ns_type"])
    for t in TYPE_NAMES:
        a.add_metric([t], round(oldest.get(t, 0.0), 3))
    yield a


def _lifetime_family(st: _State) -> Metric:
    from ..service import LIFETIME_BUCKETS

    h = HistogramMetricFamily("nstrack_namespace_lifetime_seconds", "Lifetime of destroyed namespaces "
                              "that nstrack saw being created.", labels=["ns_type"])
    for t in TYPE_NAMES:
        counts_t = st.buckets.get(t, [0] * len(LIFETIME_BUCKETS))
        h.add_metric([t], [(str(le) if le != float("inf") else "+Inf", n)
                           for le, n in zip(LIFETIME_BUCKETS, counts_t)], st.sums.get(t, 0.0))
    return h


def _tracker_families(st: _State, svc: Service) -> Iterator[Metric]:
    """The exporter's own health: events, losses, rescans, scans, mode, build."""
    stats = st.stats
    lost = CounterMetricFamily("nstrack_events_lost", "Ring-buffer records the kernel side could not "
                               "deliver (each loss triggers a rescan).")
    lost.add_metric([], stats.lost_events)
    yield lost
    ev = CounterMetricFamily("nstrack_events", "Lifecycle events received from the kernel.")
    ev.add_metric([], stats.events)
    yield ev
    br = CounterMetricFamily("nstrack_short_lived_namespaces", "Namespaces created and destroyed between "
                             "two rescans (tracepoint mode) or within a second (event modes): counted as "
                             "created and destroyed, kept as tombstones, never listed as alive.")
    br.add_metric([], stats.brief)
    yield br
    rs = CounterMetricFamily("nstrack_rescans", "Rescans of the kernel's namespaces.", labels=["reason"])
    rs.add_metric(["interval"], stats.rescans - stats.rescans_for_loss)
    rs.add_metric(["lost_events"], stats.rescans_for_loss)
    yield rs
    missed = CounterMetricFamily("nstrack_missed_changes", "Creations and frees that only a rescan "
                                 "found (no event).", labels=["kind"])
    missed.add_metric(["created"], st.missed_creations)
    missed.add_metric(["destroyed"], st.missed_destroys)
    yield missed
    sd = GaugeMetricFamily("nstrack_scan_duration_seconds", "Duration of the last scan.", labels=["scan"])
    sd.add_metric(["namespaces"], st.last_scan)
    sd.add_metric(["holders"], st.holder_scan)
    yield sd
    comp = GaugeMetricFamily("nstrack_scan_complete", "1 when the last holder scan saw every namespace.")
    comp.add_metric([], 1 if st.complete else 0)
    yield comp
    up = GaugeMetricFamily("nstrack_tracking_up", "1 while tracking is live (as /healthz).")
    up.add_metric([], 1 if st.health_ok else 0)
    yield up
    progs = GaugeMetricFamily("nstrack_programs_attached", "BPF programs attached for tracking.")
    progs.add_metric([], st.attached)
    yield progs
    fl = GaugeMetricFamily("nstrack_free_latency_bound_seconds", "How late a free can be reported "
                           "(rescan interval) in this mode; 0 when frees are seen as they happen.")
    fl.add_metric([], st.bound or 0.0)
    yield fl
    mode = GaugeMetricFamily("nstrack_tracking_mode_info", "The tracking mode in use (value 1).",
                             labels=["mode"])
    for m in MODES:
        mode.add_metric([m], 1 if m == svc.mode else 0)
    yield mode
    info = InfoMetricFamily("nstrack_build", "nstrack build and host information.")
    info.add_metric([], {"version": __version__, "kernel": svc.findings.kernel, "libbpf": svc.findings.libbpf})
    yield info
    started = GaugeMetricFamily("nstrack_start_time_seconds", "Unix time nstrack started.")
    started.add_metric([], svc.started_at)
    yield started


def _per_namespace_families(st: _State, limit: int) -> Iterator[Metric]:
    """One series per live namespace, capped at ``limit`` (opt-in: per_namespace_metrics)."""
    per = GaugeMetricFamily("nstrack_namespace_info", "One series per live namespace (capped).",
                            labels=["ns_type", "inum", "orphaned", "held_by"])
    for e in st.entries[:limit]:
        per.add_metric([e.type, str(e.inum), "true" if e.orphaned else "false",
                        held_by(e) if e.orphaned else ""], 1)
    yield per
    cap = GaugeMetricFamily("nstrack_namespace_info_truncated", "1 when per-namespace series were "
                            "capped at per_namespace_limit.")
    cap.add_metric([], 1 if len(st.entries) > limit else 0)
    yield cap
