/* s3/http: the protocol layer's pure parts: Range headers, HTTP dates,
 * %-decoding of raw paths and keys, encoding-type=url, virtual-hosted Host
 * names, and the XML reader of request bodies (well-formed documents,
 * entities, hostile input). The requests themselves are tested end to end
 * in tests/e2e/test_s3.py. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "s3/http.h"

static void range_is(const char *h, enum nb_s3_range_kind kind, uint64_t first, uint64_t last)
{
	struct nb_s3_range r;

	assert_int_equal(nb_s3http_parse_range(h, &r), 0);
	assert_int_equal(r.kind, kind);
	if (kind == NB_S3_RANGE_FROM_TO || kind == NB_S3_RANGE_FROM)
		assert_int_equal(r.first, first);
	if (kind == NB_S3_RANGE_FROM_TO || kind == NB_S3_RANGE_SUFFIX)
		assert_int_equal(r.last, last);
}

static void test_range(void **state)
{
	(void)state;
	range_is("bytes=0-99", NB_S3_RANGE_FROM_TO, 0, 99);
	range_is("bytes=100-", NB_S3_RANGE_FROM, 100, 0);
	range_is("bytes=-20", NB_S3_RANGE_SUFFIX, 0, 20);
	range_is("Bytes= 7-7 ", NB_S3_RANGE_FROM_TO, 7, 7);
	/* first > last is a range S3 ignores later; it parses */
	range_is("bytes=5-2", NB_S3_RANGE_FROM_TO, 5, 2);
	range_is("bytes=18446744073709551615-", NB_S3_RANGE_NONE, 0, 0); /* 20 digits */
	range_is("bytes=9999999999999999999-", NB_S3_RANGE_FROM, 9999999999999999999ull, 0);
	/* whole object: several ranges, other units, garbage */
	range_is("bytes=0-1,5-6", NB_S3_RANGE_NONE, 0, 0);
	range_is("items=0-1", NB_S3_RANGE_NONE, 0, 0);
	range_is("bytes=a-b", NB_S3_RANGE_NONE, 0, 0);
	range_is("bytes=-", NB_S3_RANGE_NONE, 0, 0);
	range_is("bytes=1", NB_S3_RANGE_NONE, 0, 0);
	range_is("bytes=+1-2", NB_S3_RANGE_NONE, 0, 0);
	range_is("bytes=1--2", NB_S3_RANGE_NONE, 0, 0);
	range_is("", NB_S3_RANGE_NONE, 0, 0);
	range_is(NULL, NB_S3_RANGE_NONE, 0, 0);
	assert_int_equal(nb_s3http_parse_range("bytes=0-1", NULL), -EINVAL);
}

