/* The instance metadata service, for real: the test moves into a network
 * namespace of its own, puts 169.254.169.254 and a few "guest" addresses on
 * its loopback, hands the server bound sockets as nubo's datapath does, and
 * asks with the real curl binary and with raw sockets. The lookup is a
 * table: (listener key, source address) -> instance. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/util.h"
#include "net/imds.h"

#define MDIP "169.254.169.254"
#define SRC_A "10.0.0.5"   /* instance A in vpc-a; instance C in vpc-b */
#define SRC_B "10.0.0.6"   /* instance B in vpc-a: tokens required, hop limit 2 */
#define SRC_D "10.0.0.7"   /* instance D in vpc-a: endpoint disabled */
#define SRC_X "10.0.0.9"   /* nobody */
#define PORT_B 8080        /* vpc-b listens on MDIP:8080 (same namespace here) */
#define KEY_A "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheTestOnly0000000000000 mykey"
/* user-data with a NUL and high bytes: served raw */
static const unsigned char ud_a[] = "#!/bin/sh\necho hi\n\0\xff\xfe end";
#define UD_A_LEN (sizeof(ud_a) - 1)

static struct nb_imds *g_m;
static int g_lookups;

static json_t *instance(const char *id, const char *ip, const char *mac, const char *vpc,
			const char *tokens, int hop, const char *endpoint, bool key, bool ud)
{
	json_t *md = json_pack(
	    "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:[s,s], s:s, s:s, s:s, "
	    "s:i, s:s}",
	    "instance_id", id, "ami_id", "ami-0123456789abcdef0", "instance_type", "t1.nano",
	    "reservation_id", "r-0123456789abcdef0", "account_id", "123456789012", "region",
	    "nubo-1", "availability_zone", "nubo-1a", "hostname",
	    "ip-10-0-0-5.nubo-1.compute.internal", "local_hostname",
	    "ip-10-0-0-5.nubo-1.compute.internal", "local_ipv4", ip, "mac", mac, "launch_time",
	    "2026-12-03T16:00:00Z", "security_groups", "web", "default", "http_tokens", tokens,
	    "http_endpoint", endpoint, "key_name", "mykey", "http_put_response_hop_limit", hop,
	    "public_ipv4", "198.51.100.5");
	json_t *nic = json_pack("{s:i, s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:[s,s], s:s}",
				"device_index", 0, "eni_id", "eni-0123456789abcdef0", "mac", mac,
				"ip", ip, "prefix", 20, "gateway", "10.0.0.1", "subnet_id",
				"subnet-0123456789abcdef0", "vpc_id", vpc, "public_ip",
				"198.51.100.5", "security_groups", "sg-0123456789abcdef0",
				"sg-0123456789abcdef1", "vpc_cidr", "10.0.0.0/16");
	char *b64 = NULL;

	json_object_set_new(md, "public_hostname",
			    json_string("ec2-198-51-100-5.nubo-1.compute.nubo"));
	if (key)
		json_object_set_new(md, "public_key", json_string(KEY_A));
	if (ud) {
		static const char tbl[] =
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
		size_t n = UD_A_LEN, o = 0;
		b64 = calloc(1, n / 3 * 4 + 8);
		for (size_t i = 0; i < n; i += 3) {
			uint32_t v = (uint32_t)ud_a[i] << 16 |
				     (i + 1 < n ? (uint32_t)ud_a[i + 1] << 8 : 0) |
				     (i + 2 < n ? ud_a[i + 2] : 0);
			b64[o++] = tbl[v >> 18];
			b64[o++] = tbl[(v >> 12) & 63];
			b64[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
			b64[o++] = i + 2 < n ? tbl[v & 63] : '=';
		}
		json_object_set_new(md, "user_data", json_string(b64));
		free(b64);
	}
	return json_pack("{s:o, s:o}", "metadata", md, "nic", nic);
}

static json_t *lookup(void *arg, const char *key, const char *src)
{
	(void)arg;
	g_lookups++;
	if (!strcmp(key, "vpc-a") && !strcmp(src, SRC_A))
		return instance("i-000000000000000aa", SRC_A, "52:54:00:aa:00:01", "vpc-a",
				"optional", 1, "enabled", true, true);
	if (!strcmp(key, "vpc-a") && !strcmp(src, SRC_B))
		return instance("i-000000000000000bb", SRC_B, "52:54:00:bb:00:01", "vpc-a",
				"required", 2, "enabled", false, false);
	if (!strcmp(key, "vpc-a") && !strcmp(src, SRC_D))
		return instance("i-000000000000000dd", SRC_D, "52:54:00:dd:00:01", "vpc-a",
				"optional", 1, "disabled", true, false);
	/* the same address in another VPC is another instance */
	if (!strcmp(key, "vpc-b") && !strcmp(src, SRC_A))
		return instance("i-000000000000000cc", SRC_A, "52:54:00:cc:00:01", "vpc-b",
				"optional", 1, "enabled", false, false);
	return NULL;
}

/* ---- helpers ---- */

static int bound_socket(const char *ip, int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	inet_pton(AF_INET, ip, &sa.sin_addr);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

struct resp {
	int status;
	char *body; /* NUL-terminated; len bytes */
	size_t len;
	char *headers;
};

static void resp_free(struct resp *r)
{
	free(r->body);
	free(r->headers);
	memset(r, 0, sizeof(*r));
}

/* The real curl: `curl -s -i --interface src [args] url`. */
static struct resp curl(const char *src, const char *args, const char *path)
{
	char cmd[2048], tmp[] = "/tmp/imds-curl-XXXXXX";
	struct resp r = {0};
	char *data = NULL, *sep;
	size_t len = 0;
	int fd = mkstemp(tmp);

	assert_true(fd >= 0);
	close(fd);
	snprintf(cmd, sizeof(cmd),
		 "curl -s -i --max-time 10 --interface %s %s -o %s 'http://" MDIP "%s' >/dev/null",
		 src, args, tmp, path);
	int rc = system(cmd);
	assert_int_equal(nb_read_file(tmp, 1 << 22, &data, &len), 0);
	unlink(tmp);
	if (rc != 0)
		fprintf(stderr, "curl exited %d for %s\n", rc, path);
	sep = memmem(data, len, "\r\n\r\n", 4);
	assert_non_null(sep);
	assert_int_equal(sscanf(data, "HTTP/1.1 %d", &r.status), 1);
	r.headers = strndup(data, (size_t)(sep - data) + 2);
	r.len = len - (size_t)(sep + 4 - data);
	r.body = malloc(r.len + 1);
	memcpy(r.body, sep + 4, r.len);
	r.body[r.len] = '\0';
	free(data);
	return r;
}

/* GET path from src, IMDSv1: the body when the status is 200. */
static void expect(const char *src, const char *path, int status, const char *body)
{
	struct resp r = curl(src, "", path);

	if (r.status != status || (body && strcmp(r.body, body)))
		fprintf(stderr, "GET %s from %s: %d '%s', wanted %d '%s'\n", path, src, r.status,
			r.body, status, body ? body : "");
	assert_int_equal(r.status, status);
	if (body)
		assert_string_equal(r.body, body);
	resp_free(&r);
}

static int connect_from(const char *src, int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct sockaddr_in me = {.sin_family = AF_INET};
	struct timeval tv = {.tv_sec = 10};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	inet_pton(AF_INET, src, &me.sin_addr);
	assert_int_equal(bind(fd, (struct sockaddr *)&me, sizeof(me)), 0);
	inet_pton(AF_INET, MDIP, &sa.sin_addr);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

/* Sends raw bytes, reads until the server closes (or 10 s). Caller frees. */
static char *raw(const char *src, int port, const void *req, size_t len, size_t *outlen)
{
	struct nb_buf b;
	char buf[65536];
	int fd = connect_from(src, port);
	ssize_t n;

	assert_true(fd >= 0);
	nb_buf_init(&b, 16u << 20);
	nb_buf_puts(&b, "");
	send(fd, req, len, MSG_NOSIGNAL);
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		nb_buf_append(&b, buf, (size_t)n);
	close(fd);
	if (outlen)
		*outlen = b.len;
	return nb_buf_steal(&b);
}

/* As raw(), but the client shuts its sending side right after the request,
 * as busybox nc does at the end of its input. */
static char *raw_halfclose(const char *src, const char *req)
{
	struct nb_buf b;
	char buf[4096];
	int fd = connect_from(src, 80);
	ssize_t n;

	assert_true(fd >= 0);
	nb_buf_init(&b, 1u << 20);
	nb_buf_puts(&b, "");
	assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		nb_buf_append(&b, buf, (size_t)n);
	close(fd);
	return nb_buf_steal(&b);
}

/* the status of one request's answer (the client half-closes, so a
 * keep-alive answer does not wait for the idle timeout) */
static int raw_status(const char *src, const char *req)
{
	char *out = raw_halfclose(src, req);
	int st = 0;

	if (sscanf(out, "HTTP/1.1 %d", &st) != 1)
		st = -1;
	free(out);
	return st;
}

static char *token(const char *src, int ttl)
{
	char args[128];
	struct resp r;
	char *t;

	snprintf(args, sizeof(args), "-X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: %d'", ttl);
	r = curl(src, args, "/latest/api/token");
	assert_int_equal(r.status, 200);
	t = strdup(r.body);
	resp_free(&r);
	return t;
}

/* ---- set-up: a namespace, addresses, two listeners ---- */

static int setup(void **state)
{
	struct rlimit rl;

	(void)state;
	if (unshare(CLONE_NEWNET) < 0) {
		fprintf(stderr, "unshare(CLONE_NEWNET): %s (run as root)\n", strerror(errno));
		return -1;
	}
	if (system("ip link set lo up && ip addr add " MDIP "/32 dev lo && "
		   "ip addr add " SRC_A "/32 dev lo && ip addr add " SRC_B "/32 dev lo && "
		   "ip addr add " SRC_D "/32 dev lo && ip addr add " SRC_X "/32 dev lo"))
		return -1;
	/* the 1000-connection test holds both ends in this process */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096) {
		rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (nb_imds_start(&g_m, lookup, NULL) < 0)
		return -1;
	if (nb_imds_listen(g_m, "vpc-a", bound_socket(MDIP, 80)) < 0 ||
	    nb_imds_listen(g_m, "vpc-b", bound_socket(MDIP, PORT_B)) < 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	nb_imds_stop(g_m);
	return 0;
}

/* ---- paths and listings ---- */

static void test_listings(void **state)
{
	static const char *const vers[] = {"latest", "2009-04-04", "2016-09-02", "2018-09-24",
					   "2021-03-23"};
	char path[256];

	(void)state;
	expect(SRC_A, "/", 200, "1.0\n2009-04-04\n2016-09-02\n2018-09-24\n2021-03-23\nlatest");
	expect(SRC_A, "/latest/", 200, "dynamic\nmeta-data\nuser-data");
	expect(SRC_B, "/latest/", 401, NULL); /* tokens required */
	expect(SRC_A, "/latest/meta-data/", 200,
	       "ami-id\nami-launch-index\nhostname\ninstance-id\ninstance-type\n"
	       "local-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\npublic-hostname\n"
	       "public-ipv4\npublic-keys/\nreservation-id\nsecurity-groups");
	/* without the trailing slash: the same listing, as EC2 */
	expect(SRC_A, "/latest/meta-data", 200,
	       "ami-id\nami-launch-index\nhostname\ninstance-id\ninstance-type\n"
	       "local-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\npublic-hostname\n"
	       "public-ipv4\npublic-keys/\nreservation-id\nsecurity-groups");
	for (size_t i = 0; i < NB_ARRAY_SIZE(vers); i++) {
		snprintf(path, sizeof(path), "/%s/meta-data/instance-id", vers[i]);
		expect(SRC_A, path, 200, "i-000000000000000aa");
		snprintf(path, sizeof(path), "/%s/meta-data/public-keys/0/openssh-key", vers[i]);
		expect(SRC_A, path, 200, KEY_A);
		snprintf(path, sizeof(path), "/%s/user-data", vers[i]);
		struct resp r = curl(SRC_A, "", path);
		assert_int_equal(r.status, 200);
		assert_int_equal(r.len, UD_A_LEN);
		assert_memory_equal(r.body, ud_a, UD_A_LEN);
		assert_non_null(strstr(r.headers, "application/octet-stream"));
		resp_free(&r);
	}
	expect(SRC_A, "/2015-01-01/meta-data/instance-id", 404, NULL);
	expect(SRC_A, "/latest/meta-data/ami-id", 200, "ami-0123456789abcdef0");
	expect(SRC_A, "/latest/meta-data/ami-launch-index", 200, "0");
	expect(SRC_A, "/latest/meta-data/instance-type", 200, "t1.nano");
	expect(SRC_A, "/latest/meta-data/hostname", 200, "ip-10-0-0-5.nubo-1.compute.internal");
	expect(SRC_A, "/latest/meta-data/local-hostname", 200,
	       "ip-10-0-0-5.nubo-1.compute.internal");
	expect(SRC_A, "/latest/meta-data/local-ipv4", 200, SRC_A);
	expect(SRC_A, "/latest/meta-data/public-ipv4", 200, "198.51.100.5");
	expect(SRC_A, "/latest/meta-data/public-hostname", 200,
	       "ec2-198-51-100-5.nubo-1.compute.nubo");
	expect(SRC_A, "/latest/meta-data/mac", 200, "52:54:00:aa:00:01");
	expect(SRC_A, "/latest/meta-data/reservation-id", 200, "r-0123456789abcdef0");
	expect(SRC_A, "/latest/meta-data/security-groups", 200, "web\ndefault");
	expect(SRC_A, "/latest/meta-data/placement/", 200, "availability-zone\nregion");
	expect(SRC_A, "/latest/meta-data/placement/availability-zone", 200, "nubo-1a");
	expect(SRC_A, "/latest/meta-data/placement/region", 200, "nubo-1");
	expect(SRC_A, "/latest/meta-data/public-keys/", 200, "0=mykey");
	expect(SRC_A, "/latest/meta-data/public-keys/0/", 200, "openssh-key");
	expect(SRC_A, "/latest/meta-data/public-keys/1/", 404, NULL);
	expect(SRC_A, "/latest/meta-data/network/", 200, "interfaces/");
	expect(SRC_A, "/latest/meta-data/network/interfaces/", 200, "macs/");
	expect(SRC_A, "/latest/meta-data/network/interfaces/macs/", 200, "52:54:00:aa:00:01/");
	expect(SRC_A, "/latest/meta-data/network/interfaces/macs/52:54:00:aa:00:01/", 200,
	       "device-number\ninterface-id\nlocal-hostname\nlocal-ipv4s\nmac\nowner-id\n"
	       "public-hostname\npublic-ipv4s\nsecurity-group-ids\nsecurity-groups\nsubnet-id\n"
	       "subnet-ipv4-cidr-block\nvpc-id\nvpc-ipv4-cidr-block\nvpc-ipv4-cidr-blocks");
#define MACP "/latest/meta-data/network/interfaces/macs/52:54:00:aa:00:01/"
	expect(SRC_A, MACP "device-number", 200, "0");
	expect(SRC_A, MACP "local-ipv4s", 200, SRC_A);
	expect(SRC_A, MACP "subnet-id", 200, "subnet-0123456789abcdef0");
	expect(SRC_A, MACP "vpc-id", 200, "vpc-a");
	expect(SRC_A, MACP "subnet-ipv4-cidr-block", 200, "10.0.0.0/20");
	expect(SRC_A, MACP "vpc-ipv4-cidr-block", 200, "10.0.0.0/16");
	expect(SRC_A, MACP "vpc-ipv4-cidr-blocks", 200, "10.0.0.0/16");
	expect(SRC_A, MACP "security-group-ids", 200,
	       "sg-0123456789abcdef0\nsg-0123456789abcdef1");
	expect(SRC_A, MACP "public-ipv4s", 200, "198.51.100.5");
	expect(SRC_A, MACP "interface-id", 200, "eni-0123456789abcdef0");
	expect(SRC_A, MACP "owner-id", 200, "123456789012");
	expect(SRC_A, "/latest/meta-data/nonexistent", 404, NULL);
	expect(SRC_A, "/latest/meta-data/instance-id/more", 404, NULL);
	expect(SRC_A, "/latest/dynamic/", 200, "instance-identity/");
	expect(SRC_A, "/latest/dynamic/instance-identity/", 200, "document");
	/* the identity document is EC2's JSON */
	struct resp r = curl(SRC_A, "", "/2021-03-23/dynamic/instance-identity/document");
	assert_int_equal(r.status, 200);
	json_t *doc = json_loads(r.body, 0, NULL);
	assert_non_null(doc);
	assert_string_equal(json_string_value(json_object_get(doc, "instanceId")),
			    "i-000000000000000aa");
	assert_string_equal(json_string_value(json_object_get(doc, "accountId")), "123456789012");
	assert_string_equal(json_string_value(json_object_get(doc, "region")), "nubo-1");
	assert_string_equal(json_string_value(json_object_get(doc, "availabilityZone")),
			    "nubo-1a");
	assert_string_equal(json_string_value(json_object_get(doc, "imageId")),
			    "ami-0123456789abcdef0");
	assert_string_equal(json_string_value(json_object_get(doc, "privateIp")), SRC_A);
	assert_string_equal(json_string_value(json_object_get(doc, "pendingTime")),
			    "2026-12-03T16:00:00Z");
	assert_string_equal(json_string_value(json_object_get(doc, "architecture")), "x86_64");
	json_decref(doc);
	resp_free(&r);
}

static void test_no_key_no_user_data(void **state)
{
	char args[256], *t;

	(void)state;
	/* instance B has neither: no public-keys folder, user-data 404 */
	t = token(SRC_B, 60);
	snprintf(args, sizeof(args), "-H 'X-aws-ec2-metadata-token: %s'", t);
	struct resp r = curl(SRC_B, args, "/latest/meta-data/public-keys/");
	assert_int_equal(r.status, 404);
	resp_free(&r);
	r = curl(SRC_B, args, "/latest/user-data");
	assert_int_equal(r.status, 404);
	resp_free(&r);
	r = curl(SRC_B, args, "/latest/");
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "dynamic\nmeta-data");
	resp_free(&r);
	free(t);
}

/* The listener decides: the same source address on vpc-b's listener is
 * instance C; the unknown source gets 404 whatever it asks. */
static void test_identity_by_listener(void **state)
{
	char url[128];
	struct resp r;

	(void)state;
	snprintf(url, sizeof(url), "--connect-to " MDIP ":80:" MDIP ":%d", PORT_B);
	r = curl(SRC_A, url, "/latest/meta-data/instance-id");
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "i-000000000000000cc");
	resp_free(&r);
	r = curl(SRC_A, url, "/latest/meta-data/public-keys/");
	assert_int_equal(r.status, 404);
	resp_free(&r);
	expect(SRC_X, "/latest/meta-data/instance-id", 404, NULL);
	expect(SRC_X, "/", 404, NULL);
	r = curl(SRC_X, "-X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60'", "/latest/api/token");
	assert_int_equal(r.status, 404);
	resp_free(&r);
	assert_int_equal(raw_status(SRC_X, "BREW /pot HTTP/1.1\r\n\r\n"), 404);
	/* endpoint disabled: 404 as well, tokens too */
	expect(SRC_D, "/latest/meta-data/instance-id", 404, NULL);
	r = curl(SRC_D, "-X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60'", "/latest/api/token");
	assert_int_equal(r.status, 404);
	resp_free(&r);
}

/* ---- IMDSv2 ---- */

static void test_v2(void **state)
{
	char args[256], *ta, *tb;
	struct resp r;

	(void)state;
	ta = token(SRC_A, 21600);
	snprintf(args, sizeof(args), "-H 'X-aws-ec2-metadata-token: %s'", ta);
	r = curl(SRC_A, args, "/latest/meta-data/instance-id");
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "i-000000000000000aa");
	assert_non_null(strcasestr(r.headers, "X-Aws-Ec2-Metadata-Token-Ttl-Seconds: 2160"));
	resp_free(&r);
	/* the same token works on every version */
	r = curl(SRC_A, args, "/2009-04-04/meta-data/instance-id");
	assert_int_equal(r.status, 200);
	resp_free(&r);
	/* A's token is A's: B cannot use it */
	r = curl(SRC_B, args, "/latest/meta-data/instance-id");
	assert_int_equal(r.status, 401);
	resp_free(&r);
	/* nor the same address on another VPC's listener */
	snprintf(args, sizeof(args), "-H 'X-aws-ec2-metadata-token: %s' --connect-to " MDIP
				     ":80:" MDIP ":%d",
		 ta, PORT_B);
	r = curl(SRC_A, args, "/latest/meta-data/instance-id");
	assert_int_equal(r.status, 401);
	resp_free(&r);
	/* a forged or mangled token: 401 even where tokens are optional */
	ta[5] = ta[5] == 'A' ? 'B' : 'A';
	snprintf(args, sizeof(args), "-H 'X-aws-ec2-metadata-token: %s'", ta);
	r = curl(SRC_A, args, "/latest/meta-data/instance-id");
	assert_int_equal(r.status, 401);
	resp_free(&r);
	r = curl(SRC_A, "-H 'X-aws-ec2-metadata-token: nonsense'", "/latest/meta-data/instance-id");
	assert_int_equal(r.status, 401);
	resp_free(&r);
	/* required: plain GET refused, with a token fine */
	expect(SRC_B, "/latest/meta-data/instance-id", 401, NULL);
	tb = token(SRC_B, 60);
	snprintf(args, sizeof(args), "-H 'X-aws-ec2-metadata-token: %s'", tb);
	r = curl(SRC_B, args, "/latest/meta-data/instance-id");
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "i-000000000000000bb");
	resp_free(&r);
	/* TTL: 1..21600, an integer */
	static const char *const bad[] = {"0", "21601", "-5", "abc", "10x", "", "99999999999999999999"};
	for (size_t i = 0; i < NB_ARRAY_SIZE(bad); i++) {
		snprintf(args, sizeof(args), "-X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: %s'",
			 bad[i]);
		r = curl(SRC_A, args, "/latest/api/token");
		if (r.status != 400)
			fprintf(stderr, "ttl '%s': %d\n", bad[i], r.status);
		assert_int_equal(r.status, 400);
		resp_free(&r);
	}
	r = curl(SRC_A, "-X PUT", "/latest/api/token");
	assert_int_equal(r.status, 400);
	resp_free(&r);
	/* X-Forwarded-For on the PUT: 403, as AWS */
	r = curl(SRC_A,
		 "-X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' -H 'X-Forwarded-For: 1.2.3.4'",
		 "/latest/api/token");
	assert_int_equal(r.status, 403);
	resp_free(&r);
	/* the token path only takes PUT; PUT elsewhere is refused */
	expect(SRC_A, "/latest/api/token", 405, NULL);
	r = curl(SRC_A, "-X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60'",
		 "/latest/meta-data/");
	assert_int_equal(r.status, 405);
	resp_free(&r);
	free(ta);
	free(tb);
}

