"""``nstrack ls``: an lsns-like table, plus HOLDERS and ORPHANED.

    NS         TYPE   NPROCS   PID USER COMMAND        HOLDERS        ORPHANED
    4026532286 net         0     - -    -              mount:1        yes
    4026531840 net       112     1 root init           tasks:112,sock:9 no
"""

from __future__ import annotations

import pwd
from typing import TYPE_CHECKING, Any

from ..model.nstypes import TYPE_NAMES, format_name
from ..model.records import SLOTS, FileRecord, MountRecord, NSRecord, TaskRecord

if TYPE_CHECKING:
    from ..model.holders import Entry

_ROLE_OF = {"pid_for_children": "pid_for_children", "time_for_children": "time_for_children"}

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


def row(e: Entry, uids: dict[int, int], columns: list[str] | None = None) -> dict[str, Any]:
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
        "USER": user_name(uids.get(first.pid, 0)) if first else None,
        "COMMAND": first.comm if first else None,
        "HOLDERS": ",".join(parts) or "kernel",
        "ORPHANED": e.orphaned,
        "NSID": e.ns_id,
        "NAME": e.name,
        "OWNER": format_name("user", e.owner_inum) if e.owner_inum else None,
        "CREATOR": f"{e.creator.comm}[{e.creator.tgid}]" if e.creator else None,
    }


def rows(entries: list[Entry], uids: dict[int, int], columns: list[str] | None = None) -> list[dict[str, Any]]:
    return [row(e, uids, columns) for e in entries]


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


def json_text(rs: list[dict[str, Any]], columns: list[str]) -> str:
    """Like lsns --json: {"namespaces": [...]}, one object per line (json's fast C encoder per row)."""
    import json

    keys = [(c, c.lower()) for c in columns]
    body = ",\n".join("  " + json.dumps({k: r[c] for c, k in keys}) for r in rs)
    return '{"namespaces": [\n' + body + ("\n" if body else "") + "]}"


def _join(groups: dict[tuple[str, int], set[int]], firsts: dict[tuple[str, int], TaskRecord],
          key: tuple[str, int], t: TaskRecord) -> None:
    """Add task ``t`` to the group of namespace ``key``, keeping the group's lowest-pid task."""
    group = groups.get(key)
    if group is None:
        groups[key] = {t.tgid}
        firsts[key] = t
    else:
        group.add(t.tgid)
        if t.tgid < firsts[key].tgid:
            firsts[key] = t


def scan_rows(
    namespaces: list[NSRecord],
    tasks: list[TaskRecord],
    files: list[FileRecord],
    mounts: list[MountRecord],
    columns: list[str],
    types: set[str] | None = None,
    orphaned_only: bool = False,
) -> list[dict[str, Any]]:
    """``rows(aggregate(...), uids, columns)`` for a one-shot scan (no replica), without building a
    holder object per (namespace, task): `ls` only needs counts and each namespace's lowest member.
    tests/unit/test_snapshot.py keeps the two equal."""
    # per (type, inum): every holding tgid; member tgids; the lowest member and lowest non-zombie
    holding: dict[tuple[str, int], set[int]] = {}
    members: dict[tuple[str, int], set[int]] = {}
    live: dict[tuple[str, int], set[int]] = {}
    first_member: dict[tuple[str, int], TaskRecord] = {}
    first_live: dict[tuple[str, int], TaskRecord] = {}
    roles = [(type_, _ROLE_OF.get(fname, "member")) for type_, fname in SLOTS]
    for t in tasks:
        exited = t.inums[0] == 0
        tgid = t.tgid
        for (type_, role), inum in zip(roles, t.inums):
            if not inum:
                continue
            key = (type_, inum)
            held = holding.get(key)
            if held is None:
                held = holding[key] = set()
            elif tgid in held:
                continue  # a thread repeating its leader, or pid_for_children equal to its own
            held.add(tgid)
            if exited:
                continue
            _join(live, first_live, key, t)
            if role == "member":
                _join(members, first_member, key, t)
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
    for r in sorted(namespaces, key=lambda r: (order.get(r.type, 99), r.inum)):
        if types and r.type not in types:
            continue
        key = (r.type, r.inum)
        orphaned = key not in live
        if orphaned_only and not orphaned:
            continue
        group, first = (members[key], first_member[key]) if key in members else (
            (live[key], first_live[key]) if not orphaned else (None, None))
        holders = "kernel"
        if want_holders:
            parts = [f"{k}:{n}" for k, n in (("tasks", len(holding.get(key, ()))), ("fd", fds.get(key, 0)),
                                              ("mount", bound.get(key, 0)), ("sock", socks.get(key, 0)),
                                              ("child", children.get(key, 0))) if n]
            holders = ",".join(parts) or "kernel"
        out.append({
            "NS": r.inum,
            "TYPE": r.type,
            "NPROCS": len(group) if group else 0,
            "PID": first.tgid if first else None,
            "USER": user_name(first.uid) if first else None,
            "COMMAND": first.comm if first else None,
            "HOLDERS": holders,
            "ORPHANED": orphaned,
            "NSID": r.ns_id,
            "NAME": format_name(r.type, r.inum),
            "OWNER": format_name("user", r.owner_inum) if r.owner_inum else None,
            "CREATOR": None,
        })
    return out
