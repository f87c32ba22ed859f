// SPDX-License-Identifier: GPL-2.0
/*
 * nstrack's event programs: namespace creations and frees, into the `events` ring buffer.
 *
 * Program sets (Python turns autoload on for exactly one set, chosen by `nstrack doctor`'s probing):
 *   fentry mode:     tree_add/tree_remove (6.18+ generic) or the per-type create_* / destroy_* programs
 *                    (serve sets pair_frees: creations wait in `young`, pairs go to brief_rb)
 *   kprobe mode:     the kp_* programs on the same functions
 *   tracepoint mode: tp_fork, tp_unshare_enter/exit (creations); frees come from rescans (scan.bpf.c)
 * The Tracker (nstrack/kernel/tracker.py) loads them; the scan iterators are in scan.bpf.c.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "nstrack.h"
#include "ns_helpers.h"

/*
 * Set before load by serve in the event modes: a creation is held in `young` (by inode number, unique
 * among live namespaces) instead of going to the ring; its free, when it comes first, turns the two into
 * one ns_brief record (brief_rb, no wake-up). Python takes the creations still held after a while
 * (deleting each: whoever deletes the entry owns it). Under churn most namespaces live for microseconds:
 * one record instead of two, and no pairing in Python.
 */
const volatile __u32 pair_frees = 0;

/*
 * With pair_frees Python reads the rings every second, and sooner when BPF wakes it: no wake-up (an
 * irq_work) per record, but a forced one for each record while a ring holds wake_bytes or more unread
 * (set before load: a quarter of the ring), so that a burst is drained before the ring fills.
 */
const volatile __u64 wake_bytes = 0;

static __always_inline __u64 ring_wakeup(void *ring)
{
	if (!pair_frees)
		return 0;
	if (wake_bytes && bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) >= wake_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

__u64 lost_events = 0;   /* events the `events` ring buffer had no room for (and pairs brief_rb had not) */
/*
 * Creations held in `young`, and of them those taken back by their free, by the slot of their creation
 * time (bits YOUNG_SLOT_SHIFT.. of its boot-time ns, modulo YOUNG_SLOTS): Python lists `young` (a walk of
 * all its buckets) only once a slot that still holds creations can hold one due for taking back.
 */
#define YOUNG_SLOTS 64
#define YOUNG_SLOT_SHIFT 28 /* 2^28 ns: 0.27 s */
#define YOUNG_SLOT(ts) (((ts) >> YOUNG_SLOT_SHIFT) & (YOUNG_SLOTS - 1))
__u64 young_in[YOUNG_SLOTS] = {};
__u64 young_paired[YOUNG_SLOTS] = {};

/* Referenced so that the records' layouts land in the object's BTF (tests/unit/test_records.py). */
struct ns_event *unused_ns_event __attribute__((unused));
struct ns_brief *unused_ns_brief __attribute__((unused));
struct brief_stats *unused_brief_stats __attribute__((unused));
struct comm_key *unused_comm_key __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* With pair_frees: creations waiting for their free, by inode number (Python sizes both). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct ns_event);
} young SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} brief_rb SEC(".maps");

/*
 * With pair_frees, the namespaces paired here are counted here (Python reads the totals once a second
 * instead of counting each record): per type, and per creator command and type (at most COMM_MAX pairs
 * of them; a record whose command found no room says so in ns_brief.counted, and Python counts it).
 */
struct brief_stats brief_stats[NSTRACK_TYPES] = {};

#define COMM_MAX 256
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, COMM_MAX);
	__type(key, struct comm_key);
	__type(value, __u64);
} brief_comms SEC(".maps");

/* Namespaces of a task as it entered unshare(2), keyed by pid_tgid. */
struct ns_inums {
	__u32 inum[NSTRACK_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct ns_inums);
} unshare_old SEC(".maps");

/* First argument of a create function at kprobe entry, for its kretprobe. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} kp_args SEC(".maps");

/* ---------------------------------------------------------------------------------------------- */

