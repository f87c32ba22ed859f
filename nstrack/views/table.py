"""``nstrack ls``: an lsns-like table, plus HOLDERS and ORPHANED.

    NS         TYPE   NPROCS   PID USER COMMAND        HOLDERS        ORPHANED
    4026532286 net         0     - -    -              mount:1        yes
    4026531840 net       112     1 root init           tasks:112,sock:9 no
"""

from __future__ import annotations

import pwd
from json.encoder import encode_basestring_ascii as _json_str  # what json.dumps writes for a str
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ..model.nstypes import TYPE_NAMES, format_name
from ..model.records import MEMBER_TYPES, ROLE, SLOTS, FileRecord, MountRecord, NSRecord, TaskRecord

if TYPE_CHECKING:
    from ..model.holders import Entry


COLUMNS: dict[str, str] = {
    "NS": "inode number",
    "TYPE": "namespace type",
    "NPROCS": "number of processes in it",
    "PID": "lowest pid in it",
    "USER": "owner of that process",
    "COMMAND": "that process's command",
    "HOLDERS": "what holds it: tasks, fds, mounts, sockets, children",
    "ORPHANED": "alive with no process inside",
    "NSID": "the kernel's namespace id (6.18+)",
    "NAME": "type:[inum]",
    "OWNER": "owning user namespace",
    "CREATOR": "process that created it, when seen",
}
DEFAULT_COLUMNS = ["NS", "TYPE", "NPROCS", "PID", "USER", "COMMAND", "HOLDERS", "ORPHANED"]
_users: dict[int, str] = {}


