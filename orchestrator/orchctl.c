/* orchctl: the operator's CLI for the orchestrator (submit, follow, inspect, cancel, resume runs).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zmq.h>

#include "ahp/limit_table.h"
#include "ahp/log.h"
#include "ahp/rpc.h"
#include "ahp/text.h"
#include "ahp/util.h"
#include "approvald.pb-c.h"
#include "orch.h" /* the daemon's limits (ORCH_TASK_MAX, ...): one value, not a copy */
#include "orchestrator.pb-c.h"

/* Exit codes; documented in --help and docs/operations.md. */
enum {
	XC_OK = 0,          /* command done; followed run succeeded */
	XC_RUN_FAILED = 1,  /* followed run failed or was cancelled */
	XC_USAGE = 2,       /* bad command line */
	XC_UNREACHABLE = 3, /* orchestrator not running or did not answer in time */
	XC_NOT_FOUND = 4,   /* unknown run or profile */
	XC_DAEMON = 5,      /* any other error reported by the orchestrator */
};

#define DEFAULT_TIMEOUT_MS 3000
#define IDEMPOTENT_RETRIES 2
/* Long-poll hold; the server caps it at 30 s. Short enough that a Ctrl-C or
 * a dead daemon is noticed quickly, long enough to cost nothing when idle. */
#define EVENTS_WAIT_MS 10000
/* While following, how long an orchestrator that stopped answering (restart,
 * upgrade) is waited for before giving up with exit 3. */
#define RECONNECT_MS 60000
/* Profile names the orchestrator accepts in a list filter. */
#define PROFILE_NAME_MAX 64
/* An inline decision (approvald's DecideRequest) is sent once, never retried (a retry after a
 * lost reply would be told "already decided"), and waited for this long: a commit. */
#define DECIDE_TIMEOUT_MS 10000
/* A reason or an answer typed at the prompt: approvald's comment limit (APPR_TEXT_MAX). */
#define DECIDE_TEXT_MAX 4096
/* While a prompt waits for a line, how often the run is looked at (a decision made
 * elsewhere, a cancel) so that the prompt does not outlive what it asks about. */
#define PROMPT_PEEK_MS 1000

typedef struct {
	const char *home;
	char endpoint[PATH_MAX + 16];
	int json;
	int timeout_ms;
	int detach;
	int follow;
	const char *state;
	const char *profile;
	long limit;
	const char *task_file;
	void *zctx;
	ahp_rpc_client_t *client;
	void *mon;          /* PAIR socket receiving the client socket's monitor events */
	void *mon_of;       /* the client socket mon watches */
	int reconnect;      /* ride out an orchestrator restart (following a run) */
	int64_t lost_since; /* mono ms the orchestrator stopped answering, 0 = answering */
	int no_prompt;      /* --no-prompt */
	int prompt;         /* decide inline: following, stdin and stdout terminals, no --json */
	int quiet;          /* errors are not printed (a look at the run while prompting) */
	char appr_endpoint[PATH_MAX + 16]; /* approvald's humans' socket */
} orchctl_t;

/* What a followed run waits on, from its events (the orchestrator's "[approval] waiting on
 * #N: ..." / "[question] waiting on #N: ..." lines and the decision lines after them). */
typedef struct {
	uint64_t id;       /* the request of the latest waiting event; 0 once decided */
	int question;      /* it is an ask_human question */
	uint64_t prompted; /* the request the prompt was last offered for */
	int hold;          /* decided (or tried to) inline: keep following while the run waits */
} orchctl_wait_t;

static volatile sig_atomic_t s_interrupted = 0;

static void
s_on_sigint(int sig)
{
	(void)sig;
	s_interrupted = 1;
}

static void
s_usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: orchctl [--home DIR] [--json] [--timeout MS] [--endpoint EP]\n"
	    "               [--approvald EP] [--no-prompt] COMMAND ...\n"
	    "\n"
	    "Commands:\n"
	    "  submit PROFILE TASK [--detach]  start a run; prints its id, then follows its\n"
	    "                                  timeline until it ends or waits for a human.\n"
	    "                                  TASK '-' reads the task from stdin; or give\n"
	    "                                  --task-file FILE instead of TASK. The task is\n"
	    "                                  used byte for byte (a trailing newline too)\n"
	    "  status RUN                      state, counters, error or result of a run\n"
	    "  logs RUN [--follow]             the whole timeline of a run (past runs too);\n"
	    "                                  --follow keeps streaming until the run ends\n"
	    "  list [--state S] [--profile P] [--limit N]\n"
	    "                                  recent runs, newest first (default limit 100);\n"
	    "                                  S is queued, running, waiting_approval,\n"
	    "                                  succeeded, failed or cancelled\n"
	    "  cancel RUN                      cancel a queued, running or waiting run; a run\n"
	    "                                  that has ended cannot be (exit 5, invalid_state)\n"
	    "  resume RUN [--detach]           continue a failed run from its failure point,\n"
	    "                                  reusing every journaled step; then follows it\n"
	    "\n"
	    "Options:\n"
	    "  --home DIR      platform home (else $AHP_HOME, else /var/lib/ahp); the\n"
	    "                  orchestrator is reached at ipc://DIR/run/orchestrator.sock\n"
	    "  --endpoint EP   talk to this endpoint instead (e.g. ipc:///path/orch.sock)\n"
	    "  --json          machine-readable output: one JSON object per line, text\n"
	    "                  exactly as stored. Events are "
	    "{\"seq\",\"ts_ms\",\"kind\",\"text\",\n"
	    "                  \"data\"}; a run is {\"run\":{...}}; submit/resume first print\n"
	    "                  {\"run_id\":...}; list prints {\"runs\":[...]}. Every error,\n"
	    "                  usage errors included, is one line on stdout:\n"
	    "                  "
	    "{\"error\":{\"status\":S,\"message\":M,\"detail\":D,\"exit_code\":N}}\n"
	    "                  (S: \"usage\" or the orchestrator's status name, e.g.\n"
	    "                  \"not_found\"), and the same error as text on stderr\n"
	    "  --approvald EP  approvald's humans' socket for inline decisions (default\n"
	    "                  ipc://DIR/run/approvald-human.sock)\n"
	    "  --no-prompt     never offer a decision inline (see Approvals below)\n"
	    "  --timeout MS    per-request timeout, 100..600000 (default %d); status,\n"
	    "                  logs and list are retried twice on timeout; submit, cancel\n"
	    "                  and resume never are. While following a run, an orchestrator\n"
	    "                  that stops answering (a restart) is waited for up to %d s\n"
	    "                  (\"reconnecting\" on stderr)\n"
	    "  --help, --version\n"
	    "\n"
	    "Limits:\n"
	    "  task            1..%d bytes of UTF-8, not only white space, no NUL\n"
	    "  RUN             1..%d characters of A-Z a-z 0-9 - _\n"
	    "  --profile P     at most %d bytes; --limit N: 1..100000 (the orchestrator\n"
	    "                  returns at most %d runs)\n"
	    "\n"
	    "Output: text from the model, tools and the orchestrator is shown with control\n"
	    "characters escaped (ESC as \\x1b, CR as \\x0d, ...); a timeline line is always\n"
	    "one line. Use --json for the exact text.\n"
	    "\n"
	    "Approvals: while following a run (submit, resume, logs --follow) with stdin\n"
	    "and stdout on a terminal and without --json or --no-prompt, a run that waits\n"
	    "for a human is answered inline, as the user running orchctl (approvald checks\n"
	    "that user may decide):\n"
	    "  approve #7? [y]es / [n]o / [s]kip:   n asks for an optional reason\n"
	    "  answer #8:                           one line; an empty line skips\n"
	    "then the run is followed on. Skip (or Ctrl-D) leaves it waiting: submit and\n"
	    "resume stop following as they do off a terminal; decide later with approvald\n"
	    "approve|reject|answer N. If approvald refuses or is unreachable, the reason and\n"
	    "that command are printed and the run is followed on (Ctrl-C stops following;\n"
	    "the run keeps waiting).\n"
	    "\n"
	    "Exit codes:\n"
	    "  0  ok; for submit, resume and logs --follow: the run succeeded (or is\n"
	    "     waiting for a human)\n"
	    "  1  the followed run failed or was cancelled\n"
	    "  2  usage error\n"
	    "  3  orchestrator unreachable or timed out\n"
	    "  4  run or profile not found\n"
	    "  5  any other error reported by the orchestrator\n",
	    DEFAULT_TIMEOUT_MS, RECONNECT_MS / 1000, ORCH_TASK_MAX, ORCH_RUN_ID_MAX - 1,
	    PROFILE_NAME_MAX, ORCH_LIST_MAX);
}

static void
s_json_print(json_t *j)
{
	if (j == NULL)
		return;
	json_dumpf(j, stdout, JSON_COMPACT);
	fputc('\n', stdout);
	fflush(stdout);
	json_decref(j);
}

