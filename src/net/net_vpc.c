/* Tenant networks on a host (docs/network.md, "On a host"): a network
 * namespace per VPC, joined to the agent's namespace by a veth pair with
 * /31 transit addresses; inside it the bridge nbbr with each subnet's
 * gateway, 169.254.169.254 on lo, dnsmasq, the guests' taps, and the nft
 * tables `bridge nubo` (anti-spoofing) and `inet nubo` (security groups,
 * elastic IP NAT, masquerade). In the agent's namespace: `inet nubo-host`
 * and the elastic IPs' /32 routes.
 *
 * Work inside a namespace is done by the calling thread: it setns()es
 * there and back (other threads stay where they are); commands forked
 * meanwhile start inside it, and the netlink sockets libnftables and
 * net_nl.c open belong to it. */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/util.h"
#include "net/net.h"
#include "net/net_internal.h"

#define NETNS_DIR "/run/netns"
#define VPC_BRIDGE "nbbr"
#define VPC_UPLINK "nbup"
#define METADATA_ADDR "169.254.169.254"
#define HOST_TABLE "nubo-host"
#define ROUTE_PROTO "213" /* marks the EIP routes nubo made */
#define TRANSIT_BASE 0x64400000u /* 100.64.0.0/10 */
#define MAX_RATE_MBPS 100000u
#define MAX_PORTS 4096
#define MAX_RULES 1000 /* per port and direction, after the groups are merged */
#define MAX_CIDRS 1000 /* per rule */

/* ---- names and addresses ---- */

void nb_net_vpc_ns_name(const char *state_dir, uint32_t vni, char out[NB_NET_NS_NAME_MAX])
{
	char hex[65];
	const char *s = state_dir ? state_dir : "";

	nb_sha256_hex(s, strlen(s), hex);
	snprintf(out, NB_NET_NS_NAME_MAX, "nb%.8s-%" PRIx32, hex, vni);
}

void nb_net_vpc_ns_prefix(const char *state_dir, char out[NB_NET_NS_NAME_MAX])
{
	char hex[65];
	const char *s = state_dir ? state_dir : "";

	nb_sha256_hex(s, strlen(s), hex);
	snprintf(out, NB_NET_NS_NAME_MAX, "nb%.8s-", hex);
}

int nb_net_vpc_transit(uint32_t vni, char host[16], char vpc[16])
{
	if (vni < 1 || vni > NB_NET_VNI_MAX)
		return -EINVAL;
	nb_net_fmt_addr(TRANSIT_BASE + 2 * vni, host);
	nb_net_fmt_addr(TRANSIT_BASE + 2 * vni + 1, vpc);
	return 0;
}

void nb_net_vpc_veth_name(uint32_t vni, char out[16])
{
	snprintf(out, 16, "nbx%" PRIx32, vni & 0xffffffu);
}

static bool ns_name_valid(const char *ns)
{
	size_t n = ns ? strlen(ns) : 0;

	if (n < 4 || n >= NB_NET_NS_NAME_MAX || !nb_str_has_prefix(ns, "nb"))
		return false;
	for (const char *p = ns; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-')
			return false;
	return true;
}

static bool ip_valid(const char *ip)
{
	struct in_addr in;

	return ip && inet_pton(AF_INET, ip, &in) == 1;
}

static bool mac_ok(const char *mac)
{
	if (!mac || strlen(mac) != 17)
		return false;
	for (int i = 0; i < 17; i++)
		if (i % 3 == 2 ? mac[i] != ':' : !isxdigit((unsigned char)mac[i]))
			return false;
	return true;
}

/* ---- entering a namespace ---- */

int nb_net_ns_enter(const char *ns, int *saved)
{
	char path[PATH_MAX];
	int fd, home, r = 0;

	*saved = -1;
	if (!ns_name_valid(ns))
		return -EINVAL;
	snprintf(path, sizeof(path), NETNS_DIR "/%s", ns);
	home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (home < 0)
		return -errno;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
		r = -errno;
		close(home);
	} else {
		*saved = home;
	}
	if (fd >= 0)
		close(fd);
	return r;
}

void nb_net_ns_leave(int saved)
{
	if (saved < 0)
		return;
	if (setns(saved, CLONE_NEWNET) < 0)
		abort(); /* a thread left in a tenant's namespace must not go on */
	close(saved);
}

