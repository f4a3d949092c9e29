/* Daemon configuration: declarative table, "key = value" file, --set overrides, validation. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ahp/cfg.h"
#include "ahp/log.h"
#include "ahp/util.h"

#define CFG_FILE_MAX (1024 * 1024)
#define CFG_VALUE_MAX 4096

typedef struct {
	char *value;   /* textual, NULL = unset */
	long num;      /* parsed INT / BOOL */
	int file_line; /* line of the loaded file that set it, for duplicate errors */
} s_slot_t;

struct ahp_cfg {
	const ahp_cfg_def_t *defs;
	size_t n;
	s_slot_t *slots;
};

static void s_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
s_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static long
s_find(const ahp_cfg_t *self, const char *name)
{
	for (size_t i = 0; i < self->n; i++)
		if (strcmp(self->defs[i].name, name) == 0)
			return (long)i;
	return -1;
}

static int
s_parse_bool(const char *v, long *out)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

/* Checks value against the definition and stores it. The message (without
 * location) goes to err. */
static int
s_store(ahp_cfg_t *self, size_t i, const char *value, char *err, size_t errlen)
{
	const ahp_cfg_def_t *d = &self->defs[i];
	long num = 0;
	if (strlen(value) > CFG_VALUE_MAX) {
		s_err(err, errlen, "value of '%s' is longer than %d bytes", d->name, CFG_VALUE_MAX);
		return -1;
	}
	switch (d->type) {
	case AHP_CFG_INT:
		if (ahp_parse_long(value, LONG_MIN, LONG_MAX, &num) < 0) {
			s_err(err, errlen, "'%s' must be an integer, got \"%.64s\"", d->name,
			      value);
			return -1;
		}
		if (num < d->min || num > d->max) {
			s_err(err, errlen, "'%s' = %ld is out of range [%ld, %ld]", d->name, num,
			      d->min, d->max);
			return -1;
		}
		break;
	case AHP_CFG_BOOL:
		if (s_parse_bool(value, &num) < 0) {
			s_err(
			    err, errlen,
			    "'%s' must be a boolean (true/false/yes/no/on/off/1/0), got \"%.64s\"",
			    d->name, value);
			return -1;
		}
		break;
	case AHP_CFG_STR:
		break;
	}
	char *copy = strdup(value);
	if (copy == NULL) {
		s_err(err, errlen, "out of memory");
		return -1;
	}
	free(self->slots[i].value);
	self->slots[i].value = copy;
	self->slots[i].num = num;
	return 0;
}

ahp_cfg_t *
ahp_cfg_new(const ahp_cfg_def_t *defs)
{
	char err[256];
	ahp_cfg_t *self = calloc(1, sizeof *self);
	if (self == NULL)
		return NULL;
	self->defs = defs;
	while (defs[self->n].name != NULL)
		self->n++;
	self->slots = calloc(self->n ? self->n : 1, sizeof *self->slots);
	if (self->slots == NULL) {
		free(self);
		return NULL;
	}
	for (size_t i = 0; i < self->n; i++) {
		if (defs[i].def == NULL)
			continue;
		/* A default that fails its own table is a bug in the daemon. */
		if (s_store(self, i, defs[i].def, err, sizeof err) < 0)
			fatalx("config table: bad default: %s", err);
	}
	return self;
}

void
ahp_cfg_destroy(ahp_cfg_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	ahp_cfg_t *self = *self_p;
	for (size_t i = 0; i < self->n; i++)
		free(self->slots[i].value);
	free(self->slots);
	free(self);
	*self_p = NULL;
}

static char *
s_trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

/* Strips one pair of surrounding double quotes, so that a value may keep
 * leading/trailing blanks or start with '#'. */
static char *
s_unquote(char *v)
{
	size_t n = strlen(v);
	if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
		v[n - 1] = '\0';
		return v + 1;
	}
	return v;
}

