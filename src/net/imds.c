/* The instance metadata service (see imds.h and docs/network.md).
 *
 * One thread runs an epoll loop over the listeners, the connections and a
 * wake eventfd. Listeners live in a list guarded by m->mu, shared with the
 * callers of nb_imds_listen/unlisten: an unlisten removes the socket from
 * epoll and closes it at once (the thread re-checks `dead` under mu before
 * every accept, so a reused fd number is never touched) and marks the
 * entry dead; the thread then closes that listener's connections and frees
 * it. Connections belong to the thread alone. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/json.h"
#include "common/util.h"
#include "net/imds.h"

#define KIND_WAKE 1
#define KIND_LISTENER 2
#define KIND_CONN 3

#define IMDS_OUT_MAX (2u << 20) /* one response: user-data is at most 1 MiB */
#define IMDS_USER_DATA_MAX (1u << 20)
#define TOKEN_RAW 27            /* version, expiry (ms, monotonic), mac */
#define TOKEN_MAC 18
#define TOKEN_B64 36

struct lst {
	int kind;
	char key[64];
	int fd;             /* -1 once dead */
	bool dead;          /* unlistened: the thread frees it */
	bool paused;        /* out of fds: not in epoll for a moment */
	int64_t paused_until;
	int nconns;         /* the thread's */
	struct lst *next;
};

struct conn {
	int kind;
	int fd;
	struct lst *l;
	char src[INET_ADDRSTRLEN];
	char in[NB_IMDS_MAX_REQUEST + NB_IMDS_MAX_BODY];
	size_t inlen;
	struct nb_buf out;
	size_t outoff;
	int64_t deadline;
	bool close_after;
	bool want_out;
	bool rd_eof;        /* the client shut its side: answer, then close */
	struct conn *prev, *next;
};

struct nb_imds {
	nb_imds_lookup_fn lookup;
	void *arg;
	unsigned char key[32]; /* token HMAC key, random per start */
	int ep;
	struct {
		int kind;
		int fd;
	} wake;
	pthread_t thread;
	atomic_int stopping;
	pthread_mutex_t mu; /* guards lsts, nlst and every lst but nconns */
	struct lst *lsts;
	int nlst;
	struct conn *conns; /* the thread's */
	int nconns;
	atomic_uint_fast64_t requests, refused;
	atomic_int conns_now;
};

static const char *const versions[] = {"1.0",	     "2009-04-04", "2016-09-02",
				       "2018-09-24", "2021-03-23", "latest"};

/* ---- tokens ---- */

static void token_mac(const struct nb_imds *m, const unsigned char *head, size_t headlen,
		      const char *key, const char *instance_id, unsigned char out[TOKEN_MAC])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	struct nb_buf b;

	nb_buf_init(&b, 1024);
	nb_buf_append(&b, head, headlen);
	nb_buf_printf(&b, "|%s|%s", key, instance_id);
	HMAC(EVP_sha256(), m->key, sizeof(m->key), (const unsigned char *)b.data, b.len, md,
	     &mdlen);
	nb_buf_free(&b);
	memcpy(out, md, TOKEN_MAC);
}

static void token_make(const struct nb_imds *m, const char *key, const char *instance_id,
		       int ttl_s, char out[TOKEN_B64 + 1])
{
	unsigned char raw[TOKEN_RAW];
	uint64_t exp = (uint64_t)(nb_now_ms() + (int64_t)ttl_s * 1000);

	raw[0] = 1;
	for (int i = 0; i < 8; i++)
		raw[1 + i] = (unsigned char)(exp >> (56 - 8 * i));
	token_mac(m, raw, 9, key, instance_id, raw + 9);
	EVP_EncodeBlock((unsigned char *)out, raw, TOKEN_RAW);
	out[TOKEN_B64] = '\0';
}

/* Milliseconds the token has left (> 0), or 0 when invalid or expired. */
static int64_t token_check(const struct nb_imds *m, const char *tok, const char *key,
			   const char *instance_id)
{
	unsigned char raw[TOKEN_RAW + 3], mac[TOKEN_MAC];
	uint64_t exp = 0;
	int64_t left;

	if (strlen(tok) != TOKEN_B64 || strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuv"
						 "wxyz0123456789+/") != TOKEN_B64)
		return 0;
	if (EVP_DecodeBlock(raw, (const unsigned char *)tok, TOKEN_B64) != TOKEN_RAW ||
	    raw[0] != 1)
		return 0;
	token_mac(m, raw, 9, key, instance_id, mac);
	if (CRYPTO_memcmp(mac, raw + 9, TOKEN_MAC))
		return 0;
	for (int i = 0; i < 8; i++)
		exp = exp << 8 | raw[1 + i];
	left = (int64_t)exp - nb_now_ms();
	return left > 0 ? left : 0;
}