bool nb_net_ns_exists(const char *ns)
{
	char path[PATH_MAX];

	if (!ns_name_valid(ns))
		return false;
	snprintf(path, sizeof(path), NETNS_DIR "/%s", ns);
	return nb_path_exists(path);
}

static int write_proc(const char *path, const char *value, char *err, size_t errsz)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), r = 0;
	size_t n = strlen(value);

	if (fd < 0 || write(fd, value, n) != (ssize_t)n)
		r = -errno;
	if (fd >= 0)
		close(fd);
	if (r < 0)
		nb_net_errf(err, errsz, "%s: %s", path, strerror(-r));
	return r;
}

static int run2(char *err, size_t errsz, const char *const argv[])
{
	return nb_net_run(argv, err, errsz);
}

/* ---- the VPC's namespace ---- */

/* Inside the namespace: lo, uplink, bridge, addresses, route, sysctls. */
static int vpc_inside(const struct nb_vpc *v, const char *host_addr, const char *vpc_addr,
                      char *err, size_t errsz)
{
	char a[32];
	int r;

	{
		const char *lo[] = {"ip", "link", "set", "dev", "lo", "up", NULL};
		const char *md[] = {"ip", "addr", "replace", METADATA_ADDR "/32", "dev", "lo", NULL};
		if ((r = run2(err, errsz, lo)) < 0 || (r = run2(err, errsz, md)) < 0)
			return r;
	}
	snprintf(a, sizeof(a), "%s/31", vpc_addr);
	{
		const char *ad[] = {"ip", "addr", "replace", a, "dev", VPC_UPLINK, NULL};
		const char *up[] = {"ip", "link", "set", "dev", VPC_UPLINK, "up", NULL};
		const char *rt[] = {"ip",  "route", "replace", "default", "via", host_addr,
		                    "dev", VPC_UPLINK, NULL};
		if ((r = run2(err, errsz, ad)) < 0 || (r = run2(err, errsz, up)) < 0 ||
		    (r = run2(err, errsz, rt)) < 0)
			return r;
	}
	if (!nb_net_link_exists(VPC_BRIDGE)) {
		const char *add[] = {"ip", "link", "add", "name", VPC_BRIDGE, "type", "bridge", NULL};
		if ((r = run2(err, errsz, add)) < 0)
			return r;
	}
	{
		/* the gateway's MAC stays what the guests learnt (net.h) */
		char mac[18];
		nb_net_bridge_mac(v->ns, mac);
		const char *hw[] = {"ip", "link", "set", "dev", VPC_BRIDGE, "address", mac, NULL};
		if ((r = run2(err, errsz, hw)) < 0)
			return r;
	}
	for (size_t i = 0; i < v->nsubnets; i++) {
		uint32_t net;
		int prefix;
		char gw[16];
		if (nb_net_cidr_parse(v->subnets[i].cidr, &net, &prefix) < 0) {
			nb_net_errf(err, errsz, "bad subnet cidr \"%s\"", v->subnets[i].cidr);
			return -EINVAL;
		}
		nb_net_fmt_addr(net + 1, gw);
		if (v->subnets[i].gateway && strcmp(v->subnets[i].gateway, gw)) {
			nb_net_errf(err, errsz, "gateway %s of %s is not its first address",
			            v->subnets[i].gateway, v->subnets[i].cidr);
			return -EINVAL;
		}
		snprintf(a, sizeof(a), "%s/%d", gw, prefix);
		const char *ad[] = {"ip", "addr", "replace", a, "dev", VPC_BRIDGE, NULL};
		if ((r = run2(err, errsz, ad)) < 0)
			return r;
	}
	{
		const char *up[] = {"ip", "link", "set", "dev", VPC_BRIDGE, "up", NULL};
		if ((r = run2(err, errsz, up)) < 0)
			return r;
	}
	if ((r = nb_net_ip_forward(err, errsz)) < 0)
		return r;
	/* Bridged IPv4 goes through the inet hooks, so the security groups
	 * (inet nubo) are stateful for guest-to-guest traffic too: this
	 * kernel family has no conntrack of its own in the bridge family on
	 * many kernels (CONFIG_NF_CONNTRACK_BRIDGE). */
	r = write_proc("/proc/sys/net/bridge/bridge-nf-call-iptables", "1\n", err, errsz);
	if (r < 0)
		return r;
	{
		const char *cidrs[NB_NET_MAX_RANGES];
		for (size_t i = 0; i < v->nsubnets; i++)
			cidrs[i] = v->subnets[i].cidr;
		r = nb_net_dnsmasq_ensure_ranges(v->dir, VPC_BRIDGE, cidrs, v->nsubnets, err, errsz);
	}
	return r;
}

