/* nubo-agent: one per host. Joins nubod, long-polls its desired state,
 * reconciles QEMU processes towards it, and reports what is there. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/qmp/qmp_cmd.h"
#include "api/http.h"
#include "common/config.h"
#include "common/err.h"
#include "common/httpc.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "net/net.h"

static const struct nb_conf_key agent_schema[] = {
	{"controller", NB_CONF_STR, "http://127.0.0.1:8787", "nubod's API base URL"},
	{"join_token", NB_CONF_STR, "", "the controller's join token (or join_token_file)"},
	{"join_token_file", NB_CONF_STR, "/var/lib/nubo/join.token", "file holding the join token"},
	{"name", NB_CONF_STR, "", "this host's name (default: the hostname)"},
	{"listen", NB_CONF_STR, "127.0.0.1:8788", "address:port of the agent's own API (consoles)"},
	{"advertise", NB_CONF_STR, "", "URL nubod uses to reach this agent (default http://<listen>)"},
	{"state_dir", NB_CONF_STR, "/var/lib/nubo/agent", "image cache and instance directories"},
	{"accel", NB_CONF_STR, "auto", "auto, kvm or tcg"},
	{"qemu", NB_CONF_STR, "qemu-system-x86_64", "the QEMU binary"},
	{"shim", NB_CONF_STR, "", "the nubo-shim binary (default: beside nubo-agent)"},
	{"network", NB_CONF_BOOL, "true", "give each VM a NIC on the host bridge"},
	{"bridge", NB_CONF_STR, "nbbr0", "the host bridge the VMs' taps join"},
	{"cidr", NB_CONF_STR, "10.213.0.0/24", "the bridge's network; .1 is the gateway"},
	{"cgroup_root", NB_CONF_STR, "/sys/fs/cgroup", "where the cgroup hierarchies are mounted"},
	{"stop_timeout", NB_CONF_INT, "30", "seconds an ACPI shutdown may take before a hard stop"},
	{"vpc_keep", NB_CONF_INT, "60",
	 "seconds a VPC's namespace stays after its last instance here went (0: removed at once)"},
	{"console_log_max", NB_CONF_SIZE, "1M", "cap of each VM's console log (one older file kept)"},
	{"vcpus", NB_CONF_INT, "0", "vCPUs offered (0: the host's cores)"},
	{"memory_mb", NB_CONF_INT, "0", "memory offered in MiB (0: the host's memory)"},
	{"disk_gb", NB_CONF_INT, "0", "disk offered in GiB (0: free space of state_dir)"},
	{"log_level", NB_CONF_STR, "info", "debug, info, warn or error"},
	{NULL, 0, NULL, NULL},
};

static struct nb_agent agent;

static void wake(struct nb_agent *a)
{
	char c = 1;

	if (write(a->wake_fd[1], &c, 1) < 0) {
		/* the pipe is full: the loop wakes anyway */
	}
}

static struct nb_vm *find_vm(struct nb_agent *a, const char *id)
{
	for (int i = 0; i < a->nvms; i++)
		if (!strcmp(a->vms[i]->id, id))
			return a->vms[i];
	return NULL;
}

static struct nb_vm *add_vm(struct nb_agent *a, const char *id)
{
	struct nb_vm *vm;

	if (a->nvms >= NB_AGENT_MAX_VMS)
		return NULL;
	vm = nb_vm_new(a, id);
	if (vm)
		a->vms[a->nvms++] = vm;
	return vm;
}

/* ---- joining and talking to nubod ---- */

