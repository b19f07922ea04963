/* HTTP client calls (libcurl) used between nubod and its agents. */
#ifndef NB_HTTPC_H
#define NB_HTTPC_H

#include <jansson.h>

#include "common/buf.h"

/* Once per process, before threads start. */
void nb_httpc_global_init(void);
/* method GET/POST/PUT/DELETE on url with a bearer token (may be NULL) and a
 * JSON body (may be NULL, not stolen). *status gets the HTTP status; the
 * response body goes to out (may be NULL). 0, or -errno when the peer could
 * not be reached / timed out. */
int nb_httpc(const char *method, const char *url, const char *token, const json_t *body,
	     int timeout_ms, long *status, struct nb_buf *out);
/* Downloads url into path (created 0600), streaming; 0 or negative. */
int nb_httpc_download(const char *url, const char *token, const char *path, long *status);

#endif
