/* common: config files, buffers with ceilings, sizes, ids, nb_run. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/config.h"
#include "common/err.h"
#include "common/util.h"

static const struct nb_conf_key schema[] = {
	{"state_dir", NB_CONF_STR, "/var/lib/nubo", "doc"},
	{"port", NB_CONF_INT, "8787", "doc"},
	{"max", NB_CONF_SIZE, "64M", "doc"},
	{"network", NB_CONF_BOOL, "true", "doc"},
	{NULL, 0, NULL, NULL},
};

static char *write_tmp(const char *text)
{
	static char path[64];
	int fd;

	snprintf(path, sizeof(path), "/tmp/nb-test-conf-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

static void config_defaults_and_file(void **state)
{
	struct nb_config cfg;
	char err[256] = "";
	char *path = write_tmp("# comment\n\nstate_dir = /srv/nubo\nport=9000\n"
			       "max = 2G\nnetwork = \"no\"\n");
	(void)state;

	nb_config_init(&cfg, schema);
	assert_string_equal(nb_config_str(&cfg, "state_dir"), "/var/lib/nubo");
	assert_int_equal(nb_config_int(&cfg, "port"), 8787);
	assert_int_equal(nb_config_size(&cfg, "max"), 64ull << 20);
	assert_int_equal(nb_config_load(&cfg, path, 0, err, sizeof(err)), 0);
	assert_string_equal(nb_config_str(&cfg, "state_dir"), "/srv/nubo");
	assert_int_equal(nb_config_int(&cfg, "port"), 9000);
	assert_int_equal(nb_config_size(&cfg, "max"), 2ull << 30);
	assert_false(nb_config_bool(&cfg, "network"));
	assert_int_equal(nb_config_set(&cfg, "port", "1", err, sizeof(err)), 0);
	assert_int_equal(nb_config_int(&cfg, "port"), 1);
	unlink(path);
	nb_config_free(&cfg);
}

static void config_errors_name_what_was_wrong(void **state)
{
	struct nb_config cfg;
	char err[256] = "";
	char *path = write_tmp("port = 1\nbogus = 2\n");
	(void)state;

	nb_config_init(&cfg, schema);
	assert_int_equal(nb_config_load(&cfg, path, 0, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, ":2:"));
	assert_non_null(strstr(err, "unknown key 'bogus'"));
	unlink(path);
	path = write_tmp("port = eighty\n");
	assert_int_equal(nb_config_load(&cfg, path, 0, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "'eighty' is not an integer"));
	unlink(path);
	path = write_tmp("just a line\n");
	assert_int_equal(nb_config_load(&cfg, path, 0, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "expected 'key = value'"));
	unlink(path);
	assert_int_equal(nb_config_set(&cfg, "max", "12Q", err, sizeof(err)), -EINVAL);
	assert_int_equal(nb_config_set(&cfg, "network", "maybe", err, sizeof(err)), -EINVAL);
	/* a missing optional file is fine, a missing required one is not */
	assert_int_equal(nb_config_load(&cfg, "/nonexistent/x.conf", 1, err, sizeof(err)), 0);
	assert_int_equal(nb_config_load(&cfg, "/nonexistent/x.conf", 0, err, sizeof(err)), -ENOENT);
	nb_config_free(&cfg);
}

static void buf_ceiling(void **state)
{
	struct nb_buf b;
	(void)state;

	nb_buf_init(&b, 8);
	assert_int_equal(nb_buf_puts(&b, "abcd"), 0);
	assert_int_equal(nb_buf_printf(&b, "%d", 1234), 0);
	assert_string_equal(b.data, "abcd1234");
	assert_int_equal(nb_buf_puts(&b, "x"), -E2BIG);
	assert_int_equal(b.len, 8);
	nb_buf_consume(&b, 4);
	assert_string_equal(b.data, "1234");
	nb_buf_free(&b);
}

