/* orchestrator: waiting for humans — the approvald client (an ahp_client), the gate of a call an
 * `approvals:` rule matches, the ask_human question, and the shared Watch that brings decisions.
 *
 * A gated step's intent is journaled first (run.c); then, after the turn's commit, a Create
 * (idempotent on run and step) goes to approvald. Once approvald has it, the run is
 * waiting_approval and holds nothing but its place in the run list: no sandbox process (its
 * sandbox is destroyed, the workspace kept), no timer, no request of its own. One Watch long
 * poll, always outstanding while approvald is reachable, brings every decision; its cursor is
 * journaled. A decision is applied in one loop turn, so in one journal transaction: checked
 * against exactly this run, step and argument digest, recorded (table approvals), and the call
 * started (approved) or completed with the rejection; the start's request leaves after the
 * commit. After a restart a pending gated step asks approvald again with the same Create, whose
 * reply carries any decision made meanwhile. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/digest.h"
#include "ahp/log.h"
#include "ahp/util.h"

#include "approvald.pb-c.h"
#include "orch.h"

#define APPR_CALL_TIMEOUT_MS 10000 /* one Create */
#define APPR_WATCH_WAIT_MS 25000   /* how long approvald holds a Watch */
#define APPR_WATCH_TIMEOUT_MS 35000
#define APPR_RETRY_MS 250          /* approvald unreachable: ask again after this */
#define APPR_LABEL_VALUE_MAX 40    /* bytes of one string value shown in the timeline */
#define APPR_LABEL_MAX 200         /* bytes of the call shown in the timeline */
#define APPR_QUESTION_SHOW_MAX 200 /* bytes of a question shown in the timeline */
#define APPR_ASK_EXPIRES_S 86400   /* ask_human's questions wait a day */

enum owner_kind { OWNER_GATE = 1, OWNER_WATCH };
enum gate_st { G_DUE, G_INFLIGHT, G_BACKOFF, G_WAITING, G_QUEUED };

/* Creates in flight at once. After a restart every waiting run asks again; sent all at
 * once, 10,000 replies overflowed approvald's send queue (ZeroMQ's high-water mark, 1000)
 * and the dropped ones failed their runs. The rest wait in a FIFO (no timer each). */
#define APPR_CREATES_MAX 256

/* The step in progress of a run that waits on a human. */
struct orch_gate {
	int owner; /* first: OWNER_GATE, the owner of its Create */
	orch_run_t *run;
	int kind; /* AHP__APPR__KIND__KIND_APPROVAL / _QUESTION */
	int mode; /* how the tool starts once approved (enum orch_tool_mode) */
	int st;   /* enum gate_st */
	uint32_t step;
	uint32_t expires_s;
	uint64_t req;         /* Create in flight, 0 = none */
	uint64_t id;          /* approvald's request number, 0 until a Create is answered */
	int64_t unsent_since; /* first failed Create of this step (monotonic ms) */
	char digest[AHP_CALL_DIGEST_LEN + 1];
	char *action;
	char *args_json;
	char *question;      /* the rule that gated it, or the question */
	json_t *args;        /* the call's arguments as approvald gets them */
	orch_gate_t *q_next; /* orch_appr_t queue while G_QUEUED */
};

struct orch_appr {
	int owner; /* first: OWNER_WATCH, the owner of the Watch */
	ahp_client_t *cl;
	uint64_t watch_req;
	int64_t watch_at; /* monotonic ms: when the next Watch may go */
	uint64_t cursor;
	char log_id[64];
	unsigned creates;              /* Creates in flight */
	orch_gate_t *q_head, **q_tail; /* gates waiting for a Create slot, oldest first */
	int64_t heard_ms;              /* monotonic ms of approvald's last answer (0 = none yet) */
};

/* --- the client --- */

static void s_create_done(orch_gate_t *g, int status, const char *message,
                          const Ahp__Appr__OrchReply *reply);
static void s_watch_done(orch_t *o, int status, const char *message,
                         const Ahp__Appr__OrchReply *reply);

static void s_dequeue(orch_appr_t *a);

static orch_t *s_o; /* the one orchestrator (the client's callback has no context) */

static void
s_done(void *owner, uint64_t id, int status, const char *message, const uint8_t *body, size_t len)
{
	(void)id;
	Ahp__Appr__OrchReply *reply = NULL;
	if (status == 0) {
		reply = ahp__appr__orch_reply__unpack(NULL, len, body);
		if (reply == NULL) {
			status = AHP__STATUS__ERR_INTERNAL;
			message = "undecodable reply from approvald";
		}
	}
	if (reply != NULL && s_o != NULL && s_o->appr != NULL)
		s_o->appr->heard_ms = ahp_mono_ms();
	if (reply != NULL && reply->error != NULL && reply->error->status != 0) {
		status = reply->error->status;
		message = reply->error->message;
	}
	if (*(int *)owner == OWNER_WATCH)
		s_watch_done(s_o, status, message, status == 0 ? reply : NULL);
	else
		s_create_done(owner, status, message, status == 0 ? reply : NULL);
	if (reply != NULL)
		ahp__appr__orch_reply__free_unpacked(reply, NULL);
}

