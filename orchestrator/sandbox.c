/* orchestrator: the sandboxd client — an ahp_client whose replies go to the exec tool of the run
 * that asked. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/log.h"
#include "ahp/util.h"

#include "orch.h"

#define S_DESTROY_TAG ((uintptr_t)0x5bd1) /* odd: never an orch_run_t's first pointer */
#define S_DESTROY_TIMEOUT_MS 10000
#define S_DESTROY_RETRY_MS 1000
#define S_DESTROY_MAX 65536 /* Destroys kept for a sandboxd that is away */

/* A Destroy sandboxd has not answered yet (o->sbx_destroys): sent again every
 * S_DESTROY_RETRY_MS until it answers (done, or "unknown sandbox"). Its first
 * word is S_DESTROY_TAG; a run, the other owner of sandboxd requests, starts
 * with a pointer (NULL or aligned), so s_done tells them apart. */
struct orch_sbx_destroy {
	uintptr_t tag;
	orch_t *o;
	orch_sbx_destroy_t *next;
	uint64_t id; /* request in flight, 0 = due at `due` */
	int64_t due; /* monotonic ms */
	int keep;
	char run_id[ORCH_RUN_ID_MAX];
};

static void s_destroy_send(orch_sbx_destroy_t *d);

/* The sweep (orch_sbx_destroy's comment): one List at a time, owned by this
 * object; its first word is S_SWEEP_TAG, as a Destroy's is S_DESTROY_TAG. */
#define S_SWEEP_TAG ((uintptr_t)0x5bd3)
#define S_SWEEP_EVERY_MS (5 * 60 * 1000)
#define S_SWEEP_RETRY_MS 1000 /* sandboxd absent, or the List failed */
#define S_SWEEP_TIMEOUT_MS 10000

struct orch_sbx_sweep {
	uintptr_t tag;
	orch_t *o;
	uint64_t id; /* List in flight, 0 = due at `due` */
	int64_t due; /* monotonic ms */
};

static void s_sweep_done(orch_sbx_sweep_t *sw, int status, const uint8_t *body, size_t len);
static void s_sweep_send(orch_sbx_sweep_t *sw);

static void
s_destroy_free(orch_sbx_destroy_t *d)
{
	orch_sbx_destroy_t **pp = &d->o->sbx_destroys;
	while (*pp != NULL && *pp != d)
		pp = &(*pp)->next;
	if (*pp == d)
		*pp = d->next;
	d->o->n_sbx_destroys--;
	free(d);
}

static void
s_destroy_done(orch_sbx_destroy_t *d, int status, const uint8_t *body, size_t len)
{
	d->id = 0;
	if (status == 0) {
		Ahp__Sbx__Reply *reply = ahp__sbx__reply__unpack(NULL, len, body);
		int st = reply == NULL ? AHP__STATUS__ERR_INTERNAL
		         : reply->error != NULL && reply->error->status != 0
		             ? (int)reply->error->status
		             : 0;
		if (reply != NULL)
			ahp__sbx__reply__free_unpacked(reply, NULL);
		/* done, or nothing left to destroy (an earlier copy was applied) */
		if (st == 0 || st == AHP__STATUS__ERR_NOT_FOUND) {
			s_destroy_free(d);
			return;
		}
		if (st == AHP__STATUS__ERR_BAD_REQUEST || st == AHP__STATUS__ERR_INTERNAL) {
			log_warn("sandboxd refused to destroy sandbox %s (status %d)", d->run_id,
			         st);
			s_destroy_free(d);
			return;
		}
	}
	/* lost with the connection, timed out or "unavailable": again later */
	d->due = ahp_mono_ms() + S_DESTROY_RETRY_MS;
}

/* The owner of a request is its run, or a Destroy; a run forgets its request
 * before it is freed, and a Destroy lives until answered, so the owner is
 * always alive here. */
