#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/cgroup/cgroup.h"
#include "agent/qmp/qemu_cmd.h"
#include "agent/qmp/qmp_cmd.h"
#include "common/httpc.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "agent/disk/qcow2.h"
#include "net/net.h"

/* How long a new QEMU gets to answer on its QMP socket. */
#define QMP_START_TIMEOUT_MS 10000

static void set_actual(struct nb_agent *a, struct nb_vm *vm, const char *state, const char *why)
{
	if (strcmp(vm->actual, state) || (why && strcmp(vm->reason, why))) {
		nb_info("%s: %s -> %s%s%s", vm->id, vm->actual, state, why && *why ? ": " : "",
			why ? why : "");
		nb_strlcpy(vm->actual, state, sizeof(vm->actual));
		nb_strlcpy(vm->reason, why ? why : "", sizeof(vm->reason));
		a->dirty = true;
	}
}

static void vm_path(const struct nb_vm *vm, const char *name, char *out, size_t outsz)
{
	snprintf(out, outsz, "%s/%s", vm->dir, name);
}

static int64_t read_num(const struct nb_vm *vm, const char *name, int64_t def)
{
	char path[PATH_MAX], *data = NULL;
	long long v = def;

	vm_path(vm, name, path, sizeof(path));
	if (nb_read_file(path, 64, &data, NULL) == 0) {
		if (sscanf(data, "%lld", &v) != 1)
			v = def;
		free(data);
	}
	return v;
}

static void write_num(const struct nb_vm *vm, const char *name, int64_t v)
{
	char path[PATH_MAX], buf[32];

	vm_path(vm, name, path, sizeof(path));
	snprintf(buf, sizeof(buf), "%lld\n", (long long)v);
	nb_write_file(path, buf, strlen(buf), 0600);
}

struct nb_vm *nb_vm_new(struct nb_agent *a, const char *id)
{
	struct nb_vm *vm = calloc(1, sizeof(*vm));

	if (!vm)
		return NULL;
	nb_strlcpy(vm->id, id, sizeof(vm->id));
	snprintf(vm->dir, sizeof(vm->dir), "%s/instances/%s", a->cfg.state_dir, id);
	nb_strlcpy(vm->actual, "pending", sizeof(vm->actual));
	vm->qmp_greet_fd = -1;
	vm->started_seq = read_num(vm, "start_seq", 0);
	vm->reboot_done = read_num(vm, "reboot_seq", 0);
	return vm;
}

/* Closes a QMP connection still waiting for QEMU's greeting. */
static void greet_drop(struct nb_vm *vm)
{
	if (vm->qmp_greet_fd >= 0)
		close(vm->qmp_greet_fd);
	vm->qmp_greet_fd = -1;
}

void nb_vm_free(struct nb_vm *vm)
{
	if (!vm)
		return;
	greet_drop(vm);
	nb_qmp_close(vm->qmp);
	json_decref(vm->desired);
	free(vm);
}

