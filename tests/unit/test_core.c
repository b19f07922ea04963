/* core: the instance state machine and placement, both pure; tenant networks
 * (IPAM, VNIs, groups, the desired state) on a real store in a temporary dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"
#include "core/place.h"
#include "core/secrets.h"
#include "common/util.h"
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "core/state.h"
#include "core/core.h"
#include "core/vpc.h"
#include "common/json.h"
#include "store/net.h"
#include <pthread.h>

struct row {
	const char *state, *desired;
	enum nb_action act;
	int err;                    /* 0 or -NB_E_STATE */
	const char *next, *next_desired;
	bool bump_start, bump_reboot, noop;
};

/* Every action from every state a user can see. */
static const struct row table[] = {
	{"pending", "running", NB_ACT_START, 0, "pending", "running", false, false, true},
	{"pending", "running", NB_ACT_STOP, 0, "stopping", "stopped", false, false, false},
	{"pending", "running", NB_ACT_REBOOT, -NB_E_STATE, NULL, NULL, false, false, false},
	{"pending", "running", NB_ACT_PAUSE, -NB_E_STATE, NULL, NULL, false, false, false},
	{"pending", "running", NB_ACT_RESUME, -NB_E_STATE, NULL, NULL, false, false, false},
	{"pending", "running", NB_ACT_TERMINATE, 0, "shutting-down", "terminated", false, false, false},
	{"running", "running", NB_ACT_START, 0, "running", "running", false, false, true},
	{"running", "running", NB_ACT_STOP, 0, "stopping", "stopped", false, false, false},
	{"running", "running", NB_ACT_REBOOT, 0, "running", "running", false, true, false},
	{"running", "running", NB_ACT_PAUSE, 0, "running", "paused", false, false, false},
	{"running", "running", NB_ACT_RESUME, 0, "running", "running", false, false, true},
	{"running", "running", NB_ACT_TERMINATE, 0, "shutting-down", "terminated", false, false, false},
	{"running", "paused", NB_ACT_PAUSE, 0, "running", "paused", false, false, true},
	{"running", "paused", NB_ACT_RESUME, 0, "running", "running", false, false, false},
	{"paused", "paused", NB_ACT_START, -NB_E_STATE, NULL, NULL, false, false, false},
	{"paused", "paused", NB_ACT_STOP, 0, "stopping", "stopped", false, false, false},
	{"paused", "paused", NB_ACT_REBOOT, -NB_E_STATE, NULL, NULL, false, false, false},
	{"paused", "paused", NB_ACT_PAUSE, 0, "paused", "paused", false, false, true},
	{"paused", "paused", NB_ACT_RESUME, 0, "paused", "running", false, false, false},
	{"paused", "paused", NB_ACT_TERMINATE, 0, "shutting-down", "terminated", false, false, false},
	{"stopping", "stopped", NB_ACT_START, -NB_E_STATE, NULL, NULL, false, false, false},
	{"stopping", "stopped", NB_ACT_STOP, 0, "stopping", "stopped", false, false, true},
	{"stopping", "stopped", NB_ACT_PAUSE, -NB_E_STATE, NULL, NULL, false, false, false},
	{"stopping", "stopped", NB_ACT_TERMINATE, 0, "shutting-down", "terminated", false, false, false},
	{"stopped", "stopped", NB_ACT_START, 0, "pending", "running", true, false, false},
	{"stopped", "stopped", NB_ACT_STOP, 0, "stopped", "stopped", false, false, true},
	{"stopped", "stopped", NB_ACT_REBOOT, -NB_E_STATE, NULL, NULL, false, false, false},
	{"stopped", "stopped", NB_ACT_PAUSE, -NB_E_STATE, NULL, NULL, false, false, false},
	{"stopped", "stopped", NB_ACT_RESUME, -NB_E_STATE, NULL, NULL, false, false, false},
	{"stopped", "stopped", NB_ACT_TERMINATE, 0, "shutting-down", "terminated", false, false, false},
	{"shutting-down", "terminated", NB_ACT_START, -NB_E_STATE, NULL, NULL, false, false, false},
	{"shutting-down", "terminated", NB_ACT_TERMINATE, 0, "shutting-down", "terminated", false, false, true},
	{"terminated", "terminated", NB_ACT_START, -NB_E_STATE, NULL, NULL, false, false, false},
	{"terminated", "terminated", NB_ACT_STOP, -NB_E_STATE, NULL, NULL, false, false, false},
	{"terminated", "terminated", NB_ACT_TERMINATE, 0, "terminated", "terminated", false, false, true},
};

static void transitions(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		const struct row *r = &table[i];
		struct nb_transition t;
		int err = nb_state_apply(r->state, r->desired, r->act, &t);
		char what[128];

		snprintf(what, sizeof(what), "%s (%s) + %s", r->state, r->desired,
			 nb_action_name(r->act));
		if (err != r->err)
			fail_msg("%s: got %d, want %d", what, err, r->err);
		if (err)
			continue;
		if (strcmp(t.state, r->next) || strcmp(t.desired, r->next_desired) ||
		    t.bump_start != r->bump_start || t.bump_reboot != r->bump_reboot ||
		    t.noop != r->noop)
			fail_msg("%s: got %s/%s start=%d reboot=%d noop=%d", what, t.state,
				 t.desired, t.bump_start, t.bump_reboot, t.noop);
	}
}

