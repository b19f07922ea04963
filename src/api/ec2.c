#include "api/ec2.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/query.h"
#include "api/sigv4.h"
#include "api/xml.h"
#include "common/err.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "core/keypair.h"
#include "core/state.h"
#include "core/vpc.h"

#define EC2_NS "http://ec2.amazonaws.com/doc/2016-11-15/"
#define EC2_MAX_IDS 1000
#define EC2_MAX_RESPONSE (64u << 20)

struct nb_ec2_rate {
	char account_id[32];
	struct nb_bucket describe, mutate;
	struct nb_ec2_rate *next;
};

/* One request being answered. */
struct ec2_ctx {
	struct nb_ec2 *e;
	struct nb_ctl *ctl;
	struct nb_query *q;
	json_t *who;
	const char *account_id;
	const char *action;
	bool dry_run; /* DryRun=true: check everything, change nothing */
	char request_id[40];
	char root[96];
	struct nb_buf out;
	struct nb_xml x;
	/* error, when status != 0 */
	unsigned status;
	char code[64];
	char message[512];
	json_t *net; /* the caller's instances' interfaces, loaded once (ec2_net.inc) */
	uint64_t epoch; /* the store's, read before a cacheable action runs; 0: none */
};

/* ec2_net.inc */
static void x_instance_net(struct ec2_ctx *t, const struct nb_store_instance *v);
static int net_instance_filter(struct ec2_ctx *t, const struct nb_store_instance *v,
			       const struct nb_filter *f);
static bool net_instance_filter_name(const char *name);
static int net_run_params(struct ec2_ctx *t, json_t *req);
static bool net_resource_type(struct ec2_ctx *t, const char *id, const char **type);
static int net_fail(struct ec2_ctx *t, int r, const char *code, const char *err,
		    const char *notfound);

static int ec2_fail(struct ec2_ctx *t, unsigned status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int ec2_fail(struct ec2_ctx *t, unsigned status, const char *code, const char *fmt, ...)
{
	va_list ap;

	t->status = status;
	nb_strlcpy(t->code, code, sizeof(t->code));
	va_start(ap, fmt);
	vsnprintf(t->message, sizeof(t->message), fmt, ap);
	va_end(ap);
	return -1;
}

/* A changing action calls this once its parameters and ids are checked,
 * before it changes anything: with DryRun it ends the call there, as EC2
 * does, with DryRunOperation. */
static bool dry_run_stop(struct ec2_ctx *t)
{
	if (!t->dry_run)
		return false;
	ec2_fail(t, 412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.");
	return true;
}

/* An instance type that exists, or EC2's error. */
static int type_check(struct ec2_ctx *t, const char *type)
{
	json_t *row = NULL;

	if (nb_store_type_get(t->ctl->st, type, &row) < 0)
		return ec2_fail(t, 400, "InvalidParameterValue", "Invalid value '%s' for InstanceType.",
				type);
	json_decref(row);
	return 0;
}

/* Maps a core error to EC2's code for what the action was about. */
static int ec2_core_fail(struct ec2_ctx *t, int r, const char *notfound_code, const char *msg)
{
	switch (-r) {
	case NB_E_NOT_FOUND:
		return ec2_fail(t, 400, notfound_code, "%s", msg);
	case NB_E_STATE:
		return ec2_fail(t, 400, "IncorrectInstanceState", "%s", msg);
	case NB_E_CAPACITY:
		return ec2_fail(t, 400, "InsufficientInstanceCapacity", "%s", msg);
	case NB_E_LIMIT: /* core names the quota: EC2 has its own code for vCPUs */
		return ec2_fail(t, 400,
				msg && strstr(msg, "more vCPU capacity") ? "VcpuLimitExceeded"
									 : "InstanceLimitExceeded",
				"%s", msg);
	case NB_E_IDEMPOTENT:
		return ec2_fail(t, 400, "IdempotentParameterMismatch", "%s", msg);
	case NB_E_MISSING:
		return ec2_fail(t, 400, "MissingParameter", "%s", msg);
	case NB_E_CONFLICT:
		return ec2_fail(t, 400, "InvalidParameterValue", "%s", msg);
	case NB_E_INVALID:
		return ec2_fail(t, 400, "InvalidParameterValue", "%s", msg);
	default:
		return ec2_fail(t, 500, "InternalError", "An internal error has occurred (%s).",
				msg && *msg ? msg : nb_err_code(r));
	}
}

/* ---- rate limits: a token bucket per account, as EC2 throttles ---- */

static bool bucket_take(struct nb_bucket *b, double rate, double burst, int64_t now)
{
	if (b->last_ms == 0) {
		b->tokens = burst;
		b->last_ms = now;
	}
	b->tokens += (double)(now - b->last_ms) * rate / 1000.0;
	if (b->tokens > burst)
		b->tokens = burst;
	b->last_ms = now;
	if (b->tokens < 1.0)
		return false;
	b->tokens -= 1.0;
	return true;
}

static bool rate_allow(struct nb_ec2 *e, const char *account_id, bool describe)
{
	struct nb_ec2_rate *r;
	bool ok;

	pthread_mutex_lock(&e->lock);
	for (r = e->rates; r && strcmp(r->account_id, account_id); r = r->next)
		;
	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r) {
			pthread_mutex_unlock(&e->lock);
			return true;
		}
		nb_strlcpy(r->account_id, account_id, sizeof(r->account_id));
		r->next = e->rates;
		e->rates = r;
	}
	ok = describe ? bucket_take(&r->describe, e->limits.describe_rate,
				    e->limits.describe_burst, nb_now_ms())
		      : bucket_take(&r->mutate, e->limits.mutate_rate, e->limits.mutate_burst,
				    nb_now_ms());
	pthread_mutex_unlock(&e->lock);
	return ok;
}

/* ---- the response cache ----
 * A Describe answer depends only on the store's rows and the request's
 * parameters. It is kept with the store's epoch at the time it was read and
 * served again while the epoch is unchanged: any committed change anywhere
 * bumps the epoch, so a cached answer is never stale. */

struct nb_ec2_shared {
	_Atomic int refs;
	size_t len;
	char data[];
};

static void shared_put(struct nb_ec2_shared *b)
{
	if (b && atomic_fetch_sub(&b->refs, 1) == 1)
		free(b);
}

static void shared_free_cb(void *cls)
{
	shared_put(cls);
}

/* The cache key: account, then every parameter in key order (none of the
 * X-Amz-* of presigned URLs). */
static void cache_key(struct ec2_ctx *t, char hex[65])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	const char *k, *v;

	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	EVP_DigestUpdate(ctx, t->account_id, strlen(t->account_id) + 1);
	for (size_t i = 0; nb_query_entry(t->q, i, &k, &v) == 0; i++) {
		if (!strncasecmp(k, "X-Amz-", 6))
			continue;
		EVP_DigestUpdate(ctx, k, strlen(k) + 1);
		EVP_DigestUpdate(ctx, v, strlen(v) + 1);
	}
	EVP_DigestFinal_ex(ctx, md, &n);
	EVP_MD_CTX_free(ctx);
	for (unsigned i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* A reference to a current cached answer, or NULL (under cache_lock). */
static struct nb_ec2_shared *cache_find(struct nb_ec2 *e, const char *key, uint64_t epoch)
{
	for (int i = 0; i < NB_EC2_CACHE_ENTRIES; i++) {
		struct nb_ec2_cached *c = &e->cache[i];
		if (c->body && c->epoch == epoch && !strcmp(c->key, key)) {
			atomic_fetch_add(&c->body->refs, 1);
			c->used = nb_now_ms();
			return c->body;
		}
	}
	return NULL;
}

/* A reference to a current cached answer; else NULL, and *slot is the
 * in-flight slot this request now holds (it builds the answer and gives the
 * slot back with cache_build_done), or -1 (it builds without one: every slot
 * taken, or the wait for another request's build ran out). While another
 * request builds the same answer, this one waits for it. */
static struct nb_ec2_shared *cache_get(struct nb_ec2 *e, const char *key, uint64_t epoch,
				       int *slot)
{
	struct nb_ec2_shared *b;
	struct timespec deadline;
	bool waited = false;

	*slot = -1;
	pthread_mutex_lock(&e->cache_lock);
	for (;;) {
		int mine = -1, free_slot = -1;
		b = cache_find(e, key, epoch);
		if (b)
			break;
		for (int i = 0; i < NB_EC2_INFLIGHT; i++) {
			struct nb_ec2_inflight *f = &e->inflight[i];
			if (!f->key[0]) {
				if (free_slot < 0)
					free_slot = i;
			} else if (f->epoch == epoch && !strcmp(f->key, key)) {
				mine = i;
			}
		}
		if (mine < 0) { /* nobody builds it: this request does */
			if (free_slot >= 0) {
				nb_strlcpy(e->inflight[free_slot].key, key, sizeof(e->inflight[0].key));
				e->inflight[free_slot].epoch = epoch;
				*slot = free_slot;
			}
			break;
		}
		if (!waited) {
			clock_gettime(CLOCK_MONOTONIC, &deadline);
			deadline.tv_sec += NB_EC2_INFLIGHT_WAIT_MS / 1000;
			deadline.tv_nsec += (long)(NB_EC2_INFLIGHT_WAIT_MS % 1000) * 1000000L;
			if (deadline.tv_nsec >= 1000000000L) {
				deadline.tv_sec++;
				deadline.tv_nsec -= 1000000000L;
			}
			waited = true;
		}
		if (pthread_cond_timedwait(&e->inflight_done, &e->cache_lock, &deadline) ==
		    ETIMEDOUT) {
			b = cache_find(e, key, epoch);
			break; /* waited long enough: build it here */
		}
	}
	pthread_mutex_unlock(&e->cache_lock);
	return b;
}

/* The build of slot (from cache_get) ended, its answer cached or not:
 * the requests waiting for it look again. */
static void cache_build_done(struct nb_ec2 *e, int slot)
{
	if (slot < 0)
		return;
	pthread_mutex_lock(&e->cache_lock);
	e->inflight[slot].key[0] = '\0';
	pthread_cond_broadcast(&e->inflight_done);
	pthread_mutex_unlock(&e->cache_lock);
}

/* Keeps the answer; returns it with a reference for the caller, who
 * replies from it (reply_shared: no second copy), or NULL when it is not
 * kept. */
static struct nb_ec2_shared *cache_put(struct nb_ec2 *e, const char *key, uint64_t epoch,
				       const char *data, size_t len)
{
	struct nb_ec2_cached *victim = NULL;
	struct nb_ec2_shared *b;

	if (len > NB_EC2_CACHE_BYTES / 4)
		return NULL;
	b = malloc(sizeof(*b) + len);
	if (!b)
		return NULL;
	atomic_init(&b->refs, 2);
	b->len = len;
	memcpy(b->data, data, len);
	pthread_mutex_lock(&e->cache_lock);
	for (int i = 0; i < NB_EC2_CACHE_ENTRIES; i++) {
		struct nb_ec2_cached *c = &e->cache[i];
		if (c->body && c->epoch != epoch) { /* stale: drop it */
			e->cache_bytes -= c->body->len;
			shared_put(c->body);
			c->body = NULL;
		}
		if (!victim || !c->body || (victim->body && c->used < victim->used))
			victim = c;
	}
	while (e->cache_bytes + len > NB_EC2_CACHE_BYTES) {
		struct nb_ec2_cached *old = NULL;
		for (int i = 0; i < NB_EC2_CACHE_ENTRIES; i++)
			if (e->cache[i].body && (!old || e->cache[i].used < old->used))
				old = &e->cache[i];
		if (!old)
			break;
		e->cache_bytes -= old->body->len;
		shared_put(old->body);
		old->body = NULL;
		victim = old;
	}
	if (victim->body) {
		e->cache_bytes -= victim->body->len;
		shared_put(victim->body);
	}
	nb_strlcpy(victim->key, key, sizeof(victim->key));
	victim->epoch = epoch;
	victim->used = nb_now_ms();
	victim->body = b;
	e->cache_bytes += len;
	pthread_mutex_unlock(&e->cache_lock);
	return b;
}

static enum MHD_Result reply_shared(struct MHD_Connection *c, struct nb_ec2_shared *b)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback_cls(
		b->len, b->data, shared_free_cb, b);
	enum MHD_Result ret;

	if (!resp) {
		shared_put(b);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "text/xml;charset=UTF-8");
	ret = MHD_queue_response(c, 200, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- instance snapshots (ec2.h) ---- */

struct nb_ec2_snap {
	_Atomic int refs;
	char account[64];
	uint64_t epoch;
	int64_t used;
	struct nb_store_instance_list l; /* every instance, terminated ones too */
	size_t *off;                     /* l.v[i]'s <item> is xml[off[i], off[i + 1]) */
	struct nb_buf xml;
};

static void snap_put(struct nb_ec2_snap *s)
{
	if (s && atomic_fetch_sub(&s->refs, 1) == 1) {
		nb_store_instance_list_free(&s->l);
		nb_buf_free(&s->xml);
		free(s->off);
		free(s);
	}
}

static void x_instance(struct ec2_ctx *t, const struct nb_store_instance *v);

/* The caller's instances at t->epoch, rendered: a kept snapshot, or one
 * read and rendered now (and kept, the oldest one giving way). NULL when
 * it cannot be made (t has the error) or when there is no epoch. */
static struct nb_ec2_snap *snap_get(struct ec2_ctx *t)
{
	struct nb_ec2 *e = t->e;
	struct nb_ec2_snap *s = NULL, **slot = NULL;
	struct nb_xml saved;

	if (!t->epoch || strlen(t->account_id) >= sizeof(s->account))
		return NULL;
	pthread_mutex_lock(&e->cache_lock);
	for (int i = 0; i < NB_EC2_SNAPS; i++) {
		struct nb_ec2_snap *c = e->snaps[i];
		if (c && c->epoch == t->epoch && !strcmp(c->account, t->account_id)) {
			atomic_fetch_add(&c->refs, 1);
			c->used = nb_now_ms();
			pthread_mutex_unlock(&e->cache_lock);
			return c;
		}
	}
	pthread_mutex_unlock(&e->cache_lock);
	s = calloc(1, sizeof(*s));
	if (!s) {
		ec2_fail(t, 500, "InternalError", "out of memory");
		return NULL;
	}
	s->refs = 1;
	nb_strlcpy(s->account, t->account_id, sizeof(s->account));
	s->epoch = t->epoch;
	nb_buf_init(&s->xml, EC2_MAX_RESPONSE);
	if (nb_store_instances_load(t->ctl->st, t->account_id, NULL, 1, &s->l) < 0 ||
	    !(s->off = malloc((s->l.n + 1) * sizeof(*s->off)))) {
		snap_put(s);
		ec2_fail(t, 500, "InternalError", "listing failed");
		return NULL;
	}
	/* each <item> on a writer of its own, at depth 0: the fragments are
	 * balanced and are spliced in where the answer's writer stands */
	saved = t->x;
	t->x = (struct nb_xml){.out = &s->xml};
	for (size_t i = 0; i < s->l.n; i++) {
		s->off[i] = s->xml.len;
		x_instance(t, &s->l.v[i]);
	}
	s->off[s->l.n] = s->xml.len;
	int err = t->x.err;
	t->x = saved;
	if (err) {
		snap_put(s);
		ec2_fail(t, 500, "InternalError", "the response is too large");
		return NULL;
	}
	pthread_mutex_lock(&e->cache_lock);
	for (int i = 0; i < NB_EC2_SNAPS; i++) {
		struct nb_ec2_snap *c = e->snaps[i];
		/* this account's older snapshot goes first, then a free slot,
		 * then the least recently used */
		if (c && !strcmp(c->account, s->account)) {
			slot = &e->snaps[i];
			break;
		}
		if (!slot || (*slot && (!c || c->used < (*slot)->used)))
			slot = &e->snaps[i];
	}
	snap_put(*slot);
	atomic_fetch_add(&s->refs, 1);
	s->used = nb_now_ms();
	*slot = s;
	pthread_mutex_unlock(&e->cache_lock);
	return s;
}

int nb_ec2_init(struct nb_ec2 *e, struct nb_ctl *ctl, struct nb_secrets *secrets)
{
	pthread_condattr_t ca;

	memset(e, 0, sizeof(*e));
	pthread_mutex_init(&e->cache_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->inflight_done, &ca);
	pthread_condattr_destroy(&ca);
	e->ctl = ctl;
	e->secrets = secrets;
	e->limits = (struct nb_ec2_limits){100, 200, 20, 50};
	pthread_mutex_init(&e->lock, NULL);
	return 0;
}

void nb_ec2_fini(struct nb_ec2 *e)
{
	for (int i = 0; i < NB_EC2_CACHE_ENTRIES; i++)
		shared_put(e->cache[i].body);
	for (int i = 0; i < NB_EC2_SNAPS; i++)
		snap_put(e->snaps[i]);
	pthread_mutex_destroy(&e->cache_lock);
	pthread_cond_destroy(&e->inflight_done);
	while (e->rates) {
		struct nb_ec2_rate *n = e->rates->next;
		free(e->rates);
		e->rates = n;
	}
	pthread_mutex_destroy(&e->lock);
}

/* ---- authentication ---- */

struct kv_collect {
	struct nb_kv kv[NB_SIGV4_MAX_HEADERS];
	size_t n;
	bool overflow;
};

static enum MHD_Result collect_kv(void *cls, enum MHD_ValueKind kind, const char *key,
				  const char *value)
{
	struct kv_collect *c = cls;

	(void)kind;
	if (c->n == NB_SIGV4_MAX_HEADERS) {
		c->overflow = true;
		return MHD_NO;
	}
	c->kv[c->n].key = key;
	c->kv[c->n].value = value ? value : "";
	c->n++;
	return MHD_YES;
}

static void pct_encode(struct nb_buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~') {
			nb_buf_append(b, p, 1);
		} else {
			char esc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			nb_buf_append(b, esc, 3);
		}
	}
}

