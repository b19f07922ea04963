/* s3engine: the object store's storage engine on real files and a real
 * SQLite database in a temporary directory: bucket rules, streaming puts
 * and reads with metadata, digests and checksums, etags (single and
 * multipart) against values computed by Python's hashlib/zlib, ranges,
 * conditions, listing order and paging, versioning, multipart rules, copy,
 * quotas, hostile keys, crash safety (SIGKILL in the middle of a put) and
 * concurrent use. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/util.h"
#include "s3/engine.h"

#define ACCT_A "acct-0000000000000000a"
#define ACCT_B "acct-0000000000000000b"
#define MIB (1024u * 1024u)

struct fixture {
	char dir[64];
	char root[128];
	struct nb_s3 *s3;
};

/* tmpfs when there is one: every fsync still runs, without a disk's
 * latency (3 syncs a put times a few thousand puts); /tmp otherwise. */
static const char *test_base(void)
{
	struct stat st;

	return stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0
	           ? "/dev/shm"
	           : "/tmp";
}

static int setup_in(void **state, const char *base)
{
	struct fixture *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "%s/nb-test-s3-XXXXXX", base);
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->root, sizeof(f->root), "%s/objects", f->dir);
	if (nb_s3_open(f->root, &f->s3) < 0)
		return -1;
	if (nb_s3_bucket_create(f->s3, "bkt", ACCT_A, "us-east-1", NULL) < 0)
		return -1;
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_in(state, test_base());
}

/* On the disk (ext4 here): durability, hard links, copy_file_range. */
static int setup_disk(void **state)
{
	return setup_in(state, "/tmp");
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	nb_s3_close(f->s3);
	nb_rm_rf(f->dir);
	free(f);
	return 0;
}

/* Puts data in chunks of chunk bytes (0: one write). */
static int put_opts(struct nb_s3 *s3, const struct nb_s3_put_opts *o, const void *data, size_t len,
                    size_t chunk, const struct nb_s3_expect *ex, struct nb_s3_put_result *res)
{
	struct nb_s3_put *p;
	const char *d = data;
	int r = nb_s3_put_begin(s3, o, &p);

	if (r < 0)
		return r;
	if (!chunk)
		chunk = len ? len : 1;
	for (size_t off = 0; off < len; off += chunk) {
		size_t n = len - off < chunk ? len - off : chunk;
		r = nb_s3_put_write(p, d + off, n);
		if (r < 0) {
			nb_s3_put_abort(p);
			return r;
		}
	}
	return nb_s3_put_commit(p, ex, res);
}

static int put(struct nb_s3 *s3, const char *bucket, const char *key, const char *data,
               struct nb_s3_put_result *res)
{
	struct nb_s3_put_opts o = {
	    .bucket = bucket, .key = key, .actor = ACCT_A, .content_length = -1};

	return put_opts(s3, &o, data, strlen(data), 0, NULL, res);
}

/* The whole object (or range) as a NUL-terminated string; caller frees. */
static char *read_reader(struct nb_s3_reader *rd)
{
	char *buf = malloc(rd->length + 1);
	size_t got = 0;

	assert_non_null(buf);
	if (rd->data) { /* an object kept in its row */
		assert_int_equal(rd->fd, -1);
		memcpy(buf, rd->data + rd->offset, rd->length);
		got = rd->length;
	}
	while (got < rd->length) {
		ssize_t n = pread(rd->fd, buf + got, rd->length - got, (off_t)(rd->offset + got));
		assert_true(n > 0);
		got += (size_t)n;
	}
	buf[got] = '\0';
	return buf;
}

static char *get(struct nb_s3 *s3, const char *bucket, const char *key, const char *vid)
{
	struct nb_s3_reader rd;
	char *s;

	if (nb_s3_object_open(s3, bucket, key, vid, ACCT_A, NULL, NULL, &rd) < 0) {
		nb_s3_reader_close(&rd);
		return NULL;
	}
	s = read_reader(&rd);
	nb_s3_reader_close(&rd);
	return s;
}

static void assert_content(struct nb_s3 *s3, const char *bucket, const char *key, const char *vid,
                           const char *want)
{
	char *got = get(s3, bucket, key, vid);

	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

/* Regular files under dir (recursively). */
static size_t count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		char path[512];
		struct stat st;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (lstat(path, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode))
			n += count_files(path);
		else
			n++;
	}
	closedir(d);
	return n;
}

static size_t data_files(struct fixture *f)
{
	char p[256];

	snprintf(p, sizeof(p), "%s/data", f->root);
	return count_files(p);
}

static size_t tmp_files(struct fixture *f)
{
	char p[256];

	snprintf(p, sizeof(p), "%s/tmp", f->root);
	return count_files(p);
}

/* ---- buckets ---- */

static void bucket_name_rules(void **state)
{
	static const struct {
		const char *name;
		const char *rule; /* NULL: valid; else a word of the message */
	} cases[] = {
	    {"abc", NULL},
	    {"my-bucket.example-1", NULL},
	    {"a1b", NULL},
	    {"123", NULL},
	    {"192.168.5", NULL},
	    {"ab", "between 3 and 63"},
	    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL},
	    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	     "between 3 and 63"},
	    {"", "between 3 and 63"},
	    {"My-Bucket", "lowercase"},
	    {"my_bucket", "lowercase"},
	    {"my bucket", "lowercase"},
	    {"-bucket", "begin and end"},
	    {"bucket-", "begin and end"},
	    {".bucket", "begin and end"},
	    {"bucket.", "begin and end"},
	    {"my..bucket", "adjacent periods"},
	    {"192.168.5.4", "IP address"},
	    {"10.0.0.1", "IP address"},
	    {"xn--bucket", "xn--"},
	    {"bucket-s3alias", "-s3alias"},
	    {"sthree-bucket", "sthree-"},
	    {"bucket--ol-s3", "--ol-s3"},
	    {"b\xc3\xa9ucket", "lowercase"},
	};
	struct fixture *f = *state;

	for (size_t i = 0; i < NB_ARRAY_SIZE(cases); i++) {
		const char *why = NULL;
		int r = nb_s3_bucket_name_check(cases[i].name, &why);
		if (!cases[i].rule) {
			if (r != 0)
				fail_msg("%s refused: %s", cases[i].name, why);
			continue;
		}
		if (r != -NB_S3_E_INVALID_BUCKET_NAME || !why || !strstr(why, cases[i].rule))
			fail_msg("%s: got %d (%s), want rule %s", cases[i].name, r, why ? why : "-",
			         cases[i].rule);
		/* create refuses the same way */
		assert_int_equal(
		    nb_s3_bucket_create(f->s3, cases[i].name, ACCT_A, "us-east-1", NULL),
		    -NB_S3_E_INVALID_BUCKET_NAME);
	}
	assert_string_equal(nb_s3_err_code(-NB_S3_E_INVALID_BUCKET_NAME), "InvalidBucketName");
	assert_int_equal(nb_s3_err_http_status(-NB_S3_E_INVALID_BUCKET_NAME), 400);
}