/* The one error shape (documented in --help and docs/operations.md): with
 * --json, {"error":{"status","message","detail","exit_code"}} on stdout;
 * always "orchctl: STATUS: MESSAGE (DETAIL)" on stderr, with server text
 * escaped for the terminal. Returns code. */
static int
s_fail_as(orchctl_t *self, int code, const char *status, const char *message, const char *detail)
{
	if (self->quiet)
		return code;
	if (message == NULL)
		message = "";
	if (detail == NULL)
		detail = "";
	if (self->json) {
		/* Text that is not UTF-8 (a file name, an argument) is sanitized:
		 * the line must stay valid JSON in the documented shape. */
		char *m = ahp_utf8_sanitize(message, strlen(message), 0, NULL, NULL);
		char *d = ahp_utf8_sanitize(detail, strlen(detail), 0, NULL, NULL);
		s_json_print(json_pack("{s:{s:s,s:s,s:s,s:i}}", "error", "status", status,
		                       "message", m ? m : "", "detail", d ? d : "", "exit_code",
		                       code));
		free(m);
		free(d);
	}
	fprintf(stderr, "orchctl: %s: ", status);
	ahp_term_fputs(message, AHP_TERM_ONE_LINE, stderr);
	if (*detail != '\0') {
		fputs(" (", stderr);
		ahp_term_fputs(detail, AHP_TERM_ONE_LINE, stderr);
		fputc(')', stderr);
	}
	fputc('\n', stderr);
	return code;
}

/* Prints an error in the chosen output mode and returns the exit code. */
static int
s_fail(orchctl_t *self, int code, int status, const char *message, const char *detail)
{
	return s_fail_as(self, code, ahp_status_str(status), message, detail);
}

/* A bad command line: exit 2, in the same shape as every other error. */
static int
s_usage_error(orchctl_t *self, const char *msg)
{
	return s_fail_as(self, XC_USAGE, "usage", msg, "see orchctl --help");
}

static int
s_code_for_status(int status)
{
	switch (status) {
	case AHP__STATUS__ERR_NOT_FOUND:
		return XC_NOT_FOUND;
	case AHP__STATUS__ERR_TIMEOUT:
	case AHP__STATUS__ERR_UNAVAILABLE:
		return XC_UNREACHABLE;
	default:
		return XC_DAEMON;
	}
}

/* Connects lazily. An ipc:// endpoint whose socket file is absent means the
 * daemon is not running: say so at once instead of timing out. */
static int
s_connect(orchctl_t *self)
{
	if (self->client != NULL)
		return 0;
	if (strncmp(self->endpoint, "ipc://", 6) == 0) {
		struct stat st;
		if (stat(self->endpoint + 6, &st) != 0) {
			char msg[PATH_MAX + 128];
			snprintf(msg, sizeof msg,
			         "orchestrator not running: no socket at %s (start it with "
			         "scripts/stack start DIR, or pass --home)",
			         self->endpoint + 6);
			return s_fail(self, XC_UNREACHABLE, AHP__STATUS__ERR_UNAVAILABLE, msg,
			              NULL);
		}
	}
	self->zctx = zmq_ctx_new();
	if (self->zctx == NULL)
		return s_fail(self, XC_DAEMON, AHP__STATUS__ERR_INTERNAL, "zmq_ctx_new failed",
		              NULL);
	/* Sockets get linger 0: a CLI facing a dead daemon must still exit. */
	zmq_ctx_set(self->zctx, ZMQ_BLOCKY, 0);
	self->client = ahp_rpc_client_new(self->zctx, self->endpoint);
	if (self->client == NULL)
		return s_fail(self, XC_UNREACHABLE, AHP__STATUS__ERR_UNAVAILABLE,
		              "cannot connect to the orchestrator", self->endpoint);
	return 0;
}

/* Watches the client socket for disconnections, so that a daemon that goes
 * away while a long-poll is held is noticed at once, not at the timeout. */
static void
s_monitor(orchctl_t *self)
{
	void *sock = ahp_rpc_client_socket(self->client);
	if (sock == NULL || sock == self->mon_of)
		return;
	if (self->mon != NULL)
		zmq_close(self->mon);
	self->mon = NULL;
	self->mon_of = sock;
	char ep[64];
	snprintf(ep, sizeof ep, "inproc://orchctl-mon.%p", sock);
	if (zmq_socket_monitor(sock, ep, ZMQ_EVENT_DISCONNECTED) != 0)
		return; /* no early notice; timeouts still apply */
	void *m = zmq_socket(self->zctx, ZMQ_PAIR);
	int linger = 0;
	if (m == NULL || zmq_setsockopt(m, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
	    zmq_connect(m, ep) != 0) {
		if (m != NULL)
			zmq_close(m);
		return;
	}
	self->mon = m;
}

/* True when the monitor reported a disconnection (drains its events). */
static int
s_monitor_lost(orchctl_t *self)
{
	int lost = 0;
	for (;;) {
		zmq_msg_t f;
		zmq_msg_init(&f);
		if (zmq_msg_recv(&f, self->mon, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&f);
			return lost;
		}
		if (zmq_msg_size(&f) >= 2) {
			uint16_t ev;
			memcpy(&ev, zmq_msg_data(&f), sizeof ev);
			if (ev == ZMQ_EVENT_DISCONNECTED)
				lost = 1;
		}
		int more = zmq_msg_more(&f);
		zmq_msg_close(&f);
		while (more) { /* the address frame */
			zmq_msg_init(&f);
			if (zmq_msg_recv(&f, self->mon, ZMQ_DONTWAIT) < 0)
				more = 0;
			else
				more = zmq_msg_more(&f);
			zmq_msg_close(&f);
		}
	}
}

enum { S_OK, S_TIMEOUT, S_NOSERVER, S_LOST, S_ERROR, S_INTR };

/* One attempt: send, then wait for the reply with our id until timeout_ms.
 * Returns S_OK with the reply in *rbuf, *rlen (caller frees), or why not (transport
 * errors: S_ERROR with *terr and err filled). */
static int
s_attempt(orchctl_t *self, const uint8_t *buf, size_t len, int timeout_ms, uint8_t **rbuf,
          size_t *rlen, int *terr, char *err, size_t errlen)
{
	int64_t deadline = ahp_mono_ms() + timeout_ms, probe_at = ahp_mono_ms() + 150;
	/* With ZMQ_IMMEDIATE a send fails until the connection is up; one not
	 * up after a moment is asked once whether the orchestrator closes it
	 * at accept (a user it does not admit). */
	uint64_t id = ahp_rpc_client_send(self->client, buf, len);
	for (; id == 0; id = ahp_rpc_client_send(self->client, buf, len)) {
		if (errno != EAGAIN && errno != EINTR) {
			snprintf(err, errlen, "send failed: %s", zmq_strerror(errno));
			*terr = AHP__STATUS__ERR_INTERNAL;
			return S_ERROR;
		}
		if (s_interrupted)
			return S_INTR;
		if (probe_at > 0 && ahp_mono_ms() >= probe_at) {
			probe_at = 0;
			if (ahp_rpc_refused_at_accept(self->endpoint, AHP_RPC_REFUSED_WAIT_MS)) {
				ahp_rpc_refused_message(err, errlen);
				*terr = AHP__STATUS__ERR_PERMISSION_DENIED;
				return S_ERROR;
			}
		}
		if (ahp_mono_ms() >= deadline)
			return S_NOSERVER;
		usleep(20 * 1000);
	}
	s_monitor_lost(self); /* events from before this request do not count */
	for (;;) {
		int64_t left = deadline - ahp_mono_ms();
		if (left <= 0)
			return S_TIMEOUT;
		zmq_pollitem_t it[2] = {{ahp_rpc_client_socket(self->client), 0, ZMQ_POLLIN, 0},
		                        {self->mon, 0, ZMQ_POLLIN, 0}};
		int n = zmq_poll(it, self->mon ? 2 : 1, (long)left);
		if (s_interrupted)
			return S_INTR;
		if (n < 0) {
			if (zmq_errno() == EINTR)
				continue;
			snprintf(err, errlen, "poll failed: %s", zmq_strerror(zmq_errno()));
			*terr = AHP__STATUS__ERR_INTERNAL;
			return S_ERROR;
		}
		if (self->mon != NULL && (it[1].revents & ZMQ_POLLIN) && s_monitor_lost(self))
			return S_LOST;
		if (!(it[0].revents & ZMQ_POLLIN))
			continue;
		uint64_t rid = 0;
		uint8_t *b = NULL;
		size_t bl = 0;
		int te = 0;
		int r = ahp_rpc_client_recv(self->client, &rid, &b, &bl, &te);
		if (r < 0) {
			snprintf(err, errlen, "receive failed: %s", zmq_strerror(errno));
			*terr = AHP__STATUS__ERR_INTERNAL;
			return S_ERROR;
		}
		if (r == 0)
			continue;
		if (rid != id) { /* a late reply to an earlier attempt */
			free(b);
			continue;
		}
		if (te != 0) {
			snprintf(err, errlen, "%s", b ? (const char *)b : "");
			free(b);
			*terr = te;
			return S_ERROR;
		}
		*rbuf = b;
		*rlen = bl;
		return S_OK;
	}
}

/* One request/reply. Returns 0 with *reply_p (caller frees with
 * ahp__orch__reply__free_unpacked) or an exit code after printing why.
 * Retries (idempotent requests only) are done here rather than inside
 * ahp_rpc_call so that "no server at all" ends at once, only a server that
 * was there and did not answer in time is asked again, and, while
 * following (self->reconnect), a restarting orchestrator is waited for
 * with a line on stderr instead of silence. */
static int
s_call(orchctl_t *self, const Ahp__Orch__Request *req, int idempotent, int extra_ms,
       Ahp__Orch__Reply **reply_p)
{
	*reply_p = NULL;
	int rc = s_connect(self);
	if (rc != 0)
		return rc;
	s_monitor(self);
	size_t len = ahp__orch__request__get_packed_size(req);
	uint8_t *buf = malloc(len ? len : 1);
	if (buf == NULL)
		return s_fail(self, XC_DAEMON, AHP__STATUS__ERR_INTERNAL, "out of memory", NULL);
	ahp__orch__request__pack(req, buf);
	uint8_t *rbuf = NULL;
	size_t rlen = 0;
	int terr = 0;
	char err[512] = "";
	int r = S_TIMEOUT;
	for (int attempt = 0;; attempt++) {
		terr = 0;
		err[0] = '\0';
		/* Once the daemon is known to be away, poll it briefly: the held
		 * long-poll would only delay noticing that it is back. */
		int t = self->lost_since ? self->timeout_ms : self->timeout_ms + extra_ms;
		r = s_attempt(self, buf, len, t, &rbuf, &rlen, &terr, err, sizeof err);
		if (r == S_OK || r == S_ERROR || r == S_INTR)
			break;
		if (self->reconnect && idempotent) {
			int64_t now = ahp_mono_ms();
			if (self->lost_since == 0) {
				self->lost_since = now;
				fputs("orchctl: orchestrator not answering; reconnecting…\n",
				      stderr);
			}
			if (now - self->lost_since < RECONNECT_MS) {
				if (r == S_LOST || r == S_NOSERVER)
					usleep(100 * 1000);
				continue;
			}
			break;
		}
		/* Only a server that was there and did not answer is asked again. */
		if (!idempotent || r != S_TIMEOUT || attempt >= IDEMPOTENT_RETRIES)
			break;
	}
	free(buf);
	if (r == S_OK && self->lost_since != 0) {
		self->lost_since = 0;
		fputs("orchctl: reconnected\n", stderr);
	}
	switch (r) {
	case S_OK:
		break;
	case S_INTR:
		return XC_UNREACHABLE;
	case S_ERROR:
		return s_fail(self, s_code_for_status(terr), terr, err[0] ? err : "request failed",
		              NULL);
	case S_NOSERVER:
	case S_LOST:
		return s_fail(self, XC_UNREACHABLE, AHP__STATUS__ERR_UNAVAILABLE,
		              "no orchestrator answering", self->endpoint);
	default:
		snprintf(err, sizeof err, "the orchestrator did not answer within %d ms",
		         self->timeout_ms + extra_ms);
		return s_fail(self, XC_UNREACHABLE, AHP__STATUS__ERR_TIMEOUT, err, NULL);
	}
	Ahp__Orch__Reply *reply = ahp__orch__reply__unpack(NULL, rlen, rbuf);
	free(rbuf);
	if (reply == NULL)
		return s_fail(self, XC_DAEMON, AHP__STATUS__ERR_BAD_REQUEST,
		              "unreadable reply from the orchestrator", NULL);
	if (reply->error != NULL && reply->error->status != AHP__STATUS__OK) {
		rc = s_fail(self, s_code_for_status(reply->error->status), reply->error->status,
		            reply->error->message, reply->error->detail);
		ahp__orch__reply__free_unpacked(reply, NULL);
		return rc;
	}
	*reply_p = reply;
	return 0;
}

/* --- output --- */

/* Caller owns the result. */
static json_t *
s_run_json(const Ahp__Orch__RunInfo *r)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:b}", "run_id",
	                 r->run_id, "profile", r->profile, "state", r->state, "task", r->task,
	                 "error", r->error, "result", r->result, "created_ms",
	                 (json_int_t)r->created_ms, "updated_ms", (json_int_t)r->updated_ms,
	                 "turns", (json_int_t)r->turns, "model_calls", (json_int_t)r->model_calls,
	                 "tool_calls", (json_int_t)r->tool_calls, "tokens", (json_int_t)r->tokens,
	                 "resumable", (int)r->resumable);
}