static void test_token_expiry(void **state)
{
	char args[256], *t;
	struct resp r;
	int64_t t0 = nb_now_ms(), t401 = 0;

	(void)state;
	t = token(SRC_B, 1);
	snprintf(args, sizeof(args), "-H 'X-aws-ec2-metadata-token: %s'", t);
	r = curl(SRC_B, args, "/latest/meta-data/instance-id");
	assert_int_equal(r.status, 200);
	resp_free(&r);
	/* poll until refused: within the TTL plus a margin, never before it */
	while (nb_now_ms() - t0 < 5000) {
		r = curl(SRC_B, args, "/latest/meta-data/instance-id");
		int st = r.status;
		resp_free(&r);
		if (st == 401) {
			t401 = nb_now_ms();
			break;
		}
		assert_int_equal(st, 200);
		usleep(100 * 1000); /* poll interval */
	}
	assert_true(t401 > 0);
	assert_true(t401 - t0 >= 1000);
	free(t);
}

/* The PUT's answer leaves with IP TTL = the instance's hop limit: seen on
 * the wire (a packet socket on lo), against the default for a GET. */
static int reply_ttl(const char *src, const char *req)
{
	int ps = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_IP));
	struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP),
				  .sll_ifindex = (int)if_nametoindex("lo")};
	struct in_addr dst;
	unsigned char pkt[65536];
	int ttl = -1;
	int64_t until;

	assert_true(ps >= 0);
	assert_int_equal(bind(ps, (struct sockaddr *)&sll, sizeof(sll)), 0);
	inet_pton(AF_INET, src, &dst);
	free(raw(src, 80, req, strlen(req), NULL));
	until = nb_now_ms() + 5000;
	while (ttl < 0 && nb_now_ms() < until) {
		struct pollfd p = {.fd = ps, .events = POLLIN};
		if (poll(&p, 1, 500) <= 0)
			continue;
		ssize_t n = recv(ps, pkt, sizeof(pkt), MSG_DONTWAIT);
		if (n < (ssize_t)(sizeof(struct iphdr) + sizeof(struct tcphdr)))
			continue;
		struct iphdr *ip = (struct iphdr *)pkt;
		if (ip->protocol != IPPROTO_TCP || ip->daddr != dst.s_addr)
			continue;
		struct tcphdr *th = (struct tcphdr *)(pkt + ip->ihl * 4);
		size_t off = (size_t)ip->ihl * 4 + (size_t)th->doff * 4;
		if (ntohs(th->source) != 80 || (size_t)n < off + 12 ||
		    memcmp(pkt + off, "HTTP/1.1 ", 9))
			continue;
		ttl = ip->ttl;
	}
	close(ps);
	return ttl;
}