static void bucket_lifecycle(void **state)
{
	struct fixture *f = *state;
	struct nb_s3_bucket b, *list;
	char uid[NB_S3_UPLOAD_ID_SIZE];
	size_t n;

	assert_int_equal(nb_s3_bucket_create(f->s3, "bkt", ACCT_A, "us-east-1", NULL),
	                 -NB_S3_E_BUCKET_OWNED);
	assert_int_equal(nb_s3_bucket_create(f->s3, "bkt", ACCT_B, "us-east-1", NULL),
	                 -NB_S3_E_BUCKET_EXISTS);
	assert_int_equal(nb_s3_bucket_create(f->s3, "zeta", ACCT_A, "eu-west-1", &b), 0);
	assert_string_equal(b.region, "eu-west-1");
	assert_int_equal(nb_s3_bucket_create(f->s3, "other", ACCT_B, "us-east-1", NULL), 0);
	assert_int_equal(nb_s3_bucket_create(f->s3, "alpha", ACCT_A, "us-east-1", NULL), 0);

	assert_int_equal(nb_s3_bucket_get(f->s3, "zeta", &b), 0);
	assert_string_equal(b.name, "zeta");
	assert_string_equal(b.owner, ACCT_A);
	assert_string_equal(b.region, "eu-west-1");
	assert_false(b.public_read);
	assert_int_equal(b.versioning, NB_S3_VERSIONING_UNSET);
	assert_true(b.created_ms > 0);
	assert_int_equal(nb_s3_bucket_get(f->s3, "nope", &b), -NB_S3_E_NO_SUCH_BUCKET);

	/* per owner, by name */
	assert_int_equal(nb_s3_bucket_list(f->s3, ACCT_A, &list, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(list[0].name, "alpha");
	assert_string_equal(list[1].name, "bkt");
	assert_string_equal(list[2].name, "zeta");
	free(list);
	assert_int_equal(nb_s3_bucket_list(f->s3, ACCT_B, &list, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].name, "other");
	free(list);

	/* flags: only the owner may change them */
	assert_int_equal(nb_s3_bucket_set_public_read(f->s3, "zeta", ACCT_B, true),
	                 -NB_S3_E_ACCESS_DENIED);
	assert_int_equal(nb_s3_bucket_set_public_read(f->s3, "zeta", ACCT_A, true), 0);
	assert_int_equal(
	    nb_s3_bucket_set_versioning(f->s3, "zeta", ACCT_A, NB_S3_VERSIONING_ENABLED), 0);
	assert_int_equal(nb_s3_bucket_set_versioning(f->s3, "zeta", ACCT_A, NB_S3_VERSIONING_UNSET),
	                 -NB_S3_E_INVALID_ARGUMENT);
	assert_int_equal(nb_s3_bucket_get(f->s3, "zeta", &b), 0);
	assert_true(b.public_read);
	assert_int_equal(b.versioning, NB_S3_VERSIONING_ENABLED);

	/* delete: only the owner, only when empty of versions, markers, uploads */
	assert_int_equal(nb_s3_bucket_delete(f->s3, "zeta", ACCT_B), -NB_S3_E_ACCESS_DENIED);
	assert_int_equal(put(f->s3, "zeta", "k", "v", NULL), 0);
	assert_int_equal(nb_s3_bucket_delete(f->s3, "zeta", ACCT_A), -NB_S3_E_BUCKET_NOT_EMPTY);
	assert_int_equal(nb_s3_object_delete(f->s3, "zeta", "k", NULL, ACCT_A, NULL), 0);
	/* a delete marker and the old version remain */
	assert_int_equal(nb_s3_bucket_delete(f->s3, "zeta", ACCT_A), -NB_S3_E_BUCKET_NOT_EMPTY);
	{
		struct nb_s3_list l;
		struct nb_s3_list_opts lo = {.max_keys = 1000};
		assert_int_equal(nb_s3_list_versions(f->s3, "zeta", ACCT_A, &lo, &l), 0);
		assert_int_equal(l.n_items, 2);
		for (size_t i = 0; i < l.n_items; i++)
			assert_int_equal(nb_s3_object_delete(f->s3, "zeta", "k",
			                                     l.items[i].version_id, ACCT_A, NULL),
			                 0);
		nb_s3_list_clear(&l);
	}
	struct nb_s3_put_opts mo = {.bucket = "zeta", .key = "mp", .actor = ACCT_A};
	assert_int_equal(nb_s3_mpu_create(f->s3, &mo, uid), 0);
	assert_int_equal(nb_s3_bucket_delete(f->s3, "zeta", ACCT_A), -NB_S3_E_BUCKET_NOT_EMPTY);
	assert_int_equal(nb_s3_mpu_abort(f->s3, "zeta", "mp", uid, ACCT_A), 0);
	assert_int_equal(nb_s3_bucket_delete(f->s3, "zeta", ACCT_A), 0);
	assert_int_equal(nb_s3_bucket_get(f->s3, "zeta", &b), -NB_S3_E_NO_SUCH_BUCKET);
	/* the name is free again, for anyone */
	assert_int_equal(nb_s3_bucket_create(f->s3, "zeta", ACCT_B, "us-east-1", NULL), 0);
}

static void access_by_owner(void **state)
{
	struct fixture *f = *state;
	struct nb_s3_object o;
	struct nb_s3_reader rd;
	struct nb_s3_put_opts po = {
	    .bucket = "bkt", .key = "x", .actor = ACCT_B, .content_length = -1};
	struct nb_s3_put *p;

	assert_int_equal(put(f->s3, "bkt", "secret", "s", NULL), 0);
	assert_int_equal(nb_s3_object_head(f->s3, "bkt", "secret", NULL, ACCT_B, &o),
	                 -NB_S3_E_ACCESS_DENIED);
	nb_s3_object_clear(&o);
	assert_int_equal(nb_s3_put_begin(f->s3, &po, &p), -NB_S3_E_ACCESS_DENIED);
	assert_int_equal(nb_s3_object_delete(f->s3, "bkt", "secret", NULL, ACCT_B, NULL),
	                 -NB_S3_E_ACCESS_DENIED);
	/* public-read opens reads, not writes */
	assert_int_equal(nb_s3_bucket_set_public_read(f->s3, "bkt", ACCT_A, true), 0);
	assert_int_equal(nb_s3_object_open(f->s3, "bkt", "secret", NULL, ACCT_B, NULL, NULL, &rd),
	                 0);
	nb_s3_reader_close(&rd);
	assert_int_equal(nb_s3_put_begin(f->s3, &po, &p), -NB_S3_E_ACCESS_DENIED);
	/* NULL actor: no check (internal callers) */
	assert_int_equal(nb_s3_object_head(f->s3, "bkt", "secret", NULL, NULL, &o), 0);
	assert_string_equal(o.owner, ACCT_A);
	nb_s3_object_clear(&o);
	assert_string_equal(nb_s3_err_code(-NB_S3_E_ACCESS_DENIED), "AccessDenied");
	assert_int_equal(nb_s3_err_http_status(-NB_S3_E_ACCESS_DENIED), 403);
}

/* ---- put and get ---- */

static void put_get_roundtrip_with_metadata(void **state)
{
	struct fixture *f = *state;
	json_t *um = json_pack("{s:s, s:s}", "color", "blue", "owner-name", "Zoë");
	struct nb_s3_put_opts o = {
	    .bucket = "bkt",
	    .key = "docs/hello.txt",
	    .actor = ACCT_A,
	    .content_length = 11,
	    .meta = {.content_type = "text/plain",
	             .content_encoding = "identity",
	             .content_disposition = "attachment; filename=\"h.txt\"",
	             .cache_control = "max-age=60",
	             .user = um},
	};
	struct nb_s3_put_result res;
	struct nb_s3_reader rd;
	char *s;

	/* written three bytes at a time */
	assert_int_equal(put_opts(f->s3, &o, "hello world", 11, 3, NULL, &res), 0);
	assert_string_equal(res.etag, "\"5eb63bbbe01eeed093cb22bb8f5acdc3\"");
	assert_int_equal(res.size, 11);
	assert_string_equal(res.version_id, "null");

	assert_int_equal(
	    nb_s3_object_open(f->s3, "bkt", "docs/hello.txt", NULL, ACCT_A, NULL, NULL, &rd), 0);
	assert_int_equal(rd.offset, 0);
	assert_int_equal(rd.length, 11);
	assert_false(rd.partial);
	s = read_reader(&rd);
	assert_string_equal(s, "hello world");
	free(s);
	assert_string_equal(rd.obj.key, "docs/hello.txt");
	assert_string_equal(rd.obj.etag, "\"5eb63bbbe01eeed093cb22bb8f5acdc3\"");
	assert_string_equal(rd.obj.content_type, "text/plain");
	assert_string_equal(rd.obj.content_encoding, "identity");
	assert_string_equal(rd.obj.content_disposition, "attachment; filename=\"h.txt\"");
	assert_string_equal(rd.obj.cache_control, "max-age=60");
	assert_null(rd.obj.content_language);
	assert_string_equal(json_string_value(json_object_get(rd.obj.user_meta, "color")), "blue");
	assert_string_equal(json_string_value(json_object_get(rd.obj.user_meta, "owner-name")),
	                    "Zoë");
	assert_int_equal(json_object_size(rd.obj.user_meta), 2);
	assert_string_equal(rd.obj.owner, ACCT_A);
	assert_string_equal(rd.obj.version_id, "null");
	assert_true(rd.obj.is_latest);
	assert_true(llabs(rd.obj.mtime_ms - nb_wall_ms()) < 60000);
	nb_s3_reader_close(&rd);

	/* empty object: md5 of nothing */
	o.key = "empty";
	o.content_length = 0;
	o.meta = (struct nb_s3_meta){0};
	assert_int_equal(put_opts(f->s3, &o, "", 0, 0, NULL, &res), 0);
	assert_string_equal(res.etag, "\"d41d8cd98f00b204e9800998ecf8427e\"");
	assert_content(f->s3, "bkt", "empty", NULL, "");

	/* overwrite replaces (unversioned). Both objects above, of a declared
	 * length up to NB_S3_INLINE_MAX, are in their rows; this one, of no
	 * declared length, has a file */
	assert_int_equal(data_files(f), 0);
	assert_int_equal(put(f->s3, "bkt", "empty", "now full", NULL), 0);
	assert_content(f->s3, "bkt", "empty", NULL, "now full");
	assert_int_equal(data_files(f), 1);
	assert_int_equal(tmp_files(f), 0);

	/* missing */
	assert_int_equal(nb_s3_object_open(f->s3, "bkt", "nope", NULL, ACCT_A, NULL, NULL, &rd),
	                 -NB_S3_E_NO_SUCH_KEY);
	nb_s3_reader_close(&rd);
	assert_int_equal(nb_s3_object_open(f->s3, "nobkt", "k", NULL, ACCT_A, NULL, NULL, &rd),
	                 -NB_S3_E_NO_SUCH_BUCKET);
	nb_s3_reader_close(&rd);
	json_decref(um);
}

static void put_limits_and_metadata_checks(void **state)
{
	struct fixture *f = *state;
	struct nb_s3_put_opts o = {
	    .bucket = "bkt", .key = "k", .actor = ACCT_A, .content_length = 4};
	struct nb_s3_put *p;
	char big[NB_S3_META_MAX];
	json_t *um;

	/* declared length: too short, too long, too large */
	assert_int_equal(put_opts(f->s3, &o, "abc", 3, 0, NULL, NULL), -NB_S3_E_INCOMPLETE_BODY);
	assert_int_equal(put_opts(f->s3, &o, "abcde", 5, 0, NULL, NULL), -NB_S3_E_INCOMPLETE_BODY);
	o.content_length = (int64_t)NB_S3_PUT_MAX + 1;
	assert_int_equal(nb_s3_put_begin(f->s3, &o, &p), -NB_S3_E_ENTITY_TOO_LARGE);
	assert_string_equal(nb_s3_err_code(-NB_S3_E_ENTITY_TOO_LARGE), "EntityTooLarge");
	o.content_length = -1;

	/* CR/LF in a header value would split the response */
	o.meta.content_type = "text/plain\r\nSet-Cookie: x=1";
	assert_int_equal(nb_s3_put_begin(f->s3, &o, &p), -NB_S3_E_INVALID_ARGUMENT);
	o.meta.content_type = NULL;
	/* user metadata: 2 KiB at most */
	memset(big, 'v', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	um = json_pack("{s:s}", "name", big);
	o.meta.user = um;
	assert_int_equal(nb_s3_put_begin(f->s3, &o, &p), -NB_S3_E_METADATA_TOO_LARGE);
	json_decref(um);
	um = json_pack("{s:s}", "bad name", "v");
	o.meta.user = um;
	assert_int_equal(nb_s3_put_begin(f->s3, &o, &p), -NB_S3_E_INVALID_ARGUMENT);
	json_decref(um);
	o.meta.user = NULL;

	/* nothing was left behind by the refused puts */
	assert_int_equal(tmp_files(f), 0);
	assert_int_equal(data_files(f), 0);

	/* abort leaves nothing either */
	assert_int_equal(nb_s3_put_begin(f->s3, &o, &p), 0);
	assert_int_equal(nb_s3_put_write(p, "abc", 3), 0);
	assert_int_equal(tmp_files(f), 1);
	nb_s3_put_abort(p);
	assert_int_equal(tmp_files(f), 0);
	struct nb_s3_object ob;
	assert_int_equal(nb_s3_object_head(f->s3, "bkt", "k", NULL, ACCT_A, &ob),
	                 -NB_S3_E_NO_SUCH_KEY);
	nb_s3_object_clear(&ob);
}

static void digests_and_checksums(void **state)
{
	struct fixture *f = *state;
	const char *data = "123456789";
	struct nb_s3_put_opts o = {
	    .bucket = "bkt", .key = "ck", .actor = ACCT_A, .content_length = 9};
	struct nb_s3_expect ex;
	struct nb_s3_object ob;

	/* Content-MD5 */
	ex = (struct nb_s3_expect){.content_md5 = "JfnnlDI7RTiF9RgfG2JNCw=="};
	assert_int_equal(put_opts(f->s3, &o, data, 9, 4, &ex, NULL), 0);
	ex.content_md5 = "XfnnlDI7RTiF9RgfG2JNCw==";
	assert_int_equal(put_opts(f->s3, &o, data, 9, 4, &ex, NULL), -NB_S3_E_BAD_DIGEST);
	assert_string_equal(nb_s3_err_code(-NB_S3_E_BAD_DIGEST), "BadDigest");
	ex.content_md5 = "not base64!";
	assert_int_equal(put_opts(f->s3, &o, data, 9, 4, &ex, NULL), -NB_S3_E_INVALID_DIGEST);
	ex.content_md5 = "JfnnlA=="; /* valid base64, wrong length */
	assert_int_equal(put_opts(f->s3, &o, data, 9, 4, &ex, NULL), -NB_S3_E_INVALID_DIGEST);

	/* x-amz-content-sha256 */
	o.checksums = NB_S3_CK_SHA256;
	ex = (struct nb_s3_expect){
	    .content_sha256 = "15E2B0D3C33891EBB0F1EF609EC419420C20E320CE94C65FBC8C3312448EB225"};
	assert_int_equal(put_opts(f->s3, &o, data, 9, 2, &ex, NULL), 0);
	ex.content_sha256 = "05e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225";
	assert_int_equal(put_opts(f->s3, &o, data, 9, 2, &ex, NULL), -NB_S3_E_SHA256_MISMATCH);
	assert_string_equal(nb_s3_err_code(-NB_S3_E_SHA256_MISMATCH), "XAmzContentSHA256Mismatch");

	/* x-amz-checksum-*: each algorithm, right and wrong */
	static const struct {
		unsigned ck;
		struct nb_s3_expect good, bad;
		const char *algo, *value;
	} cks[] = {
	    {NB_S3_CK_CRC32, {.crc32 = "y/Q5Jg=="}, {.crc32 = "y/Q5Jw=="}, "CRC32", "y/Q5Jg=="},
	    {NB_S3_CK_CRC32C, {.crc32c = "4waSgw=="}, {.crc32c = "4waSgA=="}, "CRC32C", "4waSgw=="},
	    {NB_S3_CK_SHA1,
	     {.sha1 = "98O8HYCOBHMq32eZZczDTKeuNEE="},
	     {.sha1 = "98O8HYCOBHMq32eZZczDTKeuNEA="},
	     "SHA1",
	     "98O8HYCOBHMq32eZZczDTKeuNEE="},
	    {NB_S3_CK_SHA256,
	     {.sha256 = "FeKw08M4keuw8e9gnsQZQgwg4yDOlMZfvIwzEkSOsiU="},
	     {.sha256 = "FeKw08M4keuw8e9gnsQZQgwg4yDOlMZfvIwzEkSOsiA="},
	     "SHA256",
	     "FeKw08M4keuw8e9gnsQZQgwg4yDOlMZfvIwzEkSOsiU="},
	};
	for (size_t i = 0; i < NB_ARRAY_SIZE(cks); i++) {
		o.checksums = cks[i].ck;
		/* several chunk sizes: the slicing-by-8 CRC path and the tail */
		for (size_t chunk = 1; chunk <= 9; chunk += 4)
			assert_int_equal(put_opts(f->s3, &o, data, 9, chunk, &cks[i].good, NULL),
			                 0);
		assert_int_equal(nb_s3_object_head(f->s3, "bkt", "ck", NULL, ACCT_A, &ob), 0);
		assert_string_equal(ob.checksum_algo, cks[i].algo);
		assert_string_equal(ob.checksum_value, cks[i].value);
		nb_s3_object_clear(&ob);
		assert_int_equal(put_opts(f->s3, &o, data, 9, 0, &cks[i].bad, NULL),
		                 -NB_S3_E_CHECKSUM_MISMATCH);
	}
	/* a long input through the 8-byte loop: CRC32 of 1000 'a' (zlib) */
	{
		char a[1000];
		struct nb_s3_expect e = {.crc32 = "mjjaAw=="};
		memset(a, 'a', sizeof(a));
		o.checksums = NB_S3_CK_CRC32;
		o.content_length = -1;
		assert_int_equal(put_opts(f->s3, &o, a, sizeof(a), 333, &e, NULL), 0);
		o.content_length = 9;
	}
	/* malformed checksum value; checksum not asked for at begin */
	o.checksums = NB_S3_CK_CRC32;
	ex = (struct nb_s3_expect){.crc32 = "y/Q5"};
	assert_int_equal(put_opts(f->s3, &o, data, 9, 0, &ex, NULL), -NB_S3_E_INVALID_CHECKSUM);
	ex = (struct nb_s3_expect){.crc32 = "y/Q5Jh=="}; /* non-canonical base64 */
	assert_int_equal(put_opts(f->s3, &o, data, 9, 0, &ex, NULL), -NB_S3_E_INVALID_CHECKSUM);
	o.checksums = 0;
	ex = (struct nb_s3_expect){.crc32c = "4waSgw=="};
	assert_int_equal(put_opts(f->s3, &o, data, 9, 0, &ex, NULL), -NB_S3_E_INVALID_ARGUMENT);
	/* every failure above left nothing behind; one object stands */
	assert_int_equal(tmp_files(f), 0);
	assert_int_equal(data_files(f), 1);
}

/* ---- ranges and conditions (pure) ---- */

static void range_table(void **state)
{
	static const struct {
		enum nb_s3_range_kind kind;
		uint64_t first, last, size;
		int r;
		uint64_t off, len;
		bool partial;
	} cases[] = {
	    {NB_S3_RANGE_NONE, 0, 0, 100, 0, 0, 100, false},
	    {NB_S3_RANGE_FROM_TO, 0, 0, 100, 0, 0, 1, true},
	    {NB_S3_RANGE_FROM_TO, 10, 19, 100, 0, 10, 10, true},
	    {NB_S3_RANGE_FROM_TO, 90, 500, 100, 0, 90, 10, true}, /* clipped */
	    {NB_S3_RANGE_FROM_TO, 99, 99, 100, 0, 99, 1, true},
	    {NB_S3_RANGE_FROM_TO, 100, 200, 100, -NB_S3_E_INVALID_RANGE, 0, 0, false},
	    {NB_S3_RANGE_FROM_TO, 20, 10, 100, 0, 0, 100, false}, /* invalid: ignored */
	    {NB_S3_RANGE_FROM, 50, 0, 100, 0, 50, 50, true},
	    {NB_S3_RANGE_FROM, 100, 0, 100, -NB_S3_E_INVALID_RANGE, 0, 0, false},
	    {NB_S3_RANGE_SUFFIX, 0, 10, 100, 0, 90, 10, true},
	    {NB_S3_RANGE_SUFFIX, 0, 500, 100, 0, 0, 100, true},
	    {NB_S3_RANGE_SUFFIX, 0, 0, 100, -NB_S3_E_INVALID_RANGE, 0, 0, false},
	    {NB_S3_RANGE_FROM_TO, 0, 0, 0, -NB_S3_E_INVALID_RANGE, 0, 0, false},
	    {NB_S3_RANGE_SUFFIX, 0, 5, 0, -NB_S3_E_INVALID_RANGE, 0, 0, false},
	    {NB_S3_RANGE_NONE, 0, 0, 0, 0, 0, 0, false},
	};
	(void)state;
	for (size_t i = 0; i < NB_ARRAY_SIZE(cases); i++) {
		struct nb_s3_range rg = {cases[i].kind, cases[i].first, cases[i].last};
		uint64_t off = 7, len = 7;
		bool partial = true;
		int r = nb_s3_range_resolve(&rg, cases[i].size, &off, &len, &partial);
		if (r != cases[i].r)
			fail_msg("case %zu: r %d want %d", i, r, cases[i].r);
		if (r == 0 &&
		    (off != cases[i].off || len != cases[i].len || partial != cases[i].partial))
			fail_msg("case %zu: %llu+%llu %d", i, (unsigned long long)off,
			         (unsigned long long)len, partial);
	}
	assert_int_equal(nb_s3_err_http_status(-NB_S3_E_INVALID_RANGE), 416);
}

static void cond_table(void **state)
{
	const char *etag = "\"abc\"";
	const int64_t t = 1700000000; /* mtime, seconds */
	static const struct {
		const char *im, *inm;
		int64_t ims, ius;
		bool exists, read;
		int want;
	} cases[] = {
	    {NULL, NULL, 0, 0, true, true, 200},
	    {"\"abc\"", NULL, 0, 0, true, true, 200},
	    {"abc", NULL, 0, 0, true, true, 200},
	    {"\"x\", \"abc\"", NULL, 0, 0, true, true, 200},
	    {"W/\"abc\"", NULL, 0, 0, true, true, 200},
	    {"*", NULL, 0, 0, true, true, 200},
	    {"\"x\"", NULL, 0, 0, true, true, 412},
	    {"*", NULL, 0, 0, false, false, 412},
	    {NULL, "\"abc\"", 0, 0, true, true, 304},
	    {NULL, "\"abc\"", 0, 0, true, false, 412},
	    {NULL, "\"x\"", 0, 0, true, true, 200},
	    {NULL, "*", 0, 0, true, true, 304},
	    {NULL, "*", 0, 0, false, false, 200}, /* create-only write */
	    {NULL, "*", 0, 0, true, false, 412},
	    {NULL, NULL, 1700000000, 0, true, true, 304},  /* not modified since t */
	    {NULL, NULL, 1699999999, 0, true, true, 200},  /* modified after */
	    {NULL, NULL, 1700000000, 0, true, false, 200}, /* ignored for writes */
	    {NULL, NULL, 0, 1700000000, true, true, 200},  /* unmodified since t */
	    {NULL, NULL, 0, 1699999999, true, true, 412},  /* modified since */
	    /* S3: If-Match true + If-Unmodified-Since false -> 200 */
	    {"\"abc\"", NULL, 0, 1699999999, true, true, 200},
	    /* S3: If-None-Match false + If-Modified-Since true -> 304 */
	    {NULL, "\"abc\"", 1699999999, 0, true, true, 304},
	    /* If-None-Match true (no match) decides over If-Modified-Since */
	    {NULL, "\"x\"", 1700000000, 0, true, true, 200},
	    {"\"x\"", "\"abc\"", 0, 0, true, true, 412},
	};
	(void)state;
	for (size_t i = 0; i < NB_ARRAY_SIZE(cases); i++) {
		struct nb_s3_cond c = {cases[i].im, cases[i].inm, cases[i].ims, cases[i].ius};
		int got = nb_s3_cond_eval(&c, cases[i].exists, etag, t * 1000 + 500, cases[i].read);
		if (got != cases[i].want)
			fail_msg("case %zu: %d want %d", i, got, cases[i].want);
	}
	assert_int_equal(nb_s3_cond_eval(NULL, true, etag, 0, true), 200);
}

static void get_range_and_conditions(void **state)
{
	struct fixture *f = *state;
	struct nb_s3_reader rd;
	struct nb_s3_range rg = {NB_S3_RANGE_FROM_TO, 2, 5};
	struct nb_s3_cond c = {.if_none_match = "\"781e5e245d69b566979b86e28d23f2c7\""};
	char *s;

	assert_int_equal(put(f->s3, "bkt", "digits", "0123456789", NULL), 0);
	assert_int_equal(nb_s3_object_open(f->s3, "bkt", "digits", NULL, ACCT_A, NULL, &rg, &rd),
	                 0);
	assert_true(rd.partial);
	assert_int_equal(rd.offset, 2);
	assert_int_equal(rd.length, 4);
	assert_int_equal(rd.obj.size, 10);
	s = read_reader(&rd);
	assert_string_equal(s, "2345");
	free(s);
	nb_s3_reader_close(&rd);

	rg = (struct nb_s3_range){NB_S3_RANGE_SUFFIX, 0, 3};
	assert_int_equal(nb_s3_object_open(f->s3, "bkt", "digits", NULL, ACCT_A, NULL, &rg, &rd),
	                 0);
	s = read_reader(&rd);
	assert_string_equal(s, "789");
	free(s);
	nb_s3_reader_close(&rd);

	rg = (struct nb_s3_range){NB_S3_RANGE_FROM, 10, 0};
	assert_int_equal(nb_s3_object_open(f->s3, "bkt", "digits", NULL, ACCT_A, NULL, &rg, &rd),
	                 -NB_S3_E_INVALID_RANGE);
	nb_s3_reader_close(&rd);

	/* md5("0123456789") = 781e5e245d69b566979b86e28d23f2c7 */
	assert_int_equal(nb_s3_object_open(f->s3, "bkt", "digits", NULL, ACCT_A, &c, NULL, &rd),
	                 -NB_S3_E_NOT_MODIFIED);
	assert_string_equal(rd.obj.etag, "\"781e5e245d69b566979b86e28d23f2c7\""); /* for the 304 */
	nb_s3_reader_close(&rd);
	c = (struct nb_s3_cond){.if_match = "\"00000000000000000000000000000000\""};
	assert_int_equal(nb_s3_object_open(f->s3, "bkt", "digits", NULL, ACCT_A, &c, NULL, &rd),
	                 -NB_S3_E_PRECONDITION_FAILED);
	nb_s3_reader_close(&rd);
	/* conditions are checked before the range */
	rg = (struct nb_s3_range){NB_S3_RANGE_FROM, 50, 0};
	assert_int_equal(nb_s3_object_open(f->s3, "bkt", "digits", NULL, ACCT_A, &c, &rg, &rd),
	                 -NB_S3_E_PRECONDITION_FAILED);
	nb_s3_reader_close(&rd);

	/* the fd outlives a delete of the object */
	assert_int_equal(nb_s3_object_open(f->s3, "bkt", "digits", NULL, ACCT_A, NULL, NULL, &rd),
	                 0);
	assert_int_equal(nb_s3_object_delete(f->s3, "bkt", "digits", NULL, ACCT_A, NULL), 0);
	s = read_reader(&rd);
	assert_string_equal(s, "0123456789");
	free(s);
	nb_s3_reader_close(&rd);
	assert_int_equal(data_files(f), 0);

	/* conditional write: If-None-Match: * creates only */
	struct nb_s3_cond star = {.if_none_match = "*"};
	struct nb_s3_put_opts o = {
	    .bucket = "bkt", .key = "once", .actor = ACCT_A, .content_length = -1, .cond = &star};
	assert_int_equal(put_opts(f->s3, &o, "first", 5, 0, NULL, NULL), 0);
	assert_int_equal(put_opts(f->s3, &o, "second", 6, 0, NULL, NULL),
	                 -NB_S3_E_PRECONDITION_FAILED);
	assert_content(f->s3, "bkt", "once", NULL, "first");
	struct nb_s3_cond im = {.if_match = "\"8b04d5e3775d298e78455efc5ca404d5\""}; /* "first" */
	o.cond = &im;
	assert_int_equal(put_opts(f->s3, &o, "third", 5, 0, NULL, NULL), 0);
	assert_int_equal(put_opts(f->s3, &o, "fourth", 6, 0, NULL, NULL),
	                 -NB_S3_E_PRECONDITION_FAILED);
	assert_content(f->s3, "bkt", "once", NULL, "third");
	assert_int_equal(tmp_files(f), 0);
	assert_int_equal(data_files(f), 1);
}

/* ---- listing ---- */

static int cmp_bytes(const void *a, const void *b)
{
	const char *x = *(const char *const *)a, *y = *(const char *const *)b;
	size_t nx = strlen(x), ny = strlen(y);
	int c = memcmp(x, y, nx < ny ? nx : ny);

	return c ? c : (nx > ny) - (nx < ny);
}

static void listing_utf8_binary_order(void **state)
{
	struct fixture *f = *state;
	const char *keys[] = {
	    "z",
	    "a",
	    "A",
	    "~",
	    "\x7f",
	    "a\x7f",
	    "ab",
	    "\xc3\xa9", /* é U+00E9 */
	    "e",
	    "\xc2\x80",                 /* U+0080 */
	    "\xe6\x97\xa5\xe6\x9c\xac", /* 日本 */
	    "\xef\xbf\xbd",             /* U+FFFD */
	    "\xf0\x9f\x98\x80",         /* U+1F600 */
	    "\xf4\x8f\xbf\xbf",         /* U+10FFFF */
	    "a/b",
	    "a.b",
	    "a-b",
	    "0",
	    " space",
	    "\t",
	};
	const char *sorted[NB_ARRAY_SIZE(keys)];
	struct nb_s3_list_opts lo = {.max_keys = 1000};
	struct nb_s3_list l;

	for (size_t i = 0; i < NB_ARRAY_SIZE(keys); i++) {
		assert_int_equal(put(f->s3, "bkt", keys[i], keys[i], NULL), 0);
		sorted[i] = keys[i];
	}
	qsort(sorted, NB_ARRAY_SIZE(sorted), sizeof(sorted[0]), cmp_bytes);
	/* spot checks of what byte order means, so the qsort is not the only
	 * oracle */
	assert_string_equal(sorted[0], "\t");
	assert_string_equal(sorted[NB_ARRAY_SIZE(sorted) - 1], "\xf4\x8f\xbf\xbf");

	assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), 0);
	assert_int_equal(l.n_items, NB_ARRAY_SIZE(keys));
	assert_false(l.truncated);
	for (size_t i = 0; i < l.n_items; i++) {
		assert_string_equal(l.items[i].key, sorted[i]);
		assert_int_equal(l.items[i].size, strlen(sorted[i]));
	}
	/* "A" < "a" < "a\x7f" < "ab" < "z" < "~" < "\x7f" < U+0080 < "é" < 日本 */
	for (size_t i = 0; i + 1 < l.n_items; i++)
		assert_true(cmp_bytes(&l.items[i].key, &l.items[i + 1].key) < 0);
	nb_s3_list_clear(&l);

	/* a prefix that stops in the middle of a UTF-8 sequence still
	 * matches bytes */
	lo.prefix = "\xe6\x97";
	assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), 0);
	assert_int_equal(l.n_items, 1);
	assert_string_equal(l.items[0].key, "\xe6\x97\xa5\xe6\x9c\xac");
	nb_s3_list_clear(&l);
}

