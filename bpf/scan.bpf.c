// SPDX-License-Identifier: GPL-2.0
/*
 * nstrack's scan iterators, loaded by the Scanner (nstrack/kernel/scanner.py) and pinned for the CLI:
 * scan_lists walks every namespace list (6.18+) into scan_rb, scan_digest the same walk writing only its
 * digest, scan_tasks one task_record per task to the iterator's output, scan_files the nsfs fds and
 * sockets of every process. The event programs are in events.bpf.c.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "nstrack.h"
#include "ns_helpers.h"

/* Upper bound of namespaces walked per type by one scan (set before load). */
const volatile __u32 walk_max = 1 << 20;

/* Referenced so that the records' layouts land in the object's BTF (tests/unit/test_records.py). */
struct ns_record *unused_ns_record __attribute__((unused));
struct task_record *unused_task_record __attribute__((unused));
struct file_record *unused_file_record __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23);
} scan_rb SEC(".maps");


struct walk_ctx {
	struct ns_common *start;
	struct ns_common *cur;
	const void *ops;
	__u32 type;
	__u32 done;
	__u32 emit;   /* 0: only the digest (scan_digest) */
	__u64 digest; /* over (type, inum, ns_id) in list order */
	__u64 count;
	__u64 lost;   /* records scan_rb had no room for */
};

/* What scan_lists and scan_digest write to their iterator's output: a walk's digest (equal digests,
 * equal set of namespaces: type, inode number and ns_id in the kernel's list order). */
struct walk_sum {
	__u64 digest;
	__u64 count; /* bit 63: the walk was cut short (walk_max) */
	__u64 lost;  /* records scan_rb had no room for: that scan is incomplete */
};

static __always_inline int has_ns_lists(void)
{
	return bpf_core_field_exists(struct ns_common, ns_list_node) ||
	       bpf_core_field_exists(struct ns_common___tree, ns_tree_node.ns_list_entry);
}

/* The next entry of a namespace's per-type list, as the namespace that contains it (or the list head). */
static __always_inline struct ns_common *list_next(struct ns_common *cur, struct list_head **next)
{
	if (bpf_core_field_exists(struct ns_common, ns_list_node)) {
		*next = BPF_CORE_READ(cur, ns_list_node.next);
		return (void *)*next - bpf_core_field_offset(struct ns_common, ns_list_node);
	}
	*next = BPF_CORE_READ((struct ns_common___tree *)cur, ns_tree_node.ns_list_entry.next);
	return (void *)*next - bpf_core_field_offset(struct ns_common___tree, ns_tree_node.ns_list_entry);
}

/* One namespace of the walk: into the digest, and (emit) a record to scan_rb. */
static __always_inline void walk_visit(struct walk_ctx *w, struct ns_common *ns)
{
	struct user_namespace *owner;
	struct ns_record *r;
	__u64 id = ns_id_of(ns, 0);
	__u32 inum = BPF_CORE_READ(ns, inum);

	w->digest = (w->digest ^ (((__u64)inum << 32 | w->type) + id * 0x9E3779B97F4A7C15ULL)) * 0x100000001b3ULL;
	w->count++;
	if (!w->emit)
		return;
	r = bpf_ringbuf_reserve(&scan_rb, sizeof(*r), 0);
	if (!r) {
		w->lost++;
		return;
	}
	r->ns_id = id;
	r->ns_type = w->type;
	r->inum = inum;
	r->refcount = refcount_of(ns);
	r->flags = 0;
	owner = owner_of(ns, w->type, &r->parent_inum);
	r->owner_inum = owner ? BPF_CORE_READ(owner, ns.inum) : 0;
	r->owner_ns_id = owner ? BPF_CORE_READ(owner, ns.ns_id) : 0;
	bpf_ringbuf_submit(r, 0);
}

static long walk_step(__u64 index, struct walk_ctx *w)
{
	struct list_head *next = NULL;
	struct ns_common *ns = list_next(w->cur, &next);

	if (!next || ns == w->start) {
		w->done = 1;
		return 1;
	}
	w->cur = ns;
	/* The list head lives in a global struct (ns_tree, ns_tree_root), not in a namespace: its "ops" differ. */
	if (BPF_CORE_READ(ns, ops) != w->ops)
		return 0;
	walk_visit(w, ns);
	return 0;
}

static __always_inline void walk_type(struct ns_common *start, __u32 type, __u32 emit, struct walk_sum *sum)
{
	struct walk_ctx w = {};

	if (!start)
		return;
	w.start = start;
	w.cur = start;
	w.ops = BPF_CORE_READ(start, ops);
	w.type = type;
	w.emit = emit;
	walk_visit(&w, start); /* the start namespace itself */
	bpf_loop(walk_max, walk_step, &w, 0);
	if (!w.done) /* walk_max reached: incomplete (and a digest never to trust) */
		sum->count |= 1ULL << 63;
	sum->digest = (sum->digest ^ w.digest) * 0x100000001b3ULL;
	sum->count += w.count;
	sum->lost += w.lost;
}


