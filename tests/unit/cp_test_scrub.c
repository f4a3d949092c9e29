/* Unit tests for credproxy's streaming scrubber: raw, base64 (standard and URL-safe, every
 * alignment) and percent-encoded secrets, split at every byte, overlapping secrets, and a
 * 1 MiB clean stream in linear time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cp.h"

#define REF(n, v)                                                                                  \
	{                                                                                          \
		.name = (n), .value = (const uint8_t *)(v), .len = sizeof(v) - 1                   \
	}

static const cp_secret_ref_t s_wiki[] = {REF("wiki-token", "s3cr3t-wiki-token")};

/* Everything the evbuffer holds, as a NUL-terminated string (caller frees). */
static char *
s_drain(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);
	assert_non_null(s);
	assert_int_equal(evbuffer_remove(b, s, n), (int)n);
	s[n] = '\0';
	return s;
}

/* Feeds in as chunks of the given size (0 = all at once), then final; returns
 * the output and the total count. */
static char *
s_run(const cp_secret_ref_t *secrets, unsigned n, const char *in, size_t len, size_t chunk,
      int *count)
{
	cp_scrub_t *s = cp_scrub_new(secrets, n);
	assert_non_null(s);
	struct evbuffer *out = evbuffer_new();
	assert_non_null(out);
	*count = 0;
	if (chunk == 0)
		chunk = len ? len : 1;
	for (size_t o = 0; o < len; o += chunk) {
		size_t k = len - o < chunk ? len - o : chunk;
		int rc = cp_scrub_feed(s, in + o, k, out, false);
		assert_true(rc >= 0);
		*count += rc;
	}
	int rc = cp_scrub_feed(s, NULL, 0, out, true);
	assert_true(rc >= 0);
	*count += rc;
	char *r = s_drain(out);
	evbuffer_free(out);
	cp_scrub_destroy(&s);
	assert_null(s);
	return r;
}

/* in -> want with count redactions, whatever the chunking: one call, every
 * chunk size from 1 to len, and every two-part split. */
static void
s_expect(const cp_secret_ref_t *secrets, unsigned n, const char *in, const char *want, int count)
{
	size_t len = strlen(in);
	int c;
	for (size_t chunk = 0; chunk <= len; chunk++) {
		char *got = s_run(secrets, n, in, len, chunk, &c);
		if (strcmp(got, want) != 0 || c != count)
			fail_msg("chunk %zu: got '%s' (%d), want '%s' (%d)", chunk, got, c, want,
			         count);
		free(got);
	}
	for (size_t cut = 0; cut <= len; cut++) {
		cp_scrub_t *s = cp_scrub_new(secrets, n);
		struct evbuffer *out = evbuffer_new();
		int a = cp_scrub_feed(s, in, cut, out, false);
		int b = cp_scrub_feed(s, in + cut, len - cut, out, true);
		assert_true(a >= 0 && b >= 0);
		char *got = s_drain(out);
		if (strcmp(got, want) != 0 || a + b != count)
			fail_msg("cut %zu: got '%s' (%d), want '%s' (%d)", cut, got, a + b, want,
			         count);
		free(got);
		evbuffer_free(out);
		cp_scrub_destroy(&s);
	}
}

static void
test_raw(void **state)
{
	(void)state;
	s_expect(s_wiki, 1, "hello s3cr3t-wiki-token bye", "hello [redacted:wiki-token] bye", 1);
	s_expect(s_wiki, 1, "s3cr3t-wiki-token", "[redacted:wiki-token]", 1);
	s_expect(s_wiki, 1, "s3cr3t-wiki-tokens3cr3t-wiki-token",
	         "[redacted:wiki-token][redacted:wiki-token]", 2);
	s_expect(s_wiki, 1, "{\"headers\":{\"Authorization\":\"Bearer s3cr3t-wiki-token\"}}",
	         "{\"headers\":{\"Authorization\":\"Bearer [redacted:wiki-token]\"}}", 1);
	/* Near misses stay. */
	s_expect(s_wiki, 1, "s3cr3t-wiki-toke", "s3cr3t-wiki-toke", 0);
	s_expect(s_wiki, 1, "s3cr3t-wiki-tokEn", "s3cr3t-wiki-tokEn", 0);
	s_expect(s_wiki, 1, "", "", 0);
	s_expect(s_wiki, 1, "ss3cr3t-wiki-tokenn", "s[redacted:wiki-token]n", 1);
}

