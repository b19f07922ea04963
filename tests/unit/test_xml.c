/* api/xml: the writer byte for byte (golden files in tests/data/query/xml,
 * which tests/e2e/test_xml_parse.py also feeds to botocore's parsers;
 * NB_REGENERATE=1 rewrites them), escaping, the EC2 and S3 error
 * documents, the buffer ceiling, the depth ceiling and misuse. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/xml.h"
#include "common/buf.h"
#include "common/util.h"

#define DECL "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
#define EC2_NS "http://ec2.amazonaws.com/doc/2016-11-15/"

static bool regenerate(void)
{
	const char *v = getenv("NB_REGENERATE");

	return v && *v && strcmp(v, "0") != 0;
}

/* Compares out with tests/data/query/xml/<name> byte for byte. */
static void golden(const char *name, const struct nb_buf *out)
{
	char path[512], *want = NULL;
	size_t len = 0;

	snprintf(path, sizeof(path), "%s/query/xml/%s", NB_TEST_DATA, name);
	if (regenerate()) {
		assert_int_equal(nb_write_file(path, out->data, out->len, 0644), 0);
		return;
	}
	if (nb_read_file(path, 1 << 20, &want, &len) < 0)
		fail_msg("%s: missing (NB_REGENERATE=1 creates it)", path);
	if (len != out->len || memcmp(want, out->data, len) != 0)
		fail_msg("%s differs from the writer's output:\n%s\n(NB_REGENERATE=1 rewrites it "
		         "once intended)",
		         path, out->data);
	free(want);
}

/* A DescribeInstances answer with every kind of content. Returns x.err;
 * marks[] gets the buffer length after each call (for the ceiling test). */
static int describe_instances(struct nb_buf *out, size_t *marks, size_t *nmarks)
{
	struct nb_xml x;
	size_t n = 0;

#define STEP(call)                                                                                 \
	do {                                                                                       \
		call;                                                                              \
		if (marks)                                                                         \
			marks[n] = out->len;                                                       \
		n++;                                                                               \
	} while (0)
	STEP(nb_xml_begin(&x, out, "DescribeInstancesResponse", EC2_NS));
	STEP(nb_xml_text(&x, "requestId", "59dbff89-35bd-4eac-99ed-be587EXAMPLE"));
	STEP(nb_xml_open(&x, "reservationSet"));
	STEP(nb_xml_open(&x, "item"));
	STEP(nb_xml_text(&x, "reservationId", "r-0123456789abcdef0"));
	STEP(nb_xml_text(&x, "ownerId", "000000000000"));
	STEP(nb_xml_open(&x, "groupSet"));
	STEP(nb_xml_close(&x));
	STEP(nb_xml_open(&x, "instancesSet"));
	STEP(nb_xml_open(&x, "item"));
	STEP(nb_xml_text(&x, "instanceId", "i-0123456789abcdef0"));
	STEP(nb_xml_text(&x, "imageId", "ami-0123456789abcdef0"));
	STEP(nb_xml_open(&x, "instanceState"));
	STEP(nb_xml_int(&x, "code", 16));
	STEP(nb_xml_text(&x, "name", "running"));
	STEP(nb_xml_close(&x));
	STEP(nb_xml_text(&x, "privateDnsName", NULL));
	STEP(nb_xml_text(&x, "instanceType", "t1.nano"));
	STEP(nb_xml_text(&x, "launchTime", "2026-11-22T05:01:02.000Z"));
	STEP(nb_xml_int(&x, "amiLaunchIndex", 0));
	STEP(nb_xml_text(&x, "privateIpAddress", "10.213.0.2"));
	STEP(nb_xml_bool(&x, "ebsOptimized", 0));
	STEP(nb_xml_bool(&x, "sourceDestCheck", 1));
	STEP(nb_xml_open(&x, "tagSet"));
	STEP(nb_xml_open(&x, "item"));
	STEP(nb_xml_text(&x, "key", "Name"));
	STEP(nb_xml_text(&x, "value", "web <1> & \"two\" it's caf\xc3\xa9 \xe2\x82\xac"));
	STEP(nb_xml_close(&x));
	STEP(nb_xml_open(&x, "item"));
	STEP(nb_xml_text(&x, "key", "notes"));
	STEP(nb_xml_text(&x, "value", "line 1\nline 2\r\ntab\there\x01\x7f ]]> end"));
	STEP(nb_xml_close(&x));
	STEP(nb_xml_close(&x)); /* tagSet */
	STEP(nb_xml_close(&x)); /* item */
	STEP(nb_xml_close(&x)); /* instancesSet */
	/* reservationSet, item and the root are left to nb_xml_end */
	STEP(nb_xml_end(&x));
#undef STEP
	if (nmarks)
		*nmarks = n;
	return x.err;
}