def user_name(uid: int) -> str:
    if uid not in _users:
        try:
            _users[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            _users[uid] = str(uid)
    return _users[uid]


def parse_columns(text: str) -> list[str]:
    cols = [c.strip().upper() for c in text.split(",") if c.strip()]
    bad = [c for c in cols if c not in COLUMNS]
    if bad or not cols:
        raise ValueError(f"unknown column {', '.join(bad) or '(none)'}; valid columns: {', '.join(COLUMNS)}")
    return cols


def row(e: Entry, columns: list[str] | None = None) -> dict[str, Any]:
    members = [t for t in e.holders.tasks if t.role == "member"] or [
        t for t in e.holders.tasks if t.role != "zombie"]
    first = min(members, key=lambda t: t.pid) if members else None
    h = e.holders
    if columns is not None and "HOLDERS" not in columns:
        parts: list[str] = []
    else:
        parts = [f"{k}:{n}" for k, n in (("tasks", len({t.pid for t in h.tasks})), ("fd", len(h.fds)),
                                          ("mount", len(h.mounts)), ("sock", sum(s.count for s in h.sockets)),
                                          ("child", len(h.children))) if n]
    return {
        "NS": e.inum,
        "TYPE": e.type,
        "NPROCS": len({t.pid for t in members}),
        "PID": first.pid if first else None,
        "USER": user_name(first.uid) if first else None,
        "COMMAND": first.comm if first else None,
        "HOLDERS": ",".join(parts) or "kernel",
        "ORPHANED": e.orphaned,
        "NSID": e.ns_id,
        "NAME": e.name,
        "OWNER": format_name("user", e.owner_inum) if e.owner_inum else None,
        "CREATOR": f"{e.creator.comm}[{e.creator.tgid}]" if e.creator else None,
    }


def rows(entries: list[Entry], columns: list[str] | None = None) -> list[dict[str, Any]]:
    return [row(e, columns) for e in entries]


def render(rs: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return str(v)

    table = [columns] + [[cell(r[c]) for c in columns] for r in rs]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    right = {"NPROCS", "PID"}
    out = []
    for line in table:
        out.append(" ".join(v.rjust(w) if c in right else v.ljust(w)
                            for v, w, c in zip(line, widths, columns)).rstrip())
    return "\n".join(out)


def json_rows(rs: list[dict[str, Any]], columns: list[str]) -> dict[str, Any]:
    return {"namespaces": [{c.lower(): r[c] for c in columns} for r in rs]}


def _json_value(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if type(v) is int:
        return str(v)
    return _json_str(v)


def json_text(rs: list[dict[str, Any]], columns: list[str]) -> str:
    """Like lsns --json: {"namespaces": [...]}, one object per line. Written with one template per
    row (values are ints, str, bool or None): 2.5 times faster than json.dumps per row at 10k rows;
    tests/unit keep it equal to json.dumps."""
    get = itemgetter(*columns)
    one = len(columns) == 1
    line = "  {" + ", ".join(f'"{c.lower()}": %s' for c in columns) + "}"
    body = ",\n".join(line % ((_json_value(get(r)),) if one else tuple(map(_json_value, get(r)))) for r in rs)
    return '{"namespaces": [\n' + body + ("\n" if body else "") + "]}"



def scan_rows(
    namespaces: list[NSRecord],
    tasks: list[TaskRecord],
    files: list[FileRecord],
    mounts: list[MountRecord],
    columns: list[str],
    types: set[str] | None = None,
    orphaned_only: bool = False,
) -> list[dict[str, Any]]:
    """``rows(aggregate(...), columns)`` for a one-shot scan (no replica), without building a
    holder object per (namespace, task): `ls` only needs counts and each namespace's lowest member.
    A process is placed in each namespace once, by the first of its tasks there, as ``aggregate``
    does. tests/unit/test_snapshot.py keeps the two equal."""
    # per (type, inum): [processes holding it, members, lowest member, other live (for_children), lowest]
    st: dict[tuple[str, int], list[Any]] = {}
    first: dict[int, tuple[int, ...]] = {}  # tgid -> namespaces of its first task seen
    mixed: dict[int, set[int]] = {}
    for t in tasks:
        inums, tgid = t.inums, t.tgid
        prev = first.get(tgid)
        if prev is None and inums[0]:  # the common case: a live process's first task
            first[tgid] = inums
            for key in zip(MEMBER_TYPES, inums):
                if key[1]:
                    g = st.get(key)
                    if g is None:
                        st[key] = [1, 1, t, 0, None]
                    else:
                        g[0] += 1
                        g[1] += 1
                        if g[2] is None or tgid < g[2].tgid:
                            g[2] = t
            if inums[8] and inums[8] != inums[4]:
                _place(st, ("pid", inums[8]), t, "pid_for_children")
            if inums[9] and inums[9] != inums[7]:
                _place(st, ("time", inums[9]), t, "time_for_children")
            continue
        if prev is None:
            first[tgid] = inums
            done: set[int] = set()
        elif prev == inums:
            continue  # a thread in its leader's namespaces
        else:
            done = mixed.setdefault(tgid, {i for i in prev if i})
        exited = inums[0] == 0
        for (type_, fname), inum in zip(SLOTS, inums):
            if inum and inum not in done:
                done.add(inum)
                _place(st, (type_, inum), t, "zombie" if exited else ROLE[fname])
    fds: dict[tuple[str, int], int] = {}
    socks: dict[tuple[str, int], int] = {}
    for f in files:
        counts = fds if f.kind == "nsfs" else socks if f.kind == "socket" else None
        if counts is not None:
            counts[(f.type, f.inum)] = counts.get((f.type, f.inum), 0) + 1
    bound: dict[tuple[str, int], int] = {}
    for m in mounts:
        bound[(m.type, m.inum)] = bound.get((m.type, m.inum), 0) + 1
    children: dict[tuple[str, int], int] = {}
    for r in namespaces:
        if r.owner_inum:
            children[("user", r.owner_inum)] = children.get(("user", r.owner_inum), 0) + 1
        if r.type == "pid" and r.parent_inum:
            children[("pid", r.parent_inum)] = children.get(("pid", r.parent_inum), 0) + 1

    want_holders = "HOLDERS" in columns
    order = {t: i for i, t in enumerate(TYPE_NAMES)}
    out: list[dict[str, Any]] = []
    none = (0, 0, None, 0, None)
    for r in sorted(namespaces, key=lambda r: (order.get(r.type, 99), r.inum)):
        type_, inum = r.type, r.inum
        if types and type_ not in types:
            continue
        key = (type_, inum)
        held, n_members, first_member, n_other, first_other = st.get(key, none)
        orphaned = not n_members and not n_other
        if orphaned_only and not orphaned:
            continue
        if n_members:
            nprocs, lowest = n_members, first_member
        elif n_other:  # only *_for_children holders: they stand in for members
            nprocs, lowest = n_other, first_other
        else:
            nprocs, lowest = 0, None
        holders = "kernel"
        if want_holders:
            parts = [f"{k}:{n}" for k, n in (("tasks", held), ("fd", fds.get(key, 0)),
                                              ("mount", bound.get(key, 0)), ("sock", socks.get(key, 0)),
                                              ("child", children.get(key, 0))) if n]
            holders = ",".join(parts) or "kernel"
        out.append({
            "NS": inum,
            "TYPE": type_,
            "NPROCS": nprocs,
            "PID": lowest.tgid if lowest else None,
            "USER": user_name(lowest.uid) if lowest else None,
            "COMMAND": lowest.comm if lowest else None,
            "HOLDERS": holders,
            "ORPHANED": orphaned,
            "NSID": r.ns_id,
            "NAME": f"{type_}:[{inum}]",
            "OWNER": f"user:[{r.owner_inum}]" if r.owner_inum else None,
            "CREATOR": None,
        })
    return out


def _place(st: dict[tuple[str, int], list[Any]], key: tuple[str, int], t: TaskRecord, role: str) -> None:
    """Count process ``t`` in namespace ``key`` with ``role`` (member, *_for_children or zombie)."""
    g = st.get(key)
    if g is None:
        g = st[key] = [0, 0, None, 0, None]
    g[0] += 1
    if role == "member":
        g[1] += 1
        if g[2] is None or t.tgid < g[2].tgid:
            g[2] = t
    elif role != "zombie":
        g[3] += 1
        if g[4] is None or t.tgid < g[4].tgid:
            g[4] = t
