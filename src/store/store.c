#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/json.h"
#include "common/util.h"
#include "store/store_internal.h"

#define STMT_CACHE 128

struct nb_store {
	sqlite3 *db;	      /* used under lock only (opened without SQLite's mutex) */
	pthread_mutex_t lock; /* recursive: begin/commit wrap the row functions */
	int depth;            /* nested begin()s: only the outermost talks to SQLite */
	bool failed;          /* an inner level rolled back: the outer commit cannot */
	bool wrote;           /* the open transaction changed rows */
	_Atomic uint64_t epoch; /* bumped after every committed change */
	/* compiled statements kept for reuse (the store's SQL is a fixed set of
	 * texts): the least recently used one is dropped when all are taken */
	struct stmt_slot {
		sqlite3_stmt *s;
		uint64_t hash, used;
	} stmts[STMT_CACHE];
	uint64_t stmt_tick;
};

static int sql_err(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_CONSTRAINT:
		return -NB_E_CONFLICT;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -NB_E_UNAVAILABLE;
	case SQLITE_NOMEM:
		return -ENOMEM;
	default:
		return -NB_E_INTERNAL;
	}
}

static uint64_t sql_hash(const char *sql)
{
	uint64_t h = 14695981039346656037ull;

	for (; *sql; sql++)
		h = (h ^ (unsigned char)*sql) * 1099511628211ull;
	return h;
}

/* The compiled statement of sql, from the cache or compiled now and kept
 * (under st->lock). Give it back with stmt_done. */
static int stmt_get(struct nb_store *st, const char *sql, sqlite3_stmt **out)
{
	uint64_t h = sql_hash(sql);
	struct stmt_slot *victim = &st->stmts[0];
	sqlite3_stmt *s;
	int rc;

	for (int i = 0; i < STMT_CACHE; i++) {
		struct stmt_slot *c = &st->stmts[i];
		if (c->s && c->hash == h && !strcmp(sqlite3_sql(c->s), sql)) {
			c->used = ++st->stmt_tick;
			*out = c->s;
			return 0;
		}
		if (victim->s && (!c->s || c->used < victim->used))
			victim = c;
	}
	rc = sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL);
	if (rc != SQLITE_OK)
		return sql_err(rc);
	sqlite3_finalize(victim->s);
	victim->s = s;
	victim->hash = h;
	victim->used = ++st->stmt_tick;
	*out = s;
	return 0;
}

/* Done with a statement of stmt_get: reset (no read transaction left open)
 * and its bindings dropped. */
static void stmt_done(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

/* fmt: one char a parameter: s string (NULL binds NULL), i int64, d double. */
static int stmt_prepare(struct nb_store *st, sqlite3_stmt **out, const char *sql, const char *fmt,
			va_list ap)
{
	sqlite3_stmt *s;
	int rc = stmt_get(st, sql, &s);

	if (rc < 0)
		return rc;
	for (int i = 0; fmt && fmt[i]; i++) {
		switch (fmt[i]) {
		case 's': {
			const char *v = va_arg(ap, const char *);
			rc = v ? sqlite3_bind_text(s, i + 1, v, -1, SQLITE_TRANSIENT)
			       : sqlite3_bind_null(s, i + 1);
			break;
		}
		case 'i':
			rc = sqlite3_bind_int64(s, i + 1, va_arg(ap, int64_t));
			break;
		case 'd':
			rc = sqlite3_bind_double(s, i + 1, va_arg(ap, double));
			break;
		default:
			rc = SQLITE_MISUSE;
		}
		if (rc != SQLITE_OK) {
			stmt_done(s);
			return sql_err(rc);
		}
	}
	*out = s;
	return 0;
}

static json_t *row_json(sqlite3_stmt *s)
{
	json_t *o = json_object();
	int n = sqlite3_column_count(s);

	for (int i = 0; i < n; i++) {
		const char *name = sqlite3_column_name(s, i);
		json_t *v;
		switch (sqlite3_column_type(s, i)) {
		case SQLITE_INTEGER:
			v = json_integer(sqlite3_column_int64(s, i));
			break;
		case SQLITE_FLOAT:
			v = json_real(sqlite3_column_double(s, i));
			break;
		case SQLITE_NULL:
			v = json_null();
			break;
		default:
			v = json_stringn((const char *)sqlite3_column_text(s, i),
					 (size_t)sqlite3_column_bytes(s, i));
			if (!v)
				v = json_string("");
		}
		json_object_set_new(o, name, v);
	}
	return o;
}

/* Rows as a JSON array (caller decrefs *out). */
static int q_rows_ap(struct nb_store *st, json_t **out, const char *sql, const char *fmt,
		     va_list ap)
{
	sqlite3_stmt *s;
	json_t *arr;
	int r, rc;

	pthread_mutex_lock(&st->lock);
	r = stmt_prepare(st, &s, sql, fmt, ap);
	if (r < 0) {
		pthread_mutex_unlock(&st->lock);
		return r;
	}
	arr = json_array();
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		json_array_append_new(arr, row_json(s));
	r = sql_err(rc);
	stmt_done(s);
	pthread_mutex_unlock(&st->lock);
	if (r < 0) {
		json_decref(arr);
		return r;
	}
	*out = arr;
	return 0;
}

static int q_rows(struct nb_store *st, json_t **out, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = q_rows_ap(st, out, sql, fmt, ap);
	va_end(ap);
	return r;
}

/* First row (caller decrefs *out) or -NB_E_NOT_FOUND. */
static int q_row_ap(struct nb_store *st, json_t **out, const char *sql, const char *fmt,
		    va_list ap)
{
	sqlite3_stmt *s;
	int r, rc;

	pthread_mutex_lock(&st->lock);
	r = stmt_prepare(st, &s, sql, fmt, ap);
	if (r < 0) {
		pthread_mutex_unlock(&st->lock);
		return r;
	}
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*out = row_json(s);
		r = 0;
	} else {
		r = rc == SQLITE_DONE ? -NB_E_NOT_FOUND : sql_err(rc);
	}
	stmt_done(s);
	pthread_mutex_unlock(&st->lock);
	return r;
}

static int q_row(struct nb_store *st, json_t **out, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = q_row_ap(st, out, sql, fmt, ap);
	va_end(ap);
	return r;
}

/* Number of rows changed, or a negative error. A change bumps the epoch
 * (after the commit, inside a transaction) when bump is set. */
static int q_exec_ap(struct nb_store *st, bool bump, const char *sql, const char *fmt, va_list ap)
{
	sqlite3_stmt *s;
	int r, rc;

	pthread_mutex_lock(&st->lock);
	r = stmt_prepare(st, &s, sql, fmt, ap);
	if (r < 0) {
		pthread_mutex_unlock(&st->lock);
		return r;
	}
	rc = sqlite3_step(s);
	r = sql_err(rc);
	if (r == 0)
		r = sqlite3_changes(st->db);
	stmt_done(s);
	if (r > 0 && bump) {
		if (st->depth)
			st->wrote = true;
		else
			atomic_fetch_add(&st->epoch, 1);
	}
	pthread_mutex_unlock(&st->lock);
	return r;
}

