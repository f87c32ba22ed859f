"""Building the snapshot from scan records (no kernel)."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

import pytest

from nstrack.model.records import SLOTS as SLOTS_FOR_TEST
from nstrack.model.records import FileRecord, MountRecord, NSRecord, TaskRecord
from nstrack.model.snapshot import Snapshot, build, visible_user_namespaces
from nstrack.views.snapshot_cmd import parse_ns_arg
from nstrack.views.table import parse_columns, render, rows

INIT_USER, CHILD_USER, GRANDCHILD_USER = 4026531837, 4026532300, 4026532400
INIT_NET, BOUND_NET, FD_NET, SOCK_NET, KERNEL_NET = 4026531833, 4026532500, 4026532501, 4026532502, 4026532503
INIT_PID, CHILD_PID = 4026531836, 4026532600


def task(pid: int, net: int = INIT_NET, user: int = INIT_USER, pid_ns: int = INIT_PID, comm: str = "sh") -> TaskRecord:
    return TaskRecord(pid, pid, (net, 1, 2, 3, pid_ns, user, 4, 5, pid_ns, 5), comm, 0)


NAMESPACES = [
    NSRecord("user", INIT_USER, 1, 0, 0, 10),
    NSRecord("user", CHILD_USER, 2, INIT_USER, 0, 2),
    NSRecord("user", GRANDCHILD_USER, 3, CHILD_USER, 0, 1),
    NSRecord("net", INIT_NET, 4, INIT_USER, 0, 9),
    NSRecord("net", BOUND_NET, 5, INIT_USER, 0, 1),
    NSRecord("net", FD_NET, 6, CHILD_USER, 0, 1),
    NSRecord("net", SOCK_NET, 7, GRANDCHILD_USER, 0, 1),
    NSRecord("net", KERNEL_NET, 8, INIT_USER, 0, 1),
    NSRecord("pid", INIT_PID, 9, INIT_USER, 0, 5),
    NSRecord("pid", CHILD_PID, 10, INIT_USER, INIT_PID, 1),
]


def snap(**kw: object) -> Snapshot:
    return build(
        kernel="6.18", mode="oneshot", method="ns-lists", namespaces=NAMESPACES,
        tasks=[task(1), task(2, comm="holder")],
        files=[FileRecord(2, 7, "nsfs", "net", FD_NET), FileRecord(2, 8, "socket", "net", SOCK_NET),
               FileRecord(2, 9, "socket", "net", SOCK_NET)],
        mounts=[MountRecord(1, "/run/netns/blue", "net", BOUND_NET)],
        complete=True, scan_time=1_700_000_000.0, **kw,  # type: ignore[arg-type]
    )


def entry(s: Snapshot, name: str):  # type: ignore[no-untyped-def]
    return next(e for e in s.namespaces if e.name == name)


def test_each_holder_kind_and_orphans() -> None:
    s = snap()
    assert entry(s, f"net:[{INIT_NET}]").orphaned is False
    assert [t.pid for t in entry(s, f"net:[{INIT_NET}]").holders.tasks] == [1, 2]
    assert [t.role for t in entry(s, f"pid:[{INIT_PID}]").holders.tasks] == ["member", "member"]
    bound = entry(s, f"net:[{BOUND_NET}]")
    assert bound.orphaned and bound.holders.mounts[0].path == "/run/netns/blue"
    assert bound.keeps_alive == "held by a bind mount at /run/netns/blue (in mnt:[1])"
    fd = entry(s, f"net:[{FD_NET}]")
    assert fd.orphaned and (fd.holders.fds[0].pid, fd.holders.fds[0].fd, fd.holders.fds[0].comm) == (2, 7, "holder")
    sock = entry(s, f"net:[{SOCK_NET}]")
    assert sock.orphaned and sock.holders.sockets[0].count == 2
    assert "2 sockets of pid 2 holder" in (sock.keeps_alive or "")
    kernel = entry(s, f"net:[{KERNEL_NET}]")
    assert kernel.orphaned and "only kernel-internal references (refcount 1)" in (kernel.keeps_alive or "")
    child_user = entry(s, f"user:[{CHILD_USER}]")
    assert child_user.orphaned and child_user.holders.children == [f"net:[{FD_NET}]", f"user:[{GRANDCHILD_USER}]"]
    assert child_user.owner == f"user:[{INIT_USER}]"
    assert entry(s, f"pid:[{CHILD_PID}]").parent == f"pid:[{INIT_PID}]"
    assert f"pid:[{CHILD_PID}]" in entry(s, f"pid:[{INIT_PID}]").holders.children


def test_zombie_is_not_a_process_inside() -> None:
    zombie = TaskRecord(9, 9, (0, 0, 0, 0, CHILD_PID, INIT_USER, 0, 0, 0, 0), "defunct", 0)
    s = build(kernel="6.18", mode="oneshot", method="ns-lists", namespaces=NAMESPACES, tasks=[task(1), zombie],
              complete=True, scan_time=0.0)
    e = entry(s, f"pid:[{CHILD_PID}]")
    assert [t.role for t in e.holders.tasks] == ["zombie"]
    assert e.orphaned and "exited task pid 9 defunct that its parent has not reaped" in (e.keeps_alive or "")


def test_visibility_rule() -> None:
    assert visible_user_namespaces(CHILD_USER, {CHILD_USER: INIT_USER, GRANDCHILD_USER: CHILD_USER}) == {
        CHILD_USER, GRANDCHILD_USER}
    names = {e.name for e in snap(userns=CHILD_USER).namespaces}
    assert names == {f"user:[{CHILD_USER}]", f"user:[{GRANDCHILD_USER}]", f"net:[{FD_NET}]", f"net:[{SOCK_NET}]"}
    assert len(snap(userns=INIT_USER).namespaces) == len(NAMESPACES)


def test_filters() -> None:
    assert {e.type for e in snap(types={"pid"}).namespaces} == {"pid"}
    assert all(e.orphaned for e in snap(orphaned_only=True).namespaces)


def test_schema_in_repo_is_current() -> None:
    from nstrack.schema import PATH, schema_text

    assert PATH == Path(__file__).resolve().parents[2] / "nstrack" / "schema" / "snapshot.schema.json"
    assert json.loads(PATH.read_text()) == Snapshot.model_json_schema(), "run `make schema`"
    assert PATH.read_text() == schema_text(), "run `make schema` (same schema, other formatting)"


def test_snapshot_json_round_trip() -> None:
    s = snap()
    again = Snapshot.model_validate_json(s.model_dump_json())
    assert again == s
    d = json.loads(s.model_dump_json())
    assert set(d["namespaces"][0]["holders"]) == {"tasks", "fds", "mounts", "sockets", "children"}


def test_ns_argument_parsing() -> None:
    assert parse_ns_arg("net:[4026531833]") == ("net", 4026531833, None)
    assert parse_ns_arg("4026531833") == (None, 4026531833, None)
    assert parse_ns_arg("4102") == (None, None, 4102)
    with pytest.raises(ValueError, match="malformed"):
        parse_ns_arg("net:4026531833")
    with pytest.raises(ValueError, match="valid types"):
        parse_ns_arg("bogus:[1]")


def test_table() -> None:
    from nstrack.model.holders import aggregate

    entries = aggregate(NAMESPACES, [task(1), task(2)], mounts=[MountRecord(1, "/run/netns/blue", "net", BOUND_NET)])
    text = render(rows(entries), ["NS", "TYPE", "NPROCS", "HOLDERS", "ORPHANED"])
    lines = text.splitlines()
    assert lines[0].split() == ["NS", "TYPE", "NPROCS", "HOLDERS", "ORPHANED"]
    assert any(str(BOUND_NET) in ln and "mount:1" in ln and ln.endswith("yes") for ln in lines)
    with pytest.raises(ValueError, match="valid columns"):
        parse_columns("NS,BOGUS")


def test_fast_snapshot_dict_equals_the_pydantic_document() -> None:
    """/namespaces renders with snapshot_dict (no models); it must equal the published model's dump."""
    from nstrack.model.holders import aggregate
    from nstrack.model.records import Event
    from nstrack.model.replica import Replica
    from nstrack.model.snapshot import snapshot_dict

    replica = Replica()
    replica.reconcile(NAMESPACES, scan_start_ns=5_000_000_000, startup=True)
    # one namespace seen being created (creator, creation time with and without a fraction of a second)
    replica.apply(Event("created", "net", BOUND_NET, 5, 7_000_000_000, INIT_USER, 0, 42, 42, "ip", 99, "unshare"))
    replica.apply(Event("created", "net", FD_NET, 6, 7_250_000_000, INIT_USER, 0, 43, 43, "x", 1, "unshare"))
    files = [FileRecord(2, 7, "nsfs", "net", FD_NET), FileRecord(2, 8, "socket", "net", SOCK_NET)]
    mounts = [MountRecord(1, "/run/netns/blue", "net", BOUND_NET)]
    tasks = [task(1), task(2, comm="holder")]
    kw = {"kernel": "6.18", "mode": "tracepoint", "method": "ns-lists", "complete": False,
          "incomplete_reasons": ["why"], "scan_time": 1_700_000_000.25}
    model = build(**kw, namespaces=NAMESPACES, tasks=tasks, files=files, mounts=mounts, replica=replica,
                  free_latency=2.0)  # type: ignore[arg-type]
    entries = aggregate(NAMESPACES, tasks, files, mounts, replica=replica)
    fast = snapshot_dict(**kw, free_latency=2.0, entries=entries)  # type: ignore[arg-type]
    slow = model.model_dump(mode="json")
    # creation times go through CLOCK_BOOTTIME -> wall time conversions taken at slightly different moments
    for doc in (fast, slow):
        for e in doc["namespaces"]:  # type: ignore[union-attr]
            for k in ("created", "first_seen"):
                if e[k] is not None and e[k] != "2023-11-14T22:13:20.250000Z":
                    assert e[k].endswith("Z") and len(e[k]) in (20, 27)
                    e[k] = e[k][:16]
    assert fast == slow
    assert json.loads(json.dumps(fast)) == fast


