/* JSON <-> protobuf by walking the message descriptor (jansson). */
#ifndef AHP_JSONPB_H
#define AHP_JSONPB_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/* Converts a message to a JSON object (proto field names; bytes as base64;
 * enums as their names; int64 as JSON integers). Caller owns the result.
 * Details: fields at their default value are written too (a model reading
 * {"exit_code":0} should not have to know proto3 defaults); unset message
 * fields, unset oneof members and proto2 optionals without has_ are left
 * out. uint64 above INT64_MAX is written as a decimal string, NaN/Infinity
 * as the strings "NaN", "Infinity", "-Infinity". What it writes,
 * ahp_json_to_proto reads back: a message nested 32 levels or deeper, or with a
 * repeated field of more than 100000 elements (the reader's limits), gives NULL
 * with errno E2BIG. NULL on allocation failure too. */
json_t *ahp_proto_to_json(const ProtobufCMessage *msg);

/* Builds a message of type desc from a JSON object. Unknown fields, wrong
 * types, out-of-range numbers and missing fields marked required (proto2) are
 * errors: NULL and a readable message naming the field path in err
 * ("field 'topic': expected string, got number"). Caller frees with
 * protobuf_c_message_free_unpacked(msg, NULL). */
/* Accepted inputs: integers as JSON integers, integral numbers (3.0) or
 * decimal strings; floats also as "NaN"/"Infinity"/"-Infinity"; enums by
 * name or number (unknown ones rejected); bytes as standard or URL-safe
 * base64, padding optional; null = field absent; at most one member of a
 * oneof. Nesting is capped at 32 levels and repeated fields at 100000
 * elements. Maps and the google.protobuf well-known types get no special
 * treatment. */
ProtobufCMessage *ahp_json_to_proto(const ProtobufCMessageDescriptor *desc, const json_t *json,
                                    char *err, size_t errlen);

/* A JSON Schema (draft 2020-12 subset: type, properties, items, enum,
 * required, additionalProperties false) describing what ahp_json_to_proto
 * accepts for desc; used in tool descriptions given to the model. Caller
 * owns the result. */
json_t *ahp_proto_json_schema(const ProtobufCMessageDescriptor *desc);

#endif