static void
s_print_run_json(const Ahp__Orch__RunInfo *r)
{
	json_t *o = json_object();
	json_object_set_new(o, "run", s_run_json(r));
	s_json_print(o);
}

static void
s_print_event(orchctl_t *self, const Ahp__Orch__Event *ev)
{
	if (self->json) {
		json_t *data = NULL;
		if (ev->data != NULL && *ev->data != '\0')
			data = json_loads(ev->data, JSON_DECODE_ANY, NULL);
		if (data == NULL)
			data = json_string(ev->data ? ev->data : "");
		/* Event text comes from the model and tools: keep it valid JSON even
		 * when the bytes are not UTF-8. */
		json_t *text = json_string(ev->text);
		if (text == NULL)
			text = json_stringn_nocheck(ev->text, strlen(ev->text));
		json_t *o = json_pack("{s:I,s:I,s:s,s:o,s:o}", "seq", (json_int_t)ev->seq, "ts_ms",
		                      (json_int_t)ev->ts_ms, "kind", ev->kind, "text", text, "data",
		                      data ? data : json_null());
		s_json_print(o);
		return;
	}
	/* The final answer is printed once, in full, as the closing "Result:"
	 * line; its event only repeats it (possibly cut short). */
	if (strcmp(ev->kind, "answer") == 0)
		return;
	/* Untrusted text (a model's command, a tool's output): a CR, an erase
	 * sequence or a newline in it must not hide or fake what ran, so each
	 * event is exactly one line with every control character visible. */
	if (ev->text != NULL && *ev->text != '\0')
		ahp_term_fputs(ev->text, AHP_TERM_ONE_LINE, stdout);
	else {
		fputc('[', stdout);
		ahp_term_fputs(ev->kind, AHP_TERM_ONE_LINE, stdout);
		fputc(']', stdout);
	}
	fputc('\n', stdout);
	fflush(stdout);
}

