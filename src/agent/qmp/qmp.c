/* QMP transport: framing (one JSON object per line), greeting and
 * capabilities, command ids, deadlines, and the event queue. Commands
 * themselves live in qmp_cmd.c. */
#include "agent/qmp/qmp.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/json.h"
#include "common/util.h"

/* Bytes asked of the kernel per read. */
#define QMP_CHUNK 16384
/* nb_qmp_pump handles at most this many messages per call, so a flooding
 * peer cannot keep the caller's loop busy forever. */
#define QMP_PUMP_MAX_MSGS 1024
/* Delay between connect attempts while QEMU has not created the socket. */
#define QMP_RETRY_MS 10
#define QMP_MAX_CMD 128

struct nb_qmp {
	int fd;
	uint64_t next_id;
	struct nb_buf in; /* bytes read, not yet split into lines */
	size_t scanned;   /* bytes of in already known to hold no '\n' */
	bool eof;
	int dead; /* sticky error: the stream can no longer be trusted */
	json_t *events[NB_QMP_MAX_EVENTS];
	size_t ev_head, ev_count;
	uint64_t ev_dropped;
	char last_err[512];
};

static int64_t deadline_after(int timeout_ms)
{
	return nb_now_ms() + timeout_ms;
}

static int ms_left(int64_t deadline)
{
	int64_t left = deadline - nb_now_ms();

	if (left <= 0)
		return 0;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}

/* Waits for events on fd until deadline (a deadline already past still
 * checks once): 1 ready, 0 timed out, -errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = events};
	int r;

	for (;;) {
		r = poll(&p, 1, ms_left(deadline));
		if (r > 0)
			return 1;
		if (r == 0)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

static void set_error(struct nb_qmp *q, const char *msg)
{
	nb_strlcpy(q->last_err, msg, sizeof(q->last_err));
}

static void queue_event(struct nb_qmp *q, json_t *ev)
{
	if (q->ev_count == NB_QMP_MAX_EVENTS) {
		json_decref(q->events[q->ev_head]);
		q->ev_head = (q->ev_head + 1) % NB_QMP_MAX_EVENTS;
		q->ev_count--;
		q->ev_dropped++;
	}
	q->events[(q->ev_head + q->ev_count) % NB_QMP_MAX_EVENTS] = ev;
	q->ev_count++;
}

/* One read without blocking: >0 bytes read, 0 nothing ready (or EOF, which
 * sets q->eof), -errno. */
