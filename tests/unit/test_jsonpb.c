/* Unit tests for JSON <-> protobuf conversion: round trips, accepted forms, each error kind. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/jsonpb.h"
#include "testmsg.pb-c.h"
#include "testmsg2.pb-c.h"

/* Packs a message into a fresh buffer; the protobuf encoding is the
 * yardstick for "same message". */
static uint8_t *
s_pack(const ProtobufCMessage *m, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(m);
	uint8_t *b = malloc(*len ? *len : 1);
	assert_non_null(b);
	assert_int_equal(protobuf_c_message_pack(m, b), *len);
	return b;
}

static void
s_assert_same(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
	size_t la, lb;
	uint8_t *pa = s_pack(a, &la);
	uint8_t *pb = s_pack(b, &lb);
	assert_int_equal(la, lb);
	assert_memory_equal(pa, pb, la);
	free(pa);
	free(pb);
}

static ProtobufCMessage *
s_parse(const ProtobufCMessageDescriptor *d, const char *text, char *err, size_t errlen)
{
	json_error_t je;
	json_t *j = json_loads(text, 0, &je);
	assert_non_null(j);
	ProtobufCMessage *m = ahp_json_to_proto(d, j, err, errlen);
	json_decref(j);
	return m;
}

/* Expects text to be refused with exactly / containing the message. */
static void
s_expect_err(const ProtobufCMessageDescriptor *d, const char *text, const char *want, int exact)
{
	char err[512] = "";
	ProtobufCMessage *m = s_parse(d, text, err, sizeof err);
	if (m != NULL)
		protobuf_c_message_free_unpacked(m, NULL);
	assert_null(m);
	if (exact)
		assert_string_equal(err, want);
	else if (strstr(err, want) == NULL)
		fail_msg("error \"%s\" does not contain \"%s\"", err, want);
}

static void
test_scalars_roundtrip(void **state)
{
	(void)state;
	static uint8_t bin[] = {0x00, 0xff, 0x10, 'a', 0x80};
	Ahp__Test__Scalars s = AHP__TEST__SCALARS__INIT;
	s.i32 = INT32_MIN;
	s.i64 = INT64_MAX;
	s.u32 = UINT32_MAX;
	s.u64 = UINT64_MAX;
	s.s32 = -7;
	s.s64 = INT64_MIN;
	s.f32 = 123456789u;
	s.f64 = 1ULL << 40;
	s.sf32 = -1;
	s.sf64 = -2;
	s.fl = 0.1f;
	s.db = 1e300;
	s.b = 1;
	s.s = "h\xc3\xa9llo \"w\"\n";
	s.by.data = bin;
	s.by.len = sizeof bin;
	s.color = AHP__TEST__COLOR__GREEN;

	json_t *j = ahp_proto_to_json(&s.base);
	assert_non_null(j);
	assert_true(json_integer_value(json_object_get(j, "i32")) == INT32_MIN);
	assert_true(json_integer_value(json_object_get(j, "i64")) == INT64_MAX);
	assert_string_equal(json_string_value(json_object_get(j, "u64")), "18446744073709551615");
	assert_string_equal(json_string_value(json_object_get(j, "color")), "GREEN");
	assert_string_equal(json_string_value(json_object_get(j, "by")), "AP8QYYA=");
	assert_true(json_real_value(json_object_get(j, "fl")) == 0.1);
	assert_true(json_is_true(json_object_get(j, "b")));
	assert_string_equal(json_string_value(json_object_get(j, "s")), s.s);

	char err[256] = "";
	ProtobufCMessage *back =
	    ahp_json_to_proto(&ahp__test__scalars__descriptor, j, err, sizeof err);
	json_decref(j);
	assert_non_null(back);
	assert_string_equal(err, "");
	s_assert_same(&s.base, back);
	Ahp__Test__Scalars *b = (Ahp__Test__Scalars *)back;
	assert_true(b->fl == 0.1f);
	assert_int_equal(b->by.len, sizeof bin);
	protobuf_c_message_free_unpacked(back, NULL);
}