struct query_collect {
	struct nb_buf *b;
};

static enum MHD_Result collect_query(void *cls, enum MHD_ValueKind kind, const char *key,
				     const char *value)
{
	struct query_collect *c = cls;

	(void)kind;
	if (c->b->len)
		nb_buf_append(c->b, "&", 1);
	pct_encode(c->b, key);
	nb_buf_append(c->b, "=", 1);
	pct_encode(c->b, value ? value : "");
	return MHD_YES;
}

int nb_ec2_authenticate(struct nb_ec2 *e, struct MHD_Connection *c, const char *method,
			const char *url, const char *body, size_t body_len, const char *service,
			json_t **who, char *err, size_t errsz)
{
	struct kv_collect hdrs = {0};
	struct nb_buf query;
	struct query_collect qc = {&query};
	struct nb_sigv4_req req = {0};
	struct nb_sigv4_auth auth;
	char body_sha[65], *secret = NULL;
	json_t *key = NULL;
	int r;

	nb_buf_init(&query, 256u << 10);
	MHD_get_connection_values(c, MHD_HEADER_KIND, collect_kv, &hdrs);
	MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_query, &qc);
	if (hdrs.overflow) {
		snprintf(err, errsz, "too many headers");
		r = -NB_E_AUTH_INCOMPLETE;
		goto out;
	}
	nb_sha256_hex(body ? body : "", body_len, body_sha);
	req.method = method;
	req.path = url;
	req.query = query.len ? query.data : NULL;
	req.headers = hdrs.kv;
	req.nheaders = hdrs.n;
	req.body_sha256 = body_sha;
	req.now = nb_wall_ms() / 1000;
	r = nb_sigv4_parse(&req, &auth, err, errsz);
	if (r < 0)
		goto out;
	r = nb_store_key_lookup(e->ctl->st, auth.access_key, &key);
	if (r == -NB_E_NOT_FOUND || (r == 0 && strcmp(nb_json_str_or(key, "status"), "Active"))) {
		snprintf(err, errsz, "The security token included in the request is invalid.");
		r = -NB_E_BAD_KEY;
		goto out;
	}
	if (r < 0) {
		snprintf(err, errsz, "key lookup failed");
		goto out;
	}
	r = nb_secrets_open(e->secrets, nb_json_str_or(key, "secret_enc"), &secret);
	if (r < 0) {
		snprintf(err, errsz, "the key's secret cannot be read");
		r = -NB_E_INTERNAL;
		goto out;
	}
	r = nb_sigv4_verify(&req, &auth, secret, e->ctl->region, service, err, errsz);
	OPENSSL_cleanse(secret, strlen(secret));
	free(secret);
	if (r < 0)
		goto out;
	*who = json_pack("{s:s, s:s, s:s, s:s, s:s}", "account_id",
			 nb_json_str_or(key, "account_id"), "account", nb_json_str_or(key, "account"),
			 "user", nb_json_str_or(key, "user"), "role", nb_json_str_or(key, "role"),
			 "key", auth.access_key);
out:
	json_decref(key);
	nb_buf_free(&query);
	return r;
}

/* ---- parameters ---- */

static const char *param(struct ec2_ctx *t, const char *key)
{
	return nb_query_get(t->q, key);
}

static const char *need(struct ec2_ctx *t, const char *key)
{
	const char *v = param(t, key);

	if (!v || !*v)
		ec2_fail(t, 400, "MissingParameter", "The request must contain the parameter %s",
			 key);
	return v && *v ? v : NULL;
}

static int param_int(struct ec2_ctx *t, const char *key, int64_t def, int64_t lo, int64_t hi,
		     int64_t *out)
{
	const char *v = param(t, key);
	uint64_t u;

	if (!v) {
		*out = def;
		return 0;
	}
	if (nb_parse_u64(v, &u) < 0 || (int64_t)u < lo || (int64_t)u > hi)
		return ec2_fail(t, 400, "InvalidParameterValue",
				"Value (%s) for parameter %s is invalid. It must be an integer "
				"between %lld and %lld.",
				v, key, (long long)lo, (long long)hi);
	*out = (int64_t)u;
	return 0;
}

static bool param_bool(struct ec2_ctx *t, const char *key)
{
	const char *v = param(t, key);

	return v && !strcasecmp(v, "true");
}

/* A list parameter, with EC2's error for too many members. */
static int param_list(struct ec2_ctx *t, const char *prefix, const char **out, size_t max)
{
	int n = nb_query_list(t->q, prefix, out, max);

	if (n == -E2BIG)
		return ec2_fail(t, 400, "InvalidParameterValue",
				"The parameter %s has more than %zu members", prefix, max);
	if (n < 0)
		return ec2_fail(t, 400, "InvalidParameterValue",
				"The parameter %s is not a valid list", prefix);
	return n;
}

static bool id_ok(const char *prefix, const char *id)
{
	return nb_id_valid(prefix, id);
}

/* ---- XML pieces ---- */

static void x_begin(struct ec2_ctx *t)
{
	snprintf(t->root, sizeof(t->root), "%sResponse", t->action);
	nb_xml_begin(&t->x, &t->out, t->root, EC2_NS);
	nb_xml_text(&t->x, "requestId", t->request_id);
}

/* Whether the caller owns row (tags are the owner's: a shared or public
 * image shows its tags to its owner only, as EC2's do). */
static bool owns(struct ec2_ctx *t, json_t *row)
{
	const char *owner = nb_json_str(row, "account_id");

	return !owner || !strcmp(owner, t->account_id);
}

static void x_tags(struct ec2_ctx *t, json_t *row)
{
	json_t *tags = NULL, *tag;
	size_t i;

	nb_xml_open(&t->x, "tagSet");
	if (owns(t, row) && nb_store_tags_of(t->ctl->st, nb_json_str_or(row, "id"), &tags) == 0) {
		json_array_foreach(tags, i, tag)
		{
			nb_xml_open(&t->x, "item");
			nb_xml_text(&t->x, "key", nb_json_str_or(tag, "key"));
			nb_xml_text(&t->x, "value", nb_json_str_or(tag, "value"));
			nb_xml_close(&t->x);
		}
	}
	json_decref(tags);
	nb_xml_close(&t->x);
}

static int state_code(const char *state)
{
	static const struct {
		const char *name;
		int code;
	} codes[] = {{"pending", 0},   {"running", 16},	 {"shutting-down", 32}, {"terminated", 48},
		     {"stopping", 64}, {"stopped", 80},	 {"paused", 96}};

	for (size_t i = 0; i < NB_ARRAY_SIZE(codes); i++)
		if (!strcmp(codes[i].name, state))
			return codes[i].code;
	return 0;
}

static void x_state(struct ec2_ctx *t, const char *element, const char *state)
{
	nb_xml_open(&t->x, element);
	nb_xml_int(&t->x, "code", state_code(state));
	nb_xml_text(&t->x, "name", state);
	nb_xml_close(&t->x);
}

static void iso_ms(int64_t ms, char *out, size_t outsz)
{
	nb_iso8601(ms, out, outsz);
}

static const char *row_time(json_t *row, const char *key, char *buf, size_t bufsz)
{
	json_t *v = json_object_get(row, key);

	if (json_is_integer(v)) {
		iso_ms(json_integer_value(v), buf, bufsz);
		return buf;
	}
	return json_is_string(v) ? json_string_value(v) : "";
}

