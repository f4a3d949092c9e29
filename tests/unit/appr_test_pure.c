/* Unit tests for approvald's pure parts: canonical arguments and their digest, CreateRequest
 * validation, spans and times, the list line's rendering, the approvers file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "approvald.h"

#define D_HI "46c4de2ee4955503ab1627b267cba865629cb9ab1887e09cdace585abf620489"

static void
test_names(void **state)
{
	(void)state;
	assert_true(appr_run_id_ok("r-1AB"));
	assert_false(appr_run_id_ok(""));
	assert_false(appr_run_id_ok(NULL));
	assert_false(appr_run_id_ok("r_1"));
	char long_id[66];
	memset(long_id, 'a', 65);
	long_id[65] = '\0';
	assert_false(appr_run_id_ok(long_id));
	long_id[64] = '\0';
	assert_true(appr_run_id_ok(long_id));
	assert_true(appr_profile_ok("team-digest"));
	assert_false(appr_profile_ok("Team"));
}

static void
test_canonical(void **state)
{
	(void)state;
	char err[256];
	const char *in = "{ \"b\": [1, {\"y\":2,\"x\":1}], \"a\": \"\xc3\xa9\" }";
	char *c = appr_canonical(in, strlen(in), err, sizeof err);
	assert_non_null(c);
	assert_string_equal(c, "{\"a\":\"\xc3\xa9\",\"b\":[1,{\"x\":1,\"y\":2}]}");
	free(c);
	assert_null(appr_canonical("[1]", 3, err, sizeof err));
	assert_string_equal(err, "arguments_json is not a JSON object");
	assert_null(appr_canonical("{\"a\":1,\"a\":2}", 13, err, sizeof err));
	assert_null(appr_canonical("{", 1, err, sizeof err));
	assert_non_null(strstr(err, "arguments_json is not JSON: "));
	assert_null(appr_canonical("{}", APPR_ARGS_MAX + 1, err, sizeof err));
	assert_string_equal(err, "arguments_json is over 262144 bytes");
}

static void
test_digest(void **state)
{
	(void)state;
	char d[APPR_DIGEST_LEN + 1], err[256];
	const char *a = "{\"webhook_id\": \"team\", \"content\": \"hi\"}";
	assert_int_equal(appr_digest("publish_summary", a, strlen(a), d, err, sizeof err), 0);
	assert_string_equal(d, D_HI);
	const char *b = "{\"content\":\"hi\",\"webhook_id\":\"team\"}";
	assert_int_equal(appr_digest("publish_summary", b, strlen(b), d, err, sizeof err), 0);
	assert_string_equal(d, D_HI);
	assert_int_equal(appr_digest("exec", b, strlen(b), d, err, sizeof err), 0);
	assert_string_not_equal(d, D_HI);
}

static Ahp__Appr__CreateRequest
s_create(void)
{
	Ahp__Appr__CreateRequest c = AHP__APPR__CREATE_REQUEST__INIT;
	c.run_id = "r-1";
	c.step = 4;
	c.profile = "team-digest";
	c.kind = AHP__APPR__KIND__KIND_APPROVAL;
	c.action = "publish_summary";
	c.arguments_json = "{\"content\":\"hi\",\"webhook_id\":\"team\"}";
	c.digest = D_HI;
	c.question = "";
	c.expires_s = 86400;
	return c;
}

static void
s_refused(Ahp__Appr__CreateRequest *c, const char *msg)
{
	char d[APPR_DIGEST_LEN + 1], err[512] = "";
	assert_int_equal(appr_validate_create(c, d, err, sizeof err), -1);
	assert_string_equal(err, msg);
}

static void
test_validate(void **state)
{
	(void)state;
	char d[APPR_DIGEST_LEN + 1], err[512];
	Ahp__Appr__CreateRequest c = s_create();
	assert_int_equal(appr_validate_create(&c, d, err, sizeof err), 0);
	assert_string_equal(d, D_HI);
	c = s_create();
	c.run_id = "r 1";
	s_refused(&c, "run_id must match [A-Za-z0-9-]{1,64}");
	c = s_create();
	c.step = 0;
	s_refused(&c, "step must be >= 1");
	c = s_create();
	c.profile = "";
	s_refused(&c, "profile must match [a-z0-9-]{1,64}");
	c = s_create();
	c.kind = 7;
	s_refused(&c, "kind must be KIND_APPROVAL or KIND_QUESTION");
	c = s_create();
	c.action = "pub\xff";
	s_refused(&c, "action must be 1..64 bytes of UTF-8");
	c = s_create();
	c.question = "\xed\xa0\x80"; /* a surrogate */
	s_refused(&c, "question must be at most 4096 bytes of UTF-8");
	c = s_create();
	c.expires_s = 2592001;
	s_refused(&c, "expires_s must be 1..2592000 (30 days)");
	c = s_create();
	c.arguments_json = "{\"content\":\"h\xc0\xaf\"}";
	s_refused(&c, "arguments_json is not valid UTF-8");
	c = s_create();
	c.digest = "00";
	assert_int_equal(appr_validate_create(&c, d, err, sizeof err), -1);
	assert_non_null(strstr(err, "digest does not match the arguments"));
	assert_non_null(strstr(err, D_HI));
	c = s_create();
	c.kind = AHP__APPR__KIND__KIND_QUESTION;
	c.question = " \xe3\x80\x80";
	s_refused(&c, "a question needs its question text");
}

