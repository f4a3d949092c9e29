/* orchestrator: the exec tool — a shell command in the run's sandbox, through sandboxd. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ahp/log.h"
#include "ahp/util.h"

#include "orch.h"

#define EXEC_CONTROL_TIMEOUT_MS 10000 /* create / fetch */
/* The client connects asynchronously (and, with ZMQ_IMMEDIATE, refuses to
 * queue before it has): right after a start or a sandboxd restart a send
 * may fail for a moment, so it is retried this long before giving up. */
#define EXEC_CONNECT_GRACE_MS 3000
#define EXEC_CONNECT_RETRY_MS 50

enum exec_op { OP_NONE, OP_CREATE, OP_EXEC, OP_FETCH };

/* A run's exec state; lives from the first exec to the end of the run. */
typedef struct {
	int created;  /* sandboxd confirmed Create in this process's life */
	int used;     /* a sandbox may exist: destroy it at the end */
	int op;       /* enum exec_op in flight or due */
	int retried;  /* Exec re-sent once after the sandbox vanished */
	uint64_t req; /* request in flight (0 = none) */
	int64_t started;
	int64_t unsent_since;  /* first failed send of the current request */
	int64_t unavail_since; /* first "unavailable" answer to it */
	char *command;         /* the command of the step in progress */
} exec_state_t;

static exec_state_t *
s_state(orch_run_t *run)
{
	if (run->tool_state[ORCH_TOOL_EXEC] == NULL)
		run->tool_state[ORCH_TOOL_EXEC] = calloc(1, sizeof(exec_state_t));
	return run->tool_state[ORCH_TOOL_EXEC];
}

static json_t *
s_definition(orch_t *o, const ahp_profile_t *p)
{
	(void)o;
	(void)p;
	return json_pack(
	    "{s:s, s:{s:s, s:s, s:{s:s, s:{s:{s:s, s:s}}, s:[s]}}}", "type", "function", "function",
	    "name", "exec", "description",
	    "Run a shell command (/bin/sh -c) in the agent's sandbox. The working directory "
	    "persists between calls; /workspace is writable. Returns exit_code, stdout, stderr, "
	    "truncated, cwd and duration_ms.",
	    "parameters", "type", "object", "properties", "command", "type", "string",
	    "description", "The command line", "required", "command");
}

static const char *
s_subject(const json_t *args)
{
	return json_string_value(json_object_get(args, "command"));
}

static void
s_start(orch_run_t *run, const json_t *args, int mode)
{
	exec_state_t *x = s_state(run);
	if (x == NULL) {
		orch_tool_done(run, orch_tool_error("internal", "out of memory"),
		               AHP__STATUS__ERR_INTERNAL);
		return;
	}
	const json_t *jc = json_object_get(args, "command");
	const char *cmd = json_string_value(jc);
	size_t clen = json_string_length(jc);
	if (cmd == NULL || clen == 0 || clen > EXEC_COMMAND_MAX || strlen(cmd) != clen) {
		orch_run_event(run, "sandbox", json_pack("{s:O}", "arguments", args),
		               "[sandbox] bad command");
		orch_tool_done(
		    run,
		    orch_tool_error(cmd && clen > EXEC_COMMAND_MAX ? "too_large" : "bad_request",
		                    "argument 'command' must be a non-empty string of at most %d "
		                    "bytes without NUL characters",
		                    EXEC_COMMAND_MAX),
		    AHP__STATUS__ERR_BAD_REQUEST);
		return;
	}
	free(x->command);
	x->command = strdup(cmd);
	if (x->command == NULL) {
		orch_tool_done(run, orch_tool_error("internal", "out of memory"),
		               AHP__STATUS__ERR_INTERNAL);
		return;
	}
	x->retried = 0;
	x->unavail_since = 0;
	x->unsent_since = 0;
	/* Its requests go through credproxy, whose log the run's egress
	 * events are read from. */
	if (run->profile->sandbox.network == AHP_NET_PROXY)
		orch_egress_track(run);
	if (mode == ORCH_TOOL_RESUMED) {
		/* The outcome was lost with a restart: ask sandboxd for it, never
		 * run the command again. */
		x->op = OP_FETCH;
	} else {
		orch_run_event(run, "sandbox",
		               json_pack("{s:o, s:b}", "command", orch_json_text(x->command),
		                         "retry", mode == ORCH_TOOL_RETRY),
		               "[sandbox] $ %s%s", x->command,
		               mode == ORCH_TOOL_RETRY ? "   (again: the platform failed it before "
		                                         "it started)"
		                                       : "");
		/* A retry follows a failure before the command started (sandbox
		 * not created, sandboxd absent): start it as if new. sandboxd keys
		 * commands by exec id, so it can never run twice. */
		x->op = x->created ? OP_EXEC : OP_CREATE;
	}
	orch_tool_due(run);
}

