/* S3 request bodies as they stream in: aws-chunked decoding with chunk
 * signature and trailing checksum verification, and the checksums S3 names
 * in x-amz-checksum-* headers (CRC32, CRC32C, SHA-1, SHA-256).
 *
 * The decoder is fed the body in pieces of any size, split anywhere (in a
 * chunk header, in a CRLF, in a signature), and hands the decoded payload to
 * an output callback as it goes. It holds at most one header or trailer
 * line (NB_CHUNKED_MAX_LINE); payload bytes are never copied.
 *
 * Payload bytes reach the callback BEFORE the signature of their chunk and
 * the trailing checksum could be checked: a caller must treat what it
 * received as unverified until nb_chunked_finish returns 0 (write it to a
 * temporary file, commit only then).
 *
 * Body formats, chosen by x-amz-content-sha256 (nb_chunked_mode_parse):
 *   STREAMING-AWS4-HMAC-SHA256-PAYLOAD
 *       <hex size>;chunk-signature=<64 hex>\r\n<data>\r\n ... then a
 *       zero-size chunk and \r\n. Each signature chains from the previous
 *       one, the first from the Authorization header's (the seed).
 *   STREAMING-UNSIGNED-PAYLOAD-TRAILER
 *       <hex size>\r\n<data>\r\n ... 0\r\n then the trailer named by
 *       x-amz-trailer ("x-amz-checksum-crc32:<base64>\r\n") and \r\n.
 *   STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER
 *       signed chunks, then the trailer and its signature line
 *       "x-amz-trailer-signature:<64 hex>\r\n", then \r\n.
 *   anything else: an ordinary body, passed through unchanged (its length
 *       and an x-amz-checksum-* header, when given, are still checked).
 * Tolerated, as real signers send them: a blank line between the
 * zero-size chunk and the trailer, trailer lines ended by a bare LF, and a
 * blank line before x-amz-trailer-signature (minio-go 7 does both). Chunk
 * header lines must end with CRLF.
 *
 * Pure: no I/O, no logging, no clock. Not thread-safe per decoder; distinct
 * decoders may run in different threads. */
#ifndef NB_CHUNKED_H
#define NB_CHUNKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- checksums, as S3 sends them: base64 of the big-endian digest ---- */

enum nb_cksum_algo {
	NB_CKSUM_NONE = 0,
	NB_CKSUM_CRC32,  /* IEEE 802.3 / zlib, x-amz-checksum-crc32 */
	NB_CKSUM_CRC32C, /* Castagnoli, x-amz-checksum-crc32c */
	NB_CKSUM_SHA1,   /* x-amz-checksum-sha1 */
	NB_CKSUM_SHA256, /* x-amz-checksum-sha256 */
};

/* base64 of the longest digest (SHA-256: 44 characters) plus the NUL */
#define NB_CKSUM_B64_MAX 45

struct nb_cksum {
	enum nb_cksum_algo algo;
	uint32_t crc;
	bool failed; /* OpenSSL failed in update: final reports it */
	void *md;    /* EVP_MD_CTX for SHA-1 and SHA-256, owned */
};

/* Running CRC-32 (zlib's crc32(): start with 0, feed pieces in order). */
uint32_t nb_crc32_update(uint32_t crc, const void *data, size_t len);
/* Running CRC-32C (Castagnoli), same convention. */
uint32_t nb_crc32c_update(uint32_t crc, const void *data, size_t len);

/* The algorithm of a header or trailer name, "x-amz-checksum-crc32" (any
 * case); NB_CKSUM_NONE for any other name or NULL. */
enum nb_cksum_algo nb_cksum_algo_from_header(const char *name);
/* The algorithm of a label as in x-amz-checksum-algorithm and
 * x-amz-sdk-checksum-algorithm, "CRC32" (any case); NB_CKSUM_NONE otherwise. */
enum nb_cksum_algo nb_cksum_algo_from_label(const char *label);
/* "x-amz-checksum-crc32", ... ; NULL for NB_CKSUM_NONE. Static strings. */
const char *nb_cksum_header(enum nb_cksum_algo algo);
/* "CRC32", "CRC32C", "SHA1", "SHA256"; NULL for NB_CKSUM_NONE. Static strings. */
const char *nb_cksum_label(enum nb_cksum_algo algo);

