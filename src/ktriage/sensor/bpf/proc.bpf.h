/* process, thread and image families */
#pragma once
#include "common.h"

/* ---------------------------------------------------------------- process */

static __always_inline __u64 auxv_base(struct mm_struct *mm)
{
	__u64 pair[2];
#pragma unroll
	for (int i = 0; i < 24; i++) {
		if (bpf_core_read(pair, sizeof(pair), &mm->saved_auxv[2 * i]))
			return 0;
		if (pair[0] == AT_BASE)
			return pair[1];
		if (pair[0] == 0)
			return 0;
	}
	return 0;
}

/* The dynamic loader the kernel mapped at exec: its executable mapping. */
static __always_inline void emit_interp(void)
{
	struct task_struct *p = bpf_get_current_task_btf();
	struct mm_struct *mm = BPF_CORE_READ(p, mm);
	struct vma_info v = {};
	__u64 addr = auxv_base(mm);
	struct file *file;

	if (!addr || bpf_find_vma(p, addr, vma_cb, &v, 0) || !v.file)
		return;
	file = v.file;
	for (int i = 0; i < 4 && !(v.flags & VM_EXEC); i++) {
		if (bpf_find_vma(p, v.end, vma_cb, &v, 0) || v.file != file)
			return;
	}
	if (!(v.flags & VM_EXEC))
		return;
	struct kt_image *r = BEGIN(kt_image, KT_KIND_IMAGE);
	if (!r)
		return;
	r->start = v.start;
	r->end = v.end;
	r->pgoff = v.pgoff;
	r->ino = BPF_CORE_READ(file, f_inode, i_ino);
	r->prot = 5; /* r-x */
	r->how = KT_IMAGE_INTERP;
	r->size = put_path((void *)r, sizeof(*r), __builtin_preserve_access_index(&file->f_path), 0, &r->path_len);
	emit(r, KT_FAM_IMAGE);
}

