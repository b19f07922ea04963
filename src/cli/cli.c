/* The nubo command: finds the command, resolves endpoint and credentials
 * (flags, environment, config file, defaults: a token or an access key),
 * and holds the helpers every command shares (calls with error reporting,
 * JSON and table output, uploads). */
#include "cli/cli.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config.h"
#include "common/json.h"
#include "common/util.h"

#define DEFAULT_ENDPOINT "http://127.0.0.1:8787"
#define DEFAULT_TOKEN_FILE "/var/lib/nubo/admin.token"
#define TOKEN_MAX 1000

static const struct nb_cli_opt global_opts[] = {
    {"endpoint", 0, "URL", "controller URL (env NUBO_ENDPOINT; default " DEFAULT_ENDPOINT ")"},
    {"token", 0, "TOKEN",
     "API token (env NUBO_TOKEN; default from the config file or " DEFAULT_TOKEN_FILE ")"},
    {"access-key-id", 0, "ID",
     "sign requests with this access key instead of the token (env NUBO_ACCESS_KEY_ID, "
     "AWS_ACCESS_KEY_ID)"},
    {"secret-access-key", 0, "SECRET",
     "the access key's secret (env NUBO_SECRET_ACCESS_KEY, AWS_SECRET_ACCESS_KEY)"},
    {"region", 0, "REGION",
     "region the signatures are for (env NUBO_REGION, AWS_DEFAULT_REGION; "
     "default " NB_CLI_DEFAULT_REGION ")"},
    {"json", 0, NULL, "print the API's JSON instead of tables"},
    {"help", 'h', NULL, "show help"},
    {NULL, 0, NULL, NULL},
};

static const struct nb_conf_key conf_schema[] = {
    {"endpoint", NB_CONF_STR, "", "controller URL"},
    {"token", NB_CONF_STR, "", "API token"},
    {"access_key_id", NB_CONF_STR, "", "access key to sign requests with (wins over token)"},
    {"secret_access_key", NB_CONF_STR, "", "the access key's secret"},
    {"region", NB_CONF_STR, "", "region of the signatures (default " NB_CLI_DEFAULT_REGION ")"},
    {NULL, 0, NULL, NULL},
};

static const char *const groups[] = {"image", "type", "host", "account", "key"};

static const struct nb_cli_cmd *const cmd_tables[] = {nb_cli_instance_cmds, nb_cli_image_cmds,
                                                      nb_cli_misc_cmds, nb_cli_account_cmds};

static void cmd_title(const struct nb_cli_cmd *cmd, char *out, size_t outsz)
{
	snprintf(out, outsz, "%s%s%s", cmd->group ? cmd->group : "", cmd->group ? " " : "",
	         cmd->name);
}

static void print_global_help(FILE *f)
{
	fprintf(f, "usage: nubo [--endpoint URL] [--token TOKEN | --access-key-id ID "
	           "--secret-access-key SECRET] [--json] COMMAND [ARGS]\n\n"
	           "The nubo cloud's command-line client.\n\nCommands:\n");
	for (size_t t = 0; t < NB_ARRAY_SIZE(cmd_tables); t++)
		for (const struct nb_cli_cmd *cmd = cmd_tables[t]; cmd->name; cmd++) {
			char title[64];
			cmd_title(cmd, title, sizeof(title));
			fprintf(f, "  %-14s %s\n", title, cmd->summary);
		}
	fprintf(f, "\nGlobal options:\n");
	{
		struct nb_buf b;
		nb_buf_init(&b, 0);
		if (nb_cli_args_help(&b, global_opts) == 0 && b.data)
			fputs(b.data, f);
		nb_buf_free(&b);
	}
	fprintf(f,
	        "\nWithout --endpoint/--token, NUBO_ENDPOINT and NUBO_TOKEN are used, then\n"
	        "~/.config/nubo/config (lines 'endpoint = URL' and 'token = TOKEN').\n"
	        "An access key (--access-key-id and --secret-access-key, NUBO_ACCESS_KEY_ID and\n"
	        "NUBO_SECRET_ACCESS_KEY, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the\n"
	        "config's access_key_id and secret_access_key) signs requests (SigV4) instead\n"
	        "of the token when both are set.\n"
	        "Exit codes: 0 ok, 1 API error, 2 usage error, 3 controller unreachable,\n"
	        "4 not found.\nRun 'nubo COMMAND --help' for a command's options.\n");
}

