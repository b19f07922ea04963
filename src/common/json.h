/* Thin helpers over jansson. */
#ifndef NB_JSON_H
#define NB_JSON_H

#include <jansson.h>
#include <stdint.h>

/* Borrowed string member or NULL when absent or not a string. */
const char *nb_json_str(const json_t *o, const char *key);
/* String member, or "" when absent. */
const char *nb_json_str_or(const json_t *o, const char *key);
/* Integer member or def when absent / not an integer. */
int64_t nb_json_int(const json_t *o, const char *key, int64_t def);
/* Compact dump; caller frees. */
char *nb_json_dump(const json_t *o);

#endif
