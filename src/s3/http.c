/* The S3 protocol layer: routing, SigV4, bodies, XML, errors. Every request
 * runs in its own MHD thread (thread per connection), so engine calls may
 * block (SQLite, fsync). */
#include "s3/http.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "api/chunked.h"
#include "api/http.h"
#include "api/sigv4.h"
#include "api/xml.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/json.h"
#include "common/util.h"
#include "core/secrets.h"
#include "store/store.h"

#define S3_NS "http://s3.amazonaws.com/doc/2006-03-01/"
#define MAX_ARGS 64             /* query parameters of one request */
#define MAX_HDRS 128            /* request headers looked at */
#define DRAIN_MAX (64ull << 20) /* body bytes read after a failure before giving up */
#define SMALL_XML (64u << 10)   /* bucket configuration bodies */
#define SWEEP_EVERY_MS (3600 * 1000)

/* ==== pure helpers ==== */

/* Digits of s[0..n) as a number; false when empty, not digits or too big. */
static bool span_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (!n || n > 19)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return true;
}

int nb_s3http_parse_range(const char *h, struct nb_s3_range *out)
{
	const char *dash, *end;
	uint64_t a = 0, b = 0;
	bool ha, hb;

	if (!out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (!h)
		return 0;
	while (*h == ' ' || *h == '\t')
		h++;
	if (strncasecmp(h, "bytes=", 6))
		return 0;
	h += 6;
	while (*h == ' ')
		h++;
	if (strchr(h, ','))
		return 0; /* several ranges: S3 sends the whole object */
	dash = strchr(h, '-');
	if (!dash)
		return 0;
	end = dash + 1 + strlen(dash + 1);
	while (end > dash + 1 && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	ha = dash > h;
	hb = end > dash + 1;
	if ((ha && !span_u64(h, (size_t)(dash - h), &a)) ||
	    (hb && !span_u64(dash + 1, (size_t)(end - dash - 1), &b)))
		return 0;
	if (ha && hb) {
		out->kind = NB_S3_RANGE_FROM_TO;
		out->first = a;
		out->last = b;
	} else if (ha) {
		out->kind = NB_S3_RANGE_FROM;
		out->first = a;
	} else if (hb) {
		out->kind = NB_S3_RANGE_SUFFIX;
		out->last = b;
	}
	return 0;
}

int64_t nb_s3http_parse_date(const char *s)
{
	static const char *const fmts[] = {
	    "%a, %d %b %Y %H:%M:%S GMT", /* RFC 1123 */
	    "%A, %d-%b-%y %H:%M:%S GMT", /* RFC 850 */
	    "%a %b %e %H:%M:%S %Y",      /* asctime */
	};

	if (!s)
		return -1;
	while (*s == ' ')
		s++;
	for (size_t i = 0; i < NB_ARRAY_SIZE(fmts); i++) {
		struct tm tm;
		const char *end;

		memset(&tm, 0, sizeof(tm));
		end = strptime(s, fmts[i], &tm);
		if (!end)
			continue;
		while (*end == ' ')
			end++;
		if (*end)
			continue;
		return (int64_t)timegm(&tm);
	}
	return -1;
}

void nb_s3http_format_date(int64_t wall_ms, char *out, size_t outsz)
{
	time_t t = (time_t)(wall_ms / 1000);
	struct tm tm;

	if (!outsz)
		return;
	out[0] = '\0';
	if (gmtime_r(&t, &tm))
		strftime(out, outsz, "%a, %d %b %Y %H:%M:%S GMT", &tm);
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

int nb_s3http_unescape(const char *in, size_t len, char **out, size_t *outlen)
{
	char *o;
	size_t n = 0;

	if (!in || !out)
		return -EINVAL;
	o = malloc(len + 1);
	if (!o)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		if (in[i] != '%') {
			o[n++] = in[i];
			continue;
		}
		if (i + 2 >= len || hexval(in[i + 1]) < 0 || hexval(in[i + 2]) < 0) {
			free(o);
			return -EINVAL;
		}
		o[n++] = (char)(hexval(in[i + 1]) << 4 | hexval(in[i + 2]));
		i += 2;
	}
	o[n] = '\0';
	*out = o;
	if (outlen)
		*outlen = n;
	return 0;
}

int nb_s3http_url_encode(struct nb_buf *out, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p = (const unsigned char *)s;
	int r = 0;

	for (; s && *p && !r; p++) {
		if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~' || *p == '/') {
			r = nb_buf_append(out, p, 1);
		} else {
			char esc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			r = nb_buf_append(out, esc, 3);
		}
	}
	return r;
}

bool nb_s3http_vhost_bucket(const char *host, const char *domain, char *out, size_t outsz)
{
	size_t hl, dl;
	const char *colon;

	if (!host || !domain || !*domain || !outsz || host[0] == '[')
		return false;
	colon = strrchr(host, ':');
	hl = colon ? (size_t)(colon - host) : strlen(host);
	while (hl && host[hl - 1] == '.')
		hl--; /* a fully qualified name's final dot */
	dl = strlen(domain);
	if (hl <= dl + 1 || host[hl - dl - 1] != '.' || strncasecmp(host + hl - dl, domain, dl))
		return false;
	hl -= dl + 1;
	if (hl >= outsz)
		return false;
	for (size_t i = 0; i < hl; i++)
		out[i] = (char)tolower((unsigned char)host[i]);
	out[hl] = '\0';
	return true;
}

/* ---- XML reader ---- */

struct xr {
	const char *p, *end;
	char names[NB_S3HTTP_XML_DEPTH][128];
	const char *path[NB_S3HTTP_XML_DEPTH];
	bool children[NB_S3HTTP_XML_DEPTH];
	int depth;
	bool seen_root;
	struct nb_buf text;
};

static bool xr_starts(const struct xr *x, const char *s)
{
	size_t n = strlen(s);

	return (size_t)(x->end - x->p) >= n && !memcmp(x->p, s, n);
}

/* Skips to just past the terminator; false when it never comes. */
static bool xr_skip_past(struct xr *x, const char *term)
{
	size_t n = strlen(term);

	for (const char *q = x->p; (size_t)(x->end - q) >= n; q++)
		if (!memcmp(q, term, n)) {
			x->p = q + n;
			return true;
		}
	return false;
}

static bool is_xml_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int put_utf8(struct nb_buf *b, uint32_t cp)
{
	unsigned char u[4];
	size_t n;

	if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return -EINVAL;
	if (cp < 0x80) {
		u[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (unsigned char)(0xC0 | cp >> 6);
		u[1] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (unsigned char)(0xE0 | cp >> 12);
		u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		u[2] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		u[0] = (unsigned char)(0xF0 | cp >> 18);
		u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
		u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		u[3] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 4;
	}
	return nb_buf_append(b, u, n);
}

/* Appends text s[0..n) with its references decoded. */
static int xr_text(struct nb_buf *b, const char *s, size_t n)
{
	static const struct {
		const char *name;
		char c;
	} ents[] = {{"lt", '<'}, {"gt", '>'}, {"amp", '&'}, {"quot", '"'}, {"apos", '\''}};
	size_t i = 0;
	int r = 0;

	while (i < n && !r) {
		const char *semi;
		size_t start = i;

		while (i < n && s[i] != '&')
			i++;
		if (i > start)
			r = nb_buf_append(b, s + start, i - start);
		if (r || i >= n)
			break;
		semi = memchr(s + i, ';', n - i < 12 ? n - i : 12);
		if (!semi)
			return -EINVAL;
		if (s[i + 1] == '#') {
			const char *d = s + i + 2;
			uint32_t cp = 0;
			int base = 10, digits = 0;

			if (d < semi && (*d == 'x' || *d == 'X')) {
				base = 16;
				d++;
			}
			for (; d < semi; d++, digits++) {
				int v = base == 16 ? hexval(*d)
				                   : (*d >= '0' && *d <= '9' ? *d - '0' : -1);
				if (v < 0 || cp > 0x10FFFF)
					return -EINVAL;
				cp = cp * (uint32_t)base + (uint32_t)v;
			}
			if (!digits)
				return -EINVAL;
			r = put_utf8(b, cp);
		} else {
			size_t en = (size_t)(semi - s) - i - 1;
			size_t k;

			for (k = 0; k < NB_ARRAY_SIZE(ents); k++)
				if (strlen(ents[k].name) == en &&
				    !memcmp(s + i + 1, ents[k].name, en))
					break;
			if (k == NB_ARRAY_SIZE(ents))
				return -EINVAL;
			r = nb_buf_append(b, &ents[k].c, 1);
		}
		i = (size_t)(semi - s) + 1;
	}
	return r;
}

/* Reads a tag name at x->p into out (namespace prefix dropped). */
static int xr_name(struct xr *x, char *out, size_t outsz)
{
	const char *s = x->p, *local;

	while (x->p < x->end && !is_xml_space(*x->p) && *x->p != '>' && *x->p != '/' &&
	       *x->p != '=')
		x->p++;
	if (x->p == s)
		return -EINVAL;
	local = memchr(s, ':', (size_t)(x->p - s));
	local = local ? local + 1 : s;
	if (local == x->p || (size_t)(x->p - local) >= outsz)
		return -EINVAL;
	memcpy(out, local, (size_t)(x->p - local));
	out[x->p - local] = '\0';
	return 0;
}

/* Attributes up to '>' or "/>"; *empty when the element closed itself. */
static int xr_attrs(struct xr *x, bool *empty)
{
	*empty = false;
	for (;;) {
		while (x->p < x->end && is_xml_space(*x->p))
			x->p++;
		if (x->p >= x->end)
			return -EINVAL;
		if (*x->p == '>') {
			x->p++;
			return 0;
		}
		if (*x->p == '/') {
			if (x->p + 1 >= x->end || x->p[1] != '>')
				return -EINVAL;
			x->p += 2;
			*empty = true;
			return 0;
		}
		/* name = "value" */
		while (x->p < x->end && !is_xml_space(*x->p) && *x->p != '=' && *x->p != '>')
			x->p++;
		while (x->p < x->end && is_xml_space(*x->p))
			x->p++;
		if (x->p >= x->end || *x->p != '=')
			return -EINVAL;
		x->p++;
		while (x->p < x->end && is_xml_space(*x->p))
			x->p++;
		if (x->p >= x->end || (*x->p != '"' && *x->p != '\''))
			return -EINVAL;
		{
			const char *q = memchr(x->p + 1, *x->p, (size_t)(x->end - x->p - 1));
			if (!q)
				return -EINVAL;
			x->p = q + 1;
		}
	}
}

static int xr_close(struct xr *x, nb_s3http_xml_fn fn, void *ctx)
{
	int d = x->depth - 1;
	int r =
	    fn(ctx, x->path, x->depth, x->children[d] ? NULL : (x->text.data ? x->text.data : ""),
	       x->children[d] ? 0 : x->text.len);

	nb_buf_reset(&x->text);
	x->depth--;
	return r;
}

int nb_s3http_xml_walk(const char *xml, size_t len, nb_s3http_xml_fn fn, void *ctx)
{
	struct xr *x;
	int r = 0;

	if (!xml || !fn)
		return -EINVAL;
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	x->p = xml;
	x->end = xml + len;
	nb_buf_init(&x->text, len + 1);
	if (xr_starts(x, "\xEF\xBB\xBF"))
		x->p += 3;
	for (int i = 0; i < NB_S3HTTP_XML_DEPTH; i++)
		x->path[i] = x->names[i];
	while (x->p < x->end && !r) {
		if (*x->p != '<') {
			const char *s = x->p;
			const char *lt = memchr(s, '<', (size_t)(x->end - s));
			const char *e = lt ? lt : x->end;

			if (!x->depth) {
				for (; s < e; s++)
					if (!is_xml_space(*s))
						r = -EINVAL;
			} else {
				r = xr_text(&x->text, s, (size_t)(e - s));
			}
			x->p = e;
			continue;
		}
		if (xr_starts(x, "<?")) {
			if (!xr_skip_past(x, "?>"))
				r = -EINVAL;
		} else if (xr_starts(x, "<!--")) {
			if (!xr_skip_past(x, "-->"))
				r = -EINVAL;
		} else if (xr_starts(x, "<![CDATA[")) {
			const char *s = x->p + 9;
			x->p = s;
			if (!x->depth || !xr_skip_past(x, "]]>"))
				r = -EINVAL;
			else
				r = nb_buf_append(&x->text, s, (size_t)(x->p - 3 - s));
		} else if (xr_starts(x, "<!")) {
			r = -EINVAL; /* DOCTYPE and friends: never */
		} else if (xr_starts(x, "</")) {
			char name[128];

			x->p += 2;
			r = xr_name(x, name, sizeof(name));
			while (!r && x->p < x->end && is_xml_space(*x->p))
				x->p++;
			if (!r && (x->p >= x->end || *x->p != '>' || !x->depth ||
			           strcmp(name, x->names[x->depth - 1])))
				r = -EINVAL;
			if (!r) {
				x->p++;
				r = xr_close(x, fn, ctx);
			}
		} else {
			bool empty;

			x->p++;
			if (x->depth == NB_S3HTTP_XML_DEPTH) {
				r = -E2BIG;
				break;
			}
			if (!x->depth && x->seen_root) {
				r = -EINVAL; /* a second root */
				break;
			}
			if (x->depth)
				x->children[x->depth - 1] = true;
			r = xr_name(x, x->names[x->depth], sizeof(x->names[0]));
			if (!r)
				r = xr_attrs(x, &empty);
			if (r)
				break;
			x->children[x->depth] = false;
			x->depth++;
			x->seen_root = true;
			nb_buf_reset(&x->text);
			if (empty)
				r = xr_close(x, fn, ctx);
		}
	}
	if (!r && (x->depth || !x->seen_root))
		r = -EINVAL;
	nb_buf_free(&x->text);
	free(x);
	return r;
}

/* ==== requests ==== */

enum s3_body { BODY_NONE, BODY_XML, BODY_DATA };

enum s3_op {
	OP_NONE,
	OP_LIST_BUCKETS,
	OP_CREATE_BUCKET,
	OP_DELETE_BUCKET,
	OP_HEAD_BUCKET,
	OP_GET_LOCATION,
	OP_GET_VERSIONING,
	OP_PUT_VERSIONING,
	OP_GET_BUCKET_ACL,
	OP_PUT_BUCKET_ACL,
	OP_NO_CONFIG, /* a bucket configuration nubo never has: its 404 */
	OP_LIST_V1,
	OP_LIST_V2,
	OP_LIST_VERSIONS,
	OP_LIST_UPLOADS,
	OP_DELETE_OBJECTS,
	OP_PUT_OBJECT,
	OP_COPY_OBJECT,
	OP_GET_OBJECT,
	OP_HEAD_OBJECT,
	OP_DELETE_OBJECT,
	OP_GET_OBJECT_ACL,
	OP_PUT_OBJECT_ACL,
	OP_GET_OBJECT_TAGGING,
	OP_CREATE_MPU,
	OP_UPLOAD_PART,
	OP_UPLOAD_PART_COPY,
	OP_COMPLETE_MPU,
	OP_ABORT_MPU,
	OP_LIST_PARTS,
	OP_COUNT
};

struct s3_opdef {
	bool write;     /* read-only users may not */
	bool public_ok; /* anyone may, on a public-read bucket */
	enum s3_body body;
	uint32_t xml_max;
};

static const struct s3_opdef opdefs[OP_COUNT] = {
    [OP_LIST_BUCKETS] = {false, false, BODY_NONE, 0},
    [OP_CREATE_BUCKET] = {true, false, BODY_XML, SMALL_XML},
    [OP_DELETE_BUCKET] = {true, false, BODY_NONE, 0},
    [OP_HEAD_BUCKET] = {false, true, BODY_NONE, 0},
    [OP_GET_LOCATION] = {false, false, BODY_NONE, 0},
    [OP_GET_VERSIONING] = {false, false, BODY_NONE, 0},
    [OP_PUT_VERSIONING] = {true, false, BODY_XML, SMALL_XML},
    [OP_GET_BUCKET_ACL] = {false, false, BODY_NONE, 0},
    [OP_PUT_BUCKET_ACL] = {true, false, BODY_XML, SMALL_XML},
    [OP_NO_CONFIG] = {false, false, BODY_NONE, 0},
    [OP_LIST_V1] = {false, true, BODY_NONE, 0},
    [OP_LIST_V2] = {false, true, BODY_NONE, 0},
    [OP_LIST_VERSIONS] = {false, false, BODY_NONE, 0},
    [OP_LIST_UPLOADS] = {false, false, BODY_NONE, 0},
    [OP_DELETE_OBJECTS] = {true, false, BODY_XML, NB_S3HTTP_MAX_XML},
    [OP_PUT_OBJECT] = {true, false, BODY_DATA, 0},
    [OP_COPY_OBJECT] = {true, false, BODY_NONE, 0},
    [OP_GET_OBJECT] = {false, true, BODY_NONE, 0},
    [OP_HEAD_OBJECT] = {false, true, BODY_NONE, 0},
    [OP_DELETE_OBJECT] = {true, false, BODY_NONE, 0},
    [OP_GET_OBJECT_ACL] = {false, false, BODY_NONE, 0},
    [OP_PUT_OBJECT_ACL] = {true, false, BODY_XML, SMALL_XML},
    [OP_GET_OBJECT_TAGGING] = {false, false, BODY_NONE, 0},
    [OP_CREATE_MPU] = {true, false, BODY_NONE, 0},
    [OP_UPLOAD_PART] = {true, false, BODY_DATA, 0},
    [OP_UPLOAD_PART_COPY] = {true, false, BODY_NONE, 0},
    [OP_COMPLETE_MPU] = {true, false, BODY_XML, NB_S3HTTP_MAX_XML},
    [OP_ABORT_MPU] = {true, false, BODY_NONE, 0},
    [OP_LIST_PARTS] = {false, false, BODY_NONE, 0},
};

struct s3arg {
	const char *raw; /* as received (MHD's memory) */
	const char *raw_val;
	char *key; /* decoded */
	char *val; /* decoded; "" when absent */
	bool has_val;
};

struct s3q {
	struct nb_s3http *h;
	struct MHD_Connection *c;
	char rid[17];
	enum s3_op op;
	const char *no_config_code;
	bool head;
	char *bucket; /* NULL: the service */
	char *key;    /* NULL: the bucket */
	size_t keylen;
	char *resource;
	struct s3arg args[MAX_ARGS];
	size_t nargs;
	bool args_overflow, args_bad;
	/* who */
	bool anon;
	bool read_only;
	char account[NB_S3_OWNER_MAX + 1];
	char account_name[128];
	const char *actor; /* q->account, or NULL for a public read */
	struct nb_sigv4_auth auth;
	unsigned char skey[32];
	bool have_skey;
	char signed_region[NB_S3_REGION_MAX + 1];
	/* a failure decided before the end of the body */
	unsigned fail_status;
	const char *fail_code;
	char fail_msg[400];
	bool fail_marker; /* a delete marker answered the request */
	char fail_version[NB_S3_VERSION_ID_SIZE];
	int64_t fail_size; /* InvalidRange: the object's size, else -1 */
	/* body */
	enum s3_body body;
	uint64_t received, drained;
	struct nb_buf xml;
	bool xml_too_big;
	EVP_MD_CTX *sha; /* the body against a hex x-amz-content-sha256 */
	char claimed_sha[65];
	struct nb_s3_put *put;
	int sink_err;
	struct nb_chunked *dec;
	enum nb_cksum_algo ck_algo;
	const char *ck_value; /* x-amz-checksum-* header value */
	char cenc[NB_S3_HEADER_VALUE_MAX + 1];
	json_t *user_meta;
	struct nb_s3_cond cond;
	bool responded;
};

static void q_free(struct s3q *q)
{
	if (!q)
		return;
	nb_s3_put_abort(q->put);
	if (q->dec) {
		nb_chunked_free(q->dec);
		free(q->dec);
	}
	if (q->sha)
		EVP_MD_CTX_free(q->sha);
	nb_buf_free(&q->xml);
	for (size_t i = 0; i < q->nargs; i++) {
		free(q->args[i].key);
		free(q->args[i].val);
	}
	json_decref(q->user_meta);
	free(q->bucket);
	free(q->key);
	free(q->resource);
	OPENSSL_cleanse(q->skey, sizeof(q->skey));
	free(q);
}

static const char *hdr(struct s3q *q, const char *name)
{
	return MHD_lookup_connection_value(q->c, MHD_HEADER_KIND, name);
}

static const struct s3arg *arg_find(struct s3q *q, const char *name)
{
	for (size_t i = 0; i < q->nargs; i++)
		if (!strcmp(q->args[i].key, name))
			return &q->args[i];
	return NULL;
}

static const char *arg(struct s3q *q, const char *name)
{
	const struct s3arg *a = arg_find(q, name);

	return a ? a->val : NULL;
}

static bool has_arg(struct s3q *q, const char *name)
{
	return arg_find(q, name) != NULL;
}

/* Records the first failure; later ones are dropped. */
static void fail(struct s3q *q, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(struct s3q *q, unsigned status, const char *code, const char *fmt, ...)
{
	va_list ap;

	if (q->fail_status)
		return;
	q->fail_status = status;
	q->fail_code = code;
	va_start(ap, fmt);
	vsnprintf(q->fail_msg, sizeof(q->fail_msg), fmt, ap);
	va_end(ap);
}

/* An engine (or -errno) code. */
static void fail_err(struct s3q *q, int err)
{
	if (err == -ENOSPC || err == -EDQUOT) {
		fail(q, 507, "InsufficientStorage",
		     "The server has no space left for this object.");
		return;
	}
	fail(q, (unsigned)nb_s3_err_http_status(err), nb_s3_err_code(err), "%s",
	     nb_s3_err_message(err));
}

static void fail_chunked(struct s3q *q, int r)
{
	const struct nb_chunked *d = q->dec;

	if (d->fault == NB_CHUNKED_OUTPUT || !nb_chunked_s3_code(d)) {
		fail_err(q, q->sink_err ? q->sink_err : r);
		return;
	}
	fail(q, (unsigned)nb_chunked_http_status(d), nb_chunked_s3_code(d), "%s",
	     *nb_chunked_message(d) ? nb_chunked_message(d) : nb_chunked_s3_code(d));
}

/* ---- replies ---- */

static void add_hdr(struct MHD_Response *r, const char *k, const char *v)
{
	if (v && *v)
		MHD_add_response_header(r, k, v);
}

static enum MHD_Result queue(struct s3q *q, unsigned status, struct MHD_Response *resp)
{
	enum MHD_Result ret;

	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "x-amz-request-id", q->rid);
	MHD_add_response_header(resp, "x-amz-id-2", q->rid);
	MHD_add_response_header(resp, "Server", "nubo");
	ret = MHD_queue_response(q->c, status, resp);
	MHD_destroy_response(resp);
	q->responded = true;
	return ret;
}

static struct MHD_Response *resp_empty(void)
{
	return MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
}

/* Takes b's data. */
static struct MHD_Response *resp_xml(struct nb_buf *b)
{
	struct MHD_Response *r;
	size_t len = b->len;
	char *data = nb_buf_steal(b);

	if (!data)
		return NULL;
	r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(data);
		return NULL;
	}
	MHD_add_response_header(r, "Content-Type", "application/xml");
	return r;
}

static enum MHD_Result reply_fail(struct s3q *q)
{
	struct nb_buf b;
	struct MHD_Response *r;

	nb_buf_init(&b, 64u << 10);
	if (nb_xml_s3_error(&b, q->fail_code, q->fail_msg, q->resource ? q->resource : "/",
	                    q->rid) < 0) {
		nb_buf_free(&b);
		return MHD_NO;
	}
	r = resp_xml(&b);
	if (!r)
		return MHD_NO;
	if (q->fail_marker)
		MHD_add_response_header(r, "x-amz-delete-marker", "true");
	if (q->fail_version[0] && strcmp(q->fail_version, "null"))
		MHD_add_response_header(r, "x-amz-version-id", q->fail_version);
	if (q->fail_status == 416 && q->fail_size >= 0) {
		char cr[48];
		snprintf(cr, sizeof(cr), "bytes */%lld", (long long)q->fail_size);
		MHD_add_response_header(r, "Content-Range", cr);
	}
	return queue(q, q->fail_status, r);
}

/* Replies with q's failure, or with err mapped when q has none. */
static enum MHD_Result reply_err(struct s3q *q, int err)
{
	fail_err(q, err);
	return reply_fail(q);
}

static enum MHD_Result reply_code(struct s3q *q, unsigned status, const char *code, const char *msg)
{
	fail(q, status, code, "%s", msg);
	return reply_fail(q);
}

/* Ends an XML document in b and sends it (200). */
static enum MHD_Result reply_doc(struct s3q *q, struct nb_xml *x, struct nb_buf *b)
{
	if (nb_xml_end(x) < 0) {
		nb_buf_free(b);
		return reply_code(q, 500, "InternalError", "The response was too large.");
	}
	return queue(q, 200, resp_xml(b));
}

static void iso_time(int64_t ms, char out[32])
{
	nb_iso8601(ms, out, 32);
}

/* An element whose text is url-encoded when asked (encoding-type=url). */
static void xml_enc(struct nb_xml *x, const char *name, const char *v, bool url)
{
	struct nb_buf e;

	if (!url || !v) {
		nb_xml_text(x, name, v ? v : "");
		return;
	}
	nb_buf_init(&e, 16u << 10);
	if (nb_s3http_url_encode(&e, v) < 0)
		x->err = x->err ? x->err : -E2BIG;
	else
		nb_xml_text(x, name, e.data ? e.data : "");
	nb_buf_free(&e);
}

static const char *owner_name(struct s3q *q, const char *owner)
{
	return owner && !strcmp(owner, q->account) && q->account_name[0] ? q->account_name : owner;
}

static void xml_owner(struct s3q *q, struct nb_xml *x, const char *elem, const char *owner)
{
	nb_xml_open(x, elem);
	nb_xml_text(x, "ID", owner ? owner : "");
	nb_xml_text(x, "DisplayName", owner_name(q, owner) ? owner_name(q, owner) : "");
	nb_xml_close(x);
}

/* ==== authentication ==== */

struct hdr_pick {
	struct nb_kv kv[NB_SIGV4_MAX_HEADERS];
	size_t n;
	bool overflow;
	const char *signed_list; /* "host;x-amz-date;..." or NULL: take every header */
};

/* True when name is one of the ';'-separated names of list. */
static bool in_list(const char *list, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = list; p && *p;) {
		const char *e = p + strcspn(p, ";,& ");
		if ((size_t)(e - p) == n && !strncasecmp(p, name, n))
			return true;
		if (*e != ';')
			break;
		p = e + 1;
	}
	return false;
}

