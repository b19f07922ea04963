/* QMP transport and commands against a fake monitor that replays
 * transcripts recorded from a real QEMU (the .replay files in tests/data/qmp, made by
 * tests/data/qmp/record.py), plus one test against a real QEMU process.
 *
 * The fake monitor runs in a thread on one end of a socketpair. Script
 * lines:
 *   S: <text>   send text; when it is a JSON object with an "id", the id is
 *               replaced by the one the client used in its latest command
 *   S1: <text>  same, with the id of the command before the latest
 *   C: <json>   read one command; its "execute" and "arguments" must equal
 *               these (the client's "id" is remembered)
 *   BIG: <n>    send an event line padded to exactly n bytes before '\n'
 *   HOLD        keep the socket open until the client closes it
 * The end of the script closes the socket. A mismatch is kept as the
 * fake's error and reported by fake_finish (cmocka is not thread-safe). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/qmp/qmp.h"
#include "agent/qmp/qmp_cmd.h"
#include "common/buf.h"
#include "common/util.h"

#define FAKE_WAIT_MS 5000
#define CONNECT_MS 2000

struct fake {
	int fd;
	pthread_t thread;
	char *script;
	char ids[2][64]; /* [0] latest command's id, [1] the one before */
	struct nb_buf in;
	char err[1024];
};