static void document_golden(void **state)
{
	struct nb_buf out;
	(void)state;

	nb_buf_init(&out, 0);
	assert_int_equal(describe_instances(&out, NULL, NULL), 0);
	golden("describe_instances.xml", &out);
	/* spot checks that do not depend on the golden file */
	assert_true(nb_str_has_prefix(out.data, DECL "<DescribeInstancesResponse xmlns=\"" EC2_NS
	                                             "\"><requestId>"));
	assert_non_null(strstr(out.data, "<privateDnsName></privateDnsName>"));
	assert_non_null(strstr(out.data, "<instanceState><code>16</code><name>running</name>"
	                                 "</instanceState>"));
	assert_non_null(strstr(out.data, "<value>web &lt;1&gt; &amp; &quot;two&quot; it&apos;s "
	                                 "caf\xc3\xa9 \xe2\x82\xac</value>"));
	assert_non_null(
	    strstr(out.data, "<value>line 1\nline 2&#13;\ntab\there ]]&gt; end</value>"));
	{
		static const char end[] = "</instancesSet></item></reservationSet>"
		                          "</DescribeInstancesResponse>";
		assert_true(out.len > sizeof(end));
		assert_string_equal(out.data + out.len - (sizeof(end) - 1), end);
	}
	nb_buf_free(&out);
}

static void small_document_exact(void **state)
{
	static const char want[] =
	    DECL "<CreateTagsResponse xmlns=\"" EC2_NS "\"><requestId>req-1</requestId>"
	         "<return>true</return><a><b><c>-9223372036854775808</c><d>9223372036854775807"
	         "</d></b><e>false</e></a><f></f></CreateTagsResponse>";
	struct nb_buf out;
	struct nb_xml x;
	(void)state;

	nb_buf_init(&out, 0);
	assert_int_equal(nb_buf_puts(&out, "kept:"), 0); /* the writer appends */
	nb_xml_begin(&x, &out, "CreateTagsResponse", EC2_NS);
	nb_xml_text(&x, "requestId", "req-1");
	nb_xml_bool(&x, "return", 42);
	nb_xml_open(&x, "a");
	nb_xml_open(&x, "b");
	nb_xml_int(&x, "c", LLONG_MIN);
	nb_xml_int(&x, "d", LLONG_MAX);
	nb_xml_close(&x);
	nb_xml_bool(&x, "e", 0);
	nb_xml_close(&x);
	nb_xml_text(&x, "f", "");
	assert_int_equal(x.depth, 1);
	assert_int_equal(nb_xml_end(&x), 0);
	assert_int_equal(x.depth, 0);
	assert_true(nb_str_has_prefix(out.data, "kept:"));
	assert_string_equal(out.data + 5, want);
	assert_int_equal(out.len, 5 + strlen(want));

	/* a root without a namespace */
	nb_buf_reset(&out);
	nb_xml_begin(&x, &out, "ListAllMyBucketsResult", NULL);
	assert_int_equal(nb_xml_end(&x), 0);
	assert_string_equal(out.data, DECL "<ListAllMyBucketsResult></ListAllMyBucketsResult>");
	nb_buf_free(&out);
}