static void test_hop_limit(void **state)
{
	static const char put[] = "PUT /latest/api/token HTTP/1.1\r\nHost: " MDIP
				  "\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n"
				  "Connection: close\r\n\r\n";
	static const char get[] = "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: " MDIP
				  "\r\nConnection: close\r\n\r\n";

	(void)state;
	assert_int_equal(reply_ttl(SRC_A, put), 1);
	assert_int_equal(reply_ttl(SRC_B, put), 2);
	assert_int_equal(reply_ttl(SRC_A, get), 64);
}

/* ---- HTTP ---- */

static void test_http(void **state)
{
	static const char two[] = "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n\r\n"
				  "GET /latest/meta-data/local-ipv4 HTTP/1.1\r\nHost: x\r\n"
				  "Connection: close\r\n\r\n";
	static const char head[] = "HEAD /latest/meta-data/instance-id HTTP/1.1\r\n"
				   "Connection: close\r\n\r\n";
	static const char body[] = "PUT /latest/api/token HTTP/1.1\r\n"
				   "X-aws-ec2-metadata-token-ttl-seconds: 60\r\n"
				   "Content-Length: 5\r\nConnection: close\r\n\r\nhello";
	static const char h10[] = "GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n";
	char *out;

	(void)state;
	/* keep-alive and pipelining: two answers, in order, on one connection */
	out = raw(SRC_A, 80, two, strlen(two), NULL);
	char *first = strstr(out, "i-000000000000000aa"), *second = strstr(out, "\r\n\r\n" SRC_A);
	assert_non_null(first);
	assert_non_null(second);
	assert_true(first < second);
	assert_non_null(strstr(out, "Connection: keep-alive"));
	free(out);
	/* HEAD: the length, no body */
	out = raw(SRC_A, 80, head, strlen(head), NULL);
	assert_non_null(strstr(out, "HTTP/1.1 200 OK"));
	assert_non_null(strstr(out, "Content-Length: 19\r\n"));
	assert_null(strstr(out, "i-000000000000000aa"));
	free(out);
	/* a PUT with a body: read and ignored */
	out = raw(SRC_A, 80, body, strlen(body), NULL);
	assert_non_null(strstr(out, "HTTP/1.1 200 OK"));
	free(out);
	/* HTTP/1.0 closes after the answer (raw() returns only on close) */
	out = raw(SRC_A, 80, h10, strlen(h10), NULL);
	assert_non_null(strstr(out, "i-000000000000000aa"));
	free(out);
	/* a client that shuts its side right after the request (the FIN often
	 * read together with it) still gets every answer; repeated, since the
	 * two arrive in one read only some of the time */
	for (int i = 0; i < 40; i++) {
		out = raw_halfclose(SRC_A, i % 2 ? h10 : two);
		assert_non_null(strstr(out, "i-000000000000000aa"));
		if (i % 2 == 0)
			assert_non_null(strstr(out, "\r\n\r\n" SRC_A));
		free(out);
	}
	/* ... and one that shuts it in the middle of a request is closed at
	 * once (nothing to answer), not kept until the idle timeout */
	out = raw_halfclose(SRC_A, "GET /latest/meta-data/instance-id HTTP/1.1\r\nHo");
	assert_string_equal(out, "");
	free(out);
}

