/* servicesd: the model's JSON arguments -> messages, constraint checks on arguments and
 * results, JSON Schemas and the exec_service tool definition — all from the descriptors and
 * the one constraints table. */
#include <inttypes.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistr.h>

#include "ahp/jsonpb.h"
#include "ahp/text.h"
#include "svc.h"

#define S_MAX_DEPTH 32

static const char *
s_json_type(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		return "object";
	case JSON_ARRAY:
		return "array";
	case JSON_STRING:
		return "string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "boolean";
	case JSON_NULL:
		return "null";
	}
	return "unknown";
}

/* jsonpb's error ("field 'a.b[2]': why", or just "why") -> err with field "a.b[2]" and the
 * message "<prefix>a.b[2]: why". */
static int
s_jsonpb_error(const char *e, const char *code, const char *prefix, svc_error_t *err)
{
	static const char lead[] = "field '";
	if (strncmp(e, lead, sizeof lead - 1) == 0) {
		const char *path = e + sizeof lead - 1;
		const char *end = strstr(path, "': ");
		if (end != NULL) {
			char field[SVC_FIELD_MAX * 4];
			size_t n = (size_t)(end - path);
			if (n >= sizeof field)
				n = sizeof field - 1;
			memcpy(field, path, n);
			field[n] = '\0';
			field[ahp_utf8_prefix(field, n)] = '\0';
			return svc_error(err, code, 0, field, "%s%s: %s", prefix, field, end + 3);
		}
	}
	return svc_error(err, code, 0, NULL, "%s%s", prefix, e);
}

/* ---- constraint checks ---- */

typedef struct {
	char path[SVC_FIELD_MAX * 4];
	size_t plen;
} s_path_t;

static size_t
s_push(s_path_t *p, const char *name, long index)
{
	size_t old = p->plen;
	int n;
	if (index >= 0)
		n = snprintf(p->path + p->plen, sizeof p->path - p->plen, "[%ld]", index);
	else
		n = snprintf(p->path + p->plen, sizeof p->path - p->plen, "%s%s",
		             p->plen ? "." : "", name);
	if (n > 0 && (size_t)n < sizeof p->path - p->plen)
		p->plen += (size_t)n;
	else
		p->path[p->plen] = '\0';
	return old;
}

static void
s_pop(s_path_t *p, size_t old)
{
	p->plen = old;
	p->path[old] = '\0';
}

static int
s_check_string(const svc_constraint_t *c, const char *s, s_path_t *p, svc_error_t *err)
{
	if (s == NULL)
		s = "";
	size_t n = strlen(s);
	if (!ahp_utf8_valid(s, n, 0))
		return svc_error(err, "validation", 0, p->path, "%s: is not valid UTF-8", p->path);
	if (c == NULL)
		return 0;
	size_t chars = u8_mbsnlen((const uint8_t *)s, n);
	if (c->min_length && chars < c->min_length)
		return svc_error(err, "validation", 0, p->path,
		                 "%s: must be at least %" PRIu32
		                 " character%s long (minLength), got %zu",
		                 p->path, c->min_length, c->min_length == 1 ? "" : "s", chars);
	if (c->max_length && chars > c->max_length)
		return svc_error(err, "validation", 0, p->path,
		                 "%s: must be at most %" PRIu32
		                 " characters long (maxLength), got %zu",
		                 p->path, c->max_length, chars);
	if (c->pattern != NULL) {
		const regex_t *re = svc_constraint_regex(c);
		if (re == NULL)
			return svc_error(err, "internal", 0, p->path,
			                 "%s: the constraints table did not compile", p->path);
		if (regexec(re, s, 0, NULL, 0) != 0)
			return svc_error(err, "validation", 0, p->path,
			                 "%s: must match the pattern %s, got \"%.*s\"%s", p->path,
			                 c->pattern, AHP_UTF8_CUT(s, 64), n > 64 ? "..." : "");
	}
	return 0;
}

/* The value of an integer field at src, as int64 (uint64 over INT64_MAX saturates). 0 when f
 * is not an integer field. */
static int
s_int_value(const ProtobufCFieldDescriptor *f, const void *src, int64_t *out)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		*out = *(const int32_t *)src;
		return 1;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		*out = *(const int64_t *)src;
		return 1;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		*out = *(const uint32_t *)src;
		return 1;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64: {
		uint64_t v = *(const uint64_t *)src;
		*out = v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
		return 1;
	}
	default:
		return 0;
	}
}

static int s_check_msg(const ProtobufCMessage *m, s_path_t *p, int depth, svc_error_t *err);