static void
s_fmt_time(int64_t ms, char *buf, size_t len)
{
	if (ms <= 0) {
		snprintf(buf, len, "-");
		return;
	}
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	localtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

/* One "name  value" line of status; value escaped for the terminal (multi-line
 * text keeps its newlines, indented under the value column). */
static void
s_print_field(const char *name, const char *value, int flags)
{
	printf("%-13s", name);
	char *e = ahp_term_escape(value, strlen(value), flags);
	const char *p = e ? e : "?";
	const char *nl = strchr(p, '\n');
	while (nl != NULL) {
		printf("%.*s\n%13s", (int)(nl - p), p, "");
		p = nl + 1;
		nl = strchr(p, '\n');
	}
	printf("%s\n", p);
	free(e);
}

static void
s_print_status(const Ahp__Orch__RunInfo *r)
{
	char c[32], u[32];
	s_fmt_time(r->created_ms, c, sizeof c);
	s_fmt_time(r->updated_ms, u, sizeof u);
	s_print_field("run", r->run_id, AHP_TERM_ONE_LINE);
	s_print_field("profile", r->profile, AHP_TERM_ONE_LINE);
	s_print_field("state", r->state, AHP_TERM_ONE_LINE);
	s_print_field("task", r->task, 0);
	printf("created      %s\n", c);
	printf("updated      %s\n", u);
	printf("turns        %u\n", r->turns);
	printf("model calls  %u\n", r->model_calls);
	printf("tool calls   %u\n", r->tool_calls);
	printf("tokens       %llu\n", (unsigned long long)r->tokens);
	if (r->error != NULL && *r->error != '\0')
		s_print_field("error", r->error, AHP_TERM_ONE_LINE);
	if (strcmp(r->state, "failed") == 0)
		printf("resumable    %s\n",
		       r->resumable ? "yes" : "no (it would fail the same way)");
	if (r->result != NULL && *r->result != '\0')
		s_print_field("result", r->result, 0);
}

/* Prints at most max_cols characters of s on one line, escaped for the
 * terminal (the escaper's output is valid UTF-8, so counting lead bytes
 * counts characters). */
static void
s_print_cell(const char *s, size_t max_cols)
{
	char *e = ahp_term_escape(s, strlen(s), AHP_TERM_ONE_LINE);
	if (e == NULL)
		return;
	const unsigned char *p;
	size_t total = 0;
	for (p = (const unsigned char *)e; *p != '\0'; p++)
		if ((*p & 0xc0) != 0x80)
			total++;
	size_t limit = total > max_cols ? max_cols - 1 : total;
	size_t cols = 0;
	for (p = (const unsigned char *)e; *p != '\0'; p++) {
		if ((*p & 0xc0) != 0x80) {
			if (cols == limit)
				break;
			cols++;
		}
		fputc(*p, stdout);
	}
	if (total > max_cols)
		fputs("…", stdout);
	free(e);
}

static int
s_is_terminal(const char *state)
{
	return strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
	       strcmp(state, "cancelled") == 0;
}

static int
s_is_waiting(const char *state)
{
	return strncmp(state, "waiting", 7) == 0;
}

/* The closing lines of a followed run, and the exit code it maps to. */
static int
s_finish(orchctl_t *self, const Ahp__Orch__RunInfo *r)
{
	int code = XC_OK;
	if (strcmp(r->state, "failed") == 0 || strcmp(r->state, "cancelled") == 0)
		code = XC_RUN_FAILED;
	if (self->json) {
		s_print_run_json(r);
		return code;
	}
	if (strcmp(r->state, "succeeded") == 0) {
		/* A multi-line answer's trailing newlines would only add blank lines. */
		size_t n = strlen(r->result);
		while (n > 0 && (r->result[n - 1] == '\n' || r->result[n - 1] == '\r'))
			n--;
		char *e = ahp_term_escape(r->result, n, 0);
		printf("Result: %s\n", e ? e : "?");
		free(e);
	} else if (strcmp(r->state, "failed") == 0) {
		printf("Run %s failed: ", r->run_id);
		ahp_term_fputs(r->error[0] ? r->error : "no reason recorded", AHP_TERM_ONE_LINE,
		               stdout);
		/* A run that hit max_turns or max_model_calls would only hit the
		 * same limit again, unless the profile's limit is raised first
		 * (resume binds the profile as loaded now). */
		if (r->resumable)
			printf("\n(resume it with: orchctl resume %s)\n", r->run_id);
		else if (strncmp(r->error, ORCH_WHY_MAX_TURNS, strlen(ORCH_WHY_MAX_TURNS)) == 0 ||
		         strncmp(r->error, ORCH_WHY_MAX_MODEL_CALLS,
		                 strlen(ORCH_WHY_MAX_MODEL_CALLS)) == 0)
			printf(
			    "\n(a limit of the profile was reached: resuming as it is stops at the "
			    "same limit; raise the limit in the profile, reload, then resume)\n");
		else
			printf("\n(resuming cannot help: it would fail the same way)\n");
	} else if (strcmp(r->state, "cancelled") == 0)
		printf("Run %s was cancelled.\n", r->run_id);
	else if (s_is_waiting(r->state))
		printf("Run %s is %s; follow it later with: orchctl logs --follow %s\n", r->run_id,
		       r->state, r->run_id);
	fflush(stdout);
	return code;
}

/* --- inline decisions --- */

/* "#N" at p: N (>= 1), or 0. */
static uint64_t
s_parse_hash_id(const char *p)
{
	if (p == NULL || *p != '#' || p[1] < '0' || p[1] > '9')
		return 0;
	char *end = NULL;
	errno = 0;
	unsigned long long v = strtoull(p + 1, &end, 10);
	if (errno != 0 || end == p + 1)
		return 0;
	return (uint64_t)v;
}

/* Follows what the run waits on through one event. A waiting event is kind "approval" or
 * "question" whose text starts "[approval] waiting on #N" / "[question] waiting on #N" (its
 * data's "id", when present, wins); a later one starting "[approval] #N " / "[question] #N "
 * (the decision line, e.g. "[approval] #7 approved by alice: ...") means N was decided.
 * Only the start of the text counts: the rest quotes the call's arguments or a comment,
 * which must not pass for a request the user would then be asked about. */
static void
s_track(orchctl_wait_t *w, const Ahp__Orch__Event *ev)
{
	int question = strcmp(ev->kind, "question") == 0;
	if (!question && strcmp(ev->kind, "approval") != 0)
		return;
	const char *tag = question ? "[question] " : "[approval] ";
	const char *text = ev->text != NULL ? ev->text : "";
	if (strncmp(text, tag, strlen(tag)) != 0)
		return;
	text += strlen(tag);
	static const char waiting[] = "waiting on ";
	if (strncmp(text, waiting, sizeof waiting - 1) != 0) {
		uint64_t named = s_parse_hash_id(text);
		if (named != 0 && named == w->id)
			w->id = 0;
		return;
	}
	uint64_t id = s_parse_hash_id(text + sizeof waiting - 1);
	if (id == 0)
		return;
	if (ev->data != NULL && *ev->data == '{') {
		json_t *d = json_loads(ev->data, 0, NULL);
		json_t *jid = d != NULL ? json_object_get(d, "id") : NULL;
		if (json_is_integer(jid) && json_integer_value(jid) > 0)
			id = (uint64_t)json_integer_value(jid);
		json_decref(d);
	}
	if (id != w->id)
		w->hold = 0; /* a new request: what was held for is over */
	w->id = id;
	w->question = question;
}

/* Why a call to approvald's humans' socket at ep failed (status and err from ahp_rpc_call). */
static void
s_call_why(const char *ep, int status, const char *err, char *why, size_t whylen)
{
	if (status == AHP__STATUS__ERR_PERMISSION_DENIED) {
		struct passwd *pw = getpwuid(getuid());
		snprintf(why, whylen, "approvald refused: %s may not decide (%s)",
		         pw != NULL ? pw->pw_name : "this user", err);
	} else if (status == AHP__STATUS__ERR_TIMEOUT || status == AHP__STATUS__ERR_UNAVAILABLE) {
		snprintf(why, whylen, "approvald not reachable at %s: %s", ep, err);
	} else {
		snprintf(why, whylen, "approvald: %s: %s", ahp_status_str(status), err);
	}
}

/* 0 when approvald's request #id belongs to run_id; else -1 with why. The id comes from the
 * run's waiting line, which may be older than approvald's database (a database made anew
 * numbers its requests from 1 again): #id must not decide another run's request. */
static int
s_request_of_run(ahp_rpc_client_t *cl, const char *ep, uint64_t id, const char *run_id, char *why,
                 size_t whylen)
{
	Ahp__Appr__ShowRequest sh = AHP__APPR__SHOW_REQUEST__INIT;
	sh.id = id;
	Ahp__Appr__HumanRequest req = AHP__APPR__HUMAN_REQUEST__INIT;
	req.body_case = AHP__APPR__HUMAN_REQUEST__BODY_SHOW;
	req.show = &sh;
	size_t len = ahp__appr__human_request__get_packed_size(&req);
	uint8_t buf[64];
	if (len > sizeof buf) {
		snprintf(why, whylen, "cannot encode a show of #%" PRIu64, id);
		return -1;
	}
	ahp__appr__human_request__pack(&req, buf);
	uint8_t *rbuf = NULL;
	size_t rlen = 0;
	int status = 0;
	char err[512] = "";
	if (ahp_rpc_call(cl, buf, len, DECIDE_TIMEOUT_MS, 1, 1, &rbuf, &rlen, &status, err,
	                 sizeof err) != 0) {
		s_call_why(ep, status, err, why, whylen);
		return -1;
	}
	Ahp__Appr__HumanReply *hr = ahp__appr__human_reply__unpack(NULL, rlen, rbuf);
	free(rbuf);
	int rc = -1;
	if (hr == NULL)
		snprintf(why, whylen, "approvald's reply is unreadable");
	else if (hr->error != NULL && hr->error->status != AHP__STATUS__OK)
		snprintf(why, whylen, "approvald refused: %s",
		         hr->error->message != NULL && *hr->error->message
		             ? hr->error->message
		             : ahp_status_str(hr->error->status));
	else if (hr->request == NULL || hr->request->run_id == NULL)
		snprintf(why, whylen, "approvald's reply has no request");
	else if (strcmp(hr->request->run_id, run_id) != 0)
		snprintf(why, whylen,
		         "approvald's #%" PRIu64 " is for run %.64s, not run %.64s (its database "
		         "is newer than the waiting line); not decided",
		         id, hr->request->run_id, run_id);
	else
		rc = 0;
	if (hr != NULL)
		ahp__appr__human_reply__free_unpacked(hr, NULL);
	return rc;
}

/* Sends DecideRequest{id, state, comment} to approvald's humans' socket as the user running
 * orchctl, once (not retried), after checking that #id is run_id's; prints the outcome. 0 when
 * recorded, -1 after printing why not with the CLI command that does the same. */
static int
s_decide(orchctl_t *self, const char *run_id, uint64_t id, int state, const char *comment)
{
	const char *ep = self->appr_endpoint;
	char why[PATH_MAX + 1024] = "";
	int status = 0;
	Ahp__Appr__HumanReply *hr = NULL;
	struct stat st;
	if (strncmp(ep, "ipc://", 6) == 0 && stat(ep + 6, &st) != 0) {
		snprintf(why, sizeof why, "approvald not running (no socket at %s)", ep + 6);
	} else {
		Ahp__Appr__DecideRequest d = AHP__APPR__DECIDE_REQUEST__INIT;
		d.id = id;
		d.state = state;
		d.comment = (char *)comment;
		Ahp__Appr__HumanRequest req = AHP__APPR__HUMAN_REQUEST__INIT;
		req.body_case = AHP__APPR__HUMAN_REQUEST__BODY_DECIDE;
		req.decide = &d;
		size_t len = ahp__appr__human_request__get_packed_size(&req);
		uint8_t *buf = malloc(len ? len : 1);
		ahp_rpc_client_t *cl = buf != NULL ? ahp_rpc_client_new(self->zctx, ep) : NULL;
		uint8_t *rbuf = NULL;
		size_t rlen = 0;
		char err[512] = "";
		if (cl == NULL) {
			snprintf(why, sizeof why, "cannot connect to approvald at %s", ep);
		} else if (s_request_of_run(cl, ep, id, run_id, why, sizeof why) != 0) {
			/* why says whose request #id is (or why it could not be read) */
		} else {
			ahp__appr__human_request__pack(&req, buf);
			if (ahp_rpc_call(cl, buf, len, DECIDE_TIMEOUT_MS, 0, 0, &rbuf, &rlen,
			                 &status, err, sizeof err) != 0) {
				s_call_why(ep, status, err, why, sizeof why);
			} else if ((hr = ahp__appr__human_reply__unpack(NULL, rlen, rbuf)) ==
			           NULL) {
				snprintf(why, sizeof why, "approvald's reply is unreadable");
			} else if (hr->error != NULL && hr->error->status != AHP__STATUS__OK) {
				snprintf(why, sizeof why, "approvald refused: %s",
				         hr->error->message != NULL && *hr->error->message
				             ? hr->error->message
				             : ahp_status_str(hr->error->status));
			} else if (hr->request == NULL) {
				snprintf(why, sizeof why, "approvald's reply has no request");
			}
		}
		free(rbuf);
		free(buf);
		ahp_rpc_client_destroy(&cl);
	}
	if (why[0] != '\0') {
		if (hr != NULL)
			ahp__appr__human_reply__free_unpacked(hr, NULL);
		fputs("orchctl: ", stderr);
		ahp_term_fputs(why, AHP_TERM_ONE_LINE, stderr);
		if (state == AHP__APPR__STATE__STATE_ANSWERED)
			fprintf(stderr, "\n(answer it with: approvald answer %" PRIu64 " TEXT)\n",
			        id);
		else
			fprintf(stderr,
			        "\n(decide with: approvald approve %" PRIu64
			        " | approvald reject %" PRIu64 ")\n",
			        id, id);
		fflush(stderr);
		return -1;
	}
	const Ahp__Appr__ApprovalRequest *r = hr->request;
	const char *what = r->state == AHP__APPR__STATE__STATE_APPROVED   ? "approved"
	                   : r->state == AHP__APPR__STATE__STATE_REJECTED ? "rejected"
	                   : r->state == AHP__APPR__STATE__STATE_ANSWERED ? "answered"
	                                                                  : "decided";
	printf("%s #%" PRIu64 " by ", what, r->id);
	ahp_term_fputs(r->decision != NULL ? r->decision->by : "?", AHP_TERM_ONE_LINE, stdout);
	if (r->state == AHP__APPR__STATE__STATE_REJECTED && r->decision != NULL &&
	    r->decision->comment != NULL && *r->decision->comment != '\0') {
		fputs(": ", stdout);
		ahp_term_fputs(r->decision->comment, AHP_TERM_ONE_LINE, stdout);
	}
	fputc('\n', stdout);
	fflush(stdout);
	ahp__appr__human_reply__free_unpacked(hr, NULL);
	return 0;
}

/* Prints a page of events and follows what the run waits on through them. */
static void
s_take_events(orchctl_t *self, const Ahp__Orch__EventsReply *ev, uint64_t *after, orchctl_wait_t *w)
{
	for (size_t i = 0; i < ev->n_events; i++) {
		s_print_event(self, ev->events[i]);
		s_track(w, ev->events[i]);
		if (ev->events[i]->seq > *after)
			*after = ev->events[i]->seq;
	}
}

/* While a prompt is open: one quick look at the run (no wait, errors not printed). New
 * events are printed on a line of their own (*broke set once the prompt line is ended).
 * 1 when the prompt is moot: its request was decided elsewhere or the run no longer waits. */
static int
s_peek(orchctl_t *self, const char *run_id, uint64_t *after, orchctl_wait_t *w, int *broke)
{
	uint64_t id = w->id;
	Ahp__Orch__Request req = AHP__ORCH__REQUEST__INIT;
	Ahp__Orch__EventsRequest er = AHP__ORCH__EVENTS_REQUEST__INIT;
	er.run_id = (char *)run_id;
	er.after_seq = *after;
	req.body_case = AHP__ORCH__REQUEST__BODY_EVENTS;
	req.events = &er;
	Ahp__Orch__Reply *reply = NULL;
	int reconnect = self->reconnect;
	self->quiet = 1;
	self->reconnect = 0;
	int rc = s_call(self, &req, 0, 0, &reply);
	self->quiet = 0;
	self->reconnect = reconnect;
	if (rc != 0)
		return 0; /* the orchestrator is away: the prompt stays; following notices */
	int moot = 0;
	if (reply->body_case == AHP__ORCH__REPLY__BODY_EVENTS && reply->events != NULL &&
	    reply->events->run != NULL) {
		if (reply->events->n_events > 0 && !*broke) {
			fputc('\n', stdout);
			*broke = 1;
		}
		s_take_events(self, reply->events, after, w);
		moot = w->id != id || !s_is_waiting(reply->events->run->state);
	}
	ahp__orch__reply__free_unpacked(reply, NULL);
	return moot;
}

enum { L_LINE, L_EOF, L_INTR, L_MOOT, L_LONG };

/* Reads one line from the terminal (stdin, canonical mode: readable once a whole line is
 * typed) into buf (len bytes, NUL-terminated, without its line break), looking at the run
 * every PROMPT_PEEK_MS meanwhile. L_LINE, L_EOF (Ctrl-D), L_INTR (Ctrl-C), L_MOOT (see
 * s_peek; typed-ahead input is discarded) or L_LONG (a line of len bytes or more, read to
 * its end and dropped). */
static int
s_read_line(orchctl_t *self, const char *run_id, uint64_t *after, orchctl_wait_t *w, char *buf,
            size_t len, const char *prompt)
{
	size_t n = 0;
	int too_long = 0;
	fputs(prompt, stdout);
	fflush(stdout);
	for (;;) {
		if (s_interrupted)
			return L_INTR;
		struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};
		int r = poll(&pfd, 1, PROMPT_PEEK_MS);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return L_EOF;
		}
		if (r == 0) {
			int broke = 0;
			if (s_peek(self, run_id, after, w, &broke)) {
				tcflush(STDIN_FILENO, TCIFLUSH);
				return L_MOOT;
			}
			if (broke) { /* events were printed: ask again below them */
				fputs(prompt, stdout);
				fflush(stdout);
			}
			continue;
		}
		char c[512];
		ssize_t got = read(STDIN_FILENO, c, sizeof c);
		if (got < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return L_EOF;
		}
		if (got == 0)
			return n > 0 ? (buf[n] = '\0', L_LINE) : L_EOF;
		for (ssize_t i = 0; i < got; i++) {
			if (c[i] == '\n') {
				if (too_long)
					return L_LONG;
				while (n > 0 && buf[n - 1] == '\r')
					n--;
				buf[n] = '\0';
				return L_LINE;
			}
			if (n + 1 >= len)
				too_long = 1;
			else
				buf[n++] = c[i];
		}
	}
}

