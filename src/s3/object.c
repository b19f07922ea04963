/* Objects: the streaming put pipeline (temp file, digests, fsync, rename,
 * directory fsync, then the row), get/head, delete, copy. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "s3/engine_internal.h"

#define SYNC_EVERY (32u << 20) /* start writeback of a big upload as it goes */
#define COPY_BUF (1u << 20)

/* ---- object rows ---- */

static char *col_dup_nonempty(sqlite3_stmt *s, int col)
{
	if (sqlite3_column_type(s, col) == SQLITE_NULL || sqlite3_column_bytes(s, col) == 0)
		return NULL;
	return s3_col_strdup(s, col);
}

int s3_object_from_row(sqlite3_stmt *s, struct nb_s3_object *o)
{
	const void *k = sqlite3_column_blob(s, 0);
	int kn = sqlite3_column_bytes(s, 0);
	const char *meta;
	char **hdrs[6] = {&o->content_type,  &o->content_encoding, &o->content_disposition,
	                  &o->cache_control, &o->content_language, &o->expires};

	nb_s3_object_clear(o);
	o->key = malloc((size_t)kn + 1);
	if (!o->key)
		return -ENOMEM;
	memcpy(o->key, k ? k : "", (size_t)kn);
	o->key[kn] = '\0';
	nb_strlcpy(o->version_id, (const char *)sqlite3_column_text(s, 1), sizeof(o->version_id));
	o->delete_marker = sqlite3_column_int(s, 2) != 0;
	o->is_latest = sqlite3_column_int(s, 3) != 0;
	o->size = (uint64_t)sqlite3_column_int64(s, 4);
	if (!o->delete_marker)
		snprintf(o->etag, sizeof(o->etag), "\"%s\"", sqlite3_column_text(s, 5));
	o->mtime_ms = sqlite3_column_int64(s, 6);
	o->owner = s3_col_strdup(s, 7);
	for (int i = 0; i < 6; i++)
		*hdrs[i] = col_dup_nonempty(s, 8 + i);
	meta = (const char *)sqlite3_column_text(s, 14);
	o->user_meta = meta ? json_loads(meta, 0, NULL) : NULL;
	if (!o->user_meta)
		o->user_meta = json_object();
	if (sqlite3_column_type(s, 15) != SQLITE_NULL)
		nb_strlcpy(o->checksum_algo, (const char *)sqlite3_column_text(s, 15),
		           sizeof(o->checksum_algo));
	o->checksum_value = col_dup_nonempty(s, 16);
	o->parts = (uint32_t)sqlite3_column_int(s, 17);
	if (!o->owner || !o->user_meta)
		return -ENOMEM;
	return 0;
}

void nb_s3_object_clear(struct nb_s3_object *o)
{
	if (!o)
		return;
	free(o->key);
	free(o->owner);
	free(o->content_type);
	free(o->content_encoding);
	free(o->content_disposition);
	free(o->cache_control);
	free(o->content_language);
	free(o->expires);
	json_decref(o->user_meta);
	free(o->checksum_value);
	memset(o, 0, sizeof(*o));
}

/* The latest version (version_id NULL) or a given one. data_id (may be
 * NULL) gets the version's data file id, "" when it has none; body (may be
 * NULL) a malloc'd copy of the bytes of an object kept in its row, NULL when
 * it is not one. Delete markers: the object is filled and
 * -NB_S3_E_NO_SUCH_KEY (latest) or -NB_S3_E_METHOD_NOT_ALLOWED (by id)
 * returned. Caller holds s3->lock. */
static int version_lookup(struct nb_s3 *s3, int64_t bucket_id, const char *key,
                          const char *version_id, struct nb_s3_object *o,
                          char data_id[S3_ID_HEX + 1], unsigned char **body)
{
	sqlite3_stmt *s;
	int r, rc;

	if (version_id && !s3_version_id_valid(version_id))
		return -NB_S3_E_INVALID_ARGUMENT;
	if (version_id)
		r = s3_prep_cached(s3, &s,
		            "SELECT " S3_VERSION_COLS " FROM versions v"
		            " WHERE bucket_id = ? AND key = ? AND version_id = ?",
		            "iks", bucket_id, key, version_id);
	else
		r = s3_prep_cached(s3, &s,
		            "SELECT " S3_VERSION_COLS " FROM versions v"
		            " WHERE bucket_id = ? AND key = ? AND is_latest = 1",
		            "ik", bucket_id, key);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		r = s3_object_from_row(s, o);
		if (data_id)
			nb_strlcpy(data_id,
			           sqlite3_column_type(s, 18) == SQLITE_NULL
			               ? ""
			               : (const char *)sqlite3_column_text(s, 18),
			           S3_ID_HEX + 1);
		if (r == 0 && o->delete_marker)
			r = version_id ? -NB_S3_E_METHOD_NOT_ALLOWED : -NB_S3_E_NO_SUCH_KEY;
		if (r == 0 && body && sqlite3_column_type(s, 18) == SQLITE_NULL) {
			const void *p = sqlite3_column_blob(s, 20);
			size_t n = (size_t)sqlite3_column_bytes(s, 20);
			if (sqlite3_column_type(s, 20) == SQLITE_NULL || n != o->size) {
				r = -NB_S3_E_INTERNAL; /* a row without its data */
			} else {
				*body = malloc(n ? n : 1);
				if (!*body)
					r = -ENOMEM;
				else if (n)
					memcpy(*body, p, n);
			}
		}
	} else if (rc == SQLITE_DONE) {
		r = version_id ? -NB_S3_E_NO_SUCH_VERSION : -NB_S3_E_NO_SUCH_KEY;
	} else {
		r = s3_sql_err(rc);
	}
	s3_done(s3, s);
	return r;
}

