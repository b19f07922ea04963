/* Instance commands: run, ls, show, console, logs, pause/resume/stop/start/
 * reboot, rm. */
#include "cli/cli.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/json.h"
#include "common/util.h"

#define CALL_TIMEOUT_S 60L
#define MAX_COUNT 1000
#define USER_DATA_MAX (16u << 10) /* EC2's limit, before base64 */
#define WAIT_DEFAULT_S 600
#define WAIT_POLL_MS 1000
#define LOG_POLL_MS 1000
#define LOG_TAIL 4096

static const char *const instance_head[] = {"ID",   "NAME", "STATE", "TYPE", "IMAGE",
                                            "HOST", "IP",   "AGE",   NULL};

static const char *either(const json_t *o, const char *a, const char *b)
{
	const char *v = nb_json_str(o, a);

	return v && *v ? v : nb_json_str(o, b);
}

static int add_instance_row(struct nb_cli_table *t, const json_t *in, int64_t now)
{
	char age[32];
	const char *cells[8];

	nb_cli_fmt_since(nb_json_str(in, "created_at"), now, age, sizeof(age));
	cells[0] = nb_json_str(in, "id");
	cells[1] = nb_json_str(in, "name");
	cells[2] = nb_json_str(in, "state");
	cells[3] = nb_json_str(in, "type");
	cells[4] = either(in, "image_name", "image_id");
	cells[5] = either(in, "host_name", "host_id");
	cells[6] = nb_json_str(in, "ip");
	cells[7] = age;
	return nb_cli_table_add(t, cells);
}

static int print_instances(const json_t *list)
{
	struct nb_cli_table t;
	int64_t now = nb_wall_ms();
	size_t i;
	json_t *in;
	int r = nb_cli_table_init(&t, instance_head);

	json_array_foreach(list, i, in)
	{
		if (r >= 0)
			r = add_instance_row(&t, in, now);
	}
	if (r >= 0)
		r = nb_cli_print_table(&t);
	nb_cli_table_free(&t);
	if (r < 0) {
		fprintf(stderr, "error: %s\n", strerror(-r));
		return NB_CLI_EAPI;
	}
	return NB_CLI_OK;
}

/* ---- run ---- */

static bool failed_state(const char *s)
{
	return !s || !strcmp(s, "terminated") || !strcmp(s, "shutting-down") ||
	       !strcmp(s, "stopped") || !strcmp(s, "stopping") || !strcmp(s, "error");
}

/* Polls until every instance of list is running; replaces list's items with
 * their latest versions. Returns an exit code. */
static int wait_running(struct nb_cli *c, json_t *list, uint64_t timeout_s)
{
	int64_t start = nb_now_ms(), deadline = start + (int64_t)timeout_s * 1000;
	size_t n = json_array_size(list);
	bool shown = false;
	int ex = NB_CLI_OK;

	for (;;) {
		json_t *all = NULL, *arr;
		size_t running = 0, i;
		json_t *in;

		/* all=1: a launch that failed at once is terminated, and shown so */
		ex = nb_cli_call(c, "GET", "/v1/instances?all=1", NULL, CALL_TIMEOUT_S, &all);
		if (ex)
			break;
		arr = json_object_get(all, "instances");
		json_array_foreach(list, i, in)
		{
			const char *id = nb_json_str(in, "id");
			size_t j;
			json_t *cur, *found = NULL;

			json_array_foreach(arr, j, cur)
			{
				const char *cid = nb_json_str(cur, "id");
				if (id && cid && !strcmp(id, cid)) {
					found = cur;
					break;
				}
			}
			if (!found) {
				fprintf(stderr, "%serror: instance %s is gone\n", shown ? "\n" : "",
				        id ? id : "?");
				ex = NB_CLI_EAPI;
				break;
			}
			json_array_set(list, i, found);
			if (!strcmp(nb_json_str(found, "state") ? nb_json_str(found, "state") : "",
			            "running"))
				running++;
			else if (failed_state(nb_json_str(found, "state"))) {
				const char *why = nb_json_str(found, "state_reason");
				fprintf(stderr, "%serror: instance %s is %s%s%s\n",
				        shown ? "\n" : "", id,
				        nb_json_str(found, "state") ? nb_json_str(found, "state")
				                                    : "in no state",
				        why && *why ? ": " : "", why && *why ? why : "");
				ex = NB_CLI_EAPI;
				break;
			}
		}
		json_decref(all);
		if (ex)
			return ex;
		if (c->err_tty && !c->json) {
			fprintf(stderr, "\rwaiting: %zu of %zu running (%llds)\033[K", running, n,
			        (long long)((nb_now_ms() - start) / 1000));
			fflush(stderr);
			shown = true;
		}
		if (running == n)
			break;
		if (nb_now_ms() >= deadline) {
			fprintf(stderr, "%serror: %zu of %zu instances running after %llus\n",
			        shown ? "\n" : "", running, n, (unsigned long long)timeout_s);
			return NB_CLI_EAPI;
		}
		poll(NULL, 0, WAIT_POLL_MS);
	}
	if (shown)
		fputc('\n', stderr);
	return ex;
}

