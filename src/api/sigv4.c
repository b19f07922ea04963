/* AWS Signature Version 4, verified the way botocore signs (see
 * botocore/auth.py: SigV4Auth, S3SigV4Auth, SigV4QueryAuth,
 * S3SigV4QueryAuth). Every string read from the request is bounded; nothing
 * here trusts a length it did not measure. */
#include "api/sigv4.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/util.h"

#define ALGO "AWS4-HMAC-SHA256"
#define TERMINATOR "aws4_request"
#define UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
#define CANON_MAX (1u << 20) /* ceiling of one canonical request */
#define METHOD_MAX 32
#define DATE_HDR_MAX 64

/* One part of a string: start and length, not NUL-terminated. */
struct span {
	const char *p;
	size_t n;
};

/* A canonical (re-encoded) query parameter, NUL-terminated in an arena. */
struct qparam {
	const char *k;
	const char *v;
};

static int fail(char *err, size_t errsz, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errsz, int code, const char *fmt, ...)
{
	va_list ap;

	if (err && errsz) {
		va_start(ap, fmt);
		vsnprintf(err, errsz, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* A short printable copy of untrusted text for error messages. */
static const char *clean(const char *s, size_t n, char out[48])
{
	size_t i, o = 0;

	for (i = 0; i < n && o < 40; i++)
		out[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (i < n) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

static bool span_is(struct span s, const char *lit)
{
	size_t n = strlen(lit);

	return s.n == n && memcmp(s.p, lit, n) == 0;
}

static bool is_ws(unsigned char c)
{
	/* What Python's str.split() takes for white space among ASCII. */
	return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

static bool is_hex(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
			return false;
	}
	return true;
}

static bool is_digits(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

static bool is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.' || c == '~';
}

/* A lowercase HTTP token character, as in a SignedHeaders name. */
static bool is_hdr_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c);
}

static bool is_scope_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.';
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

/* Decodes a query component: %XX and '+' (a space, as urlencode sends it).
 * out holds at least n bytes. -1 on a broken escape. */
static int query_decode(const char *s, size_t n, char *out, size_t *outlen)
{
	size_t i, o = 0;

	for (i = 0; i < n; i++) {
		if (s[i] == '%') {
			int hi, lo;

			if (i + 2 >= n)
				return -1;
			hi = hexval(s[i + 1]);
			lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			out[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else if (s[i] == '+') {
			out[o++] = ' ';
		} else {
			out[o++] = s[i];
		}
	}
	*outlen = o;
	return 0;
}

/* %-encodes all but the unreserved set (and '/' when keep_slash) with
 * uppercase hex. out holds at least 3n bytes. */
static size_t pct_encode(const char *s, size_t n, bool keep_slash, char *out)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i, o = 0;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (is_unreserved(c) || (keep_slash && c == '/')) {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	return o;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int days_in_month(int64_t y, int m)
{
	static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return 29;
	return dim[m - 1];
}

static int num(const char *s, size_t n)
{
	int v = 0;
	size_t i;

	for (i = 0; i < n; i++)
		v = v * 10 + (s[i] - '0');
	return v;
}

static int civil_to_epoch(int y, int mo, int d, int h, int mi, int s, int64_t *t)
{
	if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59)
		return -1;
	*t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
	return 0;
}

/* A credential scope's "YYYYMMDD". */
static bool scope_date_ok(const char *s, size_t n)
{
	int64_t t;

	return n == 8 && is_digits(s, 8) &&
	       civil_to_epoch(num(s, 4), num(s + 4, 2), num(s + 6, 2), 0, 0, 0, &t) == 0;
}

/* "YYYYMMDDTHHMMSSZ" */
static int amz_date_epoch(const char *s, size_t n, int64_t *t)
{
	if (n != 16 || !is_digits(s, 8) || s[8] != 'T' || !is_digits(s + 9, 6) || s[15] != 'Z')
		return -1;
	return civil_to_epoch(num(s, 4), num(s + 4, 2), num(s + 6, 2), num(s + 9, 2),
	                      num(s + 11, 2), num(s + 13, 2), t);
}

static void epoch_amz(int64_t t, char *out, size_t outsz)
{
	struct tm tm;
	time_t tt = (time_t)t;

	if ((int64_t)tt != t || !gmtime_r(&tt, &tm) || tm.tm_year + 1900 < 0 ||
	    tm.tm_year + 1900 > 9999) {
		snprintf(out, outsz, "@%lld", (long long)t);
		return;
	}
	snprintf(out, outsz, "%04d%02d%02dT%02d%02d%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* An HTTP Date: "[Sun, ]22 Nov 2026 05:01:02 GMT" (RFC 1123) or with a
 * numeric zone as Python's formatdate writes ("-0000", "+0100"). */
static int http_date_epoch(const char *s, int64_t *t)
{
	static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
	const char *p = s, *z;
	int day, mon = -1, year, h, mi, sec, i;
	int64_t off = 0;

	if (strnlen(s, DATE_HDR_MAX + 1) > DATE_HDR_MAX)
		return -1;
	while (*p == ' ')
		p++;
	if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')) {
		for (i = 0; (p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= 'a' && p[i] <= 'z'); i++)
			;
		if (i < 3 || i > 9 || p[i] != ',')
			return -1;
		p += i + 1;
		while (*p == ' ')
			p++;
	}
	if (!is_digits(p, 1))
		return -1;
	i = is_digits(p + 1, 1) ? 2 : 1;
	day = num(p, (size_t)i);
	p += i;
	if (*p != ' ' && *p != '-')
		return -1;
	p++;
	for (i = 0; i < 12; i++)
		if (strncasecmp(p, months + 3 * i, 3) == 0)
			mon = i + 1;
	if (mon < 0 || (p[3] != ' ' && p[3] != '-'))
		return -1;
	p += 4;
	if (!is_digits(p, 4) || p[4] != ' ')
		return -1;
	year = num(p, 4);
	p += 5;
	if (!is_digits(p, 2) || p[2] != ':' || !is_digits(p + 3, 2) || p[5] != ':' ||
	    !is_digits(p + 6, 2))
		return -1;
	h = num(p, 2);
	mi = num(p + 3, 2);
	sec = num(p + 6, 2);
	p += 8;
	while (*p == ' ')
		p++;
	z = p;
	if (!strncmp(z, "GMT", 3) || !strncmp(z, "UTC", 3)) {
		p += 3;
	} else if (!strncmp(z, "UT", 2)) {
		p += 2;
	} else if (*z == 'Z') {
		p++;
	} else if ((*z == '+' || *z == '-') && is_digits(z + 1, 4)) {
		if (num(z + 1, 2) > 23 || num(z + 3, 2) > 59)
			return -1;
		off = num(z + 1, 2) * 3600 + num(z + 3, 2) * 60;
		if (*z == '-')
			off = -off;
		p += 5;
	} else {
		return -1;
	}
	while (*p == ' ')
		p++;
	if (*p || civil_to_epoch(year, mon, day, h, mi, sec, t) < 0)
		return -1;
	*t -= off;
	return 0;
}

/* ---- the request ---- */

static int check_req(const struct nb_sigv4_req *r, char *err, size_t errsz)
{
	size_t i;

	if (!r->method || !*r->method || strnlen(r->method, METHOD_MAX + 1) > METHOD_MAX)
		return fail(err, errsz, -NB_E_INVALID, "invalid request method");
	if (r->path && strnlen(r->path, NB_SIGV4_MAX_PATH + 1) > NB_SIGV4_MAX_PATH)
		return fail(err, errsz, -NB_E_INVALID, "request path longer than %d bytes",
		            NB_SIGV4_MAX_PATH);
	if (r->query && strnlen(r->query, NB_SIGV4_MAX_QUERY + 1) > NB_SIGV4_MAX_QUERY)
		return fail(err, errsz, -NB_E_INVALID, "query string longer than %d bytes",
		            NB_SIGV4_MAX_QUERY);
	if (r->nheaders > NB_SIGV4_MAX_HEADERS)
		return fail(err, errsz, -NB_E_INVALID, "more than %d headers",
		            NB_SIGV4_MAX_HEADERS);
	if (r->nheaders && !r->headers)
		return fail(err, errsz, -EINVAL, "headers missing");
	for (i = 0; i < r->nheaders; i++)
		if (!r->headers[i].key)
			return fail(err, errsz, -EINVAL, "header without a name");
	return 0;
}

/* Number of headers called name; *val is the first one's value. */
static int hdr_find(const struct nb_sigv4_req *r, const char *name, const char **val)
{
	int n = 0;
	size_t i;

	*val = NULL;
	for (i = 0; i < r->nheaders; i++) {
		if (strcasecmp(r->headers[i].key, name))
			continue;
		if (!n)
			*val = r->headers[i].value ? r->headers[i].value : "";
		n++;
	}
	return n;
}

/* Next '&'-separated pair of a raw query; false at the end. */
static bool query_next(const char **pos, struct span *k, struct span *v)
{
	const char *s = *pos, *amp, *eq;
	size_t n;

	while (s && *s == '&')
		s++;
	if (!s || !*s)
		return false;
	amp = strchr(s, '&');
	n = amp ? (size_t)(amp - s) : strlen(s);
	eq = memchr(s, '=', n);
	k->p = s;
	k->n = eq ? (size_t)(eq - s) : n;
	v->p = eq ? eq + 1 : s + n;
	v->n = eq ? n - k->n - 1 : 0;
	*pos = amp ? amp + 1 : NULL;
	return true;
}

/* Finds parameter name (compared decoded) in the raw query: returns how
 * many times it occurs, the first value decoded into out. -1 when that
 * value does not fit, has a broken escape or a NUL. */
static int query_get(const char *query, const char *name, char *out, size_t outsz)
{
	const char *pos = query;
	struct span k, v;
	char key[64];
	size_t kl, vl;
	int n = 0;

	while (query_next(&pos, &k, &v)) {
		if (k.n >= sizeof(key) || query_decode(k.p, k.n, key, &kl) < 0 ||
		    kl != strlen(name) || memcmp(key, name, kl))
			continue;
		if (n++)
			continue;
		if (v.n >= outsz || query_decode(v.p, v.n, out, &vl) < 0 || memchr(out, '\0', vl))
			return -1;
		out[vl] = '\0';
	}
	return n;
}

static int qparam_cmp(const void *a, const void *b)
{
	const struct qparam *x = a, *y = b;
	int c = strcmp(x->k, y->k);

	return c ? c : strcmp(x->v, y->v);
}

/* The canonical query string: each key and value decoded and re-encoded,
 * pairs sorted by key then value, X-Amz-Signature left out when drop_sig. */
static int canon_query(const char *query, bool drop_sig, struct nb_buf *b, char *err, size_t errsz)
{
	struct qparam *ps = NULL;
	char *arena = NULL, *tmp = NULL;
	const char *pos = query;
	struct span k, v;
	size_t qlen, n = 1, m = 0, at = 0, i, dl;
	int r = 0;

	if (!query || !*query)
		return 0;
	qlen = strlen(query);
	for (i = 0; i < qlen; i++)
		n += query[i] == '&';
	if (n > NB_SIGV4_MAX_PARAMS)
		return fail(err, errsz, -NB_E_INVALID, "more than %d query parameters",
		            NB_SIGV4_MAX_PARAMS);
	ps = calloc(n, sizeof(*ps));
	arena = malloc(3 * qlen + 2 * n + 1);
	tmp = malloc(qlen + 1);
	if (!ps || !arena || !tmp) {
		r = -ENOMEM;
		goto out;
	}
	while (query_next(&pos, &k, &v)) {
		if (query_decode(k.p, k.n, tmp, &dl) < 0) {
			r = -NB_E_INVALID;
			break;
		}
		if (drop_sig && dl == 15 && !memcmp(tmp, "X-Amz-Signature", 15))
			continue;
		ps[m].k = arena + at;
		at += pct_encode(tmp, dl, false, arena + at);
		arena[at++] = '\0';
		if (query_decode(v.p, v.n, tmp, &dl) < 0) {
			r = -NB_E_INVALID;
			break;
		}
		ps[m].v = arena + at;
		at += pct_encode(tmp, dl, false, arena + at);
		arena[at++] = '\0';
		m++;
	}
	if (r < 0) {
		fail(err, errsz, r, "query string has a broken %%-escape");
		goto out;
	}
	qsort(ps, m, sizeof(*ps), qparam_cmp);
	for (i = 0; i < m && !r; i++) {
		if (i)
			r = nb_buf_append(b, "&", 1);
		if (!r)
			r = nb_buf_puts(b, ps[i].k);
		if (!r)
			r = nb_buf_append(b, "=", 1);
		if (!r)
			r = nb_buf_puts(b, ps[i].v);
	}
out:
	free(ps);
	free(arena);
	free(tmp);
	return r;
}

/* The canonical URI. S3: the path as sent. Others, as botocore: dot
 * segments and empty segments removed, then %-encoded once more (the path
 * as sent is already encoded, so this double-encodes). */
static int canon_uri(const struct nb_sigv4_req *r, struct nb_buf *b)
{
	const char *path = r->path && *r->path ? r->path : "/";
	size_t len = strlen(path), i = 0, nseg = 0, *segs = NULL, *lens = NULL, o = 0;
	char *norm = NULL, *enc = NULL;
	int ret;

	if (r->s3)
		return nb_buf_puts(b, path);
	segs = calloc(len / 2 + 2, sizeof(*segs));
	lens = calloc(len / 2 + 2, sizeof(*lens));
	norm = malloc(len + 2);
	if (!segs || !lens || !norm) {
		ret = -ENOMEM;
		goto out;
	}
	while (i < len) {
		size_t s = i, n;

		while (i < len && path[i] != '/')
			i++;
		n = i - s;
		if (n == 2 && path[s] == '.' && path[s + 1] == '.') {
			if (nseg)
				nseg--;
		} else if (n && !(n == 1 && path[s] == '.')) {
			segs[nseg] = s;
			lens[nseg++] = n;
		}
		i++;
	}
	if (path[0] == '/')
		norm[o++] = '/';
	for (i = 0; i < nseg; i++) {
		if (i)
			norm[o++] = '/';
		memcpy(norm + o, path + segs[i], lens[i]);
		o += lens[i];
	}
	if (nseg && path[len - 1] == '/')
		norm[o++] = '/';
	enc = malloc(3 * o + 1);
	if (!enc) {
		ret = -ENOMEM;
		goto out;
	}
	ret = nb_buf_append(b, enc, pct_encode(norm, o, true, enc));
out:
	free(segs);
	free(lens);
	free(norm);
	free(enc);
	return ret;
}

/* Appends value with leading and trailing white space removed and inner
 * runs of it turned into one space. */
static int append_trimmed(struct nb_buf *b, const char *v)
{
	const char *p = v, *e;
	int r = 0;

	while (*p && is_ws((unsigned char)*p))
		p++;
	while (*p && !r) {
		e = p;
		while (*e && !is_ws((unsigned char)*e))
			e++;
		r = nb_buf_append(b, p, (size_t)(e - p));
		p = e;
		while (*p && is_ws((unsigned char)*p))
			p++;
		if (*p && !r)
			r = nb_buf_append(b, " ", 1);
	}
	return r;
}

/* Checks a SignedHeaders list: lowercase token names separated by ';', no
 * repeats, at most NB_SIGV4_MAX_HEADERS. */
static int check_signed_headers(const char *s, size_t n, char *err, size_t errsz)
{
	struct span names[NB_SIGV4_MAX_HEADERS];
	size_t i = 0, count = 0, j;
	char c48[48];

	if (!n)
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE, "SignedHeaders is empty");
	if (n >= sizeof(((struct nb_sigv4_auth *)0)->signed_headers))
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE, "SignedHeaders is too long");
	while (i <= n) {
		size_t st = i;

		while (i < n && s[i] != ';')
			i++;
		if (i == st)
			return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
			            "SignedHeaders has an empty header name");
		if (count == NB_SIGV4_MAX_HEADERS)
			return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
			            "SignedHeaders names more than %d headers",
			            NB_SIGV4_MAX_HEADERS);
		for (j = st; j < i; j++)
			if (!is_hdr_char((unsigned char)s[j]))
				return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
				            "SignedHeaders has an invalid header name '%s'",
				            clean(s + st, i - st, c48));
		names[count].p = s + st;
		names[count].n = i - st;
		for (j = 0; j < count; j++)
			if (names[j].n == names[count].n &&
			    !memcmp(names[j].p, names[count].p, names[j].n))
				return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
				            "SignedHeaders names '%s' twice",
				            clean(s + st, i - st, c48));
		count++;
		i++;
	}
	return 0;
}