int nb_net_vpc_ensure(const struct nb_vpc *v, char *err, size_t errsz)
{
	char host[16], vpc[16], veth[16], a[32];
	int r, saved;

	if (!v || !ns_name_valid(v->ns) || nb_net_vpc_transit(v->vni, host, vpc) < 0 ||
	    !v->dir || v->dir[0] != '/' || v->nsubnets < 1 || v->nsubnets > NB_NET_MAX_RANGES ||
	    !v->subnets) {
		nb_net_errf(err, errsz, "bad VPC (namespace name, VNI 1..%u, dir, 1..%d subnets)",
		            NB_NET_VNI_MAX, NB_NET_MAX_RANGES);
		return -EINVAL;
	}
	nb_net_vpc_veth_name(v->vni, veth);
	if (!nb_net_ns_exists(v->ns)) {
		const char *add[] = {"ip", "netns", "add", v->ns, NULL};
		if ((r = run2(err, errsz, add)) < 0)
			return r;
	}
	if (!nb_net_link_exists(veth)) {
		const char *add[] = {"ip",   "link", "add", veth, "type", "veth", "peer",
		                     "name", VPC_UPLINK, "netns", v->ns, NULL};
		if ((r = run2(err, errsz, add)) < 0)
			return r;
	}
	snprintf(a, sizeof(a), "%s/31", host);
	{
		const char *ad[] = {"ip", "addr", "replace", a, "dev", veth, NULL};
		const char *up[] = {"ip", "link", "set", "dev", veth, "up", NULL};
		if ((r = run2(err, errsz, ad)) < 0 || (r = run2(err, errsz, up)) < 0)
			return r;
	}
	if ((r = nb_net_ip_forward(err, errsz)) < 0)
		return r;
	r = nb_net_ns_enter(v->ns, &saved);
	if (r < 0) {
		nb_net_errf(err, errsz, "entering %s: %s", v->ns, strerror(-r));
		return r;
	}
	r = vpc_inside(v, host, vpc, err, errsz);
	nb_net_ns_leave(saved);
	return r;
}

int nb_net_vpc_delete(const char *ns, const char *dir)
{
	char path[PATH_MAX];
	int r = 0, e;

	if (!ns_name_valid(ns))
		return -EINVAL;
	/* dnsmasq first (it lives in the namespace and would keep it). */
	if (dir && dir[0] == '/') {
		r = nb_net_dnsmasq_stop(dir);
		if (r == 0)
			r = nb_net_dnsmasq_forget(dir);
		rmdir(dir);
	}
	{
		/* The host end of the veth goes now, and its peer with it: a
		 * namespace is only cleaned up later, in the kernel's own time. */
		const char *dash = strrchr(ns, '-');
		char veth[16];
		unsigned long vni = dash ? strtoul(dash + 1, NULL, 16) : 0;
		if (vni >= 1 && vni <= NB_NET_VNI_MAX) {
			nb_net_vpc_veth_name((uint32_t)vni, veth);
			if (nb_net_link_exists(veth)) {
				e = nb_net_nl_link_delete(veth);
				if (e < 0 && e != -ENODEV && r == 0)
					r = e;
			}
		}
	}
	snprintf(path, sizeof(path), NETNS_DIR "/%s", ns);
	if (nb_path_exists(path)) {
		/* Deleting the namespace deletes its taps, bridge and tables
		 * once nothing holds it. */
		const char *del[] = {"ip", "netns", "del", ns, NULL};
		nb_net_nft_forget(path);
		e = nb_net_run(del, NULL, 0);
		if (e < 0 && r == 0)
			r = e;
	}
	return r;
}