static void print_group_help(FILE *f, const char *group)
{
	fprintf(f, "usage: nubo %s COMMAND [ARGS]\n\nCommands:\n", group);
	for (size_t t = 0; t < NB_ARRAY_SIZE(cmd_tables); t++)
		for (const struct nb_cli_cmd *cmd = cmd_tables[t]; cmd->name; cmd++)
			if (cmd->group && !strcmp(cmd->group, group))
				fprintf(f, "  %-8s %s\n", cmd->name, cmd->summary);
	fprintf(f, "\nRun 'nubo %s COMMAND --help' for a command's options.\n", group);
}

static void print_cmd_help(FILE *f, const struct nb_cli_cmd *cmd)
{
	struct nb_buf b;
	char title[64];

	cmd_title(cmd, title, sizeof(title));
	nb_buf_init(&b, 0);
	fprintf(f, "usage: nubo %s%s%s\n\n%s\n", title, cmd->usage[0] ? " " : "", cmd->usage,
	        cmd->summary);
	if (cmd->opts && cmd->opts->name && nb_cli_args_help(&b, cmd->opts) == 0 && b.data) {
		fprintf(f, "\nOptions:\n%s", b.data);
		nb_buf_reset(&b);
	}
	if (nb_cli_args_help(&b, global_opts) == 0 && b.data)
		fprintf(f, "\nGlobal options:\n%s", b.data);
	nb_buf_free(&b);
}

int nb_cli_usage(struct nb_cli *c, const char *fmt, ...)
{
	char title[64], msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cmd_title(c->cmd, title, sizeof(title));
	fprintf(stderr, "nubo %s: %s\nusage: nubo %s %s\nTry 'nubo %s --help'.\n", title, msg,
	        title, c->cmd->usage, title);
	return NB_CLI_EUSAGE;
}

static const struct nb_cli_cmd *find_cmd(const char *group, const char *name)
{
	for (size_t t = 0; t < NB_ARRAY_SIZE(cmd_tables); t++)
		for (const struct nb_cli_cmd *cmd = cmd_tables[t]; cmd->name; cmd++) {
			if (!!cmd->group != !!group)
				continue;
			if (group && strcmp(cmd->group, group))
				continue;
			if (!strcmp(cmd->name, name))
				return cmd;
		}
	return NULL;
}

static bool is_group(const char *s)
{
	for (size_t i = 0; i < NB_ARRAY_SIZE(groups); i++)
		if (!strcmp(groups[i], s))
			return true;
	return false;
}

static void trim_right(char *s)
{
	size_t n = strlen(s);

	while (n > 0 &&
	       (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = '\0';
}

static const char *config_path(char *buf, size_t bufsz)
{
	const char *p = getenv("NUBO_CONFIG"), *xdg = getenv("XDG_CONFIG_HOME"),
	           *home = getenv("HOME");

	if (p && *p)
		return p;
	if (xdg && *xdg)
		snprintf(buf, bufsz, "%s/nubo/config", xdg);
	else if (home && *home)
		snprintf(buf, bufsz, "%s/.config/nubo/config", home);
	else
		return NULL;
	return buf;
}

/* What the command line said about where and who (NULL when not given). */
struct cli_flags {
	const char *endpoint, *token, *key_id, *secret, *region;
};

/* The first of a, b, c that is set and not empty, or NULL. */
static const char *pick(const char *a, const char *b, const char *c)
{
	if (a && *a)
		return a;
	if (b && *b)
		return b;
	return c && *c ? c : NULL;
}

static bool has_ctl_or(const char *s, const char *also)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f || strchr(also, *p))
			return true;
	return false;
}