static bool signs_header(const char *list, const char *name)
{
	size_t n = strlen(name);
	const char *p = list;

	while (p && *p) {
		if (!strncmp(p, name, n) && (p[n] == ';' || !p[n]))
			return true;
		p = strchr(p, ';');
		if (p)
			p++;
	}
	return false;
}

/* "name:value\n" for each signed header, values of repeated headers joined
 * with ','. */
static int canon_headers(const struct nb_sigv4_req *r, const char *list, struct nb_buf *b,
                         char *err, size_t errsz)
{
	const char *p = list;
	char name[256], c48[48];
	int ret = 0;

	while (*p && !ret) {
		const char *e = strchr(p, ';');
		size_t n = e ? (size_t)(e - p) : strlen(p), i;
		int found = 0;

		if (n >= sizeof(name))
			return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
			            "SignedHeaders has a header name longer than %zu bytes",
			            sizeof(name) - 1);
		memcpy(name, p, n);
		name[n] = '\0';
		ret = nb_buf_puts(b, name);
		if (!ret)
			ret = nb_buf_append(b, ":", 1);
		for (i = 0; i < r->nheaders && !ret; i++) {
			const char *v = r->headers[i].value ? r->headers[i].value : "";

			if (strcasecmp(r->headers[i].key, name))
				continue;
			if (strnlen(v, NB_SIGV4_MAX_VALUE + 1) > NB_SIGV4_MAX_VALUE)
				return fail(err, errsz, -NB_E_INVALID,
				            "header %s is longer than %d bytes",
				            clean(name, n, c48), NB_SIGV4_MAX_VALUE);
			if (found++)
				ret = nb_buf_append(b, ",", 1);
			if (!ret)
				ret = append_trimmed(b, v);
		}
		if (!ret && !found)
			return fail(err, errsz, -NB_E_SIG_MISMATCH,
			            "header %s is signed but not in the request",
			            clean(name, n, c48));
		if (!ret)
			ret = nb_buf_append(b, "\n", 1);
		p = e ? e + 1 : p + n;
	}
	return ret;
}