/* Starts a checksum; the caller calls nb_cksum_free afterwards (also after
 * a failed init). -EINVAL for an unknown algorithm, -ENOMEM. */
int nb_cksum_init(struct nb_cksum *c, enum nb_cksum_algo algo);
void nb_cksum_update(struct nb_cksum *c, const void *data, size_t len);
/* Writes the base64 digest into b64 (NUL-terminated). Once per init.
 * -EINVAL when c was not started, -NB_E_INTERNAL when OpenSSL failed. */
int nb_cksum_final(struct nb_cksum *c, char b64[NB_CKSUM_B64_MAX]);
/* Releases what init allocated; safe on a zeroed or freed struct. */
void nb_cksum_free(struct nb_cksum *c);

/* ---- the aws-chunked decoder ---- */

#define NB_CHUNKED_MAX_LINE 4096                         /* one chunk header or trailer line */
#define NB_CHUNKED_MAX_CHUNK (5ull * 1024 * 1024 * 1024) /* one chunk's size: S3's 5 GiB */
#define NB_CHUNKED_MAX_SCOPE 160                         /* credential scope */

enum nb_chunked_mode {
	NB_CHUNKED_NONE = 0,         /* not aws-chunked: an ordinary body */
	NB_CHUNKED_SIGNED,           /* STREAMING-AWS4-HMAC-SHA256-PAYLOAD */
	NB_CHUNKED_UNSIGNED_TRAILER, /* STREAMING-UNSIGNED-PAYLOAD-TRAILER */
	NB_CHUNKED_SIGNED_TRAILER,   /* STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER */
};

/* What went wrong, each an S3 error code (nb_chunked_s3_code). */
enum nb_chunked_fault {
	NB_CHUNKED_OK = 0,
	NB_CHUNKED_SIGNATURE,   /* 403 SignatureDoesNotMatch: chunk or trailer signature */
	NB_CHUNKED_BAD_DIGEST,  /* 400 BadDigest: checksum (header or trailer) mismatch */
	NB_CHUNKED_INCOMPLETE,  /* 400 IncompleteBody: short body, or a decoded length
	                         * other than x-amz-decoded-content-length */
	NB_CHUNKED_MALFORMED,   /* 400 InvalidArgument: chunk framing (size, CRLF, extension,
	                         * line above its ceiling, data after the end) */
	NB_CHUNKED_TRAILER,     /* 400 MalformedTrailerError: trailer missing, repeated,
	                         * unexpected or garbled */
	NB_CHUNKED_REQUEST,     /* 400 InvalidRequest: headers that do not fit together
	                         * (x-amz-trailer without a -TRAILER mode, unknown checksum...) */
	NB_CHUNKED_UNSUPPORTED, /* 501 NotImplemented: SigV4a streaming */
	NB_CHUNKED_OUTPUT,      /* the output callback failed; its own code is returned */
	NB_CHUNKED_INTERNAL,    /* 500 InternalError: bad arguments, allocation, OpenSSL */
};

/* Receives decoded payload bytes (unverified until finish). Returns 0, or a
 * negative code that stops the decoder and is returned by feed. */
typedef int (*nb_chunked_out_fn)(void *ctx, const void *data, size_t len);

/* What the request's headers say. Strings are copied by init: none needs to
 * outlive it. */
struct nb_chunked_cfg {
	enum nb_chunked_mode mode;
	/* signed modes only, from the request's verified SigV4 Authorization: */
	const unsigned char *signing_key; /* 32 bytes, nb_sigv4_signing_key() */
	const char *seed_signature;       /* its Signature: 64 hex */
	const char *amz_date;             /* x-amz-date: YYYYMMDDTHHMMSSZ */
	const char *scope;                /* "YYYYMMDD/region/s3/aws4_request" */
	/* x-amz-trailer: required in the -TRAILER modes, refused in the others */
	const char *trailer;
	/* an x-amz-checksum-* header sent as an ordinary header (name, base64
	 * value), or NULL: checked over the decoded payload */
	const char *checksum_name;
	const char *checksum_value;
	/* x-amz-decoded-content-length (Content-Length for NB_CHUNKED_NONE);
	 * -1 when absent, then not checked */
	int64_t decoded_length;
	nb_chunked_out_fn out;
	void *out_ctx;
};

