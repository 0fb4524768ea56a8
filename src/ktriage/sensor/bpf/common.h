/* Shared helpers of the ktriage BPF programs: maps, record assembly, paths. */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "kt_records.h"

#define BUF_SIZE 32768            /* per-CPU record scratch */
#define BUF_MASK (BUF_SIZE - 1)
#define OFF_MASK 16383            /* offsets where a string may start */
#define TAIL_LIMIT 12287          /* no string starts beyond this offset */
#define STR_MASK (KT_MAX_STR - 1)
#define PATH_BUF 8192             /* per-CPU path assembly, written backwards */
#define PATH_MASK (PATH_BUF - 1)
#define PATH_DEPTH 64
#define NAME_MASK 255

#define AT_FDCWD -100
#define O_WRONLY 01
#define O_RDWR 02
#define O_CREAT 0100
#define O_TRUNC 01000
#define S_IFMT 00170000
#define S_IFREG 0100000
#define S_IFSOCK 0140000
#define AF_INET 2
#define AF_INET6 10
#define AF_PACKET 17
#define SOCK_RAW 3
#define IPPROTO_ICMP 1
#define IPPROTO_UDP 17
#define IPPROTO_ICMPV6 58
#define PROT_EXEC 0x4
#define MAP_ANONYMOUS 0x20
#define AT_BASE 7
#define VM_EXEC 0x4
#define EINPROGRESS 115

struct scratch {
	__u8 buf[BUF_SIZE];
};

struct pathscratch {
	char b[PATH_BUF + NAME_MASK + 1];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20); /* resized by the loader before load */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pathscratch);
} pathscratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kt_stats);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kt_config);
} kt_cfg SEC(".maps");

/* Processes followed when a pid set is active: tgid -> depth below a root and
 * the families (streams) reported for it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct kt_target);
} targets SEC(".maps");

/* The global sequence number (a gap in seq is a drop). A map, not a .bss global: libbpf keeps a
 * writable mmap of .bss, which cannot be frozen, and a rewritten counter would make new events
 * collide with stored ones. Frozen after start-up like every map user space no longer writes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} kt_seq SEC(".maps");

/* ktriage's own maps, programs and links (type, id), filled after attach and frozen: the bpf()
 * watch (tamper.bpf.h) compares the object a command names with these. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct kt_own_key);
	__type(value, __u32);
} kt_own SEC(".maps");

struct kt_all_records *kt_btf_anchor; /* keeps every record layout in the BTF */

static __always_inline struct kt_config *cfg(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&kt_cfg, &zero);
}

/* The families (bit = KT_FAM_*) wanted from the current task: checked before
 * any other work, so that unwanted tasks cost two map lookups at most. */
static __always_inline __u32 current_mask(void)
{
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tgid = pt >> 32;
	struct kt_config *c = cfg();
	if (!c)
		return 0;
	if (tgid == c->self_tgid)
		return c->calib_tid && (__u32)pt == c->calib_tid ? ~0u : 0;
	if (tgid == c->peer_tgid && tgid)
		return 0;
	if (!c->filter)
		return c->mask;
	struct kt_target *t = bpf_map_lookup_elem(&targets, &tgid);
	return t ? t->mask : 0;
}

/* First statement of a hot handler: leave before touching arguments when no
 * family it serves is wanted from this task. */
#define WANT(families)                                  \
	do {                                            \
		if (!(current_mask() & (families)))     \
			return 0;                       \
	} while (0)
#define FAM(f) (1u << KT_FAM_##f)

static __always_inline bool wanted_current(__u32 family)
{
	return current_mask() >> family & 1;
}

static __always_inline struct kt_header *begin(__u16 kind, __u32 fixed)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return NULL;
	struct kt_header *h = (void *)s->buf;
	struct task_struct *t = bpf_get_current_task_btf();
	__u64 pt = bpf_get_current_pid_tgid();
	__u64 ug = bpf_get_current_uid_gid();

	__builtin_memset(s->buf, 0, fixed);
	h->ts = bpf_ktime_get_boot_ns();
	h->kind = kind;
	h->size = fixed;
	h->pid = pt >> 32;
	h->tid = (__u32)pt;
	h->ppid = BPF_CORE_READ(t, real_parent, tgid);
	h->uid = (__u32)ug;
	h->gid = ug >> 32;
	h->cpu = bpf_get_smp_processor_id();
	h->mntns = BPF_CORE_READ(t, nsproxy, mnt_ns, ns.inum);
	bpf_get_current_comm(h->comm, sizeof(h->comm));
	return h;
}

#define BEGIN(type, kind) ((struct type *)begin(kind, sizeof(struct type)))

