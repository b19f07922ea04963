/* aws-chunked decoding against bodies real clients sent (botocore, awscli,
 * minio-go) and AWS's documented examples, recorded in tests/data/chunked
 * by gen.py. Each case is decoded whole, byte by byte and in random pieces
 * and must give back the payload with its signatures and checksum right,
 * its Authorization verified by the SigV4 module first; then every kind of
 * damage (a flipped byte in data, signature or checksum, truncation, lying
 * or huge chunk sizes, missing CRLF, data after the end...) must fail with
 * its S3 error, and random damage must never yield a wrong payload. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "api/chunked.h"
#include "api/sigv4.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/util.h"

#define MAX_CASES 64
#define MAX_FILE (1u << 20)

struct tcase {
	const char *name, *client, *method, *path, *query, *secret, *region;
	struct nb_kv hdr[NB_SIGV4_MAX_HEADERS];
	size_t nh;
	char *body, *payload;
	size_t body_len, payload_len;
	bool verify_auth;
	/* what the headers say */
	enum nb_chunked_mode mode;
	const char *trailer;                  /* x-amz-trailer */
	const char *cksum_name, *cksum_value; /* x-amz-checksum-* sent as a header */
	const char *trailer_value;            /* the checksum in the body's trailer */
	int64_t decoded_length;
	/* from the verified Authorization */
	char seed[65], amz_date[17], scope[NB_CHUNKED_MAX_SCOPE];
	unsigned char key[32];
};

static json_t *root;
static struct tcase cases[MAX_CASES];
static size_t ncases;

static const char *data_dir(void)
{
	return getenv("NB_TEST_DATA") ? getenv("NB_TEST_DATA") : NB_TEST_DATA;
}

static int read_data(const char *name, char **out, size_t *len)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/chunked/%s", data_dir(), name);
	return nb_read_file(path, MAX_FILE, out, len);
}

static const char *hdr(const struct tcase *c, const char *name)
{
	for (size_t i = 0; i < c->nh; i++)
		if (!strcasecmp(c->hdr[i].key, name))
			return c->hdr[i].value;
	return NULL;
}

static int64_t amz_epoch(const char *s)
{
	struct tm tm = {0};

	if (!s || strlen(s) != 16 || !strptime(s, "%Y%m%dT%H%M%SZ", &tm))
		return -1;
	return (int64_t)timegm(&tm);
}

static const char *memfind(const char *h, size_t hn, const char *n)
{
	size_t nn = strlen(n);

	for (size_t i = 0; i + nn <= hn; i++)
		if (!memcmp(h + i, n, nn))
			return h + i;
	return NULL;
}

/* The Authorization is checked by the SigV4 module, as the S3 layer will;
 * its signature is the seed of the chunk signatures. */
static int setup_auth(struct tcase *c)
{
	struct nb_sigv4_req r = {0};
	struct nb_sigv4_auth a;
	char err[256], body_hash[65];
	int ret;

	r.method = c->method;
	r.path = c->path;
	r.query = c->query[0] ? c->query : NULL;
	r.headers = c->hdr;
	r.nheaders = c->nh;
	r.s3 = true;
	r.now = amz_epoch(hdr(c, "x-amz-date"));
	if (c->mode == NB_CHUNKED_NONE) {
		nb_sha256_hex(c->body, c->body_len, body_hash);
		r.body_sha256 = body_hash;
	}
	ret = nb_sigv4_parse(&r, &a, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "%s: sigv4 parse: %s\n", c->name, err);
		return ret;
	}
	if (c->verify_auth) {
		ret = nb_sigv4_verify(&r, &a, c->secret, c->region, "s3", err, sizeof(err));
		if (ret < 0) {
			fprintf(stderr, "%s: sigv4 verify: %s\n", c->name, err);
			return ret;
		}
	}
	memcpy(c->seed, a.signature, sizeof(c->seed));
	memcpy(c->amz_date, a.amz_date, sizeof(c->amz_date));
	snprintf(c->scope, sizeof(c->scope), "%s/%s/%s/aws4_request", a.date, a.region, a.service);
	nb_sigv4_signing_key(c->secret, a.date, a.region, a.service, c->key);
	return 0;
}

static int setup_case(struct tcase *c, json_t *j)
{
	json_t *h, *pair;
	size_t i;
	const char *v;
	uint64_t n;

	c->name = json_string_value(json_object_get(j, "name"));
	c->client = json_string_value(json_object_get(j, "client"));
	c->method = json_string_value(json_object_get(j, "method"));
	c->path = json_string_value(json_object_get(j, "path"));
	c->query = json_string_value(json_object_get(j, "query"));
	c->secret = json_string_value(json_object_get(j, "secret"));
	c->region = json_string_value(json_object_get(j, "region"));
	c->verify_auth = !json_is_false(json_object_get(j, "verify_auth"));
	if (!c->name || !c->method || !c->path || !c->query || !c->secret || !c->region)
		return -1;
	h = json_object_get(j, "headers");
	json_array_foreach(h, i, pair)
	{
		if (c->nh >= NB_SIGV4_MAX_HEADERS)
			return -1;
		c->hdr[c->nh].key = json_string_value(json_array_get(pair, 0));
		c->hdr[c->nh].value = json_string_value(json_array_get(pair, 1));
		c->nh++;
	}
	if (read_data(json_string_value(json_object_get(j, "body")), &c->body, &c->body_len) < 0 ||
	    read_data(json_string_value(json_object_get(j, "payload")), &c->payload,
	              &c->payload_len) < 0)
		return -1;
	if (nb_chunked_mode_parse(hdr(c, "x-amz-content-sha256"), &c->mode) < 0)
		return -1;
	c->trailer = hdr(c, "x-amz-trailer");
	for (i = 0; i < c->nh; i++)
		if (nb_cksum_algo_from_header(c->hdr[i].key)) {
			c->cksum_name = c->hdr[i].key;
			c->cksum_value = c->hdr[i].value;
		}
	v = hdr(c, c->mode == NB_CHUNKED_NONE ? "content-length" : "x-amz-decoded-content-length");
	c->decoded_length = -1;
	if (v && nb_parse_u64(v, &n) == 0)
		c->decoded_length = (int64_t)n;
	if (c->trailer) {
		const char *t = memfind(c->body, c->body_len, c->trailer);

		c->trailer_value = t ? t + strlen(c->trailer) + 1 : NULL;
	}
	return setup_auth(c);
}

static int load_cases(void **state)
{
	char *data = NULL;
	size_t len, i;
	json_error_t jerr;
	json_t *c;

	(void)state;
	if (read_data("cases.json", &data, &len) < 0)
		return -1;
	root = json_loadb(data, len, 0, &jerr);
	free(data);
	if (!root)
		return -1;
	json_array_foreach(json_object_get(root, "cases"), i, c)
	{
		if (ncases >= MAX_CASES || setup_case(&cases[ncases++], c) < 0) {
			fprintf(stderr, "case %zu does not load\n", i);
			return -1;
		}
	}
	return ncases ? 0 : -1;
}

