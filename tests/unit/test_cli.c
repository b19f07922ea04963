/* The nubo CLI's pure pieces: argument parsing, tables, progress bars,
 * size/age/time formatting, and the small parsers the console and the
 * builder use. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/sigv4.h"
#include "cli/cli.h"
#include "common/err.h"
#include "common/util.h"

static const struct nb_cli_opt opts[] = {
    {"type", 't', "TYPE", "instance type"},
    {"count", 'n', "N", "how many"},
    {"wait", 'w', NULL, "wait"},
    {"all", 0, NULL, "all"},
    {NULL, 0, NULL, NULL},
};

static int parse(struct nb_cli_args *a, int argc, char **argv, int flags)
{
	memset(a, 0, sizeof(*a));
	assert_int_equal(nb_cli_args_add(a, opts), 0);
	return nb_cli_args_parse(a, argc, argv, flags);
}

static void test_args_forms(void **state)
{
	char *argv[] = {"tiny", "--type", "t1.nano", "--count=3", "-w", "extra", "--", "--all"};
	struct nb_cli_args a;
	uint64_t n = 0;

	(void)state;
	assert_int_equal(parse(&a, 8, argv, 0), 0);
	assert_string_equal(nb_cli_args_get(&a, "type"), "t1.nano");
	assert_string_equal(nb_cli_args_get(&a, "count"), "3");
	assert_true(nb_cli_args_flag(&a, "wait"));
	/* after "--" an option-looking word is a positional */
	assert_false(nb_cli_args_flag(&a, "all"));
	assert_int_equal(a.npos, 3);
	assert_string_equal(a.pos[0], "tiny");
	assert_string_equal(a.pos[1], "extra");
	assert_string_equal(a.pos[2], "--all");
	assert_int_equal(nb_cli_args_u64(&a, "count", 1, 10, &n), 0);
	assert_int_equal(n, 3);
	/* an absent option leaves the default alone */
	assert_null(nb_cli_args_get(&a, "all"));
	n = 7;
	assert_int_equal(nb_cli_args_u64(&a, "all", 1, 10, &n), 1);
	assert_int_equal(n, 7);
}

static void test_args_short_and_last_wins(void **state)
{
	char *argv[] = {"-t", "a", "--type", "b", "-n", "2"};
	struct nb_cli_args a;

	(void)state;
	assert_int_equal(parse(&a, 6, argv, 0), 0);
	assert_string_equal(nb_cli_args_get(&a, "type"), "b");
	assert_string_equal(nb_cli_args_get(&a, "count"), "2");
	assert_int_equal(a.npos, 0);
}

static void test_args_errors(void **state)
{
	struct nb_cli_args a;
	char *unknown[] = {"--colour"};
	char *missing[] = {"x", "--type"};
	char *flagval[] = {"--wait=yes"};
	char *badshort[] = {"-q"};
	char *bundled[] = {"-wt"};
	char *range[] = {"--count", "0"};
	char *notnum[] = {"--count", "3x"};
	uint64_t n;

	(void)state;
	assert_int_equal(parse(&a, 1, unknown, 0), -EINVAL);
	assert_non_null(strstr(a.err, "--colour"));
	assert_int_equal(parse(&a, 2, missing, 0), -EINVAL);
	assert_non_null(strstr(a.err, "needs a value"));
	assert_int_equal(parse(&a, 1, flagval, 0), -EINVAL);
	assert_non_null(strstr(a.err, "takes no value"));
	assert_int_equal(parse(&a, 1, badshort, 0), -EINVAL);
	assert_int_equal(parse(&a, 1, bundled, 0), -EINVAL);
	assert_int_equal(parse(&a, 2, range, 0), 0);
	assert_int_equal(nb_cli_args_u64(&a, "count", 1, 1000, &n), -EINVAL);
	assert_non_null(strstr(a.err, "1 to 1000"));
	assert_int_equal(parse(&a, 2, notnum, 0), 0);
	assert_int_equal(nb_cli_args_u64(&a, "count", 1, 1000, &n), -EINVAL);
}

static void test_args_ceilings(void **state)
{
	struct nb_cli_args a;
	char *many[NB_CLI_MAX_POS + 1];
	char *longarg[1];
	char *big = malloc(NB_CLI_MAX_ARG_LEN + 2);

	(void)state;
	for (int i = 0; i <= NB_CLI_MAX_POS; i++)
		many[i] = "id";
	assert_int_equal(parse(&a, NB_CLI_MAX_POS, many, 0), 0);
	assert_int_equal(parse(&a, NB_CLI_MAX_POS + 1, many, 0), -EINVAL);
	assert_non_null(big);
	memset(big, 'x', NB_CLI_MAX_ARG_LEN + 1);
	big[NB_CLI_MAX_ARG_LEN + 1] = '\0';
	longarg[0] = big;
	assert_int_equal(parse(&a, 1, longarg, 0), -EINVAL);
	free(big);
}

