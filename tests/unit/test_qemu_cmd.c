/* The QEMU command line: golden files in tests/data/qemu-cmd/<case>.args
 * (one argument a line) pin the output; NB_REGENERATE=1 rewrites them
 * instead of comparing (review the diff, then commit). Plus the inputs that
 * must be refused, and one run of a generated command line by a real QEMU. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/qmp/qemu_cmd.h"
#include "agent/qmp/qmp_cmd.h"
#include "common/buf.h"
#include "common/util.h"

static const char *data_dir(void)
{
	const char *d = getenv("NB_TEST_DATA");

	return d && *d ? d : NB_TEST_DATA;
}

static bool regenerate(void)
{
	const char *v = getenv("NB_REGENERATE");

	return v && strcmp(v, "1") == 0;
}

static char *join(char **argv)
{
	struct nb_buf b;
	char **a;

	nb_buf_init(&b, 0);
	for (a = argv; *a; a++) {
		assert_int_equal(nb_buf_puts(&b, *a), 0);
		assert_int_equal(nb_buf_puts(&b, "\n"), 0);
	}
	return nb_buf_steal(&b);
}

static void check_golden(const char *name, const struct nb_vm_spec *s)
{
	char path[512], *got, *want = NULL;
	char **argv = NULL;
	size_t len;

	assert_int_equal(nb_qemu_argv(s, &argv), 0);
	assert_non_null(argv);
	got = join(argv);
	nb_argv_free(argv);
	snprintf(path, sizeof(path), "%s/qemu-cmd/%s.args", data_dir(), name);
	if (regenerate()) {
		assert_int_equal(nb_write_file(path, got, strlen(got), 0644), 0);
	} else {
		int r = nb_read_file(path, 1u << 20, &want, &len);

		if (r < 0)
			fail_msg("%s: %s (run with NB_REGENERATE=1 to create it)", path,
			         strerror(-r));
		if (strcmp(got, want) != 0) {
			print_error("%s differs; got:\n%s", path, got);
			fail_msg("golden mismatch (NB_REGENERATE=1 rewrites it once intended)");
		}
	}
	free(got);
	free(want);
}

static struct nb_vm_spec base_spec(void)
{
	return (struct nb_vm_spec){
	    .qemu = "qemu-system-x86_64",
	    .id = "i-0123456789abcdef0",
	    .uuid = "5d4c2a1e-8f3b-4c6d-9e0a-1b2c3d4e5f60",
	    .dir = "/var/lib/nubo/instances/i-0123456789abcdef0",
	    .accel = "tcg",
	    .vcpus = 2,
	    .memory_mb = 512,
	    .disk = "/var/lib/nubo/instances/i-0123456789abcdef0/root.qcow2",
	};
}

static void test_golden_kernel_nic(void **state)
{
	struct nb_vm_spec s = base_spec();

	(void)state;
	s.kernel = "/var/lib/nubo/images/abc.kernel";
	s.initrd = "/var/lib/nubo/images/abc.initrd";
	s.cmdline = "console=ttyS0 quiet root=/dev/vda";
	s.tap = "nb0123456789ab";
	s.mac = "52:54:00:12:34:56";
	check_golden("kernel-nic", &s);
}

static void test_golden_tap_fd(void **state)
{
	struct nb_vm_spec s = base_spec();

	(void)state;
	s.kernel = "/var/lib/nubo/images/abc.kernel";
	s.cmdline = "console=ttyS0";
	s.tap = "nb0123456789ab";
	s.tap_fd = 7;
	s.mac = "52:54:00:12:34:56";
	check_golden("tap-fd", &s);
}

static void test_golden_disk_boot(void **state)
{
	struct nb_vm_spec s = base_spec();

	(void)state;
	s.vcpus = 1;
	s.memory_mb = 256;
	check_golden("disk-boot", &s);
}

static void test_golden_kvm(void **state)
{
	struct nb_vm_spec s = base_spec();

	(void)state;
	s.accel = "kvm";
	s.vcpus = 4;
	s.memory_mb = 4096;
	s.kernel = "/var/lib/nubo/images/abc.kernel";
	s.cmdline = "console=ttyS0";
	s.tap = "nbtap1";
	s.mac = "02:00:00:aa:bb:cc";
	check_golden("kvm", &s);
}

static bool has_arg(char **argv, const char *want)
{
	for (; *argv; argv++)
		if (strcmp(*argv, want) == 0)
			return true;
	return false;
}

/* What a user relies on, independent of the golden files. */
static void test_properties(void **state)
{
	struct nb_vm_spec s = base_spec();
	char **argv = NULL;

	(void)state;
	s.qemu = NULL;
	s.accel = NULL;
	s.uuid = NULL;
	assert_int_equal(nb_qemu_argv(&s, &argv), 0);
	assert_string_equal(argv[0], "qemu-system-x86_64"); /* the default */
	assert_true(has_arg(argv, "tcg,tb-size=64"));       /* the default accel */
	assert_false(has_arg(argv, "-uuid"));
	assert_true(has_arg(argv, "type=1,serial=i-0123456789abcdef0"));
	/* A guest reboot must reboot, and the shim owns stdio. */
	assert_false(has_arg(argv, "-no-reboot"));
	assert_false(has_arg(argv, "-daemonize"));
	assert_false(has_arg(argv, "-nographic"));
	assert_false(has_arg(argv, "-netdev"));
	assert_false(has_arg(argv, "-kernel"));
	nb_argv_free(argv);
	nb_argv_free(NULL);
}

