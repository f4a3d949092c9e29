/* orchestrator: the exec tool's transport, sandboxd requests over the RPC client, and result
 * shaping. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zmq.h>

#include "ahp/log.h"
#include "ahp/util.h"

#include "orch.h"

#define SBX_CONTROL_TIMEOUT_MS 10000 /* create / fetch */
/* The client connects asynchronously (and, with ZMQ_IMMEDIATE, refuses to
 * queue before it has): right after a start or a sandboxd restart a send
 * may fail for a moment, so it is retried this long before giving up. */
#define SBX_CONNECT_GRACE_MS 3000
#define SBX_CONNECT_RETRY_MS 50
#define SBX_MONITOR "inproc://orch-sandboxd-monitor"

/* A monitor on the client socket tells us when sandboxd goes away, so a
 * command in flight is reported as interrupted at once rather than after
 * its timeout. */
static void *s_monitor;

int
orch_sbx_setup(orch_t *o)
{
	o->sbx = ahp_rpc_client_new(o->zctx, o->sbx_endpoint);
	if (o->sbx == NULL) {
		log_error("cannot set up the sandboxd client for %s", o->sbx_endpoint);
		return -1;
	}
	if (zmq_socket_monitor(ahp_rpc_client_socket(o->sbx), SBX_MONITOR,
	                       ZMQ_EVENT_DISCONNECTED) != 0) {
		log_warn("no sandboxd connection monitor: %s", zmq_strerror(zmq_errno()));
		return 0;
	}
	s_monitor = zmq_socket(o->zctx, ZMQ_PAIR);
	if (s_monitor == NULL || zmq_connect(s_monitor, SBX_MONITOR) != 0) {
		log_warn("no sandboxd connection monitor: %s", zmq_strerror(zmq_errno()));
		if (s_monitor != NULL)
			zmq_close(s_monitor);
		s_monitor = NULL;
	}
	return 0;
}

void
orch_sbx_teardown(orch_t *o)
{
	if (s_monitor != NULL) {
		int zero = 0;
		zmq_setsockopt(s_monitor, ZMQ_LINGER, &zero, sizeof zero);
		zmq_close(s_monitor);
		s_monitor = NULL;
	}
	if (o->sbx != NULL)
		zmq_socket_monitor(ahp_rpc_client_socket(o->sbx), NULL, 0);
	ahp_rpc_client_destroy(&o->sbx);
}

void *
orch_sbx_monitor_socket(orch_t *o)
{
	(void)o;
	return s_monitor;
}

/* Every request in flight to a sandboxd that went away is lost: the
 * command may have been killed with it, and is never sent again. */
static void
s_lost(orch_t *o)
{
	/* Handling one run can end it and start a queued run that fails at
	 * once, unlinking runs mid-walk: collect first, then handle (ended
	 * runs stay allocated until the end of the turn). */
	orch_run_t *lost = NULL, **tail = &lost;
	for (orch_run_t *r = o->runs; r != NULL; r = r->next) {
		if (r->phase != PH_SBX_INFLIGHT)
			continue;
		r->due_next = NULL;
		*tail = r;
		tail = &r->due_next;
	}
	for (orch_run_t *r = lost, *nx; r != NULL; r = nx) {
		nx = r->due_next;
		r->due_next = NULL;
		if (r->phase != PH_SBX_INFLIGHT)
			continue;
		if (r->sbx_op == SBX_EXEC)
			orch_run_sbx_done(
			    r, AHP__STATUS__ERR_INTERRUPTED,
			    "sandboxd went away while the command ran; its outcome was "
			    "lost and it was not re-run",
			    NULL);
		else
			orch_run_sbx_done(r, AHP__STATUS__ERR_UNAVAILABLE, "sandboxd went away",
			                  NULL);
	}
}

void
orch_sbx_monitor_recv(orch_t *o)
{
	if (s_monitor == NULL)
		return;
	for (;;) {
		zmq_msg_t m;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, s_monitor, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&m);
			return;
		}
		/* Frame 1: u16 event, u32 value; frame 2: the endpoint. */
		uint16_t ev = 0;
		if (zmq_msg_size(&m) >= 2)
			memcpy(&ev, zmq_msg_data(&m), sizeof ev);
		int more = zmq_msg_more(&m);
		zmq_msg_close(&m);
		while (more) {
			zmq_msg_init(&m);
			if (zmq_msg_recv(&m, s_monitor, ZMQ_DONTWAIT) < 0) {
				zmq_msg_close(&m);
				break;
			}
			more = zmq_msg_more(&m);
			zmq_msg_close(&m);
		}
		if (ev == ZMQ_EVENT_DISCONNECTED) {
			log_warn("sandboxd disconnected");
			s_lost(o);
		}
	}
}

void *
orch_sbx_socket(orch_t *o)
{
	return o->sbx ? ahp_rpc_client_socket(o->sbx) : NULL;
}

/* On ipc:// a missing socket file means sandboxd is not running: say so at
 * once instead of queueing a request nobody will read. */
static int
s_present(orch_t *o)
{
	if (strncmp(o->sbx_endpoint, "ipc://", 6) != 0)
		return 1;
	struct stat st;
	return stat(o->sbx_endpoint + 6, &st) == 0 && S_ISSOCK(st.st_mode);
}

static uint64_t
s_send(orch_t *o, const Ahp__Sbx__Request *req)
{
	size_t len = ahp__sbx__request__get_packed_size(req);
	uint8_t *buf = malloc(len ? len : 1);
	if (buf == NULL)
		return 0;
	ahp__sbx__request__pack(req, buf);
	uint64_t id = ahp_rpc_client_send(o->sbx, buf, len);
	free(buf);
	return id;
}

