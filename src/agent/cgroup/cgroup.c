/* Per-VM cgroups on v1 (one directory per controller) or v2 (one directory
 * in the unified tree). Every value written is computed by the pure
 * settings functions so tests can pin them without a cgroupfs. */
#include "agent/cgroup/cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

#define DEFAULT_ROOT "/sys/fs/cgroup"
#define GROUP_PARENT "nubo"
#define NAME_MAX_LEN 64
#define MAX_VCPUS 1024
#define MAX_MEMORY_MB (16ull << 20) /* 16 TiB */
#define MAX_PIDS 1000000
/* How long remove waits for exiting tasks to leave a group (ms). */
#define REMOVE_WAIT_MS 2000

static const char *const v1_controllers[] = {"cpu", "memory", "pids"};

static const char *root_or_default(const char *root)
{
	return root && *root ? root : DEFAULT_ROOT;
}

static bool name_valid(const char *name)
{
	size_t n;

	if (!name)
		return false;
	n = strlen(name);
	if (n == 0 || n > NAME_MAX_LEN || !strcmp(name, ".") || !strcmp(name, ".."))
		return false;
	for (const char *p = name; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

int nb_cgroup_version(const char *root)
{
	char path[PATH_MAX];
	const char *r = root_or_default(root);

	if ((size_t)snprintf(path, sizeof(path), "%s/cgroup.controllers", r) >= sizeof(path))
		return -ENAMETOOLONG;
	if (nb_path_exists(path))
		return 2;
	for (size_t i = 0; i < NB_ARRAY_SIZE(v1_controllers); i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s/%s/cgroup.procs", r,
		                     v1_controllers[i]) >= sizeof(path))
			return -ENAMETOOLONG;
		if (nb_path_exists(path))
			return 1;
	}
	return -ENOENT;
}

static int add_setting(struct nb_cg_setting *out, int n, const char *controller, const char *file,
                       const char *value)
{
	if (n < 0)
		return n;
	if (n >= NB_CG_MAX_SETTINGS)
		return -ENOSPC;
	out[n].controller = controller;
	out[n].file = file;
	nb_strlcpy(out[n].value, value, sizeof(out[n].value));
	return n + 1;
}

/* A number, or the "no limit" word when v is 0. */
static const char *num_or(uint64_t v, const char *unlimited, char buf[32])
{
	if (!v)
		return unlimited;
	snprintf(buf, 32, "%" PRIu64, v);
	return buf;
}

int nb_cgroup_limit_settings(int version, uint64_t cpu_quota_us, uint64_t memory_bytes,
                             uint64_t pids_max, struct nb_cg_setting out[NB_CG_MAX_SETTINGS])
{
	char num[32], cpu[64];
	int n = 0;

	if (version != 1 && version != 2)
		return -EINVAL;
	if (cpu_quota_us != 0 && (cpu_quota_us < NB_CG_MIN_QUOTA_US ||
	                          cpu_quota_us > (uint64_t)MAX_VCPUS * NB_CG_CPU_PERIOD_US))
		return -EINVAL;
	if (memory_bytes != 0 &&
	    (memory_bytes < (1u << 20) || memory_bytes > (MAX_MEMORY_MB << 20)))
		return -EINVAL;
	if (pids_max > MAX_PIDS)
		return -EINVAL;
	if (version == 1) {
		snprintf(num, sizeof(num), "%u", (unsigned)NB_CG_CPU_PERIOD_US);
		/* The period first: the kernel checks the quota against it. */
		n = add_setting(out, n, "cpu", "cpu.cfs_period_us", num);
		n = add_setting(out, n, "cpu", "cpu.cfs_quota_us", num_or(cpu_quota_us, "-1", num));
		if (memory_bytes)
			n = add_setting(out, n, "memory", "memory.limit_in_bytes",
			                num_or(memory_bytes, "-1", num));
		return add_setting(out, n, "pids", "pids.max", num_or(pids_max, "max", num));
	}
	if (cpu_quota_us)
		snprintf(cpu, sizeof(cpu), "%" PRIu64 " %u", cpu_quota_us,
		         (unsigned)NB_CG_CPU_PERIOD_US);
	else
		snprintf(cpu, sizeof(cpu), "max %u", (unsigned)NB_CG_CPU_PERIOD_US);
	n = add_setting(out, n, "", "cpu.max", cpu);
	n = add_setting(out, n, "", "memory.max", num_or(memory_bytes, "max", num));
	return add_setting(out, n, "", "pids.max", num_or(pids_max, "max", num));
}

int nb_cgroup_settings(int version, int vcpus, uint64_t memory_mb,
                       struct nb_cg_setting out[NB_CG_MAX_SETTINGS])
{
	if (vcpus < 1 || vcpus > MAX_VCPUS || memory_mb < 1 || memory_mb > MAX_MEMORY_MB)
		return -EINVAL;
	/* Each vCPU is one thread that may use one whole CPU; the I/O threads
	 * share the same budget, so a VM never takes more than its size. */
	return nb_cgroup_limit_settings(version, (uint64_t)vcpus * NB_CG_CPU_PERIOD_US,
	                                (memory_mb + NB_CG_QEMU_OVERHEAD_MB) << 20, NB_CG_PIDS_MAX,
	                                out);
}

