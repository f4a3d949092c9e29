/* libahp: the asynchronous daemon-to-daemon client (requests in flight, deadlines, losses). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zmq.h>

#include "ahp/client.h"
#include "ahp/text.h"
#include "ahp/log.h"
#include "ahp/rpc.h"
#include "ahp/util.h"

#define NBUCKETS 256 /* power of two; in-flight requests are at most a few thousand */
#define RECV_BATCH 1024

typedef struct pending {
	struct pending *next;     /* bucket chain */
	struct pending *due_next; /* collected for a callback walk */
	uint64_t id;
	void *owner;
	int64_t deadline; /* monotonic ms */
} pending_t;

struct ahp_client {
	void *zctx;
	char name[32];
	char endpoint[4096 + 16];
	ahp_rpc_client_t *rpc;
	void *monitor;
	char monitor_ep[64];
	ahp_client_done_fn *done;
	int64_t refused_check; /* when a send failing to connect last asked why (ms) */
	pending_t *buckets[NBUCKETS];
	size_t n;
};

static pending_t **
s_slot(ahp_client_t *self, uint64_t id)
{
	pending_t **pp = &self->buckets[id & (NBUCKETS - 1)];
	while (*pp != NULL && (*pp)->id != id)
		pp = &(*pp)->next;
	return pp;
}

/* Unlinks and returns the entry for id, or NULL. Caller frees. */
static pending_t *
s_take(ahp_client_t *self, uint64_t id)
{
	pending_t **pp = s_slot(self, id);
	pending_t *p = *pp;
	if (p != NULL) {
		*pp = p->next;
		self->n--;
	}
	return p;
}

ahp_client_t *
ahp_client_new(void *zctx, const char *name, const char *endpoint, ahp_client_done_fn *done)
{
	static unsigned s_seq;
	ahp_client_t *self = calloc(1, sizeof *self);
	if (self == NULL)
		return NULL;
	self->zctx = zctx;
	self->done = done;
	ahp_strlcpy(self->name, name, sizeof self->name);
	if (ahp_strlcpy(self->endpoint, endpoint, sizeof self->endpoint) != 0) {
		log_error("%s endpoint too long", name);
		free(self);
		return NULL;
	}
	self->rpc = ahp_rpc_client_new(zctx, endpoint);
	if (self->rpc == NULL) {
		log_error("cannot set up the %s client for %s", name, endpoint);
		free(self);
		return NULL;
	}
	/* A monitor tells us when the server goes away, so requests in flight
	 * are finished at once rather than at their deadlines. */
	snprintf(self->monitor_ep, sizeof self->monitor_ep, "inproc://ahp-client-monitor-%u",
	         s_seq++);
	if (zmq_socket_monitor(ahp_rpc_client_socket(self->rpc), self->monitor_ep,
	                       ZMQ_EVENT_DISCONNECTED) != 0) {
		log_warn("no %s connection monitor: %s", name, zmq_strerror(zmq_errno()));
		return self;
	}
	self->monitor = zmq_socket(zctx, ZMQ_PAIR);
	if (self->monitor == NULL || zmq_connect(self->monitor, self->monitor_ep) != 0) {
		log_warn("no %s connection monitor: %s", name, zmq_strerror(zmq_errno()));
		if (self->monitor != NULL)
			zmq_close(self->monitor);
		self->monitor = NULL;
	}
	return self;
}

void
ahp_client_destroy(ahp_client_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	ahp_client_t *self = *self_p;
	for (size_t b = 0; b < NBUCKETS; b++) {
		while (self->buckets[b] != NULL) {
			pending_t *p = self->buckets[b];
			self->buckets[b] = p->next;
			free(p);
		}
	}
	int zero = 0;
	if (self->monitor != NULL) {
		zmq_setsockopt(self->monitor, ZMQ_LINGER, &zero, sizeof zero);
		zmq_close(self->monitor);
	}
	if (self->rpc != NULL) {
		void *s = ahp_rpc_client_socket(self->rpc);
		zmq_socket_monitor(s, NULL, 0);
		zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
	}
	ahp_rpc_client_destroy(&self->rpc);
	free(self);
	*self_p = NULL;
}

