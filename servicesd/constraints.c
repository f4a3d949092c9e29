/* servicesd: the one table of field constraints beside proto/services.proto (read by the
 * validator and the JSON Schema generator alike), and its compiled patterns. */
#include <inttypes.h>
#include <regex.h>
#include <stdio.h>
#include <string.h>

#include "svc.h"

/* Every field of every message in proto/services.proto has an entry (its description is
 * what the model reads); svc_constraints_init refuses a table that misses one. */
const svc_constraint_t svc_constraints[] = {
    /* lookup_wiki */
    {.message = "ahp.svc.LookupWikiArgs",
     .field = "topic",
     .description = "The topic to look up: 1 to 128 letters, digits, spaces, '.', '_' or '-'.",
     .pattern = "^[A-Za-z0-9 ._-]{1,128}$",
     .min_length = 1,
     .max_length = 128},
    {.message = "ahp.svc.LookupWikiResult",
     .field = "topic",
     .description = "The topic that was looked up.",
     .max_length = 128},
    {.message = "ahp.svc.LookupWikiResult",
     .field = "snippets",
     .description = "The snippets found, best first; empty when the wiki knows nothing on it.",
     .max_items = 100},
    {.message = "ahp.svc.WikiSnippet",
     .field = "url",
     .description = "The page the excerpt comes from.",
     .max_length = 2048},
    {.message = "ahp.svc.WikiSnippet",
     .field = "excerpt",
     .description = "A passage of the page on the topic.",
     .max_length = 4000},
    /* publish_summary */
    {.message = "ahp.svc.PublishSummaryArgs",
     .field = "webhook_id",
     .description = "The team webhook to post to: 1 to 64 letters, digits, '.', '_' or '-'.",
     .pattern = "^[A-Za-z0-9._-]{1,64}$",
     .min_length = 1,
     .max_length = 64},
    {.message = "ahp.svc.PublishSummaryArgs",
     .field = "content",
     .description = "The summary to post (plain text, 1 to 4000 characters).",
     .min_length = 1,
     .max_length = 4000},
    {.message = "ahp.svc.PublishSummaryResult",
     .field = "message_id",
     .description = "The id the webhook gave the posted message: 12 lower-case hex digits.",
     .pattern = "^[0-9a-f]{12}$"},
    {.message = "ahp.svc.PublishSummaryResult",
     .field = "posted_at",
     .description = "When the message was posted, in unix seconds.",
     .minimum = 0,
     .maximum = 253402300799}, /* 9999-12-31T23:59:59Z */
    {.message = NULL},
};

#define S_N (sizeof svc_constraints / sizeof svc_constraints[0] - 1)

static regex_t s_regex[S_N];
static int s_compiled[S_N];
static int s_state; /* 0 not yet, 1 ready, -1 failed */

static const svc_constraint_t *
s_find(const svc_constraint_t *table, const char *message, const char *field)
{
	for (const svc_constraint_t *c = table; c->message != NULL; c++)
		if (strcmp(c->message, message) == 0 && c->field != NULL &&
		    strcmp(c->field, field) == 0)
			return c;
	return NULL;
}

const svc_constraint_t *
svc_constraint_find(const ProtobufCMessageDescriptor *desc, const char *field)
{
	if (desc == NULL || field == NULL)
		return NULL;
	return s_find(svc_constraints, desc->name, field);
}

/* The message named name among the registry's messages and the messages they contain. */
static const ProtobufCMessageDescriptor *
s_find_desc(const ProtobufCMessageDescriptor *d, const char *name, int depth)
{
	if (d == NULL || depth > 32)
		return NULL;
	if (strcmp(d->name, name) == 0)
		return d;
	for (unsigned i = 0; i < d->n_fields; i++) {
		if (d->fields[i].type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		const ProtobufCMessageDescriptor *r =
		    s_find_desc(d->fields[i].descriptor, name, depth + 1);
		if (r != NULL)
			return r;
	}
	return NULL;
}

static const ProtobufCMessageDescriptor *
s_registry_desc(const char *name)
{
	for (int i = 0; svc_registry[i] != NULL; i++) {
		const ProtobufCMessageDescriptor *d = s_find_desc(svc_registry[i]->args, name, 0);
		if (d == NULL)
			d = s_find_desc(svc_registry[i]->result, name, 0);
		if (d != NULL)
			return d;
	}
	return NULL;
}

static int
s_is_int(ProtobufCType t, int64_t *lo, int64_t *hi)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		*lo = INT32_MIN;
		*hi = INT32_MAX;
		return 1;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		*lo = INT64_MIN;
		*hi = INT64_MAX;
		return 1;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		*lo = 0;
		*hi = UINT32_MAX;
		return 1;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		*lo = 0;
		*hi = INT64_MAX; /* the table's bounds are int64 */
		return 1;
	default:
		return 0;
	}
}

