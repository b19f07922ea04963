/* The CLI's HTTP client over libcurl: JSON calls and streamed uploads, each
 * with timeouts and a ceiling on the answer, authenticated with the bearer
 * token or signed with an access key (SigV4). Does not print. */
#include "cli/cli.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"

#define CONNECT_TIMEOUT_S 5L
#define LOW_SPEED_BYTES 1024L
#define LOW_SPEED_TIME_S 120L
#define UPLOAD_CHUNK (256u << 10)

struct call_state {
	struct nb_cli_resp *resp;
	bool too_big;
	/* uploads */
	int fd;
	uint64_t sent, size;
	EVP_MD_CTX *md;
	int read_err;
	nb_cli_progress_fn progress;
	void *user;
};

int nb_cli_http_init(struct nb_cli_http *h, const char *endpoint, const char *token)
{
	memset(h, 0, sizeof(*h));
	if (nb_strlcpy(h->endpoint, endpoint, sizeof(h->endpoint)) >= sizeof(h->endpoint))
		return -ENAMETOOLONG;
	if (token && nb_strlcpy(h->token, token, sizeof(h->token)) >= sizeof(h->token))
		return -ENAMETOOLONG;
	/* a trailing '/' would double up with the paths */
	for (size_t n = strlen(h->endpoint); n > 0 && h->endpoint[n - 1] == '/'; n--)
		h->endpoint[n - 1] = '\0';
	h->curl = curl_easy_init();
	return h->curl ? 0 : -ENOMEM;
}

int nb_cli_http_set_key(struct nb_cli_http *h, const struct nb_cli_key *key)
{
	if (!key || !key->id[0] || !key->secret[0] || !key->region[0])
		return -EINVAL;
	memcpy(&h->key, key, sizeof(h->key));
	h->key.id[sizeof(h->key.id) - 1] = '\0';
	h->key.secret[sizeof(h->key.secret) - 1] = '\0';
	h->key.region[sizeof(h->key.region) - 1] = '\0';
	return 0;
}

void nb_cli_http_free(struct nb_cli_http *h)
{
	if (!h)
		return;
	if (h->curl)
		curl_easy_cleanup(h->curl);
	h->curl = NULL;
	explicit_bzero(h->token, sizeof(h->token));
	explicit_bzero(&h->key, sizeof(h->key));
}

int nb_cli_http_auth_lines(const struct nb_cli_http *h, const char *method, const char *path,
                           const char *payload_hash, struct nb_buf *out)
{
	struct nb_cli_sig sig;
	struct nb_buf target;
	char host[1024];
	const char *prefix;
	int r;

	if (!h->key.id[0]) {
		if (!h->token[0])
			return 0;
		return nb_buf_printf(out, "Authorization: Bearer %s\r\n", h->token);
	}
	r = nb_cli_url_split(h->endpoint, host, sizeof(host), &prefix);
	if (r < 0)
		return r;
	nb_buf_init(&target, NB_CLI_MAX_TARGET);
	r = nb_buf_printf(&target, "%s%s", prefix, path);
	if (r >= 0)
		r = nb_cli_sign(&h->key, method, host, target.data, payload_hash,
		                nb_wall_ms() / 1000, &sig);
	if (r >= 0)
		r = nb_buf_printf(out,
		                  "X-Amz-Date: %s\r\nX-Amz-Content-Sha256: %s\r\n"
		                  "Authorization: %s\r\n",
		                  sig.amz_date, sig.payload_hash, sig.auth);
	nb_buf_free(&target);
	return r < 0 ? r : 0;
}

void nb_cli_resp_free(struct nb_cli_resp *resp)
{
	if (!resp)
		return;
	nb_buf_free(&resp->body);
	json_decref(resp->json);
	resp->json = NULL;
}

static size_t on_write(char *data, size_t size, size_t n, void *user)
{
	struct call_state *st = user;

	if (nb_buf_append(&st->resp->body, data, size * n) < 0) {
		st->too_big = true;
		return 0;
	}
	return size * n;
}

static size_t on_read(char *dst, size_t size, size_t n, void *user)
{
	struct call_state *st = user;
	size_t want = size * n;
	ssize_t got;

	if (want > st->size - st->sent)
		want = (size_t)(st->size - st->sent);
	if (!want)
		return 0;
	do
		got = read(st->fd, dst, want);
	while (got < 0 && errno == EINTR);
	if (got < 0) {
		st->read_err = errno;
		return CURL_READFUNC_ABORT;
	}
	if (got == 0) { /* the file shrank under us */
		st->read_err = EIO;
		return CURL_READFUNC_ABORT;
	}
	EVP_DigestUpdate(st->md, dst, (size_t)got);
	st->sent += (uint64_t)got;
	return (size_t)got;
}

