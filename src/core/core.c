#include "core/core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/httpc.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "core/place.h"
#include "core/state.h"
#include "core/vpc.h"
#include "net/net.h"
#include "s3/engine.h"

#define NB_MAX_USER_DATA (16 * 1024 * 4 / 3 + 4) /* EC2: 16 KiB before base64 */

int nb_ctl_init(struct nb_ctl *c, struct nb_store *st, const char *state_dir)
{
	char tmp[700];
	int r;

	memset(c, 0, sizeof(*c));
	c->st = st;
	nb_strlcpy(c->state_dir, state_dir, sizeof(c->state_dir));
	snprintf(c->blob_dir, sizeof(c->blob_dir), "%s/library", state_dir);
	snprintf(c->tmp_dir, sizeof(c->tmp_dir), "%s/tmp", state_dir);
	r = nb_mkdir_p(c->tmp_dir, 0700);
	if (r < 0)
		return r;
	/* what a conversion or download a crash interrupted left */
	DIR *d = opendir(c->tmp_dir);
	for (struct dirent *de; d && (de = readdir(d));) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(tmp, sizeof(tmp), "%s/%s", c->tmp_dir, de->d_name);
		unlink(tmp);
	}
	if (d)
		closedir(d);
	c->cpu_overcommit = 8;
	c->reserved_memory_mb = 512;
	c->host_dead_after_s = 30;
	c->max_count = 100;
	c->max_blob = 64ull << 30;
	c->quota_instances = 100;
	c->quota_vcpus = 512;
	c->quota_memory_mb = 1 << 20;
	c->quota_images = 100;
	nb_strlcpy(c->region, "nubo-1", sizeof(c->region));
	nb_strlcpy(c->az, "nubo-1a", sizeof(c->az));
	nb_strlcpy(c->eip_pool, "198.51.100.0/24", sizeof(c->eip_pool));
	c->quota_addresses = 5;
	pthread_mutex_init(&c->gen_lock, NULL);
	pthread_cond_init(&c->gen_cond, NULL);
	return 0;
}

void nb_ctl_fini(struct nb_ctl *c)
{
	pthread_mutex_destroy(&c->gen_lock);
	pthread_cond_destroy(&c->gen_cond);
}

int nb_ctl_seed_types(struct nb_ctl *c)
{
	static const struct {
		const char *name;
		int vcpus, memory_mb, disk_gb, net_mbps;
		double price;
	} seeds[] = {
		{"t1.nano", 1, 128, 1, 100, 0.0025},	 {"t1.micro", 1, 256, 2, 200, 0.005},
		{"t1.small", 1, 512, 4, 300, 0.01},	 {"t1.medium", 2, 1024, 8, 500, 0.02},
		{"m1.large", 2, 2048, 16, 1000, 0.04},	 {"m1.xlarge", 4, 4096, 32, 1000, 0.08},
		{"c1.xlarge", 8, 8192, 64, 2000, 0.16},
	};
	int64_t n = 0;
	int r = nb_store_types_count(c->st, &n);

	if (r < 0 || n > 0)
		return r;
	for (size_t i = 0; i < NB_ARRAY_SIZE(seeds); i++) {
		r = nb_store_type_put(c->st, seeds[i].name, seeds[i].vcpus, seeds[i].memory_mb,
				      seeds[i].disk_gb, seeds[i].net_mbps, seeds[i].price);
		if (r < 0)
			return r;
	}
	return 0;
}

void nb_core_host_changed(struct nb_ctl *c, const char *host_id)
{
	if (host_id && *host_id)
		nb_store_host_bump(c->st, host_id, NULL);
	pthread_mutex_lock(&c->gen_lock);
	c->gen_epoch++;
	pthread_cond_broadcast(&c->gen_cond);
	pthread_mutex_unlock(&c->gen_lock);
}

/* ---- presentation ---- */

static void iso_member(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	char buf[32];

	if (!json_is_integer(v))
		return;
	nb_iso8601(json_integer_value(v), buf, sizeof(buf));
	json_object_set_new(o, key, json_string(buf));
}

/* Turns a store row into the API's Instance (in place). */
static json_t *instance_view(json_t *row)
{
	json_object_del(row, "user_data");
	json_object_del(row, "account_id");
	iso_member(row, "created_at");
	iso_member(row, "updated_at");
	iso_member(row, "terminated_at");
	if (json_is_null(json_object_get(row, "host_id")))
		json_object_set_new(row, "host_id", json_string(""));
	if (json_is_null(json_object_get(row, "ip")))
		json_object_set_new(row, "ip", json_string(""));
	return row;
}

static json_t *instances_view(json_t *rows)
{
	size_t i;
	json_t *v;

	json_array_foreach(rows, i, v) instance_view(v);
	return rows;
}

static json_t *image_view(json_t *row)
{
	json_object_del(row, "account_id");
	iso_member(row, "created_at");
	return row;
}

static int fail(int code, char *err, size_t errsz, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(int code, char *err, size_t errsz, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errsz, fmt, ap);
	va_end(ap);
	return code;
}

/* ---- instances ---- */

static bool name_ok(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n > max)
		return false;
	for (const char *p = s; *p; p++)
		if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') &&
		    !(*p >= '0' && *p <= '9') && !strchr("._-", *p))
			return false;
	return true;
}

static bool base64_ok(const char *s)
{
	size_t n = 0;

	for (const char *p = s; *p; p++, n++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '+' || *p == '/' || *p == '='))
			return false;
	return n % 4 == 0;
}

static int load_hosts(struct nb_ctl *c, struct nb_sched_host **out, size_t *n)
{
	json_t *hosts, *h;
	size_t i;
	int64_t now = nb_wall_ms();
	struct nb_sched_host *arr;
	int r = nb_store_hosts_list(c->st, &hosts);

	if (r < 0)
		return r;
	arr = calloc(json_array_size(hosts) + 1, sizeof(*arr));
	if (!arr) {
		json_decref(hosts);
		return -ENOMEM;
	}
	*n = 0;
	json_array_foreach(hosts, i, h)
	{
		struct nb_sched_host *s = &arr[(*n)++];
		json_t *usage = NULL;

		nb_strlcpy(s->id, nb_json_str_or(h, "id"), sizeof(s->id));
		nb_strlcpy(s->name, nb_json_str_or(h, "name"), sizeof(s->name));
		nb_strlcpy(s->cidr, nb_json_str_or(h, "cidr"), sizeof(s->cidr));
		s->up = now - nb_json_int(h, "last_seen", 0) <= (int64_t)c->host_dead_after_s * 1000;
		s->vcpus = nb_json_int(h, "vcpus", 0) * c->cpu_overcommit;
		s->memory_mb = nb_json_int(h, "memory_mb", 0) - c->reserved_memory_mb;
		s->disk_gb = nb_json_int(h, "disk_gb", 0);
		if (nb_store_host_usage(c->st, s->id, &usage) == 0) {
			s->used_vcpus = nb_json_int(usage, "vcpus", 0);
			s->used_memory_mb = nb_json_int(usage, "memory_mb", 0);
			s->used_disk_gb = nb_json_int(usage, "disk_gb", 0);
			json_decref(usage);
		}
		/* addresses come from the instance's subnet (core/vpc.c), not the host */
	}
	json_decref(hosts);
	*out = arr;
	return 0;
}

/* Whether the account can take add_instances more instances and add_vcpus,
 * add_memory_mb more of those (stopped instances count: they keep their
 * place). Only a positive addition is checked, so shrinking is always
 * allowed. err names the one quota that does not fit; a vCPU message
 * starts "You have requested more vCPU capacity" (the EC2 edge answers it
 * with VcpuLimitExceeded). */
static int quota_fits(struct nb_ctl *c, const char *account_id, int64_t add_instances,
		      int64_t add_vcpus, int64_t add_memory_mb, char *err, size_t errsz)
{
	json_t *use = NULL;
	int64_t qi, qv, qm;
	int r = nb_store_account_usage(c->st, account_id, &use);

	if (r < 0)
		return r;
	nb_store_quota_get(c->st, account_id, "instances", c->quota_instances, &qi);
	nb_store_quota_get(c->st, account_id, "vcpus", c->quota_vcpus, &qv);
	nb_store_quota_get(c->st, account_id, "memory_mb", c->quota_memory_mb, &qm);
	int64_t ui = nb_json_int(use, "instances", 0), uv = nb_json_int(use, "vcpus", 0);
	int64_t um = nb_json_int(use, "memory_mb", 0);
	json_decref(use);
	if (add_instances > 0 && ui + add_instances > qi) {
		r = -NB_E_LIMIT;
		if (err)
			fail(r, err, errsz,
			     "You have requested more instances (%lld) than your current instance "
			     "limit of %lld allows (the account has %lld).",
			     (long long)add_instances, (long long)qi, (long long)ui);
	} else if (add_vcpus > 0 && uv + add_vcpus > qv) {
		r = -NB_E_LIMIT;
		if (err)
			fail(r, err, errsz,
			     "You have requested more vCPU capacity (%lld more) than your current "
			     "vCPU limit of %lld allows (the account uses %lld).",
			     (long long)add_vcpus, (long long)qv, (long long)uv);
	} else if (add_memory_mb > 0 && um + add_memory_mb > qm) {
		r = -NB_E_LIMIT;
		if (err)
			fail(r, err, errsz,
			     "You have requested more memory (%lld MiB more) than your current "
			     "memory limit of %lld MiB allows (the account uses %lld MiB).",
			     (long long)add_memory_mb, (long long)qm, (long long)um);
	}
	return r;
}

static int quota_check(struct nb_ctl *c, const char *account_id, const struct nb_sched_need *need,
		       int64_t n, char *err, size_t errsz)
{
	return quota_fits(c, account_id, n, n * need->vcpus, n * need->memory_mb, err, errsz);
}

static void request_hash(const json_t *req, const char *image_id, char hex[65])
{
	struct nb_buf b;

	nb_buf_init(&b, 0);
	char *tags = json_dumps(json_object_get(req, "tags"), JSON_SORT_KEYS | JSON_COMPACT);
	/* the network's parameters, when there are any (an older reservation's
	 * hash, made without them, stays the same) */
	static const char *const netkeys[] = {"subnet_id", "security_group_ids", "security_groups",
					      "private_ip", "metadata_options"};
	json_t *netreq = json_object();
	for (size_t i = 0; i < NB_ARRAY_SIZE(netkeys); i++)
		if (json_object_get(req, netkeys[i]) &&
		    !(json_is_object(json_object_get(req, netkeys[i])) &&
		      !json_object_size(json_object_get(req, netkeys[i]))))
			json_object_set(netreq, netkeys[i], json_object_get(req, netkeys[i]));
	char *net = json_object_size(netreq) ? json_dumps(netreq, JSON_SORT_KEYS | JSON_COMPACT)
					     : NULL;

	nb_buf_printf(&b, "%s|%s|%lld|%lld|%s|%s|%s|%s", image_id, nb_json_str_or(req, "type"),
		      (long long)nb_json_int(req, "count", 1),
		      (long long)nb_json_int(req, "min_count", 0), nb_json_str_or(req, "name"),
		      nb_json_str_or(req, "user_data"), nb_json_str_or(req, "key_name"),
		      tags ? tags : "");
	if (net)
		nb_buf_printf(&b, "|%s", net);
	free(tags);
	free(net);
	json_decref(netreq);
	nb_sha256_hex(b.data, b.len, hex);
	nb_buf_free(&b);
}