static void escaping(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"", ""},
	    {"plain text 123", "plain text 123"},
	    {"&", "&amp;"},
	    {"<", "&lt;"},
	    {">", "&gt;"},
	    {"\"", "&quot;"},
	    {"'", "&apos;"},
	    {"a&b<c>d\"e'f", "a&amp;b&lt;c&gt;d&quot;e&apos;f"},
	    {"&amp;", "&amp;amp;"}, /* nothing is taken as already escaped */
	    {"<![CDATA[x]]>", "&lt;![CDATA[x]]&gt;"},
	    /* control characters XML 1.0 cannot carry are dropped ... */
	    {"a\x01"
	     "b\x08"
	     "c\x0b"
	     "d\x0c"
	     "e\x1f"
	     "f\x7f"
	     "g",
	     "abcdefg"},
	    {"\x1b[31mred\x1b[0m", "[31mred[0m"},
	    /* ... tab and newline stay, CR becomes a reference (a parser would
	     * turn a raw CR into LF) */
	    {"a\tb\nc\rd", "a\tb\nc&#13;d"},
	    /* UTF-8 passes through untouched */
	    {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe4\xb8\xad",
	     "caf\xc3\xa9 \xe2\x82\xac "
	     "\xf0\x9f\x98\x80 \xe4\xb8\xad"},
	    {"\xc2\x85\xc2\xa0", "\xc2\x85\xc2\xa0"},
	    {"\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf"}, /* U+10FFFF */
	    /* broken UTF-8 becomes U+FFFD, one per bad byte */
	    {"a\xff"
	     "b",
	     "a\xef\xbf\xbd"
	     "b"},
	    {"\xc3(", "\xef\xbf\xbd("},
	    {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong */
	    {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
	    {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
	    {"end\xe2\x82", "end\xef\xbf\xbd\xef\xbf\xbd"}, /* cut short */
	    /* U+FFFE and U+FFFF are not XML characters */
	    {"a\xef\xbf\xbe"
	     "b\xef\xbf\xbf"
	     "c\xef\xbf\xbd",
	     "abc\xef\xbf\xbd"},
	};
	struct nb_buf out;
	size_t i;
	(void)state;

	nb_buf_init(&out, 0);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		nb_buf_reset(&out);
		assert_int_equal(nb_xml_escape(&out, cases[i].in), 0);
		if (strcmp(out.data ? out.data : "", cases[i].out) != 0)
			fail_msg("case %zu: got '%s', want '%s'", i, out.data, cases[i].out);
	}
	nb_buf_reset(&out);
	assert_int_equal(nb_xml_escape(&out, NULL), 0);
	assert_int_equal(out.len, 0);
	nb_buf_free(&out);

	/* past the ceiling: -E2BIG and the buffer as it was */
	nb_buf_init(&out, 16);
	assert_int_equal(nb_buf_puts(&out, "12345"), 0);
	assert_int_equal(nb_xml_escape(&out, "abc&def"), 0); /* 5 + 11 = 16 */
	assert_string_equal(out.data, "12345abc&amp;def");
	nb_buf_reset(&out);
	assert_int_equal(nb_buf_puts(&out, "12345"), 0);
	assert_int_equal(nb_xml_escape(&out, "abc&defg"), -E2BIG);
	assert_string_equal(out.data, "12345");
	assert_int_equal(out.len, 5);
	nb_buf_free(&out);
}

