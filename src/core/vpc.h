/* Tenant networks in the controller (docs/network.md, "Model (nubod)"):
 * VPCs, subnets, security groups and their rules, network interfaces and
 * the IPAM, elastic IPs, the default VPC of every account, instance
 * metadata options, and the network part of an agent's desired state.
 *
 * Every call is scoped to account_id: another account's VPC, subnet, group,
 * interface or address is -NB_E_NOT_FOUND, exactly as a missing one. On
 * error err names what was wrong and *code (when code is not NULL) is the
 * EC2 error code that fits (a static string), e.g. "InvalidVpcID.NotFound",
 * "InvalidSubnet.Conflict", "DependencyViolation"; NULL leaves the choice to
 * the caller's mapping of the -NB_E_* value. Nothing is half made: each
 * change is one store transaction. *out is always the caller's. */
#ifndef NB_CORE_VPC_H
#define NB_CORE_VPC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct nb_ctl;

#define NB_NET_DEFAULT_VPC_CIDR "172.31.0.0/16"
#define NB_NET_DEFAULT_SUBNET_CIDR "172.31.0.0/20"
#define NB_NET_DEFAULT_EIP_POOL "198.51.100.0/24"
#define NB_NET_MAX_VPCS 50          /* per account */
#define NB_NET_MAX_SUBNETS 200      /* per VPC */
#define NB_NET_MAX_GROUPS 2500      /* per VPC */
#define NB_NET_MAX_RULES 1000       /* per group and direction */
#define NB_NET_MAX_GROUPS_PER_ENI 5

/* IPv4 helpers (host-order integers). */
/* "a.b.c.d/p" with no host bits set; 0 or -EINVAL. */
int nb_core_cidr_parse(const char *s, uint32_t *net, int *prefix);
int nb_core_ip_parse(const char *s, uint32_t *ip);
void nb_core_ip_str(uint32_t ip, char out[16]);
/* MAC of an interface: 52:54:00 + the first three bytes of sha256(eni_id). */
void nb_core_eni_mac(const char *eni_id, char out[18]);
/* "ip-172-31-0-4.<region>.compute.internal" / "ec2-198-51-100-5.<region>.compute.nubo". */
void nb_core_private_dns(const char *region, const char *ip, char *out, size_t outsz);
void nb_core_public_dns(const char *region, const char *ip, char *out, size_t outsz);

/* At start, after the store is open: checks c->eip_pool, gives every
 * account without one its default VPC, and every instance without an
 * interface (made before schema 4) interface 0 in its account's default
 * subnet with the default group, keeping its MAC (its address becomes the
 * subnet's). */
int nb_core_net_init(struct nb_ctl *c, char *err, size_t errsz);
/* The account's default VPC, made (with its subnet and default group) when
 * it has none yet. */
int nb_core_default_vpc(struct nb_ctl *c, const char *account_id, json_t **vpc, char *err,
			size_t errsz);

/* VPCs: rows {"id", "cidr", "vni", "is_default", ...}. */
int nb_core_vpc_create(struct nb_ctl *c, const char *account_id, const char *cidr, json_t **out,
		       char *err, size_t errsz, const char **code);
int nb_core_vpc_delete(struct nb_ctl *c, const char *account_id, const char *id, char *err,
		       size_t errsz, const char **code);
int nb_core_vpcs(struct nb_ctl *c, const char *account_id, json_t **out);

/* Subnets: rows with "available": free addresses. az NULL: the cloud's. */
int nb_core_subnet_create(struct nb_ctl *c, const char *account_id, const char *vpc_id,
			  const char *cidr, const char *az, json_t **out, char *err, size_t errsz,
			  const char **code);
int nb_core_subnet_delete(struct nb_ctl *c, const char *account_id, const char *id, char *err,
			  size_t errsz, const char **code);
int nb_core_subnets(struct nb_ctl *c, const char *account_id, json_t **out);

/* Security groups: vpc_id NULL is the default VPC. Rows have "ingress" and
 * "egress": the rule rows. Delete by id, or by name in the default VPC. */
int nb_core_sg_create(struct nb_ctl *c, const char *account_id, const char *vpc_id,
		      const char *name, const char *description, json_t **out, char *err,
		      size_t errsz, const char **code);
int nb_core_sg_delete(struct nb_ctl *c, const char *account_id, const char *id,
		      const char *name, char *err, size_t errsz, const char **code);
int nb_core_sgs(struct nb_ctl *c, const char *account_id, json_t **out);
/* The group with this id, or this name in the default VPC. */
int nb_core_sg_find(struct nb_ctl *c, const char *account_id, const char *id, const char *name,
		    json_t **out, char *err, size_t errsz, const char **code);
