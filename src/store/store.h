/* The store: the only module that speaks SQL. SQLite in WAL mode, schema
 * moved forward by numbered migrations (migrations.c). Rows come back as
 * jansson objects keyed by column name, which the API edge serialises as is.
 * One connection, serialised by a mutex: every function is thread-safe. */
#ifndef NB_STORE_H
#define NB_STORE_H

#include <jansson.h>
#include <stdint.h>

struct nb_store;

/* Opens (creating) the database at path and migrates it to the newest
 * schema; -EPROTO when the file's schema is newer than this build knows.
 * *out is the caller's; free with nb_store_close. */
int nb_store_open(const char *path, struct nb_store **out);
void nb_store_close(struct nb_store *st);
/* A counter bumped after every committed change to any row: what was read
 * under one value is current as long as the value stays. */
/* (A host's last_seen is the one change that does not bump it: no cached
 * answer shows it.) */
uint64_t nb_store_epoch(struct nb_store *st);
/* Newest schema version applied. */
int nb_store_schema_version(struct nb_store *st);

/* Transactions: nb_store_begin takes the store's lock until commit or
 * rollback, so a read-check-write sequence is atomic. */
int nb_store_begin(struct nb_store *st);
int nb_store_commit(struct nb_store *st);
void nb_store_rollback(struct nb_store *st);

/* Accounts and tokens. Tokens are kept as sha256 only. */
int nb_store_account_ensure(struct nb_store *st, const char *name, char id_out[32]);
int nb_store_token_add(struct nb_store *st, const char *token, const char *account_id,
		       const char *role);
/* Forgets every token of account_id. */
int nb_store_tokens_drop(struct nb_store *st, const char *account_id);
/* *out: {"account_id", "role"}; -NB_E_NOT_FOUND for an unknown token. */
int nb_store_token_lookup(struct nb_store *st, const char *token, json_t **out);

/* Instance types. */
int nb_store_types_list(struct nb_store *st, json_t **out);
int nb_store_type_get(struct nb_store *st, const char *name, json_t **out);
int nb_store_type_put(struct nb_store *st, const char *name, int64_t vcpus, int64_t memory_mb,
		      int64_t disk_gb, int64_t net_mbps, double price);
int nb_store_type_delete(struct nb_store *st, const char *name);
int nb_store_types_count(struct nb_store *st, int64_t *n);

/* Hosts. */
int nb_store_host_upsert(struct nb_store *st, const json_t *host, char id_out[32]);
int nb_store_host_get(struct nb_store *st, const char *id, json_t **out);
int nb_store_host_by_token(struct nb_store *st, const char *agent_token, json_t **out);
int nb_store_hosts_list(struct nb_store *st, json_t **out);
int nb_store_host_seen(struct nb_store *st, const char *id, int64_t wall_ms);
/* Bumps and returns the host's desired-state generation. */
int nb_store_host_bump(struct nb_store *st, const char *id, int64_t *gen_out);

/* Images. ref is an id or a name visible to account. */
int nb_store_image_insert(struct nb_store *st, const json_t *image);
int nb_store_image_get(struct nb_store *st, const char *account_id, const char *ref, json_t **out);
/* Any account's image by id (agents, snapshots): no visibility check. */
int nb_store_image_by_id(struct nb_store *st, const char *id, json_t **out);
int nb_store_images_list(struct nb_store *st, const char *account_id, json_t **out);
int nb_store_image_delete(struct nb_store *st, const char *id);
int nb_store_image_in_use(struct nb_store *st, const char *id, int64_t *n);
/* True when any image still references this blob (disk, kernel or initrd). */
int nb_store_blob_in_use(struct nb_store *st, const char *sha256, int64_t *n);

/* Instances. */
int nb_store_instance_insert(struct nb_store *st, const json_t *inst);
/* account_id NULL: any account (agents, admin jobs). */
int nb_store_instance_get(struct nb_store *st, const char *account_id, const char *id,
			  json_t **out);
/* state NULL: all not purged; include_terminated 0 hides terminated ones. */
int nb_store_instances_list(struct nb_store *st, const char *account_id, const char *state,
			    int include_terminated, json_t **out);
int nb_store_instances_on_host(struct nb_store *st, const char *host_id, json_t **out);

