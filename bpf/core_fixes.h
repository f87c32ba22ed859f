/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Layouts of kernels other than the one bpf/vmlinux.h was dumped from (6.18): shadow structs that CO-RE
 * matches by name up to the "___" against the running kernel's BTF (libbpf's flavours). Each names the
 * kernel change that made the difference, by its subject line (and its commit where it was checked),
 * and what reads it.
 */
#ifndef NSTRACK_CORE_FIXES_H
#define NSTRACK_CORE_FIXES_H

/*
 * 5.11 .. 6.17: one refcount in ns_common, `count`: added by commit 2024f91e965f ("ns: Add a common
 * refcount into ns_common"), with 9a56493f6942 ("uts: Use generic ns_common::count") and its series
 * (5.11); 6.18's namespace series renamed it __ns_ref. 5.10 keeps a refcount in each namespace type
 * (refcount_of() reports 0 there). Read by refcount_of().
 */
struct ns_common___count {
	refcount_t count;
} __attribute__((preserve_access_index));

/*
 * Before 6.18 a namespace's type lived only in its proc_ns_operations (`type`); 6.18's namespace series
 * (Christian Brauner, "nstree: make iterator generic" and the patches around it) put it in
 * ns_common.ns_type. Read by any_type_of().
 */
struct proc_ns_operations___type {
	int type;
} __attribute__((preserve_access_index));

/*
 * 6.18 links every namespace of a type through ns_common.ns_list_node ("nstree: make iterator
 * generic"). "nstree: switch to new structures" (Christian Brauner, November 2025; seen on Debian's
 * 7.2.13) moved the tree fields into struct ns_tree, an anonymous member of ns_common: the per-type list
 * entry became ns_tree_node.ns_list_entry. CO-RE finds the field through the anonymous member on either
 * layout. Read by has_ns_lists() and list_next() in scan.bpf.c.
 */
struct ns_tree_node___tree {
	struct rb_node ns_node;
	struct list_head ns_list_entry;
} __attribute__((preserve_access_index));

struct ns_common___tree {
	struct ns_tree_node___tree ns_tree_node;
} __attribute__((preserve_access_index));

#endif /* NSTRACK_CORE_FIXES_H */
