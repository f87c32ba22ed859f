"""The replica: nstrack's copy of the kernel's set of live namespaces.

Fed by lifecycle events (``apply``) and by scans (``reconcile``); every view reads it. Pure Python:
no kernel access, so it is unit-tested without privileges.

Identity: the kernel's ``ns_id`` where it has one (6.18+, never reused). Otherwise ``(type, inum)``
plus a generation: inode numbers are reused within seconds, and a namespace created with an inum that
an earlier, now dead, namespace had is a different namespace with the next generation. Generations
count the namespaces entered as alive with that type and inode number; those only counted (``brief``,
below: never alive in the replica) are not, and their tombstones have generation 0.

Rules:
- ``created`` for a namespace already alive with the same ns_id is a duplicate (ignored, counted).
- Without ns_id, ``created`` for an alive ``(type, inum)`` that was itself first seen by a scan is the
  same namespace (the scan saw it before its event arrived): the creation details are merged in. If
  the alive one was itself created by an event, the kernel must have freed it (an inum is never
  handed out twice at once) and its free was missed: it is tombstoned and a new generation begins.
- ``destroyed`` for an unknown namespace is ignored (counted): it died before nstrack saw it.
- ``reconcile`` with a complete scan: alive namespaces the scan did not find, created before the scan
  started, are destroyed ("rescan"); namespaces the scan found that were unknown are added.
- Batches (serve, ``Tracker(defer_events=True)``): ``settle`` applies creations held until a complete
  scan, ``settle_pairs`` a batch's creations freed in the same batch, ``settle_brief`` namespaces that BPF
  paired (their creation held there until the free). Namespaces that were already dead
  then are counted as created and destroyed and kept as tombstone records (``brief``), never entered
  as alive; ``lookup`` answers for them as for other tombstones. Those BPF paired are counted by BPF
  (``count_brief`` takes its totals; ``settle_brief`` only keeps the records).
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from itertools import compress
from operator import itemgetter, sub
from typing import NamedTuple, TypeVar

from .nstypes import format_name
from .records import (
    BRIEF_COMM,
    EV_CREATED,
    EV_INUM,
    EV_KIND,
    EV_NS_ID,
    EV_TYPE,
    TYPE_OF_FLAG,
    BriefBatch,
    Event,
    EventBatch,
    NSRecord,
    Row,
    boot_ns,
    comm_text,
    events_of_rows,
)

Key = tuple[object, ...]


class Creator(NamedTuple):
    pid: int
    tgid: int
    comm: str
    cgroup_id: int


@dataclass(slots=True)
class Namespace:
    type: str
    inum: int
    ns_id: int | None
    generation: int
    owner_inum: int
    parent_inum: int
    first_seen_ns: int  # CLOCK_BOOTTIME ns of the first sighting
    created_ns: int | None = None  # CLOCK_BOOTTIME ns of the creation, when seen being created
    creator: Creator | None = None
    learned_by: str = "scan"  # event source that reported the creation, or "scan"
    destroyed_ns: int | None = None
    destroyed_by: str | None = None  # "event" or "rescan"
    owner_ns_id: int | None = None

    @property
    def key(self) -> Key:
        if self.ns_id is not None:
            return ("id", self.ns_id)
        return ("gen", self.type, self.inum, self.generation)

    @property
    def name(self) -> str:
        return format_name(self.type, self.inum)

    @property
    def alive(self) -> bool:
        return self.destroyed_ns is None

    @property
    def born_ns(self) -> int:
        return self.created_ns if self.created_ns is not None else self.first_seen_ns


class Change(NamedTuple):
    kind: str  # "created" | "destroyed"
    ns: Namespace
    via: str  # "event" or "rescan" (or "startup" for the initial scan; "paired": an event BPF counted too)


@dataclass
class Counters:
    created: Counter[str] = field(default_factory=Counter)  # per type, seen being created or found new
    destroyed: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    unknown_destroys: int = 0
    missed_creations: int = 0  # found by a rescan, no event
    missed_destroys: int = 0  # found gone by a rescan, no event
    reused_inums: int = 0
    # creations seen with their creator, by (type, creator command); at most CREATOR_COMMS commands,
    # the rest under OTHER_COMM (comm is chosen by any process: the cap bounds metric cardinality)
    by_comm: Counter[tuple[str, str]] = field(default_factory=Counter)


_new = tuple.__new__  # a NamedTuple built without its Python-level __new__ (hot paths)

CREATOR_COMMS = 50
OTHER_COMM = "(other)"


class Replica:
    def __init__(self, tombstone_seconds: float = 300.0, tombstone_max: int = 10_000) -> None:
        self.alive: dict[Key, Namespace] = {}
        self._by_inum: dict[tuple[str, int], Key] = {}
        self._by_id: dict[int, Key] = {}
        self._by_any_inum: dict[int, Key] = {}
        self.tombstones: OrderedDict[Key, Namespace] = OrderedDict()
        self._generation: dict[tuple[str, int], int] = {}  # entered as alive, by (type, inum)
        self.tombstone_seconds = tombstone_seconds
        self.tombstone_max = tombstone_max
        self.counters = Counters()
        # bumped by every change to the set of live namespaces or what is known of them: a reader that
        # saw version v and sees v again knows nothing changed in between
        self.version = 0
        self.deferred = 0  # namespaces the last reconcile kept only because they were born after its scan
        self._comms: set[str] = set()  # creator commands with series of their own (Counters.by_comm)
        # Tombstones of namespaces never entered as alive (they lived and died between two scans: settle;
        # or while the tracker held back their creation: settle_pairs), as their creation records:
        # (EventBatch, indexes of those records, destroyed_ns (one, or one per record), destroyed_by, the
        # newest destroyed_ns).
        self.brief: deque[tuple[EventBatch, Sequence[int], int | Sequence[int], str, int]] = deque()
        self._brief_count = 0
        # ... and, if ``keep_brief_lives``, their lifetimes, (type, lifetimes in ns), for whoever keeps
        # statistics and takes them (serve)
        self.keep_brief_lives = False
        self.brief_lives: list[tuple[str, list[int]]] = []
        # ... and those BPF counted (count_brief): (type, how many per lifetime bucket of LIFE_BOUNDS_NS, the
        # last above them all; the sum of their lifetimes in ns)
        self.brief_life_counts: list[tuple[str, list[int], int]] = []

    # ------------------------------------------------------------------ lookups

    def __len__(self) -> int:
        return len(self.alive)

    def find_alive(self, type_: str, inum: int, ns_id: int | None = None) -> Namespace | None:
        if not type_ and ns_id is None:
            return self.find_alive_inum(inum)
        if ns_id is not None and ns_id in self._by_id:
            return self.alive[self._by_id[ns_id]]
        key = self._by_inum.get((type_, inum))
        return self.alive[key] if key is not None else None

    def knows(self, ns_id: int | None, inum: int) -> bool:
        """Whether a live entry has this ns_id or this inode number."""
        return (ns_id is not None and ns_id in self._by_id) or inum in self._by_any_inum

    def knows_any(self, ns_ids: Iterable[int], inums: Iterable[int]) -> bool:
        """Whether a live entry has one of these ns_ids (0: none) or inode numbers."""
        return not (self._by_id.keys().isdisjoint(ns_ids) and self._by_any_inum.keys().isdisjoint(inums))

    def alive_inums(self) -> AbstractSet[int]:
        """The inode numbers of the live namespaces (a live view)."""
        return self._by_any_inum.keys()

    def find_alive_inum(self, inum: int) -> Namespace | None:
        """The live namespace with this inode number, whatever its type (live inums are unique:
        every namespace type and proc entry draws them from one allocator)."""
        key = self._by_any_inum.get(inum)
        return self.alive[key] if key is not None else None

    def lookup(self, type_: str | None = None, inum: int | None = None, ns_id: int | None = None) -> list[Namespace]:
        """Alive and tombstoned namespaces matching the query, alive first, newest tombstone first."""
        def match(ns: Namespace) -> bool:
            return ((ns_id is None or ns.ns_id == ns_id) and (inum is None or ns.inum == inum)
                    and (type_ is None or ns.type == type_))

        dead = [ns for ns in reversed(self.tombstones.values()) if match(ns)]
        dead += [ns for ns in (self._brief_namespace(row, when, by) for row, when, by in self._brief_records()
                               if (ns_id is None or row[EV_NS_ID] == ns_id) and (inum is None or row[EV_INUM] == inum))
                 if match(ns)]
        dead.sort(key=lambda ns: ns.destroyed_ns or 0, reverse=True)  # stable: newest entry first on ties
        return [ns for ns in self.alive.values() if match(ns)] + dead

    # ------------------------------------------------------------------ changes

    def _insert(self, ns: Namespace) -> None:
        self.version += 1
        key = ns.key
        self.alive[key] = ns
        self._by_inum[(ns.type, ns.inum)] = key
        self._by_any_inum[ns.inum] = key
        if ns.ns_id is not None:
            self._by_id[ns.ns_id] = key

    def _remove(self, ns: Namespace, when_ns: int, by: str) -> None:
        self.version += 1
        key = ns.key
        self.alive.pop(key, None)
        tk = (ns.type, ns.inum)
        if self._by_inum.get(tk) == key:
            del self._by_inum[tk]
        if self._by_any_inum.get(ns.inum) == key:
            del self._by_any_inum[ns.inum]
        if ns.ns_id is not None:
            self._by_id.pop(ns.ns_id, None)
        ns.destroyed_ns = when_ns
        ns.destroyed_by = by
        tombstones = self.tombstones
        tombstones[key] = ns
        self.counters.destroyed[ns.type] += 1
        while len(tombstones) > self.tombstone_max:
            tombstones.popitem(last=False)

    def _count_creator(self, type_: str, comm: str, n: int = 1) -> None:
        by_comm = self.counters.by_comm
        key = (type_, comm)
        if key not in by_comm:
            comms = self._comms
            if comm not in comms:
                if len(comms) >= CREATOR_COMMS:
                    key = (type_, OTHER_COMM)
                else:
                    comms.add(comm)
        by_comm[key] += n

    def _next_generation(self, type_: str, inum: int) -> int:
        g = self._generation.get((type_, inum), 0) + 1
        self._generation[(type_, inum)] = g
        return g

    def apply(self, ev: Event) -> list[Change]:
        """Apply one lifecycle event; returns what changed (empty for duplicates and unknowns)."""
        changes: list[Change] = []
        (self.created if ev.kind == "created" else self.destroyed)(ev, changes)
        return changes

    def created(self, ev: Event, changes: list[Change]) -> None:
        """Apply a ``created`` event, appending what changed to ``changes``.

        The lifecycle hot path (thousands of calls a second under namespace churn): the lookups,
        the insertion and the counting are written out here rather than called.
        """
        type_, inum, ns_id, ts = ev.type, ev.inum, ev.ns_id, ev.ts_ns
        creator = _new(Creator, (ev.pid, ev.tgid, ev.comm, ev.cgroup_id)) if ev.tgid else None
        tkey = (type_, inum)
        key = self._by_id.get(ns_id) if ns_id is not None else None
        if key is None:
            key = self._by_inum.get(tkey)
        if key is not None:
            cur = self.alive[key]
            if ns_id is not None and cur.ns_id == ns_id:
                if cur.learned_by == "scan":  # merge what the event knows
                    cur.created_ns, cur.creator, cur.learned_by = ts, creator, ev.source
                    self.version += 1
                else:
                    self.counters.duplicates += 1
                return
            if cur.ns_id is None and ns_id is None and cur.learned_by == "scan":
                cur.created_ns, cur.creator, cur.learned_by = ts, creator, ev.source
                self.version += 1
                return
            # The kernel freed `cur` (its inum is being handed out again) and we missed the free.
            self.counters.reused_inums += 1
            self.counters.missed_destroys += 1
            self._remove(cur, ts, "superseded")
            changes.append(_new(Change, ("destroyed", cur, "superseded")))
        generation = self._generation.get(tkey, 0) + 1
        self._generation[tkey] = generation
        ns = Namespace(type_, inum, ns_id, generation, ev.owner_inum, ev.parent_inum, ts, ts, creator, ev.source)
        # _insert, written out
        self.version += 1
        key = ("id", ns_id) if ns_id is not None else ("gen", type_, inum, generation)
        self.alive[key] = ns
        self._by_inum[tkey] = key
        self._by_any_inum[inum] = key
        if ns_id is not None:
            self._by_id[ns_id] = key
        counters = self.counters
        counters.created[type_] += 1
        if creator is not None:
            ckey = (type_, creator.comm)
            n = counters.by_comm.get(ckey)
            if n is None:
                self._count_creator(type_, creator.comm)
            else:
                counters.by_comm[ckey] = n + 1
        changes.append(_new(Change, ("created", ns, "event")))

    def destroyed(self, ev: Event, changes: list[Change]) -> None:
        """Apply a ``destroyed`` event, appending what changed to ``changes``."""
        cur = self.find_alive(ev.type, ev.inum, ev.ns_id)
        if cur is None or (ev.ns_id is not None and cur.ns_id not in (None, ev.ns_id)):
            self.counters.unknown_destroys += 1
            return
        self._remove(cur, ev.ts_ns, "event")
        changes.append(_new(Change, ("destroyed", cur, "event")))

    def settle(self, batch: EventBatch, alive_ids: AbstractSet[int | None], scan_start_ns: int) -> tuple[list[Change], int]:
        """Apply creations held back until a complete scan (``Tracker(defer_events=True)``).

        ``batch``: ``created`` events that carry an ns_id, in ring order; ``alive_ids``: the ns_ids the
        scan found. An event whose namespace the scan found, or that came after the scan began, is
        applied as it would have been at once. The others lived and died between two scans (under
        namespace churn nearly all of them): counted as created and as destroyed (found by a rescan,
        as their frees are in this mode), never entered as alive, their records kept among the
        tombstones (``brief``: made into entries only when ``lookup`` asks) and their lifetimes given
        to ``brief_lives``. Column-wise: no Python object per event for these.

        Returns the changes (of the events applied) and how many lived and died between scans.
        """
        n = len(batch)
        if not n:
            return [], 0
        ids, ts, flags = batch.ns_id, batch.ts, batch.flag
        lo = min(ids)  # ns_ids only grow: alive ones below the batch's smallest are not in it
        wanted = {a for a in alive_ids if a is not None and a >= lo}
        live = {i for i, nid in enumerate(ids) if nid in wanted} if wanted else set()  # applied as events
        if max(ts) >= scan_start_ns:
            live.update(i for i, t in enumerate(ts) if t >= scan_start_ns)
        changes: list[Change] = []
        for ev in events_of_rows([batch.row(i) for i in sorted(live)]):
            self.created(ev, changes)
        dead = n - len(live)
        if not dead:
            return changes, 0
        # counted over every record, then corrected for those applied as events or without a creator
        per_type = Counter(flags)
        comm = batch.same_comm()
        by_comm = Counter({(f, comm): k for f, k in per_type.items()}) if comm else Counter(zip(flags, batch.comms()))
        no_creator = [i for i, tgid in enumerate(batch.tgid) if not tgid] if 0 in batch.tgid else []
        for i in live.union(no_creator):
            if i in live:
                per_type[flags[i]] -= 1
            by_comm[flags[i], batch.comm(i)] -= 1
        lives: dict[int, list[int]] = {}
        if self.keep_brief_lives:
            born: dict[int, list[int]] = {f: [] for f in per_type}
            add = {f: b.append for f, b in born.items()}
            for f, t in zip(flags, ts):
                add[f](t)
            for i in live:
                born[flags[i]].remove(ts[i])
            lives = {f: [scan_start_ns - t for t in b] for f, b in born.items()}
        self.counters.missed_destroys += dead
        rows = [i for i in range(n) if i not in live] if live else range(n)
        self._add_brief(batch, rows, per_type, by_comm, lives, scan_start_ns, "rescan")
        return changes, dead

    def settle_pairs(self, batch: EventBatch, created: list[int], destroyed: list[int]) -> None:
        """Namespaces whose creation (record ``created[k]`` of ``batch``) and free (``destroyed[k]``)
        came in one batch of events (``pair_events``; ``Tracker(defer_events=True)`` in the event
        modes): counted as created and destroyed (by event), kept among the tombstones as records
        (``brief``) and their lifetimes given to ``brief_lives``, never entered as alive."""
        if created:
            self._settle_dead(batch, created, list(pick(batch.ts, destroyed)))

    def settle_brief(self, batch: BriefBatch, rows: Sequence[int] | None = None) -> None:
        """Namespaces BPF paired (``brief_rb`` records: each a creation and when it was freed): ``rows``
        of ``batch``, or all of them. BPF counted them (by type, lifetime, and creator where the record
        says so) and ``count_brief`` takes its counts: they are only kept as tombstones (and their
        creators counted where BPF had no room for them), never entered as alive."""
        made: Sequence[int] = range(len(batch)) if rows is None else rows
        if not made:
            return
        died: Sequence[int] = batch.end if len(made) == len(batch) else list(pick(batch.end, made))
        counted_col = batch.counted
        if counted_col.count(BRIEF_COMM) != len(counted_col):  # creators BPF had no room for: counted here
            tgid, flags = batch.tgid, batch.flag
            comms = [(flags[i], batch.comm(i)) for i in made if tgid[i] and not counted_col[i] & BRIEF_COMM]
            for (flag, c), k in Counter(comms).items():
                if flag in TYPE_OF_FLAG:  # (BPF pairs only the eight types)
                    self._count_creator(TYPE_OF_FLAG[flag], comm_text(c), k)
        self._keep_brief(batch, made, died, "event", in_order=True)  # (frees in the order BPF reported them)

    def count_brief(self, per_type: dict[str, int], by_comm: dict[tuple[str, str], int],
                    lives: list[tuple[str, list[int], int]]) -> None:
        """Namespaces BPF paired and counted (the tracker reads its totals): ``per_type`` created and
        destroyed, ``by_comm`` made per (type, creator command), and per type their lifetimes (how many
        per bucket of LIFE_BOUNDS_NS, the last above them all; their sum in ns), given to
        ``brief_life_counts`` if ``keep_brief_lives``. Their records come to ``settle_brief``."""
        counters = self.counters
        for t, k in per_type.items():
            counters.created[t] += k
            counters.destroyed[t] += k
        for (t, comm), k in by_comm.items():
            self._count_creator(t, comm, k)
        if self.keep_brief_lives:
            self.brief_life_counts += lives
        if per_type or by_comm:
            self.version += 1

    def _settle_dead(self, batch: EventBatch, created: Sequence[int], died: Sequence[int]) -> None:
        flags, tgid, ts = batch.flag, batch.tgid, batch.ts
        made_flags = pick(flags, created)
        per_type = Counter(made_flags)
        made = list(compress(created, pick(tgid, created))) if 0 in tgid else created  # tgid 0: the kernel's
        by_comm = Counter(zip(pick(flags, made), pick(batch.comms(), made)))
        lives: dict[int, list[int]] = {}
        if self.keep_brief_lives:
            spans = list(map(sub, died, pick(ts, created)))
            if len(per_type) == 1:
                lives = {next(iter(per_type)): spans}
            else:
                lives = {f: list(compress(spans, map(f.__eq__, made_flags))) for f in per_type}
        self._add_brief(batch, created, per_type, by_comm, lives, died, "event")

    def _add_brief(self, batch: EventBatch, rows: Sequence[int], per_type: Counter[int],
                   by_comm: Counter[tuple[int, bytes]], lives: dict[int, list[int]], died: int | Sequence[int],
                   by: str) -> None:
        """Count and keep namespaces that were never entered as alive (settle, settle_pairs): their
        creation records are ``rows`` of ``batch``; ``died``: when they were destroyed (one time for
        all, or one per row)."""
        names, counters = TYPE_OF_FLAG, self.counters
        for flag, k in per_type.items():
            if k:
                counters.created[names[flag]] += k
                counters.destroyed[names[flag]] += k
        for (flag, c), k in by_comm.items():
            if k > 0:
                self._count_creator(names[flag], comm_text(c), k)
        if self.keep_brief_lives:
            self.brief_lives += [(names[f], v) for f, v in lives.items() if v]
        self._keep_brief(batch, rows, died, by)

    def _keep_brief(self, batch: EventBatch, rows: Sequence[int], died: int | Sequence[int], by: str,
                    in_order: bool = False) -> None:
        """Keep records ``rows`` of ``batch`` as tombstones (``brief``), the newest ``tombstone_max``.
        ``in_order``: ``died`` is in the order of time (a ring's, to within the nanoseconds between CPUs),
        its last the newest."""
        brief = self.brief
        newest = died if isinstance(died, int) else died[-1] if in_order else max(died)
        brief.append((batch, rows, died, by, newest))
        self._brief_count += len(rows)
        while brief and self._brief_count - len(brief[0][1]) >= self.tombstone_max:
            self._brief_count -= len(brief.popleft()[1])
        self.version += 1

    def _brief_records(self) -> Iterator[tuple[Row, int, str]]:
        """(EVENT tuple, destroyed_ns, destroyed_by) of the newest ``tombstone_max`` brief tombstones,
        newest first."""
        left = self.tombstone_max
        for batch, rows, died, by, _ in reversed(self.brief):
            for k in range(len(rows) - 1, -1, -1):
                if left <= 0:
                    return
                row = batch.row(rows[k])
                if row[EV_KIND] == EV_CREATED and row[EV_TYPE] in TYPE_OF_FLAG:  # (records BPF wrote: checked only here)
                    left -= 1
                    yield row, died if isinstance(died, int) else died[k], by

    def _brief_namespace(self, row: Row, destroyed_ns: int, by: str) -> Namespace:
        ev = events_of_rows([row])[0]
        creator = _new(Creator, (ev.pid, ev.tgid, ev.comm, ev.cgroup_id)) if ev.tgid else None
        return Namespace(ev.type, ev.inum, ev.ns_id, 0, ev.owner_inum, ev.parent_inum, ev.ts_ns, ev.ts_ns, creator,
                         ev.source, destroyed_ns, by)

    def reconcile(
        self,
        records: Iterable[NSRecord],
        scan_start_ns: int,
        types: Iterable[str] | None = None,
        startup: bool = False,
    ) -> list[Change]:
        """Bring the replica in line with a complete scan of ``types`` (default: the types scanned).

        ``scan_start_ns`` is CLOCK_BOOTTIME when the scan began: namespaces created after it may be
        missing from the scan without being dead, so they are kept.
        """
        changes: list[Change] = []
        seen: set[Key] = set()
        scanned_types: set[str] = set()
        for r in records:
            scanned_types.add(r.type)
            cur = self.find_alive(r.type, r.inum, r.ns_id)
            if cur is not None and r.ns_id is not None and cur.ns_id is not None and cur.ns_id != r.ns_id:
                # same inum, different namespace: the one we knew is gone
                self.counters.missed_destroys += 1
                self._remove(cur, scan_start_ns, "rescan")
                changes.append(Change("destroyed", cur, "rescan"))
                cur = None
            if cur is None:
                cur = Namespace(
                    type=r.type,
                    inum=r.inum,
                    ns_id=r.ns_id,
                    generation=self._next_generation(r.type, r.inum),
                    owner_inum=r.owner_inum,
                    parent_inum=r.parent_inum,
                    first_seen_ns=scan_start_ns,
                    owner_ns_id=r.owner_ns_id,
                )
                self._insert(cur)
                if not startup:
                    self.counters.missed_creations += 1
                    self.counters.created[cur.type] += 1
                changes.append(Change("created", cur, "startup" if startup else "rescan"))
            if r.ns_id is not None and cur.ns_id is None:  # learnt its ns_id: index it under it
                del self.alive[cur.key]
                cur.ns_id = r.ns_id
                self._insert(cur)
            if r.owner_ns_id is not None and cur.owner_ns_id != r.owner_ns_id:
                cur.owner_ns_id = r.owner_ns_id
                self.version += 1
            seen.add(cur.key)
        check = set(types) if types is not None else scanned_types
        self.deferred = 0
        for key, ns in list(self.alive.items()):
            if key in seen or ns.type not in check:
                continue
            if ns.born_ns >= scan_start_ns:
                self.deferred += 1
                continue  # created after the scan began: the scan may simply have missed it
            self.counters.missed_destroys += 1
            self._remove(ns, scan_start_ns, "rescan")
            changes.append(Change("destroyed", ns, "rescan"))
        return changes

    def expire(self, now_ns: int) -> int:
        """Drop tombstones older than ``tombstone_seconds``; returns how many."""
        limit = now_ns - int(self.tombstone_seconds * 1e9)
        dropped = 0
        brief = self.brief
        while brief and brief[0][4] < limit:  # a chunk goes when its newest is due
            gone = len(brief.popleft()[1])
            self._brief_count -= gone
            dropped += gone
        while self.tombstones:
            ns = next(iter(self.tombstones.values()))
            if ns.destroyed_ns is not None and ns.destroyed_ns < limit:
                self.tombstones.popitem(last=False)
                dropped += 1
            else:
                break
        return dropped


_T = TypeVar("_T")


def pick(column: Sequence[_T], rows: Sequence[int]) -> Sequence[_T]:
    """``column[i]`` for every i in ``rows``, in order."""
    if len(rows) > 1:
        return itemgetter(*rows)(column)  # type: ignore[no-any-return]
    return [column[i] for i in rows]


def pair_events(batch: EventBatch, keys: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """Creations in a batch of events (ring order) whose namespace the same batch reports destroyed:
    (indexes of those creations, indexes of the destroying events, pairwise). A namespace is its ns_id
    where the events carry one (6.18+), else its inode number (a free may come as an inode number
    only: proc_free_inum; live inode numbers are unique across types, and a reused one pairs with its
    latest creation). ``keys``: the batch's pair_keys, if already known."""
    open_: dict[int, int] = {}
    created: list[int] = []
    destroyed: list[int] = []
    for i, (kind, key) in enumerate(zip(batch.kind, pair_keys(batch) if keys is None else keys)):
        if kind == EV_CREATED:
            open_[key] = i
        else:
            j = open_.pop(key, None)
            if j is not None:
                created.append(j)
                destroyed.append(i)
    return created, destroyed


def pair_keys(batch: EventBatch) -> Sequence[int]:
    """The namespace of each event of a batch as pair_events keys them: its ns_id where it has one,
    else its inode number negated (ns_ids and inode numbers never collide)."""
    ids = batch.ns_id
    return ids if 0 not in ids else [nid or -inum for nid, inum in zip(ids, batch.inum)]


def wall_time(boot_timestamp_ns: int) -> float:
    """Unix time of a CLOCK_BOOTTIME timestamp."""
    return time.time() - (boot_ns() - boot_timestamp_ns) / 1e9