/* A ',' in a path is doubled where QEMU parses options, kept where it
 * takes the argument whole. */
static void test_comma_escaping(void **state)
{
	struct nb_vm_spec s = base_spec();
	char **argv = NULL;

	(void)state;
	s.dir = "/srv/a,b";
	s.disk = "/srv/a,b/root,1.qcow2";
	s.kernel = "/srv/k,1";
	assert_int_equal(nb_qemu_argv(&s, &argv), 0);
	assert_true(has_arg(argv, "unix:/srv/a,,b/qmp.sock,server=on,wait=off"));
	assert_true(has_arg(
	    argv, "file=/srv/a,,b/"
	          "root,,1.qcow2,if=none,id=disk0,format=qcow2,cache=writeback,discard=unmap"));
	assert_true(has_arg(argv, "/srv/a,b/qemu.pid"));
	assert_true(has_arg(argv, "/srv/k,1"));
	nb_argv_free(argv);
}

static void expect_refused(const struct nb_vm_spec *s, int want)
{
	char **argv = (char **)&argv; /* must come back NULL */

	assert_int_equal(nb_qemu_argv(s, &argv), want);
	assert_null(argv);
}

/* Builds the base spec, applies the statements, expects the error. */
#define REFUSED(err, ...)                                                                          \
	do {                                                                                       \
		struct nb_vm_spec s = base_spec();                                                 \
		__VA_ARGS__;                                                                       \
		expect_refused(&s, err);                                                           \
	} while (0)

