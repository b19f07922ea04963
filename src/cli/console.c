/* nubo console: the live serial console through the controller, over an
 * HTTP/1.1 upgrade on a plain TCP socket (authenticated as every call: the
 * token, or a SigV4 signature of the GET); bytes are copied both ways with
 * poll(). On a terminal stdin goes raw and Ctrl-] detaches. */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "common/util.h"

#define CONNECT_TIMEOUT_MS 5000
#define HANDSHAKE_TIMEOUT_MS 10000
#define HEAD_MAX (16u << 10)
#define ERROR_BODY_MAX (64u << 10)
#define DETACH_CHAR 0x1d /* Ctrl-] */

static volatile sig_atomic_t console_stop;

static void on_stop_signal(int sig)
{
	(void)sig;
	console_stop = 1;
}

/* Connects to host:port within the timeout; returns the fd or -errno. */
static int dial(const char *host, unsigned port)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
	char portstr[8];
	int fd = -1, r = -ECONNREFUSED;

	snprintf(portstr, sizeof(portstr), "%u", port);
	if (getaddrinfo(host, portstr, &hints, &res) != 0)
		return -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		struct pollfd p;
		int err = 0;
		socklen_t len = sizeof(err);

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		            ai->ai_protocol);
		if (fd < 0) {
			r = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
			r = -errno;
			goto next;
		}
		p.fd = fd;
		p.events = POLLOUT;
		if (poll(&p, 1, CONNECT_TIMEOUT_MS) <= 0) {
			r = -ETIMEDOUT;
			goto next;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
			r = -(err ? err : errno);
			goto next;
		}
		/* blocking from here on: the relay polls before every read */
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		freeaddrinfo(res);
		return fd;
	next:
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return r;
}

