/* Fuzz target: the PROXY protocol v2 header credproxy requires on its relay socket
 * (ahp_proxyv2_decode in common/proxyv2.c). sandboxd writes it, but whatever reaches the
 * socket is parsed as if anything could have written it.
 *
 * Input: the bytes received so far. Checked: the result is -1 (with a reason), 0, or a
 * length within the input and AHP_PP2_HEADER_MAX; a header found is found at exactly its
 * own length and every shorter prefix asks for more; the values decoded are in the
 * allowed set and encode back to a header that decodes to the same values. */
#include <stdbool.h>
#include <string.h>

#include "ahp/proxyv2.h"
#include "fuzz.h"

static bool
s_value_ok(const char *v)
{
	size_t n = strlen(v);
	if (n == 0 || n > AHP_PP2_VALUE_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = v[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == ':' || c == '-'))
			return false;
	}
	return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4 * AHP_PP2_HEADER_MAX)
		return 0;
	/* An exact-size copy, so ASan sees any read past the input. */
	uint8_t *buf = malloc(size ? size : 1);
	FUZZ_CHECK(buf != NULL);
	memcpy(buf, data, size);
	char run[AHP_PP2_VALUE_MAX + 1], profile[AHP_PP2_VALUE_MAX + 1];
	const char *why = NULL;
	ssize_t n = ahp_proxyv2_decode(buf, size, run, profile, &why);
	if (n < 0) {
		FUZZ_CHECK(n == -1 && why != NULL && *why != '\0' && strchr(why, '\n') == NULL);
		free(buf);
		return 0;
	}
	FUZZ_CHECK(why == NULL);
	if (n == 0) {
		FUZZ_CHECK(size < AHP_PP2_HEADER_MAX);
		free(buf);
		return 0;
	}
	FUZZ_CHECK(n >= 16 && (size_t)n <= size && n <= AHP_PP2_HEADER_MAX);
	FUZZ_CHECK(s_value_ok(run) && s_value_ok(profile));
	/* the same header at exactly its length; any prefix of it needs more */
	char r2[AHP_PP2_VALUE_MAX + 1], p2[AHP_PP2_VALUE_MAX + 1];
	FUZZ_CHECK(ahp_proxyv2_decode(buf, (size_t)n, r2, p2, &why) == n);
	FUZZ_CHECK(strcmp(r2, run) == 0 && strcmp(p2, profile) == 0);
	for (size_t i = 0; i < (size_t)n; i++)
		FUZZ_CHECK(ahp_proxyv2_decode(buf, i, r2, p2, &why) == 0);
	/* what was decoded encodes back to a header that decodes the same */
	uint8_t enc[AHP_PP2_HEADER_MAX];
	ssize_t e = ahp_proxyv2_encode(run, profile, enc, sizeof enc);
	FUZZ_CHECK(e > 0);
	FUZZ_CHECK(ahp_proxyv2_decode(enc, (size_t)e, r2, p2, &why) == e);
	FUZZ_CHECK(strcmp(r2, run) == 0 && strcmp(p2, profile) == 0);
	free(buf);
	return 0;
}
