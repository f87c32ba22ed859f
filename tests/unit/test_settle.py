"""Creations held back until a rescan (Replica.settle, EventBatch): the same answers as applying each
event at once and reconciling with the scan, without a kernel."""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left

import pytest

from nstrack.kernel.bpfsys import uniform_stride
from nstrack.kernel.pairing import HOLD_SECONDS
from nstrack.model.records import EVENT, EventBatch, NSRecord, decode_event
from nstrack.model.replica import Replica
from nstrack.service import LIFETIME_BUCKETS, Lifetimes

UTS, NET = 0x04000000, 0x40000000
HEADER = struct.pack("<II", EVENT.size, 0)


def raw(ts: int, ns_id: int, flag: int, inum: int, tgid: int = 100, comm: bytes = b"churn") -> bytes:
    return EVENT.pack(ts, ns_id, 9, 1, flag, inum, 4026531837, 0, tgid, tgid, 6, comm)  # created, by unshare


def batch(raws: list[bytes]) -> EventBatch:
    return EventBatch(b"".join(HEADER + r for r in raws))


# 12 creations: ns_ids 1..12 at 1..12 s, uts and net in turn, two commands, one without a creator
RAWS = [raw(i * 10**9, i, UTS if i % 2 else NET, 4026532000 + i, tgid=0 if i == 7 else 100 + i % 3,
            comm=b"ip" if i % 3 == 0 else b"runc") for i in range(1, 13)]
ALIVE = {3, 8}  # what the scan found of them (besides older namespaces)
START = int(11.5e9)  # the scan began after the 11th: the 12th is too young to be judged
SCAN = [NSRecord("uts", 4026531838, 1000, 0, 0, None)] + [
    NSRecord("net" if i % 2 == 0 else "uts", 4026532000 + i, i, 4026531837, 0, None) for i in sorted(ALIVE)]


def immediate() -> Replica:
    r = Replica()
    r.reconcile(SCAN[:1], 0, startup=True)
    for x in RAWS:
        r.apply(decode_event(x))
    r.reconcile(SCAN, START)
    return r


def deferred(tombstone_max: int = 10_000) -> tuple[Replica, list, int]:
    r = Replica(tombstone_max=tombstone_max)
    r.keep_brief_lives = True
    r.reconcile(SCAN[:1], 0, startup=True)
    changes, dead = r.settle(batch(RAWS), {n.ns_id for n in SCAN}, START)
    r.reconcile(SCAN, START)
    return r, changes, dead


def test_batch_columns_are_the_records() -> None:
    b = batch(RAWS)
    assert len(b) == 12 and uniform_stride(b.data) == EventBatch.STRIDE
    for i, x in enumerate(RAWS):
        ts, ns_id, _cg, kind, flag, _inum, _o, _p, _pid, tgid, src, comm = EVENT.unpack(x)
        assert b.row(i) == EVENT.unpack(x)
        assert (b.ts[i], b.ns_id[i], b.kind[i], b.flag[i], b.tgid[i], b.src[i]) == (ts, ns_id, kind, flag, tgid, src)
        assert b.comm(i) == comm == b.comms()[i]
    assert b.same_comm() is None
    assert batch([raw(1, 1, UTS, 5)] * 3).same_comm() == raw(1, 1, UTS, 5)[-16:]
    with pytest.raises(ValueError):
        EventBatch(b"x" * 81)


def test_settle_counts_and_keeps_what_applying_each_event_would() -> None:
    a = immediate()
    b, _, dead = deferred()
    assert dead == 9  # 12 made, 2 alive, 1 too young to judge
    for name in ("created", "destroyed", "by_comm"):
        assert getattr(b.counters, name) == getattr(a.counters, name), name
    assert b.counters.missed_destroys == a.counters.missed_destroys == 9
    assert {k: (n.inum, n.creator, n.created_ns, n.learned_by) for k, n in b.alive.items()} == \
        {k: (n.inum, n.creator, n.created_ns, n.learned_by) for k, n in a.alive.items()}
    assert sorted(n.ns_id for n in b.alive.values()) == [3, 8, 12, 1000]

    def dead_view(r: Replica) -> list[tuple[object, ...]]:
        return sorted((n.type, n.inum, n.ns_id, n.creator, n.created_ns, n.destroyed_ns, n.destroyed_by, n.alive)
                      for n in r.lookup() if not n.alive)

    assert dead_view(b) == dead_view(a)
    [seven] = b.lookup(inum=4026532007)
    assert seven.creator is None and seven.destroyed_by == "rescan" and seven.destroyed_ns == START


def test_settle_changes_are_those_of_the_events_applied() -> None:
    _, changes, _ = deferred()
    assert [(c.kind, c.ns.ns_id, c.via) for c in changes] == [("created", 3, "event"), ("created", 8, "event"),
                                                              ("created", 12, "event")]


