/* Unit tests for the PROXY protocol v2 header (common/proxyv2.c, ahp/proxyv2.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/proxyv2.h"

static const uint8_t s_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                  0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A hand-built header: fam, then the TLV bytes given (the address block, if
 * any, is part of tlvs). The length field covers exactly tlvs. */
static size_t
s_build(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *tlvs, size_t n)
{
	memcpy(out, s_sig, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(n >> 8);
	out[15] = (uint8_t)n;
	memcpy(out + 16, tlvs, n);
	return 16 + n;
}

static size_t
s_tlv(uint8_t *p, uint8_t type, const void *v, size_t n)
{
	p[0] = type;
	p[1] = (uint8_t)(n >> 8);
	p[2] = (uint8_t)n;
	memcpy(p + 3, v, n);
	return 3 + n;
}

/* Decodes buf and checks for -1 with exactly the reason want. */
static void
s_refused(const uint8_t *buf, size_t len, const char *want)
{
	char run[AHP_PP2_VALUE_MAX + 1], profile[AHP_PP2_VALUE_MAX + 1];
	const char *why = NULL;
	assert_int_equal(ahp_proxyv2_decode(buf, len, run, profile, &why), -1);
	assert_non_null(why);
	assert_string_equal(why, want);
}

static void
test_encode_exact_bytes(void **state)
{
	(void)state;
	uint8_t buf[AHP_PP2_HEADER_MAX];
	ssize_t n = ahp_proxyv2_encode("run-1", "wiki-bot", buf, sizeof buf);
	static const uint8_t want[] = {
	    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, /* sig */
	    0x21, 0x00, 0x00, 0x13,                                                 /* 19 */
	    0xE0, 0x00, 0x05, 'r',  'u',  'n',  '-',  '1',                          /* run */
	    0xE1, 0x00, 0x08, 'w',  'i',  'k',  'i',  '-',  'b',  'o',  't'};       /* profile */
	assert_int_equal(n, sizeof want);
	assert_memory_equal(buf, want, sizeof want);
}

static void
test_round_trip(void **state)
{
	(void)state;
	uint8_t buf[AHP_PP2_HEADER_MAX];
	char run[AHP_PP2_VALUE_MAX + 1], profile[AHP_PP2_VALUE_MAX + 1];
	char longest[AHP_PP2_VALUE_MAX + 1];
	memset(longest, 'z', AHP_PP2_VALUE_MAX);
	longest[AHP_PP2_VALUE_MAX] = '\0';
	const char *cases[][2] = {{"a", "b"},
	                          {"cli-0123456789abcdef", "release-notes"},
	                          {"A.Z_a:z-09", "x"},
	                          {longest, longest}};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		ssize_t n = ahp_proxyv2_encode(cases[i][0], cases[i][1], buf, sizeof buf);
		assert_true(n > 16);
		assert_int_equal(n, 16 + 6 + strlen(cases[i][0]) + strlen(cases[i][1]));
		const char *why = "unset";
		/* trailing bytes (the request that follows) are not part of it */
		memcpy(buf + n, "GET http://x/ HTTP/1.1\r\n", 24);
		assert_int_equal(ahp_proxyv2_decode(buf, (size_t)n + 24, run, profile, &why), n);
		assert_string_equal(run, cases[i][0]);
		assert_string_equal(profile, cases[i][1]);
	}
}

static void
test_encode_refuses(void **state)
{
	(void)state;
	uint8_t buf[AHP_PP2_HEADER_MAX];
	char over[AHP_PP2_VALUE_MAX + 2];
	memset(over, 'a', sizeof over - 1);
	over[sizeof over - 1] = '\0';
	const char *bad[] = {"", over, "a b", "a/b", "é", "a\nb", "a\"", "x%y", "a+b"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		errno = 0;
		assert_int_equal(ahp_proxyv2_encode(bad[i], "p", buf, sizeof buf), -1);
		assert_int_equal(errno, EINVAL);
		errno = 0;
		assert_int_equal(ahp_proxyv2_encode("r", bad[i], buf, sizeof buf), -1);
		assert_int_equal(errno, EINVAL);
	}
	errno = 0;
	assert_int_equal(ahp_proxyv2_encode(NULL, "p", buf, sizeof buf), -1);
	assert_int_equal(errno, EINVAL);
	/* 16 + 3 + 1 + 3 + 1 = 24 bytes: a byte short is ENOBUFS, exact fits */
	errno = 0;
	assert_int_equal(ahp_proxyv2_encode("r", "p", buf, 23), -1);
	assert_int_equal(errno, ENOBUFS);
	assert_int_equal(ahp_proxyv2_encode("r", "p", buf, 24), 24);
}

