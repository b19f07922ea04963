#include "api/v1.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/ec2.h"
#include "api/http.h"
#include "common/err.h"
#include "common/httpc.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "s3/engine.h"

#define MAX_SEGS 6

struct route {
	const char *method;
	const char *seg[MAX_SEGS];
	int nseg;
};

/* Splits "/v1/instances/i-1/stop" into its segments (in place in buf). */
static int split_path(const char *url, char *buf, size_t bufsz, char *segs[MAX_SEGS])
{
	int n = 0;

	if (nb_strlcpy(buf, url, bufsz) >= bufsz)
		return -1;
	char *s = buf;
	while (*s) {
		while (*s == '/')
			*s++ = '\0';
		if (!*s)
			break;
		if (n == MAX_SEGS)
			return -1;
		segs[n++] = s;
		while (*s && *s != '/')
			s++;
	}
	return n;
}

static bool is(const char *a, const char *b)
{
	return a && !strcmp(a, b);
}

static enum MHD_Result reply(struct MHD_Connection *c, int r, json_t *out, const char *err,
			     unsigned ok_status)
{
	if (r < 0) {
		json_decref(out);
		return nb_http_error(c, r, err);
	}
	return nb_http_json(c, ok_status, out ? out : json_object());
}

/* Millisecond times of a listing as ISO 8601, as every other answer has them. */
static json_t *iso_times(json_t *rows)
{
	json_t *row;
	size_t i;

	json_array_foreach(rows, i, row)
	{
		const char *k;
		json_t *v;
		json_object_foreach(row, k, v)
		{
			char buf[32];
			if ((!strcmp(k, "created_at") || !strcmp(k, "last_used")) && json_is_integer(v)) {
				nb_iso8601(json_integer_value(v), buf, sizeof(buf));
				json_object_set_new(row, k, json_string(buf));
			}
		}
	}
	return rows;
}

/* ---- authentication ---- */

static bool signed_request(struct MHD_Connection *c)
{
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");

	return (h && !strncmp(h, "AWS4-HMAC-SHA256", 16)) ||
	       MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "X-Amz-Signature");
}

/* SigV4 with an access key (service "nubo"); body NULL: unsigned payload. */
static int auth_sigv4(struct nb_v1 *v, struct MHD_Connection *c, const char *method,
		      const char *url, struct nb_http_req *rq, const char *body, size_t len,
		      char *err, size_t errsz)
{
	json_t *who = NULL;
	int r = nb_ec2_authenticate(v->ec2, c, method, url, body, len, "nubo", &who, err, errsz);

	if (r < 0)
		return r;
	json_decref(rq->auth);
	rq->auth = who;
	rq->sigv4 = false;
	return 0;
}

static int auth_user(struct nb_v1 *v, struct MHD_Connection *c, struct nb_http_req *rq)
{
	const char *tok = nb_http_bearer(c);
	json_t *who = NULL;

	if (signed_request(c)) {
		rq->sigv4 = true;
		return 0;
	}
	if (!tok || strlen(tok) > 256 || nb_store_token_lookup(v->ctl->st, tok, &who) < 0)
		return -NB_E_AUTH;
	rq->auth = who;
	return 0;
}

static int auth_agent(struct nb_v1 *v, struct MHD_Connection *c, struct nb_http_req *rq)
{
	const char *tok = nb_http_bearer(c);
	json_t *host = NULL;

	if (!tok || strlen(tok) > 256 || nb_store_host_by_token(v->ctl->st, tok, &host) < 0)
		return -NB_E_AUTH;
	rq->auth = host;
	return 0;
}

static const char *account_of(struct nb_http_req *rq)
{
	return nb_json_str_or(rq->auth, "account_id");
}

static bool can_write(struct nb_http_req *rq)
{
	return strcmp(nb_json_str_or(rq->auth, "role"), "read-only") != 0;
}

static bool is_admin(struct nb_http_req *rq)
{
	return is(nb_json_str_or(rq->auth, "role"), "admin") &&
	       is(nb_json_str_or(rq->auth, "account"), "admin");
}

/* ---- blobs ---- */

static void upload_abort(void *u)
{
	nb_core_upload_abort(u);
}

