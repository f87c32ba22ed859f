"""The replica: nstrack's copy of the kernel's set of live namespaces.

Fed by lifecycle events (``apply``) and by scans (``reconcile``); every view reads it. Pure Python:
no kernel access, so it is unit-tested without privileges.

Identity: the kernel's ``ns_id`` where it has one (6.18+, never reused). Otherwise ``(type, inum)``
plus a generation: inode numbers are reused within seconds, and a namespace created with an inum that
an earlier, now dead, namespace had is a different namespace with the next generation.

Rules:
- ``created`` for a namespace already alive with the same ns_id is a duplicate (ignored, counted).
- Without ns_id, ``created`` for an alive ``(type, inum)`` that was itself first seen by a scan is the
  same namespace (the scan saw it before its event arrived): the creation details are merged in. If
  the alive one was itself created by an event, the kernel must have freed it (an inum is never
  handed out twice at once) and its free was missed: it is tombstoned and a new generation begins.
- ``destroyed`` for an unknown namespace is ignored (counted): it died before nstrack saw it.
- ``reconcile`` with a complete scan: alive namespaces the scan did not find, created before the scan
  started, are destroyed ("rescan"); namespaces the scan found that were unknown are added.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from .nstypes import format_name
from .records import Event, NSRecord, boot_ns

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
    via: str  # "event" or "rescan" (or "startup" for the initial scan)


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


CREATOR_COMMS = 50
OTHER_COMM = "(other)"


class Replica:
    def __init__(self, tombstone_seconds: float = 300.0, tombstone_max: int = 10_000) -> None:
        self.alive: dict[Key, Namespace] = {}
        self._by_inum: dict[tuple[str, int], Key] = {}
        self._by_id: dict[int, Key] = {}
        self._by_any_inum: dict[int, Key] = {}
        self.tombstones: OrderedDict[Key, Namespace] = OrderedDict()
        self._generation: dict[tuple[str, int], int] = {}
        self.tombstone_seconds = tombstone_seconds
        self.tombstone_max = tombstone_max
        self.counters = Counters()
        # bumped by every change to the set of live namespaces or what is known of them: a reader that
        # saw version v and sees v again knows nothing changed in between
        self.version = 0
        self.deferred = 0  # namespaces the last reconcile kept only because they were born after its scan
        self._comms: set[str] = set()  # creator commands with series of their own (Counters.by_comm)

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

    def find_alive_inum(self, inum: int) -> Namespace | None:
        """The live namespace with this inode number, whatever its type (live inums are unique:
        every namespace type and proc entry draws them from one allocator)."""
        key = self._by_any_inum.get(inum)
        return self.alive[key] if key is not None else None

    def lookup(self, type_: str | None = None, inum: int | None = None, ns_id: int | None = None) -> list[Namespace]:
        """Alive and tombstoned namespaces matching the query, alive first, newest tombstone first."""
        out: list[Namespace] = []
        for ns in [*self.alive.values(), *reversed(self.tombstones.values())]:
            if ns_id is not None and ns.ns_id != ns_id:
                continue
            if inum is not None and ns.inum != inum:
                continue
            if type_ is not None and ns.type != type_:
                continue
            out.append(ns)
        return out

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

    def _count_creator(self, type_: str, comm: str) -> None:
        by_comm = self.counters.by_comm
        key = (type_, comm)
        n = by_comm.get(key)
        if n is not None:  # the common case: a command already counted for this type
            by_comm[key] = n + 1
            return
        comms = self._comms
        if comm not in comms:
            if len(comms) >= CREATOR_COMMS:
                key = (type_, OTHER_COMM)
            else:
                comms.add(comm)
        by_comm[key] += 1

    def _next_generation(self, type_: str, inum: int) -> int:
        g = self._generation.get((type_, inum), 0) + 1
        self._generation[(type_, inum)] = g
        return g

    def apply(self, ev: Event) -> list[Change]:
        """Apply one lifecycle event; returns what changed (empty for duplicates and unknowns)."""
        if ev.kind == "created":
            return self._created(ev)
        return self._destroyed(ev)

    def _created(self, ev: Event) -> list[Change]:
        changes: list[Change] = []
        creator = Creator(ev.pid, ev.tgid, ev.comm, ev.cgroup_id) if ev.tgid else None
        type_, inum, ns_id = ev.type, ev.inum, ev.ns_id
        cur = self.find_alive(type_, inum, ns_id)
        if cur is not None:
            if ns_id is not None and cur.ns_id == ns_id:
                if cur.learned_by == "scan":  # merge what the event knows
                    cur.created_ns, cur.creator, cur.learned_by = ev.ts_ns, creator, ev.source
                    self.version += 1
                else:
                    self.counters.duplicates += 1
                return changes
            if cur.ns_id is None and ns_id is None and cur.learned_by == "scan":
                cur.created_ns, cur.creator, cur.learned_by = ev.ts_ns, creator, ev.source
                self.version += 1
                return changes
            # The kernel freed `cur` (its inum is being handed out again) and we missed the free.
            self.counters.reused_inums += 1
            self.counters.missed_destroys += 1
            self._remove(cur, ev.ts_ns, "superseded")
            changes.append(Change("destroyed", cur, "superseded"))
        ns = Namespace(type_, inum, ns_id, self._next_generation(type_, inum), ev.owner_inum, ev.parent_inum,
                       ev.ts_ns, ev.ts_ns, creator, ev.source)  # first seen = created; learned_by
        self._insert(ns)
        self.counters.created[type_] += 1
        if creator is not None:
            self._count_creator(type_, creator.comm)
        changes.append(Change("created", ns, "event"))
        return changes

    def _destroyed(self, ev: Event) -> list[Change]:
        cur = self.find_alive(ev.type, ev.inum, ev.ns_id)
        if cur is None or (ev.ns_id is not None and cur.ns_id not in (None, ev.ns_id)):
            self.counters.unknown_destroys += 1
            return []
        self._remove(cur, ev.ts_ns, "event")
        return [Change("destroyed", cur, "event")]

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
        while self.tombstones:
            key, ns = next(iter(self.tombstones.items()))
            if ns.destroyed_ns is not None and ns.destroyed_ns < limit:
                self.tombstones.popitem(last=False)
                dropped += 1
            else:
                break
        return dropped


def wall_time(boot_timestamp_ns: int) -> float:
    """Unix time of a CLOCK_BOOTTIME timestamp."""
    return time.time() - (boot_ns() - boot_timestamp_ns) / 1e9