int
orch_appr_setup(orch_t *o)
{
	orch_appr_t *a = calloc(1, sizeof *a);
	if (a == NULL)
		return -1;
	a->owner = OWNER_WATCH;
	a->q_tail = &a->q_head;
	a->cl = ahp_client_new(o->zctx, "approvald", o->appr_endpoint, s_done);
	if (a->cl == NULL) {
		free(a);
		return -1;
	}
	if (orch_journal_approval_cursor_get(o->journal, a->log_id, sizeof a->log_id, &a->cursor) !=
	    0)
		orch_journal_failed(o, "reading the approval cursor");
	s_o = o;
	o->appr = a;
	return 0;
}

void
orch_appr_teardown(orch_t *o)
{
	if (o->appr == NULL)
		return;
	ahp_client_destroy(&o->appr->cl);
	free(o->appr);
	o->appr = NULL;
}

void *
orch_appr_socket(orch_t *o)
{
	return o->appr != NULL ? ahp_client_socket(o->appr->cl) : NULL;
}

void *
orch_appr_monitor_socket(orch_t *o)
{
	return o->appr != NULL ? ahp_client_monitor_socket(o->appr->cl) : NULL;
}

void
orch_appr_recv(orch_t *o)
{
	if (o->appr != NULL) {
		ahp_client_recv(o->appr->cl);
		ahp_client_monitor_recv(o->appr->cl);
	}
}

static uint64_t
s_send(orch_t *o, void *owner, const Ahp__Appr__OrchRequest *req, long timeout_ms)
{
	if (o->appr == NULL)
		return 0;
	size_t len = ahp__appr__orch_request__get_packed_size(req);
	uint8_t *buf = malloc(len ? len : 1);
	if (buf == NULL)
		return 0;
	ahp__appr__orch_request__pack(req, buf);
	uint64_t id = owner != NULL ? ahp_client_send(o->appr->cl, owner, buf, len, timeout_ms)
	                            : (uint64_t)(ahp_client_post(o->appr->cl, buf, len) == 0);
	free(buf);
	return id;
}

static const char *
s_unreachable(orch_t *o)
{
	return o->appr != NULL && ahp_client_present(o->appr->cl)
	           ? "approvald is not reachable"
	           : "approvald is not running (no socket at its endpoint)";
}

/* --- the timeline --- */

/* Appends s (len bytes) quoted or not, '"' and '\' escaped and control bytes
 * as \xHH, to buf; *n counts what was written (never past cap - 1). */
static void
s_put(char *buf, size_t cap, size_t *n, const char *s, size_t len, int quote)
{
	char tmp[8];
	for (size_t i = 0; i < len + 2 * (quote != 0); i++) {
		const char *piece = tmp;
		if (quote && (i == 0 || i == len + 1)) {
			piece = "\"";
		} else {
			unsigned char c = (unsigned char)s[i - (quote != 0)];
			if (c == '"' || c == '\\')
				snprintf(tmp, sizeof tmp, "\\%c", c);
			else if (c < 0x20 || c == 0x7f)
				snprintf(tmp, sizeof tmp, "\\x%02x", c);
			else
				snprintf(tmp, sizeof tmp, "%c", c);
		}
		size_t pl = strlen(piece);
		if (*n + pl >= cap)
			return;
		memcpy(buf + *n, piece, pl);
		*n += pl;
		buf[*n] = '\0';
	}
}

/* A string value as the timeline shows it: quoted, escaped, cut at
 * APPR_LABEL_VALUE_MAX bytes (on a character boundary) with "…". */
static void
s_put_value(char *buf, size_t cap, size_t *n, const char *s, size_t len)
{
	size_t cut = len > APPR_LABEL_VALUE_MAX ? ahp_utf8_prefix(s, APPR_LABEL_VALUE_MAX) : len;
	char tmp[APPR_LABEL_VALUE_MAX * 4 + 16];
	size_t m = 0;
	tmp[0] = '\0';
	s_put(tmp, sizeof tmp, &m, s, cut, 0);
	if (cut < len && m + 4 < sizeof tmp) {
		memcpy(tmp + m, "…", 3);
		m += 3;
		tmp[m] = '\0';
	}
	/* Quoted as it is: tmp is escaped already (escaping it again doubled every '\'). */
	if (*n + m + 2 >= cap)
		return;
	buf[(*n)++] = '"';
	memcpy(buf + *n, tmp, m);
	*n += m;
	buf[(*n)++] = '"';
	buf[*n] = '\0';
}

