/* Origin of a sensitive syscall: the user instruction pointer, the mapping
 * behind it and its class, the user stack, and for anonymous code a sample of
 * the bytes around the origin. The Linux answer to "was this a direct syscall". */
#pragma once
#include "common.h"


static __always_inline bool name_is(const char *name, const char *prefix, int n)
{
	for (int i = 0; i < n; i++)
		if (name[i] != prefix[i])
			return false;
	return true;
}

/* libc, the dynamic loader, or another file, from the mapped file's name. */
static __always_inline __u32 file_class(struct file *file)
{
	char name[8] = {};
	bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(file, f_path.dentry, d_name.name));
	if (name_is(name, "libc.so", 7) || name_is(name, "libc-", 5))
		return KT_ORIGIN_LIBC;
	if (name_is(name, "ld-linu", 7) || name_is(name, "ld-2.", 5) || name_is(name, "ld64.so", 7) ||
	    name_is(name, "ld-musl", 7))
		return KT_ORIGIN_LDSO;
	return KT_ORIGIN_FILE;
}

static __always_inline __u32 classify_origin(struct task_struct *t, __u64 ip, struct vma_info *o)
{
	struct mm_struct *mm = BPF_CORE_READ(t, mm);
	if (bpf_find_vma(t, ip, vma_cb, o, 0))
		return KT_ORIGIN_NONE;
	struct file *file = o->file;
	if (o->start == (__u64)BPF_CORE_READ(mm, context.vdso))
		return KT_ORIGIN_VDSO;
	if (!file)
		return KT_ORIGIN_ANON;
	if (BPF_CORE_READ(file, f_inode) == BPF_CORE_READ(mm, exe_file, f_inode))
		return KT_ORIGIN_EXE;
	return file_class(file);
}

/* Fill the origin fields and the origin strings (stack, sample, origin_path:
 * always string indices 0, 1, 2) of record r; evaluates to the record's end. */
#define FILL_ORIGIN(ctx, r) fill_origin(ctx, (struct kt_header *)(r), sizeof(*(r)), &(r)->origin_ip, &(r)->stack_len)

struct origin_fields {
	__u64 ip, sp, start, end;
	__u32 cls, flags;
};

static __always_inline __u32 fill_origin(void *ctx, struct kt_header *h, __u32 off, __u64 *fields, __u16 *lens)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(t);
	struct origin_fields *of = (struct origin_fields *)fields;
	struct vma_info o = {};
	__u8 *buf = (__u8 *)h;
	__u64 ip = PT_REGS_IP_CORE(regs);

	of->cls = classify_origin(t, ip, &o);
	of->ip = ip;
	of->sp = PT_REGS_SP_CORE(regs);
	of->start = o.start;
	of->end = o.end;
	of->flags = o.flags & 7;

	if (off > TAIL_LIMIT)
		return off;
	long n = bpf_get_stack(ctx, &buf[off & OFF_MASK], KT_STACK_FRAMES * 8, BPF_F_USER_STACK);
	if (n > 0) {
		lens[0] = n;
		off += n & (KT_STACK_FRAMES * 8 * 2 - 1);
	}
	if (of->cls == KT_ORIGIN_ANON) {
		/* the bytes around the origin, within its page: the pages beside it may
		 * never have been touched, and a fault cannot be taken here */
		__u64 page = ip & ~4095ULL;
		__u64 from = ip - KT_SAMPLE_BYTES / 2;
		if (from < page)
			from = page;
		__u64 len = page + 4096 - from;
		if (len > KT_SAMPLE_BYTES)
			len = KT_SAMPLE_BYTES;
		if (off <= TAIL_LIMIT && !bpf_probe_read_user(&buf[off & OFF_MASK], len & (KT_SAMPLE_BYTES * 2 - 1), (void *)from)) {
			lens[1] = len;
			off += len & (KT_SAMPLE_BYTES * 2 - 1);
		}
	}
	struct file *file = o.file;
	if (of->cls == KT_ORIGIN_FILE)
		off = put_path(h, off, __builtin_preserve_access_index(&file->f_path), 2, &lens[2]);
	return off;
}