static enum MHD_Result pick_hdr(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
	struct hdr_pick *p = cls;

	(void)kind;
	if (p->signed_list && strcasecmp(key, "authorization") && strcasecmp(key, "date") &&
	    strcasecmp(key, "x-amz-date") && strcasecmp(key, "x-amz-content-sha256") &&
	    !in_list(p->signed_list, key))
		return MHD_YES;
	if (p->n == NB_SIGV4_MAX_HEADERS) {
		p->overflow = true;
		return MHD_NO;
	}
	p->kv[p->n].key = key;
	p->kv[p->n].value = value ? value : "";
	p->n++;
	return MHD_YES;
}

static bool is_hex64(const char *s)
{
	if (!s || strlen(s) != 64)
		return false;
	for (int i = 0; i < 64; i++)
		if (hexval(s[i]) < 0)
			return false;
	return true;
}

static void fail_sigv4(struct s3q *q, int r, const char *err)
{
	switch (-r) {
	case NB_E_AUTH_MISSING:
		fail(q, 403, "AccessDenied", "%s", *err ? err : "Access Denied");
		break;
	case NB_E_AUTH_INCOMPLETE:
		fail(q, 400,
		     q->auth.presigned ? "AuthorizationQueryParametersError"
		                       : "AuthorizationHeaderMalformed",
		     "%s", err);
		break;
	case NB_E_SIG_MISMATCH:
		fail(q, 403, "SignatureDoesNotMatch", "%s",
		     *err ? err
		          : "The request signature we calculated does not match the signature you "
		            "provided.");
		break;
	case NB_E_EXPIRED:
		if (q->auth.presigned)
			fail(q, 403, "AccessDenied", "Request has expired");
		else
			fail(q, 403, "RequestTimeTooSkewed",
			     "The difference between the request time and the current time is "
			     "too large.");
		break;
	case NB_E_BAD_KEY:
		fail(q, 403, "InvalidAccessKeyId",
		     "The AWS Access Key Id you provided does not exist in our records.");
		break;
	case NB_E_INVALID:
		fail(q, 400, "InvalidArgument", "%s", err);
		break;
	default:
		fail(q, 500, "InternalError", "%s", *err ? err : "authentication failed");
	}
}

/* The SignedHeaders of an Authorization header value, up to its ','. */
static const char *signed_headers_of(const char *auth, char *out, size_t outsz)
{
	const char *p = auth ? strstr(auth, "SignedHeaders=") : NULL;
	size_t n;

	if (!p)
		return NULL;
	p += 14;
	n = strcspn(p, ", ");
	if (n >= outsz)
		return NULL;
	memcpy(out, p, n);
	out[n] = '\0';
	return out;
}

/* SigV4 of the request (header or presigned), or anonymous. Sets q's
 * identity, or a failure. */
/* Access keys seen lately: looking a key up in the store (SQLite, its
 * statement compiled each time) was a fifth of nubod's CPU for a 4 KiB GET.
 * An entry is good while the store's epoch is the one read before its
 * lookup: any committed change of the store (a key made inactive or deleted,
 * a user's role or an account changed among them) moves the epoch and so
 * empties the cache. With the row, an entry keeps the SigV4 signing keys
 * derived from its secret (KEY_CACHE_SKEYS, one per scope date and region,
 * the oldest replaced): the secret's decryption and the four HMACs of the
 * derivation then run once a day per key, not per request; they go with the
 * entry when the epoch moves. */
#define KEY_CACHE_N 32
#define KEY_CACHE_SKEYS 2 /* around midnight: today's and yesterday's scope */

struct nb_s3http_key {
	struct nb_store *st;
	uint64_t epoch;
	json_t *row; /* nb_store_key_lookup's row, never changed; NULL: a free entry */
	struct {
		char date[9];
		char region[NB_S3_REGION_MAX + 1];
		unsigned char key[32];
	} skeys[KEY_CACHE_SKEYS]; /* date "": unused */
	unsigned skey_next;
};

static void key_entry_clear(struct nb_s3http_key *k)
{
	json_decref(k->row);
	OPENSSL_cleanse(k, sizeof(*k));
	memset(k, 0, sizeof(*k));
}

static struct nb_s3http_key *key_entry_find(struct nb_s3http *h, const char *id, uint64_t epoch)
{
	for (int i = 0; h->keys && i < KEY_CACHE_N; i++) {
		struct nb_s3http_key *k = &h->keys[i];

		if (k->row && k->st == h->st && k->epoch == epoch &&
		    !strcmp(nb_json_str_or(k->row, "id"), id))
			return k;
	}
	return NULL;
}

/* *out is the caller's reference (the cached row is shared and never
 * changed); *epoch the store's epoch it is good for. */
static int key_lookup(struct nb_s3http *h, const char *id, json_t **out, uint64_t *epoch_out)
{
	uint64_t epoch = nb_store_epoch(h->st);
	struct nb_s3http_key *k;
	json_t *row = NULL;
	int r, slot = -1;

	*epoch_out = epoch;
	pthread_mutex_lock(&h->keys_lock);
	k = key_entry_find(h, id, epoch);
	if (k)
		row = json_incref(k->row);
	pthread_mutex_unlock(&h->keys_lock);
	if (row) {
		*out = row;
		return 0;
	}
	r = nb_store_key_lookup(h->st, id, out);
	if (r < 0 || strcmp(nb_json_str_or(*out, "id"), id))
		return r;
	pthread_mutex_lock(&h->keys_lock);
	if (!h->keys)
		h->keys = calloc(KEY_CACHE_N, sizeof(*h->keys));
	for (int i = 0; h->keys && i < KEY_CACHE_N && slot < 0; i++)
		if (!h->keys[i].row || h->keys[i].epoch != epoch ||
		    !strcmp(nb_json_str_or(h->keys[i].row, "id"), id))
			slot = i;
	if (h->keys && slot < 0)
		slot = (int)(epoch % KEY_CACHE_N); /* all live: replace one */
	if (slot >= 0) {
		key_entry_clear(&h->keys[slot]);
		h->keys[slot].st = h->st;
		h->keys[slot].epoch = epoch;
		h->keys[slot].row = json_incref(*out);
	}
	pthread_mutex_unlock(&h->keys_lock);
	return 0;
}

/* The signing key kept for (id, epoch, date, region): true and key filled,
 * or false. */