def test_iso_times_match_pydantic() -> None:
    from nstrack.model.snapshot import _iso

    assert _iso(1_700_000_000.0) == "2023-11-14T22:13:20Z"
    assert _iso(1_700_000_000.5) == "2023-11-14T22:13:20.500000Z"


def test_ls_fast_rows_equal_rows_of_aggregate() -> None:
    """`ls` summarises a scan directly (scan_columns); it must say what rows(aggregate(...)) says."""
    import random

    from nstrack.model.holders import aggregate
    from nstrack.views.table import COLUMNS, column_rows, scan_columns

    cols = list(COLUMNS)
    rng = random.Random(7)
    for trial in range(40):
        inums = {t: [4026531000 + 100 * i + k for k in range(4)] for i, t in enumerate(
            ("net", "mnt", "uts", "ipc", "pid", "user", "cgroup", "time"))}
        namespaces = [NSRecord(t, n, rng.choice([None, 7 + n % 50]), rng.choice([0, *inums["user"]]) if t != "user"
                               or n != inums["user"][0] else 0,
                               rng.choice([0, *inums["pid"]]) if t == "pid" else 0, rng.randint(1, 9))
                      for t, ns in inums.items() for n in ns]
        tasks = []
        for pid in rng.sample(range(1, 60), rng.randint(0, 25)):
            slots = [rng.choice(inums[t]) for t, _ in SLOTS_FOR_TEST]
            if rng.random() < 0.15:
                slots[0] = 0  # exited (zombie): no nsproxy
            tasks.append(TaskRecord(pid, pid, tuple(slots), f"c{pid}", rng.choice([0, 1000])))
            if rng.random() < 0.3:  # a thread with namespaces of its own
                tasks.append(TaskRecord(pid + 100, pid, tuple(rng.choice(inums[t]) for t, _ in SLOTS_FOR_TEST),
                                        f"c{pid}", tasks[-1].uid))
        files = [FileRecord(rng.randint(1, 60), fd, rng.choice(["nsfs", "socket"]), "net" if rng.random() < .5
                            else "uts", rng.choice(inums["net"] + inums["uts"])) for fd in range(rng.randint(0, 8))]
        files = [f for f in files if f.kind == "nsfs" or f.type == "net"]
        mounts = [MountRecord(1, f"/m{i}", "net", rng.choice(inums["net"])) for i in range(rng.randint(0, 3))]
        types = rng.choice([None, {"net"}, {"pid", "user"}])
        orphaned = rng.random() < 0.3
        entries = aggregate(namespaces, tasks, files, mounts, types=types, orphaned_only=orphaned, explain=False)
        slow = rows(entries, cols)
        fast = column_rows(scan_columns(namespaces, tasks, files, mounts, cols, types, orphaned), cols)
        assert fast == slow, trial
        sub = rng.sample(cols, rng.randint(1, 4))  # only the columns asked for are computed
        got = column_rows(scan_columns(namespaces, tasks, files, mounts, sub, types, orphaned), sub)
        assert got == [{c: r[c] for c in sub} for r in slow], (trial, sub)


