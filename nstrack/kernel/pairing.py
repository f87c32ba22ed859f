"""BPF pairing, serve's pipeline in the event modes: BPF holds each creation in the `young` map until its
free and reports the two as one ``brief_rb`` record (never entered as alive), counting them itself; this
takes those records, BPF's counts, and the creations still held ``HOLD_SECONDS`` after they happened.

Its own state: the rings and maps it reads, BPF's counts as last taken, what is to come off them, the
creations taken back per slot, and when the map is worth listing next. The Tracker owns one where BPF
pairs (``Tracker.pairing``) and calls ``drain`` and ``catch_up``; records go to the replica through
``Tracker._apply_rows``.
"""

from __future__ import annotations

import select
import struct
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from operator import sub
from typing import TYPE_CHECKING

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
    LAYOUT_BRIEF_STATS,
    LAYOUT_NS_EVENT,
    SOURCES,
    TYPE_OF_FLAG,
    BriefBatch,
    Row,
    boot_ns,
    comm_text,
)
from ..model.replica import Change
from .bpf_names import EVENTS
from .bpfsys import parse_ring_span

if TYPE_CHECKING:
    from .libbpf import BPFMap, BPFObject, RingBuffer
    from .tracker import Tracker

G = EVENTS.glob

# A creation still without its free at the end of a drain is held back this long (by its kernel
# timestamp) for its free: net namespaces are freed from a work queue, often drains after their creation
# (under churn in the VMs: 40% later than 0.1 s on 5.10; on 6.1 a third of them 1.9-2.9 s later).
# Clients do not wait for it: scrapes and requests take back whatever waits first. (Python's pairing,
# where BPF's map is full, holds for as long.)
HOLD_SECONDS = 3.0
SRC_FREE, SRC_TREE_REMOVE = (next(k for k, v in SOURCES.items() if v == name) for name in ("free", "tree_remove"))
# Creations wait in the `young` map for their free (this many at most; more go to the ring, where Python
# pairs them). 88 bytes of kernel memory each, preallocated.
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
# Listings of `young` come at least this far apart (see BPFPairing.sweep).
SWEEP_GAP_SECONDS = 0.5


