/* Per-VM cgroups: the pure settings, then the real cgroupfs of this machine
 * (root needed): files hold the values, processes join, limits bite. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/cgroup/cgroup.h"
#include "common/util.h"

#define MIB (1ull << 20)

static const struct nb_cg_setting *find(const struct nb_cg_setting *s, int n, const char *file)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(s[i].file, file))
			return &s[i];
	return NULL;
}

static void test_settings_v1(void **state)
{
	struct nb_cg_setting s[NB_CG_MAX_SETTINGS];
	const struct nb_cg_setting *e;
	int n;

	(void)state;
	n = nb_cgroup_settings(1, 2, 256, s);
	assert_int_equal(n, 4);
	/* The period is written before the quota. */
	assert_string_equal(s[0].file, "cpu.cfs_period_us");
	assert_string_equal(s[0].controller, "cpu");
	assert_string_equal(s[0].value, "100000");
	e = find(s, n, "cpu.cfs_quota_us");
	assert_non_null(e);
	assert_string_equal(e->controller, "cpu");
	assert_string_equal(e->value, "200000");
	e = find(s, n, "memory.limit_in_bytes");
	assert_non_null(e);
	assert_string_equal(e->controller, "memory");
	assert_string_equal(e->value, "402653184"); /* (256 + 128) MiB */
	e = find(s, n, "pids.max");
	assert_non_null(e);
	assert_string_equal(e->controller, "pids");
	assert_string_equal(e->value, "1024");
}

static void test_settings_v2(void **state)
{
	struct nb_cg_setting s[NB_CG_MAX_SETTINGS];
	const struct nb_cg_setting *e;
	int n;

	(void)state;
	n = nb_cgroup_settings(2, 4, 1024, s);
	assert_int_equal(n, 3);
	for (int i = 0; i < n; i++)
		assert_string_equal(s[i].controller, "");
	e = find(s, n, "cpu.max");
	assert_non_null(e);
	assert_string_equal(e->value, "400000 100000");
	e = find(s, n, "memory.max");
	assert_non_null(e);
	assert_string_equal(e->value, "1207959552"); /* (1024 + 128) MiB */
	e = find(s, n, "pids.max");
	assert_non_null(e);
	assert_string_equal(e->value, "1024");
}

static void test_limit_settings(void **state)
{
	struct nb_cg_setting s[NB_CG_MAX_SETTINGS];
	const struct nb_cg_setting *e;
	int n;

	(void)state;
	/* 0.2 CPU, no memory limit, no pids limit. */
	n = nb_cgroup_limit_settings(1, 20000, 0, 0, s);
	assert_int_equal(n, 3);
	assert_string_equal(find(s, n, "cpu.cfs_quota_us")->value, "20000");
	assert_null(find(s, n, "memory.limit_in_bytes"));
	assert_string_equal(find(s, n, "pids.max")->value, "max");
	n = nb_cgroup_limit_settings(1, 0, 32 * MIB, 10, s);
	assert_int_equal(n, 4);
	assert_string_equal(find(s, n, "cpu.cfs_quota_us")->value, "-1");
	assert_string_equal(find(s, n, "memory.limit_in_bytes")->value, "33554432");
	assert_string_equal(find(s, n, "pids.max")->value, "10");
	n = nb_cgroup_limit_settings(2, 0, 0, 0, s);
	assert_int_equal(n, 3);
	e = find(s, n, "cpu.max");
	assert_string_equal(e->value, "max 100000");
	assert_string_equal(find(s, n, "memory.max")->value, "max");
	assert_string_equal(find(s, n, "pids.max")->value, "max");
}

static void test_settings_invalid(void **state)
{
	struct nb_cg_setting s[NB_CG_MAX_SETTINGS];

	(void)state;
	assert_int_equal(nb_cgroup_settings(1, 0, 256, s), -EINVAL);
	assert_int_equal(nb_cgroup_settings(1, -3, 256, s), -EINVAL);
	assert_int_equal(nb_cgroup_settings(1, 5000, 256, s), -EINVAL);
	assert_int_equal(nb_cgroup_settings(1, 1, 0, s), -EINVAL);
	assert_int_equal(nb_cgroup_settings(1, 1, UINT64_MAX, s), -EINVAL);
	assert_int_equal(nb_cgroup_settings(3, 1, 256, s), -EINVAL);
	assert_int_equal(nb_cgroup_settings(0, 1, 256, s), -EINVAL);
	/* Below the kernel's 1 ms minimum quota. */
	assert_int_equal(nb_cgroup_limit_settings(1, 500, 0, 0, s), -EINVAL);
	assert_int_equal(nb_cgroup_limit_settings(2, 0, 4096, 0, s), -EINVAL);
}

