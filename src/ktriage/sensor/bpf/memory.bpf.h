/* memory family: memory made executable (mmap, mprotect with the protection
 * the region had before, so W->X and RWX show), memfd_create. */
#pragma once
#include "common.h"
#include "origin.h"
#include "proc.bpf.h"

#define PROT_WRITE 0x2
#define VM_WRITE 0x2

struct pending_mprotect {
	__u64 addr, len;
	__u32 prot, old, anon, _r;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct pending_mprotect);
} mprotects SEC(".maps");

static __always_inline struct kt_memory *memory_begin(__u32 op, __u64 addr, __u64 len, __u32 prot, long ret)
{
	struct kt_memory *r = BEGIN(kt_memory, KT_KIND_MEMORY);
	if (!r)
		return NULL;
	r->op = op;
	r->addr = addr;
	r->length = len;
	r->prot = prot;
	r->result = ret < 0 ? ret : 0;
	return r;
}

/* Executable memory that is anonymous or also writable: shellcode, JIT, unpacking. */
static __always_inline void memory_mmap(struct trace_event_raw_sys_exit *ctx, struct pt_regs *regs)
{
	__u32 prot = ARG3(regs), flags = ARG4(regs);
	long fd = (long)ARG5(regs);
	bool anon = (flags & MAP_ANONYMOUS) || fd < 0;

	if (!(prot & PROT_EXEC) || !(anon || (prot & PROT_WRITE)) || !wanted_current(KT_FAM_MEMORY))
		return;
	bool failed = ctx->ret < 0 && ctx->ret > -4096;
	struct kt_memory *r = memory_begin(KT_MEMORY_MMAP, failed ? ARG1(regs) : ctx->ret, ARG2(regs), prot,
					   failed ? ctx->ret : 0);
	if (!r)
		return;
	r->mflags = flags;
	r->fd = anon ? -1 : fd;
	__u32 off = FILL_ORIGIN(ctx, r);
	struct file *f = anon ? NULL : fd_file(bpf_get_current_task_btf(), fd);
	if (f)
		off = put_path((void *)r, off, __builtin_preserve_access_index(&f->f_path), 3, &r->name_len);
	r->size = off;
	emit(r, KT_FAM_MEMORY);
}

SEC("tracepoint/syscalls/sys_exit_mmap")
int sys_exit_mmap(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(IMAGE) | FAM(MEMORY));
	struct pt_regs *regs = uregs();
	image_mmap(ctx, regs);
	memory_mmap(ctx, regs);
	return 0;
}

/* mprotect is reported when it leaves the region executable, or makes an
 * executable region writable; the old protection needs the region before the
 * call, so it is read at entry and reported at exit with the result. */
SEC("tracepoint/syscalls/sys_enter_mprotect")
int sys_enter_mprotect(struct trace_event_raw_sys_enter *ctx)
{
	struct pending_mprotect p = {.addr = ctx->args[0], .len = ctx->args[1], .prot = ctx->args[2]};
	struct vma_info v = {};
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	/* neither exec nor write requested: nothing to report, so no vma lookup (RELRO, guard pages) */
	if (!(p.prot & (PROT_EXEC | PROT_WRITE)) || !wanted_current(KT_FAM_MEMORY))
		return 0;
	if (bpf_find_vma(bpf_get_current_task_btf(), p.addr, vma_cb, &v, 0) == 0) {
		p.old = v.flags & 7;
		p.anon = !v.file;
	}
	if (!(p.prot & PROT_EXEC) && !((p.old & VM_EXEC) && (p.prot & PROT_WRITE)))
		return 0;
	bpf_map_update_elem(&mprotects, &tid, &p, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_mprotect")
int sys_exit_mprotect(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending_mprotect *p = bpf_map_lookup_elem(&mprotects, &tid);
	if (!p)
		return 0;
	struct pending_mprotect v = *p;
	bpf_map_delete_elem(&mprotects, &tid);
	struct kt_memory *r = memory_begin(KT_MEMORY_MPROTECT, v.addr, v.len, v.prot, ctx->ret);
	if (!r)
		return 0;
	r->old_prot = v.old;
	r->mflags = v.anon; /* bit 0: the region is anonymous */
	r->fd = -1;
	r->size = FILL_ORIGIN(ctx, r);
	emit(r, KT_FAM_MEMORY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_memfd_create")
int sys_exit_memfd_create(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	if (!wanted_current(KT_FAM_MEMORY))
		return 0;
	struct kt_memory *r = memory_begin(KT_MEMORY_MEMFD_CREATE, 0, 0, 0, ctx->ret);
	if (!r)
		return 0;
	r->mflags = ARG2(regs);
	r->fd = ctx->ret;
	__u32 off = FILL_ORIGIN(ctx, r);
	r->size = put_user_str((void *)r, off, (void *)ARG1(regs), 3, &r->name_len);
	emit(r, KT_FAM_MEMORY);
	return 0;
}
