/* s3load: a small S3 load generator for bench/s3.py. One thread, epoll,
 * CONNS keep-alive HTTP/1.1 connections, each with one request in flight;
 * every request is signed with SigV4 (path style, its own signature, signed
 * here with libcrypto, independently of nubo's own signer). PUTs go to
 * distinct keys PREFIX00000000, PREFIX00000001, ...; GETs cycle over KEYS
 * such keys and check the answer's length. Stops after COUNT requests or
 * DURATION seconds, whichever comes first, and prints one JSON line:
 * requests, errors, statuses, rate, latency percentiles (exact: every
 * request's latency is kept and sorted).
 *
 *   s3load -p PORT -b BUCKET -o put|get -c CONNS -n COUNT -d SECONDS
 *          -s SIZE -k KEYS -x PREFIX -a KEY_ID -S SECRET -r REGION
 *          [-u] (UNSIGNED-PAYLOAD; default: the body's sha256)
 *
 * Only for benchmarks on loopback: it talks to 127.0.0.1 only. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 256
#define MAX_COUNT 10000000u
#define RBUF (64u << 10)
#define HBUF 2048

enum { OP_PUT, OP_GET };

struct conn {
	int fd;
	char req[HBUF];
	size_t req_len, sent; /* header + body bytes sent */
	char rbuf[RBUF];
	size_t rlen;
	bool in_body;
	bool chunked;
	bool close_after;
	long long body_left; /* content-length left, -1: until close */
	long long body_got;
	long long chunk_left; /* chunked: bytes left of this chunk, -1: at a size line */
	int status;
	double t0;
	unsigned long long key;
};

static struct {
	int port, conns, op, size;
	unsigned long long count, keys, issued, done;
	double duration;
	const char *bucket, *prefix, *key_id, *secret, *region;
	bool unsigned_payload;
	char *body;
	char body_sha[65];
	double *lat;
	unsigned long long errors, bad_len, reconnects;
	unsigned long long status_2xx, status_3xx, status_4xx, status_5xx, io_errors;
	unsigned long long bytes_in;
	char first_error[300];
	time_t key_day;
	unsigned char signing_key[32];
	char date[9];
} g;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void hex(const unsigned char *in, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[in[i] >> 4];
		out[2 * i + 1] = d[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static void hmac(const unsigned char *key, size_t klen, const char *data, size_t len,
		 unsigned char out[32])
{
	unsigned int olen = 32;

	HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)data, len, out, &olen);
}

static void sha256_hex(const char *data, size_t len, char out[65])
{
	unsigned char md[32];

	SHA256((const unsigned char *)data, len, md);
	hex(md, 32, out);
}

/* The request's header for key number k, signed at the current second. */
static size_t build_request(char *out, size_t outsz, unsigned long long k)
{
	char amzdate[17], path[512], canon[1400], sts[400], chash[65], sig[65];
	unsigned char mac[32];
	time_t t = time(NULL);
	struct tm tm;
	const char *method = g.op == OP_PUT ? "PUT" : "GET";
	const char *payload = g.op == OP_PUT && !g.unsigned_payload ? g.body_sha
	                      : g.op == OP_PUT ? "UNSIGNED-PAYLOAD"
	                                       : "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	int n;

	gmtime_r(&t, &tm);
	strftime(amzdate, sizeof(amzdate), "%Y%m%dT%H%M%SZ", &tm);
	if (t / 86400 != g.key_day) {
		unsigned char k1[32], k2[32], k3[32];
		char secret[300];

		g.key_day = t / 86400;
		memcpy(g.date, amzdate, 8);
		g.date[8] = '\0';
		snprintf(secret, sizeof(secret), "AWS4%s", g.secret);
		hmac((unsigned char *)secret, strlen(secret), g.date, 8, k1);
		hmac(k1, 32, g.region, strlen(g.region), k2);
		hmac(k2, 32, "s3", 2, k3);
		hmac(k3, 32, "aws4_request", 12, g.signing_key);
	}
	snprintf(path, sizeof(path), "/%s/%s%08llu", g.bucket, g.prefix, k);
	n = snprintf(canon, sizeof(canon),
		     "%s\n%s\n\nhost:127.0.0.1:%d\nx-amz-content-sha256:%s\nx-amz-date:%s\n\n"
		     "host;x-amz-content-sha256;x-amz-date\n%s",
		     method, path, g.port, payload, amzdate, payload);
	sha256_hex(canon, (size_t)n, chash);
	n = snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s/%s/s3/aws4_request\n%s", amzdate,
		     g.date, g.region, chash);
	hmac(g.signing_key, 32, sts, (size_t)n, mac);
	hex(mac, 32, sig);
	n = snprintf(out, outsz,
		     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-amz-content-sha256: %s\r\n"
		     "x-amz-date: %s\r\nAuthorization: AWS4-HMAC-SHA256 Credential=%s/%s/%s/s3/"
		     "aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
		     "Signature=%s\r\n%s\r\n",
		     method, path, g.port, payload, amzdate, g.key_id, g.date, g.region, sig,
		     g.op == OP_PUT ? "Content-Type: application/octet-stream\r\n" : "");
	if (g.op == OP_PUT)
		n += snprintf(out + n - 2, outsz - (size_t)n + 2, "Content-Length: %d\r\n\r\n",
			      g.size) - 2;
	return (size_t)n;
}