static void x_instance(struct ec2_ctx *t, const struct nb_store_instance *v)
{
	char buf[64];

	nb_xml_open(&t->x, "item");
	nb_xml_text(&t->x, "instanceId", v->id);
	nb_xml_text(&t->x, "imageId", v->image_id);
	x_state(t, "instanceState", v->state);
	/* privateDnsName, dnsName, ipAddress, subnet, VPC, groups, interfaces */
	x_instance_net(t, v);
	nb_xml_text(&t->x, "reason", v->state_reason);
	if (v->key_name)
		nb_xml_text(&t->x, "keyName", v->key_name);
	nb_xml_int(&t->x, "amiLaunchIndex", v->launch_index);
	nb_xml_text(&t->x, "instanceType", v->type);
	iso_ms(v->created_at, buf, sizeof(buf));
	nb_xml_text(&t->x, "launchTime", buf);
	nb_xml_open(&t->x, "placement");
	nb_xml_text(&t->x, "availabilityZone", *v->az ? v->az : t->ctl->az);
	nb_xml_text(&t->x, "groupName", "");
	nb_xml_text(&t->x, "tenancy", "default");
	nb_xml_close(&t->x);
	nb_xml_open(&t->x, "monitoring");
	nb_xml_text(&t->x, "state", "disabled");
	nb_xml_close(&t->x);
	if (*v->ip && strcmp(v->state, "terminated"))
		nb_xml_text(&t->x, "privateIpAddress", v->ip);
	nb_xml_text(&t->x, "architecture", "x86_64");
	nb_xml_text(&t->x, "rootDeviceType", "instance-store");
	nb_xml_text(&t->x, "rootDeviceName", "/dev/vda");
	nb_xml_open(&t->x, "blockDeviceMapping");
	nb_xml_close(&t->x);
	nb_xml_text(&t->x, "virtualizationType", "hvm");
	nb_xml_text(&t->x, "hypervisor", "xen");
	if (*v->state_reason) {
		nb_xml_open(&t->x, "stateReason");
		nb_xml_text(&t->x, "code", !strcmp(v->state, "terminated")
						   ? "Server.InternalError"
						   : "Client.UserInitiatedShutdown");
		nb_xml_text(&t->x, "message", v->state_reason);
		nb_xml_close(&t->x);
	}
	/* an instance listed is the caller's: its tags are shown */
	nb_xml_open(&t->x, "tagSet");
	for (size_t i = 0; i < v->ntags; i++) {
		nb_xml_open(&t->x, "item");
		nb_xml_text(&t->x, "key", v->tags[i].key);
		nb_xml_text(&t->x, "value", v->tags[i].value);
		nb_xml_close(&t->x);
	}
	nb_xml_close(&t->x);
	nb_xml_open(&t->x, "cpuOptions");
	nb_xml_int(&t->x, "coreCount", v->vcpus);
	nb_xml_int(&t->x, "threadsPerCore", 1);
	nb_xml_close(&t->x);
	nb_xml_close(&t->x);
}

/* ---- filters ---- */

/* Tags of a resource as a JSON object {key: value}; none of another
 * account's resource. */
static json_t *tags_obj(struct ec2_ctx *t, json_t *row, const char *resource_id)
{
	json_t *tags = NULL, *tag, *o = json_object();
	size_t i;

	if (owns(t, row) && nb_store_tags_of(t->ctl->st, resource_id, &tags) == 0)
		json_array_foreach(tags, i, tag) json_object_set_new(
			o, nb_json_str_or(tag, "key"), json_string(nb_json_str_or(tag, "value")));
	json_decref(tags);
	return o;
}

static bool any_value_matches(const struct nb_filter *f, const char *v)
{
	for (size_t i = 0; i < f->nvalues; i++)
		if (nb_query_wildcard(f->values[i], v))
			return true;
	return false;
}

/* Filter names to the store's columns, per resource. */
struct field_map {
	const char *filter;
	const char *column;
};

static const char *map_field(json_t *row, const char *name, const struct field_map *map)
{
	for (; map->filter; map++)
		if (!strcmp(name, map->filter))
			return nb_json_str_or(row, map->column);
	return NULL;
}

/* An instance's value for a filter name, or NULL when the name is not one
 * of an instance's filters. */
static const char *instance_value(const struct nb_store_instance *v, const char *name, char *buf,
				  size_t bufsz)
{
	if (!strcmp(name, "instance-id"))
		return v->id;
	if (!strcmp(name, "instance-state-name"))
		return v->state;
	if (!strcmp(name, "instance-type"))
		return v->type;
	if (!strcmp(name, "image-id"))
		return v->image_id;
	if (!strcmp(name, "reservation-id"))
		return v->reservation_id;
	if (!strcmp(name, "private-ip-address"))
		return v->ip;
	if (!strcmp(name, "key-name"))
		return v->key_name ? v->key_name : "";
	if (!strcmp(name, "availability-zone") || !strcmp(name, "placement.availability-zone"))
		return v->az;
	if (!strcmp(name, "instance-state-code")) {
		snprintf(buf, bufsz, "%d", state_code(v->state));
		return buf;
	}
	if (!strcmp(name, "architecture"))
		return "x86_64";
	return NULL;
}

/* The field_fn of instances (filters_check only: every name is known or
 * not whatever the row). */
static const char *instance_field(json_t *row, const char *name, char *buf, size_t bufsz)
{
	static const struct nb_store_instance none = {
		.id = "", .reservation_id = "", .type = "", .image_id = "", .state = "",
		.ip = "", .state_reason = "", .az = ""};

	(void)row;
	if (net_instance_filter_name(name))
		return "";
	return instance_value(&none, name, buf, bufsz);
}

static const struct field_map image_fields[] = {
	{"image-id", "id"},	  {"name", "name"},	    {"state", "state"},
	{"architecture", "arch"}, {"owner-id", "account_id"}, {"description", "description"},
	{NULL, NULL},
};

static const char *image_field(json_t *row, const char *name, char *buf, size_t bufsz)
{
	(void)buf;
	(void)bufsz;
	if (!strcmp(name, "is-public"))
		return nb_json_int(row, "public", 0) ? "true" : "false";
	if (!strcmp(name, "image-type"))
		return "machine";
	return map_field(row, name, image_fields);
}

static const struct field_map tag_fields[] = {
	{"resource-id", "resource_id"}, {"resource-type", "resource_type"},
	{"key", "key"},		        {"value", "value"},
	{NULL, NULL},
};

static const char *tag_field(json_t *row, const char *name, char *buf, size_t bufsz)
{
	(void)buf;
	(void)bufsz;
	return map_field(row, name, tag_fields);
}

static const struct field_map keypair_fields[] = {
	{"key-name", "name"}, {"fingerprint", "fingerprint"}, {"key-pair-id", "id"}, {NULL, NULL},
};

static const char *keypair_field(json_t *row, const char *name, char *buf, size_t bufsz)
{
	(void)buf;
	(void)bufsz;
	return map_field(row, name, keypair_fields);
}

/* Generic filter check: field(name) gives a resource's value for a filter
 * name, or NULL when the name is not a filter of this resource (an error);
 * tag:KEY, tag-key and tag-value are handled here. */
typedef const char *(*field_fn)(json_t *row, const char *name, char *buf, size_t bufsz);

static int filters_parse(struct ec2_ctx *t, struct nb_filter *f, size_t max)
{
	char err[256] = "";
	int n = nb_query_filters(t->q, f, max, err, sizeof(err));

	if (n < 0)
		return ec2_fail(t, 400, "InvalidParameterValue", "%s",
				*err ? err : "The filter is invalid");
	return n;
}

/* Every filter name must be one the resource knows, even when nothing is
 * there to match. */
static int filters_check(struct ec2_ctx *t, const struct nb_filter *f, int nf, field_fn field)
{
	json_t *empty = json_object();
	char buf[64];
	int r = 0;

	for (int i = 0; i < nf && r == 0; i++)
		if (strncmp(f[i].name, "tag:", 4) && strcmp(f[i].name, "tag-key") &&
		    strcmp(f[i].name, "tag-value") && !field(empty, f[i].name, buf, sizeof(buf)))
			r = ec2_fail(t, 400, "InvalidParameterValue", "The filter '%s' is invalid",
				     f[i].name);
	json_decref(empty);
	return r;
}

/* 1 match, 0 no match, -1 unknown filter (t has the error). */
static int filters_match(struct ec2_ctx *t, const struct nb_filter *f, int nf, json_t *row,
			 const char *id, field_fn field)
{
	json_t *tags = NULL;
	int ok = 1;

	for (int i = 0; i < nf && ok == 1; i++) {
		char buf[64];
		const char *v;
		if (!strncmp(f[i].name, "tag:", 4) || !strcmp(f[i].name, "tag-key") ||
		    !strcmp(f[i].name, "tag-value")) {
			const char *k;
			json_t *tv;
			bool hit = false;
			if (!tags)
				tags = tags_obj(t, row, id);
			json_object_foreach(tags, k, tv)
			{
				const char *val = json_string_value(tv);
				if (!strncmp(f[i].name, "tag:", 4))
					hit |= !strcmp(k, f[i].name + 4) && any_value_matches(&f[i], val);
				else if (!strcmp(f[i].name, "tag-key"))
					hit |= any_value_matches(&f[i], k);
				else
					hit |= any_value_matches(&f[i], val);
			}
			ok = hit;
			continue;
		}
		v = field(row, f[i].name, buf, sizeof(buf));
		if (!v) {
			ec2_fail(t, 400, "InvalidParameterValue", "The filter '%s' is invalid",
				 f[i].name);
			ok = -1;
			break;
		}
		ok = any_value_matches(&f[i], v);
	}
	json_decref(tags);
	return ok;
}

static bool is_tag_filter(const char *name)
{
	return !strncmp(name, "tag:", 4) || !strcmp(name, "tag-key") || !strcmp(name, "tag-value");
}

/* 1 match, 0 no match, -1 unknown filter (t has the error). */
static int filters_match_instance(struct ec2_ctx *t, const struct nb_filter *f, int nf,
				  const struct nb_store_instance *v)
{
	for (int i = 0; i < nf; i++) {
		char buf[64];
		const char *val;
		bool hit = false;
		if (is_tag_filter(f[i].name)) {
			for (size_t k = 0; k < v->ntags && !hit; k++) {
				const struct nb_store_tag *tg = &v->tags[k];
				if (!strncmp(f[i].name, "tag:", 4))
					hit = !strcmp(tg->key, f[i].name + 4) &&
					      any_value_matches(&f[i], tg->value);
				else if (!strcmp(f[i].name, "tag-key"))
					hit = any_value_matches(&f[i], tg->key);
				else
					hit = any_value_matches(&f[i], tg->value);
			}
		} else if ((val = instance_value(v, f[i].name, buf, sizeof(buf)))) {
			hit = any_value_matches(&f[i], val);
		} else if (net_instance_filter_name(f[i].name)) {
			hit = net_instance_filter(t, v, &f[i]) == 1;
		} else {
			ec2_fail(t, 400, "InvalidParameterValue", "The filter '%s' is invalid",
				 f[i].name);
			return -1;
		}
		if (!hit)
			return 0;
	}
	return 1;
}

/* ---- instances ---- */

/* The caller's instances a Describe lists into *l: the ids given (each
 * well-formed and the caller's, in the order given) or, with none, every
 * one not purged (terminated ones with include_terminated). */
static int load_listed(struct ec2_ctx *t, const char **ids, int nids, int include_terminated,
		       struct nb_store_instance_list *l)
{
	struct nb_buf missing;
	int nmissing = 0, r = 0;

	if (nids == 0) {
		if (nb_store_instances_load(t->ctl->st, t->account_id, NULL, include_terminated, l) <
		    0)
			return ec2_fail(t, 500, "InternalError", "listing failed");
		return 0;
	}
	for (int i = 0; i < nids; i++)
		if (!id_ok("i", ids[i]))
			return ec2_fail(t, 400, "InvalidInstanceID.Malformed", "Invalid id: \"%s\"",
					ids[i]);
	nb_buf_init(&missing, 64u << 10);
	for (int i = 0; i < nids && r == 0; i++) {
		size_t before = l->n;
		if (nb_store_instances_load(t->ctl->st, t->account_id, ids[i], 1, l) < 0)
			r = ec2_fail(t, 500, "InternalError", "listing failed");
		else if (l->n == before)
			nb_buf_printf(&missing, "%s%s", nmissing++ ? ", " : "", ids[i]);
	}
	if (r == 0 && nmissing)
		r = ec2_fail(t, 400, "InvalidInstanceID.NotFound",
			     nmissing == 1 ? "The instance ID '%s' does not exist"
					   : "The instance IDs '%s' do not exist",
			     missing.data);
	nb_buf_free(&missing);
	return r;
}

/* Checks every id is well-formed and the caller's; fills rows (same order). */
static int load_instances(struct ec2_ctx *t, const char **ids, int n, json_t *rows)
{
	struct nb_buf missing;
	int nmissing = 0;

	for (int i = 0; i < n; i++)
		if (!id_ok("i", ids[i]))
			return ec2_fail(t, 400, "InvalidInstanceID.Malformed", "Invalid id: \"%s\"",
					ids[i]);
	nb_buf_init(&missing, 64u << 10);
	for (int i = 0; i < n; i++) {
		json_t *row = NULL;
		if (nb_store_instance_get(t->ctl->st, t->account_id, ids[i], &row) < 0) {
			nb_buf_printf(&missing, "%s%s", nmissing++ ? ", " : "", ids[i]);
			continue;
		}
		json_object_del(row, "user_data");
		json_array_append_new(rows, row);
	}
	if (nmissing)
		ec2_fail(t, 400, "InvalidInstanceID.NotFound",
			 nmissing == 1 ? "The instance ID '%s' does not exist"
				       : "The instance IDs '%s' do not exist",
			 missing.data);
	nb_buf_free(&missing);
	return nmissing ? -1 : 0;
}

