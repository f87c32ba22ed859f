"""Create and free every namespace type for real and check what the tracker saw.

For each of the eight types, made by unshare(2) and by clone3(2), held in turn by a process, an nsfs
fd and a bind mount: exactly one `created` with the right type, inum and creator; nothing destroyed
while a holder remains; exactly one `destroyed` after the last holder goes, within the mode's bound.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from nstrack.kernel.pairing import HOLD_SECONDS
from nstrack.kernel.probe import investigate
from nstrack.kernel.tracker import Tracker
from nstrack.model.nstypes import TYPE_NAMES

from .scenario import ASYNC_FREE_GRACE, Made, Recorder, bind_mount, make_namespace, nsfs_fd

RESCAN = 0.5
# Modes to run the create/free matrix in: the best one by default; the VM matrix sets
# NSTRACK_TEST_MODES=fentry,kprobe,tracepoint. A listed mode the kernel cannot run fails the test.
MODES = [m for m in os.environ.get("NSTRACK_TEST_MODES", "").split(",") if m] or [None]


# ... each as `watch` runs the tracker (every event applied at once); the first mode and tracepoint mode
# also as `serve` does (event modes: each drain's events together, a creation and its free in one batch
# only counted; tracepoint mode where the kernel has namespace lists: creations wait for the next rescan)
# (tracepoint mode defers only where the kernel has namespace lists; elsewhere it would repeat the plain run)


def _has_namespace_lists() -> bool:
    """The 6.18+ namespace lists, by their member names in the kernel's BTF (6.18 ns_list_node, later
    ns_tree_node.ns_list_entry)."""
    try:
        with open("/sys/kernel/btf/vmlinux", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"\0ns_list_node\0" in data or b"\0ns_list_entry\0" in data


# Deferred (serve's pipelines) in the first mode and, where the kernel has namespace lists, tracepoint mode
# (UntilScan). Not again in kprobe mode: BPF pairs creations with frees in the same functions whichever
# program type calls them, plain kprobe mode proves the kprobes, and the pairing tests below (counts,
# wake-ups, bursts) run in kprobe mode too.
SETUPS = [(m, False) for m in MODES] + [(m, True) for m in dict.fromkeys([MODES[0], *(
    ["tracepoint"] if "tracepoint" in MODES and _has_namespace_lists() else [])])]


@pytest.fixture(scope="module", params=SETUPS, ids=[f"{m or 'best'}{'-deferred' if d else ''}" for m, d in SETUPS])
def rec(request: pytest.FixtureRequest) -> Iterator[Recorder]:
    mode, defer = request.param
    findings = investigate(requested_mode=mode)
    assert mode is None or findings.decision.mode == mode
    tracker = Tracker(findings, rescan_seconds=RESCAN, defer_events=defer)
    tracker.start()
    try:
        yield Recorder(tracker)
    finally:
        tracker.close()


def free_deadline(rec: Recorder) -> float:
    return (rec.tracker.free_latency_bound or 0.0) + ASYNC_FREE_GRACE


def check_created(rec: Recorder, mark: int, made: Made) -> object:
    hits = rec.wait_for(
        lambda c: c.kind == "created" and c.ns.type == made.type and c.ns.inum == made.inum
        and c in rec.since(mark),
        timeout=5 + RESCAN + HOLD_SECONDS,  # (serve in the event modes holds creations for their frees)
    )
    assert len(hits) == 1, f"{made.type} {made.how}: expected one created for inum {made.inum}, got {hits}"
    ns = hits[0].ns
    assert hits[0].via in ("event", "rescan")
    # tracepoint and event modes see the creator; only a rescan-found namespace has none
    if hits[0].via == "event":
        assert ns.creator is not None
        assert ns.creator.tgid == made.creator_tgid, (ns.creator, made)
    assert ns.alive
    return ns


def check_destroyed(rec: Recorder, mark: int, ns: object) -> float:
    t0 = time.monotonic()
    hits = rec.wait_for(lambda c: c.kind == "destroyed" and c.ns is ns, timeout=free_deadline(rec))
    assert len(hits) == 1, f"no destroyed for {ns} within {free_deadline(rec)} s"
    again = [c for c in rec.since(mark) if c.kind == "destroyed" and c.ns is ns]
    assert len(again) == 1
    return time.monotonic() - t0


@pytest.mark.parametrize("how", ["unshare", "clone"])
@pytest.mark.parametrize("holder", ["process", "fd", "mount"])
@pytest.mark.parametrize("type_", TYPE_NAMES)
def test_create_hold_free(rec: Recorder, type_: str, how: str, holder: str) -> None:
    mark = rec.mark()
    with make_namespace(how, type_) as made:
        ns = check_created(rec, mark, made)
        if holder == "process":
            made.end_process()
        elif holder == "fd":
            with nsfs_fd(made):
                made.end_process()
                rec.pump(RESCAN * 2 + 0.5)
                assert ns.alive, f"{ns.name} reported destroyed while an nsfs fd holds it"  # type: ignore[attr-defined]
        else:
            with bind_mount(made):
                made.end_process()
                rec.pump(RESCAN * 2 + 0.5)
                assert ns.alive, f"{ns.name} reported destroyed while a bind mount holds it"  # type: ignore[attr-defined]
    check_destroyed(rec, mark, ns)


NSENTER_OPTION = {"net": "--net", "mnt": "--mount", "uts": "--uts", "ipc": "--ipc", "pid": "--pid",
                  "user": "--user", "cgroup": "--cgroup", "time": "--time"}


def test_setns_into_existing_namespaces_creates_none(rec: Recorder) -> None:
    """setns(2) makes no namespace, yet the kernel runs create_new_namespaces for it (with flags 0), where
    the event modes learn creations before 6.18: entering each type's namespace reports nothing created."""
    with ExitStack() as stack:
        made = [stack.enter_context(make_namespace("unshare", t)) for t in TYPE_NAMES]
        mark = rec.mark()
        pids = set()
        for m in made:
            # a fresh user namespace maps no ids: keep the credentials rather than setgid(0) in it
            keep = ["--preserve-credentials"] if m.type == "user" else []
            proc = subprocess.Popen(["nsenter", *keep, f"{NSENTER_OPTION[m.type]}={m.path}", "true"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            pids.add(proc.pid)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, f"nsenter into {m.type} ({m.path}): {err.strip()}"
        rec.pump(2.5)  # serve holds a creation up to 1 s in BPF before it reaches the replica
        by_them = [c for c in rec.since(mark) if c.kind == "created" and c.ns.creator is not None
                   and c.ns.creator.tgid in pids]
        assert by_them == [], f"setns reported as creations: {by_them}"
        for m in made:  # still one live namespace by that inode number (earlier ones may be tombstones)
            live = [ns for ns in rec.tracker.replica.lookup(m.type, m.inum) if ns.alive]
            assert len(live) == 1, (m, rec.tracker.replica.lookup(m.type, m.inum))


def test_inum_reuse_keeps_namespaces_apart(rec: Recorder) -> None:
    """Create and free net namespaces until an inum repeats; the replica holds two distinct entries."""
    seen: dict[int, object] = {}
    for _ in range(40):
        mark = rec.mark()
        with make_namespace("unshare", "net") as made:
            ns = check_created(rec, mark, made)
            made.end_process()
        check_destroyed(rec, mark, ns)
        if made.inum in seen:
            first = seen[made.inum]
            assert first is not ns
            assert first.key != ns.key  # type: ignore[attr-defined]
            assert first.generation != ns.generation or first.ns_id != ns.ns_id  # type: ignore[attr-defined]
            found = rec.tracker.replica.lookup("net", made.inum)
            assert first in found and ns in found
            return
        seen[made.inum] = ns
    pytest.fail("no net inum was reused in 40 create/free rounds")


@pytest.mark.parametrize("mode", [None, *(["kprobe"] if "kprobe" in MODES else [])], ids=lambda m: m or "best")
def test_deferred_creations_of_short_lived_namespaces(mode: str | None) -> None:
    """As serve runs it: 300 uts namespaces made and freed by one process between two rescans are each
    counted as created and destroyed, and each can be looked up with its creator after it died. Where
    the kernel has namespace lists and the mode is tracepoint they wait for the rescan as raw records
    (Replica.settle); elsewhere they are applied at once: the answers must be the same."""
    findings = investigate(requested_mode=mode)
    with Tracker(findings, rescan_seconds=3600, ringbuf_bytes=1 << 20, defer_events=True) as tracker:
        tracker.start()
        deferring = tracker.mode == "tracepoint" and tracker.scanner is not None and tracker.scanner.has_lists
        created, destroyed = tracker.replica.counters.created["uts"], tracker.replica.counters.destroyed["uts"]
        by_comm = dict(tracker.replica.counters.by_comm)
        tracker.replica.keep_brief_lives = True  # as serve, for its lifetime histogram
        churn = (
            "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "for _ in range(300):\n    assert libc.unshare(0x04000000) == 0\n"
            "    print(os.stat('/proc/self/ns/uts').st_ino)\n"
        )
        child = subprocess.Popen([sys.executable, "-c", churn], stdout=subprocess.PIPE, text=True)
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        inums = [int(x) for x in out.split()]
        time.sleep(0.3)
        tracker.poll(0.1)
        assert tracker.deferred == (300 if deferring else 0)
        tracker.catch_up()
        if deferring:
            assert tracker.stats.brief == 300, "none of them was alive at the rescan"
        elif tracker.pairs_in_bpf:  # serve in the event modes; uts namespaces are freed at their last put
            assert tracker.stats.brief == 300, "each creation held in BPF until its free, paired there"
            # and counted there: their lifetimes (each well under a second: the first bucket) included
            lives = [(b, total) for t, b, total in tracker.replica.brief_life_counts if t == "uts"]
            assert [sum(col) for col in zip(*(b for b, _ in lives))] == [300] + [0] * 8, lives
            assert 0 < sum(total for _, total in lives) < 300 * 10**9
            # one key per command and type: the command zero-padded (not as the stack had it past the NUL)
            from nstrack.model.records import COMM_KEY

            assert tracker.pairing is not None and tracker.pairing.comms is not None
            keys, _ = tracker.pairing.comms.lookup_all()
            comms = [c for c, _t, _r in COMM_KEY.iter_unpack(keys)]
            assert comms and all(not c.partition(b"\0")[2].strip(b"\0") for c in comms), comms
        else:  # frees from events (fentry, kprobe), or a rescan of what holds namespaces
            tracker.rescan(heal=True)
        assert tracker.stats.lost_events == 0
        assert tracker.replica.counters.created["uts"] - created == 300
        assert tracker.replica.counters.destroyed["uts"] - destroyed == 300
        assert tracker.deferred == 0
        for inum in (inums[0], inums[150], inums[-1]):
            seen = [n for n in tracker.replica.lookup("uts", inum) if n.creator and n.creator.tgid == child.pid]
            assert seen and not any(n.alive for n in seen), (inum, seen)
            assert all(n.destroyed_ns and n.created_ns and n.destroyed_ns >= n.created_ns for n in seen)
        comm = seen[0].creator.comm  # (counted per creator command: by BPF where it pairs them)
        assert tracker.replica.counters.by_comm[("uts", comm)] - by_comm.get(("uts", comm), 0) == 300


def _make_uts(n: int, per_10ms: int | None = None) -> None:
    """``n`` uts namespaces made and freed by one short-lived process, as fast as it can, or at most
    ``per_10ms`` every 10 ms."""
    pace = f"\n    if i % {per_10ms} == {per_10ms} - 1:\n        time.sleep(0.01)" if per_10ms else ""
    code = (
        "import ctypes, time\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"for i in range({n}):\n    assert libc.unshare(0x04000000) == 0{pace}\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


PAIRING_MODES = [m for m in MODES if m in ("fentry", "kprobe")] or [None]
RING = 1 << 18  # 2730 pairs of 96 bytes; BPF wakes the reader from a quarter (682) on


def _pairing_tracker(mode: str | None) -> Tracker:
    tracker = Tracker(investigate(requested_mode=mode), rescan_seconds=3600, ringbuf_bytes=RING, defer_events=True)
    try:
        tracker.start()
    except BaseException:
        tracker.close()
        raise
    if not tracker.pairs_in_bpf:
        tracker.close()
        pytest.skip(f"BPF pairs only in the event modes (fentry, kprobe); this kernel runs {tracker.mode} mode, "
                    "where every record wakes the reader")
    return tracker


@pytest.mark.parametrize("mode", PAIRING_MODES, ids=lambda m: m or "best")
def test_bpf_wakes_serve_when_a_ring_is_a_quarter_full(mode: str | None) -> None:
    """Where BPF pairs, serve drains its rings once a second and BPF submits without wake-ups, except
    while a ring is a quarter full: 300 pairs wake nobody (the reader's epoll reports nothing), 500 more
    do (it reports the ring of pairs)."""
    import select

    with _pairing_tracker(mode) as tracker:
        assert tracker.pairing is not None
        epoll, briefs = tracker.pairing.epoll, tracker.pairing.briefs
        assert epoll is not None and briefs is not None
        tracker.poll(0)
        epoll.poll(0)  # (whatever start-up left reported)
        _make_uts(300)
        time.sleep(0.5)
        assert 0 < briefs.waiting() < RING // 4
        assert epoll.poll(0) == [], "below a quarter of the ring: no wake-up"
        _make_uts(500)
        assert briefs.waiting() >= RING // 4
        woken = epoll.poll(10.0)  # (the wake-up is an irq_work: microseconds)
        assert (briefs.fd, select.EPOLLIN) in [(fd, ev & select.EPOLLIN) for fd, ev in woken], woken


@pytest.mark.parametrize("mode", PAIRING_MODES, ids=lambda m: m or "best")
def test_serve_reads_a_burst_before_the_ring_fills(mode: str | None) -> None:
    """10 000 uts namespaces made and freed at up to 5000 a second (more than the 256 KiB ring holds
    between two drains a second apart), read as serve's loop reads them: BPF's wake-ups get them read
    in time (the reader has the three quarters of the ring left after a wake-up: 0.4 s at that pace),
    none lost, every one counted. Without the wake-ups the ring would overflow."""
    import threading

    with _pairing_tracker(mode) as tracker:
        tracker.catch_up()
        created = tracker.replica.counters.created["uts"]
        stop = threading.Event()
        assert tracker.pairing is not None
        briefs = tracker.pairing.briefs
        assert briefs is not None
        drains: list[tuple[float, int]] = []  # (when, bytes the ring of pairs held): to explain a loss

        def serve_loop() -> None:  # as Service._run
            while not stop.is_set():
                tracker.wait(2.0)
                drains.append((time.monotonic(), briefs.waiting()))
                tracker.poll(0)

        reader = threading.Thread(target=serve_loop)
        reader.start()
        t0 = time.monotonic()
        try:
            _make_uts(10_000, per_10ms=50)
        finally:
            took = time.monotonic() - t0
            stop.set()
            reader.join()
        tracker.catch_up()
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(drains)]
        why = (f"{10_000 / took:.0f} pairs a second for {took:.1f} s; {len(drains)} drains, longest gap "
               f"{max(gaps, default=0):.2f} s, fullest ring {max((w for _, w in drains), default=0) / RING:.0%}")
        assert tracker.stats.lost_events == 0, why
        assert tracker.replica.counters.created["uts"] - created == 10_000, why


@pytest.mark.parametrize("defer", [False, True], ids=["watch", "serve"])
def test_lost_events_are_counted_and_healed(defer: bool) -> None:
    """A one-page ring buffer, 200 uts namespaces made and freed while nobody reads: the loss is counted,
    and the heal leaves exactly the uts namespaces the kernel has (none of the flood's survive). As serve
    runs it in the event modes, BPF pairs them: its ring of pairs is the one that overflows."""
    findings = investigate()
    with Tracker(findings, rescan_seconds=3600, ringbuf_bytes=4096, defer_events=defer) as tracker:
        tracker.start()
        flood = (
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "for _ in range(200):\n    assert libc.unshare(0x04000000) == 0\n"
        )
        subprocess.run([sys.executable, "-c", flood], check=True)
        time.sleep(1.0)  # uts namespaces are freed synchronously at exit
        tracker.poll(0.1)
        assert tracker.stats.lost_events > 0, "a 4 KiB ring buffer should have overflowed"
        assert tracker.stats.rescans_for_loss >= 1
        scan = tracker.scan(holders=True)
        kernel = {(r.type, r.inum) for r in scan.namespaces}
        replica = {(n.type, n.inum) for n in tracker.replica.alive.values()}
        assert kernel <= replica, f"alive in the kernel, missing from the replica: {sorted(kernel - replica)[:5]}"
        uts = lambda s: {x for x in s if x[0] == "uts"}
        assert uts(replica) == uts(kernel), "the flood's freed uts namespaces must not survive the heal"
        if scan.complete:  # 6.18+: the in-kernel lists are the whole truth
            assert replica == kernel


def test_watch_json_and_type_filter() -> None:
    """The CLI end to end: `nstrack watch --json -t uts` prints our uts namespace, and nothing else."""
    import json
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "nstrack", "watch", "--json", "-t", "uts", "--rescan", "0.5", "--seconds", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None and proc.stdout is not None
        banner = proc.stderr.readline()
        assert "mode" in banner, banner
        with make_namespace("unshare", "uts") as made, make_namespace("unshare", "ipc"):
            time.sleep(1.0)
        # until our namespace's free is printed (watch prints a line at a time), not for a fixed time: a
        # loaded VM took longer than 6 s; then stopped as Ctrl-C stops it
        for line in proc.stdout:
            lines.append(line)
            if json.loads(line)["event"] == "destroyed" and json.loads(line)["inum"] == made.inum:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        lines += out.splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    events = [json.loads(line) for line in lines]
    assert events, err
    assert {e["type"] for e in events} == {"uts"}
    created = [e for e in events if e["event"] == "created" and e["inum"] == made.inum]
    assert len(created) == 1
    e = created[0]
    assert e["name"] == f"uts:[{made.inum}]"
    assert e["creator"]["pid"] == made.member_pid and e["creator"]["comm"]
    assert "time" in e and "ns_id" in e
    destroyed = [e for e in events if e["event"] == "destroyed" and e["inum"] == made.inum]
    assert len(destroyed) == 1


def test_watch_unknown_type_exits_2() -> None:
    r = subprocess.run([sys.executable, "-m", "nstrack", "watch", "-t", "nett"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "valid types: net, mnt, uts, ipc, pid, user, cgroup, time" in r.stderr
    assert os.path.exists("/proc/self/ns/net")