static void
s_send(orch_run_t *run)
{
	orch_t *o = run->o;
	exec_state_t *x = s_state(run);
	char exec_id[ORCH_RUN_ID_MAX + 16];
	snprintf(exec_id, sizeof exec_id, "%s-%u", run->id, run->cur_seq);

	Ahp__Sbx__Request req = AHP__SBX__REQUEST__INIT;
	Ahp__Sbx__CreateRequest create = AHP__SBX__CREATE_REQUEST__INIT;
	Ahp__Sbx__Limits limits = AHP__SBX__LIMITS__INIT;
	Ahp__Sbx__ExecRequest exec = AHP__SBX__EXEC_REQUEST__INIT;
	Ahp__Sbx__FetchRequest fetch = AHP__SBX__FETCH_REQUEST__INIT;
	long timeout = EXEC_CONTROL_TIMEOUT_MS;
	const ahp_sandbox_cfg_t *sc = &run->profile->sandbox;

	switch (x->op) {
	case OP_CREATE:
		create.run_id = run->id;
		create.profile = run->profile->name;
		create.limits = &limits;
		create.network = ahp_sandbox_limits(sc, &limits);
		req.body_case = AHP__SBX__REQUEST__BODY_CREATE;
		req.create = &create;
		break;
	case OP_EXEC:
		exec.sandbox_id = run->id;
		exec.exec_id = exec_id;
		exec.command = x->command;
		req.body_case = AHP__SBX__REQUEST__BODY_EXEC;
		req.exec = &exec;
		timeout = (long)sc->timeout_s * 1000 + o->sbx_timeout_ms;
		break;
	case OP_FETCH:
		fetch.sandbox_id = run->id;
		fetch.exec_id = exec_id;
		req.body_case = AHP__SBX__REQUEST__BODY_FETCH;
		req.fetch = &fetch;
		break;
	default:
		return;
	}
	/* The client checks that sandboxd's socket exists before sending; only
	 * a refused send asks again, to say which of the two it was. */
	x->req = orch_sbx_request(o, run, &req, timeout);
	int present = x->req != 0 || orch_sbx_present(o);
	if (present)
		x->used = 1;
	if (x->req == 0) {
		/* Not running or not connected yet: the same grace as a connection
		 * being made. */
		int64_t now = ahp_mono_ms();
		if (x->unsent_since == 0)
			x->unsent_since = now;
		if (now - x->unsent_since < EXEC_CONNECT_GRACE_MS) {
			orch_tool_backoff(run, now + EXEC_CONNECT_RETRY_MS);
			return;
		}
		x->unsent_since = 0;
		const char *why = present ? "sandboxd is not reachable"
		                          : "sandboxd is not running (no socket at its endpoint)";
		if (x->op == OP_FETCH) {
			/* The command may have run before the restart: its outcome is
			 * lost, and it is not run again. */
			orch_exec_reply(run, AHP__STATUS__ERR_UNAVAILABLE, why, NULL);
			return;
		}
		/* Never sent, so it never started: the platform failed, not the
		 * model's command. */
		x->op = OP_NONE;
		orch_run_event(run, "sandbox", json_pack("{s:s}", "message", why),
		               "[sandbox]   → %s", why);
		orch_tool_platform_failed(run, AHP__STATUS__ERR_UNAVAILABLE, "%s", why);
		return;
	}
	x->unsent_since = 0;
	x->started = ahp_mono_ms();
	orch_tool_inflight(run);
}

