/* Fuzz target: credproxy's parsers of what a sandbox or an upstream sends: host
 * normalisation, CONNECT authorities, request paths (cp_host_normalize,
 * cp_authority_parse, cp_path_check) and the streaming scrubber (cp_scrub_feed), with
 * invariants: a normalised host is a fixed point, and scrubbing does not depend on how the
 * stream is split. */
#include <string.h>

#include <event2/buffer.h>

#include "cp.h"
#include "fuzz.h"

#define S_MAX_INPUT 65536

static const cp_secret_ref_t s_secrets[] = {
    {.name = "wiki-token", .value = (const uint8_t *)"s3cr3t-wiki-token", .len = 17},
    {.name = "api", .value = (const uint8_t *)"tok/en+val=ue&x", .len = 15},
    {.name = "aa", .value = (const uint8_t *)"aaaaaaaa", .len = 8},
};

static void
s_hosts(const uint8_t *data, size_t size)
{
	char out[CP_HOST_MAX + 1], again[CP_HOST_MAX + 1], host[CP_HOST_MAX + 1];
	const char *why = NULL;
	uint16_t port = 0;

	if (cp_host_normalize((const char *)data, size, out, sizeof out, &why) == 0) {
		size_t n = strlen(out);
		FUZZ_CHECK(n >= 1 && n <= CP_HOST_MAX);
		for (size_t i = 0; i < n; i++)
			FUZZ_CHECK(!(out[i] >= 'A' && out[i] <= 'Z'));
		/* A normalised host normalises to itself (IPv6 goes back in brackets). */
		char in[CP_HOST_MAX + 3];
		int l = snprintf(in, sizeof in, strchr(out, ':') ? "[%s]" : "%s", out);
		FUZZ_CHECK(l > 0 && (size_t)l < sizeof in);
		FUZZ_CHECK(cp_host_normalize(in, (size_t)l, again, sizeof again, &why) == 0);
		FUZZ_CHECK(strcmp(out, again) == 0);
	} else {
		FUZZ_CHECK(why != NULL && *why != '\0');
	}
	why = NULL;
	if (cp_authority_parse((const char *)data, size, host, sizeof host, &port, &why) == 0) {
		FUZZ_CHECK(memchr(data, '@', size) == NULL);
		FUZZ_CHECK(strlen(host) <= CP_HOST_MAX);
	} else {
		FUZZ_CHECK(why != NULL && *why != '\0');
	}
	why = NULL;
	if (cp_path_check((const char *)data, size, &why) == 0) {
		FUZZ_CHECK(size > 0 && data[0] == '/');
		for (size_t i = 0; i < size; i++)
			FUZZ_CHECK(data[i] > 0x20 && data[i] != 0x7f && data[i] != '\\');
	} else {
		FUZZ_CHECK(why != NULL && *why != '\0');
	}
}

/* Runs the scrubber over data in chunks of `chunk` bytes; returns the output
 * (caller frees the evbuffer) and the count. */
static struct evbuffer *
s_scrub(const uint8_t *data, size_t size, size_t chunk, int *count)
{
	cp_scrub_t *s = cp_scrub_new(s_secrets, 3);
	FUZZ_CHECK(s != NULL);
	struct evbuffer *out = evbuffer_new();
	FUZZ_CHECK(out != NULL);
	*count = 0;
	for (size_t o = 0; o < size; o += chunk) {
		size_t k = size - o < chunk ? size - o : chunk;
		int rc = cp_scrub_feed(s, data + o, k, out, false);
		FUZZ_CHECK(rc >= 0);
		*count += rc;
	}
	int rc = cp_scrub_feed(s, NULL, 0, out, true);
	FUZZ_CHECK(rc >= 0);
	*count += rc;
	cp_scrub_destroy(&s);
	return out;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > S_MAX_INPUT)
		return 0;
	s_hosts(data, size);

	/* The first byte picks a chunk size; the rest is the stream. */
	if (size < 1)
		return 0;
	size_t chunk = (size_t)data[0] % 37 + 1;
	int c1 = 0, c2 = 0;
	struct evbuffer *whole = s_scrub(data + 1, size - 1, size, &c1);
	struct evbuffer *parts = s_scrub(data + 1, size - 1, chunk, &c2);
	size_t n1 = evbuffer_get_length(whole), n2 = evbuffer_get_length(parts);
	FUZZ_CHECK(c1 == c2);
	FUZZ_CHECK(n1 == n2);
	const unsigned char *p1 = evbuffer_pullup(whole, -1), *p2 = evbuffer_pullup(parts, -1);
	FUZZ_CHECK(n1 == 0 || memcmp(p1, p2, n1) == 0);
	/* No raw secret survives. */
	for (size_t i = 0; i < 3; i++)
		FUZZ_CHECK(n1 < s_secrets[i].len ||
		           memmem(p1, n1, s_secrets[i].value, s_secrets[i].len) == NULL);
	/* The header form agrees with the stream form when it has room. */
	if (n1 < 4096 && size - 1 < 4096) {
		char str[4096];
		int c3 = cp_scrub_string(s_secrets, 3, (const char *)data + 1, size - 1, str,
		                         sizeof str);
		FUZZ_CHECK(c3 == c1);
		FUZZ_CHECK(strlen(str) <= n1);
		FUZZ_CHECK(n1 == 0 ? str[0] == '\0'
		                   : memchr(p1, '\0', n1) != NULL ||
		                         (strlen(str) == n1 && memcmp(str, p1, n1) == 0));
	}
	evbuffer_free(whole);
	evbuffer_free(parts);
	return 0;
}
