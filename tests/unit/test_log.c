/* Unit tests for logfmt escaping and the shape of a log line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ahp/log.h"
#include "ahp/text.h"

static void
test_plain_not_quoted(void **state)
{
	(void)state;
	char buf[64];
	assert_string_equal(ahp_log_escape("hello", buf, sizeof buf), "hello");
	assert_string_equal(ahp_log_escape("", buf, sizeof buf), "\"\"");
	assert_string_equal(ahp_log_escape(NULL, buf, sizeof buf), "\"\"");
}

static void
test_quotes_and_spaces(void **state)
{
	(void)state;
	char buf[64];
	assert_string_equal(ahp_log_escape("a b", buf, sizeof buf), "\"a b\"");
	/* Invalid UTF-8 and C1 controls are shown as bytes; valid UTF-8 passes
	 * (a file named "a\x1b]0;PWN\x07\xff.yaml" must not reach a log raw). */
	assert_string_equal(ahp_log_escape("a\x1b]0;PWN\x07\xff.yaml", buf, sizeof buf),
	                    "\"a\\x1b]0;PWN\\x07\\xff.yaml\"");
	assert_string_equal(ahp_log_escape("caf\xc3\xa9\xc2\x9b\xc0\x80", buf, sizeof buf),
	                    "caf\xc3\xa9\\xc2\\x9b\\xc0\\x80");
	assert_string_equal(ahp_log_escape("say \"hi\"", buf, sizeof buf), "\"say \\\"hi\\\"\"");
	assert_string_equal(ahp_log_escape("k=v", buf, sizeof buf), "\"k=v\"");
	assert_string_equal(ahp_log_escape("a\\b", buf, sizeof buf), "\"a\\\\b\"");
}

static void
test_newlines_and_control(void **state)
{
	(void)state;
	char buf[64];
	assert_string_equal(ahp_log_escape("a\nb", buf, sizeof buf), "\"a\\nb\"");
	assert_string_equal(ahp_log_escape("a\r\tb", buf, sizeof buf), "\"a\\r\\tb\"");
	assert_string_equal(ahp_log_escape("\x01\x1b[31m", buf, sizeof buf), "\"\\x01\\x1b[31m\"");
	assert_string_equal(ahp_log_escape("del\x7f", buf, sizeof buf), "\"del\\x7f\"");
	/* UTF-8 passes through untouched. */
	assert_string_equal(ahp_log_escape("caf\xc3\xa9", buf, sizeof buf), "caf\xc3\xa9");
}

static void
test_truncation_keeps_quotes(void **state)
{
	(void)state;
	char buf[8];
	ahp_log_escape("a b c d e f g", buf, sizeof buf);
	assert_int_equal(strlen(buf), 7);
	assert_int_equal(buf[0], '"');
	assert_int_equal(buf[6], '"');
	/* An escape sequence is never cut in half. */
	ahp_log_escape("ab\ncdef", buf, 6);
	assert_string_equal(buf, "\"ab\"");
	ahp_log_escape("abcdefghijk", buf, 4);
	assert_string_equal(buf, "abc");
}

/* Runs fn with stderr redirected to a temp file and returns what was written. */
static char *
s_capture(void (*fn)(void))
{
	char path[] = "/tmp/ahp-test-log-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	int saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	fn();
	dup2(saved, STDERR_FILENO);
	close(saved);
	off_t end = lseek(fd, 0, SEEK_END);
	char *out = calloc(1, (size_t)end + 1);
	assert_non_null(out);
	assert_int_equal(pread(fd, out, (size_t)end, 0), end);
	close(fd);
	return out;
}

static void
s_log_some(void)
{
	ahp_log_init("testd", AHP_LOG_INFO);
	log_debug("hidden");
	ahp_log(AHP_LOG_WARN, "r-1", "3", "evil \"input\"\nlevel=error msg=forged");
	ahp_log_kv(AHP_LOG_INFO, NULL, NULL, "kv", "path", "/a b", "n", "7", NULL);
}

static void
test_line_shape(void **state)
{
	(void)state;
	unsetenv("AHP_LOG_LEVEL");
	char *out = s_capture(s_log_some);
	/* Exactly two lines: the debug line is filtered, the newline in the
	 * message cannot start a forged third line. */
	int lines = 0;
	for (char *p = out; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 2);
	assert_null(strstr(out, "hidden"));
	assert_memory_equal(out, "ts=", 3);
	/* ts=YYYY-MM-DDTHH:MM:SS.mmmZ */
	assert_int_equal(out[3 + 4], '-');
	assert_int_equal(out[3 + 10], 'T');
	assert_int_equal(out[3 + 19], '.');
	assert_int_equal(out[3 + 23], 'Z');
	assert_non_null(strstr(out, " level=warn daemon=testd run=r-1 step=3 msg=\"evil "
	                            "\\\"input\\\"\\nlevel=error msg=forged\"\n"));
	assert_non_null(strstr(out, " level=info daemon=testd msg=kv path=\"/a b\" n=7\n"));
	free(out);
}

