"""A small typed binding of libbpf (``libbpf.so.1``, 1.1 or newer) through ctypes.

Only what nstrack needs: open an object, set read-only globals, choose which programs load, load,
attach (fentry/fexit, kprobe, tracepoint, tp_btf, iterators), consume ring buffers, use maps, read
iterators, and tear everything down. No C extension is compiled; the host needs only ``libbpf1``.

Every failure raises :class:`BPFError` carrying the errno, libbpf's own messages for the failing
call and, for a program that failed verification, the tail of the verifier log::

    >>> with BPFObject.open(path) as obj:           # doctest: +SKIP
    ...     obj.set_globals(target_tgid=os.getpid())
    ...     obj.load()
    ...     link = obj.program("probe_tp_btf").attach()
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .bpfsys import (  # noqa: F401  (re-exported: this module is the binding's front)
    ERRNO_HINTS,
    RINGBUF_BUSY,
    RINGBUF_DISCARD,
    BPFError,
    RingBuffer,
    _libc,
    errno_name,
    parse_ring_span,
    read_iter,
)

__all__ = [
    "BPFError",
    "BPFLink",
    "BPFMap",
    "BPFObject",
    "BPFProgram",
    "RingBuffer",
    "libbpf_version",
]


# --------------------------------------------------------------------------------------------
# Loading the library and capturing its messages


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

_lib: ctypes.CDLL | None = None
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
_libc.vsnprintf.restype = ctypes.c_int

_capture = threading.local()
_print_cb: Any = None


# libbpf prints a whole verifier log as one message, and a va_list can be formatted only once from
# ctypes (no va_copy), so one large buffer serves every message; made on the first message that is
# kept (debug-level chatter is dropped unformatted unless NSTRACK_LIBBPF_DEBUG is set).
_PRINT_BUF: Any = None
_print_lock = threading.Lock()
_LIBBPF_DEBUG = 2  # enum libbpf_print_level: WARN 0, INFO 1, DEBUG 2


def _on_print(level: int, fmt: bytes, args: int) -> int:
    global _PRINT_BUF
    if level >= _LIBBPF_DEBUG and not os.environ.get("NSTRACK_LIBBPF_DEBUG"):
        return 0
    with _print_lock:
        if _PRINT_BUF is None:
            _PRINT_BUF = ctypes.create_string_buffer(8 << 20)
        _libc.vsnprintf(_PRINT_BUF, len(_PRINT_BUF), fmt, args)
        return _deliver(_PRINT_BUF.value)


def _deliver(raw: bytes) -> int:
    msgs: list[str] | None = getattr(_capture, "messages", None)
    if msgs is not None:
        msgs.append(raw.decode(errors="replace").rstrip("\n"))
    elif os.environ.get("NSTRACK_LIBBPF_DEBUG"):
        os.write(2, raw)
    return 0


class _Capture:
    """Collects libbpf's printed messages during one call so that errors can carry them."""

    def __enter__(self) -> list[str]:
        self.prev = getattr(_capture, "messages", None)
        _capture.messages = []
        return _capture.messages  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        _capture.messages = self.prev


