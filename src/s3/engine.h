/* The S3 storage engine: buckets, objects, versions, multipart uploads and
 * quotas on a local filesystem. No HTTP in here: the protocol layer parses
 * requests, checks signatures and calls these functions; it feeds upload
 * bytes as they arrive and sends downloads straight from the file
 * descriptors handed out here (sendfile), so no object is ever held whole in
 * memory.
 *
 * On disk, under root:
 *   meta.db          SQLite (WAL, synchronous=FULL; the group commit's
 *                    batches NORMAL, their WAL fsynced before any writer
 *                    is answered): buckets, versions, uploads, parts,
 *                    usage counters, small objects' bytes; numbered
 *                    migrations
 *   data/xx/<id>     object and part data, one immutable file each, named by
 *                    a random 128-bit id (never by the key): xx = id[0..1];
 *                    objects of at most NB_S3_INLINE_MAX bytes put with a
 *                    declared length have no file: their bytes are in
 *                    their version's row
 *   tmp/<id>         uploads in progress
 *   LOCK             flock()ed by the one process that has the root open
 *
 * A write is: bytes to tmp/<id> (digests computed on the way), fsync, rename
 * to data/xx/<id>, fsync of data/xx, then the metadata row is committed.
 * A small object's bytes stay in memory until they are committed with its
 * row: one WAL fsync, shared by the group commit's batch, makes it durable.
 * Readers find data only through committed rows, so a partial object is never
 * visible; a crash leaves at most an unreferenced tmp or data file, which
 * nb_s3_sweep() removes (nb_s3_open() sweeps once).
 *
 * Every function is safe to call from many threads at once. A streaming
 * handle (struct nb_s3_put) belongs to one thread at a time.
 *
 * Errors: functions return 0 or a negative code: -NB_S3_E_* for S3 errors,
 * -errno for system ones. nb_s3_err_code/http_status/message map any of them
 * to what S3 answers. Strings in: keys are NUL-terminated UTF-8 (a key that
 * came from URL decoding must go through nb_s3_key_check(ptr, len) first, so
 * an embedded NUL is refused rather than truncating the key).
 *
 * Ownership: "actor" is the account making the request. When not NULL, the
 * bucket must belong to it or the call fails with -NB_S3_E_ACCESS_DENIED (the
 * protocol layer may answer NoSuchBucket instead); NULL skips the check (a
 * read of a public-read bucket, or an internal caller). Writes charge the
 * bucket owner's usage counters and record actor (or the bucket owner) as
 * the object's owner. */
#ifndef NB_S3_ENGINE_H
#define NB_S3_ENGINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- limits (S3's own where S3 has one) ---- */
#define NB_S3_KEY_MAX 1024 /* bytes of UTF-8 */
#define NB_S3_OWNER_MAX 64 /* account id length */
#define NB_S3_REGION_MAX 32
#define NB_S3_BUCKET_NAME_MAX 63
#define NB_S3_BUCKETS_PER_OWNER 1000
#define NB_S3_META_MAX 2048           /* x-amz-meta-* names + values */
#define NB_S3_HEADER_VALUE_MAX 1024   /* content-type and friends */
#define NB_S3_PUT_MAX (5ULL << 30)    /* single PUT and one part */
#define NB_S3_OBJECT_MAX (5ULL << 40) /* a completed multipart */
#define NB_S3_PART_MIN (5ULL << 20)   /* every part but the last */
#define NB_S3_PARTS_MAX 10000
#define NB_S3_LIST_MAX 1000  /* max-keys, max-parts, ... cap */
#define NB_S3_TOKEN_MAX 2048 /* continuation token length */
#define NB_S3_INLINE_MAX (16u << 10) /* objects up to this are kept in their row */

/* Buffer sizes, NUL included. */
#define NB_S3_ETAG_SIZE 48       /* "\"" 32 hex "-10000" "\"" */
#define NB_S3_VERSION_ID_SIZE 40 /* "null" or 32 hex digits */
#define NB_S3_UPLOAD_ID_SIZE 40  /* 32 hex digits */

