/* Pure parts of the engine: error table, bucket names, keys, metadata,
 * conditions, ranges, CRCs, base64. No I/O. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/err.h"
#include "common/util.h"
#include "s3/engine_internal.h"

/* ---- errors ---- */

static const struct {
	int status;
	const char *code;
	const char *message;
} s3_errs[] = {
    [NB_S3_E_NO_SUCH_BUCKET - NB_S3_E_BASE] = {404, "NoSuchBucket",
                                               "The specified bucket does not exist."},
    [NB_S3_E_NO_SUCH_KEY - NB_S3_E_BASE] = {404, "NoSuchKey", "The specified key does not exist."},
    [NB_S3_E_NO_SUCH_VERSION -
        NB_S3_E_BASE] = {404, "NoSuchVersion", "The specified version does not exist."},
    [NB_S3_E_NO_SUCH_UPLOAD - NB_S3_E_BASE] =
        {404, "NoSuchUpload",
         "The specified multipart upload does not exist. The upload ID may be invalid, "
         "or the upload may have been aborted or completed."},
    [NB_S3_E_BUCKET_EXISTS - NB_S3_E_BASE] =
        {409, "BucketAlreadyExists",
         "The requested bucket name is not available. The bucket namespace is shared by "
         "all users of the system. Please select a different name and try again."},
    [NB_S3_E_BUCKET_OWNED - NB_S3_E_BASE] =
        {409, "BucketAlreadyOwnedByYou",
         "Your previous request to create the named bucket succeeded and you already own "
         "it."},
    [NB_S3_E_BUCKET_NOT_EMPTY -
        NB_S3_E_BASE] = {409, "BucketNotEmpty", "The bucket you tried to delete is not empty."},
    [NB_S3_E_INVALID_BUCKET_NAME -
        NB_S3_E_BASE] = {400, "InvalidBucketName", "The specified bucket is not valid."},
    [NB_S3_E_TOO_MANY_BUCKETS -
        NB_S3_E_BASE] = {400, "TooManyBuckets",
                         "You have attempted to create more buckets than allowed."},
    [NB_S3_E_KEY_TOO_LONG - NB_S3_E_BASE] = {400, "KeyTooLongError", "Your key is too long."},
    [NB_S3_E_INVALID_KEY - NB_S3_E_BASE] =
        {400, "InvalidArgument",
         "Object keys must be 1 to 1024 bytes of valid UTF-8 without NUL characters."},
    [NB_S3_E_INVALID_PART - NB_S3_E_BASE] =
        {400, "InvalidPart",
         "One or more of the specified parts could not be found. The part may not have "
         "been uploaded, or the specified entity tag may not match the part's entity "
         "tag."},
    [NB_S3_E_INVALID_PART_ORDER - NB_S3_E_BASE] =
        {400, "InvalidPartOrder",
         "The list of parts was not in ascending order. Parts must be ordered by part "
         "number."},
    [NB_S3_E_ENTITY_TOO_SMALL -
        NB_S3_E_BASE] = {400, "EntityTooSmall",
                         "Your proposed upload is smaller than the minimum allowed object size."},
    [NB_S3_E_ENTITY_TOO_LARGE -
        NB_S3_E_BASE] = {400, "EntityTooLarge",
                         "Your proposed upload exceeds the maximum allowed object size."},
    [NB_S3_E_INCOMPLETE_BODY - NB_S3_E_BASE] =
        {400, "IncompleteBody",
         "You did not provide the number of bytes specified by the Content-Length HTTP "
         "header."},
    [NB_S3_E_INVALID_RANGE -
        NB_S3_E_BASE] = {416, "InvalidRange", "The requested range is not satisfiable."},
    [NB_S3_E_PRECONDITION_FAILED -
        NB_S3_E_BASE] = {412, "PreconditionFailed",
                         "At least one of the preconditions you specified did not hold."},
    [NB_S3_E_NOT_MODIFIED - NB_S3_E_BASE] = {304, "NotModified", "Not Modified"},
    [NB_S3_E_BAD_DIGEST -
        NB_S3_E_BASE] = {400, "BadDigest",
                         "The Content-MD5 you specified did not match what we received."},
    [NB_S3_E_INVALID_DIGEST -
        NB_S3_E_BASE] = {400, "InvalidDigest", "The Content-MD5 you specified was invalid."},
    [NB_S3_E_SHA256_MISMATCH - NB_S3_E_BASE] =
        {400, "XAmzContentSHA256Mismatch",
         "The provided 'x-amz-content-sha256' header does not match what was computed."},
    [NB_S3_E_CHECKSUM_MISMATCH -
        NB_S3_E_BASE] = {400, "BadDigest",
                         "The x-amz-checksum you specified did not match the calculated checksum."},
    [NB_S3_E_INVALID_CHECKSUM -
        NB_S3_E_BASE] = {400, "InvalidRequest", "Value for x-amz-checksum is invalid."},
    [NB_S3_E_METADATA_TOO_LARGE -
        NB_S3_E_BASE] = {400, "MetadataTooLarge",
                         "Your metadata headers exceed the maximum allowed metadata size."},
    [NB_S3_E_INVALID_ARGUMENT - NB_S3_E_BASE] = {400, "InvalidArgument", "Invalid Argument"},
    [NB_S3_E_INVALID_REQUEST - NB_S3_E_BASE] =
        {400, "InvalidRequest",
         "This copy request is illegal because it is trying to copy an object to itself "
         "without changing the object's metadata."},
    [NB_S3_E_INVALID_TOKEN -
        NB_S3_E_BASE] = {400, "InvalidArgument", "The continuation token provided is incorrect."},
    [NB_S3_E_METHOD_NOT_ALLOWED -
        NB_S3_E_BASE] = {405, "MethodNotAllowed",
                         "The specified method is not allowed against this resource."},
    [NB_S3_E_ACCESS_DENIED - NB_S3_E_BASE] = {403, "AccessDenied", "Access Denied"},
    [NB_S3_E_QUOTA_EXCEEDED -
        NB_S3_E_BASE] = {403, "QuotaExceeded", "The account's storage quota would be exceeded."},
    [NB_S3_E_SLOW_DOWN - NB_S3_E_BASE] = {503, "SlowDown", "Please reduce your request rate."},
    [NB_S3_E_INTERNAL - NB_S3_E_BASE] = {500, "InternalError",
                                         "We encountered an internal error. Please try again."},
};

