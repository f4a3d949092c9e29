/* Secrets directory reader: one file per secret; values wiped on free. */
#ifndef AHP_SECRETS_H
#define AHP_SECRETS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ahp_secrets ahp_secrets_t;

/* Loads every regular file in dir (name = file name, value = contents with
 * one trailing newline stripped). Refuses files group/world-readable, over
 * 64 KiB, or symlinks. NULL on failure (logged). */
ahp_secrets_t *ahp_secrets_load(const char *dir);
/* Wipes every value with explicit_bzero before freeing. */
void ahp_secrets_destroy(ahp_secrets_t **self_p);
/* Borrowed pointer valid until destroy; NULL if absent. */
const char *ahp_secrets_get(ahp_secrets_t *self, const char *name, size_t *len);
size_t ahp_secrets_count(ahp_secrets_t *self);
/* Name of the i-th secret (borrowed), NULL past the end. Names match
 * [A-Za-z0-9._-]{1,128}; files starting with '.' are skipped. */
const char *ahp_secrets_name_at(ahp_secrets_t *self, size_t i);
/* True when name is one the reader loads: [A-Za-z0-9._-]{1,128}, not starting with '.'
 * (dot files are skipped). For configuration that names a secret (servicesd's services.conf). */
bool ahp_secrets_name_valid(const char *name);
/* Constant-time comparison of two byte strings (lengths compared too).
 * 1 when equal, 0 otherwise. Time depends on alen only: pass the secret
 * (known) value as b. */
int ahp_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

#endif