static void actions_and_states(void **state)
{
	(void)state;
	assert_int_equal(nb_action_parse("reboot"), NB_ACT_REBOOT);
	assert_int_equal(nb_action_parse("explode"), -1);
	assert_int_equal(nb_action_parse(NULL), -1);
	assert_true(nb_state_valid("shutting-down"));
	assert_false(nb_state_valid("zombie"));
}

static void reports(void **state)
{
	bool reset;
	(void)state;

	/* the agent started it */
	assert_string_equal(nb_state_from_report("pending", "running", "running", true, &reset), "running");
	assert_false(reset);
	/* a report from before the latest start changes nothing */
	assert_string_equal(nb_state_from_report("pending", "running", "stopped", false, &reset), "pending");
	assert_string_equal(nb_state_from_report("pending", "running", "running", false, &reset), "pending");
	/* the guest stopped on its own: stopped, and not restarted */
	assert_string_equal(nb_state_from_report("running", "running", "stopped", true, &reset), "stopped");
	assert_true(reset);
	assert_string_equal(nb_state_from_report("stopping", "stopped", "stopped", true, &reset), "stopped");
	assert_false(reset);
	assert_string_equal(nb_state_from_report("stopping", "stopped", "running", true, &reset), "stopping");
	assert_string_equal(nb_state_from_report("running", "paused", "paused", true, &reset), "paused");
	assert_string_equal(nb_state_from_report("paused", "running", "running", true, &reset), "running");
	/* a failed launch ends terminated, a finished terminate too */
	assert_string_equal(nb_state_from_report("pending", "running", "error", true, &reset), "terminated");
	assert_string_equal(nb_state_from_report("shutting-down", "terminated", "terminated", true, &reset), "terminated");
	assert_string_equal(nb_state_from_report("shutting-down", "terminated", "running", true, &reset), "shutting-down");
	assert_string_equal(nb_state_from_report("terminated", "terminated", "running", true, &reset), "terminated");
}

static struct nb_sched_host host(const char *id, bool up, int64_t vcpus, int64_t mem)
{
	struct nb_sched_host h = {.up = up, .vcpus = vcpus, .memory_mb = mem, .disk_gb = 100};

	snprintf(h.id, sizeof(h.id), "%s", id);
	snprintf(h.name, sizeof(h.name), "%s", id);
	snprintf(h.cidr, sizeof(h.cidr), "10.1.0.0/29");
	return h;
}

static void placement(void **state)
{
	struct nb_sched_host hs[3] = {host("a", true, 4, 1000), host("b", true, 4, 600),
				      host("c", false, 64, 64000)};
	struct nb_sched_need need = {1, 300, 1};
	char *placed[4], err[256] = "";
	(void)state;

	assert_int_equal(nb_sched_place(hs, 3, &need, 4, 4, placed, err, sizeof(err)), 4);
	/* most free memory first, charged as it goes; the down host gets nothing */
	assert_string_equal(placed[0], "a");
	assert_string_equal(placed[1], "a");
	assert_string_equal(placed[2], "b");
	assert_string_equal(placed[3], "a");
	assert_int_equal(hs[0].used_memory_mb, 900);
	assert_int_equal(hs[2].used_vcpus, 0);
	/* what is left (100 on a, 300 on b) cannot take two more */
	struct nb_sched_host saved[3];
	memcpy(saved, hs, sizeof(hs));
	assert_int_equal(nb_sched_place(hs, 3, &need, 2, 2, placed, err, sizeof(err)), -NB_E_CAPACITY);
	assert_non_null(strstr(err, "300 MiB"));
	assert_non_null(strstr(err, "1 placed"));
	/* MinCount 1 of MaxCount 2: the one that fits is placed */
	memcpy(hs, saved, sizeof(hs));
	assert_int_equal(nb_sched_place(hs, 3, &need, 2, 1, placed, err, sizeof(err)), 1);
	assert_string_equal(placed[0], "b");
	struct nb_sched_need huge = {8, 10, 1};
	assert_false(nb_sched_fits(&hs[0], &huge, err, sizeof(err)));
	assert_non_null(strstr(err, "needs 8 vCPU"));
	assert_false(nb_sched_fits(&hs[2], &need, err, sizeof(err)));
	assert_non_null(strstr(err, "down"));
}

static void addresses(void **state)
{
	struct nb_sched_host h = host("a", true, 1, 1);
	char ip[16];
	(void)state;

	/* a /29 has .2 to .6 for guests */
	nb_sched_ip_mark(&h, "10.1.0.3");
	assert_int_equal(nb_sched_ip_take(&h, ip), 0);
	assert_string_equal(ip, "10.1.0.2");
	assert_int_equal(nb_sched_ip_take(&h, ip), 0);
	assert_string_equal(ip, "10.1.0.4");
	assert_int_equal(nb_sched_ip_take(&h, ip), 0);
	assert_int_equal(nb_sched_ip_take(&h, ip), 0);
	assert_string_equal(ip, "10.1.0.6");
	assert_int_equal(nb_sched_ip_take(&h, ip), -NB_E_CAPACITY);
	nb_sched_ip_mark(&h, "bogus");
	nb_sched_ip_mark(&h, "192.168.0.1");
}

