/* The AWS Query protocol's parameters (EC2: form POST bodies and GET query
 * strings): decoding, and typed access to AWS's flattened lists and maps
 * ("InstanceId.1", "Filter.2.Value.3", "TagSpecification.1.Tag.2.Key").
 * Every input has a ceiling; an over-long or malformed input is an error
 * naming what was wrong. */
#ifndef NB_QUERY_H
#define NB_QUERY_H

#include <stddef.h>

#define NB_QUERY_MAX_PARAMS 2000
#define NB_QUERY_MAX_KEY 256
#define NB_QUERY_MAX_VALUE (64 * 1024)
#define NB_QUERY_MAX_LIST 1000  /* members of one list */

struct nb_query; /* opaque: the decoded parameters */

/* Decodes application/x-www-form-urlencoded text ('+' is a space, %XX).
 * Repeated keys keep the last value (as AWS). *out is the caller's (free
 * with nb_query_free). -EINVAL / -E2BIG with err naming the problem. */
int nb_query_parse(const char *text, size_t len, struct nb_query **out, char *err, size_t errsz);
/* Adds the parameters of a second source (query string after the body). */
int nb_query_merge(struct nb_query *q, const char *text, size_t len, char *err, size_t errsz);
void nb_query_free(struct nb_query *q);

/* Value of key or NULL (borrowed, valid until nb_query_free). */
const char *nb_query_get(const struct nb_query *q, const char *key);
size_t nb_query_count(const struct nb_query *q);
/* The i-th parameter in key order (borrowed); -ERANGE past the end. */
int nb_query_entry(const struct nb_query *q, size_t i, const char **key, const char **value);

/* A flattened list "Prefix.1", "Prefix.2", ... : values in index order
 * (indexes must start at 1 and may have gaps; AWS tolerates gaps, so do
 * we). Returns the count (<= max) and fills out with borrowed pointers;
 * -E2BIG when more than max, -EINVAL for a bad index. */
int nb_query_list(const struct nb_query *q, const char *prefix, const char **out, size_t max);
/* Indexes N present under "Prefix.N." or "Prefix.N" in ascending order;
 * returns the count. For nested structures: Filter.N.Name, Filter.N.Value.M. */
int nb_query_indexes(const struct nb_query *q, const char *prefix, int *out, size_t max);

/* Filters: Filter.N.Name and Filter.N.Value.M. */
struct nb_filter {
	const char *name;
	const char *values[64];
	size_t nvalues;
};
#define NB_QUERY_MAX_FILTERS 50
/* Returns the count; -EINVAL with err for a filter without a name or values. */
int nb_query_filters(const struct nb_query *q, struct nb_filter *out, size_t max, char *err,
		     size_t errsz);

/* Tags: <prefix>.N.Key / <prefix>.N.Value (e.g. "Tag" or
 * "TagSpecification.1.Tag"). */
struct nb_tag {
	const char *key;
	const char *value; /* "" when absent */
};
int nb_query_tags(const struct nb_query *q, const char *prefix, struct nb_tag *out, size_t max,
		  char *err, size_t errsz);

/* Wildcard match as EC2 filters use it: '*' any run, '?' one character. */
int nb_query_wildcard(const char *pattern, const char *s);

/* nb_query_list and nb_query_indexes with err naming the bad parameter or
 * the ceiling passed. An index is 1..NB_QUERY_MAX_LIST in decimal without
 * a leading zero; anything else under "Prefix." is -EINVAL. */
int nb_query_list_err(const struct nb_query *q, const char *prefix, const char **out, size_t max,
		      char *err, size_t errsz);
int nb_query_indexes_err(const struct nb_query *q, const char *prefix, int *out, size_t max,
			 char *err, size_t errsz);

#endif