def test_settle_counts_creators_of_one_command_without_the_kernels_own() -> None:
    """One command made them all (counted at once, by the batch's one comm), one the kernel made."""
    raws = [raw(i * 10**9, i, UTS if i % 2 else NET, 4026532000 + i, tgid=0 if i == 3 else 100) for i in range(1, 6)]
    scan = SCAN[:1] + [NSRecord("net", 4026531840, 1001, 0, 0, None)]
    a, b = Replica(), Replica()
    a.reconcile(scan, 0, startup=True)
    for x in raws:
        a.apply(decode_event(x))
    a.reconcile(scan, START)
    b.reconcile(scan, 0, startup=True)
    assert b.settle(batch(raws), {n.ns_id for n in scan}, START)[1] == 5
    b.reconcile(scan, START)
    for name in ("created", "destroyed", "by_comm"):
        assert getattr(b.counters, name) == getattr(a.counters, name), name
    assert sum(a.counters.by_comm.values()) == 4 and a.counters.created == {"uts": 3, "net": 2}


def test_brief_tombstones_are_bounded_in_number_and_time() -> None:
    r, _, _ = deferred(tombstone_max=4)
    assert [n.ns_id for n in r.lookup() if not n.alive] == [11, 10, 9, 7]  # the newest 4, newest first
    r.settle(batch([raw(20 * 10**9 + i, 100 + i, UTS, 4026533000 + i) for i in range(3)]), set(), 21 * 10**9)
    assert [n.ns_id for n in r.lookup() if not n.alive] == [102, 101, 100, 11]
    assert r.lookup(ns_id=9) == []
    assert r.expire(now_ns=int(21.5e9)) == 0
    r.tombstone_seconds = 5.0
    assert r.expire(now_ns=20 * 10**9) == 9  # the first batch's, destroyed at 11.5 s
    assert [n.ns_id for n in r.lookup() if not n.alive] == [102, 101, 100]


def test_brief_lifetimes_match_observing_each() -> None:
    r, _, _ = deferred()
    one, many = Lifetimes(), Lifetimes()
    for type_, lives in r.brief_lives:
        many.observe_many(type_, lives)
        for x in lives:
            one.observe(type_, max(0.0, x / 1e9))
    assert sum(many.counts.values()) == 9
    dead = [i for i in range(1, 12) if i not in ALIVE]  # the 12th was too young to judge
    assert sorted(x for _, lives in r.brief_lives for x in lives) == sorted(START - i * 10**9 for i in dead)
    assert many.buckets == one.buckets and many.counts == one.counts
    assert many.sums.keys() == one.sums.keys()
    assert all(abs(many.sums[t] - one.sums[t]) < 1e-6 for t in one.sums)
    assert len(next(iter(many.buckets.values()))) == len(LIFETIME_BUCKETS)


def test_lifetimes_counted_in_bpf_match_observing_each() -> None:
    """Per-bucket counts as BPF's count_pair makes them (the first bound a lifetime is <= to) give
    serve's histogram what observing each lifetime gives."""
    from nstrack.model.records import LIFE_BOUNDS_NS

    lives = [0, 5, 10**9, 10**9 + 1, 59 * 10**9, 60 * 10**9, 7200 * 10**9, 86400 * 10**9, 86401 * 10**9]
    one, counted = Lifetimes(), Lifetimes()
    buckets = [0] * (len(LIFE_BOUNDS_NS) + 1)
    for x in lives:
        one.observe("net", x / 1e9)
        buckets[bisect_left(LIFE_BOUNDS_NS, x)] += 1
    assert buckets == [3, 1, 2, 0, 0, 0, 1, 1, 1]
    counted.add_counts("net", buckets, sum(lives))
    assert counted.buckets == one.buckets and counted.counts == one.counts
    assert abs(counted.sums["net"] - one.sums["net"]) < 1e-6


def test_brief_lifetimes_are_kept_only_when_asked() -> None:
    r = Replica()
    r.settle(batch(RAWS), set(), START)
    assert r.brief_lives == [] and r.counters.missed_destroys == 11


def destroyed_raw(ts: int, ns_id: int, flag: int, inum: int) -> bytes:
    """A free as the event modes report it: by ns_id (6.18+), or an inode number only (flag 0)."""
    return EVENT.pack(ts, ns_id, 0, 2, flag, inum, 0, 0, 0, 0, 2 if ns_id else 7, b"")