/* The strings of a must be terminated inside their arrays. */
static bool auth_terminated(const struct nb_sigv4_auth *a)
{
#define T(f) (strnlen(a->f, sizeof(a->f)) < sizeof(a->f))
	return T(access_key) && T(date) && T(region) && T(service) && T(amz_date) &&
	       T(signed_headers) && T(signature) && T(payload_hash);
#undef T
}

static int build_canonical(const struct nb_sigv4_req *r, const struct nb_sigv4_auth *a,
                           struct nb_buf *b, char *err, size_t errsz)
{
	int ret;

	ret = check_req(r, err, errsz);
	if (ret < 0)
		return ret;
	if (!auth_terminated(a))
		return fail(err, errsz, -EINVAL, "unterminated field in the parsed signature");
	ret = check_signed_headers(a->signed_headers, strlen(a->signed_headers), err, errsz);
	if (ret < 0)
		return ret;
	ret = nb_buf_puts(b, r->method);
	if (!ret)
		ret = nb_buf_append(b, "\n", 1);
	if (!ret)
		ret = canon_uri(r, b);
	if (!ret)
		ret = nb_buf_append(b, "\n", 1);
	if (ret)
		goto out;
	ret = canon_query(r->query, a->presigned, b, err, errsz);
	if (ret)
		return ret;
	ret = nb_buf_append(b, "\n", 1);
	if (ret)
		goto out;
	ret = canon_headers(r, a->signed_headers, b, err, errsz);
	if (ret)
		return ret;
	ret = nb_buf_printf(b, "\n%s\n%s", a->signed_headers, a->payload_hash);
out:
	if (ret == -E2BIG)
		return fail(err, errsz, -NB_E_INVALID, "request too large to sign");
	if (ret)
		return fail(err, errsz, ret, "out of memory");
	return 0;
}