static int send_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads into b until it holds "\r\n\r\n" (returns the head's length), EOF,
 * the ceiling or the deadline. */
static int read_head(int fd, struct nb_buf *b, int64_t deadline)
{
	for (;;) {
		char chunk[4096];
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int64_t left = deadline - nb_now_ms();
		ssize_t n;
		char *end;

		if (b->data && (end = strstr(b->data, "\r\n\r\n")))
			return (int)(end - b->data) + 4;
		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		if (nb_buf_append(b, chunk, (size_t)n) < 0)
			return -E2BIG;
	}
}

static long content_length(const char *head)
{
	const char *p = strcasestr(head, "\r\ncontent-length:");
	uint64_t v;
	char num[24];
	size_t n;

	if (!p)
		return -1;
	p += strlen("\r\ncontent-length:");
	while (*p == ' ' || *p == '\t')
		p++;
	n = strspn(p, "0123456789");
	if (!n || n >= sizeof(num))
		return -1;
	memcpy(num, p, n);
	num[n] = '\0';
	if (nb_parse_u64(num, &v) < 0 || v > ERROR_BODY_MAX)
		return -1;
	return (long)v;
}

/* A refused upgrade: read the error body and report it like any call. */
static int report_refusal(struct nb_cli *c, int fd, struct nb_buf *b, int headlen, int status)
{
	struct nb_cli_resp resp = {.status = status};
	long want = content_length(b->data);
	int64_t deadline = nb_now_ms() + HANDSHAKE_TIMEOUT_MS;
	int ex;

	nb_buf_init(&resp.body, ERROR_BODY_MAX);
	nb_buf_append(&resp.body, b->data + headlen, b->len - (size_t)headlen);
	while (want < 0 || (long)resp.body.len < want) {
		char chunk[4096];
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int64_t left = deadline - nb_now_ms();
		ssize_t n;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			break;
		n = read(fd, chunk, sizeof(chunk));
		if (n <= 0 || nb_buf_append(&resp.body, chunk, (size_t)n) < 0)
			break;
	}
	if (resp.body.len)
		resp.json = json_loadb(resp.body.data, resp.body.len, 0, NULL);
	ex = nb_cli_report(c, 0, &resp);
	nb_cli_resp_free(&resp);
	return ex;
}

struct relay {
	int sock;
	bool tty, stdin_open, detached, closed;
	int64_t linger_until; /* when stdin ended and we are draining; 0 otherwise */
};

/* Returns 0 to go on, 1 when done, a negative errno on failure. */
static int relay_stdin(struct relay *rl, int linger_s)
{
	char buf[4096];
	ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
	size_t len;
	char *esc;

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 0;
	if (n <= 0) {
		rl->stdin_open = false;
		if (rl->tty || linger_s == 0)
			return 1;
		rl->linger_until = nb_now_ms() + (int64_t)linger_s * 1000;
		return 0;
	}
	len = (size_t)n;
	esc = rl->tty ? memchr(buf, DETACH_CHAR, len) : NULL;
	if (esc)
		len = (size_t)(esc - buf);
	if (len && send_all(rl->sock, buf, len) < 0) {
		rl->closed = true;
		return 1;
	}
	if (esc) {
		rl->detached = true;
		return 1;
	}
	return 0;
}

static int relay_sock(struct relay *rl)
{
	char buf[16384];
	ssize_t n = read(rl->sock, buf, sizeof(buf));

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 0;
	if (n <= 0) {
		rl->closed = true;
		return n < 0 && errno != ECONNRESET ? -errno : 1;
	}
	if (nb_write_all(STDOUT_FILENO, buf, (size_t)n) < 0)
		return 1; /* nobody reads our output any more */
	return 0;
}

int nb_cli_console(struct nb_cli *c, const char *id, int linger_s)
{
	char host[256], authority[1024], empty_sha[65];
	const char *prefix = "";
	unsigned port;
	struct nb_buf req, head, path;
	struct relay rl = {.sock = -1, .stdin_open = true};
	struct termios saved, raw;
	struct sigaction sa = {0}, old_term, old_hup, old_pipe;
	bool raw_set = false;
	int r, ex = NB_CLI_OK, status = 0, headlen;

	nb_buf_init(&req, 8192);
	nb_buf_init(&head, HEAD_MAX);
	nb_buf_init(&path, 4096);
	r = nb_cli_parse_endpoint(c->http.endpoint, host, sizeof(host), &port);
	if (r == -EPROTONOSUPPORT) {
		fprintf(stderr, "error: the console needs an http:// endpoint, not %s\n",
		        c->http.endpoint);
		ex = NB_CLI_EUSAGE;
		goto out;
	}
	if (r < 0) {
		fprintf(stderr, "error: cannot parse the endpoint %s\n", c->http.endpoint);
		ex = NB_CLI_EUSAGE;
		goto out;
	}
	/* Host is the endpoint's authority as written: a signature covers it */
	if (nb_cli_url_split(c->http.endpoint, authority, sizeof(authority), &prefix) < 0 ||
	    nb_cli_path(&path, "instances", id, "console") < 0 ||
	    nb_buf_printf(&req,
	                  "GET %s%s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\n"
	                  "Upgrade: nubo-console\r\nUser-Agent: nubo/%s\r\n",
	                  prefix, path.data, authority, NUBO_VERSION) < 0) {
		ex = nb_cli_usage(c, "argument too long");
		goto out;
	}
	nb_sha256_hex("", 0, empty_sha);
	r = nb_cli_http_auth_lines(&c->http, "GET", path.data, empty_sha, &req);
	if (r < 0) {
		fprintf(stderr, "error: signing the console request failed: %s\n", strerror(-r));
		ex = NB_CLI_EAPI;
		goto out;
	}
	if (nb_buf_puts(&req, "\r\n") < 0) {
		ex = nb_cli_usage(c, "argument too long");
		goto out;
	}
	rl.sock = dial(host, port);
	if (rl.sock < 0) {
		fprintf(stderr, "error: cannot reach the controller at %s: %s\n", c->http.endpoint,
		        strerror(-rl.sock));
		ex = NB_CLI_EUNREACH;
		goto out;
	}
	r = send_all(rl.sock, req.data, req.len);
	headlen = r < 0 ? r : read_head(rl.sock, &head, nb_now_ms() + HANDSHAKE_TIMEOUT_MS);
	if (headlen < 0) {
		fprintf(stderr, "error: console handshake with %s: %s\n", c->http.endpoint,
		        strerror(-headlen));
		ex = headlen == -E2BIG ? NB_CLI_EAPI : NB_CLI_EUNREACH;
		goto out;
	}
	if (nb_cli_parse_status_line(head.data, &status) < 0) {
		fprintf(stderr, "error: %s answered the console request with no HTTP status\n",
		        c->http.endpoint);
		ex = NB_CLI_EAPI;
		goto out;
	}
	if (status != 101) {
		ex = report_refusal(c, rl.sock, &head, headlen, status);
		goto out;
	}
	fprintf(stderr, "Connected to %s (Ctrl-] to detach)\n", id);
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, &old_term);
	sigaction(SIGHUP, &sa, &old_hup);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, &old_pipe);
	if (head.len > (size_t)headlen &&
	    nb_write_all(STDOUT_FILENO, head.data + headlen, head.len - (size_t)headlen) < 0)
		goto restore;
	rl.tty = isatty(STDIN_FILENO);
	if (rl.tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
		raw = saved;
		cfmakeraw(&raw);
		raw_set = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
	}
	while (!console_stop) {
		struct pollfd p[2] = {{.fd = rl.sock, .events = POLLIN},
		                      {.fd = rl.stdin_open ? STDIN_FILENO : -1, .events = POLLIN}};
		int timeout = -1, pr;

		if (rl.linger_until) {
			int64_t left = rl.linger_until - nb_now_ms();
			if (left <= 0)
				break;
			timeout = (int)left;
		}
		pr = poll(p, 2, timeout);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0) {
			ex = NB_CLI_EAPI;
			break;
		}
		if (p[0].revents) {
			r = relay_sock(&rl);
			if (r < 0) {
				fprintf(stderr, "%serror: console: %s\n", raw_set ? "\r\n" : "",
				        strerror(-r));
				ex = NB_CLI_EAPI;
			}
			if (r)
				break;
		}
		if (p[1].revents && relay_stdin(&rl, linger_s))
			break;
	}
restore:
	if (raw_set)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	sigaction(SIGTERM, &old_term, NULL);
	sigaction(SIGHUP, &old_hup, NULL);
	sigaction(SIGPIPE, &old_pipe, NULL);
	if (rl.tty && rl.detached)
		fprintf(stderr, "\nDetached from %s.\n", id);
	else if (rl.tty && rl.closed)
		fprintf(stderr, "\nThe controller closed the console of %s.\n", id);
out:
	if (rl.sock >= 0)
		close(rl.sock);
	explicit_bzero(req.data ? req.data : (char *)"", req.len);
	nb_buf_free(&req);
	nb_buf_free(&head);
	nb_buf_free(&path);
	return ex;
}