/* Instances as EC2's Describe answers show them, each with its tags, without
 * JSON: one query (instances joined with their tags) under the store lock,
 * the strings copied into the list's own storage. */
struct nb_store_tag {
	const char *key, *value;
};
struct nb_store_group {
	const char *group_id, *name;
};
/* An instance's interface 0 (the caller's own). */
struct nb_store_eni {
	const char *id, *subnet_id, *vpc_id, *mac, *ip;
	const char *public_ip, *allocation_id, *association_id; /* NULL: no address */
	int64_t device_index, created_at;
	const struct nb_store_group *groups; /* ordered by the group's creation */
	size_t ngroups;
};
struct nb_store_instance {
	const char *id, *reservation_id, *type, *image_id, *state;
	const char *ip;		  /* "" when none */
	const char *key_name;	  /* NULL when none */
	const char *state_reason; /* "" when none */
	const char *az;		  /* "" when not set */
	int64_t launch_index, vcpus, created_at;
	const char *http_tokens, *http_endpoint; /* metadata options */
	int64_t http_hop_limit;
	const struct nb_store_tag *tags; /* ordered by key */
	size_t ntags;
	struct nb_store_eni *eni; /* NULL when it has none */
};
struct nb_store_arena;
struct nb_store_instance_list {
	struct nb_store_instance *v;
	size_t n, cap;
	struct nb_store_arena *arena; /* the strings and tag arrays */
	size_t bytes;		      /* of the arena, bounded by NB_STORE_LIST_MAX_BYTES */
};
#define NB_STORE_LIST_MAX_BYTES (256u << 20)
/* Appends to *l (zeroed before the first call) the instances of account_id
 * (required): every one not purged when id is NULL (terminated ones only
 * with include_terminated), ordered by launch time, launch index and id;
 * else instance id alone if it is the account's (none appended when not:
 * the caller compares l->n). -E2BIG past NB_STORE_LIST_MAX_BYTES; *l stays
 * valid (what was appended) on any error. The caller frees *l with
 * nb_store_instance_list_free. */
int nb_store_instances_load(struct nb_store *st, const char *account_id, const char *id,
			    int include_terminated, struct nb_store_instance_list *l);
void nb_store_instance_list_free(struct nb_store_instance_list *l);
/* Sets the given members of patch (state, desired_state, start_seq,
 * reboot_seq, state_reason, host_id, terminated_at, type, vcpus, memory_mb,
 * disk_gb, net_mbps, launched_at) on instance id. */
int nb_store_instance_update(struct nb_store *st, const char *id, const json_t *patch);
int nb_store_instance_delete(struct nb_store *st, const char *id);
/* Resources held on a host by instances not stopped/terminated:
 * {"vcpus", "memory_mb", "disk_gb", "instances"} (disk counts stopped ones too). */
int nb_store_host_usage(struct nb_store *st, const char *host_id, json_t **out);
/* IPs in use on a host (not terminated). */
int nb_store_host_ips(struct nb_store *st, const char *host_id, json_t **out);
int nb_store_purge_terminated(struct nb_store *st, int64_t before_wall_ms);

/* Reservations and idempotency (ClientToken). */
int nb_store_reservation_insert(struct nb_store *st, const char *id, const char *account_id,
				const char *client_token, const char *request_hash);
/* *out: {"id", "request_hash"} or -NB_E_NOT_FOUND. */
int nb_store_reservation_by_token(struct nb_store *st, const char *account_id,
				  const char *client_token, json_t **out);
int nb_store_reservation_instances(struct nb_store *st, const char *reservation_id, json_t **out);


/* ---- schema 2: users, access keys, tags, key pairs, sharing, quotas ---- */

/* Accounts by name; *out {"id", "name", "created_at"}. */
int nb_store_account_get(struct nb_store *st, const char *ref, json_t **out);
int nb_store_accounts_list(struct nb_store *st, json_t **out);
int nb_store_user_add(struct nb_store *st, const char *account_id, const char *name,
		      const char *role, char id_out[32]);
int nb_store_user_get(struct nb_store *st, const char *account_id, const char *name,
		      json_t **out);
/* An account's users: [{"id", "name", "role", "created_at", "keys"}] by name
 * (keys: how many access keys the user holds). *out is the caller's. */
