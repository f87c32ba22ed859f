"""nsfs bind mounts (what keeps `ip netns add` namespaces alive), from /proc/PID/mountinfo.

One reader per mount namespace: the mountinfo of any one member task of it.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model.nstypes import NS_TYPES, parse_name
from ..model.records import MountRecord


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \\ooo
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and i + 3 < len(path) + 1 and path[i + 1 : i + 4].isdigit():
            out.append(chr(int(path[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str, mnt_ns: int) -> list[MountRecord]:
    """nsfs mounts in one mountinfo text; the root field names the namespace (``net:[4026532286]``)."""
    out: list[MountRecord] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep or not right.startswith("nsfs "):
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        try:
            type_, inum = parse_name(fields[3])
        except ValueError:
            continue
        if type_ in NS_TYPES:
            out.append(MountRecord(mnt_ns, _unescape(fields[4]), type_, inum))
    return out


def nsfs_mounts(readers: Iterable[tuple[int, int]], proc: str = "/proc") -> tuple[list[MountRecord], set[int]]:
    """Bind mounts in every mount namespace; ``readers`` gives (mnt_ns inum, pid of a member).

    Returns the mounts and the mount namespaces that could not be read (no member left, or gone).
    """
    mounts: list[MountRecord] = []
    unread: set[int] = set()
    done: set[int] = set()
    for mnt_ns, pid in readers:
        if mnt_ns in done:
            continue
        try:
            with open(f"{proc}/{pid}/mountinfo") as f:
                mounts.extend(parse_mountinfo(f.read(), mnt_ns))
            done.add(mnt_ns)
            unread.discard(mnt_ns)
        except OSError:
            unread.add(mnt_ns)
    return mounts, unread - done
