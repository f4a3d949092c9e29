/* JSON <-> protobuf by walking the message descriptor (jansson). */
#ifndef AHP_JSONPB_H
#define AHP_JSONPB_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/* Converts a message to a JSON object (proto field names; bytes as base64;
 * enums as their names; int64 as JSON integers). Caller owns the result. */
json_t *ahp_proto_to_json(const ProtobufCMessage *msg);

/* Builds a message of type desc from a JSON object. Unknown fields, wrong
 * types, out-of-range numbers and missing fields marked required (proto2) are
 * errors: NULL and a readable message naming the field path in err
 * ("field 'topic': expected string, got number"). Caller frees with
 * protobuf_c_message_free_unpacked(msg, NULL). */
ProtobufCMessage *ahp_json_to_proto(const ProtobufCMessageDescriptor *desc, const json_t *json,
    char *err, size_t errlen);

#endif
