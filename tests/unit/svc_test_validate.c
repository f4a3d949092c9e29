/* Unit tests for servicesd's constraints table and validation: arguments -> messages, each
 * validation kind naming its field and rule, results, JSON Schemas and the exec_service tool. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/jsonpb.h"
#include "ahp/text.h"
#include "svc.h"

static const svc_service_t *
s_svc(const char *name)
{
	const svc_service_t *s = svc_find(name, strlen(name));
	assert_non_null(s);
	return s;
}

/* Parses json for service name and expects the error code, field and message. */
static void
s_expect(const char *name, const char *json, size_t len, const char *code, const char *field,
         const char *message)
{
	svc_error_t err;
	memset(&err, 0x55, sizeof err);
	ProtobufCMessage *m = svc_args_parse(s_svc(name), json, len, &err);
	if (m != NULL)
		fail_msg("accepted: %s", json);
	assert_string_equal(err.code, code);
	assert_string_equal(err.field, field);
	/* A message ending in '*' is a prefix: the rest is jansson's text, which varies with
	 * its version. */
	size_t ml = strlen(message);
	if (ml > 0 && message[ml - 1] == '*') {
		if (strncmp(err.message, message, ml - 1) != 0)
			fail_msg("\"%s\" does not start with \"%.*s\"", err.message, (int)(ml - 1),
			         message);
	} else {
		assert_string_equal(err.message, message);
	}
	assert_int_equal(err.retryable, 0);
	assert_int_equal(err.http_status, 0);
	assert_true(ahp_utf8_valid(err.message, strlen(err.message), 0));
}

#define EXPECT(name, json, code, field, message)                                                   \
	s_expect(name, json, strlen(json), code, field, message)

static void
test_init(void **state)
{
	(void)state;
	char err[256] = "x";
	assert_int_equal(svc_constraints_init(err, sizeof err), 0);
	assert_string_equal(err, "");
	/* Idempotent. */
	assert_int_equal(svc_constraints_init(err, sizeof err), 0);
	const svc_constraint_t *c =
	    svc_constraint_find(&ahp__svc__publish_summary_args__descriptor, "webhook_id");
	assert_non_null(c);
	assert_string_equal(c->pattern, "^[A-Za-z0-9._-]{1,64}$");
	assert_non_null(svc_constraint_regex(c));
	assert_null(svc_constraint_find(&ahp__svc__publish_summary_args__descriptor, "nope"));
	c = svc_constraint_find(&ahp__svc__publish_summary_args__descriptor, "content");
	assert_non_null(c);
	assert_null(svc_constraint_regex(c));
	/* Every field of every registry message has an entry with a description. */
	for (int i = 0; svc_registry[i] != NULL; i++) {
		const ProtobufCMessageDescriptor *d[2] = {svc_registry[i]->args,
		                                          svc_registry[i]->result};
		for (int k = 0; k < 2; k++)
			for (unsigned f = 0; f < d[k]->n_fields; f++) {
				c = svc_constraint_find(d[k], d[k]->fields[f].name);
				assert_non_null(c);
				assert_non_null(c->description);
			}
	}
}

/* The daemon's table with entry i replaced by e (or appended when i is the end), checked. */
static void
s_bad_table(size_t i, svc_constraint_t e, const char *want)
{
	svc_constraint_t t[64];
	size_t n = 0;
	char err[256];
	while (svc_constraints[n].message != NULL)
		n++;
	assert_true(n + 2 < 64);
	memcpy(t, svc_constraints, (n + 1) * sizeof t[0]);
	t[i] = e;
	if (i == n)
		t[n + 1] = svc_constraints[n];
	assert_int_equal(svc_constraints_check(t, err, sizeof err), -1);
	assert_string_equal(err, want);
}