def lib() -> ctypes.CDLL:
    """The loaded ``libbpf.so.1`` with argument types declared (loaded once)."""
    global _lib, _print_cb
    if _lib is not None:
        return _lib
    name = os.environ.get("NSTRACK_LIBBPF") or "libbpf.so.1"
    try:
        so = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise BPFError(
            errno_mod.ENOENT,
            f"loading {name} (install Debian's libbpf1, version 1.1 or newer): {exc}",
        ) from None
    vp, cp, i, u32, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_size_t
    sigs: dict[str, tuple[list[Any], Any]] = {
        "libbpf_major_version": ([], u32),
        "libbpf_minor_version": ([], u32),
        "libbpf_set_print": ([_PRINT_FN], vp),
        "libbpf_strerror": ([i, cp, sz], i),
        "bpf_object__open_file": ([cp, vp], vp),
        "bpf_object__load": ([vp], i),
        "bpf_object__close": ([vp], None),
        "bpf_object__name": ([vp], cp),
        "bpf_object__next_program": ([vp, vp], vp),
        "bpf_object__find_program_by_name": ([vp, cp], vp),
        "bpf_object__find_map_by_name": ([vp, cp], vp),
        "bpf_object__next_map": ([vp, vp], vp),
        "bpf_program__name": ([vp], cp),
        "bpf_program__section_name": ([vp], cp),
        "bpf_program__set_autoload": ([vp, ctypes.c_bool], i),
        "bpf_program__autoload": ([vp], ctypes.c_bool),
        "bpf_program__set_attach_target": ([vp, i, cp], i),
        "bpf_program__fd": ([vp], i),
        "bpf_program__attach": ([vp], vp),
        "bpf_program__attach_kprobe": ([vp, ctypes.c_bool, cp], vp),
        "bpf_program__attach_iter": ([vp, vp], vp),
        "bpf_program__set_log_level": ([vp, u32], i),
        "bpf_link__fd": ([vp], i),
        "bpf_link__destroy": ([vp], i),
        "bpf_map__name": ([vp], cp),
        "bpf_map__fd": ([vp], i),
        "bpf_map__set_max_entries": ([vp, u32], i),
        "bpf_map__max_entries": ([vp], u32),
        "bpf_map__key_size": ([vp], u32),
        "bpf_map__value_size": ([vp], u32),
        "bpf_map__map_flags": ([vp], u32),
        "bpf_map__initial_value": ([vp, ctypes.POINTER(sz)], vp),
        "bpf_map_lookup_elem": ([i, vp, vp], i),
        "bpf_map_update_elem": ([i, vp, vp, ctypes.c_uint64], i),
        "bpf_map_delete_elem": ([i, vp], i),
        "bpf_map_get_next_key": ([i, vp, vp], i),
        "bpf_map_lookup_batch": ([i, vp, vp, vp, vp, ctypes.POINTER(u32), vp], i),
        "bpf_iter_create": ([i], i),
        "bpf_prog_test_run_opts": ([i, vp], i),
        "bpf_obj_get_info_by_fd": ([i, vp, ctypes.POINTER(u32)], i),
        "bpf_link_get_fd_by_id": ([u32], i),
        "btf__load_vmlinux_btf": ([], vp),
        "btf__free": ([vp], None),
        "btf__find_by_name_kind": ([vp, cp, u32], ctypes.c_int32),
        "btf__type_cnt": ([vp], u32),
        "btf__type_by_id": ([vp, u32], vp),
        "btf__parse": ([cp, vp], vp),
        "btf__name_by_offset": ([vp, u32], cp),
        "btf__resolve_size": ([vp, u32], ctypes.c_int64),
        "bpf_object__btf": ([vp], vp),
    }
    for fname, (argtypes, restype) in sigs.items():
        fn = getattr(so, fname)
        fn.argtypes = argtypes
        fn.restype = restype
    _print_cb = _PRINT_FN(_on_print)
    so.libbpf_set_print(_print_cb)
    _lib = so
    major, minor = so.libbpf_major_version(), so.libbpf_minor_version()
    if (major, minor) < (1, 1):
        raise BPFError(errno_mod.ENOTSUP, f"libbpf {major}.{minor} is too old: nstrack needs 1.1 or newer")
    return so


def libbpf_version() -> str:
    so = lib()
    return f"{so.libbpf_major_version()}.{so.libbpf_minor_version()}"


def _err_from_ret(ret: int) -> int:
    """libbpf 1.x returns -errno from int functions; fall back to errno when it returns -1."""
    if ret < -1:
        return -ret
    return ctypes.get_errno() or errno_mod.EINVAL


def _fail(op: str, err: int, messages: list[str]) -> BPFError:
    return BPFError(err or errno_mod.EINVAL, op, messages, _verifier_log(messages))


def _verifier_log(messages: list[str]) -> str:
    """Extract the text between libbpf's ``-- BEGIN PROG LOAD LOG --`` and ``-- END ... --``."""
    text = "\n".join(messages)
    start = text.find("-- BEGIN PROG LOAD LOG --")
    if start < 0:
        return ""
    end = text.find("-- END PROG LOAD LOG --", start)
    body = text[start + len("-- BEGIN PROG LOAD LOG --") : end if end > 0 else None]
    return body.strip("\n")


