/* store: migrations, WAL, every table's calls, account scoping, nested
 * transactions. Real SQLite on a temporary file. */
#include <errno.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/json.h"
#include "common/util.h"
#include "store/net.h"
#include "store/store.h"
#include "store/store_internal.h"

struct fixture {
	char dir[64];
	char path[128];
	struct nb_store *st;
	char acct[32], other[32];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/nb-test-store-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/nubo.db", f->dir);
	if (nb_store_open(f->path, &f->st) < 0)
		return -1;
	if (nb_store_account_ensure(f->st, "acme", f->acct) < 0 ||
	    nb_store_account_ensure(f->st, "globex", f->other) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	nb_store_close(f->st);
	nb_rm_rf(f->dir);
	free(f);
	return 0;
}

static int known_migrations(void)
{
	int n = 0;

	while (nb_store_migrations[n])
		n++;
	return n;
}

/* A database of schema 3 with a running instance moves to schema 4: the
 * instance gets the default metadata options, the network tables are
 * there, and terminating an instance drops its interfaces and
 * disassociates its elastic IP (the trigger of schema 4). */
static void schema3_gets_networks(void **state)
{
	struct fixture *f = *state;
	char path[160];
	sqlite3 *db;
	struct nb_store *st = NULL;
	json_t *row = NULL, *list = NULL;

	snprintf(path, sizeof(path), "%s/v3.db", f->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	for (int i = 0; i < 3; i++)
		assert_int_equal(sqlite3_exec(db, nb_store_migrations[i], NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
				      "PRAGMA user_version = 3;"
				      "INSERT INTO accounts VALUES ('acct-1', 'old', 1);"
				      "INSERT INTO reservations (id, account_id, created_at)"
				      " VALUES ('r-1', 'acct-1', 1);"
				      "INSERT INTO instances (id, account_id, reservation_id, type,"
				      " image_id, state, desired_state, ip, mac, launch_index, vcpus,"
				      " memory_mb, disk_gb, net_mbps, created_at, updated_at) VALUES"
				      " ('i-1', 'acct-1', 'r-1', 't1.nano', 'ami-1', 'running',"
				      " 'running', '10.213.0.2', '52:54:00:00:00:01', 0, 1, 128, 1,"
				      " 100, 1, 1)",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(nb_store_open(path, &st), 0);
	assert_true(nb_store_schema_version(st) >= 4);
	assert_int_equal(nb_store_instance_get(st, "acct-1", "i-1", &row), 0);
	assert_string_equal(nb_json_str(row, "http_tokens"), "optional");
	assert_int_equal(nb_json_int(row, "http_hop_limit", 0), 1);
	assert_string_equal(nb_json_str(row, "ip"), "10.213.0.2"); /* kept */
	json_decref(row);
	/* the account has no default VPC yet: nubod makes it at start */
	assert_int_equal(nb_store_accounts_without_vpc(st, &list), 0);
	assert_int_equal(json_array_size(list), 1);
	json_decref(list);
	/* an interface and an associated address of the instance go on terminate */
	assert_int_equal(nb_store_vpc_insert(st, "vpc-1", "acct-1", "10.0.0.0/16", 1, 1), 0);
	assert_int_equal(nb_store_subnet_insert(st, "subnet-1", "acct-1", "vpc-1", "10.0.0.0/24",
						0x0a000000, 24, "nubo-1a", 1),
			 0);
	assert_int_equal(nb_store_sg_insert(st, "sg-1", "acct-1", "vpc-1", "default", "d"), 0);
	assert_int_equal(nb_store_eni_insert(st, "eni-1", "acct-1", "subnet-1", "vpc-1",
					     "52:54:00:aa:bb:cc", "10.0.0.4", 0x0a000004, "i-1", 0),
			 0);
	assert_int_equal(nb_store_eni_group_add(st, "eni-1", "sg-1"), 0);
	/* the same address twice in a subnet is refused */
	assert_int_equal(nb_store_eni_insert(st, "eni-2", "acct-1", "subnet-1", "vpc-1",
					     "52:54:00:aa:bb:cd", "10.0.0.4", 0x0a000004, "i-1", 1),
			 -NB_E_CONFLICT);
	assert_int_equal(nb_store_address_insert(st, "eipalloc-1", "acct-1", "198.51.100.1",
						 0xc6336401),
			 0);
	assert_int_equal(nb_store_address_associate(st, "eipalloc-1", "eipassoc-1", "eni-1"), 0);
	assert_int_equal(nb_store_address_get(st, "acct-1", "eipalloc-1", NULL, &row), 0);
	assert_string_equal(nb_json_str(row, "instance_id"), "i-1");
	json_decref(row);
	assert_int_equal(nb_store_sg_member_ips(st, "sg-1", &list), 0);
	assert_int_equal(json_array_size(list), 1);
	json_decref(list);
	json_t *patch = json_pack("{s:s}", "state", "terminated");
	assert_int_equal(nb_store_instance_update(st, "i-1", patch), 0);
	json_decref(patch);
	assert_int_equal(nb_store_enis_of_instance(st, "i-1", &list), 0);
	assert_int_equal(json_array_size(list), 0);
	json_decref(list);
	assert_int_equal(nb_store_sg_member_ips(st, "sg-1", &list), 0);
	assert_int_equal(json_array_size(list), 0);
	json_decref(list);
	assert_int_equal(nb_store_address_get(st, "acct-1", "eipalloc-1", NULL, &row), 0);
	assert_null(nb_json_str(row, "eni_id"));
	assert_null(nb_json_str(row, "association_id"));
	json_decref(row);
	/* another account sees none of it */
	assert_int_equal(nb_store_address_get(st, f->acct, "eipalloc-1", NULL, &row),
			 -NB_E_NOT_FOUND);
	assert_int_equal(nb_store_vpc_get(st, f->acct, "vpc-1", &row), -NB_E_NOT_FOUND);
	nb_store_close(st);
}

static void migrations_run_once_and_wal(void **state)
{
	struct fixture *f = *state;
	char id[32];
	sqlite3 *db;
	sqlite3_stmt *s;

	assert_int_equal(nb_store_schema_version(f->st), known_migrations());
	nb_store_close(f->st);
	assert_int_equal(nb_store_open(f->path, &f->st), 0); /* a second open changes nothing */
	assert_int_equal(nb_store_schema_version(f->st), known_migrations());
	assert_int_equal(nb_store_account_ensure(f->st, "acme", id), 0);
	assert_string_equal(id, f->acct); /* same account, not a new one */
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	/* a database from a newer nubod is refused, never downgraded */
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 999", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	nb_store_close(f->st);
	f->st = NULL;
	assert_int_equal(nb_store_open(f->path, &f->st), -EPROTO);
	assert_null(f->st);
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	char sql[64];
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", known_migrations());
	sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	assert_int_equal(nb_store_open(f->path, &f->st), 0);
}

/* A database made by schema 1 moves to the newest schema keeping its rows. */
static void old_schema_is_migrated(void **state)
{
	struct fixture *f = *state;
	char path[160], id[32];
	sqlite3 *db;
	struct nb_store *st = NULL;
	json_t *row = NULL;

	snprintf(path, sizeof(path), "%s/old.db", f->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, nb_store_migrations[0], NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 1; INSERT INTO accounts VALUES"
					  " ('acct-1', 'old', 1)", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(nb_store_open(path, &st), 0);
	assert_int_equal(nb_store_schema_version(st), known_migrations());
	assert_int_equal(nb_store_account_get(st, "old", &row), 0);
	assert_string_equal(nb_json_str(row, "id"), "acct-1");
	json_decref(row);
	assert_int_equal(nb_store_user_add(st, "acct-1", "alice", "member", id), 0);
	nb_store_close(st);
}

static void tokens_are_kept_as_hashes(void **state)
{
	struct fixture *f = *state;
	json_t *who = NULL;
	char *data = NULL;
	size_t len = 0;
	const char *tok = "s3cr3t-token-value-0123456789";

	assert_int_equal(nb_store_token_add(f->st, tok, f->acct, "member"), 0);
	assert_int_equal(nb_store_token_lookup(f->st, tok, &who), 0);
	assert_string_equal(nb_json_str(who, "account_id"), f->acct);
	assert_string_equal(nb_json_str(who, "role"), "member");
	json_decref(who);
	assert_int_equal(nb_store_token_lookup(f->st, "wrong", &who), -NB_E_NOT_FOUND);
	assert_int_equal(nb_store_token_add(f->st, "x", f->acct, "emperor"), -NB_E_CONFLICT);
	nb_store_close(f->st); /* checkpoint, then look at the bytes on disk */
	f->st = NULL;
	assert_int_equal(nb_read_file(f->path, 64u << 20, &data, &len), 0);
	assert_null(memmem(data, len, tok, strlen(tok)));
	free(data);
	assert_int_equal(nb_store_open(f->path, &f->st), 0);
}

static void types_crud(void **state)
{
	struct fixture *f = *state;
	json_t *t = NULL, *list = NULL;
	int64_t n = 0;

	assert_int_equal(nb_store_type_put(f->st, "t1.nano", 1, 128, 1, 100, 0.0025), 0);
	assert_int_equal(nb_store_type_put(f->st, "m1.big", 4, 4096, 20, 1000, 0.2), 0);
	assert_int_equal(nb_store_type_put(f->st, "t1.nano", 1, 256, 1, 100, 0.003), 0);
	assert_int_equal(nb_store_type_get(f->st, "t1.nano", &t), 0);
	assert_int_equal(nb_json_int(t, "memory_mb", 0), 256);
	json_decref(t);
	assert_int_equal(nb_store_types_count(f->st, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(nb_store_types_list(f->st, &list), 0);
	assert_string_equal(nb_json_str(json_array_get(list, 0), "name"), "t1.nano");
	json_decref(list);
	assert_int_equal(nb_store_type_delete(f->st, "m1.big"), 0);
	assert_int_equal(nb_store_type_delete(f->st, "m1.big"), -NB_E_NOT_FOUND);
}

static void add_host(struct fixture *f, const char *name, char id[32])
{
	json_t *h = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:s}", "name", name,
			      "address", "http://127.0.0.1:1", "agent_token", name, "accel", "tcg",
			      "qemu_version", "7.2.22", "vcpus", 2, "memory_mb", 4096, "disk_gb", 50,
			      "cidr", "10.0.0.0/24");
	assert_int_equal(nb_store_host_upsert(f->st, h, id), 0);
	json_decref(h);
}

static void add_image(struct fixture *f, const char *acct, const char *id, const char *name)
{
	json_t *im = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:s, s:s}", "id",
			       id, "account_id", acct, "name", name, "os", "busybox", "release",
			       "1", "arch", "x86_64", "format", "qcow2", "size", 1 << 20,
			       "file_size", 4096, "sha256", "ab", "boot_mode", "disk", "state",
			       "available");
	assert_int_equal(nb_store_image_insert(f->st, im), 0);
	json_decref(im);
}

static void add_instance(struct fixture *f, const char *id, const char *host, const char *ip)
{
	json_t *in = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, "
			       "s:i, s:i, s:i}",
			       "id", id, "account_id", f->acct, "reservation_id", "r-1", "name",
			       "web", "type", "t1.nano", "image_id", "ami-1", "host_id", host,
			       "state", "pending", "desired_state", "running", "ip", ip, "mac",
			       "52:54:00:00:00:01", "launch_index", 0, "vcpus", 1, "memory_mb", 128,
			       "disk_gb", 1, "net_mbps", 100);
	assert_int_equal(nb_store_instance_insert(f->st, in), 0);
	json_decref(in);
}

static void hosts_images_instances(void **state)
{
	struct fixture *f = *state;
	char h1[32], again[32];
	json_t *row = NULL, *list = NULL, *usage = NULL, *patch;
	int64_t n = -1, gen = 0;

	add_host(f, "node1", h1);
	add_host(f, "node1", again);
	assert_string_equal(h1, again); /* re-join keeps the host's id */
	assert_int_equal(nb_store_host_by_token(f->st, "node1", &row), 0);
	json_decref(row);
	assert_int_equal(nb_store_host_bump(f->st, h1, &gen), 0);
	assert_int_equal(gen, 1);

	add_image(f, f->acct, "ami-1", "tiny");
	assert_int_equal(nb_store_image_get(f->st, f->acct, "tiny", &row), 0);
	assert_string_equal(nb_json_str(row, "id"), "ami-1");
	json_decref(row);
	assert_int_equal(nb_store_image_get(f->st, f->acct, "ami-1", &row), 0);
	json_decref(row);
	/* another account sees nothing of it */
	assert_int_equal(nb_store_image_get(f->st, f->other, "tiny", &row), -NB_E_NOT_FOUND);
	assert_int_equal(nb_store_reservation_insert(f->st, "r-1", f->acct, "tok", "h"), 0);
	assert_int_equal(nb_store_reservation_insert(f->st, "r-2", f->acct, "tok", "h"),
			 -NB_E_CONFLICT); /* one reservation per client token */

	add_instance(f, "i-1", h1, "10.0.0.2");
	add_instance(f, "i-2", h1, "10.0.0.3");
	assert_int_equal(nb_store_instance_get(f->st, f->other, "i-1", &row), -NB_E_NOT_FOUND);
	assert_int_equal(nb_store_instance_get(f->st, f->acct, "i-1", &row), 0);
	assert_string_equal(nb_json_str(row, "image_name"), "tiny");
	assert_string_equal(nb_json_str(row, "host_name"), "node1");
	json_decref(row);
	assert_int_equal(nb_store_image_in_use(f->st, "ami-1", &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(nb_store_host_usage(f->st, h1, &usage), 0);
	assert_int_equal(nb_json_int(usage, "vcpus", -1), 2);
	assert_int_equal(nb_json_int(usage, "memory_mb", -1), 256);
	json_decref(usage);

	patch = json_pack("{s:s, s:i}", "state", "stopped", "start_seq", 5);
	assert_int_equal(nb_store_instance_update(f->st, "i-2", patch), 0);
	json_decref(patch);
	assert_int_equal(nb_store_host_usage(f->st, h1, &usage), 0);
	assert_int_equal(nb_json_int(usage, "vcpus", -1), 1); /* stopped holds no CPU */
	assert_int_equal(nb_json_int(usage, "disk_gb", -1), 2); /* but keeps its disk */
	json_decref(usage);
	assert_int_equal(nb_store_instances_list(f->st, f->acct, "stopped", 0, &list), 0);
	assert_int_equal(json_array_size(list), 1);
	assert_int_equal(nb_json_int(json_array_get(list, 0), "start_seq", 0), 5);
	json_decref(list);

	patch = json_pack("{s:s, s:I}", "state", "terminated", "terminated_at", (json_int_t)1000);
	assert_int_equal(nb_store_instance_update(f->st, "i-1", patch), 0);
	json_decref(patch);
	patch = json_pack("{s:s}", "state", "x");
	assert_int_equal(nb_store_instance_update(f->st, "i-404", patch), -NB_E_NOT_FOUND);
	json_decref(patch);
	assert_int_equal(nb_store_instances_list(f->st, f->acct, NULL, 0, &list), 0);
	assert_int_equal(json_array_size(list), 1); /* terminated hidden */
	json_decref(list);
	assert_int_equal(nb_store_host_ips(f->st, h1, &list), 0);
	assert_int_equal(json_array_size(list), 1); /* its address is free again */
	json_decref(list);
	assert_int_equal(nb_store_purge_terminated(f->st, 2000), 0);
	assert_int_equal(nb_store_instances_list(f->st, f->acct, NULL, 1, &list), 0);
	assert_int_equal(json_array_size(list), 1);
	json_decref(list);
}

/* nb_store_instances_load: every instance of the account once, each with
 * exactly its own tags (ordered by key), across several arena blocks; the
 * terminated ones only when asked; one by id appends or adds nothing. */
static void instances_load_with_their_tags(void **state)
{
	enum { N = 700 };
	struct fixture *f = *state;
	struct nb_store_instance_list l = {0};
	char h1[32], id[32], key[16], val[64];
	json_t *patch;
	size_t before;

	add_host(f, "node1", h1);
	add_image(f, f->acct, "ami-1", "tiny");
	assert_int_equal(nb_store_reservation_insert(f->st, "r-1", f->acct, NULL, "h"), 0);
	for (int k = 0; k < N; k++) {
		json_t *in;
		snprintf(id, sizeof(id), "i-%017x", k + 1);
		in = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i}",
			       "id", id, "account_id", f->acct, "reservation_id", "r-1", "type",
			       "t1.nano", "image_id", "ami-1", "host_id", h1, "state", "running",
			       "desired_state", "running", "launch_index", k, "vcpus", 1 + k % 2,
			       "memory_mb", 128, "disk_gb", 1, "net_mbps", 100);
		assert_int_equal(nb_store_instance_insert(f->st, in), 0);
		json_decref(in);
		if (k % 5 == 0)
			continue; /* no tags */
		assert_int_equal(nb_store_tag_put(f->st, f->acct, id, "instance", "own", id), 0);
		snprintf(key, sizeof(key), "k%d", k);
		snprintf(val, sizeof(val), "value of %d", k);
		assert_int_equal(nb_store_tag_put(f->st, f->acct, id, "instance", key, val), 0);
		if (k % 3 == 0)
			assert_int_equal(nb_store_tag_put(f->st, f->acct, id, "instance", "A", "first"),
					 0);
	}
	/* another account's resource with the same tag keys */
	assert_int_equal(nb_store_tag_put(f->st, f->other, "ami-x", "image", "own", "x"), 0);

	assert_int_equal(nb_store_instances_load(f->st, f->acct, NULL, 0, &l), 0);
	assert_int_equal(l.n, N);
	assert_true(l.bytes > (64u << 10)); /* more than one arena block */
	for (size_t i = 0; i < l.n; i++) {
		const struct nb_store_instance *v = &l.v[i];
		int k = (int)strtol(v->id + 2, NULL, 16) - 1;
		assert_true(k >= 0 && k < N);
		if (i > 0)
			assert_true(v->created_at > l.v[i - 1].created_at ||
				    (v->created_at == l.v[i - 1].created_at &&
				     v->launch_index > l.v[i - 1].launch_index));
		assert_int_equal(v->launch_index, k);
		assert_int_equal(v->vcpus, 1 + k % 2);
		assert_string_equal(v->state, "running");
		assert_string_equal(v->reservation_id, "r-1");
		assert_string_equal(v->ip, ""); /* NULL column */
		assert_null(v->key_name);
		assert_string_equal(v->http_tokens, "optional");
		if (k % 5 == 0) {
			assert_int_equal(v->ntags, 0);
			continue;
		}
		snprintf(key, sizeof(key), "k%d", k);
		snprintf(val, sizeof(val), "value of %d", k);
		assert_int_equal(v->ntags, k % 3 == 0 ? 3 : 2);
		size_t t = 0;
		if (k % 3 == 0) {
			assert_string_equal(v->tags[t].key, "A");
			assert_string_equal(v->tags[t++].value, "first");
		}
		assert_string_equal(v->tags[t].key, key);
		assert_string_equal(v->tags[t++].value, val);
		assert_string_equal(v->tags[t].key, "own");
		assert_string_equal(v->tags[t].value, v->id);
	}
	nb_store_instance_list_free(&l);
	assert_null(l.v);

	/* the other account has none; a terminated one only when asked */
	assert_int_equal(nb_store_instances_load(f->st, f->other, NULL, 1, &l), 0);
	assert_int_equal(l.n, 0);
	patch = json_pack("{s:s}", "state", "terminated");
	assert_int_equal(nb_store_instance_update(f->st, "i-00000000000000002", patch), 0);
	json_decref(patch);
	assert_int_equal(nb_store_instances_load(f->st, f->acct, NULL, 0, &l), 0);
	assert_int_equal(l.n, N - 1);
	nb_store_instance_list_free(&l);
	assert_int_equal(nb_store_instances_load(f->st, f->acct, NULL, 1, &l), 0);
	assert_int_equal(l.n, N);
	nb_store_instance_list_free(&l);

	/* by id: appended in the caller's order, nothing for an unknown or
	 * another account's id */
	assert_int_equal(nb_store_instances_load(f->st, f->acct, "i-00000000000000008", 1, &l), 0);
	assert_int_equal(nb_store_instances_load(f->st, f->acct, "i-00000000000000002", 1, &l), 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.v[0].id, "i-00000000000000008");
	assert_int_equal(l.v[0].ntags, 2);
	assert_string_equal(l.v[0].tags[1].value, "i-00000000000000008");
	assert_string_equal(l.v[1].state, "terminated");
	before = l.n;
	assert_int_equal(nb_store_instances_load(f->st, f->acct, "i-99999999999999999", 1, &l), 0);
	assert_int_equal(nb_store_instances_load(f->st, f->other, "i-00000000000000008", 1, &l),
			 0);
	assert_int_equal(l.n, before);
	assert_int_equal(nb_store_instances_load(f->st, NULL, NULL, 1, &l), -EINVAL);
	nb_store_instance_list_free(&l);
}

static void nested_transactions(void **state)
{
	struct fixture *f = *state;
	json_t *t = NULL;

	/* outer rollback undoes inner commits */
	assert_int_equal(nb_store_begin(f->st), 0);
	assert_int_equal(nb_store_type_put(f->st, "a", 1, 1, 1, 1, 1), 0);
	assert_int_equal(nb_store_begin(f->st), 0);
	assert_int_equal(nb_store_type_put(f->st, "b", 1, 1, 1, 1, 1), 0);
	assert_int_equal(nb_store_commit(f->st), 0);
	nb_store_rollback(f->st);
	assert_int_equal(nb_store_type_get(f->st, "a", &t), -NB_E_NOT_FOUND);
	assert_int_equal(nb_store_type_get(f->st, "b", &t), -NB_E_NOT_FOUND);
	/* an inner rollback makes the outer commit fail, and nothing lands */
	assert_int_equal(nb_store_begin(f->st), 0);
	assert_int_equal(nb_store_type_put(f->st, "c", 1, 1, 1, 1, 1), 0);
	assert_int_equal(nb_store_begin(f->st), 0);
	nb_store_rollback(f->st);
	assert_int_equal(nb_store_commit(f->st), -NB_E_CONFLICT);
	assert_int_equal(nb_store_type_get(f->st, "c", &t), -NB_E_NOT_FOUND);
	/* and a plain one commits */
	assert_int_equal(nb_store_begin(f->st), 0);
	assert_int_equal(nb_store_type_put(f->st, "d", 1, 1, 1, 1, 1), 0);
	assert_int_equal(nb_store_commit(f->st), 0);
	assert_int_equal(nb_store_type_get(f->st, "d", &t), 0);
	json_decref(t);
}

/* The epoch moves after every committed change, and only then. */
static void epoch_follows_commits(void **state)
{
	struct fixture *f = *state;
	uint64_t e0 = nb_store_epoch(f->st), e1;

	assert_int_equal(nb_store_type_put(f->st, "e1", 1, 1, 1, 1, 1), 0);
	e1 = nb_store_epoch(f->st);
	assert_true(e1 > e0);
	assert_int_equal(nb_store_type_delete(f->st, "nope"), -NB_E_NOT_FOUND);
	assert_true(nb_store_epoch(f->st) == e1); /* nothing changed */
	assert_int_equal(nb_store_begin(f->st), 0);
	assert_int_equal(nb_store_type_put(f->st, "e2", 1, 1, 1, 1, 1), 0);
	assert_true(nb_store_epoch(f->st) == e1); /* not before the commit */
	assert_int_equal(nb_store_commit(f->st), 0);
	assert_true(nb_store_epoch(f->st) > e1);
	e1 = nb_store_epoch(f->st);
	assert_int_equal(nb_store_begin(f->st), 0);
	assert_int_equal(nb_store_type_put(f->st, "e3", 1, 1, 1, 1, 1), 0);
	nb_store_rollback(f->st);
	assert_true(nb_store_epoch(f->st) == e1); /* rolled back: nothing changed */

	/* a host's heartbeat (last_seen) is stored but leaves the epoch: no
	 * cached answer shows it; its other changes move it */
	{
		char hid[32];
		json_t *h = NULL;
		add_host(f, "beat", hid);
		e1 = nb_store_epoch(f->st);
		assert_int_equal(nb_store_host_seen(f->st, hid, 123456789), 0);
		assert_true(nb_store_epoch(f->st) == e1);
		assert_int_equal(nb_store_host_get(f->st, hid, &h), 0);
		assert_int_equal(json_integer_value(json_object_get(h, "last_seen")), 123456789);
		json_decref(h);
		assert_int_equal(nb_store_host_bump(f->st, hid, NULL), 0);
		assert_true(nb_store_epoch(f->st) > e1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(migrations_run_once_and_wal, setup, teardown),
		cmocka_unit_test_setup_teardown(old_schema_is_migrated, setup, teardown),
		cmocka_unit_test_setup_teardown(schema3_gets_networks, setup, teardown),
		cmocka_unit_test_setup_teardown(tokens_are_kept_as_hashes, setup, teardown),
		cmocka_unit_test_setup_teardown(types_crud, setup, teardown),
		cmocka_unit_test_setup_teardown(hosts_images_instances, setup, teardown),
		cmocka_unit_test_setup_teardown(instances_load_with_their_tags, setup, teardown),
		cmocka_unit_test_setup_teardown(nested_transactions, setup, teardown),
		cmocka_unit_test_setup_teardown(epoch_follows_commits, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