def test_refcount_accounting() -> None:
    """nsproxies (per slot), the nsfs inode and sockets explain references; the rest is unexplained."""
    from nstrack.model.holders import aggregate

    uts_a, uts_b, time_c, net_d = 4026532700, 4026532701, 4026532702, 4026532703
    base = (INIT_NET, 1, 2, 3, INIT_PID, INIT_USER, 4, 5, INIT_PID, 5)

    def t(pid: int, nsproxy: int, **slots: int) -> TaskRecord:
        inums = list(base)
        for i, v in slots.items():
            inums[int(i[1:])] = v
        return TaskRecord(pid, pid, tuple(inums), "x", 0, nsproxy)

    tasks = [t(10, 0xA, s2=uts_a), t(11, 0xA, s2=uts_a),  # two tasks, one nsproxy: one reference
             t(12, 0xB, s2=uts_b), t(13, 0xC, s7=time_c, s9=time_c), t(14, 0xD, s9=time_c), t(15, 0xE, s0=net_d)]
    namespaces = [NSRecord("uts", uts_a, 1, INIT_USER, 0, 1), NSRecord("uts", uts_b, 2, INIT_USER, 0, 4),
                  NSRecord("time", time_c, 3, INIT_USER, 0, 3), NSRecord("net", net_d, 4, INIT_USER, 0, 4),
                  NSRecord("user", INIT_USER, 5, 0, 0, 40), NSRecord("pid", INIT_PID, 6, INIT_USER, 0, 9)]
    files = [FileRecord(12, 3, "nsfs", "uts", uts_b), FileRecord(12, 4, "nsfs", "uts", uts_b),
             FileRecord(15, 3, "socket", "net", net_d), FileRecord(15, 4, "socket", "net", net_d)]
    got = {e.name: e.refs_unexplained for e in aggregate(namespaces, tasks, files)}
    assert got == {f"uts:[{uts_a}]": 0, f"uts:[{uts_b}]": 4 - 2, f"time:[{time_c}]": 0, f"net:[{net_d}]": 4 - 3,
                   f"user:[{INIT_USER}]": None, f"pid:[{INIT_PID}]": None}
    # without nsproxy identities (a /proc scan) nothing is claimed
    plain = [x._replace(nsproxy=0) for x in tasks]
    assert {e.refs_unexplained for e in aggregate(namespaces, plain, files)} == {None}