static int fill(struct nb_qmp *q)
{
	char chunk[QMP_CHUNK];
	ssize_t n;
	int r;

	if (q->eof)
		return 0;
	for (;;) {
		n = read(q->fd, chunk, sizeof(chunk));
		if (n >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		if (errno == ECONNRESET)
			n = 0;
		else
			return -errno;
		break;
	}
	if (n == 0) {
		q->eof = true;
		return 0;
	}
	r = nb_buf_append(&q->in, chunk, (size_t)n);
	if (r < 0)
		return r == -E2BIG ? -EPROTO : r;
	return (int)n;
}

/* Splits one complete line off the input and parses it: 1 with *msg set
 * (an object, caller decrefs), 0 when no complete line is buffered, -EPROTO
 * on an over-long line or anything but a JSON object. Blank lines are
 * skipped. */
static int take_line(struct nb_qmp *q, json_t **msg)
{
	json_error_t jerr;
	json_t *j;
	char *nl;
	size_t len;

	for (;;) {
		nl = q->in.len > q->scanned
		         ? memchr(q->in.data + q->scanned, '\n', q->in.len - q->scanned)
		         : NULL;
		if (!nl) {
			q->scanned = q->in.len;
			if (q->in.len > NB_QMP_MAX_LINE) {
				set_error(q, "QMP line longer than NB_QMP_MAX_LINE");
				return -EPROTO;
			}
			return 0;
		}
		len = (size_t)(nl - q->in.data);
		if (len > NB_QMP_MAX_LINE) {
			set_error(q, "QMP line longer than NB_QMP_MAX_LINE");
			return -EPROTO;
		}
		j = NULL;
		if (strspn(q->in.data, " \t\r") < len) {
			j = json_loadb(q->in.data, len, JSON_REJECT_DUPLICATES, &jerr);
			if (!j || !json_is_object(j)) {
				char m[sizeof(q->last_err)];

				snprintf(m, sizeof(m), "QMP: bad JSON from peer: %s",
				         j ? "not an object" : jerr.text);
				set_error(q, m);
				json_decref(j);
				return -EPROTO;
			}
		}
		nb_buf_consume(&q->in, len + 1);
		q->scanned = 0;
		if (j) {
			*msg = j;
			return 1;
		}
	}
}

/* Next message, waiting until deadline when block is set. 1 with *msg, 0
 * (only without block) when nothing is ready, or -ETIMEDOUT / -EPIPE /
 * -EPROTO / -errno. Errors other than a timeout make the connection dead. */
static int next_msg(struct nb_qmp *q, int64_t deadline, bool block, json_t **msg)
{
	int r;

	if (q->dead)
		return q->dead;
	for (;;) {
		r = take_line(q, msg);
		if (r != 0)
			break;
		if (q->eof) {
			set_error(q, "QMP: connection closed by peer");
			r = -EPIPE;
			break;
		}
		if (block) {
			r = wait_fd(q->fd, POLLIN, deadline);
			if (r == 0) {
				set_error(q, "QMP: timed out waiting for the peer");
				return -ETIMEDOUT;
			}
			if (r < 0)
				break;
		}
		r = fill(q);
		if (r < 0)
			break;
		if (r == 0 && !block && !q->eof)
			return 0;
	}
	if (r < 0)
		q->dead = r;
	return r;
}

static int send_all(struct nb_qmp *q, const char *data, size_t len, int64_t deadline)
{
	size_t off = 0;
	ssize_t n;
	int r;

	while (off < len) {
		n = send(q->fd, data + off, len - off, MSG_NOSIGNAL);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			r = wait_fd(q->fd, POLLOUT, deadline);
			if (r > 0)
				continue;
			/* A half-sent command leaves the stream unusable. */
			if (off > 0)
				q->dead = -EPIPE;
			set_error(q, "QMP: timed out sending a command");
			return r == 0 ? -ETIMEDOUT : r;
		}
		r = (n < 0 && errno != EPIPE && errno != ECONNRESET) ? -errno : -EPIPE;
		q->dead = r;
		set_error(q, "QMP: connection closed by peer");
		return r;
	}
	return 0;
}

static void fill_err(char *err, size_t errsz, const char *msg)
{
	if (err && errsz)
		nb_strlcpy(err, msg, errsz);
}

/* Turns a QMP error member into "Class: desc". */
static void format_remote_error(struct nb_qmp *q, const json_t *error)
{
	const char *cls = json_is_object(error) ? nb_json_str(error, "class") : NULL;
	const char *desc = json_is_object(error) ? nb_json_str(error, "desc") : NULL;

	snprintf(q->last_err, sizeof(q->last_err), "%s: %s", cls ? cls : "(no class)",
	         desc ? desc : "(no description)");
}

