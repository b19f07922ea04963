/* Tenant networks in the controller (core/vpc.h, docs/network.md). */
#include "core/vpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "core/core.h"
#include "store/net.h"

static int nfail(int r, char *err, size_t errsz, const char **code, const char *c,
		 const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int nfail(int r, char *err, size_t errsz, const char **code, const char *c,
		 const char *fmt, ...)
{
	va_list ap;

	if (err && errsz) {
		va_start(ap, fmt);
		vsnprintf(err, errsz, fmt, ap);
		va_end(ap);
	}
	if (code)
		*code = c;
	return r;
}

#define FAIL(r, c, ...) nfail((r), err, errsz, code, (c), __VA_ARGS__)

/* ---- addresses ---- */

int nb_core_ip_parse(const char *s, uint32_t *ip)
{
	struct in_addr a;

	if (!s || strlen(s) > 15 || inet_pton(AF_INET, s, &a) != 1)
		return -EINVAL;
	*ip = ntohl(a.s_addr);
	return 0;
}

void nb_core_ip_str(uint32_t ip, char out[16])
{
	snprintf(out, 16, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
}

static uint32_t prefix_mask(int prefix)
{
	return prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
}

int nb_core_cidr_parse(const char *s, uint32_t *net, int *prefix)
{
	char buf[32], *slash, *end;
	long p;

	if (!s || strlen(s) >= sizeof(buf))
		return -EINVAL;
	nb_strlcpy(buf, s, sizeof(buf));
	slash = strchr(buf, '/');
	if (!slash || !slash[1])
		return -EINVAL;
	*slash = '\0';
	p = strtol(slash + 1, &end, 10);
	if (*end || p < 0 || p > 32 || (slash[1] == '0' && slash[2]))
		return -EINVAL;
	if (nb_core_ip_parse(buf, net) < 0)
		return -EINVAL;
	if (*net & ~prefix_mask((int)p))
		return -EINVAL;
	*prefix = (int)p;
	return 0;
}

void nb_core_eni_mac(const char *eni_id, char out[18])
{
	char hex[65];

	nb_sha256_hex(eni_id, strlen(eni_id), hex);
	snprintf(out, 18, "52:54:00:%.2s:%.2s:%.2s", hex, hex + 2, hex + 4);
}

static void dashed(const char *ip, char *out, size_t outsz)
{
	nb_strlcpy(out, ip, outsz);
	for (char *p = out; *p; p++)
		if (*p == '.')
			*p = '-';
}

void nb_core_private_dns(const char *region, const char *ip, char *out, size_t outsz)
{
	char d[32];

	dashed(ip, d, sizeof(d));
	snprintf(out, outsz, "ip-%s.%s.compute.internal", d, region);
}

void nb_core_public_dns(const char *region, const char *ip, char *out, size_t outsz)
{
	char d[32];

	dashed(ip, d, sizeof(d));
	snprintf(out, outsz, "ec2-%s.%s.compute.nubo", d, region);
}

static bool overlaps(uint32_t a, int ap, uint32_t b, int bp)
{
	int p = ap < bp ? ap : bp;

	return (a & prefix_mask(p)) == (b & prefix_mask(p));
}

/* ---- bumps ---- */

void nb_core_net_changed(struct nb_ctl *c, const char *vpc_id)
{
	json_t *hosts = NULL, *h;
	size_t i;

	if (!vpc_id || !*vpc_id || nb_store_vpc_hosts(c->st, vpc_id, &hosts) < 0)
		return;
	json_array_foreach(hosts, i, h) nb_core_host_changed(c, nb_json_str_or(h, "host_id"));
	json_decref(hosts);
}

/* ---- the default VPC ---- */

static int group_insert_defaults(struct nb_ctl *c, const char *group_id, bool is_default)
{
	char rid[32];
	int r = 0;

	if (is_default) {
		nb_id_new("sgr", rid, sizeof(rid));
		r = nb_store_rule_insert(c->st, rid, group_id, 0, "-1", -1, -1, NULL, group_id, "");
	}
	if (r == 0) {
		nb_id_new("sgr", rid, sizeof(rid));
		r = nb_store_rule_insert(c->st, rid, group_id, 1, "-1", -1, -1, "0.0.0.0/0", NULL,
					 "");
	}
	return r;
}

/* Inside a transaction: a VPC with its default group. */
static int vpc_make(struct nb_ctl *c, const char *account_id, const char *cidr, bool is_default,
		    char id[32])
{
	int64_t vni;
	char gid[32];
	int r = nb_store_vni_next(c->st, &vni);

	if (r < 0)
		return r;
	nb_id_new("vpc", id, 32);
	r = nb_store_vpc_insert(c->st, id, account_id, cidr, vni, is_default);
	nb_id_new("sg", gid, sizeof(gid));
	if (r == 0)
		r = nb_store_sg_insert(c->st, gid, account_id, id, "default",
				       "default VPC security group");
	if (r == 0)
		r = group_insert_defaults(c, gid, true);
	return r;
}

int nb_core_default_vpc(struct nb_ctl *c, const char *account_id, json_t **vpc, char *err,
			size_t errsz)
{
	char id[32], sid[32];
	uint32_t net;
	int prefix, r;

	if (nb_store_vpc_default(c->st, account_id, vpc) == 0)
		return 0;
	r = nb_store_begin(c->st);
	if (r < 0)
		return r;
	if (nb_store_vpc_default(c->st, account_id, vpc) == 0) {
		nb_store_rollback(c->st);
		return 0;
	}
	r = vpc_make(c, account_id, NB_NET_DEFAULT_VPC_CIDR, true, id);
	nb_core_cidr_parse(NB_NET_DEFAULT_SUBNET_CIDR, &net, &prefix);
	nb_id_new("subnet", sid, sizeof(sid));
	if (r == 0)
		r = nb_store_subnet_insert(c->st, sid, account_id, id, NB_NET_DEFAULT_SUBNET_CIDR, net,
					   prefix, c->az, 1);
	if (r < 0) {
		nb_store_rollback(c->st);
		if (err)
			snprintf(err, errsz, "making the default VPC of %s failed: %s", account_id,
				 nb_err_code(r));
		return r;
	}
	r = nb_store_commit(c->st);
	if (r < 0)
		return r;
	return nb_store_vpc_default(c->st, account_id, vpc);
}

static int adopt_instances(struct nb_ctl *c, char *err, size_t errsz);

int nb_core_net_init(struct nb_ctl *c, char *err, size_t errsz)
{
	uint32_t net;
	int prefix, r;
	json_t *accts = NULL, *a, *vpc;
	size_t i;

	if (nb_core_cidr_parse(c->eip_pool, &net, &prefix) < 0 || prefix < 8 || prefix > 30) {
		snprintf(err, errsz, "eip_pool '%s' must be an IPv4 CIDR from /8 to /30",
			 c->eip_pool);
		return -NB_E_INVALID;
	}
	r = nb_store_accounts_without_vpc(c->st, &accts);
	if (r < 0)
		return r;
	json_array_foreach(accts, i, a)
	{
		vpc = NULL;
		r = nb_core_default_vpc(c, nb_json_str_or(a, "id"), &vpc, err, errsz);
		json_decref(vpc);
		if (r < 0)
			break;
	}
	json_decref(accts);
	return r < 0 ? r : adopt_instances(c, err, errsz);
}

/* ---- VPCs ---- */

static int vpc_own(struct nb_ctl *c, const char *account_id, const char *id, json_t **out,
		   char *err, size_t errsz, const char **code)
{
	if (!id || !nb_id_valid("vpc", id) || nb_store_vpc_get(c->st, account_id, id, out) < 0)
		return FAIL(-NB_E_NOT_FOUND, "InvalidVpcID.NotFound",
			    "The vpc ID '%s' does not exist", id ? id : "");
	return 0;
}

int nb_core_vpc_create(struct nb_ctl *c, const char *account_id, const char *cidr, json_t **out,
		       char *err, size_t errsz, const char **code)
{
	uint32_t net;
	int prefix, r;
	json_t *list = NULL;
	char id[32];

	if (!cidr || !*cidr)
		return FAIL(-NB_E_MISSING, "MissingParameter",
			    "The request must contain the parameter cidrBlock");
	if (nb_core_cidr_parse(cidr, &net, &prefix) < 0)
		return FAIL(-NB_E_INVALID, "InvalidParameterValue",
			    "Value (%s) for parameter cidrBlock is invalid. This is not a valid "
			    "CIDR block.",
			    cidr);
	if (prefix < 16 || prefix > 28)
		return FAIL(-NB_E_INVALID, "InvalidVpc.Range",
			    "The CIDR '%s' is invalid: a VPC's block is from /16 to /28.", cidr);
	r = nb_store_begin(c->st);
	if (r < 0)
		return r;
	r = nb_store_vpcs_list(c->st, account_id, &list);
	if (r == 0 && json_array_size(list) >= NB_NET_MAX_VPCS)
		r = FAIL(-NB_E_LIMIT, "VpcLimitExceeded",
			 "The maximum number of VPCs (%d) has been reached.", NB_NET_MAX_VPCS);
	json_decref(list);
	if (r == 0) {
		r = vpc_make(c, account_id, cidr, false, id);
		if (r == -NB_E_CAPACITY)
			FAIL(r, "VpcLimitExceeded", "No VPC network identifier (VNI) is left.");
	}
	if (r < 0) {
		nb_store_rollback(c->st);
		return r;
	}
	r = nb_store_commit(c->st);
	if (r < 0)
		return r;
	return nb_store_vpc_get(c->st, account_id, id, out);
}

int nb_core_vpc_delete(struct nb_ctl *c, const char *account_id, const char *id, char *err,
		       size_t errsz, const char **code)
{
	json_t *vpc = NULL, *deps = NULL;
	int r = nb_store_begin(c->st);

	if (r < 0)
		return r;
	r = vpc_own(c, account_id, id, &vpc, err, errsz, code);
	if (r == 0)
		r = nb_store_vpc_deps(c->st, id, &deps);
	if (r == 0 && (nb_json_int(deps, "subnets", 0) || nb_json_int(deps, "groups", 0) ||
		       nb_json_int(deps, "interfaces", 0)))
		r = FAIL(-NB_E_CONFLICT, "DependencyViolation",
			 "The vpc '%s' has dependencies and cannot be deleted (%lld subnets, "
			 "%lld security groups, %lld network interfaces).",
			 id, (long long)nb_json_int(deps, "subnets", 0),
			 (long long)nb_json_int(deps, "groups", 0),
			 (long long)nb_json_int(deps, "interfaces", 0));
	if (r == 0)
		r = nb_store_vpc_delete(c->st, id);
	json_decref(vpc);
	json_decref(deps);
	if (r < 0) {
		nb_store_rollback(c->st);
		return r;
	}
	return nb_store_commit(c->st);
}

int nb_core_vpcs(struct nb_ctl *c, const char *account_id, json_t **out)
{
	json_t *def = NULL;

	nb_core_default_vpc(c, account_id, &def, NULL, 0);
	json_decref(def);
	return nb_store_vpcs_list(c->st, account_id, out);
}

/* ---- subnets ---- */

static int64_t subnet_first(const json_t *s)
{
	return nb_json_int(s, "net", 0) + 4;
}

static int64_t subnet_last(const json_t *s)
{
	int prefix = (int)nb_json_int(s, "prefix", 32);

	return nb_json_int(s, "net", 0) + ((int64_t)1 << (32 - prefix)) - 2;
}

static void subnet_view(json_t *s)
{
	int64_t size = subnet_last(s) - subnet_first(s) + 1;
	char gw[16];

	json_object_set_new(s, "available",
			    json_integer(size - nb_json_int(s, "used", 0) > 0
						 ? size - nb_json_int(s, "used", 0)
						 : 0));
	nb_core_ip_str((uint32_t)nb_json_int(s, "net", 0) + 1, gw);
	json_object_set_new(s, "gateway", json_string(gw));
}

static int subnet_own(struct nb_ctl *c, const char *account_id, const char *id, json_t **out,
		      char *err, size_t errsz, const char **code)
{
	if (!id || !nb_id_valid("subnet", id) ||
	    nb_store_subnet_get(c->st, account_id, id, out) < 0)
		return FAIL(-NB_E_NOT_FOUND, "InvalidSubnetID.NotFound",
			    "The subnet ID '%s' does not exist", id ? id : "");
	return 0;
}

int nb_core_subnet_create(struct nb_ctl *c, const char *account_id, const char *vpc_id,
			  const char *cidr, const char *az, json_t **out, char *err, size_t errsz,
			  const char **code)
{
	uint32_t net, vnet;
	int prefix, vprefix, r;
	json_t *vpc = NULL, *sibs = NULL, *s;
	char id[32];
	size_t i;

	if (!vpc_id || !*vpc_id)
		return FAIL(-NB_E_MISSING, "MissingParameter",
			    "The request must contain the parameter VpcId");
	if (!cidr || !*cidr)
		return FAIL(-NB_E_MISSING, "MissingParameter",
			    "The request must contain the parameter CidrBlock");
	if (nb_core_cidr_parse(cidr, &net, &prefix) < 0)
		return FAIL(-NB_E_INVALID, "InvalidParameterValue",
			    "Value (%s) for parameter cidrBlock is invalid. This is not a valid "
			    "CIDR block.",
			    cidr);
	if (az && *az && strcmp(az, c->az))
		return FAIL(-NB_E_INVALID, "InvalidParameterValue",
			    "Value (%s) for parameter availabilityZone is invalid. Subnets can "
			    "currently only be created in the following availability zones: %s.",
			    az, c->az);
	r = nb_store_begin(c->st);
	if (r < 0)
		return r;
	r = vpc_own(c, account_id, vpc_id, &vpc, err, errsz, code);
	if (r < 0)
		goto fail;
	nb_core_cidr_parse(nb_json_str_or(vpc, "cidr"), &vnet, &vprefix);
	if (prefix < 16 || prefix > 28 || prefix < vprefix || !overlaps(net, prefix, vnet, vprefix)) {
		r = FAIL(-NB_E_INVALID, "InvalidSubnet.Range", "The CIDR '%s' is invalid%s.", cidr,
			 prefix < 16 || prefix > 28 ? ": a subnet is from /16 to /28"
						    : " for the VPC's block");
		goto fail;
	}
	r = nb_store_subnets_of_vpc(c->st, vpc_id, &sibs);
	if (r < 0)
		goto fail;
	if (json_array_size(sibs) >= NB_NET_MAX_SUBNETS) {
		r = FAIL(-NB_E_LIMIT, "SubnetLimitExceeded",
			 "The maximum number of subnets (%d) of the VPC has been reached.",
			 NB_NET_MAX_SUBNETS);
		goto fail;
	}
	json_array_foreach(sibs, i, s)
	{
		if (overlaps(net, prefix, (uint32_t)nb_json_int(s, "net", 0),
			     (int)nb_json_int(s, "prefix", 32))) {
			r = FAIL(-NB_E_CONFLICT, "InvalidSubnet.Conflict",
				 "The CIDR '%s' conflicts with another subnet (%s, %s).", cidr,
				 nb_json_str_or(s, "id"), nb_json_str_or(s, "cidr"));
			goto fail;
		}
	}
	nb_id_new("subnet", id, sizeof(id));
	r = nb_store_subnet_insert(c->st, id, account_id, vpc_id, cidr, net, prefix, c->az, 0);
	if (r < 0)
		goto fail;
	json_decref(vpc);
	json_decref(sibs);
	r = nb_store_commit(c->st);
	if (r < 0)
		return r;
	r = nb_store_subnet_get(c->st, account_id, id, out);
	if (r == 0)
		subnet_view(*out);
	return r;
fail:
	json_decref(vpc);
	json_decref(sibs);
	nb_store_rollback(c->st);
	return r;
}

int nb_core_subnet_delete(struct nb_ctl *c, const char *account_id, const char *id, char *err,
			  size_t errsz, const char **code)
{
	json_t *s = NULL;
	int r = nb_store_begin(c->st);

	if (r < 0)
		return r;
	r = subnet_own(c, account_id, id, &s, err, errsz, code);
	if (r == 0 && nb_json_int(s, "used", 0) > 0)
		r = FAIL(-NB_E_CONFLICT, "DependencyViolation",
			 "The subnet '%s' has dependencies and cannot be deleted (%lld network "
			 "interfaces).",
			 id, (long long)nb_json_int(s, "used", 0));
	if (r == 0)
		r = nb_store_subnet_delete(c->st, id);
	json_decref(s);
	if (r < 0) {
		nb_store_rollback(c->st);
		return r;
	}
	return nb_store_commit(c->st);
}

int nb_core_subnets(struct nb_ctl *c, const char *account_id, json_t **out)
{
	json_t *def = NULL, *s;
	size_t i;
	int r;

	nb_core_default_vpc(c, account_id, &def, NULL, 0);
	json_decref(def);
	r = nb_store_subnets_list(c->st, account_id, out);
	if (r == 0)
		json_array_foreach(*out, i, s) subnet_view(s);
	return r;
}

/* ---- security groups ---- */

static bool group_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 255 || !strncmp(s, "sg-", 3))
		return false;
	for (const char *p = s; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			return false;
	return true;
}

int nb_core_sg_find(struct nb_ctl *c, const char *account_id, const char *id, const char *name,
		    json_t **out, char *err, size_t errsz, const char **code)
{
	json_t *vpc = NULL;
	int r;

	if (id) {
		if (!nb_id_valid("sg", id) || nb_store_sg_get(c->st, account_id, id, out) < 0)
			return FAIL(-NB_E_NOT_FOUND, "InvalidGroup.NotFound",
				    "The security group '%s' does not exist", id);
		return 0;
	}
	if (!name || !*name)
		return FAIL(-NB_E_MISSING, "MissingParameter",
			    "The request must contain the parameter GroupId or GroupName");
	r = nb_core_default_vpc(c, account_id, &vpc, err, errsz);
	if (r < 0)
		return r;
	r = nb_store_sg_by_name(c->st, account_id, nb_json_str_or(vpc, "id"), name, out);
	json_decref(vpc);
	if (r < 0)
		return FAIL(-NB_E_NOT_FOUND, "InvalidGroup.NotFound",
			    "The security group '%s' does not exist in the default VPC", name);
	return 0;
}

int nb_core_sg_create(struct nb_ctl *c, const char *account_id, const char *vpc_id,
		      const char *name, const char *description, json_t **out, char *err,
		      size_t errsz, const char **code)
{
	json_t *vpc = NULL, *old = NULL, *all = NULL, *g;
	char id[32];
	size_t i, in_vpc = 0;
	int r;

	if (!name || !*name)
		return FAIL(-NB_E_MISSING, "MissingParameter",
			    "The request must contain the parameter GroupName");
	if (!description || !*description)
		return FAIL(-NB_E_MISSING, "MissingParameter",
			    "The request must contain the parameter GroupDescription");
	if (!group_name_ok(name))
		return FAIL(-NB_E_INVALID, "InvalidParameterValue",
			    "Value (%s) for parameter GroupName is invalid: 1 to 255 printable "
			    "ASCII characters, not starting with sg-.",
			    name);
	if (!strcmp(name, "default"))
		return FAIL(-NB_E_INVALID, "InvalidGroup.Reserved",
			    "The security group 'default' is reserved");
	if (strlen(description) > 255)
		return FAIL(-NB_E_INVALID, "InvalidParameterValue",
			    "Value for parameter GroupDescription is invalid: at most 255 "
			    "characters.");
	for (const char *p = description; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			return FAIL(-NB_E_INVALID, "InvalidParameterValue",
				    "Value (%s) for parameter GroupDescription is invalid: "
				    "printable ASCII only.",
				    description);
	if (vpc_id && *vpc_id)
		r = vpc_own(c, account_id, vpc_id, &vpc, err, errsz, code);
	else
		r = nb_core_default_vpc(c, account_id, &vpc, err, errsz);
	if (r < 0)
		return r;
	r = nb_store_begin(c->st);
	if (r < 0)
		goto out;
	if (nb_store_sg_by_name(c->st, account_id, nb_json_str_or(vpc, "id"), name, &old) == 0) {
		r = FAIL(-NB_E_CONFLICT, "InvalidGroup.Duplicate",
			 "The security group '%s' already exists for VPC '%s'", name,
			 nb_json_str_or(vpc, "id"));
		goto rollback;
	}
	r = nb_store_sgs_list(c->st, account_id, &all);
	json_array_foreach(all, i, g) in_vpc +=
		!strcmp(nb_json_str_or(g, "vpc_id"), nb_json_str_or(vpc, "id"));
	if (r == 0 && in_vpc >= NB_NET_MAX_GROUPS)
		r = FAIL(-NB_E_LIMIT, "SecurityGroupLimitExceeded",
			 "The maximum number of security groups (%d) of the VPC has been reached.",
			 NB_NET_MAX_GROUPS);
	nb_id_new("sg", id, sizeof(id));
	if (r == 0)
		r = nb_store_sg_insert(c->st, id, account_id, nb_json_str_or(vpc, "id"), name,
				       description);
	if (r == 0)
		r = group_insert_defaults(c, id, false);
	if (r < 0)
		goto rollback;
	r = nb_store_commit(c->st);
	if (r == 0)
		r = nb_store_sg_get(c->st, account_id, id, out);
	goto out;
rollback:
	nb_store_rollback(c->st);
out:
	json_decref(vpc);
	json_decref(old);
	json_decref(all);
	return r;
}

int nb_core_sg_delete(struct nb_ctl *c, const char *account_id, const char *id,
		      const char *name, char *err, size_t errsz, const char **code)
{
	json_t *g = NULL, *deps = NULL;
	int r = nb_core_sg_find(c, account_id, id, name, &g, err, errsz, code);

	if (r < 0)
		return r;
	r = nb_store_begin(c->st);
	if (r < 0)
		goto out;
	if (!strcmp(nb_json_str_or(g, "name"), "default")) {
		r = FAIL(-NB_E_INVALID, "CannotDelete",
			 "the specified group: \"%s\" name: \"default\" cannot be deleted by a user",
			 nb_json_str_or(g, "id"));
		goto rollback;
	}
	r = nb_store_sg_deps(c->st, nb_json_str_or(g, "id"), &deps);
	if (r == 0 && nb_json_int(deps, "interfaces", 0))
		r = FAIL(-NB_E_CONFLICT, "DependencyViolation",
			 "resource %s has a dependent object (%lld network interfaces use it)",
			 nb_json_str_or(g, "id"), (long long)nb_json_int(deps, "interfaces", 0));
	else if (r == 0 && nb_json_int(deps, "referrers", 0))
		r = FAIL(-NB_E_CONFLICT, "DependencyViolation",
			 "resource %s has a dependent object (rules of other groups reference it)",
			 nb_json_str_or(g, "id"));
	if (r == 0)
		r = nb_store_sg_delete(c->st, nb_json_str_or(g, "id"));
	if (r < 0)
		goto rollback;
	r = nb_store_commit(c->st);
	goto out;
rollback:
	nb_store_rollback(c->st);
out:
	json_decref(g);
	json_decref(deps);
	return r;
}

int nb_core_sgs(struct nb_ctl *c, const char *account_id, json_t **out)
{
	json_t *def = NULL, *g, *rules, *rule;
	size_t i, k;
	int r;

	nb_core_default_vpc(c, account_id, &def, NULL, 0);
	json_decref(def);
	r = nb_store_sgs_list(c->st, account_id, out);
	if (r < 0)
		return r;
	json_array_foreach(*out, i, g)
	{
		json_t *in = json_array(), *eg = json_array();
		rules = NULL;
		if (nb_store_rules_of(c->st, nb_json_str_or(g, "id"), &rules) == 0)
			json_array_foreach(rules, k, rule)
				json_array_append(nb_json_int(rule, "egress", 0) ? eg : in, rule);
		json_decref(rules);
		json_object_set_new(g, "ingress", in);
		json_object_set_new(g, "egress", eg);
	}
	return 0;
}

int nb_core_sg_rules_list(struct nb_ctl *c, const char *account_id, json_t **out)
{
	return nb_store_rules_list(c->st, account_id, out);
}

/* A rule of the request, checked and normalised. */
struct rule_in {
	char protocol[8];
	int64_t from, to;
	char cidr[20];
	const char *group_id;
	const char *description;
};

static int rule_parse(struct nb_ctl *c, const char *account_id, const json_t *g, const json_t *in,
		      struct rule_in *ri, char *err, size_t errsz, const char **code)
{
	json_t *pv = json_object_get(in, "protocol");
	const char *p = json_is_string(pv) ? json_string_value(pv) : NULL;
	char num[24];
	const char *cidr = nb_json_str(in, "cidr"), *gid = nb_json_str(in, "group_id");
	json_t *fv = json_object_get(in, "from_port"), *tv = json_object_get(in, "to_port");

	memset(ri, 0, sizeof(*ri));
	if (json_is_integer(pv)) {
		snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(pv));
		p = num;
	}
	if (!p || !*p)
		return FAIL(-NB_E_MISSING, "MissingParameter",
			    "The request must contain the parameter ipProtocol");
	if (!strcasecmp(p, "tcp") || !strcmp(p, "6"))
		nb_strlcpy(ri->protocol, "tcp", sizeof(ri->protocol));
	else if (!strcasecmp(p, "udp") || !strcmp(p, "17"))
		nb_strlcpy(ri->protocol, "udp", sizeof(ri->protocol));
	else if (!strcasecmp(p, "icmp") || !strcmp(p, "1"))
		nb_strlcpy(ri->protocol, "icmp", sizeof(ri->protocol));
	else if (!strcmp(p, "-1") || !strcasecmp(p, "all"))
		nb_strlcpy(ri->protocol, "-1", sizeof(ri->protocol));
	else
		return FAIL(-NB_E_INVALID, "InvalidParameterValue",
			    "Invalid value '%s' for IP protocol. Valid values: tcp, udp, icmp, "
			    "-1 (all).",
			    p);
	if (!strcmp(ri->protocol, "-1")) {
		ri->from = ri->to = -1;
	} else {
		if (!json_is_integer(fv) || !json_is_integer(tv))
			return FAIL(-NB_E_INVALID, "InvalidParameterValue",
				    "Invalid value for portRange. Must specify both from and to "
				    "ports with TCP/UDP/ICMP.");
		ri->from = json_integer_value(fv);
		ri->to = json_integer_value(tv);
		if (!strcmp(ri->protocol, "icmp")) {
			if (ri->from < -1 || ri->from > 255 || ri->to < -1 || ri->to > 255)
				return FAIL(-NB_E_INVALID, "InvalidParameterValue",
					    "Invalid value '%lld/%lld' for ICMP type/code: -1 to 255.",
					    (long long)ri->from, (long long)ri->to);
		} else if (ri->from == -1 && ri->to == -1) {
			ri->from = 0;
			ri->to = 65535;
		} else if (ri->from < 0 || ri->to > 65535 || ri->from > ri->to) {
			return FAIL(-NB_E_INVALID, "InvalidParameterValue",
				    "Invalid value '%lld-%lld' for portRange: from 0 to 65535, "
				    "from not above to.",
				    (long long)ri->from, (long long)ri->to);
		}
	}
	if (!!cidr == !!gid)
		return FAIL(-NB_E_INVALID, "InvalidParameterValue",
			    "A rule needs exactly one of a CIDR (IpRanges) and a group "
			    "(UserIdGroupPairs).");
	if (cidr) {
		uint32_t net;
		int prefix;
		if (nb_core_cidr_parse(cidr, &net, &prefix) < 0)
			return FAIL(-NB_E_INVALID, "InvalidParameterValue",
				    "CIDR block %s is malformed", cidr);
		nb_strlcpy(ri->cidr, cidr, sizeof(ri->cidr));
	} else {
		json_t *ref = NULL;
		int r = nb_core_sg_find(c, account_id, gid, NULL, &ref, err, errsz, code);
		if (r < 0)
			return r;
		if (strcmp(nb_json_str_or(ref, "vpc_id"), nb_json_str_or(g, "vpc_id"))) {
			json_decref(ref);
			return FAIL(-NB_E_NOT_FOUND, "InvalidGroup.NotFound",
				    "The security group '%s' is not in the VPC of %s", gid,
				    nb_json_str_or(g, "id"));
		}
		json_decref(ref);
		ri->group_id = gid;
	}
	ri->description = nb_json_str(in, "description");
	if (ri->description && strlen(ri->description) > 255)
		return FAIL(-NB_E_INVALID, "InvalidParameterValue",
			    "A rule's description is at most 255 characters.");
	return 0;
}

static void rule_text(const struct rule_in *ri, char *out, size_t outsz)
{
	snprintf(out, outsz, "%s %lld-%lld %s", ri->protocol, (long long)ri->from,
		 (long long)ri->to, ri->group_id ? ri->group_id : ri->cidr);
}

int nb_core_sg_rules(struct nb_ctl *c, const char *account_id, const char *group_id, int egress,
		     int add, const json_t *rules, json_t **out, char *err, size_t errsz,
		     const char **code)
{
	json_t *g = NULL, *have = NULL, *added = json_array(), *rule;
	size_t i, k, count = 0;
	int r;

	if (!json_is_array(rules) || json_array_size(rules) == 0) {
		json_decref(added);
		return FAIL(-NB_E_MISSING, "MissingParameter",
			    "The request must contain the parameter IpPermissions");
	}
	r = nb_store_begin(c->st);
	if (r < 0) {
		json_decref(added);
		return r;
	}
	r = nb_core_sg_find(c, account_id, group_id, NULL, &g, err, errsz, code);
	if (r == 0)
		r = nb_store_rules_of(c->st, group_id, &have);
	json_array_foreach(have, k, rule) count += nb_json_int(rule, "egress", 0) == egress;
	json_array_foreach(rules, i, rule)
	{
		struct rule_in ri;
		json_t *found = NULL;
		char text[96];
		if (r < 0)
			break;
		r = rule_parse(c, account_id, g, rule, &ri, err, errsz, code);
		if (r < 0)
			break;
		rule_text(&ri, text, sizeof(text));
		int fr = nb_store_rule_find(c->st, group_id, egress, ri.protocol, ri.from, ri.to,
					    ri.cidr[0] ? ri.cidr : NULL, ri.group_id, &found);
		if (add && fr == 0) {
			r = FAIL(-NB_E_CONFLICT, "InvalidPermission.Duplicate",
				 "the specified rule \"peer: %s, %s, ALLOW\" already exists",
				 ri.group_id ? ri.group_id : ri.cidr, text);
		} else if (!add && fr < 0) {
			r = FAIL(-NB_E_NOT_FOUND, "InvalidPermission.NotFound",
				 "The specified rule does not exist in this security group (%s).",
				 text);
		} else if (add) {
			char rid[32];
			if (++count > NB_NET_MAX_RULES) {
				r = FAIL(-NB_E_LIMIT, "RulesPerSecurityGroupLimitExceeded",
					 "The maximum number of rules per security group (%d) has "
					 "been reached.",
					 NB_NET_MAX_RULES);
			} else {
				nb_id_new("sgr", rid, sizeof(rid));
				r = nb_store_rule_insert(c->st, rid, group_id, egress, ri.protocol,
							 ri.from, ri.to, ri.cidr[0] ? ri.cidr : NULL,
							 ri.group_id, ri.description);
				if (r == -NB_E_CONFLICT) /* the same rule twice in one call */
					FAIL(r, "InvalidPermission.Duplicate",
					     "the specified rule \"%s\" already exists", text);
				json_t *nr = NULL;
				if (r == 0 && nb_store_rule_find(c->st, group_id, egress, ri.protocol,
								 ri.from, ri.to,
								 ri.cidr[0] ? ri.cidr : NULL,
								 ri.group_id, &nr) == 0)
					json_array_append_new(added, nr);
			}
		} else {
			r = nb_store_rule_delete(c->st, nb_json_str_or(found, "id"));
		}
		json_decref(found);
	}
	json_decref(have);
	if (r < 0) {
		nb_store_rollback(c->st);
		json_decref(g);
		json_decref(added);
		return r;
	}
	r = nb_store_commit(c->st);
	if (r == 0)
		nb_core_net_changed(c, nb_json_str_or(g, "vpc_id"));
	json_decref(g);
	if (r == 0 && out)
		*out = added;
	else
		json_decref(added);
	return r;
}

/* ---- interfaces ---- */

int nb_core_enis(struct nb_ctl *c, const char *account_id, json_t **out)
{
	json_t *groups = NULL, *e, *g;
	size_t i, k;
	int r = nb_store_enis_list(c->st, account_id, out);

	if (r < 0)
		return r;
	/* one query for every interface's groups, then by interface id */
	json_t *by_eni = json_object();
	if (nb_store_eni_groups(c->st, account_id, NULL, &groups) == 0)
		json_array_foreach(groups, k, g)
		{
			const char *eid = nb_json_str_or(g, "eni_id");
			json_t *list = json_object_get(by_eni, eid);
			if (!list) {
				list = json_array();
				json_object_set_new(by_eni, eid, list);
			}
			json_array_append(list, g);
		}
	json_array_foreach(*out, i, e)
	{
		json_t *mine = json_object_get(by_eni, nb_json_str_or(e, "id"));
		json_object_set_new(e, "groups", mine ? json_incref(mine) : json_array());
	}
	json_decref(by_eni);
	json_decref(groups);
	return 0;
}

/* ---- elastic IPs ---- */

int nb_core_address_allocate(struct nb_ctl *c, const char *account_id, json_t **out, char *err,
			     size_t errsz, const char **code)
{
	uint32_t net;
	int prefix, r;
	int64_t n, quota = 0;
	json_t *mine = NULL;
	char id[32], ip[16];

	if (nb_core_cidr_parse(c->eip_pool, &net, &prefix) < 0)
		return FAIL(-NB_E_INTERNAL, "InternalError", "eip_pool is not a CIDR");
	r = nb_store_begin(c->st);
	if (r < 0)
		return r;
	nb_store_quota_get(c->st, account_id, "addresses", c->quota_addresses, &quota);
	r = nb_store_addresses_list(c->st, account_id, &mine);
	if (r == 0 && (int64_t)json_array_size(mine) >= quota)
		r = FAIL(-NB_E_LIMIT, "AddressLimitExceeded",
			 "The maximum number of addresses (%lld) has been reached.",
			 (long long)quota);
	json_decref(mine);
	/* the pool's network and broadcast addresses are never handed out */
	if (r == 0) {
		r = nb_store_address_next(c->st, (int64_t)net + 1,
					  (int64_t)net + ((int64_t)1 << (32 - prefix)) - 2, &n);
		if (r == -NB_E_CAPACITY)
			FAIL(-NB_E_LIMIT, "AddressLimitExceeded",
			     "The pool of public addresses (%s) is used up.", c->eip_pool);
		if (r == -NB_E_CAPACITY)
			r = -NB_E_LIMIT;
	}
	if (r == 0) {
		nb_core_ip_str((uint32_t)n, ip);
		nb_id_new("eipalloc", id, sizeof(id));
		r = nb_store_address_insert(c->st, id, account_id, ip, n);
	}
	if (r < 0) {
		nb_store_rollback(c->st);
		return r;
	}
	r = nb_store_commit(c->st);
	if (r < 0)
		return r;
	return nb_store_address_get(c->st, account_id, id, NULL, out);
}

static int address_own(struct nb_ctl *c, const char *account_id, const char *id,
		       const char *public_ip, json_t **out, char *err, size_t errsz,
		       const char **code)
{
	if (id) {
		if (!nb_id_valid("eipalloc", id) ||
		    nb_store_address_get(c->st, account_id, id, NULL, out) < 0)
			return FAIL(-NB_E_NOT_FOUND, "InvalidAllocationID.NotFound",
				    "The allocation ID '%s' does not exist", id);
		return 0;
	}
	if (public_ip) {
		if (nb_store_address_get(c->st, account_id, NULL, public_ip, out) < 0)
			return FAIL(-NB_E_NOT_FOUND, "InvalidAddress.NotFound",
				    "Address '%s' not found.", public_ip);
		return 0;
	}
	return FAIL(-NB_E_MISSING, "MissingParameter",
		    "The request must contain the parameter AllocationId or PublicIp");
}

int nb_core_address_associate(struct nb_ctl *c, const char *account_id, const char *id,
			      const char *public_ip, const char *instance_id, const char *eni_id,
			      int allow_reassociation, json_t **out, char *err, size_t errsz,
			      const char **code)
{
	json_t *a = NULL, *eni = NULL, *other = NULL, *enis = NULL;
	char assoc[32], old_vpc[32] = "";
	int r;

	if (!instance_id && !eni_id)
		return FAIL(-NB_E_MISSING, "MissingParameter",
			    "The request must contain the parameter InstanceId or "
			    "NetworkInterfaceId");
	r = nb_store_begin(c->st);
	if (r < 0)
		return r;
	r = address_own(c, account_id, id, public_ip, &a, err, errsz, code);
	if (r < 0)
		goto rollback;
	if (eni_id) {
		if (!nb_id_valid("eni", eni_id) ||
		    nb_store_eni_get(c->st, account_id, eni_id, &eni) < 0) {
			r = FAIL(-NB_E_NOT_FOUND, "InvalidNetworkInterfaceID.NotFound",
				 "The networkInterface ID '%s' does not exist", eni_id);
			goto rollback;
		}
	} else {
		json_t *inst = NULL;
		if (!nb_id_valid("i", instance_id) ||
		    nb_store_instance_get(c->st, account_id, instance_id, &inst) < 0) {
			r = FAIL(-NB_E_NOT_FOUND, "InvalidInstanceID.NotFound",
				 "The instance ID '%s' does not exist", instance_id);
			goto rollback;
		}
		json_decref(inst);
		if (nb_store_enis_of_instance(c->st, instance_id, &enis) < 0 ||
		    json_array_size(enis) == 0) {
			r = FAIL(-NB_E_STATE, "IncorrectInstanceState",
				 "The instance '%s' has no network interface (it is terminated)",
				 instance_id);
			goto rollback;
		}
		eni = json_incref(json_array_get(enis, 0));
	}
	/* the interface holds one address at most: another one moves off it */
	json_t *held = NULL;
	if (nb_store_addresses_list(c->st, account_id, &held) == 0) {
		json_t *h;
		size_t i;
		json_array_foreach(held, i, h) if (!strcmp(nb_json_str_or(h, "eni_id"),
							   nb_json_str_or(eni, "id")) &&
						   strcmp(nb_json_str_or(h, "id"),
							  nb_json_str_or(a, "id")))
			other = json_incref(h);
	}
	json_decref(held);
	if (nb_json_str(a, "eni_id")) {
		if (!strcmp(nb_json_str(a, "eni_id"), nb_json_str_or(eni, "id"))) {
			/* already there: the same association */
			nb_store_rollback(c->st);
			*out = json_pack("{s:s}", "association_id",
					 nb_json_str_or(a, "association_id"));
			goto out;
		}
		if (!allow_reassociation) {
			r = FAIL(-NB_E_CONFLICT, "Resource.AlreadyAssociated",
				 "resource %s is already associated with associate-id %s",
				 nb_json_str_or(a, "id"), nb_json_str_or(a, "association_id"));
			goto rollback;
		}
		nb_strlcpy(old_vpc, nb_json_str_or(a, "vpc_id"), sizeof(old_vpc));
	}
	if (other) {
		r = nb_store_address_associate(c->st, nb_json_str_or(other, "id"), NULL, NULL);
		if (r < 0)
			goto rollback;
	}
	nb_id_new("eipassoc", assoc, sizeof(assoc));
	r = nb_store_address_associate(c->st, nb_json_str_or(a, "id"), assoc,
				       nb_json_str_or(eni, "id"));
	if (r < 0)
		goto rollback;
	r = nb_store_commit(c->st);
	if (r < 0)
		goto out;
	nb_core_net_changed(c, nb_json_str_or(eni, "vpc_id"));
	if (*old_vpc && strcmp(old_vpc, nb_json_str_or(eni, "vpc_id")))
		nb_core_net_changed(c, old_vpc);
	*out = json_pack("{s:s}", "association_id", assoc);
	goto out;
rollback:
	nb_store_rollback(c->st);
out:
	json_decref(a);
	json_decref(eni);
	json_decref(other);
	json_decref(enis);
	return r;
}

int nb_core_address_disassociate(struct nb_ctl *c, const char *account_id,
				 const char *association_id, const char *public_ip, char *err,
				 size_t errsz, const char **code)
{
	json_t *a = NULL;
	char vpc[32] = "";
	int r = nb_store_begin(c->st);

	if (r < 0)
		return r;
	if (association_id) {
		if (!nb_id_valid("eipassoc", association_id) ||
		    nb_store_address_by_assoc(c->st, account_id, association_id, &a) < 0)
			r = FAIL(-NB_E_NOT_FOUND, "InvalidAssociationID.NotFound",
				 "The association ID '%s' does not exist", association_id);
	} else {
		r = address_own(c, account_id, NULL, public_ip, &a, err, errsz, code);
		if (r == 0 && !nb_json_str(a, "eni_id"))
			r = FAIL(-NB_E_NOT_FOUND, "InvalidAssociationID.NotFound",
				 "The address '%s' is not associated", public_ip);
	}
	if (r == 0) {
		nb_strlcpy(vpc, nb_json_str_or(a, "vpc_id"), sizeof(vpc));
		r = nb_store_address_associate(c->st, nb_json_str_or(a, "id"), NULL, NULL);
	}
	json_decref(a);
	if (r < 0) {
		nb_store_rollback(c->st);
		return r;
	}
	r = nb_store_commit(c->st);
	if (r == 0)
		nb_core_net_changed(c, vpc);
	return r;
}

int nb_core_address_release(struct nb_ctl *c, const char *account_id, const char *id,
			    const char *public_ip, char *err, size_t errsz, const char **code)
{
	json_t *a = NULL;
	int r = nb_store_begin(c->st);

	if (r < 0)
		return r;
	r = address_own(c, account_id, id, public_ip, &a, err, errsz, code);
	if (r == 0 && nb_json_str(a, "eni_id"))
		r = FAIL(-NB_E_CONFLICT, "InvalidIPAddress.InUse",
			 "Address %s is in use (associated with %s).",
			 nb_json_str_or(a, "public_ip"), nb_json_str_or(a, "association_id"));
	if (r == 0)
		r = nb_store_address_delete(c->st, nb_json_str_or(a, "id"));
	json_decref(a);
	if (r < 0) {
		nb_store_rollback(c->st);
		return r;
	}
	return nb_store_commit(c->st);
}

int nb_core_addresses(struct nb_ctl *c, const char *account_id, json_t **out)
{
	return nb_store_addresses_list(c->st, account_id, out);
}

/* ---- metadata options ---- */

static int metadata_parse(const json_t *opts, char tokens[16], int64_t *hop, char endpoint[16],
			  char *err, size_t errsz, const char **code)
{
	const char *t = nb_json_str(opts, "http_tokens"), *e = nb_json_str(opts, "http_endpoint");
	json_t *h = json_object_get(opts, "http_put_response_hop_limit");

	if (t) {
		if (strcmp(t, "optional") && strcmp(t, "required"))
			return FAIL(-NB_E_INVALID, "InvalidParameterValue",
				    "Value (%s) for parameter HttpTokens is invalid: optional or "
				    "required.",
				    t);
		nb_strlcpy(tokens, t, 16);
	}
	if (e) {
		if (strcmp(e, "enabled") && strcmp(e, "disabled"))
			return FAIL(-NB_E_INVALID, "InvalidParameterValue",
				    "Value (%s) for parameter HttpEndpoint is invalid: enabled or "
				    "disabled.",
				    e);
		nb_strlcpy(endpoint, e, 16);
	}
	if (h) {
		if (!json_is_integer(h) || json_integer_value(h) < 1 || json_integer_value(h) > 64)
			return FAIL(-NB_E_INVALID, "InvalidParameterValue",
				    "Value for parameter HttpPutResponseHopLimit is invalid: 1 to "
				    "64.");
		*hop = json_integer_value(h);
	}
	return 0;
}

int nb_core_metadata_options(struct nb_ctl *c, const char *account_id, const char *instance_id,
			     const json_t *opts, json_t **out, char *err, size_t errsz,
			     const char **code)
{
	json_t *inst = NULL;
	char tokens[16], endpoint[16];
	int64_t hop;
	int r = nb_store_begin(c->st);

	if (r < 0)
		return r;
	if (!instance_id || !nb_id_valid("i", instance_id) ||
	    nb_store_instance_get(c->st, account_id, instance_id, &inst) < 0) {
		r = FAIL(-NB_E_NOT_FOUND, "InvalidInstanceID.NotFound",
			 "The instance ID '%s' does not exist", instance_id ? instance_id : "");
		goto rollback;
	}
	if (!strcmp(nb_json_str_or(inst, "state"), "terminated")) {
		r = FAIL(-NB_E_STATE, "IncorrectInstanceState",
			 "The instance '%s' is terminated", instance_id);
		goto rollback;
	}
	nb_strlcpy(tokens, nb_json_str_or(inst, "http_tokens"), sizeof(tokens));
	nb_strlcpy(endpoint, nb_json_str_or(inst, "http_endpoint"), sizeof(endpoint));
	hop = nb_json_int(inst, "http_hop_limit", 1);
	r = metadata_parse(opts, tokens, &hop, endpoint, err, errsz, code);
	if (r == 0)
		r = nb_store_instance_set_net(c->st, instance_id, NULL, NULL, NULL, NULL, tokens, hop,
					      endpoint);
	if (r < 0)
		goto rollback;
	r = nb_store_commit(c->st);
	if (r < 0)
		goto out;
	nb_core_host_changed(c, nb_json_str(inst, "host_id"));
	*out = json_pack("{s:s, s:s, s:I, s:s}", "instance_id", instance_id, "http_tokens", tokens,
			 "http_put_response_hop_limit", (json_int_t)hop, "http_endpoint", endpoint);
	goto out;
rollback:
	nb_store_rollback(c->st);
out:
	json_decref(inst);
	return r;
}

/* ---- the launch ---- */

void nb_core_net_plan_free(struct nb_net_plan *p)
{
	json_decref(p->subnet);
	json_decref(p->vpc);
	json_decref(p->groups);
	memset(p, 0, sizeof(*p));
}

int nb_core_net_plan(struct nb_ctl *c, const char *account_id, const json_t *req,
		     struct nb_net_plan *p, char *err, size_t errsz, const char **code)
{
	const char *subnet_id = nb_json_str(req, "subnet_id"), *pip = nb_json_str(req, "private_ip");
	json_t *ids = json_object_get(req, "security_group_ids");
	json_t *names = json_object_get(req, "security_groups"), *v;
	size_t i;
	int r;

	memset(p, 0, sizeof(*p));
	nb_strlcpy(p->http_tokens, "optional", sizeof(p->http_tokens));
	nb_strlcpy(p->http_endpoint, "enabled", sizeof(p->http_endpoint));
	p->hop_limit = 1;
	p->groups = json_array();
	r = metadata_parse(json_object_get(req, "metadata_options"), p->http_tokens, &p->hop_limit,
			   p->http_endpoint, err, errsz, code);
	if (r < 0)
		goto fail;
	if (subnet_id && *subnet_id) {
		r = subnet_own(c, account_id, subnet_id, &p->subnet, err, errsz, code);
		if (r == 0)
			r = nb_store_vpc_get(c->st, account_id, nb_json_str_or(p->subnet, "vpc_id"),
					     &p->vpc);
	} else {
		r = nb_core_default_vpc(c, account_id, &p->vpc, err, errsz);
		if (r == 0 && nb_store_subnet_default(c->st, nb_json_str_or(p->vpc, "id"),
						      &p->subnet) < 0)
			r = FAIL(-NB_E_INVALID, "MissingInput",
				 "No subnets found for the default VPC '%s'. Please specify a "
				 "subnet.",
				 nb_json_str_or(p->vpc, "id"));
	}
	if (r < 0)
		goto fail;
	if (json_array_size(ids) + json_array_size(names) > NB_NET_MAX_GROUPS_PER_ENI) {
		r = FAIL(-NB_E_LIMIT, "SecurityGroupsPerInstanceLimitExceeded",
			 "The maximum number of security groups per interface (%d) has been "
			 "reached.",
			 NB_NET_MAX_GROUPS_PER_ENI);
		goto fail;
	}
	json_array_foreach(ids, i, v)
	{
		json_t *g = NULL;
		const char *gid = json_string_value(v);
		r = nb_core_sg_find(c, account_id, gid ? gid : "", NULL, &g, err, errsz, code);
		if (r < 0)
			goto fail;
		if (strcmp(nb_json_str_or(g, "vpc_id"), nb_json_str_or(p->vpc, "id"))) {
			r = FAIL(-NB_E_INVALID, "InvalidParameter",
				 "Security group %s and subnet %s belong to different networks.",
				 gid, nb_json_str_or(p->subnet, "id"));
			json_decref(g);
			goto fail;
		}
		json_array_append_new(p->groups, g);
	}
	json_array_foreach(names, i, v)
	{
		json_t *g = NULL;
		const char *name = json_string_value(v);
		if (!name || nb_store_sg_by_name(c->st, account_id, nb_json_str_or(p->vpc, "id"), name,
						 &g) < 0) {
			r = FAIL(-NB_E_NOT_FOUND, "InvalidGroup.NotFound",
				 "The security group '%s' does not exist in VPC '%s'",
				 name ? name : "", nb_json_str_or(p->vpc, "id"));
			goto fail;
		}
		json_array_append_new(p->groups, g);
	}
	if (json_array_size(p->groups) == 0) {
		json_t *g = NULL;
		if (nb_store_sg_by_name(c->st, account_id, nb_json_str_or(p->vpc, "id"), "default",
					&g) == 0)
			json_array_append_new(p->groups, g);
	}
	if (pip) {
		int64_t n;
		if (nb_core_ip_parse(pip, &p->ip_req) < 0) {
			r = FAIL(-NB_E_INVALID, "InvalidParameterValue",
				 "Value (%s) for parameter PrivateIpAddress is invalid.", pip);
			goto fail;
		}
		n = p->ip_req;
		if (n < subnet_first(p->subnet) || n > subnet_last(p->subnet)) {
			r = FAIL(-NB_E_INVALID, "InvalidParameterValue",
				 "Address %s does not fall within the subnet's address range (%s; "
				 "the first four and the last are reserved).",
				 pip, nb_json_str_or(p->subnet, "cidr"));
			goto fail;
		}
	}
	return 0;
fail:
	nb_core_net_plan_free(p);
	return r;
}

int64_t nb_core_net_free(struct nb_ctl *c, const struct nb_net_plan *p)
{
	json_t *s = NULL;
	int64_t n;
	int r = nb_store_subnet_get(c->st, NULL, nb_json_str_or(p->subnet, "id"), &s);

	if (r < 0)
		return r;
	n = subnet_last(s) - subnet_first(s) + 1 - nb_json_int(s, "used", 0);
	json_decref(s);
	return n > 0 ? n : 0;
}

/* mac_keep: the MAC the interface must have (an instance older than the
 * networks keeps its own), or NULL for a new one. */
static int attach(struct nb_ctl *c, const char *account_id, const struct nb_net_plan *p,
		  const char *instance_id, const char *mac_keep, char ip[16], char mac[18],
		  char *err, size_t errsz, const char **code)
{
	const char *subnet_id = nb_json_str_or(p->subnet, "id");
	const char *vpc_id = nb_json_str_or(p->vpc, "id");
	char eni[32];
	int64_t n;
	int r, taken = 1;
	json_t *g;
	size_t i;

	if (p->ip_req) {
		n = p->ip_req;
		nb_core_ip_str((uint32_t)n, ip);
		r = nb_store_ip_taken(c->st, subnet_id, n, &taken);
		if (r == 0 && taken)
			return FAIL(-NB_E_CONFLICT, "InvalidIPAddress.InUse",
				    "Address %s is in use.", ip);
	} else {
		r = nb_store_ip_next(c->st, subnet_id, subnet_first(p->subnet),
				     subnet_last(p->subnet), &n);
		if (r == -NB_E_CAPACITY)
			return FAIL(-NB_E_CAPACITY, "InsufficientFreeAddressesInSubnet",
				    "There are not enough free addresses in subnet '%s' to satisfy "
				    "the requested number of instances.",
				    subnet_id);
	}
	if (r < 0)
		return r;
	nb_core_ip_str((uint32_t)n, ip);
	for (int tries = 0; tries < 8; tries++) {
		nb_id_new("eni", eni, sizeof(eni));
		if (mac_keep)
			nb_strlcpy(mac, mac_keep, 18);
		else
			nb_core_eni_mac(eni, mac);
		r = nb_store_mac_taken(c->st, vpc_id, mac, &taken);
		if (r < 0 || !taken || mac_keep)
			break;
	}
	if (r == 0 && taken)
		return FAIL(-NB_E_CONFLICT, "InternalError", "no MAC free for a new interface");
	if (r == 0)
		r = nb_store_eni_insert(c->st, eni, account_id, subnet_id, vpc_id, mac, ip, n,
					instance_id, 0);
	json_array_foreach(p->groups, i, g) if (r == 0) r =
		nb_store_eni_group_add(c->st, eni, nb_json_str_or(g, "id"));
	if (r == 0)
		r = nb_store_instance_set_net(c->st, instance_id, subnet_id, vpc_id, ip, mac,
					      p->http_tokens, p->hop_limit, p->http_endpoint);
	if (r < 0)
		return FAIL(r, NULL, "recording the interface of %s failed", instance_id);
	return 0;
}

int nb_core_net_attach(struct nb_ctl *c, const char *account_id, const struct nb_net_plan *p,
		       const char *instance_id, char ip[16], char mac[18], char *err,
		       size_t errsz, const char **code)
{
	return attach(c, account_id, p, instance_id, NULL, ip, mac, err, errsz, code);
}

/* Instances made before the networks get interface 0 in their account's
 * default subnet, with the default group, keeping their MAC; their address
 * changes to the subnet's (the guest learns it at its next DHCP lease). An
 * instance that cannot have one (its account's default subnet is full) is
 * left without, with one warning per account: nubod still starts. */
static int adopt_instances(struct nb_ctl *c, char *err, size_t errsz)
{
	json_t *rows = NULL, *row, *req = json_object(), *full = json_object();
	size_t i;
	int r = nb_store_instances_without_eni(c->st, &rows), left = 0;

	json_array_foreach(rows, i, row)
	{
		struct nb_net_plan p;
		const char *id = nb_json_str_or(row, "id"), *mac_keep = nb_json_str(row, "mac");
		const char *account = nb_json_str_or(row, "account_id"), *code = NULL;
		char ip[16], mac[18];
		if (r < 0)
			break;
		if (json_object_get(full, account)) {
			left++;
			continue;
		}
		r = nb_core_net_plan(c, account, req, &p, err, errsz, &code);
		if (r == 0) {
			r = nb_store_begin(c->st);
			if (r == 0) {
				r = attach(c, account, &p, id, mac_keep && *mac_keep ? mac_keep : NULL,
					   ip, mac, err, errsz, &code);
				if (r == 0)
					r = nb_store_commit(c->st);
				else
					nb_store_rollback(c->st);
			}
			nb_core_net_plan_free(&p);
		}
		if (r == 0) {
			nb_info("instance %s: interface 0 in the default VPC, address %s", id, ip);
			nb_core_host_changed(c, nb_json_str(row, "host_id"));
		} else if (code) {
			/* the account's network cannot take it (no free address):
			 * its instances keep running without an interface */
			nb_warn("account %s: instance %s and the account's other instances older than "
				"the networks get no interface: %s", account, id, err);
			json_object_set_new(full, account, json_true());
			left++;
			r = 0;
		}
	}
	if (left)
		nb_warn("%d instance(s) left without an interface", left);
	json_decref(full);
	json_decref(rows);
	json_decref(req);
	return r;
}

/* ---- desired state ---- */

static json_t *rule_desired(struct nb_ctl *c, const json_t *rule)
{
	const char *proto = nb_json_str_or(rule, "protocol");
	json_t *o = json_pack("{s:s}", "protocol", proto), *cidrs = json_array();

	if (strcmp(proto, "-1")) {
		json_object_set_new(o, "from_port", json_integer(nb_json_int(rule, "from_port", 0)));
		json_object_set_new(o, "to_port", json_integer(nb_json_int(rule, "to_port", 0)));
	}
	if (nb_json_str(rule, "cidr")) {
		json_array_append_new(cidrs, json_string(nb_json_str(rule, "cidr")));
	} else {
		json_t *ips = NULL, *m;
		size_t i;
		if (nb_store_sg_member_ips(c->st, nb_json_str_or(rule, "ref_group_id"), &ips) == 0)
			json_array_foreach(ips, i, m)
			{
				char buf[24];
				snprintf(buf, sizeof(buf), "%s/32", nb_json_str_or(m, "ip"));
				json_array_append_new(cidrs, json_string(buf));
			}
		json_decref(ips);
	}
	json_object_set_new(o, "cidrs", cidrs);
	return o;
}

static json_t *group_desired(struct nb_ctl *c, const json_t *g)
{
	json_t *rules = NULL, *rule, *in = json_array(), *eg = json_array();
	size_t i;

	if (nb_store_rules_of(c->st, nb_json_str_or(g, "id"), &rules) == 0)
		json_array_foreach(rules, i, rule) json_array_append_new(
			nb_json_int(rule, "egress", 0) ? eg : in, rule_desired(c, rule));
	json_decref(rules);
	return json_pack("{s:s, s:s, s:o, s:o}", "vpc_id", nb_json_str_or(g, "vpc_id"), "name",
			 nb_json_str_or(g, "name"), "ingress", in, "egress", eg);
}

static json_t *vpc_desired(struct nb_ctl *c, const json_t *vpc)
{
	json_t *subnets = NULL, *s, *list = json_array();
	size_t i;

	if (nb_store_subnets_of_vpc(c->st, nb_json_str_or(vpc, "id"), &subnets) == 0)
		json_array_foreach(subnets, i, s)
		{
			subnet_view(s);
			json_array_append_new(list,
					      json_pack("{s:s, s:s, s:s}", "id", nb_json_str_or(s, "id"),
							"cidr", nb_json_str_or(s, "cidr"), "gateway",
							nb_json_str_or(s, "gateway")));
		}
	json_decref(subnets);
	return json_pack("{s:I, s:s, s:o}", "vni", (json_int_t)nb_json_int(vpc, "vni", 0), "cidr",
			 nb_json_str_or(vpc, "cidr"), "subnets", list);
}

static json_t *metadata_desired(struct nb_ctl *c, const json_t *row, const json_t *nic0,
				json_t *group_names)
{
	const char *ip = nb_json_str_or(nic0, "ip"), *pub = nb_json_str(nic0, "public_ip");
	const char *key = nb_json_str(row, "key_name"), *ud = nb_json_str_or(row, "user_data");
	char host[96], pubhost[96], when[32];
	json_t *m;
	int64_t t = nb_json_int(row, "launched_at", 0);

	nb_core_private_dns(c->region, ip, host, sizeof(host));
	nb_iso8601(t ? t : nb_json_int(row, "created_at", 0), when, sizeof(when));
	m = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:s,"
		      " s:I, s:s}",
		      "instance_id", nb_json_str_or(row, "id"), "ami_id",
		      nb_json_str_or(row, "image_id"), "instance_type", nb_json_str_or(row, "type"),
		      "reservation_id", nb_json_str_or(row, "reservation_id"), "account_id",
		      nb_json_str_or(row, "account_id"), "region", c->region, "availability_zone",
		      *nb_json_str_or(row, "az") ? nb_json_str_or(row, "az") : c->az, "hostname",
		      host, "local_hostname", host, "local_ipv4", ip, "mac",
		      nb_json_str_or(nic0, "mac"), "security_groups", group_names, "launch_time",
		      when, "http_tokens", nb_json_str_or(row, "http_tokens"),
		      "http_put_response_hop_limit",
		      (json_int_t)nb_json_int(row, "http_hop_limit", 1), "http_endpoint",
		      nb_json_str_or(row, "http_endpoint"));
	if (!*nb_json_str_or(m, "http_tokens"))
		json_object_set_new(m, "http_tokens", json_string("optional"));
	if (!*nb_json_str_or(m, "http_endpoint"))
		json_object_set_new(m, "http_endpoint", json_string("enabled"));
	json_object_set_new(m, "ami_launch_index",
			    json_integer(nb_json_int(row, "launch_index", 0)));
	if (pub) {
		nb_core_public_dns(c->region, pub, pubhost, sizeof(pubhost));
		json_object_set_new(m, "public_ipv4", json_string(pub));
		json_object_set_new(m, "public_hostname", json_string(pubhost));
	}
	if (key) {
		json_t *kp = NULL;
		json_object_set_new(m, "key_name", json_string(key));
		if (nb_store_keypair_get(c->st, nb_json_str_or(row, "account_id"), key, &kp) == 0)
			json_object_set_new(m, "public_key",
					    json_string(nb_json_str_or(kp, "public_key")));
		json_decref(kp);
	}
	if (*ud)
		json_object_set_new(m, "user_data", json_string(ud));
	return m;
}