static int free_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < ncases; i++) {
		free(cases[i].body);
		free(cases[i].payload);
	}
	json_decref(root);
	return 0;
}

static const struct tcase *find_case(const char *name)
{
	for (size_t i = 0; i < ncases; i++)
		if (!strcmp(cases[i].name, name))
			return &cases[i];
	fail_msg("no case %s", name);
	return NULL;
}

/* ---- decoding helpers ---- */

struct sink {
	struct nb_buf out;
	int fail_after; /* > 0: fail the call after that many bytes were taken */
};

static int sink_write(void *ctx, const void *data, size_t len)
{
	struct sink *s = ctx;

	if (s->fail_after > 0 && s->out.len + len > (size_t)s->fail_after)
		return -ENOSPC;
	return nb_buf_append(&s->out, data, len);
}

static void cfg_of(const struct tcase *c, struct nb_chunked_cfg *cfg, struct sink *s)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->mode = c->mode;
	cfg->signing_key = c->key;
	cfg->seed_signature = c->seed;
	cfg->amz_date = c->amz_date;
	cfg->scope = c->scope;
	cfg->trailer = c->trailer;
	cfg->checksum_name = c->cksum_name;
	cfg->checksum_value = c->cksum_value;
	cfg->decoded_length = c->decoded_length;
	cfg->out = sink_write;
	cfg->out_ctx = s;
}

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* split: 0 whole, 1 byte by byte, else the seed of random pieces (1..max). */
struct result {
	int feed, finish;
	enum nb_chunked_fault fault;
	const char *code;
	char msg[200];
};

static struct result run(const struct nb_chunked_cfg *cfg, const char *body, size_t len,
                         uint64_t split, size_t max_piece)
{
	struct nb_chunked d;
	struct result res = {0};
	size_t off = 0;

	assert_int_equal(nb_chunked_init(&d, cfg), 0);
	while (off < len && !res.feed) {
		size_t n = len - off;

		if (split == 1)
			n = 1;
		else if (split > 1)
			n = 1 + (size_t)(rng_next(&split) % max_piece);
		if (n > len - off)
			n = len - off;
		res.feed = nb_chunked_feed(&d, body + off, n);
		off += n;
	}
	/* an empty piece never changes anything */
	if (!res.feed)
		res.feed = nb_chunked_feed(&d, body, 0);
	res.finish = nb_chunked_finish(&d);
	res.fault = d.fault;
	res.code = nb_chunked_s3_code(&d);
	nb_strlcpy(res.msg, nb_chunked_message(&d), sizeof(res.msg));
	/* errors are sticky; success stays success */
	assert_int_equal(nb_chunked_finish(&d), res.finish);
	if (res.feed)
		assert_int_equal(res.finish, res.feed);
	nb_chunked_free(&d);
	nb_chunked_free(&d); /* twice is harmless */
	return res;
}

static void expect_ok(const struct tcase *c, const char *body, size_t len, uint64_t split,
                      size_t max_piece)
{
	struct nb_chunked_cfg cfg;
	struct sink s = {0};
	struct result r;

	nb_buf_init(&s.out, MAX_FILE);
	cfg_of(c, &cfg, &s);
	r = run(&cfg, body, len, split, max_piece);
	if (r.finish)
		fail_msg("%s split %llu: %s %s", c->name, (unsigned long long)split, r.code, r.msg);
	assert_int_equal(r.feed, 0);
	assert_int_equal(s.out.len, c->payload_len);
	assert_memory_equal(s.out.data, c->payload, c->payload_len);
	nb_buf_free(&s.out);
}

/* Decodes body with c's headers (cfg adjusted by tweak when given); the
 * result must be fault f. */
static struct result expect_fault(const struct tcase *c, const char *what, const char *body,
                                  size_t len, enum nb_chunked_fault f,
                                  void (*tweak)(struct nb_chunked_cfg *, void *), void *arg)
{
	static const uint64_t splits[] = {0, 1, 0x9e3779b97f4a7c15ull};
	struct nb_chunked_cfg cfg;
	struct result r = {0};

	for (size_t i = 0; i < NB_ARRAY_SIZE(splits); i++) {
		struct sink s = {0};

		nb_buf_init(&s.out, MAX_FILE);
		cfg_of(c, &cfg, &s);
		if (tweak)
			tweak(&cfg, arg);
		r = run(&cfg, body, len, splits[i], 700);
		if (r.fault != f)
			fail_msg("%s, %s (split %zu): fault %d (%s: %s), expected %d", c->name,
			         what, i, r.fault, r.code ? r.code : "ok", r.msg, f);
		assert_true(r.finish < 0);
		nb_buf_free(&s.out);
	}
	return r;
}

/* ---- where things are in a body ---- */

struct layout {
	size_t hex_len; /* digits of the first chunk size */
	uint64_t size;  /* first chunk size */
	size_t sig;     /* offset of its signature, 0 when unsigned */
	size_t data;    /* offset of its data */
	size_t tsig;    /* offset of x-amz-trailer-signature's value, 0 if none */
	size_t tval;    /* offset of the trailer checksum value, 0 if none */
};

static struct layout layout_of(const struct tcase *c)
{
	struct layout l = {0};
	const char *b = c->body, *p;

	if (c->mode == NB_CHUNKED_NONE)
		return l;
	while (l.hex_len < c->body_len && strchr("0123456789abcdefABCDEF", b[l.hex_len]) &&
	       b[l.hex_len])
		l.size = l.size * 16 + (uint64_t)strtol((char[]){b[l.hex_len++], 0}, NULL, 16);
	p = memfind(b, c->body_len, "\r\n");
	assert_non_null(p);
	l.data = (size_t)(p - b) + 2;
	if (c->mode != NB_CHUNKED_UNSIGNED_TRAILER)
		l.sig = l.hex_len + strlen(";chunk-signature=");
	p = memfind(b, c->body_len, "x-amz-trailer-signature:");
	if (p)
		l.tsig = (size_t)(p - b) + strlen("x-amz-trailer-signature:");
	if (c->trailer_value)
		l.tval = (size_t)(c->trailer_value - b);
	return l;
}

/* A copy of body with [at, at+cut) replaced by ins. Caller frees. */
static char *splice(const struct tcase *c, size_t at, size_t cut, const char *ins, size_t ins_len,
                    size_t *len)
{
	char *m = malloc(c->body_len - cut + ins_len + 1);

	assert_non_null(m);
	memcpy(m, c->body, at);
	memcpy(m + at, ins, ins_len);
	memcpy(m + at + ins_len, c->body + at + cut, c->body_len - at - cut);
	*len = c->body_len - cut + ins_len;
	return m;
}

static char other_hex(char ch)
{
	return ch == '0' ? '1' : '0';
}

static char other_b64(char ch)
{
	return ch == 'A' ? 'B' : 'A';
}

static bool is_signed(const struct tcase *c)
{
	return c->mode == NB_CHUNKED_SIGNED || c->mode == NB_CHUNKED_SIGNED_TRAILER;
}

