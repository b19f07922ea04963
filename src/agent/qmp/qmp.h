/* QMP transport: one connection to a QEMU monitor socket. Handles the
 * greeting, capabilities negotiation, command ids, per-command timeouts and
 * asynchronous events (queued while waiting for a reply). Knows nothing of
 * individual commands: see qmp_cmd.h. Lines longer than NB_QMP_MAX_LINE are
 * a protocol error. Not thread-safe: one user at a time. */
#ifndef NB_QMP_H
#define NB_QMP_H

#include <jansson.h>
#include <stddef.h>

#define NB_QMP_MAX_LINE (1u << 20)

struct nb_qmp;

/* Connects to the unix socket at path, reads the greeting and negotiates
 * capabilities, all within timeout_ms. On success *out is the caller's
 * (free with nb_qmp_close). */
int nb_qmp_connect(const char *path, int timeout_ms, struct nb_qmp **out);
/* Same over an already connected fd (takes ownership of fd); used by tests. */
int nb_qmp_attach(int fd, int timeout_ms, struct nb_qmp **out);
void nb_qmp_close(struct nb_qmp *q);
/* The socket fd, to poll for readability (events or EOF). */
int nb_qmp_fd(const struct nb_qmp *q);

/* Sends {"execute": cmd, "arguments": args, "id": N} and waits for the reply
 * with that id. args is stolen (may be NULL). On success *ret (may be NULL
 * to ignore) gets the "return" value, caller decrefs. A QMP error reply gives
 * -EREMOTEIO with err filled with "Class: desc"; a timeout -ETIMEDOUT; EOF
 * -EPIPE. */
int nb_qmp_execute(struct nb_qmp *q, const char *cmd, json_t *args, int timeout_ms, json_t **ret,
		   char *err, size_t errsz);
/* Reads whatever is ready without blocking and queues events. -EPIPE once
 * the peer is gone. */
int nb_qmp_pump(struct nb_qmp *q);
/* Pops the oldest queued event (caller decrefs) or NULL. */
json_t *nb_qmp_next_event(struct nb_qmp *q);

#endif
