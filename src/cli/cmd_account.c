/* Accounts, their quotas, users and access keys: account create/ls/quota,
 * account users/user-create/user-role/user-rm, key create/ls/disable/enable/rm. */
#include "cli/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/util.h"

#define CALL_TIMEOUT_S 60L

static const struct nb_cli_opt no_opts[] = {
    {NULL, 0, NULL, NULL},
};

static int finish_table(struct nb_cli_table *t, int r)
{
	if (r >= 0)
		r = nb_cli_print_table(t);
	nb_cli_table_free(t);
	if (r < 0) {
		fprintf(stderr, "error: %s\n", strerror(-r));
		return NB_CLI_EAPI;
	}
	return NB_CLI_OK;
}

/* ---- accounts ---- */

static int print_accounts(const json_t *list)
{
	static const char *const head[] = {"ID", "NAME", "AGE", NULL};
	struct nb_cli_table t;
	int64_t now = nb_wall_ms();
	size_t i;
	json_t *ac;
	int r = nb_cli_table_init(&t, head);

	json_array_foreach(list, i, ac)
	{
		char age[32];
		const char *cells[3];

		nb_cli_fmt_since_json(json_object_get(ac, "created_at"), now, age, sizeof(age));
		cells[0] = nb_json_str(ac, "id");
		cells[1] = nb_json_str(ac, "name");
		cells[2] = age;
		if (r >= 0)
			r = nb_cli_table_add(&t, cells);
	}
	return finish_table(&t, r);
}

static int cmd_account_create(struct nb_cli *c, struct nb_cli_args *a)
{
	json_t *body = json_pack("{s:s}", "name", a->pos[0]), *ans = NULL, *one;
	int ex;

	if (!body)
		return nb_cli_usage(c, "the account name is not valid UTF-8");
	ex = nb_cli_call(c, "POST", "/v1/accounts", body, CALL_TIMEOUT_S, &ans);
	json_decref(body);
	if (ex)
		goto out;
	if (c->json) {
		nb_cli_print_json(ans);
		goto out;
	}
	one = json_pack("[O]", ans);
	ex = one ? print_accounts(one) : NB_CLI_EAPI;
	json_decref(one);
out:
	json_decref(ans);
	return ex;
}

static int cmd_account_ls(struct nb_cli *c, struct nb_cli_args *a)
{
	json_t *ans = NULL;
	int ex;

	(void)a;
	ex = nb_cli_call(c, "GET", "/v1/accounts", NULL, CALL_TIMEOUT_S, &ans);
	if (!ex) {
		if (c->json)
			nb_cli_print_json(ans);
		else
			ex = print_accounts(json_object_get(ans, "accounts"));
	}
	json_decref(ans);
	return ex;
}

/* The quota flags and the API's names for them. */
static const struct quota_flag {
	const char *flag, *key, *label;
	uint64_t max;
} quota_flags[] = {
    {"instances", "instances", "instances", 1000000},
    {"vcpus", "vcpus", "vcpus", 100000000},
    {"memory", "memory_mb", "memory", 1ull << 40},
    {"images", "images", "images", 1000000},
    {"addresses", "addresses", "addresses", 1000000},
};

static const struct nb_cli_opt quota_opts[] = {
    {"instances", 0, "N", "most instances not terminated"},
    {"vcpus", 0, "N", "most virtual CPUs of those instances"},
    {"memory", 0, "MB", "most memory of those instances, in MiB"},
    {"images", 0, "N", "most images"},
    {"addresses", 0, "N", "most elastic IPs"},
    {NULL, 0, NULL, NULL},
};

static void quota_cell(const json_t *v, bool memory, char *out, size_t outsz)
{
	if (!json_is_integer(v))
		snprintf(out, outsz, "-");
	else if (memory && json_integer_value(v) > 0)
		nb_cli_fmt_size((uint64_t)json_integer_value(v) << 20, out, outsz);
	else
		snprintf(out, outsz, "%lld", (long long)json_integer_value(v));
}

