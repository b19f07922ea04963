/* The S3 protocol layer: S3's REST API over HTTP on its own listener,
 * translated into calls of the storage engine (s3/engine.h).
 *
 * Requests arrive through libmicrohttpd with the raw, still %-encoded path
 * (nb_http_start_raw), so that SigV4 sees what the client signed and keys
 * keep every byte. Path-style (/bucket/key) and virtual-hosted style
 * (Host: bucket.<domain>) are both understood. Authentication is SigV4
 * (Authorization header or presigned query) with an account's access key;
 * anonymous requests may only read public-read buckets. Bodies stream:
 * object data goes straight into nb_s3_put_write (decoded on the way when it
 * is aws-chunked), downloads are sent from the engine's file descriptors.
 * Errors are S3's XML error documents. docs/s3.md lists what is supported. */
#ifndef NB_S3_HTTP_H
#define NB_S3_HTTP_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "s3/engine.h"

struct nb_store;
struct nb_secrets;

#define NB_S3HTTP_MAX_XML (2u << 20) /* a request's XML body (CompleteMultipartUpload) */
#define NB_S3HTTP_MAX_DELETE 1000    /* keys of one DeleteObjects */
#define NB_S3HTTP_DOMAIN_MAX 253

struct nb_s3http_opts {
	const char *listen;               /* "127.0.0.1:8789"; "" serves nothing (housekeeping only) */
	struct nb_s3 *s3;                 /* the engine, opened by the caller (borrowed) */
	const char *region;               /* the region clients sign for, buckets live in */
	const char *domain;               /* virtual-hosted base: Host bucket.<domain>; "" none */
	uint64_t quota_bytes;             /* per account; 0 unlimited */
	uint64_t quota_objects;           /* per account; 0 unlimited */
	int64_t upload_expiry_ms;         /* multipart uploads older than this are aborted */
	struct nb_store *st;              /* access keys (borrowed) */
	const struct nb_secrets *secrets; /* unseals their secrets (borrowed) */
};

struct nb_s3http {
	struct nb_s3 *s3;
	struct nb_store *st;
	const struct nb_secrets *secrets;
	struct MHD_Daemon *daemon;
	char region[NB_S3_REGION_MAX + 1];
	char domain[NB_S3HTTP_DOMAIN_MAX + 1];
	struct nb_s3_quota quota;
	int64_t upload_expiry_ms;
	int64_t next_sweep_ms; /* monotonic */
	pthread_mutex_t keys_lock;
	struct nb_s3http_key *keys; /* access keys seen lately (see key_lookup in http.c) */
};

/* Starts the listener over the engine o->s3 (which stays the caller's: it
 * closes it after nb_s3http_stop). h is the caller's and must stay put until
 * nb_s3http_stop. -errno (-EADDRINUSE: cannot listen). */
int nb_s3http_start(struct nb_s3http *h, const struct nb_s3http_opts *o);
/* Stops accepting connections (before the rest of the daemon stops). */
void nb_s3http_quiesce(struct nb_s3http *h);
/* Stops the listener (waiting for requests in flight). Accepts a zeroed h. */
void nb_s3http_stop(struct nb_s3http *h);

struct nb_s3http_tick_stats {
	size_t uploads_expired;
	size_t tmp_removed;
	size_t data_removed;
	int err; /* first failure, 0 when none */
};
/* Periodic work: expires stale multipart uploads, and about once an hour
 * sweeps files that no committed row references. Call every few seconds. */
void nb_s3http_tick(struct nb_s3http *h, struct nb_s3http_tick_stats *stats);

/* ---- pure helpers, exposed for the unit tests ---- */

/* A Range header ("bytes=0-99", "bytes=100-", "bytes=-20"). Absent, multiple
 * ranges or a malformed one give NB_S3_RANGE_NONE (S3 then sends the whole
 * object); returns 0 always except for NULL arguments (-EINVAL). */
int nb_s3http_parse_range(const char *h, struct nb_s3_range *out);
/* An HTTP date (RFC 1123, RFC 850 or asctime) into seconds since the epoch;
 * -1 when it is not one. */
int64_t nb_s3http_parse_date(const char *s);
/* "Sun, 06 Nov 1994 08:49:37 GMT" into out (>= 30 bytes). */
void nb_s3http_format_date(int64_t wall_ms, char *out, size_t outsz);
/* Decodes %XX escapes of in[0..len) ('+' stays a '+'); caller frees *out,
 * NUL-terminated, *outlen without it. -EINVAL for a broken escape. */
int nb_s3http_unescape(const char *in, size_t len, char **out, size_t *outlen);
/* Appends s %-encoded as S3's encoding-type=url does: everything but
 * A-Z a-z 0-9 - _ . ~ and '/' escaped. */
int nb_s3http_url_encode(struct nb_buf *out, const char *s);
/* The bucket named by a virtual-hosted Host header: host (port allowed) is
 * "<bucket>.<domain>" (case-insensitive domain). Copies the bucket into out
 * and returns true; false for any other host. */
bool nb_s3http_vhost_bucket(const char *host, const char *domain, char *out, size_t outsz);

/* A small XML reader for S3's request bodies: elements, text, entities and
 * character references, comments, CDATA, attributes (skipped); refuses
 * DOCTYPE and anything malformed. Calls fn at each element's end with the
 * path of local names (namespace prefixes dropped) from the root, depth
 * entries, and its text (NULL when it had child elements). fn returns 0 or
 * a negative code that stops the walk and is returned. -EINVAL for
 * malformed XML, -E2BIG past NB_S3HTTP_XML_DEPTH. */
#define NB_S3HTTP_XML_DEPTH 16
typedef int (*nb_s3http_xml_fn)(void *ctx, const char *const *path, int depth, const char *text,
                                size_t textlen);
int nb_s3http_xml_walk(const char *xml, size_t len, nb_s3http_xml_fn fn, void *ctx);

#endif
