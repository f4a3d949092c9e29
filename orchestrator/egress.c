/* orchestrator: the runs' egress — records read from credproxy's egress log (an ahp_client on its
 * control socket) and journaled as "egress" events, behind a durable per-run cursor. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/log.h"
#include "ahp/util.h"

#include "credproxy.pb-c.h"
#include "orch.h"

#define EGRESS_PAGE 200           /* records asked for per request */
#define EGRESS_TIMEOUT_MS 5000    /* deadline of one request */
#define EGRESS_POLL_MS 5000       /* the slow timer: a followed run is read this often */
#define EGRESS_CONNECT_MS 200     /* credproxy's socket exists, not connected yet: ask again */
#define EGRESS_SETTLE_MS 3000     /* after a run ends, its last requests may still be logged */
#define EGRESS_GIVE_UP_MS 3600000 /* an ended run whose records cannot be read is dropped */
#define EGRESS_PATH_SHOWN 300     /* bytes of a path in the event line (all of it in data) */
#define EGRESS_LOG_EVERY_MS 60000 /* one "cannot read" warning per minute */

/* A run whose egress is followed. */
typedef struct s_ent {
	struct s_ent *next;
	orch_t *o;
	char run_id[ORCH_RUN_ID_MAX];
	uint64_t last_seq; /* highest record seq journaled */
	char log_id[64];   /* the log last_seq belongs to */
	uint64_t events;   /* records of the run seen (bounds its events) */
	int ended;         /* the run has ended: follow it until its log settles */
	int64_t ended_ms;  /* wall clock of the end */
	int64_t due;       /* monotonic ms of the next read; 0 = not scheduled */
	uint64_t req;      /* request in flight, 0 = none */
	int64_t sent_ms;   /* wall clock when the request in flight was sent */
	int again;         /* a read was asked while one was in flight */
	unsigned fails;    /* reads in a row that got no answer (this process) */
} s_ent_t;

struct orch_egress {
	ahp_client_t *cl;
	s_ent_t *ents;
	size_t n;
	int64_t warned; /* monotonic ms of the last "cannot read" warning */
};

static s_ent_t *
s_find(orch_egress_t *eg, const char *run_id)
{
	for (s_ent_t *e = eg->ents; e != NULL; e = e->next)
		if (strcmp(e->run_id, run_id) == 0)
			return e;
	return NULL;
}

static s_ent_t *
s_add(orch_t *o, const char *run_id)
{
	orch_egress_t *eg = o->egress;
	s_ent_t *e = calloc(1, sizeof *e);
	if (e == NULL || ahp_strlcpy(e->run_id, run_id, sizeof e->run_id) != 0) {
		free(e);
		return NULL;
	}
	e->o = o;
	e->next = eg->ents;
	eg->ents = e;
	eg->n++;
	return e;
}

/* Stops following e: durable first (done in the journal), then forgotten. */
static void
s_remove(orch_t *o, s_ent_t *e)
{
	orch_egress_t *eg = o->egress;
	if (orch_journal_egress_done(o->journal, e->run_id) != 0)
		orch_journal_failed(o, "egress done");
	if (e->req != 0)
		ahp_client_forget(eg->cl, e->req);
	for (s_ent_t **pp = &eg->ents; *pp != NULL; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			eg->n--;
			break;
		}
	free(e);
}

/* Asks for a read at monotonic time at (sooner wins); one in flight reads
 * again when it is answered. */
static void
s_due(s_ent_t *e, int64_t at)
{
	if (e->req != 0) {
		e->again = 1;
		return;
	}
	if (e->due == 0 || at < e->due)
		e->due = at;
}

static void
s_warn(orch_egress_t *eg, const char *run_id, const char *what, const char *why)
{
	int64_t now = ahp_mono_ms();
	if (eg->warned != 0 && now - eg->warned < EGRESS_LOG_EVERY_MS)
		return;
	eg->warned = now;
	ahp_log_kv(AHP_LOG_WARN, run_id, NULL, what, "reason", why ? why : "", NULL);
}

/* --- the event --- */

/* "wiki.local/x", "wiki.local:8080/x", "CONNECT api.example:443". */
static void
s_target(const Ahp__Cp__EgressRecord *r, char *buf, size_t len)
{
	const char *path = r->path ? r->path : "";
	size_t pl = ahp_utf8_prefix(path, EGRESS_PATH_SHOWN);
	int connect = strcmp(r->method ? r->method : "", "CONNECT") == 0;
	char port[16] = "";
	if (connect || (r->port != 80 && r->port != 443 && r->port != 0))
		snprintf(port, sizeof port, ":%u", (unsigned)r->port);
	snprintf(buf, len, "%s%s%.*s%s", r->host ? r->host : "", port, (int)pl, path,
	         path[pl] != '\0' ? "…" : "");
}

