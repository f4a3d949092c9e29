/* Unit tests for daemon configuration: defaults, file, overrides, errors with line numbers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ahp/cfg.h"
#include "ahp/log.h"

static const ahp_cfg_def_t s_defs[] = {
    {"endpoint", AHP_CFG_STR, 0, 0, "ipc:///var/lib/ahp/run/x.sock", "where to listen"},
    {"gateway_url", AHP_CFG_STR, 0, 0, NULL, "model gateway base URL"},
    {"model_timeout_ms", AHP_CFG_INT, 100, 600000, "60000", "per model call"},
    {"verbose", AHP_CFG_BOOL, 0, 0, "false", NULL},
    {NULL, 0, 0, 0, NULL, NULL},
};

static void
test_defaults(void **state)
{
	(void)state;
	char err[256];
	ahp_cfg_t *c = ahp_cfg_new(s_defs);
	assert_non_null(c);
	assert_string_equal(ahp_cfg_str(c, "endpoint"), "ipc:///var/lib/ahp/run/x.sock");
	assert_int_equal(ahp_cfg_int(c, "model_timeout_ms"), 60000);
	assert_int_equal(ahp_cfg_bool(c, "verbose"), 0);
	assert_null(ahp_cfg_str(c, "gateway_url"));
	assert_false(ahp_cfg_is_set(c, "gateway_url"));
	/* gateway_url is required */
	assert_int_equal(ahp_cfg_validate(c, err, sizeof err), -1);
	assert_non_null(strstr(err, "gateway_url"));
	ahp_cfg_destroy(&c);
	assert_null(c);
}

static void
test_file_then_overrides(void **state)
{
	(void)state;
	char err[256] = "";
	ahp_cfg_t *c = ahp_cfg_new(s_defs);
	assert_int_equal(ahp_cfg_load_file(c, AHP_TEST_DATA "/cfg_good.conf", 0, err, sizeof err),
	                 0);
	assert_string_equal(ahp_cfg_str(c, "endpoint"), "ipc:///tmp/x.sock");
	assert_int_equal(ahp_cfg_int(c, "model_timeout_ms"), 2500);
	assert_int_equal(ahp_cfg_bool(c, "verbose"), 1);
	assert_string_equal(ahp_cfg_str(c, "gateway_url"), "http://127.0.0.1:8080/#frag");
	assert_int_equal(ahp_cfg_validate(c, err, sizeof err), 0);

	/* --set wins over the file, both forms */
	assert_int_equal(ahp_cfg_set(c, "model_timeout_ms=300", NULL, err, sizeof err), 0);
	assert_int_equal(ahp_cfg_int(c, "model_timeout_ms"), 300);
	assert_int_equal(ahp_cfg_set(c, "verbose", "off", err, sizeof err), 0);
	assert_int_equal(ahp_cfg_bool(c, "verbose"), 0);
	assert_int_equal(ahp_cfg_set(c, "verbose", "TRUE", err, sizeof err), 0);
	assert_int_equal(ahp_cfg_bool(c, "verbose"), 1);

	/* Bad overrides are refused and leave the old value. */
	assert_int_equal(ahp_cfg_set(c, "model_timeout_ms", "12abc", err, sizeof err), -1);
	assert_non_null(strstr(err, "integer"));
	assert_int_equal(ahp_cfg_set(c, "model_timeout_ms", "99", err, sizeof err), -1);
	assert_non_null(strstr(err, "out of range [100, 600000]"));
	assert_int_equal(ahp_cfg_set(c, "verbose", "maybe", err, sizeof err), -1);
	assert_int_equal(ahp_cfg_set(c, "nope=1", NULL, err, sizeof err), -1);
	assert_non_null(strstr(err, "unknown key 'nope'"));
	assert_int_equal(ahp_cfg_set(c, "novalue", NULL, err, sizeof err), -1);
	assert_int_equal(ahp_cfg_int(c, "model_timeout_ms"), 300);
	assert_int_equal(ahp_cfg_bool(c, "verbose"), 1);

	FILE *out = tmpfile();
	ahp_cfg_print(c, out);
	rewind(out);
	char line[256];
	int found = 0;
	while (fgets(line, sizeof line, out))
		found += strcmp(line, "model_timeout_ms = 300\n") == 0;
	fclose(out);
	assert_int_equal(found, 1);
	ahp_cfg_destroy(&c);
}