const char *
orch_appr_label(const char *name, const json_t *args, char *out, size_t outlen)
{
	char buf[APPR_LABEL_MAX + 1];
	size_t n = 0;
	buf[0] = '\0';
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)args, k, v)
	{
		if (n > 0)
			s_put(buf, sizeof buf, &n, ", ", 2, 0);
		/* A name that is not a plain name ([A-Za-z0-9_]{1,40}) is quoted and cut like
		 * a value: the model chooses it, and `webhook_id="team", content="…")` with
		 * padding would otherwise pass for other arguments and push the real ones out. */
		size_t kl = strlen(k);
		int plain = kl >= 1 && kl <= APPR_LABEL_VALUE_MAX;
		for (size_t i = 0; plain && i < kl; i++)
			plain = (k[i] >= 'a' && k[i] <= 'z') || (k[i] >= 'A' && k[i] <= 'Z') ||
			        (k[i] >= '0' && k[i] <= '9') || k[i] == '_';
		if (plain)
			s_put(buf, sizeof buf, &n, k, kl, 0);
		else
			s_put_value(buf, sizeof buf, &n, k, kl);
		s_put(buf, sizeof buf, &n, "=", 1, 0);
		if (json_is_string(v)) {
			s_put_value(buf, sizeof buf, &n, json_string_value(v),
			            json_string_length(v));
		} else {
			char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
			/* The cut leaves at least 4 bytes of d after it: room for "…" and NUL. */
			if (d != NULL && strlen(d) > APPR_LABEL_VALUE_MAX)
				memcpy(d + ahp_utf8_prefix(d, APPR_LABEL_VALUE_MAX), "…",
				       sizeof "…");
			s_put(buf, sizeof buf, &n, d ? d : "?", d ? strlen(d) : 1, 0);
			free(d);
		}
		if (n + 8 >= sizeof buf) {
			snprintf(buf + n, sizeof buf - n, ", …");
			break;
		}
	}
	snprintf(out, outlen, "%.*s(%s)", AHP_UTF8_CUT(name, 64), buf);
	return out;
}

/* --- gates --- */

/* Drops g's Create in flight (its answer no longer matters) and frees its slot. */
static void
s_forget_create(orch_appr_t *a, orch_gate_t *g)
{
	if (g->req == 0 || a == NULL)
		return;
	ahp_client_forget(a->cl, g->req);
	g->req = 0;
	a->creates--;
	s_dequeue(a);
}

static void
s_gate_free(orch_gate_t **g_p)
{
	orch_gate_t *g = *g_p;
	if (g == NULL)
		return;
	orch_appr_t *a = g->run->o->appr;
	int freed_slot = 0;
	if (g->req != 0 && a != NULL) {
		ahp_client_forget(a->cl, g->req);
		a->creates--;
		freed_slot = 1;
	}
	if (g->st == G_QUEUED && a != NULL) {
		orch_gate_t **pp = &a->q_head;
		while (*pp != NULL && *pp != g)
			pp = &(*pp)->q_next;
		if (*pp == g) {
			*pp = g->q_next;
			if (a->q_tail == &g->q_next)
				a->q_tail = pp;
		}
	}
	free(g->action);
	free(g->args_json);
	free(g->question);
	json_decref(g->args);
	free(g);
	*g_p = NULL;
	if (freed_slot)
		s_dequeue(a);
}

void
orch_gate_free(orch_run_t *run)
{
	s_gate_free(&run->gate);
}

/* The journaled decision of (run, step), copied out. */
typedef struct {
	int found;
	uint64_t id;
	char state[16];
	char by[128];
	char digest[AHP_CALL_DIGEST_LEN + 1];
	char *comment;
} s_row_t;

static void
s_row_cb(void *arg, const orch_approval_row_t *row)
{
	s_row_t *r = arg;
	r->found = 1;
	r->id = row->id;
	snprintf(r->state, sizeof r->state, "%s", row->state ? row->state : "");
	snprintf(r->by, sizeof r->by, "%s", row->by ? row->by : "");
	snprintf(r->digest, sizeof r->digest, "%s", row->digest ? row->digest : "");
	r->comment = strdup(row->comment ? row->comment : "");
}

/* "rejected by bob: wrong channel" / "rejected by bob". */
static void
s_decided_text(char *out, size_t len, const char *verb, const char *by, const char *comment)
{
	if (comment != NULL && *comment)
		snprintf(out, len, "%s by %s: %s", verb, by, comment);
	else
		snprintf(out, len, "%s by %s", verb, by);
}