static int print_quotas(const json_t *q)
{
	static const char *const head[] = {"QUOTA", "USED", "LIMIT", NULL};
	const json_t *limits = json_object_get(q, "limits"), *usage = json_object_get(q, "usage");
	struct nb_cli_table t;
	const char *key;
	json_t *v;
	int r = nb_cli_table_init(&t, head);

	for (size_t i = 0; i < NB_ARRAY_SIZE(quota_flags); i++) {
		const struct quota_flag *f = &quota_flags[i];
		bool mem = !strcmp(f->key, "memory_mb");
		char used[32], limit[32];
		const char *cells[3] = {f->label, used, limit};

		if (!json_object_get(limits, f->key) && !json_object_get(usage, f->key))
			continue;
		quota_cell(json_object_get(usage, f->key), mem, used, sizeof(used));
		quota_cell(json_object_get(limits, f->key), mem, limit, sizeof(limit));
		if (r >= 0)
			r = nb_cli_table_add(&t, cells);
	}
	/* quotas this client does not know yet, as the API names them */
	json_object_foreach((json_t *)limits, key, v)
	{
		bool known = false;
		char used[32], limit[32];
		const char *cells[3] = {key, used, limit};

		for (size_t i = 0; i < NB_ARRAY_SIZE(quota_flags); i++)
			known |= !strcmp(key, quota_flags[i].key);
		if (known)
			continue;
		quota_cell(json_object_get(usage, key), false, used, sizeof(used));
		quota_cell(v, false, limit, sizeof(limit));
		if (r >= 0)
			r = nb_cli_table_add(&t, cells);
	}
	return finish_table(&t, r);
}

static int cmd_account_quota(struct nb_cli *c, struct nb_cli_args *a)
{
	json_t *body = json_object(), *ans = NULL;
	struct nb_buf path;
	int ex;

	nb_buf_init(&path, 4096);
	if (!body) {
		ex = NB_CLI_EAPI;
		goto out;
	}
	for (size_t i = 0; i < NB_ARRAY_SIZE(quota_flags); i++) {
		uint64_t v;
		int r = nb_cli_args_u64(a, quota_flags[i].flag, 0, quota_flags[i].max, &v);

		if (r < 0) {
			ex = nb_cli_usage(c, "%s", a->err);
			goto out;
		}
		if (r == 0 && json_object_set_new(body, quota_flags[i].key,
		                                  json_integer((json_int_t)v)) < 0) {
			ex = NB_CLI_EAPI;
			goto out;
		}
	}
	if (nb_cli_path(&path, "accounts", a->pos[0], "quotas") < 0) {
		ex = nb_cli_usage(c, "argument too long");
		goto out;
	}
	if (json_object_size(body))
		ex = nb_cli_call(c, "PUT", path.data, body, CALL_TIMEOUT_S, &ans);
	else
		ex = nb_cli_call(c, "GET", path.data, NULL, CALL_TIMEOUT_S, &ans);
	if (ex)
		goto out;
	if (c->json)
		nb_cli_print_json(ans);
	else
		ex = print_quotas(ans);
out:
	nb_buf_free(&path);
	json_decref(body);
	json_decref(ans);
	return ex;
}

/* ---- users of an account ---- */

static const struct nb_cli_opt users_opts[] = {
    {"account", 0, "NAME", "the account; required"},
    {NULL, 0, NULL, NULL},
};

static const struct nb_cli_opt user_create_opts[] = {
    {"account", 0, "NAME", "the account; required"},
    {"role", 0, "ROLE", "admin, member or read-only (default member)"},
    {NULL, 0, NULL, NULL},
};

static bool role_valid(const char *role)
{
	return !strcmp(role, "admin") || !strcmp(role, "member") || !strcmp(role, "read-only");
}

/* "/v1/accounts/ACCOUNT/users[/USER]" into path; a usage error's exit code
 * or 0. */
static int users_path(struct nb_cli *c, struct nb_cli_args *a, const char *user,
                      struct nb_buf *path)
{
	const char *account = nb_cli_args_get(a, "account");