static int reservation_answer(struct nb_ctl *c, const char *rid, json_t **out)
{
	json_t *rows;
	int r = nb_store_reservation_instances(c->st, rid, &rows);

	if (r < 0)
		return r;
	*out = json_pack("{s:s, s:o}", "reservation_id", rid, "instances", instances_view(rows));
	return 0;
}

int nb_core_run(struct nb_ctl *c, const char *account_id, const json_t *req, json_t **out,
		char *err, size_t errsz)
{
	return nb_core_run_ex(c, account_id, req, out, err, errsz, NULL);
}

int nb_core_run_ex(struct nb_ctl *c, const char *account_id, const json_t *req, json_t **out,
		   char *err, size_t errsz, const char **code)
{
	const char *image_ref = nb_json_str(req, "image"), *type_name = nb_json_str(req, "type");
	const char *name = nb_json_str_or(req, "name"), *token = nb_json_str(req, "client_token");
	const char *user_data = nb_json_str_or(req, "user_data");
	json_t *image = NULL, *type = NULL, *prev = NULL, *cv = json_object_get(req, "count");
	struct nb_sched_host *hosts = NULL;
	size_t nhosts = 0;
	struct nb_sched_need need;
	int64_t count = 1, min_count, placed_n = 0;
	const char *key_name = nb_json_str(req, "key_name");
	json_t *tags = json_object_get(req, "tags");
	char rid[32], hash[65], **placed = NULL;
	struct nb_net_plan plan = {0};
	int r;

	if (code)
		*code = NULL;
	if (!image_ref || !*image_ref)
		return fail(-NB_E_MISSING, err, errsz, "missing parameter 'image'");
	if (!type_name || !*type_name)
		return fail(-NB_E_MISSING, err, errsz, "missing parameter 'type'");
	if (cv && !json_is_integer(cv))
		return fail(-NB_E_INVALID, err, errsz, "'count' must be an integer");
	if (cv)
		count = json_integer_value(cv);
	if (count < 1 || count > c->max_count)
		return fail(-NB_E_INVALID, err, errsz, "'count' must be between 1 and %d, not %lld",
			    c->max_count, (long long)count);
	min_count = nb_json_int(req, "min_count", count);
	if (min_count < 1 || min_count > count)
		return fail(-NB_E_INVALID, err, errsz,
			    "'min_count' must be between 1 and count (%lld), not %lld",
			    (long long)count, (long long)min_count);
	if (tags && !json_is_object(tags))
		return fail(-NB_E_INVALID, err, errsz, "'tags' must be an object of strings");
	if (key_name) {
		json_t *kp = NULL;
		if (nb_store_keypair_get(c->st, account_id, key_name, &kp) < 0)
			return fail(-NB_E_NOT_FOUND, err, errsz, "key pair '%s' not found", key_name);
		json_decref(kp);
	}
	if (*name && !name_ok(name, 128))
		return fail(-NB_E_INVALID, err, errsz,
			    "'name' must be 1 to 128 letters, digits, '.', '_' or '-'");
	if (token && (strlen(token) == 0 || strlen(token) > 64))
		return fail(-NB_E_INVALID, err, errsz, "'client_token' must be 1 to 64 characters");
	if (strlen(user_data) > NB_MAX_USER_DATA)
		return fail(-NB_E_INVALID, err, errsz, "'user_data' is larger than 16 KiB");
	if (!base64_ok(user_data))
		return fail(-NB_E_INVALID, err, errsz, "'user_data' must be base64");

	r = nb_store_image_get(c->st, account_id, image_ref, &image);
	if (r == -NB_E_NOT_FOUND) /* shared with this account, or public */
		r = nb_store_image_visible(c->st, account_id, image_ref, &image);
	if (r == -NB_E_NOT_FOUND)
		return fail(r, err, errsz, "image '%s' not found", image_ref);
	if (r < 0)
		return fail(r, err, errsz, "image lookup failed");
	if (strcmp(nb_json_str_or(image, "state"), "available")) {
		r = fail(-NB_E_STATE, err, errsz, "image '%s' is %s, not available", image_ref,
			 nb_json_str_or(image, "state"));
		goto out;
	}
	r = nb_store_type_get(c->st, type_name, &type);
	if (r == -NB_E_NOT_FOUND) {
		r = fail(-NB_E_INVALID, err, errsz, "unknown instance type '%s'", type_name);
		goto out;
	}
	if (r < 0)
		goto out;
	need.vcpus = nb_json_int(type, "vcpus", 1);
	need.memory_mb = nb_json_int(type, "memory_mb", 128);
	need.disk_gb = nb_json_int(type, "disk_gb", 1);
	if ((uint64_t)nb_json_int(image, "size", 0) > (uint64_t)need.disk_gb << 30) {
		r = fail(-NB_E_INVALID, err, errsz,
			 "image '%s' has a %lld MiB disk, larger than the %lld GiB of %s",
			 image_ref, (long long)(nb_json_int(image, "size", 0) >> 20),
			 (long long)need.disk_gb, type_name);
		goto out;
	}
	if (nb_json_str(req, "private_ip") && count > 1) {
		r = fail(-NB_E_INVALID, err, errsz,
			 "a fixed private address is for one instance, not %lld", (long long)count);
		if (code)
			*code = "InvalidParameterCombination";
		goto out;
	}
	r = nb_core_net_plan(c, account_id, req, &plan, err, errsz, code);
	if (r < 0)
		goto out;
	request_hash(req, nb_json_str_or(image, "id"), hash);

	r = nb_store_begin(c->st);
	if (r < 0)
		goto out;
	if (token && nb_store_reservation_by_token(c->st, account_id, token, &prev) == 0) {
		nb_store_rollback(c->st);
		if (strcmp(nb_json_str_or(prev, "request_hash"), hash)) {
			r = fail(-NB_E_IDEMPOTENT, err, errsz,
				 "client_token '%s' was used with other parameters", token);
			goto out;
		}
		r = reservation_answer(c, nb_json_str_or(prev, "id"), out);
		goto out;
	}
	r = load_hosts(c, &hosts, &nhosts);
	if (r < 0) {
		nb_store_rollback(c->st);
		goto out;
	}
	placed = calloc((size_t)count, sizeof(*placed));
	if (!placed) {
		nb_store_rollback(c->st);
		r = -ENOMEM;
		goto out;
	}
	r = quota_check(c, account_id, &need, min_count, err, errsz);
	if (r < 0) {
		nb_store_rollback(c->st);
		goto out;
	}
	r = nb_sched_place(hosts, nhosts, &need, (int)count, (int)min_count, placed, err, errsz);
	if (r < 0) {
		nb_store_rollback(c->st);
		goto out;
	}
	placed_n = r;
	/* as many as the quota allows, never fewer than min_count */
	while (placed_n > min_count && quota_check(c, account_id, &need, placed_n, NULL, 0) < 0)
		placed_n--;
	/* and as many as the subnet has addresses for (too few for min_count:
	 * the first interface that finds none fails the launch) */
	int64_t free_ips = nb_core_net_free(c, &plan);
	if (free_ips >= 0 && placed_n > free_ips)
		placed_n = free_ips > min_count ? free_ips : min_count;
	r = 0;
	nb_id_new("r", rid, sizeof(rid));
	r = nb_store_reservation_insert(c->st, rid, account_id, token, hash);
	for (int64_t i = 0; i < placed_n && r == 0; i++) {
		struct nb_sched_host *h = NULL;
		char id[32], mac[18], ip[16];
		json_t *row;

		for (size_t k = 0; k < nhosts; k++)
			if (placed[i] == hosts[k].id)
				h = &hosts[k];
		nb_id_new("i", id, sizeof(id));
		row = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I,"
				" s:I, s:I, s:I, s:I, s:s}",
				"id", id, "account_id", account_id, "reservation_id", rid, "name",
				name, "type", type_name, "image_id", nb_json_str_or(image, "id"),
				"host_id", h->id, "state", "pending", "desired_state", "running",
				"ip", "", "mac", "", "launch_index", (json_int_t)i, "vcpus",
				(json_int_t)need.vcpus, "memory_mb", (json_int_t)need.memory_mb,
				"disk_gb", (json_int_t)need.disk_gb, "net_mbps",
				(json_int_t)nb_json_int(type, "net_mbps", 0), "user_data", user_data);
		r = nb_store_instance_insert(c->st, row);
		json_decref(row);
		if (r == 0)
			r = nb_store_instance_set_launch(c->st, id, key_name, c->az);
		if (r == 0)
			r = nb_core_net_attach(c, account_id, &plan, id, ip, mac, err, errsz, code);
		const char *tk;
		json_t *tv;
		json_object_foreach(tags, tk, tv) if (r == 0)
			r = nb_store_tag_put(c->st, account_id, id, "instance", tk,
					     json_is_string(tv) ? json_string_value(tv) : "");
	}
	if (r < 0) {
		nb_store_rollback(c->st);
		goto out;
	}
	r = nb_store_commit(c->st);
	if (r < 0)
		goto out;
	for (size_t k = 0; k < nhosts; k++)
		for (int64_t i = 0; i < placed_n; i++)
			if (placed[i] == hosts[k].id) {
				nb_core_host_changed(c, hosts[k].id);
				break;
			}
	/* the new members of the groups: rules naming them change on other hosts */
	nb_core_net_changed(c, nb_json_str_or(plan.vpc, "id"));
	r = reservation_answer(c, rid, out);
out:
	nb_core_net_plan_free(&plan);
	free(placed);
	free(hosts);
	json_decref(prev);
	json_decref(image);
	json_decref(type);
	return r;
}

int nb_core_instances(struct nb_ctl *c, const char *account_id, const char *state, int all,
		      json_t **out)
{
	json_t *rows;
	int r = nb_store_instances_list(c->st, account_id, state, all || state, &rows);

	if (r < 0)
		return r;
	*out = json_pack("{s:o}", "instances", instances_view(rows));
	return 0;
}

int nb_core_instance(struct nb_ctl *c, const char *account_id, const char *id, json_t **out,
		     char *err, size_t errsz)
{
	json_t *row;
	int r = nb_store_instance_get(c->st, account_id, id, &row);

	if (r == -NB_E_NOT_FOUND)
		return fail(r, err, errsz, "instance '%s' not found", id);
	if (r < 0)
		return r;
	*out = instance_view(row);
	return 0;
}