static void
test_bad_tables(void **state)
{
	(void)state;
	char err[256];
	size_t n = 0;
	while (svc_constraints[n].message != NULL)
		n++;
	assert_int_equal(svc_constraints_check(svc_constraints, err, sizeof err), 0);
	/* Entry 0 is LookupWikiArgs.topic, 8 PublishSummaryResult.posted_at. */
	assert_string_equal(svc_constraints[0].field, "topic");
	assert_string_equal(svc_constraints[8].field, "posted_at");
	svc_constraint_t e = svc_constraints[0];

	e.message = "ahp.svc.Nope";
	s_bad_table(n, e, "constraints: no message ahp.svc.Nope in the registry");
	e = svc_constraints[0];
	e.field = "subject";
	s_bad_table(n, e, "constraints: ahp.svc.LookupWikiArgs has no field subject");
	e = svc_constraints[0];
	s_bad_table(n, e, "constraints: ahp.svc.LookupWikiArgs.topic is listed twice");
	e.description = "";
	s_bad_table(0, e, "constraints: ahp.svc.LookupWikiArgs.topic has no description");
	e = svc_constraints[0];
	e.pattern = "[a-z]+";
	s_bad_table(0, e,
	            "constraints: ahp.svc.LookupWikiArgs.topic: the pattern is not anchored "
	            "with ^ and $");
	e.pattern = "^[a-z$";
	s_bad_table(0, e,
	            "constraints: ahp.svc.LookupWikiArgs.topic: pattern ^[a-z$: Unmatched [, "
	            "[^, [:, [., or [=");
	e = svc_constraints[0];
	e.min_length = 10;
	e.max_length = 5;
	s_bad_table(0, e,
	            "constraints: ahp.svc.LookupWikiArgs.topic: min_length 10 is over "
	            "max_length 5");
	e = svc_constraints[0];
	e.minimum = 1;
	e.maximum = 2;
	s_bad_table(0, e,
	            "constraints: ahp.svc.LookupWikiArgs.topic: a range needs an integer field");
	e = svc_constraints[0];
	e.max_items = 3;
	s_bad_table(0, e,
	            "constraints: ahp.svc.LookupWikiArgs.topic: max_items needs a repeated field");
	e = svc_constraints[8];
	e.max_length = 3;
	s_bad_table(8, e,
	            "constraints: ahp.svc.PublishSummaryResult.posted_at: pattern and lengths "
	            "need a string field");
	e = svc_constraints[8];
	e.minimum = 5;
	e.maximum = 4;
	s_bad_table(8, e,
	            "constraints: ahp.svc.PublishSummaryResult.posted_at: the range 5..4 does "
	            "not fit the field's type");
	/* A field without an entry (its description). */
	e = svc_constraints[n - 1];
	e.field = "message_id";
	s_bad_table(8, e, "constraints: ahp.svc.PublishSummaryResult.message_id is listed twice");
	svc_constraint_t t[64];
	memcpy(t, svc_constraints, (n + 1) * sizeof t[0]);
	t[8] = t[n];
	assert_int_equal(svc_constraints_check(t, err, sizeof err), -1);
	assert_string_equal(err, "constraints: ahp.svc.PublishSummaryResult.posted_at has no entry "
	                         "(its description)");
}

static void
test_args_ok(void **state)
{
	(void)state;
	svc_error_t err;
	const char *j = "{\"topic\": \"durability and replay_1.0\"}";
	ProtobufCMessage *m = svc_args_parse(s_svc("lookup_wiki"), j, strlen(j), &err);
	assert_non_null(m);
	assert_string_equal(((Ahp__Svc__LookupWikiArgs *)m)->topic, "durability and replay_1.0");
	protobuf_c_message_free_unpacked(m, NULL);

	/* 4000 characters of 3 bytes each: lengths count code points, not bytes. */
	char *big = malloc(4000 * 3 + 64);
	assert_non_null(big);
	int o = snprintf(big, 64, "{\"webhook_id\": \"team-1.a_b\", \"content\": \"");
	for (int i = 0; i < 4000; i++) {
		memcpy(big + o, "\xe2\x82\xac", 3);
		o += 3;
	}
	memcpy(big + o, "\"}", 3);
	m = svc_args_parse(s_svc("publish_summary"), big, strlen(big), &err);
	assert_non_null(m);
	Ahp__Svc__PublishSummaryArgs *a = (Ahp__Svc__PublishSummaryArgs *)m;
	assert_string_equal(a->webhook_id, "team-1.a_b");
	assert_int_equal(strlen(a->content), 12000);
	protobuf_c_message_free_unpacked(m, NULL);
	/* One more character is one too many. */
	memcpy(big + o, "x\"}", 4);
	EXPECT("publish_summary", big, "validation", "content",
	       "content: must be at most 4000 characters long (maxLength), got 4001");
	free(big);
}