/* Fills key from id, secret and region (region NULL: the default); prints
 * what is wrong and returns an exit code. */
static int make_key(struct nb_cli_key *key, const char *id, const char *secret, const char *region)
{
	if (!region)
		region = NB_CLI_DEFAULT_REGION;
	if (strlen(id) >= sizeof(key->id) || has_ctl_or(id, " /,=")) {
		fprintf(stderr,
		        "nubo: the access key id is longer than %zu characters or holds "
		        "blanks, '/', ',' or '='\n",
		        sizeof(key->id) - 1);
		return NB_CLI_EUSAGE;
	}
	if (strlen(secret) >= sizeof(key->secret) || has_ctl_or(secret, "")) {
		fprintf(stderr,
		        "nubo: the secret access key is longer than %zu characters or holds "
		        "control characters\n",
		        sizeof(key->secret) - 1);
		return NB_CLI_EUSAGE;
	}
	if (strlen(region) >= sizeof(key->region) ||
	    strspn(region, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") !=
	        strlen(region)) {
		fprintf(stderr,
		        "nubo: region '%.80s' is not letters, digits, '-', '_' or '.' "
		        "(at most %zu)\n",
		        region, sizeof(key->region) - 1);
		return NB_CLI_EUSAGE;
	}
	nb_strlcpy(key->id, id, sizeof(key->id));
	nb_strlcpy(key->secret, secret, sizeof(key->secret));
	nb_strlcpy(key->region, region, sizeof(key->region));
	return NB_CLI_OK;
}

/* Endpoint and credentials by precedence: flag, environment (NUBO_*, then
 * AWS_* for the key), config, default. A complete access key wins over the
 * token; then the token is not read at all. */
static int resolve(struct nb_cli *c, const struct cli_flags *f)
{
	struct nb_config cfg;
	struct nb_cli_key key = {0};
	char pathbuf[1024], err[600], *file_token = NULL;
	const char *endpoint, *token, *kid, *secret, *region, *path;
	int r = 0;

	nb_config_init(&cfg, conf_schema);
	endpoint = pick(f->endpoint, getenv("NUBO_ENDPOINT"), NULL);
	token = pick(f->token, getenv("NUBO_TOKEN"), NULL);
	kid = pick(f->key_id, getenv("NUBO_ACCESS_KEY_ID"), getenv("AWS_ACCESS_KEY_ID"));
	secret = pick(f->secret, getenv("NUBO_SECRET_ACCESS_KEY"), getenv("AWS_SECRET_ACCESS_KEY"));
	region = pick(f->region, getenv("NUBO_REGION"), getenv("AWS_DEFAULT_REGION"));
	if ((!endpoint || !token || !kid || !secret || !region) &&
	    (path = config_path(pathbuf, sizeof(pathbuf)))) {
		if (nb_config_load(&cfg, path, 1, err, sizeof(err)) < 0) {
			fprintf(stderr, "nubo: config: %s\n", err);
			r = NB_CLI_EUSAGE;
			goto out;
		}
		endpoint = pick(endpoint, nb_config_str(&cfg, "endpoint"), NULL);
		token = pick(token, nb_config_str(&cfg, "token"), NULL);
		kid = pick(kid, nb_config_str(&cfg, "access_key_id"), NULL);
		secret = pick(secret, nb_config_str(&cfg, "secret_access_key"), NULL);
		region = pick(region, nb_config_str(&cfg, "region"), NULL);
	}
	if (!endpoint)
		endpoint = DEFAULT_ENDPOINT;
	if (!!kid != !!secret) {
		fprintf(stderr,
		        "nubo: an access key needs both its id and its secret; %s is missing "
		        "(--%s, NUBO_%s, AWS_%s or '%s = ...' in the config)\n",
		        kid ? "the secret" : "the id", kid ? "secret-access-key" : "access-key-id",
		        kid ? "SECRET_ACCESS_KEY" : "ACCESS_KEY_ID",
		        kid ? "SECRET_ACCESS_KEY" : "ACCESS_KEY_ID",
		        kid ? "secret_access_key" : "access_key_id");
		r = NB_CLI_EUSAGE;
		goto out;
	}
	if (kid) {
		r = make_key(&key, kid, secret, region);
		if (r)
			goto out;
		token = "";
	} else if (!token) {
		size_t len;
		if (nb_read_file(DEFAULT_TOKEN_FILE, TOKEN_MAX, &file_token, &len) == 0) {
			trim_right(file_token);
			token = file_token;
		} else {
			token = "";
		}
	}
	if (!nb_str_has_prefix(endpoint, "http://") && !nb_str_has_prefix(endpoint, "https://")) {
		fprintf(stderr, "nubo: endpoint '%.200s' is not an http:// or https:// URL\n",
		        endpoint);
		r = NB_CLI_EUSAGE;
		goto out;
	}
	if (kid && nb_cli_url_split(endpoint, pathbuf, sizeof(pathbuf), NULL) < 0) {
		fprintf(stderr, "nubo: endpoint '%.200s' has no host to sign for\n", endpoint);
		r = NB_CLI_EUSAGE;
		goto out;
	}
	if (strchr(token, '\n') || strchr(token, '\r')) {
		fprintf(stderr, "nubo: the token holds a line break\n");
		r = NB_CLI_EUSAGE;
		goto out;
	}
	if (nb_cli_http_init(&c->http, endpoint, token) < 0) {
		fprintf(stderr, "nubo: endpoint or token too long\n");
		r = NB_CLI_EUSAGE;
		goto out;
	}
	if (kid && nb_cli_http_set_key(&c->http, &key) < 0) {
		nb_cli_http_free(&c->http);
		fprintf(stderr, "nubo: incomplete access key\n");
		r = NB_CLI_EUSAGE;
		goto out;
	}
	c->have_token = *token != '\0';
	c->have_key = kid != NULL;
out:
	if (file_token) {
		explicit_bzero(file_token, strlen(file_token));
		free(file_token);
	}
	explicit_bzero(&key, sizeof(key));
	nb_config_free(&cfg);
	return r;
}

int nb_cli_report(struct nb_cli *c, int r, const struct nb_cli_resp *resp)
{
	const json_t *e;
	const char *code = NULL, *msg = NULL;

	if (r == -EHOSTUNREACH) {
		fprintf(stderr, "error: cannot reach the controller at %s: %s\n", c->http.endpoint,
		        resp->err);
		return NB_CLI_EUNREACH;
	}
	if (r < 0) {
		fprintf(stderr, "error: %s\n", resp->err[0] ? resp->err : strerror(-r));
		return NB_CLI_EAPI;
	}
	e = json_object_get(resp->json, "error");
	if (json_is_object(e)) {
		code = nb_json_str(e, "code");
		msg = nb_json_str(e, "message");
	}
	if (code) {
		fprintf(stderr, "error: %s: %s\n", code, msg ? msg : "");
	} else {
		char first[201] = "";
		if (resp->body.data)
			snprintf(first, sizeof(first), "%.*s",
			         (int)strcspn(resp->body.data, "\r\n"), resp->body.data);
		fprintf(stderr, "error: HTTP %ld from %s%s%s\n", resp->status, c->http.endpoint,
		        first[0] ? ": " : "", first);
	}
	if ((resp->status == 401 || (code && !strcmp(code, "AuthFailure"))) && !c->have_token &&
	    !c->have_key)
		fprintf(stderr, "hint: no token: pass --token, set NUBO_TOKEN or put 'token = ...' "
		                "in ~/.config/nubo/config\n");
	if (c->have_key &&
	    (resp->status == 401 ||
	     (code && (!strcmp(code, "SignatureDoesNotMatch") ||
	               !strcmp(code, "IncompleteSignature") || !strcmp(code, "RequestExpired")))))
		fprintf(stderr, "hint: requests are signed with access key %s for region %s\n",
		        c->http.key.id, c->http.key.region);
	if ((code && !strcmp(code, "NotFound")) || (!code && resp->status == 404))
		return NB_CLI_ENOTFOUND;
	return NB_CLI_EAPI;
}

int nb_cli_call(struct nb_cli *c, const char *method, const char *path, const json_t *body,
                long timeout_s, json_t **out)
{
	struct nb_cli_resp resp;
	int r = nb_cli_http_call(&c->http, method, path, body, timeout_s, &resp), ex = 0;

	if (out)
		*out = NULL;
	if (r < 0 || resp.status >= 300 || resp.status < 200) {
		ex = nb_cli_report(c, r, &resp);
		goto out;
	}
	if (resp.body.len && !resp.json) {
		fprintf(stderr, "error: the controller's answer to %s %s is not JSON\n", method,
		        path);
		ex = NB_CLI_EAPI;
		goto out;
	}
	if (out) {
		*out = resp.json;
		resp.json = NULL;
	}
out:
	nb_cli_resp_free(&resp);
	return ex;
}

void nb_cli_print_json(const json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2));

	if (s) {
		fputs(s, stdout);
		fputc('\n', stdout);
	}
	free(s);
}