static int join(struct nb_agent *a)
{
	struct statvfs sv;
	struct nb_buf out;
	long status = 0, pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGE_SIZE);
	char url[400];
	json_t *req, *resp;
	int r;

	if (!a->cfg.vcpus)
		a->cfg.vcpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (!a->cfg.memory_mb)
		a->cfg.memory_mb = (int64_t)pages * psz / (1 << 20);
	if (!a->cfg.disk_gb && statvfs(a->cfg.state_dir, &sv) == 0)
		a->cfg.disk_gb = (int64_t)((uint64_t)sv.f_bavail * sv.f_frsize >> 30);
	req = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "join_token",
			a->cfg.join_token, "name", a->cfg.name, "address", a->cfg.advertise,
			"accel", a->accel, "qemu_version", a->qemu_version, "vcpus",
			(json_int_t)a->cfg.vcpus, "memory_mb", (json_int_t)a->cfg.memory_mb,
			"disk_gb", (json_int_t)a->cfg.disk_gb, "cidr", a->cfg.cidr);
	snprintf(url, sizeof(url), "%s/v1/agent/join", a->cfg.controller);
	nb_buf_init(&out, 1 << 20);
	r = nb_httpc("POST", url, NULL, req, 10000, &status, &out);
	json_decref(req);
	if (r < 0 || status != 200) {
		nb_error("join %s failed: %s", url,
			 r < 0 ? strerror(-r) : out.data ? out.data : "no answer");
		nb_buf_free(&out);
		return r < 0 ? r : -NB_E_AUTH;
	}
	resp = json_loads(out.data, 0, NULL);
	nb_buf_free(&out);
	if (!resp || !nb_json_str(resp, "host_id") || !nb_json_str(resp, "agent_token")) {
		json_decref(resp);
		return -EPROTO;
	}
	pthread_mutex_lock(&a->lock);
	nb_strlcpy(a->host_id, nb_json_str(resp, "host_id"), sizeof(a->host_id));
	nb_strlcpy(a->token, nb_json_str(resp, "agent_token"), sizeof(a->token));
	pthread_mutex_unlock(&a->lock);
	json_decref(resp);
	nb_info("joined %s as host %s (%s, %s)", a->cfg.controller, a->host_id, a->cfg.name, a->accel);
	return 0;
}

static void apply_desired(struct nb_agent *a, json_t *doc)
{
	json_t *list = json_object_get(doc, "instances"), *d;
	size_t i;

	pthread_mutex_lock(&a->lock);
	for (int k = 0; k < a->nvms; k++) {
		json_decref(a->vms[k]->desired);
		a->vms[k]->desired = NULL;
	}
	json_array_foreach(list, i, d)
	{
		const char *id = nb_json_str(d, "id");
		struct nb_vm *vm;
		if (!id || !nb_id_valid("i", id))
			continue;
		vm = find_vm(a, id);
		if (!vm)
			vm = add_vm(a, id);
		if (!vm)
			continue;
		vm->desired = json_incref(d);
		if (vm->gone && strcmp(nb_json_str_or(d, "desired_state"), "terminated"))
			vm->gone = false;
	}
	json_decref(a->net_doc);
	a->net_doc = json_pack("{s:O?, s:O?}", "vpcs", json_object_get(doc, "vpcs"),
			       "security_groups", json_object_get(doc, "security_groups"));
	a->have_desired = true;
	a->generation = nb_json_int(doc, "generation", a->generation);
	pthread_mutex_unlock(&a->lock);
	nb_agent_imds_update(a, doc);
	wake(a);
}

static void *poll_thread(void *p)
{
	struct nb_agent *a = p;
	int backoff = 1;

	while (!a->stopping) {
		char url[600], token[128];
		struct nb_buf out;
		long status = 0;
		int64_t gen;
		int r;

		pthread_mutex_lock(&a->lock);
		gen = a->have_desired ? a->generation : -1;
		nb_strlcpy(token, a->token, sizeof(token));
		pthread_mutex_unlock(&a->lock);
		snprintf(url, sizeof(url), "%s/v1/agent/desired?generation=%lld&wait=25",
			 a->cfg.controller, (long long)(gen < 0 ? 0 : gen));
		if (gen < 0) /* the first fetch must not wait */
			snprintf(url, sizeof(url), "%s/v1/agent/desired?generation=0&wait=0",
				 a->cfg.controller);
		nb_buf_init(&out, 64u << 20);
		r = nb_httpc("GET", url, token, NULL, 35000, &status, &out);
		if (r == 0 && status == 200) {
			json_t *doc = json_loads(out.data, 0, NULL);
			if (doc)
				apply_desired(a, doc);
			json_decref(doc);
			backoff = 1;
		} else {
			if (r == 0 && status == 401) {
				nb_warn("the controller no longer knows this agent: joining again");
				join(a);
			}
			sleep((unsigned)backoff); /* back off while the controller is away */
			backoff = backoff < 8 ? backoff * 2 : 8;
		}
		nb_buf_free(&out);
	}
	return NULL;
}

static void report(struct nb_agent *a);