static void
test_args_errors(void **state)
{
	(void)state;
	/* unknown field */
	EXPECT("lookup_wiki", "{\"topic\": \"x\", \"limit\": 3}", "validation", "limit",
	       "limit: unknown field (known: topic)");
	/* wrong type */
	EXPECT("lookup_wiki", "{\"topic\": 5}", "validation", "topic",
	       "topic: expected string, got number");
	EXPECT("publish_summary", "{\"webhook_id\": [\"a\"], \"content\": \"x\"}", "validation",
	       "webhook_id", "webhook_id: expected string, got array");
	/* missing required (absent, or null = absent) */
	EXPECT("lookup_wiki", "{}", "validation", "topic", "topic: required field missing");
	EXPECT("publish_summary", "{\"webhook_id\": \"a\", \"content\": null}", "validation",
	       "content", "content: required field missing");
	/* pattern */
	EXPECT("publish_summary", "{\"webhook_id\": \"a/b\", \"content\": \"hi\"}", "validation",
	       "webhook_id",
	       "webhook_id: must match the pattern ^[A-Za-z0-9._-]{1,64}$, got \"a/b\"");
	EXPECT("lookup_wiki", "{\"topic\": \"caf\\u00e9\"}", "validation", "topic",
	       "topic: must match the pattern ^[A-Za-z0-9 ._-]{1,128}$, got \"caf\xc3\xa9\"");
	/* control characters in quoted values are escaped: the message stays one line */
	EXPECT("lookup_wiki", "{\"topic\": \"a\\nb\"}", "validation", "topic",
	       "topic: must match the pattern ^[A-Za-z0-9 ._-]{1,128}$, got \"a\\x0ab\"");
	/* too short / too long */
	EXPECT("publish_summary", "{\"webhook_id\": \"\", \"content\": \"hi\"}", "validation",
	       "webhook_id", "webhook_id: must be at least 1 character long (minLength), got 0");
	char j[256];
	snprintf(j, sizeof j, "{\"webhook_id\": \"%065d\", \"content\": \"hi\"}", 0);
	EXPECT("publish_summary", j, "validation", "webhook_id",
	       "webhook_id: must be at most 64 characters long (maxLength), got 65");
	/* not an object */
	EXPECT("lookup_wiki", "[\"durability\"]", "validation", "",
	       "the arguments must be a JSON object, got array");
	EXPECT("lookup_wiki", "\"durability\"", "validation", "",
	       "the arguments must be a JSON object, got string");
	EXPECT("lookup_wiki", "null", "validation", "",
	       "the arguments must be a JSON object, got null");
	/* not JSON (the rest of the message is jansson's: it names the place) */
	EXPECT("lookup_wiki", "{\"topic\": ", "validation", "",
	       "the arguments are not valid JSON: *");
	EXPECT("lookup_wiki", "", "validation", "", "the arguments are not valid JSON: *");
	EXPECT("lookup_wiki", "{\"topic\": \"a\", \"topic\": \"b\"}", "validation", "",
	       "the arguments are not valid JSON: duplicate object key*");
	/* a NUL inside a string is refused by the parser */
	EXPECT("lookup_wiki", "{\"topic\": \"a\\u0000b\"}", "validation", "",
	       "the arguments are not valid JSON: \\u0000 is not allowed*");
	/* invalid UTF-8 */
	s_expect("lookup_wiki", "{\"topic\": \"\xff\"}", 14, "validation", "",
	         "the arguments are not valid JSON: *");
}

static void
test_args_too_large(void **state)
{
	(void)state;
	size_t n = SVC_ARGS_MAX + 1;
	char *big = malloc(n);
	assert_non_null(big);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	s_expect("lookup_wiki", big, n, "too_large", "",
	         "the arguments are 262145 bytes; at most 262144 bytes are accepted");
	/* At the limit it is parsed (and then the field is missing). */
	big[n - 2] = '}';
	s_expect("lookup_wiki", big, n - 1, "validation", "topic", "topic: required field missing");
	free(big);
}

