/* Unit tests: the one UTF-8 validator/sanitizer and the terminal-safe escaper (common/text.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ahp/text.h"

#define R AHP_UTF8_REPLACEMENT

static void
t_valid(void **state)
{
	(void)state;
	assert_true(ahp_utf8_valid("", 0, 0));
	assert_true(ahp_utf8_valid(NULL, 0, 0));
	assert_true(ahp_utf8_valid("plain ascii", 11, 0));
	assert_true(ahp_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, 0)); /* é € 😀 */
	assert_true(ahp_utf8_valid("\xf4\x8f\xbf\xbf", 4, 0));                     /* U+10FFFF */
	/* The instance: overlong NUL from printf '\300\200'. */
	assert_false(ahp_utf8_valid("\xc0\x80", 2, 0));
	assert_false(ahp_utf8_valid("\xe0\x80\xaf", 3, 0));     /* overlong '/' */
	assert_false(ahp_utf8_valid("\xed\xa0\x80", 3, 0));     /* U+D800 surrogate */
	assert_false(ahp_utf8_valid("\xed\xbf\xbf", 3, 0));     /* U+DFFF surrogate */
	assert_false(ahp_utf8_valid("\xf4\x90\x80\x80", 4, 0)); /* U+110000 */
	assert_false(ahp_utf8_valid("\xf8\x88\x80\x80\x80", 5, 0));
	assert_false(ahp_utf8_valid("\xe2\x82", 2, 0)); /* truncated */
	assert_false(ahp_utf8_valid("\x80", 1, 0));     /* lone continuation */
	assert_false(ahp_utf8_valid("\xff", 1, 0));
	assert_false(ahp_utf8_valid("a\0b", 3, 0));
	assert_true(ahp_utf8_valid("a\0b", 3, AHP_UTF8_ALLOW_NUL));
}

static void
s_check_sanitize(const char *in, size_t len, int flags, const char *want, bool want_changed)
{
	size_t n = 0;
	bool changed = !want_changed;
	char *out = ahp_utf8_sanitize(in, len, flags, &n, &changed);
	assert_non_null(out);
	assert_string_equal(out, want);
	assert_int_equal(n, strlen(want));
	assert_int_equal(changed, want_changed);
	assert_true(ahp_utf8_valid(out, n, 0));
	free(out);
}

static void
t_sanitize(void **state)
{
	(void)state;
	s_check_sanitize("", 0, 0, "", false);
	s_check_sanitize("/workspace/caf\xc3\xa9", 16, 0, "/workspace/caf\xc3\xa9", false);
	s_check_sanitize("/workspace/\xc0\x80", 13, 0, "/workspace/" R R, true);
	s_check_sanitize("a\0b", 3, 0, "a" R "b", true);
	s_check_sanitize("\xed\xa0\x80x", 4, 0, R "x", true); /* one per encoded surrogate */
	/* Maximal subpart: a truncated 3-byte sequence is one U+FFFD. */
	s_check_sanitize("\xe2\x82x", 3, 0, R "x", true);
	s_check_sanitize("end\xf0\x9f\x98", 6, 0, "end" R, true);
	s_check_sanitize("\xff\xfe", 2, 0, R R, true);
	/* NUL kept when allowed (only for length-carrying outputs). */
	size_t n;
	char *out = ahp_utf8_sanitize("a\0b", 3, AHP_UTF8_ALLOW_NUL, &n, NULL);
	assert_non_null(out);
	assert_int_equal(n, 3);
	assert_memory_equal(out, "a\0b", 3);
	free(out);
}

/* Large inputs full of problems finish (the ctest timeout bounds this test):
 * the sanitizer is linear, not quadratic, in NULs and in invalid bytes. */