static bool is_time_key(const char *k)
{
	size_t n = strlen(k);

	return (n > 3 && !strcmp(k + n - 3, "_at")) || !strcmp(k, "last_seen");
}

void nb_cli_print_object(const json_t *o)
{
	const char *key;
	json_t *v;
	size_t w = 0;
	int64_t now = nb_wall_ms();

	json_object_foreach((json_t *)o, key, v)
	{
		if (nb_cli_str_width(key) > w)
			w = nb_cli_str_width(key);
	}
	json_object_foreach((json_t *)o, key, v)
	{
		char extra[64] = "", iso[40];
		char *dumped = NULL;
		const char *text;

		if (json_is_string(v)) {
			text = json_string_value(v);
			if (is_time_key(key) && *text) {
				char age[32];
				nb_cli_fmt_since(text, now, age, sizeof(age));
				if (strcmp(age, "-"))
					snprintf(extra, sizeof(extra), " (%s ago)", age);
			}
		} else if (json_is_null(v)) {
			text = "-";
		} else if (is_time_key(key) && json_is_integer(v) && json_integer_value(v) >= 0) {
			/* milliseconds since the epoch (accounts, keys) */
			char age[32];
			nb_cli_fmt_iso((int64_t)json_integer_value(v), iso, sizeof(iso));
			nb_cli_fmt_since_json(v, now, age, sizeof(age));
			snprintf(extra, sizeof(extra), " (%s ago)", age);
			text = iso;
		} else {
			dumped = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
			text = dumped ? dumped : "?";
			if (json_is_integer(v) &&
			    (!strcmp(key, "size") || !strcmp(key, "file_size"))) {
				char sz[32];
				nb_cli_fmt_size((uint64_t)json_integer_value(v), sz, sizeof(sz));
				snprintf(extra, sizeof(extra), " (%s)", sz);
			}
		}
		printf("%-*s  %s%s\n", (int)w, key, *text ? text : "-", extra);
		free(dumped);
	}
}

