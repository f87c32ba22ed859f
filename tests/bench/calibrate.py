"""How fast this machine runs Python, nstrack's event pipeline and the namespace workloads.

Not a target: a yardstick for reading ratios across machines. Under QEMU's TCG (the kernel matrix here,
no KVM) Python slows down far more than the kernel work of the workloads does, which inflates the share
of the CPUs a Python consumer takes; comparing this file from the host and from a guest says by how much.

The pipeline figure feeds synthetic churn records (creations whose frees come one drain later, as net
namespaces' often do) through a Tracker as serve runs it in the event modes, reading a fake ring: no BPF,
so it runs on any kernel. The brief pipeline is the same churn paired in BPF (serve in the event modes
pairs there; the ring pipeline remains for what reaches the ring).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

REPEATS = 3
DRAINS, PER_DRAIN = 300, 400  # 120 000 creations and as many frees


def python_loop() -> float:
    t = time.perf_counter()
    sum(i * i for i in range(2_000_000))
    return time.perf_counter() - t


def _drains_cpu(tracker: Any, ring: Any, records_of_drain: Callable[[int], list[bytes]]) -> float:
    """CPU seconds of DRAINS drains of ``tracker``, each reading what ``records_of_drain(d)`` puts on
    the fake ``ring``."""
    cpu = 0.0
    for d in range(DRAINS):
        ring.spans = [b"".join(records_of_drain(d))]
        c0 = time.process_time()
        tracker.drain()
        cpu += time.process_time() - c0
    return cpu


def pipeline_us_per_event() -> float:
    """CPU time per event of Tracker.drain() on synthetic churn, frees one drain after their creations."""
    from unittest import mock

    from nstrack.kernel import deferral as deferral_mod
    from tests.unit.test_settle import HEADER, NET, UTS, destroyed_raw, event_tracker, raw

    clock = [0]
    nid, pending = 10**6, []

    def records(d: int) -> list[bytes]:
        nonlocal nid
        clock[0] = d * 200_000_000
        recs = []
        for k in range(PER_DRAIN):
            nid += 1
            recs.append(HEADER + raw(clock[0] + k, nid, NET if k % 2 else UTS, 4026540000 + nid % 100_000))
            pending.append(nid)
        if d:
            for i in pending[:PER_DRAIN]:
                recs.append(HEADER + destroyed_raw(clock[0] + PER_DRAIN, i, NET, 4026540000 + i % 100_000))
            del pending[:PER_DRAIN]
        return recs

    with mock.patch.object(deferral_mod, "boot_ns", lambda: clock[0]):
        t, ring = event_tracker()
        cpu = _drains_cpu(t, ring, records)
        c0 = time.process_time()
        t.catch_up()
        cpu += time.process_time() - c0
        events = t.stats.events
        t.close()
    return cpu / events * 1e6


def brief_pipeline_us_per_event() -> float:
    """CPU time per event of Tracker.drain() on synthetic churn paired in BPF (brief_rb records, each a
    creation and its free), as serve takes it in the event modes since BPF pairs."""
    from tests.unit.test_settle import NET, UTS, FakeCommMap, FakeRing, FakeYoung, event_tracker, raw

    t, _ = event_tracker()
    briefs, young = FakeRing(), FakeYoung()
    t._obj = young
    assert t.pairing is not None
    t.pairing.briefs, t.pairing.young, t.pairing.obj = briefs, young, young
    t.pairing.comms = FakeCommMap(young)
    t.replica.keep_brief_lives = True  # as serve
    nid = 10**6

    def records(d: int) -> list[bytes]:  # (BPF's counting of each, as count_pair: not timed)
        nonlocal nid
        recs = []
        for k in range(PER_DRAIN):
            nid += 1
            made = raw(d * 200_000_000 + k, nid, NET if k % 2 else UTS, 4026540000 + nid % 100_000)
            recs.append(young.count_pair(made, d * 200_000_000 + k + 50_000))
        return recs

    cpu = _drains_cpu(t, briefs, records)
    events = t.stats.events
    t.close()
    return cpu / events * 1e6


def main(run_workload: Callable[[str], float], seconds: float) -> dict[str, Any]:
    runs: dict[str, list[float]] = {"python_loop_seconds": [], "pipeline_us_per_event": [],
                                    "brief_pipeline_us_per_event": [], "churn_ops_per_second": [],
                                    "fork_ops_per_second": []}
    for _ in range(REPEATS):  # interleaved
        runs["python_loop_seconds"].append(python_loop())
        runs["pipeline_us_per_event"].append(pipeline_us_per_event())
        runs["brief_pipeline_us_per_event"].append(brief_pipeline_us_per_event())
        runs["churn_ops_per_second"].append(run_workload("churn"))
        runs["fork_ops_per_second"].append(run_workload("fork"))
    out: dict[str, Any] = {k: round(statistics.median(v), 4) for k, v in runs.items()}
    out["runs"] = {k: [round(x, 4) for x in v] for k, v in runs.items()}
    out["seconds_per_workload_run"] = seconds
    return out