# event modes: a churn of creations and frees in one batch (ring order), by ns_id and by inode number
EVENTS = [raw(1, 1, UTS, 5001), raw(2, 2, NET, 5002), destroyed_raw(3, 1, UTS, 5001),  # 1 paired
          raw(4, 3, UTS, 5001), destroyed_raw(5, 3, UTS, 5001),  # reused inum, paired by ns_id
          raw(6, 0, UTS, 6001, tgid=0), destroyed_raw(7, 0, 0, 6001),  # no ns_id, freed by inode number
          raw(8, 0, UTS, 6001, comm=b"ip"), raw(9, 0, NET, 6002), destroyed_raw(10, 0, 0, 6002),
          destroyed_raw(11, 0, 0, 9999),  # a free of an inode number nstrack never saw
          destroyed_raw(12, 77, NET, 7777)]  # a free of a namespace alive before the batch


def test_pair_events_by_ns_id_or_inode_number() -> None:
    from nstrack.model.replica import pair_events

    created, destroyed = pair_events(batch(EVENTS))
    assert list(zip(created, destroyed)) == [(0, 2), (3, 4), (5, 6), (8, 9)]


def test_settled_pairs_count_and_keep_what_applying_each_event_would() -> None:
    from nstrack.model.replica import pair_events

    known = [NSRecord("net", 7777, 77, 0, 0, None)]
    a = Replica()
    a.reconcile(known, 0, startup=True)
    for x in EVENTS:
        a.apply(decode_event(x))
    b = Replica()
    b.keep_brief_lives = True
    b.reconcile(known, 0, startup=True)
    events = batch(EVENTS)
    created, destroyed = pair_events(events)
    b.settle_pairs(events, created, destroyed)
    skip = {*created, *destroyed}
    for i in range(len(events)):
        if i not in skip:
            b.apply(decode_event(EVENTS[i]))
    for name in ("created", "destroyed", "by_comm", "unknown_destroys", "missed_destroys"):
        assert getattr(b.counters, name) == getattr(a.counters, name), name
    # (generations count the namespaces entered as alive: the pairs never were, so keys without ns_ids differ)
    assert sorted((n.type, n.inum, n.ns_id, n.creator) for n in b.alive.values()) == sorted(
        (n.type, n.inum, n.ns_id, n.creator) for n in a.alive.values())
    assert [n.generation for n in b.alive.values() if n.ns_id is None] == [1]

    def dead_view(r: Replica) -> list[tuple[object, ...]]:
        return sorted((n.type, n.inum, n.ns_id, n.creator, n.created_ns, n.destroyed_ns, n.destroyed_by)
                      for n in r.lookup() if not n.alive)

    assert dead_view(b) == dead_view(a)
    assert sorted(x for _, lives in b.brief_lives for x in lives) == [1, 1, 1, 2]  # 3-1, 5-4, 7-6, 10-9



class FakeRing:
    """Stands in for the events ring buffer: each drain reads the spans given to it."""

    fd = -1

    def __init__(self) -> None:
        self.spans: list[bytes] = []

    def read_spans(self) -> list[tuple[bytes, int]]:
        from nstrack.kernel.bpfsys import uniform_stride

        spans, self.spans = self.spans, []
        return [(span, uniform_stride(span)) for span in spans]

    def waiting(self) -> int:
        return sum(map(len, self.spans))


def event_tracker(generic: bool = True) -> tuple[object, FakeRing]:
    """A Tracker as serve runs it in fentry mode (every type by its hooks: the generic ones of 6.18+,
    or the per-type ones with proc_free_inum), reading a fake ring."""
    from types import SimpleNamespace

    from nstrack.kernel import hooks as hook_table
    from nstrack.kernel.tracker import Tracker
    from nstrack.model.mode import Decision
    from nstrack.model.nstypes import TYPE_NAMES

    table = hook_table.resolve(set(hook_table.ALL_FUNCTIONS) - ({"__ns_tree_add_raw"} if not generic else set()))
    hooks = {t: {"create": table[t].create, "destroy": table[t].destroy} for t in TYPE_NAMES}
    findings = SimpleNamespace(decision=Decision("fentry", {t: "fentry" for t in TYPE_NAMES}), hooks_btf=hooks,
                               hooks_kallsyms=hooks, probes={})
    t = Tracker(findings, defer_events=True)  # type: ignore[arg-type]
    ring = FakeRing()
    t._events = ring  # type: ignore[assignment]
    t._choose_defer(has_lists=True)  # as start() does once the programs are attached
    assert t.deferral is not None and t.deferral.kind == "events"
    return t, ring