static void x_reservation_open(struct ec2_ctx *t, const char *rid)
{
	nb_xml_open(&t->x, "item");
	nb_xml_text(&t->x, "reservationId", rid);
	nb_xml_text(&t->x, "ownerId", t->account_id);
	nb_xml_open(&t->x, "groupSet");
	nb_xml_close(&t->x);
	nb_xml_open(&t->x, "instancesSet");
}

static int act_describe_instances(struct ec2_ctx *t)
{
	const char *ids[EC2_MAX_IDS];
	struct nb_filter f[NB_QUERY_MAX_FILTERS];
	int nids = param_list(t, "InstanceId", ids, EC2_MAX_IDS), nf;
	int64_t max = 0, start = 0;
	const char *token = param(t, "NextToken");
	struct nb_store_instance_list l = {0};
	struct nb_ec2_snap *snap = NULL;
	int64_t shown = 0, seen = 0;
	const char *rid = NULL;
	bool more = false;

	if (nids < 0 || (nf = filters_parse(t, f, NB_QUERY_MAX_FILTERS)) < 0 ||
	    filters_check(t, f, nf, instance_field) < 0 ||
	    param_int(t, "MaxResults", 0, 5, 1000, &max) < 0)
		goto out;
	if (nids > 0 && param(t, "MaxResults")) {
		ec2_fail(t, 400, "InvalidParameterCombination",
			 "The parameter instancesSet cannot be used with the parameter maxResults");
		goto out;
	}
	if (token) {
		uint64_t u;
		if (strncmp(token, "nb1.", 4) || nb_parse_u64(token + 4, &u) < 0) {
			ec2_fail(t, 400, "InvalidParameterValue", "Invalid NextToken: %s", token);
			goto out;
		}
		start = (int64_t)u;
	}
	/* every instance: from the snapshot at this epoch (rows and rendered
	 * items); by id: loaded and rendered here */
	if (nids == 0 && t->epoch) {
		snap = snap_get(t);
		if (!snap)
			goto out;
	} else if (load_listed(t, ids, nids, 1, &l) < 0) {
		goto out;
	}
	const struct nb_store_instance *rows = snap ? snap->l.v : l.v;
	size_t nrows = snap ? snap->l.n : l.n;
	if (snap && nb_buf_reserve(&t->out, snap->xml.len + 4096) < 0) {
		ec2_fail(t, 500, "InternalError", "the response is too large");
		goto out;
	}
	x_begin(t);
	nb_xml_open(&t->x, "reservationSet");
	for (size_t i = 0; i < nrows; i++) {
		const struct nb_store_instance *v = &rows[i];
		int m = filters_match_instance(t, f, nf, v);
		if (m < 0)
			goto out;
		if (!m)
			continue;
		if (seen++ < start)
			continue;
		if (max && shown == max) {
			more = true;
			break;
		}
		if (!rid || strcmp(rid, v->reservation_id)) {
			if (rid) {
				nb_xml_close(&t->x); /* instancesSet */
				nb_xml_close(&t->x); /* item */
			}
			rid = v->reservation_id;
			x_reservation_open(t, rid);
		}
		if (snap)
			nb_xml_raw(&t->x, snap->xml.data + snap->off[i],
				   snap->off[i + 1] - snap->off[i]);
		else
			x_instance(t, v);
		shown++;
	}
	if (rid) {
		nb_xml_close(&t->x);
		nb_xml_close(&t->x);
	}
	nb_xml_close(&t->x);
	if (more) {
		char next[32];
		snprintf(next, sizeof(next), "nb1.%lld", (long long)(start + shown));
		nb_xml_text(&t->x, "nextToken", next);
	}
out:
	nb_store_instance_list_free(&l);
	snap_put(snap);
	return t->status ? -1 : 0;
}

static int act_describe_instance_status(struct ec2_ctx *t)
{
	const char *ids[EC2_MAX_IDS];
	struct nb_filter f[NB_QUERY_MAX_FILTERS];
	int nids = param_list(t, "InstanceId", ids, EC2_MAX_IDS), nf;
	bool all = param_bool(t, "IncludeAllInstances");
	struct nb_store_instance_list l = {0};

	if (nids < 0 || (nf = filters_parse(t, f, NB_QUERY_MAX_FILTERS)) < 0 ||
	    filters_check(t, f, nf, instance_field) < 0)
		goto out;
	if (load_listed(t, ids, nids, 0, &l) < 0)
		goto out;
	x_begin(t);
	nb_xml_open(&t->x, "instanceStatusSet");
	for (size_t i = 0; i < l.n; i++) {
		const struct nb_store_instance *v = &l.v[i];
		const char *state = v->state;
		int m = filters_match_instance(t, f, nf, v);
		if (m < 0)
			goto out;
		if (!m || (!all && strcmp(state, "running")))
			continue;
		bool running = !strcmp(state, "running");
		nb_xml_open(&t->x, "item");
		nb_xml_text(&t->x, "instanceId", v->id);
		nb_xml_text(&t->x, "availabilityZone", v->az);
		x_state(t, "instanceState", state);
		nb_xml_open(&t->x, "systemStatus");
		nb_xml_text(&t->x, "status", running ? "ok" : "not-applicable");
		nb_xml_close(&t->x);
		nb_xml_open(&t->x, "instanceStatus");
		nb_xml_text(&t->x, "status", running ? "ok" : "not-applicable");
		nb_xml_close(&t->x);
		nb_xml_close(&t->x);
	}
	nb_xml_close(&t->x);
out:
	nb_store_instance_list_free(&l);
	return t->status ? -1 : 0;
}

static int act_run_instances(struct ec2_ctx *t)
{
	const char *image = need(t, "ImageId"), *type = param(t, "InstanceType");
	const char *key = param(t, "KeyName"), *az = param(t, "Placement.AvailabilityZone");
	const char *token = param(t, "ClientToken"), *ud = param(t, "UserData");
	int64_t min = 0, max = 0;
	json_t *req = NULL, *out = NULL, *tags = json_object(), *inst, *img = NULL, *netreq = NULL;
	int idx[16], n;
	char err[NB_ERRSZ] = "";
	const char *code = NULL;
	size_t i;
	int r;

	if (!image || !need(t, "MinCount") || !need(t, "MaxCount") ||
	    param_int(t, "MinCount", 1, 1, t->ctl->max_count, &min) < 0 ||
	    param_int(t, "MaxCount", 1, 1, t->ctl->max_count, &max) < 0)
		goto out;
	if (min > max) {
		ec2_fail(t, 400, "InvalidParameterValue",
			 "MinCount (%lld) must not be greater than MaxCount (%lld)", (long long)min,
			 (long long)max);
		goto out;
	}
	if (!id_ok("ami", image)) {
		ec2_fail(t, 400, "InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting \"ami-...\")",
			 image);
		goto out;
	}
	if (nb_store_image_get(t->ctl->st, t->account_id, image, &img) < 0 &&
	    nb_store_image_visible(t->ctl->st, t->account_id, image, &img) < 0) {
		ec2_fail(t, 400, "InvalidAMIID.NotFound", "The image id '[%s]' does not exist", image);
		goto out;
	}
	if (key) {
		json_t *kp = NULL;
		if (nb_store_keypair_get(t->ctl->st, t->account_id, key, &kp) < 0) {
			ec2_fail(t, 400, "InvalidKeyPair.NotFound", "The key pair '%s' does not exist",
				 key);
			goto out;
		}
		json_decref(kp);
	}
	if (az && strcmp(az, t->ctl->az)) {
		ec2_fail(t, 400, "InvalidParameterValue",
			 "Invalid availability zone: [%s]; this region has %s", az, t->ctl->az);
		goto out;
	}
	if (!type)
		type = "t1.micro";
	if (t->dry_run && type_check(t, type) < 0)
		goto out;
	n = nb_query_indexes(t->q, "TagSpecification", idx, 16);
	for (int k = 0; k < n; k++) {
		char pfx[64], rt[64];
		struct nb_tag tg[50];
		snprintf(rt, sizeof(rt), "TagSpecification.%d.ResourceType", idx[k]);
		snprintf(pfx, sizeof(pfx), "TagSpecification.%d.Tag", idx[k]);
		const char *rtype = param(t, rt);
		if (rtype && strcmp(rtype, "instance")) {
			ec2_fail(t, 400, "InvalidParameterValue",
				 "'%s' is not a valid taggable resource type for this operation.",
				 rtype);
			goto out;
		}
		int nt = nb_query_tags(t->q, pfx, tg, 50, err, sizeof(err));
		if (nt < 0) {
			ec2_fail(t, 400, "InvalidParameterValue", "%s", err);
			goto out;
		}
		for (int j = 0; j < nt; j++)
			json_object_set_new(tags, tg[j].key, json_string(tg[j].value));
	}
	netreq = json_object();
	if (net_run_params(t, netreq) < 0)
		goto out;
	if (t->dry_run) {
		struct nb_net_plan plan;
		const char *code = NULL;
		r = nb_core_net_plan(t->ctl, t->account_id, netreq, &plan, err, sizeof(err), &code);
		if (r < 0) {
			net_fail(t, r, code, err, "InvalidParameterValue");
			goto out;
		}
		nb_core_net_plan_free(&plan);
	}
	if (dry_run_stop(t))
		goto out;
	req = json_pack("{s:s, s:s, s:I, s:I, s:O}", "image", image, "type", type, "count",
			(json_int_t)max, "min_count", (json_int_t)min, "tags", tags);
	json_object_update(req, netreq);
	if (key)
		json_object_set_new(req, "key_name", json_string(key));
	if (token)
		json_object_set_new(req, "client_token", json_string(token));
	if (ud)
		json_object_set_new(req, "user_data", json_string(ud));
	if (json_object_get(tags, "Name"))
		json_object_set(req, "name", json_object_get(tags, "Name"));
	r = nb_core_run_ex(t->ctl, t->account_id, req, &out, err, sizeof(err), &code);
	if (r < 0 && code) {
		net_fail(t, r, code, err, "InvalidParameterValue");
		goto out;
	}
	if (r == -NB_E_INVALID && strstr(err, "instance type")) {
		ec2_fail(t, 400, "InvalidParameterValue",
			 "Invalid value '%s' for InstanceType.", type);
		goto out;
	}
	if (r == -NB_E_INVALID && strstr(err, "'name'")) {
		/* a Name tag is free text in EC2; nubo's names are not: keep it as a tag only */
		json_object_del(req, "name");
		r = nb_core_run_ex(t->ctl, t->account_id, req, &out, err, sizeof(err), &code);
		if (r < 0 && code) {
			net_fail(t, r, code, err, "InvalidParameterValue");
			goto out;
		}
	}
	if (r < 0) {
		ec2_core_fail(t, r, "InvalidParameterValue", err);
		goto out;
	}
	x_begin(t);
	nb_xml_text(&t->x, "reservationId", nb_json_str_or(out, "reservation_id"));
	nb_xml_text(&t->x, "ownerId", t->account_id);
	nb_xml_open(&t->x, "groupSet");
	nb_xml_close(&t->x);
	nb_xml_open(&t->x, "instancesSet");
	json_array_foreach(json_object_get(out, "instances"), i, inst)
	{
		struct nb_store_instance_list l = {0};
		if (nb_store_instances_load(t->ctl->st, t->account_id, nb_json_str_or(inst, "id"), 1,
					    &l) == 0 &&
		    l.n == 1)
			x_instance(t, &l.v[0]);
		nb_store_instance_list_free(&l);
	}
	nb_xml_close(&t->x);
out:
	json_decref(req);
	json_decref(out);
	json_decref(tags);
	json_decref(netreq);
	json_decref(img);
	return t->status ? -1 : 0;
}

static const char *past_tense(const char *action)
{
	return !strcmp(action, "start")	    ? "started"
	       : !strcmp(action, "stop")    ? "stopped"
	       : !strcmp(action, "reboot")  ? "rebooted"
					    : "terminated";
}

/* All or nothing: every instance's transition is checked before any is
 * acted on. */
static int transitions_check(struct ec2_ctx *t, json_t *rows, const char *action)
{
	json_t *row;
	size_t i;

	json_array_foreach(rows, i, row)
	{
		struct nb_transition tr;
		if (nb_state_apply(nb_json_str_or(row, "state"), nb_json_str_or(row, "desired_state"),
				   (enum nb_action)nb_action_parse(action), &tr) < 0)
			return ec2_fail(t, 400, "IncorrectInstanceState",
					"The instance '%s' is not in a state from which it can be %s.",
					nb_json_str_or(row, "id"), past_tense(action));
	}
	return 0;
}

