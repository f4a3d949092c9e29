/* approvald: the one loop — the orchestrator's socket and the humans' socket (ZMQ ROUTER via
 * libahp rpc), the store's group commit, the expiry timer and the held Watch long polls.
 *
 * A loop turn: expire what is due, read every request on both sockets, write creates and
 * decisions in one transaction, commit, and only then send the replies and answer the held
 * watches. So no caller hears of a request or a decision that a crash could still lose. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <zmq.h>

#include "ahp/log.h"
#include "ahp/text.h"
#include "ahp/util.h"
#include "approvald.h"

#define POLL_MAX_MS 1000
#define RECV_BATCH 256   /* requests read per socket per turn before the turn's commit */
#define EXPIRE_BATCH 256 /* expiries decided per turn */
/* The orchestrator's frames carry at most APPR_ARGS_MAX of arguments plus small fields. */
#define ORCH_MAX_MSG (APPR_ARGS_MAX + 64 * 1024)
#define HUMAN_MAX_MSG (64 * 1024)

/* A reply to send after the turn's commit. */
typedef struct pending {
	struct pending *next;
	ahp_rpc_server_t *srv;
	ahp_rpc_req_t *req;
	uint8_t *buf;
	size_t len;
} pending_t;

/* A Watch waiting for a decision or its deadline. */
typedef struct held {
	struct held *next;
	ahp_rpc_req_t *req;
	uint64_t after;
	uint32_t limit;
	int64_t deadline; /* monotonic ms */
} held_t;

struct appr_server {
	void *zctx;
	ahp_rpc_server_t *orch, *human;
	appr_store_t *store;
	ahp_rpc_allow_t decide;
	appr_approvers_t approvers;
	held_t *held, **held_tail; /* oldest first */
	size_t n_held;
	pending_t *replies, **replies_tail;
	int decided; /* a decision was written in this turn */
	int stop;
};

/* --- replies --- */

static void
s_queue(appr_server_t *self, ahp_rpc_server_t *srv, ahp_rpc_req_t **req_p,
        const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(len ? len : 1);
	pending_t *p = calloc(1, sizeof *p);
	if (buf == NULL || p == NULL) {
		free(buf);
		free(p);
		log_error("out of memory: a reply is dropped (the caller times out)");
		ahp_rpc_req_free(req_p);
		return;
	}
	protobuf_c_message_pack(m, buf);
	p->srv = srv;
	p->req = *req_p;
	*req_p = NULL;
	p->buf = buf;
	p->len = len;
	*self->replies_tail = p;
	self->replies_tail = &p->next;
}

static void
s_orch_reply(appr_server_t *self, ahp_rpc_req_t **req_p, Ahp__Appr__OrchReply *r)
{
	s_queue(self, self->orch, req_p, &r->base);
}

static void
s_human_reply(appr_server_t *self, ahp_rpc_req_t **req_p, Ahp__Appr__HumanReply *r)
{
	s_queue(self, self->human, req_p, &r->base);
}

static void
s_orch_error(appr_server_t *self, ahp_rpc_req_t **req_p, int status, const char *message)
{
	Ahp__Error e = AHP__ERROR__INIT;
	ahp_error_set(&e, status, message);
	Ahp__Appr__OrchReply r = AHP__APPR__ORCH_REPLY__INIT;
	r.error = &e;
	s_orch_reply(self, req_p, &r);
}

static void
s_human_error(appr_server_t *self, ahp_rpc_req_t **req_p, int status, const char *message)
{
	Ahp__Error e = AHP__ERROR__INIT;
	ahp_error_set(&e, status, message);
	Ahp__Appr__HumanReply r = AHP__APPR__HUMAN_REPLY__INIT;
	r.error = &e;
	s_human_reply(self, req_p, &r);
}

static void
s_orch_request(appr_server_t *self, ahp_rpc_req_t **req_p, Ahp__Appr__ApprovalRequest *a)
{
	Ahp__Appr__OrchReply r = AHP__APPR__ORCH_REPLY__INIT;
	r.body_case = AHP__APPR__ORCH_REPLY__BODY_REQUEST;
	r.request = a;
	s_orch_reply(self, req_p, &r);
}

