/* Listing: ListObjectsV2/V1, ListObjectVersions, ListMultipartUploads.
 *
 * One walker serves all three. It keeps a lower bound lo (inclusive) and
 * an upper bound hi (exclusive) on keys, compared as bytes (keys are BLOBs:
 * memcmp order is UTF-8 binary order). Each key under the prefix either is
 * an item, or (with a delimiter) rolls up into a common prefix CP; after a
 * CP the walk jumps to the successor of CP, so a directory of a million
 * keys costs one row. The V2 continuation token is the base64 of the next
 * lo: opaque to clients, and any value is just a position, so a forged one
 * can only move the start. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "s3/engine_internal.h"

struct walk {
	struct nb_s3 *s3;
	int64_t bucket_id;
	const char *prefix, *delim;
	size_t plen, dlen;
	uint32_t max, count;
	bool truncated, done;
	struct s3_bytes lo, hi;
	struct s3_bytes last; /* last item key or common prefix returned */
	bool last_is_prefix;
	char **prefixes;
	size_t n_prefixes;
	/* adds the row as an item */
	int (*emit)(struct walk *w, sqlite3_stmt *s, void *ctx);
	void *ctx;
};

static int bytes_set(struct s3_bytes *b, const char *p, size_t n, size_t extra_nul)
{
	char *np = malloc(n + extra_nul + 1);

	if (!np)
		return -ENOMEM;
	memcpy(np, p, n);
	memset(np + n, 0, extra_nul + 1);
	free(b->p);
	b->p = np;
	b->n = n + extra_nul;
	return 0;
}

static int bytes_cmp(const struct s3_bytes *a, const char *p, size_t n)
{
	size_t m = a->n < n ? a->n : n;
	int c = memcmp(a->p, p, m);

	if (c)
		return c;
	return a->n < n ? -1 : a->n > n;
}

/* lo = max(lo, p[0..n) + extra_nul NULs) */
static int lo_raise(struct walk *w, const char *p, size_t n, size_t extra_nul)
{
	struct s3_bytes cand = {0};
	int r = bytes_set(&cand, p, n, extra_nul);

	if (r < 0)
		return r;
	if (bytes_cmp(&w->lo, cand.p, cand.n) < 0) {
		free(w->lo.p);
		w->lo = cand;
	} else {
		free(cand.p);
	}
	return 0;
}

/* The common prefix a marker (or key) m falls under, if any: its length. */
static size_t marker_cp(const struct walk *w, const char *m, size_t mn)
{
	const char *d;

	if (!w->dlen || mn <= w->plen || memcmp(m, w->prefix, w->plen) != 0)
		return 0;
	d = memmem(m + w->plen, mn - w->plen, w->delim, w->dlen);
	return d ? (size_t)(d - m) + w->dlen : 0;
}

/* After marker m (exclusive): keys above m, and past m's whole common
 * prefix when it has one (that CP was returned already). */
static int lo_after_marker(struct walk *w, const char *m)
{
	size_t mn = strlen(m), cn = marker_cp(w, m, mn);
	int r = lo_raise(w, m, mn, 1);

	if (r == 0 && cn) {
		struct s3_bytes succ;
		bool has;
		r = s3_successor(m, cn, &succ, &has);
		if (r == 0 && has)
			r = lo_raise(w, succ.p, succ.n, 0);
		else if (r == 0)
			w->done = true;
		free(succ.p);
	}
	return r;
}

