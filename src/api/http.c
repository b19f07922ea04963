#include "api/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/json.h"
#include "common/util.h"

int nb_http_parse_listen(const char *listen, char *host, size_t hostsz, int *port)
{
	const char *colon = strrchr(listen, ':');
	uint64_t p;

	if (!colon || (size_t)(colon - listen) >= hostsz)
		return -EINVAL;
	memcpy(host, listen, (size_t)(colon - listen));
	host[colon - listen] = '\0';
	if (nb_parse_u64(colon + 1, &p) < 0 || p > 65535)
		return -EINVAL;
	*port = (int)p;
	return 0;
}

/* The raw daemon's unescape callback: leaves paths and query values as sent. */
static size_t unescape_none(void *cls, struct MHD_Connection *c, char *s)
{
	(void)cls;
	(void)c;
	return strlen(s);
}

static int http_start(const char *listen, MHD_AccessHandlerCallback handler, void *cls,
		      MHD_RequestCompletedCallback done, void *done_cls, bool raw,
		      struct MHD_Daemon **out)
{
	char host[256];
	int port;
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct MHD_Daemon *d;
	struct MHD_OptionItem raw_opts[] = {
		{MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)unescape_none, NULL},
		/* room for S3's headers, and bigger reads of upload bodies */
		{MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)(128u << 10), NULL},
		{MHD_OPTION_END, 0, NULL},
	};

	if (nb_http_parse_listen(listen, host, sizeof(host), &port) < 0)
		return -EINVAL;
	sa.sin_port = htons((uint16_t)port);
	if (!*host)
		sa.sin_addr.s_addr = htonl(INADDR_ANY);
	else if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -EINVAL;
	if (!raw)
		raw_opts[0].option = MHD_OPTION_END;
	/* MHD_USE_POLL: each connection's thread waits in poll() on its own
	 * socket rather than select() over bitmaps up to the highest fd (4 KiB
	 * S3 GETs: about 5 % more per second) */
	d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
				     MHD_USE_POLL | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG |
				     MHD_USE_ITC,
			     (uint16_t)port, NULL, NULL, handler, cls, MHD_OPTION_SOCK_ADDR, &sa,
			     MHD_OPTION_NOTIFY_COMPLETED, done, done_cls,
			     MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000,
			     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
			     /* no MHD_OPTION_LISTENING_ADDRESS_REUSE: its SO_REUSEPORT
			      * lets a second daemon share a busy port silently */
			     MHD_OPTION_ARRAY, raw_opts, MHD_OPTION_END);
	if (!d)
		return -EADDRINUSE;
	*out = d;
	return 0;
}

int nb_http_start(const char *listen, MHD_AccessHandlerCallback handler, void *cls,
		  struct MHD_Daemon **out)
{
	return http_start(listen, handler, cls, nb_http_req_done, NULL, false, out);
}

int nb_http_start_raw(const char *listen, MHD_AccessHandlerCallback handler, void *cls,
		      MHD_RequestCompletedCallback done, void *done_cls, struct MHD_Daemon **out)
{
	return http_start(listen, handler, cls, done, done_cls, true, out);
}

struct nb_http_req *nb_http_req_new(void)
{
	struct nb_http_req *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	nb_buf_init(&r->body, NB_HTTP_MAX_JSON_BODY);
	return r;
}

void nb_http_req_done(void *cls, struct MHD_Connection *c, void **req_cls,
		      enum MHD_RequestTerminationCode toe)
{
	struct nb_http_req *r = *req_cls;

	(void)cls;
	(void)c;
	(void)toe;
	if (!r)
		return;
	nb_buf_free(&r->body);
	if (r->upload && r->upload_abort)
		r->upload_abort(r->upload); /* an upload not committed leaves nothing */
	json_decref(r->early_error);
	json_decref(r->auth);
	free(r);
	*req_cls = NULL;
}

static enum MHD_Result queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *resp)
{
	enum MHD_Result ret = MHD_queue_response(c, status, resp);

	MHD_destroy_response(resp);
	return ret;
}

enum MHD_Result nb_http_text(struct MHD_Connection *c, unsigned status, const char *type,
			     const char *data, size_t len)
{
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);

	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", type);
	return queue(c, status, resp);
}