/* svc_message_check on results: items, nested paths, ranges. */
static void
test_message_check(void **state)
{
	(void)state;
	svc_error_t err;
	Ahp__Svc__LookupWikiResult r = AHP__SVC__LOOKUP_WIKI_RESULT__INIT;
	Ahp__Svc__WikiSnippet sn[101];
	Ahp__Svc__WikiSnippet *ptr[101];
	for (int i = 0; i < 101; i++) {
		ahp__svc__wiki_snippet__init(&sn[i]);
		sn[i].url = "https://wiki.example/x";
		sn[i].excerpt = "text";
		ptr[i] = &sn[i];
	}
	r.topic = "durability";
	r.snippets = ptr;
	r.n_snippets = 100;
	assert_int_equal(svc_message_check(&r.base, &err), 0);
	r.n_snippets = 101;
	assert_int_equal(svc_message_check(&r.base, &err), -1);
	assert_string_equal(err.code, "validation");
	assert_string_equal(err.field, "snippets");
	assert_string_equal(err.message,
	                    "snippets: must have at most 100 items (maxItems), got 101");

	r.n_snippets = 3;
	char url[2050];
	memset(url, 'u', 2049);
	url[2049] = '\0';
	sn[2].url = url;
	assert_int_equal(svc_message_check(&r.base, &err), -1);
	assert_string_equal(err.field, "snippets[2].url");
	assert_string_equal(
	    err.message, "snippets[2].url: must be at most 2048 characters long (maxLength), got "
	                 "2049");
	url[2048] = '\0';
	assert_int_equal(svc_message_check(&r.base, &err), 0);
	/* Invalid UTF-8 in any string (a message from elsewhere than jansson). */
	sn[1].excerpt = "bad \xc3";
	assert_int_equal(svc_message_check(&r.base, &err), -1);
	assert_string_equal(err.field, "snippets[1].excerpt");
	assert_string_equal(err.message, "snippets[1].excerpt: is not valid UTF-8");

	Ahp__Svc__PublishSummaryResult p = AHP__SVC__PUBLISH_SUMMARY_RESULT__INIT;
	p.message_id = "4f12a87bc394";
	p.posted_at = 253402300799;
	assert_int_equal(svc_message_check(&p.base, &err), 0);
	p.posted_at = 253402300800;
	assert_int_equal(svc_message_check(&p.base, &err), -1);
	assert_string_equal(err.field, "posted_at");
	assert_string_equal(err.message,
	                    "posted_at: must be at most 253402300799 (maximum), got 253402300800");
	p.posted_at = -1;
	assert_int_equal(svc_message_check(&p.base, &err), -1);
	assert_string_equal(err.message, "posted_at: must be at least 0 (minimum), got -1");
	p.posted_at = 0;
	p.message_id = "4F12A87BC394";
	assert_int_equal(svc_message_check(&p.base, &err), -1);
	assert_string_equal(err.field, "message_id");
	assert_string_equal(
	    err.message, "message_id: must match the pattern ^[0-9a-f]{12}$, got \"4F12A87BC394\"");
}

/* Upstream answers: extra members dropped at every level, wrong types bad_response. */
static void
test_result_parse(void **state)
{
	(void)state;
	svc_error_t err;
	const char *b = "{\"topic\": \"durability\", \"took_ms\": 3, \"snippets\": [{\"url\": "
	                "\"https://w/a\", \"excerpt\": \"A\", \"score\": 0.9}]}";
	ProtobufCMessage *m = svc_result_parse(&ahp__svc__lookup_wiki_result__descriptor,
	                                       (const uint8_t *)b, strlen(b), &err);
	assert_non_null(m);
	Ahp__Svc__LookupWikiResult *r = (Ahp__Svc__LookupWikiResult *)m;
	assert_int_equal(r->n_snippets, 1);
	assert_string_equal(r->snippets[0]->excerpt, "A");
	char *js = svc_result_json(m, &err);
	assert_non_null(js);
	assert_string_equal(js, "{\"topic\":\"durability\",\"snippets\":[{\"url\":\"https://w/"
	                        "a\",\"excerpt\":\"A\"}]}");
	free(js);
	protobuf_c_message_free_unpacked(m, NULL);

	b = "{\"topic\": \"x\", \"snippets\": [{\"url\": 3, \"excerpt\": \"A\"}]}";
	m = svc_result_parse(&ahp__svc__lookup_wiki_result__descriptor, (const uint8_t *)b,
	                     strlen(b), &err);
	assert_null(m);
	assert_string_equal(err.code, "bad_response");
	assert_string_equal(err.field, "snippets[0].url");
	assert_string_equal(err.message,
	                    "the service's answer: snippets[0].url: expected string, got number");
	assert_int_equal(err.retryable, 0);

	b = "{\"message_id\": \"zz\", \"posted_at\": 1}";
	m = svc_result_parse(&ahp__svc__publish_summary_result__descriptor, (const uint8_t *)b,
	                     strlen(b), &err);
	assert_null(m);
	assert_string_equal(err.code, "bad_response");
	assert_string_equal(err.field, "message_id");
	assert_string_equal(err.message, "the service's answer: message_id: must match the "
	                                 "pattern ^[0-9a-f]{12}$, got \"zz\"");
}

