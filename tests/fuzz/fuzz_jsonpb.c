/* Fuzz target: JSON -> protobuf and back (common/jsonpb.c) on the daemons' message types.
 *
 * Input: one selector byte, then the payload. The selector's low bits pick the message type;
 * its top bit picks the direction: 0 = the payload is JSON for ahp_json_to_proto, 1 = it is
 * protobuf bytes, unpacked and written out with ahp_proto_to_json. Either way, what jsonpb
 * writes it must read back to the same message. */
#include <string.h>

#include "ahp/jsonpb.h"
#include "ahp/text.h"
#include "fuzz.h"
#include "orchestrator.pb-c.h"
#include "pbwalk.h"
#include "sandboxd.pb-c.h"
#include "testmsg.pb-c.h"

/* The largest RPC body a daemon accepts (orchestrator, sandboxd: 1 MiB). */
#define FUZZ_JSONPB_MAX (1024 * 1024)

static const ProtobufCMessageDescriptor *const s_types[] = {
    &ahp__sbx__request__descriptor,     &ahp__sbx__reply__descriptor,
    &ahp__sbx__exec_result__descriptor, &ahp__orch__request__descriptor,
    &ahp__orch__reply__descriptor,      &ahp__error__descriptor,
    &ahp__test__outer__descriptor,      &ahp__test__scalars__descriptor,
};
#define S_NTYPES (sizeof s_types / sizeof s_types[0])

/* jsonpb's output for m parses back into a message that writes the same JSON. */
static void
s_round_trip(const ProtobufCMessageDescriptor *desc, const ProtobufCMessage *m)
{
	char err[256];
	json_t *j = ahp_proto_to_json(m);
	FUZZ_CHECK(j != NULL);
	char *s = json_dumps(j, JSON_COMPACT);
	FUZZ_CHECK(s != NULL);
	free(s);
	ProtobufCMessage *m2 = ahp_json_to_proto(desc, j, err, sizeof err);
	if (m2 == NULL)
		fprintf(stderr, "jsonpb refused its own output: %s\n", err);
	FUZZ_CHECK(m2 != NULL);
	json_t *j2 = ahp_proto_to_json(m2);
	FUZZ_CHECK(j2 != NULL);
	FUZZ_CHECK(json_equal(j, j2));
	json_decref(j2);
	json_decref(j);
	protobuf_c_message_free_unpacked(m2, NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > FUZZ_JSONPB_MAX + 1)
		return 0;
	const ProtobufCMessageDescriptor *desc = s_types[(data[0] & 0x7f) % S_NTYPES];
	int from_proto = (data[0] & 0x80) != 0;
	data++;
	size--;

	if (from_proto) {
		ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, size, data);
		if (m == NULL)
			return 0;
		fuzz_pb_stats_t st = {0};
		fuzz_pb_walk(m, &st);
		if (st.max_repeated > 100000 || st.max_depth >= 32) {
			/* Over what ahp_json_to_proto reads: ahp_proto_to_json
			 * refuses to write it (jsonpb.h), rather than write what
			 * cannot be read back. */
			json_t *j = ahp_proto_to_json(m);
			FUZZ_CHECK(j == NULL);
		} else if (st.unknown_enums == 0) {
			s_round_trip(desc, m);
		} else {
			/* Enum values the schema does not name are written as
			 * numbers, which ahp_json_to_proto refuses by design
			 * (jsonpb.h): no round trip then. */
			json_decref(ahp_proto_to_json(m));
		}
		protobuf_c_message_free_unpacked(m, NULL);
		return 0;
	}
	json_t *j = json_loadb((const char *)data, size, 0, NULL);
	if (j == NULL)
		return 0;
	char err[256];
	err[0] = '\0';
	ProtobufCMessage *m = ahp_json_to_proto(desc, j, err, sizeof err);
	json_decref(j);
	if (m == NULL) {
		/* The reason goes back to the model as a tool error. */
		FUZZ_CHECK(err[0] != '\0');
		FUZZ_CHECK(ahp_utf8_valid(err, strlen(err), 0));
		return 0;
	}
	FUZZ_CHECK(protobuf_c_message_check(m));
	s_round_trip(desc, m);
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}