/* The base64 of "<prefix>s3cr3t-wiki-token!" for each alignment: the
 * characters that depend on the secret alone are replaced. */
static void
test_base64(void **state)
{
	(void)state;
	s_expect(s_wiki, 1, "czNjcjN0LXdpa2ktdG9rZW4h", "[redacted:wiki-token]4h", 1);
	s_expect(s_wiki, 1, "YXMzY3IzdC13aWtpLXRva2VuIQ==", "YX[redacted:wiki-token]IQ==", 1);
	s_expect(s_wiki, 1, "YWJzM2NyM3Qtd2lraS10b2tlbiE=", "YWJ[redacted:wiki-token]iE=", 1);
	s_expect(s_wiki, 1, "Basic YWJzM2NyM3Qtd2lraS10b2tlbiE= x",
	         "Basic YWJ[redacted:wiki-token]iE= x", 1);

	/* Bytes whose encoding holds '+' and '/': standard and URL-safe. */
	static const cp_secret_ref_t sym[] = {REF("sym", "~~~>>>???~~~>>>???")};
	s_expect(sym, 1, "eH5+fj4+Pj8/P35+fj4+Pj8/Pw==", "eH[redacted:sym]w==", 1);
	s_expect(sym, 1, "eH5-fj4-Pj8_P35-fj4-Pj8_Pw==", "eH[redacted:sym]w==", 1);
	/* Mixed alphabets are not a base64 anyone writes. */
	s_expect(sym, 1, "eH5+fj4-Pj8/P35+fj4+Pj8/Pw==", "eH5+fj4-Pj8/P35+fj4+Pj8/Pw==", 0);
}

static void
test_percent(void **state)
{
	(void)state;
	static const cp_secret_ref_t pct[] = {REF("pct", "tok/en+val=ue&x")};
	s_expect(pct, 1, "q=tok%2Fen%2Bval%3Due%26x&r=1", "q=[redacted:pct]&r=1", 1);
	s_expect(pct, 1, "q=tok%2fen%2bval%3due%26x&r=1", "q=[redacted:pct]&r=1", 1);
	s_expect(pct, 1, "raw tok/en+val=ue&x", "raw [redacted:pct]", 1);
	/* Unreserved bytes only: the percent form is the raw form, found once. */
	s_expect(s_wiki, 1, "a s3cr3t-wiki-token", "a [redacted:wiki-token]", 1);
}

static void
test_multiple_and_overlapping(void **state)
{
	(void)state;
	static const cp_secret_ref_t two[] = {REF("a", "AAAAbbbbCCCC"), REF("b", "CCCCddddEEEE")};
	/* Both present apart. */
	s_expect(two, 2, "1 AAAAbbbbCCCC 2 CCCCddddEEEE 3", "1 [redacted:a] 2 [redacted:b] 3", 2);
	/* Overlapping: the whole run goes, both named. */
	s_expect(two, 2, "xAAAAbbbbCCCCddddEEEEy", "x[redacted:a][redacted:b]y", 2);
	/* One inside the other: the longer, leftmost wins. */
	static const cp_secret_ref_t nest[] = {REF("short", "SHORTSECRET"),
	                                       REF("long", "prefix-SHORTSECRET-suffix")};
	s_expect(nest, 2, "<prefix-SHORTSECRET-suffix>", "<[redacted:long]>", 1);
	s_expect(nest, 2, "<SHORTSECRET-suffix>", "<[redacted:short]-suffix>", 1);
	/* Same start, longer wins regardless of order. */
	static const cp_secret_ref_t pre[] = {REF("p1", "abcdefgh"), REF("p2", "abcdefghijkl")};
	s_expect(pre, 2, "-abcdefghijkl-", "-[redacted:p2]-", 1);
	s_expect(pre, 2, "-abcdefghijk-", "-[redacted:p1]ijk-", 1);
	/* A self-overlapping secret. */
	static const cp_secret_ref_t self[] = {REF("aa", "aaaaaaaa")};
	s_expect(self, 1, "aaaaaaaaaa", "[redacted:aa]", 1);
}

