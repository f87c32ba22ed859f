"""Deferral, serve's pipelines where creations may wait (``Tracker(defer_events=True)``): event records
kept as the raw ring spans they came in and applied together later, so that a namespace that lived and
died in between is only counted, never entered as alive (under churn almost every namespace lives for
microseconds, and building each one's entry cost a churning workload ~8% of its rate on 2 cores).

- ``UntilScan`` (tracepoint mode where the kernel has namespace lists, 6.18+): creations wait for the next
  complete rescan, which enters those it finds alive (``Replica.settle``).
- ``ByDrain`` (the event modes, for what reaches the ring: BPF's ``young`` full, or no BPF pairing): each
  drain's events are applied together, a creation and its free only counted (``Replica.settle_pairs``);
  creations without their free are held up to ``HOLD_SECONDS`` for it.

Each keeps its own state (the spans, how many records they hold, which records may wait); the Tracker
calls ``keep`` for each span it reads, ``end_drain``, ``catch_up`` and ``on_rescan``, and records reach the
replica through ``Tracker._apply_rows``.
"""

from __future__ import annotations

from array import array
from itertools import compress
from typing import TYPE_CHECKING

from ..model.records import (
    EV_CREATED,
    EV_DESTROYED,
    ROW_INUM,
    ROW_KIND,
    ROW_NS_ID,
    ROW_SOURCE,
    ROW_TYPE,
    SOURCES,
    TASK_SOURCES,
    TYPE_OF_FLAG,
    EventBatch,
    boot_ns,
    events_of_rows,
)
from ..model.replica import Change, pair_events, pair_keys, pick
from .pairing import HOLD_SECONDS

if TYPE_CHECKING:
    from .scanner import Scan
    from .tracker import Tracker


class Deferral:
    """Records that wait, as ring spans of EVENT_ROW records (``count`` of them)."""

    kind = ""  # "scan" or "events", as the Tracker's callers and tests name them

    def __init__(self, tracker: Tracker, ok: set[tuple[int, int, int]]) -> None:
        self.t = tracker
        self.ok = ok  # the (kind, type flag, source) of the records that may wait
        self.spans: list[bytes] = []
        self.count = 0

    def keep(self, span: bytes, w32: array[int], n: int) -> bool:
        """Keep a span of ``n`` records (``w32``: its words) if every record in it may wait."""
        if set(zip(w32[ROW_KIND], w32[ROW_TYPE], w32[ROW_SOURCE])) <= self.ok and self._may_wait(span):
            self.spans.append(span)
            self.count += n
            return True
        return False

    def _may_wait(self, span: bytes) -> bool:
        return True

    def take(self) -> EventBatch:
        """Everything that waits, as one batch; nothing waits after."""
        batch = EventBatch(b"".join(self.spans))
        self.spans, self.count = [], 0
        return batch

    def apply(self, changes: list[Change], hold: bool = False) -> None:
        """Apply what waits now (before a record that may not wait, or when asked)."""
        raise NotImplementedError

    def end_drain(self, changes: list[Change]) -> None:
        """At the end of each drain."""

    def catch_up(self, changes: list[Change]) -> None:
        """Before a scrape or request: everything that waits."""
        raise NotImplementedError

    def on_rescan(self, scan: Scan, changes: list[Change]) -> int:
        """At a rescan, what waits; returns how many namespaces lived and died meanwhile."""
        self.apply(changes)
        return 0


class UntilScan(Deferral):
    """Creations (from the fork, clone and unshare tracepoints) wait for the next complete rescan."""

    kind = "scan"

    @classmethod
    def for_types(cls, tracker: Tracker, types: set[str]) -> UntilScan:
        flags = {flag for flag, t in TYPE_OF_FLAG.items() if t in types}
        return cls(tracker, {(EV_CREATED, f, src) for f in flags for src, name in SOURCES.items()
                             if name in TASK_SOURCES})

    def keep(self, span: bytes, w32: array[int], n: int) -> bool:
        if super().keep(span, w32, n):
            self.t.stats.events += n  # (counted as they arrive: they may never be applied as events)
            return True
        return False

    def _may_wait(self, span: bytes) -> bool:
        return 0 not in array("Q", span)[ROW_NS_ID]  # (settle finds them by ns_id)

    def apply(self, changes: list[Change], hold: bool = False) -> None:
        """The creations as events, without a scan."""
        for ev in events_of_rows(self.take().rows()):
            self.t.replica.created(ev, changes)

    def catch_up(self, changes: list[Change]) -> None:
        changes += self.t.rescan()

    def on_rescan(self, scan: Scan, changes: list[Change]) -> int:
        if not scan.complete:
            return super().on_rescan(scan, changes)
        settled, brief = self.t.replica.settle(self.take(), {r.ns_id for r in scan.namespaces}, scan.start_ns)
        changes += settled
        return brief


