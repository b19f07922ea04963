/* aws-chunked bodies decoded as they stream in, and S3's checksums.
 * A small state machine: a chunk header line, its data, the CRLF after it,
 * and after the zero-size chunk the trailer lines up to an empty one. The
 * only thing buffered is the line being read. */
#include "api/chunked.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "api/sigv4.h"
#include "common/err.h"
#include "common/util.h"

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define CHUNK_ALGO "AWS4-HMAC-SHA256-PAYLOAD"
#define TRAILER_ALGO "AWS4-HMAC-SHA256-TRAILER"
#define SIG_EXT ";chunk-signature="
#define TRAILER_SIG "x-amz-trailer-signature"
#define MAX_HEX_DIGITS 16

enum {
	ST_HEADER = 0, /* reading a chunk header line */
	ST_DATA,       /* chunk_left payload bytes due */
	ST_DATA_CR,    /* the CR after a chunk's data */
	ST_DATA_LF,    /* the LF after it */
	ST_TRAILER,    /* after the zero-size chunk: trailer lines up to an empty one */
	ST_DONE,       /* complete and verified */
	ST_FAILED,
	ST_PASS, /* NB_CHUNKED_NONE: bytes pass through */
};

/* ---- CRC-32 and CRC-32C: reflected, slicing by 8 ---- */

#define POLY_CRC32 0xedb88320u
#define POLY_CRC32C 0x82f63b78u

static uint32_t crc32_tab[8][256];
static uint32_t crc32c_tab[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_table(uint32_t poly, uint32_t t[8][256])
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
		t[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int k = 1; k < 8; k++)
			t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
}

static void crc_tables(void)
{
	crc_table(POLY_CRC32, crc32_tab);
	crc_table(POLY_CRC32C, crc32c_tab);
}

