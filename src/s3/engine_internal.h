/* Shared between the engine's files; not for the protocol layer. */
#ifndef NB_S3_ENGINE_INTERNAL_H
#define NB_S3_ENGINE_INTERNAL_H

#include <openssl/evp.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "s3/engine.h"

#define S3_ID_HEX 32     /* data ids, version ids, upload ids */
#define S3_ROOT_MAX 1024 /* so every path below fits in S3_PATH_MAX */
#define S3_PATH_MAX (S3_ROOT_MAX + 64)

/* NULL-terminated; step i brings the schema to version i + 1. */
extern const char *const nb_s3_migrations[];

/* A data id between its file's creation and its row's commit: the sweep
 * leaves it alone. */
struct s3_live {
	char id[S3_ID_HEX + 1];
	struct s3_live *prev, *next;
};

#define S3_STMT_CACHE 24

/* One writer waiting in s3_group_commit. */
struct s3_gc_member {
	int (*fn)(struct nb_s3 *s3, void *ctx);
	void *ctx;
	const char *dir; /* to fsync before the commit, or NULL */
	int result;
	bool done;
	pthread_cond_t cond; /* its writer waits here: to lead, or for done */
	struct s3_gc_member *next;
};

struct nb_s3 {
	char root[S3_ROOT_MAX + 1];
	int lock_fd;
	sqlite3 *db;
	pthread_mutex_t lock; /* every use of db */
	pthread_mutex_t live_lock;
	struct s3_live live; /* list head */
	struct s3_stmt_slot {
		const char *sql; /* the caller's string constant, compared by address */
		sqlite3_stmt *s;
		bool busy;
	} stmts[S3_STMT_CACHE]; /* s3_prep_cached's statements, kept compiled */
	/* group commit (s3_group_commit) */
	pthread_mutex_t gc_lock; /* the fields below */
	struct s3_gc_member *gc_head, **gc_tail; /* writers waiting for a batch */
	size_t gc_queued;
	bool gc_leader; /* a batch is being committed */
	bool gc_hold;   /* nb_s3_commit_hold: no batch starts */
	struct nb_s3_commit_stats gc_stats;
};

/* A byte string with a length (keys as BLOBs, bounds). */
struct s3_bytes {
	char *p;
	size_t n;
};

/* ---- checks.c: pure helpers ---- */
bool s3_is_hex_id(const char *s);
bool s3_version_id_valid(const char *s);
int s3_meta_check(const struct nb_s3_meta *m);
uint32_t s3_crc32_update(uint32_t crc, const void *data, size_t len);
uint32_t s3_crc32c_update(uint32_t crc, const void *data, size_t len);
/* out must hold 4 * ((n + 2) / 3) + 1. */
void s3_b64_encode(const void *in, size_t n, char *out);
/* Strict: padding required, no whitespace. -EINVAL when malformed or longer
 * than max. */
int s3_b64_decode(const char *in, void *out, size_t max, size_t *outlen);
void s3_hex(const unsigned char *in, size_t n, char *out);
/* Compares an etag, quoted or not, case-insensitively with an unquoted one. */
bool s3_etag_eq(const char *given, const char *stored);
/* The smallest byte string above every string starting with p: false when
 * none (p empty or all 0xff). out->p allocated. */
int s3_successor(const char *p, size_t n, struct s3_bytes *out, bool *has);

/* ---- engine.c: database, paths, live ids ---- */
int s3_sql_err(int rc);
/* fmt: one char a parameter: s text (NULL binds NULL), k key (C string bound
 * as BLOB), b blob (const void *, size_t), B the same or NULL when the pointer
 * is NULL, i int64. Caller holds s3->lock. */
int s3_prep(struct nb_s3 *s3, sqlite3_stmt **out, const char *sql, const char *fmt, ...);
/* As s3_prep for the hot lookups, with sql a string constant: the statement
 * stays compiled (in s3->stmts) and is handed back with s3_done, not
 * sqlite3_finalize. Under s3->lock, as every use of the db. */