static void secrets(void **state)
{
	char dir[] = "/tmp/nb-test-secrets-XXXXXX", path[64], id[21], secret[41];
	struct nb_secrets a, b, other;
	char *sealed = NULL, *plain = NULL;
	struct stat st;
	(void)state;

	assert_non_null(mkdtemp(dir));
	assert_int_equal(nb_secrets_load(&a, dir), 0);
	snprintf(path, sizeof(path), "%s/secret.key", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size, 32);
	assert_int_equal(nb_secrets_load(&b, dir), 0); /* the same key again */
	assert_memory_equal(a.key, b.key, 32);
	assert_int_equal(nb_secrets_new_key(id, secret), 0);
	assert_int_equal(strlen(id), 20);
	assert_int_equal(strncmp(id, "AKIA", 4), 0);
	assert_int_equal(strlen(secret), 40);
	assert_int_equal(nb_secrets_seal(&a, secret, &sealed), 0);
	assert_null(strstr(sealed, secret));
	assert_int_equal(nb_secrets_open(&b, sealed, &plain), 0);
	assert_string_equal(plain, secret);
	free(plain);
	/* tampering or another key is detected */
	sealed[20] = sealed[20] == 'A' ? 'B' : 'A';
	assert_int_equal(nb_secrets_open(&a, sealed, &plain), -EBADMSG);
	sealed[20] = sealed[20] == 'A' ? 'B' : 'A';
	memset(other.key, 7, sizeof(other.key));
	assert_int_equal(nb_secrets_open(&other, sealed, &plain), -EBADMSG);
	assert_int_equal(nb_secrets_open(&a, "", &plain), -EBADMSG);
	assert_int_equal(nb_secrets_open(&a, "abc", &plain), -EBADMSG);
	free(sealed);
	nb_rm_rf(dir);
}

/* ---- tenant networks (core/vpc.c) on a real store ---- */

struct netfix {
	char dir[64];
	struct nb_store *st;
	struct nb_ctl c;
	char acct[32], other[32];
	int n; /* instances made */
};

static int net_setup(void **state)
{
	struct netfix *f = calloc(1, sizeof(*f));
	char path[128];
	json_t *h;

	snprintf(f->dir, sizeof(f->dir), "/tmp/nb-test-vpc-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(path, sizeof(path), "%s/nubo.db", f->dir);
	if (nb_store_open(path, &f->st) < 0 || nb_ctl_init(&f->c, f->st, f->dir) < 0)
		return -1;
	if (nb_store_account_ensure(f->st, "acme", f->acct) < 0 ||
	    nb_store_account_ensure(f->st, "globex", f->other) < 0)
		return -1;
	char err[256] = "";
	if (nb_core_net_init(&f->c, err, sizeof(err)) < 0)
		return -1;
	h = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:s, s:I}", "name", "node1",
		      "address", "127.0.0.1:1", "agent_token", "tok", "accel", "tcg",
		      "qemu_version", "8", "vcpus", 4, "memory_mb", 4096, "disk_gb", 10, "cidr",
		      "10.213.0.0/24", "last_seen", (json_int_t)nb_wall_ms());
	char hid[32];
	if (nb_store_host_upsert(f->st, h, hid) < 0)
		return -1;
	json_decref(h);
	*state = f;
	return 0;
}

static int net_teardown(void **state)
{
	struct netfix *f = *state;

	nb_ctl_fini(&f->c);
	nb_store_close(f->st);
	nb_rm_rf(f->dir);
	free(f);
	return 0;
}

/* An instance record on host node1, and its interface as a launch makes it:
 * the IPAM result in ip (or "" with the error code in *code). */
static int launch(struct netfix *f, const char *account, const json_t *req, char id[32],
		  char ip[16], const char **code)
{
	struct nb_net_plan p;
	char err[256] = "", mac[18], rid[32];
	json_t *hosts = NULL, *row;
	int r;

	*code = NULL;
	ip[0] = '\0';
	r = nb_core_net_plan(&f->c, account, req, &p, err, sizeof(err), code);
	if (r < 0)
		return r;
	nb_store_hosts_list(f->st, &hosts);
	assert_int_equal(nb_store_begin(f->st), 0);
	nb_id_new("r", rid, 32);
	nb_id_new("i", id, 32);
	assert_int_equal(nb_store_reservation_insert(f->st, rid, account, NULL, "h"), 0);
	row = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", id,
			"account_id", account, "reservation_id", rid, "name", "", "type",
			"t1.nano", "image_id", "ami-00000000000000001", "host_id",
			nb_json_str_or(json_array_get(hosts, 0), "id"), "state", "running",
			"desired_state", "running", "ip", "", "mac", "");
	assert_int_equal(nb_store_instance_insert(f->st, row), 0);
	json_decref(row);
	json_decref(hosts);
	r = nb_core_net_attach(&f->c, account, &p, id, ip, mac, err, sizeof(err), code);
	if (r < 0) {
		nb_store_rollback(f->st);
		ip[0] = '\0';
	} else {
		assert_int_equal(nb_store_commit(f->st), 0);
		f->n++;
	}
	nb_core_net_plan_free(&p);
	return r;
}

static void terminate(struct netfix *f, const char *id)
{
	json_t *patch = json_pack("{s:s}", "state", "terminated");
	assert_int_equal(nb_store_instance_update(f->st, id, patch), 0);
	json_decref(patch);
}

