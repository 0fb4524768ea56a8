/* access family: one process acting on another's memory, registers or fds. */
#pragma once
#include "common.h"
#include "origin.h"

#define PROC_SUPER_MAGIC 0x9fa0
#define PTRACE_SETREGS 13
#define PTRACE_SETREGSET 0x4205
#define NT_PRSTATUS 1
#if defined(__TARGET_ARCH_x86)
#define REGS_IP_OFFSET 128 /* user_regs_struct.rip */
#elif defined(__TARGET_ARCH_arm64)
#define REGS_IP_OFFSET 256 /* user_pt_regs.pc */
#endif

/* The instruction pointer a tracer writes into its tracee's registers. */
static __always_inline __u64 written_ip(__u64 request, __u64 addr, __u64 data)
{
	__u64 ip = 0;
	void *regs = (void *)data;
	if (request == PTRACE_SETREGSET) {
		if (addr != NT_PRSTATUS)
			return 0;
		bpf_probe_read_user(&regs, sizeof(regs), (void *)data); /* iovec.iov_base */
	} else if (request != PTRACE_SETREGS) {
		return 0;
	}
	bpf_probe_read_user(&ip, sizeof(ip), regs + REGS_IP_OFFSET);
	return ip;
}

static __always_inline struct kt_access *access_begin(void *ctx, __u32 op)
{
	struct kt_access *r = BEGIN(kt_access, KT_KIND_ACCESS);
	if (r)
		r->op = op;
	return r;
}

static __always_inline void access_emit(void *ctx, struct kt_access *r, __u32 off)
{
	r->size = off;
	emit(r, KT_FAM_ACCESS);
}

SEC("tracepoint/syscalls/sys_exit_ptrace")
int sys_exit_ptrace(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	if (!wanted_current(KT_FAM_ACCESS))
		return 0;
	struct kt_access *r = access_begin(ctx, KT_ACCESS_PTRACE);
	if (!r)
		return 0;
	r->request = ARG1(regs);
	r->target = ARG2(regs);
	r->addr = ARG3(regs);
	r->data = ARG4(regs);
	r->regs_ip = written_ip(r->request, r->addr, r->data);
	r->result = ctx->ret < 0 ? ctx->ret : 0;
	access_emit(ctx, r, FILL_ORIGIN(ctx, r));
	return 0;
}

static __always_inline int vm_rw_exit(struct trace_event_raw_sys_exit *ctx, __u32 op)
{
	struct pt_regs *regs = uregs();
	if (!wanted_current(KT_FAM_ACCESS))
		return 0;
	struct kt_access *r = access_begin(ctx, op);
	if (!r)
		return 0;
	const struct iovec *rvec = (void *)ARG4(regs);
	void *base = NULL;
	bpf_probe_read_user(&base, sizeof(base), &rvec->iov_base);
	r->target = ARG1(regs);
	r->count = ARG5(regs);
	r->addr = (__u64)base;
	r->bytes = ctx->ret > 0 ? ctx->ret : 0;
	r->result = ctx->ret < 0 ? ctx->ret : 0;
	access_emit(ctx, r, FILL_ORIGIN(ctx, r));
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_process_vm_readv")
int sys_exit_process_vm_readv(struct trace_event_raw_sys_exit *ctx)
{
	return vm_rw_exit(ctx, KT_ACCESS_VM_READV);
}

SEC("tracepoint/syscalls/sys_exit_process_vm_writev")
int sys_exit_process_vm_writev(struct trace_event_raw_sys_exit *ctx)
{
	return vm_rw_exit(ctx, KT_ACCESS_VM_WRITEV);
}

/* An open of /proc/<pid>/mem: reported as access (target from the parent
 * directory's name), never as a file event. Returns true when it was one. */
static __always_inline bool proc_mem_open(void *ctx, struct file *f, __u32 flags, __u32 mask)
{
	if (BPF_CORE_READ(f, f_inode, i_sb, s_magic) != PROC_SUPER_MAGIC)
		return false;
	struct dentry *d = BPF_CORE_READ(f, f_path.dentry);
	char name[4] = {};
	bpf_probe_read_kernel(name, sizeof(name), BPF_CORE_READ(d, d_name.name));
	if (name[0] != 'm' || name[1] != 'e' || name[2] != 'm' || name[3] != 0)
		return false;
	if (!(mask >> KT_FAM_ACCESS & 1))
		return true;
	struct kt_access *r = access_begin(ctx, KT_ACCESS_PROC_MEM);
	if (!r)
		return true;
	r->open_flags = flags;
	__u32 off = FILL_ORIGIN(ctx, r);
	off = put_kernel_str((void *)r, off, (void *)BPF_CORE_READ(d, d_parent, d_name.name), 3, &r->target_name_len);
	access_emit(ctx, r, off);
	return true;
}

SEC("tracepoint/syscalls/sys_exit_pidfd_open")
int sys_exit_pidfd_open(struct trace_event_raw_sys_exit *ctx)
{
	if (!wanted_current(KT_FAM_ACCESS))
		return 0;
	struct kt_access *r = access_begin(ctx, KT_ACCESS_PIDFD_OPEN);
	if (!r)
		return 0;
	r->target = ARG1(uregs());
	r->result = ctx->ret < 0 ? ctx->ret : 0;
	access_emit(ctx, r, FILL_ORIGIN(ctx, r));
	return 0;
}

/* The pid a pidfd refers to, as seen from the initial namespace. The struct
 * pid hangs off the inode on pidfs kernels (6.9+), off the file before. */
static __always_inline __u32 pidfd_target(long fd)
{
	struct file *f = fd_file(bpf_get_current_task_btf(), fd);
	if (!f)
		return 0;
	struct pid *pid = BPF_CORE_READ(f, f_inode, i_private);
	__u32 nr = BPF_CORE_READ(pid, numbers[0].nr);
	if (nr)
		return nr;
	pid = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(pid, numbers[0].nr);
}

SEC("tracepoint/syscalls/sys_exit_pidfd_getfd")
int sys_exit_pidfd_getfd(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	if (!wanted_current(KT_FAM_ACCESS))
		return 0;
	struct kt_access *r = access_begin(ctx, KT_ACCESS_PIDFD_GETFD);
	if (!r)
		return 0;
	r->target = pidfd_target(ARG1(regs));
	r->count = ARG2(regs);
	r->result = ctx->ret < 0 ? ctx->ret : 0;
	access_emit(ctx, r, FILL_ORIGIN(ctx, r));
	return 0;
}
