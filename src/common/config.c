#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

void nb_config_init(struct nb_config *cfg, const struct nb_conf_key *schema)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->schema = schema;
	while (schema[cfg->nkeys].name && cfg->nkeys < NB_CONF_MAX_KEYS)
		cfg->nkeys++;
}

static int conf_find(const struct nb_config *cfg, const char *key)
{
	for (int i = 0; i < cfg->nkeys; i++)
		if (!strcmp(cfg->schema[i].name, key))
			return i;
	return -1;
}

static int conf_check(enum nb_conf_type t, const char *v)
{
	uint64_t u;

	switch (t) {
	case NB_CONF_STR:
		return 0;
	case NB_CONF_INT:
		if (*v == '-')
			v++;
		return nb_parse_u64(v, &u);
	case NB_CONF_SIZE:
		return nb_parse_size(v, &u);
	case NB_CONF_BOOL:
		return (!strcmp(v, "true") || !strcmp(v, "false") || !strcmp(v, "yes") ||
			!strcmp(v, "no") || !strcmp(v, "1") || !strcmp(v, "0"))
			       ? 0
			       : -EINVAL;
	}
	return -EINVAL;
}

int nb_config_set(struct nb_config *cfg, const char *key, const char *value, char *err,
		  size_t errsz)
{
	static const char *tnames[] = {"a string", "an integer", "a size (e.g. 64M, 2G)",
				       "true or false"};
	int i = conf_find(cfg, key);
	char *copy;

	if (i < 0) {
		snprintf(err, errsz, "unknown key '%s'", key);
		return -ENOENT;
	}
	if (conf_check(cfg->schema[i].type, value) < 0) {
		snprintf(err, errsz, "key '%s': '%s' is not %s", key, value,
			 tnames[cfg->schema[i].type]);
		return -EINVAL;
	}
	copy = strdup(value);
	if (!copy)
		return -ENOMEM;
	free(cfg->values[i]);
	cfg->values[i] = copy;
	return 0;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

int nb_config_load(struct nb_config *cfg, const char *path, int optional, char *err,
		   size_t errsz)
{
	char line[4096], sub[512];
	int lineno = 0, r = 0;
	FILE *f = fopen(path, "re");

	if (!f) {
		if (errno == ENOENT && optional)
			return 0;
		r = -errno;
		snprintf(err, errsz, "%s: %s", path, strerror(errno));
		return r;
	}
	while (fgets(line, sizeof(line), f)) {
		char *k, *v, *eq;
		lineno++;
		k = trim(line);
		if (!*k || *k == '#' || *k == ';' || *k == '[')
			continue;
		eq = strchr(k, '=');
		if (!eq) {
			snprintf(err, errsz, "%s:%d: expected 'key = value'", path, lineno);
			r = -EINVAL;
			break;
		}
		*eq = '\0';
		k = trim(k);
		v = trim(eq + 1);
		if (strlen(v) >= 2 && v[0] == '"' && v[strlen(v) - 1] == '"') {
			v[strlen(v) - 1] = '\0';
			v++;
		}
		r = nb_config_set(cfg, k, v, sub, sizeof(sub));
		if (r < 0) {
			snprintf(err, errsz, "%s:%d: %s", path, lineno, sub);
			break;
		}
	}
	fclose(f);
	return r;
}

static const char *conf_raw(const struct nb_config *cfg, const char *key)
{
	int i = conf_find(cfg, key);

	if (i < 0) {
		fprintf(stderr, "BUG: config key '%s' not in schema\n", key);
		abort();
	}
	return cfg->values[i] ? cfg->values[i] : cfg->schema[i].def;
}

const char *nb_config_str(const struct nb_config *cfg, const char *key)
{
	return conf_raw(cfg, key);
}

int64_t nb_config_int(const struct nb_config *cfg, const char *key)
{
	return strtoll(conf_raw(cfg, key), NULL, 10);
}

uint64_t nb_config_size(const struct nb_config *cfg, const char *key)
{
	uint64_t v = 0;

	nb_parse_size(conf_raw(cfg, key), &v);
	return v;
}

int nb_config_bool(const struct nb_config *cfg, const char *key)
{
	const char *v = conf_raw(cfg, key);

	return !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1");
}

void nb_config_free(struct nb_config *cfg)
{
	for (int i = 0; i < cfg->nkeys; i++) {
		free(cfg->values[i]);
		cfg->values[i] = NULL;
	}
}