static int execute(struct nb_qmp *q, const char *cmd, json_t *args, int64_t deadline, json_t **ret)
{
	char id[32];
	json_t *req = NULL, *msg = NULL;
	char *line = NULL;
	struct nb_buf out;
	int r;

	nb_buf_init(&out, NB_QMP_MAX_LINE);
	if (q->dead) {
		set_error(q, "QMP: the connection is no longer usable");
		return q->dead;
	}
	q->last_err[0] = '\0';
	snprintf(id, sizeof(id), "nb-%" PRIu64, ++q->next_id);
	req = json_object();
	if (!req || json_object_set_new(req, "execute", json_string(cmd)) < 0 ||
	    (args && json_object_set(req, "arguments", args) < 0) ||
	    json_object_set_new(req, "id", json_string(id)) < 0) {
		r = -ENOMEM;
		goto out;
	}
	line = json_dumps(req, JSON_COMPACT);
	if (!line) {
		r = -ENOMEM;
		goto out;
	}
	r = nb_buf_puts(&out, line);
	if (r == 0)
		r = nb_buf_puts(&out, "\n");
	if (r < 0) {
		set_error(q, "QMP: command too long");
		r = r == -E2BIG ? -EMSGSIZE : r;
		goto out;
	}
	r = send_all(q, out.data, out.len, deadline);
	if (r < 0)
		goto out;

	for (;;) {
		const json_t *rid;

		r = next_msg(q, deadline, true, &msg);
		if (r < 0)
			goto out;
		if (json_object_get(msg, "event")) {
			queue_event(q, msg);
			msg = NULL;
			continue;
		}
		if (!json_object_get(msg, "return") && !json_object_get(msg, "error")) {
			/* A late greeting or something unknown: not ours. */
			json_decref(msg);
			msg = NULL;
			continue;
		}
		rid = json_object_get(msg, "id");
		/* QEMU answers without an id only when it could not parse the
		 * request, which can only be the one in flight. A reply with
		 * another id is late, for a command that already timed out. */
		if (rid && !(json_is_string(rid) && strcmp(json_string_value(rid), id) == 0)) {
			json_decref(msg);
			msg = NULL;
			continue;
		}
		break;
	}
	if (json_object_get(msg, "error")) {
		format_remote_error(q, json_object_get(msg, "error"));
		r = -EREMOTEIO;
		goto out;
	}
	if (ret)
		*ret = json_incref(json_object_get(msg, "return"));
	r = 0;
out:
	json_decref(msg);
	free(line);
	nb_buf_free(&out);
	json_decref(req);
	return r;
}

static int handshake(struct nb_qmp *q, int64_t deadline)
{
	json_t *msg = NULL;
	int r;

	for (;;) {
		r = next_msg(q, deadline, true, &msg);
		if (r < 0)
			return r;
		if (json_is_object(json_object_get(msg, "QMP")))
			break;
		if (!json_object_get(msg, "event")) {
			json_decref(msg);
			set_error(q, "QMP: expected a greeting");
			return -EPROTO;
		}
		queue_event(q, msg);
	}
	json_decref(msg);
	return execute(q, "qmp_capabilities", NULL, deadline, NULL);
}

int nb_qmp_attach(int fd, int timeout_ms, struct nb_qmp **out)
{
	int64_t deadline = deadline_after(timeout_ms < 0 ? 0 : timeout_ms);
	struct nb_qmp *q;
	int r;

	*out = NULL;
	if (fd < 0)
		return -EBADF;
	if (timeout_ms < 0) {
		close(fd);
		return -EINVAL;
	}
	q = calloc(1, sizeof(*q));
	if (!q) {
		close(fd);
		return -ENOMEM;
	}
	q->fd = fd;
	nb_buf_init(&q->in, NB_QMP_MAX_LINE + QMP_CHUNK + 1);
	r = nb_fd_cloexec(fd);
	if (r == 0)
		r = nb_fd_nonblock(fd);
	if (r == 0)
		r = handshake(q, deadline);
	if (r < 0) {
		nb_qmp_close(q);
		return r;
	}
	*out = q;
	return 0;
}

