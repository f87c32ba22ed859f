"""`make bench`: lifecycle overhead and snapshot speed, as ratios against anchors in the same run.

`python -m tests.bench [lifecycle] [snapshot] [serve] [calibrate]` (default: all).

Each round runs the workload without and with a live tracker (order alternating between rounds), so
both see the same machine noise; the result is the ratio of median rates. Written to
build/bench/lifecycle.json with the kernel and mode.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from nstrack.kernel.probe import investigate
from nstrack.kernel.tracker import Tracker, settle_after_start

from .stats import paired_ratio, ratio_interval

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("NSTRACK_BENCH_OUT") or ROOT / "build" / "bench")  # the VM matrix points it at its share
WORKLOAD = str(Path(__file__).with_name("workload.py"))
ROUNDS = int(os.environ.get("NSTRACK_BENCH_ROUNDS", "7"))
SECONDS = float(os.environ.get("NSTRACK_BENCH_SECONDS", "4.0"))  # a run spans rescans (2 s)
# Before every run, with or without a tracker: the kernel frees net namespaces from a work queue, and
# what one run leaves to free must not slow the next (under QEMU's TCG this took seconds).
PAUSE = float(os.environ.get("NSTRACK_BENCH_PAUSE", "0.5"))


def run_workload(kind: str) -> float:
    return run_workload_cpu(kind)[0]


def run_workload_cpu(kind: str) -> tuple[float, float]:
    """Operations per second, and per CPU second of the workload's own process."""
    r = subprocess.run([sys.executable, WORKLOAD, kind, str(SECONDS)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"workload {kind} exited {r.returncode}: {r.stderr.strip()[-500:]}")
    ops, took, cpu = r.stdout.split()
    return int(ops) / float(took), int(ops) / max(float(cpu), 1e-9)


class Live:
    """A tracker polling in a background thread, as `nstrack serve` (``defer``: creations wait for the
    next rescan where they may) or `nstrack watch` (every event applied at once) runs it."""

    def __init__(self, mode: str | None = None, defer: bool = True, read: bool = True) -> None:
        # unread: the programs attached and nobody reading until the run is over (a ring large enough
        # for all of it): what the BPF side alone costs the workload
        self.tracker = Tracker(investigate(requested_mode=mode), defer_events=defer,
                               ringbuf_bytes=(1 << 20) if read else (1 << 26))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True) if read else None

    def _loop(self) -> None:
        while not self.stop.is_set():  # as serve's loop (Service._run)
            self.tracker.wait(2.0)
            self.tracker.poll(0)

    def __enter__(self) -> Tracker:
        self.tracker.start()
        settle_after_start()  # as serve and watch do once started
        if self.thread is not None:
            self.thread.start()
        return self.tracker

    def _join(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()

    def settle(self) -> None:
        """Stop polling and apply whatever is still waiting."""
        self._join()
        self.tracker.catch_up()

    def __exit__(self, *exc: object) -> None:
        self._join()
        self.tracker.close()


def measure(kind: str, mode: str | None = None, config: str = "serve") -> dict[str, Any]:
    without: list[float] = []
    with_: list[float] = []
    # operations per CPU second of the workload's process: what nstrack costs the workload's own CPU
    # (its BPF programs run there; its reader, on a machine with a CPU to spare, does not)
    cpu_without: list[float] = []
    cpu_with: list[float] = []
    cpu_per_1000: list[float] = []
    tracker_per_1000: list[float] = []  # the tracker's own threads only (not the workload's spawning)
    lost = events = paired = 0
    run_workload(kind)  # warm-up, not counted (caches; under QEMU's TCG, code translation)
    for i in range(ROUNDS):
        order = (False, True) if i % 2 == 0 else (True, False)
        for tracked in order:
            if not tracked:
                time.sleep(PAUSE)
                rate, per_cpu = run_workload_cpu(kind)
                without.append(rate)
                cpu_without.append(per_cpu)
                continue
            live = Live(mode, defer=config != "watch", read=config != "unread")
            with live as tracker:
                time.sleep(PAUSE)
                e0, c0, b0 = tracker.stats.events, time.process_time(), tracker.stats.brief
                clock = time.pthread_getcpuclockid(live.thread.ident) if live.thread and live.thread.ident else None
                t0 = time.clock_gettime(clock) if clock is not None else 0.0
                rate, per_cpu = run_workload_cpu(kind)
                cpu_with.append(per_cpu)
                time.sleep(0.3)  # let the poller drain what the workload produced
                t1 = time.clock_gettime(clock) if clock is not None else 0.0
                s0 = time.thread_time()
                live.settle()  # and apply what waits, so that the CPU time covers every event
                ev, cpu = tracker.stats.events - e0, time.process_time() - c0
                tracker_cpu = (t1 - t0) + (time.thread_time() - s0)
                lost += tracker.stats.lost_events
                events += ev
                paired += tracker.stats.brief - b0
                with_.append(rate)
                if ev:
                    cpu_per_1000.append(cpu / ev * 1000)
                    tracker_per_1000.append(tracker_cpu / ev * 1000)
    ratio = statistics.median(with_) / statistics.median(without)
    lo, hi = ratio_interval(with_, without)
    cpu_ratio = statistics.median(cpu_with) / statistics.median(cpu_without)
    cpu_lo, cpu_hi = ratio_interval(cpu_with, cpu_without)
    if config == "unread":
        cpu_per_1000 = tracker_per_1000 = []  # reading everything at the end is not what a tracker costs
    return {
        "workload": kind,
        "config": config,
        "rounds": ROUNDS,
        "seconds_per_run": SECONDS,
        "rate_without_median": round(statistics.median(without), 1),
        "rate_with_median": round(statistics.median(with_), 1),
        "ratio": round(ratio, 4),
        # bootstrap 90% interval of the ratio: a target inside it is neither met nor missed by this run
        "ratio_interval_90": [round(lo, 4), round(hi, 4)],
        "ratio_paired_median": round(paired_ratio(with_, without), 4),
        # the same for operations per CPU second of the workload's process (see cpu_without above)
        "workload_cpu_ratio": round(cpu_ratio, 4),
        "workload_cpu_ratio_interval_90": [round(cpu_lo, 4), round(cpu_hi, 4)],
        "events": events,
        "lost_events": lost,
        # creations counted with their free, never entered as alive (serve, event modes: deferral.ByDrain)
        "creations_paired": paired,
        "nstrack_cpu_seconds_per_1000_events": round(statistics.median(cpu_per_1000), 4) if cpu_per_1000 else None,
        # the same for the polling thread and the final catch-up alone: without the benchmark's process
        # (it forks the workload, which costs a large parent most under TCG)
        "tracker_thread_cpu_seconds_per_1000_events":
            round(statistics.median(tracker_per_1000), 4) if tracker_per_1000 else None,
        "rates_without": [round(x, 1) for x in without],
        "rates_with": [round(x, 1) for x in with_],
    }


def profile_programs(kind: str, mode: str | None) -> dict[str, Any]:
    """One run with kernel.bpf_stats_enabled: time spent inside each BPF program per workload operation
    (the programs alone: not the trampolines or kprobe traps that call them, and not the rings' reader).
    Its own run, after the ratio rounds, since counting adds two clock reads to every program run."""
    path = Path("/proc/sys/kernel/bpf_stats_enabled")
    try:
        before = path.read_text().strip()
        path.write_text("1")
    except OSError as e:  # not root, or a kernel before 5.1: the ratios stand without the profile
        return {"error": f"cannot enable {path}: {e.strerror}"}
    try:
        live = Live(mode)
        with live as tracker:
            time.sleep(PAUSE)
            assert live.thread is not None
            reader = time.pthread_getcpuclockid(live.thread.ident)  # type: ignore[arg-type]
            s0, c0, w0 = tracker.program_stats(), time.clock_gettime(reader), time.monotonic()
            rate = run_workload(kind)
            s1, c1, w1 = tracker.program_stats(), time.clock_gettime(reader), time.monotonic()
    finally:
        path.write_text(before)
    ops = rate * SECONDS
    programs = {}
    for name, (runs, ns) in s1.items():
        r, t = runs - s0.get(name, (0, 0))[0], ns - s0.get(name, (0, 0))[1]
        if r:
            programs[name] = {"runs_per_op": round(r / ops, 3), "ns_per_run": round(t / r)}
    ns_per_op = sum(p["runs_per_op"] * p["ns_per_run"] for p in programs.values())
    return {"programs": programs, "ns_per_op": round(ns_per_op),
            # of the time an operation took in this run (itself slowed by the counting)
            "share_of_op": round(ns_per_op * rate / 1e9, 4),
            # the reader's thread CPU over the run, of its wall time: on one CPU (make bench-vm) what it takes
            # from the workload, whatever the workload does
            "reader_cpu_share": round((c1 - c0) / (w1 - w0), 5)}


def verdict(interval: list[float], target: float, lost: int) -> str:
    """met (the whole interval at or above the target, nothing lost), missed (all below, or events lost),
    or undecided (the target inside the interval: more rounds, or a quieter machine, would tell)."""
    lo, hi = interval
    return "missed" if hi < target or lost else "met" if lo >= target else "undecided"


def clock_kind() -> str:
    """What the guest's clock counts (make bench-vm boots its VMs with QEMU's -icount: see docs/performance.md)."""
    shift = os.environ.get("NSTRACK_VM_ICOUNT")
    if shift is None:
        return "time"
    return (f"instructions: QEMU -icount shift={shift}, {2 ** int(shift)} ns per instruction executed by any "
            f"vCPU (they take turns on one host thread); nstrack's own threads count against the workload as "
            f"on one CPU")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    which = sys.argv[1:] or ["lifecycle", "snapshot", "serve", "calibrate"]
    if "serve" in which:
        from . import serve

        res = serve.main()
        res["kernel"] = os.uname().release
        (OUT / "serve.json").write_text(json.dumps(res, indent=2) + "\n")
        print(f"written: {OUT / 'serve.json'}")
    if "snapshot" in which:
        from . import snapshot

        snap = snapshot.main()
        snap["kernel"] = os.uname().release
        (OUT / "snapshot.json").write_text(json.dumps(snap, indent=2) + "\n")
        print(f"written: {OUT / 'snapshot.json'}")
    if "calibrate" in which:
        from . import calibrate

        cal = {"kernel": os.uname().release, **calibrate.main(run_workload, SECONDS)}
        (OUT / "calibrate.json").write_text(json.dumps(cal, indent=2) + "\n")
        print(f"calibrate: python loop {cal['python_loop_seconds']} s, pipeline {cal['pipeline_us_per_event']} us/event "
              f"(paired in BPF {cal['brief_pipeline_us_per_event']}), "
              f"churn {cal['churn_ops_per_second']:.0f} ops/s, fork {cal['fork_ops_per_second']:.0f} ops/s")
        print(f"written: {OUT / 'calibrate.json'}")
    if "lifecycle" not in which:
        return 0
    findings = investigate()
    # NSTRACK_BENCH_MODES=fentry,kprobe,tracepoint measures each mode in turn (the VM matrix does)
    modes = [m for m in os.environ.get("NSTRACK_BENCH_MODES", "").split(",") if m] or [findings.decision.mode]
    # serve's tracker, watch's (they differ only where serve defers creations: tracepoint mode on 6.18+)
    configs = [c for c in os.environ.get("NSTRACK_BENCH_CONFIGS", "serve,watch").split(",") if c]
    # NSTRACK_BENCH_WORKLOADS=fork: one workload, e.g. with more rounds where its interval was wide
    workloads = [w for w in os.environ.get("NSTRACK_BENCH_WORKLOADS", "churn,fork").split(",") if w]
    if unknown := set(workloads) - {"churn", "fork"}:
        print(f"NSTRACK_BENCH_WORKLOADS: unknown workload(s) {sorted(unknown)}; valid: churn, fork", file=sys.stderr)
        return 2
    result = {
        "kernel": os.uname().release,
        "mode": findings.decision.mode,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "targets": {"churn": 0.97, "fork": 0.98},
        "clock": clock_kind(),
        "configs": {
            "serve": "as `nstrack serve` runs the tracker: where rescans are complete (6.18+) and find the frees "
                     "(tracepoint mode), creations wait for the next rescan; in the event modes each drain's "
                     "events are applied together and a creation paired with its free within a second (a creation "
                     "waits for its free up to HOLD_SECONDS) is only counted",
            "watch": "as `nstrack watch` runs it: every event applied to the replica at once",
            "unread": "diagnostic, no target: the programs attached and the ring read only after the run (a "
                      "64 MiB ring): what the BPF side alone costs the workload",
        },
        "results": [{**measure(kind, mode, config), "mode": mode}
                    for mode in modes for kind in workloads for config in configs],
    }
    if os.environ.get("NSTRACK_BENCH_PROFILE", "1") == "1":
        # where the BPF side's time goes (the serve rows' mode), per program, and the reader's share of the
        # CPU: for the note, not a target (under fork: which programs run at all on a fork without new namespaces)
        for kind in workloads:
            result[f"bpf_programs_{kind}"] = {mode: profile_programs(kind, mode) for mode in modes
                                              if mode in ("fentry", "kprobe")}
    for r in result["results"]:
        r["target"] = result["targets"][r["workload"]]
        r["meets_target"] = r["ratio"] >= r["target"] and r["lost_events"] == 0 if r["config"] != "unread" else None
        # what this run can tell, from the rate and from the workload's CPU (verdict())
        r["verdict"] = None if r["config"] == "unread" else verdict(r["ratio_interval_90"], r["target"], r["lost_events"])
        r["workload_cpu_verdict"] = None if r["config"] == "unread" else verdict(
            r["workload_cpu_ratio_interval_90"], r["target"], r["lost_events"])
    (OUT / "lifecycle.json").write_text(json.dumps(result, indent=2) + "\n")
    for r in result["results"]:
        lo, hi = r["ratio_interval_90"]
        clo, chi = r["workload_cpu_ratio_interval_90"]
        print(f"{r['mode']:<10} {r['config']:<6} {r['workload']:<6} ratio {r['ratio']:.3f} [90%: {lo:.3f}-{hi:.3f}] "
              f"(target {r['target']}: {r['verdict'] or 'no target'}), per workload CPU second "
              f"{r['workload_cpu_ratio']:.3f} [{clo:.3f}-{chi:.3f}] ({r['workload_cpu_verdict'] or 'no target'}), "
              f"{r['rate_with_median']:.0f} vs {r['rate_without_median']:.0f} ops/s, "
              f"lost {r['lost_events']}, nstrack CPU {r['nstrack_cpu_seconds_per_1000_events']} s/1000 events "
              f"(tracker thread {r['tracker_thread_cpu_seconds_per_1000_events']})")
    for kind in workloads:
        for mode, prof in result.get(f"bpf_programs_{kind}", {}).items():
            if "error" in prof:
                print(f"{mode:<10} BPF programs under {kind}: not profiled ({prof['error']})")
                continue
            print(f"{mode:<10} BPF programs under {kind}: {prof['ns_per_op']} ns per operation "
                  f"({prof['share_of_op'] * 100:.2f}% of its time): " +
                  (", ".join(f"{n} {p['runs_per_op']}x{p['ns_per_run']} ns" for n, p in prof["programs"].items())
                   or "none ran") + f"; the reader's thread {prof['reader_cpu_share'] * 100:.3f}% of the run's wall time")
    print(f"written: {OUT / 'lifecycle.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
