/* SigV4 verification against requests signed by botocore's own signers
 * (Python and CRT), recorded in tests/data/sigv4/cases.json by
 * tests/data/sigv4/gen.py: each case must verify, each mutation of it must
 * fail with the right code, and hostile inputs must fail cleanly. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <jansson.h>

#include "api/sigv4.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/util.h"

#define MAX_CASES 128
#define SKEW NB_SIGV4_MAX_SKEW_S

struct tcase {
	const char *name, *method, *path, *query, *body_sha256, *region, *service;
	const char *access_key, *secret, *amz_date, *payload_hash, *signed_headers;
	const char *authorization, *canonical;
	bool s3, presigned;
	int64_t now, expires, t; /* t: amz_date as unix seconds */
	struct nb_kv hdr[NB_SIGV4_MAX_HEADERS];
	size_t nh;
};

static json_t *root;
static struct tcase cases[MAX_CASES];
static size_t ncases;

static const char *str_or_null(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

static int64_t amz_epoch(const char *s)
{
	struct tm tm = {0};

	assert_int_equal(strlen(s), 16);
	assert_non_null(strptime(s, "%Y%m%dT%H%M%SZ", &tm));
	return (int64_t)timegm(&tm);
}

static int load_cases(void **state)
{
	char path[512], *data = NULL;
	size_t len, i;
	json_error_t jerr;
	json_t *arr, *c;

	(void)state;
	snprintf(path, sizeof(path), "%s/sigv4/cases.json",
	         getenv("NB_TEST_DATA") ? getenv("NB_TEST_DATA") : NB_TEST_DATA);
	if (nb_read_file(path, 8u << 20, &data, &len) < 0)
		return -1;
	root = json_loadb(data, len, 0, &jerr);
	free(data);
	if (!root)
		return -1;
	arr = json_object_get(root, "cases");
	json_array_foreach(arr, i, c)
	{
		struct tcase *t = &cases[ncases++];
		json_t *h;
		size_t j;

		if (ncases > MAX_CASES)
			return -1;
		t->name = str_or_null(c, "name");
		t->method = str_or_null(c, "method");
		t->path = str_or_null(c, "path");
		t->query = str_or_null(c, "query");
		t->body_sha256 = str_or_null(c, "body_sha256");
		t->region = str_or_null(c, "region");
		t->service = str_or_null(c, "service");
		t->access_key = str_or_null(c, "access_key");
		t->secret = str_or_null(c, "secret");
		t->amz_date = str_or_null(c, "amz_date");
		t->payload_hash = str_or_null(c, "payload_hash");
		t->signed_headers = str_or_null(c, "signed_headers");
		t->authorization = str_or_null(c, "authorization");
		t->canonical = str_or_null(c, "canonical_request");
		t->s3 = json_is_true(json_object_get(c, "s3"));
		t->presigned = json_is_true(json_object_get(c, "presigned"));
		t->now = json_integer_value(json_object_get(c, "now"));
		t->expires = json_integer_value(json_object_get(c, "expires"));
		json_array_foreach(json_object_get(c, "headers"), j, h)
		{
			if (t->nh == NB_SIGV4_MAX_HEADERS)
				return -1;
			t->hdr[t->nh].key = json_string_value(json_array_get(h, 0));
			t->hdr[t->nh++].value = json_string_value(json_array_get(h, 1));
		}
	}
	return ncases ? 0 : -1;
}

static int free_cases(void **state)
{
	(void)state;
	json_decref(root);
	return 0;
}

static void to_req(const struct tcase *c, struct nb_sigv4_req *r)
{
	memset(r, 0, sizeof(*r));
	r->method = c->method;
	r->path = c->path;
	r->query = c->query;
	r->headers = c->hdr;
	r->nheaders = c->nh;
	r->body_sha256 = c->body_sha256;
	r->now = c->now;
	r->s3 = c->s3;
}

/* parse then verify, as a server does. */
static int run(const struct tcase *c, char *err, size_t errsz)
{
	struct nb_sigv4_req r;
	struct nb_sigv4_auth a;
	int ret;

	to_req(c, &r);
	ret = nb_sigv4_parse(&r, &a, err, errsz);
	if (ret)
		return ret;
	return nb_sigv4_verify(&r, &a, c->secret, c->region, c->service, err, errsz);
}

#define EXPECT(c, want, what)                                                                      \
	do {                                                                                       \
		char err_[512] = "";                                                               \
		int got_ = run((c), err_, sizeof(err_));                                           \
		if (got_ != (want))                                                                \
			fail_msg("%s: %s: got %d want %d (%s)", (c)->name, (what), got_, (want),   \
			         err_);                                                            \
		if (got_ && !err_[0])                                                              \
			fail_msg("%s: %s: error %d without a message", (c)->name, (what), got_);   \
	} while (0)

static int hdr_index(const struct tcase *c, const char *name)
{
	size_t i;

	for (i = 0; i < c->nh; i++)
		if (!strcasecmp(c->hdr[i].key, name))
			return (int)i;
	return -1;
}

static void set_hdr(struct tcase *c, const char *name, const char *value)
{
	int i = hdr_index(c, name);

	if (i >= 0) {
		c->hdr[i].value = value;
		return;
	}
	assert_true(c->nh < NB_SIGV4_MAX_HEADERS);
	c->hdr[c->nh].key = name;
	c->hdr[c->nh++].value = value;
}

static void del_hdr(struct tcase *c, const char *name)
{
	int i = hdr_index(c, name);

	assert_true(i >= 0);
	memmove(&c->hdr[i], &c->hdr[i + 1], (c->nh - (size_t)i - 1) * sizeof(c->hdr[0]));
	c->nh--;
}

/* Copy of query with the raw value of the first parameter raw_key replaced
 * (or the parameter removed when value is NULL). */
static void query_set(const char *query, const char *raw_key, const char *value, char *out,
                      size_t outsz)
{
	const char *p = query;
	size_t klen = strlen(raw_key);
	bool done = false;

	out[0] = '\0';
	while (p && *p) {
		const char *amp = strchr(p, '&');
		size_t n = amp ? (size_t)(amp - p) : strlen(p);
		char seg[4096];

		assert_true(n < sizeof(seg));
		memcpy(seg, p, n);
		seg[n] = '\0';
		if (!done && !strncmp(seg, raw_key, klen) && (seg[klen] == '=' || !seg[klen])) {
			done = true;
			if (!value)
				goto next;
			snprintf(seg, sizeof(seg), "%s=%s", raw_key, value);
		}
		if (out[0])
			nb_strlcpy(out + strlen(out), "&", outsz - strlen(out));
		nb_strlcpy(out + strlen(out), seg, outsz - strlen(out));
	next:
		p = amp ? amp + 1 : NULL;
	}
	assert_true(done);
}

/* The raw value of X-Amz-Signature or of the Authorization's Signature. */
static const char *sig_of(const struct tcase *c)
{
	const char *s;

	if (c->presigned)
		s = strstr(c->query, "X-Amz-Signature=");
	else
		s = strstr(c->hdr[hdr_index(c, "authorization")].value, "Signature=");
	assert_non_null(s);
	return strchr(s, '=') + 1;
}

/* c with its signature's hex digit at pos changed. */
static void flip_sig(const struct tcase *c, struct tcase *m, size_t pos, char *buf, size_t bufsz)
{
	const char *src = c->presigned ? c->query : c->hdr[hdr_index(c, "authorization")].value;
	size_t at = (size_t)(sig_of(c) - src) + pos;

	*m = *c;
	nb_strlcpy(buf, src, bufsz);
	buf[at] = buf[at] == '0' ? '1' : '0';
	if (c->presigned)
		m->query = buf;
	else
		set_hdr(m, "authorization", buf);
}

/* ---- every case verifies ---- */

static void test_cases_verify(void **state)
{
	size_t i;

	(void)state;
	assert_true(ncases >= 30);
	for (i = 0; i < ncases; i++) {
		struct tcase *c = &cases[i];
		struct nb_sigv4_req r;
		struct nb_sigv4_auth a;
		char err[512] = "", *cr;
		int ret;

		to_req(c, &r);
		ret = nb_sigv4_parse(&r, &a, err, sizeof(err));
		if (ret)
			fail_msg("%s: parse %d (%s)", c->name, ret, err);
		assert_string_equal(a.access_key, c->access_key);
		assert_string_equal(a.region, c->region);
		assert_string_equal(a.service, c->service);
		assert_string_equal(a.amz_date, c->amz_date);
		assert_memory_equal(a.date, c->amz_date, 8);
		assert_string_equal(a.signed_headers, c->signed_headers);
		if (strcmp(a.payload_hash, c->payload_hash))
			fail_msg("%s: payload hash %s, botocore %s", c->name, a.payload_hash,
			         c->payload_hash);
		assert_int_equal(a.presigned, c->presigned);
		if (c->presigned)
			assert_int_equal(a.expires, c->expires);
		if (c->canonical) {
			cr = nb_sigv4_canonical_request(&r, &a);
			assert_non_null(cr);
			if (strcmp(cr, c->canonical))
				fail_msg("%s: canonical request\n%s\n--- botocore:\n%s", c->name,
				         cr, c->canonical);
			free(cr);
		}
		ret = nb_sigv4_verify(&r, &a, c->secret, c->region, c->service, err, sizeof(err));
		if (ret)
			fail_msg("%s: verify %d (%s)", c->name, ret, err);
		/* the same with the signing key derived beforehand (a cache's) */
		{
			unsigned char key[32];
			nb_sigv4_signing_key(c->secret, a.date, c->region, c->service, key);
			ret = nb_sigv4_verify_key(&r, &a, key, c->region, c->service, err,
			                          sizeof(err));
			if (ret)
				fail_msg("%s: verify_key %d (%s)", c->name, ret, err);
			/* a key of another day or secret matches nothing */
			nb_sigv4_signing_key(c->secret, "20000101", c->region, c->service, key);
			assert_int_equal(nb_sigv4_verify_key(&r, &a, key, c->region, c->service,
			                                     NULL, 0),
			                 -NB_E_SIG_MISMATCH);
			nb_sigv4_signing_key("not the secret", a.date, c->region, c->service, key);
			assert_int_equal(nb_sigv4_verify_key(&r, &a, key, c->region, c->service,
			                                     NULL, 0),
			                 -NB_E_SIG_MISMATCH);
			/* the scope is still checked */
			assert_int_equal(nb_sigv4_verify_key(&r, &a, key, "elsewhere-1", c->service,
			                                     NULL, 0),
			                 -NB_E_SIG_MISMATCH);
			assert_int_equal(nb_sigv4_verify_key(&r, &a, NULL, c->region, c->service,
			                                     NULL, 0),
			                 -EINVAL);
		}
	}
}

/* nb_sigv4_sign writes botocore's Authorization byte for byte; the
 * building blocks reproduce presigned signatures. */
static void test_cases_sign(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ncases; i++) {
		const struct tcase *c = &cases[i];
		struct nb_sigv4_req r;
		struct nb_sigv4_auth a;
		char out[2048], small[40];
		int ret;

		to_req(c, &r);
		if (!c->presigned) {
			ret = nb_sigv4_sign(&r, c->access_key, c->secret, c->region, c->service,
			                    c->amz_date, c->payload_hash, c->signed_headers, out,
			                    sizeof(out));
			assert_int_equal(ret, 0);
			if (strcmp(out, c->authorization))
				fail_msg("%s: signed\n%s\nbotocore\n%s", c->name, out,
				         c->authorization);
			assert_int_equal(nb_sigv4_sign(&r, c->access_key, c->secret, c->region,
			                               c->service, c->amz_date, c->payload_hash,
			                               c->signed_headers, small, sizeof(small)),
			                 -ENOSPC);
			continue;
		}
		/* presigned: string to sign from the building blocks */
		{
			unsigned char key[32];
			char crhash[65], hex[65], *cr;
			struct nb_buf sts;

			assert_int_equal(nb_sigv4_parse(&r, &a, NULL, 0), 0);
			cr = nb_sigv4_canonical_request(&r, &a);
			assert_non_null(cr);
			nb_sha256_hex(cr, strlen(cr), crhash);
			free(cr);
			nb_buf_init(&sts, 4096);
			assert_int_equal(
			    nb_buf_printf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s",
			                  a.amz_date, a.date, a.region, a.service, crhash),
			    0);
			nb_sigv4_signing_key(c->secret, a.date, a.region, a.service, key);
			nb_sigv4_hmac_hex(key, sts.data, sts.len, hex);
			nb_buf_free(&sts);
			if (strcmp(hex, a.signature))
				fail_msg("%s: presigned signature %s, botocore %s", c->name, hex,
				         a.signature);
		}
	}
}