static json_t *
s_data(const Ahp__Cp__EgressRecord *r)
{
	return json_pack("{s:I, s:I, s:o, s:o, s:o, s:i, s:o, s:i, s:I, s:I, s:I, s:b, s:o, s:o, "
	                 "s:o, s:i}",
	                 "seq", (json_int_t)r->seq, "ts_ms", (json_int_t)r->ts_ms, "profile",
	                 orch_json_text(r->profile ? r->profile : ""), "method",
	                 orch_json_text(r->method ? r->method : ""), "host",
	                 orch_json_text(r->host ? r->host : ""), "port", (int)r->port, "path",
	                 orch_json_text(r->path ? r->path : ""), "status", (int)r->status,
	                 "bytes_up", (json_int_t)r->bytes_up, "bytes_down",
	                 (json_int_t)r->bytes_down, "duration_ms", (json_int_t)r->duration_ms,
	                 "allowed", (int)r->allowed, "rule", orch_json_text(r->rule ? r->rule : ""),
	                 "reason", orch_json_text(r->reason ? r->reason : ""), "injected",
	                 orch_json_text(r->injected ? r->injected : ""), "redactions",
	                 (int)r->redactions);
}

/* One record as a timeline line. Every string in it came from a sandbox or
 * an upstream: stored as it is (made valid UTF-8 by the event writer) and
 * escaped for the terminal by orchctl, like every other event. */
static void
s_event(orch_t *o, const char *run_id, const Ahp__Cp__EgressRecord *r)
{
	char target[EGRESS_PATH_SHOWN + 256 + 32];
	s_target(r, target, sizeof target);
	const char *method = r->method ? r->method : "";
	const char *reason = r->reason ? r->reason : "";
	if (!r->allowed) {
		char st[32];
		snprintf(st, sizeof st, "status %d", (int)r->status);
		orch_run_event_id(o, run_id, "egress", s_data(r), "[egress] refused %s %s (%s)",
		                  method, target, *reason ? reason : st);
		return;
	}
	char notes[768] = "", status[32];
	size_t n = 0;
	if (r->injected != NULL && *r->injected)
		n +=
		    (size_t)snprintf(notes + n, sizeof notes - n, "auth injected: %s", r->injected);
	if (r->redactions > 0 && n < sizeof notes)
		n += (size_t)snprintf(notes + n, sizeof notes - n, "%s%u secret%s redacted",
		                      n ? "; " : "", (unsigned)r->redactions,
		                      r->redactions == 1 ? "" : "s");
	if (*reason && n < sizeof notes)
		snprintf(notes + n, sizeof notes - n, "%s%s", n ? "; " : "", reason);
	if (r->status > 0)
		snprintf(status, sizeof status, "%d", (int)r->status);
	else
		snprintf(status, sizeof status, "no response");
	orch_run_event_id(o, run_id, "egress", s_data(r), "[egress] %s %s → %s%s%s%s", method,
	                  target, status, notes[0] ? " (" : "", notes, notes[0] ? ")" : "");
}

/* --- replies --- */

/* The records of one page: journaled as events, then the cursor, in the
 * same transaction (so a restart of either daemon neither repeats nor loses
 * one). Returns 1 when e is done (freed). */
