/* Host networking, first form (as libvirt's default network): one bridge
 * with a gateway address, dnsmasq handing out fixed leases per MAC, NAT to
 * the outside through an nftables table of nubo's own, and a tap per NIC
 * with a rate limit (tc). Everything created carries the "nb" prefix and
 * teardown removes exactly that. Errors fill err with what failed. */
#ifndef NB_NET_H
#define NB_NET_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>

struct nb_dhcp_host {
	const char *mac;
	const char *ip;
	const char *hostname;
};

/* Names: the bridge and taps must start with "nb" (at most 15 characters);
 * the others are refused, so teardown can never touch a foreign interface.
 * err (errsz) may be NULL. */

/* "tap" name for an instance: "nb" + 13 hex of the id (fits IFNAMSIZ). */
void nb_net_tap_name(const char *instance_id, char out[16]);
/* Stable locally administered MAC from the id: "52:54:00:xx:xx:xx". */
void nb_net_mac(const char *instance_id, char out[18]);
/* The fixed MAC of a bridge of ours (the guests' gateway): 02:6e:62 and
 * three bytes of seed's hash. Set explicitly, a bridge keeps it; left to
 * itself it takes its lowest port's MAC and changes as taps come and go,
 * and every guest's ARP entry for its gateway goes stale at once. */
void nb_net_bridge_mac(const char *seed, char out[18]);
/* Parses "10.213.0.0/24"; gateway is .1, the pool starts at .2. */
int nb_net_cidr_parse(const char *cidr, uint32_t *network, int *prefix);
/* The nth (0-based) guest address of the pool as dotted quad; -ERANGE past the end. */
int nb_net_pool_addr(const char *cidr, int n, char out[16]);
/* How many guest addresses the pool holds (prefix 8..30), or -EINVAL. */
int nb_net_pool_size(const char *cidr);
/* The gateway (.1) as dotted quad. */
int nb_net_gateway(const char *cidr, char out[16]);

/* Bridge up with the gateway address, forwarding on (for the caller's
 * network namespace), nft table "inet nubo" with masquerade for cidr leaving
 * by any other interface and forward accept for the bridge. The table is
 * replaced whole: one bridge per network namespace. Idempotent. */
int nb_net_bridge_ensure(const char *bridge, const char *cidr, char *err, size_t errsz);
/* dnsmasq on the bridge, with pidfile and dhcp-hostsfile under dir (an
 * absolute path; made 0755 since dnsmasq re-reads the hosts file as
 * "nobody"); fixed leases only, DNS off. Keeps a running one when its
 * configuration is unchanged, restarts it otherwise. Idempotent. */
int nb_net_dnsmasq_ensure(const char *dir, const char *bridge, const char *cidr, char *err,
			  size_t errsz);
/* The same with one dhcp-range per cidr (1 to NB_NET_MAX_RANGES), for a
 * bridge that carries the gateways of several subnets. */
#define NB_NET_MAX_RANGES 200
int nb_net_dnsmasq_ensure_ranges(const char *dir, const char *bridge, const char *const *cidrs,
                                 size_t ncidrs, char *err, size_t errsz);
/* Rewrites the hosts file atomically and makes dnsmasq re-read it (SIGHUP).
 * At most 4096 hosts; hostname may be NULL. hosts is only read. */
int nb_net_dhcp_hosts(const char *dir, const struct nb_dhcp_host *hosts, size_t n);
/* Sends dnsmasq on bridge (its address: server) a DHCPRELEASE for ip held
 * by mac, so the address can go to another MAC at once instead of staying
 * leased until the lease runs out. */
int nb_net_dhcp_release(const char *bridge, const char *server, const char *ip, const char *mac);
/* Releases every lease in dir/dnsmasq.leases whose MAC and address are not a
 * pair of hosts (n entries): an instance that went, or an address now given
 * to another MAC. Returns how many were released, or -errno. */