static const struct nb_cli_opt run_opts[] = {
    {"type", 't', "TYPE", "instance type (see 'nubo type ls'); required"},
    {"count", 'n', "N", "how many instances (default 1)"},
    {"name", 0, "NAME", "name of the instances"},
    {"user-data", 0, "FILE", "user data for the guest (at most 16 KiB)"},
    {"client-token", 0, "T", "idempotency token: a retry with it launches nothing new"},
    {"wait", 'w', NULL, "wait until every instance is running (or one fails)"},
    {"timeout", 0, "SECONDS", "with --wait, give up after this long (default 600)"},
    {NULL, 0, NULL, NULL},
};

static int cmd_run(struct nb_cli *c, struct nb_cli_args *a)
{
	const char *type = nb_cli_args_get(a, "type"), *ud = nb_cli_args_get(a, "user-data");
	const char *name = nb_cli_args_get(a, "name"), *tok = nb_cli_args_get(a, "client-token");
	uint64_t count = 1, timeout = WAIT_DEFAULT_S;
	json_t *body = NULL, *ans = NULL;
	char *data = NULL;
	struct nb_buf b64;
	int ex = NB_CLI_OK, r;

	nb_buf_init(&b64, 0);
	if (!type)
		return nb_cli_usage(c, "--type is required");
	if (nb_cli_args_u64(a, "count", 1, MAX_COUNT, &count) < 0 ||
	    nb_cli_args_u64(a, "timeout", 1, 86400, &timeout) < 0)
		return nb_cli_usage(c, "%s", a->err);
	body = json_pack("{s:s, s:s, s:I}", "image", a->pos[0], "type", type, "count",
	                 (json_int_t)count);
	if (!body)
		goto nomem;
	if (name && json_object_set_new(body, "name", json_string(name)) < 0)
		goto nomem;
	if (tok && json_object_set_new(body, "client_token", json_string(tok)) < 0)
		goto nomem;
	if (ud) {
		size_t len;
		r = nb_read_file(ud, USER_DATA_MAX, &data, &len);
		if (r == -EFBIG) {
			ex = nb_cli_usage(c, "%s: user data is larger than %u KiB", ud,
			                  USER_DATA_MAX >> 10);
			goto out;
		}
		if (r < 0) {
			ex = nb_cli_usage(c, "%s: %s", ud, strerror(-r));
			goto out;
		}
		if (nb_cli_base64(data, len, &b64) < 0 ||
		    json_object_set_new(body, "user_data", json_string(b64.data)) < 0)
			goto nomem;
	}
	ex = nb_cli_call(c, "POST", "/v1/instances", body, CALL_TIMEOUT_S, &ans);
	if (ex)
		goto out;
	if (!json_is_array(json_object_get(ans, "instances"))) {
		fprintf(stderr, "error: the controller's answer lists no instances\n");
		ex = NB_CLI_EAPI;
		goto out;
	}
	if (nb_cli_args_flag(a, "wait"))
		ex = wait_running(c, json_object_get(ans, "instances"), timeout);
	if (c->json)
		nb_cli_print_json(ans);
	else
		print_instances(json_object_get(ans, "instances"));
	goto out;
nomem:
	fprintf(stderr, "error: out of memory\n");
	ex = NB_CLI_EAPI;
out:
	nb_buf_free(&b64);
	free(data);
	json_decref(body);
	json_decref(ans);
	return ex;
}

/* ---- ls, show ---- */

static const struct nb_cli_opt ls_opts[] = {
    {"all", 'a', NULL, "also list terminated instances"},
    {NULL, 0, NULL, NULL},
};