/* ---- tests ---- */

static void test_crc_vectors(void **state)
{
	const char *v = "123456789";
	uint32_t a;

	(void)state;
	assert_int_equal(nb_crc32_update(0, v, 9), 0xcbf43926u);
	assert_int_equal(nb_crc32c_update(0, v, 9), 0xe3069283u);
	assert_int_equal(nb_crc32_update(0, "", 0), 0);
	assert_int_equal(nb_crc32c_update(0, "", 0), 0);
	/* running: any split gives the same */
	for (size_t i = 0; i <= 9; i++) {
		a = nb_crc32_update(nb_crc32_update(0, v, i), v + i, 9 - i);
		assert_int_equal(a, 0xcbf43926u);
		a = nb_crc32c_update(nb_crc32c_update(0, v, i), v + i, 9 - i);
		assert_int_equal(a, 0xe3069283u);
	}
	/* 32 bytes of zeros and of 0xff: RFC 3720's CRC32C examples */
	{
		unsigned char z[32] = {0}, f[32];

		memset(f, 0xff, sizeof(f));
		assert_int_equal(nb_crc32c_update(0, z, 32), 0x8a9136aau);
		assert_int_equal(nb_crc32c_update(0, f, 32), 0x62a8ab43u);
	}
}

static void test_cksum_api(void **state)
{
	static const struct {
		enum nb_cksum_algo algo;
		const char *empty, *abc;
	} v[] = {
	    {NB_CKSUM_CRC32, "AAAAAA==", "NSRBwg=="},
	    {NB_CKSUM_CRC32C, "AAAAAA==", "Nks/tw=="},
	    {NB_CKSUM_SHA1, "2jmj7l5rSw0yVb/vlWAYkK/YBwk=", "qZk+NkcGgWq6PiVxeFDCbJzQ2J0="},
	    {NB_CKSUM_SHA256, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
	     "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="},
	};
	char b64[NB_CKSUM_B64_MAX];
	struct nb_cksum c;

	(void)state;
	for (size_t i = 0; i < NB_ARRAY_SIZE(v); i++) {
		assert_int_equal(nb_cksum_init(&c, v[i].algo), 0);
		assert_int_equal(nb_cksum_final(&c, b64), 0);
		assert_string_equal(b64, v[i].empty);
		/* final once per init */
		assert_int_equal(nb_cksum_final(&c, b64), -EINVAL);
		nb_cksum_free(&c);
		assert_int_equal(nb_cksum_init(&c, v[i].algo), 0);
		nb_cksum_update(&c, "a", 1);
		nb_cksum_update(&c, "", 0);
		nb_cksum_update(&c, "bc", 2);
		assert_int_equal(nb_cksum_final(&c, b64), 0);
		assert_string_equal(b64, v[i].abc);
		nb_cksum_free(&c);
		nb_cksum_free(&c);
		/* names both ways */
		assert_int_equal(nb_cksum_algo_from_header(nb_cksum_header(v[i].algo)), v[i].algo);
		assert_int_equal(nb_cksum_algo_from_label(nb_cksum_label(v[i].algo)), v[i].algo);
	}
	assert_int_equal(nb_cksum_algo_from_header("X-Amz-Checksum-CRC32C"), NB_CKSUM_CRC32C);
	assert_int_equal(nb_cksum_algo_from_header("x-amz-checksum-crc64nvme"), NB_CKSUM_NONE);
	assert_int_equal(nb_cksum_algo_from_header("x-amz-checksum-crc3"), NB_CKSUM_NONE);
	assert_int_equal(nb_cksum_algo_from_header("x-amz-sdk-checksum-algorithm"), NB_CKSUM_NONE);
	assert_int_equal(nb_cksum_algo_from_header(NULL), NB_CKSUM_NONE);
	assert_int_equal(nb_cksum_algo_from_label("sha256"), NB_CKSUM_SHA256);
	assert_int_equal(nb_cksum_algo_from_label("MD5"), NB_CKSUM_NONE);
	assert_null(nb_cksum_header(NB_CKSUM_NONE));
	assert_int_equal(nb_cksum_init(&c, NB_CKSUM_NONE), -EINVAL);
	nb_cksum_free(&c);
	assert_int_equal(nb_cksum_init(&c, (enum nb_cksum_algo)42), -EINVAL);
	nb_cksum_free(&c);
	nb_cksum_free(NULL);
}

/* Every checksum a client sent, trailer or header, is what nb_cksum gives
 * over the payload. */
static void test_cksum_matches_clients(void **state)
{
	size_t checked = 0;

	(void)state;
	for (size_t i = 0; i < ncases; i++) {
		const struct tcase *c = &cases[i];
		const char *name = c->trailer ? c->trailer : c->cksum_name;
		const char *want = c->trailer ? c->trailer_value : c->cksum_value;
		char b64[NB_CKSUM_B64_MAX];
		struct nb_cksum k;

		if (!name)
			continue;
		assert_non_null(want);
		assert_int_equal(nb_cksum_init(&k, nb_cksum_algo_from_header(name)), 0);
		nb_cksum_update(&k, c->payload, c->payload_len);
		assert_int_equal(nb_cksum_final(&k, b64), 0);
		nb_cksum_free(&k);
		if (strncmp(want, b64, strlen(b64)))
			fail_msg("%s: %s %s, computed %s", c->name, name, want, b64);
		checked++;
	}
	assert_true(checked >= 15);
}