static void
test_out_of_range_line_number(void **state)
{
	(void)state;
	char err[256] = "";
	ahp_cfg_t *c = ahp_cfg_new(s_defs);
	assert_int_equal(ahp_cfg_load_file(c, AHP_TEST_DATA "/cfg_range.conf", 0, err, sizeof err),
	                 -1);
	assert_non_null(strstr(err, AHP_TEST_DATA "/cfg_range.conf:4: "));
	assert_non_null(strstr(err, "model_timeout_ms"));
	assert_non_null(strstr(err, "out of range"));
	ahp_cfg_destroy(&c);
}

/* Writes text to a temp file and loads it; returns the load result. */
static int
s_load_text(const char *text, char *err, size_t errlen, char *path, size_t plen)
{
	snprintf(path, plen, "/tmp/ahp-test-cfg-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	ahp_cfg_t *c = ahp_cfg_new(s_defs);
	int rc = ahp_cfg_load_file(c, path, 0, err, errlen);
	ahp_cfg_destroy(&c);
	unlink(path);
	return rc;
}

static void
test_file_errors(void **state)
{
	(void)state;
	char err[256], path[64], want[160];

	assert_int_equal(s_load_text("# c\nbogus = 1\n", err, sizeof err, path, sizeof path), -1);
	snprintf(want, sizeof want, "%s:2: unknown key 'bogus'", path);
	assert_string_equal(err, want);

	assert_int_equal(s_load_text("\n\njust words\n", err, sizeof err, path, sizeof path), -1);
	snprintf(want, sizeof want, "%s:3: ", path);
	assert_non_null(strstr(err, want));

	assert_int_equal(
	    s_load_text("verbose = 1\nverbose = 0\n", err, sizeof err, path, sizeof path), -1);
	snprintf(want, sizeof want, "%s:2: duplicate key 'verbose' (first set on line 1)", path);
	assert_string_equal(err, want);

	assert_int_equal(
	    s_load_text("model_timeout_ms = 1e3\n", err, sizeof err, path, sizeof path), -1);
	snprintf(want, sizeof want, "%s:1: ", path);
	assert_non_null(strstr(err, want));

	assert_int_equal(s_load_text("model_timeout_ms = 99999999999999999999999\n", err,
	                             sizeof err, path, sizeof path),
	                 -1);

	/* Missing file: error unless optional. */
	ahp_cfg_t *c = ahp_cfg_new(s_defs);
	assert_int_equal(ahp_cfg_load_file(c, "/nonexistent/x.conf", 1, err, sizeof err), 0);
	assert_int_equal(ahp_cfg_load_file(c, "/nonexistent/x.conf", 0, err, sizeof err), -1);
	assert_non_null(strstr(err, "/nonexistent/x.conf"));
	ahp_cfg_destroy(&c);
}

static void
test_print_help(void **state)
{
	(void)state;
	FILE *out = tmpfile();
	ahp_cfg_print_help(s_defs, out);
	long n = ftell(out);
	rewind(out);
	char *buf = calloc(1, (size_t)n + 1);
	assert_int_equal(fread(buf, 1, (size_t)n, out), (size_t)n);
	fclose(out);
	assert_non_null(strstr(buf, "model_timeout_ms"));
	assert_non_null(strstr(buf, "[100..600000]"));
	assert_non_null(strstr(buf, "(default: 60000)"));
	assert_non_null(strstr(buf, "(required)"));
	free(buf);
}

int
main(void)
{
	ahp_log_init("test_cfg", AHP_LOG_WARN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_file_then_overrides),
	    cmocka_unit_test(test_out_of_range_line_number),
	    cmocka_unit_test(test_file_errors),
	    cmocka_unit_test(test_print_help),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