int nb_net_vpc_list(const char *prefix, char (*names)[NB_NET_NS_NAME_MAX], size_t max)
{
	DIR *d = opendir(NETNS_DIR);
	struct dirent *e;
	size_t n = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d)) && n < max) {
		if (!nb_str_has_prefix(e->d_name, prefix) || !ns_name_valid(e->d_name))
			continue;
		nb_strlcpy(names[n++], e->d_name, NB_NET_NS_NAME_MAX);
	}
	closedir(d);
	return (int)n;
}

/* ---- taps ---- */

static int tap_open(const char *tap, int *fd_out, char *err, size_t errsz)
{
	struct ifreq ifr;
	int fd, r = 0;

	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		nb_net_errf(err, errsz, "/dev/net/tun: %s", strerror(errno));
		return r;
	}
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	nb_strlcpy(ifr.ifr_name, tap, sizeof(ifr.ifr_name));
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		r = -errno;
		nb_net_errf(err, errsz, "TUNSETIFF %s: %s", tap, strerror(errno));
	} else if (ioctl(fd, TUNSETPERSIST, 1) < 0) {
		r = -errno;
		nb_net_errf(err, errsz, "TUNSETPERSIST %s: %s", tap, strerror(errno));
	}
	if (r < 0)
		close(fd);
	else
		*fd_out = fd;
	return r;
}

static int tap_args_ok(const char *ns, const char *tap, char *err, size_t errsz)
{
	if (!ns_name_valid(ns) || !nb_net_ifname_valid(tap) || !strcmp(tap, VPC_BRIDGE) ||
	    !strcmp(tap, VPC_UPLINK)) {
		nb_net_errf(err, errsz, "bad namespace or tap name \"%s\"", tap ? tap : "");
		return -EINVAL;
	}
	return 0;
}

int nb_net_vpc_tap_open(const char *ns, const char *tap, int *fd_out, char *err, size_t errsz)
{
	int r, saved, fd = -1;

	if (fd_out)
		*fd_out = -1;
	r = tap_args_ok(ns, tap, err, errsz);
	if (r < 0)
		return r;
	r = nb_net_ns_enter(ns, &saved);
	if (r < 0) {
		nb_net_errf(err, errsz, "entering %s: %s", ns, strerror(-r));
		return r;
	}
	if (!nb_net_link_exists(VPC_BRIDGE)) {
		nb_net_errf(err, errsz, "%s has no bridge %s", ns, VPC_BRIDGE);
		r = -ENOENT;
	} else {
		r = tap_open(tap, &fd, err, errsz);
	}
	nb_net_ns_leave(saved);
	if (r == 0 && fd_out)
		*fd_out = fd;
	else if (fd >= 0)
		close(fd);
	return r;
}

int nb_net_vpc_tap_attach(const char *ns, const char *tap, uint64_t rate_mbps, char *err,
                          size_t errsz)
{
	int r, saved;

	r = tap_args_ok(ns, tap, err, errsz);
	if (r < 0)
		return r;
	if (rate_mbps > MAX_RATE_MBPS) {
		nb_net_errf(err, errsz, "rate %" PRIu64 " Mbit/s is over %u", rate_mbps,
		            MAX_RATE_MBPS);
		return -EINVAL;
	}
	r = nb_net_ns_enter(ns, &saved);
	if (r < 0) {
		nb_net_errf(err, errsz, "entering %s: %s", ns, strerror(-r));
		return r;
	}
	r = nb_net_nl_link_master_up(tap, VPC_BRIDGE);
	if (r < 0)
		nb_net_errf(err, errsz, "adding %s to %s: %s", tap, VPC_BRIDGE, strerror(-r));
	else
		r = rate_mbps ? nb_net_tap_limit(tap, rate_mbps, err, errsz)
		              : nb_net_tap_unlimit(tap, err, errsz);
	nb_net_ns_leave(saved);
	return r;
}

int nb_net_vpc_tap_delete(const char *ns, const char *tap)
{
	int r, saved;

	if (!ns_name_valid(ns) || !nb_net_ifname_valid(tap) || !strcmp(tap, VPC_BRIDGE) ||
	    !strcmp(tap, VPC_UPLINK))
		return -EINVAL;
	if (!nb_net_ns_exists(ns))
		return 0;
	r = nb_net_ns_enter(ns, &saved);
	if (r < 0)
		return r;
	r = nb_net_tap_delete(tap);
	nb_net_ns_leave(saved);
	return r;
}

