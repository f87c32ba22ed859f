/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Records shared by the BPF programs and Python (nstrack/model/records.py mirrors them;
 * tests/unit/test_records.py checks that the sizes and offsets agree with the compiled object).
 */
#ifndef NSTRACK_H
#define NSTRACK_H

#define NSTRACK_COMM_LEN 16

/* ns_event.kind */
#define NSTRACK_EV_CREATED   1
#define NSTRACK_EV_DESTROYED 2

/* ns_event.source: which hook saw it */
#define NSTRACK_SRC_TREE_ADD    1 /* __ns_tree_add_raw (6.18+) */
#define NSTRACK_SRC_TREE_REMOVE 2 /* __ns_tree_remove (6.18+) */
#define NSTRACK_SRC_COPY        3 /* per-type create function (copy_*_ns, create_user_ns) */
#define NSTRACK_SRC_FREE        4 /* per-type free function */
#define NSTRACK_SRC_FORK        5 /* tp_btf/sched_process_fork: child has a namespace its parent has not */
#define NSTRACK_SRC_UNSHARE     6 /* syscalls/sys_exit_unshare: the task's namespace changed */
#define NSTRACK_SRC_FREE_INUM   7 /* proc_free_inum (< 6.18): an inode number went back; type 0, Python
                                    * resolves it (live namespace inums are unique across types) */

/* One create or destroy, into the `events` ring buffer. 72 bytes. */
struct ns_event {
	__u64 ts_ns;       /* bpf_ktime_get_boot_ns() */
	__u64 ns_id;       /* ns_common.ns_id (6.18+), else 0 */
	__u64 cgroup_id;   /* creator's cgroup v2 id */
	__u32 kind;        /* NSTRACK_EV_* */
	__u32 ns_type;     /* CLONE_NEW* flag */
	__u32 inum;
	__u32 owner_inum;  /* owning user namespace (for user namespaces: the parent); 0 when destroyed */
	__u32 parent_inum; /* parent pid namespace (pid only), else 0 */
	__u32 pid;         /* task that made it (thread id); 0 in destroyed events */
	__u32 tgid;
	__u32 source;      /* NSTRACK_SRC_* */
	char comm[NSTRACK_COMM_LEN];
};

/* A namespace created and freed while its creation was held in `young` (serve in the event modes): its
 * creation record and when it was freed, into the `brief_rb` ring buffer. 88 bytes. BPF has counted it
 * (brief_stats, and its creator's command in brief_comms unless `counted` lacks NSTRACK_BRIEF_COMM). */
struct ns_brief {
	struct ns_event ev;
	__u64 end_ns;      /* bpf_ktime_get_boot_ns() of the free */
	__u32 counted;     /* NSTRACK_BRIEF_* */
	__u32 reserved;
};

/* ns_brief.counted */
#define NSTRACK_BRIEF_COMM 1 /* its creator's command is counted in brief_comms (or it has none: the kernel's) */

/* Namespaces paired in BPF, per type: how many, and their lifetimes as serve's histogram counts them. */
#define NSTRACK_LIFE_BOUNDS 8 /* finite upper bounds (seconds): 1 10 60 300 1800 3600 21600 86400 */
struct brief_stats {
	__u64 count;
	__u64 life_sum_ns;
	__u64 life[NSTRACK_LIFE_BOUNDS + 1]; /* by the first bound the lifetime is <= to; last: above them all */
};

/* Key of brief_comms: a creator's command and the type (index in NSTRACK_TYPE_*) it made. 24 bytes. */
struct comm_key {
	char comm[NSTRACK_COMM_LEN];
	__u32 type;
	__u32 reserved;
};

/* Type indexes (brief_stats[], comm_key.type): nstrack/model/nstypes.py's order. */
#define NSTRACK_TYPES 8

/* One namespace found by the in-kernel list walk, into the `scan_rb` ring buffer. 40 bytes. */
struct ns_record {
	__u64 ns_id;
	__u32 ns_type;
	__u32 inum;
	__u32 owner_inum;
	__u32 parent_inum;
	__u32 refcount;
	__u32 flags;       /* reserved */
	__u64 owner_ns_id;
};

/* Namespace slots in a task record (and the order Python reads them in). */
#define NSTRACK_SLOT_NET    0
#define NSTRACK_SLOT_MNT    1
#define NSTRACK_SLOT_UTS    2
#define NSTRACK_SLOT_IPC    3
#define NSTRACK_SLOT_PID    4 /* the task's own (active) pid namespace */
#define NSTRACK_SLOT_USER   5
#define NSTRACK_SLOT_CGROUP 6
#define NSTRACK_SLOT_TIME   7
#define NSTRACK_SLOT_PID_FOR_CHILDREN  8
#define NSTRACK_SLOT_TIME_FOR_CHILDREN 9
#define NSTRACK_SLOTS 10

/* One task (thread-group leader, or a thread whose namespaces differ from its leader's), written
 * to the scan iterator's output. 72 bytes. */
struct task_record {
	__u32 pid;
	__u32 tgid;
	__u32 inum[NSTRACK_SLOTS];
	char comm[NSTRACK_COMM_LEN];
	__u32 uid;         /* real uid, in the initial user namespace */
	__u32 nsproxy_id;  /* which nsproxy the task uses (a hash of its address; 0: none, exited) */
};

/* file_record.kind */
#define NSTRACK_FILE_NSFS   1 /* an open nsfs file (/proc/PID/ns/X, or a bind-mounted one opened) */
#define NSTRACK_FILE_SOCKET 2 /* a socket: holds its network namespace */

/* One interesting open file, written by the scan_files iterator. 24 bytes. */
struct file_record {
	__u32 tgid;
	__u32 fd;
	__u32 kind;
	__u32 ns_type;
	__u32 inum;
	__u32 owner_inum;  /* owning user namespace (for a user namespace: its parent) */
};

#endif /* NSTRACK_H */