static int key_ok(const char *key)
{
	if (!key)
		return -NB_S3_E_INVALID_KEY;
	return nb_s3_key_check(key, strnlen(key, NB_S3_KEY_MAX + 1));
}

int nb_s3_object_head(struct nb_s3 *s3, const char *bucket, const char *key, const char *version_id,
                      const char *actor, struct nb_s3_object *out)
{
	struct s3_bucket_row b;
	int r;

	memset(out, 0, sizeof(*out));
	r = key_ok(key);
	if (r < 0)
		return r;
	pthread_mutex_lock(&s3->lock);
	r = s3_bucket_find(s3, bucket, actor, true, &b);
	if (r == 0)
		r = version_lookup(s3, b.id, key, version_id, out, NULL, NULL);
	pthread_mutex_unlock(&s3->lock);
	return r;
}

int nb_s3_object_open(struct nb_s3 *s3, const char *bucket, const char *key, const char *version_id,
                      const char *actor, const struct nb_s3_cond *cond,
                      const struct nb_s3_range *range, struct nb_s3_reader *out)
{
	struct s3_bucket_row b;
	char data_id[S3_ID_HEX + 1], path[S3_PATH_MAX];
	int r, code;

	memset(out, 0, sizeof(*out));
	out->fd = -1;
	r = key_ok(key);
	if (r < 0)
		return r;
	pthread_mutex_lock(&s3->lock);
	r = s3_bucket_find(s3, bucket, actor, true, &b);
	if (r == 0)
		r = version_lookup(s3, b.id, key, version_id, &out->obj, data_id, &out->data);
	if (r == 0 && !out->data) {
		/* Opened under the lock: a delete unlinks only after its row is
		 * gone, so the file found here is still there. */
		s3_data_path(s3, data_id, path, sizeof(path));
		out->fd = open(path, O_RDONLY | O_CLOEXEC);
		if (out->fd < 0)
			r = -errno;
	}
	pthread_mutex_unlock(&s3->lock);
	if (r < 0)
		return r;
	code = nb_s3_cond_eval(cond, true, out->obj.etag, out->obj.mtime_ms, true);
	if (code == 304)
		return -NB_S3_E_NOT_MODIFIED;
	if (code == 412)
		return -NB_S3_E_PRECONDITION_FAILED;
	return nb_s3_range_resolve(range, out->obj.size, &out->offset, &out->length, &out->partial);
}

void nb_s3_reader_close(struct nb_s3_reader *r)
{
	if (!r)
		return;
	if (r->fd >= 0)
		close(r->fd);
	free(r->data);
	nb_s3_object_clear(&r->obj);
	memset(r, 0, sizeof(*r));
	r->fd = -1;
}

int nb_s3_reader_fd(struct nb_s3_reader *r)
{
	int fd, e;

	if (r->fd >= 0 || !r->data)
		return r->fd >= 0 ? 0 : -EBADF;
	fd = memfd_create("nubo-s3-object", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	e = nb_write_all(fd, r->data, (size_t)r->obj.size);
	if (e < 0) {
		close(fd);
		return e;
	}
	r->fd = fd;
	return 0;
}

/* ---- committing a version ---- */

static int latest_for_cond(struct nb_s3 *s3, int64_t bucket_id, const char *key,
                           const struct nb_s3_cond *cond)
{
	sqlite3_stmt *s;
	bool exists = false;
	char etag[NB_S3_ETAG_SIZE] = "";
	int64_t mtime = 0;
	int r, rc;

	r = s3_prep(s3, &s,
	            "SELECT etag, mtime_ms FROM versions WHERE bucket_id = ? AND key = ?"
	            " AND is_latest = 1 AND delete_marker = 0",
	            "ik", bucket_id, key);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		exists = true;
		nb_strlcpy(etag, (const char *)sqlite3_column_text(s, 0), sizeof(etag));
		mtime = sqlite3_column_int64(s, 1);
	} else if (rc != SQLITE_DONE) {
		r = s3_sql_err(rc);
	}
	sqlite3_finalize(s);
	if (r < 0)
		return r;
	if (nb_s3_cond_eval(cond, exists, etag, mtime, false) != 200)
		return exists || cond->if_match ? -NB_S3_E_PRECONDITION_FAILED : 0;
	return 0;
}

/* Removes the row of one version, fixing is_latest and usage. Caller holds
 * a transaction. */
static int version_remove(struct nb_s3 *s3, const struct s3_bucket_row *b, const char *key,
                          int64_t rowid, bool was_latest, bool dm, int64_t size,
                          const char *data_id, char (**garbage)[S3_ID_HEX + 1], size_t *n_garbage)
{
	int r = s3_exec(s3, "DELETE FROM versions WHERE id = ?", "i", rowid);

	if (r == 0 && !dm)
		r = s3_usage_add(s3, b->b.owner, -size, -1, NULL);
	if (r == 0 && was_latest)
		r = s3_exec(s3,
		            "UPDATE versions SET is_latest = 1 WHERE id ="
		            " (SELECT id FROM versions WHERE bucket_id = ? AND key = ?"
		            "  ORDER BY id DESC LIMIT 1)",
		            "ik", b->id, key);
	if (r == 0 && data_id && *data_id)
		r = s3_garbage_add(garbage, n_garbage, data_id);
	return r;
}

struct vrow {
	int64_t rowid, size;
	bool found, dm, latest;
	char data_id[S3_ID_HEX + 1];
};

static int vrow_get(struct nb_s3 *s3, int64_t bucket_id, const char *key, const char *vid,
                    struct vrow *v)
{
	sqlite3_stmt *s;
	int r, rc;