/* Start, Stop, Terminate: each id's previous and current state. */
static int act_state_change(struct ec2_ctx *t, const char *action)
{
	const char *ids[EC2_MAX_IDS];
	int n = param_list(t, "InstanceId", ids, EC2_MAX_IDS);
	json_t *rows = json_array(), *row, *opts = NULL;
	char err[NB_ERRSZ];
	size_t i;

	if (n < 0)
		goto out;
	if (n == 0) {
		ec2_fail(t, 400, "MissingParameter", "The request must contain the parameter InstanceId");
		goto out;
	}
	if (load_instances(t, ids, n, rows) < 0)
		goto out;
	if (!strcmp(action, "stop") && param_bool(t, "Force"))
		opts = json_pack("{s:b}", "force", 1);
	if (transitions_check(t, rows, action) < 0 || dry_run_stop(t))
		goto out;
	x_begin(t);
	nb_xml_open(&t->x, "instancesSet");
	json_array_foreach(rows, i, row)
	{
		json_t *now = NULL;
		int r = nb_core_action(t->ctl, t->account_id, nb_json_str_or(row, "id"), action, opts,
				       &now, err, sizeof(err));
		if (r < 0) {
			ec2_core_fail(t, r, "InvalidInstanceID.NotFound", err);
			goto out;
		}
		nb_xml_open(&t->x, "item");
		nb_xml_text(&t->x, "instanceId", nb_json_str_or(row, "id"));
		x_state(t, "currentState", nb_json_str_or(now, "state"));
		x_state(t, "previousState", nb_json_str_or(row, "state"));
		nb_xml_close(&t->x);
		json_decref(now);
	}
	nb_xml_close(&t->x);
out:
	json_decref(rows);
	json_decref(opts);
	return t->status ? -1 : 0;
}

static int act_start(struct ec2_ctx *t)
{
	return act_state_change(t, "start");
}

static int act_stop(struct ec2_ctx *t)
{
	return act_state_change(t, "stop");
}

static int act_terminate(struct ec2_ctx *t)
{
	return act_state_change(t, "terminate");
}

static int act_reboot(struct ec2_ctx *t)
{
	const char *ids[EC2_MAX_IDS];
	int n = param_list(t, "InstanceId", ids, EC2_MAX_IDS);
	json_t *rows = json_array(), *row;
	char err[NB_ERRSZ];
	size_t i;

	if (n == 0)
		ec2_fail(t, 400, "MissingParameter", "The request must contain the parameter InstanceId");
	if (n <= 0 || load_instances(t, ids, n, rows) < 0 ||
	    transitions_check(t, rows, "reboot") < 0 || dry_run_stop(t))
		goto out;
	json_array_foreach(rows, i, row)
	{
		json_t *now = NULL;
		int r = nb_core_action(t->ctl, t->account_id, nb_json_str_or(row, "id"), "reboot",
				       NULL, &now, err, sizeof(err));
		json_decref(now);
		if (r < 0) {
			ec2_core_fail(t, r, "InvalidInstanceID.NotFound", err);
			goto out;
		}
	}
	x_begin(t);
	nb_xml_bool(&t->x, "return", 1);
out:
	json_decref(rows);
	return t->status ? -1 : 0;
}

static int act_modify_instance_attribute(struct ec2_ctx *t)
{
	const char *id = need(t, "InstanceId"), *type = param(t, "InstanceType.Value");
	const char *attr = param(t, "Attribute");
	json_t *rows = json_array(), *out = NULL;
	char err[NB_ERRSZ];
	int r;

	if (!id)
		goto out;
	if (!type && attr && !strcmp(attr, "instanceType"))
		type = param(t, "Value");
	if (!type) {
		ec2_fail(t, 400, "InvalidParameterCombination",
			 "nubo can modify the instanceType attribute only");
		goto out;
	}
	if (load_instances(t, &id, 1, rows) < 0)
		goto out;
	if (t->dry_run) {
		json_t *row = json_array_get(rows, 0);
		if (type_check(t, type) == 0 && strcmp(nb_json_str_or(row, "state"), "stopped"))
			ec2_fail(t, 400, "IncorrectInstanceState",
				 "The instance '%s' is not in the 'stopped' state.", id);
		if (!t->status)
			dry_run_stop(t);
		goto out;
	}
	r = nb_core_resize(t->ctl, t->account_id, id, type, &out, err, sizeof(err));
	if (r == -NB_E_INVALID && strstr(err, "unknown instance type")) {
		ec2_fail(t, 400, "InvalidParameterValue", "Invalid value '%s' for InstanceType.", type);
		goto out;
	}
	if (r < 0) {
		ec2_core_fail(t, r, "InvalidInstanceID.NotFound", err);
		goto out;
	}
	x_begin(t);
	nb_xml_bool(&t->x, "return", 1);
out:
	json_decref(rows);
	json_decref(out);
	return t->status ? -1 : 0;
}

static int act_get_console_output(struct ec2_ctx *t)
{
	const char *id = need(t, "InstanceId");
	json_t *rows = json_array();
	struct nb_buf log;
	char err[NB_ERRSZ], ts[40];
	int r;

	nb_buf_init(&log, 4u << 20);
	if (!id || load_instances(t, &id, 1, rows) < 0)
		goto out;
	r = nb_core_console_output(t->ctl, t->account_id, id, &log, err, sizeof(err));
	if (r < 0 && r != -NB_E_STATE) {
		ec2_core_fail(t, r, "InvalidInstanceID.NotFound", err);
		goto out;
	}
	/* EC2 returns the last 64 KiB, base64 */
	size_t from = log.len > 65536 ? log.len - 65536 : 0, n = log.len - from;
	char *b64 = malloc(4 * ((n + 2) / 3) + 1);
	if (!b64) {
		ec2_fail(t, 500, "InternalError", "out of memory");
		goto out;
	}
	EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)(log.data ? log.data + from : ""),
			(int)n);
	nb_iso8601(nb_wall_ms(), ts, sizeof(ts));
	x_begin(t);
	nb_xml_text(&t->x, "instanceId", id);
	nb_xml_text(&t->x, "timestamp", ts);
	nb_xml_text(&t->x, "output", b64);
	free(b64);
out:
	nb_buf_free(&log);
	json_decref(rows);
	return t->status ? -1 : 0;
}

/* The first of names that no row's column holds, or NULL. */
static const char *first_missing(json_t *rows, const char *column, const char **names, int n)
{
	json_t *row;
	size_t i;

	for (int k = 0; k < n; k++) {
		bool found = false;
		json_array_foreach(rows, i, row) found |= !strcmp(nb_json_str_or(row, column), names[k]);
		if (!found)
			return names[k];
	}
	return NULL;
}

/* ---- images ---- */


static void x_image(struct ec2_ctx *t, json_t *row)
{
	char buf[64];

	nb_xml_open(&t->x, "item");
	nb_xml_text(&t->x, "imageId", nb_json_str_or(row, "id"));
	nb_xml_text(&t->x, "imageLocation", nb_json_str_or(row, "sha256"));
	nb_xml_text(&t->x, "imageState", nb_json_str_or(row, "state"));
	nb_xml_text(&t->x, "imageOwnerId", nb_json_str_or(row, "account_id"));
	nb_xml_text(&t->x, "creationDate", row_time(row, "created_at", buf, sizeof(buf)));
	nb_xml_bool(&t->x, "isPublic", (int)nb_json_int(row, "public", 0));
	nb_xml_text(&t->x, "architecture", nb_json_str_or(row, "arch"));
	nb_xml_text(&t->x, "imageType", "machine");
	if (!strcmp(nb_json_str_or(row, "boot_mode"), "kernel")) {
		nb_xml_text(&t->x, "kernelId", nb_json_str_or(row, "kernel_sha256"));
		if (nb_json_str(row, "initrd_sha256"))
			nb_xml_text(&t->x, "ramdiskId", nb_json_str(row, "initrd_sha256"));
	}
	nb_xml_text(&t->x, "name", nb_json_str_or(row, "name"));
	nb_xml_text(&t->x, "description", nb_json_str_or(row, "description"));
	nb_xml_text(&t->x, "platformDetails", "Linux/UNIX");
	nb_xml_text(&t->x, "rootDeviceType", "instance-store");
	nb_xml_text(&t->x, "rootDeviceName", "/dev/vda");
	nb_xml_open(&t->x, "blockDeviceMapping");
	nb_xml_close(&t->x);
	nb_xml_text(&t->x, "virtualizationType", "hvm");
	nb_xml_text(&t->x, "hypervisor", "xen");
	nb_xml_text(&t->x, "bootMode", "legacy-bios");
	x_tags(t, row);
	nb_xml_close(&t->x);
}

static int act_describe_images(struct ec2_ctx *t)
{
	const char *ids[EC2_MAX_IDS], *owners[64], *execs[64];
	struct nb_filter f[NB_QUERY_MAX_FILTERS];
	int nids = param_list(t, "ImageId", ids, EC2_MAX_IDS), nf = 0;
	int nown = nids < 0 ? -1 : param_list(t, "Owner", owners, 64);
	int nexec = nown < 0 ? -1 : param_list(t, "ExecutableBy", execs, 64);
	json_t *rows = NULL, *row;
	size_t i;

	if (nexec < 0 || (nf = filters_parse(t, f, NB_QUERY_MAX_FILTERS)) < 0 ||
	    filters_check(t, f, nf, image_field) < 0)
		return -1;
	for (int k = 0; k < nids; k++)
		if (!id_ok("ami", ids[k]))
			return ec2_fail(t, 400, "InvalidAMIID.Malformed", "Invalid id: \"%s\"", ids[k]);
	if (nb_store_images_visible(t->ctl->st, t->account_id, &rows) < 0)
		return ec2_fail(t, 500, "InternalError", "listing failed");
	/* every asked-for id must be visible */
	const char *missing = first_missing(rows, "id", ids, nids);
	if (missing) {
		json_decref(rows);
		return ec2_fail(t, 400, "InvalidAMIID.NotFound", "The image id '[%s]' does not exist",
				missing);
	}
	x_begin(t);
	nb_xml_open(&t->x, "imagesSet");
	json_array_foreach(rows, i, row)
	{
		const char *owner = nb_json_str_or(row, "account_id"), *id = nb_json_str_or(row, "id");
		bool mine = !strcmp(owner, t->account_id), pub = nb_json_int(row, "public", 0);
		bool ok = nids == 0;
		for (int k = 0; k < nids; k++)
			ok |= !strcmp(id, ids[k]);
		if (!ok)
			continue;
		if (nown > 0) {
			bool o = false;
			for (int k = 0; k < nown; k++)
				o |= (!strcmp(owners[k], "self") && mine) || !strcmp(owners[k], owner) ||
				     !strcmp(owners[k], "all");
			if (!o)
				continue;
		}
		if (nexec > 0) {
			bool e = false;
			for (int k = 0; k < nexec; k++)
				e |= (!strcmp(execs[k], "self") && (mine || !pub)) ||
				     (!strcmp(execs[k], "all") && pub) ||
				     !strcmp(execs[k], t->account_id);
			if (!e)
				continue;
		}
		int m = filters_match(t, f, nf, row, id, image_field);
		if (m < 0) {
			json_decref(rows);
			return -1;
		}
		if (m)
			x_image(t, row);
	}
	nb_xml_close(&t->x);
	json_decref(rows);
	return 0;
}

