/* The tenant-network tables (store/net.h). */
#include "store/net.h"

#include "common/err.h"
#include "common/json.h"
#include "common/util.h"
#include "store/store.h"
#include "store/store_internal.h"

#define rows nb_store_q_rows
#define row nb_store_q_row

static int exec0(int r)
{
	return r < 0 ? r : 0;
}

/* An UPDATE/DELETE that must hit a row. */
static int exec1(int r)
{
	return r < 0 ? r : r == 0 ? -NB_E_NOT_FOUND : 0;
}

static int int_of(int r, json_t *o, const char *key, int64_t *out)
{
	if (r < 0)
		return r;
	json_t *v = json_object_get(o, key);
	if (!json_is_integer(v)) {
		json_decref(o);
		return -NB_E_CAPACITY;
	}
	*out = json_integer_value(v);
	json_decref(o);
	return 0;
}

/* ---- VPCs ---- */

int nb_store_vni_next(struct nb_store *st, int64_t *vni)
{
	json_t *o = NULL;
	int r = row(st, &o,
		    "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM vpcs WHERE vni = 1) THEN 1 ELSE"
		    " (SELECT min(a.vni + 1) FROM vpcs a WHERE a.vni + 1 <= ?1 AND NOT EXISTS"
		    "  (SELECT 1 FROM vpcs b WHERE b.vni = a.vni + 1)) END AS n",
		    "i", (int64_t)NB_VNI_MAX);

	return int_of(r, o, "n", vni);
}

int nb_store_vpc_insert(struct nb_store *st, const char *id, const char *account_id,
			const char *cidr, int64_t vni, int is_default)
{
	return exec0(nb_store_q_exec(st,
				     "INSERT INTO vpcs (id, account_id, cidr, vni, is_default,"
				     " created_at) VALUES (?, ?, ?, ?, ?, ?)",
				     "sssiii", id, account_id, cidr, vni, (int64_t)is_default,
				     nb_wall_ms()));
}

#define VPC_COLS "id, account_id, cidr, vni, is_default, created_at"

int nb_store_vpc_get(struct nb_store *st, const char *account_id, const char *id, json_t **out)
{
	return row(st, out,
		   "SELECT " VPC_COLS " FROM vpcs WHERE id = ?1 AND (?2 IS NULL OR account_id = ?2)",
		   "ss", id, account_id);
}

int nb_store_vpc_default(struct nb_store *st, const char *account_id, json_t **out)
{
	return row(st, out, "SELECT " VPC_COLS " FROM vpcs WHERE account_id = ? AND is_default = 1",
		   "s", account_id);
}

int nb_store_vpcs_list(struct nb_store *st, const char *account_id, json_t **out)
{
	return rows(st, out,
		    "SELECT " VPC_COLS " FROM vpcs WHERE ?1 IS NULL OR account_id = ?1"
		    " ORDER BY created_at, id",
		    "s", account_id);
}

int nb_store_vpc_deps(struct nb_store *st, const char *id, json_t **out)
{
	return row(st, out,
		   "SELECT (SELECT count(*) FROM subnets WHERE vpc_id = ?1) AS subnets,"
		   " (SELECT count(*) FROM security_groups WHERE vpc_id = ?1 AND name != 'default')"
		   " AS groups, (SELECT count(*) FROM network_interfaces WHERE vpc_id = ?1)"
		   " AS interfaces",
		   "s", id);
}

int nb_store_vpc_delete(struct nb_store *st, const char *id)
{
	int r = nb_store_begin(st);

	if (r < 0)
		return r;
	r = nb_store_q_exec(st,
			    "DELETE FROM sg_rules WHERE group_id IN"
			    " (SELECT id FROM security_groups WHERE vpc_id = ?)",
			    "s", id);
	if (r >= 0)
		r = nb_store_q_exec(st,
				    "DELETE FROM tags WHERE resource_id IN"
				    " (SELECT id FROM security_groups WHERE vpc_id = ?)",
				    "s", id);
	if (r >= 0)
		r = nb_store_q_exec(st, "DELETE FROM security_groups WHERE vpc_id = ?", "s", id);
	if (r >= 0)
		r = exec1(nb_store_q_exec(st, "DELETE FROM vpcs WHERE id = ?", "s", id));
	if (r < 0) {
		nb_store_rollback(st);
		return r;
	}
	return nb_store_commit(st);
}