static void test_hostile(void **state)
{
	struct nb_buf b;
	char *out;
	size_t len;
	struct nb_imds_stats st;

	(void)state;
	/* a method nobody serves; malformed request lines; a version we do not speak */
	assert_int_equal(raw_status(SRC_A, "BREW /latest/meta-data/ HTTP/1.1\r\n\r\n"), 405);
	assert_int_equal(raw_status(SRC_A, "DELETE /latest/api/token HTTP/1.1\r\n\r\n"), 405);
	assert_int_equal(raw_status(SRC_A, "get /latest/meta-data/ HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(raw_status(SRC_A, "GET latest HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(raw_status(SRC_A, "GET / HTTP/2.0\r\n\r\n"), 400);
	assert_int_equal(raw_status(SRC_A, "GET /\r\n\r\n"), 400);
	assert_int_equal(raw_status(SRC_A, "GET / HTTP/1.1\r\nNoColon\r\n\r\n"), 400);
	assert_int_equal(raw_status(SRC_A, "GET / HTTP/1.1\r\n folded: x\r\n\r\n"), 400);
	out = raw(SRC_A, 80, "GET /\x01 HTTP/1.1\r\n\r\n", sizeof("GET /\x01 HTTP/1.1\r\n\r\n") - 1, NULL);
	assert_true(nb_str_has_prefix(out, "HTTP/1.1 400 "));
	free(out);
	out = raw(SRC_A, 80, "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n",
		  sizeof("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n") - 1, NULL);
	assert_true(nb_str_has_prefix(out, "HTTP/1.1 400 "));
	free(out);
	/* path traversal gets nothing (and never the user-data) */
	assert_int_equal(raw_status(SRC_A, "GET /latest/meta-data/../user-data HTTP/1.1\r\n\r\n"),
			 400);
	assert_int_equal(raw_status(SRC_A, "GET /latest/./user-data HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(raw_status(SRC_A, "GET /latest/%2e%2e/user-data HTTP/1.1\r\n\r\n"), 404);
	assert_int_equal(raw_status(SRC_A, "GET /../../etc/passwd HTTP/1.1\r\n\r\n"), 400);
	/* bodies: chunked is refused, a large one too */
	assert_int_equal(raw_status(SRC_A, "PUT /latest/api/token HTTP/1.1\r\n"
					   "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
			 411);
	assert_int_equal(raw_status(SRC_A, "PUT /latest/api/token HTTP/1.1\r\n"
					   "Content-Length: 1000000\r\n\r\n"),
			 413);
	/* huge headers: 431 and the connection closed (raw() waits for the close) */
	nb_buf_init(&b, 1 << 20);
	nb_buf_puts(&b, "GET /latest/meta-data/ HTTP/1.1\r\nX-Big: ");
	for (int i = 0; i < 20000; i++)
		nb_buf_puts(&b, "a");
	nb_buf_puts(&b, "\r\n\r\n");
	out = raw(SRC_A, 80, b.data, b.len, &len);
	assert_true(nb_str_has_prefix(out, "HTTP/1.1 431 "));
	free(out);
	nb_buf_reset(&b);
	nb_buf_puts(&b, "GET /latest/meta-data/ HTTP/1.1\r\n");
	for (int i = 0; i < 100; i++)
		nb_buf_printf(&b, "X-H%d: v\r\n", i);
	nb_buf_puts(&b, "\r\n");
	out = raw(SRC_A, 80, b.data, b.len, &len);
	assert_true(nb_str_has_prefix(out, "HTTP/1.1 431 "));
	free(out);
	/* a long path */
	nb_buf_reset(&b);
	nb_buf_puts(&b, "GET /");
	for (int i = 0; i < 4000; i++)
		nb_buf_puts(&b, "a/");
	nb_buf_puts(&b, " HTTP/1.1\r\n\r\n");
	out = raw(SRC_A, 80, b.data, b.len, &len);
	assert_true(nb_str_has_prefix(out, "HTTP/1.1 400 "));
	free(out);
	nb_buf_free(&b);

	/* 1000 connections at once on vpc-a: the server holds at most its
	 * ceiling, closes the rest, and still answers the other VPC meanwhile */
	enum { N = 1000 };
	static int fds[N];
	int opened = 0;
	for (int i = 0; i < N; i++) {
		fds[i] = connect_from(SRC_A, 80);
		if (fds[i] >= 0)
			opened++;
	}
	assert_true(opened > NB_IMDS_MAX_CONNS_PER_LISTENER);
	int64_t until = nb_now_ms() + 20000;
	do {
		nb_imds_get_stats(g_m, &st);
		if (st.refused >= (uint64_t)(opened - NB_IMDS_MAX_CONNS_PER_LISTENER))
			break;
		usleep(50 * 1000); /* poll for the server to catch up with its queue */
	} while (nb_now_ms() < until);
	assert_true(st.conns <= NB_IMDS_MAX_CONNS_PER_LISTENER);
	assert_true(st.refused >= (uint64_t)(opened - NB_IMDS_MAX_CONNS_PER_LISTENER));
	struct resp r = curl(SRC_A, "--connect-to " MDIP ":80:" MDIP ":8080",
			     "/latest/meta-data/instance-id");
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "i-000000000000000cc");
	resp_free(&r);
	for (int i = 0; i < N; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	/* once they are gone, vpc-a answers again */
	until = nb_now_ms() + 10000;
	do {
		nb_imds_get_stats(g_m, &st);
		if (st.conns == 0)
			break;
		usleep(20 * 1000);
	} while (nb_now_ms() < until);
	assert_int_equal(st.conns, 0);
	expect(SRC_A, "/latest/meta-data/instance-id", 200, "i-000000000000000aa");
}

/* unlisten closes the socket before it returns: the port refuses at once
 * and can be bound and served again */
static void test_unlisten(void **state)
{
	struct nb_imds_stats st;
	int fd;

	(void)state;
	nb_imds_get_stats(g_m, &st);
	assert_int_equal(st.listeners, 2);
	nb_imds_unlisten(g_m, "vpc-b");
	fd = connect_from(SRC_A, PORT_B);
	assert_int_equal(fd, -ECONNREFUSED);
	nb_imds_unlisten(g_m, "vpc-b"); /* again: nothing */
	nb_imds_get_stats(g_m, &st);
	assert_int_equal(st.listeners, 1);
	/* bad sockets are refused and closed */
	assert_int_equal(nb_imds_listen(g_m, "", bound_socket(MDIP, PORT_B)), -EINVAL);
	assert_int_equal(nb_imds_listen(g_m, "vpc-b", socket(AF_INET, SOCK_DGRAM, 0)), -ENOTSOCK);
	assert_int_equal(nb_imds_listen(g_m, "vpc-b", bound_socket(MDIP, PORT_B)), 0);
	struct resp r = curl(SRC_A, "--connect-to " MDIP ":80:" MDIP ":8080",
			     "/latest/meta-data/instance-id");
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "i-000000000000000cc");
	resp_free(&r);
	/* the same key again replaces the socket */
	assert_int_equal(nb_imds_listen(g_m, "vpc-b", bound_socket(MDIP, PORT_B + 1)), 0);
	assert_int_equal(connect_from(SRC_A, PORT_B), -ECONNREFUSED);
	fd = connect_from(SRC_A, PORT_B + 1);
	assert_true(fd >= 0);
	close(fd);
	nb_imds_get_stats(g_m, &st);
	assert_int_equal(st.listeners, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_listings),	 cmocka_unit_test(test_no_key_no_user_data),
	    cmocka_unit_test(test_identity_by_listener), cmocka_unit_test(test_v2),
	    cmocka_unit_test(test_token_expiry), cmocka_unit_test(test_hop_limit),
	    cmocka_unit_test(test_http),	 cmocka_unit_test(test_hostile),
	    cmocka_unit_test(test_unlisten),
	};

	return cmocka_run_group_tests_name("imds", tests, setup, teardown);
}