void
orch_sbx_send(orch_run_t *run)
{
	orch_t *o = run->o;
	char exec_id[ORCH_RUN_ID_MAX + 16];
	snprintf(exec_id, sizeof exec_id, "%s-%u", run->id, run->cur_seq);

	Ahp__Sbx__Request req = AHP__SBX__REQUEST__INIT;
	Ahp__Sbx__CreateRequest create = AHP__SBX__CREATE_REQUEST__INIT;
	Ahp__Sbx__Limits limits = AHP__SBX__LIMITS__INIT;
	Ahp__Sbx__ExecRequest exec = AHP__SBX__EXEC_REQUEST__INIT;
	Ahp__Sbx__FetchRequest fetch = AHP__SBX__FETCH_REQUEST__INIT;
	long timeout = SBX_CONTROL_TIMEOUT_MS;
	const ahp_sandbox_cfg_t *sc = &run->profile->sandbox;

	switch (run->sbx_op) {
	case SBX_CREATE:
		limits.memory_mb = sc->memory_mb;
		limits.pids_max = sc->pids_max;
		limits.cpu_seconds = sc->cpu_seconds;
		limits.timeout_s = sc->timeout_s;
		limits.output_kb = sc->output_kb;
		create.run_id = run->id;
		create.profile = run->profile->name;
		create.limits = &limits;
		create.network = sc->network == AHP_NET_PROXY ? AHP__SBX__NETWORK_MODE__NET_PROXY
		                                              : AHP__SBX__NETWORK_MODE__NET_NONE;
		req.body_case = AHP__SBX__REQUEST__BODY_CREATE;
		req.create = &create;
		break;
	case SBX_EXEC:
		exec.sandbox_id = run->id;
		exec.exec_id = exec_id;
		exec.command = run->sbx_command;
		req.body_case = AHP__SBX__REQUEST__BODY_EXEC;
		req.exec = &exec;
		timeout = (long)sc->timeout_s * 1000 + o->sbx_timeout_ms;
		break;
	case SBX_FETCH:
		fetch.sandbox_id = run->id;
		fetch.exec_id = exec_id;
		req.body_case = AHP__SBX__REQUEST__BODY_FETCH;
		req.fetch = &fetch;
		break;
	default:
		return;
	}
	/* On ipc:// a missing socket file means sandboxd is not running (or
	 * restarting): same grace as a connection not made yet. */
	int present = s_present(o);
	if (present) {
		run->sbx_used = 1;
		run->sbx_req = s_send(o, &req);
	}
	if (!present || run->sbx_req == 0) {
		int64_t now = ahp_mono_ms();
		if (run->sbx_unsent_since == 0)
			run->sbx_unsent_since = now;
		if (now - run->sbx_unsent_since < SBX_CONNECT_GRACE_MS) {
			run->phase = PH_SBX_BACKOFF;
			run->due_ms = now + SBX_CONNECT_RETRY_MS;
			return;
		}
		run->sbx_unsent_since = 0;
		orch_run_sbx_done(run, AHP__STATUS__ERR_UNAVAILABLE,
		                  present ? "sandboxd is not reachable"
		                          : "sandboxd is not running (no socket at its endpoint)",
		                  NULL);
		return;
	}
	run->sbx_unsent_since = 0;
	run->phase = PH_SBX_INFLIGHT;
	run->sbx_started = ahp_mono_ms();
	run->sbx_deadline = run->sbx_started + timeout;
}

void
orch_sbx_destroy(orch_t *o, const char *run_id, int keep_workspace)
{
	if (!s_present(o))
		return;
	Ahp__Sbx__Request req = AHP__SBX__REQUEST__INIT;
	Ahp__Sbx__DestroyRequest d = AHP__SBX__DESTROY_REQUEST__INIT;
	d.sandbox_id = (char *)run_id;
	d.keep_workspace = keep_workspace != 0;
	req.body_case = AHP__SBX__REQUEST__BODY_DESTROY;
	req.destroy = &d;
	/* The reply matches no run and is dropped; a sandbox left behind is
	 * destroyed again if the run is ever resumed and ends. */
	if (s_send(o, &req) == 0)
		log_warn("cannot send destroy for sandbox %s", run_id);
}

static orch_run_t *
s_find_req(orch_t *o, uint64_t id)
{
	for (orch_run_t *r = o->runs; r != NULL; r = r->next)
		if (r->phase == PH_SBX_INFLIGHT && r->sbx_req == id)
			return r;
	return NULL;
}

void
orch_sbx_recv(orch_t *o)
{
	for (int i = 0; i < 1024; i++) {
		uint64_t id = 0;
		uint8_t *body = NULL;
		size_t len = 0;
		int terr = 0;
		int rc = ahp_rpc_client_recv(o->sbx, &id, &body, &len, &terr);
		if (rc <= 0)
			break;
		orch_run_t *run = s_find_req(o, id);
		if (run == NULL) {
			/* Destroy replies and answers to requests we gave up on. */
			free(body);
			continue;
		}
		if (terr != 0) {
			char msg[256];
			snprintf(msg, sizeof msg, "sandboxd refused the request: %.200s",
			         body ? (char *)body : "");
			free(body);
			orch_run_sbx_done(run, terr, msg, NULL);
			continue;
		}
		Ahp__Sbx__Reply *reply = ahp__sbx__reply__unpack(NULL, len, body);
		free(body);
		if (reply == NULL) {
			orch_run_sbx_done(run, AHP__STATUS__ERR_INTERNAL,
			                  "undecodable reply from sandboxd", NULL);
			continue;
		}
		orch_run_sbx_done(run, 0, NULL, reply);
		ahp__sbx__reply__free_unpacked(reply, NULL);
	}
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
