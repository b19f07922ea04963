/* Tenant networks on this host (docs/network.md): from the desired state's
 * `vpcs`, `security_groups` and each instance's `nics`, the VPC namespaces
 * (made when a VPC's first instance arrives, removed vpc_keep seconds after its last goes),
 * their DHCP leases, rules, metadata listeners, and the host table with the
 * elastic IPs' routes. Everything is derived again from the desired state
 * and what is on the host, so an agent restart rebuilds its view without
 * recreating anything; each piece is rewritten only when what it would be
 * changed (a hash of it). Called from the main loop with a->lock held. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent.h"
#include "common/buf.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "net/net.h"

#define MAX_VPCS 256
#define METADATA_ADDR "169.254.169.254"

struct vpc_state {
	char id[32];
	char ns[NB_NET_NS_NAME_MAX];
	uint32_t vni;
	char net_sig[65];   /* subnets the namespace was made for */
	char rules_sig[65]; /* the nft script last applied */
	char dhcp_sig[65];
	bool imds;          /* a metadata listener was handed over */
	int64_t idle_since; /* monotonic ms its last instance here went; 0: in use */
};

struct nb_vpcs {
	struct vpc_state v[MAX_VPCS];
	int n;
	char host_sig[65];
};

static struct nb_vpcs *vpcs_of(struct nb_agent *a)
{
	if (!a->vpcs)
		a->vpcs = calloc(1, sizeof(*a->vpcs));
	return a->vpcs;
}

json_t *nb_vpc_nic0(const json_t *desired)
{
	json_t *nics = json_object_get(desired, "nics"), *n;
	size_t i;

	json_array_foreach(nics, i, n)
		if (nb_json_int(n, "device_index", 0) == 0 && nb_json_str(n, "vpc_id"))
			return n;
	return NULL;
}

static bool vm_wants_net(const struct nb_vm *vm)
{
	const char *want = vm->desired ? nb_json_str_or(vm->desired, "desired_state") : "terminated";

	return vm->desired && strcmp(want, "terminated") && nb_vpc_nic0(vm->desired);
}

static json_t *vpc_desc(struct nb_agent *a, const char *vpc_id)
{
	return json_object_get(json_object_get(a->net_doc, "vpcs"), vpc_id);
}

static void dir_of(struct nb_agent *a, const char *ns, char *out, size_t outsz)
{
	snprintf(out, outsz, "%s/net/%s", a->cfg.state_dir, ns);
}

int nb_vpc_ns_of(struct nb_agent *a, const char *vpc_id, char ns[NB_NET_NS_NAME_MAX])
{
	json_t *v = vpc_desc(a, vpc_id);
	int64_t vni = nb_json_int(v, "vni", 0);

	if (!v || vni < 1 || vni > NB_NET_VNI_MAX)
		return -ENOENT;
	nb_net_vpc_ns_name(a->cfg.state_dir, (uint32_t)vni, ns);
	return 0;
}

static struct vpc_state *find(struct nb_vpcs *s, const char *id)
{
	for (int i = 0; i < s->n; i++)
		if (!strcmp(s->v[i].id, id))
			return &s->v[i];
	return NULL;
}

/* The namespace, bridge, dnsmasq of a VPC, made or completed. */
static struct vpc_state *ensure(struct nb_agent *a, const char *vpc_id, char *err, size_t errsz)
{
	struct nb_vpcs *s = vpcs_of(a);
	json_t *v = vpc_desc(a, vpc_id), *subs = json_object_get(v, "subnets"), *sub;
	struct nb_vpc_subnet subnets[NB_NET_MAX_RANGES];
	struct vpc_state *st;
	char dir[PATH_MAX], sig[65];
	struct nb_buf b;
	size_t i, n = 0;
	int r;

