/* orchestrator: the exec_service tool — a typed service call through servicesd, keyed by run and
 * step so that servicesd runs it at most once however often it is sent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/log.h"
#include "ahp/util.h"

#include "orch.h"

#define SVC_NAME_MAX 64          /* bytes of a service name (servicesd's) */
#define SVC_ARGS_MAX (256 << 10) /* bytes of the arguments' JSON (servicesd's) */
#define SVC_RESULT_MAX (1 << 20) /* bytes of a result's JSON accepted from servicesd */
#define SVC_CALL_ATTEMPTS 3      /* sends of one Call while servicesd is lost or busy */
#define SVC_RETRY_BASE_MS 250    /* first wait before a re-send; doubles */
#define SVC_UNSENT_RETRY_MS 50   /* a send refused (not connected yet) is tried again */
#define SVC_SHOW_ARGS_MAX 80     /* bytes of "k=v, ..." shown in the timeline */

/* A run's exec_service state: the step in progress, and the wait for the
 * tool's definition before the first model call. */
typedef struct {
	orch_svc_owner_t owner; /* first: the owner of the run's requests */
	orch_run_t *run;
	uint64_t req;         /* Call in flight, 0 = none */
	int attempts;         /* Calls sent for the step in progress */
	int64_t unsent_since; /* first refused send of the current Call */
	int64_t wait_since;   /* waiting for the definition (orch_service_tools_ready) */
	char service[SVC_NAME_MAX + 1];
	char *args_json; /* the Call's args_json */
	json_t *args;    /* the service's arguments, for the timeline */
} svc_call_t;

static svc_call_t *
s_state(orch_run_t *run)
{
	svc_call_t *x = run->tool_state[ORCH_TOOL_SERVICE];
	if (x == NULL) {
		x = calloc(1, sizeof *x);
		if (x == NULL)
			return NULL;
		x->owner.kind = ORCH_SVC_OWNER_CALL;
		x->run = run;
		run->tool_state[ORCH_TOOL_SERVICE] = x;
	}
	return x;
}

/* The definition is servicesd's (Describe), fetched before the run's first
 * model call by orch_service_tools_ready. */
static json_t *
s_definition(orch_t *o, const ahp_profile_t *p)
{
	return orch_svc_definition(o, p);
}

static const char *
s_service(const json_t *args)
{
	return json_string_value(json_object_get(args, "service_name"));
}

static const json_t *
s_service_args(const json_t *args)
{
	const json_t *a = json_object_get(args, "args");
	return json_is_object(a) ? a : NULL;
}

int
orch_service_tools_ready(orch_run_t *run, char *why, size_t len)
{
	if (orch_tool_offered(run->profile, orch_tool_service.name) == NULL)
		return 1;
	svc_call_t *x = s_state(run);
	if (x == NULL) {
		snprintf(why, len, "out of memory");
		return -1;
	}
	int r = orch_svc_describe_ready(run->o, run->profile, why, len);
	if (r == 1) {
		x->wait_since = 0;
		return 1;
	}
	int64_t now = ahp_mono_ms();
	if (x->wait_since == 0)
		x->wait_since = now;
	if (now - x->wait_since < ORCH_SVC_GRACE_MS)
		return 0;
	x->wait_since = 0;
	if (r == 0)
		snprintf(why, len, "servicesd did not describe the tool within %d s",
		         ORCH_SVC_GRACE_MS / 1000);
	return -1;
}

/* --- the timeline --- */

/* Appends s (len bytes) to buf, quoted when quote: '"' and '\' escaped,
 * control bytes as \xHH. *n counts what would have been written. */