/* ---- responses ---- */

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 411: return "Length Required";
	case 413: return "Payload Too Large";
	case 431: return "Request Header Fields Too Large";
	default: return "Internal Server Error";
	}
}

struct reply {
	int status;
	const char *ctype;
	const char *extra; /* extra header lines, each ending in \r\n */
	const void *body;
	size_t len;
};

static void respond(struct conn *c, const struct reply *r, bool head)
{
	char date[64], errbody[512];
	const void *body = r->body;
	size_t len = r->len;
	struct tm tm;
	time_t now = time(NULL);

	if (r->status != 200 && !body) {
		/* EC2's error page */
		snprintf(errbody, sizeof(errbody),
			 "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n"
			 "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n"
			 "\t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n"
			 "<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n"
			 " <head>\n  <title>%d - %s</title>\n </head>\n <body>\n  <h1>%d - %s</h1>\n"
			 " </body>\n</html>\n",
			 r->status, reason(r->status), r->status, reason(r->status));
		body = errbody;
		len = strlen(errbody);
	}
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	if (nb_buf_printf(&c->out,
			  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			  "Date: %s\r\nServer: EC2ws\r\nConnection: %s\r\n%s\r\n",
			  r->status, reason(r->status),
			  r->ctype ? r->ctype : (r->status == 200 ? "text/plain" : "text/html"), len,
			  date, c->close_after ? "close" : "keep-alive", r->extra ? r->extra : "") <
		    0 ||
	    (!head && len && nb_buf_append(&c->out, body, len) < 0)) {
		nb_buf_reset(&c->out);
		c->close_after = true;
	}
}

/* ---- the tree ---- */

static void put_str(json_t *o, const char *k, const char *v)
{
	if (v && *v)
		json_object_set_new(o, k, json_string(v));
}

/* "a\nb" from a JSON array of strings. */
static char *join_lines(const json_t *arr)
{
	struct nb_buf b;
	const json_t *v;
	size_t i;

	nb_buf_init(&b, 1 << 16);
	nb_buf_puts(&b, "");
	json_array_foreach(arr, i, v)
	{
		if (!json_is_string(v))
			continue;
		if (b.len)
			nb_buf_puts(&b, "\n");
		nb_buf_puts(&b, json_string_value(v));
	}
	return nb_buf_steal(&b);
}

static void put_lines(json_t *o, const char *k, const json_t *arr)
{
	char *s = join_lines(arr);

	if (s && *s)
		json_object_set_new(o, k, json_string(s));
	free(s);
}

/* The subnet's CIDR from ip and prefix. */
static void subnet_cidr(const char *ip, int prefix, char *out, size_t outsz)
{
	struct in_addr a;
	uint32_t n, mask;

	*out = '\0';
	if (prefix < 0 || prefix > 32 || inet_pton(AF_INET, ip, &a) != 1)
		return;
	mask = prefix ? 0xffffffffu << (32 - prefix) : 0;
	n = ntohl(a.s_addr) & mask;
	snprintf(out, outsz, "%u.%u.%u.%u/%d", n >> 24, (n >> 16) & 255, (n >> 8) & 255, n & 255,
		 prefix);
}