	if (!s) {
		snprintf(err, errsz, "out of memory");
		return NULL;
	}
	if (!v || nb_json_int(v, "vni", 0) < 1) {
		snprintf(err, errsz, "VPC %s is not in the desired state", vpc_id);
		return NULL;
	}
	nb_buf_init(&b, 1 << 20);
	json_array_foreach(subs, i, sub)
	{
		if (n == NB_NET_MAX_RANGES)
			break;
		subnets[n].cidr = nb_json_str_or(sub, "cidr");
		subnets[n].gateway = nb_json_str(sub, "gateway");
		nb_buf_printf(&b, "%s,", subnets[n].cidr);
		n++;
	}
	nb_buf_printf(&b, "%lld", (long long)nb_json_int(v, "vni", 0));
	nb_sha256_hex(b.data ? b.data : "", b.len, sig);
	nb_buf_free(&b);
	st = find(s, vpc_id);
	if (st && !strcmp(st->net_sig, sig) && nb_net_ns_exists(st->ns))
		return st;
	if (!st) {
		if (s->n == MAX_VPCS) {
			snprintf(err, errsz, "more than %d VPCs on this host", MAX_VPCS);
			return NULL;
		}
		st = &s->v[s->n++];
		memset(st, 0, sizeof(*st));
		nb_strlcpy(st->id, vpc_id, sizeof(st->id));
	}
	st->vni = (uint32_t)nb_json_int(v, "vni", 0);
	nb_net_vpc_ns_name(a->cfg.state_dir, st->vni, st->ns);
	dir_of(a, st->ns, dir, sizeof(dir));
	struct nb_vpc vpc = {st->ns, st->vni, dir, subnets, n};
	r = nb_net_vpc_ensure(&vpc, err, errsz);
	if (r < 0)
		return NULL;
	nb_strlcpy(st->net_sig, sig, sizeof(st->net_sig));
	st->rules_sig[0] = st->dhcp_sig[0] = '\0';
	nb_info("network of %s (vni %u) ready in namespace %s", vpc_id, st->vni, st->ns);
	if (!st->imds) {
		int fd;
		r = nb_net_vpc_listen(st->ns, METADATA_ADDR, 80, &fd);
		if (r == 0)
			r = nb_agent_imds_listen(a, vpc_id, fd);
		if (r < 0)
			nb_warn("%s: no metadata service: %s", vpc_id, strerror(-r));
		else
			st->imds = true;
	}
	return st;
}

static void sync_vpc(struct nb_agent *a, struct vpc_state *st);

int nb_vpc_prepare(struct nb_agent *a, const char *vpc_id, const char *tap, uint64_t rate_mbps,
                   char ns[NB_NET_NS_NAME_MAX], int *tap_fd, char *err, size_t errsz)
{
	struct vpc_state *st = ensure(a, vpc_id, err, errsz);
	int r;

	*tap_fd = -1;
	if (!st)
		return -EIO;
	nb_strlcpy(ns, st->ns, NB_NET_NS_NAME_MAX);
	/* the tap is made first, down and on no bridge (a netdev registered
	 * just after the rules' commit would wait out that commit's socket
	 * close: net.h); the new NIC's anti-spoofing and groups are then put
	 * in force, and only then is the tap attached and up */
	r = nb_net_vpc_tap_open(st->ns, tap, tap_fd, err, errsz);
	if (r < 0)
		return r;
	sync_vpc(a, st);
	r = nb_net_vpc_tap_attach(st->ns, tap, rate_mbps, err, errsz);
	if (r < 0) {
		close(*tap_fd);
		*tap_fd = -1;
	}
	return r;
}

/* Rules of direction dir ("ingress"/"egress") of the NIC's groups, merged
 * into out (pointers into the desired document). */
static size_t merge_rules(struct nb_agent *a, json_t *nic, const char *dir, struct nb_sg_rule *out,
                          size_t max, const char ***cidr_store, size_t *ncidr_left)
{
	json_t *groups = json_object_get(a->net_doc, "security_groups");
	json_t *ids = json_object_get(nic, "security_groups"), *gid;
	size_t i, n = 0;

	json_array_foreach(ids, i, gid)
	{
		json_t *g = json_object_get(groups, json_string_value(gid)), *rule;
		size_t k;
		json_array_foreach(json_object_get(g, dir), k, rule)
		{
			json_t *cidrs = json_object_get(rule, "cidrs"), *c;
			size_t j, nc = json_array_size(cidrs);
			if (n == max || nc > *ncidr_left)
				return n;
			struct nb_sg_rule *r = &out[n++];
			r->protocol = nb_json_str_or(rule, "protocol");
			if (!*r->protocol)
				r->protocol = "-1";
			r->from_port = (int)nb_json_int(rule, "from_port", -1);
			r->to_port = (int)nb_json_int(rule, "to_port", r->from_port);
			r->cidrs = *cidr_store;
			r->ncidrs = 0;
			json_array_foreach(cidrs, j, c)
				if (json_is_string(c))
					(*cidr_store)[r->ncidrs++] = json_string_value(c);
			*cidr_store += r->ncidrs;
			*ncidr_left -= r->ncidrs;
		}
	}
	return n;
}

#define RULES_MAX 4096
#define CIDRS_MAX 65536

