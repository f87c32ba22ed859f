"""listns(2) (Linux 6.19+, x86-64 syscall 470): the kernel's own list of *active* namespaces.

ABI (include/uapi/linux/nsfs.h, kernel/nstree.c)::

    struct ns_id_req {          /* NS_ID_REQ_SIZE_VER0 = 32 */
        __u32 size;             /* sizeof(struct ns_id_req); < 32 is EINVAL, > PAGE_SIZE is E2BIG */
        __u32 spare;            /* must be 0, else EINVAL */
        __u64 ns_id;            /* cursor: only ids greater than this are returned (0 = from the start) */
        __u32 ns_type;          /* CLONE_NEW* mask, 0 = every type; unknown bits are EOPNOTSUPP */
        __u32 spare2;
        __u64 user_ns_id;       /* 0 = all; else only namespaces owned by that user namespace
                                   (LISTNS_CURRENT_USER = ~0: the caller's) */
    };
    ssize_t listns(const struct ns_id_req *req, u64 *ns_ids, size_t nr_ns_ids, unsigned int flags);

It writes namespace ids only (ascending: the unified or per-type tree in id order), returns how many,
``flags`` must be 0 (EINVAL), ``nr_ns_ids`` at most 1,000,000 (EOVERFLOW). The type of an id is not
returned, so :func:`listns_typed` asks once per type (a single-bit ``ns_type`` walks that type's own tree).

What it leaves out (``legitimize_ns()`` in kernel/nstree.c):

- every namespace that is not *active*: ``ns_get_unless_inactive()`` fails when ``__ns_ref_active`` is 0.
  Active references are taken by a task's nsproxy (mnt, uts, ipc, net, cgroup, time,
  pid_for_children, time_for_children: ``nsproxy_ns_active_get()``, dropped at exit, so a zombie's are
  gone), by a task's ``real_cred->user_ns`` (``get_cred_namespaces()``, dropped only when the task is
  reaped), by an nsfs inode (``nsfs_init_inode()``/``nsfs_evict()``: an open nsfs fd or an nsfs bind
  mount), and by an active namespace on its owning user namespace, up the chain (``__ns_ref_active_get()``
  in kernel/nscommon.c). The initial namespaces (ids 1-8, ``NS_LAST_INIT_ID``) are always active.
  So a namespace kept alive only by a socket, a ``struct file``'s credentials, a child pid namespace's
  ``parent`` pointer, an inactive owned namespace or a zombie's pid is in the kernel's tree but not listed.
- namespaces the caller may not see (``may_list_ns()``): with CAP_SYS_ADMIN over the namespace's owner
  (which CAP_SYS_ADMIN in the initial user namespace gives for every namespace) everything is visible;
  otherwise only the caller's own namespaces and user namespaces it has CAP_SYS_ADMIN in.

Paging: passing the last id seen as ``ns_id`` continues after it, but the kernel looks up the first id
after the cursor and answers ENOENT when there is none *or when that one is inactive*
(``lookup_ns_id_at()`` then ``ns_get_unless_inactive()``). An ENOENT after a cursor is therefore
ambiguous; :func:`listns` then lists again from the start with a buffer twice as large, which always
ends (one call that returns fewer ids than its buffer holds is complete).
"""

from __future__ import annotations

import ctypes
import errno
import os

from ..model.nstypes import NS_TYPES
from .arch import SYS_LISTNS

NS_ID_REQ_SIZE_VER0 = 32
LISTNS_CURRENT_USER = 0xFFFFFFFFFFFFFFFF
MAX_IDS = 1_000_000  # the kernel's maxcount: more is EOVERFLOW
NS_LAST_INIT_ID = 8  # enum init_ns_id: IPC 1, UTS 2, USER 3, PID 4, CGROUP 5, TIME 6, NET 7, MNT 8
ALL_TYPES = 0
for _t in NS_TYPES.values():
    ALL_TYPES |= _t.flag

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_HINTS = {
    errno.ENOSYS: "this kernel has no listns(2) (added in Linux 6.19)",
    errno.EPERM: "refused (a seccomp filter or LSM policy; listns itself filters by capability, it does not fail)",
    errno.EINVAL: "invalid request (flags, spare fields or size), or user_ns_id names no active user namespace",
    errno.EOPNOTSUPP: "ns_type has bits that are not CLONE_NEW* namespace types",
    errno.EOVERFLOW: f"more than {MAX_IDS} ids requested at once",
}


