/* The EC2 Query API (Version 2016-11-15) on nubod's listener: SigV4 with
 * the account's access keys, AWS Query parameters in, EC2's XML out, EC2's
 * error codes. Every action is scoped to the caller's account: another
 * account's resources answer NotFound, never Forbidden. */
#ifndef NB_EC2_H
#define NB_EC2_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>

#include "api/http.h"
#include "core/core.h"
#include "core/secrets.h"

struct nb_bucket {
	double tokens;
	int64_t last_ms;
};

struct nb_ec2_limits {
	double describe_rate, describe_burst; /* Describe* and Get* calls per second */
	double mutate_rate, mutate_burst;     /* everything else */
};

/* Rendered Describe* answers, valid while the store's epoch stays. */
#define NB_EC2_CACHE_ENTRIES 64
#define NB_EC2_CACHE_BYTES (256u << 20)

struct nb_ec2_shared; /* a refcounted response body */
/* An account's instances as read at one store epoch, each with its <item>
 * rendered once: DescribeInstances requests that differ (filters, pages)
 * but come while the store is unchanged filter these and splice the
 * fragments instead of reading and rendering every row again. */
struct nb_ec2_snap;
#define NB_EC2_SNAPS 4

struct nb_ec2_cached {
	char key[65];
	uint64_t epoch;
	int64_t used;
	struct nb_ec2_shared *body;
};

/* A Describe answer being built: other requests for the same key and epoch
 * wait for it (at most NB_EC2_INFLIGHT_WAIT_MS) instead of building it too. */
#define NB_EC2_INFLIGHT 16
#define NB_EC2_INFLIGHT_WAIT_MS 30000

struct nb_ec2_inflight {
	char key[65]; /* "" when the slot is free */
	uint64_t epoch;
};

struct nb_ec2 {
	struct nb_ctl *ctl;
	struct nb_secrets *secrets;
	struct nb_ec2_limits limits;
	pthread_mutex_t lock; /* the buckets */
	struct nb_ec2_rate *rates;
	pthread_mutex_t cache_lock;
	struct nb_ec2_cached cache[NB_EC2_CACHE_ENTRIES];
	size_t cache_bytes;
	struct nb_ec2_inflight inflight[NB_EC2_INFLIGHT]; /* under cache_lock */
	struct nb_ec2_snap *snaps[NB_EC2_SNAPS];           /* under cache_lock */
	pthread_cond_t inflight_done; /* a build ended (CLOCK_MONOTONIC) */
};

int nb_ec2_init(struct nb_ec2 *e, struct nb_ctl *ctl, struct nb_secrets *secrets);
void nb_ec2_fini(struct nb_ec2 *e);
/* A request for "/" (POST form or GET query). */
enum MHD_Result nb_ec2_handle(struct nb_ec2 *e, struct MHD_Connection *c, const char *method,
			      const char *url, struct nb_http_req *rq);

/* Authenticates a SigV4-signed request for service with the account's keys
 * (shared with the native API): *who gets {"account_id", "account", "user",
 * "role", "key"}. err names what was wrong; returns a -NB_E_* code. */
int nb_ec2_authenticate(struct nb_ec2 *e, struct MHD_Connection *c, const char *method,
			const char *url, const char *body, size_t body_len, const char *service,
			json_t **who, char *err, size_t errsz);

#endif
