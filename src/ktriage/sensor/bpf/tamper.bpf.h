/* Tamper evidence: other processes acting on ktriage itself.
 *
 * - bpf() commands that name one of ktriage's own maps, programs or links through an fd
 *   (writes, deletes, freeze, detach, and reads), whatever the target set: a bpf_tamper record.
 * - signals to ktriage's processes (the sensor, its watchdog), noted when they are generated, in
 *   the sender's context, into the pinned kt_sigmarks map: a SIGKILL leaves its sender behind,
 *   and a stopped sensor's stopper can be named by the watchdog while it is still stopped. */
#pragma once
#include "common.h"

#define SIGCHLD 17
#define SIGCONT 18
#define SIGURG 23
#define SIGWINCH 28
#define SI_KERNEL 0x80
#define TRACE_SIGNAL_DELIVERED 0
#define EXE_MAX 256
#define KT_OWN_READS 1 /* kt_own value: reads of this object are reported too */

/* tgid, signal -> the last such signal's sender; pinned (bpffs) by the loader before load and
 * frozen for user space: it survives the sensor and no process can rewrite it with bpf(). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 256);
	__type(key, struct kt_sigmark_key);
	__type(value, struct kt_sigmark);
} kt_sigmarks SEC(".maps");

/* The mark is assembled here, not in the record scratch: a signal may be generated while another
 * program of this CPU fills that one. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kt_sigmark);
} sigscratch SEC(".maps");

static __always_inline bool is_ktriage(struct kt_config *c, __u32 tgid)
{
	return tgid == c->self_tgid || (c->peer_tgid && tgid == c->peer_tgid);
}

static __always_inline void mark_exe(struct kt_sigmark *m)
{
	struct file *exe = BPF_CORE_READ(bpf_get_current_task_btf(), mm, exe_file);
	__u32 zero = 0;
	if (!exe)
		return;
	__u32 r = walk_path(BPF_CORE_READ(exe, f_path.dentry), BPF_CORE_READ(exe, f_path.mnt));
	struct pathscratch *ps = bpf_map_lookup_elem(&pathscratch, &zero);
	if (!ps)
		return;
	__u32 start = r & PATH_MASK, n = (PATH_BUF - 1) - start, cut = r >> 31;
	if (n > EXE_MAX - 1) {
		start = PATH_BUF - EXE_MAX; /* keep the leaf end */
		n = EXE_MAX - 1;
		cut = 1;
	}
	if (!bpf_probe_read_kernel(m->exe, n & (EXE_MAX - 1), &ps->b[start & PATH_MASK]))
		m->exe_len = n | cut << 31;
}

/* The early exit runs for every signal of the system: one array lookup, two compares. */
static __always_inline int sigmark(int sig, struct kernel_siginfo *info, __u32 tgid, __u32 tid, int result)
{
	struct kt_config *c = cfg();
	if (!c || !is_ktriage(c, tgid))
		return 0;
	__u64 pt = bpf_get_current_pid_tgid();
	/* a SIGCONT resumes a stopped process even when it is "ignored" (no handler): its time ends a stop */
	if ((result != TRACE_SIGNAL_DELIVERED && sig != SIGCONT) || sig == SIGCHLD || sig == SIGURG || sig == SIGWINCH
	    || is_ktriage(c, pt >> 32))
		return 0;
	__u32 zero = 0;
	struct kt_sigmark *m = bpf_map_lookup_elem(&sigscratch, &zero);
	if (!m)
		return 0;
	__builtin_memset(m, 0, sizeof(*m));
	m->ts = bpf_ktime_get_boot_ns();
	m->sender = pt >> 32;
	m->sender_tid = (__u32)pt;
	m->sig = sig;
	m->target_tid = tid;
	if ((unsigned long)info > 1) /* SEND_SIG_NOINFO (0): from user space; SEND_SIG_PRIV (1): the kernel */
		m->code = BPF_CORE_READ(info, si_code);
	else
		m->code = info ? SI_KERNEL : 0;
	bpf_get_current_comm(m->comm, sizeof(m->comm));
	mark_exe(m);
	struct kt_sigmark_key key = {.tgid = tgid, .sig = sig};
	bpf_map_update_elem(&kt_sigmarks, &key, m, BPF_ANY);
	return 0;
}

