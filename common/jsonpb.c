/* JSON <-> protobuf-c messages by walking the message descriptor (jansson), with field-path errors.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/jsonpb.h"
#include "ahp/text.h"

/* JSON from a model is untrusted: nesting and array sizes are capped before
 * anything is allocated from them. */
#define JSONPB_MAX_DEPTH 32
#define JSONPB_MAX_REPEATED 100000

typedef struct {
	char *err;
	size_t errlen;
	char path[512];
	size_t plen;
	int depth;
} s_ctx_t;

static int s_fail(s_ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
s_fail(s_ctx_t *c, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	if (c->err == NULL || c->errlen == 0)
		return -1;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (c->plen == 0)
		snprintf(c->err, c->errlen, "%s", msg);
	else
		snprintf(c->err, c->errlen, "field '%s': %s", c->path, msg);
	/* Quoted input is cut at character boundaries above; a message cut by
	 * errlen is cut the same way, so the error stays valid UTF-8. */
	c->err[ahp_utf8_prefix(c->err, c->errlen - 1)] = '\0';
	return -1;
}

/* Appends ".name" (or "[i]") to the path; returns the old length for s_pop. */
static size_t
s_push(s_ctx_t *c, const char *name)
{
	size_t old = c->plen;
	int n =
	    snprintf(c->path + c->plen, sizeof c->path - c->plen, "%s%s", c->plen ? "." : "", name);
	if (n > 0)
		c->plen += (size_t)n < sizeof c->path - c->plen ? (size_t)n : 0;
	return old;
}

static size_t
s_push_index(s_ctx_t *c, size_t i)
{
	size_t old = c->plen;
	int n = snprintf(c->path + c->plen, sizeof c->path - c->plen, "[%zu]", i);
	if (n > 0)
		c->plen += (size_t)n < sizeof c->path - c->plen ? (size_t)n : 0;
	return old;
}

static void
s_pop(s_ctx_t *c, size_t old)
{
	c->plen = old;
	c->path[old] = '\0';
}

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

/* --- base64 (RFC 4648; standard or URL-safe alphabet, padding optional) --- */

static const char s_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *
s_b64_encode(const uint8_t *data, size_t len)
{
	size_t olen = 4 * ((len + 2) / 3);
	char *out = malloc(olen + 1);
	size_t o = 0;
	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)data[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)data[i + 1] << 8;
		if (i + 2 < len)
			v |= data[i + 2];
		out[o++] = s_b64[(v >> 18) & 63];
		out[o++] = s_b64[(v >> 12) & 63];
		out[o++] = i + 1 < len ? s_b64[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? s_b64[v & 63] : '=';
	}
	out[o] = '\0';
	return out;
}

static int
s_b64_val(char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+' || ch == '-')
		return 62;
	if (ch == '/' || ch == '_')
		return 63;
	return -1;
}