static void
s_free_req(Ahp__Appr__ApprovalRequest **a)
{
	if (*a != NULL)
		protobuf_c_message_free_unpacked(&(*a)->base, NULL);
	*a = NULL;
}

/* --- decisions --- */

/* Records a decision of pending request a (in the turn's batch), logs it and fills
 * a->decision and a->state. A store failure stops the daemon: a decision must never be
 * half-written or answered unrecorded. */
static void
s_decide(appr_server_t *self, Ahp__Appr__ApprovalRequest *a, Ahp__Appr__State state, const char *by,
         int64_t by_uid, const char *comment)
{
	Ahp__Appr__Decision *d = malloc(sizeof *d);
	if (d == NULL)
		fatalx("out of memory recording the decision of #%" PRIu64, a->id);
	ahp__appr__decision__init(d);
	d->state = state;
	d->by = strdup(by);
	d->by_uid = by_uid;
	d->at_ms = ahp_now_ms();
	d->comment = strdup(comment != NULL ? comment : "");
	if (d->by == NULL || d->comment == NULL)
		fatalx("out of memory recording the decision of #%" PRIu64, a->id);
	if (appr_store_decide(self->store, a->id, d) != 0)
		fatalx("cannot record the decision of #%" PRIu64
		       "; stopping so that a restart answers from what reached the disk",
		       a->id);
	if (a->decision != NULL)
		protobuf_c_message_free_unpacked(&a->decision->base, NULL);
	a->decision = d;
	a->state = state;
	self->decided = 1;
	char step[16], id[24], seq[24];
	snprintf(step, sizeof step, "%u", a->step);
	snprintf(id, sizeof id, "%" PRIu64, a->id);
	snprintf(seq, sizeof seq, "%" PRIu64, d->seq);
	ahp_log_kv(AHP_LOG_INFO, a->run_id, step, "decision", "id", id, "by", by, "state",
	           appr_state_str(state), "seq", seq, "profile", a->profile, "action", a->action,
	           NULL);
}

/* Decides a pending request whose time has come, as the contract's expiry policy says
 * (reject, by "expiry"). */
static void
s_expire(appr_server_t *self, Ahp__Appr__ApprovalRequest *a)
{
	char span[32], comment[64];
	snprintf(comment, sizeof comment, "expired after %s",
	         appr_fmt_span(a->expires_ms - a->created_ms, span, sizeof span));
	s_decide(self, a, AHP__APPR__STATE__STATE_REJECTED, "expiry", -1, comment);
}

static void
s_expire_due(appr_server_t *self)
{
	uint64_t ids[EXPIRE_BATCH];
	int n = appr_store_expired(self->store, ahp_now_ms(), ids, EXPIRE_BATCH);
	for (int i = 0; i < n; i++) {
		Ahp__Appr__ApprovalRequest *a = NULL;
		if (appr_store_get(self->store, ids[i], &a) == 1 &&
		    a->state == AHP__APPR__STATE__STATE_PENDING)
			s_expire(self, a);
		s_free_req(&a);
	}
}

/* --- the orchestrator's requests --- */