int nb_core_action(struct nb_ctl *c, const char *account_id, const char *id, const char *action,
		   const json_t *opts, json_t **out, char *err, size_t errsz)
{
	int a = nb_action_parse(action);
	struct nb_transition t;
	json_t *row = NULL, *patch = NULL;
	const char *state, *desired, *host_id;
	int r;

	(void)opts;
	if (a < 0)
		return fail(-NB_E_INVALID, err, errsz, "unknown action '%s'", action);
	r = nb_store_begin(c->st);
	if (r < 0)
		return r;
	r = nb_store_instance_get(c->st, account_id, id, &row);
	if (r == -NB_E_NOT_FOUND) {
		fail(r, err, errsz, "instance '%s' not found", id);
		goto rollback;
	}
	if (r < 0)
		goto rollback;
	state = nb_json_str_or(row, "state");
	desired = nb_json_str_or(row, "desired_state");
	host_id = nb_json_str_or(row, "host_id");
	r = nb_state_apply(state, desired, (enum nb_action)a, &t);
	if (r < 0) {
		fail(r, err, errsz, "cannot %s instance %s while it is %s%s", action, id, state,
		     strcmp(state, desired) && !strcmp(state, "running") ? " (changing)" : "");
		goto rollback;
	}
	if (t.noop) {
		nb_store_rollback(c->st);
		*out = instance_view(row);
		return 0;
	}
	if (t.bump_start) {
		/* a stopped instance holds no CPU or memory: it must fit again */
		struct nb_sched_host *hosts = NULL, *h = NULL;
		size_t n = 0;
		struct nb_sched_need need = {nb_json_int(row, "vcpus", 1),
					     nb_json_int(row, "memory_mb", 128), 0};
		r = load_hosts(c, &hosts, &n);
		for (size_t i = 0; r == 0 && i < n; i++)
			if (!strcmp(hosts[i].id, host_id))
				h = &hosts[i];
		if (r == 0 && (!h || !nb_sched_fits(h, &need, err, errsz)))
			r = h ? -NB_E_CAPACITY
			      : fail(-NB_E_CAPACITY, err, errsz, "host of %s is gone", id);
		free(hosts);
		if (r < 0)
			goto rollback;
	}
	patch = json_pack("{s:s, s:s}", "state", t.state, "desired_state", t.desired);
	if (t.bump_start)
		json_object_set_new(patch, "start_seq",
				    json_integer(nb_json_int(row, "start_seq", 0) + 1));
	if (t.bump_reboot)
		json_object_set_new(patch, "reboot_seq",
				    json_integer(nb_json_int(row, "reboot_seq", 0) + 1));
	if (a == NB_ACT_STOP && json_is_true(json_object_get(opts, "force")))
		json_object_set_new(patch, "state_reason", json_string("forced stop"));
	else
		json_object_set_new(patch, "state_reason", json_string(""));
	if (a == NB_ACT_TERMINATE && !*host_id) {
		json_object_set_new(patch, "state", json_string("terminated"));
		json_object_set_new(patch, "terminated_at", json_integer(nb_wall_ms()));
	}
	r = nb_store_instance_update(c->st, id, patch);
	json_decref(patch);
	if (r < 0)
		goto rollback;
	r = nb_store_commit(c->st);
	if (r < 0)
		goto out;
	nb_core_host_changed(c, host_id);
	if (a == NB_ACT_TERMINATE) /* its interface went: group members changed */
		nb_core_net_changed(c, nb_json_str(row, "vpc_id"));
	json_decref(row);
	row = NULL;
	r = nb_core_instance(c, account_id, id, out, err, errsz);
	goto out;
rollback:
	nb_store_rollback(c->st);
out:
	json_decref(row);
	return r;
}

int nb_core_resize(struct nb_ctl *c, const char *account_id, const char *id, const char *type,
		   json_t **out, char *err, size_t errsz)
{
	json_t *row = NULL, *t = NULL, *patch;
	int r = nb_store_instance_get(c->st, account_id, id, &row);

	if (r == -NB_E_NOT_FOUND)
		return fail(r, err, errsz, "instance '%s' not found", id);
	if (r < 0)
		return r;
	if (strcmp(nb_json_str_or(row, "state"), "stopped")) {
		r = fail(-NB_E_STATE, err, errsz,
			 "The instance '%s' is not in the 'stopped' state (it is %s).", id,
			 nb_json_str_or(row, "state"));
		goto out;
	}
	r = nb_store_type_get(c->st, type, &t);
	if (r == -NB_E_NOT_FOUND) {
		r = fail(-NB_E_INVALID, err, errsz, "unknown instance type '%s'", type);
		goto out;
	}
	if (r < 0)
		goto out;
	if (nb_json_int(t, "disk_gb", 0) < nb_json_int(row, "disk_gb", 0)) {
		r = fail(-NB_E_INVALID, err, errsz,
			 "%s has a %lld GiB disk; %s's %lld GiB disk cannot shrink to it", type,
			 (long long)nb_json_int(t, "disk_gb", 0), id,
			 (long long)nb_json_int(row, "disk_gb", 0));
		goto out;
	}
	/* a stopped instance keeps its place in the account's quotas: a bigger
	 * type must fit in them */
	r = quota_fits(c, account_id, 0,
		       nb_json_int(t, "vcpus", 1) - nb_json_int(row, "vcpus", 1),
		       nb_json_int(t, "memory_mb", 128) - nb_json_int(row, "memory_mb", 128), err,
		       errsz);
	if (r < 0)
		goto out;
	patch = json_pack("{s:s, s:I, s:I, s:I, s:I}", "type", type, "vcpus",
			  (json_int_t)nb_json_int(t, "vcpus", 1), "memory_mb",
			  (json_int_t)nb_json_int(t, "memory_mb", 128), "disk_gb",
			  (json_int_t)nb_json_int(t, "disk_gb", 1), "net_mbps",
			  (json_int_t)nb_json_int(t, "net_mbps", 0));
	r = nb_store_instance_update(c->st, id, patch);
	json_decref(patch);
	if (r == 0) {
		nb_core_host_changed(c, nb_json_str_or(row, "host_id"));
		r = nb_core_instance(c, account_id, id, out, err, errsz);
	}
out:
	json_decref(row);
	json_decref(t);
	return r;
}

int nb_core_instance_host(struct nb_ctl *c, const char *account_id, const char *id,
			  json_t **host, char *err, size_t errsz)
{
	json_t *inst = NULL;
	int r = nb_core_instance(c, account_id, id, &inst, err, errsz);

	if (r < 0)
		return r;
	if (!strcmp(nb_json_str_or(inst, "state"), "terminated") ||
	    !*nb_json_str_or(inst, "host_id")) {
		r = fail(-NB_E_STATE, err, errsz, "instance %s is %s", id,
			 nb_json_str_or(inst, "state"));
		json_decref(inst);
		return r;
	}
	r = nb_store_host_get(c->st, nb_json_str_or(inst, "host_id"), host);
	json_decref(inst);
	if (r < 0)
		fail(r, err, errsz, "the host of %s is unknown", id);
	return r;
}

int nb_core_console_output(struct nb_ctl *c, const char *account_id, const char *id,
			   struct nb_buf *out, char *err, size_t errsz)
{
	char url[700];
	json_t *host = NULL;
	long status = 0;
	int r = nb_core_instance_host(c, account_id, id, &host, err, errsz);

	if (r < 0)
		return r;
	snprintf(url, sizeof(url), "%s/v1/instances/%s/console-output",
		 nb_json_str_or(host, "address"), id);
	r = nb_httpc("GET", url, nb_json_str_or(host, "agent_token"), NULL, 10000, &status, out);
	json_decref(host);
	if (r < 0 || status != 200)
		return fail(-NB_E_UNAVAILABLE, err, errsz, "the host of %s did not answer", id);
	return 0;
}

/* ---- agents ---- */

int nb_core_agent_join(struct nb_ctl *c, const char *expected, const json_t *req, json_t **out,
		       char *err, size_t errsz)
{
	const char *tok = nb_json_str_or(req, "join_token"), *name = nb_json_str_or(req, "name");
	char agent_token[65], id[32];
	json_t *h;
	int r;

	if (strlen(tok) != strlen(expected) || CRYPTO_memcmp(tok, expected, strlen(tok)))
		return fail(-NB_E_AUTH, err, errsz, "join token not accepted");
	if (!name_ok(name, 63))
		return fail(-NB_E_INVALID, err, errsz, "host 'name' missing or invalid");
	if (!nb_json_str(req, "address") || !nb_json_str(req, "cidr"))
		return fail(-NB_E_MISSING, err, errsz, "join needs 'address' and 'cidr'");
	nb_random_hex(agent_token, 64);
	h = json_deep_copy(req);
	json_object_set_new(h, "agent_token", json_string(agent_token));
	r = nb_store_host_upsert(c->st, h, id);
	json_decref(h);
	if (r < 0)
		return fail(r, err, errsz, "could not record host '%s'", name);
	*out = json_pack("{s:s, s:s}", "host_id", id, "agent_token", agent_token);
	nb_core_host_changed(c, id);
	return 0;
}

static json_t *desired_view(struct nb_ctl *c, json_t *row)
{
	json_t *image = NULL, *d;

	nb_store_image_by_id(c->st, nb_json_str_or(row, "image_id"), &image);
	d = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:s, s:s}", "id",
		      nb_json_str_or(row, "id"), "desired_state",
		      nb_json_str_or(row, "desired_state"), "start_seq",
		      (json_int_t)nb_json_int(row, "start_seq", 0), "reboot_seq",
		      (json_int_t)nb_json_int(row, "reboot_seq", 0), "vcpus",
		      (json_int_t)nb_json_int(row, "vcpus", 1), "memory_mb",
		      (json_int_t)nb_json_int(row, "memory_mb", 128), "disk_gb",
		      (json_int_t)nb_json_int(row, "disk_gb", 1), "net_mbps",
		      (json_int_t)nb_json_int(row, "net_mbps", 0), "mac",
		      nb_json_str_or(row, "mac"), "ip", nb_json_str_or(row, "ip"), "user_data",
		      nb_json_str_or(row, "user_data"));
	json_object_set_new(d, "force_stop",
			    json_boolean(!strcmp(nb_json_str_or(row, "state_reason"), "forced stop")));
	if (image) {
		json_object_set_new(
			d, "image",
			json_pack("{s:s, s:s, s:I, s:s, s:s?, s:s?, s:s?}", "id",
				  nb_json_str_or(image, "id"), "sha256",
				  nb_json_str_or(image, "sha256"), "size",
				  (json_int_t)nb_json_int(image, "size", 0), "boot_mode",
				  nb_json_str_or(image, "boot_mode"), "kernel_sha256",
				  nb_json_str(image, "kernel_sha256"), "initrd_sha256",
				  nb_json_str(image, "initrd_sha256"), "cmdline",
				  nb_json_str(image, "cmdline")));
		json_decref(image);
	}
	return d;
}

