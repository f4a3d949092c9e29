/* Fuzz target: sandboxd's side of the init protocol, the DONE result init sends for a
 * command (sbx_init_parse_done in sandboxd/init.c). init runs inside the sandbox's
 * namespaces; what it sends is checked as if anything could have written it.
 *
 * Input: two bytes (little-endian) choosing the output cap in KiB (1..1024, as a
 * profile's output_kb), then the DONE payload (sbx_ctl_done_t + stdout + stderr + cwd). */
#include <string.h>

#include "fuzz.h"
#include "sbx.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint32_t kb = (uint32_t)(data[0] | (data[1] << 8)) % 1024u + 1u;
	uint32_t cap = kb * 1024u;
	size_t n = size - 2;
	/* An exact-size copy, so ASan sees any read past the message. */
	uint8_t *buf = malloc(n ? n : 1);
	FUZZ_CHECK(buf != NULL);
	memcpy(buf, data + 2, n);

	sbx_result_view_t v;
	const char *why = NULL;
	if (sbx_init_parse_done(buf, n, cap, &v, &why) != 0) {
		FUZZ_CHECK(why != NULL && *why != '\0');
		free(buf);
		return 0;
	}
	const sbx_ctl_done_t *d = &v.done;
	FUZZ_CHECK(d->out_len <= cap && d->err_len <= cap && d->cwd_len < SBX_CWD_MAX);
	FUZZ_CHECK(sizeof *d + (size_t)d->out_len + d->err_len <= n);
	FUZZ_CHECK(v.out == buf + sizeof *d && v.err == v.out + d->out_len);
	FUZZ_CHECK((const uint8_t *)v.cwd == v.err + d->err_len);
	FUZZ_CHECK((const uint8_t *)v.cwd + d->cwd_len <= buf + n);
	/* A cwd that survives is absolute and free of control characters. */
	if (d->cwd_len > 0) {
		FUZZ_CHECK(v.cwd[0] == '/');
		for (uint32_t i = 0; i < d->cwd_len; i++)
			FUZZ_CHECK((unsigned char)v.cwd[i] >= 0x20 && v.cwd[i] != 0x7f);
	}
	free(buf);
	return 0;
}