enum MHD_Result nb_http_json(struct MHD_Connection *c, unsigned status, json_t *body)
{
	char *s = json_dumps(body, JSON_COMPACT);
	struct MHD_Response *resp;

	json_decref(body);
	if (!s)
		return MHD_NO;
	resp = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(s);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/json");
	return queue(c, status, resp);
}

enum MHD_Result nb_http_error(struct MHD_Connection *c, int err, const char *msg)
{
	return nb_http_json(c, (unsigned)nb_err_http_status(err),
			    json_pack("{s:{s:s, s:s}}", "error", "code", nb_err_code(err), "message",
				      msg && *msg ? msg : nb_err_code(err)));
}

enum MHD_Result nb_http_empty(struct MHD_Connection *c, unsigned status)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);

	if (!resp)
		return MHD_NO;
	return queue(c, status, resp);
}

enum MHD_Result nb_http_file(struct MHD_Connection *c, const char *path, const char *type)
{
	struct stat st;
	struct MHD_Response *resp;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return nb_http_error(c, -NB_E_NOT_FOUND, "no such blob");
	if (fstat(fd, &st) < 0) {
		close(fd);
		return nb_http_error(c, -errno, "stat failed");
	}
	resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd); /* takes fd */
	if (!resp) {
		close(fd);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", type);
	return queue(c, MHD_HTTP_OK, resp);
}

enum MHD_Result nb_http_fd(struct MHD_Connection *c, int fd, uint64_t offset, uint64_t length,
			   const char *type)
{
	struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64(length, fd, offset);

	if (!resp) {
		close(fd);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", type);
	return queue(c, MHD_HTTP_OK, resp);
}

const char *nb_http_bearer(struct MHD_Connection *c)
{
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");

	if (!h || strncasecmp(h, "Bearer ", 7))
		return NULL;
	h += 7;
	while (*h == ' ')
		h++;
	return *h ? h : NULL;
}

const char *nb_http_arg(struct MHD_Connection *c, const char *key)
{
	return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
}

json_t *nb_http_body_json(struct nb_http_req *r, char *err, size_t errsz)
{
	json_error_t je;
	json_t *j;

	if (r->too_large) {
		snprintf(err, errsz, "request body larger than %u bytes", NB_HTTP_MAX_JSON_BODY);
		return NULL;
	}
	if (r->body.len == 0)
		return json_object();
	j = json_loadb(r->body.data, r->body.len, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		snprintf(err, errsz, "body is not valid JSON: %s (line %d)", je.text, je.line);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		snprintf(err, errsz, "body must be a JSON object");
		return NULL;
	}
	return j;
}

/* ---- streams ---- */

void nb_splice(int a, int b)
{
	char buf[16384];
	struct pollfd p[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};

	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		for (int i = 0; i < 2; i++) {
			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(p[i].fd, buf, sizeof(buf));
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0)
				return;
			if (nb_write_all(p[1 - i].fd, buf, (size_t)n) < 0)
				return;
		}
	}
}

/* Sockets of live streams, so a stopping daemon can end them. */
#define MAX_STREAMS 1024
static pthread_mutex_t streams_lock = PTHREAD_MUTEX_INITIALIZER;
static int streams[MAX_STREAMS];
static int nstreams;

static void stream_track(int fd, bool add)
{
	pthread_mutex_lock(&streams_lock);
	if (add && nstreams < MAX_STREAMS) {
		streams[nstreams++] = fd;
	} else if (!add) {
		for (int i = 0; i < nstreams; i++)
			if (streams[i] == fd) {
				streams[i] = streams[--nstreams];
				break;
			}
	}
	pthread_mutex_unlock(&streams_lock);
}

void nb_http_streams_close_all(void)
{
	pthread_mutex_lock(&streams_lock);
	for (int i = 0; i < nstreams; i++)
		shutdown(streams[i], SHUT_RDWR);
	pthread_mutex_unlock(&streams_lock);
}

struct upgrade_ctx {
	nb_http_stream_fn fn;
	void *arg;
	int sock;
	char *extra;
	size_t extra_len;
	struct MHD_UpgradeResponseHandle *urh;
};

