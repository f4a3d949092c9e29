/* Unit tests for libahp utilities: status table, ids, parsers, files, paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ahp/util.h"

static void
test_status_table_matches_proto(void **state)
{
	(void)state;
	const ProtobufCEnumDescriptor *d = &ahp__status__descriptor;
	/* Every enum value has a name: lower-case of the proto name minus ERR_. */
	for (unsigned i = 0; i < d->n_values; i++) {
		const char *pname = d->values[i].name;
		if (strncmp(pname, "ERR_", 4) == 0)
			pname += 4;
		char want[64];
		size_t j;
		for (j = 0; pname[j] && j < sizeof want - 1; j++)
			want[j] =
			    (char)((pname[j] >= 'A' && pname[j] <= 'Z') ? pname[j] + 32 : pname[j]);
		want[j] = '\0';
		assert_string_equal(ahp_status_str(d->values[i].value), want);
		assert_int_equal(ahp_status_from_str(want), d->values[i].value);
	}
	assert_string_equal(ahp_status_str(-1), "unknown");
	assert_string_equal(ahp_status_str(100000), "unknown");
	assert_int_equal(ahp_status_from_str("nope"), -1);
}

static void
test_random_id(void **state)
{
	(void)state;
	char a[32], b[32];
	ahp_random_id("run-", a, sizeof a);
	ahp_random_id("run-", b, sizeof b);
	assert_int_equal(strlen(a), 4 + 16);
	assert_memory_equal(a, "run-", 4);
	for (int i = 4; i < 20; i++)
		assert_non_null(strchr("0123456789abcdef", a[i]));
	assert_string_not_equal(a, b);
	/* A short buffer is truncated, never overrun. */
	char small[6] = "XXXXX";
	ahp_random_id("run-", small, 3);
	assert_string_equal(small, "ru");
	assert_int_equal(small[3], 'X');
}

static void
test_parse_long(void **state)
{
	(void)state;
	long v = 0;
	assert_int_equal(ahp_parse_long("42", 0, 100, &v), 0);
	assert_int_equal(v, 42);
	assert_int_equal(ahp_parse_long("-5", -10, 10, &v), 0);
	assert_int_equal(v, -5);
	assert_int_equal(ahp_parse_long("101", 0, 100, &v), -1);
	assert_int_equal(ahp_parse_long("-1", 0, 100, &v), -1);
	assert_int_equal(ahp_parse_long("12x", 0, 100, &v), -1);
	assert_int_equal(ahp_parse_long("", 0, 100, &v), -1);
	assert_int_equal(ahp_parse_long(" 1", 0, 100, &v), -1);
	assert_int_equal(ahp_parse_long("+1", 0, 100, &v), -1);
	assert_int_equal(ahp_parse_long("99999999999999999999999", LONG_MIN, LONG_MAX, &v), -1);
	assert_int_equal(v, -5); /* untouched on error */
}

static void
test_parse_duration(void **state)
{
	(void)state;
	long s = 0;
	assert_int_equal(ahp_parse_duration("30s", &s), 0);
	assert_int_equal(s, 30);
	assert_int_equal(ahp_parse_duration("15m", &s), 0);
	assert_int_equal(s, 900);
	assert_int_equal(ahp_parse_duration("24h", &s), 0);
	assert_int_equal(s, 86400);
	assert_int_equal(ahp_parse_duration("7d", &s), 0);
	assert_int_equal(s, 7 * 86400);
	assert_int_equal(ahp_parse_duration("12", &s), 0);
	assert_int_equal(s, 12);
	assert_int_equal(ahp_parse_duration("h", &s), -1);
	assert_int_equal(ahp_parse_duration("1w", &s), -1);
	assert_int_equal(ahp_parse_duration("-1h", &s), -1);
	assert_int_equal(ahp_parse_duration("999999999999999999d", &s), -1);
	assert_int_equal(ahp_parse_duration("", &s), -1);
}

static char s_dir[64];