static void ipam_default_vpc(void **state)
{
	struct netfix *f = *state;
	json_t *req = json_object(), *vpcs = NULL, *row = NULL;
	char a[32], b[32], cc[32], d[32], ip[16];
	const char *code;

	/* every account got its default VPC at init, and only one */
	assert_int_equal(nb_core_vpcs(&f->c, f->acct, &vpcs), 0);
	assert_int_equal(json_array_size(vpcs), 1);
	assert_string_equal(nb_json_str(json_array_get(vpcs, 0), "cidr"), "172.31.0.0/16");
	assert_int_equal(nb_json_int(json_array_get(vpcs, 0), "is_default", 0), 1);
	json_decref(vpcs);
	/* lowest free, never .0 to .3 */
	assert_int_equal(launch(f, f->acct, req, a, ip, &code), 0);
	assert_string_equal(ip, "172.31.0.4");
	assert_int_equal(launch(f, f->acct, req, b, ip, &code), 0);
	assert_string_equal(ip, "172.31.0.5");
	assert_int_equal(launch(f, f->acct, req, cc, ip, &code), 0);
	assert_string_equal(ip, "172.31.0.6");
	/* the instance row keeps ip and mac of interface 0 */
	assert_int_equal(nb_store_instance_get(f->st, f->acct, a, &row), 0);
	assert_string_equal(nb_json_str(row, "ip"), "172.31.0.4");
	assert_int_equal(strncmp(nb_json_str_or(row, "mac"), "52:54:00:", 9), 0);
	assert_non_null(nb_json_str(row, "vpc_id"));
	json_decref(row);
	/* terminate releases: the next launch takes the freed address */
	terminate(f, b);
	assert_int_equal(launch(f, f->acct, req, d, ip, &code), 0);
	assert_string_equal(ip, "172.31.0.5");
	/* the other account's default VPC overlaps, and its IPAM is its own */
	assert_int_equal(launch(f, f->other, req, d, ip, &code), 0);
	assert_string_equal(ip, "172.31.0.4");
	/* a fixed address: in use, outside, fine */
	json_object_set_new(req, "private_ip", json_string("172.31.0.4"));
	assert_int_equal(launch(f, f->acct, req, d, ip, &code), -NB_E_CONFLICT);
	assert_string_equal(code, "InvalidIPAddress.InUse");
	json_object_set_new(req, "private_ip", json_string("172.31.0.3"));
	assert_int_equal(launch(f, f->acct, req, d, ip, &code), -NB_E_INVALID);
	json_object_set_new(req, "private_ip", json_string("172.31.9.9"));
	assert_int_equal(launch(f, f->acct, req, d, ip, &code), 0);
	assert_string_equal(ip, "172.31.9.9");
	json_decref(req);
}

/* An instance made before schema 4 (no interface) gets interface 0 in its
 * account's default subnet at start, keeping its MAC. */
static void old_instances_adopted(void **state)
{
	struct netfix *f = *state;
	json_t *hosts = NULL, *row, *enis = NULL;
	char rid[32], err[256] = "";

	nb_store_hosts_list(f->st, &hosts);
	nb_id_new("r", rid, sizeof(rid));
	assert_int_equal(nb_store_reservation_insert(f->st, rid, f->acct, NULL, "h"), 0);
	row = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id",
			"i-00000000000000abc", "account_id", f->acct, "reservation_id", rid, "name",
			"", "type", "t1.nano", "image_id", "ami-00000000000000001", "host_id",
			nb_json_str_or(json_array_get(hosts, 0), "id"), "state", "running",
			"desired_state", "running", "ip", "10.213.0.2", "mac", "52:54:00:12:34:56");
	assert_int_equal(nb_store_instance_insert(f->st, row), 0);
	json_decref(row);
	json_decref(hosts);
	assert_int_equal(nb_core_net_init(&f->c, err, sizeof(err)), 0);
	assert_int_equal(nb_store_enis_of_instance(f->st, "i-00000000000000abc", &enis), 0);
	assert_int_equal(json_array_size(enis), 1);
	assert_string_equal(nb_json_str(json_array_get(enis, 0), "mac"), "52:54:00:12:34:56");
	assert_string_equal(nb_json_str(json_array_get(enis, 0), "ip"), "172.31.0.4");
	json_decref(enis);
	assert_int_equal(nb_store_instance_get(f->st, f->acct, "i-00000000000000abc", &row), 0);
	assert_string_equal(nb_json_str(row, "ip"), "172.31.0.4");
	assert_non_null(nb_json_str(row, "subnet_id"));
	json_decref(row);
	/* a second start changes nothing */
	assert_int_equal(nb_core_net_init(&f->c, err, sizeof(err)), 0);
	assert_int_equal(nb_store_enis_of_instance(f->st, "i-00000000000000abc", &enis), 0);
	assert_int_equal(json_array_size(enis), 1);
	json_decref(enis);
	/* a bad pool is refused */
	nb_strlcpy(f->c.eip_pool, "198.51.100.7/24", sizeof(f->c.eip_pool));
	assert_int_equal(nb_core_net_init(&f->c, err, sizeof(err)), -NB_E_INVALID);
	assert_non_null(strstr(err, "198.51.100.7/24"));
}

