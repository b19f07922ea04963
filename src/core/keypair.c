/* EC2 key pairs with OpenSSL 3 (EVP_PKEY APIs only): generation, the
 * OpenSSH wire format (RFC 4253 section 6.6, PROTOCOL.key for private keys)
 * read and written by hand, and the fingerprints EC2 shows:
 *   created RSA:  SHA-1 of the PKCS#8 DER private key, colon hex
 *   imported RSA: MD5 of the DER SubjectPublicKeyInfo, colon hex
 *   ed25519:      SHA-256 of the OpenSSH key blob, base64 without '='
 * Every buffer here has a fixed size, so secrets are never copied by a
 * realloc and are wiped before they are released. */
#include "core/keypair.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "common/util.h"

#define RSA_MIN_BITS 1024
#define RSA_MAX_BITS 16384
#define RSA_CREATE_BITS 2048
#define MAX_MPINT (RSA_MAX_BITS / 8 + 1) /* with the sign byte */
#define MAX_BLOB 4096                    /* a 16384-bit RSA blob is ~2.1 KiB */
#define MAX_DECODED (NB_KEYPAIR_MAX_MATERIAL / 4 * 3)
#define ED25519_LEN 32
#define OPENSSH_WRAP 70 /* ssh-keygen's line length for private keys */
#define OPENSSH_MAGIC "openssh-key-v1"
#define BAD_FORMAT "Key is not in valid OpenSSH public key format"

static const char ssh_rsa[] = "ssh-rsa";
static const char ssh_ed25519[] = "ssh-ed25519";

/* ---- errors ---- */

static int fail(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errsz, const char *fmt, ...)
{
	va_list ap;

	if (err && errsz > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errsz, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* A key type name from the input, safe to put in a message. */
static void type_name(const unsigned char *s, size_t n, char *out, size_t outsz)
{
	size_t i;

	if (n == 0 || n > 64)
		goto unknown;
	for (i = 0; i < n; i++)
		if (s[i] <= 0x20 || s[i] >= 0x7f || s[i] == '"' || s[i] == '\\')
			goto unknown;
	snprintf(out, outsz, "%.*s", (int)n, (const char *)s);
	return;
unknown:
	nb_strlcpy(out, "(unreadable)", outsz);
}

static bool token_is(const unsigned char *s, size_t n, const char *name)
{
	return n == strlen(name) && memcmp(s, name, n) == 0;
}

/* ---- SSH wire format: a bounded writer and reader ---- */

struct wr {
	unsigned char *p;
	size_t cap, len;
	bool overflow;
};

static void wr_bytes(struct wr *w, const void *data, size_t n)
{
	if (w->overflow || n > w->cap - w->len) {
		w->overflow = true;
		return;
	}
	if (n > 0)
		memcpy(w->p + w->len, data, n);
	w->len += n;
}

static void wr_u32(struct wr *w, uint32_t v)
{
	unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
	                      (unsigned char)(v >> 8), (unsigned char)v};

	wr_bytes(w, b, sizeof(b));
}

static void wr_string(struct wr *w, const void *data, size_t n)
{
	wr_u32(w, (uint32_t)n);
	wr_bytes(w, data, n);
}

static void wr_cstring(struct wr *w, const char *s)
{
	wr_string(w, s, strlen(s));
}

/* mpint from a big-endian magnitude: minimal, with a zero byte in front
 * when the top bit is set (the number is positive). */
static void wr_mpint(struct wr *w, const unsigned char *mag, size_t n)
{
	bool pad;

	while (n > 0 && mag[0] == 0) {
		mag++;
		n--;
	}
	pad = n > 0 && (mag[0] & 0x80);
	wr_u32(w, (uint32_t)(n + pad));
	if (pad)
		wr_bytes(w, "", 1);
	wr_bytes(w, mag, n);
}

struct rd {
	const unsigned char *p;
	size_t left;
};

static int rd_u32(struct rd *r, uint32_t *v)
{
	if (r->left < 4)
		return -EINVAL;
	*v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
	r->p += 4;
	r->left -= 4;
	return 0;
}

static int rd_string(struct rd *r, const unsigned char **s, size_t *n)
{
	uint32_t len;

	if (rd_u32(r, &len) < 0 || len > r->left)
		return -EINVAL;
	*s = r->p;
	*n = len;
	r->p += len;
	r->left -= len;
	return 0;
}

/* ---- base64 ---- */

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

static bool is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Strict base64 (padding required, nothing after it); whitespace is skipped
 * only when skip_ws. */
static int b64_decode(const char *s, size_t n, bool skip_ws, unsigned char *out, size_t cap,
                      size_t *outlen)
{
	unsigned v[4];
	size_t i, o = 0, q = 0, pad = 0;
	bool done = false;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		int x;

		if (skip_ws && is_space(c))
			continue;
		if (done)
			return -EINVAL;
		if (c == '=') {
			if (q < 2)
				return -EINVAL;
			pad++;
			v[q++] = 0;
		} else {
			x = b64_value(c);
			if (x < 0 || pad > 0)
				return -EINVAL;
			v[q++] = (unsigned)x;
		}
		if (q < 4)
			continue;
		if (3 - pad > cap - o)
			return -E2BIG;
		out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		if (pad < 2)
			out[o++] = (unsigned char)(v[1] << 4 | v[2] >> 2);
		if (pad < 1)
			out[o++] = (unsigned char)(v[2] << 6 | v[3]);
		q = 0;
		done = pad > 0;
	}
	if (q != 0 || o == 0)
		return -EINVAL;
	*outlen = o;
	return 0;
}

