/* orchestrator: the orchctl API — request decoding, a dispatch table, replies and event long-polls.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/log.h"
#include "ahp/util.h"

#include "orch.h"

#define EVENTS_REPLY_BYTES (2 << 20) /* soft cap of one events reply */

/* Strings a reply borrows until it is packed. */
typedef struct {
	char **v;
	size_t n, cap;
} s_pool_t;

static char *
s_keep(s_pool_t *p, const char *s)
{
	if (s == NULL)
		return (char *)"";
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 16;
		char **v = realloc(p->v, cap * sizeof *v);
		if (v == NULL)
			return (char *)"";
		p->v = v;
		p->cap = cap;
	}
	char *d = strdup(s);
	if (d == NULL)
		return (char *)"";
	p->v[p->n++] = d;
	return d;
}

static void
s_pool_free(s_pool_t *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->v[i]);
	free(p->v);
	memset(p, 0, sizeof *p);
}

static void
s_info_from_row(s_pool_t *pool, const orch_run_row_t *row, Ahp__Orch__RunInfo *info)
{
	ahp__orch__run_info__init(info);
	info->run_id = s_keep(pool, row->id);
	info->profile = s_keep(pool, row->profile);
	info->state = s_keep(pool, row->state);
	info->task = s_keep(pool, row->task);
	info->error = s_keep(pool, row->error);
	info->result = s_keep(pool, row->result);
	info->created_ms = row->created_ms;
	info->updated_ms = row->updated_ms;
	info->turns = row->turns;
	info->model_calls = row->model_calls;
	info->tool_calls = row->tool_calls;
	info->tokens = row->tokens;
	info->resumable = row->state != NULL && strcmp(row->state, "failed") == 0 &&
	                  orch_failure_resumable(row->error);
}

int
orch_failure_resumable(const char *reason)
{
	/* Failures a resume as it is would meet again: a profile limit (until
	 * it is raised), the conversation ceiling, a journal replay cannot use. */
	static const char *const again[] = {ORCH_WHY_MAX_TURNS, ORCH_WHY_MAX_MODEL_CALLS,
	                                    ORCH_WHY_CONV_TOO_BIG, ORCH_WHY_JOURNAL};
	if (reason == NULL)
		return 1;
	for (size_t i = 0; i < sizeof again / sizeof again[0]; i++)
		if (strncmp(reason, again[i], strlen(again[i])) == 0)
			return 0;
	return 1;
}

typedef struct {
	s_pool_t *pool;
	Ahp__Orch__RunInfo *info;
	int found;
} s_info_ctx_t;

static int
s_info_cb(void *arg, const orch_run_row_t *row)
{
	s_info_ctx_t *c = arg;
	s_info_from_row(c->pool, row, c->info);
	c->found = 1;
	return 1;
}

/* 1 found, 0 not found. */
static int
s_run_info(orch_t *o, const char *id, s_pool_t *pool, Ahp__Orch__RunInfo *info)
{
	s_info_ctx_t c = {pool, info, 0};
	if (orch_journal_run_get(o->journal, id, s_info_cb, &c) < 0)
		orch_journal_failed(o, "reading a run");
	return c.found;
}

/* An owned copy of a run row, for handlers that write while deciding. */
typedef struct {
	orch_run_row_t row;
	s_pool_t pool;
} s_row_t;

static int
s_row_cb(void *arg, const orch_run_row_t *row)
{
	s_row_t *r = arg;
	r->row = *row;
	r->row.id = s_keep(&r->pool, row->id);
	r->row.profile = s_keep(&r->pool, row->profile);
	r->row.task = s_keep(&r->pool, row->task);
	r->row.state = s_keep(&r->pool, row->state);
	r->row.error = s_keep(&r->pool, row->error);
	r->row.result = s_keep(&r->pool, row->result);
	return 1;
}

static uint8_t *
s_pack(const Ahp__Orch__Reply *rep, size_t *len)
{
	*len = ahp__orch__reply__get_packed_size(rep);
	uint8_t *buf = malloc(*len ? *len : 1);
	if (buf != NULL)
		ahp__orch__reply__pack(rep, buf);
	return buf;
}

static void
s_reply(orch_t *o, ahp_rpc_req_t **req_p, const Ahp__Orch__Reply *rep)
{
	size_t len;
	uint8_t *buf = s_pack(rep, &len);
	if (buf == NULL) {
		ahp_rpc_req_free(req_p);
		return;
	}
	orch_reply_defer(o, req_p, buf, len);
}

