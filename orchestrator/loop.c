/* orchestrator: the single event loop — curl_multi_poll over curl, the ZeroMQ sockets and signals;
 * group commit per turn. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

#include "ahp/log.h"
#include "ahp/util.h"

#include "orch.h"

#define POLL_MAX_MS 1000 /* longest sleep; timers are re-evaluated at least this often */
#define POST_PASSES 8    /* commit/send rounds per turn before deferring to the next */

void
orch_journal_failed(orch_t *o, const char *what)
{
	(void)o;
	/* Sending anything whose intent may not be durable would break
	 * "a journaled step is never paid for twice"; stop, and let the
	 * restart resume from what did reach the disk. */
	fatalx("journal write failed (%s); stopping so that a restart resumes from the journal",
	       what);
}

void
orch_reply_defer(orch_t *o, ahp_rpc_req_t **req_p, uint8_t *buf, size_t len)
{
	orch_reply_t *r = calloc(1, sizeof *r);
	if (r == NULL) {
		free(buf);
		ahp_rpc_req_free(req_p);
		return;
	}
	r->req = *req_p;
	*req_p = NULL;
	r->buf = buf;
	r->len = len;
	*o->replies_tail = r;
	o->replies_tail = &r->next;
}

void
orch_post(orch_t *o, orch_run_t *run)
{
	if (run->on_post)
		return;
	run->on_post = 1;
	run->post_next = o->post_head;
	o->post_head = run;
}

static void
s_flush_replies(orch_t *o)
{
	orch_reply_t *r = o->replies;
	o->replies = NULL;
	o->replies_tail = &o->replies;
	while (r != NULL) {
		orch_reply_t *next = r->next;
		if (ahp_rpc_server_reply(o->server, &r->req, r->buf, r->len) != 0)
			log_warn("could not send a reply");
		ahp_rpc_req_free(&r->req);
		free(r->buf);
		free(r);
		r = next;
	}
}

static void
s_commit(orch_t *o)
{
	if (orch_journal_commit(o->journal) != 0)
		orch_journal_failed(o, "commit");
}

/* End of a loop turn: make this turn's writes durable in one commit, then
 * do what the committed intents asked for, then answer. */
static void
s_end_turn(orch_t *o)
{
	for (int pass = 0; pass < POST_PASSES; pass++) {
		s_commit(o);
		if (o->post_head == NULL)
			break;
		/* Reverse into submission order for fairness. */
		orch_run_t *list = NULL;
		while (o->post_head != NULL) {
			orch_run_t *r = o->post_head;
			o->post_head = r->post_next;
			r->post_next = list;
			list = r;
		}
		while (list != NULL) {
			orch_run_t *r = list;
			list = r->post_next;
			r->on_post = 0;
			orch_run_post_commit(r);
		}
	}
	s_commit(o);
	s_flush_replies(o);
	orch_api_waiters(o, ahp_mono_ms(), 0);
	orch_runs_reap_ended(o);
}