# --------------------------------------------------------------------------------------------
# BTF


BTF_KIND_FUNC = 12
BTF_KIND_STRUCT = 4
BTF_KIND_DATASEC = 15
BPF_F_MMAPABLE = 1 << 10  # map flag: user space may mmap the map (global data on 5.5+)


class VmlinuxBTF:
    """The running kernel's BTF (``/sys/kernel/btf/vmlinux``), for feature and function look-ups."""

    def __init__(self) -> None:
        so = lib()
        with _Capture() as msgs:
            ctypes.set_errno(0)
            ptr = so.btf__load_vmlinux_btf()
            if not ptr:
                raise _fail("loading the kernel's BTF", ctypes.get_errno(), msgs)
        self._ptr: int | None = ptr

    def has(self, name: str, kind: int = BTF_KIND_FUNC) -> bool:
        assert self._ptr is not None
        return bool(lib().btf__find_by_name_kind(self._ptr, name.encode(), kind) > 0)

    def close(self) -> None:
        if self._ptr:
            lib().btf__free(self._ptr)
            self._ptr = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def struct_layout(object_path: str | os.PathLike[str], name: str) -> tuple[int, dict[str, int]]:
    """Size and member byte offsets of ``struct name`` in a compiled object's BTF (no kernel needed)."""
    size, members = struct_members(object_path, name)
    return size, {m: off for m, (off, _) in members.items()}