static json_t *tree_meta(const json_t *md, const json_t *nic, json_t **pk_node)
{
	json_t *t = json_object(), *net, *mac, *pl, *pk;
	const char *nicmac = nb_json_str(nic, "mac");
	char cidr[32], num[24];

	if (!nicmac)
		nicmac = nb_json_str(md, "mac");
	*pk_node = NULL;
	put_str(t, "ami-id", nb_json_str(md, "ami_id"));
	json_object_set_new(t, "ami-launch-index", json_string("0"));
	put_str(t, "hostname", nb_json_str(md, "hostname"));
	put_str(t, "instance-id", nb_json_str(md, "instance_id"));
	put_str(t, "instance-type", nb_json_str(md, "instance_type"));
	put_str(t, "local-hostname", nb_json_str(md, "local_hostname"));
	put_str(t, "local-ipv4", nb_json_str(md, "local_ipv4"));
	put_str(t, "mac", nb_json_str(md, "mac"));
	if (nicmac) {
		mac = json_object();
		snprintf(num, sizeof(num), "%lld", (long long)nb_json_int(nic, "device_index", 0));
		json_object_set_new(mac, "device-number", json_string(num));
		put_str(mac, "interface-id", nb_json_str(nic, "eni_id"));
		put_str(mac, "local-hostname", nb_json_str(md, "local_hostname"));
		put_str(mac, "local-ipv4s", nb_json_str(nic, "ip"));
		put_str(mac, "mac", nicmac);
		put_str(mac, "owner-id", nb_json_str(md, "account_id"));
		if (nb_json_str(nic, "public_ip"))
			put_str(mac, "public-hostname", nb_json_str(md, "public_hostname"));
		put_str(mac, "public-ipv4s", nb_json_str(nic, "public_ip"));
		put_lines(mac, "security-group-ids", json_object_get(nic, "security_groups"));
		put_lines(mac, "security-groups", json_object_get(md, "security_groups"));
		put_str(mac, "subnet-id", nb_json_str(nic, "subnet_id"));
		if (nb_json_str(nic, "ip")) {
			subnet_cidr(nb_json_str(nic, "ip"), (int)nb_json_int(nic, "prefix", -1), cidr,
				    sizeof(cidr));
			put_str(mac, "subnet-ipv4-cidr-block", cidr);
		}
		put_str(mac, "vpc-id", nb_json_str(nic, "vpc_id"));
		put_str(mac, "vpc-ipv4-cidr-block", nb_json_str(nic, "vpc_cidr"));
		put_str(mac, "vpc-ipv4-cidr-blocks", nb_json_str(nic, "vpc_cidr"));
		net = json_pack("{s:{s:{s:o}}}", "interfaces", "macs", nicmac, mac);
		json_object_set_new(t, "network", net);
	}
	pl = json_object();
	put_str(pl, "availability-zone", nb_json_str(md, "availability_zone"));
	put_str(pl, "region", nb_json_str(md, "region"));
	json_object_set_new(t, "placement", pl);
	put_str(t, "public-hostname", nb_json_str(md, "public_hostname"));
	put_str(t, "public-ipv4", nb_json_str(md, "public_ipv4"));
	if (nb_json_str(md, "public_key") && *nb_json_str(md, "public_key")) {
		pk = json_pack("{s:{s:s}}", "0", "openssh-key", nb_json_str(md, "public_key"));
		json_object_set_new(t, "public-keys", pk);
		*pk_node = pk;
	}
	put_str(t, "reservation-id", nb_json_str(md, "reservation_id"));
	put_lines(t, "security-groups", json_object_get(md, "security_groups"));
	return t;
}

static json_t *tree_dynamic(const json_t *md)
{
	json_t *doc = json_object();
	char *s;
	json_t *t;

#define DOC_STR(k, v) json_object_set_new(doc, k, v ? json_string(v) : json_null())
	DOC_STR("accountId", nb_json_str(md, "account_id"));
	json_object_set_new(doc, "architecture", json_string("x86_64"));
	DOC_STR("availabilityZone", nb_json_str(md, "availability_zone"));
	json_object_set_new(doc, "billingProducts", json_null());
	json_object_set_new(doc, "devpayProductCodes", json_null());
	json_object_set_new(doc, "marketplaceProductCodes", json_null());
	DOC_STR("imageId", nb_json_str(md, "ami_id"));
	DOC_STR("instanceId", nb_json_str(md, "instance_id"));
	DOC_STR("instanceType", nb_json_str(md, "instance_type"));
	json_object_set_new(doc, "kernelId", json_null());
	DOC_STR("pendingTime", nb_json_str(md, "launch_time"));
	DOC_STR("privateIp", nb_json_str(md, "local_ipv4"));
	json_object_set_new(doc, "ramdiskId", json_null());
	DOC_STR("region", nb_json_str(md, "region"));
	json_object_set_new(doc, "version", json_string("2017-09-30"));
#undef DOC_STR
	s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(doc);
	t = json_pack("{s:{s:s}}", "instance-identity", "document", s ? s : "{}");
	free(s);
	return t;
}

static void listing(struct nb_buf *b, const json_t *node, const json_t *pk_node,
		    const json_t *md)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)node, k, v)
	{
		if (b->len)
			nb_buf_puts(b, "\n");
		if (node == pk_node)
			nb_buf_printf(b, "%s=%s", k, nb_json_str_or(md, "key_name"));
		else
			nb_buf_printf(b, "%s%s", k, json_is_object(v) ? "/" : "");
	}
}

