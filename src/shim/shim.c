/* nubo-shim: the parent of one VM's QEMU, so that QEMU and its serial
 * console outlive restarts of nubo-agent (as conmon does for containers).
 *
 *   nubo-shim --dir DIR [--log-max BYTES] [--cgroup CGDIR]... -- PROGRAM ARGS...
 *
 * The first process returns once the shim is set up: 0, or 1 with the reason
 * on stderr (2 for bad usage). The shim itself runs detached (own session,
 * stdin/stdout on /dev/null, its stderr appended to DIR/shim.log) and:
 *   - starts PROGRAM in every CGDIR (joined before exec) with a socketpair on
 *     its stdin and stdout and DIR/qemu.log as its stderr;
 *   - writes DIR/shim.pid and DIR/child.pid;
 *   - serves DIR/console.sock (mode 0600, up to MAX_CLIENTS clients): the
 *     child's output goes to every client and to DIR/console.log, which is
 *     rotated to console.log.1 at --log-max bytes (default 1 MiB), so the two
 *     files never hold more than twice that; input from any client goes to
 *     the child. A client that falls MAX_CLIENT_BUF behind is dropped, so a
 *     slow reader never stalls the guest;
 *   - forwards SIGTERM, SIGINT and SIGQUIT to the child;
 *   - when the child exits, drains its output, writes DIR/exit atomically,
 *     removes console.sock and exits. The pid files stay: DIR/exit existing
 *     means both processes are gone.
 *
 * DIR/exit is one line "KIND N TIME[ DETAIL]": "exited CODE", "signal SIGNO",
 * "exec-failed ERRNO" or "setup-failed ERRNO" (the child could not join a
 * cgroup or open its files), then the ISO 8601 UTC time, then for the two
 * failures a message. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/util.h"

#define MAX_CLIENTS 16
#define MAX_CGROUPS 8
#define MAX_CLIENT_BUF (256u << 10) /* a client further behind is dropped */
#define MAX_TO_CHILD (64u << 10)    /* input waiting for the child */
#define CHUNK (16u << 10)
#define DEFAULT_LOG_MAX (1u << 20)
#define MIN_LOG_MAX 1024u
#define MAX_LOG_MAX (1ull << 30)
#define FLUSH_MS 1000 /* time given to clients to take the last output */
#define SETUP_TIMEOUT_MS 30000
#define MAX_KEEP_FDS 8

struct client {
	int fd;
	struct nb_buf out;
};

struct shim {
	char dir[PATH_MAX];
	uint64_t log_max;
	const char *cgroups[MAX_CGROUPS];
	int ncgroups;
	int keep_fds[MAX_KEEP_FDS]; /* inherited by the child (a tap's queue) */
	int nkeep;
	char **argv;

	int listen_fd;
	int console_fd; /* our end of the child's stdin/stdout */
	int sig_fd;
	int log_fd;
	uint64_t log_size;
	bool log_broken;

	pid_t child;
	bool child_eof;
	bool child_exited;
	int status;

	struct client clients[MAX_CLIENTS];
	int nclients;
	struct nb_buf to_child;
};

/* Fills err; a long message is cut, which is fine for a message. */
static void __attribute__((format(printf, 3, 4)))
errf(char *err, size_t errsz, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errsz, fmt, ap);
	va_end(ap);
}

static void usage(void)
{
	fprintf(stderr, "usage: nubo-shim --dir DIR [--log-max BYTES] [--cgroup CGDIR]... "
	                "-- PROGRAM ARGS...\n");
}

static int path_in(const struct shim *s, const char *name, char *out, size_t outsz)
{
	int n = snprintf(out, outsz, "%s/%s", s->dir, name);

	return n < 0 || (size_t)n >= outsz ? -ENAMETOOLONG : 0;
}

/* ---- the console log ---- */

static int log_open(struct shim *s, bool truncate)
{
	char path[PATH_MAX];
	struct stat st;
	int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0);
	int r = path_in(s, "console.log", path, sizeof(path));

	if (r < 0)
		return r;
	s->log_fd = open(path, flags, 0600);
	if (s->log_fd < 0)
		return -errno;
	s->log_size = fstat(s->log_fd, &st) == 0 ? (uint64_t)st.st_size : 0;
	return 0;
}