def struct_members(object_path: str | os.PathLike[str], name: str) -> tuple[int, dict[str, tuple[int, int]]]:
    """Size of ``struct name`` in a compiled object's BTF and (byte offset, byte size) of each member, in
    declaration order (no kernel needed)."""
    so = lib()
    ptr = so.btf__parse(str(object_path).encode(), None)
    if not ptr:
        raise BPFError(ctypes.get_errno() or errno_mod.ENOENT, f"parsing BTF of {object_path}")
    try:
        tid = so.btf__find_by_name_kind(ptr, name.encode(), BTF_KIND_STRUCT)
        if tid <= 0:
            raise BPFError(errno_mod.ENOENT, f"{object_path}: no struct {name} in BTF")
        t = so.btf__type_by_id(ptr, tid)
        info = ctypes.c_uint32.from_address(t + 4).value
        size = ctypes.c_uint32.from_address(t + 8).value
        members: dict[str, tuple[int, int]] = {}
        for k in range(info & 0xFFFF):  # struct btf_member { u32 name_off; u32 type; u32 offset; }
            base = t + 12 + 12 * k
            mname = so.btf__name_by_offset(ptr, ctypes.c_uint32.from_address(base).value).decode()
            width = so.btf__resolve_size(ptr, ctypes.c_uint32.from_address(base + 4).value)
            bits = ctypes.c_uint32.from_address(base + 8).value
            members[mname] = ((bits & 0xFFFFFF if info >> 31 else bits) // 8, int(width))
        return size, members
    finally:
        so.btf__free(ptr)


# --------------------------------------------------------------------------------------------
# Objects, programs, maps, links


class BPFLink:
    """An attached program. ``destroy()`` (or closing the object) detaches it."""

    def __init__(self, ptr: int, description: str) -> None:
        self._ptr: int | None = ptr
        self.description = description

    @property
    def fd(self) -> int:
        if not self._ptr:
            raise BPFError(errno_mod.EBADF, f"{self.description}: link already destroyed")
        return int(lib().bpf_link__fd(self._ptr))

    @property
    def id(self) -> int:
        """The kernel's id for this link (as ``bpftool link`` shows it)."""
        info = (ctypes.c_uint32 * 16)()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        ret = lib().bpf_obj_get_info_by_fd(self.fd, ctypes.byref(info), ctypes.byref(size))
        if ret:
            raise BPFError(_err_from_ret(ret), f"{self.description}: reading link info")
        return int(info[1])  # struct bpf_link_info { __u32 type; __u32 id; ... }

    @property
    def alive(self) -> bool:
        return self._ptr is not None

    def read_iter(self, chunk: int = 1 << 16) -> bytes:
        """Create an iterator instance from this (iterator) link and read it to the end."""
        return read_iter(self.fd, self.description, chunk)

    def destroy(self) -> None:
        if self._ptr:
            lib().bpf_link__destroy(self._ptr)
            self._ptr = None


class BPFProgram:
    def __init__(self, obj: BPFObject, ptr: int) -> None:
        self._obj = obj
        self._ptr = ptr
        self.name: str = lib().bpf_program__name(ptr).decode()
        self.section: str = lib().bpf_program__section_name(ptr).decode()

    def __repr__(self) -> str:
        return f"BPFProgram({self.name!r}, section={self.section!r})"

    @property
    def autoload(self) -> bool:
        return bool(lib().bpf_program__autoload(self._ptr))

    @autoload.setter
    def autoload(self, value: bool) -> None:
        ret = lib().bpf_program__set_autoload(self._ptr, value)
        if ret:
            raise BPFError(_err_from_ret(ret), f"{self.name}: set_autoload (object already loaded?)")

    def set_attach_target(self, function: str) -> None:
        """Set the kernel function an fentry/fexit program attaches to (before load)."""
        ret = lib().bpf_program__set_attach_target(self._ptr, 0, function.encode())
        if ret:
            raise BPFError(_err_from_ret(ret), f"{self.name}: set_attach_target({function})")

    @property
    def fd(self) -> int:
        return int(lib().bpf_program__fd(self._ptr))

    def run_stats(self) -> tuple[int, int] | None:
        """(runs, nanoseconds in the program) so far, from the kernel's fdinfo; counted only while
        kernel.bpf_stats_enabled is 1. None when the program is not loaded."""
        fd = self.fd
        if fd < 0:
            return None
        fields = {}
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "run_cnt" not in fields:
            return None
        return int(fields["run_cnt"]), int(fields["run_time_ns"])

    def _attach(self, op: str, call: Callable[[], int | None]) -> BPFLink:
        with _Capture() as msgs:
            ctypes.set_errno(0)
            ptr = call()
            if not ptr:
                raise _fail(op, ctypes.get_errno(), msgs)
        link = BPFLink(ptr, op)
        self._obj._links.append(link)
        return link

    def attach(self) -> BPFLink:
        """Attach as the section name says (fentry/..., tp_btf/..., tracepoint/..., iter/...)."""
        return self._attach(f"attaching {self.name} ({self.section})", lambda: lib().bpf_program__attach(self._ptr))

    def attach_kprobe(self, function: str, retprobe: bool = False) -> BPFLink:
        kind = "kretprobe" if retprobe else "kprobe"
        return self._attach(
            f"attaching {self.name} as {kind} on {function}",
            lambda: lib().bpf_program__attach_kprobe(self._ptr, retprobe, function.encode()),
        )

    def attach_iter(self, tid: int | None = None) -> BPFLink:
        """An iterator link; ``tid`` limits a task iterator to that one task (Linux 6.1+)."""
        if tid is None:
            return self._attach(f"attaching iterator {self.name} ({self.section})",
                                lambda: lib().bpf_program__attach_iter(self._ptr, None))

        class TaskLinkInfo(ctypes.Structure):  # union bpf_iter_link_info, its .task member (24 bytes)
            _fields_ = [("tid", ctypes.c_uint32), ("pid", ctypes.c_uint32), ("pid_fd", ctypes.c_uint32),
                        ("_pad", ctypes.c_uint8 * 12)]

        class IterAttachOpts(ctypes.Structure):  # struct bpf_iter_attach_opts
            _fields_ = [("sz", ctypes.c_size_t), ("link_info", ctypes.c_void_p), ("link_info_len", ctypes.c_uint32)]

        info = TaskLinkInfo(tid=tid)
        opts = IterAttachOpts(ctypes.sizeof(IterAttachOpts), ctypes.addressof(info), ctypes.sizeof(info))
        return self._attach(f"attaching iterator {self.name} ({self.section}) to task {tid}",
                            lambda: lib().bpf_program__attach_iter(self._ptr, ctypes.byref(opts)))

    def test_run(self, data: bytes = b"\0" * 64) -> int:
        """Run the program once with BPF_PROG_TEST_RUN on ``data``; returns its return value."""

        class TestRunOpts(ctypes.Structure):
            _fields_ = [
                ("sz", ctypes.c_size_t),
                ("data_in", ctypes.c_void_p),
                ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32),
                ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p),
                ("ctx_out", ctypes.c_void_p),
                ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32),
                ("retval", ctypes.c_uint32),
                ("repeat", ctypes.c_int),
                ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32),
                ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32),
            ]

        buf = ctypes.create_string_buffer(data, len(data))
        opts = TestRunOpts(sz=ctypes.sizeof(TestRunOpts), data_in=ctypes.addressof(buf), data_size_in=len(data))
        ret = lib().bpf_prog_test_run_opts(self.fd, ctypes.byref(opts))
        if ret:
            raise BPFError(_err_from_ret(ret), f"{self.name}: BPF_PROG_TEST_RUN")
        return int(opts.retval)