static void test_args_stop_at_positional(void **state)
{
	char *argv[] = {"--json", "--endpoint", "http://x:1", "ls", "--all"};
	static const struct nb_cli_opt g[] = {
	    {"json", 0, NULL, "json"},
	    {"endpoint", 0, "URL", "endpoint"},
	    {NULL, 0, NULL, NULL},
	};
	struct nb_cli_args a;

	(void)state;
	memset(&a, 0, sizeof(a));
	nb_cli_args_add(&a, g);
	assert_int_equal(nb_cli_args_parse(&a, 5, argv, NB_CLI_STOP_AT_POS), 0);
	assert_int_equal(a.next, 3);
	assert_true(nb_cli_args_flag(&a, "json"));
	assert_string_equal(nb_cli_args_get(&a, "endpoint"), "http://x:1");
	assert_int_equal(a.npos, 0);
}

static void test_args_help(void **state)
{
	struct nb_buf b;

	(void)state;
	nb_buf_init(&b, 0);
	assert_int_equal(nb_cli_args_help(&b, opts), 0);
	assert_non_null(strstr(b.data, "  -t, --type TYPE  instance type\n"));
	assert_non_null(strstr(b.data, "      --all        all\n"));
	nb_buf_free(&b);
}

static char *render(const struct nb_cli_table *t)
{
	struct nb_buf b;

	nb_buf_init(&b, 0);
	assert_int_equal(nb_cli_table_render(t, &b), 0);
	return nb_buf_steal(&b);
}

static void test_table_widths(void **state)
{
	static const char *const head[] = {"id", "Name", "State", NULL};
	const char *r1[] = {"i-1", "web-server", "running"};
	const char *r2[] = {"i-22", NULL, ""};
	struct nb_cli_table t;
	char *out;

	(void)state;
	assert_int_equal(nb_cli_table_init(&t, head), 0);
	assert_int_equal(nb_cli_table_add(&t, r1), 0);
	assert_int_equal(nb_cli_table_add(&t, r2), 0);
	out = render(&t);
	assert_string_equal(out, "ID    NAME        STATE\n"
	                         "i-1   web-server  running\n"
	                         "i-22  -           -\n");
	free(out);
	nb_cli_table_free(&t);
}

static void test_table_utf8_and_controls(void **state)
{
	static const char *const head[] = {"NAME", "X", NULL};
	const char *r1[] = {"caf\xc3\xa9", "1"}; /* 4 columns wide, 5 bytes */
	const char *r2[] = {"a\nb\x1b[2J", "2"}; /* controls must not reach the terminal */
	struct nb_cli_table t;
	char *out;

	(void)state;
	assert_int_equal(nb_cli_str_width("caf\xc3\xa9"), 4);
	assert_int_equal(nb_cli_table_init(&t, head), 0);
	assert_int_equal(nb_cli_table_add(&t, r1), 0);
	assert_int_equal(nb_cli_table_add(&t, r2), 0);
	out = render(&t);
	assert_string_equal(out, "NAME     X\n"
	                         "caf\xc3\xa9     1\n"
	                         "a?b?[2J  2\n");
	free(out);
	nb_cli_table_free(&t);
}

static void test_table_empty(void **state)
{
	static const char *const head[] = {"ID", "NAME", NULL};
	struct nb_cli_table t;
	char *out;

	(void)state;
	assert_int_equal(nb_cli_table_init(&t, head), 0);
	out = render(&t);
	assert_string_equal(out, "ID  NAME\n");
	free(out);
	nb_cli_table_free(&t);
}

static void test_table_cell_ceiling(void **state)
{
	static const char *const head[] = {"A", NULL};
	struct nb_cli_table t;
	char *big = malloc(NB_CLI_TABLE_MAX_CELL * 2 + 1);
	const char *row[1];
	char *out;

	(void)state;
	assert_non_null(big);
	memset(big, 'x', NB_CLI_TABLE_MAX_CELL * 2);
	big[NB_CLI_TABLE_MAX_CELL * 2] = '\0';
	row[0] = big;
	assert_int_equal(nb_cli_table_init(&t, head), 0);
	assert_int_equal(nb_cli_table_add(&t, row), 0);
	out = render(&t);
	/* header line, then a cell cut at the ceiling */
	assert_int_equal(strlen(strchr(out, '\n') + 1), NB_CLI_TABLE_MAX_CELL + 1);
	free(out);
	free(big);
	nb_cli_table_free(&t);
}