static int walk_init(struct walk *w, struct nb_s3 *s3, const struct nb_s3_list_opts *o)
{
	struct s3_bytes succ;
	bool has;
	int r;

	memset(w, 0, sizeof(*w));
	w->s3 = s3;
	w->prefix = o->prefix ? o->prefix : "";
	w->delim = o->delimiter ? o->delimiter : "";
	w->plen = strnlen(w->prefix, NB_S3_KEY_MAX + 1);
	w->dlen = strnlen(w->delim, NB_S3_KEY_MAX + 1);
	if (w->plen > NB_S3_KEY_MAX || w->dlen > NB_S3_KEY_MAX)
		return -NB_S3_E_INVALID_ARGUMENT;
	w->max = o->max_keys > NB_S3_LIST_MAX ? NB_S3_LIST_MAX : o->max_keys;
	if (w->max == 0)
		w->done = true;
	r = bytes_set(&w->lo, w->prefix, w->plen, 0);
	if (r < 0)
		return r;
	r = s3_successor(w->prefix, w->plen, &succ, &has);
	if (r < 0)
		return r;
	if (has) {
		w->hi = succ;
	} else if (w->plen) {
		w->done = true; /* a prefix of 0xff bytes: no UTF-8 key starts so */
		free(succ.p);
	} else {
		/* No prefix: every key is below 0xff (never in UTF-8). */
		r = bytes_set(&w->hi, "\xff", 1, 0);
	}
	return r;
}

static void walk_free(struct walk *w)
{
	free(w->lo.p);
	free(w->hi.p);
	free(w->last.p);
	for (size_t i = 0; i < w->n_prefixes; i++)
		free(w->prefixes[i]);
	free(w->prefixes);
}

static int walk_add_prefix(struct walk *w, const char *key, size_t n)
{
	char **np = realloc(w->prefixes, (w->n_prefixes + 1) * sizeof(*np));
	char *cp;

	if (!np)
		return -ENOMEM;
	w->prefixes = np;
	cp = malloc(n + 1);
	if (!cp)
		return -ENOMEM;
	memcpy(cp, key, n);
	cp[n] = '\0';
	w->prefixes[w->n_prefixes++] = cp;
	w->last_is_prefix = true;
	return bytes_set(&w->last, key, n, 0);
}

/* Steps s (bound: ?1 bucket, ?2 lo, ?3 hi when range is true). Rows roll
 * into common prefixes only when range is true. */
static int walk_run(struct walk *w, sqlite3_stmt *s, bool range)
{
	int r = 0, rc;

	while (!w->done && !w->truncated) {
		const char *key;
		size_t kn;
		rc = sqlite3_step(s);
		if (rc == SQLITE_DONE)
			break;
		if (rc != SQLITE_ROW)
			return s3_sql_err(rc);
		if (w->count >= w->max) {
			w->truncated = true;
			break;
		}
		key = sqlite3_column_blob(s, 0);
		kn = (size_t)sqlite3_column_bytes(s, 0);
		if (!key)
			key = "";
		if (range) {
			size_t cn = marker_cp(w, key, kn);
			if (cn) {
				struct s3_bytes succ;
				bool has;
				r = walk_add_prefix(w, key, cn);
				if (r < 0)
					return r;
				w->count++;
				r = s3_successor(key, cn, &succ, &has);
				if (r < 0)
					return r;
				if (!has) {
					w->done = true;
					break;
				}
				free(w->lo.p);
				w->lo = succ;
				sqlite3_reset(s);
				if (sqlite3_bind_blob(s, 2, w->lo.p, (int)w->lo.n,
				                      SQLITE_TRANSIENT) != SQLITE_OK)
					return -NB_S3_E_INTERNAL;
				continue;
			}
		}
		r = w->emit(w, s, w->ctx);
		if (r < 0)
			return r;
		w->count++;
		w->last_is_prefix = false;
		r = bytes_set(&w->last, key, kn, 0);
		if (r < 0)
			return r;
	}
	return r;
}

static int walk_range(struct walk *w, const char *sql)
{
	sqlite3_stmt *s;
	int r;

	if (w->done || w->truncated)
		return 0;
	r = s3_prep(w->s3, &s, sql, "ibb", w->bucket_id, (const void *)w->lo.p, w->lo.n,
	            (const void *)w->hi.p, w->hi.n);
	if (r < 0)
		return r;
	r = walk_run(w, s, true);
	sqlite3_finalize(s);
	return r;
}

/* Hands the common prefixes to the caller's arrays. */
static void walk_give_prefixes(struct walk *w, char ***out, size_t *n)
{
	*out = w->prefixes;
	*n = w->n_prefixes;
	w->prefixes = NULL;
	w->n_prefixes = 0;
}

