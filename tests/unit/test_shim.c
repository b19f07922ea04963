/* nubo-shim as a user sees it: real shim processes around /bin/sh programs,
 * a console socket to talk through, the files it leaves in its directory.
 * NB_SHIM (env) names the binary. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/util.h"

#define TIMEOUT_MS 15000

struct t {
	char dir[64];
};

static const char *shim_bin(void)
{
	const char *p = getenv("NB_SHIM");

	return p && *p ? p : "nubo-shim";
}

static int setup(void **state)
{
	struct t *t = calloc(1, sizeof(*t));

	if (!t)
		return -1;
	nb_strlcpy(t->dir, "/tmp/nb-shim-XXXXXX", sizeof(t->dir));
	if (!mkdtemp(t->dir)) {
		free(t);
		return -1;
	}
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;
	char path[128], *log = NULL;
	int r = 0;

	/* A sanitizer build of the shim reports into its log. */
	snprintf(path, sizeof(path), "%s/shim.log", t->dir);
	if (nb_read_file(path, 1 << 20, &log, NULL) == 0 && strstr(log, "Sanitizer")) {
		fprintf(stderr, "shim.log:\n%s\n", log);
		r = -1;
	}
	free(log);

	nb_rm_rf(t->dir);
	free(t);
	return r;
}

static void path_of(const struct t *t, const char *name, char *out, size_t outsz)
{
	snprintf(out, outsz, "%s/%s", t->dir, name);
}

/* Runs nubo-shim with opts, "--" and prog; returns its exit status. */
static int run_shim(const struct t *t, const char *const *opts, const char *const *prog,
                    struct nb_buf *out)
{
	const char *argv[32];
	int n = 0;

	argv[n++] = shim_bin();
	argv[n++] = "--dir";
	argv[n++] = t->dir;
	for (; opts && *opts; opts++)
		argv[n++] = *opts;
	argv[n++] = "--";
	for (; *prog; prog++)
		argv[n++] = *prog;
	argv[n] = NULL;
	assert_true(n < (int)NB_ARRAY_SIZE(argv));
	return nb_run(argv, TIMEOUT_MS, out);
}

static char *slurp(const struct t *t, const char *name)
{
	char path[128], *data = NULL;

	path_of(t, name, path, sizeof(path));
	if (nb_read_file(path, 64 << 20, &data, NULL) < 0)
		return NULL;
	return data;
}

static pid_t read_pid(const struct t *t, const char *name)
{
	char *s = slurp(t, name);
	uint64_t v = 0;

	assert_non_null(s);
	s[strcspn(s, "\n")] = '\0';
	assert_int_equal(nb_parse_u64(s, &v), 0);
	free(s);
	assert_true(v > 1);
	return (pid_t)v;
}

/* Waits until pid (not our child) has exited. */
static bool wait_gone(pid_t pid, int timeout_ms)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	struct pollfd p;
	int r;

	if (fd < 0)
		return errno == ESRCH;
	p = (struct pollfd){.fd = fd, .events = POLLIN};
	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	close(fd);
	return r == 1;
}

static int console_connect(const struct t *t)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int64_t deadline = nb_now_ms() + TIMEOUT_MS;
	int fd;

	path_of(t, "console.sock", sa.sun_path, sizeof(sa.sun_path));
	for (;;) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(fd >= 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		close(fd);
		assert_true(nb_now_ms() < deadline);
		poll(NULL, 0, 10);
	}
}

/* Reads from fd into b until needle shows up (true), EOF or the timeout. */
static bool read_until(int fd, struct nb_buf *b, const char *needle)
{
	int64_t deadline = nb_now_ms() + TIMEOUT_MS;

	while (!needle || !strstr(b->data ? b->data : "", needle)) {
		char chunk[4096];
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int64_t left = deadline - nb_now_ms();
		ssize_t n;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return false;
		n = read(fd, chunk, sizeof(chunk));
		if (n <= 0)
			return false;
		assert_int_equal(nb_buf_append(b, chunk, (size_t)n), 0);
	}
	return true;
}