int s3_prep_cached(struct nb_s3 *s3, sqlite3_stmt **out, const char *sql, const char *fmt, ...);
/* Ends a statement of s3_prep_cached (reset for the next use). */
void s3_done(struct nb_s3 *s3, sqlite3_stmt *s);
/* s3_exec with a statement kept compiled, as s3_prep_cached's (the group
 * commit's statements: each PUT runs about ten). */
int s3_exec_cached(struct nb_s3 *s3, const char *sql, const char *fmt, ...);
/* Runs a statement that returns no row. Caller holds s3->lock. */
int s3_exec(struct nb_s3 *s3, const char *sql, const char *fmt, ...);
int s3_tx_begin(struct nb_s3 *s3);  /* takes s3->lock */
int s3_tx_commit(struct nb_s3 *s3); /* releases it; rolls back on failure */
void s3_tx_rollback(struct nb_s3 *s3);
/* Group commit: runs fn(s3, ctx) in a transaction shared with the other
 * writers waiting at the time (one commit, one WAL fsync for all), each in
 * a savepoint of its own, so a member whose fn fails is rolled back alone
 * and gets its own error. dir (NULL: none) is fsynced first, once for every
 * member of the batch naming it. Returns once the batch is committed: 0
 * only when this member's changes are durable. fn runs under s3->lock in
 * some writer's thread; on any failure (fn's, the directory's, the
 * commit's) nothing of this member is kept, and fn's side effects on the
 * caller's own state must be undone by the caller. */
int s3_group_commit(struct nb_s3 *s3, int (*fn)(struct nb_s3 *s3, void *ctx), void *ctx,
                    const char *dir);
/* Text column as a malloc'd string (NULL for NULL). */
char *s3_col_strdup(sqlite3_stmt *s, int col);

struct s3_bucket_row {
	int64_t id;
	struct nb_s3_bucket b;
};
/* Caller holds s3->lock. NoSuchBucket, or AccessDenied when actor is not
 * NULL and owns neither the bucket nor (allow_public) a public one. */
int s3_bucket_find(struct nb_s3 *s3, const char *name, const char *actor, bool allow_public,
                   struct s3_bucket_row *out);
/* Caller holds s3->lock and a transaction. */
int s3_bucket_by_id(struct nb_s3 *s3, int64_t id, struct s3_bucket_row *out);
/* Caller holds s3->lock and a transaction: checks quota then applies. */
int s3_usage_add(struct nb_s3 *s3, const char *owner, int64_t dbytes, int64_t dobjects,
                 const struct nb_s3_quota *q);

void s3_data_path(struct nb_s3 *s3, const char *id, char *out, size_t n);
void s3_data_dir(struct nb_s3 *s3, const char *id, char *out, size_t n);
void s3_tmp_path(struct nb_s3 *s3, const char *id, char *out, size_t n);
int s3_fsync_dir(const char *dir);
/* A new random id, registered live. */
int s3_live_new(struct nb_s3 *s3, struct s3_live *l);
void s3_live_drop(struct nb_s3 *s3, struct s3_live *l);
/* Unlinks data files (ignoring ENOENT). */
void s3_unlink_data(struct nb_s3 *s3, char (*ids)[S3_ID_HEX + 1], size_t n);

/* ---- object.c ---- */
/* Fills o from a versions row selected with S3_VERSION_COLS (from col 0). */
#define S3_VERSION_COLS                                                                            \
	"v.key, v.version_id, v.delete_marker, v.is_latest, v.size, v.etag, v.mtime_ms, v.owner, " \
	"v.content_type, v.content_encoding, v.content_disposition, v.cache_control, "             \
	"v.content_language, v.expires, v.user_meta, v.checksum_algo, v.checksum_value, v.parts, " \
	"v.data_id, v.id, v.body"
#define S3_VERSION_NCOLS 21
int s3_object_from_row(sqlite3_stmt *s, struct nb_s3_object *o);