class BPFMap:
    def __init__(self, ptr: int) -> None:
        self._ptr = ptr
        self.name: str = lib().bpf_map__name(ptr).decode()
        self._batch_bufs: tuple[ctypes.Array[ctypes.c_char], ...] | None = None

    @property
    def fd(self) -> int:
        return int(lib().bpf_map__fd(self._ptr))

    @property
    def key_size(self) -> int:
        return int(lib().bpf_map__key_size(self._ptr))

    @property
    def map_flags(self) -> int:
        return int(lib().bpf_map__map_flags(self._ptr))

    @property
    def value_size(self) -> int:
        return int(lib().bpf_map__value_size(self._ptr))

    @property
    def max_entries(self) -> int:
        return int(lib().bpf_map__max_entries(self._ptr))

    @max_entries.setter
    def max_entries(self, n: int) -> None:
        ret = lib().bpf_map__set_max_entries(self._ptr, n)
        if ret:
            raise BPFError(_err_from_ret(ret), f"map {self.name}: set_max_entries({n}) (after load?)")

    def lookup(self, key: bytes) -> bytes | None:
        val = ctypes.create_string_buffer(self.value_size)
        ret = lib().bpf_map_lookup_elem(self.fd, key, val)
        if ret:
            err = _err_from_ret(ret)
            if err == errno_mod.ENOENT:
                return None
            raise BPFError(err, f"map {self.name}: lookup")
        return val.raw

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        ret = lib().bpf_map_update_elem(self.fd, key, value, flags)
        if ret:
            raise BPFError(_err_from_ret(ret), f"map {self.name}: update")

    def delete(self, key: bytes) -> bool:
        ret = lib().bpf_map_delete_elem(self.fd, key)
        if ret:
            err = _err_from_ret(ret)
            if err == errno_mod.ENOENT:
                return False
            raise BPFError(err, f"map {self.name}: delete")
        return True

    def keys(self) -> Iterator[bytes]:
        prev: bytes | None = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while True:
            ret = lib().bpf_map_get_next_key(self.fd, prev, nxt)
            if ret:
                err = _err_from_ret(ret)
                if err == errno_mod.ENOENT:
                    return
                raise BPFError(err, f"map {self.name}: get_next_key")
            prev = nxt.raw
            yield prev

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for k in list(self.keys()):
            v = self.lookup(k)
            if v is not None:
                yield k, v

    def lookup_all(self) -> tuple[bytes, bytes]:
        """Every entry of a hash map (keys, values: each concatenated, in the same order) with one
        BPF_MAP_LOOKUP_BATCH call (kernel 5.6+; nstrack's ring buffers need 5.8 anyway)."""
        n, ks, vs = self.max_entries, self.key_size, self.value_size
        if self._batch_bufs is None:
            self._batch_bufs = (ctypes.create_string_buffer(n * ks), ctypes.create_string_buffer(n * vs),
                                ctypes.create_string_buffer(8), ctypes.create_string_buffer(8))
        keys, values, token_in, token_out = self._batch_bufs
        out_k: list[bytes] = []
        out_v: list[bytes] = []
        first = True
        while True:
            count = ctypes.c_uint32(n)
            ret = lib().bpf_map_lookup_batch(self.fd, None if first else token_in, token_out, keys, values,
                                             ctypes.byref(count), None)
            err = _err_from_ret(ret) if ret else 0
            if err and err != errno_mod.ENOENT:
                raise BPFError(err, f"map {self.name}: lookup_batch")
            got = count.value
            out_k.append(ctypes.string_at(keys, got * ks))
            out_v.append(ctypes.string_at(values, got * vs))
            if err:  # ENOENT: the end of the map
                return b"".join(out_k), b"".join(out_v)
            ctypes.memmove(token_in, token_out, 8)
            first = False