int nb_cli_path(struct nb_buf *out, const char *coll, const char *id, const char *suffix)
{
	int r = nb_buf_printf(out, "/v1/%s/", coll);

	if (r >= 0)
		r = nb_cli_url_escape(id, out);
	if (r >= 0 && suffix)
		r = nb_buf_printf(out, "/%s", suffix);
	return r;
}

int nb_cli_print_table(const struct nb_cli_table *t)
{
	struct nb_buf b;
	int r;

	nb_buf_init(&b, 0);
	r = nb_cli_table_render(t, &b);
	if (r >= 0 && b.data)
		fputs(b.data, stdout);
	nb_buf_free(&b);
	return r;
}

int nb_cli_term_width(void)
{
	struct winsize ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
		return ws.ws_col;
	return 80;
}

struct upload_bar {
	const char *label;
	int64_t start_ms, last_ms;
	bool on;
};

static void draw_upload(struct upload_bar *b, uint64_t done, uint64_t total, bool final)
{
	char info[96], line[512];
	int64_t now = nb_now_ms(), el = now - b->start_ms;
	double rate = el > 0 ? (double)done * 1000.0 / (double)el : 0;

	if (!b->on || (!final && now - b->last_ms < 100))
		return;
	b->last_ms = now;
	nb_cli_fmt_transfer(done, total, rate, info, sizeof(info));
	nb_cli_progress_render(line, sizeof(line), nb_cli_term_width(), b->label,
	                       total ? (double)done / (double)total : (final ? 1.0 : 0.0), info);
	fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
	fflush(stderr);
}