static void test_refused(void **state)
{
	char long_cmdline[2100], long_dir[128];
	struct nb_vm_spec ok = base_spec();
	char **argv = NULL;

	(void)state;
	expect_refused(NULL, -EINVAL);
	REFUSED(-EINVAL, s.id = NULL);
	REFUSED(-EINVAL, s.id = "");
	REFUSED(-EINVAL, s.id = "i-1,debug-threads=off");
	REFUSED(-EINVAL, s.dir = NULL);
	REFUSED(-EINVAL, s.disk = NULL);
	REFUSED(-EINVAL, s.disk = "/a\nb");
	REFUSED(-EINVAL, s.vcpus = 0);
	REFUSED(-EINVAL, s.vcpus = -1);
	REFUSED(-EINVAL, s.vcpus = 65);
	REFUSED(-EINVAL, s.memory_mb = 15);
	REFUSED(-EINVAL, s.memory_mb = 0);
	REFUSED(-EINVAL, s.memory_mb = 1024u * 1024u + 1);
	REFUSED(-EINVAL, s.accel = "xen");
	REFUSED(-EINVAL, s.uuid = "not-a-uuid");
	REFUSED(-EINVAL, s.tap = "nb0");               /* no mac */
	REFUSED(-EINVAL, s.tap_fd = 5);                /* an fd without its tap */
	REFUSED(-EINVAL, s.tap = "nb0", s.mac = "52:54:00:12:34:56", s.tap_fd = 1);
	REFUSED(-EINVAL, s.mac = "52:54:00:12:34:56"); /* no tap */
	REFUSED(-EINVAL, s.tap = "nb0", s.mac = "52:54:00:12:34");
	REFUSED(-EINVAL, s.tap = "nb0", s.mac = "01:00:5e:00:00:01"); /* multicast */
	REFUSED(-EINVAL, s.tap = "a-name-longer-than-15", s.mac = "52:54:00:12:34:56");
	REFUSED(-EINVAL, s.initrd = "/i"); /* without a kernel */
	REFUSED(-EINVAL, s.cmdline = "quiet");

	memset(long_cmdline, 'a', sizeof(long_cmdline) - 1);
	long_cmdline[2048] = '\0';
	REFUSED(-EINVAL, s.kernel = "/k", s.cmdline = long_cmdline);
	long_cmdline[2047] = '\0'; /* 2047 and its NUL fit */
	ok.kernel = "/k";
	ok.cmdline = long_cmdline;
	assert_int_equal(nb_qemu_argv(&ok, &argv), 0);
	nb_argv_free(argv);

	memset(long_dir, 'd', sizeof(long_dir) - 1);
	long_dir[0] = '/';
	long_dir[100] = '\0'; /* "/qmp.sock" no longer fits a sockaddr_un */
	REFUSED(-ENAMETOOLONG, s.dir = long_dir);
}

static void test_limits_accepted(void **state)
{
	struct nb_vm_spec s = base_spec();
	char **argv = NULL;

	(void)state;
	s.vcpus = 1;
	s.memory_mb = 16;
	assert_int_equal(nb_qemu_argv(&s, &argv), 0);
	assert_true(has_arg(argv, "16M"));
	nb_argv_free(argv);
	s.vcpus = 64;
	assert_int_equal(nb_qemu_argv(&s, &argv), 0);
	assert_true(has_arg(argv, "64"));
	nb_argv_free(argv);
}

/* --- the generated command line run by a real QEMU --------------------- */

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

struct real {
	pid_t pid;
	int console; /* our end of QEMU's stdio, as the shim holds it */
	int errfd;   /* QEMU's stderr */
	struct nb_qmp *q;
	char dir[64];
};

static int real_setup(void **state)
{
	struct real *r = calloc(1, sizeof(*r));

	if (!r)
		return -1;
	r->pid = -1;
	r->console = r->errfd = -1;
	*state = r;
	return 0;
}

static int real_teardown(void **state)
{
	struct real *r = *state;

	nb_qmp_close(r->q);
	if (r->pid > 0) {
		kill(r->pid, SIGKILL);
		waitpid(r->pid, NULL, 0);
	}
	if (r->console >= 0)
		close(r->console);
	if (r->errfd >= 0)
		close(r->errfd);
	if (r->dir[0])
		nb_rm_rf(r->dir);
	free(r);
	return 0;
}