int nb_net_dhcp_prune(const char *dir, const char *bridge, const char *server,
                      const struct nb_dhcp_host *hosts, size_t n);
/* The same for the leases inside cidr only (NULL: all), released to server. */
int nb_net_dhcp_prune_in(const char *dir, const char *bridge, const char *server,
                         const char *cidr, const struct nb_dhcp_host *hosts, size_t n);
/* Pid of the dnsmasq running for dir (checked against /proc), 0 when none. */
int nb_net_dnsmasq_pid(const char *dir);
/* Stops that dnsmasq (TERM, then KILL) and removes its pid file. */
int nb_net_dnsmasq_stop(const char *dir);
/* Persistent tap attached to bridge, up, egress and ingress capped at
 * rate_mbps (0: no cap; at most 100000). Traffic to the guest is shaped by
 * a tc tbf qdisc on the tap; traffic from it is policed (dropped over the
 * rate) by an nft "netdev" table named after the tap, hooked at its ingress.
 * Idempotent. */
int nb_net_tap_create(const char *tap, const char *bridge, uint64_t rate_mbps, char *err,
		      size_t errsz);
/* Deletes the tap and its ingress table; a missing tap is fine. */
int nb_net_tap_delete(const char *tap);
/* Stops dnsmasq and removes its files under dir, deletes the bridge and the
 * nft table. Missing pieces are fine; the first error is returned. */
int nb_net_teardown(const char *dir, const char *bridge);

/* ---- tenant networks (net_vpc.c; docs/network.md "On a host") ----
 * One network namespace per VPC with instances on this host: a veth pair
 * to the caller's namespace (host side "nbx<vni hex>", 100.64.0.0 + 2*vni;
 * VPC side "nbup", +1, default route), the bridge "nbbr" with each
 * subnet's gateway, 169.254.169.254/32 on lo, dnsmasq, the taps, and the
 * nft tables "bridge nubo" and "inet nubo". */

#define NB_NET_NS_NAME_MAX 24
#define NB_NET_VNI_MAX ((1u << 21) - 1)

struct nb_buf;

struct nb_vpc_subnet {
	const char *cidr;    /* "172.31.0.0/20" */
	const char *gateway; /* its first address, or NULL */
};

struct nb_vpc {
	const char *ns;  /* from nb_net_vpc_ns_name */
	uint32_t vni;    /* 1 .. NB_NET_VNI_MAX */
	const char *dir; /* absolute: dnsmasq's files for this VPC */
	const struct nb_vpc_subnet *subnets;
	size_t nsubnets; /* 1 .. NB_NET_MAX_RANGES */
};

/* A security-group rule, the groups of a NIC merged. protocol: "tcp",
 * "udp", "icmp" (ports: type and code) or "-1"; from_port -1: all ports.
 * cidrs: the peers (group references already resolved to /32s); none
 * matches nothing. */
struct nb_sg_rule {
	const char *protocol;
	int from_port, to_port;
	const char *const *cidrs;
	size_t ncidrs;
};

/* A guest's NIC in a VPC. public_ip: its elastic IP, or NULL. */
struct nb_vpc_port {
	const char *tap, *mac, *ip, *public_ip;
	const struct nb_sg_rule *ingress;
	size_t ningress;
	const struct nb_sg_rule *egress;
	size_t negress;
};

struct nb_host_eip {
	const char *public_ip;
	uint32_t vni; /* the VPC whose veth it is routed to */
};

/* "nb" + 8 hex of sha256(state_dir) + "-" + the VNI in hex: a namespace
 * name no other agent on the machine makes. The prefix is that up to "-". */