class ByDrain(Deferral):
    """A drain's events together, pairs of a creation and its free only counted."""

    kind = "events"

    @classmethod
    def every_event(cls, tracker: Tracker) -> ByDrain:
        return cls(tracker, {(kind, f, src) for kind in (EV_CREATED, EV_DESTROYED) for f in TYPE_OF_FLAG
                             for src in SOURCES} | {(EV_DESTROYED, 0, src) for src in SOURCES})

    def keep(self, span: bytes, w32: array[int], n: int) -> bool:
        if self.t.inum_frees and self._idle_frees(w32, n):
            return True
        return super().keep(span, w32, n)

    def _idle_frees(self, w32: array[int], n: int) -> bool:
        """Whether a span of ``n`` records (``w32``: its words) holds only inode numbers freed
        (proc_free_inum) that no live namespace has and no waiting creation: proc entries, and ipc
        namespaces already reported at their last put; then they are counted and dropped (as apply
        would, at a small part of its cost: under churn on kernels before 6.18 about one a namespace)."""
        flags, kinds = w32[ROW_TYPE], w32[ROW_KIND]
        if flags.count(0) != n or kinds.count(EV_DESTROYED) != n:
            return False
        inums = w32[ROW_INUM]
        if not self.t.replica.alive_inums().isdisjoint(inums):
            return False
        if self.spans:
            waiting = array("I", b"".join(self.spans))
            born = {i for k, i in zip(waiting[ROW_KIND], waiting[ROW_INUM]) if k == EV_CREATED}
            if not born.isdisjoint(inums):
                return False
        self.t.stats.other_inum_frees += n
        return True

    def end_drain(self, changes: list[Change]) -> None:
        if self.spans:
            self.apply(changes, hold=True)

    def catch_up(self, changes: list[Change]) -> None:
        self.apply(changes)  # creations held for their free: apply them

    def apply(self, changes: list[Change], hold: bool = False) -> None:
        """The batch, pairs of a creation and its free only counted (Replica.settle_pairs).

        ``hold`` (the end of a drain): creations left without their free are held back for it, up to
        ``HOLD_SECONDS`` after they happened (their kernel timestamps), at the head of the next drain's
        batch. Net and ipc namespaces are freed from work queues, so under churn their frees often come
        drains after their creations, and entering each as alive to remove it moments later was most of
        nstrack's cost (measured in the VMs). Without ``hold`` all is applied."""
        t = self.t
        replica, stats = t.replica, t.stats
        batch = self.take()
        keys = pair_keys(batch)
        created, destroyed = pair_events(batch, keys)
        paired = created
        ids, inums, kinds, knows = batch.ns_id, batch.inum, batch.kind, replica.knows
        if created and replica.knows_any(pick(ids, created), pick(inums, created)):
            # e.g. found by the start-up scan: applied as events
            mine = [k for k, i in enumerate(created) if not knows(ids[i] or None, inums[i])]
            created, destroyed = [created[k] for k in mine], [destroyed[k] for k in mine]
        replica.settle_pairs(batch, created, destroyed)
        stats.events += 2 * len(created)
        stats.brief += len(created)
        rest = set(range(len(batch))).difference(created, destroyed)
        if rest and t.inum_frees and 0 in batch.flag:
            # inode numbers freed (proc_free_inum) of no live namespace: proc entries, and ipc namespaces
            # already reported at their last put; dropped here rather than one by one in _apply_rows
            flags, alive = batch.flag, replica.alive_inums()
            frees = [i for i in rest if not flags[i] and kinds[i] == EV_DESTROYED]
            if frees:
                born = {inums[i] for i in rest if kinds[i] == EV_CREATED}
                idle = [i for i in frees if inums[i] not in alive and inums[i] not in born]
                stats.other_inum_frees += len(idle)
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
                self.spans = [b"".join([data[i * stride : (i + 1) * stride] for i in latest])]
                self.count = len(latest)
                rest.difference_update(latest)
        if rest:
            t._apply_rows(list(map(batch.row, sorted(rest))), changes)