/* Decoded user data into *out (caller frees), or -ENOENT. */
static int user_data(const json_t *md, unsigned char **out, size_t *len)
{
	const char *b64 = nb_json_str(md, "user_data");
	size_t n, pad = 0;
	int r;

	if (!b64 || !*b64)
		return -ENOENT;
	n = strlen(b64);
	if (n % 4 || n / 4 * 3 > IMDS_USER_DATA_MAX)
		return -EINVAL;
	*out = malloc(n / 4 * 3 + 1);
	if (!*out)
		return -ENOMEM;
	r = EVP_DecodeBlock(*out, (const unsigned char *)b64, (int)n);
	if (r < 0) {
		free(*out);
		*out = NULL; /* the caller frees *out whatever the result */
		return -EINVAL;
	}
	if (n >= 1 && b64[n - 1] == '=')
		pad++;
	if (n >= 2 && b64[n - 2] == '=')
		pad++;
	*len = (size_t)r - pad;
	return 0;
}

/* ---- one request ---- */

struct req {
	char method[16];
	char path[2048];
	bool http10;
	const char *token, *ttl, *xff, *connection;
	bool has_te;
	size_t content_length;
	bool bad_cl;
};

static void serve(struct nb_imds *m, struct conn *c, const struct req *q)
{
	struct reply r = {.status = 404};
	bool head = !strcmp(q->method, "HEAD");
	json_t *who, *md, *nic;
	char extra[128] = "", path[2048], *seg[32], *save = NULL;
	int nseg = 0, vi = -1;
	int64_t left = 0;

	who = m->lookup(m->arg, c->l->key, c->src);
	md = json_object_get(who, "metadata");
	nic = json_object_get(who, "nic");
	if (!json_is_object(md)) {
		respond(c, &r, head);
		json_decref(who);
		return;
	}
	if (!strcmp(nb_json_str_or(md, "http_endpoint"), "disabled"))
		goto out;
	if (strcmp(q->method, "GET") && strcmp(q->method, "HEAD") && strcmp(q->method, "PUT")) {
		r.status = 405;
		r.extra = "Allow: GET, HEAD, PUT\r\n";
		goto out;
	}
	nb_strlcpy(path, q->path, sizeof(path));
	path[strcspn(path, "?#")] = '\0';
	if (!strcmp(path, "/latest/api/token")) {
		long ttl;
		char *end = NULL, tok[TOKEN_B64 + 1];
		int hop;
		if (strcmp(q->method, "PUT")) {
			r.status = 405;
			r.extra = "Allow: PUT\r\n";
			goto out;
		}
		if (q->xff) {
			r.status = 403;
			goto out;
		}
		errno = 0;
		ttl = q->ttl ? strtol(q->ttl, &end, 10) : 0;
		if (!q->ttl || !*q->ttl || errno || *end || ttl < 1 || ttl > NB_IMDS_TOKEN_TTL_MAX) {
			r.status = 400;
			goto out;
		}
		token_make(m, c->l->key, nb_json_str_or(md, "instance_id"), (int)ttl, tok);
		hop = (int)nb_json_int(md, "http_put_response_hop_limit", 1);
		hop = hop < 1 ? 1 : hop > 64 ? 64 : hop;
		setsockopt(c->fd, IPPROTO_IP, IP_TTL, &hop, sizeof(hop));
		snprintf(extra, sizeof(extra), "X-Aws-Ec2-Metadata-Token-Ttl-Seconds: %ld\r\n", ttl);
		r = (struct reply){.status = 200, .extra = extra, .body = tok, .len = TOKEN_B64};
		respond(c, &r, false);
		json_decref(who);
		return;
	}
	if (q->token) {
		left = token_check(m, q->token, c->l->key, nb_json_str_or(md, "instance_id"));
		if (!left) {
			r.status = 401;
			goto out;
		}
		snprintf(extra, sizeof(extra), "X-Aws-Ec2-Metadata-Token-Ttl-Seconds: %lld\r\n",
			 (long long)((left + 999) / 1000));
		r.extra = extra;
	} else if (!strcmp(nb_json_str_or(md, "http_tokens"), "required")) {
		r.status = 401;
		goto out;
	}
	if (!strcmp(q->method, "PUT")) {
		r.status = 405;
		r.extra = "Allow: GET, HEAD\r\n";
		goto out;
	}
	for (char *s = strtok_r(path, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
		if (!strcmp(s, ".") || !strcmp(s, "..") || nseg == (int)NB_ARRAY_SIZE(seg)) {
			r.status = 400;
			goto out;
		}
		seg[nseg++] = s;
	}
	struct nb_buf b;
	nb_buf_init(&b, IMDS_OUT_MAX);
	nb_buf_puts(&b, "");
	if (nseg == 0) {
		for (size_t i = 0; i < NB_ARRAY_SIZE(versions); i++)
			nb_buf_printf(&b, "%s%s", i ? "\n" : "", versions[i]);
		r.status = 200;
	} else {
		for (size_t i = 0; i < NB_ARRAY_SIZE(versions); i++)
			if (!strcmp(seg[0], versions[i]))
				vi = (int)i;
	}
	if (vi < 0) {
		/* the root listing, or an unknown version */
	} else if (nseg == 1) {
		nb_buf_puts(&b, "dynamic\nmeta-data");
		if (nb_json_str(md, "user_data") && *nb_json_str(md, "user_data"))
			nb_buf_puts(&b, "\nuser-data");
		r.status = 200;
	} else if (!strcmp(seg[1], "user-data") && nseg == 2) {
		unsigned char *ud = NULL;
		size_t len = 0;
		if (user_data(md, &ud, &len) == 0) {
			nb_buf_append(&b, ud, len);
			r.status = 200;
			r.ctype = "application/octet-stream";
		}
		free(ud);
	} else if (!strcmp(seg[1], "meta-data") || !strcmp(seg[1], "dynamic")) {
		json_t *pk = NULL;
		json_t *tree = !strcmp(seg[1], "meta-data") ? tree_meta(md, nic, &pk)
							    : tree_dynamic(md);
		json_t *node = tree;
		for (int i = 2; i < nseg && node; i++)
			node = json_is_object(node) ? json_object_get(node, seg[i]) : NULL;
		if (json_is_object(node)) {
			listing(&b, node, pk, md);
			r.status = 200;
		} else if (json_is_string(node)) {
			nb_buf_puts(&b, json_string_value(node));
			r.status = 200;
		}
		json_decref(tree);
	}
	if (r.status == 200) {
		r.body = b.data;
		r.len = b.len;
	}
	respond(c, &r, head);
	nb_buf_free(&b);
	json_decref(who);
	return;
out:
	respond(c, &r, head);
	json_decref(who);
}

/* Parses the request head in head[0..hlen), in place: q points into it.
 * 0, or an HTTP status. */
static int parse(char *head, size_t hlen, struct req *q)
{
	char *p = head, *end = head + hlen, *eol, *sp1, *sp2;
	int nh = 0;

	memset(q, 0, sizeof(*q));
	for (char *s = p; s < end; s++)
		if (*s == '\0' || ((unsigned char)*s < 0x20 && *s != '\r' && *s != '\n' && *s != '\t'))
			return 400;
	eol = memchr(p, '\n', (size_t)(end - p));
	if (!eol)
		return 400;
	*eol = '\0';
	if (eol > p && eol[-1] == '\r')
		eol[-1] = '\0';
	sp1 = strchr(p, ' ');
	sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (!sp1 || !sp2 || sp1 == p || (size_t)(sp1 - p) >= sizeof(q->method) ||
	    (size_t)(sp2 - sp1 - 1) >= sizeof(q->path) || sp2 == sp1 + 1 || sp1[1] != '/')
		return 400;
	*sp1 = *sp2 = '\0';
	if (strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(p))
		return 400;
	if (!strcmp(sp2 + 1, "HTTP/1.0"))
		q->http10 = true;
	else if (strcmp(sp2 + 1, "HTTP/1.1"))
		return 400;
	nb_strlcpy(q->method, p, sizeof(q->method));
	nb_strlcpy(q->path, sp1 + 1, sizeof(q->path));
	for (p = eol + 1; p < end; p = eol + 1) {
		char *colon, *v;
		eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol)
			eol = end;
		*eol = '\0';
		if (eol > p && eol[-1] == '\r')
			eol[-1] = '\0';
		if (!*p)
			break; /* the blank line */
		if (++nh > NB_IMDS_MAX_HEADERS)
			return 431;
		colon = strchr(p, ':');
		if (!colon || colon == p || *p == ' ' || *p == '\t')
			return 400;
		*colon = '\0';
		for (char *s = p; *s; s++)
			if (*s == ' ' || *s == '\t')
				return 400;
		v = colon + 1;
		v += strspn(v, " \t");
		for (char *t = v + strlen(v); t > v && (t[-1] == ' ' || t[-1] == '\t');)
			*--t = '\0';
		if (!strcasecmp(p, "X-aws-ec2-metadata-token"))
			q->token = v;
		else if (!strcasecmp(p, "X-aws-ec2-metadata-token-ttl-seconds"))
			q->ttl = v;
		else if (!strcasecmp(p, "X-Forwarded-For"))
			q->xff = v;
		else if (!strcasecmp(p, "Connection"))
			q->connection = v;
		else if (!strcasecmp(p, "Transfer-Encoding"))
			q->has_te = true;
		else if (!strcasecmp(p, "Content-Length")) {
			uint64_t n;
			if (nb_parse_u64(v, &n) < 0 || n > NB_IMDS_MAX_BODY)
				q->bad_cl = true;
			else
				q->content_length = (size_t)n;
		}
	}
	return 0;
}