struct nb_chunked {
	enum nb_chunked_mode mode;
	int state;
	enum nb_chunked_fault fault;
	int ret;             /* sticky result of the first failure */
	uint64_t chunk_left; /* payload bytes still due in the current chunk */
	uint64_t total;      /* payload bytes emitted */
	uint64_t nchunks;    /* data chunks seen */
	int64_t decoded_length;
	unsigned char key[32];
	char prev_sig[65];  /* signature the next one chains from */
	char chunk_sig[65]; /* signature announced by the current chunk */
	char trailer_sig[65];
	char amz_date[17];
	char scope[NB_CHUNKED_MAX_SCOPE];
	char trailer_name[32];           /* x-amz-checksum-..., lowercase */
	char expected[NB_CKSUM_B64_MAX]; /* checksum sent (header or trailer) */
	char computed[NB_CKSUM_B64_MAX]; /* checksum of the payload, once complete */
	bool have_expected;
	unsigned char blanks;    /* blank lines skipped in the trailer section */
	enum nb_cksum_algo algo; /* checksum to verify, NB_CKSUM_NONE when none was sent */
	struct nb_cksum cksum;
	void *chunk_md;   /* EVP_MD_CTX: SHA-256 of the current chunk, owned */
	void *trailer_md; /* EVP_MD_CTX: SHA-256 of the canonical trailer, owned */
	nb_chunked_out_fn out;
	void *out_ctx;
	size_t line_len;
	char line[NB_CHUNKED_MAX_LINE];
	char msg[200];
};

/* The body format announced by x-amz-content-sha256 (NULL: none):
 * NB_CHUNKED_NONE for a hex hash, UNSIGNED-PAYLOAD or NULL. -ENOTSUP for
 * other STREAMING-* values (SigV4a's ECDSA forms: NotImplemented). */
int nb_chunked_mode_parse(const char *content_sha256, enum nb_chunked_mode *mode);

/* Prepares d, which the caller owns (on the stack or in a connection's
 * state, about 5 KiB); init allocates only OpenSSL's hash contexts, which
 * nb_chunked_free releases: call it afterwards, also when init fails.
 * Fails with -EINVAL (a missing argument, fault INTERNAL), -NB_E_INVALID
 * (headers that do not fit together, fault REQUEST), -ENOMEM. */
int nb_chunked_init(struct nb_chunked *d, const struct nb_chunked_cfg *cfg);
/* Decodes the next len bytes of the body; data is not kept. Returns 0 or a
 * negative code, sticky from then on: -NB_E_SIG_MISMATCH (SIGNATURE),
 * -NB_E_INVALID (the other faults), the callback's own code (OUTPUT). */
int nb_chunked_feed(struct nb_chunked *d, const void *data, size_t len);
/* The body has ended: 0 when it was complete, its length, signatures and
 * checksum right; otherwise as feed. */
int nb_chunked_finish(struct nb_chunked *d);
/* Releases what init allocated; safe on a zeroed or freed decoder. */
void nb_chunked_free(struct nb_chunked *d);

/* Why the decoder failed, for the error document's Message ("" when it did
 * not). Points into d. */
const char *nb_chunked_message(const struct nb_chunked *d);
/* The S3 error code of d's fault ("SignatureDoesNotMatch", "BadDigest", ...;
 * NULL when none). Static string. */
const char *nb_chunked_s3_code(const struct nb_chunked *d);
/* Its HTTP status (200 when no fault). */
int nb_chunked_http_status(const struct nb_chunked *d);
/* Payload bytes emitted so far. */
uint64_t nb_chunked_decoded(const struct nb_chunked *d);
/* After a successful finish: the payload's checksum in base64 (points into
 * d) and its algorithm, to store with the object; NULL when none was sent. */
const char *nb_chunked_checksum(const struct nb_chunked *d, enum nb_cksum_algo *algo);

#endif
