/* Unit tests for servicesd's handlers (lookup_wiki, publish_summary) and the HTTP request
 * helpers: URLs, headers, bodies, answers good and bad, summaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc.h"

extern const svc_handler_t svc_handler_lookup_wiki;
extern const svc_handler_t svc_handler_publish_summary;

static const svc_service_t *
s_svc(const char *name)
{
	const svc_service_t *s = svc_find(name, strlen(name));
	assert_non_null(s);
	return s;
}

static ProtobufCMessage *
s_args(const char *name, const char *json)
{
	svc_error_t err;
	ProtobufCMessage *m = svc_args_parse(s_svc(name), json, strlen(json), &err);
	if (m == NULL)
		fail_msg("%s: %s", json, err.message);
	return m;
}

static void
test_registry(void **state)
{
	(void)state;
	assert_ptr_equal(s_svc("lookup_wiki")->handler, &svc_handler_lookup_wiki);
	assert_int_equal(s_svc("lookup_wiki")->retry, SVC_RETRY_SAFE);
	assert_ptr_equal(s_svc("publish_summary")->handler, &svc_handler_publish_summary);
	assert_int_equal(s_svc("publish_summary")->retry, SVC_RETRY_KEYED);
	assert_string_equal(svc_handler_lookup_wiki.secret, "wiki-token");
	assert_string_equal(svc_handler_publish_summary.secret, "webhook-token");
	assert_null(svc_find("lookup", 6));
	assert_non_null(svc_find("lookup_wiki!", 11));
}

static void
test_url_join(void **state)
{
	(void)state;
	char *u = svc_url_join("http://h:1", "snippets", "a b/c", NULL);
	assert_string_equal(u, "http://h:1/snippets/a%20b%2Fc");
	free(u);
	u = svc_url_join("http://h:1/base//", "x?y#z%", "\xc3\xa9~._-", NULL);
	assert_string_equal(u, "http://h:1/base/x%3Fy%23z%25/%C3%A9~._-");
	free(u);
	/* Dot segments would be normalised away: encoded. */
	u = svc_url_join("http://h", "webhooks", "..", NULL);
	assert_string_equal(u, "http://h/webhooks/%2E%2E");
	free(u);
	u = svc_url_join("http://h", ".", "a.b", NULL);
	assert_string_equal(u, "http://h/%2E/a.b");
	free(u);
	u = svc_url_join("http://h", NULL);
	assert_string_equal(u, "http://h");
	free(u);
}

static void
test_http_headers(void **state)
{
	(void)state;
	svc_http_t h;
	memset(&h, 0, sizeof h);
	assert_int_equal(svc_http_header(&h, "Authorization: Bearer %s", "tok"), 0);
	assert_string_equal(h.headers[0], "Authorization: Bearer tok");
	/* A value with a line break would inject a header. */
	assert_int_equal(svc_http_header(&h, "Authorization: Bearer %s", "tok\r\nX-Evil: 1"), -1);
	assert_int_equal(svc_http_header(&h, "X: %s", "a\nb"), -1);
	assert_int_equal(h.n_headers, 1);
	for (int i = 1; i < SVC_HTTP_HEADERS_MAX; i++)
		assert_int_equal(svc_http_header(&h, "X-%d: y", i), 0);
	assert_int_equal(svc_http_header(&h, "X-full: y"), -1);
	assert_int_equal(h.n_headers, SVC_HTTP_HEADERS_MAX);
	h.url = strdup("http://x");
	svc_http_free(&h);
	assert_int_equal(h.n_headers, 0);
	assert_null(h.url);
	assert_null(h.headers[0]);
	svc_http_free(&h); /* twice is fine */
}

static void
test_lookup_request(void **state)
{
	(void)state;
	svc_error_t err;
	svc_http_t req;
	memset(&req, 0, sizeof req);
	ProtobufCMessage *a = s_args("lookup_wiki", "{\"topic\": \"a b.c\"}");
	assert_int_equal(svc_handler_lookup_wiki.request(a, "http://127.0.0.1:8089", "w-tok",
	                                                 "run-1:3", &req, &err),
	                 0);
	assert_string_equal(req.method, "GET");
	assert_string_equal(req.url, "http://127.0.0.1:8089/snippets/a%20b.c");
	assert_null(req.body);
	assert_int_equal(req.n_headers, 2);
	assert_string_equal(req.headers[0], "Accept: application/json");
	assert_string_equal(req.headers[1], "Authorization: Bearer w-tok");
	svc_http_free(&req);
	protobuf_c_message_free_unpacked(a, NULL);

	/* The escaping of a topic with '/' (the handler gets validated args, so built by hand). */
	Ahp__Svc__LookupWikiArgs raw = AHP__SVC__LOOKUP_WIKI_ARGS__INIT;
	raw.topic = "a b/c";
	assert_int_equal(
	    svc_handler_lookup_wiki.request(&raw.base, "http://h", NULL, NULL, &req, &err), 0);
	assert_string_equal(req.url, "http://h/snippets/a%20b%2Fc");
	assert_int_equal(req.n_headers, 1); /* no token: no Authorization */
	svc_http_free(&req);

	/* A token with a newline is refused, not sent. */
	assert_int_equal(
	    svc_handler_lookup_wiki.request(&raw.base, "http://h", "t\nX: y", NULL, &req, &err),
	    -1);
	assert_string_equal(err.code, "internal");
	svc_http_free(&req);
}