/* ---- crypto ---- */

static int hmac(const void *key, size_t klen, const void *data, size_t dlen, unsigned char out[32])
{
	unsigned int len = 0;

	if (klen > INT_MAX || !HMAC(EVP_sha256(), key, (int)klen, data, dlen, out, &len) ||
	    len != 32)
		return -NB_E_INTERNAL;
	return 0;
}

static int derive_key(const char *secret, const char *date, const char *region, const char *service,
                      unsigned char key[32])
{
	unsigned char k[64 + 4], k1[32], k2[32], *kp = k;
	size_t slen = strlen(secret), klen = 4 + slen;
	unsigned int dl = 0;
	EVP_MD_CTX *md = NULL;
	int r = -NB_E_INTERNAL;

	if (klen <= sizeof(k)) {
		memcpy(k, "AWS4", 4);
		memcpy(k + 4, secret, slen);
	} else {
		/* A key longer than SHA-256's block is HMAC'd as its digest. */
		md = EVP_MD_CTX_new();
		if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL) ||
		    !EVP_DigestUpdate(md, "AWS4", 4) || !EVP_DigestUpdate(md, secret, slen) ||
		    !EVP_DigestFinal_ex(md, k, &dl) || dl != 32)
			goto out;
		klen = 32;
	}
	if (hmac(kp, klen, date, strlen(date), k1) < 0 ||
	    hmac(k1, 32, region, strlen(region), k2) < 0 ||
	    hmac(k2, 32, service, strlen(service), k1) < 0 ||
	    hmac(k1, 32, TERMINATOR, strlen(TERMINATOR), key) < 0)
		goto out;
	r = 0;
