/* Image commands: ls, show, rm, import (streamed blob uploads, then the
 * image), build (runs an image builder script, then imports its output). */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/json.h"
#include "common/util.h"

#define CALL_TIMEOUT_S 60L
#define IMPORT_TIMEOUT_S 1800L /* the controller converts and checksums */
#define BUILD_TIMEOUT_S 3600
#define BUILD_LINE_MAX 4096
#define MANIFEST_MAX (64u << 10)
#define LOG_TAIL_BYTES 8192
#define LOG_TAIL_LINES 20

#ifndef NUBO_SRCDIR
#define NUBO_SRCDIR ""
#endif
#ifndef NUBO_INSTALL_DATADIR
#define NUBO_INSTALL_DATADIR "/usr/local/share/nubo"
#endif

static const struct nb_cli_opt no_opts[] = {
    {NULL, 0, NULL, NULL},
};

static int print_images(const json_t *list)
{
	static const char *const head[] = {"ID",   "NAME", "OS",    "RELEASE", "ARCH",
	                                   "BOOT", "SIZE", "STATE", "AGE",     NULL};
	struct nb_cli_table t;
	int64_t now = nb_wall_ms();
	size_t i;
	json_t *im;
	int r = nb_cli_table_init(&t, head);

	json_array_foreach(list, i, im)
	{
		char size[32] = "", age[32];
		const char *cells[9];
		json_int_t sz = nb_json_int(im, "size", -1);

		if (sz >= 0)
			nb_cli_fmt_size((uint64_t)sz, size, sizeof(size));
		nb_cli_fmt_since(nb_json_str(im, "created_at"), now, age, sizeof(age));
		cells[0] = nb_json_str(im, "id");
		cells[1] = nb_json_str(im, "name");
		cells[2] = nb_json_str(im, "os");
		cells[3] = nb_json_str(im, "release");
		cells[4] = nb_json_str(im, "arch");
		cells[5] = nb_json_str(im, "boot_mode");
		cells[6] = size;
		cells[7] = nb_json_str(im, "state");
		cells[8] = age;
		if (r >= 0)
			r = nb_cli_table_add(&t, cells);
	}
	if (r >= 0)
		r = nb_cli_print_table(&t);
	nb_cli_table_free(&t);
	if (r < 0) {
		fprintf(stderr, "error: %s\n", strerror(-r));
		return NB_CLI_EAPI;
	}
	return NB_CLI_OK;
}

static int cmd_image_ls(struct nb_cli *c, struct nb_cli_args *a)
{
	json_t *ans = NULL;
	int ex;

	(void)a;
	ex = nb_cli_call(c, "GET", "/v1/images", NULL, CALL_TIMEOUT_S, &ans);
	if (!ex) {
		if (c->json)
			nb_cli_print_json(ans);
		else
			ex = print_images(json_object_get(ans, "images"));
	}
	json_decref(ans);
	return ex;
}

static int cmd_image_show(struct nb_cli *c, struct nb_cli_args *a)
{
	struct nb_buf path;
	json_t *ans = NULL;
	int ex;

	nb_buf_init(&path, 4096);
	if (nb_cli_path(&path, "images", a->pos[0], NULL) < 0) {
		nb_buf_free(&path);
		return nb_cli_usage(c, "argument too long");
	}
	ex = nb_cli_call(c, "GET", path.data, NULL, CALL_TIMEOUT_S, &ans);
	if (!ex) {
		if (c->json)
			nb_cli_print_json(ans);
		else
			nb_cli_print_object(ans);
	}
	json_decref(ans);
	nb_buf_free(&path);
	return ex;
}

static int cmd_image_rm(struct nb_cli *c, struct nb_cli_args *a)
{
	int ex = NB_CLI_OK;

	for (int i = 0; i < a->npos; i++) {
		struct nb_buf path;
		int e;

		nb_buf_init(&path, 4096);
		if (nb_cli_path(&path, "images", a->pos[i], NULL) < 0)
			e = nb_cli_usage(c, "argument too long");
		else
			e = nb_cli_call(c, "DELETE", path.data, NULL, CALL_TIMEOUT_S, NULL);
		nb_buf_free(&path);
		if (!e && !c->json)
			printf("%s  deleted\n", a->pos[i]);
		if (e && !ex)
			ex = e;
		if (e == NB_CLI_EUNREACH)
			break;
	}
	return ex;
}

