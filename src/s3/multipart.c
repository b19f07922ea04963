/* Multipart uploads: create, parts (streamed or copied), list, complete,
 * abort, expiry. Parts are data files like objects; complete joins the
 * listed ones into one new data file (copy_file_range) and commits it as a
 * version in the same transaction that drops the upload. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "s3/engine_internal.h"

#define JOIN_BUF (1u << 20)

struct upload_row {
	int64_t rowid;
	char *hdr[6];
	char *user_meta;
	char *owner;
	int64_t initiated_ms;
};

static void upload_row_free(struct upload_row *u)
{
	for (int i = 0; i < 6; i++)
		free(u->hdr[i]);
	free(u->user_meta);
	free(u->owner);
	memset(u, 0, sizeof(*u));
}

/* Caller holds s3->lock. */
static int upload_find(struct nb_s3 *s3, int64_t bucket_id, const char *key, const char *upload_id,
                       struct upload_row *u)
{
	sqlite3_stmt *s;
	int r, rc;

	memset(u, 0, sizeof(*u));
	if (!s3_is_hex_id(upload_id))
		return -NB_S3_E_NO_SUCH_UPLOAD;
	r = s3_prep(s3, &s,
	            "SELECT id, owner, initiated_ms, content_type, content_encoding,"
	            " content_disposition, cache_control, content_language, expires, user_meta"
	            " FROM uploads WHERE upload_id = ? AND bucket_id = ? AND key = ?",
	            "sik", upload_id, bucket_id, key);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		u->rowid = sqlite3_column_int64(s, 0);
		u->owner = s3_col_strdup(s, 1);
		u->initiated_ms = sqlite3_column_int64(s, 2);
		for (int i = 0; i < 6; i++)
			u->hdr[i] = s3_col_strdup(s, 3 + i);
		u->user_meta = s3_col_strdup(s, 9);
		if (!u->owner || !u->user_meta)
			r = -ENOMEM;
	} else {
		r = rc == SQLITE_DONE ? -NB_S3_E_NO_SUCH_UPLOAD : s3_sql_err(rc);
	}
	sqlite3_finalize(s);
	if (r < 0)
		upload_row_free(u);
	return r;
}

static int key_ok(const char *key)
{
	if (!key)
		return -NB_S3_E_INVALID_KEY;
	return nb_s3_key_check(key, strnlen(key, NB_S3_KEY_MAX + 1));
}

int nb_s3_mpu_create(struct nb_s3 *s3, const struct nb_s3_put_opts *o,
                     char upload_id[NB_S3_UPLOAD_ID_SIZE])
{
	struct s3_bucket_row b;
	char *user_meta = NULL;
	int r;

	upload_id[0] = '\0';
	r = key_ok(o->key);
	if (r == 0)
		r = s3_meta_check(&o->meta);
	if (r < 0)
		return r;
	if (o->actor && (!*o->actor || strlen(o->actor) > NB_S3_OWNER_MAX))
		return -NB_S3_E_INVALID_ARGUMENT;
	user_meta =
	    o->meta.user ? json_dumps(o->meta.user, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}");
	if (!user_meta)
		return -ENOMEM;
	r = nb_random_hex(upload_id, S3_ID_HEX);
	if (r < 0)
		goto out;
	r = s3_tx_begin(s3);
	if (r < 0)
		goto out;
	r = s3_bucket_find(s3, o->bucket, o->actor, false, &b);
	if (r == 0)
		r = s3_exec(s3,
		            "INSERT INTO uploads (upload_id, bucket_id, key, owner, initiated_ms,"
		            " content_type, content_encoding, content_disposition, cache_control,"
		            " content_language, expires, user_meta)"
		            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		            "siksisssssss", upload_id, b.id, o->key,
		            o->actor ? o->actor : b.b.owner, nb_wall_ms(), o->meta.content_type,
		            o->meta.content_encoding, o->meta.content_disposition,
		            o->meta.cache_control, o->meta.content_language, o->meta.expires,
		            user_meta);
	if (r < 0) {
		s3_tx_rollback(s3);
		goto out;
	}
	r = s3_tx_commit(s3);
out:
	if (r < 0)
		upload_id[0] = '\0';
	free(user_meta);
	return r;
}