static bool skey_get(struct nb_s3http *h, const char *id, uint64_t epoch, const char *date,
                     const char *region, unsigned char key[32])
{
	struct nb_s3http_key *k;
	bool found = false;

	pthread_mutex_lock(&h->keys_lock);
	k = key_entry_find(h, id, epoch);
	for (int i = 0; k && i < KEY_CACHE_SKEYS && !found; i++) {
		if (!strcmp(k->skeys[i].date, date) && !strcmp(k->skeys[i].region, region)) {
			memcpy(key, k->skeys[i].key, 32);
			found = true;
		}
	}
	pthread_mutex_unlock(&h->keys_lock);
	return found;
}

/* Keeps a signing key that just verified a request, with its entry (when
 * that is still there for epoch). */
static void skey_put(struct nb_s3http *h, const char *id, uint64_t epoch, const char *date,
                     const char *region, const unsigned char key[32])
{
	struct nb_s3http_key *k;

	if (strlen(date) >= sizeof(k->skeys[0].date) ||
	    strlen(region) >= sizeof(k->skeys[0].region))
		return;
	pthread_mutex_lock(&h->keys_lock);
	k = key_entry_find(h, id, epoch);
	if (k) {
		unsigned i = k->skey_next++ % KEY_CACHE_SKEYS;
		nb_strlcpy(k->skeys[i].date, date, sizeof(k->skeys[i].date));
		nb_strlcpy(k->skeys[i].region, region, sizeof(k->skeys[i].region));
		memcpy(k->skeys[i].key, key, 32);
	}
	pthread_mutex_unlock(&h->keys_lock);
}

static void authenticate(struct s3q *q, const char *method, const char *url)
{
	struct nb_s3http *h = q->h;
	const char *authz = hdr(q, "Authorization");
	struct hdr_pick *hp = NULL;
	struct nb_buf query;
	struct nb_sigv4_req req;
	char err[300] = "", slist[1024];
	char *secret = NULL;
	json_t *key = NULL;
	uint64_t epoch = 0;
	const char *region;
	int r;

	nb_buf_init(&query, NB_SIGV4_MAX_QUERY + 1);
	if (!authz && !has_arg(q, "X-Amz-Credential") && !has_arg(q, "X-Amz-Signature") &&
	    !has_arg(q, "X-Amz-Algorithm")) {
		if (has_arg(q, "AWSAccessKeyId") || has_arg(q, "Signature"))
			fail(q, 400, "InvalidRequest",
			     "The authorization mechanism you have provided is not supported. "
			     "Please use AWS4-HMAC-SHA256.");
		q->anon = true;
		goto out;
	}
	if (authz && strncmp(authz, "AWS4-HMAC-SHA256 ", 17)) {
		fail(q, 400, "InvalidRequest",
		     "The authorization mechanism you have provided is not supported. Please "
		     "use AWS4-HMAC-SHA256.");
		goto out;
	}
	hp = calloc(1, sizeof(*hp));
	if (!hp) {
		fail(q, 500, "InternalError", "out of memory");
		goto out;
	}
	hp->signed_list =
	    authz ? signed_headers_of(authz, slist, sizeof(slist)) : arg(q, "X-Amz-SignedHeaders");
	MHD_get_connection_values(q->c, MHD_HEADER_KIND, pick_hdr, hp);
	if (hp->overflow) {
		fail(q, 400, "InvalidArgument", "too many signed headers");
		goto out;
	}
	for (size_t i = 0; i < q->nargs; i++) {
		const char *k = q->args[i].raw, *v = q->args[i].raw_val;

		if (i && nb_buf_append(&query, "&", 1) < 0)
			break;
		for (const char *p = k; *p; p++)
			nb_buf_append(&query, *p == ' ' ? "+" : p, 1);
		if (v) {
			nb_buf_append(&query, "=", 1);
			for (const char *p = v; *p; p++)
				nb_buf_append(&query, *p == ' ' ? "+" : p, 1);
		}
	}
	if (query.len > NB_SIGV4_MAX_QUERY) {
		fail(q, 400, "InvalidArgument", "query string too long");
		goto out;
	}
	memset(&req, 0, sizeof(req));
	req.method = method;
	req.path = url;
	req.query = query.len ? query.data : NULL;
	req.headers = hp->kv;
	req.nheaders = hp->n;
	{
		const char *sha = hdr(q, "x-amz-content-sha256");
		/* the claimed hash stands in for the body's here; the body itself is
		 * checked against it as it arrives */
		req.body_sha256 = is_hex64(sha) ? sha : NULL;
	}
	req.now = nb_wall_ms() / 1000;
	req.s3 = true;
	r = nb_sigv4_parse(&req, &q->auth, err, sizeof(err));
	if (r < 0) {
		fail_sigv4(q, r, err);
		goto out;
	}
	r = key_lookup(h, q->auth.access_key, &key, &epoch);
	if (r == -NB_E_NOT_FOUND || (r == 0 && strcmp(nb_json_str_or(key, "status"), "Active"))) {
		fail_sigv4(q, -NB_E_BAD_KEY, "");
		goto out;
	}
	if (r < 0) {
		fail(q, 503, "SlowDown", "key lookup failed, please retry");
		goto out;
	}
	if (!strcmp(q->auth.region, h->region))
		region = h->region;
	else if (!strcmp(q->auth.region, "us-east-1"))
		region = "us-east-1";
	else {
		fail(q, 400,
		     q->auth.presigned ? "AuthorizationQueryParametersError"
		                       : "AuthorizationHeaderMalformed",
		     "the region '%s' is wrong; expecting '%s'", q->auth.region, h->region);
		goto out;
	}
	if (skey_get(h, q->auth.access_key, epoch, q->auth.date, region, q->skey)) {
		r = nb_sigv4_verify_key(&req, &q->auth, q->skey, region, "s3", err, sizeof(err));
	} else {
		r = nb_secrets_open(h->secrets, nb_json_str_or(key, "secret_enc"), &secret);
		if (r < 0) {
			fail(q, 500, "InternalError", "the key's secret cannot be read");
			goto out;
		}
		nb_sigv4_signing_key(secret, q->auth.date, region, "s3", q->skey);
		OPENSSL_cleanse(secret, strlen(secret));
		free(secret);
		r = nb_sigv4_verify_key(&req, &q->auth, q->skey, region, "s3", err, sizeof(err));
		if (r == 0)
			skey_put(h, q->auth.access_key, epoch, q->auth.date, region, q->skey);
	}
	/* the chunk signatures' seed (aws-chunked uploads) */
	q->have_skey = r == 0;
	if (r < 0) {
		fail_sigv4(q, r, err);
		goto out;
	}
	nb_strlcpy(q->signed_region, region, sizeof(q->signed_region));
	if (strlen(nb_json_str_or(key, "account_id")) > NB_S3_OWNER_MAX) {
		fail(q, 500, "InternalError", "account id too long");
		goto out;
	}
	nb_strlcpy(q->account, nb_json_str_or(key, "account_id"), sizeof(q->account));
	nb_strlcpy(q->account_name, nb_json_str_or(key, "account"), sizeof(q->account_name));
	q->read_only = !strcmp(nb_json_str_or(key, "role"), "read-only");
	if (is_hex64(q->auth.payload_hash))
		memcpy(q->claimed_sha, q->auth.payload_hash, 65);
out:
	json_decref(key);
	free(hp);
	nb_buf_free(&query);
}

/* ==== routing ==== */

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
	struct s3q *q = cls;
	struct s3arg *a;

	(void)kind;
	if (q->nargs == MAX_ARGS) {
		q->args_overflow = true;
		return MHD_NO;
	}
	a = &q->args[q->nargs];
	if (nb_s3http_unescape(key, strlen(key), &a->key, NULL) < 0) {
		q->args_bad = true;
		return MHD_NO;
	}
	if (nb_s3http_unescape(value ? value : "", value ? strlen(value) : 0, &a->val, NULL) < 0) {
		free(a->key);
		a->key = NULL;
		q->args_bad = true;
		return MHD_NO;
	}
	a->raw = key;
	a->raw_val = value;
	a->has_val = value != NULL;
	q->nargs++;
	return MHD_YES;
}

/* Bucket configurations nubo never has: GET answers S3's 404 for an absent
 * one, so that clients asking (s3cmd info, SDK helpers) carry on. */
static const struct {
	const char *sub;
	const char *code;
} no_configs[] = {
    {"policy", "NoSuchBucketPolicy"},
    {"cors", "NoSuchCORSConfiguration"},
    {"lifecycle", "NoSuchLifecycleConfiguration"},
    {"tagging", "NoSuchTagSet"},
    {"website", "NoSuchWebsiteConfiguration"},
    {"encryption", "ServerSideEncryptionConfigurationNotFoundError"},
    {"replication", "ReplicationConfigurationNotFoundError"},
    {"ownershipControls", "OwnershipControlsNotFoundError"},
    {"publicAccessBlock", "NoSuchPublicAccessBlockConfiguration"},
    {"object-lock", "ObjectLockConfigurationNotFoundError"},
};

/* Sub-resources nubo does not implement at all. */
static const char *const unsupported[] = {
    "accelerate",
    "analytics",
    "inventory",
    "intelligent-tiering",
    "logging",
    "metrics",
    "notification",
    "requestPayment",
    "policyStatus",
    "retention",
    "legal-hold",
    "torrent",
    "restore",
    "select",
    "attributes",
    "object-lock",
    "tagging",
    "website",
    "cors",
    "lifecycle",
    "policy",
    "encryption",
    "replication",
    "ownershipControls",
    "publicAccessBlock",
};

static enum s3_op route(struct s3q *q, const char *m)
{
	bool get = !strcmp(m, "GET") || !strcmp(m, "HEAD");
	bool put = !strcmp(m, "PUT"), post = !strcmp(m, "POST"), del = !strcmp(m, "DELETE");

	if (!q->bucket) {
		if (!strcmp(m, "GET"))
			return OP_LIST_BUCKETS;
		fail(q, 405, "MethodNotAllowed",
		     "The specified method is not allowed against this resource.");
		return OP_NONE;
	}
	if (!q->key) {
		if (!strcmp(m, "HEAD"))
			return OP_HEAD_BUCKET;
		if (get) {
			if (has_arg(q, "location"))
				return OP_GET_LOCATION;
			if (has_arg(q, "versioning"))
				return OP_GET_VERSIONING;
			if (has_arg(q, "versions"))
				return OP_LIST_VERSIONS;
			if (has_arg(q, "uploads"))
				return OP_LIST_UPLOADS;
			if (has_arg(q, "acl"))
				return OP_GET_BUCKET_ACL;
			for (size_t i = 0; i < NB_ARRAY_SIZE(no_configs); i++)
				if (has_arg(q, no_configs[i].sub)) {
					q->no_config_code = no_configs[i].code;
					return OP_NO_CONFIG;
				}
		} else if (put) {
			if (has_arg(q, "versioning"))
				return OP_PUT_VERSIONING;
			if (has_arg(q, "acl"))
				return OP_PUT_BUCKET_ACL;
		} else if (post) {
			if (has_arg(q, "delete"))
				return OP_DELETE_OBJECTS;
		} else if (!del) {
			goto method;
		}
		for (size_t i = 0; i < NB_ARRAY_SIZE(unsupported); i++)
			if (has_arg(q, unsupported[i]))
				goto unsupported;
		if (get)
			return arg(q, "list-type") && !strcmp(arg(q, "list-type"), "2")
			           ? OP_LIST_V2
			           : OP_LIST_V1;
		if (put)
			return OP_CREATE_BUCKET;
		if (del)
			return OP_DELETE_BUCKET;
		goto unsupported;
	}
	if (!strcmp(m, "HEAD"))
		return OP_HEAD_OBJECT;
	if (get) {
		if (has_arg(q, "uploadId"))
			return OP_LIST_PARTS;
		if (has_arg(q, "acl"))
			return OP_GET_OBJECT_ACL;
		if (has_arg(q, "tagging"))
			return OP_GET_OBJECT_TAGGING;
	} else if (put) {
		if (has_arg(q, "uploadId") || has_arg(q, "partNumber")) {
			if (!has_arg(q, "uploadId") || !has_arg(q, "partNumber")) {
				fail(q, 400, "InvalidRequest",
				     "partNumber and uploadId must be given together");
				return OP_NONE;
			}
			return hdr(q, "x-amz-copy-source") ? OP_UPLOAD_PART_COPY : OP_UPLOAD_PART;
		}
		if (has_arg(q, "acl"))
			return OP_PUT_OBJECT_ACL;
	} else if (post) {
		if (has_arg(q, "uploads"))
			return OP_CREATE_MPU;
		if (has_arg(q, "uploadId"))
			return OP_COMPLETE_MPU;
		goto unsupported;
	} else if (del) {
		if (has_arg(q, "uploadId"))
			return OP_ABORT_MPU;
	} else {
		goto method;
	}
	for (size_t i = 0; i < NB_ARRAY_SIZE(unsupported); i++)
		if (has_arg(q, unsupported[i]))
			goto unsupported;
	if (get)
		return OP_GET_OBJECT;
	if (put)
		return hdr(q, "x-amz-copy-source") ? OP_COPY_OBJECT : OP_PUT_OBJECT;
	return OP_DELETE_OBJECT;
method:
	fail(q, 405, "MethodNotAllowed",
	     "The specified method is not allowed against this resource.");
	return OP_NONE;
unsupported:
	fail(q, 501, "NotImplemented",
	     "A header or query you provided implies functionality that is not implemented.");
	return OP_NONE;
}

/* Bucket and key from the Host header and the raw path. */
static void locate(struct s3q *q, const char *url)
{
	char vb[NB_S3_BUCKET_NAME_MAX + 2];
	const char *host = hdr(q, "Host");
	const char *p, *slash;
	struct nb_buf res;
	int r;

	if (url[0] != '/') {
		fail(q, 400, "InvalidURI", "Couldn't parse the specified URI.");
		return;
	}
	p = url + 1;
	if (nb_s3http_vhost_bucket(host, q->h->domain, vb, sizeof(vb))) {
		q->bucket = strdup(vb);
		if (!q->bucket)
			goto nomem;
	} else if (*p) {
		slash = strchr(p, '/');
		if (nb_s3http_unescape(p, slash ? (size_t)(slash - p) : strlen(p), &q->bucket,
		                       NULL) < 0) {
			fail(q, 400, "InvalidURI", "Couldn't parse the specified URI.");
			return;
		}
		p = slash ? slash + 1 : p + strlen(p);
	}
	if (q->bucket && *p) {
		if (nb_s3http_unescape(p, strlen(p), &q->key, &q->keylen) < 0) {
			fail(q, 400, "InvalidURI", "Couldn't parse the specified URI.");
			return;
		}
		r = nb_s3_key_check(q->key, q->keylen);
		if (r < 0) {
			fail_err(q, r);
			return;
		}
	}
	if (q->bucket && !*q->bucket) {
		free(q->bucket);
		q->bucket = NULL;
	}
	nb_buf_init(&res, 8192);
	nb_buf_printf(&res, "/%s%s%s", q->bucket ? q->bucket : "", q->key ? "/" : "",
	              q->key ? q->key : "");
	q->resource = nb_buf_steal(&res);
	return;
nomem:
	fail(q, 500, "InternalError", "out of memory");
}

/* ==== access ==== */

/* Decides q->actor: the caller's account, or NULL for a read of a
 * public-read bucket by anyone but its owner. Anonymous callers may do
 * nothing else. */
static void decide_actor(struct s3q *q)
{
	const struct s3_opdef *d = &opdefs[q->op];
	const char *expected = hdr(q, "x-amz-expected-bucket-owner");

	if (d->write && q->read_only) {
		fail(q, 403, "AccessDenied", "Access Denied");
		return;
	}
	if (expected && q->bucket) {
		/* the caller's guard against writing into someone else's bucket */
		struct nb_s3_bucket b;
		int r = nb_s3_bucket_get(q->h->s3, q->bucket, &b);

		if (r < 0) {
			fail_err(q, r);
			return;
		}
		if (strcmp(b.owner, expected)) {
			fail(q, 403, "AccessDenied", "Access Denied");
			return;
		}
	}
	if (d->public_ok && q->bucket &&
	    (q->anon || (q->op != OP_GET_OBJECT && q->op != OP_HEAD_OBJECT))) {
		/* A signed GET or HEAD of an object skips this read of the
		 * bucket: nb_s3_object_open checks owner-or-public-read itself
		 * with the bucket row it reads anyway. */
		struct nb_s3_bucket b;
		int r = nb_s3_bucket_get(q->h->s3, q->bucket, &b);

		if (r < 0) {
			fail_err(q, r);
			return;
		}
		if (b.public_read && (q->anon || strcmp(b.owner, q->account))) {
			q->actor = NULL;
			return;
		}
	}
	if (q->anon) {
		fail(q, 403, "AccessDenied", "Access Denied");
		return;
	}
	q->actor = q->account;
}