	memset(v, 0, sizeof(*v));
	r = s3_prep_cached(s3, &s,
	                   "SELECT id, size, delete_marker, is_latest, data_id FROM versions"
	                   " WHERE bucket_id = ? AND key = ? AND version_id = ?",
	                   "iks", bucket_id, key, vid);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		v->found = true;
		v->rowid = sqlite3_column_int64(s, 0);
		v->size = sqlite3_column_int64(s, 1);
		v->dm = sqlite3_column_int(s, 2) != 0;
		v->latest = sqlite3_column_int(s, 3) != 0;
		if (sqlite3_column_type(s, 4) != SQLITE_NULL)
			nb_strlcpy(v->data_id, (const char *)sqlite3_column_text(s, 4),
			           sizeof(v->data_id));
	} else if (rc != SQLITE_DONE) {
		r = s3_sql_err(rc);
	}
	s3_done(s3, s);
	return r;
}

static int insert_version(struct nb_s3 *s3, const struct s3_newver *nv, int64_t bucket_id,
                          const char *vid, const char *owner, bool dm, int64_t now)
{
	/* an object without a data file has its bytes in the row */
	const void *body = dm || nv->data_id ? NULL : nv->body ? nv->body : "";
	int r = s3_exec_cached(s3,
	                "UPDATE versions SET is_latest = 0"
	                " WHERE bucket_id = ? AND key = ? AND is_latest = 1",
	                "ik", bucket_id, nv->key);

	if (r < 0)
		return r;
	return s3_exec_cached(s3,
	               "INSERT INTO versions (bucket_id, key, version_id, is_latest, delete_marker,"
	               " data_id, size, etag, mtime_ms, owner, content_type, content_encoding,"
	               " content_disposition, cache_control, content_language, expires, user_meta,"
	               " checksum_algo, checksum_value, parts, body)"
	               " VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
	               "iksisisissssssssssiB", bucket_id, nv->key, vid, (int64_t)dm, nv->data_id,
	               (int64_t)nv->size, nv->etag ? nv->etag : "", now, owner, nv->content_type,
	               nv->content_encoding, nv->content_disposition, nv->cache_control,
	               nv->content_language, nv->expires, nv->user_meta ? nv->user_meta : "{}",
	               nv->checksum_algo, nv->checksum_value, (int64_t)nv->parts,
	               body, body ? (size_t)nv->size : (size_t)0);
}

/* Takes the parts of upload nv->upload_rowid: checks the listed ones are
 * unchanged, queues every part's file, deletes the rows. Returns their
 * total size in *bytes. */
static int take_upload_parts(struct nb_s3 *s3, const struct s3_newver *nv, int64_t *bytes,
                             char (**garbage)[S3_ID_HEX + 1], size_t *n_garbage)
{
	sqlite3_stmt *s;
	int r, rc;

	*bytes = 0;
	r = s3_prep(s3, &s, "SELECT 1 FROM uploads WHERE id = ?", "i", nv->upload_rowid);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? -NB_S3_E_NO_SUCH_UPLOAD : s3_sql_err(rc);
	for (size_t i = 0; i < nv->n_parts; i++) {
		r = s3_prep(s3, &s, "SELECT 1 FROM parts WHERE upload = ? AND data_id = ?", "is",
		            nv->upload_rowid, nv->part_ids[i]);
		if (r < 0)
			return r;
		rc = sqlite3_step(s);
		sqlite3_finalize(s);
		if (rc != SQLITE_ROW) /* replaced while we joined them */
			return rc == SQLITE_DONE ? -NB_S3_E_INVALID_PART : s3_sql_err(rc);
	}
	r = s3_prep(s3, &s, "SELECT data_id, size FROM parts WHERE upload = ?", "i",
	            nv->upload_rowid);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW && r == 0) {
		*bytes += sqlite3_column_int64(s, 1);
		r = s3_garbage_add(garbage, n_garbage, (const char *)sqlite3_column_text(s, 0));
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = s3_sql_err(rc);
	sqlite3_finalize(s);
	if (r == 0)
		r = s3_exec(s3, "DELETE FROM parts WHERE upload = ?", "i", nv->upload_rowid);
	if (r == 0)
		r = s3_exec(s3, "DELETE FROM uploads WHERE id = ?", "i", nv->upload_rowid);
	return r;
}

struct commit_ctx {
	const struct s3_newver *nv;
	struct nb_s3_put_result *res;
	char (**garbage)[S3_ID_HEX + 1];
	size_t *n_garbage;
};

/* s3_group_commit's fn for a version: in the batch's transaction. */
static int commit_version_locked(struct nb_s3 *s3, void *arg)
{
	struct commit_ctx *c = arg;
	const struct s3_newver *nv = c->nv;
	char (**garbage)[S3_ID_HEX + 1] = c->garbage;
	size_t *n_garbage = c->n_garbage;
	struct s3_bucket_row b;
	struct vrow old;
	char vid[NB_S3_VERSION_ID_SIZE] = "null";
	int64_t now = nb_wall_ms(), parts_bytes = 0, dbytes, dobjects = 1;
	int r;

	r = s3_bucket_by_id(s3, nv->bucket_id, &b);
	if (r < 0)
		goto fail;
	if (nv->cond) {
		r = latest_for_cond(s3, b.id, nv->key, nv->cond);
		if (r < 0)
			goto fail;
	}
	if (nv->upload_rowid) {
		r = take_upload_parts(s3, nv, &parts_bytes, garbage, n_garbage);
		if (r < 0)
			goto fail;
	}
	dbytes = (int64_t)nv->size - parts_bytes;
	if (b.b.versioning == NB_S3_VERSIONING_ENABLED) {
		r = nb_random_hex(vid, S3_ID_HEX);
		if (r < 0)
			goto fail;
		memset(&old, 0, sizeof(old));
	} else {
		/* Unset or Suspended: the new object is the null version and
		 * replaces the one there was. */
		r = vrow_get(s3, b.id, nv->key, "null", &old);
		if (r < 0)
			goto fail;
		if (old.found && !old.dm) {
			dbytes -= old.size;
			dobjects = 0;
		}
	}
	r = s3_usage_add(s3, b.b.owner, dbytes, dobjects, nv->quota);
	if (r < 0)
		goto fail;
	if (old.found) {
		r = s3_exec_cached(s3, "DELETE FROM versions WHERE id = ?", "i", old.rowid);
		if (r == 0 && *old.data_id)
			r = s3_garbage_add(garbage, n_garbage, old.data_id);
		if (r < 0)
			goto fail;
	}
	r = insert_version(s3, nv, b.id, vid, nv->owner ? nv->owner : b.b.owner, false, now);
	if (r < 0)
		goto fail;
	if (c->res) {
		snprintf(c->res->etag, sizeof(c->res->etag), "\"%s\"", nv->etag);
		nb_strlcpy(c->res->version_id, vid, sizeof(c->res->version_id));
		c->res->size = nv->size;
		c->res->mtime_ms = now;
	}
	return 0;
fail:
	return r;
}

