"""Decoding the records that the BPF side writes (layouts in ``bpf/nstrack.h``).

>>> raw = EVENT.pack(10**9, 4101, 77, 1, 0x40000000, 4026532178, 4026531837, 0, 88, 88, 6, b"unshare")
>>> decode_event(raw).name
'net:[4026532178]'
"""

from __future__ import annotations

import struct
import time
from array import array
from typing import Any, ClassVar, NamedTuple

from .nstypes import BY_FLAG, format_name

EV_CREATED, EV_DESTROYED = 1, 2
SOURCES = {1: "tree_add", 2: "tree_remove", 3: "copy", 4: "free", 5: "fork", 6: "unshare", 7: "free_inum"}
TASK_SOURCES = {"fork", "unshare"}  # tracepoint-mode sources (used for per-type fallback)



class Field(NamedTuple):
    """One member of a record: where it lies in the C struct and in the tuple the struct unpacks to."""

    name: str  # as in bpf/nstrack.h (a nested struct's members: "ev.inum")
    code: str  # struct module code: "Q", "I", "16s", "10I" (an array), "8x" (padding: no items)
    offset: int  # bytes from the start of the record
    size: int
    pos: int  # position of its first item in the unpacked tuple
    items: int  # how many items it unpacks to


_ALIGN = {"Q": 8, "I": 4, "s": 1, "x": 1}


