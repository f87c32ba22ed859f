"""The live tracker: loads ``bpf/events.bpf.c`` for the chosen mode and keeps a Replica current.

Start-up order (so nothing created or freed meanwhile is missed or counted twice): attach the event
programs, apply whatever they already reported, scan, reconcile the replica with the scan, then
consume events as they come. Lost ring-buffer records are counted (in BPF) and trigger a rescan.

Modes:
- ``fentry``/``kprobe``: every create and free as it happens; rescans only heal (every 60 s, and at
  once after lost events). Types without hooks on this kernel fall back to tracepoints + rescans.
- ``tracepoint``: creations from fork/clone/unshare tracepoints; frees found by rescans every
  ``rescan_seconds`` (the bound on free latency).
- ``procfs``: no BPF; /proc is polled every ``rescan_seconds``; incomplete (see ``procscan``).
"""

from __future__ import annotations

import logging
import select
import time
from array import array
from dataclasses import dataclass, field
from typing import Self

from ..model import mode as modes
from ..model.nstypes import TYPE_NAMES
from ..model.records import (
    EVENT_ROW,
    TASK_SOURCES,
    EventBatch,
    NSRecord,
    Row,
    check_rows,
    events_of_rows,
)
from ..model.replica import Change, Replica
from . import hooks
from .bpf_names import EVENTS
from .bpfsys import parse_ring_rows
from .deferral import ByDrain, Deferral, UntilScan
from .libbpf import BPFObject, RingBuffer
from .objects import bpf_object
from .pairing import YOUNG_MAX, BPFPairing
from .probe import Findings
from .scanner import Scan, Scanner, procfs_scan

log = logging.getLogger(__name__)
P, M, G = EVENTS.prog, EVENTS.maps, EVENTS.glob  # the event object's programs, maps and globals

HEAL_SECONDS = 60.0  # rescan interval in the event modes, where rescans only heal
# Events are consumed at most this often: a burst is taken in one batch instead of one wake-up per
# record (on 2 cores per-record wake-ups cost a namespace-churning workload ~20% of its rate).
BATCH_SECONDS = 0.05
# With defer_events: events are drained this often (where BPF does not pair: PAIR_DRAIN_SECONDS), and in
# tracepoint mode a rescan comes early once this many creations wait (bounds memory: 80 bytes each).
DEFER_BATCH_SECONDS = 0.2
# Where BPF pairs (serve in the event modes) the rings are drained this often, and at once when BPF wakes
# the reader: it does so for each record written while a ring is a quarter full (WAKE_FRACTION; bpf's
# ring_wakeup). Each drain has a fixed cost: in the VMs under churn, drains every 0.2 s were a third of
# the reader's time (6.12: 8.2 -> 5.3 us of virtual time per event with drains every second).
PAIR_DRAIN_SECONDS = 1.0
WAKE_FRACTION = 4
DEFER_MAX = 200_000
# (BPF pairing's settings, HOLD_SECONDS among them, are in pairing.py)


@dataclass
class Stats:
    events: int = 0
    lost_events: int = 0
    lost_scan: int = 0
    rescans: int = 0
    rescans_for_loss: int = 0
    brief: int = 0  # deferred creations that had died by the next rescan (Replica.settle)
    skipped_reconciles: int = 0  # rescans whose answer was identical to the last one, nothing applied since
    last_scan: Scan | None = None
    last_scan_wall: float = 0.0
    bad_records: int = 0
    other_inum_frees: int = 0  # proc_free_inum for inums of no live namespace (proc entries)
    attached: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """Which programs to load and attach for a decision (pure given the findings)."""

    mode: str
    attach: list[tuple[str, str | None]]  # (program, kprobe target or None)
    event_types: dict[str, set[str]]  # type -> accepted event sources ("any" or TASK_SOURCES)
    rescan_types: set[str]  # types whose frees only rescans find


