/* The instance metadata service: EC2's HTTP API at 169.254.169.254, IMDSv1
 * and IMDSv2, served on listening sockets handed in by the caller (one per
 * VPC namespace, each known by a key). A small HTTP/1.1 server of its own,
 * one thread, epoll; ceilings on request size, headers, connections and
 * time. It never decides who is asking from anything the guest sends: the
 * caller's lookup maps (listener key, source address) to an instance.
 * Paths, formats and the IMDSv2 rules are in docs/network.md ("Instance
 * metadata service"). Library code: it does not log. */
#ifndef NB_IMDS_H
#define NB_IMDS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct nb_imds;

/* Ceilings. */
#define NB_IMDS_MAX_LISTENERS 1024
#define NB_IMDS_MAX_CONNS 1024          /* open connections in all */
#define NB_IMDS_MAX_CONNS_PER_LISTENER 128
#define NB_IMDS_MAX_REQUEST 8192        /* request line + headers */
#define NB_IMDS_MAX_HEADERS 64
#define NB_IMDS_MAX_BODY 4096           /* a PUT's body, read and ignored */
#define NB_IMDS_IDLE_MS 10000           /* a connection with nothing complete */
#define NB_IMDS_TOKEN_TTL_MAX 21600

/* Who is asking: called on the server's thread for every request with the
 * listener's key and the dotted-quad source address. Returns a new
 * reference to {"metadata": {...as the desired state's metadata...},
 * "nic": {...the instance's NIC on that listener's network, optionally
 * with "vpc_cidr"...}}, or NULL for an unknown source (404, nothing else).
 * It may block briefly (take a lock); it must not call into this module. */
typedef json_t *(*nb_imds_lookup_fn)(void *arg, const char *key, const char *src_ip);

/* Starts the service's thread with no listeners and a fresh random token
 * key. *out is the caller's, freed by nb_imds_stop. 0 or -errno. */
int nb_imds_start(struct nb_imds **out, nb_imds_lookup_fn lookup, void *arg);
/* Serves listening-or-bound TCP socket fd under key (at most 63 chars);
 * listen() is called when it is not listening yet. Takes fd in every case:
 * closed on error, at nb_imds_unlisten and at nb_imds_stop. The same key
 * again replaces the earlier socket. 0, -EINVAL, -ENOSPC or -errno.
 * Thread-safe; never waits for the server's thread. */
int nb_imds_listen(struct nb_imds *m, const char *key, int fd);
/* Stops serving key: the socket stops listening before this returns (its
 * address can be bound again); it and the key's connections are closed by
 * the server's thread soon after. Nothing when key is unknown. Thread-safe;
 * never waits for the server's thread. */
void nb_imds_unlisten(struct nb_imds *m, const char *key);
/* Stops the thread (waits for it: do not call while holding a lock the
 * lookup takes), closes every socket, frees m. NULL is fine. */
void nb_imds_stop(struct nb_imds *m);

/* Counters, for tests and benchmarks. */
struct nb_imds_stats {
	uint64_t requests;   /* answered, any status */
	uint64_t refused;    /* connections closed at accept (over a ceiling) */
	int conns;           /* open now */
	int listeners;       /* serving now */
};
void nb_imds_get_stats(struct nb_imds *m, struct nb_imds_stats *out);

#endif
