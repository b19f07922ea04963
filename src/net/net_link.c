/* The bridge with its NAT table, and the taps with their rate limits. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <limits.h>
#include <linux/sockios.h>
#include <nftables/libnftables.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/util.h"
#include "net/net.h"
#include "net/net_internal.h"

#define NFT_TABLE "nubo"
#define MAX_RATE_MBPS 100000u /* 100 Gbit/s */

int nb_net_ip_forward(char *err, size_t errsz)
{
	/* Per network namespace: /proc/sys/net follows the caller's. */
	const char *path = "/proc/sys/net/ipv4/ip_forward";
	int fd = open(path, O_WRONLY | O_CLOEXEC), r = 0;

	if (fd < 0 || write(fd, "1\n", 2) != 2)
		r = -errno;
	if (fd >= 0)
		close(fd);
	if (r < 0)
		nb_net_errf(err, errsz, "%s: %s", path, strerror(-r));
	return r;
}

/* True when name is a bridge (ip lists it under "type bridge"). */
static int is_bridge(const char *name)
{
	const char *argv[] = {"ip", "-o", "link", "show", "dev", name, "type", "bridge", NULL};
	struct nb_buf out;
	int r;

	nb_buf_init(&out, 4096);
	r = nb_net_output(argv, &out);
	if (r == 0)
		r = out.len > 0;
	else if (r > 0)
		r = 0;
	nb_buf_free(&out);
	return r;
}

/* One libnftables context per network namespace, kept open. Closing the
 * netfilter socket of a context whose batch deleted something waits, in
 * the kernel, for that batch's objects to be freed after an RCU grace
 * period (7-15 ms measured), holding the namespace's nf_tables commit
 * mutex; the next nft batch and the next netdev registered in that
 * namespace (a new tap) wait on that mutex. A context that stays open
 * never closes its socket, so nothing waits. A context's socket holds its
 * namespace: nb_net_nft_forget lets go of it before the namespace goes. */
#define NFT_CTX_MAX 64

static struct nft_slot {
	dev_t dev;
	ino_t ino;
	struct nft_ctx *ctx;
	uint64_t used; /* for eviction: the least recently used goes first */
} nft_slots[NFT_CTX_MAX];
static uint64_t nft_clock;
static pthread_mutex_t nft_lock = PTHREAD_MUTEX_INITIALIZER;

/* The calling thread's namespace's context, made on first use; NULL when
 * none can be made. With nft_lock held. */
static struct nft_ctx *nft_ctx_here(void)
{
	struct stat st;
	struct nft_slot *free_slot = NULL, *lru = NULL;

	if (stat("/proc/thread-self/ns/net", &st) < 0)
		return NULL;
	for (int i = 0; i < NFT_CTX_MAX; i++) {
		struct nft_slot *sl = &nft_slots[i];
		if (sl->ctx && sl->dev == st.st_dev && sl->ino == st.st_ino) {
			sl->used = ++nft_clock;
			return sl->ctx;
		}
		if (!sl->ctx && !free_slot)
			free_slot = sl;
		if (sl->ctx && (!lru || sl->used < lru->used))
			lru = sl;
	}
	if (!free_slot) {
		nft_ctx_free(lru->ctx); /* more namespaces than slots: the oldest goes */
		lru->ctx = NULL;
		free_slot = lru;
	}
	free_slot->ctx = nft_ctx_new(NFT_CTX_DEFAULT);
	if (!free_slot->ctx)
		return NULL;
	nft_ctx_buffer_output(free_slot->ctx);
	nft_ctx_buffer_error(free_slot->ctx);
	free_slot->dev = st.st_dev;
	free_slot->ino = st.st_ino;
	free_slot->used = ++nft_clock;
	return free_slot->ctx;
}

void nb_net_nft_forget(const char *ns_path)
{
	struct stat st;

	if (stat(ns_path, &st) < 0)
		return;
	pthread_mutex_lock(&nft_lock);
	for (int i = 0; i < NFT_CTX_MAX; i++) {
		struct nft_slot *sl = &nft_slots[i];
		if (sl->ctx && sl->dev == st.st_dev && sl->ino == st.st_ino) {
			nft_ctx_free(sl->ctx);
			sl->ctx = NULL;
		}
	}
	pthread_mutex_unlock(&nft_lock);
}

/* Runs an nft script in this process through libnftables, as one
 * transaction (the nft command would cost a fork and exec each time), on
 * the calling thread's namespace's kept context. */
