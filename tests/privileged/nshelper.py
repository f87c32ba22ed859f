"""A process that makes one namespace for a test, by unshare(2) or clone3(2), and holds it.

    python nshelper.py unshare net     # unshare(CLONE_NEWNET), print "<pid> <inum>", wait for stdin EOF
    python nshelper.py clone pid       # clone3(CLONE_NEWPID); the child prints "child <inum>" and
                                       # waits, the parent prints "parent <its pid> <child's pid>"

The waiting process is the namespace's member; the test may open /proc/<pid>/ns/<file> (an nsfs fd)
or bind-mount it before closing stdin, so that the namespace outlives the process.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

FLAGS = {
    "net": 0x40000000, "mnt": 0x00020000, "uts": 0x04000000, "ipc": 0x08000000,
    "pid": 0x20000000, "user": 0x10000000, "cgroup": 0x02000000, "time": 0x00000080,
}
# The /proc/PID/ns file that shows the namespace the call made.
NS_FILE = {"pid": "pid_for_children", "time": "time_for_children"}
SYS_CLONE3 = 435

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class CloneArgs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
        "set_tid", "set_tid_size", "cgroup")]


def inum(pid: int | str, fname: str) -> int:
    link = os.readlink(f"/proc/{pid}/ns/{fname}")
    return int(link[link.index("[") + 1 : -1])


def hold(fname: str, me: str | int | None = None) -> None:
    # A cloned child in a new pid namespace sees itself as pid 1: the parent reports its real pid.
    sys.stdout.write(f"{os.getpid() if me is None else me} {inum('self', fname)}\n")
    sys.stdout.flush()
    sys.stdin.read()  # until the test closes our stdin


def main() -> None:
    how, types = sys.argv[1], sys.argv[2].split("+")  # e.g. "user+net": one call, several types
    type_ = types[0]
    flag = 0
    for t in types:
        flag |= FLAGS[t]
    if how == "unshare":
        if libc.unshare(flag) != 0:
            raise OSError(ctypes.get_errno(), f"unshare({type_})")
        if type_ == "pid":
            # pid_for_children can only be opened once the namespace has its init: fork one that
            # lives exactly as long as we do (it reads a pipe whose writer is only us).
            r, w = os.pipe()
            init = os.fork()
            if init == 0:
                os.close(w)
                os.read(r, 1)
                os._exit(0)
            os.close(r)
            hold(NS_FILE.get(type_, type_))
            os.close(w)
            os.waitpid(init, 0)  # reap it: a zombie would keep the pid namespace alive
            return
        hold(NS_FILE.get(type_, type_))
        return
    args = CloneArgs(flags=flag, exit_signal=signal.SIGCHLD)
    pid = libc.syscall(SYS_CLONE3, ctypes.byref(args), ctypes.sizeof(args))
    if pid < 0:
        raise OSError(ctypes.get_errno(), f"clone3({type_})")
    if pid == 0:
        try:
            hold(type_, me="child")
        finally:
            os._exit(0)
    sys.stdout.write(f"parent {os.getpid()} {pid}\n")
    sys.stdout.flush()
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