static void s_reply_error(orch_t *o, ahp_rpc_req_t **req_p, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
s_reply_error(orch_t *o, ahp_rpc_req_t **req_p, int status, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	char *clean = ahp_utf8_sanitize((const uint8_t *)msg, strlen(msg), 0, NULL, NULL);
	log_warn("request %llu refused: %s: %s", (unsigned long long)(*req_p)->request_id,
	         ahp_status_str(status), clean ? clean : msg);
	Ahp__Orch__Reply rep = AHP__ORCH__REPLY__INIT;
	Ahp__Error err = AHP__ERROR__INIT;
	ahp_error_set(&err, status, clean ? clean : msg);
	rep.error = &err;
	s_reply(o, req_p, &rep);
	free(clean);
}

/* Run ids are ours: "r-" and hex, but accept the general id alphabet. */
static int
s_id_ok(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n >= ORCH_RUN_ID_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return 0;
	}
	return 1;
}

static int
s_check_ref(orch_t *o, ahp_rpc_req_t **req_p, const Ahp__Orch__RunRef *ref)
{
	if (ref == NULL || ref->run_id == NULL || !s_id_ok(ref->run_id)) {
		s_reply_error(o, req_p, AHP__STATUS__ERR_BAD_REQUEST,
		              "run_id is missing or malformed");
		return -1;
	}
	return 0;
}

static void
s_reply_info(orch_t *o, ahp_rpc_req_t **req_p, const char *id, int body_case)
{
	s_pool_t pool = {0};
	Ahp__Orch__RunInfo info;
	if (!s_run_info(o, id, &pool, &info)) {
		s_reply_error(o, req_p, AHP__STATUS__ERR_NOT_FOUND, "no run %s", id);
		s_pool_free(&pool);
		return;
	}
	Ahp__Orch__Reply rep = AHP__ORCH__REPLY__INIT;
	rep.body_case = body_case;
	switch (body_case) {
	case AHP__ORCH__REPLY__BODY_STATUS:
		rep.status = &info;
		break;
	case AHP__ORCH__REPLY__BODY_CANCEL:
		rep.cancel = &info;
		break;
	default:
		rep.resume = &info;
		break;
	}
	s_reply(o, req_p, &rep);
	s_pool_free(&pool);
}

/* --- handlers --- */

static void
s_submit(orch_t *o, ahp_rpc_req_t **req_p, const Ahp__Orch__Request *r)
{
	const Ahp__Orch__SubmitRequest *s = r->submit;
	if (s->profile == NULL || *s->profile == '\0') {
		s_reply_error(o, req_p, AHP__STATUS__ERR_BAD_REQUEST, "profile is required");
		return;
	}
	int status = 0;
	char err[512]; /* as much as s_reply_error sends: room for a profile's file:line reason */
	orch_run_t *run =
	    orch_run_submit(o, s->profile, s->task ? s->task : "", &status, err, sizeof err);
	if (run == NULL) {
		s_reply_error(o, req_p, status, "%s", err);
		return;
	}
	Ahp__Orch__Reply rep = AHP__ORCH__REPLY__INIT;
	Ahp__Orch__SubmitReply sr = AHP__ORCH__SUBMIT_REPLY__INIT;
	sr.run_id = run->id;
	rep.body_case = AHP__ORCH__REPLY__BODY_SUBMIT;
	rep.submit = &sr;
	s_reply(o, req_p, &rep);
}

static void
s_status(orch_t *o, ahp_rpc_req_t **req_p, const Ahp__Orch__Request *r)
{
	if (s_check_ref(o, req_p, r->status) != 0)
		return;
	s_reply_info(o, req_p, r->status->run_id, AHP__ORCH__REPLY__BODY_STATUS);
}

typedef struct {
	s_pool_t *pool;
	Ahp__Orch__Event *ev;
	Ahp__Orch__Event **evp;
	size_t n, max, bytes;
} s_events_ctx_t;