int nb_store_users_list(struct nb_store *st, const char *account_id, json_t **out);
/* -NB_E_NOT_FOUND when the account has no such user. */
int nb_store_user_set_role(struct nb_store *st, const char *account_id, const char *name,
			   const char *role);
/* Deletes the user and every access key of it; -NB_E_NOT_FOUND when none. */
int nb_store_user_delete(struct nb_store *st, const char *account_id, const char *name);
/* secret_enc: the encrypted secret, base64 (see core/secrets.h). */
int nb_store_key_add(struct nb_store *st, const char *key_id, const char *user_id,
		     const char *secret_enc);
/* *out {"id", "secret_enc", "status", "user_id", "user", "role", "account_id", "account"}. */
int nb_store_key_lookup(struct nb_store *st, const char *key_id, json_t **out);
/* account_id NULL: every account's keys. Never returns secrets. */
int nb_store_keys_list(struct nb_store *st, const char *account_id, json_t **out);
int nb_store_key_set_status(struct nb_store *st, const char *key_id, const char *status);
int nb_store_key_delete(struct nb_store *st, const char *key_id);

/* Tags. */
int nb_store_tag_put(struct nb_store *st, const char *account_id, const char *resource_id,
		     const char *resource_type, const char *key, const char *value);
/* value NULL deletes the key whatever its value; otherwise only on a match. */
int nb_store_tag_delete(struct nb_store *st, const char *account_id, const char *resource_id,
			const char *key, const char *value);
/* Every tag of the account: [{"resource_id", "resource_type", "key", "value"}]. */
int nb_store_tags_list(struct nb_store *st, const char *account_id, json_t **out);
int nb_store_tags_of(struct nb_store *st, const char *resource_id, json_t **out);
int nb_store_tags_count(struct nb_store *st, const char *resource_id, int64_t *n);
int nb_store_tags_drop(struct nb_store *st, const char *resource_id);

/* Key pairs. */
int nb_store_keypair_insert(struct nb_store *st, const json_t *kp);
int nb_store_keypair_get(struct nb_store *st, const char *account_id, const char *name,
			 json_t **out);
int nb_store_keypairs_list(struct nb_store *st, const char *account_id, json_t **out);
int nb_store_keypair_delete(struct nb_store *st, const char *account_id, const char *name);

/* Image launch permissions: grantee is an account id or "all". */
int nb_store_image_grant(struct nb_store *st, const char *image_id, const char *grantee);
int nb_store_image_revoke(struct nb_store *st, const char *image_id, const char *grantee);
int nb_store_image_grants(struct nb_store *st, const char *image_id, json_t **out);
/* Images account may launch: its own, shared with it, public. Each row has
 * "account_id" (the owner) and "public" (0/1). */
int nb_store_images_visible(struct nb_store *st, const char *account_id, json_t **out);
/* An image by id that account may launch (own, shared or public). */
int nb_store_image_visible(struct nb_store *st, const char *account_id, const char *id,
			   json_t **out);

/* Quotas: def when the account has none set. */
int nb_store_quota_get(struct nb_store *st, const char *account_id, const char *name,
		       int64_t def, int64_t *out);
int nb_store_quota_set(struct nb_store *st, const char *account_id, const char *name,
		       int64_t value);
/* Live use of an account: {"instances", "vcpus", "memory_mb", "images",
 * "addresses" (elastic IPs)}. */
int nb_store_account_usage(struct nb_store *st, const char *account_id, json_t **out);
/* A snapshot image became ready (or failed: sha256 NULL, state "failed"). */
int nb_store_image_ready(struct nb_store *st, const char *id, const char *sha256,
			 int64_t size, int64_t file_size, const char *state);
/* Blob uploads by account. */
int nb_store_blob_owner_add(struct nb_store *st, const char *sha256, const char *account_id);
/* 1 when account uploaded sha256 or can see an image made of it, else 0. */
int nb_store_blob_allowed(struct nb_store *st, const char *sha256, const char *account_id,
			  int *allowed);
/* Instance columns of schema 2 (key name, zone) set at launch. */
int nb_store_instance_set_launch(struct nb_store *st, const char *id, const char *key_name,
				 const char *az);

#endif