	if (!account || !*account)
		return nb_cli_usage(c, "--account is required");
	if (nb_cli_path(path, "accounts", account, "users") < 0 ||
	    (user && (nb_buf_append(path, "/", 1) < 0 || nb_cli_url_escape(user, path) < 0)))
		return nb_cli_usage(c, "argument too long");
	return 0;
}

static int print_users(const json_t *list, const char *account)
{
	static const char *const head[] = {"USER", "ACCOUNT", "ROLE", "KEYS", "AGE", NULL};
	struct nb_cli_table t;
	int64_t now = nb_wall_ms();
	size_t i;
	json_t *u;
	int r = nb_cli_table_init(&t, head);

	json_array_foreach(list, i, u)
	{
		char age[32], keys[24];
		const char *cells[5];

		nb_cli_fmt_since_json(json_object_get(u, "created_at"), now, age, sizeof(age));
		snprintf(keys, sizeof(keys), "%lld", (long long)nb_json_int(u, "keys", 0));
		cells[0] = nb_json_str(u, "name");
		cells[1] = nb_json_str(u, "account") ? nb_json_str(u, "account") : account;
		cells[2] = nb_json_str(u, "role");
		cells[3] = keys;
		cells[4] = age;
		if (r >= 0)
			r = nb_cli_table_add(&t, cells);
	}
	return finish_table(&t, r);
}

/* One user's answer (create, role) as a table of one or as JSON. */
static int print_one_user(struct nb_cli *c, json_t *ans)
{
	json_t *one;
	int ex;

	if (c->json) {
		nb_cli_print_json(ans);
		return NB_CLI_OK;
	}
	one = json_pack("[O]", ans);
	ex = one ? print_users(one, NULL) : NB_CLI_EAPI;
	json_decref(one);
	return ex;
}

static int cmd_account_users(struct nb_cli *c, struct nb_cli_args *a)
{
	struct nb_buf path;
	json_t *ans = NULL;
	int ex;

	nb_buf_init(&path, 4096);
	ex = users_path(c, a, NULL, &path);
	if (!ex)
		ex = nb_cli_call(c, "GET", path.data, NULL, CALL_TIMEOUT_S, &ans);
	if (!ex) {
		if (c->json)
			nb_cli_print_json(ans);
		else
			ex = print_users(json_object_get(ans, "users"), nb_json_str(ans, "account"));
	}
	nb_buf_free(&path);
	json_decref(ans);
	return ex;
}

static int cmd_account_user_create(struct nb_cli *c, struct nb_cli_args *a)
{
	const char *role = nb_cli_args_get(a, "role");
	struct nb_buf path;
	json_t *body = NULL, *ans = NULL;
	int ex;

	if (role && !role_valid(role))
		return nb_cli_usage(c, "--role is admin, member or read-only, not '%.40s'", role);
	nb_buf_init(&path, 4096);
	ex = users_path(c, a, NULL, &path);
	if (!ex) {
		body = json_pack("{s:s, s:s?}", "name", a->pos[0], "role", role);
		if (!body)
			ex = nb_cli_usage(c, "an argument is not valid UTF-8");
	}
	if (!ex)
		ex = nb_cli_call(c, "POST", path.data, body, CALL_TIMEOUT_S, &ans);
	if (!ex)
		ex = print_one_user(c, ans);
	nb_buf_free(&path);
	json_decref(body);
	json_decref(ans);
	return ex;
}

static int cmd_account_user_role(struct nb_cli *c, struct nb_cli_args *a)
{
	struct nb_buf path;
	json_t *body = NULL, *ans = NULL;
	int ex;

	if (!role_valid(a->pos[1]))
		return nb_cli_usage(c, "the role is admin, member or read-only, not '%.40s'",
		                    a->pos[1]);
	nb_buf_init(&path, 4096);
	ex = users_path(c, a, a->pos[0], &path);
	if (!ex) {
		body = json_pack("{s:s}", "role", a->pos[1]);
		if (!body)
			ex = NB_CLI_EAPI;
	}
	if (!ex)
		ex = nb_cli_call(c, "PUT", path.data, body, CALL_TIMEOUT_S, &ans);
	if (!ex)
		ex = print_one_user(c, ans);
	nb_buf_free(&path);
	json_decref(body);
	json_decref(ans);
	return ex;
}