enum { P_DECIDED, P_REFUSED, P_SKIPPED, P_MOOT, P_INTR };

/* Offers the decision of w->id on the terminal and sends it. */
static int
s_prompt(orchctl_t *self, const char *run_id, uint64_t *after, orchctl_wait_t *w)
{
	uint64_t id = w->id;
	char line[DECIDE_TEXT_MAX + 2];
	char prompt[96];
	int state = AHP__APPR__STATE__STATE_ANSWERED;
	const char *comment = "";
	if (w->question)
		snprintf(prompt, sizeof prompt, "answer #%" PRIu64 ": ", id);
	else
		snprintf(prompt, sizeof prompt,
		         "approve #%" PRIu64 "? [y]es / [n]o / [s]kip: ", id);
	/* What was typed before this prompt was shown (a "y" typed twice, or ahead while the
	 * run went on to its next gated call) must not decide a request the user has not
	 * seen: it is discarded. */
	tcflush(STDIN_FILENO, TCIFLUSH);
	for (;;) {
		int r = s_read_line(self, run_id, after, w, line, sizeof line, prompt);
		if (r == L_INTR)
			return P_INTR;
		if (r == L_MOOT)
			return P_MOOT;
		if (r == L_EOF) {
			fputc('\n', stdout);
			break;
		}
		if (r == L_LONG) {
			printf("at most %d bytes\n", DECIDE_TEXT_MAX);
			continue;
		}
		if (w->question) {
			if (ahp_text_blank(line))
				break;
			if (!ahp_utf8_valid(line, strlen(line), 0)) {
				printf("the answer is not valid UTF-8\n");
				continue;
			}
			comment = line;
			return s_decide(self, run_id, id, state, comment) == 0 ? P_DECIDED
			                                                       : P_REFUSED;
		}
		char *a = line;
		while (*a == ' ' || *a == '\t')
			a++;
		size_t al = strlen(a);
		while (al > 0 && (a[al - 1] == ' ' || a[al - 1] == '\t'))
			a[--al] = '\0';
		if (strcasecmp(a, "y") == 0 || strcasecmp(a, "yes") == 0) {
			state = AHP__APPR__STATE__STATE_APPROVED;
		} else if (strcasecmp(a, "n") == 0 || strcasecmp(a, "no") == 0) {
			state = AHP__APPR__STATE__STATE_REJECTED;
			for (;;) {
				r = s_read_line(self, run_id, after, w, line, sizeof line,
				                "reason: ");
				if (r == L_INTR)
					return P_INTR;
				if (r == L_MOOT)
					return P_MOOT;
				if (r == L_LONG) {
					printf("at most %d bytes\n", DECIDE_TEXT_MAX);
					continue;
				}
				if (r == L_EOF)
					line[0] = '\0';
				if (!ahp_utf8_valid(line, strlen(line), 0)) {
					printf("the reason is not valid UTF-8\n");
					continue;
				}
				break;
			}
			comment = line;
		} else if (strcasecmp(a, "s") == 0 || strcasecmp(a, "skip") == 0) {
			break;
		} else {
			printf("y approves, n rejects, s skips (the run keeps waiting)\n");
			continue;
		}
		return s_decide(self, run_id, id, state, comment) == 0 ? P_DECIDED : P_REFUSED;
	}
	if (w->question)
		printf("skipped; answer later with: approvald answer %" PRIu64 " TEXT\n", id);
	else
		printf("skipped; decide later with: approvald approve %" PRIu64
		       " | approvald reject %" PRIu64 "\n",
		       id, id);
	fflush(stdout);
	return P_SKIPPED;
}

