"""``nstrack watch``: one line per namespace created or destroyed.

Text::

    2026-11-29T06:52:01.512Z created   net:[4026532178] id=4102 owner=user:[4026531837] by unshare[8828] (unshare)
    2026-11-29T06:52:03.020Z destroyed net:[4026532178] id=4102 after 1.51s (rescan, within 2s)

JSON (``--json``), one object per line::

    {"event": "created", "type": "net", "inum": 4026532178, "name": "net:[4026532178]", "ns_id": 4102,
     "time": "2026-11-29T06:52:01.512Z", "creator": {"pid": 8828, "tgid": 8828, "comm": "unshare", ...}, ...}
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from ..model.nstypes import format_name
from ..model.replica import Change, wall_time


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def change_json(c: Change, mode: str, free_bound: float | None) -> dict[str, Any]:
    ns = c.ns
    when_ns = ns.born_ns if c.kind == "created" else (ns.destroyed_ns or ns.born_ns)
    out: dict[str, Any] = {
        "event": c.kind,
        "type": ns.type,
        "inum": ns.inum,
        "name": ns.name,
        "ns_id": ns.ns_id,
        "time": iso(wall_time(when_ns)),
        "owner": format_name("user", ns.owner_inum) if ns.owner_inum else None,
        "via": c.via if c.via != "event" else ns.learned_by if c.kind == "created" else "event",
        "mode": mode,
    }
    if ns.type == "pid" and ns.parent_inum:
        out["parent"] = format_name("pid", ns.parent_inum)
    if c.kind == "created":
        cr = ns.creator
        out["creator"] = (
            {"pid": cr.pid, "tgid": cr.tgid, "comm": cr.comm, "cgroup_id": cr.cgroup_id} if cr else None
        )
    else:
        out["lifetime_seconds"] = round((when_ns - ns.born_ns) / 1e9, 6) if ns.created_ns else None
        if c.via == "rescan" and free_bound:
            out["detected_within_seconds"] = free_bound
    return out


def change_text(c: Change, mode: str, free_bound: float | None) -> str:
    j = change_json(c, mode, free_bound)
    line = f"{j['time']} {c.kind:<9} {j['name']}"
    if j["ns_id"] is not None:
        line += f" id={j['ns_id']}"
    if c.kind == "created":
        if j.get("owner"):
            line += f" owner={j['owner']}"
        cr = j.get("creator")
        line += f" by {cr['comm']}[{cr['tgid']}]" if cr else " (creator unseen)"
        line += f" ({j['via']})"
    else:
        if j.get("lifetime_seconds") is not None:
            line += f" after {j['lifetime_seconds']:.2f}s"
        line += f" ({j['via']}"
        line += f", within {free_bound:g}s)" if c.via == "rescan" and free_bound else ")"
    return line


class Printer:
    def __init__(self, out: TextIO, as_json: bool, types: set[str] | None, mode: str, free_bound: float | None):
        self.out, self.as_json, self.types, self.mode, self.free_bound = out, as_json, types, mode, free_bound
        self.count = 0

    def __call__(self, changes: list[Change]) -> None:
        for c in changes:
            if c.via == "startup" or (self.types and c.ns.type not in self.types):
                continue
            if self.as_json:
                self.out.write(json.dumps(change_json(c, self.mode, self.free_bound)) + "\n")
            else:
                self.out.write(change_text(c, self.mode, self.free_bound) + "\n")
            self.count += 1
        self.out.flush()


def cmd_watch(args: argparse.Namespace) -> int:
    from ..kernel.libbpf import BPFError
    from ..kernel.probe import investigate
    from ..kernel.tracker import Tracker, settle_after_start

    try:
        findings = investigate(requested_mode=args.mode)
    except ValueError as exc:
        print(f"nstrack watch: {exc}", file=sys.stderr)
        return 1
    tracker = Tracker(findings, rescan_seconds=args.rescan)
    bound = tracker.free_latency_bound
    printer = Printer(sys.stdout, args.json, set(args.types) if args.types else None, tracker.mode, bound)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        tracker.start()
        settle_after_start()
        note = f"nstrack watch: mode {tracker.mode}, {len(tracker.replica)} namespaces alive"
        note += f"; frees reported within {bound:g}s (rescans)" if bound else "; frees reported as they happen"
        print(note, file=sys.stderr, flush=True)
        deadline = time.monotonic() + args.count if args.count else None
        while not stop and (deadline is None or time.monotonic() < deadline):
            printer(tracker.poll(0.5))
    except KeyboardInterrupt:
        pass
    except BPFError as exc:
        print(f"nstrack watch: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        pass
    finally:
        tracker.close()
    return 0
