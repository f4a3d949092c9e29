/* servicesd: publish_summary — POST <url>/webhooks/{webhook_id} {"content": ...} with a bot
 * token and the call's idempotency key as Idempotency-Key, so the upstream posts once however
 * often it is sent (SVC_RETRY_KEYED). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/text.h"
#include "svc.h"

static int
s_request(const ProtobufCMessage *args, const char *base_url, const char *token, const char *key,
          svc_http_t *req, svc_error_t *err)
{
	const Ahp__Svc__PublishSummaryArgs *a = (const Ahp__Svc__PublishSummaryArgs *)args;
	req->method = "POST";
	if (svc_path_segment_check(a->webhook_id, "webhook_id", err) != 0)
		return -1;
	req->url = svc_url_join(base_url, "webhooks", a->webhook_id ? a->webhook_id : "", NULL);
	if (req->url == NULL)
		return svc_error(err, "internal", 0, NULL, "out of memory");
	/* json_pack refuses invalid UTF-8: validated arguments never have it. */
	json_t *j = json_pack("{s:s}", "content", a->content ? a->content : "");
	char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (body == NULL)
		return svc_error(err, "internal", 0, NULL, "the request body could not be built");
	req->body = body;
	req->body_len = strlen(body);
	if (svc_http_header(req, "Content-Type: application/json") < 0 ||
	    svc_http_header(req, "Accept: application/json") < 0 ||
	    (token != NULL && svc_http_header(req, "Authorization: Bot %s", token) < 0) ||
	    (key != NULL && svc_http_header(req, "Idempotency-Key: %s", key) < 0))
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
	return svc_result_parse(&ahp__svc__publish_summary_result__descriptor, body, len, err);
}

static void
s_summarize(const ProtobufCMessage *result, char *buf, size_t len)
{
	const Ahp__Svc__PublishSummaryResult *r = (const Ahp__Svc__PublishSummaryResult *)result;
	/* Validated as 12 hex digits; escaped all the same, in case a caller skipped that. */
	const char *id = r->message_id ? r->message_id : "";
	char *esc = ahp_term_escape(id, strlen(id), AHP_TERM_ONE_LINE);
	snprintf(buf, len, "message_id=%.*s", AHP_UTF8_CUT(esc ? esc : "?", 64));
	free(esc);
}

const svc_handler_t svc_handler_publish_summary = {
    .secret = "webhook-token",
    .timeout_ms = 10000,
    .request = s_request,
    .response = s_response,
    .summarize = s_summarize,
};
