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

EVENT = struct.Struct("<QQQIIIIIIII16s")  # struct ns_event, 72 bytes
NS_RECORD = struct.Struct("<QIIIIIIQ")  # struct ns_record, 40 bytes
TASK_RECORD = struct.Struct("<II10I16sII")  # struct task_record, 72 bytes

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
EVENT_ROW = struct.Struct("<8x" + EVENT.format[1:] + f"{-EVENT.size % 8}x")
assert EVENT.format == "<QQQIIIIIIII16s" and EVENT_ROW.size == 80  # the column positions of EventBatch


class EventBatch:
    """Ring-buffer event records (EVENT_ROW each: header and struct ns_event, 80 bytes) read by column,
    without a tuple per record: the events serve applies in batches (Tracker, defer_events).

    ``ts``, ``ns_id``, ``kind``, ``flag``, ``inum``, ``tgid`` and ``src`` are arrays (machine words of the records:
    little-endian, as everything nstrack reads from BPF on x86-64).
    """

    STRIDE = EVENT_ROW.size
    COMM = 64  # offset of the comm in a record

    def __init__(self, data: bytes) -> None:
        if len(data) % self.STRIDE:
            raise RecordError(f"event records: {len(data)} bytes is not a multiple of {self.STRIDE}")
        self.data = data
        w64, w32 = array("Q", data), array("I", data)
        self.ts, self.ns_id = w64[1::10], w64[2::10]
        self.kind, self.flag, self.inum = w32[8::20], w32[9::20], w32[10::20]
        self.tgid, self.src = w32[14::20], w32[15::20]

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
BRIEF_ROW = struct.Struct("<8x" + EVENT.format[1:] + "QII")
assert BRIEF_ROW.size == 96
BRIEF_COMM = 1  # ns_brief.counted: BPF counted its creator's command (or it has none: the kernel's)

# BPF's counts of the namespaces it paired, per type (struct brief_stats, in nstypes order): how many, the
# sum of their lifetimes (ns), and how many per lifetime bucket (LIFE_BOUNDS_NS; the last: above them all).
LIFE_BOUNDS_NS = (10**9, 10 * 10**9, 60 * 10**9, 300 * 10**9, 1800 * 10**9, 3600 * 10**9, 21600 * 10**9,
                  86400 * 10**9)
BRIEF_STATS = struct.Struct(f"<QQ{len(LIFE_BOUNDS_NS) + 1}Q")
COMM_KEY = struct.Struct("<16sII")  # brief_comms' key (struct comm_key): command, type index, reserved


class BriefBatch(EventBatch):
    """``brief_rb`` records (serve in the event modes: namespaces freed while their creation was held in
    BPF) by column, as EventBatch, plus ``end``: when each was freed, and ``counted`` (BRIEF_*). ``row(i)``
    is the creation."""

    STRIDE = BRIEF_ROW.size

    def __init__(self, data: bytes) -> None:
        if len(data) % self.STRIDE:
            raise RecordError(f"brief records: {len(data)} bytes is not a multiple of {self.STRIDE}")
        self.data = data
        self._len = len(data) // self.STRIDE

    # Columns are cut when first asked for (serve, under churn, asks for few of them: a copy each), then
    # kept as attributes: (array type, word of the record) of each
    _COLUMNS: ClassVar[dict[str, tuple[str, int]]] = {
        "ts": ("Q", 1), "ns_id": ("Q", 2), "end": ("Q", 10), "kind": ("I", 8), "flag": ("I", 9), "inum": ("I", 10),
        "tgid": ("I", 14), "src": ("I", 15), "counted": ("I", 22)}
    end: array[int]
    counted: array[int]

    def __getattr__(self, name: str) -> array[int]:
        column = self._COLUMNS.get(name)
        if column is None:
            raise AttributeError(name)
        code, word = column
        cache = self.__dict__
        words = cache.get("_words_" + code)
        if words is None:
            words = cache["_words_" + code] = array(code, self.data)
        value = cache[name] = words[word :: self.STRIDE // words.itemsize]
        return value

    def __len__(self) -> int:
        return self._len

    def row(self, i: int) -> Row:
        return BRIEF_ROW.unpack_from(self.data, i * self.STRIDE)[:-3]

    def rows(self) -> list[Row]:
        return [r[:-3] for r in BRIEF_ROW.iter_unpack(self.data)]


def check_rows(rows: list[Row]) -> tuple[list[Row], int]:
    """The well-formed EVENT tuples of a batch (known kind and type flag; only a free may come without
    a type), and how many were not. One pass over the batch when all are well formed."""
    if all(_valid_kind_flag(k, f) for k, f in {(r[3], r[4]) for r in rows}):
        return rows, 0
    good = [r for r in rows if _valid_kind_flag(r[3], r[4])]
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
    names = _type_names({r[1] for r in rows})
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


def decode_tasks(data: bytes) -> list[TaskRecord]:
    if len(data) % TASK_RECORD.size:
        raise RecordError(f"task records: {len(data)} bytes is not a multiple of {TASK_RECORD.size}")
    out = []
    new = tuple.__new__  # TaskRecord(...) without its Python-level __new__
    comms = _COMMS
    for fields in TASK_RECORD.iter_unpack(data):
        raw = fields[12]
        comm = comms.get(raw)
        if comm is None:  # many tasks share a command: decode each once
            if len(comms) > 4096:
                comms.clear()
            comm = comms[raw] = raw.split(b"\0", 1)[0].decode(errors="replace")
        out.append(new(TaskRecord, (fields[0], fields[1], fields[2:12], comm, fields[13], fields[14])))
    return out


FILE_RECORD = struct.Struct("<IIIIII")  # struct file_record, 24 bytes
FILE_KINDS = {1: "nsfs", 2: "socket"}


class FileRecord(NamedTuple):
    tgid: int
    fd: int
    kind: str  # "nsfs" | "socket"
    type: str
    inum: int
    owner_inum: int = 0


def decode_files(data: bytes) -> list[FileRecord]:
    if len(data) % FILE_RECORD.size:
        raise RecordError(f"file records: {len(data)} bytes is not a multiple of {FILE_RECORD.size}")
    rows = list(FILE_RECORD.iter_unpack(data))
    names = _type_names({r[3] for r in rows})
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