/* ---- import ---- */

struct import_req {
	const char *disk, *kernel, *initrd;
	const char *name, *os, *release, *arch, *cmdline;
};

static int check_file(struct nb_cli *c, const char *what, const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return nb_cli_usage(c, "%s %s: %s", what, path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return nb_cli_usage(c, "%s %s: not a regular file", what, path);
	if (access(path, R_OK) < 0)
		return nb_cli_usage(c, "%s %s: %s", what, path, strerror(errno));
	return NB_CLI_OK;
}

static int set_str(json_t *o, const char *key, const char *v)
{
	if (!v)
		return 0;
	return json_object_set_new(o, key, json_string(v)) < 0 ? -ENOMEM : 0;
}

/* Saves uploading gigabytes for nothing: the controller would refuse the
 * image at the end if its name is taken (it still has the last word). */
static int name_free(struct nb_cli *c, const char *name)
{
	struct nb_cli_resp resp;
	struct nb_buf path;
	int r, ex = NB_CLI_OK;

	nb_buf_init(&path, 4096);
	if (nb_cli_path(&path, "images", name, NULL) < 0) {
		nb_buf_free(&path);
		return nb_cli_usage(c, "image name too long");
	}
	r = nb_cli_http_call(&c->http, "GET", path.data, NULL, CALL_TIMEOUT_S, &resp);
	if (r == 0 && resp.status == 200) {
		fprintf(stderr, "error: Conflict: an image named '%s' exists already\n", name);
		ex = NB_CLI_EAPI;
	} else if (r < 0 || (resp.status != 404 && resp.status >= 300)) {
		ex = nb_cli_report(c, r, &resp);
	}
	nb_cli_resp_free(&resp);
	nb_buf_free(&path);
	return ex;
}

static int do_import(struct nb_cli *c, const struct import_req *q)
{
	char disk[65], kernel[65], initrd[65];
	json_t *body = NULL, *ans = NULL;
	/* s3://bucket/key: nubod reads the object itself, with the caller's rights */
	bool in_s3 = !strncmp(q->disk, "s3://", 5);
	int ex;

	if ((!in_s3 && (ex = check_file(c, "disk", q->disk))) ||
	    (q->kernel && (ex = check_file(c, "kernel", q->kernel))) ||
	    (q->initrd && (ex = check_file(c, "initrd", q->initrd))))
		return ex;
	ex = name_free(c, q->name);
	if (ex)
		return ex;
	if ((!in_s3 && (ex = nb_cli_upload_file(c, q->disk, disk))) ||
	    (q->kernel && (ex = nb_cli_upload_file(c, q->kernel, kernel))) ||
	    (q->initrd && (ex = nb_cli_upload_file(c, q->initrd, initrd))))
		return ex;
	body = json_object();
	if (!body || set_str(body, "name", q->name) || set_str(body, "os", q->os) ||
	    set_str(body, "release", q->release) || set_str(body, "arch", q->arch) ||
	    (in_s3 ? set_str(body, "source", q->disk) : set_str(body, "disk_blob", disk)) ||
	    (q->kernel && set_str(body, "kernel_blob", kernel)) ||
	    (q->initrd && set_str(body, "initrd_blob", initrd)) ||
	    set_str(body, "cmdline", q->cmdline)) {
		fprintf(stderr, "error: out of memory\n");
		ex = NB_CLI_EAPI;
		goto out;
	}
	if (c->err_tty && !c->json) {
		fprintf(stderr, "registering image %s...", q->name);
		fflush(stderr);
	}
	ex = nb_cli_call(c, "POST", "/v1/images", body, IMPORT_TIMEOUT_S, &ans);
	if (c->err_tty && !c->json)
		fputs(ex ? "\n" : " done\n", stderr);
	if (ex)
		goto out;
	if (c->json) {
		nb_cli_print_json(ans);
	} else {
		json_t *one = json_pack("[O]", ans);
		ex = one ? print_images(one) : NB_CLI_EAPI;
		json_decref(one);
	}
out:
	json_decref(body);
	json_decref(ans);
	return ex;
}

static const struct nb_cli_opt import_opts[] = {
    {"name", 0, "NAME", "image name; required"},
    {"os", 0, "OS", "operating system, e.g. debian"},
    {"release", 0, "R", "release, e.g. 12"},
    {"arch", 0, "ARCH", "architecture (default x86_64)"},
    {"kernel", 0, "FILE", "kernel for a kernel-boot image (needs --initrd)"},
    {"initrd", 0, "FILE", "initrd for a kernel-boot image (needs --kernel)"},
    {"cmdline", 0, "S", "kernel command line (with --kernel)"},
    {NULL, 0, NULL, NULL},
};

static int cmd_image_import(struct nb_cli *c, struct nb_cli_args *a)
{
	struct import_req q = {
	    .disk = a->pos[0],
	    .kernel = nb_cli_args_get(a, "kernel"),
	    .initrd = nb_cli_args_get(a, "initrd"),
	    .name = nb_cli_args_get(a, "name"),
	    .os = nb_cli_args_get(a, "os"),
	    .release = nb_cli_args_get(a, "release"),
	    .arch = nb_cli_args_get(a, "arch"),
	    .cmdline = nb_cli_args_get(a, "cmdline"),
	};

	if (!q.name)
		return nb_cli_usage(c, "--name is required");
	if (!q.kernel != !q.initrd)
		return nb_cli_usage(c, "--kernel and --initrd go together");
	if (q.cmdline && !q.kernel)
		return nb_cli_usage(c, "--cmdline needs --kernel and --initrd");
	if (!q.arch)
		q.arch = "x86_64";
	return do_import(c, &q);
}

/* ---- build ---- */

static volatile sig_atomic_t build_interrupted;

static void on_build_signal(int sig)
{
	(void)sig;
	build_interrupted = 1;
}

static bool valid_builder_name(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > 64 || s[0] == '.' || s[0] == '-')
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
		      *p == '_' || *p == '.'))
			return false;
	return !strstr(s, "..");
}