static void test_real_qemu_accepts_argv(void **state)
{
	struct real *rs = *state;
	char qemu[512], img[512], disk[128], sock[128], pidfile[128], status[32];
	const char *img_argv[] = {img, "create", "-q", "-f", "qcow2", disk, "64M", NULL};
	struct nb_vm_spec s = base_spec();
	struct nb_buf err;
	char **argv = NULL, *pidtext = NULL;
	bool running = false;
	long long mem = 0;
	int sv[2], ep[2], n = 0, st;
	uint64_t filepid = 0;
	size_t len;
	ssize_t got;
	char chunk[4096];

	if (!in_path("qemu-system-x86_64", qemu, sizeof(qemu)) ||
	    !in_path("qemu-img", img, sizeof(img)))
		skip();
	nb_strlcpy(rs->dir, "/tmp/nb-qemu-cmd-XXXXXX", sizeof(rs->dir));
	assert_non_null(mkdtemp(rs->dir));
	snprintf(disk, sizeof(disk), "%s/root.qcow2", rs->dir);
	snprintf(sock, sizeof(sock), "%s/qmp.sock", rs->dir);
	snprintf(pidfile, sizeof(pidfile), "%s/qemu.pid", rs->dir);
	assert_int_equal(nb_run(img_argv, 30000, NULL), 0);

	s.qemu = qemu;
	s.dir = rs->dir;
	s.disk = disk;
	s.vcpus = 2;
	s.memory_mb = 64;
	assert_int_equal(nb_qemu_argv(&s, &argv), 0);

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(pipe2(ep, O_CLOEXEC), 0);
	rs->pid = fork();
	assert_true(rs->pid >= 0);
	if (rs->pid == 0) {
		dup2(sv[1], 0);
		dup2(sv[1], 1);
		dup2(ep[1], 2);
		execv(argv[0], argv);
		_exit(127);
	}
	close(sv[1]);
	close(ep[1]);
	rs->console = sv[0];
	rs->errfd = ep[0];
	nb_argv_free(argv);

	assert_int_equal(nb_qmp_connect(sock, 10000, &rs->q), 0);
	assert_int_equal(nb_qmp_query_status(rs->q, status, sizeof(status), &running), 0);
	assert_string_equal(status, "running");
	assert_true(running);
	assert_int_equal(nb_qmp_query_cpu_count(rs->q, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(nb_qmp_query_memory(rs->q, &mem), 0);
	assert_int_equal(mem, 64ll << 20);
	/* QEMU writes the pidfile before it opens the monitor. */
	assert_int_equal(nb_read_file(pidfile, 64, &pidtext, &len), 0);
	pidtext[strcspn(pidtext, "\n")] = '\0';
	assert_int_equal(nb_parse_u64(pidtext, &filepid), 0);
	free(pidtext);
	assert_int_equal(filepid, (uint64_t)rs->pid);

	assert_int_equal(nb_qmp_quit(rs->q), 0);
	{
		int pfd = (int)syscall(SYS_pidfd_open, rs->pid, 0);
		struct pollfd p = {.fd = pfd, .events = POLLIN};

		assert_true(pfd >= 0);
		assert_int_equal(poll(&p, 1, 10000), 1);
		close(pfd);
	}
	assert_int_equal(waitpid(rs->pid, &st, 0), rs->pid);
	rs->pid = -1;
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);

	/* Nothing on stderr: no warning about the CPU model or an option. */
	nb_buf_init(&err, 1u << 16);
	while ((got = read(rs->errfd, chunk, sizeof(chunk))) > 0)
		nb_buf_append(&err, chunk, (size_t)got);
	if (err.len)
		fail_msg("QEMU wrote to stderr: %s", err.data);
	nb_buf_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_golden_kernel_nic),
	    cmocka_unit_test(test_golden_disk_boot),
	    cmocka_unit_test(test_golden_tap_fd),
	    cmocka_unit_test(test_golden_kvm),
	    cmocka_unit_test(test_properties),
	    cmocka_unit_test(test_comma_escaping),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_limits_accepted),
	    cmocka_unit_test_setup_teardown(test_real_qemu_accepts_argv, real_setup, real_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