static void send_line(int fd, const char *s)
{
	assert_int_equal(nb_write_all(fd, s, strlen(s)), 0);
}

static void assert_exit_starts(const struct t *t, const char *prefix)
{
	char *e = slurp(t, "exit");

	assert_non_null(e);
	if (!nb_str_has_prefix(e, prefix))
		fail_msg("exit file says \"%s\", wanted \"%s...\"", e, prefix);
	/* "KIND N TIME": the time is ISO 8601 UTC. */
	assert_non_null(strchr(e, 'T'));
	assert_non_null(strchr(e, 'Z'));
	free(e);
}

static const char *const talk_prog[] = {"/bin/sh", "-c",
                                        "read go; echo hello; read x; echo got:$x; exit 3", NULL};

static void test_console_roundtrip(void **state)
{
	struct t *t = *state;
	struct nb_buf a, b;
	struct stat st;
	char sock[128], *log;
	pid_t shim, child;
	int fa, fb;

	assert_int_equal(run_shim(t, NULL, talk_prog, NULL), 0);
	/* Set up before the caller got its answer. */
	path_of(t, "console.sock", sock, sizeof(sock));
	assert_int_equal(stat(sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	shim = read_pid(t, "shim.pid");
	child = read_pid(t, "child.pid");
	assert_int_equal(kill(shim, 0), 0);
	assert_int_equal(kill(child, 0), 0);

	nb_buf_init(&a, 1 << 20);
	nb_buf_init(&b, 1 << 20);
	fa = console_connect(t);
	fb = console_connect(t);
	send_line(fa, "go\n");
	/* Output reaches every client, and the log. */
	assert_true(read_until(fa, &a, "hello\n"));
	assert_true(read_until(fb, &b, "hello\n"));
	log = slurp(t, "console.log");
	assert_non_null(log);
	assert_string_equal(log, "hello\n");
	free(log);
	/* Input from any client reaches the child. */
	send_line(fb, "world\n");
	assert_true(read_until(fa, &a, "got:world\n"));
	assert_true(read_until(fb, &b, "got:world\n"));
	/* The child exits: the shim follows, after writing exit. */
	assert_true(wait_gone(shim, TIMEOUT_MS));
	assert_false(read_until(fa, &a, NULL)); /* EOF */
	assert_string_equal(a.data, "hello\ngot:world\n");
	assert_exit_starts(t, "exited 3 ");
	assert_false(nb_path_exists(sock));
	log = slurp(t, "console.log");
	assert_string_equal(log, "hello\ngot:world\n");
	free(log);
	close(fa);
	close(fb);
	nb_buf_free(&a);
	nb_buf_free(&b);
}

static void test_client_cap(void **state)
{
	struct t *t = *state;
	const char *const prog[] = {"/bin/sh", "-c", "read x; echo got:$x", NULL};
	struct nb_buf b;
	int fds[17];
	pid_t shim;

	assert_int_equal(run_shim(t, NULL, prog, NULL), 0);
	shim = read_pid(t, "shim.pid");
	for (int i = 0; i < 17; i++)
		fds[i] = console_connect(t);
	/* The 17th is refused: closed at once. */
	nb_buf_init(&b, 1 << 16);
	assert_false(read_until(fds[16], &b, "got:"));
	assert_int_equal(b.len, 0);
	/* The 16 others all take part. */
	send_line(fds[0], "hi\n");
	for (int i = 0; i < 16; i++) {
		nb_buf_reset(&b);
		assert_true(read_until(fds[i], &b, "got:hi\n"));
	}
	assert_true(wait_gone(shim, TIMEOUT_MS));
	assert_exit_starts(t, "exited 0 ");
	for (int i = 0; i < 17; i++)
		close(fds[i]);
	nb_buf_free(&b);
}

static void test_log_rotation(void **state)
{
	struct t *t = *state;
	const char *const opts[] = {"--log-max", "4096", NULL};
	const char *const prog[] = {
	    "/bin/sh", "-c",
	    "i=0; while [ $i -lt 1000 ]; do echo line-$i-abcdefghijklmnopqrstuvwxyz; "
	    "i=$((i+1)); done",
	    NULL};
	struct nb_buf want;
	char *cur, *old, *pidtext;
	size_t lc, lo;
	pid_t shim;

	assert_int_equal(run_shim(t, opts, prog, NULL), 0);
	shim = read_pid(t, "shim.pid");
	assert_true(wait_gone(shim, TIMEOUT_MS));
	assert_exit_starts(t, "exited 0 ");

	nb_buf_init(&want, 1 << 20);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(nb_buf_printf(&want, "line-%d-abcdefghijklmnopqrstuvwxyz\n", i),
		                 0);
	cur = slurp(t, "console.log");
	old = slurp(t, "console.log.1");
	assert_non_null(cur);
	assert_non_null(old);
	lc = strlen(cur);
	lo = strlen(old);
	/* Rotated exactly at the cap, so the two files never pass twice it. */
	assert_int_equal(lo, 4096);
	assert_int_equal(lc, want.len % 4096);
	/* Together they are the end of the output, in order. */
	assert_true(want.len > lo + lc);
	assert_memory_equal(want.data + want.len - lc - lo, old, lo);
	assert_memory_equal(want.data + want.len - lc, cur, lc);
	pidtext = slurp(t, "console.log.2");
	assert_null(pidtext);
	free(cur);
	free(old);
	nb_buf_free(&want);
}

static void test_outlives_caller(void **state)
{
	struct t *t = *state;
	const char *const prog[] = {"/bin/sh", "-c", "read x; echo got:$x; exit 0", NULL};
	struct nb_buf out;
	char stat_path[64], *st;
	int p[2], code = -1, fd;
	pid_t caller, shim;

	/* A caller in its own process group runs the shim, then is killed with
	 * its whole group (as a service manager stopping the agent would). */
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	caller = fork();
	assert_true(caller >= 0);
	if (caller == 0) {
		setpgid(0, 0);
		int r = run_shim(t, NULL, prog, NULL);
		if (write(p[1], &r, sizeof(r)) != sizeof(r))
			_exit(1);
		for (;;)
			pause();
	}
	close(p[1]);
	assert_int_equal(read(p[0], &code, sizeof(code)), (ssize_t)sizeof(code));
	close(p[0]);
	assert_int_equal(code, 0);
	assert_int_equal(kill(-caller, SIGKILL), 0);
	assert_int_equal(waitpid(caller, NULL, 0), caller);

	shim = read_pid(t, "shim.pid");
	assert_int_equal(kill(shim, 0), 0);
	/* Its own session, not a child of the caller. */
	snprintf(stat_path, sizeof(stat_path), "/proc/%d/stat", (int)shim);
	assert_int_equal(nb_read_file(stat_path, 4096, &st, NULL), 0);
	{
		int ppid = 0, pgrp = 0, sid = 0;
		char *close_paren = strrchr(st, ')');
		assert_non_null(close_paren);
		assert_int_equal(sscanf(close_paren + 2, "%*c %d %d %d", &ppid, &pgrp, &sid), 3);
		assert_int_not_equal(ppid, caller);
		assert_int_not_equal(pgrp, caller);
		assert_int_not_equal(sid, getsid(0));
	}
	free(st);

	fd = console_connect(t);
	nb_buf_init(&out, 1 << 20);
	send_line(fd, "still-here\n");
	assert_true(read_until(fd, &out, "got:still-here\n"));
	assert_true(wait_gone(shim, TIMEOUT_MS));
	assert_exit_starts(t, "exited 0 ");
	close(fd);
	nb_buf_free(&out);
}

static void test_child_killed(void **state)
{
	struct t *t = *state;
	const char *const prog[] = {"/bin/sleep", "1000", NULL};
	pid_t shim, child;

	assert_int_equal(run_shim(t, NULL, prog, NULL), 0);
	shim = read_pid(t, "shim.pid");
	child = read_pid(t, "child.pid");
	assert_int_equal(kill(child, SIGKILL), 0);
	assert_true(wait_gone(shim, TIMEOUT_MS));
	assert_exit_starts(t, "signal 9 ");
}

static void test_sigterm_forwarded(void **state)
{
	struct t *t = *state;
	const char *const prog[] = {"/bin/sleep", "1000", NULL};
	pid_t shim, child;

	assert_int_equal(run_shim(t, NULL, prog, NULL), 0);
	shim = read_pid(t, "shim.pid");
	child = read_pid(t, "child.pid");
	assert_int_equal(kill(shim, SIGTERM), 0);
	assert_true(wait_gone(child, TIMEOUT_MS));
	assert_true(wait_gone(shim, TIMEOUT_MS));
	assert_exit_starts(t, "signal 15 ");
}

static void test_bad_program(void **state)
{
	struct t *t = *state;
	const char *const prog[] = {"/nonexistent/nubo-prog", "x", NULL};
	struct nb_buf out;
	char sock[128];

	nb_buf_init(&out, 1 << 16);
	assert_int_equal(run_shim(t, NULL, prog, &out), 1);
	assert_non_null(strstr(out.data, "/nonexistent/nubo-prog"));
	assert_non_null(strstr(out.data, "No such file or directory"));
	assert_exit_starts(t, "exec-failed 2 ");
	path_of(t, "console.sock", sock, sizeof(sock));
	assert_false(nb_path_exists(sock));
	assert_true(wait_gone(read_pid(t, "shim.pid"), TIMEOUT_MS));
	nb_buf_free(&out);
}

static void test_bad_usage(void **state)
{
	struct t *t = *state;
	const char *const no_dir[] = {shim_bin(), "--", "/bin/true", NULL};
	const char *const no_prog[] = {shim_bin(), "--dir", t->dir, NULL};
	const char *const bad_size[] = {shim_bin(), "--dir", t->dir,      "--log-max",
	                                "lots",     "--",    "/bin/true", NULL};
	const char *const unknown[] = {shim_bin(), "--dir", t->dir,      "--frob",
	                               "1",        "--",    "/bin/true", NULL};
	struct nb_buf out;

	nb_buf_init(&out, 1 << 16);
	assert_int_equal(nb_run(no_dir, TIMEOUT_MS, &out), 2);
	assert_non_null(strstr(out.data, "--dir"));
	nb_buf_reset(&out);
	assert_int_equal(nb_run(no_prog, TIMEOUT_MS, &out), 2);
	assert_non_null(strstr(out.data, "program"));
	nb_buf_reset(&out);
	assert_int_equal(nb_run(bad_size, TIMEOUT_MS, &out), 2);
	assert_non_null(strstr(out.data, "lots"));
	nb_buf_reset(&out);
	assert_int_equal(nb_run(unknown, TIMEOUT_MS, &out), 2);
	assert_non_null(strstr(out.data, "--frob"));
	nb_buf_free(&out);
	/* Nothing was started. */
	assert_null(slurp(t, "shim.pid"));
}

static void test_second_shim_refused(void **state)
{
	struct t *t = *state;
	const char *const prog[] = {"/bin/sleep", "1000", NULL};
	struct nb_buf out;
	pid_t shim;

	assert_int_equal(run_shim(t, NULL, prog, NULL), 0);
	shim = read_pid(t, "shim.pid");
	nb_buf_init(&out, 1 << 16);
	assert_int_equal(run_shim(t, NULL, prog, &out), 1);
	assert_non_null(strstr(out.data, "already runs"));
	assert_int_equal(read_pid(t, "shim.pid"), shim);
	assert_int_equal(kill(shim, SIGTERM), 0);
	assert_true(wait_gone(shim, TIMEOUT_MS));
	nb_buf_free(&out);
}

/* A pids cgroup to join: v1 pids hierarchy, or the v2 root. */
static bool cgroup_base(char *out, size_t outsz)
{
	if (nb_path_exists("/sys/fs/cgroup/cgroup.controllers"))
		nb_strlcpy(out, "/sys/fs/cgroup/nubo", outsz);
	else if (nb_path_exists("/sys/fs/cgroup/pids/cgroup.procs"))
		nb_strlcpy(out, "/sys/fs/cgroup/pids/nubo", outsz);
	else
		return false;
	return geteuid() == 0;
}

static void test_cgroup_join(void **state)
{
	struct t *t = *state;
	const char *const prog[] = {"/bin/sleep", "1000", NULL};
	char base[64], cg[128], hex[9], path[128], *procs, *self;
	const char *opts[] = {"--cgroup", cg, NULL};
	const char *const bad[] = {"--cgroup", "/nonexistent/cgroup", NULL};
	struct nb_buf out;
	pid_t shim, child;

	if (!cgroup_base(base, sizeof(base))) {
		fprintf(stderr, "no writable cgroupfs: skipped\n");
		skip();
	}
	assert_int_equal(nb_random_hex(hex, 8), 0);
	snprintf(cg, sizeof(cg), "%s/test-shim-%s", base, hex);
	assert_int_equal(nb_mkdir_p(cg, 0755), 0);
	assert_int_equal(run_shim(t, opts, prog, NULL), 0);
	shim = read_pid(t, "shim.pid");
	child = read_pid(t, "child.pid");
	/* The child joined before exec; the shim itself stays out. */
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)child);
	assert_int_equal(nb_read_file(path, 1 << 16, &procs, NULL), 0);
	assert_non_null(strstr(procs, hex));
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)shim);
	assert_int_equal(nb_read_file(path, 1 << 16, &self, NULL), 0);
	assert_null(strstr(self, hex));
	free(procs);
	free(self);
	assert_int_equal(kill(child, SIGKILL), 0);
	assert_true(wait_gone(shim, TIMEOUT_MS));
	assert_int_equal(rmdir(cg), 0);

	/* A group that cannot be joined fails the start, clearly. */
	nb_buf_init(&out, 1 << 16);
	assert_int_equal(run_shim(t, bad, prog, &out), 1);
	assert_non_null(strstr(out.data, "/nonexistent/cgroup"));
	assert_exit_starts(t, "setup-failed 2 ");
	nb_buf_free(&out);
}