static void
test_defaults_written_and_absent_is_default(void **state)
{
	(void)state;
	Ahp__Test__Scalars s = AHP__TEST__SCALARS__INIT;
	json_t *j = ahp_proto_to_json(&s.base);
	/* Every proto3 scalar is present with its default. */
	assert_int_equal(json_object_size(j), ahp__test__scalars__descriptor.n_fields);
	assert_int_equal(json_integer_value(json_object_get(j, "i32")), 0);
	assert_string_equal(json_string_value(json_object_get(j, "s")), "");
	assert_string_equal(json_string_value(json_object_get(j, "by")), "");
	assert_string_equal(json_string_value(json_object_get(j, "color")), "COLOR_UNSPECIFIED");
	json_decref(j);

	char err[256];
	ProtobufCMessage *m = s_parse(&ahp__test__scalars__descriptor, "{}", err, sizeof err);
	assert_non_null(m);
	s_assert_same(&s.base, m);
	protobuf_c_message_free_unpacked(m, NULL);
	/* null = absent */
	m = s_parse(&ahp__test__scalars__descriptor, "{\"s\": null, \"i32\": null}", err,
	            sizeof err);
	assert_non_null(m);
	s_assert_same(&s.base, m);
	protobuf_c_message_free_unpacked(m, NULL);
}

static void
test_nested_repeated_oneof_roundtrip(void **state)
{
	(void)state;
	char *tags[] = {"a", "b c"};
	Ahp__Test__Inner inner = AHP__TEST__INNER__INIT;
	inner.name = "in";
	inner.n = 3;
	inner.tags = tags;
	inner.n_tags = 2;
	Ahp__Test__Inner it1 = AHP__TEST__INNER__INIT, it2 = AHP__TEST__INNER__INIT;
	it1.name = "one";
	it2.n = -2;
	Ahp__Test__Inner *items[] = {&it1, &it2};
	int64_t nums[] = {1, -1, INT64_MIN};
	Ahp__Test__Color colors[] = {AHP__TEST__COLOR__RED, AHP__TEST__COLOR__GREEN};
	ProtobufCBinaryData blobs[] = {{3, (uint8_t *)"xyz"}, {0, NULL}};
	Ahp__Test__Inner detail = AHP__TEST__INNER__INIT;
	detail.name = "detail";

	Ahp__Test__Outer o = AHP__TEST__OUTER__INIT;
	o.inner = &inner;
	o.items = items;
	o.n_items = 2;
	o.nums = nums;
	o.n_nums = 3;
	o.colors = colors;
	o.n_colors = 2;
	o.blobs = blobs;
	o.n_blobs = 2;
	o.body_case = AHP__TEST__OUTER__BODY_DETAIL;
	o.detail = &detail;
	o.status = AHP__STATUS__ERR_NOT_FOUND;

	json_t *j = ahp_proto_to_json(&o.base);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "status")), "ERR_NOT_FOUND");
	assert_null(json_object_get(j, "text")); /* other oneof members are absent */
	assert_null(json_object_get(j, "code"));
	assert_non_null(json_object_get(j, "detail"));
	assert_int_equal(json_array_size(json_object_get(j, "items")), 2);
	assert_int_equal(json_array_size(json_object_get(j, "words")), 0);
	char err[256];
	ProtobufCMessage *back =
	    ahp_json_to_proto(&ahp__test__outer__descriptor, j, err, sizeof err);
	json_decref(j);
	assert_non_null(back);
	s_assert_same(&o.base, back);
	Ahp__Test__Outer *b = (Ahp__Test__Outer *)back;
	assert_int_equal(b->body_case, AHP__TEST__OUTER__BODY_DETAIL);
	assert_string_equal(b->items[0]->name, "one");
	assert_string_equal(b->inner->tags[1], "b c");
	protobuf_c_message_free_unpacked(back, NULL);

	/* A scalar oneof member. */
	ProtobufCMessage *m =
	    s_parse(&ahp__test__outer__descriptor, "{\"code\": 7}", err, sizeof err);
	assert_non_null(m);
	assert_int_equal(((Ahp__Test__Outer *)m)->body_case, AHP__TEST__OUTER__BODY_CODE);
	assert_int_equal(((Ahp__Test__Outer *)m)->code, 7);
	protobuf_c_message_free_unpacked(m, NULL);
}

static void
test_accepted_forms(void **state)
{
	(void)state;
	char err[256] = "";
	ProtobufCMessage *m =
	    s_parse(&ahp__test__scalars__descriptor,
	            "{\"i32\": \"42\", \"i64\": \"-9223372036854775808\", \"u64\": "
	            "\"18446744073709551615\", \"u32\": 4.0, \"fl\": 3, \"db\": \"-Infinity\","
	            " \"color\": 2, \"by\": \"AP8-_w\"}",
	            err, sizeof err);
	if (m == NULL)
		fail_msg("%s", err);
	Ahp__Test__Scalars *s = (Ahp__Test__Scalars *)m;
	assert_int_equal(s->i32, 42);
	assert_true(s->i64 == INT64_MIN);
	assert_true(s->u64 == UINT64_MAX);
	assert_int_equal(s->u32, 4);
	assert_true(s->fl == 3.0f);
	assert_true(isinf(s->db) && s->db < 0);
	assert_int_equal(s->color, AHP__TEST__COLOR__GREEN);
	const uint8_t want[] = {0x00, 0xff, 0x3e, 0xff};
	assert_int_equal(s->by.len, sizeof want);
	assert_memory_equal(s->by.data, want, sizeof want);
	protobuf_c_message_free_unpacked(m, NULL);
}