static int
s_event_cb(void *arg, const orch_event_row_t *row)
{
	s_events_ctx_t *c = arg;
	size_t sz = strlen(row->text) + (row->data ? strlen(row->data) : 0) + 64;
	if (c->n >= c->max || (c->n > 0 && c->bytes + sz > EVENTS_REPLY_BYTES))
		return 1;
	Ahp__Orch__Event *e = &c->ev[c->n];
	ahp__orch__event__init(e);
	e->seq = row->seq;
	e->ts_ms = row->ts_ms;
	e->kind = s_keep(c->pool, row->kind);
	e->text = s_keep(c->pool, row->text);
	e->data = s_keep(c->pool, row->data);
	c->evp[c->n] = e;
	c->n++;
	c->bytes += sz;
	return 0;
}

/* Packs an EventsReply for run_id after `after`. NULL when the run is unknown. */
static uint8_t *
s_events_reply(orch_t *o, const char *run_id, uint64_t after, uint32_t max, size_t *len)
{
	s_pool_t pool = {0};
	Ahp__Orch__RunInfo info;
	if (!s_run_info(o, run_id, &pool, &info)) {
		s_pool_free(&pool);
		return NULL;
	}
	if (max == 0)
		max = 500;
	if (max > ORCH_EVENTS_MAX)
		max = ORCH_EVENTS_MAX;
	s_events_ctx_t c = {.pool = &pool, .max = max};
	c.ev = calloc(max, sizeof *c.ev);
	c.evp = calloc(max, sizeof *c.evp);
	uint8_t *buf = NULL;
	if (c.ev != NULL && c.evp != NULL) {
		if (orch_journal_events_foreach(o->journal, run_id, after, max, s_event_cb, &c) !=
		    0)
			orch_journal_failed(o, "reading events");
		Ahp__Orch__Reply rep = AHP__ORCH__REPLY__INIT;
		Ahp__Orch__EventsReply er = AHP__ORCH__EVENTS_REPLY__INIT;
		er.n_events = c.n;
		er.events = c.evp;
		er.run = &info;
		rep.body_case = AHP__ORCH__REPLY__BODY_EVENTS;
		rep.events = &er;
		buf = s_pack(&rep, len);
	}
	free(c.ev);
	free(c.evp);
	s_pool_free(&pool);
	return buf;
}

static void
s_events(orch_t *o, ahp_rpc_req_t **req_p, const Ahp__Orch__Request *r)
{
	const Ahp__Orch__EventsRequest *e = r->events;
	if (e->run_id == NULL || !s_id_ok(e->run_id)) {
		s_reply_error(o, req_p, AHP__STATUS__ERR_BAD_REQUEST,
		              "run_id is missing or malformed");
		return;
	}
	if (e->wait_ms > ORCH_EVENTS_WAIT_MAX) {
		s_reply_error(o, req_p, AHP__STATUS__ERR_BAD_REQUEST, "wait_ms %u is over %d",
		              e->wait_ms, ORCH_EVENTS_WAIT_MAX);
		return;
	}
	orch_run_t *run = orch_run_find(o, e->run_id);
	/* Past the ceiling of held requests, answer at once (the client polls). */
	if (run != NULL && e->wait_ms > 0 && run->event_seq <= e->after_seq &&
	    o->n_waiters < ORCH_WAITERS_MAX) {
		/* Nothing new yet: hold the request; answered after a commit that
		 * brings events, when the run ends, or at the deadline. */
		orch_waiter_t *w = calloc(1, sizeof *w);
		if (w == NULL) {
			s_reply_error(o, req_p, AHP__STATUS__ERR_INTERNAL, "out of memory");
			return;
		}
		w->req = *req_p;
		*req_p = NULL;
		w->run = run;
		w->after = e->after_seq;
		w->max = e->max;
		w->deadline = ahp_mono_ms() + e->wait_ms;
		w->next = o->waiters;
		o->waiters = w;
		o->n_waiters++;
		return;
	}
	size_t len = 0;
	uint8_t *buf = s_events_reply(o, e->run_id, e->after_seq, e->max, &len);
	if (buf == NULL) {
		s_reply_error(o, req_p, AHP__STATUS__ERR_NOT_FOUND, "no run %s", e->run_id);
		return;
	}
	orch_reply_defer(o, req_p, buf, len);
}

typedef struct {
	s_pool_t *pool;
	Ahp__Orch__RunInfo *infos;
	Ahp__Orch__RunInfo **ptrs;
	size_t n, max;
} s_list_ctx_t;

