/* The nubo command-line client. The pure pieces (argument parsing, tables,
 * progress bars, formatting) are separate from the edges (HTTP, console,
 * commands) so they can be unit-tested; only the command functions print. */
#ifndef NB_CLI_H
#define NB_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* Exit codes of the nubo command. */
enum nb_cli_exit {
	NB_CLI_OK = 0,
	NB_CLI_EAPI = 1,      /* the API answered with an error, or a local failure */
	NB_CLI_EUSAGE = 2,    /* bad command line */
	NB_CLI_EUNREACH = 3,  /* cannot reach the controller */
	NB_CLI_ENOTFOUND = 4, /* API NotFound */
};

/* ---- argument parsing (args.c) ---- */

#define NB_CLI_MAX_OPTS 32
#define NB_CLI_MAX_POS 64
#define NB_CLI_MAX_ARG_LEN 4096

struct nb_cli_opt {
	const char *name; /* long name without "--" */
	char short_name;  /* 0 when none */
	const char *arg;  /* metavariable ("N", "FILE"), NULL for a flag */
	const char *help; /* one line */
};

struct nb_cli_args {
	const struct nb_cli_opt *opts[NB_CLI_MAX_OPTS];
	int nopts;
	const char *val[NB_CLI_MAX_OPTS]; /* borrowed from argv; "1" for a set flag */
	const char *pos[NB_CLI_MAX_POS];  /* borrowed from argv */
	int npos;
	int next; /* with NB_CLI_STOP_AT_POS: index of the first positional */
	char err[256];
};

#define NB_CLI_STOP_AT_POS 1

/* Adds a NULL-name-terminated table of options (kept by pointer). */
int nb_cli_args_add(struct nb_cli_args *a, const struct nb_cli_opt *opts);
/* Parses argv[0..argc) (no program name) into a: "--name value", "--name=value",
 * "-x value", flags, positionals, "--" ends options. Values stay borrowed from
 * argv. -EINVAL with a->err set on an unknown option, a missing or
 * unexpected value, too many positionals or an over-long argument. */
int nb_cli_args_parse(struct nb_cli_args *a, int argc, char **argv, int flags);
/* Value of option name (borrowed) or NULL when not given. */
const char *nb_cli_args_get(const struct nb_cli_args *a, const char *name);
/* True when flag (or option) name was given. */
bool nb_cli_args_flag(const struct nb_cli_args *a, const char *name);
/* Parses option name as an integer in [min, max]; 1 when absent (out
 * untouched), 0 when parsed, -EINVAL with a->err set when malformed. */
int nb_cli_args_u64(struct nb_cli_args *a, const char *name, uint64_t min, uint64_t max,
                    uint64_t *out);
/* Appends an option list ("  --type TYPE   help") to out. */
int nb_cli_args_help(struct nb_buf *out, const struct nb_cli_opt *opts);

/* ---- tables (table.c) ---- */

#define NB_CLI_TABLE_MAX_COLS 16
#define NB_CLI_TABLE_MAX_ROWS 100000
#define NB_CLI_TABLE_MAX_CELL 1024

struct nb_cli_table {
	int ncols;
	const char *head[NB_CLI_TABLE_MAX_COLS]; /* borrowed */
	char **cells;                            /* owned, nrows * ncols */
	size_t nrows, cap;
};

/* head is a NULL-terminated list of column names (kept by pointer). */
int nb_cli_table_init(struct nb_cli_table *t, const char *const *head);
/* Appends one row of t->ncols cells (copied; NULL or "" shows as "-"). */
int nb_cli_table_add(struct nb_cli_table *t, const char *const *cells);
/* Renders: header in capitals, columns two spaces apart and as wide as their
 * widest cell, no trailing blanks, one '\n' per line. */
int nb_cli_table_render(const struct nb_cli_table *t, struct nb_buf *out);
/* Frees the cells; t can be initialised again. */
void nb_cli_table_free(struct nb_cli_table *t);
/* Display width of a UTF-8 string (code points; controls count as 1). */
size_t nb_cli_str_width(const char *s);

/* ---- formatting (fmt.c) ---- */

/* Bytes as "512 B", "1.5 KiB", "64 MiB", "2.0 GiB". */
void nb_cli_fmt_size(uint64_t bytes, char *out, size_t outsz);
/* Seconds as "5s", "3m", "2h", "4d" (whole units, rounded down; negative is 0s). */
void nb_cli_fmt_age(int64_t seconds, char *out, size_t outsz);
/* "2026-11-22T05:01:02.000Z" (fraction optional) into ms since the epoch. */
int nb_cli_parse_time(const char *s, int64_t *ms);
/* Age of an ISO 8601 timestamp relative to now_ms, as nb_cli_fmt_age; "-"
 * when s is NULL or malformed. */
void nb_cli_fmt_since(const char *s, int64_t now_ms, char *out, size_t outsz);
/* Milliseconds since the epoch as "2026-11-22T05:01:02.000Z" ("-" when
 * negative). */