/* Decodes into a new buffer (NULL when the result is empty). 0 / -1. */
static int
s_b64_decode(const char *s, size_t len, uint8_t **out, size_t *olen)
{
	while (len > 0 && s[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return -1;
	size_t cap = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
	uint8_t *buf = cap ? malloc(cap) : NULL;
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	if (cap && buf == NULL)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int v = s_b64_val(s[i]);
		if (v < 0) {
			free(buf);
			return -1;
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[o++] = (uint8_t)(acc >> bits);
		}
	}
	*out = buf;
	*olen = o;
	return 0;
}

/* --- JSON -> proto --- */

static int s_msg_from_json(s_ctx_t *c, const ProtobufCMessageDescriptor *desc, const json_t *j,
                           ProtobufCMessage **out);

/* Integers arrive as JSON integers, integral reals (3.0) or decimal strings
 * (proto3 JSON writes 64-bit values as strings). */
static int
s_get_int(s_ctx_t *c, const json_t *j, int64_t min, int64_t max, const char *tname, int64_t *out)
{
	int64_t v = 0;
	if (json_is_integer(j)) {
		v = json_integer_value(j);
	} else if (json_is_real(j)) {
		double d = json_real_value(j);
		if (d != floor(d))
			return s_fail(c, "expected integer, got fractional number %g", d);
		if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
			return s_fail(c, "%g is out of range for %s", d, tname);
		v = (int64_t)d;
	} else if (json_is_string(j)) {
		const char *s = json_string_value(j);
		char *end = NULL;
		if (!((*s >= '0' && *s <= '9') || (*s == '-' && s[1] >= '0' && s[1] <= '9')))
			return s_fail(c, "expected integer, got string \"%.*s\"",
			              (int)ahp_utf8_prefix(s, 32), s);
		errno = 0;
		long long ll = strtoll(s, &end, 10);
		if (*end != '\0')
			return s_fail(c, "expected integer, got string \"%.*s\"",
			              (int)ahp_utf8_prefix(s, 32), s);
		if (errno == ERANGE)
			return s_fail(c, "%.*s is out of range for %s", (int)ahp_utf8_prefix(s, 32),
			              s, tname);
		v = ll;
	} else {
		return s_fail(c, "expected integer, got %s", s_json_type(j));
	}
	if (v < min || v > max)
		return s_fail(c, "%lld is out of range for %s", (long long)v, tname);
	*out = v;
	return 0;
}

static int
s_get_uint(s_ctx_t *c, const json_t *j, uint64_t max, const char *tname, uint64_t *out)
{
	uint64_t v = 0;
	if (json_is_string(j)) {
		const char *s = json_string_value(j);
		char *end = NULL;
		/* strtoull would quietly wrap "-1"; only digits are accepted. */
		if (!(*s >= '0' && *s <= '9'))
			return s_fail(c, "expected non-negative integer, got string \"%.*s\"",
			              (int)ahp_utf8_prefix(s, 32), s);
		errno = 0;
		unsigned long long ull = strtoull(s, &end, 10);
		if (*end != '\0')
			return s_fail(c, "expected integer, got string \"%.*s\"",
			              (int)ahp_utf8_prefix(s, 32), s);
		if (errno == ERANGE)
			return s_fail(c, "%.*s is out of range for %s", (int)ahp_utf8_prefix(s, 32),
			              s, tname);
		v = ull;
	} else {
		int64_t sv = 0;
		if (s_get_int(c, j, INT64_MIN, INT64_MAX, tname, &sv) < 0)
			return -1;
		if (sv < 0)
			return s_fail(c, "%lld is out of range for %s", (long long)sv, tname);
		v = (uint64_t)sv;
	}
	if (v > max)
		return s_fail(c, "%llu is out of range for %s", (unsigned long long)v, tname);
	*out = v;
	return 0;
}

static int
s_get_double(s_ctx_t *c, const json_t *j, double *out)
{
	if (json_is_number(j)) {
		*out = json_number_value(j);
		return 0;
	}
	if (json_is_string(j)) {
		const char *s = json_string_value(j);
		if (strcmp(s, "NaN") == 0)
			*out = NAN;
		else if (strcmp(s, "Infinity") == 0)
			*out = INFINITY;
		else if (strcmp(s, "-Infinity") == 0)
			*out = -INFINITY;
		else
			return s_fail(c, "expected number, got string \"%.*s\"",
			              (int)ahp_utf8_prefix(s, 32), s);
		return 0;
	}
	return s_fail(c, "expected number, got %s", s_json_type(j));
}

static void
s_enum_names(const ProtobufCEnumDescriptor *ed, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = '\0';
	for (unsigned i = 0; i < ed->n_values && o < len; i++) {
		int n = snprintf(buf + o, len - o, "%s%s", i ? ", " : "", ed->values[i].name);
		if (n < 0)
			break;
		o += (size_t)n;
	}
}

/* Converts one JSON value into the slot dst for field f (a plain member or
 * one element of a repeated field). */
static int
s_value_from_json(s_ctx_t *c, const ProtobufCFieldDescriptor *f, const json_t *j, void *dst)
{
	int64_t iv;
	uint64_t uv;
	double dv;

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		if (s_get_int(c, j, INT32_MIN, INT32_MAX, "int32", &iv) < 0)
			return -1;
		*(int32_t *)dst = (int32_t)iv;
		return 0;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		if (s_get_int(c, j, INT64_MIN, INT64_MAX, "int64", &iv) < 0)
			return -1;
		*(int64_t *)dst = iv;
		return 0;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		if (s_get_uint(c, j, UINT32_MAX, "uint32", &uv) < 0)
			return -1;
		*(uint32_t *)dst = (uint32_t)uv;
		return 0;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		if (s_get_uint(c, j, UINT64_MAX, "uint64", &uv) < 0)
			return -1;
		*(uint64_t *)dst = uv;
		return 0;
	case PROTOBUF_C_TYPE_FLOAT:
		if (s_get_double(c, j, &dv) < 0)
			return -1;
		if (isfinite(dv) && fabs(dv) > FLT_MAX)
			return s_fail(c, "%g is out of range for float", dv);
		*(float *)dst = (float)dv;
		return 0;
	case PROTOBUF_C_TYPE_DOUBLE:
		if (s_get_double(c, j, &dv) < 0)
			return -1;
		*(double *)dst = dv;
		return 0;
	case PROTOBUF_C_TYPE_BOOL:
		if (!json_is_boolean(j))
			return s_fail(c, "expected boolean, got %s", s_json_type(j));
		*(protobuf_c_boolean *)dst = json_is_true(j);
		return 0;
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *ed = f->descriptor;
		const ProtobufCEnumValue *ev = NULL;
		char names[256];
		if (json_is_string(j)) {
			ev = protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(j));
			if (ev == NULL) {
				s_enum_names(ed, names, sizeof names);
				return s_fail(c, "unknown enum value \"%.*s\" (expected one of %s)",
				              (int)ahp_utf8_prefix(json_string_value(j), 64),
				              json_string_value(j), names);
			}
		} else if (json_is_integer(j)) {
			json_int_t v = json_integer_value(j);
			if (v >= INT32_MIN && v <= INT32_MAX)
				ev = protobuf_c_enum_descriptor_get_value(ed, (int)v);
			if (ev == NULL) {
				s_enum_names(ed, names, sizeof names);
				return s_fail(c, "unknown enum value %lld (expected one of %s)",
				              (long long)v, names);
			}
		} else {
			return s_fail(c, "expected string (enum name), got %s", s_json_type(j));
		}
		*(int *)dst = ev->value;
		return 0;
	}
	case PROTOBUF_C_TYPE_STRING: {
		if (!json_is_string(j))
			return s_fail(c, "expected string, got %s", s_json_type(j));
		size_t n = json_string_length(j);
		const char *s = json_string_value(j);
		if (memchr(s, '\0', n) != NULL)
			return s_fail(c, "string contains a NUL character");
		char *copy = strndup(s, n);
		if (copy == NULL)
			return s_fail(c, "out of memory");
		*(char **)dst = copy;
		return 0;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		ProtobufCBinaryData *bd = dst;
		uint8_t *data = NULL;
		size_t n = 0;
		if (!json_is_string(j))
			return s_fail(c, "expected base64 string, got %s", s_json_type(j));
		if (s_b64_decode(json_string_value(j), json_string_length(j), &data, &n) < 0)
			return s_fail(c, "invalid base64");
		bd->data = data;
		bd->len = n;
		return 0;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		ProtobufCMessage *sub = NULL;
		if (!json_is_object(j))
			return s_fail(c, "expected object, got %s", s_json_type(j));
		if (s_msg_from_json(c, f->descriptor, j, &sub) < 0)
			return -1;
		*(ProtobufCMessage **)dst = sub;
		return 0;
	}
	}
	return s_fail(c, "unsupported field type");
}