static int cmd_ls(struct nb_cli *c, struct nb_cli_args *a)
{
	json_t *ans = NULL, *list, *keep = json_array(), *in;
	bool all = nb_cli_args_flag(a, "all");
	int ex;
	size_t i;

	if (!keep)
		return NB_CLI_EAPI;
	/* the controller leaves terminated instances out unless asked (all=1) */
	ex = nb_cli_call(c, "GET", all ? "/v1/instances?all=1" : "/v1/instances", NULL,
	                 CALL_TIMEOUT_S, &ans);
	if (ex)
		goto out;
	list = json_object_get(ans, "instances");
	json_array_foreach(list, i, in)
	{
		const char *st = nb_json_str(in, "state");
		if (all || !st || strcmp(st, "terminated"))
			json_array_append(keep, in);
	}
	if (c->json) {
		json_object_set(ans, "instances", keep);
		nb_cli_print_json(ans);
	} else {
		ex = print_instances(keep);
	}
out:
	json_decref(keep);
	json_decref(ans);
	return ex;
}

/* GET one object and print it. */
static int show_one(struct nb_cli *c, const char *coll, const char *id)
{
	struct nb_buf path;
	json_t *ans = NULL;
	int ex;

	nb_buf_init(&path, 4096);
	if (nb_cli_path(&path, coll, id, NULL) < 0) {
		nb_buf_free(&path);
		return nb_cli_usage(c, "argument too long");
	}
	ex = nb_cli_call(c, "GET", path.data, NULL, CALL_TIMEOUT_S, &ans);
	if (!ex) {
		if (c->json)
			nb_cli_print_json(ans);
		else
			nb_cli_print_object(ans);
	}
	json_decref(ans);
	nb_buf_free(&path);
	return ex;
}

static int cmd_show(struct nb_cli *c, struct nb_cli_args *a)
{
	return show_one(c, "instances", a->pos[0]);
}

/* ---- console, logs ---- */

static const struct nb_cli_opt console_opts[] = {
    {"linger", 0, "SECONDS",
     "when stdin is not a terminal: after its end, keep printing this long (default 0)"},
    {NULL, 0, NULL, NULL},
};

static int cmd_console(struct nb_cli *c, struct nb_cli_args *a)
{
	uint64_t linger = 0;

	if (nb_cli_args_u64(a, "linger", 0, 86400, &linger) < 0)
		return nb_cli_usage(c, "%s", a->err);
	return nb_cli_console(c, a->pos[0], (int)linger);
}