/* ---- errors ---- */
enum nb_s3_err {
	NB_S3_E_BASE = 12000,
	NB_S3_E_NO_SUCH_BUCKET,      /* 404 NoSuchBucket */
	NB_S3_E_NO_SUCH_KEY,         /* 404 NoSuchKey */
	NB_S3_E_NO_SUCH_VERSION,     /* 404 NoSuchVersion */
	NB_S3_E_NO_SUCH_UPLOAD,      /* 404 NoSuchUpload */
	NB_S3_E_BUCKET_EXISTS,       /* 409 BucketAlreadyExists */
	NB_S3_E_BUCKET_OWNED,        /* 409 BucketAlreadyOwnedByYou */
	NB_S3_E_BUCKET_NOT_EMPTY,    /* 409 BucketNotEmpty */
	NB_S3_E_INVALID_BUCKET_NAME, /* 400 InvalidBucketName */
	NB_S3_E_TOO_MANY_BUCKETS,    /* 400 TooManyBuckets */
	NB_S3_E_KEY_TOO_LONG,        /* 400 KeyTooLongError */
	NB_S3_E_INVALID_KEY,         /* 400 InvalidArgument: empty, NUL, bad UTF-8 */
	NB_S3_E_INVALID_PART,        /* 400 InvalidPart */
	NB_S3_E_INVALID_PART_ORDER,  /* 400 InvalidPartOrder */
	NB_S3_E_ENTITY_TOO_SMALL,    /* 400 EntityTooSmall */
	NB_S3_E_ENTITY_TOO_LARGE,    /* 400 EntityTooLarge */
	NB_S3_E_INCOMPLETE_BODY,     /* 400 IncompleteBody: fewer/more bytes than declared */
	NB_S3_E_INVALID_RANGE,       /* 416 InvalidRange */
	NB_S3_E_PRECONDITION_FAILED, /* 412 PreconditionFailed */
	NB_S3_E_NOT_MODIFIED,        /* 304 NotModified (not an error page) */
	NB_S3_E_BAD_DIGEST,          /* 400 BadDigest: Content-MD5 mismatch */
	NB_S3_E_INVALID_DIGEST,      /* 400 InvalidDigest: Content-MD5 malformed */
	NB_S3_E_SHA256_MISMATCH,     /* 400 XAmzContentSHA256Mismatch */
	NB_S3_E_CHECKSUM_MISMATCH,   /* 400 BadDigest: an x-amz-checksum-* mismatch */
	NB_S3_E_INVALID_CHECKSUM,    /* 400 InvalidRequest: x-amz-checksum-* malformed */
	NB_S3_E_METADATA_TOO_LARGE,  /* 400 MetadataTooLarge */
	NB_S3_E_INVALID_ARGUMENT,    /* 400 InvalidArgument */
	NB_S3_E_INVALID_REQUEST,     /* 400 InvalidRequest: e.g. copy onto itself */
	NB_S3_E_INVALID_TOKEN,       /* 400 InvalidArgument: bad continuation token */
	NB_S3_E_METHOD_NOT_ALLOWED,  /* 405 MethodNotAllowed: GET of a delete marker */
	NB_S3_E_ACCESS_DENIED,       /* 403 AccessDenied: another account's bucket */
	NB_S3_E_QUOTA_EXCEEDED,      /* 403 QuotaExceeded */
	NB_S3_E_SLOW_DOWN,           /* 503 SlowDown: database busy */
	NB_S3_E_INTERNAL,            /* 500 InternalError */
	NB_S3_E_END
};

/* Any return value of this API (or -errno) to S3's code string, HTTP status
 * and a message. Static strings: never freed. */
const char *nb_s3_err_code(int err);
int nb_s3_err_http_status(int err);
const char *nb_s3_err_message(int err);

/* ---- the engine ---- */
struct nb_s3;

/* Opens (creating if needed) the store under root, runs migrations, takes
 * the root's lock (-EBUSY if another process holds it) and sweeps leftovers
 * of a crash. Caller closes *out with nb_s3_close. */
int nb_s3_open(const char *root, struct nb_s3 **out);
/* Accepts NULL. Uploads still open must be aborted first. */
void nb_s3_close(struct nb_s3 *s3);
/* Schema version of the metadata database (number of migrations applied). */
int nb_s3_schema_version(struct nb_s3 *s3);

struct nb_s3_sweep_stats {
	size_t tmp_removed;  /* temp files of dead uploads */
	size_t data_removed; /* data files no row references */
};
/* Removes files no committed row and no upload in progress refers to. Safe
 * while uploads run; the daemon calls it periodically. stats may be NULL. */