/* The VPC's ports, rules and leases, each applied when it changed. */
static void sync_vpc(struct nb_agent *a, struct vpc_state *st)
{
	struct nb_vpc_port *ports = calloc(NB_AGENT_MAX_VMS, sizeof(*ports));
	struct nb_sg_rule *rules = calloc(RULES_MAX, sizeof(*rules));
	const char **cidrs = calloc(CIDRS_MAX, sizeof(*cidrs)), **cnext = cidrs;
	struct nb_dhcp_host hosts[NB_AGENT_MAX_VMS];
	char taps[NB_AGENT_MAX_VMS][16], sig[65], err[512] = "", dir[PATH_MAX];
	size_t n = 0, nrules = 0, ncidr_left = CIDRS_MAX;
	struct nb_buf b;

	if (!ports || !rules || !cidrs)
		goto out;
	for (int i = 0; i < a->nvms; i++) {
		struct nb_vm *vm = a->vms[i];
		json_t *nic;
		if (!vm_wants_net(vm))
			continue;
		nic = nb_vpc_nic0(vm->desired);
		if (strcmp(nb_json_str_or(nic, "vpc_id"), st->id))
			continue;
		struct nb_vpc_port *p = &ports[n];
		nb_net_tap_name(vm->id, taps[n]);
		p->tap = taps[n];
		p->mac = nb_json_str_or(nic, "mac");
		p->ip = nb_json_str_or(nic, "ip");
		p->public_ip = nb_json_str(nic, "public_ip");
		p->ingress = rules + nrules;
		p->ningress = merge_rules(a, nic, "ingress", rules + nrules, RULES_MAX - nrules,
		                          &cnext, &ncidr_left);
		nrules += p->ningress;
		p->egress = rules + nrules;
		p->negress = merge_rules(a, nic, "egress", rules + nrules, RULES_MAX - nrules, &cnext,
		                         &ncidr_left);
		nrules += p->negress;
		hosts[n] = (struct nb_dhcp_host){p->mac, p->ip, NULL};
		n++;
	}
	nb_buf_init(&b, 64u << 20);
	if (nb_net_vpc_rules_script(ports, n, &b) < 0) {
		nb_warn("%s: the desired rules are not valid; the old ones stay", st->id);
	} else {
		nb_sha256_hex(b.data ? b.data : "", b.len, sig);
		if (strcmp(sig, st->rules_sig)) {
			int64_t t0 = nb_now_ms();
			if (nb_net_vpc_rules(st->ns, ports, n, err, sizeof(err)) == 0) {
				memcpy(st->rules_sig, sig, sizeof(sig));
				nb_debug("%s: rules for %zu NIC(s), %zu rule(s) applied in %lld ms",
				         st->id, n, nrules, (long long)(nb_now_ms() - t0));
			} else {
				nb_warn("%s: rules: %s", st->id, err);
			}
		}
	}
	nb_buf_reset(&b);
	for (size_t i = 0; i < n; i++)
		nb_buf_printf(&b, "%s,%s\n", hosts[i].mac, hosts[i].ip);
	nb_sha256_hex(b.data ? b.data : "", b.len, sig);
	nb_buf_free(&b);
	if (strcmp(sig, st->dhcp_sig)) {
		json_t *v = vpc_desc(a, st->id), *sub;
		struct nb_vpc_subnet subnets[NB_NET_MAX_RANGES];
		size_t ns = 0, i;
		json_array_foreach(json_object_get(v, "subnets"), i, sub)
			if (ns < NB_NET_MAX_RANGES)
				subnets[ns++] = (struct nb_vpc_subnet){nb_json_str_or(sub, "cidr"), NULL};
		dir_of(a, st->ns, dir, sizeof(dir));
		struct nb_vpc vpc = {st->ns, st->vni, dir, subnets, ns};
		int r = nb_net_vpc_dhcp(&vpc, hosts, n);
		if (r == 0)
			memcpy(st->dhcp_sig, sig, sizeof(sig));
		else
			nb_warn("%s: DHCP leases: %s", st->id, strerror(-r));
	}
out:
	free(ports);
	free(rules);
	free(cidrs);
}

static void sync_host(struct nb_agent *a)
{
	struct nb_vpcs *s = a->vpcs;
	struct nb_host_eip eips[NB_AGENT_MAX_VMS];
	size_t n = 0;
	struct nb_buf b;
	char sig[65], err[512] = "";

	for (int i = 0; i < a->nvms; i++) {
		json_t *nic;
		struct vpc_state *st;
		if (!vm_wants_net(a->vms[i]))
			continue;
		nic = nb_vpc_nic0(a->vms[i]->desired);
		st = find(s, nb_json_str_or(nic, "vpc_id"));
		if (st && nb_json_str(nic, "public_ip"))
			eips[n++] = (struct nb_host_eip){nb_json_str(nic, "public_ip"), st->vni};
	}
	if (s->n == 0 && n == 0 && !s->host_sig[0])
		return; /* no tenant network here: nothing of ours in the host namespace */
	nb_buf_init(&b, 1 << 20);
	for (size_t i = 0; i < n; i++)
		nb_buf_printf(&b, "%s,%u\n", eips[i].public_ip, eips[i].vni);
	nb_buf_printf(&b, "vpcs=%d", s->n);
	nb_sha256_hex(b.data ? b.data : "", b.len, sig);
	nb_buf_free(&b);
	if (!strcmp(sig, s->host_sig))
		return;
	if (nb_net_host_sync(eips, n, err, sizeof(err)) == 0)
		memcpy(s->host_sig, sig, sizeof(sig));
	else
		nb_warn("host network: %s", err);
}