static void
test_publish_request(void **state)
{
	(void)state;
	svc_error_t err;
	svc_http_t req;
	memset(&req, 0, sizeof req);
	ProtobufCMessage *a =
	    s_args("publish_summary",
	           "{\"webhook_id\": \"ops.team-1\", \"content\": \"Done: \\\"x\\\"\\n\"}");
	assert_int_equal(svc_handler_publish_summary.request(a, "https://hooks.example/v1", "b-tok",
	                                                     "run-1:7", &req, &err),
	                 0);
	assert_string_equal(req.method, "POST");
	assert_string_equal(req.url, "https://hooks.example/v1/webhooks/ops.team-1");
	assert_string_equal(req.body, "{\"content\":\"Done: \\\"x\\\"\\n\"}");
	assert_int_equal(req.body_len, strlen(req.body));
	assert_int_equal(req.n_headers, 4);
	assert_string_equal(req.headers[0], "Content-Type: application/json");
	assert_string_equal(req.headers[1], "Accept: application/json");
	assert_string_equal(req.headers[2], "Authorization: Bot b-tok");
	assert_string_equal(req.headers[3], "Idempotency-Key: run-1:7");
	svc_http_free(&req);
	protobuf_c_message_free_unpacked(a, NULL);
}

/* A dot-only path segment is refused before any request is built: "%2E%2E" is ".." to an
 * upstream that decodes and normalises paths, so webhook_id ".." would post, with the
 * token, to the webhook base (found in review; the pattern alone allows it). */
static void
test_dot_segments(void **state)
{
	(void)state;
	const char *ids[] = {".", "..", "..."};
	for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
		char json[128];
		snprintf(json, sizeof json, "{\"webhook_id\": \"%s\", \"content\": \"x\"}", ids[i]);
		ProtobufCMessage *a = s_args("publish_summary", json);
		svc_error_t err;
		svc_http_t req;
		memset(&req, 0, sizeof req);
		assert_int_equal(
		    svc_handler_publish_summary.request(a, "http://h", "tok", "r:1", &req, &err),
		    -1);
		assert_string_equal(err.code, "validation");
		assert_string_equal(err.field, "webhook_id");
		assert_null(req.url);
		assert_int_equal(req.n_headers, 0);
		svc_http_free(&req);
		protobuf_c_message_free_unpacked(a, NULL);
	}
	ProtobufCMessage *a = s_args("lookup_wiki", "{\"topic\": \"..\"}");
	svc_error_t err;
	svc_http_t req;
	memset(&req, 0, sizeof req);
	assert_int_equal(svc_handler_lookup_wiki.request(a, "http://h", "tok", "r:1", &req, &err),
	                 -1);
	assert_string_equal(err.field, "topic");
	svc_http_free(&req);
	protobuf_c_message_free_unpacked(a, NULL);
}

static ProtobufCMessage *
s_response(const svc_handler_t *h, const char *body, svc_error_t *err)
{
	return h->response(NULL, 200, (const uint8_t *)body, strlen(body), err);
}

static void
s_bad(const svc_handler_t *h, const char *body, const char *field, const char *message)
{
	svc_error_t err;
	ProtobufCMessage *m = s_response(h, body, &err);
	if (m != NULL)
		fail_msg("accepted: %s", body);
	assert_string_equal(err.code, "bad_response");
	assert_int_equal(err.retryable, 0);
	assert_string_equal(err.field, field);
	size_t ml = strlen(message);
	if (message[ml - 1] == '*')
		assert_int_equal(strncmp(err.message, message, ml - 1), 0);
	else
		assert_string_equal(err.message, message);
}