/* ---- the loop ---- */

static void conn_close(struct nb_imds *m, struct conn *c)
{
	epoll_ctl(m->ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		m->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->l->nconns--;
	m->nconns--;
	atomic_store(&m->conns_now, m->nconns);
	nb_buf_free(&c->out);
	free(c);
}

/* Writes what is pending. false when the connection was closed. */
static bool conn_flush(struct nb_imds *m, struct conn *c)
{
	while (c->outoff < c->out.len) {
		ssize_t n = send(c->fd, c->out.data + c->outoff, c->out.len - c->outoff,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (!c->want_out) {
				/* nothing more is read while an answer drains */
				struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
				epoll_ctl(m->ep, EPOLL_CTL_MOD, c->fd, &ev);
				c->want_out = true;
			}
			return true;
		}
		if (n <= 0) {
			conn_close(m, c);
			return false;
		}
		c->outoff += (size_t)n;
	}
	nb_buf_reset(&c->out);
	c->outoff = 0;
	if (c->want_out) {
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
		epoll_ctl(m->ep, EPOLL_CTL_MOD, c->fd, &ev);
		c->want_out = false;
	}
	if (c->close_after) {
		conn_close(m, c);
		return false;
	}
	return true;
}

static void fail(struct nb_imds *m, struct conn *c, int status)
{
	struct reply r = {.status = status};

	c->close_after = true;
	respond(c, &r, false);
	atomic_fetch_add(&m->requests, 1);
}

/* Answers every complete request in c->in, one at a time (a pipelined
 * request waits until the answer before it is written). false when the
 * connection was closed. */
static bool conn_process(struct nb_imds *m, struct conn *c)
{
	while (c->out.len == 0 && !c->close_after) {
		char *hend = memmem(c->in, c->inlen, "\r\n\r\n", 4);
		size_t hlen, cl;
		struct req q;
		char head[NB_IMDS_MAX_REQUEST];
		int st;

		if (!hend) {
			if (c->inlen >= NB_IMDS_MAX_REQUEST)
				fail(m, c, 431);
			break;
		}
		hlen = (size_t)(hend - c->in) + 4;
		if (hlen > NB_IMDS_MAX_REQUEST) {
			fail(m, c, 431);
			break;
		}
		/* parsed in a copy: c->in stays whole while a body is still coming */
		memcpy(head, c->in, hlen);
		st = parse(head, hlen, &q);
		if (st) {
			fail(m, c, st);
			break;
		}
		if (q.has_te) {
			fail(m, c, 411);
			break;
		}
		if (q.bad_cl) {
			fail(m, c, 413);
			break;
		}
		cl = q.content_length;
		if (c->inlen < hlen + cl)
			break; /* the body is still coming */
		if (q.connection && !strcasecmp(q.connection, "close"))
			c->close_after = true;
		else if (q.http10 && !(q.connection && !strcasecmp(q.connection, "keep-alive")))
			c->close_after = true;
		serve(m, c, &q);
		atomic_fetch_add(&m->requests, 1);
		memmove(c->in, c->in + hlen + cl, c->inlen - hlen - cl);
		c->inlen -= hlen + cl;
		c->deadline = nb_now_ms() + NB_IMDS_IDLE_MS;
		if (!conn_flush(m, c))
			return false;
	}
	if (c->out.len)
		return conn_flush(m, c);
	return true;
}

/* After a pass over c: a client that has shut its side is closed once
 * every answer it asked for is written (what is left in c->in is an
 * incomplete request that can never complete). */
static void conn_done(struct nb_imds *m, struct conn *c)
{
	if (c->rd_eof && c->out.len == 0)
		conn_close(m, c);
}

static void conn_event(struct nb_imds *m, struct conn *c, uint32_t events)
{
	if (events & EPOLLOUT) {
		if (!conn_flush(m, c))
			return;
		/* a pipelined request may be waiting */
		if (!c->out.len && conn_process(m, c))
			conn_done(m, c);
		return;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		for (;;) {
			ssize_t n;
			if (c->inlen == sizeof(c->in)) {
				if (c->out.len)
					return; /* full while an answer drains: wait */
				fail(m, c, 431);
				conn_flush(m, c);
				return;
			}
			n = recv(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen, MSG_DONTWAIT);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			if (n < 0) {
				conn_close(m, c);
				return;
			}
			if (n == 0) {
				/* a half-close (busybox nc, shutdown(SHUT_WR)) after the
				 * request: what came before it is still answered */
				c->rd_eof = true;
				break;
			}
			c->inlen += (size_t)n;
		}
		if (conn_process(m, c))
			conn_done(m, c);
	}
}

static void lst_accept(struct nb_imds *m, struct lst *l)
{
	pthread_mutex_lock(&m->mu);
	for (int k = 0; k < 64 && !l->dead && !l->paused; k++) {
		struct sockaddr_in sa;
		socklen_t slen = sizeof(sa);
		struct epoll_event ev;
		struct conn *c;
		int fd = accept4(l->fd, (struct sockaddr *)&sa, &slen, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				/* out of fds: leave the queue alone for a moment */
				epoll_ctl(m->ep, EPOLL_CTL_DEL, l->fd, NULL);
				l->paused = true;
				l->paused_until = nb_now_ms() + 100;
			}
			break;
		}
		if (sa.sin_family != AF_INET || l->nconns >= NB_IMDS_MAX_CONNS_PER_LISTENER ||
		    m->nconns >= NB_IMDS_MAX_CONNS || !(c = calloc(1, sizeof(*c)))) {
			close(fd);
			atomic_fetch_add(&m->refused, 1);
			continue;
		}
		c->kind = KIND_CONN;
		c->fd = fd;
		c->l = l;
		inet_ntop(AF_INET, &sa.sin_addr, c->src, sizeof(c->src));
		nb_buf_init(&c->out, IMDS_OUT_MAX + 4096);
		c->deadline = nb_now_ms() + NB_IMDS_IDLE_MS;
		ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = c};
		if (epoll_ctl(m->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = m->conns;
		if (m->conns)
			m->conns->prev = c;
		m->conns = c;
		l->nconns++;
		m->nconns++;
		atomic_store(&m->conns_now, m->nconns);
	}
	pthread_mutex_unlock(&m->mu);
}

/* Frees dead listeners (and their connections), resumes paused ones,
 * closes connections past their deadline. */
static void sweep(struct nb_imds *m)
{
	struct lst *dead = NULL, **pp;
	int64_t now = nb_now_ms();

	pthread_mutex_lock(&m->mu);
	for (pp = &m->lsts; *pp;) {
		struct lst *l = *pp;
		if (l->dead) {
			*pp = l->next;
			l->next = dead;
			dead = l;
			continue;
		}
		if (l->paused && now >= l->paused_until) {
			struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
			l->paused = false;
			epoll_ctl(m->ep, EPOLL_CTL_ADD, l->fd, &ev);
		}
		pp = &l->next;
	}
	pthread_mutex_unlock(&m->mu);
	for (struct conn *c = m->conns, *nx; c; c = nx) {
		nx = c->next;
		bool gone = false;
		for (struct lst *l = dead; l && !gone; l = l->next)
			gone = c->l == l;
		if (gone || now >= c->deadline)
			conn_close(m, c);
	}
	while (dead) {
		struct lst *nx = dead->next;
		free(dead);
		dead = nx;
	}
}

static void *imds_thread(void *p)
{
	struct nb_imds *m = p;
	struct epoll_event evs[64];
	int64_t last_sweep = 0;

	while (!atomic_load(&m->stopping)) {
		int n = epoll_wait(m->ep, evs, (int)NB_ARRAY_SIZE(evs), 100);
		for (int i = 0; i < n; i++) {
			int kind = *(int *)evs[i].data.ptr;
			if (kind == KIND_WAKE) {
				uint64_t v;
				if (read(m->wake.fd, &v, sizeof(v)) < 0) {
					/* nothing to read: fine */
				}
				last_sweep = 0;
			} else if (kind == KIND_LISTENER) {
				lst_accept(m, evs[i].data.ptr);
			} else {
				conn_event(m, evs[i].data.ptr, evs[i].events);
			}
		}
		if (nb_now_ms() - last_sweep >= 100) {
			sweep(m);
			last_sweep = nb_now_ms();
		}
	}
	return NULL;
}

static void wake(struct nb_imds *m)
{
	uint64_t one = 1;

	if (write(m->wake.fd, &one, sizeof(one)) < 0) {
		/* the counter is saturated: the thread wakes anyway */
	}
}

/* ---- the API ---- */

int nb_imds_start(struct nb_imds **out, nb_imds_lookup_fn lookup, void *arg)
{
	struct nb_imds *m = calloc(1, sizeof(*m));
	struct epoll_event ev;
	int r;

	*out = NULL;
	if (!m)
		return -ENOMEM;
	m->lookup = lookup;
	m->arg = arg;
	m->ep = -1;
	m->wake.kind = KIND_WAKE;
	m->wake.fd = -1;
	pthread_mutex_init(&m->mu, NULL);
	r = nb_random_bytes(m->key, sizeof(m->key));
	if (r < 0)
		goto fail;
	m->ep = epoll_create1(EPOLL_CLOEXEC);
	m->wake.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->ep < 0 || m->wake.fd < 0) {
		r = -errno;
		goto fail;
	}
	ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = &m->wake};
	if (epoll_ctl(m->ep, EPOLL_CTL_ADD, m->wake.fd, &ev) < 0) {
		r = -errno;
		goto fail;
	}
	r = -pthread_create(&m->thread, NULL, imds_thread, m);
	if (r < 0)
		goto fail;
	*out = m;
	return 0;