/* The builder script of image kind name: $NUBO_DATADIR, then the source tree,
 * then the installed data dir. */
static int find_builder(const char *name, char *out, size_t outsz)
{
	const char *dirs[3] = {getenv("NUBO_DATADIR"), NUBO_SRCDIR, NUBO_INSTALL_DATADIR};

	for (size_t i = 0; i < NB_ARRAY_SIZE(dirs); i++) {
		if (!dirs[i] || !*dirs[i])
			continue;
		if ((size_t)snprintf(out, outsz, "%s/images/%s/build.sh", dirs[i], name) >= outsz)
			continue;
		if (access(out, R_OK) == 0)
			return 0;
	}
	return -ENOENT;
}

static void print_log_tail(const char *path)
{
	char buf[LOG_TAIL_BYTES + 1];
	int fd = open(path, O_RDONLY | O_CLOEXEC), lines = 0;
	off_t end;
	ssize_t n;
	char *p;

	if (fd < 0)
		return;
	end = lseek(fd, 0, SEEK_END);
	if (end > LOG_TAIL_BYTES)
		lseek(fd, end - LOG_TAIL_BYTES, SEEK_SET);
	else
		lseek(fd, 0, SEEK_SET);
	n = read(fd, buf, LOG_TAIL_BYTES);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	p = buf + n;
	while (p > buf && p[-1] == '\n')
		*--p = '\0';
	while (p > buf) {
		if (p[-1] == '\n' && ++lines >= LOG_TAIL_LINES)
			break;
		p--;
	}
	fprintf(stderr, "--- last lines of %s ---\n%s\n---\n", path, p);
}

struct build_view {
	bool tty, quiet;
	int last_pct;
	char last_msg[256];
};

static void show_build_progress(struct build_view *v, int pct, const char *msg)
{
	char line[512];

	if (v->quiet)
		return;
	if (v->tty) {
		nb_cli_progress_render(line, sizeof(line), nb_cli_term_width(), "build",
		                       pct / 100.0, msg);
		fprintf(stderr, "\r%s\033[K", line);
		fflush(stderr);
	} else if (pct != v->last_pct || strncmp(msg, v->last_msg, sizeof(v->last_msg) - 1)) {
		fprintf(stderr, "build: %3d%% %s\n", pct, msg);
	}
	v->last_pct = pct;
	nb_strlcpy(v->last_msg, msg, sizeof(v->last_msg));
}

/* Runs script outdir with stdout read for progress lines and both streams
 * copied to logfd. Returns the script's exit status, or -errno, -ETIMEDOUT,
 * -EINTR. */
