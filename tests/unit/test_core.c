/* core: the instance state machine and placement, both pure. */
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(transitions), cmocka_unit_test(actions_and_states),
		cmocka_unit_test(reports),     cmocka_unit_test(placement),
		cmocka_unit_test(addresses),   cmocka_unit_test(secrets),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