void nb_net_vpc_ns_name(const char *state_dir, uint32_t vni, char out[NB_NET_NS_NAME_MAX]);
void nb_net_vpc_ns_prefix(const char *state_dir, char out[NB_NET_NS_NAME_MAX]);
/* The transit /31: host side and VPC side addresses. -EINVAL for a bad VNI. */
int nb_net_vpc_transit(uint32_t vni, char host[16], char vpc[16]);
/* "nbx" + the VNI in hex. */
void nb_net_vpc_veth_name(uint32_t vni, char out[16]);
/* Moves the calling thread into the namespace /run/netns/<ns>; *saved gets
 * what nb_net_ns_leave needs to come back. */
int nb_net_ns_enter(const char *ns, int *saved);
void nb_net_ns_leave(int saved);
bool nb_net_ns_exists(const char *ns);
/* Makes (or completes, idempotently) the VPC's namespace, veth pair,
 * bridge, addresses, route, sysctls and dnsmasq. v is only read. */
int nb_net_vpc_ensure(const struct nb_vpc *v, char *err, size_t errsz);
/* Stops the VPC's dnsmasq (files under dir, may be NULL) and deletes the
 * namespace with everything in it, both veth ends included. */
int nb_net_vpc_delete(const char *ns, const char *dir);
/* The namespaces in /run/netns starting with prefix: how many were stored. */
int nb_net_vpc_list(const char *prefix, char (*names)[NB_NET_NS_NAME_MAX], size_t max);
/* Opens (making it if needed) the persistent tap inside ns with
 * IFF_VNET_HDR; a new one is down and on no bridge, so it carries nothing
 * until nb_net_vpc_tap_attach. *fd gets the open queue (close-on-exec; the
 * caller owns it, for QEMU's -netdev tap,fd=N). */
int nb_net_vpc_tap_open(const char *ns, const char *tap, int *fd, char *err, size_t errsz);
/* Puts the tap on nbbr, up, capped at rate_mbps both ways (0: no cap).
 * Registering a netdev waits on the namespace's nf_tables commit mutex,
 * which the close of a socket that committed a deleting batch holds for an
 * RCU grace period (7-15 ms measured): a start opens its tap before the
 * rules' commit and attaches it after, so the rules are in force before
 * the tap carries a frame and the open does not wait. */
int nb_net_vpc_tap_attach(const char *ns, const char *tap, uint64_t rate_mbps, char *err,
                          size_t errsz);
/* Deletes the tap (and its ingress table) inside ns; missing is fine. */
int nb_net_vpc_tap_delete(const char *ns, const char *tap);
bool nb_net_vpc_tap_exists(const char *ns, const char *tap);
/* Fixed leases for the VPC's dnsmasq, and releases of the stale ones. */
int nb_net_vpc_dhcp(const struct nb_vpc *v, const struct nb_dhcp_host *hosts, size_t n);
/* A listening TCP socket (non-blocking, close-on-exec) inside ns on
 * addr:port, for the metadata service; the caller owns *fd. */
int nb_net_vpc_listen(const char *ns, const char *addr, int port, int *fd);
/* The nft script nb_net_vpc_rules runs (appended to b): both tables
 * replaced in one transaction. -EINVAL for a bad port or rule. */
int nb_net_vpc_rules_script(const struct nb_vpc_port *ports, size_t n, struct nb_buf *b);
/* Replaces "bridge nubo" (anti-spoofing per tap) and "inet nubo" (the
 * security groups, stateful; elastic IP DNAT/SNAT; masquerade out nbup)
 * inside ns, atomically. ports is only read. */
int nb_net_vpc_rules(const char *ns, const struct nb_vpc_port *ports, size_t n, char *err,
                     size_t errsz);
/* In the caller's namespace: ip_forward, table "inet nubo-host" (masquerade
 * of transit traffic leaving by any non-nbx interface; no forwarding from
 * one VPC veth to another except to an elastic IP) and a /32 route per
 * elastic IP via its VPC's veth (proto 213); other proto-213 routes go. */
int nb_net_host_sync(const struct nb_host_eip *eips, size_t n, char *err, size_t errsz);
/* Removes inet nubo-host and the proto-213 routes. */
int nb_net_host_teardown(void);

#endif
