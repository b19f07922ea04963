/* The controller's core: instances, images, types, hosts and the scheduler,
 * on top of the store. Requests come in as JSON already parsed by the API
 * edge; errors come back as -NB_E_* with err naming what was wrong. */
#ifndef NB_CORE_H
#define NB_CORE_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "core/secrets.h"
#include "store/store.h"

struct nb_s3;
struct nb_s3_reader;

/* The image library lives in the object store: every blob (disk, kernel,
 * initrd, upload) is the object blobs/<sha256> of this bucket. Its owner is
 * no account (account ids are "acct-..."), so no access key reaches it: a
 * tenant gets AccessDenied or BucketAlreadyExists as from any bucket of
 * another account. */
#define NB_LIBRARY_BUCKET "nubo-library"
#define NB_LIBRARY_OWNER "nubo-system"
#define NB_LIBRARY_PART_SIZE (1ULL << 30) /* blobs above 5 GiB go in parts of this */

struct nb_ctl {
	struct nb_store *st;
	char state_dir[512];
	struct nb_s3 *s3;        /* the object store (borrowed): the image library */
	char blob_dir[600];      /* <state_dir>/library: the old library, moved into s3 at start */
	char tmp_dir[600];       /* <state_dir>/tmp: disks being converted or downloaded */
	int cpu_overcommit;      /* vCPUs a host offers per core */
	int64_t reserved_memory_mb; /* memory kept back for the host itself */
	int host_dead_after_s;
	int max_count;           /* instances one run call may make */
	uint64_t max_blob;       /* largest upload */
	pthread_mutex_t gen_lock;
	pthread_cond_t gen_cond; /* broadcast when any host's desired state changes */
	uint64_t gen_epoch;
	bool stopping;           /* long polls return at once */
	int64_t quota_instances, quota_vcpus, quota_memory_mb; /* per-account defaults */
	int64_t quota_images;
	char region[64];
	char az[64];             /* the one availability zone of a single-region cloud */
	char eip_pool[32];       /* elastic IPs come from this IPv4 CIDR (docs/network.md) */
	int64_t quota_addresses; /* elastic IPs an account may hold */
};

#define NB_ERRSZ 256

int nb_ctl_init(struct nb_ctl *c, struct nb_store *st, const char *state_dir);
void nb_ctl_fini(struct nb_ctl *c);
/* Shipped instance types, written on first start only. */
int nb_ctl_seed_types(struct nb_ctl *c);

/* Instances. *out is the caller's. */
/* req: "image", "type", "count", "min_count", "name", "user_data" (base64),
 * "key_name", "tags", "client_token", and the network (core/vpc.h,
 * nb_core_net_plan): "subnet_id", "security_group_ids", "security_groups",
 * "private_ip", "metadata_options". Each instance gets interface 0 in the
 * subnet (the lowest free address) in the same transaction. */
int nb_core_run(struct nb_ctl *c, const char *account_id, const json_t *req, json_t **out,
		char *err, size_t errsz);
/* As nb_core_run; *code (may be NULL) gets the EC2 error code of a network
 * error (core/vpc.h), NULL for the others. */
int nb_core_run_ex(struct nb_ctl *c, const char *account_id, const json_t *req, json_t **out,
		   char *err, size_t errsz, const char **code);
int nb_core_instances(struct nb_ctl *c, const char *account_id, const char *state, int all,
		      json_t **out);
int nb_core_instance(struct nb_ctl *c, const char *account_id, const char *id, json_t **out,
		     char *err, size_t errsz);
/* action: start, stop, reboot, pause, resume, terminate. */
int nb_core_action(struct nb_ctl *c, const char *account_id, const char *id, const char *action,
		   const json_t *opts, json_t **out, char *err, size_t errsz);

/* Resizes a stopped instance to another type (its disk may only grow); a
 * bigger type must fit in the account's vCPU and memory quotas. */
int nb_core_resize(struct nb_ctl *c, const char *account_id, const char *id, const char *type,
		   json_t **out, char *err, size_t errsz);
/* The console log so far, fetched from the instance's host into out. */
int nb_core_console_output(struct nb_ctl *c, const char *account_id, const char *id,
			   struct nb_buf *out, char *err, size_t errsz);
/* The instance's host row (address, agent token), for console streams. */
int nb_core_instance_host(struct nb_ctl *c, const char *account_id, const char *id,
			  json_t **host, char *err, size_t errsz);

/* Images. */
int nb_core_images(struct nb_ctl *c, const char *account_id, json_t **out);
int nb_core_image(struct nb_ctl *c, const char *account_id, const char *ref, json_t **out,
		  char *err, size_t errsz);
/* Imports a disk into a new image: converted to qcow2 and stored in the
 * library under its sha256. req: "name", "os", "release", "arch",
 * "description", and the disk: "disk_blob" (an upload's sha256, with
 * optional "kernel_blob", "initrd_blob", "cmdline") or "source"
 * ("s3://bucket/key" or "bucket/key": an object read with account_id's
 * rights: its own bucket or a public-read one; another account's private
 * bucket is -NB_E_FORBIDDEN, a missing bucket or key -NB_E_NOT_FOUND).
 * *out is the caller's. */