SEC("tp_btf/signal_generate")
int BPF_PROG(tp_btf_sigmark, int sig, struct kernel_siginfo *info, struct task_struct *task, int group, int result)
{
	return sigmark(sig, info, task->tgid, task->pid, result);
}

SEC("raw_tp/signal_generate")
int BPF_PROG(raw_tp_sigmark, int sig, struct kernel_siginfo *info, struct task_struct *task, int group, int result)
{
	return sigmark(sig, info, BPF_CORE_READ(task, tgid), BPF_CORE_READ(task, pid), result);
}

/* Where the command's attr names the object by fd, and what kind of object it is; 0: not watched. */
static __always_inline __u32 fd_object(__u32 cmd, __u32 *off)
{
	switch (cmd) {
	case BPF_MAP_LOOKUP_ELEM:
	case BPF_MAP_UPDATE_ELEM:
	case BPF_MAP_DELETE_ELEM:
	case BPF_MAP_GET_NEXT_KEY:
	case BPF_MAP_LOOKUP_AND_DELETE_ELEM:
	case BPF_MAP_FREEZE:
		*off = __builtin_offsetof(union bpf_attr, map_fd);
		return KT_OBJ_MAP;
	case BPF_MAP_LOOKUP_BATCH:
	case BPF_MAP_LOOKUP_AND_DELETE_BATCH:
	case BPF_MAP_UPDATE_BATCH:
	case BPF_MAP_DELETE_BATCH:
		*off = __builtin_offsetof(union bpf_attr, batch.map_fd);
		return KT_OBJ_MAP;
	case BPF_LINK_DETACH:
		*off = __builtin_offsetof(union bpf_attr, link_detach.link_fd);
		return KT_OBJ_LINK;
	case BPF_LINK_UPDATE:
		*off = __builtin_offsetof(union bpf_attr, link_update.link_fd);
		return KT_OBJ_LINK;
	case BPF_PROG_DETACH:
		*off = __builtin_offsetof(union bpf_attr, attach_bpf_fd);
		return KT_OBJ_PROG;
	}
	return 0;
}

static __always_inline __u32 object_id(__u32 type, void *obj)
{
	if (type == KT_OBJ_MAP)
		return BPF_CORE_READ((struct bpf_map *)obj, id);
	if (type == KT_OBJ_LINK)
		return BPF_CORE_READ((struct bpf_link *)obj, id);
	return BPF_CORE_READ((struct bpf_prog *)obj, aux, id);
}

/* bpf() by another process on one of ktriage's objects, reported whatever the target set and the
 * families asked for: the sensor's own integrity is not a stream one can turn off. */
static __always_inline int bpf_tamper_exit(struct trace_event_raw_sys_exit *ctx, struct pt_regs *regs, __u32 cmd)
{
	__u32 off = 0, fd = 0;
	__u32 type = fd_object(cmd, &off);
	struct kt_config *c = cfg();
	if (!type || !c || is_ktriage(c, bpf_get_current_pid_tgid() >> 32))
		return 0;
	bpf_probe_read_user(&fd, sizeof(fd), (void *)ARG2(regs) + off);
	struct file *f = fd_file(bpf_get_current_task_btf(), fd);
	if (!f)
		return 0;
	struct kt_own_key key = {.type = type, .id = object_id(type, BPF_CORE_READ(f, private_data))};
	__u32 *watch = bpf_map_lookup_elem(&kt_own, &key);
	bool read = cmd == BPF_MAP_LOOKUP_ELEM || cmd == BPF_MAP_GET_NEXT_KEY || cmd == BPF_MAP_LOOKUP_BATCH;
	if (!watch || (read && !(*watch & KT_OWN_READS)))
		return 0; /* the pinned marks are read by every ktriage instance: only writes to them count */
	struct kt_bpf_tamper *r = BEGIN(kt_bpf_tamper, KT_KIND_BPF_TAMPER);
	if (!r)
		return 0;
	r->cmd = cmd;
	r->obj_type = type;
	r->obj_id = key.id;
	r->result = ctx->ret;
	r->size = sizeof(*r);
	struct file *exe = BPF_CORE_READ(bpf_get_current_task_btf(), mm, exe_file);
	if (exe)
		r->size = put_path((void *)r, sizeof(*r), __builtin_preserve_access_index(&exe->f_path), 0, &r->exe_len);
	emit_record(r, KT_FAM_MODULE, true);
	return 0;
}