/* One value (a singular field or one element of a repeated one) at src. */
static int
s_check_value(const ProtobufCFieldDescriptor *f, const svc_constraint_t *c, const void *src,
              s_path_t *p, int depth, svc_error_t *err)
{
	int64_t v;
	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING:
		return s_check_string(c, *(char *const *)src, p, err);
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *sub = *(ProtobufCMessage *const *)src;
		return sub != NULL ? s_check_msg(sub, p, depth + 1, err) : 0;
	}
	default:
		if (c != NULL && (c->minimum != 0 || c->maximum != 0) && s_int_value(f, src, &v)) {
			if (v < c->minimum)
				return svc_error(err, "validation", 0, p->path,
				                 "%s: must be at least %" PRId64
				                 " (minimum), got %" PRId64,
				                 p->path, c->minimum, v);
			if (v > c->maximum)
				return svc_error(err, "validation", 0, p->path,
				                 "%s: must be at most %" PRId64
				                 " (maximum), got %" PRId64,
				                 p->path, c->maximum, v);
		}
		return 0;
	}
}

static size_t
s_elem_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return 8;
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(void *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	default:
		return 4;
	}
}

static int
s_check_msg(const ProtobufCMessage *m, s_path_t *p, int depth, svc_error_t *err)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const char *base = (const char *)m;
	if (depth > S_MAX_DEPTH)
		return svc_error(err, "validation", 0, p->path, "%s: nested too deeply", p->path);
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const svc_constraint_t *c = svc_constraint_find(d, f->name);
		size_t old = s_push(p, f->name, -1);
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			const char *arr = *(char *const *)(base + f->offset);
			if (c != NULL && c->max_items && n > c->max_items)
				return svc_error(err, "validation", 0, p->path,
				                 "%s: must have at most %" PRIu32
				                 " items (maxItems), got %zu",
				                 p->path, c->max_items, n);
			size_t es = s_elem_size(f->type);
			for (size_t k = 0; k < n; k++) {
				size_t o2 = s_push(p, NULL, (long)k);
				if (s_check_value(f, c, arr + k * es, p, depth, err) < 0)
					return -1;
				s_pop(p, o2);
			}
		} else {
			/* Absent optional values have nothing to check. */
			if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
				if (*(const uint32_t *)(base + f->quantifier_offset) != f->id) {
					s_pop(p, old);
					continue;
				}
			} else if (f->label == PROTOBUF_C_LABEL_OPTIONAL &&
			           f->quantifier_offset != 0 && f->type != PROTOBUF_C_TYPE_STRING &&
			           f->type != PROTOBUF_C_TYPE_MESSAGE &&
			           !*(const protobuf_c_boolean *)(base + f->quantifier_offset)) {
				s_pop(p, old);
				continue;
			}
			if (f->label == PROTOBUF_C_LABEL_OPTIONAL &&
			    f->type == PROTOBUF_C_TYPE_STRING &&
			    *(char *const *)(base + f->offset) == NULL) {
				s_pop(p, old);
				continue;
			}
			if (s_check_value(f, c, base + f->offset, p, depth, err) < 0)
				return -1;
		}
		s_pop(p, old);
	}
	return 0;
}

int
svc_message_check(const ProtobufCMessage *m, svc_error_t *err)
{
	s_path_t p;
	if (m == NULL)
		return svc_error(err, "internal", 0, NULL, "no message to check");
	p.plen = 0;
	p.path[0] = '\0';
	return s_check_msg(m, &p, 0, err);
}

/* ---- arguments and results ---- */

ProtobufCMessage *
svc_args_parse(const svc_service_t *s, const char *json, size_t len, svc_error_t *err)
{
	json_error_t jerr;
	char why[512];
	if (s == NULL || (json == NULL && len > 0)) {
		svc_error(err, "internal", 0, NULL, "no service or arguments");
		return NULL;
	}
	if (len > SVC_ARGS_MAX) {
		svc_error(err, "too_large", 0, NULL,
		          "the arguments are %zu bytes; at most %d bytes are accepted", len,
		          SVC_ARGS_MAX);
		return NULL;
	}
	json_t *j =
	    json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (j == NULL) {
		svc_error(err, "validation", 0, NULL,
		          "the arguments are not valid JSON: %.*s (line %d, column %d)",
		          AHP_UTF8_CUT(jerr.text, 120), jerr.line, jerr.column);
		return NULL;
	}
	if (!json_is_object(j)) {
		svc_error(err, "validation", 0, NULL, "the arguments must be a JSON object, got %s",
		          s_json_type(j));
		json_decref(j);
		return NULL;
	}
	why[0] = '\0';
	ProtobufCMessage *m = ahp_json_to_proto(s->args, j, why, sizeof why);
	json_decref(j);
	if (m == NULL) {
		s_jsonpb_error(why[0] ? why : "invalid arguments", "validation", "", err);
		return NULL;
	}
	if (svc_message_check(m, err) < 0) {
		protobuf_c_message_free_unpacked(m, NULL);
		return NULL;
	}
	return m;
}

