/* The digest that binds a human decision to exactly one call (approvald and the orchestrator). */
#ifndef AHP_DIGEST_H
#define AHP_DIGEST_H

#include <jansson.h>

#define AHP_CALL_DIGEST_LEN 64 /* hex SHA-256 */

/* out = hex SHA-256 (libcrypto) of action + "\n" + the canonical JSON of args
 * (jansson JSON_COMPACT | JSON_SORT_KEYS): the digest approvald records with a
 * request and the orchestrator checks before a gated call runs
 * (proto/approvald.proto ApprovalRequest.digest). action: NUL-terminated;
 * args: any JSON value (borrowed). out: AHP_CALL_DIGEST_LEN + 1 bytes,
 * NUL-terminated. 0, or -1 (out of memory, libcrypto failure) with out "". */
int ahp_call_digest(const char *action, const json_t *args, char out[AHP_CALL_DIGEST_LEN + 1]);

#endif
