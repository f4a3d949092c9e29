/* servicesd: the registry of typed services, expanded from common/include/ahp/services.def. */
#include <string.h>

#include "svc.h"

#define AHP_SERVICE(name, retry, summary) extern const svc_handler_t svc_handler_##name;
#include "ahp/services.def"
#undef AHP_SERVICE

#define AHP_SERVICE(n_, retry_, summary_)                                                          \
	static const svc_service_t s_##n_ = {                                                      \
	    .name = #n_,                                                                           \
	    .summary = summary_,                                                                   \
	    .args = &ahp__svc__##n_##_args__descriptor,                                            \
	    .result = &ahp__svc__##n_##_result__descriptor,                                        \
	    .retry = retry_,                                                                       \
	    .handler = &svc_handler_##n_,                                                          \
	};
#include "ahp/services.def"
#undef AHP_SERVICE

#define AHP_SERVICE(name, retry, summary) &s_##name,
const svc_service_t *const svc_registry[] = {
#include "ahp/services.def"
    NULL};
#undef AHP_SERVICE

const svc_service_t *
svc_find(const char *name, size_t len)
{
	if (name == NULL)
		return NULL;
	for (int i = 0; svc_registry[i] != NULL; i++)
		if (strlen(svc_registry[i]->name) == len &&
		    memcmp(svc_registry[i]->name, name, len) == 0)
			return svc_registry[i];
	return NULL;
}

const char *
svc_retry_str(int retry)
{
	switch (retry) {
	case SVC_RETRY_SAFE:
		return "safe";
	case SVC_RETRY_KEYED:
		return "keyed";
	default:
		return "never";
	}
}