/* Streams events of run_id after *after. Stops when the run has ended (or,
 * when stop_on_wait, waits for a human) and nothing is left to print, or
 * after one page when !follow. Prints the closing lines when `finish`.
 * Following with self->prompt, a run that waits on a request is offered to
 * the user first (s_prompt); decided (or refused by approvald) inline, the
 * run is followed on even when stop_on_wait. */
static int
s_stream(orchctl_t *self, const char *run_id, uint64_t *after, int follow, int stop_on_wait,
         int finish)
{
	int drain = 0;
	orchctl_wait_t w = {0};
	self->reconnect = follow;
	for (;;) {
		if (s_interrupted) {
			fprintf(
			    stderr,
			    "\norchctl: stopped following; the run goes on (orchctl logs --follow "
			    "%s)\n",
			    run_id);
			return 130;
		}
		Ahp__Orch__Request req = AHP__ORCH__REQUEST__INIT;
		Ahp__Orch__EventsRequest er = AHP__ORCH__EVENTS_REQUEST__INIT;
		er.run_id = (char *)run_id;
		er.after_seq = *after;
		er.wait_ms = (follow && !drain) ? EVENTS_WAIT_MS : 0;
		req.body_case = AHP__ORCH__REQUEST__BODY_EVENTS;
		req.events = &er;
		Ahp__Orch__Reply *reply = NULL;
		int rc = s_call(self, &req, 1, (int)er.wait_ms, &reply);
		if (rc != 0) {
			if (s_interrupted)
				continue;
			return rc;
		}
		if (reply->body_case != AHP__ORCH__REPLY__BODY_EVENTS || reply->events == NULL ||
		    reply->events->run == NULL) {
			ahp__orch__reply__free_unpacked(reply, NULL);
			return s_fail(self, XC_DAEMON, AHP__STATUS__ERR_BAD_REQUEST,
			              "unexpected reply to an events request", NULL);
		}
		const Ahp__Orch__EventsReply *ev = reply->events;
		s_take_events(self, ev, after, &w);
		const char *state = ev->run->state;
		int waiting = s_is_waiting(state);
		if (follow && self->prompt && waiting && w.id != 0 && w.prompted != w.id) {
			/* All of the page is shown first: the waiting line says what is asked. */
			ahp__orch__reply__free_unpacked(reply, NULL);
			w.prompted = w.id;
			int p = s_prompt(self, run_id, after, &w);
			w.hold = p == P_DECIDED || p == P_REFUSED;
			drain = 1; /* look again at once: skipped, submit ends now */
			continue;
		}
		int done_state = s_is_terminal(state) || (stop_on_wait && waiting && !w.hold);
		int done = 0;
		if (ev->n_events == 0 && (done_state || !follow))
			done = 1;
		/* One more non-waiting poll after the end: events written together
		 * with the final state change must not be missed. */
		drain = done_state;
		if (done) {
			rc = finish ? s_finish(self, ev->run) : XC_OK;
			ahp__orch__reply__free_unpacked(reply, NULL);
			return rc;
		}
		ahp__orch__reply__free_unpacked(reply, NULL);
	}
}

/* --- commands --- */

/* Reads a task from f (stdin or --task-file) into a new string of at most
 * ORCH_TASK_MAX + 1 bytes (one more than allowed, so that too long is seen);
 * *len gets its length (NUL bytes in it included). NULL on a read error. */