static size_t
s_elem_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_FLOAT:
	case PROTOBUF_C_TYPE_ENUM:
		return 4;
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
		return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(ProtobufCMessage *);
	}
	return 0;
}

/* Types whose proto2 `optional` presence lives in a has_ member. */
static int
s_has_flag(const ProtobufCFieldDescriptor *f)
{
	return f->label == PROTOBUF_C_LABEL_OPTIONAL && !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
	       f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE &&
	       f->quantifier_offset != 0;
}

static int
s_repeated_from_json(s_ctx_t *c, const ProtobufCFieldDescriptor *f, const json_t *j, char *base)
{
	if (!json_is_array(j))
		return s_fail(c, "expected array, got %s", s_json_type(j));
	size_t n = json_array_size(j);
	if (n == 0)
		return 0;
	if (n > JSONPB_MAX_REPEATED)
		return s_fail(c, "more than %d elements", JSONPB_MAX_REPEATED);
	size_t es = s_elem_size(f->type);
	uint8_t *arr = calloc(n, es);
	if (arr == NULL)
		return s_fail(c, "out of memory");
	/* Count and array are published before conversion, counting only
	 * converted elements, so a failure leaves a message that
	 * protobuf_c_message_free_unpacked() frees correctly. */
	size_t *count = (size_t *)(base + f->quantifier_offset);
	*(void **)(base + f->offset) = arr;
	*count = 0;
	for (size_t i = 0; i < n; i++) {
		size_t old = s_push_index(c, i);
		json_t *e = json_array_get(j, i);
		if (json_is_null(e)) {
			s_fail(c, "null is not allowed in a repeated field");
			return -1;
		}
		if (s_value_from_json(c, f, e, arr + i * es) < 0)
			return -1;
		s_pop(c, old);
		(*count)++;
	}
	return 0;
}