/* Signing keys and HMACs computed by botocore's SigV4Auth._sign chain. */
static void test_key_vectors(void **state)
{
	json_t *k;
	size_t i, n = 0;

	(void)state;
	json_array_foreach(json_object_get(root, "keys"), i, k)
	{
		unsigned char key[32];
		char hex[65], mac[65];
		const char *data = str_or_null(k, "data");

		nb_sigv4_signing_key(str_or_null(k, "secret"), str_or_null(k, "date"),
		                     str_or_null(k, "region"), str_or_null(k, "service"), key);
		for (size_t j = 0; j < 32; j++)
			snprintf(hex + 2 * j, 3, "%02x", key[j]);
		assert_string_equal(hex, str_or_null(k, "key"));
		nb_sigv4_hmac_hex(key, data, strlen(data), mac);
		assert_string_equal(mac, str_or_null(k, "hmac"));
		n++;
	}
	assert_int_equal(n, 3);
}

/* ---- mutations of each case ---- */

static void test_mutations(void **state)
{
	static const char *const tampered =
	    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
	size_t i;

	(void)state;
	for (i = 0; i < ncases; i++) {
		const struct tcase *c = &cases[i];
		struct tcase m;
		char buf[8192], buf2[8192], region[64];
		size_t pos;
		int hi;

		/* one hex digit of the signature */
		for (pos = 0; pos < 64; pos += 21) {
			flip_sig(c, &m, pos, buf, sizeof(buf));
			EXPECT(&m, -NB_E_SIG_MISMATCH, "signature digit");
		}
		/* the signature in uppercase is the same signature */
		m = *c;
		{
			const char *src =
			    c->presigned ? c->query : c->hdr[hdr_index(c, "authorization")].value;
			size_t at = (size_t)(sig_of(c) - src), j;

			nb_strlcpy(buf, src, sizeof(buf));
			for (j = at; j < at + 64; j++)
				if (buf[j] >= 'a' && buf[j] <= 'f')
					buf[j] = (char)(buf[j] - 'a' + 'A');
			if (c->presigned)
				m.query = buf;
			else
				set_hdr(&m, "authorization", buf);
			EXPECT(&m, 0, "uppercase signature");
		}
		/* a signed header's value: host, and each other one */
		m = *c;
		snprintf(buf, sizeof(buf), "%s.evil", c->hdr[hdr_index(c, "host")].value);
		set_hdr(&m, "host", buf);
		EXPECT(&m, -NB_E_SIG_MISMATCH, "host header");
		for (hi = 0; hi < (int)c->nh; hi++) {
			const char *k = c->hdr[hi].key;
			char lower[128];
			size_t j;

			for (j = 0; k[j] && j < sizeof(lower) - 1; j++)
				lower[j] = (char)((k[j] >= 'A' && k[j] <= 'Z') ? k[j] + 32 : k[j]);
			lower[j] = '\0';
			if (!strcasecmp(k, "authorization") || !strcasecmp(k, "host"))
				continue;
			m = *c;
			if (!strcmp(lower, "x-amz-date")) {
				/* one second later: same scope, inside the window */
				int64_t t = amz_epoch(c->hdr[hi].value) + 1;
				time_t tt = (time_t)t;
				struct tm tm;

				gmtime_r(&tt, &tm);
				strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm);
				if (strncmp(buf, c->hdr[hi].value, 8))
					continue; /* crossed midnight: scope mismatch instead */
			} else if (!strcmp(lower, "x-amz-content-sha256")) {
				snprintf(buf, sizeof(buf), "%s", tampered);
			} else if (!strcmp(lower, "date") && hdr_index(c, "x-amz-date") < 0) {
				/* the time source: one second later, as an HTTP date */
				time_t tt = (time_t)amz_epoch(c->amz_date) + 1;
				struct tm tm;

				gmtime_r(&tt, &tm);
				strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
			} else {
				snprintf(buf, sizeof(buf), "%s!", c->hdr[hi].value);
			}
			m.hdr[hi].value = buf;
			{
				char needle[130];
				bool is_signed;

				snprintf(needle, sizeof(needle), ";%s;", lower);
				snprintf(buf2, sizeof(buf2), ";%s;", c->signed_headers);
				is_signed = strstr(buf2, needle) != NULL;
				EXPECT(&m, is_signed ? -NB_E_SIG_MISMATCH : 0, k);
			}
		}
		/* the query: one more parameter; parameters in another order */
		m = *c;
		snprintf(buf, sizeof(buf), "%s%snubo-extra=1", c->query ? c->query : "",
		         c->query ? "&" : "");
		m.query = buf;
		EXPECT(&m, -NB_E_SIG_MISMATCH, "extra query parameter");
		if (c->query && strchr(c->query, '&')) {
			const char *amp = strchr(c->query, '&');

			m = *c;
			snprintf(buf, sizeof(buf), "%s&%.*s", amp + 1, (int)(amp - c->query),
			         c->query);
			m.query = buf;
			EXPECT(&m, 0, "query reordered");
		}
		/* the first operation parameter's value */
		if (c->query && strncmp(c->query, "X-Amz-", 6)) {
			char key[256];
			size_t kl = strcspn(c->query, "=&");

			snprintf(key, sizeof(key), "%.*s", (int)kl, c->query);
			m = *c;
			query_set(c->query, key, "tampered", buf, sizeof(buf));
			m.query = buf;
			EXPECT(&m, -NB_E_SIG_MISMATCH, "query value");
		}
		/* method and path */
		m = *c;
		m.method = strcmp(c->method, "GET") ? "GET" : "HEAD";
		EXPECT(&m, -NB_E_SIG_MISMATCH, "method");
		m = *c;
		snprintf(buf, sizeof(buf), "%s%s", c->path, c->s3 ? "x" : "/x");
		m.path = buf;
		EXPECT(&m, -NB_E_SIG_MISMATCH, "path");
		/* the body: only an unsigned payload does not care */
		m = *c;
		m.body_sha256 = tampered;
		EXPECT(&m, strcmp(c->payload_hash, "UNSIGNED-PAYLOAD") ? -NB_E_SIG_MISMATCH : 0,
		       "body hash");
		/* the secret */
		m = *c;
		snprintf(buf, sizeof(buf), "%s", c->secret);
		buf[0] = buf[0] == 'x' ? 'y' : 'x';
		m.secret = buf;
		EXPECT(&m, -NB_E_SIG_MISMATCH, "secret");
		/* expected region and service */
		m = *c;
		m.region = strcmp(c->region, "us-east-1") ? "us-east-1" : "eu-central-1";
		EXPECT(&m, -NB_E_SIG_MISMATCH, "region");
		{
			char err[512];

			assert_int_equal(run(&m, err, sizeof(err)), -NB_E_SIG_MISMATCH);
			assert_non_null(strstr(err, "region"));
			assert_non_null(strstr(err, c->region));
			assert_non_null(strstr(err, m.region));
		}
		snprintf(region, sizeof(region), "%s", c->region);
		m = *c;
		m.service = strcmp(c->service, "s3") ? "s3" : "ec2";
		EXPECT(&m, -NB_E_SIG_MISMATCH, "service");
		/* time */
		m = *c;
		m.t = amz_epoch(c->amz_date);
		if (!c->presigned) {
			int64_t d[] = {-16 * 60, 16 * 60, -SKEW - 1, SKEW + 1};
			int64_t ok[] = {-14 * 60, 14 * 60, -SKEW, SKEW, 0};

			for (size_t j = 0; j < NB_ARRAY_SIZE(d); j++) {
				m.now = m.t + d[j];
				EXPECT(&m, -NB_E_EXPIRED, "clock skew");
			}
			for (size_t j = 0; j < NB_ARRAY_SIZE(ok); j++) {
				m.now = m.t + ok[j];
				EXPECT(&m, 0, "clock within skew");
			}
		} else {
			m.now = m.t + c->expires;
			EXPECT(&m, 0, "last second of a presigned URL");
			m.now = m.t + c->expires + 1;
			EXPECT(&m, -NB_E_EXPIRED, "expired presigned URL");
			m.now = m.t - 14 * 60;
			EXPECT(&m, 0, "presigned URL from a clock 14 min ahead");
			m.now = m.t - 16 * 60;
			EXPECT(&m, -NB_E_EXPIRED, "presigned URL from the future");
		}
	}
}