static void listing_delimiter_prefix(void **state)
{
	struct fixture *f = *state;
	const char *keys[] = {"photos/2024/a.jpg",
	                      "photos/2024/b.jpg",
	                      "photos/2025/c.jpg",
	                      "photos/index.html",
	                      "photos/",
	                      "readme",
	                      "zzz/1",
	                      "zzz/2"};
	struct nb_s3_list_opts lo = {.max_keys = 1000, .delimiter = "/"};
	struct nb_s3_list l;

	for (size_t i = 0; i < NB_ARRAY_SIZE(keys); i++)
		assert_int_equal(put(f->s3, "bkt", keys[i], "x", NULL), 0);

	/* top level */
	assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), 0);
	assert_int_equal(l.n_items, 1);
	assert_string_equal(l.items[0].key, "readme");
	assert_int_equal(l.n_prefixes, 2);
	assert_string_equal(l.prefixes[0], "photos/");
	assert_string_equal(l.prefixes[1], "zzz/");
	nb_s3_list_clear(&l);

	/* one level down */
	lo.prefix = "photos/";
	assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), 0);
	assert_int_equal(l.n_items, 2);
	assert_string_equal(l.items[0].key, "photos/");
	assert_string_equal(l.items[1].key, "photos/index.html");
	assert_int_equal(l.n_prefixes, 2);
	assert_string_equal(l.prefixes[0], "photos/2024/");
	assert_string_equal(l.prefixes[1], "photos/2025/");
	nb_s3_list_clear(&l);

	/* prefix without delimiter: everything under it */
	lo.delimiter = NULL;
	lo.prefix = "photos/2";
	assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), 0);
	assert_int_equal(l.n_items, 3);
	assert_int_equal(l.n_prefixes, 0);
	nb_s3_list_clear(&l);

	/* a multi-character delimiter */
	lo.prefix = NULL;
	lo.delimiter = "20";
	assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), 0);
	assert_int_equal(l.n_prefixes, 1);
	assert_string_equal(l.prefixes[0], "photos/20");
	assert_int_equal(l.n_items, 5);
	nb_s3_list_clear(&l);

	/* paging one entry at a time, prefixes count as entries: V2 tokens */
	const char *want[] = {"photos/", "readme", "zzz/"};
	size_t seen = 0;
	lo = (struct nb_s3_list_opts){.max_keys = 1, .delimiter = "/"};
	char *token = NULL;
	do {
		lo.token = token;
		assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), 0);
		assert_int_equal(l.n_items + l.n_prefixes, 1);
		assert_true(seen < NB_ARRAY_SIZE(want));
		assert_string_equal(l.n_items ? l.items[0].key : l.prefixes[0], want[seen]);
		seen++;
		free(token);
		token = l.next_token ? strdup(l.next_token) : NULL;
		assert_int_equal(l.truncated, seen < NB_ARRAY_SIZE(want));
		nb_s3_list_clear(&l);
	} while (token);
	assert_int_equal(seen, NB_ARRAY_SIZE(want));

	/* the same with V1 markers: NextMarker is the prefix itself */
	seen = 0;
	char *marker = NULL;
	do {
		lo.token = NULL;
		lo.start_after = marker;
		assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), 0);
		assert_int_equal(l.n_items + l.n_prefixes, 1);
		assert_string_equal(l.n_items ? l.items[0].key : l.prefixes[0], want[seen]);
		seen++;
		free(marker);
		marker = l.truncated ? strdup(l.next_marker) : NULL;
		nb_s3_list_clear(&l);
	} while (marker);
	assert_int_equal(seen, NB_ARRAY_SIZE(want));

	/* start-after */
	lo = (struct nb_s3_list_opts){.max_keys = 1000, .start_after = "photos/2025/c.jpg"};
	assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), 0);
	assert_int_equal(l.n_items, 4);
	assert_string_equal(l.items[0].key, "photos/index.html");
	assert_string_equal(l.items[3].key, "zzz/2");
	nb_s3_list_clear(&l);

	/* max-keys 0; a garbage token */
	lo = (struct nb_s3_list_opts){.max_keys = 0};
	assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), 0);
	assert_int_equal(l.n_items, 0);
	nb_s3_list_clear(&l);
	lo = (struct nb_s3_list_opts){.max_keys = 10, .token = "%%%"};
	assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), -NB_S3_E_INVALID_TOKEN);
	nb_s3_list_clear(&l);
}