static int
s_list_cb(void *arg, const orch_run_row_t *row)
{
	s_list_ctx_t *c = arg;
	if (c->n >= c->max)
		return 1;
	s_info_from_row(c->pool, row, &c->infos[c->n]);
	c->ptrs[c->n] = &c->infos[c->n];
	c->n++;
	return 0;
}

static void
s_list(orch_t *o, ahp_rpc_req_t **req_p, const Ahp__Orch__Request *r)
{
	const Ahp__Orch__ListRequest *l = r->list;
	if (l->state != NULL && *l->state != '\0' && orch_state_parse(l->state) < 0) {
		s_reply_error(
		    o, req_p, AHP__STATUS__ERR_BAD_REQUEST,
		    "unknown state '%.40s' (queued, running, waiting_approval, succeeded, failed, "
		    "cancelled)",
		    l->state);
		return;
	}
	if (l->profile != NULL && strlen(l->profile) > 64) {
		s_reply_error(o, req_p, AHP__STATUS__ERR_BAD_REQUEST, "profile name too long");
		return;
	}
	uint32_t max = l->limit ? l->limit : 100;
	if (max > ORCH_LIST_MAX)
		max = ORCH_LIST_MAX;
	s_pool_t pool = {0};
	s_list_ctx_t c = {.pool = &pool, .max = max};
	c.infos = calloc(max, sizeof *c.infos);
	c.ptrs = calloc(max, sizeof *c.ptrs);
	if (c.infos == NULL || c.ptrs == NULL) {
		free(c.infos);
		free(c.ptrs);
		s_reply_error(o, req_p, AHP__STATUS__ERR_INTERNAL, "out of memory");
		return;
	}
	if (orch_journal_run_list(o->journal, l->state, l->profile, max, s_list_cb, &c) != 0)
		orch_journal_failed(o, "listing runs");
	Ahp__Orch__Reply rep = AHP__ORCH__REPLY__INIT;
	Ahp__Orch__ListReply lr = AHP__ORCH__LIST_REPLY__INIT;
	lr.n_runs = c.n;
	lr.runs = c.ptrs;
	rep.body_case = AHP__ORCH__REPLY__BODY_LIST;
	rep.list = &lr;
	s_reply(o, req_p, &rep);
	free(c.infos);
	free(c.ptrs);
	s_pool_free(&pool);
}

static void
s_cancel(orch_t *o, ahp_rpc_req_t **req_p, const Ahp__Orch__Request *r)
{
	if (s_check_ref(o, req_p, r->cancel) != 0)
		return;
	const char *id = r->cancel->run_id;
	orch_run_t *run = orch_run_find(o, id);
	if (run == NULL) {
		s_row_t row = {0};
		int found = orch_journal_run_get(o->journal, id, s_row_cb, &row);
		if (found < 0)
			orch_journal_failed(o, "reading a run");
		if (found == 0)
			s_reply_error(o, req_p, AHP__STATUS__ERR_NOT_FOUND, "no run %s", id);
		else
			s_reply_error(o, req_p, AHP__STATUS__ERR_INVALID_STATE,
			              "run %s is %s; only a queued, running or waiting run can be "
			              "cancelled",
			              id, row.row.state);
		s_pool_free(&row.pool);
		return;
	}
	orch_run_cancel(run);
	s_reply_info(o, req_p, id, AHP__ORCH__REPLY__BODY_CANCEL);
}

static void
s_resume(orch_t *o, ahp_rpc_req_t **req_p, const Ahp__Orch__Request *r)
{
	if (s_check_ref(o, req_p, r->resume) != 0)
		return;
	const char *id = r->resume->run_id;
	s_row_t row = {0};
	int found = orch_journal_run_get(o->journal, id, s_row_cb, &row);
	if (found < 0)
		orch_journal_failed(o, "reading a run");
	if (found == 0) {
		s_reply_error(o, req_p, AHP__STATUS__ERR_NOT_FOUND, "no run %s", id);
		s_pool_free(&row.pool);
		return;
	}
	int status = 0;
	char err[256];
	if (orch_run_restore(o, &row.row, 1, &status, err, sizeof err) == NULL) {
		s_reply_error(o, req_p, status, "%s", err);
		s_pool_free(&row.pool);
		return;
	}
	s_pool_free(&row.pool);
	s_reply_info(o, req_p, id, AHP__ORCH__REPLY__BODY_RESUME);
}

typedef void (*s_handler_fn)(orch_t *o, ahp_rpc_req_t **req_p, const Ahp__Orch__Request *r);

