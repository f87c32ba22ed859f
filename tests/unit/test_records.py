"""Record decoding, and the Python layouts against the compiled BPF object's own BTF."""

from __future__ import annotations

import struct as struct_mod
from array import array
from pathlib import Path

import pytest

from nstrack.kernel.libbpf import struct_members
from nstrack.kernel.objects import bpf_object
from nstrack.model.records import (
    BRIEF_ROW,
    EVENT,
    EVENT_ROW,
    LAYOUT_BRIEF_STATS,
    LAYOUT_COMM_KEY,
    LAYOUT_FILE_RECORD,
    LAYOUT_NS_BRIEF,
    LAYOUT_NS_EVENT,
    LAYOUT_NS_RECORD,
    LAYOUT_TASK_RECORD,
    NS_RECORD,
    TASK_RECORD,
    Layout,
    RecordError,
    decode_event,
    decode_ns_record,
    decode_tasks,
)

NET, USER = 0x40000000, 0x10000000


# which object each record lives in: the event programs write these, the scan iterators those
OBJECT_OF = {"ns_event": "events", "ns_brief": "events", "brief_stats": "events", "comm_key": "events",
             "ns_record": "scan", "task_record": "scan", "file_record": "scan"}
LAYOUTS = [LAYOUT_NS_EVENT, LAYOUT_NS_BRIEF, LAYOUT_NS_RECORD, LAYOUT_TASK_RECORD, LAYOUT_FILE_RECORD, LAYOUT_COMM_KEY,
           LAYOUT_BRIEF_STATS]


@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout.c_name for layout in LAYOUTS])
def test_layouts_match_the_compiled_object(layout: Layout) -> None:
    """Every member Python declares is the compiled object's own, in its order, at its offset and of its
    size, and the struct's size is the same: a moved or resized field fails here, not on a kernel."""
    size, members = struct_members(bpf_object(OBJECT_OF[layout.c_name]), layout.c_name)
    assert layout.size == size
    declared = {name: (f.offset, f.size) for name, f in layout.fields.items() if "." not in name}
    assert list(declared) == list(members)
    assert declared == members


def test_ring_layouts_and_columns_follow_the_header() -> None:
    """In a ring every record has an 8-byte header before it and is padded to 8 bytes; the column slices
    pick each member of every record out of its words."""
    ring = LAYOUT_NS_EVENT.in_ring()
    assert ring.size == 80 and ring.fields["inum"].offset == 8 + LAYOUT_NS_EVENT.fields["inum"].offset
    assert ring.index == LAYOUT_NS_EVENT.index and EVENT_ROW.size == ring.size
    assert BRIEF_ROW.size == 96 and LAYOUT_NS_BRIEF.in_ring().fields["ev.comm"].offset == 8 + 56
    rows = [(10**18 + i, 5000 + i, 7, 1, NET, 4026532000 + i, 1, 0, 300 + i, 400 + i, 6, b"x" * 16) for i in range(4)]
    data = b"".join(EVENT_ROW.pack(*r) for r in rows)
    for name in ("ts_ns", "ns_id", "kind", "ns_type", "inum", "tgid", "source"):
        code = LAYOUT_NS_EVENT.fields[name].code
        assert list(array(code, data)[ring.column(name)]) == [r[LAYOUT_NS_EVENT.index[name]] for r in rows], name
    with pytest.raises(ValueError, match="machine word"):
        ring.column("comm")


def test_row_makes_a_record_by_member_names() -> None:
    r = LAYOUT_NS_EVENT.row(ts_ns=5, inum=9, kind=2, source=7)
    assert EVENT.unpack(EVENT.pack(*r)) == r == (5, 0, 0, 2, 0, 9, 0, 0, 0, 0, 7, bytes(16))
    with pytest.raises(ValueError, match="no single-item member"):
        LAYOUT_NS_EVENT.row(nonsense=1)


def test_a_nested_struct_and_padding_follow_c_alignment() -> None:
    inner = Layout("inner", [("a", "I"), ("b", "Q")])  # a 4-byte hole after a
    outer = Layout("outer", [("c", "I"), ("in", inner), ("d", "I")])
    assert (inner.size, inner.fields["b"].offset) == (16, 8)
    assert (outer.fields["in"].offset, outer.fields["in.b"].offset, outer.fields["d"].offset, outer.size) == (8, 16, 24, 32)
    assert outer.struct.unpack(outer.struct.pack(1, 2, 3, 4)) == (1, 2, 3, 4)
    assert outer.index == {"c": 0, "in": 1, "in.a": 1, "in.b": 2, "d": 3}


def test_event_round_trip() -> None:
    raw = EVENT.pack(123, 4102, 9, 1, NET, 4026532178, 4026531837, 0, 88, 87, 6, b"unshare\0\0\0")
    ev = decode_event(raw)
    assert (ev.kind, ev.type, ev.inum, ev.ns_id, ev.pid, ev.tgid, ev.comm, ev.source) == (
        "created", "net", 4026532178, 4102, 88, 87, "unshare", "unshare")
    assert ev.name == "net:[4026532178]"
    ev2 = decode_event(EVENT.pack(5, 0, 0, 2, USER, 7, 0, 0, 0, 0, 2, b""))
    assert ev2.kind == "destroyed" and ev2.ns_id is None and ev2.source == "tree_remove"
    ev3 = decode_event(EVENT.pack(5, 0, 0, 2, 0, 4026532000, 0, 0, 0, 0, 7, b""))
    assert ev3.type == "" and ev3.source == "free_inum"


