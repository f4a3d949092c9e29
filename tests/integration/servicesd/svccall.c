/* svccall: test client for servicesd. Sends ahp.svcd.Request messages given as JSON (or raw
 * bodies) on one DEALER connection — all of them, each --copies times, before reading any
 * reply — and prints each Reply as one JSON line, in the order the requests were sent. Reuses
 * libahp's RPC client (common/include/ahp/rpc.h) and its JSON <-> protobuf mapping (ahp/jsonpb.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <zmq.h>

#include "ahp/jsonpb.h"
#include "ahp/rpc.h"
#include "ahp/util.h"
#include "servicesd.pb-c.h"

#define REQ_MAX 256
#define COPIES_MAX 10000
#define FILE_MAX (8 * 1024 * 1024) /* a request file larger than this is a test mistake */

static void
s_usage(FILE *f)
{
	fputs("usage: svccall ENDPOINT [--timeout MS] [--copies N] REQUEST...\n"
	      "  REQUEST is an ahp.svcd.Request as JSON text ({\"call\": {...}} or\n"
	      "  {\"describe\": {...}}), @PATH (the same JSON read from a file), or\n"
	      "  hex:HEX (a raw body, sent as is; hex: alone is an empty body).\n"
	      "  Every request is sent (--copies N: N times in a row, 1..10000, duplicates\n"
	      "  in flight) before any reply is read. Prints one JSON line per request\n"
	      "  sent, in order (N = its index among all sent): {\"i\":N,\"reply\":REPLY} (the "
	      "ahp.svcd.Reply as JSON),\n"
	      "  {\"i\":N,\"transport_error\":{\"status\":NAME,\"message\":TEXT}},\n"
	      "  {\"i\":N,\"decode_error\":true} or {\"i\":N,\"timeout\":true}.\n"
	      "  Exit 0 when every request got an answer, 3 on a timeout, 2 on a usage or\n"
	      "  send error. --timeout (default 10000) bounds the whole exchange.\n",
	      f);
}

static int64_t
s_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

/* Reads a whole file (at most FILE_MAX bytes) as a NUL-terminated string. NULL on error. */
static char *
s_read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap + 1);
	while (buf != NULL) {
		size_t n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
		if (len == cap) {
			if (cap >= FILE_MAX) {
				free(buf);
				buf = NULL;
				break;
			}
			char *nb = realloc(buf, cap * 2 + 1);
			if (nb == NULL) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
	}
	if (buf != NULL && ferror(f)) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	if (buf != NULL)
		buf[len] = '\0';
	return buf;
}

/* Builds a request body from its spec. Caller frees *buf. 0, or -1 with a message. */
static int
s_body(const char *spec, uint8_t **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	if (strncmp(spec, "hex:", 4) == 0) {
		const char *h = spec + 4;
		size_t n = strlen(h);
		if (n % 2 != 0) {
			fprintf(stderr, "svccall: odd hex length\n");
			return -1;
		}
		*buf = malloc(n / 2 + 1);
		if (*buf == NULL)
			return -1;
		for (size_t i = 0; i < n / 2; i++) {
			int hi = s_hexval(h[2 * i]), lo = s_hexval(h[2 * i + 1]);
			if (hi < 0 || lo < 0) {
				fprintf(stderr, "svccall: bad hex\n");
				return -1;
			}
			(*buf)[i] = (uint8_t)(hi << 4 | lo);
		}
		*len = n / 2;
		return 0;
	}
	char *text = NULL;
	if (spec[0] == '@') {
		text = s_read_file(spec + 1);
		if (text == NULL) {
			fprintf(stderr, "svccall: cannot read %s: %s\n", spec + 1, strerror(errno));
			return -1;
		}
	}
	json_error_t jerr;
	json_t *j = json_loads(text != NULL ? text : spec, 0, &jerr);
	free(text);
	if (j == NULL) {
		fprintf(stderr, "svccall: request is not JSON: %s\n", jerr.text);
		return -1;
	}
	char err[512] = "";
	ProtobufCMessage *m =
	    ahp_json_to_proto(&ahp__svcd__request__descriptor, j, err, sizeof err);
	json_decref(j);
	if (m == NULL) {
		fprintf(stderr, "svccall: request is not an ahp.svcd.Request: %s\n", err);
		return -1;
	}
	*len = protobuf_c_message_get_packed_size(m);
	*buf = malloc(*len ? *len : 1);
	if (*buf != NULL)
		protobuf_c_message_pack(m, *buf);
	protobuf_c_message_free_unpacked(m, NULL);
	return *buf != NULL ? 0 : -1;
}

/* Sends body, waiting (until deadline) for the connection that ZMQ_IMMEDIATE requires. */
static uint64_t
s_send(ahp_rpc_client_t *cl, const uint8_t *body, size_t len, int64_t deadline)
{
	for (;;) {
		uint64_t id = ahp_rpc_client_send(cl, body, len);
		if (id != 0)
			return id;
		if (errno != EAGAIN && errno != EINTR)
			return 0;
		int64_t left = deadline - s_now_ms();
		if (left <= 0)
			return 0;
		zmq_pollitem_t pi = {ahp_rpc_client_socket(cl), 0, ZMQ_POLLOUT, 0};
		zmq_poll(&pi, 1, left < 50 ? (long)left : 50);
	}
}