/* Completes the step with what the decision means for the model (not for an
 * approval, which starts the call). */
static void
s_complete(orch_run_t *run, int kind, const char *state, const char *by, const char *comment)
{
	char msg[4400];
	if (strcmp(state, "answered") == 0) {
		orch_tool_done(run,
		               json_pack("{s:o, s:o}", "answer",
		                         orch_json_text(comment ? comment : ""), "by",
		                         orch_json_text(by)),
		               0);
		return;
	}
	s_decided_text(msg, sizeof msg, "rejected", by, comment);
	int expired = kind == AHP__APPR__KIND__KIND_QUESTION || strcmp(by, "expiry") == 0;
	const char *code = kind == AHP__APPR__KIND__KIND_QUESTION ? "expired" : "rejected";
	orch_tool_done(run,
	               json_pack("{s:{s:s, s:o, s:o, s:b}}", "error", "code", code, "message",
	                         orch_json_text(msg), "by", orch_json_text(by), "retryable", 0),
	               expired && kind == AHP__APPR__KIND__KIND_QUESTION
	                   ? AHP__STATUS__ERR_TIMEOUT
	                   : AHP__STATUS__ERR_PERMISSION);
}

static void
s_mismatch(orch_run_t *run, const char *what)
{
	log_error("run %s step %u: approval mismatch: %s; the call was refused", run->id,
	          run->cur_seq, what);
	orch_run_event(run, "approval",
	               json_pack("{s:s, s:o}", "state", "mismatch", "error", orch_json_text(what)),
	               "[approval] decision refused: %s; the call was not run", what);
	orch_tool_done(run,
	               json_pack("{s:{s:s, s:o, s:b}}", "error", "code", "approval_mismatch",
	                         "message", orch_json_text(what), "retryable", 0),
	               AHP__STATUS__ERR_PERMISSION);
}

static const char *
s_state_word(int state)
{
	switch (state) {
	case AHP__APPR__STATE__STATE_APPROVED:
		return "approved";
	case AHP__APPR__STATE__STATE_REJECTED:
		return "rejected";
	case AHP__APPR__STATE__STATE_ANSWERED:
		return "answered";
	case AHP__APPR__STATE__STATE_CANCELLED:
		return "cancelled";
	default:
		return "pending";
	}
}

/* Applies approvald's decision on r to run's gated step, in this loop turn:
 * checked against exactly this run, step, kind and digest; recorded; then
 * the call starts (approved) or the step completes. */
static void
s_apply(orch_run_t *run, const Ahp__Appr__ApprovalRequest *r)
{
	orch_gate_t *g = run->gate;
	const Ahp__Appr__Decision *d = r->decision;
	int state = r->state;
	if (state == AHP__APPR__STATE__STATE_PENDING)
		return;
	if (state == AHP__APPR__STATE__STATE_CANCELLED) {
		/* The run is being cancelled (the Cancel follows its committed
		 * end). Should a live run meet one anyway, it never runs the
		 * call: it stays waiting, where orchctl cancel ends it. */
		if (g->st != G_WAITING) {
			log_warn(
			    "run %s step %u: approvald request #%llu is cancelled; the run waits "
			    "until it is cancelled too",
			    run->id, run->cur_seq, (unsigned long long)r->id);
			s_forget_create(run->o->appr, g);
			g->st = G_WAITING;
			run->due_ms = 0;
			orch_run_wait(run);
		}
		return;
	}
	s_forget_create(run->o->appr, g);
	orch_run_unwait(run);
	char what[300];
	if (r->run_id == NULL || strcmp(r->run_id, run->id) != 0 || r->step != run->cur_seq ||
	    (int)r->kind != g->kind || r->digest == NULL || strcmp(r->digest, g->digest) != 0) {
		snprintf(what, sizeof what,
		         "request #%llu is for run %.64s step %u kind %d digest %.64s, not run %s "
		         "step %u kind %d digest %s",
		         (unsigned long long)r->id, r->run_id ? r->run_id : "", r->step,
		         (int)r->kind, r->digest ? r->digest : "", run->id, run->cur_seq, g->kind,
		         g->digest);
		s_gate_free(&run->gate);
		s_mismatch(run, what);
		return;
	}
	const char *word = s_state_word(state);
	const char *by = d != NULL && d->by != NULL && *d->by ? d->by : "unknown";
	const char *comment = d != NULL && d->comment != NULL ? d->comment : "";
	int64_t at = d != NULL ? d->at_ms : ahp_now_ms();
	orch_approval_row_t row = {.step = run->cur_seq,
	                           .id = r->id,
	                           .state = word,
	                           .by = by,
	                           .at_ms = at,
	                           .comment = comment,
	                           .digest = g->digest};
	if (orch_journal_approval_put(run->o->journal, run->id, &row) != 0)
		orch_journal_failed(run->o, "approval");
	int q = g->kind == AHP__APPR__KIND__KIND_QUESTION;
	char text[4400];
	s_decided_text(text, sizeof text, word, by, comment);
	orch_run_event(run, q ? "question" : "approval",
	               json_pack("{s:I, s:s, s:o, s:I, s:o, s:s, s:o}", "id", (json_int_t)r->id,
	                         "state", word, "by", orch_json_text(by), "at_ms", (json_int_t)at,
	                         "comment", orch_json_text(comment), "digest", g->digest, "action",
	                         orch_json_text(g->action)),
	               "[%s] #%llu %s", q ? "question" : "approval", (unsigned long long)r->id,
	               text);
	int kind = g->kind, mode = g->mode == ORCH_TOOL_RETRY ? ORCH_TOOL_RETRY : ORCH_TOOL_NEW;
	s_gate_free(&run->gate);
	if (state == AHP__APPR__STATE__STATE_APPROVED && kind == AHP__APPR__KIND__KIND_APPROVAL)
		orch_tool_start_gated(run, mode);
	else
		s_complete(run, kind, word, by, comment);
}