static void
s_put_escaped(char *buf, size_t cap, size_t *n, const char *s, size_t len, int quote)
{
	if (quote && *n < cap)
		*n += (size_t)snprintf(buf + *n, cap - *n, "\"");
	for (size_t i = 0; i < len && *n < cap; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			*n += (size_t)snprintf(buf + *n, cap - *n, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			*n += (size_t)snprintf(buf + *n, cap - *n, "\\x%02x", c);
		else
			*n += (size_t)snprintf(buf + *n, cap - *n, "%c", c);
	}
	if (quote && *n < cap)
		*n += (size_t)snprintf(buf + *n, cap - *n, "\"");
}

/* The call as the timeline shows it: "name(k=v, k2=v2)" — strings quoted and
 * escaped, other values as their JSON — when those pairs take at most
 * SVC_SHOW_ARGS_MAX bytes, else just "name" (a long value, such as a
 * publish's content, is in the event's data, not its line). */
static const char *
s_label(const char *name, const json_t *args, char *out, size_t outlen)
{
	char buf[SVC_SHOW_ARGS_MAX + 2];
	size_t n = 0;
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)args, k, v)
	{
		if (n > 0 && n < sizeof buf)
			n += (size_t)snprintf(buf + n, sizeof buf - n, ", ");
		s_put_escaped(buf, sizeof buf, &n, k, strlen(k), 0);
		if (n < sizeof buf)
			n += (size_t)snprintf(buf + n, sizeof buf - n, "=");
		if (n >= sizeof buf)
			break;
		if (json_is_string(v)) {
			s_put_escaped(buf, sizeof buf, &n, json_string_value(v),
			              json_string_length(v), 1);
		} else {
			char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
			n += (size_t)snprintf(buf + n, sizeof buf - n, "%s", d != NULL ? d : "?");
			free(d);
		}
	}
	if (n <= SVC_SHOW_ARGS_MAX)
		snprintf(out, outlen, "%s(%.*s)", name, (int)n, buf);
	else
		snprintf(out, outlen, "%s", name);
	return out;
}

/* {"error": {code, message, retryable, field?, http_status?}}: what the model
 * gets for a failed call. New reference. */
static json_t *
s_error(const char *code, const char *message, int retryable, const char *field, int http_status)
{
	json_t *e = json_pack("{s:s, s:o, s:b}", "code", code, "message",
	                      orch_json_text(message ? message : ""), "retryable", retryable);
	if (e == NULL)
		return NULL;
	if (field != NULL && *field)
		json_object_set_new(e, "field", orch_json_text(field));
	if (http_status != 0)
		json_object_set_new(e, "http_status", json_integer(http_status));
	return json_pack("{s:o}", "error", e);
}