int
ahp_client_present(const ahp_client_t *self)
{
	if (strncmp(self->endpoint, "ipc://", 6) != 0)
		return 1;
	struct stat st;
	return stat(self->endpoint + 6, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* A send that found no connection (EAGAIN) asks, at most every
 * S_REFUSED_CHECK_MS, whether the daemon closes ours at accept (it does not
 * admit our uid: ahp_rpc_server_new), and says so: otherwise a misconfigured
 * allow-list looks like a daemon that is down. */
#define S_REFUSED_CHECK_MS 30000
static void
s_why_unconnected(ahp_client_t *self, int err)
{
	int64_t now = ahp_mono_ms();
	if (err != EAGAIN ||
	    (self->refused_check != 0 && now - self->refused_check < S_REFUSED_CHECK_MS))
		return;
	self->refused_check = now;
	/* a short wait: this runs in the daemon's loop */
	if (ahp_rpc_refused_at_accept(self->endpoint, 100)) {
		char m[160];
		ahp_rpc_refused_message(m, sizeof m);
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "rpc: the daemon does not admit us", "daemon",
		           self->name, "endpoint", self->endpoint, "reason", m, NULL);
	}
}

uint64_t
ahp_client_send(ahp_client_t *self, void *owner, const void *body, size_t len, long timeout_ms)
{
	if (!ahp_client_present(self)) {
		errno = EAGAIN;
		return 0;
	}
	pending_t *p = calloc(1, sizeof *p);
	if (p == NULL)
		return 0;
	uint64_t id = ahp_rpc_client_send(self->rpc, body, len);
	if (id == 0) {
		int e = errno;
		free(p);
		s_why_unconnected(self, e);
		errno = e;
		return 0;
	}
	p->id = id;
	p->owner = owner;
	p->deadline = ahp_mono_ms() + timeout_ms;
	pending_t **pp = &self->buckets[id & (NBUCKETS - 1)];
	p->next = *pp;
	*pp = p;
	self->n++;
	return id;
}

int
ahp_client_post(ahp_client_t *self, const void *body, size_t len)
{
	if (!ahp_client_present(self))
		return -1;
	if (ahp_rpc_client_send(self->rpc, body, len) == 0) {
		s_why_unconnected(self, errno);
		return -1;
	}
	return 0;
}

void
ahp_client_forget(ahp_client_t *self, uint64_t id)
{
	free(s_take(self, id));
}

size_t
ahp_client_pending(const ahp_client_t *self)
{
	return self->n;
}

void *
ahp_client_socket(ahp_client_t *self)
{
	return self != NULL && self->rpc != NULL ? ahp_rpc_client_socket(self->rpc) : NULL;
}

void *
ahp_client_monitor_socket(ahp_client_t *self)
{
	return self != NULL ? self->monitor : NULL;
}

void
ahp_client_recv(ahp_client_t *self)
{
	for (int i = 0; i < RECV_BATCH; i++) {
		uint64_t id = 0;
		uint8_t *body = NULL;
		size_t len = 0;
		int terr = 0;
		if (ahp_rpc_client_recv(self->rpc, &id, &body, &len, &terr) <= 0)
			break;
		pending_t *p = s_take(self, id);
		if (p == NULL) {
			/* Posted requests and ones whose owner went away. */
			free(body);
			continue;
		}
		void *owner = p->owner;
		free(p);
		if (terr != 0) {
			char msg[256];
			snprintf(msg, sizeof msg, "%s refused the request: %.*s", self->name,
			         AHP_UTF8_CUT(body ? (char *)body : "", 200));
			self->done(owner, id, terr, msg, NULL, 0);
		} else {
			self->done(owner, id, 0, NULL, body, len);
		}
		free(body);
	}
}

/* Takes every entry that matches (all, or those due by now) out of the
 * table into a list, so callbacks never run during the walk. */
static pending_t *
s_collect(ahp_client_t *self, int all, int64_t now, long *next)
{
	pending_t *list = NULL, **tail = &list;
	for (size_t b = 0; b < NBUCKETS; b++) {
		pending_t **pp = &self->buckets[b];
		while (*pp != NULL) {
			pending_t *p = *pp;
			if (all || p->deadline <= now) {
				*pp = p->next;
				self->n--;
				p->due_next = NULL;
				*tail = p;
				tail = &p->due_next;
				continue;
			}
			if (next != NULL && p->deadline - now < *next)
				*next = (long)(p->deadline - now);
			pp = &p->next;
		}
	}
	return list;
}

static void
s_finish_all(ahp_client_t *self, pending_t *list, int status, const char *message)
{
	while (list != NULL) {
		pending_t *p = list;
		list = p->due_next;
		void *owner = p->owner;
		uint64_t id = p->id;
		free(p);
		self->done(owner, id, status, message, NULL, 0);
	}
}

void
ahp_client_monitor_recv(ahp_client_t *self)
{
	if (self->monitor == NULL)
		return;
	for (;;) {
		zmq_msg_t m;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, self->monitor, ZMQ_DONTWAIT) < 0) {
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
			if (zmq_msg_recv(&m, self->monitor, ZMQ_DONTWAIT) < 0) {
				zmq_msg_close(&m);
				break;
			}
			more = zmq_msg_more(&m);
			zmq_msg_close(&m);
		}
		if (ev == ZMQ_EVENT_DISCONNECTED) {
			char msg[96];
			snprintf(msg, sizeof msg, "%s went away", self->name);
			log_warn("%s disconnected", self->name);
			s_finish_all(self, s_collect(self, 1, 0, NULL),
			             AHP__STATUS__ERR_INTERRUPTED, msg);
		}
	}
}

long
ahp_client_timers(ahp_client_t *self, int64_t now, long max)
{
	long next = max;
	pending_t *due = s_collect(self, 0, now, &next);
	if (due != NULL) {
		char msg[96];
		snprintf(msg, sizeof msg, "%s did not answer in time", self->name);
		s_finish_all(self, due, AHP__STATUS__ERR_TIMEOUT, msg);
	}
	return next;
}