int s3_part_commit_locked(struct nb_s3 *s3, const struct s3_part_target *t, const char *data_id,
                          uint64_t size, const char *etag, const char *ck_algo,
                          const char *ck_value, const struct nb_s3_quota *q,
                          char (**garbage)[S3_ID_HEX + 1], size_t *n_garbage)
{
	sqlite3_stmt *s;
	char owner[NB_S3_OWNER_MAX + 1], old_id[S3_ID_HEX + 1] = "";
	int64_t old_size = 0;
	int r, rc;

	r = s3_prep(s3, &s,
	            "SELECT b.owner FROM uploads u JOIN buckets b ON b.id = u.bucket_id"
	            " WHERE u.id = ?",
	            "i", t->upload_rowid);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		nb_strlcpy(owner, (const char *)sqlite3_column_text(s, 0), sizeof(owner));
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? -NB_S3_E_NO_SUCH_UPLOAD : s3_sql_err(rc);
	r = s3_prep(s3, &s, "SELECT data_id, size FROM parts WHERE upload = ? AND number = ?", "ii",
	            t->upload_rowid, (int64_t)t->number);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		nb_strlcpy(old_id, (const char *)sqlite3_column_text(s, 0), sizeof(old_id));
		old_size = sqlite3_column_int64(s, 1);
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return s3_sql_err(rc);
	r = s3_usage_add(s3, owner, (int64_t)size - old_size, 0, q);
	if (r == 0)
		r = s3_exec(
		    s3,
		    "INSERT OR REPLACE INTO parts (upload, number, data_id, size, etag,"
		    " mtime_ms, checksum_algo, checksum_value) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
		    "iisisiss", t->upload_rowid, (int64_t)t->number, data_id, (int64_t)size, etag,
		    nb_wall_ms(), ck_algo, ck_value);
	if (r == 0 && *old_id)
		r = s3_garbage_add(garbage, n_garbage, old_id);
	return r;
}

/* Finds bucket (owned by actor) and upload; fills the handle's target. */
static int part_target(struct nb_s3 *s3, const struct nb_s3_part_opts *o, struct s3_bucket_row *b,
                       struct s3_part_target *t)
{
	struct upload_row u;
	int r = key_ok(o->key);

	if (r < 0)
		return r;
	if (o->part_number < 1 || o->part_number > NB_S3_PARTS_MAX)
		return -NB_S3_E_INVALID_ARGUMENT;
	pthread_mutex_lock(&s3->lock);
	r = s3_bucket_find(s3, o->bucket, o->actor, false, b);
	if (r == 0)
		r = upload_find(s3, b->id, o->key, o->upload_id, &u);
	pthread_mutex_unlock(&s3->lock);
	if (r < 0)
		return r;
	t->upload_rowid = u.rowid;
	t->number = o->part_number;
	upload_row_free(&u);
	return 0;
}

int nb_s3_part_begin(struct nb_s3 *s3, const struct nb_s3_part_opts *o, struct nb_s3_put **out)
{
	struct s3_bucket_row b;
	struct s3_part_target t;
	struct nb_s3_put *p;
	int r;

	*out = NULL;
	if (o->content_length > (int64_t)NB_S3_PUT_MAX)
		return -NB_S3_E_ENTITY_TOO_LARGE;
	r = part_target(s3, o, &b, &t);
	if (r < 0)
		return r;
	if (o->quota.max_bytes && o->content_length > 0 &&
	    (uint64_t)o->content_length > o->quota.max_bytes)
		return -NB_S3_E_QUOTA_EXCEEDED;
	r = s3_put_new(s3, o->content_length, o->checksums, false, &p);
	if (r < 0)
		return r;
	p->is_part = true;
	p->part = t;
	p->bucket_id = b.id;
	p->quota = o->quota;
	*out = p;
	return 0;
}

int nb_s3_part_copy(struct nb_s3 *s3, const struct nb_s3_part_opts *o,
                    const struct nb_s3_copy_opts *c, const struct nb_s3_range *range,
                    struct nb_s3_put_result *res)
{
	struct nb_s3_part_opts po = *o;
	struct nb_s3_reader rd;
	struct nb_s3_put *p = NULL;
	int r;

