#include "common/httpc.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"

void nb_httpc_global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t to_buf(char *p, size_t size, size_t n, void *ud)
{
	struct nb_buf *b = ud;

	if (!b)
		return size * n;
	return nb_buf_append(b, p, size * n) < 0 ? 0 : size * n;
}

static int curl_errno(CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return 0;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
		return -ECONNREFUSED;
	case CURLE_WRITE_ERROR:
		return -EIO;
	default:
		return -EPROTO;
	}
}

int nb_httpc(const char *method, const char *url, const char *token, const json_t *body,
	     int timeout_ms, long *status, struct nb_buf *out)
{
	CURL *h = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	char auth[600], *payload = NULL;
	CURLcode rc;

	if (!h)
		return -ENOMEM;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, to_buf);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
	if (token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		hdrs = curl_slist_append(hdrs, auth);
	}
	if (body) {
		payload = json_dumps(body, JSON_COMPACT);
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
	} else if (!strcmp(method, "POST") || !strcmp(method, "PUT")) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	rc = curl_easy_perform(h);
	if (rc == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	free(payload);
	return curl_errno(rc);
}

static size_t to_fd(char *p, size_t size, size_t n, void *ud)
{
	return nb_write_all(*(int *)ud, p, size * n) < 0 ? 0 : size * n;
}

int nb_httpc_download(const char *url, const char *token, const char *path, long *status)
{
	CURL *h = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	char auth[600];
	CURLcode rc;
	int fd, r;

	if (!h)
		return -ENOMEM;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		curl_easy_cleanup(h);
		return r;
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 30L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, to_fd);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &fd);
	if (token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		hdrs = curl_slist_append(hdrs, auth);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	}
	rc = curl_easy_perform(h);
	if (rc == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	r = curl_errno(rc);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r < 0 || *status != 200)
		unlink(path);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return r;
}