static void
s_result_event(orch_run_t *run, exec_state_t *x, json_t *res, int recovered)
{
	const char *cwd = json_string_value(json_object_get(res, "cwd"));
	const char *killed = json_string_value(json_object_get(res, "killed_by"));
	const char *out = json_string_value(json_object_get(res, "stdout"));
	char extra[96] = "";
	int truncated = json_is_true(json_object_get(res, "truncated"));
	snprintf(extra, sizeof extra, "%s%s%s", truncated ? ", output truncated" : "",
	         killed != NULL ? ", killed by " : "", killed != NULL ? killed : "");
	orch_run_event(run, "sandbox",
	               json_pack("{s:o?, s:O, s:b}", "command",
	                         x->command ? orch_json_text(x->command) : NULL, "result", res,
	                         "recovered", recovered),
	               "[sandbox]   → exit=%d, stdout=%zu bytes, cwd=%s%s%s",
	               (int)json_integer_value(json_object_get(res, "exit_code")),
	               out ? strlen(out) : 0, cwd && *cwd ? cwd : "(unknown)", extra,
	               recovered ? " (result recovered after a restart)" : "");
}

void
orch_exec_reply(orch_run_t *run, int status, const char *message, const Ahp__Sbx__Reply *reply)
{
	exec_state_t *x = run->tool_state[ORCH_TOOL_EXEC];
	if (x == NULL || run->tool != &orch_tool_exec || !orch_tool_waiting(run))
		return;
	int op = x->op;
	char lost[320];
	x->op = OP_NONE;
	x->req = 0;
	/* The command's requests are in credproxy's log by now. */
	if (op == OP_EXEC || op == OP_FETCH)
		orch_egress_pull(run->o, run->id);
	if (reply != NULL && reply->error != NULL && reply->error->status != 0) {
		status = reply->error->status;
		message = reply->error->message;
	}
	const Ahp__Sbx__ExecResult *er =
	    reply && status == 0 && reply->body_case == AHP__SBX__REPLY__BODY_EXEC ? reply->exec
	                                                                           : NULL;
	/* sandboxd itself said "not now" (stopping, sandbox restarting): ask
	 * again for a while. Safe for Exec too: sandboxd keys commands by exec
	 * id and answers a repeated id from its records (the result, or
	 * interrupted when it had started), never running it twice. */
	int again = reply != NULL && status == AHP__STATUS__ERR_UNAVAILABLE;
	/* A Create lost with the connection is simply asked again: it starts
	 * nothing, and sandboxd reuses the run's workspace. */
	if (op == OP_CREATE && reply == NULL && status == AHP__STATUS__ERR_INTERRUPTED)
		again = 1;
	if (again) {
		int64_t now = ahp_mono_ms();
		if (x->unavail_since == 0)
			x->unavail_since = now;
		if (now - x->unavail_since < ORCH_SBX_UNAVAIL_GRACE_MS) {
			x->op = op == OP_EXEC && !x->created ? OP_CREATE : op;
			orch_tool_backoff(run, now + 200);
			return;
		}
	}
	x->unavail_since = 0;

	if (op == OP_CREATE) {
		if (status == 0) {
			x->created = 1;
			x->op = OP_EXEC;
			orch_tool_due(run);
			return;
		}
		/* No sandbox, so the command never started: a platform failure,
		 * not something the model did. The run fails, resumably. */
		orch_run_event(run, "sandbox",
		               json_pack("{s:s, s:o}", "status", ahp_status_str(status), "message",
		                         orch_json_text(message ? message : "")),
		               "[sandbox]   → no sandbox: %s",
		               message ? message : ahp_status_str(status));
		orch_tool_platform_failed(run, status ? status : AHP__STATUS__ERR_INTERNAL,
		                          "the sandbox could not be created: %s",
		                          message ? message : ahp_status_str(status));
		return;
	}
	if (op == OP_EXEC) {
		if (er != NULL) {
			json_t *res = orch_sbx_result_json(er);
			s_result_event(run, x, res, 0);
			orch_tool_done(run, res, 0);
			return;
		}
		if (status == AHP__STATUS__ERR_NOT_FOUND && !x->retried) {
			/* The sandbox vanished (sandboxd restarted): the command did
			 * not run, so recreate around the same workspace and send it
			 * once more under the same exec id. */
			x->retried = 1;
			x->created = 0;
			x->op = OP_CREATE;
			orch_tool_due(run);
			return;
		}
		json_t *res;
		if (status == AHP__STATUS__ERR_INTERRUPTED && reply == NULL) {
			/* Only the client's connection monitor says this: sandboxd
			 * went away with the command in flight. */
			message = "sandboxd went away while the command ran; its outcome was lost "
			          "and it was not re-run";
		} else if (status == AHP__STATUS__ERR_UNAVAILABLE && message != NULL) {
			/* sandboxd gave up on a command it may have started (it is
			 * stopping): the outcome is unknown and it is not re-run. */
			snprintf(lost, sizeof lost,
			         "%.200s; the command's outcome is unknown and it was not re-run",
			         message);
			status = AHP__STATUS__ERR_INTERRUPTED;
			message = lost;
		}
		if (status == AHP__STATUS__ERR_TIMEOUT)
			res = orch_tool_error(
			    "timeout",
			    "sandboxd did not answer in time; the command may or may not have run");
		else
			res = orch_tool_error(ahp_status_str(status), "%s",
			                      message ? message : "exec failed");
		orch_run_event(run, "sandbox",
		               json_pack("{s:o?, s:O}", "command",
		                         x->command ? orch_json_text(x->command) : NULL, "result",
		                         res),
		               "[sandbox]   → %s: %s",
		               status == AHP__STATUS__ERR_INTERRUPTED ? "interrupted" : "error",
		               message ? message : ahp_status_str(status));
		orch_tool_done(run, res, status ? status : AHP__STATUS__ERR_INTERNAL);
		return;
	}
	if (op == OP_FETCH) {
		if (er != NULL) {
			json_t *res = orch_sbx_result_json(er);
			s_result_event(run, x, res, 1);
			orch_tool_done(run, res, 0);
			return;
		}
		json_t *res =
		    orch_tool_error("interrupted", "the command's outcome was lost (sandboxd or "
		                                   "orchestrator restarted); it was not re-run");
		orch_run_event(run, "sandbox",
		               json_pack("{s:o?, s:O, s:s, s:o?}", "command",
		                         x->command ? orch_json_text(x->command) : NULL, "result",
		                         res, "fetch_status", ahp_status_str(status),
		                         "fetch_message", message ? orch_json_text(message) : NULL),
		               "[sandbox]   → interrupted: outcome lost, not re-run");
		orch_tool_done(run, res, AHP__STATUS__ERR_INTERRUPTED);
	}
}