static void
test_lookup_response(void **state)
{
	(void)state;
	svc_error_t err;
	char sum[SVC_SUMMARY_MAX];
	const svc_handler_t *h = &svc_handler_lookup_wiki;
	ProtobufCMessage *m = s_response(
	    h,
	    "{\"topic\": \"durability\", \"snippets\": [{\"url\": \"https://wiki/a\", \"excerpt\": "
	    "\"fsync\"}, {\"url\": \"https://wiki/b\", \"excerpt\": \"WAL\", \"rank\": 2}], \"v\": "
	    "1}",
	    &err);
	assert_non_null(m);
	assert_int_equal(svc_message_check(m, &err), 0);
	h->summarize(m, sum, sizeof sum);
	assert_string_equal(sum, "2 snippets");
	protobuf_c_message_free_unpacked(m, NULL);

	m = s_response(
	    h, "{\"topic\": \"replay\", \"snippets\": [{\"url\": \"u\", \"excerpt\": \"e\"}]}",
	    &err);
	assert_non_null(m);
	h->summarize(m, sum, sizeof sum);
	assert_string_equal(sum, "1 snippet");
	protobuf_c_message_free_unpacked(m, NULL);

	m = s_response(h, "{\"topic\": \"nothing\", \"snippets\": []}", &err);
	assert_non_null(m);
	h->summarize(m, sum, sizeof sum);
	assert_string_equal(sum, "0 snippets");
	protobuf_c_message_free_unpacked(m, NULL);

	s_bad(h, "", "", "the service's answer is not valid JSON: *");
	s_bad(h, "<html>oops</html>", "", "the service's answer is not valid JSON: *");
	s_bad(h, "[]", "", "the service's answer is not a JSON object (got array)");
	s_bad(h, "{\"snippets\": []}", "topic",
	      "the service's answer: topic: required field missing");
	s_bad(h, "{\"topic\": \"x\", \"snippets\": {}}", "snippets",
	      "the service's answer: snippets: expected array, got object");
	s_bad(h, "{\"topic\": \"x\", \"snippets\": [{\"url\": \"u\"}]}", "snippets[0].excerpt",
	      "the service's answer: snippets[0].excerpt: required field missing");
	s_bad(h, "{\"topic\": \"x\", \"snippets\": [{\"url\": \"u\", \"excerpt\": \"e\"}, 3]}",
	      "snippets[1]", "the service's answer: snippets[1]: expected object, got number");

	/* 101 snippets: too many items. */
	size_t cap = 101 * 40 + 64;
	char *big = malloc(cap);
	assert_non_null(big);
	size_t o = (size_t)snprintf(big, cap, "{\"topic\": \"x\", \"snippets\": [");
	for (int i = 0; i < 101; i++)
		o += (size_t)snprintf(big + o, cap - o, "%s{\"url\": \"u\", \"excerpt\": \"e\"}",
		                      i ? "," : "");
	snprintf(big + o, cap - o, "]}");
	s_bad(h, big, "snippets",
	      "the service's answer: snippets: must have at most 100 items (maxItems), got 101");
	free(big);

	/* Over SVC_BODY_MAX before it is parsed. */
	m = h->response(NULL, 200, (const uint8_t *)"x", SVC_BODY_MAX + 1, &err);
	assert_null(m);
	assert_string_equal(err.code, "bad_response");
	assert_string_equal(err.message,
	                    "the service's answer is 1048577 bytes; at most 1048576 are accepted");
}

static void
test_publish_response(void **state)
{
	(void)state;
	svc_error_t err;
	char sum[SVC_SUMMARY_MAX];
	const svc_handler_t *h = &svc_handler_publish_summary;
	ProtobufCMessage *m =
	    s_response(h, "{\"message_id\": \"4f12a87bc394\", \"posted_at\": 1764495000}", &err);
	assert_non_null(m);
	h->summarize(m, sum, sizeof sum);
	assert_string_equal(sum, "message_id=4f12a87bc394");
	char *js = svc_result_json(m, &err);
	assert_string_equal(js, "{\"message_id\":\"4f12a87bc394\",\"posted_at\":1764495000}");
	free(js);
	protobuf_c_message_free_unpacked(m, NULL);

	s_bad(h, "{\"message_id\": \"4f12a87bc394\"}", "posted_at",
	      "the service's answer: posted_at: required field missing");
	s_bad(h, "{\"message_id\": \"4f12a87bc394\", \"posted_at\": \"soon\"}", "posted_at",
	      "the service's answer: posted_at: expected integer, got string \"soon\"");
	s_bad(h, "{\"message_id\": \"4f12a87bc394\", \"posted_at\": 1.5}", "posted_at",
	      "the service's answer: posted_at: expected integer, got fractional number 1.5");
	s_bad(h, "{\"message_id\": \"4f12a87bc394\", \"posted_at\": -1}", "posted_at",
	      "the service's answer: posted_at: must be at least 0 (minimum), got -1");
	s_bad(h, "{\"message_id\": \"\\u001b[2J\", \"posted_at\": 1}", "message_id",
	      "the service's answer: message_id: must match the pattern ^[0-9a-f]{12}$, got "
	      "\"\\x1b[2J\"");
	s_bad(h, "{\"message_id\": 7, \"posted_at\": 1}", "message_id",
	      "the service's answer: message_id: expected string, got number");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_registry),        cmocka_unit_test(test_url_join),
	    cmocka_unit_test(test_http_headers),    cmocka_unit_test(test_lookup_request),
	    cmocka_unit_test(test_publish_request), cmocka_unit_test(test_dot_segments),
	    cmocka_unit_test(test_lookup_response), cmocka_unit_test(test_publish_response),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