	if (res)
		memset(res, 0, sizeof(*res));
	/* The source, opened: its fd outlives a concurrent delete. */
	r = nb_s3_object_open(s3, c->src_bucket, c->src_key, c->src_version_id, c->actor, NULL,
	                      range, &rd);
	if (r == -NB_S3_E_METHOD_NOT_ALLOWED)
		r = -NB_S3_E_INVALID_REQUEST;
	if (r == 0 && c->src_cond &&
	    nb_s3_cond_eval(c->src_cond, true, rd.obj.etag, rd.obj.mtime_ms, false) != 200)
		r = -NB_S3_E_PRECONDITION_FAILED;
	if (r == 0 && rd.length > NB_S3_PUT_MAX)
		r = -NB_S3_E_ENTITY_TOO_LARGE;
	if (r < 0)
		goto out;
	po.content_length = (int64_t)rd.length;
	po.checksums = 0;
	po.quota = c->quota;
	r = nb_s3_part_begin(s3, &po, &p);
	if (r < 0)
		goto out;
	if (rd.data)
		r = nb_s3_put_write(p, rd.data + rd.offset, (size_t)rd.length);
	else
		r = s3_put_from_fd(p, rd.fd, rd.offset, rd.length);
	if (r < 0) {
		nb_s3_put_abort(p);
		goto out;
	}
	r = nb_s3_put_commit(p, NULL, res);
out:
	nb_s3_reader_close(&rd);
	return r;
}

int nb_s3_mpu_list_parts(struct nb_s3 *s3, const char *bucket, const char *key,
                         const char *upload_id, const char *actor, uint32_t marker, uint32_t max,
                         struct nb_s3_parts *out)
{
	struct s3_bucket_row b;
	struct upload_row u = {0};
	sqlite3_stmt *s = NULL;
	char **hdrs[6] = {&out->upload.content_type,        &out->upload.content_encoding,
	                  &out->upload.content_disposition, &out->upload.cache_control,
	                  &out->upload.content_language,    &out->upload.expires};
	int r, rc;

	memset(out, 0, sizeof(*out));
	r = key_ok(key);
	if (r < 0)
		return r;
	if (max > NB_S3_LIST_MAX)
		max = NB_S3_LIST_MAX;
	pthread_mutex_lock(&s3->lock);
	r = s3_bucket_find(s3, bucket, actor, false, &b);
	if (r == 0)
		r = upload_find(s3, b.id, key, upload_id, &u);
	if (r == 0)
		r = s3_prep(s3, &s,
		            "SELECT number, size, etag, mtime_ms, checksum_algo, checksum_value"
		            " FROM parts WHERE upload = ? AND number > ? ORDER BY number LIMIT ?",
		            "iii", u.rowid, (int64_t)marker, (int64_t)max + 1);
	while (r == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct nb_s3_part *np, *e;
		if (out->n == max) {
			out->truncated = true;
			break;
		}
		np = realloc(out->parts, (out->n + 1) * sizeof(*np));
		if (!np) {
			r = -ENOMEM;
			break;
		}
		out->parts = np;
		e = &np[out->n++];
		memset(e, 0, sizeof(*e));
		e->number = (uint32_t)sqlite3_column_int(s, 0);
		e->size = (uint64_t)sqlite3_column_int64(s, 1);
		snprintf(e->etag, sizeof(e->etag), "\"%s\"", sqlite3_column_text(s, 2));
		e->mtime_ms = sqlite3_column_int64(s, 3);
		if (sqlite3_column_type(s, 4) != SQLITE_NULL) {
			nb_strlcpy(e->checksum_algo, (const char *)sqlite3_column_text(s, 4),
			           sizeof(e->checksum_algo));
			nb_strlcpy(e->checksum_value, (const char *)sqlite3_column_text(s, 5),
			           sizeof(e->checksum_value));
		}
	}
	if (r == 0 && s && rc != SQLITE_ROW && rc != SQLITE_DONE)
		r = s3_sql_err(rc);
	sqlite3_finalize(s);
	pthread_mutex_unlock(&s3->lock);
	if (r == 0 && out->truncated)
		out->next_marker = out->parts[out->n - 1].number;
	if (r == 0) {
		out->upload.key = strdup(key);
		out->upload.owner = u.owner;
		u.owner = NULL;
		for (int i = 0; i < 6; i++) {
			*hdrs[i] = u.hdr[i] && *u.hdr[i] ? u.hdr[i] : NULL;
			if (*hdrs[i])
				u.hdr[i] = NULL;
		}
		out->upload.user_meta = json_loads(u.user_meta, 0, NULL);
		if (!out->upload.user_meta)
			out->upload.user_meta = json_object();
		if (!out->upload.key || !out->upload.user_meta)
			r = -ENOMEM;
	}
	upload_row_free(&u);
	if (r < 0)
		nb_s3_parts_clear(out);
	return r;
}