static void
s_log_env(void)
{
	setenv("AHP_LOG_LEVEL", "error", 1);
	ahp_log_init("testd", AHP_LOG_DEBUG);
	log_warn("not shown");
	log_error("shown");
	unsetenv("AHP_LOG_LEVEL");
	ahp_log_init("testd", AHP_LOG_INFO);
}

static void
test_env_level(void **state)
{
	(void)state;
	char *out = s_capture(s_log_env);
	assert_null(strstr(out, "not shown"));
	assert_non_null(strstr(out, "level=error daemon=testd msg=shown\n"));
	free(out);
}

/* The one parser of level names (log_level keys, AHP_LOG_LEVEL). */
static void
test_level_parse(void **state)
{
	(void)state;
	assert_int_equal(ahp_log_level_parse("debug"), AHP_LOG_DEBUG);
	assert_int_equal(ahp_log_level_parse("INFO"), AHP_LOG_INFO);
	assert_int_equal(ahp_log_level_parse("warn"), AHP_LOG_WARN);
	assert_int_equal(ahp_log_level_parse("Warning"), AHP_LOG_WARN);
	assert_int_equal(ahp_log_level_parse("error"), AHP_LOG_ERROR);
	assert_int_equal(ahp_log_level_parse("loud"), -1);
	assert_int_equal(ahp_log_level_parse(""), -1);
	assert_int_equal(ahp_log_level_parse("info "), -1);
	assert_int_equal(ahp_log_level_parse(NULL), -1);
}

/* Every byte alone between two letters: the printable ASCII ones but '"',
 * '=' and '\\' pass as they are (the copy fast path); a control byte, a
 * space and those three make the value quoted; a byte above 0x7f alone is
 * not UTF-8 and is shown as \xNN. */
static void
test_every_byte(void **state)
{
	(void)state;
	char in[4], buf[32];
	for (int c = 1; c < 256; c++) {
		in[0] = 'a';
		in[1] = (char)c;
		in[2] = 'b';
		in[3] = '\0';
		ahp_log_escape(in, buf, sizeof buf);
		int plain = c > ' ' && c < 0x7f && c != '"' && c != '=' && c != '\\';
		char hex[16];
		snprintf(hex, sizeof hex, "a\\x%02xb", c);
		if (plain)
			assert_string_equal(buf, in);
		else if (c >= 0x80) /* a lone byte: invalid UTF-8, shown as \xNN */
			assert_string_equal(buf, hex);
		else
			assert_int_equal(buf[0], '"');
	}
	/* A plain value that just fits, and one a byte too long. */
	assert_string_equal(ahp_log_escape("abcdefg", buf, 8), "abcdefg");
	assert_string_equal(ahp_log_escape("abcdefgh", buf, 8), "abcdefg");
}

/* The same at every position of a 17-byte value: the plain check reads
 * eight bytes at a time (two words and a tail), so each byte is tried in
 * each lane of each word, through the escaper and through a logged line. */
static void
test_every_byte_every_lane(void **state)
{
	(void)state;
	char in[18], buf[64], want[64];
	for (int c = 1; c < 256; c++) {
		for (int i = 0; i < 17; i++) {
			memset(in, 'a', 17);
			in[17] = '\0';
			in[i] = (char)c;
			ahp_log_escape(in, buf, sizeof buf);
			int plain = c > ' ' && c < 0x7f && c != '"' && c != '=' && c != '\\';
			if (plain) {
				assert_string_equal(buf, in);
			} else if (c >= 0x80) {
				snprintf(want, sizeof want, "%.*s\\x%02x%s", i, in, c, in + i + 1);
				assert_string_equal(buf, want);
			} else {
				assert_int_equal(buf[0], '"');
				assert_int_equal(buf[strlen(buf) - 1], '"');
			}
		}
	}
}

static void
s_log_lanes(void)
{
	ahp_log_init("lanes", AHP_LOG_INFO);
	char v[18];
	for (int c = 1; c < 256; c++) {
		memset(v, 'a', 17);
		v[17] = '\0';
		v[c % 17] = (char)c;
		ahp_log_kv(AHP_LOG_INFO, NULL, NULL, "m", "v", v, NULL);
	}
}

static void
test_line_every_byte(void **state)
{
	(void)state;
	char *out = s_capture(s_log_lanes);
	char *line = out;
	for (int c = 1; c < 256; c++) {
		char v[18], esc[64], want[96];
		memset(v, 'a', 17);
		v[17] = '\0';
		v[c % 17] = (char)c;
		ahp_log_escape(v, esc, sizeof esc);
		snprintf(want, sizeof want, " msg=m v=%s\n", esc);
		char *nl = strchr(line, '\n');
		assert_non_null(nl);
		char *at = strstr(line, " msg=m v=");
		assert_non_null(at);
		assert_memory_equal(at, want, strlen(want));
		assert_ptr_equal(at + strlen(want) - 1, nl);
		int plain = c > ' ' && c < 0x7f && c != '"' && c != '=' && c != '\\';
		if (plain)
			assert_string_equal(esc, v);
		line = nl + 1;
	}
	assert_int_equal(*line, '\0');
	free(out);
}