static void
s_handle_create(appr_server_t *self, ahp_rpc_req_t **req_p, const Ahp__Appr__CreateRequest *in)
{
	char digest[APPR_DIGEST_LEN + 1], err[512];
	if (appr_validate_create(in, digest, err, sizeof err) != 0) {
		s_orch_error(self, req_p, AHP__STATUS__ERR_BAD_REQUEST, err);
		return;
	}
	Ahp__Appr__ApprovalRequest *a = NULL;
	int found = appr_store_find(self->store, in->run_id, in->step, &a);
	if (found < 0) {
		s_orch_error(self, req_p, AHP__STATUS__ERR_UNAVAILABLE,
		             "the store cannot be read; try again");
		return;
	}
	Ahp__Appr__CreateReply cr = AHP__APPR__CREATE_REPLY__INIT;
	Ahp__Appr__OrchReply r = AHP__APPR__ORCH_REPLY__INIT;
	r.body_case = AHP__APPR__ORCH_REPLY__BODY_CREATE;
	r.create = &cr;
	if (found == 1) {
		if (a->kind != in->kind || strcmp(a->action, in->action) != 0 ||
		    strcmp(a->digest, digest) != 0) {
			snprintf(err, sizeof err,
			         "step %u of run %s already has request #%" PRIu64
			         " for another call (%s)",
			         in->step, in->run_id, a->id, a->action);
			s_free_req(&a);
			s_orch_error(self, req_p, AHP__STATUS__ERR_CONFLICT, err);
			return;
		}
		cr.request = a;
		cr.existed = 1;
		s_orch_reply(self, req_p, &r);
		s_free_req(&a);
		return;
	}
	Ahp__Appr__ApprovalRequest n = AHP__APPR__APPROVAL_REQUEST__INIT;
	n.run_id = in->run_id;
	n.step = in->step;
	n.profile = in->profile;
	n.kind = in->kind;
	n.action = in->action;
	n.arguments_json = in->arguments_json != NULL ? in->arguments_json : (char *)"";
	n.digest = digest;
	n.question = in->question != NULL ? in->question : (char *)"";
	n.created_ms = ahp_now_ms();
	n.expires_ms = n.created_ms + (int64_t)in->expires_s * 1000;
	if (appr_store_insert(self->store, &n) != 0)
		fatalx("cannot record a request of run %s step %u; stopping so that a restart "
		       "answers from what reached the disk",
		       in->run_id, in->step);
	char step[16], id[24];
	snprintf(step, sizeof step, "%u", n.step);
	snprintf(id, sizeof id, "%" PRIu64, n.id);
	ahp_log_kv(AHP_LOG_INFO, n.run_id, step, "request created", "id", id, "profile", n.profile,
	           "kind", n.kind == AHP__APPR__KIND__KIND_QUESTION ? "question" : "approval",
	           "action", n.action, "state", "pending", NULL);
	cr.request = &n;
	s_orch_reply(self, req_p, &r);
}

static void
s_not_found_step(appr_server_t *self, ahp_rpc_req_t **req_p, const char *run, uint32_t step)
{
	char msg[160];
	snprintf(msg, sizeof msg, "no request for step %u of run %s", step, run);
	s_orch_error(self, req_p, AHP__STATUS__ERR_NOT_FOUND, msg);
}

static int
s_step_ok(appr_server_t *self, ahp_rpc_req_t **req_p, const char *run, uint32_t step)
{
	if (!appr_run_id_ok(run) || step < 1) {
		s_orch_error(self, req_p, AHP__STATUS__ERR_BAD_REQUEST,
		             "run_id must match [A-Za-z0-9-]{1,64} and step be >= 1");
		return 0;
	}
	return 1;
}

static void
s_handle_get_cancel(appr_server_t *self, ahp_rpc_req_t **req_p, const char *run, uint32_t step,
                    int cancel)
{
	if (!s_step_ok(self, req_p, run, step))
		return;
	Ahp__Appr__ApprovalRequest *a = NULL;
	int found = appr_store_find(self->store, run, step, &a);
	if (found < 0) {
		s_orch_error(self, req_p, AHP__STATUS__ERR_UNAVAILABLE,
		             "the store cannot be read; try again");
		return;
	}
	if (found == 0) {
		s_not_found_step(self, req_p, run, step);
		return;
	}
	if (cancel && a->state == AHP__APPR__STATE__STATE_PENDING)
		s_decide(self, a, AHP__APPR__STATE__STATE_CANCELLED, "orchestrator", -1,
		         "the run was cancelled");
	s_orch_request(self, req_p, a);
	s_free_req(&a);
}

/* Answers a watch from the store: decisions after `after`. With hold_if_empty and none,
 * returns 0 without answering; 1 when answered. */