void nb_s3_parts_clear(struct nb_s3_parts *p)
{
	if (!p)
		return;
	free(p->parts);
	nb_s3_object_clear(&p->upload);
	memset(p, 0, sizeof(*p));
}

/* Deletes an upload's rows and queues its parts' files. Caller holds a
 * transaction. */
static int upload_drop(struct nb_s3 *s3, int64_t rowid, char (**garbage)[S3_ID_HEX + 1],
                       size_t *n_garbage)
{
	sqlite3_stmt *s;
	char owner[NB_S3_OWNER_MAX + 1] = "";
	int64_t bytes = 0;
	int r, rc;

	r = s3_prep(s3, &s,
	            "SELECT b.owner FROM uploads u JOIN buckets b ON b.id = u.bucket_id"
	            " WHERE u.id = ?",
	            "i", rowid);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		nb_strlcpy(owner, (const char *)sqlite3_column_text(s, 0), sizeof(owner));
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? -NB_S3_E_NO_SUCH_UPLOAD : s3_sql_err(rc);
	r = s3_prep(s3, &s, "SELECT data_id, size FROM parts WHERE upload = ?", "i", rowid);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW && r == 0) {
		bytes += sqlite3_column_int64(s, 1);
		r = s3_garbage_add(garbage, n_garbage, (const char *)sqlite3_column_text(s, 0));
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = s3_sql_err(rc);
	sqlite3_finalize(s);
	if (r == 0)
		r = s3_usage_add(s3, owner, -bytes, 0, NULL);
	if (r == 0)
		r = s3_exec(s3, "DELETE FROM parts WHERE upload = ?", "i", rowid);
	if (r == 0)
		r = s3_exec(s3, "DELETE FROM uploads WHERE id = ?", "i", rowid);
	return r;
}

int nb_s3_mpu_abort(struct nb_s3 *s3, const char *bucket, const char *key, const char *upload_id,
                    const char *actor)
{
	struct s3_bucket_row b;
	struct upload_row u = {0};
	char(*garbage)[S3_ID_HEX + 1] = NULL;
	size_t n_garbage = 0;
	int r = key_ok(key);

	if (r < 0)
		return r;
	r = s3_tx_begin(s3);
	if (r < 0)
		return r;
	r = s3_bucket_find(s3, bucket, actor, false, &b);
	if (r == 0)
		r = upload_find(s3, b.id, key, upload_id, &u);
	if (r == 0)
		r = upload_drop(s3, u.rowid, &garbage, &n_garbage);
	if (r < 0)
		s3_tx_rollback(s3);
	else
		r = s3_tx_commit(s3);
	if (r == 0)
		s3_unlink_data(s3, garbage, n_garbage);
	free(garbage);
	upload_row_free(&u);
	return r;
}

