/* Fuzz target: a model's HTTP 200 chat-completions body -> the normalized assistant message
 * (orch_model_parse), which goes into the journal, the next request and the terminal. */
#include <string.h>

#include "fuzz.h"
#include "orch.h"

/* Every string (keys too) in v is valid UTF-8 without NUL: what the journal,
 * the next request and ahp_term_escape can take as it is. */
static int
s_strings_valid(const json_t *v)
{
	const char *key;
	json_t *val;
	size_t i;
	switch (json_typeof(v)) {
	case JSON_STRING:
		return ahp_utf8_valid(json_string_value(v), json_string_length(v), 0);
	case JSON_ARRAY:
		json_array_foreach(v, i, val) if (!s_strings_valid(val)) return 0;
		return 1;
	case JSON_OBJECT:
		json_object_foreach((json_t *)v, key, val)
		{
			if (!ahp_utf8_valid(key, strlen(key), 0) || !s_strings_valid(val))
				return 0;
		}
		return 1;
	default:
		return 1;
	}
}

static void
s_check_json(const json_t *v)
{
	if (v == NULL)
		return;
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	FUZZ_CHECK(s != NULL);
	free(s);
	FUZZ_CHECK(s_strings_valid(v));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* model.c's transfer refuses bodies over this before parsing. */
	if (size > ORCH_MODEL_REPLY_MAX)
		return 0;
	orch_model_result_t res;
	memset(&res, 0, sizeof res);
	orch_model_parse(size ? (const char *)data : "", size, 7, &res);
	/* Whatever the outcome, what the parse hands on is journaled and sent on
	 * as JSON text: it serializes, and its strings are valid UTF-8 without NUL
	 * (issue 6 section 1: untrusted text is made valid before it is stored). */
	s_check_json(res.message);
	s_check_json(res.usage);
	s_check_json(res.journal);
	/* usage counts are bounded before they are summed (regress-usage-overflow:
	 * a completion_tokens of 2^63 - 1 overflowed the sum) */
	FUZZ_CHECK(res.tokens <= 2 * (uint64_t)ORCH_TOKENS_MAX);
	if (res.ok) {
		FUZZ_CHECK(json_is_object(res.message));
		FUZZ_CHECK(res.error[0] == '\0');
		/* Every tool call has an id, a name and string arguments. */
		json_t *calls = json_object_get(res.message, "tool_calls");
		json_t *tc;
		size_t i;
		json_array_foreach(calls, i, tc)
		{
			json_t *fn = json_object_get(tc, "function");
			FUZZ_CHECK(json_string_length(json_object_get(tc, "id")) > 0);
			FUZZ_CHECK(json_is_string(json_object_get(fn, "name")));
			FUZZ_CHECK(json_is_string(json_object_get(fn, "arguments")));
		}
	} else {
		/* A failed step may keep the message (e.g. finish_reason=length). */
		FUZZ_CHECK(res.error[0] != '\0');
		/* The error becomes the run's reason: journal and terminal text, one
		 * line of valid UTF-8 (model.c cleans parser messages that quote raw
		 * input; regression seeds regress-error-text-*). */
		FUZZ_CHECK(ahp_utf8_valid(res.error, strlen(res.error), 0));
		FUZZ_CHECK(strchr(res.error, '\n') == NULL);
	}
	json_decref(res.message);
	json_decref(res.usage);
	json_decref(res.journal);
	return 0;
}