static void
s_signals(orch_t *o)
{
	struct signalfd_siginfo si;
	while (read(o->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
		if (si.ssi_signo == SIGHUP) {
			o->reload = 1;
		} else {
			log_info("signal %u: stopping", si.ssi_signo);
			o->stop = 1;
		}
	}
}

typedef struct {
	char **ids;
	size_t n, cap;
} s_ids_t;

static int
s_collect_id(void *arg, const orch_run_row_t *row)
{
	s_ids_t *ids = arg;
	if (ids->n == ids->cap) {
		size_t cap = ids->cap ? ids->cap * 2 : 64;
		char **v = realloc(ids->ids, cap * sizeof *v);
		if (v == NULL)
			return 1;
		ids->ids = v;
		ids->cap = cap;
	}
	ids->ids[ids->n] = strdup(row->id);
	if (ids->ids[ids->n] != NULL)
		ids->n++;
	return 0;
}

static int
s_restore_cb(void *arg, const orch_run_row_t *row)
{
	orch_run_row_t *copy = arg;
	/* Copied out: restoring writes to the journal, which must not happen
	 * while this statement is being stepped. */
	copy->id = strdup(row->id);
	copy->profile = strdup(row->profile);
	copy->task = strdup(row->task);
	copy->state = strdup(row->state);
	copy->created_ms = row->created_ms;
	return 1;
}

/* On start, every queued/running/waiting run continues from its journal. */
static void
s_resume_all(orch_t *o)
{
	s_ids_t ids = {0};
	if (orch_journal_runs_unfinished(o->journal, s_collect_id, &ids) != 0)
		orch_journal_failed(o, "listing unfinished runs");
	for (size_t i = 0; i < ids.n; i++) {
		orch_run_row_t row = {0};
		if (orch_journal_run_get(o->journal, ids.ids[i], s_restore_cb, &row) == 1 &&
		    row.id && row.profile && row.task && row.state) {
			int status;
			char err[256];
			if (orch_run_restore(o, &row, 0, &status, err, sizeof err) == NULL)
				log_error("run %s not resumed: %s", ids.ids[i], err);
		}
		free((char *)row.id);
		free((char *)row.profile);
		free((char *)row.task);
		free((char *)row.state);
		free(ids.ids[i]);
	}
	free(ids.ids);
	if (ids.n > 0)
		log_info("resumed %zu unfinished run(s) from the journal", ids.n);
}

static int
s_mkdir_parent(const char *file, int mode)
{
	char path[PATH_MAX + 16];
	snprintf(path, sizeof path, "%s", file);
	char *slash = strrchr(path, '/');
	if (slash == NULL || slash == path)
		return 0;
	*slash = '\0';
	if (ahp_mkdirs(path, mode) != 0) {
		log_error("cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* The journal used to live at HOME/state/orchestrator.db, in a directory the
 * orchestrator's user must not own (sandboxd's workspaces are under it);
 * a home laid out before moves to HOME/state/orchestrator/ once. */
static int
s_migrate_db(orch_t *o)
{
	static const char *const sfx[] = {"", "-wal", "-shm"};
	char from[PATH_MAX + 64], to[PATH_MAX + 16];
	struct stat st;
	snprintf(from, sizeof from, "%s/state/orchestrator.db", o->home);
	if (!o->db_default || lstat(o->db_path, &st) == 0 || lstat(from, &st) != 0)
		return 0;
	for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
		snprintf(from, sizeof from, "%s/state/orchestrator.db%s", o->home, sfx[i]);
		snprintf(to, sizeof to, "%s%s", o->db_path, sfx[i]);
		if (rename(from, to) != 0 && errno != ENOENT) {
			log_error("cannot move %s to %s: %s", from, to, strerror(errno));
			return -1;
		}
	}
	log_info("journal moved from %s/state/orchestrator.db to %s", o->home, o->db_path);
	return 0;
}

static int
s_ensure_dirs(orch_t *o)
{
	char path[PATH_MAX + 16];
	/* 0711 when it will run as another user: it must still reach
	 * sandboxd's socket, and orchctl users its own (their allow-lists,
	 * not this mode, decide who is served). */
	snprintf(path, sizeof path, "%s/run", o->home);
	if (ahp_mkdirs(path, o->drop ? 0711 : 0700) != 0) {
		log_error("cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	if (o->drop && o->db_default) {
		snprintf(path, sizeof path, "%s/state", o->home);
		if (ahp_mkdirs(path, 0711) != 0) {
			log_error("cannot create %s: %s", path, strerror(errno));
			return -1;
		}
	}
	if (s_mkdir_parent(o->db_path, 0700) != 0 || s_migrate_db(o) != 0 || orch_own_state(o) != 0)
		return -1;
	if (strncmp(o->endpoint, "ipc://", 6) == 0 &&
	    s_mkdir_parent(o->endpoint + 6, o->drop ? 0711 : 0700) != 0)
		return -1;
	return 0;
}

int
orch_loop_setup(orch_t *o)
{
	if (s_ensure_dirs(o) != 0)
		return -1;
	o->profiles = orch_profset_load(o->profiles_dir, o->etc_dir);
	if (o->profiles == NULL)
		return -1;
	o->zctx = zmq_ctx_new();
	if (o->zctx == NULL)
		return -1;
	/* the allow-list at bind: peers it does not name are closed at accept */
	o->server = ahp_rpc_server_new(o->zctx, o->endpoint, ORCH_RPC_MAX_MSG, &o->allow);
	if (o->server == NULL) {
		log_error("cannot serve on %s", o->endpoint);
		return -1;
	}
	if (orch_model_init(o) != 0) {
		log_error("cannot set up libcurl");
		return -1;
	}
	return 0;
}

/* After the privilege drop. The journal is opened here, as the user that
 * owns its directory: opened as root it would follow any link planted
 * there. The sandboxd connection is made here too, so that sandboxd sees
 * (SO_PEERCRED) the user the orchestrator runs as. */
int
orch_loop_start(orch_t *o)
{
	char err[512], dir[PATH_MAX + 16];
	/* Say what is wrong with a home laid out for root alone (0700 dirs)
	 * rather than let SQLite say "unable to open database file". */
	snprintf(dir, sizeof dir, "%s", o->db_path);
	char *slash = strrchr(dir, '/');
	if (o->drop && slash != NULL && slash != dir) {
		*slash = '\0';
		if (access(dir, W_OK | X_OK) != 0) {
			log_error("journal directory %s is not writable by user %s (%s); every "
			          "directory above it must be traversable (scripts/stack lays HOME "
			          "out so; docs/security.md)",
			          dir, o->run_user, strerror(errno));
			return -1;
		}
	}
	o->journal = orch_journal_open(o->db_path, err, sizeof err);
	if (o->journal == NULL) {
		log_error("journal: %s", err);
		return -1;
	}
	if (orch_sbx_setup(o) != 0 || orch_svc_setup(o) != 0 || orch_egress_setup(o) != 0 ||
	    orch_appr_setup(o) != 0)
		return -1;
	s_resume_all(o);
	s_commit(o);
	return 0;
}

/* Adds a zmq socket's ZMQ_FD to the poll set. */
static void
s_add_zmq(struct curl_waitfd *extra, unsigned *n, void *sock)
{
	int fd = ahp_zmq_fd(sock);
	if (fd >= 0)
		extra[(*n)++] = (struct curl_waitfd){.fd = fd, .events = CURL_WAIT_POLLIN};
}

void
orch_loop_run(orch_t *o)
{
	while (!o->stop) {
		int64_t now = ahp_mono_ms();
		long timeout = POLL_MAX_MS;
		long ct = -1;
		if (curl_multi_timeout(o->multi, &ct) == CURLM_OK && ct >= 0 && ct < timeout)
			timeout = ct;
		timeout = orch_runs_timers(o, now, timeout);
		timeout = orch_egress_timers(o, now, timeout);
		timeout = orch_api_waiters_timeout(o, now, timeout);
		/* Timer callbacks above may have written: finish that first. */
		if (o->post_head != NULL || orch_journal_in_tx(o->journal)) {
			s_end_turn(o);
			timeout = 0;
		}

		void *srv = ahp_rpc_server_socket(o->server);
		void *sbx = orch_sbx_socket(o);
		void *mon = orch_sbx_monitor_socket(o);
		void *cp = orch_egress_socket(o);
		void *cpmon = orch_egress_monitor_socket(o);
		void *svc = orch_svc_socket(o);
		void *svcmon = orch_svc_monitor_socket(o);
		void *appr = orch_appr_socket(o);
		void *apprmon = orch_appr_monitor_socket(o);
		struct curl_waitfd extra[10];
		unsigned n = 0;
		s_add_zmq(extra, &n, srv);
		s_add_zmq(extra, &n, sbx);
		s_add_zmq(extra, &n, mon);
		s_add_zmq(extra, &n, cp);
		s_add_zmq(extra, &n, cpmon);
		s_add_zmq(extra, &n, svc);
		s_add_zmq(extra, &n, svcmon);
		s_add_zmq(extra, &n, appr);
		s_add_zmq(extra, &n, apprmon);
		extra[n++] = (struct curl_waitfd){.fd = o->sigfd, .events = CURL_WAIT_POLLIN};
		/* ZMQ_FD is edge-triggered and sends may have consumed an edge:
		 * ask the sockets themselves right before sleeping. */
		if (ahp_zmq_readable(srv) || ahp_zmq_readable(sbx) || ahp_zmq_readable(mon) ||
		    ahp_zmq_readable(cp) || ahp_zmq_readable(cpmon) || ahp_zmq_readable(svc) ||
		    ahp_zmq_readable(svcmon) || ahp_zmq_readable(appr) || ahp_zmq_readable(apprmon))
			timeout = 0;
		CURLMcode mc = curl_multi_poll(o->multi, extra, n, (int)timeout, NULL);
		if (mc != CURLM_OK && mc != CURLM_UNRECOVERABLE_POLL)
			log_warn("curl_multi_poll: %s", curl_multi_strerror(mc));

		s_signals(o);
		if (o->reload) {
			o->reload = 0;
			(void)orch_config_reload(o);
			orch_profiles_reload(o);
			/* max_running may have grown. */
			orch_runs_schedule(o);
		}
		int running = 0;
		curl_multi_perform(o->multi, &running);
		orch_model_reap(o);
		orch_api_recv(o);
		orch_sbx_recv(o);
		/* After the replies: one that arrived before a disconnect counts. */
		orch_sbx_monitor_recv(o);
		orch_svc_recv(o);
		orch_svc_monitor_recv(o);
		orch_egress_recv(o);
		orch_appr_recv(o);
		orch_runs_timers(o, ahp_mono_ms(), POLL_MAX_MS);
		orch_egress_timers(o, ahp_mono_ms(), POLL_MAX_MS);
		s_end_turn(o);
	}
}

static void
s_linger0(void *sock)
{
	int zero = 0;
	if (sock != NULL)
		zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
}

void
orch_loop_teardown(orch_t *o)
{
	/* Unfinished runs stay queued/running in the journal; their
	 * in-flight model calls are re-issued at the next start. */
	s_end_turn(o);
	orch_api_waiters(o, ahp_mono_ms(), 1);
	while (o->runs != NULL) {
		orch_run_t *r = o->runs;
		o->runs = r->next;
		orch_run_free(&r);
	}
	o->runs_tail = NULL;
	orch_runs_reap_ended(o);
	s_commit(o);
	orch_model_teardown(o);
	if (o->server != NULL)
		s_linger0(ahp_rpc_server_socket(o->server));
	s_linger0(orch_sbx_socket(o));
	s_linger0(orch_svc_socket(o));
	s_linger0(orch_appr_socket(o));
	ahp_rpc_server_destroy(&o->server);
	orch_sbx_teardown(o);
	orch_svc_teardown(o);
	orch_appr_teardown(o);
	orch_egress_teardown(o);
	if (o->zctx != NULL)
		zmq_ctx_term(o->zctx);
	orch_profset_unref(&o->profiles);
	orch_journal_destroy(&o->journal);
}