/* A new object version to commit (copy, complete, put). */
struct s3_newver {
	int64_t bucket_id;
	const char *key;
	const char *owner; /* NULL: the bucket owner */
	const char *data_id; /* NULL: the object is body */
	const void *body;    /* size bytes kept in the row (data_id NULL) */
	uint64_t size;
	const char *etag; /* unquoted */
	uint32_t parts;
	const char *content_type, *content_encoding, *content_disposition, *cache_control,
	    *content_language, *expires, *user_meta; /* user_meta: JSON text */
	const char *checksum_algo, *checksum_value;
	const struct nb_s3_quota *quota;
	const struct nb_s3_cond *cond;
	/* complete: the upload whose parts become this version */
	int64_t upload_rowid;
	const char (*part_ids)[S3_ID_HEX + 1]; /* data ids of the listed parts */
	size_t n_parts;
	const char *dir; /* data_id's directory, fsynced in the commit's batch; or NULL */
};
/* Commits nv in one transaction (s3_group_commit's). Data files no longer referenced are added
 * to *garbage (caller unlinks after, frees). */
int s3_commit_version(struct nb_s3 *s3, const struct s3_newver *nv, struct nb_s3_put_result *res,
                      char (**garbage)[S3_ID_HEX + 1], size_t *n_garbage);

/* The streaming handle (object.c). */
struct s3_part_target {
	int64_t upload_rowid;
	uint32_t number;
};

/* PUT_MEM: a small object's bytes in mem, no file (NB_S3_INLINE_MAX) */
enum put_state { PUT_TMP, PUT_DATA, PUT_MEM, PUT_DONE };

struct nb_s3_put {
	struct nb_s3 *s3;
	struct s3_live live;
	enum put_state state;
	int fd;
	unsigned char *mem; /* PUT_MEM: declared bytes */
	int64_t declared;
	uint64_t written, max, synced;
	unsigned checksums;
	EVP_MD_CTX *md5, *sha1, *sha256;
	uint32_t crc32, crc32c;
	/* the object (or part) it will become */
	int64_t bucket_id;
	char *key, *owner;
	char *hdr[6]; /* content-type, -encoding, -disposition, cache-control, -language, expires */
	char *user_meta;
	struct nb_s3_quota quota;
	bool has_cond;
	struct nb_s3_cond cond; /* strings owned */
	bool is_part;
	struct s3_part_target part;
};

/* in_row: an object (not a part) that may be kept in its row when its
 * declared length is at most NB_S3_INLINE_MAX (the bytes then stay in
 * memory: PUT_MEM). */
int s3_put_new(struct nb_s3 *s3, int64_t declared, unsigned checksums, bool in_row,
               struct nb_s3_put **out);
/* Streams len bytes of fd from off into p (pread + nb_s3_put_write). */
int s3_put_from_fd(struct nb_s3_put *p, int fd, uint64_t off, uint64_t len);
/* fsync, rename from tmp/ into data/, fsync of the directory. */
int s3_put_make_durable(struct nb_s3_put *p);
/* The same without the directory's fsync: dir (S3_PATH_MAX) is the
 * directory, which the caller fsyncs (s3_group_commit) before the row. */
int s3_put_place(struct nb_s3_put *p, char *dir);
/* Removes whatever file the handle still owns (by state) and frees it. */
void s3_put_free(struct nb_s3_put *p);

/* ---- multipart.c ---- */
/* Caller holds s3->lock and a transaction. */
int s3_part_commit_locked(struct nb_s3 *s3, const struct s3_part_target *t, const char *data_id,
                          uint64_t size, const char *etag, const char *ck_algo,
                          const char *ck_value, const struct nb_s3_quota *q,
                          char (**garbage)[S3_ID_HEX + 1], size_t *n_garbage);
int s3_garbage_add(char (**g)[S3_ID_HEX + 1], size_t *n, const char *id);

#endif