/* Index of a CLONE_NEW* flag in nstrack/model/nstypes.py's order, or -1. */
static __always_inline int type_index(__u32 flag)
{
	switch (flag) {
	case CLONE_NEWNET: return 0;
	case CLONE_NEWNS: return 1;
	case CLONE_NEWUTS: return 2;
	case CLONE_NEWIPC: return 3;
	case CLONE_NEWPID: return 4;
	case CLONE_NEWUSER: return 5;
	case CLONE_NEWCGROUP: return 6;
	case CLONE_NEWTIME: return 7;
	}
	return -1;
}

/* Upper bounds of serve's lifetime histogram (nstrack/service.py LIFETIME_BUCKETS), in ns. */
static const __u64 life_bounds[NSTRACK_LIFE_BOUNDS] = {
	1000000000ULL, 10000000000ULL, 60000000000ULL, 300000000000ULL,
	1800000000000ULL, 3600000000000ULL, 21600000000000ULL, 86400000000000ULL,
};

/*
 * Count a paired namespace (type index t, made at `made`, freed at `end`, by `tgid`'s `comm`); returns
 * NSTRACK_BRIEF_COMM if its creator is counted (or it has none), else 0.
 */
static __always_inline __u32 count_pair(int t, __u64 made, __u64 end, __u32 tgid, const char *comm)
{
	struct brief_stats *st;
	struct comm_key k;
	__u64 life = end > made ? end - made : 0, one = 1, *n;
	__u32 b = NSTRACK_LIFE_BOUNDS;
	int i;

	if (t < 0 || t >= NSTRACK_TYPES)
		return 0;
	st = &brief_stats[t];
	for (i = NSTRACK_LIFE_BOUNDS - 1; i >= 0; i--)
		if (life <= life_bounds[i])
			b = i;
	__sync_fetch_and_add(&st->count, 1);
	__sync_fetch_and_add(&st->life_sum_ns, life);
	if (b <= NSTRACK_LIFE_BOUNDS)
		__sync_fetch_and_add(&st->life[b], 1);
	if (!tgid)
		return NSTRACK_BRIEF_COMM; /* the kernel's own: no creator to count */
	__builtin_memcpy(k.comm, comm, sizeof(k.comm));
	k.type = t;
	k.reserved = 0;
	n = bpf_map_lookup_elem(&brief_comms, &k);
	if (!n) {
		if (bpf_map_update_elem(&brief_comms, &k, &one, BPF_NOEXIST) == 0)
			return NSTRACK_BRIEF_COMM;
		n = bpf_map_lookup_elem(&brief_comms, &k); /* another CPU added it meanwhile, or no room */
		if (!n)
			return 0;
	}
	__sync_fetch_and_add(n, 1);
	return NSTRACK_BRIEF_COMM;
}

/*
 * With pair_frees, a free whose creation is still held in `young`: counted, one ns_brief record, and 1.
 * Else 0 (the free goes to the ring as usual). The entry is copied before it is deleted, and only a
 * successful delete owns it: Python may have taken it meanwhile (then its free must reach the ring,
 * after the creation).
 */
static __always_inline int pair_free(__u32 inum)
{
	struct ns_event *c;
	struct ns_brief *b;
	__u64 end;

	if (!pair_frees)
		return 0;
	c = bpf_map_lookup_elem(&young, &inum);
	if (!c)
		return 0;
	end = bpf_ktime_get_boot_ns();
	b = bpf_ringbuf_reserve(&brief_rb, sizeof(*b), 0);
	if (!b) {
		struct ns_event ev;

		__builtin_memcpy(&ev, c, sizeof(ev)); /* before the delete: the entry may be reused after it */
		if (bpf_map_delete_elem(&young, &inum))
			return 0;
		/* counted, but its record is lost: counted as lost (Python rescans) */
		count_pair(type_index(ev.ns_type), ev.ts_ns, end, ev.tgid, ev.comm);
		__sync_fetch_and_add(&young_paired[YOUNG_SLOT(ev.ts_ns)], 1);
		__sync_fetch_and_add(&lost_events, 1);
		return 1;
	}
	__builtin_memcpy(&b->ev, c, sizeof(b->ev));
	b->end_ns = end;
	b->reserved = 0;
	if (bpf_map_delete_elem(&young, &inum)) {
		bpf_ringbuf_discard(b, BPF_RB_NO_WAKEUP);
		return 0;
	}
	b->counted = count_pair(type_index(b->ev.ns_type), b->ev.ts_ns, end, b->ev.tgid, b->ev.comm);
	__sync_fetch_and_add(&young_paired[YOUNG_SLOT(b->ev.ts_ns)], 1);
	bpf_ringbuf_submit(b, ring_wakeup(&brief_rb));
	return 1;
}

