/* network family */
#pragma once
#include "common.h"

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
	WANT(FAM(NETWORK));
	struct pt_regs *regs = uregs();
	if (!wanted_current(KT_FAM_NETWORK))
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
	if (ret < 0 || !wanted_current(KT_FAM_NETWORK))
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
	WANT(FAM(NETWORK));
	return accept_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int sys_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(NETWORK));
	return accept_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_listen")
int sys_exit_listen(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(NETWORK));
	if (ctx->ret != 0 || !wanted_current(KT_FAM_NETWORK))
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
	if (ret < 0 || !wanted_current(KT_FAM_NETWORK))
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
	WANT(FAM(NETWORK));
	struct pt_regs *regs = uregs();
	return udp_flow(ctx->ret, ARG1(regs), (void *)ARG5(regs), KT_NET_UDP_SEND);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int sys_exit_recvfrom(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(NETWORK));
	struct pt_regs *regs = uregs();
	return udp_flow(ctx->ret, ARG1(regs), (void *)ARG5(regs), KT_NET_UDP_RECV);
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int sys_exit_sendmsg(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(NETWORK));
	struct pt_regs *regs = uregs();
	return udp_flow(ctx->ret, ARG1(regs), msg_name((void *)ARG2(regs)), KT_NET_UDP_SEND);
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int sys_exit_recvmsg(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(NETWORK));
	struct pt_regs *regs = uregs();
	return udp_flow(ctx->ret, ARG1(regs), msg_name((void *)ARG2(regs)), KT_NET_UDP_RECV);
}

/* sendmmsg/recvmmsg: the first message names the peer (resolvers batch A+AAAA). */
SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int sys_exit_sendmmsg(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(NETWORK));
	struct pt_regs *regs = uregs();
	return udp_flow(ctx->ret, ARG1(regs), msg_name((void *)ARG2(regs)), KT_NET_UDP_SEND);
}

SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int sys_exit_recvmmsg(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(NETWORK));
	struct pt_regs *regs = uregs();
	return udp_flow(ctx->ret, ARG1(regs), msg_name((void *)ARG2(regs)), KT_NET_UDP_RECV);
}

SEC("tracepoint/syscalls/sys_exit_socket")
int sys_exit_socket(struct trace_event_raw_sys_exit *ctx)
{
	WANT(FAM(NETWORK));
	struct pt_regs *regs = uregs();
	__u32 af = ARG1(regs), type = ARG2(regs) & 0xf, proto = ARG3(regs);
	bool raw = type == SOCK_RAW || af == AF_PACKET || proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6;
	if (ctx->ret < 0 || !raw || !wanted_current(KT_FAM_NETWORK))
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