static void
s_replayed(orch_run_t *run, const json_t *intent)
{
	(void)intent;
	exec_state_t *x = s_state(run);
	if (x != NULL)
		x->used = 1;
}

static void
s_ended(orch_run_t *run)
{
	exec_state_t *x = run->tool_state[ORCH_TOOL_EXEC];
	if (x == NULL)
		return;
	if (x->req != 0) {
		orch_sbx_forget(run->o, x->req);
		x->req = 0;
	}
	/* A failed run keeps its workspace (within sandboxd's retention) so
	 * that `orchctl resume` continues with its files. */
	if (x->used)
		orch_sbx_destroy(run->o, run->id, run->state == ORCH_FAILED);
	orch_egress_ended(run->o, run->id);
	x->used = 0;
	x->created = 0;
}

void
orch_exec_park(orch_run_t *run)
{
	exec_state_t *x = run->tool_state[ORCH_TOOL_EXEC];
	if (x == NULL || !x->used)
		return;
	if (x->req != 0) {
		orch_sbx_forget(run->o, x->req);
		x->req = 0;
	}
	orch_sbx_destroy(run->o, run->id, 1);
	/* x->used stays set: the kept workspace is sandboxd's until the run's
	 * end destroys it (s_ended), whether or not another exec follows. */
	x->created = 0;
}

static void
s_free_state(orch_run_t *run)
{
	exec_state_t *x = run->tool_state[ORCH_TOOL_EXEC];
	if (x == NULL)
		return;
	if (x->req != 0)
		orch_sbx_forget(run->o, x->req);
	free(x->command);
	free(x);
	run->tool_state[ORCH_TOOL_EXEC] = NULL;
}

const orch_tool_t orch_tool_exec = {
    .name = "exec",
    .slot = ORCH_TOOL_EXEC,
    .definition = s_definition,
    .subject = s_subject,
    .start = s_start,
    .send = s_send,
    .replayed = s_replayed,
    .ended = s_ended,
    .free_state = s_free_state,
};