/* ==== request headers into engine arguments ==== */

struct meta_collect {
	json_t *user;
	bool bad;
};

static enum MHD_Result collect_meta(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
	struct meta_collect *m = cls;
	char name[NB_S3_META_MAX + 1];
	size_t n;
	json_t *old, *v;

	(void)kind;
	if (strncasecmp(key, "x-amz-meta-", 11))
		return MHD_YES;
	n = strlen(key + 11);
	if (!n || n > NB_S3_META_MAX) {
		m->bad = true;
		return MHD_NO;
	}
	for (size_t i = 0; i <= n; i++)
		name[i] = (char)tolower((unsigned char)key[11 + i]);
	old = json_object_get(m->user, name);
	if (old) {
		struct nb_buf j;
		nb_buf_init(&j, NB_S3_META_MAX * 2);
		if (nb_buf_printf(&j, "%s,%s", json_string_value(old), value ? value : "") < 0) {
			nb_buf_free(&j);
			m->bad = true;
			return MHD_NO;
		}
		v = json_string(j.data);
		nb_buf_free(&j);
	} else {
		v = json_string(value ? value : "");
	}
	if (!v || json_object_set_new(m->user, name, v) < 0) {
		m->bad = true;
		return MHD_NO;
	}
	return MHD_YES;
}

/* Content-Encoding without the aws-chunked token. */
static const char *content_encoding(struct s3q *q)
{
	const char *ce = hdr(q, "Content-Encoding");
	size_t n = 0;

	if (!ce)
		return NULL;
	for (const char *p = ce; *p;) {
		size_t len;
		while (*p == ' ' || *p == ',')
			p++;
		len = strcspn(p, ",");
		while (len && p[len - 1] == ' ')
			len--;
		if (len && !(len == 11 && !strncasecmp(p, "aws-chunked", 11))) {
			if (n + len + 2 > sizeof(q->cenc))
				break;
			if (n)
				q->cenc[n++] = ',';
			memcpy(q->cenc + n, p, len);
			n += len;
		}
		p += strcspn(p, ",");
	}
	q->cenc[n] = '\0';
	return n ? q->cenc : NULL;
}

/* Metadata from the request's headers; false (and a failure) when bad. */
static bool meta_from_headers(struct s3q *q, struct nb_s3_meta *m)
{
	struct meta_collect mc;

	memset(m, 0, sizeof(*m));
	json_decref(q->user_meta);
	q->user_meta = json_object();
	if (!q->user_meta) {
		fail(q, 500, "InternalError", "out of memory");
		return false;
	}
	mc.user = q->user_meta;
	mc.bad = false;
	MHD_get_connection_values(q->c, MHD_HEADER_KIND, collect_meta, &mc);
	if (mc.bad) {
		fail(q, 400, "InvalidArgument", "Invalid x-amz-meta-* header.");
		return false;
	}
	m->content_type = hdr(q, "Content-Type");
	m->content_encoding = content_encoding(q);
	m->content_disposition = hdr(q, "Content-Disposition");
	m->cache_control = hdr(q, "Cache-Control");
	m->content_language = hdr(q, "Content-Language");
	m->expires = hdr(q, "Expires");
	m->user = q->user_meta;
	return true;
}

/* The conditional headers, each name after prefix ("" or
 * "x-amz-copy-source-"). */
static void parse_cond(struct s3q *q, const char *prefix, struct nb_s3_cond *c)
{
	char name[64];
	int64_t t;

	memset(c, 0, sizeof(*c));
	snprintf(name, sizeof(name), "%sIf-Match", prefix);
	c->if_match = hdr(q, name);
	snprintf(name, sizeof(name), "%sIf-None-Match", prefix);
	c->if_none_match = hdr(q, name);
	snprintf(name, sizeof(name), "%sIf-Modified-Since", prefix);
	t = nb_s3http_parse_date(hdr(q, name));
	c->if_modified_since = t > 0 ? t : 0;
	snprintf(name, sizeof(name), "%sIf-Unmodified-Since", prefix);
	t = nb_s3http_parse_date(hdr(q, name));
	c->if_unmodified_since = t > 0 ? t : 0;
}

static bool has_cond(const struct nb_s3_cond *c)
{
	return c->if_match || c->if_none_match || c->if_modified_since || c->if_unmodified_since;
}

static unsigned ck_flag(enum nb_cksum_algo a)
{
	switch (a) {
	case NB_CKSUM_CRC32:
		return NB_S3_CK_CRC32;
	case NB_CKSUM_CRC32C:
		return NB_S3_CK_CRC32C;
	case NB_CKSUM_SHA1:
		return NB_S3_CK_SHA1;
	case NB_CKSUM_SHA256:
		return NB_S3_CK_SHA256;
	default:
		return 0;
	}
}

static void expect_set(struct nb_s3_expect *ex, enum nb_cksum_algo a, const char *v)
{
	switch (a) {
	case NB_CKSUM_CRC32:
		ex->crc32 = v;
		break;
	case NB_CKSUM_CRC32C:
		ex->crc32c = v;
		break;
	case NB_CKSUM_SHA1:
		ex->sha1 = v;
		break;
	case NB_CKSUM_SHA256:
		ex->sha256 = v;
		break;
	default:
		break;
	}
}

struct ck_find {
	enum nb_cksum_algo algo;
	const char *value;
	int n;
};

static enum MHD_Result find_ck(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value)
{
	struct ck_find *f = cls;
	enum nb_cksum_algo a = nb_cksum_algo_from_header(key);

	(void)kind;
	if (a != NB_CKSUM_NONE) {
		f->algo = a;
		f->value = value;
		f->n++;
	}
	return MHD_YES;
}

/* The x-amz-checksum-* header, at most one; false (and a failure) when
 * there are several. */
static bool checksum_header(struct s3q *q)
{
	struct ck_find f = {NB_CKSUM_NONE, NULL, 0};

	MHD_get_connection_values(q->c, MHD_HEADER_KIND, find_ck, &f);
	if (f.n > 1) {
		fail(q, 400, "InvalidRequest", "Expecting a single x-amz-checksum- header.");
		return false;
	}
	q->ck_algo = f.algo;
	q->ck_value = f.value;
	return true;
}

static bool parse_u64_hdr(const char *v, uint64_t *out)
{
	return v && nb_parse_u64(v, out) == 0;
}

/* Object ACL headers nubo accepts (and ignores): ACLs are per bucket. */
static bool object_acl_ok(struct s3q *q)
{
	const char *acl = hdr(q, "x-amz-acl");

	if (!acl || !strcmp(acl, "private") || !strcmp(acl, "bucket-owner-read") ||
	    !strcmp(acl, "bucket-owner-full-control"))
		return !hdr(q, "x-amz-grant-read") && !hdr(q, "x-amz-grant-full-control") &&
		       !hdr(q, "x-amz-grant-write-acp") && !hdr(q, "x-amz-grant-read-acp");
	fail(q, 501, "NotImplemented",
	     "Object ACLs are not supported: make the bucket public-read instead.");
	return false;
}

/* ==== bodies ==== */

static int sink(void *ctx, const void *data, size_t len)
{
	struct s3q *q = ctx;
	int r;

	if (q->put) {
		r = nb_s3_put_write(q->put, data, len);
		if (r < 0)
			q->sink_err = r;
		return r;
	}
	if (q->body == BODY_XML) {
		r = nb_buf_append(&q->xml, data, len);
		if (r < 0) {
			q->xml_too_big = true;
			q->sink_err = -E2BIG;
		}
		return r;
	}
	return 0; /* a body nobody asked for: dropped */
}

/* Starts the aws-chunked decoder when x-amz-content-sha256 announces one. */
static void decoder_setup(struct s3q *q, enum nb_chunked_mode mode, int64_t decoded_len)
{
	struct nb_chunked_cfg cfg;
	char scope[NB_CHUNKED_MAX_SCOPE];
	int r;

	memset(&cfg, 0, sizeof(cfg));
	cfg.mode = mode;
	if (mode == NB_CHUNKED_SIGNED || mode == NB_CHUNKED_SIGNED_TRAILER) {
		if (!q->have_skey || q->auth.presigned) {
			fail(q, 400, "InvalidRequest",
			     "A signed streaming upload needs a signed Authorization header.");
			return;
		}
		snprintf(scope, sizeof(scope), "%s/%s/s3/aws4_request", q->auth.date,
		         q->signed_region);
		cfg.signing_key = q->skey;
		cfg.seed_signature = q->auth.signature;
		cfg.amz_date = q->auth.amz_date;
		cfg.scope = scope;
	}
	cfg.trailer = hdr(q, "x-amz-trailer");
	if (q->ck_algo != NB_CKSUM_NONE) {
		cfg.checksum_name = nb_cksum_header(q->ck_algo);
		cfg.checksum_value = q->ck_value;
	}
	cfg.decoded_length = decoded_len;
	cfg.out = sink;
	cfg.out_ctx = q;
	q->dec = calloc(1, sizeof(*q->dec));
	if (!q->dec) {
		fail(q, 500, "InternalError", "out of memory");
		return;
	}
	r = nb_chunked_init(q->dec, &cfg);
	if (r < 0) {
		if (nb_chunked_s3_code(q->dec))
			fail_chunked(q, r);
		else
			fail(q, 400, "InvalidRequest",
			     "The request's streaming headers are invalid.");
	}
}

/* The streaming mode of the body; false (and a failure) when unsupported. */
static bool body_mode(struct s3q *q, enum nb_chunked_mode *mode)
{
	const char *sha = q->anon ? hdr(q, "x-amz-content-sha256") : q->auth.payload_hash;
	int r = nb_chunked_mode_parse(sha && *sha ? sha : NULL, mode);

	if (r == -ENOTSUP) {
		fail(q, 501, "NotImplemented", "This streaming upload form is not supported.");
		return false;
	}
	if (r < 0) {
		fail(q, 400, "InvalidArgument", "Invalid x-amz-content-sha256.");
		return false;
	}
	return true;
}

/* PutObject and UploadPart: opens the engine's upload before the body. */
static void put_setup(struct s3q *q)
{
	struct nb_s3http *h = q->h;
	enum nb_chunked_mode mode;
	enum nb_cksum_algo algo;
	uint64_t cl = 0, dl = 0;
	int64_t declared;
	unsigned checks;
	const char *v;
	int r;

	if (!body_mode(q, &mode) || !checksum_header(q))
		return;
	if (mode != NB_CHUNKED_NONE) {
		v = hdr(q, "x-amz-decoded-content-length");
		if (v && !parse_u64_hdr(v, &dl)) {
			fail(q, 400, "InvalidArgument", "Invalid x-amz-decoded-content-length.");
			return;
		}
		declared = v ? (int64_t)dl : -1;
	} else {
		v = hdr(q, "Content-Length");
		if (v && !parse_u64_hdr(v, &cl)) {
			fail(q, 400, "InvalidArgument", "Invalid Content-Length.");
			return;
		}
		declared = v ? (int64_t)cl : -1;
	}
	algo = q->ck_algo;
	if (algo == NB_CKSUM_NONE)
		algo = nb_cksum_algo_from_header(hdr(q, "x-amz-trailer"));
	if (algo == NB_CKSUM_NONE)
		algo = nb_cksum_algo_from_label(hdr(q, "x-amz-sdk-checksum-algorithm"));
	checks = ck_flag(algo);
	if (mode == NB_CHUNKED_NONE && q->claimed_sha[0])
		checks |= NB_S3_CK_SHA256;
	if (q->op == OP_PUT_OBJECT) {
		struct nb_s3_put_opts o;

		memset(&o, 0, sizeof(o));
		if (!object_acl_ok(q) || !meta_from_headers(q, &o.meta))
			return;
		parse_cond(q, "", &q->cond);
		o.bucket = q->bucket;
		o.key = q->key;
		o.actor = q->actor;
		o.content_length = declared;
		o.checksums = checks;
		o.quota = h->quota;
		o.cond = has_cond(&q->cond) ? &q->cond : NULL;
		r = nb_s3_put_begin(h->s3, &o, &q->put);
	} else {
		struct nb_s3_part_opts o;
		uint64_t pn;

		memset(&o, 0, sizeof(o));
		if (nb_parse_u64(arg(q, "partNumber"), &pn) < 0 || pn < 1 || pn > NB_S3_PARTS_MAX) {
			fail(q, 400, "InvalidArgument",
			     "Part number must be an integer between 1 and 10000, inclusive");
			return;
		}
		o.bucket = q->bucket;
		o.key = q->key;
		o.upload_id = arg(q, "uploadId");
		o.part_number = (uint32_t)pn;
		o.actor = q->actor;
		o.content_length = declared;
		o.checksums = checks;
		o.quota = h->quota;
		r = nb_s3_part_begin(h->s3, &o, &q->put);
	}
	if (r < 0) {
		q->put = NULL;
		fail_err(q, r);
		return;
	}
	if (mode != NB_CHUNKED_NONE)
		decoder_setup(q, mode, declared);
}

/* Everything known before the body: route, identity, access, uploads. */
static void begin(struct s3q *q, const char *url, const char *method)
{
	const struct s3_opdef *d;
	enum nb_chunked_mode mode;

	nb_random_hex(q->rid, 16);
	q->fail_size = -1;
	q->head = !strcmp(method, "HEAD");
	MHD_get_connection_values(q->c, MHD_GET_ARGUMENT_KIND, collect_arg, q);
	if (q->args_overflow) {
		fail(q, 400, "InvalidArgument", "Too many query parameters.");
		return;
	}
	if (q->args_bad) {
		fail(q, 400, "InvalidURI", "Couldn't parse the specified URI.");
		return;
	}
	if (strlen(url) > NB_SIGV4_MAX_PATH) {
		fail(q, 400, "KeyTooLongError", "Your key is too long");
		return;
	}
	locate(q, url);
	if (q->fail_status)
		return;
	authenticate(q, method, url);
	if (q->fail_status)
		return;
	q->op = route(q, method);
	if (q->fail_status)
		return;
	d = &opdefs[q->op];
	decide_actor(q);
	if (q->fail_status)
		return;
	q->body = d->body;
	if (d->body == BODY_DATA) {
		put_setup(q);
		return;
	}
	if (d->body == BODY_XML)
		nb_buf_init(&q->xml, d->xml_max);
	if (!body_mode(q, &mode))
		return;
	if (mode != NB_CHUNKED_NONE) {
		if (!checksum_header(q))
			return;
		decoder_setup(q, mode, -1);
		return;
	}
	if (q->claimed_sha[0]) {
		q->sha = EVP_MD_CTX_new();
		if (!q->sha || EVP_DigestInit_ex(q->sha, EVP_sha256(), NULL) != 1)
			fail(q, 500, "InternalError", "OpenSSL failed");
	}
}

/* Body bytes as they come. */
static void feed(struct s3q *q, const char *data, size_t len)
{
	int r;

	if (q->fail_status) {
		q->drained += len;
		return;
	}
	q->received += len;
	if (q->sha && EVP_DigestUpdate(q->sha, data, len) != 1) {
		fail(q, 500, "InternalError", "OpenSSL failed");
		return;
	}
	if (q->dec) {
		r = nb_chunked_feed(q->dec, data, len);
		if (r < 0)
			fail_chunked(q, r);
	} else {
		r = sink(q, data, len);
		if (r < 0) {
			if (q->xml_too_big)
				fail(q, 400, "MaxMessageLengthExceeded",
				     "Your request was too big.");
			else
				fail_err(q, r);
		}
	}
	if (q->fail_status && q->put) {
		nb_s3_put_abort(q->put);
		q->put = NULL;
	}
}