static int upload_begin(struct nb_v1 *v, struct MHD_Connection *c, struct nb_http_req *rq)
{
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
	int64_t length = -1;
	char *end;

	if (cl && *cl) {
		errno = 0;
		unsigned long long n = strtoull(cl, &end, 10);
		if (!*end && !errno && n <= INT64_MAX)
			length = (int64_t)n;
	}
	int r = nb_core_upload_begin(v->ctl, length, (struct nb_core_upload **)&rq->upload);
	if (r == 0)
		rq->upload_abort = upload_abort;
	return r;
}

static enum MHD_Result upload_finish(struct MHD_Connection *c, struct nb_http_req *rq)
{
	struct nb_core_upload *u = rq->upload;
	uint64_t size = 0;
	char hex[65];
	int r;

	rq->upload = NULL; /* commit consumes it */
	r = nb_core_upload_commit(u, account_of(rq), hex, &size);
	if (r < 0)
		return nb_http_error(c, r > -4096 ? r : -NB_E_INTERNAL,
				     "storing the upload failed");
	return nb_http_json(c, 201, json_pack("{s:s, s:I}", "blob", hex, "size", (json_int_t)size));
}

/* ---- console ---- */

struct console_arg {
	int agent_fd;
};

static void console_stream(int sock, const char *extra, size_t extra_len, void *p)
{
	struct console_arg *a = p;

	if (extra_len)
		nb_write_all(a->agent_fd, extra, extra_len);
	nb_splice(sock, a->agent_fd);
	close(a->agent_fd);
	free(a);
}

static enum MHD_Result console(struct nb_v1 *v, struct MHD_Connection *c, struct nb_http_req *rq,
			       const char *id)
{
	char err[NB_ERRSZ] = "", path[128];
	json_t *host = NULL;
	struct console_arg *a;
	int fd, r = nb_core_instance_host(v->ctl, account_of(rq), id, &host, err, sizeof(err));

	if (r < 0)
		return nb_http_error(c, r, err);
	snprintf(path, sizeof(path), "/v1/instances/%s/console", id);
	fd = nb_http_client_upgrade(nb_json_str_or(host, "address"), path,
				    nb_json_str_or(host, "agent_token"), "nubo-console", 5000);
	json_decref(host);
	if (fd < 0) {
		snprintf(err, sizeof(err), "the console of %s is not available (%s)", id,
			 fd == -NB_E_STATE || fd == -NB_E_NOT_FOUND ? "not running"
								    : "host unreachable");
		return nb_http_error(c, fd == -NB_E_NOT_FOUND ? -NB_E_STATE : fd, err);
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		close(fd);
		return MHD_NO;
	}
	a->agent_fd = fd;
	return nb_http_upgrade(c, "nubo-console", console_stream, a);
}

static enum MHD_Result console_output(struct nb_v1 *v, struct MHD_Connection *c,
				      struct nb_http_req *rq, const char *id)
{
	char err[NB_ERRSZ] = "";
	struct nb_buf out;
	enum MHD_Result ret;
	int r;

	nb_buf_init(&out, 4u << 20);
	r = nb_core_console_output(v->ctl, account_of(rq), id, &out, err, sizeof(err));
	if (r < 0)
		ret = nb_http_error(c, r, err);
	else
		ret = nb_http_text(c, 200, "text/plain; charset=utf-8", out.data ? out.data : "",
				   out.len);
	nb_buf_free(&out);
	return ret;
}

/* ---- users of an account ---- */

/* /v1/accounts/{account}/users[/{user}]: the cloud's admins for any account,
 * an account's admins for their own (another account is NotFound to them);
 * members and read-only users for none. */
