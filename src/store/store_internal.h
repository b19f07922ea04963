#ifndef NB_STORE_INTERNAL_H
#define NB_STORE_INTERNAL_H

/* NULL-terminated; step i brings the schema to version i + 1. */
extern const char *const nb_store_migrations[];

#include <jansson.h>

struct nb_store;

/* The row helpers of store.c for the store's other files (net.c). fmt: one
 * char a parameter: s string (NULL binds NULL), i int64, d double.
 * nb_store_q_rows: every row as a JSON array; nb_store_q_row: the first, or
 * -NB_E_NOT_FOUND; nb_store_q_exec: rows changed (a change bumps the
 * epoch), or a negative error. *out is the caller's. */
int nb_store_q_rows(struct nb_store *st, json_t **out, const char *sql, const char *fmt, ...);
int nb_store_q_row(struct nb_store *st, json_t **out, const char *sql, const char *fmt, ...);
int nb_store_q_exec(struct nb_store *st, const char *sql, const char *fmt, ...);

#endif