/* The body has ended: the decoder's verdict and the payload hash. */
static bool body_done(struct s3q *q)
{
	if (q->dec) {
		int r = nb_chunked_finish(q->dec);
		if (r < 0) {
			fail_chunked(q, r);
			return false;
		}
	}
	if (q->sha) {
		unsigned char md[32];
		unsigned int mdlen = 0;
		char hex[65];

		if (EVP_DigestFinal_ex(q->sha, md, &mdlen) != 1 || mdlen != 32) {
			fail(q, 500, "InternalError", "OpenSSL failed");
			return false;
		}
		for (int i = 0; i < 32; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
		if (strcasecmp(hex, q->claimed_sha)) {
			fail(q, 400, "XAmzContentSHA256Mismatch",
			     "The provided 'x-amz-content-sha256' header does not match what was "
			     "computed.");
			return false;
		}
	}
	return true;
}

/* Checks Content-MD5 and an x-amz-checksum-* header against a whole body
 * held in memory; with require, one of them must be there (DeleteObjects). */
static bool body_digests_ok(struct s3q *q, bool require)
{
	const char *md5h = hdr(q, "Content-MD5");
	struct ck_find f = {NB_CKSUM_NONE, NULL, 0};
	const char *data = q->xml.data ? q->xml.data : "";

	MHD_get_connection_values(q->c, MHD_HEADER_KIND, find_ck, &f);
	if (q->dec) {
		/* aws-chunked: the decoder checked header and trailer already */
		enum nb_cksum_algo a;
		if (nb_chunked_checksum(q->dec, &a))
			f.n = 1;
	}
	if (require && !md5h && !f.n) {
		fail(q, 400, "InvalidRequest",
		     "Missing required header for this request: Content-MD5");
		return false;
	}
	if (md5h) {
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int mdlen = 0;
		char b64[32];

		if (EVP_Digest(data, q->xml.len, md, &mdlen, EVP_md5(), NULL) != 1) {
			fail(q, 500, "InternalError", "OpenSSL failed");
			return false;
		}
		EVP_EncodeBlock((unsigned char *)b64, md, (int)mdlen);
		if (strlen(md5h) != 24) {
			fail(q, 400, "InvalidDigest", "The Content-MD5 you specified was invalid.");
			return false;
		}
		if (strcmp(b64, md5h)) {
			fail(q, 400, "BadDigest",
			     "The Content-MD5 you specified did not match what we received.");
			return false;
		}
	}
	if (f.n > 1) {
		fail(q, 400, "InvalidRequest", "Expecting a single x-amz-checksum- header.");
		return false;
	}
	if (f.n == 1 && !q->dec) {
		struct nb_cksum ck;
		char b64[NB_CKSUM_B64_MAX];
		int r;

		memset(&ck, 0, sizeof(ck));
		r = nb_cksum_init(&ck, f.algo);
		if (!r) {
			nb_cksum_update(&ck, data, q->xml.len);
			r = nb_cksum_final(&ck, b64);
		}
		nb_cksum_free(&ck);
		if (r < 0) {
			fail(q, 500, "InternalError", "checksum failed");
			return false;
		}
		if (strcmp(b64, f.value ? f.value : "")) {
			fail(q, 400, "BadDigest",
			     "The %s you specified did not match the calculated "
			     "checksum.",
			     nb_cksum_header(f.algo));
			return false;
		}
	}
	return true;
}

/* ==== buckets ==== */

static enum MHD_Result do_list_buckets(struct s3q *q)
{
	struct nb_s3_bucket *bs = NULL;
	size_t n = 0;
	struct nb_buf b;
	struct nb_xml x;
	char t[32];
	int r = nb_s3_bucket_list(q->h->s3, q->account, &bs, &n);

	if (r < 0)
		return reply_err(q, r);
	nb_buf_init(&b, 4u << 20);
	nb_xml_begin(&x, &b, "ListAllMyBucketsResult", S3_NS);
	xml_owner(q, &x, "Owner", q->account);
	nb_xml_open(&x, "Buckets");
	for (size_t i = 0; i < n; i++) {
		nb_xml_open(&x, "Bucket");
		nb_xml_text(&x, "Name", bs[i].name);
		iso_time(bs[i].created_ms, t);
		nb_xml_text(&x, "CreationDate", t);
		nb_xml_close(&x);
	}
	nb_xml_close(&x);
	free(bs);
	return reply_doc(q, &x, &b);
}

struct one_text {
	const char *root;
	const char *leaf;
	char *value; /* malloc'd */
	bool root_ok;
};

static int one_text_cb(void *ctx, const char *const *path, int depth, const char *text, size_t len)
{
	struct one_text *o = ctx;

	if (depth == 1)
		o->root_ok = !strcmp(path[0], o->root);
	if (depth == 2 && text && !strcmp(path[1], o->leaf)) {
		free(o->value);
		o->value = strndup(text, len);
		if (!o->value)
			return -ENOMEM;
	}
	return 0;
}

/* root/leaf of a small body; *value NULL when absent. false (and a
 * failure) when the body is not that document. */
static bool read_one(struct s3q *q, const char *root, const char *leaf, char **value)
{
	struct one_text o = {root, leaf, NULL, false};
	int r = nb_s3http_xml_walk(q->xml.data ? q->xml.data : "", q->xml.len, one_text_cb, &o);

	if (r < 0 || !o.root_ok) {
		free(o.value);
		fail(q, 400, "MalformedXML",
		     "The XML you provided was not well-formed or did not validate against our "
		     "published schema.");
		return false;
	}
	*value = o.value;
	return true;
}

/* The canned ACL of x-amz-acl / x-amz-grant-read for a bucket: 1 public,
 * 0 private, -1 absent; fails for what nubo does not support. */
static int bucket_acl_header(struct s3q *q)
{
	const char *acl = hdr(q, "x-amz-acl"), *gr = hdr(q, "x-amz-grant-read");

	if (hdr(q, "x-amz-grant-write") || hdr(q, "x-amz-grant-full-control") ||
	    hdr(q, "x-amz-grant-read-acp") || hdr(q, "x-amz-grant-write-acp") ||
	    (gr && !strstr(gr, "acs.amazonaws.com/groups/global/AllUsers")))
		goto unsupported;
	if (gr)
		return 1;
	if (!acl)
		return -1;
	if (!strcmp(acl, "public-read"))
		return 1;
	if (!strcmp(acl, "private"))
		return 0;
unsupported:
	fail(q, 501, "NotImplemented",
	     "Only the canned ACLs private and public-read are supported on buckets.");
	return -2;
}

static enum MHD_Result do_create_bucket(struct s3q *q)
{
	struct nb_s3http *h = q->h;
	char *loc = NULL;
	int pub = bucket_acl_header(q), r;
	struct MHD_Response *resp;
	char where[NB_S3_BUCKET_NAME_MAX + 4];

	if (pub == -2)
		return reply_fail(q);
	if (hdr(q, "x-amz-bucket-object-lock-enabled") &&
	    !strcasecmp(hdr(q, "x-amz-bucket-object-lock-enabled"), "true"))
		return reply_code(q, 501, "NotImplemented", "Object lock is not supported.");
	if (!body_digests_ok(q, false) ||
	    (q->xml.len && !read_one(q, "CreateBucketConfiguration", "LocationConstraint", &loc)))
		return reply_fail(q);
	if (loc && *loc && strcmp(loc, h->region) && strcmp(loc, "us-east-1")) {
		fail(q, 400, "InvalidLocationConstraint",
		     "The specified location-constraint '%s' is not valid: this endpoint serves "
		     "%s.",
		     loc, h->region);
		free(loc);
		return reply_fail(q);
	}
	free(loc);
	r = nb_s3_bucket_create(h->s3, q->bucket, q->account, h->region, NULL);
	if (r < 0)
		return reply_err(q, r);
	if (pub == 1) {
		r = nb_s3_bucket_set_public_read(h->s3, q->bucket, q->account, true);
		if (r < 0)
			return reply_err(q, r);
	}
	resp = resp_empty();
	if (!resp)
		return MHD_NO;
	snprintf(where, sizeof(where), "/%s", q->bucket);
	add_hdr(resp, "Location", where);
	return queue(q, 200, resp);
}

/* The bucket, checked to be the caller's (owner-only calls). */
static int own_bucket(struct s3q *q, struct nb_s3_bucket *b)
{
	int r = nb_s3_bucket_get(q->h->s3, q->bucket, b);

	if (r < 0)
		return r;
	if (!q->actor || strcmp(b->owner, q->actor))
		return -NB_S3_E_ACCESS_DENIED;
	return 0;
}

static enum MHD_Result do_head_bucket(struct s3q *q)
{
	struct nb_s3_bucket b;
	struct MHD_Response *resp;
	int r = nb_s3_bucket_get(q->h->s3, q->bucket, &b);

	if (r < 0)
		return reply_err(q, r);
	if (q->actor && strcmp(b.owner, q->actor))
		return reply_err(q, -NB_S3_E_ACCESS_DENIED);
	resp = resp_empty();
	if (!resp)
		return MHD_NO;
	add_hdr(resp, "x-amz-bucket-region", b.region);
	return queue(q, 200, resp);
}

static enum MHD_Result do_delete_bucket(struct s3q *q)
{
	int r = nb_s3_bucket_delete(q->h->s3, q->bucket, q->actor);

	if (r < 0)
		return reply_err(q, r);
	return queue(q, 204, resp_empty());
}

static enum MHD_Result do_get_location(struct s3q *q)
{
	struct nb_s3_bucket b;
	struct nb_buf buf;
	int r = own_bucket(q, &b);

	if (r < 0)
		return reply_err(q, r);
	nb_buf_init(&buf, 4096);
	nb_buf_puts(&buf,
	            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"" S3_NS
	            "\">");
	nb_xml_escape(&buf, strcmp(b.region, "us-east-1") ? b.region : "");
	nb_buf_puts(&buf, "</LocationConstraint>");
	return queue(q, 200, resp_xml(&buf));
}

static enum MHD_Result do_get_versioning(struct s3q *q)
{
	struct nb_s3_bucket b;
	struct nb_buf buf;
	struct nb_xml x;
	int r = own_bucket(q, &b);

	if (r < 0)
		return reply_err(q, r);
	nb_buf_init(&buf, 4096);
	nb_xml_begin(&x, &buf, "VersioningConfiguration", S3_NS);
	if (b.versioning == NB_S3_VERSIONING_ENABLED)
		nb_xml_text(&x, "Status", "Enabled");
	else if (b.versioning == NB_S3_VERSIONING_SUSPENDED)
		nb_xml_text(&x, "Status", "Suspended");
	return reply_doc(q, &x, &buf);
}

struct versioning_body {
	char *status;
	char *mfa;
	bool root_ok;
};

static int versioning_cb(void *ctx, const char *const *path, int depth, const char *text,
                         size_t len)
{
	struct versioning_body *v = ctx;
	char **dst = NULL;

	if (depth == 1)
		v->root_ok = !strcmp(path[0], "VersioningConfiguration");
	if (depth != 2 || !text)
		return 0;
	if (!strcmp(path[1], "Status"))
		dst = &v->status;
	else if (!strcmp(path[1], "MfaDelete"))
		dst = &v->mfa;
	if (dst) {
		free(*dst);
		*dst = strndup(text, len);
		if (!*dst)
			return -ENOMEM;
	}
	return 0;
}

static enum MHD_Result do_put_versioning(struct s3q *q)
{
	struct versioning_body v = {NULL, NULL, false};
	enum nb_s3_versioning st;
	enum MHD_Result ret;
	int r;

	if (!body_digests_ok(q, false))
		return reply_fail(q);
	r = nb_s3http_xml_walk(q->xml.data ? q->xml.data : "", q->xml.len, versioning_cb, &v);
	if (r < 0 || !v.root_ok || !v.status ||
	    (strcmp(v.status, "Enabled") && strcmp(v.status, "Suspended"))) {
		ret = reply_code(q, 400, "MalformedXML",
		                 "The XML you provided was not well-formed or did not validate "
		                 "against our published schema.");
		goto out;
	}
	if (v.mfa && !strcmp(v.mfa, "Enabled")) {
		ret = reply_code(q, 501, "NotImplemented", "MFA delete is not supported.");
		goto out;
	}
	st = !strcmp(v.status, "Enabled") ? NB_S3_VERSIONING_ENABLED : NB_S3_VERSIONING_SUSPENDED;
	r = nb_s3_bucket_set_versioning(q->h->s3, q->bucket, q->actor, st);
	ret = r < 0 ? reply_err(q, r) : queue(q, 200, resp_empty());
out:
	free(v.status);
	free(v.mfa);
	return ret;
}

/* An AccessControlPolicy document: the owner's FULL_CONTROL, and READ for
 * everyone when public. */
static enum MHD_Result reply_acl(struct s3q *q, const char *owner, bool public_read)
{
	struct nb_buf b;
	const char *name = owner_name(q, owner);

	nb_buf_init(&b, 16u << 10);
	nb_buf_puts(
	    &b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<AccessControlPolicy xmlns=\"" S3_NS
	        "\"><Owner><ID>");
	nb_xml_escape(&b, owner);
	nb_buf_puts(&b, "</ID><DisplayName>");
	nb_xml_escape(&b, name);
	nb_buf_puts(&b, "</DisplayName></Owner><AccessControlList><Grant><Grantee "
	                "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" "
	                "xsi:type=\"CanonicalUser\"><ID>");
	nb_xml_escape(&b, owner);
	nb_buf_puts(&b, "</ID><DisplayName>");
	nb_xml_escape(&b, name);
	nb_buf_puts(&b, "</DisplayName></Grantee><Permission>FULL_CONTROL</Permission></Grant>");
	if (public_read)
		nb_buf_puts(
		    &b, "<Grant><Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" "
		        "xsi:type=\"Group\"><URI>http://acs.amazonaws.com/groups/global/"
		        "AllUsers</URI></Grantee><Permission>READ</Permission></Grant>");
	if (nb_buf_puts(&b, "</AccessControlList></AccessControlPolicy>") < 0) {
		nb_buf_free(&b);
		return reply_code(q, 500, "InternalError", "The response was too large.");
	}
	return queue(q, 200, resp_xml(&b));
}

static enum MHD_Result do_get_bucket_acl(struct s3q *q)
{
	struct nb_s3_bucket b;
	int r = own_bucket(q, &b);

	if (r < 0)
		return reply_err(q, r);
	return reply_acl(q, b.owner, b.public_read);
}

struct acl_body {
	bool root_ok;
	bool public_read;
	bool unsupported;
	char grantee_uri[256];
	char grantee_id[NB_S3_OWNER_MAX + 1];
	char perm[32];
	const char *owner;
};

static int acl_cb(void *ctx, const char *const *path, int depth, const char *text, size_t len)
{
	struct acl_body *a = ctx;

	if (depth == 1)
		a->root_ok = !strcmp(path[0], "AccessControlPolicy");
	if (depth >= 4 && !strcmp(path[2], "Grant") && text) {
		char *dst = NULL;
		size_t sz = 0;
		if (depth == 5 && !strcmp(path[3], "Grantee") && !strcmp(path[4], "URI")) {
			dst = a->grantee_uri;
			sz = sizeof(a->grantee_uri);
		} else if (depth == 5 && !strcmp(path[3], "Grantee") &&
		           (!strcmp(path[4], "ID") || !strcmp(path[4], "EmailAddress"))) {
			dst = a->grantee_id;
			sz = sizeof(a->grantee_id);
			if (!strcmp(path[4], "EmailAddress"))
				a->unsupported = true;
		} else if (depth == 4 && !strcmp(path[3], "Permission")) {
			dst = a->perm;
			sz = sizeof(a->perm);
		}
		if (dst) {
			if (len >= sz)
				a->unsupported = true;
			else {
				memcpy(dst, text, len);
				dst[len] = '\0';
			}
		}
	}
	if (depth == 3 && !strcmp(path[2], "Grant")) {
		if (a->grantee_uri[0]) {
			if (strstr(a->grantee_uri, "/groups/global/AllUsers") &&
			    !strcmp(a->perm, "READ"))
				a->public_read = true;
			else
				a->unsupported = true;
		} else if (strcmp(a->grantee_id, a->owner)) {
			a->unsupported = true;
		}
		a->grantee_uri[0] = a->grantee_id[0] = a->perm[0] = '\0';
	}
	return 0;
}

/* PutBucketAcl: a canned ACL header, or a policy document granting READ to
 * AllUsers (public) or nothing beyond the owner (private). */
static enum MHD_Result do_put_bucket_acl(struct s3q *q)
{
	struct nb_s3_bucket b;
	int pub = bucket_acl_header(q), r;

	if (pub == -2)
		return reply_fail(q);
	r = own_bucket(q, &b);
	if (r < 0)
		return reply_err(q, r);
	if (pub < 0) {
		struct acl_body a;

		if (!body_digests_ok(q, false))
			return reply_fail(q);
		memset(&a, 0, sizeof(a));
		a.owner = b.owner;
		r = nb_s3http_xml_walk(q->xml.data ? q->xml.data : "", q->xml.len, acl_cb, &a);
		if (r < 0 || !a.root_ok)
			return reply_code(q, 400, "MalformedACLError",
			                  "The XML you provided was not well-formed or did not "
			                  "validate against our published schema.");
		if (a.unsupported)
			return reply_code(q, 501, "NotImplemented",
			                  "Only the owner's grant and READ for AllUsers are "
			                  "supported.");
		pub = a.public_read;
	}
	r = nb_s3_bucket_set_public_read(q->h->s3, q->bucket, q->actor, pub == 1);
	if (r < 0)
		return reply_err(q, r);
	return queue(q, 200, resp_empty());
}

static enum MHD_Result do_no_config(struct s3q *q)
{
	struct nb_s3_bucket b;
	int r = own_bucket(q, &b);

	if (r < 0)
		return reply_err(q, r);
	return reply_code(q, 404, q->no_config_code, "The specified configuration does not exist.");
}

/* ==== listings ==== */

/* max-keys and friends: default 1000, capped at 1000; false (and a failure)
 * when not a number. */
static bool max_arg(struct s3q *q, const char *name, uint32_t *out)
{
	const char *v = arg(q, name);
	uint64_t n;

	*out = NB_S3_LIST_MAX;
	if (!v)
		return true;
	if (nb_parse_u64(v, &n) < 0) {
		fail(q, 400, "InvalidArgument",
		     "Provided %s not an integer or within integer range", name);
		return false;
	}
	*out = n > NB_S3_LIST_MAX ? NB_S3_LIST_MAX : (uint32_t)n;
	return true;
}

/* encoding-type: false (and a failure) for anything but url. */
static bool encoding_arg(struct s3q *q, bool *url)
{
	const char *v = arg(q, "encoding-type");

	*url = false;
	if (!v)
		return true;
	if (strcasecmp(v, "url")) {
		fail(q, 400, "InvalidArgument", "Invalid Encoding Method specified in Request");
		return false;
	}
	*url = true;
	return true;
}

static const char *nonempty(const char *s)
{
	return s && *s ? s : NULL;
}

static enum MHD_Result do_list_objects(struct s3q *q, bool v2)
{
	struct nb_s3_list_opts o;
	struct nb_s3_list l;
	struct nb_buf b;
	struct nb_xml x;
	bool url, fetch_owner = false;
	const char *tok = arg(q, "continuation-token");
	char t[32];
	int r;

	memset(&o, 0, sizeof(o));
	memset(&l, 0, sizeof(l));
	if (!max_arg(q, "max-keys", &o.max_keys) || !encoding_arg(q, &url))
		return reply_fail(q);
	if (v2 && tok && !*tok)
		return reply_code(q, 400, "InvalidArgument",
		                  "The continuation token provided is incorrect");
	o.prefix = nonempty(arg(q, "prefix"));
	o.delimiter = nonempty(arg(q, "delimiter"));
	if (v2) {
		o.start_after = nonempty(arg(q, "start-after"));
		o.token = tok;
		fetch_owner = arg(q, "fetch-owner") && !strcmp(arg(q, "fetch-owner"), "true");
	} else {
		o.start_after = nonempty(arg(q, "marker"));
	}
	r = nb_s3_list_objects(q->h->s3, q->bucket, q->actor, &o, &l);
	if (r < 0) {
		nb_s3_list_clear(&l);
		return reply_err(q, r);
	}
	nb_buf_init(&b, 32u << 20);
	nb_xml_begin(&x, &b, "ListBucketResult", S3_NS);
	nb_xml_text(&x, "Name", q->bucket);
	xml_enc(&x, "Prefix", arg(q, "prefix"), url);
	if (o.delimiter)
		xml_enc(&x, "Delimiter", o.delimiter, url);
	nb_xml_int(&x, "MaxKeys", o.max_keys);
	if (url)
		nb_xml_text(&x, "EncodingType", "url");
	nb_xml_bool(&x, "IsTruncated", l.truncated);
	if (v2) {
		nb_xml_int(&x, "KeyCount", (long long)(l.n_items + l.n_prefixes));
		if (tok)
			nb_xml_text(&x, "ContinuationToken", tok);
		if (l.truncated && l.next_token)
			nb_xml_text(&x, "NextContinuationToken", l.next_token);
		if (o.start_after)
			xml_enc(&x, "StartAfter", o.start_after, url);
	} else {
		xml_enc(&x, "Marker", arg(q, "marker"), url);
		if (l.truncated && l.next_marker)
			xml_enc(&x, "NextMarker", l.next_marker, url);
	}
	for (size_t i = 0; i < l.n_items; i++) {
		const struct nb_s3_object *it = &l.items[i];
		nb_xml_open(&x, "Contents");
		xml_enc(&x, "Key", it->key, url);
		iso_time(it->mtime_ms, t);
		nb_xml_text(&x, "LastModified", t);
		nb_xml_text(&x, "ETag", it->etag);
		nb_xml_int(&x, "Size", (long long)it->size);
		if (!v2 || fetch_owner)
			xml_owner(q, &x, "Owner", it->owner);
		nb_xml_text(&x, "StorageClass", "STANDARD");
		nb_xml_close(&x);
	}
	for (size_t i = 0; i < l.n_prefixes; i++) {
		nb_xml_open(&x, "CommonPrefixes");
		xml_enc(&x, "Prefix", l.prefixes[i], url);
		nb_xml_close(&x);
	}
	nb_s3_list_clear(&l);
	return reply_doc(q, &x, &b);
}

static enum MHD_Result do_list_versions(struct s3q *q)
{
	struct nb_s3_list_opts o;
	struct nb_s3_list l;
	struct nb_buf b;
	struct nb_xml x;
	bool url;
	char t[32];
	int r;

	memset(&o, 0, sizeof(o));
	memset(&l, 0, sizeof(l));
	if (!max_arg(q, "max-keys", &o.max_keys) || !encoding_arg(q, &url))
		return reply_fail(q);
	o.prefix = nonempty(arg(q, "prefix"));
	o.delimiter = nonempty(arg(q, "delimiter"));
	o.key_marker = nonempty(arg(q, "key-marker"));
	o.version_id_marker = nonempty(arg(q, "version-id-marker"));
	if (o.version_id_marker && !o.key_marker)
		return reply_code(q, 400, "InvalidArgument",
		                  "A version-id marker cannot be specified without a key marker.");
	r = nb_s3_list_versions(q->h->s3, q->bucket, q->actor, &o, &l);
	if (r < 0) {
		nb_s3_list_clear(&l);
		return reply_err(q, r);
	}
	nb_buf_init(&b, 32u << 20);
	nb_xml_begin(&x, &b, "ListVersionsResult", S3_NS);
	nb_xml_text(&x, "Name", q->bucket);
	xml_enc(&x, "Prefix", arg(q, "prefix"), url);
	xml_enc(&x, "KeyMarker", arg(q, "key-marker"), url);
	nb_xml_text(&x, "VersionIdMarker",
	            arg(q, "version-id-marker") ? arg(q, "version-id-marker") : "");
	if (l.truncated) {
		xml_enc(&x, "NextKeyMarker", l.next_marker ? l.next_marker : "", url);
		nb_xml_text(&x, "NextVersionIdMarker", l.next_version_id_marker);
	}
	nb_xml_int(&x, "MaxKeys", o.max_keys);
	if (o.delimiter)
		xml_enc(&x, "Delimiter", o.delimiter, url);
	if (url)
		nb_xml_text(&x, "EncodingType", "url");
	nb_xml_bool(&x, "IsTruncated", l.truncated);
	for (size_t i = 0; i < l.n_items; i++) {
		const struct nb_s3_object *it = &l.items[i];
		nb_xml_open(&x, it->delete_marker ? "DeleteMarker" : "Version");
		xml_enc(&x, "Key", it->key, url);
		nb_xml_text(&x, "VersionId", it->version_id);
		nb_xml_bool(&x, "IsLatest", it->is_latest);
		iso_time(it->mtime_ms, t);
		nb_xml_text(&x, "LastModified", t);
		if (!it->delete_marker) {
			nb_xml_text(&x, "ETag", it->etag);
			nb_xml_int(&x, "Size", (long long)it->size);
			nb_xml_text(&x, "StorageClass", "STANDARD");
		}
		xml_owner(q, &x, "Owner", it->owner);
		nb_xml_close(&x);
	}
	for (size_t i = 0; i < l.n_prefixes; i++) {
		nb_xml_open(&x, "CommonPrefixes");
		xml_enc(&x, "Prefix", l.prefixes[i], url);
		nb_xml_close(&x);
	}
	nb_s3_list_clear(&l);
	return reply_doc(q, &x, &b);
}

static enum MHD_Result do_list_uploads(struct s3q *q)
{
	struct nb_s3_list_opts o;
	struct nb_s3_uploads u;
	struct nb_buf b;
	struct nb_xml x;
	bool url;
	char t[32];
	int r;

	memset(&o, 0, sizeof(o));
	memset(&u, 0, sizeof(u));
	if (!max_arg(q, "max-uploads", &o.max_keys) || !encoding_arg(q, &url))
		return reply_fail(q);
	o.prefix = nonempty(arg(q, "prefix"));
	o.delimiter = nonempty(arg(q, "delimiter"));
	o.key_marker = nonempty(arg(q, "key-marker"));
	o.version_id_marker = nonempty(arg(q, "upload-id-marker"));
	r = nb_s3_mpu_list(q->h->s3, q->bucket, q->actor, &o, &u);
	if (r < 0) {
		nb_s3_uploads_clear(&u);
		return reply_err(q, r);
	}
	nb_buf_init(&b, 32u << 20);
	nb_xml_begin(&x, &b, "ListMultipartUploadsResult", S3_NS);
	nb_xml_text(&x, "Bucket", q->bucket);
	xml_enc(&x, "KeyMarker", arg(q, "key-marker"), url);
	nb_xml_text(&x, "UploadIdMarker",
	            arg(q, "upload-id-marker") ? arg(q, "upload-id-marker") : "");
	if (u.truncated) {
		xml_enc(&x, "NextKeyMarker", u.next_key_marker ? u.next_key_marker : "", url);
		nb_xml_text(&x, "NextUploadIdMarker", u.next_upload_id_marker);
	}
	xml_enc(&x, "Prefix", arg(q, "prefix"), url);
	if (o.delimiter)
		xml_enc(&x, "Delimiter", o.delimiter, url);
	nb_xml_int(&x, "MaxUploads", o.max_keys);
	if (url)
		nb_xml_text(&x, "EncodingType", "url");
	nb_xml_bool(&x, "IsTruncated", u.truncated);
	for (size_t i = 0; i < u.n; i++) {
		const struct nb_s3_upload *up = &u.uploads[i];
		nb_xml_open(&x, "Upload");
		xml_enc(&x, "Key", up->key, url);
		nb_xml_text(&x, "UploadId", up->upload_id);
		xml_owner(q, &x, "Initiator", up->owner);
		xml_owner(q, &x, "Owner", up->owner);
		nb_xml_text(&x, "StorageClass", "STANDARD");
		iso_time(up->initiated_ms, t);
		nb_xml_text(&x, "Initiated", t);
		nb_xml_close(&x);
	}
	for (size_t i = 0; i < u.n_prefixes; i++) {
		nb_xml_open(&x, "CommonPrefixes");
		xml_enc(&x, "Prefix", u.prefixes[i], url);
		nb_xml_close(&x);
	}
	nb_s3_uploads_clear(&u);
	return reply_doc(q, &x, &b);
}

static enum MHD_Result do_list_parts(struct s3q *q)
{
	struct nb_s3_parts p;
	struct nb_buf b;
	struct nb_xml x;
	uint32_t max;
	uint64_t marker = 0;
	char t[32];
	int r;

	memset(&p, 0, sizeof(p));
	if (!max_arg(q, "max-parts", &max))
		return reply_fail(q);
	if (arg(q, "part-number-marker") &&
	    (nb_parse_u64(arg(q, "part-number-marker"), &marker) < 0 || marker > NB_S3_PARTS_MAX))
		return reply_code(q, 400, "InvalidArgument", "Invalid part-number-marker.");
	r = nb_s3_mpu_list_parts(q->h->s3, q->bucket, q->key, arg(q, "uploadId"), q->actor,
	                         (uint32_t)marker, max, &p);
	if (r < 0) {
		nb_s3_parts_clear(&p);
		return reply_err(q, r);
	}
	nb_buf_init(&b, 32u << 20);
	nb_xml_begin(&x, &b, "ListPartsResult", S3_NS);
	nb_xml_text(&x, "Bucket", q->bucket);
	nb_xml_text(&x, "Key", q->key);
	nb_xml_text(&x, "UploadId", arg(q, "uploadId"));
	xml_owner(q, &x, "Initiator", p.upload.owner);
	xml_owner(q, &x, "Owner", p.upload.owner);
	nb_xml_text(&x, "StorageClass", "STANDARD");
	nb_xml_int(&x, "PartNumberMarker", (long long)marker);
	if (p.truncated)
		nb_xml_int(&x, "NextPartNumberMarker", p.next_marker);
	nb_xml_int(&x, "MaxParts", max);
	nb_xml_bool(&x, "IsTruncated", p.truncated);
	for (size_t i = 0; i < p.n; i++) {
		const struct nb_s3_part *pt = &p.parts[i];
		nb_xml_open(&x, "Part");
		nb_xml_int(&x, "PartNumber", pt->number);
		iso_time(pt->mtime_ms, t);
		nb_xml_text(&x, "LastModified", t);
		nb_xml_text(&x, "ETag", pt->etag);
		nb_xml_int(&x, "Size", (long long)pt->size);
		if (pt->checksum_algo[0] && pt->checksum_value[0]) {
			char name[24];
			snprintf(name, sizeof(name), "Checksum%s", pt->checksum_algo);
			/* the writer keeps names by pointer until closed: a leaf closes at once */
			nb_xml_text(&x, name, pt->checksum_value);
		}
		nb_xml_close(&x);
	}
	nb_s3_parts_clear(&p);
	return reply_doc(q, &x, &b);
}

/* ==== objects ==== */

static void meta_headers(struct MHD_Response *r, const json_t *user)
{
	const char *k;
	json_t *v;
	char name[NB_S3_META_MAX + 16];

	json_object_foreach((json_t *)user, k, v)
	{
		snprintf(name, sizeof(name), "x-amz-meta-%s", k);
		add_hdr(r, name, json_string_value(v));
	}
}

/* response-content-type and friends override what is stored (GET only). */
static const char * override(struct s3q *q, const char *param, const char *stored)
{
	const char *v = q->head ? NULL : arg(q, param);

	return v && *v ? v : stored;
}

static void object_headers(struct s3q *q, struct MHD_Response *r, const struct nb_s3_object *o)
{
	char date[40];

	add_hdr(r, "ETag", o->etag);
	nb_s3http_format_date(o->mtime_ms, date, sizeof(date));
	add_hdr(r, "Last-Modified", date);
	add_hdr(r, "Content-Type",
	        override(q, "response-content-type",
	                 o->content_type ? o->content_type : "binary/octet-stream"));
	add_hdr(r, "Content-Encoding",
	        override(q, "response-content-encoding", o->content_encoding));
	add_hdr(r, "Content-Disposition",
	        override(q, "response-content-disposition", o->content_disposition));
	add_hdr(r, "Cache-Control", override(q, "response-cache-control", o->cache_control));
	add_hdr(r, "Content-Language",
	        override(q, "response-content-language", o->content_language));
	add_hdr(r, "Expires", override(q, "response-expires", o->expires));
	add_hdr(r, "Accept-Ranges", "bytes");
	if (strcmp(o->version_id, "null"))
		add_hdr(r, "x-amz-version-id", o->version_id);
	if (o->user_meta)
		meta_headers(r, o->user_meta);
	if (o->parts && arg(q, "partNumber")) {
		char n[16];
		snprintf(n, sizeof(n), "%u", o->parts);
		add_hdr(r, "x-amz-mp-parts-count", n);
	}
	if (o->checksum_value && o->checksum_algo[0] && hdr(q, "x-amz-checksum-mode") &&
	    !strcasecmp(hdr(q, "x-amz-checksum-mode"), "ENABLED")) {
		char name[32];
		size_t i;
		snprintf(name, sizeof(name), "x-amz-checksum-%s", o->checksum_algo);
		for (i = 0; name[i]; i++)
			name[i] = (char)tolower((unsigned char)name[i]);
		add_hdr(r, name, o->checksum_value);
	}
}

/* Records a delete marker in q's failure headers. */
static void note_marker(struct s3q *q, const struct nb_s3_object *o)
{
	if (o->delete_marker) {
		q->fail_marker = true;
		nb_strlcpy(q->fail_version, o->version_id, sizeof(q->fail_version));
	}
}

/* Bodies up to this size are answered from memory: a pread and one
 * sendmsg of header and body (MHD sends a buffer response's header and body
 * together), where sendfile costs a send of the header and a sendfile of the
 * body, each pushed through TCP on its own (4 KiB GETs: 17 % more per second
 * measured). Larger ones keep sendfile. */
#define SMALL_BODY (64u << 10)

static struct MHD_Response *resp_small_body(struct nb_s3_reader *rd)
{
	char *buf;
	size_t got = 0;

	if (rd->data) {
		/* kept in its row: the bytes are here already */
		struct MHD_Response *resp;
		if (rd->offset || rd->length != rd->obj.size)
			return MHD_create_response_from_buffer(rd->length, rd->data + rd->offset,
			                                       MHD_RESPMEM_MUST_COPY);
		resp = MHD_create_response_from_buffer(rd->length, rd->data, MHD_RESPMEM_MUST_FREE);
		if (resp)
			rd->data = NULL; /* the response frees it */
		return resp;
	}
	buf = malloc(rd->length ? rd->length : 1);
	if (!buf)
		return NULL;
	while (got < rd->length) {
		ssize_t n = pread(rd->fd, buf + got, rd->length - got, (off_t)(rd->offset + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) { /* shorter than its row says: no answer rather than a wrong one */
			free(buf);
			return NULL;
		}
		got += (size_t)n;
	}
	return MHD_create_response_from_buffer(rd->length, buf, MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result do_get_object(struct s3q *q)
{
	struct nb_s3_reader rd;
	struct nb_s3_cond cond;
	struct nb_s3_range range;
	struct MHD_Response *resp;
	const char *vid = arg(q, "versionId");
	const char *pn = arg(q, "partNumber");
	enum MHD_Result ret;
	int r;

	memset(&rd, 0, sizeof(rd));
	rd.fd = -1;
	parse_cond(q, "", &cond);
	nb_s3http_parse_range(hdr(q, "Range"), &range);
	if (pn) {
		/* a part of a multipart object: only part 1 of a simple one */
		if (strcmp(pn, "1"))
			return reply_code(
			    q, 501, "NotImplemented",
			    "GET of one part of a multipart object is not supported.");
		if (range.kind != NB_S3_RANGE_NONE)
			return reply_code(q, 400, "InvalidRequest",
			                  "Cannot specify both Range header and partNumber query "
			                  "parameter");
	}
	if (vid && !*vid)
		return reply_code(q, 400, "InvalidArgument",
		                  "Version id cannot be the empty string");
	r = nb_s3_object_open(q->h->s3, q->bucket, q->key, vid, q->actor, &cond, &range, &rd);
	if (r == 0 && pn && rd.obj.parts > 1) {
		nb_s3_reader_close(&rd);
		return reply_code(q, 501, "NotImplemented",
		                  "GET of one part of a multipart object is not supported.");
	}
	if (r == -NB_S3_E_NOT_MODIFIED) {
		resp = resp_empty();
		if (resp) {
			char date[40];
			add_hdr(resp, "ETag", rd.obj.etag);
			nb_s3http_format_date(rd.obj.mtime_ms, date, sizeof(date));
			add_hdr(resp, "Last-Modified", date);
		}
		nb_s3_reader_close(&rd);
		return queue(q, 304, resp);
	}
	if (r < 0) {
		note_marker(q, &rd.obj);
		if (r == -NB_S3_E_INVALID_RANGE)
			q->fail_size = (int64_t)rd.obj.size;
		nb_s3_reader_close(&rd);
		return reply_err(q, r);
	}
	if (rd.length == 0 || q->head) {
		/* HEAD: MHD sends the headers of a response this long, and no body */
		resp = !(q->head && rd.length) ? resp_empty()
		       : rd.data ? resp_small_body(&rd)
		                 : MHD_create_response_from_fd_at_offset64(rd.length, rd.fd,
		                                                           rd.offset);
		if (resp && q->head && rd.length)
			rd.fd = -1; /* the response owns it */
	} else if (rd.length <= SMALL_BODY || rd.data) {
		/* Small: read into memory, so MHD sends the header and the body
		 * with one sendmsg instead of a send and a sendfile. */
		resp = resp_small_body(&rd);
	} else {
		resp = MHD_create_response_from_fd_at_offset64(rd.length, rd.fd, rd.offset);
		if (resp)
			rd.fd = -1;
	}
	if (!resp) {
		nb_s3_reader_close(&rd);
		return MHD_NO;
	}
	object_headers(q, resp, &rd.obj);
	if (rd.partial) {
		char cr[80];
		snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)rd.offset,
		         (unsigned long long)(rd.offset + rd.length - 1),
		         (unsigned long long)rd.obj.size);
		add_hdr(resp, "Content-Range", cr);
	}
	ret = queue(q, rd.partial ? 206 : 200, resp);
	nb_s3_reader_close(&rd);
	return ret;
}

static enum MHD_Result reply_put(struct s3q *q, const struct nb_s3_put_result *res,
                                 enum nb_cksum_algo algo, const char *ck)
{
	struct MHD_Response *resp = resp_empty();

	if (!resp)
		return MHD_NO;
	add_hdr(resp, "ETag", res->etag);
	if (res->version_id[0] && strcmp(res->version_id, "null"))
		add_hdr(resp, "x-amz-version-id", res->version_id);
	if (algo != NB_CKSUM_NONE && ck)
		add_hdr(resp, nb_cksum_header(algo), ck);
	return queue(q, 200, resp);
}

/* PutObject and UploadPart, once the body is in. */
static enum MHD_Result do_put_finish(struct s3q *q)
{
	struct nb_s3_expect ex;
	struct nb_s3_put_result res;
	enum nb_cksum_algo algo = q->ck_algo;
	const char *ck = q->ck_value;
	struct nb_s3_put *p = q->put;
	int r;

	memset(&ex, 0, sizeof(ex));
	memset(&res, 0, sizeof(res));
	if (q->dec) {
		const char *v = nb_chunked_checksum(q->dec, &algo);
		ck = v;
		if (!v)
			algo = NB_CKSUM_NONE;
	} else if (q->claimed_sha[0]) {
		ex.content_sha256 = q->claimed_sha;
	}
	ex.content_md5 = hdr(q, "Content-MD5");
	if (algo != NB_CKSUM_NONE)
		expect_set(&ex, algo, ck);
	q->put = NULL;
	r = nb_s3_put_commit(p, &ex, &res);
	if (r < 0)
		return reply_err(q, r);
	return reply_put(q, &res, algo, ck);
}

static enum MHD_Result do_delete_object(struct s3q *q)
{
	struct nb_s3_delete_result res;
	struct MHD_Response *resp;
	const char *vid = arg(q, "versionId");
	int r;

	memset(&res, 0, sizeof(res));
	if (vid && !*vid)
		return reply_code(q, 400, "InvalidArgument",
		                  "Version id cannot be the empty string");
	r = nb_s3_object_delete(q->h->s3, q->bucket, q->key, vid, q->actor, &res);
	if (r < 0)
		return reply_err(q, r);
	resp = resp_empty();
	if (!resp)
		return MHD_NO;
	if (res.delete_marker)
		add_hdr(resp, "x-amz-delete-marker", "true");
	if (res.version_id[0] && (strcmp(res.version_id, "null") || vid))
		add_hdr(resp, "x-amz-version-id", res.version_id);
	return queue(q, 204, resp);
}

/* x-amz-copy-source: "[/]bucket/key[?versionId=id]", %-encoded. */
static bool copy_source(struct s3q *q, char **bucket, char **key, char **vid)
{
	const char *src = hdr(q, "x-amz-copy-source");
	const char *qm, *slash, *end;
	size_t klen;

	*bucket = *key = *vid = NULL;
	if (!src)
		goto bad;
	if (*src == '/')
		src++;
	qm = strchr(src, '?');
	end = qm ? qm : src + strlen(src);
	slash = memchr(src, '/', (size_t)(end - src));
	if (!slash || slash == src || slash + 1 == end)
		goto bad;
	if (nb_s3http_unescape(src, (size_t)(slash - src), bucket, NULL) < 0 ||
	    nb_s3http_unescape(slash + 1, (size_t)(end - slash - 1), key, &klen) < 0)
		goto bad;
	if (nb_s3_key_check(*key, klen) < 0)
		goto bad;
	if (qm) {
		if (strncmp(qm + 1, "versionId=", 10) || !qm[11] ||
		    nb_s3http_unescape(qm + 11, strlen(qm + 11), vid, NULL) < 0)
			goto bad;
	}
	return true;
bad:
	free(*bucket);
	free(*key);
	free(*vid);
	*bucket = *key = *vid = NULL;
	fail(q, 400, "InvalidArgument", "Invalid copy source.");
	return false;
}

static enum MHD_Result reply_copy(struct s3q *q, const char *root,
                                  const struct nb_s3_put_result *res, const char *src_vid)
{
	struct nb_buf b;
	struct nb_xml x;
	struct MHD_Response *resp;
	char t[32];

	nb_buf_init(&b, 4096);
	nb_xml_begin(&x, &b, root, S3_NS);
	iso_time(res->mtime_ms, t);
	nb_xml_text(&x, "LastModified", t);
	nb_xml_text(&x, "ETag", res->etag);
	if (nb_xml_end(&x) < 0) {
		nb_buf_free(&b);
		return reply_code(q, 500, "InternalError", "The response was too large.");
	}
	resp = resp_xml(&b);
	if (!resp)
		return MHD_NO;
	if (res->version_id[0] && strcmp(res->version_id, "null"))
		add_hdr(resp, "x-amz-version-id", res->version_id);
	if (src_vid && src_vid[0] && strcmp(src_vid, "null"))
		add_hdr(resp, "x-amz-copy-source-version-id", src_vid);
	return queue(q, 200, resp);
}

static enum MHD_Result do_copy_object(struct s3q *q)
{
	struct nb_s3_copy_opts o;
	struct nb_s3_put_result res;
	struct nb_s3_cond sc;
	char *sb, *sk, *sv, src_vid[NB_S3_VERSION_ID_SIZE] = "";
	const char *dir = hdr(q, "x-amz-metadata-directive");
	enum MHD_Result ret;
	int r;

	memset(&o, 0, sizeof(o));
	memset(&res, 0, sizeof(res));
	if (!object_acl_ok(q))
		return reply_fail(q);
	if (dir && strcmp(dir, "COPY") && strcmp(dir, "REPLACE"))
		return reply_code(q, 400, "InvalidArgument", "Unknown metadata directive.");
	if (!copy_source(q, &sb, &sk, &sv))
		return reply_fail(q);
	o.replace_meta = dir && !strcmp(dir, "REPLACE");
	if (o.replace_meta && !meta_from_headers(q, &o.meta)) {
		ret = reply_fail(q);
		goto out;
	}
	parse_cond(q, "x-amz-copy-source-", &sc);
	o.src_bucket = sb;
	o.src_key = sk;
	o.src_version_id = sv;
	o.src_cond = has_cond(&sc) ? &sc : NULL;
	o.bucket = q->bucket;
	o.key = q->key;
	o.actor = q->actor;
	o.quota = q->h->quota;
	r = nb_s3_object_copy(q->h->s3, &o, &res, src_vid);
	ret = r < 0 ? reply_err(q, r) : reply_copy(q, "CopyObjectResult", &res, src_vid);
out:
	free(sb);
	free(sk);
	free(sv);
	return ret;
}

static enum MHD_Result do_get_object_acl(struct s3q *q)
{
	struct nb_s3_object o;
	struct nb_s3_bucket b;
	const char *vid = arg(q, "versionId");
	enum MHD_Result ret;
	int r = own_bucket(q, &b);

	if (r < 0)
		return reply_err(q, r);
	memset(&o, 0, sizeof(o));
	r = nb_s3_object_head(q->h->s3, q->bucket, q->key, vid && *vid ? vid : NULL, q->actor, &o);
	if (r < 0) {
		note_marker(q, &o);
		nb_s3_object_clear(&o);
		return reply_err(q, r);
	}
	ret = reply_acl(q, o.owner ? o.owner : b.owner, b.public_read);
	nb_s3_object_clear(&o);
	return ret;
}

static enum MHD_Result do_put_object_acl(struct s3q *q)
{
	struct nb_s3_object o;
	int r;

	if (!object_acl_ok(q))
		return reply_fail(q);
	if (q->xml.len)
		return reply_code(q, 501, "NotImplemented",
		                  "Object ACLs are not supported: make the bucket public-read "
		                  "instead.");
	memset(&o, 0, sizeof(o));
	r = nb_s3_object_head(q->h->s3, q->bucket, q->key, NULL, q->actor, &o);
	nb_s3_object_clear(&o);
	if (r < 0)
		return reply_err(q, r);
	return queue(q, 200, resp_empty());
}

/* Objects carry no tags: an empty set, so copy helpers that ask carry on. */
static enum MHD_Result do_get_object_tagging(struct s3q *q)
{
	struct nb_s3_object o;
	struct nb_buf b;
	struct nb_xml x;
	const char *vid = arg(q, "versionId");
	int r;

	memset(&o, 0, sizeof(o));
	r = nb_s3_object_head(q->h->s3, q->bucket, q->key, vid && *vid ? vid : NULL, q->actor, &o);
	if (r < 0) {
		note_marker(q, &o);
		nb_s3_object_clear(&o);
		return reply_err(q, r);
	}
	nb_s3_object_clear(&o);
	nb_buf_init(&b, 4096);
	nb_xml_begin(&x, &b, "Tagging", S3_NS);
	nb_xml_open(&x, "TagSet");
	nb_xml_close(&x);
	return reply_doc(q, &x, &b);
}

/* ==== multipart ==== */

static enum MHD_Result do_create_mpu(struct s3q *q)
{
	struct nb_s3_put_opts o;
	struct nb_buf b;
	struct nb_xml x;
	struct MHD_Response *resp;
	char id[NB_S3_UPLOAD_ID_SIZE];
	enum nb_cksum_algo algo;
	int r;

	memset(&o, 0, sizeof(o));
	if (!object_acl_ok(q) || !meta_from_headers(q, &o.meta))
		return reply_fail(q);
	algo = nb_cksum_algo_from_label(hdr(q, "x-amz-checksum-algorithm"));
	if (hdr(q, "x-amz-checksum-algorithm") && algo == NB_CKSUM_NONE)
		return reply_code(q, 400, "InvalidRequest", "Invalid x-amz-checksum-algorithm.");
	o.bucket = q->bucket;
	o.key = q->key;
	o.actor = q->actor;
	o.content_length = -1;
	o.checksums = ck_flag(algo);
	o.quota = q->h->quota;
	r = nb_s3_mpu_create(q->h->s3, &o, id);
	if (r < 0)
		return reply_err(q, r);
	nb_buf_init(&b, 16u << 10);
	nb_xml_begin(&x, &b, "InitiateMultipartUploadResult", S3_NS);
	nb_xml_text(&x, "Bucket", q->bucket);
	nb_xml_text(&x, "Key", q->key);
	nb_xml_text(&x, "UploadId", id);
	if (nb_xml_end(&x) < 0) {
		nb_buf_free(&b);
		return reply_code(q, 500, "InternalError", "The response was too large.");
	}
	resp = resp_xml(&b);
	if (resp && algo != NB_CKSUM_NONE)
		add_hdr(resp, "x-amz-checksum-algorithm", nb_cksum_label(algo));
	return queue(q, 200, resp);
}

static enum MHD_Result do_upload_part_copy(struct s3q *q)
{
	struct nb_s3_part_opts po;
	struct nb_s3_copy_opts co;
	struct nb_s3_put_result res;
	struct nb_s3_cond sc;
	struct nb_s3_range range;
	const char *rh = hdr(q, "x-amz-copy-source-range");
	char *sb, *sk, *sv;
	uint64_t pn;
	enum MHD_Result ret;
	int r;

	memset(&po, 0, sizeof(po));
	memset(&co, 0, sizeof(co));
	memset(&res, 0, sizeof(res));
	if (nb_parse_u64(arg(q, "partNumber"), &pn) < 0 || pn < 1 || pn > NB_S3_PARTS_MAX)
		return reply_code(q, 400, "InvalidArgument",
		                  "Part number must be an integer between 1 and 10000, inclusive");
	nb_s3http_parse_range(rh, &range);
	if (rh && range.kind != NB_S3_RANGE_FROM_TO)
		return reply_code(
		    q, 400, "InvalidArgument",
		    "The x-amz-copy-source-range value must be of the form "
		    "bytes=first-last where first and last are the zero-based offsets "
		    "of the first and last bytes to copy");
	if (!copy_source(q, &sb, &sk, &sv))
		return reply_fail(q);
	parse_cond(q, "x-amz-copy-source-", &sc);
	po.bucket = q->bucket;
	po.key = q->key;
	po.upload_id = arg(q, "uploadId");
	po.part_number = (uint32_t)pn;
	po.actor = q->actor;
	po.content_length = -1;
	po.quota = q->h->quota;
	co.src_bucket = sb;
	co.src_key = sk;
	co.src_version_id = sv;
	co.src_cond = has_cond(&sc) ? &sc : NULL;
	co.bucket = q->bucket;
	co.key = q->key;
	co.actor = q->actor;
	co.quota = q->h->quota;
	r = nb_s3_part_copy(q->h->s3, &po, &co, rh ? &range : NULL, &res);
	ret = r < 0 ? reply_err(q, r) : reply_copy(q, "CopyPartResult", &res, sv);
	free(sb);
	free(sk);
	free(sv);
	return ret;
}

struct complete_body {
	struct nb_s3_complete_part *parts;
	char (*etags)[NB_S3_ETAG_SIZE + 8];
	size_t n;
	bool root_ok, bad;
	uint64_t num;
	bool have_num, have_etag;
};

static int complete_cb(void *ctx, const char *const *path, int depth, const char *text, size_t len)
{
	struct complete_body *c = ctx;

	if (depth == 1) {
		c->root_ok = !strcmp(path[0], "CompleteMultipartUpload");
		return 0;
	}
	if (depth == 3 && !strcmp(path[1], "Part") && text) {
		if (!strcmp(path[2], "PartNumber")) {
			char num[12];
			if (len >= sizeof(num)) {
				c->bad = true;
				return 0;
			}
			memcpy(num, text, len);
			num[len] = '\0';
			if (nb_parse_u64(num, &c->num) < 0 || c->num < 1 ||
			    c->num > NB_S3_PARTS_MAX)
				c->bad = true;
			c->have_num = true;
		} else if (!strcmp(path[2], "ETag")) {
			if (c->n == NB_S3_PARTS_MAX || len >= sizeof(c->etags[0])) {
				c->bad = true;
				return 0;
			}
			memcpy(c->etags[c->n], text, len);
			c->etags[c->n][len] = '\0';
			c->have_etag = true;
		}
		return 0;
	}
	if (depth == 2 && !strcmp(path[1], "Part")) {
		if (!c->have_num || !c->have_etag || c->n == NB_S3_PARTS_MAX) {
			c->bad = true;
		} else {
			c->parts[c->n].number = (uint32_t)c->num;
			c->parts[c->n].etag = c->etags[c->n];
			c->n++;
		}
		c->have_num = c->have_etag = false;
	}
	return 0;
}

static enum MHD_Result do_complete_mpu(struct s3q *q)
{
	struct complete_body c;
	struct nb_s3_put_result res;
	struct nb_s3_cond cond;
	struct nb_buf b, loc;
	struct nb_xml x;
	struct MHD_Response *resp = NULL;
	const char *host = hdr(q, "Host");
	enum MHD_Result ret;
	int r;

	memset(&c, 0, sizeof(c));
	memset(&res, 0, sizeof(res));
	if (!body_digests_ok(q, false))
		return reply_fail(q);
	c.parts = calloc(NB_S3_PARTS_MAX, sizeof(*c.parts));
	c.etags = calloc(NB_S3_PARTS_MAX, sizeof(*c.etags));
	if (!c.parts || !c.etags) {
		ret = reply_code(q, 500, "InternalError", "out of memory");
		goto out;
	}
	r = nb_s3http_xml_walk(q->xml.data ? q->xml.data : "", q->xml.len, complete_cb, &c);
	if (r < 0 || !c.root_ok || c.bad || !c.n) {
		ret = reply_code(q, 400, "MalformedXML",
		                 "The XML you provided was not well-formed or did not validate "
		                 "against our published schema.");
		goto out;
	}
	parse_cond(q, "", &cond);
	r = nb_s3_mpu_complete(q->h->s3, q->bucket, q->key, arg(q, "uploadId"), q->actor, c.parts,
	                       c.n, &q->h->quota, has_cond(&cond) ? &cond : NULL, &res);
	if (r < 0) {
		ret = reply_err(q, r);
		goto out;
	}
	nb_buf_init(&b, 64u << 10);
	nb_buf_init(&loc, 16u << 10);
	nb_buf_printf(&loc, "http://%s/%s/", host ? host : "localhost", q->bucket);
	nb_s3http_url_encode(&loc, q->key);
	nb_xml_begin(&x, &b, "CompleteMultipartUploadResult", S3_NS);
	nb_xml_text(&x, "Location", loc.data ? loc.data : "");
	nb_xml_text(&x, "Bucket", q->bucket);
	nb_xml_text(&x, "Key", q->key);
	nb_xml_text(&x, "ETag", res.etag);
	nb_buf_free(&loc);
	if (nb_xml_end(&x) < 0) {
		nb_buf_free(&b);
		ret = reply_code(q, 500, "InternalError", "The response was too large.");
		goto out;
	}
	resp = resp_xml(&b);
	if (resp && res.version_id[0] && strcmp(res.version_id, "null"))
		add_hdr(resp, "x-amz-version-id", res.version_id);
	ret = queue(q, 200, resp);
out:
	free(c.parts);
	free(c.etags);
	return ret;
}

static enum MHD_Result do_abort_mpu(struct s3q *q)
{
	int r = nb_s3_mpu_abort(q->h->s3, q->bucket, q->key, arg(q, "uploadId"), q->actor);

	if (r < 0)
		return reply_err(q, r);
	return queue(q, 204, resp_empty());
}

/* ==== DeleteObjects ==== */

struct del_obj {
	char *key;
	size_t keylen;
	char *vid;
};

struct delete_body {
	struct del_obj *objs;
	size_t n;
	bool quiet, root_ok, bad, too_many;
	struct del_obj cur;
};

static int delete_cb(void *ctx, const char *const *path, int depth, const char *text, size_t len)
{
	struct delete_body *d = ctx;

	if (depth == 1) {
		d->root_ok = !strcmp(path[0], "Delete");
		return 0;
	}
	if (depth == 2 && !strcmp(path[1], "Quiet") && text) {
		d->quiet = len == 4 && !strncasecmp(text, "true", 4);
		return 0;
	}
	if (depth == 3 && !strcmp(path[1], "Object") && text) {
		char **dst = !strcmp(path[2], "Key")         ? &d->cur.key
		             : !strcmp(path[2], "VersionId") ? &d->cur.vid
		                                             : NULL;
		if (!dst)
			return 0;
		free(*dst);
		*dst = malloc(len + 1);
		if (!*dst)
			return -ENOMEM;
		memcpy(*dst, text, len);
		(*dst)[len] = '\0';
		if (dst == &d->cur.key)
			d->cur.keylen = len;
		return 0;
	}
	if (depth == 2 && !strcmp(path[1], "Object")) {
		if (!d->cur.key || d->n == NB_S3HTTP_MAX_DELETE) {
			d->bad = !d->cur.key;
			d->too_many = d->n == NB_S3HTTP_MAX_DELETE;
			free(d->cur.key);
			free(d->cur.vid);
		} else {
			d->objs[d->n++] = d->cur;
		}
		memset(&d->cur, 0, sizeof(d->cur));
	}
	return 0;
}

static enum MHD_Result do_delete_objects(struct s3q *q)
{
	struct delete_body d;
	struct nb_s3_bucket bk;
	struct nb_buf b;
	struct nb_xml x;
	enum MHD_Result ret;
	int r;

	memset(&d, 0, sizeof(d));
	if (!body_digests_ok(q, true))
		return reply_fail(q);
	r = own_bucket(q, &bk);
	if (r < 0)
		return reply_err(q, r);
	d.objs = calloc(NB_S3HTTP_MAX_DELETE, sizeof(*d.objs));
	if (!d.objs)
		return reply_code(q, 500, "InternalError", "out of memory");
	r = nb_s3http_xml_walk(q->xml.data ? q->xml.data : "", q->xml.len, delete_cb, &d);
	free(d.cur.key);
	free(d.cur.vid);
	if (r < 0 || !d.root_ok || d.bad || d.too_many || !d.n) {
		ret = reply_code(q, 400, "MalformedXML",
		                 "The XML you provided was not well-formed or did not validate "
		                 "against our published schema.");
		goto out;
	}
	nb_buf_init(&b, 32u << 20);
	nb_xml_begin(&x, &b, "DeleteResult", S3_NS);
	for (size_t i = 0; i < d.n; i++) {
		struct nb_s3_delete_result res;
		const struct del_obj *o = &d.objs[i];

		memset(&res, 0, sizeof(res));
		r = nb_s3_key_check(o->key, o->keylen);
		if (!r && o->vid && !*o->vid)
			r = -NB_S3_E_INVALID_ARGUMENT;
		if (!r)
			r = nb_s3_object_delete(q->h->s3, q->bucket, o->key, o->vid, q->actor,
			                        &res);
		if (r < 0) {
			nb_xml_open(&x, "Error");
			nb_xml_text(&x, "Key", o->key);
			if (o->vid)
				nb_xml_text(&x, "VersionId", o->vid);
			nb_xml_text(&x, "Code", nb_s3_err_code(r));
			nb_xml_text(&x, "Message", nb_s3_err_message(r));
			nb_xml_close(&x);
			continue;
		}
		if (d.quiet)
			continue;
		nb_xml_open(&x, "Deleted");
		nb_xml_text(&x, "Key", o->key);
		if (o->vid)
			nb_xml_text(&x, "VersionId", o->vid);
		if (res.delete_marker) {
			nb_xml_bool(&x, "DeleteMarker", true);
			if (res.version_id[0])
				nb_xml_text(&x, "DeleteMarkerVersionId", res.version_id);
		}
		nb_xml_close(&x);
	}
	ret = reply_doc(q, &x, &b);
out:
	for (size_t i = 0; i < d.n; i++) {
		free(d.objs[i].key);
		free(d.objs[i].vid);
	}
	free(d.objs);
	return ret;
}

/* ==== dispatch ==== */

static enum MHD_Result finish(struct s3q *q)
{
	if (!body_done(q))
		return reply_fail(q);
	if (q->body == BODY_XML && !q->xml.len && q->op != OP_CREATE_BUCKET &&
	    q->op != OP_PUT_BUCKET_ACL && q->op != OP_PUT_OBJECT_ACL)
		return reply_code(q, 400, "MalformedXML",
		                  "The XML you provided was not well-formed or did not validate "
		                  "against our published schema.");
	switch (q->op) {
	case OP_LIST_BUCKETS:
		return do_list_buckets(q);
	case OP_CREATE_BUCKET:
		return do_create_bucket(q);
	case OP_DELETE_BUCKET:
		return do_delete_bucket(q);
	case OP_HEAD_BUCKET:
		return do_head_bucket(q);
	case OP_GET_LOCATION:
		return do_get_location(q);
	case OP_GET_VERSIONING:
		return do_get_versioning(q);
	case OP_PUT_VERSIONING:
		return do_put_versioning(q);
	case OP_GET_BUCKET_ACL:
		return do_get_bucket_acl(q);
	case OP_PUT_BUCKET_ACL:
		return do_put_bucket_acl(q);
	case OP_NO_CONFIG:
		return do_no_config(q);
	case OP_LIST_V1:
		return do_list_objects(q, false);
	case OP_LIST_V2:
		return do_list_objects(q, true);
	case OP_LIST_VERSIONS:
		return do_list_versions(q);
	case OP_LIST_UPLOADS:
		return do_list_uploads(q);
	case OP_DELETE_OBJECTS:
		return do_delete_objects(q);
	case OP_PUT_OBJECT:
	case OP_UPLOAD_PART:
		return do_put_finish(q);
	case OP_COPY_OBJECT:
		return do_copy_object(q);
	case OP_GET_OBJECT:
	case OP_HEAD_OBJECT:
		return do_get_object(q);
	case OP_DELETE_OBJECT:
		return do_delete_object(q);
	case OP_GET_OBJECT_ACL:
		return do_get_object_acl(q);
	case OP_PUT_OBJECT_ACL:
		return do_put_object_acl(q);
	case OP_GET_OBJECT_TAGGING:
		return do_get_object_tagging(q);
	case OP_CREATE_MPU:
		return do_create_mpu(q);
	case OP_UPLOAD_PART_COPY:
		return do_upload_part_copy(q);
	case OP_COMPLETE_MPU:
		return do_complete_mpu(q);
	case OP_ABORT_MPU:
		return do_abort_mpu(q);
	case OP_LIST_PARTS:
		return do_list_parts(q);
	default:
		return reply_code(q, 501, "NotImplemented", "Not implemented.");
	}
}

/* An early failure may be answered before the body only when the client
 * has not started sending one (no body, or it waits for 100 Continue);
 * otherwise the body is read and dropped first, so that the client reads
 * the answer rather than a reset. */
static bool may_answer_now(struct s3q *q)
{
	const char *cl = hdr(q, "Content-Length"), *te = hdr(q, "Transfer-Encoding");
	const char *ex = hdr(q, "Expect");
	uint64_t n = 0;

	if (ex && !strcasecmp(ex, "100-continue"))
		return true;
	if (te)
		return false;
	return !cl || (nb_parse_u64(cl, &n) == 0 && n == 0);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **req_cls)
{
	struct s3q *q = *req_cls;

	(void)version;
	if (!q) {
		q = calloc(1, sizeof(*q));
		if (!q)
			return MHD_NO;
		q->h = cls;
		q->c = c;
		*req_cls = q;
		begin(q, url, method);
		if (q->fail_status && may_answer_now(q))
			return reply_fail(q);
		return MHD_YES;
	}
	if (q->responded) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size) {
		feed(q, upload_data, *upload_data_size);
		*upload_data_size = 0;
		if (q->fail_status && q->drained > DRAIN_MAX)
			return reply_fail(q);
		return MHD_YES;
	}
	if (q->fail_status)
		return reply_fail(q);
	return finish(q);
}

static void request_done(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)c;
	(void)toe;
	q_free(*req_cls);
	*req_cls = NULL;
}

