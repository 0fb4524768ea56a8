// SPDX-License-Identifier: GPL-2.0
/* One empty program per attach type; the loader loads and attaches each alone
 * to learn what this kernel supports. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_tracepoint(void *ctx) { return 0; }

SEC("raw_tp/sched_process_fork")
int probe_raw_tp(void *ctx) { return 0; }

SEC("tp_btf/sched_process_fork")
int BPF_PROG(probe_tp_btf, struct task_struct *parent, struct task_struct *child) { return 0; }

SEC("kprobe/vfs_read")
int probe_kprobe(void *ctx) { return 0; }

SEC("fentry/vfs_read")
int BPF_PROG(probe_fentry) { return 0; }

SEC("lsm/file_open")
int BPF_PROG(probe_lsm, struct file *file) { return 0; }
