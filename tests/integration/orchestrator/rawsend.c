/* rawsend: test tool that sends hand-made frames to a ROUTER endpoint and prints the reply as JSON.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <zmq.h>

#include "common.pb-c.h"
#include "orchestrator.pb-c.h"

/* Frames larger than this are a mistake in the test, not a test. */
#define FRAME_MAX (64 * 1024 * 1024)

static void
s_usage(void)
{
	fputs("usage: rawsend ENDPOINT [--timeout MS] FRAME...\n"
	      "  FRAME is hex:HEX | str:TEXT | file:PATH | hdr:KIND:ID (a 16-byte rpc header)\n"
	      "  prints one JSON line: {\"reply\":false} on timeout (exit 3), else\n"
	      "  {\"reply\":true,\"frames\":N,\"kind\":K,\"request_id\":I,\"status\":S,...}\n",
	      stderr);
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

/* Builds one frame from its spec. Caller frees *buf. 0 / -1. */
static int
s_frame(const char *spec, unsigned char **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
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
			(*buf)[i] = (unsigned char)(hi << 4 | lo);
		}
		*len = n / 2;
		return 0;
	}
	if (strncmp(spec, "str:", 4) == 0) {
		*buf = (unsigned char *)strdup(spec + 4);
		*len = strlen(spec + 4);
		return *buf ? 0 : -1;
	}
	if (strncmp(spec, "file:", 5) == 0) {
		FILE *f = fopen(spec + 5, "rb");
		if (f == NULL)
			return -1;
		size_t cap = 65536;
		*buf = malloc(cap);
		while (*buf != NULL) {
			size_t n = fread(*buf + *len, 1, cap - *len, f);
			*len += n;
			if (n == 0)
				break;
			if (*len == cap) {
				if (cap >= FRAME_MAX) {
					fclose(f);
					return -1;
				}
				unsigned char *nb = realloc(*buf, cap * 2);
				if (nb == NULL) {
					fclose(f);
					return -1;
				}
				*buf = nb;
				cap *= 2;
			}
		}
		int bad = ferror(f);
		fclose(f);
		return (*buf == NULL || bad) ? -1 : 0;
	}
	if (strncmp(spec, "hdr:", 4) == 0) {
		char *end = NULL;
		errno = 0;
		unsigned long kind = strtoul(spec + 4, &end, 10);
		if (errno != 0 || end == spec + 4 || *end != ':' || kind > 0xffffffffUL)
			return -1;
		const char *idp = end + 1;
		unsigned long long id = strtoull(idp, &end, 10);
		if (errno != 0 || end == idp || *end != '\0')
			return -1;
		*buf = malloc(16);
		if (*buf == NULL)
			return -1;
		memcpy(*buf, "AHP1", 4);
		for (int i = 0; i < 4; i++)
			(*buf)[4 + i] = (unsigned char)(kind >> (24 - 8 * i));
		for (int i = 0; i < 8; i++)
			(*buf)[8 + i] = (unsigned char)(id >> (56 - 8 * i));
		*len = 16;
		return 0;
	}
	return -1;
}

static const char *
s_status_name(int status)
{
	const ProtobufCEnumValue *v =
	    protobuf_c_enum_descriptor_get_value(&ahp__status__descriptor, status);
	return v ? v->name : "UNKNOWN";
}

/* Decodes the body of a reply into fields of out. */
static void
s_describe(json_t *out, uint32_t kind, const unsigned char *body, size_t len)
{
	if (kind == 3) {
		Ahp__TransportError *te = ahp__transport_error__unpack(NULL, len, body);
		if (te == NULL) {
			json_object_set_new(out, "decode_error", json_true());
			return;
		}
		int st = te->error ? te->error->status : 0;
		json_object_set_new(out, "status", json_string(s_status_name(st)));
		json_object_set_new(
		    out, "message",
		    json_string(te->error && te->error->message ? te->error->message : ""));
		ahp__transport_error__free_unpacked(te, NULL);
		return;
	}
	Ahp__Orch__Reply *r = ahp__orch__reply__unpack(NULL, len, body);
	if (r == NULL) {
		json_object_set_new(out, "decode_error", json_true());
		return;
	}
	int st = r->error ? r->error->status : 0;
	json_object_set_new(out, "status", json_string(s_status_name(st)));
	json_object_set_new(out, "message",
	                    json_string(r->error && r->error->message ? r->error->message : ""));
	json_object_set_new(out, "detail",
	                    json_string(r->error && r->error->detail ? r->error->detail : ""));
	const char *bodyname = "";
	if (r->body_case != AHP__ORCH__REPLY__BODY__NOT_SET) {
		const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(
		    &ahp__orch__reply__descriptor, (unsigned)r->body_case);
		bodyname = f ? f->name : "?";
	}
	json_object_set_new(out, "body", json_string(bodyname));
	if (r->body_case == AHP__ORCH__REPLY__BODY_SUBMIT && r->submit != NULL)
		json_object_set_new(out, "run_id", json_string(r->submit->run_id));
	ahp__orch__reply__free_unpacked(r, NULL);
}

