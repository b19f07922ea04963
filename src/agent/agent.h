/* nubo-agent internals: one per host. It pulls the desired state of its
 * instances from nubod, makes it true with QEMU processes (each under a
 * nubo-shim that outlives the agent), and reports what is actually there. */
#ifndef NB_AGENT_H
#define NB_AGENT_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent/qmp/qmp.h"

#define NB_AGENT_MAX_VMS 512

struct nb_agent;
struct nb_imds;
struct nb_vpcs;

struct nb_vm {
	char id[32];
	char dir[600];
	json_t *desired;       /* latest desired entry, NULL when not desired */
	struct nb_qmp *qmp;    /* open while QEMU runs */
	int pid;               /* QEMU's pid, 0 when not running */
	int64_t started_seq;   /* start_seq QEMU was last started for */
	int64_t reboot_done;   /* reboot_seq last acted on */
	char actual[16];       /* pending, running, paused, stopped, terminated, error */
	char reason[256];
	int64_t stop_deadline; /* monotonic ms: hard stop after this */
	bool powerdown_sent;
	bool stop_forced;      /* the stop asked skips ACPI */
	bool gone;             /* terminated and cleaned: drop after reporting */
	/* A start in flight: the shim runs QEMU, whose QMP socket is not up yet.
	 * Nonzero: the monotonic ms by which QMP must answer. */
	int64_t qmp_wait_until;
	int64_t start_want_seq;  /* the start_seq that start is for */
	/* QMP connected, QEMU's greeting not read yet (-1: none): the main
	 * loop polls it, so the agent never blocks on a QEMU still coming up */
	int qmp_greet_fd;
	bool start_fresh;        /* that start created the instance directory */
	/* when that start began and its steps' ends (monotonic us), logged once
	 * QMP answers: image, disk, cgroups, network, shim */
	int64_t start_us[6];
	char netns[24];          /* the VPC namespace of its tap; "": first form */
};

struct nb_agent_cfg {
	char controller[256];
	char join_token[128];
	char name[64];
	char listen[64];
	char advertise[128];
	char state_dir[400];
	char accel_mode[8];
	char bridge[16];
	char cidr[32];
	char qemu[128];
	char shim[400];
	char cgroup_root[128];
	bool network;
	int stop_timeout_s;
	int vpc_keep_s; /* a VPC's namespace outlives its last instance here by this */
	uint64_t console_log_max;
	int64_t vcpus, memory_mb, disk_gb;
};

struct nb_agent {
	struct nb_agent_cfg cfg;
	char accel[8];         /* chosen: kvm or tcg */
	char qemu_version[32];
	char host_id[32];
	char token[128];       /* agent token from join */
	pthread_mutex_t lock;  /* guards vms, desired_*, dirty */
	struct nb_vm *vms[NB_AGENT_MAX_VMS];
	int nvms;
	bool have_desired;     /* a desired document arrived since start */
	int64_t generation;
	bool dirty;            /* something to report */
	int wake_fd[2];        /* pipe: wakes the reconcile loop */
	volatile int stopping;
	bool teardown;         /* --teardown: clean the host and exit */
	struct nb_imds *imds;  /* the instance metadata service (metadata.c) */
	json_t *net_doc;       /* latest desired document: its vpcs, security_groups */
	/* The latest whole desired document, for the metadata service: never
	 * changed once set (replaced whole), guarded by imds_lock alone so a
	 * lookup never waits for a->lock, which the main loop holds while it
	 * starts guests. */
	pthread_mutex_t imds_lock;
	json_t *imds_doc;
	struct nb_vpcs *vpcs;  /* vpc.c's view of the tenant networks here */
};

/* accel.c: "kvm" when /dev/kvm opens, the CPU has vmx/svm and a probe guest
 * really runs under KVM within a few seconds; "tcg" otherwise. */
const char *nb_accel_detect(const char *qemu, const char *workdir);