/* Each user given: "USER  deleted"; the first failure's exit code wins. */
static int cmd_account_user_rm(struct nb_cli *c, struct nb_cli_args *a)
{
	int ex = NB_CLI_OK;

	for (int i = 0; i < a->npos; i++) {
		struct nb_buf path;
		int e;

		nb_buf_init(&path, 4096);
		e = users_path(c, a, a->pos[i], &path);
		if (!e)
			e = nb_cli_call(c, "DELETE", path.data, NULL, CALL_TIMEOUT_S, NULL);
		nb_buf_free(&path);
		if (!e && !c->json)
			printf("%s  deleted\n", a->pos[i]);
		if (e && !ex)
			ex = e;
		if (e == NB_CLI_EUNREACH || e == NB_CLI_EUSAGE)
			break;
	}
	return ex;
}

/* ---- access keys ---- */

static const struct nb_cli_opt key_create_opts[] = {
    {"account", 0, "NAME", "the account the key acts for; required"},
    {"user", 0, "USER", "the account's user who holds the key (default admin)"},
    {"role", 0, "ROLE",
     "admin, member or read-only for a new user (default admin for user admin, else "
     "member)"},
    {NULL, 0, NULL, NULL},
};

static int cmd_key_create(struct nb_cli *c, struct nb_cli_args *a)
{
	const char *account = nb_cli_args_get(a, "account"), *user = nb_cli_args_get(a, "user"),
	           *role = nb_cli_args_get(a, "role");
	json_t *body, *ans = NULL;
	int ex;

	if (!account || !*account)
		return nb_cli_usage(c, "--account is required");
	if (user && !*user)
		return nb_cli_usage(c, "--user wants a name");
	if (role && strcmp(role, "admin") && strcmp(role, "member") && strcmp(role, "read-only"))
		return nb_cli_usage(c, "--role is admin, member or read-only, not '%.40s'", role);
	body = json_pack("{s:s, s:s?, s:s?}", "account", account, "user", user, "role", role);
	if (!body)
		return nb_cli_usage(c, "an argument is not valid UTF-8");
	ex = nb_cli_call(c, "POST", "/v1/keys", body, CALL_TIMEOUT_S, &ans);
	json_decref(body);
	if (ex)
		goto out;
	if (!nb_json_str(ans, "access_key_id") || !nb_json_str(ans, "secret_access_key")) {
		fprintf(stderr, "error: the controller's answer holds no access key\n");
		ex = NB_CLI_EAPI;
		goto out;
	}
	if (c->json) {
		nb_cli_print_json(ans);
	} else {
		nb_cli_print_object(ans);
		printf(
		    "\nThis is the only time the secret access key is shown: it will not be shown "
		    "again.\n");
	}
out:
	json_decref(ans);
	return ex;
}

static int print_keys(const json_t *list)
{
	static const char *const head[] = {"ID", "ACCOUNT", "USER", "ROLE", "STATUS", "AGE", NULL};
	struct nb_cli_table t;
	int64_t now = nb_wall_ms();
	size_t i;
	json_t *k;
	int r = nb_cli_table_init(&t, head);

	json_array_foreach(list, i, k)
	{
		char age[32];
		const char *cells[6];

		nb_cli_fmt_since_json(json_object_get(k, "created_at"), now, age, sizeof(age));
		cells[0] = nb_json_str(k, "id");
		cells[1] = nb_json_str(k, "account");
		cells[2] = nb_json_str(k, "user");
		cells[3] = nb_json_str(k, "role");
		cells[4] = nb_json_str(k, "status");
		cells[5] = age;
		if (r >= 0)
			r = nb_cli_table_add(&t, cells);
	}
	return finish_table(&t, r);
}