int nb_s3_mpu_expire(struct nb_s3 *s3, int64_t max_age_ms, size_t *expired)
{
	int64_t cutoff = nb_wall_ms() - (max_age_ms > 0 ? max_age_ms : 0);
	size_t count = 0;
	int r = 0;

	for (;;) {
		char(*garbage)[S3_ID_HEX + 1] = NULL;
		size_t n_garbage = 0;
		sqlite3_stmt *s;
		int64_t rowid = 0;
		int rc;

		r = s3_tx_begin(s3);
		if (r < 0)
			break;
		r = s3_prep(s3, &s, "SELECT id FROM uploads WHERE initiated_ms <= ? LIMIT 1", "i",
		            cutoff);
		if (r == 0) {
			rc = sqlite3_step(s);
			if (rc == SQLITE_ROW)
				rowid = sqlite3_column_int64(s, 0);
			else if (rc != SQLITE_DONE)
				r = s3_sql_err(rc);
			sqlite3_finalize(s);
		}
		if (r == 0 && rowid)
			r = upload_drop(s3, rowid, &garbage, &n_garbage);
		if (r < 0 || !rowid) {
			s3_tx_rollback(s3);
			free(garbage);
			break;
		}
		r = s3_tx_commit(s3);
		if (r == 0) {
			s3_unlink_data(s3, garbage, n_garbage);
			count++;
		}
		free(garbage);
		if (r < 0)
			break;
	}
	if (expired)
		*expired = count;
	return r;
}

/* Appends len bytes of in to p's temp file: copy_file_range (the kernel
 * copies, or reflinks), else read/write. */
