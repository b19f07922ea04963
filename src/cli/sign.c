/* SigV4 signing of the CLI's requests with an access key (service "nubo"),
 * on top of src/api/sigv4.h. Pure: the caller passes the time and sends the
 * headers. */
#include "cli/cli.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "api/sigv4.h"
#include "common/util.h"

#define SIGNED_HEADERS "host;x-amz-content-sha256;x-amz-date"
#define UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

int nb_cli_amz_date(int64_t now, char out[17])
{
	struct tm tm;
	time_t t = (time_t)now;

	out[0] = '\0';
	if (now < 0 || !gmtime_r(&t, &tm) || strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16) {
		out[0] = '\0';
		return -EINVAL;
	}
	return 0;
}

int nb_cli_url_split(const char *url, char *authority, size_t authsz, const char **path)
{
	const char *p, *at;
	size_t n;

	if (nb_str_has_prefix(url, "http://"))
		p = url + strlen("http://");
	else if (nb_str_has_prefix(url, "https://"))
		p = url + strlen("https://");
	else
		return -EPROTONOSUPPORT;
	n = strcspn(p, "/?#");
	/* user:password@ is not part of the Host header */
	at = memchr(p, '@', n);
	while (at) {
		const char *next = memchr(at + 1, '@', n - (size_t)(at + 1 - p));
		if (!next)
			break;
		at = next;
	}
	if (at) {
		n -= (size_t)(at + 1 - p);
		p = at + 1;
	}
	if (!n)
		return -EINVAL;
	if (p[n] == '?' || p[n] == '#')
		return -EINVAL;
	if (n >= authsz)
		return -ENAMETOOLONG;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] <= ' ' || p[i] == 0x7f)
			return -EINVAL;
	memcpy(authority, p, n);
	authority[n] = '\0';
	if (path)
		*path = p + n;
	return 0;
}

int nb_cli_sign(const struct nb_cli_key *key, const char *method, const char *host,
                const char *target, const char *payload_hash, int64_t now, struct nb_cli_sig *out)
{
	char path[NB_SIGV4_MAX_PATH + 1];
	const char *q;
	size_t plen;
	struct nb_kv hdrs[3];
	struct nb_sigv4_req req = {0};
	int r;

	memset(out, 0, sizeof(*out));
	if (!key || !key->id[0] || !key->secret[0] || !key->region[0] || !method || !host ||
	    !*host || !target)
		return -EINVAL;
	if (!payload_hash)
		payload_hash = UNSIGNED_PAYLOAD;
	if (nb_strlcpy(out->payload_hash, payload_hash, sizeof(out->payload_hash)) >=
	    sizeof(out->payload_hash))
		return -EINVAL;
	r = nb_cli_amz_date(now, out->amz_date);
	if (r < 0)
		return r;
	q = strchr(target, '?');
	plen = q ? (size_t)(q - target) : strlen(target);
	if (plen > NB_SIGV4_MAX_PATH)
		return -ENAMETOOLONG;
	if (plen == 0) {
		path[0] = '/';
		plen = 1;
	} else {
		memcpy(path, target, plen);
	}
	path[plen] = '\0';
	hdrs[0] = (struct nb_kv){"host", host};
	hdrs[1] = (struct nb_kv){"x-amz-content-sha256", out->payload_hash};
	hdrs[2] = (struct nb_kv){"x-amz-date", out->amz_date};
	req.method = method;
	req.path = path;
	req.query = q && q[1] ? q + 1 : NULL;
	req.headers = hdrs;
	req.nheaders = NB_ARRAY_SIZE(hdrs);
	req.body_sha256 = strcmp(payload_hash, UNSIGNED_PAYLOAD) ? payload_hash : NULL;
	req.now = now;
	r = nb_sigv4_sign(&req, key->id, key->secret, key->region, NB_CLI_SIGV4_SERVICE,
	                  out->amz_date, out->payload_hash, SIGNED_HEADERS, out->auth,
	                  sizeof(out->auth));
	if (r < 0)
		memset(out, 0, sizeof(*out));
	return r;
}