static void listing_pages_2500_keys(void **state)
{
	struct fixture *f = *state;
	enum { N = 2500 };
	static char keys[N][16];
	static unsigned char seen[N];
	struct nb_s3_list_opts lo = {.max_keys = 5000}; /* capped at 1000 */
	struct nb_s3_list l;
	char *token = NULL;
	size_t pages = 0, total = 0;
	char last[16] = "";

	for (int i = 0; i < N; i++) {
		/* inserted out of order */
		int k = (i * 7919) % N;
		snprintf(keys[k], sizeof(keys[k]), "k%05d", k);
		assert_int_equal(put(f->s3, "bkt", keys[k], "", NULL), 0);
	}
	memset(seen, 0, sizeof(seen));
	do {
		lo.token = token;
		assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), 0);
		pages++;
		assert_true(l.n_items <= 1000);
		for (size_t i = 0; i < l.n_items; i++) {
			int k = (int)strtol(l.items[i].key + 1, NULL, 10);
			assert_string_equal(l.items[i].key, keys[k]);
			assert_int_equal(seen[k], 0);
			seen[k] = 1;
			assert_true(strcmp(last, l.items[i].key) < 0);
			nb_strlcpy(last, l.items[i].key, sizeof(last));
			total++;
		}
		free(token);
		token = NULL;
		if (l.truncated) {
			assert_non_null(l.next_token);
			token = strdup(l.next_token);
		}
		nb_s3_list_clear(&l);
	} while (token);
	assert_int_equal(pages, 3);
	assert_int_equal(total, N);
	for (int i = 0; i < N; i++)
		assert_int_equal(seen[i], 1);

	/* page sizes 1000, 1000, 500 */
	lo = (struct nb_s3_list_opts){.max_keys = 1000, .start_after = "k01999"};
	assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), 0);
	assert_int_equal(l.n_items, 500);
	assert_false(l.truncated);
	assert_string_equal(l.items[0].key, "k02000");
	nb_s3_list_clear(&l);
}

/* ---- versioning ---- */

static void versioning_lifecycle(void **state)
{
	struct fixture *f = *state;
	struct nb_s3_put_result r1, r2, r3;
	struct nb_s3_delete_result dr;
	struct nb_s3_object ob;
	struct nb_s3_list_opts lo = {.max_keys = 1000};
	struct nb_s3_list l;
	char v1[NB_S3_VERSION_ID_SIZE], v2[NB_S3_VERSION_ID_SIZE], dm[NB_S3_VERSION_ID_SIZE];
	uint64_t bytes, objects;

	/* before: the null version */
	assert_int_equal(put(f->s3, "bkt", "doc", "v0", &r1), 0);
	assert_string_equal(r1.version_id, "null");
	assert_int_equal(
	    nb_s3_bucket_set_versioning(f->s3, "bkt", ACCT_A, NB_S3_VERSIONING_ENABLED), 0);
	assert_int_equal(put(f->s3, "bkt", "doc", "v1", &r1), 0);
	assert_int_equal(put(f->s3, "bkt", "doc", "v2-longer", &r2), 0);
	assert_int_equal(strlen(r1.version_id), 32);
	assert_string_not_equal(r1.version_id, r2.version_id);
	nb_strlcpy(v1, r1.version_id, sizeof(v1));
	nb_strlcpy(v2, r2.version_id, sizeof(v2));

	assert_content(f->s3, "bkt", "doc", NULL, "v2-longer");
	assert_content(f->s3, "bkt", "doc", v1, "v1");
	assert_content(f->s3, "bkt", "doc", "null", "v0");
	assert_int_equal(nb_s3_usage(f->s3, ACCT_A, &bytes, &objects), 0);
	assert_int_equal(objects, 3);
	assert_int_equal(bytes, 2 + 2 + 9);

	/* delete: a marker; the key looks gone, the versions stay */
	assert_int_equal(nb_s3_object_delete(f->s3, "bkt", "doc", NULL, ACCT_A, &dr), 0);
	assert_true(dr.delete_marker);
	assert_int_equal(strlen(dr.version_id), 32);
	nb_strlcpy(dm, dr.version_id, sizeof(dm));
	assert_int_equal(nb_s3_object_head(f->s3, "bkt", "doc", NULL, ACCT_A, &ob),
	                 -NB_S3_E_NO_SUCH_KEY);
	assert_true(ob.delete_marker); /* for x-amz-delete-marker */
	assert_string_equal(ob.version_id, dm);
	nb_s3_object_clear(&ob);
	assert_int_equal(nb_s3_object_head(f->s3, "bkt", "doc", dm, ACCT_A, &ob),
	                 -NB_S3_E_METHOD_NOT_ALLOWED);
	nb_s3_object_clear(&ob);
	assert_content(f->s3, "bkt", "doc", v2, "v2-longer");
	assert_int_equal(
	    nb_s3_object_head(f->s3, "bkt", "doc", "0123456789abcdef0123456789abcdef", ACCT_A, &ob),
	    -NB_S3_E_NO_SUCH_VERSION);
	nb_s3_object_clear(&ob);
	assert_int_equal(nb_s3_object_head(f->s3, "bkt", "doc", "../../etc", ACCT_A, &ob),
	                 -NB_S3_E_INVALID_ARGUMENT);
	nb_s3_object_clear(&ob);

	assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), 0);
	assert_int_equal(l.n_items, 0);
	nb_s3_list_clear(&l);

	/* ListObjectVersions: newest first, the marker is latest */
	assert_int_equal(put(f->s3, "bkt", "alpha", "a", &r3), 0);
	assert_int_equal(nb_s3_list_versions(f->s3, "bkt", ACCT_A, &lo, &l), 0);
	assert_int_equal(l.n_items, 5);
	assert_string_equal(l.items[0].key, "alpha");
	assert_true(l.items[0].is_latest);
	assert_string_equal(l.items[1].version_id, dm);
	assert_true(l.items[1].delete_marker);
	assert_true(l.items[1].is_latest);
	assert_string_equal(l.items[2].version_id, v2);
	assert_false(l.items[2].is_latest);
	assert_false(l.items[2].delete_marker);
	assert_string_equal(l.items[2].etag, "\"0977537c974a7a699f04c13c7df02b8b\"");
	assert_string_equal(l.items[3].version_id, v1);
	assert_string_equal(l.items[4].version_id, "null");
	nb_s3_list_clear(&l);

	/* paged two at a time with key-marker / version-id-marker */
	{
		const char *want[] = {r3.version_id, dm, v2, v1, "null"};
		size_t seen = 0;
		char km[64] = "", vm[NB_S3_VERSION_ID_SIZE] = "";
		struct nb_s3_list_opts po = {.max_keys = 2};
		for (;;) {
			po.key_marker = *km ? km : NULL;
			po.version_id_marker = *vm ? vm : NULL;
			assert_int_equal(nb_s3_list_versions(f->s3, "bkt", ACCT_A, &po, &l), 0);
			for (size_t i = 0; i < l.n_items; i++)
				assert_string_equal(l.items[i].version_id, want[seen++]);
			if (!l.truncated) {
				nb_s3_list_clear(&l);
				break;
			}
			nb_strlcpy(km, l.next_marker, sizeof(km));
			nb_strlcpy(vm, l.next_version_id_marker, sizeof(vm));
			nb_s3_list_clear(&l);
		}
		assert_int_equal(seen, 5);
		/* key-marker alone: after every version of that key */
		po = (struct nb_s3_list_opts){.max_keys = 10, .key_marker = "alpha"};
		assert_int_equal(nb_s3_list_versions(f->s3, "bkt", ACCT_A, &po, &l), 0);
		assert_int_equal(l.n_items, 4);
		nb_s3_list_clear(&l);
		po = (struct nb_s3_list_opts){.max_keys = 10, .version_id_marker = "null"};
		assert_int_equal(nb_s3_list_versions(f->s3, "bkt", ACCT_A, &po, &l),
		                 -NB_S3_E_INVALID_ARGUMENT);
		nb_s3_list_clear(&l);
	}

	/* removing the marker by id brings the object back */
	assert_int_equal(nb_s3_object_delete(f->s3, "bkt", "doc", dm, ACCT_A, &dr), 0);
	assert_true(dr.delete_marker);
	assert_content(f->s3, "bkt", "doc", NULL, "v2-longer");
	/* removing the latest version by id: the one before becomes latest */
	assert_int_equal(nb_s3_object_delete(f->s3, "bkt", "doc", v2, ACCT_A, &dr), 0);
	assert_false(dr.delete_marker);
	assert_content(f->s3, "bkt", "doc", NULL, "v1");
	assert_int_equal(nb_s3_object_head(f->s3, "bkt", "doc", NULL, ACCT_A, &ob), 0);
	assert_string_equal(ob.version_id, v1);
	assert_true(ob.is_latest);
	nb_s3_object_clear(&ob);
	/* deleting a version that is not there succeeds (S3: 204) */
	assert_int_equal(nb_s3_object_delete(f->s3, "bkt", "doc", v2, ACCT_A, &dr), 0);

	/* suspended: new writes are the null version, replacing it */
	assert_int_equal(
	    nb_s3_bucket_set_versioning(f->s3, "bkt", ACCT_A, NB_S3_VERSIONING_SUSPENDED), 0);
	assert_int_equal(put(f->s3, "bkt", "doc", "s1", &r3), 0);
	assert_string_equal(r3.version_id, "null");
	assert_content(f->s3, "bkt", "doc", "null", "s1"); /* the old null (v0) is gone */
	assert_int_equal(put(f->s3, "bkt", "doc", "s2", &r3), 0);
	assert_content(f->s3, "bkt", "doc", NULL, "s2");
	assert_content(f->s3, "bkt", "doc", v1, "v1"); /* real versions stay */
	lo.prefix = "doc";
	assert_int_equal(nb_s3_list_versions(f->s3, "bkt", ACCT_A, &lo, &l), 0);
	assert_int_equal(l.n_items, 2);
	assert_string_equal(l.items[0].version_id, "null");
	assert_string_equal(l.items[1].version_id, v1);
	nb_s3_list_clear(&l);
	/* delete while suspended: a null delete marker replaces the null version */
	assert_int_equal(nb_s3_object_delete(f->s3, "bkt", "doc", NULL, ACCT_A, &dr), 0);
	assert_true(dr.delete_marker);
	assert_string_equal(dr.version_id, "null");
	assert_int_equal(nb_s3_list_versions(f->s3, "bkt", ACCT_A, &lo, &l), 0);
	assert_int_equal(l.n_items, 2);
	assert_true(l.items[0].delete_marker);
	assert_string_equal(l.items[0].version_id, "null");
	nb_s3_list_clear(&l);
	/* usage followed every step: v1 and alpha remain */
	assert_int_equal(nb_s3_usage(f->s3, ACCT_A, &bytes, &objects), 0);
	assert_int_equal(objects, 2);
	assert_int_equal(bytes, 3);
	assert_int_equal(data_files(f), 2);
}

/* ---- multipart ---- */

static char *pattern(size_t n, int kind)
{
	char *b = malloc(n);

	assert_non_null(b);
	for (size_t i = 0; i < n; i++)
		b[i] = kind == 0 ? (char)(i % 251) : 'b';
	return b;
}

static int upload_part(struct nb_s3 *s3, const char *key, const char *uid, uint32_t n,
                       const char *data, size_t len, struct nb_s3_put_result *res)
{
	struct nb_s3_part_opts o = {.bucket = "bkt",
	                            .key = key,
	                            .upload_id = uid,
	                            .part_number = n,
	                            .actor = ACCT_A,
	                            .content_length = (int64_t)len};
	struct nb_s3_put *p;
	int r = nb_s3_part_begin(s3, &o, &p);

	if (r < 0)
		return r;
	for (size_t off = 0; off < len; off += 65536) {
		size_t c = len - off < 65536 ? len - off : 65536;
		r = nb_s3_put_write(p, data + off, c);
		if (r < 0) {
			nb_s3_put_abort(p);
			return r;
		}
	}
	return nb_s3_put_commit(p, NULL, res);
}

