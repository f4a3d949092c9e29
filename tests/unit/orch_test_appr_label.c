/* Unit tests for the orchestrator's approval label (orch_appr_label): the call shown on
 * "[approval] waiting on #N: …", the line a user decides on inline in orchctl. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "orch.h"

static void
s_check(const char *args_json, const char *want)
{
	json_t *a = json_loads(args_json, 0, NULL);
	assert_non_null(a);
	char out[600];
	orch_appr_label("publish_summary", a, out, sizeof out);
	json_decref(a);
	assert_string_equal(out, want);
}

static void
test_plain(void **state)
{
	(void)state;
	s_check("{\"webhook_id\":\"team\",\"content\":\"hi\\u001b[2J\",\"n\":3}",
	        "publish_summary(webhook_id=\"team\", content=\"hi\\x1b[2J\", n=3)");
}

/* A model-chosen argument name that imitates other arguments is quoted and cut, so the
 * real webhook_id stays in view. */
static void
test_spoofed_name(void **state)
{
	(void)state;
	s_check("{\"webhook_id=\\\"team\\\", content=\\\"weekly digest\\\")"
	        "                                                                      "
	        "                                                                      "
	        "\":\"\",\"webhook_id\":\"attacker\"}",
	        "publish_summary(\"webhook_id=\\\"team\\\", content=\\\"weekly diges…\"=\"\", "
	        "webhook_id=\"attacker\")");
	s_check("{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":1}",
	        "publish_summary(\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…\"=1)");
	s_check("{\"a b\":1,\"\":2}", "publish_summary(\"a b\"=1, \"\"=2)");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain),
	    cmocka_unit_test(test_spoofed_name),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
