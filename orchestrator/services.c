/* orchestrator: the servicesd client — an ahp_client whose replies go to the exec_service step
 * of the run that asked, or to the exec_service definition being fetched for a profile. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/log.h"
#include "ahp/util.h"

#include "orch.h"

#define DESC_RETRY_MS 200         /* a failed Describe is asked again after this */
#define DESC_TOOL_MAX (256 << 10) /* bytes of one tool definition from servicesd */

enum desc_state { DESC_NONE, DESC_INFLIGHT, DESC_READY, DESC_FAILED };

/* The exec_service definition servicesd rendered for one profile of one
 * profile set (a reload is a new generation, so it is fetched again). */
struct orch_svc_desc {
	orch_svc_owner_t owner; /* first: the request's owner */
	struct orch_svc_desc *next;
	orch_t *o;
	char *profile;
	uint64_t generation;
	int state;        /* enum desc_state */
	uint64_t req;     /* Describe in flight, 0 = none */
	int64_t retry_at; /* DESC_FAILED: monotonic ms when it is asked again */
	json_t *tool;     /* DESC_READY: the "tools" entry */
	char why[256];    /* DESC_FAILED: the last failure, one line */
};
typedef struct orch_svc_desc orch_svc_desc_t;

static void
s_desc_free(orch_t *o, orch_svc_desc_t *d)
{
	if (d->req != 0)
		orch_svc_forget(o, d->req);
	json_decref(d->tool);
	free(d->profile);
	free(d);
}

/* Checks a definition from servicesd: trusted, but a wrong one would be
 * sent to every model call of the profile. */
static json_t *
s_tool_parse(const char *text, char *why, size_t len)
{
	size_t n = text != NULL ? strlen(text) : 0;
	if (n == 0 || n > DESC_TOOL_MAX) {
		snprintf(why, len, "servicesd sent a tool definition of %zu bytes", n);
		return NULL;
	}
	json_error_t jerr;
	json_t *t = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
	const char *type = json_string_value(json_object_get(t, "type"));
	json_t *fn = json_object_get(t, "function");
	const char *name = json_string_value(json_object_get(fn, "name"));
	if (!json_is_object(t) || type == NULL || strcmp(type, "function") != 0 ||
	    !json_is_object(fn) || name == NULL || strcmp(name, "exec_service") != 0) {
		snprintf(
		    why, len,
		    "servicesd sent a tool definition that is not an exec_service function%s%s",
		    t == NULL ? ": " : "", t == NULL ? jerr.text : "");
		json_decref(t);
		return NULL;
	}
	return t;
}

static void
s_desc_done(orch_svc_desc_t *d, int status, const char *message, const Ahp__Svcd__Reply *reply)
{
	d->req = 0;
	if (reply != NULL && reply->error != NULL && reply->error->status != 0) {
		status = reply->error->status;
		message = reply->error->message;
	}
	if (status == 0 && (reply == NULL || reply->body_case != AHP__SVCD__REPLY__BODY_DESCRIBE)) {
		status = AHP__STATUS__ERR_INTERNAL;
		message = "servicesd answered a Describe with another body";
	}
	if (status == 0) {
		json_t *t = s_tool_parse(reply->describe->tool_json, d->why, sizeof d->why);
		if (t != NULL) {
			json_decref(d->tool);
			d->tool = t;
			d->state = DESC_READY;
			log_debug("exec_service definition for profile %s: %zu service(s)",
			          d->profile, reply->describe->n_services);
			return;
		}
	} else {
		snprintf(d->why, sizeof d->why, "servicesd: %s: %.200s", ahp_status_str(status),
		         message != NULL && *message ? message : "no detail");
	}
	d->state = DESC_FAILED;
	d->retry_at = ahp_mono_ms() + DESC_RETRY_MS;
	log_warn("exec_service definition for profile %s: %s", d->profile, d->why);
}

/* The owner of every request is alive here: a run forgets its request before
 * it is freed, and a definition is freed only with its request forgotten. */
static void
s_done(void *owner, uint64_t id, int status, const char *message, const uint8_t *body, size_t len)
{
	(void)id;
	orch_svc_owner_t *ow = owner;
	Ahp__Svcd__Reply *reply = NULL;
	if (status == 0) {
		reply = ahp__svcd__reply__unpack(NULL, len, body);
		if (reply == NULL) {
			status = AHP__STATUS__ERR_INTERNAL;
			message = "undecodable reply from servicesd";
		}
	}
	if (ow->kind == ORCH_SVC_OWNER_DESC)
		s_desc_done((orch_svc_desc_t *)ow, status, message, reply);
	else
		orch_service_reply(ow, status, message, reply);
	if (reply != NULL)
		ahp__svcd__reply__free_unpacked(reply, NULL);
}

int
orch_svc_setup(orch_t *o)
{
	o->svc = ahp_client_new(o->zctx, "servicesd", o->svc_endpoint, s_done);
	return o->svc != NULL ? 0 : -1;
}