int nb_s3_sweep(struct nb_s3 *s3, struct nb_s3_sweep_stats *stats);

/* Writes of rows that reference new data (PUT, UploadPart, CopyObject,
 * CompleteMultipartUpload) are group-committed: writers arriving while a
 * commit runs share the next one (one SQLite transaction, one WAL fsync),
 * each acknowledged only once that commit is durable. */
struct nb_s3_commit_stats {
	uint64_t batches; /* transactions committed by the group commit */
	uint64_t members; /* writers that went through it (failed ones too) */
	uint64_t failed;  /* members that got an error */
	uint64_t queued;  /* writers waiting for a batch right now */
};
void nb_s3_commit_stats(struct nb_s3 *s3, struct nb_s3_commit_stats *out);
/* For tests: while held, no batch starts (writers queue up); releasing lets
 * the next batch take every writer queued. */
void nb_s3_commit_hold(struct nb_s3 *s3, bool hold);

/* ---- names and keys (pure) ---- */
/* 0 or -NB_S3_E_INVALID_BUCKET_NAME; *why (may be NULL) names the broken rule
 * (static string). */
int nb_s3_bucket_name_check(const char *name, const char **why);
/* 0, -NB_S3_E_KEY_TOO_LONG or -NB_S3_E_INVALID_KEY (empty, NUL byte, invalid
 * UTF-8); key need not be NUL-terminated. */
int nb_s3_key_check(const char *key, size_t len);

/* ---- buckets ---- */
enum nb_s3_versioning {
	NB_S3_VERSIONING_UNSET = 0,
	NB_S3_VERSIONING_ENABLED = 1,
	NB_S3_VERSIONING_SUSPENDED = 2,
};

struct nb_s3_bucket {
	char name[NB_S3_BUCKET_NAME_MAX + 1];
	char owner[NB_S3_OWNER_MAX + 1];
	char region[NB_S3_REGION_MAX + 1];
	bool public_read;
	enum nb_s3_versioning versioning;
	int64_t created_ms; /* wall clock */
};

/* Creates a bucket owned by owner in region (e.g. "us-east-1"). Fails with
 * BucketAlreadyOwnedByYou / BucketAlreadyExists when the name is taken.
 * out may be NULL; filled on success. */
int nb_s3_bucket_create(struct nb_s3 *s3, const char *name, const char *owner, const char *region,
                        struct nb_s3_bucket *out);
/* Deletes an empty bucket: no object version, no delete marker, no pending
 * multipart upload (else BucketNotEmpty). */
int nb_s3_bucket_delete(struct nb_s3 *s3, const char *name, const char *actor);
/* Head/get, no ownership check: out gets owner, region, flags. */
int nb_s3_bucket_get(struct nb_s3 *s3, const char *name, struct nb_s3_bucket *out);
/* owner's buckets by name; caller frees *out (free()). At most
 * NB_S3_BUCKETS_PER_OWNER. */
int nb_s3_bucket_list(struct nb_s3 *s3, const char *owner, struct nb_s3_bucket **out, size_t *n);
/* Sets the public-read flag (anonymous GET/HEAD/list allowed: the protocol
 * layer's decision, from nb_s3_bucket_get). */
int nb_s3_bucket_set_public_read(struct nb_s3 *s3, const char *name, const char *actor,
                                 bool public_read);
/* Enabled or Suspended (UNSET is refused: S3 cannot go back). */
int nb_s3_bucket_set_versioning(struct nb_s3 *s3, const char *name, const char *actor,
                                enum nb_s3_versioning state);

/* ---- objects: common types ---- */

/* Stored with an object, returned as stored. All strings borrowed; NULL or
 * "" means absent. user: a JSON object of name -> string value for the
 * x-amz-meta-* headers, names without the prefix (lowercased by the caller);
 * names + values at most NB_S3_META_MAX bytes. */
struct nb_s3_meta {
	const char *content_type;
	const char *content_encoding;
	const char *content_disposition;
	const char *cache_control;
	const char *content_language;
	const char *expires;
	const json_t *user;
};

/* Usage limits of the bucket owner's account: 0 means unlimited. A write
 * whose commit would raise usage beyond a limit fails with QuotaExceeded;
 * writes that do not raise usage always pass. */
struct nb_s3_quota {
	uint64_t max_bytes;
	uint64_t max_objects;
};

