// SPDX-License-Identifier: GPL-2.0
/*
 * Capability probes. Each program proves one kernel feature by being loaded,
 * attached and run for real; nstrack loads one at a time (autoload off for
 * the rest), so a refusal names exactly one feature.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

/* Only count events caused by the probing process itself. */
const volatile __u32 target_tgid = 0;

__u64 hits = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} probe_rb SEC(".maps");

static __always_inline int mine(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

/* Attach target set at run time (bpf_program__set_attach_target). */
SEC("fentry")
int BPF_PROG(probe_fentry)
{
	if (mine())
		__sync_fetch_and_add(&hits, 1);
	return 0;
}

/* Attached with bpf_program__attach_kprobe to a function chosen at run time. */
SEC("kprobe")
int BPF_KPROBE(probe_kprobe)
{
	if (mine())
		__sync_fetch_and_add(&hits, 1);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(probe_tp_btf, struct task_struct *parent, struct task_struct *child)
{
	if (BPF_CORE_READ(parent, tgid) == target_tgid)
		__sync_fetch_and_add(&hits, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_tracepoint(void *ctx)
{
	if (mine())
		__sync_fetch_and_add(&hits, 1);
	return 0;
}

/* Writes one line per task; reading the iterator returns them. */
SEC("iter/task")
int probe_iter(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	__u32 pid;

	if (!task)
		return 0;
	pid = task->tgid;
	bpf_seq_write(ctx->meta->seq, &pid, sizeof(pid));
	return 0;
}

/* Run with BPF_PROG_TEST_RUN: emits one record into the ring buffer. */
SEC("socket")
int probe_ringbuf(struct __sk_buff *skb)
{
	__u64 magic = 0x6e737472616b21ULL; /* "nstrak!" */

	if (bpf_ringbuf_output(&probe_rb, &magic, sizeof(magic), 0))
		return 1;
	return 2;
}

static long loop_cb(__u64 index, void *ctx)
{
	*(__u64 *)ctx += index;
	return 0;
}

/* Run with BPF_PROG_TEST_RUN: returns the sum 0..9 = 45 when bpf_loop works. */
SEC("socket")
int probe_bpf_loop(struct __sk_buff *skb)
{
	__u64 sum = 0;

	bpf_loop(10, loop_cb, &sum, 0);
	return (int)sum;
}

/*
 * Rejected by the verifier on purpose (ctx->task may be NULL and is dereferenced unchecked):
 * the tests use it to prove that a load failure carries the verifier log. Never autoloaded.
 */
SEC("iter/task")
int invalid_on_purpose(struct bpf_iter__task *ctx)
{
	__u32 pid = ctx->task->tgid;

	bpf_seq_write(ctx->meta->seq, &pid, sizeof(pid));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