/* A valid result can still be too large to send back: 100 excerpts of 4000 control
 * characters are 2.4 MB of JSON escapes. */
static void
test_result_too_large(void **state)
{
	(void)state;
	svc_error_t err;
	Ahp__Svc__LookupWikiResult r = AHP__SVC__LOOKUP_WIKI_RESULT__INIT;
	Ahp__Svc__WikiSnippet sn[100];
	Ahp__Svc__WikiSnippet *ptr[100];
	char *ex = malloc(4001);
	assert_non_null(ex);
	memset(ex, 1, 4000);
	ex[4000] = '\0';
	for (int i = 0; i < 100; i++) {
		ahp__svc__wiki_snippet__init(&sn[i]);
		sn[i].url = "u";
		sn[i].excerpt = ex;
		ptr[i] = &sn[i];
	}
	r.topic = "x";
	r.snippets = ptr;
	r.n_snippets = 100;
	assert_int_equal(svc_message_check(&r.base, &err), 0);
	assert_null(svc_result_json(&r.base, &err));
	assert_string_equal(err.code, "too_large");
	assert_string_equal(err.message,
	                    "the result is 2402526 bytes as JSON; at most 524288 are returned");
	r.n_snippets = 20; /* 480 KB */
	char *js = svc_result_json(&r.base, &err);
	assert_non_null(js);
	free(js);
	free(ex);
}

static void
test_schema(void **state)
{
	(void)state;
	json_t *s = svc_schema(&ahp__svc__publish_summary_args__descriptor);
	assert_non_null(s);
	json_t *wid = json_object_get(json_object_get(s, "properties"), "webhook_id");
	assert_string_equal(json_string_value(json_object_get(wid, "type")), "string");
	assert_string_equal(json_string_value(json_object_get(wid, "pattern")),
	                    "^[A-Za-z0-9._-]{1,64}$");
	assert_int_equal(json_integer_value(json_object_get(wid, "maxLength")), 64);
	assert_non_null(json_object_get(wid, "description"));
	json_t *content = json_object_get(json_object_get(s, "properties"), "content");
	assert_int_equal(json_integer_value(json_object_get(content, "minLength")), 1);
	assert_int_equal(json_integer_value(json_object_get(content, "maxLength")), 4000);
	json_t *want = json_pack("[s,s]", "webhook_id", "content");
	assert_true(json_equal(json_object_get(s, "required"), want));
	json_decref(want);
	assert_true(json_is_false(json_object_get(s, "additionalProperties")));
	json_decref(s);

	s = svc_schema(&ahp__svc__lookup_wiki_result__descriptor);
	json_t *sn = json_object_get(json_object_get(s, "properties"), "snippets");
	assert_string_equal(json_string_value(json_object_get(sn, "type")), "array");
	assert_int_equal(json_integer_value(json_object_get(sn, "maxItems")), 100);
	json_t *url =
	    json_object_get(json_object_get(json_object_get(sn, "items"), "properties"), "url");
	assert_int_equal(json_integer_value(json_object_get(url, "maxLength")), 2048);
	assert_non_null(json_object_get(url, "description"));
	json_decref(s);

	s = svc_schema(&ahp__svc__publish_summary_result__descriptor);
	json_t *at = json_object_get(json_object_get(s, "properties"), "posted_at");
	assert_int_equal(json_integer_value(json_object_get(at, "minimum")), 0);
	assert_int_equal(json_integer_value(json_object_get(at, "maximum")), 253402300799LL);
	want = json_pack("[s,s]", "message_id", "posted_at");
	assert_true(json_equal(json_object_get(s, "required"), want));
	json_decref(want);
	json_decref(s);
}