/* Conditional request headers, already parsed. Strings borrowed; NULL when
 * absent. Times are seconds since the epoch; 0 when absent. */
struct nb_s3_cond {
	const char *if_match;      /* list of etags or "*" */
	const char *if_none_match; /* list of etags or "*" */
	int64_t if_modified_since;
	int64_t if_unmodified_since;
};

/* S3's evaluation of the four conditions for an object (exists false when
 * there is none; etag quoted or not; mtime in ms). read: GET/HEAD (a failed
 * If-None-Match or If-Modified-Since gives 304), else a write (412). Returns
 * 200, 304 or 412. If-Match decides over If-Unmodified-Since and
 * If-None-Match over If-Modified-Since, as S3 documents. Pure. */
int nb_s3_cond_eval(const struct nb_s3_cond *c, bool exists, const char *etag, int64_t mtime_ms,
                    bool read);

/* A parsed Range header. */
enum nb_s3_range_kind {
	NB_S3_RANGE_NONE = 0,
	NB_S3_RANGE_FROM_TO, /* bytes=first-last */
	NB_S3_RANGE_FROM,    /* bytes=first- */
	NB_S3_RANGE_SUFFIX,  /* bytes=-last (last = the suffix length) */
};
struct nb_s3_range {
	enum nb_s3_range_kind kind;
	uint64_t first;
	uint64_t last;
};
/* Resolves r against an object of size bytes into *off and *len. *partial is
 * true when the answer is a 206 (false: whole object, e.g. no range, or
 * first > last which S3 ignores). Unsatisfiable ranges (first >= size, a
 * zero suffix, any range of an empty object) give -NB_S3_E_INVALID_RANGE.
 * Pure. */
int nb_s3_range_resolve(const struct nb_s3_range *r, uint64_t size, uint64_t *off, uint64_t *len,
                        bool *partial);

/* Checksum algorithms computed while streaming (bit flags). MD5 always is. */
enum nb_s3_checksum {
	NB_S3_CK_CRC32 = 1u << 0,
	NB_S3_CK_CRC32C = 1u << 1,
	NB_S3_CK_SHA1 = 1u << 2,
	NB_S3_CK_SHA256 = 1u << 3, /* also verifies x-amz-content-sha256 */
};

/* What the client declared, verified at commit. Strings borrowed; NULL when
 * not given. An expected value whose algorithm was not asked for at begin is
 * -NB_S3_E_INVALID_ARGUMENT. */
struct nb_s3_expect {
	const char *content_md5;    /* Content-MD5: base64 of 16 bytes */
	const char *content_sha256; /* x-amz-content-sha256 when it is a hex hash */
	const char *crc32;          /* x-amz-checksum-crc32: base64 */
	const char *crc32c;         /* x-amz-checksum-crc32c */
	const char *sha1;           /* x-amz-checksum-sha1 */
	const char *sha256;         /* x-amz-checksum-sha256 */
};

/* An object version as stored. Strings owned: nb_s3_object_clear frees
 * them. Every function that fills one leaves it safe to clear, even on
 * error. */
struct nb_s3_object {
	char *key;
	char version_id[NB_S3_VERSION_ID_SIZE]; /* "null" unless versioned */
	bool delete_marker;
	bool is_latest;
	uint64_t size;
	char etag[NB_S3_ETAG_SIZE]; /* quoted, as S3 shows it */
	int64_t mtime_ms;           /* last modified, wall clock */
	char *owner;
	char *content_type, *content_encoding, *content_disposition, *cache_control,
	    *content_language, *expires; /* NULL when not set */
	json_t *user_meta;               /* object, never NULL once filled */
	char checksum_algo[8];           /* "CRC32", "CRC32C", "SHA1", "SHA256" or "" */
	char *checksum_value;            /* base64, NULL when none */
	uint32_t parts;                  /* parts of a multipart upload, else 0 */
};
/* Frees o's strings and zeroes it; accepts a zeroed struct. */
void nb_s3_object_clear(struct nb_s3_object *o);

struct nb_s3_put_result {
	char etag[NB_S3_ETAG_SIZE];             /* quoted */
	char version_id[NB_S3_VERSION_ID_SIZE]; /* "null" unless versioning Enabled;
	                                           "" for a part */
	uint64_t size;
	int64_t mtime_ms;
};

