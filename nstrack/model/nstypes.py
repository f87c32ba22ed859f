"""The eight Linux namespace types and their names.

>>> NS_TYPES["net"].flag == 0x40000000
True
>>> format_name("net", 4026531840)
'net:[4026531840]'
>>> parse_name("net:[4026531840]")
('net', 4026531840)
"""

from __future__ import annotations

import re
from typing import NamedTuple


class NSType(NamedTuple):
    name: str  # as in /proc/PID/ns/NAME and the patchset's /proc/namespaces
    flag: int  # CLONE_NEW* (the kernel's ns_common.ns_type on 6.18+)


NS_TYPES: dict[str, NSType] = {
    t.name: t
    for t in (
        NSType("net", 0x40000000),
        NSType("mnt", 0x00020000),
        NSType("uts", 0x04000000),
        NSType("ipc", 0x08000000),
        NSType("pid", 0x20000000),
        NSType("user", 0x10000000),
        NSType("cgroup", 0x02000000),
        NSType("time", 0x00000080),
    )
}
TYPE_NAMES: tuple[str, ...] = tuple(NS_TYPES)
MODES: tuple[str, ...] = ("fentry", "kprobe", "tracepoint", "procfs")  # tracking modes, best first
BY_FLAG: dict[int, NSType] = {t.flag: t for t in NS_TYPES.values()}

_NAME_RE = re.compile(r"^([a-z]+):\[(\d+)\]$")


class UnknownNamespaceType(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown namespace type {name!r}; valid types: {', '.join(TYPE_NAMES)}")
        self.name = name


def ns_type(name: str) -> NSType:
    """Look a type up by name (``mnt`` also answers to ``ns``, the kernel's historical name)."""
    key = "mnt" if name == "ns" else name
    try:
        return NS_TYPES[key]
    except KeyError:
        raise UnknownNamespaceType(name) from None


def format_name(type_name: str, inum: int) -> str:
    return f"{type_name}:[{inum}]"


def parse_name(text: str) -> tuple[str, int]:
    """Parse ``type:[inum]`` exactly as the kernel's nsfs names namespaces."""
    m = _NAME_RE.match(text.strip())
    if not m:
        raise ValueError(f"malformed namespace name {text!r}; expected TYPE:[INUM], e.g. net:[4026531840]")
    return ns_type(m.group(1)).name, int(m.group(2))