static void
s_done(void *owner, uint64_t id, int status, const char *message, const uint8_t *body, size_t len)
{
	(void)id;
	uintptr_t tag;
	memcpy(&tag, owner, sizeof(tag));
	if (tag == S_DESTROY_TAG) {
		s_destroy_done(owner, status, body, len);
		return;
	}
	if (tag == S_SWEEP_TAG) {
		s_sweep_done(owner, status, body, len);
		return;
	}
	orch_run_t *run = owner;
	if (status != 0) {
		orch_exec_reply(run, status, message, NULL);
		return;
	}
	Ahp__Sbx__Reply *reply = ahp__sbx__reply__unpack(NULL, len, body);
	if (reply == NULL) {
		orch_exec_reply(run, AHP__STATUS__ERR_INTERNAL, "undecodable reply from sandboxd",
		                NULL);
		return;
	}
	orch_exec_reply(run, 0, NULL, reply);
	ahp__sbx__reply__free_unpacked(reply, NULL);
}

int
orch_sbx_setup(orch_t *o)
{
	o->sbx = ahp_client_new(o->zctx, "sandboxd", o->sbx_endpoint, s_done);
	if (o->sbx == NULL)
		return -1;
	o->sbx_sweep = calloc(1, sizeof(*o->sbx_sweep));
	if (o->sbx_sweep == NULL)
		return -1;
	o->sbx_sweep->tag = S_SWEEP_TAG;
	o->sbx_sweep->o = o;
	o->sbx_sweep->due = ahp_mono_ms(); /* the first loop turn */
	return 0;
}

void
orch_sbx_teardown(orch_t *o)
{
	ahp_client_destroy(&o->sbx); /* drops requests in flight, without callbacks */
	free(o->sbx_sweep);
	o->sbx_sweep = NULL;
	while (o->sbx_destroys != NULL) {
		orch_sbx_destroy_t *d = o->sbx_destroys;
		o->sbx_destroys = d->next;
		free(d);
	}
	o->n_sbx_destroys = 0;
}

void *
orch_sbx_socket(orch_t *o)
{
	return ahp_client_socket(o->sbx);
}

void *
orch_sbx_monitor_socket(orch_t *o)
{
	return ahp_client_monitor_socket(o->sbx);
}

void
orch_sbx_monitor_recv(orch_t *o)
{
	if (o->sbx != NULL)
		ahp_client_monitor_recv(o->sbx);
}

void
orch_sbx_recv(orch_t *o)
{
	if (o->sbx != NULL)
		ahp_client_recv(o->sbx);
}

long
orch_sbx_timers(orch_t *o, int64_t now, long max)
{
	if (o->sbx == NULL)
		return max;
	long next = ahp_client_timers(o->sbx, now, max);
	/* Destroys due again; s_destroy_send may free nothing here (a send that
	 * fails only reschedules), so the walk is safe. */
	for (orch_sbx_destroy_t *d = o->sbx_destroys; d != NULL; d = d->next) {
		if (d->id != 0)
			continue;
		if (d->due <= now)
			s_destroy_send(d);
		if (d->id == 0 && d->due - now < next)
			next = d->due - now > 0 ? (long)(d->due - now) : 0;
	}
	orch_sbx_sweep_t *sw = o->sbx_sweep;
	if (sw != NULL && sw->id == 0) {
		if (sw->due <= now)
			s_sweep_send(sw);
		if (sw->id == 0 && sw->due - now < next)
			next = sw->due - now > 0 ? (long)(sw->due - now) : 0;
	}
	return next;
}

int
orch_sbx_present(orch_t *o)
{
	return ahp_client_present(o->sbx);
}

static uint8_t *
s_pack(const Ahp__Sbx__Request *req, size_t *len)
{
	*len = ahp__sbx__request__get_packed_size(req);
	uint8_t *buf = malloc(*len ? *len : 1);
	if (buf != NULL)
		ahp__sbx__request__pack(req, buf);
	return buf;
}

/* Drops the run's unanswered Destroy: the run is using its sandbox again (a
 * resume or the exec after an approval), which a late Destroy would kill. One
 * already sent arrives before this request (one connection, in order). */