/* urgent: this record alone may complete a detection (a fileless exec), whatever its family */
static __always_inline void emit_record(void *rec, __u32 family, bool urgent)
{
	struct kt_header *h = rec;
	__u32 zero = 0;
	struct kt_stats *st = bpf_map_lookup_elem(&stats, &zero);

	struct kt_config *c = cfg();
	/* Waking the consumer costs a wakeup (an interrupt: dear in a VM) and a Python round trip:
	 * bulk families do not wake it; it reads them on its timer, or when the pending data
	 * crosses wakeup_bytes (once: a reader that finds records reads on without sleeping). Records
	 * that complete detections wake it at once. */
	bool wake = urgent || !c || (c->wake_mask >> family & 1);
	if (!wake) {
		__u64 pending = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
		wake = pending < c->wakeup_bytes && pending + h->size >= c->wakeup_bytes;
	}
	__u64 flags = wake ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;

	__u64 *seq = bpf_map_lookup_elem(&kt_seq, &zero);
	h->seq = seq ? __sync_fetch_and_add(seq, 1) : 0;
	if (st && family < KT_NFAM)
		st->sent[family]++;
	if (bpf_ringbuf_output(&events, rec, h->size & BUF_MASK, flags) && st && family < KT_NFAM)
		st->lost[family]++;
}

static __always_inline void emit(void *rec, __u32 family)
{
	emit_record(rec, family, false);
}

/* Each append returns the new end of the record; a string that cannot start
 * below TAIL_LIMIT, or is cut at its bound, sets its bit in h->trunc. */
static __always_inline __u32 put_user_str(struct kt_header *h, __u32 off, const char *src, int idx, __u16 *len)
{
	__u8 *buf = (__u8 *)h;
	if (off > TAIL_LIMIT) {
		h->trunc |= 1 << idx;
		return off;
	}
	long n = bpf_probe_read_user_str(&buf[off & OFF_MASK], KT_MAX_STR, src);
	if (n <= 0)
		return off;
	if (n == KT_MAX_STR)
		h->trunc |= 1 << idx;
	*len = n - 1;
	return off + n - 1;
}

static __always_inline __u32 put_kernel_str(struct kt_header *h, __u32 off, const char *src, int idx, __u16 *len)
{
	__u8 *buf = (__u8 *)h;
	if (off > TAIL_LIMIT) {
		h->trunc |= 1 << idx;
		return off;
	}
	long n = bpf_probe_read_kernel_str(&buf[off & OFF_MASK], KT_MAX_STR, src);
	if (n <= 0)
		return off;
	if (n == KT_MAX_STR)
		h->trunc |= 1 << idx;
	*len = n - 1;
	return off + n - 1;
}

static __always_inline __u32 put_user_bytes(struct kt_header *h, __u32 off, const void *src, __u64 n, int idx, __u16 *len)
{
	__u8 *buf = (__u8 *)h;
	if (off > TAIL_LIMIT) {
		h->trunc |= 1 << idx;
		return off;
	}
	if (n > KT_MAX_STR - 1) {
		n = KT_MAX_STR - 1;
		h->trunc |= 1 << idx;
	}
	n &= STR_MASK;
	if (bpf_probe_read_user(&buf[off & OFF_MASK], n, src))
		return off;
	*len = n;
	return off + n;
}

struct walk_ctx {
	struct dentry *dentry;
	struct mount *mnt;
	__u32 pos;
	__u32 trunc;
};

/* One step of the dentry walk towards the root, crossing mount points. */
static long walk_step(__u32 i, struct walk_ctx *c)
{
	__u32 zero = 0;
	struct pathscratch *ps = bpf_map_lookup_elem(&pathscratch, &zero);
	if (!ps)
		return 1;
	struct dentry *d = c->dentry;
	struct mount *m = c->mnt;
	struct dentry *root = BPF_CORE_READ(m, mnt.mnt_root);
	struct dentry *parent = BPF_CORE_READ(d, d_parent);

	if (d == root) {
		struct mount *up = BPF_CORE_READ(m, mnt_parent);
		if (up == m)
			return 1; /* the root of this mount tree */
		c->dentry = BPF_CORE_READ(m, mnt_mountpoint);
		c->mnt = up;
		return 0;
	}
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	__u32 len = BPF_CORE_READ(d, d_name.len) & NAME_MASK;
	__u32 pos = c->pos & PATH_MASK;
	if (pos < len + 1) {
		c->trunc = 1;
		return 1;
	}
	pos -= len;
	bpf_probe_read_kernel(&ps->b[pos & PATH_MASK], len, name);
	pos -= 1;
	ps->b[pos & PATH_MASK] = '/';
	c->pos = pos;
	c->dentry = parent;
	return d == parent; /* a detached dentry (memfd, pipe): its name is the whole path */
}

/* Assemble the absolute path of (dentry, vfsmount) at the end of the path
 * scratch; returns the start offset, bit 31 set when components were lost. */