static size_t b64_len(size_t n)
{
	return (n + 2) / 3 * 4;
}

/* ---- fingerprints and the public line ---- */

static void colon_hex(const unsigned char *d, size_t n, char *out, size_t outsz)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, o = 0;

	for (i = 0; i < n && o + 4 <= outsz; i++) {
		if (i > 0)
			out[o++] = ':';
		out[o++] = hex[d[i] >> 4];
		out[o++] = hex[d[i] & 15];
	}
	out[o] = '\0';
}

static int digest_colon_hex(const EVP_MD *md, const unsigned char *data, size_t n, char *out,
                            size_t outsz)
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;

	if (!md || !EVP_Digest(data, n, d, &dlen, md, NULL))
		return -EIO;
	colon_hex(d, dlen, out, outsz);
	return 0;
}

/* OpenSSH's SHA256 fingerprint without its "SHA256:" prefix and, as
 * ssh-keygen prints it, without the '=' padding. */
static int blob_sha256_b64(const unsigned char *blob, size_t n, char *out, size_t outsz)
{
	unsigned char d[32];
	char b64[48];
	unsigned int dlen = 0;
	size_t len;

	if (!EVP_Digest(blob, n, d, &dlen, EVP_sha256(), NULL) || dlen != sizeof(d))
		return -EIO;
	EVP_EncodeBlock((unsigned char *)b64, d, (int)dlen);
	len = strlen(b64);
	while (len > 0 && b64[len - 1] == '=')
		b64[--len] = '\0';
	if (len + 1 > outsz)
		return -E2BIG;
	memcpy(out, b64, len + 1);
	return 0;
}

static int set_public(struct nb_keypair *out, const char *type, const unsigned char *blob, size_t n)
{
	size_t tl = strlen(type);

	if (n > INT32_MAX || tl + 1 + b64_len(n) + 1 > sizeof(out->public_openssh))
		return -E2BIG;
	memcpy(out->public_openssh, type, tl);
	out->public_openssh[tl] = ' ';
	EVP_EncodeBlock((unsigned char *)out->public_openssh + tl + 1, blob, (int)n);
	return 0;
}

/* ---- RSA ---- */