int nb_core_image_create(struct nb_ctl *c, const char *account_id, const json_t *req,
			 json_t **out, char *err, size_t errsz);
/* Whether account_id may import from loc ("s3://bucket/key" or
 * "bucket/key"): 0, or the error nb_core_image_create would give. */
int nb_core_image_source_check(struct nb_ctl *c, const char *account_id, const char *loc,
			       char *err, size_t errsz);
/* CreateImage: snapshots an instance's disk (running: a QMP backup job on
 * its host; stopped: a flattened copy) into a new image, "pending" until the
 * copy is in the library; -NB_E_LIMIT beyond the account's images quota.
 * req: {"instance_id", "name", "description"}. */
int nb_core_image_snapshot(struct nb_ctl *c, const char *account_id, const json_t *req,
			   json_t **out, char *err, size_t errsz);
int nb_core_image_delete(struct nb_ctl *c, const char *account_id, const char *ref, char *err,
			 size_t errsz);
/* Hands c the object store (borrowed: it must outlive c) and readies the
 * library in it: creates the system bucket on first start, moves every file
 * of the old <state_dir>/library into it (verified, idempotent) and drops
 * what an interrupted upload or conversion left. Before any request. */
int nb_core_library_open(struct nb_ctl *c, struct nb_s3 *s3, char *err, size_t errsz);

/* Blob upload (PUT /v1/blobs): streamed into the library as it arrives and
 * named by its sha256 at the end. length: declared bytes, or -1. begin gives
 * *out to the caller, who ends it with commit (which consumes it, on error
 * too) or abort. */
struct nb_core_upload;
int nb_core_upload_begin(struct nb_ctl *c, int64_t length, struct nb_core_upload **out);
/* -E2BIG past max_blob; other errors of the store. */
int nb_core_upload_write(struct nb_core_upload *u, const void *data, size_t len);
/* Makes the upload durable as blobs/<sha256>, records account_id as one of
 * its owners and gives its sha256 in hex; *size (may be NULL) its bytes. */
int nb_core_upload_commit(struct nb_core_upload *u, const char *account_id, char sha256[65],
			  uint64_t *size);
/* Accepts NULL. */
void nb_core_upload_abort(struct nb_core_upload *u);
/* Opens blob sha256 of the library (no ownership check: agents' fetches).
 * out as from nb_s3_object_open: the caller closes it with
 * nb_s3_reader_close, on error too. -NB_E_NOT_FOUND when there is none. */
int nb_core_blob_open(struct nb_ctl *c, const char *sha256, struct nb_s3_reader *out);

/* Types. */
int nb_core_type_put(struct nb_ctl *c, const char *name, const json_t *req, json_t **out,
		     char *err, size_t errsz);

/* Accounts, access keys, quotas. */
int nb_core_account_create(struct nb_ctl *c, const char *name, json_t **out, char *err,
			   size_t errsz);
/* A new access key for user (made with role when missing; default user
 * "admin" with role admin) of account (id or name). *out holds the secret:
 * the only time it is shown. */
int nb_core_key_create(struct nb_ctl *c, const struct nb_secrets *secrets, const char *account,
		       const char *user, const char *role, json_t **out, char *err, size_t errsz);
/* Users of an account (id or name); role is admin, member or read-only.
 * *out is the caller's: nb_core_users {"account", "account_id", "users":
 * [{"id", "name", "role", "created_at", "keys"}]}, the others one user
 * (with "account", "account_id"). Deleting a user deletes its keys. */
int nb_core_users(struct nb_ctl *c, const char *account, json_t **out, char *err, size_t errsz);
int nb_core_user_create(struct nb_ctl *c, const char *account, const char *name,
			const char *role, json_t **out, char *err, size_t errsz);
int nb_core_user_set_role(struct nb_ctl *c, const char *account, const char *name,
			  const char *role, json_t **out, char *err, size_t errsz);
int nb_core_user_delete(struct nb_ctl *c, const char *account, const char *name, char *err,
			size_t errsz);
int nb_core_quotas_set(struct nb_ctl *c, const char *account, const json_t *req, json_t **out,
		       char *err, size_t errsz);
int nb_core_quotas_get(struct nb_ctl *c, const char *account, json_t **out, char *err,
		       size_t errsz);

/* Hosts and agents. */
int nb_core_hosts(struct nb_ctl *c, json_t **out);
int nb_core_agent_join(struct nb_ctl *c, const char *join_token_expected, const json_t *req,
		       json_t **out, char *err, size_t errsz);
/* Long poll: waits up to wait_s for the host's generation to pass since. */
int nb_core_agent_desired(struct nb_ctl *c, const char *host_id, int64_t since, int wait_s,
			  json_t **out);
int nb_core_agent_report(struct nb_ctl *c, const char *host_id, const json_t *report);
/* Marks the change for host_id and wakes its long poll. */
void nb_core_host_changed(struct nb_ctl *c, const char *host_id);
/* Wakes every long poll for good: the daemon is stopping. */
void nb_core_stop(struct nb_ctl *c);
/* Periodic housekeeping: purge old terminated instances. */
void nb_core_tick(struct nb_ctl *c);

#endif