int s3_commit_version(struct nb_s3 *s3, const struct s3_newver *nv, struct nb_s3_put_result *res,
                      char (**garbage)[S3_ID_HEX + 1], size_t *n_garbage)
{
	struct commit_ctx c = {.nv = nv, .res = res, .garbage = garbage, .n_garbage = n_garbage};
	size_t garbage_mark = *n_garbage;
	int r = s3_group_commit(s3, commit_version_locked, &c, nv->dir);

	if (r < 0) {
		/* rolled back: the files it would have replaced stay */
		*n_garbage = garbage_mark;
		if (res)
			memset(res, 0, sizeof(*res));
	}
	return r;
}

/* ---- the streaming handle ---- */

void s3_put_free(struct nb_s3_put *p)
{
	char path[S3_PATH_MAX];

	if (!p)
		return;
	if (p->fd >= 0)
		close(p->fd);
	free(p->mem);
	if (p->state == PUT_TMP) {
		s3_tmp_path(p->s3, p->live.id, path, sizeof(path));
		unlink(path);
	} else if (p->state == PUT_DATA) {
		s3_data_path(p->s3, p->live.id, path, sizeof(path));
		unlink(path);
	}
	s3_live_drop(p->s3, &p->live);
	EVP_MD_CTX_free(p->md5);
	EVP_MD_CTX_free(p->sha1);
	EVP_MD_CTX_free(p->sha256);
	free(p->key);
	free(p->owner);
	for (int i = 0; i < 6; i++)
		free(p->hdr[i]);
	free(p->user_meta);
	free((char *)p->cond.if_match);
	free((char *)p->cond.if_none_match);
	free(p);
}

static EVP_MD_CTX *md_new(const EVP_MD *md)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();

	if (c && !EVP_DigestInit_ex(c, md, NULL)) {
		EVP_MD_CTX_free(c);
		c = NULL;
	}
	return c;
}

int s3_put_new(struct nb_s3 *s3, int64_t declared, unsigned checksums, bool in_row,
               struct nb_s3_put **out)
{
	struct nb_s3_put *p = calloc(1, sizeof(*p));
	char path[S3_PATH_MAX];
	int r;

	if (!p)
		return -ENOMEM;
	p->s3 = s3;
	p->fd = -1;
	p->state = PUT_DONE;
	p->declared = declared;
	p->max = NB_S3_PUT_MAX;
	p->checksums = checksums;
	p->md5 = md_new(EVP_md5());
	if (checksums & NB_S3_CK_SHA1)
		p->sha1 = md_new(EVP_sha1());
	if (checksums & NB_S3_CK_SHA256)
		p->sha256 = md_new(EVP_sha256());
	if (!p->md5 || ((checksums & NB_S3_CK_SHA1) && !p->sha1) ||
	    ((checksums & NB_S3_CK_SHA256) && !p->sha256)) {
		r = -ENOMEM;
		goto fail;
	}
	if (in_row && declared >= 0 && declared <= (int64_t)NB_S3_INLINE_MAX) {
		/* small: the bytes go with the row (no file, no fsync of its own) */
		p->mem = malloc(declared ? (size_t)declared : 1);
		if (!p->mem) {
			r = -ENOMEM;
			goto fail;
		}
		p->state = PUT_MEM;
		*out = p;
		return 0;
	}
	r = s3_live_new(s3, &p->live);
	if (r < 0)
		goto fail;
	s3_tmp_path(s3, p->live.id, path, sizeof(path));
	p->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (p->fd < 0) {
		r = -errno;
		goto fail;
	}
	p->state = PUT_TMP;
	*out = p;
	return 0;
fail:
	s3_put_free(p);
	return r;
}

static char *dup_or_null(const char *s)
{
	return s && *s ? strdup(s) : NULL;
}

static int put_copy_meta(struct nb_s3_put *p, const struct nb_s3_meta *m)
{
	const char *h[6] = {m->content_type,  m->content_encoding, m->content_disposition,
	                    m->cache_control, m->content_language, m->expires};

	for (int i = 0; i < 6; i++) {
		p->hdr[i] = dup_or_null(h[i]);
		if (h[i] && *h[i] && !p->hdr[i])
			return -ENOMEM;
	}
	p->user_meta = m->user ? json_dumps(m->user, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}");
	return p->user_meta ? 0 : -ENOMEM;
}