static void ec2_error(void **state)
{
	/* "'" is escaped as &apos; in text */
	static const char want[] =
	    DECL "<Response><Errors><Error><Code>InvalidInstanceID.NotFound</Code><Message>The "
	         "instance ID &apos;i-0123456789abcdef0&apos; does not exist</Message></Error>"
	         "</Errors><RequestID>ea966190-f9aa-478e-9ede-example</RequestID></Response>";
	struct nb_buf out;
	(void)state;

	nb_buf_init(&out, 0);
	assert_int_equal(nb_xml_ec2_error(&out, "InvalidInstanceID.NotFound",
	                                  "The instance ID 'i-0123456789abcdef0' does not exist",
	                                  "ea966190-f9aa-478e-9ede-example"),
	                 0);
	assert_string_equal(out.data, want);
	assert_int_equal(out.len, strlen(want));
	nb_buf_reset(&out);
	assert_int_equal(
	    nb_xml_ec2_error(&out, "InvalidParameterValue", "The filter 'x' is invalid", "req-1"),
	    0);
	assert_string_equal(out.data, DECL
	                    "<Response><Errors><Error><Code>InvalidParameterValue</Code><Message>"
	                    "The filter &apos;x&apos; is invalid</Message></Error></Errors>"
	                    "<RequestID>req-1</RequestID></Response>");
	golden("ec2_error.xml", &out);
	nb_buf_reset(&out);
	assert_int_equal(nb_xml_ec2_error(&out, "AuthFailure", "a<b & c>d", NULL), 0);
	assert_string_equal(out.data, DECL "<Response><Errors><Error><Code>AuthFailure</Code>"
	                                   "<Message>a&lt;b &amp; c&gt;d</Message></Error></Errors>"
	                                   "<RequestID></RequestID></Response>");
	nb_buf_free(&out);
	/* too small a buffer: -E2BIG and nothing written */
	nb_buf_init(&out, 100);
	assert_int_equal(nb_buf_puts(&out, "prefix"), 0);
	assert_int_equal(
	    nb_xml_ec2_error(&out, "InternalError", "An internal error has occurred", "req-1"),
	    -E2BIG);
	assert_string_equal(out.data, "prefix");
	nb_buf_free(&out);
}

static void s3_error(void **state)
{
	struct nb_buf out;
	(void)state;

	nb_buf_init(&out, 0);
	assert_int_equal(nb_xml_s3_error(&out, "NoSuchKey", "The specified key does not exist.",
	                                 "/my-bucket/photos/a&b.jpg", "4442587FB7D0A2F9"),
	                 0);
	assert_string_equal(out.data, DECL
	                    "<Error><Code>NoSuchKey</Code><Message>The specified key does not "
	                    "exist.</Message><Resource>/my-bucket/photos/a&amp;b.jpg</Resource>"
	                    "<RequestId>4442587FB7D0A2F9</RequestId></Error>");
	golden("s3_error.xml", &out);
	nb_buf_reset(&out);
	assert_int_equal(nb_xml_s3_error(&out, "AccessDenied", "Access Denied", NULL, "r"), 0);
	assert_string_equal(out.data, DECL "<Error><Code>AccessDenied</Code><Message>Access Denied"
	                                   "</Message><Resource></Resource><RequestId>r</RequestId>"
	                                   "</Error>");
	nb_buf_free(&out);
	nb_buf_init(&out, 60);
	assert_int_equal(
	    nb_xml_s3_error(&out, "NoSuchBucket", "The specified bucket does not exist", "/b", "r"),
	    -E2BIG);
	assert_int_equal(out.len, 0);
	nb_buf_free(&out);
}

/* Every ceiling from 1 byte to the whole document: either the document in
 * full, or -E2BIG with the output cut at the end of the last call that
 * fitted (never half an element), and no call after it writing anything. */
