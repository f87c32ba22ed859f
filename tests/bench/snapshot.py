"""Cold `nstrack ls --json` against lsns at ~1k, ~6k and ~20k namespaces (issue: snapshot).

Each level: a few thousand processes, each in new uts+ipc namespaces (`unshare --uts --ipc sleep`),
plus namespaces held only by nsfs fds of one process (which lsns 2.38 misses). Every tool runs cold
as a new process, interleaved, median of ROUNDS; peak RSS from wait4. `nstrack` runs with its scan
programs pinned by an untimed first run (its default); `nstrack-no-cache` pays for loading them. Also the scan inside a running
process. Everything started here is stopped here, also on failure.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .lsns import newest_lsns, system_lsns

ROUNDS = int(os.environ.get("NSTRACK_BENCH_ROUNDS", "5"))
LEVELS = [(400, 200), (3000, 0), (3000, 14000)]  # (processes, fd-held namespaces); ~6k as kernel-notes.md
HOLDER = r"""
import ctypes, os, sys, resource
n = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 256, n + 256))
libc = ctypes.CDLL(None, use_errno=True)
fds = []
for i in range(n):
    flag = 0x04000000 if i % 2 else 0x08000000
    assert libc.unshare(flag) == 0, ctypes.get_errno()
    fds.append(os.open("/proc/self/ns/" + ("uts" if i % 2 else "ipc"), os.O_RDONLY))
libc.unshare(0x04000000 | 0x08000000)  # leave the last ones so only the fds hold them
print("ready", flush=True)
sys.stdin.read()
"""


@contextmanager
def population(procs: int, fd_held: int) -> Iterator[None]:
    started: list[subprocess.Popen[bytes]] = []
    holder = None
    try:
        for _ in range(procs):
            started.append(subprocess.Popen(["unshare", "--uts", "--ipc", "sleep", "3600"],
                                            stdin=subprocess.DEVNULL))
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(fd_held)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        yield
    finally:
        for p in started:  # only processes this benchmark started
            p.kill()
        for p in started:
            p.wait()
        if holder is not None:
            holder.kill()
            holder.wait()


def timed(cmd: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB, from GNU time: the exec'd program only) and stdout of one cold run."""
    with tempfile.NamedTemporaryFile("r") as rss:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd], capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{cmd[-4:]} exited {p.returncode}: {p.stderr.strip()[-300:]}")
        return dt, int(rss.read().split()[-1]), p.stdout


def lsns_set(out: str) -> set[tuple[str, int]]:
    return {(n["type"], int(n["ns"])) for n in json.loads(out)["namespaces"]}


def measure_level(procs: int, fd_held: int, tools: dict[str, list[str]]) -> dict[str, Any]:
    from nstrack.kernel.scanner import Scanner
    from tests.privileged.serving import serve

    outputs: dict[str, str] = {}
    with population(procs, fd_held), serve("--holders-seconds", "10") as srv:
        # `ls --server`: a running serve answers (its holder scan at most 1 s old), no BPF load here
        tools = {**tools, "nstrack-via-serve": [*tools["nstrack"], "--server", srv.base]}
        times: dict[str, list[float]] = {k: [] for k in tools}
        rss: dict[str, list[int]] = {k: [] for k in tools}
        time.sleep(3)  # the serve has scanned this population
        timed(tools["nstrack"])  # untimed: pins the scan programs if no earlier run did (nstrack-no-cache: without)
        names = list(tools)
        for r in range(ROUNDS):
            for name in names if r % 2 == 0 else reversed(names):
                dt, peak, out = timed(tools[name])
                times[name].append(dt)
                rss[name].append(peak)
                outputs[name] = out
        scan_times = []
        with Scanner() as scanner:
            for _ in range(ROUNDS):
                s = scanner.scan(holders=True)
                scan_times.append(s.seconds)
            n_ns, n_tasks = len(s.namespaces), len(s.tasks)
    ours = lsns_set(outputs["nstrack"])
    result: dict[str, Any] = {
        "processes_started": procs, "fd_held_namespaces": fd_held,
        "namespaces": n_ns, "tasks": n_tasks,
        "scan_in_process_median_s": round(statistics.median(scan_times), 5),
        "tools": {},
    }
    base = statistics.median(times["nstrack"])
    for name in tools:
        med = statistics.median(times[name])
        listed = lsns_set(outputs[name])
        result["tools"][name] = {
            "median_s": round(med, 4),
            "runs_s": [round(x, 4) for x in times[name]],
            "peak_rss_kib": max(rss[name]),
            "listed": len(listed),
            "missed_by_it": len(ours - listed) if name != "nstrack" else 0,
            "it_lists_that_nstrack_does_not": len(listed - ours) if name != "nstrack" else 0,
            "speedup_of_nstrack": round(med / base, 2) if name != "nstrack" else 1.0,
        }
    return result