static int conn_open(struct conn *c, int ep)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g.port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
	int one = 1;

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
		close(c->fd);
		return -errno;
	}
	if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		return -errno;
	return 0;
}

static bool start_request(struct conn *c, double t, double deadline)
{
	if (g.issued >= g.count || t >= deadline)
		return false;
	c->key = g.op == OP_PUT ? g.issued : g.issued % g.keys;
	g.issued++;
	c->req_len = build_request(c->req, sizeof(c->req), c->key);
	c->sent = 0;
	c->rlen = 0;
	c->in_body = false;
	c->t0 = t;
	return true;
}

static void note_error(const char *what)
{
	if (!g.first_error[0])
		snprintf(g.first_error, sizeof(g.first_error), "%s", what);
}

/* Sends what is left of the request; 0 when all is out (or EAGAIN), -1 on error. */
static int conn_send(struct conn *c)
{
	size_t total = c->req_len + (g.op == OP_PUT ? (size_t)g.size : 0);

	while (c->sent < total) {
		struct iovec iov[2];
		int n = 0;
		ssize_t w;

		if (c->sent < c->req_len) {
			iov[n].iov_base = c->req + c->sent;
			iov[n++].iov_len = c->req_len - c->sent;
		}
		if (g.op == OP_PUT) {
			size_t off = c->sent > c->req_len ? c->sent - c->req_len : 0;

			iov[n].iov_base = g.body + off;
			iov[n++].iov_len = (size_t)g.size - off;
		}
		w = writev(c->fd, iov, n);
		if (w < 0)
			return errno == EAGAIN ? 0 : -1;
		c->sent += (size_t)w;
	}
	return 0;
}

/* Parses the header in rbuf; returns bytes of it, 0 if incomplete, -1 if bad. */
static long parse_header(struct conn *c)
{
	char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
	char *line, *p;
	long hlen;

	if (!end)
		return c->rlen >= sizeof(c->rbuf) ? -1 : 0;
	hlen = end - c->rbuf + 4;
	*end = '\0';
	if (strncmp(c->rbuf, "HTTP/1.", 7) || c->rlen < 12)
		return -1;
	c->status = atoi(c->rbuf + 9);
	c->close_after = c->rbuf[7] == '0';
	c->chunked = false;
	c->body_left = -1;
	for (line = strstr(c->rbuf, "\r\n"); line; line = strstr(line, "\r\n")) {
		line += 2;
		p = strchr(line, ':');
		if (!p)
			continue;
		if (!strncasecmp(line, "content-length:", 15))
			c->body_left = strtoll(p + 1, NULL, 10);
		else if (!strncasecmp(line, "transfer-encoding:", 18) && strcasestr(p, "chunked"))
			c->chunked = true;
		else if (!strncasecmp(line, "connection:", 11) && strcasestr(p, "close"))
			c->close_after = true;
		else if (!strncasecmp(line, "connection:", 11) && strcasestr(p, "keep-alive"))
			c->close_after = false;
	}
	if (c->status == 204 || c->status == 304 || (c->status >= 100 && c->status < 200))
		c->body_left = 0;
	if (c->chunked)
		c->body_left = -1;
	c->chunk_left = -1;
	c->body_got = 0;
	return hlen;
}