int nb_store_accounts_without_vpc(struct nb_store *st, json_t **out)
{
	return rows(st, out,
		    "SELECT id FROM accounts a WHERE NOT EXISTS"
		    " (SELECT 1 FROM vpcs v WHERE v.account_id = a.id AND v.is_default = 1)"
		    " ORDER BY created_at",
		    NULL);
}

/* ---- subnets ---- */

int nb_store_subnet_insert(struct nb_store *st, const char *id, const char *account_id,
			   const char *vpc_id, const char *cidr, int64_t net, int prefix,
			   const char *az, int is_default)
{
	return exec0(nb_store_q_exec(
		st,
		"INSERT INTO subnets (id, account_id, vpc_id, cidr, net, prefix, az, is_default,"
		" created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
		"ssssiisii", id, account_id, vpc_id, cidr, net, (int64_t)prefix, az,
		(int64_t)is_default, nb_wall_ms()));
}

#define SUBNET_COLS                                                                        \
	"s.id, s.account_id, s.vpc_id, s.cidr, s.net, s.prefix, s.az, s.is_default,"       \
	" s.map_public_ip, s.created_at,"                                                  \
	" (SELECT count(*) FROM network_interfaces n WHERE n.subnet_id = s.id) AS used"

int nb_store_subnet_get(struct nb_store *st, const char *account_id, const char *id,
			json_t **out)
{
	return row(st, out,
		   "SELECT " SUBNET_COLS " FROM subnets s WHERE s.id = ?1"
		   " AND (?2 IS NULL OR s.account_id = ?2)",
		   "ss", id, account_id);
}

int nb_store_subnets_list(struct nb_store *st, const char *account_id, json_t **out)
{
	return rows(st, out,
		    "SELECT " SUBNET_COLS " FROM subnets s WHERE ?1 IS NULL OR s.account_id = ?1"
		    " ORDER BY s.created_at, s.id",
		    "s", account_id);
}

int nb_store_subnets_of_vpc(struct nb_store *st, const char *vpc_id, json_t **out)
{
	return rows(st, out,
		    "SELECT " SUBNET_COLS " FROM subnets s WHERE s.vpc_id = ?"
		    " ORDER BY s.created_at, s.id",
		    "s", vpc_id);
}

int nb_store_subnet_default(struct nb_store *st, const char *vpc_id, json_t **out)
{
	return row(st, out,
		   "SELECT " SUBNET_COLS " FROM subnets s WHERE s.vpc_id = ? AND s.is_default = 1"
		   " ORDER BY s.created_at LIMIT 1",
		   "s", vpc_id);
}

int nb_store_subnet_delete(struct nb_store *st, const char *id)
{
	return exec1(nb_store_q_exec(st, "DELETE FROM subnets WHERE id = ?", "s", id));
}

/* ---- security groups ---- */

int nb_store_sg_insert(struct nb_store *st, const char *id, const char *account_id,
		       const char *vpc_id, const char *name, const char *description)
{
	return exec0(nb_store_q_exec(st,
				     "INSERT INTO security_groups (id, account_id, vpc_id, name,"
				     " description, created_at) VALUES (?, ?, ?, ?, ?, ?)",
				     "sssssi", id, account_id, vpc_id, name, description,
				     nb_wall_ms()));
}

#define SG_COLS "id, account_id, vpc_id, name, description, created_at"

int nb_store_sg_get(struct nb_store *st, const char *account_id, const char *id, json_t **out)
{
	return row(st, out,
		   "SELECT " SG_COLS " FROM security_groups WHERE id = ?1"
		   " AND (?2 IS NULL OR account_id = ?2)",
		   "ss", id, account_id);
}

int nb_store_sg_by_name(struct nb_store *st, const char *account_id, const char *vpc_id,
			const char *name, json_t **out)
{
	return row(st, out,
		   "SELECT " SG_COLS " FROM security_groups WHERE account_id = ? AND vpc_id = ?"
		   " AND name = ?",
		   "sss", account_id, vpc_id, name);
}

int nb_store_sgs_list(struct nb_store *st, const char *account_id, json_t **out)
{
	return rows(st, out,
		    "SELECT " SG_COLS " FROM security_groups WHERE ?1 IS NULL OR account_id = ?1"
		    " ORDER BY created_at, id",
		    "s", account_id);
}

