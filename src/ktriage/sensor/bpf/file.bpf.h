/* file family */
#pragma once
#include "common.h"
#include "access.bpf.h"

/* ------------------------------------------------------------------- file */

static __always_inline int open_exit(void *ctx, long ret, __u32 flags, __u32 mode)
{
	__u32 mask = current_mask();
	if (ret < 0 || !(mask & (1 << KT_FAM_FILE | 1 << KT_FAM_ACCESS)))
		return 0;
	struct file *f = fd_file(bpf_get_current_task_btf(), ret);
	if (!f || proc_mem_open(ctx, f, flags, mask))
		return 0;
	if (!(flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) || !(mask >> KT_FAM_FILE & 1))
		return 0;
	__u32 imode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((imode & S_IFMT) != S_IFREG)
		return 0; /* devices, pipes, sockets: not files an analyst means */
	struct kt_file *r = BEGIN(kt_file, KT_KIND_FILE);
	if (!r)
		return 0;
	r->op = (flags & O_TRUNC) ? KT_FILE_TRUNCATE : KT_FILE_OPEN_WRITE;
	r->open_flags = flags;
	r->mode = imode;
	r->fmode = BPF_CORE_READ(f, f_mode);
	r->ino = BPF_CORE_READ(f, f_inode, i_ino);
	r->size = put_path((void *)r, sizeof(*r), __builtin_preserve_access_index(&f->f_path), 0, &r->path_len);
	emit(r, KT_FAM_FILE);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int sys_exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(FILE) | FAM(ACCESS));
	struct pt_regs *regs = uregs();
	return open_exit(ctx, ctx->ret, ARG3(regs), ARG4(regs));
}

SEC("tracepoint/syscalls/sys_exit_open")
int sys_exit_open(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(FILE) | FAM(ACCESS));
	struct pt_regs *regs = uregs();
	return open_exit(ctx, ctx->ret, ARG2(regs), ARG3(regs));
}

SEC("tracepoint/syscalls/sys_exit_creat")
int sys_exit_creat(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(FILE));
	return open_exit(ctx, ctx->ret, O_CREAT | O_WRONLY | O_TRUNC, ARG2(uregs()));
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int sys_exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(FILE) | FAM(ACCESS));
	struct open_how how = {};
	bpf_probe_read_user(&how, sizeof(how), (void *)ARG3(uregs()));
	return open_exit(ctx, ctx->ret, how.flags, how.mode);
}

static __always_inline int path_op(long ret, __u32 op, long dfd, const char *name, long dfd2, const char *name2, __u32 mode)
{
	if (ret != 0 || !wanted_current(KT_FAM_FILE))
		return 0;
	struct kt_file *r = BEGIN(kt_file, KT_KIND_FILE);
	if (!r)
		return 0;
	__u32 off = sizeof(*r);
	r->op = op;
	r->mode = mode;
	off = put_at_path((void *)r, off, dfd, name, 0, &r->path_len);
	if (name2)
		off = put_at_path((void *)r, off, dfd2, name2, 1, &r->path2_len);
	r->size = off;
	emit(r, KT_FAM_FILE);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_rename")
int sys_exit_rename(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(FILE));
	struct pt_regs *regs = uregs();
	return path_op(ctx->ret, KT_FILE_RENAME, AT_FDCWD, (void *)ARG1(regs), AT_FDCWD, (void *)ARG2(regs), 0);
}

SEC("tracepoint/syscalls/sys_exit_renameat")
int sys_exit_renameat(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(FILE));
	struct pt_regs *regs = uregs();
	return path_op(ctx->ret, KT_FILE_RENAME, ARG1(regs), (void *)ARG2(regs), ARG3(regs), (void *)ARG4(regs), 0);
}

SEC("tracepoint/syscalls/sys_exit_renameat2")
int sys_exit_renameat2(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(FILE));
	struct pt_regs *regs = uregs();
	return path_op(ctx->ret, KT_FILE_RENAME, ARG1(regs), (void *)ARG2(regs), ARG3(regs), (void *)ARG4(regs), 0);
}

SEC("tracepoint/syscalls/sys_exit_unlink")
int sys_exit_unlink(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(FILE));
	return path_op(ctx->ret, KT_FILE_UNLINK, AT_FDCWD, (void *)ARG1(uregs()), 0, NULL, 0);
}

SEC("tracepoint/syscalls/sys_exit_unlinkat")
int sys_exit_unlinkat(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(FILE));
	struct pt_regs *regs = uregs();
	if (ARG3(regs) & 0x200) /* AT_REMOVEDIR */
		return 0;
	return path_op(ctx->ret, KT_FILE_UNLINK, ARG1(regs), (void *)ARG2(regs), 0, NULL, 0);
}

SEC("tracepoint/syscalls/sys_exit_chmod")
int sys_exit_chmod(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(FILE));
	struct pt_regs *regs = uregs();
	__u32 mode = ARG2(regs);
	if (!(mode & 0111))
		return 0;
	return path_op(ctx->ret, KT_FILE_CHMOD, AT_FDCWD, (void *)ARG1(regs), 0, NULL, mode);
}

static __always_inline int chmodat_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	__u32 mode = ARG3(regs);
	if (!(mode & 0111))
		return 0;
	return path_op(ctx->ret, KT_FILE_CHMOD, ARG1(regs), (void *)ARG2(regs), 0, NULL, mode);
}

SEC("tracepoint/syscalls/sys_exit_fchmodat")
int sys_exit_fchmodat(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(FILE));
	return chmodat_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_fchmodat2")
int sys_exit_fchmodat2(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(FILE));
	return chmodat_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_fchmod")
int sys_exit_fchmod(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(FILE));
	struct pt_regs *regs = uregs();
	__u32 mode = ARG2(regs);
	if (ctx->ret != 0 || !(mode & 0111) || !wanted_current(KT_FAM_FILE))
		return 0;
	struct file *f = fd_file(bpf_get_current_task_btf(), ARG1(regs));
	if (!f)
		return 0;
	struct kt_file *r = BEGIN(kt_file, KT_KIND_FILE);
	if (!r)
		return 0;
	r->op = KT_FILE_CHMOD;
	r->mode = mode;
	r->ino = BPF_CORE_READ(f, f_inode, i_ino);
	r->size = put_path((void *)r, sizeof(*r), __builtin_preserve_access_index(&f->f_path), 0, &r->path_len);
	emit(r, KT_FAM_FILE);
	return 0;
}

