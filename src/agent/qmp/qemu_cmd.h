/* Builds the qemu-system-x86_64 command line for one VM. Pure: no I/O, so
 * golden files pin its output (tests/data/qemu-cmd/). */
#ifndef NB_QEMU_CMD_H
#define NB_QEMU_CMD_H

#include <stdint.h>

struct nb_vm_spec {
	const char *qemu;  /* binary; NULL: "qemu-system-x86_64" */
	const char *id;    /* instance id, also the SMBIOS serial */
	const char *uuid;  /* SMBIOS uuid and -uuid; may be NULL */
	const char *dir;   /* instance dir: qmp.sock, qemu.pid live there */
	const char *accel; /* "kvm" or "tcg"; NULL: "tcg" */
	int vcpus;
	uint64_t memory_mb;
	const char *disk;    /* root.qcow2 overlay */
	const char *kernel;  /* NULL: boot from disk */
	const char *initrd;  /* may be NULL */
	const char *cmdline; /* kernel command line, may be NULL */
	const char *tap;     /* NULL: no NIC */
	int tap_fd;          /* > 2: the tap's open queue, inherited by QEMU
	                      * (-netdev tap,fd=N); 0: QEMU opens tap by name */
	const char *mac;
};

/* *argv_out is NULL-terminated; free with nb_argv_free. The serial console
 * is QEMU's stdio (the shim owns the other end). -EINVAL for a missing id,
 * dir or disk, vcpus outside 1..64, memory_mb below 16 (or above 1 TiB), a
 * bad uuid, mac, tap name or accel, initrd/cmdline without kernel;
 * -ENAMETOOLONG when dir/qmp.sock would not fit a unix socket address. */
int nb_qemu_argv(const struct nb_vm_spec *s, char ***argv_out);
/* Frees argv and its strings; NULL is fine. */
void nb_argv_free(char **argv);

#endif