static void
test_partial_every_prefix(void **state)
{
	(void)state;
	uint8_t buf[AHP_PP2_HEADER_MAX];
	char run[AHP_PP2_VALUE_MAX + 1], profile[AHP_PP2_VALUE_MAX + 1];
	ssize_t n = ahp_proxyv2_encode("run-abc", "release-notes", buf, sizeof buf);
	assert_true(n > 0);
	for (ssize_t i = 0; i < n; i++) {
		/* an exact-size copy: nothing past the prefix may be read */
		uint8_t *p = malloc((size_t)i + 1);
		assert_non_null(p);
		memcpy(p, buf, (size_t)i);
		const char *why = NULL;
		assert_int_equal(ahp_proxyv2_decode(p, (size_t)i, run, profile, &why), 0);
		assert_null(why);
		free(p);
	}
	assert_int_equal(ahp_proxyv2_decode(buf, (size_t)n, run, profile, NULL), n);
	assert_int_equal(ahp_proxyv2_decode(NULL, 0, run, profile, NULL), 0);
}

static void
test_unknown_tlv_and_family_skipped(void **state)
{
	(void)state;
	uint8_t t[AHP_PP2_HEADER_MAX], h[AHP_PP2_HEADER_MAX];
	char run[AHP_PP2_VALUE_MAX + 1], profile[AHP_PP2_VALUE_MAX + 1];
	const char *why = NULL;
	size_t k = 0;
	k += s_tlv(t + k, 0x04, "", 0);   /* PP2_TYPE_NOOP */
	k += s_tlv(t + k, 0x01, "h2", 2); /* PP2_TYPE_ALPN */
	k += s_tlv(t + k, AHP_PP2_TYPE_PROFILE, "p", 1);
	k += s_tlv(t + k, 0xEE, "\0\xff junk", 7); /* another custom type */
	k += s_tlv(t + k, AHP_PP2_TYPE_RUN, "r-1", 3);
	k += s_tlv(t + k, 0x03, "\1\2\3\4", 4); /* PP2_TYPE_CRC32C: not checked */
	size_t n = s_build(h, 0x21, 0x00, t, k);
	assert_int_equal(ahp_proxyv2_decode(h, n, run, profile, &why), (ssize_t)n);
	assert_string_equal(run, "r-1");
	assert_string_equal(profile, "p");

	/* TCP over IPv4: 12 address bytes before the TLVs are skipped */
	uint8_t a[AHP_PP2_HEADER_MAX];
	memset(a, 0x7f, 12);
	size_t m = 12;
	m += s_tlv(a + m, AHP_PP2_TYPE_RUN, "r", 1);
	m += s_tlv(a + m, AHP_PP2_TYPE_PROFILE, "q", 1);
	n = s_build(h, 0x21, 0x11, a, m);
	assert_int_equal(ahp_proxyv2_decode(h, n, run, profile, &why), (ssize_t)n);
	assert_string_equal(run, "r");
	assert_string_equal(profile, "q");
}

