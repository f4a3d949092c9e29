/*
 * Daemon configuration: a declarative table (name, type, min, max, default),
 * a "key = value" file (# comments), and --set overrides from the command
 * line. Everything is validated before the daemon serves.
 */
#ifndef AHP_CFG_H
#define AHP_CFG_H

#include <stddef.h>
#include <stdio.h>

enum ahp_cfg_type { AHP_CFG_STR, AHP_CFG_INT, AHP_CFG_BOOL };

typedef struct {
	const char *name;
	enum ahp_cfg_type type;
	long min, max;   /* INT only */
	const char *def; /* textual default; NULL = required */
	const char *help;
} ahp_cfg_def_t; /* tables end with { NULL } */

typedef struct ahp_cfg ahp_cfg_t;

/* Starts from defaults. Caller owns the result. */
ahp_cfg_t *ahp_cfg_new(const ahp_cfg_def_t *defs);
void ahp_cfg_destroy(ahp_cfg_t **self_p);
/* Reads a file; a missing file is not an error when optional != 0. Unknown
 * keys and bad values are errors "path:line: message". 0 / -1. */
int ahp_cfg_load_file(ahp_cfg_t *self, const char *path, int optional, char *err, size_t errlen);
/* Sets one value ("name=value" form accepted too when value is NULL). 0 / -1. */
int ahp_cfg_set(ahp_cfg_t *self, const char *name, const char *value, char *err, size_t errlen);
/* Checks required keys are present. 0 / -1. */
int ahp_cfg_validate(ahp_cfg_t *self, char *err, size_t errlen);
/* Accessors; calling with an unknown name is a programming error (fatalx). */
const char *ahp_cfg_str(const ahp_cfg_t *self, const char *name);
long ahp_cfg_int(const ahp_cfg_t *self, const char *name);
int ahp_cfg_bool(const ahp_cfg_t *self, const char *name);
/* Prints the table as help text (name, type, range, default, help). */
void ahp_cfg_print_help(const ahp_cfg_def_t *defs, FILE *out);

/* Notes on the format: a line is "key = value"; blank lines and lines whose
 * first non-blank character is '#' are ignored (no trailing comments: a value
 * may contain '#'); one pair of surrounding double quotes is stripped from a
 * value; a key given twice in one file is an error. Bools accept
 * true/false/yes/no/on/off/1/0. Typical order: ahp_cfg_new(), ahp_cfg_set()
 * for defaults computed at run time (e.g. from --home), ahp_cfg_load_file(),
 * ahp_cfg_set() for each --set, ahp_cfg_validate(). */

/* True when the key has a value (a default counts). */
int ahp_cfg_is_set(const ahp_cfg_t *self, const char *name);
/* Prints the effective configuration as "key = value" lines (for
 * --check-config). Never pass secrets through cfg. */
void ahp_cfg_print(const ahp_cfg_t *self, FILE *out);

#endif