static void on_upload_progress(void *user, uint64_t done, uint64_t total)
{
	draw_upload(user, done, total, false);
}

int nb_cli_upload_file(struct nb_cli *c, const char *path, char sha256[65])
{
	struct nb_cli_resp resp;
	struct upload_bar bar = {0};
	struct stat st;
	const char *base = strrchr(path, '/'), *blob;
	int fd = open(path, O_RDONLY | O_CLOEXEC), r, ex = 0;

	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "error: %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NB_CLI_EAPI;
	}
	if (!S_ISREG(st.st_mode)) {
		fprintf(stderr, "error: %s: not a regular file\n", path);
		close(fd);
		return NB_CLI_EAPI;
	}
	bar.label = base ? base + 1 : path;
	bar.start_ms = nb_now_ms();
	bar.on = c->err_tty && !c->json;
	r = nb_cli_http_upload(&c->http, "/v1/blobs", fd, (uint64_t)st.st_size, on_upload_progress,
	                       &bar, sha256, &resp);
	if (r == 0 && resp.status >= 200 && resp.status < 300)
		draw_upload(&bar, (uint64_t)st.st_size, (uint64_t)st.st_size, true);
	else if (bar.on)
		fputc('\n', stderr);
	close(fd);
	if (r < 0 || resp.status < 200 || resp.status >= 300) {
		fprintf(stderr, "error: uploading %s failed\n", path);
		ex = nb_cli_report(c, r, &resp);
		goto out;
	}
	blob = nb_json_str(resp.json, "blob");
	if (!blob || strcmp(blob, sha256) ||
	    nb_json_int(resp.json, "size", -1) != (int64_t)st.st_size) {
		fprintf(stderr,
		        "error: uploading %s: the controller stored blob %s of %lld bytes, "
		        "but sent %s of %lld bytes\n",
		        path, blob ? blob : "(none)", (long long)nb_json_int(resp.json, "size", -1),
		        sha256, (long long)st.st_size);
		ex = NB_CLI_EAPI;
	}
out:
	nb_cli_resp_free(&resp);
	return ex;
}