int nb_s3_put_begin(struct nb_s3 *s3, const struct nb_s3_put_opts *o, struct nb_s3_put **out)
{
	struct s3_bucket_row b;
	struct nb_s3_put *p = NULL;
	int r;

	*out = NULL;
	r = key_ok(o->key);
	if (r == 0)
		r = s3_meta_check(&o->meta);
	if (r < 0)
		return r;
	if (o->content_length > (int64_t)NB_S3_PUT_MAX)
		return -NB_S3_E_ENTITY_TOO_LARGE;
	if (o->actor && (!*o->actor || strlen(o->actor) > NB_S3_OWNER_MAX))
		return -NB_S3_E_INVALID_ARGUMENT;
	pthread_mutex_lock(&s3->lock);
	r = s3_bucket_find(s3, o->bucket, o->actor, false, &b);
	pthread_mutex_unlock(&s3->lock);
	if (r < 0)
		return r;
	if (o->quota.max_bytes && o->content_length > 0 &&
	    (uint64_t)o->content_length > o->quota.max_bytes)
		return -NB_S3_E_QUOTA_EXCEEDED;
	r = s3_put_new(s3, o->content_length, o->checksums, true, &p);
	if (r < 0)
		return r;
	p->bucket_id = b.id;
	p->key = strdup(o->key);
	p->owner = strdup(o->actor ? o->actor : b.b.owner);
	p->quota = o->quota;
	if (!p->key || !p->owner) {
		r = -ENOMEM;
		goto fail;
	}
	r = put_copy_meta(p, &o->meta);
	if (r < 0)
		goto fail;
	if (o->cond) {
		p->has_cond = true;
		p->cond = *o->cond;
		p->cond.if_match = o->cond->if_match ? strdup(o->cond->if_match) : NULL;
		p->cond.if_none_match =
		    o->cond->if_none_match ? strdup(o->cond->if_none_match) : NULL;
		if ((o->cond->if_match && !p->cond.if_match) ||
		    (o->cond->if_none_match && !p->cond.if_none_match)) {
			r = -ENOMEM;
			goto fail;
		}
	}
	*out = p;
	return 0;
fail:
	s3_put_free(p);
	return r;
}

int nb_s3_put_write(struct nb_s3_put *p, const void *data, size_t len)
{
	int r;

	if (p->state != PUT_TMP && p->state != PUT_MEM)
		return -EINVAL;
	if (len > p->max - p->written)
		return -NB_S3_E_ENTITY_TOO_LARGE;
	if (p->declared >= 0 && p->written + len > (uint64_t)p->declared)
		return -NB_S3_E_INCOMPLETE_BODY;
	if (p->quota.max_bytes && p->written + len > p->quota.max_bytes)
		return -NB_S3_E_QUOTA_EXCEEDED;
	if (!len)
		return 0;
	EVP_DigestUpdate(p->md5, data, len);
	if (p->sha1)
		EVP_DigestUpdate(p->sha1, data, len);
	if (p->sha256)
		EVP_DigestUpdate(p->sha256, data, len);
	if (p->checksums & NB_S3_CK_CRC32)
		p->crc32 = s3_crc32_update(p->crc32, data, len);
	if (p->checksums & NB_S3_CK_CRC32C)
		p->crc32c = s3_crc32c_update(p->crc32c, data, len);
	if (p->state == PUT_MEM) {
		/* within declared (checked above), which mem holds */
		memcpy(p->mem + p->written, data, len);
		p->written += len;
		return 0;
	}
	r = nb_write_all(p->fd, data, len);
	if (r < 0)
		return r;
	p->written += len;
	if (p->written - p->synced >= SYNC_EVERY) {
		/* Start writeback now so the final fsync has little left. */
		sync_file_range(p->fd, (off_t)p->synced, (off_t)(p->written - p->synced),
		                SYNC_FILE_RANGE_WRITE);
		p->synced = p->written;
	}
	return 0;
}

