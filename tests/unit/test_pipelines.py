"""The tracker's pipeline objects alone (kernel/deferral.py, kernel/pairing.py), each with a stand-in
for the Tracker that gives them a replica, counters and ``_apply_rows``: which records may wait, what
waiting costs, and what each hands to the replica. (test_settle.py drives them through a Tracker.)"""

from __future__ import annotations

from array import array
from types import SimpleNamespace
from typing import Any

import pytest

from nstrack.kernel.deferral import ByDrain, UntilScan
from nstrack.kernel.pairing import BPFPairing
from nstrack.kernel.tracker import Stats
from nstrack.model.records import Row
from nstrack.model.replica import Change, Replica
from tests.unit.test_settle import HEADER, NET, UTS, destroyed_raw, raw


class StandIn:
    """What a pipeline uses of its Tracker."""

    def __init__(self, inum_frees: bool = False) -> None:
        self.replica = Replica()
        self.stats = Stats()
        self.inum_frees = inum_frees
        self.applied: list[Row] = []
        self.rescans = 0

    def _apply_rows(self, rows: list[Row], changes: list[Change]) -> None:
        self.applied += rows

    def rescan(self) -> list[Change]:
        self.rescans += 1
        return []


def span(*records: bytes) -> tuple[bytes, array[int], int]:
    data = b"".join(HEADER + r for r in records)
    return data, array("I", data), len(records)


def test_until_scan_keeps_only_tracepoint_creations_with_an_ns_id() -> None:
    t = StandIn()
    d = UntilScan.for_types(t, {"net", "uts"})  # type: ignore[arg-type]
    assert d.keep(*span(raw(1, 11, NET, 4026532011), raw(2, 12, UTS, 4026532012)))
    assert d.count == 2 and t.stats.events == 2  # counted as they arrive
    assert not d.keep(*span(raw(3, 0, NET, 4026532013)))  # no ns_id: settle could not find it
    assert not d.keep(*span(destroyed_raw(4, 11, NET, 4026532011)))  # a free never waits
    ipc = 0x08000000
    assert not d.keep(*span(raw(5, 15, ipc, 4026532015)))  # a type not tracked by rescans
    assert d.count == 2 and t.stats.events == 2
    changes: list[Change] = []
    d.catch_up(changes)  # before a scrape: a rescan settles them
    assert t.rescans == 1


def test_until_scan_applies_as_events_without_a_complete_scan() -> None:
    t = StandIn()
    d = UntilScan.for_types(t, {"net"})  # type: ignore[arg-type]
    d.keep(*span(raw(1, 11, NET, 4026532011)))
    changes: list[Change] = []
    brief = d.on_rescan(SimpleNamespace(complete=False), changes)  # type: ignore[arg-type]
    assert brief == 0 and [(c.kind, c.ns.inum) for c in changes] == [("created", 4026532011)]
    assert d.count == 0 and not d.spans


def test_by_drain_counts_a_pair_and_holds_a_creation_for_its_free(monkeypatch: pytest.MonkeyPatch) -> None:
    from nstrack.kernel import deferral as deferral_mod

    monkeypatch.setattr(deferral_mod, "boot_ns", lambda: 10**9)
    t = StandIn()
    d = ByDrain.every_event(t)  # type: ignore[arg-type]
    assert d.keep(*span(raw(10**9 - 5, 21, NET, 4026532021), destroyed_raw(10**9 - 4, 21, NET, 4026532021),
                        raw(10**9 - 3, 22, UTS, 4026532022)))
    changes: list[Change] = []
    d.end_drain(changes)
    assert t.stats.brief == 1 and t.stats.events == 2 and not t.applied  # the pair: counted only
    assert d.count == 1  # the lone creation waits for its free (HOLD_SECONDS)
    d.catch_up(changes)  # a scrape takes it now
    assert d.count == 0 and [r[5] for r in t.applied] == [4026532022]


def test_by_drain_drops_spans_of_idle_inode_number_frees() -> None:
    t = StandIn(inum_frees=True)
    d = ByDrain.every_event(t)  # type: ignore[arg-type]
    assert d.keep(*span(destroyed_raw(1, 0, 0, 9001), destroyed_raw(2, 0, 0, 9002)))
    assert d.count == 0 and t.stats.other_inum_frees == 2  # proc entries: counted and dropped
    d.keep(*span(raw(3, 0, NET, 9003)))  # a creation waits ...
    assert d.keep(*span(destroyed_raw(4, 0, 0, 9003))) and d.count == 2  # ... so its free waits with it


def test_bpf_pairing_before_attach_holds_nothing_and_is_not_behind() -> None:
    p = BPFPairing(StandIn())  # type: ignore[arg-type]
    assert p.held() == 0 and p.counts() is None
    ring: Any = SimpleNamespace(waiting=lambda: 1)
    assert not p.behind(ring)
    changes: list[Change] = []
    p.sweep(changes, everything=True)
    assert changes == []
    p.close()