static char *
s_read_task(FILE *f, size_t *len)
{
	char *buf = malloc(ORCH_TASK_MAX + 2);
	if (buf == NULL)
		return NULL;
	size_t n = fread(buf, 1, ORCH_TASK_MAX + 1, f);
	if (ferror(f)) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

/* The task checks the orchestrator makes too, done first so that a bad task
 * is a usage error (exit 2) with its reason. */
static int
s_check_task(orchctl_t *self, const char *task, size_t len)
{
	char msg[128];
	if (len == 0)
		return s_usage_error(self, "the task is empty");
	if (len > ORCH_TASK_MAX) {
		snprintf(msg, sizeof msg, "the task is longer than %d bytes", ORCH_TASK_MAX);
		return s_usage_error(self, msg);
	}
	if (memchr(task, '\0', len) != NULL)
		return s_usage_error(self, "the task contains a NUL byte");
	if (!ahp_utf8_valid(task, len, 0))
		return s_usage_error(self, "the task is not valid UTF-8");
	if (ahp_text_blank(task))
		return s_usage_error(self, "the task is only white space");
	return 0;
}

static int
s_cmd_submit(orchctl_t *self, const char *profile, const char *task)
{
	Ahp__Orch__Request req = AHP__ORCH__REQUEST__INIT;
	Ahp__Orch__SubmitRequest sr = AHP__ORCH__SUBMIT_REQUEST__INIT;
	sr.profile = (char *)profile;
	sr.task = (char *)task;
	req.body_case = AHP__ORCH__REQUEST__BODY_SUBMIT;
	req.submit = &sr;
	Ahp__Orch__Reply *reply = NULL;
	/* Not idempotent: a retried submit could start the run twice. */
	int rc = s_call(self, &req, 0, 0, &reply);
	if (rc != 0)
		return rc;
	if (reply->body_case != AHP__ORCH__REPLY__BODY_SUBMIT || reply->submit == NULL ||
	    reply->submit->run_id[0] == '\0') {
		ahp__orch__reply__free_unpacked(reply, NULL);
		return s_fail(self, XC_DAEMON, AHP__STATUS__ERR_BAD_REQUEST,
		              "unexpected reply to submit", NULL);
	}
	char run_id[128];
	ahp_strlcpy(run_id, reply->submit->run_id, sizeof run_id);
	ahp__orch__reply__free_unpacked(reply, NULL);
	if (self->json)
		s_json_print(json_pack("{s:s}", "run_id", run_id));
	else
		printf("%s\n", run_id);
	fflush(stdout);
	if (self->detach)
		return XC_OK;
	uint64_t after = 0;
	return s_stream(self, run_id, &after, 1, 1, 1);
}

static int
s_cmd_status(orchctl_t *self, const char *run_id)
{
	Ahp__Orch__Request req = AHP__ORCH__REQUEST__INIT;
	Ahp__Orch__RunRef ref = AHP__ORCH__RUN_REF__INIT;
	ref.run_id = (char *)run_id;
	req.body_case = AHP__ORCH__REQUEST__BODY_STATUS;
	req.status = &ref;
	Ahp__Orch__Reply *reply = NULL;
	int rc = s_call(self, &req, 1, 0, &reply);
	if (rc != 0)
		return rc;
	if (reply->body_case != AHP__ORCH__REPLY__BODY_STATUS || reply->status == NULL) {
		ahp__orch__reply__free_unpacked(reply, NULL);
		return s_fail(self, XC_DAEMON, AHP__STATUS__ERR_BAD_REQUEST,
		              "unexpected reply to status", NULL);
	}
	if (self->json)
		s_print_run_json(reply->status);
	else
		s_print_status(reply->status);
	ahp__orch__reply__free_unpacked(reply, NULL);
	return XC_OK;
}

static int
s_cmd_logs(orchctl_t *self, const char *run_id)
{
	uint64_t after = 0;
	/* Without --follow: page through everything stored, then the run line
	 * (JSON) or the result/error line, and stop. */
	if (!self->follow) {
		int rc = s_stream(self, run_id, &after, 0, 0, 1);
		return rc == XC_RUN_FAILED ? XC_OK : rc;
	}
	return s_stream(self, run_id, &after, 1, 0, 1);
}

static int
s_cmd_list(orchctl_t *self)
{
	Ahp__Orch__Request req = AHP__ORCH__REQUEST__INIT;
	Ahp__Orch__ListRequest lr = AHP__ORCH__LIST_REQUEST__INIT;
	lr.state = (char *)(self->state ? self->state : "");
	lr.profile = (char *)(self->profile ? self->profile : "");
	lr.limit = (uint32_t)self->limit;
	req.body_case = AHP__ORCH__REQUEST__BODY_LIST;
	req.list = &lr;
	Ahp__Orch__Reply *reply = NULL;
	int rc = s_call(self, &req, 1, 0, &reply);
	if (rc != 0)
		return rc;
	if (reply->body_case != AHP__ORCH__REPLY__BODY_LIST || reply->list == NULL) {
		ahp__orch__reply__free_unpacked(reply, NULL);
		return s_fail(self, XC_DAEMON, AHP__STATUS__ERR_BAD_REQUEST,
		              "unexpected reply to list", NULL);
	}
	const Ahp__Orch__ListReply *l = reply->list;
	if (self->json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < l->n_runs; i++)
			json_array_append_new(arr, s_run_json(l->runs[i]));
		json_t *o = json_object();
		json_object_set_new(o, "runs", arr);
		s_json_print(o);
	} else {
		printf("%-22s %-20s %-17s %-19s %5s  %s\n", "RUN", "PROFILE", "STATE", "UPDATED",
		       "CALLS", "TASK");
		for (size_t i = 0; i < l->n_runs; i++) {
			const Ahp__Orch__RunInfo *r = l->runs[i];
			char u[32];
			s_fmt_time(r->updated_ms, u, sizeof u);
			printf("%-22s %-20s %-17s %-19s %5u  ", r->run_id, r->profile, r->state, u,
			       r->model_calls);
			s_print_cell(r->task, 48);
			fputc('\n', stdout);
		}
	}
	ahp__orch__reply__free_unpacked(reply, NULL);
	return XC_OK;
}

static int
s_cmd_cancel(orchctl_t *self, const char *run_id)
{
	Ahp__Orch__Request req = AHP__ORCH__REQUEST__INIT;
	Ahp__Orch__RunRef ref = AHP__ORCH__RUN_REF__INIT;
	ref.run_id = (char *)run_id;
	req.body_case = AHP__ORCH__REQUEST__BODY_CANCEL;
	req.cancel = &ref;
	Ahp__Orch__Reply *reply = NULL;
	/* Not retried: a second cancel of a run the first one already ended
	 * would report invalid_state for a request that worked. */
	int rc = s_call(self, &req, 0, 0, &reply);
	if (rc != 0)
		return rc;
	if (reply->body_case != AHP__ORCH__REPLY__BODY_CANCEL || reply->cancel == NULL) {
		ahp__orch__reply__free_unpacked(reply, NULL);
		return s_fail(self, XC_DAEMON, AHP__STATUS__ERR_BAD_REQUEST,
		              "unexpected reply to cancel", NULL);
	}
	if (self->json)
		s_print_run_json(reply->cancel);
	else
		printf("%s %s\n", reply->cancel->run_id, reply->cancel->state);
	ahp__orch__reply__free_unpacked(reply, NULL);
	return XC_OK;
}

/* Highest event sequence stored for a run so far (pages through them). */
static int
s_last_seq(orchctl_t *self, const char *run_id, uint64_t *after)
{
	for (;;) {
		Ahp__Orch__Request req = AHP__ORCH__REQUEST__INIT;
		Ahp__Orch__EventsRequest er = AHP__ORCH__EVENTS_REQUEST__INIT;
		er.run_id = (char *)run_id;
		er.after_seq = *after;
		req.body_case = AHP__ORCH__REQUEST__BODY_EVENTS;
		req.events = &er;
		Ahp__Orch__Reply *reply = NULL;
		int rc = s_call(self, &req, 1, 0, &reply);
		if (rc != 0)
			return rc;
		size_t n = 0;
		if (reply->body_case == AHP__ORCH__REPLY__BODY_EVENTS && reply->events != NULL) {
			n = reply->events->n_events;
			for (size_t i = 0; i < n; i++)
				if (reply->events->events[i]->seq > *after)
					*after = reply->events->events[i]->seq;
		}
		ahp__orch__reply__free_unpacked(reply, NULL);
		if (n == 0)
			return XC_OK;
	}
}

static int
s_cmd_resume(orchctl_t *self, const char *run_id)
{
	/* Follow from where the timeline stands now, so the old part is not
	 * printed again. Read before resuming: nothing new can be missed. */
	uint64_t after = 0;
	int rc = 0;
	if (!self->detach) {
		rc = s_last_seq(self, run_id, &after);
		if (rc != 0)
			return rc;
	}
	Ahp__Orch__Request req = AHP__ORCH__REQUEST__INIT;
	Ahp__Orch__RunRef ref = AHP__ORCH__RUN_REF__INIT;
	ref.run_id = (char *)run_id;
	req.body_case = AHP__ORCH__REQUEST__BODY_RESUME;
	req.resume = &ref;
	Ahp__Orch__Reply *reply = NULL;
	rc = s_call(self, &req, 0, 0, &reply);
	if (rc != 0)
		return rc;
	if (reply->body_case != AHP__ORCH__REPLY__BODY_RESUME || reply->resume == NULL) {
		ahp__orch__reply__free_unpacked(reply, NULL);
		return s_fail(self, XC_DAEMON, AHP__STATUS__ERR_BAD_REQUEST,
		              "unexpected reply to resume", NULL);
	}
	if (self->json)
		s_json_print(json_pack("{s:s,s:s}", "run_id", reply->resume->run_id, "state",
		                       reply->resume->state));
	else
		printf("%s resumed (%s)\n", reply->resume->run_id, reply->resume->state);
	fflush(stdout);
	ahp__orch__reply__free_unpacked(reply, NULL);
	if (self->detach)
		return XC_OK;
	return s_stream(self, run_id, &after, 1, 1, 1);
}

/* --- main --- */

/* The id alphabet the orchestrator accepts (api.c): checked here so that a
 * mistyped id is a usage error, not a server's bad_request. */
static int
s_run_id_ok(const char *id)
{
	size_t n = strlen(id);
	return n > 0 && n < ORCH_RUN_ID_MAX &&
	       strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == n;
}