int nb_core_net_desired(struct nb_ctl *c, const json_t *rows, json_t *instances, json_t *top)
{
	json_t *vpcs = json_object(), *groups = json_object(), *row;
	size_t i;

	json_array_foreach(rows, i, row)
	{
		json_t *d = json_array_get(instances, i), *enis = NULL, *e, *nics = json_array();
		json_t *names = json_array(), *nic0 = NULL;
		size_t k;

		if (!d)
			break;
		if (nb_store_enis_of_instance(c->st, nb_json_str_or(row, "id"), &enis) < 0)
			enis = json_array();
		json_array_foreach(enis, k, e)
		{
			json_t *gs = NULL, *g, *gids = json_array(), *nic;
			size_t j;
			char gw[16];
			const char *vpc_id = nb_json_str_or(e, "vpc_id");

			nb_core_ip_str((uint32_t)nb_json_int(e, "net", 0) + 1, gw);
			nic = json_pack("{s:I, s:s, s:s, s:s, s:I, s:s, s:s, s:s}", "device_index",
					(json_int_t)nb_json_int(e, "device_index", 0), "eni_id",
					nb_json_str_or(e, "id"), "mac", nb_json_str_or(e, "mac"), "ip",
					nb_json_str_or(e, "ip"), "prefix",
					(json_int_t)nb_json_int(e, "prefix", 32), "gateway", gw,
					"subnet_id", nb_json_str_or(e, "subnet_id"), "vpc_id", vpc_id);
			if (nb_json_str(e, "public_ip"))
				json_object_set_new(nic, "public_ip",
						    json_string(nb_json_str(e, "public_ip")));
			nb_store_eni_groups(c->st, NULL, nb_json_str_or(e, "id"), &gs);
			json_array_foreach(gs, j, g)
			{
				const char *gid = nb_json_str_or(g, "group_id");
				json_array_append_new(gids, json_string(gid));
				if (k == 0)
					json_array_append_new(names,
							      json_string(nb_json_str_or(g, "name")));
				if (!json_object_get(groups, gid)) {
					json_t *grow = NULL;
					if (nb_store_sg_get(c->st, NULL, gid, &grow) == 0)
						json_object_set_new(groups, gid,
								    group_desired(c, grow));
					json_decref(grow);
				}
			}
			json_decref(gs);
			json_object_set_new(nic, "security_groups", gids);
			if (!json_object_get(vpcs, vpc_id)) {
				json_t *vrow = NULL;
				if (nb_store_vpc_get(c->st, NULL, vpc_id, &vrow) == 0)
					json_object_set_new(vpcs, vpc_id, vpc_desired(c, vrow));
				json_decref(vrow);
			}
			if (k == 0)
				nic0 = nic;
			json_array_append_new(nics, nic);
		}
		json_object_set_new(d, "nics", nics);
		if (nic0)
			json_object_set_new(d, "metadata", metadata_desired(c, row, nic0, names));
		else
			json_decref(names);
		json_decref(enis);
	}
	json_object_set_new(top, "vpcs", vpcs);
	json_object_set_new(top, "security_groups", groups);
	return 0;
}