/* Big-endian magnitude of bn into buf (MAX_MPINT bytes). */
static int bn_bytes(const BIGNUM *bn, unsigned char *buf, size_t *n)
{
	int len = BN_num_bytes(bn);

	if (len < 0 || (size_t)len > MAX_MPINT)
		return -E2BIG;
	*n = (size_t)BN_bn2bin(bn, buf);
	return 0;
}

/* "ssh-rsa" blob: string type, mpint e, mpint n. */
static int rsa_blob(const BIGNUM *e, const BIGNUM *n, unsigned char *blob, size_t cap, size_t *len)
{
	unsigned char tmp[MAX_MPINT];
	struct wr w = {blob, cap, 0, false};
	size_t tl;
	int r;

	wr_cstring(&w, ssh_rsa);
	if ((r = bn_bytes(e, tmp, &tl)) < 0)
		return r;
	wr_mpint(&w, tmp, tl);
	if ((r = bn_bytes(n, tmp, &tl)) < 0)
		return r;
	wr_mpint(&w, tmp, tl);
	if (w.overflow)
		return -E2BIG;
	*len = w.len;
	return 0;
}

static EVP_PKEY *rsa_public_pkey(const BIGNUM *n, const BIGNUM *e)
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;

	if (!bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
		goto out;
	params = OSSL_PARAM_BLD_to_param(bld);
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		pkey = NULL;
out:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	return pkey;
}

/* Imported RSA: checks e and n, then MD5 of the DER SubjectPublicKeyInfo. */
static int rsa_import(const unsigned char *e, size_t elen, const unsigned char *n, size_t nlen,
                      struct nb_keypair *out, char *err, size_t errsz)
{
	BIGNUM *bn_e = BN_bin2bn(e, (int)elen, NULL), *bn_n = BN_bin2bn(n, (int)nlen, NULL);
	unsigned char blob[MAX_BLOB], *der = NULL;
	EVP_PKEY *pkey = NULL;
	size_t blen = 0;
	int bits, dlen, r;

	if (!bn_e || !bn_n) {
		r = -ENOMEM;
		goto out;
	}
	bits = BN_num_bits(bn_n);
	if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS) {
		r = fail(err, errsz, "RSA key is %d bits: the supported sizes are %d to %d bits",
		         bits, RSA_MIN_BITS, RSA_MAX_BITS);
		goto out;
	}
	if (!BN_is_odd(bn_n)) {
		r = fail(err, errsz, "RSA key is invalid: the modulus is even");
		goto out;
	}
	if (!BN_is_odd(bn_e) || BN_is_one(bn_e) || BN_cmp(bn_e, bn_n) >= 0) {
		r = fail(err, errsz,
		         "RSA key is invalid: the public exponent must be odd, above 1 and below "
		         "the modulus");
		goto out;
	}
	pkey = rsa_public_pkey(bn_n, bn_e);
	if (!pkey) {
		r = fail(err, errsz, "RSA key is invalid: OpenSSL does not accept it");
		goto out;
	}
	dlen = i2d_PUBKEY(pkey, &der);
	if (dlen <= 0) {
		r = -EIO;
		goto out;
	}
	if ((r = digest_colon_hex(EVP_md5(), der, (size_t)dlen, out->fingerprint,
	                          sizeof(out->fingerprint))) < 0)
		goto out;
	if ((r = rsa_blob(bn_e, bn_n, blob, sizeof(blob), &blen)) < 0)
		goto out;
	r = set_public(out, ssh_rsa, blob, blen);
	out->type = NB_KEY_RSA;
out:
	OPENSSL_free(der);
	EVP_PKEY_free(pkey);
	BN_free(bn_e);
	BN_free(bn_n);
	return r;
}

/* ---- key blobs ---- */

/* An mpint that must be positive; the magnitude comes back without its
 * leading zero bytes. */