/* Drops the members of object j that desc has no field for, at every level. */
static void
s_prune(const ProtobufCMessageDescriptor *desc, json_t *j, int depth)
{
	const char *key;
	json_t *val;
	void *tmp;
	if (depth > S_MAX_DEPTH || !json_is_object(j))
		return;
	json_object_foreach_safe(j, tmp, key, val)
	{
		const ProtobufCFieldDescriptor *f =
		    protobuf_c_message_descriptor_get_field_by_name(desc, key);
		if (f == NULL) {
			json_object_del(j, key);
			continue;
		}
		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (json_is_array(val)) {
			size_t i;
			json_t *e;
			json_array_foreach(val, i, e) s_prune(f->descriptor, e, depth + 1);
		} else {
			s_prune(f->descriptor, val, depth + 1);
		}
	}
}

ProtobufCMessage *
svc_result_parse(const ProtobufCMessageDescriptor *desc, const uint8_t *body, size_t len,
                 svc_error_t *err)
{
	static const char prefix[] = "the service's answer: ";
	json_error_t jerr;
	char why[512];
	if (desc == NULL) {
		svc_error(err, "internal", 0, NULL, "no result type");
		return NULL;
	}
	if (len > SVC_BODY_MAX) {
		svc_error(err, "bad_response", 0, NULL,
		          "the service's answer is %zu bytes; at most %d are accepted", len,
		          SVC_BODY_MAX);
		return NULL;
	}
	json_t *j = json_loadb(body ? (const char *)body : "", body ? len : 0,
	                       JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (j == NULL) {
		svc_error(err, "bad_response", 0, NULL,
		          "the service's answer is not valid JSON: %.*s (line %d, column %d)",
		          AHP_UTF8_CUT(jerr.text, 120), jerr.line, jerr.column);
		return NULL;
	}
	if (!json_is_object(j)) {
		svc_error(err, "bad_response", 0, NULL,
		          "the service's answer is not a JSON object (got %s)", s_json_type(j));
		json_decref(j);
		return NULL;
	}
	s_prune(desc, j, 0);
	why[0] = '\0';
	ProtobufCMessage *m = ahp_json_to_proto(desc, j, why, sizeof why);
	json_decref(j);
	if (m == NULL) {
		s_jsonpb_error(why[0] ? why : "not the result message", "bad_response", prefix,
		               err);
		return NULL;
	}
	if (svc_message_check(m, err) < 0) {
		char field[SVC_FIELD_MAX], msg[SVC_MESSAGE_MAX];
		int internal = strcmp(err->code, "internal") == 0;
		memcpy(field, err->field, sizeof field);
		memcpy(msg, err->message, sizeof msg);
		protobuf_c_message_free_unpacked(m, NULL);
		svc_error(err, internal ? "internal" : "bad_response", 0, field[0] ? field : NULL,
		          "%s%s", prefix, msg);
		return NULL;
	}
	return m;
}

char *
svc_result_json(const ProtobufCMessage *result, svc_error_t *err)
{
	if (result == NULL) {
		svc_error(err, "internal", 0, NULL, "no result");
		return NULL;
	}
	json_t *j = ahp_proto_to_json(result);
	char *s = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (s == NULL) {
		svc_error(err, "internal", 0, NULL, "the result could not be written as JSON");
		return NULL;
	}
	size_t n = strlen(s);
	if (n > SVC_RESULT_MAX) {
		free(s);
		svc_error(err, "too_large", 0, NULL,
		          "the result is %zu bytes as JSON; at most %d are returned", n,
		          SVC_RESULT_MAX);
		return NULL;
	}
	return s;
}

/* ---- JSON Schemas and the tool definition ---- */

static int
s_is_int_type(ProtobufCType t)
{
	return t == PROTOBUF_C_TYPE_INT32 || t == PROTOBUF_C_TYPE_SINT32 ||
	       t == PROTOBUF_C_TYPE_SFIXED32 || t == PROTOBUF_C_TYPE_INT64 ||
	       t == PROTOBUF_C_TYPE_SINT64 || t == PROTOBUF_C_TYPE_SFIXED64 ||
	       t == PROTOBUF_C_TYPE_UINT32 || t == PROTOBUF_C_TYPE_FIXED32 ||
	       t == PROTOBUF_C_TYPE_UINT64 || t == PROTOBUF_C_TYPE_FIXED64;
}

/* Adds the table's constraints to schema (made by ahp_proto_json_schema for desc). */
static int
s_annotate(const ProtobufCMessageDescriptor *desc, json_t *schema, int depth)
{
	json_t *props = json_object_get(schema, "properties");
	if (props == NULL || depth > S_MAX_DEPTH)
		return 0;
	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];
		const svc_constraint_t *c = svc_constraint_find(desc, f->name);
		json_t *p = json_object_get(props, f->name);
		json_t *t = p;
		int rc = 0;
		if (p == NULL)
			continue;
		if (c != NULL && c->description != NULL)
			rc |= json_object_set_new(p, "description", json_string(c->description));
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			if (c != NULL && c->max_items)
				rc |=
				    json_object_set_new(p, "maxItems", json_integer(c->max_items));
			t = json_object_get(p, "items");
			if (t == NULL)
				continue;
		}
		if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
			rc |= s_annotate(f->descriptor, t, depth + 1);
		} else if (c != NULL && f->type == PROTOBUF_C_TYPE_STRING) {
			if (c->pattern != NULL)
				rc |= json_object_set_new(t, "pattern", json_string(c->pattern));
			if (c->min_length)
				rc |= json_object_set_new(t, "minLength",
				                          json_integer(c->min_length));
			if (c->max_length)
				rc |= json_object_set_new(t, "maxLength",
				                          json_integer(c->max_length));
		} else if (c != NULL && (c->minimum != 0 || c->maximum != 0) &&
		           s_is_int_type(f->type)) {
			rc |= json_object_set_new(t, "minimum", json_integer(c->minimum));
			rc |= json_object_set_new(t, "maximum", json_integer(c->maximum));
		}
		if (rc != 0)
			return -1;
	}
	return 0;
}

