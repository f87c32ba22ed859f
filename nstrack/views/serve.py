"""``nstrack serve``: load the configuration, start tracking, serve HTTP until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading


def cmd_serve(args: argparse.Namespace) -> int:
    from ..config import ConfigError, load

    flags = {k: getattr(args, k, None) for k in ("listen", "mode", "rescan_seconds", "holders_seconds",
                                                  "per_namespace_metrics", "per_namespace_limit", "keep_caps", "web_config_file")}
    from ..webconfig import WebConfig, load_web_config, ssl_context

    try:
        config = load(args.config, flags)
        web = load_web_config(config.web_config_file) if config.web_config_file else WebConfig()
        ssl_context(web)  # fail now, not at the first connection
    except ConfigError as exc:
        print(f"nstrack serve: {exc}", file=sys.stderr)
        return 2

    logging.basicConfig(level=logging.INFO, format="%(asctime)s nstrack %(levelname)s %(message)s")
    from ..kernel.libbpf import BPFError
    from ..kernel.probe import investigate
    from ..service import Service
    from .http import make_server

    try:
        findings = investigate(requested_mode=config.mode)
    except ValueError as exc:
        print(f"nstrack serve: {exc}", file=sys.stderr)
        return 1
    service = Service(config, findings)
    try:
        service.start()
    except BPFError as exc:
        print(f"nstrack serve: cannot start tracking: {exc}", file=sys.stderr)
        service.stop()
        return 1
    try:
        server = make_server(service, web)
    except OSError as exc:
        print(f"nstrack serve: cannot listen on {config.listen}: {exc.strerror}", file=sys.stderr)
        service.stop()
        return 1
    stop = threading.Event()

    def _term(*_: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _term)
    bound = service.tracker.free_latency_bound
    logging.getLogger("nstrack.serve").info("serving %s://%s/ (mode %s, %d namespaces; frees %s)", "https" if web.tls_server_config else "http",
                 config.listen, service.mode,
                 len(service.tracker.replica),
                 f"within {bound:g} s (rescans)" if bound else "as they happen")
    try:
        server.serve_forever(poll_interval=2.0)  # each wake-up costs CPU on an idle node; stop waits <= 2 s
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.stop()
    return 0