int s3_put_from_fd(struct nb_s3_put *p, int fd, uint64_t off, uint64_t len)
{
	char *buf = malloc(COPY_BUF);
	int r = 0;

	if (!buf)
		return -ENOMEM;
	while (len > 0) {
		size_t want = len > COPY_BUF ? COPY_BUF : (size_t)len;
		ssize_t n = pread(fd, buf, want, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO; /* the file is shorter than its row says */
			break;
		}
		r = nb_s3_put_write(p, buf, (size_t)n);
		if (r < 0)
			break;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	free(buf);
	return r;
}

static int md_final(EVP_MD_CTX *c, unsigned char *out, unsigned *n)
{
	return EVP_DigestFinal_ex(c, out, n) ? 0 : -NB_S3_E_INTERNAL;
}

struct put_digests {
	char md5_hex[33];
	char ck_algo[8];
	char ck_value[64];
};

/* Checks one base64 x-amz-checksum-* value against raw. */
static int ck_compare(const char *given, const unsigned char *raw, size_t n)
{
	unsigned char dec[64];
	size_t dn;

	if (s3_b64_decode(given, dec, sizeof(dec), &dn) < 0 || dn != n)
		return -NB_S3_E_INVALID_CHECKSUM;
	return memcmp(dec, raw, n) == 0 ? 0 : -NB_S3_E_CHECKSUM_MISMATCH;
}

static void be32(uint32_t v, unsigned char out[4])
{
	out[0] = (unsigned char)(v >> 24);
	out[1] = (unsigned char)(v >> 16);
	out[2] = (unsigned char)(v >> 8);
	out[3] = (unsigned char)v;
}

/* Finishes the digests and verifies what the client declared. */
static int put_verify(struct nb_s3_put *p, const struct nb_s3_expect *ex, struct put_digests *d)
{
	unsigned char md5[16], sha1[20], sha256[32], c32[4], c32c[4];
	unsigned n;
	int r;

	memset(d, 0, sizeof(*d));
	if (p->declared >= 0 && p->written != (uint64_t)p->declared)
		return -NB_S3_E_INCOMPLETE_BODY;
	r = md_final(p->md5, md5, &n);
	if (r == 0 && p->sha1)
		r = md_final(p->sha1, sha1, &n);
	if (r == 0 && p->sha256)
		r = md_final(p->sha256, sha256, &n);
	if (r < 0)
		return r;
	be32(p->crc32, c32);
	be32(p->crc32c, c32c);
	s3_hex(md5, sizeof(md5), d->md5_hex);
	if (ex) {
		if ((ex->crc32 && !(p->checksums & NB_S3_CK_CRC32)) ||
		    (ex->crc32c && !(p->checksums & NB_S3_CK_CRC32C)) || (ex->sha1 && !p->sha1) ||
		    ((ex->sha256 || ex->content_sha256) && !p->sha256))
			return -NB_S3_E_INVALID_ARGUMENT;
		if (ex->content_md5) {
			unsigned char dec[20];
			size_t dn;
			if (s3_b64_decode(ex->content_md5, dec, sizeof(dec), &dn) < 0 || dn != 16)
				return -NB_S3_E_INVALID_DIGEST;
			if (memcmp(dec, md5, 16) != 0)
				return -NB_S3_E_BAD_DIGEST;
		}
		if (ex->content_sha256) {
			char hex[65];
			s3_hex(sha256, sizeof(sha256), hex);
			if (strlen(ex->content_sha256) != 64)
				return -NB_S3_E_INVALID_ARGUMENT;
			if (strcasecmp(ex->content_sha256, hex) != 0)
				return -NB_S3_E_SHA256_MISMATCH;
		}
		if (ex->crc32 && (r = ck_compare(ex->crc32, c32, 4)) < 0)
			return r;
		if (ex->crc32c && (r = ck_compare(ex->crc32c, c32c, 4)) < 0)
			return r;
		if (ex->sha1 && (r = ck_compare(ex->sha1, sha1, 20)) < 0)
			return r;
		if (ex->sha256 && (r = ck_compare(ex->sha256, sha256, 32)) < 0)
			return r;
	}
	/* The checksum kept with the object: the one the client sent, else
	 * the one it asked to be computed (SHA-256 only when sent, since it
	 * may have been asked for x-amz-content-sha256 alone). */
	if ((ex && ex->crc32) || (p->checksums & NB_S3_CK_CRC32)) {
		nb_strlcpy(d->ck_algo, "CRC32", sizeof(d->ck_algo));
		s3_b64_encode(c32, 4, d->ck_value);
	} else if ((ex && ex->crc32c) || (p->checksums & NB_S3_CK_CRC32C)) {
		nb_strlcpy(d->ck_algo, "CRC32C", sizeof(d->ck_algo));
		s3_b64_encode(c32c, 4, d->ck_value);
	} else if ((ex && ex->sha1) || (p->checksums & NB_S3_CK_SHA1)) {
		nb_strlcpy(d->ck_algo, "SHA1", sizeof(d->ck_algo));
		s3_b64_encode(sha1, 20, d->ck_value);
	} else if (ex && ex->sha256) {
		nb_strlcpy(d->ck_algo, "SHA256", sizeof(d->ck_algo));
		s3_b64_encode(sha256, 32, d->ck_value);
	}
	return 0;
}

/* fsync, rename into data/, fsync the directory. */
int s3_put_make_durable(struct nb_s3_put *p)
{
	char dir[S3_PATH_MAX];
	int r = s3_put_place(p, dir);

	return r < 0 ? r : s3_fsync_dir(dir);
}

int s3_put_place(struct nb_s3_put *p, char *dir)
{
	char tmp[S3_PATH_MAX], dst[S3_PATH_MAX];
	int r = 0;

	if (fsync(p->fd) < 0)
		r = -errno;
	close(p->fd);
	p->fd = -1;
	if (r < 0)
		return r;
	s3_tmp_path(p->s3, p->live.id, tmp, sizeof(tmp));
	s3_data_path(p->s3, p->live.id, dst, sizeof(dst));
	s3_data_dir(p->s3, p->live.id, dir, S3_PATH_MAX);
	if (rename(tmp, dst) < 0)
		return -errno;
	p->state = PUT_DATA;
	return 0;
}

struct part_ctx {
	struct nb_s3_put *p;
	const struct put_digests *d;
	char (**garbage)[S3_ID_HEX + 1];
	size_t *n_garbage;
};

static int part_commit_fn(struct nb_s3 *s3, void *arg)
{
	struct part_ctx *c = arg;

	return s3_part_commit_locked(s3, &c->p->part, c->p->live.id, c->p->written,
	                             c->d->md5_hex, c->d->ck_algo[0] ? c->d->ck_algo : NULL,
	                             c->d->ck_value[0] ? c->d->ck_value : NULL, &c->p->quota,
	                             c->garbage, c->n_garbage);
}

int nb_s3_put_commit(struct nb_s3_put *p, const struct nb_s3_expect *ex,
                     struct nb_s3_put_result *res)
{
	char dir[S3_PATH_MAX];
	const char *sync_dir = NULL; /* the data file's directory, or none */
	struct put_digests d;
	char(*garbage)[S3_ID_HEX + 1] = NULL;
	size_t n_garbage = 0;
	int r;

	if (res)
		memset(res, 0, sizeof(*res));
	if (p->state != PUT_TMP && p->state != PUT_MEM) {
		r = -EINVAL;
		goto out;
	}
	r = put_verify(p, ex, &d);
	if (r < 0)
		goto out;
	if (p->state != PUT_MEM) { /* in memory: nothing on disk but the row */
		r = s3_put_place(p, dir);
		sync_dir = dir;
	}
	if (r < 0)
		goto out;
	if (p->is_part) {
		struct part_ctx c = {.p = p, .d = &d, .garbage = &garbage, .n_garbage = &n_garbage};
		r = s3_group_commit(p->s3, part_commit_fn, &c, sync_dir);
		if (r < 0) {
			n_garbage = 0;
			goto out;
		}
		if (res) {
			snprintf(res->etag, sizeof(res->etag), "\"%s\"", d.md5_hex);
			res->size = p->written;
			res->mtime_ms = nb_wall_ms();
		}
	} else {
		struct s3_newver nv = {
		    .bucket_id = p->bucket_id,
		    .key = p->key,
		    .owner = p->owner,
		    .data_id = p->state == PUT_MEM ? NULL : p->live.id,
		    .body = p->mem,
		    .size = p->written,
		    .etag = d.md5_hex,
		    .content_type = p->hdr[0],
		    .content_encoding = p->hdr[1],
		    .content_disposition = p->hdr[2],
		    .cache_control = p->hdr[3],
		    .content_language = p->hdr[4],
		    .expires = p->hdr[5],
		    .user_meta = p->user_meta,
		    .checksum_algo = d.ck_algo[0] ? d.ck_algo : NULL,
		    .checksum_value = d.ck_value[0] ? d.ck_value : NULL,
		    .quota = &p->quota,
		    .cond = p->has_cond ? &p->cond : NULL,
		    .dir = sync_dir,
		};
		r = s3_commit_version(p->s3, &nv, res, &garbage, &n_garbage);
		if (r < 0)
			goto out;
	}
	p->state = PUT_DONE; /* the row owns the file now */
	s3_unlink_data(p->s3, garbage, n_garbage);
out:
	free(garbage);
	s3_put_free(p);
	return r;
}

int nb_s3_put_sha256_hex(struct nb_s3_put *p, char hex[65])
{
	unsigned char md[32];
	unsigned n = 0;
	EVP_MD_CTX *c;
	int r;

	if (!p || !p->sha256 || (p->state != PUT_TMP && p->state != PUT_MEM))
		return -EINVAL;
	c = EVP_MD_CTX_new();
	if (!c)
		return -ENOMEM;
	r = EVP_MD_CTX_copy_ex(c, p->sha256) == 1 ? md_final(c, md, &n) : -NB_S3_E_INTERNAL;
	EVP_MD_CTX_free(c);
	if (r == 0 && n != sizeof(md))
		r = -NB_S3_E_INTERNAL;
	if (r == 0)
		s3_hex(md, sizeof(md), hex);
	return r;
}

void nb_s3_put_abort(struct nb_s3_put *p)
{
	s3_put_free(p);
}

/* ---- delete ---- */

static int insert_marker(struct nb_s3 *s3, const struct s3_bucket_row *b, const char *key,
                         const char *vid, const char *owner)
{
	struct s3_newver nv = {.key = key, .etag = ""};

	return insert_version(s3, &nv, b->id, vid, owner, true, nb_wall_ms());
}

int nb_s3_object_delete(struct nb_s3 *s3, const char *bucket, const char *key,
                        const char *version_id, const char *actor, struct nb_s3_delete_result *res)
{
	struct nb_s3_delete_result out = {0};
	struct s3_bucket_row b;
	struct vrow v;
	char(*garbage)[S3_ID_HEX + 1] = NULL;
	size_t n_garbage = 0;
	int r;

	if (res)
		memset(res, 0, sizeof(*res));
	r = key_ok(key);
	if (r < 0)
		return r;
	if (version_id && !s3_version_id_valid(version_id))
		return -NB_S3_E_INVALID_ARGUMENT;
	r = s3_tx_begin(s3);
	if (r < 0)
		return r;
	r = s3_bucket_find(s3, bucket, actor, false, &b);
	if (r < 0)
		goto fail;
	if (version_id || b.b.versioning == NB_S3_VERSIONING_UNSET) {
		/* One version for good (unset: the null version, the only one). */
		r = vrow_get(s3, b.id, key, version_id ? version_id : "null", &v);
		if (r == 0 && v.found)
			r = version_remove(s3, &b, key, v.rowid, v.latest, v.dm, v.size, v.data_id,
			                   &garbage, &n_garbage);
		if (r < 0)
			goto fail;
		if (version_id) {
			out.delete_marker = v.found && v.dm;
			nb_strlcpy(out.version_id, version_id, sizeof(out.version_id));
		}
	} else {
		const char *owner = actor ? actor : b.b.owner;
		char vid[NB_S3_VERSION_ID_SIZE] = "null";
		if (b.b.versioning == NB_S3_VERSIONING_ENABLED) {
			r = nb_random_hex(vid, S3_ID_HEX);
		} else {
			/* Suspended: the null version gives way to a null marker. */
			r = vrow_get(s3, b.id, key, "null", &v);
			if (r == 0 && v.found)
				r = version_remove(s3, &b, key, v.rowid, false, v.dm, v.size,
				                   v.data_id, &garbage, &n_garbage);
		}
		if (r == 0)
			r = insert_marker(s3, &b, key, vid, owner);
		if (r < 0)
			goto fail;
		out.delete_marker = true;
		nb_strlcpy(out.version_id, vid, sizeof(out.version_id));
	}
	r = s3_tx_commit(s3);
	if (r < 0)
		goto out;
	s3_unlink_data(s3, garbage, n_garbage);
	if (res)
		*res = out;
	goto out;
fail:
	s3_tx_rollback(s3);
out:
	free(garbage);
	return r;
}

/* ---- copy ---- */

static void etag_unquote(const char *in, char *out, size_t n)
{
	size_t l;

	if (*in == '"')
		in++;
	nb_strlcpy(out, in, n);
	l = strlen(out);
	if (l && out[l - 1] == '"')
		out[l - 1] = '\0';
}

int nb_s3_object_copy(struct nb_s3 *s3, const struct nb_s3_copy_opts *o,
                      struct nb_s3_put_result *res, char src_version_id[NB_S3_VERSION_ID_SIZE])
{
	struct s3_bucket_row db, sb;
	struct nb_s3_object src = {0};
	struct s3_live live = {0};
	struct nb_s3_put *p = NULL;
	char src_data[S3_ID_HEX + 1], src_path[S3_PATH_MAX], dst_path[S3_PATH_MAX],
	    dir[S3_PATH_MAX], etag[NB_S3_ETAG_SIZE];
	char(*garbage)[S3_ID_HEX + 1] = NULL;
	size_t n_garbage = 0;
	char *user_meta = NULL;
	unsigned char *src_body = NULL; /* a source kept in its row: so is the copy */
	bool linked = false, locked = false;
	int src_fd = -1, r;

	if (res)
		memset(res, 0, sizeof(*res));
	if (src_version_id)
		src_version_id[0] = '\0';
	r = key_ok(o->key);
	if (r == 0)
		r = key_ok(o->src_key);
	if (r == 0 && o->replace_meta)
		r = s3_meta_check(&o->meta);
	if (r < 0)
		return r;
	pthread_mutex_lock(&s3->lock);
	locked = true;
	r = s3_bucket_find(s3, o->bucket, o->actor, false, &db);
	if (r == 0)
		r = s3_bucket_find(s3, o->src_bucket, o->actor, true, &sb);
	if (r == 0)
		r = version_lookup(s3, sb.id, o->src_key, o->src_version_id, &src, src_data,
		                   &src_body);
	if (r == -NB_S3_E_METHOD_NOT_ALLOWED)
		r = -NB_S3_E_INVALID_REQUEST; /* a delete marker cannot be copied */
	if (r < 0)
		goto out;
	if (src_version_id)
		nb_strlcpy(src_version_id, src.version_id, NB_S3_VERSION_ID_SIZE);
	if (o->src_cond &&
	    nb_s3_cond_eval(o->src_cond, true, src.etag, src.mtime_ms, false) != 200) {
		r = -NB_S3_E_PRECONDITION_FAILED;
		goto out;
	}
	if (db.id == sb.id && strcmp(o->key, o->src_key) == 0 && !o->replace_meta &&
	    !o->src_version_id) {
		r = -NB_S3_E_INVALID_REQUEST;
		goto out;
	}
	dir[0] = '\0';
	if (!src_body) {
		r = s3_live_new(s3, &live);
		if (r < 0)
			goto out;
		s3_data_path(s3, src_data, src_path, sizeof(src_path));
		s3_data_path(s3, live.id, dst_path, sizeof(dst_path));
		s3_data_dir(s3, live.id, dir, sizeof(dir));
		/* Under the lock, so the source row (and its file) stays while
		 * we link or open it. Objects are immutable: a second name is a
		 * copy. */
		if (link(src_path, dst_path) == 0) {
			linked = true;
		} else {
			src_fd = open(src_path, O_RDONLY | O_CLOEXEC);
			if (src_fd < 0)
				r = -errno;
		}
	}
	pthread_mutex_unlock(&s3->lock);
	locked = false;
	if (r < 0)
		goto out;
	if (!linked && !src_body) { /* a link's directory is fsynced in the commit's batch */
		r = s3_put_new(s3, (int64_t)src.size, 0, false, &p);
		if (r == 0) {
			p->max = NB_S3_OBJECT_MAX;
			r = s3_put_from_fd(p, src_fd, 0, src.size);
		}
		if (r == 0)
			r = s3_put_place(p, dir);
	}
	if (r < 0)
		goto out;
	{
		const struct nb_s3_meta *m = &o->meta;
		etag_unquote(src.etag, etag, sizeof(etag));
		const json_t *um = o->replace_meta ? m->user : src.user_meta;
		user_meta = um ? json_dumps(um, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}");
		if (!user_meta) {
			r = -ENOMEM;
			goto out;
		}
		struct s3_newver nv = {
		    .bucket_id = db.id,
		    .key = o->key,
		    .owner = o->actor,
		    .data_id = src_body ? NULL : linked ? live.id : p->live.id,
		    .body = src_body,
		    .size = src.size,
		    .etag = etag,
		    .parts = src.parts,
		    .content_type = o->replace_meta ? m->content_type : src.content_type,
		    .content_encoding =
		        o->replace_meta ? m->content_encoding : src.content_encoding,
		    .content_disposition =
		        o->replace_meta ? m->content_disposition : src.content_disposition,
		    .cache_control = o->replace_meta ? m->cache_control : src.cache_control,
		    .content_language =
		        o->replace_meta ? m->content_language : src.content_language,
		    .expires = o->replace_meta ? m->expires : src.expires,
		    .user_meta = user_meta,
		    .checksum_algo = src.checksum_algo[0] ? src.checksum_algo : NULL,
		    .checksum_value = src.checksum_value,
		    .quota = &o->quota,
		    .dir = dir[0] ? dir : NULL,
		};
		r = s3_commit_version(s3, &nv, res, &garbage, &n_garbage);
	}
	if (r == 0) {
		linked = false; /* the row owns the new name */
		if (p)
			p->state = PUT_DONE;
		s3_unlink_data(s3, garbage, n_garbage);
	}
out:
	if (locked)
		pthread_mutex_unlock(&s3->lock);
	if (linked)
		unlink(dst_path);
	s3_live_drop(s3, &live);
	s3_put_free(p);
	if (src_fd >= 0)
		close(src_fd);
	free(src_body);
	free(user_meta);
	free(garbage);
	nb_s3_object_clear(&src);
	return r;
}