/* A JSON string of console bytes; bytes that are not UTF-8 become '?'. */
static json_t *text_json(const char *s, size_t n)
{
	json_t *j;
	char *copy;

	if (!s)
		return json_string("");
	j = json_stringn(s, n);
	if (j)
		return j;
	copy = malloc(n + 1);
	if (!copy)
		return NULL;
	for (size_t i = 0; i < n; i++)
		copy[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
	j = json_stringn(copy, n);
	free(copy);
	return j;
}

static const struct nb_cli_opt logs_opts[] = {
    {"follow", 'f', NULL, "keep printing new output until interrupted"},
    {NULL, 0, NULL, NULL},
};

static int cmd_logs(struct nb_cli *c, struct nb_cli_args *a)
{
	bool follow = nb_cli_args_flag(a, "follow");
	char *tail = NULL;
	size_t tail_len = 0, prev_len = 0;
	struct nb_buf path;
	int ex = NB_CLI_OK;

	if (follow && c->json)
		return nb_cli_usage(c, "--follow and --json do not go together");
	nb_buf_init(&path, 4096);
	if (nb_cli_path(&path, "instances", a->pos[0], "console-output") < 0) {
		ex = nb_cli_usage(c, "argument too long");
		goto out;
	}
	tail = malloc(LOG_TAIL);
	if (!tail) {
		ex = NB_CLI_EAPI;
		goto out;
	}
	for (;;) {
		struct nb_cli_resp resp;
		int r = nb_cli_http_call(&c->http, "GET", path.data, NULL, CALL_TIMEOUT_S, &resp);
		size_t off;

		if (r < 0 || resp.status < 200 || resp.status >= 300) {
			ex = nb_cli_report(c, r, &resp);
			nb_cli_resp_free(&resp);
			break;
		}
		if (c->json) {
			json_t *o = json_pack("{s:s, s:o}", "id", a->pos[0], "output",
			                      text_json(resp.body.data, resp.body.len));
			if (o)
				nb_cli_print_json(o);
			ex = o ? NB_CLI_OK : NB_CLI_EAPI;
			json_decref(o);
			nb_cli_resp_free(&resp);
			break;
		}
		off = nb_cli_log_new_offset(tail, tail_len, prev_len,
		                            resp.body.data ? resp.body.data : "", resp.body.len);
		if (resp.body.len > off) {
			fflush(stdout);
			if (nb_write_all(STDOUT_FILENO, resp.body.data + off, resp.body.len - off) <
			    0) {
				nb_cli_resp_free(&resp);
				break; /* stdout closed: nothing left to do */
			}
		}
		prev_len = resp.body.len;
		tail_len = prev_len < LOG_TAIL ? prev_len : LOG_TAIL;
		if (tail_len)
			memcpy(tail, resp.body.data + prev_len - tail_len, tail_len);
		nb_cli_resp_free(&resp);
		if (!follow)
			break;
		poll(NULL, 0, LOG_POLL_MS);
	}
out:
	free(tail);
	nb_buf_free(&path);
	return ex;
}

/* ---- actions ---- */

static const struct nb_cli_opt stop_opts[] = {
    {"force", 'f', NULL, "power off at once instead of an ACPI shutdown"},
    {NULL, 0, NULL, NULL},
};

static const struct nb_cli_opt no_opts[] = {
    {NULL, 0, NULL, NULL},
};

/* Runs one call per id; with several ids --json prints an array. Goes on
 * after an error (except when the controller is unreachable) and returns the
 * first failure's exit code. */
static int for_each_id(struct nb_cli *c, struct nb_cli_args *a, const char *method,
                       const char *action, const json_t *body)
{
	json_t *outs = json_array();
	int ex = NB_CLI_OK;

	for (int i = 0; i < a->npos; i++) {
		struct nb_buf path;
		json_t *ans = NULL;
		int e;

		nb_buf_init(&path, 4096);
		if (nb_cli_path(&path, "instances", a->pos[i], action) < 0) {
			nb_buf_free(&path);
			e = nb_cli_usage(c, "argument too long");
		} else {
			e = nb_cli_call(c, method, path.data, body, CALL_TIMEOUT_S, &ans);
			nb_buf_free(&path);
		}
		if (!e && ans) {
			if (c->json)
				json_array_append(outs, ans);
			else
				printf("%s  %s\n",
				       nb_json_str(ans, "id") ? nb_json_str(ans, "id") : a->pos[i],
				       nb_json_str(ans, "state") ? nb_json_str(ans, "state") : "?");
		} else if (!e && !c->json) {
			printf("%s  done\n", a->pos[i]);
		}
		json_decref(ans);
		if (e && !ex)
			ex = e;
		if (e == NB_CLI_EUNREACH)
			break;
	}
	if (c->json && outs) {
		if (a->npos == 1 && json_array_size(outs) == 1)
			nb_cli_print_json(json_array_get(outs, 0));
		else if (json_array_size(outs))
			nb_cli_print_json(outs);
	}
	json_decref(outs);
	return ex;
}

static int cmd_action(struct nb_cli *c, struct nb_cli_args *a)
{
	json_t *body = json_object();
	int ex;

	if (!body)
		return NB_CLI_EAPI;
	if (nb_cli_args_flag(a, "force"))
		json_object_set_new(body, "force", json_true());
	ex = for_each_id(c, a, "POST", c->cmd->name, body);
	json_decref(body);
	return ex;
}

static int cmd_rm(struct nb_cli *c, struct nb_cli_args *a)
{
	return for_each_id(c, a, "DELETE", NULL, NULL);
}

const struct nb_cli_cmd nb_cli_instance_cmds[] = {
    {NULL, "run",
     "IMAGE --type TYPE [--count N] [--name NAME] [--user-data FILE] "
     "[--client-token T] [--wait [--timeout S]]",
     "launch instances of an image (a name or an ami- id)", run_opts, 1, 1, cmd_run},
    {NULL, "ls", "[--all]", "list instances", ls_opts, 0, 0, cmd_ls},
    {NULL, "show", "ID", "show one instance", no_opts, 1, 1, cmd_show},
    {NULL, "console", "ID [--linger SECONDS]",
     "attach to an instance's serial console (Ctrl-] detaches)", console_opts, 1, 1, cmd_console},
    {NULL, "logs", "ID [--follow]", "print an instance's console output", logs_opts, 1, 1,
     cmd_logs},
    {NULL, "pause", "ID...", "pause instances (their vCPUs stop)", no_opts, 1, -1, cmd_action},
    {NULL, "resume", "ID...", "resume paused instances", no_opts, 1, -1, cmd_action},
    {NULL, "stop", "[--force] ID...", "stop instances", stop_opts, 1, -1, cmd_action},
    {NULL, "start", "ID...", "start stopped instances", no_opts, 1, -1, cmd_action},
    {NULL, "reboot", "ID...", "reboot instances", no_opts, 1, -1, cmd_action},
    {NULL, "rm", "ID...", "terminate instances", no_opts, 1, -1, cmd_rm},
    {NULL, NULL, NULL, NULL, NULL, 0, 0, NULL},
};