/* vm.c */
struct nb_vm *nb_vm_new(struct nb_agent *a, const char *id);
void nb_vm_free(struct nb_vm *vm);
/* Re-adopts a QEMU still running from an earlier agent (pidfile + QMP). */
void nb_vm_adopt(struct nb_agent *a, struct nb_vm *vm);
/* One reconcile step for vm: acts towards vm->desired, updates actual. */
void nb_vm_reconcile(struct nb_agent *a, struct nb_vm *vm);
/* Reads pending QMP events / notices a dead QEMU. */
void nb_vm_pump(struct nb_agent *a, struct nb_vm *vm);
/* True while an instance's QEMU has been started but not answered QMP yet:
 * the main loop then polls briefly so the start completes without delay. */
bool nb_vm_starting(const struct nb_vm *vm);
/* The fd a starting QEMU's greeting will arrive on, for the main loop's
 * poll; -1 while its QMP socket does not take connections yet. */
int nb_vm_greet_fd(const struct nb_vm *vm);
/* Copies vm's disk, flattened, to dir/snap-<name>.qcow2: a QMP backup job
 * while QEMU runs (a point-in-time copy), qemu-img convert while stopped.
 * Call with a->lock held. */
int nb_vm_snapshot(struct nb_agent *a, struct nb_vm *vm, const char *name, char *err,
		   size_t errsz);
/* Stops vm's QEMU (SIGTERM, then SIGKILL) and removes its tap and cgroups;
 * the disk stays. For `nubo-agent --teardown`. */
void nb_vm_teardown(struct nb_agent *a, struct nb_vm *vm);
/* The instances' network (bridge, dnsmasq, fixed leases). */
int nb_vm_net_sync(struct nb_agent *a);

/* vpc.c: tenant networks (docs/network.md), with a->lock held. */
/* The desired entry's NIC of device index 0, or NULL (first form). */
json_t *nb_vpc_nic0(const json_t *desired);
/* The namespace name of vpc_id (from its VNI in a->net_doc), or -ENOENT. */
int nb_vpc_ns_of(struct nb_agent *a, const char *vpc_id, char ns[24]);
/* Makes the VPC's network ready for a start: namespace, dnsmasq, the tap
 * (opened first, *tap_fd gets its queue), rules with the starting NIC in
 * them, then the tap on the VPC's bridge capped at rate_mbps. ns gets the
 * namespace name. On failure *tap_fd is -1; the caller deletes the tap. */
int nb_vpc_prepare(struct nb_agent *a, const char *vpc_id, const char *tap, uint64_t rate_mbps,
		   char ns[24], int *tap_fd, char *err, size_t errsz);
/* Brings every VPC namespace, rule set, lease list, metadata listener and
 * the host table in line with the desired state; removes the namespaces no
 * instance here uses. Cheap when nothing changed. */
void nb_vpc_sync(struct nb_agent *a);
/* `nubo-agent --teardown`: every namespace of this agent, the host table. */
void nb_vpc_teardown(struct nb_agent *a);

/* metadata.c: the instance metadata service (net/imds.c) over this agent's
 * instances. A request that arrives on the listener of VPC vpc_id from
 * source address S is answered for the instance whose nics[] entry in that
 * VPC has ip == S (its desired `metadata` and that NIC); anything else 404.
 * start: at agent start, before any listen; its own threads, never the
 * main loop's. stop: at exit, closes every listener. */
int nb_agent_imds_start(struct nb_agent *a);
void nb_agent_imds_stop(struct nb_agent *a);
/* Serves the metadata service on fd, a TCP socket already bound (in the
 * VPC's namespace) to 169.254.169.254:80; listen() is called here when it
 * is not listening yet. Takes fd in every case (closed on error, and at
 * unlisten/stop). A second listen for the same vpc_id replaces the first.
 * Returns 0 or a negative errno. Callable with or without a->lock held. */
int nb_agent_imds_listen(struct nb_agent *a, const char *vpc_id, int fd);
/* Stops serving vpc_id and closes its socket; nothing when not serving. */
void nb_agent_imds_unlisten(struct nb_agent *a, const char *vpc_id);
/* Hands the metadata service the new desired document (takes a reference). */
void nb_agent_imds_update(struct nb_agent *a, json_t *doc);

#endif