static char *bytes_str(const struct s3_bytes *b)
{
	char *s = malloc(b->n + 1);

	if (s) {
		memcpy(s, b->p ? b->p : "", b->n);
		s[b->n] = '\0';
	}
	return s;
}

/* ---- objects and versions ---- */

static int emit_object(struct walk *w, sqlite3_stmt *s, void *ctx)
{
	struct nb_s3_list *l = ctx;
	struct nb_s3_object *ni = realloc(l->items, (l->n_items + 1) * sizeof(*ni));

	(void)w;
	if (!ni)
		return -ENOMEM;
	l->items = ni;
	memset(&ni[l->n_items], 0, sizeof(*ni));
	l->n_items++;
	return s3_object_from_row(s, &ni[l->n_items - 1]);
}

/* Listing columns: S3_VERSION_COLS without the metadata. */
#define LIST_COLS                                                                                  \
	"v.key, v.version_id, v.delete_marker, v.is_latest, v.size, v.etag, v.mtime_ms, v.owner, " \
	"NULL, NULL, NULL, NULL, NULL, NULL, NULL, v.checksum_algo, NULL, v.parts, NULL, v.id"

int nb_s3_list_objects(struct nb_s3 *s3, const char *bucket, const char *actor,
                       const struct nb_s3_list_opts *o, struct nb_s3_list *out)
{
	struct s3_bucket_row b;
	struct walk w;
	int r;

	memset(out, 0, sizeof(*out));
	r = walk_init(&w, s3, o);
	if (r < 0)
		goto done;
	w.emit = emit_object;
	w.ctx = out;
	if (o->token) {
		char dec[NB_S3_TOKEN_MAX];
		size_t dn;
		if (strnlen(o->token, NB_S3_TOKEN_MAX + 1) > NB_S3_TOKEN_MAX ||
		    s3_b64_decode(o->token, dec, sizeof(dec), &dn) < 0 || dn == 0) {
			r = -NB_S3_E_INVALID_TOKEN;
			goto done;
		}
		r = lo_raise(&w, dec, dn, 0);
	} else if (o->start_after && *o->start_after) {
		r = lo_after_marker(&w, o->start_after);
	}
	if (r < 0)
		goto done;
	pthread_mutex_lock(&s3->lock);
	r = s3_bucket_find(s3, bucket, actor, true, &b);
	if (r == 0) {
		w.bucket_id = b.id;
		r = walk_range(&w,
		               "SELECT " LIST_COLS " FROM versions v INDEXED BY versions_current"
		               " WHERE bucket_id = ?1 AND is_latest = 1 AND delete_marker = 0"
		               " AND key >= ?2 AND key < ?3 ORDER BY key");
	}
	pthread_mutex_unlock(&s3->lock);
	if (r < 0)
		goto done;
	walk_give_prefixes(&w, &out->prefixes, &out->n_prefixes);
	out->truncated = w.truncated;
	if (w.truncated) {
		struct s3_bytes next = {0};
		bool has = true;
		if (w.last_is_prefix)
			r = s3_successor(w.last.p, w.last.n, &next, &has);
		else
			r = bytes_set(&next, w.last.p, w.last.n, 1);
		if (r == 0 && has && next.n * 4 / 3 + 4 <= NB_S3_TOKEN_MAX) {
			out->next_token = malloc(4 * ((next.n + 2) / 3) + 1);
			if (out->next_token)
				s3_b64_encode(next.p, next.n, out->next_token);
		}
		free(next.p);
		out->next_marker = bytes_str(&w.last);
		if (r == 0 && (!out->next_token || !out->next_marker))
			r = -ENOMEM;
	}
done:
	walk_free(&w);
	if (r < 0)
		nb_s3_list_clear(out);
	return r;
}

static int version_rowid(struct nb_s3 *s3, int64_t bucket_id, const char *key, const char *vid,
                         int64_t *rowid)
{
	sqlite3_stmt *s;
	int r, rc;

	*rowid = 0;
	r = s3_prep(s3, &s,
	            "SELECT id FROM versions WHERE bucket_id = ? AND key = ? AND version_id = ?",
	            "iks", bucket_id, key, vid);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*rowid = sqlite3_column_int64(s, 0);
	else if (rc != SQLITE_DONE)
		r = s3_sql_err(rc);
	sqlite3_finalize(s);
	return r;
}