/* Consumes body bytes in rbuf[0..rlen); true when the response is complete. */
static bool eat_body(struct conn *c, bool *bad)
{
	size_t off = 0;

	if (!c->chunked) {
		size_t take = c->body_left < 0 ? c->rlen
		              : (size_t)c->body_left < c->rlen ? (size_t)c->body_left : c->rlen;

		if (c->status >= 300 && take)
			note_error(c->rbuf);
		c->body_got += (long long)take;
		if (c->body_left >= 0)
			c->body_left -= (long long)take;
		c->rlen -= take;
		memmove(c->rbuf, c->rbuf + take, c->rlen);
		return c->body_left == 0;
	}
	for (;;) {
		if (c->chunk_left < 0) {
			size_t line = off;
			char *nl = memmem(c->rbuf + off, c->rlen - off, "\r\n", 2);
			long long sz;

			if (!nl)
				break;
			sz = strtoll(c->rbuf + off, NULL, 16);
			off = (size_t)(nl - c->rbuf) + 2;
			if (sz == 0) {
				/* the last chunk: (no trailers expected) then CRLF */
				char *e = memmem(c->rbuf + off, c->rlen - off, "\r\n", 2);

				if (!e) {
					off = line; /* wait for the rest */
					break;
				}
				off = (size_t)(e - c->rbuf) + 2;
				c->rlen -= off;
				memmove(c->rbuf, c->rbuf + off, c->rlen);
				return true;
			}
			if (sz < 0) {
				*bad = true;
				return false;
			}
			c->chunk_left = sz + 2; /* data and its CRLF */
		} else {
			size_t take = (size_t)c->chunk_left < c->rlen - off ? (size_t)c->chunk_left
			                                                     : c->rlen - off;
			long long data_left = c->chunk_left - 2; /* may be <= 0 inside the CRLF */

			if (data_left > 0)
				c->body_got += (long long)take < data_left ? (long long)take : data_left;
			c->chunk_left -= (long long)take;
			off += take;
			if (c->chunk_left == 0)
				c->chunk_left = -1;
			if (off == c->rlen)
				break;
		}
	}
	c->rlen -= off;
	memmove(c->rbuf, c->rbuf + off, c->rlen);
	return false;
}