/* ---- malformed and hostile input ---- */

static const struct tcase *find_case(const char *name)
{
	size_t i;

	for (i = 0; i < ncases; i++)
		if (!strcmp(cases[i].name, name))
			return &cases[i];
	fail_msg("no case %s", name);
	return NULL;
}

#define EXPECT_MSG(c, want, needle)                                                                \
	do {                                                                                       \
		char err_[512] = "";                                                               \
		int got_ = run((c), err_, sizeof(err_));                                           \
		if (got_ != (want) || !strstr(err_, (needle)))                                     \
			fail_msg("line %d: got %d (%s), want %d with '%s'", __LINE__, got_, err_,  \
			         (want), (needle));                                                \
	} while (0)

static void test_authorization_malformed(void **state)
{
	const struct tcase *c = find_case("ec2-post-form");
	const char *cred = "AKIANUBOTEST2345ABCD/20261122/us-east-1/ec2/aws4_request";
	const char *sh = c->signed_headers;
	char sig[65], a[9000], many[1200];
	struct tcase m;
	size_t i;
	const int INC = -NB_E_AUTH_INCOMPLETE;

	(void)state;
	snprintf(sig, sizeof(sig), "%.64s", sig_of(c));
	m = *c;
	set_hdr(&m, "authorization", a);
#define TRY(want, needle, ...)                                                                     \
	do {                                                                                       \
		snprintf(a, sizeof(a), __VA_ARGS__);                                               \
		EXPECT_MSG(&m, want, needle);                                                      \
	} while (0)
	/* missing parts are named */
	TRY(INC, "missing Credential", "AWS4-HMAC-SHA256 SignedHeaders=%s, Signature=%s", sh, sig);
	TRY(INC, "missing SignedHeaders", "AWS4-HMAC-SHA256 Credential=%s, Signature=%s", cred,
	    sig);
	TRY(INC, "missing Signature", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s", cred, sh);
	TRY(INC, "missing Credential, SignedHeaders, Signature", "AWS4-HMAC-SHA256 ");
	TRY(INC, "missing Credential, Signature", "AWS4-HMAC-SHA256 SignedHeaders=%s,", sh);
	/* other schemes and algorithms */
	TRY(INC, "AWS4-HMAC-SHA256", "AWS4-HMAC-SHA256");
	TRY(INC, "AWS4-HMAC-SHA256", "%s", "");
	TRY(INC, "AWS4-HMAC-SHA256", "Bearer abc");
	TRY(INC, "AWS4-HMAC-SHA256", "AWS AKIANUBOTEST2345ABCD:c2lnbmF0dXJl");
	TRY(INC, "AWS4-HMAC-SHA256",
	    "AWS4-HMAC-SHA512 Credential=%s, SignedHeaders=%s, Signature=%s", cred, sh, sig);
	TRY(INC, "AWS4-HMAC-SHA256",
	    "aws4-hmac-sha256 Credential=%s, SignedHeaders=%s, Signature=%s", cred, sh, sig);
	/* the credential */
	TRY(INC, "Credential", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s",
	    "AKIANUBOTEST2345ABCD/20261122/us-east-1/ec2", sh, sig);
	TRY(INC, "Credential", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s",
	    "AKIANUBOTEST2345ABCD/20261122/us-east-1/ec2/aws4_request/x", sh, sig);
	TRY(INC, "aws4_request", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s",
	    "AKIANUBOTEST2345ABCD/20261122/us-east-1/ec2/aws5_request", sh, sig);
	TRY(INC, "YYYYMMDD", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s",
	    "AKIANUBOTEST2345ABCD/2026112x/us-east-1/ec2/aws4_request", sh, sig);
	TRY(INC, "YYYYMMDD", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s",
	    "AKIANUBOTEST2345ABCD/20261301/us-east-1/ec2/aws4_request", sh, sig);
	TRY(INC, "YYYYMMDD", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s",
	    "AKIANUBOTEST2345ABCD/20270229/us-east-1/ec2/aws4_request", sh, sig);
	TRY(INC, "access key", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s",
	    "/20261122/us-east-1/ec2/aws4_request", sh, sig);
	TRY(INC, "access key", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s",
	    "AKIA NUBO/20261122/us-east-1/ec2/aws4_request", sh, sig);
	TRY(INC, "region", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s",
	    "AKIANUBOTEST2345ABCD/20261122//ec2/aws4_request", sh, sig);
	TRY(INC, "region",
	    "AWS4-HMAC-SHA256 Credential=AKIANUBOTEST2345ABCD/20261122/%064d/ec2/"
	    "aws4_request, SignedHeaders=%s, Signature=%s",
	    7, sh, sig);
	TRY(INC, "service", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s",
	    "AKIANUBOTEST2345ABCD/20261122/us-east-1/e c2/aws4_request", sh, sig);
	/* the signature */
	TRY(INC, "64 hex", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%.63s",
	    cred, sh, sig);
	TRY(INC, "64 hex", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s0", cred,
	    sh, sig);
	TRY(INC, "64 hex", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=g%.63s",
	    cred, sh, sig);
	TRY(INC, "64 hex", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=", cred,
	    sh);
	/* structure */
	TRY(INC, "Credential twice",
	    "AWS4-HMAC-SHA256 Credential=%s, Credential=%s, SignedHeaders=%s, Signature=%s", cred,
	    cred, sh, sig);
	TRY(INC, "unknown part 'Foo'",
	    "AWS4-HMAC-SHA256 Credential=%s, Foo=bar, SignedHeaders=%s, Signature=%s", cred, sh,
	    sig);
	TRY(INC, "not name=value",
	    "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s, junk", cred, sh, sig);
	TRY(INC, "empty part", "AWS4-HMAC-SHA256 Credential=%s, , SignedHeaders=%s, Signature=%s",
	    cred, sh, sig);
	/* SignedHeaders */
	TRY(INC, "invalid header name",
	    "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=Host;x-amz-date, Signature=%s", cred,
	    sig);
	TRY(INC, "empty header name",
	    "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=host;;x-amz-date, Signature=%s", cred,
	    sig);
	TRY(INC, "twice", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=host;host, Signature=%s",
	    cred, sig);
	TRY(INC, "empty", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=, Signature=%s", cred,
	    sig);
	many[0] = '\0';
	for (i = 0; i < NB_SIGV4_MAX_HEADERS + 1; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many), "%sh%zu", i ? ";" : "",
		         i);
	TRY(INC, "more than", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s",
	    cred, many, sig);
	/* a signed header that is not in the request */
	TRY(-NB_E_SIG_MISMATCH, "x-missing",
	    "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s;x-missing, Signature=%s", cred, sh,
	    sig);
	/* the scope's date must be the request's */
	TRY(-NB_E_SIG_MISMATCH, "date",
	    "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, "
	    "Signature=%s",
	    "AKIANUBOTEST2345ABCD/20261121/us-east-1/ec2/aws4_request", sh, sig);
	/* tolerated: no spaces, more spaces and tabs, any order, trailing comma */
	TRY(0, "", "AWS4-HMAC-SHA256 Credential=%s,SignedHeaders=%s,Signature=%s", cred, sh, sig);
	TRY(0, "", "  AWS4-HMAC-SHA256 \t Credential=%s ,\t SignedHeaders=%s ,   Signature=%s  ",
	    cred, sh, sig);
	TRY(0, "", "AWS4-HMAC-SHA256 Signature=%s, Credential=%s, SignedHeaders=%s", sig, cred, sh);
	TRY(0, "", "AWS4-HMAC-SHA256 Credential=%s, SignedHeaders=%s, Signature=%s,", cred, sh,
	    sig);
	/* too long */
	memset(a, 'A', sizeof(a) - 1);
	a[sizeof(a) - 1] = '\0';
	memcpy(a, "AWS4-HMAC-SHA256 ", 17);
	EXPECT_MSG(&m, INC, "too long");
#undef TRY
}

