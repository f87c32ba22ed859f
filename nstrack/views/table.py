"""``nstrack ls``: an lsns-like table, plus HOLDERS and ORPHANED.

    NS         TYPE   NPROCS   PID USER COMMAND        HOLDERS        ORPHANED
    4026532286 net         0     - -    -              mount:1        yes
    4026531840 net       112     1 root init           tasks:112,sock:9 no
"""

from __future__ import annotations

import pwd
from typing import Any

from ..model.holders import Entry
from ..model.nstypes import format_name

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