static int
s_watch_answer(appr_server_t *self, ahp_rpc_req_t **req_p, uint64_t after, uint32_t limit,
               int hold_if_empty)
{
	Ahp__Appr__ApprovalRequest **v = NULL;
	size_t n = 0;
	int more = 0;
	if (appr_store_decided_after(self->store, after, limit, &v, &n, &more) != 0) {
		s_orch_error(self, req_p, AHP__STATUS__ERR_UNAVAILABLE,
		             "the store cannot be read; try again");
		return 1;
	}
	if (n == 0 && hold_if_empty) {
		free(v);
		return 0;
	}
	Ahp__Appr__WatchReply w = AHP__APPR__WATCH_REPLY__INIT;
	w.n_decided = n;
	w.decided = v;
	w.last_seq = n > 0 ? v[n - 1]->decision->seq : after;
	w.more = more;
	w.log_id = (char *)appr_store_log_id(self->store);
	Ahp__Appr__OrchReply r = AHP__APPR__ORCH_REPLY__INIT;
	r.body_case = AHP__APPR__ORCH_REPLY__BODY_WATCH;
	r.watch = &w;
	s_orch_reply(self, req_p, &r);
	appr_requests_free(v, n);
	return 1;
}

static void
s_held_remove_head(appr_server_t *self)
{
	held_t *h = self->held;
	self->held = h->next;
	if (self->held == NULL)
		self->held_tail = &self->held;
	self->n_held--;
	free(h);
}

static void
s_handle_watch(appr_server_t *self, ahp_rpc_req_t **req_p, const Ahp__Appr__WatchRequest *in)
{
	if (in->limit > APPR_LIST_MAX || in->wait_ms > APPR_WATCH_WAIT_MAX_MS) {
		s_orch_error(self, req_p, AHP__STATUS__ERR_BAD_REQUEST,
		             "watch: limit must be 0..1000 and wait_ms 0..60000");
		return;
	}
	uint32_t limit = in->limit ? in->limit : 100;
	uint64_t after = in->after_seq;
	/* Another log (a new database): its seqs start again, so does the cursor. */
	if (in->log_id != NULL && in->log_id[0] != '\0' &&
	    strcmp(in->log_id, appr_store_log_id(self->store)) != 0)
		after = 0;
	/* A cursor past this log's end (a database restored from an older copy keeps its
	 * log_id, and its next seqs are ones the caller believes it has seen) starts again too:
	 * otherwise the decisions up to the old cursor would never reach the caller. */
	if (after > appr_store_last_seq(self->store))
		after = 0;
	if (s_watch_answer(self, req_p, after, limit, in->wait_ms > 0))
		return;
	if (self->n_held >= APPR_WATCH_HELD_MAX) {
		/* Over the ceiling: the oldest is answered (empty) and calls again. */
		held_t *h = self->held;
		s_watch_answer(self, &h->req, h->after, h->limit, 0);
		s_held_remove_head(self);
	}
	held_t *h = calloc(1, sizeof *h);
	if (h == NULL) {
		s_orch_error(self, req_p, AHP__STATUS__ERR_INTERNAL, "out of memory");
		return;
	}
	h->req = *req_p;
	*req_p = NULL;
	h->after = after;
	h->limit = limit;
	h->deadline = ahp_mono_ms() + in->wait_ms;
	*self->held_tail = h;
	self->held_tail = &h->next;
	self->n_held++;
}

/* Unknown oneof members arrive as unknown fields; an absent body as nothing at all. */
static int
s_unknown_body(const ProtobufCMessage *m)
{
	return m->n_unknown_fields > 0;
}

