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
    """Like lsns --json: {"namespaces": [...]}, one object per line (see ``json_columns``)."""
    return json_columns({c: [r[c] for r in rs] for c in columns}, columns)


_INT_COLUMNS = {"NS", "NPROCS"}  # always an int
_NULLABLE_INT_COLUMNS = {"PID", "NSID"}
_BOOL_COLUMNS = {"ORPHANED"}
_NAME_COLUMNS = {"TYPE"}  # a namespace type's name: nothing to escape


def json_columns(cols: dict[str, list[Any]], columns: list[str]) -> str:
    """``json_text`` of rows given column by column (``scan_columns``): each column converted as a whole
    (strings escaped once per distinct value: users and commands repeat), then one template per row;
    tests/unit keep it equal to json.dumps."""
    conv: list[list[Any]] = []
    for c in columns:
        v = cols[c]
        if c in _INT_COLUMNS or c in _NAME_COLUMNS:
            conv.append(v)
        elif c in _NULLABLE_INT_COLUMNS:
            conv.append(["null" if x is None else x for x in v])
        elif c in _BOOL_COLUMNS:
            conv.append(["true" if x else "false" for x in v])
        else:
            done: dict[Any, str] = {None: "null"}
            conv.append([done[x] if x in done else done.setdefault(x, _json_value(x)) for x in v])
    line = "  {" + ", ".join(f'"{c.lower()}": ' + ('"%s"' if c in _NAME_COLUMNS else "%s") for c in columns) + "}"
    body = ",\n".join(map(line.__mod__, zip(*conv)))
    return '{"namespaces": [\n' + body + ("\n" if body else "") + "]}"


def column_rows(cols: dict[str, list[Any]], columns: list[str]) -> list[dict[str, Any]]:
    """Rows (a dict per row, as ``rows`` gives) of ``scan_columns``' columns."""
    return [dict(zip(columns, vals)) for vals in zip(*(cols[c] for c in columns))]


def scan_columns(
    namespaces: list[NSRecord],
    tasks: list[TaskRecord],
    files: list[FileRecord],
    mounts: list[MountRecord],
    columns: list[str],
    types: set[str] | None = None,
    orphaned_only: bool = False,
) -> dict[str, list[Any]]:
    """The ``columns`` of `ls` for a one-shot scan (no replica), column by column: no holder object per
    (namespace, task) and no dict per row (`ls` only needs counts and each namespace's lowest member;
    20k rows). A process is placed in each namespace once, by the first of its tasks there, as
    ``aggregate`` does. tests/unit/test_snapshot.py keeps its rows equal to ``rows(aggregate(...))``."""
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
    want = set(columns)
    # rows in type order, then by inode number; filtered by type
    buckets: dict[str, list[NSRecord]] = {t: [] for t in TYPE_NAMES}
    for r in namespaces:
        b = buckets.get(r.type)
        if b is None:
            b = buckets[r.type] = []
        b.append(r)
    by_inum = itemgetter(1)
    srt = [r for t, b in buckets.items() if not types or t in types for r in sorted(b, key=by_inum)]
    none = (0, 0, None, 0, None)
    stget = st.get
    counts = [stget(r[:2], none) for r in srt]  # NSRecord[:2] is (type, inum)
    if orphaned_only:
        keep = [i for i, g in enumerate(counts) if not g[1] and not g[3]]
        srt, counts = [srt[i] for i in keep], [counts[i] for i in keep]
    out: dict[str, list[Any]] = {}
    if "NS" in want:
        out["NS"] = [r.inum for r in srt]
    if "TYPE" in want:
        out["TYPE"] = [r.type for r in srt]
    if "ORPHANED" in want:
        out["ORPHANED"] = [not g[1] and not g[3] for g in counts]
    if want & {"NPROCS", "PID", "USER", "COMMAND"}:
        # members; else *_for_children holders stand in for them
        nprocs = [g[1] or g[3] for g in counts]
        lowest = [g[2] if g[1] else g[4] if g[3] else None for g in counts]
        if "NPROCS" in want:
            out["NPROCS"] = nprocs
        if "PID" in want:
            out["PID"] = [t.tgid if t else None for t in lowest]
        if "USER" in want:
            out["USER"] = [user_name(t.uid) if t else None for t in lowest]
        if "COMMAND" in want:
            out["COMMAND"] = [t.comm if t else None for t in lowest]
    if "NSID" in want:
        out["NSID"] = [r.ns_id for r in srt]
    if "NAME" in want:
        out["NAME"] = [f"{r.type}:[{r.inum}]" for r in srt]
    if "OWNER" in want:
        out["OWNER"] = [f"user:[{r.owner_inum}]" if r.owner_inum else None for r in srt]
    if "CREATOR" in want:
        out["CREATOR"] = [None] * len(srt)
    if "HOLDERS" in want:
        out["HOLDERS"] = _holders_column(srt, counts, namespaces, files, mounts)
    return out


def _holders_column(srt: list[NSRecord], counts: list[Any], namespaces: list[NSRecord], files: list[FileRecord],
                    mounts: list[MountRecord]) -> list[str]:
    fds: dict[tuple[str, int], int] = {}
    socks: dict[tuple[str, int], int] = {}
    for f in files:
        tally = fds if f.kind == "nsfs" else socks if f.kind == "socket" else None
        if tally is not None:
            tally[(f.type, f.inum)] = tally.get((f.type, f.inum), 0) + 1
    bound: dict[tuple[str, int], int] = {}
    for m in mounts:
        bound[(m.type, m.inum)] = bound.get((m.type, m.inum), 0) + 1
    children: dict[tuple[str, int], int] = {}
    for r in namespaces:
        if r.owner_inum:
            children[("user", r.owner_inum)] = children.get(("user", r.owner_inum), 0) + 1
        if r.type == "pid" and r.parent_inum:
            children[("pid", r.parent_inum)] = children.get(("pid", r.parent_inum), 0) + 1
    out = []
    for r, g in zip(srt, counts):
        key = r[:2]
        parts = [f"{k}:{n}" for k, n in (("tasks", g[0]), ("fd", fds.get(key, 0)), ("mount", bound.get(key, 0)),
                                          ("sock", socks.get(key, 0)), ("child", children.get(key, 0))) if n]
        out.append(",".join(parts) or "kernel")
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