static enum MHD_Result users_route(struct nb_v1 *v, struct MHD_Connection *c,
				   const char *method, char **seg, int n, struct nb_http_req *rq)
{
	const char *acct = seg[2];
	char err[NB_ERRSZ] = "";
	json_t *out = NULL, *body;
	int r;

	if (!is_admin(rq)) {
		if (!is(nb_json_str_or(rq->auth, "role"), "admin"))
			return nb_http_error(c, -NB_E_FORBIDDEN,
					     "only the account's admins manage its users");
		if (!is(acct, account_of(rq)) && !is(acct, nb_json_str_or(rq->auth, "account"))) {
			snprintf(err, sizeof(err), "account '%s' not found", acct);
			return nb_http_error(c, -NB_E_NOT_FOUND, err);
		}
	}
	if (n == 4 && is(method, "GET")) {
		r = nb_core_users(v->ctl, acct, &out, err, sizeof(err));
		return reply(c, r, out, err, 200);
	}
	if (n == 5 && is(method, "DELETE")) {
		r = nb_core_user_delete(v->ctl, acct, seg[4], err, sizeof(err));
		return r < 0 ? nb_http_error(c, r, err) : nb_http_empty(c, 204);
	}
	if ((n == 4 && is(method, "POST")) || (n == 5 && is(method, "PUT"))) {
		body = nb_http_body_json(rq, err, sizeof(err));
		if (!body)
			return nb_http_error(c, -NB_E_INVALID, err);
		if (n == 4)
			r = nb_core_user_create(v->ctl, acct, nb_json_str(body, "name"),
						nb_json_str(body, "role") ? nb_json_str(body, "role")
									  : "member",
						&out, err, sizeof(err));
		else
			r = nb_core_user_set_role(v->ctl, acct, seg[4], nb_json_str(body, "role"), &out,
						  err, sizeof(err));
		json_decref(body);
		return reply(c, r, out, err, n == 4 ? 201 : 200);
	}
	return nb_http_error(c, -NB_E_NOT_FOUND, "no such API call");
}

/* ---- dispatch ---- */

