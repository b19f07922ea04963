/* QMP commands nubo uses, built on the transport in qmp.h: each builds its
 * arguments, sends, and checks the shape of the reply. All return 0 or a
 * negative errno: -EREMOTEIO for a QMP error (nb_qmp_last_error has
 * "Class: desc"), -EPROTO for a reply of the wrong shape, -ETIMEDOUT after
 * NB_QMP_TIMEOUT_MS, -EPIPE when QEMU is gone. */
#ifndef NB_QMP_CMD_H
#define NB_QMP_CMD_H

#include <stdbool.h>
#include <stddef.h>

#include "agent/qmp/qmp.h"

#define NB_QMP_TIMEOUT_MS 5000

/* status: "running", "paused", "shutdown", "prelaunch", ... copied into the
 * caller's buffer (-ERANGE when too small); status and running may be NULL. */
int nb_qmp_query_status(struct nb_qmp *q, char *status, size_t statussz, bool *running);
/* Pauses the vCPUs (QEMU then sends a STOP event). */
int nb_qmp_stop(struct nb_qmp *q);
/* Resumes the vCPUs (RESUME event). */
int nb_qmp_cont(struct nb_qmp *q);
/* Presses the ACPI power button; the guest decides (POWERDOWN event). */
int nb_qmp_system_powerdown(struct nb_qmp *q);
/* Hard reset (RESET event). */
int nb_qmp_system_reset(struct nb_qmp *q);
/* Makes QEMU exit. Success also when QEMU closed the socket before its
 * reply reached us: exiting is what was asked. */
int nb_qmp_quit(struct nb_qmp *q);
/* QEMU's version as "7.2.22" into the caller's buffer (-ERANGE if short). */
int nb_qmp_query_version(struct nb_qmp *q, char *out, size_t outsz);
/* The guest's vCPU count as QEMU reports it (query-cpus-fast). */
int nb_qmp_query_cpu_count(struct nb_qmp *q, int *count);
/* Total guest RAM in bytes (query-memory-size-summary: base-memory plus
 * plugged-memory when QEMU reports it). */
int nb_qmp_query_memory(struct nb_qmp *q, long long *bytes);

#endif