out:
	EVP_MD_CTX_free(md);
	OPENSSL_cleanse(k, sizeof(k));
	OPENSSL_cleanse(k1, sizeof(k1));
	OPENSSL_cleanse(k2, sizeof(k2));
	return r;
}

static void to_hex(const unsigned char *in, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/* The hex signature of r as described by a, under the signing key. */
static int compute_signature(const struct nb_sigv4_req *r, const struct nb_sigv4_auth *a,
                             const unsigned char key[32], char sig[65], char *err, size_t errsz)
{
	struct nb_buf b;
	unsigned char mac[32];
	char crhash[65];
	int ret;

	nb_buf_init(&b, CANON_MAX);
	ret = build_canonical(r, a, &b, err, errsz);
	if (ret < 0)
		goto out;
	nb_sha256_hex(b.data, b.len, crhash);
	nb_buf_reset(&b);
	ret = nb_buf_printf(&b, ALGO "\n%s\n%s/%s/%s/" TERMINATOR "\n%s", a->amz_date, a->date,
	                    a->region, a->service, crhash);
	if (ret < 0) {
		ret = fail(err, errsz, ret == -E2BIG ? -NB_E_INVALID : ret, "out of memory");
		goto out;
	}
	ret = hmac(key, 32, b.data, b.len, mac);
	if (ret < 0) {
		fail(err, errsz, ret, "HMAC-SHA256 failed");
		goto out;
	}
	to_hex(mac, sizeof(mac), sig);
out:
	nb_buf_free(&b);
	return ret;
}

/* ---- parsing ---- */

static int parse_credential(struct span c, struct nb_sigv4_auth *out, char *err, size_t errsz)
{
	struct span part[5];
	size_t i = 0, np = 0, j;
	char c48[48];

	while (i <= c.n) {
		size_t st = i;

		while (i < c.n && c.p[i] != '/')
			i++;
		if (np == 5)
			return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
			            "Credential has more than 5 '/'-separated parts");
		part[np].p = c.p + st;
		part[np++].n = i - st;
		i++;
	}
	if (np != 5)
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
		            "Credential must be access-key/YYYYMMDD/region/service/aws4_request");
	if (!part[0].n || part[0].n >= sizeof(out->access_key))
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
		            "Credential has an access key of bad length");
	for (j = 0; j < part[0].n; j++) {
		char ch = part[0].p[j];

		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= '0' && ch <= '9')))
			return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
			            "Credential has an invalid access key");
	}
	if (!scope_date_ok(part[1].p, part[1].n))
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
		            "Credential date '%s' is not a valid YYYYMMDD",
		            clean(part[1].p, part[1].n, c48));
	for (i = 2; i < 4; i++) {
		size_t max = i == 2 ? sizeof(out->region) : sizeof(out->service);

		if (!part[i].n || part[i].n >= max)
			return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
			            "Credential has an empty or too long %s",
			            i == 2 ? "region" : "service");
		for (j = 0; j < part[i].n; j++)
			if (!is_scope_char((unsigned char)part[i].p[j]))
				return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
				            "Credential has an invalid %s '%s'",
				            i == 2 ? "region" : "service",
				            clean(part[i].p, part[i].n, c48));
	}
	if (!span_is(part[4], TERMINATOR))
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
		            "Credential must end with '" TERMINATOR "', not '%s'",
		            clean(part[4].p, part[4].n, c48));
	memcpy(out->access_key, part[0].p, part[0].n);
	out->access_key[part[0].n] = '\0';
	memcpy(out->date, part[1].p, 8);
	out->date[8] = '\0';
	memcpy(out->region, part[2].p, part[2].n);
	out->region[part[2].n] = '\0';
	memcpy(out->service, part[3].p, part[3].n);
	out->service[part[3].n] = '\0';
	return 0;
}

static int parse_signature(struct span s, struct nb_sigv4_auth *out, char *err, size_t errsz)
{
	size_t i;

	if (s.n != 64 || !is_hex(s.p, 64))
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE, "Signature must be 64 hex digits");
	for (i = 0; i < 64; i++) {
		char c = s.p[i];

		out->signature[i] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
	}
	out->signature[64] = '\0';
	return 0;
}

static int parse_signed_headers(struct span s, struct nb_sigv4_auth *out, char *err, size_t errsz)
{
	int r = check_signed_headers(s.p, s.n, err, errsz);

	if (r < 0)
		return r;
	memcpy(out->signed_headers, s.p, s.n);
	out->signed_headers[s.n] = '\0';
	return 0;
}

static int set_amz_date(struct nb_sigv4_auth *out, const char *v, const char *what, char *err,
                        size_t errsz)
{
	int64_t t;
	char c48[48];

	if (amz_date_epoch(v, strlen(v), &t) < 0)
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
		            "%s '%s' is not in the form YYYYMMDDTHHMMSSZ", what,
		            clean(v, strlen(v), c48));
	memcpy(out->amz_date, v, 17);
	return 0;
}

/* Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=... */
static int parse_header(const char *h, struct nb_sigv4_auth *out, char *err, size_t errsz)
{
	static const char *const names[] = {"Credential", "SignedHeaders", "Signature"};
	struct span part[3] = {{NULL, 0}, {NULL, 0}, {NULL, 0}};
	const char *p = h;
	char missing[64] = "", c48[48];
	size_t i, len;
	int r;

	len = strnlen(h, NB_SIGV4_MAX_VALUE + 1);
	if (len > NB_SIGV4_MAX_VALUE)
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE, "Authorization header too long");
	while (*p == ' ' || *p == '\t')
		p++;
	if (strncmp(p, ALGO, strlen(ALGO)) || (p[strlen(ALGO)] != ' ' && p[strlen(ALGO)] != '\t'))
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
		            "unsupported Authorization: only " ALGO " is accepted");
	p += strlen(ALGO);
	while (*p) {
		const char *e = strchr(p, ','), *eq;
		struct span s;

		s.p = p;
		s.n = e ? (size_t)(e - p) : strlen(p);
		p = e ? e + 1 : p + s.n;
		while (s.n && (*s.p == ' ' || *s.p == '\t')) {
			s.p++;
			s.n--;
		}
		while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t'))
			s.n--;
		if (!s.n) {
			if (!*p && !e)
				break;
			return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
			            "Authorization header has an empty part");
		}
		eq = memchr(s.p, '=', s.n);
		if (!eq)
			return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
			            "Authorization part '%s' is not name=value",
			            clean(s.p, s.n, c48));
		for (i = 0; i < NB_ARRAY_SIZE(names); i++)
			if ((size_t)(eq - s.p) == strlen(names[i]) &&
			    !memcmp(s.p, names[i], strlen(names[i])))
				break;
		if (i == NB_ARRAY_SIZE(names))
			return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
			            "Authorization header has an unknown part '%s'",
			            clean(s.p, (size_t)(eq - s.p), c48));
		if (part[i].p)
			return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
			            "Authorization header has %s twice", names[i]);
		part[i].p = eq + 1;
		part[i].n = s.n - (size_t)(eq - s.p) - 1;
	}
	for (i = 0; i < NB_ARRAY_SIZE(names); i++) {
		if (part[i].p)
			continue;
		if (missing[0])
			nb_strlcpy(missing + strlen(missing), ", ",
			           sizeof(missing) - strlen(missing));
		nb_strlcpy(missing + strlen(missing), names[i], sizeof(missing) - strlen(missing));
	}
	if (missing[0])
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE, "Authorization header is missing %s",
		            missing);
	r = parse_credential(part[0], out, err, errsz);
	if (!r)
		r = parse_signed_headers(part[1], out, err, errsz);
	if (!r)
		r = parse_signature(part[2], out, err, errsz);
	return r;
}

/* X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires,
 * X-Amz-SignedHeaders and X-Amz-Signature from the query. */
static int parse_presigned(const char *q, struct nb_sigv4_auth *out, char *err, size_t errsz)
{
	static const char *const names[] = {"X-Amz-Algorithm",     "X-Amz-Credential",
	                                    "X-Amz-Date",          "X-Amz-Expires",
	                                    "X-Amz-SignedHeaders", "X-Amz-Signature"};
	char val[6][2048], missing[160] = "";
	uint64_t exp = 0;
	size_t i;
	int n, r;

	for (i = 0; i < NB_ARRAY_SIZE(names); i++) {
		n = query_get(q, names[i], val[i], sizeof(val[i]));
		if (n < 0)
			return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
			            "%s is too long or badly encoded", names[i]);
		if (n > 1)
			return fail(err, errsz, -NB_E_AUTH_INCOMPLETE, "%s is given %d times",
			            names[i], n);
		if (n == 1)
			continue;
		if (missing[0])
			nb_strlcpy(missing + strlen(missing), ", ",
			           sizeof(missing) - strlen(missing));
		nb_strlcpy(missing + strlen(missing), names[i], sizeof(missing) - strlen(missing));
		val[i][0] = '\0';
	}
	if (missing[0])
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE, "presigned URL is missing %s",
		            missing);
	if (strcmp(val[0], ALGO))
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE, "X-Amz-Algorithm must be " ALGO);
	r = parse_credential((struct span){val[1], strlen(val[1])}, out, err, errsz);
	if (!r)
		r = set_amz_date(out, val[2], "X-Amz-Date", err, errsz);
	if (r)
		return r;
	if (!val[3][0] || strlen(val[3]) > 7 || !is_digits(val[3], strlen(val[3])) ||
	    nb_parse_u64(val[3], &exp) < 0 || exp < 1)
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
		            "X-Amz-Expires must be a number of seconds from 1 to %d",
		            NB_SIGV4_MAX_EXPIRES);
	if (exp > NB_SIGV4_MAX_EXPIRES)
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
		            "X-Amz-Expires must be at most %d seconds (a week)",
		            NB_SIGV4_MAX_EXPIRES);
	out->expires = (int64_t)exp;
	r = parse_signed_headers((struct span){val[4], strlen(val[4])}, out, err, errsz);
	if (!r)
		r = parse_signature((struct span){val[5], strlen(val[5])}, out, err, errsz);
	return r;
}

/* What the signer put as the payload hash. */
static int parse_payload(const struct nb_sigv4_req *r, struct nb_sigv4_auth *out, char *err,
                         size_t errsz)
{
	const char *v;
	int n = hdr_find(r, "x-amz-content-sha256", &v);
	size_t len;

	if (n > 1)
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE, "x-amz-content-sha256 given twice");
	if (n == 1) {
		len = strnlen(v, sizeof(out->payload_hash));
		if (!((len == 64 && is_hex(v, 64)) || !strcmp(v, UNSIGNED_PAYLOAD) ||
		      (len < sizeof(out->payload_hash) && nb_str_has_prefix(v, "STREAMING-"))))
			return fail(err, errsz, -NB_E_INVALID,
			            "x-amz-content-sha256 must be a hex sha256, " UNSIGNED_PAYLOAD
			            " or STREAMING-...");
		memcpy(out->payload_hash, v, len + 1);
		return 0;
	}
	if (out->presigned && r->s3) {
		memcpy(out->payload_hash, UNSIGNED_PAYLOAD, sizeof(UNSIGNED_PAYLOAD));
		return 0;
	}
	if (!r->body_sha256)
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
		            "x-amz-content-sha256 is required for this request");
	if (strnlen(r->body_sha256, 65) != 64 || !is_hex(r->body_sha256, 64))
		return fail(err, errsz, -EINVAL, "body_sha256 is not 64 hex digits");
	memcpy(out->payload_hash, r->body_sha256, 65);
	return 0;
}