def test_creations_are_held_for_their_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """A creation whose free comes drains later (net and ipc namespaces are freed from work queues) is
    paired then, never entered as alive; one still unpaired HOLD_SECONDS after it happened is applied."""
    from nstrack.kernel import deferral as deferral_mod

    hold = int(HOLD_SECONDS * 1e9)
    now = [0]
    monkeypatch.setattr(deferral_mod, "boot_ns", lambda: now[0])
    t, ring = event_tracker()
    before = dict(t.replica.counters.created)
    now[0] = 10
    ring.spans = [b"".join(HEADER + r for r in (raw(1, 901, NET, 9001), raw(2, 902, UTS, 9002)))]
    assert t.drain() == [] and t.deferred == 2  # both held
    now[0] = hold // 2
    ring.spans = [HEADER + raw(3, 904, UTS, 9004)]
    assert t.drain() == [] and t.deferred == 3  # a drain naming none of them: all still held
    now[0] = hold + 2
    ring.spans = [HEADER + destroyed_raw(hold + 1, 901, NET, 9001) + HEADER + raw(hold + 1, 903, UTS, 9003)]
    changes = t.drain()  # 901 paired; 902 due: applied; 904 (at 3) and 903 held
    assert [(c.kind, c.ns.ns_id) for c in changes] == [("created", 902)] and t.deferred == 2
    assert t.stats.brief == 1 and t.replica.find_alive("net", 9001, 901) is None
    assert t.replica.find_alive("uts", 9002, 902) is not None
    assert [n.ns_id for n in t.replica.lookup("net", 9001)] == [901]  # its tombstone, with its creator
    assert t.replica.lookup("net", 9001)[0].creator.comm == "churn"
    now[0] = hold + 3
    changes = t.drain()  # 904 due, with no event of this drain
    assert [(c.kind, c.ns.ns_id) for c in changes] == [("created", 904)] and t.deferred == 1
    changes = t.catch_up()  # a read applies what is held
    assert [(c.kind, c.ns.ns_id) for c in changes] == [("created", 903)] and t.deferred == 0
    assert t.replica.counters.created["net"] - before.get("net", 0) == 1
    assert t.replica.counters.created["uts"] - before.get("uts", 0) == 3
    t.close()


