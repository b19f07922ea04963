/* QMP commands nubo uses, built on the transport in qmp.h: each builds its
 * arguments, sends, and checks the shape of the reply. */
#ifndef NB_QMP_CMD_H
#define NB_QMP_CMD_H

#include <stdbool.h>
#include <stddef.h>

#include "agent/qmp/qmp.h"

#define NB_QMP_TIMEOUT_MS 5000

/* status: "running", "paused", "shutdown", "prelaunch", ... */
int nb_qmp_query_status(struct nb_qmp *q, char *status, size_t statussz, bool *running);
int nb_qmp_stop(struct nb_qmp *q);
int nb_qmp_cont(struct nb_qmp *q);
int nb_qmp_system_powerdown(struct nb_qmp *q);
int nb_qmp_system_reset(struct nb_qmp *q);
int nb_qmp_quit(struct nb_qmp *q);
/* QEMU's version as "7.2.22". */
int nb_qmp_query_version(struct nb_qmp *q, char *out, size_t outsz);
/* The guest's vCPU count as QEMU reports it (query-cpus-fast). */
int nb_qmp_query_cpu_count(struct nb_qmp *q, int *count);
/* Total guest RAM in bytes (query-memory-size-summary: base-memory). */
int nb_qmp_query_memory(struct nb_qmp *q, long long *bytes);

#endif
