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

/* 2 or 1 for the hierarchy mounted at root (default "/sys/fs/cgroup"); -ENOENT when neither. */
int nb_cgroup_version(const char *root);
/* Pure: the files and values that hold a VM of vcpus and memory_mb to its
 * size (memory limit = guest memory + QEMU overhead). Returns the count. */
int nb_cgroup_settings(int version, int vcpus, uint64_t memory_mb,
		       struct nb_cg_setting out[NB_CG_MAX_SETTINGS]);
/* Creates the group(s) for name and writes the settings. dirs_out gets the
 * directories a process must join (write its pid to cgroup.procs); returns
 * their count. */
int nb_cgroup_create(const char *root, const char *name, int vcpus, uint64_t memory_mb,
		     char dirs_out[NB_CG_MAX_DIRS][512]);
/* Moves pid into every dir. */
int nb_cgroup_attach(char dirs[][512], int ndirs, int pid);
/* Removes the group(s); missing ones are fine. */
int nb_cgroup_remove(const char *root, const char *name);

#endif