def plan_for(findings: Findings) -> Plan:
    d = findings.decision
    attach: list[tuple[str, str | None]] = []
    event_types: dict[str, set[str]] = {}
    rescan_types: set[str] = set()
    fallback = sorted(t for t, m in d.per_type.items() if m == "tracepoint")
    if d.mode in ("fentry", "kprobe"):
        found = findings.hooks_btf if d.mode == "fentry" else findings.hooks_kallsyms
        generic = all(h["create"] == hooks.GENERIC_CREATE for h in found.values())
        if generic:
            attach += [(P.tree_add, None), (P.tree_remove, None)] if d.mode == "fentry" else [
                (P.kp_tree_add, None), (P.kp_tree_remove, None)]
        else:
            for t, h in found.items():
                if d.per_type[t] != d.mode:
                    continue
                c, x = h["create"], h["destroy"]
                assert c and x
                if d.mode == "fentry":
                    attach += [(f"create_{c}", None), (f"destroy_{x}", None)]
                else:
                    entry = [(P.kp_create_entry, c)] if c == "create_user_ns" else []  # its kretprobe needs the cred
                    attach += entry + [(f"kp_create_{c}", None), (f"kp_destroy_{x}", None)]
            attach = list(dict.fromkeys(attach))  # one proc_free_inum hook serves every type
        for t in d.per_type:
            if d.per_type[t] == d.mode:
                event_types[t] = {"any"}
    if d.mode == "tracepoint" or fallback:
        attach.append((P.tp_fork, None))
        if findings.probes["tracepoint"].ok:
            attach += [(P.tp_unshare_enter, None), (P.tp_unshare_exit, None)]
        for t in fallback if d.mode != "tracepoint" else d.per_type:
            event_types[t] = set(TASK_SOURCES)
            rescan_types.add(t)
    if d.mode == "procfs":
        rescan_types = set(d.per_type)
    return Plan(d.mode, attach, event_types, rescan_types)


def settle_after_start() -> None:
    """For the long-running trackers (serve, watch), once started.

    - Every event allocates a few small objects, and with CPython's default thresholds the cyclic
      collector ran ~60 times a second under namespace churn, each time walking the whole replica
      (~4 us per event on the 6.18 host): start-up objects are frozen out of collection, and young
      collections wait for 20000 allocations.
    - libbpf parses the kernel's BTF (megabytes) while loading and frees it after: malloc_trim gives
      that heap back to the system (12 MB of resident memory on the 6.18 host).
    """
    import ctypes
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except AttributeError:  # not glibc
        pass