static void
s_field_names(const ProtobufCMessageDescriptor *desc, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = '\0';
	for (unsigned i = 0; i < desc->n_fields && o < len; i++) {
		int n = snprintf(buf + o, len - o, "%s%s", i ? ", " : "", desc->fields[i].name);
		if (n < 0)
			break;
		o += (size_t)n;
	}
}

static int
s_msg_from_json(s_ctx_t *c, const ProtobufCMessageDescriptor *desc, const json_t *j,
                ProtobufCMessage **out)
{
	const char *key;
	json_t *val;
	char names[256];
	int rc = -1;

	*out = NULL;
	if (!json_is_object(j))
		return s_fail(c, "expected object, got %s", s_json_type(j));
	if (c->depth >= JSONPB_MAX_DEPTH)
		return s_fail(c, "nesting deeper than %d levels", JSONPB_MAX_DEPTH);
	ProtobufCMessage *msg = calloc(1, desc->sizeof_message);
	uint8_t *seen = calloc(desc->n_fields ? desc->n_fields : 1, 1);
	if (msg == NULL || seen == NULL) {
		free(msg);
		free(seen);
		return s_fail(c, "out of memory");
	}
	protobuf_c_message_init(desc, msg);
	c->depth++;
	char *base = (char *)msg;

	json_object_foreach((json_t *)j, key, val)
	{
		size_t old = s_push(c, key);
		const ProtobufCFieldDescriptor *f =
		    protobuf_c_message_descriptor_get_field_by_name(desc, key);
		if (f == NULL) {
			s_field_names(desc, names, sizeof names);
			s_fail(c, "unknown field (known: %s)", names);
			goto out;
		}
		/* null = absent, as in proto3 JSON. */
		if (json_is_null(val)) {
			s_pop(c, old);
			continue;
		}
		seen[f - desc->fields] = 1;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			if (s_repeated_from_json(c, f, val, base) < 0)
				goto out;
		} else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			uint32_t *oc = (uint32_t *)(base + f->quantifier_offset);
			if (*oc != 0 && *oc != f->id) {
				const ProtobufCFieldDescriptor *other =
				    protobuf_c_message_descriptor_get_field(desc, *oc);
				s_fail(c, "conflicts with '%s' (only one of them may be set)",
				       other ? other->name : "?");
				goto out;
			}
			if (s_value_from_json(c, f, val, base + f->offset) < 0)
				goto out;
			*oc = f->id;
		} else {
			if (s_value_from_json(c, f, val, base + f->offset) < 0)
				goto out;
			if (s_has_flag(f))
				*(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
		}
		s_pop(c, old);
	}
	for (unsigned i = 0; i < desc->n_fields; i++) {
		if (desc->fields[i].label == PROTOBUF_C_LABEL_REQUIRED && !seen[i]) {
			size_t old = s_push(c, desc->fields[i].name);
			s_fail(c, "required field missing");
			s_pop(c, old);
			goto out;
		}
	}
	rc = 0;
