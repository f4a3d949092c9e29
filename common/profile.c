/* Agent profiles: a libyaml walk validates with file:line:column errors, libcyaml fills the
 * structs. */
#include "ahp/profile.h"
#include "ahp/limit_table.h"
#include "ahp/text.h"
#include "ahp/util.h"

#include <cyaml/cyaml.h>
#include <yaml.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * Why two passes: libcyaml 1.3 maps YAML onto structs well but reports no
 * positions, and cannot load a mapping with arbitrary keys (egress inject
 * headers) into an array. So we first load the document with libyaml and walk
 * it against a declarative key table, which gives every error a line and
 * column and a hint; only a document that passed is handed to libcyaml to fill
 * ahp_profile_t, and the inject maps are then copied from the libyaml
 * document. The validator is at least as strict as libcyaml on every value
 * (e.g. it refuses leading zeros, which libcyaml's strtoul(..., 0) would read
 * as octal), so libcyaml failing after validation is an internal error.
 */

/* Ceilings: profiles are written by people; anything larger is a mistake or an
 * attack on the daemons that load them. */
#define S_MAX_FILE_BYTES (256 * 1024)
#define S_MAX_ENTRIES 256 /* egress rules, approvals */
#define S_MAX_INJECT 32   /* headers injected by one egress rule */
#define S_MAX_HEADER_NAME 128
#define S_MAX_HEADER_VALUE 4096
#define S_MAX_SECRET_NAME 128
#define S_MAX_REGEX 1024
#define S_MAX_HOST 253
#define S_MAX_PROVIDER 64
#define S_MAX_MODEL 256
#define S_MAX_DIR_FILES 4096
#define S_MAX_EXPIRES (30L * 86400)
#define S_MAX_DEPTH 32 /* nested mappings / lists; the schema needs 4 */
#define S_MAX_KEYS 16  /* keys in one schema mapping */
#define S_WHERE 160    /* dotted path of a value, e.g. "egress[3].inject" */

#define S_DEFAULT_EXPIRES "24h"
#define S_DEFAULT_EXPIRES_S 86400L

const char *const ahp_known_tools[] = {"exec", "skill", "exec_service", "ask_human", NULL};
/* The registry's names (one list: common/include/ahp/services.def). */
#define AHP_SERVICE(name, retry, summary) #name,
const char *const ahp_known_services[] = {
#include "ahp/services.def"
    NULL};
#undef AHP_SERVICE
static const char *const s_methods[] = {"GET",   "HEAD",   "POST",    "PUT",
                                        "PATCH", "DELETE", "OPTIONS", NULL};
static const char *const s_net_modes[] = {"none", "proxy", NULL};

typedef struct {
	const char *file;
	const char *base_dir; /* where relative skills: paths resolve */
	yaml_document_t *doc;
	unsigned char *seen; /* per node: visited, so an alias is caught */
	size_t n_nodes;
	char *err;
	size_t errlen;
	char *skills_dir; /* realpath of skills:, owned until moved */
	yaml_mark_t name_mark;
	const char *name_ok;          /* name: once it passed its check; in doc */
	yaml_node_t *top[S_MAX_KEYS]; /* top-level values, by K_* index */
} s_ctx_t;

typedef struct s_key s_key_t;
typedef int(s_check_fn)(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where);
typedef int(s_post_fn)(s_ctx_t *c, yaml_node_t *item, yaml_node_t **found, const char *where);

/* One key of a schema mapping: how its value is checked. */
struct s_key {
	const char *key;
	bool required;
	s_check_fn *check;
	long min, max;              /* list length */
	int limit;                  /* S_LIM(id): integer range from the limits table */
	const char *const *allowed; /* names a scalar or list item may take */
	const char *what;           /* "tool", "method": for messages */
	const char *example;        /* hint when the shape is wrong */
	const s_key_t *sub;         /* keys of a nested mapping / list items */
	s_post_fn *post;            /* extra check of each list item */
};

static s_check_fn s_check_name, s_check_model, s_check_text, s_check_names, s_check_skills,
    s_check_map, s_check_list, s_check_uint, s_check_enum, s_check_host, s_check_inject,
    s_check_regex, s_check_duration, s_check_one_name, s_check_paths, s_check_cpus;
static s_post_fn s_post_approval;

/* Integer ranges come from the one limits table (ahp/limit_table.h), which
 * sandboxd's request validation reads too: what loads here is what runs. */
#define S_LIM(id) (AHP_LIMIT_##id + 1)

static const s_key_t s_sandbox_keys[] = {
    {.key = "network", .check = s_check_enum, .allowed = s_net_modes, .what = "network mode"},
    {.key = "memory_mb", .check = s_check_uint, .limit = S_LIM(MEMORY_MB)},
    {.key = "pids_max", .check = s_check_uint, .limit = S_LIM(PIDS_MAX)},
    {.key = "cpu_seconds", .check = s_check_uint, .limit = S_LIM(CPU_SECONDS)},
    {.key = "timeout_s", .check = s_check_uint, .limit = S_LIM(TIMEOUT_S)},
    {.key = "output_kb", .check = s_check_uint, .limit = S_LIM(OUTPUT_KB)},
    {.key = "disk_mb", .check = s_check_uint, .limit = S_LIM(DISK_MB)},
    {.key = "cpus", .check = s_check_cpus, .limit = S_LIM(CPUS_MILLI)},
    {.key = NULL}};

static const s_key_t s_limits_keys[] = {
    {.key = "max_turns", .check = s_check_uint, .limit = S_LIM(MAX_TURNS)},
    {.key = "max_model_calls", .check = s_check_uint, .limit = S_LIM(MAX_MODEL_CALLS)},
    {.key = NULL}};

static const s_key_t s_egress_keys[] = {
    {.key = "host", .required = true, .check = s_check_host},
    {.key = "methods",
     .check = s_check_names,
     .min = 1,
     .max = 7,
     .allowed = s_methods,
     .what = "method",
     .example = "e.g. methods: [GET, POST]; leave methods out for GET only"},
    {.key = "paths",
     .check = s_check_paths,
     .limit = S_LIM(EGRESS_PATHS),
     .example = "e.g. paths: [/snippets/, /api/v1/]; leave paths out for any path"},
    {.key = "inject", .check = s_check_inject, .max = S_MAX_INJECT},
    {.key = NULL}};

enum { A_SERVICE, A_TOOL, A_MATCH, A_EXPIRES };
static const s_key_t s_approval_keys[] = {
    [A_SERVICE] = {.key = "service",
                   .check = s_check_one_name,
                   .allowed = ahp_known_services,
                   .what = "service"},
    [A_TOOL] = {.key = "tool",
                .check = s_check_one_name,
                .allowed = ahp_known_tools,
                .what = "tool"},
    [A_MATCH] = {.key = "match", .check = s_check_regex},
    [A_EXPIRES] = {.key = "expires", .check = s_check_duration},
    {.key = NULL}};

enum {
	K_NAME,
	K_MODEL,
	K_SYSTEM_PROMPT,
	K_TOOLS,
	K_SERVICES,
	K_SKILLS,
	K_SANDBOX,
	K_EGRESS,
	K_APPROVALS,
	K_LIMITS
};
static const s_key_t s_profile_keys[] = {
    [K_NAME] = {.key = "name", .required = true, .check = s_check_name},
    [K_MODEL] = {.key = "model", .required = true, .check = s_check_model},
    [K_SYSTEM_PROMPT] = {.key = "system_prompt", .required = true, .check = s_check_text},
    [K_TOOLS] = {.key = "tools",
                 .check = s_check_names,
                 .max = 64,
                 .allowed = ahp_known_tools,
                 .what = "tool",
                 .example = "e.g. tools: [exec, skill]"},
    [K_SERVICES] = {.key = "services",
                    .check = s_check_names,
                    .max = 64,
                    .allowed = ahp_known_services,
                    .what = "service",
                    .example = "e.g. services: [lookup_wiki]"},
    [K_SKILLS] = {.key = "skills", .check = s_check_skills},
    [K_SANDBOX] = {.key = "sandbox",
                   .check = s_check_map,
                   .sub = s_sandbox_keys,
                   .example = "e.g. sandbox: { network: none, memory_mb: 256 }"},
    [K_EGRESS] = {.key = "egress",
                  .check = s_check_list,
                  .max = S_MAX_ENTRIES,
                  .sub = s_egress_keys,
                  .example = "e.g. egress: [{ host: wiki.local, methods: [GET] }]"},
    [K_APPROVALS] = {.key = "approvals",
                     .check = s_check_list,
                     .max = S_MAX_ENTRIES,
                     .sub = s_approval_keys,
                     .post = s_post_approval,
                     .example = "e.g. approvals: [{ tool: exec, match: '^rm' }]"},
    [K_LIMITS] = {.key = "limits",
                  .check = s_check_map,
                  .sub = s_limits_keys,
                  .example = "e.g. limits: { max_turns: 30, max_model_calls: 50 }"},
    {.key = NULL}};

/* ---- libcyaml schema: the same shape, mapped onto ahp_profile_t ---- */

static const cyaml_schema_value_t s_cy_string = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED)};

static const cyaml_strval_t s_cy_net[] = {{"none", AHP_NET_NONE}, {"proxy", AHP_NET_PROXY}};

static const cyaml_schema_field_t s_cy_sandbox[] = {
    CYAML_FIELD_ENUM("network", CYAML_FLAG_OPTIONAL | CYAML_FLAG_STRICT, ahp_sandbox_cfg_t, network,
                     s_cy_net, CYAML_ARRAY_LEN(s_cy_net)),
    CYAML_FIELD_UINT("memory_mb", CYAML_FLAG_OPTIONAL, ahp_sandbox_cfg_t, memory_mb),
    CYAML_FIELD_UINT("pids_max", CYAML_FLAG_OPTIONAL, ahp_sandbox_cfg_t, pids_max),
    CYAML_FIELD_UINT("cpu_seconds", CYAML_FLAG_OPTIONAL, ahp_sandbox_cfg_t, cpu_seconds),
    CYAML_FIELD_UINT("timeout_s", CYAML_FLAG_OPTIONAL, ahp_sandbox_cfg_t, timeout_s),
    CYAML_FIELD_UINT("output_kb", CYAML_FLAG_OPTIONAL, ahp_sandbox_cfg_t, output_kb),
    CYAML_FIELD_UINT("disk_mb", CYAML_FLAG_OPTIONAL, ahp_sandbox_cfg_t, disk_mb),
    /* a decimal: s_fill parses it from the validated document */
    CYAML_FIELD_IGNORE("cpus", CYAML_FLAG_OPTIONAL), CYAML_FIELD_END};