/* An old instance that cannot have an interface (here: its account's
 * default VPC has no subnet left) stays without one, with its account's
 * others; nubod still starts, and other accounts' old instances get theirs. */
static void old_instances_without_room_stay_without(void **state)
{
	struct netfix *f = *state;
	json_t *hosts = NULL, *row, *enis = NULL, *vpc = NULL, *sub = NULL;
	const char *ids[3] = {"i-00000000000000a01", "i-00000000000000a02", "i-00000000000000b01"};
	const char *accts[3] = {f->acct, f->acct, f->other};
	char rid[32], err[256] = "";

	assert_int_equal(nb_core_default_vpc(&f->c, f->acct, &vpc, err, sizeof(err)), 0);
	assert_int_equal(nb_store_subnet_default(f->st, nb_json_str_or(vpc, "id"), &sub), 0);
	assert_int_equal(nb_store_subnet_delete(f->st, nb_json_str_or(sub, "id")), 0);
	json_decref(sub);
	json_decref(vpc);
	nb_store_hosts_list(f->st, &hosts);
	for (int i = 0; i < 3; i++) {
		nb_id_new("r", rid, sizeof(rid));
		assert_int_equal(nb_store_reservation_insert(f->st, rid, accts[i], NULL, "h"), 0);
		row = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id",
				ids[i], "account_id", accts[i], "reservation_id", rid, "name", "",
				"type", "t1.nano", "image_id", "ami-00000000000000001", "host_id",
				nb_json_str_or(json_array_get(hosts, 0), "id"), "state", "running",
				"desired_state", "running", "ip", "", "mac", "");
		assert_int_equal(nb_store_instance_insert(f->st, row), 0);
		json_decref(row);
	}
	json_decref(hosts);
	assert_int_equal(nb_core_net_init(&f->c, err, sizeof(err)), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(nb_store_enis_of_instance(f->st, ids[i], &enis), 0);
		assert_int_equal(json_array_size(enis), accts[i] == f->other ? 1 : 0);
		json_decref(enis);
	}
}

static void ipam_small_subnet_fills(void **state)
{
	struct netfix *f = *state;
	json_t *vpc = NULL, *sub = NULL, *req;
	char err[256], id[32], ip[16], first[32] = "";
	const char *code = NULL;
	int made = 0;

	assert_int_equal(nb_core_vpc_create(&f->c, f->acct, "10.7.0.0/16", &vpc, err, sizeof(err),
					    &code),
			 0);
	assert_int_equal(nb_core_subnet_create(&f->c, f->acct, nb_json_str(vpc, "id"),
					       "10.7.1.0/28", NULL, &sub, err, sizeof(err), &code),
			 0);
	assert_int_equal(nb_json_int(sub, "available", 0), 11); /* 16 - 5 reserved */
	assert_string_equal(nb_json_str(sub, "gateway"), "10.7.1.1");
	req = json_pack("{s:s}", "subnet_id", nb_json_str(sub, "id"));
	for (int i = 0; i < 11; i++) {
		assert_int_equal(launch(f, f->acct, req, id, ip, &code), 0);
		if (!i)
			nb_strlcpy(first, id, sizeof(first));
		made++;
	}
	assert_string_equal(ip, "10.7.1.14"); /* .15 is the broadcast address */
	assert_int_equal(launch(f, f->acct, req, id, ip, &code), -NB_E_CAPACITY);
	assert_string_equal(code, "InsufficientFreeAddressesInSubnet");
	/* the subnet has interfaces: it cannot go, nor its VPC */
	assert_int_equal(nb_core_subnet_delete(&f->c, f->acct, nb_json_str(sub, "id"), err,
					       sizeof(err), &code),
			 -NB_E_CONFLICT);
	assert_string_equal(code, "DependencyViolation");
	assert_int_equal(nb_core_vpc_delete(&f->c, f->acct, nb_json_str(vpc, "id"), err,
					    sizeof(err), &code),
			 -NB_E_CONFLICT);
	/* overlapping and out-of-range subnets */
	json_t *x = NULL;
	assert_int_equal(nb_core_subnet_create(&f->c, f->acct, nb_json_str(vpc, "id"),
					       "10.7.1.0/24", NULL, &x, err, sizeof(err), &code),
			 -NB_E_CONFLICT);
	assert_string_equal(code, "InvalidSubnet.Conflict");
	assert_int_equal(nb_core_subnet_create(&f->c, f->acct, nb_json_str(vpc, "id"),
					       "10.8.0.0/24", NULL, &x, err, sizeof(err), &code),
			 -NB_E_INVALID);
	assert_string_equal(code, "InvalidSubnet.Range");
	/* another account cannot see the VPC */
	assert_int_equal(nb_core_subnet_create(&f->c, f->other, nb_json_str(vpc, "id"),
					       "10.7.2.0/24", NULL, &x, err, sizeof(err), &code),
			 -NB_E_NOT_FOUND);
	assert_string_equal(code, "InvalidVpcID.NotFound");
	terminate(f, first);
	assert_int_equal(launch(f, f->acct, req, id, ip, &code), 0);
	assert_string_equal(ip, "10.7.1.4");
	json_decref(req);
	json_decref(vpc);
	json_decref(sub);
}

struct burst {
	struct netfix *f;
	char ips[20][16];
};

