"""The HTTP side of `nstrack serve`: /metrics, /namespaces, /namespaces/{id}, /healthz and a landing page.

Threaded (a slow or idle client never blocks a scrape), with a per-connection timeout, bounded
responses (``limit``), and JSON errors: 400 for bad parameters or a malformed name, 404 for unknown
paths and namespaces, 410 for a namespace that nstrack saw destroyed (its tombstone).
"""

from __future__ import annotations

import html
import json
import logging
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .. import __version__
from ..model.nstypes import UnknownNamespaceType, ns_type
from ..webconfig import BasicAuth, WebConfig, ssl_context
from .metrics import NstrackCollector

if TYPE_CHECKING:
    from ..service import Service

log = logging.getLogger(__name__)
MAX_LIMIT = 100_000


class BadRequest(Exception):
    pass


def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes"):
        return True
    if v.lower() in ("0", "false", "no"):
        return False
    raise BadRequest(f"expected true or false, got {v!r}")


def make_server(service: Service, web: WebConfig | None = None) -> ThreadingHTTPServer:
    web = web or WebConfig()
    auth = BasicAuth(web.basic_auth_users)
    tls = ssl_context(web)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NstrackCollector(service))
    timeout = service.config.request_timeout

    class Handler(BaseHTTPRequestHandler):
        server_version = f"nstrack/{__version__}"
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.request.settimeout(timeout)

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), fmt % args)

        def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, code: int, obj: Any) -> None:
            self._send(code, json.dumps(obj, indent=1).encode() + b"\n", "application/json")

        def _error(self, code: int, message: str) -> None:
            self._json(code, {"error": message, "status": code})

        def do_HEAD(self) -> None:
            self.do_GET()

        def _authorized(self) -> bool:
            if auth.check(self.headers.get("Authorization")):
                return True
            body = json.dumps({"error": "unauthorized", "status": 401}).encode() + b"\n"
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="nstrack"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return False

        def do_GET(self) -> None:
            if not self._authorized():
                return
            url = urlsplit(self.path)
            try:
                query = {k: v[-1] for k, v in parse_qs(url.query, strict_parsing=False).items()}
                path = url.path
                if path == "/":
                    self._landing()
                elif path == "/metrics":
                    encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
                    self._send(200, encoder(registry), ctype)
                elif path == "/healthz":
                    ok, why = service.health()
                    self._json(200 if ok else 503, {"ok": ok, "reason": why, "mode": service.mode})
                elif path == "/ls":
                    self._ls(query)
                elif path == "/namespaces":
                    self._namespaces(query)
                elif path.startswith("/namespaces/"):
                    self._one(unquote(path[len("/namespaces/"):]))
                else:
                    self._error(404, f"no such path {path}; see / for the endpoints")
            except BadRequest as exc:
                self._error(400, str(exc))
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass
            except Exception as exc:
                log.exception("request %s failed", self.path)
                self._error(500, f"internal error: {type(exc).__name__}")

        def do_POST(self) -> None:
            if self._authorized():
                self._error(405, "read-only API: use GET")

        do_PUT = do_DELETE = do_PATCH = do_POST

        def _landing(self) -> None:
            ok, why = service.health()
            body = f"""<!doctype html><html><head><title>nstrack</title></head><body>
<h1>nstrack {html.escape(__version__)}</h1>
<p>Kernel {html.escape(service.findings.kernel)}, tracking mode <b>{html.escape(service.mode)}</b>:
{html.escape(service.tracker.findings.decision.limits)}.</p>
<p>Health: {'ok' if ok else 'NOT OK'} ({html.escape(why)})</p>
<ul>
<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="/namespaces">/namespaces</a>: every live namespace with holders
 (filters: <a href="/namespaces?orphaned=true">?orphaned=true</a>, ?type=net, ?userns=INUM, ?limit=N)</li>
<li>/namespaces/{{name, inum or ns_id}}: one namespace, e.g. /namespaces/net:%5B4026531840%5D</li>
<li><a href="/ls">/ls</a>: the rows of <code>nstrack ls --json</code> (?columns=NS,TYPE,..., ?type=, ?orphaned=true)</li>
<li><a href="/healthz">/healthz</a>: 200 while tracking is live, else 503 with the reason</li>
</ul></body></html>
"""
            self._send(200, body.encode(), "text/html; charset=utf-8")

        def _ls(self, q: dict[str, str]) -> None:
            """What `nstrack ls --json` prints, from the live replica (for `nstrack ls --server`)."""
            from .table import DEFAULT_COLUMNS, json_text, parse_columns, rows

            unknown = set(q) - {"columns", "type", "orphaned"}
            if unknown:
                raise BadRequest(f"unknown parameter {min(unknown)!r}; valid: columns, type, orphaned")
            try:
                columns = parse_columns(q["columns"]) if "columns" in q else DEFAULT_COLUMNS
                types = {ns_type(t).name for t in q["type"].split(",")} if q.get("type") else None
            except (ValueError, UnknownNamespaceType) as exc:
                raise BadRequest(str(exc)) from None
            orphaned = _bool(q["orphaned"]) if "orphaned" in q else False
            service.refresh_holders()
            with service.lock:
                entries, version = service.entries, service.entries_version
                complete, reasons = service.entries_complete, list(service.entries_reasons)
            # kept per holder aggregation, like /namespaces: unchanged holders, unchanged answer
            key = (version, id(entries), tuple(columns), frozenset(types or ()), orphaned)
            cache = service.ls_cache
            body = cache.get(key)
            if body is None:
                picked = [e for e in entries if (not types or e.type in types) and (not orphaned or e.orphaned)]
                body = json_text(rows(picked, columns), columns)
                if len(cache) >= 16 or any(k[0] != version for k in cache):
                    cache.clear()
                cache[key] = body
            headers = {"X-Nstrack-Complete": "true" if complete else "false"}
            if not complete:
                headers["X-Nstrack-Incomplete"] = "; ".join(reasons)[:2000]
            self._send(200, (body + "\n").encode(), "application/json", headers)

        def _namespaces(self, q: dict[str, str]) -> None:
            unknown = set(q) - {"type", "orphaned", "userns", "limit"}
            if unknown:
                raise BadRequest(f"unknown parameter {min(unknown)!r}; valid: type, orphaned, userns, limit")
            types = None
            if "type" in q:
                try:
                    types = {ns_type(t).name for t in q["type"].split(",")}
                except UnknownNamespaceType as exc:
                    raise BadRequest(str(exc)) from None
            orphaned = _bool(q["orphaned"]) if "orphaned" in q else None
            userns = limit = None
            try:
                if "userns" in q:
                    userns = int(q["userns"])
                if "limit" in q:
                    limit = int(q["limit"])
            except ValueError:
                raise BadRequest("userns and limit take whole numbers") from None
            if limit is not None and not 0 < limit <= MAX_LIMIT:
                raise BadRequest(f"limit must be 1..{MAX_LIMIT}")
            snap = snapshot_of(service, types=types, userns=userns, orphaned=orphaned, limit=limit)
            self._send(200, snap.encode(), "application/json")

        def _one(self, ident: str) -> None:
            from .snapshot_cmd import parse_ns_arg

            try:
                type_, inum, ns_id = parse_ns_arg(ident)
            except (ValueError, UnknownNamespaceType) as exc:
                raise BadRequest(f"{exc}; use type:[inum] (URL-encoded), an inode number or an ns_id") from None
            service.refresh_holders()
            from ..model.snapshot import entry_model

            with service.lock:
                hits = [e for e in service.entries if (type_ is None or e.type == type_)
                        and (inum is None or e.inum == inum) and (ns_id is None or e.ns_id == ns_id)]
                if hits:
                    now = time.time()
                    self._send(200, entry_model(hits[0], now).model_dump_json(indent=1).encode(),
                               "application/json")
                    return
                dead = service.tracker.replica.lookup(type_, inum, ns_id)
                dead = [d for d in dead if not d.alive]
            if dead:
                d = dead[0]
                from ..model.replica import wall_time
                from .watch import iso

                self._json(410, {"error": f"{d.name} was destroyed", "status": 410, "name": d.name,
                                 "ns_id": d.ns_id, "destroyed": iso(wall_time(d.destroyed_ns or 0)),
                                 "detected_by": d.destroyed_by})
                return
            self._error(404, f"no live namespace {ident}")

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 64

    server = Server(service.config.address, Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return server


def snapshot_of(service: Service, *, types: set[str] | None = None, userns: int | None = None,
                orphaned: bool | None = None, limit: int | None = None) -> str:
    """The snapshot document (same model as `nstrack snapshot`) from the live replica, as JSON.

    Each entry's JSON is made once per holder aggregation (``entries_version``) and kept: requests
    in between, filtered or not, only pick and join them.
    """
    from ..model.holders import visible_user_namespaces
    from ..model.snapshot import entry_json, snapshot_dict

    service.refresh_holders()
    with service.lock:
        entries = service.entries
        version = service.entries_version
        complete, reasons, at = service.entries_complete, list(service.entries_reasons), service.entries_at
    cached = service.render_cache.get("namespaces")
    if cached is None or cached[0] != version or cached[1] is not entries:
        # straight to JSON, entry by entry: the peak (and so the resident size) stays small
        offset = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        memo: dict[int, str] = {}
        cached = (version, entries, [entry_json(e, at, offset, memo) for e in entries])
        service.render_cache["namespaces"] = cached
    encoded: list[str] = cached[2]
    picked = range(len(entries))
    if userns is not None:
        parents = {e.inum: e.owner_inum for e in entries if e.type == "user" and e.owner_inum}
        visible = visible_user_namespaces(userns, parents)
        picked = [i for i in picked if (entries[i].inum if entries[i].type == "user" else entries[i].owner_inum)
                  in visible]  # type: ignore[assignment]
    if types:
        picked = [i for i in picked if entries[i].type in types]  # type: ignore[assignment]
    if orphaned is not None:
        picked = [i for i in picked if entries[i].orphaned is orphaned]  # type: ignore[assignment]
    if limit is not None:
        picked = picked[:limit]
    head = snapshot_dict(
        kernel=service.findings.kernel,
        mode=service.mode,
        method=service.tracker.stats.last_scan.method if service.tracker.stats.last_scan else "unknown",
        scan_time=at,
        complete=complete,
        incomplete_reasons=reasons,
        free_latency=service.tracker.free_latency_bound,
        entries=(),
    )
    text = json.dumps(head, separators=(",", ":"))
    assert text.endswith('"namespaces":[]}')
    return text[: -len("[]}")] + "[" + ",".join(encoded[i] for i in picked) + "]}\n"
