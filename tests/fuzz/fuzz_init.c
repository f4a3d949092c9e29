/* Fuzz target: sandboxd's init protocol, the orders init reads from sandboxd
 * (sbx_init_parse_order in sandboxd/init.c).
 *
 * Input: one byte whose low bit says whether the sandbox was claimed already, then one
 * SOCK_SEQPACKET message as init receives it (sbx_ctl_hdr_t + payload). */
#include <string.h>

#include "fuzz.h"
#include "sbx.h"

/* init's receive buffer; longer messages are refused before parsing (s_serve). */
#define FUZZ_INIT_BUF                                                                              \
	(sizeof(sbx_ctl_hdr_t) + sizeof(sbx_ctl_exec_t) + SBX_CWD_MAX + SBX_CMD_MAX + 64)

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size - 1 > FUZZ_INIT_BUF - 2)
		return 0;
	bool claimed = (data[0] & 1) != 0;
	size_t n = size - 1;
	/* Exactly the room the parser may use (n + 2), so ASan sees a write past it. */
	uint8_t *buf = malloc(n + 2);
	FUZZ_CHECK(buf != NULL);
	memcpy(buf, data + 1, n);
	sbx_ctl_hdr_t h = {0, 0};
	if (n >= sizeof h)
		memcpy(&h, data + 1, sizeof h);

	sbx_order_t o;
	const char *why = NULL;
	if (sbx_init_parse_order(buf, n, n + 2, claimed, &o, &why) != 0) {
		FUZZ_CHECK(why != NULL && *why != '\0');
		free(buf);
		return 0;
	}
	FUZZ_CHECK(n >= sizeof h && h.len == n - sizeof h);
	if (o.type == SBX_CTL_CLAIM) {
		FUZZ_CHECK(!claimed && h.type == SBX_CTL_CLAIM);
		FUZZ_CHECK(h.len == sizeof(sbx_ctl_claim_t));
	} else {
		FUZZ_CHECK(o.type == SBX_CTL_EXEC && claimed && h.type == SBX_CTL_EXEC);
		FUZZ_CHECK(o.exec.cwd_len < SBX_CWD_MAX && o.exec.cmd_len <= SBX_CMD_MAX);
		FUZZ_CHECK(o.exec.output_cap <= SBX_OUTPUT_KB_MAX * 1024u);
		FUZZ_CHECK(sizeof h + sizeof o.exec + o.exec.cwd_len + o.exec.cmd_len == n);
		/* Both strings end inside the buffer, where their lengths say. */
		FUZZ_CHECK(o.cmd != NULL && (uint8_t *)o.cmd >= buf &&
		           (uint8_t *)o.cmd + o.exec.cmd_len < buf + n + 2 &&
		           o.cmd[o.exec.cmd_len] == '\0');
		FUZZ_CHECK(memcmp(o.cmd, data + 1 + sizeof h + sizeof o.exec + o.exec.cwd_len,
		                  o.exec.cmd_len) == 0);
		if (o.exec.cwd_len == 0) {
			FUZZ_CHECK(o.cwd == NULL);
		} else {
			FUZZ_CHECK(o.cwd != NULL && o.cwd[o.exec.cwd_len] == '\0' &&
			           o.cwd + o.exec.cwd_len < o.cmd);
			FUZZ_CHECK(memcmp(o.cwd, data + 1 + sizeof h + sizeof o.exec,
			                  o.exec.cwd_len) == 0);
		}
	}
	free(buf);
	return 0;
}