static void *burst_thread(void *p)
{
	struct burst *b = p;
	json_t *req = json_object();
	char id[32];
	const char *code;

	for (int i = 0; i < 20; i++)
		if (launch(b->f, b->f->acct, req, id, b->ips[i], &code) < 0)
			b->ips[i][0] = '\0';
	json_decref(req);
	return NULL;
}

static void ipam_burst_no_duplicates(void **state)
{
	struct netfix *f = *state;
	struct burst b[4];
	pthread_t th[4];
	json_t *seen = json_object();

	for (int i = 0; i < 4; i++) {
		b[i].f = f;
		assert_int_equal(pthread_create(&th[i], NULL, burst_thread, &b[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 4; i++)
		for (int k = 0; k < 20; k++) {
			assert_true(b[i].ips[k][0]);
			assert_null(json_object_get(seen, b[i].ips[k]));
			json_object_set_new(seen, b[i].ips[k], json_true());
		}
	assert_int_equal(json_object_size(seen), 80);
	/* and they are the 80 lowest */
	assert_non_null(json_object_get(seen, "172.31.0.4"));
	assert_non_null(json_object_get(seen, "172.31.0.83"));
	json_decref(seen);
}

static void vni_unique(void **state)
{
	struct netfix *f = *state;
	json_t *vpcs = NULL, *v, *seen = json_object(), *x = NULL;
	char err[256], vni[16], victim[32] = "";
	const char *code;
	size_t i;
	int64_t victim_vni = 0;

	for (int k = 0; k < 10; k++) {
		char cidr[32];
		snprintf(cidr, sizeof(cidr), "10.%d.0.0/16", k);
		assert_int_equal(nb_core_vpc_create(&f->c, k % 2 ? f->acct : f->other, cidr, &x, err,
						    sizeof(err), &code),
				 0);
		if (k == 3) {
			nb_strlcpy(victim, nb_json_str(x, "id"), sizeof(victim));
			victim_vni = nb_json_int(x, "vni", 0);
		}
		json_decref(x);
	}
	assert_int_equal(nb_store_vpcs_list(f->st, NULL, &vpcs), 0);
	assert_int_equal(json_array_size(vpcs), 12);
	json_array_foreach(vpcs, i, v)
	{
		snprintf(vni, sizeof(vni), "%lld", (long long)nb_json_int(v, "vni", 0));
		assert_true(nb_json_int(v, "vni", 0) >= 1 && nb_json_int(v, "vni", 0) <= NB_VNI_MAX);
		assert_null(json_object_get(seen, vni));
		json_object_set_new(seen, vni, json_true());
	}
	json_decref(vpcs);
	json_decref(seen);
	/* a deleted VPC's VNI is the next one handed out; bad ranges refused */
	assert_int_equal(nb_core_vpc_delete(&f->c, f->other, victim, err, sizeof(err), &code),
			 -NB_E_NOT_FOUND); /* not its VPC */
	assert_int_equal(nb_core_vpc_delete(&f->c, f->acct, victim, err, sizeof(err), &code), 0);
	assert_int_equal(nb_core_vpc_create(&f->c, f->acct, "10.99.0.0/24", &x, err, sizeof(err),
					    &code),
			 0);
	assert_int_equal(nb_json_int(x, "vni", 0), victim_vni);
	json_decref(x);
	assert_int_equal(nb_core_vpc_create(&f->c, f->acct, "10.0.0.0/15", &x, err, sizeof(err),
					    &code),
			 -NB_E_INVALID);
	assert_string_equal(code, "InvalidVpc.Range");
	assert_int_equal(nb_core_vpc_create(&f->c, f->acct, "10.0.0.1/16", &x, err, sizeof(err),
					    &code),
			 -NB_E_INVALID);
	assert_string_equal(code, "InvalidParameterValue");
	assert_non_null(strstr(err, "10.0.0.1/16"));
}

static json_t *find_nic_group(json_t *d, const char *gid)
{
	return json_object_get(json_object_get(d, "security_groups"), gid);
}

static void desired_state_groups_and_metadata(void **state)
{
	struct netfix *f = *state;
	json_t *web = NULL, *rules, *req, *d = NULL, *hosts = NULL, *g, *inst, *nic, *md, *out = NULL;
	char err[256], a[32], b[32], ip[16];
	const char *code;
	json_t *def = NULL;

	assert_int_equal(nb_core_sg_create(&f->c, f->acct, NULL, "web", "web servers", &web, err,
					   sizeof(err), &code),
			 0);
	const char *wid = nb_json_str(web, "id");
	rules = json_pack("[{s:s, s:i, s:i, s:s}, {s:s, s:s}]", "protocol", "tcp", "from_port", 80,
			  "to_port", 80, "cidr", "0.0.0.0/0", "protocol", "-1", "group_id", wid);
	assert_int_equal(nb_core_sg_rules(&f->c, f->acct, wid, 0, 1, rules, NULL, err, sizeof(err),
					  &code),
			 0);
	/* the same again is a duplicate, and nothing of the call is kept */
	assert_int_equal(nb_core_sg_rules(&f->c, f->acct, wid, 0, 1, rules, NULL, err, sizeof(err),
					  &code),
			 -NB_E_CONFLICT);
	assert_string_equal(code, "InvalidPermission.Duplicate");
	json_decref(rules);
	/* the other account cannot touch the group */
	rules = json_pack("[{s:s, s:i, s:i, s:s}]", "protocol", "tcp", "from_port", 22, "to_port",
			  22, "cidr", "10.0.0.0/8");
	assert_int_equal(nb_core_sg_rules(&f->c, f->other, wid, 0, 1, rules, NULL, err,
					  sizeof(err), &code),
			 -NB_E_NOT_FOUND);
	assert_string_equal(code, "InvalidGroup.NotFound");
	/* revoking a rule that is not there */
	assert_int_equal(nb_core_sg_rules(&f->c, f->acct, wid, 0, 0, rules, NULL, err, sizeof(err),
					  &code),
			 -NB_E_NOT_FOUND);
	assert_string_equal(code, "InvalidPermission.NotFound");
	json_decref(rules);

	json_t *kp = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "id", "key-00000000000000001",
			       "account_id", f->acct, "name", "mykey", "fingerprint", "fp",
			       "public_key", "ssh-ed25519 AAAAtest mykey", "key_type", "ed25519");
	assert_int_equal(nb_store_keypair_insert(f->st, kp), 0);
	json_decref(kp);
	req = json_pack("{s:[s], s:{s:s, s:i}}", "security_group_ids", wid, "metadata_options",
			"http_tokens", "required", "http_put_response_hop_limit", 2);
	assert_int_equal(launch(f, f->acct, req, a, ip, &code), 0);
	json_decref(req);
	req = json_pack("{s:[s]}", "security_groups", "web");
	assert_int_equal(launch(f, f->acct, req, b, ip, &code), 0);
	json_decref(req);
	/* the group is in use now */
	assert_int_equal(nb_core_sg_delete(&f->c, f->acct, wid, NULL, err, sizeof(err), &code),
			 -NB_E_CONFLICT);
	assert_string_equal(code, "DependencyViolation");
	/* an elastic IP on the first */
	json_t *addr = NULL;
	assert_int_equal(nb_core_address_allocate(&f->c, f->acct, &addr, err, sizeof(err), &code),
			 0);
	assert_string_equal(nb_json_str(addr, "public_ip"), "198.51.100.1");
	assert_int_equal(nb_core_address_associate(&f->c, f->acct, nb_json_str(addr, "id"), NULL, a,
						   NULL, 0, &out, err, sizeof(err), &code),
			 0);
	json_decref(out);
	json_decref(addr);
	/* a key pair's public key and user data go to the metadata */
	assert_int_equal(nb_store_instance_set_launch(f->st, a, "mykey", "nubo-1a"), 0);

	nb_store_hosts_list(f->st, &hosts);
	assert_int_equal(nb_core_agent_desired(&f->c, nb_json_str(json_array_get(hosts, 0), "id"),
					       -1, 0, &d),
			 0);
	json_decref(hosts);
	/* the group reference resolves to both members' /32s */
	g = find_nic_group(d, wid);
	assert_non_null(g);
	assert_string_equal(nb_json_str(g, "name"), "web");
	json_t *in = json_object_get(g, "ingress");
	assert_int_equal(json_array_size(in), 2);
	assert_string_equal(nb_json_str(json_array_get(in, 0), "protocol"), "tcp");
	assert_int_equal(nb_json_int(json_array_get(in, 0), "from_port", 0), 80);
	assert_string_equal(json_string_value(json_array_get(
				    json_object_get(json_array_get(in, 0), "cidrs"), 0)),
			    "0.0.0.0/0");
	json_t *self = json_object_get(json_array_get(in, 1), "cidrs");
	assert_int_equal(json_array_size(self), 2);
	assert_string_equal(json_string_value(json_array_get(self, 0)), "172.31.0.4/32");
	assert_string_equal(json_string_value(json_array_get(self, 1)), "172.31.0.5/32");
	assert_null(json_object_get(json_array_get(in, 1), "from_port"));
	json_t *eg = json_object_get(g, "egress");
	assert_int_equal(json_array_size(eg), 1);
	assert_string_equal(nb_json_str(json_array_get(eg, 0), "protocol"), "-1");
	/* the VPC, with its subnet and gateway */
	nb_core_default_vpc(&f->c, f->acct, &def, err, sizeof(err));
	json_t *v = json_object_get(json_object_get(d, "vpcs"), nb_json_str(def, "id"));
	assert_non_null(v);
	assert_true(nb_json_int(v, "vni", 0) >= 1);
	assert_string_equal(nb_json_str(v, "cidr"), "172.31.0.0/16");
	assert_string_equal(nb_json_str(json_array_get(json_object_get(v, "subnets"), 0), "gateway"),
			    "172.31.0.1");
	/* the first instance: nic and metadata */
	inst = json_array_get(json_object_get(d, "instances"), 0);
	assert_string_equal(nb_json_str(inst, "id"), a);
	assert_string_equal(nb_json_str(inst, "ip"), "172.31.0.4");
	nic = json_array_get(json_object_get(inst, "nics"), 0);
	assert_int_equal(nb_json_int(nic, "device_index", -1), 0);
	assert_string_equal(nb_json_str(nic, "ip"), "172.31.0.4");
	assert_string_equal(nb_json_str(nic, "mac"), nb_json_str(inst, "mac"));
	assert_int_equal(nb_json_int(nic, "prefix", 0), 20);
	assert_string_equal(nb_json_str(nic, "gateway"), "172.31.0.1");
	assert_string_equal(nb_json_str(nic, "vpc_id"), nb_json_str(def, "id"));
	assert_string_equal(nb_json_str(nic, "public_ip"), "198.51.100.1");
	assert_int_equal(strncmp(nb_json_str_or(nic, "eni_id"), "eni-", 4), 0);
	assert_string_equal(json_string_value(json_array_get(json_object_get(nic, "security_groups"),
							     0)),
			    wid);
	md = json_object_get(inst, "metadata");
	assert_string_equal(nb_json_str(md, "instance_id"), a);
	assert_string_equal(nb_json_str(md, "local_ipv4"), "172.31.0.4");
	assert_string_equal(nb_json_str(md, "hostname"), "ip-172-31-0-4.nubo-1.compute.internal");
	assert_string_equal(nb_json_str(md, "public_ipv4"), "198.51.100.1");
	assert_string_equal(nb_json_str(md, "public_hostname"),
			    "ec2-198-51-100-1.nubo-1.compute.nubo");
	assert_string_equal(nb_json_str(md, "public_key"), "ssh-ed25519 AAAAtest mykey");
	assert_string_equal(nb_json_str(md, "key_name"), "mykey");
	assert_string_equal(nb_json_str(md, "http_tokens"), "required");
	assert_int_equal(nb_json_int(md, "http_put_response_hop_limit", 0), 2);
	assert_string_equal(nb_json_str(md, "http_endpoint"), "enabled");
	assert_string_equal(nb_json_str(md, "account_id"), f->acct);
	assert_string_equal(nb_json_str(md, "availability_zone"), "nubo-1a");
	assert_string_equal(json_string_value(json_array_get(json_object_get(md, "security_groups"),
							     0)),
			    "web");
	assert_null(json_object_get(md, "user_data"));
	/* the second has no elastic IP */
	inst = json_array_get(json_object_get(d, "instances"), 1);
	assert_null(json_object_get(json_array_get(json_object_get(inst, "nics"), 0), "public_ip"));
	assert_null(json_object_get(json_object_get(inst, "metadata"), "public_ipv4"));
	assert_string_equal(nb_json_str(json_object_get(inst, "metadata"), "http_tokens"),
			    "optional");
	json_decref(d);
	d = NULL;

	/* a revoke or a terminate changes the generation and what is resolved */
	json_t *host = NULL;
	nb_store_hosts_list(f->st, &hosts);
	const char *hid = nb_json_str(json_array_get(hosts, 0), "id");
	nb_store_host_get(f->st, hid, &host);
	int64_t gen = nb_json_int(host, "generation", 0);
	json_decref(host);
	terminate(f, b);
	nb_core_net_changed(&f->c, nb_json_str(def, "id"));
	assert_int_equal(nb_core_agent_desired(&f->c, hid, gen, 0, &d), 0);
	assert_true(nb_json_int(d, "generation", 0) > gen);
	self = json_object_get(json_array_get(json_object_get(find_nic_group(d, wid), "ingress"), 1),
			       "cidrs");
	assert_int_equal(json_array_size(self), 1);
	json_decref(d);
	d = NULL;
	gen = 0;
	nb_store_host_get(f->st, hid, &host);
	gen = nb_json_int(host, "generation", 0);
	json_decref(host);
	rules = json_pack("[{s:s, s:i, s:i, s:s}]", "protocol", "tcp", "from_port", 80, "to_port",
			  80, "cidr", "0.0.0.0/0");
	assert_int_equal(nb_core_sg_rules(&f->c, f->acct, wid, 0, 0, rules, NULL, err, sizeof(err),
					  &code),
			 0);
	json_decref(rules);
	assert_int_equal(nb_core_agent_desired(&f->c, hid, gen, 0, &d), 0);
	assert_true(nb_json_int(d, "generation", 0) > gen);
	assert_int_equal(json_array_size(json_object_get(find_nic_group(d, wid), "ingress")), 1);
	json_decref(d);
	/* terminating the first disassociates its address, which stays allocated */
	terminate(f, a);
	json_t *addrs = NULL;
	assert_int_equal(nb_core_addresses(&f->c, f->acct, &addrs), 0);
	assert_int_equal(json_array_size(addrs), 1);
	assert_null(nb_json_str(json_array_get(addrs, 0), "association_id"));
	json_decref(addrs);
	json_decref(hosts);
	json_decref(def);
	json_decref(web);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(transitions), cmocka_unit_test(actions_and_states),
		cmocka_unit_test(reports),     cmocka_unit_test(placement),
		cmocka_unit_test(addresses),   cmocka_unit_test(secrets),
		cmocka_unit_test_setup_teardown(ipam_default_vpc, net_setup, net_teardown),
		cmocka_unit_test_setup_teardown(ipam_small_subnet_fills, net_setup, net_teardown),
		cmocka_unit_test_setup_teardown(old_instances_adopted, net_setup, net_teardown),
		cmocka_unit_test_setup_teardown(old_instances_without_room_stay_without, net_setup,
						net_teardown),
		cmocka_unit_test_setup_teardown(ipam_burst_no_duplicates, net_setup, net_teardown),
		cmocka_unit_test_setup_teardown(vni_unique, net_setup, net_teardown),
		cmocka_unit_test_setup_teardown(desired_state_groups_and_metadata, net_setup,
						net_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