static void test_dates(void **state)
{
	char out[40];

	(void)state;
	assert_int_equal(nb_s3http_parse_date("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777);
	assert_int_equal(nb_s3http_parse_date("Sunday, 06-Nov-94 08:49:37 GMT"), 784111777);
	assert_int_equal(nb_s3http_parse_date("Sun Nov  6 08:49:37 1994"), 784111777);
	assert_int_equal(nb_s3http_parse_date("  Sun, 06 Nov 1994 08:49:37 GMT  "), 784111777);
	assert_int_equal(nb_s3http_parse_date("Sun, 06 Nov 1994 08:49:37 GMT junk"), -1);
	assert_int_equal(nb_s3http_parse_date("2024-01-01T00:00:00Z"), -1);
	assert_int_equal(nb_s3http_parse_date(""), -1);
	assert_int_equal(nb_s3http_parse_date(NULL), -1);
	nb_s3http_format_date(784111777000, out, sizeof(out));
	assert_string_equal(out, "Sun, 06 Nov 1994 08:49:37 GMT");
	assert_int_equal(nb_s3http_parse_date(out), 784111777);
}

static void test_unescape(void **state)
{
	char *out = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(nb_s3http_unescape("a%20b+c%2Fd", 11, &out, &n), 0);
	assert_string_equal(out, "a b+c/d");
	assert_int_equal(n, 7);
	free(out);
	/* an escaped NUL is kept (the key check refuses it), not a terminator */
	assert_int_equal(nb_s3http_unescape("x%00y", 5, &out, &n), 0);
	assert_int_equal(n, 3);
	assert_memory_equal(out, "x\0y", 3);
	free(out);
	assert_int_equal(nb_s3http_unescape("%e2%82%ac", 9, &out, &n), 0);
	assert_string_equal(out, "\xe2\x82\xac");
	free(out);
	assert_int_equal(nb_s3http_unescape("", 0, &out, &n), 0);
	assert_int_equal(n, 0);
	free(out);
	out = NULL;
	assert_int_equal(nb_s3http_unescape("%4", 2, &out, &n), -EINVAL);
	assert_int_equal(nb_s3http_unescape("%zz", 3, &out, &n), -EINVAL);
	assert_int_equal(nb_s3http_unescape("ab%", 3, &out, &n), -EINVAL);
	/* only len bytes are read */
	assert_int_equal(nb_s3http_unescape("ab%41", 2, &out, &n), 0);
	assert_string_equal(out, "ab");
	free(out);
}

static void test_url_encode(void **state)
{
	struct nb_buf b;

	(void)state;
	nb_buf_init(&b, 1024);
	assert_int_equal(nb_s3http_url_encode(&b, "a b+c/\xc3\xa9~_.-%&"), 0);
	assert_string_equal(b.data, "a%20b%2Bc/%C3%A9~_.-%25%26");
	nb_buf_free(&b);
	nb_buf_init(&b, 8);
	assert_int_equal(nb_s3http_url_encode(&b, "\xff\xff\xff"), -E2BIG);
	nb_buf_free(&b);
}

static void test_vhost(void **state)
{
	char out[64];

	(void)state;
	assert_true(nb_s3http_vhost_bucket("photos.s3.example.com:8789", "s3.example.com", out,
	                                   sizeof(out)));
	assert_string_equal(out, "photos");
	assert_true(nb_s3http_vhost_bucket("My.Dotted.Bucket.S3.Example.COM", "s3.example.com", out,
	                                   sizeof(out)));
	assert_string_equal(out, "my.dotted.bucket");
	assert_true(nb_s3http_vhost_bucket("b.localhost.", "localhost", out, sizeof(out)));
	assert_string_equal(out, "b");
	assert_false(nb_s3http_vhost_bucket("s3.example.com", "s3.example.com", out, sizeof(out)));
	assert_false(nb_s3http_vhost_bucket(".s3.example.com", "s3.example.com", out, sizeof(out)));
	assert_false(nb_s3http_vhost_bucket("bs3.example.com", "s3.example.com", out, sizeof(out)));
	assert_false(nb_s3http_vhost_bucket("127.0.0.1:8789", "localhost", out, sizeof(out)));
	assert_false(nb_s3http_vhost_bucket("[::1]:8789", "localhost", out, sizeof(out)));
	assert_false(nb_s3http_vhost_bucket("b.localhost", "", out, sizeof(out)));
	assert_false(nb_s3http_vhost_bucket(NULL, "localhost", out, sizeof(out)));
	/* a bucket part longer than out */
	assert_false(nb_s3http_vhost_bucket("abcdefgh.localhost", "localhost", out, 8));
}

/* Records every element end as "path=text;" (path joined by '/', text
 * "<children>" for an element with children). */
static int record(void *ctx, const char *const *path, int depth, const char *text, size_t len)
{
	struct nb_buf *b = ctx;

	for (int i = 0; i < depth; i++)
		nb_buf_printf(b, "%s%s", i ? "/" : "", path[i]);
	nb_buf_puts(b, "=");
	if (text)
		nb_buf_append(b, text, len);
	else
		nb_buf_puts(b, "<children>");
	nb_buf_puts(b, ";");
	return 0;
}

static int walk(const char *xml, struct nb_buf *out)
{
	nb_buf_reset(out);
	return nb_s3http_xml_walk(xml, strlen(xml), record, out);
}

static void test_xml_documents(void **state)
{
	struct nb_buf b;

	(void)state;
	nb_buf_init(&b, 1 << 16);
	assert_int_equal(
	    walk("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	         "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
	         "<Part><PartNumber>1</PartNumber><ETag>&quot;abc&quot;</ETag></Part>"
	         "<!-- a comment --><Part><PartNumber> 2</PartNumber>"
	         "<ETag><![CDATA[\"d<e>f\"]]></ETag></Part></CompleteMultipartUpload>",
	         &b),
	    0);
	assert_string_equal(b.data, "CompleteMultipartUpload/Part/PartNumber=1;"
	                            "CompleteMultipartUpload/Part/ETag=\"abc\";"
	                            "CompleteMultipartUpload/Part=<children>;"
	                            "CompleteMultipartUpload/Part/PartNumber= 2;"
	                            "CompleteMultipartUpload/Part/ETag=\"d<e>f\";"
	                            "CompleteMultipartUpload/Part=<children>;"
	                            "CompleteMultipartUpload=<children>;");
	/* namespace prefixes dropped, attributes skipped, self-closing elements */
	assert_int_equal(
	    walk("<s3:Delete xmlns:s3='x'><s3:Quiet a=\"1>2\" b='3'>true</s3:Quiet>"
	         "<Object><Key>a&amp;b&lt;&gt;&apos;&#65;&#x42;&#x20AC;</Key><VersionId/>"
	         "</Object></s3:Delete>",
	         &b),
	    0);
	assert_string_equal(b.data, "Delete/Quiet=true;Delete/Object/Key=a&b<>'AB\xe2\x82\xac;"
	                            "Delete/Object/VersionId=;Delete/Object=<children>;"
	                            "Delete=<children>;");
	/* a character reference to NUL is kept with its length: the key check
	 * refuses it later */
	assert_int_equal(walk("<a>x&#0;y</a>", &b), 0);
	assert_int_equal(b.len, strlen("a=") + 3 + 1);
	assert_memory_equal(b.data, "a=x\0y;", 6);
	/* a byte order mark and surrounding whitespace */
	assert_int_equal(walk("\xEF\xBB\xBF  <a> t </a>\n", &b), 0);
	assert_string_equal(b.data, "a= t ;");
	nb_buf_free(&b);
}

static void test_xml_hostile(void **state)
{
	static const char *const bad[] = {
	    "",
	    "   ",
	    "<a>",
	    "<a></b>",
	    "<a><b></a></b>",
	    "<a/><b/>", /* two roots */
	    "text<a/>", /* text outside the root */
	    "<a/>trailing",
	    "<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>", /* never entities */
	    "<a>&unknown;</a>",
	    "<a>&amp</a>",
	    "<a>&#xD800;</a>", /* a surrogate */
	    "<a>&#x110000;</a>",
	    "<a>&#;</a>",
	    "<a>&#x;</a>",
	    "<a b=\"unterminated></a>",
	    "<a b></a>",
	    "<a><!-- unterminated </a>",
	    "<a><![CDATA[ unterminated </a>",
	    "<?xml unterminated",
	    "</a>",
	    "<>",
	    "<a></>",
	    "<:>x</:>",
	};
	struct nb_buf b;
	char deep[16 * 3 + 17 * 4 + 8];
	size_t n = 0;

	(void)state;
	nb_buf_init(&b, 1 << 16);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = walk(bad[i], &b);
		if (r != -EINVAL)
			fail_msg("'%s' gave %d", bad[i], r);
	}
	/* 16 levels pass, 17 are refused */
	for (int i = 0; i < 16; i++)
		n += (size_t)snprintf(deep + n, sizeof(deep) - n, "<a>");
	for (int i = 0; i < 16; i++)
		n += (size_t)snprintf(deep + n, sizeof(deep) - n, "</a>");
	assert_int_equal(walk(deep, &b), 0);
	n = 0;
	for (int i = 0; i < 17; i++)
		n += (size_t)snprintf(deep + n, sizeof(deep) - n, "<a>");
	assert_int_equal(walk(deep, &b), -E2BIG);
	assert_int_equal(nb_s3http_xml_walk(NULL, 0, record, &b), -EINVAL);
	nb_buf_free(&b);
}

static int stop_at_b(void *ctx, const char *const *path, int depth, const char *text, size_t len)
{
	(void)ctx;
	(void)text;
	(void)len;
	return !strcmp(path[depth - 1], "b") ? -ECANCELED : 0;
}

static void test_xml_callback_stops(void **state)
{
	(void)state;
	assert_int_equal(nb_s3http_xml_walk("<r><a/><b/><c/></r>", 19, stop_at_b, NULL),
	                 -ECANCELED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_range),       cmocka_unit_test(test_dates),
	    cmocka_unit_test(test_unescape),    cmocka_unit_test(test_url_encode),
	    cmocka_unit_test(test_vhost),       cmocka_unit_test(test_xml_documents),
	    cmocka_unit_test(test_xml_hostile), cmocka_unit_test(test_xml_callback_stops),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