def baseline_command(checkout: str) -> list[str]:
    """A command that runs another checkout's nstrack as the installed one runs this one's (the same
    interpreter and start-up: a console script whose first path entry is that checkout)."""
    script = os.path.join(tempfile.gettempdir(), f"nstrack-baseline-{os.getpid()}")
    with open(script, "w") as f:
        f.write(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {checkout!r})\n"
                "from nstrack.cli import main\nsys.exit(main())\n")
    os.chmod(script, 0o755)
    return [script]


def _commit(checkout: str) -> str:
    p = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return p.stdout.strip() or "?"


def main() -> dict[str, Any]:
    # the installed command, as users run it (python -m adds runpy's ~4 ms)
    script = os.path.join(os.path.dirname(sys.executable), "nstrack")
    nstrack = [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "nstrack"]
    tools: dict[str, list[str]] = {
        "nstrack": [*nstrack, "ls", "--json", "-o", "NS,TYPE,NPROCS,PID,USER,COMMAND"],
        # a run that finds nothing pinned: loads the object (BTF parse, verification), as the first run does
        "nstrack-no-cache": [*nstrack, "ls", "--json", "--no-cache", "-o", "NS,TYPE,NPROCS,PID,USER,COMMAND"],
        "lsns-system": [*system_lsns(), "--json", "-o", "NS,TYPE,NPROCS,PID,USER,COMMAND"],
    }
    notes = []
    baseline = os.environ.get("NSTRACK_BENCH_BASELINE")  # another checkout (built): the same runs of its code
    if baseline:
        tools["nstrack-baseline"] = [*baseline_command(baseline), "ls", "--json", "-o", "NS,TYPE,NPROCS,PID,USER,COMMAND"]
        # this build pins elsewhere: each build removes the other builds' pins under its root
        os.environ.setdefault("NSTRACK_PIN_ROOT", "/sys/fs/bpf/nstrack-bench")
        notes.append(f"nstrack-baseline: {baseline} (commit {_commit(baseline)}); this build pins in "
                     f"{os.environ['NSTRACK_PIN_ROOT']}")
    try:
        cmd, version = newest_lsns()
        tools["lsns-sid"] = [*cmd, "--json", "-o", "NS,TYPE,NPROCS,PID,USER,COMMAND"]
        notes.append(f"lsns-sid: {version}")
    except Exception as exc:  # noqa: BLE001 - recorded in the result, the rest still runs
        notes.append(f"lsns from sid unavailable: {exc}")
    v = subprocess.run([*system_lsns(), "--version"], capture_output=True, text=True).stdout.strip()
    notes.append(f"lsns-system: {v}")
    from nstrack.kernel.scanner import PIN_ROOT

    roots = list(dict.fromkeys([os.environ.get("NSTRACK_PIN_ROOT") or PIN_ROOT, PIN_ROOT, "/sys/fs/bpf/nstrack"]))
    pinned_before = {root: os.path.exists(root) for root in roots}
    levels = []
    for procs, fd_held in LEVELS:
        print(f"snapshot bench: {procs} processes + {fd_held} fd-held namespaces ...", flush=True)
        levels.append(measure_level(procs, fd_held, tools))
        lv = levels[-1]
        line = ", ".join(f"{k} {t['median_s']:.3f}s (x{t['speedup_of_nstrack']}, lists {t['listed']})"
                         for k, t in lv["tools"].items())
        print(f"  {lv['namespaces']} namespaces, {lv['tasks']} tasks: {line}; "
              f"scan in process {lv['scan_in_process_median_s'] * 1000:.1f} ms", flush=True)
    from nstrack.kernel.scanner import _unpin

    for root, before in pinned_before.items():  # leave the host as found
        if not before and os.path.isdir(root):
            for name in os.listdir(root):
                _unpin(f"{root}/{name}")
            os.rmdir(root)
    if baseline:
        os.unlink(tools["nstrack-baseline"][0])
    return {"rounds": ROUNDS, "notes": notes, "levels": levels,
            "targets": {"speedup_at_6k": 5, "speedup_at_20k": 20}}
