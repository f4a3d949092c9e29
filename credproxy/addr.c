/* credproxy SSRF guard: which resolved addresses are special (RFC 6890 and the
 * IANA IPv4/IPv6 special-purpose address registries, plus cloud metadata). */
#include "cp.h"

#include <string.h>

typedef struct {
	uint32_t net; /* host order */
	unsigned bits;
	const char *cls;
} s_v4_t;

/* Most specific first: the first match wins. */
static const s_v4_t s_v4[] = {
    {0xA9FEA9FEu, 32, "metadata"},      /* 169.254.169.254: AWS, GCP, Azure, OpenStack IMDS */
    {0xA83F8110u, 32, "metadata"},      /* 168.63.129.16: Azure wire server (a public address) */
    {0x646464C8u, 32, "metadata"},      /* 100.100.100.200: Alibaba Cloud (inside 100.64/10) */
    {0xFFFFFFFFu, 32, "broadcast"},     /* 255.255.255.255/32, RFC 919 */
    {0x00000000u, 8, "unspecified"},    /* 0.0.0.0/8 "this network", RFC 791 */
    {0x0A000000u, 8, "private"},        /* 10.0.0.0/8, RFC 1918 */
    {0x64400000u, 10, "cgnat"},         /* 100.64.0.0/10, RFC 6598 */
    {0x7F000000u, 8, "loopback"},       /* 127.0.0.0/8, RFC 1122 */
    {0xA9FE0000u, 16, "link-local"},    /* 169.254.0.0/16, RFC 3927 */
    {0xAC100000u, 12, "private"},       /* 172.16.0.0/12, RFC 1918 */
    {0xC0000000u, 24, "reserved"},      /* 192.0.0.0/24 IETF protocol assignments, RFC 6890 */
    {0xC0000200u, 24, "documentation"}, /* 192.0.2.0/24 TEST-NET-1, RFC 5737 */
    {0xC0586300u, 24, "reserved"},      /* 192.88.99.0/24 6to4 relay anycast, RFC 7526 */
    {0xC0A80000u, 16, "private"},       /* 192.168.0.0/16, RFC 1918 */
    {0xC6120000u, 15, "benchmarking"},  /* 198.18.0.0/15, RFC 2544 */
    {0xC6336400u, 24, "documentation"}, /* 198.51.100.0/24 TEST-NET-2, RFC 5737 */
    {0xCB007100u, 24, "documentation"}, /* 203.0.113.0/24 TEST-NET-3, RFC 5737 */
    {0xE0000000u, 4, "multicast"},      /* 224.0.0.0/4, RFC 5771 */
    {0xF0000000u, 4, "reserved"},       /* 240.0.0.0/4, RFC 1112 */
};

static const char *
s_v4_class(uint32_t a)
{
	for (size_t i = 0; i < sizeof s_v4 / sizeof s_v4[0]; i++) {
		uint32_t mask = s_v4[i].bits == 0 ? 0 : 0xFFFFFFFFu << (32 - s_v4[i].bits);
		if ((a & mask) == s_v4[i].net)
			return s_v4[i].cls;
	}
	return NULL;
}

static uint32_t
s_be32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* True when the first bits of a equal those of prefix. */
static bool
s_prefix(const uint8_t *a, const uint8_t *prefix, unsigned bits)
{
	unsigned bytes = bits / 8, rest = bits % 8;
	if (memcmp(a, prefix, bytes) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xFF << (8 - rest));
	return (a[bytes] & mask) == (prefix[bytes] & mask);
}

typedef struct {
	uint8_t net[16];
	unsigned bits;
	const char *cls;
	int embed; /* byte offset of an embedded IPv4 address, or -1 */
} s_v6_t;

/* Most specific first. */
static const s_v6_t s_v6[] = {
    /* fd00:ec2::254/128: AWS IMDS over IPv6 (inside fc00::/7) */
    {{0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54}, 128, "metadata", -1},
    {{0}, 128, "unspecified", -1},                                           /* ::/128 */
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128, "loopback", -1}, /* ::1/128 */
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, 96, "ipv4-mapped", 12},     /* ::ffff:0:0/96 */
    /* ::ffff:0:0:0/96 (SIIT, RFC 2765) embeds one as well */
    {{0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0}, 96, "ipv4-mapped", 12},
    {{0}, 96, "ipv4-compatible", 12},                               /* ::/96, RFC 4291 */
    {{0x00, 0x64, 0xff, 0x9b}, 96, "nat64", 12},                    /* 64:ff9b::/96 */
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, "nat64", -1},        /* 64:ff9b:1::/48 */
    {{0x01, 0x00}, 64, "reserved", -1},                             /* 100::/64 discard */
    {{0x20, 0x01, 0x00, 0x00}, 32, "teredo", -1},                   /* 2001::/32 */
    {{0x20, 0x01, 0x00, 0x02, 0x00, 0x00}, 48, "benchmarking", -1}, /* 2001:2::/48 */
    {{0x20, 0x01, 0x0d, 0xb8}, 32, "documentation", -1},            /* 2001:db8::/32 */
    {{0x20, 0x01, 0x00, 0x00}, 23, "reserved", -1}, /* 2001::/23 IETF protocol assignments */
    {{0x20, 0x02}, 16, "6to4", 2},                  /* 2002::/16, RFC 3056 */
    {{0x3f, 0xff}, 20, "documentation", -1},        /* 3fff::/20, RFC 9637 */
    {{0xfc}, 7, "unique-local", -1},                /* fc00::/7, RFC 4193 */
    {{0xfe, 0x80}, 10, "link-local", -1},           /* fe80::/10 */
    {{0xfe, 0xc0}, 10, "reserved", -1},             /* fec0::/10 site-local, deprecated */
    {{0xff}, 8, "multicast", -1},                   /* ff00::/8 */
};

static const char *
s_v6_class(const uint8_t *a)
{
	for (size_t i = 0; i < sizeof s_v6 / sizeof s_v6[0]; i++) {
		if (!s_prefix(a, s_v6[i].net, s_v6[i].bits))
			continue;
		/* A form that embeds an IPv4 address is special in itself; the
		 * embedded address names it better when it is special too
		 * (::ffff:127.0.0.1 is "loopback", 2002:a9fe:a9fe:: "metadata"). */
		if (s_v6[i].embed >= 0) {
			const char *inner = s_v4_class(s_be32(a + s_v6[i].embed));
			if (inner != NULL)
				return inner;
		}
		return s_v6[i].cls;
	}
	/* Teredo embeds the client's address XORed in the last 32 bits; the
	 * whole prefix is refused above, which covers it. Outside global
	 * unicast (2000::/3) nothing is assigned: refused as reserved. */
	if ((a[0] & 0xE0) != 0x20)
		return "reserved";
	return NULL;
}

const char *
cp_addr_special(const struct sockaddr *sa)
{
	if (sa == NULL)
		return "reserved";
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		return s_v4_class(ntohl(in->sin_addr.s_addr));
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		return s_v6_class(in6->sin6_addr.s6_addr);
	}
	return "reserved"; /* another family: never connected to */
}
