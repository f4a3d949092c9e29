/* mock-llm: loads and validates YAML scenarios (a list of scripted assistant turns). */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <yaml.h>

#include "ahp/util.h"
#include "mock_llm.h"

/* Aliases let a small file expand into a huge tree; these bound the
 * conversion of argument values. */
#define S_MAX_DEPTH 32
#define S_MAX_NODES 100000
#define S_MAX_STEPS 10000

typedef struct {
	yaml_document_t *doc;
	const char *path;
	char *err;
	size_t errlen;
	size_t nodes;
} s_loader_t;

static int
s_fail(s_loader_t *l, const yaml_node_t *node, const char *what)
{
	if (node != NULL)
		snprintf(l->err, l->errlen, "%s:%zu:%zu: %s", l->path, node->start_mark.line + 1,
		         node->start_mark.column + 1, what);
	else
		snprintf(l->err, l->errlen, "%s: %s", l->path, what);
	return -1;
}

int
mock_scenario_name_ok(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > MOCK_NAME_MAX || name[0] == '.' || strstr(name, "..") != NULL)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

static const char *
s_scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

/* Plain scalars follow the YAML 1.2 core schema (null, true/false, ints,
 * floats); quoted scalars are always strings. yes/no stay strings. */
static json_t *
s_scalar_json(const yaml_node_t *n)
{
	const char *s = s_scalar(n);
	size_t len = n->data.scalar.length;

	if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return json_stringn(s, len);
	if (len == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
	    strcmp(s, "NULL") == 0)
		return json_null();
	if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
		return json_true();
	if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
		return json_false();

	/* [-+]?digits -> integer; [-+]?(digits[.digits*]|.digits)([eE][-+]?digits)? -> real */
	size_t i = 0, intd = 0, fracd = 0, expd = 0;
	int dot = 0;
	if (s[i] == '-' || s[i] == '+')
		i++;
	while (s[i] >= '0' && s[i] <= '9') {
		i++;
		intd++;
	}
	if (s[i] == '.') {
		dot = 1;
		i++;
		while (s[i] >= '0' && s[i] <= '9') {
			i++;
			fracd++;
		}
	}
	if ((intd > 0 || fracd > 0) && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (s[i] == '-' || s[i] == '+')
			i++;
		while (s[i] >= '0' && s[i] <= '9') {
			i++;
			expd++;
		}
		if (expd == 0)
			return json_stringn(s, len);
	}
	if (i != len || (intd == 0 && fracd == 0))
		return json_stringn(s, len);
	if (!dot && expd == 0) {
		char *end = NULL;
		errno = 0;
		long long v = strtoll(s, &end, 10);
		if (errno == 0 && end == s + len)
			return json_integer(v);
		return json_stringn(s, len);
	}
	char *end = NULL;
	double d = strtod(s, &end);
	if (end != s + len)
		return json_stringn(s, len);
	return json_real(d);
}

static json_t *
s_node_json(s_loader_t *l, yaml_node_t *n, int depth)
{
	if (depth > S_MAX_DEPTH) {
		s_fail(l, n, "value nested too deeply");
		return NULL;
	}
	if (++l->nodes > S_MAX_NODES) {
		s_fail(l, n, "value too large (alias expansion?)");
		return NULL;
	}
	switch (n->type) {
	case YAML_SCALAR_NODE: {
		json_t *j = s_scalar_json(n);
		if (j == NULL)
			s_fail(l, n, "scalar is not valid UTF-8");
		return j;
	}
	case YAML_SEQUENCE_NODE: {
		json_t *a = json_array();
		for (yaml_node_item_t *it = n->data.sequence.items.start;
		     it < n->data.sequence.items.top; it++) {
			json_t *v = s_node_json(l, yaml_document_get_node(l->doc, *it), depth + 1);
			if (v == NULL || json_array_append_new(a, v) < 0) {
				json_decref(a);
				return NULL;
			}
		}
		return a;
	}
	case YAML_MAPPING_NODE: {
		json_t *o = json_object();
		for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
		     p < n->data.mapping.pairs.top; p++) {
			yaml_node_t *k = yaml_document_get_node(l->doc, p->key);
			if (k->type != YAML_SCALAR_NODE) {
				s_fail(l, k, "mapping keys must be strings");
				json_decref(o);
				return NULL;
			}
			json_t *v =
			    s_node_json(l, yaml_document_get_node(l->doc, p->value), depth + 1);
			if (v == NULL ||
			    json_object_setn_new(o, s_scalar(k), k->data.scalar.length, v) < 0) {
				if (v != NULL)
					s_fail(l, k, "bad mapping key");
				json_decref(o);
				return NULL;
			}
		}
		return o;
	}
	default:
		s_fail(l, n, "empty node");
		return NULL;
	}
}

