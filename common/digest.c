/* libahp: the canonical call digest shared by approvald and the orchestrator. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ahp/digest.h"

int
ahp_call_digest(const char *action, const json_t *args, char out[AHP_CALL_DIGEST_LEN + 1])
{
	out[0] = '\0';
	char *canon = json_dumps(args, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	if (canon == NULL)
		return -1;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
	         EVP_DigestUpdate(ctx, action, strlen(action)) == 1 &&
	         EVP_DigestUpdate(ctx, "\n", 1) == 1 &&
	         EVP_DigestUpdate(ctx, canon, strlen(canon)) == 1 &&
	         EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 32;
	EVP_MD_CTX_free(ctx);
	free(canon);
	if (!ok)
		return -1;
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}
