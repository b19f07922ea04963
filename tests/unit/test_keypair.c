/* core/keypair: EC2 key pairs checked against the real tools. Keys are made
 * with ssh-keygen/openssl in a temporary directory, and every expected
 * fingerprint comes from the commands AWS documents:
 *   imported RSA: ssh-keygen -e -m PKCS8 | openssl pkey -pubin -outform DER | openssl md5 -c
 *   created RSA:  openssl pkcs8 -topk8 -nocrypt -outform DER | openssl sha1 -c
 *   ed25519:      ssh-keygen -l -E sha256 (without "SHA256:")
 * Hostile inputs must come back as -EINVAL with a reason, never a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <openssl/evp.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/util.h"
#include "core/keypair.h"

static char dir[64];

/* ---- helpers ---- */

static void pathf(char *out, size_t outsz, const char *name)
{
	snprintf(out, outsz, "%s/%s", dir, name);
}

/* Runs a bash command line (pipefail) in the test directory; out gets its
 * output, trailing whitespace removed. Returns the exit status. */
static int sh(char *out, size_t outsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int sh(char *out, size_t outsz, const char *fmt, ...)
{
	char cmd[4096], script[4200];
	struct nb_buf b;
	va_list ap;
	int r;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	snprintf(script, sizeof(script), "set -o pipefail; cd '%s' && %s", dir, cmd);
	const char *argv[] = {"bash", "-c", script, NULL};
	nb_buf_init(&b, 1 << 20);
	r = nb_run(argv, 120000, &b);
	if (out && outsz > 0) {
		size_t n = b.len;

		while (n > 0 && (b.data[n - 1] == '\n' || b.data[n - 1] == ' '))
			n--;
		snprintf(out, outsz, "%.*s", (int)n, b.data ? b.data : "");
	}
	nb_buf_free(&b);
	return r;
}

static void put(const char *name, const char *text, unsigned mode)
{
	char p[256];

	pathf(p, sizeof(p), name);
	assert_int_equal(nb_write_file(p, text, strlen(text), mode), 0);
}

/* Reads a file of the test directory (or an absolute path); caller frees. */
static char *get(const char *name, size_t *len)
{
	char p[512], *data = NULL;
	size_t n = 0;

	if (name[0] == '/')
		nb_strlcpy(p, name, sizeof(p));
	else
		pathf(p, sizeof(p), name);
	assert_int_equal(nb_read_file(p, 1 << 20, &data, &n), 0);
	if (len)
		*len = n;
	return data;
}

/* The token right after marker in s, up to whitespace. */
static void after(const char *s, const char *marker, char *out, size_t outsz)
{
	const char *p = strstr(s, marker);
	size_t n = 0;

	assert_non_null(p);
	p += strlen(marker);
	while (p[n] && p[n] != ' ' && p[n] != '\n')
		n++;
	snprintf(out, outsz, "%.*s", (int)n, p);
}

/* "type base64" of a public key line (drops the comment). */
static void key_part(const char *line, char *out, size_t outsz)
{
	const char *sp = strchr(line, ' ');
	size_t n;

	assert_non_null(sp);
	n = strcspn(sp + 1, " \n");
	snprintf(out, outsz, "%.*s", (int)(sp + 1 - line + n), line);
}

/* Fresh keys for this run, made by ssh-keygen (group setup). */
static int ssh_keygen(const char *type, int bits, const char *name)
{
	char o[4096];
	int r;

	if (bits > 0)
		r = sh(o, sizeof(o), "ssh-keygen -q -t %s -b %d -N '' -C 'nubo test key' -f %s",
		       type, bits, name);
	else
		r = sh(o, sizeof(o), "ssh-keygen -q -t %s -N '' -C 'nubo test key' -f %s", type,
		       name);
	if (r != 0)
		fprintf(stderr, "ssh-keygen -t %s: %s\n", type, o);
	return r == 0 ? 0 : -1;
}

/* EC2's imported-RSA fingerprint, computed by the tools for a .pub file. */
static void oracle_rsa_md5(const char *pub, char *out, size_t outsz)
{
	char o[512];

	assert_int_equal(
	    sh(o, sizeof(o),
	       "ssh-keygen -e -m PKCS8 -f '%s' 2>/dev/null | openssl pkey -pubin -outform DER "
	       "| openssl md5 -c",
	       pub),
	    0);
	after(o, "= ", out, outsz);
	assert_int_equal(strlen(out), 47);
}

/* OpenSSH's SHA256 fingerprint of a public or private key file. */
static void oracle_sha256(const char *file, char *out, size_t outsz)
{
	char o[512];

	assert_int_equal(sh(o, sizeof(o), "ssh-keygen -l -E sha256 -f '%s' 2>/dev/null", file), 0);
	after(o, "SHA256:", out, outsz);
	assert_int_equal(strlen(out), 43);
}

static int import_str(const char *s, struct nb_keypair *kp, char *err, size_t errsz)
{
	return nb_keypair_import(s, strlen(s), kp, err, errsz);
}

/* Imports a .pub of the test directory and checks it against the tools. */
static void check_import_file(const char *pubpath, enum nb_key_type type)
{
	struct nb_keypair kp;
	char err[256], want[128], key[4096];
	char *line = get(pubpath, NULL);

	if (import_str(line, &kp, err, sizeof(err)) != 0)
		fail_msg("%s: %s", pubpath, err);
	assert_int_equal(kp.type, type);
	assert_null(kp.private_pem);
	key_part(line, key, sizeof(key));
	assert_string_equal(kp.public_openssh, key);
	if (type == NB_KEY_RSA)
		oracle_rsa_md5(pubpath, want, sizeof(want));
	else
		oracle_sha256(pubpath, want, sizeof(want));
	assert_string_equal(kp.fingerprint, want);
	free(line);
}

static char *b64(const void *data, size_t n)
{
	char *out = malloc((n + 2) / 3 * 4 + 1);

	assert_non_null(out);
	EVP_EncodeBlock((unsigned char *)out, data, (int)n);
	return out;
}

/* A bounded SSH wire-format writer for crafting blobs. */
struct blob {
	unsigned char d[8192];
	size_t n;
};

static void put_raw(struct blob *b, const void *p, size_t n)
{
	assert_true(b->n + n <= sizeof(b->d));
	memcpy(b->d + b->n, p, n);
	b->n += n;
}

static void put_u32(struct blob *b, uint32_t v)
{
	unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
	                      (unsigned char)(v >> 8), (unsigned char)v};

	put_raw(b, x, 4);
}