static int
s_string_value(s_loader_t *l, yaml_node_t *v, const char *field, char **out)
{
	char msg[128];
	if (v->type != YAML_SCALAR_NODE) {
		snprintf(msg, sizeof msg, "'%s' must be a string", field);
		return s_fail(l, v, msg);
	}
	*out = strndup(s_scalar(v), v->data.scalar.length);
	return *out == NULL ? s_fail(l, v, "out of memory") : 0;
}

static int
s_load_call(s_loader_t *l, yaml_node_t *n, mock_call_t *call)
{
	if (n->type != YAML_MAPPING_NODE)
		return s_fail(l, n, "a tool call must be a mapping {name, arguments}");
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(l->doc, p->key);
		yaml_node_t *v = yaml_document_get_node(l->doc, p->value);
		const char *key = k->type == YAML_SCALAR_NODE ? s_scalar(k) : "";
		if (strcmp(key, "name") == 0) {
			free(call->name);
			call->name = NULL;
			if (s_string_value(l, v, "name", &call->name) < 0)
				return -1;
			if (call->name[0] == '\0')
				return s_fail(l, v, "'name' must not be empty");
		} else if (strcmp(key, "arguments") == 0) {
			if (v->type != YAML_MAPPING_NODE)
				return s_fail(l, v, "'arguments' must be a mapping");
			json_decref(call->arguments);
			call->arguments = s_node_json(l, v, 0);
			if (call->arguments == NULL)
				return -1;
		} else {
			return s_fail(l, k, "unknown key in tool call (expected name, arguments)");
		}
	}
	if (call->name == NULL)
		return s_fail(l, n, "tool call without 'name'");
	if (call->arguments == NULL)
		call->arguments = json_object();
	return 0;
}

static int
s_load_step(s_loader_t *l, yaml_node_t *n, mock_step_t *step)
{
	if (n->type != YAML_MAPPING_NODE)
		return s_fail(l, n, "a step must be a mapping with 'content' and/or 'tool_calls'");
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(l->doc, p->key);
		yaml_node_t *v = yaml_document_get_node(l->doc, p->value);
		const char *key = k->type == YAML_SCALAR_NODE ? s_scalar(k) : "";
		if (strcmp(key, "content") == 0) {
			free(step->content);
			step->content = NULL;
			if (s_string_value(l, v, "content", &step->content) < 0)
				return -1;
		} else if (strcmp(key, "tool_calls") == 0) {
			if (v->type != YAML_SEQUENCE_NODE)
				return s_fail(l, v, "'tool_calls' must be a list");
			size_t count =
			    (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
			if (count == 0 || count > 64)
				return s_fail(l, v, "'tool_calls' must hold 1..64 calls");
			if (step->calls != NULL)
				return s_fail(l, k, "duplicate 'tool_calls'");
			step->calls = calloc(count, sizeof *step->calls);
			if (step->calls == NULL)
				return s_fail(l, v, "out of memory");
			step->ncalls = count;
			for (size_t i = 0; i < count; i++) {
				yaml_node_t *c =
				    yaml_document_get_node(l->doc, v->data.sequence.items.start[i]);
				if (s_load_call(l, c, &step->calls[i]) < 0)
					return -1;
			}
		} else {
			return s_fail(l, k, "unknown key in step (expected content, tool_calls)");
		}
	}
	if (step->content == NULL && step->ncalls == 0)
		return s_fail(l, n, "a step needs 'content' or 'tool_calls'");
	return 0;
}