static int
s_page(orch_t *o, s_ent_t *e, const Ahp__Cp__EgressListReply *l)
{
	const char *log_id = l->log_id ? l->log_id : "";
	if (e->log_id[0] != '\0' && strcmp(e->log_id, log_id) != 0) {
		/* credproxy's log was made anew: its seqs start again. */
		ahp_log_kv(AHP_LOG_WARN, e->run_id, NULL,
		           "credproxy's egress log was replaced; reading this run's records from "
		           "its start",
		           "old_log", e->log_id, "new_log", log_id, NULL);
		ahp_strlcpy(e->log_id, log_id, sizeof e->log_id);
		e->last_seq = 0;
		if (orch_journal_egress_cursor(o->journal, e->run_id, 0, e->log_id, e->events) != 0)
			orch_journal_failed(o, "egress cursor");
		e->due = ahp_mono_ms();
		return 0;
	}
	uint64_t last = e->last_seq;
	for (size_t i = 0; i < l->n_records; i++) {
		const Ahp__Cp__EgressRecord *r = l->records[i];
		if (r == NULL || r->seq <= last || r->run == NULL || strcmp(r->run, e->run_id) != 0)
			continue;
		last = r->seq;
		if (e->events < ORCH_EGRESS_EVENTS_MAX)
			s_event(o, e->run_id, r);
		else if (e->events == ORCH_EGRESS_EVENTS_MAX)
			orch_run_event_id(
			    o, e->run_id, "egress",
			    json_pack("{s:b, s:I}", "more", 1, "from_seq", (json_int_t)r->seq),
			    "[egress] … more requests than %d; the rest are in "
			    "credproxy's log only",
			    ORCH_EGRESS_EVENTS_MAX);
		e->events++;
	}
	if (last != e->last_seq || strcmp(e->log_id, log_id) != 0) {
		e->last_seq = last;
		ahp_strlcpy(e->log_id, log_id, sizeof e->log_id);
		if (orch_journal_egress_cursor(o->journal, e->run_id, e->last_seq, e->log_id,
		                               e->events) != 0)
			orch_journal_failed(o, "egress cursor");
	}
	int64_t now = ahp_mono_ms();
	if (l->more && l->last_seq > 0) {
		e->due = now;
		return 0;
	}
	if (e->ended) {
		/* Read to the end, and late enough that credproxy has logged the
		 * requests the sandbox's end cut short: done. */
		int64_t settled = e->ended_ms + EGRESS_SETTLE_MS;
		if (e->sent_ms >= settled) {
			s_remove(o, e);
			return 1;
		}
		e->due = now + (settled - ahp_now_ms()) + 1;
		return 0;
	}
	e->due = now + EGRESS_POLL_MS;
	return 0;
}

static void
s_done(void *owner, uint64_t id, int status, const char *message, const uint8_t *body, size_t len)
{
	(void)id;
	s_ent_t *e = owner;
	orch_t *o = e->o;
	orch_egress_t *eg = o->egress;
	int again = e->again;
	e->req = 0;
	e->again = 0;
	int64_t now = ahp_mono_ms();
	/* Not answered (credproxy gone, refused, too slow): the slow timer
	 * tries again; records wait in credproxy's log meanwhile. */
	if (status != 0) {
		s_warn(eg, e->run_id, "cannot read the run's egress from credproxy",
		       message ? message : ahp_status_str(status));
		e->fails++;
		e->due = now + EGRESS_POLL_MS;
		return;
	}
	e->fails = 0;
	Ahp__Cp__Reply *rep = ahp__cp__reply__unpack(NULL, len, body);
	if (rep == NULL || (rep->error != NULL && rep->error->status != 0) ||
	    rep->body_case != AHP__CP__REPLY__BODY_EGRESS_LIST || rep->egress_list == NULL) {
		s_warn(eg, e->run_id, "credproxy refused to list the run's egress",
		       rep == NULL                                 ? "undecodable reply"
		       : rep->error != NULL && rep->error->message ? rep->error->message
		                                                   : "unexpected reply");
		if (rep != NULL)
			ahp__cp__reply__free_unpacked(rep, NULL);
		e->due = now + EGRESS_POLL_MS;
		return;
	}
	int gone = s_page(o, e, rep->egress_list);
	ahp__cp__reply__free_unpacked(rep, NULL);
	/* A read asked for meanwhile goes now. */
	if (again && !gone)
		e->due = now;
}

/* --- life cycle --- */

static int
s_load(void *arg, const orch_egress_row_t *row)
{
	orch_t *o = arg;
	s_ent_t *e = s_add(o, row->run_id);
	if (e == NULL)
		return 0;
	e->last_seq = row->last_seq;
	e->events = row->events;
	ahp_strlcpy(e->log_id, row->log_id ? row->log_id : "", sizeof e->log_id);
	int st = row->state ? orch_state_parse(row->state) : ORCH_FAILED;
	if (st == ORCH_SUCCEEDED || st == ORCH_FAILED || st == ORCH_CANCELLED) {
		e->ended = 1;
		e->ended_ms = row->state ? row->updated_ms : 0;
	}
	e->due = ahp_mono_ms();
	return 0;
}

int
orch_egress_setup(orch_t *o)
{
	o->egress = calloc(1, sizeof *o->egress);
	if (o->egress == NULL)
		return -1;
	o->egress->cl = ahp_client_new(o->zctx, "credproxy", o->cp_endpoint, s_done);
	if (o->egress->cl == NULL)
		return -1;
	if (orch_journal_egress_open(o->journal, s_load, o) != 0)
		orch_journal_failed(o, "reading egress cursors");
	if (o->egress->n > 0)
		log_info("following the egress of %zu run(s) in credproxy's log", o->egress->n);
	return 0;
}