static const cyaml_schema_field_t s_cy_limits[] = {
    CYAML_FIELD_UINT("max_turns", CYAML_FLAG_OPTIONAL, ahp_limits_t, max_turns),
    CYAML_FIELD_UINT("max_model_calls", CYAML_FLAG_OPTIONAL, ahp_limits_t, max_model_calls),
    CYAML_FIELD_END};

/* inject is ignored here: arbitrary header-name keys cannot be described to
 * libcyaml; s_fill_inject copies it from the validated libyaml document. */
static const cyaml_schema_field_t s_cy_egress_fields[] = {
    CYAML_FIELD_STRING_PTR("host", CYAML_FLAG_DEFAULT, ahp_egress_t, host, 0, CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE_COUNT("methods", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, ahp_egress_t,
                               methods, n_methods, &s_cy_string, 0, CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE_COUNT("paths", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, ahp_egress_t,
                               paths, n_paths, &s_cy_string, 0, CYAML_UNLIMITED),
    CYAML_FIELD_IGNORE("inject", CYAML_FLAG_OPTIONAL), CYAML_FIELD_END};
static const cyaml_schema_value_t s_cy_egress = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, ahp_egress_t, s_cy_egress_fields)};

static const cyaml_schema_field_t s_cy_approval_fields[] = {
    CYAML_FIELD_STRING_PTR("service", CYAML_FLAG_OPTIONAL, ahp_approval_t, service, 0,
                           CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("tool", CYAML_FLAG_OPTIONAL, ahp_approval_t, tool, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("match", CYAML_FLAG_OPTIONAL, ahp_approval_t, match, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("expires", CYAML_FLAG_OPTIONAL, ahp_approval_t, expires, 0,
                           CYAML_UNLIMITED),
    CYAML_FIELD_END};
static const cyaml_schema_value_t s_cy_approval = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, ahp_approval_t, s_cy_approval_fields)};

static const cyaml_schema_field_t s_cy_profile_fields[] = {
    CYAML_FIELD_STRING_PTR("name", CYAML_FLAG_DEFAULT, ahp_profile_t, name, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("model", CYAML_FLAG_DEFAULT, ahp_profile_t, model, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("system_prompt", CYAML_FLAG_DEFAULT, ahp_profile_t, system_prompt, 0,
                           CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE_COUNT("tools", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, ahp_profile_t,
                               tools, n_tools, &s_cy_string, 0, CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE_COUNT("services", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, ahp_profile_t,
                               services, n_services, &s_cy_string, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("skills", CYAML_FLAG_OPTIONAL, ahp_profile_t, skills, 0,
                           CYAML_UNLIMITED),
    CYAML_FIELD_MAPPING("sandbox", CYAML_FLAG_OPTIONAL, ahp_profile_t, sandbox, s_cy_sandbox),
    CYAML_FIELD_SEQUENCE_COUNT("egress", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, ahp_profile_t,
                               egress, n_egress, &s_cy_egress, 0, CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE_COUNT("approvals", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, ahp_profile_t,
                               approvals, n_approvals, &s_cy_approval, 0, CYAML_UNLIMITED),
    CYAML_FIELD_MAPPING("limits", CYAML_FLAG_OPTIONAL, ahp_profile_t, limits, s_cy_limits),
    CYAML_FIELD_END};
static const cyaml_schema_value_t s_cy_profile = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, ahp_profile_t, s_cy_profile_fields)};

/* ---- messages ---- */

/* Copies untrusted text for a message: bounded, control bytes as \xNN. */
static const char *
s_q(const char *s, char *buf, size_t len)
{
	size_t o = 0;
	bool cut = false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (o >= 60 || o + 5 >= len) {
			cut = o >= 60;
			break;
		}
		if (*p < 0x20 || *p == 0x7f)
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", *p);
		else
			buf[o++] = (char)*p;
	}
	buf[o] = '\0';
	/* A cut must not end inside a UTF-8 sequence: the message stays valid text. */
	o = ahp_utf8_prefix(buf, o);
	buf[o] = '\0';
	if (cut)
		memcpy(buf + o, "...", 4);
	return buf;
}

static int
s_failv(s_ctx_t *c, const yaml_mark_t *m, const char *hint, const char *fmt, va_list ap)
{
	char msg[512];
	vsnprintf(msg, sizeof msg, fmt, ap);
	if (hint && *hint)
		snprintf(c->err, c->errlen, "%s:%zu:%zu: %s (%s)", c->file, m->line + 1,
		         m->column + 1, msg, hint);
	else
		snprintf(c->err, c->errlen, "%s:%zu:%zu: %s", c->file, m->line + 1, m->column + 1,
		         msg);
	return -1;
}

/* Records "file:line:column: message (hint)"; always returns -1. */
static int __attribute__((format(printf, 4, 5)))
s_fail(s_ctx_t *c, const yaml_mark_t *m, const char *hint, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	s_failv(c, m, hint, fmt, ap);
	va_end(ap);
	return -1;
}

/* Edit distance, for "did you mean" hints; long inputs get no suggestion. */
static size_t
s_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[65];
	if (la > 64 || lb > 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] == b[j - 1] ? 0 : 1);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* Hint for an unknown name: "did you mean 'x'?", then "<label>: a, b" when
 * always_list or when there is no suggestion. */
static const char *
s_hint_unknown(const char *input, const char *const *list, const char *label, bool always_list,
               char *buf, size_t len)
{
	const char *best = NULL;
	size_t bestd = SIZE_MAX;
	size_t o = 0;

	for (size_t i = 0; list[i]; i++) {
		size_t d = strcasecmp(input, list[i]) == 0 ? 0 : s_distance(input, list[i]);
		if (d < bestd) {
			bestd = d;
			best = list[i];
		}
	}
	buf[0] = '\0';
	if (best) {
		size_t limit = strlen(best) / 3;
		if (limit < 1)
			limit = 1;
		if (bestd > limit)
			best = NULL;
	}
	if (best)
		o += (size_t)snprintf(buf, len, "did you mean '%s'?", best);
	if ((always_list || !best) && o < len) {
		o += (size_t)snprintf(buf + o, len - o, "%s%s: ", best ? " " : "", label);
		for (size_t i = 0; list[i] && o < len; i++)
			o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : "", list[i]);
	}
	return buf;
}

static bool
s_in(const char *const *list, const char *s)
{
	for (size_t i = 0; list[i]; i++)
		if (strcmp(list[i], s) == 0)
			return true;
	return false;
}

/* ---- node access ---- */

static const char *
s_str(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

/* Fetches a node and marks it visited. s_prescan already refused aliases;
 * libyaml resolves an alias to the anchored node itself, so a second visit
 * would mean one slipped through: refused again, so no walk can loop. */
static yaml_node_t *
s_node(s_ctx_t *c, int id, const yaml_mark_t *from)
{
	yaml_node_t *n = yaml_document_get_node(c->doc, id);
	if (n == NULL) {
		s_fail(c, from, NULL, "internal error: missing YAML node");
		return NULL;
	}
	size_t i = (size_t)(n - c->doc->nodes.start);
	if (c->seen[i]) {
		s_fail(c, &n->start_mark, "write the value out in full",
		       "the value anchored here is reused through an alias; aliases are not "
		       "supported in profiles");
		return NULL;
	}
	c->seen[i] = 1;
	if (n->tag && strncmp((const char *)n->tag, "tag:yaml.org,2002:", 18) != 0) {
		char q[80];
		s_fail(c, &n->start_mark, "remove the tag", "YAML tag '%s' is not supported",
		       s_q((const char *)n->tag, q, sizeof q));
		return NULL;
	}
	if (n->type == YAML_SCALAR_NODE && strlen(s_str(n)) != n->data.scalar.length) {
		s_fail(c, &n->start_mark, NULL, "value contains a NUL character");
		return NULL;
	}
	return n;
}

/* Looks up key in an already validated mapping; no visit marking. */
static yaml_node_t *
s_map_get(yaml_document_t *doc, yaml_node_t *map, const char *key)
{
	if (map == NULL || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		if (k && k->type == YAML_SCALAR_NODE && strcmp(s_str(k), key) == 0)
			return yaml_document_get_node(doc, p->value);
	}
	return NULL;
}

static size_t
s_seq_len(const yaml_node_t *n)
{
	return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static const char *
s_kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE:
		if (n->data.scalar.length == 0 && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
			return "empty";
		return "a string";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	default:
		return "empty";
	}
}

static const char *
s_label(const char *where)
{
	return *where ? where : "profile";
}

/* Checks the node's shape; what = "a string", "a number"... */
static int
s_want(s_ctx_t *c, yaml_node_t *v, yaml_node_type_t type, const char *what, const char *where,
       const char *hint)
{
	if (v->type == type)
		return 0;
	return s_fail(c, &v->start_mark, hint, "%s must be %s, not %s", s_label(where), what,
	              s_kind(v));
}

/* A non-empty scalar. */
static int
s_want_text(s_ctx_t *c, yaml_node_t *v, const char *where, const char *hint)
{
	if (s_want(c, v, YAML_SCALAR_NODE, "a string", where, hint) < 0)
		return -1;
	if (v->data.scalar.length == 0)
		return s_fail(c, &v->start_mark, hint, "%s must not be empty", where);
	return 0;
}

static void
s_join(char *buf, const char *where, const char *key)
{
	char q[80];
	snprintf(buf, S_WHERE, "%s%s%s", where, *where ? "." : "", s_q(key, q, sizeof q));
}

/* ---- schema walk ---- */

static int
s_walk_map(s_ctx_t *c, yaml_node_t *v, const s_key_t *keys, const char *where, const char *hint,
           yaml_node_t **found)
{
	const char *names[S_MAX_KEYS + 1];
	size_t nk = 0;
	char q[80], h[256], sub[S_WHERE];

	if (s_want(c, v, YAML_MAPPING_NODE, "a mapping", where, hint) < 0)
		return -1;
	while (keys[nk].key && nk < S_MAX_KEYS) {
		names[nk] = keys[nk].key;
		found[nk] = NULL;
		nk++;
	}
	names[nk] = NULL;
	for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *kn = s_node(c, p->key, &v->start_mark);
		if (kn == NULL)
			return -1;
		if (kn->type != YAML_SCALAR_NODE)
			return s_fail(c, &kn->start_mark, NULL, "keys in %s must be names, not %s",
			              s_label(where), s_kind(kn));
		const char *key = s_str(kn);
		size_t i = 0;
		while (i < nk && strcmp(keys[i].key, key) != 0)
			i++;
		if (i == nk) {
			s_hint_unknown(key, names, "allowed keys", false, h, sizeof h);
			if (*where)
				return s_fail(c, &kn->start_mark, h, "unknown key '%s' in %s",
				              s_q(key, q, sizeof q), where);
			return s_fail(c, &kn->start_mark, h, "unknown key '%s'",
			              s_q(key, q, sizeof q));
		}
		if (found[i]) {
			snprintf(h, sizeof h, "first given at line %zu",
			         found[i]->start_mark.line + 1);
			return s_fail(c, &kn->start_mark, h, "key '%s' appears twice in %s", key,
			              s_label(where));
		}
		yaml_node_t *val = s_node(c, p->value, &kn->start_mark);
		if (val == NULL)
			return -1;
		found[i] = val;
		s_join(sub, where, key);
		if (keys[i].check(c, &keys[i], val, sub) < 0)
			return -1;
	}
	for (size_t i = 0; i < nk; i++) {
		if (!keys[i].required || found[i])
			continue;
		size_t o = (size_t)snprintf(h, sizeof h, "required keys: ");
		for (size_t j = 0, n = 0; j < nk && o < sizeof h; j++)
			if (keys[j].required)
				o += (size_t)snprintf(h + o, sizeof h - o, "%s%s", n++ ? ", " : "",
				                      keys[j].key);
		if (*where)
			return s_fail(c, &v->start_mark, h, "missing required key '%s' in %s",
			              keys[i].key, where);
		return s_fail(c, &v->start_mark, h, "missing required key '%s'", keys[i].key);
	}
	return 0;
}

static int
s_check_map(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	yaml_node_t *found[S_MAX_KEYS];
	return s_walk_map(c, v, k->sub, where, k->example, found);
}

/* A list of mappings (egress rules, approvals). */
static int
s_check_list(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	yaml_node_t *found[S_MAX_KEYS];
	char sub[S_WHERE];

	if (s_want(c, v, YAML_SEQUENCE_NODE, "a list", where, k->example) < 0)
		return -1;
	size_t n = s_seq_len(v);
	if ((long)n > k->max)
		return s_fail(c, &v->start_mark, NULL, "%s has %zu entries, more than %ld", where,
		              n, k->max);
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *item = s_node(c, v->data.sequence.items.start[i], &v->start_mark);
		if (item == NULL)
			return -1;
		snprintf(sub, sizeof sub, "%s[%zu]", where, i);
		if (s_walk_map(c, item, k->sub, sub, k->example, found) < 0)
			return -1;
		if (k->post && k->post(c, item, found, sub) < 0)
			return -1;
	}
	return 0;
}

/* Fails unless v's text is one of k->allowed; the hint lists them under
 * "<adjective> <what>s". */
static int
s_check_allowed(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *adjective)
{
	char q[80], h[256], label[64];

	if (s_in(k->allowed, s_str(v)))
		return 0;
	snprintf(label, sizeof label, "%s %ss", adjective, k->what);
	return s_fail(c, &v->start_mark,
	              s_hint_unknown(s_str(v), k->allowed, label, true, h, sizeof h),
	              "unknown %s '%s'", k->what, s_q(s_str(v), q, sizeof q));
}

/* A list of distinct names from k->allowed (tools, services, methods). */
static int
s_check_names(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	char sub[S_WHERE];

	if (s_want(c, v, YAML_SEQUENCE_NODE, "a list", where, k->example) < 0)
		return -1;
	size_t n = s_seq_len(v);
	if ((long)n < k->min)
		return s_fail(c, &v->start_mark, k->example, "%s must list at least %ld %s%s",
		              where, k->min, k->what, k->min == 1 ? "" : "s");
	if ((long)n > k->max)
		return s_fail(c, &v->start_mark, NULL, "%s has %zu entries, more than %ld", where,
		              n, k->max);
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *item = s_node(c, v->data.sequence.items.start[i], &v->start_mark);
		if (item == NULL)
			return -1;
		snprintf(sub, sizeof sub, "%s[%zu]", where, i);
		if (s_want_text(c, item, sub, k->example) < 0)
			return -1;
		if (s_check_allowed(c, k, item, "known") < 0)
			return -1;
		const char *s = s_str(item);
		for (size_t j = 0; j < i; j++) {
			yaml_node_t *prev =
			    yaml_document_get_node(c->doc, v->data.sequence.items.start[j]);
			if (strcmp(s_str(prev), s) == 0)
				return s_fail(c, &item->start_mark, NULL, "%s '%s' is listed twice",
				              k->what, s);
		}
	}
	return 0;
}