static int run_cmd(const struct nb_cli_cmd *cmd, struct nb_cli_args *g, int argc, char **argv)
{
	struct nb_cli c = {.cmd = cmd};
	struct nb_cli_args a = {0};
	struct cli_flags f;
	int ex;

	if (nb_cli_args_add(&a, cmd->opts) < 0 || nb_cli_args_add(&a, global_opts) < 0) {
		fprintf(stderr, "nubo: too many options (bug)\n");
		return NB_CLI_EAPI;
	}
	if (nb_cli_args_parse(&a, argc, argv, 0) < 0)
		return nb_cli_usage(&c, "%s", a.err);
	if (nb_cli_args_flag(&a, "help") || nb_cli_args_flag(g, "help")) {
		print_cmd_help(stdout, cmd);
		return NB_CLI_OK;
	}
	if (a.npos < cmd->min_pos)
		return nb_cli_usage(&c, "missing argument");
	if (cmd->max_pos >= 0 && a.npos > cmd->max_pos)
		return nb_cli_usage(&c, "unexpected argument '%.100s'", a.pos[cmd->max_pos]);
	f.endpoint = pick(nb_cli_args_get(&a, "endpoint"), nb_cli_args_get(g, "endpoint"), NULL);
	f.token = pick(nb_cli_args_get(&a, "token"), nb_cli_args_get(g, "token"), NULL);
	f.key_id =
	    pick(nb_cli_args_get(&a, "access-key-id"), nb_cli_args_get(g, "access-key-id"), NULL);
	f.secret = pick(nb_cli_args_get(&a, "secret-access-key"),
	                nb_cli_args_get(g, "secret-access-key"), NULL);
	f.region = pick(nb_cli_args_get(&a, "region"), nb_cli_args_get(g, "region"), NULL);
	c.json = nb_cli_args_flag(&a, "json") || nb_cli_args_flag(g, "json");
	c.err_tty = isatty(STDERR_FILENO);
	ex = resolve(&c, &f);
	if (ex)
		return ex;
	ex = cmd->run(&c, &a);
	nb_cli_http_free(&c.http);
	return ex;
}

int nb_cli_main(int argc, char **argv)
{
	struct nb_cli_args g = {0};
	const struct nb_cli_cmd *cmd;
	const char *group = NULL, *name;
	int i, ex;

	nb_cli_args_add(&g, global_opts);
	if (nb_cli_args_parse(&g, argc - 1, argv + 1, NB_CLI_STOP_AT_POS) < 0) {
		fprintf(stderr, "nubo: %s\nTry 'nubo --help'.\n", g.err);
		return NB_CLI_EUSAGE;
	}
	i = 1 + g.next;
	if (i >= argc) {
		if (nb_cli_args_flag(&g, "help")) {
			print_global_help(stdout);
			return NB_CLI_OK;
		}
		fprintf(stderr, "usage: nubo [--endpoint URL] [--token TOKEN] [--json] COMMAND "
		                "[ARGS]\nTry 'nubo --help'.\n");
		return NB_CLI_EUSAGE;
	}
	name = argv[i++];
	if (!strcmp(name, "help")) {
		if (i >= argc) {
			print_global_help(stdout);
			return NB_CLI_OK;
		}
		if (is_group(argv[i]) && i + 1 >= argc) {
			print_group_help(stdout, argv[i]);
			return NB_CLI_OK;
		}
		cmd = is_group(argv[i]) ? find_cmd(argv[i], argv[i + 1]) : find_cmd(NULL, argv[i]);
		if (!cmd) {
			fprintf(stderr, "nubo: no such command\nTry 'nubo --help'.\n");
			return NB_CLI_EUSAGE;
		}
		print_cmd_help(stdout, cmd);
		return NB_CLI_OK;
	}
	if (is_group(name)) {
		group = name;
		if (i >= argc || !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			bool asked = i < argc;
			print_group_help(asked ? stdout : stderr, group);
			return asked ? NB_CLI_OK : NB_CLI_EUSAGE;
		}
		name = argv[i++];
	}
	cmd = find_cmd(group, name);
	if (!cmd) {
		fprintf(stderr, "nubo: unknown command '%s%s%.100s'\nTry 'nubo %s%s--help'.\n",
		        group ? group : "", group ? " " : "", name, group ? group : "",
		        group ? " " : "");
		return NB_CLI_EUSAGE;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	ex = run_cmd(cmd, &g, argc - i, argv + i);
	curl_global_cleanup();
	fflush(stdout);
	return ex;
}
