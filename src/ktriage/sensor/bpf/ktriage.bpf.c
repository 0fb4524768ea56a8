// SPDX-License-Identifier: GPL-2.0
/* ktriage kernel sensor: process, thread, image, file and network families.
 * Record layouts come from kt_records.h, generated from sensor/layouts.py. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

/* ---------------------------------------------------------------- process */

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
	if (!wanted_current())
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
	r->size = off;
	emit(r, KT_FAM_PROCESS);
	emit_interp();
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
	__u32 *depth = bpf_map_lookup_elem(&targets, &parent_tgid);
	if (!depth)
		return;
	__u32 d = *depth + 1;
	bpf_map_update_elem(&targets, &child_tgid, &d, BPF_NOEXIST);
}

static __always_inline int do_fork(struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	__u32 cpid = BPF_CORE_READ(child, pid);

	if (ctgid != ptgid)
		follow_child(ptgid, ctgid);
	if (!wanted_current())
		return 0;
	if (cpid == ctgid) {
		struct kt_fork *r = BEGIN(kt_fork, KT_KIND_FORK);
		if (!r)
			return 0;
		r->child_pid = ctgid;
		emit(r, KT_FAM_PROCESS);
	} else {
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
	if (wanted_current()) {
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

SEC("tracepoint/syscalls/sys_exit_mmap")
int sys_exit_mmap(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	__u64 prot = ARG3(regs), flags = ARG4(regs);
	long fd = (long)ARG5(regs);

	if (ctx->ret < 0 && ctx->ret > -4096)
		return 0;
	if (!(prot & PROT_EXEC) || (flags & MAP_ANONYMOUS) || fd < 0 || !wanted_current())
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

/* ------------------------------------------------------------------- file */

static __always_inline int open_exit(long ret, __u32 flags, __u32 mode)
{
	if (!(flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) || ret < 0 || !wanted_current())
		return 0;
	struct file *f = fd_file(bpf_get_current_task_btf(), ret);
	if (!f)
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
	struct pt_regs *regs = uregs();
	return open_exit(ctx->ret, ARG3(regs), ARG4(regs));
}

SEC("tracepoint/syscalls/sys_exit_open")
int sys_exit_open(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	return open_exit(ctx->ret, ARG2(regs), ARG3(regs));
}

SEC("tracepoint/syscalls/sys_exit_creat")
int sys_exit_creat(struct trace_event_raw_sys_exit *ctx)
{
	return open_exit(ctx->ret, O_CREAT | O_WRONLY | O_TRUNC, ARG2(uregs()));
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int sys_exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	struct open_how how = {};
	bpf_probe_read_user(&how, sizeof(how), (void *)ARG3(uregs()));
	return open_exit(ctx->ret, how.flags, how.mode);
}

static __always_inline int path_op(long ret, __u32 op, long dfd, const char *name, long dfd2, const char *name2, __u32 mode)
{
	if (ret != 0 || !wanted_current())
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
	struct pt_regs *regs = uregs();
	return path_op(ctx->ret, KT_FILE_RENAME, AT_FDCWD, (void *)ARG1(regs), AT_FDCWD, (void *)ARG2(regs), 0);
}

SEC("tracepoint/syscalls/sys_exit_renameat")
int sys_exit_renameat(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	return path_op(ctx->ret, KT_FILE_RENAME, ARG1(regs), (void *)ARG2(regs), ARG3(regs), (void *)ARG4(regs), 0);
}

SEC("tracepoint/syscalls/sys_exit_renameat2")
int sys_exit_renameat2(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	return path_op(ctx->ret, KT_FILE_RENAME, ARG1(regs), (void *)ARG2(regs), ARG3(regs), (void *)ARG4(regs), 0);
}

SEC("tracepoint/syscalls/sys_exit_unlink")
int sys_exit_unlink(struct trace_event_raw_sys_exit *ctx)
{
	return path_op(ctx->ret, KT_FILE_UNLINK, AT_FDCWD, (void *)ARG1(uregs()), 0, NULL, 0);
}

SEC("tracepoint/syscalls/sys_exit_unlinkat")
int sys_exit_unlinkat(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	if (ARG3(regs) & 0x200) /* AT_REMOVEDIR */
		return 0;
	return path_op(ctx->ret, KT_FILE_UNLINK, ARG1(regs), (void *)ARG2(regs), 0, NULL, 0);
}

SEC("tracepoint/syscalls/sys_exit_chmod")
int sys_exit_chmod(struct trace_event_raw_sys_exit *ctx)
{
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
	return chmodat_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_fchmodat2")
int sys_exit_fchmodat2(struct trace_event_raw_sys_exit *ctx)
{
	return chmodat_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_fchmod")
int sys_exit_fchmod(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	__u32 mode = ARG2(regs);
	if (ctx->ret != 0 || !(mode & 0111) || !wanted_current())
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

/* ---------------------------------------------------------------- network */

struct flow_key {
	__u64 sk;
	__u32 tgid;
	__u16 port;
	__u16 dir;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct flow_key);
	__type(value, __u8);
} udp_flows SEC(".maps");

static __always_inline struct sock *fd_sock(long fd)
{
	struct file *f = fd_file(bpf_get_current_task_btf(), fd);
	if (!f)
		return NULL;
	__u32 imode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((imode & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(sock, sk);
}

static __always_inline void sock_local(struct kt_net *r, struct sock *sk)
{
	r->af = BPF_CORE_READ(sk, __sk_common.skc_family);
	r->proto = BPF_CORE_READ(sk, sk_protocol);
	r->sotype = BPF_CORE_READ(sk, sk_type);
	r->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	r->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (r->af == AF_INET6)
		BPF_CORE_READ_INTO(&r->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
	else
		BPF_CORE_READ_INTO(&r->saddr, sk, __sk_common.skc_rcv_saddr);
}

static __always_inline void sock_remote(struct kt_net *r, struct sock *sk)
{
	r->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (r->af == AF_INET6)
		BPF_CORE_READ_INTO(&r->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	else
		BPF_CORE_READ_INTO(&r->daddr, sk, __sk_common.skc_daddr);
}

/* Remote endpoint from a user sockaddr; false when it is not IPv4/IPv6. */
static __always_inline bool user_remote(struct kt_net *r, const void *uaddr)
{
	struct {
		__u16 family;
		__u16 port;
		__u32 flowinfo_or_v4;
		__u8 v6[16];
	} sa = {};
	if (!uaddr || bpf_probe_read_user(&sa, sizeof(sa), uaddr))
		return false;
	r->dport = bpf_ntohs(sa.port);
	if (sa.family == AF_INET) {
		__builtin_memcpy(r->daddr, &sa.flowinfo_or_v4, 4);
		return true;
	}
	if (sa.family == AF_INET6) {
		__builtin_memcpy(r->daddr, sa.v6, 16);
		return true;
	}
	return false;
}

static __always_inline bool inet(struct sock *sk)
{
	__u16 af = BPF_CORE_READ(sk, __sk_common.skc_family);
	return af == AF_INET || af == AF_INET6;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int sys_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	if (!wanted_current())
		return 0;
	struct sock *sk = fd_sock(ARG1(regs));
	if (!sk || !inet(sk))
		return 0;
	struct kt_net *r = BEGIN(kt_net, KT_KIND_NET);
	if (!r)
		return 0;
	r->op = KT_NET_CONNECT;
	r->ret = ctx->ret;
	sock_local(r, sk);
	if (!user_remote(r, (void *)ARG2(regs)))
		sock_remote(r, sk);
	emit(r, KT_FAM_NETWORK);
	return 0;
}

static __always_inline int accept_exit(long ret)
{
	if (ret < 0 || !wanted_current())
		return 0;
	struct sock *sk = fd_sock(ret);
	if (!sk || !inet(sk))
		return 0;
	struct kt_net *r = BEGIN(kt_net, KT_KIND_NET);
	if (!r)
		return 0;
	r->op = KT_NET_ACCEPT;
	sock_local(r, sk);
	sock_remote(r, sk);
	emit(r, KT_FAM_NETWORK);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int sys_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int sys_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_listen")
int sys_exit_listen(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret != 0 || !wanted_current())
		return 0;
	struct sock *sk = fd_sock(ARG1(uregs()));
	if (!sk || !inet(sk))
		return 0;
	struct kt_net *r = BEGIN(kt_net, KT_KIND_NET);
	if (!r)
		return 0;
	r->op = KT_NET_LISTEN;
	sock_local(r, sk);
	emit(r, KT_FAM_NETWORK);
	return 0;
}

/* First datagram of each UDP flow (process, socket, peer, direction). */
static __always_inline int udp_flow(long ret, long fd, const void *uaddr, __u16 op)
{
	if (ret < 0 || !wanted_current())
		return 0;
	struct sock *sk = fd_sock(fd);
	if (!sk || !inet(sk) || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
		return 0;
	struct kt_net *r = BEGIN(kt_net, KT_KIND_NET);
	if (!r)
		return 0;
	r->op = op;
	r->ret = ret;
	sock_local(r, sk);
	if (!user_remote(r, uaddr))
		sock_remote(r, sk);
	if (!r->dport)
		return 0;
	struct flow_key key = {.sk = (__u64)sk, .tgid = r->pid, .port = r->dport, .dir = op};
	__builtin_memcpy(key.addr, r->daddr, 16);
	__u8 one = 1;
	if (bpf_map_update_elem(&udp_flows, &key, &one, BPF_NOEXIST))
		return 0; /* flow already reported */
	emit(r, KT_FAM_NETWORK);
	return 0;
}

static __always_inline const void *msg_name(const struct user_msghdr *msg)
{
	void *name = NULL;
	bpf_probe_read_user(&name, sizeof(name), &msg->msg_name);
	return name;
}

SEC("tracepoint/syscalls/sys_exit_sendto")
int sys_exit_sendto(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	return udp_flow(ctx->ret, ARG1(regs), (void *)ARG5(regs), KT_NET_UDP_SEND);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int sys_exit_recvfrom(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	return udp_flow(ctx->ret, ARG1(regs), (void *)ARG5(regs), KT_NET_UDP_RECV);
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int sys_exit_sendmsg(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	return udp_flow(ctx->ret, ARG1(regs), msg_name((void *)ARG2(regs)), KT_NET_UDP_SEND);
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int sys_exit_recvmsg(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	return udp_flow(ctx->ret, ARG1(regs), msg_name((void *)ARG2(regs)), KT_NET_UDP_RECV);
}

/* sendmmsg/recvmmsg: the first message names the peer (resolvers batch A+AAAA). */
SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int sys_exit_sendmmsg(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	return udp_flow(ctx->ret, ARG1(regs), msg_name((void *)ARG2(regs)), KT_NET_UDP_SEND);
}

SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int sys_exit_recvmmsg(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	return udp_flow(ctx->ret, ARG1(regs), msg_name((void *)ARG2(regs)), KT_NET_UDP_RECV);
}

SEC("tracepoint/syscalls/sys_exit_socket")
int sys_exit_socket(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = uregs();
	__u32 af = ARG1(regs), type = ARG2(regs) & 0xf, proto = ARG3(regs);
	bool raw = type == SOCK_RAW || af == AF_PACKET || proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6;
	if (ctx->ret < 0 || !raw || !wanted_current())
		return 0;
	struct kt_net *r = BEGIN(kt_net, KT_KIND_NET);
	if (!r)
		return 0;
	r->op = KT_NET_SOCKET;
	r->af = af;
	r->sotype = type;
	r->proto = proto;
	r->ret = ctx->ret;
	emit(r, KT_FAM_NETWORK);
	return 0;
}