static void
s_destroy_cancel(orch_t *o, const char *run_id)
{
	orch_sbx_destroy_t *d = o->sbx_destroys;
	while (d != NULL) {
		orch_sbx_destroy_t *next = d->next;
		if (strcmp(d->run_id, run_id) == 0) {
			if (d->id != 0)
				ahp_client_forget(o->sbx, d->id);
			s_destroy_free(d);
		}
		d = next;
	}
}

uint64_t
orch_sbx_request(orch_t *o, orch_run_t *run, const Ahp__Sbx__Request *req, long timeout_ms)
{
	s_destroy_cancel(o, run->id);
	size_t len;
	uint8_t *buf = s_pack(req, &len);
	if (buf == NULL)
		return 0;
	uint64_t id = ahp_client_send(o->sbx, run, buf, len, timeout_ms);
	free(buf);
	return id;
}

void
orch_sbx_forget(orch_t *o, uint64_t id)
{
	if (o->sbx != NULL && id != 0)
		ahp_client_forget(o->sbx, id);
}

static void
s_destroy_send(orch_sbx_destroy_t *d)
{
	Ahp__Sbx__Request req = AHP__SBX__REQUEST__INIT;
	Ahp__Sbx__DestroyRequest dr = AHP__SBX__DESTROY_REQUEST__INIT;
	dr.sandbox_id = d->run_id;
	dr.keep_workspace = d->keep != 0;
	req.body_case = AHP__SBX__REQUEST__BODY_DESTROY;
	req.destroy = &dr;
	size_t len;
	uint8_t *buf = s_pack(&req, &len);
	d->id = buf != NULL ? ahp_client_send(d->o->sbx, d, buf, len, S_DESTROY_TIMEOUT_MS) : 0;
	free(buf);
	if (d->id == 0)
		d->due = ahp_mono_ms() + S_DESTROY_RETRY_MS;
}

void
orch_sbx_destroy(orch_t *o, const char *run_id, int keep_workspace)
{
	/* A newer Destroy of the same sandbox replaces an unanswered one. */
	s_destroy_cancel(o, run_id);
	if (o->n_sbx_destroys >= S_DESTROY_MAX) {
		log_warn("cannot keep the destroy of sandbox %s: %d destroys wait for sandboxd",
		         run_id, S_DESTROY_MAX);
		return;
	}
	orch_sbx_destroy_t *d = calloc(1, sizeof(*d));
	if (d == NULL || ahp_strlcpy(d->run_id, run_id, sizeof(d->run_id)) != 0) {
		log_warn("cannot send destroy for sandbox %s", run_id);
		free(d);
		return;
	}
	d->tag = S_DESTROY_TAG;
	d->o = o;
	d->keep = keep_workspace != 0;
	d->next = o->sbx_destroys;
	o->sbx_destroys = d;
	o->n_sbx_destroys++;
	s_destroy_send(d);
}

bool
orch_sbx_run_id(const char *id)
{
	size_t n = strlen(ORCH_RUN_ID_PREFIX), len = strlen(id);
	if (len != n + 16 || strncmp(id, ORCH_RUN_ID_PREFIX, n) != 0)
		return false;
	return strspn(id + n, "0123456789abcdef") == 16;
}

static void
s_sweep_send(orch_sbx_sweep_t *sw)
{
	sw->id = 0;
	if (orch_sbx_present(sw->o)) {
		Ahp__Sbx__Request req = AHP__SBX__REQUEST__INIT;
		Ahp__Sbx__ListRequest lr = AHP__SBX__LIST_REQUEST__INIT;
		req.body_case = AHP__SBX__REQUEST__BODY_LIST;
		req.list = &lr;
		size_t len;
		uint8_t *buf = s_pack(&req, &len);
		if (buf != NULL)
			sw->id = ahp_client_send(sw->o->sbx, sw, buf, len, S_SWEEP_TIMEOUT_MS);
		free(buf);
	}
	if (sw->id == 0)
		sw->due = ahp_mono_ms() + S_SWEEP_RETRY_MS;
}