int nb_net_nft_run(const char *script, char *err, size_t errsz)
{
	struct nft_ctx *ctx;
	int r;

	pthread_mutex_lock(&nft_lock);
	ctx = nft_ctx_here();
	if (!ctx) {
		pthread_mutex_unlock(&nft_lock);
		nb_net_errf(err, errsz, "nft: cannot create a libnftables context");
		return -ENOMEM;
	}
	r = nft_run_cmd_from_buffer(ctx, script);
	/* reading the buffers rewinds them: they do not grow run after run */
	const char *e = nft_ctx_get_error_buffer(ctx);
	(void)nft_ctx_get_output_buffer(ctx);
	if (r != 0) {
		nb_net_errf(err, errsz, "nft '%.200s' failed: %.300s", script, e ? e : "");
		r = -EIO;
	}
	pthread_mutex_unlock(&nft_lock);
	return r;
}

/* Deletes the table if it is there (adding it first makes the delete
 * succeed either way, in one transaction). */
int nb_net_nft_table_delete(const char *family, const char *table, char *err, size_t errsz)
{
	char script[128];

	snprintf(script, sizeof(script), "add table %s %s; delete table %s %s", family, table,
	         family, table);
	return nb_net_nft_run(script, err, errsz);
}

/* Replaces the whole table in one nft transaction (add, delete, define). */
int nb_net_nft_table_replace(const char *family, const char *table, const char *body, char *err,
                             size_t errsz)
{
	struct nb_buf script;
	int r;

	nb_buf_init(&script, 8192);
	r = nb_buf_printf(&script, "add table %s %s; delete table %s %s; table %s %s { %s }",
	                  family, table, family, table, family, table, body);
	if (r == 0)
		r = nb_net_nft_run(script.data, err, errsz);
	nb_buf_free(&script);
	return r;
}

int nb_net_bridge_ensure(const char *bridge, const char *cidr, char *err, size_t errsz)
{
	char gw[16], addr[24], body[1024];
	int prefix, r;
	uint32_t net;

	if (!nb_net_ifname_valid(bridge)) {
		nb_net_errf(err, errsz, "bad bridge name \"%s\" (nb prefix, at most 15 characters)",
		            bridge ? bridge : "");
		return -EINVAL;
	}
	if (nb_net_cidr_parse(cidr, &net, &prefix) < 0) {
		nb_net_errf(err, errsz, "bad cidr \"%s\"", cidr ? cidr : "");
		return -EINVAL;
	}
	nb_net_fmt_addr(net + 1, gw);
	snprintf(addr, sizeof(addr), "%s/%d", gw, prefix);

	if (!nb_net_link_exists(bridge)) {
		const char *add[] = {"ip", "link", "add", "name", bridge, "type", "bridge", NULL};
		r = nb_net_run(add, err, errsz);
		if (r < 0)
			return r;
	} else {
		r = is_bridge(bridge);
		if (r < 0) {
			nb_net_errf(err, errsz, "ip link show %s: %s", bridge, strerror(-r));
			return r;
		}
		if (r == 0) {
			nb_net_errf(err, errsz, "%s exists and is not a bridge", bridge);
			return -EEXIST;
		}
	}
	{
		char mac[18];
		nb_net_bridge_mac(bridge, mac);
		const char *hw[] = {"ip", "link", "set", "dev", bridge, "address", mac, NULL};
		const char *ad[] = {"ip", "addr", "replace", addr, "dev", bridge, NULL};
		const char *up[] = {"ip", "link", "set", "dev", bridge, "up", NULL};
		/* a MAC of its own, before any guest has seen one (net.h) */
		r = nb_net_run(hw, err, errsz);
		if (r == 0)
			r = nb_net_run(ad, err, errsz);
		if (r == 0)
			r = nb_net_run(up, err, errsz);
		if (r < 0)
			return r;
	}
	r = nb_net_ip_forward(err, errsz);
	if (r < 0)
		return r;
	/* NAT for the guests' traffic leaving by any other interface, and
	 * forwarding to and from the bridge. */
	snprintf(body, sizeof(body),
	         "chain postrouting { type nat hook postrouting priority srcnat; policy accept; "
	         "ip saddr %s oifname != \"%s\" masquerade; }; "
	         "chain forward { type filter hook forward priority filter; policy accept; "
	         "iifname \"%s\" accept; oifname \"%s\" accept; };",
	         cidr, bridge, bridge, bridge);
	return nb_net_nft_table_replace("inet", NFT_TABLE, body, err, errsz);
}

static int tap_open_persist(const char *tap, char *err, size_t errsz)
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
	/* QEMU opens it again by name with the same type and adds its own
	 * flags (vnet_hdr) then. */
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	nb_strlcpy(ifr.ifr_name, tap, sizeof(ifr.ifr_name));
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		r = -errno;
		nb_net_errf(err, errsz, "TUNSETIFF %s: %s", tap, strerror(errno));
	} else if (ioctl(fd, TUNSETPERSIST, 1) < 0) {
		r = -errno;
		nb_net_errf(err, errsz, "TUNSETPERSIST %s: %s", tap, strerror(errno));
	}
	close(fd);
	return r;
}

/* Makes tap a port of bridge and sets it up, in one rtnetlink request (no
 * exec of ip); a tap already on that bridge stays as it is. */