static int q_exec(struct nb_store *st, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = q_exec_ap(st, true, sql, fmt, ap);
	va_end(ap);
	return r;
}

/* As q_exec, for a change no cached answer shows (the epoch stays). */
static int q_exec_unseen(struct nb_store *st, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = q_exec_ap(st, false, sql, fmt, ap);
	va_end(ap);
	return r;
}

/* For the other files of the store (store_internal.h). */
int nb_store_q_rows(struct nb_store *st, json_t **out, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = q_rows_ap(st, out, sql, fmt, ap);
	va_end(ap);
	return r;
}

int nb_store_q_row(struct nb_store *st, json_t **out, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = q_row_ap(st, out, sql, fmt, ap);
	va_end(ap);
	return r;
}

int nb_store_q_exec(struct nb_store *st, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = q_exec_ap(st, true, sql, fmt, ap);
	va_end(ap);
	return r;
}

uint64_t nb_store_epoch(struct nb_store *st)
{
	return atomic_load(&st->epoch);
}

static int q_int(struct nb_store *st, int64_t *out, const char *sql, const char *fmt,
		 const char *arg)
{
	json_t *row;
	int r = q_row(st, &row, sql, fmt, arg);

	if (r < 0)
		return r;
	*out = json_integer_value(json_object_get(row, "n"));
	json_decref(row);
	return 0;
}

static int store_migrate(struct nb_store *st)
{
	int version = nb_store_schema_version(st), known = 0;
	char *errmsg = NULL;

	while (nb_store_migrations[known])
		known++;
	if (version > known)
		return -EPROTO; /* written by a newer nubod: never downgrade it */

	for (int i = version; nb_store_migrations[i]; i++) {
		char sql[64];
		int rc = sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(st->db, nb_store_migrations[i], NULL, NULL, &errmsg);
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", i + 1);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(st->db, sql, NULL, NULL, &errmsg);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(st->db, "COMMIT", NULL, NULL, &errmsg);
		sqlite3_free(errmsg);
		errmsg = NULL;
		if (rc != SQLITE_OK) {
			sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
			return -NB_E_INTERNAL;
		}
	}
	return 0;
}

int nb_store_schema_version(struct nb_store *st)
{
	sqlite3_stmt *s;
	int v = 0;

	pthread_mutex_lock(&st->lock);
	if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK) {
		if (sqlite3_step(s) == SQLITE_ROW)
			v = sqlite3_column_int(s, 0);
		sqlite3_finalize(s);
	}
	pthread_mutex_unlock(&st->lock);
	return v;
}

int nb_store_open(const char *path, struct nb_store **out)
{
	struct nb_store *st = calloc(1, sizeof(*st));
	pthread_mutexattr_t attr;
	int r;

	if (!st)
		return -ENOMEM;
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&st->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	/* no mutex of SQLite's own on the connection: every use of st->db is
	 * under st->lock already (each sqlite3_column_* call would otherwise
	 * take and release one more lock) */
	if (sqlite3_open_v2(path, &st->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		r = -NB_E_INTERNAL;
		goto fail;
	}
	sqlite3_busy_timeout(st->db, 5000);
	if (sqlite3_exec(st->db,
			 "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
			 "PRAGMA foreign_keys = ON;",
			 NULL, NULL, NULL) != SQLITE_OK) {
		r = -NB_E_INTERNAL;
		goto fail;
	}
	r = store_migrate(st);
	if (r < 0)
		goto fail;
	*out = st;
	return 0;
fail:
	nb_store_close(st);
	return r;
}

void nb_store_close(struct nb_store *st)
{
	if (!st)
		return;
	for (int i = 0; i < STMT_CACHE; i++)
		sqlite3_finalize(st->stmts[i].s);
	sqlite3_close(st->db);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

int nb_store_begin(struct nb_store *st)
{
	int rc;

	pthread_mutex_lock(&st->lock);
	if (st->depth++ > 0)
		return 0;
	st->failed = false;
	st->wrote = false;
	rc = sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		st->depth--;
		pthread_mutex_unlock(&st->lock);
		return sql_err(rc);
	}
	return 0;
}

int nb_store_commit(struct nb_store *st)
{
	int rc = SQLITE_OK;

	if (--st->depth == 0) {
		rc = st->failed ? SQLITE_ABORT : sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		else if (st->wrote)
			atomic_fetch_add(&st->epoch, 1);
	}
	pthread_mutex_unlock(&st->lock);
	return rc == SQLITE_ABORT ? -NB_E_CONFLICT : sql_err(rc);
}

void nb_store_rollback(struct nb_store *st)
{
	if (--st->depth == 0)
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	else
		st->failed = true;
	pthread_mutex_unlock(&st->lock);
}

/* ---- accounts and tokens ---- */

int nb_store_account_ensure(struct nb_store *st, const char *name, char id_out[32])
{
	json_t *row;
	char id[32];
	int r;

	r = q_row(st, &row, "SELECT id FROM accounts WHERE name = ?", "s", name);
	if (r == 0) {
		nb_strlcpy(id_out, nb_json_str_or(row, "id"), 32);
		json_decref(row);
		return 0;
	}
	if (r != -NB_E_NOT_FOUND)
		return r;
	nb_id_new("acct", id, sizeof(id));
	r = q_exec(st, "INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)", "ssi", id,
		   name, nb_wall_ms());
	if (r < 0)
		return r;
	nb_strlcpy(id_out, id, 32);
	return 0;
}

int nb_store_token_add(struct nb_store *st, const char *token, const char *account_id,
		       const char *role)
{
	char hash[65];
	int r;

	nb_sha256_hex(token, strlen(token), hash);
	r = q_exec(st,
		   "INSERT INTO tokens (token_sha256, account_id, role, created_at)"
		   " VALUES (?, ?, ?, ?)",
		   "sssi", hash, account_id, role, nb_wall_ms());
	return r < 0 ? r : 0;
}

int nb_store_tokens_drop(struct nb_store *st, const char *account_id)
{
	int r = q_exec(st, "DELETE FROM tokens WHERE account_id = ?", "s", account_id);

	return r < 0 ? r : 0;
}

int nb_store_token_lookup(struct nb_store *st, const char *token, json_t **out)
{
	char hash[65];

	nb_sha256_hex(token, strlen(token), hash);
	return q_row(st, out,
		     "SELECT t.account_id, t.role, a.name AS account FROM tokens t"
		     " JOIN accounts a ON a.id = t.account_id WHERE t.token_sha256 = ?",
		     "s", hash);
}

/* ---- instance types ---- */

int nb_store_types_list(struct nb_store *st, json_t **out)
{
	return q_rows(st, out,
		      "SELECT * FROM instance_types ORDER BY vcpus, memory_mb, name", NULL);
}

int nb_store_type_get(struct nb_store *st, const char *name, json_t **out)
{
	return q_row(st, out, "SELECT * FROM instance_types WHERE name = ?", "s", name);
}

int nb_store_type_put(struct nb_store *st, const char *name, int64_t vcpus, int64_t memory_mb,
		      int64_t disk_gb, int64_t net_mbps, double price)
{
	int r = q_exec(st,
		       "INSERT INTO instance_types (name, vcpus, memory_mb, disk_gb, net_mbps,"
		       " price_per_hour) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE"
		       " SET vcpus = excluded.vcpus, memory_mb = excluded.memory_mb,"
		       " disk_gb = excluded.disk_gb, net_mbps = excluded.net_mbps,"
		       " price_per_hour = excluded.price_per_hour",
		       "siiiid", name, vcpus, memory_mb, disk_gb, net_mbps, price);
	return r < 0 ? r : 0;
}

int nb_store_type_delete(struct nb_store *st, const char *name)
{
	int r = q_exec(st, "DELETE FROM instance_types WHERE name = ?", "s", name);

	return r < 0 ? r : r == 0 ? -NB_E_NOT_FOUND : 0;
}

int nb_store_types_count(struct nb_store *st, int64_t *n)
{
	return q_int(st, n, "SELECT count(*) AS n FROM instance_types", NULL, NULL);
}

/* ---- hosts ---- */

int nb_store_host_upsert(struct nb_store *st, const json_t *h, char id_out[32])
{
	json_t *row;
	char id[32];
	int r;

	r = q_row(st, &row, "SELECT id FROM hosts WHERE name = ?", "s", nb_json_str_or(h, "name"));
	if (r == 0) {
		nb_strlcpy(id, nb_json_str_or(row, "id"), sizeof(id));
		json_decref(row);
	} else if (r == -NB_E_NOT_FOUND) {
		nb_id_new("h", id, sizeof(id));
	} else {
		return r;
	}
	r = q_exec(st,
		   "INSERT INTO hosts (id, name, address, agent_token, accel, qemu_version, vcpus,"
		   " memory_mb, disk_gb, cidr, last_seen, created_at)"
		   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)"
		   " ON CONFLICT (id) DO UPDATE SET address = ?3, agent_token = ?4, accel = ?5,"
		   " qemu_version = ?6, vcpus = ?7, memory_mb = ?8, disk_gb = ?9, cidr = ?10,"
		   " last_seen = ?11",
		   "ssssssiiisi", id, nb_json_str_or(h, "name"), nb_json_str_or(h, "address"),
		   nb_json_str_or(h, "agent_token"), nb_json_str_or(h, "accel"),
		   nb_json_str_or(h, "qemu_version"), nb_json_int(h, "vcpus", 0),
		   nb_json_int(h, "memory_mb", 0), nb_json_int(h, "disk_gb", 0),
		   nb_json_str_or(h, "cidr"), nb_wall_ms());
	if (r < 0)
		return r;
	nb_strlcpy(id_out, id, 32);
	return 0;
}