/* An image of the caller's own (for changes), or EC2's NotFound. */
static json_t *own_image(struct ec2_ctx *t, const char *id)
{
	json_t *img = NULL;

	if (!id_ok("ami", id)) {
		ec2_fail(t, 400, "InvalidAMIID.Malformed", "Invalid id: \"%s\"", id);
		return NULL;
	}
	if (nb_store_image_get(t->ctl->st, t->account_id, id, &img) < 0 ||
	    strcmp(nb_json_str_or(img, "id"), id)) {
		json_decref(img);
		ec2_fail(t, 400, "InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id);
		return NULL;
	}
	return img;
}

static int act_deregister_image(struct ec2_ctx *t)
{
	const char *id = need(t, "ImageId");
	json_t *img = id ? own_image(t, id) : NULL;
	char err[NB_ERRSZ];
	int r;

	if (!img)
		return -1;
	json_decref(img);
	if (dry_run_stop(t))
		return -1;
	r = nb_core_image_delete(t->ctl, t->account_id, id, err, sizeof(err));
	if (r == -NB_E_CONFLICT)
		return ec2_fail(t, 400, "InvalidAMIID.Unavailable", "%s", err);
	if (r < 0)
		return ec2_core_fail(t, r, "InvalidAMIID.NotFound", err);
	nb_store_tags_drop(t->ctl->st, id);
	x_begin(t);
	nb_xml_bool(&t->x, "return", 1);
	return 0;
}

/* RegisterImage: the disk is an object in the caller's (or a public-read)
 * bucket (ImageLocation "bucket/key" as EC2 takes it, or "s3://bucket/key"),
 * or a blob already uploaded to nubo's image library ("blob:<sha256>" or the
 * bare sha256); KernelId and RamdiskId name an image whose kernel and initrd
 * the new one boots. A location the caller cannot read is InvalidManifest,
 * EC2's code for it. */
static int act_register_image(struct ec2_ctx *t)
{
	const char *name = need(t, "Name"), *loc = param(t, "ImageLocation");
	const char *kernel_img = param(t, "KernelId"), *desc = param(t, "Description");
	const char *arch = param(t, "Architecture");
	json_t *req, *out = NULL, *kimg = NULL;
	char err[NB_ERRSZ];
	int r;

	if (!name)
		return -1;
	if (!loc)
		return ec2_fail(t, 400, "MissingParameter",
				"The request must contain the parameter ImageLocation");
	if (!strncmp(loc, "blob:", 5))
		loc += 5;
	bool in_s3 = strchr(loc, '/') != NULL; /* bucket/key; a blob is 64 hex digits */
	if (arch && strcmp(arch, "x86_64"))
		return ec2_fail(t, 400, "InvalidParameterValue",
				"Value (%s) for parameter architecture is invalid.", arch);
	req = json_pack("{s:s, s:s, s:s, s:s}", "name", name, in_s3 ? "source" : "disk_blob", loc,
			"arch", "x86_64", "os", "linux");
	if (kernel_img) {
		kimg = own_image(t, kernel_img);
		if (!kimg && nb_store_image_visible(t->ctl->st, t->account_id, kernel_img, &kimg) == 0)
			t->status = 0;
		if (!kimg || !nb_json_str(kimg, "kernel_sha256")) {
			json_decref(req);
			json_decref(kimg);
			return ec2_fail(t, 400, "InvalidAMIID.NotFound",
					"The kernel image '%s' does not exist or has no kernel",
					kernel_img);
		}
		json_object_set_new(req, "kernel_blob", json_string(nb_json_str(kimg, "kernel_sha256")));
		if (nb_json_str(kimg, "initrd_sha256"))
			json_object_set_new(req, "initrd_blob",
					    json_string(nb_json_str(kimg, "initrd_sha256")));
		if (nb_json_str(kimg, "cmdline"))
			json_object_set_new(req, "cmdline", json_string(nb_json_str(kimg, "cmdline")));
	}
	if (desc)
		json_object_set_new(req, "description", json_string(desc));
	if (t->dry_run && in_s3) {
		json_decref(req);
		json_decref(kimg);
		r = nb_core_image_source_check(t->ctl, t->account_id, loc, err, sizeof(err));
		if (r == -NB_E_INVALID)
			return ec2_fail(t, 400, "InvalidParameterValue", "%s", err);
		if (r < 0)
			return ec2_fail(t, 400, "InvalidManifest",
					"The image location '%s' cannot be read (%s)",
					param(t, "ImageLocation"), err);
		return dry_run_stop(t) ? -1 : 0;
	}
	if (t->dry_run) {
		int allowed = 0;
		json_decref(req);
		json_decref(kimg);
		if (nb_store_blob_allowed(t->ctl->st, loc, t->account_id, &allowed) < 0 || !allowed)
			return ec2_fail(t, 400, "InvalidManifest",
					"The image location '%s' does not exist (upload the disk with "
					"PUT /v1/blobs)",
					param(t, "ImageLocation"));
		return dry_run_stop(t) ? -1 : 0;
	}
	r = nb_core_image_create(t->ctl, t->account_id, req, &out, err, sizeof(err));
	json_decref(req);
	json_decref(kimg);
	if (r == -NB_E_CONFLICT)
		return ec2_fail(t, 400, "InvalidAMIName.Duplicate", "%s", err);
	if (r == -NB_E_LIMIT)
		return ec2_fail(t, 400, "ResourceLimitExceeded", "%s", err);
	if (in_s3 && (r == -NB_E_NOT_FOUND || r == -NB_E_FORBIDDEN))
		return ec2_fail(t, 400, "InvalidManifest", "The image location '%s' cannot be read (%s)",
				param(t, "ImageLocation"), err);
	if (r == -NB_E_NOT_FOUND) /* EC2's code for a location it cannot read; the
				   * same for another account's upload as for none */
		return ec2_fail(t, 400, "InvalidManifest",
				"The image location '%s' does not exist (upload the disk with "
				"PUT /v1/blobs)",
				param(t, "ImageLocation"));
	if (r < 0)
		return ec2_core_fail(t, r, "InvalidParameterValue", err);
	x_begin(t);
	nb_xml_text(&t->x, "imageId", nb_json_str_or(out, "id"));
	json_decref(out);
	return 0;
}

/* One launch permission change: grantee an account id or "all". */
struct grant_change {
	bool add;
	char who[32];
};

/* A grantee as given (an account id or name, or Group "all") into c, or
 * EC2's error. */
static int grant_parse(struct ec2_ctx *t, bool add, const char *user, const char *group,
		       struct grant_change *c)
{
	c->add = add;
	if (group) {
		if (strcmp(group, "all"))
			return ec2_fail(t, 400, "InvalidParameterValue",
					"Invalid group '%s'; only 'all' is a group", group);
		nb_strlcpy(c->who, "all", sizeof(c->who));
		return 0;
	}
	json_t *acct = NULL;
	if (nb_store_account_get(t->ctl->st, user, &acct) < 0)
		return ec2_fail(t, 400, "InvalidUserID.Malformed", "User ID '%s' is not valid", user);
	nb_strlcpy(c->who, nb_json_str_or(acct, "id"), sizeof(c->who));
	json_decref(acct);
	return 0;
}

/* Launch permissions: every grantee is checked before any is changed. */
static int act_modify_image_attribute(struct ec2_ctx *t)
{
	const char *id = need(t, "ImageId");
	json_t *img = id ? own_image(t, id) : NULL;
	static const char *const ops[] = {"Add", "Remove"};
	const char *optype = param(t, "OperationType");
	struct grant_change ch[128];
	int nch = 0;

	if (!img)
		return -1;
	json_decref(img);
	if (optype) { /* --operation-type add --user-ids A B --user-groups all */
		const char *users[64], *groups[8];
		int nu = param_list(t, "UserId", users, 64), ng = nu < 0 ? -1 : param_list(t, "UserGroup", groups, 8);
		bool add = !strcasecmp(optype, "add");
		if (ng < 0)
			return -1;
		if (!add && strcasecmp(optype, "remove"))
			return ec2_fail(t, 400, "InvalidParameterValue",
					"Value (%s) for parameter operationType is invalid.", optype);
		for (int k = 0; k < nu + ng; k++)
			if (grant_parse(t, add, k < nu ? users[k] : NULL, k < nu ? NULL : groups[k - nu],
					&ch[nch++]) < 0)
				return -1;
	}
	for (int o = 0; o < 2 && !optype; o++) {
		int idx[64];
		char pfx[64];
		snprintf(pfx, sizeof(pfx), "LaunchPermission.%s", ops[o]);
		int n = nb_query_indexes(t->q, pfx, idx, 64);
		for (int k = 0; k < n; k++) {
			char ku[96], kg[96];
			snprintf(ku, sizeof(ku), "%s.%d.UserId", pfx, idx[k]);
			snprintf(kg, sizeof(kg), "%s.%d.Group", pfx, idx[k]);
			if (!param(t, ku) && !param(t, kg))
				continue;
			if (grant_parse(t, o == 0, param(t, ku), param(t, ku) ? NULL : param(t, kg),
					&ch[nch++]) < 0)
				return -1;
		}
	}
	if (dry_run_stop(t))
		return -1;
	for (int k = 0; k < nch; k++) {
		int r = ch[k].add ? nb_store_image_grant(t->ctl->st, id, ch[k].who)
				  : nb_store_image_revoke(t->ctl->st, id, ch[k].who);
		if (r < 0)
			return ec2_fail(t, 500, "InternalError", "changing the launch permissions failed");
	}
	x_begin(t);
	nb_xml_bool(&t->x, "return", 1);
	return 0;
}

static int act_describe_image_attribute(struct ec2_ctx *t)
{
	const char *id = need(t, "ImageId"), *attr = need(t, "Attribute");
	json_t *img = id && attr ? own_image(t, id) : NULL, *grants = NULL, *g;
	size_t i;

	if (!img)
		return -1;
	x_begin(t);
	nb_xml_text(&t->x, "imageId", id);
	if (!strcmp(attr, "launchPermission")) {
		nb_xml_open(&t->x, "launchPermission");
		if (nb_store_image_grants(t->ctl->st, id, &grants) == 0)
			json_array_foreach(grants, i, g)
			{
				const char *who = nb_json_str_or(g, "grantee");
				nb_xml_open(&t->x, "item");
				nb_xml_text(&t->x, !strcmp(who, "all") ? "group" : "userId", who);
				nb_xml_close(&t->x);
			}
		nb_xml_close(&t->x);
	} else if (!strcmp(attr, "description")) {
		nb_xml_open(&t->x, "description");
		nb_xml_text(&t->x, "value", nb_json_str_or(img, "description"));
		nb_xml_close(&t->x);
	} else {
		json_decref(img);
		return ec2_fail(t, 400, "InvalidParameterValue",
				"Value (%s) for parameter attribute is invalid.", attr);
	}
	json_decref(grants);
	json_decref(img);
	return 0;
}

static int act_create_image(struct ec2_ctx *t)
{
	const char *id = need(t, "InstanceId"), *name = need(t, "Name");
	json_t *rows = json_array(), *out = NULL, *req;
	char err[NB_ERRSZ];
	int r;

	if (!id || !name || load_instances(t, &id, 1, rows) < 0)
		goto out;
	if (t->dry_run) {
		const char *st = nb_json_str_or(json_array_get(rows, 0), "state");
		if (strcmp(st, "running") && strcmp(st, "stopped") && strcmp(st, "paused"))
			ec2_fail(t, 400, "IncorrectInstanceState",
				 "The instance '%s' is %s; an image needs a running or stopped one",
				 id, st);
		else
			dry_run_stop(t);
		goto out;
	}
	req = json_pack("{s:s, s:s, s:b}", "instance_id", id, "name", name, "no_reboot",
			param_bool(t, "NoReboot"));
	if (param(t, "Description"))
		json_object_set_new(req, "description", json_string(param(t, "Description")));
	r = nb_core_image_snapshot(t->ctl, t->account_id, req, &out, err, sizeof(err));
	json_decref(req);
	if (r == -NB_E_CONFLICT && strstr(err, "exists")) {
		ec2_fail(t, 400, "InvalidAMIName.Duplicate", "%s", err);
		goto out;
	}
	if (r == -NB_E_LIMIT) { /* the images quota, as RegisterImage */
		ec2_fail(t, 400, "ResourceLimitExceeded", "%s", err);
		goto out;
	}
	if (r < 0) {
		ec2_core_fail(t, r, "InvalidInstanceID.NotFound", err);
		goto out;
	}
	x_begin(t);
	nb_xml_text(&t->x, "imageId", nb_json_str_or(out, "id"));
out:
	json_decref(rows);
	json_decref(out);
	return t->status ? -1 : 0;
}

/* ---- tags ---- */

/* The type of a resource of the caller's, or NULL with EC2's error. */
static const char *resource_type(struct ec2_ctx *t, const char *id)
{
	json_t *row = NULL;
	const char *type = NULL;

	if (id_ok("i", id)) {
		if (nb_store_instance_get(t->ctl->st, t->account_id, id, &row) == 0)
			type = "instance";
		else
			ec2_fail(t, 400, "InvalidInstanceID.NotFound",
				 "The instance ID '%s' does not exist", id);
	} else if (id_ok("ami", id)) {
		if (nb_store_image_get(t->ctl->st, t->account_id, id, &row) == 0 &&
		    !strcmp(nb_json_str_or(row, "id"), id))
			type = "image";
		else
			ec2_fail(t, 400, "InvalidAMIID.NotFound", "The image id '[%s]' does not exist",
				 id);
	} else if (id_ok("key", id)) {
		json_t *kps = NULL, *kp;
		size_t i;
		if (nb_store_keypairs_list(t->ctl->st, t->account_id, &kps) == 0)
			json_array_foreach(kps, i, kp) if (!strcmp(nb_json_str_or(kp, "id"), id)) type =
				"key-pair";
		json_decref(kps);
		if (!type)
			ec2_fail(t, 400, "InvalidKeyPair.NotFound", "The key pair '%s' does not exist",
				 id);
	} else if (!net_resource_type(t, id, &type)) {
		ec2_fail(t, 400, "InvalidID", "The ID '%s' is not valid", id);
	}
	json_decref(row);
	return type;
}

static int act_create_tags(struct ec2_ctx *t)
{
	const char *ids[EC2_MAX_IDS], *types[EC2_MAX_IDS];
	struct nb_tag tags[50];
	char err[256] = "";
	int n = param_list(t, "ResourceId", ids, EC2_MAX_IDS), nt;

	if (n < 0)
		return -1;
	if (n == 0)
		return ec2_fail(t, 400, "MissingParameter",
				"The request must contain the parameter resourceIdSet");
	nt = nb_query_tags(t->q, "Tag", tags, 50, err, sizeof(err));
	if (nt < 0)
		return ec2_fail(t, 400, "InvalidParameterValue", "%s", err);
	if (nt == 0)
		return ec2_fail(t, 400, "MissingParameter", "The request must contain the parameter tagSet");
	for (int i = 0; i < n; i++) {
		types[i] = resource_type(t, ids[i]);
		if (!types[i])
			return -1;
		int64_t have = 0;
		nb_store_tags_count(t->ctl->st, ids[i], &have);
		if (have + nt > 50)
			return ec2_fail(t, 400, "TagLimitExceeded",
					"The maximum number of Tags for a resource has been reached.");
	}
	if (dry_run_stop(t))
		return -1;
	for (int i = 0; i < n; i++)
		for (int k = 0; k < nt; k++)
			if (nb_store_tag_put(t->ctl->st, t->account_id, ids[i], types[i], tags[k].key,
					     tags[k].value) < 0)
				return ec2_fail(t, 500, "InternalError", "tagging failed");
	x_begin(t);
	nb_xml_bool(&t->x, "return", 1);
	return 0;
}

static int act_delete_tags(struct ec2_ctx *t)
{
	const char *ids[EC2_MAX_IDS];
	int n = param_list(t, "ResourceId", ids, EC2_MAX_IDS), idx[64], nidx;

	if (n < 0)
		return -1;
	if (n == 0)
		return ec2_fail(t, 400, "MissingParameter",
				"The request must contain the parameter resourceIdSet");
	for (int i = 0; i < n; i++)
		if (!resource_type(t, ids[i]))
			return -1;
	if (dry_run_stop(t))
		return -1;
	nidx = nb_query_indexes(t->q, "Tag", idx, 64);
	for (int i = 0; i < n; i++) {
		if (nidx == 0) {
			nb_store_tags_drop(t->ctl->st, ids[i]);
			continue;
		}
		for (int k = 0; k < nidx; k++) {
			char kk[48], kv[48];
			snprintf(kk, sizeof(kk), "Tag.%d.Key", idx[k]);
			snprintf(kv, sizeof(kv), "Tag.%d.Value", idx[k]);
			if (param(t, kk))
				nb_store_tag_delete(t->ctl->st, t->account_id, ids[i], param(t, kk),
						    param(t, kv));
		}
	}
	x_begin(t);
	nb_xml_bool(&t->x, "return", 1);
	return 0;
}


static int act_describe_tags(struct ec2_ctx *t)
{
	struct nb_filter f[NB_QUERY_MAX_FILTERS];
	int nf = filters_parse(t, f, NB_QUERY_MAX_FILTERS);
	json_t *rows = NULL, *row;
	size_t i;

	if (nf < 0 || filters_check(t, f, nf, tag_field) < 0)
		return -1;
	if (nb_store_tags_list(t->ctl->st, t->account_id, &rows) < 0)
		return ec2_fail(t, 500, "InternalError", "listing failed");
	x_begin(t);
	nb_xml_open(&t->x, "tagSet");
	json_array_foreach(rows, i, row)
	{
		int ok = 1;
		for (int k = 0; k < nf && ok; k++) {
			char b[8];
			const char *v = tag_field(row, f[k].name, b, sizeof(b));
			if (!v) {
				json_decref(rows);
				return ec2_fail(t, 400, "InvalidParameterValue",
						"The filter '%s' is invalid", f[k].name);
			}
			ok = any_value_matches(&f[k], v);
		}
		if (!ok)
			continue;
		nb_xml_open(&t->x, "item");
		nb_xml_text(&t->x, "resourceId", nb_json_str_or(row, "resource_id"));
		nb_xml_text(&t->x, "resourceType", nb_json_str_or(row, "resource_type"));
		nb_xml_text(&t->x, "key", nb_json_str_or(row, "key"));
		nb_xml_text(&t->x, "value", nb_json_str_or(row, "value"));
		nb_xml_close(&t->x);
	}
	nb_xml_close(&t->x);
	json_decref(rows);
	return 0;
}

/* ---- key pairs ---- */

static bool keyname_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 255)
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			return false;
	return true;
}