class BPFPairing:
    """Creations paired with their frees in BPF (serve in the event modes)."""

    def __init__(self, tracker: Tracker) -> None:
        self.t = tracker
        self.obj: BPFObject | None = None  # the loaded event object (its .bss: BPF's counts)
        self.briefs: RingBuffer | None = None  # brief_rb
        self.young: BPFMap | None = None
        self.comms: BPFMap | None = None  # brief_comms
        self.epoll: select.epoll | None = None  # waits for BPF's wake-ups
        # BPF's counts of what it paired (brief_stats, brief_comms) as last taken, and what is to come off
        # them (namespaces the replica knew, applied as events: uncount)
        self.stats_last = bytes(BRIEF_STATS.size * len(TYPE_NAMES))
        self.comms_last: dict[tuple[int, bytes], int] = {}
        self.pending_off: Counter[tuple[object, ...]] = Counter()
        self.next_counts = 0.0  # (monotonic) when BPF's counts are taken next (take_counts)
        self.taken = [0] * YOUNG_SLOTS  # creations Python took back from `young`, by slot
        # (boot_ns) no creation held in `young` can be due before this: sweep lists the map only then
        self.next_sweep = 0
        self.ok = {(EV_CREATED, f) for f in TYPE_OF_FLAG}

    def attach(self, obj: BPFObject, events: RingBuffer, briefs: RingBuffer, young: BPFMap, comms: BPFMap) -> None:
        """The loaded object's rings and maps; wake-ups of both rings through one edge-triggered epoll (it
        reports BPF's wake-ups, a ring a quarter full, not records waiting)."""
        self.obj, self.briefs, self.young, self.comms = obj, briefs, young, comms
        self.epoll = select.epoll()
        for ring in (events, briefs):
            self.epoll.register(ring.fd, select.EPOLLIN | select.EPOLLET)

    def close(self) -> None:
        if self.epoll is not None:
            self.epoll.close()
            self.epoll = None
        self.obj = self.briefs = self.young = self.comms = None

    def wait(self, seconds: float) -> None:
        """Block up to ``seconds``, or until BPF wakes the reader."""
        assert self.epoll is not None
        self.epoll.poll(max(0.0, seconds))

    def drain(self, changes: list[Change]) -> None:
        """At the end of each drain: the pairs, BPF's counts (when due), and the creations held too long."""
        self.take_briefs(changes)
        self.take_counts()
        self.sweep(changes)

    def catch_up(self, changes: list[Change]) -> None:
        """Before a scrape or request: every creation BPF holds, and its counts now."""
        self.sweep(changes, everything=True)
        self.take_counts(now=True)

    def behind(self, events: RingBuffer) -> bool:
        """Records or counts not yet taken (memory mapped from the kernel: no system call)."""
        if self.briefs is None or self.obj is None:
            return False
        return bool(self.briefs.waiting() or events.waiting()
                    or self.obj.read_global_bytes(G.brief_stats) != self.stats_last)

    def take_briefs(self, changes: list[Change]) -> None:
        """Namespaces BPF paired (``brief_rb``): counted and kept as tombstones (Replica.settle_brief);
        those the replica knows (a scan found them while their creation was held) applied as events."""
        assert self.briefs is not None
        parts: list[bytes] = []
        stride = BriefBatch.STRIDE
        for span, span_stride in self.briefs.read_spans():
            if span_stride == stride:
                parts.append(span)
            else:  # a record discarded (its creation taken back meanwhile) or of another size
                _, records = parse_ring_span(span)
                good = [r for r in records if len(r) == stride - 8]
                self.t.stats.bad_records += len(records) - len(good)
                parts += [bytes(8) + r for r in good]
        if not parts:
            return
        batch = BriefBatch(b"".join(parts))
        rows: Sequence[int] = range(len(batch))
        # (their types: BPF pairs only the eight it knows; a tombstone is decoded, and checked, when asked for)
        if batch.kind.count(EV_CREATED) != len(batch):
            good_rows = [i for i in rows if (batch.kind[i], batch.flag[i]) in self.ok]
            self.t.stats.bad_records += len(rows) - len(good_rows)
            rows = good_rows
        # (by inode number first: a live entry with a record's ns_id has its inode number, and an ns_id
        # column is a copy more, of 64-bit words)
        if rows and not self.t.replica.alive_inums().isdisjoint(batch.inum):
            ids, inums, knows = batch.ns_id, batch.inum, self.t.replica.knows
            known = [i for i in rows if knows(ids[i] or None, inums[i])]
            if known:
                rows = sorted(set(rows).difference(known))
                events: list[Row] = []
                for i in known:
                    r = batch.row(i)
                    free = SRC_TREE_REMOVE if SOURCES.get(r[EV_SOURCE]) == "tree_add" else SRC_FREE
                    events += [r, LAYOUT_NS_EVENT.row(ts_ns=batch.end[i], ns_id=r[EV_NS_ID], kind=EV_DESTROYED,
                                                      ns_type=r[EV_TYPE], inum=r[EV_INUM], source=free)]
                    self.uncount(batch, i)
                mark = len(changes)
                self.t._apply_rows(events, changes)
                # BPF has its lifetime (serve's histogram takes that): "paired", not "event"
                changes[mark:] = [c._replace(via="paired") if c.kind == "destroyed" else c for c in changes[mark:]]
        self.t.replica.settle_brief(batch, rows)
        self.t.stats.events += 2 * len(rows)
        self.t.stats.brief += len(rows)

    def uncount(self, batch: BriefBatch, i: int) -> None:
        """Record ``i`` is applied as events (and counted by them): what BPF counted of it is taken off
        its counts (``take_counts``), now or, if they already went to the replica, from the next."""
        t = TYPE_INDEX.get(batch.flag[i])
        if t is None:  # not a type BPF pairs (nor counts)
            return
        pending = self.pending_off
        pending[("n", t)] += 1  # (its lifetime stays: its change says "paired", and serve leaves it to BPF's)
        if batch.tgid[i] and batch.counted[i] & BRIEF_COMM:
            pending[("comm", t, batch.comm(i))] += 1

    def _take_off(self, key: tuple[object, ...], available: int) -> int:
        pending = self.pending_off
        k = min(pending.get(key, 0), available)
        if k:
            pending[key] -= k
            if not pending[key]:
                del pending[key]
        return k

    def take_counts(self, now: bool = False) -> None:
        """What BPF counted of the namespaces it paired (brief_stats, brief_comms) since it was last
        taken, into the replica (Replica.count_brief): once ``COUNTS_SECONDS`` have passed, or ``now``.
        Counts only grow: what ``uncount`` takes off comes off what BPF adds."""
        assert self.obj is not None and self.comms is not None
        clock = time.monotonic()
        if not now and clock < self.next_counts:
            return
        self.next_counts = clock + COUNTS_SECONDS
        raw = self.obj.read_global_bytes(G.brief_stats)
        if raw == self.stats_last:
            return
        delta = list(map(sub, array("Q", raw), array("Q", self.stats_last)))
        self.stats_last = raw
        uncount, width = self._take_off, BRIEF_STATS.size // 8  # (brief_stats is all u64s)
        count, life_sum, life = (LAYOUT_BRIEF_STATS.index[n] for n in ("count", "life_sum_ns", "life"))
        per_type: dict[str, int] = {}
        lives: list[tuple[str, list[int], int]] = []
        for t, name in enumerate(TYPE_NAMES):
            row = delta[t * width : (t + 1) * width]
            if row[count]:
                n = row[count] - uncount(("n", t), row[count]) if self.pending_off else row[count]
                if n:
                    per_type[name] = n
                lives.append((name, row[life:], row[life_sum]))
        by_comm: dict[tuple[str, str], int] = {}
        keys, values = self.comms.lookup_all()  # (BPF counts a pair's command after its type)
        comms_last = self.comms_last
        for k, (total,) in zip(COMM_KEY.iter_unpack(keys), struct.iter_unpack("<Q", values)):
            comm, t, _ = k
            d = total - comms_last.get((t, comm), 0)
            if d > 0:
                comms_last[(t, comm)] = total
                d -= uncount(("comm", t, comm), d)
                if d:
                    by_comm[(TYPE_NAMES[t], comm_text(comm))] = d
        self.t.replica.count_brief(per_type, by_comm, lives)

    def counts(self) -> tuple[array[int], array[int]] | None:
        """BPF's per-slot counters of ``young`` (held, paired), read from memory mapped from the kernel
        (no system call); None without pairing."""
        if self.young is None or self.obj is None:
            return None
        read = self.obj.read_global_bytes
        return array("Q", read(G.young_in)), array("Q", read(G.young_paired))

    def held(self) -> int:
        """Creations BPF holds in ``young`` now."""
        counts = self.counts()
        return 0 if counts is None else max(0, sum(counts[0]) - sum(counts[1]) - sum(self.taken))

    def _slot_due(self, counts: tuple[array[int], array[int]], held: int, now: int) -> bool:
        """Whether a slot holds creations that are all due at ``now`` (the latest period of the slot
        ended ``HOLD_SECONDS`` ago; older creations in it are older still), given ``held`` in all: the
        slots of the periods since then are the only ones that may not be (about a dozen of them)."""
        period, due = now >> YOUNG_SLOT_SHIFT, now - int(HOLD_SECONDS * 1e9)
        recent = min(YOUNG_SLOTS, period + 1 - (due >> YOUNG_SLOT_SHIFT))  # slots whose latest period is not due
        ins, paired = counts
        taken = self.taken
        slots = [(period - d) % YOUNG_SLOTS for d in range(recent)]
        return held - sum(ins[i] - paired[i] - taken[i] for i in slots) > 0

    def sweep(self, changes: list[Change], everything: bool = False) -> None:
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
        counts = self.counts()
        if counts is None or self.young is None:
            return
        held = sum(counts[0]) - sum(counts[1]) - sum(self.taken)
        if held <= 0:
            return
        hold = int(HOLD_SECONDS * 1e9)
        now = boot_ns()
        if not everything and (now < self.next_sweep or not self._slot_due(counts, held, now)):
            return
        _, values = self.young.lookup_all()
        made = array("Q", values)[LAYOUT_NS_EVENT.column("ts_ns")]  # each entry's kernel timestamp
        gap = now + int(SWEEP_GAP_SECONDS * 1e9)
        if everything:
            rows = list(EVENT.iter_unpack(values))
            self.next_sweep = max(now + hold, gap)
        else:
            due = now - hold
            rows = [EVENT.unpack_from(values, i * EVENT.size) for i, ts in enumerate(made) if ts <= due]
            self.next_sweep = max(min((ts for ts in made if ts > due), default=now) + hold, gap)
        delete, key = self.young.delete, YOUNG_KEY.pack
        mine = sorted(r for r in rows if delete(key(r[EV_INUM])))  # by kernel time: the order they happened in
        taken = self.taken
        for r in mine:
            taken[(r[EV_TS] >> YOUNG_SLOT_SHIFT) % YOUNG_SLOTS] += 1
        if mine:
            self.t._apply_rows(mine, changes)