static void test_mode_parse(void **state)
{
	enum nb_chunked_mode m;

	(void)state;
	assert_int_equal(nb_chunked_mode_parse("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", &m), 0);
	assert_int_equal(m, NB_CHUNKED_SIGNED);
	assert_int_equal(nb_chunked_mode_parse("STREAMING-UNSIGNED-PAYLOAD-TRAILER", &m), 0);
	assert_int_equal(m, NB_CHUNKED_UNSIGNED_TRAILER);
	assert_int_equal(nb_chunked_mode_parse("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", &m),
	                 0);
	assert_int_equal(m, NB_CHUNKED_SIGNED_TRAILER);
	assert_int_equal(nb_chunked_mode_parse("UNSIGNED-PAYLOAD", &m), 0);
	assert_int_equal(m, NB_CHUNKED_NONE);
	assert_int_equal(nb_chunked_mode_parse(NULL, &m), 0);
	assert_int_equal(m, NB_CHUNKED_NONE);
	assert_int_equal(
	    nb_chunked_mode_parse(
	        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", &m),
	    0);
	assert_int_equal(m, NB_CHUNKED_NONE);
	assert_int_equal(nb_chunked_mode_parse("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", &m),
	                 -ENOTSUP);
	assert_int_equal(nb_chunked_mode_parse("STREAMING-AWS4-HMAC-SHA256-payload", &m), -ENOTSUP);
}

/* Which clients the data covers: a regenerated cases.json must keep them. */
static void test_cases_cover_clients(void **state)
{
	static const char *const want[] = {
	    "doc-signed",
	    "doc-signed-trailer",
	    "botocore-put-crc32",
	    "botocore-put-crc32c",
	    "botocore-put-sha1",
	    "botocore-put-sha256",
	    "botocore-upload-part-sha256",
	    "botocore-header-crc32",
	    "awscli-cp-crc32",
	    "awscli-cp-70k-crc32",
	    "minio-put-3k",
	    "minio-put-70k",
	    "minio-trailer-3k",
	    "minio-trailer-70k",
	};
	size_t modes[4] = {0};

	(void)state;
	for (size_t i = 0; i < NB_ARRAY_SIZE(want); i++)
		assert_non_null(find_case(want[i]));
	for (size_t i = 0; i < ncases; i++)
		modes[cases[i].mode]++;
	for (size_t i = 0; i < 4; i++)
		assert_true(modes[i] >= 1);
	/* the multi-chunk signed case really has several chunks */
	assert_true(memfind(find_case("minio-put-70k")->body, find_case("minio-put-70k")->body_len,
	                    "\r\n1800;chunk-signature=") != NULL);
}

static void test_cases_decode(void **state)
{
	(void)state;
	for (size_t i = 0; i < ncases; i++) {
		const struct tcase *c = &cases[i];

		expect_ok(c, c->body, c->body_len, 0, 0);
		expect_ok(c, c->body, c->body_len, 1, 0);
		for (uint64_t seed = 2; seed < 6; seed++)
			expect_ok(c, c->body, c->body_len, seed * 0x9e3779b97f4a7c15ull,
			          seed == 2   ? 7
			          : seed == 3 ? 90
			          : seed == 4 ? 5000
			                      : 70000);
	}
}

/* After success the decoder reports the checksum it computed. */
static void test_checksum_reported(void **state)
{
	const struct tcase *c = find_case("botocore-put-crc32c");
	struct nb_chunked_cfg cfg;
	struct nb_chunked d;
	struct sink s = {0};
	enum nb_cksum_algo algo = NB_CKSUM_NONE;
	const char *v;

	(void)state;
	nb_buf_init(&s.out, MAX_FILE);
	cfg_of(c, &cfg, &s);
	assert_int_equal(nb_chunked_init(&d, &cfg), 0);
	assert_null(nb_chunked_checksum(&d, &algo));
	assert_int_equal(nb_chunked_feed(&d, c->body, c->body_len), 0);
	assert_int_equal(nb_chunked_finish(&d), 0);
	v = nb_chunked_checksum(&d, &algo);
	assert_non_null(v);
	assert_int_equal(algo, NB_CKSUM_CRC32C);
	assert_string_equal(v, "xJg1ZQ==");
	assert_int_equal(nb_chunked_decoded(&d), c->payload_len);
	assert_int_equal(nb_chunked_http_status(&d), 200);
	assert_null(nb_chunked_s3_code(&d));
	assert_string_equal(nb_chunked_message(&d), "");
	nb_chunked_free(&d);
	nb_buf_free(&s.out);

	/* signed without a checksum: none to report */
	c = find_case("minio-put-3k");
	nb_buf_init(&s.out, MAX_FILE);
	cfg_of(c, &cfg, &s);
	assert_int_equal(nb_chunked_init(&d, &cfg), 0);
	assert_int_equal(nb_chunked_feed(&d, c->body, c->body_len), 0);
	assert_int_equal(nb_chunked_finish(&d), 0);
	assert_null(nb_chunked_checksum(&d, NULL));
	nb_chunked_free(&d);
	nb_buf_free(&s.out);
}

static void flip_data(const struct tcase *c, const struct layout *l)
{
	size_t len, at;
	char *m;
	enum nb_chunked_fault f = is_signed(c) ? NB_CHUNKED_SIGNATURE : NB_CHUNKED_BAD_DIGEST;
	struct result r;

	if (!c->payload_len)
		return;
	at = l->data + (c->payload_len > 5 ? 5 : 0);
	m = splice(c, at, 1, (char[]){(char)(c->body[at] ^ 0x20)}, 1, &len);
	r = expect_fault(c, "flipped data byte", m, len, f, NULL, NULL);
	assert_int_equal(r.finish, is_signed(c) ? -NB_E_SIG_MISMATCH : -NB_E_INVALID);
	free(m);
	/* the last payload byte too */
	if (c->mode != NB_CHUNKED_NONE) {
		const char *end = c->body + c->body_len;
		const char *z = NULL;

		/* the byte before the CRLF before the final chunk header */
		for (const char *p = end - 5; p > c->body + 2; p--)
			if (p[0] == '\r' && p[1] == '\n' && p[2] == '0' &&
			    (p[3] == '\r' || p[3] == ';')) {
				z = p - 1;
				break;
			}
		assert_non_null(z);
		at = (size_t)(z - c->body);
		m = splice(c, at, 1, (char[]){(char)(c->body[at] ^ 1)}, 1, &len);
		expect_fault(c, "flipped last data byte", m, len, f, NULL, NULL);
		free(m);
	} else {
		at = c->body_len - 1;
		m = splice(c, at, 1, (char[]){(char)(c->body[at] ^ 1)}, 1, &len);
		expect_fault(c, "flipped last byte", m, len, f, NULL, NULL);
		free(m);
	}
}

static void flip_signatures(const struct tcase *c, const struct layout *l)
{
	size_t len;
	char *m;
	struct result r;

	if (l->sig) {
		m = splice(c, l->sig + 10, 1, (char[]){other_hex(c->body[l->sig + 10])}, 1, &len);
		expect_fault(c, "flipped chunk signature", m, len, NB_CHUNKED_SIGNATURE, NULL,
		             NULL);
		free(m);
		/* the final chunk's signature */
		{
			const char *last = NULL, *p = c->body;

			while ((p = memfind(p, c->body_len - (size_t)(p - c->body),
			                    "0;chunk-signature=")))
				last = p++;
			assert_non_null(last);
			size_t at = (size_t)(last - c->body) + strlen("0;chunk-signature=") + 63;
			m = splice(c, at, 1, (char[]){other_hex(c->body[at])}, 1, &len);
			expect_fault(c, "flipped final signature", m, len, NB_CHUNKED_SIGNATURE,
			             NULL, NULL);
			free(m);
		}
	}
	if (l->tsig) {
		m = splice(c, l->tsig, 1, (char[]){other_hex(c->body[l->tsig])}, 1, &len);
		expect_fault(c, "flipped trailer signature", m, len, NB_CHUNKED_SIGNATURE, NULL,
		             NULL);
		free(m);
		/* trailer signature line gone */
		{
			const char *p = c->body + l->tsig - strlen("x-amz-trailer-signature:");
			const char *e = memfind(p, c->body_len - (size_t)(p - c->body), "\r\n");

			assert_non_null(e);
			m = splice(c, (size_t)(p - c->body), (size_t)(e + 2 - p), "", 0, &len);
			/* the blank line after the checksum may still precede the
			 * signature (minio-go): only the end of the body tells */
			r = expect_fault(c, "trailer signature removed", m, len,
			                 NB_CHUNKED_INCOMPLETE, NULL, NULL);
			assert_non_null(strstr(r.msg, "x-amz-trailer-signature"));
			free(m);
		}
	}
	if (l->tval) {
		enum nb_chunked_fault f = c->mode == NB_CHUNKED_SIGNED_TRAILER
		                              ? NB_CHUNKED_SIGNATURE
		                              : NB_CHUNKED_BAD_DIGEST;

		m = splice(c, l->tval, 1, (char[]){other_b64(c->body[l->tval])}, 1, &len);
		expect_fault(c, "flipped trailer checksum", m, len, f, NULL, NULL);
		free(m);
	}
}

static void lie_in_size(const struct tcase *c, const struct layout *l)
{
	char hex[40];
	size_t len, n;
	char *m;
	bool whole = c->decoded_length >= 0 && l->size == (uint64_t)c->decoded_length;

	if (c->mode == NB_CHUNKED_NONE || !l->size)
		return;
	n = (size_t)snprintf(hex, sizeof(hex), "%llx", (unsigned long long)l->size - 1);
	m = splice(c, 0, l->hex_len, hex, n, &len);
	expect_fault(c, "chunk size one short", m, len,
	             is_signed(c) ? NB_CHUNKED_SIGNATURE : NB_CHUNKED_MALFORMED, NULL, NULL);
	free(m);
	n = (size_t)snprintf(hex, sizeof(hex), "%llx", (unsigned long long)l->size + 1);
	m = splice(c, 0, l->hex_len, hex, n, &len);
	expect_fault(c, "chunk size one long", m, len,
	             whole          ? NB_CHUNKED_INCOMPLETE
	             : is_signed(c) ? NB_CHUNKED_SIGNATURE
	                            : NB_CHUNKED_MALFORMED,
	             NULL, NULL);
	free(m);
}

static void huge_sizes(const struct tcase *c, const struct layout *l)
{
	static const struct {
		const char *hex;
		enum nb_chunked_fault f;
	} v[] = {
	    {"fffffffffffffffffffffffffff", NB_CHUNKED_MALFORMED}, /* 27 digits */
	    {"10000000000000000", NB_CHUNKED_MALFORMED},           /* 2^64: 17 digits */
	    {"ffffffffffffffff", NB_CHUNKED_MALFORMED},            /* 2^64 - 1 */
	    {"10000000000", NB_CHUNKED_MALFORMED},                 /* 1 TiB: above 5 GiB */
	    {"140000001", NB_CHUNKED_MALFORMED},                   /* 5 GiB + 1 */
	    {"ffffffff", NB_CHUNKED_INCOMPLETE},                   /* past decoded length */
	    {"-1", NB_CHUNKED_MALFORMED},
	    {"", NB_CHUNKED_MALFORMED},
	    {" 1", NB_CHUNKED_MALFORMED},
	    {"0x10", NB_CHUNKED_MALFORMED},
	};
	size_t len;
	char *m;

	if (c->mode == NB_CHUNKED_NONE)
		return;
	for (size_t i = 0; i < NB_ARRAY_SIZE(v); i++) {
		m = splice(c, 0, l->hex_len, v[i].hex, strlen(v[i].hex), &len);
		expect_fault(c, v[i].hex, m, len, v[i].f, NULL, NULL);
		free(m);
	}
}

static void framing(const struct tcase *c, const struct layout *l)
{
	size_t len;
	char *m;
	const char *lf;

	if (c->mode == NB_CHUNKED_NONE)
		return;
	/* the chunk header ended by a bare LF */
	lf = memchr(c->body, '\n', c->body_len);
	m = splice(c, (size_t)(lf - c->body) - 1, 1, "", 0, &len);
	expect_fault(c, "header ended by LF", m, len, NB_CHUNKED_MALFORMED, NULL, NULL);
	free(m);
	/* a NUL in the chunk header */
	m = splice(c, l->hex_len, 0, "\0", 1, &len);
	expect_fault(c, "NUL in header", m, len, NB_CHUNKED_MALFORMED, NULL, NULL);
	free(m);
	/* leading zeros make a header line above its ceiling */
	{
		char *zeros = malloc(NB_CHUNKED_MAX_LINE + 10);

		assert_non_null(zeros);
		memset(zeros, '0', NB_CHUNKED_MAX_LINE + 10);
		m = splice(c, 0, 0, zeros, NB_CHUNKED_MAX_LINE + 10, &len);
		expect_fault(c, "endless header", m, len, NB_CHUNKED_MALFORMED, NULL, NULL);
		free(m);
		free(zeros);
	}
	/* an extension where none belongs, or a garbled one */
	if (c->mode == NB_CHUNKED_UNSIGNED_TRAILER) {
		m = splice(c, l->hex_len, 0, ";x=y", 4, &len);
		expect_fault(c, "chunk extension", m, len, NB_CHUNKED_MALFORMED, NULL, NULL);
		free(m);
	} else {
		m = splice(c, l->hex_len + 1, 5, "CHUNK", 5, &len);
		expect_fault(c, "garbled extension", m, len, NB_CHUNKED_MALFORMED, NULL, NULL);
		free(m);
		m = splice(c, l->sig, 2, "", 0, &len); /* 62 hex digits */
		expect_fault(c, "short signature", m, len, NB_CHUNKED_MALFORMED, NULL, NULL);
		free(m);
	}
	/* the CRLF after the first chunk's data missing, or only half there */
	if (l->size) {
		size_t at = l->data + l->size;

		assert_memory_equal(c->body + at, "\r\n", 2);
		m = splice(c, at, 2, "", 0, &len);
		expect_fault(c, "CRLF after data missing", m, len, NB_CHUNKED_MALFORMED, NULL,
		             NULL);
		free(m);
		m = splice(c, at, 1, "", 0, &len);
		expect_fault(c, "CR after data missing", m, len, NB_CHUNKED_MALFORMED, NULL, NULL);
		free(m);
		m = splice(c, at + 1, 1, "X", 1, &len);
		expect_fault(c, "LF after data wrong", m, len, NB_CHUNKED_MALFORMED, NULL, NULL);
		free(m);
	}
}

static void after_end(const struct tcase *c)
{
	static const char *const extra[] = {"x", "\r\n", "0\r\n\r\n", "\0"};
	size_t len;
	char *m;

	for (size_t i = 0; i < NB_ARRAY_SIZE(extra); i++) {
		size_t n = i == 3 ? 1 : strlen(extra[i]);

		m = splice(c, c->body_len, 0, extra[i], n, &len);
		expect_fault(c, "data after the end", m, len,
		             c->mode == NB_CHUNKED_NONE ? NB_CHUNKED_INCOMPLETE
		                                        : NB_CHUNKED_MALFORMED,
		             NULL, NULL);
		free(m);
	}
}

static void truncations(const struct tcase *c)
{
	uint64_t rng = 0x243f6a8885a308d3ull ^ c->body_len;
	struct nb_chunked_cfg cfg;

	for (size_t k = 0; k < 440; k++) {
		size_t cut;
		struct sink s = {0};
		struct result r;

		if (k < 200)
			cut = k;
		else if (k < 400)
			cut = c->body_len > k - 200 ? c->body_len - 1 - (k - 200) : 0;
		else
			cut = (size_t)(rng_next(&rng) % (c->body_len ? c->body_len : 1));
		if (cut >= c->body_len)
			continue;
		nb_buf_init(&s.out, MAX_FILE);
		cfg_of(c, &cfg, &s);
		r = run(&cfg, c->body, cut, k & 1 ? 0 : 0x51ed2701 + k, 300);
		if (r.feed || r.fault != NB_CHUNKED_INCOMPLETE)
			fail_msg("%s cut at %zu of %zu: feed %d, %s: %s", c->name, cut, c->body_len,
			         r.feed, r.code ? r.code : "ok", r.msg);
		assert_true(nb_chunked_http_status(&(struct nb_chunked){.fault = r.fault}) == 400);
		nb_buf_free(&s.out);
	}
}

static void set_length(struct nb_chunked_cfg *cfg, void *arg)
{
	cfg->decoded_length = *(int64_t *)arg;
}

static void set_seed(struct nb_chunked_cfg *cfg, void *arg)
{
	cfg->seed_signature = arg;
}

static void set_key(struct nb_chunked_cfg *cfg, void *arg)
{
	cfg->signing_key = arg;
}

static void set_date(struct nb_chunked_cfg *cfg, void *arg)
{
	cfg->amz_date = arg;
}

static void set_scope(struct nb_chunked_cfg *cfg, void *arg)
{
	cfg->scope = arg;
}

static void wrong_headers(const struct tcase *c)
{
	int64_t n;

	if (c->decoded_length >= 0) {
		n = c->decoded_length + 1;
		expect_fault(c, "decoded length one more", c->body, c->body_len,
		             NB_CHUNKED_INCOMPLETE, set_length, &n);
		if (c->decoded_length > 0) {
			n = c->decoded_length - 1;
			expect_fault(c, "decoded length one less", c->body, c->body_len,
			             NB_CHUNKED_INCOMPLETE, set_length, &n);
		}
		n = 0;
		if (c->decoded_length > 0)
			expect_fault(c, "decoded length 0", c->body, c->body_len,
			             NB_CHUNKED_INCOMPLETE, set_length, &n);
	}
	if (is_signed(c)) {
		char seed[65];
		unsigned char key[32];
		char date[17];
		char scope[NB_CHUNKED_MAX_SCOPE];

		memcpy(seed, c->seed, sizeof(seed));
		seed[63] = other_hex(seed[63]);
		expect_fault(c, "wrong seed", c->body, c->body_len, NB_CHUNKED_SIGNATURE, set_seed,
		             seed);
		memcpy(key, c->key, sizeof(key));
		key[31] ^= 1;
		expect_fault(c, "wrong key", c->body, c->body_len, NB_CHUNKED_SIGNATURE, set_key,
		             key);
		memcpy(date, c->amz_date, sizeof(date));
		date[14] = date[14] == '9' ? '8' : (char)(date[14] + 1);
		expect_fault(c, "wrong date", c->body, c->body_len, NB_CHUNKED_SIGNATURE, set_date,
		             date);
		snprintf(scope, sizeof(scope), "%.8s/eu-west-1/s3/aws4_request", c->amz_date);
		expect_fault(c, "wrong scope", c->body, c->body_len, NB_CHUNKED_SIGNATURE,
		             set_scope, scope);
	}
}

static void trailer_damage(const struct tcase *c, const struct layout *l)
{
	const char *name = c->trailer;
	size_t nl, len, line, line_end;
	char *m;
	const char *e;
	struct result r;

	if (!l->tval)
		return;
	nl = strlen(name);
	line = l->tval - nl - 1;
	e = memchr(c->body + line, '\n', c->body_len - line);
	assert_non_null(e);
	line_end = (size_t)(e - c->body) + 1;
	/* another trailer name than announced */
	m = splice(c, line + nl - 2, 2, "zz", 2, &len);
	expect_fault(c, "unannounced trailer", m, len, NB_CHUNKED_TRAILER, NULL, NULL);
	free(m);
	/* the trailer twice */
	m = splice(c, line, 0, c->body + line, line_end - line, &len);
	expect_fault(c, "trailer twice", m, len, NB_CHUNKED_TRAILER, NULL, NULL);
	free(m);
	/* no colon */
	m = splice(c, line + nl, 1, "=", 1, &len);
	expect_fault(c, "trailer without colon", m, len, NB_CHUNKED_TRAILER, NULL, NULL);
	free(m);
	/* empty value */
	m = splice(c, l->tval, line_end - l->tval, "\r\n", 2, &len);
	expect_fault(c, "empty trailer value", m, len, NB_CHUNKED_TRAILER, NULL, NULL);
	free(m);
	/* trailer line gone: the body ends where its trailer should be */
	m = splice(c, line, line_end - line, "", 0, &len);
	r = expect_fault(c, "trailer removed", m, len, NB_CHUNKED_INCOMPLETE, NULL, NULL);
	assert_non_null(strstr(r.msg, name));
	free(m);
	/* ... or followed by more blank lines than any signer sends */
	m = splice(c, line, line_end - line, "\r\n\r\n\r\n", 6, &len);
	expect_fault(c, "trailer replaced by blank lines", m, len, NB_CHUNKED_TRAILER, NULL, NULL);
	free(m);
	/* an endless trailer line */
	{
		char *big = malloc(NB_CHUNKED_MAX_LINE + 1);

		assert_non_null(big);
		memset(big, 'A', NB_CHUNKED_MAX_LINE + 1);
		m = splice(c, l->tval, 0, big, NB_CHUNKED_MAX_LINE + 1, &len);
		expect_fault(c, "endless trailer", m, len, NB_CHUNKED_MALFORMED, NULL, NULL);
		free(m);
		free(big);
	}
	if (c->mode == NB_CHUNKED_UNSIGNED_TRAILER) {
		static const char sig[] =
		    "x-amz-trailer-signature:"
		    "0000000000000000000000000000000000000000000000000000000000000000\r\n";

		m = splice(c, line_end, 0, sig, strlen(sig), &len);
		expect_fault(c, "trailer signature in unsigned body", m, len, NB_CHUNKED_TRAILER,
		             NULL, NULL);
		free(m);
	}
}

static void test_damage(void **state)
{
	(void)state;
	for (size_t i = 0; i < ncases; i++) {
		const struct tcase *c = &cases[i];
		struct layout l = layout_of(c);

		flip_data(c, &l);
		flip_signatures(c, &l);
		lie_in_size(c, &l);
		huge_sizes(c, &l);
		framing(c, &l);
		after_end(c);
		truncations(c);
		wrong_headers(c);
		trailer_damage(c, &l);
	}
}

/* The body of one mode fed to a decoder expecting another. */
static void set_mode_signed(struct nb_chunked_cfg *cfg, void *arg)
{
	(void)arg;
	cfg->mode = NB_CHUNKED_SIGNED;
	cfg->trailer = NULL;
}

static void set_mode_unsigned(struct nb_chunked_cfg *cfg, void *arg)
{
	cfg->mode = NB_CHUNKED_UNSIGNED_TRAILER;
	cfg->trailer = arg;
	cfg->checksum_name = NULL;
}

static void test_wrong_mode(void **state)
{
	(void)state;
	expect_fault(find_case("botocore-put-crc32"), "unsigned body, signed decoder",
	             find_case("botocore-put-crc32")->body,
	             find_case("botocore-put-crc32")->body_len, NB_CHUNKED_MALFORMED,
	             set_mode_signed, NULL);
	expect_fault(find_case("minio-put-3k"), "signed body, unsigned decoder",
	             find_case("minio-put-3k")->body, find_case("minio-put-3k")->body_len,
	             NB_CHUNKED_MALFORMED, set_mode_unsigned, "x-amz-checksum-crc32");
	/* a signed-trailer body for a signed decoder: the trailer is refused */
	expect_fault(find_case("gen-signed-trailer-sha256"), "trailer where none announced",
	             find_case("gen-signed-trailer-sha256")->body,
	             find_case("gen-signed-trailer-sha256")->body_len, NB_CHUNKED_MALFORMED,
	             set_mode_signed, NULL);
	/* the right trailer mode, another algorithm announced */
	expect_fault(find_case("botocore-put-crc32"), "trailer of another algorithm",
	             find_case("botocore-put-crc32")->body,
	             find_case("botocore-put-crc32")->body_len, NB_CHUNKED_TRAILER,
	             set_mode_unsigned, "x-amz-checksum-sha1");
}

/* Random damage anywhere, fed in random pieces: no crash, and whenever the
 * decoder accepts, what it produced is exactly the payload. */
static void test_fuzz(void **state)
{
	uint64_t rng = 0x0123456789abcdefull;
	size_t accepted = 0, total = 0;

	(void)state;
	for (size_t i = 0; i < ncases; i++) {
		const struct tcase *c = &cases[i];

		for (int k = 0; k < 60; k++) {
			struct nb_chunked_cfg cfg;
			struct sink s = {0};
			struct result r;
			size_t len = c->body_len, at;
			char *m = malloc(len + 4); /* up to 3 bytes duplicated */
			int n = 1 + (int)(rng_next(&rng) % 3);

			assert_non_null(m);
			memcpy(m, c->body, len);
			/* damage near the structure more often than in the data */
			while (n--) {
				uint64_t x = rng_next(&rng);

				if (x & 1 && len > 300)
					at = (x >> 8) % 2 ? (x >> 16) % 150
					                  : len - 1 - (x >> 16) % 150;
				else
					at = len ? (size_t)((x >> 8) % len) : 0;
				if (!len)
					break;
				switch ((x >> 40) % 4) {
				case 0:
					m[at] = (char)(x >> 48);
					break;
				case 1:
					m[at] ^= (char)(1u << ((x >> 48) % 8));
					break;
				case 2: /* drop a byte */
					memmove(m + at, m + at + 1, len - at - 1);
					len--;
					break;
				default: /* duplicate a byte */
					memmove(m + at + 1, m + at, len - at);
					len++;
					break;
				}
			}
			nb_buf_init(&s.out, MAX_FILE);
			cfg_of(c, &cfg, &s);
			r = run(&cfg, m, len, rng_next(&rng) | 2, 1 + rng_next(&rng) % 4000);
			total++;
			if (!r.finish) {
				accepted++;
				assert_int_equal(s.out.len, c->payload_len);
				assert_memory_equal(s.out.data, c->payload, c->payload_len);
			} else {
				assert_non_null(r.code);
				assert_true(r.msg[0] != '\0');
			}
			nb_buf_free(&s.out);
			free(m);
		}
	}
	/* nearly all damage is caught: only harmless edits (the case of a hex
	 * digit) may pass */
	assert_true(accepted * 20 < total);
}

static void test_init_errors(void **state)
{
	const struct tcase *c = find_case("minio-put-3k");
	const struct tcase *u = find_case("botocore-put-crc32");
	struct nb_chunked_cfg cfg;
	struct nb_chunked d;
	struct sink s = {0};

	(void)state;
	nb_buf_init(&s.out, MAX_FILE);
#define INIT_FAILS(want, flt)                                                                      \
	do {                                                                                       \
		assert_int_equal(nb_chunked_init(&d, &cfg), (want));                               \
		assert_int_equal(d.fault, (flt));                                                  \
		assert_true(nb_chunked_message(&d)[0] != '\0');                                    \
		/* a decoder that failed init refuses everything */                                \
		assert_int_equal(nb_chunked_feed(&d, "0\r\n", 3), (want));                         \
		assert_int_equal(nb_chunked_finish(&d), (want));                                   \
		nb_chunked_free(&d);                                                               \
	} while (0)

	cfg_of(c, &cfg, &s);
	cfg.signing_key = NULL;
	INIT_FAILS(-EINVAL, NB_CHUNKED_INTERNAL);
	cfg_of(c, &cfg, &s);
	cfg.seed_signature = "abc";
	INIT_FAILS(-EINVAL, NB_CHUNKED_INTERNAL);
	cfg_of(c, &cfg, &s);
	cfg.amz_date = "20261122";
	INIT_FAILS(-EINVAL, NB_CHUNKED_INTERNAL);
	cfg_of(c, &cfg, &s);
	cfg.out = NULL;
	INIT_FAILS(-EINVAL, NB_CHUNKED_INTERNAL);
	cfg_of(c, &cfg, &s);
	cfg.decoded_length = -2;
	INIT_FAILS(-EINVAL, NB_CHUNKED_INTERNAL);
	cfg_of(c, &cfg, &s);
	cfg.mode = (enum nb_chunked_mode)9;
	INIT_FAILS(-EINVAL, NB_CHUNKED_INTERNAL);
	/* x-amz-trailer without a -TRAILER mode */
	cfg_of(c, &cfg, &s);
	cfg.trailer = "x-amz-checksum-crc32";
	INIT_FAILS(-NB_E_INVALID, NB_CHUNKED_REQUEST);
	/* a -TRAILER mode without x-amz-trailer */
	cfg_of(u, &cfg, &s);
	cfg.trailer = NULL;
	INIT_FAILS(-NB_E_INVALID, NB_CHUNKED_REQUEST);
	/* a trailer that is no checksum S3 knows */
	cfg_of(u, &cfg, &s);
	cfg.trailer = "x-amz-checksum-crc64nvme";
	INIT_FAILS(-NB_E_INVALID, NB_CHUNKED_REQUEST);
	cfg_of(u, &cfg, &s);
	cfg.trailer = "x-amz-meta-\x01\xff";
	INIT_FAILS(-NB_E_INVALID, NB_CHUNKED_REQUEST);
	assert_non_null(strstr(nb_chunked_message(&d), "??")); /* cleaned for the message */
	/* a checksum both as header and trailer */
	cfg_of(u, &cfg, &s);
	cfg.checksum_name = "x-amz-checksum-sha1";
	cfg.checksum_value = "2jmj7l5rSw0yVb/vlWAYkK/YBwk=";
	INIT_FAILS(-NB_E_INVALID, NB_CHUNKED_REQUEST);
	/* header checksums: unknown, missing or oversized values */
	cfg_of(c, &cfg, &s);
	cfg.checksum_name = "x-amz-checksum-md5";
	cfg.checksum_value = "AAAA";
	INIT_FAILS(-NB_E_INVALID, NB_CHUNKED_REQUEST);
	cfg_of(c, &cfg, &s);
	cfg.checksum_name = "x-amz-checksum-crc32";
	cfg.checksum_value = NULL;
	INIT_FAILS(-NB_E_INVALID, NB_CHUNKED_REQUEST);
	cfg_of(c, &cfg, &s);
	cfg.checksum_name = "x-amz-checksum-crc32";
	cfg.checksum_value = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
	INIT_FAILS(-NB_E_INVALID, NB_CHUNKED_REQUEST);
	assert_string_equal(nb_chunked_s3_code(&d), "InvalidRequest");
	assert_int_equal(nb_chunked_init(&d, NULL), -EINVAL);
	nb_chunked_free(&d);
	assert_int_equal(nb_chunked_init(NULL, &cfg), -EINVAL);
	assert_int_equal(nb_chunked_feed(NULL, "", 0), -EINVAL);
	assert_int_equal(nb_chunked_finish(NULL), -EINVAL);
	nb_chunked_free(NULL);
	/* the trailer name is trimmed and taken in any case */
	cfg_of(u, &cfg, &s);
	cfg.trailer = " X-Amz-Checksum-CRC32 ";
	assert_int_equal(nb_chunked_init(&d, &cfg), 0);
	assert_int_equal(nb_chunked_feed(&d, u->body, u->body_len), 0);
	assert_int_equal(nb_chunked_finish(&d), 0);
	nb_chunked_free(&d);
	nb_buf_free(&s.out);
#undef INIT_FAILS
}

static void test_output_failure(void **state)
{
	const struct tcase *c = find_case("minio-put-70k");
	struct nb_chunked_cfg cfg;
	struct nb_chunked d;
	struct sink s = {0};

	(void)state;
	nb_buf_init(&s.out, MAX_FILE);
	s.fail_after = 1000;
	cfg_of(c, &cfg, &s);
	assert_int_equal(nb_chunked_init(&d, &cfg), 0);
	assert_int_equal(nb_chunked_feed(&d, c->body, 500), 0);
	assert_int_equal(nb_chunked_feed(&d, c->body + 500, c->body_len - 500), -ENOSPC);
	assert_int_equal(d.fault, NB_CHUNKED_OUTPUT);
	assert_int_equal(nb_chunked_http_status(&d), 500);
	assert_int_equal(nb_chunked_finish(&d), -ENOSPC);
	nb_chunked_free(&d);
	nb_buf_free(&s.out);
}

/* What each fault tells the client. */
static void test_fault_codes(void **state)
{
	static const struct {
		enum nb_chunked_fault f;
		const char *code;
		int status;
	} v[] = {
	    {NB_CHUNKED_SIGNATURE, "SignatureDoesNotMatch", 403},
	    {NB_CHUNKED_BAD_DIGEST, "BadDigest", 400},
	    {NB_CHUNKED_INCOMPLETE, "IncompleteBody", 400},
	    {NB_CHUNKED_MALFORMED, "InvalidArgument", 400},
	    {NB_CHUNKED_TRAILER, "MalformedTrailerError", 400},
	    {NB_CHUNKED_REQUEST, "InvalidRequest", 400},
	    {NB_CHUNKED_UNSUPPORTED, "NotImplemented", 501},
	    {NB_CHUNKED_INTERNAL, "InternalError", 500},
	};
	const struct tcase *c = find_case("botocore-put-crc32");
	struct result r;
	size_t len;
	char *m;

	(void)state;
	for (size_t i = 0; i < NB_ARRAY_SIZE(v); i++) {
		struct nb_chunked d = {.fault = v[i].f};

		assert_string_equal(nb_chunked_s3_code(&d), v[i].code);
		assert_int_equal(nb_chunked_http_status(&d), v[i].status);
	}
	/* a bad checksum names the algorithm and both values */
	m = splice(c, c->body_len - 10, 1, "Q", 1, &len);
	r = expect_fault(c, "bad crc32", m, len, NB_CHUNKED_BAD_DIGEST, NULL, NULL);
	assert_non_null(strstr(r.msg, "x-amz-checksum-crc32"));
	assert_non_null(strstr(r.msg, "68KgJQ=="));
	free(m);
}

/* Plain bodies with a checksum header: the checksum and the length. */
static void test_plain_body(void **state)
{
	const struct tcase *c = find_case("botocore-header-crc32");
	struct nb_chunked_cfg cfg;
	struct sink s = {0};
	struct result r;

	(void)state;
	assert_int_equal(c->mode, NB_CHUNKED_NONE);
	assert_non_null(c->cksum_name);
	assert_string_equal(c->cksum_value, "68KgJQ==");
	/* no length announced: not checked, the checksum still is */
	nb_buf_init(&s.out, MAX_FILE);
	cfg_of(c, &cfg, &s);
	cfg.decoded_length = -1;
	r = run(&cfg, c->body, c->body_len - 1, 0, 0);
	assert_int_equal(r.fault, NB_CHUNKED_BAD_DIGEST);
	nb_buf_free(&s.out);
	/* no checksum: the bytes pass through untouched */
	nb_buf_init(&s.out, MAX_FILE);
	cfg_of(c, &cfg, &s);
	cfg.checksum_name = cfg.checksum_value = NULL;
	r = run(&cfg, c->body, c->body_len, 1, 0);
	assert_int_equal(r.finish, 0);
	assert_int_equal(s.out.len, c->body_len);
	nb_buf_free(&s.out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crc_vectors),
	    cmocka_unit_test(test_cksum_api),
	    cmocka_unit_test(test_cksum_matches_clients),
	    cmocka_unit_test(test_mode_parse),
	    cmocka_unit_test(test_cases_cover_clients),
	    cmocka_unit_test(test_cases_decode),
	    cmocka_unit_test(test_checksum_reported),
	    cmocka_unit_test(test_damage),
	    cmocka_unit_test(test_wrong_mode),
	    cmocka_unit_test(test_fuzz),
	    cmocka_unit_test(test_init_errors),
	    cmocka_unit_test(test_output_failure),
	    cmocka_unit_test(test_fault_codes),
	    cmocka_unit_test(test_plain_body),
	};

	return cmocka_run_group_tests(tests, load_cases, free_cases);
}