int nb_store_host_get(struct nb_store *st, const char *id, json_t **out)
{
	return q_row(st, out, "SELECT * FROM hosts WHERE id = ?", "s", id);
}

int nb_store_host_by_token(struct nb_store *st, const char *agent_token, json_t **out)
{
	return q_row(st, out, "SELECT * FROM hosts WHERE agent_token = ?", "s", agent_token);
}

int nb_store_hosts_list(struct nb_store *st, json_t **out)
{
	return q_rows(st, out,
		      "SELECT h.*, (SELECT count(*) FROM instances i WHERE i.host_id = h.id AND"
		      "   i.state NOT IN ('terminated')) AS instances,"
		      " (SELECT coalesce(sum(vcpus), 0) FROM instances i WHERE i.host_id = h.id"
		      "   AND i.state NOT IN ('stopped', 'terminated')) AS used_vcpus,"
		      " (SELECT coalesce(sum(memory_mb), 0) FROM instances i WHERE i.host_id = h.id"
		      "   AND i.state NOT IN ('stopped', 'terminated')) AS used_memory_mb"
		      " FROM hosts h ORDER BY h.name",
		      NULL);
}

int nb_store_host_seen(struct nb_store *st, const char *id, int64_t wall_ms)
{
	/* Every agent posts this twice in 5 s. No EC2 answer shows a host's
	 * last_seen, so it leaves the epoch (and the Describe cache) alone. */
	int r = q_exec_unseen(st, "UPDATE hosts SET last_seen = ? WHERE id = ?", "is", wall_ms, id);

	return r < 0 ? r : 0;
}

int nb_store_host_bump(struct nb_store *st, const char *id, int64_t *gen_out)
{
	int r = q_exec(st, "UPDATE hosts SET generation = generation + 1 WHERE id = ?", "s", id);

	if (r < 0)
		return r;
	if (gen_out)
		return q_int(st, gen_out, "SELECT generation AS n FROM hosts WHERE id = ?", "s",
			     id);
	return 0;
}

/* ---- images ---- */

int nb_store_image_insert(struct nb_store *st, const json_t *im)
{
	int r = q_exec(
		st,
		"INSERT INTO images (id, account_id, name, os, release, arch, format, size,"
		" file_size, sha256, boot_mode, kernel_sha256, initrd_sha256, cmdline, state,"
		" created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		"sssssssiissssssi", nb_json_str_or(im, "id"), nb_json_str_or(im, "account_id"),
		nb_json_str_or(im, "name"), nb_json_str_or(im, "os"),
		nb_json_str_or(im, "release"), nb_json_str_or(im, "arch"),
		nb_json_str_or(im, "format"), nb_json_int(im, "size", 0),
		nb_json_int(im, "file_size", 0), nb_json_str_or(im, "sha256"),
		nb_json_str_or(im, "boot_mode"), nb_json_str(im, "kernel_sha256"),
		nb_json_str(im, "initrd_sha256"), nb_json_str(im, "cmdline"),
		nb_json_str_or(im, "state"), nb_wall_ms());
	if (r < 0)
		return r;
	r = q_exec(st, "UPDATE images SET description = ?, source_instance = ? WHERE id = ?", "sss",
		   nb_json_str_or(im, "description"), nb_json_str(im, "source_instance"),
		   nb_json_str_or(im, "id"));
	return r < 0 ? r : 0;
}