static void log_rotate(struct shim *s)
{
	char cur[PATH_MAX], old[PATH_MAX];
	int r;

	if (s->log_fd >= 0)
		close(s->log_fd);
	s->log_fd = -1;
	if (path_in(s, "console.log", cur, sizeof(cur)) == 0 &&
	    path_in(s, "console.log.1", old, sizeof(old)) == 0 && rename(cur, old) < 0)
		nb_warn("rename %s: %s", cur, strerror(errno));
	/* O_TRUNC keeps the bound even when the rename failed. */
	r = log_open(s, true);
	if (r < 0 && !s->log_broken) {
		nb_warn("console.log: %s", strerror(-r));
		s->log_broken = true;
	}
}

static void log_write(struct shim *s, const char *data, size_t n)
{
	while (n) {
		uint64_t room;
		size_t take;
		int r;

		if (s->log_fd < 0 || s->log_size >= s->log_max) {
			log_rotate(s);
			if (s->log_fd < 0)
				return;
		}
		room = s->log_max - s->log_size;
		take = n < room ? n : (size_t)room;
		r = nb_write_all(s->log_fd, data, take);
		if (r < 0) {
			/* A full disk must not stop the console: keep serving. */
			if (!s->log_broken)
				nb_warn("console.log: %s", strerror(-r));
			s->log_broken = true;
			return;
		}
		s->log_broken = false;
		s->log_size += take;
		data += take;
		n -= take;
	}
	if (s->log_size >= s->log_max)
		log_rotate(s);
}

/* ---- clients ---- */

static void client_drop(struct shim *s, int i, const char *why)
{
	struct client *c = &s->clients[i];

	if (why)
		nb_info("console client dropped: %s", why);
	close(c->fd);
	nb_buf_free(&c->out);
	s->clients[i] = s->clients[s->nclients - 1];
	s->nclients--;
}

/* Sends what the client can take now. Returns false when it must go. */
static bool client_flush(struct client *c)
{
	while (c->out.len) {
		ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		if (n <= 0)
			return false;
		nb_buf_consume(&c->out, (size_t)n);
	}
	return true;
}

static void fanout(struct shim *s, const char *data, size_t n)
{
	log_write(s, data, n);
	for (int i = 0; i < s->nclients;) {
		struct client *c = &s->clients[i];
		if (nb_buf_append(&c->out, data, n) < 0) {
			client_drop(s, i, "too slow");
			continue;
		}
		if (!client_flush(c)) {
			client_drop(s, i, NULL);
			continue;
		}
		i++;
	}
}

static void accept_clients(struct shim *s)
{
	for (;;) {
		int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				nb_warn("accept: %s", strerror(errno));
			return;
		}
		if (s->nclients >= MAX_CLIENTS) {
			nb_warn("console: %d clients already, refusing one", MAX_CLIENTS);
			close(fd);
			continue;
		}
		s->clients[s->nclients].fd = fd;
		nb_buf_init(&s->clients[s->nclients].out, MAX_CLIENT_BUF);
		s->nclients++;
	}
}

/* ---- the child's console ---- */

static void console_flush(struct shim *s)
{
	while (s->to_child.len && !s->child_eof) {
		ssize_t n = send(s->console_fd, s->to_child.data, s->to_child.len,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			/* The child no longer reads: input has nowhere to go. */
			nb_buf_reset(&s->to_child);
			return;
		}
		nb_buf_consume(&s->to_child, (size_t)n);
	}
}

/* Reads what the child wrote; returns false at EOF or when nothing is left. */
static bool console_read(struct shim *s)
{
	char chunk[CHUNK];
	ssize_t n;

	do
		n = read(s->console_fd, chunk, sizeof(chunk));
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		fanout(s, chunk, (size_t)n);
		return true;
	}
	if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
		s->child_eof = true;
		nb_buf_reset(&s->to_child);
	}
	return false;
}

static void client_read(struct shim *s, int i)
{
	char chunk[CHUNK];
	size_t room = MAX_TO_CHILD - s->to_child.len;
	ssize_t n;

	if (room == 0)
		return;
	do
		n = recv(s->clients[i].fd, chunk, room < sizeof(chunk) ? room : sizeof(chunk),
		         MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n <= 0) {
		client_drop(s, i, NULL);
		return;
	}
	if (!s->child_eof)
		nb_buf_append(&s->to_child, chunk, (size_t)n); /* fits: room was checked */
}