/* ==== the service ==== */

int nb_s3http_start(struct nb_s3http *h, const struct nb_s3http_opts *o)
{
	int r;

	memset(h, 0, sizeof(*h));
	pthread_mutex_init(&h->keys_lock, NULL);
	if (!o || !o->listen || !o->s3 || !o->region || !o->st || !o->secrets)
		return -EINVAL;
	if (strlen(o->region) > NB_S3_REGION_MAX ||
	    (o->domain && strlen(o->domain) > NB_S3HTTP_DOMAIN_MAX))
		return -EINVAL;
	nb_strlcpy(h->region, o->region, sizeof(h->region));
	nb_strlcpy(h->domain, o->domain ? o->domain : "", sizeof(h->domain));
	h->st = o->st;
	h->secrets = o->secrets;
	h->quota.max_bytes = o->quota_bytes;
	h->quota.max_objects = o->quota_objects;
	h->upload_expiry_ms = o->upload_expiry_ms;
	h->next_sweep_ms = nb_now_ms() + SWEEP_EVERY_MS; /* open sweeps once */
	h->s3 = o->s3;
	if (!*o->listen)
		return 0;
	r = nb_http_start_raw(o->listen, handler, h, request_done, h, &h->daemon);
	if (r < 0) {
		h->s3 = NULL;
		h->daemon = NULL;
		return r;
	}
	return 0;
}