/* The name is not one of the account's key pairs yet, or EC2's error. */
static int keypair_free_name(struct ec2_ctx *t, const char *name)
{
	json_t *old = NULL;

	if (nb_store_keypair_get(t->ctl->st, t->account_id, name, &old) == 0) {
		json_decref(old);
		return ec2_fail(t, 400, "InvalidKeyPair.Duplicate", "The keypair '%s' already exists.",
				name);
	}
	return 0;
}

static int save_keypair(struct ec2_ctx *t, const char *name, struct nb_keypair *kp,
			char id[32])
{
	json_t *row;
	int r;

	if (keypair_free_name(t, name) < 0)
		return -1;
	nb_id_new("key", id, 32);
	row = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "id", id, "account_id", t->account_id,
			"name", name, "fingerprint", kp->fingerprint, "public_key",
			kp->public_openssh, "key_type", kp->type == NB_KEY_RSA ? "rsa" : "ed25519");
	r = nb_store_keypair_insert(t->ctl->st, row);
	json_decref(row);
	if (r == -NB_E_CONFLICT)
		return ec2_fail(t, 400, "InvalidKeyPair.Duplicate", "The keypair '%s' already exists.",
				name);
	return r < 0 ? ec2_fail(t, 500, "InternalError", "saving the key pair failed") : 0;
}

static int act_create_key_pair(struct ec2_ctx *t)
{
	const char *name = need(t, "KeyName"), *type = param(t, "KeyType");
	struct nb_keypair kp = {0};
	char id[32];

	if (!name)
		return -1;
	if (!keyname_ok(name))
		return ec2_fail(t, 400, "InvalidParameterValue", "Invalid key pair name '%s'", name);
	if (type && strcmp(type, "rsa") && strcmp(type, "ed25519"))
		return ec2_fail(t, 400, "InvalidParameterValue",
				"Value (%s) for parameter keyType is invalid.", type);
	if (t->dry_run)
		return keypair_free_name(t, name) < 0 || dry_run_stop(t) ? -1 : 0;
	if (nb_keypair_create(type && !strcmp(type, "ed25519") ? NB_KEY_ED25519 : NB_KEY_RSA, &kp) <
	    0)
		return ec2_fail(t, 500, "InternalError", "key generation failed");
	if (save_keypair(t, name, &kp, id) < 0) {
		nb_keypair_free(&kp);
		return -1;
	}
	x_begin(t);
	nb_xml_text(&t->x, "keyName", name);
	nb_xml_text(&t->x, "keyFingerprint", kp.fingerprint);
	nb_xml_text(&t->x, "keyMaterial", kp.private_pem);
	nb_xml_text(&t->x, "keyPairId", id);
	nb_keypair_free(&kp);
	return 0;
}

static int act_import_key_pair(struct ec2_ctx *t)
{
	const char *name = need(t, "KeyName"), *mat = name ? need(t, "PublicKeyMaterial") : NULL;
	struct nb_keypair kp = {0};
	unsigned char *raw;
	char id[32], err[256] = "";
	int n, r;

	if (!mat)
		return -1;
	if (!keyname_ok(name))
		return ec2_fail(t, 400, "InvalidParameterValue", "Invalid key pair name '%s'", name);
	/* PublicKeyMaterial is base64 of the OpenSSH public key line */
	size_t len = strlen(mat);
	raw = malloc(len + 4);
	if (!raw)
		return ec2_fail(t, 500, "InternalError", "out of memory");
	n = len % 4 == 0 ? EVP_DecodeBlock(raw, (const unsigned char *)mat, (int)len) : -1;
	if (n < 0) {
		free(raw);
		return ec2_fail(t, 400, "InvalidKey.Format",
				"Key is not in valid OpenSSH public key format");
	}
	while (n > 0 && raw[n - 1] == '\0')
		n--;
	if (nb_keypair_import((const char *)raw, (size_t)n, &kp, err, sizeof(err)) < 0) {
		free(raw);
		return ec2_fail(t, 400, "InvalidKey.Format", "%s",
				*err ? err : "Key is not in valid OpenSSH public key format");
	}
	free(raw);
	if (t->dry_run) {
		r = keypair_free_name(t, name) < 0 || dry_run_stop(t) ? -1 : 0;
		nb_keypair_free(&kp);
		return r;
	}
	if (save_keypair(t, name, &kp, id) < 0) {
		nb_keypair_free(&kp);
		return -1;
	}
	x_begin(t);
	nb_xml_text(&t->x, "keyName", name);
	nb_xml_text(&t->x, "keyFingerprint", kp.fingerprint);
	nb_xml_text(&t->x, "keyPairId", id);
	nb_keypair_free(&kp);
	return 0;
}

static int act_delete_key_pair(struct ec2_ctx *t)
{
	const char *name = param(t, "KeyName"), *kid = param(t, "KeyPairId");
	json_t *kps = NULL, *kp;
	size_t i;

	if (!name && !kid)
		return ec2_fail(t, 400, "MissingParameter",
				"The request must contain the parameter KeyName or KeyPairId");
	if (dry_run_stop(t))
		return -1;
	if (kid && nb_store_keypairs_list(t->ctl->st, t->account_id, &kps) == 0) {
		json_array_foreach(kps, i, kp) if (!strcmp(nb_json_str_or(kp, "id"), kid))
			nb_store_keypair_delete(t->ctl->st, t->account_id, nb_json_str_or(kp, "name"));
	}
	json_decref(kps);
	if (name)
		nb_store_keypair_delete(t->ctl->st, t->account_id, name); /* idempotent, as EC2 */
	x_begin(t);
	nb_xml_bool(&t->x, "return", 1);
	return 0;
}


static int act_describe_key_pairs(struct ec2_ctx *t)
{
	const char *names[EC2_MAX_IDS];
	struct nb_filter f[NB_QUERY_MAX_FILTERS];
	int n = param_list(t, "KeyName", names, EC2_MAX_IDS), nf;
	json_t *rows = NULL, *row;
	size_t i;

	if (n < 0 || (nf = filters_parse(t, f, NB_QUERY_MAX_FILTERS)) < 0 ||
	    filters_check(t, f, nf, keypair_field) < 0)
		return -1;
	if (nb_store_keypairs_list(t->ctl->st, t->account_id, &rows) < 0)
		return ec2_fail(t, 500, "InternalError", "listing failed");
	const char *missing = first_missing(rows, "name", names, n);
	if (missing) {
		json_decref(rows);
		return ec2_fail(t, 400, "InvalidKeyPair.NotFound", "The key pair '%s' does not exist",
				missing);
	}
	x_begin(t);
	nb_xml_open(&t->x, "keySet");
	json_array_foreach(rows, i, row)
	{
		bool ok = n == 0;
		char buf[64];
		for (int k = 0; k < n; k++)
			ok |= !strcmp(nb_json_str_or(row, "name"), names[k]);
		if (!ok)
			continue;
		int m = filters_match(t, f, nf, row, nb_json_str_or(row, "id"), keypair_field);
		if (m < 0) {
			json_decref(rows);
			return -1;
		}
		if (!m)
			continue;
		nb_xml_open(&t->x, "item");
		nb_xml_text(&t->x, "keyPairId", nb_json_str_or(row, "id"));
		nb_xml_text(&t->x, "keyName", nb_json_str_or(row, "name"));
		nb_xml_text(&t->x, "keyFingerprint", nb_json_str_or(row, "fingerprint"));
		nb_xml_text(&t->x, "keyType", nb_json_str_or(row, "key_type"));
		nb_xml_text(&t->x, "createTime", row_time(row, "created_at", buf, sizeof(buf)));
		if (param_bool(t, "IncludePublicKey"))
			nb_xml_text(&t->x, "publicKey", nb_json_str_or(row, "public_key"));
		x_tags(t, row);
		nb_xml_close(&t->x);
	}
	nb_xml_close(&t->x);
	json_decref(rows);
	return 0;
}

/* ---- the region ---- */

