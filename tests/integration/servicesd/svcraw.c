/* svcraw: test tool for servicesd's socket. Sends requests and prints each reply as one JSON
 * line (ahp.svcd.Reply as JSON, or {"transport_error": STATUS, "message": ...}, or
 * {"timeout": true}).
 *
 *   svcraw ENDPOINT [--timeout MS] [--copies N] REQUEST...
 *
 * REQUEST is json:TEXT (an ahp.svcd.Request as JSON), file:PATH (the same, from a file),
 * or hex:HEX (raw body bytes, sent as is). With --copies N every request is sent N times
 * at once before any reply is read (duplicates in flight). Replies are printed in arrival
 * order, each with "i" (the request's index). Exit 0, 2 on a usage error, 3 on a timeout. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <zmq.h>

#include "ahp/jsonpb.h"
#include "ahp/rpc.h"
#include "ahp/util.h"
#include "servicesd.pb-c.h"

static int
s_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* One request body from its spec. Caller frees *buf. 0 / -1. */
static int
s_body(const char *spec, uint8_t **buf, size_t *len)
{
	json_t *j = NULL;
	json_error_t je;
	if (strncmp(spec, "hex:", 4) == 0) {
		const char *h = spec + 4;
		size_t n = strlen(h);
		if (n % 2 != 0)
			return -1;
		*buf = malloc(n / 2 + 1);
		if (*buf == NULL)
			return -1;
		for (size_t i = 0; i < n / 2; i++) {
			int hi = s_hexval(h[2 * i]), lo = s_hexval(h[2 * i + 1]);
			if (hi < 0 || lo < 0)
				return -1;
			(*buf)[i] = (uint8_t)(hi << 4 | lo);
		}
		*len = n / 2;
		return 0;
	}
	if (strncmp(spec, "json:", 5) == 0)
		j = json_loads(spec + 5, JSON_ALLOW_NUL, &je);
	else if (strncmp(spec, "file:", 5) == 0)
		j = json_load_file(spec + 5, JSON_ALLOW_NUL, &je);
	if (j == NULL) {
		fprintf(stderr, "svcraw: bad request spec: %s\n", je.text);
		return -1;
	}
	char err[256];
	ProtobufCMessage *m =
	    ahp_json_to_proto(&ahp__svcd__request__descriptor, j, err, sizeof err);
	json_decref(j);
	if (m == NULL) {
		fprintf(stderr, "svcraw: %s\n", err);
		return -1;
	}
	*len = protobuf_c_message_get_packed_size(m);
	*buf = malloc(*len + 1);
	if (*buf != NULL)
		protobuf_c_message_pack(m, *buf);
	protobuf_c_message_free_unpacked(m, NULL);
	return *buf != NULL ? 0 : -1;
}

int
main(int argc, char **argv)
{
	int timeout_ms = 10000, copies = 1, i = 2;
	if (argc < 3) {
		fputs("usage: svcraw ENDPOINT [--timeout MS] [--copies N] REQUEST...\n", stderr);
		return 2;
	}
	for (; i + 1 < argc; i += 2) {
		long v = 0;
		if (strcmp(argv[i], "--timeout") == 0) {
			if (ahp_parse_long(argv[i + 1], 1, 3600000, &v) != 0)
				v = 0; /* refused below */
			timeout_ms = (int)v;
		} else if (strcmp(argv[i], "--copies") == 0) {
			if (ahp_parse_long(argv[i + 1], 1, 10000, &v) != 0)
				v = 0;
			copies = (int)v;
		} else {
			break;
		}
	}
	if (timeout_ms <= 0 || copies <= 0 || copies > 10000 || i >= argc) {
		fputs("svcraw: bad options\n", stderr);
		return 2;
	}
	ahp_rpc_client_t *cl = ahp_rpc_client_new(NULL, argv[1]);
	if (cl == NULL) {
		fprintf(stderr, "svcraw: cannot connect %s\n", argv[1]);
		return 2;
	}
	int nreq = argc - i;
	size_t total = (size_t)nreq * (size_t)copies;
	uint64_t *ids = calloc(total, sizeof *ids);
	size_t sent = 0;
	for (int r = 0; r < nreq; r++) {
		uint8_t *buf = NULL;
		size_t len = 0;
		if (s_body(argv[i + r], &buf, &len) != 0) {
			free(buf);
			free(ids);
			ahp_rpc_client_destroy(&cl);
			return 2;
		}
		for (int c = 0; c < copies; c++) {
			uint64_t id = 0;
			/* ZMQ_IMMEDIATE: wait for the connection. */
			for (int t = 0; t < 200 && (id = ahp_rpc_client_send(cl, buf, len)) == 0;
			     t++)
				usleep(10000);
			if (id == 0) {
				fprintf(stderr, "svcraw: send failed\n");
				free(buf);
				free(ids);
				ahp_rpc_client_destroy(&cl);
				return 2;
			}
			ids[sent++] = id;
		}
		free(buf);
	}
	int64_t deadline = ahp_mono_ms() + timeout_ms;
	size_t got = 0;
	int rc = 0;
	while (got < sent) {
		int64_t left = deadline - ahp_mono_ms();
		zmq_pollitem_t pi = {ahp_rpc_client_socket(cl), 0, ZMQ_POLLIN, 0};
		if (left <= 0 || zmq_poll(&pi, 1, (long)left) <= 0) {
			puts("{\"timeout\": true}");
			rc = 3;
			break;
		}
		uint64_t rid = 0;
		uint8_t *body = NULL;
		size_t len = 0;
		int terr = 0;
		while (ahp_rpc_client_recv(cl, &rid, &body, &len, &terr) == 1) {
			json_t *out = NULL;
			if (terr != 0) {
				out = json_pack("{s:i,s:s%}", "transport_error", terr, "message",
				                (char *)body, len);
			} else {
				Ahp__Svcd__Reply *r = ahp__svcd__reply__unpack(NULL, len, body);
				out = r != NULL ? ahp_proto_to_json(&r->base) : json_object();
				if (r == NULL)
					json_object_set_new(out, "decode_error", json_true());
				ahp__svcd__reply__free_unpacked(r, NULL);
			}
			long idx = -1;
			for (size_t k = 0; k < sent; k++)
				if (ids[k] == rid)
					idx = (long)k;
			json_object_set_new(out, "i", json_integer(idx));
			char *text = json_dumps(out, JSON_COMPACT | JSON_ENSURE_ASCII);
			puts(text ? text : "{}");
			free(text);
			json_decref(out);
			free(body);
			body = NULL;
			got++;
		}
	}
	fflush(stdout);
	free(ids);
	ahp_rpc_client_destroy(&cl);
	return rc;
}
