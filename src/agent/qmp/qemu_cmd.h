/* Builds the qemu-system-x86_64 command line for one VM. Pure: no I/O, so
 * golden files pin its output (tests/data/qemu-cmd/). */
#ifndef NB_QEMU_CMD_H
#define NB_QEMU_CMD_H

#include <stdint.h>

struct nb_vm_spec {
	const char *qemu;  /* binary, e.g. "qemu-system-x86_64" */
	const char *id;    /* instance id, also the SMBIOS serial */
	const char *uuid;  /* SMBIOS uuid */
	const char *dir;   /* instance dir: qmp.sock, qemu.pid live there */
	const char *accel; /* "kvm" or "tcg" */
	int vcpus;
	uint64_t memory_mb;
	const char *disk;    /* root.qcow2 overlay */
	const char *kernel;  /* NULL: boot from disk */
	const char *initrd;  /* may be NULL */
	const char *cmdline; /* kernel command line, may be NULL */
	const char *tap;     /* NULL: no NIC */
	const char *mac;
};

/* *argv_out is NULL-terminated; free with nb_argv_free. The serial console
 * is QEMU's stdio (the shim owns the other end). */
int nb_qemu_argv(const struct nb_vm_spec *s, char ***argv_out);
void nb_argv_free(char **argv);

#endif