int nb_store_sg_deps(struct nb_store *st, const char *id, json_t **out)
{
	return row(st, out,
		   "SELECT (SELECT count(*) FROM eni_groups WHERE group_id = ?1) AS interfaces,"
		   " (SELECT count(*) FROM sg_rules WHERE ref_group_id = ?1 AND group_id != ?1)"
		   " AS referrers",
		   "s", id);
}

int nb_store_sg_delete(struct nb_store *st, const char *id)
{
	return exec1(nb_store_q_exec(st, "DELETE FROM security_groups WHERE id = ?", "s", id));
}

/* ---- rules ---- */

int nb_store_rule_insert(struct nb_store *st, const char *id, const char *group_id, int egress,
			 const char *protocol, int64_t from_port, int64_t to_port,
			 const char *cidr, const char *ref_group_id, const char *description)
{
	return exec0(nb_store_q_exec(
		st,
		"INSERT INTO sg_rules (id, group_id, egress, protocol, from_port, to_port, cidr,"
		" ref_group_id, description, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		"ssisiisssi", id, group_id, (int64_t)egress, protocol, from_port, to_port, cidr,
		ref_group_id, description ? description : "", nb_wall_ms()));
}

#define RULE_COLS                                                                          \
	"r.id, r.group_id, r.egress, r.protocol, r.from_port, r.to_port, r.cidr,"          \
	" r.ref_group_id, r.description, r.created_at"

int nb_store_rule_find(struct nb_store *st, const char *group_id, int egress,
		       const char *protocol, int64_t from_port, int64_t to_port, const char *cidr,
		       const char *ref_group_id, json_t **out)
{
	return row(st, out,
		   "SELECT " RULE_COLS " FROM sg_rules r WHERE r.group_id = ? AND r.egress = ?"
		   " AND r.protocol = ? AND r.from_port = ? AND r.to_port = ?"
		   " AND coalesce(r.cidr, '') = coalesce(?, '')"
		   " AND coalesce(r.ref_group_id, '') = coalesce(?, '')",
		   "sisiiss", group_id, (int64_t)egress, protocol, from_port, to_port, cidr,
		   ref_group_id);
}

int nb_store_rule_delete(struct nb_store *st, const char *id)
{
	return exec1(nb_store_q_exec(st, "DELETE FROM sg_rules WHERE id = ?", "s", id));
}

int nb_store_rules_of(struct nb_store *st, const char *group_id, json_t **out)
{
	return rows(st, out,
		    "SELECT " RULE_COLS " FROM sg_rules r WHERE r.group_id = ?"
		    " ORDER BY r.egress, r.rowid",
		    "s", group_id);
}

int nb_store_rules_list(struct nb_store *st, const char *account_id, json_t **out)
{
	return rows(st, out,
		    "SELECT " RULE_COLS ", g.account_id FROM sg_rules r"
		    " JOIN security_groups g ON g.id = r.group_id WHERE g.account_id = ?"
		    " ORDER BY g.created_at, g.id, r.egress, r.rowid",
		    "s", account_id);
}

/* ---- network interfaces ---- */

/* The lowest n in [first, last] not in the set of (table, column) rows
 * matching the scope. */
int nb_store_ip_next(struct nb_store *st, const char *subnet_id, int64_t first, int64_t last,
		     int64_t *n)
{
	json_t *o = NULL;
	int r = row(st, &o,
		    "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM network_interfaces"
		    "  WHERE subnet_id = ?1 AND ip_n = ?2) THEN ?2 ELSE"
		    " (SELECT min(a.ip_n + 1) FROM network_interfaces a WHERE a.subnet_id = ?1"
		    "  AND a.ip_n >= ?2 AND a.ip_n + 1 <= ?3 AND NOT EXISTS"
		    "  (SELECT 1 FROM network_interfaces b WHERE b.subnet_id = ?1"
		    "   AND b.ip_n = a.ip_n + 1)) END AS n",
		    "sii", subnet_id, first, last);

	if (r == 0 && first > last) {
		json_decref(o);
		return -NB_E_CAPACITY;
	}
	return int_of(r, o, "n", n);
}

int nb_store_ip_taken(struct nb_store *st, const char *subnet_id, int64_t n, int *taken)
{
	json_t *o = NULL;
	int64_t v = 0;
	int r = row(st, &o,
		    "SELECT count(*) AS n FROM network_interfaces WHERE subnet_id = ? AND ip_n = ?",
		    "si", subnet_id, n);

	r = int_of(r, o, "n", &v);
	*taken = v > 0;
	return r;
}