static void put_str(struct blob *b, const void *p, size_t n)
{
	put_u32(b, (uint32_t)n);
	put_raw(b, p, n);
}

static void put_cstr(struct blob *b, const char *s)
{
	put_str(b, s, strlen(s));
}

/* "type base64(blob)" into out. */
static void line_of(const char *type, const struct blob *b, char *out, size_t outsz)
{
	char *e = b64(b->d, b->n);

	snprintf(out, outsz, "%s %s", type, e);
	free(e);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

/* A random odd number of exactly bits bits, big-endian. */
static size_t rand_modulus(unsigned char *out, int bits)
{
	size_t n = (size_t)(bits + 7) / 8, i;
	int top = (bits - 1) % 8;

	for (i = 0; i < n; i++)
		out[i] = (unsigned char)rnd();
	out[0] &= (unsigned char)((1u << (top + 1)) - 1);
	out[0] |= (unsigned char)(1u << top);
	out[n - 1] |= 1;
	return n;
}

/* ssh-rsa blob with e and n given as mpint bodies (sign byte included). */
static void rsa_blob(struct blob *b, const void *e, size_t elen, const void *n, size_t nlen)
{
	b->n = 0;
	put_cstr(b, "ssh-rsa");
	put_str(b, e, elen);
	put_str(b, n, nlen);
}

static void expect_reject(const char *material, size_t len, const char *needle)
{
	struct nb_keypair kp;
	char err[256] = "unset";
	int r = nb_keypair_import(material, len, &kp, err, sizeof(err));

	if (r != -EINVAL)
		fail_msg("accepted or wrong error %d for <%.60s>: %s", r, material ? material : "",
		         err);
	assert_true(err[0] != '\0');
	assert_null(strchr(err, '\n'));
	if (needle && !strstr(err, needle))
		fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
	assert_int_equal(kp.public_openssh[0], '\0');
	assert_int_equal(kp.fingerprint[0], '\0');
	assert_null(kp.private_pem);
}

static void expect_reject_str(const char *material, const char *needle)
{
	expect_reject(material, strlen(material), needle);
}

/* ---- import: real keys ---- */

static const int rsa_sizes[] = {1024, 2048, 3072, 4096};

static void test_import_rsa_sizes(void **state)
{
	char pub[40];

	(void)state;
	for (size_t i = 0; i < NB_ARRAY_SIZE(rsa_sizes); i++) {
		snprintf(pub, sizeof(pub), "rsa%d.pub", rsa_sizes[i]);
		check_import_file(pub, NB_KEY_RSA);
	}
}

/* The largest size (committed: two minutes to make) and exponent 3. */
static void test_import_rsa_fixtures(void **state)
{
	(void)state;
	check_import_file(NB_TEST_DATA "/keypair/rsa16384.pub", NB_KEY_RSA);
	check_import_file(NB_TEST_DATA "/keypair/rsa_e3.pub", NB_KEY_RSA);
}

static void test_import_ed25519(void **state)
{
	(void)state;
	check_import_file("ed1.pub", NB_KEY_ED25519);
	check_import_file("ed2.pub", NB_KEY_ED25519);
}

/* The same key however the line is spaced or commented. */
static void test_import_line_variants(void **state)
{
	static const char *const fmts[] = {
	    "%s %s",
	    "%s %s\n",
	    "%s %s\r\n",
	    "  \t%s\t%s  \n\n",
	    "%s   %s  a comment with spaces",
	    "%s %s user@host\n",
	    "%s %s caf\xc3\xa9 \xe2\x9c\x93",
	    "\n\n%s %s x\n",
	};
	const char *files[] = {"rsa2048.pub", "ed1.pub"};
	struct nb_keypair kp, ref;
	char err[256], type[32], data[1024], line[2048];

	(void)state;
	for (size_t f = 0; f < NB_ARRAY_SIZE(files); f++) {
		char *text = get(files[f], NULL);

		assert_int_equal(import_str(text, &ref, err, sizeof(err)), 0);
		assert_int_equal(sscanf(text, "%31s %1023s", type, data), 2);
		for (size_t i = 0; i < NB_ARRAY_SIZE(fmts); i++) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
			snprintf(line, sizeof(line), fmts[i], type, data);
#pragma GCC diagnostic pop
			if (import_str(line, &kp, err, sizeof(err)) != 0)
				fail_msg("variant %zu of %s: %s", i, files[f], err);
			assert_string_equal(kp.fingerprint, ref.fingerprint);
			assert_string_equal(kp.public_openssh, ref.public_openssh);
		}
		free(text);
	}
}