/* Sets the gate going: Create after this turn's commit. */
static void
s_gate_due(orch_run_t *run)
{
	run->gate->st = G_DUE;
	run->due_ms = 0;
	run->phase = PH_GATE;
	orch_post(run->o, run);
}

/* A step gated or asked before a restart: what the journal says was decided
 * is applied again (1), or there is nothing (0). */
static int
s_journaled(orch_run_t *run, orch_gate_t *g)
{
	s_row_t r = {0};
	if (orch_journal_approval_get(run->o->journal, run->id, run->cur_seq, s_row_cb, &r) < 0)
		orch_journal_failed(run->o, "reading an approval");
	if (!r.found || strcmp(r.state, "pending") == 0) {
		free(r.comment);
		return 0;
	}
	int kind = g->kind, mode = g->mode;
	if (strcmp(r.digest, g->digest) != 0) {
		char what[300];
		snprintf(what, sizeof what,
		         "the recorded decision #%llu is for digest %s, not this call's %s",
		         (unsigned long long)r.id, r.digest, g->digest);
		s_gate_free(&run->gate);
		s_mismatch(run, what);
	} else if (strcmp(r.state, "approved") == 0 && kind == AHP__APPR__KIND__KIND_APPROVAL) {
		s_gate_free(&run->gate);
		/* Approved and started before the restart: the tool's own
		 * rules for a resumed step (never run twice). */
		orch_tool_start_gated(run, mode);
	} else {
		s_gate_free(&run->gate);
		s_complete(run, kind, r.state, r.by, r.comment);
	}
	free(r.comment);
	return 1;
}

/* Common to a gated call and a question. Takes args (new reference). */
static void
s_begin(orch_run_t *run, int kind, const char *action, json_t *args, const char *question,
        uint32_t expires_s, int mode)
{
	s_gate_free(&run->gate);
	orch_gate_t *g = calloc(1, sizeof *g);
	char *aj = args != NULL ? json_dumps(args, JSON_COMPACT) : NULL;
	if (g == NULL || aj == NULL || (g->action = strdup(action)) == NULL ||
	    (g->question = strdup(question)) == NULL ||
	    ahp_call_digest(action, args, g->digest) != 0) {
		free(aj);
		json_decref(args);
		if (g != NULL) {
			free(g->action);
			free(g->question);
			free(g);
		}
		orch_tool_done(run, orch_tool_error("internal", "out of memory"),
		               AHP__STATUS__ERR_INTERNAL);
		return;
	}
	g->owner = OWNER_GATE;
	g->run = run;
	g->kind = kind;
	g->mode = mode;
	g->step = run->cur_seq;
	g->expires_s = expires_s;
	g->args_json = aj;
	g->args = args;
	run->gate = g;
	if (mode != ORCH_TOOL_NEW && s_journaled(run, g))
		return;
	if (mode == ORCH_TOOL_NEW) {
		/* Journaled with the step's intent, before the Create leaves: a restart then
		 * knows this step was put to a human even if the orchestrator died before
		 * approvald's answer (and the run's waiting_approval) reached the journal. */
		orch_approval_row_t row = {.step = run->cur_seq,
		                           .id = 0,
		                           .state = "pending",
		                           .by = "",
		                           .at_ms = ahp_now_ms(),
		                           .comment = "",
		                           .digest = g->digest};
		if (orch_journal_approval_put(run->o->journal, run->id, &row) != 0)
			orch_journal_failed(run->o, "approval");
	}
	s_gate_due(run);
}

