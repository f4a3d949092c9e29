/* libahp: the PROXY protocol v2 header naming a sandbox's run and profile (ahp/proxyv2.h). */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "ahp/proxyv2.h"

/* proxy-protocol.txt section 2.2: the 12-byte signature, then ver_cmd, fam,
 * and the length of what follows (addresses + TLVs), big-endian. */
static const uint8_t s_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                  0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
#define S_FIXED 16
#define S_VER_CMD 0x21 /* version 2, command PROXY */

static bool
s_allowed(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == ':' || c == '-';
}

/* 0 when the n bytes at v are a valid value, else the reason's index. */
enum { S_OK, S_EMPTY, S_LONG, S_BYTE };
static int
s_check_value(const uint8_t *v, size_t n)
{
	if (n == 0)
		return S_EMPTY;
	if (n > AHP_PP2_VALUE_MAX)
		return S_LONG;
	for (size_t i = 0; i < n; i++)
		if (!s_allowed(v[i]))
			return S_BYTE;
	return S_OK;
}

static uint8_t *
s_put_tlv(uint8_t *p, uint8_t type, const char *v, size_t n)
{
	p[0] = type;
	p[1] = (uint8_t)(n >> 8);
	p[2] = (uint8_t)n;
	memcpy(p + 3, v, n);
	return p + 3 + n;
}

ssize_t
ahp_proxyv2_encode(const char *run, const char *profile, uint8_t *buf, size_t cap)
{
	if (run == NULL || profile == NULL) {
		errno = EINVAL;
		return -1;
	}
	/* strnlen: a value longer than the maximum is refused without reading
	 * all of it */
	size_t rl = strnlen(run, AHP_PP2_VALUE_MAX + 1);
	size_t pl = strnlen(profile, AHP_PP2_VALUE_MAX + 1);
	if (s_check_value((const uint8_t *)run, rl) != S_OK ||
	    s_check_value((const uint8_t *)profile, pl) != S_OK) {
		errno = EINVAL;
		return -1;
	}
	size_t body = 3 + rl + 3 + pl;
	size_t total = S_FIXED + body; /* at most 16 + 262: under AHP_PP2_HEADER_MAX */
	if (buf == NULL || cap < total) {
		errno = ENOBUFS;
		return -1;
	}
	memcpy(buf, s_sig, sizeof(s_sig));
	buf[12] = S_VER_CMD;
	buf[13] = 0x00; /* AF_UNSPEC, UNSPEC: no address block */
	buf[14] = (uint8_t)(body >> 8);
	buf[15] = (uint8_t)body;
	uint8_t *p = s_put_tlv(buf + S_FIXED, AHP_PP2_TYPE_RUN, run, rl);
	(void)s_put_tlv(p, AHP_PP2_TYPE_PROFILE, profile, pl);
	return (ssize_t)total;
}

/* Bytes of the address block for a fam byte (section 2.2), -1 when unknown. */
static int
s_addr_len(uint8_t fam)
{
	switch (fam) {
	case 0x00: /* AF_UNSPEC */
		return 0;
	case 0x11: /* TCP over IPv4 */
	case 0x12: /* UDP over IPv4 */
		return 12;
	case 0x21: /* TCP over IPv6 */
	case 0x22: /* UDP over IPv6 */
		return 36;
	case 0x31: /* AF_UNIX stream */
	case 0x32: /* AF_UNIX datagram */
		return 216;
	default:
		return -1;
	}
}

static const char *const s_run_why[] = {
    [S_EMPTY] = "PROXY v2: the run TLV is empty",
    [S_LONG] = "PROXY v2: the run TLV is longer than 128 bytes",
    [S_BYTE] = "PROXY v2: the run TLV holds a byte outside [A-Za-z0-9._:-]",
};
static const char *const s_profile_why[] = {
    [S_EMPTY] = "PROXY v2: the profile TLV is empty",
    [S_LONG] = "PROXY v2: the profile TLV is longer than 128 bytes",
    [S_BYTE] = "PROXY v2: the profile TLV holds a byte outside [A-Za-z0-9._:-]",
};

ssize_t
ahp_proxyv2_decode(const uint8_t *buf, size_t len, char *run, char *profile, const char **why)
{
	const char *unused;
	if (why == NULL)
		why = &unused;
	*why = NULL;
	if (buf == NULL || len == 0)
		return 0;
	/* Refuse as soon as the bytes seen so far cannot start a header: a
	 * client speaking HTTP straight away is told at its first bytes. */
	size_t n = len < sizeof(s_sig) ? len : sizeof(s_sig);
	if (memcmp(buf, s_sig, n) != 0) {
		*why = "PROXY v2: bad signature (not a PROXY protocol v2 header)";
		return -1;
	}
	if (len > 12 && (buf[12] >> 4) != 0x2) {
		*why = "PROXY v2: the version is not 2";
		return -1;
	}
	if (len > 12 && (buf[12] & 0x0F) != 0x1) {
		*why = "PROXY v2: the command is not PROXY";
		return -1;
	}
	if (len > 13 && s_addr_len(buf[13]) < 0) {
		*why = "PROXY v2: unknown address family or protocol";
		return -1;
	}
	if (len < S_FIXED)
		return 0;
	size_t body = ((size_t)buf[14] << 8) | buf[15];
	size_t total = S_FIXED + body;
	if (total > AHP_PP2_HEADER_MAX) {
		*why = "PROXY v2: the header is longer than 512 bytes";
		return -1;
	}
	size_t alen = (size_t)s_addr_len(buf[13]);
	if (alen > body) {
		*why = "PROXY v2: the address block overruns the header";
		return -1;
	}
	if (len < total)
		return 0;

	/* The TLVs: each type, a big-endian length, the value. */
	const uint8_t *rv = NULL, *pv = NULL;
	size_t rn = 0, pn = 0;
	size_t off = S_FIXED + alen;
	while (off < total) {
		if (total - off < 3) {
			*why = "PROXY v2: a TLV overruns the header";
			return -1;
		}
		uint8_t type = buf[off];
		size_t vl = ((size_t)buf[off + 1] << 8) | buf[off + 2];
		if (vl > total - off - 3) {
			*why = "PROXY v2: a TLV overruns the header";
			return -1;
		}
		const uint8_t *v = buf + off + 3;
		if (type == AHP_PP2_TYPE_RUN) {
			if (rv != NULL) {
				*why = "PROXY v2: the run TLV is repeated";
				return -1;
			}
			rv = v;
			rn = vl;
		} else if (type == AHP_PP2_TYPE_PROFILE) {
			if (pv != NULL) {
				*why = "PROXY v2: the profile TLV is repeated";
				return -1;
			}
			pv = v;
			pn = vl;
		}
		/* any other type (NOOP, CRC32C, ALPN, ...) is skipped */
		off += 3 + vl;
	}
	if (rv == NULL) {
		*why = "PROXY v2: the run TLV is missing";
		return -1;
	}
	if (pv == NULL) {
		*why = "PROXY v2: the profile TLV is missing";
		return -1;
	}
	int r = s_check_value(rv, rn);
	if (r != S_OK) {
		*why = s_run_why[r];
		return -1;
	}
	r = s_check_value(pv, pn);
	if (r != S_OK) {
		*why = s_profile_why[r];
		return -1;
	}
	memcpy(run, rv, rn);
	run[rn] = '\0';
	memcpy(profile, pv, pn);
	profile[pn] = '\0';
	return (ssize_t)total;
}