void nb_s3http_quiesce(struct nb_s3http *h)
{
	if (h && h->daemon)
		MHD_quiesce_daemon(h->daemon);
}

void nb_s3http_stop(struct nb_s3http *h)
{
	if (!h)
		return;
	if (h->daemon)
		MHD_stop_daemon(h->daemon);
	h->daemon = NULL;
	h->s3 = NULL;
	for (int i = 0; h->keys && i < KEY_CACHE_N; i++)
		key_entry_clear(&h->keys[i]);
	free(h->keys);
	h->keys = NULL;
}

void nb_s3http_tick(struct nb_s3http *h, struct nb_s3http_tick_stats *stats)
{
	struct nb_s3_sweep_stats sw = {0, 0};
	int64_t now = nb_now_ms();
	int r;

	memset(stats, 0, sizeof(*stats));
	if (!h || !h->s3)
		return;
	if (h->upload_expiry_ms > 0) {
		r = nb_s3_mpu_expire(h->s3, h->upload_expiry_ms, &stats->uploads_expired);
		if (r < 0)
			stats->err = r;
	}
	if (now < h->next_sweep_ms)
		return;
	h->next_sweep_ms = now + SWEEP_EVERY_MS;
	r = nb_s3_sweep(h->s3, &sw);
	if (r < 0 && !stats->err)
		stats->err = r;
	stats->tmp_removed = sw.tmp_removed;
	stats->data_removed = sw.data_removed;
}