static int s3_err_index(int err)
{
	int e = -err;

	if (e > NB_S3_E_BASE && e < NB_S3_E_END)
		return e - NB_S3_E_BASE;
	switch (e) {
	case EINVAL:
	case E2BIG:
	case ERANGE:
	case NB_E_INVALID:
	case NB_E_MISSING:
		return NB_S3_E_INVALID_ARGUMENT - NB_S3_E_BASE;
	case EFBIG:
		return NB_S3_E_ENTITY_TOO_LARGE - NB_S3_E_BASE;
	case EACCES:
	case EPERM:
	case NB_E_FORBIDDEN:
		return NB_S3_E_ACCESS_DENIED - NB_S3_E_BASE;
	case EBUSY:
	case EAGAIN:
	case NB_E_UNAVAILABLE:
		return NB_S3_E_SLOW_DOWN - NB_S3_E_BASE;
	default:
		return NB_S3_E_INTERNAL - NB_S3_E_BASE;
	}
}

const char *nb_s3_err_code(int err)
{
	return s3_errs[s3_err_index(err)].code;
}

int nb_s3_err_http_status(int err)
{
	return s3_errs[s3_err_index(err)].status;
}

const char *nb_s3_err_message(int err)
{
	return s3_errs[s3_err_index(err)].message;
}

/* ---- bucket names and keys ---- */

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool has_suffix(const char *s, size_t n, const char *suf)
{
	size_t m = strlen(suf);

	return n >= m && memcmp(s + n - m, suf, m) == 0;
}

/* Four dot-separated groups of 1-3 digits: "192.168.5.4". */
static bool looks_like_ipv4(const char *s)
{
	int groups = 0, digits = 0;

	for (;; s++) {
		if (*s >= '0' && *s <= '9') {
			if (++digits > 3)
				return false;
		} else if (*s == '.' || *s == '\0') {
			if (digits == 0)
				return false;
			groups++;
			digits = 0;
			if (*s == '\0')
				break;
		} else {
			return false;
		}
	}
	return groups == 4;
}