/* ---- signals ---- */

static void reap(struct shim *s)
{
	for (;;) {
		int status;
		pid_t p = waitpid(-1, &status, WNOHANG);
		if (p <= 0)
			return;
		if (p == s->child) {
			s->status = status;
			s->child_exited = true;
		}
	}
}

static void read_signals(struct shim *s)
{
	struct signalfd_siginfo si[8];
	ssize_t n = read(s->sig_fd, si, sizeof(si));

	for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof(si[0]); i++) {
		int sig = (int)si[i].ssi_signo;
		if (sig == SIGCHLD) {
			reap(s);
		} else if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT) {
			nb_info("signal %d: forwarding to pid %d", sig, (int)s->child);
			if (!s->child_exited)
				kill(s->child, sig);
		}
		/* SIGHUP: nothing to reload; it must not end the shim. */
	}
}

/* ---- the loop ---- */

static void serve(struct shim *s)
{
	struct pollfd p[3 + MAX_CLIENTS];
	int fds_clients[MAX_CLIENTS];

	while (!s->child_exited) {
		int nc = s->nclients, pr;
		bool room = s->to_child.len < MAX_TO_CHILD;

		p[0] = (struct pollfd){.fd = s->sig_fd, .events = POLLIN};
		p[1] = (struct pollfd){.fd = s->child_eof ? -1 : s->console_fd,
		                       .events = (short)(POLLIN | (s->to_child.len ? POLLOUT : 0))};
		p[2] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
		for (int i = 0; i < nc; i++) {
			fds_clients[i] = s->clients[i].fd;
			p[3 + i] = (struct pollfd){
			    .fd = s->clients[i].fd,
			    .events = (short)((room ? POLLIN : 0) |
			                      (s->clients[i].out.len ? POLLOUT : 0))};
		}
		pr = poll(p, (nfds_t)(3 + nc), -1);
		if (pr < 0) {
			if (errno != EINTR) {
				/* Only ENOMEM is possible here: retry gently. */
				nb_warn("poll: %s", strerror(errno));
				poll(NULL, 0, 100);
			}
			continue;
		}
		if (p[0].revents)
			read_signals(s);
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR))
			console_read(s);
		if (p[1].revents & POLLOUT)
			console_flush(s);
		/* Clients by fd: drops reorder the array. */
		for (int k = 0; k < nc; k++) {
			short ev = p[3 + k].revents;
			int i;
			if (!ev)
				continue;
			for (i = 0; i < s->nclients && s->clients[i].fd != fds_clients[k]; i++)
				;
			if (i == s->nclients)
				continue;
			if (ev & POLLOUT && !client_flush(&s->clients[i])) {
				client_drop(s, i, NULL);
				continue;
			}
			if (ev & POLLIN)
				client_read(s, i);
			else if (ev & (POLLHUP | POLLERR))
				/* Gone while we were not reading from it (the
				 * child's input was full): nothing to keep. */
				client_drop(s, i, NULL);
		}
		console_flush(s);
		if (p[2].revents & POLLIN)
			accept_clients(s);
	}
}

/* After the child's exit: what it wrote is still in the socket. */
static void drain(struct shim *s)
{
	int64_t deadline;

	if (!s->child_eof) {
		/* A grandchild may hold the socket open: stop at "nothing now". */
		while (console_read(s))
			;
	}
	deadline = nb_now_ms() + FLUSH_MS;
	for (;;) {
		struct pollfd p[MAX_CLIENTS];
		int n = 0;
		int64_t left = deadline - nb_now_ms();

		for (int i = 0; i < s->nclients; i++)
			if (s->clients[i].out.len)
				p[n++] = (struct pollfd){.fd = s->clients[i].fd, .events = POLLOUT};
		if (n == 0 || left <= 0)
			return;
		if (poll(p, (nfds_t)n, (int)left) < 0 && errno != EINTR)
			return;
		for (int i = 0; i < s->nclients;) {
			if (!client_flush(&s->clients[i])) {
				client_drop(s, i, NULL);
				continue;
			}
			i++;
		}
	}
}