static void
s_handle_orch(appr_server_t *self, ahp_rpc_req_t **req_p)
{
	ahp_rpc_req_t *req = *req_p;
	Ahp__Appr__OrchRequest *in =
	    ahp__appr__orch_request__unpack(NULL, req->body_len, req->body);
	if (in == NULL) {
		s_orch_error(self, req_p, AHP__STATUS__ERR_BAD_REQUEST,
		             "the request is not an ahp.appr.OrchRequest");
		return;
	}
	switch (in->body_case) {
	case AHP__APPR__ORCH_REQUEST__BODY_CREATE:
		s_handle_create(self, req_p, in->create);
		break;
	case AHP__APPR__ORCH_REQUEST__BODY_CANCEL:
		s_handle_get_cancel(self, req_p, in->cancel->run_id, in->cancel->step, 1);
		break;
	case AHP__APPR__ORCH_REQUEST__BODY_GET:
		s_handle_get_cancel(self, req_p, in->get->run_id, in->get->step, 0);
		break;
	case AHP__APPR__ORCH_REQUEST__BODY_WATCH:
		s_handle_watch(self, req_p, in->watch);
		break;
	default:
		if (s_unknown_body(&in->base))
			s_orch_error(self, req_p, AHP__STATUS__ERR_UNKNOWN_METHOD,
			             "this approvald does not know that request");
		else
			s_orch_error(self, req_p, AHP__STATUS__ERR_BAD_REQUEST,
			             "the request has no body");
		break;
	}
	ahp__appr__orch_request__free_unpacked(in, NULL);
}

/* --- the humans' requests --- */

static void
s_handle_list(appr_server_t *self, ahp_rpc_req_t **req_p, const Ahp__Appr__ListRequest *in)
{
	const char *run = in->run_id != NULL ? in->run_id : "";
	if (run[0] != '\0' && !appr_run_id_ok(run)) {
		s_human_error(self, req_p, AHP__STATUS__ERR_BAD_REQUEST,
		              "run_id must match [A-Za-z0-9-]{1,64}");
		return;
	}
	uint32_t limit = in->limit == 0              ? 100
	                 : in->limit > APPR_LIST_MAX ? APPR_LIST_MAX
	                                             : in->limit;
	Ahp__Appr__ApprovalRequest **v = NULL;
	size_t n = 0;
	if (appr_store_list(self->store, in->all, run, limit, &v, &n) != 0) {
		s_human_error(self, req_p, AHP__STATUS__ERR_UNAVAILABLE,
		              "the store cannot be read; try again");
		return;
	}
	Ahp__Appr__ListReply lr = AHP__APPR__LIST_REPLY__INIT;
	lr.n_requests = n;
	lr.requests = v;
	Ahp__Appr__HumanReply r = AHP__APPR__HUMAN_REPLY__INIT;
	r.body_case = AHP__APPR__HUMAN_REPLY__BODY_LIST;
	r.list = &lr;
	s_human_reply(self, req_p, &r);
	appr_requests_free(v, n);
}

static void
s_human_request(appr_server_t *self, ahp_rpc_req_t **req_p, Ahp__Appr__ApprovalRequest *a)
{
	Ahp__Appr__HumanReply r = AHP__APPR__HUMAN_REPLY__INIT;
	r.body_case = AHP__APPR__HUMAN_REPLY__BODY_REQUEST;
	r.request = a;
	s_human_reply(self, req_p, &r);
}

/* Looks up request id for a human: 1 with *a, or 0 after answering the error. */
static int
s_human_get(appr_server_t *self, ahp_rpc_req_t **req_p, uint64_t id, Ahp__Appr__ApprovalRequest **a)
{
	int found = appr_store_get(self->store, id, a);
	if (found < 0) {
		s_human_error(self, req_p, AHP__STATUS__ERR_UNAVAILABLE,
		              "the store cannot be read; try again");
		return 0;
	}
	if (found == 0) {
		char msg[64];
		snprintf(msg, sizeof msg, "no request #%" PRIu64, id);
		s_human_error(self, req_p, AHP__STATUS__ERR_NOT_FOUND, msg);
		return 0;
	}
	return 1;
}