static int cmd_key_ls(struct nb_cli *c, struct nb_cli_args *a)
{
	json_t *ans = NULL;
	int ex;

	(void)a;
	ex = nb_cli_call(c, "GET", "/v1/keys", NULL, CALL_TIMEOUT_S, &ans);
	if (!ex) {
		if (c->json)
			nb_cli_print_json(ans);
		else
			ex = print_keys(json_object_get(ans, "keys"));
	}
	json_decref(ans);
	return ex;
}

/* One call per key id given: method on /v1/keys/ID[/suffix]; prints
 * "ID  done" for each that worked. The first failure's exit code wins; an
 * unreachable controller stops the loop. */
static int each_key(struct nb_cli *c, struct nb_cli_args *a, const char *method, const char *suffix,
                    const char *done)
{
	int ex = NB_CLI_OK;

	for (int i = 0; i < a->npos; i++) {
		struct nb_buf path;
		int e;

		nb_buf_init(&path, 4096);
		if (nb_cli_path(&path, "keys", a->pos[i], suffix) < 0)
			e = nb_cli_usage(c, "argument too long");
		else
			e = nb_cli_call(c, method, path.data, NULL, CALL_TIMEOUT_S, NULL);
		nb_buf_free(&path);
		if (!e && !c->json)
			printf("%s  %s\n", a->pos[i], done);
		if (e && !ex)
			ex = e;
		if (e == NB_CLI_EUNREACH)
			break;
	}
	return ex;
}

static int cmd_key_disable(struct nb_cli *c, struct nb_cli_args *a)
{
	return each_key(c, a, "POST", "disable", "disabled");
}

static int cmd_key_enable(struct nb_cli *c, struct nb_cli_args *a)
{
	return each_key(c, a, "POST", "enable", "enabled");
}

static int cmd_key_rm(struct nb_cli *c, struct nb_cli_args *a)
{
	return each_key(c, a, "DELETE", NULL, "deleted");
}

const struct nb_cli_cmd nb_cli_account_cmds[] = {
    {"account", "create", "NAME", "create an account (cloud admins)", no_opts, 1, 1,
     cmd_account_create},
    {"account", "ls", "", "list accounts (cloud admins)", no_opts, 0, 0, cmd_account_ls},
    {"account", "quota", "NAME [--instances N] [--vcpus N] [--memory MB] [--images N] [--addresses N]",
     "show an account's quotas and usage, or set some of its limits (cloud admins)", quota_opts, 1,
     1, cmd_account_quota},
    {"account", "users", "--account NAME",
     "list an account's users, their roles and how many keys each holds (the account's "
     "admins, cloud admins)",
     users_opts, 0, 0, cmd_account_users},
    {"account", "user-create", "USER --account NAME [--role admin|member|read-only]",
     "create a user of an account (the account's admins, cloud admins); keys for it with "
     "'nubo key create --user USER'",
     user_create_opts, 1, 1, cmd_account_user_create},
    {"account", "user-role", "USER ROLE --account NAME",
     "change a user's role to admin, member or read-only (the account's admins, cloud admins)",
     users_opts, 2, 2, cmd_account_user_role},
    {"account", "user-rm", "USER... --account NAME",
     "delete users of an account and every access key they hold (the account's admins, cloud "
     "admins)",
     users_opts, 1, -1, cmd_account_user_rm},
    {"key", "create", "--account NAME [--user USER] [--role admin|member|read-only]",
     "create an access key; its secret is shown only this once", key_create_opts, 0, 0,
     cmd_key_create},
    {"key", "ls", "", "list access keys (all for cloud admins, else your account's)", no_opts, 0, 0,
     cmd_key_ls},
    {"key", "disable", "ID...", "disable access keys: requests signed with them are refused",
     no_opts, 1, -1, cmd_key_disable},
    {"key", "enable", "ID...", "enable disabled access keys again", no_opts, 1, -1, cmd_key_enable},
    {"key", "rm", "ID...", "delete access keys", no_opts, 1, -1, cmd_key_rm},
    {NULL, NULL, NULL, NULL, NULL, 0, 0, NULL},
};
