/* orchestrator: the sandboxd client — an ahp_client whose replies go to the exec tool of the run
 * that asked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/log.h"
#include "ahp/util.h"

#include "orch.h"

/* The owner of every request is its run; a run forgets its request before it
 * is freed, so the owner is always alive here. */
static void
s_done(void *owner, uint64_t id, int status, const char *message, const uint8_t *body, size_t len)
{
	(void)id;
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
	return o->sbx != NULL ? 0 : -1;
}

void
orch_sbx_teardown(orch_t *o)
{
	ahp_client_destroy(&o->sbx);
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
	return o->sbx != NULL ? ahp_client_timers(o->sbx, now, max) : max;
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

uint64_t
orch_sbx_request(orch_t *o, orch_run_t *run, const Ahp__Sbx__Request *req, long timeout_ms)
{
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

void
orch_sbx_destroy(orch_t *o, const char *run_id, int keep_workspace)
{
	Ahp__Sbx__Request req = AHP__SBX__REQUEST__INIT;
	Ahp__Sbx__DestroyRequest d = AHP__SBX__DESTROY_REQUEST__INIT;
	d.sandbox_id = (char *)run_id;
	d.keep_workspace = keep_workspace != 0;
	req.body_case = AHP__SBX__REQUEST__BODY_DESTROY;
	req.destroy = &d;
	size_t len;
	uint8_t *buf = s_pack(&req, &len);
	/* The reply is dropped; a sandbox left behind (sandboxd absent) is
	 * destroyed again if the run is ever resumed and ends. */
	if (buf == NULL || ahp_client_post(o->sbx, buf, len) != 0)
		log_warn("cannot send destroy for sandbox %s", run_id);
	free(buf);
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
