/* Unit tests for credproxy's SSRF guard: every special-purpose range of RFC 6890 (and the
 * IANA registries since), the metadata addresses, and ordinary addresses that pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>
#include <sys/un.h>

#include "cp.h"

static const char *
s_class(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(443);
		if (inet_pton(AF_INET6, ip, &in6->sin6_addr) != 1)
			fail_msg("bad test address %s", ip);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		in->sin_port = htons(443);
		if (inet_pton(AF_INET, ip, &in->sin_addr) != 1)
			fail_msg("bad test address %s", ip);
	}
	return cp_addr_special((const struct sockaddr *)&ss);
}

static const struct {
	const char *ip;
	const char *cls; /* NULL: ordinary */
} s_cases[] = {
    /* IPv4 */
    {"0.0.0.0", "unspecified"},
    {"0.255.255.255", "unspecified"},
    {"10.0.0.1", "private"},
    {"10.255.255.255", "private"},
    {"11.0.0.1", NULL},
    {"100.63.255.255", NULL},
    {"100.64.0.0", "cgnat"},
    {"100.127.255.255", "cgnat"},
    {"100.128.0.0", NULL},
    {"100.100.100.200", "metadata"},
    {"127.0.0.1", "loopback"},
    {"127.255.255.254", "loopback"},
    {"169.254.169.254", "metadata"},
    {"169.254.0.1", "link-local"},
    {"169.254.255.255", "link-local"},
    {"168.63.129.16", "metadata"},
    {"172.15.255.255", NULL},
    {"172.16.0.1", "private"},
    {"172.31.255.255", "private"},
    {"172.32.0.0", NULL},
    {"192.0.0.8", "reserved"},
    {"192.0.2.1", "documentation"},
    {"192.0.3.1", NULL},
    {"192.88.99.1", "reserved"},
    {"192.168.1.1", "private"},
    {"192.169.0.1", NULL},
    {"198.17.255.255", NULL},
    {"198.18.0.1", "benchmarking"},
    {"198.19.255.255", "benchmarking"},
    {"198.20.0.0", NULL},
    {"198.51.100.7", "documentation"},
    {"203.0.113.9", "documentation"},
    {"224.0.0.1", "multicast"},
    {"239.255.255.255", "multicast"},
    {"240.0.0.1", "reserved"},
    {"255.255.255.254", "reserved"},
    {"255.255.255.255", "broadcast"},
    {"8.8.8.8", NULL},
    {"1.1.1.1", NULL},
    {"93.184.216.34", NULL},
    /* IPv6 */
    {"::", "unspecified"},
    {"::1", "loopback"},
    {"::ffff:8.8.8.8", "ipv4-mapped"},
    {"::ffff:127.0.0.1", "loopback"},
    {"::ffff:169.254.169.254", "metadata"},
    {"::ffff:10.1.2.3", "private"},
    {"::ffff:0:8.8.8.8", "ipv4-mapped"},
    {"::8.8.8.8", "ipv4-compatible"},
    {"::127.0.0.1", "loopback"},
    {"64:ff9b::8.8.8.8", "nat64"},
    {"64:ff9b::169.254.169.254", "metadata"},
    {"64:ff9b:1::1", "nat64"},
    {"100::1", "reserved"},
    {"2001::1", "teredo"},
    {"2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo"},
    {"2001:2::1", "benchmarking"},
    {"2001:10::1", "reserved"},
    {"2001:db8::1", "documentation"},
    {"2001:db8:ffff::1", "documentation"},
    {"2002:808:808::1", "6to4"},
    {"2002:7f00:1::1", "loopback"},
    {"2002:a9fe:a9fe::1", "metadata"},
    {"3fff::1", "documentation"},
    {"fc00::1", "unique-local"},
    {"fd12:3456::1", "unique-local"},
    {"fd00:ec2::254", "metadata"},
    {"fd00:ec2::253", "unique-local"},
    {"fe80::1", "link-local"},
    {"febf::1", "link-local"},
    {"fec0::1", "reserved"},
    {"ff02::1", "multicast"},
    {"ff05::2", "multicast"},
    {"4000::1", "reserved"},
    {"::2", "unspecified"},
    {"2606:4700:4700::1111", NULL},
    {"2a00:1450:4001::200e", NULL},
    {"2001:4860:4860::8888", NULL},
};

static void
test_classes(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof s_cases / sizeof s_cases[0]; i++) {
		const char *got = s_class(s_cases[i].ip);
		const char *want = s_cases[i].cls;
		if ((got == NULL) != (want == NULL) || (got && strcmp(got, want) != 0))
			fail_msg("%s: got %s, want %s", s_cases[i].ip, got ? got : "(ordinary)",
			         want ? want : "(ordinary)");
	}
}

/* Other families and NULL are never connected to. */
static void
test_other_families(void **state)
{
	(void)state;
	struct sockaddr_un un;
	memset(&un, 0, sizeof un);
	un.sun_family = AF_UNIX;
	assert_string_equal(cp_addr_special((const struct sockaddr *)&un), "reserved");
	assert_string_equal(cp_addr_special(NULL), "reserved");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_classes),
	    cmocka_unit_test(test_other_families),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