int nb_sigv4_parse(const struct nb_sigv4_req *r, struct nb_sigv4_auth *out, char *err, size_t errsz)
{
	const char *hauth = NULL, *date = NULL;
	char tmp[8];
	int nauth, ndate, ret;
	bool query_auth;

	if (err && errsz)
		err[0] = '\0';
	if (!r || !out)
		return fail(err, errsz, -EINVAL, "no request");
	memset(out, 0, sizeof(*out));
	ret = check_req(r, err, errsz);
	if (ret < 0)
		return ret;
	nauth = hdr_find(r, "authorization", &hauth);
	/* non-zero: present (-1 when present but unreadable here) */
	query_auth = r->query && (query_get(r->query, "X-Amz-Algorithm", tmp, sizeof(tmp)) != 0 ||
	                          query_get(r->query, "X-Amz-Credential", tmp, sizeof(tmp)) != 0 ||
	                          query_get(r->query, "X-Amz-Signature", tmp, sizeof(tmp)) != 0);
	if (!nauth && !query_auth)
		return fail(err, errsz, -NB_E_AUTH_MISSING,
		            "no Authorization header and no X-Amz-Signature parameter");
	if (nauth && query_auth)
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
		            "both an Authorization header and X-Amz-* query parameters");
	if (nauth > 1)
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
		            "more than one Authorization header");
	if (query_auth) {
		out->presigned = true;
		ret = parse_presigned(r->query, out, err, errsz);
	} else {
		ret = parse_header(hauth, out, err, errsz);
		if (ret < 0)
			return ret;
		ndate = hdr_find(r, "x-amz-date", &date);
		if (ndate > 1)
			return fail(err, errsz, -NB_E_AUTH_INCOMPLETE, "X-Amz-Date given twice");
		if (ndate) {
			ret = set_amz_date(out, date, "X-Amz-Date", err, errsz);
		} else {
			int64_t t;

			ndate = hdr_find(r, "date", &date);
			if (!ndate)
				return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
				            "an X-Amz-Date or Date header is required");
			if (ndate > 1 || http_date_epoch(date, &t) < 0)
				return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
				            "the Date header is not a valid HTTP date");
			epoch_amz(t, out->amz_date, sizeof(out->amz_date));
			if (strlen(out->amz_date) != 16)
				return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
				            "the Date header is out of range");
		}
	}
	if (ret < 0)
		return ret;
	return parse_payload(r, out, err, errsz);
}

/* ---- verifying ---- */

/* Everything nb_sigv4_verify checks but the signature itself. */
static int verify_scope(const struct nb_sigv4_req *r, const struct nb_sigv4_auth *a,
                        const char *region, const char *service, char *err, size_t errsz)
{
	char now_s[32], at_s[32];
	int64_t t;

	if (err && errsz)
		err[0] = '\0';
	if (!r || !a || !region || !service)
		return fail(err, errsz, -EINVAL, "missing argument");
	if (!auth_terminated(a))
		return fail(err, errsz, -EINVAL, "unterminated field in the parsed signature");
	if (strcmp(a->region, region))
		return fail(err, errsz, -NB_E_SIG_MISMATCH,
		            "Credential should be scoped to a valid region: '%s' is not '%s'",
		            a->region, region);
	if (strcmp(a->service, service))
		return fail(err, errsz, -NB_E_SIG_MISMATCH,
		            "Credential should be scoped to the service '%s', not '%s'", service,
		            a->service);
	if (strlen(a->date) != 8 || strncmp(a->date, a->amz_date, 8))
		return fail(err, errsz, -NB_E_SIG_MISMATCH,
		            "the Credential date %s does not match the request date %s", a->date,
		            a->amz_date);
	if (amz_date_epoch(a->amz_date, strlen(a->amz_date), &t) < 0)
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE, "invalid request date");
	epoch_amz(r->now, now_s, sizeof(now_s));
	if (a->presigned) {
		if (a->expires < 1 || a->expires > NB_SIGV4_MAX_EXPIRES)
			return fail(err, errsz, -NB_E_AUTH_INCOMPLETE,
			            "X-Amz-Expires out of range");
		if (r->now > t + a->expires) {
			epoch_amz(t + a->expires, at_s, sizeof(at_s));
			return fail(err, errsz, -NB_E_EXPIRED,
			            "the presigned URL expired at %s; it is now %s", at_s, now_s);
		}
		if (r->now < t - NB_SIGV4_MAX_SKEW_S)
			return fail(err, errsz, -NB_E_EXPIRED,
			            "the presigned URL is not valid before %s; it is now %s",
			            a->amz_date, now_s);
	} else if (r->now > t + NB_SIGV4_MAX_SKEW_S || r->now < t - NB_SIGV4_MAX_SKEW_S) {
		return fail(err, errsz, -NB_E_EXPIRED,
		            "the request time %s is more than %d minutes from the server time %s",
		            a->amz_date, NB_SIGV4_MAX_SKEW_S / 60, now_s);
	}
	if (!signs_header(a->signed_headers, "host"))
		return fail(err, errsz, -NB_E_AUTH_INCOMPLETE, "SignedHeaders must include host");
	if (strlen(a->payload_hash) == 64 && is_hex(a->payload_hash, 64)) {
		if (!r->body_sha256)
			return fail(err, errsz, -NB_E_INTERNAL,
			            "the payload is signed but the body was not hashed");
		if (strcasecmp(a->payload_hash, r->body_sha256))
			return fail(err, errsz, -NB_E_SIG_MISMATCH,
			            "x-amz-content-sha256 does not match the sha256 of the body "
			            "(XAmzContentSHA256Mismatch)");
	}
	return 0;
}