int nb_s3_list_versions(struct nb_s3 *s3, const char *bucket, const char *actor,
                        const struct nb_s3_list_opts *o, struct nb_s3_list *out)
{
	struct s3_bucket_row b;
	struct walk w;
	const char *km = o->key_marker && *o->key_marker ? o->key_marker : NULL;
	const char *vm =
	    o->version_id_marker && *o->version_id_marker ? o->version_id_marker : NULL;
	int64_t from_row = 0;
	int r;

	memset(out, 0, sizeof(*out));
	r = walk_init(&w, s3, o);
	if (r < 0)
		goto done;
	w.emit = emit_object;
	w.ctx = out;
	if (vm && (!km || !s3_version_id_valid(vm))) {
		r = -NB_S3_E_INVALID_ARGUMENT;
		goto done;
	}
	if (km && strnlen(km, NB_S3_KEY_MAX + 1) > NB_S3_KEY_MAX) {
		r = -NB_S3_E_INVALID_ARGUMENT;
		goto done;
	}
	pthread_mutex_lock(&s3->lock);
	r = s3_bucket_find(s3, bucket, actor, true, &b);
	w.bucket_id = b.id;
	/* Older versions of the marker's key first, unless that key is
	 * under a common prefix already returned or outside the prefix. */
	if (r == 0 && km && vm && !w.done && strncmp(km, w.prefix, w.plen) == 0 &&
	    !marker_cp(&w, km, strlen(km)))
		r = version_rowid(s3, b.id, km, vm, &from_row);
	if (r == 0 && from_row) {
		sqlite3_stmt *s;
		r = s3_prep(s3, &s,
		            "SELECT " LIST_COLS " FROM versions v WHERE bucket_id = ? AND key = ?"
		            " AND id < ? ORDER BY id DESC",
		            "iki", b.id, km, from_row);
		if (r == 0) {
			r = walk_run(&w, s, false);
			sqlite3_finalize(s);
		}
	}
	if (r == 0 && km)
		r = lo_after_marker(&w, km);
	if (r == 0)
		r = walk_range(&w, "SELECT " LIST_COLS " FROM versions v"
		                   " WHERE bucket_id = ?1 AND key >= ?2 AND key < ?3"
		                   " ORDER BY key, id DESC");
	pthread_mutex_unlock(&s3->lock);
	if (r < 0)
		goto done;
	walk_give_prefixes(&w, &out->prefixes, &out->n_prefixes);
	out->truncated = w.truncated;
	if (w.truncated) {
		out->next_marker = bytes_str(&w.last);
		if (!out->next_marker)
			r = -ENOMEM;
		else if (!w.last_is_prefix && out->n_items)
			nb_strlcpy(out->next_version_id_marker,
			           out->items[out->n_items - 1].version_id,
			           sizeof(out->next_version_id_marker));
	}
done:
	walk_free(&w);
	if (r < 0)
		nb_s3_list_clear(out);
	return r;
}

void nb_s3_list_clear(struct nb_s3_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n_items; i++)
		nb_s3_object_clear(&l->items[i]);
	free(l->items);
	for (size_t i = 0; i < l->n_prefixes; i++)
		free(l->prefixes[i]);
	free(l->prefixes);
	free(l->next_token);
	free(l->next_marker);
	memset(l, 0, sizeof(*l));
}

/* ---- multipart uploads ---- */

#define UPLOAD_COLS "key, upload_id, owner, initiated_ms, id"