static enum MHD_Result dispatch(struct nb_v1 *v, struct MHD_Connection *c, const char *method,
				char **seg, int n, struct nb_http_req *rq)
{
	struct nb_ctl *ctl = v->ctl;
	char err[NB_ERRSZ] = "";
	json_t *out = NULL, *body = NULL;
	enum MHD_Result ret;
	int r;
	bool get = is(method, "GET"), post = is(method, "POST"), del = is(method, "DELETE");
	bool put = is(method, "PUT");

	if (n >= 2 && is(seg[1], "agent")) {
		if (n == 3 && is(seg[2], "desired") && get) {
			uint64_t since = 0, wait = 0;
			const char *g = nb_http_arg(c, "generation"), *w = nb_http_arg(c, "wait");
			if ((g && nb_parse_u64(g, &since) < 0) || (w && nb_parse_u64(w, &wait) < 0))
				return nb_http_error(c, -NB_E_INVALID, "bad generation or wait");
			r = nb_core_agent_desired(ctl, nb_json_str_or(rq->auth, "id"),
						  (int64_t)since, wait > 60 ? 60 : (int)wait, &out);
			return reply(c, r, out, "desired state unavailable", 200);
		}
		if (n == 3 && is(seg[2], "report") && post) {
			body = nb_http_body_json(rq, err, sizeof(err));
			if (!body)
				return nb_http_error(c, -NB_E_INVALID, err);
			r = nb_core_agent_report(ctl, nb_json_str_or(rq->auth, "id"), body);
			json_decref(body);
			return reply(c, r, json_pack("{s:b}", "ok", 1), "report failed", 200);
		}
		if (n == 4 && is(seg[2], "blobs") && get) {
			struct nb_s3_reader rd;
			if (strlen(seg[3]) != 64 || strspn(seg[3], "0123456789abcdef") != 64)
				return nb_http_error(c, -NB_E_INVALID, "bad blob id");
			r = nb_core_blob_open(ctl, seg[3], &rd);
			if (r < 0) {
				nb_s3_reader_close(&rd);
				return nb_http_error(c, r == -NB_E_NOT_FOUND ? r : -NB_E_INTERNAL,
						     "no such blob");
			}
			int fd = rd.fd;
			uint64_t off = rd.offset, len = rd.length;
			rd.fd = -1; /* the response owns it */
			nb_s3_reader_close(&rd);
			return nb_http_fd(c, fd, off, len, "application/octet-stream");
		}
		return nb_http_error(c, -NB_E_NOT_FOUND, "no such agent call");
	}

	if ((post || put || del) && !can_write(rq))
		return nb_http_error(c, -NB_E_FORBIDDEN, "read-only users cannot change anything");

	if (n >= 2 && is(seg[1], "instances")) {
		if (n == 2 && get) {
			const char *state = nb_http_arg(c, "state"), *all = nb_http_arg(c, "all");
			r = nb_core_instances(ctl, account_of(rq), state, all && is(all, "1"), &out);
			return reply(c, r, out, "listing failed", 200);
		}
		if (n == 2 && post) {
			body = nb_http_body_json(rq, err, sizeof(err));
			if (!body)
				return nb_http_error(c, -NB_E_INVALID, err);
			r = nb_core_run(ctl, account_of(rq), body, &out, err, sizeof(err));
			json_decref(body);
			return reply(c, r, out, err, 201);
		}
		if (n == 3 && get) {
			r = nb_core_instance(ctl, account_of(rq), seg[2], &out, err, sizeof(err));
			return reply(c, r, out, err, 200);
		}
		if (n == 3 && del) {
			r = nb_core_action(ctl, account_of(rq), seg[2], "terminate", NULL, &out, err,
					   sizeof(err));
			return reply(c, r, out, err, 200);
		}
		if (n == 4 && get && is(seg[3], "console-output"))
			return console_output(v, c, rq, seg[2]);
		if (n == 4 && get && is(seg[3], "console")) {
			/* a GET, but the live console is a root shell in the guest:
			 * as much a change as any POST (the log stays readable) */
			if (!can_write(rq))
				return nb_http_error(c, -NB_E_FORBIDDEN,
						     "read-only users cannot open the interactive "
						     "console; its log is GET "
						     "/v1/instances/ID/console-output");
			if (!nb_http_wants_upgrade(c, "nubo-console"))
				return nb_http_error(c, -NB_E_INVALID,
						     "the console needs 'Upgrade: nubo-console'");
			return console(v, c, rq, seg[2]);
		}
		if (n == 4 && post && !is(seg[3], "terminate")) {
			body = nb_http_body_json(rq, err, sizeof(err));
			if (!body)
				return nb_http_error(c, -NB_E_INVALID, err);
			r = nb_core_action(ctl, account_of(rq), seg[2], seg[3], body, &out, err,
					   sizeof(err));
			json_decref(body);
			return reply(c, r, out, err, 200);
		}
	}
	if (n >= 2 && is(seg[1], "images")) {
		if (n == 2 && get) {
			r = nb_core_images(ctl, account_of(rq), &out);
			return reply(c, r, out, "listing failed", 200);
		}
		if (n == 2 && post) {
			body = nb_http_body_json(rq, err, sizeof(err));
			if (!body)
				return nb_http_error(c, -NB_E_INVALID, err);
			r = nb_core_image_create(ctl, account_of(rq), body, &out, err, sizeof(err));
			json_decref(body);
			return reply(c, r, out, err, 201);
		}
		if (n == 3 && get) {
			r = nb_core_image(ctl, account_of(rq), seg[2], &out, err, sizeof(err));
			return reply(c, r, out, err, 200);
		}
		if (n == 3 && del) {
			r = nb_core_image_delete(ctl, account_of(rq), seg[2], err, sizeof(err));
			return r < 0 ? nb_http_error(c, r, err) : nb_http_empty(c, 204);
		}
	}
	if (n == 2 && is(seg[1], "blobs") && put)
		return upload_finish(c, rq);
	if (n >= 2 && is(seg[1], "types")) {
		if (n == 2 && get) {
			r = nb_store_types_list(ctl->st, &out);
			return reply(c, r, r == 0 ? json_pack("{s:o}", "types", out) : NULL, "", 200);
		}
		if (n == 3 && (put || del) && !is_admin(rq))
			return nb_http_error(c, -NB_E_FORBIDDEN, "only admins edit instance types");
		if (n == 3 && put) {
			body = nb_http_body_json(rq, err, sizeof(err));
			if (!body)
				return nb_http_error(c, -NB_E_INVALID, err);
			r = nb_core_type_put(ctl, seg[2], body, &out, err, sizeof(err));
			json_decref(body);
			return reply(c, r, out, err, 200);
		}
		if (n == 3 && del) {
			r = nb_store_type_delete(ctl->st, seg[2]);
			snprintf(err, sizeof(err), "instance type '%s' not found", seg[2]);
			return r < 0 ? nb_http_error(c, r, err) : nb_http_empty(c, 204);
		}
	}
	if ((n == 4 || n == 5) && is(seg[1], "accounts") && is(seg[3], "users"))
		return users_route(v, c, method, seg, n, rq);
	if (n >= 2 && is(seg[1], "accounts")) {
		if (!is_admin(rq))
			return nb_http_error(c, -NB_E_FORBIDDEN, "only the cloud's admins manage accounts");
		if (n == 2 && get) {
			r = nb_store_accounts_list(ctl->st, &out);
			return reply(c, r, r == 0 ? json_pack("{s:o}", "accounts", iso_times(out)) : NULL,
				     "", 200);
		}
		if (n == 2 && post) {
			body = nb_http_body_json(rq, err, sizeof(err));
			if (!body)
				return nb_http_error(c, -NB_E_INVALID, err);
			r = nb_core_account_create(ctl, nb_json_str_or(body, "name"), &out, err,
						   sizeof(err));
			json_decref(body);
			return reply(c, r, out, err, 201);
		}
		if (n == 4 && put && is(seg[3], "quotas")) {
			body = nb_http_body_json(rq, err, sizeof(err));
			if (!body)
				return nb_http_error(c, -NB_E_INVALID, err);
			r = nb_core_quotas_set(ctl, seg[2], body, &out, err, sizeof(err));
			json_decref(body);
			return reply(c, r, out, err, 200);
		}
		if (n == 4 && get && is(seg[3], "quotas")) {
			r = nb_core_quotas_get(ctl, seg[2], &out, err, sizeof(err));
			return reply(c, r, out, err, 200);
		}
	}
	if (n >= 2 && is(seg[1], "keys")) {
		const char *acct = account_of(rq);
		if (n == 2 && get) {
			r = nb_store_keys_list(ctl->st, is_admin(rq) ? NULL : acct, &out);
			return reply(c, r, r == 0 ? json_pack("{s:o}", "keys", iso_times(out)) : NULL, "",
				     200);
		}
		if (n == 2 && post) {
			body = nb_http_body_json(rq, err, sizeof(err));
			if (!body)
				return nb_http_error(c, -NB_E_INVALID, err);
			/* admins make keys for any account; an account's admin for its own */
			const char *want = nb_json_str(body, "account");
			if (!is_admin(rq) && (!is(nb_json_str_or(rq->auth, "role"), "admin") ||
					      (want && !is(want, acct) &&
					       !is(want, nb_json_str_or(rq->auth, "account"))))) {
				json_decref(body);
				return nb_http_error(c, -NB_E_FORBIDDEN,
						     "only admins create access keys");
			}
			r = nb_core_key_create(ctl, v->secrets, want ? want : acct,
					       nb_json_str(body, "user"), nb_json_str(body, "role"),
					       &out, err, sizeof(err));
			json_decref(body);
			return reply(c, r, out, err, 201);
		}
		if (n >= 3) {
			json_t *key = NULL;
			r = nb_store_key_lookup(ctl->st, seg[2], &key);
			if (r == 0 && !is_admin(rq) &&
			    (!is(nb_json_str_or(key, "account_id"), acct) ||
			     !is(nb_json_str_or(rq->auth, "role"), "admin")))
				r = -NB_E_NOT_FOUND;
			json_decref(key);
			snprintf(err, sizeof(err), "access key '%s' not found", seg[2]);
			if (r < 0)
				return nb_http_error(c, r, err);
			if (n == 3 && del) {
				r = nb_store_key_delete(ctl->st, seg[2]);
				return r < 0 ? nb_http_error(c, r, err) : nb_http_empty(c, 204);
			}
			if (n == 4 && post && (is(seg[3], "disable") || is(seg[3], "enable"))) {
				r = nb_store_key_set_status(ctl->st, seg[2],
							    is(seg[3], "enable") ? "Active" : "Inactive");
				return r < 0 ? nb_http_error(c, r, err) : nb_http_empty(c, 204);
			}
		}
	}
	if (n == 2 && is(seg[1], "hosts") && get) {
		r = nb_core_hosts(ctl, &out);
		return reply(c, r, out, "listing failed", 200);
	}

	ret = nb_http_error(c, -NB_E_NOT_FOUND, "no such API call");
	return ret;
}