static void
test_duplicate_refused(void **state)
{
	(void)state;
	uint8_t t[64], h[128];
	size_t k = 0;
	k += s_tlv(t + k, AHP_PP2_TYPE_RUN, "a", 1);
	k += s_tlv(t + k, AHP_PP2_TYPE_PROFILE, "p", 1);
	k += s_tlv(t + k, AHP_PP2_TYPE_RUN, "b", 1);
	s_refused(h, s_build(h, 0x21, 0, t, k), "PROXY v2: the run TLV is repeated");
	k = 0;
	k += s_tlv(t + k, AHP_PP2_TYPE_PROFILE, "p", 1);
	k += s_tlv(t + k, AHP_PP2_TYPE_RUN, "a", 1);
	k += s_tlv(t + k, AHP_PP2_TYPE_PROFILE, "p", 1);
	s_refused(h, s_build(h, 0x21, 0, t, k), "PROXY v2: the profile TLV is repeated");
}

static void
test_malformed(void **state)
{
	(void)state;
	uint8_t t[AHP_PP2_HEADER_MAX], h[AHP_PP2_HEADER_MAX + 64];
	size_t k = 0;
	k += s_tlv(t + k, AHP_PP2_TYPE_RUN, "r", 1);
	k += s_tlv(t + k, AHP_PP2_TYPE_PROFILE, "p", 1);

	/* signature: a wrong first byte is refused at once, so is HTTP */
	s_refused((const uint8_t *)"G", 1,
	          "PROXY v2: bad signature (not a PROXY protocol v2 header)");
	s_refused((const uint8_t *)"GET http://x/ HTTP/1.1\r\n", 24,
	          "PROXY v2: bad signature (not a PROXY protocol v2 header)");
	size_t n = s_build(h, 0x21, 0, t, k);
	h[11] = 0x0B;
	s_refused(h, 12, "PROXY v2: bad signature (not a PROXY protocol v2 header)");
	s_refused(h, n, "PROXY v2: bad signature (not a PROXY protocol v2 header)");
	/* version 1 in the v2 framing (refused from byte 13 on), and version 3 */
	s_build(h, 0x11, 0, t, k);
	s_refused(h, 13, "PROXY v2: the version is not 2");
	s_refused(h, s_build(h, 0x31, 0, t, k), "PROXY v2: the version is not 2");
	/* LOCAL (0x20) carries no identity; 0x2F is undefined */
	s_build(h, 0x20, 0, t, k);
	s_refused(h, 13, "PROXY v2: the command is not PROXY");
	s_refused(h, s_build(h, 0x2F, 0, t, k), "PROXY v2: the command is not PROXY");
	/* 0x13 (IPv4, protocol 3) and 0x40 (family 4) do not exist */
	s_build(h, 0x21, 0x13, t, k);
	s_refused(h, 14, "PROXY v2: unknown address family or protocol");
	s_refused(h, s_build(h, 0x21, 0x40, t, k), "PROXY v2: unknown address family or protocol");
	/* a length past the ceiling is refused from the fixed part alone */
	n = s_build(h, 0x21, 0, t, k);
	h[14] = 0x01;
	h[15] = 0xF1; /* 16 + 497 = 513 */
	s_refused(h, 16, "PROXY v2: the header is longer than 512 bytes");
	h[14] = 0xFF;
	h[15] = 0xFF;
	s_refused(h, 16, "PROXY v2: the header is longer than 512 bytes");
	/* IPv6 needs 36 address bytes; the length says 8 */
	s_refused(h, s_build(h, 0x21, 0x21, t, k),
	          "PROXY v2: the address block overruns the header");
	/* a TLV header cut short, and a value running past the end */
	s_refused(h, s_build(h, 0x21, 0, t, k + 2), "PROXY v2: a TLV overruns the header");
	uint8_t o[8] = {AHP_PP2_TYPE_RUN, 0x00, 0x09, 'a', 'b'};
	s_refused(h, s_build(h, 0x21, 0, o, 5), "PROXY v2: a TLV overruns the header");
	uint8_t o2[8] = {0x04, 0xFF, 0xFF};
	s_refused(h, s_build(h, 0x21, 0, o2, 3), "PROXY v2: a TLV overruns the header");

	/* missing */
	uint8_t m[32];
	size_t mk = s_tlv(m, AHP_PP2_TYPE_PROFILE, "p", 1);
	s_refused(h, s_build(h, 0x21, 0, m, mk), "PROXY v2: the run TLV is missing");
	mk = s_tlv(m, AHP_PP2_TYPE_RUN, "r", 1);
	s_refused(h, s_build(h, 0x21, 0, m, mk), "PROXY v2: the profile TLV is missing");
	s_refused(h, s_build(h, 0x21, 0, m, 0), "PROXY v2: the run TLV is missing");

	/* empty, too long, a byte outside the set: run, then profile */
	static const struct {
		const char *v;
		size_t n;
		const char *what;
	} bad[] = {
	    {"", 0, "is empty"},
	    {NULL, AHP_PP2_VALUE_MAX + 1, "is longer than 128 bytes"},
	    {"a b", 3, "holds a byte outside [A-Za-z0-9._:-]"},
	    {"a\0b", 3, "holds a byte outside [A-Za-z0-9._:-]"},
	    {"\xc3\xa9", 2, "holds a byte outside [A-Za-z0-9._:-]"},
	    {"a/b", 3, "holds a byte outside [A-Za-z0-9._:-]"},
	    {"a\r\n", 3, "holds a byte outside [A-Za-z0-9._:-]"},
	};
	char lng[AHP_PP2_VALUE_MAX + 1];
	memset(lng, 'a', sizeof lng);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		const char *v = bad[i].v ? bad[i].v : lng;
		char want[128];
		for (int which = 0; which < 2; which++) {
			uint8_t b[AHP_PP2_HEADER_MAX];
			size_t bk = 0;
			bk += s_tlv(b + bk, AHP_PP2_TYPE_RUN, which == 0 ? v : "r",
			            which == 0 ? bad[i].n : 1);
			bk += s_tlv(b + bk, AHP_PP2_TYPE_PROFILE, which == 1 ? v : "p",
			            which == 1 ? bad[i].n : 1);
			snprintf(want, sizeof want, "PROXY v2: the %s TLV %s",
			         which == 0 ? "run" : "profile", bad[i].what);
			s_refused(h, s_build(h, 0x21, 0, b, bk), want);
		}
	}
}