/* PublicKeyMaterial base64-encoded once more (awscli with file://, or a
 * caller that encodes twice), with or without line wrapping. */
static void test_import_base64_again(void **state)
{
	const char *files[] = {"rsa2048.pub", "ed1.pub"};
	struct nb_keypair kp, ref;
	char err[256], cmd_out[8192];

	(void)state;
	for (size_t f = 0; f < NB_ARRAY_SIZE(files); f++) {
		size_t n;
		char *text = get(files[f], &n), *enc = b64(text, n);

		assert_int_equal(import_str(text, &ref, err, sizeof(err)), 0);
		if (import_str(enc, &kp, err, sizeof(err)) != 0)
			fail_msg("%s base64: %s", files[f], err);
		assert_string_equal(kp.fingerprint, ref.fingerprint);
		assert_string_equal(kp.public_openssh, ref.public_openssh);
		/* coreutils wraps at 76 columns. */
		assert_int_equal(sh(cmd_out, sizeof(cmd_out), "base64 %s", files[f]), 0);
		assert_non_null(strchr(cmd_out, '\n'));
		if (import_str(cmd_out, &kp, err, sizeof(err)) != 0)
			fail_msg("%s wrapped base64: %s", files[f], err);
		assert_string_equal(kp.fingerprint, ref.fingerprint);
		/* Twice is once too many. */
		char *enc2 = b64(enc, strlen(enc));
		expect_reject_str(enc2, "more than once");
		free(enc2);
		free(enc);
		free(text);
	}
}

/* RFC 4716 as ssh-keygen -e writes it (and with a continued header). */
static void test_import_rfc4716(void **state)
{
	const char *files[] = {"rsa4096.pub", "ed1.pub"};
	struct nb_keypair kp, ref;
	char err[256], out[8192], body[8192], cont[8192];

	(void)state;
	for (size_t f = 0; f < NB_ARRAY_SIZE(files); f++) {
		char *text = get(files[f], NULL);

		assert_int_equal(import_str(text, &ref, err, sizeof(err)), 0);
		assert_int_equal(sh(out, sizeof(out), "ssh-keygen -e -f %s", files[f]), 0);
		assert_true(nb_str_has_prefix(out, "---- BEGIN SSH2 PUBLIC KEY ----\n"));
		if (import_str(out, &kp, err, sizeof(err)) != 0)
			fail_msg("%s RFC 4716: %s", files[f], err);
		assert_string_equal(kp.fingerprint, ref.fingerprint);
		assert_string_equal(kp.public_openssh, ref.public_openssh);
		/* CRLF, a header continued over two lines, and an x- header. */
		const char *b = strstr(out, "\nAAAA");
		assert_non_null(b);
		nb_strlcpy(body, b + 1, sizeof(body));
		snprintf(cont, sizeof(cont),
		         "---- BEGIN SSH2 PUBLIC KEY ----\r\nComment: \"a long \\\r\ncomment\"\r\n"
		         "x-nubo: yes\r\n%s",
		         body);
		if (import_str(cont, &kp, err, sizeof(err)) != 0)
			fail_msg("%s RFC 4716 with headers: %s", files[f], err);
		assert_string_equal(kp.fingerprint, ref.fingerprint);
		/* Broken: no end line, text after it, garbage in the body. */
		char *end = strstr(cont, "---- END");
		assert_non_null(end);
		char saved = *end;
		*end = '\0';
		expect_reject_str(cont, "end line");
		*end = saved;
		snprintf(cont, sizeof(cont), "%s\nmore\n", out);
		expect_reject_str(cont, "after the end line");
		snprintf(cont, sizeof(cont),
		         "---- BEGIN SSH2 PUBLIC KEY ----\nAA*A\n---- END SSH2 PUBLIC KEY ----");
		expect_reject_str(cont, "base64");
		free(text);
	}
}