static void
s_handle_decide(appr_server_t *self, ahp_rpc_req_t **req_p, const Ahp__Appr__DecideRequest *in)
{
	ahp_rpc_req_t *req = *req_p;
	char msg[600], who[64], at[40];
	const char *comment = in->comment != NULL ? in->comment : "";
	size_t clen = strlen(comment);
	if (clen > APPR_TEXT_MAX || !ahp_utf8_valid(comment, clen, 0)) {
		snprintf(msg, sizeof msg, "the comment must be at most %d bytes of UTF-8",
		         APPR_TEXT_MAX);
		s_human_error(self, req_p, AHP__STATUS__ERR_BAD_REQUEST, msg);
		return;
	}
	Ahp__Appr__ApprovalRequest *a = NULL;
	if (!s_human_get(self, req_p, in->id, &a))
		return;
	appr_user_name(req->peer_uid, who, sizeof who);
	const appr_rule_t *rule = appr_approvers_find(&self->approvers, a->profile);
	const ahp_rpc_allow_t *allow = rule != NULL ? &rule->allow : &self->decide;
	if (req->peer_uid == (uint32_t)-1 || !appr_allow_has(allow, req->peer_uid, req->peer_gid)) {
		if (rule != NULL)
			snprintf(msg, sizeof msg, "%s may not decide for profile %s", who,
			         a->profile);
		else
			snprintf(msg, sizeof msg,
			         "%s may not decide (not in decide_users or decide_groups)", who);
		char id[24];
		snprintf(id, sizeof id, "%" PRIu64, a->id);
		ahp_log_kv(AHP_LOG_WARN, a->run_id, NULL, "decision refused", "id", id, "by", who,
		           "why", "not permitted", NULL);
		s_human_error(self, req_p, AHP__STATUS__ERR_PERMISSION, msg);
		s_free_req(&a);
		return;
	}
	if (a->state != AHP__APPR__STATE__STATE_PENDING) {
		if (a->decision != NULL)
			snprintf(msg, sizeof msg, "#%" PRIu64 " was already %s by %s at %s", a->id,
			         appr_state_str(a->state), a->decision->by,
			         appr_fmt_time(a->decision->at_ms, at, sizeof at));
		else
			snprintf(msg, sizeof msg, "#%" PRIu64 " is already %s", a->id,
			         appr_state_str(a->state));
		s_human_error(self, req_p, AHP__STATUS__ERR_INVALID_STATE, msg);
		s_free_req(&a);
		return;
	}
	if (ahp_now_ms() >= a->expires_ms) {
		/* The timer has not run yet: expiry decides first, as it would have. */
		s_expire(self, a);
		snprintf(msg, sizeof msg, "#%" PRIu64 " expired at %s (rejected by expiry)", a->id,
		         appr_fmt_time(a->expires_ms, at, sizeof at));
		s_human_error(self, req_p, AHP__STATUS__ERR_INVALID_STATE, msg);
		s_free_req(&a);
		return;
	}
	int question = a->kind == AHP__APPR__KIND__KIND_QUESTION;
	const char *bad = NULL;
	if (question && in->state != AHP__APPR__STATE__STATE_ANSWERED)
		bad = "is a question: answer it (approvald answer ID TEXT)";
	else if (!question && in->state != AHP__APPR__STATE__STATE_APPROVED &&
	         in->state != AHP__APPR__STATE__STATE_REJECTED)
		bad = "is an approval: approve or reject it";
	else if (question && ahp_text_blank(comment))
		bad = "needs a non-empty answer";
	if (bad != NULL) {
		snprintf(msg, sizeof msg, "#%" PRIu64 " %s", a->id, bad);
		s_human_error(self, req_p, AHP__STATUS__ERR_BAD_REQUEST, msg);
		s_free_req(&a);
		return;
	}
	s_decide(self, a, in->state, who, (int64_t)req->peer_uid, comment);
	s_human_request(self, req_p, a);
	s_free_req(&a);
}