int
ahp_cfg_load_file(ahp_cfg_t *self, const char *path, int optional, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len = 0;
	char msg[512];

	if (ahp_read_file(path, CFG_FILE_MAX, &buf, &len) < 0) {
		if (errno == ENOENT && optional)
			return 0;
		if (errno == EFBIG)
			s_err(err, errlen, "%s: file is larger than %d bytes", path, CFG_FILE_MAX);
		else
			s_err(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (memchr(buf, '\0', len) != NULL) {
		s_err(err, errlen, "%s: file contains a NUL byte", path);
		free(buf);
		return -1;
	}
	for (size_t i = 0; i < self->n; i++)
		self->slots[i].file_line = 0;

	int rc = 0, lineno = 0;
	char *save = buf;
	while (save != NULL) {
		char *line = save;
		char *nl = strchr(line, '\n');
		if (nl != NULL) {
			*nl = '\0';
			save = nl + 1;
		} else {
			save = NULL;
		}
		lineno++;
		line = s_trim(line);
		if (*line == '\0' || *line == '#')
			continue;
		char *eq = strchr(line, '=');
		if (eq == NULL) {
			s_err(err, errlen, "%s:%d: expected \"key = value\"", path, lineno);
			rc = -1;
			break;
		}
		*eq = '\0';
		char *key = s_trim(line);
		char *value = s_unquote(s_trim(eq + 1));
		long i = s_find(self, key);
		if (i < 0) {
			s_err(err, errlen, "%s:%d: unknown key '%.64s'", path, lineno, key);
			rc = -1;
			break;
		}
		if (self->slots[i].file_line != 0) {
			s_err(err, errlen, "%s:%d: duplicate key '%s' (first set on line %d)", path,
			      lineno, key, self->slots[i].file_line);
			rc = -1;
			break;
		}
		if (s_store(self, (size_t)i, value, msg, sizeof msg) < 0) {
			s_err(err, errlen, "%s:%d: %s", path, lineno, msg);
			rc = -1;
			break;
		}
		self->slots[i].file_line = lineno;
	}
	free(buf);
	return rc;
}

int
ahp_cfg_set(ahp_cfg_t *self, const char *name, const char *value, char *err, size_t errlen)
{
	char tmp[CFG_VALUE_MAX + 256];
	char msg[512];
	const char *key = name;

	if (name == NULL) {
		s_err(err, errlen, "missing key");
		return -1;
	}
	if (value == NULL) {
		if (ahp_strlcpy(tmp, name, sizeof tmp) < 0) {
			s_err(err, errlen, "--set value too long");
			return -1;
		}
		char *eq = strchr(tmp, '=');
		if (eq == NULL) {
			s_err(err, errlen, "--set %.64s: expected key=value", name);
			return -1;
		}
		*eq = '\0';
		key = s_trim(tmp);
		value = s_trim(eq + 1);
	}
	long i = s_find(self, key);
	if (i < 0) {
		s_err(err, errlen, "--set: unknown key '%.64s'", key);
		return -1;
	}
	if (s_store(self, (size_t)i, value, msg, sizeof msg) < 0) {
		s_err(err, errlen, "--set: %s", msg);
		return -1;
	}
	return 0;
}

int
ahp_cfg_validate(ahp_cfg_t *self, char *err, size_t errlen)
{
	for (size_t i = 0; i < self->n; i++) {
		if (self->slots[i].value == NULL) {
			s_err(err, errlen, "missing required key '%s'%s%s", self->defs[i].name,
			      self->defs[i].help ? ": " : "",
			      self->defs[i].help ? self->defs[i].help : "");
			return -1;
		}
	}
	return 0;
}

static size_t
s_need(const ahp_cfg_t *self, const char *name, enum ahp_cfg_type type)
{
	long i = s_find(self, name);
	if (i < 0)
		fatalx("config: unknown key '%s' requested", name);
	if (self->defs[i].type != type)
		fatalx("config: key '%s' requested with the wrong type", name);
	return (size_t)i;
}

const char *
ahp_cfg_str(const ahp_cfg_t *self, const char *name)
{
	return self->slots[s_need(self, name, AHP_CFG_STR)].value;
}

long
ahp_cfg_int(const ahp_cfg_t *self, const char *name)
{
	return self->slots[s_need(self, name, AHP_CFG_INT)].num;
}

int
ahp_cfg_bool(const ahp_cfg_t *self, const char *name)
{
	return (int)self->slots[s_need(self, name, AHP_CFG_BOOL)].num;
}

int
ahp_cfg_is_set(const ahp_cfg_t *self, const char *name)
{
	long i = s_find(self, name);
	return i >= 0 && self->slots[i].value != NULL;
}

static const char *
s_type_name(enum ahp_cfg_type t)
{
	switch (t) {
	case AHP_CFG_INT:
		return "int";
	case AHP_CFG_BOOL:
		return "bool";
	case AHP_CFG_STR:
		break;
	}
	return "string";
}

void
ahp_cfg_print_help(const ahp_cfg_def_t *defs, FILE *out)
{
	for (const ahp_cfg_def_t *d = defs; d->name != NULL; d++) {
		fprintf(out, "  %-22s %s", d->name, s_type_name(d->type));
		if (d->type == AHP_CFG_INT)
			fprintf(out, " [%ld..%ld]", d->min, d->max);
		if (d->def == NULL)
			fprintf(out, " (required)");
		else if (*d->def != '\0')
			fprintf(out, " (default: %s)", d->def);
		fprintf(out, "\n");
		if (d->help != NULL)
			fprintf(out, "      %s\n", d->help);
	}
}

void
ahp_cfg_print(const ahp_cfg_t *self, FILE *out)
{
	for (size_t i = 0; i < self->n; i++)
		fprintf(out, "%s = %s\n", self->defs[i].name,
		        self->slots[i].value ? self->slots[i].value : "(unset)");
}
