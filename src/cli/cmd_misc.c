/* Instance types, hosts and version. */
#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/util.h"

#define CALL_TIMEOUT_S 60L
#define HEALTH_TIMEOUT_S 10L

static const struct nb_cli_opt no_opts[] = {
    {NULL, 0, NULL, NULL},
};

static void fmt_mib(json_int_t mib, char *out, size_t outsz)
{
	if (mib < 0)
		snprintf(out, outsz, "-");
	else if (mib == 0)
		snprintf(out, outsz, "0");
	else
		nb_cli_fmt_size((uint64_t)mib << 20, out, outsz);
}

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

static int print_types(const json_t *list)
{
	static const char *const head[] = {"NAME", "VCPUS", "MEMORY", "DISK", "NET", "PRICE", NULL};
	struct nb_cli_table t;
	size_t i;
	json_t *ty;
	int r = nb_cli_table_init(&t, head);

	json_array_foreach(list, i, ty)
	{
		char vcpus[24], mem[32], disk[32], net[32], price[48];
		const char *cells[6];
		json_t *p = json_object_get(ty, "price_per_hour");

		snprintf(vcpus, sizeof(vcpus), "%lld", (long long)nb_json_int(ty, "vcpus", 0));
		fmt_mib(nb_json_int(ty, "memory_mb", -1), mem, sizeof(mem));
		fmt_mib(nb_json_int(ty, "disk_gb", -1) < 0 ? -1
		                                           : nb_json_int(ty, "disk_gb", 0) * 1024,
		        disk, sizeof(disk));
		snprintf(net, sizeof(net), "%lld Mbps", (long long)nb_json_int(ty, "net_mbps", 0));
		if (json_is_number(p))
			snprintf(price, sizeof(price), "%g/h", json_number_value(p));
		else
			snprintf(price, sizeof(price), "-");
		cells[0] = nb_json_str(ty, "name");
		cells[1] = vcpus;
		cells[2] = mem;
		cells[3] = disk;
		cells[4] = net;
		cells[5] = price;
		if (r >= 0)
			r = nb_cli_table_add(&t, cells);
	}
	return finish_table(&t, r);
}

static int cmd_type_ls(struct nb_cli *c, struct nb_cli_args *a)
{
	json_t *ans = NULL;
	int ex;

	(void)a;
	ex = nb_cli_call(c, "GET", "/v1/types", NULL, CALL_TIMEOUT_S, &ans);
	if (!ex) {
		if (c->json)
			nb_cli_print_json(ans);
		else
			ex = print_types(json_object_get(ans, "types"));
	}
	json_decref(ans);
	return ex;
}

static const struct nb_cli_opt type_set_opts[] = {
    {"vcpus", 0, "N", "virtual CPUs"},     {"memory", 0, "MB", "memory in MiB"},
    {"disk", 0, "GB", "root disk in GiB"}, {"net", 0, "MBPS", "network bandwidth in Mbit/s"},
    {"price", 0, "P", "price per hour"},   {NULL, 0, NULL, NULL},
};

static int cmd_type_set(struct nb_cli *c, struct nb_cli_args *a)
{
	uint64_t vcpus, mem, disk, net;
	const char *ptext = nb_cli_args_get(a, "price");
	struct nb_buf path;
	json_t *body = NULL, *ans = NULL;
	double price;
	char *end;
	int ex;

	static const char *const required[] = {"vcpus", "memory", "disk", "net", "price"};
	for (size_t i = 0; i < NB_ARRAY_SIZE(required); i++)
		if (!nb_cli_args_get(a, required[i]))
			return nb_cli_usage(c, "--%s is required", required[i]);
	if (nb_cli_args_u64(a, "vcpus", 1, 1024, &vcpus) ||
	    nb_cli_args_u64(a, "memory", 16, 16u << 20, &mem) ||
	    nb_cli_args_u64(a, "disk", 1, 1u << 16, &disk) ||
	    nb_cli_args_u64(a, "net", 1, 1000000, &net))
		return nb_cli_usage(c, "%s", a->err);
	errno = 0;
	price = strtod(ptext, &end);
	if (errno || end == ptext || *end || !isfinite(price) || price < 0 || price > 1e6)
		return nb_cli_usage(c, "--price wants a number from 0 to 1000000, not '%.40s'",
		                    ptext);
	nb_buf_init(&path, 4096);
	if (nb_cli_path(&path, "types", a->pos[0], NULL) < 0) {
		nb_buf_free(&path);
		return nb_cli_usage(c, "argument too long");
	}
	body = json_pack("{s:I, s:I, s:I, s:I, s:f}", "vcpus", (json_int_t)vcpus, "memory_mb",
	                 (json_int_t)mem, "disk_gb", (json_int_t)disk, "net_mbps", (json_int_t)net,
	                 "price_per_hour", price);
	if (!body) {
		ex = NB_CLI_EAPI;
		goto out;
	}
	ex = nb_cli_call(c, "PUT", path.data, body, CALL_TIMEOUT_S, &ans);
	if (ex)
		goto out;
	if (c->json) {
		nb_cli_print_json(ans);
	} else {
		json_t *one = json_pack("[O]", ans);
		ex = one ? print_types(one) : NB_CLI_EAPI;
		json_decref(one);
	}
out:
	nb_buf_free(&path);
	json_decref(body);
	json_decref(ans);
	return ex;
}

