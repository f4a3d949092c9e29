/* Fuzz target: the RPC frame decoder (common/rpc.c) and the protobuf bodies behind it.
 *
 * Input: the 16-byte header frame, then the body frame. A reply header goes through
 * ahp_rpc_reply_decode as ahp_rpc_client_recv does; the body is then decoded as each daemon
 * decodes what it receives (sandboxd and the orchestrator requests; sandboxd and orchestrator
 * replies), and an exec result is turned into the model's tool result (orch_sbx_result_json). */
#include <string.h>

#include "ahp/rpc.h"
#include "fuzz.h"
#include "orch.h"
#include "pbwalk.h"

/* sandboxd and the orchestrator cap request bodies at 1 MiB (ZMQ_MAXMSGSIZE). */
#define FUZZ_RPC_BODY_MAX (1024 * 1024)

/* The message re-packs, and into bytes that unpack again unless it kept unknown fields:
 * protobuf-c accepts an overlong-encoded field number 0 as an unknown field, then packs it as
 * tag 0, which it refuses (no daemon re-packs what it received, so this is noted, not
 * asserted). */
static void
s_repack(const ProtobufCMessage *m)
{
	fuzz_pb_stats_t st = {0};
	FUZZ_CHECK(protobuf_c_message_check(m));
	fuzz_pb_walk(m, &st);
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(n ? n : 1);
	FUZZ_CHECK(buf != NULL);
	FUZZ_CHECK(protobuf_c_message_pack(m, buf) == n);
	ProtobufCMessage *m2 = protobuf_c_message_unpack(m->descriptor, NULL, n, buf);
	if (st.unknown_fields == 0) {
		FUZZ_CHECK(m2 != NULL);
		FUZZ_CHECK(protobuf_c_message_get_packed_size(m2) == n);
	}
	if (m2 != NULL)
		protobuf_c_message_free_unpacked(m2, NULL);
	free(buf);
}

/* The orchestrator's use of an exec result: a tool result for the model. */
static void
s_exec_result(const Ahp__Sbx__ExecResult *r)
{
	json_t *j = orch_sbx_result_json(r);
	FUZZ_CHECK(j != NULL);
	char *s = json_dumps(j, JSON_COMPACT);
	FUZZ_CHECK(s != NULL);
	FUZZ_CHECK(ahp_utf8_valid(s, strlen(s), 0));
	free(s);
	json_decref(j);
}

static void
s_requests(const uint8_t *body, size_t len)
{
	Ahp__Sbx__Request *sr = ahp__sbx__request__unpack(NULL, len, body);
	if (sr != NULL) {
		s_repack(&sr->base);
		ahp__sbx__request__free_unpacked(sr, NULL);
	}
	Ahp__Orch__Request *orq = ahp__orch__request__unpack(NULL, len, body);
	if (orq != NULL) {
		s_repack(&orq->base);
		ahp__orch__request__free_unpacked(orq, NULL);
	}
}

static void
s_replies(const uint8_t *body, size_t len)
{
	Ahp__Sbx__Reply *sr = ahp__sbx__reply__unpack(NULL, len, body);
	if (sr != NULL) {
		s_repack(&sr->base);
		if (sr->body_case == AHP__SBX__REPLY__BODY_EXEC && sr->exec != NULL)
			s_exec_result(sr->exec);
		ahp__sbx__reply__free_unpacked(sr, NULL);
	}
	/* sandboxd's own exec log stores bare ExecResults. */
	Ahp__Sbx__ExecResult *er = ahp__sbx__exec_result__unpack(NULL, len, body);
	if (er != NULL) {
		s_repack(&er->base);
		s_exec_result(er);
		ahp__sbx__exec_result__free_unpacked(er, NULL);
	}
	Ahp__Orch__Reply *orp = ahp__orch__reply__unpack(NULL, len, body);
	if (orp != NULL) {
		s_repack(&orp->base);
		ahp__orch__reply__free_unpacked(orp, NULL);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > AHP_RPC_HDR_LEN + FUZZ_RPC_BODY_MAX)
		return 0;
	size_t hlen = size < AHP_RPC_HDR_LEN ? size : AHP_RPC_HDR_LEN;
	const uint8_t *body = data + hlen;
	size_t blen = size - hlen;

	uint32_t kind = 0;
	uint64_t id = 0;
	if (ahp_rpc_hdr_unpack(data, hlen, &kind, &id) != 0) {
		uint64_t rid = 0;
		uint8_t *out = (uint8_t *)"unset";
		size_t olen = 0;
		int terr = 0;
		FUZZ_CHECK(ahp_rpc_reply_decode(data, hlen, body, blen, &rid, &out, &olen, &terr) ==
		           -1);
		FUZZ_CHECK(out == NULL);
		return 0;
	}
	uint8_t again[AHP_RPC_HDR_LEN];
	ahp_rpc_hdr_pack(again, kind, id);
	FUZZ_CHECK(memcmp(again, data, AHP_RPC_HDR_LEN) == 0);

	if (kind == AHP_RPC_KIND_REQUEST) {
		s_requests(body, blen);
		return 0;
	}
	uint64_t rid = 0;
	uint8_t *out = NULL;
	size_t olen = 0;
	int terr = 0;
	FUZZ_CHECK(ahp_rpc_reply_decode(data, hlen, body, blen, &rid, &out, &olen, &terr) == 0);
	FUZZ_CHECK(out != NULL && rid == id && out[olen] == '\0');
	if (kind == AHP_RPC_KIND_ERROR) {
		/* A transport error always carries a failure status and a message. */
		FUZZ_CHECK(terr != 0 && olen == strlen((const char *)out) && olen > 0);
	} else {
		FUZZ_CHECK(terr == 0 && olen == blen && memcmp(out, body, blen) == 0);
		s_replies(out, olen);
	}
	free(out);
	return 0;
}
