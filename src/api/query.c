/* AWS Query parameters: form-urlencoded decoding into a sorted array of
 * (key, value) pairs looked up by binary search, and the flattened lists,
 * filters and tags built on top of it. */
#include "api/query.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ECHO_MAX 64           /* bytes of a user's text quoted in an error */
#define TAG_KEY_MAX_CHARS 128 /* EC2's limits, in characters */
#define TAG_VALUE_MAX_CHARS 256
#define FILTER_VALUES ((int)(sizeof(((struct nb_filter *)0)->values) / sizeof(const char *)))

struct qent {
	char *key; /* one allocation: key NUL value NUL */
	char *val;
	size_t seq; /* arrival order: the later of two equal keys wins */
};

struct nb_query {
	struct qent *e; /* sorted by key, keys unique */
	size_t n;
	size_t seq;
};

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs,
 * no surrogates, nothing past U+10FFFF), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];

	if (c < 0x80)
		return 1;
	if (c < 0xC2)
		return 0;
	if (c < 0xE0)
		return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
	if (c < 0xF0) {
		if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
			return 0;
		if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F))
			return 0;
		return 3;
	}
	if (c < 0xF5) {
		if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 ||
		    (s[3] & 0xC0) != 0x80)
			return 0;
		if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F))
			return 0;
		return 4;
	}
	return 0;
}

static bool utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, l;

	while (i < n) {
		l = utf8_seq(p + i, n - i);
		if (!l)
			return false;
		i += l;
	}
	return true;
}

/* Characters (code points) in s; an invalid byte counts as one. */
static size_t utf8_chars(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, c = 0, l;

	while (i < n) {
		l = utf8_seq(p + i, n - i);
		i += l ? l : 1;
		c++;
	}
	return c;
}

/* After a truncating snprintf: drops a UTF-8 sequence cut at the end. */
static void utf8_trim_tail(char *s)
{
	size_t n = strlen(s), start = n, back = 0;

	while (start > 0 && back < 4 && ((unsigned char)s[start - 1] & 0xC0) == 0x80) {
		start--;
		back++;
	}
	if (start > 0 && (unsigned char)s[start - 1] >= 0xC0)
		start--;
	else if (back == 0)
		return;
	if (utf8_seq((const unsigned char *)s + start, n - start) != n - start)
		s[start] = '\0';
}

static void set_err(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errsz, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!err || !errsz)
		return;
	va_start(ap, fmt);
	n = vsnprintf(err, errsz, fmt, ap);
	va_end(ap);
	if (n < 0)
		err[0] = '\0';
	else if ((size_t)n >= errsz)
		utf8_trim_tail(err);
}

/* A user's text made safe to quote in an error: at most ECHO_MAX bytes of
 * well-formed, printable UTF-8 ('?' for anything else), "..." when cut. */
struct echo {
	char s[ECHO_MAX + 8];
};

static const char *echo(struct echo *e, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, o = 0, l;

	while (i < n) {
		l = utf8_seq(p + i, n - i);
		if (o + (l ? l : 1) > ECHO_MAX) {
			memcpy(e->s + o, "...", 3);
			o += 3;
			break;
		}
		if (!l || p[i] < 0x20 || p[i] == 0x7F) {
			e->s[o++] = '?';
			i += l ? l : 1;
			continue;
		}
		memcpy(e->s + o, s + i, l);
		o += l;
		i += l;
	}
	e->s[o] = '\0';
	return e->s;
}