/* Shorter than 8 bytes: not searched (it would match ordinary text). */
static void
test_short_and_none(void **state)
{
	(void)state;
	static const cp_secret_ref_t shortv[] = {REF("pin", "1234567")};
	s_expect(shortv, 1, "pin 1234567", "pin 1234567", 0);
	s_expect(NULL, 0, "anything s3cr3t-wiki-token", "anything s3cr3t-wiki-token", 0);
	static const cp_secret_ref_t eight[] = {REF("e", "12345678")};
	s_expect(eight, 1, "pin 12345678", "pin [redacted:e]", 1);
}

/* At most window-1 bytes are held back; final flushes them. */
static void
test_hold_back(void **state)
{
	(void)state;
	cp_scrub_t *s = cp_scrub_new(s_wiki, 1);
	struct evbuffer *out = evbuffer_new();
	/* Only a tail that could begin a pattern waits: text that cannot (an
	 * SSE event's "\n\n") goes out at once, so streams are not delayed. */
	char in[100];
	memset(in, 'x', sizeof in);
	assert_int_equal(cp_scrub_feed(s, in, sizeof in, out, false), 0);
	assert_int_equal(evbuffer_get_length(out), sizeof in);
	/* The start of the secret waits for what follows... */
	assert_int_equal(cp_scrub_feed(s, "s3cr3t", 6, out, false), 0);
	assert_int_equal(evbuffer_get_length(out), sizeof in);
	/* ... and once complete it is redacted without waiting for the end. */
	assert_int_equal(cp_scrub_feed(s, "-wiki-token", 11, out, false), 1);
	assert_int_equal(evbuffer_get_length(out), sizeof in + strlen("[redacted:wiki-token]"));
	assert_int_equal(cp_scrub_feed(s, NULL, 0, out, true), 0);
	char *got = s_drain(out);
	assert_int_equal(strlen(got), sizeof in + strlen("[redacted:wiki-token]"));
	assert_string_equal(got + sizeof in, "[redacted:wiki-token]");
	free(got);
	/* An SSE event: nothing of it is held. */
	assert_int_equal(cp_scrub_feed(s, "data: first\n\n", 13, out, false), 0);
	assert_int_equal(evbuffer_get_length(out), 13);
	evbuffer_free(out);
	cp_scrub_destroy(&s);
	cp_scrub_destroy(NULL);
}

/* 1 MiB without a secret passes unchanged, in time linear in its size: 16
 * MiB must not take more than ~20x as long as 1 MiB (quadratic would be 256x). */