static int emit_upload(struct walk *w, sqlite3_stmt *s, void *ctx)
{
	struct nb_s3_uploads *u = ctx;
	struct nb_s3_upload *nu = realloc(u->uploads, (u->n + 1) * sizeof(*nu));
	struct nb_s3_upload *e;
	const void *k = sqlite3_column_blob(s, 0);
	int kn = sqlite3_column_bytes(s, 0);

	(void)w;
	if (!nu)
		return -ENOMEM;
	u->uploads = nu;
	e = &nu[u->n++];
	memset(e, 0, sizeof(*e));
	e->key = malloc((size_t)kn + 1);
	if (!e->key)
		return -ENOMEM;
	memcpy(e->key, k ? k : "", (size_t)kn);
	e->key[kn] = '\0';
	nb_strlcpy(e->upload_id, (const char *)sqlite3_column_text(s, 1), sizeof(e->upload_id));
	e->owner = s3_col_strdup(s, 2);
	e->initiated_ms = sqlite3_column_int64(s, 3);
	return e->owner ? 0 : -ENOMEM;
}

int nb_s3_mpu_list(struct nb_s3 *s3, const char *bucket, const char *actor,
                   const struct nb_s3_list_opts *o, struct nb_s3_uploads *out)
{
	struct s3_bucket_row b;
	struct walk w;
	const char *km = o->key_marker && *o->key_marker ? o->key_marker : NULL;
	const char *um =
	    o->version_id_marker && *o->version_id_marker ? o->version_id_marker : NULL;
	int64_t from_row = 0;
	int r;

	memset(out, 0, sizeof(*out));
	r = walk_init(&w, s3, o);
	if (r < 0)
		goto done;
	w.emit = emit_upload;
	w.ctx = out;
	if (km && strnlen(km, NB_S3_KEY_MAX + 1) > NB_S3_KEY_MAX) {
		r = -NB_S3_E_INVALID_ARGUMENT;
		goto done;
	}
	pthread_mutex_lock(&s3->lock);
	r = s3_bucket_find(s3, bucket, actor, false, &b);
	w.bucket_id = b.id;
	if (r == 0 && km && um && s3_is_hex_id(um) && !w.done &&
	    strncmp(km, w.prefix, w.plen) == 0 && !marker_cp(&w, km, strlen(km))) {
		sqlite3_stmt *s;
		r = s3_prep(s3, &s,
		            "SELECT id FROM uploads WHERE bucket_id = ? AND key = ?"
		            " AND upload_id = ?",
		            "iks", b.id, km, um);
		if (r == 0) {
			if (sqlite3_step(s) == SQLITE_ROW)
				from_row = sqlite3_column_int64(s, 0);
			sqlite3_finalize(s);
		}
	}
	if (r == 0 && from_row) {
		sqlite3_stmt *s;
		r = s3_prep(s3, &s,
		            "SELECT " UPLOAD_COLS " FROM uploads WHERE bucket_id = ? AND key = ?"
		            " AND id > ? ORDER BY id",
		            "iki", b.id, km, from_row);
		if (r == 0) {
			r = walk_run(&w, s, false);
			sqlite3_finalize(s);
		}
	}
	if (r == 0 && km)
		r = lo_after_marker(&w, km);
	if (r == 0)
		r = walk_range(&w, "SELECT " UPLOAD_COLS " FROM uploads"
		                   " WHERE bucket_id = ?1 AND key >= ?2 AND key < ?3"
		                   " ORDER BY key, id");
	pthread_mutex_unlock(&s3->lock);
	if (r < 0)
		goto done;
	walk_give_prefixes(&w, &out->prefixes, &out->n_prefixes);
	out->truncated = w.truncated;
	if (w.truncated) {
		out->next_key_marker = bytes_str(&w.last);
		if (!out->next_key_marker)
			r = -ENOMEM;
		else if (!w.last_is_prefix && out->n)
			nb_strlcpy(out->next_upload_id_marker, out->uploads[out->n - 1].upload_id,
			           sizeof(out->next_upload_id_marker));
	}
done:
	walk_free(&w);
	if (r < 0)
		nb_s3_uploads_clear(out);
	return r;
}

void nb_s3_uploads_clear(struct nb_s3_uploads *u)
{
	if (!u)
		return;
	for (size_t i = 0; i < u->n; i++) {
		free(u->uploads[i].key);
		free(u->uploads[i].owner);
	}
	free(u->uploads);
	for (size_t i = 0; i < u->n_prefixes; i++)
		free(u->prefixes[i]);
	free(u->prefixes);
	free(u->next_key_marker);
	memset(u, 0, sizeof(*u));
}