int nb_store_image_get(struct nb_store *st, const char *account_id, const char *ref, json_t **out)
{
	return q_row(st, out,
		     "SELECT * FROM images WHERE (id = ?2 OR name = ?2) AND account_id = ?1"
		     " ORDER BY id = ?2 DESC LIMIT 1",
		     "ss", account_id, ref);
}

int nb_store_image_by_id(struct nb_store *st, const char *id, json_t **out)
{
	return q_row(st, out, "SELECT * FROM images WHERE id = ?", "s", id);
}

int nb_store_images_list(struct nb_store *st, const char *account_id, json_t **out)
{
	return q_rows(st, out, "SELECT * FROM images WHERE account_id = ? ORDER BY name", "s",
		      account_id);
}

int nb_store_image_delete(struct nb_store *st, const char *id)
{
	int r = q_exec(st, "DELETE FROM images WHERE id = ?", "s", id);

	return r < 0 ? r : r == 0 ? -NB_E_NOT_FOUND : 0;
}

int nb_store_image_in_use(struct nb_store *st, const char *id, int64_t *n)
{
	return q_int(st, n,
		     "SELECT count(*) AS n FROM instances WHERE image_id = ? AND"
		     " state != 'terminated'",
		     "s", id);
}

int nb_store_blob_in_use(struct nb_store *st, const char *sha256, int64_t *n)
{
	return q_int(st, n,
		     "SELECT count(*) AS n FROM images WHERE sha256 = ?1 OR kernel_sha256 = ?1"
		     " OR initrd_sha256 = ?1",
		     "s", sha256);
}

/* ---- instances ---- */

#define INSTANCE_COLUMNS                                                                   \
	"i.id, i.account_id, i.reservation_id, i.name, i.type, i.image_id,"                \
	" coalesce(im.name, '') AS image_name, i.host_id, coalesce(h.name, '') AS host_name," \
	" i.state, i.desired_state, i.start_seq, i.reboot_seq, i.ip, i.mac, i.launch_index," \
	" i.vcpus, i.memory_mb, i.disk_gb, i.net_mbps, i.state_reason, i.created_at,"       \
	" i.updated_at, i.terminated_at, i.key_name, i.az, i.launched_at, i.subnet_id,"      \
	" i.vpc_id, i.http_tokens, i.http_hop_limit, i.http_endpoint"
#define INSTANCE_FROM                                                                      \
	" FROM instances i LEFT JOIN images im ON im.id = i.image_id"                      \
	" LEFT JOIN hosts h ON h.id = i.host_id"

int nb_store_instance_insert(struct nb_store *st, const json_t *in)
{
	int64_t now = nb_wall_ms();
	int r = q_exec(
		st,
		"INSERT INTO instances (id, account_id, reservation_id, name, type, image_id,"
		" host_id, state, desired_state, start_seq, reboot_seq, ip, mac, launch_index,"
		" vcpus, memory_mb, disk_gb, net_mbps, user_data, created_at, updated_at)"
		" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		"sssssssssssiiiiisii", nb_json_str_or(in, "id"), nb_json_str_or(in, "account_id"),
		nb_json_str_or(in, "reservation_id"), nb_json_str_or(in, "name"),
		nb_json_str_or(in, "type"), nb_json_str_or(in, "image_id"),
		nb_json_str(in, "host_id"), nb_json_str_or(in, "state"),
		nb_json_str_or(in, "desired_state"), nb_json_str(in, "ip"),
		nb_json_str(in, "mac"), nb_json_int(in, "launch_index", 0),
		nb_json_int(in, "vcpus", 0), nb_json_int(in, "memory_mb", 0),
		nb_json_int(in, "disk_gb", 0), nb_json_int(in, "net_mbps", 0),
		nb_json_str_or(in, "user_data"), now, now);
	return r < 0 ? r : 0;
}

int nb_store_instance_get(struct nb_store *st, const char *account_id, const char *id,
			  json_t **out)
{
	if (account_id)
		return q_row(st, out,
			     "SELECT " INSTANCE_COLUMNS ", i.user_data" INSTANCE_FROM
			     " WHERE i.id = ? AND i.account_id = ?",
			     "ss", id, account_id);
	return q_row(st, out,
		     "SELECT " INSTANCE_COLUMNS ", i.user_data" INSTANCE_FROM " WHERE i.id = ?",
		     "s", id);
}

int nb_store_instances_list(struct nb_store *st, const char *account_id, const char *state,
			    int include_terminated, json_t **out)
{
	return q_rows(st, out,
		      "SELECT " INSTANCE_COLUMNS INSTANCE_FROM
		      " WHERE (?1 IS NULL OR i.account_id = ?1) AND (?2 IS NULL OR i.state = ?2)"
		      " AND (?3 OR i.state != 'terminated') ORDER BY i.created_at, i.launch_index",
		      "ssi", account_id, state, (int64_t)include_terminated);
}

int nb_store_instances_on_host(struct nb_store *st, const char *host_id, json_t **out)
{
	return q_rows(st, out,
		      "SELECT " INSTANCE_COLUMNS ", i.user_data" INSTANCE_FROM
		      " WHERE i.host_id = ? AND (i.state != 'terminated')"
		      " ORDER BY i.created_at, i.launch_index",
		      "s", host_id);
}

/* ---- instances for EC2's Describe answers ---- */

struct nb_store_arena {
	struct nb_store_arena *next;
	size_t used, cap;
	_Alignas(max_align_t) char data[];
};

#define ARENA_BLOCK (64u << 10)

/* n bytes (aligned for pointers) that live as long as l; NULL past the
 * ceiling or out of memory. */
static void *arena_alloc(struct nb_store_instance_list *l, size_t n)
{
	struct nb_store_arena *a = l->arena;
	size_t off = a ? (a->used + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1) : 0;

	if (!a || off + n > a->cap) {
		size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
		if (l->bytes + cap > NB_STORE_LIST_MAX_BYTES)
			return NULL;
		a = malloc(sizeof(*a) + cap);
		if (!a)
			return NULL;
		a->next = l->arena;
		a->used = 0;
		a->cap = cap;
		l->arena = a;
		l->bytes += cap;
		off = 0;
	}
	a->used = off + n;
	return a->data + off;
}

/* A copy of column i of s in the arena; "" for NULL unless null_ok (then
 * NULL). *fail is set when out of room. */
static const char *col_str(struct nb_store_instance_list *l, sqlite3_stmt *s, int i, bool null_ok,
			   bool *fail)
{
	const unsigned char *v;
	size_t n;
	char *p;

	if (sqlite3_column_type(s, i) == SQLITE_NULL)
		return null_ok ? NULL : "";
	v = sqlite3_column_text(s, i);
	n = (size_t)sqlite3_column_bytes(s, i);
	if (!v || !n)
		return "";
	/* strings need no alignment: take the bytes right after the last use */
	if (l->arena && l->arena->used + n + 1 <= l->arena->cap) {
		p = l->arena->data + l->arena->used;
		l->arena->used += n + 1;
	} else if (!(p = arena_alloc(l, n + 1))) {
		*fail = true;
		return "";
	}
	memcpy(p, v, n);
	p[n] = '\0';
	return p;
}

