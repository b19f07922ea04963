/* Placement: which host takes each new instance. Pure: works on a snapshot
 * of the hosts' capacity and usage taken inside the launch transaction. */
#ifndef NB_PLACE_H
#define NB_PLACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NB_SCHED_MAX_IPS 1024

struct nb_sched_host {
	char id[32];
	char name[64];
	char cidr[32];
	bool up;
	int64_t vcpus, memory_mb, disk_gb;                /* offered */
	int64_t used_vcpus, used_memory_mb, used_disk_gb; /* held */
	unsigned char ip_used[NB_SCHED_MAX_IPS / 8];      /* pool index bitmap */
};

struct nb_sched_need {
	int64_t vcpus, memory_mb, disk_gb;
};

/* Places up to count instances, at least min; placed[i] points at the
 * chosen host's id (inside hosts). Each placement is charged to its host, so
 * the next sees it. Returns how many were placed, or -NB_E_CAPACITY with err
 * naming the shortfall when fewer than min fit. */
int nb_sched_place(struct nb_sched_host *hosts, size_t n, const struct nb_sched_need *need,
		   int count, int min, char **placed, char *err, size_t errsz);
/* Whether need fits on h now; if not, err says what is short. */
bool nb_sched_fits(const struct nb_sched_host *h, const struct nb_sched_need *need, char *err,
		   size_t errsz);
void nb_sched_ip_mark(struct nb_sched_host *h, const char *ip);
/* The lowest free address of h's pool into ip (marked used). */
int nb_sched_ip_take(struct nb_sched_host *h, char ip[16]);

#endif