static void multipart_complete_etag(void **state)
{
	struct fixture *f = *state;
	char *p1 = pattern(5 * MIB, 0), *p2 = pattern(5 * MIB, 1);
	struct nb_s3_put_result r1, r2, r3, done;
	struct nb_s3_put_opts o = {.bucket = "bkt",
	                           .key = "big.bin",
	                           .actor = ACCT_A,
	                           .meta = {.content_type = "application/x-big"}};
	char uid[NB_S3_UPLOAD_ID_SIZE];
	struct nb_s3_parts parts;
	struct nb_s3_reader rd;
	uint64_t bytes, objects;

	assert_int_equal(nb_s3_mpu_create(f->s3, &o, uid), 0);
	assert_int_equal(strlen(uid), 32);
	/* uploaded out of order; part 2 twice (the second replaces) */
	assert_int_equal(upload_part(f->s3, "big.bin", uid, 3, "tail", 4, &r3), 0);
	assert_int_equal(upload_part(f->s3, "big.bin", uid, 2, "junk", 4, &r2), 0);
	assert_int_equal(upload_part(f->s3, "big.bin", uid, 2, p2, 5 * MIB, &r2), 0);
	assert_int_equal(upload_part(f->s3, "big.bin", uid, 1, p1, 5 * MIB, &r1), 0);
	assert_string_equal(r1.etag, "\"4c28640dc8df1933aaea192100d50ae0\"");
	assert_string_equal(r2.etag, "\"74843a3ab193a389bced899402d99d5f\"");
	assert_string_equal(r3.etag, "\"7aea2552dfe7eb84b9443b6fc9ba6e01\"");
	assert_int_equal(data_files(f), 3); /* the junk part 2 is gone */
	assert_int_equal(nb_s3_usage(f->s3, ACCT_A, &bytes, &objects), 0);
	assert_int_equal(bytes, 10 * MIB + 4); /* parts count toward bytes */
	assert_int_equal(objects, 0);

	/* ListParts, two per page */
	assert_int_equal(nb_s3_mpu_list_parts(f->s3, "bkt", "big.bin", uid, ACCT_A, 0, 2, &parts),
	                 0);
	assert_int_equal(parts.n, 2);
	assert_true(parts.truncated);
	assert_int_equal(parts.next_marker, 2);
	assert_int_equal(parts.parts[0].number, 1);
	assert_int_equal(parts.parts[0].size, 5 * MIB);
	assert_string_equal(parts.upload.content_type, "application/x-big");
	nb_s3_parts_clear(&parts);
	assert_int_equal(nb_s3_mpu_list_parts(f->s3, "bkt", "big.bin", uid, ACCT_A, 2, 2, &parts),
	                 0);
	assert_int_equal(parts.n, 1);
	assert_false(parts.truncated);
	assert_int_equal(parts.parts[0].number, 3);
	nb_s3_parts_clear(&parts);

	struct nb_s3_complete_part list[] = {{1, r1.etag}, {2, r2.etag}, {3, r3.etag + 1}};
	list[2].etag = "7aea2552dfe7eb84b9443b6fc9ba6e01"; /* unquoted is fine */
	assert_int_equal(
	    nb_s3_mpu_complete(f->s3, "bkt", "big.bin", uid, ACCT_A, list, 3, NULL, NULL, &done),
	    0);
	/* md5 of the three binary md5s, "-3" (hashlib) */
	assert_string_equal(done.etag, "\"aa3fb4a04aabb1fba4488de29ccb4245-3\"");
	assert_int_equal(done.size, 10 * MIB + 4);

	assert_int_equal(nb_s3_object_open(f->s3, "bkt", "big.bin", NULL, ACCT_A, NULL, NULL, &rd),
	                 0);
	assert_int_equal(rd.length, 10 * MIB + 4);
	assert_int_equal(rd.obj.parts, 3);
	assert_string_equal(rd.obj.content_type, "application/x-big");
	{
		char *all = read_reader(&rd);
		assert_memory_equal(all, p1, 5 * MIB);
		assert_memory_equal(all + 5 * MIB, p2, 5 * MIB);
		assert_memory_equal(all + 10 * MIB, "tail", 4);
		free(all);
	}
	nb_s3_reader_close(&rd);
	/* the parts' files are gone, one data file remains; usage moved from
	 * parts to the object */
	assert_int_equal(data_files(f), 1);
	assert_int_equal(tmp_files(f), 0);
	assert_int_equal(nb_s3_usage(f->s3, ACCT_A, &bytes, &objects), 0);
	assert_int_equal(bytes, 10 * MIB + 4);
	assert_int_equal(objects, 1);
	assert_int_equal(nb_s3_mpu_list_parts(f->s3, "bkt", "big.bin", uid, ACCT_A, 0, 10, &parts),
	                 -NB_S3_E_NO_SUCH_UPLOAD);
	nb_s3_parts_clear(&parts);
	free(p1);
	free(p2);
}

static void multipart_rules(void **state)
{
	struct fixture *f = *state;
	char *big = pattern(5 * MIB, 1);
	struct nb_s3_put_result r1, r2, r3;
	struct nb_s3_put_opts o = {.bucket = "bkt", .key = "mp", .actor = ACCT_A};
	char uid[NB_S3_UPLOAD_ID_SIZE];
	struct nb_s3_object ob;

	assert_int_equal(nb_s3_mpu_create(f->s3, &o, uid), 0);
	assert_int_equal(upload_part(f->s3, "mp", uid, 1, "small", 5, &r1), 0);
	assert_int_equal(upload_part(f->s3, "mp", uid, 2, big, 5 * MIB, &r2), 0);
	assert_int_equal(upload_part(f->s3, "mp", uid, 3, "end", 3, &r3), 0);
	assert_int_equal(upload_part(f->s3, "mp", uid, 0, "x", 1, NULL), -NB_S3_E_INVALID_ARGUMENT);
	assert_int_equal(upload_part(f->s3, "mp", uid, 10001, "x", 1, NULL),
	                 -NB_S3_E_INVALID_ARGUMENT);
	assert_int_equal(
	    upload_part(f->s3, "mp", "0123456789abcdef0123456789abcdef", 1, "x", 1, NULL),
	    -NB_S3_E_NO_SUCH_UPLOAD);
	assert_int_equal(upload_part(f->s3, "other-key", uid, 1, "x", 1, NULL),
	                 -NB_S3_E_NO_SUCH_UPLOAD);

	struct {
		struct nb_s3_complete_part parts[3];
		size_t n;
		int want;
	} cases[] = {
	    /* part 1 is below 5 MiB and not last */
	    {{{1, r1.etag}, {2, r2.etag}, {3, r3.etag}}, 3, -NB_S3_E_ENTITY_TOO_SMALL},
	    {{{2, r2.etag}, {1, r1.etag}}, 2, -NB_S3_E_INVALID_PART_ORDER},
	    {{{2, r2.etag}, {2, r2.etag}}, 2, -NB_S3_E_INVALID_PART_ORDER},
	    {{{2, r3.etag}, {3, r3.etag}}, 2, -NB_S3_E_INVALID_PART}, /* wrong etag */
	    {{{2, r2.etag}, {4, r3.etag}}, 2, -NB_S3_E_INVALID_PART}, /* missing */
	    {{{2, "\"not-an-etag\""}}, 1, -NB_S3_E_INVALID_PART},
	};
	for (size_t i = 0; i < NB_ARRAY_SIZE(cases); i++) {
		int r = nb_s3_mpu_complete(f->s3, "bkt", "mp", uid, ACCT_A, cases[i].parts,
		                           cases[i].n, NULL, NULL, NULL);
		if (r != cases[i].want)
			fail_msg("case %zu: %d (%s) want %d", i, r, nb_s3_err_code(r),
			         cases[i].want);
	}
	assert_string_equal(nb_s3_err_code(-NB_S3_E_ENTITY_TOO_SMALL), "EntityTooSmall");
	assert_string_equal(nb_s3_err_code(-NB_S3_E_INVALID_PART_ORDER), "InvalidPartOrder");
	assert_string_equal(nb_s3_err_code(-NB_S3_E_INVALID_PART), "InvalidPart");
	/* nothing became visible, nothing leaked */
	assert_int_equal(nb_s3_object_head(f->s3, "bkt", "mp", NULL, ACCT_A, &ob),
	                 -NB_S3_E_NO_SUCH_KEY);
	nb_s3_object_clear(&ob);
	assert_int_equal(tmp_files(f), 0);
	assert_int_equal(data_files(f), 3);

	/* a subset is fine: the small last part, unlisted parts dropped */
	struct nb_s3_complete_part ok[] = {{2, r2.etag}, {3, r3.etag}};
	struct nb_s3_put_result done;
	assert_int_equal(
	    nb_s3_mpu_complete(f->s3, "bkt", "mp", uid, ACCT_A, ok, 2, NULL, NULL, &done), 0);
	assert_true(strstr(done.etag, "-2\"") != NULL);
	assert_int_equal(done.size, 5 * MIB + 3);
	assert_int_equal(data_files(f), 1);
	/* a single part is a valid upload of any size */
	assert_int_equal(nb_s3_mpu_create(f->s3, &o, uid), 0);
	assert_int_equal(upload_part(f->s3, "mp", uid, 1, "one", 3, &r1), 0);
	struct nb_s3_complete_part one[] = {{1, r1.etag}};
	assert_int_equal(
	    nb_s3_mpu_complete(f->s3, "bkt", "mp", uid, ACCT_A, one, 1, NULL, NULL, &done), 0);
	assert_content(f->s3, "bkt", "mp", NULL, "one");
	assert_int_equal(data_files(f), 1); /* the 5 MiB object was replaced */
	free(big);
}

static void multipart_abort_list_expire(void **state)
{
	struct fixture *f = *state;
	struct nb_s3_put_opts o = {.bucket = "bkt", .actor = ACCT_A};
	char u1[NB_S3_UPLOAD_ID_SIZE], u2[NB_S3_UPLOAD_ID_SIZE], u3[NB_S3_UPLOAD_ID_SIZE];
	struct nb_s3_uploads ul;
	struct nb_s3_list_opts lo = {.max_keys = 1000};
	uint64_t bytes, objects;
	size_t expired;

	o.key = "logs/a";
	assert_int_equal(nb_s3_mpu_create(f->s3, &o, u1), 0);
	o.key = "logs/b";
	assert_int_equal(nb_s3_mpu_create(f->s3, &o, u2), 0);
	o.key = "data/c";
	assert_int_equal(nb_s3_mpu_create(f->s3, &o, u3), 0);
	assert_int_equal(upload_part(f->s3, "logs/a", u1, 1, "aaaa", 4, NULL), 0);
	assert_int_equal(upload_part(f->s3, "logs/a", u1, 2, "aaaa", 4, NULL), 0);
	assert_int_equal(upload_part(f->s3, "logs/b", u2, 1, "bb", 2, NULL), 0);
	assert_int_equal(upload_part(f->s3, "data/c", u3, 1, "c", 1, NULL), 0);
	assert_int_equal(data_files(f), 4);

	assert_int_equal(nb_s3_mpu_list(f->s3, "bkt", ACCT_A, &lo, &ul), 0);
	assert_int_equal(ul.n, 3);
	assert_string_equal(ul.uploads[0].key, "data/c");
	assert_string_equal(ul.uploads[1].key, "logs/a");
	assert_string_equal(ul.uploads[1].upload_id, u1);
	nb_s3_uploads_clear(&ul);
	lo.prefix = "logs/";
	assert_int_equal(nb_s3_mpu_list(f->s3, "bkt", ACCT_A, &lo, &ul), 0);
	assert_int_equal(ul.n, 2);
	nb_s3_uploads_clear(&ul);
	lo.prefix = NULL;
	lo.delimiter = "/";
	assert_int_equal(nb_s3_mpu_list(f->s3, "bkt", ACCT_A, &lo, &ul), 0);
	assert_int_equal(ul.n, 0);
	assert_int_equal(ul.n_prefixes, 2);
	assert_string_equal(ul.prefixes[1], "logs/");
	nb_s3_uploads_clear(&ul);
	lo = (struct nb_s3_list_opts){.max_keys = 1};
	assert_int_equal(nb_s3_mpu_list(f->s3, "bkt", ACCT_A, &lo, &ul), 0);
	assert_int_equal(ul.n, 1);
	assert_true(ul.truncated);
	assert_string_equal(ul.next_key_marker, "data/c");
	assert_string_equal(ul.next_upload_id_marker, u3);
	nb_s3_uploads_clear(&ul);

	/* abort removes the upload and its parts' files */
	assert_int_equal(nb_s3_mpu_abort(f->s3, "bkt", "logs/a", u1, ACCT_A), 0);
	assert_int_equal(nb_s3_mpu_abort(f->s3, "bkt", "logs/a", u1, ACCT_A),
	                 -NB_S3_E_NO_SUCH_UPLOAD);
	assert_int_equal(data_files(f), 2);
	assert_int_equal(nb_s3_usage(f->s3, ACCT_A, &bytes, &objects), 0);
	assert_int_equal(bytes, 3);
	assert_int_equal(upload_part(f->s3, "logs/a", u1, 3, "x", 1, NULL),
	                 -NB_S3_E_NO_SUCH_UPLOAD);

	/* expiry: nothing is older than an hour; everything is older than 0 */
	assert_int_equal(nb_s3_mpu_expire(f->s3, 3600 * 1000, &expired), 0);
	assert_int_equal(expired, 0);
	assert_int_equal(nb_s3_mpu_expire(f->s3, 0, &expired), 0);
	assert_int_equal(expired, 2);
	assert_int_equal(data_files(f), 0);
	assert_int_equal(nb_s3_usage(f->s3, ACCT_A, &bytes, &objects), 0);
	assert_int_equal(bytes, 0);
	lo = (struct nb_s3_list_opts){.max_keys = 1000};
	assert_int_equal(nb_s3_mpu_list(f->s3, "bkt", ACCT_A, &lo, &ul), 0);
	assert_int_equal(ul.n, 0);
	nb_s3_uploads_clear(&ul);
	assert_int_equal(nb_s3_bucket_delete(f->s3, "bkt", ACCT_A), 0);
}