void nb_cli_fmt_iso(int64_t ms, char *out, size_t outsz);
/* As nb_cli_fmt_since for a JSON timestamp: an ISO 8601 string or an integer
 * of milliseconds since the epoch (how accounts and keys carry created_at). */
void nb_cli_fmt_since_json(const json_t *v, int64_t now_ms, char *out, size_t outsz);
/* Standard base64 with padding; appends to out. */
int nb_cli_base64(const void *data, size_t len, struct nb_buf *out);

/* One progress line that fits in width columns:
 * "label [#########---------]  45% info". frac is clamped to [0, 1]; a
 * negative frac means unknown and draws no bar or percentage. */
void nb_cli_progress_render(char *out, size_t outsz, int width, const char *label, double frac,
                            const char *info);
/* "12.0 MiB/64 MiB  8.1 MiB/s" (total 0 means unknown: "12.0 MiB  8.1 MiB/s"). */
void nb_cli_fmt_transfer(uint64_t done, uint64_t total, double rate, char *out, size_t outsz);
/* Parses a builder line "progress <pct> <message>": 0 with pct (0..100) and
 * *msg pointing into line (may be ""), -EINVAL when not such a line. */
int nb_cli_parse_progress_line(const char *line, int *pct, const char **msg);

/* An http:// endpoint split into host (brackets of IPv6 removed) and port. */
int nb_cli_parse_endpoint(const char *url, char *host, size_t hostsz, unsigned *port);
/* Parses "HTTP/1.1 101 Switching Protocols" into status. */
int nb_cli_parse_status_line(const char *line, int *status);

/* For logs --follow: given the tail of what was already printed (the last
 * tail_len of prev_len bytes) and the console output fetched now, the offset
 * in cur where new bytes start. A bounded log that dropped its head is
 * handled by searching for the tail (its last occurrence); when the tail is
 * gone (the log was reset) everything is new. */
size_t nb_cli_log_new_offset(const char *tail, size_t tail_len, size_t prev_len, const char *cur,
                             size_t cur_len);

/* ---- request signing with an access key (sign.c) ---- */

#define NB_CLI_SIGV4_SERVICE "nubo"
#define NB_CLI_MAX_TARGET 16384 /* path and query of a signed request */
#define NB_CLI_DEFAULT_REGION "nubo-1"

/* An access key and the region requests are signed for. */
struct nb_cli_key {
	char id[129]; /* "" when no key is configured */
	char secret[256];
	char region[64];
};

/* The header values that carry one request's signature. */
struct nb_cli_sig {
	char amz_date[17];     /* X-Amz-Date: YYYYMMDDTHHMMSSZ */
	char payload_hash[65]; /* X-Amz-Content-Sha256: hex, or UNSIGNED-PAYLOAD */
	char auth[1024];       /* Authorization */
};

/* Unix seconds as "YYYYMMDDTHHMMSSZ" (UTC); -EINVAL outside years 1970..9999. */
int nb_cli_amz_date(int64_t now, char out[17]);
/* Splits an http:// or https:// URL: authority gets the Host header's value
 * (host[:port], without user@), *path (may be NULL) points into url at what
 * follows it ("" or "/prefix"). -EPROTONOSUPPORT for another scheme,
 * -EINVAL for no host, a query or blanks, -ENAMETOOLONG when it does not fit. */
int nb_cli_url_split(const char *url, char *authority, size_t authsz, const char **path);
/* Signs method + target (the path as sent, optional "?query") for Host host
 * with key at now (unix seconds), signing host, x-amz-content-sha256 and
 * x-amz-date. payload_hash: hex sha256 of the body, NULL for
 * UNSIGNED-PAYLOAD (streamed uploads). The caller sends Host: host and the
 * three values of out as X-Amz-Date, X-Amz-Content-Sha256 and Authorization.
 * -EINVAL for a missing or malformed argument (out is zeroed on failure). */
int nb_cli_sign(const struct nb_cli_key *key, const char *method, const char *host,
                const char *target, const char *payload_hash, int64_t now, struct nb_cli_sig *out);

/* ---- HTTP (http.c) ---- */

#define NB_CLI_RESP_MAX (64u << 20)

struct nb_cli_http {
	void *curl; /* CURL *, owned */
	char endpoint[1024];
	char token[1024];
	struct nb_cli_key key; /* when key.id[0]: requests are signed, the token is not sent */
};

struct nb_cli_resp {
	long status; /* 0 when the controller could not be reached */
	struct nb_buf body;
	json_t *json;  /* owned; NULL unless the body parsed as JSON */
	char err[512]; /* transport or local error when status is 0 */
};

typedef void (*nb_cli_progress_fn)(void *user, uint64_t done, uint64_t total);

/* endpoint and token are copied; token may be NULL or "". Free with
 * nb_cli_http_free. */