static void test_request_malformed(void **state)
{
	const struct tcase *c = find_case("ec2-post-form");
	const struct tcase *s3 = find_case("s3-put-signed-payload");
	const struct tcase *s3u = find_case("s3-put-unsigned-payload");
	const struct tcase *p = find_case("s3-presigned-get");
	struct tcase m;
	char q[8192];

	(void)state;
	/* no signature at all */
	m = *c;
	del_hdr(&m, "authorization");
	EXPECT_MSG(&m, -NB_E_AUTH_MISSING, "no Authorization");
	m.query = "Action=DescribeInstances&Signature=abc&SignatureVersion=2";
	EXPECT_MSG(&m, -NB_E_AUTH_MISSING, "no Authorization");
	/* two of it */
	m = *c;
	set_hdr(&m, "X-Other", "x");
	m.hdr[m.nh - 1].key = "authorization";
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "more than one Authorization");
	m = *c;
	m.query = p->query;
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "both");
	/* dates */
	m = *c;
	del_hdr(&m, "x-amz-date");
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "X-Amz-Date or Date");
	set_hdr(&m, "Date", "yesterday");
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "Date header");
	set_hdr(&m, "Date", "Sun, 22 Nov 2026 05:01:02 CET");
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "Date header");
	set_hdr(&m, "Date", "Sun, 31 Nov 2026 05:01:02 GMT");
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "Date header");
	m = *c;
	set_hdr(&m, "x-amz-date", "20261122T250102Z");
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "YYYYMMDDTHHMMSSZ");
	set_hdr(&m, "x-amz-date", "2026-11-22T05:01:02Z");
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "YYYYMMDDTHHMMSSZ");
	set_hdr(&m, "x-amz-date", "");
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "YYYYMMDDTHHMMSSZ");
	m = *c;
	set_hdr(&m, "X-Other", "x");
	m.hdr[m.nh - 1].key = "X-AMZ-DATE";
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "twice");
	/* skew messages name both times */
	m = *c;
	m.now = amz_epoch(c->amz_date) + 3600;
	EXPECT_MSG(&m, -NB_E_EXPIRED, c->amz_date);
	EXPECT_MSG(&m, -NB_E_EXPIRED, "20261122T060102Z");
	/* x-amz-content-sha256 */
	m = *s3;
	set_hdr(&m, "x-amz-content-sha256", "abc");
	EXPECT_MSG(&m, -NB_E_INVALID, "x-amz-content-sha256");
	m = *s3;
	m.body_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	EXPECT_MSG(&m, -NB_E_SIG_MISMATCH, "XAmzContentSHA256Mismatch");
	m.body_sha256 = NULL; /* the caller did not hash a signed body */
	EXPECT_MSG(&m, -NB_E_INTERNAL, "not hashed");
	m = *s3u;
	m.body_sha256 = NULL;
	EXPECT(&m, 0, "unsigned payload, body not hashed");
	m = *c;
	m.body_sha256 = NULL;
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "x-amz-content-sha256");
	m.body_sha256 = "not hex";
	EXPECT(&m, -EINVAL, "caller's body hash");
	/* garbage headers: odd names, no value, control and high bytes */
	{
		static const struct nb_kv junk[] = {
		    {"", "x"},
		    {"Bad Name", "v"},
		    {"X-Null", NULL},
		    {"X-Ctl", "\x01\x7f\r\n\t"},
		    {"X-High", "\xff\xfe\xc3\xa9"},
		    {":", ":"},
		    {"AUTHORIZATIONX", "AWS4-HMAC-SHA256 junk"},
		};

		m = *c;
		for (size_t i = 0; i < NB_ARRAY_SIZE(junk); i++)
			m.hdr[m.nh++] = junk[i];
		EXPECT(&m, 0, "unsigned garbage headers are ignored");
		m = *c;
		set_hdr(&m, "content-type", "\xff\x01 \t\x1f");
		EXPECT(&m, -NB_E_SIG_MISMATCH, "garbage in a signed header");
		set_hdr(&m, "content-type", NULL);
		EXPECT(&m, -NB_E_SIG_MISMATCH, "signed header without a value");
	}
	/* broken %-escapes in the query */
	static const char *const broken[] = {"a=%", "a=%4", "a=%zz", "%=1", "a=1&b=%G0", "a=%%41"};
	for (size_t i = 0; i < NB_ARRAY_SIZE(broken); i++) {
		m = *c;
		m.query = broken[i];
		EXPECT_MSG(&m, -NB_E_INVALID, "%-escape");
	}
	/* ... and in presigned parameters */
	m = *p;
	query_set(p->query, "X-Amz-Credential", "AKIANUBOTEST2345ABCD%zz", q, sizeof(q));
	m.query = q;
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "X-Amz-Credential");
	query_set(p->query, "X-Amz-Credential", "AKIANUBOTEST2345ABCD%00%2F20261122", q, sizeof(q));
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "X-Amz-Credential");
}