static double
s_time_clean(size_t size, size_t chunk)
{
	static const cp_secret_ref_t many[] = {
	    REF("a", "s3cr3t-wiki-token"), REF("b", "AKIA-0123456789"), REF("c", "tok/en+val=ue&x"),
	    REF("d", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab")};
	char *in = malloc(size);
	assert_non_null(in);
	/* Text that keeps starting patterns: many partial matches. */
	for (size_t i = 0; i < size; i++)
		in[i] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaas3cr3t-wikiAKIA-01"[i % 50];
	cp_scrub_t *s = cp_scrub_new(many, 4);
	struct evbuffer *out = evbuffer_new();
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t o = 0; o < size; o += chunk)
		assert_int_equal(
		    cp_scrub_feed(s, in + o, size - o < chunk ? size - o : chunk, out, false), 0);
	assert_int_equal(cp_scrub_feed(s, NULL, 0, out, true), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(evbuffer_get_length(out), size);
	char *got = s_drain(out);
	assert_memory_equal(got, in, size);
	free(got);
	free(in);
	evbuffer_free(out);
	cp_scrub_destroy(&s);
	return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

static void
test_linear_clean_stream(void **state)
{
	(void)state;
	double one = s_time_clean(1 << 20, 16384);
	double whole = s_time_clean(1 << 20, 1 << 20);
	double sixteen = s_time_clean(16 << 20, 16384);
	/* Loose bounds, not a ratio (a loaded CI machine must not fail this):
	 * a quadratic scrubber takes minutes on 16 MiB, a linear one well under
	 * a second. */
	assert_true(one < 5.0);
	assert_true(whole < 5.0);
	assert_true(sixteen < 20.0);
}

/* A run of overlapping occurrences (a periodic secret, 1 MiB of it) is one
 * redaction, in linear time, whole or in chunks. */
static void
test_linear_overlapping_run(void **state)
{
	(void)state;
	static const cp_secret_ref_t aa[] = {REF("aa", "aaaaaaaa")};
	size_t size = 1 << 20;
	char *in = malloc(size + 3);
	assert_non_null(in);
	memset(in + 1, 'a', size);
	in[0] = '<';
	in[size + 1] = '>';
	in[size + 2] = '\0';
	size_t chunks[] = {0, 4096, 7};
	for (size_t c = 0; c < 3; c++) {
		struct timespec t0, t1;
		int count;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		char *got = s_run(aa, 1, in, size + 2, chunks[c], &count);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		assert_string_equal(got, "<[redacted:aa]>");
		assert_int_equal(count, 1);
		double secs =
		    (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		/* Quadratic would be about 10^12 steps; the bound is loose so that
		 * a loaded or sanitized build never trips it. */
		if (secs > 30.0)
			fail_msg("chunk %zu: %.3fs for 1 MiB", chunks[c], secs);
		free(got);
	}
	free(in);
}

static void
test_string(void **state)
{
	(void)state;
	char out[64];
	const char *v = "Bearer s3cr3t-wiki-token";
	assert_int_equal(cp_scrub_string(s_wiki, 1, v, strlen(v), out, sizeof out), 1);
	assert_string_equal(out, "Bearer [redacted:wiki-token]");
	/* Truncated to outlen, NUL-terminated. */
	char small[12];
	assert_int_equal(cp_scrub_string(s_wiki, 1, v, strlen(v), small, sizeof small), 1);
	assert_string_equal(small, "Bearer [red");
	/* No secret: copied. */
	assert_int_equal(cp_scrub_string(s_wiki, 1, "plain", 5, out, sizeof out), 0);
	assert_string_equal(out, "plain");
	assert_int_equal(cp_scrub_string(NULL, 0, "plain", 5, out, sizeof out), 0);
	assert_string_equal(out, "plain");
	/* in need not be NUL-terminated. */
	assert_int_equal(cp_scrub_string(s_wiki, 1, "s3cr3t-wiki-tokenXYZ", 17, out, sizeof out),
	                 1);
	assert_string_equal(out, "[redacted:wiki-token]");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_raw),
	    cmocka_unit_test(test_base64),
	    cmocka_unit_test(test_percent),
	    cmocka_unit_test(test_multiple_and_overlapping),
	    cmocka_unit_test(test_short_and_none),
	    cmocka_unit_test(test_hold_back),
	    cmocka_unit_test(test_linear_clean_stream),
	    cmocka_unit_test(test_linear_overlapping_run),
	    cmocka_unit_test(test_string),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