static void
test_tool_definition(void **state)
{
	(void)state;
	char *only_lookup[] = {"lookup_wiki", "no_such_service", "lookup_wiki"};
	json_t *t = svc_tool_definition(only_lookup, 3);
	assert_non_null(t);
	assert_string_equal(json_string_value(json_object_get(t, "type")), "function");
	json_t *fn = json_object_get(t, "function");
	assert_string_equal(json_string_value(json_object_get(fn, "name")), "exec_service");
	const char *desc = json_string_value(json_object_get(fn, "description"));
	assert_non_null(strstr(desc, "lookup_wiki: Look up wiki snippets"));
	assert_non_null(strstr(desc, "\"pattern\":\"^[A-Za-z0-9 ._-]{1,128}$\""));
	assert_non_null(strstr(desc, "\nresult: {\"type\":\"object\""));
	assert_null(strstr(desc, "publish_summary"));
	assert_null(strstr(desc, "no_such_service"));
	/* Listed once. */
	assert_null(strstr(strstr(desc, "lookup_wiki:") + 1, "lookup_wiki:"));
	json_t *params = json_object_get(fn, "parameters");
	json_t *want = json_pack("{s:s,s:s,s:[s]}", "type", "string", "description",
	                         "The service to call.", "enum", "lookup_wiki");
	assert_true(json_equal(
	    json_object_get(json_object_get(params, "properties"), "service_name"), want));
	json_decref(want);
	want = json_pack("[s,s]", "service_name", "args");
	assert_true(json_equal(json_object_get(params, "required"), want));
	json_decref(want);
	char *dump = json_dumps(t, JSON_COMPACT);
	assert_null(strstr(dump, "publish_summary"));
	free(dump);
	json_decref(t);

	char *both[] = {"lookup_wiki", "publish_summary"};
	t = svc_tool_definition(both, 2);
	desc = json_string_value(json_object_get(json_object_get(t, "function"), "description"));
	assert_non_null(strstr(desc, "\n\nlookup_wiki: "));
	assert_non_null(strstr(desc, "\n\npublish_summary: Publish a summary"));
	assert_non_null(strstr(desc, "\"pattern\":\"^[A-Za-z0-9._-]{1,64}$\""));
	assert_non_null(strstr(desc, "\"pattern\":\"^[0-9a-f]{12}$\""));
	json_t *e = json_object_get(
	    json_object_get(
	        json_object_get(json_object_get(json_object_get(t, "function"), "parameters"),
	                        "properties"),
	        "service_name"),
	    "enum");
	assert_int_equal(json_array_size(e), 2);
	json_decref(t);

	t = svc_tool_definition(NULL, 0);
	fn = json_object_get(t, "function");
	assert_string_equal(json_string_value(json_object_get(fn, "description")),
	                    "No services are currently enabled for this agent.");
	json_t *name = json_object_get(
	    json_object_get(json_object_get(fn, "parameters"), "properties"), "service_name");
	assert_non_null(name);
	assert_null(json_object_get(name, "enum"));
	json_decref(t);
}

/* A parsed message written with jsonpb parses back to the same message. */
static void
test_round_trip(void **state)
{
	(void)state;
	svc_error_t err;
	const char *j = "{\"content\": \"line\\n\\u00e9\", \"webhook_id\": \"ops\"}";
	ProtobufCMessage *m = svc_args_parse(s_svc("publish_summary"), j, strlen(j), &err);
	assert_non_null(m);
	char *out = svc_result_json(m, &err);
	assert_string_equal(out, "{\"webhook_id\":\"ops\",\"content\":\"line\\n\xc3\xa9\"}");
	ProtobufCMessage *m2 = svc_args_parse(s_svc("publish_summary"), out, strlen(out), &err);
	assert_non_null(m2);
	char *out2 = svc_result_json(m2, &err);
	assert_string_equal(out, out2);
	free(out);
	free(out2);
	protobuf_c_message_free_unpacked(m, NULL);
	protobuf_c_message_free_unpacked(m2, NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_init),           cmocka_unit_test(test_bad_tables),
	    cmocka_unit_test(test_args_ok),        cmocka_unit_test(test_args_errors),
	    cmocka_unit_test(test_args_too_large), cmocka_unit_test(test_message_check),
	    cmocka_unit_test(test_result_parse),   cmocka_unit_test(test_result_too_large),
	    cmocka_unit_test(test_schema),         cmocka_unit_test(test_tool_definition),
	    cmocka_unit_test(test_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