void
orch_egress_teardown(orch_t *o)
{
	if (o->egress == NULL)
		return;
	ahp_client_destroy(&o->egress->cl);
	while (o->egress->ents != NULL) {
		s_ent_t *e = o->egress->ents;
		o->egress->ents = e->next;
		free(e);
	}
	free(o->egress);
	o->egress = NULL;
}

void *
orch_egress_socket(orch_t *o)
{
	return o->egress ? ahp_client_socket(o->egress->cl) : NULL;
}

void *
orch_egress_monitor_socket(orch_t *o)
{
	return o->egress ? ahp_client_monitor_socket(o->egress->cl) : NULL;
}

void
orch_egress_recv(orch_t *o)
{
	if (o->egress == NULL)
		return;
	ahp_client_recv(o->egress->cl);
	ahp_client_monitor_recv(o->egress->cl);
}

static void
s_send(orch_t *o, s_ent_t *e, int64_t now)
{
	Ahp__Cp__Request req = AHP__CP__REQUEST__INIT;
	Ahp__Cp__EgressListRequest lr = AHP__CP__EGRESS_LIST_REQUEST__INIT;
	lr.run_id = e->run_id;
	lr.after_seq = e->last_seq;
	lr.limit = EGRESS_PAGE;
	req.body_case = AHP__CP__REQUEST__BODY_EGRESS_LIST;
	req.egress_list = &lr;
	uint8_t buf[256];
	size_t len = ahp__cp__request__get_packed_size(&req);
	if (len > sizeof buf)
		return;
	ahp__cp__request__pack(&req, buf);
	e->due = 0;
	e->sent_ms = ahp_now_ms();
	e->req = ahp_client_send(o->egress->cl, e, buf, len, EGRESS_TIMEOUT_MS);
	if (e->req != 0)
		return;
	/* credproxy not running (no socket), or not connected yet. */
	e->fails++;
	e->due = now + (ahp_client_present(o->egress->cl) ? EGRESS_CONNECT_MS : EGRESS_POLL_MS);
}

long
orch_egress_timers(orch_t *o, int64_t now, long max)
{
	if (o->egress == NULL)
		return max;
	long next = max;
	int64_t wall = ahp_now_ms();
	s_ent_t *e = o->egress->ents;
	while (e != NULL) {
		s_ent_t *following = e->next;
		/* Given up only after failing here too: an orchestrator that
		 * was down for long still reads what its runs left. */
		if (e->ended && e->req == 0 && e->fails >= 3 &&
		    wall - e->ended_ms > EGRESS_GIVE_UP_MS) {
			ahp_log_kv(
			    AHP_LOG_WARN, e->run_id, NULL,
			    "egress: credproxy's log could not be read for an hour after the "
			    "run ended; its remaining requests are in credproxy's log only",
			    NULL);
			s_remove(o, e);
		} else if (e->req == 0 && e->due != 0) {
			if (e->due <= now)
				s_send(o, e, now);
			if (e->req == 0 && e->due != 0 && e->due - now < next)
				next = e->due - now < 0 ? 0 : (long)(e->due - now);
		}
		e = following;
	}
	/* Deadlines of requests in flight (their callbacks reschedule). */
	return ahp_client_timers(o->egress->cl, now, next);
}

void
orch_egress_track(orch_run_t *run)
{
	orch_t *o = run->o;
	if (o->egress == NULL)
		return;
	s_ent_t *e = s_find(o->egress, run->id);
	if (e == NULL) {
		e = s_add(o, run->id);
		if (e == NULL)
			return;
	} else if (!e->ended) {
		return;
	}
	/* Durable before the sandbox is asked to run anything: a restart then
	 * knows this run may have egress to read. */
	if (orch_journal_egress_track(o->journal, run->id) != 0)
		orch_journal_failed(o, "egress track");
	e->ended = 0;
	s_due(e, ahp_mono_ms() + EGRESS_POLL_MS);
}

void
orch_egress_pull(orch_t *o, const char *run_id)
{
	s_ent_t *e = o->egress ? s_find(o->egress, run_id) : NULL;
	if (e != NULL)
		s_due(e, ahp_mono_ms());
}

void
orch_egress_ended(orch_t *o, const char *run_id)
{
	s_ent_t *e = o->egress ? s_find(o->egress, run_id) : NULL;
	/* A run resumed in the same turn it failed is active again. */
	if (e == NULL || orch_run_find(o, run_id) != NULL)
		return;
	e->ended = 1;
	e->ended_ms = ahp_now_ms();
	s_due(e, ahp_mono_ms());
}