static json_t *
s_decode(const uint8_t *body, size_t len, int terr)
{
	json_t *out = json_object();
	if (terr != 0) {
		const ProtobufCEnumValue *v =
		    protobuf_c_enum_descriptor_get_value(&ahp__status__descriptor, terr);
		json_t *te = json_object();
		json_object_set_new(te, "status", json_string(v != NULL ? v->name : "UNKNOWN"));
		json_object_set_new(
		    te, "message",
		    json_stringn(body != NULL ? (const char *)body : "",
		                 body != NULL ? strnlen((const char *)body, len) : 0));
		json_object_set_new(out, "transport_error", te);
		return out;
	}
	Ahp__Svcd__Reply *r = ahp__svcd__reply__unpack(NULL, len, body);
	if (r == NULL) {
		json_object_set_new(out, "decode_error", json_true());
		return out;
	}
	json_t *j = ahp_proto_to_json(&r->base);
	/* The status as its name too, so tests need not know the numbers. */
	if (j != NULL && r->error != NULL) {
		const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
		    &ahp__status__descriptor, r->error->status);
		json_object_set_new(json_object_get(j, "error"), "status_name",
		                    json_string(v != NULL ? v->name : "UNKNOWN"));
	}
	ahp__svcd__reply__free_unpacked(r, NULL);
	json_object_set_new(out, "reply", j != NULL ? j : json_null());
	return out;
}

int
main(int argc, char **argv)
{
	if (argc < 3) {
		s_usage(stderr);
		return 2;
	}
	const char *endpoint = argv[1];
	long timeout_ms = 10000, copies = 1;
	int first = 2;
	while (first + 1 < argc && strncmp(argv[first], "--", 2) == 0) {
		long *opt = strcmp(argv[first], "--timeout") == 0  ? &timeout_ms
		            : strcmp(argv[first], "--copies") == 0 ? &copies
		                                                   : NULL;
		long max = opt == &copies ? COPIES_MAX : 600000;
		if (opt == NULL || ahp_parse_long(argv[first + 1], 1, max, opt) != 0) {
			s_usage(stderr);
			return 2;
		}
		first += 2;
	}
	int nreq = argc - first;
	if (nreq < 1 || nreq > REQ_MAX) {
		s_usage(stderr);
		return 2;
	}
	int n = nreq * (int)copies;
	ahp_rpc_client_t *cl = ahp_rpc_client_new(NULL, endpoint);
	if (cl == NULL) {
		fprintf(stderr, "svccall: cannot connect to %s\n", endpoint);
		return 2;
	}
	int64_t deadline = s_now_ms() + timeout_ms;
	uint64_t *ids = calloc((size_t)n, sizeof *ids);
	json_t **out = calloc((size_t)n, sizeof *out);
	int rc = ids != NULL && out != NULL ? 0 : 2, got = 0, refused = 0;
	for (int r = 0, i = 0; rc == 0 && !refused && r < nreq; r++) {
		uint8_t *body = NULL;
		size_t len = 0;
		if (s_body(argv[first + r], &body, &len) != 0) {
			free(body);
			rc = 2;
			break;
		}
		for (long c = 0; c < copies; c++, i++) {
			ids[i] = s_send(cl, body, len, deadline);
			if (ids[i] == 0 && errno == EAGAIN &&
			    ahp_rpc_refused_at_accept(endpoint, AHP_RPC_REFUSED_WAIT_MS)) {
				/* closed at accept: every request is refused, as the
				 * server would have said it (a transport error) */
				char m[160];
				ahp_rpc_refused_message(m, sizeof m);
				for (int k = 0; k < n; k++) {
					out[k] = s_decode((const uint8_t *)m, strlen(m) + 1,
					                  AHP__STATUS__ERR_PERMISSION_DENIED);
				}
				got = n;
				refused = 1;
				break;
			}
			if (ids[i] == 0) {
				fprintf(stderr, "svccall: send to %s failed (%s)\n", endpoint,
				        errno == EAGAIN ? "no server connected in time"
				                        : strerror(errno));
				rc = 2;
				break;
			}
		}
		free(body);
	}
	while (rc == 0 && got < n) {
		int64_t left = deadline - s_now_ms();
		if (left <= 0)
			break;
		zmq_pollitem_t pi = {ahp_rpc_client_socket(cl), 0, ZMQ_POLLIN, 0};
		if (zmq_poll(&pi, 1, (long)left) <= 0)
			continue;
		for (;;) {
			uint64_t id = 0;
			uint8_t *body = NULL;
			size_t len = 0;
			int terr = 0;
			int r = ahp_rpc_client_recv(cl, &id, &body, &len, &terr);
			if (r <= 0) {
				free(body);
				break;
			}
			for (int i = 0; i < n; i++)
				if (ids[i] == id && out[i] == NULL) {
					out[i] = s_decode(body, len, terr);
					got++;
				}
			free(body);
		}
	}
	if (rc == 0) {
		for (int i = 0; i < n; i++) {
			if (out[i] == NULL) {
				out[i] = json_object();
				json_object_set_new(out[i], "timeout", json_true());
				rc = 3;
			}
			json_object_set_new(out[i], "i", json_integer(i));
			json_dumpf(out[i], stdout, JSON_COMPACT | JSON_SORT_KEYS);
			fputc('\n', stdout);
		}
	}
	for (int i = 0; out != NULL && i < n; i++)
		json_decref(out[i]);
	free(out);
	free(ids);
	ahp_rpc_client_destroy(&cl);
	return rc;
}