static void
t_sanitize_large(void **state)
{
	(void)state;
	size_t n = 8u << 20;
	char *in = calloc(1, n); /* 8 MiB of NUL */
	assert_non_null(in);
	size_t outlen = 0;
	bool changed = false;
	char *out = ahp_utf8_sanitize(in, n, 0, &outlen, &changed);
	assert_non_null(out);
	assert_int_equal(outlen, 3 * n);
	assert_true(changed);
	assert_memory_equal(out + 3 * (n - 1), R, 3);
	free(out);
	/* Invalid bytes with one NUL far behind them. */
	memset(in, 0xff, n - 1);
	in[n - 1] = '\0';
	out = ahp_utf8_sanitize(in, n, 0, &outlen, NULL);
	assert_non_null(out);
	assert_int_equal(outlen, 3 * n);
	free(out);
	/* Valid text between NULs. */
	for (size_t i = 0; i < n; i++)
		in[i] = (i % 2) ? 'a' : '\0';
	out = ahp_utf8_sanitize(in, n, 0, &outlen, NULL);
	assert_non_null(out);
	assert_int_equal(outlen, n / 2 * 4);
	assert_memory_equal(out, R "a" R "a", 8);
	free(out);
	free(in);
}

static void
t_blank(void **state)
{
	(void)state;
	assert_true(ahp_text_blank(""));
	assert_true(ahp_text_blank(" \t\r\n"));
	assert_true(ahp_text_blank("\xe3\x80\x80\xc2\xa0\xe2\x80\xa8")); /* U+3000 U+00A0 U+2028 */
	assert_false(ahp_text_blank(" x "));
	assert_false(ahp_text_blank("\xe2\x80\x8b")); /* U+200B is not White_Space */
	assert_false(ahp_text_blank(" \xff"));        /* invalid UTF-8 is not blank */
}

static void
t_prefix(void **state)
{
	(void)state;
	assert_int_equal(ahp_utf8_prefix("abc", 10), 3);
	assert_int_equal(ahp_utf8_prefix("abc", 2), 2);
	/* "é" is 2 bytes: a cut after its first byte drops it. */
	assert_int_equal(ahp_utf8_prefix("a\xc3\xa9z", 2), 1);
	assert_int_equal(ahp_utf8_prefix("a\xc3\xa9z", 3), 3);
	assert_int_equal(ahp_utf8_prefix("\xf0\x9f\x98\x80", 3), 0);
	assert_int_equal(ahp_utf8_prefix("\xf0\x9f\x98\x80", 4), 4);
	assert_int_equal(ahp_utf8_prefix("", 0), 0);
}

static void
s_check_escape(const char *in, int flags, const char *want)
{
	char *out = ahp_term_escape(in, strlen(in), flags);
	assert_non_null(out);
	assert_string_equal(out, want);
	free(out);
}

static void
t_escape(void **state)
{
	(void)state;
	/* The instance: a command that hides itself behind CR + erase line. */
	s_check_escape("rm -rf /workspace/important #\r\x1b[2K[sandbox] $ ls /workspace", 0,
	               "rm -rf /workspace/important #\\x0d\\x1b[2K[sandbox] $ ls /workspace");
	/* OSC 52 (clipboard) and OSC 0 (title). */
	s_check_escape("\x1b]52;c;ZXZpbA==\x07", 0, "\\x1b]52;c;ZXZpbA==\\x07");
	s_check_escape("\x1b]0;owned\x1b\\", 0, "\\x1b]0;owned\\x1b\\");
	/* C1 CSI (U+009B) and DEL. */
	s_check_escape("a\xc2\x9b"
	               "31mb\x7f",
	               0, "a\\xc2\\x9b31mb\\x7f");
	/* Newline and tab pass unless one line is asked for. */
	s_check_escape("a\tb\nc", 0, "a\tb\nc");
	s_check_escape("a\tb\nc", AHP_TERM_ONE_LINE, "a\\x09b\\x0ac");
	/* Printable Unicode passes; bidi overrides are shown. */
	s_check_escape("caf\xc3\xa9 \xf0\x9f\x98\x80", 0, "caf\xc3\xa9 \xf0\x9f\x98\x80");
	s_check_escape("x\xe2\x80\xaey", 0, "x\\u{202e}y");
	s_check_escape("a\xe2\x80\xa8"
	               "b\xef\xbb\xbf"
	               "c\xe2\x80\x8f",
	               0, "a\\u{2028}b\\u{feff}c\\u{200f}");
	/* Invalid UTF-8 bytes are shown, never passed on. */
	s_check_escape("\xc0\x80/\xff", 0, "\\xc0\\x80/\\xff");
	s_check_escape("", 0, "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_valid),          cmocka_unit_test(t_sanitize),
	    cmocka_unit_test(t_sanitize_large), cmocka_unit_test(t_prefix),
	    cmocka_unit_test(t_blank),          cmocka_unit_test(t_escape),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