/* QEMU's pid when it runs for this instance, else 0. */
static int live_pid(const struct nb_vm *vm)
{
	char path[PATH_MAX], *cmd = NULL;
	size_t len = 0;
	int pid = (int)read_num(vm, "qemu.pid", 0), ok = 0;

	if (pid <= 0 || kill(pid, 0) < 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
	if (nb_read_file(path, 1 << 16, &cmd, &len) == 0) {
		for (size_t i = 0; i < len; i++)
			if (!cmd[i])
				cmd[i] = ' ';
		ok = strstr(cmd, vm->id) != NULL;
		free(cmd);
	}
	return ok ? pid : 0;
}

static void qmp_drop(struct nb_vm *vm)
{
	nb_qmp_close(vm->qmp);
	vm->qmp = NULL;
}

/* Reads QEMU's run state into actual. */
static void refresh_status(struct nb_agent *a, struct nb_vm *vm)
{
	char status[32];
	bool running = false;

	if (!vm->qmp)
		return;
	if (nb_qmp_query_status(vm->qmp, status, sizeof(status), &running) < 0) {
		qmp_drop(vm);
		return;
	}
	if (running)
		set_actual(a, vm, "running", NULL);
	else if (!strcmp(status, "paused"))
		set_actual(a, vm, "paused", NULL);
	else if (!strcmp(status, "shutdown"))
		set_actual(a, vm, "stopping", NULL);
	else
		set_actual(a, vm, "running", NULL);
}

void nb_vm_adopt(struct nb_agent *a, struct nb_vm *vm)
{
	char sock[PATH_MAX];

	vm->pid = live_pid(vm);
	if (!vm->pid) {
		set_actual(a, vm, "stopped", NULL);
		return;
	}
	vm_path(vm, "qmp.sock", sock, sizeof(sock));
	if (nb_qmp_connect(sock, 5000, &vm->qmp) < 0) {
		nb_warn("%s: QEMU pid %d runs but its QMP socket does not answer", vm->id, vm->pid);
		return;
	}
	nb_info("%s: re-adopted QEMU pid %d", vm->id, vm->pid);
	refresh_status(a, vm);
}

/* ---- images ---- */

static int fetch_blob(struct nb_agent *a, const char *sha, const char *suffix, char *path,
		      size_t pathsz)
{
	char url[700], tmp[PATH_MAX], got[65];
	long status = 0;
	int r;

	snprintf(path, pathsz, "%s/images/%s%s", a->cfg.state_dir, sha, suffix);
	if (nb_path_exists(path))
		return 0;
	snprintf(tmp, sizeof(tmp), "%s.part.%d", path, (int)getpid());
	snprintf(url, sizeof(url), "%s/v1/agent/blobs/%s", a->cfg.controller, sha);
	r = nb_httpc_download(url, a->token, tmp, &status);
	if (r < 0 || status != 200)
		return r < 0 ? r : -ENOENT;
	r = nb_sha256_file(tmp, got);
	if (r == 0 && strcmp(got, sha))
		r = -EBADMSG; /* a corrupt image is never cached */
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

/* ---- start / stop / cleanup ---- */

static void net_names(const struct nb_vm *vm, char tap[16])
{
	nb_net_tap_name(vm->id, tap);
}

/* Undoes what a start made for this instance: tap and cgroup; the disk too
 * when fresh (a first start that failed leaves nothing behind). */
static void undo_start(struct nb_agent *a, struct nb_vm *vm, bool remove_dir)
{
	char tap[16];

	if (a->cfg.network) {
		char ns[NB_NET_NS_NAME_MAX] = "";
		json_t *nic = nb_vpc_nic0(vm->desired);
		net_names(vm, tap);
		/* in its VPC's namespace (known from the start, or from the desired
		 * state after an agent restart), else on the first-form bridge */
		if (vm->netns[0])
			nb_strlcpy(ns, vm->netns, sizeof(ns));
		else if (nic)
			nb_vpc_ns_of(a, nb_json_str_or(nic, "vpc_id"), ns);
		if (ns[0])
			nb_net_vpc_tap_delete(ns, tap);
		nb_net_tap_delete(tap);
	}
	nb_cgroup_remove(a->cfg.cgroup_root, vm->id);
	if (remove_dir)
		nb_rm_rf(vm->dir);
}

static int vm_start(struct nb_agent *a, struct nb_vm *vm, char *why, size_t whysz)
{
	json_t *d = vm->desired, *im = json_object_get(d, "image");
	char base[PATH_MAX], kernel[PATH_MAX] = "", initrd[PATH_MAX] = "", disk[PATH_MAX];
	char tap[16] = "", uuid[40], hex[65], sizearg[32], cg[NB_CG_MAX_DIRS][512];
	char logmax[32];
	bool fresh = !nb_path_exists(vm->dir);
	struct nb_vm_spec spec = {0};
	int tap_fd = -1;
	char **qargv = NULL;
	const char **argv = NULL;
	struct nb_buf out;
	int ncg = 0, r, n = 0;

	nb_buf_init(&out, 64 << 10);
	vm->start_us[0] = nb_now_us();
	if (!im) {
		snprintf(why, whysz, "no image in the desired state");
		return -EINVAL;
	}
	r = fetch_blob(a, nb_json_str_or(im, "sha256"), ".qcow2", base, sizeof(base));
	if (r == 0 && nb_json_str(im, "kernel_sha256"))
		r = fetch_blob(a, nb_json_str(im, "kernel_sha256"), ".kernel", kernel,
			       sizeof(kernel));
	if (r == 0 && nb_json_str(im, "initrd_sha256"))
		r = fetch_blob(a, nb_json_str(im, "initrd_sha256"), ".initrd", initrd,
			       sizeof(initrd));
	if (r < 0) {
		snprintf(why, whysz, "image %s could not be fetched%s", nb_json_str_or(im, "id"),
			 r == -EBADMSG ? ": checksum mismatch" : "");
		return r;
	}
	vm->start_us[1] = nb_now_us();
	r = nb_mkdir_p(vm->dir, 0700);
	if (r < 0) {
		snprintf(why, whysz, "cannot create %s", vm->dir);
		return r;
	}
	vm_path(vm, "root.qcow2", disk, sizeof(disk));
	snprintf(sizearg, sizeof(sizearg), "%lldG", (long long)nb_json_int(d, "disk_gb", 1));
	if (nb_path_exists(disk)) {
		/* a resized instance: its disk grows to the new type's size */
		const char *iargv[] = {"qemu-img", "info", "--output=json", disk, NULL};
		json_t *info;
		nb_buf_reset(&out);
		info = nb_run(iargv, 30000, &out) == 0 ? json_loads(out.data, 0, NULL) : NULL;
		if (info && nb_json_int(info, "virtual-size", 0) <
				    (int64_t)nb_json_int(d, "disk_gb", 1) << 30) {
			const char *rargv[] = {"qemu-img", "resize", "-q", disk, sizearg, NULL};
			if (nb_run(rargv, 60000, NULL) != 0) {
				json_decref(info);
				snprintf(why, whysz, "growing the disk to %s failed", sizearg);
				r = -EIO;
				goto fail;
			}
		}
		json_decref(info);
	} else {
		/* the overlay is written directly (qcow2.c): no qemu-img exec. The
		 * backing name must be absolute (a relative one would be read
		 * against the overlay's directory). */
		char abs_base[PATH_MAX];
		if (base[0] != '/' && realpath(base, abs_base))
			nb_strlcpy(base, abs_base, sizeof(base));
		r = nb_qcow2_overlay_create(disk, base, "qcow2",
					    (uint64_t)nb_json_int(d, "disk_gb", 1) << 30);
		if (r < 0) {
			snprintf(why, whysz, "creating the disk failed: %s", strerror(-r));
			goto fail;
		}
	}
	vm->start_us[2] = nb_now_us();
	ncg = nb_cgroup_create(a->cfg.cgroup_root, vm->id, (int)nb_json_int(d, "vcpus", 1),
			       (uint64_t)nb_json_int(d, "memory_mb", 128), cg);
	if (ncg < 0) {
		snprintf(why, whysz, "cgroup setup failed: %s", strerror(-ncg));
		r = ncg;
		goto fail;
	}
	/* the shim's child joins these groups in a few ms: start the grace
	 * period that join would wait for now (cgroup.c; not before the groups
	 * are made, the primer holds the cgroup mutex while it waits) */
	nb_cgroup_prime(a->cfg.cgroup_root);
	vm->start_us[3] = nb_now_us();
	json_t *nic = a->cfg.network ? nb_vpc_nic0(d) : NULL;
	if (nic) {
		/* a tenant network: the tap is made in the VPC's namespace and
		 * QEMU gets its open queue (a restart opens a new one) */
		char err[512] = "";
		net_names(vm, tap);
		r = nb_vpc_prepare(a, nb_json_str_or(nic, "vpc_id"), tap,
				   (uint64_t)nb_json_int(d, "net_mbps", 0), vm->netns, &tap_fd, err,
				   sizeof(err));
		if (r < 0) {
			snprintf(why, whysz, "network setup failed: %s", err);
			goto fail;
		}
	} else if (a->cfg.network) {
		char err[256] = "";
		net_names(vm, tap);
		r = nb_net_tap_create(tap, a->cfg.bridge, (uint64_t)nb_json_int(d, "net_mbps", 0),
				      err, sizeof(err));
		if (r < 0) {
			snprintf(why, whysz, "tap setup failed: %s", err);
			goto fail;
		}
	}
	vm->start_us[4] = nb_now_us();
	/* SMBIOS uuid from the instance id, stable across restarts */
	nb_sha256_hex(vm->id, strlen(vm->id), hex);
	hex[32] = '\0';
	snprintf(uuid, sizeof(uuid), "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16,
		 hex + 20);
	spec.qemu = a->cfg.qemu;
	spec.id = vm->id;
	spec.uuid = uuid;
	spec.dir = vm->dir;
	spec.accel = a->accel;
	spec.vcpus = (int)nb_json_int(d, "vcpus", 1);
	spec.memory_mb = (uint64_t)nb_json_int(d, "memory_mb", 128);
	spec.disk = disk;
	spec.kernel = *kernel ? kernel : NULL;
	spec.initrd = *initrd ? initrd : NULL;
	spec.cmdline = spec.kernel ? nb_json_str(im, "cmdline") : NULL;
	spec.tap = *tap ? tap : NULL;
	spec.tap_fd = tap_fd > 2 ? tap_fd : 0;
	spec.mac = nic ? nb_json_str_or(nic, "mac") : nb_json_str_or(d, "mac");
	r = nb_qemu_argv(&spec, &qargv);
	if (r < 0) {
		snprintf(why, whysz, "bad VM spec");
		goto fail;
	}
	for (n = 0; qargv[n]; n++)
		;
	argv = calloc((size_t)n + 10 + 2 * NB_CG_MAX_DIRS, sizeof(*argv));
	if (!argv) {
		r = -ENOMEM;
		goto fail;
	}
	snprintf(logmax, sizeof(logmax), "%llu", (unsigned long long)a->cfg.console_log_max);
	int k = 0;
	argv[k++] = a->cfg.shim;
	argv[k++] = "--dir";
	argv[k++] = vm->dir;
	argv[k++] = "--log-max";
	argv[k++] = logmax;
	for (int i = 0; i < ncg; i++) {
		argv[k++] = "--cgroup";
		argv[k++] = cg[i];
	}
	char fdarg[16];
	if (tap_fd > 2) {
		snprintf(fdarg, sizeof(fdarg), "%d", tap_fd);
		argv[k++] = "--keep-fd";
		argv[k++] = fdarg;
	}
	argv[k++] = "--";
	for (int i = 0; i < n; i++)
		argv[k++] = qargv[i];
	argv[k] = NULL;
	char exitf[PATH_MAX];
	vm_path(vm, "exit", exitf, sizeof(exitf));
	unlink(exitf);
	nb_buf_reset(&out);
	r = nb_run_fds(argv, 15000, &out, &tap_fd, tap_fd > 2 ? 1 : 0);
	vm->start_us[5] = nb_now_us();
	if (tap_fd >= 0)
		close(tap_fd); /* QEMU holds it now (or failed to start) */
	tap_fd = -1;
	if (r != 0) {
		snprintf(why, whysz, "QEMU did not start: %.200s", out.data ? out.data : "");
		r = -EIO;
		goto fail;
	}
	/* QEMU is starting under its shim. Its QMP socket is waited for from
	 * the main loop (start_finish), so the starts of a burst overlap. */
	vm->qmp_wait_until = nb_now_ms() + QMP_START_TIMEOUT_MS;
	vm->start_want_seq = nb_json_int(d, "start_seq", 1);
	vm->start_fresh = fresh;
	set_actual(a, vm, "pending", NULL);
	r = 0;
	goto out;
fail:
	if (tap_fd >= 0)
		close(tap_fd);
	undo_start(a, vm, fresh);
	vm->netns[0] = '\0';
out:
	free(argv);
	nb_argv_free(qargv);
	nb_buf_free(&out);
	return r;
}

/* The QMP step of a start: 1 when QEMU answered (the start is done), 0 while
 * it is still coming up, negative (why filled, everything undone) when it
 * died or did not answer in time. */
static int start_finish(struct nb_agent *a, struct nb_vm *vm, char *why, size_t whysz)
{
	char sock[PATH_MAX], exitf[PATH_MAX];
	int r;

	vm_path(vm, "qmp.sock", sock, sizeof(sock));
	vm_path(vm, "exit", exitf, sizeof(exitf));
	/* QEMU listens on its QMP socket long before its main loop runs and
	 * greets: connect first, then wait for the greeting in the main loop's
	 * poll, and only then handshake (which is quick once greeted) */
	if (vm->qmp_greet_fd < 0) {
		r = nb_qmp_try_connect(sock, &vm->qmp_greet_fd);
	} else {
		struct pollfd p = {.fd = vm->qmp_greet_fd, .events = POLLIN};
		r = poll(&p, 1, 0) > 0 ? 0 : -EAGAIN;
		if (r == 0) {
			r = nb_qmp_attach(vm->qmp_greet_fd, 5000, &vm->qmp);
			vm->qmp_greet_fd = -1; /* attach owns it now, closed on failure */
		}
	}
	if (r == 0 && !vm->qmp)
		r = -EAGAIN; /* connected: the greeting comes later */
	if (r == -EAGAIN && !nb_path_exists(exitf) && nb_now_ms() < vm->qmp_wait_until)
		return 0;
	vm->qmp_wait_until = 0;
	if (r == -EAGAIN)
		greet_drop(vm);
	if (r < 0) {
		char qlog[PATH_MAX], *text = NULL;
		vm_path(vm, "qemu.log", qlog, sizeof(qlog));
		nb_read_file(qlog, 4096, &text, NULL);
		snprintf(why, whysz, "QEMU did not start: %.200s",
			 text && *text ? text : "no QMP socket");
		free(text);
		int pid = live_pid(vm);
		if (pid)
			kill(pid, SIGKILL);
		undo_start(a, vm, vm->start_fresh);
		return r == -EAGAIN ? -ETIMEDOUT : r;
	}
	vm->pid = live_pid(vm);
	vm->started_seq = vm->start_want_seq;
	vm->reboot_done = nb_json_int(vm->desired, "reboot_seq", 0);
	write_num(vm, "start_seq", vm->started_seq);
	write_num(vm, "reboot_seq", vm->reboot_done);
	vm->powerdown_sent = false;
	{
		const int64_t *t = vm->start_us;
		nb_info("%s: started QEMU pid %d (%s) in %.1f ms: image %.1f, disk %.1f, "
			"cgroups %.1f, network %.1f, shim %.1f, QMP %.1f",
			vm->id, vm->pid, a->accel, (double)(nb_now_us() - t[0]) / 1e3,
			(double)(t[1] - t[0]) / 1e3, (double)(t[2] - t[1]) / 1e3,
			(double)(t[3] - t[2]) / 1e3, (double)(t[4] - t[3]) / 1e3,
			(double)(t[5] - t[4]) / 1e3, (double)(nb_now_us() - t[5]) / 1e3);
	}
	return 1;
}

/* A start for seq that failed, in vm_start or while QEMU came up. A first
 * launch leaves nothing behind and ends terminated (the agent says error); a
 * restart leaves the instance stopped with its disk, the reason shown. That
 * seq is not tried again. */
static void start_failed(struct nb_agent *a, struct nb_vm *vm, bool first, int64_t seq,
			 const char *why)
{
	set_actual(a, vm, first ? "error" : "stopped", why);
	vm->started_seq = seq;
	if (!first)
		write_num(vm, "start_seq", seq);
}

bool nb_vm_starting(const struct nb_vm *vm)
{
	return vm->qmp_wait_until != 0;
}

int nb_vm_greet_fd(const struct nb_vm *vm)
{
	return vm->qmp_wait_until ? vm->qmp_greet_fd : -1;
}

/* Kills QEMU now and waits (bounded) for it to be gone. */
static void vm_kill(struct nb_vm *vm)
{
	int pid = live_pid(vm);

	if (vm->qmp_wait_until) {
		/* killed while starting: QEMU may not have written its pidfile */
		int child = (int)read_num(vm, "child.pid", 0);
		for (int i = 0; i < 200 && !pid && child > 0 && kill(child, 0) == 0; i++) {
			struct timespec ts = {0, 5 * 1000 * 1000};
			nanosleep(&ts, NULL); /* bounded wait for QEMU's pidfile */
			pid = live_pid(vm);
		}
		if (!pid && child > 0)
			kill(child, SIGKILL);
		vm->qmp_wait_until = 0;
		greet_drop(vm);
	}

	if (vm->qmp && pid) {
		nb_qmp_quit(vm->qmp);
	}
	qmp_drop(vm);
	if (!pid)
		return;
	for (int i = 0; i < 200 && live_pid(vm); i++) {
		if (i == 20)
			kill(pid, SIGKILL);
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL); /* bounded wait for the exit of a killed process */
	}
	vm->pid = 0;
}

void nb_vm_pump(struct nb_agent *a, struct nb_vm *vm)
{
	json_t *ev;

	if (!vm->qmp)
		return;
	if (nb_qmp_pump(vm->qmp) == -EPIPE) {
		qmp_drop(vm);
		vm->pid = live_pid(vm);
		a->dirty = true;
		return;
	}
	while ((ev = nb_qmp_next_event(vm->qmp))) {
		const char *name = nb_json_str_or(ev, "event");
		/* a guest being stopped stays "stopping" whatever it does meanwhile
		 * (the stop sends cont before the ACPI button: RESUME) */
		if (!vm->powerdown_sent && !strcmp(name, "STOP"))
			set_actual(a, vm, "paused", NULL);
		else if (!vm->powerdown_sent && !strcmp(name, "RESUME"))
			set_actual(a, vm, "running", NULL);
		json_decref(ev);
	}
}

static void exit_reason(struct nb_vm *vm, char *why, size_t whysz)
{
	char path[PATH_MAX], *text = NULL;
	int shim = (int)read_num(vm, "shim.pid", 0);
	int64_t deadline = nb_now_ms() + 3000;

	vm_path(vm, "exit", path, sizeof(path));
	/* QEMU's socket closes a moment before its shim has reaped it and
	 * written why: wait for the file while the shim lives (bounded) */
	while (!nb_path_exists(path) && shim > 0 && kill(shim, 0) == 0 && nb_now_ms() < deadline) {
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	if (nb_read_file(path, 256, &text, NULL) == 0) {
		text[strcspn(text, "\n")] = '\0';
		snprintf(why, whysz, "QEMU %s", text);
		free(text);
	} else {
		snprintf(why, whysz, "QEMU exited");
	}
}

void nb_vm_reconcile(struct nb_agent *a, struct nb_vm *vm)
{
	const char *want = vm->desired ? nb_json_str_or(vm->desired, "desired_state") : "terminated";
	char why[512] = "";
	int64_t start_seq = nb_json_int(vm->desired, "start_seq", 0);
	int r;

	if (vm->gone)
		return;
	if (!vm->qmp && vm->pid && !live_pid(vm))
		vm->pid = 0;
	if (!vm->qmp)
		vm->pid = live_pid(vm);

	if (!strcmp(want, "terminated")) {
		vm_kill(vm);
		undo_start(a, vm, true);
		set_actual(a, vm, "terminated", NULL);
		vm->gone = true;
		return;
	}
	if (!strcmp(want, "stopped")) {
		if (vm->qmp_wait_until) {
			/* stopped before QEMU came up: nothing to shut down gently */
			vm_kill(vm);
			undo_start(a, vm, false);
			set_actual(a, vm, "stopped", NULL);
			return;
		}
		if (!vm->pid) {
			if (strcmp(vm->actual, "stopped")) {
				undo_start(a, vm, false); /* the disk stays */
				set_actual(a, vm, "stopped", NULL);
			}
			return;
		}
		if (!vm->powerdown_sent) {
			bool force = json_is_true(json_object_get(vm->desired, "force_stop"));
			vm->powerdown_sent = true;
			vm->stop_deadline = nb_now_ms() + (int64_t)a->cfg.stop_timeout_s * 1000;
			vm->stop_forced = force;
			if (!vm->qmp && !force) {
				/* the QMP connection went (or never came back after an
				 * agent restart): the guest still gets its ACPI button */
				char sock[PATH_MAX];
				vm_path(vm, "qmp.sock", sock, sizeof(sock));
				nb_qmp_connect(sock, 2000, &vm->qmp);
			}
			if (vm->qmp && !force) {
				nb_qmp_cont(vm->qmp); /* a paused guest cannot see the button */
				nb_qmp_system_powerdown(vm->qmp);
			} else {
				vm->stop_deadline = 0;
			}
			set_actual(a, vm, "stopping", NULL);
		}
		if (nb_now_ms() >= vm->stop_deadline) {
			const char *why_stop = vm->stop_forced ? "forced stop"
				: vm->qmp ? "hard stop after timeout"
				: "hard stop: no QMP connection for the ACPI shutdown";
			nb_info("%s: %s", vm->id, why_stop);
			vm_kill(vm);
			undo_start(a, vm, false);
			set_actual(a, vm, "stopped", why_stop);
		}
		return;
	}
	/* running or paused */
	vm->powerdown_sent = false;
	if (vm->qmp_wait_until) {
		bool first = vm->start_fresh && vm->started_seq == 0;
		r = start_finish(a, vm, why, sizeof(why));
		if (r == 0)
			return;
		if (r < 0) {
			start_failed(a, vm, first, vm->start_want_seq, why);
			return;
		}
	} else if (!vm->pid) {
		if (start_seq > vm->started_seq) {
			bool first = vm->started_seq == 0 && !nb_path_exists(vm->dir);
			if (vm_start(a, vm, why, sizeof(why)) == 0)
				return; /* QEMU comes up; start_finish takes it from here */
			start_failed(a, vm, first, start_seq, why);
			return;
		} else {
			if (strcmp(vm->actual, "stopped")) {
				exit_reason(vm, why, sizeof(why));
				undo_start(a, vm, false);
				set_actual(a, vm, "stopped", why);
			}
			return;
		}
	}
	if (!vm->qmp) {
		char sock[PATH_MAX];
		vm_path(vm, "qmp.sock", sock, sizeof(sock));
		if (nb_qmp_connect(sock, 2000, &vm->qmp) < 0)
			return;
	}
	int64_t reboot_seq = nb_json_int(vm->desired, "reboot_seq", 0);
	if (reboot_seq > vm->reboot_done) {
		if (nb_qmp_system_reset(vm->qmp) == 0) {
			vm->reboot_done = reboot_seq;
			write_num(vm, "reboot_seq", reboot_seq);
			nb_info("%s: rebooted", vm->id);
		}
	}
	refresh_status(a, vm);
	if (!vm->qmp)
		return;
	if (!strcmp(want, "paused") && !strcmp(vm->actual, "running")) {
		if (nb_qmp_stop(vm->qmp) == 0)
			set_actual(a, vm, "paused", NULL);
	} else if (!strcmp(want, "running") && !strcmp(vm->actual, "paused")) {
		if (nb_qmp_cont(vm->qmp) == 0)
			set_actual(a, vm, "running", NULL);
	}
}

int nb_vm_net_sync(struct nb_agent *a)
{
	struct nb_dhcp_host hosts[NB_AGENT_MAX_VMS];
	char names[NB_AGENT_MAX_VMS][32];
	size_t n = 0;
	char dir[PATH_MAX];

	if (!a->cfg.network)
		return 0;
	snprintf(dir, sizeof(dir), "%s/net", a->cfg.state_dir);
	for (int i = 0; i < a->nvms; i++) {
		json_t *d = a->vms[i]->desired;
		if (!d || !nb_json_str(d, "ip") || !*nb_json_str_or(d, "ip") || nb_vpc_nic0(d))
			continue; /* with nics: its VPC's dnsmasq (vpc.c) */
		nb_strlcpy(names[n], a->vms[i]->id, sizeof(names[n]));
		hosts[n].mac = nb_json_str(d, "mac");
		hosts[n].ip = nb_json_str(d, "ip");
		hosts[n].hostname = names[n];
		n++;
	}
	/* unchanged since the last write: dnsmasq need not hear of it again */
	static char last[65];
	struct nb_buf sig;
	char hex[65];
	nb_buf_init(&sig, 1 << 20);
	for (size_t i = 0; i < n; i++)
		nb_buf_printf(&sig, "%s,%s,%s\n", hosts[i].mac, hosts[i].ip, hosts[i].hostname);
	nb_sha256_hex(sig.data ? sig.data : "", sig.len, hex);
	nb_buf_free(&sig);
	if (!strcmp(hex, last))
		return 0;
	int r = nb_net_dhcp_hosts(dir, hosts, n);
	if (r == 0)
		memcpy(last, hex, sizeof(last));
	/* Leases of instances that went (or of an address now another MAC's)
	 * are released: dnsmasq would otherwise keep the address for the old
	 * MAC until the lease ran out, and the next guest to get it would boot
	 * without a network. */
	char gw[16];
	if (nb_net_gateway(a->cfg.cidr, gw) == 0) {
		int rel = nb_net_dhcp_prune(dir, a->cfg.bridge, gw, hosts, n);
		if (rel > 0)
			nb_debug("released %d stale DHCP lease(s)", rel);
		else if (rel < 0)
			nb_warn("releasing stale DHCP leases: %s", strerror(-rel));
	}
	return r;
}

int nb_vm_snapshot(struct nb_agent *a, struct nb_vm *vm, const char *name, char *err,
		   size_t errsz)
{
	char disk[PATH_MAX], target[PATH_MAX], tmp[PATH_MAX + 8], qerr[256] = "";
	int r;

	(void)a;
	vm_path(vm, "root.qcow2", disk, sizeof(disk));
	snprintf(target, sizeof(target), "%s/snap-%s.qcow2", vm->dir, name);
	snprintf(tmp, sizeof(tmp), "%s.part", target);
	if (!nb_path_exists(disk)) {
		snprintf(err, errsz, "the instance has no disk yet");
		return -ENOENT;
	}
	unlink(tmp);
	if (vm->qmp) {
		json_t *args = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "job-id", "nbsnap",
					 "device", "disk0", "sync", "full", "target", tmp,
					 "format", "qcow2", "mode", "absolute-paths");
		r = nb_qmp_execute(vm->qmp, "drive-backup", args, NB_QMP_TIMEOUT_MS, NULL, qerr,
				   sizeof(qerr));
		if (r < 0) {
			snprintf(err, errsz, "drive-backup failed: %s", qerr);
			return r;
		}
		/* wait for the job's end, bounded */
		int64_t deadline = nb_now_ms() + 30 * 60 * 1000;
		r = -ETIMEDOUT;
		while (nb_now_ms() < deadline) {
			json_t *jobs = NULL;
			if (nb_qmp_execute(vm->qmp, "query-block-jobs", NULL, NB_QMP_TIMEOUT_MS, &jobs,
					   qerr, sizeof(qerr)) < 0) {
				r = -EIO;
				break;
			}
			bool running = json_array_size(jobs) > 0;
			json_decref(jobs);
			json_t *ev;
			while ((ev = nb_qmp_next_event(vm->qmp))) {
				const char *evn = nb_json_str_or(ev, "event");
				if (!strcmp(evn, "BLOCK_JOB_ERROR") ||
				    (!strcmp(evn, "BLOCK_JOB_COMPLETED") &&
				     json_object_get(json_object_get(ev, "data"), "error")))
					r = -EIO;
				json_decref(ev);
			}
			if (r == -EIO)
				break;
			if (!running) {
				r = 0;
				break;
			}
			struct pollfd pf = {.fd = nb_qmp_fd(vm->qmp), .events = POLLIN};
			poll(&pf, 1, 100); /* the job's events wake us; 100 ms re-polls the job list */
			nb_qmp_pump(vm->qmp);
		}
		if (r < 0) {
			snprintf(err, errsz, "the backup job failed");
			unlink(tmp);
			return r;
		}
	} else {
		const char *argv[] = {"qemu-img", "convert", "-q", "-O", "qcow2", disk, tmp, NULL};
		struct nb_buf out;
		nb_buf_init(&out, 64 << 10);
		r = nb_run(argv, 3600 * 1000, &out);
		if (r != 0) {
			snprintf(err, errsz, "qemu-img convert failed: %.160s", out.data ? out.data : "");
			nb_buf_free(&out);
			unlink(tmp);
			return -EIO;
		}
		nb_buf_free(&out);
	}
	if (rename(tmp, target) < 0) {
		r = -errno;
		unlink(tmp);
		snprintf(err, errsz, "rename failed");
		return r;
	}
	return 0;
}

void nb_vm_teardown(struct nb_agent *a, struct nb_vm *vm)
{
	int pid = live_pid(vm), shim = (int)read_num(vm, "shim.pid", 0);

	if (pid) {
		kill(pid, SIGTERM);
		for (int i = 0; i < 300 && live_pid(vm); i++) {
			struct timespec ts = {0, 10 * 1000 * 1000};
			if (i == 200)
				kill(pid, SIGKILL);
			nanosleep(&ts, NULL); /* bounded wait for the exit of a signalled process */
		}
	}
	/* and its shim, which reaps QEMU and records why it ended */
	for (int i = 0; shim > 0 && i < 300 && kill(shim, 0) == 0; i++) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	undo_start(a, vm, false); /* tap, its nft table, cgroups; the disk stays */
}
