/* module family: kernel module load/unload attempts (refused ones too) and BPF
 * program loads by processes other than ktriage. */
#pragma once
#include "common.h"
#include "origin.h"
#include "tamper.bpf.h"

#if defined(__TARGET_ARCH_x86)
#define NR_init_module 175
#define NR_delete_module 176
#define NR_finit_module 313
#define SYSCALL_NR(regs) BPF_CORE_READ(regs, orig_ax)
#define SYSCALL_NR_BTF(regs) ((regs)->orig_ax)
#elif defined(__TARGET_ARCH_arm64)
#define NR_init_module 105
#define NR_delete_module 106
#define NR_finit_module 273
#define SYSCALL_NR(regs) BPF_CORE_READ(regs, syscallno)
#define SYSCALL_NR_BTF(regs) ((regs)->syscallno)
#endif

static __always_inline int module_exit(void *ctx, __u32 op, long ret)
{
	struct pt_regs *regs = uregs();
	if (!wanted_current(KT_FAM_MODULE))
		return 0;
	struct kt_module *r = BEGIN(kt_module, KT_KIND_MODULE);
	if (!r)
		return 0;
	r->op = op;
	r->result = ret;
	__u32 off = FILL_ORIGIN(ctx, r);
	if (op == KT_MODULE_FINIT_MODULE) {
		r->mflags = ARG3(regs);
		struct file *f = fd_file(bpf_get_current_task_btf(), ARG1(regs));
		if (f)
			off = put_path((void *)r, off, __builtin_preserve_access_index(&f->f_path), 4, &r->path_len);
	} else if (op == KT_MODULE_INIT_MODULE) {
		r->length = ARG2(regs);
	} else {
		r->mflags = ARG2(regs);
		off = put_user_str((void *)r, off, (void *)ARG1(regs), 3, &r->name_len);
	}
	r->size = off;
	emit(r, KT_FAM_MODULE);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_init_module")
int sys_exit_init_module(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(MODULE));
	return module_exit(ctx, KT_MODULE_INIT_MODULE, ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_finit_module")
int sys_exit_finit_module(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(MODULE));
	return module_exit(ctx, KT_MODULE_FINIT_MODULE, ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_delete_module")
int sys_exit_delete_module(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(MODULE));
	return module_exit(ctx, KT_MODULE_DELETE_MODULE, ctx->ret);
}

/* Kernels without module support have no per-syscall tracepoints for these
 * syscalls, yet a process can still try them: then the raw syscall exit is
 * watched for their numbers (loaded only when the tracepoints are missing). */
static __always_inline int module_raw_exit(void *ctx, long nr, long ret)
{
	if (nr == NR_finit_module)
		return module_exit(ctx, KT_MODULE_FINIT_MODULE, ret);
	if (nr == NR_init_module)
		return module_exit(ctx, KT_MODULE_INIT_MODULE, ret);
	if (nr == NR_delete_module)
		return module_exit(ctx, KT_MODULE_DELETE_MODULE, ret);
	return 0;
}

/* this program runs on every syscall: the number is read directly (a BTF
 * pointer), not through a helper call */
SEC("tp_btf/sys_exit")
int BPF_PROG(tp_btf_modsys, struct pt_regs *regs, long ret)
{
	return module_raw_exit(ctx, SYSCALL_NR_BTF(regs), ret);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(raw_tp_modsys, struct pt_regs *regs, long ret)
{
	return module_raw_exit(ctx, SYSCALL_NR(regs), ret);
}

struct module_load_args {
	__u64 common;
	__u32 taints;
	__u32 name_loc; /* __data_loc: offset in the low 16 bits */
};

SEC("tracepoint/module/module_load")
int module_load(struct module_load_args *ctx)
{
	if (!wanted_current(KT_FAM_MODULE))
		return 0;
	struct kt_module *r = BEGIN(kt_module, KT_KIND_MODULE);
	if (!r)
		return 0;
	r->op = KT_MODULE_MODULE_LOAD;
	r->mflags = ctx->taints;
	r->size = put_kernel_str((void *)r, sizeof(*r), (char *)ctx + (ctx->name_loc & 0xffff), 3, &r->name_len);
	emit(r, KT_FAM_MODULE);
	return 0;
}

static __always_inline int prog_load_exit(struct trace_event_raw_sys_exit *ctx, struct pt_regs *regs)
{
	struct {
		__u32 prog_type, insn_cnt;
		__u64 insns, license;
		__u32 log_level, log_size;
		__u64 log_buf;
		__u32 kern_version, prog_flags;
		char prog_name[16];
	} attr = {};

	if (!wanted_current(KT_FAM_MODULE))
		return 0;
	struct kt_module *r = BEGIN(kt_module, KT_KIND_MODULE);
	if (!r)
		return 0;
	bpf_probe_read_user(&attr, sizeof(attr), (void *)ARG2(regs));
	r->op = KT_MODULE_BPF_PROG_LOAD;
	r->prog_type = attr.prog_type;
	r->insn_cnt = attr.insn_cnt;
	r->mflags = attr.prog_flags;
	r->result = ctx->ret;
	__u32 off = FILL_ORIGIN(ctx, r);
	attr.prog_name[15] = 0;
	r->size = put_kernel_str((void *)r, off, attr.prog_name, 3, &r->name_len);
	emit(r, KT_FAM_MODULE);
	return 0;
}

/* Program loads (module family, filtered like any stream) and commands on ktriage's own objects
 * (never filtered: tamper.bpf.h). */
SEC("tracepoint/syscalls/sys_exit_bpf")
int sys_exit_bpf(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	__u32 cmd = ARG1(regs);
	if (cmd == BPF_PROG_LOAD)
		return prog_load_exit(ctx, regs);
	return bpf_tamper_exit(ctx, regs, cmd);
}