static int run_builder(const char *script, const char *outdir, int logfd, struct build_view *v)
{
	char line[BUILD_LINE_MAX + 1];
	size_t len = 0;
	bool skipping = false;
	int pfd[2], status = 0, r = 0;
	int64_t deadline = nb_now_ms() + (int64_t)BUILD_TIMEOUT_S * 1000;
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		r = -errno;
		close(pfd[0]);
		close(pfd[1]);
		return r;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		sigset_t none;

		setpgid(0, 0);
		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(pfd[1], 1);
		dup2(logfd, 2);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (access(script, X_OK) == 0)
			execl(script, script, outdir, (char *)NULL);
		else
			execl("/bin/sh", "sh", script, outdir, (char *)NULL);
		dprintf(2, "exec %s: %s\n", script, strerror(errno));
		_exit(127);
	}
	setpgid(pid, pid);
	close(pfd[1]);
	for (;;) {
		struct pollfd p = {.fd = pfd[0], .events = POLLIN};
		char chunk[4096];
		ssize_t n;

		if (build_interrupted) {
			r = -EINTR;
			break;
		}
		if (nb_now_ms() > deadline) {
			r = -ETIMEDOUT;
			break;
		}
		if (poll(&p, 1, 500) <= 0)
			continue;
		n = read(pfd[0], chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		nb_write_all(logfd, chunk, (size_t)n);
		for (ssize_t i = 0; i < n; i++) {
			int pct;
			const char *msg;

			if (chunk[i] != '\n') {
				if (len < BUILD_LINE_MAX)
					line[len++] = chunk[i];
				else
					skipping = true; /* an over-long line is not progress */
				continue;
			}
			line[len] = '\0';
			if (len && line[len - 1] == '\r')
				line[len - 1] = '\0';
			if (!skipping && nb_cli_parse_progress_line(line, &pct, &msg) == 0)
				show_build_progress(v, pct, msg);
			len = 0;
			skipping = false;
		}
	}
	close(pfd[0]);
	if (r < 0)
		kill(-pid, SIGTERM);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		if (r == -EINTR)
			kill(-pid, SIGTERM);
	if (r < 0)
		return r;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}

static const char *manifest_file(const json_t *m, const char *key, const char *def)
{
	const char *v = nb_json_str(m, key);

	return v && *v && !strchr(v, '/') && strcmp(v, "..") ? v : def;
}

static const struct nb_cli_opt build_opts[] = {
    {"name", 0, "NAME", "image name (default: the builder's)"},
    {"keep", 0, NULL, "keep the build directory and print where it is"},
    {NULL, 0, NULL, NULL},
};