static void test_bad_names(void **state)
{
	char dirs[NB_CG_MAX_DIRS][512];
	char longname[80];

	(void)state;
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(nb_cgroup_create(NULL, "a/b", 1, 64, dirs), -EINVAL);
	assert_int_equal(nb_cgroup_create(NULL, "..", 1, 64, dirs), -EINVAL);
	assert_int_equal(nb_cgroup_create(NULL, "", 1, 64, dirs), -EINVAL);
	assert_int_equal(nb_cgroup_create(NULL, longname, 1, 64, dirs), -EINVAL);
	assert_int_equal(nb_cgroup_create(NULL, "ok name", 1, 64, dirs), -EINVAL);
	assert_int_equal(nb_cgroup_remove(NULL, "../x"), -EINVAL);
}

static void touch(const char *dir, const char *file)
{
	char path[700];

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	assert_int_equal(nb_write_file(path, "", 0, 0644), 0);
}

static void test_version_fake_roots(void **state)
{
	char root[] = "/tmp/nb-cgroup-XXXXXX";
	char sub[600];

	(void)state;
	assert_non_null(mkdtemp(root));
	assert_int_equal(nb_cgroup_version(root), -ENOENT);
	touch(root, "cgroup.controllers");
	assert_int_equal(nb_cgroup_version(root), 2);
	snprintf(sub, sizeof(sub), "%s/cgroup.controllers", root);
	assert_int_equal(unlink(sub), 0);
	snprintf(sub, sizeof(sub), "%s/memory", root);
	assert_int_equal(mkdir(sub, 0755), 0);
	touch(sub, "cgroup.procs");
	assert_int_equal(nb_cgroup_version(root), 1);
	assert_int_equal(nb_rm_rf(root), 0);
}

/* ---- against the real cgroupfs ---- */

struct waiter {
	pid_t pid;
	int go; /* write end: one byte releases the child */
};

/* Forks a child that blocks until released, then runs fn. */
static struct waiter fork_waiter(void (*fn)(void))
{
	struct waiter w = {.pid = -1, .go = -1};
	int p[2];

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	w.pid = fork();
	assert_true(w.pid >= 0);
	if (w.pid == 0) {
		char c;
		close(p[1]);
		while (read(p[0], &c, 1) < 0 && errno == EINTR)
			;
		fn();
		_exit(0);
	}
	close(p[0]);
	w.go = p[1];
	return w;
}

static void release(struct waiter *w)
{
	assert_int_equal(nb_write_all(w->go, "g", 1), 0);
	close(w->go);
	w->go = -1;
}

static int reap(pid_t pid)
{
	int status = 0;

	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return status;
}

static void stop(struct waiter *w)
{
	if (w->go >= 0)
		close(w->go);
	kill(w->pid, SIGKILL);
	reap(w->pid);
}

static void idle(void)
{
	for (;;)
		pause();
}

static void spin(void)
{
	volatile uint64_t x = 0;

	for (;;)
		x++;
}

/* Allocates and touches 256 MiB, page by page. */
static void hog(void)
{
	size_t len = 256 * MIB;
	volatile char *p =
	    mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		_exit(2);
	for (size_t i = 0; i < len; i += 4096)
		p[i] = 1;
	_exit(0);
}

static int real_setup(void **state)
{
	(void)state;
	if (geteuid() != 0 || nb_cgroup_version(NULL) < 0) {
		fprintf(stderr, "no writable cgroupfs: skipping the real cgroup tests\n");
		return -1;
	}
	return 0;
}

static void test_name(char *out, size_t outsz)
{
	char hex[9];

	assert_int_equal(nb_random_hex(hex, 8), 0);
	snprintf(out, outsz, "test-%s", hex);
}

static char *read_text(const char *dir, const char *file)
{
	char path[700];
	char *data = NULL;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	assert_int_equal(nb_read_file(path, 1 << 20, &data, NULL), 0);
	data[strcspn(data, "\n")] = '\0';
	return data;
}

