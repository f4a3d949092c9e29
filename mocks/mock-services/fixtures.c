/* mock-services: the canned wiki that GET /snippets/{topic} answers from. */
#include <string.h>

#include "mock_services.h"

typedef struct {
	const char *topic;
	const char *url;
	const char *excerpt;
} s_snippet_t;

/* The tests (and docs/operations.md) count these: durability 2, sandboxing 1,
 * replay 1. Keep the order: the answer lists them as written. */
static const s_snippet_t s_snippets[] = {
    {"durability", "https://wiki.example.com/durability/journal",
     "Every step is journaled before it runs: the intent first, the result after, so a crash "
     "loses no work."},
    {"durability", "https://wiki.example.com/durability/resume",
     "On restart the orchestrator reads the journal and resumes each run at its first "
     "unfinished step."},
    {"sandboxing", "https://wiki.example.com/sandboxing/isolation",
     "Each run's commands execute in their own namespaces, cgroup and seccomp filter, as an "
     "unprivileged uid."},
    {"replay", "https://wiki.example.com/replay/idempotency",
     "A call repeated with the same key returns the recorded outcome instead of doing the "
     "work twice."},
};

json_t *
ms_fixture_snippets(const char *topic)
{
	json_t *arr = json_array();
	if (arr == NULL)
		return NULL;
	for (size_t i = 0; i < sizeof s_snippets / sizeof s_snippets[0]; i++) {
		if (strcmp(s_snippets[i].topic, topic) != 0)
			continue;
		if (json_array_append_new(arr, json_pack("{s:s, s:s}", "url", s_snippets[i].url,
		                                         "excerpt", s_snippets[i].excerpt)) < 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}