#define LOAD_COLUMNS                                                                       \
	"SELECT i.id, i.reservation_id, i.type, i.image_id, i.state, i.ip, i.key_name,"    \
	" i.state_reason, i.az, i.launch_index, i.vcpus, i.created_at, t.key, t.value,"    \
	" i.http_tokens, i.http_hop_limit, i.http_endpoint,"                               \
	" n.id, n.subnet_id, n.vpc_id, n.mac, n.ip, n.device_index, n.created_at,"         \
	" a.public_ip, a.id, a.association_id"                                             \
	" FROM instances i LEFT JOIN tags t ON t.resource_id = i.id"                       \
	" LEFT JOIN network_interfaces n ON n.instance_id = i.id AND n.device_index = 0"   \
	" AND n.account_id = i.account_id LEFT JOIN addresses a ON a.eni_id = n.id"

static int eni_cmp(const void *a, const void *b)
{
	const struct nb_store_instance *x = *(const struct nb_store_instance *const *)a;
	const struct nb_store_instance *y = *(const struct nb_store_instance *const *)b;

	return strcmp(x->eni->id, y->eni->id);
}

/* The security groups of the interfaces of l->v[first..] (under st->lock):
 * one query ordered by interface id, merged with those instances sorted the
 * same way. */
static int load_groups(struct nb_store *st, const char *account_id, const char *id,
		       struct nb_store_instance_list *l, size_t first)
{
	static const char *const sql =
		"SELECT e.eni_id, e.group_id, g.name FROM eni_groups e"
		" JOIN security_groups g ON g.id = e.group_id"
		" JOIN network_interfaces n ON n.id = e.eni_id"
		" WHERE g.account_id = ?1 AND n.account_id = ?1 AND n.device_index = 0"
		" AND (?2 IS NULL OR n.instance_id = ?2)"
		" ORDER BY e.eni_id, g.created_at, g.id";
	struct nb_store_instance **by = NULL;
	struct nb_store_group *gs = NULL;
	size_t nby = 0, k = 0, ng = 0, gcap = 0;
	sqlite3_stmt *s;
	bool fail = false;
	int rc, r;

	for (size_t i = first; i < l->n; i++)
		nby += l->v[i].eni != NULL;
	if (!nby)
		return 0;
	by = malloc(nby * sizeof(*by));
	if (!by)
		return -ENOMEM;
	nby = 0;
	for (size_t i = first; i < l->n; i++)
		if (l->v[i].eni)
			by[nby++] = &l->v[i];
	qsort(by, nby, sizeof(*by), eni_cmp);
	r = stmt_get(st, sql, &s);
	if (r < 0) {
		free(by);
		return r;
	}
	sqlite3_bind_text(s, 1, account_id, -1, SQLITE_STATIC);
	if (id)
		sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
	for (;;) {
		rc = sqlite3_step(s);
		const char *eid = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0) : NULL;
		/* the groups gathered belong to by[k]: into the arena */
		if (ng && (!eid || strcmp(eid, by[k]->eni->id))) {
			struct nb_store_group *gv = arena_alloc(l, ng * sizeof(*gv));
			if (!gv) {
				fail = true;
				break;
			}
			memcpy(gv, gs, ng * sizeof(*gv));
			by[k]->eni->groups = gv;
			by[k]->eni->ngroups = ng;
			ng = 0;
		}
		if (rc != SQLITE_ROW)
			break;
		while (k < nby && strcmp(by[k]->eni->id, eid) < 0)
			k++;
		if (k == nby || strcmp(by[k]->eni->id, eid))
			continue; /* an interface not listed */
		if (ng == gcap) {
			size_t cap = gcap ? gcap * 2 : 8;
			void *p = realloc(gs, cap * sizeof(*gs));
			if (!p) {
				fail = true;
				break;
			}
			gs = p;
			gcap = cap;
		}
		gs[ng].group_id = col_str(l, s, 1, false, &fail);
		gs[ng].name = col_str(l, s, 2, false, &fail);
		ng++;
		if (fail)
			break;
	}
	r = fail ? -E2BIG : sql_err(rc);
	stmt_done(s);
	free(gs);
	free(by);
	return r;
}