static int rd_mpint(struct rd *r, const unsigned char **mag, size_t *n)
{
	if (rd_string(r, mag, n) < 0)
		return -EINVAL;
	if (*n > 0 && ((*mag)[0] & 0x80))
		return -EDOM;
	if (*n > MAX_MPINT)
		return -E2BIG;
	while (*n > 0 && (*mag)[0] == 0) {
		(*mag)++;
		(*n)--;
	}
	return 0;
}

static int unsupported(const unsigned char *type, size_t n, char *err, size_t errsz)
{
	char name[72];

	type_name(type, n, name, sizeof(name));
	return fail(
	    err, errsz,
	    "Key type %s is not supported: only ssh-rsa and ssh-ed25519 keys can be imported",
	    name);
}

/* A public key blob; want (may be NULL) is the type named outside it. */
static int import_blob(const unsigned char *blob, size_t len, const char *want,
                       struct nb_keypair *out, char *err, size_t errsz)
{
	struct rd r = {blob, len};
	const unsigned char *type, *e, *n, *pk;
	size_t tlen, elen, nlen, pklen;
	int x;

	if (rd_string(&r, &type, &tlen) < 0)
		return fail(err, errsz, BAD_FORMAT ": the key data is truncated");
	if (want && !token_is(type, tlen, want)) {
		char name[72];

		type_name(type, tlen, name, sizeof(name));
		return fail(err, errsz, BAD_FORMAT ": the line says %s but the key data holds %s",
		            want, name);
	}
	if (token_is(type, tlen, ssh_rsa)) {
		if ((x = rd_mpint(&r, &e, &elen)) < 0 || (x = rd_mpint(&r, &n, &nlen)) < 0) {
			if (x == -EDOM)
				return fail(err, errsz, "RSA key is invalid: a negative number");
			if (x == -E2BIG)
				return fail(
				    err, errsz,
				    "RSA key is too large: the supported sizes are %d to %d bits",
				    RSA_MIN_BITS, RSA_MAX_BITS);
			return fail(err, errsz, BAD_FORMAT ": the RSA key data is truncated");
		}
		if (r.left != 0)
			return fail(err, errsz, BAD_FORMAT ": unexpected data after the RSA key");
		return rsa_import(e, elen, n, nlen, out, err, errsz);
	}
	if (token_is(type, tlen, ssh_ed25519)) {
		if (rd_string(&r, &pk, &pklen) < 0)
			return fail(err, errsz, BAD_FORMAT ": the ed25519 key data is truncated");
		if (pklen != ED25519_LEN)
			return fail(err, errsz,
			            "ED25519 key is invalid: the key is %zu bytes, not %d", pklen,
			            ED25519_LEN);
		if (r.left != 0)
			return fail(err, errsz,
			            BAD_FORMAT ": unexpected data after the ed25519 key");
		x = blob_sha256_b64(blob, len, out->fingerprint, sizeof(out->fingerprint));
		if (x == 0)
			x = set_public(out, ssh_ed25519, blob, len);
		out->type = NB_KEY_ED25519;
		return x;
	}
	return unsupported(type, tlen, err, errsz);
}

