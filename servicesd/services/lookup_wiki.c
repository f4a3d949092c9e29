/* servicesd: lookup_wiki — GET <url>/snippets/{topic} with a bearer token; no side effect
 * (SVC_RETRY_SAFE). */
#include <stdio.h>

#include "svc.h"

static int
s_request(const ProtobufCMessage *args, const char *base_url, const char *token, const char *key,
          svc_http_t *req, svc_error_t *err)
{
	const Ahp__Svc__LookupWikiArgs *a = (const Ahp__Svc__LookupWikiArgs *)args;
	(void)key; /* a lookup is safe to repeat: no key upstream */
	req->method = "GET";
	if (svc_path_segment_check(a->topic, "topic", err) != 0)
		return -1;
	req->url = svc_url_join(base_url, "snippets", a->topic ? a->topic : "", NULL);
	if (req->url == NULL)
		return svc_error(err, "internal", 0, NULL, "out of memory");
	if (svc_http_header(req, "Accept: application/json") < 0 ||
	    (token != NULL && svc_http_header(req, "Authorization: Bearer %s", token) < 0))
		return svc_error(
		    err, "internal", 0, NULL,
		    "the request headers could not be built (a secret with a newline?)");
	return 0;
}

static ProtobufCMessage *
s_response(const ProtobufCMessage *args, long status, const uint8_t *body, size_t len,
           svc_error_t *err)
{
	(void)args;
	(void)status;
	return svc_result_parse(&ahp__svc__lookup_wiki_result__descriptor, body, len, err);
}

static void
s_summarize(const ProtobufCMessage *result, char *buf, size_t len)
{
	const Ahp__Svc__LookupWikiResult *r = (const Ahp__Svc__LookupWikiResult *)result;
	snprintf(buf, len, "%zu snippet%s", r->n_snippets, r->n_snippets == 1 ? "" : "s");
}

const svc_handler_t svc_handler_lookup_wiki = {
    .secret = "wiki-token",
    .timeout_ms = 10000,
    .request = s_request,
    .response = s_response,
    .summarize = s_summarize,
};