int nb_s3_bucket_name_check(const char *name, const char **why)
{
	const char *reason = NULL;
	size_t n = name ? strnlen(name, NB_S3_BUCKET_NAME_MAX + 1) : 0;

	if (n < 3 || n > NB_S3_BUCKET_NAME_MAX) {
		reason = "bucket names must be between 3 and 63 characters long";
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (!is_lower_alnum(name[i]) && name[i] != '.' && name[i] != '-') {
			reason = "bucket names can consist only of lowercase letters, numbers, "
			         "dots (.), and hyphens (-)";
			goto out;
		}
	}
	if (!is_lower_alnum(name[0]) || !is_lower_alnum(name[n - 1])) {
		reason = "bucket names must begin and end with a letter or number";
		goto out;
	}
	if (strstr(name, "..")) {
		reason = "bucket names must not contain two adjacent periods";
		goto out;
	}
	if (looks_like_ipv4(name)) {
		reason = "bucket names must not be formatted as an IP address";
		goto out;
	}
	if (strncmp(name, "xn--", 4) == 0) {
		reason = "bucket names must not start with the prefix xn--";
		goto out;
	}
	if (strncmp(name, "sthree-", 7) == 0) {
		reason = "bucket names must not start with the prefix sthree-";
		goto out;
	}
	if (has_suffix(name, n, "-s3alias")) {
		reason = "bucket names must not end with the suffix -s3alias";
		goto out;
	}
	if (has_suffix(name, n, "--ol-s3")) {
		reason = "bucket names must not end with the suffix --ol-s3";
		goto out;
	}
	if (has_suffix(name, n, "--x-s3")) {
		reason = "bucket names must not end with the suffix --x-s3";
		goto out;
	}
	if (has_suffix(name, n, ".mrap")) {
		reason = "bucket names must not end with the suffix .mrap";
		goto out;
	}
out:
	if (why)
		*why = reason;
	return reason ? -NB_S3_E_INVALID_BUCKET_NAME : 0;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 when invalid
 * (overlong, surrogate, above U+10FFFF, truncated) or NUL. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf;

	if (c == 0)
		return 0;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

int nb_s3_key_check(const char *key, size_t len)
{
	const unsigned char *s = (const unsigned char *)key;

	if (!key || len == 0)
		return -NB_S3_E_INVALID_KEY;
	if (len > NB_S3_KEY_MAX)
		return -NB_S3_E_KEY_TOO_LONG;
	for (size_t i = 0; i < len;) {
		size_t l = utf8_seq(s + i, len - i);
		if (l == 0)
			return -NB_S3_E_INVALID_KEY;
		i += l;
	}
	return 0;
}

/* A header value we will send back: bounded, no control characters (no
 * CR/LF smuggled into a response). */
static int header_value_check(const char *v)
{
	size_t n;

	if (!v)
		return 0;
	n = strnlen(v, NB_S3_HEADER_VALUE_MAX + 1);
	if (n > NB_S3_HEADER_VALUE_MAX)
		return -NB_S3_E_INVALID_ARGUMENT;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return -NB_S3_E_INVALID_ARGUMENT;
	}
	return 0;
}

static bool header_name_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c <= 0x20 || c >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", c))
			return false;
	}
	return true;
}

int s3_meta_check(const struct nb_s3_meta *m)
{
	const char *vals[] = {m->content_type,  m->content_encoding, m->content_disposition,
	                      m->cache_control, m->content_language, m->expires};
	size_t total = 0;
	const char *name;
	json_t *v;
	int r;

	for (size_t i = 0; i < NB_ARRAY_SIZE(vals); i++) {
		r = header_value_check(vals[i]);
		if (r < 0)
			return r;
	}
	if (!m->user)
		return 0;
	if (!json_is_object(m->user))
		return -NB_S3_E_INVALID_ARGUMENT;
	json_object_foreach((json_t *)m->user, name, v)
	{
		if (!json_is_string(v) || !header_name_ok(name))
			return -NB_S3_E_INVALID_ARGUMENT;
		total += strlen(name) + json_string_length(v);
		if (total > NB_S3_META_MAX)
			return -NB_S3_E_METADATA_TOO_LARGE;
		if (strlen(json_string_value(v)) != json_string_length(v))
			return -NB_S3_E_INVALID_ARGUMENT; /* embedded NUL */
		r = header_value_check(json_string_value(v));
		if (r < 0)
			return r;
	}
	return 0;
}