/* Base64 DER SubjectPublicKeyInfo, as EC2 also takes. */
static int import_der(const unsigned char *der, size_t len, struct nb_keypair *out, char *err,
                      size_t errsz)
{
	const unsigned char *p = der;
	unsigned char blob[MAX_BLOB], pk[ED25519_LEN];
	BIGNUM *n = NULL, *e = NULL;
	EVP_PKEY *pkey;
	size_t blen = 0, pklen = sizeof(pk);
	struct wr w = {blob, sizeof(blob), 0, false};
	int r;

	if (len > INT32_MAX)
		return fail(err, errsz, BAD_FORMAT);
	pkey = d2i_PUBKEY(NULL, &p, (long)len);
	if (!pkey || p != der + len) {
		r = fail(err, errsz, "Key is not a valid DER SubjectPublicKeyInfo");
		goto out;
	}
	switch (EVP_PKEY_get_base_id(pkey)) {
	case EVP_PKEY_RSA:
		if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) ||
		    !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e)) {
			r = fail(err, errsz, "RSA key is invalid");
			goto out;
		}
		if (BN_num_bits(n) > RSA_MAX_BITS) {
			r = fail(err, errsz,
			         "RSA key is %d bits: the supported sizes are %d to %d bits",
			         BN_num_bits(n), RSA_MIN_BITS, RSA_MAX_BITS);
			goto out;
		}
		if ((r = rsa_blob(e, n, blob, sizeof(blob), &blen)) < 0)
			goto out;
		break;
	case EVP_PKEY_ED25519:
		if (!EVP_PKEY_get_raw_public_key(pkey, pk, &pklen) || pklen != sizeof(pk)) {
			r = fail(err, errsz, "ED25519 key is invalid");
			goto out;
		}
		wr_cstring(&w, ssh_ed25519);
		wr_string(&w, pk, pklen);
		blen = w.len;
		break;
	default: {
		const char *sn = OBJ_nid2sn(EVP_PKEY_get_base_id(pkey));

		r = fail(err, errsz,
		         "Key type %s is not supported: only RSA and ED25519 keys can be imported",
		         sn ? sn : "(unknown)");
		goto out;
	}
	}
	r = import_blob(blob, blen, NULL, out, err, errsz);
out:
	BN_free(n);
	BN_free(e);
	EVP_PKEY_free(pkey);
	return r;
}

/* ---- text formats ---- */

static void trim(const char **s, size_t *n)
{
	while (*n > 0 && is_space((unsigned char)**s)) {
		(*s)++;
		(*n)--;
	}
	while (*n > 0 && is_space((unsigned char)(*s)[*n - 1]))
		(*n)--;
}

/* "type base64 [comment]", one line, already trimmed. */
static int import_line(const char *s, size_t n, struct nb_keypair *out, char *err, size_t errsz)
{
	unsigned char blob[MAX_BLOB];
	const char *type, *b64, *want;
	size_t i = 0, tlen, blen, dlen;

	if (memchr(s, '\n', n) || memchr(s, '\r', n))
		return fail(err, errsz, BAD_FORMAT ": expected one key on one line");
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 && s[i] != '\t')
			return fail(err, errsz, BAD_FORMAT ": control characters in the line");
	type = s;
	for (i = 0; i < n && !is_space((unsigned char)s[i]); i++)
		;
	tlen = i;
	if (token_is((const unsigned char *)type, tlen, ssh_rsa))
		want = ssh_rsa;
	else if (token_is((const unsigned char *)type, tlen, ssh_ed25519))
		want = ssh_ed25519;
	else
		return unsupported((const unsigned char *)type, tlen, err, errsz);
	while (i < n && is_space((unsigned char)s[i]))
		i++;
	b64 = s + i;
	for (blen = 0; i < n && !is_space((unsigned char)s[i]); i++)
		blen++;
	if (blen == 0)
		return fail(err, errsz, BAD_FORMAT ": the key data is missing after %s", want);
	switch (b64_decode(b64, blen, false, blob, sizeof(blob), &dlen)) {
	case 0:
		break;
	case -E2BIG:
		return fail(err, errsz, BAD_FORMAT ": the key data is too long");
	default:
		return fail(err, errsz, BAD_FORMAT ": the key data is not valid base64");
	}
	/* The rest of the line is a comment, not kept: public_openssh is the key alone. */
	return import_blob(blob, dlen, want, out, err, errsz);
}

static bool line_is(const char *s, size_t n, const char *marker)
{
	while (n > 0 && is_space((unsigned char)s[n - 1]))
		n--;
	return n == strlen(marker) && memcmp(s, marker, n) == 0;
}

#define SSH2_BEGIN "---- BEGIN SSH2 PUBLIC KEY ----"
#define SSH2_END "---- END SSH2 PUBLIC KEY ----"

/* RFC 4716 section 3: begin line, headers ("Tag: value", a trailing '\'
 * continues onto the next line), base64 body, end line. Already trimmed. */
