/* The HTTP edge shared by nubod and nubo-agent: libmicrohttpd with a thread
 * per connection (long polls and console streams block), JSON replies in the
 * native error format, bearer tokens, and raw byte streams after an HTTP
 * Upgrade (the serial console). */
#ifndef NB_HTTP_H
#define NB_HTTP_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define NB_HTTP_MAX_JSON_BODY (1u << 20)

/* Per-request state kept across MHD's calls of one request. */
struct nb_http_req {
	struct nb_buf body;    /* JSON bodies, capped at NB_HTTP_MAX_JSON_BODY */
	bool too_large;
	void *upload;          /* a streamed upload (blobs) in progress, or NULL */
	void (*upload_abort)(void *upload); /* drops it when the request ends unfinished */
	int early_status;      /* an error decided before the body arrived */
	json_t *early_error;
	void *auth;            /* json_t * of the authenticated principal */
	bool sigv4;            /* signed with an access key: checked once the body is in */
};

/* Starts a daemon on host:port ("127.0.0.1", 8787) calling handler; *out is
 * the caller's (stop with MHD_stop_daemon). */
int nb_http_start(const char *listen, MHD_AccessHandlerCallback handler, void *cls,
		  struct MHD_Daemon **out);
/* As nb_http_start, for S3: the handler gets the path and query values still
 * %-encoded (only MHD's '+' to space remains in query values), and done is
 * the request-completed callback (per-request state is the caller's). */
int nb_http_start_raw(const char *listen, MHD_AccessHandlerCallback handler, void *cls,
		      MHD_RequestCompletedCallback done, void *done_cls, struct MHD_Daemon **out);
/* Splits "host:port"; host may be empty for any address. */
int nb_http_parse_listen(const char *listen, char *host, size_t hostsz, int *port);

struct nb_http_req *nb_http_req_new(void);
/* MHD's request-completed callback: frees the request state. */
void nb_http_req_done(void *cls, struct MHD_Connection *c, void **req_cls,
		      enum MHD_RequestTerminationCode toe);

/* Replies. Each takes ownership of the json it is given. */
enum MHD_Result nb_http_json(struct MHD_Connection *c, unsigned status, json_t *body);
/* err: a -NB_E_* code or -errno; msg: what was wrong. */
enum MHD_Result nb_http_error(struct MHD_Connection *c, int err, const char *msg);
enum MHD_Result nb_http_text(struct MHD_Connection *c, unsigned status, const char *type,
			     const char *data, size_t len);
enum MHD_Result nb_http_file(struct MHD_Connection *c, const char *path, const char *type);
/* 200 with length bytes of fd from offset (sendfile); takes fd, closing it
 * on failure too. */
enum MHD_Result nb_http_fd(struct MHD_Connection *c, int fd, uint64_t offset, uint64_t length,
			   const char *type);
enum MHD_Result nb_http_empty(struct MHD_Connection *c, unsigned status);

/* The bearer token of the request or NULL. */
const char *nb_http_bearer(struct MHD_Connection *c);
/* Parses the collected body as a JSON object; NULL (and err) when it is not. */
json_t *nb_http_body_json(struct nb_http_req *r, char *err, size_t errsz);
/* Query argument or NULL. */
const char *nb_http_arg(struct MHD_Connection *c, const char *key);

/* Answers 101 and, once MHD hands over the socket, runs proxy(sock, arg)
 * in its own thread; proxy owns arg and must return when either side ends. */
typedef void (*nb_http_stream_fn)(int sock, const char *extra, size_t extra_len, void *arg);
enum MHD_Result nb_http_upgrade(struct MHD_Connection *c, const char *protocol,
				nb_http_stream_fn fn, void *arg);
bool nb_http_wants_upgrade(struct MHD_Connection *c, const char *protocol);

/* Ends every upgraded stream (shutdown of its socket): for a stopping daemon. */
void nb_http_streams_close_all(void);
/* Copies bytes both ways between a and b until one side closes. */
void nb_splice(int a, int b);
/* Opens a raw stream to url's host:port with an HTTP/1.1 upgrade of path
 * (bearer token), returning the socket after a 101; -errno or -NB_E_*. */
int nb_http_client_upgrade(const char *base_url, const char *path, const char *token,
			   const char *protocol, int timeout_ms);

#endif
