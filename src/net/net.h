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

/* "tap" name for an instance: "nb" + 13 hex of the id (fits IFNAMSIZ). */
void nb_net_tap_name(const char *instance_id, char out[16]);
/* Stable locally administered MAC from the id: "52:54:00:xx:xx:xx". */
void nb_net_mac(const char *instance_id, char out[18]);
/* Parses "10.213.0.0/24"; gateway is .1, the pool starts at .2. */
int nb_net_cidr_parse(const char *cidr, uint32_t *network, int *prefix);
/* The nth (0-based) guest address of the pool as dotted quad; -ERANGE past the end. */
int nb_net_pool_addr(const char *cidr, int n, char out[16]);

/* Bridge up with the gateway address, forwarding on, nft table "nubo" with
 * masquerade for cidr. Idempotent. */
int nb_net_bridge_ensure(const char *bridge, const char *cidr, char *err, size_t errsz);
/* dnsmasq on the bridge, with pidfile and dhcp-hostsfile under dir; keeps a
 * running one. Idempotent. */
int nb_net_dnsmasq_ensure(const char *dir, const char *bridge, const char *cidr, char *err,
			  size_t errsz);
/* Rewrites the hosts file atomically and makes dnsmasq re-read it (SIGHUP). */
int nb_net_dhcp_hosts(const char *dir, const struct nb_dhcp_host *hosts, size_t n);
/* Persistent tap attached to bridge, up, egress and ingress capped at
 * rate_mbps (0: no cap). Idempotent. */
int nb_net_tap_create(const char *tap, const char *bridge, uint64_t rate_mbps, char *err,
		      size_t errsz);
int nb_net_tap_delete(const char *tap);
/* Stops dnsmasq, deletes the bridge and the nft table. */
int nb_net_teardown(const char *dir, const char *bridge);

#endif