static int act_describe_instance_types(struct ec2_ctx *t)
{
	const char *names[200];
	int n = param_list(t, "InstanceType", names, 200);
	json_t *rows = NULL, *row;
	size_t i;

	if (n < 0)
		return -1;
	if (nb_store_types_list(t->ctl->st, &rows) < 0)
		return ec2_fail(t, 500, "InternalError", "listing failed");
	const char *missing = first_missing(rows, "name", names, n);
	if (missing) {
		json_decref(rows);
		return ec2_fail(t, 400, "InvalidInstanceType",
				"The following supplied instance types do not exist: [%s]", missing);
	}
	x_begin(t);
	nb_xml_open(&t->x, "instanceTypeSet");
	json_array_foreach(rows, i, row)
	{
		bool ok = n == 0;
		char perf[32];
		for (int k = 0; k < n; k++)
			ok |= !strcmp(nb_json_str_or(row, "name"), names[k]);
		if (!ok)
			continue;
		snprintf(perf, sizeof(perf), "Up to %lld Megabit",
			 (long long)nb_json_int(row, "net_mbps", 0));
		nb_xml_open(&t->x, "item");
		nb_xml_text(&t->x, "instanceType", nb_json_str_or(row, "name"));
		nb_xml_bool(&t->x, "currentGeneration", 1);
		nb_xml_bool(&t->x, "freeTierEligible", 0);
		nb_xml_open(&t->x, "supportedUsageClasses");
		nb_xml_text(&t->x, "item", "on-demand");
		nb_xml_close(&t->x);
		nb_xml_open(&t->x, "supportedRootDeviceTypes");
		nb_xml_text(&t->x, "item", "instance-store");
		nb_xml_close(&t->x);
		nb_xml_bool(&t->x, "bareMetal", 0);
		nb_xml_text(&t->x, "hypervisor", "xen");
		nb_xml_open(&t->x, "processorInfo");
		nb_xml_open(&t->x, "supportedArchitectures");
		nb_xml_text(&t->x, "item", "x86_64");
		nb_xml_close(&t->x);
		nb_xml_close(&t->x);
		nb_xml_open(&t->x, "vCpuInfo");
		nb_xml_int(&t->x, "defaultVCpus", nb_json_int(row, "vcpus", 1));
		nb_xml_int(&t->x, "defaultCores", nb_json_int(row, "vcpus", 1));
		nb_xml_int(&t->x, "defaultThreadsPerCore", 1);
		nb_xml_close(&t->x);
		nb_xml_open(&t->x, "memoryInfo");
		nb_xml_int(&t->x, "sizeInMiB", nb_json_int(row, "memory_mb", 0));
		nb_xml_close(&t->x);
		nb_xml_bool(&t->x, "instanceStorageSupported", 1);
		nb_xml_open(&t->x, "instanceStorageInfo");
		nb_xml_int(&t->x, "totalSizeInGB", nb_json_int(row, "disk_gb", 0));
		nb_xml_close(&t->x);
		nb_xml_open(&t->x, "networkInfo");
		nb_xml_text(&t->x, "networkPerformance", perf);
		nb_xml_int(&t->x, "maximumNetworkInterfaces", 1);
		nb_xml_close(&t->x);
		nb_xml_close(&t->x);
	}
	nb_xml_close(&t->x);
	json_decref(rows);
	return 0;
}

static int act_describe_regions(struct ec2_ctx *t)
{
	x_begin(t);
	nb_xml_open(&t->x, "regionInfo");
	nb_xml_open(&t->x, "item");
	nb_xml_text(&t->x, "regionName", t->ctl->region);
	nb_xml_text(&t->x, "regionEndpoint", "ec2.nubo.internal");
	nb_xml_text(&t->x, "optInStatus", "opt-in-not-required");
	nb_xml_close(&t->x);
	nb_xml_close(&t->x);
	return 0;
}

static int act_describe_availability_zones(struct ec2_ctx *t)
{
	const char *names[16];
	int n = param_list(t, "ZoneName", names, 16);

	if (n < 0)
		return -1;
	for (int k = 0; k < n; k++)
		if (strcmp(names[k], t->ctl->az))
			return ec2_fail(t, 400, "InvalidParameterValue",
					"The zone '%s' does not exist.", names[k]);
	x_begin(t);
	nb_xml_open(&t->x, "availabilityZoneInfo");
	nb_xml_open(&t->x, "item");
	nb_xml_text(&t->x, "zoneName", t->ctl->az);
	nb_xml_text(&t->x, "zoneState", "available");
	nb_xml_text(&t->x, "regionName", t->ctl->region);
	nb_xml_text(&t->x, "zoneId", t->ctl->az);
	nb_xml_text(&t->x, "zoneType", "availability-zone");
	nb_xml_text(&t->x, "optInStatus", "opt-in-not-required");
	nb_xml_open(&t->x, "messageSet");
	nb_xml_close(&t->x);
	nb_xml_close(&t->x);
	nb_xml_close(&t->x);
	return 0;
}

#include "api/ec2_net.inc"

/* ---- dispatch ---- */

static const struct {
	const char *name;
	int (*fn)(struct ec2_ctx *t);
	bool mutates;
	bool cacheable; /* the answer is a function of the store's rows alone */
} actions[] = {
	{"AllocateAddress", act_allocate_address, true, false},
	{"AssociateAddress", act_associate_address, true, false},
	{"AuthorizeSecurityGroupEgress", act_authorize_egress, true, false},
	{"AuthorizeSecurityGroupIngress", act_authorize_ingress, true, false},
	{"CreateImage", act_create_image, true, false},
	{"CreateKeyPair", act_create_key_pair, true, false},
	{"CreateSecurityGroup", act_create_security_group, true, false},
	{"CreateSubnet", act_create_subnet, true, false},
	{"CreateTags", act_create_tags, true, false},
	{"CreateVpc", act_create_vpc, true, false},
	{"DeleteKeyPair", act_delete_key_pair, true, false},
	{"DeleteSecurityGroup", act_delete_security_group, true, false},
	{"DeleteSubnet", act_delete_subnet, true, false},
	{"DeleteTags", act_delete_tags, true, false},
	{"DeleteVpc", act_delete_vpc, true, false},
	{"DeregisterImage", act_deregister_image, true, false},
	{"DescribeAddresses", act_describe_addresses, false, true},
	{"DescribeAvailabilityZones", act_describe_availability_zones, false, true},
	{"DescribeImageAttribute", act_describe_image_attribute, false, true},
	{"DescribeImages", act_describe_images, false, true},
	{"DescribeInstanceStatus", act_describe_instance_status, false, true},
	{"DescribeInstanceTypes", act_describe_instance_types, false, true},
	{"DescribeInstances", act_describe_instances, false, true},
	{"DescribeKeyPairs", act_describe_key_pairs, false, true},
	{"DescribeNetworkInterfaces", act_describe_network_interfaces, false, true},
	{"DescribeRegions", act_describe_regions, false, true},
	{"DescribeSecurityGroupRules", act_describe_security_group_rules, false, true},
	{"DescribeSecurityGroups", act_describe_security_groups, false, true},
	{"DescribeSubnets", act_describe_subnets, false, true},
	{"DescribeTags", act_describe_tags, false, true},
	{"DescribeVpcs", act_describe_vpcs, false, true},
	{"DisassociateAddress", act_disassociate_address, true, false},
	{"GetConsoleOutput", act_get_console_output, false, false},
	{"ImportKeyPair", act_import_key_pair, true, false},
	{"ModifyImageAttribute", act_modify_image_attribute, true, false},
	{"ModifyInstanceAttribute", act_modify_instance_attribute, true, false},
	{"ModifyInstanceMetadataOptions", act_modify_instance_metadata_options, true, false},
	{"RebootInstances", act_reboot, true, false},
	{"RegisterImage", act_register_image, true, false},
	{"ReleaseAddress", act_release_address, true, false},
	{"RevokeSecurityGroupEgress", act_revoke_egress, true, false},
	{"RevokeSecurityGroupIngress", act_revoke_ingress, true, false},
	{"RunInstances", act_run_instances, true, false},
	{"StartInstances", act_start, true, false},
	{"StopInstances", act_stop, true, false},
	{"TerminateInstances", act_terminate, true, false},
};

static enum MHD_Result reply_error(struct MHD_Connection *c, struct ec2_ctx *t)
{
	struct nb_buf b;
	enum MHD_Result ret;

	nb_buf_init(&b, 64u << 10);
	nb_xml_ec2_error(&b, t->code, t->message, t->request_id);
	ret = nb_http_text(c, t->status, "text/xml;charset=UTF-8", b.data ? b.data : "", b.len);
	nb_buf_free(&b);
	return ret;
}

enum MHD_Result nb_ec2_handle(struct nb_ec2 *e, struct MHD_Connection *c, const char *method,
			      const char *url, struct nb_http_req *rq)
{
	struct ec2_ctx t = {0};
	char err[512] = "", qerr[256] = "", key[65] = "";
	const char *version;
	uint64_t epoch = 0;
	int r, idx = -1, building = -1;
	enum MHD_Result ret;

	t.e = e;
	t.ctl = e->ctl;
	nb_random_hex(t.request_id, 8);
	snprintf(t.request_id + 8, sizeof(t.request_id) - 8, "-%04x-4%03x-8%03x-nubo",
		 (unsigned)(nb_now_ms() & 0xffff), (unsigned)(nb_wall_ms() & 0xfff),
		 (unsigned)(nb_now_ms() >> 16 & 0xfff));
	nb_buf_init(&t.out, EC2_MAX_RESPONSE);
	if (rq->too_large) {
		ec2_fail(&t, 400, "InvalidParameterValue", "The request body is too large");
		goto done;
	}
	r = nb_ec2_authenticate(e, c, method, url, rq->body.data, rq->body.len, "ec2", &t.who,
				err, sizeof(err));
	if (r < 0) {
		switch (-r) {
		case NB_E_AUTH_MISSING:
			ec2_fail(&t, 401, "AuthFailure", "%s",
				 *err ? err : "AWS was not able to validate the provided access credentials");
			break;
		case NB_E_AUTH_INCOMPLETE:
			ec2_fail(&t, 400, "IncompleteSignature", "%s", err);
			break;
		case NB_E_SIG_MISMATCH:
			ec2_fail(&t, 403, "SignatureDoesNotMatch", "%s", err);
			break;
		case NB_E_EXPIRED:
			ec2_fail(&t, 400, "RequestExpired", "%s", err);
			break;
		case NB_E_BAD_KEY:
			ec2_fail(&t, 401, "AuthFailure",
				 "AWS was not able to validate the provided access credentials");
			break;
		default:
			ec2_fail(&t, 500, "InternalError", "%s", err);
		}
		goto done;
	}
	t.account_id = nb_json_str_or(t.who, "account_id");
	r = nb_query_parse(rq->body.data ? rq->body.data : "", rq->body.len, &t.q, qerr,
			   sizeof(qerr));
	if (r == 0) {
		struct nb_buf qs;
		struct query_collect qc = {&qs};
		nb_buf_init(&qs, 256u << 10);
		MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_query, &qc);
		if (qs.len)
			r = nb_query_merge(t.q, qs.data, qs.len, qerr, sizeof(qerr));
		nb_buf_free(&qs);
	}
	if (r < 0) {
		ec2_fail(&t, 400, "InvalidParameterValue", "%s", qerr);
		goto done;
	}
	t.action = nb_query_get(t.q, "Action");
	if (!t.action) {
		ec2_fail(&t, 400, "MissingAction", "The request must contain the parameter Action");
		goto done;
	}
	version = nb_query_get(t.q, "Version");
	if (!version) {
		ec2_fail(&t, 400, "MissingParameter", "The request must contain the parameter Version");
		goto done;
	}
	for (size_t i = 0; i < NB_ARRAY_SIZE(actions); i++)
		if (!strcmp(actions[i].name, t.action))
			idx = (int)i;
	if (idx < 0) {
		ec2_fail(&t, 400, "InvalidAction", "The action %s is not valid for this web service.",
			 t.action);
		goto done;
	}
	if (actions[idx].mutates && !strcmp(nb_json_str_or(t.who, "role"), "read-only")) {
		ec2_fail(&t, 403, "UnauthorizedOperation",
			 "You are not authorized to perform this operation.");
		goto done;
	}
	if (!rate_allow(e, t.account_id, !actions[idx].mutates)) {
		ec2_fail(&t, 503, "RequestLimitExceeded", "Request limit exceeded.");
		goto done;
	}
	/* a changing action checks its parameters and ids, then stops short
	 * (dry_run_stop); a Describe changes nothing and is allowed: done */
	t.dry_run = param_bool(&t, "DryRun");
	if (t.dry_run && !actions[idx].mutates) {
		ec2_fail(&t, 412, "DryRunOperation",
			 "Request would have succeeded, but DryRun flag is set.");
		goto done;
	}
	if (actions[idx].cacheable) {
		struct nb_ec2_shared *hit;
		epoch = nb_store_epoch(e->ctl->st);
		t.epoch = epoch;
		cache_key(&t, key);
		hit = cache_get(e, key, epoch, &building);
		if (hit) {
			/* the same bytes as before, but for this request's id */
			nb_buf_free(&t.out);
			nb_query_free(t.q);
			json_decref(t.who);
			json_decref(t.net);
			return reply_shared(c, hit);
		}
	}
	actions[idx].fn(&t);
	if (!t.status && nb_xml_end(&t.x) < 0)
		ec2_fail(&t, 500, "InternalError", "the response is too large");
	if (!t.status && actions[idx].cacheable) {
		struct nb_ec2_shared *kept = cache_put(e, key, epoch, t.out.data, t.out.len);
		cache_build_done(e, building);
		if (kept) {
			nb_buf_free(&t.out);
			nb_query_free(t.q);
			json_decref(t.who);
			json_decref(t.net);
			return reply_shared(c, kept);
		}
		building = -1;
	}
	cache_build_done(e, building);
done:
	if (t.status) {
		if (t.status >= 500)
			nb_warn("EC2 %s: %s: %s", t.action ? t.action : "-", t.code, t.message);
		ret = reply_error(c, &t);
	} else {
		ret = nb_http_text(c, 200, "text/xml;charset=UTF-8", t.out.data ? t.out.data : "",
				   t.out.len);
	}
	nb_buf_free(&t.out);
	nb_query_free(t.q);
	json_decref(t.who);
	json_decref(t.net);
	return ret;
}