static void buffer_ceiling(void **state)
{
	struct nb_buf full, out;
	size_t marks[64], nmarks, max, k, len;
	struct nb_xml x;
	int r;
	(void)state;

	nb_buf_init(&full, 0);
	assert_int_equal(describe_instances(&full, marks, &nmarks), 0);
	assert_true(nmarks < 64);
	for (max = 1; max <= full.len + 1; max++) {
		nb_buf_init(&out, max);
		r = describe_instances(&out, NULL, NULL);
		if (max >= full.len) {
			assert_int_equal(r, 0);
			assert_int_equal(out.len, full.len);
			assert_memory_equal(out.data, full.data, full.len);
		} else {
			assert_int_equal(r, -E2BIG);
			assert_true(out.len <= max);
			/* a prefix of the full document ending at a call boundary */
			if (out.len)
				assert_memory_equal(out.data, full.data, out.len);
			for (k = 0; k < nmarks; k++)
				if (marks[k] == out.len)
					break;
			if (out.len != 0 && k == nmarks)
				fail_msg("max %zu: cut at %zu, inside a call", max, out.len);
			/* the first call that did not fit would have passed max */
			for (k = 0; k < nmarks && marks[k] <= out.len; k++)
				;
			assert_true(k < nmarks && marks[k] > max);
		}
		nb_buf_free(&out);
	}
	/* once failed, later calls do nothing */
	nb_buf_init(&out, 150);
	nb_xml_begin(&x, &out, "DescribeInstancesResponse", EC2_NS);
	assert_int_equal(x.err, 0);
	nb_xml_text(&x, "requestId", "0123456789012345678901234567890123456789");
	assert_int_equal(x.err, -E2BIG);
	len = out.len;
	nb_xml_text(&x, "a", "");
	nb_xml_open(&x, "b");
	nb_xml_close(&x);
	nb_xml_int(&x, "c", 1);
	assert_int_equal(nb_xml_end(&x), -E2BIG);
	assert_int_equal(out.len, len);
	nb_buf_free(&out);
	nb_buf_free(&full);
}

static void depth_ceiling(void **state)
{
	struct nb_buf out;
	struct nb_xml x;
	size_t len;
	int i;
	(void)state;

	nb_buf_init(&out, 0);
	nb_xml_begin(&x, &out, "r", NULL);
	for (i = 1; i < NB_XML_MAX_DEPTH; i++)
		nb_xml_open(&x, "d");
	assert_int_equal(x.err, 0);
	assert_int_equal(x.depth, NB_XML_MAX_DEPTH);
	nb_xml_text(&x, "leaf", "ok"); /* a text element needs no stack slot */
	assert_int_equal(x.err, 0);
	len = out.len;
	nb_xml_open(&x, "toodeep");
	assert_int_equal(x.err, -EOVERFLOW);
	assert_int_equal(out.len, len);
	assert_int_equal(nb_xml_end(&x), -EOVERFLOW);
	assert_int_equal(out.len, len);
	nb_buf_reset(&out);
	/* at exactly the ceiling the document closes properly */
	nb_xml_begin(&x, &out, "r", NULL);
	for (i = 1; i < NB_XML_MAX_DEPTH; i++)
		nb_xml_open(&x, "d");
	assert_int_equal(nb_xml_end(&x), 0);
	assert_true(strstr(out.data, "</d></d></r>") != NULL);
	assert_int_equal(x.depth, 0);
	nb_buf_free(&out);
}