int
orch_gate_asked(orch_run_t *run)
{
	s_row_t r = {0};
	if (orch_journal_approval_get(run->o->journal, run->id, run->cur_seq, s_row_cb, &r) < 0)
		orch_journal_failed(run->o, "reading an approval");
	free(r.comment);
	return r.found;
}

void
orch_gate_begin(orch_run_t *run, const orch_tool_t *t, const json_t *args,
                const ahp_approval_t *rule, int mode)
{
	const ahp_profile_t *p = run->profile;
	const char *service = t->service != NULL ? t->service(args) : NULL;
	const char *action = service != NULL ? service : t->name;
	json_t *a;
	if (service != NULL) {
		const json_t *sa = t->service_args != NULL ? t->service_args(args) : NULL;
		a = sa != NULL ? json_deep_copy(sa) : json_object();
	} else {
		a = json_deep_copy(args);
	}
	char desc[400];
	unsigned idx = rule != NULL ? (unsigned)(rule - p->approvals) : 0;
	long ex = rule != NULL ? rule->expires_s : APPR_ASK_EXPIRES_S;
	if (rule == NULL)
		snprintf(desc, sizeof desc,
		         "approvals: the rule that gated this step is no longer in profile %s; "
		         "the decision is still needed",
		         p->name);
	else if (rule->service != NULL)
		snprintf(desc, sizeof desc, "approvals[%u]: service %s", idx, rule->service);
	else if (rule->match != NULL)
		snprintf(desc, sizeof desc, "approvals[%u]: tool %s matching %s", idx, rule->tool,
		         rule->match);
	else
		snprintf(desc, sizeof desc, "approvals[%u]: tool %s", idx, rule->tool);
	if (ex < 1)
		ex = 1;
	if (ex > 2592000)
		ex = 2592000;
	s_begin(run, AHP__APPR__KIND__KIND_APPROVAL, action, a, desc, (uint32_t)ex, mode);
}

void
orch_gate_question(orch_run_t *run, const char *question, int mode)
{
	s_begin(run, AHP__APPR__KIND__KIND_QUESTION, "ask_human",
	        json_pack("{s:o}", "question", orch_json_text(question)), question,
	        APPR_ASK_EXPIRES_S, mode);
}

/* approvald did not take the Create: try again shortly, for at most
 * ORCH_APPR_GRACE_MS; then the step fails as the platform's (resumable),
 * never running unapproved. */
static void
s_retry(orch_run_t *run, orch_gate_t *g, const char *why)
{
	int64_t now = ahp_mono_ms();
	if (g->unsent_since == 0)
		g->unsent_since = now;
	/* approvald answering others meanwhile is not unreachable: it is busy
	 * (thousands of waiting runs asking again after a restart fill the
	 * socket's queue), and this step keeps its turn. */
	int64_t heard = run->o->appr != NULL ? run->o->appr->heard_ms : 0;
	if (now - g->unsent_since < ORCH_APPR_GRACE_MS ||
	    (heard != 0 && now - heard < ORCH_APPR_GRACE_MS)) {
		g->st = G_BACKOFF;
		run->due_ms = now + APPR_RETRY_MS;
		return;
	}
	char msg[400];
	snprintf(msg, sizeof msg, "approvald: %s for %d s; the call was not run", why,
	         ORCH_APPR_GRACE_MS / 1000);
	int q = g->kind == AHP__APPR__KIND__KIND_QUESTION;
	orch_run_event(
	    run, q ? "question" : "approval",
	    json_pack("{s:s, s:o}", "state", "unreachable", "message", orch_json_text(msg)),
	    "[%s] %s", q ? "question" : "approval", msg);
	s_gate_free(&run->gate);
	orch_run_unwait(run);
	run->phase = PH_IDLE;
	orch_tool_platform_failed(run, AHP__STATUS__ERR_UNAVAILABLE, "%s", msg);
}