static int verify_sig(const struct nb_sigv4_req *r, const struct nb_sigv4_auth *a,
                      const unsigned char key[32], char *err, size_t errsz)
{
	char sig[65];
	int ret = compute_signature(r, a, key, sig, err, errsz);

	if (ret < 0)
		return ret;
	ret = CRYPTO_memcmp(sig, a->signature, 64) ? -NB_E_SIG_MISMATCH : 0;
	OPENSSL_cleanse(sig, sizeof(sig));
	if (ret)
		return fail(err, errsz, ret,
		            "the signature does not match: check the secret key and the signing "
		            "method");
	return 0;
}

int nb_sigv4_verify(const struct nb_sigv4_req *r, const struct nb_sigv4_auth *a, const char *secret,
                    const char *region, const char *service, char *err, size_t errsz)
{
	unsigned char key[32];
	int ret;

	if (!secret)
		return fail(err, errsz, -EINVAL, "missing argument");
	ret = verify_scope(r, a, region, service, err, errsz);
	if (ret < 0)
		return ret;
	ret = derive_key(secret, a->date, a->region, a->service, key);
	if (ret < 0)
		ret = fail(err, errsz, ret, "HMAC-SHA256 failed");
	else
		ret = verify_sig(r, a, key, err, errsz);
	OPENSSL_cleanse(key, sizeof(key));
	return ret;
}

int nb_sigv4_verify_key(const struct nb_sigv4_req *r, const struct nb_sigv4_auth *a,
                        const unsigned char key[32], const char *region, const char *service,
                        char *err, size_t errsz)
{
	int ret;

	if (!key)
		return fail(err, errsz, -EINVAL, "missing argument");
	ret = verify_scope(r, a, region, service, err, errsz);
	return ret < 0 ? ret : verify_sig(r, a, key, err, errsz);
}

/* ---- building blocks ---- */

void nb_sigv4_signing_key(const char *secret, const char *date, const char *region,
                          const char *service, unsigned char key[32])
{
	if (derive_key(secret, date, region, service, key) < 0 && nb_random_bytes(key, 32) < 0)
		memset(key, 0xa5, 32); /* unreachable in practice; never a real key */
}

void nb_sigv4_hmac_hex(const unsigned char key[32], const char *data, size_t len, char hex[65])
{
	unsigned char mac[32];

	if (hmac(key, 32, data, len, mac) < 0) {
		memset(hex, 'x', 64); /* matches no hex signature */
		hex[64] = '\0';
		return;
	}
	to_hex(mac, sizeof(mac), hex);
}

char *nb_sigv4_canonical_request(const struct nb_sigv4_req *r, const struct nb_sigv4_auth *a)
{
	struct nb_buf b;

	if (!r || !a)
		return NULL;
	nb_buf_init(&b, CANON_MAX);
	if (build_canonical(r, a, &b, NULL, 0) < 0) {
		nb_buf_free(&b);
		return NULL;
	}
	return nb_buf_steal(&b);
}

int nb_sigv4_sign(const struct nb_sigv4_req *r, const char *access_key, const char *secret,
                  const char *region, const char *service, const char *amz_date,
                  const char *payload_hash, const char *signed_headers, char *auth_out,
                  size_t auth_outsz)
{
	struct nb_sigv4_auth a;
	struct nb_buf cred;
	char sig[65];
	int n, ret;

	if (!r || !access_key || !secret || !region || !service || !amz_date || !payload_hash ||
	    !signed_headers || !auth_out || !auth_outsz)
		return -EINVAL;
	memset(&a, 0, sizeof(a));
	nb_buf_init(&cred, 1024);
	ret = nb_buf_printf(&cred, "%s/%.8s/%s/%s/" TERMINATOR, access_key, amz_date, region,
	                    service);
	if (!ret)
		ret = parse_credential((struct span){cred.data, cred.len}, &a, NULL, 0);
	nb_buf_free(&cred);
	if (ret)
		return -EINVAL;
	if (set_amz_date(&a, amz_date, "amz_date", NULL, 0) < 0 ||
	    parse_signed_headers(
	        (struct span){signed_headers, strnlen(signed_headers, sizeof(a.signed_headers))},
	        &a, NULL, 0) < 0 ||
	    strnlen(payload_hash, sizeof(a.payload_hash)) >= sizeof(a.payload_hash))
		return -EINVAL;
	nb_strlcpy(a.payload_hash, payload_hash, sizeof(a.payload_hash));
	{
		unsigned char key[32];
		ret = derive_key(secret, a.date, a.region, a.service, key);
		if (!ret)
			ret = compute_signature(r, &a, key, sig, NULL, 0);
		OPENSSL_cleanse(key, sizeof(key));
	}
	if (ret == -NB_E_SIG_MISMATCH) /* a signed header is not in r */
		return -EINVAL;
	if (ret < 0)
		return ret;
	n = snprintf(auth_out, auth_outsz,
	             ALGO " Credential=%s/%s/%s/%s/" TERMINATOR ", SignedHeaders=%s, Signature=%s",
	             a.access_key, a.date, a.region, a.service, a.signed_headers, sig);
	if (n < 0 || (size_t)n >= auth_outsz)
		return -ENOSPC;
	return 0;
}