static __always_inline void walk_all(struct bpf_iter__task *ctx, __u32 emit)
{
	struct task_struct *t = ctx->task;
	struct walk_sum sum = {};
	struct nsproxy *nsp;

	if (!t || ctx->meta->seq_num != 0)
		return;
	nsp = BPF_CORE_READ(t, nsproxy);
	if (!has_ns_lists() || !nsp)
		return;
	walk_type(NS_OF(BPF_CORE_READ(nsp, net_ns), struct net), CLONE_NEWNET, emit, &sum);
	walk_type(NS_OF(BPF_CORE_READ(nsp, mnt_ns), struct mnt_namespace), CLONE_NEWNS, emit, &sum);
	walk_type(NS_OF(BPF_CORE_READ(nsp, uts_ns), struct uts_namespace), CLONE_NEWUTS, emit, &sum);
	walk_type(NS_OF(BPF_CORE_READ(nsp, ipc_ns), struct ipc_namespace), CLONE_NEWIPC, emit, &sum);
	walk_type(NS_OF(BPF_CORE_READ(nsp, pid_ns_for_children), struct pid_namespace), CLONE_NEWPID, emit, &sum);
	walk_type(NS_OF(BPF_CORE_READ(nsp, cgroup_ns), struct cgroup_namespace), CLONE_NEWCGROUP, emit, &sum);
	walk_type(NS_OF(BPF_CORE_READ(nsp, time_ns), struct time_namespace), CLONE_NEWTIME, emit, &sum);
	walk_type(NS_OF(BPF_CORE_READ(t, real_cred, user_ns), struct user_namespace), CLONE_NEWUSER, emit, &sum);
	bpf_seq_write(ctx->meta->seq, &sum, sizeof(sum));
}

/*
 * The 6.18+ namespace-list walk, on the iterator's first task only: records to scan_rb, the walk's
 * digest to the iterator's output. A program of its own because it uses bpf_loop with a callback:
 * kernels before 5.13 reject any object whose func_info lists a callback subprogram ("number of funcs
 * in func_info doesn't match number of subprogs"), even in dead code, so Python loads the object with
 * it first and again without it when refused; before 6.18 it loads but writes nothing (no namespace
 * lists: its output is empty instead of a walk_sum), and Python drops it.
 */
SEC("iter/task")
int scan_lists(struct bpf_iter__task *ctx)
{
	walk_all(ctx, 1);
	return 0;
}

/* The same walk writing only its digest: a rescan that finds the digest of the last scan_lists knows
 * the set of namespaces unchanged without a record (what an idle host's rescans find). */
SEC("iter/task")
int scan_digest(struct bpf_iter__task *ctx)
{
	walk_all(ctx, 0);
	return 0;
}

SEC("iter/task")
int scan_tasks(struct bpf_iter__task *ctx)
{
	struct task_struct *t = ctx->task;
	struct task_record rec = {};

	if (!t)
		return 0;
	rec.pid = t->pid;
	rec.tgid = t->tgid;
	task_inums(t, rec.inum);
	if (rec.pid != rec.tgid) {
		/* a thread: only worth a record when its namespaces differ from its leader's */
		struct task_struct *leader = t->group_leader;

		if (leader && BPF_CORE_READ(leader, nsproxy) == t->nsproxy &&
		    BPF_CORE_READ(leader, real_cred, user_ns) == BPF_CORE_READ(t, real_cred, user_ns))
			return 0;
	}
	{
		struct pid_namespace *active = BPF_CORE_READ(t, thread_pid, numbers[0].ns);
		/* the task's own pid namespace is the one at its pid's deepest level */
		unsigned int level = BPF_CORE_READ(t, thread_pid, level);

		if (level < 32)
			active = BPF_CORE_READ(t, thread_pid, numbers[level & 31].ns);
		rec.inum[NSTRACK_SLOT_PID] = active ? BPF_CORE_READ(active, ns.inum) : 0;
	}
	bpf_probe_read_kernel_str(rec.comm, sizeof(rec.comm), t->comm);
	rec.uid = BPF_CORE_READ(t, real_cred, uid.val);
	{
		/* Tasks sharing an nsproxy hold one reference between them on each of its namespaces: user
		 * space counts distinct nsproxies to explain refcounts. Only an identity, never an address. */
		__u64 p = (__u64)BPF_CORE_READ(t, nsproxy);

		/* nsproxy objects are 8-byte aligned and 72 bytes apart: bits 3..34 tell live ones apart
		 * (the bits above, folded in, only matter when two are 32 GiB apart); never 0 for one */
		__u32 h = (__u32)(p >> 3) ^ (__u32)(p >> 35);

		rec.nsproxy_id = p ? (h ? h : 1) : 0;
	}
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}

#define NSFS_MAGIC 0x6e736673
#define S_IFMT   00170000
#define S_IFSOCK 0140000

/* Every nsfs file and every socket of every process (threads sharing a file table are skipped). */
SEC("iter/task_file")
int scan_files(struct bpf_iter__task_file *ctx)
{
	struct file *f = ctx->file;
	struct task_struct *t = ctx->task;
	struct file_record rec = {};
	struct user_namespace *owner = NULL;
	struct inode *inode;
	__u32 unused;

	if (!f || !t)
		return 0;
	inode = BPF_CORE_READ(f, f_inode);
	if ((BPF_CORE_READ(inode, i_mode) & S_IFMT) == S_IFSOCK) {
		struct socket *sock = BPF_CORE_READ(f, private_data);
		struct net *net = BPF_CORE_READ(sock, sk, __sk_common.skc_net.net);

		if (!net)
			return 0;
		rec.kind = NSTRACK_FILE_SOCKET;
		rec.ns_type = CLONE_NEWNET;
		rec.inum = BPF_CORE_READ(net, ns.inum);
		owner = BPF_CORE_READ(net, user_ns);
	} else if (BPF_CORE_READ(inode, i_sb, s_magic) == NSFS_MAGIC) {
		struct ns_common *ns = BPF_CORE_READ(inode, i_private);

		if (!ns)
			return 0;
		rec.kind = NSTRACK_FILE_NSFS;
		rec.ns_type = any_type_of(ns);
		rec.inum = BPF_CORE_READ(ns, inum);
		owner = owner_of(ns, rec.ns_type, &unused);
	} else {
		return 0;
	}
	rec.owner_inum = owner ? BPF_CORE_READ(owner, ns.inum) : 0;
	rec.tgid = t->tgid;
	rec.fd = ctx->fd;
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