bool nb_net_vpc_tap_exists(const char *ns, const char *tap)
{
	int saved;
	bool there;

	if (!nb_net_ns_exists(ns) || nb_net_ns_enter(ns, &saved) < 0)
		return false;
	there = nb_net_link_exists(tap);
	nb_net_ns_leave(saved);
	return there;
}

/* ---- DHCP ---- */

int nb_net_vpc_dhcp(const struct nb_vpc *v, const struct nb_dhcp_host *hosts, size_t n)
{
	int r, saved, rel = 0;

	if (!v || !ns_name_valid(v->ns) || !v->dir)
		return -EINVAL;
	r = nb_net_dhcp_hosts(v->dir, hosts, n);
	if (r < 0)
		return r;
	r = nb_net_ns_enter(v->ns, &saved);
	if (r < 0)
		return r;
	/* Leases whose MAC and address are no longer a pair: released, each
	 * to the gateway of its subnet. */
	for (size_t s = 0; s < v->nsubnets; s++) {
		char gw[16];
		int e;
		if (nb_net_gateway(v->subnets[s].cidr, gw) < 0)
			continue;
		e = nb_net_dhcp_prune_in(v->dir, VPC_BRIDGE, gw, v->subnets[s].cidr, hosts, n);
		if (e < 0)
			rel = e;
	}
	nb_net_ns_leave(saved);
	return rel < 0 ? rel : 0;
}

/* ---- sockets for the metadata service ---- */

int nb_net_vpc_listen(const char *ns, const char *addr, int port, int *fd_out)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int r, saved, fd = -1, one = 1;

	*fd_out = -1;
	if (!addr || inet_pton(AF_INET, addr, &sa.sin_addr) != 1 || port < 1 || port > 65535)
		return -EINVAL;
	r = nb_net_ns_enter(ns, &saved);
	if (r < 0)
		return r;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0)
		r = -errno;
	nb_net_ns_leave(saved);
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		return r;
	}
	*fd_out = fd;
	return 0;
}

/* ---- rules: bridge nubo, inet nubo ---- */

static int proto_of(const char *p, const char **name)
{
	if (!p || !strcmp(p, "-1") || !strcasecmp(p, "all"))
		*name = NULL;
	else if (!strcasecmp(p, "tcp") || !strcmp(p, "6"))
		*name = "tcp";
	else if (!strcasecmp(p, "udp") || !strcmp(p, "17"))
		*name = "udp";
	else if (!strcasecmp(p, "icmp") || !strcmp(p, "1"))
		*name = "icmp";
	else
		return -EINVAL;
	return 0;
}

static bool cidr_any_valid(const char *c)
{
	char addr[20];
	const char *slash = c ? strchr(c, '/') : NULL;
	uint64_t p;
	size_t len;

	if (!slash || (len = (size_t)(slash - c)) >= sizeof(addr))
		return false;
	memcpy(addr, c, len);
	addr[len] = '\0';
	return ip_valid(addr) && strlen(slash + 1) <= 2 && nb_parse_u64(slash + 1, &p) == 0 &&
	       p <= 32;
}

/* One rule's match and verdict; dir_field is "saddr" (ingress: the peer
 * is the source) or "daddr" (egress). */
