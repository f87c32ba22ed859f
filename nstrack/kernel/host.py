"""Facts about the running host: capabilities, mounts nstrack needs, lockdown, kallsyms, listns."""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass, field

from .arch import SYS_LISTNS

CAPS = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_SETPCAP": 8,
    "CAP_NET_ADMIN": 12,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_RESOURCE": 24,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


def effective_caps(pid: int | str = "self") -> set[str]:
    """Names of the effective capabilities of a process, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                mask = int(line.split()[1], 16)
                return {name for name, bit in CAPS.items() if mask >> bit & 1}
    return set()


def missing_bpf_caps(caps: set[str]) -> list[str]:
    """Capabilities nstrack's BPF modes lack; CAP_SYS_ADMIN stands in for both on any kernel."""
    if "CAP_SYS_ADMIN" in caps:
        return []
    return [c for c in ("CAP_BPF", "CAP_PERFMON") if c not in caps]


def kernel_release() -> str:
    return os.uname().release


def _mounted(path: str, fstype: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path and line.split()[2] == fstype for line in f)


@dataclass
class MountResult:
    path: str
    fstype: str
    action: str  # "present", "mounted", "failed: ..."


def ensure_mount(path: str, fstype: str) -> MountResult:
    """Mount ``fstype`` at ``path`` when it is missing (tracefs, bpffs, securityfs); say what was done."""
    if _mounted(path, fstype):
        return MountResult(path, fstype, "present")
    if not os.path.isdir(path):
        return MountResult(path, fstype, f"failed: {path} does not exist")
    if _libc.mount(fstype.encode(), path.encode(), fstype.encode(), 0, None) != 0:
        err = ctypes.get_errno()
        return MountResult(path, fstype, f"failed: {errno.errorcode.get(err, err)} ({os.strerror(err)})")
    return MountResult(path, fstype, "mounted")


def ensure_mounts() -> list[MountResult]:
    return [
        ensure_mount("/sys/kernel/tracing", "tracefs"),
        ensure_mount("/sys/fs/bpf", "bpf"),
        ensure_mount("/sys/kernel/security", "securityfs"),
    ]


def lockdown() -> str:
    """The active lockdown level (``none``, ``integrity``, ``confidentiality``) or why unknown."""
    try:
        with open("/sys/kernel/security/lockdown") as f:
            text = f.read()
    except OSError:
        return "unknown (no /sys/kernel/security/lockdown: lockdown LSM not built in)"
    for word in text.split():
        if word.startswith("["):
            return word.strip("[]")
    return text.strip()


def active_lsms() -> str:
    try:
        with open("/sys/kernel/security/lsm") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def has_listns() -> bool:
    """Whether listns(2) exists: probed with an invalid request (ENOSYS means absent)."""
    ret = _libc.syscall(SYS_LISTNS, None, None, 0, 0)
    return not (ret == -1 and ctypes.get_errno() == errno.ENOSYS)


def kallsyms_functions(names: set[str] | frozenset[str] | tuple[str, ...]) -> set[str]:
    """Which of ``names`` are text symbols in /proc/kallsyms (kprobes can only hit those)."""
    wanted = set(names)
    found: set[str] = set()
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] in ("t", "T") and parts[2] in wanted:
                    found.add(parts[2])
    except OSError:
        pass
    return found


@dataclass
class HostFacts:
    kernel: str
    caps: set[str]
    lockdown: str
    lsms: str
    listns: bool
    btf_file: bool
    mounts: list[MountResult] = field(default_factory=list)


def host_facts(mount: bool = True) -> HostFacts:
    mounts = ensure_mounts() if mount else []
    return HostFacts(
        kernel=kernel_release(),
        caps=effective_caps(),
        lockdown=lockdown(),
        lsms=active_lsms(),
        listns=has_listns(),
        btf_file=os.path.exists("/sys/kernel/btf/vmlinux"),
        mounts=mounts,
    )