/* Calls fn on each line of dir/file (read whole, NUL-split). */
static void each_line(const char *dir, const char *file, void (*fn)(const char *, void *),
                      void *ctx)
{
	char path[700];
	char *data = NULL, *line;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	assert_int_equal(nb_read_file(path, 1 << 20, &data, NULL), 0);
	line = data;
	while (*line) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		fn(line, ctx);
		if (!nl)
			break;
		line = nl + 1;
	}
	free(data);
}

struct keyed_ctx {
	const char *key;
	int64_t value;
};

static void keyed_line(const char *line, void *p)
{
	struct keyed_ctx *k = p;
	size_t kl = strlen(k->key);
	uint64_t u;

	if (!strncmp(line, k->key, kl) && line[kl] == ' ' && nb_parse_u64(line + kl + 1, &u) == 0)
		k->value = (int64_t)u;
}

/* The value of "key N" in a flat-keyed cgroup file, or -1. */
static int64_t keyed(const char *dir, const char *file, const char *key)
{
	struct keyed_ctx k = {.key = key, .value = -1};

	each_line(dir, file, keyed_line, &k);
	return k.value;
}

struct pid_ctx {
	pid_t pid;
	bool found;
};

static void pid_line(const char *line, void *p)
{
	struct pid_ctx *c = p;
	uint64_t u;

	if (nb_parse_u64(line, &u) == 0 && (pid_t)u == c->pid)
		c->found = true;
}

static bool procs_has(const char *dir, pid_t pid)
{
	struct pid_ctx c = {.pid = pid, .found = false};

	each_line(dir, "cgroup.procs", pid_line, &c);
	return c.found;
}

/* The directory of dirs[] that belongs to controller (v1), or dirs[0]. */
static const char *dir_for(char dirs[][512], int ndirs, const char *controller)
{
	for (int i = 0; i < ndirs; i++) {
		char needle[64];
		snprintf(needle, sizeof(needle), "/%s/nubo/", controller);
		if (strstr(dirs[i], needle))
			return dirs[i];
	}
	return dirs[0];
}

static void test_real_create_attach_remove(void **state)
{
	struct nb_cg_setting set[NB_CG_MAX_SETTINGS];
	char dirs[NB_CG_MAX_DIRS][512];
	char name[32], procpath[64];
	char *cg = NULL;
	int version, n, nset;
	struct waiter w;

	(void)state;
	test_name(name, sizeof(name));
	version = nb_cgroup_version(NULL);
	n = nb_cgroup_create(NULL, name, 2, 256, dirs);
	assert_int_equal(n, version == 1 ? 3 : 1);
	for (int i = 0; i < n; i++) {
		assert_true(nb_path_exists(dirs[i]));
		assert_non_null(strstr(dirs[i], "/nubo/"));
	}
	nset = nb_cgroup_settings(version, 2, 256, set);
	assert_true(nset > 0);
	for (int i = 0; i < nset; i++) {
		char *v = read_text(dir_for(dirs, n, set[i].controller), set[i].file);
		assert_string_equal(v, set[i].value);
		free(v);
	}
	/* Creating again (a restarted agent) keeps the group and its values. */
	assert_int_equal(nb_cgroup_create(NULL, name, 2, 256, dirs), n);

	w = fork_waiter(idle);
	assert_int_equal(nb_cgroup_attach(dirs, n, w.pid), 0);
	for (int i = 0; i < n; i++)
		assert_true(procs_has(dirs[i], w.pid));
	snprintf(procpath, sizeof(procpath), "/proc/%d/cgroup", (int)w.pid);
	assert_int_equal(nb_read_file(procpath, 1 << 16, &cg, NULL), 0);
	assert_non_null(strstr(cg, name));
	free(cg);

	/* Live process: remove refuses and leaves the group. */
	assert_int_equal(nb_cgroup_remove(NULL, name), -EBUSY);
	assert_true(nb_path_exists(dirs[0]));
	/* Processes gone: remove succeeds, twice. */
	stop(&w);
	assert_int_equal(nb_cgroup_remove(NULL, name), 0);
	for (int i = 0; i < n; i++)
		assert_false(nb_path_exists(dirs[i]));
	assert_int_equal(nb_cgroup_remove(NULL, name), 0);
}