static int render_rule(struct nb_buf *b, const struct nb_sg_rule *r, const char *dir_field,
                       const char *verdict)
{
	const char *proto;
	bool any = false;
	int e;

	if (proto_of(r->protocol, &proto) < 0 || r->ncidrs > MAX_CIDRS ||
	    (r->ncidrs && !r->cidrs))
		return -EINVAL;
	if (r->ncidrs == 0)
		return 0; /* matches no one */
	for (size_t i = 0; i < r->ncidrs; i++) {
		if (!cidr_any_valid(r->cidrs[i]))
			return -EINVAL;
		if (!strcmp(strchr(r->cidrs[i], '/'), "/0"))
			any = true;
	}
	if (proto && strcmp(proto, "icmp") && (r->from_port > 65535 || r->to_port > 65535 ||
	                                       (r->from_port >= 0 && r->to_port < r->from_port)))
		return -EINVAL;
	if (proto && !strcmp(proto, "icmp") && (r->from_port > 255 || r->to_port > 255))
		return -EINVAL;
	e = 0;
	if (!any) {
		e = nb_buf_printf(b, "ip %s { ", dir_field);
		for (size_t i = 0; i < r->ncidrs && e == 0; i++)
			e = nb_buf_printf(b, "%s%s", i ? ", " : "", r->cidrs[i]);
		if (e == 0)
			e = nb_buf_puts(b, " } ");
	}
	if (e == 0 && proto) {
		if (!strcmp(proto, "icmp")) {
			e = nb_buf_puts(b, "ip protocol icmp ");
			if (e == 0 && r->from_port >= 0)
				e = nb_buf_printf(b, "icmp type %d ", r->from_port);
			if (e == 0 && r->from_port >= 0 && r->to_port >= 0)
				e = nb_buf_printf(b, "icmp code %d ", r->to_port);
		} else {
			e = nb_buf_printf(b, "ip protocol %s ", proto);
			if (e == 0 && r->from_port >= 0)
				e = nb_buf_printf(b, "%s dport %d-%d ", proto, r->from_port, r->to_port);
		}
	}
	if (e == 0)
		e = nb_buf_printf(b, "%s; ", verdict);
	return e < 0 ? -ENOMEM : 0;
}

static bool port_valid(const struct nb_vpc_port *p)
{
	return nb_net_ifname_valid(p->tap) && strcmp(p->tap, VPC_BRIDGE) &&
	       strcmp(p->tap, VPC_UPLINK) && mac_ok(p->mac) && ip_valid(p->ip) &&
	       (!p->public_ip || ip_valid(p->public_ip)) && p->ningress <= MAX_RULES &&
	       p->negress <= MAX_RULES && (!p->ningress || p->ingress) &&
	       (!p->negress || p->egress);
}

