/* Helpers shared by the net module's files; not for other modules. */
#ifndef NB_NET_INTERNAL_H
#define NB_NET_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* Every external command gets this long. */
#define NB_NET_CMD_TIMEOUT_MS 10000

/* Interface names nubo creates: "nb" prefix, at most 15 characters of
 * [A-Za-z0-9_.-]. */
bool nb_net_ifname_valid(const char *name);
/* True when the interface exists in the current network namespace. */
bool nb_net_link_exists(const char *name);
/* Formats err (may be NULL) like snprintf. */
void nb_net_errf(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Runs argv (argv[0] is looked up in the sbin directories first). Returns 0;
 * -ENOENT when the program is missing, -ETIMEDOUT, or -EIO when it failed,
 * with err naming the command and quoting its output. */
int nb_net_run(const char *const argv[], char *err, size_t errsz);
/* Runs argv collecting its output into out: exit status (>= 0) or -errno. */
int nb_net_output(const char *const argv[], struct nb_buf *out);
/* Runs argv, discarding output: its exit status (>= 0) or -errno. */
int nb_net_status(const char *const argv[]);
/* Network (host order), prefix, and the dotted netmask. */
int nb_net_cidr_parts(const char *cidr, uint32_t *network, int *prefix, char netmask[16]);
void nb_net_fmt_addr(uint32_t addr, char out[16]);
/* Removes the files dnsmasq_ensure and dhcp_hosts wrote under dir (after
 * dnsmasq has stopped). */
int nb_net_dnsmasq_forget(const char *dir);

/* net_link.c */
/* ip_forward=1 in the calling thread's network namespace. */
int nb_net_ip_forward(char *err, size_t errsz);
/* Runs an nft script through libnftables, as one transaction, on a
 * context kept open for the calling thread's network namespace. */
int nb_net_nft_run(const char *script, char *err, size_t errsz);
/* Frees the kept context of the namespace at ns_path (a /run/netns entry):
 * before the namespace is deleted, since the context's socket holds it. */
void nb_net_nft_forget(const char *ns_path);
/* Deletes family/table if it is there. */
int nb_net_nft_table_delete(const char *family, const char *table, char *err, size_t errsz);
/* Replaces family/table whole with body, in one transaction. */
int nb_net_nft_table_replace(const char *family, const char *table, const char *body, char *err,
                             size_t errsz);
/* The tap's caps (tbf to the guest, netdev ingress table from it), or none. */
int nb_net_tap_limit(const char *tap, uint64_t rate_mbps, char *err, size_t errsz);
int nb_net_tap_unlimit(const char *tap, char *err, size_t errsz);

/* rtnetlink (net_nl.c); each returns 0 or the kernel's -errno. */
/* Sets dev up and, unless master is NULL, makes it a port of master. */
int nb_net_nl_link_master_up(const char *dev, const char *master);
/* Deletes the interface dev. */
int nb_net_nl_link_delete(const char *dev);
/* Replaces dev's root qdisc with a token bucket: bytes_per_s, burst bytes,
 * a queue of latency_ms at that rate. */
int nb_net_nl_tbf(const char *dev, uint64_t bytes_per_s, uint32_t burst, uint32_t latency_ms);
/* Deletes dev's root qdisc; none there is fine. */
int nb_net_nl_root_qdisc_delete(const char *dev);

#endif