/*
 * Built on the stack, then into the ring, or held in `young` (pair_frees: creations). owner_known: the
 * caller read a creation's owner (and a pid namespace's parent inode number) through BTF-typed pointers
 * (fexit programs, where the type is static); else owner_of reads them.
 */
static __always_inline void emit_owned(struct ns_common *ns, __u32 type, __u32 kind, __u32 source, const int direct,
				       struct user_namespace *owner, __u32 parent, const int owner_known)
{
	struct ns_event e;
	__u64 id;

	if (!ns)
		return;
	e.inum = RD(direct, ns, inum);
	if (kind == NSTRACK_EV_DESTROYED && pair_free(e.inum))
		return;
	e.ts_ns = bpf_ktime_get_boot_ns();
	e.ns_id = ns_id_of(ns, direct);
	e.kind = kind;
	e.ns_type = type;
	e.source = source;
	if (kind == NSTRACK_EV_DESTROYED) {
		/* who frees a namespace (often a kworker) and its owner are not reported: not read */
		e.cgroup_id = 0;
		e.owner_inum = e.parent_inum = e.pid = e.tgid = 0;
		__builtin_memset(e.comm, 0, sizeof(e.comm));
	} else {
		e.cgroup_id = bpf_get_current_cgroup_id();
		if (owner_known) {
			e.parent_inum = parent;
			e.owner_inum = owner ? owner->ns.inum : 0;
		} else {
			owner = owner_of(ns, type, &e.parent_inum);
			e.owner_inum = owner ? BPF_CORE_READ(owner, ns.inum) : 0;
		}
		id = bpf_get_current_pid_tgid();
		e.pid = (__u32)id;
		e.tgid = id >> 32;
		/* zeroed first: the helper may copy only up to the NUL and leave the rest as the stack had it
		 * (seen on 6.1: brief_comms counted one command under many keys) */
		__builtin_memset(e.comm, 0, sizeof(e.comm));
		bpf_get_current_comm(e.comm, sizeof(e.comm));
		/* pair_frees: held for its free; a full `young` (or a type pairing cannot count) sends it to
		 * the ring (no pairing, that is all) */
		if (pair_frees && type_index(type) >= 0 && bpf_map_update_elem(&young, &e.inum, &e, BPF_NOEXIST) == 0) {
			__sync_fetch_and_add(&young_in[YOUNG_SLOT(e.ts_ns)], 1);
			return;
		}
	}
	if (bpf_ringbuf_output(&events, &e, sizeof(e), ring_wakeup(&events)))
		__sync_fetch_and_add(&lost_events, 1);
}

static __always_inline void emit(struct ns_common *ns, __u32 type, __u32 kind, __u32 source, const int direct)
{
	emit_owned(ns, type, kind, source, direct, NULL, 0, 0);
}

/* ------------------------------------ fentry mode, 6.18+ ------------------------------------- */

SEC("fentry/__ns_tree_add_raw")
int BPF_PROG(tree_add, struct ns_common *ns)
{
	emit(ns, type_of(ns, 1), NSTRACK_EV_CREATED, NSTRACK_SRC_TREE_ADD, 1);
	return 0;
}

SEC("fentry/__ns_tree_remove")
int BPF_PROG(tree_remove, struct ns_common *ns)
{
	emit(ns, type_of(ns, 1), NSTRACK_EV_DESTROYED, NSTRACK_SRC_TREE_REMOVE, 1);
	return 0;
}

/* --------------------------- fentry mode, per-type functions (< 6.18) ------------------------ */