int nb_net_vpc_rules_script(const struct nb_vpc_port *ports, size_t n, struct nb_buf *b)
{
	int e = 0;

	if (n > MAX_PORTS || (n && !ports))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!port_valid(&ports[i]))
			return -EINVAL;
	/* Both tables are replaced in this one transaction. */
	e = nb_buf_puts(b, "add table bridge nubo; delete table bridge nubo; "
	                   "add table inet nubo; delete table inet nubo;\n");
	/* Anti-spoofing, stateless, per tap: the guest's MAC, its address (or
	 * DHCP's discover), ARP for itself; nothing but IPv4 and ARP. */
	if (e == 0)
		e = nb_buf_puts(b, "table bridge nubo {\n");
	for (size_t i = 0; i < n && e == 0; i++) {
		const struct nb_vpc_port *p = &ports[i];
		e = nb_buf_printf(b,
		                  " chain from_%zu {\n"
		                  "  ether saddr != %s drop;\n"
		                  "  ether type ip ip saddr %s return;\n"
		                  "  ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 "
		                  "udp dport 67 return;\n"
		                  "  ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 "
		                  "arp saddr ether %s arp saddr ip { %s, 0.0.0.0 } return;\n"
		                  "  drop;\n"
		                  " }\n",
		                  i, p->mac, p->ip, p->mac, p->ip);
	}
	if (e == 0)
		e = nb_buf_puts(b, " chain prerouting {\n"
		                   "  type filter hook prerouting priority -200; policy accept;\n");
	if (e == 0 && n) {
		e = nb_buf_puts(b, "  iifname vmap { ");
		for (size_t i = 0; i < n && e == 0; i++)
			e = nb_buf_printf(b, "%s\"%s\" : jump from_%zu", i ? ", " : "", ports[i].tap, i);
		if (e == 0)
			e = nb_buf_puts(b, " };\n");
	}
	if (e == 0)
		e = nb_buf_puts(b, " }\n}\n");

	/* Security groups (stateful, by the guest's address, which the
	 * anti-spoofing ties to its tap), elastic IPs, masquerade. */
	if (e == 0)
		e = nb_buf_puts(b, "table inet nubo {\n");
	for (size_t i = 0; i < n && e == 0; i++) {
		const struct nb_vpc_port *p = &ports[i];
		e = nb_buf_printf(b, " chain egress_%zu {\n  ", i);
		for (size_t k = 0; k < p->negress && e == 0; k++)
			e = render_rule(b, &p->egress[k], "daddr", "return");
		if (e == 0)
			e = nb_buf_printf(b, "drop;\n }\n chain ingress_%zu {\n  ", i);
		for (size_t k = 0; k < p->ningress && e == 0; k++)
			e = render_rule(b, &p->ingress[k], "saddr", "accept");
		if (e == 0)
			e = nb_buf_puts(b, "drop;\n }\n");
	}
	if (e < 0)
		return e == -ENOMEM ? -ENOMEM : -EINVAL;
	{
		struct nb_buf out_map, in_map;
		nb_buf_init(&out_map, 1 << 20);
		nb_buf_init(&in_map, 1 << 20);
		for (size_t i = 0; i < n && e == 0; i++) {
			e = nb_buf_printf(&out_map, "%s%s : jump egress_%zu", i ? ", " : "",
			                  ports[i].ip, i);
			if (e == 0)
				e = nb_buf_printf(&in_map, "%s%s : jump ingress_%zu", i ? ", " : "",
				                  ports[i].ip, i);
		}
		if (e == 0)
			e = nb_buf_printf(
			    b,
			    " chain forward {\n"
			    "  type filter hook forward priority filter; policy accept;\n"
			    "  ct state established,related accept;\n"
			    "  ct state invalid drop;\n"
			    "%s%s%s"
			    "%s%s%s"
			    " }\n"
			    " chain input {\n"
			    "  type filter hook input priority filter; policy accept;\n"
			    "  ct state established,related accept;\n"
			    "  iifname \"" VPC_BRIDGE "\" udp dport 67 accept;\n"
			    "  iifname \"" VPC_BRIDGE "\" ip daddr " METADATA_ADDR " tcp dport 80 accept;\n"
			    "%s%s%s"
			    " }\n"
			    " chain output {\n"
			    "  type filter hook output priority filter; policy accept;\n"
			    "  ct state established,related accept;\n"
			    "  udp sport 67 accept;\n"
			    "%s%s%s"
			    " }\n",
			    n ? "  ip saddr vmap { " : "", n ? out_map.data : "", n ? " };\n" : "",
			    n ? "  ip daddr vmap { " : "", n ? in_map.data : "", n ? " };\n" : "",
			    n ? "  iifname \"" VPC_BRIDGE "\" ip saddr vmap { " : "",
			    n ? out_map.data : "", n ? " };\n" : "",
			    n ? "  oifname \"" VPC_BRIDGE "\" ip daddr vmap { " : "",
			    n ? in_map.data : "", n ? " };\n" : "");
		nb_buf_free(&out_map);
		nb_buf_free(&in_map);
	}
	if (e == 0)
		e = nb_buf_puts(b, " chain nat_pre {\n"
		                   "  type nat hook prerouting priority dstnat; policy accept;\n");
	for (size_t i = 0; i < n && e == 0; i++)
		if (ports[i].public_ip)
			e = nb_buf_printf(b, "  iifname \"" VPC_UPLINK "\" ip daddr %s dnat ip to %s;\n",
			                  ports[i].public_ip, ports[i].ip);
	if (e == 0)
		e = nb_buf_puts(b, " }\n chain nat_post {\n"
		                   "  type nat hook postrouting priority srcnat; policy accept;\n");
	for (size_t i = 0; i < n && e == 0; i++)
		if (ports[i].public_ip)
			e = nb_buf_printf(b, "  oifname \"" VPC_UPLINK "\" ip saddr %s snat ip to %s;\n",
			                  ports[i].ip, ports[i].public_ip);
	if (e == 0)
		e = nb_buf_puts(b, "  oifname \"" VPC_UPLINK "\" masquerade;\n }\n}\n");
	return e < 0 ? -ENOMEM : 0;
}

