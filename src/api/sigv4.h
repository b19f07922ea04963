/* AWS Signature Version 4: parsing and verifying a request's signature,
 * from the Authorization header or from a presigned URL's X-Amz-* query
 * parameters. Pure: no I/O, no clock (the caller passes now), no secrets
 * lookup (the caller finds the secret for the access key in between parse
 * and verify). Shared by the EC2 Query API, the native API and S3. */
#ifndef NB_SIGV4_H
#define NB_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NB_SIGV4_MAX_HEADERS 64
#define NB_SIGV4_MAX_SKEW_S (15 * 60)  /* AWS's limit on clock skew */
#define NB_SIGV4_MAX_EXPIRES (7 * 24 * 3600)
/* Ceilings on what a request may carry into the signature. */
#define NB_SIGV4_MAX_PATH 8192    /* request path as sent */
#define NB_SIGV4_MAX_QUERY 32768  /* raw query string */
#define NB_SIGV4_MAX_PARAMS 512   /* query parameters */
#define NB_SIGV4_MAX_VALUE 8192   /* a signed header's value, the Authorization header */

struct nb_kv {
	const char *key;
	const char *value;
};

struct nb_sigv4_req {
	const char *method;         /* "GET", "POST", ... */
	const char *path;           /* as sent on the request line, still %-encoded */
	/* raw query string without '?', or NULL; each key and value is decoded
	 * (%XX, and '+' as a space, as urlencode sends it) and re-encoded, so
	 * the caller's own query parser must decode '+' the same way */
	const char *query;
	const struct nb_kv *headers; /* as received; names in any case */
	size_t nheaders;
	/* hex sha256 of the body as received, or NULL when the body is not
	 * hashed here (then x-amz-content-sha256 must say UNSIGNED-PAYLOAD or a
	 * STREAMING-* value, which the caller verifies itself) */
	const char *body_sha256;
	int64_t now;                /* unix seconds */
	bool s3;                    /* S3 rules: no double %-encoding of the path */
};

struct nb_sigv4_auth {
	char access_key[129];
	char date[9];             /* YYYYMMDD of the credential scope */
	char region[64];
	char service[32];
	char amz_date[17];        /* YYYYMMDDTHHMMSSZ */
	char signed_headers[1024];
	char signature[65];
	char payload_hash[80];    /* what the signer hashed: hex, UNSIGNED-PAYLOAD, STREAMING-... */
	bool presigned;
	int64_t expires;          /* presigned: X-Amz-Expires seconds */
};

/* nb_err.h codes returned, with err naming what was wrong:
 *   -NB_E_AUTH_MISSING   no signature at all (AuthFailure / MissingAuthenticationToken)
 *   -NB_E_AUTH_INCOMPLETE malformed header or credential (IncompleteSignature), also
 *                        X-Amz-Expires above a week and SignedHeaders without host
 *   -NB_E_SIG_MISMATCH   signature does not match (SignatureDoesNotMatch), also wrong
 *                        region/service/scope date and x-amz-content-sha256 != body
 *   -NB_E_EXPIRED        date outside the skew window or presigned URL expired (RequestExpired)
 *   -NB_E_INVALID        an input above its ceiling, a broken %-escape in the query, or
 *                        an x-amz-content-sha256 that is not hex/UNSIGNED-PAYLOAD/STREAMING-*
 *   -NB_E_INTERNAL       verify: the payload is signed as hex but body_sha256 is NULL
 *   -EINVAL / -ENOMEM    NULL arguments / allocation failure
 * r must be the same request for parse and verify.
 */
int nb_sigv4_parse(const struct nb_sigv4_req *r, struct nb_sigv4_auth *out, char *err,
		   size_t errsz);
/* Checks scope (region, service, date matching amz_date), time (skew or
 * expiry against r->now), payload hash (when r->body_sha256 is given and the
 * signer hashed the body) and the signature itself with secret. Compares in
 * constant time. */
int nb_sigv4_verify(const struct nb_sigv4_req *r, const struct nb_sigv4_auth *a,
		    const char *secret, const char *region, const char *service, char *err,
		    size_t errsz);

/* As nb_sigv4_verify with the signing key of a's scope already derived
 * (nb_sigv4_signing_key(secret, a->date, region, service)): for a caller
 * that keeps derived keys, so the four HMACs run once a day per key. */
int nb_sigv4_verify_key(const struct nb_sigv4_req *r, const struct nb_sigv4_auth *a,
			const unsigned char key[32], const char *region, const char *service,
			char *err, size_t errsz);

/* Building blocks, exposed for S3's chunked uploads and for tests. */
/* The signing key for date/region/service (32 bytes). Should OpenSSL fail,
 * key is random so that no signature matches. */
void nb_sigv4_signing_key(const char *secret, const char *date, const char *region,
			  const char *service, unsigned char key[32]);
/* Hex HMAC-SHA256 of data under key (32 bytes); "xxx..." (no hex) should
 * OpenSSL fail. */
void nb_sigv4_hmac_hex(const unsigned char key[32], const char *data, size_t len,
		       char hex[65]);
/* The canonical request of r as signed with a (caller frees); NULL when r
 * or a is invalid or above a ceiling. */
char *nb_sigv4_canonical_request(const struct nb_sigv4_req *r, const struct nb_sigv4_auth *a);
/* Signs r for tests and for the CLI: fills an Authorization header value
 * exactly as botocore writes it. payload_hash: hex sha256 of the body or
 * UNSIGNED-PAYLOAD; signed_headers: "host;x-amz-date" (lowercase, sorted,
 * each present in r). -EINVAL for bad arguments, -ENOSPC when auth_out is
 * too small, -NB_E_INVALID when r is above a ceiling. */
int nb_sigv4_sign(const struct nb_sigv4_req *r, const char *access_key, const char *secret,
		  const char *region, const char *service, const char *amz_date,
		  const char *payload_hash, const char *signed_headers, char *auth_out,
		  size_t auth_outsz);

#endif
