/* QMP transport: one connection to a QEMU monitor socket. Handles the
 * greeting, capabilities negotiation, command ids, per-command timeouts and
 * asynchronous events (queued while waiting for a reply). Knows nothing of
 * individual commands: see qmp_cmd.h. Lines longer than NB_QMP_MAX_LINE are
 * a protocol error. Not thread-safe: one user at a time. */
#ifndef NB_QMP_H
#define NB_QMP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Longest line (bytes before its '\n') accepted from the peer. */
#define NB_QMP_MAX_LINE (1u << 20)
/* Events kept while nobody reads them; past this the oldest is dropped. */
#define NB_QMP_MAX_EVENTS 256

struct nb_qmp;

/* Connects to the unix socket at path, reads the greeting and negotiates
 * capabilities, all within timeout_ms. On success *out is the caller's
 * (free with nb_qmp_close). */
int nb_qmp_connect(const char *path, int timeout_ms, struct nb_qmp **out);
/* Same over an already connected fd (takes ownership of fd); used by tests. */
int nb_qmp_attach(int fd, int timeout_ms, struct nb_qmp **out);
/* One non-blocking connect to the socket at path: 0 with *fd_out connected
 * (close-on-exec, non-blocking; hand it to nb_qmp_attach once readable),
 * -EAGAIN while nothing listens there yet, else -errno. */
int nb_qmp_try_connect(const char *path, int *fd_out);
/* Closes the socket and frees q with its queued events; NULL is fine. */
void nb_qmp_close(struct nb_qmp *q);
/* The socket fd (still q's), to poll for readability (events or EOF). */
int nb_qmp_fd(const struct nb_qmp *q);

/* Sends {"execute": cmd, "arguments": args, "id": N} and waits for the reply
 * with that id. args is stolen (may be NULL). On success *ret (may be NULL
 * to ignore) gets the "return" value, caller decrefs. A QMP error reply gives
 * -EREMOTEIO with err filled with "Class: desc"; a timeout -ETIMEDOUT; EOF
 * -EPIPE. */
int nb_qmp_execute(struct nb_qmp *q, const char *cmd, json_t *args, int timeout_ms, json_t **ret,
                   char *err, size_t errsz);
/* Reads whatever is ready without blocking and queues events (late replies
 * are dropped). -EPIPE once the peer is gone (events read before the EOF
 * stay queued), -EPROTO on a bad line; both stick. */
int nb_qmp_pump(struct nb_qmp *q);
/* Pops the oldest queued event (caller decrefs) or NULL. */
json_t *nb_qmp_next_event(struct nb_qmp *q);
/* How many events were dropped because the queue was full. */
uint64_t nb_qmp_events_dropped(const struct nb_qmp *q);
/* Text of the last failure ("Class: desc" for a QMP error), "" after a
 * success; borrowed, valid until the next call on q. */
const char *nb_qmp_last_error(const struct nb_qmp *q);

#endif
