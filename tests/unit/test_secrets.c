/* Unit tests for the secrets directory reader and constant-time comparison. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ahp/log.h"
#include "ahp/secrets.h"

static char s_dir[64];

static int
s_setup(void **state)
{
	(void)state;
	ahp_log_init("test_secrets", AHP_LOG_WARN);
	snprintf(s_dir, sizeof s_dir, "/tmp/ahp-test-secrets-XXXXXX");
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

/* Makes a fresh sub directory of s_dir and returns its path in buf. */
static void
s_subdir(const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", s_dir, name);
	assert_int_equal(mkdir(buf, 0700), 0);
}

static void
s_write(const char *dir, const char *name, const void *data, size_t len, int mode)
{
	char path[256];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
	assert_int_equal(chmod(path, (mode_t)mode), 0);
}

static void
test_load(void **state)
{
	(void)state;
	char d[128];
	size_t len = 0;
	s_subdir("ok", d, sizeof d);
	s_write(d, "wiki-token", "s3cr3t\n", 7, 0600);
	s_write(d, "crlf", "abc\r\n", 5, 0400);
	s_write(d, "two-newlines", "x\n\n", 3, 0600);
	s_write(d, "binary", "a\0b", 3, 0600);
	s_write(d, ".hidden", "ignored", 7, 0644);

	ahp_secrets_t *s = ahp_secrets_load(d);
	assert_non_null(s);
	assert_int_equal(ahp_secrets_count(s), 4);
	assert_string_equal(ahp_secrets_get(s, "wiki-token", &len), "s3cr3t");
	assert_int_equal(len, 6);
	assert_string_equal(ahp_secrets_get(s, "crlf", &len), "abc");
	/* only one newline is stripped */
	assert_string_equal(ahp_secrets_get(s, "two-newlines", &len), "x\n");
	const char *b = ahp_secrets_get(s, "binary", &len);
	assert_int_equal(len, 3);
	assert_memory_equal(b, "a\0b", 3);
	assert_null(ahp_secrets_get(s, ".hidden", &len));
	assert_null(ahp_secrets_get(s, "absent", &len));
	int seen = 0;
	for (size_t i = 0; ahp_secrets_name_at(s, i) != NULL; i++)
		seen++;
	assert_int_equal(seen, 4);
	ahp_secrets_destroy(&s);
	assert_null(s);
	ahp_secrets_destroy(&s); /* NULL-safe */
}

static void
test_bad_mode_refused(void **state)
{
	(void)state;
	char d[128];
	s_subdir("group", d, sizeof d);
	s_write(d, "a", "v", 1, 0600);
	s_write(d, "b", "v", 1, 0640);
	assert_null(ahp_secrets_load(d));

	s_subdir("world", d, sizeof d);
	s_write(d, "a", "v", 1, 0604);
	assert_null(ahp_secrets_load(d));

	/* Even write/execute bits for others are refused. */
	s_subdir("gw", d, sizeof d);
	s_write(d, "a", "v", 1, 0620);
	assert_null(ahp_secrets_load(d));
}

static void
test_symlink_and_size_refused(void **state)
{
	(void)state;
	char d[128], target[192], link[192];
	s_subdir("link", d, sizeof d);
	s_write(d, "real", "v", 1, 0600);
	snprintf(target, sizeof target, "%s/real", d);
	snprintf(link, sizeof link, "%s/alias", d);
	assert_int_equal(symlink(target, link), 0);
	assert_null(ahp_secrets_load(d));

	s_subdir("big", d, sizeof d);
	char *blob = calloc(1, 64 * 1024 + 1);
	s_write(d, "huge", blob, 64 * 1024 + 1, 0600);
	assert_null(ahp_secrets_load(d));
	/* exactly 64 KiB is fine */
	s_write(d, "huge", blob, 64 * 1024, 0600);
	ahp_secrets_t *s = ahp_secrets_load(d);
	assert_non_null(s);
	ahp_secrets_destroy(&s);
	free(blob);

	s_subdir("sub", d, sizeof d);
	snprintf(target, sizeof target, "%s/nested", d);
	assert_int_equal(mkdir(target, 0700), 0);
	assert_null(ahp_secrets_load(d));

	s_subdir("badname", d, sizeof d);
	s_write(d, "has space", "v", 1, 0600);
	assert_null(ahp_secrets_load(d));

	assert_null(ahp_secrets_load("/nonexistent/secrets"));
}

static void
test_ct_equal(void **state)
{
	(void)state;
	assert_true(ahp_ct_equal("abc", 3, "abc", 3));
	assert_false(ahp_ct_equal("abc", 3, "abd", 3));
	assert_false(ahp_ct_equal("xbc", 3, "abc", 3));
	assert_false(ahp_ct_equal("abc", 3, "abcd", 4));
	assert_false(ahp_ct_equal("abcd", 4, "abc", 3));
	/* A prefix that repeats (b wrapped) is still not equal. */
	assert_false(ahp_ct_equal("abab", 4, "ab", 2));
	assert_false(ahp_ct_equal("a", 1, "", 0));
	assert_false(ahp_ct_equal("", 0, "a", 1));
	assert_true(ahp_ct_equal("", 0, "", 0));
	assert_true(ahp_ct_equal("a\0b", 3, "a\0b", 3));
	assert_false(ahp_ct_equal("a\0b", 3, "a\0c", 3));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_load),
	    cmocka_unit_test(test_bad_mode_refused),
	    cmocka_unit_test(test_symlink_and_size_refused),
	    cmocka_unit_test(test_ct_equal),
	};
	return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