static __noinline __u32 walk_path(struct dentry *dentry, struct vfsmount *vfsmnt)
{
	__u32 zero = 0;
	struct pathscratch *ps = bpf_map_lookup_elem(&pathscratch, &zero);
	if (!ps)
		return PATH_BUF - 1;
	struct walk_ctx c = {
		.dentry = dentry,
		.mnt = container_of(vfsmnt, struct mount, mnt),
		.pos = PATH_BUF - 1,
	};
	ps->b[PATH_BUF - 1] = 0;
	long steps = bpf_loop(PATH_DEPTH, walk_step, &c, 0);
	if (steps >= PATH_DEPTH)
		c.trunc = 1;
	__u32 pos = c.pos & PATH_MASK;
	if (pos == PATH_BUF - 1) {
		pos -= 1;
		ps->b[pos & PATH_MASK] = '/';
	}
	return pos | (c.trunc << 31);
}

/* Append the absolute path of a struct path. */
static __always_inline __u32 put_path(struct kt_header *h, __u32 off, const struct path *p, int idx, __u16 *len)
{
	__u8 *buf = (__u8 *)h;
	struct dentry *d = BPF_CORE_READ(p, dentry);
	struct vfsmount *m = BPF_CORE_READ(p, mnt);
	__u32 zero = 0;
	struct pathscratch *ps;

	if (!d || !m)
		return off;
	if (off > TAIL_LIMIT) {
		h->trunc |= 1 << idx;
		return off;
	}
	__u32 r = walk_path(d, m);
	ps = bpf_map_lookup_elem(&pathscratch, &zero);
	if (!ps)
		return off;
	__u32 start = r & PATH_MASK;
	__u32 n = (PATH_BUF - 1) - start;
	if (r >> 31)
		h->trunc |= 1 << idx;
	if (n > KT_MAX_STR - 1) {
		start = PATH_BUF - KT_MAX_STR; /* keep the leaf end of an over-long path */
		n = KT_MAX_STR - 1;
		h->trunc |= 1 << idx;
	}
	if (bpf_probe_read_kernel(&buf[off & OFF_MASK], n & STR_MASK, &ps->b[start & PATH_MASK]))
		return off;
	*len = n;
	return off + n;
}

static __always_inline struct file *fd_file(struct task_struct *t, long fd)
{
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	struct file **arr = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;

	if (fd < 0 || fd >= max)
		return NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &arr[fd]);
	return f;
}

/* Append dir(dfd) + "/" + name, or name alone when it is absolute. */
static __always_inline __u32 put_at_path(struct kt_header *h, __u32 off, long dfd, const char *name, int idx, __u16 *len)
{
	__u8 *buf = (__u8 *)h;
	struct task_struct *t = bpf_get_current_task_btf();
	char first = 0;
	__u16 dlen = 0, nlen = 0;
	const struct path *dir;

	bpf_probe_read_user(&first, 1, name);
	if (first == '/')
		return put_user_str(h, off, name, idx, len);
	if (dfd == AT_FDCWD) {
		struct fs_struct *fs = BPF_CORE_READ(t, fs);
		dir = __builtin_preserve_access_index(&fs->pwd);
	} else {
		struct file *f = fd_file(t, dfd);
		if (!f)
			return put_user_str(h, off, name, idx, len);
		dir = __builtin_preserve_access_index(&f->f_path);
	}
	__u32 end = put_path(h, off, dir, idx, &dlen);
	if (end > TAIL_LIMIT) {
		h->trunc |= 1 << idx;
		*len = dlen;
		return end;
	}
	buf[end & OFF_MASK] = '/';
	end = put_user_str(h, end + 1, name, idx, &nlen);
	*len = dlen + 1 + nlen;
	return end;
}

/* A mapping, as bpf_find_vma's callback copies it out. */
struct vma_info {
	__u64 start, end, pgoff, flags;
	struct file *file;
};

static long vma_cb(struct task_struct *task, struct vm_area_struct *vma, struct vma_info *out)
{
	out->start = BPF_CORE_READ(vma, vm_start);
	out->end = BPF_CORE_READ(vma, vm_end);
	out->pgoff = BPF_CORE_READ(vma, vm_pgoff);
	out->flags = BPF_CORE_READ(vma, vm_flags);
	out->file = BPF_CORE_READ(vma, vm_file);
	return 0;
}

static __always_inline struct pt_regs *uregs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

#define ARG1(r) PT_REGS_PARM1_CORE_SYSCALL(r)
#define ARG2(r) PT_REGS_PARM2_CORE_SYSCALL(r)
#define ARG3(r) PT_REGS_PARM3_CORE_SYSCALL(r)
#define ARG4(r) PT_REGS_PARM4_CORE_SYSCALL(r)
#define ARG5(r) PT_REGS_PARM5_CORE_SYSCALL(r)
#if defined(__TARGET_ARCH_x86)
#define ARG6(r) BPF_CORE_READ(r, r9)
#elif defined(__TARGET_ARCH_arm64)
#define ARG6(r) BPF_CORE_READ(r, regs[5])
#endif
