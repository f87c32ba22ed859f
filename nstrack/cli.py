"""The ``nstrack`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .model.nstypes import MODES, TYPE_NAMES

EXIT_OK, EXIT_DEGRADED, EXIT_USAGE = 0, 1, 2
_CACHE_HELP = ("do not use, nor leave, scan programs pinned in /sys/fs/bpf/nstrack (by default the first run "
               "pins them and later runs scan without loading BPF, about twice as fast; also NSTRACK_NO_CACHE=1)")


class _Formatter(argparse.HelpFormatter):
    """argparse's, told the terminal width: its own lookup imports shutil (and with it zlib, bz2 and
    lzma: 4 ms of every `nstrack ls`), since add_argument formats each action once to check it."""

    def __init__(self, prog: str) -> None:
        try:
            width = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size((sys.__stdout__ or sys.stdout).fileno()).columns
        except (ValueError, OSError, AttributeError):
            width = 80
        super().__init__(prog, width=max(width - 2, 20))


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:  # argparse exits 2 already; keep its message format
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _type_arg(value: str) -> str:
    from .model.nstypes import UnknownNamespaceType, ns_type

    try:
        return ns_type(value).name
    except UnknownNamespaceType as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="nstrack",
        description="Live tracker of every Linux namespace on this host, fed by eBPF. "
        "Run `nstrack doctor` first: it says what this kernel allows and which tracking mode runs.",
    )
    p.add_argument("--version", action="version", version=f"nstrack {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser(
        "doctor",
        help="probe the kernel, choose the tracking mode, say what it cannot see",
        description="Load, attach and trigger a tiny BPF program per kernel feature (btf, fentry, kprobe, "
        "tp_btf, tracepoint, iter, ringbuf, bpf_loop), look up the namespace hook functions in BTF and "
        "kallsyms, and choose the tracking mode (fentry > kprobe > tracepoint > procfs). Exit status: 0 when a "
        "BPF mode works, 1 when only procfs polling is left, 2 on usage errors. Mounts tracefs, bpffs and "
        "securityfs where missing, and says so.",
    )
    d.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    d.add_argument("--mode", choices=MODES, help="check that this mode can run here instead of choosing")

    w = sub.add_parser(
        "watch",
        help="print namespace create/destroy events as they happen",
        description="Stream namespace lifecycle events. One line per event; --json prints one object per "
        "line. Ctrl-C exits.",
    )
    w.add_argument("--json", action="store_true", help="one JSON object per line")
    w.add_argument("-t", "--type", dest="types", action="append", type=_type_arg, metavar="TYPE",
                   help=f"only these types (repeatable): {', '.join(TYPE_NAMES)}")
    w.add_argument("--mode", choices=MODES, help="force a tracking mode (default: best available)")
    w.add_argument("--rescan", type=float, default=None, metavar="SECONDS",
                   help="rescan interval that bounds free latency in tracepoint/procfs mode (default 2)")
    w.add_argument("--seconds", dest="count", type=float, default=0, help="stop after this many seconds (default: run until Ctrl-C)")
    sn = sub.add_parser(
        "snapshot",
        help="every live namespace with its holders, as one JSON document (/proc/namespaces equivalent)",
        description="Scan now and print one JSON document: kernel, mode, time, complete, and every live "
        "namespace named type:[inum] with owner, holders (tasks, fds, mounts, sockets, children), orphaned, "
        "and first-seen time. The schema is in nstrack/schema/snapshot.schema.json.",
    )
    sn.add_argument("--userns", type=int, metavar="INUM",
                    help="only namespaces owned by this user namespace or its descendants (the patchset's rule)")
    sn.add_argument("-t", "--type", dest="types", action="append", type=_type_arg, metavar="TYPE")
    sn.add_argument("--orphaned", action="store_true", help="only namespaces with no process inside")
    sn.add_argument("--mode", choices=["procfs"], help="procfs: scan /proc without BPF (incomplete)")
    sn.add_argument("--no-cache", dest="no_cache", action="store_true", help=_CACHE_HELP)

    ls = sub.add_parser(
        "ls",
        help="lsns-like table of every namespace, with holders and orphans",
        description="Like lsns, but complete: also namespaces held only by an nsfs fd, a bind mount, a socket or "
        "a child namespace. Columns: " + ", ".join(__import__("nstrack.views.table", fromlist=["COLUMNS"]).COLUMNS),
    )
    ls.add_argument("-t", "--type", dest="types", action="append", type=_type_arg, metavar="TYPE")
    ls.add_argument("--orphaned", action="store_true", help="only namespaces with no process inside")
    ls.add_argument("-o", "--output", metavar="COLUMNS", help="comma-separated columns")
    ls.add_argument("--json", action="store_true", help="JSON output")
    ls.add_argument("--mode", choices=["procfs"], help="procfs: scan /proc without BPF (incomplete)")
    ls.add_argument("--no-cache", dest="no_cache", action="store_true", help=_CACHE_HELP)
    ls.add_argument("--server", metavar="URL", default=os.environ.get("NSTRACK_SERVER") or None,
                    help="ask a running `nstrack serve` (e.g. http://127.0.0.1:9864; user:password@ in the URL "
                    "for basic auth) instead of scanning: no BPF load, no privileges needed; holders are as "
                    "of its last holder scan (at most 1 s old). Default: $NSTRACK_SERVER, else scan here")

    sh = sub.add_parser(
        "show",
        help="one namespace with every holder, and what keeps it alive",
        description="NS is type:[inum] (net:[4026531840]), a bare inode number, or an ns_id (6.18+).",
    )
    sh.add_argument("ns", metavar="NS")
    sh.add_argument("--json", action="store_true")
    sh.add_argument("--mode", choices=["procfs"], help="procfs: scan /proc without BPF (incomplete)")
    sh.add_argument("--no-cache", dest="no_cache", action="store_true", help=_CACHE_HELP)
    se = sub.add_parser(
        "serve",
        help="the node agent: live replica, Prometheus /metrics, /namespaces JSON, /healthz",
        description="Track every namespace live and serve it over HTTP on --listen (default 127.0.0.1:9864): "
        "/metrics (Prometheus), /namespaces (the snapshot, filters ?type= ?orphaned= ?userns= ?limit=), "
        "/namespaces/{name|inum|ns_id}, /healthz, and a landing page at /. Settings come from flags, "
        "NSTRACK_* environment variables (e.g. NSTRACK_LISTEN) and an optional YAML file (--config), in "
        "that order of precedence; an invalid value exits 2 naming the field.",
    )
    se.add_argument("--config", metavar="FILE", help="YAML file of settings (keys as the flags, with _)")
    se.add_argument("--listen", metavar="ADDR:PORT", help="address to serve on (default 127.0.0.1:9864)")
    se.add_argument("--mode", help="force a tracking mode: " + ", ".join(MODES))
    se.add_argument("--rescan-seconds", dest="rescan_seconds", type=float, metavar="S",
                    help="rescan interval (bounds free latency in tracepoint mode; default 2, 60 in event modes)")
    se.add_argument("--holders-seconds", dest="holders_seconds", type=float, metavar="S",
                    help="how often fds, mounts and sockets are rescanned in the background (default 30)")
    se.add_argument("--per-namespace-metrics", dest="per_namespace_metrics", action="store_const", const=True,
                    help="export one series per namespace (capped by --per-namespace-limit)")
    se.add_argument("--per-namespace-limit", dest="per_namespace_limit", type=int, metavar="N")
    se.add_argument("--web-config-file", dest="web_config_file", metavar="FILE",
                    help="TLS and basic auth, as Prometheus' web config (tls_server_config, basic_auth_users)")
    se.add_argument("--keep-caps", dest="keep_caps", action="store_const", const=True,
                    help="keep every capability after attaching (default: keep only CAP_BPF and CAP_SYS_PTRACE)")
    return p


def cmd_doctor(args: argparse.Namespace) -> int:
    from .kernel.probe import investigate
    from .views.doctor import render

    try:
        findings = investigate(requested_mode=args.mode)
    except ValueError as exc:
        print(f"nstrack doctor: {exc}", file=sys.stderr)
        return EXIT_DEGRADED
    if args.json:
        print(json.dumps(findings.to_json(), indent=2))
    else:
        print(render(findings))
    return EXIT_OK if findings.decision.mode != "procfs" else EXIT_DEGRADED


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help()
        return EXIT_USAGE
    if args.cmd == "doctor":
        return cmd_doctor(args)
    if args.cmd == "watch":
        from .views.watch import cmd_watch

        return cmd_watch(args)
    if args.cmd == "serve":
        from .views.serve import cmd_serve

        return cmd_serve(args)
    if args.cmd in ("snapshot", "ls", "show"):
        import gc

        from .views import snapshot_cmd

        gc.disable()  # one scan, then exit: nothing to collect that exiting does not free
        rc = int(getattr(snapshot_cmd, f"cmd_{args.cmd}")(args))
        if argv is None:  # the command line, not a caller: leave without tearing the heap down (~5 ms)
            _exit_now(rc)
        return rc
    parser.error(f"unknown command {args.cmd}")
    return EXIT_USAGE


def _exit_now(rc: int) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # `nstrack ls | head`: the reader left, as it may
        os._exit(128 + 13)  # what a process killed by SIGPIPE reports
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())