/* ---- put (streaming) ---- */
struct nb_s3_put_opts {
	const char *bucket;
	const char *key;
	const char *actor;
	struct nb_s3_meta meta;
	int64_t content_length; /* declared length, -1 when unknown (chunked) */
	unsigned checksums;     /* NB_S3_CK_* to compute */
	struct nb_s3_quota quota;
	const struct nb_s3_cond *cond; /* conditional write (If-None-Match: *,
	                                  If-Match), checked at commit; NULL */
};

/* One upload in progress: a temp file and running digests. */
struct nb_s3_put;

/* Starts a put: checks bucket, access, key, metadata and the declared
 * length (EntityTooLarge), creates the temp file. Caller ends *out with
 * nb_s3_put_commit or nb_s3_put_abort. Copies what it needs from o. */
int nb_s3_put_begin(struct nb_s3 *s3, const struct nb_s3_put_opts *o, struct nb_s3_put **out);
/* Appends len bytes. On error (EntityTooLarge, IncompleteBody past the
 * declared length, QuotaExceeded already certain, -errno) the handle stays
 * and must be aborted. */
int nb_s3_put_write(struct nb_s3_put *p, const void *data, size_t len);
/* Verifies ex (may be NULL), makes the data durable and commits the version
 * (or the part, for handles from nb_s3_part_begin). Always consumes p, on
 * error too (nothing is left behind). res may be NULL. */
int nb_s3_put_commit(struct nb_s3_put *p, const struct nb_s3_expect *ex,
                     struct nb_s3_put_result *res);
/* The SHA-256 of the bytes written so far as 64 lowercase hex digits (a
 * handle begun with NB_S3_CK_SHA256, else -EINVAL); the handle goes on, so
 * a caller that names content by its hash can learn it before the commit. */
int nb_s3_put_sha256_hex(struct nb_s3_put *p, char hex[65]);
/* Drops the upload and its temp file; consumes p. Accepts NULL. */
void nb_s3_put_abort(struct nb_s3_put *p);

/* ---- get, head, delete ---- */

/* An open object: read length bytes of fd from offset (sendfile, or
 * MHD_create_response_from_fd_at_offset64), or, for an object kept in its
 * row, of data (then fd is -1): data holds the whole object (obj.size
 * bytes), offset and length index into it. Either stays valid after the
 * object is deleted. To keep the fd (the data) past nb_s3_reader_close, take
 * it and set fd to -1 (data to NULL). */
struct nb_s3_reader {
	struct nb_s3_object obj;
	int fd;
	unsigned char *data; /* malloc'd */
	uint64_t offset;
	uint64_t length;
	bool partial; /* a 206 with Content-Range offset-(offset+length-1)/obj.size */
};

/* Looks up key (latest when version_id is NULL, or that version: "null" or
 * an id) in bucket. The latest being a delete marker gives NoSuchKey and a
 * given version that is a delete marker MethodNotAllowed; both fill out with
 * the marker (version_id, delete_marker) for the x-amz-delete-marker header.
 * A malformed version_id is InvalidArgument, an unknown one NoSuchVersion.
 * Caller clears out. */
int nb_s3_object_head(struct nb_s3 *s3, const char *bucket, const char *key, const char *version_id,
                      const char *actor, struct nb_s3_object *out);
/* As head, then evaluates cond (may be NULL: -NB_S3_E_NOT_MODIFIED or
 * -NB_S3_E_PRECONDITION_FAILED, out->obj filled), then range (may be NULL;
 * InvalidRange), and opens the data. Caller closes out with
 * nb_s3_reader_close, on error too. */
int nb_s3_object_open(struct nb_s3 *s3, const char *bucket, const char *key, const char *version_id,
                      const char *actor, const struct nb_s3_cond *cond,
                      const struct nb_s3_range *range, struct nb_s3_reader *out);
/* Closes the fd (unless taken), frees data and clears the object; accepts a
 * zeroed one. */
void nb_s3_reader_close(struct nb_s3_reader *r);
/* For callers that need a file descriptor whatever the object: an object
 * held in data is copied into a memfd (r->fd, offsets unchanged). 0 or
 * -errno. */
int nb_s3_reader_fd(struct nb_s3_reader *r);