static void finish(struct conn *c, double t)
{
	if (c->status >= 200 && c->status < 300) {
		g.status_2xx++;
		if (g.op == OP_GET && c->body_got != g.size) {
			g.bad_len++;
			g.errors++;
		}
	} else {
		if (c->status >= 500)
			g.status_5xx++;
		else if (c->status >= 400)
			g.status_4xx++;
		else
			g.status_3xx++;
		g.errors++;
	}
	if (g.done < MAX_COUNT)
		g.lat[g.done] = t - c->t0;
	g.done++;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(double p, unsigned long long n)
{
	unsigned long long i;

	if (!n)
		return 0;
	i = (unsigned long long)(p / 100.0 * (double)n + 0.999999);
	if (i < 1)
		i = 1;
	if (i > n)
		i = n;
	return g.lat[i - 1];
}

static void usage(void)
{
	fprintf(stderr, "usage: s3load -p PORT -b BUCKET -o put|get -c CONNS -n COUNT -d SECONDS "
			"-s SIZE -k KEYS -x PREFIX -a KEY_ID -S SECRET -r REGION [-u]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static struct conn conns[MAX_CONNS];
	struct epoll_event evs[MAX_CONNS];
	double t_start, deadline, t_end;
	int ep, opt, active = 0;

	g.conns = 16;
	g.count = 10000;
	g.duration = 10;
	g.size = 4096;
	g.keys = 1000;
	g.prefix = "obj-";
	g.region = "us-east-1";
	g.op = -1;
	while ((opt = getopt(argc, argv, "p:b:o:c:n:d:s:k:x:a:S:r:u")) != -1) {
		switch (opt) {
		case 'p': g.port = atoi(optarg); break;
		case 'b': g.bucket = optarg; break;
		case 'o': g.op = !strcmp(optarg, "put") ? OP_PUT : !strcmp(optarg, "get") ? OP_GET : -1; break;
		case 'c': g.conns = atoi(optarg); break;
		case 'n': g.count = strtoull(optarg, NULL, 10); break;
		case 'd': g.duration = atof(optarg); break;
		case 's': g.size = atoi(optarg); break;
		case 'k': g.keys = strtoull(optarg, NULL, 10); break;
		case 'x': g.prefix = optarg; break;
		case 'a': g.key_id = optarg; break;
		case 'S': g.secret = optarg; break;
		case 'r': g.region = optarg; break;
		case 'u': g.unsigned_payload = true; break;
		default: usage();
		}
	}
	if (g.port <= 0 || g.port > 65535 || !g.bucket || g.op < 0 || g.conns < 1 ||
	    g.conns > MAX_CONNS || !g.count || g.count > MAX_COUNT || g.duration <= 0 ||
	    g.size < 0 || g.size > (64 << 20) || !g.keys || !g.key_id || !g.secret ||
	    strlen(g.bucket) > 63 || strlen(g.prefix) > 200 || strlen(g.key_id) > 128 ||
	    strlen(g.secret) > 256 || strlen(g.region) > 64)
		usage();
	g.body = malloc((size_t)g.size + 1);
	g.lat = malloc(sizeof(double) * g.count);
	if (!g.body || !g.lat)
		return 1;
	for (int i = 0; i < g.size; i++)
		g.body[i] = (char)('a' + (i * 7 + i / 64) % 26);
	sha256_hex(g.body, (size_t)g.size, g.body_sha);
	g.key_day = -1;

	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		return 1;
	t_start = now();
	deadline = t_start + g.duration;
	for (int i = 0; i < g.conns; i++) {
		if (conn_open(&conns[i], ep) < 0) {
			perror("s3load: connect");
			return 1;
		}
		if (start_request(&conns[i], t_start, deadline))
			active++;
		else
			conns[i].req_len = 0;
	}
	while (active > 0) {
		int n = epoll_wait(ep, evs, MAX_CONNS, 1000);
		double t;

		if (n < 0 && errno != EINTR)
			return 1;
		t = now();
		if (t > deadline + 60) {
			fprintf(stderr, "s3load: %d requests still open a minute after the end\n", active);
			g.io_errors += (unsigned long long)active;
			break;
		}
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			bool failed = false, complete = false;

			if (!c->req_len)
				continue;
			if (conn_send(c) < 0)
				failed = true;
			while (!failed && !complete) {
				ssize_t r = read(c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen);

				if (r < 0 && errno == EAGAIN)
					break;
				if (r < 0) {
					failed = true;
					break;
				}
				if (r == 0) { /* closed: the end of a body without a length, or an error */
					if (c->in_body && !c->chunked && c->body_left < 0)
						complete = true;
					else
						failed = true;
					c->close_after = true;
					break;
				}
				g.bytes_in += (unsigned long long)r;
				c->rlen += (size_t)r;
				if (!c->in_body) {
					long h = parse_header(c);

					if (h < 0) {
						failed = true;
						break;
					}
					if (h == 0)
						continue;
					c->in_body = true;
					c->rlen -= (size_t)h;
					memmove(c->rbuf, c->rbuf + h, c->rlen);
				}
				complete = eat_body(c, &failed);
			}
			if (failed) {
				note_error("connection error or bad answer");
				g.io_errors++;
				g.errors++;
				if (g.done < MAX_COUNT)
					g.lat[g.done] = t - c->t0;
				g.done++;
			} else if (!complete) {
				continue;
			} else {
				finish(c, t);
			}
			if (failed || c->close_after) {
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				close(c->fd);
				g.reconnects++;
				if (conn_open(c, ep) < 0) {
					active--;
					c->req_len = 0;
					continue;
				}
			}
			if (start_request(c, t, deadline)) {
				if (!failed && !c->close_after && conn_send(c) < 0) {
					/* picked up again by EPOLLOUT/EPOLLIN as an error */
				}
			} else {
				active--;
				c->req_len = 0;
			}
		}
	}
	t_end = now();
	{
		unsigned long long n = g.done < MAX_COUNT ? g.done : MAX_COUNT;
		double secs = t_end - t_start;

		qsort(g.lat, n, sizeof(double), cmp_d);
		printf("{\"requests\":%llu,\"errors\":%llu,\"status_2xx\":%llu,\"status_3xx\":%llu,"
		       "\"status_4xx\":%llu,\"status_5xx\":%llu,\"io_errors\":%llu,\"bad_len\":%llu,"
		       "\"reconnects\":%llu,\"bytes_in\":%llu,\"duration_s\":%.4f,\"rps\":%.2f,"
		       "\"p50_us\":%.0f,\"p90_us\":%.0f,\"p99_us\":%.0f,\"max_us\":%.0f,"
		       "\"first_error\":\"",
		       g.done, g.errors, g.status_2xx, g.status_3xx, g.status_4xx, g.status_5xx,
		       g.io_errors, g.bad_len, g.reconnects, g.bytes_in, secs,
		       secs > 0 ? (double)g.done / secs : 0.0, pct(50, n) * 1e6, pct(90, n) * 1e6,
		       pct(99, n) * 1e6, n ? g.lat[n - 1] * 1e6 : 0.0);
		for (const char *p = g.first_error; *p; p++)
			if (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\')
				putchar(*p);
		printf("\"}\n");
	}
	return 0;
}