/* Base64 DER SubjectPublicKeyInfo, EC2's third format. */
static void test_import_der(void **state)
{
	struct nb_keypair kp, ref;
	char err[256], out[8192], want[128], raw_der[128], raw_ours[128];
	char *text;

	(void)state;
	text = get("rsa3072.pub", NULL);
	assert_int_equal(import_str(text, &ref, err, sizeof(err)), 0);
	assert_int_equal(sh(out, sizeof(out),
	                    "ssh-keygen -e -m PKCS8 -f rsa3072.pub | openssl pkey -pubin -outform "
	                    "DER | base64 -w0"),
	                 0);
	if (import_str(out, &kp, err, sizeof(err)) != 0)
		fail_msg("RSA DER: %s", err);
	assert_string_equal(kp.fingerprint, ref.fingerprint);
	assert_string_equal(kp.public_openssh, ref.public_openssh);
	free(text);

	/* ed25519 from openssl: ssh-keygen cannot convert it, so compare the
	 * raw key bytes and let ssh-keygen fingerprint what we made. */
	assert_int_equal(sh(out, sizeof(out), "openssl genpkey -algorithm ED25519 -out oed.pem"),
	                 0);
	assert_int_equal(
	    sh(out, sizeof(out), "openssl pkey -in oed.pem -pubout -outform DER | base64 -w0"), 0);
	if (import_str(out, &kp, err, sizeof(err)) != 0)
		fail_msg("ed25519 DER: %s", err);
	assert_int_equal(kp.type, NB_KEY_ED25519);
	put("oed.pub", kp.public_openssh, 0644);
	oracle_sha256("oed.pub", want, sizeof(want));
	assert_string_equal(kp.fingerprint, want);
	assert_int_equal(
	    sh(raw_der, sizeof(raw_der),
	       "openssl pkey -in oed.pem -pubout -outform DER | tail -c 32 | base64 -w0"),
	    0);
	assert_int_equal(sh(raw_ours, sizeof(raw_ours),
	                    "cut -d' ' -f2 oed.pub | base64 -d | tail -c 32 | base64 -w0"),
	                 0);
	assert_string_equal(raw_der, raw_ours);

	/* Other DER key types are refused by name. */
	assert_int_equal(
	    sh(out, sizeof(out),
	       "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null "
	       "| openssl pkey -pubout -outform DER | base64 -w0"),
	    0);
	expect_reject_str(out, "not supported");
}

/* EC2 takes RSA and ED25519 only. */
static void test_import_other_types(void **state)
{
	static const struct {
		const char *file, *name;
	} keys[] = {
	    {"dsa1024.pub", "ssh-dss"},
	    {"ecdsa256.pub", "ecdsa-sha2-nistp256"},
	    {"ecdsa384.pub", "ecdsa-sha2-nistp384"},
	    {"ecdsa521.pub", "ecdsa-sha2-nistp521"},
	};
	struct blob b = {.n = 0};
	char line[1024], path[512];
	unsigned char pk[32] = {1};

	(void)state;
	for (size_t i = 0; i < NB_ARRAY_SIZE(keys); i++) {
		snprintf(path, sizeof(path), NB_TEST_DATA "/keypair/%s", keys[i].file);
		char *text = get(path, NULL);
		expect_reject_str(text, keys[i].name);
		char *enc = b64(text, strlen(text));
		expect_reject_str(enc, keys[i].name);
		free(enc);
		free(text);
	}
	/* A security-key type (ssh-keygen needs the hardware to make one). */
	put_cstr(&b, "sk-ssh-ed25519@openssh.com");
	put_str(&b, pk, sizeof(pk));
	put_cstr(&b, "ssh:");
	line_of("sk-ssh-ed25519@openssh.com", &b, line, sizeof(line));
	expect_reject_str(line, "sk-ssh-ed25519@openssh.com");
	/* The line's type and the blob's must agree. */
	char *ed = get("ed1.pub", NULL), *rsa = get("rsa2048.pub", NULL);
	snprintf(line, sizeof(line), "ssh-rsa %s", strchr(ed, ' ') + 1);
	expect_reject_str(line, "the line says ssh-rsa but the key data holds ssh-ed25519");
	free(ed);
	free(rsa);
	/* Hostile type names are not echoed raw. */
	expect_reject_str("ssh-\xff\xfe"
	                  "evil AAAA",
	                  "(unreadable)");
	expect_reject_str("ssh-\x1b[31mevil AAAA", "control");
	expect_reject_str("PuTTY-User-Key-File-3: ssh-rsa", "PuTTY-User-Key-File-3:");
}