static void test_presigned_params(void **state)
{
	const struct tcase *p = find_case("s3-presigned-get");
	static const char *const names[] = {"X-Amz-Algorithm",     "X-Amz-Credential",
	                                    "X-Amz-Date",          "X-Amz-Expires",
	                                    "X-Amz-SignedHeaders", "X-Amz-Signature"};
	static const char *const bad_expires[] = {"604801",   "0",   "-1",  "abc", "",
	                                          "99999999", "1e3", "+60", " 60"};
	struct tcase m;
	char q[8192], q2[8192];
	size_t i;

	(void)state;
	for (i = 0; i < NB_ARRAY_SIZE(bad_expires); i++) {
		m = *p;
		query_set(p->query, "X-Amz-Expires", bad_expires[i], q, sizeof(q));
		m.query = q;
		EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "X-Amz-Expires");
	}
	/* a week is allowed but was not what was signed */
	m = *p;
	query_set(p->query, "X-Amz-Expires", "604800", q, sizeof(q));
	m.query = q;
	EXPECT(&m, -NB_E_SIG_MISMATCH, "Expires changed");
	for (i = 0; i < NB_ARRAY_SIZE(names); i++) {
		m = *p;
		query_set(p->query, names[i], NULL, q, sizeof(q));
		m.query = q;
		EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, names[i]);
	}
	m = *p;
	snprintf(q, sizeof(q), "%s&X-Amz-Signature=%.64s", p->query, sig_of(p));
	m.query = q;
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "2 times");
	query_set(p->query, "X-Amz-Algorithm", "AWS4-HMAC-SHA1", q, sizeof(q));
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "X-Amz-Algorithm");
	query_set(p->query, "X-Amz-Date", "20261122", q, sizeof(q));
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "X-Amz-Date");
	query_set(p->query, "X-Amz-SignedHeaders", "x-amz-date", q, sizeof(q));
	EXPECT_MSG(&m, -NB_E_AUTH_INCOMPLETE, "host");
	/* equivalent encodings of the same parameters verify */
	query_set(p->query, "X-Amz-Credential",
	          "AKIANUBOTEST2345ABCD/20261122/us-east-1/s3/aws4_request", q, sizeof(q));
	EXPECT(&m, 0, "unencoded '/' in X-Amz-Credential");
	query_set(p->query, "X-Amz-Credential",
	          "AKIANUBOTEST2345ABCD%2f20261122%2fus-east-1%2fs3%2Faws4_request", q, sizeof(q));
	EXPECT(&m, 0, "lowercase escapes");
	query_set(p->query, "X-Amz-Algorithm", "AWS4%2DHMAC%2DSHA256", q, sizeof(q));
	EXPECT(&m, 0, "needless escapes");
	/* an operation parameter added after signing */
	query_set(p->query, "X-Amz-Expires", "900&response-content-type=text/html", q2, sizeof(q2));
	m.query = q2;
	EXPECT(&m, -NB_E_SIG_MISMATCH, "added parameter");
}