static int import_rfc4716(const char *s, size_t n, struct nb_keypair *out, char *err, size_t errsz)
{
	unsigned char blob[MAX_BLOB];
	const char *end = s + n, *line = s, *body = NULL, *nl;
	bool header = true, cont = false;
	size_t len, dlen;

	for (;;) {
		if (line >= end)
			return fail(err, errsz,
			            "Key is not in valid RFC 4716 format: the end line is missing");
		nl = memchr(line, '\n', (size_t)(end - line));
		len = nl ? (size_t)(nl - line) : (size_t)(end - line);
		if (line == s) {
			if (!line_is(line, len, SSH2_BEGIN))
				return fail(err, errsz,
				            "Key is not in valid RFC 4716 format: bad begin line");
		} else if (line_is(line, len, SSH2_END)) {
			break;
		} else if (cont || (header && memchr(line, ':', len))) {
			size_t l = len;

			while (l > 0 && is_space((unsigned char)line[l - 1]))
				l--;
			cont = l > 0 && line[l - 1] == '\\';
		} else {
			header = false;
			if (!body)
				body = line;
		}
		line = nl ? nl + 1 : end;
	}
	if (line + len != end)
		return fail(err, errsz,
		            "Key is not in valid RFC 4716 format: text after the end line");
	if (!body)
		return fail(err, errsz,
		            "Key is not in valid RFC 4716 format: the key data is missing");
	switch (b64_decode(body, (size_t)(line - body), true, blob, sizeof(blob), &dlen)) {
	case 0:
		break;
	case -E2BIG:
		return fail(err, errsz,
		            "Key is not in valid RFC 4716 format: the key data is too long");
	default:
		return fail(
		    err, errsz,
		    "Key is not in valid RFC 4716 format: the key data is not valid base64");
	}
	return import_blob(blob, dlen, NULL, out, err, errsz);
}

static int import_text(const char *s, size_t n, bool decoded, struct nb_keypair *out, char *err,
                       size_t errsz)
{
	unsigned char *raw = NULL;
	size_t i, rlen = 0;
	int r;

	trim(&s, &n);
	if (n == 0)
		return fail(err, errsz, BAD_FORMAT ": the key is empty");
	if (memchr(s, '\0', n))
		return fail(err, errsz, BAD_FORMAT ": a NUL byte in the key");
	if (n >= strlen(SSH2_BEGIN) && memcmp(s, SSH2_BEGIN, strlen(SSH2_BEGIN)) == 0)
		return import_rfc4716(s, n, out, err, errsz);
	for (i = 0; i < n; i++)
		if (!is_space((unsigned char)s[i]) && b64_value((unsigned char)s[i]) < 0 &&
		    s[i] != '=')
			break;
	if (i < n)
		return import_line(s, n, out, err, errsz);
	if (decoded)
		return fail(err, errsz, BAD_FORMAT ": base64-encoded more than once");
	/* Only base64: the material was encoded once more (a whole key line or
	 * file, or DER). One level only. */
	raw = malloc(MAX_DECODED);
	if (!raw)
		return -ENOMEM;
	if (b64_decode(s, n, true, raw, MAX_DECODED, &rlen) < 0) {
		r = fail(err, errsz, BAD_FORMAT);
		goto out;
	}
	if (raw[0] == 0x30)
		r = import_der(raw, rlen, out, err, errsz);
	else
		r = import_text((const char *)raw, rlen, true, out, err, errsz);
out:
	free(raw);
	return r;
}

int nb_keypair_import(const char *material, size_t len, struct nb_keypair *out, char *err,
                      size_t errsz)
{
	int r;

	memset(out, 0, sizeof(*out));
	if (err && errsz > 0)
		err[0] = '\0';
	if (!material || len == 0)
		return fail(err, errsz, BAD_FORMAT ": the key is empty");
	if (len > NB_KEYPAIR_MAX_MATERIAL)
		return fail(err, errsz, "Key material is longer than %d bytes",
		            NB_KEYPAIR_MAX_MATERIAL);
	r = import_text(material, len, false, out, err, errsz);
	if (r < 0) {
		memset(out, 0, sizeof(*out));
		if (r != -EINVAL && err && errsz > 0 && !err[0])
			snprintf(err, errsz, "Key could not be read: %s", strerror(-r));
	}
	return r;
}