static int
s_setup(void **state)
{
	(void)state;
	snprintf(s_dir, sizeof s_dir, "/tmp/ahp-test-util-XXXXXX");
	return mkdtemp(s_dir) ? 0 : -1;
}

static int
s_teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void
test_read_file(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof path, "%s/f", s_dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("hello world", f);
	fclose(f);

	char *buf = NULL;
	size_t len = 0;
	assert_int_equal(ahp_read_file(path, 100, &buf, &len), 0);
	assert_int_equal(len, 11);
	assert_string_equal(buf, "hello world");
	free(buf);
	/* Exactly at the ceiling is fine, one byte over is EFBIG. */
	assert_int_equal(ahp_read_file(path, 11, &buf, &len), 0);
	free(buf);
	errno = 0;
	assert_int_equal(ahp_read_file(path, 10, &buf, &len), -1);
	assert_int_equal(errno, EFBIG);
	assert_null(buf);
	/* Not a regular file with a size: the ceiling still holds. */
	assert_int_equal(ahp_read_file("/dev/zero", 1000, &buf, &len), -1);
	assert_int_equal(errno, EFBIG);
	snprintf(path, sizeof path, "%s/missing", s_dir);
	assert_int_equal(ahp_read_file(path, 10, &buf, &len), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(ahp_read_file(s_dir, 10, &buf, &len), -1);
}

static void
test_mkdirs(void **state)
{
	(void)state;
	char path[128];
	struct stat st;
	snprintf(path, sizeof path, "%s/a/b/c/", s_dir);
	assert_int_equal(ahp_mkdirs(path, 0700), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(ahp_mkdirs(path, 0700), 0); /* idempotent */
	snprintf(path, sizeof path, "%s/file", s_dir);
	close(open(path, O_CREAT | O_WRONLY, 0600));
	assert_int_equal(ahp_mkdirs(path, 0700), -1);
	assert_int_equal(errno, ENOTDIR);
}

static void
test_strlcpy_and_home(void **state)
{
	(void)state;
	char b[4];
	assert_int_equal(ahp_strlcpy(b, "abc", sizeof b), 0);
	assert_string_equal(b, "abc");
	assert_int_equal(ahp_strlcpy(b, "abcd", sizeof b), -1);
	assert_string_equal(b, "abc");

	setenv("AHP_HOME", "/env/home", 1);
	assert_string_equal(ahp_home("/flag"), "/flag");
	assert_string_equal(ahp_home(NULL), "/env/home");
	unsetenv("AHP_HOME");
	assert_string_equal(ahp_home(NULL), "/var/lib/ahp");

	char p[32];
	assert_int_equal(ahp_home_path("/h", "run/x.sock", p, sizeof p), 0);
	assert_string_equal(p, "/h/run/x.sock");
	assert_int_equal(ahp_home_path("/h", "0123456789012345678901234567890", p, sizeof p), -1);
}

static void
test_error_set(void **state)
{
	(void)state;
	Ahp__Error e;
	ahp_error_set(&e, AHP__STATUS__ERR_NOT_FOUND, "no such run");
	assert_int_equal(e.status, AHP__STATUS__ERR_NOT_FOUND);
	assert_string_equal(e.message, "no such run");
	uint8_t buf[64];
	size_t n = ahp__error__pack(&e, buf);
	Ahp__Error *d = ahp__error__unpack(NULL, n, buf);
	assert_non_null(d);
	assert_int_equal(d->status, AHP__STATUS__ERR_NOT_FOUND);
	assert_string_equal(d->message, "no such run");
	ahp__error__free_unpacked(d, NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_status_table_matches_proto),
	    cmocka_unit_test(test_random_id),
	    cmocka_unit_test(test_parse_long),
	    cmocka_unit_test(test_parse_duration),
	    cmocka_unit_test(test_read_file),
	    cmocka_unit_test(test_mkdirs),
	    cmocka_unit_test(test_strlcpy_and_home),
	    cmocka_unit_test(test_error_set),
	};
	return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
