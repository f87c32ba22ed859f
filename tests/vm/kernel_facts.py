#!/usr/bin/env python3
"""Record which namespace-related kernel functions a kernel has, for the BPF hook tables.

In a guest (or on the host) it writes one kernel's facts::

    python3 tests/vm/kernel_facts.py            # to $NSTRACK_VM_OUT/facts.json, else stdout

On the host it merges the guests' files into the table kept in the repository::

    python3 tests/vm/kernel_facts.py --merge build/vmtest/*/facts.json -o tests/vm/kernel-facts.json

A sample of one kernel's entry::

    "6.12.118+deb13-amd64": {
      "functions": {"copy_net_ns": {"kallsyms": true, "btf": true}, ...},
      "btf_vmlinux": true, "lockdown": "[none] integrity confidentiality",
      "listns_syscall_470": false, "listns_errno": "ENOSYS"
    }

Standard library only; uses bpftool (``/usr/sbin/bpftool``) to read BTF.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

FUNCTIONS: tuple[str, ...] = (
    "__ns_tree_add_raw", "__ns_tree_remove", "copy_net_ns", "__put_net", "cleanup_net", "net_free", "net_alloc",
    "setup_net", "create_user_ns", "free_user_ns", "__put_user_ns", "copy_mnt_ns", "alloc_mnt_ns",
    "free_mnt_ns", "mnt_ns_release", "put_mnt_ns", "copy_utsname", "clone_uts_ns", "free_uts_ns", "copy_ipcs",
    "free_ipc_ns", "free_ipc", "put_ipc_ns", "copy_pid_ns", "create_pid_namespace", "free_pid_ns",
    "delayed_free_pidns", "put_pid_ns", "copy_cgroup_ns", "alloc_cgroup_ns", "free_cgroup_ns", "copy_time_ns",
    "clone_time_ns", "free_time_ns", "proc_alloc_inum", "proc_free_inum", "ns_free_inum", "ns_alloc_inum",
    "__ns_common_init", "ns_common_init", "ns_common_free", "unshare_nsproxy_namespaces",
    "create_new_namespaces", "switch_task_namespaces", "free_nsproxy",
)
BTF = Path("/sys/kernel/btf/vmlinux")
SYS_LISTNS = 470


def kallsyms_text() -> tuple[set[str], dict[str, list[str]]]:
    """Text symbols (t/T) of /proc/kallsyms, and compiler-suffixed variants (.isra.0, .cold, ...)."""
    names: set[str] = set()
    variants: dict[str, list[str]] = {}
    wanted = set(FUNCTIONS)
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1] in ("t", "T"):
                names.add(parts[2])
                base = parts[2].split(".", 1)[0]
                if base != parts[2] and base in wanted:
                    variants.setdefault(base, []).append(parts[2])
    return names, variants


def btf_funcs() -> tuple[set[str], str | None]:
    """FUNC names of the kernel's BTF, and an error text when they cannot be read."""
    if not BTF.exists():
        return set(), f"{BTF} missing"
    bpftool = "/usr/sbin/bpftool"
    try:
        out = subprocess.run(
            [bpftool, "btf", "dump", "file", str(BTF)], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        return set(), f"bpftool failed: {err}"
    return set(re.findall(r"^\[\d+\] FUNC '([^']+)'", out, re.MULTILINE)), None


def listns() -> tuple[bool, str]:
    """Whether syscall 470 (listns) exists: call it with a valid request and look for ENOSYS."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    req = (ctypes.c_uint64 * 4)()  # struct ns_id_req, 32 bytes
    req[0] = 32  # size (u32) | spare (u32) << 32
    ids = (ctypes.c_uint64 * 64)()
    rc = libc.syscall(ctypes.c_long(SYS_LISTNS), ctypes.byref(req), ids, ctypes.c_size_t(64), ctypes.c_uint(0))
    if rc >= 0:
        return True, f"returned {rc} ids"
    err = ctypes.get_errno()
    return err != errno.ENOSYS, errno.errorcode.get(err, str(err))


def facts() -> dict[str, object]:
    kallsyms, variants = kallsyms_text()
    btf, btf_error = btf_funcs()
    lockdown_path = Path("/sys/kernel/security/lockdown")
    try:
        lockdown: str | None = lockdown_path.read_text().strip()
    except OSError as err:
        lockdown = f"unreadable: {err.strerror}"
    has_listns, listns_result = listns()
    entry: dict[str, object] = {
        "functions": {fn: {"kallsyms": fn in kallsyms, "btf": fn in btf} for fn in FUNCTIONS},
        "kallsyms_suffixed": {fn: sorted(v) for fn, v in sorted(variants.items())},
        "btf_vmlinux": BTF.exists(),
        "lockdown": lockdown,
        "listns_syscall_470": has_listns,
        "listns_result": listns_result,
    }
    if btf_error:
        entry["btf_error"] = btf_error
    return {os.uname().release: entry}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--merge", nargs="+", metavar="FACTS_JSON", help="merge these files instead of probing")
    p.add_argument("-o", "--output", help="output file (default: $NSTRACK_VM_OUT/facts.json, else stdout)")
    args = p.parse_args()
    if args.merge:
        data: dict[str, object] = {}
        if args.output and Path(args.output).is_file():
            data.update(json.loads(Path(args.output).read_text()))
        for name in args.merge:
            data.update(json.loads(Path(name).read_text()))
    else:
        data = facts()
    text = json.dumps(dict(sorted(data.items())), indent=1) + "\n"
    output = args.output or (
        os.path.join(os.environ["NSTRACK_VM_OUT"], "facts.json") if os.environ.get("NSTRACK_VM_OUT") else None
    )
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