/* ---- creation ---- */

/* PEM text of kind ("-----BEGIN <kind>-----") around base64 of data, lines
 * of OPENSSH_WRAP; malloc'd, NUL-terminated. */
static char *pem_wrap(const char *kind, const unsigned char *data, size_t n)
{
	size_t b = b64_len(n), cap = b + b / OPENSSH_WRAP + 2 * strlen(kind) + 64, i, o;
	char *b64 = malloc(b + 1), *pem = malloc(cap);

	if (!b64 || !pem || n > INT32_MAX)
		goto fail;
	EVP_EncodeBlock((unsigned char *)b64, data, (int)n);
	o = (size_t)snprintf(pem, cap, "-----BEGIN %s-----\n", kind);
	for (i = 0; i < b; i += OPENSSH_WRAP) {
		size_t l = b - i < OPENSSH_WRAP ? b - i : OPENSSH_WRAP;

		memcpy(pem + o, b64 + i, l);
		o += l;
		pem[o++] = '\n';
	}
	snprintf(pem + o, cap - o, "-----END %s-----\n", kind);
	OPENSSL_clear_free(b64, b + 1);
	return pem;
fail:
	if (b64)
		OPENSSL_clear_free(b64, b + 1);
	free(pem);
	return NULL;
}

static int create_ed25519(struct nb_keypair *out)
{
	unsigned char pub[ED25519_LEN], priv[2 * ED25519_LEN], blob[64], sec[256], file[512];
	struct wr wb = {blob, sizeof(blob), 0, false}, ws = {sec, sizeof(sec), 0, false},
	          wf = {file, sizeof(file), 0, false};
	size_t plen = ED25519_LEN, slen = ED25519_LEN;
	EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	uint32_t check;
	unsigned char i;
	int r = -EIO;

	if (!pkey || !EVP_PKEY_get_raw_public_key(pkey, pub, &plen) || plen != ED25519_LEN ||
	    !EVP_PKEY_get_raw_private_key(pkey, priv, &slen) || slen != ED25519_LEN)
		goto out;
	/* OpenSSH keeps the private key as seed || public key. */
	memcpy(priv + ED25519_LEN, pub, ED25519_LEN);
	wr_cstring(&wb, ssh_ed25519);
	wr_string(&wb, pub, sizeof(pub));
	if ((r = nb_random_bytes(&check, sizeof(check))) < 0)
		goto out;
	/* PROTOCOL.key: the unencrypted private section, padded to 8 bytes. */
	wr_u32(&ws, check);
	wr_u32(&ws, check);
	wr_cstring(&ws, ssh_ed25519);
	wr_string(&ws, pub, sizeof(pub));
	wr_string(&ws, priv, sizeof(priv));
	wr_cstring(&ws, "");
	for (i = 1; ws.len % 8 != 0; i++)
		wr_bytes(&ws, &i, 1);
	wr_bytes(&wf, OPENSSH_MAGIC, sizeof(OPENSSH_MAGIC)); /* with its NUL */
	wr_cstring(&wf, "none");                             /* cipher */
	wr_cstring(&wf, "none");                             /* kdf */
	wr_cstring(&wf, "");                                 /* kdf options */
	wr_u32(&wf, 1);                                      /* one key */
	wr_string(&wf, blob, wb.len);
	wr_string(&wf, sec, ws.len);
	if (wb.overflow || ws.overflow || wf.overflow) {
		r = -E2BIG;
		goto out;
	}
	if ((r = blob_sha256_b64(blob, wb.len, out->fingerprint, sizeof(out->fingerprint))) < 0 ||
	    (r = set_public(out, ssh_ed25519, blob, wb.len)) < 0)
		goto out;
	out->private_pem = pem_wrap("OPENSSH PRIVATE KEY", file, wf.len);
	r = out->private_pem ? 0 : -ENOMEM;
	out->type = NB_KEY_ED25519;
out:
	OPENSSL_cleanse(priv, sizeof(priv));
	OPENSSL_cleanse(sec, sizeof(sec));
	OPENSSL_cleanse(file, sizeof(file));
	EVP_PKEY_free(pkey);
	return r;
}