static int join_copy(struct nb_s3_put *p, int in, uint64_t len)
{
	loff_t off = 0;
	char *buf = NULL;
	int r = 0;

	while (len > 0) {
		size_t want = len > (1u << 30) ? (1u << 30) : (size_t)len;
		ssize_t n = copy_file_range(in, &off, p->fd, NULL, want, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 &&
		    (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
			break; /* fall back below */
		}
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* the part is shorter than its row says */
		len -= (uint64_t)n;
		p->written += (uint64_t)n;
	}
	if (len == 0)
		return 0;
	buf = malloc(JOIN_BUF);
	if (!buf)
		return -ENOMEM;
	while (len > 0 && r == 0) {
		ssize_t n = pread(in, buf, len > JOIN_BUF ? JOIN_BUF : (size_t)len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
		r = nb_write_all(p->fd, buf, (size_t)n);
		off += n;
		len -= (uint64_t)n;
		p->written += (uint64_t)n;
	}
	free(buf);
	return r;
}

int nb_s3_mpu_complete(struct nb_s3 *s3, const char *bucket, const char *key, const char *upload_id,
                       const char *actor, const struct nb_s3_complete_part *parts, size_t n,
                       const struct nb_s3_quota *quota, const struct nb_s3_cond *cond,
                       struct nb_s3_put_result *res)
{
	struct s3_bucket_row b;
	struct upload_row u = {0};
	struct nb_s3_put *p = NULL;
	char(*ids)[S3_ID_HEX + 1] = NULL;
	char(*garbage)[S3_ID_HEX + 1] = NULL;
	size_t n_garbage = 0;
	uint64_t *sizes = NULL, total = 0;
	unsigned char *md5s = NULL;
	char etag[NB_S3_ETAG_SIZE], dir[S3_PATH_MAX];
	int r;

	if (res)
		memset(res, 0, sizeof(*res));
	r = key_ok(key);
	if (r < 0)
		return r;
	if (n == 0)
		return -NB_S3_E_INVALID_REQUEST;
	if (n > NB_S3_PARTS_MAX)
		return -NB_S3_E_INVALID_ARGUMENT;
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && parts[i].number <= parts[i - 1].number)
			return -NB_S3_E_INVALID_PART_ORDER;
		if (parts[i].number < 1 || parts[i].number > NB_S3_PARTS_MAX || !parts[i].etag)
			return -NB_S3_E_INVALID_PART;
	}
	ids = calloc(n, sizeof(*ids));
	sizes = calloc(n, sizeof(*sizes));
	md5s = calloc(n, 16);
	if (!ids || !sizes || !md5s) {
		r = -ENOMEM;
		goto out;
	}

	/* Check the list against the stored parts. */
	pthread_mutex_lock(&s3->lock);
	r = s3_bucket_find(s3, bucket, actor, false, &b);
	if (r == 0)
		r = upload_find(s3, b.id, key, upload_id, &u);
	for (size_t i = 0; i < n && r == 0; i++) {
		sqlite3_stmt *s;
		int rc;
		r = s3_prep(s3, &s,
		            "SELECT data_id, size, etag FROM parts WHERE upload = ? AND number = ?",
		            "ii", u.rowid, (int64_t)parts[i].number);
		if (r < 0)
			break;
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			const char *et = (const char *)sqlite3_column_text(s, 2);
			nb_strlcpy(ids[i], (const char *)sqlite3_column_text(s, 0), sizeof(ids[i]));
			sizes[i] = (uint64_t)sqlite3_column_int64(s, 1);
			if (!s3_etag_eq(parts[i].etag, et) || strlen(et) != 32)
				r = -NB_S3_E_INVALID_PART;
			for (int k = 0; r == 0 && k < 16; k++) {
				char hx[3] = {et[2 * k], et[2 * k + 1], '\0'};
				md5s[i * 16 + (size_t)k] = (unsigned char)strtoul(hx, NULL, 16);
			}
		} else {
			r = rc == SQLITE_DONE ? -NB_S3_E_INVALID_PART : s3_sql_err(rc);
		}
		sqlite3_finalize(s);
	}
	pthread_mutex_unlock(&s3->lock);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (i + 1 < n && sizes[i] < NB_S3_PART_MIN) {
			r = -NB_S3_E_ENTITY_TOO_SMALL;
			goto out;
		}
		total += sizes[i];
	}
	if (total > NB_S3_OBJECT_MAX) {
		r = -NB_S3_E_ENTITY_TOO_LARGE;
		goto out;
	}
	{
		unsigned char d[16];
		char hex[33];
		unsigned dl;
		EVP_MD_CTX *c = EVP_MD_CTX_new();
		if (!c || !EVP_DigestInit_ex(c, EVP_md5(), NULL) ||
		    !EVP_DigestUpdate(c, md5s, n * 16) || !EVP_DigestFinal_ex(c, d, &dl)) {
			EVP_MD_CTX_free(c);
			r = -NB_S3_E_INTERNAL;
			goto out;
		}
		EVP_MD_CTX_free(c);
		s3_hex(d, 16, hex);
		snprintf(etag, sizeof(etag), "%s-%zu", hex, n);
	}

	/* Join the parts into one new data file. */
	r = s3_put_new(s3, (int64_t)total, 0, false, &p);
	if (r < 0)
		goto out;
	p->max = NB_S3_OBJECT_MAX;
	for (size_t i = 0; i < n && r == 0; i++) {
		char path[S3_PATH_MAX];
		int fd;
		s3_data_path(s3, ids[i], path, sizeof(path));
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			/* aborted (or the part replaced) meanwhile */
			r = errno == ENOENT ? -NB_S3_E_NO_SUCH_UPLOAD : -errno;
			break;
		}
		r = join_copy(p, fd, sizes[i]);
		close(fd);
	}
	if (r == 0)
		r = s3_put_place(p, dir);
	if (r < 0)
		goto out;
	{
		struct s3_newver nv = {
		    .bucket_id = b.id,
		    .key = key,
		    .owner = actor ? actor : u.owner,
		    .data_id = p->live.id,
		    .size = total,
		    .etag = etag,
		    .parts = (uint32_t)n,
		    .content_type = u.hdr[0],
		    .content_encoding = u.hdr[1],
		    .content_disposition = u.hdr[2],
		    .cache_control = u.hdr[3],
		    .content_language = u.hdr[4],
		    .expires = u.hdr[5],
		    .user_meta = u.user_meta,
		    .quota = quota,
		    .cond = cond,
		    .upload_rowid = u.rowid,
		    .part_ids = (const char(*)[S3_ID_HEX + 1]) ids,
		    .n_parts = n,
		    .dir = dir,
		};
		r = s3_commit_version(s3, &nv, res, &garbage, &n_garbage);
	}
	if (r == 0) {
		p->state = PUT_DONE;
		s3_unlink_data(s3, garbage, n_garbage);
	}
out:
	s3_put_free(p);
	free(garbage);
	free(ids);
	free(sizes);
	free(md5s);
	upload_row_free(&u);
	return r;
}