static void test_fmt_size(void **state)
{
	char b[32];

	(void)state;
	nb_cli_fmt_size(0, b, sizeof(b));
	assert_string_equal(b, "0 B");
	nb_cli_fmt_size(1023, b, sizeof(b));
	assert_string_equal(b, "1023 B");
	nb_cli_fmt_size(1024, b, sizeof(b));
	assert_string_equal(b, "1 KiB");
	nb_cli_fmt_size(1025, b, sizeof(b));
	assert_string_equal(b, "1.0 KiB");
	nb_cli_fmt_size(1536, b, sizeof(b));
	assert_string_equal(b, "1.5 KiB");
	nb_cli_fmt_size(64ull << 20, b, sizeof(b));
	assert_string_equal(b, "64 MiB");
	nb_cli_fmt_size((5ull << 30) / 2, b, sizeof(b));
	assert_string_equal(b, "2.5 GiB");
	nb_cli_fmt_size(3ull << 40, b, sizeof(b));
	assert_string_equal(b, "3 TiB");
	nb_cli_fmt_size((3ull << 40) + (100ull << 30), b, sizeof(b));
	assert_string_equal(b, "3.1 TiB");
	nb_cli_fmt_size(UINT64_MAX, b, sizeof(b));
	assert_string_equal(b, "16 EiB");
}

static void test_fmt_age(void **state)
{
	char b[16];

	(void)state;
	nb_cli_fmt_age(5, b, sizeof(b));
	assert_string_equal(b, "5s");
	nb_cli_fmt_age(59, b, sizeof(b));
	assert_string_equal(b, "59s");
	nb_cli_fmt_age(60, b, sizeof(b));
	assert_string_equal(b, "1m");
	nb_cli_fmt_age(3 * 60 + 59, b, sizeof(b));
	assert_string_equal(b, "3m");
	nb_cli_fmt_age(2 * 3600 + 100, b, sizeof(b));
	assert_string_equal(b, "2h");
	nb_cli_fmt_age(4 * 86400 + 3600, b, sizeof(b));
	assert_string_equal(b, "4d");
	nb_cli_fmt_age(-30, b, sizeof(b)); /* clock skew between client and controller */
	assert_string_equal(b, "0s");
}

static void test_parse_time(void **state)
{
	int64_t ms;

	(void)state;
	assert_int_equal(nb_cli_parse_time("1970-01-01T00:00:00Z", &ms), 0);
	assert_int_equal(ms, 0);
	assert_int_equal(nb_cli_parse_time("2026-11-22T05:01:02.000Z", &ms), 0);
	assert_int_equal(ms, 1795323662000LL);
	assert_int_equal(nb_cli_parse_time("2026-11-22T05:01:02.5Z", &ms), 0);
	assert_int_equal(ms, 1795323662500LL);
	assert_int_equal(nb_cli_parse_time("2000-02-29T23:59:59.123456Z", &ms), 0);
	assert_int_equal(ms, 951868799123LL);
	assert_int_equal(nb_cli_parse_time("1969-12-31T23:59:59Z", &ms), 0);
	assert_int_equal(ms, -1000);
	assert_int_equal(nb_cli_parse_time("2026-11-22T05:01:02+00:00", &ms), 0);
	assert_int_equal(ms, 1795323662000LL);
	assert_int_equal(nb_cli_parse_time("", &ms), -EINVAL);
	assert_int_equal(nb_cli_parse_time("2026-13-01T00:00:00Z", &ms), -EINVAL);
	assert_int_equal(nb_cli_parse_time("2026-11-22T25:00:00Z", &ms), -EINVAL);
	assert_int_equal(nb_cli_parse_time("2026-11-22T05:01:02.Z", &ms), -EINVAL);
	assert_int_equal(nb_cli_parse_time("2026-11-22T05:01:02Zjunk", &ms), -EINVAL);
	assert_int_equal(nb_cli_parse_time(NULL, &ms), -EINVAL);
}

static void test_fmt_since(void **state)
{
	char b[16];
	int64_t now = 1795323662000LL;

	(void)state;
	nb_cli_fmt_since("2026-11-22T05:01:02.000Z", now + 5500, b, sizeof(b));
	assert_string_equal(b, "5s");
	nb_cli_fmt_since("2026-11-22T05:01:02.000Z", now + 3LL * 3600 * 1000, b, sizeof(b));
	assert_string_equal(b, "3h");
	nb_cli_fmt_since("garbage", now, b, sizeof(b));
	assert_string_equal(b, "-");
	nb_cli_fmt_since(NULL, now, b, sizeof(b));
	assert_string_equal(b, "-");
}

static void test_base64(void **state)
{
	static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *want[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
	                             "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	const unsigned char bin[] = {0xff, 0xfe, 0x00, 0x3e, 0x3f};

	(void)state;
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		struct nb_buf b;
		nb_buf_init(&b, 0);
		assert_int_equal(nb_cli_base64(in[i], strlen(in[i]), &b), 0);
		assert_string_equal(b.data, want[i]);
		nb_buf_free(&b);
	}
	{
		struct nb_buf b;
		nb_buf_init(&b, 0);
		assert_int_equal(nb_cli_base64(bin, sizeof(bin), &b), 0);
		assert_string_equal(b.data, "//4APj8=");
		nb_buf_free(&b);
	}
}

