/* Fuzz target: servicesd's untrusted inputs — the model's arguments (svc_args_parse) and an
 * upstream's answer body (each handler's response()), then the checks, the result JSON, the
 * request a handler builds and its summary.
 *
 * Input: one selector byte, then the payload. Bit 0 picks the direction (0 = the payload is
 * the model's arguments, 1 = it is an upstream's 2xx body); the other bits pick the service
 * (index in the registry, modulo its size). Invariants: no crash or leak; every error has a
 * code and is one line of valid UTF-8 (field too); a parsed message passes
 * svc_message_check, and written with jsonpb it parses back to the same message. */
#include <string.h>

#include "ahp/jsonpb.h"
#include "ahp/text.h"
#include "fuzz.h"
#include "svc.h"

/* The selector byte and the largest arguments servicesd parses (the contract's 256 KiB;
 * larger is too_large before parsing). */
#define S_MAX_INPUT (1 + SVC_ARGS_MAX)

static int
s_one_line(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return 0;
	return ahp_utf8_valid(s, strlen(s), 0);
}

static void
s_check_error(const svc_error_t *err)
{
	FUZZ_CHECK(err->code[0] != '\0');
	FUZZ_CHECK(err->message[0] != '\0');
	FUZZ_CHECK(s_one_line(err->message));
	FUZZ_CHECK(s_one_line(err->field));
	FUZZ_CHECK(strlen(err->message) < SVC_MESSAGE_MAX);
}

/* The packed bytes of two messages are equal. */
static int
s_same(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
	size_t na = protobuf_c_message_get_packed_size(a);
	size_t nb = protobuf_c_message_get_packed_size(b);
	if (na != nb)
		return 0;
	uint8_t *pa = malloc(na ? na : 1), *pb = malloc(nb ? nb : 1);
	FUZZ_CHECK(pa != NULL && pb != NULL);
	protobuf_c_message_pack(a, pa);
	protobuf_c_message_pack(b, pb);
	int same = memcmp(pa, pb, na) == 0;
	free(pa);
	free(pb);
	return same;
}

static void
s_args(const svc_service_t *s, const uint8_t *data, size_t size)
{
	svc_error_t err;
	ProtobufCMessage *m = svc_args_parse(s, (const char *)data, size, &err);
	if (m == NULL) {
		s_check_error(&err);
		FUZZ_CHECK(strcmp(err.code, "validation") == 0 ||
		           strcmp(err.code, "too_large") == 0);
		return;
	}
	FUZZ_CHECK(svc_message_check(m, &err) == 0);
	/* What jsonpb writes for it is arguments that parse to the same message. */
	json_t *j = ahp_proto_to_json(m);
	FUZZ_CHECK(j != NULL);
	char *text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	FUZZ_CHECK(text != NULL);
	ProtobufCMessage *m2 = svc_args_parse(s, text, strlen(text), &err);
	if (m2 == NULL)
		fprintf(stderr, "own output refused: %s\n", err.message);
	FUZZ_CHECK(m2 != NULL);
	FUZZ_CHECK(s_same(m, m2));
	free(text);
	protobuf_c_message_free_unpacked(m2, NULL);

	/* The request built from validated arguments. */
	svc_http_t req;
	memset(&req, 0, sizeof req);
	if (s->handler->request(m, "http://127.0.0.1:1/base", "token", "run-1:1", &req, &err) ==
	    0) {
		FUZZ_CHECK(req.url != NULL);
		FUZZ_CHECK(strncmp(req.url, "http://127.0.0.1:1/base/", 24) == 0);
		/* Every segment is escaped: no '?', '#', space or control in the path. */
		for (const char *p = req.url; *p; p++)
			FUZZ_CHECK(*p > 0x20 && *p < 0x7f && *p != '?' && *p != '#');
		/* No dot segment that normalisation would remove. */
		for (const char *seg = strchr(req.url + 8, '/'); seg != NULL;
		     seg = strchr(seg + 1, '/')) {
			size_t n = strcspn(seg + 1, "/");
			FUZZ_CHECK(!(n > 0 && n <= 2 && strspn(seg + 1, ".") >= n));
		}
		for (int i = 0; i < req.n_headers; i++)
			FUZZ_CHECK(strpbrk(req.headers[i], "\r\n") == NULL);
	} else {
		s_check_error(&err);
	}
	svc_http_free(&req);
	protobuf_c_message_free_unpacked(m, NULL);
}

static void
s_result(const svc_service_t *s, const uint8_t *data, size_t size)
{
	svc_error_t err;
	ProtobufCMessage *m = s->handler->response(NULL, 200, data, size, &err);
	if (m == NULL) {
		s_check_error(&err);
		FUZZ_CHECK(strcmp(err.code, "bad_response") == 0);
		return;
	}
	FUZZ_CHECK(m->descriptor == s->result);
	FUZZ_CHECK(svc_message_check(m, &err) == 0);
	char sum[SVC_SUMMARY_MAX];
	s->handler->summarize(m, sum, sizeof sum);
	FUZZ_CHECK(s_one_line(sum));
	char *js = svc_result_json(m, &err);
	if (js == NULL) {
		s_check_error(&err);
		FUZZ_CHECK(strcmp(err.code, "too_large") == 0);
	} else {
		/* The result the orchestrator gets reads back as the same message. */
		ProtobufCMessage *m2 =
		    svc_result_parse(s->result, (const uint8_t *)js, strlen(js), &err);
		FUZZ_CHECK(m2 != NULL);
		FUZZ_CHECK(s_same(m, m2));
		protobuf_c_message_free_unpacked(m2, NULL);
		free(js);
	}
	protobuf_c_message_free_unpacked(m, NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t n = 0;
	if (size < 1 || size > S_MAX_INPUT)
		return 0;
	while (svc_registry[n] != NULL)
		n++;
	const svc_service_t *s = svc_registry[(data[0] >> 1) % n];
	if (data[0] & 1)
		s_result(s, data + 1, size - 1);
	else
		s_args(s, data + 1, size - 1);
	return 0;
}