static void sizes_and_numbers(void **state)
{
	uint64_t v;
	(void)state;

	assert_int_equal(nb_parse_size("512", &v), 0);
	assert_int_equal(v, 512);
	assert_int_equal(nb_parse_size("64M", &v), 0);
	assert_int_equal(v, 64ull << 20);
	assert_int_equal(nb_parse_size("1GiB", &v), 0);
	assert_int_equal(v, 1ull << 30);
	assert_int_equal(nb_parse_size("-1", &v), -EINVAL);
	assert_int_equal(nb_parse_size("5X", &v), -EINVAL);
	assert_int_equal(nb_parse_size("99999999999T", &v), -ERANGE);
	assert_int_equal(nb_parse_u64("18446744073709551616", &v), -ERANGE);
	assert_int_equal(nb_parse_u64("12a", &v), -EINVAL);
	assert_int_equal(nb_parse_u64("", &v), -EINVAL);
}

static void ids(void **state)
{
	char id[32], id2[32];
	(void)state;

	assert_int_equal(nb_id_new("i", id, sizeof(id)), 0);
	assert_int_equal(strlen(id), 19);
	assert_true(nb_id_valid("i", id));
	assert_int_equal(nb_id_new("i", id2, sizeof(id2)), 0);
	assert_string_not_equal(id, id2);
	assert_false(nb_id_valid("ami", id));
	assert_false(nb_id_valid("i", "i-0123456789ABCDEF0"));
	assert_false(nb_id_valid("i", "i-../../etc/passwd"));
	assert_false(nb_id_valid("i", "i-0123"));
	assert_int_equal(nb_id_new("ami", id, 10), -ENOSPC);
}

static void run_collects_output_and_times_out(void **state)
{
	struct nb_buf out;
	const char *ok[] = {"sh", "-c", "echo hello; exit 3", NULL};
	const char *slow[] = {"sh", "-c", "exec sleep 10", NULL};
	(void)state;

	nb_buf_init(&out, 1024);
	assert_int_equal(nb_run(ok, 5000, &out), 3);
	assert_string_equal(out.data, "hello\n");
	int64_t t0 = nb_now_ms();
	assert_int_equal(nb_run(slow, 200, NULL), -ETIMEDOUT);
	assert_true(nb_now_ms() - t0 < 5000);
	nb_buf_free(&out);
}

static void error_table(void **state)
{
	(void)state;
	assert_int_equal(nb_err_http_status(-NB_E_NOT_FOUND), 404);
	assert_string_equal(nb_err_code(-NB_E_CAPACITY), "InsufficientInstanceCapacity");
	assert_int_equal(nb_err_http_status(-NB_E_STATE), 409);
	assert_string_equal(nb_err_code(-ENOENT), "NotFound");
	assert_int_equal(nb_err_http_status(-EIO), 500);
}

/* nb_iso8601's arithmetic path agrees with gmtime_r for every kind of date:
 * the epoch, leap days, century years, the last millisecond of 9999, and a
 * spread of instants in between. */
static void iso8601_matches_gmtime(void **state)
{
	static const int64_t fixed[] = {0,
					999,
					951782400000,	  /* 2000-02-29 */
					4107542399999,	  /* 2100-02-28T23:59:59.999 */
					4107542400000,	  /* 2100-03-01 */
					1798761599123,	  /* 2026-12-31T23:59:59.123 */
					253402300799999}; /* 9999-12-31T23:59:59.999 */
	char got[32], want[64];
	uint64_t x = 88172645463325252ull;

	(void)state;
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]) + 20000; i++) {
		int64_t ms;
		time_t t;
		struct tm tm;
		if (i < sizeof(fixed) / sizeof(fixed[0])) {
			ms = fixed[i];
		} else {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			ms = (int64_t)(x % 253402300800000ull);
		}
		t = (time_t)(ms / 1000);
		gmtime_r(&t, &tm);
		snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
			 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
		nb_iso8601(ms, got, sizeof(got));
		assert_string_equal(got, want);
	}
	nb_iso8601(951782400000, got, sizeof(got));
	assert_string_equal(got, "2000-02-29T00:00:00.000Z");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(config_defaults_and_file),
		cmocka_unit_test(config_errors_name_what_was_wrong),
		cmocka_unit_test(buf_ceiling),
		cmocka_unit_test(sizes_and_numbers),
		cmocka_unit_test(ids),
		cmocka_unit_test(run_collects_output_and_times_out),
		cmocka_unit_test(error_table),
		cmocka_unit_test(iso8601_matches_gmtime),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