/* ---- create ---- */

static void test_create_rsa(void **state)
{
	struct nb_keypair kp, kp2, imp;
	char out[8192], want[128], err[256];

	(void)state;
	assert_int_equal(nb_keypair_create(NB_KEY_RSA, &kp), 0);
	assert_int_equal(kp.type, NB_KEY_RSA);
	assert_non_null(kp.private_pem);
	assert_true(nb_str_has_prefix(kp.private_pem, "-----BEGIN RSA PRIVATE KEY-----\n"));
	assert_non_null(strstr(kp.private_pem, "\n-----END RSA PRIVATE KEY-----\n"));
	put("c_rsa.pem", kp.private_pem, 0600);

	assert_int_equal(sh(out, sizeof(out), "openssl rsa -in c_rsa.pem -check -noout 2>&1"), 0);
	assert_non_null(strstr(out, "RSA key ok"));
	assert_int_equal(sh(out, sizeof(out), "openssl pkey -in c_rsa.pem -noout -text | head -1"),
	                 0);
	assert_non_null(strstr(out, "2048 bit"));
	assert_int_equal(sh(out, sizeof(out), "ssh-keygen -y -f c_rsa.pem"), 0);
	assert_string_equal(out, kp.public_openssh);
	assert_int_equal(
	    sh(out, sizeof(out),
	       "openssl pkcs8 -topk8 -nocrypt -in c_rsa.pem -outform DER | openssl sha1 -c"),
	    0);
	after(out, "= ", want, sizeof(want));
	assert_int_equal(strlen(want), 59);
	assert_string_equal(kp.fingerprint, want);

	/* The private key signs what the public key verifies (-Y sign wants
	 * the .pub beside a PEM key: ssh-keygen's own derivation). */
	snprintf(out, sizeof(out), "tester %s\n", kp.public_openssh);
	put("allowed", out, 0644);
	put("msg", "hello nubo\n", 0644);
	assert_int_equal(sh(out, sizeof(out),
	                    "rm -f msg.sig && ssh-keygen -y -f c_rsa.pem > c_rsa.pem.pub && "
	                    "ssh-keygen -Y sign -f c_rsa.pem -n nubo msg && "
	                    "ssh-keygen -Y verify -f allowed -I tester -n nubo -s msg.sig < msg"),
	                 0);

	/* Imported again, the same key gets EC2's other RSA fingerprint:
	 * MD5 of the public DER, which AWS computes from the private key. */
	assert_int_equal(import_str(kp.public_openssh, &imp, err, sizeof(err)), 0);
	assert_string_equal(imp.public_openssh, kp.public_openssh);
	assert_int_equal(sh(out, sizeof(out),
	                    "openssl pkey -in c_rsa.pem -pubout -outform DER | openssl md5 -c"),
	                 0);
	after(out, "= ", want, sizeof(want));
	assert_string_equal(imp.fingerprint, want);
	assert_string_not_equal(imp.fingerprint, kp.fingerprint);

	assert_int_equal(nb_keypair_create(NB_KEY_RSA, &kp2), 0);
	assert_string_not_equal(kp2.public_openssh, kp.public_openssh);
	assert_string_not_equal(kp2.fingerprint, kp.fingerprint);
	nb_keypair_free(&kp);
	assert_null(kp.private_pem);
	nb_keypair_free(&kp);
	nb_keypair_free(&kp2);
	nb_keypair_free(NULL);
}