static void
test_spans(void **state)
{
	(void)state;
	char b[32];
	assert_string_equal(appr_fmt_span(-5, b, sizeof b), "0s");
	assert_string_equal(appr_fmt_span(999, b, sizeof b), "0s");
	assert_string_equal(appr_fmt_span(1000, b, sizeof b), "1s");
	assert_string_equal(appr_fmt_span(60000, b, sizeof b), "1m");
	assert_string_equal(appr_fmt_span(3570000, b, sizeof b), "59m30s");
	assert_string_equal(appr_fmt_span(86399000, b, sizeof b), "23h59m");
	assert_string_equal(appr_fmt_span(86400000, b, sizeof b), "24h");
	assert_string_equal(appr_fmt_span(172800000, b, sizeof b), "2d");
	assert_string_equal(appr_fmt_span(2592000000LL + 3600000 * 5, b, sizeof b), "30d5h");
	assert_string_equal(appr_fmt_time(1796030723000LL, b, sizeof b), "2026-11-30 09:25:23 UTC");
	assert_string_equal(appr_state_str(AHP__APPR__STATE__STATE_CANCELLED), "cancelled");
	assert_string_equal(appr_state_str(42), "unknown");
}

static char *
s_render(int kind, const char *action, const char *args, const char *question, size_t max)
{
	Ahp__Appr__ApprovalRequest r = AHP__APPR__APPROVAL_REQUEST__INIT;
	r.kind = kind;
	r.action = (char *)action;
	r.arguments_json = (char *)args;
	r.question = (char *)question;
	return appr_render_call(&r, max);
}

static void
test_render(void **state)
{
	(void)state;
	char *s = s_render(0, "publish_summary",
	                   "{\"webhook_id\":\"team\",\"content\":\"Hello \\\"all\\\" of you, the "
	                   "weekly digest is ready\",\"n\":3,\"ok\":true,\"x\":null}",
	                   "", 200);
	assert_string_equal(s,
	                    "publish_summary(webhook_id=\"team\", content=\"Hello \\\"all\\\" of "
	                    "you, the weekly digest is\xe2\x80\xa6\", n=3, ok=true, x=null)");
	free(s);
	/* Cut on a character: 39 ASCII bytes then a 2-byte character. */
	s = s_render(0, "a", "{\"k\":\"123456789012345678901234567890123456789\xc3\xa9z\"}", "",
	             200);
	assert_string_equal(s, "a(k=\"123456789012345678901234567890123456789\xe2\x80\xa6\")");
	free(s);
	s = s_render(0, "a", "{\"k\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]}", "",
	             200);
	assert_string_equal(s, "a(k=[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,\xe2\x80\xa6)");
	free(s);
	s = s_render(0, "a", "{\"a\":1,\"b\":2,\"c\":3}", "", 8);
	assert_string_equal(s, "a(a=1, b=2, \xe2\x80\xa6)");
	free(s);
	s = s_render(0, "a", "not json", "", 80);
	assert_string_equal(s, "a(\xe2\x80\xa6)");
	free(s);
	s = s_render(1, "ask_human", "{}", "Which channel?", 80);
	assert_string_equal(s, "ask_human: \"Which channel?\"");
	free(s);
}

static void
test_approvers(void **state)
{
	(void)state;
	appr_approvers_t a = {0};
	char err[256];
	assert_int_equal(appr_approvers_parse("# c\n\nops users=root groups=root  # on call\n"
	                                      "team-digest groups=root\n",
	                                      &a, err, sizeof err),
	                 0);
	assert_int_equal(a.n, 2);
	const appr_rule_t *r = appr_approvers_find(&a, "ops");
	assert_non_null(r);
	assert_int_equal(r->allow.n_uids, 1);
	assert_int_equal(r->allow.uids[0], 0);
	assert_int_equal(r->allow.n_gids, 1);
	assert_true(appr_allow_has(&r->allow, 0, 0));
	assert_false(appr_allow_has(&r->allow, 65534, 65534));
	r = appr_approvers_find(&a, "team-digest");
	assert_int_equal(r->allow.n_uids, 0);
	assert_true(appr_allow_has(&r->allow, 12345, 0));
	assert_null(appr_approvers_find(&a, "other"));
	appr_approvers_free(&a);

	assert_int_equal(
	    appr_approvers_parse("ops users=root\nops users=root\n", &a, err, sizeof err), -1);
	assert_string_equal(err, "2: profile ops is given twice");
	assert_null(a.rules);
	assert_int_equal(appr_approvers_parse("ops who=root\n", &a, err, sizeof err), -1);
	assert_string_equal(err, "1: \"who=root\": expected users=NAME,... or groups=NAME,...");
	assert_int_equal(appr_approvers_parse("Ops\n", &a, err, sizeof err), -1);
	assert_int_equal(appr_approvers_parse("ops users=no-such-user-xyz\n", &a, err, sizeof err),
	                 -1);
	assert_non_null(strstr(err, "no-such-user-xyz"));
	assert_int_equal(appr_approvers_load("/nonexistent/approvers.conf", &a, err, sizeof err),
	                 0);
	assert_int_equal(a.n, 0);

	char name[64];
	assert_string_equal(appr_user_name(0, name, sizeof name), "root");
	assert_string_equal(appr_user_name(4000000000u, name, sizeof name), "uid:4000000000");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names),     cmocka_unit_test(test_canonical),
	    cmocka_unit_test(test_digest),    cmocka_unit_test(test_validate),
	    cmocka_unit_test(test_spans),     cmocka_unit_test(test_render),
	    cmocka_unit_test(test_approvers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