static char s_big[20000];

static void
s_log_big(void)
{
	ahp_log_init("big", AHP_LOG_INFO);
	memset(s_big, 'x', sizeof s_big - 1);
	ahp_log_kv(AHP_LOG_INFO, NULL, NULL, "m", "v", s_big, "after", "1", NULL);
	s_big[5] = ' ';
	ahp_log_kv(AHP_LOG_INFO, NULL, NULL, "m", "v", s_big, "after", "2", NULL);
}

/* A value longer than an escaped value may be (4 * 4096 + 2 bytes) is cut
 * there, plain or not, and the pairs after it still follow. */
static void
test_long_value(void **state)
{
	(void)state;
	char *out = s_capture(s_log_big);
	char *l1 = strstr(out, " v=");
	assert_non_null(l1);
	assert_int_equal(strspn(l1 + 3, "x"), 4 * 4096 + 2);
	assert_memory_equal(l1 + 3 + 4 * 4096 + 2, " after=1\n", 9);
	char *l2 = strstr(l1 + 1, " v=\"xxxxx x");
	assert_non_null(l2);
	/* Quoted: the opening quote, 4 * 4096 bytes, the closing quote. */
	assert_memory_equal(l2 + 3 + 4 * 4096 + 1, "\" after=2\n", 10);
	free(out);
}

static char s_big2[3000];

static void
s_log_full(void)
{
	ahp_log_init("full", AHP_LOG_INFO);
	/* quoted values (a space each) of 3 KiB: the line (17 KiB) is full at
	 * the sixth; then UTF-8 (2 bytes a character) cut at the line's end */
	memset(s_big2, 'y', sizeof s_big2 - 1);
	s_big2[1] = ' ';
	ahp_log_kv(AHP_LOG_INFO, NULL, NULL, "m", "a", s_big2, "b", s_big2, "c", s_big2, "d",
	           s_big2, "e", s_big2, "f", s_big2, "g", s_big2, NULL);
	for (size_t i = 0; i + 2 < sizeof s_big2; i += 2)
		memcpy(s_big2 + i, "\xc3\xa9", 2);
	s_big2[sizeof s_big2 - 2] = '\0';
	memcpy(s_big2, "  ", 2); /* quoted */
	ahp_log_kv(AHP_LOG_INFO, NULL, NULL, "m", "a", s_big2, "b", s_big2, "c", s_big2, "d",
	           s_big2, "e", s_big2, "f", s_big2, "g", s_big2, "h", s_big2, "i", s_big2, NULL);
}

/* A full line (values cut at its end) still parses: its last value is
 * closed by its quote, the newline follows it, and no UTF-8 sequence is cut. */
static void
test_full_line(void **state)
{
	(void)state;
	char *out = s_capture(s_log_full);
	int lines = 0;
	for (char *l = out, *nl; (nl = strchr(l, '\n')) != NULL; l = nl + 1, lines++) {
		assert_true(nl - l > 16 * 1024);
		assert_int_equal(nl[-1], '"');
		int quotes = 0;
		for (char *p = l; p < nl; p++)
			if (*p == '\\')
				p++;
			else if (*p == '"')
				quotes++;
		assert_int_equal(quotes % 2, 0);
		assert_true(ahp_utf8_valid(l, (size_t)(nl - l), 0));
	}
	assert_int_equal(lines, 2);
	free(out);
}

static void
s_log_keys(void)
{
	ahp_log_init("one", AHP_LOG_INFO);
	ahp_log_kv(AHP_LOG_INFO, "r 1", NULL, "k", "a b", "v1", "", "v2", "c=d", "v3", "ok",
	           "caf\xc3\xa9", NULL);
	ahp_log_init("t\"wo", AHP_LOG_INFO);
	ahp_log_kv(AHP_LOG_INFO, NULL, NULL, "k", "n", "", NULL);
}

/* Keys that are not plain become bad_key; the daemon's name, kept escaped
 * between lines, follows ahp_log_init. */
static void
test_keys_and_daemon(void **state)
{
	(void)state;
	char *out = s_capture(s_log_keys);
	assert_non_null(strstr(out, " level=info daemon=one run=\"r 1\" msg=k bad_key=v1 "
	                            "bad_key=v2 bad_key=v3 ok=caf\xc3\xa9\n"));
	assert_non_null(strstr(out, " level=info daemon=\"t\\\"wo\" msg=k n=\"\"\n"));
	free(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_not_quoted),
	    cmocka_unit_test(test_quotes_and_spaces),
	    cmocka_unit_test(test_newlines_and_control),
	    cmocka_unit_test(test_truncation_keeps_quotes),
	    cmocka_unit_test(test_line_shape),
	    cmocka_unit_test(test_env_level),
	    cmocka_unit_test(test_level_parse),
	    cmocka_unit_test(test_every_byte),
	    cmocka_unit_test(test_every_byte_every_lane),
	    cmocka_unit_test(test_line_every_byte),
	    cmocka_unit_test(test_long_value),
	    cmocka_unit_test(test_full_line),
	    cmocka_unit_test(test_keys_and_daemon),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
