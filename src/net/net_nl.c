/* rtnetlink, for what the agent changes on every start and stop of a guest:
 * a tap's master and state, and its tbf qdisc. Each request is one message
 * on a socket of its own, answered by the kernel's ack; no ip or tc exec. */
#include <errno.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/net_internal.h"

#define NL_BUF 1024

struct nl_msg {
	union {
		struct nlmsghdr h;
		uint8_t raw[NL_BUF];
	} u;
};

/* Appends attribute type with len bytes of data; returns its start, or
 * NULL when the message is full. */
static struct rtattr *nl_put(struct nl_msg *m, unsigned short type, const void *data, size_t len)
{
	size_t off = NLMSG_ALIGN(m->u.h.nlmsg_len);
	struct rtattr *a = (struct rtattr *)(m->u.raw + off);

	if (off + RTA_SPACE(len) > sizeof(m->u.raw))
		return NULL;
	a->rta_type = type;
	a->rta_len = (unsigned short)RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(a), data, len);
	m->u.h.nlmsg_len = (uint32_t)(off + RTA_SPACE(len));
	return a;
}

static void nl_end_nest(struct nl_msg *m, struct rtattr *nest)
{
	nest->rta_len = (unsigned short)(m->u.raw + m->u.h.nlmsg_len - (uint8_t *)nest);
}

/* Sends m and waits for the kernel's answer: 0, or its -errno. */
static int nl_talk(struct nl_msg *m)
{
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	uint8_t buf[4096];
	int fd, r;

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return -errno;
	m->u.h.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	m->u.h.nlmsg_seq = 1;
	if (sendto(fd, m->u.raw, m->u.h.nlmsg_len, 0, (struct sockaddr *)&kernel,
	           sizeof(kernel)) < 0) {
		r = -errno;
		goto out;
	}
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto out;
		}
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)n);
		     h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_seq != 1)
				continue;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);
				r = e->error; /* 0 is the ack */
				goto out;
			}
		}
	}
out:
	close(fd);
	return r;
}

int nb_net_nl_link_master_up(const char *dev, const char *master)
{
	struct nl_msg m = {0};
	struct ifinfomsg *ifi;
	uint32_t mi = master ? if_nametoindex(master) : 0;
	int idx = (int)if_nametoindex(dev);

	if (!idx || (master && !mi))
		return -ENODEV;
	m.u.h.nlmsg_len = NLMSG_LENGTH(sizeof(*ifi));
	m.u.h.nlmsg_type = RTM_NEWLINK;
	ifi = NLMSG_DATA(&m.u.h);
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = idx;
	ifi->ifi_flags = IFF_UP;
	ifi->ifi_change = IFF_UP;
	if (master && !nl_put(&m, IFLA_MASTER, &mi, sizeof(mi)))
		return -ENOBUFS;
	return nl_talk(&m);
}

int nb_net_nl_link_delete(const char *dev)
{
	struct nl_msg m = {0};
	struct ifinfomsg *ifi;
	int idx = (int)if_nametoindex(dev);

	if (!idx)
		return -ENODEV;
	m.u.h.nlmsg_len = NLMSG_LENGTH(sizeof(*ifi));
	m.u.h.nlmsg_type = RTM_DELLINK;
	ifi = NLMSG_DATA(&m.u.h);
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = idx;
	return nl_talk(&m);
}

static void tc_head(struct nl_msg *m, int type, int flags, int idx)
{
	struct tcmsg *t;

	m->u.h.nlmsg_len = NLMSG_LENGTH(sizeof(*t));
	m->u.h.nlmsg_type = (uint16_t)type;
	m->u.h.nlmsg_flags = (uint16_t)flags;
	t = NLMSG_DATA(&m->u.h);
	t->tcm_family = AF_UNSPEC;
	t->tcm_ifindex = idx;
	t->tcm_parent = TC_H_ROOT;
	t->tcm_handle = 0;
}

int nb_net_nl_tbf(const char *dev, uint64_t bytes_per_s, uint32_t burst, uint32_t latency_ms)
{
	struct nl_msg m = {0};
	struct tc_tbf_qopt q = {0};
	struct rtattr *opts;
	int idx = (int)if_nametoindex(dev);
	uint64_t limit;

	if (!idx)
		return -ENODEV;
	if (!bytes_per_s || !burst)
		return -EINVAL;
	tc_head(&m, RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE, idx);
	/* the queue holds what the rate drains in latency_ms, plus a burst */
	limit = bytes_per_s * latency_ms / 1000 + burst;
	q.rate.rate = bytes_per_s > UINT32_MAX ? UINT32_MAX : (uint32_t)bytes_per_s;
	/* Ethernet link layer: the kernel computes its own rate table */
	q.rate.linklayer = TC_LINKLAYER_ETHERNET;
	q.limit = limit > UINT32_MAX ? UINT32_MAX : (uint32_t)limit;
	if (!nl_put(&m, TCA_KIND, "tbf", 4) || !(opts = nl_put(&m, TCA_OPTIONS, NULL, 0)) ||
	    !nl_put(&m, TCA_TBF_PARMS, &q, sizeof(q)) ||
	    !nl_put(&m, TCA_TBF_BURST, &burst, sizeof(burst)) ||
	    (bytes_per_s > UINT32_MAX && !nl_put(&m, TCA_TBF_RATE64, &bytes_per_s, 8)))
		return -ENOBUFS;
	nl_end_nest(&m, opts);
	return nl_talk(&m);
}

int nb_net_nl_root_qdisc_delete(const char *dev)
{
	struct nl_msg m = {0};
	int idx = (int)if_nametoindex(dev), r;

	if (!idx)
		return -ENODEV;
	tc_head(&m, RTM_DELQDISC, 0, idx);
	r = nl_talk(&m);
	/* no root qdisc of ours (the default one cannot be deleted) */
	return r == -ENOENT || r == -EINVAL ? 0 : r;
}
