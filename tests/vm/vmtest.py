#!/usr/bin/env python3
"""Run a command (by default the privileged test suite) on several Debian kernels under QEMU.

Each kernel boots with a tiny busybox initramfs that mounts the host's root file system read-only
over 9p, chroots into it and runs the guest command from the project root. Results land in
``build/vmtest/<series>/`` (console log, exit code, junit XML, doctor.json) and a summary in
``build/vmtest/summary.json``. Kernels are downloaded from the Debian archive the host already uses
and cached in ``.cache/vmtest/``.

Run as root on the host::

    python3 tests/vm/vmtest.py                       # all kernels, tests/vm/guest.sh
    python3 tests/vm/vmtest.py --kernels 5.10,6.12 --cmd 'uname -r'
    python3 tests/vm/vmtest.py --fetch-only          # download and unpack only
    python3 tests/vm/vmtest.py --check-deps          # report missing host packages

Standard library only (Python 3.11).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """One kernel series of the matrix.

    ``packages`` are regular expressions over Debian package names; the newest version that every
    pattern has in common (among the ``suites``) is taken. The first package must hold
    kernel image (``boot/vmlinuz-*`` or ``usr/lib/modules/*/vmlinuz*``); modules may come from any of
    them. ``env`` is added to the guest command's environment on this kernel.
    """

    series: str
    suites: tuple[str, ...]
    packages: tuple[str, ...]
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)


# What every Debian kernel below allows (BTF, fentry/fexit, kprobes; see kernel-facts.json):
# tests/privileged/test_doctor.py asserts the chosen mode against it instead of skipping, and the
# lifecycle tests run in every mode the kernel allows.
DEBIAN_ENV = {"NSTRACK_EXPECT_MODE": "fentry", "NSTRACK_TEST_MODES": "fentry,kprobe,tracepoint",
              "NSTRACK_OFFLINE": "1"}  # guests reach no package registry

# The kernel matrix: the only place to edit to add, drop or move a kernel series.
KERNELS: tuple[KernelSpec, ...] = (
    KernelSpec(
        "5.10",
        ("bullseye", "bullseye-security"),
        (r"linux-image-5\.10\.0-\d+-amd64-unsigned",),
        DEBIAN_ENV,
    ),
    KernelSpec(
        "6.1",
        ("bookworm", "bookworm-security"),
        (r"linux-image-6\.1\.0-\d+-amd64-unsigned",),
        # tracepoint mode before 6.18 (the fork and unshare tracepoints, rescans of what holds namespaces)
        # runs on 5.10 and 6.12, either side of 6.1: the same programs and the same task and nsproxy
        # fields, which 6.1's own scans read in every other test here; the event modes, whose hooks
        # differ per kernel, run on every kernel
        {**DEBIAN_ENV, "NSTRACK_TEST_MODES": "fentry,kprobe"},
    ),
    KernelSpec(
        "6.12",
        ("trixie", "trixie-security"),
        (r"linux-image-6\.12\.\d+\+deb13(?:\.\d+)?-amd64-unsigned",),
        DEBIAN_ENV,
    ),
    KernelSpec(
        "7.2",
        ("sid",),
        (r"linux-binary-unsigned-7\.2\.\d+\+deb14-amd64", r"linux-modules-7\.2\.\d+\+deb14-amd64"),
        {**DEBIAN_ENV, "NSTRACK_EXPECT_LISTNS": "1"},  # 6.19+: tests/privileged/test_listns.py must run
    ),
)

# Modules needed to mount a 9p root over virtio, in no particular order (modules.dep decides).
# Any of them may be built in or absent, depending on the kernel.
ROOT_MODULES: tuple[str, ...] = (
    "virtio",
    "virtio_ring",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "netfs",
    "fscache",
    "9pnet",
    "9pnet_virtio",
    "9p",
)

# Host packages this script needs, by the program that tells they are there.
HOST_DEPS: dict[str, str] = {
    "qemu-system-x86": "/usr/bin/qemu-system-x86_64",
    "busybox-static": "/bin/busybox",
}

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = PROJECT_ROOT / ".cache" / "vmtest"
BUILD_DIR = PROJECT_ROOT / "build" / "vmtest"
DEFAULT_CMD = "exec /bin/sh tests/vm/guest.sh"
DEFAULT_TIMEOUT = 3000.0  # a kernel alone takes 550-900 s under TCG on 2 cores, four at once up to three times that; only a hung guest reaches this
# Kernels booted at once. Under TCG the host's CPU is what limits the matrix: two guests at a time kept the
# 2-core host 72% busy (5.10 and 6.1: 2789 s of QEMU CPU in 1949 s), so every kernel starts at once and the
# cores stay busy until the last one ends.
DEFAULT_JOBS = 4
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
GUEST_OUT = "/run/vmout"  # where the results share is mounted, inside the chroot
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
QEMU = "qemu-system-x86_64"
# Free space wanted before downloading: packages, unpacked trees, and this margin.
SPACE_MARGIN = 512 * 1024 * 1024
UNPACK_FACTOR = 5  # unpacked size / .deb size, rounded up (xz-compressed modules are ~4x)


class VmTestError(Exception):
    """An error that ends the run with a message and no traceback."""


_LOG_LOCK = threading.Lock()


def log(message: str) -> None:
    print(f"[vmtest] {message}", flush=True)


class Timer:
    """Context manager that measures wall time: ``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> Self:
        self.start = time.monotonic()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.start


def run(cmd: Sequence[str], *, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; raise VmTestError with its stderr when it fails."""
    proc = subprocess.run(list(cmd), cwd=cwd, text=True, capture_output=True, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise VmTestError(f"command failed ({proc.returncode}): {shlex.join(cmd)}\n  " + "\n  ".join(tail))
    return proc


# ---------------------------------------------------------------------------------------------
# Host dependencies


def missing_deps() -> list[str]:
    return [pkg for pkg, path in HOST_DEPS.items() if not Path(path).exists()]


def ensure_deps(install: bool) -> None:
    """Install missing host packages with apt-get (as root), or fail naming them."""
    missing = missing_deps()
    if not missing:
        return
    if not install or os.geteuid() != 0:
        raise VmTestError(
            "missing host packages: " + " ".join(missing) + "\n  install them with: apt-get install -y " + " ".join(missing)
        )
    log(f"installing missing host packages: {' '.join(missing)}")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(cmd, stdin=subprocess.DEVNULL, env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], stdin=subprocess.DEVNULL, env=env)
        if subprocess.run(cmd, stdin=subprocess.DEVNULL, env=env).returncode != 0:
            raise VmTestError("apt-get install failed for: " + " ".join(missing))
    still = missing_deps()
    if still:
        raise VmTestError("still missing after apt-get install: " + " ".join(still))


# ---------------------------------------------------------------------------------------------
# Private apt configuration: the host's own archive, other suites, nothing of the system's touched


def host_archive_uris() -> tuple[str, str]:
    """Return (main archive URI, security archive URI) as the host's apt sources name them."""
    main: str | None = None
    security: str | None = None
    texts: list[str] = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if path.suffix in (".list", ".sources") and path.is_file():
            texts.append(path.read_text(errors="replace"))
    for text in texts:
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.findall(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = " ".join(re.findall(r"^Suites:\s*(.+)$", stanza, re.MULTILINE))
            for line in re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", stanza, re.MULTILINE):
                uris.append(line[0])
                suites += " " + line[1]
            for uri in uris:
                if "debian" not in uri:
                    continue
                if "-security" in suites or uri.rstrip("/").endswith("-security"):
                    security = security or uri.rstrip("/")
                else:
                    main = main or uri.rstrip("/")
    if main is None:
        raise VmTestError("no Debian archive found in /etc/apt/sources.list{,.d}: cannot fetch kernels")
    return main, security or main + "-security"


class PrivateApt:
    """apt-get/apt-cache with their own sources, lists and cache in one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sources = root / "sources.list"
        self.lists = root / "lists"
        self.cache = root / "cache"

    def options(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::sourcelist={self.sources}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={self.lists}",
            "-o", f"Dir::Cache={self.cache}",
            "-o", "Acquire::Languages=none",
            "-o", "Acquire::http::Timeout=30",
            "-o", "APT::Sandbox::User=root",
            "-q",
        ]  # fmt: skip

    def write_sources(self, suites: Iterable[str], archive: str | None) -> None:
        main, security = host_archive_uris()
        if archive:
            main, security = archive.rstrip("/"), archive.rstrip("/") + "-security"
        lines = []
        for suite in suites:
            uri = security if suite.endswith("-security") else main
            lines.append(f"deb [signed-by={KEYRING}] {uri} {suite} main\n")
        (self.lists / "partial").mkdir(parents=True, exist_ok=True)
        (self.cache / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        self.sources.write_text("".join(lines))

    def update(self) -> bool:
        proc = run(["apt-get", *self.options(), "--error-on=any", "update"], check=False)
        if proc.returncode != 0:
            log("apt-get update failed: " + " | ".join(proc.stderr.strip().splitlines()[-3:]))
        return proc.returncode == 0

    def package_names(self) -> list[str]:
        return run(["apt-cache", *self.options(), "pkgnames", "linux-"]).stdout.split()

    def madison(self, names: Sequence[str]) -> list[tuple[str, str, str]]:
        """(name, version, suite) for every version of the named packages."""
        out = run(["apt-cache", *self.options(), "madison", *names]).stdout
        rows = []
        for line in out.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) >= 3 and parts[2].endswith("Packages"):
                # "http://deb.debian.org/debian trixie/main amd64 Packages"
                suite = parts[2].split()[1].split("/")[0]
                rows.append((parts[0], parts[1], suite))
        return rows

    def field(self, name: str, version: str, field: str) -> str:
        out = run(["apt-cache", *self.options(), "show", f"{name}={version}"]).stdout
        match = re.search(rf"^{field}:\s*(.+)$", out, re.MULTILINE)
        if not match:
            raise VmTestError(f"apt-cache show {name}={version}: no {field} field")
        return match.group(1).strip()

    def download(self, name: str, version: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        filename = Path(self.field(name, version, "Filename")).name
        size = int(self.field(name, version, "Size"))
        target = dest / filename
        if target.exists() and target.stat().st_size != size:
            target.unlink()  # left over from an interrupted download
        if not target.exists():
            run(["apt-get", *self.options(), "download", f"{name}={version}"], cwd=dest)
        if not target.exists() or target.stat().st_size != size:
            raise VmTestError(f"apt-get download {name}={version} did not produce {filename} of {size} bytes")
        return target


def version_gt(a: str, b: str) -> bool:
    """Debian version order (dpkg's own comparison)."""
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0


# ---------------------------------------------------------------------------------------------
# Kernels: resolve, download, unpack, cache


@dataclasses.dataclass
class Kernel:
    """An unpacked kernel ready to boot."""

    series: str
    release: str  # the modules folder name, as `uname -r` prints it
    version: str  # Debian package version
    packages: list[str]  # name=version
    root: Path  # unpacked tree
    image: str  # the kernel image, relative to root

    @property
    def vmlinuz(self) -> Path:
        return self.root / self.image

    @property
    def modules(self) -> Path:
        for base in ("lib", "usr/lib"):
            path = self.root / base / "modules" / self.release
            if path.is_dir():
                return path
        raise VmTestError(f"{self.series}: no modules folder for {self.release} in {self.root}")

    def to_json(self) -> dict[str, object]:
        return {
            "series": self.series,
            "release": self.release,
            "version": self.version,
            "packages": self.packages,
            "image": self.image,
        }

    @classmethod
    def load(cls, root: Path) -> Kernel | None:
        """The kernel cached in root, or None if there is none or its record is unreadable."""
        try:
            data = json.loads((root / "kernel.json").read_text())
            kernel = cls(data["series"], data["release"], data["version"], list(data["packages"]), root, data["image"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return kernel if kernel.vmlinuz.is_file() else None


def resolve(apt: PrivateApt, spec: KernelSpec, names: list[str]) -> tuple[str, list[str]]:
    """Newest (version, [package names]) that all of the spec's patterns share, in its suites."""
    per_pattern: list[dict[str, str]] = []
    for pattern in spec.packages:
        regex = re.compile(pattern + r"\Z")
        candidates = [n for n in names if regex.match(n)]
        versions: dict[str, str] = {}
        if candidates:
            for name, version, suite in apt.madison(candidates):
                if suite in spec.suites:
                    versions[version] = name
        if not versions:
            raise VmTestError(f"{spec.series}: no package matching {pattern} in {', '.join(spec.suites)}")
        per_pattern.append(versions)
    common = set(per_pattern[0]).intersection(*per_pattern[1:])
    if not common:
        raise VmTestError(f"{spec.series}: packages {spec.packages} share no version")
    newest = next(iter(common))
    for version in common:
        if version_gt(version, newest):
            newest = version
    return newest, [versions[newest] for versions in per_pattern]


def cached_kernels(cache: Path, series: str) -> list[Kernel]:
    base = cache / "kernels" / series
    newest: list[Kernel] = []
    for kernel in filter(None, (Kernel.load(p) for p in sorted(base.glob("*")))):
        if not newest or version_gt(kernel.version, newest[0].version):
            newest = [kernel]
    return newest


def find_image(tree: Path, spec: KernelSpec, packages: list[str]) -> tuple[str, str]:
    """(image path relative to tree, kernel release) of an unpacked kernel package.

    Up to Debian 13 the image is boot/vmlinuz-RELEASE; from 7.x (sid) it is
    usr/lib/modules/RELEASE/vmlinuz (vmlinuz.unsigned in the -unsigned package).
    """
    for path in sorted((tree / "boot").glob("vmlinuz-*")):
        return str(path.relative_to(tree)), path.name.removeprefix("vmlinuz-")
    for base in ("usr/lib/modules", "lib/modules"):
        for path in sorted((tree / base).glob("*/vmlinuz*")):
            return str(path.relative_to(tree)), path.parent.name
    raise VmTestError(f"{spec.series}: no kernel image (boot/vmlinuz-*, */modules/*/vmlinuz*) in {', '.join(packages)}")


def check_space(path: Path, need: int, what: str) -> None:
    """Fail before downloading when path's file system has less than need bytes free."""
    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free
    if free < need:
        raise VmTestError(
            f"not enough disk space for {what}: {free / 2**30:.1f} GiB free on {path}, "
            f"{need / 2**30:.1f} GiB needed (clear {path} or free space)"
        )


def fetch(cache: Path, apt: PrivateApt | None, spec: KernelSpec, names: list[str] | None) -> Kernel:
    """Return the newest kernel of the series, downloading and unpacking it if needed."""
    if apt is None or names is None:
        cached = cached_kernels(cache, spec.series)
        if not cached:
            raise VmTestError(f"Debian archive unreachable and no cached kernel for {spec.series}")
        log(f"{spec.series}: archive unreachable, using cached {cached[0].release} ({cached[0].version})")
        return cached[0]
    version, packages = resolve(apt, spec, names)
    tag = re.sub(r"[^A-Za-z0-9.+-]", "_", f"{packages[0]}_{version}")
    root = cache / "kernels" / spec.series / tag
    have = Kernel.load(root)
    if have:
        log(f"{spec.series}: {', '.join(packages)} {version} (cached)")
        return have
    sizes = [int(apt.field(name, version, "Size")) for name in packages]
    check_space(cache, sum(sizes) * (1 + UNPACK_FACTOR) + SPACE_MARGIN, f"kernel {spec.series}")
    with Timer() as t:
        debs = [apt.download(name, version, cache / "debs") for name in packages]
    log(f"{spec.series}: downloaded {', '.join(packages)} {version} ({sum(sizes) / 2**20:.0f} MiB) in {t.seconds:.1f}s")
    with Timer() as t:
        tmp = root.with_name(root.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for deb in debs:
            run(["dpkg-deb", "-x", str(deb), str(tmp)])
        image, release = find_image(tmp, spec, packages)
        kernel = Kernel(spec.series, release, version, [f"{n}={version}" for n in packages], tmp, image)
        kernel.modules  # noqa: B018 - raises if the modules are missing
        (tmp / "kernel.json").write_text(json.dumps(kernel.to_json(), indent=2) + "\n")
        for old in (cache / "kernels" / spec.series).iterdir():
            if old != tmp:
                shutil.rmtree(old, ignore_errors=True)
        tmp.rename(root)
        for deb in debs:
            deb.unlink()
    log(f"{spec.series}: unpacked {release} in {t.seconds:.1f}s")
    return dataclasses.replace(kernel, root=root)


# ---------------------------------------------------------------------------------------------
# Initramfs


def module_name(path: str) -> str:
    name = Path(path).name
    return name.split(".ko")[0].replace("-", "_")


def module_depends(data: bytes) -> list[str]:
    """The ``depends=`` list of a module's .modinfo section (what modules.dep is built from)."""
    match = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    return [d.replace("-", "_") for d in match.group(1).decode().split(",") if d] if match else []


def root_modules(modules_dir: Path) -> tuple[list[tuple[str, bytes]], list[str], list[str]]:
    """(module (name, plain .ko bytes) in load order, built-in names, absent names) for ROOT_MODULES.

    Debian's packages ship no modules.dep (depmod writes it at install time), so the order comes
    from each module's own ``depends=`` field, as depmod reads it.
    """
    paths = {module_name(str(p)): p for p in (modules_dir / "kernel").rglob("*.ko*")}
    builtin_file = modules_dir / "modules.builtin"
    builtin = {module_name(p) for p in builtin_file.read_text().split()} if builtin_file.exists() else set()
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in paths:
            raise VmTestError(f"module {name} needed by the 9p root is missing from {modules_dir}")
        data = read_module(paths[name])
        for need in module_depends(data):
            visit(need)
        order.append((name, data))

    built, absent = [], []
    for name in ROOT_MODULES:
        if name in paths:
            visit(name)
        elif name in builtin:
            built.append(name)
        else:
            absent.append(name)
    return order, built, absent


def read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko"):
        return data
    if path.name.endswith(".ko.zst") and shutil.which("zstd"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    raise VmTestError(f"cannot decompress module {path} (xz, gz and plain .ko are supported)")


class Cpio:
    """A minimal writer of the "newc" cpio format the kernel unpacks as an initramfs."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ino = 1

    def _entry(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        fields = (self.ino, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        self.ino += 1
        self.data += b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        self.data += b"\0" * (-len(self.data) % 4) + body
        self.data += b"\0" * (-len(self.data) % 4)

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, body: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, body)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self.data) + b"\0" * (-len(self.data) % 512)


INIT_TEMPLATE = r"""#!/bin/sh
# /init of the vmtest initramfs (busybox): mount the host root over 9p and switch to it.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
say() { echo "vmtest: $*" > /dev/console; }
fail() { say "$*"; poweroff -f; }
for m in $(cat /vmtest/modules); do
  insmod "/vmtest/$m" || say "insmod $m failed"
done
ip link set lo up || say "cannot bring lo up"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=@MSIZE@@ROOTCACHE@ hostroot /mnt || fail "cannot mount the host root over 9p"
mount -t proc proc /mnt/proc
mount -t sysfs sysfs /mnt/sys
mount -t devtmpfs devtmpfs /mnt/dev
mkdir -p /mnt/dev/pts /mnt/dev/shm
mount -t devpts devpts /mnt/dev/pts
mount -t tmpfs tmpfs /mnt/dev/shm
mount -t tmpfs tmpfs /mnt/tmp
mount -t tmpfs tmpfs /mnt/run
mount -t tracefs tracefs /mnt/sys/kernel/tracing 2>/dev/null || say "no tracefs"
mount -t debugfs debugfs /mnt/sys/kernel/debug 2>/dev/null || say "no debugfs"
mount -t securityfs securityfs /mnt/sys/kernel/security 2>/dev/null || say "no securityfs"
mount -t bpf bpf /mnt/sys/fs/bpf || say "no bpffs"
mount -t cgroup2 cgroup2 /mnt/sys/fs/cgroup 2>/dev/null || say "no cgroup2"
mkdir -p /mnt@OUT@ /mnt/run/vmtest
mount -t 9p -o trans=virtio,version=9p2000.L,msize=@MSIZE@ vmout /mnt@OUT@ || fail "cannot mount the results share"
cp /bin/busybox /vmtest/cmd.sh /vmtest/stage2.sh /mnt/run/vmtest/
uname -r > /mnt@OUT@/uname-r
# switch_root (not chroot): a chrooted process may not create user namespaces (EPERM).
exec switch_root /mnt /run/vmtest/busybox sh /run/vmtest/stage2.sh
fail "switch_root failed"
"""

# Runs as pid 1 in the host's root (after switch_root), with busybox from /run/vmtest.
STAGE2_TEMPLATE = r"""BB=/run/vmtest/busybox
echo "vmtest: running the guest command" > /dev/console
(
  $BB env -i @ENV@ /bin/sh -c 'cd "$1" && exec /bin/sh /run/vmtest/cmd.sh' vmtest @ROOT@
  echo $? > @OUT@/exit-code
) 2>&1 | $BB tee @OUT@/output.log
echo "vmtest: guest command exited $($BB cat @OUT@/exit-code)" > /dev/console
$BB sync
$BB umount @OUT@
$BB poweroff -f
"""


def guest_env(series: str, extra: Mapping[str, str]) -> dict[str, str]:
    return {
        "PATH": GUEST_PATH,
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NSTRACK_VM_OUT": GUEST_OUT,
        "NSTRACK_VM_SERIES": series,
        "PYTHONDONTWRITEBYTECODE": "1",
        **extra,
    }


def build_initramfs(
    kernel: Kernel, command: str, env: Mapping[str, str], dest: Path, root_cache: str, msize: int
) -> list[str]:
    """Write the initramfs to dest; return the modules it loads, for the log."""
    modules_dir = kernel.modules
    order, built, absent = root_modules(modules_dir)
    if "9p" in absent or "9pnet_virtio" in absent:
        raise VmTestError(f"{kernel.series}: kernel {kernel.release} has no 9p/9pnet_virtio module")
    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "mnt", "vmtest"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3)
    cpio.file("bin/busybox", Path(HOST_DEPS["busybox-static"]).read_bytes(), 0o755)
    for applet in ("sh", "mount", "mkdir", "cat", "insmod", "echo"):
        cpio.symlink(f"bin/{applet}", "busybox")
    names = []
    for name, data in order:
        cpio.file(f"vmtest/{name}.ko", data)
        names.append(f"{name}.ko")
    cpio.file("vmtest/modules", ("\n".join(names) + "\n").encode())
    cpio.file("vmtest/cmd.sh", (command.rstrip("\n") + "\n").encode(), 0o755)
    env_words = " ".join(shlex.quote(f"{k}={v}") for k, v in guest_env(kernel.series, env).items())
    init = (
        INIT_TEMPLATE.replace("@OUT@", GUEST_OUT)
        .replace("@MSIZE@", str(msize))
        .replace("@ROOTCACHE@", f",cache={root_cache}" if root_cache != "none" else "")
    )
    stage2 = (
        STAGE2_TEMPLATE.replace("@ENV@", env_words)
        .replace("@ROOT@", shlex.quote(str(PROJECT_ROOT)))
        .replace("@OUT@", GUEST_OUT)
    )
    cpio.file("init", init.encode(), 0o755)
    cpio.file("vmtest/stage2.sh", stage2.encode(), 0o755)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(cpio.finish())
    # A module neither shipped nor listed in modules.builtin (7.x ships no such list) is either built
    # in or really missing; in the latter case the 9p mount fails and the console log says so.
    return (
        [n.removesuffix(".ko") for n in names]
        + [f"{n}(builtin)" for n in built]
        + [f"{n}(not shipped)" for n in absent]
    )


# ---------------------------------------------------------------------------------------------
# Boot and collect


@dataclasses.dataclass
class Result:
    series: str
    release: str
    status: str  # ok | failed | timeout | no-boot
    exit: int | None
    seconds: float
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0
    mode: str | None = None
    detail: str = ""
    failures: list[str] = dataclasses.field(default_factory=list)
    cpu_seconds: float | None = None  # QEMU's user and system time

    def summary(self) -> dict[str, object]:
        return {
            "series": self.series,
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "errors": self.errors,
            "mode": self.mode,
            "seconds": round(self.seconds, 1),
            "exit": self.exit,
            "status": self.status,
            "failures": self.failures,
            "cpu_seconds": None if self.cpu_seconds is None else round(self.cpu_seconds, 1),
        }


def junit_root(path: Path) -> ET.Element | None:
    """The root of a junit XML file, None if absent or unreadable (a guest cut short)."""
    try:
        return ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None


def junit_counts(path: Path) -> tuple[int, int, int, int]:
    """(passed, failed, skipped, errors) from a junit XML file, zeros if absent or unreadable."""
    root = junit_root(path)
    if root is None:
        return 0, 0, 0, 0
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = failed = skipped = errors = 0
    for suite in suites:
        total += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0))
        skipped += int(suite.get("skipped", 0))
        errors += int(suite.get("errors", 0))
    return total - failed - skipped - errors, failed, skipped, errors


def junit_failures(path: Path, limit: int = 20) -> list[str]:
    """The failed and erred tests of a junit XML file, a line each: its id and the first line of its
    message (CI prints only vmtest's own lines: a failure must be named there, not only in the console)."""
    root = junit_root(path)
    if root is None:
        return []
    lines = []
    for case in root.iter("testcase"):
        for child in case:
            if child.tag in ("failure", "error"):
                message = (child.get("message") or child.text or "").strip().splitlines()
                where = f"{case.get('classname', '')}::{case.get('name', '')}"
                lines.append(f"{child.tag} {where}: {message[0][:300] if message else '(no message)'}")
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def doctor_mode(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    mode = data.get("mode") if isinstance(data, dict) else None
    return mode if isinstance(mode, str) else None


def clear_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def boot(kernel: Kernel, initrd: Path, out: Path, args: argparse.Namespace) -> Result:
    console = out / "console.log"
    qemu = [
        QEMU, "-accel", "tcg", *(["-icount", f"shift={args.icount},sleep=off"] if args.icount is not None else []),
        "-cpu", "max", "-m", str(args.memory), "-smp", str(args.smp),
        "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
        "-serial", f"file:{console}", "-no-reboot",
        "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
        "-append", f"console=ttyS0 quiet panic=-1 random.trust_cpu=on {args.append}".strip(),
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={out},mount_tag=vmout,security_model=passthrough",
    ]  # fmt: skip
    (out / "qemu-cmdline.txt").write_text(shlex.join(qemu) + "\n")
    status = "ok"
    detail = ""
    with Timer() as t, (out / "qemu.log").open("w") as qlog:
        proc = subprocess.Popen(qemu, stdin=subprocess.DEVNULL, stdout=qlog, stderr=subprocess.STDOUT)
        qemu_rc, cpu_seconds = wait_with_usage(proc, args.timeout)
        if qemu_rc is None:
            status = "timeout"
            detail = f"killed after {args.timeout:.0f}s"
    release = (out / "uname-r").read_text().strip() if (out / "uname-r").is_file() else kernel.release
    exit_file = out / "exit-code"
    exit_code = int(exit_file.read_text().strip()) if exit_file.is_file() and exit_file.read_text().strip() else None
    console_text = console.read_text(errors="replace") if console.is_file() else ""
    if status != "timeout":
        if qemu_rc != 0:
            status, detail = "no-boot", f"qemu exited {qemu_rc}: see {out / 'qemu.log'}"
        elif not (out / "uname-r").is_file():
            status, detail = "no-boot", "the guest never reached its command"
        elif exit_code is None:
            status, detail = "failed", "the guest command did not finish"
        elif exit_code != 0:
            status, detail = "failed", f"guest command exited {exit_code}"
    if "Kernel panic" in console_text:
        panic = next(line for line in console_text.splitlines() if "Kernel panic" in line)
        detail = (detail + "; " if detail else "") + panic.strip()
    passed, failed, skipped, errors = junit_counts(out / "junit.xml")
    return Result(
        kernel.series, release, status, exit_code, t.seconds, passed, failed, skipped, errors,
        doctor_mode(out / "doctor.json"), detail, junit_failures(out / "junit.xml"), cpu_seconds,
    )  # fmt: skip


def wait_with_usage(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int | None, float | None]:
    """Wait for QEMU up to ``timeout`` seconds (then kill it): its exit code (None if killed) and the CPU
    seconds it used (user and system: how much of the host a guest took, to plan how many share it)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() >= deadline:
            proc.kill()
            _, _, usage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            return None, usage.ru_utime + usage.ru_stime
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# Main


def prepare(kernel: Kernel, args: argparse.Namespace) -> Path:
    """A kernel's results folder, emptied, and its initramfs (the run's own: it holds the guest command,
    and runs of one kernel may go on side by side)."""
    out: Path = args.out / kernel.series
    clear_dir(out)
    (out / "kernel.json").write_text(json.dumps(kernel.to_json(), indent=2) + "\n")
    initrd = out / "initramfs.cpio"
    with Timer() as t:
        env = {**known_specs()[kernel.series].env, **args.env}
        if args.icount is not None:  # the guest's benchmarks say which clock their ratios are on
            env["NSTRACK_VM_ICOUNT"] = str(args.icount)
        mods = build_initramfs(kernel, args.cmd, env, initrd, args.root_cache, args.msize)
    log(f"{kernel.series}: initramfs {initrd.stat().st_size / 2**20:.1f} MiB, modules {' '.join(mods) or '-'} ({t.seconds:.1f}s)")
    return initrd


def run_kernel(kernel: Kernel, initrd: Path, args: argparse.Namespace) -> Result:
    """Boot one kernel, wait for it and report its result (several run at once, each in a thread)."""
    out = args.out / kernel.series
    log(f"{kernel.series}: booting {kernel.release} (timeout {args.timeout:.0f}s, console {out / 'console.log'})")
    result = boot(kernel, initrd, out, args)
    counts = f"passed {result.passed} failed {result.failed} skipped {result.skipped} errors {result.errors}"
    cpu = f", QEMU CPU {result.cpu_seconds:.0f}s" if result.cpu_seconds is not None else ""
    lines = [(f"{kernel.series}: {result.status.upper()} {result.release} exit={result.exit} {counts} "
              f"({result.seconds:.1f}s{cpu}){' - ' + result.detail if result.detail else ''}")]
    lines += [f"{kernel.series}:   {line}" for line in result.failures]
    with _LOG_LOCK:  # a kernel's lines together
        for line in lines:
            log(line)
    return result


def known_specs() -> dict[str, KernelSpec]:
    return {k.series: k for k in KERNELS}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    series = [k.series for k in KERNELS]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kernels", default=",".join(series), help=f"comma-separated series (default: {','.join(series)})")
    p.add_argument("--cmd", default=DEFAULT_CMD, help="shell command run in the guest from the project root (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per kernel before the guest is killed (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=None,
                   help=f"kernels booted at once (default: {DEFAULT_JOBS}, with --icount 1: a benchmark's VMs "
                        "should not share the host's CPUs)")
    p.add_argument("--fetch-only", action="store_true", help="resolve, download and unpack the kernels, then stop")
    p.add_argument("--check-deps", action="store_true", help="report missing host packages and exit (1 if any)")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install missing host packages; fail instead")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="downloads and unpacked kernels (default: %(default)s)")
    p.add_argument("--archive", help="Debian archive URI (default: the one in the host's apt sources; URI-security for security suites)")
    p.add_argument("--offline", action="store_true", help="do not contact the archive; use cached kernels only")
    p.add_argument("--smp", type=int, default=None, help="guest CPUs (default: 2, with --icount 1)")
    p.add_argument("--icount", type=int, metavar="SHIFT", default=None,
                   help="count instructions instead of host time: the guest's clocks advance 2**SHIFT ns per "
                        "instruction executed (QEMU -icount, vCPUs in turn on one host thread), so timings "
                        "inside the guest do not depend on the host's load; for benchmarks (make bench-vm). One "
                        "vCPU unless --smp says otherwise: 5.10 and 6.1 hang bringing up a second under it")
    p.add_argument("--memory", type=int, default=2048, help="guest memory in MiB (default: %(default)s)")
    p.add_argument("--root-cache", default="loose", choices=("none", "loose", "fscache", "mmap"), help="9p cache mode of the read-only host root (default: %(default)s)")
    p.add_argument("--msize", type=int, default=262144, help="9p msize (default: %(default)s)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="add to the guest command's environment (repeatable)")
    p.add_argument("--append", default="", help="extra kernel command line")
    p.add_argument("--out", type=Path, default=BUILD_DIR, help="results folder, one subfolder per kernel (default: %(default)s)")
    args = p.parse_args(argv)
    known = known_specs()
    bad_env = [e for e in args.env if "=" not in e]
    if bad_env:
        p.error(f"--env wants KEY=VALUE, got {', '.join(bad_env)}")
    args.env = dict(e.split("=", 1) for e in args.env)
    if args.icount is not None and not 0 <= args.icount <= 10:
        p.error(f"--icount wants a shift from 0 to 10 (2**SHIFT ns per instruction), got {args.icount}")
    if args.smp is None:
        args.smp = 1 if args.icount is not None else 2
    if args.jobs is None:
        args.jobs = 1 if args.icount is not None else DEFAULT_JOBS
    elif args.jobs < 1:
        p.error(f"--jobs wants at least 1, got {args.jobs}")
    elif args.smp < 1:
        p.error(f"--smp wants at least 1 CPU, got {args.smp}")
    wanted = [s.strip() for s in args.kernels.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in known]
    if unknown:
        p.error(f"unknown kernel series {', '.join(unknown)} (known: {', '.join(known)})")
    args.specs = [known[s] for s in wanted]
    args.cache_dir = args.cache_dir.resolve()
    return args  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check_deps:
        missing = missing_deps()
        for pkg, path in HOST_DEPS.items():
            print(f"{pkg:20} {'ok' if pkg not in missing else 'MISSING'} ({path})")
        if missing:
            print("install with: apt-get install -y " + " ".join(missing))
        return 1 if missing else 0
    if os.geteuid() != 0:
        raise VmTestError("run as root: QEMU's 9p passthrough export and apt-get need it")
    if PROJECT_ROOT.parts[1:2] in (("tmp",), ("run",)) and not args.fetch_only:
        raise VmTestError(f"the project is under {PROJECT_ROOT.parts[1]}/ ({PROJECT_ROOT}), where each guest mounts a "
                          "fresh tmpfs over the host's files: check it out elsewhere")
    with Timer() as total:
        with Timer() as t:
            ensure_deps(install=not args.no_install)
        log(f"host dependencies ok ({t.seconds:.1f}s)")

        apt: PrivateApt | None = None
        names: list[str] | None = None
        if not args.offline:
            apt = PrivateApt(args.cache_dir / "apt")
            apt.write_sources(sorted({s for k in args.specs for s in k.suites}), args.archive)
            check_space(args.cache_dir, SPACE_MARGIN, "the package index")
            with Timer() as t:
                ok = apt.update()
            if ok:
                names = apt.package_names()
                log(f"package index updated ({t.seconds:.1f}s)")
        kernels: list[Kernel] = []
        for spec in args.specs:
            with Timer() as t:
                kernels.append(fetch(args.cache_dir, apt if names else None, spec, names))
            log(f"{spec.series}: kernel {kernels[-1].release} ready ({t.seconds:.1f}s)")
        if args.fetch_only:
            log(f"fetched {len(kernels)} kernels in {total.seconds:.0f}s")
            return 0

        if shutil.which(QEMU) is None:
            raise VmTestError(f"{QEMU} not found: apt-get install -y qemu-system-x86")
        args.out.mkdir(parents=True, exist_ok=True)
        initrds = [prepare(kernel, args) for kernel in kernels]
        if args.jobs > 1 and len(kernels) > 1:
            log(f"booting {len(kernels)} kernels, {min(args.jobs, len(kernels))} at a time")
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # a thread waits on each QEMU
            results = list(pool.map(lambda ki: run_kernel(ki[0], ki[1], args), zip(kernels, initrds)))
        summary = {r.release: r.summary() for r in results}
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    bad = [r for r in results if r.status != "ok"]
    log(f"summary: {args.out / 'summary.json'}; total {total.seconds:.0f}s")
    for r in bad:
        log(f"FAILED on kernel {r.release} ({r.series}): {r.status}: {r.detail}; console log {args.out / r.series / 'console.log'}")
        for line in r.failures:
            log(f"  {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VmTestError as err:
        print(f"vmtest: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