static int cmd_image_build(struct nb_cli *c, struct nb_cli_args *a)
{
	const char *kind = a->pos[0], *tmpbase = getenv("TMPDIR");
	char script[1024], tmp[1024], outdir[1100], logpath[1100];
	char disk[1200], kernel[1200], initrd[1200];
	struct build_view view = {.tty = c->err_tty && !c->json, .quiet = c->json, .last_pct = -1};
	struct sigaction sa = {0}, old_int, old_term;
	struct import_req q = {0};
	json_t *manifest = NULL;
	char *mtext = NULL;
	bool keep = nb_cli_args_flag(a, "keep"), made = false;
	int logfd = -1, ex = NB_CLI_OK, r;
	size_t mlen;

	if (!valid_builder_name(kind))
		return nb_cli_usage(c, "'%.64s' is not an image builder name", kind);
	if (find_builder(kind, script, sizeof(script)) < 0) {
		fprintf(stderr,
		        "error: no builder images/%s/build.sh (looked in $NUBO_DATADIR, %s, %s)\n",
		        kind, NUBO_SRCDIR[0] ? NUBO_SRCDIR : "(no source tree)",
		        NUBO_INSTALL_DATADIR);
		return NB_CLI_EAPI;
	}
	if (!tmpbase || !*tmpbase)
		tmpbase = "/var/tmp";
	snprintf(tmp, sizeof(tmp), "%s/nubo-build-XXXXXX", tmpbase);
	if (!mkdtemp(tmp)) {
		fprintf(stderr, "error: making a build directory in %s: %s\n", tmpbase,
		        strerror(errno));
		return NB_CLI_EAPI;
	}
	made = true;
	snprintf(outdir, sizeof(outdir), "%s/out", tmp);
	snprintf(logpath, sizeof(logpath), "%s/build.log", tmp);
	if (mkdir(outdir, 0755) < 0 ||
	    (logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
		fprintf(stderr, "error: %s: %s\n", tmp, strerror(errno));
		ex = NB_CLI_EAPI;
		goto out;
	}
	sa.sa_handler = on_build_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	if (!c->json)
		fprintf(stderr, "building image '%s' with %s\n", kind, script);
	r = run_builder(script, outdir, logfd, &view);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	if (view.tty && view.last_pct >= 0)
		fputc('\n', stderr);
	if (r != 0) {
		if (r == -EINTR)
			fprintf(stderr, "error: build interrupted\n");
		else if (r == -ETIMEDOUT)
			fprintf(stderr, "error: build took longer than %ds\n", BUILD_TIMEOUT_S);
		else if (r < 0)
			fprintf(stderr, "error: running %s: %s\n", script, strerror(-r));
		else
			fprintf(stderr, "error: %s failed (exit status %d)\n", script, r);
		print_log_tail(logpath);
		ex = r == -EINTR ? 130 : NB_CLI_EAPI;
		goto out;
	}
	snprintf(disk, sizeof(disk), "%s/manifest.json", outdir);
	r = nb_read_file(disk, MANIFEST_MAX, &mtext, &mlen);
	manifest = r == 0 ? json_loadb(mtext, mlen, 0, NULL) : NULL;
	if (!json_is_object(manifest)) {
		fprintf(stderr, "error: %s: %s\n", disk,
		        r < 0 ? strerror(-r) : "not a JSON object");
		ex = NB_CLI_EAPI;
		goto out;
	}
	snprintf(disk, sizeof(disk), "%s/%s", outdir,
	         manifest_file(manifest, "disk", "disk.qcow2"));
	snprintf(kernel, sizeof(kernel), "%s/%s", outdir,
	         manifest_file(manifest, "kernel", "vmlinuz"));
	snprintf(initrd, sizeof(initrd), "%s/%s", outdir,
	         manifest_file(manifest, "initrd", "initrd.img"));
	q.disk = disk;
	if (!nb_path_exists(disk)) {
		fprintf(stderr, "error: %s made no disk image (%s)\n", script, disk);
		ex = NB_CLI_EAPI;
		goto out;
	}
	if (nb_path_exists(kernel) && nb_path_exists(initrd)) {
		q.kernel = kernel;
		q.initrd = initrd;
		q.cmdline = nb_json_str(manifest, "cmdline");
	}
	q.name = nb_cli_args_get(a, "name");
	if (!q.name)
		q.name = nb_json_str(manifest, "name");
	if (!q.name)
		q.name = kind;
	q.os = nb_json_str(manifest, "os");
	q.release = nb_json_str(manifest, "release");
	q.arch = nb_json_str(manifest, "arch");
	if (!q.arch)
		q.arch = "x86_64";
	ex = do_import(c, &q);
out:
	if (logfd >= 0)
		close(logfd);
	if (made && keep)
		fprintf(stderr, "build directory kept: %s\n", tmp);
	else if (made)
		nb_rm_rf(tmp);
	json_decref(manifest);
	free(mtext);
	return ex;
}

const struct nb_cli_cmd nb_cli_image_cmds[] = {
    {"image", "ls", "", "list images", no_opts, 0, 0, cmd_image_ls},
    {"image", "show", "NAME|ID", "show one image", no_opts, 1, 1, cmd_image_show},
    {"image", "rm", "NAME|ID...", "delete images", no_opts, 1, -1, cmd_image_rm},
    {"image", "import",
     "FILE|s3://BUCKET/KEY --name NAME [--os OS] [--release R] [--arch x86_64] "
     "[--kernel F --initrd F [--cmdline S]]",
     "register a disk image (qcow2, raw, vmdk, vdi, vhdx): a file, uploaded, or an object "
     "of a bucket the account may read", import_opts, 1, 1,
     cmd_image_import},
    {"image", "build", "tiny [--name NAME] [--keep]",
     "build an image with its builder script and import it", build_opts, 1, 1, cmd_image_build},
    {NULL, NULL, NULL, NULL, NULL, 0, 0, NULL},
};