static int
s_run(orchctl_t *self, int argc, char **argv)
{
	const char *cmd = argv[0];
	int nargs = argc - 1;
	int is_list = strcmp(cmd, "list") == 0;
	if (!is_list && (self->state || self->profile || self->limit))
		return s_usage_error(self, "--state, --profile and --limit go with list");
	if (self->detach && strcmp(cmd, "submit") != 0 && strcmp(cmd, "resume") != 0)
		return s_usage_error(self, "--detach goes with submit and resume");
	if (self->follow && strcmp(cmd, "logs") != 0)
		return s_usage_error(self, "--follow goes with logs");

	if (self->task_file && strcmp(cmd, "submit") != 0)
		return s_usage_error(self, "--task-file goes with submit");
	if (strcmp(cmd, "submit") == 0) {
		if (nargs != (self->task_file ? 1 : 2))
			return s_usage_error(self, "orchctl submit PROFILE TASK|- (quote the "
			                           "task), or submit PROFILE --task-file FILE");
		if (argv[1][0] == '\0')
			return s_usage_error(self, "the profile must not be empty");
		const char *src = self->task_file ? self->task_file : argv[2];
		if (!self->task_file && strcmp(src, "-") != 0) {
			int rc = s_check_task(self, src, strlen(src));
			return rc != 0 ? rc : s_cmd_submit(self, argv[1], src);
		}
		int from_stdin = strcmp(src, "-") == 0;
		FILE *f = from_stdin ? stdin : fopen(src, "rb");
		size_t len = 0;
		char *task = f ? s_read_task(f, &len) : NULL;
		int err = errno;
		if (f != NULL && !from_stdin)
			fclose(f);
		if (task == NULL) {
			char msg[PATH_MAX + 64];
			snprintf(msg, sizeof msg, "cannot read the task from %s: %s",
			         from_stdin ? "stdin" : src, strerror(err));
			return s_usage_error(self, msg);
		}
		int rc = s_check_task(self, task, len);
		if (rc == 0)
			rc = s_cmd_submit(self, argv[1], task);
		free(task);
		return rc;
	}
	if (is_list) {
		static const char *const states[] = {"queued",    "running", "waiting_approval",
		                                     "succeeded", "failed",  "cancelled"};
		int known = self->state == NULL;
		for (size_t i = 0; !known && i < sizeof states / sizeof states[0]; i++)
			known = strcmp(self->state, states[i]) == 0;
		if (!known)
			return s_usage_error(self,
			                     "--state takes queued, running, waiting_approval, "
			                     "succeeded, failed or cancelled");
		if (self->profile != NULL && strlen(self->profile) > PROFILE_NAME_MAX)
			return s_usage_error(self, "--profile: a profile name is at most 64 bytes");
		if (nargs != 0)
			return s_usage_error(self,
			                     "orchctl list [--state S] [--profile P] [--limit N]");
		return s_cmd_list(self);
	}
	static const struct {
		const char *name;
		int (*fn)(orchctl_t *, const char *);
	} one_run[] = {
	    {"status", s_cmd_status},
	    {"logs", s_cmd_logs},
	    {"cancel", s_cmd_cancel},
	    {"resume", s_cmd_resume},
	};
	for (size_t i = 0; i < sizeof one_run / sizeof one_run[0]; i++) {
		if (strcmp(cmd, one_run[i].name) != 0)
			continue;
		if (nargs != 1 || !s_run_id_ok(argv[1])) {
			char msg[160];
			snprintf(msg, sizeof msg,
			         nargs != 1 ? "orchctl %s RUN"
			                    : "orchctl %s RUN (a run id is 1..31 characters "
			                      "of A-Z a-z 0-9 - _)",
			         cmd);
			return s_usage_error(self, msg);
		}
		return one_run[i].fn(self, argv[1]);
	}
	char msg[160];
	snprintf(msg, sizeof msg, "unknown command '%.64s'", cmd);
	return s_usage_error(self, msg);
}

/* Options may come before or after the command ("logs RUN --follow"), as
 * --name VALUE or --name=VALUE; "--" ends them. Operands are collected in
 * order into rest (argc + 1 slots). Returns -1 to go on, else an exit code. */
static int
s_parse_args(orchctl_t *self, int argc, char **argv, const char **endpoint,
             const char **appr_endpoint, char **rest, int *nrest)
{
	static const char *const with_value[] = {"--home",      "--timeout",   "--endpoint",
	                                         "--state",     "--profile",   "--limit",
	                                         "--task-file", "--approvald", NULL};
	int only_operands = 0;
	*nrest = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (only_operands || a[0] != '-' || a[1] == '\0') {
			rest[(*nrest)++] = argv[i];
			continue;
		}
		if (strcmp(a, "--") == 0) {
			only_operands = 1;
			continue;
		}
		char name[32];
		const char *eq = strchr(a, '=');
		size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
		if (nlen >= sizeof name)
			return s_usage_error(self, "unknown option");
		memcpy(name, a, nlen);
		name[nlen] = '\0';
		int needs_val = 0;
		for (int k = 0; with_value[k] != NULL; k++)
			if (strcmp(name, with_value[k]) == 0)
				needs_val = 1;
		const char *val = NULL;
		if (needs_val) {
			if (eq != NULL)
				val = eq + 1;
			else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
				val = argv[++i];
			else {
				/* "--home --json list" must not take --json for a home:
				 * a value that starts with "--" is given as --name=VALUE. */
				char msg[96];
				snprintf(msg, sizeof msg, "option %s needs a value", name);
				return s_usage_error(self, msg);
			}
		} else if (eq != NULL) {
			return s_usage_error(self, "option takes no value");
		}
		long v = 0;
		if (strcmp(name, "--home") == 0) {
			self->home = val;
		} else if (strcmp(name, "--endpoint") == 0) {
			*endpoint = val;
		} else if (strcmp(name, "--approvald") == 0) {
			*appr_endpoint = val;
		} else if (strcmp(name, "--no-prompt") == 0) {
			self->no_prompt = 1;
		} else if (strcmp(name, "--task-file") == 0) {
			self->task_file = val;
		} else if (strcmp(name, "--state") == 0) {
			self->state = val;
		} else if (strcmp(name, "--profile") == 0) {
			self->profile = val;
		} else if (strcmp(name, "--timeout") == 0) {
			if (ahp_parse_long(val, 100, 600000, &v) != 0)
				return s_usage_error(self,
				                     "--timeout takes milliseconds in 100..600000");
			self->timeout_ms = (int)v;
		} else if (strcmp(name, "--limit") == 0) {
			if (ahp_parse_long(val, 1, 100000, &v) != 0)
				return s_usage_error(self, "--limit takes a number in 1..100000");
			self->limit = v;
		} else if (strcmp(name, "--json") == 0) {
			self->json = 1;
		} else if (strcmp(name, "--detach") == 0) {
			self->detach = 1;
		} else if (strcmp(name, "--follow") == 0 || strcmp(name, "-f") == 0) {
			self->follow = 1;
		} else if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
			s_usage(stdout);
			return XC_OK;
		} else if (strcmp(name, "--version") == 0) {
			printf("orchctl %s\n", AHP_VERSION);
			return XC_OK;
		} else {
			char msg[96];
			snprintf(msg, sizeof msg, "unknown option '%s'", name);
			return s_usage_error(self, msg);
		}
	}
	if (*nrest == 0) {
		if (!self->json)
			s_usage(stderr);
		return s_usage_error(self, "no COMMAND given");
	}
	return -1;
}

int
main(int argc, char **argv)
{
	orchctl_t self = {0};
	self.timeout_ms = DEFAULT_TIMEOUT_MS;
	ahp_log_init("orchctl", AHP_LOG_WARN);
	/* Known before parsing, so that a usage error is JSON too. */
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--json") == 0)
			self.json = 1;

	char **rest = calloc((size_t)argc + 1, sizeof *rest);
	if (rest == NULL)
		return XC_DAEMON;
	const char *endpoint = NULL;
	const char *appr_endpoint = NULL;
	int nrest = 0;
	int rc = s_parse_args(&self, argc, argv, &endpoint, &appr_endpoint, rest, &nrest);
	if (rc >= 0) {
		free(rest);
		return rc;
	}
	if (endpoint != NULL) {
		if (ahp_strlcpy(self.endpoint, endpoint, sizeof self.endpoint) != 0) {
			free(rest);
			return s_usage_error(&self, "--endpoint is too long");
		}
	} else {
		char path[PATH_MAX];
		if (ahp_home_path(ahp_home(self.home), "run/orchestrator.sock", path,
		                  sizeof path) != 0) {
			free(rest);
			return s_usage_error(&self, "home path is too long");
		}
		snprintf(self.endpoint, sizeof self.endpoint, "ipc://%s", path);
	}
	if (appr_endpoint != NULL) {
		if (ahp_strlcpy(self.appr_endpoint, appr_endpoint, sizeof self.appr_endpoint) !=
		    0) {
			free(rest);
			return s_usage_error(&self, "--approvald is too long");
		}
	} else {
		char path[PATH_MAX];
		if (ahp_home_path(ahp_home(self.home), "run/approvald-human.sock", path,
		                  sizeof path) != 0) {
			free(rest);
			return s_usage_error(&self, "home path is too long");
		}
		snprintf(self.appr_endpoint, sizeof self.appr_endpoint, "ipc://%s", path);
	}
	/* Never prompt off a terminal (a pipe, a script, cron) nor into --json output. */
	self.prompt =
	    !self.no_prompt && !self.json && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);

	/* Ctrl-C while following stops following, not the run. */
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = s_on_sigint;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);

	rc = s_run(&self, nrest, rest);
	free(rest);
	if (self.mon != NULL)
		zmq_close(self.mon);
	ahp_rpc_client_destroy(&self.client);
	if (self.zctx != NULL)
		zmq_ctx_term(self.zctx);
	return rc;
}