static void write_exit(struct shim *s, const char *kind, int num, const char *detail)
{
	char path[PATH_MAX], when[32], line[1024];
	int n, r;

	nb_iso8601(nb_wall_ms(), when, sizeof(when));
	n = snprintf(line, sizeof(line), "%s %d %s%s%s\n", kind, num, when, detail ? " " : "",
	             detail ? detail : "");
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = (int)sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	r = path_in(s, "exit", path, sizeof(path));
	if (r == 0)
		r = nb_write_file(path, line, (size_t)n, 0644);
	if (r < 0)
		nb_error("writing %s: %s", path, strerror(-r));
}

static int write_pid(struct shim *s, const char *name, pid_t pid)
{
	char path[PATH_MAX], text[32];
	int n = snprintf(text, sizeof(text), "%d\n", (int)pid);
	int r = path_in(s, name, path, sizeof(path));

	return r < 0 ? r : nb_write_file(path, text, (size_t)n, 0644);
}

/* ---- setup ---- */

/* In the forked child: reports "kind errno message" on fd and exits. */
static void __attribute__((noreturn))
child_fail(int fd, const char *kind, int code, int err, const char *what)
{
	char msg[1024];
	int n = snprintf(msg, sizeof(msg), "%s %d %s: %s", kind, err, what, strerror(err));

	if (n > 0)
		nb_write_all(fd, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
	_exit(code);
}

static void __attribute__((noreturn)) child_run(struct shim *s, int console, int report)
{
	char path[PATH_MAX], pid[32];
	sigset_t none;
	int fd;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	for (int i = 0; i < s->ncgroups; i++) {
		int n = snprintf(path, sizeof(path), "%s/cgroup.procs", s->cgroups[i]);
		if (n < 0 || (size_t)n >= sizeof(path))
			child_fail(report, "setup-failed", 126, ENAMETOOLONG, s->cgroups[i]);
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			child_fail(report, "setup-failed", 126, errno, path);
		if (write(fd, pid, strlen(pid)) < 0)
			child_fail(report, "setup-failed", 126, errno, path);
		close(fd);
	}
	if (path_in(s, "qemu.log", path, sizeof(path)) < 0)
		child_fail(report, "setup-failed", 126, ENAMETOOLONG, "qemu.log");
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		child_fail(report, "setup-failed", 126, errno, path);
	if (dup2(console, 0) < 0 || dup2(console, 1) < 0 || dup2(fd, 2) < 0)
		child_fail(report, "setup-failed", 126, errno, "dup2");
	/* Everything else closes at exec (the report pipe is close-on-exec too,
	 * so its EOF tells the shim the exec worked). */
	if (close_range(3, ~0u, CLOSE_RANGE_CLOEXEC) < 0) {
		for (int i = 3; i < 65536; i++)
			if (i != report)
				close(i);
	}
	/* but for the descriptors the child is handed by number (--keep-fd) */
	for (int i = 0; i < s->nkeep; i++)
		if (fcntl(s->keep_fds[i], F_SETFD, 0) < 0)
			child_fail(report, "setup-failed", 126, errno, "--keep-fd");
	execvp(s->argv[0], s->argv);
	child_fail(report, "exec-failed", 127, errno, s->argv[0]);
}

static int listen_console(struct shim *s, char *err, size_t errsz)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	mode_t old;
	int fd, r;

	if (path_in(s, "console.sock", sa.sun_path, sizeof(sa.sun_path)) < 0) {
		errf(err, errsz, "%s/console.sock: path too long for a unix socket", s->dir);
		return -ENAMETOOLONG;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = -errno;
		errf(err, errsz, "socket: %s", strerror(errno));
		return r;
	}
	unlink(sa.sun_path);
	old = umask(0177); /* the socket is born 0600 */
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || chmod(sa.sun_path, 0600) < 0 || listen(fd, MAX_CLIENTS) < 0) {
		r = -errno;
		errf(err, errsz, "%s: %s", sa.sun_path, strerror(errno));
		close(fd);
		return r;
	}
	s->listen_fd = fd;
	return 0;
}