int
main(int argc, char **argv)
{
	if (argc < 3) {
		s_usage();
		return 2;
	}
	const char *endpoint = argv[1];
	int timeout_ms = 5000;
	int first = 2;
	if (strcmp(argv[2], "--timeout") == 0) {
		if (argc < 5) {
			s_usage();
			return 2;
		}
		char *end = NULL;
		long t = strtol(argv[3], &end, 10);
		if (end == argv[3] || *end != '\0' || t < 1 || t > 600000) {
			s_usage();
			return 2;
		}
		timeout_ms = (int)t;
		first = 4;
	}
	void *ctx = zmq_ctx_new();
	void *sock = zmq_socket(ctx, ZMQ_DEALER);
	int zero = 0;
	zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
	if (zmq_connect(sock, endpoint) != 0) {
		fprintf(stderr, "rawsend: connect %s: %s\n", endpoint, zmq_strerror(errno));
		return 2;
	}
	int rc = 0;
	for (int i = first; i < argc && rc == 0; i++) {
		unsigned char *buf = NULL;
		size_t len = 0;
		if (s_frame(argv[i], &buf, &len) != 0) {
			fprintf(stderr, "rawsend: bad frame spec '%.60s'\n", argv[i]);
			free(buf);
			rc = 2;
			break;
		}
		if (zmq_send(sock, buf, len, i + 1 < argc ? ZMQ_SNDMORE : 0) < 0) {
			fprintf(stderr, "rawsend: send: %s\n", zmq_strerror(errno));
			rc = 2;
		}
		free(buf);
	}
	if (rc == 0) {
		zmq_pollitem_t pi = {sock, 0, ZMQ_POLLIN, 0};
		json_t *out = json_object();
		if (zmq_poll(&pi, 1, timeout_ms) <= 0) {
			json_object_set_new(out, "reply", json_false());
			rc = 3;
		} else {
			json_object_set_new(out, "reply", json_true());
			/* Frame 1: the 16-byte header; frame 2: the body. */
			zmq_msg_t parts[4];
			int n = 0, more = 1;
			while (more) {
				zmq_msg_t m;
				zmq_msg_init(&m);
				if (zmq_msg_recv(&m, sock, 0) < 0) {
					zmq_msg_close(&m);
					break;
				}
				more = zmq_msg_more(&m);
				if (n < 4)
					parts[n++] = m;
				else
					zmq_msg_close(&m);
			}
			json_object_set_new(out, "frames", json_integer(n));
			if (n >= 1 && zmq_msg_size(&parts[0]) == 16 &&
			    memcmp(zmq_msg_data(&parts[0]), "AHP1", 4) == 0) {
				const unsigned char *h = zmq_msg_data(&parts[0]);
				uint32_t kind = 0;
				uint64_t id = 0;
				for (int i = 0; i < 4; i++)
					kind = kind << 8 | h[4 + i];
				for (int i = 0; i < 8; i++)
					id = id << 8 | h[8 + i];
				json_object_set_new(out, "kind", json_integer(kind));
				json_object_set_new(out, "request_id",
				                    json_integer((json_int_t)id));
				if (n >= 2)
					s_describe(out, kind, zmq_msg_data(&parts[1]),
					           zmq_msg_size(&parts[1]));
			}
			for (int i = 0; i < n; i++)
				zmq_msg_close(&parts[i]);
		}
		json_dumpf(out, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		json_decref(out);
	}
	zmq_close(sock);
	zmq_ctx_term(ctx);
	return rc;
}