static int
s_sweep_state(void *arg, const orch_run_row_t *row)
{
	*(int *)arg = orch_state_parse(row->state);
	return 1;
}

/* sandboxd's List is here: every sandbox whose run this journal says has
 * ended, and which no run in memory holds, is destroyed as the run's end
 * would have (orch_exec's s_ended): the Destroy the orchestrator queued then
 * was lost with it (it stopped before sandboxd answered). */
static void
s_sweep_done(orch_sbx_sweep_t *sw, int status, const uint8_t *body, size_t len)
{
	orch_t *o = sw->o;
	sw->id = 0;
	Ahp__Sbx__Reply *reply = status == 0 ? ahp__sbx__reply__unpack(NULL, len, body) : NULL;
	if (reply == NULL || reply->body_case != AHP__SBX__REPLY__BODY_LIST ||
	    reply->list == NULL) {
		if (reply != NULL)
			ahp__sbx__reply__free_unpacked(reply, NULL);
		sw->due = ahp_mono_ms() + S_SWEEP_RETRY_MS;
		return;
	}
	for (size_t i = 0; i < reply->list->n_sandboxes; i++) {
		const char *id = reply->list->sandboxes[i]->sandbox_id;
		/* untrusted: only an id a run of ours could have is looked up; one
		 * outside the run id space (a one-shot's "cli-...") never is, whatever
		 * the journal holds */
		if (id == NULL || !orch_sbx_run_id(id) || orch_run_find(o, id) != NULL)
			continue;
		int state = -1;
		if (orch_journal_run_get(o->journal, id, s_sweep_state, &state) <= 0)
			continue; /* not a run of this journal */
		if (state != ORCH_SUCCEEDED && state != ORCH_CANCELLED && state != ORCH_FAILED)
			continue;
		log_info("sandbox %s: its run has %s; destroying it (its Destroy was lost with an "
		         "earlier orchestrator)",
		         id, orch_state_str(state));
		orch_sbx_destroy(o, id, state == ORCH_FAILED);
	}
	ahp__sbx__reply__free_unpacked(reply, NULL);
	sw->due = ahp_mono_ms() + S_SWEEP_EVERY_MS;
}

static const char *
s_killed_str(int k)
{
	switch (k) {
	case AHP__SBX__KILLED_BY__KILLED_TIMEOUT:
		return "timeout";
	case AHP__SBX__KILLED_BY__KILLED_MEMORY:
		return "memory";
	case AHP__SBX__KILLED_BY__KILLED_PIDS:
		return "pids";
	case AHP__SBX__KILLED_BY__KILLED_CPU:
		return "cpu";
	default:
		return NULL;
	}
}

json_t *
orch_sbx_result_json(const Ahp__Sbx__ExecResult *r)
{
	char *out = ahp_utf8_sanitize(r->stdout.data, r->stdout.len, 0, NULL, NULL);
	char *err = ahp_utf8_sanitize(r->stderr.data, r->stderr.len, 0, NULL, NULL);
	/* cwd is a directory name chosen by a sandboxed command: any bytes. */
	char *cwd = r->cwd ? ahp_utf8_sanitize(r->cwd, strlen(r->cwd), 0, NULL, NULL) : NULL;
	json_t *j =
	    json_pack("{s:i, s:s, s:s, s:b, s:s, s:I}", "exit_code", (int)r->exit_code, "stdout",
	              out ? out : "", "stderr", err ? err : "", "truncated", (int)r->truncated,
	              "cwd", cwd ? cwd : "", "duration_ms", (json_int_t)r->duration_ms);
	free(cwd);
	free(out);
	free(err);
	const char *k = s_killed_str(r->killed_by);
	if (j != NULL && k != NULL)
		json_object_set_new(j, "killed_by", json_string(k));
	return j;
}
