"""The replica's rules, without a kernel."""

from __future__ import annotations

from nstrack.model.records import Event, NSRecord
from nstrack.model.replica import Replica


def ev(kind: str, inum: int, ts: int, ns_id: int | None = None, type_: str = "net", tgid: int = 100,
       source: str = "unshare") -> Event:
    return Event(kind, type_, inum, ns_id, ts, 1, 0, tgid, tgid, "unshare", 9, source)


def rec(inum: int, ns_id: int | None = None, type_: str = "net") -> NSRecord:
    return NSRecord(type_, inum, ns_id, 1, 0, 2)


def test_create_then_destroy_by_id() -> None:
    r = Replica()
    [c] = r.apply(ev("created", 5, 10, ns_id=50))
    assert c.kind == "created" and c.ns.creator and c.ns.creator.tgid == 100
    assert r.apply(ev("created", 5, 11, ns_id=50)) == []  # duplicate
    assert r.counters.duplicates == 1
    [d] = r.apply(ev("destroyed", 5, 20, ns_id=50))
    assert d.ns is c.ns and not c.ns.alive and c.ns.destroyed_by == "event"
    assert len(r) == 0 and list(r.tombstones.values()) == [c.ns]
    assert r.counters.created["net"] == 1 and r.counters.destroyed["net"] == 1


def test_inum_reuse_is_a_new_namespace_with_ids() -> None:
    r = Replica()
    [a] = r.apply(ev("created", 5, 10, ns_id=50))
    r.apply(ev("destroyed", 5, 20, ns_id=50))
    [b] = r.apply(ev("created", 5, 30, ns_id=51))
    assert a.ns is not b.ns and a.ns.key != b.ns.key
    assert [n.ns_id for n in r.lookup("net", 5)] == [51, 50]


def test_inum_reuse_without_ids_uses_generations() -> None:
    r = Replica()
    [a] = r.apply(ev("created", 5, 10))
    r.apply(ev("destroyed", 5, 20))
    [b] = r.apply(ev("created", 5, 30))
    assert (a.ns.generation, b.ns.generation) == (1, 2)
    assert a.ns.key != b.ns.key


def test_missed_free_before_reuse_is_healed() -> None:
    """Without ids, a second creation of an alive event-created inum means the first one died."""
    r = Replica()
    [a] = r.apply(ev("created", 5, 10))
    changes = r.apply(ev("created", 5, 30))
    assert [c.kind for c in changes] == ["destroyed", "created"]
    assert changes[0].ns is a.ns and a.ns.destroyed_by == "superseded"
    assert r.counters.reused_inums == 1 and len(r) == 1


def test_event_after_scan_merges_into_the_scanned_namespace() -> None:
    r = Replica()
    [s] = r.reconcile([rec(5)], scan_start_ns=100, startup=True)
    assert s.via == "startup" and s.ns.learned_by == "scan"
    assert r.apply(ev("created", 5, 90)) == []  # it happened before the scan finished: same one
    assert s.ns.creator is not None and s.ns.created_ns == 90 and len(r) == 1
    [_] = Replica().reconcile([rec(6, ns_id=60)], 100, startup=True)
    r2 = Replica()
    r2.reconcile([rec(6, ns_id=60)], 100, startup=True)
    assert r2.apply(ev("created", 6, 90, ns_id=60)) == []
    assert r2.find_alive("net", 6, 60).creator is not None  # type: ignore[union-attr]


def test_reconcile_finds_frees_and_missed_creations() -> None:
    r = Replica()
    r.apply(ev("created", 5, 10, ns_id=50))
    r.apply(ev("created", 6, 300, ns_id=60))  # created after the scan below began
    changes = r.reconcile([rec(7, ns_id=70)], scan_start_ns=200)
    kinds = sorted((c.kind, c.ns.inum, c.via) for c in changes)
    assert kinds == [("created", 7, "rescan"), ("destroyed", 5, "rescan")]
    assert r.find_alive("net", 6, 60) is not None
    assert r.counters.missed_creations == 1 and r.counters.missed_destroys == 1