/*
 * create_new_namespaces() (kernel/nsproxy.c) calls all seven copy functions for every unshare or clone
 * that makes a namespace (setns calls it with flags 0). Static, but with two callers it is not inlined
 * on any kernel of the matrix: one program there instead of seven on the copy functions. The nsproxy it
 * returns holds a new namespace where it differs from the task's: unshare passes current, clone the
 * child, which still holds its parent's nsproxy. A user namespace is made elsewhere (create_user_ns).
 */
#define NEW_NS(FLAG, FIELD)                                                                  \
	if ((flags & FLAG) && ret->FIELD != old->FIELD && ret->FIELD)                        \
		emit_owned(&ret->FIELD->ns, FLAG, NSTRACK_EV_CREATED, NSTRACK_SRC_COPY, 1,    \
			   ret->FIELD->user_ns, 0, 1)

SEC("fexit/create_new_namespaces")
int BPF_PROG(create_create_new_namespaces, unsigned long flags, struct task_struct *tsk, void *user_ns,
	     void *new_fs, struct nsproxy *ret)
{
	struct nsproxy *old;

	if (!(flags & CLONE_NEW_ANY) || IS_ERR_OR_NULL(ret) || !tsk)
		return 0;
	old = tsk->nsproxy;
	if (!old)
		return 0;
	NEW_NS(CLONE_NEWNS, mnt_ns);
	NEW_NS(CLONE_NEWUTS, uts_ns);
	NEW_NS(CLONE_NEWIPC, ipc_ns);
	if ((flags & CLONE_NEWPID) && ret->pid_ns_for_children != old->pid_ns_for_children && ret->pid_ns_for_children) {
		struct pid_namespace *p = ret->pid_ns_for_children, *pp = p->parent;

		emit_owned(&p->ns, CLONE_NEWPID, NSTRACK_EV_CREATED, NSTRACK_SRC_COPY, 1, p->user_ns,
			   pp ? pp->ns.inum : 0, 1);
	}
	NEW_NS(CLONE_NEWCGROUP, cgroup_ns);
	NEW_NS(CLONE_NEWNET, net_ns);
	if (bpf_core_field_exists(ret->time_ns_for_children))
		NEW_NS(CLONE_NEWTIME, time_ns_for_children);
	return 0;
}