class Tracker:
    def __init__(
        self,
        findings: Findings,
        rescan_seconds: float | None = None,
        ringbuf_bytes: int = 1 << 20,
        defer_events: bool = False,
    ) -> None:
        """``defer_events`` (serve): events are kept as raw ring records and applied in batches, and a
        namespace that lived and died within a batch is only counted (and kept as a tombstone record),
        never entered as alive: under namespace churn almost every namespace lives for microseconds,
        and building each one's entry cost a churning workload ~8% of its rate on 2 cores.
        - Where rescans are complete (6.18+ namespace lists) and find the frees anyway (tracepoint mode),
          creations wait for the next rescan (or ``catch_up``): it enters the namespaces it finds alive
          (Replica.settle). The replica's view of creations then lags by at most ``rescan_seconds``, as
          its view of frees does in this mode.
        - In the event modes BPF holds each creation (map ``young``) until its free, counts the two (per
          type, lifetime and creator: ``BPFPairing.take_counts``) and reports them as one ``brief_rb`` record,
          kept as a tombstone (Replica.settle_brief); creations still held ``HOLD_SECONDS`` after they
          happened are taken back and applied (``BPFPairing.sweep``). Events that reach the ring anyway (``young``
          full) are applied per drain (``PAIR_DRAIN_SECONDS``), a creation and its free within
          ``HOLD_SECONDS`` only counted (pair_events, Replica.settle_pairs). Creations reach the replica
          at most ``HOLD_SECONDS`` plus a slot, a sweep's gap and a drain late (``BPFPairing.sweep``).
        Events are counted as they arrive. ``watch`` applies each event at once and does not defer."""
        self.findings = findings
        self.plan = plan_for(findings)
        self.mode = self.plan.mode
        event_mode = self.mode in ("fentry", "kprobe") and not self.plan.rescan_types
        default = HEAL_SECONDS if event_mode else modes.DEFAULT_RESCAN_SECONDS
        self.rescan_seconds = rescan_seconds if rescan_seconds is not None else default
        self.ringbuf_bytes = ringbuf_bytes
        self.replica = Replica()
        self.stats = Stats()
        self._obj: BPFObject | None = None
        self._events: RingBuffer | None = None
        self.scanner: Scanner | None = None
        self._next_rescan = 0.0
        self._lost_seen = 0
        self._pending: list[Change] = []
        # with creations deferred the replica moves at rescans only: drain less often
        self.batch_seconds = DEFER_BATCH_SECONDS if defer_events else BATCH_SECONDS
        self._last_drain = 0.0
        # (scan result, types judged, replica version) after the last reconcile: an identical answer
        # from the kernel with nothing applied since needs no reconcile
        self._reconciled: tuple[list[NSRecord], set[str], int] | None = None
        self.defer_events = defer_events
        # once started, with defer_events: the records that may wait, and until when (deferral.py)
        self.deferral: Deferral | None = None
        # proc_free_inum is hooked (before 6.18): frees may come as bare inode numbers
        self.inum_frees = any(prog.endswith(hooks.INUM_FREE) for prog, _ in self.plan.attach)
        # serve in the event modes: BPF holds each creation in `young` until its free, and reports the
        # two as one brief_rb record; Python takes back what is still held HOLD_SECONDS later (pairing.py)
        pairs = defer_events and event_mode and all("any" in a for a in self.plan.event_types.values())
        self.pairing: BPFPairing | None = BPFPairing(self) if pairs else None

    # ------------------------------------------------------------------ lifecycle

    @property
    def pairs_in_bpf(self) -> bool:
        """Creations are held in BPF until their free, and the two reported as one record (serve in the
        event modes)."""
        return self.pairing is not None

    @property
    def free_latency_bound(self) -> float | None:
        """Seconds within which a free is reported, when frees come from rescans; None when immediate."""
        return self.rescan_seconds if self.plan.rescan_types else None

    def start(self) -> list[Change]:
        """Load, attach, scan; returns the start-up changes (the initial replica)."""
        if self.mode != "procfs":
            self._load()
            self.scanner = Scanner(quick=True)  # rescans read only the walk's digest while unchanged
        changes = self.drain()
        changes += self.rescan(startup=True)
        changes += self.drain()
        if self.defer_events and self.scanner is not None:
            self._choose_defer(self.scanner.has_lists)
        return changes

    def _choose_defer(self, has_lists: bool) -> None:
        """With ``defer_events``, once started: what may wait, and until when (``deferral``)."""
        if has_lists and set(self.plan.rescan_types) == set(TYPE_NAMES):
            self.deferral = UntilScan.for_types(self, set(self.plan.rescan_types))
        elif not self.plan.rescan_types and all("any" in a for a in self.plan.event_types.values()):
            self.deferral = ByDrain.every_event(self)  # every type by its create and free hooks

    def _load(self) -> None:
        obj = BPFObject.open(bpf_object(EVENTS.OBJECT))
        try:
            obj.only(*dict.fromkeys(p for p, _ in self.plan.attach))
            obj.map(M.events).max_entries = self.ringbuf_bytes
            pairing = self.pairing
            obj.map(M.brief_rb).max_entries = self.ringbuf_bytes if pairing else 4096
            obj.map(M.young).max_entries = YOUNG_MAX if pairing else 1
            if not pairing:
                obj.map(M.brief_comms).max_entries = 1  # (counts of what BPF pairs: serve's event modes)
            else:
                obj.set_globals(**{G.pair_frees: 1, G.wake_bytes: self.ringbuf_bytes // WAKE_FRACTION})
            obj.load()
            self._events = obj.ring_buffer(M.events)  # read with read_spans()
            if pairing:
                pairing.attach(obj, self._events, obj.ring_buffer(M.brief_rb), obj.map(M.young), obj.map(M.brief_comms))
            for prog, target in self.plan.attach:
                p = obj.program(prog)
                p.attach_kprobe(target) if target else p.attach()
                self.stats.attached.append(f"{prog}:{target}" if target else f"{prog} ({p.section})")
        except BaseException:
            obj.close()
            raise
        self._obj = obj

    def close(self) -> None:
        if self.scanner is not None:
            self.scanner.close()
            self.scanner = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None
        if self.pairing is not None:
            self.pairing.close()
        self._events = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ events

    def _take_span(self, span: bytes, stride: int) -> None:
        """One span of ring records and its uniform stride (``RingBuffer.read_spans``): kept
        (``defer_events``) if it holds only events that may wait, otherwise applied now, after whatever waits."""
        deferral = self.deferral
        if deferral is not None:
            if stride == EventBatch.STRIDE and deferral.keep(span, array("I", span), len(span) // stride):
                return
            if deferral.spans:
                deferral.apply(self._pending)
        _, rows, other = parse_ring_rows(span, EVENT_ROW)
        self.stats.bad_records += other
        self._apply_rows(rows, self._pending)

    def _apply_rows(self, rows: list[Row], changes: list[Change]) -> None:
        """Apply a batch of event records (EVENT tuples), appending what changed to ``changes``."""
        rows, bad = check_rows(rows)
        stats = self.stats
        stats.bad_records += bad
        replica, accept = self.replica, self.plan.event_types
        created, destroyed = replica.created, replica.destroyed
        for ev in events_of_rows(rows):
            type_ = ev.type
            if not type_:  # an inode number freed: only interesting if a live namespace had it
                if replica.find_alive_inum(ev.inum) is None:
                    stats.other_inum_frees += 1
                    continue
            else:
                accepted = accept.get(type_)
                if accepted is not None and ev.source not in accepted and "any" not in accepted:
                    continue  # this type is tracked by another hook set; avoid double reports
            stats.events += 1
            if ev.kind == "created":
                created(ev, changes)
            else:
                destroyed(ev, changes)

    @property
    def deferred(self) -> int:
        """Creation events waiting (``defer_events``): for the next rescan, or held for their free
        (in Python, or in BPF's ``young``)."""
        return (self.deferral.count if self.deferral is not None else 0) + (
            self.pairing.held() if self.pairing is not None else 0)

    @property
    def behind(self) -> bool:
        """Whether the replica may lag what BPF has reported: creations waiting, or where BPF pairs,
        records or counts not yet taken (drains come every ``PAIR_DRAIN_SECONDS`` there). Reads
        memory mapped from the kernel only: cheap enough before every scrape."""
        if self.deferred:
            return True
        if self.pairing is None or self._events is None:
            return False
        return self.pairing.behind(self._events)

    def catch_up(self) -> list[Change]:
        """Apply everything reported so far, waiting creations included (a rescan if any wait)."""
        changes = self.drain()
        if self.deferral is not None and self.deferral.spans:
            self.deferral.catch_up(changes)
        if self.pairing is not None and self.pairing.young is not None:
            self.pairing.catch_up(changes)
        return changes

    def drain(self) -> list[Change]:
        """Apply every event already in the ring buffer."""
        self._pending = []
        self._last_drain = time.monotonic()
        if self._events is not None:
            for span, stride in self._events.read_spans():
                self._take_span(span, stride)
            if self.deferral is not None:
                self.deferral.end_drain(self._pending)
            if self.pairing is not None and self.pairing.briefs is not None:
                self.pairing.drain(self._pending)
        out, self._pending = self._pending, []
        return out

    def wait(self, timeout: float) -> None:
        """Block until events are waiting, a rescan is due, or ``timeout``; consumes nothing.

        Returns no sooner than ``batch_seconds`` after the last drain (unless a rescan is due first),
        so that events arriving in a burst are taken together. Where BPF pairs: ``PAIR_DRAIN_SECONDS``
        after the last drain, or when BPF wakes the reader (a ring a quarter full).
        """
        now = time.monotonic()
        deadline = now + max(0.0, min(timeout, self._next_rescan - now))
        if self._events is None:
            time.sleep(deadline - now)
            return
        if self.pairing is not None and self.pairing.epoll is not None:
            # BPF holds creations and pairs quietly: look this often, or when woken
            self.pairing.wait(min(deadline, self._last_drain + PAIR_DRAIN_SECONDS) - now)
            return
        if select.select([self._events.fd], [], [], deadline - now)[0]:
            hold = min(deadline, self._last_drain + self.batch_seconds) - time.monotonic()
            if hold > 0:
                time.sleep(hold)

    def poll(self, timeout: float = 0.5) -> list[Change]:
        """Wait up to ``timeout`` seconds for events; rescan when due or after losses."""
        self.wait(timeout)
        changes = self.drain()
        lost = self._read_global(G.lost_events)
        if lost > self._lost_seen:
            self.stats.lost_events += lost - self._lost_seen
            self._lost_seen = lost
            self.stats.rescans_for_loss += 1
            log.warning("ring buffer full: %d events lost so far; rescanning", self.stats.lost_events)
            changes += self.drain()
            changes += self.rescan(heal=True)
        elif time.monotonic() >= self._next_rescan or (
                self.deferral is not None and self.deferral.count >= DEFER_MAX):  # (young: YOUNG_MAX)
            changes += self.rescan()
        return changes

    def _read_global(self, name: str) -> int:
        if self._obj is None:
            return 0
        return self._obj.read_global(name)

    def program_stats(self) -> dict[str, tuple[int, int]]:
        """Runs and nanoseconds so far of each loaded event program (kernel.bpf_stats_enabled: the benchmark)."""
        if self._obj is None:
            return {}
        out = {}
        for prog, _ in self.plan.attach:
            stats = self._obj.program(prog).run_stats()
            if stats is not None:
                out[prog] = stats
        return out

    # ------------------------------------------------------------------ scans

    def scan(self, holders: bool = False, tasks: bool = True, quick: bool = False) -> Scan:
        """One scan of every namespace this mode can enumerate (does not touch the replica)."""
        if self.scanner is None:
            return procfs_scan()
        s = self.scanner.scan(holders=holders, tasks=tasks, quick=quick)
        self.stats.lost_scan = self.scanner.lost_total
        return s

    def rescan(self, startup: bool = False, heal: bool = False) -> list[Change]:
        """Reconcile the replica with a scan.

        A complete scan (6.18+ lists) may declare namespaces dead. On older kernels the scan finds
        namespaces through what holds them (tasks, nsfs fds, sockets, bind mounts, and owner/parent
        links): that holder scan is taken as the truth when frees can be learnt no other way, i.e. for
        the types tracked by rescans (tracepoint mode, per-type fallback) and when ``heal``ing after
        lost events. It can drop a namespace that only kernel-internal references keep alive; it
        reappears when something holds it. Otherwise an incomplete scan only adds what it finds.
        """
        has_lists = self.scanner is not None and self.scanner.has_lists
        judge = set(TYPE_NAMES) if heal else set(self.plan.rescan_types)
        holders = bool(judge) and not has_lists and self.scanner is not None
        # with lists a rescan needs no task records, and an unchanged digest no namespace records
        s = self.scan(holders=holders, tasks=False, quick=True)
        self.stats.rescans += 0 if startup else 1
        self.stats.last_scan = s
        self.stats.last_scan_wall = time.time()
        self._next_rescan = time.monotonic() + self.rescan_seconds
        if s.complete:
            types: set[str] = set(TYPE_NAMES)
        elif holders and s.holders_scanned:
            types = judge
            s.namespaces = s.namespaces + self._owners_of(s.namespaces)
        else:
            types = set()
        settled: list[Change] = []
        if self.deferral is not None and self.deferral.spans:
            self.stats.brief += self.deferral.on_rescan(s, settled)
        last = self._reconciled
        if (last is not None and last[0] is s.namespaces and last[1] == types
                and last[2] == self.replica.version and not self.replica.deferred):
            self.stats.skipped_reconciles += 1
            return settled
        changes = settled + self.replica.reconcile(s.namespaces, s.start_ns, types=types, startup=startup)
        self._reconciled = (s.namespaces, types, self.replica.version)
        return changes

    def _owners_of(self, found: list[NSRecord]) -> list[NSRecord]:
        """Alive owners and parents (user, pid) of the namespaces found, as the replica knows them."""
        have = {(r.type, r.inum) for r in found}
        extra: list[NSRecord] = []
        stack = list(found)
        while stack:
            r = stack.pop()
            known = self.replica.find_alive(r.type, r.inum, r.ns_id)
            if known is None:
                continue
            links = [("user", known.owner_inum)]
            if known.type == "pid":
                links.append(("pid", known.parent_inum))
            for t, inum in links:
                if inum and (t, inum) not in have:
                    up = self.replica.find_alive(t, inum)
                    if up is not None:
                        have.add((t, inum))
                        rec = NSRecord(t, inum, up.ns_id, up.owner_inum, up.parent_inum, None)
                        extra.append(rec)
                        stack.append(rec)
        return extra
