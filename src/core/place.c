#include "core/place.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "net/net.h"

bool nb_sched_fits(const struct nb_sched_host *h, const struct nb_sched_need *need, char *err,
		   size_t errsz)
{
	int64_t fv = h->vcpus - h->used_vcpus, fm = h->memory_mb - h->used_memory_mb;
	int64_t fd = h->disk_gb - h->used_disk_gb;

	if (!h->up) {
		snprintf(err, errsz, "host %s is down", h->name);
		return false;
	}
	if (fv < need->vcpus || fm < need->memory_mb || fd < need->disk_gb) {
		snprintf(err, errsz,
			 "host %s has %lld vCPU, %lld MiB memory and %lld GiB disk free; needs "
			 "%lld vCPU, %lld MiB and %lld GiB",
			 h->name, (long long)(fv < 0 ? 0 : fv), (long long)(fm < 0 ? 0 : fm),
			 (long long)(fd < 0 ? 0 : fd), (long long)need->vcpus,
			 (long long)need->memory_mb, (long long)need->disk_gb);
		return false;
	}
	return true;
}

int nb_sched_place(struct nb_sched_host *hosts, size_t n, const struct nb_sched_need *need,
		   int count, int min, char **placed, char *err, size_t errsz)
{
	char why[256] = "no host has joined";

	for (int i = 0; i < count; i++) {
		struct nb_sched_host *best = NULL;
		for (size_t k = 0; k < n; k++) {
			struct nb_sched_host *h = &hosts[k];
			if (!nb_sched_fits(h, need, why, sizeof(why)))
				continue;
			/* spread: the host with the most free memory wins */
			if (!best || h->memory_mb - h->used_memory_mb >
					     best->memory_mb - best->used_memory_mb)
				best = h;
		}
		if (!best && i >= min)
			return i;
		if (!best) {
			snprintf(err, errsz,
				 "not enough capacity for %d instance(s) of %lld vCPU, %lld MiB "
				 "(%d placed): %s",
				 count, (long long)need->vcpus, (long long)need->memory_mb, i, why);
			return -NB_E_CAPACITY;
		}
		best->used_vcpus += need->vcpus;
		best->used_memory_mb += need->memory_mb;
		best->used_disk_gb += need->disk_gb;
		placed[i] = best->id;
	}
	return count;
}

void nb_sched_ip_mark(struct nb_sched_host *h, const char *ip)
{
	struct in_addr a;
	uint32_t net;
	int prefix;

	if (!ip || inet_pton(AF_INET, ip, &a) != 1 || nb_net_cidr_parse(h->cidr, &net, &prefix) < 0)
		return;
	/* pool index 0 is network + 2 (.1 is the gateway) */
	int64_t idx = (int64_t)ntohl(a.s_addr) - (int64_t)net - 2;
	if (idx >= 0 && idx < NB_SCHED_MAX_IPS)
		h->ip_used[idx / 8] |= (unsigned char)(1u << (idx % 8));
}

int nb_sched_ip_take(struct nb_sched_host *h, char ip[16])
{
	for (int i = 0; i < NB_SCHED_MAX_IPS; i++) {
		if (h->ip_used[i / 8] & (1u << (i % 8)))
			continue;
		if (nb_net_pool_addr(h->cidr, i, ip) < 0)
			return -NB_E_CAPACITY;
		h->ip_used[i / 8] |= (unsigned char)(1u << (i % 8));
		return 0;
	}
	return -NB_E_CAPACITY;
}