/* One row per request body; anything else is refused in one place. */
static const struct {
	int body;
	const char *name;
	s_handler_fn fn;
	size_t max_size;
} s_handlers[] = {
    {AHP__ORCH__REQUEST__BODY_SUBMIT, "submit", s_submit, ORCH_TASK_MAX + 1024},
    {AHP__ORCH__REQUEST__BODY_STATUS, "status", s_status, 256},
    {AHP__ORCH__REQUEST__BODY_EVENTS, "events", s_events, 256},
    {AHP__ORCH__REQUEST__BODY_LIST, "list", s_list, 512},
    {AHP__ORCH__REQUEST__BODY_CANCEL, "cancel", s_cancel, 256},
    {AHP__ORCH__REQUEST__BODY_RESUME, "resume", s_resume, 256},
};

static void
s_dispatch(orch_t *o, ahp_rpc_req_t **req_p)
{
	ahp_rpc_req_t *req = *req_p;
	if (req->body_len > ORCH_RPC_MAX_MSG) {
		s_reply_error(o, req_p, AHP__STATUS__ERR_TOO_LARGE, "request of %zu bytes (max %d)",
		              req->body_len, ORCH_RPC_MAX_MSG);
		return;
	}
	Ahp__Orch__Request *r = ahp__orch__request__unpack(NULL, req->body_len, req->body);
	if (r == NULL) {
		s_reply_error(o, req_p, AHP__STATUS__ERR_BAD_REQUEST,
		              "request is not a valid orchestrator Request message");
		return;
	}
	if (r->body_case == AHP__ORCH__REQUEST__BODY__NOT_SET) {
		if (r->base.n_unknown_fields > 0)
			s_reply_error(o, req_p, AHP__STATUS__ERR_UNKNOWN_METHOD,
			              "unknown request type (field %u)",
			              r->base.unknown_fields[0].tag);
		else
			s_reply_error(o, req_p, AHP__STATUS__ERR_BAD_REQUEST,
			              "request has no body");
		ahp__orch__request__free_unpacked(r, NULL);
		return;
	}
	for (size_t i = 0; i < sizeof s_handlers / sizeof s_handlers[0]; i++) {
		if ((int)r->body_case != s_handlers[i].body)
			continue;
		if (req->body_len > s_handlers[i].max_size)
			s_reply_error(o, req_p, AHP__STATUS__ERR_TOO_LARGE,
			              "%s request of %zu bytes (max %zu)", s_handlers[i].name,
			              req->body_len, s_handlers[i].max_size);
		else
			s_handlers[i].fn(o, req_p, r);
		ahp__orch__request__free_unpacked(r, NULL);
		return;
	}
	s_reply_error(o, req_p, AHP__STATUS__ERR_UNKNOWN_METHOD, "unknown request type %d",
	              (int)r->body_case);
	ahp__orch__request__free_unpacked(r, NULL);
}

void
orch_api_recv(orch_t *o)
{
	/* Bounded per turn so a flood of requests cannot starve the runs. */
	for (int i = 0; i < 256; i++) {
		ahp_rpc_req_t *req = NULL;
		int rc = ahp_rpc_server_recv(o->server, &req);
		if (rc <= 0)
			break;
		s_dispatch(o, &req);
		if (req != NULL)
			ahp_rpc_req_free(&req);
	}
}

void
orch_api_waiters(orch_t *o, int64_t now, int all)
{
	orch_waiter_t **pp = &o->waiters;
	while (*pp != NULL) {
		orch_waiter_t *w = *pp;
		orch_run_t *run = w->run;
		if (!all && now < w->deadline && run->phase != PH_ENDED &&
		    run->event_seq <= w->after) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		o->n_waiters--;
		size_t len = 0;
		uint8_t *buf = s_events_reply(o, run->id, w->after, w->max, &len);
		if (buf != NULL)
			ahp_rpc_server_reply(o->server, &w->req, buf, len);
		else
			ahp_rpc_req_free(&w->req);
		free(buf);
		free(w);
	}
}

long
orch_api_waiters_timeout(orch_t *o, int64_t now, long max)
{
	long next = max;
	for (orch_waiter_t *w = o->waiters; w != NULL; w = w->next) {
		if (w->deadline <= now)
			return 0;
		if (w->deadline - now < next)
			next = (long)(w->deadline - now);
	}
	return next;
}