static void
test_errors(void **state)
{
	(void)state;
	const ProtobufCMessageDescriptor *S = &ahp__test__scalars__descriptor;
	const ProtobufCMessageDescriptor *O = &ahp__test__outer__descriptor;

	s_expect_err(S, "{\"s\": 5}", "field 's': expected string, got number", 1);
	s_expect_err(S, "{\"b\": \"true\"}", "field 'b': expected boolean, got string", 1);
	s_expect_err(S, "{\"i32\": [1]}", "field 'i32': expected integer, got array", 1);
	s_expect_err(O, "{\"inner\": {\"nmae\": \"x\"}}",
	             "field 'inner.nmae': unknown field (known: name, n, tags)", 1);
	s_expect_err(O, "{\"inner\": 3}", "field 'inner': expected object, got number", 1);
	s_expect_err(S, "{\"i32\": 2147483648}",
	             "field 'i32': 2147483648 is out of range for int32", 1);
	s_expect_err(S, "{\"i32\": -2147483649}", "out of range for int32", 0);
	s_expect_err(S, "{\"u32\": -1}", "field 'u32': -1 is out of range for uint32", 1);
	s_expect_err(S, "{\"u32\": 4294967296}", "out of range for uint32", 0);
	s_expect_err(S, "{\"u64\": \"-1\"}", "field 'u64': expected non-negative integer", 0);
	s_expect_err(S, "{\"u64\": \"18446744073709551616\"}", "out of range for uint64", 0);
	s_expect_err(S, "{\"i64\": \"12abc\"}", "field 'i64': expected integer, got string", 0);
	s_expect_err(S, "{\"i32\": 1.5}", "field 'i32': expected integer, got fractional", 0);
	s_expect_err(S, "{\"fl\": 1e300}", "field 'fl': 1e+300 is out of range for float", 1);
	s_expect_err(
	    S, "{\"color\": \"BLUE\"}",
	    "field 'color': unknown enum value \"BLUE\" (expected one of COLOR_UNSPECIFIED, RED, "
	    "GREEN)",
	    1);
	s_expect_err(S, "{\"color\": 7}", "field 'color': unknown enum value 7", 0);
	s_expect_err(S, "{\"color\": true}", "expected string (enum name), got boolean", 0);
	s_expect_err(S, "{\"by\": \"!!!!\"}", "field 'by': invalid base64", 1);
	s_expect_err(S, "{\"by\": \"A\"}", "field 'by': invalid base64", 1);
	s_expect_err(O, "{\"items\": [{\"n\": 1}, {\"n\": \"x\"}]}",
	             "field 'items[1].n': expected integer, got string \"x\"", 1);
	s_expect_err(O, "{\"nums\": 5}", "field 'nums': expected array, got number", 1);
	s_expect_err(O, "{\"words\": [\"a\", null]}", "field 'words[1]': null is not allowed", 0);
	s_expect_err(O, "{\"text\": \"a\", \"code\": 1}", "conflicts with", 0);
	s_expect_err(O, "[]", "expected object, got array", 1);
	s_expect_err(&ahp__test2__req__descriptor, "{\"limit\": 1}",
	             "field 'topic': required field missing", 1);

	/* A NUL inside a string cannot become a C string. */
	json_t *j = json_pack("{s:s%}", "s", "a\0b", (size_t)3);
	char err[256];
	assert_null(ahp_json_to_proto(S, j, err, sizeof err));
	assert_string_equal(err, "field 's': string contains a NUL character");
	json_decref(j);
	assert_null(ahp_json_to_proto(S, NULL, err, sizeof err));
}