/* Heartbeats on their own thread: a host busy starting many guests still
 * shows as up. */
static void *heartbeat_thread(void *p)
{
	struct nb_agent *a = p;

	while (!a->stopping) {
		char url[400], token[128];
		long status = 0;
		json_t *body = json_pack("{s:[]}", "instances");
		pthread_mutex_lock(&a->lock);
		nb_strlcpy(token, a->token, sizeof(token));
		pthread_mutex_unlock(&a->lock);
		snprintf(url, sizeof(url), "%s/v1/agent/report", a->cfg.controller);
		nb_httpc("POST", url, token, body, 5000, &status, NULL);
		json_decref(body);
		sleep(5); /* the heartbeat period */
	}
	return NULL;
}

static void report(struct nb_agent *a)
{
	json_t *items = json_array(), *body;
	char url[400], token[128];
	long status = 0;
	int r;

	pthread_mutex_lock(&a->lock);
	for (int i = 0; i < a->nvms; i++) {
		struct nb_vm *vm = a->vms[i];
		json_array_append_new(items,
				      json_pack("{s:s, s:s, s:I, s:I, s:s}", "id", vm->id, "state",
						vm->actual, "start_seq", (json_int_t)vm->started_seq,
						"reboot_seq", (json_int_t)vm->reboot_done, "reason",
						vm->reason));
	}
	a->dirty = false;
	nb_strlcpy(token, a->token, sizeof(token));
	pthread_mutex_unlock(&a->lock);
	body = json_pack("{s:o}", "instances", items);
	snprintf(url, sizeof(url), "%s/v1/agent/report", a->cfg.controller);
	r = nb_httpc("POST", url, token, body, 10000, &status, NULL);
	json_decref(body);
	if (r < 0 || status != 200) {
		pthread_mutex_lock(&a->lock);
		a->dirty = true; /* try again */
		pthread_mutex_unlock(&a->lock);
	}
}

/* ---- the agent's own API: consoles for nubod ---- */

struct console_arg {
	int fd;
};

static void console_stream(int sock, const char *extra, size_t extra_len, void *p)
{
	struct console_arg *c = p;

	if (extra_len)
		nb_write_all(c->fd, extra, extra_len);
	nb_splice(sock, c->fd);
	close(c->fd);
	free(c);
}

static enum MHD_Result agent_handler(void *cls, struct MHD_Connection *c, const char *url,
				     const char *method, const char *version,
				     const char *upload_data, size_t *upload_data_size,
				     void **req_cls)
{
	struct nb_agent *a = cls;
	char id[32], what[32], path[PATH_MAX], token[128];
	const char *tok;

	(void)version;
	(void)upload_data;
	if (!*req_cls) {
		*req_cls = nb_http_req_new();
		return *req_cls ? MHD_YES : MHD_NO;
	}
	if (*upload_data_size) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	pthread_mutex_lock(&a->lock);
	nb_strlcpy(token, a->token, sizeof(token));
	pthread_mutex_unlock(&a->lock);
	tok = nb_http_bearer(c);
	if (!tok || !*token || strcmp(tok, token))
		return nb_http_error(c, -NB_E_AUTH, "unknown token");
	if (sscanf(url, "/v1/instances/%31[^/]/%31s", id, what) != 2 || !nb_id_valid("i", id))
		return nb_http_error(c, -NB_E_NOT_FOUND, "no such call");
	if (!strcmp(what, "snapshot") && !strcmp(method, "POST")) {
		const char *name = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "name");
		char err[256] = "";
		struct nb_vm *vm;
		int r = -ENOENT;
		if (!name || !nb_id_valid("ami", name))
			return nb_http_error(c, -NB_E_INVALID, "snapshot needs ?name=ami-...");
		pthread_mutex_lock(&a->lock);
		vm = find_vm(a, id);
		if (vm)
			r = nb_vm_snapshot(a, vm, name, err, sizeof(err));
		pthread_mutex_unlock(&a->lock);
		if (r < 0)
			return nb_http_error(c, vm ? -NB_E_INTERNAL : -NB_E_NOT_FOUND,
					     *err ? err : "no such instance here");
		return nb_http_json(c, 200, json_pack("{s:b}", "ok", 1));
	}
	if (!strncmp(what, "snapshot/", 9) && nb_id_valid("ami", what + 9)) {
		snprintf(path, sizeof(path), "%s/instances/%s/snap-%s.qcow2", a->cfg.state_dir, id,
			 what + 9);
		if (!strcmp(method, "DELETE")) {
			unlink(path);
			return nb_http_empty(c, 204);
		}
		return nb_http_file(c, path, "application/octet-stream");
	}
	if (strcmp(method, "GET"))
		return nb_http_error(c, -NB_E_NOT_FOUND, "no such call");
	if (!strcmp(what, "console-output")) {
		struct nb_buf out;
		char *data = NULL;
		size_t len = 0;
		enum MHD_Result ret;
		nb_buf_init(&out, 4u << 20);
		snprintf(path, sizeof(path), "%s/instances/%s/console.log.1", a->cfg.state_dir, id);
		if (nb_read_file(path, 4u << 20, &data, &len) == 0)
			nb_buf_append(&out, data, len);
		free(data);
		data = NULL;
		snprintf(path, sizeof(path), "%s/instances/%s/console.log", a->cfg.state_dir, id);
		if (nb_read_file(path, 4u << 20, &data, &len) == 0)
			nb_buf_append(&out, data, len);
		free(data);
		ret = nb_http_text(c, 200, "text/plain; charset=utf-8", out.data ? out.data : "",
				   out.len);
		nb_buf_free(&out);
		return ret;
	}
	if (!strcmp(what, "console")) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		struct console_arg *arg;
		int fd;
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/instances/%s/console.sock",
			 a->cfg.state_dir, id);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			if (fd >= 0)
				close(fd);
			return nb_http_error(c, -NB_E_STATE, "the instance is not running");
		}
		arg = calloc(1, sizeof(*arg));
		if (!arg) {
			close(fd);
			return MHD_NO;
		}
		arg->fd = fd;
		return nb_http_upgrade(c, "nubo-console", console_stream, arg);
	}
	return nb_http_error(c, -NB_E_NOT_FOUND, "no such call");
}