json_t *
svc_schema(const ProtobufCMessageDescriptor *desc)
{
	json_t *schema = ahp_proto_json_schema(desc);
	if (schema == NULL)
		return NULL;
	if (s_annotate(desc, schema, 0) < 0) {
		json_decref(schema);
		return NULL;
	}
	return schema;
}

/* Appends "name: summary / arguments: {...} / result: {...}" for s to f. 0 / -1. */
static int
s_describe(FILE *f, const svc_service_t *s)
{
	json_t *a = svc_schema(s->args);
	json_t *r = svc_schema(s->result);
	char *as = a ? json_dumps(a, JSON_COMPACT) : NULL;
	char *rs = r ? json_dumps(r, JSON_COMPACT) : NULL;
	int rc = -1;
	if (as != NULL && rs != NULL &&
	    fprintf(f, "\n\n%s: %s\narguments: %s\nresult: %s", s->name, s->summary, as, rs) > 0)
		rc = 0;
	free(as);
	free(rs);
	json_decref(a);
	json_decref(r);
	return rc;
}

json_t *
svc_tool_definition(char *const *names, unsigned n)
{
	const svc_service_t *list[64];
	unsigned k = 0;
	for (unsigned i = 0; names != NULL && i < n; i++) {
		const svc_service_t *s = names[i] ? svc_find(names[i], strlen(names[i])) : NULL;
		int dup = 0;
		for (unsigned j = 0; s != NULL && j < k; j++)
			dup |= list[j] == s;
		if (s != NULL && !dup && k < sizeof list / sizeof list[0])
			list[k++] = s;
	}

	char *desc = NULL;
	size_t dlen = 0;
	if (k == 0) {
		desc = strdup("No services are currently enabled for this agent.");
	} else {
		FILE *f = open_memstream(&desc, &dlen);
		if (f == NULL)
			return NULL;
		int rc = fputs("Call a typed service: service_name is one of the services below "
		               "and args a JSON object of its arguments. The tool result is the "
		               "service's result object, or {\"error\": {\"code\", \"message\", "
		               "\"retryable\", \"field\"}} when the call failed (validation errors "
		               "name the field and the rule). Services:",
		               f) < 0
		             ? -1
		             : 0;
		for (unsigned i = 0; rc == 0 && i < k; i++)
			rc = s_describe(f, list[i]);
		if (fclose(f) != 0 || rc < 0) {
			free(desc);
			return NULL;
		}
	}
	if (desc == NULL)
		return NULL;

	json_t *name =
	    json_pack("{s:s,s:s}", "type", "string", "description", "The service to call.");
	if (name != NULL && k > 0) {
		/* An empty enum is refused by some providers' schema checks: with no service
		 * the enum is left out and servicesd refuses every name. */
		json_t *e = json_array();
		for (unsigned i = 0; e != NULL && i < k; i++)
			json_array_append_new(e, json_string(list[i]->name));
		json_object_set_new(name, "enum", e);
	}
	json_t *tool = json_pack("{s:s,s:{s:s,s:s,s:{s:s,s:{s:o,s:{s:s,s:s}},s:[s,s],s:b}}}",
	                         "type", "function", "function", "name", "exec_service",
	                         "description", desc, "parameters", "type", "object", "properties",
	                         "service_name", name, "args", "type", "object", "description",
	                         "The service's arguments, as its `arguments` schema says.",
	                         "required", "service_name", "args", "additionalProperties", 0);
	free(desc);
	return tool;
}