def test_held_creations_keep_the_order_of_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events about a held namespace bring it back ahead of them: an inode number reused (no ns_ids,
    as before 6.18) keeps two namespaces apart, and a free without its creation is applied as one."""
    from nstrack.kernel import deferral as deferral_mod


    monkeypatch.setattr(deferral_mod, "boot_ns", lambda: 100)
    t, ring = event_tracker(generic=False)
    assert ("destroy_proc_free_inum", None) in t.plan.attach and t.inum_frees
    ring.spans = [HEADER + raw(1, 0, NET, 9010)]
    assert t.drain() == [] and t.deferred == 1
    # the inode number is reused: its first namespace's free was not seen (e.g. lost)
    ring.spans = [HEADER + raw(2, 0, NET, 9010) + HEADER + raw(3, 0, NET, 9010)]
    changes = t.drain()  # the held one and the first of this batch applied in order; the latest held
    created = [c.ns for c in changes if c.kind == "created"]
    assert [(n.inum, n.created_ns) for n in created] == [(9010, 1), (9010, 2)] and t.deferred == 1
    assert created[0].generation != created[1].generation
    ring.spans = [HEADER + destroyed_raw(4, 0, NET, 9010) + HEADER + destroyed_raw(5, 0, NET, 9011)]
    changes = t.drain()  # the held one and its free, applied as events (it supersedes a known one)
    assert [(c.kind, c.via, c.ns.created_ns) for c in changes] == [
        ("destroyed", "superseded", 2), ("created", "event", 3), ("destroyed", "event", 3)]
    assert t.deferred == 0 and t.replica.find_alive_inum(9010) is None  # 9011 unknown: nothing destroyed
    assert [n.created_ns for n in t.replica.lookup("net", 9010)] == [3, 2, 1]  # newest first
    t.replica.reconcile([NSRecord("uts", 9020, 0, 0, 0, None)], 0, startup=True)
    # inode numbers freed: one of a live namespace (applied), one of none (only counted), one whose
    # namespace is created in the same batch (paired)
    ring.spans = [HEADER + destroyed_raw(6, 0, 0, 9020) + HEADER + destroyed_raw(7, 0, 0, 9021)
                  + HEADER + raw(8, 0, NET, 9022) + HEADER + destroyed_raw(9, 0, 0, 9022)]
    changes = t.drain()
    assert [(c.kind, c.ns.inum) for c in changes] == [("destroyed", 9020)]
    assert t.stats.other_inum_frees == 1 and t.stats.brief == 1 and t.deferred == 0
    t.close()


def test_pairs_of_namespaces_the_replica_knows_are_applied_as_events() -> None:
    """A namespace the start-up scan found, whose free and a (duplicate) creation come in one drain: not a
    short-lived one; its entry is removed as by applying each event."""
    t, ring = event_tracker()
    t.replica.reconcile([NSRecord("uts", 9100, 910, 0, 0, None)], 0, startup=True)
    assert t.replica.knows_any([910], []) and t.replica.knows_any([0], [9100]) and not t.replica.knows_any([911], [1])
    ring.spans = [HEADER + raw(5, 910, UTS, 9100) + HEADER + destroyed_raw(6, 910, UTS, 9100)]
    changes = t.drain()
    assert [(c.kind, c.ns.ns_id) for c in changes] == [("destroyed", 910)]
    assert t.stats.brief == 0 and t.deferred == 0  # its creation is not held back: applied before its free
    assert t.catch_up() == [] and t.replica.find_alive("uts", 9100, 910) is None
    t.close()


# ------------------------------------------------------------------ pairing in BPF (brief_rb, young)

class FakeYoung:
    """Stands in for BPF's ``young`` map and the counters the tracker reads: creations held by inode
    number; ``paired_meanwhile``: inode numbers BPF pairs with their free between the tracker's lookup
    and its delete (the delete then fails, and the entry is not the tracker's)."""

    def __init__(self) -> None:
        self.held: dict[int, bytes] = {}
        # BPF's per-slot counters (young_in, young_paired: by bits 28.. of the creation's kernel time)
        self.counters = {"young_in": array("Q", [0] * 64), "young_paired": array("Q", [0] * 64)}
        self.paired_meanwhile: set[int] = set()
        self.counters["brief_stats"] = array("Q", [0] * (11 * 8))  # struct brief_stats per type
        self.comms: dict[tuple[int, bytes], int] = {}  # brief_comms: (type index, command) -> count
        self.comm_room = 256

    @staticmethod
    def slot(rec: bytes) -> int:
        return (EVENT.unpack(rec)[0] >> 28) % 64

    def hold(self, rec: bytes) -> None:
        self.held[EVENT.unpack(rec)[5]] = rec
        self.counters["young_in"][self.slot(rec)] += 1

    def lookup_all(self) -> tuple[bytes, bytes]:
        return b"".join(struct.pack("<I", k) for k in self.held), b"".join(self.held.values())

    def delete(self, key: bytes) -> bool:
        inum = struct.unpack("<I", key)[0]
        if inum in self.paired_meanwhile:
            self.counters["young_paired"][self.slot(self.held.pop(inum))] += 1
            return False
        return self.held.pop(inum, None) is not None

    def pair(self, inum: int, end: int | None = None) -> bytes:
        """BPF pairs a held creation with its free (at ``end``): counts it, and returns its brief_rb record."""
        rec = self.held.pop(inum)
        self.counters["young_paired"][self.slot(rec)] += 1
        return self.count_pair(rec, EVENT.unpack(rec)[0] if end is None else end)

    def count_pair(self, created: bytes, end: int) -> bytes:
        """As BPF's count_pair: a creation (EVENT record) freed at ``end`` counted in brief_stats, and its
        creator in brief_comms while there is room; returns its brief_rb record."""
        from nstrack.kernel.pairing import TYPE_INDEX
        from nstrack.model.records import BRIEF_COMM, BRIEF_STATS, LIFE_BOUNDS_NS

        ts, _id, _cg, _kind, flag, _inum, _o, _p, _pid, tgid, _src, comm = EVENT.unpack(created)
        t, life = TYPE_INDEX[flag], max(0, end - ts)
        stats, o = self.counters["brief_stats"], TYPE_INDEX[flag] * (BRIEF_STATS.size // 8)
        stats[o] += 1
        stats[o + 1] += life
        stats[o + 2 + bisect_left(LIFE_BOUNDS_NS, life)] += 1
        counted = BRIEF_COMM
        if tgid:
            if (t, comm) in self.comms or len(self.comms) < self.comm_room:
                self.comms[(t, comm)] = self.comms.get((t, comm), 0) + 1
            else:
                counted = 0
        return brief_raw(created, end, counted)

    def read_global_bytes(self, name: str) -> bytes:
        return self.counters[name].tobytes()

    def close(self) -> None:  # as the BPF object it stands in for
        self.held.clear()


class FakeCommMap:
    """Stands in for BPF's ``brief_comms`` map (listed by the tracker)."""

    def __init__(self, young: FakeYoung) -> None:
        self.young = young

    def lookup_all(self) -> tuple[bytes, bytes]:
        from nstrack.model.records import COMM_KEY

        items = list(self.young.comms.items())
        return (b"".join(COMM_KEY.pack(c, t, 0) for (t, c), _ in items),
                b"".join(struct.pack("<Q", n) for _, n in items))


def brief_raw(created: bytes, end: int, counted: int = 0) -> bytes:
    return struct.pack("<II", 88, 0) + created + struct.pack("<QII", end, counted, 0)


def pairing_tracker(monkeypatch: pytest.MonkeyPatch, now: list[int]) -> tuple[object, FakeRing, FakeRing, FakeYoung]:
    from nstrack.kernel import deferral as deferral_mod
    from nstrack.kernel import pairing as pairing_mod


    monkeypatch.setattr(deferral_mod, "boot_ns", lambda: now[0])
    monkeypatch.setattr(pairing_mod, "boot_ns", lambda: now[0])
    t, ring = event_tracker()
    assert t.pairing is not None  # serve in an event mode pairs in BPF
    briefs, young = FakeRing(), FakeYoung()
    t._obj = young  # type: ignore[assignment]
    t.pairing.briefs, t.pairing.young, t.pairing.obj = briefs, young, young  # type: ignore[assignment]
    t.pairing.comms = FakeCommMap(young)  # type: ignore[assignment]
    return t, ring, briefs, young


def test_pairs_made_in_bpf_are_counted_and_kept_as_tombstones(monkeypatch: pytest.MonkeyPatch) -> None:
    """brief_rb records (a creation and when it was freed) are counted by BPF (the tracker takes its
    totals: created and destroyed, creators, lifetimes), kept as tombstones with their creator and
    lifetime, and never alive. One whose namespace a scan had found is applied as events, and what BPF
    counted of it comes off BPF's counts (from later ones if they went to the replica already)."""
    from types import SimpleNamespace

    from nstrack.kernel import pairing as pairing_mod
    from nstrack.kernel import tracker as tracker_mod

    now = [10**9]
    t, _ring, briefs, young = pairing_tracker(monkeypatch, now)
    clock = [100.0]  # drains take BPF's counts once COUNTS_SECONDS have passed; catch_up always
    monkeypatch.setattr(tracker_mod, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(pairing_mod, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    step = pairing_mod.COUNTS_SECONDS
    t.replica.keep_brief_lives = True
    t.replica.reconcile([NSRecord("net", 7002, None, 0, 0, None), NSRecord("uts", 7010, None, 0, 0, None)], 0,
                        startup=True)  # found by a scan
    counters = t.replica.counters
    briefs.spans = [young.count_pair(raw(100, 0, UTS, 7001, comm=b"ip"), 350) + young.count_pair(raw(200, 0, NET, 7002), 260)
                    + young.count_pair(raw(300, 0, UTS, 7003, tgid=0), 900)]
    changes = t.drain()
    assert [(c.kind, c.ns.inum) for c in changes] == [("destroyed", 7002)]  # the one the replica knew
    assert t.replica.find_alive("net", 7002) is None and t.replica.alive_inums().isdisjoint({7001, 7003})
    assert counters.created == {"uts": 2} and counters.destroyed == {"uts": 2, "net": 1}
    assert t.stats.brief == 2 and t.stats.events == 6
    assert counters.by_comm == {("uts", "ip"): 1}  # the kernel's own (tgid 0) has no creator to count
    dead = t.replica.lookup("uts", 7001)
    assert len(dead) == 1 and not dead[0].alive and dead[0].creator.comm == "ip"
    assert (dead[0].created_ns, dead[0].destroyed_ns) == (100, 350)
    assert t.replica.brief_life_counts == [("net", [1] + [0] * 8, 60), ("uts", [2] + [0] * 8, 250 + 600)]
    assert [c.via for c in changes] == ["paired"]  # its lifetime is BPF's (serve leaves it to that)
    assert t.deferred == 0

    # BPF counts 7010 before its record reaches the ring: its counts go to the replica first, then the
    # record comes, is applied as events, and what BPF counted of it comes off the next pair's counts
    late = young.count_pair(raw(400, 0, UTS, 7010), 11 * 10**9)  # lived 11 s: the third bucket
    clock[0] += step / 2
    assert t.drain() == [] and counters.created == {"uts": 2}  # not yet taken
    clock[0] += step / 2
    assert t.drain() == [] and counters.created == {"uts": 3} and counters.destroyed == {"uts": 3, "net": 1}
    briefs.spans = [late]
    clock[0] += step
    assert [(c.kind, c.ns.inum, c.via) for c in t.drain()] == [("destroyed", 7010, "paired")]
    assert counters.created == {"uts": 3} and counters.destroyed == {"uts": 4, "net": 1}  # ahead by one, for now
    young.comm_room = len(young.comms)  # no room left for another command: counted from the record
    briefs.spans = [young.count_pair(raw(500, 0, UTS, 7011, comm=b"runc"), 600)]
    t.catch_up()
    assert counters.created == {"uts": 3} and counters.destroyed == {"uts": 4, "net": 1}  # 7010's taken off 7011's
    # runc: BPF had no room for it, counted from its record; churn: 7010's, ahead by one for now
    assert counters.by_comm == {("uts", "ip"): 1, ("uts", "churn"): 1, ("uts", "runc"): 1}
    briefs.spans = [young.count_pair(raw(600, 0, UTS, 7012), 700)]
    t.catch_up()
    assert counters.created == {"uts": 4} and counters.destroyed == {"uts": 5, "net": 1}  # as applying each event
    assert counters.by_comm == {("uts", "ip"): 1, ("uts", "churn"): 1, ("uts", "runc"): 1}
    # lifetimes: BPF's, each once (7010's change says "paired": serve leaves its lifetime to BPF's)
    assert t.replica.brief_life_counts[2:] == [("uts", [0, 0, 1] + [0] * 6, 11 * 10**9 - 400),
                                               ("uts", [1] + [0] * 8, 100), ("uts", [1] + [0] * 8, 100)]


def test_serve_is_behind_while_bpf_has_reported_more_than_it_took(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where BPF pairs, serve drains once a second; before a scrape or request it catches up
    (Service.catch_up) when ``behind``: a ring holds records, BPF's counts moved since they were last
    taken (a pair whose record the ring had no room for), or creations are held. Not otherwise."""
    now = [10**9]
    t, ring, briefs, young = pairing_tracker(monkeypatch, now)
    assert not t.behind
    briefs.spans = [young.count_pair(raw(100, 0, UTS, 7001), 350)]
    assert t.behind  # a record waits
    t.catch_up()
    assert not t.behind and t.replica.counters.created == {"uts": 1}
    young.count_pair(raw(200, 0, UTS, 7002), 400)  # counted in BPF, its record lost
    assert t.behind
    t.catch_up()
    assert not t.behind and t.replica.counters.created == {"uts": 2}
    ring.spans = [HEADER + raw(300, 0, UTS, 7003)]  # a creation on the events ring (`young` full)
    assert t.behind
    t.catch_up()
    assert not t.behind and t.replica.find_alive("uts", 7003) is not None
    young.hold(raw(now[0], 0, UTS, 7004))  # held in `young`
    assert t.behind
    t.catch_up()
    assert not t.behind and t.replica.find_alive("uts", 7004) is not None


def test_creations_held_in_bpf_are_taken_back_when_due(monkeypatch: pytest.MonkeyPatch) -> None:
    """A creation BPF still holds HOLD_SECONDS after it happened is deleted from ``young`` and applied;
    younger ones stay; one that BPF pairs with its free before the delete is left to BPF; catch_up
    takes all."""

    hold = int(HOLD_SECONDS * 1e9)
    now = [5 * hold]
    t, _ring, _briefs, young = pairing_tracker(monkeypatch, now)
    young.hold(raw(3 * hold, 0, NET, 8002))  # due (older than HOLD_SECONDS)
    young.hold(raw(2 * hold, 0, UTS, 8001))  # due, and older: applied first
    young.hold(raw(3 * hold + 1, 0, UTS, 8004))  # due, but BPF pairs it first
    young.paired_meanwhile.add(8004)
    young.hold(raw(now[0] - 10, 0, UTS, 8003))  # too young
    assert t.deferred == 4
    changes = t.drain()
    assert [(c.kind, c.ns.inum) for c in changes] == [("created", 8001), ("created", 8002)]
    assert t.replica.find_alive("uts", 8004) is None and t.deferred == 1 and set(young.held) == {8003}
    assert t.replica.find_alive("net", 8002).creator.comm == "churn"
    changes = t.catch_up()
    assert [(c.kind, c.ns.inum) for c in changes] == [("created", 8003)] and t.deferred == 0 and not young.held


def test_young_is_listed_only_once_something_can_be_due(monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing ``young`` walks all its buckets: drains list it only when BPF's per-slot counters show a
    slot whose creations are all due (the slot's latest period ended HOLD_SECONDS ago), no creation the
    last listing left is due later, and SWEEP_GAP_SECONDS have passed since it; creations BPF paired are
    never listed. What a listing finds due is taken back; catch_up takes all at once."""
    from nstrack.kernel import pairing as pairing_mod

    hold = int(HOLD_SECONDS * 1e9)
    gap = int(pairing_mod.SWEEP_GAP_SECONDS * 1e9)
    step = hold // 20
    now = [10 * hold]
    t, _ring, _briefs, young = pairing_tracker(monkeypatch, now)
    listed = [0]
    lookup_all = young.lookup_all

    def counting() -> tuple[bytes, bytes]:
        listed[0] += 1
        return lookup_all()

    def certain(ts: int) -> int:  # when every creation of ts's slot period is due
        return (((ts >> 28) + 1) << 28) + hold

    young.lookup_all = counting  # type: ignore[method-assign]
    first = now[0] - hold // 2
    young.hold(raw(first, 0, UTS, 8101))  # due in half a hold
    while now[0] < certain(first):
        assert t.drain() == [] and listed[0] == 0
        now[0] += step
    assert [(c.kind, c.ns.inum) for c in t.drain()] == [("created", 8101)] and listed[0] == 1
    last = now[0]
    second = last - hold + step // 2  # due just after that listing
    third = last + 1  # made after it
    young.hold(raw(second, 0, NET, 8102))
    young.hold(raw(third, 0, UTS, 8103))
    for ts, inum in ((second, 8102), (third, 8103)):
        when = max(certain(ts), t.pairing.next_sweep)
        assert when >= max(ts + hold, last + gap)
        now[0] = when - 1
        assert t.drain() == [] and t.deferred >= 1
        now[0] = when
        assert [(c.kind, c.ns.inum) for c in t.drain()] == [("created", inum)]
        last = now[0]
    assert listed[0] == 3 and t.deferred == 0
    young.hold(raw(now[0], 0, UTS, 8104))
    young.pair(8104)  # BPF pairs it with its free
    now[0] += 10 * hold
    assert t.drain() == [] and listed[0] == 3 and t.deferred == 0
    young.hold(raw(now[0], 0, UTS, 8105))
    assert [(c.kind, c.ns.inum) for c in t.catch_up()] == [("created", 8105)]  # catch_up takes all, at once


@pytest.mark.parametrize("comms", [[b"churn"] * 4, [b"churn", b"ip", b"churn", b"runc"]], ids=["one-command", "mixed"])
@pytest.mark.parametrize("kernel_made", [False, True], ids=["", "one-by-the-kernel"])
def test_settled_briefs_count_as_applying_each_event(monkeypatch: pytest.MonkeyPatch, comms: list[bytes],
                                                      kernel_made: bool) -> None:
    """A brief_rb batch and BPF's counts of it (as count_pair makes them) give the counters, creators and
    lifetimes that applying each creation and free as events gives."""
    made = [raw(10 * i, 50 + i, UTS if i % 2 else NET, 6100 + i, tgid=0 if kernel_made and i == 2 else 100,
                comm=c) for i, c in enumerate(comms)]
    a = Replica()
    for i, x in enumerate(made):
        a.apply(decode_event(x))
        a.apply(decode_event(destroyed_raw(10 * i + 7, 50 + i, UTS if i % 2 else NET, 6100 + i)))
    t, _ring, briefs, young = pairing_tracker(monkeypatch, [10**9])
    b = t.replica
    b.keep_brief_lives = True
    briefs.spans = [b"".join(young.count_pair(x, 10 * i + 7) for i, x in enumerate(made))]
    t.catch_up()
    for name in ("created", "destroyed", "by_comm"):
        assert getattr(b.counters, name) == getattr(a.counters, name), name
    assert sum(n for _, buckets, _ in b.brief_life_counts for n in buckets) == 4  # each lived 7 ns
    assert sum(total for _, _, total in b.brief_life_counts) == 4 * 7
    assert not b.alive and len([n for n in b.lookup() if not n.alive]) == 4


def test_spans_of_idle_inode_number_frees_are_counted_and_dropped() -> None:
    """Before 6.18 every freed proc inode number reaches the ring (proc_free_inum): a span of only such
    frees, of inode numbers no live namespace has and no waiting creation, is counted and dropped at
    once; one with a live namespace's, or a waiting creation's, is applied as before."""
    t, ring = event_tracker(generic=False)
    assert t.inum_frees
    t.replica.reconcile([NSRecord("net", 7100, None, 0, 0, None)], 0, startup=True)
    ring.spans = [HEADER + destroyed_raw(5, 0, 0, 9001) + HEADER + destroyed_raw(6, 0, 0, 9002)]
    assert t.drain() == [] and t.stats.other_inum_frees == 2 and t.deferred == 0
    ring.spans = [HEADER + destroyed_raw(7, 0, 0, 9003) + HEADER + destroyed_raw(8, 0, 0, 7100)]  # 7100 is alive
    assert [(c.kind, c.ns.inum) for c in t.drain()] == [("destroyed", 7100)] and t.stats.other_inum_frees == 3
    from nstrack.model.records import boot_ns

    now = boot_ns()
    ring.spans = [HEADER + raw(now, 0, UTS, 9004)]  # a creation, held for its free
    assert t.drain() == [] and t.deferred == 1
    ring.spans = [HEADER + destroyed_raw(now + 1, 0, 0, 9004)]  # its free, by inode number: the two pair
    assert t.drain() == [] and t.deferred == 0 and t.stats.brief == 1 and t.stats.other_inum_frees == 3
    assert t.replica.counters.created["uts"] == t.replica.counters.destroyed["uts"] == 1