static __always_inline int do_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (wanted_current(KT_FAM_IMAGE))
		emit_interp();
	if (!wanted_current(KT_FAM_PROCESS))
		return 0;
	struct kt_exec *r = BEGIN(kt_exec, KT_KIND_EXEC);
	if (!r)
		return 0;
	struct mm_struct *mm = BPF_CORE_READ(p, mm);
	struct file *exe = BPF_CORE_READ(mm, exe_file);
	__u64 arg_start = BPF_CORE_READ(mm, arg_start);
	__u64 arg_end = BPF_CORE_READ(mm, arg_end);
	__u32 off = sizeof(*r);

	r->exe_ino = BPF_CORE_READ(exe, f_inode, i_ino);
	r->exe_nlink = BPF_CORE_READ(exe, f_inode, __i_nlink);
	r->start_code = BPF_CORE_READ(mm, start_code);
	r->end_code = BPF_CORE_READ(mm, end_code);
	r->euid = BPF_CORE_READ(p, cred, euid.val);
	r->egid = BPF_CORE_READ(p, cred, egid.val);
	r->old_pid = old_pid;
	off = put_path((void *)r, off, __builtin_preserve_access_index(&exe->f_path), 0, &r->path_len);
	off = put_kernel_str((void *)r, off, BPF_CORE_READ(bprm, filename), 1, &r->filename_len);
	if (arg_end > arg_start)
		off = put_user_bytes((void *)r, off, (void *)arg_start, arg_end - arg_start, 2, &r->argv_len);
	struct fs_struct *fs = BPF_CORE_READ(p, fs);
	off = put_path((void *)r, off, __builtin_preserve_access_index(&fs->pwd), 3, &r->cwd_len);
	/* the environment, for LD_PRELOAD / LD_AUDIT; user space keeps only LD_* */
	__u64 env_start = BPF_CORE_READ(mm, env_start), env_end = BPF_CORE_READ(mm, env_end);
	if (env_end > env_start)
		off = put_user_bytes((void *)r, off, (void *)env_start, env_end - env_start, 4, &r->env_len);
	r->size = off;
	emit_record(r, KT_FAM_PROCESS, r->exe_nlink == 0); /* memfd or deleted file: FILELESS_EXECUTION */
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(tp_btf_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return do_exec(p, old_pid, bprm);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(raw_tp_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return do_exec(p, old_pid, bprm);
}

static __always_inline void follow_child(__u32 parent_tgid, __u32 child_tgid)
{
	struct kt_config *c = cfg();
	if (!c || !c->filter)
		return;
	struct kt_target *parent = bpf_map_lookup_elem(&targets, &parent_tgid);
	if (!parent || parent->depth >= c->max_depth)
		return;
	struct kt_target child = {.depth = parent->depth + 1, .mask = parent->mask};
	bpf_map_update_elem(&targets, &child_tgid, &child, BPF_NOEXIST);
}

static __always_inline int do_fork(struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	__u32 cpid = BPF_CORE_READ(child, pid);

	if (ctgid != ptgid)
		follow_child(ptgid, ctgid);
	if (cpid == ctgid) {
		if (!wanted_current(KT_FAM_PROCESS))
			return 0;
		struct kt_fork *r = BEGIN(kt_fork, KT_KIND_FORK);
		if (!r)
			return 0;
		r->child_pid = ctgid;
		emit(r, KT_FAM_PROCESS);
	} else {
		if (!wanted_current(KT_FAM_THREAD))
			return 0;
		struct kt_thread *r = BEGIN(kt_thread, KT_KIND_THREAD);
		if (!r)
			return 0;
		r->new_tid = cpid;
		emit(r, KT_FAM_THREAD);
	}
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(tp_btf_fork, struct task_struct *parent, struct task_struct *child)
{
	return do_fork(parent, child);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(raw_tp_fork, struct task_struct *parent, struct task_struct *child)
{
	return do_fork(parent, child);
}

static __always_inline int do_exit(struct task_struct *p)
{
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0; /* another task of the process lives on */
	__u32 tgid = BPF_CORE_READ(p, tgid);
	if (wanted_current(KT_FAM_PROCESS)) {
		struct kt_exit *r = BEGIN(kt_exit, KT_KIND_EXIT);
		if (r) {
			r->exit_code = BPF_CORE_READ(p, exit_code);
			emit(r, KT_FAM_PROCESS);
		}
	}
	bpf_map_delete_elem(&targets, &tgid);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(tp_btf_exit, struct task_struct *p)
{
	return do_exit(p);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(raw_tp_exit, struct task_struct *p)
{
	return do_exit(p);
}

/* ------------------------------------------------------------------ image */

/* Called from the mmap exit program (memory.bpf.h), which also serves the memory family. */
static __always_inline int image_mmap(struct trace_event_raw_sys_exit *ctx, struct pt_regs *regs)
{
	__u64 prot = ARG3(regs), flags = ARG4(regs);
	long fd = (long)ARG5(regs);

	if (ctx->ret < 0 && ctx->ret > -4096)
		return 0;
	if (!(prot & PROT_EXEC) || (flags & MAP_ANONYMOUS) || fd < 0 || !wanted_current(KT_FAM_IMAGE))
		return 0;
	struct file *f = fd_file(bpf_get_current_task_btf(), fd);
	if (!f)
		return 0;
	struct kt_image *r = BEGIN(kt_image, KT_KIND_IMAGE);
	if (!r)
		return 0;
	r->start = ctx->ret;
	r->end = ctx->ret + ARG2(regs);
	r->pgoff = ARG6(regs);
	r->ino = BPF_CORE_READ(f, f_inode, i_ino);
	r->prot = prot;
	r->how = KT_IMAGE_MMAP;
	r->size = put_path((void *)r, sizeof(*r), __builtin_preserve_access_index(&f->f_path), 0, &r->path_len);
	emit(r, KT_FAM_IMAGE);
	return 0;
}