/* Parses "kind errno message" from the child's report. */
static void parse_report(const char *msg, char *kind, size_t kindsz, int *err, const char **text)
{
	const char *sp = strchr(msg, ' ');
	uint64_t v = 0;
	char num[16];
	size_t kl = sp ? (size_t)(sp - msg) : strlen(msg);

	nb_strlcpy(kind, msg, kl + 1 < kindsz ? kl + 1 : kindsz);
	*err = 0;
	*text = msg;
	if (!sp)
		return;
	const char *sp2 = strchr(sp + 1, ' ');
	size_t nl = sp2 ? (size_t)(sp2 - sp - 1) : 0;
	if (nl == 0 || nl >= sizeof(num))
		return;
	memcpy(num, sp + 1, nl);
	num[nl] = '\0';
	if (nb_parse_u64(num, &v) == 0 && v < 4096)
		*err = (int)v;
	*text = sp2 + 1;
}

/* Starts the child; on failure err says why (and DIR/exit too once the child
 * got as far as trying). */
static int start_child(struct shim *s, char *err, size_t errsz)
{
	int sv[2], rep[2], r = 0;
	char msg[1024];
	size_t got = 0;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		errf(err, errsz, "socketpair: %s", strerror(errno));
		return -errno;
	}
	if (pipe2(rep, O_CLOEXEC) < 0) {
		r = -errno;
		errf(err, errsz, "pipe: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return r;
	}
	s->child = fork();
	if (s->child < 0) {
		r = -errno;
		errf(err, errsz, "fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		close(rep[0]);
		close(rep[1]);
		return r;
	}
	if (s->child == 0)
		child_run(s, sv[1], rep[1]);
	close(sv[1]);
	close(rep[1]);
	for (int i = 0; i < s->nkeep; i++) /* the child's now */
		close(s->keep_fds[i]);
	s->nkeep = 0;
	s->console_fd = sv[0];
	nb_fd_nonblock(s->console_fd);
	for (;;) {
		ssize_t n = read(rep[0], msg + got, sizeof(msg) - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (got == sizeof(msg) - 1)
			break;
	}
	close(rep[0]);
	msg[got] = '\0';
	if (got) {
		char kind[32];
		const char *text;
		int e;
		int status;

		while (waitpid(s->child, &status, 0) < 0 && errno == EINTR)
			;
		s->child_exited = true;
		parse_report(msg, kind, sizeof(kind), &e, &text);
		write_exit(s, kind, e, text);
		errf(err, errsz, "%s", text);
		return e ? -e : -EIO;
	}
	return 0;
}

/* True when pid is a live (not zombie) nubo-shim. */
static bool is_live_shim(pid_t pid)
{
	char path[64], *stat = NULL, *paren;
	bool r = false;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (nb_read_file(path, 4096, &stat, NULL) < 0)
		return false;
	/* "pid (comm) S ...": comm may hold anything, so the last ')'. */
	paren = strrchr(stat, ')');
	r = paren && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X' &&
	    strstr(stat, " (nubo-shim) ") != NULL;
	free(stat);
	return r;
}

static int already_running(const struct shim *s)
{
	char path[PATH_MAX], *data = NULL;
	uint64_t pid = 0;
	int r = 0;

	if (path_in(s, "shim.pid", path, sizeof(path)) < 0 ||
	    nb_read_file(path, 64, &data, NULL) < 0)
		return 0;
	data[strcspn(data, "\n")] = '\0';
	if (nb_parse_u64(data, &pid) == 0 && pid > 0 && pid < INT_MAX && (pid_t)pid != getpid() &&
	    is_live_shim((pid_t)pid))
		r = (int)pid;
	free(data);
	return r;
}

/* Everything up to the point where the caller may be told "ready". */
static int setup(struct shim *s, char *err, size_t errsz)
{
	char path[PATH_MAX];
	sigset_t mask;
	int fd, r;

	if (chdir("/") < 0) {
		errf(err, errsz, "chdir /: %s", strerror(errno));
		return -EIO;
	}
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd < 0 || dup2(fd, 0) < 0 || dup2(fd, 1) < 0) {
		errf(err, errsz, "/dev/null: %s", strerror(errno));
		return -EIO;
	}
	if (fd > 2)
		close(fd);
	r = path_in(s, "shim.log", path, sizeof(path));
	fd = r < 0 ? -1 : open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0 || dup2(fd, 2) < 0) {
		errf(err, errsz, "%s: %s", path, strerror(errno));
		return -EIO;
	}
	if (fd > 2)
		close(fd);

	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGQUIT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	s->sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (s->sig_fd < 0) {
		errf(err, errsz, "signalfd: %s", strerror(errno));
		return -errno;
	}
	r = log_open(s, false);
	if (r < 0) {
		errf(err, errsz, "%s/console.log: %s", s->dir, strerror(-r));
		return r;
	}
	if (path_in(s, "exit", path, sizeof(path)) == 0)
		unlink(path);
	r = listen_console(s, err, errsz);
	if (r < 0)
		return r;
	r = write_pid(s, "shim.pid", getpid());
	if (r < 0) {
		errf(err, errsz, "%s/shim.pid: %s", s->dir, strerror(-r));
		return r;
	}
	r = start_child(s, err, errsz);
	if (r < 0)
		return r;
	r = write_pid(s, "child.pid", s->child);
	if (r < 0) {
		errf(err, errsz, "%s/child.pid: %s", s->dir, strerror(-r));
		kill(s->child, SIGKILL);
		return r;
	}
	return 0;
}