static void multipart_part_copy(void **state)
{
	struct fixture *f = *state;
	char *big = pattern(6 * MIB, 0);
	struct nb_s3_put_opts po = {
	    .bucket = "bkt", .key = "src", .actor = ACCT_A, .content_length = -1};
	struct nb_s3_put_result r1, r2, done;
	char uid[NB_S3_UPLOAD_ID_SIZE];
	struct nb_s3_range rg = {NB_S3_RANGE_FROM_TO, 0, 5 * MIB - 1};
	struct nb_s3_copy_opts c = {.src_bucket = "bkt", .src_key = "src", .actor = ACCT_A};
	struct nb_s3_part_opts o = {
	    .bucket = "bkt", .key = "dst", .actor = ACCT_A, .part_number = 1};
	struct nb_s3_reader rd;

	assert_int_equal(put_opts(f->s3, &po, big, 6 * MIB, 0, NULL, NULL), 0);
	po.key = "dst";
	assert_int_equal(nb_s3_mpu_create(f->s3, &po, uid), 0);
	o.upload_id = uid;
	assert_int_equal(nb_s3_part_copy(f->s3, &o, &c, &rg, &r1), 0);
	rg = (struct nb_s3_range){NB_S3_RANGE_FROM, 5 * MIB, 0};
	o.part_number = 2;
	assert_int_equal(nb_s3_part_copy(f->s3, &o, &c, &rg, &r2), 0);
	rg = (struct nb_s3_range){NB_S3_RANGE_FROM, 6 * MIB, 0};
	assert_int_equal(nb_s3_part_copy(f->s3, &o, &c, &rg, NULL), -NB_S3_E_INVALID_RANGE);
	struct nb_s3_complete_part list[] = {{1, r1.etag}, {2, r2.etag}};
	assert_int_equal(
	    nb_s3_mpu_complete(f->s3, "bkt", "dst", uid, ACCT_A, list, 2, NULL, NULL, &done), 0);
	assert_int_equal(nb_s3_object_open(f->s3, "bkt", "dst", NULL, ACCT_A, NULL, NULL, &rd), 0);
	{
		char *all = read_reader(&rd);
		assert_int_equal(rd.length, 6 * MIB);
		assert_memory_equal(all, big, 6 * MIB);
		free(all);
	}
	nb_s3_reader_close(&rd);
	free(big);
}

/* Objects of a declared length up to NB_S3_INLINE_MAX: no file, the bytes
 * in the row, everything else as for any object. */
static void small_objects_live_in_their_row(void **state)
{
	struct fixture *f = *state;
	char *small = pattern(4096, 0), *edge = pattern(NB_S3_INLINE_MAX, 0),
	     *over = pattern(NB_S3_INLINE_MAX + 1, 0), *big = pattern(5 * MIB, 0);
	struct nb_s3_put_opts po = {.bucket = "bkt", .actor = ACCT_A};
	struct nb_s3_put_result res, v1, v2, r1, r2, done;
	struct nb_s3_reader rd;
	struct nb_s3_range rg = {NB_S3_RANGE_FROM_TO, 100, 199};
	char uid[NB_S3_UPLOAD_ID_SIZE];

	po.key = "small";
	po.content_length = 4096;
	assert_int_equal(put_opts(f->s3, &po, small, 4096, 1000, NULL, &res), 0);
	assert_int_equal(data_files(f), 0);
	assert_int_equal(tmp_files(f), 0);
	/* the etag is the MD5 as always: compare with the same bytes in a file */
	po.key = "small-file";
	po.content_length = -1;
	assert_int_equal(put_opts(f->s3, &po, small, 4096, 0, NULL, &v1), 0);
	assert_int_equal(data_files(f), 1);
	assert_string_equal(res.etag, v1.etag);
	/* whole, a range, HEAD */
	assert_int_equal(nb_s3_object_open(f->s3, "bkt", "small", NULL, ACCT_A, NULL, NULL, &rd), 0);
	assert_non_null(rd.data);
	assert_int_equal(rd.length, 4096);
	assert_memory_equal(rd.data, small, 4096);
	nb_s3_reader_close(&rd);
	assert_int_equal(nb_s3_object_open(f->s3, "bkt", "small", NULL, ACCT_A, NULL, &rg, &rd), 0);
	assert_true(rd.partial);
	assert_int_equal(rd.offset, 100);
	assert_int_equal(rd.length, 100);
	{
		char *s = read_reader(&rd);
		assert_memory_equal(s, small + 100, 100);
		free(s);
	}
	/* ... and as a file for the callers that need one */
	assert_int_equal(nb_s3_reader_fd(&rd), 0);
	{
		char buf[100];
		assert_int_equal(pread(rd.fd, buf, 100, 100), 100);
		assert_memory_equal(buf, small + 100, 100);
	}
	nb_s3_reader_close(&rd);
	/* the limit itself is kept in the row, one byte more is a file */
	po.key = "edge";
	po.content_length = NB_S3_INLINE_MAX;
	assert_int_equal(put_opts(f->s3, &po, edge, NB_S3_INLINE_MAX, 0, NULL, NULL), 0);
	assert_int_equal(data_files(f), 1);
	po.key = "over";
	po.content_length = NB_S3_INLINE_MAX + 1;
	assert_int_equal(put_opts(f->s3, &po, over, NB_S3_INLINE_MAX + 1, 0, NULL, NULL), 0);
	assert_int_equal(data_files(f), 2);
	/* a body shorter or longer than declared fails as for a file */
	{
		struct nb_s3_put *p;
		po.key = "short";
		po.content_length = 10;
		assert_int_equal(nb_s3_put_begin(f->s3, &po, &p), 0);
		assert_int_equal(nb_s3_put_write(p, "abc", 3), 0);
		assert_int_equal(nb_s3_put_write(p, "0123456789", 10), -NB_S3_E_INCOMPLETE_BODY);
		assert_int_equal(nb_s3_put_commit(p, NULL, NULL), -NB_S3_E_INCOMPLETE_BODY);
	}
	/* a copy of a row's object is one too, across buckets as well */
	assert_int_equal(nb_s3_bucket_create(f->s3, "bkt2", ACCT_A, "us-east-1", NULL), 0);
	{
		struct nb_s3_copy_opts c = {.src_bucket = "bkt", .src_key = "small",
		                            .bucket = "bkt2", .key = "copied", .actor = ACCT_A};
		assert_int_equal(nb_s3_object_copy(f->s3, &c, &res, NULL), 0);
		assert_string_equal(res.etag, v1.etag);
	}
	assert_int_equal(data_files(f), 2);
	{
		char *s = get(f->s3, "bkt2", "copied", NULL);
		assert_memory_equal(s, small, 4096);
		free(s);
	}
	/* versions: each its own row and bytes */
	assert_int_equal(nb_s3_bucket_set_versioning(f->s3, "bkt", ACCT_A, NB_S3_VERSIONING_ENABLED),
	                 0);
	po.key = "v";
	po.content_length = 5;
	assert_int_equal(put_opts(f->s3, &po, "one..", 5, 0, NULL, &v1), 0);
	assert_int_equal(put_opts(f->s3, &po, "two..", 5, 0, NULL, &v2), 0);
	assert_content(f->s3, "bkt", "v", v1.version_id, "one..");
	assert_content(f->s3, "bkt", "v", v2.version_id, "two..");
	assert_content(f->s3, "bkt", "v", NULL, "two..");
	assert_int_equal(nb_s3_object_delete(f->s3, "bkt", "v", v2.version_id, ACCT_A, NULL), 0);
	assert_content(f->s3, "bkt", "v", NULL, "one..");
	/* a part copied from one (the last part of an upload may be small) */
	po.key = "mp";
	po.content_length = -1;
	assert_int_equal(nb_s3_mpu_create(f->s3, &po, uid), 0);
	assert_int_equal(upload_part(f->s3, "mp", uid, 1, big, 5 * MIB, &r1), 0);
	{
		struct nb_s3_copy_opts c = {.src_bucket = "bkt", .src_key = "small", .actor = ACCT_A};
		struct nb_s3_part_opts o = {
		    .bucket = "bkt", .key = "mp", .actor = ACCT_A, .part_number = 2, .upload_id = uid};
		assert_int_equal(nb_s3_part_copy(f->s3, &o, &c, &rg, &r2), 0);
	}
	struct nb_s3_complete_part list[] = {{1, r1.etag}, {2, r2.etag}};
	assert_int_equal(
	    nb_s3_mpu_complete(f->s3, "bkt", "mp", uid, ACCT_A, list, 2, NULL, NULL, &done), 0);
	assert_int_equal(nb_s3_object_open(f->s3, "bkt", "mp", NULL, ACCT_A, NULL, NULL, &rd), 0);
	{
		char *all = read_reader(&rd);
		assert_int_equal(rd.length, 5 * MIB + 100);
		assert_memory_equal(all, big, 5 * MIB);
		assert_memory_equal(all + 5 * MIB, small + 100, 100);
		free(all);
	}
	nb_s3_reader_close(&rd);
	/* usage counts them like any object; deleting one leaves nothing */
	{
		uint64_t bytes, objects;
		assert_int_equal(nb_s3_usage(f->s3, ACCT_A, &bytes, &objects), 0);
		assert_true(bytes >= 4096 * 3 + NB_S3_INLINE_MAX);
	}
	assert_int_equal(nb_s3_object_delete(f->s3, "bkt2", "copied", NULL, ACCT_A, NULL), 0);
	assert_int_equal(nb_s3_object_open(f->s3, "bkt2", "copied", NULL, ACCT_A, NULL, NULL, &rd),
	                 -NB_S3_E_NO_SUCH_KEY);
	nb_s3_reader_close(&rd);
	/* and they outlive a reopen (committed with their rows) */
	nb_s3_close(f->s3);
	assert_int_equal(nb_s3_open(f->root, &f->s3), 0);
	{
		char *s = get(f->s3, "bkt", "small", NULL);
		assert_memory_equal(s, small, 4096);
		free(s);
		s = get(f->s3, "bkt", "edge", NULL);
		assert_memory_equal(s, edge, NB_S3_INLINE_MAX);
		free(s);
	}
	free(small);
	free(edge);
	free(over);
	free(big);
}

/* ---- copy ---- */

static void copy_object(void **state)
{
	struct fixture *f = *state;
	json_t *um = json_pack("{s:s}", "k", "v");
	json_t *um2 = json_pack("{s:s}", "new", "yes");
	struct nb_s3_put_opts po = {.bucket = "bkt",
	                            .key = "orig",
	                            .actor = ACCT_A,
	                            .content_length = -1,
	                            .meta = {.content_type = "text/x-orig", .user = um}};
	struct nb_s3_put_result pr, cr;
	struct nb_s3_copy_opts c = {.src_bucket = "bkt",
	                            .src_key = "orig",
	                            .bucket = "bkt",
	                            .key = "copy",
	                            .actor = ACCT_A};
	struct nb_s3_object ob;
	char srcv[NB_S3_VERSION_ID_SIZE];

	assert_int_equal(put_opts(f->s3, &po, "original data", 13, 0, NULL, &pr), 0);
	assert_int_equal(nb_s3_bucket_create(f->s3, "bkt2", ACCT_A, "us-east-1", NULL), 0);
	assert_int_equal(nb_s3_bucket_create(f->s3, "theirs", ACCT_B, "us-east-1", NULL), 0);

	/* COPY directive: data and metadata */
	assert_int_equal(nb_s3_object_copy(f->s3, &c, &cr, srcv), 0);
	assert_string_equal(cr.etag, pr.etag);
	assert_string_equal(srcv, "null");
	assert_int_equal(nb_s3_object_head(f->s3, "bkt", "copy", NULL, ACCT_A, &ob), 0);
	assert_string_equal(ob.content_type, "text/x-orig");
	assert_string_equal(json_string_value(json_object_get(ob.user_meta, "k")), "v");
	assert_int_equal(ob.size, 13);
	nb_s3_object_clear(&ob);
	assert_content(f->s3, "bkt", "copy", NULL, "original data");

	/* REPLACE directive, across buckets of the same owner */
	c.bucket = "bkt2";
	c.replace_meta = true;
	c.meta = (struct nb_s3_meta){.content_type = "text/x-new", .user = um2};
	assert_int_equal(nb_s3_object_copy(f->s3, &c, &cr, NULL), 0);
	assert_int_equal(nb_s3_object_head(f->s3, "bkt2", "copy", NULL, ACCT_A, &ob), 0);
	assert_string_equal(ob.content_type, "text/x-new");
	assert_null(json_object_get(ob.user_meta, "k"));
	assert_string_equal(json_string_value(json_object_get(ob.user_meta, "new")), "yes");
	nb_s3_object_clear(&ob);

	/* onto itself: only with REPLACE */
	c = (struct nb_s3_copy_opts){.src_bucket = "bkt",
	                             .src_key = "orig",
	                             .bucket = "bkt",
	                             .key = "orig",
	                             .actor = ACCT_A};
	assert_int_equal(nb_s3_object_copy(f->s3, &c, &cr, NULL), -NB_S3_E_INVALID_REQUEST);
	c.replace_meta = true;
	c.meta.content_type = "text/x-self";
	assert_int_equal(nb_s3_object_copy(f->s3, &c, &cr, NULL), 0);
	assert_content(f->s3, "bkt", "orig", NULL, "original data");

	/* another account's buckets: no writing into, no reading a private one */
	c = (struct nb_s3_copy_opts){.src_bucket = "bkt",
	                             .src_key = "orig",
	                             .bucket = "theirs",
	                             .key = "x",
	                             .actor = ACCT_A};
	assert_int_equal(nb_s3_object_copy(f->s3, &c, &cr, NULL), -NB_S3_E_ACCESS_DENIED);
	c = (struct nb_s3_copy_opts){.src_bucket = "bkt",
	                             .src_key = "orig",
	                             .bucket = "theirs",
	                             .key = "x",
	                             .actor = ACCT_B};
	assert_int_equal(nb_s3_object_copy(f->s3, &c, &cr, NULL), -NB_S3_E_ACCESS_DENIED);
	assert_int_equal(nb_s3_bucket_set_public_read(f->s3, "bkt", ACCT_A, true), 0);
	assert_int_equal(nb_s3_object_copy(f->s3, &c, &cr, NULL), 0);
	{
		struct nb_s3_reader rd;
		char *s;
		assert_int_equal(
		    nb_s3_object_open(f->s3, "theirs", "x", NULL, ACCT_B, NULL, NULL, &rd), 0);
		s = read_reader(&rd);
		assert_string_equal(s, "original data");
		assert_string_equal(rd.obj.owner, ACCT_B);
		free(s);
		nb_s3_reader_close(&rd);
	}

	/* source conditions; missing source */
	struct nb_s3_cond sc = {.if_match = "\"nope\""};
	c = (struct nb_s3_copy_opts){.src_bucket = "bkt",
	                             .src_key = "orig",
	                             .bucket = "bkt",
	                             .key = "c2",
	                             .actor = ACCT_A,
	                             .src_cond = &sc};
	assert_int_equal(nb_s3_object_copy(f->s3, &c, &cr, NULL), -NB_S3_E_PRECONDITION_FAILED);
	c.src_cond = NULL;
	c.src_key = "missing";
	assert_int_equal(nb_s3_object_copy(f->s3, &c, &cr, NULL), -NB_S3_E_NO_SUCH_KEY);

	/* a copy is independent of its source */
	assert_int_equal(nb_s3_object_delete(f->s3, "bkt", "orig", NULL, ACCT_A, NULL), 0);
	assert_content(f->s3, "bkt", "copy", NULL, "original data");
	assert_content(f->s3, "bkt2", "copy", NULL, "original data");

	/* copy of a given version */
	assert_int_equal(
	    nb_s3_bucket_set_versioning(f->s3, "bkt", ACCT_A, NB_S3_VERSIONING_ENABLED), 0);
	assert_int_equal(put(f->s3, "bkt", "ver", "first", &pr), 0);
	nb_strlcpy(srcv, pr.version_id, sizeof(srcv));
	assert_int_equal(put(f->s3, "bkt", "ver", "second", NULL), 0);
	c = (struct nb_s3_copy_opts){.src_bucket = "bkt",
	                             .src_key = "ver",
	                             .src_version_id = srcv,
	                             .bucket = "bkt",
	                             .key = "ver",
	                             .actor = ACCT_A};
	char got[NB_S3_VERSION_ID_SIZE];
	assert_int_equal(nb_s3_object_copy(f->s3, &c, &cr, got), 0); /* restore a version */
	assert_string_equal(got, srcv);
	assert_string_not_equal(cr.version_id, srcv);
	assert_content(f->s3, "bkt", "ver", NULL, "first");
	/* a delete marker cannot be copied */
	struct nb_s3_delete_result dr;
	assert_int_equal(nb_s3_object_delete(f->s3, "bkt", "ver", NULL, ACCT_A, &dr), 0);
	c.src_version_id = dr.version_id;
	c.key = "ver2";
	assert_int_equal(nb_s3_object_copy(f->s3, &c, &cr, NULL), -NB_S3_E_INVALID_REQUEST);
	c.src_version_id = NULL;
	assert_int_equal(nb_s3_object_copy(f->s3, &c, &cr, NULL), -NB_S3_E_NO_SUCH_KEY);
	assert_int_equal(tmp_files(f), 0);
	json_decref(um);
	json_decref(um2);
}