static void test_create_ed25519(void **state)
{
	struct nb_keypair kp, kp2, imp;
	char out[8192], want[128], err[256];
	char *p;

	(void)state;
	assert_int_equal(nb_keypair_create(NB_KEY_ED25519, &kp), 0);
	assert_int_equal(kp.type, NB_KEY_ED25519);
	assert_non_null(kp.private_pem);
	assert_true(nb_str_has_prefix(kp.private_pem, "-----BEGIN OPENSSH PRIVATE KEY-----\n"));
	assert_non_null(strstr(kp.private_pem, "\n-----END OPENSSH PRIVATE KEY-----\n"));
	/* ssh-keygen's shape: 70-column lines. */
	for (p = strchr(kp.private_pem, '\n') + 1; *p != '-'; p = strchr(p, '\n') + 1)
		assert_true(strcspn(p, "\n") <= 70);
	assert_true(nb_str_has_prefix(kp.public_openssh, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"));
	put("c_ed", kp.private_pem, 0600);

	assert_int_equal(sh(out, sizeof(out), "ssh-keygen -y -f c_ed"), 0);
	assert_string_equal(out, kp.public_openssh);
	oracle_sha256("c_ed", want, sizeof(want));
	assert_string_equal(kp.fingerprint, want);
	/* Unencrypted (-y above would have asked for a passphrase), and it signs. */
	snprintf(out, sizeof(out), "tester %s\n", kp.public_openssh);
	put("allowed", out, 0644);
	put("msg", "hello nubo\n", 0644);
	assert_int_equal(sh(out, sizeof(out),
	                    "rm -f msg.sig && ssh-keygen -Y sign -f c_ed -n nubo msg && "
	                    "ssh-keygen -Y verify -f allowed -I tester -n nubo -s msg.sig < msg"),
	                 0);

	/* ed25519 fingerprints do not depend on the key's origin. */
	assert_int_equal(import_str(kp.public_openssh, &imp, err, sizeof(err)), 0);
	assert_string_equal(imp.fingerprint, kp.fingerprint);

	assert_int_equal(nb_keypair_create(NB_KEY_ED25519, &kp2), 0);
	assert_string_not_equal(kp2.public_openssh, kp.public_openssh);
	assert_string_not_equal(kp2.private_pem, kp.private_pem);
	nb_keypair_free(&kp);
	nb_keypair_free(&kp2);
	assert_int_equal(nb_keypair_create((enum nb_key_type)7, &kp), -EINVAL);
	assert_null(kp.private_pem);
}

/* ---- hostile input ---- */

static void test_hostile_blobs(void **state)
{
	static const unsigned char e65537[] = {0x01, 0x00, 0x01};
	unsigned char n[2100], big[3000];
	struct blob b, good;
	struct nb_keypair kp;
	char line[8192], err[256], want[128];
	size_t nlen;

	(void)state;
	/* A made-up 1024-bit modulus is still a key to OpenSSH: same answer. */
	n[0] = 0;
	nlen = rand_modulus(n + 1, 1024);
	rsa_blob(&good, e65537, sizeof(e65537), n, nlen + 1);
	line_of("ssh-rsa", &good, line, sizeof(line));
	if (import_str(line, &kp, err, sizeof(err)) != 0)
		fail_msg("crafted 1024: %s", err);
	put("crafted.pub", line, 0644);
	oracle_rsa_md5("crafted.pub", want, sizeof(want));
	assert_string_equal(kp.fingerprint, want);

	/* Every truncation of a valid blob. */
	for (size_t i = 0; i < good.n; i++) {
		b = good;
		b.n = i;
		line_of("ssh-rsa", &b, line, sizeof(line));
		expect_reject_str(line, NULL);
	}
	/* Sizes. */
	nlen = rand_modulus(n, 1023);
	rsa_blob(&b, e65537, sizeof(e65537), n, nlen);
	line_of("ssh-rsa", &b, line, sizeof(line));
	expect_reject_str(line, "1023 bits");
	nlen = rand_modulus(n, 16385);
	rsa_blob(&b, e65537, sizeof(e65537), n, nlen);
	line_of("ssh-rsa", &b, line, sizeof(line));
	expect_reject_str(line, "16385 bits");
	memset(big, 0x7f, sizeof(big));
	rsa_blob(&b, e65537, sizeof(e65537), big, sizeof(big));
	line_of("ssh-rsa", &b, line, sizeof(line));
	expect_reject_str(line, "too large");
	/* Negative modulus (top bit set, no zero byte in front). */
	nlen = rand_modulus(n, 2048);
	rsa_blob(&b, e65537, sizeof(e65537), n, nlen);
	line_of("ssh-rsa", &b, line, sizeof(line));
	expect_reject_str(line, "negative");
	/* Lengths past the end. */
	b.n = 0;
	put_u32(&b, 0xffffffffu);
	put_raw(&b, "ssh-rsa", 7);
	line_of("ssh-rsa", &b, line, sizeof(line));
	expect_reject_str(line, "truncated");
	b.n = 0;
	put_cstr(&b, "ssh-rsa");
	put_u32(&b, 0xfffffff0u);
	put_raw(&b, e65537, 3);
	line_of("ssh-rsa", &b, line, sizeof(line));
	expect_reject_str(line, "truncated");
	b.n = 0;
	put_cstr(&b, "ssh-rsa");
	put_str(&b, e65537, 3);
	put_u32(&b, 0x7fffffffu);
	put_raw(&b, n, 16);
	line_of("ssh-rsa", &b, line, sizeof(line));
	expect_reject_str(line, "truncated");
	/* Bad exponents and an even modulus. */
	nlen = rand_modulus(n + 1, 2048);
	n[0] = 0;
	{
		static const unsigned char two[] = {2}, one[] = {1}, zero[] = {0};

		rsa_blob(&b, two, 1, n, nlen + 1);
		line_of("ssh-rsa", &b, line, sizeof(line));
		expect_reject_str(line, "exponent");
		rsa_blob(&b, one, 1, n, nlen + 1);
		line_of("ssh-rsa", &b, line, sizeof(line));
		expect_reject_str(line, "exponent");
		rsa_blob(&b, zero, 0, n, nlen + 1);
		line_of("ssh-rsa", &b, line, sizeof(line));
		expect_reject_str(line, "exponent");
		rsa_blob(&b, n, nlen + 1, n, nlen + 1);
		line_of("ssh-rsa", &b, line, sizeof(line));
		expect_reject_str(line, "exponent");
	}
	n[nlen] &= 0xfe;
	rsa_blob(&b, e65537, sizeof(e65537), n, nlen + 1);
	line_of("ssh-rsa", &b, line, sizeof(line));
	expect_reject_str(line, "even");
	/* Trailing data. */
	b = good;
	put_raw(&b, "x", 1);
	line_of("ssh-rsa", &b, line, sizeof(line));
	expect_reject_str(line, "after the RSA key");

	/* ed25519: wrong sizes, trailing data, truncations. */
	{
		unsigned char pk[40] = {0};
		size_t sizes[] = {0, 31, 33, 40};

		for (size_t i = 0; i < NB_ARRAY_SIZE(sizes); i++) {
			b.n = 0;
			put_cstr(&b, "ssh-ed25519");
			put_str(&b, pk, sizes[i]);
			line_of("ssh-ed25519", &b, line, sizeof(line));
			expect_reject_str(line, "bytes, not 32");
		}
		b.n = 0;
		put_cstr(&b, "ssh-ed25519");
		put_str(&b, pk, 32);
		good = b;
		put_raw(&b, "\0\0\0\0", 4);
		line_of("ssh-ed25519", &b, line, sizeof(line));
		expect_reject_str(line, "after the ed25519 key");
		for (size_t i = 0; i < good.n; i++) {
			b = good;
			b.n = i;
			line_of("ssh-ed25519", &b, line, sizeof(line));
			expect_reject_str(line, NULL);
		}
	}
}

static void test_hostile_text(void **state)
{
	char *big, *text = get("ed1.pub", NULL), line[1024], err[8];
	struct nb_keypair kp;
	size_t n;

	(void)state;
	expect_reject(NULL, 0, "empty");
	expect_reject("", 0, "empty");
	expect_reject_str(" \t\r\n ", "empty");
	expect_reject_str("ssh-rsa", "missing");
	expect_reject_str("ssh-ed25519   \n", "missing");
	expect_reject_str("ssh-rsa AAAA*AAA", "base64");
	expect_reject_str("ssh-rsa AAAAB3NzaC1yc2E", "base64"); /* no padding */
	expect_reject_str("ssh-rsa AAAAB3NzaC1yc2E=AAAA", "base64");
	expect_reject_str("ssh-rsa A===", "base64");
	expect_reject_str("-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----", NULL);
	expect_reject_str("from=\"10.0.0.1\" ssh-ed25519 AAAA", NULL);
	/* NUL inside, two keys, control characters. */
	n = strlen(text);
	memcpy(line, text, n);
	line[10] = '\0';
	expect_reject(line, n, "NUL");
	snprintf(line, sizeof(line), "%s%s", text, text);
	expect_reject_str(line, "one line");
	snprintf(line, sizeof(line), "%.*s\x01", (int)(n - 1), text);
	expect_reject_str(line, "control");
	/* Over the ceiling, even though the key itself is fine. */
	big = malloc(NB_KEYPAIR_MAX_MATERIAL + 2);
	assert_non_null(big);
	memset(big, ' ', NB_KEYPAIR_MAX_MATERIAL + 1);
	memcpy(big, text, n);
	assert_int_equal(nb_keypair_import(big, NB_KEYPAIR_MAX_MATERIAL, &kp, NULL, 0), 0);
	expect_reject(big, NB_KEYPAIR_MAX_MATERIAL + 1, "longer than");
	/* A huge base64 blob inside the ceiling. */
	memcpy(big, "ssh-rsa ", 8);
	memset(big + 8, 'A', NB_KEYPAIR_MAX_MATERIAL - 8);
	expect_reject(big, NB_KEYPAIR_MAX_MATERIAL, "too long");
	free(big);
	/* No room for the reason, or none wanted: still refused, no overflow. */
	assert_int_equal(import_str("ssh-dss AAAA", &kp, NULL, 0), -EINVAL);
	assert_int_equal(import_str("ssh-dss AAAA", &kp, err, sizeof(err)), -EINVAL);
	assert_int_equal(strlen(err), sizeof(err) - 1);
	free(text);
}

/* Random damage to real keys: the text, and the blob under valid base64
 * (so the damage reaches the wire parser). Only 0 or -EINVAL may come back. */
static void test_hostile_mutations(void **state)
{
	const char *files[] = {"rsa1024.pub", "ed1.pub"};
	struct nb_keypair kp;
	char err[256], line[4096];
	unsigned char raw[2048];
	int accepted = 0, rejected = 0;

	(void)state;
	for (size_t f = 0; f < NB_ARRAY_SIZE(files); f++) {
		char *text = get(files[f], NULL), type[32], data[1024];
		size_t tn = strlen(text), rn = 0;
		struct blob b;

		assert_int_equal(sscanf(text, "%31s %1023s", type, data), 2);
		int dl = EVP_DecodeBlock(raw, (unsigned char *)data, (int)strlen(data));

		assert_true(dl > 0);
		rn = (size_t)dl - (strchr(data, '=') ? strlen(strchr(data, '=')) : 0);
		for (int it = 0; it < 4000; it++) {
			int r;
			size_t len = tn, k = 1 + rnd() % 4;

			memcpy(line, text, tn);
			for (size_t j = 0; j < k; j++)
				line[rnd() % tn] = (char)rnd();
			if (rnd() % 4 == 0)
				len = rnd() % tn;
			r = nb_keypair_import(line, len, &kp, err, sizeof(err));
			assert_true(r == 0 || (r == -EINVAL && err[0]));

			memcpy(b.d, raw, rn);
			b.n = rn;
			for (size_t j = 0; j < k; j++)
				b.d[rnd() % rn] = (unsigned char)rnd();
			if (rnd() % 4 == 0)
				b.n = rnd() % rn;
			if (rnd() % 8 == 0) /* a length field pointed far away */
				b.d[rnd() % (b.n > 4 ? b.n - 3 : 1)] = 0xff;
			line_of(type, &b, line, sizeof(line));
			r = import_str(line, &kp, err, sizeof(err));
			assert_true(r == 0 || (r == -EINVAL && err[0]));
			if (r == 0)
				accepted++;
			else
				rejected++;
		}
		free(text);
	}
	/* The damage reached past base64 into both outcomes. */
	assert_true(rejected > 1000);
	assert_true(accepted > 0);
}

static int setup(void **state)
{
	char name[32];

	(void)state;
	nb_strlcpy(dir, "/tmp/nb-keypair-XXXXXX", sizeof(dir));
	if (!mkdtemp(dir))
		return -1;
	for (size_t i = 0; i < NB_ARRAY_SIZE(rsa_sizes); i++) {
		snprintf(name, sizeof(name), "rsa%d", rsa_sizes[i]);
		if (ssh_keygen("rsa", rsa_sizes[i], name) < 0)
			return -1;
	}
	if (ssh_keygen("ed25519", 0, "ed1") < 0 || ssh_keygen("ed25519", 0, "ed2") < 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	return nb_rm_rf(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_import_rsa_sizes),    cmocka_unit_test(test_import_rsa_fixtures),
	    cmocka_unit_test(test_import_ed25519),      cmocka_unit_test(test_import_line_variants),
	    cmocka_unit_test(test_import_base64_again), cmocka_unit_test(test_import_rfc4716),
	    cmocka_unit_test(test_import_der),          cmocka_unit_test(test_import_other_types),
	    cmocka_unit_test(test_create_rsa),          cmocka_unit_test(test_create_ed25519),
	    cmocka_unit_test(test_hostile_blobs),       cmocka_unit_test(test_hostile_text),
	    cmocka_unit_test(test_hostile_mutations),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