int nb_store_mac_taken(struct nb_store *st, const char *vpc_id, const char *mac, int *taken)
{
	json_t *o = NULL;
	int64_t v = 0;
	int r = row(st, &o,
		    "SELECT count(*) AS n FROM network_interfaces WHERE vpc_id = ? AND mac = ?",
		    "ss", vpc_id, mac);

	r = int_of(r, o, "n", &v);
	*taken = v > 0;
	return r;
}

int nb_store_eni_insert(struct nb_store *st, const char *id, const char *account_id,
			const char *subnet_id, const char *vpc_id, const char *mac,
			const char *ip, int64_t ip_n, const char *instance_id,
			int64_t device_index)
{
	return exec0(nb_store_q_exec(
		st,
		"INSERT INTO network_interfaces (id, account_id, subnet_id, vpc_id, mac, ip, ip_n,"
		" instance_id, device_index, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		"ssssssisii", id, account_id, subnet_id, vpc_id, mac, ip, ip_n, instance_id,
		device_index, nb_wall_ms()));
}

int nb_store_eni_group_add(struct nb_store *st, const char *eni_id, const char *group_id)
{
	return exec0(nb_store_q_exec(st, "INSERT INTO eni_groups (eni_id, group_id) VALUES (?, ?)",
				     "ss", eni_id, group_id));
}

#define ENI_COLS                                                                           \
	"n.id, n.account_id, n.subnet_id, n.vpc_id, n.mac, n.ip, n.ip_n, n.instance_id,"   \
	" n.device_index, n.created_at, s.cidr AS subnet_cidr, s.prefix, s.net, s.az,"     \
	" i.host_id, i.state AS instance_state, i.http_tokens, i.http_hop_limit,"          \
	" i.http_endpoint, a.public_ip, a.id AS allocation_id, a.association_id"
#define ENI_FROM                                                                           \
	" FROM network_interfaces n JOIN subnets s ON s.id = n.subnet_id"                  \
	" LEFT JOIN instances i ON i.id = n.instance_id"                                   \
	" LEFT JOIN addresses a ON a.eni_id = n.id"

int nb_store_eni_get(struct nb_store *st, const char *account_id, const char *id, json_t **out)
{
	return row(st, out,
		   "SELECT " ENI_COLS ENI_FROM " WHERE n.id = ?1 AND (?2 IS NULL OR n.account_id = ?2)",
		   "ss", id, account_id);
}

int nb_store_enis_list(struct nb_store *st, const char *account_id, json_t **out)
{
	return rows(st, out,
		    "SELECT " ENI_COLS ENI_FROM " WHERE ?1 IS NULL OR n.account_id = ?1"
		    " ORDER BY n.created_at, n.id",
		    "s", account_id);
}

int nb_store_enis_of_instance(struct nb_store *st, const char *instance_id, json_t **out)
{
	return rows(st, out,
		    "SELECT " ENI_COLS ENI_FROM " WHERE n.instance_id = ? ORDER BY n.device_index",
		    "s", instance_id);
}

int nb_store_eni_groups(struct nb_store *st, const char *account_id, const char *eni_id,
			json_t **out)
{
	return rows(st, out,
		    "SELECT e.eni_id, e.group_id, g.name FROM eni_groups e"
		    " JOIN security_groups g ON g.id = e.group_id"
		    " WHERE (?1 IS NULL OR e.eni_id = ?1) AND (?2 IS NULL OR g.account_id = ?2)"
		    " ORDER BY e.eni_id, g.created_at, g.id",
		    "ss", eni_id, account_id);
}

int nb_store_sg_member_ips(struct nb_store *st, const char *group_id, json_t **out)
{
	return rows(st, out,
		    "SELECT n.ip FROM eni_groups e JOIN network_interfaces n ON n.id = e.eni_id"
		    " WHERE e.group_id = ? ORDER BY n.ip_n",
		    "s", group_id);
}

int nb_store_instances_without_eni(struct nb_store *st, json_t **out)
{
	return rows(st, out,
		    "SELECT i.id, i.account_id, i.mac, i.host_id FROM instances i"
		    " WHERE i.state != 'terminated' AND NOT EXISTS"
		    " (SELECT 1 FROM network_interfaces n WHERE n.instance_id = i.id)"
		    " ORDER BY i.created_at, i.launch_index",
		    NULL);
}