static void fake_fail(struct fake *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fake_fail(struct fake *f, const char *fmt, ...)
{
	va_list ap;

	if (f->err[0])
		return;
	va_start(ap, fmt);
	vsnprintf(f->err, sizeof(f->err), fmt, ap);
	va_end(ap);
}

static int fake_send(struct fake *f, const char *data, size_t len)
{
	size_t off = 0;
	ssize_t n;

	while (off < len) {
		n = send(f->fd, data + off, len - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -errno;
		off += (size_t)n;
	}
	return 0;
}

/* Reads one line from the client: 1 with *line (caller frees), 0 at EOF,
 * -ETIMEDOUT. */
static int fake_read_line(struct fake *f, char **line)
{
	struct pollfd p = {.fd = f->fd, .events = POLLIN};
	char chunk[4096], *nl;
	ssize_t n;

	for (;;) {
		nl = f->in.len ? memchr(f->in.data, '\n', f->in.len) : NULL;
		if (nl) {
			*line = strndup(f->in.data, (size_t)(nl - f->in.data));
			nb_buf_consume(&f->in, (size_t)(nl - f->in.data) + 1);
			return 1;
		}
		if (poll(&p, 1, FAKE_WAIT_MS) <= 0)
			return -ETIMEDOUT;
		n = read(f->fd, chunk, sizeof(chunk));
		if (n <= 0)
			return 0;
		if (nb_buf_append(&f->in, chunk, (size_t)n) < 0)
			return -E2BIG;
	}
}

static void fake_expect(struct fake *f, const char *want_text)
{
	json_t *want = json_loads(want_text, 0, NULL), *got = NULL;
	const char *id;
	char *line = NULL;
	int r;

	if (!want) {
		fake_fail(f, "bad C: line in script: %s", want_text);
		return;
	}
	r = fake_read_line(f, &line);
	if (r <= 0) {
		fake_fail(f, "expected %s, got %s", want_text, r == 0 ? "EOF" : "nothing");
		goto out;
	}
	got = json_loads(line, 0, NULL);
	if (!got ||
	    !json_equal(json_object_get(want, "execute"), json_object_get(got, "execute")) ||
	    !((!json_object_get(want, "arguments") && !json_object_get(got, "arguments")) ||
	      json_equal(json_object_get(want, "arguments"), json_object_get(got, "arguments")))) {
		fake_fail(f, "expected %s, got %s", want_text, line);
		goto out;
	}
	id = json_string_value(json_object_get(got, "id"));
	if (!id || strlen(id) >= sizeof(f->ids[0])) {
		fake_fail(f, "command without a usable id: %s", line);
		goto out;
	}
	memcpy(f->ids[1], f->ids[0], sizeof(f->ids[0]));
	memcpy(f->ids[0], id, strlen(id) + 1);
out:
	json_decref(want);
	json_decref(got);
	free(line);
}

static void fake_server_line(struct fake *f, const char *text, const char *id)
{
	json_t *j = json_loads(text, 0, NULL);
	struct nb_buf out;
	char *dump = NULL;

	nb_buf_init(&out, 0);
	if (json_is_object(j) && json_object_get(j, "id")) {
		json_object_set_new(j, "id", json_string(id));
		dump = json_dumps(j, JSON_COMPACT);
		nb_buf_puts(&out, dump);
	} else {
		nb_buf_puts(&out, text); /* garbage goes out as it is */
	}
	nb_buf_puts(&out, "\r\n");
	/* The client may have closed already; the test then sees why. */
	fake_send(f, out.data, out.len);
	free(dump);
	json_decref(j);
	nb_buf_free(&out);
}

static const char big_head[] = "{\"event\":\"NB_BIG\",\"data\":{\"pad\":\"";
static const char big_tail[] = "\"}}";

/* An event line of exactly n bytes before the '\n'. */
static void fake_big(struct fake *f, size_t n)
{
	const char *head = big_head, *tail = big_tail;
	char *line = malloc(n + 1);
	size_t pad = n - strlen(head) - strlen(tail);

	if (!line)
		return;
	memcpy(line, head, strlen(head));
	memset(line + strlen(head), 'x', pad);
	memcpy(line + strlen(head) + pad, tail, strlen(tail));
	line[n] = '\n';
	fake_send(f, line, n + 1);
	free(line);
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	char *line, *next;

	for (line = f->script; line && *line && !f->err[0]; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		if (strncmp(line, "S: ", 3) == 0) {
			fake_server_line(f, line + 3, f->ids[0]);
		} else if (strncmp(line, "S1: ", 4) == 0) {
			fake_server_line(f, line + 4, f->ids[1]);
		} else if (strncmp(line, "C: ", 3) == 0) {
			fake_expect(f, line + 3);
		} else if (strncmp(line, "BIG: ", 5) == 0) {
			uint64_t n = 0;

			if (nb_parse_u64(line + 5, &n) < 0 || n < 64 || n > (64u << 20))
				fake_fail(f, "bad BIG: line %s", line);
			else
				fake_big(f, (size_t)n);
		} else if (strcmp(line, "HOLD") == 0) {
			char *l = NULL;
			int r;

			while ((r = fake_read_line(f, &l)) == 1)
				free(l);
			if (r < 0)
				fake_fail(f, "HOLD: the client never closed");
		} else {
			fake_fail(f, "unknown script line: %s", line);
		}
	}
	shutdown(f->fd, SHUT_RDWR);
	return NULL;
}

static char *load_replay(const char *name)
{
	char path[512];
	char *data = NULL;
	size_t len;

	snprintf(path, sizeof(path), "%s/qmp/%s.replay", NB_TEST_DATA, name);
	assert_int_equal(nb_read_file(path, 1u << 20, &data, &len), 0);
	return data;
}

/* A recorded transcript (NULL: none) followed by extra script lines. */
static char *script(const char *replay, const char *extra)
{
	struct nb_buf b;
	char *rec = replay ? load_replay(replay) : NULL;

	nb_buf_init(&b, 0);
	assert_int_equal(nb_buf_puts(&b, rec ? rec : ""), 0);
	assert_int_equal(nb_buf_puts(&b, extra ? extra : ""), 0);
	free(rec);
	return nb_buf_steal(&b);
}

/* Starts the fake on a script (takes ownership); *client_fd is the other
 * end. */
static struct fake *fake_start(char *text, int *client_fd)
{
	struct fake *f = calloc(1, sizeof(*f));
	int sv[2];

	assert_non_null(f);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	f->fd = sv[0];
	f->script = text;
	nb_buf_init(&f->in, 4u << 20);
	assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
	*client_fd = sv[1];
	return f;
}

/* Waits for the fake to finish its script and fails the test on its error. */
static void fake_finish(struct fake *f)
{
	char err[sizeof(f->err)];

	pthread_join(f->thread, NULL);
	memcpy(err, f->err, sizeof(err));
	close(f->fd);
	free(f->script);
	nb_buf_free(&f->in);
	free(f);
	if (err[0])
		fail_msg("fake monitor: %s", err);
}

/* Connects a client through the fake running text. */
static struct nb_qmp *open_fake(char *text, struct fake **fp)
{
	struct nb_qmp *q = NULL;
	int fd;

	*fp = fake_start(text, &fd);
	assert_int_equal(nb_qmp_attach(fd, CONNECT_MS, &q), 0);
	assert_non_null(q);
	return q;
}

static void expect_event(struct nb_qmp *q, const char *name)
{
	json_t *ev = nb_qmp_next_event(q);

	assert_non_null(ev);
	assert_string_equal(json_string_value(json_object_get(ev, "event")), name);
	json_decref(ev);
}

static void test_connect(void **state)
{
	struct fake *f;
	struct nb_qmp *q;

	(void)state;
	q = open_fake(script("connect", NULL), &f);
	assert_true(nb_qmp_fd(q) >= 0);
	assert_int_equal(fcntl(nb_qmp_fd(q), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	assert_null(nb_qmp_next_event(q));
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_query_status(void **state)
{
	struct fake *f;
	struct nb_qmp *q;
	char status[32];
	bool running = false;

	(void)state;
	q = open_fake(script("query-status", NULL), &f);
	assert_int_equal(nb_qmp_query_status(q, status, sizeof(status), &running), 0);
	assert_string_equal(status, "running");
	assert_true(running);
	assert_string_equal(nb_qmp_last_error(q), "");
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_query_status_short_buffer(void **state)
{
	struct fake *f;
	struct nb_qmp *q;
	char status[4];

	(void)state;
	q = open_fake(script("query-status", NULL), &f);
	assert_int_equal(nb_qmp_query_status(q, status, sizeof(status), NULL), -ERANGE);
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_query_version(void **state)
{
	char *text = script("query-version", NULL);
	char want[64], got[64];
	json_t *greeting, *v;
	struct fake *f;
	struct nb_qmp *q;

	(void)state;
	/* The expected version comes from the greeting of the same
	 * recording, a different message than the one being parsed. */
	greeting = json_loads(strstr(text, "S: {\"QMP\"") + 3, JSON_DISABLE_EOF_CHECK, NULL);
	assert_non_null(greeting);
	v = json_object_get(json_object_get(json_object_get(greeting, "QMP"), "version"), "qemu");
	snprintf(want, sizeof(want), "%lld.%lld.%lld",
	         (long long)json_integer_value(json_object_get(v, "major")),
	         (long long)json_integer_value(json_object_get(v, "minor")),
	         (long long)json_integer_value(json_object_get(v, "micro")));
	json_decref(greeting);

	q = open_fake(text, &f);
	assert_int_equal(nb_qmp_query_version(q, got, sizeof(got)), 0);
	assert_string_equal(got, want);
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_query_cpu_count(void **state)
{
	struct fake *f;
	struct nb_qmp *q;
	int n = 0;

	(void)state;
	q = open_fake(script("query-cpus-fast", NULL), &f);
	assert_int_equal(nb_qmp_query_cpu_count(q, &n), 0);
	assert_int_equal(n, 2); /* record.py runs QEMU with -smp 2 */
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_query_memory(void **state)
{
	struct fake *f;
	struct nb_qmp *q;
	long long bytes = 0;

	(void)state;
	q = open_fake(script("query-memory-size-summary", NULL), &f);
	assert_int_equal(nb_qmp_query_memory(q, &bytes), 0);
	assert_int_equal(bytes, 128ll << 20); /* record.py: -m 128M */
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_stop_cont_events_in_order(void **state)
{
	struct fake *f;
	struct nb_qmp *q;
	char status[32];
	bool running = true;

	(void)state;
	q = open_fake(script("stop-cont", NULL), &f);
	assert_int_equal(nb_qmp_stop(q), 0);
	assert_int_equal(nb_qmp_query_status(q, status, sizeof(status), &running), 0);
	assert_string_equal(status, "paused");
	assert_false(running);
	assert_int_equal(nb_qmp_cont(q), 0);
	assert_int_equal(nb_qmp_query_status(q, status, sizeof(status), &running), 0);
	assert_string_equal(status, "running");
	assert_true(running);
	/* Both events arrived before their replies and wait, in order. */
	expect_event(q, "STOP");
	expect_event(q, "RESUME");
	assert_null(nb_qmp_next_event(q));
	assert_int_equal(nb_qmp_events_dropped(q), 0);
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_system_reset(void **state)
{
	struct fake *f;
	struct nb_qmp *q;
	json_t *ev;

	(void)state;
	q = open_fake(script("system_reset", NULL), &f);
	assert_int_equal(nb_qmp_system_reset(q), 0);
	ev = nb_qmp_next_event(q);
	assert_non_null(ev);
	assert_string_equal(json_string_value(json_object_get(ev, "event")), "RESET");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(ev, "data"), "reason")),
	    "host-qmp-system-reset");
	json_decref(ev);
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_system_powerdown(void **state)
{
	struct fake *f;
	struct nb_qmp *q;

	(void)state;
	q = open_fake(script("system_powerdown", NULL), &f);
	assert_int_equal(nb_qmp_system_powerdown(q), 0);
	expect_event(q, "POWERDOWN");
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_quit_then_eof(void **state)
{
	struct pollfd p;
	struct fake *f;
	struct nb_qmp *q;
	int r;

	(void)state;
	q = open_fake(script("quit", NULL), &f);
	assert_int_equal(nb_qmp_quit(q), 0);
	expect_event(q, "SHUTDOWN");
	/* Then QEMU closes: the fd turns readable and pump reports it. */
	p = (struct pollfd){.fd = nb_qmp_fd(q), .events = POLLIN};
	do {
		assert_int_equal(poll(&p, 1, FAKE_WAIT_MS), 1);
		r = nb_qmp_pump(q);
	} while (r == 0);
	assert_int_equal(r, -EPIPE);
	assert_int_equal(nb_qmp_pump(q), -EPIPE);
	assert_int_equal(nb_qmp_query_status(q, NULL, 0, NULL), -EPIPE);
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_error_reply(void **state)
{
	struct fake *f;
	struct nb_qmp *q;
	json_t *ret = NULL;
	char err[256];
	bool running = false;

	(void)state;
	q = open_fake(script("error-unknown-command", NULL), &f);
	assert_int_equal(
	    nb_qmp_execute(q, "nb-no-such-command", NULL, 1000, &ret, err, sizeof(err)),
	    -EREMOTEIO);
	assert_null(ret);
	assert_string_equal(err,
	                    "CommandNotFound: The command nb-no-such-command has not been found");
	assert_string_equal(nb_qmp_last_error(q), err);
	/* An error reply leaves the connection usable. */
	assert_int_equal(nb_qmp_query_status(q, NULL, 0, &running), 0);
	assert_true(running);
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_error_bad_argument(void **state)
{
	struct fake *f;
	struct nb_qmp *q;
	char err[256];

	(void)state;
	q = open_fake(script("error-bad-argument", NULL), &f);
	assert_int_equal(nb_qmp_execute(q, "query-status", json_pack("{s:b}", "verbose", 1), 1000,
	                                NULL, err, sizeof(err)),
	                 -EREMOTEIO);
	assert_string_equal(err, "GenericError: Parameter 'verbose' is unexpected");
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_invalid_arguments(void **state)
{
	struct fake *f;
	struct nb_qmp *q;
	char err[64];

	(void)state;
	q = open_fake(script("connect", NULL), &f);
	/* Not an object: refused before anything is sent (and freed). */
	assert_int_equal(nb_qmp_execute(q, "stop", json_integer(1), 1000, NULL, err, sizeof(err)),
	                 -EINVAL);
	assert_int_equal(nb_qmp_execute(q, "", NULL, 1000, NULL, NULL, 0), -EINVAL);
	assert_int_equal(nb_qmp_execute(q, "stop", NULL, -1, NULL, NULL, 0), -EINVAL);
	nb_qmp_close(q);
	fake_finish(f);
}

/* Many events before one reply: the queue keeps the newest
 * NB_QMP_MAX_EVENTS, in order, and counts the rest as dropped. */
static void test_event_queue_bound(void **state)
{
	const int total = NB_QMP_MAX_EVENTS + 44;
	struct fake *f;
	struct nb_qmp *q;
	struct nb_buf extra;
	json_t *ev;
	int i;

	(void)state;
	nb_buf_init(&extra, 0);
	nb_buf_puts(&extra, "C: {\"execute\":\"query-status\"}\n");
	for (i = 0; i < total; i++)
		nb_buf_printf(&extra, "S: {\"event\":\"NB_TEST\",\"data\":{\"n\":%d}}\n", i);
	nb_buf_puts(&extra,
	            "S: {\"return\":{\"status\":\"running\",\"running\":true},\"id\":\"x\"}\n");
	q = open_fake(script("connect", extra.data), &f);
	nb_buf_free(&extra);
	assert_int_equal(nb_qmp_query_status(q, NULL, 0, NULL), 0);
	assert_int_equal(nb_qmp_events_dropped(q), total - NB_QMP_MAX_EVENTS);
	for (i = total - NB_QMP_MAX_EVENTS; i < total; i++) {
		ev = nb_qmp_next_event(q);
		assert_non_null(ev);
		assert_int_equal(
		    json_integer_value(json_object_get(json_object_get(ev, "data"), "n")), i);
		json_decref(ev);
	}
	assert_null(nb_qmp_next_event(q));
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_timeout_then_late_reply(void **state)
{
	struct fake *f;
	struct nb_qmp *q;
	char status[32], err[128];
	int64_t t0, dt;

	(void)state;
	/* The first query-status gets no answer in time; its reply comes
	 * after the second was sent and must not be taken for the second's. */
	q = open_fake(
	    script("connect",
	           "C: {\"execute\":\"query-status\"}\n"
	           "C: {\"execute\":\"query-status\"}\n"
	           "S1: {\"return\":{\"status\":\"paused\",\"running\":false},\"id\":\"x\"}\n"
	           "S: {\"return\":{\"status\":\"running\",\"running\":true},\"id\":\"x\"}\n"),
	    &f);
	t0 = nb_now_ms();
	assert_int_equal(nb_qmp_execute(q, "query-status", NULL, 200, NULL, err, sizeof(err)),
	                 -ETIMEDOUT);
	dt = nb_now_ms() - t0;
	assert_true(dt >= 200);
	assert_true(dt < 2000);
	assert_int_equal(nb_qmp_query_status(q, status, sizeof(status), NULL), 0);
	assert_string_equal(status, "running");
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_timeout_silent_server(void **state)
{
	struct fake *f;
	struct nb_qmp *q;

	(void)state;
	q = open_fake(script("connect", "C: {\"execute\":\"cont\"}\nHOLD\n"), &f);
	assert_int_equal(nb_qmp_execute(q, "cont", NULL, 100, NULL, NULL, 0), -ETIMEDOUT);
	nb_qmp_close(q); /* ends the fake's HOLD */
	fake_finish(f);
}

static void test_eof_before_reply(void **state)
{
	struct fake *f;
	struct nb_qmp *q;
	char err[128];

	(void)state;
	q = open_fake(script("connect", "C: {\"execute\":\"stop\"}\n"), &f);
	assert_int_equal(nb_qmp_execute(q, "stop", NULL, FAKE_WAIT_MS, NULL, err, sizeof(err)),
	                 -EPIPE);
	assert_int_equal(nb_qmp_stop(q), -EPIPE);
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_line_at_limit_accepted(void **state)
{
	char extra[256];
	struct fake *f;
	struct nb_qmp *q;
	json_t *ev;

	(void)state;
	snprintf(extra, sizeof(extra),
	         "C: {\"execute\":\"cont\"}\nBIG: %u\nS: {\"return\":{},\"id\":\"x\"}\n",
	         NB_QMP_MAX_LINE);
	q = open_fake(script("connect", extra), &f);
	assert_int_equal(nb_qmp_cont(q), 0);
	ev = nb_qmp_next_event(q);
	assert_non_null(ev);
	assert_int_equal(
	    strlen(json_string_value(json_object_get(json_object_get(ev, "data"), "pad"))),
	    NB_QMP_MAX_LINE - strlen(big_head) - strlen(big_tail));
	json_decref(ev);
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_line_too_long(void **state)
{
	char extra[256];
	struct fake *f;
	struct nb_qmp *q;

	(void)state;
	snprintf(extra, sizeof(extra), "C: {\"execute\":\"cont\"}\nBIG: %u\n", NB_QMP_MAX_LINE + 1);
	q = open_fake(script("connect", extra), &f);
	assert_int_equal(nb_qmp_cont(q), -EPROTO);
	/* The stream cannot be trusted any more. */
	assert_int_equal(nb_qmp_cont(q), -EPROTO);
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_garbage_json(void **state)
{
	struct fake *f;
	struct nb_qmp *q;
	char err[256];

	(void)state;
	q = open_fake(script("connect", "C: {\"execute\":\"stop\"}\nS: {\"return\": {\n"), &f);
	assert_int_equal(nb_qmp_execute(q, "stop", NULL, FAKE_WAIT_MS, NULL, err, sizeof(err)),
	                 -EPROTO);
	assert_non_null(strstr(err, "bad JSON"));
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_not_an_object(void **state)
{
	struct fake *f;
	struct nb_qmp *q;

	(void)state;
	q = open_fake(script("connect", "C: {\"execute\":\"stop\"}\nS: [1,2,3]\n"), &f);
	assert_int_equal(nb_qmp_stop(q), -EPROTO);
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_wrong_reply_shape(void **state)
{
	struct fake *f;
	struct nb_qmp *q;
	int n = 0;

	(void)state;
	q = open_fake(script("connect", "C: {\"execute\":\"query-cpus-fast\"}\n"
	                                "S: {\"return\":{\"cpus\":2},\"id\":\"x\"}\n"),
	              &f);
	assert_int_equal(nb_qmp_query_cpu_count(q, &n), -EPROTO);
	nb_qmp_close(q);
	fake_finish(f);
}

static void test_no_greeting(void **state)
{
	struct nb_qmp *q = NULL;
	struct fake *f;
	int fd;

	(void)state;
	f = fake_start(script(NULL, "S: {\"return\":{},\"id\":\"x\"}\n"), &fd);
	assert_int_equal(nb_qmp_attach(fd, CONNECT_MS, &q), -EPROTO);
	assert_null(q);
	fake_finish(f);

	f = fake_start(script(NULL, ""), &fd);
	assert_int_equal(nb_qmp_attach(fd, CONNECT_MS, &q), -EPIPE);
	fake_finish(f);

	f = fake_start(script(NULL, "HOLD\n"), &fd);
	assert_int_equal(nb_qmp_attach(fd, 100, &q), -ETIMEDOUT);
	fake_finish(f); /* attach closed fd: that ends HOLD */
}

static void test_connect_timeout(void **state)
{
	struct nb_qmp *q = NULL;
	int64_t t0 = nb_now_ms(), dt;
	char path[108];

	(void)state;
	snprintf(path, sizeof(path), "/tmp/nb-qmp-none-%d.sock", (int)getpid());
	assert_int_equal(nb_qmp_connect(path, 150, &q), -ETIMEDOUT);
	dt = nb_now_ms() - t0;
	assert_true(dt >= 150);
	assert_true(dt < 2000);
	assert_null(q);
	assert_int_equal(nb_qmp_connect("/tmp/x", -1, &q), -EINVAL);
}

/* One non-blocking attempt: -EAGAIN until something listens, then a
 * connected fd the greeting can be waited for on. */
static void test_try_connect(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char path[108], longp[200];
	int l, fd = 7;

	(void)state;
	snprintf(path, sizeof(path), "/tmp/nb-qmp-try-%d.sock", (int)getpid());
	unlink(path);
	assert_int_equal(nb_qmp_try_connect(path, &fd), -EAGAIN); /* no socket */
	assert_int_equal(fd, -1);
	l = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(l >= 0);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(nb_qmp_try_connect(path, &fd), -EAGAIN); /* bound, not listening */
	assert_int_equal(listen(l, 4), 0);
	assert_int_equal(nb_qmp_try_connect(path, &fd), 0);
	assert_true(fd > 2);
	assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	{
		/* nothing to read until the peer greets */
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int c = accept(l, NULL, NULL);
		assert_int_equal(poll(&p, 1, 0), 0);
		assert_int_equal(write(c, "{}\n", 3), 3);
		assert_int_equal(poll(&p, 1, 1000), 1);
		close(c);
	}
	close(fd);
	close(l);
	unlink(path);
	memset(longp, 'x', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = '\0';
	assert_int_equal(nb_qmp_try_connect(longp, &fd), -ENAMETOOLONG);
}

/* --- a real QEMU ------------------------------------------------------ */

static bool in_path(const char *prog, char *out, size_t outsz)
{
	const char *path = getenv("PATH");
	const char *p, *e;

	for (p = path ? path : "/usr/bin:/bin"; *p; p = *e ? e + 1 : e) {
		e = strchr(p, ':');
		if (!e)
			e = p + strlen(p);
		snprintf(out, outsz, "%.*s/%s", (int)(e - p), p, prog);
		if (access(out, X_OK) == 0)
			return true;
	}
	return false;
}

/* Waits for pid to exit within timeout_ms, through a pidfd (no polling
 * loop). Returns its wait status, or -1. */
static int wait_exit(pid_t pid, int timeout_ms)
{
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0), st = -1;
	struct pollfd p;

	if (pfd < 0)
		return -1;
	p = (struct pollfd){.fd = pfd, .events = POLLIN};
	if (poll(&p, 1, timeout_ms) == 1 && waitpid(pid, &st, 0) == pid) {
		close(pfd);
		return st;
	}
	close(pfd);
	return -1;
}

struct real {
	pid_t pid;
	struct nb_qmp *q;
	char dir[64];
};

static int real_setup(void **state)
{
	struct real *r = calloc(1, sizeof(*r));

	if (!r)
		return -1;
	r->pid = -1;
	*state = r;
	return 0;
}

/* Runs even when an assertion failed: no QEMU is left behind. */
static int real_teardown(void **state)
{
	struct real *r = *state;

	nb_qmp_close(r->q);
	if (r->pid > 0) {
		kill(r->pid, SIGKILL);
		waitpid(r->pid, NULL, 0);
	}
	if (r->dir[0])
		nb_rm_rf(r->dir);
	free(r);
	return 0;
}

static void test_real_qemu(void **state)
{
	struct real *rs = *state;
	char qemu[512], sock[128], opt[256], status[32], version[32];
	bool running = false;
	long long mem = 0;
	int st;

	if (!in_path("qemu-system-x86_64", qemu, sizeof(qemu)))
		skip();
	nb_strlcpy(rs->dir, "/tmp/nb-qmp-test-XXXXXX", sizeof(rs->dir));
	assert_non_null(mkdtemp(rs->dir));
	snprintf(sock, sizeof(sock), "%s/qmp.sock", rs->dir);
	snprintf(opt, sizeof(opt), "unix:%s,server=on,wait=off", sock);
	rs->pid = fork();
	assert_true(rs->pid >= 0);
	if (rs->pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, 0);
		dup2(null, 1);
		execl(qemu, qemu, "-nodefaults", "-no-user-config", "-display", "none", "-machine",
		      "none", "-accel", "tcg", "-m", "32M", "-qmp", opt, (char *)NULL);
		_exit(127);
	}
	/* Right after the spawn: connect must wait for the socket. */
	assert_int_equal(nb_qmp_connect(sock, 10000, &rs->q), 0);
	assert_int_equal(fcntl(nb_qmp_fd(rs->q), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	assert_int_equal(nb_qmp_query_status(rs->q, status, sizeof(status), &running), 0);
	assert_string_equal(status, "running");
	assert_true(running);
	assert_int_equal(nb_qmp_query_version(rs->q, version, sizeof(version)), 0);
	assert_true(version[0] >= '1' && version[0] <= '9');
	assert_non_null(strchr(version, '.'));
	assert_int_equal(nb_qmp_query_memory(rs->q, &mem), 0);
	assert_int_equal(mem, 32ll << 20);
	assert_int_equal(nb_qmp_stop(rs->q), 0);
	assert_int_equal(nb_qmp_query_status(rs->q, status, sizeof(status), &running), 0);
	assert_string_equal(status, "paused");
	assert_false(running);
	assert_int_equal(nb_qmp_cont(rs->q), 0);
	assert_int_equal(nb_qmp_query_status(rs->q, status, sizeof(status), &running), 0);
	assert_string_equal(status, "running");
	expect_event(rs->q, "STOP");
	expect_event(rs->q, "RESUME");
	assert_int_equal(nb_qmp_quit(rs->q), 0);
	st = wait_exit(rs->pid, 10000);
	assert_true(st != -1);
	rs->pid = -1;
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_connect),
	    cmocka_unit_test(test_query_status),
	    cmocka_unit_test(test_query_status_short_buffer),
	    cmocka_unit_test(test_query_version),
	    cmocka_unit_test(test_query_cpu_count),
	    cmocka_unit_test(test_query_memory),
	    cmocka_unit_test(test_stop_cont_events_in_order),
	    cmocka_unit_test(test_system_reset),
	    cmocka_unit_test(test_system_powerdown),
	    cmocka_unit_test(test_quit_then_eof),
	    cmocka_unit_test(test_error_reply),
	    cmocka_unit_test(test_error_bad_argument),
	    cmocka_unit_test(test_invalid_arguments),
	    cmocka_unit_test(test_event_queue_bound),
	    cmocka_unit_test(test_timeout_then_late_reply),
	    cmocka_unit_test(test_timeout_silent_server),
	    cmocka_unit_test(test_eof_before_reply),
	    cmocka_unit_test(test_line_at_limit_accepted),
	    cmocka_unit_test(test_line_too_long),
	    cmocka_unit_test(test_garbage_json),
	    cmocka_unit_test(test_not_an_object),
	    cmocka_unit_test(test_wrong_reply_shape),
	    cmocka_unit_test(test_no_greeting),
	    cmocka_unit_test(test_connect_timeout),
	    cmocka_unit_test(test_try_connect),
	    cmocka_unit_test_setup_teardown(test_real_qemu, real_setup, real_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