bool s3_is_hex_id(const char *s)
{
	size_t i;

	if (!s)
		return false;
	for (i = 0; i < S3_ID_HEX; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[i] == '\0';
}

bool s3_version_id_valid(const char *s)
{
	return s && (strcmp(s, "null") == 0 || s3_is_hex_id(s));
}

/* ---- conditions ---- */

/* Does the comma-separated list of etags (or "*") name etag? */
static bool etag_list_match(const char *list, const char *etag)
{
	const char *p = list;

	while (*p) {
		const char *start, *end;
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			break;
		start = p;
		while (*p && *p != ',')
			p++;
		end = p;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if (end - start == 1 && *start == '*')
			return true;
		if (end - start > 2 && start[0] == 'W' && start[1] == '/')
			start += 2;
		if (end - start >= 2 && *start == '"' && end[-1] == '"') {
			start++;
			end--;
		}
		{
			const char *e = etag;
			size_t el;
			if (*e == '"')
				e++;
			el = strlen(e);
			if (el && e[el - 1] == '"')
				el--;
			if ((size_t)(end - start) == el && strncasecmp(start, e, el) == 0)
				return true;
		}
	}
	return false;
}

int nb_s3_cond_eval(const struct nb_s3_cond *c, bool exists, const char *etag, int64_t mtime_ms,
                    bool read)
{
	int64_t mtime = mtime_ms / 1000;

	if (!c)
		return 200;
	if (c->if_match) {
		if (!exists || !etag_list_match(c->if_match, etag))
			return 412;
	} else if (c->if_unmodified_since && exists && mtime > c->if_unmodified_since) {
		return 412;
	}
	if (c->if_none_match) {
		if (exists && etag_list_match(c->if_none_match, etag))
			return read ? 304 : 412;
	} else if (read && c->if_modified_since && exists && mtime <= c->if_modified_since) {
		return 304;
	}
	return 200;
}

/* ---- ranges ---- */

int nb_s3_range_resolve(const struct nb_s3_range *r, uint64_t size, uint64_t *off, uint64_t *len,
                        bool *partial)
{
	*off = 0;
	*len = size;
	*partial = false;
	if (!r || r->kind == NB_S3_RANGE_NONE)
		return 0;
	switch (r->kind) {
	case NB_S3_RANGE_FROM_TO:
		if (r->first > r->last)
			return 0; /* not a valid range: ignored, as S3 does */
		if (r->first >= size)
			return -NB_S3_E_INVALID_RANGE;
		*off = r->first;
		*len = (r->last >= size ? size - 1 : r->last) - r->first + 1;
		break;
	case NB_S3_RANGE_FROM:
		if (r->first >= size)
			return -NB_S3_E_INVALID_RANGE;
		*off = r->first;
		*len = size - r->first;
		break;
	case NB_S3_RANGE_SUFFIX:
		if (r->last == 0 || size == 0)
			return -NB_S3_E_INVALID_RANGE;
		*len = r->last > size ? size : r->last;
		*off = size - *len;
		break;
	default:
		return -NB_S3_E_INVALID_ARGUMENT;
	}
	*partial = true;
	return 0;
}

/* ---- CRC32 (IEEE) and CRC32C (Castagnoli), slicing by 8 ---- */

static uint32_t crc32_tab[8][256], crc32c_tab[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_fill(uint32_t t[8][256], uint32_t poly)
{
	for (uint32_t n = 0; n < 256; n++) {
		uint32_t c = n;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
		t[0][n] = c;
	}
	for (uint32_t n = 0; n < 256; n++)
		for (int k = 1; k < 8; k++)
			t[k][n] = (t[k - 1][n] >> 8) ^ t[0][t[k - 1][n] & 0xff];
}

static void crc_init(void)
{
	crc_fill(crc32_tab, 0xedb88320u);
	crc_fill(crc32c_tab, 0x82f63b78u);
}

static uint32_t load_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t crc_update(uint32_t t[8][256], uint32_t crc, const void *data, size_t len)
{
	const unsigned char *p = data;

	pthread_once(&crc_once, crc_init);
	crc = ~crc;
	while (len >= 8) {
		uint32_t one = load_le32(p) ^ crc, two = load_le32(p + 4);
		crc = t[7][one & 0xff] ^ t[6][(one >> 8) & 0xff] ^ t[5][(one >> 16) & 0xff] ^
		      t[4][one >> 24] ^ t[3][two & 0xff] ^ t[2][(two >> 8) & 0xff] ^
		      t[1][(two >> 16) & 0xff] ^ t[0][two >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = t[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

uint32_t s3_crc32_update(uint32_t crc, const void *data, size_t len)
{
	return crc_update(crc32_tab, crc, data, len);
}

uint32_t s3_crc32c_update(uint32_t crc, const void *data, size_t len)
{
	return crc_update(crc32c_tab, crc, data, len);
}

/* ---- base64, hex, etags ---- */

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void s3_b64_encode(const void *in, size_t n, char *out)
{
	const unsigned char *s = in;
	size_t o = 0, i = 0;

	for (; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		out[o++] = b64_chars[v >> 18];
		out[o++] = b64_chars[(v >> 12) & 63];
		out[o++] = b64_chars[(v >> 6) & 63];
		out[o++] = b64_chars[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
		out[o++] = b64_chars[v >> 18];
		out[o++] = b64_chars[(v >> 12) & 63];
		out[o++] = i + 1 < n ? b64_chars[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
}

static int b64_val(char c)
{
	const char *p = c ? strchr(b64_chars, c) : NULL;

	return p ? (int)(p - b64_chars) : -1;
}

int s3_b64_decode(const char *in, void *out, size_t max, size_t *outlen)
{
	unsigned char *d = out;
	size_t n = strlen(in), o = 0;

	if (n % 4)
		return -EINVAL;
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			if (in[i + k] == '=' && i + 4 == n && k >= 2) {
				v[k] = 0;
				pad++;
			} else if (pad) {
				return -EINVAL; /* data after '=' */
			} else if ((v[k] = b64_val(in[i + k])) < 0) {
				return -EINVAL;
			}
		}
		if (o + 3 - (size_t)pad > max)
			return -EINVAL;
		/* canonical only: the bits under the padding are zero */
		if ((pad == 1 && (v[2] & 3)) || (pad == 2 && (v[1] & 15)))
			return -EINVAL;
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
		             (uint32_t)v[3];
		d[o++] = (unsigned char)(w >> 16);
		if (pad < 2)
			d[o++] = (unsigned char)(w >> 8);
		if (pad < 1)
			d[o++] = (unsigned char)w;
	}
	*outlen = o;
	return 0;
}

void s3_hex(const unsigned char *in, size_t n, char *out)
{
	static const char hx[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hx[in[i] >> 4];
		out[2 * i + 1] = hx[in[i] & 15];
	}
	out[2 * n] = '\0';
}

bool s3_etag_eq(const char *given, const char *stored)
{
	size_t n;

	if (!given || !stored)
		return false;
	if (*given == '"')
		given++;
	n = strlen(given);
	if (n && given[n - 1] == '"')
		n--;
	return n == strlen(stored) && strncasecmp(given, stored, n) == 0;
}

int s3_successor(const char *p, size_t n, struct s3_bytes *out, bool *has)
{
	out->p = NULL;
	out->n = 0;
	while (n > 0 && (unsigned char)p[n - 1] == 0xff)
		n--;
	*has = n > 0;
	if (!n)
		return 0;
	out->p = malloc(n);
	if (!out->p)
		return -ENOMEM;
	memcpy(out->p, p, n);
	out->p[n - 1] = (char)((unsigned char)out->p[n - 1] + 1);
	out->n = n;
	return 0;
}
