/* Config files: "key = value" lines, '#' comments, blank lines. Every key a
 * program accepts is declared in its schema with a default and a one-line
 * doc (docs/config.md lists them); an unknown key or a bad value is an
 * error naming the file, line and key. */
#ifndef NB_CONFIG_H
#define NB_CONFIG_H

#include <stddef.h>
#include <stdint.h>

enum nb_conf_type { NB_CONF_STR, NB_CONF_INT, NB_CONF_SIZE, NB_CONF_BOOL };

struct nb_conf_key {
	const char *name;
	enum nb_conf_type type;
	const char *def;
	const char *doc;
};

#define NB_CONF_MAX_KEYS 64

struct nb_config {
	const struct nb_conf_key *schema;
	int nkeys;
	char *values[NB_CONF_MAX_KEYS]; /* owned; NULL means default */
};

/* schema must outlive cfg and end with a {NULL} entry. */
void nb_config_init(struct nb_config *cfg, const struct nb_conf_key *schema);
/* Loads path; a missing file is fine when optional. On error, err (errsz)
 * names what was wrong. */
int nb_config_load(struct nb_config *cfg, const char *path, int optional, char *err,
		   size_t errsz);
/* Sets one key (command-line overrides). */
int nb_config_set(struct nb_config *cfg, const char *key, const char *value, char *err,
		  size_t errsz);
const char *nb_config_str(const struct nb_config *cfg, const char *key);
int64_t nb_config_int(const struct nb_config *cfg, const char *key);
uint64_t nb_config_size(const struct nb_config *cfg, const char *key);
int nb_config_bool(const struct nb_config *cfg, const char *key);
void nb_config_free(struct nb_config *cfg);

#endif