/* Adds (add) or removes rules of one direction of group_id. rules: an array
 * of {"protocol" ("tcp", "udp", "icmp", "-1", "all" or 6/17/1), "from_port",
 * "to_port", and "cidr" or "group_id", "description"}. All or none: a
 * duplicate is InvalidPermission.Duplicate, a rule to revoke that is not
 * there InvalidPermission.NotFound. *out (may be NULL): the rules added. */
int nb_core_sg_rules(struct nb_ctl *c, const char *account_id, const char *group_id, int egress,
		     int add, const json_t *rules, json_t **out, char *err, size_t errsz,
		     const char **code);
/* Every rule of the account's groups. */
int nb_core_sg_rules_list(struct nb_ctl *c, const char *account_id, json_t **out);

/* Network interfaces: rows with "groups": [{"group_id", "name"}]. */
int nb_core_enis(struct nb_ctl *c, const char *account_id, json_t **out);

/* Elastic IPs. Allocate takes the lowest free address of the pool
 * (AddressLimitExceeded when the pool or the account's quota is used up).
 * Associate with an instance (its interface 0) or an interface; an address
 * already associated moves only with allow_reassociation
 * (Resource.AlreadyAssociated otherwise). id or public_ip names the
 * address. */
int nb_core_address_allocate(struct nb_ctl *c, const char *account_id, json_t **out, char *err,
			     size_t errsz, const char **code);
int nb_core_address_associate(struct nb_ctl *c, const char *account_id, const char *id,
			      const char *public_ip, const char *instance_id, const char *eni_id,
			      int allow_reassociation, json_t **out, char *err, size_t errsz,
			      const char **code);
int nb_core_address_disassociate(struct nb_ctl *c, const char *account_id,
				 const char *association_id, const char *public_ip, char *err,
				 size_t errsz, const char **code);
int nb_core_address_release(struct nb_ctl *c, const char *account_id, const char *id,
			    const char *public_ip, char *err, size_t errsz, const char **code);
int nb_core_addresses(struct nb_ctl *c, const char *account_id, json_t **out);

/* ModifyInstanceMetadataOptions: opts {"http_tokens" ("optional",
 * "required"), "http_put_response_hop_limit" (1..64), "http_endpoint"
 * ("enabled", "disabled")}, each optional. *out: the instance's options. */
int nb_core_metadata_options(struct nb_ctl *c, const char *account_id, const char *instance_id,
			     const json_t *opts, json_t **out, char *err, size_t errsz,
			     const char **code);

/* ---- for the launch (core.c) ---- */

/* What a launch asks of the network, resolved before placement: the subnet
 * (SubnetId, or the default VPC's), its VPC, the groups (ids or names, or
 * the VPC's default), an optional fixed private address, the metadata
 * options. Freed with nb_core_net_plan_free. */
struct nb_net_plan {
	json_t *subnet, *vpc, *groups;
	uint32_t ip_req; /* 0: the lowest free */
	char http_tokens[16], http_endpoint[16];
	int64_t hop_limit;
};
/* req members read: "subnet_id", "security_group_ids", "security_groups"
 * (names), "private_ip", "metadata_options" {as nb_core_metadata_options}. */
int nb_core_net_plan(struct nb_ctl *c, const char *account_id, const json_t *req,
		     struct nb_net_plan *p, char *err, size_t errsz, const char **code);
void nb_core_net_plan_free(struct nb_net_plan *p);
/* Inside the launch transaction: the instance's interface 0 (IPAM: the
 * lowest free address, or the plan's) with its groups, and the instance's
 * network columns. ip and mac get the interface's. A full subnet is
 * InsufficientFreeAddressesInSubnet. */
int nb_core_net_attach(struct nb_ctl *c, const char *account_id, const struct nb_net_plan *p,
		       const char *instance_id, char ip[16], char mac[18], char *err,
		       size_t errsz, const char **code);
/* Free addresses of the plan's subnet now (inside the launch transaction:
 * a launch makes as many as fit, never fewer than its minimum); < 0 on a
 * store error. */
int64_t nb_core_net_free(struct nb_ctl *c, const struct nb_net_plan *p);
/* Wakes the agents of every host with instances in the VPC (bumps their
 * generation): a rule, a membership or an association changed. */
void nb_core_net_changed(struct nb_ctl *c, const char *vpc_id);

/* Adds the network part of the desired state (docs/network.md, "What the
 * agent is told"): "nics" and "metadata" to each entry of instances (built
 * from the store rows, same order), "vpcs" and "security_groups" to top. */
int nb_core_net_desired(struct nb_ctl *c, const json_t *rows, json_t *instances, json_t *top);

#endif