fail:
	if (m->ep >= 0)
		close(m->ep);
	if (m->wake.fd >= 0)
		close(m->wake.fd);
	pthread_mutex_destroy(&m->mu);
	free(m);
	return r;
}

/* Under m->mu: takes l out of service now (closes its socket); the thread
 * frees it. */
static void lst_kill(struct nb_imds *m, struct lst *l)
{
	if (!l->paused)
		epoll_ctl(m->ep, EPOLL_CTL_DEL, l->fd, NULL);
	close(l->fd);
	l->fd = -1;
	l->dead = true;
	m->nlst--;
}

int nb_imds_listen(struct nb_imds *m, const char *key, int fd)
{
	struct epoll_event ev;
	struct lst *l;
	int type = 0, acc = 0, r;
	socklen_t len = sizeof(type);

	if (!m || !key || !*key || strlen(key) >= sizeof(l->key) || fd < 0) {
		if (fd >= 0)
			close(fd);
		return -EINVAL;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM) {
		close(fd);
		return -ENOTSOCK;
	}
	len = sizeof(acc);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0 ||
	    (!acc && listen(fd, 128) < 0) || nb_fd_nonblock(fd) < 0 || nb_fd_cloexec(fd) < 0) {
		r = -errno;
		close(fd);
		return r ? r : -EINVAL;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		close(fd);
		return -ENOMEM;
	}
	l->kind = KIND_LISTENER;
	nb_strlcpy(l->key, key, sizeof(l->key));
	l->fd = fd;
	pthread_mutex_lock(&m->mu);
	for (struct lst *o = m->lsts; o; o = o->next)
		if (!o->dead && !strcmp(o->key, key))
			lst_kill(m, o);
	if (m->nlst >= NB_IMDS_MAX_LISTENERS) {
		pthread_mutex_unlock(&m->mu);
		close(fd);
		free(l);
		return -ENOSPC;
	}
	ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = l};
	if (epoll_ctl(m->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		r = -errno;
		pthread_mutex_unlock(&m->mu);
		close(fd);
		free(l);
		return r;
	}
	l->next = m->lsts;
	m->lsts = l;
	m->nlst++;
	pthread_mutex_unlock(&m->mu);
	wake(m);
	return 0;
}