@pytest.mark.parametrize(
    "raw",
    [b"short", EVENT.pack(1, 1, 1, 9, NET, 1, 1, 0, 1, 1, 1, b""), EVENT.pack(1, 1, 1, 1, 0x3, 1, 1, 0, 1, 1, 1, b"")],
    ids=["truncated", "bad-kind", "bad-type"],
)
def test_bad_event_records_raise(raw: bytes) -> None:
    with pytest.raises(RecordError):
        decode_event(raw)


def test_ns_record_and_tasks() -> None:
    r = decode_ns_record(NS_RECORD.pack(3, NET, 4026531840, 4026531837, 0, 5, 0, 1))
    assert (r.type, r.inum, r.ns_id, r.refcount, r.owner_ns_id) == ("net", 4026531840, 3, 5, 1)
    inums = (10, 11, 12, 13, 14, 15, 16, 17, 14, 17)
    data = TASK_RECORD.pack(7, 7, *inums, b"sleep", 1000, 0xABC1) * 2
    tasks = decode_tasks(data)
    assert len(tasks) == 2 and tasks[0].comm == "sleep" and tasks[0].uid == 1000 and tasks[0].nsproxy == 0xABC1
    assert tasks[0].namespaces() == [("net", 10), ("mnt", 11), ("uts", 12), ("ipc", 13), ("pid", 14),
                                     ("user", 15), ("cgroup", 16), ("time", 17)]
    with pytest.raises(RecordError, match="multiple"):
        decode_tasks(data[:-1])


def test_young_slot_counters_match_the_compiled_object() -> None:
    """The tracker reads BPF's per-slot counters of `young` as YOUNG_SLOTS u64s each."""
    from nstrack.kernel.libbpf import BPFObject
    from nstrack.kernel.pairing import YOUNG_SLOTS

    obj = BPFObject.open(bpf_object("events"))
    try:
        layout = obj._datasec_vars(".bss")
        assert layout["young_in"][1] == layout["young_paired"][1] == 8 * YOUNG_SLOTS
    finally:
        obj.close()
    source = (Path(__file__).parents[2] / "bpf" / "events.bpf.c").read_text()
    from nstrack.kernel.pairing import YOUNG_SLOT_SHIFT

    assert f"#define YOUNG_SLOTS {YOUNG_SLOTS}\n" in source and f"#define YOUNG_SLOT_SHIFT {YOUNG_SLOT_SHIFT} " in source


def test_lifetime_bounds_are_those_of_bpf_and_serve() -> None:
    """BPF counts lifetimes in the buckets serve's histogram has (LIFE_BOUNDS_NS: its finite bounds)."""
    import re

    from nstrack.model.records import LIFE_BOUNDS_NS
    from nstrack.service import LIFETIME_BUCKETS

    source = (Path(__file__).parents[2] / "bpf" / "events.bpf.c").read_text()
    table = re.search(r"life_bounds\[NSTRACK_LIFE_BOUNDS\] = \{([^}]*)\}", source)
    assert table is not None
    assert tuple(int(x.strip().removesuffix("ULL")) for x in table.group(1).split(",") if x.strip()) == LIFE_BOUNDS_NS
    assert tuple(b * 10**9 for b in LIFETIME_BUCKETS[:-1]) == LIFE_BOUNDS_NS and LIFETIME_BUCKETS[-1] == float("inf")
    assert "#define NSTRACK_LIFE_BOUNDS 8 " in (Path(__file__).parents[2] / "bpf" / "nstrack.h").read_text()


def test_bpf_type_indexes_are_the_python_order() -> None:
    """brief_stats and brief_comms are indexed by type in nstypes' order (type_index in the BPF source)."""
    import re

    from nstrack.model.nstypes import TYPE_NAMES

    source = (Path(__file__).parents[2] / "bpf" / "events.bpf.c").read_text()
    cases = dict(re.findall(r"case CLONE_NEW(\w+): return (\d);", source))
    names = {"NET": "net", "NS": "mnt", "UTS": "uts", "IPC": "ipc", "PID": "pid", "USER": "user", "CGROUP": "cgroup",
             "TIME": "time"}
    assert {names[k]: int(v) for k, v in cases.items()} == {t: i for i, t in enumerate(TYPE_NAMES)}


def test_brief_batch_columns_are_the_records_fields() -> None:
    """BriefBatch cuts each column when first asked for: every one equals the field of each record, as
    BRIEF_ROW unpacks it, whichever is asked first; an unknown name is an AttributeError."""
    from nstrack.model.records import BriefBatch

    fields = {"ts": 0, "ns_id": 1, "kind": 3, "flag": 4, "inum": 5, "tgid": 9, "src": 10, "end": 12, "counted": 13}
    rows = [(10**18 + i, 5000 + i, 77, 1, NET, 4026532000 + i, 4026531837, 0, 300 + i, 400 + i, 6,
             (b"ip%d" % i).ljust(16, b"\0"), 2 * 10**18 + i, i % 2, 0) for i in range(5)]
    data = b"".join(struct_mod.pack("<II", BRIEF_ROW.size - 8, 0) + BRIEF_ROW.pack(*r)[8:] for r in rows)
    for order in (list(fields), list(reversed(fields))):
        batch = BriefBatch(data)
        assert len(batch) == 5
        for name in order:
            assert list(getattr(batch, name)) == [r[fields[name]] for r in rows], name
        assert batch.row(3) == rows[3][:12] and batch.comm(4) == rows[4][11]
    with pytest.raises(AttributeError):
        BriefBatch(data).nonsense  # noqa: B018
    with pytest.raises(RecordError):
        BriefBatch(data[:-1])