static int
s_load_root(s_loader_t *l, yaml_node_t *root, mock_scenario_t *sc)
{
	yaml_node_t *steps = NULL;

	if (root == NULL)
		return s_fail(l, NULL, "empty scenario");
	if (root->type != YAML_MAPPING_NODE)
		return s_fail(l, root, "a scenario must be a mapping with 'steps'");
	for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(l->doc, p->key);
		const char *key = k->type == YAML_SCALAR_NODE ? s_scalar(k) : "";
		if (strcmp(key, "steps") == 0)
			steps = yaml_document_get_node(l->doc, p->value);
		else if (strcmp(key, "description") != 0)
			return s_fail(l, k, "unknown key (expected steps, description)");
	}
	if (steps == NULL)
		return s_fail(l, root, "missing 'steps'");
	if (steps->type != YAML_SEQUENCE_NODE)
		return s_fail(l, steps, "'steps' must be a list");
	size_t count = (size_t)(steps->data.sequence.items.top - steps->data.sequence.items.start);
	if (count == 0 || count > S_MAX_STEPS)
		return s_fail(l, steps, "'steps' must hold 1..10000 steps");
	sc->steps = calloc(count, sizeof *sc->steps);
	if (sc->steps == NULL)
		return s_fail(l, steps, "out of memory");
	sc->nsteps = count;
	for (size_t i = 0; i < count; i++) {
		yaml_node_t *s =
		    yaml_document_get_node(l->doc, steps->data.sequence.items.start[i]);
		if (s_load_step(l, s, &sc->steps[i]) < 0)
			return -1;
	}
	return 0;
}

mock_scenario_t *
mock_scenario_load(const char *path, char *err, size_t errlen)
{
	char *text = NULL;
	size_t len = 0;
	yaml_parser_t parser;
	yaml_document_t doc;
	s_loader_t l = {.doc = &doc, .path = path, .err = err, .errlen = errlen};

	if (ahp_read_file(path, MOCK_SCENARIO_MAX, &text, &len) < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: %s", path, e == EFBIG ? "file too large" : strerror(e));
		errno = e;
		return NULL;
	}
	mock_scenario_t *sc = calloc(1, sizeof *sc);
	if (sc == NULL || !yaml_parser_initialize(&parser)) {
		free(sc);
		free(text);
		snprintf(err, errlen, "%s: out of memory", path);
		errno = ENOMEM;
		return NULL;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		snprintf(err, errlen, "%s:%zu:%zu: %s", path, parser.problem_mark.line + 1,
		         parser.problem_mark.column + 1,
		         parser.problem ? parser.problem : "YAML syntax error");
		yaml_parser_delete(&parser);
		free(text);
		mock_scenario_destroy(&sc);
		errno = EINVAL;
		return NULL;
	}
	int rc = s_load_root(&l, yaml_document_get_root_node(&doc), sc);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	free(text);
	if (rc < 0) {
		mock_scenario_destroy(&sc);
		errno = EINVAL;
		return NULL;
	}
	return sc;
}

void
mock_scenario_destroy(mock_scenario_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	mock_scenario_t *self = *self_p;
	for (size_t i = 0; i < self->nsteps; i++) {
		mock_step_t *st = &self->steps[i];
		free(st->content);
		for (size_t k = 0; k < st->ncalls; k++) {
			free(st->calls[k].name);
			json_decref(st->calls[k].arguments);
		}
		free(st->calls);
	}
	free(self->steps);
	free(self);
	*self_p = NULL;
}