/* One name from k->allowed (approval service / tool). */
static int
s_check_one_name(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	if (s_want_text(c, v, where, NULL) < 0)
		return -1;
	return s_check_allowed(c, k, v, "known");
}

static int
s_check_enum(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	if (s_want_text(c, v, where, NULL) < 0)
		return -1;
	return s_check_allowed(c, k, v, "allowed");
}

/* Decimal only: libcyaml parses with base 0, so "010" would be octal there. */
static int
s_check_uint(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	char q[80], range[64], msg[128];
	const ahp_limit_t *lim = ahp_limit((ahp_limit_id_t)(k->limit - 1));

	if (lim == NULL)
		return s_fail(c, &v->start_mark, NULL, "internal error: %s has no limit", where);
	snprintf(range, sizeof range, "allowed %u..%u", lim->min, lim->max);
	if (s_want(c, v, YAML_SCALAR_NODE, "a number", where, range) < 0)
		return -1;
	const char *s = s_str(v);
	size_t len = v->data.scalar.length;
	bool ok = len > 0 && len <= 10 && !(len > 1 && s[0] == '0');
	for (size_t i = 0; ok && i < len; i++)
		ok = s[i] >= '0' && s[i] <= '9';
	if (!ok)
		return s_fail(c, &v->start_mark, range, "%s must be a whole number, not '%s'",
		              where, s_q(s, q, sizeof q));
	unsigned long long n = strtoull(s, NULL, 10);
	if (ahp_limit_check((ahp_limit_id_t)(k->limit - 1), n, msg, sizeof msg) < 0)
		return s_fail(c, &v->start_mark, NULL, "%s", msg);
	return 0;
}

int
ahp_cpus_parse(const char *s, uint32_t *milli, const char **why)
{
	size_t i = 0, n = 0;
	uint64_t whole = 0, frac = 0;
	if (s == NULL || (s[0] < '0' || s[0] > '9')) {
		*why = "write CPUs as digits, like 0.5, 1 or 2";
		return -1;
	}
	if (s[0] == '0' && s[1] >= '0' && s[1] <= '9') {
		*why = "no leading zeros";
		return -1;
	}
	for (; s[i] >= '0' && s[i] <= '9'; i++) {
		if (++n > 5) {
			*why = "at most 64 CPUs";
			return -1;
		}
		whole = whole * 10 + (uint64_t)(s[i] - '0');
	}
	if (s[i] == '.') {
		size_t d = 0;
		for (i++; s[i] >= '0' && s[i] <= '9'; i++, d++) {
			if (d == 3) {
				*why = "at most 3 decimals";
				return -1;
			}
			frac = frac * 10 + (uint64_t)(s[i] - '0');
		}
		if (d == 0) {
			*why = "digits must follow the '.'";
			return -1;
		}
		for (; d < 3; d++)
			frac *= 10;
	}
	if (s[i] != '\0') {
		*why = "write CPUs as digits, like 0.5, 1 or 2";
		return -1;
	}
	*milli = (uint32_t)(whole * 1000 + frac);
	return 0;
}

/* sandbox.cpus: a decimal (ahp_cpus_parse) whose millicpus are in the
 * table's AHP_LIMIT_CPUS_MILLI range; the message shows CPUs, as written. */
static int
s_check_cpus(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	char q[80], range[64];
	const ahp_limit_t *lim = ahp_limit((ahp_limit_id_t)(k->limit - 1));
	const char *why = NULL;
	uint32_t m = 0;

	if (lim == NULL)
		return s_fail(c, &v->start_mark, NULL, "internal error: %s has no limit", where);
	snprintf(range, sizeof range, "allowed %u.%02u..%u", lim->min / 1000, lim->min % 1000 / 10,
	         lim->max / 1000);
	if (s_want(c, v, YAML_SCALAR_NODE, "a number", where, range) < 0)
		return -1;
	const char *s = s_str(v);
	if (v->data.scalar.length > 16 || strlen(s) != v->data.scalar.length ||
	    ahp_cpus_parse(s, &m, &why) != 0)
		return s_fail(c, &v->start_mark, why ? why : range,
		              "%s must be a number of CPUs like 0.5 or 2, not '%s'", where,
		              s_q(s, q, sizeof q));
	if (ahp_limit_check((ahp_limit_id_t)(k->limit - 1), m, NULL, 0) < 0)
		return s_fail(c, &v->start_mark, NULL, "%s %s is out of range (%s)", where,
		              s_q(s, q, sizeof q), range);
	return 0;
}