/* ---- start-up ---- */

static void adopt_all(struct nb_agent *a)
{
	char dir[PATH_MAX];
	DIR *d;
	struct dirent *e;

	snprintf(dir, sizeof(dir), "%s/instances", a->cfg.state_dir);
	d = opendir(dir);
	if (!d)
		return;
	while ((e = readdir(d))) {
		struct nb_vm *vm;
		if (!nb_id_valid("i", e->d_name))
			continue;
		vm = add_vm(a, e->d_name);
		if (vm)
			nb_vm_adopt(a, vm);
	}
	closedir(d);
}

static int load_config(int argc, char **argv, struct nb_agent *a)
{
	static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
					     {"set", required_argument, NULL, 's'},
					     {"keys", no_argument, NULL, 'k'},
					     {"help", no_argument, NULL, 'h'},
					     {"teardown", no_argument, NULL, 't'},
					     {NULL, 0, NULL, 0}};
	const char *path = "/etc/nubo/agent.conf";
	struct nb_config cfg;
	char err[512], self[PATH_MAX];
	int opt, explicit_cfg = 0, r = 0;
	struct nb_agent_cfg *c = &a->cfg;

	nb_config_init(&cfg, agent_schema);
	while ((opt = getopt_long(argc, argv, "c:s:ht", opts, NULL)) != -1) {
		if (opt == 'c') {
			path = optarg;
			explicit_cfg = 1;
		} else if (opt == 'k') {
			for (const struct nb_conf_key *k = agent_schema; k->name; k++)
				printf("%-18s %-26s %s\n", k->name, k->def, k->doc);
			exit(0);
		} else if (opt == 'h') {
			printf("usage: nubo-agent [-c CONFIG] [-s KEY=VALUE]... [--keys] [--teardown]\n"
			       "  --teardown   stop this host's guests and remove every tap, cgroup,\n"
			       "               nft table, dnsmasq and bridge the agent made\n");
			exit(0);
		} else if (opt == 't') {
			a->teardown = true;
		} else if (opt != 's') {
			return -EINVAL;
		}
	}
	if (nb_config_load(&cfg, path, !explicit_cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "nubo-agent: %s\n", err);
		return -EINVAL;
	}
	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:s:h", opts, NULL)) != -1) {
		char *eq;
		if (opt != 's')
			continue;
		eq = strchr(optarg, '=');
		if (!eq) {
			fprintf(stderr, "nubo-agent: --set wants KEY=VALUE\n");
			return -EINVAL;
		}
		*eq = '\0';
		if (nb_config_set(&cfg, optarg, eq + 1, err, sizeof(err)) < 0) {
			fprintf(stderr, "nubo-agent: %s\n", err);
			return -EINVAL;
		}
	}
	const char *lvl = nb_config_str(&cfg, "log_level");
	nb_log_init("nubo-agent", !strcmp(lvl, "debug")	  ? NB_LOG_DEBUG
				  : !strcmp(lvl, "warn")  ? NB_LOG_WARN
				  : !strcmp(lvl, "error") ? NB_LOG_ERROR
							  : NB_LOG_INFO);
	nb_strlcpy(c->controller, nb_config_str(&cfg, "controller"), sizeof(c->controller));
	nb_strlcpy(c->join_token, nb_config_str(&cfg, "join_token"), sizeof(c->join_token));
	if (!*c->join_token) {
		char *data = NULL;
		if (nb_read_file(nb_config_str(&cfg, "join_token_file"), 4096, &data, NULL) < 0) {
			fprintf(stderr, "nubo-agent: no join_token and cannot read %s\n",
				nb_config_str(&cfg, "join_token_file"));
			nb_config_free(&cfg);
			return -EINVAL;
		}
		data[strcspn(data, "\r\n ")] = '\0';
		nb_strlcpy(c->join_token, data, sizeof(c->join_token));
		free(data);
	}
	nb_strlcpy(c->name, nb_config_str(&cfg, "name"), sizeof(c->name));
	if (!*c->name)
		gethostname(c->name, sizeof(c->name) - 1);
	nb_strlcpy(c->listen, nb_config_str(&cfg, "listen"), sizeof(c->listen));
	nb_strlcpy(c->advertise, nb_config_str(&cfg, "advertise"), sizeof(c->advertise));
	if (!*c->advertise)
		snprintf(c->advertise, sizeof(c->advertise), "http://%s", c->listen);
	nb_strlcpy(c->state_dir, nb_config_str(&cfg, "state_dir"), sizeof(c->state_dir));
	/* <state_dir>/instances/i-<17 hex>/console.sock must fit a unix socket
	 * address (108 bytes) */
	if (strlen(c->state_dir) > 63) {
		fprintf(stderr,
			"nubo-agent: state_dir '%s' is %zu characters; at most 63 leave room for "
			"the guests' unix sockets\n",
			c->state_dir, strlen(c->state_dir));
		r = -EINVAL;
	}
	nb_strlcpy(c->accel_mode, nb_config_str(&cfg, "accel"), sizeof(c->accel_mode));
	if (strcmp(c->accel_mode, "auto") && strcmp(c->accel_mode, "kvm") &&
	    strcmp(c->accel_mode, "tcg")) {
		fprintf(stderr, "nubo-agent: accel must be auto, kvm or tcg, not '%s'\n",
			c->accel_mode);
		r = -EINVAL;
	}
	nb_strlcpy(c->qemu, nb_config_str(&cfg, "qemu"), sizeof(c->qemu));
	nb_strlcpy(c->shim, nb_config_str(&cfg, "shim"), sizeof(c->shim));
	if (!*c->shim) {
		/* beside the agent (installed), or in the build tree's src/shim */
		char alt[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		self[n > 0 ? n : 0] = '\0';
		char *slash = strrchr(self, '/');
		if (slash)
			*slash = '\0';
		snprintf(c->shim, sizeof(c->shim), "%s/nubo-shim", self);
		snprintf(alt, sizeof(alt), "%s/shim/nubo-shim", self);
		if (!nb_path_exists(c->shim) && nb_path_exists(alt))
			nb_strlcpy(c->shim, alt, sizeof(c->shim));
	}
	c->network = nb_config_bool(&cfg, "network");
	nb_strlcpy(c->bridge, nb_config_str(&cfg, "bridge"), sizeof(c->bridge));
	nb_strlcpy(c->cidr, nb_config_str(&cfg, "cidr"), sizeof(c->cidr));
	nb_strlcpy(c->cgroup_root, nb_config_str(&cfg, "cgroup_root"), sizeof(c->cgroup_root));
	c->stop_timeout_s = (int)nb_config_int(&cfg, "stop_timeout");
	c->vpc_keep_s = (int)nb_config_int(&cfg, "vpc_keep");
	c->console_log_max = nb_config_size(&cfg, "console_log_max");
	c->vcpus = nb_config_int(&cfg, "vcpus");
	c->memory_mb = nb_config_int(&cfg, "memory_mb");
	c->disk_gb = nb_config_int(&cfg, "disk_gb");
	nb_config_free(&cfg);
	return r;
}