/* Checks one entry against the descriptors. 0, or -1 with err. */
static int
s_check_entry(const svc_constraint_t *table, const svc_constraint_t *c, char *err, size_t errlen)
{
	const ProtobufCMessageDescriptor *d = s_registry_desc(c->message);
	if (d == NULL) {
		snprintf(err, errlen, "constraints: no message %s in the registry", c->message);
		return -1;
	}
	const ProtobufCFieldDescriptor *f =
	    protobuf_c_message_descriptor_get_field_by_name(d, c->field);
	if (f == NULL) {
		snprintf(err, errlen, "constraints: %s has no field %s", c->message, c->field);
		return -1;
	}
	if (c->description == NULL || c->description[0] == '\0') {
		snprintf(err, errlen, "constraints: %s.%s has no description", c->message,
		         c->field);
		return -1;
	}
	if (s_find(table, c->message, c->field) != c) {
		snprintf(err, errlen, "constraints: %s.%s is listed twice", c->message, c->field);
		return -1;
	}
	int is_string = f->type == PROTOBUF_C_TYPE_STRING;
	if (!is_string && (c->pattern != NULL || c->min_length || c->max_length)) {
		snprintf(err, errlen, "constraints: %s.%s: pattern and lengths need a string field",
		         c->message, c->field);
		return -1;
	}
	if (c->max_length && c->min_length > c->max_length) {
		snprintf(err, errlen,
		         "constraints: %s.%s: min_length %" PRIu32 " is over max_length %" PRIu32,
		         c->message, c->field, c->min_length, c->max_length);
		return -1;
	}
	if (c->pattern != NULL) {
		size_t n = strlen(c->pattern);
		if (n < 2 || c->pattern[0] != '^' || c->pattern[n - 1] != '$') {
			snprintf(err, errlen,
			         "constraints: %s.%s: the pattern is not anchored with ^ and $",
			         c->message, c->field);
			return -1;
		}
	}
	if (c->minimum != 0 || c->maximum != 0) {
		int64_t lo, hi;
		if (!s_is_int(f->type, &lo, &hi)) {
			snprintf(err, errlen, "constraints: %s.%s: a range needs an integer field",
			         c->message, c->field);
			return -1;
		}
		if (c->minimum > c->maximum || c->minimum < lo || c->maximum > hi) {
			snprintf(err, errlen,
			         "constraints: %s.%s: the range %" PRId64 "..%" PRId64
			         " does not fit the field's type",
			         c->message, c->field, c->minimum, c->maximum);
			return -1;
		}
	}
	if (c->max_items && f->label != PROTOBUF_C_LABEL_REPEATED) {
		snprintf(err, errlen, "constraints: %s.%s: max_items needs a repeated field",
		         c->message, c->field);
		return -1;
	}
	return 0;
}

/* Every field of d (and of the messages it contains) has an entry. */
static int
s_check_covered(const svc_constraint_t *table, const ProtobufCMessageDescriptor *d, int depth,
                char *err, size_t errlen)
{
	if (depth > 32)
		return 0;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (s_find(table, d->name, f->name) == NULL) {
			snprintf(err, errlen, "constraints: %s.%s has no entry (its description)",
			         d->name, f->name);
			return -1;
		}
		if (f->type == PROTOBUF_C_TYPE_MESSAGE &&
		    s_check_covered(table, f->descriptor, depth + 1, err, errlen) < 0)
			return -1;
	}
	return 0;
}

static void
s_free_compiled(void)
{
	for (size_t i = 0; i < S_N; i++) {
		if (s_compiled[i])
			regfree(&s_regex[i]);
		s_compiled[i] = 0;
	}
}

int
svc_constraints_check(const svc_constraint_t *table, char *err, size_t errlen)
{
	char buf[256];
	if (err == NULL || errlen == 0) {
		err = buf;
		errlen = sizeof buf;
	}
	err[0] = '\0';
	if (table == NULL)
		return -1;
	for (const svc_constraint_t *c = table; c->message != NULL; c++) {
		if (c->field == NULL) {
			snprintf(err, errlen, "constraints: an entry of %s names no field",
			         c->message);
			return -1;
		}
		if (s_check_entry(table, c, err, errlen) < 0)
			return -1;
	}
	for (int i = 0; svc_registry[i] != NULL; i++)
		if (s_check_covered(table, svc_registry[i]->args, 0, err, errlen) < 0 ||
		    s_check_covered(table, svc_registry[i]->result, 0, err, errlen) < 0)
			return -1;
	for (const svc_constraint_t *c = table; c->message != NULL; c++) {
		regex_t re;
		if (c->pattern == NULL)
			continue;
		int rc = regcomp(&re, c->pattern, REG_EXTENDED | REG_NOSUB);
		if (rc != 0) {
			char why[128];
			regerror(rc, &re, why, sizeof why);
			snprintf(err, errlen, "constraints: %s.%s: pattern %s: %s", c->message,
			         c->field, c->pattern, why);
			return -1;
		}
		regfree(&re);
	}
	return 0;
}

int
svc_constraints_init(char *err, size_t errlen)
{
	char buf[256];
	if (err == NULL || errlen == 0) {
		err = buf;
		errlen = sizeof buf;
	}
	err[0] = '\0';
	if (s_state == 1)
		return 0;
	if (svc_constraints_check(svc_constraints, err, errlen) < 0) {
		s_state = -1;
		return -1;
	}
	for (size_t i = 0; i < S_N; i++) {
		const svc_constraint_t *c = &svc_constraints[i];
		if (c->pattern == NULL)
			continue;
		if (regcomp(&s_regex[i], c->pattern, REG_EXTENDED | REG_NOSUB) != 0) {
			snprintf(err, errlen, "constraints: %s.%s: pattern %s does not compile",
			         c->message, c->field, c->pattern);
			s_free_compiled();
			s_state = -1;
			return -1;
		}
		s_compiled[i] = 1;
	}
	s_state = 1;
	return 0;
}

const regex_t *
svc_constraint_regex(const svc_constraint_t *c)
{
	if (c == NULL || c->pattern == NULL || c < svc_constraints || c >= svc_constraints + S_N)
		return NULL;
	if (s_state == 0)
		svc_constraints_init(NULL, 0);
	size_t i = (size_t)(c - svc_constraints);
	return s_state == 1 && s_compiled[i] ? &s_regex[i] : NULL;
}