/* ---- quotas ---- */

static void quotas(void **state)
{
	struct fixture *f = *state;
	struct nb_s3_put_opts o = {.bucket = "bkt",
	                           .actor = ACCT_A,
	                           .content_length = -1,
	                           .quota = {.max_objects = 2, .max_bytes = 10}};
	struct nb_s3_copy_opts c = {.src_bucket = "bkt",
	                            .src_key = "a",
	                            .bucket = "bkt",
	                            .key = "c",
	                            .actor = ACCT_A,
	                            .quota = {.max_objects = 2, .max_bytes = 10}};
	uint64_t bytes, objects;
	char uid[NB_S3_UPLOAD_ID_SIZE];

	o.key = "a";
	assert_int_equal(put_opts(f->s3, &o, "1234", 4, 0, NULL, NULL), 0);
	o.key = "b";
	assert_int_equal(put_opts(f->s3, &o, "1234", 4, 0, NULL, NULL), 0);
	o.key = "c";
	assert_int_equal(put_opts(f->s3, &o, "1", 1, 0, NULL, NULL), -NB_S3_E_QUOTA_EXCEEDED);
	assert_string_equal(nb_s3_err_code(-NB_S3_E_QUOTA_EXCEEDED), "QuotaExceeded");
	assert_int_equal(nb_s3_object_copy(f->s3, &c, NULL, NULL), -NB_S3_E_QUOTA_EXCEEDED);
	/* overwriting does not add an object; bytes: 4 + 6 = 10 fits, 7 not */
	o.key = "b";
	assert_int_equal(put_opts(f->s3, &o, "123456", 6, 0, NULL, NULL), 0);
	assert_int_equal(put_opts(f->s3, &o, "1234567", 7, 0, NULL, NULL), -NB_S3_E_QUOTA_EXCEEDED);
	/* a stream that can never fit stops early */
	{
		struct nb_s3_put *p;
		o.key = "huge";
		assert_int_equal(nb_s3_put_begin(f->s3, &o, &p), 0);
		assert_int_equal(nb_s3_put_write(p, "12345678901", 11), -NB_S3_E_QUOTA_EXCEEDED);
		nb_s3_put_abort(p);
		o.content_length = 11;
		assert_int_equal(nb_s3_put_begin(f->s3, &o, &p), -NB_S3_E_QUOTA_EXCEEDED);
		o.content_length = -1;
	}
	assert_int_equal(nb_s3_usage(f->s3, ACCT_A, &bytes, &objects), 0);
	assert_int_equal(bytes, 10);
	assert_int_equal(objects, 2);
	/* parts count toward bytes */
	o.key = "mp";
	assert_int_equal(nb_s3_mpu_create(f->s3, &o, uid), 0);
	{
		struct nb_s3_part_opts po = {.bucket = "bkt",
		                             .key = "mp",
		                             .upload_id = uid,
		                             .part_number = 1,
		                             .actor = ACCT_A,
		                             .content_length = -1,
		                             .quota = o.quota};
		struct nb_s3_put *p;
		assert_int_equal(nb_s3_part_begin(f->s3, &po, &p), 0);
		assert_int_equal(nb_s3_put_write(p, "x", 1), 0);
		assert_int_equal(nb_s3_put_commit(p, NULL, NULL), -NB_S3_E_QUOTA_EXCEEDED);
	}
	/* deleting frees room; another account has its own counters */
	assert_int_equal(nb_s3_object_delete(f->s3, "bkt", "a", NULL, ACCT_A, NULL), 0);
	o.key = "c";
	assert_int_equal(put_opts(f->s3, &o, "1234", 4, 0, NULL, NULL), 0);
	assert_int_equal(nb_s3_usage(f->s3, ACCT_B, &bytes, &objects), 0);
	assert_int_equal(bytes, 0);
	assert_int_equal(objects, 0);
	assert_int_equal(tmp_files(f), 0);
	assert_int_equal(data_files(f), 2);
}

/* ---- hostile keys ---- */

static void hostile_keys(void **state)
{
	struct fixture *f = *state;
	const char *ok[] = {
	    "../x", "a/../../b",   "/abs",      "..",        ".",         "../../../../etc/passwd",
	    "a//b", "back\\slash", "new\nline", "%2e%2e%2f", "tab\there", "\xf0\x9f\x92\xa9"};
	char longkey[NB_S3_KEY_MAX + 2];
	struct nb_s3_list_opts lo = {.max_keys = 1000};
	struct nb_s3_list l;
	char parent_probe[256];

	for (size_t i = 0; i < NB_ARRAY_SIZE(ok); i++) {
		assert_int_equal(put(f->s3, "bkt", ok[i], ok[i], NULL), 0);
		assert_content(f->s3, "bkt", ok[i], NULL, ok[i]);
	}
	assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), 0);
	assert_int_equal(l.n_items, NB_ARRAY_SIZE(ok));
	nb_s3_list_clear(&l);
	/* nothing was written outside the root, nor anywhere named by a key:
	 * every file is a data file named by a random id */
	snprintf(parent_probe, sizeof(parent_probe), "%s/x", f->dir);
	assert_false(nb_path_exists(parent_probe));
	snprintf(parent_probe, sizeof(parent_probe), "%s/b", f->dir);
	assert_false(nb_path_exists(parent_probe));
	assert_false(nb_path_exists("/abs"));
	assert_int_equal(count_files(f->dir), count_files(f->root));
	assert_int_equal(data_files(f), NB_ARRAY_SIZE(ok));

	/* length: 1024 bytes fine, 1025 not */
	memset(longkey, 'k', sizeof(longkey));
	longkey[NB_S3_KEY_MAX] = '\0';
	assert_int_equal(put(f->s3, "bkt", longkey, "x", NULL), 0);
	longkey[NB_S3_KEY_MAX] = 'k';
	longkey[NB_S3_KEY_MAX + 1] = '\0';
	assert_int_equal(put(f->s3, "bkt", longkey, "x", NULL), -NB_S3_E_KEY_TOO_LONG);
	{
		char two_k[2049];
		memset(two_k, 'n', 2048);
		two_k[2048] = '\0';
		assert_int_equal(put(f->s3, "bkt", two_k, "x", NULL), -NB_S3_E_KEY_TOO_LONG);
	}

	/* invalid UTF-8, NUL, empty */
	const char *bad[] = {"",
	                     "\xff",
	                     "a\xfe",
	                     "\xc0\xaf",         /* overlong '/' */
	                     "\xe0\x80\xaf",     /* overlong */
	                     "\xed\xa0\x80",     /* surrogate */
	                     "\xf4\x90\x80\x80", /* above U+10FFFF */
	                     "\xc3",             /* truncated */
	                     "\xe6\x97",         /* truncated */
	                     "\x80"};            /* lone continuation */
	for (size_t i = 0; i < NB_ARRAY_SIZE(bad); i++) {
		struct nb_s3_object ob;
		assert_int_equal(put(f->s3, "bkt", bad[i], "x", NULL), -NB_S3_E_INVALID_KEY);
		assert_int_equal(nb_s3_object_head(f->s3, "bkt", bad[i], NULL, ACCT_A, &ob),
		                 -NB_S3_E_INVALID_KEY);
		nb_s3_object_clear(&ob);
	}
	assert_int_equal(nb_s3_key_check("a\0b", 3), -NB_S3_E_INVALID_KEY);
	assert_int_equal(nb_s3_key_check("ab", 2), 0);
	assert_int_equal(nb_s3_key_check(longkey, NB_S3_KEY_MAX + 1), -NB_S3_E_KEY_TOO_LONG);
	assert_int_equal(tmp_files(f), 0);
}

/* ---- durability ---- */

static void committed_object_survives_reopen(void **state)
{
	struct fixture *f = *state;
	struct nb_s3 *second;

	assert_int_equal(put(f->s3, "bkt", "keep", "durable", NULL), 0);
	/* one process at a time */
	assert_int_equal(nb_s3_open(f->root, &second), -EBUSY);
	nb_s3_close(f->s3);
	assert_int_equal(nb_s3_open(f->root, &f->s3), 0);
	assert_content(f->s3, "bkt", "keep", NULL, "durable");
	assert_int_equal(nb_s3_schema_version(f->s3), 3);
}

/* The child commits "acked", starts "partial", writes some chunks, tells
 * the parent, and waits to be killed. */
static void crash_child(const char *root, int fd_ready)
{
	struct nb_s3 *s3;
	struct nb_s3_put *p;
	struct nb_s3_put_opts o = {
	    .bucket = "bkt", .key = "partial", .actor = ACCT_A, .content_length = -1};
	char chunk[4096];

	memset(chunk, 'p', sizeof(chunk));
	if (nb_s3_open(root, &s3) < 0)
		_exit(2);
	if (put(s3, "bkt", "acked", "acknowledged", NULL) < 0)
		_exit(3);
	if (nb_s3_put_begin(s3, &o, &p) < 0)
		_exit(4);
	for (int i = 0; i < 16; i++)
		if (nb_s3_put_write(p, chunk, sizeof(chunk)) < 0)
			_exit(5);
	if (write(fd_ready, "r", 1) != 1)
		_exit(6);
	for (;;)
		pause();
}

static void crash_mid_put_leaves_nothing(void **state)
{
	struct fixture *f = *state;
	struct nb_s3_object ob;
	struct nb_s3_sweep_stats st;
	int fds[2], status;
	char c;
	pid_t pid;

	nb_s3_close(f->s3); /* the child takes the root */
	f->s3 = NULL;
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		crash_child(f->root, fds[1]);
	}
	close(fds[1]);
	/* wait for the child's signal: it is in the middle of the put */
	assert_int_equal(read(fds[0], &c, 1), 1);
	close(fds[0]);
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

	/* the temp file of the interrupted put is there, 64 KiB of it */
	assert_int_equal(tmp_files(f), 1);
	/* and an orphan data file, as a crash between rename and commit
	 * leaves one */
	{
		char path[256];
		snprintf(path, sizeof(path), "%s/data/ab/ab0123456789abcdef0123456789abcd",
		         f->root);
		assert_int_equal(nb_write_file(path, "orphan", 6, 0600), 0);
	}
	assert_int_equal(data_files(f), 2); /* "acked" + the orphan */

	/* reopening sweeps both; the acknowledged object is intact */
	assert_int_equal(nb_s3_open(f->root, &f->s3), 0);
	assert_int_equal(tmp_files(f), 0);
	assert_int_equal(data_files(f), 1);
	assert_int_equal(nb_s3_object_head(f->s3, "bkt", "partial", NULL, ACCT_A, &ob),
	                 -NB_S3_E_NO_SUCH_KEY);
	nb_s3_object_clear(&ob);
	assert_content(f->s3, "bkt", "acked", NULL, "acknowledged");

	/* the periodic sweep spares uploads in progress */
	{
		struct nb_s3_put *p;
		struct nb_s3_put_opts o = {
		    .bucket = "bkt", .key = "live", .actor = ACCT_A, .content_length = -1};
		assert_int_equal(nb_s3_put_begin(f->s3, &o, &p), 0);
		assert_int_equal(nb_s3_put_write(p, "abc", 3), 0);
		assert_int_equal(nb_s3_sweep(f->s3, &st), 0);
		assert_int_equal(st.tmp_removed, 0);
		assert_int_equal(st.data_removed, 0);
		assert_int_equal(tmp_files(f), 1);
		assert_int_equal(nb_s3_put_commit(p, NULL, NULL), 0);
		assert_content(f->s3, "bkt", "live", NULL, "abc");
		assert_int_equal(nb_s3_sweep(f->s3, &st), 0);
		assert_int_equal(data_files(f), 2);
	}
}