void nb_vpc_sync(struct nb_agent *a)
{
	struct nb_vpcs *s;
	char prefix[NB_NET_NS_NAME_MAX], names[MAX_VPCS][NB_NET_NS_NAME_MAX], err[512];
	int n;

	if (!a->cfg.network || !a->have_desired || !(s = vpcs_of(a)))
		return;
	/* VPCs in use: made or completed (this is also how a restarted agent
	 * finds its namespaces again), then their rules and leases. */
	for (int i = 0; i < a->nvms; i++) {
		struct nb_vm *vm = a->vms[i];
		const char *vpc_id;
		struct vpc_state *st;
		if (!vm_wants_net(vm))
			continue;
		vpc_id = nb_json_str_or(nb_vpc_nic0(vm->desired), "vpc_id");
		err[0] = '\0';
		st = ensure(a, vpc_id, err, sizeof(err)); /* cheap when nothing changed */
		if (!st) {
			nb_warn("%s: network: %s", vpc_id, err);
			continue;
		}
		if (!vm->netns[0])
			nb_strlcpy(vm->netns, st->ns, sizeof(vm->netns));
	}
	/* VPCs no instance here uses any more go, namespace and all. */
	for (int i = 0; i < s->n;) {
		bool used = false;
		for (int k = 0; k < a->nvms && !used; k++)
			used = vm_wants_net(a->vms[k]) &&
			       !strcmp(nb_json_str_or(nb_vpc_nic0(a->vms[k]->desired), "vpc_id"),
			               s->v[i].id);
		if (used) {
			s->v[i].idle_since = 0;
			sync_vpc(a, &s->v[i]);
			i++;
			continue;
		}
		/* Kept a while (vpc_keep) so that the next launch into it, the
		 * common case of terminate-and-relaunch, finds its namespace,
		 * dnsmasq and metadata listener ready instead of paying ~100 ms to
		 * make them again. Its rules and leases are rewritten when it is
		 * used again. */
		if (!s->v[i].idle_since)
			s->v[i].idle_since = nb_now_ms();
		if (nb_now_ms() - s->v[i].idle_since < (int64_t)a->cfg.vpc_keep_s * 1000) {
			i++;
			continue;
		}
		char dir[PATH_MAX];
		if (s->v[i].imds)
			nb_agent_imds_unlisten(a, s->v[i].id);
		dir_of(a, s->v[i].ns, dir, sizeof(dir));
		nb_net_vpc_delete(s->v[i].ns, dir);
		nb_info("network of %s removed (no instance left here)", s->v[i].id);
		s->v[i] = s->v[--s->n];
	}
	/* and namespaces of ours that no VPC in use names (an earlier run's) */
	nb_net_vpc_ns_prefix(a->cfg.state_dir, prefix);
	n = nb_net_vpc_list(prefix, names, MAX_VPCS);
	for (int i = 0; i < n; i++) {
		bool known = false;
		for (int k = 0; k < s->n && !known; k++)
			known = !strcmp(s->v[k].ns, names[i]);
		if (!known) {
			char dir[PATH_MAX];
			dir_of(a, names[i], dir, sizeof(dir));
			nb_net_vpc_delete(names[i], dir);
			nb_info("removed the stale network namespace %s", names[i]);
		}
	}
	sync_host(a);
}

void nb_vpc_teardown(struct nb_agent *a)
{
	char prefix[NB_NET_NS_NAME_MAX], names[MAX_VPCS][NB_NET_NS_NAME_MAX], dir[PATH_MAX];
	int n;

	nb_net_vpc_ns_prefix(a->cfg.state_dir, prefix);
	n = nb_net_vpc_list(prefix, names, MAX_VPCS);
	for (int i = 0; i < n; i++) {
		dir_of(a, names[i], dir, sizeof(dir));
		nb_net_vpc_delete(names[i], dir);
	}
	nb_net_host_teardown();
}