out:
	c->depth--;
	free(seen);
	if (rc < 0) {
		protobuf_c_message_free_unpacked(msg, NULL);
		return -1;
	}
	*out = msg;
	return 0;
}

ProtobufCMessage *
ahp_json_to_proto(const ProtobufCMessageDescriptor *desc, const json_t *json, char *err,
                  size_t errlen)
{
	s_ctx_t c;
	ProtobufCMessage *msg = NULL;
	memset(&c, 0, sizeof c);
	c.err = err;
	c.errlen = errlen;
	if (err && errlen)
		err[0] = '\0';
	if (json == NULL) {
		s_fail(&c, "expected object, got nothing");
		return NULL;
	}
	if (s_msg_from_json(&c, desc, json, &msg) < 0)
		return NULL;
	return msg;
}

/* --- proto -> JSON --- */

static json_t *s_msg_to_json(const ProtobufCMessage *msg, int depth);

/* Shortest decimal that reads back as the same float, so 0.1f prints as
 * 0.1 and not 0.100000001490116. */
static double
s_float_to_double(float f)
{
	char buf[32];
	for (int prec = 6; prec <= 9; prec++) {
		snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
		double d = strtod(buf, NULL);
		if ((float)d == f)
			return d;
	}
	return (double)f;
}

static json_t *
s_double_to_json(double d)
{
	if (isnan(d))
		return json_string("NaN");
	if (isinf(d))
		return json_string(d > 0 ? "Infinity" : "-Infinity");
	return json_real(d);
}

static json_t *
s_value_to_json(const ProtobufCFieldDescriptor *f, const void *src, int depth)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		return json_integer(*(const int32_t *)src);
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		return json_integer(*(const int64_t *)src);
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return json_integer(*(const uint32_t *)src);
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64: {
		uint64_t v = *(const uint64_t *)src;
		/* Beyond json_int_t: a decimal string, which the reverse accepts. */
		if (v > (uint64_t)INT64_MAX) {
			char buf[32];
			snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
			return json_string(buf);
		}
		return json_integer((json_int_t)v);
	}
	case PROTOBUF_C_TYPE_FLOAT:
		return s_double_to_json(s_float_to_double(*(const float *)src));
	case PROTOBUF_C_TYPE_DOUBLE:
		return s_double_to_json(*(const double *)src);
	case PROTOBUF_C_TYPE_BOOL:
		return json_boolean(*(const protobuf_c_boolean *)src);
	case PROTOBUF_C_TYPE_ENUM: {
		int v = *(const int *)src;
		const ProtobufCEnumValue *ev =
		    protobuf_c_enum_descriptor_get_value(f->descriptor, v);
		return ev ? json_string(ev->name) : json_integer(v);
	}
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)src;
		/* jansson refuses invalid UTF-8; never drop the whole message for it. */
		json_t *js = json_string(s ? s : "");
		return js ? js : json_string("\xef\xbf\xbd");
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *bd = src;
		char *b = s_b64_encode(bd->data, bd->len);
		if (b == NULL)
			return NULL;
		json_t *js = json_string(b);
		free(b);
		return js;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *sub = *(ProtobufCMessage *const *)src;
		return sub ? s_msg_to_json(sub, depth + 1) : json_null();
	}
	}
	return NULL;
}