#define FEXIT_COPY(fn, TYPE, T)                                                              \
SEC("fexit/" #fn)                                                                            \
int BPF_PROG(create_##fn, unsigned long flags, void *a1, void *a2, T *ret)                   \
{                                                                                            \
	if ((flags & TYPE) && !IS_ERR_OR_NULL(ret))                                          \
		emit(&ret->ns, TYPE, NSTRACK_EV_CREATED, NSTRACK_SRC_COPY, 1);                \
	return 0;                                                                            \
}

FEXIT_COPY(copy_net_ns, CLONE_NEWNET, struct net)
FEXIT_COPY(copy_utsname, CLONE_NEWUTS, struct uts_namespace)
FEXIT_COPY(copy_ipcs, CLONE_NEWIPC, struct ipc_namespace)
FEXIT_COPY(copy_pid_ns, CLONE_NEWPID, struct pid_namespace)
FEXIT_COPY(copy_cgroup_ns, CLONE_NEWCGROUP, struct cgroup_namespace)
FEXIT_COPY(copy_time_ns, CLONE_NEWTIME, struct time_namespace)

SEC("fexit/copy_mnt_ns")
int BPF_PROG(create_copy_mnt_ns, unsigned long flags, void *ns, void *user_ns, void *new_fs,
	     struct mnt_namespace *ret)
{
	if ((flags & CLONE_NEWNS) && !IS_ERR_OR_NULL(ret))
		emit(&ret->ns, CLONE_NEWNS, NSTRACK_EV_CREATED, NSTRACK_SRC_COPY, 1);
	return 0;
}

SEC("fexit/create_user_ns")
int BPF_PROG(create_create_user_ns, struct cred *new, int ret)
{
	if (ret == 0) {
		struct user_namespace *u = new->user_ns;

		if (u)
			emit_owned(&u->ns, CLONE_NEWUSER, NSTRACK_EV_CREATED, NSTRACK_SRC_COPY, 1, u->parent, 0, 1);
	}
	return 0;
}

/* DIRECT: the argument is a T in BTF on every kernel (not so 5.10's free_uts_ns and free_time_ns: a kref) */
#define FENTRY_FREE(fn, TYPE, T, DIRECT)                                                     \
SEC("fentry/" #fn)                                                                           \
int BPF_PROG(destroy_##fn, T *ns)                                                             \
{                                                                                            \
	if (ns)                                                                              \
		emit(&ns->ns, TYPE, NSTRACK_EV_DESTROYED, NSTRACK_SRC_FREE, DIRECT);          \
	return 0;                                                                            \
}

FENTRY_FREE(__put_net, CLONE_NEWNET, struct net, 1)
FENTRY_FREE(free_uts_ns, CLONE_NEWUTS, struct uts_namespace, 0) /* 5.10 passes &ns->kref: at offset 0 */
FENTRY_FREE(shm_exit_ns, CLONE_NEWIPC, struct ipc_namespace, 1)     /* called once from free_ipc_ns */
FENTRY_FREE(mq_clear_sbinfo, CLONE_NEWIPC, struct ipc_namespace, 1) /* called at the last put */
FENTRY_FREE(free_mnt_ns, CLONE_NEWNS, struct mnt_namespace, 1)
FENTRY_FREE(__put_user_ns, CLONE_NEWUSER, struct user_namespace, 1)
FENTRY_FREE(free_cgroup_ns, CLONE_NEWCGROUP, struct cgroup_namespace, 1)
FENTRY_FREE(free_time_ns, CLONE_NEWTIME, struct time_namespace, 0) /* 5.10: a kref, at offset 0 */

/*
 * Before 6.18 the per-type free functions are often inlined into their same-file callers (on 6.1,
 * __put_net is not called as a function when an nsfs fd drops the last reference), so their hooks
 * miss frees. Every namespace returns its inode number through proc_free_inum (fs/proc, never inlined
 * into namespace code): one hook for every type. Proc entries free their inums here too; Python
 * ignores inums that belong to no live namespace.
 */
static __always_inline void emit_inum_free(unsigned int inum)
{
	struct ns_event *e;

	if (pair_free(inum))
		return;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&lost_events, 1);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->kind = NSTRACK_EV_DESTROYED;
	e->inum = inum;
	e->source = NSTRACK_SRC_FREE_INUM;
	bpf_ringbuf_submit(e, ring_wakeup(&events));
}

SEC("fentry/proc_free_inum")
int BPF_PROG(destroy_proc_free_inum, unsigned int inum)
{
	emit_inum_free(inum);
	return 0;
}

SEC("kprobe/proc_free_inum")
int BPF_KPROBE(kp_destroy_proc_free_inum, unsigned int inum)
{
	emit_inum_free(inum);
	return 0;
}

SEC("fentry/delayed_free_pidns")
int BPF_PROG(destroy_delayed_free_pidns, struct callback_head *p)
{
	struct pid_namespace *ns = (void *)p - bpf_core_field_offset(struct pid_namespace, rcu);

	emit(&ns->ns, CLONE_NEWPID, NSTRACK_EV_DESTROYED, NSTRACK_SRC_FREE, 0);
	return 0;
}

SEC("fentry/free_user_ns")
int BPF_PROG(destroy_free_user_ns, struct work_struct *work)
{
	struct user_namespace *ns = (void *)work - bpf_core_field_offset(struct user_namespace, work);

	emit(&ns->ns, CLONE_NEWUSER, NSTRACK_EV_DESTROYED, NSTRACK_SRC_FREE, 0);
	return 0;
}

/* ------------------------------------------ kprobe mode ------------------------------------------ */

SEC("kprobe/__ns_tree_add_raw")
int BPF_KPROBE(kp_tree_add, struct ns_common *ns)
{
	emit(ns, type_of(ns, 0), NSTRACK_EV_CREATED, NSTRACK_SRC_TREE_ADD, 0);
	return 0;
}

SEC("kprobe/__ns_tree_remove")
int BPF_KPROBE(kp_tree_remove, struct ns_common *ns)
{
	emit(ns, type_of(ns, 0), NSTRACK_EV_DESTROYED, NSTRACK_SRC_TREE_REMOVE, 0);
	return 0;
}

/* Attached by Python to create_user_ns (its kretprobe needs the cred): remembers the first argument. */
SEC("kprobe")
int BPF_KPROBE(kp_create_entry, unsigned long arg1)
{
	__u64 id = bpf_get_current_pid_tgid();

	bpf_map_update_elem(&kp_args, &id, &arg1, BPF_ANY);
	return 0;
}

static __always_inline int kp_arg1(__u64 *arg1)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 *v = bpf_map_lookup_elem(&kp_args, &id);

	if (!v)
		return -1;
	*arg1 = *v;
	bpf_map_delete_elem(&kp_args, &id);
	return 0;
}

/*
 * create_new_namespaces() calls every copy function for any unshare, clone or setns that makes a
 * namespace; each returns the namespace the task has (referenced again) unless its flag asked for a new
 * one. The caller's nsproxy is the one the copies start from (unshare and setns: current's; clone: the
 * child's, still the parent's pointer), so a result that differs from it is new. No entry probe is needed
 * for the flags: half the probes on this path (each a trap in kprobe mode).
 */
#define KRET_COPY(fn, TYPE, T, FIELD)                                                        \
SEC("kretprobe/" #fn)                                                                        \
int BPF_KRETPROBE(kp_create_##fn, T *ret)                                                    \
{                                                                                            \
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();             \
                                                                                             \
	if (!IS_ERR_OR_NULL(ret) && (void *)ret != (void *)BPF_CORE_READ(task, nsproxy, FIELD)) \
		emit(&ret->ns, TYPE, NSTRACK_EV_CREATED, NSTRACK_SRC_COPY, 0);                \
	return 0;                                                                            \
}

KRET_COPY(copy_net_ns, CLONE_NEWNET, struct net, net_ns)
KRET_COPY(copy_utsname, CLONE_NEWUTS, struct uts_namespace, uts_ns)
KRET_COPY(copy_ipcs, CLONE_NEWIPC, struct ipc_namespace, ipc_ns)
KRET_COPY(copy_pid_ns, CLONE_NEWPID, struct pid_namespace, pid_ns_for_children)
KRET_COPY(copy_cgroup_ns, CLONE_NEWCGROUP, struct cgroup_namespace, cgroup_ns)
KRET_COPY(copy_time_ns, CLONE_NEWTIME, struct time_namespace, time_ns_for_children)
KRET_COPY(copy_mnt_ns, CLONE_NEWNS, struct mnt_namespace, mnt_ns)

/*
 * One kretprobe on create_new_namespaces() instead of seven on the copy functions (see the fexit
 * program): the result and current's nsproxy are each read in one copy (bpf_probe_read_kernel is the
 * cost here), then compared field by field at their CO-RE offsets.
 */
struct nsproxy_words {
	__u64 w[16];
};

#define NSP_AT(c, FIELD) (*(__u64 *)((void *)(c).w + bpf_core_field_offset(struct nsproxy, FIELD)))
#define KP_NEW_NS(FLAG, FIELD, T)                                                            \
	if (NSP_AT(now, FIELD) != NSP_AT(was, FIELD) && NSP_AT(now, FIELD))                  \
		emit((void *)NSP_AT(now, FIELD) + bpf_core_field_offset(T, ns), FLAG,        \
		     NSTRACK_EV_CREATED, NSTRACK_SRC_COPY, 0)

SEC("kretprobe/create_new_namespaces")
int BPF_KRETPROBE(kp_create_create_new_namespaces, struct nsproxy *ret)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct nsproxy_words now = {}, was = {};
	struct nsproxy *old;
	__u32 size = bpf_core_type_size(struct nsproxy);

	if (IS_ERR_OR_NULL(ret) || size > sizeof(now))
		return 0;
	old = BPF_CORE_READ(task, nsproxy);
	if (!old || bpf_probe_read_kernel(&now, size, ret) ||
	    bpf_probe_read_kernel(&was, size, old))
		return 0;
	KP_NEW_NS(CLONE_NEWNS, mnt_ns, struct mnt_namespace);
	KP_NEW_NS(CLONE_NEWUTS, uts_ns, struct uts_namespace);
	KP_NEW_NS(CLONE_NEWIPC, ipc_ns, struct ipc_namespace);
	KP_NEW_NS(CLONE_NEWPID, pid_ns_for_children, struct pid_namespace);
	KP_NEW_NS(CLONE_NEWCGROUP, cgroup_ns, struct cgroup_namespace);
	KP_NEW_NS(CLONE_NEWNET, net_ns, struct net);
	if (bpf_core_field_exists(struct nsproxy, time_ns_for_children))
		KP_NEW_NS(CLONE_NEWTIME, time_ns_for_children, struct time_namespace);
	return 0;
}

SEC("kretprobe/create_user_ns")
int BPF_KRETPROBE(kp_create_create_user_ns, int ret)
{
	__u64 cred = 0; /* initialised: the verifier cannot follow kp_arg1's failure path otherwise */

	if (kp_arg1(&cred) == 0 && ret == 0) {
		struct user_namespace *u = BPF_CORE_READ((struct cred *)cred, user_ns);

		if (u)
			emit(&u->ns, CLONE_NEWUSER, NSTRACK_EV_CREATED, NSTRACK_SRC_COPY, 0);
	}
	return 0;
}

#define KP_FREE(fn, TYPE, T)                                                                 \
SEC("kprobe/" #fn)                                                                           \
int BPF_KPROBE(kp_destroy_##fn, T *ns)                                                       \
{                                                                                            \
	if (ns)                                                                              \
		emit(&ns->ns, TYPE, NSTRACK_EV_DESTROYED, NSTRACK_SRC_FREE, 0);               \
	return 0;                                                                            \
}

KP_FREE(__put_net, CLONE_NEWNET, struct net)
KP_FREE(free_uts_ns, CLONE_NEWUTS, struct uts_namespace)
KP_FREE(shm_exit_ns, CLONE_NEWIPC, struct ipc_namespace)
KP_FREE(mq_clear_sbinfo, CLONE_NEWIPC, struct ipc_namespace)
KP_FREE(free_mnt_ns, CLONE_NEWNS, struct mnt_namespace)
KP_FREE(__put_user_ns, CLONE_NEWUSER, struct user_namespace)
KP_FREE(free_cgroup_ns, CLONE_NEWCGROUP, struct cgroup_namespace)
KP_FREE(free_time_ns, CLONE_NEWTIME, struct time_namespace)

SEC("kprobe/delayed_free_pidns")
int BPF_KPROBE(kp_destroy_delayed_free_pidns, struct callback_head *p)
{
	struct pid_namespace *ns = (void *)p - bpf_core_field_offset(struct pid_namespace, rcu);

	emit(&ns->ns, CLONE_NEWPID, NSTRACK_EV_DESTROYED, NSTRACK_SRC_FREE, 0);
	return 0;
}

SEC("kprobe/free_user_ns")
int BPF_KPROBE(kp_destroy_free_user_ns, struct work_struct *work)
{
	struct user_namespace *ns = (void *)work - bpf_core_field_offset(struct user_namespace, work);

	emit(&ns->ns, CLONE_NEWUSER, NSTRACK_EV_DESTROYED, NSTRACK_SRC_FREE, 0);
	return 0;
}

/* ---------------------------------------- tracepoint mode ---------------------------------------- */

/* Emit `created` for every namespace of `t` that is new compared with `old` (slot by slot). */
static __always_inline void emit_new(struct task_struct *t, __u32 *old, __u32 source)
{
	struct nsproxy *nsp = BPF_CORE_READ(t, nsproxy);
	__u32 now[NSTRACK_SLOTS] = {};

	task_inums(t, now);
	if (now[NSTRACK_SLOT_USER] != old[NSTRACK_SLOT_USER])
		emit((void *)BPF_CORE_READ(t, real_cred, user_ns) + bpf_core_field_offset(struct user_namespace, ns),
		     CLONE_NEWUSER, NSTRACK_EV_CREATED, source, 0);
	if (!nsp)
		return;
	if (now[NSTRACK_SLOT_NET] != old[NSTRACK_SLOT_NET])
		emit((void *)BPF_CORE_READ(nsp, net_ns) + bpf_core_field_offset(struct net, ns),
		     CLONE_NEWNET, NSTRACK_EV_CREATED, source, 0);
	if (now[NSTRACK_SLOT_MNT] != old[NSTRACK_SLOT_MNT])
		emit((void *)BPF_CORE_READ(nsp, mnt_ns) + bpf_core_field_offset(struct mnt_namespace, ns),
		     CLONE_NEWNS, NSTRACK_EV_CREATED, source, 0);
	if (now[NSTRACK_SLOT_UTS] != old[NSTRACK_SLOT_UTS])
		emit((void *)BPF_CORE_READ(nsp, uts_ns) + bpf_core_field_offset(struct uts_namespace, ns),
		     CLONE_NEWUTS, NSTRACK_EV_CREATED, source, 0);
	if (now[NSTRACK_SLOT_IPC] != old[NSTRACK_SLOT_IPC])
		emit((void *)BPF_CORE_READ(nsp, ipc_ns) + bpf_core_field_offset(struct ipc_namespace, ns),
		     CLONE_NEWIPC, NSTRACK_EV_CREATED, source, 0);
	if (now[NSTRACK_SLOT_CGROUP] != old[NSTRACK_SLOT_CGROUP])
		emit((void *)BPF_CORE_READ(nsp, cgroup_ns) + bpf_core_field_offset(struct cgroup_namespace, ns),
		     CLONE_NEWCGROUP, NSTRACK_EV_CREATED, source, 0);
	if (now[NSTRACK_SLOT_PID_FOR_CHILDREN] != old[NSTRACK_SLOT_PID_FOR_CHILDREN])
		emit((void *)BPF_CORE_READ(nsp, pid_ns_for_children) + bpf_core_field_offset(struct pid_namespace, ns),
		     CLONE_NEWPID, NSTRACK_EV_CREATED, source, 0);
	if (now[NSTRACK_SLOT_TIME_FOR_CHILDREN] != old[NSTRACK_SLOT_TIME_FOR_CHILDREN])
		emit((void *)BPF_CORE_READ(nsp, time_ns_for_children) + bpf_core_field_offset(struct time_namespace, ns),
		     CLONE_NEWTIME, NSTRACK_EV_CREATED, source, 0);
}

/* clone/clone3/fork: a child whose namespaces differ from its parent's got new ones. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(tp_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 old[NSTRACK_SLOTS] = {};

	/* The common case (no new namespace) costs two pointer compares. */
	if (BPF_CORE_READ(parent, nsproxy) == BPF_CORE_READ(child, nsproxy) &&
	    BPF_CORE_READ(parent, real_cred, user_ns) == BPF_CORE_READ(child, real_cred, user_ns))
		return 0;
	task_inums(parent, old);
	emit_new(child, old, NSTRACK_SRC_FORK);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_unshare")
int tp_unshare_enter(struct trace_event_raw_sys_enter *ctx)
{
	struct ns_inums old = {};
	__u64 id = bpf_get_current_pid_tgid();

	if (!(ctx->args[0] & CLONE_NEW_ANY))
		return 0;
	/* bpf_get_current_task(), not _btf(): the latter is Linux 5.11+ (5.10 rejects helper #158) */
	task_inums((struct task_struct *)bpf_get_current_task(), old.inum);
	bpf_map_update_elem(&unshare_old, &id, &old, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_unshare")
int tp_unshare_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ns_inums *old = bpf_map_lookup_elem(&unshare_old, &id);

	if (!old)
		return 0;
	if (ctx->ret == 0)
		emit_new((struct task_struct *)bpf_get_current_task(), old->inum, NSTRACK_SRC_UNSHARE);
	bpf_map_delete_elem(&unshare_old, &id);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