int nb_store_vpc_hosts(struct nb_store *st, const char *vpc_id, json_t **out)
{
	return rows(st, out,
		    "SELECT DISTINCT host_id FROM instances WHERE vpc_id = ?"
		    " AND state != 'terminated' AND host_id IS NOT NULL",
		    "s", vpc_id);
}

/* ---- elastic IPs ---- */

int nb_store_address_next(struct nb_store *st, int64_t first, int64_t last, int64_t *n)
{
	json_t *o = NULL;
	int r;

	if (first > last)
		return -NB_E_CAPACITY;
	r = row(st, &o,
		"SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM addresses WHERE ip_n = ?1) THEN ?1 ELSE"
		" (SELECT min(a.ip_n + 1) FROM addresses a WHERE a.ip_n >= ?1 AND a.ip_n + 1 <= ?2"
		"  AND NOT EXISTS (SELECT 1 FROM addresses b WHERE b.ip_n = a.ip_n + 1)) END AS n",
		"ii", first, last);
	return int_of(r, o, "n", n);
}

int nb_store_address_insert(struct nb_store *st, const char *id, const char *account_id,
			    const char *public_ip, int64_t ip_n)
{
	return exec0(nb_store_q_exec(st,
				     "INSERT INTO addresses (id, account_id, public_ip, ip_n,"
				     " created_at) VALUES (?, ?, ?, ?, ?)",
				     "sssii", id, account_id, public_ip, ip_n, nb_wall_ms()));
}

#define ADDR_COLS                                                                          \
	"a.id, a.account_id, a.public_ip, a.ip_n, a.association_id, a.eni_id,"             \
	" a.created_at, n.instance_id, n.ip AS private_ip, n.vpc_id, i.host_id"
#define ADDR_FROM                                                                          \
	" FROM addresses a LEFT JOIN network_interfaces n ON n.id = a.eni_id"              \
	" LEFT JOIN instances i ON i.id = n.instance_id"

int nb_store_address_get(struct nb_store *st, const char *account_id, const char *id,
			 const char *public_ip, json_t **out)
{
	if (public_ip)
		return row(st, out,
			   "SELECT " ADDR_COLS ADDR_FROM " WHERE a.public_ip = ?1"
			   " AND (?2 IS NULL OR a.account_id = ?2)",
			   "ss", public_ip, account_id);
	return row(st, out,
		   "SELECT " ADDR_COLS ADDR_FROM " WHERE a.id = ?1 AND (?2 IS NULL OR a.account_id = ?2)",
		   "ss", id, account_id);
}

int nb_store_address_by_assoc(struct nb_store *st, const char *account_id,
			      const char *association_id, json_t **out)
{
	return row(st, out,
		   "SELECT " ADDR_COLS ADDR_FROM " WHERE a.association_id = ?1"
		   " AND (?2 IS NULL OR a.account_id = ?2)",
		   "ss", association_id, account_id);
}

int nb_store_addresses_list(struct nb_store *st, const char *account_id, json_t **out)
{
	return rows(st, out,
		    "SELECT " ADDR_COLS ADDR_FROM " WHERE ?1 IS NULL OR a.account_id = ?1"
		    " ORDER BY a.created_at, a.id",
		    "s", account_id);
}

int nb_store_address_associate(struct nb_store *st, const char *id, const char *association_id,
			       const char *eni_id)
{
	return exec1(nb_store_q_exec(st,
				     "UPDATE addresses SET association_id = ?, eni_id = ? WHERE id = ?",
				     "sss", eni_id ? association_id : NULL, eni_id, id));
}

int nb_store_address_delete(struct nb_store *st, const char *id)
{
	return exec1(nb_store_q_exec(st, "DELETE FROM addresses WHERE id = ?", "s", id));
}

/* ---- instances ---- */

int nb_store_instance_set_net(struct nb_store *st, const char *id, const char *subnet_id,
			      const char *vpc_id, const char *ip, const char *mac,
			      const char *http_tokens, int64_t hop_limit, const char *http_endpoint)
{
	return exec1(nb_store_q_exec(st,
				     "UPDATE instances SET subnet_id = coalesce(?, subnet_id),"
				     " vpc_id = coalesce(?, vpc_id), ip = coalesce(?, ip),"
				     " mac = coalesce(?, mac), http_tokens = ?,"
				     " http_hop_limit = ?, http_endpoint = ?, updated_at = ?"
				     " WHERE id = ?",
				     "sssssisis", subnet_id, vpc_id, ip, mac, http_tokens, hop_limit,
				     http_endpoint, nb_wall_ms(), id));
}