static uint32_t crc_run(uint32_t t[8][256], uint32_t crc, const void *data, size_t len)
{
	const unsigned char *p = data;

	crc = ~crc;
	while (len >= 8) {
		uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
		                     (uint32_t)p[3] << 24);
		uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
		              (uint32_t)p[7] << 24;

		crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^
		      t[4][lo >> 24] ^ t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^
		      t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = t[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

uint32_t nb_crc32_update(uint32_t crc, const void *data, size_t len)
{
	pthread_once(&crc_once, crc_tables);
	return crc_run(crc32_tab, crc, data, len);
}

uint32_t nb_crc32c_update(uint32_t crc, const void *data, size_t len)
{
	pthread_once(&crc_once, crc_tables);
	return crc_run(crc32c_tab, crc, data, len);
}

/* ---- checksums ---- */

static const struct {
	const char *header;
	const char *label;
} algos[] = {
    [NB_CKSUM_CRC32] = {"x-amz-checksum-crc32", "CRC32"},
    [NB_CKSUM_CRC32C] = {"x-amz-checksum-crc32c", "CRC32C"},
    [NB_CKSUM_SHA1] = {"x-amz-checksum-sha1", "SHA1"},
    [NB_CKSUM_SHA256] = {"x-amz-checksum-sha256", "SHA256"},
};

enum nb_cksum_algo nb_cksum_algo_from_header(const char *name)
{
	for (size_t i = 1; name && i < NB_ARRAY_SIZE(algos); i++)
		if (!strcasecmp(name, algos[i].header))
			return (enum nb_cksum_algo)i;
	return NB_CKSUM_NONE;
}

enum nb_cksum_algo nb_cksum_algo_from_label(const char *label)
{
	for (size_t i = 1; label && i < NB_ARRAY_SIZE(algos); i++)
		if (!strcasecmp(label, algos[i].label))
			return (enum nb_cksum_algo)i;
	return NB_CKSUM_NONE;
}

const char *nb_cksum_header(enum nb_cksum_algo algo)
{
	return algo > NB_CKSUM_NONE && algo <= NB_CKSUM_SHA256 ? algos[algo].header : NULL;
}

const char *nb_cksum_label(enum nb_cksum_algo algo)
{
	return algo > NB_CKSUM_NONE && algo <= NB_CKSUM_SHA256 ? algos[algo].label : NULL;
}

int nb_cksum_init(struct nb_cksum *c, enum nb_cksum_algo algo)
{
	const EVP_MD *md = NULL;

	memset(c, 0, sizeof(*c));
	switch (algo) {
	case NB_CKSUM_CRC32:
	case NB_CKSUM_CRC32C:
		break;
	case NB_CKSUM_SHA1:
		md = EVP_sha1();
		break;
	case NB_CKSUM_SHA256:
		md = EVP_sha256();
		break;
	default:
		return -EINVAL;
	}
	if (md) {
		c->md = EVP_MD_CTX_new();
		if (!c->md)
			return -ENOMEM;
		if (!EVP_DigestInit_ex(c->md, md, NULL))
			return -ENOMEM;
	}
	c->algo = algo;
	return 0;
}

void nb_cksum_update(struct nb_cksum *c, const void *data, size_t len)
{
	switch (c->algo) {
	case NB_CKSUM_CRC32:
		c->crc = nb_crc32_update(c->crc, data, len);
		break;
	case NB_CKSUM_CRC32C:
		c->crc = nb_crc32c_update(c->crc, data, len);
		break;
	case NB_CKSUM_SHA1:
	case NB_CKSUM_SHA256:
		if (!EVP_DigestUpdate(c->md, data, len))
			c->failed = true;
		break;
	default:
		break;
	}
}

int nb_cksum_final(struct nb_cksum *c, char b64[NB_CKSUM_B64_MAX])
{
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	b64[0] = '\0';
	switch (c->algo) {
	case NB_CKSUM_CRC32:
	case NB_CKSUM_CRC32C:
		dig[0] = (unsigned char)(c->crc >> 24);
		dig[1] = (unsigned char)(c->crc >> 16);
		dig[2] = (unsigned char)(c->crc >> 8);
		dig[3] = (unsigned char)c->crc;
		n = 4;
		break;
	case NB_CKSUM_SHA1:
	case NB_CKSUM_SHA256:
		if (c->failed || !EVP_DigestFinal_ex(c->md, dig, &n) || n > 32)
			return -NB_E_INTERNAL;
		break;
	default:
		return -EINVAL;
	}
	/* 4 * ceil(32 / 3) = 44 characters at most, plus the NUL */
	EVP_EncodeBlock((unsigned char *)b64, dig, (int)n);
	c->algo = NB_CKSUM_NONE; /* once per init */
	return 0;
}

void nb_cksum_free(struct nb_cksum *c)
{
	if (!c)
		return;
	EVP_MD_CTX_free(c->md);
	c->md = NULL;
	c->algo = NB_CKSUM_NONE;
}

/* ---- the decoder ---- */

static const struct {
	const char *code;
	int status;
} faults[] = {
    [NB_CHUNKED_OK] = {NULL, 200},
    [NB_CHUNKED_SIGNATURE] = {"SignatureDoesNotMatch", 403},
    [NB_CHUNKED_BAD_DIGEST] = {"BadDigest", 400},
    [NB_CHUNKED_INCOMPLETE] = {"IncompleteBody", 400},
    [NB_CHUNKED_MALFORMED] = {"InvalidArgument", 400},
    [NB_CHUNKED_TRAILER] = {"MalformedTrailerError", 400},
    [NB_CHUNKED_REQUEST] = {"InvalidRequest", 400},
    [NB_CHUNKED_UNSUPPORTED] = {"NotImplemented", 501},
    [NB_CHUNKED_OUTPUT] = {"InternalError", 500},
    [NB_CHUNKED_INTERNAL] = {"InternalError", 500},
};

static int fail(struct nb_chunked *d, enum nb_chunked_fault f, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Records the first failure; every later call returns it. */
static int fail(struct nb_chunked *d, enum nb_chunked_fault f, int code, const char *fmt, ...)
{
	va_list ap;

	if (d->ret)
		return d->ret;
	va_start(ap, fmt);
	vsnprintf(d->msg, sizeof(d->msg), fmt, ap);
	va_end(ap);
	d->fault = f;
	d->ret = code;
	d->state = ST_FAILED;
	return code;
}

static int fault_code(enum nb_chunked_fault f)
{
	switch (f) {
	case NB_CHUNKED_SIGNATURE:
		return -NB_E_SIG_MISMATCH;
	case NB_CHUNKED_UNSUPPORTED:
		return -ENOTSUP;
	case NB_CHUNKED_INTERNAL:
		return -NB_E_INTERNAL;
	default:
		return -NB_E_INVALID;
	}
}

#define FAIL(d, f, ...) fail((d), (f), fault_code(f), __VA_ARGS__)

/* A short printable copy of untrusted text for messages. */
static const char *clean(const char *s, size_t n, char out[40])
{
	size_t i, o = 0;

	for (i = 0; i < n && o < 32; i++)
		out[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (i < n) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* 64 hex digits into a lowercase NUL-terminated copy; false otherwise. */
static bool sig_copy(const char *s, size_t n, char out[65])
{
	if (n != 64)
		return false;
	for (size_t i = 0; i < 64; i++) {
		int v = hexval(s[i]);

		if (v < 0)
			return false;
		out[i] = "0123456789abcdef"[v];
	}
	out[64] = '\0';
	return true;
}

static void to_hex(const unsigned char *in, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = "0123456789abcdef"[in[i] >> 4];
		out[2 * i + 1] = "0123456789abcdef"[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static bool blank(char c)
{
	return c == ' ' || c == '\t';
}

static void trim(const char **s, size_t *n)
{
	while (*n && blank(**s)) {
		(*s)++;
		(*n)--;
	}
	while (*n && blank((*s)[*n - 1]))
		(*n)--;
}

int nb_chunked_mode_parse(const char *v, enum nb_chunked_mode *mode)
{
	*mode = NB_CHUNKED_NONE;
	if (!v)
		return 0;
	if (!strcmp(v, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"))
		*mode = NB_CHUNKED_SIGNED;
	else if (!strcmp(v, "STREAMING-UNSIGNED-PAYLOAD-TRAILER"))
		*mode = NB_CHUNKED_UNSIGNED_TRAILER;
	else if (!strcmp(v, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"))
		*mode = NB_CHUNKED_SIGNED_TRAILER;
	else if (nb_str_has_prefix(v, "STREAMING-"))
		return -ENOTSUP;
	return 0;
}

static bool is_signed(enum nb_chunked_mode m)
{
	return m == NB_CHUNKED_SIGNED || m == NB_CHUNKED_SIGNED_TRAILER;
}

static bool has_trailer(enum nb_chunked_mode m)
{
	return m == NB_CHUNKED_UNSIGNED_TRAILER || m == NB_CHUNKED_SIGNED_TRAILER;
}

static int init_checks(struct nb_chunked *d, const struct nb_chunked_cfg *cfg)
{
	enum nb_cksum_algo algo = NB_CKSUM_NONE;
	char c[40];

	if (!cfg->out || cfg->mode < NB_CHUNKED_NONE || cfg->mode > NB_CHUNKED_SIGNED_TRAILER ||
	    cfg->decoded_length < -1)
		return fail(d, NB_CHUNKED_INTERNAL, -EINVAL, "bad decoder arguments");
	if (is_signed(cfg->mode)) {
		if (!cfg->signing_key || !cfg->seed_signature || !cfg->amz_date || !cfg->scope)
			return fail(d, NB_CHUNKED_INTERNAL, -EINVAL,
			            "signed chunks need the key, seed, date and scope");
		if (!sig_copy(cfg->seed_signature, strlen(cfg->seed_signature), d->prev_sig) ||
		    strlen(cfg->amz_date) != 16 || strlen(cfg->scope) >= sizeof(d->scope))
			return fail(d, NB_CHUNKED_INTERNAL, -EINVAL,
			            "malformed seed signature, date or scope");
		memcpy(d->key, cfg->signing_key, 32);
		nb_strlcpy(d->amz_date, cfg->amz_date, sizeof(d->amz_date));
		nb_strlcpy(d->scope, cfg->scope, sizeof(d->scope));
	}
	if (cfg->trailer) {
		const char *t = cfg->trailer;
		size_t n = strlen(t);

		trim(&t, &n);
		if (!has_trailer(cfg->mode))
			return FAIL(
			    d, NB_CHUNKED_REQUEST,
			    "x-amz-trailer sent but x-amz-content-sha256 announces no trailer");
		for (size_t i = 1; i < NB_ARRAY_SIZE(algos) && !algo; i++)
			if (n == strlen(algos[i].header) && !strncasecmp(t, algos[i].header, n))
				algo = (enum nb_cksum_algo)i;
		if (!algo)
			return FAIL(d, NB_CHUNKED_REQUEST,
			            "x-amz-trailer '%s' is not a supported checksum",
			            clean(t, n, c));
		nb_strlcpy(d->trailer_name, algos[algo].header, sizeof(d->trailer_name));
	} else if (has_trailer(cfg->mode)) {
		return FAIL(d, NB_CHUNKED_REQUEST,
		            "x-amz-content-sha256 announces a trailer "
		            "but x-amz-trailer is missing");
	}
	if (cfg->checksum_name) {
		size_t n;

		if (algo)
			return FAIL(d, NB_CHUNKED_REQUEST,
			            "a checksum both as a header and as a trailer");
		algo = nb_cksum_algo_from_header(cfg->checksum_name);
		if (!algo)
			return FAIL(d, NB_CHUNKED_REQUEST, "'%s' is not a supported checksum",
			            clean(cfg->checksum_name, strlen(cfg->checksum_name), c));
		n = cfg->checksum_value ? strlen(cfg->checksum_value) : 0;
		if (!n || n >= sizeof(d->expected))
			return FAIL(d, NB_CHUNKED_REQUEST, "malformed %s value",
			            algos[algo].header);
		memcpy(d->expected, cfg->checksum_value, n + 1);
		d->have_expected = true;
	}
	if (algo) {
		int r = nb_cksum_init(&d->cksum, algo);

		if (r < 0)
			return fail(d, NB_CHUNKED_INTERNAL, r, "out of memory");
		d->algo = algo;
	}
	return 0;
}

int nb_chunked_init(struct nb_chunked *d, const struct nb_chunked_cfg *cfg)
{
	int r;

	if (!d)
		return -EINVAL;
	memset(d, 0, sizeof(*d));
	d->state = ST_FAILED;
	if (!cfg)
		return fail(d, NB_CHUNKED_INTERNAL, -EINVAL, "no configuration");
	r = init_checks(d, cfg);
	if (r < 0)
		return r;
	if (is_signed(cfg->mode)) {
		d->chunk_md = EVP_MD_CTX_new();
		if (!d->chunk_md)
			return fail(d, NB_CHUNKED_INTERNAL, -ENOMEM, "out of memory");
	}
	if (cfg->mode == NB_CHUNKED_SIGNED_TRAILER) {
		d->trailer_md = EVP_MD_CTX_new();
		if (!d->trailer_md || !EVP_DigestInit_ex(d->trailer_md, EVP_sha256(), NULL))
			return fail(d, NB_CHUNKED_INTERNAL, -ENOMEM, "out of memory");
	}
	d->mode = cfg->mode;
	d->decoded_length = cfg->decoded_length;
	d->out = cfg->out;
	d->out_ctx = cfg->out_ctx;
	d->state = cfg->mode == NB_CHUNKED_NONE ? ST_PASS : ST_HEADER;
	return 0;
}

void nb_chunked_free(struct nb_chunked *d)
{
	if (!d)
		return;
	EVP_MD_CTX_free(d->chunk_md);
	EVP_MD_CTX_free(d->trailer_md);
	d->chunk_md = d->trailer_md = NULL;
	nb_cksum_free(&d->cksum);
	OPENSSL_cleanse(d->key, sizeof(d->key));
}

/* HMAC of a string to sign compared, in constant time, with want (lowercase
 * hex). A chunk's string to sign has the empty string's hash before the
 * data's; the trailer's has only its own. On success want becomes prev_sig. */
static int check_sig(struct nb_chunked *d, bool chunk, const char *hash, const char *want,
                     const char *what)
{
	char sts[512], got[65];
	int n;

	n = snprintf(sts, sizeof(sts), "%s\n%s\n%s\n%s\n%s%s", chunk ? CHUNK_ALGO : TRAILER_ALGO,
	             d->amz_date, d->scope, d->prev_sig, chunk ? EMPTY_SHA256 "\n" : "", hash);
	if (n < 0 || (size_t)n >= sizeof(sts))
		return FAIL(d, NB_CHUNKED_INTERNAL, "string to sign too long");
	nb_sigv4_hmac_hex(d->key, sts, (size_t)n, got);
	if (CRYPTO_memcmp(got, want, 64))
		return FAIL(d, NB_CHUNKED_SIGNATURE, "%s signature does not match", what);
	memcpy(d->prev_sig, want, 65);
	return 0;
}

/* The current chunk's signature; empty: the zero-size final chunk. */
static int check_chunk_sig(struct nb_chunked *d, bool empty)
{
	unsigned char h[32];
	unsigned int n = 0;
	char hex[65], what[48];

	if (empty) {
		memcpy(hex, EMPTY_SHA256, 65);
		nb_strlcpy(what, "final chunk", sizeof(what));
	} else {
		if (!EVP_DigestFinal_ex(d->chunk_md, h, &n) || n != 32)
			return FAIL(d, NB_CHUNKED_INTERNAL, "SHA-256 failed");
		to_hex(h, 32, hex);
		snprintf(what, sizeof(what), "chunk %llu", (unsigned long long)d->nchunks);
	}
	return check_sig(d, true, hex, d->chunk_sig, what);
}

/* The payload is complete: its length and checksum. */
static int complete(struct nb_chunked *d)
{
	char c[40];

	if (d->decoded_length >= 0 && d->total != (uint64_t)d->decoded_length)
		return FAIL(d, NB_CHUNKED_INCOMPLETE, "body decodes to %llu bytes, %s says %lld",
		            (unsigned long long)d->total,
		            d->mode == NB_CHUNKED_NONE ? "Content-Length"
		                                       : "x-amz-decoded-content-length",
		            (long long)d->decoded_length);
	if (d->algo) {
		int r = nb_cksum_final(&d->cksum, d->computed);

		if (r < 0)
			return fail(d, NB_CHUNKED_INTERNAL, r, "checksum failed");
		if (!d->have_expected)
			return FAIL(d, NB_CHUNKED_TRAILER, "trailer %s missing", d->trailer_name);
		if (strcmp(d->computed, d->expected))
			return FAIL(d, NB_CHUNKED_BAD_DIGEST,
			            "%s %s does not match the payload's %s", algos[d->algo].header,
			            clean(d->expected, strlen(d->expected), c), d->computed);
	}
	d->state = ST_DONE;
	return 0;
}

static int chunk_header(struct nb_chunked *d, const char *s, size_t n)
{
	uint64_t size = 0;
	size_t i = 0;
	char c[40];

	while (i < n && hexval(s[i]) >= 0) {
		if (i >= MAX_HEX_DIGITS)
			return FAIL(d, NB_CHUNKED_MALFORMED, "chunk size '%s' has too many digits",
			            clean(s, n, c));
		size = size << 4 | (uint64_t)hexval(s[i]);
		i++;
	}
	if (!i)
		return FAIL(d, NB_CHUNKED_MALFORMED, "chunk header '%s' has no hex size",
		            clean(s, n, c));
	if (is_signed(d->mode)) {
		size_t el = strlen(SIG_EXT);

		if (n - i < el || memcmp(s + i, SIG_EXT, el))
			return FAIL(d, NB_CHUNKED_MALFORMED,
			            "chunk header '%s' lacks ;chunk-signature=", clean(s, n, c));
		if (!sig_copy(s + i + el, n - i - el, d->chunk_sig))
			return FAIL(d, NB_CHUNKED_MALFORMED,
			            "chunk header '%s': the signature is not 64 hex digits",
			            clean(s, n, c));
	} else if (i != n) {
		return FAIL(d, NB_CHUNKED_MALFORMED, "chunk header '%s' is not a hex size",
		            clean(s, n, c));
	}
	if (size > NB_CHUNKED_MAX_CHUNK)
		return FAIL(d, NB_CHUNKED_MALFORMED,
		            "chunk of %llu bytes is above the %llu ceiling",
		            (unsigned long long)size, (unsigned long long)NB_CHUNKED_MAX_CHUNK);
	if (d->decoded_length >= 0 && size > (uint64_t)d->decoded_length - d->total)
		return FAIL(d, NB_CHUNKED_INCOMPLETE,
		            "chunk of %llu bytes goes past x-amz-decoded-content-length %lld",
		            (unsigned long long)size, (long long)d->decoded_length);
	if (!size) {
		if (is_signed(d->mode) && check_chunk_sig(d, true) < 0)
			return d->ret;
		d->state = ST_TRAILER;
		return 0;
	}
	if (is_signed(d->mode) && !EVP_DigestInit_ex(d->chunk_md, EVP_sha256(), NULL))
		return FAIL(d, NB_CHUNKED_INTERNAL, "SHA-256 failed");
	d->chunk_left = size;
	d->state = ST_DATA;
	return 0;
}

/* The empty line that ends the trailer section. */
static int trailer_end(struct nb_chunked *d)
{
	if (d->mode == NB_CHUNKED_SIGNED_TRAILER) {
		unsigned char h[32];
		unsigned int n = 0;
		char hex[65];

		if (!d->trailer_sig[0])
			return FAIL(d, NB_CHUNKED_TRAILER, TRAILER_SIG " missing");
		if (!EVP_DigestFinal_ex(d->trailer_md, h, &n) || n != 32)
			return FAIL(d, NB_CHUNKED_INTERNAL, "SHA-256 failed");
		to_hex(h, 32, hex);
		if (check_sig(d, false, hex, d->trailer_sig, "trailer") < 0)
			return d->ret;
	}
	return complete(d);
}

static int trailer_line(struct nb_chunked *d, const char *s, size_t n)
{
	const char *colon, *v;
	size_t nl, vn;
	char c[40];

	if (!n) {
		/* Blank lines while the trailer is still due: the zero-size
		 * chunk's own CRLF (some signers send it), and minio-go's CRLF
		 * before x-amz-trailer-signature. Two at most. */
		bool due = !d->have_expected ||
		           (d->mode == NB_CHUNKED_SIGNED_TRAILER && !d->trailer_sig[0]);

		if (has_trailer(d->mode) && due && d->blanks < 2) {
			d->blanks++;
			return 0;
		}
		return trailer_end(d);
	}
	if (!has_trailer(d->mode))
		return FAIL(d, NB_CHUNKED_MALFORMED, "trailer '%s' where none was announced",
		            clean(s, n, c));
	colon = memchr(s, ':', n);
	if (!colon || colon == s)
		return FAIL(d, NB_CHUNKED_TRAILER, "trailer line '%s' is not name:value",
		            clean(s, n, c));
	nl = (size_t)(colon - s);
	v = colon + 1;
	vn = n - nl - 1;
	trim(&v, &vn);
	if (d->trailer_sig[0])
		return FAIL(d, NB_CHUNKED_TRAILER, "trailer '%s' after " TRAILER_SIG,
		            clean(s, n, c));
	if (nl == strlen(TRAILER_SIG) && !strncasecmp(s, TRAILER_SIG, nl)) {
		if (d->mode != NB_CHUNKED_SIGNED_TRAILER)
			return FAIL(d, NB_CHUNKED_TRAILER, TRAILER_SIG " in an unsigned body");
		if (!sig_copy(v, vn, d->trailer_sig))
			return FAIL(d, NB_CHUNKED_TRAILER, TRAILER_SIG " is not 64 hex digits");
		return 0;
	}
	if (nl != strlen(d->trailer_name) || strncasecmp(s, d->trailer_name, nl))
		return FAIL(d, NB_CHUNKED_TRAILER, "unexpected trailer '%s'", clean(s, nl, c));
	if (d->have_expected)
		return FAIL(d, NB_CHUNKED_TRAILER, "trailer %s repeated", d->trailer_name);
	if (!vn || vn >= sizeof(d->expected))
		return FAIL(d, NB_CHUNKED_TRAILER, "trailer %s has a malformed value",
		            d->trailer_name);
	memcpy(d->expected, v, vn);
	d->expected[vn] = '\0';
	d->have_expected = true;
	/* canonical form, as signed: lowercase name, ':', trimmed value, LF */
	if (d->trailer_md &&
	    (!EVP_DigestUpdate(d->trailer_md, d->trailer_name, nl) ||
	     !EVP_DigestUpdate(d->trailer_md, ":", 1) || !EVP_DigestUpdate(d->trailer_md, v, vn) ||
	     !EVP_DigestUpdate(d->trailer_md, "\n", 1)))
		return FAIL(d, NB_CHUNKED_INTERNAL, "SHA-256 failed");
	return 0;
}

/* Reads up to a CRLF into d->line; *used is what was consumed. Returns 1
 * when a whole line (without its CRLF) is in d->line, 0 when more is needed. */
static int read_line(struct nb_chunked *d, const char *p, size_t len, size_t *used)
{
	size_t room = sizeof(d->line) - 1 - d->line_len;
	const char *lf = memchr(p, '\n', len < room + 1 ? len : room + 1);
	size_t n = lf ? (size_t)(lf - p) : len;

	if (n > room)
		return FAIL(d, NB_CHUNKED_MALFORMED, "%s line longer than %d bytes",
		            d->state == ST_TRAILER ? "trailer" : "chunk header",
		            NB_CHUNKED_MAX_LINE - 1);
	*used = lf ? n + 1 : n;
	memcpy(d->line + d->line_len, p, n);
	d->line_len += n;
	if (!lf)
		return 0;
	if (d->line_len && d->line[d->line_len - 1] == '\r')
		d->line_len--;
	else if (d->state != ST_TRAILER) /* minio-go ends trailer lines with a bare LF */
		return FAIL(d, NB_CHUNKED_MALFORMED, "chunk header line not ended by CRLF");
	return 1;
}

static int emit(struct nb_chunked *d, const char *p, size_t n)
{
	int r;

	if (d->chunk_md && !EVP_DigestUpdate(d->chunk_md, p, n))
		return FAIL(d, NB_CHUNKED_INTERNAL, "SHA-256 failed");
	if (d->algo)
		nb_cksum_update(&d->cksum, p, n);
	d->total += n;
	r = d->out(d->out_ctx, p, n);
	if (r)
		return fail(d, NB_CHUNKED_OUTPUT, r < 0 ? r : -EIO, "writing the payload failed");
	return 0;
}

int nb_chunked_feed(struct nb_chunked *d, const void *data, size_t len)
{
	const char *p = data;
	size_t used = 0;
	int r;

	if (!d)
		return -EINVAL;
	if (d->ret)
		return d->ret;
	if (!p && len)
		return fail(d, NB_CHUNKED_INTERNAL, -EINVAL, "no data");
	while (len) {
		switch (d->state) {
		case ST_PASS:
			if (d->decoded_length >= 0 && len > (uint64_t)d->decoded_length - d->total)
				return FAIL(d, NB_CHUNKED_INCOMPLETE,
				            "body longer than Content-Length %lld",
				            (long long)d->decoded_length);
			return emit(d, p, len);
		case ST_HEADER:
		case ST_TRAILER:
			r = read_line(d, p, len, &used);
			if (r < 0)
				return r;
			p += used;
			len -= used;
			if (!r)
				break;
			used = d->line_len; /* the line may hold a NUL: never strlen it */
			d->line_len = 0;
			r = d->state == ST_HEADER ? chunk_header(d, d->line, used)
			                          : trailer_line(d, d->line, used);
			if (r < 0)
				return r;
			break;
		case ST_DATA:
			used = len < d->chunk_left ? len : (size_t)d->chunk_left;
			if (emit(d, p, used) < 0)
				return d->ret;
			p += used;
			len -= used;
			d->chunk_left -= used;
			if (!d->chunk_left) {
				d->nchunks++;
				d->state = ST_DATA_CR;
				if (is_signed(d->mode) && check_chunk_sig(d, false) < 0)
					return d->ret;
			}
			break;
		case ST_DATA_CR:
		case ST_DATA_LF:
			if (*p != (d->state == ST_DATA_CR ? '\r' : '\n'))
				return FAIL(d, NB_CHUNKED_MALFORMED,
				            "chunk %llu's data not followed by CRLF",
				            (unsigned long long)d->nchunks);
			p++;
			len--;
			d->state = d->state == ST_DATA_CR ? ST_DATA_LF : ST_HEADER;
			break;
		case ST_DONE:
			return FAIL(d, NB_CHUNKED_MALFORMED, "data after the end of the body");
		default:
			return FAIL(d, NB_CHUNKED_INTERNAL, "decoder not ready");
		}
	}
	return 0;
}

int nb_chunked_finish(struct nb_chunked *d)
{
	if (!d)
		return -EINVAL;
	if (d->ret)
		return d->ret;
	switch (d->state) {
	case ST_PASS:
		return complete(d);
	case ST_DONE:
		return 0;
	case ST_TRAILER:
		if (!d->have_expected && d->trailer_name[0])
			return FAIL(d, NB_CHUNKED_INCOMPLETE, "body ended without its %s trailer",
			            d->trailer_name);
		if (d->mode == NB_CHUNKED_SIGNED_TRAILER && !d->trailer_sig[0])
			return FAIL(d, NB_CHUNKED_INCOMPLETE, "body ended without " TRAILER_SIG);
		return FAIL(d, NB_CHUNKED_INCOMPLETE, "body ended in its trailer section");
	default:
		return FAIL(d, NB_CHUNKED_INCOMPLETE,
		            "body ended after %llu payload bytes, before its final chunk",
		            (unsigned long long)d->total);
	}
}

const char *nb_chunked_message(const struct nb_chunked *d)
{
	return d->msg;
}

const char *nb_chunked_s3_code(const struct nb_chunked *d)
{
	return faults[d->fault].code;
}

int nb_chunked_http_status(const struct nb_chunked *d)
{
	return faults[d->fault].status;
}

uint64_t nb_chunked_decoded(const struct nb_chunked *d)
{
	return d->total;
}

const char *nb_chunked_checksum(const struct nb_chunked *d, enum nb_cksum_algo *algo)
{
	if (d->state != ST_DONE || !d->algo)
		return NULL;
	if (algo)
		*algo = d->algo;
	return d->computed;
}