static void qemu_version(struct nb_agent *a)
{
	struct nb_buf out;
	const char *argv[] = {a->cfg.qemu, "--version", NULL};
	unsigned x = 0, y = 0, z = 0;

	nb_buf_init(&out, 1 << 16);
	nb_strlcpy(a->qemu_version, "unknown", sizeof(a->qemu_version));
	if (nb_run(argv, 10000, &out) == 0 && out.data &&
	    sscanf(out.data, "QEMU emulator version %u.%u.%u", &x, &y, &z) == 3)
		snprintf(a->qemu_version, sizeof(a->qemu_version), "%u.%u.%u", x, y, z);
	nb_buf_free(&out);
}

int main(int argc, char **argv)
{
	struct nb_agent *a = &agent;
	struct MHD_Daemon *httpd = NULL;
	pthread_t poller, heart;
	char path[PATH_MAX], err[256];
	sigset_t sigs;
	int64_t last_report = 0;
	int r;

	pthread_mutex_init(&a->lock, NULL);
	pthread_mutex_init(&a->imds_lock, NULL);
	if (load_config(argc, argv, a) < 0)
		return 2;
	nb_httpc_global_init();
	signal(SIGPIPE, SIG_IGN);
	snprintf(path, sizeof(path), "%s/instances", a->cfg.state_dir);
	r = nb_mkdir_p(path, 0700);
	snprintf(path, sizeof(path), "%s/images", a->cfg.state_dir);
	if (r == 0)
		r = nb_mkdir_p(path, 0700);
	snprintf(path, sizeof(path), "%s/net", a->cfg.state_dir);
	if (r == 0)
		r = nb_mkdir_p(path, 0700);
	if (r < 0) {
		nb_error("cannot create %s: %s", a->cfg.state_dir, strerror(-r));
		return 1;
	}
	if (a->teardown) {
		char dir[PATH_MAX];
		adopt_all(a);
		for (int i = 0; i < a->nvms; i++)
			nb_vm_teardown(a, a->vms[i]);
		snprintf(dir, sizeof(dir), "%s/net", a->cfg.state_dir);
		if (a->cfg.network) {
			nb_net_teardown(dir, a->cfg.bridge);
			nb_vpc_teardown(a);
		}
		nb_info("torn down %d guest(s) and the host network", a->nvms);
		return 0;
	}
	if (!nb_path_exists(a->cfg.shim)) {
		nb_error("nubo-shim not found at %s (set 'shim')", a->cfg.shim);
		return 1;
	}
	qemu_version(a);
	if (!strcmp(a->cfg.accel_mode, "auto"))
		nb_strlcpy(a->accel, nb_accel_detect(a->cfg.qemu, a->cfg.state_dir),
			   sizeof(a->accel));
	else
		nb_strlcpy(a->accel, a->cfg.accel_mode, sizeof(a->accel));
	nb_info("accelerator: %s (accel = %s), QEMU %s", a->accel, a->cfg.accel_mode,
		a->qemu_version);
	if (a->cfg.network) {
		r = nb_net_bridge_ensure(a->cfg.bridge, a->cfg.cidr, err, sizeof(err));
		snprintf(path, sizeof(path), "%s/net", a->cfg.state_dir);
		if (r == 0)
			r = nb_net_dnsmasq_ensure(path, a->cfg.bridge, a->cfg.cidr, err, sizeof(err));
		if (r < 0) {
			nb_error("network setup failed: %s", err);
			return 1;
		}
	}
	if (pipe2(a->wake_fd, O_CLOEXEC | O_NONBLOCK) < 0)
		return 1;
	adopt_all(a);
	/* the metadata service: its thread waits for the VPCs' listeners */
	if (nb_agent_imds_start(a) < 0)
		return 1;
	/* Listen before joining: once nubod hears of this host it may relay a
	 * console at once. Calls before the join carry no token we know and are
	 * refused. */
	r = nb_http_start(a->cfg.listen, agent_handler, a, &httpd);
	if (r < 0) {
		nb_error("cannot listen on %s", a->cfg.listen);
		return 1;
	}
	while ((r = join(a)) < 0) {
		if (r == -NB_E_AUTH)
			return 1;
		sleep(1); /* the controller is not up yet: retry */
	}
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	pthread_create(&poller, NULL, poll_thread, a);
	pthread_create(&heart, NULL, heartbeat_thread, a);
	a->dirty = true;

	while (!a->stopping) {
		struct pollfd pfd[NB_AGENT_MAX_VMS + 1];
		int n = 0;
		struct timespec zero = {0, 0};
		int sig = sigtimedwait(&sigs, NULL, &zero);

		if (sig == SIGTERM || sig == SIGINT)
			break;
		pthread_mutex_lock(&a->lock);
		if (a->have_desired) {
			/* stops and terminations first: they free what starts need. The
			 * lock is let go between guests, so reports and consoles go on
			 * while a long burst of starts is worked through. */
			for (int pass = 0; pass < 2; pass++) {
				for (int i = 0; i < a->nvms; i++) {
					const char *want = nb_json_str_or(a->vms[i]->desired,
									  "desired_state");
					bool starting = !strcmp(want, "running") ||
							!strcmp(want, "paused");
					if (starting != (pass == 1))
						continue;
					if (starting)
						nb_vm_net_sync(a);
					nb_vm_reconcile(a, a->vms[i]);
					/* the guests started earlier in this pass whose
					 * QEMU has greeted meanwhile are running now, not
					 * after the whole burst */
					for (int j = 0; starting && j < i; j++)
						if (nb_vm_starting(a->vms[j]))
							nb_vm_reconcile(a, a->vms[j]);
					if (a->dirty && nb_now_ms() - last_report > 100) {
						pthread_mutex_unlock(&a->lock);
						report(a);
						last_report = nb_now_ms();
						pthread_mutex_lock(&a->lock);
					}
				}
			}
			nb_vm_net_sync(a);
			nb_vpc_sync(a);
		}
		pfd[n++] = (struct pollfd){.fd = a->wake_fd[0], .events = POLLIN};
		for (int i = 0; i < a->nvms; i++) {
			int gfd = nb_vm_greet_fd(a->vms[i]);
			if (a->vms[i]->qmp)
				pfd[n++] = (struct pollfd){.fd = nb_qmp_fd(a->vms[i]->qmp),
							   .events = POLLIN};
			else if (gfd >= 0) /* a QEMU's greeting ends the wait at once */
				pfd[n++] = (struct pollfd){.fd = gfd, .events = POLLIN};
		}
		bool dirty = a->dirty, starting = false;
		for (int i = 0; i < a->nvms && !starting; i++)
			starting = nb_vm_starting(a->vms[i]);
		pthread_mutex_unlock(&a->lock);

		if (dirty || nb_now_ms() - last_report > 5000) {
			report(a);
			last_report = nb_now_ms();
			/* forget terminated instances once reported */
			pthread_mutex_lock(&a->lock);
			for (int i = 0; i < a->nvms;) {
				if (a->vms[i]->gone && !a->vms[i]->desired) {
					nb_vm_free(a->vms[i]);
					a->vms[i] = a->vms[--a->nvms];
				} else {
					i++;
				}
			}
			pthread_mutex_unlock(&a->lock);
		}
		/* a QEMU coming up is looked at again every 2 ms until its QMP
		 * answers (a connect attempt costs a few microseconds) */
		if (poll(pfd, (nfds_t)n, starting ? 2 : 1000) > 0) {
			char buf[64];
			while (read(a->wake_fd[0], buf, sizeof(buf)) > 0)
				;
		}
		pthread_mutex_lock(&a->lock);
		for (int i = 0; i < a->nvms; i++)
			nb_vm_pump(a, a->vms[i]);
		pthread_mutex_unlock(&a->lock);
	}
	nb_info("stopping; guests keep running and are re-adopted at the next start");
	a->stopping = 1;
	MHD_quiesce_daemon(httpd);
	nb_http_streams_close_all();
	MHD_stop_daemon(httpd);
	nb_agent_imds_stop(a);
	/* the poller may sit in a long poll: do not wait for it */
	return 0;
}