static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
	struct call_state *st = user;

	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	if (st->progress)
		st->progress(st->user, (uint64_t)ulnow, st->size);
	return 0;
}

/* Loopback is never sent through a proxy, whatever the environment says. */
static void set_noproxy(CURL *c)
{
	const char *env = getenv("no_proxy");
	char list[1024];

	if (!env)
		env = getenv("NO_PROXY");
	snprintf(list, sizeof(list), "127.0.0.1,localhost,::1%s%.900s", env && *env ? "," : "",
	         env ? env : "");
	curl_easy_setopt(c, CURLOPT_NOPROXY, list);
}

/* Appends each "\r\n"-terminated line of lines to the list. */
static int append_lines(struct curl_slist **headers, char *lines)
{
	char *p = lines, *end;

	while (p && (end = strstr(p, "\r\n"))) {
		struct curl_slist *n;

		*end = '\0';
		n = curl_slist_append(*headers, p);
		*end = '\r';
		if (!n)
			return -ENOMEM;
		*headers = n;
		p = end + 2;
	}
	return 0;
}

/* Common setup; headers is extended with the authentication of method on
 * path with payload_hash (NULL: unsigned) (caller frees the list). */
static int setup(struct nb_cli_http *h, const char *method, const char *path,
                 const char *payload_hash, long timeout_s, struct call_state *st,
                 struct curl_slist **headers, char *errbuf)
{
	CURL *c = h->curl;
	struct nb_buf url, auth;
	char host[1024];
	int r = 0;

	nb_buf_init(&url, 8192);
	nb_buf_init(&auth, 8192);
	curl_easy_reset(c);
	if (nb_buf_printf(&url, "%s%s", h->endpoint, path) < 0) {
		r = -ENAMETOOLONG;
		goto out;
	}
	/* the signature covers Host: send exactly the value that was signed */
	if (h->key.id[0] && (nb_cli_url_split(h->endpoint, host, sizeof(host), NULL) < 0 ||
	                     nb_buf_printf(&auth, "Host: %s\r\n", host) < 0)) {
		r = -EINVAL;
		goto out;
	}
	r = nb_cli_http_auth_lines(h, method, path, payload_hash, &auth);
	if (r < 0) {
		snprintf(st->resp->err, sizeof(st->resp->err), "signing the request failed: %s",
		         strerror(r == -E2BIG ? ENAMETOOLONG : -r));
		goto out;
	}
	if (auth.data) {
		r = append_lines(headers, auth.data);
		if (r < 0)
			goto out;
	}
	curl_easy_setopt(c, CURLOPT_URL, url.data);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
	if (timeout_s > 0) {
		curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
	} else {
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, LOW_SPEED_BYTES);
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, LOW_SPEED_TIME_S);
	}
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, st);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "nubo/" NUBO_VERSION);
	set_noproxy(c);
out:
	nb_buf_free(&url);
	explicit_bzero(auth.data ? auth.data : (char *)"", auth.len);
	nb_buf_free(&auth);
	return r;
}

/* Runs the prepared transfer and fills resp. */
static int perform(struct nb_cli_http *h, struct call_state *st, const char *errbuf)
{
	struct nb_cli_resp *resp = st->resp;
	CURLcode cr = curl_easy_perform(h->curl);

	if (cr != CURLE_OK) {
		if (st->too_big) {
			snprintf(resp->err, sizeof(resp->err), "the answer is larger than %u MiB",
			         NB_CLI_RESP_MAX >> 20);
			return -E2BIG;
		}
		if (st->read_err) {
			snprintf(resp->err, sizeof(resp->err), "reading the file: %s",
			         strerror(st->read_err));
			return -st->read_err;
		}
		snprintf(resp->err, sizeof(resp->err), "%s",
		         errbuf[0] ? errbuf : curl_easy_strerror(cr));
		return -EHOSTUNREACH;
	}
	curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &resp->status);
	if (resp->body.len)
		resp->json = json_loadb(resp->body.data, resp->body.len, 0, NULL);
	return 0;
}

static void resp_init(struct nb_cli_resp *resp)
{
	memset(resp, 0, sizeof(*resp));
	nb_buf_init(&resp->body, NB_CLI_RESP_MAX);
}