int nb_cli_http_init(struct nb_cli_http *h, const char *endpoint, const char *token);
/* Signs every later request with key (copied) instead of sending the token;
 * -EINVAL when key is incomplete. */
int nb_cli_http_set_key(struct nb_cli_http *h, const struct nb_cli_key *key);
/* The header lines that authenticate one request to h's endpoint, each
 * ending in "\r\n", appended to out: "Authorization: Bearer ..." or, with a
 * key, X-Amz-Date, X-Amz-Content-Sha256 and Authorization signed at the
 * present time for method and target (the endpoint's path prefix plus path)
 * and payload_hash (hex sha256 of the body, NULL for UNSIGNED-PAYLOAD);
 * nothing without credentials. The signature covers Host: the caller must
 * send Host with the endpoint's authority (nb_cli_url_split). */
int nb_cli_http_auth_lines(const struct nb_cli_http *h, const char *method, const char *path,
                           const char *payload_hash, struct nb_buf *out);
/* Frees the curl handle and wipes the token and the key. */
void nb_cli_http_free(struct nb_cli_http *h);
/* One call: method and path (e.g. "/v1/instances"), optional JSON body,
 * total timeout in seconds (0: none, low-speed limit instead). Returns 0 when
 * an HTTP answer arrived (any status, see resp), -EHOSTUNREACH when the
 * controller could not be reached (resp->err says why), another -errno on a
 * local failure. Caller frees resp with nb_cli_resp_free. */
int nb_cli_http_call(struct nb_cli_http *h, const char *method, const char *path,
                     const json_t *body, long timeout_s, struct nb_cli_resp *resp);
/* PUT of fd's size bytes to path, streamed; sha256_hex gets the digest of
 * what was sent. progress (may be NULL) is called as bytes go out. */
int nb_cli_http_upload(struct nb_cli_http *h, const char *path, int fd, uint64_t size,
                       nb_cli_progress_fn progress, void *user, char sha256_hex[65],
                       struct nb_cli_resp *resp);
/* Frees body and json; resp itself is the caller's. */
void nb_cli_resp_free(struct nb_cli_resp *resp);
/* Percent-encodes s for a path segment; appends to out. */
int nb_cli_url_escape(const char *s, struct nb_buf *out);

/* ---- the command layer (cli.c and cmd_*.c): these print ---- */

struct nb_cli_cmd;

struct nb_cli {
	struct nb_cli_http http;
	const struct nb_cli_cmd *cmd; /* the command being run */
	bool json;                    /* --json */
	bool err_tty;                 /* stderr is a terminal */
	bool have_token;
	bool have_key; /* requests are signed with an access key */
};

struct nb_cli_cmd {
	const char *group; /* "image", "type", "host", "account", "key" or NULL */
	const char *name;
	const char *usage;   /* after "nubo [group] name" */
	const char *summary; /* one line */
	const struct nb_cli_opt *opts;
	int min_pos, max_pos;
	int (*run)(struct nb_cli *c, struct nb_cli_args *a);
};

/* Runs the nubo command line; returns the process exit code. */
int nb_cli_main(int argc, char **argv);

/* Prints "nubo CMD: <message>", the command's usage and a hint to stderr;
 * returns NB_CLI_EUSAGE. */
int nb_cli_usage(struct nb_cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Calls the API and reports failures on stderr; returns an exit code.
 * On success *out (may be NULL) gets the answer's JSON (caller decrefs). */
int nb_cli_call(struct nb_cli *c, const char *method, const char *path, const json_t *body,
                long timeout_s, json_t **out);
/* Reports the failure of a call (r from nb_cli_http_*, or an HTTP error
 * status in resp) on stderr; returns the exit code. */
int nb_cli_report(struct nb_cli *c, int r, const struct nb_cli_resp *resp);
/* Pretty-prints j to stdout (for --json). */
void nb_cli_print_json(const json_t *j);
/* Prints an object as aligned "key   value" lines. */
void nb_cli_print_object(const json_t *o);
/* Builds "/v1/<coll>/<escaped id>[/<suffix>]" into out. */
int nb_cli_path(struct nb_buf *out, const char *coll, const char *id, const char *suffix);
/* Prints a table built by t to stdout. */
int nb_cli_print_table(const struct nb_cli_table *t);
/* Terminal width of stderr (80 when unknown). */
int nb_cli_term_width(void);

/* Uploads path as a blob, with a progress bar when c->err_tty and not
 * c->json; sha256 gets the blob id. Prints failures; returns an exit code. */
int nb_cli_upload_file(struct nb_cli *c, const char *path, char sha256[65]);

extern const struct nb_cli_cmd nb_cli_instance_cmds[];
extern const struct nb_cli_cmd nb_cli_image_cmds[];
extern const struct nb_cli_cmd nb_cli_misc_cmds[];
extern const struct nb_cli_cmd nb_cli_account_cmds[];

/* The live console (console.c): returns an exit code. */
int nb_cli_console(struct nb_cli *c, const char *id, int linger_s);

#endif