static void misuse(void **state)
{
	static const char *const bad_names[] = {"",     "a b", "1a", "<x>",         "a&b",
	                                        "a\"b", "-a",  ".a", "caf\xc3\xa9", "a/b"};
	struct nb_buf out;
	struct nb_xml x;
	size_t i, len;
	(void)state;

	nb_buf_init(&out, 0);
	for (i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		nb_buf_reset(&out);
		nb_xml_begin(&x, &out, "Root", NULL);
		len = out.len;
		nb_xml_text(&x, bad_names[i], "v");
		assert_int_equal(x.err, -EINVAL);
		assert_int_equal(out.len, len);
		nb_buf_reset(&out);
		nb_xml_begin(&x, &out, "Root", NULL);
		nb_xml_open(&x, bad_names[i]);
		assert_int_equal(nb_xml_end(&x), -EINVAL);
		nb_buf_reset(&out);
		nb_xml_begin(&x, &out, bad_names[i], NULL);
		assert_int_equal(x.err, -EINVAL);
		assert_int_equal(out.len, 0);
	}
	nb_buf_reset(&out);
	nb_xml_begin(&x, &out, "Root", NULL);
	nb_xml_text(&x, NULL, "v");
	assert_int_equal(x.err, -EINVAL);
	/* names that are fine */
	nb_buf_reset(&out);
	nb_xml_begin(&x, &out, "Root", NULL);
	nb_xml_text(&x, "_a-b.c:d9", "v");
	assert_int_equal(nb_xml_end(&x), 0);
	/* closing more than was opened */
	nb_buf_reset(&out);
	nb_xml_begin(&x, &out, "Root", NULL);
	nb_xml_close(&x);
	assert_int_equal(x.err, 0);
	len = out.len;
	nb_xml_close(&x);
	assert_int_equal(x.err, -EINVAL);
	assert_int_equal(out.len, len);
	nb_buf_free(&out);
}

static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Random bytes through the escaper: the output is always text an XML
 * parser takes (valid UTF-8, no markup characters, no forbidden controls). */
static void escape_random(void **state)
{
	struct nb_buf out;
	unsigned char in[64];
	const unsigned char *p;
	size_t i, n, l;
	int k;
	(void)state;

	rng_state = 0x853c49e6748fea9bull;
	nb_buf_init(&out, 0);
	for (k = 0; k < 50000; k++) {
		n = rng() % (sizeof(in) - 1);
		for (i = 0; i < n; i++)
			in[i] = rng() % 4 ? (unsigned char)(rng() % 256)
			                  : (unsigned char)"&<>\"'\r\t\n"[rng() % 8];
		for (i = 0; i < n; i++)
			if (!in[i])
				in[i] = 'z';
		in[n] = '\0';
		nb_buf_reset(&out);
		assert_int_equal(nb_xml_escape(&out, (const char *)in), 0);
		for (p = (const unsigned char *)(out.data ? out.data : ""); *p; p += l) {
			l = 1;
			assert_true(*p != '<' && *p != '>' && *p != '"' && *p != '\'' &&
			            *p != '\r');
			assert_true(*p >= 0x20 || *p == '\t' || *p == '\n');
			assert_true(*p != 0x7f);
			if (*p == '&') {
				assert_true(nb_str_has_prefix((const char *)p, "&amp;") ||
				            nb_str_has_prefix((const char *)p, "&lt;") ||
				            nb_str_has_prefix((const char *)p, "&gt;") ||
				            nb_str_has_prefix((const char *)p, "&quot;") ||
				            nb_str_has_prefix((const char *)p, "&apos;") ||
				            nb_str_has_prefix((const char *)p, "&#13;"));
			} else if (*p >= 0x80) {
				assert_true(*p >= 0xC2 && *p <= 0xF4);
				l = *p < 0xE0 ? 2 : *p < 0xF0 ? 3 : 4;
				for (i = 1; i < l; i++)
					assert_true((p[i] & 0xC0) == 0x80);
				if (*p == 0xE0)
					assert_true(p[1] >= 0xA0);
				if (*p == 0xED)
					assert_true(p[1] < 0xA0);
				if (*p == 0xF0)
					assert_true(p[1] >= 0x90);
				if (*p == 0xF4)
					assert_true(p[1] < 0x90);
				if (*p == 0xEF && p[1] == 0xBF)
					assert_true(p[2] < 0xBE);
			}
		}
	}
	nb_buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(document_golden), cmocka_unit_test(small_document_exact),
	    cmocka_unit_test(escaping),        cmocka_unit_test(ec2_error),
	    cmocka_unit_test(s3_error),        cmocka_unit_test(buffer_ceiling),
	    cmocka_unit_test(depth_ceiling),   cmocka_unit_test(misuse),
	    cmocka_unit_test(escape_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
