/* api family (privilege changes, ids and capabilities before and after) and
 * signal family (signals sent to another process). */
#pragma once
#include "common.h"
#include "origin.h"
#include "access.bpf.h"

struct cred_snap {
	__u32 ids[8];
	__u64 cap_eff, cap_prm;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct cred_snap);
} cred_before SEC(".maps");

static __always_inline void snap_creds(struct cred_snap *s)
{
	const struct cred *c = BPF_CORE_READ(bpf_get_current_task_btf(), cred);
	s->ids[0] = BPF_CORE_READ(c, uid.val);
	s->ids[1] = BPF_CORE_READ(c, euid.val);
	s->ids[2] = BPF_CORE_READ(c, suid.val);
	s->ids[3] = BPF_CORE_READ(c, fsuid.val);
	s->ids[4] = BPF_CORE_READ(c, gid.val);
	s->ids[5] = BPF_CORE_READ(c, egid.val);
	s->ids[6] = BPF_CORE_READ(c, sgid.val);
	s->ids[7] = BPF_CORE_READ(c, fsgid.val);
	BPF_CORE_READ_INTO(&s->cap_eff, c, cap_effective);
	BPF_CORE_READ_INTO(&s->cap_prm, c, cap_permitted);
}

static __always_inline int api_enter(void)
{
	struct cred_snap s = {};
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	if (!wanted_current(KT_FAM_API))
		return 0;
	snap_creds(&s);
	bpf_map_update_elem(&cred_before, &tid, &s, BPF_ANY);
	return 0;
}

static __always_inline int api_exit(struct trace_event_raw_sys_exit *ctx, __u32 op)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct cred_snap *before = bpf_map_lookup_elem(&cred_before, &tid);
	struct cred_snap after = {};
	struct pt_regs *regs = uregs();
	if (!before)
		return 0;
	struct kt_api *r = BEGIN(kt_api, KT_KIND_API);
	if (!r) {
		bpf_map_delete_elem(&cred_before, &tid);
		return 0;
	}
	snap_creds(&after);
	__builtin_memcpy(r->old_ids, before->ids, sizeof(r->old_ids));
	__builtin_memcpy(r->new_ids, after.ids, sizeof(r->new_ids));
	r->old_cap_eff = before->cap_eff;
	r->old_cap_prm = before->cap_prm;
	bpf_map_delete_elem(&cred_before, &tid);
	r->new_cap_eff = after.cap_eff;
	r->new_cap_prm = after.cap_prm;
	r->op = op;
	r->result = ctx->ret < 0 ? ctx->ret : 0;
	r->arg0 = ARG1(regs);
	r->arg1 = ARG2(regs);
	r->arg2 = ARG3(regs);
	r->size = FILL_ORIGIN(ctx, r);
	emit(r, KT_FAM_API);
	return 0;
}

#define API_SYSCALL(name, op)                                                   \
	SEC("tracepoint/syscalls/sys_enter_" #name)                             \
	int sys_enter_##name(void *ctx) { return api_enter(); }                 \
	SEC("tracepoint/syscalls/sys_exit_" #name)                              \
	int sys_exit_##name(struct trace_event_raw_sys_exit *ctx) { return api_exit(ctx, op); }

API_SYSCALL(setuid, KT_API_SETUID)
API_SYSCALL(setgid, KT_API_SETGID)
API_SYSCALL(setreuid, KT_API_SETREUID)
API_SYSCALL(setregid, KT_API_SETREGID)
API_SYSCALL(setresuid, KT_API_SETRESUID)
API_SYSCALL(setresgid, KT_API_SETRESGID)
API_SYSCALL(setfsuid, KT_API_SETFSUID)
API_SYSCALL(setfsgid, KT_API_SETFSGID)
API_SYSCALL(capset, KT_API_CAPSET)

static __always_inline int signal_exit(long ret, __u32 op, __u32 sig, __u32 target, __u32 target_tgid)
{
	struct kt_signal *r = BEGIN(kt_signal, KT_KIND_SIGNAL);
	if (!r)
		return 0;
	r->op = op;
	r->sig = sig;
	r->target = target;
	r->target_tgid = target_tgid;
	r->result = ret < 0 ? ret : 0;
	emit(r, KT_FAM_SIGNAL);
	return 0;
}

/* Signal 0 only probes for existence; signals to oneself are not "another process". */
SEC("tracepoint/syscalls/sys_exit_kill")
int sys_exit_kill(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(SIGNAL));
	struct pt_regs *regs = uregs();
	__u32 pid = ARG1(regs), sig = ARG2(regs);
	if (!sig || pid == bpf_get_current_pid_tgid() >> 32 || !wanted_current(KT_FAM_SIGNAL))
		return 0;
	return signal_exit(ctx->ret, KT_SIGNAL_KILL, sig, pid, pid);
}

SEC("tracepoint/syscalls/sys_exit_tkill")
int sys_exit_tkill(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(SIGNAL));
	struct pt_regs *regs = uregs();
	__u32 tid = ARG1(regs), sig = ARG2(regs);
	if (!sig || tid == (__u32)bpf_get_current_pid_tgid() || !wanted_current(KT_FAM_SIGNAL))
		return 0;
	return signal_exit(ctx->ret, KT_SIGNAL_TKILL, sig, tid, 0);
}

SEC("tracepoint/syscalls/sys_exit_tgkill")
int sys_exit_tgkill(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(SIGNAL));
	struct pt_regs *regs = uregs();
	__u32 tgid = ARG1(regs), tid = ARG2(regs), sig = ARG3(regs);
	if (!sig || tgid == bpf_get_current_pid_tgid() >> 32 || !wanted_current(KT_FAM_SIGNAL))
		return 0;
	return signal_exit(ctx->ret, KT_SIGNAL_TGKILL, sig, tid, tgid);
}

SEC("tracepoint/syscalls/sys_exit_pidfd_send_signal")
int sys_exit_pidfd_send_signal(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(SIGNAL));
	struct pt_regs *regs = uregs();
	__u32 sig = ARG2(regs);
	if (!sig || !wanted_current(KT_FAM_SIGNAL))
		return 0;
	__u32 target = pidfd_target(ARG1(regs));
	if (target == bpf_get_current_pid_tgid() >> 32)
		return 0;
	return signal_exit(ctx->ret, KT_SIGNAL_PIDFD_SEND_SIGNAL, sig, target, target);
}