void
orch_svc_teardown(orch_t *o)
{
	while (o->svc_descs != NULL) {
		orch_svc_desc_t *d = o->svc_descs;
		o->svc_descs = d->next;
		s_desc_free(o, d);
	}
	ahp_client_destroy(&o->svc);
}

void *
orch_svc_socket(orch_t *o)
{
	return o->svc != NULL ? ahp_client_socket(o->svc) : NULL;
}

void *
orch_svc_monitor_socket(orch_t *o)
{
	return o->svc != NULL ? ahp_client_monitor_socket(o->svc) : NULL;
}

void
orch_svc_recv(orch_t *o)
{
	if (o->svc != NULL)
		ahp_client_recv(o->svc);
}

void
orch_svc_monitor_recv(orch_t *o)
{
	if (o->svc != NULL)
		ahp_client_monitor_recv(o->svc);
}

long
orch_svc_timers(orch_t *o, int64_t now, long max)
{
	return o->svc != NULL ? ahp_client_timers(o->svc, now, max) : max;
}

int
orch_svc_present(orch_t *o)
{
	return o->svc != NULL && ahp_client_present(o->svc);
}

uint64_t
orch_svc_request(orch_t *o, orch_svc_owner_t *owner, const Ahp__Svcd__Request *req, long timeout_ms)
{
	if (o->svc == NULL)
		return 0;
	size_t len = ahp__svcd__request__get_packed_size(req);
	uint8_t *buf = malloc(len ? len : 1);
	if (buf == NULL)
		return 0;
	ahp__svcd__request__pack(req, buf);
	uint64_t id = ahp_client_send(o->svc, owner, buf, len, timeout_ms);
	free(buf);
	return id;
}

void
orch_svc_forget(orch_t *o, uint64_t id)
{
	if (o->svc != NULL && id != 0)
		ahp_client_forget(o->svc, id);
}

/* The entry for p's name in the current profile set; entries of earlier
 * sets are dropped on the way (a reload asks servicesd again). */
static orch_svc_desc_t *
s_desc_get(orch_t *o, const ahp_profile_t *p, int create)
{
	uint64_t gen = o->profiles != NULL ? o->profiles->generation : 0;
	orch_svc_desc_t **pp = &o->svc_descs, *found = NULL;
	while (*pp != NULL) {
		orch_svc_desc_t *d = *pp;
		if (d->generation != gen) {
			*pp = d->next;
			s_desc_free(o, d);
			continue;
		}
		if (strcmp(d->profile, p->name) == 0)
			found = d;
		pp = &d->next;
	}
	if (found != NULL || !create)
		return found;
	orch_svc_desc_t *d = calloc(1, sizeof *d);
	if (d == NULL || (d->profile = strdup(p->name)) == NULL) {
		free(d);
		return NULL;
	}
	d->owner.kind = ORCH_SVC_OWNER_DESC;
	d->o = o;
	d->generation = gen;
	d->next = o->svc_descs;
	o->svc_descs = d;
	return d;
}

int
orch_svc_describe_ready(orch_t *o, const ahp_profile_t *p, char *why, size_t len)
{
	orch_svc_desc_t *d = s_desc_get(o, p, 1);
	if (d == NULL) {
		snprintf(why, len, "out of memory");
		return -1;
	}
	if (d->state == DESC_READY)
		return 1;
	if (d->state == DESC_INFLIGHT)
		return 0;
	int64_t now = ahp_mono_ms();
	if (d->state == DESC_FAILED && now < d->retry_at) {
		snprintf(why, len, "%s", d->why);
		return -1;
	}
	Ahp__Svcd__Request req = AHP__SVCD__REQUEST__INIT;
	Ahp__Svcd__DescribeRequest dr = AHP__SVCD__DESCRIBE_REQUEST__INIT;
	dr.profile = (char *)p->name;
	req.body_case = AHP__SVCD__REQUEST__BODY_DESCRIBE;
	req.describe = &dr;
	d->req = orch_svc_request(o, &d->owner, &req, ORCH_SVC_DESCRIBE_TIMEOUT_MS);
	if (d->req != 0) {
		d->state = DESC_INFLIGHT;
		return 0;
	}
	/* Not running, or not connected yet (right after a start). */
	snprintf(d->why, sizeof d->why, "%s",
	         orch_svc_present(o) ? "servicesd is not reachable"
	                             : "servicesd is not running (no socket at its endpoint)");
	d->state = DESC_FAILED;
	d->retry_at = now + 50;
	snprintf(why, len, "%s", d->why);
	return -1;
}

json_t *
orch_svc_definition(orch_t *o, const ahp_profile_t *p)
{
	orch_svc_desc_t *d = s_desc_get(o, p, 0);
	return d != NULL && d->state == DESC_READY ? json_deep_copy(d->tool) : NULL;
}