static int
s_check_text(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	(void)k;
	if (s_want_text(c, v, where, NULL) < 0)
		return -1;
	/* Blank is Unicode White_Space, as for a task (U+3000 says nothing either). */
	if (!ahp_text_blank(s_str(v)))
		return 0;
	return s_fail(c, &v->start_mark, NULL, "%s must not be blank", where);
}

static bool
s_chars(const char *s, size_t len, const char *extra)
{
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		          (ch != '\0' && strchr(extra, ch) != NULL);
		if (!ok)
			return false;
	}
	return true;
}

static int
s_check_name(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	char q[80];
	const char *hint = "use 1 to 64 characters from a-z, 0-9 and -";

	(void)k;
	if (s_want_text(c, v, where, hint) < 0)
		return -1;
	c->name_mark = v->start_mark;
	size_t len = v->data.scalar.length;
	if (len > 64 || !s_chars(s_str(v), len, "-"))
		return s_fail(c, &v->start_mark, hint, "name '%s' is not valid",
		              s_q(s_str(v), q, sizeof q));
	c->name_ok = s_str(v);
	return 0;
}

static int
s_check_model(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	char q[80];
	const char *hint =
	    "write provider:model, e.g. mock:scripted; both parts from A-Z a-z 0-9 . "
	    "_ - and the model may also use / and :";

	(void)k;
	if (s_want_text(c, v, where, hint) < 0)
		return -1;
	const char *s = s_str(v);
	const char *colon = strchr(s, ':');
	size_t plen = colon ? (size_t)(colon - s) : 0;
	size_t mlen = colon ? strlen(colon + 1) : 0;
	bool ok = colon && plen >= 1 && plen <= S_MAX_PROVIDER && mlen >= 1 && mlen <= S_MAX_MODEL;
	for (size_t i = 0; ok && s[i]; i++) {
		char ch = s[i];
		bool word = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		            (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
		ok = word || i == plen || (i > plen && (ch == '/' || ch == ':'));
	}
	if (!ok)
		return s_fail(c, &v->start_mark, hint, "model '%s' is not valid",
		              s_q(s, q, sizeof q));
	return 0;
}

/* Resolves skills: against the base dir; it must be an existing directory. */
static int
s_check_skills(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	char q[80], joined[PATH_MAX], h[PATH_MAX + 32];
	struct stat st;

	(void)k;
	if (s_want_text(c, v, where, "e.g. skills: skills/release-notes") < 0)
		return -1;
	const char *s = s_str(v);
	int n = s[0] == '/' ? snprintf(joined, sizeof joined, "%s", s)
	                    : snprintf(joined, sizeof joined, "%s/%s", c->base_dir, s);
	if (n < 0 || (size_t)n >= sizeof joined)
		return s_fail(c, &v->start_mark, NULL, "skills path is too long");
	snprintf(h, sizeof h, "looked for %s", joined);
	char *real = realpath(joined, NULL);
	if (real == NULL) {
		if (errno == ENOENT || errno == ENOTDIR)
			return s_fail(c, &v->start_mark, h, "skills directory '%s' does not exist",
			              s_q(s, q, sizeof q));
		return s_fail(c, &v->start_mark, h, "skills directory '%s': %s",
		              s_q(s, q, sizeof q), strerror(errno));
	}
	if (stat(real, &st) < 0 || !S_ISDIR(st.st_mode)) {
		free(real);
		return s_fail(c, &v->start_mark, h, "skills path '%s' is not a directory",
		              s_q(s, q, sizeof q));
	}
	/* The model reads whatever lies under the skills directory: it must stay
	 * inside the platform's etc/ directory (after symlinks), never /etc or a
	 * home directory a profile happens to name. */
	char *base = realpath(c->base_dir, NULL);
	size_t bl = base != NULL ? strlen(base) : 0;
	int inside = base != NULL && strncmp(real, base, bl) == 0 &&
	             (real[bl] == '/' || real[bl] == '\0' || (bl == 1 && base[0] == '/'));
	if (!inside) {
		char hint[PATH_MAX + 64];
		snprintf(hint, sizeof hint, "skills live under %s",
		         base != NULL ? base : c->base_dir);
		free(base);
		free(real);
		return s_fail(c, &v->start_mark, hint,
		              "skills directory '%s' is outside the platform's etc directory",
		              s_q(s, q, sizeof q));
	}
	free(base);
	free(c->skills_dir);
	c->skills_dir = real;
	return 0;
}

/* The last label is a number (WHATWG URL "ends in a number"): all digits, or
 * 0x / 0X followed by hex digits only. */
static bool
s_ends_in_number(const char *s, size_t len)
{
	size_t start = len;
	while (start > 0 && s[start - 1] != '.')
		start--;
	const char *l = s + start;
	size_t ll = len - start;
	if (ll == 0)
		return false;
	size_t i = 0;
	bool hex = ll >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X');
	if (hex)
		i = 2;
	for (; i < ll; i++) {
		char ch = l[i];
		bool dig = ch >= '0' && ch <= '9';
		bool hx = hex && ((ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F'));
		if (!dig && !hx)
			return false;
	}
	return true;
}

int
ahp_host_check(const char *s, size_t len, const char **why)
{
	const char *dummy;
	if (why == NULL)
		why = &dummy;
	if (s == NULL || len == 0) {
		*why = "empty host";
		return -1;
	}
	if (len > S_MAX_HOST) {
		*why = "longer than 253 bytes";
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch >= 0x80) {
			*why = "non-ASCII (write an international name in punycode, xn--...)";
			return -1;
		}
		bool ok =
		    (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.';
		if (!ok) {
			*why = "only a-z, 0-9, '-' and '.' may appear";
			return -1;
		}
	}
	if (s_ends_in_number(s, len)) {
		char buf[S_MAX_HOST + 1];
		struct in_addr a;
		memcpy(buf, s, len);
		buf[len] = '\0';
		/* glibc's inet_pton takes exactly four decimal parts 0..255, no
		 * leading zeros: the one spelling of an IPv4 address. */
		if (inet_pton(AF_INET, buf, &a) != 1) {
			*why = "a numeric host must be a dotted quad like 127.0.0.1";
			return -1;
		}
		return 0;
	}
	/* Labels: 1..63 characters, no leading or trailing '-'. */
	for (size_t i = 0, start = 0; i <= len; i++) {
		if (i < len && s[i] != '.')
			continue;
		size_t l = i - start;
		if (l == 0) {
			*why = "empty label";
			return -1;
		}
		if (l > 63) {
			*why = "a label is longer than 63 bytes";
			return -1;
		}
		if (s[start] == '-' || s[i - 1] == '-') {
			*why = "a label starts or ends with '-'";
			return -1;
		}
		start = i + 1;
	}
	return 0;
}

/* host[:port] as written in a rule: a lower-case name, "*.suffix", a dotted
 * quad or a bracketed IPv6 address, then optionally ":1..65535". */
static int
s_check_host(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	char q[80], buf[64];
	const char *hint = "write a lower-case host like wiki.local, wiki.local:8443, "
	                   "[fd00::1]:8080 or a wildcard like *.example.com";
	const char *why = NULL;

	(void)k;
	if (s_want_text(c, v, where, hint) < 0)
		return -1;
	const char *s = s_str(v);
	size_t len = v->data.scalar.length, hl = len;
	const char *port = NULL;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', len);
		if (close == NULL) {
			why = "an IPv6 address needs a closing ']'";
			goto bad;
		}
		hl = (size_t)(close - s) + 1;
		if (hl < len && s[hl] != ':') {
			why = "only :port may follow ']'";
			goto bad;
		}
	} else {
		const char *colon = memchr(s, ':', len);
		if (colon != NULL)
			hl = (size_t)(colon - s);
		if (colon != NULL && memchr(colon + 1, ':', len - hl - 1) != NULL) {
			why = "an IPv6 address goes in brackets, e.g. [::1]:8080";
			goto bad;
		}
	}
	if (hl < len)
		port = s + hl + 1;
	if (port != NULL) {
		size_t pl = len - hl - 1;
		bool ok = pl >= 1 && pl <= 5 && port[0] != '0';
		for (size_t i = 0; ok && i < pl; i++)
			ok = port[i] >= '0' && port[i] <= '9';
		if (!ok || strtoul(port, NULL, 10) > 65535) {
			why = "the port must be a number 1..65535";
			goto bad;
		}
	}
	if (s[0] == '[') {
		struct in6_addr a6;
		size_t il = hl - 2;
		if (il == 0 || il >= sizeof buf) {
			why = "not an IPv6 address";
			goto bad;
		}
		memcpy(buf, s + 1, il);
		buf[il] = '\0';
		if (inet_pton(AF_INET6, buf, &a6) != 1) {
			why = "not an IPv6 address";
			goto bad;
		}
		return 0;
	}
	if (hl == 1 && s[0] == '*') {
		why = "a bare * would allow every host; name the hosts";
		goto bad;
	}
	bool wildcard = hl > 2 && s[0] == '*' && s[1] == '.';
	const char *name = wildcard ? s + 2 : s;
	size_t nl = wildcard ? hl - 2 : hl;
	if (nl > 0 && name[nl - 1] == '.') {
		why = "no trailing dot";
		goto bad;
	}
	for (size_t i = 0; i < nl; i++)
		if (name[i] >= 'A' && name[i] <= 'Z') {
			why = "upper-case letters (host names are matched in lower case)";
			goto bad;
		}
	if (ahp_host_check(name, nl, &why) < 0)
		goto bad;
	if (wildcard && s_ends_in_number(name, nl)) {
		why = "a wildcard names sub-domains, not an IP address";
		goto bad;
	}
	return 0;
bad:
	return s_fail(c, &v->start_mark, hint, "%s '%s' is not a valid host: %s", where,
	              s_q(s, q, sizeof q), why);
}

/* A path prefix: starts with '/', printable ASCII without space, '?' or '#',
 * no "." or ".." segment (a request holding one is refused before matching,
 * so such a prefix could never match). Length from the limits table. */
static int
s_check_paths(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	char sub[S_WHERE], q[80], msg[128];
	const ahp_limit_t *np = ahp_limit(AHP_LIMIT_EGRESS_PATHS);
	const ahp_limit_t *pl = ahp_limit(AHP_LIMIT_EGRESS_PATH);
	const char *hint = "a path prefix starts with '/', e.g. /snippets/; printable ASCII "
	                   "without spaces, '?', '#' or . and .. segments";

	(void)k;
	if (s_want(c, v, YAML_SEQUENCE_NODE, "a list", where,
	           "e.g. paths: [/snippets/]; leave paths out for any path") < 0)
		return -1;
	size_t n = s_seq_len(v);
	if (n < np->min)
		return s_fail(c, &v->start_mark,
		              "e.g. paths: [/snippets/]; leave paths out for any path",
		              "%s must list at least %u path", where, np->min);
	if (n > np->max)
		return s_fail(c, &v->start_mark, NULL, "%s has %zu entries, more than %u", where, n,
		              np->max);
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *item = s_node(c, v->data.sequence.items.start[i], &v->start_mark);
		if (item == NULL)
			return -1;
		snprintf(sub, sizeof sub, "%s[%zu]", where, i);
		if (s_want_text(c, item, sub, hint) < 0)
			return -1;
		const char *p = s_str(item);
		size_t len = item->data.scalar.length;
		if (ahp_limit_check(AHP_LIMIT_EGRESS_PATH, len, msg, sizeof msg) < 0)
			return s_fail(c, &item->start_mark, NULL,
			              "%s: length %zu is out of range "
			              "(allowed %u..%u bytes)",
			              sub, len, pl->min, pl->max);
		bool ok = p[0] == '/';
		for (size_t j = 0; ok && j < len; j++) {
			unsigned char ch = (unsigned char)p[j];
			ok = ch > 0x20 && ch < 0x7f && ch != '?' && ch != '#';
		}
		/* Dot segments: "/./", "/../", or a trailing "/." or "/..". */
		for (size_t j = 0; ok && j < len; j++) {
			if (p[j] != '/')
				continue;
			size_t e = j + 1;
			while (e < len && p[e] == '.')
				e++;
			size_t dots = e - j - 1;
			if ((dots == 1 || dots == 2) && (e == len || p[e] == '/'))
				ok = false;
		}
		if (!ok)
			return s_fail(c, &item->start_mark, hint,
			              "%s '%s' is not a valid path prefix", sub,
			              s_q(p, q, sizeof q));
		for (size_t j = 0; j < i; j++) {
			yaml_node_t *prev =
			    yaml_document_get_node(c->doc, v->data.sequence.items.start[j]);
			if (strcmp(s_str(prev), p) == 0)
				return s_fail(c, &item->start_mark, NULL,
				              "path '%s' is listed twice", s_q(p, q, sizeof q));
		}
	}
	return 0;
}

/* Values may name secrets as {{secret:NAME}}; any other {{...}} is an error.
 * The loader never resolves them: only credproxy holds secret values. */
static int
s_check_template(s_ctx_t *c, yaml_node_t *v, const char *where)
{
	char q[80], t[S_MAX_SECRET_NAME + 16];
	const char *hint = "only {{secret:NAME}} is allowed, NAME made of A-Z a-z 0-9 . _ -";
	const char *p = s_str(v);

	for (;;) {
		const char *open = strstr(p, "{{");
		if (open == NULL)
			return 0;
		const char *close = strstr(open + 2, "}}");
		if (close == NULL)
			return s_fail(c, &v->start_mark, hint, "%s: unterminated template '%s'",
			              where, s_q(open, q, sizeof q));
		const char *in = open + 2;
		size_t ilen = (size_t)(close - in);
		bool ok = ilen > 7 && ilen - 7 <= S_MAX_SECRET_NAME &&
		          strncmp(in, "secret:", 7) == 0 &&
		          s_chars(in + 7, ilen - 7, "._-ABCDEFGHIJKLMNOPQRSTUVWXYZ");
		if (!ok) {
			size_t tl = (size_t)(close + 2 - open);
			if (tl >= sizeof t)
				tl = sizeof t - 1;
			memcpy(t, open, tl);
			t[tl] = '\0';
			return s_fail(c, &v->start_mark, hint, "%s: unsupported template '%s'",
			              where, s_q(t, q, sizeof q));
		}
		p = close + 2;
	}
}

bool
ahp_http_token(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		          (ch >= '0' && ch <= '9') ||
		          (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
		if (!ok)
			return false;
	}
	return true;
}

static bool
s_header_name_ok(const char *s, size_t len)
{
	return len <= S_MAX_HEADER_NAME && ahp_http_token(s, len);
}

/* Headers that frame or route the request (RFC 9110 sections 7.2, 7.6.1, 8.6;
 * RFC 9112 section 6.1): credproxy writes them itself, and an injected one
 * would let a profile smuggle a second request or redirect the first. */
static bool
s_header_reserved(const char *name)
{
	static const char *const reserved[] = {"Host",       "Content-Length", "Transfer-Encoding",
	                                       "Connection", "Keep-Alive",     "TE",
	                                       "Trailer",    "Upgrade",        NULL};
	for (size_t i = 0; reserved[i]; i++)
		if (strcasecmp(name, reserved[i]) == 0)
			return true;
	return strncasecmp(name, "Proxy-", 6) == 0;
}

int
ahp_inject_header_check(const char *name, const char **why)
{
	const char *dummy;
	if (why == NULL)
		why = &dummy;
	if (name == NULL || !s_header_name_ok(name, strlen(name))) {
		*why = "not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~, at "
		       "most 128)";
		return -1;
	}
	if (s_header_reserved(name)) {
		*why = "Host, Content-Length, Transfer-Encoding, Connection, Keep-Alive, TE, "
		       "Trailer, Upgrade and Proxy-* cannot be injected (credproxy sets them)";
		return -1;
	}
	return 0;
}

/* inject: { Header-Name: "value with {{secret:NAME}}" }. */
static int
s_check_inject(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	char q[80], sub[S_WHERE];
	const char *example = "e.g. inject: { Authorization: \"Bearer {{secret:wiki-token}}\" }";

	if (s_want(c, v, YAML_MAPPING_NODE, "a mapping", where, example) < 0)
		return -1;
	size_t n = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
	if ((long)n > k->max)
		return s_fail(c, &v->start_mark, NULL, "%s has %zu headers, more than %ld", where,
		              n, k->max);
	for (size_t i = 0; i < n; i++) {
		yaml_node_pair_t *p = &v->data.mapping.pairs.start[i];
		yaml_node_t *kn = s_node(c, p->key, &v->start_mark);
		if (kn == NULL)
			return -1;
		if (kn->type != YAML_SCALAR_NODE ||
		    !s_header_name_ok(s_str(kn), kn->data.scalar.length))
			return s_fail(c, &kn->start_mark,
			              "letters, digits and !#$%&'*+-.^_`|~, at most 128",
			              "%s: not a valid HTTP header name", where);
		if (s_header_reserved(s_str(kn)))
			return s_fail(c, &kn->start_mark,
			              "Host, Content-Length, Transfer-Encoding, Connection, "
			              "Keep-Alive, TE, Trailer, Upgrade and Proxy-* are set by "
			              "credproxy",
			              "%s: header '%s' cannot be injected", where,
			              s_q(s_str(kn), q, sizeof q));
		for (size_t j = 0; j < i; j++) {
			yaml_node_t *prev =
			    yaml_document_get_node(c->doc, v->data.mapping.pairs.start[j].key);
			if (strcasecmp(s_str(prev), s_str(kn)) == 0)
				return s_fail(c, &kn->start_mark, NULL,
				              "%s: header '%s' is injected twice", where,
				              s_q(s_str(kn), q, sizeof q));
		}
		yaml_node_t *val = s_node(c, p->value, &kn->start_mark);
		if (val == NULL)
			return -1;
		s_join(sub, where, s_str(kn));
		if (s_want(c, val, YAML_SCALAR_NODE, "a string", sub, example) < 0)
			return -1;
		if (val->data.scalar.length > S_MAX_HEADER_VALUE)
			return s_fail(c, &val->start_mark, NULL, "%s is longer than %d bytes", sub,
			              S_MAX_HEADER_VALUE);
		/* A CR or LF here would let a profile smuggle extra headers. */
		for (const unsigned char *b = (const unsigned char *)s_str(val); *b; b++)
			if ((*b < 0x20 && *b != '\t') || *b == 0x7f)
				return s_fail(c, &val->start_mark,
				              "header values cannot hold line breaks or control "
				              "characters",
				              "%s contains a control character", sub);
		if (s_check_template(c, val, sub) < 0)
			return -1;
	}
	return 0;
}

/* glibc's regcomp accepts the GNU operators \b \w \< \> in extended syntax,
 * and the orchestrator compiles match with the same call, so validating here
 * is exact; the pattern is stored as written. */
static int
s_check_regex(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	regex_t re;
	char msg[128];

	(void)k;
	if (s_want_text(c, v, where, "a POSIX extended regular expression") < 0)
		return -1;
	if (v->data.scalar.length > S_MAX_REGEX)
		return s_fail(c, &v->start_mark, NULL, "%s is longer than %d bytes", where,
		              S_MAX_REGEX);
	int rc = regcomp(&re, s_str(v), REG_EXTENDED | REG_NOSUB);
	if (rc != 0) {
		regerror(rc, &re, msg, sizeof msg);
		return s_fail(c, &v->start_mark, msg, "%s is not a valid regular expression",
		              where);
	}
	regfree(&re);
	return 0;
}

static int
s_check_duration(s_ctx_t *c, const s_key_t *k, yaml_node_t *v, const char *where)
{
	char q[80];
	long secs;
	const char *hint = "like 30s, 15m, 24h or 7d; at most 30d";

	(void)k;
	if (s_want_text(c, v, where, hint) < 0)
		return -1;
	if (ahp_parse_duration(s_str(v), &secs) < 0)
		return s_fail(c, &v->start_mark, hint, "%s '%s' is not a duration", where,
		              s_q(s_str(v), q, sizeof q));
	if (secs < 1 || secs > S_MAX_EXPIRES)
		return s_fail(c, &v->start_mark, hint, "%s '%s' is out of range", where,
		              s_q(s_str(v), q, sizeof q));
	return 0;
}

static int
s_post_approval(s_ctx_t *c, yaml_node_t *item, yaml_node_t **found, const char *where)
{
	const char *hint = "an approval gates exactly one service or one tool";
	if (found[A_SERVICE] && found[A_TOOL])
		return s_fail(c, &item->start_mark, hint, "%s names both a service and a tool",
		              where);
	if (!found[A_SERVICE] && !found[A_TOOL])
		return s_fail(c, &item->start_mark, hint, "%s needs a 'service' or a 'tool'",
		              where);
	return 0;
}

static bool
s_seq_has(yaml_document_t *doc, yaml_node_t *seq, const char *s)
{
	if (seq == NULL || seq->type != YAML_SEQUENCE_NODE)
		return false;
	for (yaml_node_item_t *i = seq->data.sequence.items.start; i < seq->data.sequence.items.top;
	     i++) {
		yaml_node_t *n = yaml_document_get_node(doc, *i);
		if (n && n->type == YAML_SCALAR_NODE && strcmp(s_str(n), s) == 0)
			return true;
	}
	return false;
}

/* An approval can only gate what the profile actually has. Done after the
 * walk because services/tools may come after approvals in the file. */
static int
s_check_approval_refs(s_ctx_t *c)
{
	yaml_node_t *apv = c->top[K_APPROVALS];
	char h[128];

	if (apv == NULL)
		return 0;
	for (size_t i = 0; i < s_seq_len(apv); i++) {
		yaml_node_t *item =
		    yaml_document_get_node(c->doc, apv->data.sequence.items.start[i]);
		yaml_node_t *svc = s_map_get(c->doc, item, "service");
		yaml_node_t *tool = s_map_get(c->doc, item, "tool");
		if (svc && !s_seq_has(c->doc, c->top[K_SERVICES], s_str(svc))) {
			snprintf(h, sizeof h, "add %s to services", s_str(svc));
			return s_fail(
			    c, &svc->start_mark, h,
			    "approvals[%zu].service '%s' is not in this profile's services", i,
			    s_str(svc));
		}
		if (tool && !s_seq_has(c->doc, c->top[K_TOOLS], s_str(tool))) {
			snprintf(h, sizeof h, "add %s to tools", s_str(tool));
			return s_fail(c, &tool->start_mark, h,
			              "approvals[%zu].tool '%s' is not in this profile's tools", i,
			              s_str(tool));
		}
	}
	return 0;
}

/* ---- loading ---- */

static void
s_syntax_error(const char *file, const yaml_parser_t *ps, const char *buf, size_t len, char *err,
               size_t errlen)
{
	size_t line = ps->problem_mark.line + 1, col = ps->problem_mark.column + 1;
	const char *problem = ps->problem ? ps->problem : "invalid YAML";

	if (ps->error == YAML_MEMORY_ERROR) {
		snprintf(err, errlen, "%s: out of memory while parsing", file);
		return;
	}
	if (ps->error == YAML_READER_ERROR) {
		/* Reader errors (bad UTF-8, control bytes) carry only an offset. */
		line = 1;
		col = 1;
		for (size_t i = 0; i < ps->problem_offset && i < len; i++) {
			if (buf[i] == '\n') {
				line++;
				col = 1;
			} else if (((unsigned char)buf[i] & 0xc0) != 0x80) {
				col++;
			}
		}
	}
	if (ps->context)
		snprintf(err, errlen,
		         "%s:%zu:%zu: YAML syntax error: %s (%s at line %zu, column %zu)", file,
		         line, col, problem, ps->context, ps->context_mark.line + 1,
		         ps->context_mark.column + 1);
	else
		snprintf(err, errlen, "%s:%zu:%zu: YAML syntax error: %s", file, line, col,
		         problem);
}

/* Event pass before the document is built: refuses aliases (at the alias
 * itself), a second document, and nesting deeper than S_MAX_DEPTH. The depth
 * ceiling matters for time, not only memory: libyaml's scanner rechecks every
 * open flow level per token, so "[[[[..." costs O(depth^2), seconds for a
 * 256 KiB file. Stopping at the first event too deep bounds that. */
static int
s_prescan(const char *file, const char *buf, size_t len, char *err, size_t errlen)
{
	yaml_parser_t ps;
	yaml_event_t ev;
	int depth = 0, docs = 0, rc = -1;
	char q[80];

	if (!yaml_parser_initialize(&ps)) {
		snprintf(err, errlen, "%s: out of memory", file);
		return -1;
	}
	yaml_parser_set_input_string(&ps, (const unsigned char *)buf, len);
	for (;;) {
		if (!yaml_parser_parse(&ps, &ev)) {
			s_syntax_error(file, &ps, buf, len, err, errlen);
			break;
		}
		size_t line = ev.start_mark.line + 1, col = ev.start_mark.column + 1;
		bool stop = false;
		switch (ev.type) {
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (++depth > S_MAX_DEPTH) {
				snprintf(err, errlen,
				         "%s:%zu:%zu: nesting is deeper than %d levels (a profile "
				         "needs at most 4)",
				         file, line, col, S_MAX_DEPTH);
				stop = true;
			}
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		case YAML_ALIAS_EVENT:
			snprintf(err, errlen,
			         "%s:%zu:%zu: YAML aliases (*%s) are not supported in profiles "
			         "(write the value out in full)",
			         file, line, col,
			         s_q((const char *)ev.data.alias.anchor, q, sizeof q));
			stop = true;
			break;
		case YAML_DOCUMENT_START_EVENT:
			if (++docs > 1) {
				snprintf(
				    err, errlen,
				    "%s:%zu:%zu: a profile file holds one YAML document, found "
				    "another (split it into separate files)",
				    file, line, col);
				stop = true;
			}
			break;
		case YAML_STREAM_END_EVENT:
			rc = 0;
			stop = true;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
		if (stop)
			break;
	}
	yaml_parser_delete(&ps);
	return rc;
}

/* Reads a profile: a regular file, not a symlink (the profiles dir is the
 * reviewed unit; a link would let whoever owns its target change what
 * credproxy and servicesd enforce), at most S_MAX_FILE_BYTES. */
static int
s_read(const char *path, char **out, size_t *out_len, char *err, size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		if (errno == ELOOP)
			snprintf(err, errlen,
			         "%s: is a symbolic link (profiles must be regular files)", path);
		else
			snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		close(fd);
		return -1;
	}
	if (st.st_size > S_MAX_FILE_BYTES) {
		snprintf(err, errlen, "%s: profile is %lld bytes (the limit is %d bytes)", path,
		         (long long)st.st_size, S_MAX_FILE_BYTES);
		close(fd);
		return -1;
	}
	size_t cap = (size_t)st.st_size;
	char *buf = malloc(cap + 1);
	size_t len = 0;
	if (buf == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		close(fd);
		return -1;
	}
	/* Bounded by the size seen at fstat: a file growing meanwhile is cut. */
	while (len < cap) {
		ssize_t r = read(fd, buf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(err, errlen, "%s: read: %s", path, strerror(errno));
			free(buf);
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	return 0;
}

/* libcyaml allocates with this, so ahp_profile_destroy can free() it all. */
static void *
s_cyaml_mem(void *ctx, void *ptr, size_t size)
{
	(void)ctx;
	if (size == 0) {
		free(ptr);
		return NULL;
	}
	return realloc(ptr, size);
}

static void
s_cyaml_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
{
	char *msg = ctx;
	if (level < CYAML_LOG_ERROR || msg[0] != '\0')
		return; /* keep the first error; later lines are backtrace */
	vsnprintf(msg, 256, fmt, args);
	msg[strcspn(msg, "\n")] = '\0';
}

static char *
s_dup(const char *s, bool *oom)
{
	char *d = strdup(s);
	if (d == NULL)
		*oom = true;
	return d;
}

static void
s_fill_inject(s_ctx_t *c, ahp_profile_t *p, bool *oom)
{
	yaml_node_t *seq = c->top[K_EGRESS];
	if (seq == NULL || s_seq_len(seq) != p->n_egress) {
		*oom = *oom || p->n_egress != 0;
		return;
	}
	for (unsigned i = 0; i < p->n_egress; i++) {
		yaml_node_t *item =
		    yaml_document_get_node(c->doc, seq->data.sequence.items.start[i]);
		yaml_node_t *inj = s_map_get(c->doc, item, "inject");
		if (inj == NULL)
			continue;
		size_t n = (size_t)(inj->data.mapping.pairs.top - inj->data.mapping.pairs.start);
		if (n == 0)
			continue;
		ahp_kv_t *kv = calloc(n, sizeof *kv);
		if (kv == NULL) {
			*oom = true;
			return;
		}
		p->egress[i].inject = kv;
		p->egress[i].n_inject = (unsigned)n;
		for (size_t j = 0; j < n; j++) {
			yaml_node_pair_t *pair = &inj->data.mapping.pairs.start[j];
			kv[j].name = s_dup(s_str(yaml_document_get_node(c->doc, pair->key)), oom);
			kv[j].value =
			    s_dup(s_str(yaml_document_get_node(c->doc, pair->value)), oom);
		}
	}
}

/* Derived fields and defaults, after libcyaml filled what was written. */
static int
s_fill(s_ctx_t *c, ahp_profile_t *p)
{
	bool oom = false;

	p->path = s_dup(c->file, &oom);
	const char *colon = strchr(p->model, ':');
	p->provider = strndup(p->model, (size_t)(colon - p->model));
	p->model_name = s_dup(colon + 1, &oom);
	oom = oom || p->provider == NULL;
	p->skills_dir = c->skills_dir;
	c->skills_dir = NULL;

	/* libcyaml leaves unwritten fields 0, which no range allows. */
	if (p->sandbox.memory_mb == 0)
		p->sandbox.memory_mb = AHP_LIM_MEMORY_MB_DEF;
	if (p->sandbox.pids_max == 0)
		p->sandbox.pids_max = AHP_LIM_PIDS_MAX_DEF;
	if (p->sandbox.cpu_seconds == 0)
		p->sandbox.cpu_seconds = AHP_LIM_CPU_SECONDS_DEF;
	if (p->sandbox.timeout_s == 0)
		p->sandbox.timeout_s = AHP_LIM_TIMEOUT_S_DEF;
	if (p->sandbox.output_kb == 0)
		p->sandbox.output_kb = AHP_LIM_OUTPUT_KB_DEF;
	if (p->sandbox.disk_mb == 0)
		p->sandbox.disk_mb = AHP_LIM_DISK_MB_DEF;
	const char *why;
	yaml_node_t *cpus =
	    c->top[K_SANDBOX] != NULL ? s_map_get(c->doc, c->top[K_SANDBOX], "cpus") : NULL;
	if (cpus == NULL || ahp_cpus_parse(s_str(cpus), &p->sandbox.cpus_milli, &why) != 0)
		p->sandbox.cpus_milli = AHP_LIM_CPUS_MILLI_DEF;
	if (p->limits.max_turns == 0)
		p->limits.max_turns = AHP_LIM_MAX_TURNS_DEF;
	if (p->limits.max_model_calls == 0)
		p->limits.max_model_calls = AHP_LIM_MAX_MODEL_CALLS_DEF;

	p->refs = 1;
	for (unsigned i = 0; i < p->n_approvals; i++)
		p->approvals[i].match_re = NULL;
	for (unsigned i = 0; i < p->n_approvals; i++) {
		ahp_approval_t *a = &p->approvals[i];
		/* Compiled once here, so a gate decision is a regexec and cannot
		 * fail on a pattern; s_check_regex already compiled it once. */
		if (a->match != NULL) {
			regex_t *re = calloc(1, sizeof *re);
			if (re == NULL || regcomp(re, a->match, REG_EXTENDED | REG_NOSUB) != 0) {
				free(re);
				oom = true;
			} else {
				a->match_re = re;
			}
		}
		if (a->expires == NULL)
			a->expires = s_dup(S_DEFAULT_EXPIRES, &oom);
		if (a->expires == NULL || ahp_parse_duration(a->expires, &a->expires_s) < 0)
			a->expires_s = S_DEFAULT_EXPIRES_S;
	}
	s_fill_inject(c, p, &oom);
	return oom ? -1 : 0;
}

/* name_out (may be NULL; S_NAME_BUF bytes) receives the profile's name: when
 * the file failed, the name it asks for if that much was valid, else "". */
#define S_NAME_BUF 65
static ahp_profile_t *
s_load(const char *path, const char *base_dir, char *err, size_t errlen, yaml_mark_t *name_mark,
       char *name_out)
{
	char *buf = NULL;
	size_t len = 0;
	yaml_parser_t parser;
	yaml_document_t doc;
	char base[PATH_MAX];
	ahp_profile_t *p = NULL;
	s_ctx_t c = {.file = path, .err = err, .errlen = errlen, .doc = &doc};

	if (name_out != NULL)
		name_out[0] = '\0';
	if (s_read(path, &buf, &len, err, errlen) < 0)
		return NULL;

	if (base_dir == NULL) {
		/* profiles/x.yaml -> the directory holding profiles/ (AHP etc/). */
		const char *slash = strrchr(path, '/');
		int dl = slash ? (int)(slash - path) : 1;
		char up[PATH_MAX];
		snprintf(up, sizeof up, "%.*s/..", dl == 0 ? 1 : dl, slash ? path : ".");
		char *real = realpath(up, NULL);
		ahp_strlcpy(base, real ? real : up, sizeof base);
		free(real);
		base_dir = base;
	}
	c.base_dir = base_dir;

	if (s_prescan(path, buf, len, err, errlen) < 0) {
		free(buf);
		return NULL;
	}
	if (!yaml_parser_initialize(&parser)) {
		snprintf(err, errlen, "%s: out of memory", path);
		free(buf);
		return NULL;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	if (!yaml_parser_load(&parser, &doc)) {
		s_syntax_error(path, &parser, buf, len, err, errlen);
		yaml_parser_delete(&parser);
		free(buf);
		return NULL;
	}
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (root == NULL) {
		snprintf(err, errlen,
		         "%s:1:1: profile is empty (required keys: name, model, "
		         "system_prompt)",
		         path);
		goto out;
	}
	c.n_nodes = (size_t)(doc.nodes.top - doc.nodes.start);
	c.seen = calloc(c.n_nodes, 1);
	if (c.seen == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		goto out;
	}
	root = s_node(&c, 1, &doc.start_mark);
	if (root == NULL)
		goto out;
	if (s_walk_map(&c, root, s_profile_keys, "",
	               "a profile is a mapping: name: ..., model: ...", c.top) < 0)
		goto out;
	if (s_check_approval_refs(&c) < 0)
		goto out;

	char cylog[256] = "";
	cyaml_config_t cfg = {
	    .log_fn = s_cyaml_log,
	    .log_ctx = cylog,
	    .mem_fn = s_cyaml_mem,
	    .log_level = CYAML_LOG_ERROR,
	    .flags = CYAML_CFG_NO_ALIAS,
	};
	cyaml_err_t cerr = cyaml_load_data((const uint8_t *)buf, len, &cfg, &s_cy_profile,
	                                   (cyaml_data_t **)&p, NULL);
	if (cerr != CYAML_OK || p == NULL) {
		snprintf(err, errlen,
		         "%s: internal error: libcyaml refused a validated profile: %s (%s)", path,
		         cyaml_strerror(cerr), cylog);
		p = NULL;
		goto out;
	}
	if (s_fill(&c, p) < 0) {
		snprintf(err, errlen, "%s: out of memory", path);
		ahp_profile_destroy(&p);
		goto out;
	}
	if (name_mark)
		*name_mark = c.name_mark;
out:
	if (name_out != NULL)
		ahp_strlcpy(name_out, c.name_ok ? c.name_ok : "", S_NAME_BUF);
	free(c.seen);
	free(c.skills_dir);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	free(buf);
	return p;
}

ahp_profile_t *
ahp_profile_load(const char *path, const char *base_dir, char *err, size_t errlen)
{
	char local[512];
	if (err == NULL || errlen == 0) {
		err = local;
		errlen = sizeof local;
	}
	err[0] = '\0';
	if (path == NULL) {
		snprintf(err, errlen, "(null): no profile path");
		return NULL;
	}
	return s_load(path, base_dir, err, errlen, NULL, NULL);
}

static void
s_free_strv(char **v, unsigned n)
{
	for (unsigned i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

Ahp__Sbx__NetworkMode
ahp_sandbox_limits(const ahp_sandbox_cfg_t *sc, Ahp__Sbx__Limits *out)
{
	out->memory_mb = sc->memory_mb;
	out->pids_max = sc->pids_max;
	out->cpu_seconds = sc->cpu_seconds;
	out->timeout_s = sc->timeout_s;
	out->output_kb = sc->output_kb;
	out->disk_mb = sc->disk_mb;
	out->cpus_milli = sc->cpus_milli;
	return sc->network == AHP_NET_PROXY ? AHP__SBX__NETWORK_MODE__NET_PROXY
	                                    : AHP__SBX__NETWORK_MODE__NET_NONE;
}

void
ahp_profile_destroy(ahp_profile_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	ahp_profile_t *p = *self_p;
	*self_p = NULL;
	if (p->refs > 1) {
		p->refs--;
		return;
	}
	free(p->name);
	free(p->model);
	free(p->system_prompt);
	s_free_strv(p->tools, p->n_tools);
	s_free_strv(p->services, p->n_services);
	free(p->skills);
	for (unsigned i = 0; p->egress && i < p->n_egress; i++) {
		ahp_egress_t *e = &p->egress[i];
		free(e->host);
		s_free_strv(e->methods, e->n_methods);
		s_free_strv(e->paths, e->n_paths);
		for (unsigned j = 0; e->inject && j < e->n_inject; j++) {
			free(e->inject[j].name);
			free(e->inject[j].value);
		}
		free(e->inject);
	}
	free(p->egress);
	for (unsigned i = 0; p->approvals && i < p->n_approvals; i++) {
		free(p->approvals[i].service);
		free(p->approvals[i].tool);
		free(p->approvals[i].match);
		free(p->approvals[i].expires);
		if (p->approvals[i].match_re != NULL) {
			regfree(p->approvals[i].match_re);
			free(p->approvals[i].match_re);
		}
	}
	free(p->approvals);
	free(p->path);
	free(p->skills_dir);
	free(p->provider);
	free(p->model_name);
	free(p);
}

ahp_profile_t *
ahp_profile_ref(ahp_profile_t *p)
{
	if (p != NULL)
		p->refs++;
	return p;
}

int
ahp_profile_has_tool(const ahp_profile_t *p, const char *tool)
{
	for (unsigned i = 0; p && tool && i < p->n_tools; i++)
		if (strcmp(p->tools[i], tool) == 0)
			return 1;
	return 0;
}

int
ahp_profile_has_service(const ahp_profile_t *p, const char *service)
{
	for (unsigned i = 0; p && service && i < p->n_services; i++)
		if (strcmp(p->services[i], service) == 0)
			return 1;
	return 0;
}

const ahp_approval_t *
ahp_profile_gate(const ahp_profile_t *p, const char *tool, const char *service, const char *subject)
{
	if (p == NULL)
		return NULL;
	if (subject == NULL)
		subject = "";
	for (unsigned i = 0; i < p->n_approvals; i++) {
		const ahp_approval_t *a = &p->approvals[i];
		bool applies =
		    (a->tool != NULL && tool != NULL && strcmp(a->tool, tool) == 0) ||
		    (a->service != NULL && service != NULL && strcmp(a->service, service) == 0);
		if (!applies)
			continue;
		/* A pattern that could not be compiled never loads; if one is
		 * missing anyway, gate rather than let the call through. */
		if (a->match == NULL || a->match_re == NULL ||
		    regexec(a->match_re, subject, 0, NULL, 0) == 0)
			return a;
	}
	return NULL;
}

/* Every field a profile may hold is enforced by a daemon now (approvals and
 * ask_human by approvald, since issue 9): there is nothing to warn about. The
 * function stays for callers that list warnings; docs/profiles.md keeps the
 * list, empty. */
size_t
ahp_profile_warnings(const ahp_profile_t *p, void (*fn)(void *arg, const char *line), void *arg)
{
	(void)p;
	(void)fn;
	(void)arg;
	return 0;
}

/* ---- a directory of profiles ---- */

typedef struct {
	char *path;
	char *error;
	char *name;
} s_failed_t;

struct ahp_profiles {
	ahp_profile_t **items;
	size_t n, cap;
	size_t errors;
	s_failed_t *failed; /* n_failed <= errors: recording may run out of memory */
	size_t n_failed, cap_failed;
	char **warnings;
	size_t n_warnings, cap_warnings;
};

/* Records a failure; counted even when recording runs out of memory. */
static void
s_record_failure(ahp_profiles_t *self, const char *path, const char *error, const char *name)
{
	self->errors++;
	if (self->n_failed == self->cap_failed) {
		size_t cap = self->cap_failed ? self->cap_failed * 2 : 8;
		s_failed_t *f = realloc(self->failed, cap * sizeof *f);
		if (f == NULL)
			return;
		self->failed = f;
		self->cap_failed = cap;
	}
	s_failed_t *f = &self->failed[self->n_failed++];
	f->path = strdup(path);
	f->error = strdup(error);
	f->name = strdup(name);
}

static void
s_record_warning(ahp_profiles_t *self, const char *msg)
{
	if (self->n_warnings == self->cap_warnings) {
		size_t cap = self->cap_warnings ? self->cap_warnings * 2 : 8;
		char **w = realloc(self->warnings, cap * sizeof *w);
		if (w == NULL)
			return;
		self->warnings = w;
		self->cap_warnings = cap;
	}
	char *d = strdup(msg);
	if (d != NULL)
		self->warnings[self->n_warnings++] = d;
}

/* The file name without its directory and .yaml / .yml. */
static void
s_stem(const char *file, char *out, size_t len)
{
	const char *base = strrchr(file, '/');
	base = base ? base + 1 : file;
	size_t l = strlen(base);
	if (l > 5 && strcmp(base + l - 5, ".yaml") == 0)
		l -= 5;
	else if (l > 4 && strcmp(base + l - 4, ".yml") == 0)
		l -= 4;
	snprintf(out, len, "%.*s", (int)l, base);
}

static int
s_cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool
s_is_profile_name(const char *n)
{
	size_t l = strlen(n);
	if (n[0] == '.')
		return false; /* editor swap files, hidden files */
	return (l > 5 && strcmp(n + l - 5, ".yaml") == 0) ||
	       (l > 4 && strcmp(n + l - 4, ".yml") == 0);
}

static void __attribute__((format(printf, 3, 4)))
s_report(ahp_profile_err_fn on_error, void *arg, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	if (on_error == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	on_error(arg, msg);
}

ahp_profiles_t *
ahp_profiles_load_dir(const char *dir, const char *base_dir, ahp_profile_err_fn on_error, void *arg)
{
	char **names = NULL;
	size_t n = 0;
	ahp_profiles_t *self = NULL;

	if (dir == NULL)
		return NULL;
	DIR *d = opendir(dir);
	if (d == NULL) {
		s_report(on_error, arg, "%s: cannot open profiles directory: %s", dir,
		         strerror(errno));
		return NULL;
	}
	names = calloc(S_MAX_DIR_FILES, sizeof *names);
	self = calloc(1, sizeof *self);
	if (names == NULL || self == NULL)
		goto oom;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!s_is_profile_name(de->d_name))
			continue;
		if (n == S_MAX_DIR_FILES) {
			char msg[PATH_MAX + 64];
			snprintf(msg, sizeof msg, "%s: more than %d profiles; the rest are ignored",
			         dir, S_MAX_DIR_FILES);
			s_report(on_error, arg, "%s", msg);
			s_record_failure(self, dir, msg, "");
			break;
		}
		names[n] = strdup(de->d_name);
		if (names[n] == NULL)
			goto oom;
		n++;
	}
	closedir(d);
	d = NULL;
	qsort(names, n, sizeof *names, s_cmp_names);
	self->items = calloc(n ? n : 1, sizeof *self->items);
	if (self->items == NULL)
		goto oom;
	self->cap = n ? n : 1;

	for (size_t i = 0; i < n; i++) {
		char path[PATH_MAX], err[PATH_MAX * 2 + 256], name[S_NAME_BUF], stem[PATH_MAX];
		yaml_mark_t nm = {0};
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		s_stem(names[i], stem, sizeof stem);
		ahp_profile_t *p = s_load(path, base_dir, err, sizeof err, &nm, name);
		if (p == NULL) {
			s_report(on_error, arg, "%s", err);
			s_record_failure(self, path, err, name[0] ? name : stem);
			continue;
		}
		const ahp_profile_t *prev = ahp_profiles_get(self, p->name);
		if (prev) {
			snprintf(err, sizeof err,
			         "%s:%zu:%zu: profile name '%s' is already used by %s (profile "
			         "names must be unique)",
			         path, nm.line + 1, nm.column + 1, p->name, prev->path);
			s_report(on_error, arg, "%s", err);
			s_record_failure(self, path, err, p->name);
			ahp_profile_destroy(&p);
			continue;
		}
		/* Allowed, but a reader looking for profile x opens x.yaml. */
		if (strcmp(stem, p->name) != 0) {
			snprintf(err, sizeof err,
			         "%s:%zu:%zu: warning: profile name '%s' differs from the file "
			         "name (call the file %s.yaml)",
			         path, nm.line + 1, nm.column + 1, p->name, p->name);
			s_record_warning(self, err);
		}
		self->items[self->n++] = p;
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return self;
oom:
	if (d)
		closedir(d);
	for (size_t i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	ahp_profiles_destroy(&self);
	s_report(on_error, arg, "%s: out of memory", dir);
	return NULL;
}

void
ahp_profiles_destroy(ahp_profiles_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	ahp_profiles_t *self = *self_p;
	for (size_t i = 0; i < self->n; i++)
		ahp_profile_destroy(&self->items[i]);
	free(self->items);
	for (size_t i = 0; i < self->n_failed; i++) {
		free(self->failed[i].path);
		free(self->failed[i].error);
		free(self->failed[i].name);
	}
	free(self->failed);
	for (size_t i = 0; i < self->n_warnings; i++)
		free(self->warnings[i]);
	free(self->warnings);
	free(self);
	*self_p = NULL;
}

const ahp_profile_t *
ahp_profiles_get(const ahp_profiles_t *self, const char *name)
{
	for (size_t i = 0; self && name && i < self->n; i++)
		if (strcmp(self->items[i]->name, name) == 0)
			return self->items[i];
	return NULL;
}

size_t
ahp_profiles_count(const ahp_profiles_t *self)
{
	return self ? self->n : 0;
}

const ahp_profile_t *
ahp_profiles_at(const ahp_profiles_t *self, size_t i)
{
	return self && i < self->n ? self->items[i] : NULL;
}

size_t
ahp_profiles_errors(const ahp_profiles_t *self)
{
	return self ? self->errors : 0;
}

static const s_failed_t *
s_failed(const ahp_profiles_t *self, size_t i)
{
	if (self == NULL || i >= self->n_failed)
		return NULL;
	return &self->failed[i];
}

const char *
ahp_profiles_failed_path(const ahp_profiles_t *self, size_t i)
{
	const s_failed_t *f = s_failed(self, i);
	return f ? f->path : NULL;
}

const char *
ahp_profiles_failed_error(const ahp_profiles_t *self, size_t i)
{
	const s_failed_t *f = s_failed(self, i);
	return f ? f->error : NULL;
}

const char *
ahp_profiles_failed_name(const ahp_profiles_t *self, size_t i)
{
	const s_failed_t *f = s_failed(self, i);
	return f ? f->name : NULL;
}

size_t
ahp_profiles_warning_count(const ahp_profiles_t *self)
{
	return self ? self->n_warnings : 0;
}

const char *
ahp_profiles_warning(const ahp_profiles_t *self, size_t i)
{
	return self && i < self->n_warnings ? self->warnings[i] : NULL;
}

int
ahp_profiles_add(ahp_profiles_t *self, const ahp_profile_t *p)
{
	if (self == NULL || p == NULL || ahp_profiles_get(self, p->name) != NULL)
		return -1;
	if (self->n == self->cap) {
		size_t cap = self->cap ? self->cap * 2 : 8;
		ahp_profile_t **items = realloc(self->items, cap * sizeof *items);
		if (items == NULL)
			return -1;
		self->items = items;
		self->cap = cap;
	}
	/* The reference count is bookkeeping, not content: sharing a profile
	 * between sets changes nothing a reader of either set sees. */
	self->items[self->n++] = ahp_profile_ref((ahp_profile_t *)p);
	return 0;
}

int
ahp_profiles_replace(ahp_profiles_t *self, const ahp_profile_t *p, const char *message)
{
	if (self == NULL || p == NULL)
		return -1;
	for (size_t i = 0; i < self->n; i++) {
		if (strcmp(self->items[i]->name, p->name) != 0)
			continue;
		ahp_profile_t *evicted = self->items[i];
		s_record_failure(self, evicted->path, message, evicted->name);
		self->items[i] = ahp_profile_ref((ahp_profile_t *)p);
		ahp_profile_destroy(&evicted);
		return 0;
	}
	return -1;
}
