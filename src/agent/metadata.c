/* The instance metadata service over this agent's instances: starts and
 * stops net/imds.c's server, hands it the VPC namespaces' listening sockets
 * (from vpc.c), and answers its lookups from the desired state. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent.h"
#include "common/json.h"
#include "common/log.h"
#include "net/imds.h"

/* (VPC, source address) -> {"metadata", "nic"}: the instance whose NIC in
 * that VPC has that address. Copies, made under a->lock: the desired
 * documents may be replaced as soon as it is let go. */
static json_t *lookup(void *arg, const char *vpc_id, const char *src_ip)
{
	struct nb_agent *a = arg;
	json_t *out = NULL;

	pthread_mutex_lock(&a->lock);
	for (int i = 0; i < a->nvms && !out; i++) {
		const json_t *d = a->vms[i]->desired, *nic;
		json_t *md = json_object_get(d, "metadata");
		size_t k;

		if (!json_is_object(md) || !strcmp(nb_json_str_or(d, "desired_state"), "terminated"))
			continue;
		json_array_foreach(json_object_get(d, "nics"), k, nic)
		{
			json_t *n;
			const char *cidr;
			if (strcmp(nb_json_str_or(nic, "vpc_id"), vpc_id) ||
			    strcmp(nb_json_str_or(nic, "ip"), src_ip))
				continue;
			n = json_deep_copy(nic);
			cidr = nb_json_str(json_object_get(json_object_get(a->net_doc, "vpcs"), vpc_id),
					   "cidr");
			if (n && cidr)
				json_object_set_new(n, "vpc_cidr", json_string(cidr));
			out = json_pack("{s:o, s:o}", "metadata", json_deep_copy(md), "nic",
					n ? n : json_object());
			break;
		}
	}
	pthread_mutex_unlock(&a->lock);
	if (!out)
		nb_debug("metadata service: no instance has %s in %s", src_ip, vpc_id);
	return out;
}

int nb_agent_imds_start(struct nb_agent *a)
{
	int r = nb_imds_start(&a->imds, lookup, a);

	if (r < 0)
		nb_error("metadata service: cannot start: %s", strerror(-r));
	return r;
}

void nb_agent_imds_stop(struct nb_agent *a)
{
	nb_imds_stop(a->imds);
	a->imds = NULL;
}

int nb_agent_imds_listen(struct nb_agent *a, const char *vpc_id, int fd)
{
	int r;

	if (!a->imds) {
		if (fd >= 0)
			close(fd);
		return -ENODEV;
	}
	r = nb_imds_listen(a->imds, vpc_id, fd);
	if (r < 0)
		nb_warn("metadata service: cannot serve %s: %s", vpc_id, strerror(-r));
	else
		nb_debug("metadata service: serving %s", vpc_id);
	return r;
}

void nb_agent_imds_unlisten(struct nb_agent *a, const char *vpc_id)
{
	nb_imds_unlisten(a->imds, vpc_id);
}