/* ---- the cache behind mock_scenario_get ---- */

#define S_CACHE_MAX 64

typedef struct {
	char *path;
	struct stat st; /* what was on disk when it was loaded */
	mock_scenario_t *sc;
} s_cached_t;

static pthread_mutex_t s_cache_mu = PTHREAD_MUTEX_INITIALIZER;
static s_cached_t s_cache[S_CACHE_MAX];
static size_t s_cache_next; /* the slot replaced when all are taken */

static int
s_same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Drops one reference; the last frees it. Under s_cache_mu. */
static void
s_release(mock_scenario_t **sc_p)
{
	if (*sc_p != NULL && --(*sc_p)->refs == 0)
		mock_scenario_destroy(sc_p);
	*sc_p = NULL;
}

mock_scenario_t *
mock_scenario_get(const char *path, char *err, size_t errlen)
{
	struct stat st;
	if (stat(path, &st) < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		errno = e;
		return NULL;
	}
	pthread_mutex_lock(&s_cache_mu);
	for (size_t i = 0; i < S_CACHE_MAX; i++) {
		s_cached_t *c = &s_cache[i];
		if (c->path != NULL && strcmp(c->path, path) == 0 && s_same_file(&c->st, &st)) {
			c->sc->refs++;
			pthread_mutex_unlock(&s_cache_mu);
			return c->sc;
		}
	}
	pthread_mutex_unlock(&s_cache_mu);

	/* Parsed outside the lock. A change between the stat above and this
	 * read leaves an entry that no longer matches the file: reloaded on the
	 * next request, never served stale. */
	mock_scenario_t *sc = mock_scenario_load(path, err, errlen);
	if (sc == NULL)
		return NULL;
	sc->refs = 1;
	char *key = strdup(path);
	if (key == NULL)
		return sc; /* served uncached, freed by put */
	pthread_mutex_lock(&s_cache_mu);
	s_cached_t *slot = NULL;
	for (size_t i = 0; i < S_CACHE_MAX && slot == NULL; i++)
		if (s_cache[i].path != NULL && strcmp(s_cache[i].path, path) == 0)
			slot = &s_cache[i];
	for (size_t i = 0; i < S_CACHE_MAX && slot == NULL; i++)
		if (s_cache[i].path == NULL)
			slot = &s_cache[i];
	if (slot == NULL) {
		slot = &s_cache[s_cache_next];
		s_cache_next = (s_cache_next + 1) % S_CACHE_MAX;
	}
	free(slot->path);
	s_release(&slot->sc);
	slot->path = key;
	slot->st = st;
	slot->sc = sc;
	sc->refs++; /* the cache's own */
	pthread_mutex_unlock(&s_cache_mu);
	return sc;
}

void
mock_scenario_put(mock_scenario_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	pthread_mutex_lock(&s_cache_mu);
	s_release(self_p);
	pthread_mutex_unlock(&s_cache_mu);
}

static int
s_strcmp_p(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

json_t *
mock_scenario_list(const char *dir)
{
	json_t *out = json_array();
	char **names = NULL;
	size_t n = 0, cap = 0;
	DIR *d = opendir(dir);

	if (d == NULL)
		return out;
	for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
		size_t len = strlen(e->d_name);
		if (len <= 5 || strcmp(e->d_name + len - 5, ".yaml") != 0)
			continue;
		char *name = strndup(e->d_name, len - 5);
		if (name == NULL || !mock_scenario_name_ok(name) || n >= 4096) {
			free(name);
			continue;
		}
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			char **nn = realloc(names, ncap * sizeof *nn);
			if (nn == NULL) {
				free(name);
				break;
			}
			names = nn;
			cap = ncap;
		}
		names[n++] = name;
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof *names, s_strcmp_p);
	for (size_t i = 0; i < n; i++) {
		json_array_append_new(out, json_string(names[i]));
		free(names[i]);
	}
	free(names);
	return out;
}