static void test_real_memory_limit_kills(void **state)
{
	char dirs[NB_CG_MAX_DIRS][512];
	char name[32];
	const char *mem;
	struct waiter w;
	int n, status, version = nb_cgroup_version(NULL);

	(void)state;
	test_name(name, sizeof(name));
	n = nb_cgroup_create_limits(NULL, name, 0, 32 * MIB, 0, dirs);
	assert_true(n > 0);
	mem = dir_for(dirs, n, "memory");
	w = fork_waiter(hog);
	assert_int_equal(nb_cgroup_attach(dirs, n, w.pid), 0);
	release(&w);
	status = reap(w.pid);
	/* The child touches 256 MiB in a 32 MiB group: the OOM killer ends it. */
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
	if (version == 1) {
		assert_true(keyed(mem, "memory.oom_control", "oom_kill") >= 1);
		char *fc = read_text(mem, "memory.failcnt");
		uint64_t failcnt = 0;
		assert_int_equal(nb_parse_u64(fc, &failcnt), 0);
		assert_true(failcnt > 0);
		free(fc);
	} else {
		assert_true(keyed(mem, "memory.events", "oom_kill") >= 1);
	}
	assert_int_equal(nb_cgroup_remove(NULL, name), 0);
}

/* CPU time of pid in ns (first field of /proc/pid/schedstat). */
static uint64_t cpu_ns(pid_t pid)
{
	char path[64], *data = NULL;
	uint64_t v = 0;

	snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
	assert_int_equal(nb_read_file(path, 4096, &data, NULL), 0);
	data[strcspn(data, " ")] = '\0';
	assert_int_equal(nb_parse_u64(data, &v), 0);
	free(data);
	return v;
}

static double cpu_share(pid_t pid, int window_ms)
{
	struct timespec ts = {.tv_sec = window_ms / 1000, .tv_nsec = (window_ms % 1000) * 1000000L};
	int64_t t0, t1;
	uint64_t c0, c1;

	t0 = nb_now_ms();
	c0 = cpu_ns(pid);
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	c1 = cpu_ns(pid);
	t1 = nb_now_ms();
	return (double)(c1 - c0) / 1e6 / (double)(t1 - t0);
}

static void test_real_cpu_quota_throttles(void **state)
{
	char dirs[NB_CG_MAX_DIRS][512];
	char name[32];
	const char *cpu;
	struct waiter w;
	double share;
	int n;

	(void)state;
	test_name(name, sizeof(name));
	/* 0.02 CPU: 2 ms per 100 ms period. Small enough that the spinner
	 * outruns it even when a busy machine gives it only a slice of a core
	 * (at 0.2 CPU, a load average of 10 on 2 cores never reached it). */
	n = nb_cgroup_create_limits(NULL, name, 2000, 0, 0, dirs);
	assert_true(n > 0);
	cpu = dir_for(dirs, n, "cpu");
	w = fork_waiter(spin);
	assert_int_equal(nb_cgroup_attach(dirs, n, w.pid), 0);
	release(&w);
	share = cpu_share(w.pid, 1500);
	fprintf(stderr, "spinner in a 0.02-CPU group got %.3f CPU\n", share);
	assert_true(share <= 0.05);
	assert_true(share >= 0.002); /* it did run */
	assert_true(keyed(cpu, "cpu.stat", "nr_throttled") >= 5);
	stop(&w);
	assert_int_equal(nb_cgroup_remove(NULL, name), 0);
}

int main(void)
{
	const struct CMUnitTest pure[] = {
	    cmocka_unit_test(test_settings_v1),    cmocka_unit_test(test_settings_v2),
	    cmocka_unit_test(test_limit_settings), cmocka_unit_test(test_settings_invalid),
	    cmocka_unit_test(test_bad_names),      cmocka_unit_test(test_version_fake_roots),
	};
	const struct CMUnitTest real[] = {
	    cmocka_unit_test(test_real_create_attach_remove),
	    cmocka_unit_test(test_real_memory_limit_kills),
	    cmocka_unit_test(test_real_cpu_quota_throttles),
	};
	int r = cmocka_run_group_tests_name("cgroup pure", pure, NULL, NULL);

	return r + cmocka_run_group_tests_name("cgroup real", real, real_setup, NULL);
}
