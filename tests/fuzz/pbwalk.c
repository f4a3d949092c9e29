/* Walks a protobuf-c message by its descriptor: set oneof members, repeated and nested fields. */
#include <string.h>

#include "pbwalk.h"

/* Whether field f of m holds a value to look at (oneof members: only the set one). */
static int
s_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
		uint32_t which;
		memcpy(&which, (const char *)m + f->quantifier_offset, sizeof which);
		return which == f->id;
	}
	if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset != 0 &&
	    f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE) {
		protobuf_c_boolean has;
		memcpy(&has, (const char *)m + f->quantifier_offset, sizeof has);
		return has;
	}
	return 1;
}

void
fuzz_pb_walk(const ProtobufCMessage *m, fuzz_pb_stats_t *st)
{
	fuzz_pb_walk_at(m, st, 0);
}

void
fuzz_pb_walk_at(const ProtobufCMessage *m, fuzz_pb_stats_t *st, int depth)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	st->unknown_fields += m->n_unknown_fields;
	if (depth > st->max_depth)
		st->max_depth = depth;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (!s_present(m, f))
			continue;
		const char *base = (const char *)m + f->offset;
		size_t n = 1;
		const void *elems = base;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			memcpy(&n, (const char *)m + f->quantifier_offset, sizeof n);
			memcpy(&elems, base, sizeof elems);
			if (n > st->max_repeated)
				st->max_repeated = n;
		}
		if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE &&
		    f->type != PROTOBUF_C_TYPE_ENUM)
			continue;
		for (size_t k = 0; k < n; k++) {
			if (f->type == PROTOBUF_C_TYPE_ENUM) {
				int v;
				memcpy(&v, (const char *)elems + k * sizeof v, sizeof v);
				if (protobuf_c_enum_descriptor_get_value(f->descriptor, v) == NULL)
					st->unknown_enums++;
				continue;
			}
			const void *p;
			memcpy(&p, (const char *)elems + k * sizeof p, sizeof p);
			if (p == NULL)
				continue;
			if (f->type == PROTOBUF_C_TYPE_STRING) {
				(void)strlen(p);
				st->strings++;
			} else {
				fuzz_pb_walk_at(p, st, depth + 1);
			}
		}
	}
}
