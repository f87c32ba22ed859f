"""Record decoding, and the Python layouts against the compiled BPF object's own BTF."""

from __future__ import annotations

import struct as struct_mod
from pathlib import Path

import pytest

from nstrack.kernel.libbpf import struct_layout
from nstrack.kernel.objects import bpf_object
from nstrack.model.records import (
    BRIEF_ROW,
    BRIEF_STATS,
    COMM_KEY,
    EVENT,
    FILE_RECORD,
    NS_RECORD,
    TASK_RECORD,
    RecordError,
    decode_event,
    decode_ns_record,
    decode_tasks,
)

NET, USER = 0x40000000, 0x10000000


@pytest.mark.parametrize(
    ("struct", "fmt", "first", "last"),
    [("ns_event", EVENT, ("ts_ns", 0), ("comm", 56)),
     ("ns_record", NS_RECORD, ("ns_id", 0), ("owner_ns_id", 32)),
     ("task_record", TASK_RECORD, ("pid", 0), ("nsproxy_id", 68)),
     ("file_record", FILE_RECORD, ("tgid", 0), ("owner_inum", 20)),
     ("ns_brief", struct_mod.Struct(BRIEF_ROW.format.replace("<8x", "<")), ("ev", 0), ("reserved", 84)),
     ("brief_stats", BRIEF_STATS, ("count", 0), ("life", 16)),
     ("comm_key", COMM_KEY, ("comm", 0), ("reserved", 20))],
)
def test_layouts_match_the_compiled_object(struct: str, fmt: object, first: tuple[str, int], last: tuple[str, int]) -> None:
    size, members = struct_layout(bpf_object("nstrack"), struct)
    assert size == fmt.size  # type: ignore[attr-defined]
    assert members[first[0]] == first[1] and members[last[0]] == last[1]


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
    from nstrack.kernel.tracker import YOUNG_SLOTS

    obj = BPFObject.open(bpf_object("nstrack"))
    try:
        layout = obj._datasec_vars(".bss")
        assert layout["young_in"][1] == layout["young_paired"][1] == 8 * YOUNG_SLOTS
    finally:
        obj.close()
    source = (Path(__file__).parents[2] / "bpf" / "nstrack.bpf.c").read_text()
    from nstrack.kernel.tracker import YOUNG_SLOT_SHIFT

    assert f"#define YOUNG_SLOTS {YOUNG_SLOTS}\n" in source and f"#define YOUNG_SLOT_SHIFT {YOUNG_SLOT_SHIFT} " in source


def test_lifetime_bounds_are_those_of_bpf_and_serve() -> None:
    """BPF counts lifetimes in the buckets serve's histogram has (LIFE_BOUNDS_NS: its finite bounds)."""
    import re

    from nstrack.model.records import LIFE_BOUNDS_NS
    from nstrack.service import LIFETIME_BUCKETS

    source = (Path(__file__).parents[2] / "bpf" / "nstrack.bpf.c").read_text()
    table = re.search(r"life_bounds\[NSTRACK_LIFE_BOUNDS\] = \{([^}]*)\}", source)
    assert table is not None
    assert tuple(int(x.strip().removesuffix("ULL")) for x in table.group(1).split(",") if x.strip()) == LIFE_BOUNDS_NS
    assert tuple(b * 10**9 for b in LIFETIME_BUCKETS[:-1]) == LIFE_BOUNDS_NS and LIFETIME_BUCKETS[-1] == float("inf")
    assert "#define NSTRACK_LIFE_BOUNDS 8 " in (Path(__file__).parents[2] / "bpf" / "nstrack.h").read_text()


def test_bpf_type_indexes_are_the_python_order() -> None:
    """brief_stats and brief_comms are indexed by type in nstypes' order (type_index in the BPF source)."""
    import re

    from nstrack.model.nstypes import TYPE_NAMES

    source = (Path(__file__).parents[2] / "bpf" / "nstrack.bpf.c").read_text()
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