struct nb_s3_delete_result {
	bool delete_marker; /* a marker was created, or the removed version was one */
	char version_id[NB_S3_VERSION_ID_SIZE]; /* of the marker created or version
	                                           removed; "" when none */
};
/* version_id NULL: delete the latest: unset versioning removes the object,
 * Enabled adds a delete marker, Suspended replaces the null version with a
 * null delete marker. With a version_id that version (object or marker) is
 * removed for good. Deleting what does not exist succeeds (S3 answers 204).
 * res may be NULL. The protocol layer loops over this for DeleteObjects. */
int nb_s3_object_delete(struct nb_s3 *s3, const char *bucket, const char *key,
                        const char *version_id, const char *actor, struct nb_s3_delete_result *res);

/* ---- copy ---- */
struct nb_s3_copy_opts {
	const char *src_bucket;
	const char *src_key;
	const char *src_version_id;        /* NULL: latest */
	const struct nb_s3_cond *src_cond; /* x-amz-copy-source-if-*: NULL */
	const char *bucket;
	const char *key;
	const char *actor; /* must own bucket, and own src_bucket or it be public */
	bool replace_meta; /* x-amz-metadata-directive: REPLACE (meta) or COPY */
	struct nb_s3_meta meta;
	struct nb_s3_quota quota;
};
/* Server-side copy of a whole object: a hard link when the filesystem
 * allows (objects are immutable), else a streamed copy. The etag stays.
 * Copying an object onto itself without REPLACE is InvalidRequest, as in
 * S3. src_version_id (may be NULL) receives the source's version id. */
int nb_s3_object_copy(struct nb_s3 *s3, const struct nb_s3_copy_opts *o,
                      struct nb_s3_put_result *res, char src_version_id[NB_S3_VERSION_ID_SIZE]);

/* ---- listing ---- */
struct nb_s3_list_opts {
	const char *prefix;      /* NULL or "" */
	const char *delimiter;   /* NULL or "": no common prefixes */
	uint32_t max_keys;       /* capped at NB_S3_LIST_MAX; 0 lists nothing */
	const char *start_after; /* V2 start-after, V1 marker (exclusive) */
	const char *token;       /* V2 continuation token (decides over start_after) */
	/* ListObjectVersions only: */
	const char *key_marker;
	const char *version_id_marker;
};

struct nb_s3_list {
	struct nb_s3_object *items; /* keys (and versions) in UTF-8 binary order */
	size_t n_items;
	char **prefixes; /* common prefixes, in order */
	size_t n_prefixes;
	bool truncated;
	char *next_token;  /* V2 NextContinuationToken when truncated */
	char *next_marker; /* V1 NextMarker / ListObjectVersions NextKeyMarker:
	                      the last key or common prefix returned */
	char next_version_id_marker[NB_S3_VERSION_ID_SIZE]; /* versions only */
};
/* ListObjectsV2 / V1 over the latest non-deleted version of every key.
 * Items carry key, size, etag, mtime, owner (no other metadata). Caller
 * frees out with nb_s3_list_clear, on error too. */
int nb_s3_list_objects(struct nb_s3 *s3, const char *bucket, const char *actor,
                       const struct nb_s3_list_opts *o, struct nb_s3_list *out);
/* ListObjectVersions: every version and delete marker, keys ascending and
 * each key's versions newest first, with is_latest; key_marker and
 * version_id_marker as S3 takes them. Caller clears out. */
int nb_s3_list_versions(struct nb_s3 *s3, const char *bucket, const char *actor,
                        const struct nb_s3_list_opts *o, struct nb_s3_list *out);
/* Frees and zeroes; accepts a zeroed list. */
void nb_s3_list_clear(struct nb_s3_list *l);

/* ---- multipart ---- */
/* CreateMultipartUpload: o's bucket, key, actor and meta are used (the
 * stream fields are not). upload_id receives the new id. */
int nb_s3_mpu_create(struct nb_s3 *s3, const struct nb_s3_put_opts *o,
                     char upload_id[NB_S3_UPLOAD_ID_SIZE]);

struct nb_s3_part_opts {
	const char *bucket;
	const char *key;
	const char *upload_id;
	uint32_t part_number; /* 1..NB_S3_PARTS_MAX */
	const char *actor;
	int64_t content_length; /* -1 when unknown */
	unsigned checksums;
	struct nb_s3_quota quota;
};
/* UploadPart: a streaming handle like nb_s3_put_begin's; its commit stores
 * the part (replacing an earlier one with that number) and returns its etag.
 * Caller ends *out with nb_s3_put_commit or nb_s3_put_abort. */