static int tap_join_up(const char *tap, const char *bridge, char *err, size_t errsz)
{
	int r = nb_net_nl_link_master_up(tap, bridge);

	if (r < 0)
		nb_net_errf(err, errsz, "adding %s to bridge %s: %s", tap, bridge, strerror(-r));
	return r;
}

int nb_net_tap_limit(const char *tap, uint64_t rate_mbps, char *err, size_t errsz)
{
	char body[512];
	uint64_t bytes_per_s = rate_mbps * 125000u; /* 1 Mbit/s = 125000 bytes/s */
	uint64_t burst_bytes = bytes_per_s / 100;   /* 10 ms at full rate */
	int r;

	if (burst_bytes < 32768)
		burst_bytes = 32768;
	if (burst_bytes > (16u << 20))
		burst_bytes = 16u << 20;
	/* To the guest: the tap's egress, shaped by a token bucket (50 ms of
	 * queue), set over rtnetlink as `tc qdisc replace ... tbf` would. */
	r = nb_net_nl_tbf(tap, bytes_per_s, (uint32_t)burst_bytes, 50);
	if (r < 0) {
		nb_net_errf(err, errsz, "tbf qdisc on %s: %s", tap, strerror(-r));
		return r;
	}
	/* From the guest: policed at the tap's ingress. tc's police action is
	 * a module many kernels lack; nftables' netdev ingress hook does the
	 * same job wherever nftables runs. */
	snprintf(body, sizeof(body),
	         "chain ingress { type filter hook ingress device \"%s\" priority filter; "
	         "policy accept; limit rate over %" PRIu64 " bytes/second burst %" PRIu64
	         " bytes drop; };",
	         tap, bytes_per_s, burst_bytes);
	return nb_net_nft_table_replace("netdev", tap, body, err, errsz);
}

int nb_net_tap_unlimit(const char *tap, char *err, size_t errsz)
{
	int r = nb_net_nl_root_qdisc_delete(tap);

	if (r < 0) {
		nb_net_errf(err, errsz, "removing the qdisc of %s: %s", tap, strerror(-r));
		return r;
	}
	return nb_net_nft_table_delete("netdev", tap, err, errsz);
}

int nb_net_tap_create(const char *tap, const char *bridge, uint64_t rate_mbps, char *err,
                      size_t errsz)
{
	int r;

	if (!nb_net_ifname_valid(tap) || !nb_net_ifname_valid(bridge)) {
		nb_net_errf(err, errsz, "bad interface name \"%s\" or \"%s\"", tap ? tap : "",
		            bridge ? bridge : "");
		return -EINVAL;
	}
	if (rate_mbps > MAX_RATE_MBPS) {
		nb_net_errf(err, errsz, "rate %" PRIu64 " Mbit/s is over %u", rate_mbps,
		            MAX_RATE_MBPS);
		return -EINVAL;
	}
	if (!nb_net_link_exists(bridge)) {
		nb_net_errf(err, errsz, "bridge %s does not exist", bridge);
		return -ENOENT;
	}
	if (!nb_net_link_exists(tap)) {
		r = tap_open_persist(tap, err, errsz);
		if (r < 0)
			return r;
	}
	r = tap_join_up(tap, bridge, err, errsz);
	if (r < 0)
		return r;
	if (rate_mbps)
		return nb_net_tap_limit(tap, rate_mbps, err, errsz);
	return nb_net_tap_unlimit(tap, err, errsz);
}

int nb_net_tap_delete(const char *tap)
{
	int r = 0, e;

	if (!nb_net_ifname_valid(tap))
		return -EINVAL;
	if (nb_net_link_exists(tap)) {
		r = nb_net_nl_link_delete(tap);
		if (r == -ENODEV)
			r = 0; /* gone meanwhile */
	}
	/* The ingress table outlives the device it was bound to. */
	e = nb_net_nft_table_delete("netdev", tap, NULL, 0);
	return r < 0 ? r : e;
}

int nb_net_teardown(const char *dir, const char *bridge)
{
	int r, e;

	if (!nb_net_ifname_valid(bridge))
		return -EINVAL;
	/* dnsmasq first: it holds a socket on the bridge. Its files go only
	 * once it is gone, so a failed stop can be retried by pid file. */
	r = nb_net_dnsmasq_stop(dir);
	if (r == 0)
		r = nb_net_dnsmasq_forget(dir);
	if (nb_net_link_exists(bridge)) {
		const char *del[] = {"ip", "link", "del", "dev", bridge, NULL};
		e = is_bridge(bridge);
		if (e > 0)
			e = nb_net_run(del, NULL, 0);
		else if (e == 0)
			e = -EEXIST; /* not a bridge: not ours to delete */
		if (e < 0 && r == 0)
			r = e;
	}
	e = nb_net_nft_table_delete("inet", NFT_TABLE, NULL, 0);
	if (e < 0 && r == 0)
		r = e;
	return r;
}
