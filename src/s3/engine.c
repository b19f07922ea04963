/* The engine: opening a root, the metadata database, live ids and the
 * sweep, buckets, usage counters. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "s3/engine_internal.h"

/* ---- database helpers ---- */

int s3_sql_err(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -NB_S3_E_SLOW_DOWN;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_FULL:
		return -ENOSPC;
	default:
		return -NB_S3_E_INTERNAL;
	}
}

static int s3_bindv(sqlite3_stmt *s, const char *fmt, va_list ap)
{
	int rc = SQLITE_OK;

	for (int i = 0; fmt && fmt[i]; i++) {
		switch (fmt[i]) {
		case 's': {
			const char *v = va_arg(ap, const char *);
			rc = v ? sqlite3_bind_text(s, i + 1, v, -1, SQLITE_TRANSIENT)
			       : sqlite3_bind_null(s, i + 1);
			break;
		}
		case 'k': {
			const char *v = va_arg(ap, const char *);
			rc = sqlite3_bind_blob(s, i + 1, v, (int)strlen(v), SQLITE_TRANSIENT);
			break;
		}
		case 'b': {
			const void *v = va_arg(ap, const void *);
			size_t n = va_arg(ap, size_t);
			rc = sqlite3_bind_blob(s, i + 1, n ? v : "", (int)n, SQLITE_TRANSIENT);
			break;
		}
		case 'B': {
			const void *v = va_arg(ap, const void *);
			size_t n = va_arg(ap, size_t);
			rc = v ? sqlite3_bind_blob(s, i + 1, n ? v : "", (int)n, SQLITE_TRANSIENT)
			       : sqlite3_bind_null(s, i + 1);
			break;
		}
		case 'i':
			rc = sqlite3_bind_int64(s, i + 1, va_arg(ap, int64_t));
			break;
		default:
			rc = SQLITE_MISUSE;
		}
		if (rc != SQLITE_OK)
			return s3_sql_err(rc);
	}
	return 0;
}

static int s3_prepv(struct nb_s3 *s3, sqlite3_stmt **out, const char *sql, const char *fmt,
                    va_list ap)
{
	sqlite3_stmt *s;
	int rc = sqlite3_prepare_v2(s3->db, sql, -1, &s, NULL), r;

	if (rc != SQLITE_OK)
		return s3_sql_err(rc);
	r = s3_bindv(s, fmt, ap);
	if (r < 0) {
		sqlite3_finalize(s);
		return r;
	}
	*out = s;
	return 0;
}

static int s3_prep_cachedv(struct nb_s3 *s3, sqlite3_stmt **out, const char *sql, const char *fmt,
                           va_list ap)
{
	struct s3_stmt_slot *slot = NULL;
	sqlite3_stmt *s = NULL;
	int r, rc;

	for (int i = 0; i < S3_STMT_CACHE && !slot; i++)
		if (s3->stmts[i].sql == sql && !s3->stmts[i].busy)
			slot = &s3->stmts[i];
	for (int i = 0; i < S3_STMT_CACHE && !slot; i++)
		if (!s3->stmts[i].sql)
			slot = &s3->stmts[i];
	if (slot && slot->s) {
		s = slot->s;
	} else {
		rc = sqlite3_prepare_v3(s3->db, sql, -1, slot ? SQLITE_PREPARE_PERSISTENT : 0, &s,
		                        NULL);
		if (rc != SQLITE_OK)
			return s3_sql_err(rc);
		if (slot) /* a free slot; when all hold others, s is used once */
			*slot = (struct s3_stmt_slot){.sql = sql, .s = s};
	}
	if (slot)
		slot->busy = true;
	r = s3_bindv(s, fmt, ap);
	if (r < 0) {
		s3_done(s3, s);
		return r;
	}
	*out = s;
	return 0;
}

int s3_prep_cached(struct nb_s3 *s3, sqlite3_stmt **out, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = s3_prep_cachedv(s3, out, sql, fmt, ap);
	va_end(ap);
	return r;
}

void s3_done(struct nb_s3 *s3, sqlite3_stmt *s)
{
	for (int i = 0; i < S3_STMT_CACHE; i++) {
		if (s3->stmts[i].s == s) {
			sqlite3_reset(s);
			sqlite3_clear_bindings(s);
			s3->stmts[i].busy = false;
			return;
		}
	}
	sqlite3_finalize(s);
}