int nb_store_instances_load(struct nb_store *st, const char *account_id, const char *id,
			    int include_terminated, struct nb_store_instance_list *l)
{
	static const char *const sql_all =
		LOAD_COLUMNS " WHERE i.account_id = ?1 AND (?2 OR i.state != 'terminated')"
			     " ORDER BY i.created_at, i.launch_index, i.id, t.key";
	static const char *const sql_one =
		LOAD_COLUMNS " WHERE i.id = ?3 AND i.account_id = ?1 AND (?2 OR i.state != 'terminated')"
			     " ORDER BY t.key";
	struct nb_store_tag *tags = NULL, *tv;
	size_t ntags = 0, tcap = 0;
	struct nb_store_instance *cur = NULL;
	size_t first = l->n;
	sqlite3_stmt *s;
	bool fail = false;
	int rc, r;

	if (!account_id)
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	r = stmt_get(st, id ? sql_one : sql_all, &s);
	if (r < 0) {
		pthread_mutex_unlock(&st->lock);
		return r;
	}
	if (sqlite3_bind_text(s, 1, account_id, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_int(s, 2, include_terminated ? 1 : 0) != SQLITE_OK ||
	    (id && sqlite3_bind_text(s, 3, id, -1, SQLITE_STATIC) != SQLITE_OK)) {
		stmt_done(s);
		pthread_mutex_unlock(&st->lock);
		return -NB_E_INTERNAL;
	}
	for (;;) {
		rc = sqlite3_step(s);
		const unsigned char *rid = rc == SQLITE_ROW ? sqlite3_column_text(s, 0) : NULL;
		/* a new instance (or the end): the last one's tags into the arena */
		if (cur && (!rid || strcmp((const char *)rid, cur->id))) {
			if (ntags) {
				tv = arena_alloc(l, ntags * sizeof(*tv));
				if (!tv) {
					fail = true;
					break;
				}
				memcpy(tv, tags, ntags * sizeof(*tv));
				cur->tags = tv;
				cur->ntags = ntags;
			}
			ntags = 0;
			cur = NULL;
		}
		if (rc != SQLITE_ROW)
			break;
		if (!cur) {
			if (l->n == l->cap) {
				size_t cap = l->cap ? l->cap * 2 : 64;
				void *p = realloc(l->v, cap * sizeof(*l->v));
				if (!p || l->bytes + cap * sizeof(*l->v) > NB_STORE_LIST_MAX_BYTES) {
					if (p)
						l->v = p;
					fail = true;
					break;
				}
				l->v = p;
				l->cap = cap;
			}
			cur = &l->v[l->n++];
			*cur = (struct nb_store_instance){0};
			cur->id = col_str(l, s, 0, false, &fail);
			cur->reservation_id = col_str(l, s, 1, false, &fail);
			cur->type = col_str(l, s, 2, false, &fail);
			cur->image_id = col_str(l, s, 3, false, &fail);
			cur->state = col_str(l, s, 4, false, &fail);
			cur->ip = col_str(l, s, 5, false, &fail);
			cur->key_name = col_str(l, s, 6, true, &fail);
			cur->state_reason = col_str(l, s, 7, false, &fail);
			cur->az = col_str(l, s, 8, false, &fail);
			cur->launch_index = sqlite3_column_int64(s, 9);
			cur->vcpus = sqlite3_column_int64(s, 10);
			cur->created_at = sqlite3_column_int64(s, 11);
			cur->http_tokens = col_str(l, s, 14, false, &fail);
			cur->http_hop_limit = sqlite3_column_int64(s, 15);
			cur->http_endpoint = col_str(l, s, 16, false, &fail);
			if (sqlite3_column_type(s, 17) != SQLITE_NULL) {
				struct nb_store_eni *n = arena_alloc(l, sizeof(*n));
				if (!n) {
					fail = true;
					break;
				}
				*n = (struct nb_store_eni){0};
				n->id = col_str(l, s, 17, false, &fail);
				n->subnet_id = col_str(l, s, 18, false, &fail);
				n->vpc_id = col_str(l, s, 19, false, &fail);
				n->mac = col_str(l, s, 20, false, &fail);
				n->ip = col_str(l, s, 21, false, &fail);
				n->device_index = sqlite3_column_int64(s, 22);
				n->created_at = sqlite3_column_int64(s, 23);
				n->public_ip = col_str(l, s, 24, true, &fail);
				n->allocation_id = col_str(l, s, 25, true, &fail);
				n->association_id = col_str(l, s, 26, true, &fail);
				cur->eni = n;
			}
			if (fail)
				break;
		}
		if (sqlite3_column_type(s, 12) != SQLITE_NULL) {
			if (ntags == tcap) {
				size_t cap = tcap ? tcap * 2 : 16;
				void *p = realloc(tags, cap * sizeof(*tags));
				if (!p) {
					fail = true;
					break;
				}
				tags = p;
				tcap = cap;
			}
			tags[ntags].key = col_str(l, s, 12, false, &fail);
			tags[ntags].value = col_str(l, s, 13, false, &fail);
			ntags++;
			if (fail)
				break;
		}
	}
	r = fail ? -E2BIG : sql_err(rc);
	if (fail && cur) /* the instance being read stays out, with its tags */
		l->n--;
	stmt_done(s);
	if (r == 0)
		r = load_groups(st, account_id, id, l, first);
	pthread_mutex_unlock(&st->lock);
	free(tags);
	return r;
}

void nb_store_instance_list_free(struct nb_store_instance_list *l)
{
	if (!l)
		return;
	while (l->arena) {
		struct nb_store_arena *n = l->arena->next;
		free(l->arena);
		l->arena = n;
	}
	free(l->v);
	*l = (struct nb_store_instance_list){0};
}

int nb_store_instance_update(struct nb_store *st, const char *id, const json_t *patch)
{
	static const char *const cols[] = {"state",	    "desired_state", "start_seq",
					   "reboot_seq",    "state_reason",  "host_id",
					   "terminated_at", "type",	     "vcpus",
					   "memory_mb",	    "disk_gb",	     "net_mbps",
					   "launched_at"};
	int r = 0, any = 0;

	if (nb_store_begin(st) < 0)
		return -NB_E_UNAVAILABLE;
	for (size_t i = 0; i < NB_ARRAY_SIZE(cols) && r >= 0; i++) {
		json_t *v = json_object_get(patch, cols[i]);
		char sql[128];
		if (!v)
			continue;
		any = 1;
		snprintf(sql, sizeof(sql), "UPDATE instances SET %s = ?, updated_at = ? WHERE id = ?",
			 cols[i]);
		if (json_is_integer(v))
			r = q_exec(st, sql, "iis", (int64_t)json_integer_value(v), nb_wall_ms(), id);
		else if (json_is_null(v))
			r = q_exec(st, sql, "sis", (const char *)NULL, nb_wall_ms(), id);
		else
			r = q_exec(st, sql, "sis", json_string_value(v), nb_wall_ms(), id);
		if (r == 0)
			r = -NB_E_NOT_FOUND;
	}
	if (r < 0) {
		nb_store_rollback(st);
		return r;
	}
	(void)any;
	return nb_store_commit(st);
}

int nb_store_instance_delete(struct nb_store *st, const char *id)
{
	int r = q_exec(st, "DELETE FROM instances WHERE id = ?", "s", id);

	return r < 0 ? r : 0;
}

int nb_store_host_usage(struct nb_store *st, const char *host_id, json_t **out)
{
	return q_row(st, out,
		     "SELECT coalesce(sum(CASE WHEN state NOT IN ('stopped') THEN vcpus END), 0)"
		     " AS vcpus,"
		     " coalesce(sum(CASE WHEN state NOT IN ('stopped') THEN memory_mb END), 0)"
		     " AS memory_mb, coalesce(sum(disk_gb), 0) AS disk_gb, count(*) AS instances"
		     " FROM instances WHERE host_id = ? AND state != 'terminated'",
		     "s", host_id);
}

int nb_store_host_ips(struct nb_store *st, const char *host_id, json_t **out)
{
	return q_rows(st, out,
		      "SELECT ip FROM instances WHERE host_id = ? AND state != 'terminated'"
		      " AND ip IS NOT NULL",
		      "s", host_id);
}

int nb_store_purge_terminated(struct nb_store *st, int64_t before_wall_ms)
{
	int r = q_exec(st,
		       "DELETE FROM instances WHERE state = 'terminated' AND terminated_at < ?",
		       "i", before_wall_ms);

	return r < 0 ? r : 0;
}

/* ---- reservations ---- */

int nb_store_reservation_insert(struct nb_store *st, const char *id, const char *account_id,
				const char *client_token, const char *request_hash)
{
	int r = q_exec(st,
		       "INSERT INTO reservations (id, account_id, client_token, request_hash,"
		       " created_at) VALUES (?, ?, ?, ?, ?)",
		       "ssssi", id, account_id, client_token, request_hash, nb_wall_ms());
	return r < 0 ? r : 0;
}

int nb_store_reservation_by_token(struct nb_store *st, const char *account_id,
				  const char *client_token, json_t **out)
{
	return q_row(st, out,
		     "SELECT id, request_hash FROM reservations WHERE account_id = ? AND"
		     " client_token = ?",
		     "ss", account_id, client_token);
}

int nb_store_reservation_instances(struct nb_store *st, const char *reservation_id, json_t **out)
{
	return q_rows(st, out,
		      "SELECT " INSTANCE_COLUMNS INSTANCE_FROM
		      " WHERE i.reservation_id = ? ORDER BY i.launch_index",
		      "s", reservation_id);
}

/* ---- schema 2 ---- */

int nb_store_account_get(struct nb_store *st, const char *ref, json_t **out)
{
	return q_row(st, out, "SELECT * FROM accounts WHERE id = ?1 OR name = ?1", "s", ref);
}

int nb_store_accounts_list(struct nb_store *st, json_t **out)
{
	return q_rows(st, out, "SELECT * FROM accounts ORDER BY name", NULL);
}

int nb_store_user_add(struct nb_store *st, const char *account_id, const char *name,
		      const char *role, char id_out[32])
{
	char id[32];
	int r;

	nb_id_new("u", id, sizeof(id));
	r = q_exec(st,
		   "INSERT INTO users (id, account_id, name, role, created_at) VALUES (?, ?, ?, ?, ?)",
		   "ssssi", id, account_id, name, role, nb_wall_ms());
	if (r < 0)
		return r;
	nb_strlcpy(id_out, id, 32);
	return 0;
}

int nb_store_user_get(struct nb_store *st, const char *account_id, const char *name,
		      json_t **out)
{
	return q_row(st, out, "SELECT * FROM users WHERE account_id = ? AND name = ?", "ss",
		     account_id, name);
}

int nb_store_users_list(struct nb_store *st, const char *account_id, json_t **out)
{
	return q_rows(st, out,
		      "SELECT u.id, u.name, u.role, u.created_at,"
		      " (SELECT count(*) FROM access_keys k WHERE k.user_id = u.id) AS keys"
		      " FROM users u WHERE u.account_id = ? ORDER BY u.name",
		      "s", account_id);
}

int nb_store_user_set_role(struct nb_store *st, const char *account_id, const char *name,
			   const char *role)
{
	int r = q_exec(st, "UPDATE users SET role = ? WHERE account_id = ? AND name = ?", "sss",
		       role, account_id, name);

	return r < 0 ? r : r == 0 ? -NB_E_NOT_FOUND : 0;
}

int nb_store_user_delete(struct nb_store *st, const char *account_id, const char *name)
{
	/* access_keys.user_id is ON DELETE CASCADE: the user's keys go too */
	int r = q_exec(st, "DELETE FROM users WHERE account_id = ? AND name = ?", "ss", account_id,
		       name);

	return r < 0 ? r : r == 0 ? -NB_E_NOT_FOUND : 0;
}

int nb_store_key_add(struct nb_store *st, const char *key_id, const char *user_id,
		     const char *secret_enc)
{
	int r = q_exec(st,
		       "INSERT INTO access_keys (id, user_id, secret_enc, status, created_at)"
		       " VALUES (?, ?, ?, 'Active', ?)",
		       "sssi", key_id, user_id, secret_enc, nb_wall_ms());
	return r < 0 ? r : 0;
}

int nb_store_key_lookup(struct nb_store *st, const char *key_id, json_t **out)
{
	return q_row(st, out,
		     "SELECT k.id, k.secret_enc, k.status, k.user_id, u.name AS user, u.role,"
		     " u.account_id, a.name AS account FROM access_keys k"
		     " JOIN users u ON u.id = k.user_id JOIN accounts a ON a.id = u.account_id"
		     " WHERE k.id = ?",
		     "s", key_id);
}

int nb_store_keys_list(struct nb_store *st, const char *account_id, json_t **out)
{
	return q_rows(st, out,
		      "SELECT k.id, k.status, k.created_at, u.name AS user, u.role,"
		      " a.name AS account, a.id AS account_id FROM access_keys k"
		      " JOIN users u ON u.id = k.user_id JOIN accounts a ON a.id = u.account_id"
		      " WHERE ?1 IS NULL OR a.id = ?1 ORDER BY a.name, u.name, k.created_at",
		      "s", account_id);
}

int nb_store_key_set_status(struct nb_store *st, const char *key_id, const char *status)
{
	int r = q_exec(st, "UPDATE access_keys SET status = ? WHERE id = ?", "ss", status, key_id);

	return r < 0 ? r : r == 0 ? -NB_E_NOT_FOUND : 0;
}

int nb_store_key_delete(struct nb_store *st, const char *key_id)
{
	int r = q_exec(st, "DELETE FROM access_keys WHERE id = ?", "s", key_id);

	return r < 0 ? r : r == 0 ? -NB_E_NOT_FOUND : 0;
}

int nb_store_tag_put(struct nb_store *st, const char *account_id, const char *resource_id,
		     const char *resource_type, const char *key, const char *value)
{
	int r = q_exec(st,
		       "INSERT INTO tags (account_id, resource_id, resource_type, key, value)"
		       " VALUES (?, ?, ?, ?, ?) ON CONFLICT (resource_id, key) DO UPDATE"
		       " SET value = excluded.value",
		       "sssss", account_id, resource_id, resource_type, key, value);
	return r < 0 ? r : 0;
}

int nb_store_tag_delete(struct nb_store *st, const char *account_id, const char *resource_id,
			const char *key, const char *value)
{
	int r = q_exec(st,
		       "DELETE FROM tags WHERE account_id = ? AND resource_id = ? AND key = ?"
		       " AND (?4 IS NULL OR value = ?4)",
		       "ssss", account_id, resource_id, key, value);
	return r < 0 ? r : 0;
}

int nb_store_tags_list(struct nb_store *st, const char *account_id, json_t **out)
{
	return q_rows(st, out,
		      "SELECT resource_id, resource_type, key, value FROM tags WHERE account_id = ?"
		      " ORDER BY resource_id, key",
		      "s", account_id);
}

int nb_store_tags_of(struct nb_store *st, const char *resource_id, json_t **out)
{
	return q_rows(st, out, "SELECT key, value FROM tags WHERE resource_id = ? ORDER BY key",
		      "s", resource_id);
}

int nb_store_tags_count(struct nb_store *st, const char *resource_id, int64_t *n)
{
	return q_int(st, n, "SELECT count(*) AS n FROM tags WHERE resource_id = ?", "s",
		     resource_id);
}

int nb_store_tags_drop(struct nb_store *st, const char *resource_id)
{
	int r = q_exec(st, "DELETE FROM tags WHERE resource_id = ?", "s", resource_id);

	return r < 0 ? r : 0;
}

int nb_store_keypair_insert(struct nb_store *st, const json_t *kp)
{
	int r = q_exec(st,
		       "INSERT INTO key_pairs (id, account_id, name, fingerprint, public_key,"
		       " key_type, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
		       "ssssssi", nb_json_str_or(kp, "id"), nb_json_str_or(kp, "account_id"),
		       nb_json_str_or(kp, "name"), nb_json_str_or(kp, "fingerprint"),
		       nb_json_str_or(kp, "public_key"), nb_json_str_or(kp, "key_type"),
		       nb_wall_ms());
	return r < 0 ? r : 0;
}

int nb_store_keypair_get(struct nb_store *st, const char *account_id, const char *name,
			 json_t **out)
{
	return q_row(st, out, "SELECT * FROM key_pairs WHERE account_id = ? AND name = ?", "ss",
		     account_id, name);
}

int nb_store_keypairs_list(struct nb_store *st, const char *account_id, json_t **out)
{
	return q_rows(st, out, "SELECT * FROM key_pairs WHERE account_id = ? ORDER BY name", "s",
		      account_id);
}

int nb_store_keypair_delete(struct nb_store *st, const char *account_id, const char *name)
{
	int r = q_exec(st, "DELETE FROM key_pairs WHERE account_id = ? AND name = ?", "ss",
		       account_id, name);

	return r < 0 ? r : 0;
}

int nb_store_image_grant(struct nb_store *st, const char *image_id, const char *grantee)
{
	int r = q_exec(st,
		       "INSERT INTO image_permissions (image_id, grantee) VALUES (?, ?)"
		       " ON CONFLICT DO NOTHING",
		       "ss", image_id, grantee);
	return r < 0 ? r : 0;
}

int nb_store_image_revoke(struct nb_store *st, const char *image_id, const char *grantee)
{
	int r = q_exec(st, "DELETE FROM image_permissions WHERE image_id = ? AND grantee = ?",
		       "ss", image_id, grantee);

	return r < 0 ? r : 0;
}

int nb_store_image_grants(struct nb_store *st, const char *image_id, json_t **out)
{
	return q_rows(st, out,
		      "SELECT grantee FROM image_permissions WHERE image_id = ? ORDER BY grantee",
		      "s", image_id);
}

#define IMAGE_VISIBLE                                                                      \
	"SELECT im.*, EXISTS (SELECT 1 FROM image_permissions p WHERE p.image_id = im.id"   \
	" AND p.grantee = 'all') AS public FROM images im WHERE (im.account_id = ?1 OR"    \
	" EXISTS (SELECT 1 FROM image_permissions p WHERE p.image_id = im.id AND"           \
	" p.grantee IN (?1, 'all')))"

int nb_store_images_visible(struct nb_store *st, const char *account_id, json_t **out)
{
	return q_rows(st, out, IMAGE_VISIBLE " ORDER BY im.name, im.id", "s", account_id);
}

int nb_store_image_visible(struct nb_store *st, const char *account_id, const char *id,
			   json_t **out)
{
	return q_row(st, out, IMAGE_VISIBLE " AND im.id = ?2", "ss", account_id, id);
}

int nb_store_quota_get(struct nb_store *st, const char *account_id, const char *name,
		       int64_t def, int64_t *out)
{
	json_t *row;
	int r = q_row(st, &row, "SELECT value FROM quotas WHERE account_id = ? AND name = ?", "ss",
		      account_id, name);

	if (r == -NB_E_NOT_FOUND) {
		*out = def;
		return 0;
	}
	if (r < 0)
		return r;
	*out = nb_json_int(row, "value", def);
	json_decref(row);
	return 0;
}

int nb_store_quota_set(struct nb_store *st, const char *account_id, const char *name,
		       int64_t value)
{
	int r = q_exec(st,
		       "INSERT INTO quotas (account_id, name, value) VALUES (?, ?, ?)"
		       " ON CONFLICT (account_id, name) DO UPDATE SET value = excluded.value",
		       "ssi", account_id, name, value);
	return r < 0 ? r : 0;
}

int nb_store_account_usage(struct nb_store *st, const char *account_id, json_t **out)
{
	return q_row(st, out,
		     "SELECT (SELECT count(*) FROM instances WHERE account_id = ?1 AND"
		     "  state != 'terminated') AS instances,"
		     " (SELECT coalesce(sum(vcpus), 0) FROM instances WHERE account_id = ?1 AND"
		     "  state != 'terminated') AS vcpus,"
		     " (SELECT coalesce(sum(memory_mb), 0) FROM instances WHERE account_id = ?1 AND"
		     "  state != 'terminated') AS memory_mb,"
		     " (SELECT count(*) FROM images WHERE account_id = ?1) AS images,"
		     " (SELECT count(*) FROM addresses WHERE account_id = ?1) AS addresses",
		     "s", account_id);
}

int nb_store_instance_set_launch(struct nb_store *st, const char *id, const char *key_name,
				 const char *az)
{
	int r = q_exec(st, "UPDATE instances SET key_name = ?, az = ? WHERE id = ?", "sss",
		       key_name, az, id);

	return r < 0 ? r : 0;
}

int nb_store_image_ready(struct nb_store *st, const char *id, const char *sha256,
			 int64_t size, int64_t file_size, const char *state)
{
	int r = q_exec(st,
		       "UPDATE images SET sha256 = coalesce(?, sha256), size = ?, file_size = ?,"
		       " state = ? WHERE id = ?",
		       "siiss", sha256, size, file_size, state, id);

	return r < 0 ? r : r == 0 ? -NB_E_NOT_FOUND : 0;
}

int nb_store_blob_owner_add(struct nb_store *st, const char *sha256, const char *account_id)
{
	int r = q_exec(st,
		       "INSERT INTO blob_owners (sha256, account_id, created_at) VALUES (?, ?, ?)"
		       " ON CONFLICT DO NOTHING",
		       "ssi", sha256, account_id, nb_wall_ms());
	return r < 0 ? r : 0;
}

int nb_store_blob_allowed(struct nb_store *st, const char *sha256, const char *account_id,
			  int *allowed)
{
	int64_t n = 0;
	json_t *row;
	int r = q_row(st, &row,
		      "SELECT (SELECT count(*) FROM blob_owners WHERE sha256 = ?1 AND account_id = ?2)"
		      " + (SELECT count(*) FROM images im WHERE (im.sha256 = ?1 OR"
		      "   im.kernel_sha256 = ?1 OR im.initrd_sha256 = ?1) AND (im.account_id = ?2 OR"
		      "   EXISTS (SELECT 1 FROM image_permissions p WHERE p.image_id = im.id AND"
		      "   p.grantee IN (?2, 'all')))) AS n",
		      "ss", sha256, account_id);

	if (r < 0)
		return r;
	n = nb_json_int(row, "n", 0);
	json_decref(row);
	*allowed = n > 0;
	return 0;
}