/* The whole key through an OpenSSL encoder; *data is OpenSSL's (clear_free). */
static int encode_private(EVP_PKEY *pkey, const char *type, const char *structure,
                          unsigned char **data, size_t *len)
{
	OSSL_ENCODER_CTX *ec =
	    OSSL_ENCODER_CTX_new_for_pkey(pkey, EVP_PKEY_KEYPAIR, type, structure, NULL);
	int r = -EIO;

	*data = NULL;
	*len = 0;
	if (ec && OSSL_ENCODER_CTX_get_num_encoders(ec) > 0 &&
	    OSSL_ENCODER_to_data(ec, data, len) && *data && *len > 0)
		r = 0;
	OSSL_ENCODER_CTX_free(ec);
	return r;
}

static int create_rsa(struct nb_keypair *out)
{
	static const char pkcs1[] = "-----BEGIN RSA PRIVATE KEY-----\n";
	unsigned char blob[MAX_BLOB], *der = NULL, *pem = NULL;
	size_t dlen = 0, plen = 0, blen = 0;
	BIGNUM *n = NULL, *e = NULL;
	EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)RSA_CREATE_BITS);
	int r = -EIO;

	if (!pkey || !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) ||
	    !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e))
		goto out;
	if ((r = rsa_blob(e, n, blob, sizeof(blob), &blen)) < 0 ||
	    (r = set_public(out, ssh_rsa, blob, blen)) < 0)
		goto out;
	/* EC2: SHA-1 of the PKCS#8 DER form, whatever format it hands out. */
	if ((r = encode_private(pkey, "DER", "PrivateKeyInfo", &der, &dlen)) < 0 ||
	    (r = digest_colon_hex(EVP_sha1(), der, dlen, out->fingerprint,
	                          sizeof(out->fingerprint))) < 0)
		goto out;
	if ((r = encode_private(pkey, "PEM", "type-specific", &pem, &plen)) < 0)
		goto out;
	if (plen < strlen(pkcs1) || memcmp(pem, pkcs1, strlen(pkcs1)) != 0) {
		r = -EIO;
		goto out;
	}
	out->private_pem = malloc(plen + 1);
	if (!out->private_pem) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(out->private_pem, pem, plen);
	out->private_pem[plen] = '\0';
	out->type = NB_KEY_RSA;
	r = 0;
out:
	if (der)
		OPENSSL_clear_free(der, dlen);
	if (pem)
		OPENSSL_clear_free(pem, plen);
	BN_free(n);
	BN_free(e);
	EVP_PKEY_free(pkey);
	return r;
}

int nb_keypair_create(enum nb_key_type type, struct nb_keypair *out)
{
	int r;

	memset(out, 0, sizeof(*out));
	switch (type) {
	case NB_KEY_RSA:
		r = create_rsa(out);
		break;
	case NB_KEY_ED25519:
		r = create_ed25519(out);
		break;
	default:
		return -EINVAL;
	}
	if (r < 0) {
		nb_keypair_free(out);
		memset(out, 0, sizeof(*out));
	}
	return r;
}

void nb_keypair_free(struct nb_keypair *kp)
{
	if (!kp || !kp->private_pem)
		return;
	OPENSSL_cleanse(kp->private_pem, strlen(kp->private_pem));
	free(kp->private_pem);
	kp->private_pem = NULL;
}
