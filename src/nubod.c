/* nubod: the controller. Owns the database and the API; agents pull their
 * desired state from it. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/ec2.h"
#include "api/http.h"
#include "api/v1.h"
#include "common/config.h"
#include "common/httpc.h"
#include "common/log.h"
#include "common/util.h"
#include "core/core.h"
#include "core/vpc.h"
#include "s3/http.h"

static const struct nb_conf_key nubod_schema[] = {
	{"state_dir", NB_CONF_STR, "/var/lib/nubo", "where the database, image library and tokens live"},
	{"api_listen", NB_CONF_STR, "127.0.0.1:8787", "address:port of the native API"},
	{"cpu_overcommit", NB_CONF_INT, "8", "vCPUs a host offers per physical core"},
	{"reserved_memory_mb", NB_CONF_INT, "512", "memory of each host kept back for the host itself"},
	{"host_dead_after", NB_CONF_INT, "30", "seconds without a heartbeat before a host counts as down"},
	{"max_count", NB_CONF_INT, "100", "most instances one run call may make"},
	{"max_upload", NB_CONF_SIZE, "64G", "largest image upload"},
	{"region", NB_CONF_STR, "nubo-1", "the region name clients sign for (aws --region)"},
	{"availability_zone", NB_CONF_STR, "nubo-1a", "the availability zone instances report"},
	{"quota_instances", NB_CONF_INT, "100", "default per-account limit of instances"},
	{"quota_vcpus", NB_CONF_INT, "512", "default per-account limit of vCPUs"},
	{"quota_memory_mb", NB_CONF_INT, "1048576", "default per-account limit of memory (MiB)"},
	{"quota_images", NB_CONF_INT, "100", "default per-account limit of images"},
	{"quota_addresses", NB_CONF_INT, "5", "default per-account limit of elastic IPs"},
	{"eip_pool", NB_CONF_STR, "198.51.100.0/24", "IPv4 CIDR (/8 to /30) elastic IPs are allocated from"},
	{"rate_describe", NB_CONF_INT, "100", "EC2 Describe calls per second per account (refill)"},
	{"rate_describe_burst", NB_CONF_INT, "200", "EC2 Describe calls an account may burst"},
	{"rate_mutate", NB_CONF_INT, "20", "EC2 changing calls per second per account (refill)"},
	{"rate_mutate_burst", NB_CONF_INT, "50", "EC2 changing calls an account may burst"},
	{"s3_listen", NB_CONF_STR, "127.0.0.1:8789", "address:port of the S3 API (empty: no S3)"},
	{"s3_dir", NB_CONF_STR, "", "where objects live (default <state_dir>/objects)"},
	{"s3_domain", NB_CONF_STR, "localhost", "virtual-hosted style: Host bucket.<s3_domain>"},
	{"s3_quota_bytes", NB_CONF_SIZE, "0", "default per-account limit of object bytes (0: none)"},
	{"s3_quota_objects", NB_CONF_INT, "0", "default per-account limit of objects (0: none)"},
	{"s3_upload_expiry", NB_CONF_INT, "604800", "seconds before an unfinished multipart upload is aborted"},
	{"log_level", NB_CONF_STR, "info", "debug, info, warn or error"},
	{NULL, 0, NULL, NULL},
};

static enum nb_log_level parse_level(const char *s)
{
	if (!strcmp(s, "debug"))
		return NB_LOG_DEBUG;
	if (!strcmp(s, "warn"))
		return NB_LOG_WARN;
	if (!strcmp(s, "error"))
		return NB_LOG_ERROR;
	return NB_LOG_INFO;
}

/* Reads dir/name, or makes a new random token there (mode 0600). */
static int token_file(const char *dir, const char *name, char *tok, size_t toksz, bool *created)
{
	char path[PATH_MAX], *data = NULL;
	size_t len = 0;
	int r;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	*created = false;
	if (nb_read_file(path, 4096, &data, &len) == 0) {
		while (len && (data[len - 1] == '\n' || data[len - 1] == ' '))
			data[--len] = '\0';
		nb_strlcpy(tok, data, toksz);
		free(data);
		return len ? 0 : -EINVAL;
	}
	nb_random_hex(tok, 48);
	r = nb_write_file(path, tok, strlen(tok), 0600);
	*created = r == 0;
	return r;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: nubod [-c CONFIG] [-s KEY=VALUE]... [--keys]\n"
		   "  -c, --config FILE   config file (default /etc/nubo/nubod.conf, optional)\n"
		   "  -s, --set KEY=VAL   override one config key\n"
		   "      --keys          list every config key with its default\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
					     {"set", required_argument, NULL, 's'},
					     {"keys", no_argument, NULL, 'k'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *config_path = "/etc/nubo/nubod.conf";
	int explicit_config = 0, opt, r;
	struct nb_config cfg;
	char err[512], admin_tok[128], acct[32];
	struct nb_store *st = NULL;
	static struct nb_ctl ctl;
	static struct nb_v1 v1;
	static struct nb_ec2 ec2;
	static struct nb_secrets secrets;
	struct MHD_Daemon *httpd = NULL;
	static struct nb_s3http s3h;
	char s3_dir[PATH_MAX];
	struct nb_s3 *s3 = NULL;
	bool created;
	sigset_t sigs;

	nb_config_init(&cfg, nubod_schema);
	while ((opt = getopt_long(argc, argv, "c:s:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			explicit_config = 1;
			break;
		case 's':
			break;
		case 'k':
			for (const struct nb_conf_key *k = nubod_schema; k->name; k++)
				printf("%-20s %-16s %s\n", k->name, k->def, k->doc);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (nb_config_load(&cfg, config_path, !explicit_config, err, sizeof(err)) < 0) {
		fprintf(stderr, "nubod: %s\n", err);
		return 2;
	}
	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:s:h", opts, NULL)) != -1) {
		if (opt != 's')
			continue;
		char *eq = strchr(optarg, '=');
		if (!eq) {
			fprintf(stderr, "nubod: --set wants KEY=VALUE, not '%s'\n", optarg);
			return 2;
		}
		*eq = '\0';
		if (nb_config_set(&cfg, optarg, eq + 1, err, sizeof(err)) < 0) {
			fprintf(stderr, "nubod: %s\n", err);
			return 2;
		}
	}
	nb_log_init("nubod", parse_level(nb_config_str(&cfg, "log_level")));
	nb_httpc_global_init();

	const char *state_dir = nb_config_str(&cfg, "state_dir");
	char db_path[PATH_MAX];
	r = nb_mkdir_p(state_dir, 0700);
	if (r < 0) {
		nb_error("cannot create state_dir %s: %s", state_dir, strerror(-r));
		return 1;
	}
	snprintf(db_path, sizeof(db_path), "%s/nubo.db", state_dir);
	r = nb_store_open(db_path, &st);
	if (r < 0) {
		nb_error("cannot open the database %s%s", db_path,
			 r == -EPROTO ? ": its schema is newer than this nubod" : "");
		return 1;
	}
	r = nb_ctl_init(&ctl, st, state_dir);
	if (r < 0) {
		nb_error("cannot set up %s/tmp: %s", state_dir, strerror(-r));
		return 1;
	}
	ctl.cpu_overcommit = (int)nb_config_int(&cfg, "cpu_overcommit");
	ctl.reserved_memory_mb = nb_config_int(&cfg, "reserved_memory_mb");
	ctl.host_dead_after_s = (int)nb_config_int(&cfg, "host_dead_after");
	ctl.max_count = (int)nb_config_int(&cfg, "max_count");
	ctl.max_blob = nb_config_size(&cfg, "max_upload");
	ctl.quota_instances = nb_config_int(&cfg, "quota_instances");
	ctl.quota_vcpus = nb_config_int(&cfg, "quota_vcpus");
	ctl.quota_memory_mb = nb_config_int(&cfg, "quota_memory_mb");
	ctl.quota_images = nb_config_int(&cfg, "quota_images");
	ctl.quota_addresses = nb_config_int(&cfg, "quota_addresses");
	nb_strlcpy(ctl.eip_pool, nb_config_str(&cfg, "eip_pool"), sizeof(ctl.eip_pool));
	nb_strlcpy(ctl.region, nb_config_str(&cfg, "region"), sizeof(ctl.region));
	nb_strlcpy(ctl.az, nb_config_str(&cfg, "availability_zone"), sizeof(ctl.az));
	r = nb_secrets_load(&secrets, state_dir);
	if (r < 0) {
		nb_error("cannot read or make %s/secret.key: %s", state_dir, strerror(-r));
		return 1;
	}
	nb_ec2_init(&ec2, &ctl, &secrets);
	ec2.limits.describe_rate = (double)nb_config_int(&cfg, "rate_describe");
	ec2.limits.describe_burst = (double)nb_config_int(&cfg, "rate_describe_burst");
	ec2.limits.mutate_rate = (double)nb_config_int(&cfg, "rate_mutate");
	ec2.limits.mutate_burst = (double)nb_config_int(&cfg, "rate_mutate_burst");
	if (nb_ctl_seed_types(&ctl) < 0 || nb_store_account_ensure(st, "admin", acct) < 0) {
		nb_error("cannot seed the database");
		return 1;
	}
	/* every account has a default VPC: those made before schema 4 get theirs now */
	if (nb_core_net_init(&ctl, err, sizeof(err)) < 0) {
		nb_error("tenant networks: %s", *err ? err : "cannot make the default VPCs");
		return 1;
	}
	if (token_file(state_dir, "admin.token", admin_tok, sizeof(admin_tok), &created) < 0) {
		nb_error("cannot read or write %s/admin.token", state_dir);
		return 1;
	}
	/* a new admin.token replaces every earlier one: deleting the file and
	 * restarting is how an admin rotates it */
	if (created && (nb_store_tokens_drop(st, acct) < 0 ||
			nb_store_token_add(st, admin_tok, acct, "admin") < 0)) {
		nb_error("cannot record the admin token");
		return 1;
	}
	if (token_file(state_dir, "join.token", v1.join_token, sizeof(v1.join_token), &created) <
	    0) {
		nb_error("cannot read or write %s/join.token", state_dir);
		return 1;
	}
	v1.ctl = &ctl;
	v1.ec2 = &ec2;
	v1.secrets = &secrets;

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* the object store: the image library lives in it, so it opens even
	 * when no S3 listener is configured */
	if (*nb_config_str(&cfg, "s3_dir"))
		nb_strlcpy(s3_dir, nb_config_str(&cfg, "s3_dir"), sizeof(s3_dir));
	else
		snprintf(s3_dir, sizeof(s3_dir), "%s/objects", state_dir);
	r = nb_mkdir_p(s3_dir, 0700);
	if (r == 0)
		r = nb_s3_open(s3_dir, &s3);
	if (r < 0) {
		nb_error("cannot open the object store in %s: %s", s3_dir,
			 r == -EBUSY ? "another process has it open"
			 : r > -4096 ? strerror(-r) : nb_s3_err_code(r));
		return 1;
	}
	r = nb_core_library_open(&ctl, s3, err, sizeof(err));
	if (r < 0) {
		nb_error("%s", err);
		return 1;
	}

	r = nb_http_start(nb_config_str(&cfg, "api_listen"), nb_v1_handler, &v1, &httpd);
	if (r < 0) {
		nb_error("cannot listen on %s", nb_config_str(&cfg, "api_listen"));
		return 1;
	}
	nb_info("nubod %s listening on %s, state in %s (schema v%d)", NUBO_VERSION,
		nb_config_str(&cfg, "api_listen"), state_dir, nb_store_schema_version(st));
	struct nb_s3http_opts s3o = {
		.listen = nb_config_str(&cfg, "s3_listen"), .s3 = s3, .region = ctl.region,
		.domain = nb_config_str(&cfg, "s3_domain"), .st = st, .secrets = &secrets,
		.quota_bytes = nb_config_size(&cfg, "s3_quota_bytes"),
		.quota_objects = (uint64_t)nb_config_int(&cfg, "s3_quota_objects"),
		.upload_expiry_ms = nb_config_int(&cfg, "s3_upload_expiry") * 1000};
	r = nb_s3http_start(&s3h, &s3o);
	if (r < 0) {
		nb_error("cannot serve S3 on %s: %s", s3o.listen,
			 r > -4096 ? strerror(-r) : nb_s3_err_code(r));
		return 1;
	}
	if (*s3o.listen)
		nb_info("S3 listening on %s, objects in %s", s3o.listen, s3_dir);
	else
		nb_info("no S3 listener (s3_listen is empty); objects in %s", s3_dir);
	for (;;) {
		struct timespec ts = {.tv_sec = 10};
		int sig = sigtimedwait(&sigs, NULL, &ts);
		if (sig == SIGTERM || sig == SIGINT)
			break;
		nb_core_tick(&ctl);
		struct nb_s3http_tick_stats s3t;
		nb_s3http_tick(&s3h, &s3t);
		if (s3t.uploads_expired || s3t.tmp_removed || s3t.data_removed)
			nb_info("S3: %zu stale uploads aborted, %zu temporary and %zu orphaned files removed",
				s3t.uploads_expired, s3t.tmp_removed, s3t.data_removed);
		if (s3t.err)
			nb_warn("S3 housekeeping failed: %s",
				s3t.err > -4096 ? strerror(-s3t.err) : nb_s3_err_code(s3t.err));
	}
	nb_info("stopping");
	MHD_quiesce_daemon(httpd);
	nb_s3http_quiesce(&s3h);
	nb_core_stop(&ctl);
	nb_http_streams_close_all();
	MHD_stop_daemon(httpd);
	nb_s3http_stop(&s3h);
	nb_ec2_fini(&ec2);
	nb_ctl_fini(&ctl);
	nb_s3_close(s3);
	nb_store_close(st);
	nb_config_free(&cfg);
	return 0;
}
