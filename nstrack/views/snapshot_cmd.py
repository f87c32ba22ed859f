"""``nstrack snapshot``, ``ls`` and ``show``: one scan, rendered."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from ..model.nstypes import UnknownNamespaceType, format_name, parse_name

if TYPE_CHECKING:
    from ..kernel.scanner import Scan
    from ..model.holders import Entry

# nsfs inode numbers: fixed ones for init namespaces just below PROC_DYNAMIC_FIRST (0xF0000000),
# dynamic ones above; ns_ids (6.18+) are small counters. So large numbers are inums.
INUM_MIN = 0xEFFFFF00


class ScanError(Exception):
    pass


def scan_now(mode: str | None, cache: bool = True, holders: bool = True) -> Scan:
    """Scan now with holders (``mode='procfs'`` scans /proc without BPF).

    ``holders=False`` (`ls` without the HOLDERS column): where the kernel's namespace lists enumerate
    every namespace (6.18+), no nsfs fds, sockets or bind mounts are read; elsewhere they are, since
    they find the namespaces that only they hold.

    With ``cache`` (the default; ``--no-cache`` or NSTRACK_NO_CACHE=1 turn it off) the scan programs
    stay pinned in bpffs (/sys/fs/bpf/nstrack/scan-*; 6.18+: a 4 MiB ring too) after the first run, and
    later runs use them without loading anything (`ls` about twice as fast). `rm -r
    /sys/fs/bpf/nstrack` removes them; a reboot does too.
    """
    from ..kernel.bpfsys import BPFError
    from ..kernel.scanner import PINNED_RING_BYTES, PinnedScanner, Scanner, pin_path, procfs_scan

    if mode == "procfs":
        return procfs_scan()
    # pins are used only by callers that could load the programs themselves (reading them needs less)
    cache = cache and os.environ.get("NSTRACK_NO_CACHE", "") in ("", "0") and _may_load_bpf()
    try:
        path = pin_path() if cache else None
    except OSError:  # the object file is unreadable: loading it below says so
        path = None
    try:
        if path is not None:
            try:
                with PinnedScanner(path) as pinned:
                    scan = pinned.scan(holders=holders or not pinned.has_lists)
                if scan.complete or scan.method != "ns-lists" or not pinned.lost_total:
                    return scan
                # more namespaces than the pinned ring holds: once more, unpinned, with room for all
            except OSError:  # nothing pinned yet, or not usable (BPFError is one too): load, then pin
                with Scanner(PINNED_RING_BYTES) as scanner:
                    scan = scanner.scan(holders=holders or not scanner.has_lists)
                    scanner.pin(path)
                if scan.complete or not scanner.lost_total:
                    return scan
        with Scanner(PINNED_RING_BYTES * 8 if path is not None else 1 << 23) as scanner:
            return scanner.scan(holders=holders or not scanner.has_lists)
    except BPFError as exc:
        from ..kernel.host import effective_caps, missing_bpf_caps

        missing = missing_bpf_caps(effective_caps())
        why = f"missing {', '.join(missing)}" if missing else str(exc).split("\n")[0]
        raise ScanError(f"cannot scan with BPF: {why}. Run as root, or use --mode procfs "
                        "(no BPF, incomplete)") from None


def _may_load_bpf() -> bool:
    """CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON, in effect (kernel/host.py's rule, without its imports)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                mask = int(line.split()[1], 16)
                return bool(mask >> 21 & 1 or (mask >> 38 & 1 and mask >> 39 & 1))
    return False


def entries_now(mode: str | None, cache: bool = True, **filters: Any) -> tuple[Scan, list[Entry]]:
    from ..model.holders import aggregate

    scan = scan_now(mode, cache)
    return scan, aggregate(scan.namespaces, scan.tasks, scan.files, scan.mounts, **filters)


def parse_ns_arg(text: str) -> tuple[str | None, int | None, int | None]:
    """``net:[N]`` -> (type, inum, None); a number >= 0xEFFFFF00 -> inum; a smaller one -> ns_id."""
    t = text.strip()
    if t.isdigit():
        n = int(t)
        return (None, n, None) if n >= INUM_MIN else (None, None, n)
    type_, inum = parse_name(t)
    return type_, inum, None


def cmd_snapshot(args: argparse.Namespace) -> int:
    from ..model.snapshot import build

    try:
        scan = scan_now(args.mode, not args.no_cache)
    except ScanError as exc:
        print(f"nstrack snapshot: {exc}", file=sys.stderr)
        return 1
    snap = build(
        kernel=os.uname().release,
        mode="procfs" if scan.method == "procfs" else "oneshot",
        method=scan.method,
        namespaces=scan.namespaces,
        tasks=scan.tasks,
        files=scan.files,
        mounts=scan.mounts,
        complete=scan.complete,
        incomplete_reasons=scan.incomplete_reasons,
        scan_time=time.time(),
        userns=args.userns,
        types=set(args.types or []) or None,
        orphaned_only=args.orphaned,
    )
    print(snap.model_dump_json(indent=2))
    return 0


def rows_from_server(url: str, columns: list[str], types: set[str] | None,
                     orphaned_only: bool) -> tuple[str, bool, list[str]]:
    """`nstrack ls --json` text from a running `nstrack serve` (its /ls endpoint), complete?, why not."""
    import base64
    import urllib.error
    import urllib.request
    from urllib.parse import urlencode, urlsplit, urlunsplit

    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ScanError(f"--server {url!r}: give http[s]://HOST:PORT")
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    query = {"columns": ",".join(columns)}
    if types:
        query["type"] = ",".join(sorted(types))
    if orphaned_only:
        query["orphaned"] = "true"
    req = urllib.request.Request(urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/ls", urlencode(query), "")))
    if parts.username is not None:
        token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            complete = r.headers.get("X-Nstrack-Complete", "true") == "true"
            reasons = [x for x in (r.headers.get("X-Nstrack-Incomplete") or "").split("; ") if x]
    except urllib.error.HTTPError as exc:
        raise ScanError(f"server {netloc} answered {exc.code}: {exc.read()[:200].decode(errors='replace')}") from None
    except (OSError, ValueError) as exc:
        raise ScanError(f"cannot ask nstrack serve at {netloc}: {exc}") from None
    return text.rstrip("\n"), complete, reasons


def cmd_ls(args: argparse.Namespace) -> int:
    from .table import DEFAULT_COLUMNS, column_rows, json_columns, parse_columns, render, scan_columns

    try:
        columns = parse_columns(args.output) if args.output else DEFAULT_COLUMNS
    except ValueError as exc:
        print(f"nstrack ls: {exc}", file=sys.stderr)
        return 2
    types = set(args.types or []) or None
    try:
        if getattr(args, "server", None) and args.mode is None:
            text, complete, reasons = rows_from_server(args.server, columns, types, args.orphaned)
            if args.json:  # the server wrote exactly what a local `ls --json` prints
                print(text)
                return 0
            rs = [{c: r[c.lower()] for c in columns} for r in json.loads(text)["namespaces"]]
            cols = {c: [r[c] for r in rs] for c in columns}
        else:
            scan = scan_now(args.mode, not args.no_cache, holders="HOLDERS" in columns)
            complete, reasons = scan.complete, scan.incomplete_reasons
            cols = scan_columns(scan.namespaces, scan.tasks, scan.files, scan.mounts, columns, types, args.orphaned)
    except ScanError as exc:
        print(f"nstrack ls: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json_columns(cols, columns))
    else:
        print(render(column_rows(cols, columns), columns))
        if not complete:
            print(f"(incomplete: {'; '.join(reasons)})", file=sys.stderr)
    return 0


def describe(e: Entry) -> str:
    out = [f"{e.name}" + (f"  id {e.ns_id}" if e.ns_id is not None else "")]
    out.append(f"  type:      {e.type}")
    if e.owner_inum:
        out.append(f"  owner:     {format_name('user', e.owner_inum)}")
    if e.parent_inum:
        out.append(f"  parent:    {format_name('pid', e.parent_inum)}")
    if e.refcount is not None:
        why = f" ({e.refs_unexplained} not explained by the holders below)" if (e.refs_unexplained or 0) > 0 else ""
        out.append(f"  refcount:  {e.refcount}{why}")
    out.append(f"  orphaned:  {'yes' if e.orphaned else 'no'}")
    if e.creator:
        out.append(f"  creator:   {e.creator.comm} (pid {e.creator.tgid})")
    h = e.holders
    out.append(f"  tasks ({len(h.tasks)}):")
    out += [f"    pid {t.pid} {t.comm}" + (f" ({t.role})" if t.role != "member" else "") for t in h.tasks]
    out.append(f"  nsfs fds ({len(h.fds)}):")
    out += [f"    pid {f.pid} {f.comm} fd {f.fd}" for f in h.fds]
    out.append(f"  bind mounts ({len(h.mounts)}):")
    out += [f"    {m.path} in {m.mnt_ns}" for m in h.mounts]
    out.append(f"  sockets ({sum(s.count for s in h.sockets)}):")
    out += [f"    pid {s.pid} {s.comm}: {s.count}" for s in h.sockets]
    out.append(f"  child namespaces ({len(h.children)}):")
    out += [f"    {c}" for c in h.children]
    if e.orphaned and e.keeps_alive:
        out.append(f"  what keeps it alive: {e.keeps_alive}")
    return "\n".join(out)


def cmd_show(args: argparse.Namespace) -> int:
    try:
        type_, inum, ns_id = parse_ns_arg(args.ns)
    except (ValueError, UnknownNamespaceType) as exc:
        print(f"nstrack show: {exc}; give type:[inum] (net:[4026531840]), an inode number or an ns_id",
              file=sys.stderr)
        return 2
    try:
        _, entries = entries_now(args.mode, not args.no_cache)
    except ScanError as exc:
        print(f"nstrack show: {exc}", file=sys.stderr)
        return 1
    hits = [e for e in entries
            if (type_ is None or e.type == type_) and (inum is None or e.inum == inum)
            and (ns_id is None or e.ns_id == ns_id)]
    if not hits:
        print(f"nstrack show: no live namespace {args.ns} (it may have been destroyed; a running "
              "`nstrack serve` keeps tombstones of destroyed namespaces)", file=sys.stderr)
        return 2
    if args.json:
        from ..model.snapshot import entry_model

        now = time.time()
        print(json.dumps([json.loads(entry_model(e, now).model_dump_json()) for e in hits], indent=2))
    else:
        print("\n\n".join(describe(e) for e in hits))
    return 0
