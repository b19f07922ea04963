/* The store's tenant-network tables (schema 4, docs/network.md): VPCs,
 * subnets, security groups and rules, network interfaces (the IPAM: a row
 * per address taken, unique per subnet), elastic IPs. Rows come back as
 * JSON objects keyed by column name; *out is always the caller's.
 * account_id NULL means any account (the controller's own jobs); otherwise
 * another account's row is -NB_E_NOT_FOUND. A duplicate is -NB_E_CONFLICT.
 * Read-check-write sequences belong in nb_store_begin/commit. */
#ifndef NB_STORE_NET_H
#define NB_STORE_NET_H

#include <jansson.h>
#include <stdint.h>

struct nb_store;

#define NB_VNI_MAX 2097151 /* 2^21 - 1: the transit /31s fit in 100.64.0.0/10 */

/* VPCs. */
/* The lowest VNI no VPC has; -NB_E_CAPACITY when all are taken. */
int nb_store_vni_next(struct nb_store *st, int64_t *vni);
int nb_store_vpc_insert(struct nb_store *st, const char *id, const char *account_id,
			const char *cidr, int64_t vni, int is_default);
int nb_store_vpc_get(struct nb_store *st, const char *account_id, const char *id, json_t **out);
int nb_store_vpc_default(struct nb_store *st, const char *account_id, json_t **out);
int nb_store_vpcs_list(struct nb_store *st, const char *account_id, json_t **out);
/* {"subnets", "groups" (other than default), "interfaces"} of a VPC. */
int nb_store_vpc_deps(struct nb_store *st, const char *id, json_t **out);
/* Deletes the VPC with its default group (and that group's rules and tags). */
int nb_store_vpc_delete(struct nb_store *st, const char *id);
/* [{"id"}] of every account without a default VPC. */
int nb_store_accounts_without_vpc(struct nb_store *st, json_t **out);

/* Subnets: net is the network address as a host-order integer. */
int nb_store_subnet_insert(struct nb_store *st, const char *id, const char *account_id,
			   const char *vpc_id, const char *cidr, int64_t net, int prefix,
			   const char *az, int is_default);
/* Each row has "used": the addresses taken in it. */
int nb_store_subnet_get(struct nb_store *st, const char *account_id, const char *id,
			json_t **out);
int nb_store_subnets_list(struct nb_store *st, const char *account_id, json_t **out);
int nb_store_subnets_of_vpc(struct nb_store *st, const char *vpc_id, json_t **out);
int nb_store_subnet_default(struct nb_store *st, const char *vpc_id, json_t **out);
int nb_store_subnet_delete(struct nb_store *st, const char *id);

/* Security groups. */
int nb_store_sg_insert(struct nb_store *st, const char *id, const char *account_id,
		       const char *vpc_id, const char *name, const char *description);
int nb_store_sg_get(struct nb_store *st, const char *account_id, const char *id, json_t **out);
int nb_store_sg_by_name(struct nb_store *st, const char *account_id, const char *vpc_id,
			const char *name, json_t **out);
int nb_store_sgs_list(struct nb_store *st, const char *account_id, json_t **out);
/* {"interfaces": using it, "referrers": rules of other groups naming it}. */
int nb_store_sg_deps(struct nb_store *st, const char *id, json_t **out);
int nb_store_sg_delete(struct nb_store *st, const char *id);

/* Rules: exactly one of cidr and ref_group_id is set. */
int nb_store_rule_insert(struct nb_store *st, const char *id, const char *group_id, int egress,
			 const char *protocol, int64_t from_port, int64_t to_port,
			 const char *cidr, const char *ref_group_id, const char *description);
/* The rule with exactly these fields, or -NB_E_NOT_FOUND. */
int nb_store_rule_find(struct nb_store *st, const char *group_id, int egress,
		       const char *protocol, int64_t from_port, int64_t to_port, const char *cidr,
		       const char *ref_group_id, json_t **out);
int nb_store_rule_delete(struct nb_store *st, const char *id);
/* A group's rules, ingress first, by creation. */
int nb_store_rules_of(struct nb_store *st, const char *group_id, json_t **out);
/* Every rule of the account's groups (with "account_id"). */
int nb_store_rules_list(struct nb_store *st, const char *account_id, json_t **out);

/* Network interfaces. The lowest free address number n with first <= n <=
 * last in the subnet; -NB_E_CAPACITY when none. */
int nb_store_ip_next(struct nb_store *st, const char *subnet_id, int64_t first, int64_t last,
		     int64_t *n);
int nb_store_ip_taken(struct nb_store *st, const char *subnet_id, int64_t n, int *taken);
int nb_store_mac_taken(struct nb_store *st, const char *vpc_id, const char *mac, int *taken);
int nb_store_eni_insert(struct nb_store *st, const char *id, const char *account_id,
			const char *subnet_id, const char *vpc_id, const char *mac,
			const char *ip, int64_t ip_n, const char *instance_id,
			int64_t device_index);
int nb_store_eni_group_add(struct nb_store *st, const char *eni_id, const char *group_id);
/* Rows joined with their subnet's cidr, the instance's host and the
 * associated address ("public_ip", "allocation_id", "association_id", NULL
 * without one). */
int nb_store_eni_get(struct nb_store *st, const char *account_id, const char *id, json_t **out);
int nb_store_enis_list(struct nb_store *st, const char *account_id, json_t **out);
int nb_store_enis_of_instance(struct nb_store *st, const char *instance_id, json_t **out);
/* [{"eni_id", "group_id", "name"}] of one interface, or of every
 * interface of account_id (eni_id NULL). */
int nb_store_eni_groups(struct nb_store *st, const char *account_id, const char *eni_id,
			json_t **out);
/* Addresses ("ip") of the interfaces in group_id. */
int nb_store_sg_member_ips(struct nb_store *st, const char *group_id, json_t **out);
/* [{"id", "account_id", "mac", "host_id"}]: instances (not terminated) with no
 * interface: made before schema 4. */
int nb_store_instances_without_eni(struct nb_store *st, json_t **out);
/* [{"host_id"}]: hosts with instances (not terminated) in the VPC. */
int nb_store_vpc_hosts(struct nb_store *st, const char *vpc_id, json_t **out);

/* Elastic IPs: n as for the IPAM, over the pool's numbers. */
int nb_store_address_next(struct nb_store *st, int64_t first, int64_t last, int64_t *n);
int nb_store_address_insert(struct nb_store *st, const char *id, const char *account_id,
			    const char *public_ip, int64_t ip_n);
/* By allocation id or, when public_ip is set, by address. Joined with the
 * interface ("eni_id", "instance_id", "private_ip", "host_id", "vpc_id"). */
int nb_store_address_get(struct nb_store *st, const char *account_id, const char *id,
			 const char *public_ip, json_t **out);
int nb_store_address_by_assoc(struct nb_store *st, const char *account_id,
			      const char *association_id, json_t **out);
int nb_store_addresses_list(struct nb_store *st, const char *account_id, json_t **out);
/* eni_id NULL disassociates. */
int nb_store_address_associate(struct nb_store *st, const char *id, const char *association_id,
			       const char *eni_id);
int nb_store_address_delete(struct nb_store *st, const char *id);

/* Instances: the network columns set at launch, and the metadata options. */
/* NULL subnet_id, vpc_id, ip, mac: unchanged. */
int nb_store_instance_set_net(struct nb_store *st, const char *id, const char *subnet_id,
			      const char *vpc_id, const char *ip, const char *mac,
			      const char *http_tokens, int64_t hop_limit, const char *http_endpoint);

#endif
