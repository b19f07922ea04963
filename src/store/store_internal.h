#ifndef NB_STORE_INTERNAL_H
#define NB_STORE_INTERNAL_H

/* NULL-terminated; step i brings the schema to version i + 1. */
extern const char *const nb_store_migrations[];

#endif