static int cmd_type_rm(struct nb_cli *c, struct nb_cli_args *a)
{
	int ex = NB_CLI_OK;

	for (int i = 0; i < a->npos; i++) {
		struct nb_buf path;
		int e;

		nb_buf_init(&path, 4096);
		if (nb_cli_path(&path, "types", a->pos[i], NULL) < 0)
			e = nb_cli_usage(c, "argument too long");
		else
			e = nb_cli_call(c, "DELETE", path.data, NULL, CALL_TIMEOUT_S, NULL);
		nb_buf_free(&path);
		if (!e && !c->json)
			printf("%s  deleted\n", a->pos[i]);
		if (e && !ex)
			ex = e;
		if (e == NB_CLI_EUNREACH)
			break;
	}
	return ex;
}

static int cmd_host_ls(struct nb_cli *c, struct nb_cli_args *a)
{
	static const char *const head[] = {"ID",     "NAME",      "STATE",     "ACCEL", "VCPUS",
	                                   "MEMORY", "INSTANCES", "LAST-SEEN", NULL};
	struct nb_cli_table t;
	json_t *ans = NULL, *h;
	int64_t now = nb_wall_ms();
	size_t i;
	int ex, r;

	(void)a;
	ex = nb_cli_call(c, "GET", "/v1/hosts", NULL, CALL_TIMEOUT_S, &ans);
	if (ex || c->json) {
		if (!ex)
			nb_cli_print_json(ans);
		json_decref(ans);
		return ex;
	}
	r = nb_cli_table_init(&t, head);
	json_array_foreach(json_object_get(ans, "hosts"), i, h)
	{
		char vcpus[48], used[32], total[32], mem[72], inst[24], seen[32];
		const char *cells[8];

		snprintf(vcpus, sizeof(vcpus), "%lld/%lld",
		         (long long)nb_json_int(h, "used_vcpus", 0),
		         (long long)nb_json_int(h, "vcpus", 0));
		fmt_mib(nb_json_int(h, "used_memory_mb", 0), used, sizeof(used));
		fmt_mib(nb_json_int(h, "memory_mb", 0), total, sizeof(total));
		snprintf(mem, sizeof(mem), "%s/%s", used, total);
		snprintf(inst, sizeof(inst), "%lld", (long long)nb_json_int(h, "instances", 0));
		nb_cli_fmt_since(nb_json_str(h, "last_seen"), now, seen, sizeof(seen));
		cells[0] = nb_json_str(h, "id");
		cells[1] = nb_json_str(h, "name");
		cells[2] = nb_json_str(h, "state");
		cells[3] = nb_json_str(h, "accel");
		cells[4] = vcpus;
		cells[5] = mem;
		cells[6] = inst;
		cells[7] = seen;
		if (r >= 0)
			r = nb_cli_table_add(&t, cells);
	}
	json_decref(ans);
	return finish_table(&t, r);
}

static int cmd_version(struct nb_cli *c, struct nb_cli_args *a)
{
	json_t *ans = NULL, *out;
	int ex;

	(void)a;
	if (!c->json)
		printf("nubo %s\n", NUBO_VERSION);
	fflush(stdout);
	ex = nb_cli_call(c, "GET", "/v1/health", NULL, HEALTH_TIMEOUT_S, &ans);
	if (c->json) {
		out = json_pack("{s:s, s:O?}", "client", NUBO_VERSION, "controller", ans);
		if (out)
			nb_cli_print_json(out);
		json_decref(out);
	} else if (!ex) {
		const char *v = nb_json_str(ans, "version");
		printf("nubod %s at %s\n", v ? v : "(unknown version)", c->http.endpoint);
	}
	json_decref(ans);
	return ex;
}

const struct nb_cli_cmd nb_cli_misc_cmds[] = {
    {"type", "ls", "", "list instance types", no_opts, 0, 0, cmd_type_ls},
    {"type", "set", "NAME --vcpus N --memory MB --disk GB --net MBPS --price P",
     "create or change an instance type", type_set_opts, 1, 1, cmd_type_set},
    {"type", "rm", "NAME...", "delete instance types", no_opts, 1, -1, cmd_type_rm},
    {"host", "ls", "", "list hosts", no_opts, 0, 0, cmd_host_ls},
    {NULL, "version", "", "print the client's and the controller's versions", no_opts, 0, 0,
     cmd_version},
    {NULL, NULL, NULL, NULL, NULL, 0, 0, NULL},
};