static void test_progress_render(void **state)
{
	char line[256];

	(void)state;
	nb_cli_progress_render(line, sizeof(line), 80, "disk.qcow2", 0.5, "32 MiB/64 MiB");
	assert_string_equal(line, "disk.qcow2 [###############...............]  50% 32 MiB/64 MiB");
	nb_cli_progress_render(line, sizeof(line), 80, "x", 1.0, NULL);
	assert_string_equal(line, "x [##############################] 100%");
	nb_cli_progress_render(line, sizeof(line), 80, "x", 0.0, "");
	assert_string_equal(line, "x [..............................]   0%");
	/* past the end is clamped */
	nb_cli_progress_render(line, sizeof(line), 80, "x", 3.0, "");
	assert_non_null(strstr(line, "100%"));
	/* unknown fraction: no bar, no percentage */
	nb_cli_progress_render(line, sizeof(line), 80, "build", -1, "fetching");
	assert_string_equal(line, "build fetching");
}

static void test_progress_narrow(void **state)
{
	char line[256];

	(void)state;
	/* too narrow for a bar of 10: the bar goes, the line still fits */
	nb_cli_progress_render(line, sizeof(line), 30, "disk.qcow2", 0.25,
	                       "16 MiB/64 MiB  4 MiB/s");
	assert_null(strchr(line, '['));
	assert_true(nb_cli_str_width(line) <= 29);
	assert_true(strncmp(line, "disk.qcow2  25%", 15) == 0);
	/* the bar shrinks to what is left of the width */
	nb_cli_progress_render(line, sizeof(line), 40, "a", 0.5, "info");
	assert_int_equal(nb_cli_str_width(line), 39);
	assert_non_null(strchr(line, '['));
	/* a long UTF-8 message is cut on a character boundary */
	nb_cli_progress_render(line, sizeof(line), 12, "b", 0.1,
	                       "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
	assert_int_equal(nb_cli_str_width(line), 11);
	assert_string_equal(line, "b  10% \xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
}

static void test_fmt_transfer(void **state)
{
	char b[96];

	(void)state;
	nb_cli_fmt_transfer(12ull << 20, 64ull << 20, 8.5 * 1048576, b, sizeof(b));
	assert_string_equal(b, "12 MiB/64 MiB  8.5 MiB/s");
	nb_cli_fmt_transfer(512, 0, 0, b, sizeof(b));
	assert_string_equal(b, "512 B");
}

static void test_progress_line(void **state)
{
	int pct;
	const char *msg;

	(void)state;
	assert_int_equal(nb_cli_parse_progress_line("progress 45 fetching linux-image", &pct, &msg),
	                 0);
	assert_int_equal(pct, 45);
	assert_string_equal(msg, "fetching linux-image");
	assert_int_equal(nb_cli_parse_progress_line("progress 100", &pct, &msg), 0);
	assert_int_equal(pct, 100);
	assert_string_equal(msg, "");
	assert_int_equal(nb_cli_parse_progress_line("progress\t7.5%  x", &pct, &msg), 0);
	assert_int_equal(pct, 7);
	assert_string_equal(msg, "x");
	assert_int_equal(nb_cli_parse_progress_line("progress 250 over", &pct, &msg), 0);
	assert_int_equal(pct, 100);
	assert_int_equal(nb_cli_parse_progress_line("progress", &pct, &msg), -EINVAL);
	assert_int_equal(nb_cli_parse_progress_line("progress x", &pct, &msg), -EINVAL);
	assert_int_equal(nb_cli_parse_progress_line("progress 4x", &pct, &msg), -EINVAL);
	assert_int_equal(nb_cli_parse_progress_line("progressive 4", &pct, &msg), -EINVAL);
	assert_int_equal(nb_cli_parse_progress_line("Get:1 http://deb", &pct, &msg), -EINVAL);
}

static void test_parse_endpoint(void **state)
{
	char host[64];
	unsigned port;

	(void)state;
	assert_int_equal(nb_cli_parse_endpoint("http://127.0.0.1:8787", host, sizeof(host), &port),
	                 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 8787);
	assert_int_equal(nb_cli_parse_endpoint("http://[::1]:9000/", host, sizeof(host), &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 9000);
	assert_int_equal(nb_cli_parse_endpoint("http://ctl.example", host, sizeof(host), &port), 0);
	assert_string_equal(host, "ctl.example");
	assert_int_equal(port, 80);
	assert_int_equal(nb_cli_parse_endpoint("https://x:1", host, sizeof(host), &port),
	                 -EPROTONOSUPPORT);
	assert_int_equal(nb_cli_parse_endpoint("http://x:0", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(nb_cli_parse_endpoint("http://x:65536", host, sizeof(host), &port),
	                 -EINVAL);
	assert_int_equal(nb_cli_parse_endpoint("http://x:80junk", host, sizeof(host), &port),
	                 -EINVAL);
	assert_int_equal(nb_cli_parse_endpoint("http://:80", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(nb_cli_parse_endpoint("http://[::1", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(
	    nb_cli_parse_endpoint("http://a-very-long-host-name-that-does-not-fit", host, 8, &port),
	    -EINVAL);
}

static void test_status_line(void **state)
{
	int st;

	(void)state;
	assert_int_equal(nb_cli_parse_status_line("HTTP/1.1 101 Switching Protocols\r\n", &st), 0);
	assert_int_equal(st, 101);
	assert_int_equal(nb_cli_parse_status_line("HTTP/1.0 404 Not Found", &st), 0);
	assert_int_equal(st, 404);
	assert_int_equal(nb_cli_parse_status_line("HTTP/1.1 200\r\n", &st), 0);
	assert_int_equal(st, 200);
	assert_int_equal(nb_cli_parse_status_line("HTTP/2 200", &st), -EINVAL);
	assert_int_equal(nb_cli_parse_status_line("HTTP/1.1 20", &st), -EINVAL);
	assert_int_equal(nb_cli_parse_status_line("HTTP/1.1 2000", &st), -EINVAL);
	assert_int_equal(nb_cli_parse_status_line("SSH-2.0-OpenSSH", &st), -EINVAL);
}

static void test_log_offset(void **state)
{
	const char *prev = "boot\nline one\nline two\n";
	size_t plen = strlen(prev);

	(void)state;
	/* nothing printed yet: everything is new */
	assert_int_equal(nb_cli_log_new_offset("", 0, 0, "abc", 3), 0);
	/* the log grew */
	{
		const char *cur = "boot\nline one\nline two\nline three\n";
		assert_int_equal(nb_cli_log_new_offset(prev + plen - 9, 9, plen, cur, strlen(cur)),
		                 plen);
	}
	/* nothing new */
	assert_int_equal(nb_cli_log_new_offset(prev + plen - 9, 9, plen, prev, plen), plen);
	/* the bounded log dropped its head: the tail is found further left */
	{
		const char *cur = "one\nline two\nline three\n";
		size_t off = nb_cli_log_new_offset(prev + plen - 9, 9, plen, cur, strlen(cur));
		assert_string_equal(cur + off, "line three\n");
	}
	/* the log was reset (the instance started again): everything is new */
	{
		const char *cur = "boot again\n";
		assert_int_equal(nb_cli_log_new_offset(prev + plen - 9, 9, plen, cur, strlen(cur)),
		                 0);
	}
}

static void test_url_escape(void **state)
{
	struct nb_buf b;

	(void)state;
	nb_buf_init(&b, 0);
	assert_int_equal(nb_cli_url_escape("i-0123abc", &b), 0);
	assert_string_equal(b.data, "i-0123abc");
	nb_buf_reset(&b);
	assert_int_equal(nb_cli_url_escape("a/b c?d#%", &b), 0);
	assert_string_equal(b.data, "a%2Fb%20c%3Fd%23%25");
	nb_buf_free(&b);
}

/* ---- signing with an access key ---- */

#define KID "AKIDEXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define T_20261122_050102 1795323662 /* 2026-11-22T05:01:02Z */

static struct nb_cli_key test_key(const char *region)
{
	struct nb_cli_key k;

	memset(&k, 0, sizeof(k));
	strcpy(k.id, KID);
	strcpy(k.secret, SECRET);
	strcpy(k.region, region);
	return k;
}

static void test_amz_date(void **state)
{
	char d[17];

	(void)state;
	assert_int_equal(nb_cli_amz_date(0, d), 0);
	assert_string_equal(d, "19700101T000000Z");
	assert_int_equal(nb_cli_amz_date(T_20261122_050102, d), 0);
	assert_string_equal(d, "20261122T050102Z");
	assert_int_equal(nb_cli_amz_date(951782400, d), 0); /* a leap day */
	assert_string_equal(d, "20000229T000000Z");
	assert_int_equal(nb_cli_amz_date(-1, d), -EINVAL);
	assert_string_equal(d, "");
	assert_int_equal(nb_cli_amz_date(253402300800LL, d), -EINVAL); /* year 10000 */
}

static void test_url_split(void **state)
{
	char a[32];
	const char *path = NULL;

	(void)state;
	assert_int_equal(nb_cli_url_split("http://127.0.0.1:8787", a, sizeof(a), &path), 0);
	assert_string_equal(a, "127.0.0.1:8787");
	assert_string_equal(path, "");
	assert_int_equal(nb_cli_url_split("https://u:p@w@ctl.example/nubo/", a, sizeof(a), &path),
	                 0);
	assert_string_equal(a, "ctl.example");
	assert_string_equal(path, "/nubo/");
	assert_int_equal(nb_cli_url_split("http://[::1]:9000/x", a, sizeof(a), NULL), 0);
	assert_string_equal(a, "[::1]:9000");
	assert_int_equal(nb_cli_url_split("ftp://x", a, sizeof(a), &path), -EPROTONOSUPPORT);
	assert_int_equal(nb_cli_url_split("http://", a, sizeof(a), &path), -EINVAL);
	assert_int_equal(nb_cli_url_split("http://user@/x", a, sizeof(a), &path), -EINVAL);
	assert_int_equal(nb_cli_url_split("http://h?q=1", a, sizeof(a), &path), -EINVAL);
	assert_int_equal(nb_cli_url_split("http://h#f", a, sizeof(a), &path), -EINVAL);
	assert_int_equal(nb_cli_url_split("http://a b", a, sizeof(a), &path), -EINVAL);
	assert_int_equal(nb_cli_url_split("http://a-host-name-longer-than-32-bytes.example", a,
	                                  sizeof(a), &path),
	                 -ENAMETOOLONG);
}

/* Expected signatures from an independent SigV4 implementation (Python's
 * hmac and hashlib following AWS's description), the first and the last
 * also checked against botocore's SigV4Auth. */
static void test_sign_known_answers(void **state)
{
	struct nb_cli_key k = test_key("nubo-1"), eu = test_key("eu-west-9");
	struct nb_cli_sig sig;
	char body_sha[65];
	const char *body = "{\"name\":\"acme\"}";

	(void)state;
	assert_int_equal(nb_cli_sign(&k, "GET", "127.0.0.1:8787", "/v1/instances?all=1", EMPTY_SHA,
	                             T_20261122_050102, &sig),
	                 0);
	assert_string_equal(sig.amz_date, "20261122T050102Z");
	assert_string_equal(sig.payload_hash, EMPTY_SHA);
	assert_string_equal(
	    sig.auth, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/nubo-1/nubo/"
	              "aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
	              "Signature=abce78b03f0548a8d4be119273e54732350a4b2db1085031ab37ffe6c1d46216");

	nb_sha256_hex(body, strlen(body), body_sha);
	assert_string_equal(body_sha,
	                    "c9f1eaf30f301fb079c6360ff9f0ac914c5d1fe95b167b89170717b0f24a3809");
	assert_int_equal(nb_cli_sign(&eu, "POST", "nubo.example", "/api/v1/accounts", body_sha,
	                             T_20261122_050102, &sig),
	                 0);
	assert_non_null(strstr(sig.auth, "Credential=AKIDEXAMPLE/20261122/eu-west-9/nubo/"));
	assert_non_null(
	    strstr(sig.auth,
	           "Signature=97d2ad56661bc4e5744a592ddc99d1a7394bea25f46d54c45b21c6741ead236f"));

	/* a streamed upload: NULL means UNSIGNED-PAYLOAD */
	assert_int_equal(
	    nb_cli_sign(&k, "PUT", "127.0.0.1:8787", "/v1/blobs", NULL, T_20261122_050102, &sig),
	    0);
	assert_string_equal(sig.payload_hash, "UNSIGNED-PAYLOAD");
	assert_non_null(
	    strstr(sig.auth,
	           "Signature=9235aab94a4d29fccd611495a4a41719d38c3e3c81e4abe4d039e1b2cc6c8253"));
}

/* What nubod does with a request: parse and verify with src/api/sigv4. */
static int verify_as_server(const char *method, const char *host, const char *path,
                            const char *query, const char *body_sha, const struct nb_cli_sig *sig,
                            const char *secret, const char *region, int64_t now)
{
	struct nb_kv h[4] = {{"Host", host},
	                     {"X-Amz-Date", sig->amz_date},
	                     {"X-Amz-Content-Sha256", sig->payload_hash},
	                     {"Authorization", sig->auth}};
	struct nb_sigv4_req r = {.method = method,
	                         .path = path,
	                         .query = query,
	                         .headers = h,
	                         .nheaders = 4,
	                         .body_sha256 = body_sha,
	                         .now = now};
	struct nb_sigv4_auth a;
	char err[256];
	int ret = nb_sigv4_parse(&r, &a, err, sizeof(err));

	if (ret < 0)
		return ret;
	return nb_sigv4_verify(&r, &a, secret, region, "nubo", err, sizeof(err));
}

static void test_sign_verified_by_server_code(void **state)
{
	struct nb_cli_key k = test_key("nubo-1");
	struct nb_cli_sig sig;
	const int64_t now = T_20261122_050102;

	(void)state;
	assert_int_equal(
	    nb_cli_sign(&k, "DELETE", "h:1", "/v1/keys/AKIA1?x=a%20b&a=1", EMPTY_SHA, now, &sig),
	    0);
	assert_int_equal(verify_as_server("DELETE", "h:1", "/v1/keys/AKIA1", "x=a%20b&a=1",
	                                  EMPTY_SHA, &sig, SECRET, "nubo-1", now + 60),
	                 0);
	/* what a user would get wrong, each refused */
	assert_int_equal(verify_as_server("DELETE", "h:1", "/v1/keys/AKIA1", "x=a%20b&a=1",
	                                  EMPTY_SHA, &sig, "not-the-secret", "nubo-1", now),
	                 -NB_E_SIG_MISMATCH);
	assert_int_equal(verify_as_server("DELETE", "h:1", "/v1/keys/AKIA1", "x=a%20b&a=1",
	                                  EMPTY_SHA, &sig, SECRET, "nubo-2", now),
	                 -NB_E_SIG_MISMATCH);
	assert_int_equal(verify_as_server("DELETE", "h:1", "/v1/keys/AKIA2", "x=a%20b&a=1",
	                                  EMPTY_SHA, &sig, SECRET, "nubo-1", now),
	                 -NB_E_SIG_MISMATCH);
	assert_int_equal(verify_as_server("DELETE", "h:2", "/v1/keys/AKIA1", "x=a%20b&a=1",
	                                  EMPTY_SHA, &sig, SECRET, "nubo-1", now),
	                 -NB_E_SIG_MISMATCH);
	assert_int_equal(verify_as_server("DELETE", "h:1", "/v1/keys/AKIA1", "x=a%20b&a=1",
	                                  EMPTY_SHA, &sig, SECRET, "nubo-1", now + 3600),
	                 -NB_E_EXPIRED);
	/* the body the server received is not the one signed */
	{
		char other[65];
		nb_sha256_hex("x", 1, other);
		assert_int_equal(verify_as_server("DELETE", "h:1", "/v1/keys/AKIA1", "x=a%20b&a=1",
		                                  other, &sig, SECRET, "nubo-1", now),
		                 -NB_E_SIG_MISMATCH);
	}
	/* an unsigned payload is accepted whatever the body */
	assert_int_equal(nb_cli_sign(&k, "PUT", "h:1", "/v1/blobs", NULL, now, &sig), 0);
	assert_int_equal(verify_as_server("PUT", "h:1", "/v1/blobs", NULL, EMPTY_SHA, &sig, SECRET,
	                                  "nubo-1", now),
	                 0);
	/* no path signs as "/" */
	assert_int_equal(nb_cli_sign(&k, "GET", "h:1", "", EMPTY_SHA, now, &sig), 0);
	assert_int_equal(
	    verify_as_server("GET", "h:1", "/", NULL, EMPTY_SHA, &sig, SECRET, "nubo-1", now), 0);
}

static void test_sign_errors(void **state)
{
	struct nb_cli_key k = test_key("nubo-1"), none;
	struct nb_cli_sig sig;
	char *long_path = malloc(NB_SIGV4_MAX_PATH + 2);

	(void)state;
	memset(&none, 0, sizeof(none));
	assert_int_equal(nb_cli_sign(&none, "GET", "h", "/", EMPTY_SHA, 0, &sig), -EINVAL);
	assert_string_equal(sig.auth, "");
	k.secret[0] = '\0';
	assert_int_equal(nb_cli_sign(&k, "GET", "h", "/", EMPTY_SHA, 0, &sig), -EINVAL);
	k = test_key("");
	assert_int_equal(nb_cli_sign(&k, "GET", "h", "/", EMPTY_SHA, 0, &sig), -EINVAL);
	k = test_key("nubo-1");
	assert_int_equal(nb_cli_sign(&k, "GET", "", "/", EMPTY_SHA, 0, &sig), -EINVAL);
	assert_int_equal(nb_cli_sign(&k, "GET", "h", "/", EMPTY_SHA, -5, &sig), -EINVAL);
	/* a key id the credential scope cannot carry */
	strcpy(k.id, "AKID/X");
	assert_int_equal(nb_cli_sign(&k, "GET", "h", "/", EMPTY_SHA, 0, &sig), -EINVAL);
	assert_string_equal(sig.auth, "");
	k = test_key("nubo-1");
	assert_non_null(long_path);
	memset(long_path, 'a', NB_SIGV4_MAX_PATH + 1);
	long_path[0] = '/';
	long_path[NB_SIGV4_MAX_PATH + 1] = '\0';
	assert_int_equal(nb_cli_sign(&k, "GET", "h", long_path, EMPTY_SHA, 0, &sig), -ENAMETOOLONG);
	free(long_path);
}

/* Splits "Name: value\r\n" lines of b (modified) into h; returns how many. */
static size_t split_lines(char *b, struct nb_kv *h, size_t max)
{
	size_t n = 0;
	char *p = b, *end;

	while (p && n < max && (end = strstr(p, "\r\n"))) {
		char *colon = strstr(p, ": ");
		assert_non_null(colon);
		*colon = '\0';
		*end = '\0';
		h[n].key = p;
		h[n++].value = colon + 2;
		p = end + 2;
	}
	return n;
}

static const char *find_kv(const struct nb_kv *h, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(h[i].key, key))
			return h[i].value;
	return NULL;
}

static void test_auth_lines(void **state)
{
	struct nb_cli_http h;
	struct nb_cli_key k = test_key("nubo-1");
	struct nb_buf b;
	struct nb_kv hd[8];
	struct nb_sigv4_req r = {0};
	struct nb_sigv4_auth a;
	char err[256];
	size_t n;

	(void)state;
	nb_buf_init(&b, 0);
	/* no credentials: no lines */
	assert_int_equal(nb_cli_http_init(&h, "http://127.0.0.1:8787", ""), 0);
	assert_int_equal(nb_cli_http_auth_lines(&h, "GET", "/v1/instances", EMPTY_SHA, &b), 0);
	assert_int_equal(b.len, 0);
	nb_cli_http_free(&h);
	/* a token */
	assert_int_equal(nb_cli_http_init(&h, "http://127.0.0.1:8787", "tok"), 0);
	assert_int_equal(nb_cli_http_auth_lines(&h, "GET", "/v1/instances", EMPTY_SHA, &b), 0);
	assert_string_equal(b.data, "Authorization: Bearer tok\r\n");
	nb_buf_reset(&b);
	/* a key wins over the token, and signs the endpoint's path prefix too */
	nb_cli_http_free(&h);
	assert_int_equal(nb_cli_http_init(&h, "http://ctl.example:8080/nubo", "tok"), 0);
	assert_int_equal(nb_cli_http_set_key(&h, &k), 0);
	assert_int_equal(nb_cli_http_auth_lines(&h, "GET", "/v1/keys", EMPTY_SHA, &b), 0);
	assert_null(strstr(b.data, "Bearer"));
	n = split_lines(b.data, hd, 7);
	assert_int_equal(n, 3);
	assert_non_null(find_kv(hd, n, "X-Amz-Date"));
	assert_string_equal(find_kv(hd, n, "X-Amz-Content-Sha256"), EMPTY_SHA);
	assert_true(nb_str_has_prefix(find_kv(hd, n, "Authorization"),
	                              "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));
	hd[n++] = (struct nb_kv){"Host", "ctl.example:8080"};
	r.method = "GET";
	r.path = "/nubo/v1/keys";
	r.headers = hd;
	r.nheaders = n;
	r.body_sha256 = EMPTY_SHA;
	r.now = nb_wall_ms() / 1000;
	assert_int_equal(nb_sigv4_parse(&r, &a, err, sizeof(err)), 0);
	assert_int_equal(nb_sigv4_verify(&r, &a, SECRET, "nubo-1", "nubo", err, sizeof(err)), 0);
	/* an incomplete key is refused */
	k.secret[0] = '\0';
	assert_int_equal(nb_cli_http_set_key(&h, &k), -EINVAL);
	nb_cli_http_free(&h);
	/* free wipes the key */
	assert_string_equal(h.key.secret, "");
	nb_buf_free(&b);
}

static void test_fmt_iso_and_since_json(void **state)
{
	char out[40];
	json_t *v;
	int64_t now = 1795327379257LL;

	(void)state;
	nb_cli_fmt_iso(1795327379257LL, out, sizeof(out));
	assert_string_equal(out, "2026-11-22T06:02:59.257Z");
	nb_cli_fmt_iso(0, out, sizeof(out));
	assert_string_equal(out, "1970-01-01T00:00:00.000Z");
	nb_cli_fmt_iso(-1, out, sizeof(out));
	assert_string_equal(out, "-");
	/* milliseconds since the epoch, as accounts and keys carry them */
	v = json_integer(now - 3 * 60000 - 1);
	nb_cli_fmt_since_json(v, now, out, sizeof(out));
	assert_string_equal(out, "3m");
	json_decref(v);
	/* ISO 8601 strings, as instances and images carry them */
	v = json_string("2026-11-22T04:02:59.257Z");
	nb_cli_fmt_since_json(v, now, out, sizeof(out));
	assert_string_equal(out, "2h");
	json_decref(v);
	nb_cli_fmt_since_json(NULL, now, out, sizeof(out));
	assert_string_equal(out, "-");
	v = json_true();
	nb_cli_fmt_since_json(v, now, out, sizeof(out));
	assert_string_equal(out, "-");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_args_forms),
	    cmocka_unit_test(test_args_short_and_last_wins),
	    cmocka_unit_test(test_args_errors),
	    cmocka_unit_test(test_args_ceilings),
	    cmocka_unit_test(test_args_stop_at_positional),
	    cmocka_unit_test(test_args_help),
	    cmocka_unit_test(test_table_widths),
	    cmocka_unit_test(test_table_utf8_and_controls),
	    cmocka_unit_test(test_table_empty),
	    cmocka_unit_test(test_table_cell_ceiling),
	    cmocka_unit_test(test_fmt_size),
	    cmocka_unit_test(test_fmt_age),
	    cmocka_unit_test(test_parse_time),
	    cmocka_unit_test(test_fmt_since),
	    cmocka_unit_test(test_base64),
	    cmocka_unit_test(test_progress_render),
	    cmocka_unit_test(test_progress_narrow),
	    cmocka_unit_test(test_fmt_transfer),
	    cmocka_unit_test(test_progress_line),
	    cmocka_unit_test(test_parse_endpoint),
	    cmocka_unit_test(test_status_line),
	    cmocka_unit_test(test_log_offset),
	    cmocka_unit_test(test_url_escape),
	    cmocka_unit_test(test_amz_date),
	    cmocka_unit_test(test_url_split),
	    cmocka_unit_test(test_sign_known_answers),
	    cmocka_unit_test(test_sign_verified_by_server_code),
	    cmocka_unit_test(test_sign_errors),
	    cmocka_unit_test(test_auth_lines),
	    cmocka_unit_test(test_fmt_iso_and_since_json),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