static void
test_over_long_refused(void **state)
{
	(void)state;
	/* exactly 512 bytes with an unknown TLV filling the rest: accepted */
	uint8_t t[AHP_PP2_HEADER_MAX], h[AHP_PP2_HEADER_MAX + 16];
	char run[AHP_PP2_VALUE_MAX + 1], profile[AHP_PP2_VALUE_MAX + 1];
	size_t k = 0;
	k += s_tlv(t + k, AHP_PP2_TYPE_RUN, "r", 1);
	k += s_tlv(t + k, AHP_PP2_TYPE_PROFILE, "p", 1);
	uint8_t pad[AHP_PP2_HEADER_MAX];
	memset(pad, 0, sizeof pad);
	size_t fill = AHP_PP2_HEADER_MAX - 16 - k - 3;
	k += s_tlv(t + k, 0x04, pad, fill);
	size_t n = s_build(h, 0x21, 0, t, k);
	assert_int_equal(n, AHP_PP2_HEADER_MAX);
	assert_int_equal(ahp_proxyv2_decode(h, n, run, profile, NULL), AHP_PP2_HEADER_MAX);
	/* one byte more: refused as soon as the length is known */
	k = 0;
	k += s_tlv(t + k, AHP_PP2_TYPE_RUN, "r", 1);
	k += s_tlv(t + k, AHP_PP2_TYPE_PROFILE, "p", 1);
	k += s_tlv(t + k, 0x04, pad, fill + 1);
	n = s_build(h, 0x21, 0, t, k);
	assert_int_equal(n, AHP_PP2_HEADER_MAX + 1);
	for (size_t i = 16; i <= n; i++)
		s_refused(h, i, "PROXY v2: the header is longer than 512 bytes");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_encode_exact_bytes),
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_encode_refuses),
	    cmocka_unit_test(test_partial_every_prefix),
	    cmocka_unit_test(test_unknown_tlv_and_family_skipped),
	    cmocka_unit_test(test_duplicate_refused),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_over_long_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