int s3_prep(struct nb_s3 *s3, sqlite3_stmt **out, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = s3_prepv(s3, out, sql, fmt, ap);
	va_end(ap);
	return r;
}

/* One statement that returns no row, compiled for this call or kept
 * (cached); s3_done finalizes the former and resets the latter. */
static int execv_(struct nb_s3 *s3, bool cached, const char *sql, const char *fmt, va_list ap)
{
	sqlite3_stmt *s;
	int r = cached ? s3_prep_cachedv(s3, &s, sql, fmt, ap) : s3_prepv(s3, &s, sql, fmt, ap), rc;

	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	s3_done(s3, s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : s3_sql_err(rc);
}

int s3_exec(struct nb_s3 *s3, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = execv_(s3, false, sql, fmt, ap);
	va_end(ap);
	return r;
}

int s3_exec_cached(struct nb_s3 *s3, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = execv_(s3, true, sql, fmt, ap);
	va_end(ap);
	return r;
}

int s3_tx_begin(struct nb_s3 *s3)
{
	int rc;

	pthread_mutex_lock(&s3->lock);
	rc = sqlite3_exec(s3->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		pthread_mutex_unlock(&s3->lock);
		return s3_sql_err(rc);
	}
	return 0;
}

int s3_tx_commit(struct nb_s3 *s3)
{
	int rc = sqlite3_exec(s3->db, "COMMIT", NULL, NULL, NULL);

	if (rc != SQLITE_OK)
		sqlite3_exec(s3->db, "ROLLBACK", NULL, NULL, NULL);
	pthread_mutex_unlock(&s3->lock);
	return s3_sql_err(rc);
}

void s3_tx_rollback(struct nb_s3 *s3)
{
	sqlite3_exec(s3->db, "ROLLBACK", NULL, NULL, NULL);
	pthread_mutex_unlock(&s3->lock);
}

/* ---- group commit ---- */

/* One batch, in the leader's thread: the directories' fsyncs (outside
 * s3->lock, each directory once), then every member in a savepoint of one
 * transaction, then one COMMIT, which writes the WAL but does not fsync it
 * (synchronous=NORMAL for this transaction only): the caller fsyncs it
 * (gc_sync_wal) outside s3->lock, while the next batch runs, and answers
 * the members after. true when the batch committed. */
static bool gc_run(struct nb_s3 *s3, struct s3_gc_member *batch)
{
	struct s3_gc_member *m, *o;
	int r, rc;

	for (m = batch; m; m = m->next) {
		m->result = 0;
		if (!m->dir)
			continue;
		for (o = batch; o != m; o = o->next)
			if (o->dir && !strcmp(o->dir, m->dir))
				break;
		/* a directory already fsynced in this batch: its result */
		m->result = o != m ? o->result : s3_fsync_dir(m->dir);
	}
	pthread_mutex_lock(&s3->lock);
	s3_exec_cached(s3, "PRAGMA synchronous = NORMAL", "");
	rc = sqlite3_exec(s3->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		r = s3_sql_err(rc);
		for (m = batch; m; m = m->next)
			if (m->result == 0)
				m->result = r;
		goto out;
	}
	for (m = batch; m; m = m->next) {
		if (m->result < 0)
			continue;
		r = s3_exec_cached(s3, "SAVEPOINT gc", "");
		if (r < 0) {
			m->result = r;
			continue;
		}
		r = m->fn(s3, m->ctx);
		if (r < 0)
			s3_exec_cached(s3, "ROLLBACK TO gc", "");
		s3_exec_cached(s3, "RELEASE gc", "");
		m->result = r;
		if (r < 0 && sqlite3_get_autocommit(s3->db)) {
			/* SQLite rolled the whole transaction back (I/O error, disk
			 * full): what the earlier members did is gone too. */
			for (o = batch; o; o = o->next)
				if (o->result == 0)
					o->result = r;
			rc = SQLITE_ABORT;
			goto out;
		}
	}
	rc = sqlite3_exec(s3->db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		sqlite3_exec(s3->db, "ROLLBACK", NULL, NULL, NULL);
		r = s3_sql_err(rc);
		for (m = batch; m; m = m->next)
			if (m->result == 0)
				m->result = r < 0 ? r : -NB_S3_E_INTERNAL;
	}
out:
	/* every other transaction commits with its own fsync */
	s3_exec_cached(s3, "PRAGMA synchronous = FULL", "");
	pthread_mutex_unlock(&s3->lock);
	return rc == SQLITE_OK;
}

/* Makes a batch's commit durable: fsync of the WAL file (any descriptor of
 * its inode will do; opened by name each time, so a WAL SQLite made anew is
 * never missed). */
static int gc_sync_wal(struct nb_s3 *s3)
{
	char path[S3_PATH_MAX];
	int fd, r = 0;

	snprintf(path, sizeof(path), "%s/meta.db-wal", s3->root);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* Under gc_lock: when no batch runs and writers wait, wakes the first
 * queued one to lead (only it: the others go with its batch). */
static void gc_wake_next(struct nb_s3 *s3)
{
	if (!s3->gc_leader && !s3->gc_hold && s3->gc_head)
		pthread_cond_signal(&s3->gc_head->cond);
}

int s3_group_commit(struct nb_s3 *s3, int (*fn)(struct nb_s3 *s3, void *ctx), void *ctx,
                    const char *dir)
{
	struct s3_gc_member me = {.fn = fn, .ctx = ctx, .dir = dir};

	pthread_cond_init(&me.cond, NULL);
	pthread_mutex_lock(&s3->gc_lock);
	*s3->gc_tail = &me;
	s3->gc_tail = &me.next;
	s3->gc_queued++;
	while (!me.done) {
		struct s3_gc_member *batch, *m, *next;
		uint64_t n = 0, failed = 0;

		/* Not done, no batch running and writers queued: lead. (Not
		 * done and nothing queued: me is in a batch whose WAL is being
		 * fsynced; its leader answers.) */
		if (s3->gc_leader || s3->gc_hold || !s3->gc_head) {
			pthread_cond_wait(&me.cond, &s3->gc_lock);
			continue;
		}
		batch = s3->gc_head;
		s3->gc_head = NULL;
		s3->gc_tail = &s3->gc_head;
		s3->gc_queued = 0;
		s3->gc_leader = true;
		pthread_mutex_unlock(&s3->gc_lock);
		bool committed = gc_run(s3, batch);
		/* the next batch may run its transaction while this one's WAL
		 * is fsynced; this one's writers are answered after the fsync */
		pthread_mutex_lock(&s3->gc_lock);
		s3->gc_leader = false;
		gc_wake_next(s3);
		pthread_mutex_unlock(&s3->gc_lock);
		int synced = committed ? gc_sync_wal(s3) : 0;
		pthread_mutex_lock(&s3->gc_lock);
		for (m = batch; m; m = next) {
			next = m->next; /* m is its writer's: gone once done is seen */
			n++;
			if (synced < 0 && m->result == 0)
				m->result = synced; /* committed, not known to be durable */
			failed += m->result < 0;
			m->done = true;
			/* under gc_lock: its writer cannot see done (and destroy
			 * the condition) before this returns */
			if (m != &me)
				pthread_cond_signal(&m->cond);
		}
		s3->gc_stats.batches++;
		s3->gc_stats.members += n;
		s3->gc_stats.failed += failed;
	}
	pthread_mutex_unlock(&s3->gc_lock);
	pthread_cond_destroy(&me.cond);
	return me.result;
}

void nb_s3_commit_stats(struct nb_s3 *s3, struct nb_s3_commit_stats *out)
{
	pthread_mutex_lock(&s3->gc_lock);
	*out = s3->gc_stats;
	out->queued = s3->gc_queued;
	pthread_mutex_unlock(&s3->gc_lock);
}

void nb_s3_commit_hold(struct nb_s3 *s3, bool hold)
{
	pthread_mutex_lock(&s3->gc_lock);
	s3->gc_hold = hold;
	gc_wake_next(s3);
	pthread_mutex_unlock(&s3->gc_lock);
}

char *s3_col_strdup(sqlite3_stmt *s, int col)
{
	const unsigned char *t;
	char *out;
	int n;

	if (sqlite3_column_type(s, col) == SQLITE_NULL)
		return NULL;
	t = sqlite3_column_text(s, col);
	n = sqlite3_column_bytes(s, col);
	out = malloc((size_t)n + 1);
	if (!out)
		return NULL;
	memcpy(out, t ? (const char *)t : "", (size_t)n);
	out[n] = '\0';
	return out;
}

/* ---- paths and live ids ---- */

void s3_data_dir(struct nb_s3 *s3, const char *id, char *out, size_t n)
{
	snprintf(out, n, "%s/data/%.2s", s3->root, id);
}

void s3_data_path(struct nb_s3 *s3, const char *id, char *out, size_t n)
{
	snprintf(out, n, "%s/data/%.2s/%s", s3->root, id, id);
}

void s3_tmp_path(struct nb_s3 *s3, const char *id, char *out, size_t n)
{
	snprintf(out, n, "%s/tmp/%s", s3->root, id);
}

int s3_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

int s3_live_new(struct nb_s3 *s3, struct s3_live *l)
{
	static const char hex[] = "0123456789abcdef";
	int r = nb_random_hex(l->id, S3_ID_HEX);
	unsigned dir = (unsigned)(nb_now_ms() / 1000) & 0xff;

	if (r < 0)
		return r;
	/* The first byte, the data directory, is the second's (of 256 in
	 * turn): writers at the same time share a directory, so a batch of
	 * the group commit fsyncs one directory, not one a writer. */
	l->id[0] = hex[dir >> 4];
	l->id[1] = hex[dir & 15];
	pthread_mutex_lock(&s3->live_lock);
	l->prev = &s3->live;
	l->next = s3->live.next;
	s3->live.next->prev = l;
	s3->live.next = l;
	pthread_mutex_unlock(&s3->live_lock);
	return 0;
}

void s3_live_drop(struct nb_s3 *s3, struct s3_live *l)
{
	if (!l->next)
		return;
	pthread_mutex_lock(&s3->live_lock);
	l->prev->next = l->next;
	l->next->prev = l->prev;
	pthread_mutex_unlock(&s3->live_lock);
	l->next = l->prev = NULL;
}

static bool s3_live_has(struct nb_s3 *s3, const char *id)
{
	bool found = false;

	pthread_mutex_lock(&s3->live_lock);
	for (struct s3_live *l = s3->live.next; l != &s3->live; l = l->next) {
		if (strcmp(l->id, id) == 0) {
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&s3->live_lock);
	return found;
}

void s3_unlink_data(struct nb_s3 *s3, char (*ids)[S3_ID_HEX + 1], size_t n)
{
	char path[S3_PATH_MAX];

	for (size_t i = 0; i < n; i++) {
		s3_data_path(s3, ids[i], path, sizeof(path));
		unlink(path);
	}
}

int s3_garbage_add(char (**g)[S3_ID_HEX + 1], size_t *n, const char *id)
{
	char(*ng)[S3_ID_HEX + 1] = realloc(*g, (*n + 1) * sizeof(**g));

	if (!ng)
		return -ENOMEM;
	*g = ng;
	nb_strlcpy(ng[*n], id, sizeof(ng[*n]));
	(*n)++;
	return 0;
}

/* ---- open, close, migrations ---- */

static int s3_migrate(struct nb_s3 *s3)
{
	int version = nb_s3_schema_version(s3), known = 0;

	while (nb_s3_migrations[known])
		known++;
	if (version > known)
		return -EPROTO; /* written by a newer nubod: never downgrade it */
	for (int i = version; nb_s3_migrations[i]; i++) {
		char sql[64];
		int rc = sqlite3_exec(s3->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(s3->db, nb_s3_migrations[i], NULL, NULL, NULL);
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", i + 1);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(s3->db, sql, NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(s3->db, "COMMIT", NULL, NULL, NULL);
		if (rc != SQLITE_OK) {
			sqlite3_exec(s3->db, "ROLLBACK", NULL, NULL, NULL);
			return -NB_S3_E_INTERNAL;
		}
	}
	return 0;
}

int nb_s3_schema_version(struct nb_s3 *s3)
{
	sqlite3_stmt *s;
	int v = 0;

	pthread_mutex_lock(&s3->lock);
	if (sqlite3_prepare_v2(s3->db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK) {
		if (sqlite3_step(s) == SQLITE_ROW)
			v = sqlite3_column_int(s, 0);
		sqlite3_finalize(s);
	}
	pthread_mutex_unlock(&s3->lock);
	return v;
}

static int s3_make_dirs(struct nb_s3 *s3)
{
	char path[S3_PATH_MAX];
	int r = nb_mkdir_p(s3->root, 0700);

	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/tmp", s3->root);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -errno;
	snprintf(path, sizeof(path), "%s/data", s3->root);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -errno;
	for (int i = 0; i < 256; i++) {
		snprintf(path, sizeof(path), "%s/data/%02x", s3->root, i);
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			return -errno;
	}
	return 0;
}

int nb_s3_open(const char *root, struct nb_s3 **out)
{
	struct nb_s3 *s3;
	char path[S3_PATH_MAX];
	int r;

	if (!root || !*root || strlen(root) > S3_ROOT_MAX)
		return -EINVAL;
	s3 = calloc(1, sizeof(*s3));
	if (!s3)
		return -ENOMEM;
	s3->lock_fd = -1;
	pthread_mutex_init(&s3->lock, NULL);
	pthread_mutex_init(&s3->live_lock, NULL);
	pthread_mutex_init(&s3->gc_lock, NULL);
	s3->gc_tail = &s3->gc_head;
	s3->live.next = s3->live.prev = &s3->live;
	nb_strlcpy(s3->root, root, sizeof(s3->root));

	r = s3_make_dirs(s3);
	if (r < 0)
		goto fail;
	snprintf(path, sizeof(path), "%s/LOCK", s3->root);
	s3->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s3->lock_fd < 0) {
		r = -errno;
		goto fail;
	}
	if (flock(s3->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/meta.db", s3->root);
	if (sqlite3_open_v2(path, &s3->db,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
	                    NULL) != SQLITE_OK) {
		r = -NB_S3_E_INTERNAL;
		goto fail;
	}
	sqlite3_busy_timeout(s3->db, 5000);
	/* synchronous=FULL: a committed row survives power loss, not just a
	 * crash of the process (an acknowledged PUT must). */
	if (sqlite3_exec(s3->db,
	                 "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
	                 "PRAGMA foreign_keys = ON;",
	                 NULL, NULL, NULL) != SQLITE_OK) {
		r = -NB_S3_E_INTERNAL;
		goto fail;
	}
	r = s3_migrate(s3);
	if (r < 0)
		goto fail;
	r = nb_s3_sweep(s3, NULL);
	if (r < 0)
		goto fail;
	*out = s3;
	return 0;
fail:
	nb_s3_close(s3);
	return r;
}

void nb_s3_close(struct nb_s3 *s3)
{
	if (!s3)
		return;
	for (int i = 0; i < S3_STMT_CACHE; i++)
		sqlite3_finalize(s3->stmts[i].s);
	sqlite3_close(s3->db);
	if (s3->lock_fd >= 0)
		close(s3->lock_fd); /* drops the flock */
	pthread_mutex_destroy(&s3->lock);
	pthread_mutex_destroy(&s3->live_lock);
	pthread_mutex_destroy(&s3->gc_lock);
	free(s3);
}

/* ---- sweep ---- */

/* Is data id referenced by a committed row? */
static int s3_data_referenced(struct nb_s3 *s3, const char *id, bool *yes)
{
	sqlite3_stmt *s;
	int r, rc;

	r = s3_prep(s3, &s,
	            "SELECT EXISTS (SELECT 1 FROM versions WHERE data_id = ?1)"
	            " OR EXISTS (SELECT 1 FROM parts WHERE data_id = ?1)",
	            "s", id);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*yes = sqlite3_column_int(s, 0) != 0;
	else
		r = s3_sql_err(rc);
	sqlite3_finalize(s);
	return r;
}

static int s3_sweep_dir(struct nb_s3 *s3, const char *dir, bool check_db, size_t *removed)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int r = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d))) {
		char path[S3_PATH_MAX];
		bool used = false;
		if (!s3_is_hex_id(e->d_name))
			continue; /* not ours: leave it */
		/* Live first, then the database: an id stops being live only
		 * once its row is committed (or its file is gone). */
		if (s3_live_has(s3, e->d_name))
			continue;
		if (check_db) {
			pthread_mutex_lock(&s3->lock);
			r = s3_data_referenced(s3, e->d_name, &used);
			pthread_mutex_unlock(&s3->lock);
			if (r < 0)
				break;
			if (used)
				continue;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (unlink(path) == 0)
			(*removed)++;
	}
	closedir(d);
	return r;
}

int nb_s3_sweep(struct nb_s3 *s3, struct nb_s3_sweep_stats *stats)
{
	struct nb_s3_sweep_stats st = {0};
	char dir[S3_PATH_MAX];
	int r;

	snprintf(dir, sizeof(dir), "%s/tmp", s3->root);
	r = s3_sweep_dir(s3, dir, false, &st.tmp_removed);
	for (int i = 0; i < 256 && r == 0; i++) {
		snprintf(dir, sizeof(dir), "%s/data/%02x", s3->root, i);
		r = s3_sweep_dir(s3, dir, true, &st.data_removed);
	}
	if (stats)
		*stats = st;
	return r;
}

/* ---- buckets ---- */

#define BUCKET_COLS "id, name, owner, region, public_read, versioning, created_ms"

static void bucket_from_row(sqlite3_stmt *s, struct s3_bucket_row *out)
{
	memset(out, 0, sizeof(*out));
	out->id = sqlite3_column_int64(s, 0);
	nb_strlcpy(out->b.name, (const char *)sqlite3_column_text(s, 1), sizeof(out->b.name));
	nb_strlcpy(out->b.owner, (const char *)sqlite3_column_text(s, 2), sizeof(out->b.owner));
	nb_strlcpy(out->b.region, (const char *)sqlite3_column_text(s, 3), sizeof(out->b.region));
	out->b.public_read = sqlite3_column_int(s, 4) != 0;
	out->b.versioning = (enum nb_s3_versioning)sqlite3_column_int(s, 5);
	out->b.created_ms = sqlite3_column_int64(s, 6);
}

static int bucket_query(struct nb_s3 *s3, const char *sql, const char *fmt, const void *arg,
                        struct s3_bucket_row *out)
{
	sqlite3_stmt *s;
	int r, rc;

	if (fmt[0] == 'i')
		r = s3_prep_cached(s3, &s, sql, fmt, *(const int64_t *)arg);
	else
		r = s3_prep_cached(s3, &s, sql, fmt, (const char *)arg);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		bucket_from_row(s, out);
	else
		r = rc == SQLITE_DONE ? -NB_S3_E_NO_SUCH_BUCKET : s3_sql_err(rc);
	s3_done(s3, s);
	return r;
}

int s3_bucket_find(struct nb_s3 *s3, const char *name, const char *actor, bool allow_public,
                   struct s3_bucket_row *out)
{
	int r;

	if (!name || nb_s3_bucket_name_check(name, NULL) < 0)
		return -NB_S3_E_NO_SUCH_BUCKET;
	r = bucket_query(s3, "SELECT " BUCKET_COLS " FROM buckets WHERE name = ?", "s", name, out);
	if (r < 0)
		return r;
	if (actor && strcmp(actor, out->b.owner) != 0 && !(allow_public && out->b.public_read))
		return -NB_S3_E_ACCESS_DENIED;
	return 0;
}

int s3_bucket_by_id(struct nb_s3 *s3, int64_t id, struct s3_bucket_row *out)
{
	return bucket_query(s3, "SELECT " BUCKET_COLS " FROM buckets WHERE id = ?", "i", &id, out);
}

static bool owner_ok(const char *owner)
{
	size_t n = owner ? strnlen(owner, NB_S3_OWNER_MAX + 1) : 0;

	if (n == 0 || n > NB_S3_OWNER_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)owner[i] <= 0x20 || (unsigned char)owner[i] >= 0x7f)
			return false;
	return true;
}

static bool region_ok(const char *region)
{
	size_t n = region ? strnlen(region, NB_S3_REGION_MAX + 1) : 0;

	if (n == 0 || n > NB_S3_REGION_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = region[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return false;
	}
	return true;
}

int nb_s3_bucket_create(struct nb_s3 *s3, const char *name, const char *owner, const char *region,
                        struct nb_s3_bucket *out)
{
	struct s3_bucket_row row;
	sqlite3_stmt *s;
	int64_t count = 0;
	int r;

	r = nb_s3_bucket_name_check(name, NULL);
	if (r < 0)
		return r;
	if (!owner_ok(owner) || !region_ok(region))
		return -NB_S3_E_INVALID_ARGUMENT;
	r = s3_tx_begin(s3);
	if (r < 0)
		return r;
	r = s3_bucket_find(s3, name, NULL, false, &row);
	if (r == 0) {
		r = strcmp(row.b.owner, owner) == 0 ? -NB_S3_E_BUCKET_OWNED
		                                    : -NB_S3_E_BUCKET_EXISTS;
		goto fail;
	}
	if (r != -NB_S3_E_NO_SUCH_BUCKET)
		goto fail;
	r = s3_prep(s3, &s, "SELECT count(*) FROM buckets WHERE owner = ?", "s", owner);
	if (r < 0)
		goto fail;
	if (sqlite3_step(s) == SQLITE_ROW)
		count = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	if (count >= NB_S3_BUCKETS_PER_OWNER) {
		r = -NB_S3_E_TOO_MANY_BUCKETS;
		goto fail;
	}
	r = s3_exec(s3, "INSERT INTO buckets (name, owner, region, created_ms) VALUES (?, ?, ?, ?)",
	            "sssi", name, owner, region, nb_wall_ms());
	if (r < 0)
		goto fail;
	if (out) {
		r = s3_bucket_find(s3, name, NULL, false, &row);
		if (r < 0)
			goto fail;
		*out = row.b;
	}
	return s3_tx_commit(s3);
fail:
	s3_tx_rollback(s3);
	return r;
}

static int exists_query(struct nb_s3 *s3, const char *sql, int64_t id, bool *yes)
{
	sqlite3_stmt *s;
	int r = s3_prep(s3, &s, sql, "i", id), rc;

	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*yes = sqlite3_column_int(s, 0) != 0;
	else
		r = s3_sql_err(rc);
	sqlite3_finalize(s);
	return r;
}

int nb_s3_bucket_delete(struct nb_s3 *s3, const char *name, const char *actor)
{
	struct s3_bucket_row row;
	bool has_versions = false, has_uploads = false;
	int r = s3_tx_begin(s3);

	if (r < 0)
		return r;
	r = s3_bucket_find(s3, name, actor, false, &row);
	if (r < 0)
		goto fail;
	r = exists_query(s3, "SELECT EXISTS (SELECT 1 FROM versions WHERE bucket_id = ?)", row.id,
	                 &has_versions);
	if (r == 0)
		r = exists_query(s3, "SELECT EXISTS (SELECT 1 FROM uploads WHERE bucket_id = ?)",
		                 row.id, &has_uploads);
	if (r < 0)
		goto fail;
	if (has_versions || has_uploads) {
		r = -NB_S3_E_BUCKET_NOT_EMPTY;
		goto fail;
	}
	r = s3_exec(s3, "DELETE FROM buckets WHERE id = ?", "i", row.id);
	if (r < 0)
		goto fail;
	return s3_tx_commit(s3);
fail:
	s3_tx_rollback(s3);
	return r;
}

int nb_s3_bucket_get(struct nb_s3 *s3, const char *name, struct nb_s3_bucket *out)
{
	struct s3_bucket_row row;
	int r;

	pthread_mutex_lock(&s3->lock);
	r = s3_bucket_find(s3, name, NULL, false, &row);
	pthread_mutex_unlock(&s3->lock);
	if (r == 0)
		*out = row.b;
	return r;
}

int nb_s3_bucket_list(struct nb_s3 *s3, const char *owner, struct nb_s3_bucket **out, size_t *n)
{
	struct nb_s3_bucket *v = NULL;
	size_t count = 0;
	sqlite3_stmt *s;
	int r, rc;

	*out = NULL;
	*n = 0;
	if (!owner_ok(owner))
		return -NB_S3_E_INVALID_ARGUMENT;
	pthread_mutex_lock(&s3->lock);
	r = s3_prep(s3, &s, "SELECT " BUCKET_COLS " FROM buckets WHERE owner = ? ORDER BY name",
	            "s", owner);
	if (r < 0)
		goto out;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW && count < NB_S3_BUCKETS_PER_OWNER) {
		struct s3_bucket_row row;
		struct nb_s3_bucket *nv = realloc(v, (count + 1) * sizeof(*v));
		if (!nv) {
			r = -ENOMEM;
			break;
		}
		v = nv;
		bucket_from_row(s, &row);
		v[count++] = row.b;
	}
	if (r == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE)
		r = s3_sql_err(rc);
	sqlite3_finalize(s);
out:
	pthread_mutex_unlock(&s3->lock);
	if (r < 0) {
		free(v);
		return r;
	}
	*out = v;
	*n = count;
	return 0;
}

static int bucket_set(struct nb_s3 *s3, const char *name, const char *actor, const char *sql,
                      int64_t value)
{
	struct s3_bucket_row row;
	int r = s3_tx_begin(s3);

	if (r < 0)
		return r;
	r = s3_bucket_find(s3, name, actor, false, &row);
	if (r == 0)
		r = s3_exec(s3, sql, "ii", value, row.id);
	if (r < 0) {
		s3_tx_rollback(s3);
		return r;
	}
	return s3_tx_commit(s3);
}

int nb_s3_bucket_set_public_read(struct nb_s3 *s3, const char *name, const char *actor,
                                 bool public_read)
{
	return bucket_set(s3, name, actor, "UPDATE buckets SET public_read = ? WHERE id = ?",
	                  public_read ? 1 : 0);
}

int nb_s3_bucket_set_versioning(struct nb_s3 *s3, const char *name, const char *actor,
                                enum nb_s3_versioning state)
{
	if (state != NB_S3_VERSIONING_ENABLED && state != NB_S3_VERSIONING_SUSPENDED)
		return -NB_S3_E_INVALID_ARGUMENT;
	return bucket_set(s3, name, actor, "UPDATE buckets SET versioning = ? WHERE id = ?",
	                  (int64_t)state);
}

/* ---- usage ---- */

static int usage_get(struct nb_s3 *s3, const char *owner, int64_t *bytes, int64_t *objects)
{
	sqlite3_stmt *s;
	int r, rc;

	*bytes = *objects = 0;
	r = s3_prep_cached(s3, &s, "SELECT bytes, objects FROM usage WHERE owner = ?", "s", owner);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*bytes = sqlite3_column_int64(s, 0);
		*objects = sqlite3_column_int64(s, 1);
	} else if (rc != SQLITE_DONE) {
		r = s3_sql_err(rc);
	}
	s3_done(s3, s);
	return r;
}

int s3_usage_add(struct nb_s3 *s3, const char *owner, int64_t dbytes, int64_t dobjects,
                 const struct nb_s3_quota *q)
{
	int64_t bytes, objects;
	int r;

	if (dbytes == 0 && dobjects == 0)
		return 0;
	r = usage_get(s3, owner, &bytes, &objects);
	if (r < 0)
		return r;
	if (q && dbytes > 0 && q->max_bytes && (uint64_t)(bytes + dbytes) > q->max_bytes)
		return -NB_S3_E_QUOTA_EXCEEDED;
	if (q && dobjects > 0 && q->max_objects && (uint64_t)(objects + dobjects) > q->max_objects)
		return -NB_S3_E_QUOTA_EXCEEDED;
	return s3_exec_cached(
	    s3,
	    "INSERT INTO usage (owner, bytes, objects) VALUES (?1, ?2, ?3)"
	    " ON CONFLICT (owner) DO UPDATE SET bytes = bytes + ?2, objects = objects + ?3",
	    "sii", owner, dbytes, dobjects);
}

int nb_s3_usage(struct nb_s3 *s3, const char *owner, uint64_t *bytes, uint64_t *objects)
{
	int64_t b, o;
	int r;

	if (!owner_ok(owner))
		return -NB_S3_E_INVALID_ARGUMENT;
	pthread_mutex_lock(&s3->lock);
	r = usage_get(s3, owner, &b, &o);
	pthread_mutex_unlock(&s3->lock);
	if (r < 0)
		return r;
	*bytes = b > 0 ? (uint64_t)b : 0;
	*objects = o > 0 ? (uint64_t)o : 0;
	return 0;
}