static const char *echo_str(struct echo *e, const char *s)
{
	return echo(e, s, strlen(s));
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes raw[0..n) ('+' is a space, %XX a byte) into dst, which holds
 * max bytes plus the NUL. -E2BIG past max, -EILSEQ for a bad %-sequence. */
static int url_decode(const char *raw, size_t n, char *dst, size_t max, size_t *outlen)
{
	size_t i = 0, o = 0;
	int hi, lo;

	while (i < n) {
		if (o >= max)
			return -E2BIG;
		if (raw[i] == '%') {
			if (n - i < 3)
				return -EILSEQ;
			hi = hexval((unsigned char)raw[i + 1]);
			lo = hexval((unsigned char)raw[i + 2]);
			if (hi < 0 || lo < 0)
				return -EILSEQ;
			dst[o++] = (char)(hi << 4 | lo);
			i += 3;
		} else {
			dst[o++] = raw[i] == '+' ? ' ' : raw[i];
			i++;
		}
	}
	dst[o] = '\0';
	*outlen = o;
	return 0;
}

/* Decodes one "key=value" (or "key") into a new entry. */
static int decode_pair(const char *p, size_t n, struct qent *ent, char *err, size_t errsz)
{
	const char *eq = memchr(p, '=', n);
	size_t kraw = eq ? (size_t)(eq - p) : n;
	size_t vraw = eq ? n - kraw - 1 : 0;
	size_t kcap = kraw < NB_QUERY_MAX_KEY ? kraw : NB_QUERY_MAX_KEY;
	size_t vcap = vraw < NB_QUERY_MAX_VALUE ? vraw : NB_QUERY_MAX_VALUE;
	size_t klen, vlen;
	struct echo e;
	char *block;
	int r;

	if (kraw == 0) {
		set_err(err, errsz, "empty parameter name in '%s'", echo(&e, p, n));
		return -EINVAL;
	}
	block = malloc(kcap + vcap + 2);
	if (!block)
		return -ENOMEM;
	r = url_decode(p, kraw, block, kcap, &klen);
	if (r == -E2BIG) {
		set_err(err, errsz, "parameter name longer than %d bytes: '%s'", NB_QUERY_MAX_KEY,
		        echo(&e, p, kraw));
		goto fail;
	}
	if (r < 0) {
		set_err(err, errsz, "invalid percent-encoding in parameter name '%s'",
		        echo(&e, p, kraw));
		r = -EINVAL;
		goto fail;
	}
	r = -EINVAL;
	if (klen == 0) {
		set_err(err, errsz, "empty parameter name");
		goto fail;
	}
	if (memchr(block, '\0', klen)) {
		set_err(err, errsz, "parameter name '%s' contains a NUL byte",
		        echo(&e, block, klen));
		goto fail;
	}
	if (!utf8_valid(block, klen)) {
		set_err(err, errsz, "parameter name '%s' is not valid UTF-8",
		        echo(&e, block, klen));
		goto fail;
	}
	r = url_decode(eq ? eq + 1 : "", vraw, block + klen + 1, vcap, &vlen);
	if (r == -E2BIG) {
		set_err(err, errsz, "value of parameter '%s' is longer than %d bytes",
		        echo(&e, block, klen), NB_QUERY_MAX_VALUE);
		goto fail;
	}
	if (r < 0) {
		set_err(err, errsz, "invalid percent-encoding in the value of parameter '%s'",
		        echo(&e, block, klen));
		r = -EINVAL;
		goto fail;
	}
	r = -EINVAL;
	if (memchr(block + klen + 1, '\0', vlen)) {
		set_err(err, errsz, "value of parameter '%s' contains a NUL byte",
		        echo(&e, block, klen));
		goto fail;
	}
	if (!utf8_valid(block + klen + 1, vlen)) {
		set_err(err, errsz, "value of parameter '%s' is not valid UTF-8",
		        echo(&e, block, klen));
		goto fail;
	}
	ent->key = block;
	ent->val = block + klen + 1;
	return 0;
fail:
	free(block);
	return r;
}

static int ent_cmp(const void *a, const void *b)
{
	const struct qent *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	if (c)
		return c;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void free_ents(struct qent *e, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(e[i].key);
}

int nb_query_merge(struct nb_query *q, const char *text, size_t len, char *err, size_t errsz)
{
	struct qent *all = NULL, *grown;
	size_t cap = 0, n = 0, nnew = 0, i = 0, seg, distinct, o;
	const char *amp;
	int r;

	if (!q || (!text && len))
		return -EINVAL;
	/* The new pairs go after a copy of the existing ones; q changes only
	 * once everything has decoded and the total fits the ceiling. */
	while (i < len) {
		amp = memchr(text + i, '&', len - i);
		seg = amp ? (size_t)(amp - (text + i)) : len - i;
		if (seg > 0) {
			if (nnew == NB_QUERY_MAX_PARAMS) {
				set_err(err, errsz, "more than %d parameters", NB_QUERY_MAX_PARAMS);
				r = -E2BIG;
				goto fail;
			}
			if (n == cap) {
				cap = cap ? cap * 2 : 16;
				grown = realloc(all, cap * sizeof(*all));
				if (!grown) {
					r = -ENOMEM;
					goto fail;
				}
				all = grown;
			}
			r = decode_pair(text + i, seg, &all[n], err, errsz);
			if (r < 0)
				goto fail;
			all[n].seq = q->seq + nnew;
			n++;
			nnew++;
		}
		i += seg + 1;
	}
	grown = realloc(all, (n + q->n + 1) * sizeof(*all));
	if (!grown) {
		r = -ENOMEM;
		goto fail;
	}
	all = grown;
	if (q->n)
		memcpy(all + n, q->e, q->n * sizeof(*all));
	qsort(all, n + q->n, sizeof(*all), ent_cmp);
	distinct = 0;
	for (i = 0; i < n + q->n; i++)
		if (i + 1 == n + q->n || strcmp(all[i].key, all[i + 1].key) != 0)
			distinct++;
	if (distinct > NB_QUERY_MAX_PARAMS) {
		set_err(err, errsz, "more than %d parameters", NB_QUERY_MAX_PARAMS);
		/* free only the new entries: the old ones still belong to q */
		for (i = 0; i < n + q->n; i++)
			if (all[i].seq >= q->seq)
				free(all[i].key);
		free(all);
		return -E2BIG;
	}
	/* Equal keys are adjacent in arrival order: keep the last. */
	for (i = 0, o = 0; i < n + q->n; i++) {
		if (i + 1 < n + q->n && strcmp(all[i].key, all[i + 1].key) == 0)
			free(all[i].key);
		else
			all[o++] = all[i];
	}
	free(q->e);
	q->e = all;
	q->n = o;
	q->seq += nnew;
	return 0;
fail:
	free_ents(all, n);
	free(all);
	return r;
}

int nb_query_parse(const char *text, size_t len, struct nb_query **out, char *err, size_t errsz)
{
	struct nb_query *q;
	int r;

	*out = NULL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	r = nb_query_merge(q, text, len, err, errsz);
	if (r < 0) {
		nb_query_free(q);
		return r;
	}
	*out = q;
	return 0;
}

void nb_query_free(struct nb_query *q)
{
	if (!q)
		return;
	free_ents(q->e, q->n);
	free(q->e);
	free(q);
}

/* First entry whose key is >= s. */
static size_t lower_bound(const struct nb_query *q, const char *s)
{
	size_t lo = 0, hi = q->n, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (strcmp(q->e[mid].key, s) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

const char *nb_query_get(const struct nb_query *q, const char *key)
{
	size_t i;

	if (!q || !key)
		return NULL;
	i = lower_bound(q, key);
	if (i < q->n && strcmp(q->e[i].key, key) == 0)
		return q->e[i].val;
	return NULL;
}

size_t nb_query_count(const struct nb_query *q)
{
	return q ? q->n : 0;
}

int nb_query_entry(const struct nb_query *q, size_t i, const char **key, const char **value)
{
	if (!q || i >= q->n)
		return -ERANGE;
	*key = q->e[i].key;
	*value = q->e[i].val;
	return 0;
}

/* The entries whose key starts with pfx: [*lo, *hi). */
static void prefix_range(const struct nb_query *q, const char *pfx, size_t *lo, size_t *hi)
{
	size_t n = strlen(pfx), i = lower_bound(q, pfx);

	*lo = i;
	while (i < q->n && strncmp(q->e[i].key, pfx, n) == 0)
		i++;
	*hi = i;
}

/* The index at the start of s: decimal 1..NB_QUERY_MAX_LIST without a
 * leading zero; *rest is what follows the digits. -EINVAL otherwise. */
static int parse_index(const char *s, const char **rest)
{
	const char *p = s;
	int v = 0;

	if (*p < '1' || *p > '9')
		return -EINVAL;
	while (*p >= '0' && *p <= '9') {
		if (v <= NB_QUERY_MAX_LIST)
			v = v * 10 + (*p - '0');
		p++;
	}
	*rest = p;
	return v > NB_QUERY_MAX_LIST ? -EINVAL : v;
}

/* "prefix." into buf; false when it cannot be a key's beginning. */
static bool dotted(char *buf, size_t bufsz, const char *prefix)
{
	size_t n = strlen(prefix);

	if (n == 0 || n + 2 > bufsz || n >= NB_QUERY_MAX_KEY)
		return false;
	memcpy(buf, prefix, n);
	buf[n] = '.';
	buf[n + 1] = '\0';
	return true;
}

static void bad_index(const char *key, char *err, size_t errsz)
{
	struct echo e;

	set_err(err, errsz,
	        "parameter '%s' has an invalid index (expected a number from 1 to %d "
	        "without leading zeros)",
	        echo_str(&e, key), NB_QUERY_MAX_LIST);
}

int nb_query_list_err(const struct nb_query *q, const char *prefix, const char **out, size_t max,
                      char *err, size_t errsz)
{
	const char *slot[NB_QUERY_MAX_LIST + 1];
	char pfx[NB_QUERY_MAX_KEY + 2];
	const char *rest;
	size_t lo, hi, i, cnt = 0, plen;
	struct echo e;
	int idx;

	if (!q || !prefix || !dotted(pfx, sizeof(pfx), prefix))
		return 0;
	plen = strlen(pfx);
	prefix_range(q, pfx, &lo, &hi);
	if (lo == hi)
		return 0;
	memset(slot, 0, sizeof(slot));
	for (i = lo; i < hi; i++) {
		idx = parse_index(q->e[i].key + plen, &rest);
		if (idx < 0 || *rest != '\0') {
			bad_index(q->e[i].key, err, errsz);
			return -EINVAL;
		}
		slot[idx] = q->e[i].val;
		cnt++;
	}
	if (cnt > max) {
		set_err(err, errsz, "more than %zu values in %s.N", max, echo_str(&e, prefix));
		return -E2BIG;
	}
	for (idx = 1, i = 0; idx <= NB_QUERY_MAX_LIST && i < cnt; idx++)
		if (slot[idx])
			out[i++] = slot[idx];
	return (int)cnt;
}

int nb_query_list(const struct nb_query *q, const char *prefix, const char **out, size_t max)
{
	return nb_query_list_err(q, prefix, out, max, NULL, 0);
}

int nb_query_indexes_err(const struct nb_query *q, const char *prefix, int *out, size_t max,
                         char *err, size_t errsz)
{
	unsigned char seen[NB_QUERY_MAX_LIST + 1];
	char pfx[NB_QUERY_MAX_KEY + 2];
	const char *rest;
	size_t lo, hi, i, cnt = 0, plen;
	struct echo e;
	int idx;

	if (!q || !prefix || !dotted(pfx, sizeof(pfx), prefix))
		return 0;
	plen = strlen(pfx);
	prefix_range(q, pfx, &lo, &hi);
	if (lo == hi)
		return 0;
	memset(seen, 0, sizeof(seen));
	for (i = lo; i < hi; i++) {
		idx = parse_index(q->e[i].key + plen, &rest);
		if (idx < 0 || (*rest != '\0' && (*rest != '.' || rest[1] == '\0'))) {
			bad_index(q->e[i].key, err, errsz);
			return -EINVAL;
		}
		if (!seen[idx]) {
			seen[idx] = 1;
			cnt++;
		}
	}
	if (cnt > max) {
		set_err(err, errsz, "more than %zu members in %s.N", max, echo_str(&e, prefix));
		return -E2BIG;
	}
	for (idx = 1, i = 0; idx <= NB_QUERY_MAX_LIST && i < cnt; idx++)
		if (seen[idx])
			out[i++] = idx;
	return (int)cnt;
}

int nb_query_indexes(const struct nb_query *q, const char *prefix, int *out, size_t max)
{
	return nb_query_indexes_err(q, prefix, out, max, NULL, 0);
}

/* Every key under pfx ("Filter.3.") must be one of the fields allowed:
 * an exact name, or name + "." + more (a nested list, checked later). */
static int check_fields(const struct nb_query *q, const char *pfx, const char *const *exact,
                        const char *nested, char *err, size_t errsz)
{
	size_t lo, hi, i, plen = strlen(pfx), nlen = nested ? strlen(nested) : 0;
	const char *rest;
	const char *const *f;
	struct echo e;
	char bare[NB_QUERY_MAX_KEY + 1];

	/* "Filter.3" itself carries nothing */
	if (plen > 1 && plen - 1 < sizeof(bare)) {
		memcpy(bare, pfx, plen - 1);
		bare[plen - 1] = '\0';
		if (nb_query_get(q, bare)) {
			set_err(err, errsz, "The parameter %s is not recognized",
			        echo_str(&e, bare));
			return -EINVAL;
		}
	}
	prefix_range(q, pfx, &lo, &hi);
	for (i = lo; i < hi; i++) {
		rest = q->e[i].key + plen;
		for (f = exact; *f; f++)
			if (strcmp(rest, *f) == 0)
				break;
		if (*f)
			continue;
		if (nested && strncmp(rest, nested, nlen) == 0 && rest[nlen] == '.')
			continue;
		set_err(err, errsz, "The parameter %s is not recognized",
		        echo_str(&e, q->e[i].key));
		return -EINVAL;
	}
	return 0;
}

int nb_query_filters(const struct nb_query *q, struct nb_filter *out, size_t max, char *err,
                     size_t errsz)
{
	static const char *const fields[] = {"Name", NULL};
	int idx[NB_QUERY_MAX_FILTERS];
	size_t limit = max < NB_QUERY_MAX_FILTERS ? max : NB_QUERY_MAX_FILTERS;
	char key[64];
	struct echo e;
	int n, i, r;

	n = nb_query_indexes_err(q, "Filter", idx, limit, err, errsz);
	if (n == -E2BIG)
		set_err(err, errsz, "too many filters: at most %zu", limit);
	if (n <= 0)
		return n;
	for (i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "Filter.%d.", idx[i]);
		r = check_fields(q, key, fields, "Value", err, errsz);
		if (r < 0)
			return r;
		snprintf(key, sizeof(key), "Filter.%d.Name", idx[i]);
		out[i].name = nb_query_get(q, key);
		if (!out[i].name) {
			set_err(err, errsz, "The request must contain the parameter %s", key);
			return -EINVAL;
		}
		snprintf(key, sizeof(key), "Filter.%d.Value", idx[i]);
		r = nb_query_list_err(q, key, out[i].values, FILTER_VALUES, err, errsz);
		if (r == -E2BIG) {
			set_err(err, errsz, "The filter '%s' has more than %d values",
			        echo_str(&e, out[i].name), FILTER_VALUES);
			return r;
		}
		if (r < 0)
			return r;
		if (r == 0 || out[i].name[0] == '\0') {
			set_err(err, errsz, "The filter '%s' is invalid",
			        echo_str(&e, out[i].name));
			return -EINVAL;
		}
		out[i].nvalues = (size_t)r;
	}
	return n;
}

static int str_ptr_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int nb_query_tags(const struct nb_query *q, const char *prefix, struct nb_tag *out, size_t max,
                  char *err, size_t errsz)
{
	static const char *const fields[] = {"Key", "Value", NULL};
	int idx[NB_QUERY_MAX_LIST];
	const char *keys[NB_QUERY_MAX_LIST];
	size_t limit = max < NB_QUERY_MAX_LIST ? max : NB_QUERY_MAX_LIST;
	char key[NB_QUERY_MAX_KEY + 32];
	struct echo e;
	int n, i, r;

	if (!prefix || strlen(prefix) >= NB_QUERY_MAX_KEY)
		return 0;
	n = nb_query_indexes_err(q, prefix, idx, limit, err, errsz);
	if (n == -E2BIG)
		set_err(err, errsz, "too many tags in %s: at most %zu", echo_str(&e, prefix),
		        limit);
	if (n <= 0)
		return n;
	for (i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "%s.%d.", prefix, idx[i]);
		r = check_fields(q, key, fields, NULL, err, errsz);
		if (r < 0)
			return r;
		snprintf(key, sizeof(key), "%s.%d.Key", prefix, idx[i]);
		out[i].key = nb_query_get(q, key);
		if (!out[i].key) {
			set_err(err, errsz, "The request must contain the parameter %s",
			        echo_str(&e, key));
			return -EINVAL;
		}
		if (out[i].key[0] == '\0') {
			set_err(err, errsz, "The tag key in %s must not be empty",
			        echo_str(&e, key));
			return -EINVAL;
		}
		if (utf8_chars(out[i].key, strlen(out[i].key)) > TAG_KEY_MAX_CHARS) {
			set_err(err, errsz, "Tag key exceeds the maximum length of %d characters",
			        TAG_KEY_MAX_CHARS);
			return -EINVAL;
		}
		if (strncasecmp(out[i].key, "aws:", 4) == 0) {
			set_err(err, errsz,
			        "Value ( %s ) for parameter key is invalid. Tag keys starting "
			        "with 'aws:' are reserved for internal use",
			        echo_str(&e, out[i].key));
			return -EINVAL;
		}
		snprintf(key, sizeof(key), "%s.%d.Value", prefix, idx[i]);
		out[i].value = nb_query_get(q, key);
		if (!out[i].value)
			out[i].value = "";
		if (utf8_chars(out[i].value, strlen(out[i].value)) > TAG_VALUE_MAX_CHARS) {
			set_err(err, errsz, "Tag value exceeds the maximum length of %d characters",
			        TAG_VALUE_MAX_CHARS);
			return -EINVAL;
		}
		keys[i] = out[i].key;
	}
	qsort(keys, (size_t)n, sizeof(keys[0]), str_ptr_cmp);
	for (i = 0; i + 1 < n; i++)
		if (strcmp(keys[i], keys[i + 1]) == 0) {
			set_err(err, errsz, "Duplicate tag key '%s' specified",
			        echo_str(&e, keys[i]));
			return -EINVAL;
		}
	return n;
}

/* Wildcards. A pattern is words separated by '*'; '?' stands for one
 * character (a UTF-8 sequence) and '\' makes the next character literal,
 * as in EC2's filters. The first word is anchored at the start, the last
 * at the end (its length in characters is fixed), and each middle word is
 * taken at its leftmost match: that choice is never worse for what
 * follows, so nothing is ever retried. A word without '?' or '\' is found
 * by memmem (two-way: linear); one with them by trying each start, at
 * most (text length x word length) steps. No input is exponential. */

static size_t char_len(const char *s, size_t n)
{
	size_t l = utf8_seq((const unsigned char *)s, n);

	return l ? l : 1;
}

/* Matches the '*'-free word w[0..wn) at the start of s[0..sn): the bytes
 * of s it covers, or -1. */
static long word_at(const char *w, size_t wn, const char *s, size_t sn)
{
	size_t i = 0, j = 0, l;

	while (i < wn) {
		if (j >= sn)
			return -1;
		if (w[i] == '?') {
			j += char_len(s + j, sn - j);
			i++;
			continue;
		}
		if (w[i] == '\\' && i + 1 < wn)
			i++;
		l = char_len(w + i, wn - i);
		if (sn - j < l || memcmp(w + i, s + j, l) != 0)
			return -1;
		i += l;
		j += l;
	}
	return (long)j;
}

/* Characters a word matches. */
static size_t word_chars(const char *w, size_t wn)
{
	size_t i = 0, c = 0;

	while (i < wn) {
		if (w[i] == '?') {
			i++;
		} else {
			if (w[i] == '\\' && i + 1 < wn)
				i++;
			i += char_len(w + i, wn - i);
		}
		c++;
	}
	return c;
}

/* The next unescaped '*' at or after from, or pn. */
static size_t next_star(const char *p, size_t from, size_t pn)
{
	size_t i = from;

	while (i < pn && p[i] != '*')
		i += p[i] == '\\' && i + 1 < pn ? 2 : 1;
	return i;
}

int nb_query_wildcard(const char *pattern, const char *s)
{
	size_t pn, sn, first, last, lastw, i, pos, tail, chars, need, ws, we;
	const char *m;
	long r;

	if (!pattern || !s)
		return 0;
	pn = strlen(pattern);
	sn = strlen(s);
	first = next_star(pattern, 0, pn);
	if (first == pn)
		return word_at(pattern, pn, s, sn) == (long)sn;
	r = word_at(pattern, first, s, sn);
	if (r < 0)
		return 0;
	pos = (size_t)r;
	for (last = first, i = first; i < pn; i = next_star(pattern, i + 1, pn))
		last = i;
	lastw = last + 1;
	/* the last word covers exactly its character count at the end of s */
	need = word_chars(pattern + lastw, pn - lastw);
	for (chars = 0, i = pos; i < sn; i += char_len(s + i, sn - i))
		chars++;
	if (chars < need)
		return 0;
	for (tail = pos; chars > need; chars--)
		tail += char_len(s + tail, sn - tail);
	if (word_at(pattern + lastw, pn - lastw, s + tail, sn - tail) != (long)(sn - tail))
		return 0;
	for (ws = first + 1; ws < last; ws = we + 1) {
		we = next_star(pattern, ws, pn);
		if (we == ws)
			continue;
		if (!memchr(pattern + ws, '?', we - ws) && !memchr(pattern + ws, '\\', we - ws)) {
			m = memmem(s + pos, tail - pos, pattern + ws, we - ws);
			if (!m)
				return 0;
			pos = (size_t)(m - s) + (we - ws);
			continue;
		}
		for (i = pos;; i += char_len(s + i, tail - i)) {
			if (i >= tail)
				return 0;
			r = word_at(pattern + ws, we - ws, s + i, tail - i);
			if (r >= 0)
				break;
		}
		pos = i + (size_t)r;
	}
	return 1;
}