enum MHD_Result nb_v1_handler(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version, const char *upload_data,
			      size_t *upload_data_size, void **req_cls)
{
	struct nb_v1 *v = cls;
	struct nb_http_req *rq = *req_cls;
	char buf[1024], *seg[MAX_SEGS], err[NB_ERRSZ];
	int n, r;

	(void)version;
	n = split_path(url, buf, sizeof(buf), seg);
	if (!rq) {
		rq = nb_http_req_new();
		if (!rq)
			return MHD_NO;
		*req_cls = rq;
		if (n == 0 && v->ec2) {
			/* the EC2 Query API: authenticated with the body, at the end */
		} else if (n < 1 || !is(seg[0], "v1")) {
			rq->early_status = -NB_E_NOT_FOUND;
		} else if (n == 2 && is(seg[1], "health")) {
			/* no auth */
		} else if (n == 3 && is(seg[1], "agent") && is(seg[2], "join")) {
			/* the join token is in the body */
		} else if (n >= 2 && is(seg[1], "agent")) {
			rq->early_status = auth_agent(v, c, rq);
		} else {
			rq->early_status = auth_user(v, c, rq);
		}
		if (!rq->early_status && n == 2 && is(seg[1], "blobs") && is(method, "PUT")) {
			char aerr[256];
			if (rq->sigv4) /* a streamed upload is signed UNSIGNED-PAYLOAD */
				rq->early_status = auth_sigv4(v, c, method, url, rq, NULL, 0, aerr,
							      sizeof(aerr));
			if (rq->early_status)
				;
			else if (!can_write(rq))
				rq->early_status = -NB_E_FORBIDDEN;
			else if ((r = upload_begin(v, c, rq)) < 0)
				rq->early_status = r == -E2BIG ? -NB_E_INVALID : r;
		}
		return MHD_YES;
	}
	if (*upload_data_size) {
		if (!rq->early_status) {
			if (rq->upload) {
				r = nb_core_upload_write(rq->upload, upload_data, *upload_data_size);
				if (r < 0)
					rq->early_status = r == -E2BIG ? -NB_E_INVALID : r;
			} else if (nb_buf_append(&rq->body, upload_data, *upload_data_size) < 0) {
				rq->too_large = true;
			}
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (n == 0 && v->ec2)
		return nb_ec2_handle(v->ec2, c, method, url, rq);
	if (!rq->early_status && rq->sigv4) {
		r = auth_sigv4(v, c, method, url, rq, rq->body.data, rq->body.len, err, sizeof(err));
		if (r < 0)
			return nb_http_error(c, r, err);
	}
	if (rq->early_status) {
		switch (-rq->early_status) {
		case NB_E_AUTH:
			return nb_http_error(c, rq->early_status,
					     "missing or unknown bearer token");
		case NB_E_AUTH_MISSING:
		case NB_E_AUTH_INCOMPLETE:
		case NB_E_SIG_MISMATCH:
		case NB_E_EXPIRED:
		case NB_E_BAD_KEY:
			return nb_http_error(c, rq->early_status, "the request's signature was refused");
		case NB_E_NOT_FOUND:
			return nb_http_error(c, rq->early_status, "no such API call");
		case NB_E_FORBIDDEN:
			return nb_http_error(c, rq->early_status,
					     "read-only users cannot change anything");
		case NB_E_INVALID:
			snprintf(err, sizeof(err), "upload larger than %llu bytes",
				 (unsigned long long)v->ctl->max_blob);
			return nb_http_error(c, rq->early_status, err);
		default:
			return nb_http_error(c, rq->early_status, "request failed");
		}
	}
	if (n == 2 && is(seg[1], "health"))
		return nb_http_json(c, 200, json_pack("{s:b, s:s}", "ok", 1, "version", NUBO_VERSION));
	if (n == 3 && is(seg[1], "agent") && is(seg[2], "join") && is(method, "POST")) {
		json_t *body = nb_http_body_json(rq, err, sizeof(err)), *out = NULL;
		if (!body)
			return nb_http_error(c, -NB_E_INVALID, err);
		r = nb_core_agent_join(v->ctl, v->join_token, body, &out, err, sizeof(err));
		if (r == 0)
			nb_info("host %s joined as %s", nb_json_str_or(out, "host_id"),
				nb_json_str_or(body, "name"));
		json_decref(body);
		return reply(c, r, out, err, 200);
	}
	return dispatch(v, c, method, seg, n, rq);
}