int nb_core_agent_desired(struct nb_ctl *c, const char *host_id, int64_t since, int wait_s,
			  json_t **out)
{
	int64_t deadline = nb_now_ms() + (int64_t)wait_s * 1000, gen = 0;
	json_t *host = NULL, *rows, *row, *list;
	size_t i;
	int r;

	for (;;) {
		uint64_t epoch;
		pthread_mutex_lock(&c->gen_lock);
		epoch = c->gen_epoch;
		pthread_mutex_unlock(&c->gen_lock);
		r = nb_store_host_get(c->st, host_id, &host);
		if (r < 0)
			return r;
		gen = nb_json_int(host, "generation", 0);
		json_decref(host);
		if (gen > since || nb_now_ms() >= deadline || c->stopping)
			break;
		pthread_mutex_lock(&c->gen_lock);
		while (c->gen_epoch == epoch && !c->stopping) {
			struct timespec ts;
			int64_t left = deadline - nb_now_ms();
			if (left <= 0)
				break;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += left / 1000;
			ts.tv_nsec += (left % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			if (pthread_cond_timedwait(&c->gen_cond, &c->gen_lock, &ts) != 0)
				break;
		}
		pthread_mutex_unlock(&c->gen_lock);
	}
	r = nb_store_instances_on_host(c->st, host_id, &rows);
	if (r < 0)
		return r;
	list = json_array();
	json_array_foreach(rows, i, row) json_array_append_new(list, desired_view(c, row));
	*out = json_pack("{s:I, s:o}", "generation", (json_int_t)gen, "instances", list);
	nb_core_net_desired(c, rows, list, *out);
	json_decref(rows);
	return 0;
}

int nb_core_agent_report(struct nb_ctl *c, const char *host_id, const json_t *report)
{
	json_t *items = json_object_get(report, "instances"), *it;
	size_t i;
	bool changed = false;

	nb_store_host_seen(c->st, host_id, nb_wall_ms());
	json_array_foreach(items, i, it)
	{
		const char *id = nb_json_str_or(it, "id"), *actual = nb_json_str_or(it, "state");
		json_t *row = NULL, *patch;
		const char *state, *desired, *next;
		bool reset = false, seq_current;

		if (nb_store_instance_get(c->st, NULL, id, &row) < 0)
			continue;
		if (strcmp(nb_json_str_or(row, "host_id"), host_id)) {
			json_decref(row);
			continue; /* not this host's to speak for */
		}
		state = nb_json_str_or(row, "state");
		desired = nb_json_str_or(row, "desired_state");
		seq_current = nb_json_int(it, "start_seq", -1) >= nb_json_int(row, "start_seq", 0);
		next = nb_state_from_report(state, desired, actual, seq_current, &reset);
		if (strcmp(next, state) || reset) {
			patch = json_pack("{s:s}", "state", next);
			if (reset)
				json_object_set_new(patch, "desired_state", json_string("stopped"));
			if (nb_json_str(it, "reason"))
				json_object_set_new(patch, "state_reason",
						    json_string(nb_json_str(it, "reason")));
			if (!strcmp(next, "terminated"))
				json_object_set_new(patch, "terminated_at",
						    json_integer(nb_wall_ms()));
			nb_store_instance_update(c->st, id, patch);
			json_decref(patch);
			if (reset || !strcmp(next, "terminated"))
				changed = true;
			if (!strcmp(next, "terminated")) /* its interface went with it */
				nb_core_net_changed(c, nb_json_str(row, "vpc_id"));
		}
		json_decref(row);
	}
	if (changed)
		nb_core_host_changed(c, host_id);
	return 0;
}

int nb_core_hosts(struct nb_ctl *c, json_t **out)
{
	json_t *rows, *h;
	size_t i;
	int64_t now = nb_wall_ms();
	int r = nb_store_hosts_list(c->st, &rows);

	if (r < 0)
		return r;
	json_array_foreach(rows, i, h)
	{
		bool up = now - nb_json_int(h, "last_seen", 0) <= (int64_t)c->host_dead_after_s * 1000;
		json_object_set_new(h, "state", json_string(up ? "up" : "down"));
		json_object_del(h, "agent_token");
		json_object_del(h, "generation");
		iso_member(h, "last_seen");
		iso_member(h, "created_at");
	}
	*out = json_pack("{s:o}", "hosts", rows);
	return 0;
}

void nb_core_stop(struct nb_ctl *c)
{
	pthread_mutex_lock(&c->gen_lock);
	c->stopping = true;
	pthread_cond_broadcast(&c->gen_cond);
	pthread_mutex_unlock(&c->gen_lock);
}

void nb_core_tick(struct nb_ctl *c)
{
	nb_store_purge_terminated(c->st, nb_wall_ms() - 3600 * 1000);
}

/* ---- types ---- */

int nb_core_type_put(struct nb_ctl *c, const char *name, const json_t *req, json_t **out,
		     char *err, size_t errsz)
{
	static const char *const keys[] = {"vcpus", "memory_mb", "disk_gb", "net_mbps"};
	/* memory: QEMU refuses a guest of less than 16 MiB */
	static const int64_t mins[] = {1, 16, 1, 0}, maxes[] = {64, 1 << 20, 1 << 16, 100000};
	int64_t v[4];
	json_t *price = json_object_get(req, "price_per_hour");
	int r;

	if (!name_ok(name, 64))
		return fail(-NB_E_INVALID, err, errsz, "type name '%s' is not valid", name);
	for (int i = 0; i < 4; i++) {
		json_t *x = json_object_get(req, keys[i]);
		if (!json_is_integer(x))
			return fail(-NB_E_MISSING, err, errsz, "'%s' must be an integer", keys[i]);
		v[i] = json_integer_value(x);
		if (v[i] < mins[i] || v[i] > maxes[i])
			return fail(-NB_E_INVALID, err, errsz,
				    "'%s' out of range: %lld (%lld to %lld%s)", keys[i],
				    (long long)v[i], (long long)mins[i], (long long)maxes[i],
				    i == 1 ? " MiB; QEMU needs at least 16" : "");
	}
	if (!json_is_number(price) || json_number_value(price) < 0)
		return fail(-NB_E_INVALID, err, errsz, "'price_per_hour' must be a number >= 0");
	r = nb_store_type_put(c->st, name, v[0], v[1], v[2], v[3], json_number_value(price));
	if (r < 0)
		return r;
	return nb_store_type_get(c->st, name, out);
}

/* ---- images ---- */

int nb_core_images(struct nb_ctl *c, const char *account_id, json_t **out)
{
	json_t *rows, *v;
	size_t i;
	int r = nb_store_images_list(c->st, account_id, &rows);

	if (r < 0)
		return r;
	json_array_foreach(rows, i, v) image_view(v);
	*out = json_pack("{s:o}", "images", rows);
	return 0;
}

int nb_core_image(struct nb_ctl *c, const char *account_id, const char *ref, json_t **out,
		  char *err, size_t errsz)
{
	int r = nb_store_image_get(c->st, account_id, ref, out);

	if (r == -NB_E_NOT_FOUND)
		return fail(r, err, errsz, "image '%s' not found", ref);
	if (r == 0)
		image_view(*out);
	return r;
}

/* ---- the image library: objects blobs/<sha256> of the system bucket ---- */

static bool sha_ok(const char *s)
{
	if (!s || strlen(s) != 64)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

static void blob_key(const char *sha, char *key, size_t keysz)
{
	snprintf(key, keysz, "blobs/%s", sha);
}

/* A write into the library bucket: one put up to NB_S3_PUT_MAX bytes, else
 * (or when the length is not known) a multipart upload whose parts rotate
 * every NB_LIBRARY_PART_SIZE bytes. */
struct lib_put {
	struct nb_ctl *c;
	char key[NB_S3_KEY_MAX + 1];
	struct nb_s3_put *put; /* the put, or the part being written */
	bool multipart;
	char upload_id[NB_S3_UPLOAD_ID_SIZE];
	struct nb_s3_complete_part *parts;
	char (*etags)[NB_S3_ETAG_SIZE];
	uint32_t n_parts;
	uint64_t part_written, written;
	EVP_MD_CTX *sha; /* multipart only: one put has the engine's own */
};

static int lib_part_next(struct lib_put *w)
{
	struct nb_s3_part_opts po = {.bucket = NB_LIBRARY_BUCKET, .key = w->key,
				     .upload_id = w->upload_id, .actor = NB_LIBRARY_OWNER,
				     .content_length = -1, .part_number = w->n_parts + 1};

	if (w->n_parts >= NB_S3_PARTS_MAX)
		return -E2BIG;
	w->part_written = 0;
	return nb_s3_part_begin(w->c->s3, &po, &w->put);
}

static int lib_part_end(struct lib_put *w)
{
	struct nb_s3_put_result res;
	void *p;
	int r = nb_s3_put_commit(w->put, NULL, &res);

	w->put = NULL;
	if (r < 0)
		return r;
	p = realloc(w->etags, (w->n_parts + 1) * sizeof(*w->etags));
	if (!p)
		return -ENOMEM;
	w->etags = p;
	nb_strlcpy(w->etags[w->n_parts], res.etag, NB_S3_ETAG_SIZE);
	w->n_parts++;
	return 0;
}

static void lib_put_abort(struct lib_put *w)
{
	if (!w)
		return;
	nb_s3_put_abort(w->put);
	if (w->multipart && w->upload_id[0])
		nb_s3_mpu_abort(w->c->s3, NB_LIBRARY_BUCKET, w->key, w->upload_id, NB_LIBRARY_OWNER);
	if (w->sha)
		EVP_MD_CTX_free(w->sha);
	free(w->parts);
	free(w->etags);
	free(w);
}

static int lib_put_begin(struct nb_ctl *c, const char *key, int64_t length, struct lib_put **out)
{
	struct lib_put *w = calloc(1, sizeof(*w));
	struct nb_s3_put_opts o = {.bucket = NB_LIBRARY_BUCKET, .actor = NB_LIBRARY_OWNER,
				   .meta.content_type = "application/octet-stream",
				   .content_length = length, .checksums = NB_S3_CK_SHA256};
	int r;

	*out = NULL;
	if (!w)
		return -ENOMEM;
	w->c = c;
	nb_strlcpy(w->key, key, sizeof(w->key));
	o.key = w->key;
	w->multipart = length < 0 || (uint64_t)length > NB_S3_PUT_MAX;
	if (!w->multipart) {
		r = nb_s3_put_begin(c->s3, &o, &w->put);
	} else {
		w->sha = EVP_MD_CTX_new();
		r = w->sha && EVP_DigestInit_ex(w->sha, EVP_sha256(), NULL) == 1 ? 0 : -ENOMEM;
		if (r == 0)
			r = nb_s3_mpu_create(c->s3, &o, w->upload_id);
		if (r == 0)
			r = lib_part_next(w);
	}
	if (r < 0) {
		lib_put_abort(w);
		return r;
	}
	*out = w;
	return 0;
}

static int lib_put_write(struct lib_put *w, const void *data, size_t len)
{
	const char *p = data;
	int r;

	if (!w->multipart) {
		r = nb_s3_put_write(w->put, data, len);
		w->written += r == 0 ? len : 0;
		return r;
	}
	if (EVP_DigestUpdate(w->sha, data, len) != 1)
		return -ENOMEM;
	while (len) {
		size_t n = len;
		if (w->part_written + n > NB_LIBRARY_PART_SIZE)
			n = (size_t)(NB_LIBRARY_PART_SIZE - w->part_written);
		r = nb_s3_put_write(w->put, p, n);
		if (r < 0)
			return r;
		w->part_written += n;
		w->written += n;
		p += n;
		len -= n;
		if (len && ((r = lib_part_end(w)) < 0 || (r = lib_part_next(w)) < 0))
			return r;
	}
	return 0;
}

/* The sha256 of what was written (before lib_put_commit). */
static int lib_put_sha256(struct lib_put *w, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	EVP_MD_CTX *copy;
	int r;

	if (!w->multipart)
		return nb_s3_put_sha256_hex(w->put, hex);
	copy = EVP_MD_CTX_new();
	if (!copy)
		return -ENOMEM;
	r = EVP_MD_CTX_copy_ex(copy, w->sha) == 1 && EVP_DigestFinal_ex(copy, md, &n) == 1 &&
		    n == 32
		? 0
		: -ENOMEM;
	EVP_MD_CTX_free(copy);
	for (unsigned i = 0; r == 0 && i < n; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return r;
}

/* Makes w durable under its key; sha256 (may be NULL) is what the bytes
 * must hash to, checked by the engine. Consumes w. */
static int lib_put_commit(struct lib_put *w, const char *sha256)
{
	struct nb_s3_expect ex = {.content_sha256 = sha256};
	char hex[65];
	int r;

	if (!w->multipart) {
		r = nb_s3_put_commit(w->put, sha256 ? &ex : NULL, NULL);
		w->put = NULL;
		lib_put_abort(w);
		return r == -NB_S3_E_SHA256_MISMATCH ? -EBADMSG : r;
	}
	r = lib_part_end(w);
	if (r == 0 && sha256)
		r = lib_put_sha256(w, hex) < 0 ? -ENOMEM : strcmp(hex, sha256) ? -EBADMSG : 0;
	if (r == 0) {
		w->parts = calloc(w->n_parts, sizeof(*w->parts));
		r = w->parts ? 0 : -ENOMEM;
	}
	for (uint32_t i = 0; r == 0 && i < w->n_parts; i++) {
		w->parts[i].number = i + 1;
		w->parts[i].etag = w->etags[i];
	}
	if (r == 0)
		r = nb_s3_mpu_complete(w->c->s3, NB_LIBRARY_BUCKET, w->key, w->upload_id,
				       NB_LIBRARY_OWNER, w->parts, w->n_parts, NULL, NULL, NULL);
	if (r == 0)
		w->upload_id[0] = '\0'; /* completed: nothing to abort */
	lib_put_abort(w);
	return r;
}

static bool blob_exists(struct nb_ctl *c, const char *sha)
{
	struct nb_s3_object o = {0};
	char key[80];
	int r;

	blob_key(sha, key, sizeof(key));
	r = nb_s3_object_head(c->s3, NB_LIBRARY_BUCKET, key, NULL, NB_LIBRARY_OWNER, &o);
	nb_s3_object_clear(&o);
	return r == 0;
}

/* Stores the file at path as blobs/<sha> (sha: its sha256, computed here
 * when NULL and returned in out_sha). A blob already there is kept: the
 * name is the content. */
static int blob_put_file(struct nb_ctl *c, const char *path, const char *sha, char out_sha[65])
{
	char key[80], hex[65];
	struct lib_put *w = NULL;
	struct stat stbuf;
	char *buf = NULL;
	int fd, r;

	if (!sha) {
		r = nb_sha256_file(path, hex);
		if (r < 0)
			return r;
		sha = hex;
	}
	if (out_sha)
		nb_strlcpy(out_sha, sha, 65);
	if (blob_exists(c, sha))
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	blob_key(sha, key, sizeof(key));
	r = fstat(fd, &stbuf) < 0 ? -errno : 0;
	if (r == 0)
		r = (buf = malloc(1 << 20)) ? 0 : -ENOMEM;
	if (r == 0)
		r = lib_put_begin(c, key, (int64_t)stbuf.st_size, &w);
	while (r == 0) {
		ssize_t n = read(fd, buf, 1 << 20);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			r = -errno;
		if (n <= 0)
			break;
		r = lib_put_write(w, buf, (size_t)n);
	}
	if (r == 0) {
		r = lib_put_commit(w, sha);
		w = NULL;
	}
	lib_put_abort(w);
	free(buf);
	close(fd);
	return r;
}

int nb_core_blob_open(struct nb_ctl *c, const char *sha256, struct nb_s3_reader *out)
{
	char key[80];
	int r;

	memset(out, 0, sizeof(*out));
	out->fd = -1;
	if (!sha_ok(sha256))
		return -NB_E_NOT_FOUND;
	blob_key(sha256, key, sizeof(key));
	r = nb_s3_object_open(c->s3, NB_LIBRARY_BUCKET, key, NULL, NB_LIBRARY_OWNER, NULL, NULL,
			      out);
	if (r == 0)
		r = nb_s3_reader_fd(out); /* a small blob is kept in its row */
	return r == -NB_S3_E_NO_SUCH_KEY ? -NB_E_NOT_FOUND : r;
}

static void blob_release(struct nb_ctl *c, const char *sha)
{
	char key[80];
	int64_t n = 1;
	int r;

	if (nb_store_blob_in_use(c->st, sha, &n) == 0 && n == 0) {
		blob_key(sha, key, sizeof(key));
		r = nb_s3_object_delete(c->s3, NB_LIBRARY_BUCKET, key, NULL, NB_LIBRARY_OWNER, NULL);
		if (r < 0)
			nb_warn("could not delete blob %s from the library: %s", sha,
				nb_s3_err_code(r));
	}
}

struct nb_core_upload {
	struct lib_put *w;
	uint64_t max;
};

int nb_core_upload_begin(struct nb_ctl *c, int64_t length, struct nb_core_upload **out)
{
	struct nb_core_upload *u;
	char key[64], rnd[33];
	int r;

	*out = NULL;
	if (length >= 0 && (uint64_t)length > c->max_blob)
		return -E2BIG;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->max = c->max_blob;
	nb_random_hex(rnd, 32);
	snprintf(key, sizeof(key), "uploads/%s", rnd);
	r = lib_put_begin(c, key, length, &u->w);
	if (r < 0) {
		free(u);
		return r;
	}
	*out = u;
	return 0;
}

int nb_core_upload_write(struct nb_core_upload *u, const void *data, size_t len)
{
	if (u->w->written + len > u->max)
		return -E2BIG;
	return lib_put_write(u->w, data, len);
}

void nb_core_upload_abort(struct nb_core_upload *u)
{
	if (!u)
		return;
	lib_put_abort(u->w);
	free(u);
}

int nb_core_upload_commit(struct nb_core_upload *u, const char *account_id, char sha256[65],
			  uint64_t *size)
{
	struct nb_ctl *c = u->w->c;
	struct nb_s3_copy_opts co = {.src_bucket = NB_LIBRARY_BUCKET, .bucket = NB_LIBRARY_BUCKET,
				     .actor = NB_LIBRARY_OWNER};
	char src[NB_S3_KEY_MAX + 1], dst[80];
	int r;

	nb_strlcpy(src, u->w->key, sizeof(src));
	if (size)
		*size = u->w->written;
	r = lib_put_sha256(u->w, sha256);
	if (r < 0) {
		nb_core_upload_abort(u);
		return r;
	}
	r = lib_put_commit(u->w, sha256);
	free(u);
	if (r < 0)
		return r;
	/* named by its content now: a hard link in the store, then the
	 * upload's own name goes */
	blob_key(sha256, dst, sizeof(dst));
	co.src_key = src;
	co.key = dst;
	if (!blob_exists(c, sha256))
		r = nb_s3_object_copy(c->s3, &co, NULL, NULL);
	nb_s3_object_delete(c->s3, NB_LIBRARY_BUCKET, src, NULL, NB_LIBRARY_OWNER, NULL);
	if (r == 0)
		r = nb_store_blob_owner_add(c->st, sha256, account_id);
	return r;
}

/* Removes every object under prefix of the library bucket. */
static int library_drop_prefix(struct nb_ctl *c, const char *prefix, size_t *n)
{
	struct nb_s3_list l = {0};
	struct nb_s3_list_opts lo = {.prefix = prefix, .max_keys = NB_S3_LIST_MAX};
	int r;

	for (;;) {
		r = nb_s3_list_objects(c->s3, NB_LIBRARY_BUCKET, NB_LIBRARY_OWNER, &lo, &l);
		for (size_t i = 0; r == 0 && i < l.n_items; i++) {
			r = nb_s3_object_delete(c->s3, NB_LIBRARY_BUCKET, l.items[i].key, NULL,
						NB_LIBRARY_OWNER, NULL);
			*n += r == 0;
		}
		if (r < 0 || !l.truncated || l.n_items == 0)
			break;
		nb_s3_list_clear(&l); /* deleted: the next page starts at the first left */
	}
	nb_s3_list_clear(&l);
	return r;
}

/* Files of the old library (<state_dir>/library/<sha256>) into the bucket:
 * each is hashed, stored with the engine checking the hash, and only then
 * unlinked, so a crash half way leaves at worst a file moved twice. */
static int library_migrate(struct nb_ctl *c, size_t *moved, size_t *bad)
{
	char path[PATH_MAX], hex[65];
	struct dirent *de;
	DIR *d = opendir(c->blob_dir);
	int r = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		if (!sha_ok(de->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", c->blob_dir, de->d_name);
		r = nb_sha256_file(path, hex);
		if (r == 0 && strcmp(hex, de->d_name)) {
			nb_warn("library file %s does not hash to its name: left in place", path);
			(*bad)++;
			continue;
		}
		if (r == 0)
			r = blob_put_file(c, path, hex, NULL);
		if (r < 0)
			break;
		unlink(path);
		(*moved)++;
	}
	closedir(d);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/tmp", c->blob_dir);
	d = opendir(path);
	while (d && (de = readdir(d))) {
		char f[PATH_MAX + 300];
		if (de->d_name[0] == '.')
			continue;
		snprintf(f, sizeof(f), "%s/%s", path, de->d_name);
		unlink(f);
	}
	if (d)
		closedir(d);
	rmdir(path);
	rmdir(c->blob_dir); /* stays when something was left in it */
	return 0;
}

int nb_core_library_open(struct nb_ctl *c, struct nb_s3 *s3, char *err, size_t errsz)
{
	size_t moved = 0, bad = 0, dropped = 0;
	struct nb_s3_bucket b;
	int r;

	c->s3 = s3;
	r = nb_s3_bucket_create(s3, NB_LIBRARY_BUCKET, NB_LIBRARY_OWNER, c->region, NULL);
	if (r == -NB_S3_E_BUCKET_OWNED)
		r = 0;
	if (r == -NB_S3_E_BUCKET_EXISTS && nb_s3_bucket_get(s3, NB_LIBRARY_BUCKET, &b) == 0)
		return fail(r, err, errsz,
			    "bucket %s, the image library's, belongs to account %s: rename it",
			    NB_LIBRARY_BUCKET, b.owner);
	if (r < 0)
		return fail(r, err, errsz, "cannot create the library bucket %s: %s",
			    NB_LIBRARY_BUCKET, nb_s3_err_code(r));
	/* an upload or conversion a crash interrupted */
	r = library_drop_prefix(c, "uploads/", &dropped);
	if (r == 0) {
		struct nb_s3_uploads u = {0};
		struct nb_s3_list_opts lo = {.max_keys = NB_S3_LIST_MAX};
		r = nb_s3_mpu_list(s3, NB_LIBRARY_BUCKET, NB_LIBRARY_OWNER, &lo, &u);
		for (size_t i = 0; r == 0 && i < u.n; i++, dropped++)
			nb_s3_mpu_abort(s3, NB_LIBRARY_BUCKET, u.uploads[i].key,
					u.uploads[i].upload_id, NB_LIBRARY_OWNER);
		nb_s3_uploads_clear(&u);
	}
	if (r < 0)
		return fail(r, err, errsz, "cannot clean the library bucket: %s",
			    r > -4096 ? strerror(-r) : nb_s3_err_code(r));
	r = library_migrate(c, &moved, &bad);
	if (r < 0)
		return fail(r, err, errsz, "cannot move %s into the object store: %s", c->blob_dir,
			    r > -4096 ? strerror(-r) : nb_s3_err_code(r));
	if (moved || bad || dropped)
		nb_info("library: %zu files moved from %s into bucket %s, %zu left (bad hash), "
			"%zu unfinished uploads dropped",
			moved, c->blob_dir, NB_LIBRARY_BUCKET, bad, dropped);
	return 0;
}

/* "s3://bucket/key" or "bucket/key" into its parts. */
static int parse_location(const char *loc, char bucket[NB_S3_BUCKET_NAME_MAX + 1],
			  const char **key)
{
	const char *slash;

	if (!strncmp(loc, "s3://", 5))
		loc += 5;
	slash = strchr(loc, '/');
	if (!slash || slash == loc || (size_t)(slash - loc) > NB_S3_BUCKET_NAME_MAX || !slash[1])
		return -NB_E_INVALID;
	memcpy(bucket, loc, (size_t)(slash - loc));
	bucket[slash - loc] = '\0';
	*key = slash + 1;
	if (nb_s3_bucket_name_check(bucket, NULL) < 0 || nb_s3_key_check(*key, strlen(*key)) < 0)
		return -NB_E_INVALID;
	return 0;
}

/* Opens s3://bucket/key with account_id's rights: its own bucket, or any
 * public-read one. */
static int source_open(struct nb_ctl *c, const char *account_id, const char *loc,
		       struct nb_s3_reader *rd, char *err, size_t errsz)
{
	char bucket[NB_S3_BUCKET_NAME_MAX + 1];
	const char *key;
	struct nb_s3_bucket b;
	int r;

	if (parse_location(loc, bucket, &key) < 0)
		return fail(-NB_E_INVALID, err, errsz,
			    "'%.200s' is not an object location (s3://bucket/key)", loc);
	r = nb_s3_bucket_get(c->s3, bucket, &b);
	if (r == 0)
		r = nb_s3_object_open(c->s3, bucket, key, NULL,
				      b.public_read && strcmp(b.owner, account_id) ? NULL
										   : account_id,
				      NULL, NULL, rd);
	if (r == 0)
		r = nb_s3_reader_fd(rd); /* qemu-img and the copy read a file */
	switch (r) {
	case 0:
		return 0;
	case -NB_S3_E_NO_SUCH_BUCKET:
		return fail(-NB_E_NOT_FOUND, err, errsz, "NoSuchBucket: s3://%s does not exist",
			    bucket);
	case -NB_S3_E_NO_SUCH_KEY:
		return fail(-NB_E_NOT_FOUND, err, errsz, "NoSuchKey: s3://%s/%.200s does not exist",
			    bucket, key);
	case -NB_S3_E_ACCESS_DENIED:
		return fail(-NB_E_FORBIDDEN, err, errsz,
			    "AccessDenied: s3://%s/%.200s is not readable by this account", bucket,
			    key);
	default:
		return fail(r > -4096 ? r : -NB_E_INTERNAL, err, errsz, "reading s3://%s/%.200s: %s",
			    bucket, key, r > -4096 ? strerror(-r) : nb_s3_err_code(r));
	}
}

int nb_core_image_source_check(struct nb_ctl *c, const char *account_id, const char *loc,
			       char *err, size_t errsz)
{
	struct nb_s3_reader rd = {.fd = -1};
	int r = source_open(c, account_id, loc, &rd, err, errsz);

	nb_s3_reader_close(&rd);
	return r;
}

/* A disk qemu-img may read: no file of the host beyond itself (a backing
 * file, a qcow2 external data file, a vmdk extent elsewhere). */
static bool disk_self_contained(const json_t *info, const char *path)
{
	const json_t *spec = json_object_get(json_object_get(info, "format-specific"), "data");
	const json_t *ext = json_object_get(spec, "extents"), *e;
	size_t i;

	if (json_object_get(info, "backing-filename") ||
	    json_object_get(info, "full-backing-filename") || json_object_get(spec, "data-file"))
		return false;
	json_array_foreach(ext, i, e)
		if (strcmp(nb_json_str_or(e, "filename"), path))
			return false;
	return true;
}

int nb_core_image_create(struct nb_ctl *c, const char *account_id, const json_t *req,
			 json_t **out, char *err, size_t errsz)
{
	static const char *const formats[] = {"qcow2", "raw", "vmdk", "vdi", "vhdx", "vpc"};
	const char *name = nb_json_str_or(req, "name"), *disk = nb_json_str(req, "disk_blob");
	const char *kernel = nb_json_str(req, "kernel_blob"), *initrd = nb_json_str(req, "initrd_blob");
	const char *cmdline = nb_json_str(req, "cmdline"), *source = nb_json_str(req, "source");
	char src[PATH_MAX], tmp[PATH_MAX], sha[65], id[32], rnd[17];
	struct nb_s3_reader rd = {.fd = -1};
	struct nb_buf o;
	json_t *info = NULL, *image = NULL, *existing = NULL;
	const char *fmt;
	bool fmt_ok = false;
	struct stat stbuf;
	int64_t vsize;
	int r;

	if (!name_ok(name, 128))
		return fail(-NB_E_INVALID, err, errsz,
			    "image 'name' must be 1 to 128 letters, digits, '.', '_' or '-'");
	{
		json_t *use = NULL;
		int64_t qimg = c->quota_images;
		nb_store_quota_get(c->st, account_id, "images", c->quota_images, &qimg);
		if (nb_store_account_usage(c->st, account_id, &use) == 0 &&
		    nb_json_int(use, "images", 0) >= qimg) {
			json_decref(use);
			return fail(-NB_E_LIMIT, err, errsz,
				    "the account has %lld images, its limit", (long long)qimg);
		}
		json_decref(use);
	}
	if (nb_store_image_get(c->st, account_id, name, &existing) == 0) {
		json_decref(existing);
		return fail(-NB_E_CONFLICT, err, errsz, "an image named '%s' exists already", name);
	}
	if (source && disk)
		return fail(-NB_E_INVALID, err, errsz, "give 'disk_blob' or 'source', not both");
	if (!source && !sha_ok(disk))
		return fail(-NB_E_MISSING, err, errsz,
			    "'disk_blob' must be the sha256 of an upload, or 'source' an s3://bucket/key");
	if ((kernel && !sha_ok(kernel)) || (initrd && !sha_ok(initrd)) || (initrd && !kernel))
		return fail(-NB_E_INVALID, err, errsz,
			    "'kernel_blob'/'initrd_blob' must be uploads' sha256 (initrd needs a kernel)");
	if (cmdline && strlen(cmdline) > 2048)
		return fail(-NB_E_INVALID, err, errsz, "'cmdline' is longer than 2048 characters");
	const char *blobs[] = {disk, kernel, initrd};
	for (int i = 0; i < 3; i++) {
		if (!blobs[i])
			continue;
		int allowed = 0;
		if (nb_store_blob_allowed(c->st, blobs[i], account_id, &allowed) < 0 || !allowed ||
		    !blob_exists(c, blobs[i]))
			return fail(-NB_E_NOT_FOUND, err, errsz, "blob %s was not uploaded", blobs[i]);
	}
	if (source)
		r = source_open(c, account_id, source, &rd, err, errsz);
	else if ((r = nb_core_blob_open(c, disk, &rd)) < 0)
		fail(r == -NB_E_NOT_FOUND ? r : -NB_E_INTERNAL, err, errsz,
		     "blob %s cannot be read", disk);
	if (r < 0) {
		nb_s3_reader_close(&rd);
		return r == -NB_E_NOT_FOUND || r == -NB_E_FORBIDDEN || r == -NB_E_INVALID
			   ? r
			   : -NB_E_INTERNAL;
	}
	/* qemu-img reads the object's own data file, through the descriptor
	 * the store handed out: no copy, and read-only */
	snprintf(src, sizeof(src), "/proc/%d/fd/%d", (int)getpid(), rd.fd);

	nb_buf_init(&o, 1 << 20);
	tmp[0] = '\0';
	const char *info_argv[] = {"qemu-img", "info", "--output=json", src, NULL};
	r = nb_run(info_argv, 60000, &o);
	info = r == 0 ? json_loads(o.data, 0, NULL) : NULL;
	if (!info) {
		r = fail(-NB_E_INVALID, err, errsz, "the disk is not an image qemu-img can read");
		goto out;
	}
	fmt = nb_json_str_or(info, "format");
	for (size_t i = 0; i < NB_ARRAY_SIZE(formats); i++)
		fmt_ok |= !strcmp(fmt, formats[i]);
	if (!fmt_ok) {
		r = fail(-NB_E_INVALID, err, errsz, "disk format '%s' is not supported", fmt);
		goto out;
	}
	if (!disk_self_contained(info, src)) {
		r = fail(-NB_E_INVALID, err, errsz,
			 "a disk with a backing file, data file or extents elsewhere cannot be imported");
		goto out;
	}
	vsize = nb_json_int(info, "virtual-size", 0);
	if (vsize <= 0) {
		r = fail(-NB_E_INVALID, err, errsz, "the disk has no size");
		goto out;
	}
	nb_random_hex(rnd, 16);
	snprintf(tmp, sizeof(tmp), "%s/convert-%s.qcow2", c->tmp_dir, rnd);
	const char *conv_argv[] = {"qemu-img", "convert", "-q", "-f", fmt, "-O", "qcow2", src, tmp, NULL};
	nb_buf_reset(&o);
	r = nb_run(conv_argv, 3600 * 1000, &o);
	if (r != 0) {
		r = fail(-NB_E_INVALID, err, errsz, "converting the %s disk failed: %.120s", fmt,
			 o.data ? o.data : "");
		goto out;
	}
	nb_s3_reader_close(&rd); /* the source is read */
	r = stat(tmp, &stbuf) < 0 ? -errno : 0;
	if (r == 0)
		r = blob_put_file(c, tmp, NULL, sha);
	if (r < 0) {
		fail(r > -4096 ? r : -NB_E_INTERNAL, err, errsz,
		     "storing the converted disk failed: %s",
		     r > -4096 ? strerror(-r) : nb_s3_err_code(r));
		r = r > -4096 ? r : -NB_E_INTERNAL;
		goto out;
	}
	nb_id_new("ami", id, sizeof(id));
	image = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s?, s:s?,"
			  " s:s?, s:s, s:s}",
			  "id", id, "account_id", account_id, "name", name, "os",
			  nb_json_str(req, "os") ? nb_json_str(req, "os") : "unknown", "release",
			  nb_json_str_or(req, "release"), "arch",
			  nb_json_str(req, "arch") ? nb_json_str(req, "arch") : "x86_64", "format",
			  "qcow2", "size", (json_int_t)vsize, "file_size", (json_int_t)stbuf.st_size,
			  "sha256", sha, "boot_mode", kernel ? "kernel" : "disk", "kernel_sha256",
			  kernel, "initrd_sha256", initrd, "cmdline", cmdline, "state", "available",
			  "description", nb_json_str_or(req, "description"));
	r = nb_store_image_insert(c->st, image);
	if (r < 0) {
		blob_release(c, sha);
		fail(r, err, errsz, "recording image '%s' failed", name);
		goto out;
	}
	if (disk && strcmp(sha, disk) && !json_is_true(json_object_get(req, "keep_source")))
		blob_release(c, disk); /* the upload was converted */
	r = nb_core_image(c, account_id, id, out, err, errsz);
out:
	if (tmp[0])
		unlink(tmp);
	nb_s3_reader_close(&rd);
	nb_buf_free(&o);
	json_decref(info);
	json_decref(image);
	return r;
}

int nb_core_image_delete(struct nb_ctl *c, const char *account_id, const char *ref, char *err,
			 size_t errsz)
{
	json_t *image;
	int64_t n = 0;
	int r = nb_store_image_get(c->st, account_id, ref, &image);
	char sha[3][65] = {"", "", ""};

	if (r == -NB_E_NOT_FOUND)
		return fail(r, err, errsz, "image '%s' not found", ref);
	if (r < 0)
		return r;
	r = nb_store_image_in_use(c->st, nb_json_str_or(image, "id"), &n);
	if (r == 0 && n > 0)
		r = fail(-NB_E_CONFLICT, err, errsz, "image '%s' is used by %lld instance(s)", ref,
			 (long long)n);
	if (r == 0)
		r = nb_store_image_delete(c->st, nb_json_str_or(image, "id"));
	if (r == 0) {
		nb_strlcpy(sha[0], nb_json_str_or(image, "sha256"), 65);
		nb_strlcpy(sha[1], nb_json_str_or(image, "kernel_sha256"), 65);
		nb_strlcpy(sha[2], nb_json_str_or(image, "initrd_sha256"), 65);
		for (int i = 0; i < 3; i++)
			if (sha_ok(sha[i]))
				blob_release(c, sha[i]);
	}
	json_decref(image);
	return r;
}

/* ---- snapshots (CreateImage) ---- */

struct snap_job {
	struct nb_ctl *c;
	char image_id[32], instance_id[32], address[256], token[128];
	int64_t size;
};

static void *snap_thread(void *p)
{
	struct snap_job *j = p;
	char url[700], tmp[PATH_MAX], sha[65], rnd[17];
	struct nb_buf out;
	long status = 0;
	struct stat stbuf;
	int r;

	nb_buf_init(&out, 1 << 20);
	snprintf(url, sizeof(url), "%s/v1/instances/%s/snapshot?name=%s", j->address,
		 j->instance_id, j->image_id);
	r = nb_httpc("POST", url, j->token, NULL, 3600 * 1000, &status, &out);
	if (r == 0 && status == 200) {
		snprintf(url, sizeof(url), "%s/v1/instances/%s/snapshot/%s", j->address,
			 j->instance_id, j->image_id);
		nb_random_hex(rnd, 16);
		snprintf(tmp, sizeof(tmp), "%s/snapshot-%s.qcow2", j->c->tmp_dir, rnd);
		r = nb_httpc_download(url, j->token, tmp, &status);
		if (r == 0 && status != 200)
			r = -EIO;
		if (r == 0)
			r = stat(tmp, &stbuf) < 0 ? -errno : 0;
		if (r == 0)
			r = blob_put_file(j->c, tmp, NULL, sha);
		unlink(tmp);
		nb_httpc("DELETE", url, j->token, NULL, 30000, &status, NULL);
	} else if (r == 0) {
		r = -EIO;
	}
	if (r == 0)
		r = nb_store_image_ready(j->c->st, j->image_id, sha, j->size, stbuf.st_size,
					 "available");
	if (r < 0)
		nb_store_image_ready(j->c->st, j->image_id, NULL, j->size, 0, "failed");
	nb_buf_free(&out);
	free(j);
	return NULL;
}

/* The account's images quota, for one more image. */
static int snapshot_quota_check(struct nb_ctl *c, const char *account_id, char *err,
				size_t errsz)
{
	json_t *use = NULL;
	int64_t qimg = c->quota_images, have;
	int r;

	nb_store_quota_get(c->st, account_id, "images", c->quota_images, &qimg);
	r = nb_store_account_usage(c->st, account_id, &use);
	if (r < 0)
		return fail(r, err, errsz, "reading the account's usage failed");
	have = nb_json_int(use, "images", 0);
	json_decref(use);
	if (have >= qimg)
		return fail(-NB_E_LIMIT, err, errsz,
			    "You have reached your images limit of %lld (the account has %lld).",
			    (long long)qimg, (long long)have);
	return 0;
}

int nb_core_image_snapshot(struct nb_ctl *c, const char *account_id, const json_t *req,
			   json_t **out, char *err, size_t errsz)
{
	const char *iid = nb_json_str_or(req, "instance_id"), *name = nb_json_str_or(req, "name");
	json_t *inst = NULL, *src = NULL, *host = NULL, *image = NULL, *existing = NULL;
	struct snap_job *j = NULL;
	const char *state;
	char id[32];
	pthread_t th;
	int r;

	if (!name_ok(name, 128))
		return fail(-NB_E_INVALID, err, errsz,
			    "image 'name' must be 1 to 128 letters, digits, '.', '_' or '-'");
	if (nb_store_image_get(c->st, account_id, name, &existing) == 0) {
		json_decref(existing);
		return fail(-NB_E_CONFLICT, err, errsz, "an image named '%s' exists already", name);
	}
	r = snapshot_quota_check(c, account_id, err, errsz);
	if (r < 0)
		return r;
	r = nb_store_instance_get(c->st, account_id, iid, &inst);
	if (r < 0)
		return fail(r, err, errsz, "instance '%s' not found", iid);
	state = nb_json_str_or(inst, "state");
	if (strcmp(state, "running") && strcmp(state, "stopped") && strcmp(state, "paused")) {
		r = fail(-NB_E_STATE, err, errsz,
			 "The instance '%s' is %s; an image needs a running or stopped one", iid,
			 state);
		goto out;
	}
	r = nb_store_host_get(c->st, nb_json_str_or(inst, "host_id"), &host);
	if (r == 0)
		r = nb_store_image_by_id(c->st, nb_json_str_or(inst, "image_id"), &src);
	if (r < 0) {
		fail(r, err, errsz, "the host or source image of %s is gone", iid);
		goto out;
	}
	nb_id_new("ami", id, sizeof(id));
	image = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s?, s:s?,"
			  " s:s?, s:s, s:s, s:s}",
			  "id", id, "account_id", account_id, "name", name, "os",
			  nb_json_str_or(src, "os"), "release", nb_json_str_or(src, "release"), "arch",
			  nb_json_str_or(src, "arch"), "format", "qcow2", "size",
			  (json_int_t)(nb_json_int(inst, "disk_gb", 1) << 30), "file_size",
			  (json_int_t)0, "sha256", "", "boot_mode", nb_json_str_or(src, "boot_mode"),
			  "kernel_sha256", nb_json_str(src, "kernel_sha256"), "initrd_sha256",
			  nb_json_str(src, "initrd_sha256"), "cmdline", nb_json_str(src, "cmdline"),
			  "state", "pending", "description", nb_json_str_or(req, "description"),
			  "source_instance", iid);
	r = nb_store_image_insert(c->st, image);
	if (r < 0) {
		fail(r, err, errsz, "recording image '%s' failed", name);
		goto out;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		r = -ENOMEM;
		goto out;
	}
	j->c = c;
	j->size = nb_json_int(inst, "disk_gb", 1) << 30;
	nb_strlcpy(j->image_id, id, sizeof(j->image_id));
	nb_strlcpy(j->instance_id, iid, sizeof(j->instance_id));
	nb_strlcpy(j->address, nb_json_str_or(host, "address"), sizeof(j->address));
	nb_strlcpy(j->token, nb_json_str_or(host, "agent_token"), sizeof(j->token));
	if (pthread_create(&th, NULL, snap_thread, j) != 0) {
		free(j);
		nb_store_image_delete(c->st, id);
		r = fail(-NB_E_INTERNAL, err, errsz, "could not start the snapshot");
		goto out;
	}
	pthread_detach(th);
	r = nb_core_image(c, account_id, id, out, err, errsz);
out:
	json_decref(inst);
	json_decref(src);
	json_decref(host);
	json_decref(image);
	return r;
}

/* ---- accounts, keys, quotas ---- */

static const char *const quota_names[] = {"instances", "vcpus", "memory_mb", "images",
					  "addresses"};

static int64_t quota_default(struct nb_ctl *c, int i)
{
	const int64_t d[] = {c->quota_instances, c->quota_vcpus, c->quota_memory_mb,
			     c->quota_images, c->quota_addresses};
	return d[i];
}

int nb_core_account_create(struct nb_ctl *c, const char *name, json_t **out, char *err,
			   size_t errsz)
{
	char id[32];
	json_t *old = NULL;
	int r;

	if (!name || !name_ok(name, 63))
		return fail(-NB_E_INVALID, err, errsz,
			    "account 'name' must be 1 to 63 letters, digits, '.', '_' or '-'");
	if (nb_store_account_get(c->st, name, &old) == 0) {
		json_decref(old);
		return fail(-NB_E_CONFLICT, err, errsz, "account '%s' exists already", name);
	}
	r = nb_store_account_ensure(c->st, name, id);
	if (r < 0)
		return fail(r, err, errsz, "creating account '%s' failed", name);
	json_t *vpc = NULL;
	r = nb_core_default_vpc(c, id, &vpc, err, errsz);
	json_decref(vpc);
	if (r < 0)
		return r;
	r = nb_store_account_get(c->st, id, out);
	if (r == 0)
		iso_member(*out, "created_at");
	return r;
}

int nb_core_key_create(struct nb_ctl *c, const struct nb_secrets *secrets, const char *account,
		       const char *user, const char *role, json_t **out, char *err, size_t errsz)
{
	json_t *acct = NULL, *u = NULL;
	char kid[21], secret[41], uid[32], *sealed = NULL;
	int r;

	bool role_given = role != NULL;

	if (!user)
		user = "admin";
	if (!role)
		role = strcmp(user, "admin") ? "member" : "admin";
	if (strcmp(role, "admin") && strcmp(role, "member") && strcmp(role, "read-only"))
		return fail(-NB_E_INVALID, err, errsz,
			    "role must be admin, member or read-only, not '%s'", role);
	if (!name_ok(user, 63))
		return fail(-NB_E_INVALID, err, errsz, "user name '%s' is not valid", user);
	r = nb_store_account_get(c->st, account ? account : "", &acct);
	if (r < 0)
		return fail(-NB_E_NOT_FOUND, err, errsz, "account '%s' not found",
			    account ? account : "");
	if (nb_store_user_get(c->st, nb_json_str_or(acct, "id"), user, &u) == 0) {
		nb_strlcpy(uid, nb_json_str_or(u, "id"), sizeof(uid));
		if (!role_given) /* a key of an existing user has the user's role */
			role = nb_json_str_or(u, "role");
		if (strcmp(nb_json_str_or(u, "role"), role)) {
			r = fail(-NB_E_CONFLICT, err, errsz, "user '%s' exists with role %s", user,
				 nb_json_str_or(u, "role"));
			goto out;
		}
	} else {
		r = nb_store_user_add(c->st, nb_json_str_or(acct, "id"), user, role, uid);
		if (r < 0) {
			fail(r, err, errsz, "creating user '%s' failed", user);
			goto out;
		}
	}
	r = nb_secrets_new_key(kid, secret);
	if (r == 0)
		r = nb_secrets_seal(secrets, secret, &sealed);
	if (r == 0)
		r = nb_store_key_add(c->st, kid, uid, sealed);
	if (r < 0) {
		fail(r, err, errsz, "creating the key failed");
		goto out;
	}
	*out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "access_key_id", kid,
			 "secret_access_key", secret, "account_id", nb_json_str_or(acct, "id"),
			 "account", nb_json_str_or(acct, "name"), "user", user, "role", role);
out:
	OPENSSL_cleanse(secret, sizeof(secret));
	free(sealed);
	json_decref(acct);
	json_decref(u);
	return r;
}

/* ---- users of an account ---- */

static bool role_ok(const char *role)
{
	return role && (!strcmp(role, "admin") || !strcmp(role, "member") ||
			!strcmp(role, "read-only"));
}

/* The account (id or name) as a row, or -NB_E_NOT_FOUND with err. */
static int account_row(struct nb_ctl *c, const char *account, json_t **acct, char *err,
		       size_t errsz)
{
	if (!account || nb_store_account_get(c->st, account, acct) < 0)
		return fail(-NB_E_NOT_FOUND, err, errsz, "account '%s' not found",
			    account ? account : "");
	return 0;
}

/* One user as the API shows it: the store's row with ISO times and its account. */
static int user_answer(struct nb_ctl *c, json_t *acct, const char *name, json_t **out, char *err,
		       size_t errsz)
{
	json_t *rows = NULL, *u;
	size_t i;
	int r = nb_store_users_list(c->st, nb_json_str_or(acct, "id"), &rows);

	if (r < 0)
		return fail(r, err, errsz, "listing the users failed");
	r = fail(-NB_E_NOT_FOUND, err, errsz, "user '%s' not found", name);
	json_array_foreach(rows, i, u) if (!strcmp(nb_json_str_or(u, "name"), name))
	{
		*out = json_incref(u);
		iso_member(*out, "created_at");
		json_object_set_new(*out, "account", json_string(nb_json_str_or(acct, "name")));
		json_object_set_new(*out, "account_id", json_string(nb_json_str_or(acct, "id")));
		r = 0;
		break;
	}
	json_decref(rows);
	return r;
}

int nb_core_users(struct nb_ctl *c, const char *account, json_t **out, char *err, size_t errsz)
{
	json_t *acct = NULL, *rows = NULL, *u;
	size_t i;
	int r = account_row(c, account, &acct, err, errsz);

	if (r < 0)
		return r;
	r = nb_store_users_list(c->st, nb_json_str_or(acct, "id"), &rows);
	if (r < 0) {
		fail(r, err, errsz, "listing the users failed");
		goto out;
	}
	json_array_foreach(rows, i, u) iso_member(u, "created_at");
	*out = json_pack("{s:s, s:s, s:o}", "account", nb_json_str_or(acct, "name"), "account_id",
			 nb_json_str_or(acct, "id"), "users", rows);
out:
	json_decref(acct);
	return r;
}

int nb_core_user_create(struct nb_ctl *c, const char *account, const char *name,
			const char *role, json_t **out, char *err, size_t errsz)
{
	json_t *acct = NULL, *old = NULL;
	char uid[32];
	int r;

	if (!name || !name_ok(name, 63))
		return fail(-NB_E_INVALID, err, errsz,
			    "user 'name' must be 1 to 63 letters, digits, '.', '_' or '-'");
	if (!role_ok(role))
		return fail(-NB_E_INVALID, err, errsz,
			    "'role' must be admin, member or read-only, not '%s'", role ? role : "");
	r = account_row(c, account, &acct, err, errsz);
	if (r < 0)
		return r;
	if (nb_store_user_get(c->st, nb_json_str_or(acct, "id"), name, &old) == 0) {
		r = fail(-NB_E_CONFLICT, err, errsz, "user '%s' exists already (role %s)", name,
			 nb_json_str_or(old, "role"));
		goto out;
	}
	r = nb_store_user_add(c->st, nb_json_str_or(acct, "id"), name, role, uid);
	if (r == -NB_E_CONFLICT)
		fail(r, err, errsz, "user '%s' exists already", name);
	else if (r < 0)
		fail(r, err, errsz, "creating user '%s' failed", name);
	if (r == 0)
		r = user_answer(c, acct, name, out, err, errsz);
out:
	json_decref(acct);
	json_decref(old);
	return r;
}

int nb_core_user_set_role(struct nb_ctl *c, const char *account, const char *name,
			  const char *role, json_t **out, char *err, size_t errsz)
{
	json_t *acct = NULL;
	int r;

	if (!role_ok(role))
		return fail(-NB_E_INVALID, err, errsz,
			    "'role' must be admin, member or read-only, not '%s'", role ? role : "");
	r = account_row(c, account, &acct, err, errsz);
	if (r < 0)
		return r;
	r = nb_store_user_set_role(c->st, nb_json_str_or(acct, "id"), name, role);
	if (r == -NB_E_NOT_FOUND)
		fail(r, err, errsz, "user '%s' not found", name);
	else if (r < 0)
		fail(r, err, errsz, "changing the role of '%s' failed", name);
	if (r == 0)
		r = user_answer(c, acct, name, out, err, errsz);
	json_decref(acct);
	return r;
}

int nb_core_user_delete(struct nb_ctl *c, const char *account, const char *name, char *err,
			size_t errsz)
{
	json_t *acct = NULL;
	int r = account_row(c, account, &acct, err, errsz);

	if (r < 0)
		return r;
	r = nb_store_user_delete(c->st, nb_json_str_or(acct, "id"), name);
	if (r == -NB_E_NOT_FOUND)
		fail(r, err, errsz, "user '%s' not found", name);
	else if (r < 0)
		fail(r, err, errsz, "deleting user '%s' failed", name);
	json_decref(acct);
	return r;
}

int nb_core_quotas_get(struct nb_ctl *c, const char *account, json_t **out, char *err,
		       size_t errsz)
{
	json_t *acct = NULL, *use = NULL;
	int r = nb_store_account_get(c->st, account, &acct);

	if (r < 0)
		return fail(-NB_E_NOT_FOUND, err, errsz, "account '%s' not found", account);
	r = nb_store_account_usage(c->st, nb_json_str_or(acct, "id"), &use);
	if (r < 0)
		goto out;
	*out = json_pack("{s:s, s:{}, s:O}", "account", nb_json_str_or(acct, "name"), "limits",
			 "usage", use);
	for (size_t i = 0; i < NB_ARRAY_SIZE(quota_names); i++) {
		int64_t v = 0;
		nb_store_quota_get(c->st, nb_json_str_or(acct, "id"), quota_names[i],
				   quota_default(c, (int)i), &v);
		json_object_set_new(json_object_get(*out, "limits"), quota_names[i],
				    json_integer(v));
	}
out:
	json_decref(acct);
	json_decref(use);
	return r;
}

int nb_core_quotas_set(struct nb_ctl *c, const char *account, const json_t *req, json_t **out,
		       char *err, size_t errsz)
{
	json_t *acct = NULL;
	const char *k;
	json_t *v;
	int r = nb_store_account_get(c->st, account, &acct);

	if (r < 0)
		return fail(-NB_E_NOT_FOUND, err, errsz, "account '%s' not found", account);
	json_object_foreach((json_t *)req, k, v)
	{
		bool known = false;
		for (size_t i = 0; i < NB_ARRAY_SIZE(quota_names); i++)
			known |= !strcmp(k, quota_names[i]);
		if (!known || !json_is_integer(v) || json_integer_value(v) < 0) {
			json_decref(acct);
			return fail(-NB_E_INVALID, err, errsz,
				    "quota '%s' must be one of instances, vcpus, memory_mb, images, "
				    "addresses with an integer >= 0",
				    k);
		}
	}
	json_object_foreach((json_t *)req, k, v)
		nb_store_quota_set(c->st, nb_json_str_or(acct, "id"), k, json_integer_value(v));
	json_decref(acct);
	return nb_core_quotas_get(c, account, out, err, errsz);
}
