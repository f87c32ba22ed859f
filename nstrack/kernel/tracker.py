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
import struct
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import sub
from typing import Self

from ..model import mode as modes
from ..model.nstypes import TYPE_NAMES
from ..model.records import (
    BRIEF_COMM,
    BRIEF_STATS,
    COMM_KEY,
    EV_CREATED,
    EV_DESTROYED,
    EV_INUM,
    EV_NS_ID,
    EV_SOURCE,
    EV_TS,
    EV_TYPE,
    EVENT,
    EVENT_ROW,
    LAYOUT_BRIEF_STATS,
    LAYOUT_NS_EVENT,
    ROW_INUM,
    ROW_KIND,
    ROW_NS_ID,
    ROW_SOURCE,
    ROW_TYPE,
    SOURCES,
    TASK_SOURCES,
    TYPE_OF_FLAG,
    BriefBatch,
    EventBatch,
    NSRecord,
    Row,
    boot_ns,
    check_rows,
    comm_text,
    events_of_rows,
)
from ..model.replica import Change, Replica, pair_events, pair_keys, pick
from . import hooks
from .bpf_names import EVENTS
from .bpfsys import parse_ring_rows, parse_ring_span
from .libbpf import BPFMap, BPFObject, RingBuffer
from .objects import bpf_object
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
# In the event modes a creation still without its free at the end of a drain is held back this long
# (by its kernel timestamp) for its free: net namespaces are freed from a work queue, often drains
# after their creation (under churn in the VMs: 40% later than 0.1 s on 5.10; on 6.1 a third of them
# 1.9-2.9 s later). Clients do not wait for it: scrapes and requests take back whatever waits first.
HOLD_SECONDS = 3.0
SRC_FREE, SRC_TREE_REMOVE = (next(k for k, v in SOURCES.items() if v == name) for name in ("free", "tree_remove"))
# serve in the event modes pairs in BPF: creations wait in the `young` map for their free (this many at
# most; more go to the ring, where Python pairs them). 88 bytes of kernel memory each, preallocated.
YOUNG_MAX = 16384
YOUNG_KEY = struct.Struct("<I")  # `young`'s key: an inode number
# BPF's counts of what it paired (brief_stats, brief_comms: a listing, a system call) are taken at most this
# often (at drains: each drain once a second, fewer in a burst that wakes the reader), and whenever serve
# catches up (before scrapes and requests)
COUNTS_SECONDS = 0.9
TYPE_INDEX = {flag: TYPE_NAMES.index(name) for flag, name in TYPE_OF_FLAG.items()}  # as BPF's type_index()
# BPF counts the creations it holds in `young`, and those it pairs, per slot of their kernel time (bits
# YOUNG_SLOT_SHIFT.. of it, modulo YOUNG_SLOTS; as bpf/events.bpf.c): all a slot holds are due once its
# latest period ended HOLD_SECONDS ago (64 slots of 0.27 s: a slot's periods are 17 s apart, far more than
# HOLD_SECONDS and a sweep's gap).
YOUNG_SLOTS = 64
YOUNG_SLOT_SHIFT = 28
# Listings of `young` come at least this far apart (see Tracker._sweep).
SWEEP_GAP_SECONDS = 0.5


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
          type, lifetime and creator: ``_take_brief_counts``) and reports them as one ``brief_rb`` record,
          kept as a tombstone (Replica.settle_brief); creations still held ``HOLD_SECONDS`` after they
          happened are taken back and applied (``_sweep``). Events that reach the ring anyway (``young``
          full) are applied per drain (``PAIR_DRAIN_SECONDS``), a creation and its free within
          ``HOLD_SECONDS`` only counted (pair_events, Replica.settle_pairs). Creations reach the replica
          at most ``HOLD_SECONDS`` plus a slot, a sweep's gap and a drain late (``_sweep``).
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
        # once started: "scan" (creations wait for the next rescan), "events" (each drain's events are
        # applied together, pairs of a creation and its free only counted), or None; and the
        # (kind, type flag, source) of the events that may wait
        self._defer: str | None = None
        self._defer_ok: set[tuple[int, int, int]] = set()
        self._deferred: list[bytes] = []  # ring spans of creation events waiting for the next rescan
        self._deferred_count = 0
        # proc_free_inum is hooked (before 6.18): frees may come as bare inode numbers
        self._inum_frees = any(prog.endswith(hooks.INUM_FREE) for prog, _ in self.plan.attach)
        # serve in the event modes: BPF holds each creation in `young` until its free, and reports the
        # two as one brief_rb record; Python takes back what is still held HOLD_SECONDS later (_sweep)
        self._pairing = defer_events and event_mode and all("any" in a for a in self.plan.event_types.values())
        self._briefs: RingBuffer | None = None
        self._young: BPFMap | None = None
        self._epoll: select.epoll | None = None  # (pairing) waits for BPF's wake-ups
        # BPF's counts of what it paired (brief_stats, brief_comms) as last taken, and what is to come off
        # them (namespaces the replica knew, applied as events: _uncount_brief)
        self._brief_comms: BPFMap | None = None
        self._brief_stats_last = bytes(BRIEF_STATS.size * len(TYPE_NAMES))
        self._brief_comms_last: dict[tuple[int, bytes], int] = {}
        self._uncount: Counter[tuple[object, ...]] = Counter()
        self._next_counts = 0.0  # (monotonic) when BPF's counts are taken next (_take_brief_counts)
        self._young_taken = [0] * YOUNG_SLOTS  # creations Python took back from `young`, by slot
        # (boot_ns) no creation held in `young` can be due before this: _sweep lists the map only then
        self._next_sweep = 0
        self._brief_ok = {(EV_CREATED, f) for f in TYPE_OF_FLAG}

    # ------------------------------------------------------------------ lifecycle

    @property
    def pairs_in_bpf(self) -> bool:
        """Creations are held in BPF until their free, and the two reported as one record (serve in the
        event modes)."""
        return self._pairing

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
        """With ``defer_events``, once started: what may wait, and until when (``_defer``)."""
        if has_lists and set(self.plan.rescan_types) == set(TYPE_NAMES):
            flags = {flag for flag, t in TYPE_OF_FLAG.items() if t in self.plan.rescan_types}
            self._defer = "scan"
            self._defer_ok = {(EV_CREATED, f, src) for f in flags for src, name in SOURCES.items()
                              if name in TASK_SOURCES}
        elif not self.plan.rescan_types and all("any" in a for a in self.plan.event_types.values()):
            self._defer = "events"  # every type by its create and free hooks
            self._defer_ok = {(kind, f, src) for kind in (EV_CREATED, EV_DESTROYED) for f in TYPE_OF_FLAG
                              for src in SOURCES} | {(EV_DESTROYED, 0, src) for src in SOURCES}

    def _load(self) -> None:
        obj = BPFObject.open(bpf_object(EVENTS.OBJECT))
        try:
            obj.only(*dict.fromkeys(p for p, _ in self.plan.attach))
            obj.map(M.events).max_entries = self.ringbuf_bytes
            obj.map(M.brief_rb).max_entries = self.ringbuf_bytes if self._pairing else 4096
            obj.map(M.young).max_entries = YOUNG_MAX if self._pairing else 1
            if not self._pairing:
                obj.map(M.brief_comms).max_entries = 1  # (counts of what BPF pairs: serve's event modes)
            if self._pairing:
                obj.set_globals(**{G.pair_frees: 1, G.wake_bytes: self.ringbuf_bytes // WAKE_FRACTION})
            obj.load()
            self._events = obj.ring_buffer(M.events)  # read with read_spans()
            if self._pairing:
                self._briefs, self._young = obj.ring_buffer(M.brief_rb), obj.map(M.young)
                self._brief_comms = obj.map(M.brief_comms)
                # edge-triggered: reports BPF's wake-ups (a ring a quarter full), not records waiting
                self._epoll = select.epoll()
                for ring in (self._events, self._briefs):
                    self._epoll.register(ring.fd, select.EPOLLIN | select.EPOLLET)
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
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        self._events = self._briefs = self._young = self._brief_comms = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ events

    def _take_span(self, span: bytes, stride: int) -> None:
        """One span of ring records and its uniform stride (``RingBuffer.read_spans``): kept
        (``defer_events``) if it holds only events that may wait, otherwise applied now, after whatever waits."""
        if self._defer is not None and stride == EventBatch.STRIDE:
            w32 = array("I", span)
            n = len(span) // EventBatch.STRIDE
            if self._defer == "events" and self._inum_frees and self._idle_frees(w32, n):
                return
            # (kind, type flag, source) of every record (the columns of EventBatch); with "scan", an ns_id
            if (set(zip(w32[ROW_KIND], w32[ROW_TYPE], w32[ROW_SOURCE])) <= self._defer_ok
                    and (self._defer == "events" or 0 not in array("Q", span)[ROW_NS_ID])):
                self._deferred.append(span)
                self._deferred_count += n
                if self._defer == "scan":
                    self.stats.events += n  # (with "events", counted when applied)
                return
        if self._deferred:
            self._undefer(self._pending)
        _, rows, other = parse_ring_rows(span, EVENT_ROW)
        self.stats.bad_records += other
        self._apply_rows(rows, self._pending)

    def _idle_frees(self, w32: array[int], n: int) -> bool:
        """Whether a span of ``n`` records (``w32``: its words) holds only inode numbers freed
        (proc_free_inum) that no live namespace has and no waiting creation: proc entries, and ipc
        namespaces already reported at their last put; then they are counted and dropped (as _undefer
        would, at a small part of its cost: under churn on kernels before 6.18 about one a namespace)."""
        flags, kinds = w32[ROW_TYPE], w32[ROW_KIND]
        if flags.count(0) != n or kinds.count(EV_DESTROYED) != n:
            return False
        inums = w32[ROW_INUM]
        if not self.replica.alive_inums().isdisjoint(inums):
            return False
        if self._deferred:
            waiting = array("I", b"".join(self._deferred))
            born = {i for k, i in zip(waiting[ROW_KIND], waiting[ROW_INUM]) if k == EV_CREATED}
            if not born.isdisjoint(inums):
                return False
        self.stats.other_inum_frees += n
        return True

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

    def _take_deferred(self) -> EventBatch:
        batch = EventBatch(b"".join(self._deferred))
        self._deferred, self._deferred_count = [], 0
        return batch

    def _undefer(self, changes: list[Change], hold: bool = False) -> None:
        """Apply what waits: with "scan", the creations as events, without a scan; with "events", the
        batch, pairs of a creation and its free only counted (Replica.settle_pairs).

        ``hold`` (the end of a drain, "events"): creations left without their free are held back for
        it, up to ``HOLD_SECONDS`` after they happened (their kernel timestamps), at the head of the
        next drain's batch. Net and ipc namespaces are freed from work queues, so under churn their
        frees often come drains after their creations, and entering each as alive to remove it moments
        later was most of nstrack's cost (measured in the VMs). Without ``hold`` all is applied."""
        batch = self._take_deferred()
        if self._defer != "events":
            for ev in events_of_rows(batch.rows()):
                self.replica.created(ev, changes)
            return
        keys = pair_keys(batch)
        created, destroyed = pair_events(batch, keys)
        paired = created
        ids, inums, kinds, knows = batch.ns_id, batch.inum, batch.kind, self.replica.knows
        if created and self.replica.knows_any(pick(ids, created), pick(inums, created)):
            # e.g. found by the start-up scan: applied as events
            mine = [k for k, i in enumerate(created) if not knows(ids[i] or None, inums[i])]
            created, destroyed = [created[k] for k in mine], [destroyed[k] for k in mine]
        self.replica.settle_pairs(batch, created, destroyed)
        self.stats.events += 2 * len(created)
        self.stats.brief += len(created)
        rest = set(range(len(batch))).difference(created, destroyed)
        if rest and self._inum_frees and 0 in batch.flag:
            # inode numbers freed (proc_free_inum) of no live namespace: proc entries, and ipc namespaces
            # already reported at their last put; dropped here rather than one by one in _apply_rows
            flags, alive = batch.flag, self.replica.alive_inums()
            frees = [i for i in rest if not flags[i] and kinds[i] == EV_DESTROYED]
            if frees:
                born = {inums[i] for i in rest if kinds[i] == EV_CREATED}
                idle = [i for i in frees if inums[i] not in alive and inums[i] not in born]
                self.stats.other_inum_frees += len(idle)
                rest.difference_update(idle)
        if hold and rest:
            # creations without their free, not yet due; of several with one key (an inode number
            # reused unseen; ns_ids are never reused) the latest: a later event about a held namespace
            # would have paired with it, so holding keeps the order in which events are applied
            alone = sorted(rest.intersection(compress(range(len(batch)), map(EV_CREATED.__eq__, kinds)))
                           .difference(paired))
            due = boot_ns() - int(HOLD_SECONDS * 1e9)
            made = pick(batch.ts, alone)
            keep = alone if not alone or min(made) > due else list(compress(alone, map(due.__lt__, made)))
            if keep:
                latest = keep if keys is ids else sorted(dict(zip(pick(keys, keep), keep)).values())
                stride, data = EventBatch.STRIDE, batch.data
                self._deferred = [b"".join([data[i * stride : (i + 1) * stride] for i in latest])]
                self._deferred_count = len(latest)
                rest.difference_update(latest)
        if rest:
            self._apply_rows(list(map(batch.row, sorted(rest))), changes)

    def _take_briefs(self, changes: list[Change]) -> None:
        """Namespaces BPF paired (``brief_rb``): counted and kept as tombstones (Replica.settle_brief);
        those the replica knows (a scan found them while their creation was held) applied as events."""
        assert self._briefs is not None
        parts: list[bytes] = []
        stride = BriefBatch.STRIDE
        for span, span_stride in self._briefs.read_spans():
            if span_stride == stride:
                parts.append(span)
            else:  # a record discarded (its creation taken back meanwhile) or of another size
                _, records = parse_ring_span(span)
                good = [r for r in records if len(r) == stride - 8]
                self.stats.bad_records += len(records) - len(good)
                parts += [bytes(8) + r for r in good]
        if not parts:
            return
        batch = BriefBatch(b"".join(parts))
        rows: Sequence[int] = range(len(batch))
        # (their types: BPF pairs only the eight it knows; a tombstone is decoded, and checked, when asked for)
        if batch.kind.count(EV_CREATED) != len(batch):
            good_rows = [i for i in rows if (batch.kind[i], batch.flag[i]) in self._brief_ok]
            self.stats.bad_records += len(rows) - len(good_rows)
            rows = good_rows
        # (by inode number first: a live entry with a record's ns_id has its inode number, and an ns_id
        # column is a copy more, of 64-bit words)
        if rows and not self.replica.alive_inums().isdisjoint(batch.inum):
            ids, inums, knows = batch.ns_id, batch.inum, self.replica.knows
            known = [i for i in rows if knows(ids[i] or None, inums[i])]
            if known:
                rows = sorted(set(rows).difference(known))
                events: list[Row] = []
                for i in known:
                    r = batch.row(i)
                    free = SRC_TREE_REMOVE if SOURCES.get(r[EV_SOURCE]) == "tree_add" else SRC_FREE
                    events += [r, LAYOUT_NS_EVENT.row(ts_ns=batch.end[i], ns_id=r[EV_NS_ID], kind=EV_DESTROYED,
                                                      ns_type=r[EV_TYPE], inum=r[EV_INUM], source=free)]
                    self._uncount_brief(batch, i)
                mark = len(changes)
                self._apply_rows(events, changes)
                # BPF has its lifetime (serve's histogram takes that): "paired", not "event"
                changes[mark:] = [c._replace(via="paired") if c.kind == "destroyed" else c for c in changes[mark:]]
        self.replica.settle_brief(batch, rows)
        self.stats.events += 2 * len(rows)
        self.stats.brief += len(rows)

    def _uncount_brief(self, batch: BriefBatch, i: int) -> None:
        """Record ``i`` is applied as events (and counted by them): what BPF counted of it is taken off
        its counts (``_take_brief_counts``), now or, if they already went to the replica, from the next."""
        t = TYPE_INDEX.get(batch.flag[i])
        if t is None:  # not a type BPF pairs (nor counts)
            return
        pending = self._uncount
        pending[("n", t)] += 1  # (its lifetime stays: its change says "paired", and serve leaves it to BPF's)
        if batch.tgid[i] and batch.counted[i] & BRIEF_COMM:
            pending[("comm", t, batch.comm(i))] += 1

    def _take_uncount(self, key: tuple[object, ...], available: int) -> int:
        pending = self._uncount
        k = min(pending.get(key, 0), available)
        if k:
            pending[key] -= k
            if not pending[key]:
                del pending[key]
        return k

    def _take_brief_counts(self, now: bool = False) -> None:
        """What BPF counted of the namespaces it paired (brief_stats, brief_comms) since it was last
        taken, into the replica (Replica.count_brief): once ``COUNTS_SECONDS`` have passed, or ``now``.
        Counts only grow: what ``_uncount_brief`` takes off comes off what BPF adds."""
        assert self._obj is not None and self._brief_comms is not None
        clock = time.monotonic()
        if not now and clock < self._next_counts:
            return
        self._next_counts = clock + COUNTS_SECONDS
        raw = self._obj.read_global_bytes(G.brief_stats)
        if raw == self._brief_stats_last:
            return
        delta = list(map(sub, array("Q", raw), array("Q", self._brief_stats_last)))
        self._brief_stats_last = raw
        uncount, width = self._take_uncount, BRIEF_STATS.size // 8  # (brief_stats is all u64s)
        count, life_sum, life = (LAYOUT_BRIEF_STATS.index[n] for n in ("count", "life_sum_ns", "life"))
        per_type: dict[str, int] = {}
        lives: list[tuple[str, list[int], int]] = []
        for t, name in enumerate(TYPE_NAMES):
            row = delta[t * width : (t + 1) * width]
            if row[count]:
                n = row[count] - uncount(("n", t), row[count]) if self._uncount else row[count]
                if n:
                    per_type[name] = n
                lives.append((name, row[life:], row[life_sum]))
        by_comm: dict[tuple[str, str], int] = {}
        keys, values = self._brief_comms.lookup_all()  # (BPF counts a pair's command after its type)
        comms_last = self._brief_comms_last
        for k, (total,) in zip(COMM_KEY.iter_unpack(keys), struct.iter_unpack("<Q", values)):
            comm, t, _ = k
            d = total - comms_last.get((t, comm), 0)
            if d > 0:
                comms_last[(t, comm)] = total
                d -= uncount(("comm", t, comm), d)
                if d:
                    by_comm[(TYPE_NAMES[t], comm_text(comm))] = d
        self.replica.count_brief(per_type, by_comm, lives)

    def _young_counts(self) -> tuple[array[int], array[int]] | None:
        """BPF's per-slot counters of ``young`` (held, paired), read from memory mapped from the kernel
        (no system call); None without pairing."""
        if self._young is None or self._obj is None:
            return None
        read = self._obj.read_global_bytes
        return array("Q", read(G.young_in)), array("Q", read(G.young_paired))

    def _young_held(self) -> int:
        """Creations BPF holds in ``young`` now."""
        counts = self._young_counts()
        return 0 if counts is None else max(0, sum(counts[0]) - sum(counts[1]) - sum(self._young_taken))

    def _young_slot_due(self, counts: tuple[array[int], array[int]], held: int, now: int) -> bool:
        """Whether a slot holds creations that are all due at ``now`` (the latest period of the slot
        ended ``HOLD_SECONDS`` ago; older creations in it are older still), given ``held`` in all: the
        slots of the periods since then are the only ones that may not be (about a dozen of them)."""
        period, due = now >> YOUNG_SLOT_SHIFT, now - int(HOLD_SECONDS * 1e9)
        recent = min(YOUNG_SLOTS, period + 1 - (due >> YOUNG_SLOT_SHIFT))  # slots whose latest period is not due
        ins, paired = counts
        taken = self._young_taken
        slots = [(period - d) % YOUNG_SLOTS for d in range(recent)]
        return held - sum(ins[i] - paired[i] - taken[i] for i in slots) > 0

    def _sweep(self, changes: list[Change], everything: bool = False) -> None:
        """Take back the creations BPF has held in ``young`` since ``HOLD_SECONDS`` ago (all of them
        with ``everything``) and apply them. Each is deleted first: whoever deletes an entry owns it
        (BPF pairs the others with their frees). Runs after the ring is read: a free after the delete
        reaches the ring, so the next drain, after its creation.

        Listing the map walks every bucket of it (in the VMs ~1.6M instructions for 16384 buckets, a
        quarter of the tracker's time under churn when done every second), so it is listed only when
        BPF's per-slot counters show a slot whose creations are all due (under churn on 6.18+ every
        namespace is freed within microseconds: never listed), no creation the last listing left is due
        later, and ``SWEEP_GAP_SECONDS`` have passed since it. A creation is taken back at most
        ``HOLD_SECONDS`` + one slot period (0.27 s) + ``SWEEP_GAP_SECONDS`` + a drain after it was made."""
        counts = self._young_counts()
        if counts is None or self._young is None:
            return
        held = sum(counts[0]) - sum(counts[1]) - sum(self._young_taken)
        if held <= 0:
            return
        hold = int(HOLD_SECONDS * 1e9)
        now = boot_ns()
        if not everything and (now < self._next_sweep or not self._young_slot_due(counts, held, now)):
            return
        _, values = self._young.lookup_all()
        made = array("Q", values)[LAYOUT_NS_EVENT.column("ts_ns")]  # each entry's kernel timestamp
        gap = now + int(SWEEP_GAP_SECONDS * 1e9)
        if everything:
            rows = list(EVENT.iter_unpack(values))
            self._next_sweep = max(now + hold, gap)
        else:
            due = now - hold
            rows = [EVENT.unpack_from(values, i * EVENT.size) for i, ts in enumerate(made) if ts <= due]
            self._next_sweep = max(min((ts for ts in made if ts > due), default=now) + hold, gap)
        delete, key = self._young.delete, YOUNG_KEY.pack
        mine = sorted(r for r in rows if delete(key(r[EV_INUM])))  # by kernel time: the order they happened in
        taken = self._young_taken
        for r in mine:
            taken[(r[EV_TS] >> YOUNG_SLOT_SHIFT) % YOUNG_SLOTS] += 1
        if mine:
            self._apply_rows(mine, changes)

    @property
    def deferred(self) -> int:
        """Creation events waiting (``defer_events``): for the next rescan, or held for their free
        (in Python, or in BPF's ``young``)."""
        return self._deferred_count + self._young_held()

    @property
    def behind(self) -> bool:
        """Whether the replica may lag what BPF has reported: creations waiting, or where BPF pairs,
        records or counts not yet taken (drains come every ``PAIR_DRAIN_SECONDS`` there). Reads
        memory mapped from the kernel only: cheap enough before every scrape."""
        if self.deferred:
            return True
        if self._briefs is None or self._events is None or self._obj is None:
            return False
        return bool(self._briefs.waiting() or self._events.waiting()
                    or self._obj.read_global_bytes(G.brief_stats) != self._brief_stats_last)

    def catch_up(self) -> list[Change]:
        """Apply everything reported so far, waiting creations included (a rescan if any wait)."""
        changes = self.drain()
        if self._deferred:
            if self._defer == "events":  # creations held for their free: apply them
                self._undefer(changes)
            else:
                changes += self.rescan()
        if self._young is not None:
            self._sweep(changes, everything=True)
            self._take_brief_counts(now=True)
        return changes

    def drain(self) -> list[Change]:
        """Apply every event already in the ring buffer."""
        self._pending = []
        self._last_drain = time.monotonic()
        if self._events is not None:
            for span, stride in self._events.read_spans():
                self._take_span(span, stride)
            if self._defer == "events" and self._deferred:
                self._undefer(self._pending, hold=True)
            if self._briefs is not None:
                self._take_briefs(self._pending)
                self._take_brief_counts()
                self._sweep(self._pending)
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
        if self._epoll is not None:  # BPF holds creations and pairs quietly: look this often, or when woken
            self._epoll.poll(max(0.0, min(deadline, self._last_drain + PAIR_DRAIN_SECONDS) - now))
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
        elif time.monotonic() >= self._next_rescan or self._deferred_count >= DEFER_MAX:  # (young: YOUNG_MAX)
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
        if self._deferred:
            if s.complete and self._defer == "scan":
                settled, brief = self.replica.settle(self._take_deferred(), {r.ns_id for r in s.namespaces},
                                                     s.start_ns)
                self.stats.brief += brief
            else:
                self._undefer(settled)
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