int nb_cli_http_call(struct nb_cli_http *h, const char *method, const char *path,
                     const json_t *body, long timeout_s, struct nb_cli_resp *resp)
{
	struct call_state st = {.resp = resp, .fd = -1};
	struct curl_slist *headers = NULL, *n;
	char errbuf[CURL_ERROR_SIZE] = "", body_sha[65];
	char *text = NULL;
	int r;

	resp_init(resp);
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		if (!text) {
			r = -ENOMEM;
			goto out;
		}
	}
	nb_sha256_hex(text ? text : "", text ? strlen(text) : 0, body_sha);
	r = setup(h, method, path, body_sha, timeout_s, &st, &headers, errbuf);
	if (r < 0)
		goto out;
	n = curl_slist_append(headers, "Accept: application/json");
	if (!n) {
		r = -ENOMEM;
		goto out;
	}
	headers = n;
	if (body) {
		n = curl_slist_append(headers, "Content-Type: application/json");
		if (!n) {
			r = -ENOMEM;
			goto out;
		}
		headers = n;
		curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, text);
		curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(text));
	} else if (!strcmp(method, "POST") || !strcmp(method, "PUT")) {
		curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
	}
	if (strcmp(method, "GET") && strcmp(method, "POST"))
		curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, method);
	else if (!strcmp(method, "GET"))
		curl_easy_setopt(h->curl, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, headers);
	r = perform(h, &st, errbuf);
out:
	if (r < 0 && !resp->err[0])
		snprintf(resp->err, sizeof(resp->err), "%s", strerror(-r));
	curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(headers);
	free(text);
	return r;
}

int nb_cli_http_upload(struct nb_cli_http *h, const char *path, int fd, uint64_t size,
                       nb_cli_progress_fn progress, void *user, char sha256_hex[65],
                       struct nb_cli_resp *resp)
{
	struct call_state st = {
	    .resp = resp, .fd = fd, .size = size, .progress = progress, .user = user};
	struct curl_slist *headers = NULL, *n;
	char errbuf[CURL_ERROR_SIZE] = "";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	int r;

	resp_init(resp);
	st.md = EVP_MD_CTX_new();
	if (!st.md || !EVP_DigestInit_ex(st.md, EVP_sha256(), NULL)) {
		r = -ENOMEM;
		goto out;
	}
	/* streamed: signed UNSIGNED-PAYLOAD; the caller compares the stored blob's
	 * digest with sha256_hex */
	r = setup(h, "PUT", path, NULL, 0, &st, &headers, errbuf);
	if (r < 0)
		goto out;
	n = curl_slist_append(headers, "Content-Type: application/octet-stream");
	if (!n) {
		r = -ENOMEM;
		goto out;
	}
	headers = n;
	n = curl_slist_append(headers, "Accept: application/json");
	if (!n) {
		r = -ENOMEM;
		goto out;
	}
	headers = n;
	curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h->curl, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(h->curl, CURLOPT_READFUNCTION, on_read);
	curl_easy_setopt(h->curl, CURLOPT_READDATA, &st);
	curl_easy_setopt(h->curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)size);
	curl_easy_setopt(h->curl, CURLOPT_UPLOAD_BUFFERSIZE, (long)UPLOAD_CHUNK);
	curl_easy_setopt(h->curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h->curl, CURLOPT_XFERINFODATA, &st);
	r = perform(h, &st, errbuf);
	if (r < 0)
		goto out;
	EVP_DigestFinal_ex(st.md, md, &mdlen);
	for (unsigned i = 0; i < mdlen && i < 32; i++)
		snprintf(sha256_hex + 2 * i, 3, "%02x", md[i]);
	sha256_hex[64] = '\0';
	if (st.sent != size) {
		snprintf(resp->err, sizeof(resp->err), "sent %llu of %llu bytes",
		         (unsigned long long)st.sent, (unsigned long long)size);
		r = -EIO;
	}
out:
	if (r < 0 && !resp->err[0])
		snprintf(resp->err, sizeof(resp->err), "%s", strerror(-r));
	curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(headers);
	EVP_MD_CTX_free(st.md);
	return r;
}

int nb_cli_url_escape(const char *s, struct nb_buf *out)
{
	static const char hex[] = "0123456789ABCDEF";
	int r = 0;

	for (const unsigned char *p = (const unsigned char *)s; *p && r >= 0; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
			r = nb_buf_append(out, p, 1);
		} else {
			char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			r = nb_buf_append(out, e, 3);
		}
	}
	return r;
}