/* ---- threads ---- */

struct worker {
	struct nb_s3 *s3;
	int id;
	int failures;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < 40; i++) {
		char key[64], val[64];
		char *got;
		snprintf(key, sizeof(key), "t%d/k%03d", w->id, i);
		snprintf(val, sizeof(val), "value %d %d", w->id, i);
		if (put(w->s3, "bkt", key, val, NULL) < 0) {
			w->failures++;
			continue;
		}
		got = get(w->s3, "bkt", key, NULL);
		if (!got || strcmp(got, val) != 0)
			w->failures++;
		free(got);
		if (i % 4 == 3 && nb_s3_object_delete(w->s3, "bkt", key, NULL, ACCT_A, NULL) < 0)
			w->failures++;
		if (i % 10 == 0 && nb_s3_sweep(w->s3, NULL) < 0)
			w->failures++;
	}
	return NULL;
}

static void concurrent_writers(void **state)
{
	struct fixture *f = *state;
	enum { T = 4 };
	pthread_t th[T];
	struct worker w[T];
	struct nb_s3_list_opts lo = {.max_keys = 1000};
	struct nb_s3_list l;
	uint64_t bytes, objects;

	for (int i = 0; i < T; i++) {
		w[i] = (struct worker){.s3 = f->s3, .id = i};
		assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	assert_int_equal(nb_s3_list_objects(f->s3, "bkt", ACCT_A, &lo, &l), 0);
	assert_int_equal(l.n_items, T * 30);
	nb_s3_list_clear(&l);
	assert_int_equal(nb_s3_usage(f->s3, ACCT_A, &bytes, &objects), 0);
	assert_int_equal(objects, T * 30);
	assert_int_equal(data_files(f), T * 30);
	assert_int_equal(tmp_files(f), 0);
}

/* Group commit: writers queued together land in one transaction, each
 * acknowledged, each readable; a member whose commit fails (a failed
 * condition, the quota) fails alone and leaves nothing. */
struct gc_writer {
	struct nb_s3 *s3;
	char key[32], val[48];
	const struct nb_s3_cond *cond;
	uint64_t max_objects;
	int r;
	struct nb_s3_put_result res;
};

static void *gc_writer_main(void *arg)
{
	struct gc_writer *w = arg;
	struct nb_s3_put_opts o = {.bucket = "bkt",
	                           .key = w->key,
	                           .actor = ACCT_A,
	                           .content_length = -1,
	                           .cond = w->cond,
	                           .quota = {.max_objects = w->max_objects}};

	w->r = put_opts(w->s3, &o, w->val, strlen(w->val), 0, NULL, &w->res);
	return NULL;
}

struct gc_completer {
	struct nb_s3 *s3;
	const char *uid, *etag;
	int r;
};

static void *gc_completer_main(void *arg)
{
	struct gc_completer *c = arg;
	struct nb_s3_complete_part part = {.number = 1, .etag = c->etag};
	struct nb_s3_quota q = {.max_objects = 1};
	struct nb_s3_put_result res;

	c->r = nb_s3_mpu_complete(c->s3, "bkt", "gc/mpu", c->uid, ACCT_A, &part, 1, &q, NULL,
	                          &res);
	return NULL;
}

static void group_commit_batches(void **state)
{
	struct fixture *f = *state;
	enum { N = 24, DUP_A = 20, DUP_B = 21, NO_NEW = 22, QUOTA = 23 };
	static const struct nb_s3_cond none_match = {.if_none_match = "*"};
	struct nb_s3_commit_stats st0, st;
	struct gc_writer w[N];
	pthread_t th[N];
	uint64_t bytes, objects;
	struct nb_s3_reader rd;
	int64_t deadline;
	struct nb_s3_put_opts mo = {.bucket = "bkt", .key = "gc/mpu", .actor = ACCT_A};
	struct nb_s3_put_result pr;
	struct gc_completer comp = {.s3 = f->s3};
	struct nb_s3_parts parts;
	char uid[NB_S3_UPLOAD_ID_SIZE];
	pthread_t cth;

	assert_int_equal(put(f->s3, "bkt", "exists", "old", NULL), 0);
	assert_int_equal(nb_s3_mpu_create(f->s3, &mo, uid), 0);
	assert_int_equal(upload_part(f->s3, "gc/mpu", uid, 1, "part one", 8, &pr), 0);
	nb_s3_commit_stats(f->s3, &st0);
	assert_int_equal(st0.batches, 2); /* the put and the part */
	assert_int_equal(st0.members, 2);
	/* a completion over the object quota fails after it took the parts:
	 * its savepoint gives them back, the upload stays */
	comp.uid = uid;
	comp.etag = pr.etag;
	nb_s3_commit_hold(f->s3, true);
	for (int i = 0; i < N; i++) {
		w[i] = (struct gc_writer){.s3 = f->s3};
		snprintf(w[i].key, sizeof(w[i].key), "gc/k%02d", i);
		snprintf(w[i].val, sizeof(w[i].val), "value of writer %d", i);
	}
	/* two writers of one key in one batch: both acknowledged, one wins */
	snprintf(w[DUP_A].key, sizeof(w[DUP_A].key), "gc/dup");
	snprintf(w[DUP_B].key, sizeof(w[DUP_B].key), "gc/dup");
	/* If-None-Match: * on a key that exists: 412, alone */
	snprintf(w[NO_NEW].key, sizeof(w[NO_NEW].key), "exists");
	w[NO_NEW].cond = &none_match;
	/* a quota of 2 objects with 1 already there and 20 more in the batch
	 * ahead of it or not: over it whatever the order */
	w[QUOTA].max_objects = 2;
	for (int i = 0; i < N; i++)
		assert_int_equal(pthread_create(&th[i], NULL, gc_writer_main, &w[i]), 0);
	assert_int_equal(pthread_create(&cth, NULL, gc_completer_main, &comp), 0);
	/* every writer's data is durable and its row queued, none committed */
	deadline = nb_now_ms() + 30000;
	do {
		nb_s3_commit_stats(f->s3, &st);
		if (st.queued < N + 1)
			usleep(1000);
	} while (st.queued < N + 1 && nb_now_ms() < deadline);
	assert_int_equal(st.queued, N + 1);
	assert_int_equal(st.batches, st0.batches);
	assert_int_equal(nb_s3_object_open(f->s3, "bkt", "gc/k00", NULL, ACCT_A, NULL, NULL, &rd),
	                 -NB_S3_E_NO_SUCH_KEY);
	nb_s3_reader_close(&rd);
	assert_int_equal(tmp_files(f), 0); /* all renamed into data/ already */
	nb_s3_commit_hold(f->s3, false);
	for (int i = 0; i < N; i++)
		pthread_join(th[i], NULL);
	pthread_join(cth, NULL);

	nb_s3_commit_stats(f->s3, &st);
	assert_int_equal(st.batches - st0.batches, 1); /* one transaction, one WAL fsync */
	assert_int_equal(st.members - st0.members, N + 1);
	assert_int_equal(st.failed - st0.failed, 3);
	assert_int_equal(comp.r, -NB_S3_E_QUOTA_EXCEEDED);
	assert_null(get(f->s3, "bkt", "gc/mpu", NULL));
	assert_int_equal(nb_s3_mpu_list_parts(f->s3, "bkt", "gc/mpu", uid, ACCT_A, 0, 10, &parts),
	                 0);
	assert_int_equal(parts.n, 1);
	assert_int_equal(parts.parts[0].size, 8);
	nb_s3_parts_clear(&parts);
	assert_int_equal(st.queued, 0);
	for (int i = 0; i < N; i++) {
		if (i == NO_NEW) {
			assert_int_equal(w[i].r, -NB_S3_E_PRECONDITION_FAILED);
			assert_string_equal(w[i].res.etag, "");
			assert_content(f->s3, "bkt", "exists", NULL, "old");
		} else if (i == QUOTA) {
			assert_int_equal(w[i].r, -NB_S3_E_QUOTA_EXCEEDED);
			assert_null(get(f->s3, "bkt", w[i].key, NULL));
		} else {
			assert_int_equal(w[i].r, 0);
			assert_true(w[i].res.etag[0] == '"');
			if (i != DUP_A && i != DUP_B)
				assert_content(f->s3, "bkt", w[i].key, NULL, w[i].val);
		}
	}
	{
		char *dup = get(f->s3, "bkt", "gc/dup", NULL);
		assert_non_null(dup);
		assert_true(!strcmp(dup, w[DUP_A].val) || !strcmp(dup, w[DUP_B].val));
		free(dup);
	}
	/* exists + 20 keys + dup; the failed members' and the replaced dup's
	 * files are gone */
	assert_int_equal(nb_s3_usage(f->s3, ACCT_A, &bytes, &objects), 0);
	assert_int_equal(objects, 1 + 20 + 1);
	assert_int_equal(data_files(f), 1 + 20 + 1 + 1); /* and the part */
	assert_int_equal(tmp_files(f), 0);

	/* and it all survives a reopen */
	nb_s3_close(f->s3);
	assert_int_equal(nb_s3_open(f->root, &f->s3), 0);
	for (int i = 0; i < 20; i++)
		assert_content(f->s3, "bkt", w[i].key, NULL, w[i].val);
	assert_int_equal(data_files(f), 1 + 20 + 1 + 1);
}

static void error_table(void **state)
{
	static const struct {
		int err;
		const char *code;
		int status;
	} cases[] = {
	    {-NB_S3_E_NO_SUCH_BUCKET, "NoSuchBucket", 404},
	    {-NB_S3_E_NO_SUCH_KEY, "NoSuchKey", 404},
	    {-NB_S3_E_NO_SUCH_VERSION, "NoSuchVersion", 404},
	    {-NB_S3_E_NO_SUCH_UPLOAD, "NoSuchUpload", 404},
	    {-NB_S3_E_BUCKET_EXISTS, "BucketAlreadyExists", 409},
	    {-NB_S3_E_BUCKET_OWNED, "BucketAlreadyOwnedByYou", 409},
	    {-NB_S3_E_BUCKET_NOT_EMPTY, "BucketNotEmpty", 409},
	    {-NB_S3_E_PRECONDITION_FAILED, "PreconditionFailed", 412},
	    {-NB_S3_E_NOT_MODIFIED, "NotModified", 304},
	    {-NB_S3_E_METHOD_NOT_ALLOWED, "MethodNotAllowed", 405},
	    {-NB_S3_E_INVALID_ARGUMENT, "InvalidArgument", 400},
	    {-NB_S3_E_SLOW_DOWN, "SlowDown", 503},
	    {-EINVAL, "InvalidArgument", 400},
	    {-EIO, "InternalError", 500},
	    {-NB_S3_E_INTERNAL, "InternalError", 500},
	};
	(void)state;
	for (size_t i = 0; i < NB_ARRAY_SIZE(cases); i++) {
		assert_string_equal(nb_s3_err_code(cases[i].err), cases[i].code);
		assert_int_equal(nb_s3_err_http_status(cases[i].err), cases[i].status);
		assert_true(strlen(nb_s3_err_message(cases[i].err)) > 5);
	}
	for (int e = NB_S3_E_BASE + 1; e < NB_S3_E_END; e++)
		assert_non_null(nb_s3_err_message(-e));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(bucket_name_rules, setup, teardown),
	    cmocka_unit_test_setup_teardown(bucket_lifecycle, setup, teardown),
	    cmocka_unit_test_setup_teardown(access_by_owner, setup, teardown),
	    cmocka_unit_test_setup_teardown(put_get_roundtrip_with_metadata, setup, teardown),
	    cmocka_unit_test_setup_teardown(put_limits_and_metadata_checks, setup, teardown),
	    cmocka_unit_test_setup_teardown(digests_and_checksums, setup, teardown),
	    cmocka_unit_test(range_table),
	    cmocka_unit_test(cond_table),
	    cmocka_unit_test_setup_teardown(get_range_and_conditions, setup, teardown),
	    cmocka_unit_test_setup_teardown(listing_utf8_binary_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(listing_delimiter_prefix, setup, teardown),
	    cmocka_unit_test_setup_teardown(listing_pages_2500_keys, setup, teardown),
	    cmocka_unit_test_setup_teardown(versioning_lifecycle, setup, teardown),
	    cmocka_unit_test_setup_teardown(multipart_complete_etag, setup_disk, teardown),
	    cmocka_unit_test_setup_teardown(multipart_rules, setup, teardown),
	    cmocka_unit_test_setup_teardown(multipart_abort_list_expire, setup, teardown),
	    cmocka_unit_test_setup_teardown(multipart_part_copy, setup, teardown),
	    cmocka_unit_test_setup_teardown(small_objects_live_in_their_row, setup, teardown),
	    cmocka_unit_test_setup_teardown(copy_object, setup_disk, teardown),
	    cmocka_unit_test_setup_teardown(quotas, setup, teardown),
	    cmocka_unit_test_setup_teardown(hostile_keys, setup, teardown),
	    cmocka_unit_test_setup_teardown(committed_object_survives_reopen, setup_disk, teardown),
	    cmocka_unit_test_setup_teardown(crash_mid_put_leaves_nothing, setup_disk, teardown),
	    cmocka_unit_test_setup_teardown(concurrent_writers, setup, teardown),
	    cmocka_unit_test_setup_teardown(group_commit_batches, setup, teardown),
	    cmocka_unit_test(error_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