int nb_s3_part_begin(struct nb_s3 *s3, const struct nb_s3_part_opts *o, struct nb_s3_put **out);
/* UploadPartCopy: part o->part_number is range (NULL: whole) of the source
 * object; c's src_* fields, src_cond and quota are used. res gets the part's
 * etag. */
int nb_s3_part_copy(struct nb_s3 *s3, const struct nb_s3_part_opts *o,
                    const struct nb_s3_copy_opts *c, const struct nb_s3_range *range,
                    struct nb_s3_put_result *res);

struct nb_s3_part {
	uint32_t number;
	uint64_t size;
	char etag[NB_S3_ETAG_SIZE]; /* quoted */
	int64_t mtime_ms;
	char checksum_algo[8];
	char checksum_value[64]; /* base64 or "" */
};
struct nb_s3_parts {
	struct nb_s3_part *parts;
	size_t n;
	bool truncated;
	uint32_t next_marker;       /* NextPartNumberMarker */
	struct nb_s3_object upload; /* key, owner, metadata of the upload */
};
/* ListParts after part number marker (0: from the start), at most max
 * (capped at NB_S3_LIST_MAX). Caller frees out with nb_s3_parts_clear. */
int nb_s3_mpu_list_parts(struct nb_s3 *s3, const char *bucket, const char *key,
                         const char *upload_id, const char *actor, uint32_t marker, uint32_t max,
                         struct nb_s3_parts *out);
/* Frees and zeroes; accepts a zeroed struct. */
void nb_s3_parts_clear(struct nb_s3_parts *p);

struct nb_s3_upload {
	char *key;
	char upload_id[NB_S3_UPLOAD_ID_SIZE];
	char *owner;
	int64_t initiated_ms;
};
struct nb_s3_uploads {
	struct nb_s3_upload *uploads; /* by key, then initiation */
	size_t n;
	char **prefixes;
	size_t n_prefixes;
	bool truncated;
	char *next_key_marker;
	char next_upload_id_marker[NB_S3_UPLOAD_ID_SIZE];
};
/* ListMultipartUploads: prefix, delimiter, key_marker, max_keys (as
 * max-uploads) of o are used, and version_id_marker as upload-id-marker.
 * Caller frees out with nb_s3_uploads_clear. */
int nb_s3_mpu_list(struct nb_s3 *s3, const char *bucket, const char *actor,
                   const struct nb_s3_list_opts *o, struct nb_s3_uploads *out);
/* Frees and zeroes; accepts a zeroed struct. */
void nb_s3_uploads_clear(struct nb_s3_uploads *u);

struct nb_s3_complete_part {
	uint32_t number;
	const char *etag; /* quoted or not */
};
/* CompleteMultipartUpload: parts (ascending, each present with its etag,
 * all but the last at least NB_S3_PART_MIN) are joined into one data file;
 * etag = md5 of the parts' binary md5s + "-N". Unlisted parts are dropped.
 * Errors: InvalidPart, InvalidPartOrder, EntityTooSmall, EntityTooLarge,
 * NoSuchUpload, QuotaExceeded. cond as nb_s3_put_opts'. res may be NULL. */
int nb_s3_mpu_complete(struct nb_s3 *s3, const char *bucket, const char *key, const char *upload_id,
                       const char *actor, const struct nb_s3_complete_part *parts, size_t n,
                       const struct nb_s3_quota *quota, const struct nb_s3_cond *cond,
                       struct nb_s3_put_result *res);
/* AbortMultipartUpload: drops the upload and its parts' files. */
int nb_s3_mpu_abort(struct nb_s3 *s3, const char *bucket, const char *key, const char *upload_id,
                    const char *actor);
/* Aborts every upload initiated more than max_age_ms ago; *expired (may be
 * NULL) gets how many. The daemon calls it periodically. */
int nb_s3_mpu_expire(struct nb_s3 *s3, int64_t max_age_ms, size_t *expired);

/* ---- quotas ---- */
/* owner's usage: bytes of every stored version and pending part, and the
 * number of stored versions that are not delete markers. */
int nb_s3_usage(struct nb_s3 *s3, const char *owner, uint64_t *bytes, uint64_t *objects);

#endif