/* The ahp.Status a service error code completes the step with. */
static int
s_code_status(const char *code)
{
	static const struct {
		const char *code;
		int status;
	} map[] = {
	    {"validation", AHP__STATUS__ERR_BAD_REQUEST},
	    {"too_large", AHP__STATUS__ERR_TOO_LARGE},
	    {"unknown_service", AHP__STATUS__ERR_NOT_FOUND},
	    {"not_found", AHP__STATUS__ERR_NOT_FOUND},
	    {"not_allowed", AHP__STATUS__ERR_PERMISSION},
	    {"unauthorized", AHP__STATUS__ERR_PERMISSION},
	    {"timeout", AHP__STATUS__ERR_TIMEOUT},
	    {"outcome_unknown", AHP__STATUS__ERR_INTERRUPTED},
	    {"conflict", AHP__STATUS__ERR_CONFLICT},
	    {"internal", AHP__STATUS__ERR_INTERNAL},
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (strcmp(map[i].code, code) == 0)
			return map[i].status;
	return AHP__STATUS__ERR_UNAVAILABLE; /* unavailable, http_error, dns, tls, bad_response */
}

/* Completes the step with a typed error the orchestrator found itself (the
 * call's shape), and says it in the timeline. */
static void
s_refuse(orch_run_t *run, const char *name, const json_t *args, const char *code, const char *field,
         const char *message)
{
	json_t *res = s_error(code, message, 0, field, 0);
	orch_run_event(run, "service",
	               json_pack("{s:o?, s:O, s:O?, s:i, s:b}", "service",
	                         name ? orch_json_text(name) : NULL, "arguments", args, "error",
	                         json_object_get(res, "error"), "duration_ms", 0, "replayed", 0),
	               "[service] %.*s → %s: %s", AHP_UTF8_CUT(name ? name : "exec_service", 64),
	               code, message);
	orch_tool_done(run, res, s_code_status(code));
}

/* Refuses a well-formed call the profile does not allow, in the shape servicesd's refusal
 * has: the line shows the call as s_label does, the event's arguments are the service's. */
static void
s_refuse_service(orch_run_t *run, const char *name, const json_t *sargs, const char *message)
{
	char label[256];
	json_t *empty = sargs == NULL ? json_object() : NULL;
	const json_t *on = sargs != NULL ? sargs : empty;
	s_label(name, on, label, sizeof label);
	json_t *res = s_error("not_allowed", message, 0, "service_name", 0);
	orch_run_event(run, "service",
	               json_pack("{s:o, s:O, s:O?, s:i, s:b}", "service", orch_json_text(name),
	                         "arguments", on, "error", json_object_get(res, "error"),
	                         "duration_ms", 0, "replayed", 0),
	               "[service] %s → not_allowed: %s", label, message);
	json_decref(empty);
	orch_tool_done(run, res, s_code_status("not_allowed"));
}

/* True when name is in the registry (services.def). */
static int
s_known_service(const char *name)
{
	for (const char *const *k = ahp_known_services; *k != NULL; k++)
		if (strcmp(*k, name) == 0)
			return 1;
	return 0;
}

static void
s_start(orch_run_t *run, const json_t *args, int mode)
{
	/* New, resumed or retried: the same key, servicesd dedupes. */
	svc_call_t *x = s_state(run);
	if (x == NULL) {
		orch_tool_done(run, s_error("internal", "out of memory", 0, NULL, 0),
		               AHP__STATUS__ERR_INTERNAL);
		return;
	}
	if (x->req != 0)
		orch_svc_forget(run->o, x->req);
	x->req = 0;
	x->attempts = 0;
	x->unsent_since = 0;
	free(x->args_json);
	x->args_json = NULL;
	json_decref(x->args);
	x->args = NULL;
	x->service[0] = '\0';

	const char *k;
	json_t *v;
	json_object_foreach((json_t *)args, k, v)
	{
		if (strcmp(k, "service_name") != 0 && strcmp(k, "args") != 0) {
			char msg[256];
			snprintf(
			    msg, sizeof msg,
			    "unknown argument '%.*s': exec_service takes service_name and args "
			    "(the service's own arguments go inside args)",
			    AHP_UTF8_CUT(k, 64));
			s_refuse(run, s_service(args), args, "validation", k, msg);
			return;
		}
	}
	const json_t *jn = json_object_get(args, "service_name");
	const char *name = json_string_value(jn);
	size_t nl = json_string_length(jn);
	if (name == NULL || nl == 0 || nl > SVC_NAME_MAX || strlen(name) != nl) {
		s_refuse(run, NULL, args, "validation", "service_name",
		         "service_name must be a string of 1-64 bytes naming one of the services "
		         "in the tool description");
		return;
	}
	/* The run's profile as this orchestrator has it must list the service. servicesd
	 * refuses it too, but its copy of the profiles is reloaded separately and may be
	 * older: a profile narrowed here must not keep a grant there. Unknown names go on to
	 * servicesd (its unknown_service lists what exists); a resumed step too (servicesd
	 * decides what a call already sent gets). */
	if (mode == ORCH_TOOL_NEW && s_known_service(name) &&
	    !ahp_profile_has_service(run->profile, name)) {
		char msg[160];
		snprintf(msg, sizeof msg, "profile %.*s does not allow this service (%s)",
		         AHP_UTF8_CUT(run->profile->name, 64), name);
		s_refuse_service(run, name, s_service_args(args), msg);
		return;
	}
	const json_t *a = json_object_get(args, "args");
	json_t *own = NULL;
	if (a == NULL || json_is_null(a))
		a = own = json_object();
	if (!json_is_object(a)) {
		s_refuse(run, name, args, "validation", "args",
		         "args must be a JSON object of the service's arguments");
		return;
	}
	char *text = json_dumps(a, JSON_COMPACT);
	if (text == NULL || strlen(text) > SVC_ARGS_MAX) {
		char msg[96];
		int big = text != NULL;
		snprintf(msg, sizeof msg, "args must be at most %d KiB of JSON",
		         SVC_ARGS_MAX >> 10);
		free(text);
		json_decref(own);
		s_refuse(run, name, args, big ? "too_large" : "internal", "args",
		         big ? msg : "args cannot be encoded");
		return;
	}
	memcpy(x->service, name, nl + 1);
	x->args_json = text;
	x->args = own != NULL ? own : json_incref((json_t *)a);
	orch_tool_due(run);
}

static void
s_send(orch_run_t *run)
{
	orch_t *o = run->o;
	svc_call_t *x = s_state(run);
	if (x == NULL || x->args_json == NULL)
		return;
	Ahp__Svcd__Request req = AHP__SVCD__REQUEST__INIT;
	Ahp__Svcd__CallRequest call = AHP__SVCD__CALL_REQUEST__INIT;
	call.run_id = run->id;
	call.profile = run->profile->name;
	call.step = run->cur_seq;
	call.service = x->service;
	call.args_json = x->args_json;
	req.body_case = AHP__SVCD__REQUEST__BODY_CALL;
	req.call = &call;
	x->req = orch_svc_request(o, &x->owner, &req, ORCH_SVC_CALL_TIMEOUT_MS);
	if (x->req == 0) {
		/* Not running, or not connected yet (just started or restarted). */
		int64_t now = ahp_mono_ms();
		if (x->unsent_since == 0)
			x->unsent_since = now;
		if (now - x->unsent_since < ORCH_SVC_GRACE_MS) {
			orch_tool_backoff(run, now + SVC_UNSENT_RETRY_MS);
			return;
		}
		x->unsent_since = 0;
		const char *why = orch_svc_present(o)
		                      ? "servicesd is not reachable"
		                      : "servicesd is not running (no socket at its endpoint)";
		orch_run_event(run, "service",
		               json_pack("{s:s, s:s}", "service", x->service, "message", why),
		               "[service] %s → %s", x->service, why);
		/* Resume sends it again under the same key: servicesd answers
		 * from its store whatever an earlier send did. */
		orch_tool_platform_failed(run, AHP__STATUS__ERR_UNAVAILABLE, "%s", why);
		return;
	}
	x->unsent_since = 0;
	x->attempts++;
	orch_tool_inflight(run);
}

/* The model's tool result from a CallReply (new reference), and the line. */
static void
s_complete(orch_run_t *run, svc_call_t *x, const Ahp__Svcd__CallReply *cr)
{
	char label[256];
	s_label(x->service, x->args, label, sizeof label);
	const char *replayed = cr->replayed ? " (replayed)" : "";
	const Ahp__Svcd__ServiceError *se = cr->error;
	/* Lives as long as se may point at it (a compound literal in the block
	 * below would end with that block). */
	static const Ahp__Svcd__ServiceError not_object = {
	    .code = "bad_response", .message = "servicesd sent a result that is not a JSON object"};
	json_t *res = NULL;
	if (se == NULL || se->code == NULL || *se->code == '\0') {
		const char *rj = cr->result_json ? cr->result_json : "";
		size_t rl = strlen(rj);
		json_error_t jerr;
		res =
		    rl <= SVC_RESULT_MAX ? json_loadb(rj, rl, JSON_REJECT_DUPLICATES, &jerr) : NULL;
		if (!json_is_object(res)) {
			json_decref(res);
			res = NULL;
			se = &not_object;
		}
	}
	if (res != NULL) {
		const char *sum = cr->summary ? cr->summary : "";
		orch_run_event(run, "service",
		               json_pack("{s:s, s:O, s:O, s:i, s:b, s:o}", "service", x->service,
		                         "arguments", x->args, "result", res, "duration_ms",
		                         (int)cr->duration_ms, "replayed", cr->replayed, "summary",
		                         orch_json_text(sum)),
		               "[service] %s → ok%s%.*s (%u ms)%s", label,
		               *sum == '\0'               ? ""
		               : strchr(sum, '=') != NULL ? " "
		                                          : ", ",
		               AHP_UTF8_CUT(sum, 200), cr->duration_ms, replayed);
		orch_tool_done(run, res, 0);
		return;
	}
	res = s_error(se->code, se->message, se->retryable, se->field, se->http_status);
	orch_run_event(run, "service",
	               json_pack("{s:s, s:O, s:O?, s:i, s:b}", "service", x->service, "arguments",
	                         x->args, "error", json_object_get(res, "error"), "duration_ms",
	                         (int)cr->duration_ms, "replayed", cr->replayed),
	               "[service] %s → %.32s: %.*s%s", label, se->code,
	               AHP_UTF8_CUT(se->message ? se->message : "", 300), replayed);
	orch_tool_done(run, res, s_code_status(se->code));
}

void
orch_service_reply(orch_svc_owner_t *owner, int status, const char *message,
                   const Ahp__Svcd__Reply *reply)
{
	svc_call_t *x = (svc_call_t *)owner;
	orch_run_t *run = x->run;
	x->req = 0;
	if (run->tool != &orch_tool_service || !orch_tool_waiting(run))
		return;
	int refused = 0; /* servicesd refused the request itself (Reply.error) */
	if (reply != NULL && reply->error != NULL && reply->error->status != 0) {
		status = reply->error->status;
		message = reply->error->message;
		refused = 1;
	}
	if (status == 0 && reply->body_case != AHP__SVCD__REPLY__BODY_CALL) {
		status = AHP__STATUS__ERR_INTERNAL;
		message = "servicesd answered a Call with another body";
	}
	if (status == 0) {
		s_complete(run, x, reply->call);
		return;
	}
	if (status == AHP__STATUS__ERR_INTERRUPTED || status == AHP__STATUS__ERR_TIMEOUT ||
	    status == AHP__STATUS__ERR_UNAVAILABLE) {
		/* Lost, late or "not now" (servicesd stopping): send it again under
		 * the same key; servicesd runs a key at most once. */
		if (x->attempts < SVC_CALL_ATTEMPTS) {
			long wait = SVC_RETRY_BASE_MS << (x->attempts - 1);
			orch_run_event(
			    run, "service",
			    json_pack("{s:s, s:i, s:s, s:o, s:i}", "service", x->service, "attempt",
			              x->attempts, "status", ahp_status_str(status), "message",
			              orch_json_text(message ? message : ""), "wait_ms", (int)wait),
			    "[service] %s → %s; sending again (attempt %d/%d, wait %ld ms)",
			    x->service, ahp_status_str(status), x->attempts + 1, SVC_CALL_ATTEMPTS,
			    wait);
			orch_tool_backoff(run, ahp_mono_ms() + wait);
			return;
		}
	}
	if (!refused || status == AHP__STATUS__ERR_PERMISSION_DENIED ||
	    status == AHP__STATUS__ERR_INTERRUPTED || status == AHP__STATUS__ERR_TIMEOUT ||
	    status == AHP__STATUS__ERR_UNAVAILABLE) {
		/* servicesd is lost, or will not serve this orchestrator: the
		 * platform failed, not the model's call. The run fails resumably;
		 * resume sends the same key again. */
		char why[400];
		snprintf(why, sizeof why, "servicesd: %s after %d attempt%s: %.200s",
		         ahp_status_str(status), x->attempts, x->attempts == 1 ? "" : "s",
		         message && *message ? message : "no detail");
		orch_run_event(run, "service",
		               json_pack("{s:s, s:s, s:o}", "service", x->service, "status",
		                         ahp_status_str(status), "message", orch_json_text(why)),
		               "[service] %s → %s", x->service, why);
		orch_tool_platform_failed(run, status, "%s", why);
		return;
	}
	/* A request servicesd refused as malformed: tell the model, once. */
	char label[256];
	json_t *res =
	    s_error(ahp_status_str(status), message ? message : "refused by servicesd", 0, NULL, 0);
	orch_run_event(run, "service",
	               json_pack("{s:s, s:O, s:O?, s:i, s:b}", "service", x->service, "arguments",
	                         x->args, "error", json_object_get(res, "error"), "duration_ms", 0,
	                         "replayed", 0),
	               "[service] %s → %s: %.*s", s_label(x->service, x->args, label, sizeof label),
	               ahp_status_str(status), AHP_UTF8_CUT(message ? message : "", 300));
	orch_tool_done(run, res, status);
}

static void
s_forget(orch_run_t *run)
{
	svc_call_t *x = run->tool_state[ORCH_TOOL_SERVICE];
	if (x != NULL && x->req != 0) {
		orch_svc_forget(run->o, x->req);
		x->req = 0;
	}
}

static void
s_free_state(orch_run_t *run)
{
	svc_call_t *x = run->tool_state[ORCH_TOOL_SERVICE];
	if (x == NULL)
		return;
	s_forget(run);
	free(x->args_json);
	json_decref(x->args);
	free(x);
	run->tool_state[ORCH_TOOL_SERVICE] = NULL;
}

const orch_tool_t orch_tool_service = {
    .name = "exec_service",
    .slot = ORCH_TOOL_SERVICE,
    .definition = s_definition,
    .service = s_service,
    .service_args = s_service_args,
    .start = s_start,
    .send = s_send,
    .ended = s_forget,
    .free_state = s_free_state,
};