class Layout:
    """A record of ``bpf/nstrack.h``, its members declared once: (name, struct code), or (name, Layout)
    for a nested struct. Offsets, padding and size follow C's natural alignment, as clang lays the struct
    out; ``tests/unit/test_records.py`` checks every member's offset and size against the BTF of the
    compiled BPF object. Everything that reads a record takes its positions from here: ``struct`` (the
    ``struct.Struct`` it unpacks with), ``index`` (positions in the tuple), ``column`` (a slice of the
    record's machine words, for reading one member of many records at once).

    >>> LAYOUT_NS_RECORD.fields["inum"].offset, LAYOUT_NS_RECORD.index["inum"], LAYOUT_NS_RECORD.size
    (12, 2, 40)
    >>> LAYOUT_NS_EVENT.in_ring().column("kind")  # its word in a ring record: after the 8-byte header
    slice(8, None, 20)
    """

    struct: struct.Struct
    size: int  # bytes, with C's tail padding
    items: int  # how many items a record unpacks to
    align: int
    fields: dict[str, Field]  # every member by name, in order; a nested struct's too ("ev.inum")
    index: dict[str, int]  # position in the unpacked tuple of each member that unpacks to items

    def __init__(self, c_name: str, members: list[tuple[str, str | Layout]]) -> None:
        self.c_name = c_name
        self.members = members
        self.fields = {}
        fmt, offset, index, align = "<", 0, 0, 1
        for name, code in members:
            if isinstance(code, Layout):
                inner_align = code.align
                pad = -offset % inner_align
                fmt, offset = fmt + (f"{pad}x" if pad else ""), offset + pad
                self.fields[name] = Field(name, code.struct.format[1:], offset, code.size, index, code.items)
                for f in code.fields.values():
                    self.fields[f"{name}.{f.name}"] = f._replace(name=f"{name}.{f.name}", offset=offset + f.offset,
                                                                 pos=index + f.pos)
                fmt += code.struct.format[1:]
                offset, index, align = offset + code.size, index + code.items, max(align, inner_align)
                continue
            kind, count = code[-1], int(code[:-1] or 1)
            width = struct.calcsize("<" + code)
            pad = -offset % _ALIGN[kind]
            fmt, offset = fmt + (f"{pad}x" if pad else ""), offset + pad
            items = 0 if kind == "x" else 1 if kind == "s" else count
            self.fields[name] = Field(name, code, offset, width, index, items)
            fmt, offset, index, align = fmt + code, offset + width, index + items, max(align, _ALIGN[kind])
        tail = -offset % align
        self.struct = struct.Struct(fmt + (f"{tail}x" if tail else ""))
        self.size, self.items, self.align = self.struct.size, index, align
        self.index = {name: f.pos for name, f in self.fields.items() if f.items}

    def row(self, **values: Any) -> Row:
        """A tuple as ``struct`` unpacks one record, from member values by name (others zero, or empty
        bytes); for records Python makes itself (a free that BPF paired, applied as an event)."""
        unknown = set(values) - {n for n, f in self.fields.items() if f.items == 1 and "." not in n}
        if unknown:
            raise ValueError(f"{self.c_name} has no single-item member {min(unknown)!r}")
        out: list[Any] = []
        for name, _ in self.members:
            f = self.fields[name]
            if f.items == 1:
                out.append(values.get(name, bytes(f.size) if f.code.endswith("s") else 0))
            elif f.items:
                raise ValueError(f"{self.c_name}.{name}: row() makes only records of single-item members")
        return tuple(out)

    def in_ring(self) -> Layout:
        """The record as a ring buffer holds it: an 8-byte header first, the whole padded to 8 bytes.
        Unpacks to the same tuples."""
        ring = Layout(f"{self.c_name} in a ring", [("_header", "8x"), *self.members])
        tail = -ring.size % 8
        return ring if not tail else Layout(ring.c_name, [*ring.members, ("_tail", f"{tail}x")])

    def column(self, name: str) -> slice:
        """The slice of an ``array`` of the member's own machine words over many records back to back
        (``array("I", data)[layout.column("inum")]``) that holds that member of each record."""
        f = self.fields[name]
        width = _ALIGN[f.code[-1]] if f.code[-1] in "QI" else 0
        if not width or f.size != width or f.offset % width or self.size % width:
            raise ValueError(f"{self.c_name}.{name} is not a single machine word")
        return slice(f.offset // width, None, self.size // width)


# The records, as bpf/nstrack.h declares them.
LAYOUT_NS_EVENT = Layout("ns_event", [
    ("ts_ns", "Q"), ("ns_id", "Q"), ("cgroup_id", "Q"), ("kind", "I"), ("ns_type", "I"), ("inum", "I"),
    ("owner_inum", "I"), ("parent_inum", "I"), ("pid", "I"), ("tgid", "I"), ("source", "I"), ("comm", "16s"),
])
LAYOUT_NS_BRIEF = Layout("ns_brief", [("ev", LAYOUT_NS_EVENT), ("end_ns", "Q"), ("counted", "I"), ("reserved", "I")])
LAYOUT_NS_RECORD = Layout("ns_record", [
    ("ns_id", "Q"), ("ns_type", "I"), ("inum", "I"), ("owner_inum", "I"), ("parent_inum", "I"), ("refcount", "I"),
    ("flags", "I"), ("owner_ns_id", "Q"),
])
LAYOUT_TASK_RECORD = Layout("task_record", [
    ("pid", "I"), ("tgid", "I"), ("inum", "10I"), ("comm", "16s"), ("uid", "I"), ("nsproxy_id", "I"),
])
LAYOUT_FILE_RECORD = Layout("file_record", [
    ("tgid", "I"), ("fd", "I"), ("kind", "I"), ("ns_type", "I"), ("inum", "I"), ("owner_inum", "I"),
])
LAYOUT_COMM_KEY = Layout("comm_key", [("comm", "16s"), ("type", "I"), ("reserved", "I")])

EVENT = LAYOUT_NS_EVENT.struct  # struct ns_event, 72 bytes
NS_RECORD = LAYOUT_NS_RECORD.struct  # struct ns_record, 40 bytes
TASK_RECORD = LAYOUT_TASK_RECORD.struct  # struct task_record, 72 bytes
# Positions of ns_event's members in an EVENT tuple (and in EVENT_ROW's and BRIEF_ROW's, which start alike)
EV_TS, EV_NS_ID, EV_KIND, EV_TYPE, EV_INUM, EV_SOURCE = (
    LAYOUT_NS_EVENT.index[n] for n in ("ts_ns", "ns_id", "kind", "ns_type", "inum", "source"))

# task_record.inum slots, in bpf/nstrack.h order: (type, proc file name)
SLOTS: tuple[tuple[str, str], ...] = (
    ("net", "net"),
    ("mnt", "mnt"),
    ("uts", "uts"),
    ("ipc", "ipc"),
    ("pid", "pid"),
    ("user", "user"),
    ("cgroup", "cgroup"),
    ("time", "time"),
    ("pid", "pid_for_children"),
    ("time", "time_for_children"),
)
# Slots 0-7 are a task's own namespaces, each of another type (so distinct inode numbers); 8 and 9 are
# what its children get, the same namespaces as 4 and 7 unless it called unshare/setns for them.
MEMBER_TYPES = tuple(type_ for type_, _ in SLOTS[:8])
ROLE = {fname: fname if fname.endswith("_for_children") else "member" for _, fname in SLOTS}  # holder role per slot
assert all(fname == type_ for type_, fname in SLOTS[:8]) and SLOTS[8] == ("pid", "pid_for_children") \
    and SLOTS[9] == ("time", "time_for_children")


# One record unpacked by a struct layout (EVENT_ROW, BRIEF_ROW, ...): its fields, in the layout's order.
Row = tuple[Any, ...]


class RecordError(ValueError):
    pass


_NAME_OF_FLAG = {flag: t.name for flag, t in BY_FLAG.items()}
TYPE_OF_FLAG = _NAME_OF_FLAG  # type name of each CLONE_NEW* flag (read-only)
_COMMS: dict[bytes, str] = {}  # raw 16-byte comm -> text


def _type_name(flag: int) -> str:
    name = _NAME_OF_FLAG.get(flag)
    if name is None:
        raise RecordError(f"unknown namespace type flag {flag:#x}")
    return name


def _type_names(flags: set[int]) -> dict[int, str]:
    """The names of a batch's flags, checked once per batch rather than once per record."""
    for flag in flags:
        _type_name(flag)
    return _NAME_OF_FLAG


class Event(NamedTuple):  # a tuple: built once per lifecycle event, so construction must be cheap
    kind: str  # "created" | "destroyed"
    type: str  # "" for a freed inode number whose namespace type the replica resolves
    inum: int
    ns_id: int | None
    ts_ns: int  # CLOCK_BOOTTIME nanoseconds
    owner_inum: int
    parent_inum: int
    pid: int
    tgid: int
    comm: str
    cgroup_id: int
    source: str

    @property
    def name(self) -> str:
        return format_name(self.type, self.inum)


_KINDS = {EV_CREATED: "created", EV_DESTROYED: "destroyed"}


# An event record as the ring buffer holds it: the 8-byte record header skipped, then struct ns_event
# (72 bytes, so no padding after it). Unpacks to the same tuples as EVENT.
LAYOUT_EVENT_ROW = LAYOUT_NS_EVENT.in_ring()
EVENT_ROW = LAYOUT_EVENT_ROW.struct
# Columns of EVENT_ROW records back to back: slices of their 32- and 64-bit words (the tracker's span checks)
ROW_KIND, ROW_TYPE, ROW_INUM, ROW_SOURCE = (LAYOUT_EVENT_ROW.column(n) for n in ("kind", "ns_type", "inum", "source"))
ROW_NS_ID = LAYOUT_EVENT_ROW.column("ns_id")

# EventBatch's and BriefBatch's column names, and the member of struct ns_event each one is
_BATCH_COLUMNS = {"ts": "ts_ns", "ns_id": "ns_id", "kind": "kind", "flag": "ns_type", "inum": "inum", "tgid": "tgid",
                  "src": "source"}


class EventBatch:
    """Ring-buffer event records (EVENT_ROW each: header and struct ns_event, 80 bytes) read by column,
    without a tuple per record: the events serve applies in batches (Tracker, defer_events).

    ``ts``, ``ns_id``, ``kind``, ``flag``, ``inum``, ``tgid`` and ``src`` are arrays (machine words of the records:
    little-endian, as everything nstrack reads from BPF on x86-64).
    """

    LAYOUT = LAYOUT_EVENT_ROW
    STRIDE = LAYOUT_EVENT_ROW.size
    COMM = LAYOUT_EVENT_ROW.fields["comm"].offset
    _TS, _NS_ID = (LAYOUT_EVENT_ROW.column(_BATCH_COLUMNS[n]) for n in ("ts", "ns_id"))
    _KIND, _FLAG, _INUM, _TGID, _SRC = (LAYOUT_EVENT_ROW.column(_BATCH_COLUMNS[n])
                                        for n in ("kind", "flag", "inum", "tgid", "src"))

    def __init__(self, data: bytes) -> None:
        if len(data) % self.STRIDE:
            raise RecordError(f"event records: {len(data)} bytes is not a multiple of {self.STRIDE}")
        self.data = data
        w64, w32 = array("Q", data), array("I", data)
        self.ts, self.ns_id = w64[self._TS], w64[self._NS_ID]
        self.kind, self.flag, self.inum = w32[self._KIND], w32[self._FLAG], w32[self._INUM]
        self.tgid, self.src = w32[self._TGID], w32[self._SRC]

    def __len__(self) -> int:
        return len(self.ts)

    def row(self, i: int) -> Row:
        """Record ``i`` as an EVENT tuple."""
        return EVENT_ROW.unpack_from(self.data, i * self.STRIDE)

    def rows(self) -> list[Row]:
        """Every record as an EVENT tuple, in order."""
        return list(EVENT_ROW.iter_unpack(self.data))

    def comm(self, i: int) -> bytes:
        """Record ``i``'s raw comm."""
        o = i * self.STRIDE + self.COMM
        return self.data[o : o + 16]

    def comms(self) -> list[bytes]:
        """Every record's raw comm, in order."""
        d, c = self.data, self.COMM
        return [d[o : o + 16] for o in range(c, len(d), self.STRIDE)]

    def same_comm(self) -> bytes | None:
        """The raw comm of every record if they all have the same one (sixteen strided compares)."""
        d, n, c, stride = self.data, len(self), self.COMM, self.STRIDE
        if not n:
            return None
        first = d[c : c + 16]
        if all(d[c + k :: stride] == first[k : k + 1] * n for k in range(16)):
            return first
        return None


# A brief record as the ring buffer holds it (struct ns_brief: a creation record, when the namespace was
# freed, and what BPF counted of it; the 8-byte record header first). Unpacks to EVENT tuples, the free's
# time, ``counted`` and a reserved word.
LAYOUT_BRIEF_ROW = LAYOUT_NS_BRIEF.in_ring()
BRIEF_ROW = LAYOUT_BRIEF_ROW.struct
BRIEF_COMM = 1  # ns_brief.counted: BPF counted its creator's command (or it has none: the kernel's)

# BPF's counts of the namespaces it paired, per type (struct brief_stats, in nstypes order): how many, the
# sum of their lifetimes (ns), and how many per lifetime bucket (LIFE_BOUNDS_NS; the last: above them all).
LIFE_BOUNDS_NS = (10**9, 10 * 10**9, 60 * 10**9, 300 * 10**9, 1800 * 10**9, 3600 * 10**9, 21600 * 10**9,
                  86400 * 10**9)
LAYOUT_BRIEF_STATS = Layout("brief_stats", [("count", "Q"), ("life_sum_ns", "Q"), ("life", f"{len(LIFE_BOUNDS_NS) + 1}Q")])
BRIEF_STATS = LAYOUT_BRIEF_STATS.struct
COMM_KEY = LAYOUT_COMM_KEY.struct  # brief_comms' key (struct comm_key): command, type index, reserved


class BriefBatch(EventBatch):
    """``brief_rb`` records (serve in the event modes: namespaces freed while their creation was held in
    BPF) by column, as EventBatch, plus ``end``: when each was freed, and ``counted`` (BRIEF_*). ``row(i)``
    is the creation."""

    LAYOUT = LAYOUT_BRIEF_ROW
    STRIDE = LAYOUT_BRIEF_ROW.size
    COMM = LAYOUT_BRIEF_ROW.fields["ev.comm"].offset

    def __init__(self, data: bytes) -> None:
        if len(data) % self.STRIDE:
            raise RecordError(f"brief records: {len(data)} bytes is not a multiple of {self.STRIDE}")
        self.data = data
        self._len = len(data) // self.STRIDE

    # Columns are cut when first asked for (serve, under churn, asks for few of them: a copy each), then
    # kept as attributes: (array type, slice of the words) of each
    _COLUMNS: ClassVar[dict[str, tuple[str, slice]]] = {
        name: (LAYOUT_BRIEF_ROW.fields[member].code, LAYOUT_BRIEF_ROW.column(member))
        for name, member in [*((n, "ev." + m) for n, m in _BATCH_COLUMNS.items()), ("end", "end_ns"),
                             ("counted", "counted")]}
    end: array[int]
    counted: array[int]

    def __getattr__(self, name: str) -> array[int]:
        column = self._COLUMNS.get(name)
        if column is None:
            raise AttributeError(name)
        code, words_of = column
        cache = self.__dict__
        words = cache.get("_words_" + code)
        if words is None:
            words = cache["_words_" + code] = array(code, self.data)
        value = cache[name] = words[words_of]
        return value

    def __len__(self) -> int:
        return self._len

    def row(self, i: int) -> Row:
        return BRIEF_ROW.unpack_from(self.data, i * self.STRIDE)[: LAYOUT_NS_EVENT.items]

    def rows(self) -> list[Row]:
        n = LAYOUT_NS_EVENT.items
        return [r[:n] for r in BRIEF_ROW.iter_unpack(self.data)]


def check_rows(rows: list[Row]) -> tuple[list[Row], int]:
    """The well-formed EVENT tuples of a batch (known kind and type flag; only a free may come without
    a type), and how many were not. One pass over the batch when all are well formed."""
    if all(_valid_kind_flag(k, f) for k, f in {(r[EV_KIND], r[EV_TYPE]) for r in rows}):
        return rows, 0
    good = [r for r in rows if _valid_kind_flag(r[EV_KIND], r[EV_TYPE])]
    return good, len(rows) - len(good)


def _valid_kind_flag(kind: int, flag: int) -> bool:
    return kind in _KINDS and (flag in _NAME_OF_FLAG or (flag == 0 and kind == EV_DESTROYED))


def events_of_rows(rows: list[Row]) -> list[Event]:
    """Events of checked EVENT tuples (``check_rows``), each built without its Python-level ``__new__``."""
    new, kinds, names, comms, sources = tuple.__new__, _KINDS, _NAME_OF_FLAG, _COMMS, SOURCES
    out: list[Event] = []
    append = out.append
    for ts, ns_id, cg, kind, flag, inum, owner, parent, pid, tgid, src, comm in rows:
        append(new(Event, (kinds[kind], names[flag] if flag else "", inum, ns_id or None, ts, owner, parent, pid,
                           tgid, comms.get(comm) or _comm(comm), cg, sources.get(src) or f"source {src}")))
    return out


def comm_text(comm: bytes) -> str:
    """A raw 16-byte task command as text (cached: few distinct commands create namespaces)."""
    return _COMMS.get(comm) or _comm(comm)


def _comm(comm: bytes) -> str:
    if len(_COMMS) > 4096:
        _COMMS.clear()
    name = _COMMS[comm] = comm.split(b"\0", 1)[0].decode(errors="replace")
    return name


def decode_event(raw: bytes) -> Event:
    if len(raw) < EVENT.size:
        raise RecordError(f"event record of {len(raw)} bytes, expected {EVENT.size}")
    ts, ns_id, cg, kind, flag, inum, owner, parent, pid, tgid, src, comm = EVENT.unpack_from(raw)
    if kind not in (EV_CREATED, EV_DESTROYED):
        raise RecordError(f"unknown event kind {kind}")
    # a freed inode number (proc_free_inum) comes without a type: "" until the replica resolves it
    type_ = "" if (flag == 0 and kind == EV_DESTROYED) else _type_name(flag)
    name = _COMMS.get(comm) or _comm(comm)  # few distinct commands create namespaces: decode each once
    return Event(
        "created" if kind == EV_CREATED else "destroyed",  # kind
        type_,
        inum,
        ns_id or None,
        ts,  # ts_ns
        owner,  # owner_inum
        parent,  # parent_inum
        pid,
        tgid,
        name,  # comm
        cg,  # cgroup_id
        SOURCES.get(src) or f"source {src}",
    )


class NSRecord(NamedTuple):
    """A live namespace as a scan found it."""

    type: str
    inum: int
    ns_id: int | None
    owner_inum: int
    parent_inum: int
    refcount: int | None
    owner_ns_id: int | None = None

    @property
    def name(self) -> str:
        return format_name(self.type, self.inum)


def decode_ns_records(data: bytes) -> list[NSRecord]:
    """Many ns_record records at once, joined (one unpack pass)."""
    if len(data) % NS_RECORD.size:
        raise RecordError(f"namespace records: {len(data)} bytes is not a multiple of {NS_RECORD.size}")
    rows = list(NS_RECORD.iter_unpack(data))
    names = _type_names({r[_NSR_TYPE] for r in rows})
    new = tuple.__new__  # NSRecord(...) without its Python-level __new__ (20k records per `ls`)
    return [new(NSRecord, (names[flag], inum, ns_id or None, owner, parent, ref or None, owner_id or None))
            for ns_id, flag, inum, owner, parent, ref, _f, owner_id in rows]


def decode_ns_record(raw: bytes) -> NSRecord:
    if len(raw) < NS_RECORD.size:
        raise RecordError(f"namespace record of {len(raw)} bytes, expected {NS_RECORD.size}")
    ns_id, flag, inum, owner, parent, ref, _flags, owner_id = NS_RECORD.unpack_from(raw)
    return NSRecord(_type_name(flag), inum, ns_id or None, owner, parent, ref or None, owner_id or None)


class TaskRecord(NamedTuple):
    pid: int
    tgid: int
    inums: tuple[int, ...]  # SLOTS order; 0 = unknown
    comm: str
    uid: int = 0
    nsproxy: int = 0  # identity of the task's nsproxy (0: none, or unknown without BPF)

    def namespaces(self) -> list[tuple[str, int]]:
        """(type, inum) of every namespace this task holds, without repeats."""
        out: list[tuple[str, int]] = []
        for (t, _), inum in zip(SLOTS, self.inums):
            if inum and (t, inum) not in out:
                out.append((t, inum))
        return out


_NSR_TYPE = LAYOUT_NS_RECORD.index["ns_type"]
_TASK_PID, _TASK_TGID, _TASK_COMM, _TASK_UID, _TASK_NSPROXY = (
    LAYOUT_TASK_RECORD.index[n] for n in ("pid", "tgid", "comm", "uid", "nsproxy_id"))
_inums = LAYOUT_TASK_RECORD.fields["inum"]
_TASK_INUMS = slice(_inums.pos, _inums.pos + _inums.items)
assert _inums.items == len(SLOTS)


def decode_tasks(data: bytes) -> list[TaskRecord]:
    if len(data) % TASK_RECORD.size:
        raise RecordError(f"task records: {len(data)} bytes is not a multiple of {TASK_RECORD.size}")
    out = []
    new = tuple.__new__  # TaskRecord(...) without its Python-level __new__
    comms = _COMMS
    for fields in TASK_RECORD.iter_unpack(data):
        raw = fields[_TASK_COMM]
        comm = comms.get(raw)
        if comm is None:  # many tasks share a command: decode each once
            if len(comms) > 4096:
                comms.clear()
            comm = comms[raw] = raw.split(b"\0", 1)[0].decode(errors="replace")
        out.append(new(TaskRecord, (fields[_TASK_PID], fields[_TASK_TGID], fields[_TASK_INUMS], comm, fields[_TASK_UID],
                                    fields[_TASK_NSPROXY])))
    return out


FILE_RECORD = LAYOUT_FILE_RECORD.struct  # struct file_record, 24 bytes
FILE_KINDS = {1: "nsfs", 2: "socket"}


class FileRecord(NamedTuple):
    tgid: int
    fd: int
    kind: str  # "nsfs" | "socket"
    type: str
    inum: int
    owner_inum: int = 0


_FILE_TYPE = LAYOUT_FILE_RECORD.index["ns_type"]


def decode_files(data: bytes) -> list[FileRecord]:
    if len(data) % FILE_RECORD.size:
        raise RecordError(f"file records: {len(data)} bytes is not a multiple of {FILE_RECORD.size}")
    rows = list(FILE_RECORD.iter_unpack(data))
    names = _type_names({r[_FILE_TYPE] for r in rows})
    new = tuple.__new__  # FileRecord(...) without its Python-level __new__
    return [new(FileRecord, (tgid, fd, FILE_KINDS.get(kind) or str(kind), names[flag], inum, owner))
            for tgid, fd, kind, flag, inum, owner in rows]


class MountRecord(NamedTuple):
    """An nsfs bind mount: namespace ``type:[inum]`` mounted at ``path`` inside mount namespace ``mnt_ns``."""

    mnt_ns: int
    path: str
    type: str
    inum: int


def boot_ns() -> int:
    """CLOCK_BOOTTIME in nanoseconds: the clock of the kernel's event timestamps (bpf_ktime_get_boot_ns)."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)