void
orch_gate_send(orch_run_t *run)
{
	orch_gate_t *g = run->gate;
	if (g == NULL || run->phase != PH_GATE || (g->st != G_DUE && g->st != G_BACKOFF))
		return;
	orch_appr_t *a = run->o->appr;
	if (a != NULL && a->creates >= APPR_CREATES_MAX) {
		/* Waiting for a slot is not a failure: no grace is counted. */
		g->st = G_QUEUED;
		g->q_next = NULL;
		*a->q_tail = g;
		a->q_tail = &g->q_next;
		run->due_ms = 0;
		return;
	}
	Ahp__Appr__OrchRequest req = AHP__APPR__ORCH_REQUEST__INIT;
	Ahp__Appr__CreateRequest c = AHP__APPR__CREATE_REQUEST__INIT;
	c.run_id = run->id;
	c.step = g->step;
	c.profile = run->profile->name;
	c.kind = g->kind;
	c.action = g->action;
	c.arguments_json = g->args_json;
	c.digest = g->digest;
	c.question = g->question;
	c.expires_s = g->expires_s;
	req.body_case = AHP__APPR__ORCH_REQUEST__BODY_CREATE;
	req.create = &c;
	run->due_ms = 0;
	g->req = s_send(run->o, g, &req, APPR_CALL_TIMEOUT_MS);
	if (g->req == 0) {
		s_retry(run, g, s_unreachable(run->o));
		return;
	}
	g->st = G_INFLIGHT;
	if (a != NULL)
		a->creates++;
}

/* A Create slot is free: send the oldest queued gate's. */
static void
s_dequeue(orch_appr_t *a)
{
	while (a->q_head != NULL && a->creates < APPR_CREATES_MAX) {
		orch_gate_t *g = a->q_head;
		a->q_head = g->q_next;
		if (a->q_head == NULL)
			a->q_tail = &a->q_head;
		g->q_next = NULL;
		g->st = G_DUE;
		orch_gate_send(g->run);
	}
}

static void
s_create_done(orch_gate_t *g, int status, const char *message, const Ahp__Appr__OrchReply *reply)
{
	orch_run_t *run = g->run;
	orch_appr_t *a = run->o->appr;
	g->req = 0;
	if (a != NULL) {
		a->creates--;
		/* Before this reply is handled (it may free g): the next in line goes. */
		s_dequeue(a);
	}
	if (run->phase != PH_GATE || g->st != G_INFLIGHT)
		return;
	if (status == 0 &&
	    (reply == NULL || reply->body_case != AHP__APPR__ORCH_REPLY__BODY_CREATE ||
	     reply->create->request == NULL)) {
		status = AHP__STATUS__ERR_INTERNAL;
		message = "approvald answered a Create with another body";
	}
	if (status == AHP__STATUS__ERR_INTERRUPTED || status == AHP__STATUS__ERR_TIMEOUT ||
	    status == AHP__STATUS__ERR_UNAVAILABLE) {
		char why[300];
		snprintf(why, sizeof why, "%s (%.200s)", ahp_status_str(status),
		         message ? message : "");
		s_retry(run, g, why);
		return;
	}
	int q = g->kind == AHP__APPR__KIND__KIND_QUESTION;
	if (status != 0) {
		/* Refused (a conflict, a field approvald will not take): fail
		 * closed, resumably, saying why. */
		char msg[400];
		snprintf(msg, sizeof msg, "approvald refused the request: %s: %.300s",
		         ahp_status_str(status), message && *message ? message : "no detail");
		orch_run_event(
		    run, q ? "question" : "approval",
		    json_pack("{s:s, s:o}", "state", "refused", "message", orch_json_text(msg)),
		    "[%s] %s", q ? "question" : "approval", msg);
		s_gate_free(&run->gate);
		orch_run_unwait(run);
		run->phase = PH_IDLE;
		orch_tool_platform_failed(run, status, "%s", msg);
		return;
	}
	const Ahp__Appr__ApprovalRequest *r = reply->create->request;
	g->unsent_since = 0;
	g->id = r->id;
	if (r->state != AHP__APPR__STATE__STATE_PENDING) {
		s_apply(run, r);
		return;
	}
	g->st = G_WAITING;
	orch_run_wait(run);
	char label[APPR_LABEL_MAX * 2 + 80];
	unsigned long long id = (unsigned long long)r->id;
	if (q) {
		size_t n = 0;
		char qs[APPR_QUESTION_SHOW_MAX * 4 + 16];
		size_t ql = strlen(g->question);
		size_t cut = ql > APPR_QUESTION_SHOW_MAX
		                 ? ahp_utf8_prefix(g->question, APPR_QUESTION_SHOW_MAX)
		                 : ql;
		qs[0] = '\0';
		s_put(qs, sizeof qs, &n, g->question, cut, 1);
		orch_run_event(run, "question",
		               json_pack("{s:I, s:s, s:o, s:I}", "id", (json_int_t)r->id, "state",
		                         "waiting", "question", orch_json_text(g->question),
		                         "expires_ms", (json_int_t)r->expires_ms),
		               "[question] waiting on #%llu: %s%s — approvald answer %llu \"…\"",
		               id, qs, cut < ql ? "…" : "", id);
		return;
	}
	orch_appr_label(g->action, g->args, label, sizeof label);
	orch_run_event(run, "approval",
	               json_pack("{s:I, s:s, s:s, s:O, s:s, s:I, s:o}", "id", (json_int_t)r->id,
	                         "state", "waiting", "action", g->action, "arguments", g->args,
	                         "digest", g->digest, "expires_ms", (json_int_t)r->expires_ms,
	                         "rule", orch_json_text(g->question)),
	               "[approval] waiting on #%llu: %s — approvald approve %llu | approvald "
	               "reject %llu",
	               id, label, id, id);
}