class ListnsError(OSError):
    """listns(2) failed: ``errno`` is the positive error number; str() says what it means."""

    def __init__(self, err: int, detail: str = "") -> None:
        self.detail = detail
        super().__init__(err, f"listns: {errno.errorcode.get(err, str(err))} ({os.strerror(err)})")

    def __str__(self) -> str:
        text = f"listns: {errno.errorcode.get(self.errno or 0, str(self.errno))} ({os.strerror(self.errno or 0)})"
        hint = _HINTS.get(self.errno or 0)
        if hint:
            text += f"; {hint}"
        if self.detail:
            text += f" [{self.detail}]"
        return text


class NsIdReq(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("spare", ctypes.c_uint32),
        ("ns_id", ctypes.c_uint64),
        ("ns_type", ctypes.c_uint32),
        ("spare2", ctypes.c_uint32),
        ("user_ns_id", ctypes.c_uint64),
    ]


assert ctypes.sizeof(NsIdReq) == NS_ID_REQ_SIZE_VER0


def listns_call(after: int = 0, ns_type: int = 0, count: int = 1024, user_ns_id: int = 0) -> list[int]:
    """One listns(2) call: up to ``count`` active namespace ids greater than ``after``."""
    req = NsIdReq(size=NS_ID_REQ_SIZE_VER0, spare=0, ns_id=after, ns_type=ns_type, spare2=0,
                  user_ns_id=user_ns_id)
    buf = (ctypes.c_uint64 * count)()
    ret = _libc.syscall(ctypes.c_long(SYS_LISTNS), ctypes.byref(req), buf, ctypes.c_size_t(count),
                        ctypes.c_uint(0))
    if ret < 0:
        raise ListnsError(ctypes.get_errno(), f"ns_id={after} ns_type={ns_type:#x} nr_ns_ids={count}")
    return list(buf[:ret])


def listns(ns_type: int = 0, user_ns_id: int = 0, page: int = 1024) -> list[int]:
    """Every active namespace id the caller may see (of the CLONE_NEW* types in ``ns_type``; 0 = all).

    Pages through the kernel's list by the last id seen; see the module notes for why an ENOENT after
    a cursor restarts with a larger buffer.
    """
    size = max(1, min(page, MAX_IDS))
    while True:
        ids: list[int] = []
        after = 0
        while True:
            try:
                got = listns_call(after, ns_type, size, user_ns_id)
            except ListnsError as exc:
                if exc.errno != errno.ENOENT or after == 0:
                    raise
                break  # end of the list, or an inactive namespace right after the cursor: ambiguous
            ids.extend(got)
            if len(got) < size:
                return ids
            after = got[-1]
        if size >= MAX_IDS:
            raise ListnsError(errno.ENOENT, f"paging kept failing after id {after} with {size} ids per call")
        size = min(size * 2, MAX_IDS)


FILEID_NSFS = 0xF1  # include/linux/exportfs.h: struct nsfs_file_handle {u64 ns_id; u32 ns_type; u32 ns_inum}
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]


class _NsfsHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint32), ("handle_type", ctypes.c_int32),
                ("ns_id", ctypes.c_uint64), ("ns_type", ctypes.c_uint32), ("ns_inum", ctypes.c_uint32)]


def open_ns_by_id(ns_id: int, mount_fd: int) -> int:
    """An nsfs fd for namespace ``ns_id`` (open_by_handle_at with an nsfs file handle, 6.18+).

    ``mount_fd`` is any open nsfs file (it names the nsfs mount). Type and inode number are left 0
    (``nsfs_fh_to_dentry()`` accepts both unset). The kernel refuses (ESTALE) a namespace that is gone or
    inactive; opening an active one does not change what listns() reports.
    """
    h = _NsfsHandle(handle_bytes=16, handle_type=FILEID_NSFS, ns_id=ns_id, ns_type=0, ns_inum=0)
    fd = _libc.open_by_handle_at(mount_fd, ctypes.byref(h), os.O_RDONLY | os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"open_by_handle_at(nsfs ns_id {ns_id}): {os.strerror(err)}")
    return int(fd)


def listns_typed(user_ns_id: int = 0, page: int = 1024) -> list[tuple[int, str]]:
    """(ns_id, type name) of every active namespace the caller may see, one listing per type."""
    out: list[tuple[int, str]] = []
    for t in NS_TYPES.values():
        out.extend((ns_id, t.name) for ns_id in listns(t.flag, user_ns_id, page))
    return sorted(out)