static void test_slow_client_dropped(void **state)
{
	struct t *t = *state;
	const char *const prog[] = {
	    "/bin/sh", "-c", "read go; yes xxxxxxxxxxxxxxx | head -c 8000000; echo; echo done",
	    NULL};
	struct nb_buf got;
	char *shimlog;
	pid_t shim;
	int fd;

	assert_int_equal(run_shim(t, NULL, prog, NULL), 0);
	shim = read_pid(t, "shim.pid");
	fd = console_connect(t);
	send_line(fd, "go\n");
	/* The client never reads: the child must still run to its end. */
	assert_true(wait_gone(shim, TIMEOUT_MS));
	assert_exit_starts(t, "exited 0 ");
	nb_buf_init(&got, 16 << 20);
	assert_false(read_until(fd, &got, "done\n"));
	assert_true(got.len < 8000000);
	close(fd);
	shimlog = slurp(t, "shim.log");
	assert_non_null(strstr(shimlog, "too slow"));
	free(shimlog);
	/* The log kept the end of the output. */
	{
		char *cur = slurp(t, "console.log");
		assert_non_null(cur);
		assert_non_null(strstr(cur, "xxxx\n\ndone\n"));
		assert_true(strlen(cur) <= (1u << 20));
		free(cur);
	}
	nb_buf_free(&got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_console_roundtrip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_client_cap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_log_rotation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_outlives_caller, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_child_killed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sigterm_forwarded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_program, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_usage, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_second_shim_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cgroup_join, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_slow_client_dropped, setup, teardown),
	};

	return cmocka_run_group_tests_name("shim", tests, NULL, NULL);
}