static void *upgrade_thread(void *p)
{
	struct upgrade_ctx *u = p;
	int fl = fcntl(u->sock, F_GETFL);

	if (fl >= 0)
		fcntl(u->sock, F_SETFL, fl & ~O_NONBLOCK);
	stream_track(u->sock, true);
	u->fn(u->sock, u->extra, u->extra_len, u->arg);
	stream_track(u->sock, false);
	MHD_upgrade_action(u->urh, MHD_UPGRADE_ACTION_CLOSE);
	free(u->extra);
	free(u);
	return NULL;
}

static void upgrade_cb(void *cls, struct MHD_Connection *c, void *req_cls, const char *extra,
		       size_t extra_len, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
	struct upgrade_ctx *u = cls;
	pthread_t t;

	(void)c;
	(void)req_cls;
	u->sock = sock;
	u->urh = urh;
	u->extra = extra_len ? malloc(extra_len) : NULL;
	if (u->extra)
		memcpy(u->extra, extra, extra_len);
	u->extra_len = u->extra ? extra_len : 0;
	if (pthread_create(&t, NULL, upgrade_thread, u) != 0) {
		MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
		free(u->extra);
		free(u);
		return;
	}
	pthread_detach(t);
}

bool nb_http_wants_upgrade(struct MHD_Connection *c, const char *protocol)
{
	const char *up = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Upgrade");

	return up && !strcasecmp(up, protocol);
}

enum MHD_Result nb_http_upgrade(struct MHD_Connection *c, const char *protocol,
				nb_http_stream_fn fn, void *arg)
{
	struct upgrade_ctx *u = calloc(1, sizeof(*u));
	struct MHD_Response *resp;

	if (!u)
		return MHD_NO;
	u->fn = fn;
	u->arg = arg;
	resp = MHD_create_response_for_upgrade(upgrade_cb, u);
	if (!resp) {
		free(u);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_UPGRADE, protocol);
	return queue(c, MHD_HTTP_SWITCHING_PROTOCOLS, resp);
}

int nb_http_client_upgrade(const char *base_url, const char *path, const char *token,
			   const char *protocol, int timeout_ms)
{
	char host[256], port[8] = "80", req[2048], resp[4096];
	const char *p = base_url, *slash, *colon;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	size_t got = 0;
	int fd = -1, r;

	if (!strncmp(p, "http://", 7))
		p += 7;
	slash = strchr(p, '/');
	if (!slash)
		slash = p + strlen(p);
	colon = memchr(p, ':', (size_t)(slash - p));
	if ((size_t)((colon ? colon : slash) - p) >= sizeof(host))
		return -EINVAL;
	memcpy(host, p, (size_t)((colon ? colon : slash) - p));
	host[(colon ? colon : slash) - p] = '\0';
	if (colon) {
		if ((size_t)(slash - colon - 1) >= sizeof(port))
			return -EINVAL;
		memcpy(port, colon + 1, (size_t)(slash - colon - 1));
		port[slash - colon - 1] = '\0';
	}
	if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai)
		return -EHOSTUNREACH;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		r = -errno;
		goto fail;
	}
	snprintf(req, sizeof(req),
		 "GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n"
		 "Authorization: Bearer %s\r\n\r\n",
		 path, host, port, protocol, token);
	r = nb_write_all(fd, req, strlen(req));
	if (r < 0)
		goto fail;
	/* read the status line and headers byte by byte, so no stream bytes are eaten */
	while (got < sizeof(resp) - 1) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		if (poll(&pf, 1, timeout_ms) <= 0) {
			r = -ETIMEDOUT;
			goto fail;
		}
		if (read(fd, resp + got, 1) != 1) {
			r = -EPIPE;
			goto fail;
		}
		got++;
		resp[got] = '\0';
		if (got >= 4 && !memcmp(resp + got - 4, "\r\n\r\n", 4))
			break;
	}
	if (strncmp(resp, "HTTP/1.1 101", 12)) {
		int code = 0;
		sscanf(resp, "HTTP/1.%*d %d", &code);
		r = code == 404 ? -NB_E_NOT_FOUND : code == 409 ? -NB_E_STATE : -NB_E_UNAVAILABLE;
		goto fail;
	}
	freeaddrinfo(ai);
	return fd;
fail:
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return r;
}