int nb_net_vpc_rules(const char *ns, const struct nb_vpc_port *ports, size_t n, char *err,
                     size_t errsz)
{
	struct nb_buf b;
	int r, saved;

	if (!ns_name_valid(ns)) {
		nb_net_errf(err, errsz, "bad namespace name");
		return -EINVAL;
	}
	nb_buf_init(&b, 64u << 20);
	r = nb_net_vpc_rules_script(ports, n, &b);
	if (r < 0) {
		nb_net_errf(err, errsz, "bad port or rule (tap, mac, ip, protocol, ports, cidrs)");
		goto out;
	}
	r = nb_net_ns_enter(ns, &saved);
	if (r < 0) {
		nb_net_errf(err, errsz, "entering %s: %s", ns, strerror(-r));
		goto out;
	}
	r = nb_net_nft_run(b.data, err, errsz);
	nb_net_ns_leave(saved);
out:
	nb_buf_free(&b);
	return r;
}

/* ---- the agent's namespace: inet nubo-host, EIP routes ---- */

int nb_net_host_sync(const struct nb_host_eip *eips, size_t n, char *err, size_t errsz)
{
	struct nb_buf b, out;
	int r;

	if (n > MAX_PORTS || (n && !eips))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!ip_valid(eips[i].public_ip) || eips[i].vni < 1 || eips[i].vni > NB_NET_VNI_MAX) {
			nb_net_errf(err, errsz, "bad elastic IP");
			return -EINVAL;
		}
	r = nb_net_ip_forward(err, errsz);
	if (r < 0)
		return r;
	nb_buf_init(&b, 4u << 20);
	/* replies of what went to an elastic IP come back from its VPC */
	r = nb_buf_puts(&b, "chain forward { type filter hook forward priority filter; "
	                    "policy accept; iifname \"nbx*\" oifname \"nbx*\" ct state "
	                    "established,related accept; ");
	if (r == 0 && n) {
		r = nb_buf_puts(&b, "iifname \"nbx*\" oifname \"nbx*\" ip daddr { ");
		for (size_t i = 0; i < n && r == 0; i++)
			r = nb_buf_printf(&b, "%s%s", i ? ", " : "", eips[i].public_ip);
		if (r == 0)
			r = nb_buf_puts(&b, " } accept; ");
	}
	if (r == 0)
		r = nb_buf_puts(&b, "iifname \"nbx*\" oifname \"nbx*\" drop; }; "
		                    "chain postrouting { type nat hook postrouting priority srcnat; "
		                    "policy accept; ip saddr 100.64.0.0/10 oifname != \"nbx*\" "
		                    "masquerade; };");
	if (r == 0)
		r = nb_net_nft_table_replace("inet", HOST_TABLE, b.data, err, errsz);
	nb_buf_free(&b);
	if (r < 0)
		return r;
	/* Routes: each EIP via its VPC's veth; ours that are no longer
	 * wanted go. */
	for (size_t i = 0; i < n && r == 0; i++) {
		char host[16], vpc[16], veth[16], dst[24];
		nb_net_vpc_transit(eips[i].vni, host, vpc);
		nb_net_vpc_veth_name(eips[i].vni, veth);
		snprintf(dst, sizeof(dst), "%s/32", eips[i].public_ip);
		const char *rt[] = {"ip",  "route", "replace", dst,   "via", vpc,
		                    "dev", veth,    "proto",   ROUTE_PROTO, NULL};
		r = nb_net_run(rt, err, errsz);
	}
	if (r < 0)
		return r;
	nb_buf_init(&out, 1 << 20);
	{
		const char *ls[] = {"ip", "-o", "-4", "route", "show", "proto", ROUTE_PROTO, NULL};
		r = nb_net_output(ls, &out);
	}
	if (r == 0 && out.data) {
		char *save = NULL;
		for (char *line = strtok_r(out.data, "\n", &save); line;
		     line = strtok_r(NULL, "\n", &save)) {
			char dst[32];
			bool wanted = false;
			if (sscanf(line, "%31s", dst) != 1)
				continue;
			for (size_t i = 0; i < n && !wanted; i++)
				wanted = !strcmp(dst, eips[i].public_ip);
			if (!wanted) {
				const char *del[] = {"ip", "route", "del", dst, "proto", ROUTE_PROTO, NULL};
				nb_net_status(del);
			}
		}
	}
	nb_buf_free(&out);
	return r > 0 ? -EIO : r;
}

int nb_net_host_teardown(void)
{
	const char *flush[] = {"ip", "route", "flush", "proto", ROUTE_PROTO, NULL};
	int r = nb_net_nft_table_delete("inet", HOST_TABLE, NULL, 0);

	nb_net_status(flush);
	return r;
}