static void unlink_socket(struct shim *s)
{
	char path[PATH_MAX];

	if (s->listen_fd >= 0 && path_in(s, "console.sock", path, sizeof(path)) == 0)
		unlink(path);
}

/* The detached shim: reports readiness on fd ready, then serves. */
static int run(struct shim *s, int ready)
{
	char err[1024] = "";
	int r;

	nb_log_init("nubo-shim", NB_LOG_INFO);
	nb_buf_init(&s->to_child, MAX_TO_CHILD);
	r = setup(s, err, sizeof(err));
	if (r < 0) {
		nb_error("setup failed: %s", err);
		/* Clean up first: the caller looks once it has the answer. */
		if (s->child > 0 && !s->child_exited) {
			int status;
			while (waitpid(s->child, &status, 0) < 0 && errno == EINTR)
				;
			write_exit(s, "setup-failed", -r, err);
		}
		unlink_socket(s);
		nb_write_all(ready, "ERR ", 4);
		nb_write_all(ready, err, strlen(err));
		close(ready);
		return 1;
	}
	nb_info("started pid %d: %s", (int)s->child, s->argv[0]);
	nb_write_all(ready, "OK", 2);
	close(ready);

	serve(s);
	drain(s);
	if (WIFSIGNALED(s->status)) {
		nb_info("pid %d killed by signal %d", (int)s->child, WTERMSIG(s->status));
		write_exit(s, "signal", WTERMSIG(s->status), NULL);
	} else {
		nb_info("pid %d exited with %d", (int)s->child, WEXITSTATUS(s->status));
		write_exit(s, "exited", WEXITSTATUS(s->status), NULL);
	}
	unlink_socket(s);
	while (s->nclients)
		client_drop(s, s->nclients - 1, NULL);
	nb_buf_free(&s->to_child);
	if (s->log_fd >= 0)
		close(s->log_fd);
	return 0;
}

