/* apprsend: test tool — sends one request to approvald and prints the reply as one JSON line.
 *
 *   apprsend ENDPOINT orch|human JSON [--timeout MS]   an ahp.appr.OrchRequest or
 *                                                     HumanRequest given as JSON ("-":
 *                                                     read from stdin)
 *   apprsend ENDPOINT orch|human --hex HEX [...]      a body given as bytes (malformed ones)
 *
 * Prints the reply (ahp.appr.OrchReply / HumanReply) as JSON, or
 * {"transport_error":{"status":"permission_denied","message":"..."}} for a transport error;
 * exit 0. Exit 3 with {"timeout":true} when nothing came back, 2 on bad usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ahp/jsonpb.h"
#include "ahp/rpc.h"
#include "ahp/util.h"
#include "approvald.pb-c.h"

static int
s_hex(const char *h, uint8_t **out, size_t *len)
{
	size_t n = strlen(h);
	if (n % 2 != 0)
		return -1;
	*out = malloc(n / 2 + 1);
	if (*out == NULL)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(h + 2 * i, "%2x", &v) != 1)
			return -1;
		(*out)[i] = (uint8_t)v;
	}
	*len = n / 2;
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc < 4) {
		fputs("usage: apprsend ENDPOINT orch|human JSON|--hex HEX [--timeout MS]\n",
		      stderr);
		return 2;
	}
	const char *ep = argv[1];
	int orch = strcmp(argv[2], "orch") == 0;
	if (!orch && strcmp(argv[2], "human") != 0)
		return 2;
	int timeout = 10000, i = 3;
	uint8_t *body = NULL;
	size_t len = 0;
	if (strcmp(argv[i], "--hex") == 0 && i + 1 < argc) {
		if (s_hex(argv[i + 1], &body, &len) != 0) {
			fputs("apprsend: bad hex\n", stderr);
			return 2;
		}
		i += 2;
	} else {
		json_error_t je;
		json_t *j = strcmp(argv[i], "-") == 0 ? json_loadf(stdin, 0, &je)
		                                      : json_loads(argv[i], 0, &je);
		if (j == NULL) {
			fprintf(stderr, "apprsend: not JSON: %s\n", je.text);
			return 2;
		}
		char err[256];
		ProtobufCMessage *m =
		    ahp_json_to_proto(orch ? &ahp__appr__orch_request__descriptor
		                           : &ahp__appr__human_request__descriptor,
		                      j, err, sizeof err);
		json_decref(j);
		if (m == NULL) {
			fprintf(stderr, "apprsend: %s\n", err);
			return 2;
		}
		len = protobuf_c_message_get_packed_size(m);
		body = malloc(len ? len : 1);
		protobuf_c_message_pack(m, body);
		protobuf_c_message_free_unpacked(m, NULL);
		i++;
	}
	if (i + 1 < argc && strcmp(argv[i], "--timeout") == 0) {
		long t;
		if (ahp_parse_long(argv[i + 1], 1, 3600000, &t) != 0) {
			fprintf(stderr, "apprsend: --timeout takes 1..3600000 (ms)\n");
			return 2;
		}
		timeout = (int)t;
	}
	ahp_rpc_client_t *cl = ahp_rpc_client_new(NULL, ep);
	if (cl == NULL)
		return 2;
	uint8_t *reply = NULL;
	size_t rlen = 0;
	int status = 0;
	char err[512] = "";
	int rc =
	    ahp_rpc_call(cl, body, len, timeout, 0, 0, &reply, &rlen, &status, err, sizeof err);
	free(body);
	ahp_rpc_client_destroy(&cl);
	json_t *out;
	if (rc != 0) {
		if (status == AHP__STATUS__ERR_TIMEOUT || status == AHP__STATUS__ERR_UNAVAILABLE) {
			puts("{\"timeout\":true}");
			return 3;
		}
		out = json_pack("{s:{s:s,s:s}}", "transport_error", "status",
		                ahp_status_str(status), "message", err);
	} else {
		ProtobufCMessage *m = protobuf_c_message_unpack(
		    orch ? &ahp__appr__orch_reply__descriptor : &ahp__appr__human_reply__descriptor,
		    NULL, rlen, reply);
		if (m == NULL) {
			puts("{\"undecodable\":true}");
			free(reply);
			return 1;
		}
		out = ahp_proto_to_json(m);
		protobuf_c_message_free_unpacked(m, NULL);
	}
	free(reply);
	char *s = json_dumps(out, JSON_COMPACT);
	json_decref(out);
	puts(s);
	free(s);
	return 0;
}
