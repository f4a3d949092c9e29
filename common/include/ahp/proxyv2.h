/*
 * The PROXY protocol version 2 header (haproxy.org proxy-protocol.txt,
 * section 2.2) that sandboxd writes before each relayed sandbox connection
 * and credproxy requires on its relay socket. It names the sandbox's run and
 * profile in two custom TLVs, so the sandbox never holds an identity token.
 *
 * Layout written: the 12-byte signature, ver_cmd 0x21 (v2, PROXY), fam 0x00
 * (AF_UNSPEC: no addresses), a big-endian length, then exactly two TLVs:
 * AHP_PP2_TYPE_RUN and AHP_PP2_TYPE_PROFILE, each 1..AHP_PP2_VALUE_MAX bytes
 * of [A-Za-z0-9._:-].
 */
#ifndef AHP_PROXYV2_H
#define AHP_PROXYV2_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define AHP_PP2_TYPE_RUN 0xE0 /* PP2_TYPE_MIN_CUSTOM */
#define AHP_PP2_TYPE_PROFILE 0xE1
#define AHP_PP2_VALUE_MAX 128
#define AHP_PP2_HEADER_MAX 512 /* whole header; a longer one is refused */

/*
 * Writes the header for (run, profile) to buf. Returns its length in bytes,
 * or -1 (errno EINVAL) when a value is empty, too long or holds a byte
 * outside the allowed set, or (ENOBUFS) when cap is too small.
 */
ssize_t ahp_proxyv2_encode(const char *run, const char *profile, uint8_t *buf, size_t cap);

/*
 * Parses a header at the start of buf (len bytes received so far). Returns
 * the header's length once it is complete and valid, 0 when more bytes are
 * needed, or -1 with *why (static, one line) when it is not a valid header:
 * wrong signature, version or command, an unknown address family, a length
 * over AHP_PP2_HEADER_MAX, an address block or TLV overrunning the header, a
 * run or profile TLV missing, repeated, empty, too long or with a byte
 * outside the set. A prefix that already cannot start a valid header is
 * refused at once. The address block of a known family is skipped (none is
 * written), and so are unknown TLV types.
 * run and profile (each AHP_PP2_VALUE_MAX + 1 bytes) get NUL-terminated
 * values on success.
 */
ssize_t ahp_proxyv2_decode(const uint8_t *buf, size_t len, char *run, char *profile,
                           const char **why);

#endif