static int parse_args(struct shim *s, int argc, char **argv)
{
	const char *dir = NULL;
	int i;

	s->log_max = DEFAULT_LOG_MAX;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "nubo-shim: %s needs a value\n", a);
			return -EINVAL;
		}
		if (!strcmp(a, "--dir")) {
			dir = argv[++i];
		} else if (!strcmp(a, "--log-max")) {
			if (nb_parse_size(argv[++i], &s->log_max) < 0 || s->log_max < MIN_LOG_MAX ||
			    s->log_max > MAX_LOG_MAX) {
				fprintf(stderr,
				        "nubo-shim: --log-max: %s is not a size from %u to 1G\n",
				        argv[i], MIN_LOG_MAX);
				return -EINVAL;
			}
		} else if (!strcmp(a, "--keep-fd")) {
			uint64_t fd;
			if (s->nkeep == MAX_KEEP_FDS || nb_parse_u64(argv[++i], &fd) < 0 || fd < 3 ||
			    fd > 65535 || fcntl((int)fd, F_GETFD) < 0) {
				fprintf(stderr, "nubo-shim: --keep-fd %s: not an open descriptor (at most %d)\n",
				        argv[i], MAX_KEEP_FDS);
				return -EINVAL;
			}
			s->keep_fds[s->nkeep++] = (int)fd;
		} else if (!strcmp(a, "--cgroup")) {
			if (s->ncgroups == MAX_CGROUPS) {
				fprintf(stderr, "nubo-shim: at most %d --cgroup\n", MAX_CGROUPS);
				return -EINVAL;
			}
			s->cgroups[s->ncgroups++] = argv[++i];
		} else {
			fprintf(stderr, "nubo-shim: unknown option %s\n", a);
			return -EINVAL;
		}
	}
	if (!dir || !*dir) {
		fprintf(stderr, "nubo-shim: --dir is required\n");
		return -EINVAL;
	}
	if (i >= argc || strcmp(argv[i - 1], "--") != 0) {
		fprintf(stderr, "nubo-shim: no program after --\n");
		return -EINVAL;
	}
	s->argv = argv + i;
	if (nb_mkdir_p(dir, 0700) < 0 || !realpath(dir, s->dir)) {
		fprintf(stderr, "nubo-shim: %s: %s\n", dir, strerror(errno));
		return -ENOENT;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct shim s;
	char msg[1100];
	size_t got = 0;
	int pipefd[2], status, other;
	pid_t pid;

	s.listen_fd = s.console_fd = s.sig_fd = s.log_fd = -1;
	if (parse_args(&s, argc, argv) < 0) {
		usage();
		return 2;
	}
	other = already_running(&s);
	if (other) {
		fprintf(stderr, "nubo-shim: a shim (pid %d) already runs in %s\n", other, s.dir);
		return 1;
	}
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		fprintf(stderr, "nubo-shim: pipe: %s\n", strerror(errno));
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "nubo-shim: fork: %s\n", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		/* Own session, then a second fork so the shim is no session
		 * leader and its caller's death cannot reach it. */
		close(pipefd[0]);
		if (setsid() < 0)
			_exit(1);
		pid = fork();
		if (pid < 0)
			_exit(1);
		if (pid > 0)
			_exit(0);
		/* Descriptors the caller leaked are not ours to keep; the
		 * report pipe and the --keep-fd ones are. */
		{
			int keep[MAX_KEEP_FDS + 1], n = 0, from = 3;
			keep[n++] = pipefd[1];
			for (int i = 0; i < s.nkeep; i++)
				keep[n++] = s.keep_fds[i];
			for (int i = 1; i < n; i++) /* sorted */
				for (int k = i; k > 0 && keep[k - 1] > keep[k]; k--) {
					int t = keep[k];
					keep[k] = keep[k - 1];
					keep[k - 1] = t;
				}
			for (int i = 0; i < n; i++) {
				if (keep[i] > from)
					close_range((unsigned)from, (unsigned)keep[i] - 1, 0);
				if (keep[i] + 1 > from)
					from = keep[i] + 1;
			}
			close_range((unsigned)from, ~0u, 0);
		}
		exit(run(&s, pipefd[1])); /* exit, not _exit: leak checkers run */
	}
	close(pipefd[1]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	for (int64_t deadline = nb_now_ms() + SETUP_TIMEOUT_MS;;) {
		struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
		int64_t left = deadline - nb_now_ms();
		ssize_t n;
		if (left <= 0) {
			fprintf(stderr,
			        "nubo-shim: no word from the shim after %d s (see %s/shim.log)\n",
			        SETUP_TIMEOUT_MS / 1000, s.dir);
			return 1;
		}
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		n = read(pipefd[0], msg + got, sizeof(msg) - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (got == sizeof(msg) - 1)
			break;
	}
	msg[got] = '\0';
	if (!strcmp(msg, "OK"))
		return 0;
	if (nb_str_has_prefix(msg, "ERR "))
		fprintf(stderr, "nubo-shim: %s\n", msg + 4);
	else
		fprintf(stderr, "nubo-shim: the shim died during setup (see %s/shim.log)\n", s.dir);
	return 1;
}