void
orch_gate_ended(orch_run_t *run)
{
	orch_gate_t *g = run->gate;
	if (g == NULL)
		return;
	/* The run ended while it waited (cancelled): its request is cancelled
	 * too; should approvald not be reachable, its expiry rejects it. */
	if (g->st == G_WAITING || g->st == G_INFLIGHT || g->id != 0 || g->mode != ORCH_TOOL_NEW) {
		Ahp__Appr__OrchRequest req = AHP__APPR__ORCH_REQUEST__INIT;
		Ahp__Appr__CancelRequest c = AHP__APPR__CANCEL_REQUEST__INIT;
		c.run_id = run->id;
		c.step = g->step;
		req.body_case = AHP__APPR__ORCH_REQUEST__BODY_CANCEL;
		req.cancel = &c;
		if (s_send(run->o, NULL, &req, 0) == 0)
			log_warn("run %s step %u: cannot cancel approvald request #%llu: %s; its "
			         "expiry will reject it",
			         run->id, g->step, (unsigned long long)g->id,
			         s_unreachable(run->o));
		else
			log_info("run %s step %u: approvald request #%llu cancelled", run->id,
			         g->step, (unsigned long long)g->id);
	}
	s_gate_free(&run->gate);
}

/* --- the Watch --- */

static void
s_watch_done(orch_t *o, int status, const char *message, const Ahp__Appr__OrchReply *reply)
{
	orch_appr_t *a = o->appr;
	a->watch_req = 0;
	int64_t now = ahp_mono_ms();
	if (status == 0 &&
	    (reply == NULL || reply->body_case != AHP__APPR__ORCH_REPLY__BODY_WATCH)) {
		status = AHP__STATUS__ERR_INTERNAL;
		message = "approvald answered a Watch with another body";
	}
	if (status != 0) {
		if (status != AHP__STATUS__ERR_INTERRUPTED && status != AHP__STATUS__ERR_TIMEOUT)
			log_warn("approvald watch: %s: %s", ahp_status_str(status),
			         message ? message : "");
		a->watch_at = now + APPR_RETRY_MS;
		return;
	}
	const Ahp__Appr__WatchReply *w = reply->watch;
	for (size_t i = 0; i < w->n_decided; i++) {
		const Ahp__Appr__ApprovalRequest *r = w->decided[i];
		if (r->run_id == NULL)
			continue;
		orch_run_t *run = orch_run_find(o, r->run_id);
		if (run == NULL || run->gate == NULL || run->phase != PH_GATE ||
		    run->gate->step != r->step)
			continue;
		s_apply(run, r);
	}
	const char *lid = w->log_id != NULL ? w->log_id : "";
	if (w->last_seq != a->cursor || strcmp(lid, a->log_id) != 0) {
		a->cursor = w->last_seq;
		snprintf(a->log_id, sizeof a->log_id, "%s", lid);
		if (orch_journal_approval_cursor_set(o->journal, a->log_id, a->cursor) != 0)
			orch_journal_failed(o, "approval cursor");
	}
	a->watch_at = now;
}

long
orch_appr_timers(orch_t *o, int64_t now, long max)
{
	orch_appr_t *a = o->appr;
	if (a == NULL)
		return max;
	long next = ahp_client_timers(a->cl, now, max);
	if (a->watch_req == 0 && now >= a->watch_at) {
		Ahp__Appr__OrchRequest req = AHP__APPR__ORCH_REQUEST__INIT;
		Ahp__Appr__WatchRequest w = AHP__APPR__WATCH_REQUEST__INIT;
		w.after_seq = a->cursor;
		w.wait_ms = APPR_WATCH_WAIT_MS;
		w.log_id = a->log_id;
		req.body_case = AHP__APPR__ORCH_REQUEST__BODY_WATCH;
		req.watch = &w;
		a->watch_req = s_send(o, a, &req, APPR_WATCH_TIMEOUT_MS);
		if (a->watch_req == 0)
			a->watch_at = now + APPR_RETRY_MS;
	}
	if (a->watch_req == 0 && a->watch_at - now < next)
		next = a->watch_at > now ? (long)(a->watch_at - now) : 0;
	return next;
}
