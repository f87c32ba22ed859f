"""The container image: builds with podman from a local Debian base, holds no compiler, and run as the Kubernetes
DaemonSet runs it (its capabilities, host mounts and host pid namespace, read from the manifest) chooses the
same tracking mode as doctor on this host, and serves.

Runs on the host only: the VM matrix's guests run `pytest -m privileged`, which this folder is not (no
network, no podman there). Needs root, podman and mmdebstrap (`make deps`); without them it fails, never skips.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILDER = ROOT / "deploy" / "container" / "build_image.py"
DAEMONSET = ROOT / "deploy" / "kubernetes" / "daemonset.yaml"

# linux/capability.h
CAP_NAMES = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
]
# anything that compiles C (or BPF): front ends, their versioned and triplet names, the LLVM back end
COMPILER_NAMES = ("cc", "c89", "c99", "gcc", "g++", "c++", "cpp", "clang", "clang++", "clang-cpp", "tcc", "llc")
COMPILER_PACKAGES = ("gcc", "g++", "cpp", "clang", "llvm", "tcc", "binutils", "libbpf-dev", "libclang", "libllvm",
                     "linux-headers", "libc6-dev")


def caps_of(mask: int) -> set[str]:
    return {name for bit, name in enumerate(CAP_NAMES) if mask >> bit & 1}


def status_caps(text: str, field: str) -> set[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(field + ":"))
    return caps_of(int(line.split()[1], 16))


def is_compiler(name: str) -> bool:
    base = name.rsplit("-linux-gnu-", 1)[-1]  # x86_64-linux-gnu-gcc-12
    for c in COMPILER_NAMES:
        if base == c or (base.startswith(c + "-") and base[len(c) + 1:].replace(".", "").isdigit()):
            return True
    return False


def is_compiler_package(pkg: str) -> bool:
    if pkg.endswith("-base") or pkg.startswith(("libgcc", "libstdc++")):
        return False  # runtime libraries every Debian system has (gcc-12-base holds only their copyright)
    return any(pkg == p or pkg.startswith(p + "-") or (pkg.startswith(p) and pkg[len(p):].replace(".", "").isdigit())
               for p in COMPILER_PACKAGES)


def _load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nstrack_build_image", BUILDER)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Podman:
    """podman with the project's private configuration; remembers every container it starts and removes them."""

    def __init__(self, builder: ModuleType) -> None:
        exe = shutil.which("podman")
        assert exe, "podman is not installed: `make deps` installs it (Debian's podman, runc, mmdebstrap)"
        self.exe, self.env = exe, builder.podman_env()
        self.started: list[str] = []

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([self.exe, *args], check=False, env=self.env, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert r.returncode == 0, (f"podman {' '.join(args)} exited {r.returncode}:\n"
                                       f"{r.stdout[-3000:]}{r.stderr[-3000:]}")
        return r

    def name(self) -> str:
        name = f"nstrack-test-{uuid.uuid4().hex[:12]}"
        self.started.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.started:
            self("rm", "--force", "--time", "5", "--ignore", name, check=False, timeout=120)
        left = self("ps", "--all", "--format", "{{.Names}}", check=False).stdout.split()
        assert not set(left) & set(self.started), f"containers left behind: {left}"


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    return _load_builder()


@pytest.fixture(scope="module")
def image(builder: ModuleType) -> str:
    """Builds the image as `make image` does (a cached local Debian base, wheels from this tree)."""
    assert os.geteuid() == 0, "the image test needs root (podman, mmdebstrap): run `make test` as root"
    for tool in ("podman", "mmdebstrap", "runc"):
        assert shutil.which(tool), f"{tool} is not installed: `make deps` installs it"
    started = time.monotonic()
    r = subprocess.run([sys.executable, str(BUILDER)], check=False, capture_output=True, text=True, timeout=1800,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"image build failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    print(f"image built in {time.monotonic() - started:.0f} s")
    return str(builder.default_tag())


@pytest.fixture
def podman(builder: ModuleType) -> Iterator[Podman]:
    p = Podman(builder)
    try:
        yield p
    finally:
        p.cleanup()


def daemonset() -> tuple[dict[str, Any], dict[str, Any]]:
    ds = next(d for d in yaml.safe_load_all(DAEMONSET.read_text()) if d and d.get("kind") == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "nstrack")
    return pod, container


def daemonset_run_args() -> tuple[list[str], set[str]]:
    """`podman run` options for what the DaemonSet's pod spec grants, and the capabilities it adds (BPF, ...)."""
    pod, c = daemonset()
    sc = c.get("securityContext", {})
    assert not sc.get("privileged"), "the DaemonSet is never privileged"
    caps = sc.get("capabilities", {})
    assert caps.get("drop") == ["ALL"], caps
    added = set(caps.get("add", []))
    args = ["--cap-drop=ALL", *(f"--cap-add={n}" for n in caps.get("add", []))]
    if sc.get("allowPrivilegeEscalation") is False:
        args.append("--security-opt=no-new-privileges")
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if "runAsUser" in sc:
        args.append(f"--user={sc['runAsUser']}")
    # No seccompProfile would mean the kubelet's default (Unconfined unless --seccomp-default); podman's own
    # default profile would be RuntimeDefault. The DaemonSet says Unconfined explicitly.
    seccomp = (sc.get("seccompProfile") or pod.get("securityContext", {}).get("seccompProfile") or {}).get("type")
    if seccomp in (None, "Unconfined"):
        args.append("--security-opt=seccomp=unconfined")
    else:
        assert seccomp == "RuntimeDefault", f"seccompProfile {seccomp} is not translated here"
    if pod.get("hostPID"):
        args.append("--pid=host")
    for e in c.get("env", []):
        args.append(f"--env={e['name']}={e['value']}")
    if "memory" in c.get("resources", {}).get("limits", {}):
        mem = c["resources"]["limits"]["memory"]
        assert mem.endswith("Mi"), mem
        args.append(f"--memory={mem[:-2]}m")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        hp = volumes[m["name"]]["hostPath"]
        if hp.get("type") == "DirectoryOrCreate":
            os.makedirs(hp["path"], exist_ok=True)  # as the kubelet does
        opts = ["ro" if m.get("readOnly") else "rw"]
        prop = m.get("mountPropagation")
        if prop == "HostToContainer":
            opts.append("rslave")
        elif prop == "Bidirectional":
            opts.append("rshared")
        args.append(f"--volume={hp['path']}:{m['mountPath']}:{','.join(opts)}")
    return args, added


def host_bounding_caps() -> set[str]:
    return status_caps(Path("/proc/self/status").read_text(), "CapBnd")


def test_image_runs_nstrack_and_has_no_compiler(image: str, podman: Podman) -> None:
    cfg = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert cfg["Entrypoint"] == ["/usr/bin/nstrack"], cfg
    assert cfg["Cmd"] == ["serve", "--listen", "0.0.0.0:9864"], cfg

    listing = podman("run", "--rm", "--name", podman.name(), "--network=host", "--entrypoint", "/bin/sh", image,
                     "-c", "for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do ls -1 $d; done;"
                     " ls -1 /usr/lib/gcc /usr/libexec/gcc /usr/lib/llvm-* 2>/dev/null; true").stdout.split()
    compilers = sorted({n for n in listing if is_compiler(n)})
    assert not compilers, f"compilers in the image: {compilers}"
    assert "nstrack" in listing and "python3" in listing

    packages = podman("run", "--rm", "--name", podman.name(), "--network=host", "--entrypoint", "dpkg-query",
                      image, "-W", "-f", "${Package}\n").stdout.split()
    bad = sorted(p for p in packages if is_compiler_package(p))
    assert not bad, f"compiler packages in the image: {bad}"
    assert "libbpf1" in packages, packages

    # the wheel's precompiled BPF objects, loaded through Debian's libbpf.so.1
    out = podman("run", "--rm", "--name", podman.name(), "--network=host", "--entrypoint", "/opt/nstrack/bin/python",
                 image, "-c", "import ctypes, pathlib, nstrack; ctypes.CDLL('libbpf.so.1');"
                              " print(' '.join(sorted(p.name for p in"
                              " (pathlib.Path(nstrack.__file__).parent / '_bpf').glob('*.bpf.o'))))").stdout.split()
    assert out == sorted(p.name for p in (ROOT / "nstrack" / "_bpf").glob("*.bpf.o")), out


def test_doctor_in_the_daemonset_sandbox_chooses_the_host_mode(image: str, podman: Podman) -> None:
    args, added = daemonset_run_args()
    # the capabilities the container really has: exactly the DaemonSet's, less those this host cannot grant
    # (a runtime only hands out what is in its own bounding set: e.g. sandboxes without CAP_SYS_RESOURCE)
    grantable = host_bounding_caps()
    status = podman("run", "--rm", "--name", podman.name(), "--network=host", *args, "--entrypoint", "/bin/cat",
                    image, "/proc/self/status").stdout
    assert status_caps(status, "CapEff") == added & grantable, status
    assert status_caps(status, "CapBnd") == added & grantable, status
    if added - grantable:
        warnings.warn(f"this host cannot grant {sorted(added - grantable)} (not in its bounding set): the container "
                      "ran without it", stacklevel=1)

    host = subprocess.run([sys.executable, "-m", "nstrack", "doctor", "--json"], check=False, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert host.returncode in (0, 1), host.stderr
    host_doc = json.loads(host.stdout)

    r = podman("run", "--rm", "--name", podman.name(), "--network=host", *args, image, "doctor", "--json",
               check=False)
    assert r.returncode in (0, 1), f"doctor in the container exited {r.returncode}: {r.stderr[-3000:]}"
    doc = json.loads(r.stdout)
    assert doc["mode"] == host_doc["mode"], (
        f"container chose {doc['mode']}, host {host_doc['mode']}; container probes: "
        + json.dumps({k: v["reason"] for k, v in doc["probes"].items() if not v["ok"]}))
    assert r.returncode == host.returncode, (r.returncode, host.returncode)
    assert doc["missing_capabilities"] == [], doc["missing_capabilities"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()


def test_default_entrypoint_serves_healthz_and_metrics(image: str, podman: Podman) -> None:
    args, _ = daemonset_run_args()
    port = _free_port()
    name = podman.name()
    # the DaemonSet's args with a loopback listener on a free port: the entrypoint is the image's own
    podman("run", "--detach", "--name", name, "--network=host", *args, image, "serve", "--listen",
           f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    code, body = 0, ""
    while True:
        try:
            code, body = _get(base + "/healthz")
            if code == 200:
                break
        except OSError:
            pass
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["Running"], f"nstrack serve exited {state['ExitCode']}:\n{podman('logs', name).stderr[-3000:]}"
        assert time.monotonic() < deadline, f"/healthz not 200 within 90 s ({code} {body}):\n" + podman(
            "logs", name).stderr[-3000:]
        time.sleep(0.3)
    code, metrics = _get(base + "/metrics")
    assert code == 200
    assert "nstrack_build_info{" in metrics, metrics[:2000]
    # SIGTERM (podman stop) ends it cleanly
    podman("stop", "--time", "30", name, timeout=120)
    state = json.loads(podman("inspect", name).stdout)[0]["State"]
    assert state["ExitCode"] == 0, podman("logs", name).stderr[-3000:]