def test_incomplete_scan_declares_nothing_dead() -> None:
    r = Replica()
    r.apply(ev("created", 5, 10, ns_id=50))
    assert r.reconcile([], scan_start_ns=200, types=set()) == []
    assert len(r) == 1


def test_reconcile_only_checks_the_given_types() -> None:
    r = Replica()
    r.apply(ev("created", 5, 10, type_="uts"))
    r.apply(ev("created", 6, 10, type_="net"))
    changes = r.reconcile([], scan_start_ns=200, types={"net"})
    assert [(c.kind, c.ns.type) for c in changes] == [("destroyed", "net")]


def test_unknown_destroy_is_counted() -> None:
    r = Replica()
    assert r.apply(ev("destroyed", 9, 10)) == []
    assert r.counters.unknown_destroys == 1


def test_tombstones_are_bounded_in_time_and_number() -> None:
    r = Replica(tombstone_seconds=1.0, tombstone_max=3)
    for i in range(5):
        r.apply(ev("created", i, 10, ns_id=i + 1))
        r.apply(ev("destroyed", i, (20 + i) * 10**9, ns_id=i + 1))
    assert [n.inum for n in r.tombstones.values()] == [2, 3, 4]  # at most 3
    assert r.expire(now_ns=int(24.5e9)) == 2  # died at 22 s and 23 s: over 1 s ago
    assert [n.inum for n in r.tombstones.values()] == [4]


def test_freed_inode_number_resolves_the_type() -> None:
    """proc_free_inum reports only an inum: the live namespace with it, whatever its type, is gone."""
    r = Replica()
    [c] = r.apply(ev("created", 77, 10, type_="uts"))
    [d] = r.apply(Event("destroyed", "", 77, None, 20, 0, 0, 0, 0, "", 0, "free_inum"))
    assert d.ns is c.ns and not c.ns.alive
    assert r.find_alive_inum(77) is None


def test_reconcile_learning_an_ns_id_reindexes_the_namespace() -> None:
    r = Replica()
    r.reconcile([NSRecord("net", 4026532100, None, 0, 0, None)], scan_start_ns=10, startup=True)
    v = r.version
    r.reconcile([NSRecord("net", 4026532100, 77, 0, 0, None)], scan_start_ns=20)
    assert r.version > v
    ns = r.find_alive("net", 4026532100, 77)
    assert ns is not None and ns.ns_id == 77 and list(r.alive) == [ns.key]
    # a later scan without it frees it under its new identity, leaving nothing behind
    changes = r.reconcile([], scan_start_ns=30, types={"net"})
    assert [c.kind for c in changes] == ["destroyed"] and not r.alive and r.find_alive_inum(4026532100) is None


def test_version_moves_only_on_change_and_deferred_counts_young_namespaces() -> None:
    r = Replica()
    recs = [NSRecord("uts", 4026532200, 5, 0, 0, 2)]
    r.reconcile(recs, scan_start_ns=10, startup=True)
    v = r.version
    assert r.reconcile(recs, scan_start_ns=20) == [] and r.version == v and r.deferred == 0
    r.apply(ev("created", 4026532300, 50, ns_id=6, type_="ipc"))  # born after the next scan starts
    assert r.version > v
    assert r.reconcile(recs, scan_start_ns=40, types={"uts", "ipc"}) == [] and r.deferred == 1


def test_creations_by_command_are_capped() -> None:
    from nstrack.model.replica import CREATOR_COMMS, OTHER_COMM

    r = Replica()
    for i in range(CREATOR_COMMS + 5):
        e = ev("created", 4026540000 + i, 10 + i, ns_id=1000 + i)
        r.apply(e._replace(comm=f"cmd{i}"))
    r.apply(ev("created", 4026550000, 99, ns_id=5000, type_="uts")._replace(comm="cmd0"))
    by = r.counters.by_comm
    assert by[("net", "cmd0")] == 1 and by[("uts", "cmd0")] == 1  # a known command keeps its series
    assert by[("net", OTHER_COMM)] == 5 and len({c for _, c in by}) == CREATOR_COMMS + 1
    r.reconcile([NSRecord("ipc", 4026560000, 9000, 0, 0, 1)], scan_start_ns=200)  # no creator: not counted
    assert sum(by.values()) == CREATOR_COMMS + 5 + 1