static json_t *
s_msg_to_json(const ProtobufCMessage *msg, int depth)
{
	const ProtobufCMessageDescriptor *desc = msg->descriptor;
	const char *base = (const char *)msg;
	/* What is written must read back (ahp_json_to_proto's limits): deeper
	 * nesting or longer repeated fields are refused here, not there. */
	if (depth >= JSONPB_MAX_DEPTH) {
		errno = E2BIG;
		return NULL;
	}
	json_t *obj = json_object();
	if (obj == NULL)
		return NULL;
	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];
		json_t *v = NULL;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			const char *arr = *(char *const *)(base + f->offset);
			size_t es = s_elem_size(f->type);
			if (n > JSONPB_MAX_REPEATED) {
				json_decref(obj);
				errno = E2BIG;
				return NULL;
			}
			v = json_array();
			for (size_t k = 0; v != NULL && k < n; k++) {
				json_t *e = s_value_to_json(f, arr + k * es, depth);
				if (e == NULL || json_array_append_new(v, e) < 0) {
					json_decref(v);
					v = NULL;
				}
			}
		} else {
			if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
				if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
					continue;
			} else if (s_has_flag(f)) {
				if (!*(const protobuf_c_boolean *)(base + f->quantifier_offset))
					continue;
			}
			if ((f->type == PROTOBUF_C_TYPE_MESSAGE ||
			     (f->type == PROTOBUF_C_TYPE_STRING &&
			      f->label == PROTOBUF_C_LABEL_OPTIONAL)) &&
			    *(void *const *)(base + f->offset) == NULL)
				continue;
			v = s_value_to_json(f, base + f->offset, depth);
		}
		if (v == NULL || json_object_set_new(obj, f->name, v) < 0) {
			json_decref(obj);
			return NULL;
		}
	}
	return obj;
}

json_t *
ahp_proto_to_json(const ProtobufCMessage *msg)
{
	if (msg == NULL)
		return NULL;
	return s_msg_to_json(msg, 0);
}

/* --- JSON Schema for tool descriptions --- */

static json_t *s_msg_schema(const ProtobufCMessageDescriptor *desc, int depth);

static json_t *
s_value_schema(const ProtobufCFieldDescriptor *f, int depth)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		return json_pack("{s:s}", "type", "integer");
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return json_pack("{s:s,s:i}", "type", "integer", "minimum", 0);
	case PROTOBUF_C_TYPE_FLOAT:
	case PROTOBUF_C_TYPE_DOUBLE:
		return json_pack("{s:s}", "type", "number");
	case PROTOBUF_C_TYPE_BOOL:
		return json_pack("{s:s}", "type", "boolean");
	case PROTOBUF_C_TYPE_STRING:
		return json_pack("{s:s}", "type", "string");
	case PROTOBUF_C_TYPE_BYTES:
		return json_pack("{s:s,s:s}", "type", "string", "contentEncoding", "base64");
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *ed = f->descriptor;
		json_t *e = json_array();
		for (unsigned i = 0; e && i < ed->n_values; i++)
			json_array_append_new(e, json_string(ed->values[i].name));
		return json_pack("{s:s,s:o}", "type", "string", "enum", e);
	}
	case PROTOBUF_C_TYPE_MESSAGE:
		return s_msg_schema(f->descriptor, depth + 1);
	}
	return NULL;
}

static json_t *
s_msg_schema(const ProtobufCMessageDescriptor *desc, int depth)
{
	if (depth > JSONPB_MAX_DEPTH)
		return json_pack("{s:s}", "type", "object");
	json_t *props = json_object();
	json_t *req = json_array();
	for (unsigned i = 0; props && req && i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];
		json_t *v = s_value_schema(f, depth);
		if (v != NULL && f->label == PROTOBUF_C_LABEL_REPEATED)
			v = json_pack("{s:s,s:o}", "type", "array", "items", v);
		if (v == NULL)
			continue;
		json_object_set_new(props, f->name, v);
		if (f->label == PROTOBUF_C_LABEL_REQUIRED)
			json_array_append_new(req, json_string(f->name));
	}
	json_t *schema = json_pack("{s:s,s:o,s:b}", "type", "object", "properties", props,
	                           "additionalProperties", 0);
	if (schema != NULL && json_array_size(req) > 0)
		json_object_set_new(schema, "required", req);
	else
		json_decref(req);
	return schema;
}

json_t *
ahp_proto_json_schema(const ProtobufCMessageDescriptor *desc)
{
	return desc ? s_msg_schema(desc, 0) : NULL;
}
