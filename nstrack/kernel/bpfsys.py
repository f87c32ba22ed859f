"""bpf(2) without libbpf: errors, ring buffers, iterators and pinned objects (no libbpf.so loaded).

What a command that finds its programs already loaded and pinned needs (``scanner.PinnedScanner``):
importing this costs ~1 ms, against ~10 ms for libbpf's binding and ~50 ms for loading an object
(the kernel's BTF parsed, programs verified). ``libbpf.py`` builds on it.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import mmap
import os
import struct
from collections.abc import Callable
from typing import Any

from .arch import SYS_BPF

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.syscall.restype = ctypes.c_long
_PROT_READ, _PROT_WRITE, _MAP_SHARED = 1, 2, 1


class BPFError(OSError):
    """A libbpf or bpf(2) failure.

    ``errno`` is the positive error number, ``op`` the operation that failed, ``messages`` what
    libbpf printed while it ran, and ``verifier_log`` the verifier's log when a program was rejected.
    """

    def __init__(
        self,
        err: int,
        op: str,
        messages: list[str] | None = None,
        verifier_log: str = "",
    ) -> None:
        self.op = op
        self.messages = list(messages or [])
        self.verifier_log = verifier_log
        super().__init__(err, f"{op}: {errno_name(err)} ({os.strerror(err)})")

    def __str__(self) -> str:
        text = f"{self.op}: {errno_name(self.errno)} ({os.strerror(self.errno or 0)})"
        hint = ERRNO_HINTS.get(self.errno or 0)
        if hint:
            text += f"; {hint}"
        if self.verifier_log:
            tail = "\n".join(self.verifier_log.rstrip().splitlines()[-12:])
            text += f"\nverifier log (last lines):\n{tail}"
        elif self.messages:
            useful = [m for m in self.messages if m.strip()][-4:]
            if useful:
                text += "\n" + "\n".join(useful)
        return text


def errno_name(err: int | None) -> str:
    """``errno_name(1) == 'EPERM'``; unknown numbers come back as ``'errno 999'``."""
    if err is None:
        return "errno ?"
    return errno_mod.errorcode.get(err, f"errno {err}")


# What an errno usually means when the kernel returns it for a BPF operation.
ERRNO_HINTS: dict[int, str] = {
    errno_mod.EPERM: "refused by the kernel (missing CAP_BPF/CAP_PERFMON/CAP_SYS_ADMIN, lockdown, "
    "or a security policy that forbids this program type)",
    errno_mod.EACCES: "rejected by the verifier or by a security policy",
    errno_mod.EINVAL: "the kernel does not understand this program, attach type or argument",
    errno_mod.ENOENT: "not found on this kernel (function, tracepoint or BTF type missing)",
    errno_mod.ESRCH: "attach target not found in the kernel's BTF",
    errno_mod.ENOTSUP: "not supported by this kernel",
    errno_mod.EOPNOTSUPP: "not supported by this kernel",
    errno_mod.E2BIG: "program or map too large for this kernel",
    errno_mod.ENOMEM: "out of memory (or RLIMIT_MEMLOCK too low on kernels before 5.11)",
    errno_mod.EBUSY: "attach point busy",
}



RINGBUF_BUSY, RINGBUF_DISCARD, RINGBUF_HDR = 1 << 31, 1 << 30, 8  # include/uapi/linux/bpf.h
_UNIFORM: dict[int, struct.Struct] = {}


def parse_ring_span(span: bytes, records: bool = True) -> tuple[int, list[bytes]]:
    """Records at the start of a BPF ring buffer's waiting data: (bytes up to the first record not
    yet committed, payloads of the committed records that were not discarded).

    Each record is an 8-byte header (u32 length with the busy and discard bits, u32 page offset)
    and its payload, padded to 8 bytes. When every record has the first one's length (one kind of
    record per ring, the common case) they are checked and split in a few C-level passes.
    """
    end, out, _ = _parse(span, records, None)
    return end, out


def parse_ring_rows(span: bytes, row: struct.Struct) -> tuple[int, list[tuple[Any, ...]], int]:
    """As ``parse_ring_span``, but each record unpacked with ``row``, a layout that starts with the
    8-byte record header as padding (``<8x...``): (end, the tuples, how many committed records had
    another size and were left out)."""
    return _parse(span, True, row)


def uniform_stride(span: bytes) -> int:
    """The record stride of a span (as ``RingBuffer.read_spans`` gives) whose records all have the
    same length and are committed and not discarded; 0 if they do not."""
    first = int.from_bytes(span[:4], "little") if len(span) >= RINGBUF_HDR else 0
    stride = (first + RINGBUF_HDR + 7) & ~7
    if 0 < first < RINGBUF_DISCARD and len(span) % stride == 0:
        count, head = len(span) // stride, span[:4]
        if all(span[i::stride] == head[i : i + 1] * count for i in range(4)):
            return stride
    return 0


def _parse(span: bytes, records: bool, row: struct.Struct | None) -> tuple[int, list[Any], int]:
    if len(span) < RINGBUF_HDR:
        return 0, [], 0
    stride = uniform_stride(span)
    if stride:
        if not records:
            return len(span), [], 0
        if row is not None:
            if row.size == stride:
                return len(span), list(row.iter_unpack(span)), 0
            return len(span), [], len(span) // stride
        first = int.from_bytes(span[:4], "little")
        layout = _UNIFORM.get(first)
        if layout is None:
            layout = _UNIFORM[first] = struct.Struct(f"<II{first}s{stride - first - RINGBUF_HDR}x")
        return len(span), [r[2] for r in layout.iter_unpack(span)], 0
    end, other = 0, 0
    out: list[Any] = []  # bytes of each record, or (``row``) its tuple
    while end + RINGBUF_HDR <= len(span):
        length = int.from_bytes(span[end : end + 4], "little")
        if length & RINGBUF_BUSY:  # reserved, not yet committed
            break
        size = length & ~RINGBUF_DISCARD
        after = end + ((size + RINGBUF_HDR + 7) & ~7)
        if after > len(span):  # cannot happen with the kernel's ring; never read past the span
            break
        if records and not length & RINGBUF_DISCARD:
            if row is None:
                out.append(span[end + RINGBUF_HDR : end + RINGBUF_HDR + size])
            elif after - end == row.size:
                out.append(row.unpack_from(span, end))
            else:
                other += 1
        end = after
    return end, out, other


class RingBuffer:
    """A consumer of one BPF_MAP_TYPE_RINGBUF map; ``consume()`` hands each record's bytes to ``callback``.

    Reads the kernel's memory-mapped ring directly, as libbpf's ``ring_buffer__consume`` does (and
    cilium/ebpf's reader): the consumer-position page mapped read-write, the producer page and the data
    pages (mapped twice by the kernel, so a record that wraps is contiguous) read-only. No ctypes
    callback per record: with thousands of records a second, that trampoline was most of the cost.
    x86-64 only, like the rest of nstrack: aligned 8-byte loads and stores are atomic and ordered there.
    """

    def __init__(self, fd: int, size: int, name: str, callback: Callable[[bytes], None] | None = None) -> None:
        self.name = name
        self._callback = callback
        self.fd = fd  # the map's: pollable, readable when records are waiting
        self._mask = size - 1
        self._page = mmap.PAGESIZE
        self._data_len = self._page + 2 * size
        self._cons = self._mmap(self._page, _PROT_READ | _PROT_WRITE, 0)
        try:
            self._prod = self._mmap(self._data_len, _PROT_READ, self._page)
        except BPFError:
            _libc.munmap(ctypes.c_void_p(self._cons), ctypes.c_size_t(self._page))
            raise
        self._data = self._prod + self._page
        self._open = True

    def _mmap(self, length: int, prot: int, offset: int) -> int:
        ctypes.set_errno(0)
        addr = _libc.mmap(None, ctypes.c_size_t(length), prot, _MAP_SHARED, self.fd, ctypes.c_long(offset))
        if addr in (None, ctypes.c_void_p(-1).value):
            raise BPFError(ctypes.get_errno() or errno_mod.EINVAL, f"ring buffer on map {self.name}: mmap")
        return int(addr)

    def consume(self) -> int:
        """Deliver every committed record already in the buffer without waiting; returns how many.

        The records are taken off the ring before the first callback runs: an exception from the
        callback loses the records after it."""
        cb = self._callback
        if cb is None:
            raise BPFError(errno_mod.EINVAL, f"ring buffer {self.name}: no callback (use read_all)")
        records = self.read_all()
        for r in records:
            cb(r)
        return len(records)

    def waiting(self) -> int:
        """Bytes of records (committed or not) not yet taken off the ring: two loads, no system call."""
        if not self._open:
            raise BPFError(errno_mod.EBADF, "ring buffer closed")
        return ctypes.c_uint64.from_address(self._prod).value - ctypes.c_uint64.from_address(self._cons).value

    def read_all(self) -> list[bytes]:
        """Every committed record already in the buffer, in order, taken off the ring."""
        return self._read(spans=False)

    def read_spans(self) -> list[tuple[bytes, int]]:
        """Every committed record already in the buffer taken off the ring, as the raw spans they were
        read in (8-byte headers included; see ``parse_ring_rows``), each with its ``uniform_stride``."""
        return self._read(spans=True)

    def _read(self, spans: bool) -> list[Any]:
        """Copies the waiting span in one go and finds how far its records are committed, then copies
        that part once more and takes the records from the second copy: a record's data is only read
        after its header said it was committed (the first copy may have read data before the producer
        finished writing it).
        """
        if not self._open:
            raise BPFError(errno_mod.EBADF, "ring buffer closed")
        cons_pos = ctypes.c_uint64.from_address(self._cons)
        out: list[Any] = []  # records (bytes), or (``spans``) (span, stride) pairs
        while True:
            cons = cons_pos.value
            prod = ctypes.c_uint64.from_address(self._prod).value
            if cons >= prod:
                return out
            start = self._data + (cons & self._mask)
            waiting = prod - cons  # contiguous: the kernel maps the data pages twice
            first = ctypes.string_at(start, waiting)
            stride = uniform_stride(first)  # (all committed: the usual case, one pass)
            end = waiting if stride else _parse(first, False, None)[0]
            if end == 0:
                return out
            if spans:  # (a stride found in the first copy holds for the second: its headers were final)
                out.append((ctypes.string_at(start, end), stride))
            else:
                out += _parse(ctypes.string_at(start, end), True, None)[1]
            cons_pos.value = cons + end
            if end < waiting:
                return out

    def close(self) -> None:
        if self._open:
            self._open = False
            _libc.munmap(ctypes.c_void_p(self._prod), ctypes.c_size_t(self._data_len))
            _libc.munmap(ctypes.c_void_p(self._cons), ctypes.c_size_t(self._page))


# --------------------------------------------------------------------------------------------
# Raw bpf(2): pinned objects and iterators (x86-64)

BPF_OBJ_PIN, BPF_OBJ_GET, BPF_OBJ_GET_INFO_BY_FD, BPF_LINK_CREATE, BPF_ITER_CREATE = 6, 7, 15, 28, 33
BPF_TRACE_ITER = 28  # enum bpf_attach_type


def bpf(cmd: int, attr: bytes, what: str) -> int:
    """One bpf(2) call with ``attr`` (zero-padded to 128 bytes); returns its result or raises BPFError."""
    buf = ctypes.create_string_buffer(attr.ljust(128, b"\0"), 128)
    ret = _libc.syscall(SYS_BPF, cmd, buf, 128)
    if ret < 0:
        raise BPFError(ctypes.get_errno() or errno_mod.EIO, what)
    return int(ret)


def obj_pin(fd: int, path: str) -> None:
    """Pin a program, map or link in bpffs (BPF_OBJ_PIN)."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    bpf(BPF_OBJ_PIN, struct.pack("<QII", ctypes.addressof(p), fd, 0), f"pinning at {path}")


def obj_get(path: str) -> int:
    """An fd of the object pinned at ``path`` (BPF_OBJ_GET); the caller closes it."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    return bpf(BPF_OBJ_GET, struct.pack("<QII", ctypes.addressof(p), 0, 0), f"opening pinned {path}")


def map_max_entries(fd: int) -> int:
    """A map's max_entries (struct bpf_map_info: type, id, key_size, value_size, max_entries, ...)."""
    info = ctypes.create_string_buffer(80)
    bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", fd, len(info), ctypes.addressof(info)), "reading map info")
    return int(struct.unpack_from("<I", info.raw, 16)[0])


def iter_link(prog_fd: int, tid: int | None = None) -> int:
    """An iterator link of an (iter) program; ``tid`` limits a task iterator to that task (6.1+)."""
    if tid is None:
        attr = struct.pack("<IIII", prog_fd, 0, BPF_TRACE_ITER, 0)
        return bpf(BPF_LINK_CREATE, attr, "creating an iterator link")
    info = ctypes.create_string_buffer(struct.pack("<III", tid, 0, 0), 24)  # union bpf_iter_link_info .task
    attr = struct.pack("<IIIIQI", prog_fd, 0, BPF_TRACE_ITER, 0, ctypes.addressof(info), 24)
    return bpf(BPF_LINK_CREATE, attr, f"creating an iterator link for task {tid}")


def read_iter(link_fd: int, what: str, chunk: int = 1 << 16) -> bytes:
    """Create an iterator instance of an iterator link and read it to the end."""
    fd = bpf(BPF_ITER_CREATE, struct.pack("<II", link_fd, 0), f"{what}: bpf_iter_create")
    parts: list[bytes] = []
    try:
        while True:
            try:
                data = os.read(fd, chunk)
            except InterruptedError:
                continue
            if not data:
                break
            parts.append(data)
    except OSError as exc:
        raise BPFError(exc.errno or errno_mod.EIO, f"{what}: reading iterator") from None
    finally:
        os.close(fd)
    return b"".join(parts)
