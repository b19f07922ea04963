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
 * that VPC has that address, from the newest desired document. The document
 * is immutable once handed over (nb_agent_imds_update replaces it whole), so
 * a reference taken under imds_lock is read without any lock: a lookup never
 * waits for the main loop. */
static json_t *lookup(void *arg, const char *vpc_id, const char *src_ip)
{
	struct nb_agent *a = arg;
	json_t *out = NULL, *doc, *d;
	size_t i;

	pthread_mutex_lock(&a->imds_lock);
	doc = json_incref(a->imds_doc);
	pthread_mutex_unlock(&a->imds_lock);
	json_array_foreach(json_object_get(doc, "instances"), i, d)
	{
		const json_t *nic;
		json_t *md = json_object_get(d, "metadata");
		size_t k;

		if (out)
			break;
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
			cidr = nb_json_str(json_object_get(json_object_get(doc, "vpcs"), vpc_id), "cidr");
			if (n && cidr)
				json_object_set_new(n, "vpc_cidr", json_string(cidr));
			out = json_pack("{s:o, s:o}", "metadata", json_deep_copy(md), "nic",
					n ? n : json_object());
			break;
		}
	}
	json_decref(doc);
	if (!out)
		nb_debug("metadata service: no instance has %s in %s", src_ip, vpc_id);
	return out;
}

void nb_agent_imds_update(struct nb_agent *a, json_t *doc)
{
	json_t *old;

	pthread_mutex_lock(&a->imds_lock);
	old = a->imds_doc;
	a->imds_doc = json_incref(doc);
	pthread_mutex_unlock(&a->imds_lock);
	json_decref(old);
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
	nb_agent_imds_update(a, NULL);
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
