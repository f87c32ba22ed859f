/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Namespace helpers shared by the event programs (events.bpf.c) and the scan iterators (scan.bpf.c):
 * reading a namespace's id, refcount, owner and type, and a task's namespaces, on every kernel of the
 * matrix (the older layouts are in core_fixes.h).
 */
#ifndef NSTRACK_NS_HELPERS_H
#define NSTRACK_NS_HELPERS_H

#include "core_fixes.h"
#include "nstrack.h"

#define CLONE_NEWTIME   0x00000080
#define CLONE_NEWNS     0x00020000
#define CLONE_NEWCGROUP 0x02000000
#define CLONE_NEWUTS    0x04000000
#define CLONE_NEWIPC    0x08000000
#define CLONE_NEWUSER   0x10000000
#define CLONE_NEWPID    0x20000000
#define CLONE_NEWNET    0x40000000
#define CLONE_NEW_ANY   (CLONE_NEWTIME | CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | \
			 CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET)

#define MAX_ERRNO 4095
#define IS_ERR_OR_NULL(p) (!(p) || (unsigned long)(p) >= (unsigned long)-MAX_ERRNO)

/*
 * A field of a kernel struct. fentry/fexit programs receive BTF-typed pointers, which they may load from
 * (one instruction, CO-RE relocated, faults caught by the kernel); kprobe, tracepoint and pointers
 * computed with container_of arithmetic need bpf_probe_read_kernel (a helper call). `direct` is a
 * compile-time constant at every call, so only one branch is compiled.
 */
#define RD(direct, p, f) ((direct) ? (p)->f : BPF_CORE_READ(p, f))

static __always_inline __u64 ns_id_of(struct ns_common *ns, const int direct)
{
	if (bpf_core_field_exists(ns->ns_id))
		return RD(direct, ns, ns_id);
	return 0;
}

static __always_inline __u32 refcount_of(struct ns_common *ns)
{
	struct ns_common___count *old = (void *)ns;

	if (bpf_core_field_exists(ns->__ns_ref))
		return BPF_CORE_READ(ns, __ns_ref.refs.counter);
	if (bpf_core_field_exists(old->count))
		return BPF_CORE_READ(old, count.refs.counter);
	return 0;
}

#define CONTAINER(ptr, type) ((type *)((void *)(ptr) - bpf_core_field_offset(type, ns)))

static __always_inline struct user_namespace *owner_of(struct ns_common *ns, __u32 type, __u32 *parent)
{
	*parent = 0;
	switch (type) {
	case CLONE_NEWNET:
		return BPF_CORE_READ(CONTAINER(ns, struct net), user_ns);
	case CLONE_NEWUTS:
		return BPF_CORE_READ(CONTAINER(ns, struct uts_namespace), user_ns);
	case CLONE_NEWIPC:
		return BPF_CORE_READ(CONTAINER(ns, struct ipc_namespace), user_ns);
	case CLONE_NEWNS:
		return BPF_CORE_READ(CONTAINER(ns, struct mnt_namespace), user_ns);
	case CLONE_NEWCGROUP:
		return BPF_CORE_READ(CONTAINER(ns, struct cgroup_namespace), user_ns);
	case CLONE_NEWTIME:
		return BPF_CORE_READ(CONTAINER(ns, struct time_namespace), user_ns);
	case CLONE_NEWPID: {
		struct pid_namespace *p = CONTAINER(ns, struct pid_namespace);
		struct pid_namespace *pp = BPF_CORE_READ(p, parent);

		if (pp)
			*parent = BPF_CORE_READ(pp, ns.inum);
		return BPF_CORE_READ(p, user_ns);
	}
	case CLONE_NEWUSER:
		return BPF_CORE_READ(CONTAINER(ns, struct user_namespace), parent);
	}
	return NULL;
}

/* 6.18+: ns_common carries its own type. */
static __always_inline __u32 type_of(struct ns_common *ns, const int direct)
{
	if (bpf_core_field_exists(ns->ns_type))
		return RD(direct, ns, ns_type);
	return 0;
}

/* The CLONE_NEW* type of any namespace, on every kernel. */
static __always_inline __u32 any_type_of(struct ns_common *ns)
{
	struct proc_ns_operations___type *ops;

	if (bpf_core_field_exists(ns->ns_type))
		return BPF_CORE_READ(ns, ns_type);
	ops = (void *)BPF_CORE_READ(ns, ops);
	return BPF_CORE_READ(ops, type);
}

static __always_inline void task_inums(struct task_struct *t, __u32 *inum)
{
	struct nsproxy *nsp = BPF_CORE_READ(t, nsproxy);
	struct user_namespace *u = BPF_CORE_READ(t, real_cred, user_ns);

	inum[NSTRACK_SLOT_USER] = u ? BPF_CORE_READ(u, ns.inum) : 0;
	if (!nsp)  /* exiting task */
		return;
	inum[NSTRACK_SLOT_NET] = BPF_CORE_READ(nsp, net_ns, ns.inum);
	inum[NSTRACK_SLOT_MNT] = BPF_CORE_READ(nsp, mnt_ns, ns.inum);
	inum[NSTRACK_SLOT_UTS] = BPF_CORE_READ(nsp, uts_ns, ns.inum);
	inum[NSTRACK_SLOT_IPC] = BPF_CORE_READ(nsp, ipc_ns, ns.inum);
	inum[NSTRACK_SLOT_CGROUP] = BPF_CORE_READ(nsp, cgroup_ns, ns.inum);
	inum[NSTRACK_SLOT_PID_FOR_CHILDREN] = BPF_CORE_READ(nsp, pid_ns_for_children, ns.inum);
	if (bpf_core_field_exists(nsp->time_ns)) {
		inum[NSTRACK_SLOT_TIME] = BPF_CORE_READ(nsp, time_ns, ns.inum);
		inum[NSTRACK_SLOT_TIME_FOR_CHILDREN] = BPF_CORE_READ(nsp, time_ns_for_children, ns.inum);
	}
}

#define NS_OF(ptr, T) ((ptr) ? (struct ns_common *)((void *)(ptr) + bpf_core_field_offset(T, ns)) : NULL)

#endif /* NSTRACK_NS_HELPERS_H */
