/* Per-VM cgroups: CPU quota and memory limit (and a pids cap). cgroup v2
 * where /sys/fs/cgroup is the unified hierarchy, v1 (cpu, memory, pids
 * controllers) otherwise. Groups live under <root>/.../nubo/<name>. */
#ifndef NB_CGROUP_H
#define NB_CGROUP_H

#include <stdint.h>

struct nb_cg_setting {
	const char *controller; /* "cpu", "memory", "pids"; "" on v2 */
	const char *file;       /* e.g. "cpu.cfs_quota_us" */
	char value[64];
};

#define NB_CG_MAX_SETTINGS 8
#define NB_CG_MAX_DIRS 4

/* CFS period; the quota is vcpus periods, so each vCPU may use one CPU. */
#define NB_CG_CPU_PERIOD_US 100000u
/* The kernel refuses quotas below 1 ms. */
#define NB_CG_MIN_QUOTA_US 1000u
/* Memory beyond the guest's RAM that QEMU itself needs: under TCG the
 * translation cache (-accel tcg,tb-size=64 caps it at 64 MiB), plus QEMU's
 * own heap, device models, I/O buffers and thread stacks (about 40-60 MiB
 * for a small VM). 128 MiB covers both so the kernel never kills a guest
 * for QEMU's bookkeeping, while still bounding a runaway QEMU. */
#define NB_CG_QEMU_OVERHEAD_MB 128u
/* QEMU runs a thread per vCPU plus a worker pool (up to 64) and a few
 * helpers; 1024 leaves room for that and stops a fork bomb. */
#define NB_CG_PIDS_MAX 1024u

/* 2 or 1 for the hierarchy mounted at root (default "/sys/fs/cgroup"); -ENOENT when neither. */
int nb_cgroup_version(const char *root);
/* Pure: the files and values that hold a VM of vcpus and memory_mb to its
 * size (memory limit = guest memory + QEMU overhead). Returns the count. */
int nb_cgroup_settings(int version, int vcpus, uint64_t memory_mb,
		       struct nb_cg_setting out[NB_CG_MAX_SETTINGS]);
/* Pure, lower level: explicit limits. cpu_quota_us per NB_CG_CPU_PERIOD_US
 * (0: no quota), memory_bytes (0: no limit), pids_max (0: no limit). */
int nb_cgroup_limit_settings(int version, uint64_t cpu_quota_us, uint64_t memory_bytes,
			     uint64_t pids_max, struct nb_cg_setting out[NB_CG_MAX_SETTINGS]);
/* Creates the group(s) for name and writes the settings. dirs_out gets the
 * directories a process must join (write its pid to cgroup.procs); returns
 * their count. */
int nb_cgroup_create(const char *root, const char *name, int vcpus, uint64_t memory_mb,
		     char dirs_out[NB_CG_MAX_DIRS][512]);
/* Same with explicit limits (see nb_cgroup_limit_settings). Name is
 * [A-Za-z0-9._-], at most 64 characters. A failed create removes the group. */
int nb_cgroup_create_limits(const char *root, const char *name, uint64_t cpu_quota_us,
			    uint64_t memory_bytes, uint64_t pids_max,
			    char dirs_out[NB_CG_MAX_DIRS][512]);
/* The directories of name's group(s) without touching them (for re-adopting
 * a running VM); returns their count. */
int nb_cgroup_dirs(const char *root, const char *name, char dirs_out[NB_CG_MAX_DIRS][512]);
/* Makes the moves into cgroups that follow in the next few ms cheap: a
 * helper thread takes the kernel's migration lock now, so the RCU grace
 * period the next move would wait out is under way or over (cgroup.c).
 * Returns at once; does nothing where this process's group is not found. */
void nb_cgroup_prime(const char *root);
/* Moves pid into every dir. */
int nb_cgroup_attach(char dirs[][512], int ndirs, int pid);
/* Removes the group(s); missing ones are fine, and so are groups whose
 * processes have exited (it waits briefly for exiting tasks to leave).
 * -EBUSY when live processes remain: stop them first. */
int nb_cgroup_remove(const char *root, const char *name);

#endif
