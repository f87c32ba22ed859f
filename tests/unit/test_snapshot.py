"""Building the snapshot from scan records (no kernel)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    path = Path(__file__).resolve().parents[2] / "nstrack" / "schema" / "snapshot.schema.json"
    assert json.loads(path.read_text()) == Snapshot.model_json_schema(), "regenerate snapshot.schema.json"


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
    text = render(rows(entries, {1: 0, 2: 0}), ["NS", "TYPE", "NPROCS", "HOLDERS", "ORPHANED"])
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
    kw = dict(kernel="6.18", mode="tracepoint", method="ns-lists", complete=False,
              incomplete_reasons=["why"], scan_time=1_700_000_000.25)
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