static void
test_depth_cap(void **state)
{
	(void)state;
	char err[256];
	/* 20 levels fine, 40 refused. */
	json_t *root = json_object(), *cur = root;
	for (int i = 0; i < 40; i++) {
		if (i == 20) {
			ProtobufCMessage *m =
			    ahp_json_to_proto(&ahp__test__node__descriptor, root, err, sizeof err);
			assert_non_null(m);
			protobuf_c_message_free_unpacked(m, NULL);
		}
		json_t *child = json_object();
		json_object_set_new(cur, "child", child);
		cur = child;
	}
	assert_null(ahp_json_to_proto(&ahp__test__node__descriptor, root, err, sizeof err));
	assert_non_null(strstr(err, "nesting deeper than 32 levels"));
	assert_non_null(strstr(err, "field 'child.child.child"));
	json_decref(root);
}

static void
test_proto2_optional_and_required(void **state)
{
	(void)state;
	char err[256];
	ProtobufCMessage *m =
	    s_parse(&ahp__test2__req__descriptor, "{\"topic\": \"t\"}", err, sizeof err);
	assert_non_null(m);
	Ahp__Test2__Req *r = (Ahp__Test2__Req *)m;
	assert_false(r->has_limit);
	assert_int_equal(r->limit, 5);
	json_t *j = ahp_proto_to_json(m);
	assert_null(json_object_get(j, "limit")); /* unset optional is left out */
	assert_null(json_object_get(j, "note"));
	assert_string_equal(json_string_value(json_object_get(j, "topic")), "t");
	json_decref(j);
	protobuf_c_message_free_unpacked(m, NULL);

	m = s_parse(&ahp__test2__req__descriptor, "{\"topic\": \"t\", \"limit\": 9}", err,
	            sizeof err);
	r = (Ahp__Test2__Req *)m;
	assert_true(r->has_limit);
	assert_int_equal(r->limit, 9);
	j = ahp_proto_to_json(m);
	assert_int_equal(json_integer_value(json_object_get(j, "limit")), 9);
	json_decref(j);
	protobuf_c_message_free_unpacked(m, NULL);
}

/* What ahp_proto_to_json writes reads back: a repeated field over the reader's
 * 100000-element cap is refused by the writer too (E2BIG), not written as JSON that
 * ahp_json_to_proto then refuses (found by make fuzz: 100001 packed int64s). */
static void
test_writer_keeps_reader_limits(void **state)
{
	(void)state;
	Ahp__Test__Outer o = AHP__TEST__OUTER__INIT;
	int64_t *nums = calloc(100001, sizeof *nums);
	assert_non_null(nums);
	o.nums = nums;
	o.n_nums = 100000;
	json_t *j = ahp_proto_to_json(&o.base);
	assert_non_null(j);
	assert_int_equal(json_array_size(json_object_get(j, "nums")), 100000);
	char err[256];
	ProtobufCMessage *back =
	    ahp_json_to_proto(&ahp__test__outer__descriptor, j, err, sizeof err);
	assert_non_null(back);
	protobuf_c_message_free_unpacked(back, NULL);
	json_decref(j);
	o.n_nums = 100001;
	errno = 0;
	assert_null(ahp_proto_to_json(&o.base));
	assert_int_equal(errno, E2BIG);
	free(nums);
}

static void
test_schema(void **state)
{
	(void)state;
	json_t *s = ahp_proto_json_schema(&ahp__test2__req__descriptor);
	assert_non_null(s);
	assert_string_equal(json_string_value(json_object_get(s, "type")), "object");
	assert_true(json_is_false(json_object_get(s, "additionalProperties")));
	json_t *req = json_object_get(s, "required");
	assert_int_equal(json_array_size(req), 1);
	assert_string_equal(json_string_value(json_array_get(req, 0)), "topic");
	json_t *props = json_object_get(s, "properties");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(props, "limit"), "type")), "integer");
	json_decref(s);

	s = ahp_proto_json_schema(&ahp__test__outer__descriptor);
	props = json_object_get(s, "properties");
	json_t *items = json_object_get(props, "items");
	assert_string_equal(json_string_value(json_object_get(items, "type")), "array");
	json_t *en = json_object_get(json_object_get(props, "status"), "enum");
	assert_string_equal(json_string_value(json_array_get(en, 5)), "ERR_TIMEOUT");
	assert_null(json_object_get(s, "required"));
	json_decref(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_scalars_roundtrip),
	    cmocka_unit_test(test_defaults_written_and_absent_is_default),
	    cmocka_unit_test(test_nested_repeated_oneof_roundtrip),
	    cmocka_unit_test(test_accepted_forms),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_depth_cap),
	    cmocka_unit_test(test_proto2_optional_and_required),
	    cmocka_unit_test(test_writer_keeps_reader_limits),
	    cmocka_unit_test(test_schema),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