def test_entry_json_equals_entry_dict() -> None:
    """/namespaces writes entry_json; it must say what entry_dict (checked against the model) says."""
    from nstrack.model.holders import aggregate
    from nstrack.model.snapshot import entry_dict, entry_json

    files = [FileRecord(2, 7, "nsfs", "net", FD_NET), FileRecord(2, 8, "socket", "net", SOCK_NET)]
    tasks = [task(1), task(2, comm='hold"er\\'), task(3, net=FD_NET)]
    entries = aggregate(NAMESPACES, tasks, files, [MountRecord(1, "/run/netns/b\\x", "net", BOUND_NET)])
    from dataclasses import replace

    from nstrack.model.replica import Creator

    creator = Creator(41, 42, 'ünshare "x"\\', 7)  # non-ASCII, quote, backslash: escaped as json.dumps does
    entries += [replace(e, created_ns=123_456_789_012 + i, first_seen_ns=5_000_000_000, creator=creator,
                        ns_id=None, refcount=None, keeps_alive='held by "\u2603"\n' if i % 2 else e.keeps_alive)
                for i, e in enumerate(entries)]
    memo: dict[int, str] = {}
    for e in entries:
        assert json.loads(entry_json(e, 1_700_000_000.5, 12.0, memo)) == entry_dict(e, 1_700_000_000.5, 12.0)
    assert memo  # task holders were shared and encoded once


def test_iso_times_as_pydantic_writes_them() -> None:
    """snapshot._iso (fast, for /namespaces) against datetime, whose rounding pydantic's output has."""
    import random
    from datetime import datetime

    from pydantic import TypeAdapter

    from nstrack.model.snapshot import _iso

    rng = random.Random(3)
    stamps = [1_700_000_000.0, 1_700_000_000.5, 1_700_000_000.9999996, 1_700_000_000.0000005, 0.25]
    stamps += [rng.uniform(1.5e9, 2.5e9) for _ in range(2000)]
    stamps += [rng.randint(1_600_000_000, 1_900_000_000) + rng.randint(0, 999_999) / 1e6 for _ in range(2000)]
    dump = TypeAdapter(datetime).dump_python
    for ts in stamps:
        assert _iso(ts) == dump(datetime.fromtimestamp(ts, UTC), mode="json"), ts


def test_ls_json_text_is_what_json_writes() -> None:
    """`ls --json` (and serve's /ls) write rows with a template: the same document as json.dumps."""
    from nstrack.views.table import COLUMNS, json_text

    rs = [{"NS": 4026531840, "TYPE": "net", "NPROCS": 0, "PID": None, "USER": 'r"o\\ot', "COMMAND": "ünshare\n",
           "HOLDERS": "kernel", "ORPHANED": True, "NSID": None, "NAME": "net:[4026531840]", "OWNER": None,
           "CREATOR": "a,b}, {c"},
          {"NS": 1, "TYPE": "uts", "NPROCS": 3, "PID": 7, "USER": "root", "COMMAND": "sleep", "HOLDERS": "tasks:3",
           "ORPHANED": False, "NSID": 12, "NAME": "uts:[1]", "OWNER": "user:[2]", "CREATOR": None}]
    for columns in (list(COLUMNS), ["NS"], ["COMMAND", "ORPHANED"]):
        text = json_text(rs, columns)
        assert json.loads(text) == {"namespaces": [{c.lower(): r[c] for c in columns} for r in rs]}
        assert text.count("\n") == len(rs) + 1  # one object per line, like lsns
    assert json.loads(json_text([], ["NS"])) == {"namespaces": []}