static void
s_handle_human(appr_server_t *self, ahp_rpc_req_t **req_p)
{
	ahp_rpc_req_t *req = *req_p;
	Ahp__Appr__HumanRequest *in =
	    ahp__appr__human_request__unpack(NULL, req->body_len, req->body);
	if (in == NULL) {
		s_human_error(self, req_p, AHP__STATUS__ERR_BAD_REQUEST,
		              "the request is not an ahp.appr.HumanRequest");
		return;
	}
	Ahp__Appr__ApprovalRequest *a = NULL;
	switch (in->body_case) {
	case AHP__APPR__HUMAN_REQUEST__BODY_LIST:
		s_handle_list(self, req_p, in->list);
		break;
	case AHP__APPR__HUMAN_REQUEST__BODY_SHOW:
		if (s_human_get(self, req_p, in->show->id, &a))
			s_human_request(self, req_p, a);
		s_free_req(&a);
		break;
	case AHP__APPR__HUMAN_REQUEST__BODY_DECIDE:
		s_handle_decide(self, req_p, in->decide);
		break;
	default:
		if (s_unknown_body(&in->base))
			s_human_error(self, req_p, AHP__STATUS__ERR_UNKNOWN_METHOD,
			              "this approvald does not know that request");
		else
			s_human_error(self, req_p, AHP__STATUS__ERR_BAD_REQUEST,
			              "the request has no body");
		break;
	}
	ahp__appr__human_request__free_unpacked(in, NULL);
}

/* --- the loop --- */

/* Commits the turn's writes, then sends the replies and answers the held watches that have
 * news or whose time is up. */
static void
s_end_turn(appr_server_t *self)
{
	if (appr_store_commit(self->store) != 0)
		fatalx("store commit failed; stopping so that a restart answers from what reached "
		       "the disk");
	int64_t now = ahp_mono_ms();
	int news = self->decided;
	self->decided = 0;
	for (held_t **hp = &self->held; *hp != NULL;) {
		held_t *h = *hp;
		int done = 0;
		if (news)
			done = s_watch_answer(self, &h->req, h->after, h->limit, 1);
		if (!done && h->deadline <= now)
			done = s_watch_answer(self, &h->req, h->after, h->limit, 0);
		if (!done) {
			hp = &h->next;
			continue;
		}
		*hp = h->next;
		self->n_held--;
		free(h);
	}
	self->held_tail = &self->held;
	while (*self->held_tail != NULL)
		self->held_tail = &(*self->held_tail)->next;
	pending_t *p = self->replies;
	self->replies = NULL;
	self->replies_tail = &self->replies;
	while (p != NULL) {
		pending_t *next = p->next;
		if (ahp_rpc_server_reply(p->srv, &p->req, p->buf, p->len) != 0)
			log_warn("could not send a reply (the caller times out and asks again)");
		ahp_rpc_req_free(&p->req);
		free(p->buf);
		free(p);
		p = next;
	}
}

/* How long the loop may sleep: until the next expiry or held deadline, at most 1 s. */
static long
s_timeout(appr_server_t *self)
{
	long t = POLL_MAX_MS;
	int64_t exp = 0;
	if (appr_store_next_expiry(self->store, &exp) == 1) {
		int64_t d = exp - ahp_now_ms();
		if (d < t)
			t = d > 0 ? (long)d : 0;
	}
	int64_t now = ahp_mono_ms();
	for (held_t *h = self->held; h != NULL; h = h->next) {
		int64_t d = h->deadline - now;
		if (d < t)
			t = d > 0 ? (long)d : 0;
	}
	return t;
}

static void
s_drain(appr_server_t *self, ahp_rpc_server_t *srv,
        void (*handle)(appr_server_t *, ahp_rpc_req_t **))
{
	for (int i = 0; i < RECV_BATCH; i++) {
		ahp_rpc_req_t *req = NULL;
		if (ahp_rpc_server_recv(srv, &req) <= 0)
			break;
		handle(self, &req);
		ahp_rpc_req_free(&req);
	}
}