static void test_ceilings(void **state)
{
	const struct tcase *c = find_case("ec2-post-form");
	struct nb_kv many[NB_SIGV4_MAX_HEADERS + 1];
	struct nb_sigv4_req r;
	struct nb_sigv4_auth a;
	struct tcase m;
	char *big;
	size_t i;

	(void)state;
	big = malloc(NB_SIGV4_MAX_QUERY + 2);
	assert_non_null(big);
	/* header count */
	for (i = 0; i < NB_ARRAY_SIZE(many); i++)
		many[i] = i < c->nh ? c->hdr[i] : (struct nb_kv){"X-Pad", "1"};
	to_req(c, &r);
	r.headers = many;
	r.nheaders = NB_ARRAY_SIZE(many);
	assert_int_equal(nb_sigv4_parse(&r, &a, NULL, 0), -NB_E_INVALID);
	r.nheaders = NB_SIGV4_MAX_HEADERS;
	assert_int_equal(nb_sigv4_parse(&r, &a, NULL, 0), 0);
	assert_int_equal(nb_sigv4_verify(&r, &a, c->secret, c->region, c->service, NULL, 0), 0);
	/* path */
	m = *c;
	memset(big, 'p', NB_SIGV4_MAX_PATH + 1);
	big[0] = '/';
	big[NB_SIGV4_MAX_PATH + 1] = '\0';
	m.path = big;
	EXPECT_MSG(&m, -NB_E_INVALID, "path");
	big[NB_SIGV4_MAX_PATH] = '\0';
	EXPECT(&m, -NB_E_SIG_MISMATCH, "longest path");
	/* query length and parameter count */
	m = *c;
	memset(big, 'q', NB_SIGV4_MAX_QUERY + 1);
	big[NB_SIGV4_MAX_QUERY + 1] = '\0';
	m.query = big;
	EXPECT_MSG(&m, -NB_E_INVALID, "query");
	big[NB_SIGV4_MAX_QUERY] = '\0';
	EXPECT(&m, -NB_E_SIG_MISMATCH, "longest query");
	big[0] = '\0';
	for (i = 0; i <= NB_SIGV4_MAX_PARAMS; i++)
		nb_strlcpy(big + strlen(big), "a=1&", NB_SIGV4_MAX_QUERY);
	EXPECT_MSG(&m, -NB_E_INVALID, "parameters");
	/* a signed header's value; an unsigned one is not read */
	m = *c;
	memset(big, 'h', NB_SIGV4_MAX_VALUE + 1);
	big[NB_SIGV4_MAX_VALUE + 1] = '\0';
	set_hdr(&m, "content-type", big);
	EXPECT_MSG(&m, -NB_E_INVALID, "content-type");
	m = *c;
	set_hdr(&m, "user-agent", big);
	EXPECT(&m, 0, "huge unsigned header");
	/* method */
	m = *c;
	m.method = "";
	EXPECT_MSG(&m, -NB_E_INVALID, "method");
	m.method = "GETGETGETGETGETGETGETGETGETGETGET";
	EXPECT_MSG(&m, -NB_E_INVALID, "method");
	/* arguments */
	to_req(c, &r);
	assert_int_equal(nb_sigv4_parse(NULL, &a, NULL, 0), -EINVAL);
	assert_int_equal(nb_sigv4_parse(&r, NULL, NULL, 0), -EINVAL);
	assert_int_equal(nb_sigv4_parse(&r, &a, NULL, 0), 0);
	assert_int_equal(nb_sigv4_verify(&r, &a, NULL, c->region, c->service, NULL, 0), -EINVAL);
	assert_int_equal(nb_sigv4_verify(&r, &a, c->secret, NULL, c->service, NULL, 0), -EINVAL);
	a.region[sizeof(a.region) - 1] = 'x'; /* unterminated */
	memset(a.region, 'x', sizeof(a.region));
	assert_int_equal(nb_sigv4_verify(&r, &a, c->secret, c->region, c->service, NULL, 0),
	                 -EINVAL);
	assert_null(nb_sigv4_canonical_request(&r, &a));
	assert_null(nb_sigv4_canonical_request(NULL, &a));
	r.nheaders = 1;
	r.headers = (struct nb_kv[]){{NULL, "x"}};
	assert_int_equal(nb_sigv4_parse(&r, &a, NULL, 0), -EINVAL);
	free(big);
}

/* ---- requests signed here: botocore-like rules on odd inputs ---- */

struct selfreq {
	struct tcase c;
	char auth[2048];
};

/* A request to host "h" at 20261122T050102Z, signed by nb_sigv4_sign. */
static void self_sign(struct selfreq *s, const char *method, const char *path, const char *query,
                      bool s3)
{
	memset(s, 0, sizeof(*s));
	s->c.name = "self";
	s->c.method = method;
	s->c.path = path;
	s->c.query = query;
	s->c.s3 = s3;
	s->c.region = "nubo-1";
	s->c.service = s3 ? "s3" : "ec2";
	s->c.secret = "self/secret+key";
	s->c.body_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	s->c.now = 1795323662 + 60;
	s->c.hdr[s->c.nh++] = (struct nb_kv){"Host", "h"};
	s->c.hdr[s->c.nh++] = (struct nb_kv){"X-Amz-Date", "20261122T050102Z"};
}