void nb_imds_unlisten(struct nb_imds *m, const char *key)
{
	bool found = false;

	if (!m || !key)
		return;
	pthread_mutex_lock(&m->mu);
	for (struct lst *l = m->lsts; l; l = l->next)
		if (!l->dead && !strcmp(l->key, key)) {
			lst_kill(m, l);
			found = true;
		}
	pthread_mutex_unlock(&m->mu);
	if (found)
		wake(m);
}

void nb_imds_stop(struct nb_imds *m)
{
	if (!m)
		return;
	atomic_store(&m->stopping, 1);
	wake(m);
	pthread_join(m->thread, NULL);
	pthread_mutex_lock(&m->mu);
	for (struct lst *l = m->lsts; l; l = l->next)
		if (!l->dead)
			lst_kill(m, l);
	pthread_mutex_unlock(&m->mu);
	sweep(m);
	while (m->conns)
		conn_close(m, m->conns);
	close(m->ep);
	close(m->wake.fd);
	pthread_mutex_destroy(&m->mu);
	free(m);
}

void nb_imds_get_stats(struct nb_imds *m, struct nb_imds_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!m)
		return;
	out->requests = atomic_load(&m->requests);
	out->refused = atomic_load(&m->refused);
	out->conns = atomic_load(&m->conns_now);
	pthread_mutex_lock(&m->mu);
	out->listeners = m->nlst;
	pthread_mutex_unlock(&m->mu);
}