void
appr_server_run(appr_server_t *self, int sigfd, int (*on_signal)(void *arg, int signo), void *arg)
{
	while (!self->stop) {
		/* zmq_poll on the sockets themselves (not their edge-triggered ZMQ_FD):
		 * a message left after a batch still wakes it. */
		zmq_pollitem_t items[3] = {
		    {ahp_rpc_server_socket(self->orch), 0, ZMQ_POLLIN, 0},
		    {ahp_rpc_server_socket(self->human), 0, ZMQ_POLLIN, 0},
		    {NULL, sigfd, ZMQ_POLLIN, 0},
		};
		if (zmq_poll(items, 3, s_timeout(self)) < 0 && zmq_errno() != EINTR)
			log_warn("zmq_poll: %s", zmq_strerror(zmq_errno()));
		struct signalfd_siginfo si;
		while (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si)
			if (on_signal(arg, (int)si.ssi_signo) != 0)
				self->stop = 1;
		if (self->stop)
			break;
		s_expire_due(self);
		s_drain(self, self->orch, s_handle_orch);
		s_drain(self, self->human, s_handle_human);
		s_end_turn(self);
	}
	/* Replies already decided still go out; held watches are dropped (their callers
	 * ask again with the same cursor). */
	s_end_turn(self);
}

appr_server_t *
appr_server_new(const appr_server_conf_t *conf, char *err, size_t errlen)
{
	appr_server_t *self = calloc(1, sizeof *self);
	if (self == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	self->held_tail = &self->held;
	self->replies_tail = &self->replies;
	self->zctx = zmq_ctx_new();
	if (self->zctx == NULL) {
		snprintf(err, errlen, "zmq_ctx_new: %s", zmq_strerror(errno));
		appr_server_destroy(&self);
		return NULL;
	}
	/* the allow-lists at bind: peers they do not name are closed at accept */
	self->orch = ahp_rpc_server_new(self->zctx, conf->endpoint, ORCH_MAX_MSG, conf->orch_allow);
	if (self->orch == NULL) {
		snprintf(err, errlen, "cannot serve on %s (see above)", conf->endpoint);
		appr_server_destroy(&self);
		return NULL;
	}
	self->human =
	    ahp_rpc_server_new(self->zctx, conf->human_endpoint, HUMAN_MAX_MSG, conf->human_allow);
	if (self->human == NULL) {
		snprintf(err, errlen, "cannot serve on %s (see above)", conf->human_endpoint);
		appr_server_destroy(&self);
		return NULL;
	}
	return self;
}

int
appr_server_open_store(appr_server_t *self, const char *db_path, char *err, size_t errlen)
{
	self->store = appr_store_open(db_path, err, errlen);
	return self->store != NULL ? 0 : -1;
}

void
appr_server_set_deciders(appr_server_t *self, const ahp_rpc_allow_t *decide,
                         appr_approvers_t *approvers)
{
	self->decide = *decide;
	appr_approvers_free(&self->approvers);
	self->approvers = *approvers;
	approvers->rules = NULL;
	approvers->n = 0;
}

int
appr_server_set_allow(appr_server_t *self, const ahp_rpc_allow_t *orch,
                      const ahp_rpc_allow_t *human)
{
	if (ahp_rpc_server_allow(self->orch, orch) != 0 ||
	    ahp_rpc_server_allow(self->human, human) != 0)
		return -1;
	return 0;
}

void
appr_server_destroy(appr_server_t **self_p)
{
	appr_server_t *self = *self_p;
	if (self == NULL)
		return;
	while (self->held != NULL) {
		ahp_rpc_req_free(&self->held->req);
		s_held_remove_head(self);
	}
	while (self->replies != NULL) {
		pending_t *p = self->replies;
		self->replies = p->next;
		ahp_rpc_req_free(&p->req);
		free(p->buf);
		free(p);
	}
	int zero = 0;
	if (self->orch != NULL)
		zmq_setsockopt(ahp_rpc_server_socket(self->orch), ZMQ_LINGER, &zero, sizeof zero);
	if (self->human != NULL)
		zmq_setsockopt(ahp_rpc_server_socket(self->human), ZMQ_LINGER, &zero, sizeof zero);
	ahp_rpc_server_destroy(&self->orch);
	ahp_rpc_server_destroy(&self->human);
	if (self->zctx != NULL)
		zmq_ctx_term(self->zctx);
	appr_store_close(&self->store);
	appr_approvers_free(&self->approvers);
	free(self);
	*self_p = NULL;
}
