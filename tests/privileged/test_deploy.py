"""Deploy and harden: capabilities after start, TLS, basic auth, the wheel, the unit and the manifests."""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from nstrack.kernel.caps import RUNTIME_CAPS
from nstrack.kernel.host import effective_caps

from .scenario import stop_child
from .serving import serve

ROOT = Path(__file__).resolve().parents[2]


def test_capabilities_after_start_are_exactly_the_documented_set() -> None:
    with serve() as srv:
        caps = effective_caps(srv.proc.pid)
        assert caps == set(RUNTIME_CAPS), caps
        assert srv.get("/healthz")[0] == 200
        # still tracking with what is left: a rescan and a holder scan happen after the drop
        assert srv.json("/namespaces?type=net")["namespaces"]
    with serve("--keep-caps") as srv:
        assert {"CAP_BPF", "CAP_PERFMON"} <= effective_caps(srv.proc.pid)
    assert "CAP_PERFMON" not in RUNTIME_CAPS


def _self_signed(d: Path) -> tuple[Path, Path]:
    cert, key = d / "tls.crt", d / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def _get(url: str, ctx: ssl.SSLContext | None, auth: tuple[str, str] | None = None) -> int:
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30, context=ctx) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


@pytest.mark.host_only
def test_tls_and_basic_auth() -> None:
    import bcrypt

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cert, key = _self_signed(d)
        web = d / "web.yml"
        hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
        web.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
                                       "basic_auth_users": {"prom": hashed}}))
        import nstrack.views.http  # noqa: F401  (the server module must import cleanly)

        from .serving import free_port

        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "nstrack", "serve", "--listen", f"127.0.0.1:{port}",
                                 "--web-config-file", str(web)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        try:
            ctx = ssl.create_default_context(cafile=str(cert))
            base = f"https://127.0.0.1:{port}"
            import time

            deadline = time.monotonic() + 60
            while True:
                try:
                    if _get(base + "/healthz", ctx, ("prom", "s3cret")) == 200:
                        break
                except OSError:
                    pass
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline
                time.sleep(0.3)
            for path in ("/", "/metrics", "/namespaces", "/healthz", "/namespaces/4026531840", "/nope"):
                assert _get(base + path, ctx) == 401, path
                assert _get(base + path, ctx, ("prom", "wrong")) == 401, path
                assert _get(base + path, ctx, ("nobody", "s3cret")) == 401, path
            assert _get(base + "/metrics", ctx, ("prom", "s3cret")) == 200
            # plain HTTP to the TLS port gets no HTTP answer at all
            with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
        finally:
            stop_child(proc)


@pytest.mark.host_only
def test_invalid_web_config_exits_2_naming_the_field() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        web = Path(tmp) / "web.yml"
        web.write_text(yaml.safe_dump({"basic_auth_users": {"prom": "plaintext"}}))
        r = subprocess.run([sys.executable, "-m", "nstrack", "serve", "--web-config-file", str(web)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2
        assert "basic_auth_users: Value error, password of 'prom' is not a bcrypt hash" in r.stderr


@pytest.mark.host_only
def test_wheel_installs_into_a_clean_venv_and_doctor_runs() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        # build from a copy: the source tree may be read-only (it is inside the VM matrix's guests)
        src = d / "src"
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", ".cache", "build", "*.egg-info",
                                                                 "__pycache__"))
        # the project's own setuptools (no build isolation): the VM matrix's guests have no network
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(d / "w"), str(src)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        wheel = next((d / "w").glob("nstrack-*.whl"))
        import zipfile

        names = zipfile.ZipFile(wheel).namelist()
        assert {f"nstrack/_bpf/{o}.bpf.o" for o in ("events", "scan", "probe")} <= set(names)
        assert "nstrack/kernel/bpf_names.py" in names
        assert "nstrack/schema/snapshot.schema.json" in names
        subprocess.run([sys.executable, "-m", "venv", str(d / "venv")], check=True)
        # Offline (the VM matrix sets NSTRACK_OFFLINE: guests have no network), install without the
        # dependencies from PyPI: doctor needs none of them. Online, the full install.
        offline = ["--no-deps"] if os.environ.get("NSTRACK_OFFLINE") else []
        pip = subprocess.run([str(d / "venv/bin/pip"), "install", "-q", *offline, str(wheel)],
                             capture_output=True, text=True)
        assert pip.returncode == 0, pip.stderr[-2000:]
        r = subprocess.run([str(d / "venv/bin/nstrack"), "doctor", "--json"], capture_output=True, text=True,
                           cwd=d, timeout=120)
        assert r.returncode == 0, r.stderr
        assert '"mode"' in r.stdout


@pytest.mark.host_only
def test_systemd_unit_verifies() -> None:
    sa = shutil.which("systemd-analyze")
    assert sa, "systemd-analyze is installed by `make setup` (Debian's systemd package)"
    unit = ROOT / "deploy" / "systemd" / "nstrack.service"
    with tempfile.TemporaryDirectory() as tmp:
        # verify resolves ExecStart: point it at a real nstrack for the check
        text = unit.read_text().replace("ExecStart=/usr/bin/nstrack", f"ExecStart={Path(sys.executable).parent}/nstrack")
        copy = Path(tmp) / "nstrack.service"
        copy.write_text(text)
        r = subprocess.run([sa, "verify", str(copy)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    caps_line = next(ln for ln in unit.read_text().splitlines() if ln.startswith("CapabilityBoundingSet="))
    assert set(caps_line.split("=", 1)[1].split()) == {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_SYS_RESOURCE"}
