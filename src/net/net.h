/* Host networking, first form (as libvirt's default network): one bridge
 * with a gateway address, dnsmasq handing out fixed leases per MAC, NAT to
 * the outside through an nftables table of nubo's own, and a tap per NIC
 * with a rate limit (tc). Everything created carries the "nb" prefix and
 * teardown removes exactly that. Errors fill err with what failed. */
#ifndef NB_NET_H
#define NB_NET_H

#include <stdint.h>
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

#endif