/* One connect attempt: a connected fd, or -errno. */
static int try_connect(const struct sockaddr_un *sa, int64_t deadline)
{
	int fd, r, soerr = 0;
	socklen_t len = sizeof(soerr);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
		return fd;
	r = -errno;
	/* Unix sockets answer a full backlog with EAGAIN (the caller retries);
	 * EINPROGRESS is handled for completeness. */
	if (r == -EINPROGRESS) {
		r = wait_fd(fd, POLLOUT, deadline);
		if (r == 0)
			r = -ETIMEDOUT;
		else if (r > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
			r = -errno;
		else if (r > 0)
			r = -soerr;
		if (r == 0)
			return fd;
	}
	close(fd);
	return r;
}

/* The unix socket address of path. */
static int sock_addr(const char *path, struct sockaddr_un *sa)
{
	*sa = (struct sockaddr_un){.sun_family = AF_UNIX};
	if (!path || !*path)
		return -EINVAL;
	if (strlen(path) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	memcpy(sa->sun_path, path, strlen(path));
	return 0;
}

int nb_qmp_connect(const char *path, int timeout_ms, struct nb_qmp **out)
{
	struct sockaddr_un sa;
	int64_t deadline;
	int fd;

	*out = NULL;
	if (timeout_ms < 0)
		return -EINVAL;
	fd = sock_addr(path, &sa);
	if (fd < 0)
		return fd;
	deadline = deadline_after(timeout_ms);
	for (;;) {
		fd = try_connect(&sa, deadline);
		if (fd >= 0)
			break;
		/* QEMU may not have created or started listening on the
		 * socket yet: it was spawned a moment ago. */
		if (fd != -ECONNREFUSED && fd != -ENOENT && fd != -EAGAIN)
			return fd;
		if (ms_left(deadline) == 0)
			return -ETIMEDOUT;
		poll(NULL, 0, ms_left(deadline) < QMP_RETRY_MS ? ms_left(deadline) : QMP_RETRY_MS);
	}
	return nb_qmp_attach(fd, ms_left(deadline), out);
}

int nb_qmp_try_connect(const char *path, int *fd_out)
{
	struct sockaddr_un sa;
	int fd;

	*fd_out = -1;
	fd = sock_addr(path, &sa);
	if (fd < 0)
		return fd;
	fd = try_connect(&sa, deadline_after(0));
	if (fd == -ECONNREFUSED || fd == -ENOENT || fd == -EAGAIN || fd == -ETIMEDOUT)
		return -EAGAIN;
	if (fd < 0)
		return fd;
	*fd_out = fd;
	return 0;
}

void nb_qmp_close(struct nb_qmp *q)
{
	if (!q)
		return;
	if (q->fd >= 0)
		close(q->fd);
	while (q->ev_count)
		json_decref(nb_qmp_next_event(q));
	nb_buf_free(&q->in);
	free(q);
}

int nb_qmp_fd(const struct nb_qmp *q)
{
	return q->fd;
}

int nb_qmp_execute(struct nb_qmp *q, const char *cmd, json_t *args, int timeout_ms, json_t **ret,
                   char *err, size_t errsz)
{
	int r;

	if (ret)
		*ret = NULL;
	if (!cmd || !*cmd || strlen(cmd) > QMP_MAX_CMD || timeout_ms < 0 ||
	    (args && !json_is_object(args))) {
		json_decref(args);
		fill_err(err, errsz, "QMP: invalid command or arguments");
		return -EINVAL;
	}
	r = execute(q, cmd, args, deadline_after(timeout_ms), ret);
	json_decref(args);
	if (r < 0 && err && errsz) {
		char b[128];

		fill_err(err, errsz, q->last_err[0] ? q->last_err : strerror_r(-r, b, sizeof(b)));
	}
	return r;
}

int nb_qmp_pump(struct nb_qmp *q)
{
	unsigned handled = 0;
	json_t *msg;
	int r;

	if (q->dead)
		return q->dead;
	for (;;) {
		r = next_msg(q, 0, false, &msg);
		if (r <= 0)
			return r;
		if (json_object_get(msg, "event"))
			queue_event(q, msg);
		else
			json_decref(msg); /* a late reply */
		if (++handled == QMP_PUMP_MAX_MSGS)
			return 0;
	}
}

json_t *nb_qmp_next_event(struct nb_qmp *q)
{
	json_t *ev;

	if (!q->ev_count)
		return NULL;
	ev = q->events[q->ev_head];
	q->events[q->ev_head] = NULL;
	q->ev_head = (q->ev_head + 1) % NB_QMP_MAX_EVENTS;
	q->ev_count--;
	return ev;
}

uint64_t nb_qmp_events_dropped(const struct nb_qmp *q)
{
	return q->ev_dropped;
}

const char *nb_qmp_last_error(const struct nb_qmp *q)
{
	return q->last_err;
}