static void self_finish(struct selfreq *s, const char *signed_headers, const char *payload)
{
	struct nb_sigv4_req r;

	to_req(&s->c, &r);
	assert_int_equal(nb_sigv4_sign(&r, "AKIASELF", s->c.secret, s->c.region, s->c.service,
	                               "20261122T050102Z", payload, signed_headers, s->auth,
	                               sizeof(s->auth)),
	                 0);
	set_hdr(&s->c, "Authorization", s->auth);
}

static char *canonical_of(const struct tcase *c)
{
	struct nb_sigv4_req r;
	struct nb_sigv4_auth a;
	char err[256];

	to_req(c, &r);
	if (nb_sigv4_parse(&r, &a, err, sizeof(err)))
		fail_msg("parse: %s", err);
	return nb_sigv4_canonical_request(&r, &a);
}

/* Line n (0-based) of the canonical request. */
static void assert_line(const struct tcase *c, int n, const char *want)
{
	char *cr = canonical_of(c), *p;
	int i;

	assert_non_null(cr);
	p = cr;
	for (i = 0; i < n && p; i++) {
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	assert_non_null(p);
	if (strncmp(p, want, strlen(want)) || (p[strlen(want)] && p[strlen(want)] != '\n'))
		fail_msg("line %d of\n%s\nis not\n%s", n, cr, want);
	free(cr);
}

static void test_self_signed(void **state)
{
	const char *E = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	struct selfreq s;
	struct tcase m;

	(void)state;
	/* the query: decoded, re-encoded, sorted by key then value */
	self_sign(&s, "GET", "/", "b=2&a=1&a=0&c&%7e=~&e=&d=x%2By+z&a-b=1&%C3%A9=%e4%b8%ad&&",
	          false);
	self_finish(&s, "host;x-amz-date", E);
	/* byte order of the encoded forms: '%' < digits < capitals < 'a' < '~' */
	assert_line(&s.c, 2, "%C3%A9=%E4%B8%AD&a=0&a=1&a-b=1&b=2&c=&d=x%2By%20z&e=&~=~");
	EXPECT(&s.c, 0, "odd query");
	m = s.c;
	m.query = "a-b=1&~=~&a=1&%C3%A9=%E4%B8%AD&a=0&b=2&c=&d=x%2By%20z&e";
	EXPECT(&m, 0, "same query, other spelling");
	m.query = "a-b=1&~=~&a=1&%C3%A9=%E4%B8%AD&a=0&b=2&c=&d=x%2By%2Bz&e";
	EXPECT(&m, -NB_E_SIG_MISMATCH, "'+' is a space, %2B a plus");
	m.query = "a-b=1&~=~&a=1&%C3%A9=%E4%B8%AD&a=1&b=2&c=&d=x%2By%20z&e";
	EXPECT(&m, -NB_E_SIG_MISMATCH, "repeated key's value changed");
	/* NUL, '/', '=', '&', '%', unicode and control characters in values */
	self_sign(&s, "GET", "/", "k=%00&s=a%2Fb%3Dc%26d%25e&u=%F0%9F%98%80&t=%09%0A", false);
	self_finish(&s, "host;x-amz-date", E);
	assert_line(&s.c, 2, "k=%00&s=a%2Fb%3Dc%26d%25e&t=%09%0A&u=%F0%9F%98%80");
	EXPECT(&s.c, 0, "odd values");
	/* the path of other services: normalised and encoded twice */
	self_sign(&s, "GET", "/a/./b/../c//d/%2F%41 x/", NULL, false);
	self_finish(&s, "host;x-amz-date", E);
	assert_line(&s.c, 1, "/a/c/d/%252F%2541%20x/");
	EXPECT(&s.c, 0, "normalised path");
	m = s.c;
	m.path = "/a/c/d/%2F%41 x/";
	EXPECT(&m, 0, "same normalised path");
	self_sign(&s, "GET", "", NULL, false);
	self_finish(&s, "host;x-amz-date", E);
	assert_line(&s.c, 1, "/");
	self_sign(&s, "GET", "/..", NULL, false);
	self_finish(&s, "host;x-amz-date", E);
	assert_line(&s.c, 1, "/");
	/* S3: the path as sent */
	self_sign(&s, "GET", "/b/./x//%2F%41+", NULL, true);
	set_hdr(&s.c, "x-amz-content-sha256", "UNSIGNED-PAYLOAD");
	self_finish(&s, "host;x-amz-content-sha256;x-amz-date", "UNSIGNED-PAYLOAD");
	assert_line(&s.c, 1, "/b/./x//%2F%41+");
	EXPECT(&s.c, 0, "S3 path");
	m = s.c;
	m.path = "/b/x/%2F%41+";
	EXPECT(&m, -NB_E_SIG_MISMATCH, "S3 path is not normalised");
	/* repeated headers join with ','; white space collapses */
	self_sign(&s, "GET", "/", NULL, false);
	set_hdr(&s.c, "X-Multi", "  a  ");
	s.c.hdr[s.c.nh++] = (struct nb_kv){"x-multi", " b \t\t c\r\n d "};
	s.c.hdr[s.c.nh++] = (struct nb_kv){"X-EMPTY", ""};
	self_finish(&s, "host;x-amz-date;x-empty;x-multi", E);
	assert_line(&s.c, 5, "x-empty:");
	assert_line(&s.c, 6, "x-multi:a,b c d");
	EXPECT(&s.c, 0, "repeated headers");
	m = s.c;
	m.hdr[2].value = "a";
	m.hdr[3].value = "b c   d";
	EXPECT(&m, 0, "same header values, other spacing");
	m.hdr[3].value = "bc d";
	EXPECT(&m, -NB_E_SIG_MISMATCH, "header value changed");
	/* a streaming payload is taken as signed; the caller checks chunks */
	self_sign(&s, "PUT", "/b/k", NULL, true);
	set_hdr(&s.c, "x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD");
	self_finish(&s, "host;x-amz-content-sha256;x-amz-date",
	            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD");
	s.c.body_sha256 = NULL;
	EXPECT(&s.c, 0, "streaming payload");
	/* host must be signed */
	self_sign(&s, "GET", "/", NULL, false);
	self_finish(&s, "x-amz-date", E);
	EXPECT_MSG(&s.c, -NB_E_AUTH_INCOMPLETE, "host");
	/* the Date header as the clock, in the forms HTTP allows */
	self_sign(&s, "GET", "/", NULL, false);
	del_hdr(&s.c, "x-amz-date");
	set_hdr(&s.c, "Date", "Sun, 22 Nov 2026 05:01:02 GMT");
	self_finish(&s, "date;host", E);
	EXPECT(&s.c, 0, "Date header (GMT)");
	self_sign(&s, "GET", "/", NULL, false);
	del_hdr(&s.c, "x-amz-date");
	set_hdr(&s.c, "Date", "22 Nov 2026 06:31:02 +0130");
	self_finish(&s, "date;host", E);
	EXPECT(&s.c, 0, "Date header with an offset");
	self_sign(&s, "GET", "/", NULL, false);
	del_hdr(&s.c, "x-amz-date");
	set_hdr(&s.c, "Date", "Saturday, 21-Nov-2026 23:31:02 -0530");
	self_finish(&s, "date;host", E);
	EXPECT(&s.c, 0, "Date header, dashed form, west of Greenwich");
	set_hdr(&s.c, "Date", "Sat, 21 Nov 2026 23:31:02 +0530");
	EXPECT_MSG(&s.c, -NB_E_SIG_MISMATCH, "20261121T180102Z");
	/* a huge secret (hashed first, as HMAC does) */
	{
		char *secret = malloc(10001);

		assert_non_null(secret);
		memset(secret, 'k', 10000);
		secret[10000] = '\0';
		self_sign(&s, "GET", "/", NULL, false);
		s.c.secret = secret;
		self_finish(&s, "host;x-amz-date", E);
		EXPECT(&s.c, 0, "huge secret");
		secret[5000] = 'j';
		EXPECT(&s.c, -NB_E_SIG_MISMATCH, "huge secret changed");
		free(secret);
	}
	/* sign rejects bad arguments */
	{
		struct nb_sigv4_req r;
		char out[512];

		self_sign(&s, "GET", "/", NULL, false);
		to_req(&s.c, &r);
		assert_int_equal(nb_sigv4_sign(&r, "AK", "s", "r", "ec2", "2026-11-22", E, "host",
		                               out, sizeof(out)),
		                 -EINVAL);
		assert_int_equal(nb_sigv4_sign(&r, "A K", "s", "r", "ec2", "20261122T050102Z", E,
		                               "host", out, sizeof(out)),
		                 -EINVAL);
		assert_int_equal(nb_sigv4_sign(&r, "AK", "s", "r", "ec2", "20261122T050102Z", E,
		                               "Host", out, sizeof(out)),
		                 -EINVAL);
		assert_int_equal(nb_sigv4_sign(&r, "AK", "s", "r", "ec2", "20261122T050102Z", E,
		                               "host;x-absent", out, sizeof(out)),
		                 -EINVAL);
		assert_int_equal(nb_sigv4_sign(NULL, "AK", "s", "r", "ec2", "20261122T050102Z", E,
		                               "host", out, sizeof(out)),
		                 -EINVAL);
	}
}

/* ---- fuzzing: truncations and random damage never crash ---- */

/* What a signature check may ignore: the access key (not signed: the server
 * picks the secret by it), blanks around the Authorization's parts, the
 * case of the signature's hex digits, empty query segments. */
static void equivalent_form(const char *in, bool query, char *out, size_t outsz)
{
	const char *p = in, *cred = strstr(in, query ? "X-Amz-Credential=" : "Credential=");
	const char *sig = strstr(in, query ? "X-Amz-Signature=" : "Signature=");
	size_t o = 0;

	while (*p && o + 2 < outsz) {
		if (cred && p == strchr(cred, '=') + 1) {
			const char *e = query ? strstr(p, "%2F") : strchr(p, '/');

			out[o++] = '*';
			if (e) {
				p = e;
				continue;
			}
		}
		if (sig && p >= strchr(sig, '=') + 1 && p < strchr(sig, '=') + 65 && *p >= 'A' &&
		    *p <= 'F') {
			out[o++] = (char)(*p++ - 'A' + 'a');
			continue;
		}
		if (!query && (*p == ' ' || *p == '\t')) {
			p++;
			continue;
		}
		if (query && *p == '&' && (o == 0 || out[o - 1] == '&' || !p[1])) {
			p++;
			continue;
		}
		out[o++] = *p++;
	}
	out[o] = '\0';
}

static void test_fuzz(void **state)
{
	static const char alphabet[] = "=,;/ %&+AWS4-HMAC-SHA256Credential\t0123456789abcdefXZ";
	char buf[8192], norm1[8192], norm2[8192];
	size_t i, n, k, accepted = 0;
	unsigned seed = 12345;

	(void)state;
	for (i = 0; i < ncases; i++) {
		const struct tcase *c = &cases[i];
		const char *src =
		    c->presigned ? c->query : c->hdr[hdr_index(c, "authorization")].value;
		size_t len = strlen(src);
		struct tcase m = *c;

		/* every strict prefix fails */
		for (n = 0; n < len; n++) {
			memcpy(buf, src, n);
			buf[n] = '\0';
			if (c->presigned)
				m.query = buf;
			else
				set_hdr(&m, "authorization", buf);
			if (run(&m, NULL, 0) >= 0)
				fail_msg("%s: prefix of %zu bytes verified", c->name, n);
		}
	}
	/* random damage: replaced, removed and inserted bytes */
	for (k = 0; k < 30000; k++) {
		const struct tcase *c = &cases[rand_r(&seed) % ncases];
		const char *src =
		    c->presigned ? c->query : c->hdr[hdr_index(c, "authorization")].value;
		struct tcase m = *c;
		size_t len = strlen(src), edits = 1 + rand_r(&seed) % 4, e;
		bool garbage_path;
		int ret;

		memcpy(buf, src, len + 1);
		for (e = 0; e < edits; e++) {
			size_t at = len ? rand_r(&seed) % len : 0;
			int op = rand_r(&seed) % 4;
			char ch = op == 3 ? alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)]
			                  : (char)(1 + rand_r(&seed) % 255);

			if (op == 0 && len) { /* replace */
				buf[at] = ch;
			} else if (op == 1 && len) { /* remove */
				memmove(buf + at, buf + at + 1, len - at);
				len--;
			} else if (len + 1 < sizeof(buf)) { /* insert */
				memmove(buf + at + 1, buf + at, len - at + 1);
				buf[at] = ch;
				len++;
			}
		}
		if (c->presigned)
			m.query = buf;
		else
			set_hdr(&m, "authorization", buf);
		garbage_path = rand_r(&seed) % 8 == 0;
		if (garbage_path)
			m.path = buf;
		ret = run(&m, NULL, 0);
		assert_true(ret <= 0);
		if (ret == 0 && garbage_path)
			fail_msg("%s: verified with a garbage path", c->name);
		if (ret == 0) {
			equivalent_form(src, c->presigned, norm1, sizeof(norm1));
			equivalent_form(buf, c->presigned, norm2, sizeof(norm2));
			if (strcmp(norm1, norm2))
				fail_msg("%s: damaged input verified:\n%s\n%s", c->name, src, buf);
			accepted++;
		}
	}
	/* some damage is harmless (the access key, blanks): seen, and checked */
	assert_true(accepted > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cases_verify),
	    cmocka_unit_test(test_cases_sign),
	    cmocka_unit_test(test_key_vectors),
	    cmocka_unit_test(test_mutations),
	    cmocka_unit_test(test_authorization_malformed),
	    cmocka_unit_test(test_request_malformed),
	    cmocka_unit_test(test_presigned_params),
	    cmocka_unit_test(test_ceilings),
	    cmocka_unit_test(test_self_signed),
	    cmocka_unit_test(test_fuzz),
	};

	return cmocka_run_group_tests(tests, load_cases, free_cases);
}