static int group_dir(const char *root, int version, const char *controller, const char *name,
                     char *out, size_t outsz)
{
	int n;

	if (version == 1)
		n = snprintf(out, outsz, "%s/%s/" GROUP_PARENT "/%s", root, controller, name);
	else
		n = snprintf(out, outsz, "%s/" GROUP_PARENT "/%s", root, name);
	return n < 0 || (size_t)n >= outsz ? -ENAMETOOLONG : 0;
}

/* Writes one value with a single write(2), as cgroupfs wants. */
static int write_value(const char *dir, const char *file, const char *value)
{
	char path[PATH_MAX];
	int fd, r = 0;
	size_t len = strlen(value);
	ssize_t n;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, file) >= sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	do
		n = write(fd, value, len);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		r = -errno;
	else if ((size_t)n != len)
		r = -EIO;
	close(fd);
	return r;
}

/* v2: a child group only gets the controllers its parent delegates. */
static int v2_enable_controllers(const char *dir)
{
	static const char *const ctl[] = {"+cpu", "+memory", "+pids"};

	for (size_t i = 0; i < NB_ARRAY_SIZE(ctl); i++) {
		int r = write_value(dir, "cgroup.subtree_control", ctl[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

int nb_cgroup_dirs(const char *root, const char *name, char dirs_out[NB_CG_MAX_DIRS][512])
{
	const char *r = root_or_default(root);
	int version, n = 0;

	if (!name_valid(name))
		return -EINVAL;
	version = nb_cgroup_version(r);
	if (version < 0)
		return version;
	if (version == 2) {
		int e = group_dir(r, 2, "", name, dirs_out[0], 512);
		return e < 0 ? e : 1;
	}
	for (size_t i = 0; i < NB_ARRAY_SIZE(v1_controllers); i++) {
		int e = group_dir(r, 1, v1_controllers[i], name, dirs_out[n], 512);
		if (e < 0)
			return e;
		n++;
	}
	return n;
}

int nb_cgroup_create_limits(const char *root, const char *name, uint64_t cpu_quota_us,
                            uint64_t memory_bytes, uint64_t pids_max,
                            char dirs_out[NB_CG_MAX_DIRS][512])
{
	struct nb_cg_setting set[NB_CG_MAX_SETTINGS];
	char parent[PATH_MAX];
	const char *rt = root_or_default(root);
	int version, ndirs, nset, r;

	if (!name_valid(name))
		return -EINVAL;
	version = nb_cgroup_version(rt);
	if (version < 0)
		return version;
	nset = nb_cgroup_limit_settings(version, cpu_quota_us, memory_bytes, pids_max, set);
	if (nset < 0)
		return nset;
	ndirs = nb_cgroup_dirs(rt, name, dirs_out);
	if (ndirs < 0)
		return ndirs;
	if (version == 2) {
		if ((size_t)snprintf(parent, sizeof(parent), "%s/" GROUP_PARENT, rt) >=
		    sizeof(parent))
			return -ENAMETOOLONG;
		r = v2_enable_controllers(rt);
		if (r < 0)
			return r;
		if (mkdir(parent, 0755) < 0 && errno != EEXIST)
			return -errno;
		r = v2_enable_controllers(parent);
		if (r < 0)
			return r;
	}
	for (int i = 0; i < ndirs; i++) {
		if (version == 1) {
			if ((size_t)snprintf(parent, sizeof(parent), "%s/%s/" GROUP_PARENT, rt,
			                     v1_controllers[i]) >= sizeof(parent))
				return -ENAMETOOLONG;
			if (mkdir(parent, 0755) < 0 && errno != EEXIST)
				return -errno;
		}
		/* An existing group is kept (a restarted agent re-creates it). */
		if (mkdir(dirs_out[i], 0755) < 0 && errno != EEXIST) {
			r = -errno;
			goto fail;
		}
	}
	for (int i = 0; i < nset; i++) {
		const char *dir = dirs_out[0];
		if (version == 1) {
			for (int d = 0; d < ndirs; d++)
				if (!strcmp(v1_controllers[d], set[i].controller))
					dir = dirs_out[d];
		}
		r = write_value(dir, set[i].file, set[i].value);
		if (r < 0)
			goto fail;
	}
	return ndirs;
fail:
	nb_cgroup_remove(rt, name);
	return r;
}

int nb_cgroup_create(const char *root, const char *name, int vcpus, uint64_t memory_mb,
                     char dirs_out[NB_CG_MAX_DIRS][512])
{
	if (vcpus < 1 || vcpus > MAX_VCPUS || memory_mb < 1 || memory_mb > MAX_MEMORY_MB)
		return -EINVAL;
	return nb_cgroup_create_limits(root, name, (uint64_t)vcpus * NB_CG_CPU_PERIOD_US,
	                               (memory_mb + NB_CG_QEMU_OVERHEAD_MB) << 20, NB_CG_PIDS_MAX,
	                               dirs_out);
}

int nb_cgroup_attach(char dirs[][512], int ndirs, int pid)
{
	char value[32];

	if (ndirs < 0 || ndirs > NB_CG_MAX_DIRS || pid <= 0)
		return -EINVAL;
	snprintf(value, sizeof(value), "%d", pid);
	for (int i = 0; i < ndirs; i++) {
		int r = write_value(dirs[i], "cgroup.procs", value);
		if (r < 0)
			return r;
	}
	return 0;
}

/* True when the group's cgroup.procs lists no process. */
static bool group_empty(const char *dir)
{
	char path[PATH_MAX];
	char *data = NULL;
	size_t len = 0;
	bool empty;

	if ((size_t)snprintf(path, sizeof(path), "%s/cgroup.procs", dir) >= sizeof(path))
		return false;
	if (nb_read_file(path, 1 << 20, &data, &len) < 0)
		return false;
	empty = len == 0;
	free(data);
	return empty;
}

static int remove_dir(const char *dir)
{
	int64_t deadline = nb_now_ms() + REMOVE_WAIT_MS;

	for (;;) {
		if (rmdir(dir) == 0 || errno == ENOENT)
			return 0;
		if (errno != EBUSY)
			return -errno;
		/* Live processes: the caller must stop them first. A group that
		 * only holds exiting tasks empties within moments. */
		if (!group_empty(dir) || nb_now_ms() >= deadline)
			return -EBUSY;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

int nb_cgroup_remove(const char *root, const char *name)
{
	char dirs[NB_CG_MAX_DIRS][512];
	int ndirs, r = 0;

	ndirs = nb_cgroup_dirs(root, name, dirs);
	if (ndirs == -ENOENT)
		return 0;
	if (ndirs < 0)
		return ndirs;
	for (int i = 0; i < ndirs; i++) {
		int e = remove_dir(dirs[i]);
		if (e < 0 && r == 0)
			r = e;
	}
	return r;
}

/* ---- priming the next migration ----
 * Every move of a process into a cgroup (cgroup.procs) takes the global
 * cgroup_threadgroup_rwsem for writing, and the first writer after a quiet
 * spell waits out a whole RCU grace period first (rcu_sync): 7-15 ms
 * measured here, on a start's path when the shim's child joins its VM's
 * groups. Writers that come while one is waiting, or within a grace period
 * after the last one, share it. So a start primes at its beginning: a
 * helper thread writes its own thread id to its own group's tasks file (a
 * move to where it already is, which takes the lock all the same); by the
 * time the child joins, a few ms later, the grace period is over or under
 * way. Measured: the child's joins took 14.5 ms unprimed, 2.5 ms primed 5 ms
 * before and 0.6 ms primed 15 ms before. */
static char prime_path[PATH_MAX];
static pthread_once_t prime_once = PTHREAD_ONCE_INIT;
static const char *prime_root;

/* The tasks file (v1, any hierarchy: the lock is global) or cgroup.threads
 * (v2) of this process's own group. */
static void prime_find(void)
{
	const char *rt = root_or_default(prime_root);
	FILE *f = fopen("/proc/self/cgroup", "re");
	char line[PATH_MAX];
	int version = nb_cgroup_version(rt);

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *ctl = strchr(line, ':'), *path = ctl ? strchr(ctl + 1, ':') : NULL;
		if (!path)
			continue;
		*path++ = '\0';
		ctl++;
		path[strcspn(path, "\n")] = '\0';
		if (version == 2 && !*ctl) {
			snprintf(prime_path, sizeof(prime_path), "%s%s/cgroup.threads", rt, path);
			break;
		}
		if (version == 1 && !strcmp(ctl, "pids")) {
			snprintf(prime_path, sizeof(prime_path), "%s/pids%s/tasks", rt, path);
			break;
		}
	}
	fclose(f);
}

static void *prime_thread(void *arg)
{
	char tid[24];
	int fd = open(prime_path, O_WRONLY | O_CLOEXEC);
	(void)arg;

	if (fd >= 0) {
		int n = snprintf(tid, sizeof(tid), "%ld", (long)gettid());
		if (write(fd, tid, (size_t)n) < 0) {
			/* nothing to undo: the lock was taken before any check */
		}
		close(fd);
	}
	return NULL;
}

void nb_cgroup_prime(const char *root)
{
	pthread_attr_t at;
	pthread_t t;

	prime_root = root;
	pthread_once(&prime_once, prime_find);
	if (!prime_path[0] || pthread_attr_init(&at) != 0)
		return;
	if (pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED) == 0)
		pthread_create(&t, &at, prime_thread, NULL);
	pthread_attr_destroy(&at);
}