class BPFObject:
    """One ``.bpf.o``: open, adjust, load, attach, and close (which destroys links and fds)."""

    def __init__(self, ptr: int, path: Path) -> None:
        self._ptr: int | None = ptr
        self.path = path
        self._links: list[BPFLink] = []
        self._ringbufs: list[RingBuffer] = []
        self.loaded = False
        self._layouts: dict[str, dict[str, tuple[int, int]]] = {}
        self._mmaped: dict[str, mmap.mmap | None] = {}  # section -> read-only mapping of the kernel's map

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> BPFObject:
        p = Path(path)
        if not p.is_file():
            raise BPFError(errno_mod.ENOENT, f"opening BPF object {p}: file missing (run `make bpf`)")
        so = lib()
        with _Capture() as msgs:
            ctypes.set_errno(0)
            ptr = so.bpf_object__open_file(str(p).encode(), None)
            if not ptr:
                raise _fail(f"opening BPF object {p.name}", ctypes.get_errno(), msgs)
        return cls(ptr, p)

    @property
    def ptr(self) -> int:
        if not self._ptr:
            raise BPFError(errno_mod.EBADF, f"{self.path.name}: object already closed")
        return self._ptr

    def programs(self) -> list[BPFProgram]:
        out: list[BPFProgram] = []
        prog = lib().bpf_object__next_program(self.ptr, None)
        while prog:
            out.append(BPFProgram(self, prog))
            prog = lib().bpf_object__next_program(self.ptr, prog)
        return out

    def program(self, name: str) -> BPFProgram:
        ptr = lib().bpf_object__find_program_by_name(self.ptr, name.encode())
        if not ptr:
            raise BPFError(errno_mod.ENOENT, f"{self.path.name}: no program named {name!r}")
        return BPFProgram(self, ptr)

    def map(self, name: str) -> BPFMap:
        ptr = lib().bpf_object__find_map_by_name(self.ptr, name.encode())
        if not ptr:
            raise BPFError(errno_mod.ENOENT, f"{self.path.name}: no map named {name!r}")
        return BPFMap(ptr)

    def maps(self) -> list[BPFMap]:
        out: list[BPFMap] = []
        m = lib().bpf_object__next_map(self.ptr, None)
        while m:
            out.append(BPFMap(m))
            m = lib().bpf_object__next_map(self.ptr, m)
        return out

    def only(self, *names: str) -> None:
        """Load exactly the named programs (autoload off for every other one)."""
        wanted = set(names)
        found = set()
        for prog in self.programs():
            prog.autoload = prog.name in wanted
            found.add(prog.name)
        missing = wanted - found
        if missing:
            raise BPFError(errno_mod.ENOENT, f"{self.path.name}: no program named {sorted(missing)}")

    def _datasec_vars(self, section: str) -> dict[str, tuple[int, int]]:
        """Variable name -> (offset, size) inside a global-data section, read from the object's BTF."""
        if section not in self._layouts:
            self._layouts[section] = self._read_datasec(section)
        return self._layouts[section]

    def _read_datasec(self, section: str) -> dict[str, tuple[int, int]]:
        so = lib()
        btf = so.bpf_object__btf(self.ptr)
        if not btf:
            raise BPFError(errno_mod.ENOENT, f"{self.path.name}: object has no BTF (compile with -g)")
        sec_id = so.btf__find_by_name_kind(btf, section.encode(), BTF_KIND_DATASEC)
        if sec_id <= 0:
            raise BPFError(errno_mod.ENOENT, f"{self.path.name}: object has no {section} section")
        sec = so.btf__type_by_id(btf, sec_id)
        vlen = ctypes.c_uint32.from_address(sec + 4).value & 0xFFFF
        out: dict[str, tuple[int, int]] = {}
        for k in range(vlen):  # struct btf_var_secinfo { u32 type; u32 offset; u32 size; }
            base = sec + 12 + 12 * k
            var_id, off, size = (ctypes.c_uint32.from_address(base + 4 * j).value for j in range(3))
            var = so.btf__type_by_id(btf, var_id)
            name = so.btf__name_by_offset(btf, ctypes.c_uint32.from_address(var).value)
            out[name.decode()] = (off, size)
        return out

    def _section_map(self, section: str) -> BPFMap:
        for m in self.maps():
            if m.name.endswith(section):
                return m
        raise BPFError(errno_mod.ENOENT, f"{self.path.name}: object has no {section} map")

    def set_globals(self, section: str = ".rodata", /, **values: int) -> None:
        """Set global variables before load (``const volatile`` settings live in ``.rodata``)."""
        if self.loaded:
            raise BPFError(errno_mod.EBUSY, f"{self.path.name}: globals can only be set before load")
        layout = self._datasec_vars(section)
        m = self._section_map(section)
        size = ctypes.c_size_t(0)
        ptr = lib().bpf_map__initial_value(m._ptr, ctypes.byref(size))
        if not ptr:
            raise BPFError(errno_mod.EINVAL, f"{self.path.name}: {section} not writable")
        for name, value in values.items():
            if name not in layout:
                raise BPFError(errno_mod.ENOENT, f"{self.path.name}: no global {name!r} in {section}")
            off, width = layout[name]
            if off + width > size.value:
                raise BPFError(errno_mod.EINVAL, f"{self.path.name}: global {name!r} lies outside {section}")
            ctypes.memmove(ptr + off, int(value).to_bytes(width, "little", signed=value < 0), width)

    def read_global(self, name: str, section: str = ".bss") -> int:
        """Read an integer global of a loaded object from the kernel's copy of its section.

        Mmapable sections (.bss, .data on 5.5+) are mapped once, read-only, so a read costs no system
        call (libbpf 1.1 maps them onto the kernel's copy only for skeletons). Otherwise a map lookup.
        """
        return int.from_bytes(self.read_global_bytes(name, section), "little")

    def read_global_bytes(self, name: str, section: str = ".bss") -> bytes:
        """The bytes of a global (an array, a struct) of a loaded object, as ``read_global`` reads them."""
        if not self.loaded:
            raise BPFError(errno_mod.ENOENT, f"{self.path.name}: {section} not loaded")
        off, width = self._datasec_vars(section)[name]
        if section not in self._mmaped:
            m = self._section_map(section)
            view = None
            if m.map_flags & BPF_F_MMAPABLE:
                size = -(-m.value_size // mmap.PAGESIZE) * mmap.PAGESIZE
                view = mmap.mmap(m.fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
            self._mmaped[section] = view
        view = self._mmaped[section]
        if view is not None:
            return view[off : off + width]
        raw = self._section_map(section).lookup(b"\0\0\0\0")
        if raw is None:
            raise BPFError(errno_mod.ENOENT, f"{self.path.name}: {section} not loaded")
        return raw[off : off + width]

    def load(self) -> None:
        with _Capture() as msgs:
            ret = lib().bpf_object__load(self.ptr)
            if ret:
                raise _fail(f"loading {self.path.name}", _err_from_ret(ret), msgs)
        self.loaded = True

    def ring_buffer(self, map_name: str, callback: Callable[[bytes], None] | None = None) -> RingBuffer:
        m = self.map(map_name)
        rb = RingBuffer(m.fd, m.max_entries, m.name, callback)
        self._ringbufs.append(rb)
        return rb

    def close(self) -> None:
        for view in self._mmaped.values():
            if view is not None:
                view.close()
        self._mmaped.clear()
        for rb in self._ringbufs:
            rb.close()
        self._ringbufs.clear()
        for link in self._links:
            link.destroy()
        self._links.clear()
        if self._ptr:
            lib().bpf_object__close(self._ptr)
            self._ptr = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def link_exists(link_id: int) -> bool:
    """Whether the kernel still has a BPF link with this id (for leak checks)."""
    fd = lib().bpf_link_get_fd_by_id(link_id)
    if fd >= 0:
        os.close(fd)
        return True
    return False
