/* sandboxd's event loop: the RPC socket, every sandbox's control socket and relays, signals. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "ahp/log.h"
#include "ahp/profile.h"
#include "ahp/proxyv2.h"
#include "ahp/rpc.h"
#include "ahp/util.h"
#include "sbx.h"

#define S_RPC_MAX_MSG                                                                              \
	(1024 * 1024)  /* transport ceiling; each request type has its own cap below it */
#define S_RPC_BATCH 64 /* requests taken per loop turn */
#define S_STOP_GRACE_MS 5000
#define S_CALL_TIMEOUT_MS 10000 /* a call to the privileged parent */
/* Retention is checked at least this often (wall-clock deadlines survive a
 * clock step this way) and, while a retained sandbox is still dying, soon. */
#define S_RETAIN_CHECK_MS 60000
#define S_RETAIN_RETRY_MS 100

/* What a poll item belongs to. */
enum {
	S_REF_RPC,
	S_REF_SIG,
	S_REF_ZYGOTE,
	S_REF_CTL,
	S_REF_LISTEN,
	S_REF_RELAY_C,
	S_REF_RELAY_U,
	S_REF_RUN_LISTEN, /* the exec socket */
	S_REF_RUN,        /* one of its connections (sbx: index in self->runs) */
};
typedef struct {
	int kind;
	size_t sbx; /* index in self->sbx */
	int relay;  /* index in the sandbox's relays */
} s_ref_t;

/* A workspace kept by a Destroy with keep_workspace, under retention. */
typedef struct {
	char id[SBX_ID_MAX + 1];
	uint32_t slot;
	int64_t kept_ms; /* wall clock */
} s_retained_t;

struct sbx_daemon {
	sbx_config_t cfg;
	void *zctx;
	ahp_rpc_server_t *rpc;
	int sigfd;
	int zygote; /* async socket to the privileged parent (the spawner) */
	int call;   /* its call socket: one request, one sbx_call_rep_t */
	sbx_store_t *store;
	sbx_sandbox_t **sbx;  /* runs' sandboxes, pool spares, destroyed ones still dying */
	uint32_t pool_fails;  /* spares that failed to start in a row */
	int64_t pool_hold_ms; /* monotonic: no refill before this (after failures) */
	size_t n_sbx, cap_sbx;
	uint8_t *slots;      /* bitmap of uid slots in use (live, dying, or on disk) */
	uint8_t *discarding; /* ... of slots whose DISCARD the parent has not finished */
	zmq_pollitem_t *items;
	s_ref_t *refs;
	size_t cap_items;
	s_retained_t *retained; /* oldest first */
	size_t n_retained, cap_retained;
	int64_t retain_due_ms; /* wall clock of the next retention pass; 0: now */
	bool stopping;
	/* the exec socket (one-shot Run requests) and its connections */
	int run_listen;
	struct s_run **runs;
	size_t n_runs, cap_runs;
	uint64_t run_next; /* connection ids, from 1 */
	size_t run_item0;  /* first poll item of the exec socket's */
	uint8_t *run_rx;   /* one request packet (SBX_RUN_REQ_MAX + 1 bytes) */
	/* profiles as the one-shot resolves them (HOME/etc/profiles) */
	ahp_profiles_t *profiles;
	char *profile_errs;   /* what the last load reported, one line each */
	uint64_t profile_sig; /* of the directory when it was loaded; 0: load */
};

/* A connection of the exec socket (the one-shot Run, below). */
enum { S_RUN_IDLE, S_RUN_BUSY, S_RUN_DONE };

typedef struct s_run {
	int fd; /* -1 once closed; dropped when the poll set is next built */
	uint64_t id;
	int state;
	int64_t idle_until;   /* S_RUN_IDLE: monotonic ms */
	int64_t create_until; /* S_RUN_BUSY until the sandbox is ready: monotonic ms; 0 after */
	int64_t busy_since;   /* monotonic ms it became S_RUN_BUSY (s_pool_fill's hold) */
	struct ucred cred;
	bool created; /* a Create went out: the sandbox is destroyed at the end */
	bool destroy; /* ... at the end of this loop turn (s_run_reap) */
	bool keep;
	bool retains; /* keep, and retention keeps workspaces: an error names the workspace */
	uint32_t output_kb;
	char sandbox_id[SBX_ID_MAX + 1];
	char workspace[PATH_MAX];
} s_run_t;

/* The exec socket's side of the replies (defined with the Run handler). */
typedef struct s_run_tag s_run_tag_t;
static const s_run_tag_t *s_run_tag(const ahp_rpc_req_t *req);
static bool s_run_keeps(sbx_daemon_t *self, const s_run_tag_t *tag);
static void s_run_on_error(sbx_daemon_t *self, ahp_rpc_req_t **req, int status, const char *msg);
static void s_run_on_created(sbx_daemon_t *self, ahp_rpc_req_t **req, const char *workspace);
static void s_run_on_result(sbx_daemon_t *self, ahp_rpc_req_t **req, const uint8_t *res,
                            size_t len);

/* ------------------------------------------------------------ validators -- */

bool
sbx_oneshot_id(const char *id)
{
	return id != NULL && strncmp(id, SBX_ONESHOT_PREFIX, strlen(SBX_ONESHOT_PREFIX)) == 0;
}

bool
sbx_valid_id(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > SBX_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-'))
			return false;
	}
	return true;
}

/* Exec ids become file names: a small charset and no leading dot. */
bool
sbx_valid_exec_id(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > SBX_EXEC_ID_MAX || s[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.' || c == ':'))
			return false;
	}
	return true;
}

static bool
s_valid_profile(const char *s)
{
	return s == NULL || s[0] == '\0' || sbx_profile_name_ok(s);
}

/* True when run id and profile fit the PROXY v2 header (ahp/proxyv2.h). */
static bool
s_proxy_nameable(const char *run_id, const char *profile)
{
	uint8_t hdr[AHP_PP2_HEADER_MAX];
	return ahp_proxyv2_encode(run_id, profile ? profile : "", hdr, sizeof(hdr)) > 0;
}

/* protobuf-c turns string fields into C strings, so an embedded NUL would
 * silently cut a command short. This walks the wire bytes with the message
 * descriptors and reports any string field holding a NUL. */
static bool
s_wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;
		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return true;
	}
	return false;
}

static bool
s_wire_has_nul(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len, int depth)
{
	const uint8_t *end = p + len;
	if (depth > 8)
		return false;
	while (p < end) {
		uint64_t key, v;
		if (!s_wire_varint(&p, end, &key))
			return false; /* malformed: the decoder reports it */
		int wt = (int)(key & 7);
		uint32_t num = (uint32_t)(key >> 3);
		if (wt == 0) {
			if (!s_wire_varint(&p, end, &v))
				return false;
		} else if (wt == 1 || wt == 5) {
			size_t w = wt == 1 ? 8 : 4;
			if ((size_t)(end - p) < w)
				return false;
			p += w;
		} else if (wt == 2) {
			if (!s_wire_varint(&p, end, &v) || v > (uint64_t)(end - p))
				return false;
			const ProtobufCFieldDescriptor *f =
			    protobuf_c_message_descriptor_get_field(desc, num);
			if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING &&
			    memchr(p, 0, (size_t)v) != NULL)
				return true;
			if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE &&
			    s_wire_has_nul(f->descriptor, p, (size_t)v, depth + 1))
				return true;
			p += v;
		} else {
			return false;
		}
	}
	return false;
}

/* ---------------------------------------------------------------- replies -- */

static void
s_send(sbx_daemon_t *self, ahp_rpc_req_t **req, const Ahp__Sbx__Reply *rep)
{
	if (s_run_tag(*req) != NULL) { /* no such reply on the exec socket's path */
		ahp_rpc_req_free(req);
		return;
	}
	size_t len = ahp__sbx__reply__get_packed_size(rep);
	uint8_t stackbuf[1024];
	uint8_t *buf = len <= sizeof(stackbuf) ? stackbuf : malloc(len);
	if (buf == NULL) {
		ahp_rpc_req_free(req);
		return;
	}
	ahp__sbx__reply__pack(rep, buf);
	if (ahp_rpc_server_reply(self->rpc, req, buf, len) != 0)
		log_warn("rpc: reply failed");
	if (buf != stackbuf)
		free(buf);
}

void
sbx_reply_error(sbx_daemon_t *self, ahp_rpc_req_t **req, int status, const char *msg)
{
	if (req == NULL || *req == NULL)
		return;
	if (s_run_tag(*req) != NULL) {
		s_run_on_error(self, req, status, msg);
		return;
	}
	Ahp__Error e;
	ahp_error_set(&e, status, msg);
	Ahp__Sbx__Reply rep = AHP__SBX__REPLY__INIT;
	rep.error = &e;
	s_send(self, req, &rep);
}

void
sbx_reply_exec_packed(sbx_daemon_t *self, ahp_rpc_req_t **req, const uint8_t *res, size_t len)
{
	if (req == NULL || *req == NULL)
		return;
	if (s_run_tag(*req) != NULL) {
		s_run_on_result(self, req, res, len);
		return;
	}
	/* Reply{exec = <res>}: field 3, length-delimited, wrapped by hand so a
	 * stored result goes out without being decoded and re-encoded. */
	uint8_t *buf = malloc(len + 11);
	if (buf == NULL) {
		ahp_rpc_req_free(req);
		return;
	}
	size_t n = 0;
	buf[n++] = (3 << 3) | 2;
	uint64_t v = len;
	do {
		buf[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v != 0);
	memcpy(buf + n, res, len);
	if (ahp_rpc_server_reply(self->rpc, req, buf, n + len) != 0)
		log_warn("rpc: reply failed");
	free(buf);
}

void
sbx_reply_create(sbx_daemon_t *self, ahp_rpc_req_t **req, const char *id, bool existed,
                 const char *workspace)
{
	if (req != NULL && *req != NULL && s_run_tag(*req) != NULL) {
		s_run_on_created(self, req, workspace);
		return;
	}
	Ahp__Sbx__CreateReply cr = AHP__SBX__CREATE_REPLY__INIT;
	cr.sandbox_id = (char *)id;
	cr.existed = existed;
	cr.workspace = (char *)workspace;
	Ahp__Sbx__Reply rep = AHP__SBX__REPLY__INIT;
	rep.body_case = AHP__SBX__REPLY__BODY_CREATE;
	rep.create = &cr;
	s_send(self, req, &rep);
}

static void
s_reply_destroyed(sbx_daemon_t *self, ahp_rpc_req_t **req)
{
	if (req != NULL && *req != NULL && s_run_tag(*req) != NULL) {
		ahp_rpc_req_free(req); /* the Destroy after a one-shot: nobody waits */
		return;
	}
	Ahp__Sbx__DestroyReply dr = AHP__SBX__DESTROY_REPLY__INIT;
	Ahp__Sbx__Reply rep = AHP__SBX__REPLY__INIT;
	rep.body_case = AHP__SBX__REPLY__BODY_DESTROY;
	rep.destroy = &dr;
	s_send(self, req, &rep);
}

/* -------------------------------------------------------------- accessors -- */

const sbx_config_t *
sbx_daemon_config(const sbx_daemon_t *self)
{
	return &self->cfg;
}

sbx_store_t *
sbx_daemon_store(sbx_daemon_t *self)
{
	return self->store;
}

/* ------------------------------------------------------------------ slots -- */

static void
s_slot_set(sbx_daemon_t *self, uint32_t slot, bool used)
{
	if (slot >= self->cfg.uid_count)
		return;
	if (used)
		self->slots[slot / 8] |= (uint8_t)(1u << (slot % 8));
	else
		self->slots[slot / 8] &= (uint8_t) ~(1u << (slot % 8));
}

static int
s_slot_alloc(sbx_daemon_t *self, uint32_t *slot)
{
	for (uint32_t i = 0; i < self->cfg.uid_count; i++) {
		if (!(self->slots[i / 8] & (1u << (i % 8)))) {
			s_slot_set(self, i, true);
			*slot = i;
			return 0;
		}
	}
	return -1;
}

/* ------------------------------------------------------------- sandboxes -- */

/* A run's sandbox by id (spares and destroyed ones have ids starting with '.'). */
static sbx_sandbox_t *
s_find(sbx_daemon_t *self, const char *id)
{
	for (size_t i = 0; i < self->n_sbx; i++)
		if (strcmp(sbx_sandbox_id(self->sbx[i]), id) == 0)
			return self->sbx[i];
	return NULL;
}

/* The sandbox, alive or dying, that holds uid slot `slot`. */
static sbx_sandbox_t *
s_find_slot(sbx_daemon_t *self, uint32_t slot)
{
	for (size_t i = 0; i < self->n_sbx; i++)
		if (sbx_sandbox_slot(self->sbx[i]) == slot)
			return self->sbx[i];
	return NULL;
}

static size_t
s_count_runs(const sbx_daemon_t *self)
{
	size_t n = 0;
	for (size_t i = 0; i < self->n_sbx; i++)
		n += sbx_sandbox_id(self->sbx[i])[0] != '.';
	return n;
}

/* Removes a dead, fully reaped sandbox from the array (RPC phase only). */
static void
s_drop(sbx_daemon_t *self, sbx_sandbox_t *s)
{
	for (size_t i = 0; i < self->n_sbx; i++) {
		if (self->sbx[i] != s)
			continue;
		sbx_sandbox_destroy(&self->sbx[i]);
		self->sbx[i] = self->sbx[--self->n_sbx];
		return;
	}
}

static bool
s_bit(const uint8_t *map, uint32_t slot)
{
	return (map[slot / 8] & (1u << (slot % 8))) != 0;
}

static void
s_bit_set(uint8_t *map, uint32_t slot, bool on)
{
	if (on)
		map[slot / 8] |= (uint8_t)(1u << (slot % 8));
	else
		map[slot / 8] &= (uint8_t) ~(1u << (slot % 8));
}

/* The slot's workspace, disk and exec log go (the parent does it off its
 * spawning path); the slot stays in use until it says DISCARDED, so a new
 * sandbox never gets a slot whose previous disk is still there.
 * (Freed slots are not "compacted" by replacing a ready spare with one on a
 * lower slot: that cost a whole sandbox build per freed slot, about 10 ms of
 * CPU, and under back-to-back one-shots killed some 9 spares per 100 runs,
 * doubling p99, for uids that are merely tidier.) */
static void
s_discard(sbx_daemon_t *self, uint32_t slot)
{
	sbx_spawn_req_t req;
	memset(&req, 0, sizeof(req));
	req.type = SBX_ZY_DISCARD;
	req.slot = slot;
	req.uid = self->cfg.uid_base + slot;
	if (slot >= self->cfg.uid_count)
		return;
	if (sbx_daemon_zygote(self, &req) != 0) {
		log_warn("slot %u: cannot ask the zygote to discard its workspace", slot);
		s_slot_set(self, slot, false);
		return;
	}
	s_bit_set(self->discarding, slot, true);
}

/* The parent finished a DISCARD: the slot is free now. */
static void
s_on_discarded(sbx_daemon_t *self, uint32_t slot)
{
	if (slot >= self->cfg.uid_count || !s_bit(self->discarding, slot))
		return; /* not ours (asked by an earlier worker) */
	s_bit_set(self->discarding, slot, false);
	s_slot_set(self, slot, false);
}

/* -------------------------------------------------------------- retention -- */

/*
 * A Destroy with keep_workspace (the orchestrator sends it for a failed run,
 * so that a resume finds the files the conversation talks about) keeps the
 * workspace, exec log, metadata and uid slot; a later Create of the same id
 * reuses them. Those kept workspaces are retained within retain_failed_max
 * (oldest deleted first) and retain_failed_s; the list lives in memory, is
 * rebuilt from the metadata at start, and a pass runs at start, after each
 * such Destroy and when the oldest comes of age. Deletion is the Destroy
 * path's: the zygote moves the workspace to the trash and deletes it as its
 * uid without following symlinks.
 */

static ssize_t
s_retained_find(const sbx_daemon_t *self, const char *id)
{
	for (size_t i = 0; i < self->n_retained; i++)
		if (strcmp(self->retained[i].id, id) == 0)
			return (ssize_t)i;
	return -1;
}

/* Lists a kept workspace in kept_ms order (once per id). 0 / -1 (out of memory). */
static int
s_retained_add(sbx_daemon_t *self, const char *id, uint32_t slot, int64_t kept_ms)
{
	if (s_retained_find(self, id) >= 0)
		return 0;
	if (self->n_retained == self->cap_retained) {
		size_t cap = self->cap_retained ? self->cap_retained * 2 : 16;
		s_retained_t *n = realloc(self->retained, cap * sizeof(*n));
		if (n == NULL)
			return -1;
		self->retained = n;
		self->cap_retained = cap;
	}
	size_t i = self->n_retained;
	while (i > 0 && self->retained[i - 1].kept_ms > kept_ms)
		i--;
	memmove(&self->retained[i + 1], &self->retained[i],
	        (self->n_retained - i) * sizeof(self->retained[0]));
	ahp_strlcpy(self->retained[i].id, id, sizeof(self->retained[i].id));
	self->retained[i].slot = slot;
	self->retained[i].kept_ms = kept_ms;
	self->n_retained++;
	self->retain_due_ms = 0;
	return 0;
}

static void
s_retained_remove_at(sbx_daemon_t *self, size_t i)
{
	memmove(&self->retained[i], &self->retained[i + 1],
	        (self->n_retained - i - 1) * sizeof(self->retained[0]));
	self->n_retained--;
}

/* The id is in use again (recreated) or deleted: no longer retained. */
static void
s_retained_forget(sbx_daemon_t *self, const char *id)
{
	ssize_t i = s_retained_find(self, id);
	if (i >= 0)
		s_retained_remove_at(self, (size_t)i);
}

/* Deletes the retained workspaces over the count limit, oldest first, and
 * those past the age limit; a sandbox still dying in its slot is deleted on a
 * later pass. Sets when the next pass is due. */
static void
s_retain(sbx_daemon_t *self)
{
	int64_t now = ahp_now_ms();
	if (self->n_retained == 0 || self->retain_due_ms > now)
		return;
	int64_t next = now + S_RETAIN_CHECK_MS;
	int64_t max_age = (int64_t)self->cfg.retain_failed_s * 1000;
	size_t excess = self->n_retained > self->cfg.retain_failed_max
	                    ? self->n_retained - self->cfg.retain_failed_max
	                    : 0;
	for (size_t i = 0; i < self->n_retained;) {
		s_retained_t *r = &self->retained[i];
		bool too_old = now - r->kept_ms >= max_age;
		if (excess == 0 && !too_old) {
			/* sorted by age: the rest are younger */
			if (r->kept_ms + max_age < next)
				next = r->kept_ms + max_age;
			break;
		}
		const char *why =
		    excess > 0 ? "over retain_failed_max" : "older than retain_failed_s";
		if (excess > 0)
			excess--;
		sbx_meta_t meta;
		if (s_find(self, r->id) != NULL ||
		    sbx_store_meta_read(self->store, r->id, &meta) != 0 || !meta.kept ||
		    meta.slot != r->slot) {
			/* recreated, or its record changed under us: not ours to delete */
			s_retained_remove_at(self, i);
			continue;
		}
		if (s_find_slot(self, r->slot) != NULL) {
			next = now + S_RETAIN_RETRY_MS; /* its processes are still exiting */
			i++;
			continue;
		}
		if (sbx_store_meta_unlink(self->store, r->id) != 0) {
			log_warn("sandbox %s: removing metadata: %s", r->id, strerror(errno));
			i++;
			continue;
		}
		s_discard(self, r->slot);
		log_info("sandbox %s: retained workspace deleted (%s; kept %llds ago)", r->id, why,
		         (long long)((now - r->kept_ms) / 1000));
		s_retained_remove_at(self, i);
	}
	self->retain_due_ms = next;
}

/* Milliseconds until the next retention pass, or -1 when none is pending. */
static long
s_retain_timeout(const sbx_daemon_t *self)
{
	if (self->n_retained == 0)
		return -1;
	int64_t ms = self->retain_due_ms - ahp_now_ms();
	if (ms < 0)
		return 0;
	return ms > S_RETAIN_CHECK_MS ? S_RETAIN_CHECK_MS : (long)ms;
}

/* At start: every slot on disk is in use; kept workspaces are retained. A
 * one-shot's record that is not kept is one cut short by a crash (only a
 * --keep one-shot, or any under keep_workspaces, has a record while it runs):
 * nothing can Create (SBX_ONESHOT_PREFIX) or Destroy it, so it is kept here
 * as the Destroy after it would have, under retention. */
static void
s_mark_slot(void *arg, const char *id, const sbx_meta_t *meta)
{
	sbx_daemon_t *self = arg;
	s_slot_set(self, meta->slot, true);
	sbx_meta_t kept;
	if (sbx_oneshot_id(id) && !meta->kept) {
		kept = *meta;
		kept.kept = true;
		kept.kept_ms = self->cfg.keep_workspaces ? 0 : ahp_now_ms();
		if (sbx_store_meta_write(self->store, id, &kept, false) != 0) {
			log_warn("sandbox %s: writing metadata: %s", id, strerror(errno));
			return;
		}
		log_info("sandbox %s: a one-shot cut short by a restart; its workspace is kept",
		         id);
		meta = &kept;
	}
	if (meta->kept && meta->kept_ms > 0 && !self->cfg.keep_workspaces &&
	    s_retained_add(self, id, meta->slot, meta->kept_ms) != 0)
		log_warn("sandbox %s: out of memory listing its retained workspace", id);
}

static int
s_add_sandbox(sbx_daemon_t *self, sbx_sandbox_t *s)
{
	if (self->n_sbx == self->cap_sbx) {
		size_t cap = self->cap_sbx ? self->cap_sbx * 2 : 16;
		sbx_sandbox_t **n = realloc(self->sbx, cap * sizeof(*n));
		if (n == NULL)
			return -1;
		self->sbx = n;
		self->cap_sbx = cap;
	}
	self->sbx[self->n_sbx++] = s;
	return 0;
}

/* Starts a sandbox through the zygote: a run's (id) or a pool spare (NULL).
 * NULL on failure; then a reply has been sent when req is not NULL. */
static sbx_sandbox_t *
s_start(sbx_daemon_t *self, ahp_rpc_req_t **req, const char *id, const sbx_meta_t *meta,
        uint32_t slot)
{
	char err[256];
	sbx_sandbox_t *s = sbx_sandbox_new(self, id, meta, slot);
	if (s == NULL || s_add_sandbox(self, s) != 0) {
		sbx_sandbox_destroy(&s);
		sbx_reply_error(self, req, AHP__STATUS__ERR_INTERNAL, "out of memory");
		return NULL;
	}
	if (sbx_sandbox_start(s, err, sizeof(err)) != 0) {
		log_error("sandbox %s: start failed: %s", sbx_sandbox_id(s), err);
		sbx_reply_error(self, req, AHP__STATUS__ERR_INTERNAL, err);
		return NULL; /* listed until it is gone */
	}
	if (id != NULL)
		log_info("sandbox %s starting (profile=%s network=%s uid=%u)", id,
		         meta->profile[0] ? meta->profile : "-",
		         meta->network == AHP__SBX__NETWORK_MODE__NET_PROXY ? "proxy" : "none",
		         (unsigned)(self->cfg.uid_base + slot));
	return s;
}

/* Keeps cfg.pool_size built sandboxes waiting, so a Create only has to claim
 * one: namespaces, mounts and cgroups are made ahead of time. */
#define S_POOL_HOLD_MIN_MS 100   /* after the first failed spare */
#define S_POOL_HOLD_MAX_MS 30000 /* doubling up to this while they keep failing */
#define S_POOL_RUN_HOLD_MS 1000  /* of a one-shot: the pool is topped up to one spare */

void
sbx_daemon_pool_result(sbx_daemon_t *self, bool ok)
{
	if (ok) {
		self->pool_fails = 0;
		self->pool_hold_ms = 0;
		return;
	}
	int64_t hold = S_POOL_HOLD_MIN_MS;
	for (uint32_t i = 0; i < self->pool_fails && hold < S_POOL_HOLD_MAX_MS; i++)
		hold *= 2;
	if (hold > S_POOL_HOLD_MAX_MS)
		hold = S_POOL_HOLD_MAX_MS;
	self->pool_fails++;
	self->pool_hold_ms = ahp_mono_ms() + hold;
	if (self->pool_fails == 1 || hold == S_POOL_HOLD_MAX_MS)
		log_warn("pool: a spare sandbox failed to start; refilling again in %lld ms",
		         (long long)hold);
}

static void
s_pool_fill(sbx_daemon_t *self)
{
	if (self->stopping || self->zygote < 0)
		return;
	/* Spares that keep failing (a broken host setup) must not become a
	 * tight spawn loop: back off, doubling, while they do. */
	if (self->pool_hold_ms != 0 && ahp_mono_ms() < self->pool_hold_ms)
		return;
	/* For S_POOL_RUN_HOLD_MS of a one-shot, top the pool up to one spare
	 * only: a build competes with its command for the CPUs and the kernel's
	 * locks (namespaces, mounts: with 2 CPUs the one-shot's p50 went from
	 * 7.4-8.4 to 5.4-5.9 ms holding the rest until it answered). One spare
	 * is still made while none is left, so a stream of one-shots keeps being
	 * served from the pool rather than each building its own on its path;
	 * and a long command does not keep the pool short for the daemon's
	 * other clients (s_run_timeout wakes the loop when the hold ends). */
	uint32_t want = self->cfg.pool_size;
	int64_t now = ahp_mono_ms();
	for (size_t i = 0; i < self->n_runs && want > 1; i++)
		if (self->runs[i]->state == S_RUN_BUSY &&
		    now - self->runs[i]->busy_since < S_POOL_RUN_HOLD_MS)
			want = 1;
	uint32_t spares = 0;
	for (size_t i = 0; i < self->n_sbx; i++) {
		/* Building competes for CPU and kernel locks with the claim a
		 * Create is waiting for: refill once it is answered. */
		if (sbx_sandbox_claiming(self->sbx[i]))
			return;
		spares += sbx_sandbox_is_spare(self->sbx[i]) && sbx_sandbox_alive(self->sbx[i]);
	}
	sbx_meta_t meta;
	memset(&meta, 0, sizeof(meta));
	sbx_default_limits(&meta.lim);
	for (; spares < want; spares++) {
		uint32_t slot;
		if (s_slot_alloc(self, &slot) != 0)
			return;
		if (s_start(self, NULL, NULL, &meta, slot) == NULL)
			return; /* freed when it is collected */
	}
}

/* The ready spare with the lowest uid slot; else the spare furthest along in
 * its start: a Create waits for it rather than for one more spawn behind
 * the refill (a tight create loop drains the pool). */
static sbx_sandbox_t *
s_ready_spare(sbx_daemon_t *self)
{
	sbx_sandbox_t *best = NULL;
	int best_rank = 0;
	for (size_t i = 0; i < self->n_sbx; i++) {
		sbx_sandbox_t *s = self->sbx[i];
		if (!sbx_sandbox_is_spare(s) || !sbx_sandbox_alive(s))
			continue;
		int rank = sbx_sandbox_ready(s) ? 3 : sbx_sandbox_start_stage(s);
		if (rank > best_rank || (rank == best_rank && rank > 0 &&
		                         sbx_sandbox_slot(s) < sbx_sandbox_slot(best))) {
			best = s;
			best_rank = rank;
		}
	}
	return best;
}

/* The platform CA goes into the /etc template, which only the privileged
 * parent writes. */
static void
s_ca_refresh(sbx_daemon_t *self)
{
	sbx_spawn_req_t req;
	memset(&req, 0, sizeof(req));
	req.type = SBX_ZY_CA;
	(void)sbx_daemon_call(self, &req);
}

/* A sandbox known only from disk (sandboxd restarted): bring it back. */
static sbx_sandbox_t *
s_revive(sbx_daemon_t *self, ahp_rpc_req_t **req, const char *id, bool *answered)
{
	sbx_meta_t meta;
	*answered = false;
	if (sbx_store_meta_read(self->store, id, &meta) != 0 || meta.kept)
		return NULL;
	*answered = true;
	if (meta.network == AHP__SBX__NETWORK_MODE__NET_PROXY) {
		if (!s_proxy_nameable(id, meta.profile)) {
			sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST,
			                SBX_PROXY_NAME_ERROR);
			return NULL;
		}
		s_ca_refresh(self);
	}
	if (meta.slot >= self->cfg.uid_count) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_INTERNAL,
		                "sandbox uid slot is outside uid_count");
		return NULL;
	}
	if (s_find_slot(self, meta.slot) != NULL) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_UNAVAILABLE,
		                "the sandbox's previous processes are still exiting; retry");
		return NULL;
	}
	s_slot_set(self, meta.slot, true);
	return s_start(self, req, id, &meta, meta.slot);
}

/* ------------------------------------------------------------------ calls -- */

static void
s_on_create(sbx_daemon_t *self, ahp_rpc_req_t **req, const Ahp__Sbx__CreateRequest *cr)
{
	char err[256];
	if (!sbx_valid_id(cr->run_id)) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST,
		                "run_id must match [A-Za-z0-9-]{1,64}");
		return;
	}
	if (!s_valid_profile(cr->profile)) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST,
		                "profile must match [a-z0-9-]{0,64}");
		return;
	}
	if (cr->network != AHP__SBX__NETWORK_MODE__NET_NONE &&
	    cr->network != AHP__SBX__NETWORK_MODE__NET_PROXY) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST, "unknown network mode");
		return;
	}
	if (cr->network == AHP__SBX__NETWORK_MODE__NET_PROXY) {
		/* fail closed: every relayed connection must name run and profile */
		if (!s_proxy_nameable(cr->run_id, cr->profile)) {
			sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST,
			                SBX_PROXY_NAME_ERROR);
			return;
		}
		s_ca_refresh(self);
	}
	sbx_meta_t meta;
	memset(&meta, 0, sizeof(meta));
	if (sbx_request_limits(cr->limits, &meta.lim, err, sizeof(err)) != 0) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST, err);
		return;
	}
	ahp_strlcpy(meta.profile, cr->profile ? cr->profile : "", sizeof(meta.profile));
	meta.network = cr->network;
	/* the exec socket's Run: s_run_start checked that nothing of that id is on
	 * disk. Its sandbox keeps no record, unless its workspace is to be kept:
	 * the reply names the kept workspace, so its record must be on disk
	 * before it (the Destroy that marks it kept comes after the reply). */
	const s_run_tag_t *tag = s_run_tag(*req);
	meta.oneshot = tag != NULL && !self->cfg.keep_workspaces && !s_run_keeps(self, tag);

	sbx_sandbox_t *s = s_find(self, cr->run_id);
	if (s != NULL && sbx_sandbox_alive(s)) {
		sbx_sandbox_wait_ready(s, req, true);
		return;
	}
	if (s != NULL) {
		/* died on its own (its init was killed): start it again */
		if (!sbx_sandbox_reap_cgroup(s) || !sbx_sandbox_gone(s)) {
			sbx_reply_error(self, req, AHP__STATUS__ERR_UNAVAILABLE,
			                "the sandbox's processes are still exiting; retry");
			return;
		}
		s_drop(self, s);
	}
	/* On disk from before a restart (or kept): same workspace, same uid,
	 * the limits and network the caller asks for now. */
	sbx_meta_t old;
	if (!meta.oneshot && sbx_store_meta_read(self->store, cr->run_id, &old) == 0) {
		if (old.slot >= self->cfg.uid_count) {
			sbx_reply_error(self, req, AHP__STATUS__ERR_INTERNAL,
			                "sandbox uid slot is outside uid_count");
			return;
		}
		if (s_find_slot(self, old.slot) != NULL) {
			/* right after its Destroy (a failed run resumed at once) */
			sbx_reply_error(
			    self, req, AHP__STATUS__ERR_UNAVAILABLE,
			    "the sandbox's previous processes are still exiting; retry");
			return;
		}
		s_retained_forget(self, cr->run_id);
		meta.created_ms = old.created_ms;
		meta.execs = old.execs;
		memcpy(meta.cwd, old.cwd, sizeof(meta.cwd));
		s_slot_set(self, old.slot, true);
		s = s_start(self, req, cr->run_id, &meta, old.slot);
		if (s != NULL)
			sbx_sandbox_wait_ready(s, req, true);
		return;
	}
	if (s_count_runs(self) >= self->cfg.max_sandboxes) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_LIMIT, "too many sandboxes");
		return;
	}
	sbx_sandbox_t *spare = s_ready_spare(self);
	if (spare != NULL) {
		if (sbx_sandbox_claim(spare, cr->run_id, &meta, err, sizeof(err)) == 0) {
			log_info("sandbox %s ready (profile=%s network=%s uid=%u, from the pool)",
			         cr->run_id, meta.profile[0] ? meta.profile : "-",
			         meta.network == AHP__SBX__NETWORK_MODE__NET_PROXY ? "proxy"
			                                                           : "none",
			         (unsigned)(self->cfg.uid_base + sbx_sandbox_slot(spare)));
			sbx_sandbox_wait_ready(spare, req, false);
			return;
		}
		log_warn("claiming a spare failed (%s): starting one", err);
	}
	uint32_t slot;
	if (s_slot_alloc(self, &slot) != 0) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_LIMIT, "no free sandbox uid");
		return;
	}
	s = s_start(self, req, cr->run_id, &meta, slot);
	if (s != NULL)
		sbx_sandbox_wait_ready(s, req, false);
	s_pool_fill(self);
}

/* Answers an exec id of a sandbox that is not running from its records.
 * Returns true when answered. */
static bool
s_answer_from_disk(sbx_daemon_t *self, ahp_rpc_req_t **req, const char *id, const char *exec_id,
                   bool fetch)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	sbx_meta_t meta;
	int r = 0;
	if (sbx_store_meta_read(self->store, id, &meta) == 0)
		r = sbx_store_exec_lookup(self->store, meta.slot, exec_id, &buf, &len);
	if (r == 2) {
		/* a damaged record is reported as lost, never as a result */
		Ahp__Sbx__ExecResult *res = ahp__sbx__exec_result__unpack(NULL, len, buf);
		if (res != NULL)
			sbx_reply_exec_packed(self, req, buf, len);
		else
			sbx_reply_error(self, req, AHP__STATUS__ERR_INTERRUPTED,
			                "the stored result is damaged");
		ahp__sbx__exec_result__free_unpacked(res, NULL);
		free(buf);
		return true;
	}
	if (r == 1) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_INTERRUPTED,
		                "the command's outcome was lost (sandboxd stopped while it ran); "
		                "it is not run again");
		return true;
	}
	if (r < 0) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_INTERNAL, "cannot read exec records");
		return true;
	}
	if (fetch) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_NOT_FOUND,
		                "no such sandbox or exec id");
		return true;
	}
	return false;
}

static void
s_on_exec(sbx_daemon_t *self, ahp_rpc_req_t **req, const Ahp__Sbx__ExecRequest *er)
{
	if (!sbx_valid_id(er->sandbox_id)) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST, "bad sandbox_id");
		return;
	}
	if (!sbx_valid_exec_id(er->exec_id)) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST,
		                "exec_id must match [A-Za-z0-9._:-]{1,128} and not start with '.'");
		return;
	}
	char err[128];
	if (sbx_exec_request_range(er, err, sizeof(err)) != 0) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST, err);
		return;
	}
	sbx_sandbox_t *s = s_find(self, er->sandbox_id);
	if (s != NULL && sbx_sandbox_alive(s)) {
		sbx_sandbox_exec(s, req, er);
		return;
	}
	if (s != NULL) {
		/* its init died on its own: revived below once fully gone */
		if (!sbx_sandbox_reap_cgroup(s) || !sbx_sandbox_gone(s)) {
			sbx_reply_error(self, req, AHP__STATUS__ERR_UNAVAILABLE,
			                "the sandbox is restarting; retry");
			return;
		}
		s_drop(self, s);
	}
	/* Not running: answer from the records, else bring it back. */
	if (s_answer_from_disk(self, req, er->sandbox_id, er->exec_id, false))
		return;
	bool answered;
	s = s_revive(self, req, er->sandbox_id, &answered);
	if (s == NULL) {
		if (!answered)
			sbx_reply_error(self, req, AHP__STATUS__ERR_NOT_FOUND, "unknown sandbox");
		return;
	}
	sbx_sandbox_exec(s, req, er);
}

static void
s_on_fetch(sbx_daemon_t *self, ahp_rpc_req_t **req, const Ahp__Sbx__FetchRequest *fr)
{
	if (!sbx_valid_id(fr->sandbox_id) || !sbx_valid_exec_id(fr->exec_id)) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST,
		                "bad sandbox_id or exec_id");
		return;
	}
	sbx_sandbox_t *s = s_find(self, fr->sandbox_id);
	if (s != NULL && sbx_sandbox_alive(s)) {
		sbx_sandbox_fetch(s, req, fr->exec_id);
		return;
	}
	s_answer_from_disk(self, req, fr->sandbox_id, fr->exec_id, true);
}

static void
s_on_destroy(sbx_daemon_t *self, ahp_rpc_req_t **req, const Ahp__Sbx__DestroyRequest *dr)
{
	if (!sbx_valid_id(dr->sandbox_id)) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST, "bad sandbox_id");
		return;
	}
	/* keep_workspaces keeps every workspace for good; keep_workspace keeps
	 * one under retention (retain_failed_max 0: none). */
	bool retain =
	    !self->cfg.keep_workspaces && dr->keep_workspace && self->cfg.retain_failed_max > 0;
	bool keep = retain || self->cfg.keep_workspaces;
	sbx_sandbox_t *s = s_find(self, dr->sandbox_id);
	sbx_meta_t meta;
	bool on_disk = sbx_store_meta_read(self->store, dr->sandbox_id, &meta) == 0;
	if (s == NULL && !on_disk) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_NOT_FOUND, "unknown sandbox");
		return;
	}
	if (s != NULL) {
		meta = *sbx_sandbox_meta(s);
		sbx_sandbox_kill(s, AHP__STATUS__ERR_CANCELLED, "the sandbox was destroyed");
	}
	if (keep) {
		/* everything stays on disk, the uid slot stays reserved */
		bool again = meta.kept && meta.kept_ms > 0; /* a repeated Destroy */
		meta.kept = true;
		if (retain && !again)
			meta.kept_ms = ahp_now_ms();
		if (sbx_store_meta_write(self->store, dr->sandbox_id, &meta, false) != 0)
			log_warn("sandbox %s: writing metadata: %s", dr->sandbox_id,
			         strerror(errno));
		if (s != NULL)
			sbx_sandbox_retire(s, false);
		if (retain && s_retained_add(self, dr->sandbox_id, meta.slot, meta.kept_ms) != 0)
			log_warn("sandbox %s: out of memory listing its retained workspace",
			         dr->sandbox_id);
	} else {
		/* The id is free at once; the workspace and log go (the zygote
		 * deletes them as the sandbox's uid) and the slot is freed once
		 * the processes are gone. */
		if (sbx_store_meta_unlink(self->store, dr->sandbox_id) != 0)
			log_warn("sandbox %s: removing metadata: %s", dr->sandbox_id,
			         strerror(errno));
		s_retained_forget(self, dr->sandbox_id);
		if (s != NULL) {
			sbx_sandbox_retire(s, true);
		} else if (s_find_slot(self, meta.slot) == NULL &&
		           (meta.slot >= self->cfg.uid_count ||
		            !s_bit(self->discarding, meta.slot))) {
			s_discard(self, meta.slot);
		}
	}
	log_info("sandbox %s destroyed%s", dr->sandbox_id,
	         retain ? " (workspace retained)"
	         : keep ? " (workspace kept)"
	                : "");
	s_reply_destroyed(self, req);
}

typedef struct {
	sbx_daemon_t *d;
	Ahp__Sbx__SandboxInfo *infos;
	Ahp__Sbx__SandboxInfo **ptrs;
	char (*ids)[SBX_ID_MAX + 1];
	char (*profiles)[SBX_PROFILE_MAX + 1];
	size_t n, cap;
} s_list_t;

static void
s_list_disk(void *arg, const char *id, const sbx_meta_t *meta)
{
	s_list_t *l = arg;
	if (meta->kept || s_find(l->d, id) != NULL || l->n >= l->cap)
		return;
	Ahp__Sbx__SandboxInfo *i = &l->infos[l->n];
	ahp__sbx__sandbox_info__init(i);
	ahp_strlcpy(l->ids[l->n], id, sizeof(l->ids[0]));
	ahp_strlcpy(l->profiles[l->n], meta->profile, sizeof(l->profiles[0]));
	i->sandbox_id = l->ids[l->n];
	i->profile = l->profiles[l->n];
	i->network = meta->network;
	i->created_ms = meta->created_ms;
	i->execs = meta->execs;
	l->ptrs[l->n] = i;
	l->n++;
}

static void
s_on_list(sbx_daemon_t *self, ahp_rpc_req_t **req)
{
	s_list_t l = {.d = self, .cap = self->n_sbx + self->cfg.max_sandboxes};
	l.infos = calloc(l.cap, sizeof(*l.infos));
	l.ptrs = calloc(l.cap, sizeof(*l.ptrs));
	l.ids = calloc(l.cap, sizeof(*l.ids));
	l.profiles = calloc(l.cap, sizeof(*l.profiles));
	if (l.infos == NULL || l.ptrs == NULL || l.ids == NULL || l.profiles == NULL) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_INTERNAL, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < self->n_sbx; i++) {
		sbx_sandbox_t *s = self->sbx[i];
		if (!sbx_sandbox_alive(s) || sbx_sandbox_id(s)[0] == '.')
			continue;
		ahp__sbx__sandbox_info__init(&l.infos[l.n]);
		sbx_sandbox_info(s, &l.infos[l.n]);
		l.ptrs[l.n] = &l.infos[l.n];
		l.n++;
	}
	sbx_store_meta_each(self->store, s_list_disk, &l);
	Ahp__Sbx__ListReply lr = AHP__SBX__LIST_REPLY__INIT;
	lr.n_sandboxes = l.n;
	lr.sandboxes = l.ptrs;
	Ahp__Sbx__Reply rep = AHP__SBX__REPLY__INIT;
	rep.body_case = AHP__SBX__REPLY__BODY_LIST;
	rep.list = &lr;
	s_send(self, req, &rep);
out:
	free(l.infos);
	free(l.ptrs);
	free(l.ids);
	free(l.profiles);
}

static void
s_on_create_req(sbx_daemon_t *self, ahp_rpc_req_t **req, const Ahp__Sbx__Request *m)
{
	/* the one-shots' ids are Run's alone (sbx.h, SBX_ONESHOT_PREFIX) */
	if (sbx_oneshot_id(m->create->run_id)) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST, SBX_ONESHOT_ID_ERROR);
		return;
	}
	s_on_create(self, req, m->create);
}

static void
s_on_exec_req(sbx_daemon_t *self, ahp_rpc_req_t **req, const Ahp__Sbx__Request *m)
{
	s_on_exec(self, req, m->exec);
}

static void
s_on_fetch_req(sbx_daemon_t *self, ahp_rpc_req_t **req, const Ahp__Sbx__Request *m)
{
	s_on_fetch(self, req, m->fetch);
}

static void
s_on_destroy_req(sbx_daemon_t *self, ahp_rpc_req_t **req, const Ahp__Sbx__Request *m)
{
	s_on_destroy(self, req, m->destroy);
}

static void
s_on_list_req(sbx_daemon_t *self, ahp_rpc_req_t **req, const Ahp__Sbx__Request *m)
{
	(void)m;
	s_on_list(self, req);
}

typedef void (*s_handler_fn)(sbx_daemon_t *self, ahp_rpc_req_t **req, const Ahp__Sbx__Request *m);

/* One row per request body (its field number in Request): the handler and the
 * largest request of that kind, checked on the wire before anything is
 * decoded. Anything else is refused in one place. The caps leave room for
 * every field at its own maximum (ids, profile, limits; an Exec's command at
 * SBX_CMD_MAX) and nothing more. */
static const struct {
	int body;
	const char *name;
	s_handler_fn fn;
	size_t max_size;
} s_handlers[] = {
    {AHP__SBX__REQUEST__BODY_CREATE, "create", s_on_create_req, 512},
    {AHP__SBX__REQUEST__BODY_EXEC, "exec", s_on_exec_req, SBX_CMD_MAX + 512},
    {AHP__SBX__REQUEST__BODY_FETCH, "fetch", s_on_fetch_req, 256},
    {AHP__SBX__REQUEST__BODY_DESTROY, "destroy", s_on_destroy_req, 128},
    {AHP__SBX__REQUEST__BODY_LIST, "list", s_on_list_req, 64},
};

/* The body a Request's wire bytes carry, without decoding them: the field
 * number of the last top-level length-delimited field that names a known
 * body (a oneof takes the last one), 0 when none does. -1 when the bytes
 * are not a well-formed message at the top level. *unknown: a field no row
 * names was seen. */
static int
s_wire_body(const uint8_t *p, size_t len, bool *unknown)
{
	const uint8_t *end = p + len;
	int body = 0;
	*unknown = false;
	while (p < end) {
		uint64_t key, v;
		if (!s_wire_varint(&p, end, &key))
			return -1;
		int wt = (int)(key & 7);
		uint64_t num = key >> 3;
		if (wt == 0) {
			if (!s_wire_varint(&p, end, &v))
				return -1;
		} else if (wt == 1 || wt == 5) {
			size_t w = wt == 1 ? 8 : 4;
			if ((size_t)(end - p) < w)
				return -1;
			p += w;
		} else if (wt == 2) {
			if (!s_wire_varint(&p, end, &v) || v > (uint64_t)(end - p))
				return -1;
			p += v;
		} else {
			return -1;
		}
		bool known = false;
		for (size_t i = 0; i < sizeof s_handlers / sizeof s_handlers[0]; i++)
			if ((uint64_t)s_handlers[i].body == num && wt == 2) {
				body = (int)num;
				known = true;
			}
		if (!known)
			*unknown = true;
	}
	return body;
}

/* Dispatch: the body type is read off the wire, its size cap checked, and only
 * then is the request decoded and handed to its row's handler. */
static void
s_dispatch(sbx_daemon_t *self, ahp_rpc_req_t **req)
{
	ahp_rpc_req_t *r = *req;
	if (self->stopping) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_UNAVAILABLE, "sandboxd is stopping");
		return;
	}
	bool unknown;
	int body = s_wire_body(r->body, r->body_len, &unknown);
	if (body < 0) {
		log_warn("rpc: undecodable request (%zu bytes)", r->body_len);
		sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST, "malformed request");
		return;
	}
	size_t row = 0;
	while (row < sizeof s_handlers / sizeof s_handlers[0] && s_handlers[row].body != body)
		row++;
	if (body == 0 || row == sizeof s_handlers / sizeof s_handlers[0]) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_UNKNOWN_METHOD,
		                unknown ? "unknown request body" : "absent request body");
		return;
	}
	if (r->body_len > s_handlers[row].max_size) {
		char msg[96];
		snprintf(msg, sizeof msg, "%s request of %zu bytes (max %zu)", s_handlers[row].name,
		         r->body_len, s_handlers[row].max_size);
		sbx_reply_error(self, req, AHP__STATUS__ERR_TOO_LARGE, msg);
		return;
	}
	Ahp__Sbx__Request *m = ahp__sbx__request__unpack(NULL, r->body_len, r->body);
	if (m == NULL) {
		log_warn("rpc: undecodable request (%zu bytes)", r->body_len);
		sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST, "malformed request");
		return;
	}
	if (s_wire_has_nul(&ahp__sbx__request__descriptor, r->body, r->body_len, 0)) {
		sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST,
		                "a string field contains a NUL byte");
		ahp__sbx__request__free_unpacked(m, NULL);
		return;
	}
	if ((int)m->body_case != body) /* cannot happen: the wire said otherwise */
		sbx_reply_error(self, req, AHP__STATUS__ERR_BAD_REQUEST, "malformed request");
	else
		s_handlers[row].fn(self, req, m);
	ahp__sbx__request__free_unpacked(m, NULL);
	if (*req != NULL) /* every path replies or takes the request */
		sbx_reply_error(self, req, AHP__STATUS__ERR_INTERNAL, "request not answered");
}

/* ------------------------------------------------------- one-shot (Run) -- */

/*
 * `sandboxd exec` sends one Run request (create + exec + destroy) on the exec
 * socket, a unix SOCK_SEQPACKET socket next to the RPC endpoint: one message
 * per packet, framed by the kernel, and no ZeroMQ in the client, whose
 * process start is most of a one-shot's cost. The socket admits the
 * endpoint's allowed peers (SO_PEERCRED, before anything is read), caps a
 * request's size before decoding, and serves Run only, once per connection.
 * The handler drives the ordinary Create and Exec handlers with internal
 * requests (request id 0 and a tag where ZeroMQ's peer would be: their
 * replies come back here instead of going out on the RPC socket), answers
 * the client with the result, and only then destroys the sandbox (at the end
 * of the loop turn). A client whose connection closes first (interrupted,
 * killed) gets no reply: its sandbox is destroyed at once.
 */

#define S_RUN_CONNS_MAX 256     /* open connections; more wait in the backlog */
#define S_RUN_IDLE_MS 5000      /* for the request after connecting */
#define S_RUN_CREATE_MS 15000   /* for the sandbox to be ready (the command's time is apart) */
#define S_RUN_MAGIC 0x314e5552u /* "RUN1" */
#define S_RUN_EXEC_ID "oneshot"
/* Descriptors the worker keeps for everything but relays: the exec socket's
 * connections (S_RUN_CONNS_MAX), S_FD_RESERVE_BASE for libzmq (its admitted
 * peers' connections among them), the store and signals, and per sandbox or
 * spare S_FD_PER_SANDBOX: its control socket, its relay listener, its
 * cgroup's oom_control (or memory.events) and pids.events, its exec log, and
 * one to spare. */
#define S_FD_RESERVE_BASE 256
#define S_FD_PER_SANDBOX 6

/* Raises the worker's descriptor limit to its hard limit, lowers
 * max_sandboxes to what it holds, and gives the relays what the rest leaves,
 * two descriptors each (sbx_relay_budget_set). A worker that ran out would not
 * merely refuse a connection: libzmq aborts the process at EMFILE in its
 * accept, and every sandbox dies with it. As credproxy does for max_conns
 * (credproxy/main.c s_nofile). */
static void
s_fd_budget(sbx_config_t *cfg)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		sbx_relay_budget_set(0);
		log_error("getrlimit(RLIMIT_NOFILE): %s; no egress relay", strerror(errno));
		return;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			(void)getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_max < AHP_LIM_OPEN_FILES_DEF)
		log_warn("the hard RLIMIT_NOFILE (%lu) is below a sandbox's default open_files "
		         "(%d): a command whose open_files is over it fails to start (EPERM)",
		         (unsigned long)rl.rlim_max, AHP_LIM_OPEN_FILES_DEF);
	rlim_t base = (rlim_t)S_RUN_CONNS_MAX + S_FD_RESERVE_BASE;
	rlim_t fit = rl.rlim_cur > base ? (rl.rlim_cur - base) / S_FD_PER_SANDBOX : 0;
	if (fit < (rlim_t)cfg->max_sandboxes + cfg->pool_size) {
		uint32_t max =
		    fit > (rlim_t)cfg->pool_size + 1 ? (uint32_t)(fit - cfg->pool_size) : 1;
		log_warn("max_sandboxes %u (with pool_size %u) needs %lu descriptors, the limit is "
		         "%lu: serving %u sandboxes at most (raise the hard RLIMIT_NOFILE)",
		         cfg->max_sandboxes, cfg->pool_size,
		         (unsigned long)(base + ((rlim_t)cfg->max_sandboxes + cfg->pool_size) *
		                                    S_FD_PER_SANDBOX),
		         (unsigned long)rl.rlim_cur, max);
		cfg->max_sandboxes = max;
	}
	rlim_t reserve = base + ((rlim_t)cfg->max_sandboxes + cfg->pool_size) * S_FD_PER_SANDBOX;
	size_t budget = rl.rlim_cur > reserve ? (size_t)((rl.rlim_cur - reserve) / 2) : 0;
	sbx_relay_budget_set(budget);
	size_t want = (size_t)cfg->relay_max_conns * cfg->max_sandboxes;
	if (budget < want)
		log_warn("relayed connections: %zu at most for all sandboxes together (%lu "
		         "descriptors; relay_max_conns x max_sandboxes would need %zu): raise the "
		         "hard RLIMIT_NOFILE for more",
		         budget, (unsigned long)rl.rlim_cur, 2 * want + (size_t)reserve);
	else
		log_debug("relayed connections: up to %zu (%lu descriptors)", budget,
		          (unsigned long)rl.rlim_cur);
}

/* Accepting pauses this long after accept() ran out of descriptors (EMFILE,
 * ENFILE): the pending connection keeps the listener readable, and polling
 * it again at once would spin (and log) until a descriptor is freed. */
#define S_RUN_ACCEPT_HOLD_MS 100
static int64_t s_run_accept_hold;    /* monotonic ms: no accept() before this */
static int64_t s_run_refused_log;    /* monotonic ms of the last refusal logged */
static unsigned s_run_refused_quiet; /* refusals not logged since */
static bool s_run_accept_starved;    /* EMFILE logged; reset by an accept */

enum { S_STEP_CREATE = 1, S_STEP_EXEC, S_STEP_DESTROY };

struct s_run_tag {
	uint32_t magic;
	uint32_t step;
	uint64_t run; /* the connection's id */
};

static const s_run_tag_t *
s_run_tag(const ahp_rpc_req_t *req)
{
	/* a request from ZeroMQ never has id 0 (rpc.c refuses it) */
	if (req == NULL || req->request_id != 0 || req->peer_len != sizeof(s_run_tag_t))
		return NULL;
	const s_run_tag_t *t = req->peer;
	return t->magic == S_RUN_MAGIC ? t : NULL;
}

/* An internal request of run for step; ahp_rpc_req_free() frees it (one
 * allocation, as rpc.c makes them). NULL when out of memory. */
static ahp_rpc_req_t *
s_run_req(const s_run_t *run, uint32_t step)
{
	ahp_rpc_req_t *r = calloc(1, sizeof(*r) + sizeof(s_run_tag_t));
	if (r == NULL)
		return NULL;
	s_run_tag_t *t = (s_run_tag_t *)(void *)(r + 1);
	t->magic = S_RUN_MAGIC;
	t->step = step;
	t->run = run->id;
	r->peer = t;
	r->peer_len = sizeof(*t);
	r->peer_uid = (uint32_t)run->cred.uid;
	r->peer_gid = (uint32_t)run->cred.gid;
	return r;
}

static s_run_t *
s_run_find(sbx_daemon_t *self, uint64_t id)
{
	for (size_t i = 0; i < self->n_runs; i++)
		if (self->runs[i]->id == id)
			return self->runs[i];
	return NULL;
}

static void
s_run_close(s_run_t *run)
{
	if (run->fd >= 0)
		close(run->fd);
	run->fd = -1;
	if (!run->destroy)
		run->state = S_RUN_DONE;
}

/* A reply too large for a packet: written to a sealed memfd, passed with a
 * small Reply{run{in_fd}}. 0 / -1 (errno). */
static int
s_run_send_memfd(int sock, const uint8_t *buf, size_t len)
{
	int mfd = memfd_create("sandboxd-run-reply", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0)
		return -1;
	int rc = -1;
	if (ahp_write_all(mfd, buf, len) == 0 &&
	    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) ==
	        0) {
		Ahp__Sbx__RunReply rr = AHP__SBX__RUN_REPLY__INIT;
		rr.in_fd = true;
		Ahp__Sbx__Reply rep = AHP__SBX__REPLY__INIT;
		rep.body_case = AHP__SBX__REPLY__BODY_RUN;
		rep.run = &rr;
		uint8_t small[16];
		size_t n = ahp__sbx__reply__pack(&rep, small);
		rc = sbx_send_fd(sock, small, n, mfd);
	}
	int e = errno;
	close(mfd);
	errno = e;
	return rc;
}

/* Sends the one reply of a connection (never blocks: its receive queue is
 * empty, and a packet is at most SBX_RUN_INLINE_MAX bytes). */
static void
s_run_send(s_run_t *run, const Ahp__Sbx__Reply *rep)
{
	if (run->fd < 0)
		return;
	size_t len = ahp__sbx__reply__get_packed_size(rep);
	uint8_t *buf = malloc(len ? len : 1);
	int rc = -1;
	if (buf != NULL) {
		ahp__sbx__reply__pack(rep, buf);
		if (len <= SBX_RUN_INLINE_MAX)
			rc = send(run->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)len
			         ? 0
			         : -1;
		else
			rc = s_run_send_memfd(run->fd, buf, len);
	}
	if (rc != 0)
		log_warn("one-shot %s: the reply was not delivered: %s",
		         run->sandbox_id[0] ? run->sandbox_id : "-",
		         buf == NULL ? "out of memory" : strerror(errno));
	free(buf);
}

static void
s_run_reply_error(s_run_t *run, int status, const char *msg, const char *stage)
{
	Ahp__Error e;
	ahp_error_set(&e, status, msg);
	Ahp__Sbx__RunReply rr = AHP__SBX__RUN_REPLY__INIT;
	rr.stage = (char *)stage;
	rr.sandbox_id = run->sandbox_id;
	/* --keep: the Destroy after this reply keeps the workspace of a sandbox
	 * that was made (RunReply.workspace); none named: nothing is kept */
	if (run->retains && run->created && run->workspace[0] != '\0')
		rr.workspace = run->workspace;
	Ahp__Sbx__Reply rep = AHP__SBX__REPLY__INIT;
	rep.error = &e;
	rep.body_case = AHP__SBX__REPLY__BODY_RUN;
	rep.run = &rr;
	s_run_send(run, &rep);
}

/* Refuses a request that started nothing: reply, close. */
static void
s_run_refuse(s_run_t *run, int status, const char *msg, const char *stage)
{
	s_run_reply_error(run, status, msg, stage);
	s_run_close(run);
}

/* The run is over (answered, or its client left): the connection closes now,
 * the sandbox is destroyed at the end of the loop turn, out of the sandbox
 * code that called us. */
static void
s_run_finish(s_run_t *run)
{
	run->destroy = run->created;
	run->created = false;
	run->state = S_RUN_DONE;
	s_run_close(run);
}

/* Whether the one-shot of tag keeps its workspace (Run's keep_workspace). */
static bool
s_run_keeps(sbx_daemon_t *self, const s_run_tag_t *tag)
{
	const s_run_t *run = s_run_find(self, tag->run);
	return run != NULL && run->keep;
}

static void
s_run_on_error(sbx_daemon_t *self, ahp_rpc_req_t **req, int status, const char *msg)
{
	const s_run_tag_t *t = s_run_tag(*req);
	uint32_t step = t->step;
	s_run_t *run = s_run_find(self, t->run);
	ahp_rpc_req_free(req);
	if (run == NULL || run->state != S_RUN_BUSY || step == S_STEP_DESTROY)
		return;
	s_run_reply_error(run, status, msg, step == S_STEP_CREATE ? "create" : "exec");
	s_run_finish(run);
}

static void
s_run_on_created(sbx_daemon_t *self, ahp_rpc_req_t **req, const char *workspace)
{
	s_run_t *run = s_run_find(self, s_run_tag(*req)->run);
	ahp_rpc_req_free(req);
	if (run != NULL)
		run->create_until = 0;
	if (run != NULL && workspace != NULL)
		ahp_strlcpy(run->workspace, workspace, sizeof(run->workspace));
}

static void
s_run_on_result(sbx_daemon_t *self, ahp_rpc_req_t **req, const uint8_t *res, size_t len)
{
	s_run_t *run = s_run_find(self, s_run_tag(*req)->run);
	ahp_rpc_req_free(req);
	if (run == NULL || run->state != S_RUN_BUSY)
		return;
	Ahp__Sbx__ExecResult *r = ahp__sbx__exec_result__unpack(NULL, len, res);
	if (r == NULL) {
		s_run_reply_error(run, AHP__STATUS__ERR_INTERNAL, "the result is damaged", "exec");
	} else {
		Ahp__Sbx__RunReply rr = AHP__SBX__RUN_REPLY__INIT;
		rr.result = r;
		rr.sandbox_id = run->sandbox_id;
		rr.workspace = run->workspace;
		rr.output_kb = run->output_kb;
		Ahp__Sbx__Reply rep = AHP__SBX__REPLY__INIT;
		rep.body_case = AHP__SBX__REPLY__BODY_RUN;
		rep.run = &rr;
		s_run_send(run, &rep);
		ahp__sbx__exec_result__free_unpacked(r, NULL);
	}
	s_run_finish(run);
}

/* Destroys the sandboxes of finished runs (their replies went out) and
 * drops closed connections. Called at the end of each loop turn. */
static void
s_run_reap(sbx_daemon_t *self)
{
	for (size_t i = 0; i < self->n_runs; i++) {
		s_run_t *run = self->runs[i];
		if (!run->destroy)
			continue;
		run->destroy = false;
		Ahp__Sbx__DestroyRequest dr = AHP__SBX__DESTROY_REQUEST__INIT;
		dr.sandbox_id = run->sandbox_id;
		/* --keep keeps what the command wrote: a sandbox that never came
		 * (an error at create) has nothing, and its error reply named no
		 * workspace (s_run_reply_error) */
		dr.keep_workspace = run->keep && run->workspace[0] != '\0';
		ahp_rpc_req_t *req = s_run_req(run, S_STEP_DESTROY);
		if (req == NULL) {
			log_error("one-shot %s: out of memory destroying its sandbox",
			          run->sandbox_id);
			continue;
		}
		s_on_destroy(self, &req, &dr);
		ahp_rpc_req_free(&req);
	}
}

/* Closes connections idle past their deadline, drops closed ones. */
static void
s_run_collect(sbx_daemon_t *self)
{
	int64_t now = ahp_mono_ms();
	for (size_t i = 0; i < self->n_runs;) {
		s_run_t *run = self->runs[i];
		if (run->state == S_RUN_IDLE && now >= run->idle_until)
			s_run_close(run); /* nothing asked: nothing to answer */
		if (run->state == S_RUN_BUSY && run->create_until != 0 &&
		    now >= run->create_until) {
			/* the client must not wait for a sandbox that does not come */
			log_warn(
			    "one-shot %s: the sandbox was not ready within %d s; destroying it",
			    run->sandbox_id, S_RUN_CREATE_MS / 1000);
			char msg[96];
			snprintf(msg, sizeof(msg), "the sandbox was not ready within %d s",
			         S_RUN_CREATE_MS / 1000);
			s_run_reply_error(run, AHP__STATUS__ERR_TIMEOUT, msg, "create");
			s_run_finish(run);
		}
		if (run->fd >= 0 || run->destroy) {
			i++;
			continue;
		}
		free(run);
		self->runs[i] = self->runs[--self->n_runs];
	}
}

/* Milliseconds until the first idle deadline, -1 when none. */
static long
s_run_timeout(const sbx_daemon_t *self)
{
	long tmo = -1;
	int64_t now = ahp_mono_ms();
	for (size_t i = 0; i < self->n_runs; i++) {
		const s_run_t *run = self->runs[i];
		int64_t until = run->state == S_RUN_IDLE   ? run->idle_until
		                : run->state == S_RUN_BUSY ? run->create_until
		                                           : 0;
		/* the end of the pool's hold (s_pool_fill) */
		int64_t hold = run->busy_since + S_POOL_RUN_HOLD_MS;
		if (run->state == S_RUN_BUSY && hold > now && (until == 0 || hold < until))
			until = hold;
		if (run->fd < 0 || until == 0)
			continue;
		long left = until > now ? (long)(until - now) : 0;
		if (tmo < 0 || left < tmo)
			tmo = left;
	}
	if (s_run_accept_hold > now) {
		long left = (long)(s_run_accept_hold - now);
		if (tmo < 0 || left < tmo)
			tmo = left;
	}
	return tmo;
}

/* Whether the endpoint's allow-list admits the peer: as rpc.c decides for the
 * RPC endpoint (uid listed, gid listed, or a listed supplementary group). */
static bool
s_run_admitted(const sbx_daemon_t *self, const struct ucred *c)
{
	const ahp_rpc_allow_t *a = &self->cfg.allow;
	for (size_t i = 0; i < a->n_uids; i++)
		if (a->uids[i] == c->uid)
			return true;
	for (size_t i = 0; i < a->n_gids; i++)
		if (a->gids[i] == c->gid)
			return true;
	if (a->n_gids == 0)
		return false;
	struct passwd pw, *res = NULL;
	char buf[4096];
	gid_t groups[256];
	int n = (int)(sizeof(groups) / sizeof(groups[0]));
	if (getpwuid_r(c->uid, &pw, buf, sizeof(buf), &res) != 0 || res == NULL ||
	    getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0)
		return false;
	for (int i = 0; i < n; i++)
		for (size_t j = 0; j < a->n_gids; j++)
			if (groups[i] == a->gids[j])
				return true;
	return false;
}

static int
s_grow_runs(sbx_daemon_t *self)
{
	size_t cap = self->cap_runs ? self->cap_runs * 2 : 16;
	s_run_t **n = realloc(self->runs, cap * sizeof(*n));
	if (n == NULL)
		return -1;
	self->runs = n;
	self->cap_runs = cap;
	return 0;
}

/* Whether the exec socket's listener is polled (room, and no pause). */
static bool
s_run_accepting(const sbx_daemon_t *self)
{
	return self->run_listen >= 0 && self->n_runs < S_RUN_CONNS_MAX &&
	       ahp_mono_ms() >= s_run_accept_hold;
}

/* A peer the allow-list does not admit: answered at once, before anything
 * of it is read, and closed; it never holds one of the S_RUN_CONNS_MAX
 * places (any local user can connect: the socket is 0666). Logged at most
 * once a second, with how many went unlogged. */
static void
s_run_refuse_peer(sbx_daemon_t *self, s_run_t *run)
{
	char msg[128];
	snprintf(msg, sizeof(msg), "uid %u (gid %u) may not use this socket",
	         (unsigned)run->cred.uid, (unsigned)run->cred.gid);
	s_run_reply_error(run, AHP__STATUS__ERR_PERMISSION_DENIED, msg, "");
	/* a request left unread would make the close reset the connection
	 * (ECONNRESET ahead of our answer at the client): drop it unread */
	uint8_t b[1];
	for (int k = 0; k < 4 && recv(run->fd, b, sizeof(b), MSG_DONTWAIT | MSG_TRUNC) > 0; k++)
		;
	s_run_close(run);
	int64_t now = ahp_mono_ms();
	if (s_run_refused_log != 0 && now - s_run_refused_log < 1000) {
		s_run_refused_quiet++;
		return;
	}
	log_warn("peer uid=%ld gid=%ld pid=%ld refused on %s (%u more refused unlogged)",
	         (long)run->cred.uid, (long)run->cred.gid, (long)run->cred.pid,
	         self->cfg.exec_socket, s_run_refused_quiet);
	s_run_refused_log = now;
	s_run_refused_quiet = 0;
}

static void s_run_on_readable(sbx_daemon_t *self, s_run_t *run);

static void
s_run_accept(sbx_daemon_t *self)
{
	for (int turn = 0; turn < 16 && self->n_runs < S_RUN_CONNS_MAX; turn++) {
		int fd = accept4(self->run_listen, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				if (!s_run_accept_starved)
					log_warn("exec socket: accept: %s; pausing %d ms",
					         strerror(errno), S_RUN_ACCEPT_HOLD_MS);
				s_run_accept_hold = ahp_mono_ms() + S_RUN_ACCEPT_HOLD_MS;
				s_run_accept_starved = true;
			} else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
				log_warn("exec socket: accept: %s", strerror(errno));
			}
			return;
		}
		s_run_accept_starved = false;
		s_run_t *run = calloc(1, sizeof(*run));
		socklen_t cl = sizeof(struct ucred);
		if (run == NULL || (self->n_runs == self->cap_runs && s_grow_runs(self) != 0)) {
			free(run);
			close(fd);
			log_warn("exec socket: out of memory");
			return;
		}
		run->fd = fd;
		run->id = ++self->run_next;
		run->idle_until = ahp_mono_ms() + S_RUN_IDLE_MS;
		run->state = S_RUN_IDLE;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &run->cred, &cl) != 0 ||
		    !s_run_admitted(self, &run->cred)) {
			s_run_refuse_peer(self, run);
			free(run);
			continue;
		}
		self->runs[self->n_runs++] = run;
		/* the client sends its request right after connecting: it is often
		 * here already, and reading it now saves the one-shot a loop turn */
		s_run_on_readable(self, run);
	}
}

/* The profile directory's signature: its own and each entry's inode, size
 * and times (a profile edited, added or removed changes it). 0 when it
 * cannot be read. */
static uint64_t
s_fnv(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ULL;
	return h;
}

static uint64_t
s_fnv_stat(uint64_t h, const struct stat *st)
{
	int64_t v[6] = {(int64_t)st->st_ino,         (int64_t)st->st_size,
	                (int64_t)st->st_mtim.tv_sec, (int64_t)st->st_mtim.tv_nsec,
	                (int64_t)st->st_ctim.tv_sec, (int64_t)st->st_ctim.tv_nsec};
	return s_fnv(h, v, sizeof(v));
}

static uint64_t
s_profiles_sig(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	struct stat st;
	uint64_t h = 1469598103934665603ULL;
	if (fstat(fd, &st) == 0)
		h = s_fnv_stat(h, &st);
	DIR *d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return 0;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		h = s_fnv(h, de->d_name, strlen(de->d_name) + 1);
		if (fstatat(dirfd(d), de->d_name, &st, 0) == 0)
			h = s_fnv_stat(h, &st);
	}
	closedir(d);
	return h | 1;
}

/* Keeps what loading the profiles reported, one line each, at most 16 KiB. */
static void
s_on_profile_error(void *arg, const char *message)
{
	sbx_daemon_t *self = arg;
	size_t have = self->profile_errs ? strlen(self->profile_errs) : 0;
	size_t l = strlen(message);
	if (have + l + 2 > 16 * 1024)
		return;
	char *n = realloc(self->profile_errs, have + l + 2);
	if (n == NULL)
		return;
	memcpy(n + have, message, l);
	n[have + l] = '\n';
	n[have + l + 1] = '\0';
	self->profile_errs = n;
}

/* A profile of HOME/etc/profiles by name, as `sandboxd exec` reads them: the
 * set is loaded again when the directory changed (or after SIGHUP). NULL when
 * unknown; self->profile_errs says what failed to load. */
static const ahp_profile_t *
s_profile(sbx_daemon_t *self, const char *name)
{
	char dir[PATH_MAX];
	if (ahp_home_path(self->cfg.home, "etc/profiles", dir, sizeof(dir)) != 0)
		return NULL;
	uint64_t sig = s_profiles_sig(dir);
	if (self->profiles == NULL || sig == 0 || sig != self->profile_sig) {
		ahp_profiles_destroy(&self->profiles);
		free(self->profile_errs);
		self->profile_errs = NULL;
		self->profiles = ahp_profiles_load_dir(dir, NULL, s_on_profile_error, self);
		self->profile_sig = self->profiles != NULL ? sig : 0;
	}
	return self->profiles != NULL ? ahp_profiles_get(self->profiles, name) : NULL;
}

/* Starts a decoded Run: checks it, resolves the profile, then Create and
 * Exec go to their handlers together (Exec waits in the sandbox's queue until
 * the Create's claim completes). */
static void
s_run_start(sbx_daemon_t *self, s_run_t *run, const Ahp__Sbx__RunRequest *rr)
{
	const char *id = rr->run_id != NULL ? rr->run_id : "";
	if (id[0] == '\0')
		ahp_random_id(SBX_ONESHOT_PREFIX, run->sandbox_id, sizeof(run->sandbox_id));
	else if (!sbx_valid_id(id)) {
		s_run_refuse(run, AHP__STATUS__ERR_BAD_REQUEST,
		             "run_id must match [A-Za-z0-9-]{1,64}", "request");
		return;
	} else if (!sbx_oneshot_id(id)) {
		/* never a run's id: the orchestrator destroys a sandbox of that id
		 * when the run ends (its sweep), and a Create of it must not find a
		 * one-shot's sandbox or kept workspace */
		s_run_refuse(run, AHP__STATUS__ERR_BAD_REQUEST, SBX_RUN_ID_ERROR, "request");
		return;
	} else {
		ahp_strlcpy(run->sandbox_id, id, sizeof(run->sandbox_id));
	}
	sbx_meta_t old;
	if (s_find(self, run->sandbox_id) != NULL ||
	    sbx_store_meta_read(self->store, run->sandbox_id, &old) == 0) {
		s_run_refuse(run, AHP__STATUS__ERR_CONFLICT,
		             "run_id is in use (a one-shot needs a sandbox of its own)", "request");
		return;
	}
	const char *profile = rr->profile != NULL ? rr->profile : "";
	if (!s_valid_profile(profile) || (profile[0] == '\0' && rr->limits == NULL)) {
		s_run_refuse(run, AHP__STATUS__ERR_BAD_REQUEST,
		             "profile must match [a-z0-9-]{1,64}", "request");
		return;
	}
	if (rr->keep_workspace && !self->cfg.keep_workspaces && self->cfg.retain_failed_max == 0) {
		/* fail closed: this sandboxd deletes every workspace at Destroy
		 * (s_on_destroy), so a kept one would be a promise it breaks; refused
		 * before the command runs rather than run and then deleted */
		s_run_refuse(run, AHP__STATUS__ERR_PERMISSION, SBX_KEEP_OFF_ERROR, "request");
		return;
	}
	Ahp__Sbx__ExecRequest er = AHP__SBX__EXEC_REQUEST__INIT;
	er.sandbox_id = run->sandbox_id;
	er.exec_id = (char *)S_RUN_EXEC_ID;
	er.command = rr->command != NULL ? rr->command : (char *)"";
	er.timeout_s = rr->timeout_s;
	char err[128];
	if (sbx_exec_request_range(&er, err, sizeof(err)) != 0 || er.command[0] == '\0') {
		s_run_refuse(run, AHP__STATUS__ERR_BAD_REQUEST,
		             er.command[0] == '\0' ? "the command is empty" : err, "request");
		return;
	}
	Ahp__Sbx__Limits plim = AHP__SBX__LIMITS__INIT;
	Ahp__Sbx__CreateRequest cr = AHP__SBX__CREATE_REQUEST__INIT;
	cr.run_id = run->sandbox_id;
	cr.profile = (char *)profile;
	cr.limits = rr->limits;
	cr.network = rr->network;
	if (rr->limits == NULL) {
		const ahp_profile_t *p = s_profile(self, profile);
		if (p == NULL) {
			s_run_refuse(run, AHP__STATUS__ERR_NOT_FOUND,
			             self->profile_errs ? self->profile_errs : "", "profile");
			return;
		}
		cr.limits = &plim;
		cr.network = ahp_sandbox_limits(&p->sandbox, &plim);
	}
	sbx_limits_t lim;
	run->output_kb =
	    sbx_request_limits(cr.limits, &lim, err, sizeof(err)) == 0 ? lim.output_kb : 0;
	run->keep = rr->keep_workspace;
	/* as s_on_destroy decides for keep_workspace */
	run->retains = run->keep && (self->cfg.keep_workspaces || self->cfg.retain_failed_max > 0);
	run->state = S_RUN_BUSY;
	run->busy_since = ahp_mono_ms();
	ahp_rpc_req_t *creq = s_run_req(run, S_STEP_CREATE);
	ahp_rpc_req_t *ereq = s_run_req(run, S_STEP_EXEC);
	if (creq == NULL || ereq == NULL) {
		ahp_rpc_req_free(&creq);
		ahp_rpc_req_free(&ereq);
		s_run_refuse(run, AHP__STATUS__ERR_INTERNAL, "out of memory", "create");
		return;
	}
	run->created = true; /* even a refused Create may leave state to clean */
	run->create_until = ahp_mono_ms() + S_RUN_CREATE_MS;
	s_on_create(self, &creq, &cr);
	ahp_rpc_req_free(&creq); /* every path answers it; never left over */
	if (run->state == S_RUN_BUSY)
		s_on_exec(self, &ereq, &er);
	ahp_rpc_req_free(&ereq);
}

/* A connection's packet (or its end). */
static void
s_run_on_readable(sbx_daemon_t *self, s_run_t *run)
{
	ssize_t n = recv(run->fd, self->run_rx, SBX_RUN_REQ_MAX + 1, MSG_DONTWAIT | MSG_TRUNC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	char msg[128];
	switch (run->state) {
	case S_RUN_IDLE:
		break;
	case S_RUN_BUSY:
		/* its end (or a second request, which the protocol has not) */
		log_info("one-shot %s: the client %s; destroying its sandbox", run->sandbox_id,
		         n > 0 ? "sent a second request" : "left");
		if (n > 0)
			s_run_reply_error(run, AHP__STATUS__ERR_BAD_REQUEST,
			                  "one Run per connection", "request");
		s_run_finish(run);
		return;
	default:
		s_run_close(run);
		return;
	}
	if (n <= 0) {
		s_run_close(run); /* left without asking */
		return;
	}
	if ((size_t)n > SBX_RUN_REQ_MAX) {
		snprintf(msg, sizeof(msg), "run request of %zd bytes (max %u)", n,
		         (unsigned)SBX_RUN_REQ_MAX);
		s_run_refuse(run, AHP__STATUS__ERR_TOO_LARGE, msg, "request");
		return;
	}
	if (self->stopping) {
		s_run_refuse(run, AHP__STATUS__ERR_UNAVAILABLE, "sandboxd is stopping", "request");
		return;
	}
	Ahp__Sbx__Request *m = ahp__sbx__request__unpack(NULL, (size_t)n, self->run_rx);
	if (m == NULL) {
		log_warn("exec socket: undecodable request (%zd bytes)", n);
		s_run_refuse(run, AHP__STATUS__ERR_BAD_REQUEST, "malformed request", "request");
	} else if (m->body_case != AHP__SBX__REQUEST__BODY_RUN) {
		s_run_refuse(run, AHP__STATUS__ERR_UNKNOWN_METHOD,
		             "the exec socket serves Run only (the rest is on the RPC endpoint)",
		             "request");
	} else if (s_wire_has_nul(&ahp__sbx__request__descriptor, self->run_rx, (size_t)n, 0)) {
		s_run_refuse(run, AHP__STATUS__ERR_BAD_REQUEST,
		             "a string field contains a NUL byte", "request");
	} else {
		s_run_start(self, run, m->run);
	}
	ahp__sbx__request__free_unpacked(m, NULL);
}

/* Handles the exec socket's poll items (from self->run_item0 to n). */
static void
s_run_events(sbx_daemon_t *self, size_t n)
{
	for (size_t k = self->run_item0; k < n; k++) {
		if (self->items[k].revents == 0)
			continue;
		if (self->refs[k].kind == S_REF_RUN_LISTEN)
			s_run_accept(self);
		else if (self->refs[k].sbx < self->n_runs && self->runs[self->refs[k].sbx]->fd >= 0)
			s_run_on_readable(self, self->runs[self->refs[k].sbx]);
	}
}

/* Binds the exec socket (as root, before the privilege drop, like the RPC
 * endpoint): a stale socket file is replaced, a live one (another sandboxd)
 * refused. Mode 0666: SO_PEERCRED admission decides who may use it. */
static int
s_run_listen(sbx_daemon_t *self, char *err, size_t errlen)
{
	const char *path = self->cfg.exec_socket;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "exec_socket: too long");
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s exists and is not a socket", path);
			return -1;
		}
		int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		bool live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		if (probe >= 0)
			close(probe);
		if (live) {
			snprintf(err, errlen, "another sandboxd serves on %s", path);
			return -1;
		}
		(void)unlink(path);
	}
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || chmod(path, 0666) != 0 ||
	    listen(fd, 128) != 0) {
		snprintf(err, errlen, "cannot serve on %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	self->run_listen = fd;
	return 0;
}

/* ------------------------------------------------- the privileged parent -- */

int
sbx_daemon_zygote(sbx_daemon_t *self, const sbx_spawn_req_t *req)
{
	if (self->zygote < 0)
		return -1;
	return send(self->zygote, req, sizeof(*req), MSG_NOSIGNAL) == (ssize_t)sizeof(*req) ? 0
	                                                                                    : -1;
}

void
sbx_daemon_kill_slot(sbx_daemon_t *self, uint32_t slot)
{
	sbx_spawn_req_t req;
	memset(&req, 0, sizeof(req));
	req.type = SBX_ZY_KILL;
	req.slot = slot;
	if (sbx_daemon_zygote(self, &req) != 0)
		log_warn("slot %u: cannot ask the privileged parent to kill it", slot);
}

int
sbx_daemon_call(sbx_daemon_t *self, const sbx_spawn_req_t *req)
{
	if (self->call < 0 ||
	    send(self->call, req, sizeof(*req), MSG_NOSIGNAL) != (ssize_t)sizeof(*req)) {
		errno = EPIPE;
		return -1;
	}
	int64_t deadline = ahp_mono_ms() + S_CALL_TIMEOUT_MS;
	for (;;) {
		int64_t left = deadline - ahp_mono_ms();
		struct pollfd pf = {self->call, POLLIN, 0};
		int n = left > 0 ? poll(&pf, 1, (int)left) : 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		sbx_call_rep_t rep;
		ssize_t r = recv(self->call, &rep, sizeof(rep), 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r != (ssize_t)sizeof(rep))
			break;
		if (rep.type != req->type || rep.slot != req->slot)
			continue; /* the late answer to a call that timed out */
		errno = rep.err;
		return rep.rc == 0 ? 0 : -1;
	}
	/* no answer: the parent is gone or stuck; nothing can be done safely */
	log_error("the privileged parent did not answer a call (type %u)", req->type);
	close(self->call);
	self->call = -1;
	errno = EPIPE;
	return -1;
}

static void
s_on_zygote(sbx_daemon_t *self)
{
	for (int turn = 0; turn < 16 && self->zygote >= 0; turn++) {
		sbx_spawn_rep_t rep;
		int fd;
		ssize_t n = sbx_recv_fd(self->zygote, &rep, sizeof(rep), MSG_DONTWAIT, &fd);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n < 0 && errno == EMSGSIZE)
			continue; /* not a message the parent wrote */
		if (n <= 0) {
			log_error("the privileged parent closed its socket");
			close(self->zygote);
			self->zygote = -1;
			return;
		}
		if (n != (ssize_t)sizeof(rep)) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		rep.err[sizeof(rep.err) - 1] = '\0';
		sbx_sandbox_t *s = s_find_slot(self, rep.slot);
		if (rep.type == SBX_ZY_DISCARDED) {
			if (fd >= 0)
				close(fd);
			s_on_discarded(self, rep.slot);
			continue;
		}
		if (rep.type == SBX_ZY_EXITED) {
			if (fd >= 0)
				close(fd);
			/* The parent answers a SPAWN before it can reap that init, so
			 * the pid is known here unless its sandbox was dropped: then
			 * there is nothing to remember. */
			if (s != NULL && rep.pid > 0 && sbx_sandbox_init_pid(s) == rep.pid)
				sbx_sandbox_on_init_exit(s, rep.status);
			continue;
		}
		if (rep.type != SBX_ZY_SPAWNED) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		if (s == NULL) {
			if (rep.pid > 0)
				sbx_daemon_kill_slot(self, rep.slot);
			if (fd >= 0)
				close(fd);
			continue;
		}
		sbx_sandbox_on_spawned(s, &rep, fd);
	}
}

/* --------------------------------------------------------------- the loop -- */

/* Drops sandboxes that are gone (init reaped, cgroup removed); a destroyed
 * one's workspace deletion starts now. Returns how many are still dying. */
static int
s_collect(sbx_daemon_t *self)
{
	int waiting = 0;
	for (size_t i = 0; i < self->n_sbx;) {
		sbx_sandbox_t *s = self->sbx[i];
		if (sbx_sandbox_alive(s)) {
			i++;
			continue;
		}
		if (!sbx_sandbox_reap_cgroup(s) || !sbx_sandbox_gone(s)) {
			waiting++;
			i++;
			continue;
		}
		uint32_t slot = sbx_sandbox_slot(s);
		if (sbx_sandbox_discards(s))
			s_discard(self, slot);
		sbx_sandbox_destroy(&self->sbx[i]);
		self->sbx[i] = self->sbx[--self->n_sbx];
	}
	return waiting;
}

static int
s_grow_items(sbx_daemon_t *self, size_t need)
{
	if (need <= self->cap_items)
		return 0;
	size_t cap = need * 2;
	zmq_pollitem_t *it = realloc(self->items, cap * sizeof(*it));
	if (it == NULL)
		return -1;
	self->items = it;
	s_ref_t *r = realloc(self->refs, cap * sizeof(*r));
	if (r == NULL)
		return -1;
	self->refs = r;
	self->cap_items = cap;
	return 0;
}

/* zmq_poll has its own flag values (ZMQ_POLLOUT is POLLPRI's, ZMQ_POLLERR is
 * POLLOUT's) and folds hang-up into ZMQ_POLLERR: translate for relay.c. */
static short
s_to_zmq(short ev)
{
	return (short)(((ev & POLLIN) ? ZMQ_POLLIN : 0) | ((ev & POLLOUT) ? ZMQ_POLLOUT : 0));
}

static short
s_from_zmq(short rev)
{
	return (short)(((rev & ZMQ_POLLIN) ? POLLIN : 0) | ((rev & ZMQ_POLLOUT) ? POLLOUT : 0) |
	               ((rev & ZMQ_POLLERR) ? POLLERR : 0));
}

static size_t
s_build_poll(sbx_daemon_t *self)
{
	s_run_collect(self);
	size_t n = 0, need = 4 + self->n_runs;
	for (size_t i = 0; i < self->n_sbx; i++) {
		sbx_relay_t **rel;
		need += 2 + 2 * (size_t)sbx_sandbox_relays(self->sbx[i], &rel);
	}
	if (s_grow_items(self, need) != 0)
		fatalx("out of memory for poll items");
	self->items[n] = (zmq_pollitem_t){ahp_rpc_server_socket(self->rpc), 0, ZMQ_POLLIN, 0};
	self->refs[n++] = (s_ref_t){S_REF_RPC, 0, 0};
	self->items[n] = (zmq_pollitem_t){NULL, self->sigfd, ZMQ_POLLIN, 0};
	self->refs[n++] = (s_ref_t){S_REF_SIG, 0, 0};
	self->items[n] = (zmq_pollitem_t){NULL, self->zygote, ZMQ_POLLIN, 0};
	self->refs[n++] = (s_ref_t){S_REF_ZYGOTE, 0, 0};
	for (size_t i = 0; i < self->n_sbx; i++) {
		sbx_sandbox_t *s = self->sbx[i];
		sbx_relay_t **rel;
		int nr = sbx_sandbox_relays(s, &rel);
		/* relays first, in descending order: finishing one moves the last
		 * into its slot, which was then already handled */
		for (int k = nr - 1; k >= 0; k--) {
			int cfd, ufd;
			short cev, uev;
			sbx_relay_events(rel[k], &cfd, &cev, &ufd, &uev);
			self->items[n] = (zmq_pollitem_t){NULL, cfd, s_to_zmq(cev), 0};
			self->refs[n++] = (s_ref_t){S_REF_RELAY_C, i, k};
			self->items[n] = (zmq_pollitem_t){NULL, ufd, s_to_zmq(uev), 0};
			self->refs[n++] = (s_ref_t){S_REF_RELAY_U, i, k};
		}
		int lfd = sbx_sandbox_listener_fd(s);
		if (lfd >= 0) {
			self->items[n] = (zmq_pollitem_t){NULL, lfd, ZMQ_POLLIN, 0};
			self->refs[n++] = (s_ref_t){S_REF_LISTEN, i, 0};
		}
		int cfd = sbx_sandbox_ctl_fd(s);
		if (cfd >= 0) {
			self->items[n] = (zmq_pollitem_t){NULL, cfd, ZMQ_POLLIN, 0};
			self->refs[n++] = (s_ref_t){S_REF_CTL, i, 0};
		}
	}
	/* the exec socket last: its handlers run after the sandboxes' */
	self->run_item0 = n;
	if (s_run_accepting(self)) {
		self->items[n] = (zmq_pollitem_t){NULL, self->run_listen, ZMQ_POLLIN, 0};
		self->refs[n++] = (s_ref_t){S_REF_RUN_LISTEN, 0, 0};
	}
	for (size_t i = 0; i < self->n_runs; i++) {
		if (self->runs[i]->fd < 0)
			continue;
		self->items[n] = (zmq_pollitem_t){NULL, self->runs[i]->fd, ZMQ_POLLIN, 0};
		self->refs[n++] = (s_ref_t){S_REF_RUN, i, 0};
	}
	return n;
}

static void
s_on_signals(sbx_daemon_t *self)
{
	struct signalfd_siginfo si;
	while (read(self->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			break; /* the worker has no children */
		case SIGTERM:
		case SIGINT:
			if (!self->stopping)
				log_info("stopping (signal %u): destroying live sandboxes, keeping "
				         "their workspaces",
				         si.ssi_signo);
			self->stopping = true;
			break;
		case SIGHUP:
			/* limits come with each Create; the one-shot's profiles are
			 * read again at the next Run */
			self->profile_sig = 0;
			log_info("SIGHUP: profiles are read again at the next one-shot");
			break;
		default:
			break;
		}
	}
}

static void
s_stop_all(sbx_daemon_t *self)
{
	for (size_t i = 0; i < self->n_sbx; i++)
		if (sbx_sandbox_alive(self->sbx[i]))
			sbx_sandbox_kill(self->sbx[i], AHP__STATUS__ERR_UNAVAILABLE,
			                 "sandboxd is stopping");
}

int
sbx_daemon_run(sbx_daemon_t *self)
{
	int64_t stop_deadline = 0;
	s_pool_fill(self);
	for (;;) {
		if (self->stopping) {
			s_stop_all(self);
			if (stop_deadline == 0)
				stop_deadline = ahp_mono_ms() + S_STOP_GRACE_MS;
			if (self->n_sbx == 0)
				break;
			if (ahp_mono_ms() > stop_deadline) {
				log_warn("stopping: %zu sandboxes did not finish in time",
				         self->n_sbx);
				break;
			}
		}
		/* Collect first: it reorders the sandbox array the poll refs index. */
		int waiting = s_collect(self);
		if (self->zygote < 0 || self->call < 0) {
			/* nothing can be spawned or killed any more: the parent kills
			 * the inits when it sees us go (or died and took them along) */
			log_error("lost the privileged parent: exiting");
			return -1;
		}
		if (!self->stopping)
			s_retain(self);
		size_t n = s_build_poll(self);
		long tmo = waiting || self->stopping ? 10 : -1;
		long rtmo = self->stopping ? -1 : s_retain_timeout(self);
		if (rtmo >= 0 && (tmo < 0 || rtmo < tmo))
			tmo = rtmo;
		long xtmo = s_run_timeout(self);
		if (xtmo >= 0 && (tmo < 0 || xtmo < tmo))
			tmo = xtmo;
		if (!self->stopping && self->pool_hold_ms != 0) { /* wake to refill the pool */
			int64_t left = self->pool_hold_ms - ahp_mono_ms();
			long ptmo = left < 0 ? 0 : (long)left;
			if (tmo < 0 || ptmo < tmo)
				tmo = ptmo;
		}
		if (zmq_poll(self->items, (int)n, tmo) < 0) {
			if (zmq_errno() == EINTR)
				continue;
			log_error("zmq_poll: %s", zmq_strerror(zmq_errno()));
			return -1;
		}
		/* Sandbox fds first: handling them never destroys another
		 * sandbox, and a sandbox killed here keeps its slot in the array
		 * until s_collect, so later refs stay valid. */
		for (size_t k = 3; k < self->run_item0; k++) {
			short rev = self->items[k].revents;
			if (rev == 0 && self->refs[k].kind != S_REF_RELAY_C)
				continue;
			s_ref_t *ref = &self->refs[k];
			sbx_sandbox_t *s = self->sbx[ref->sbx];
			switch (ref->kind) {
			case S_REF_RELAY_C: {
				short urev = self->items[k + 1].revents;
				k++; /* the upstream item is handled with it */
				if (rev == 0 && urev == 0)
					break;
				sbx_relay_t **rel;
				int nr = sbx_sandbox_relays(s, &rel);
				if (ref->relay < nr &&
				    sbx_relay_io(rel[ref->relay], s_from_zmq(rev),
				                 s_from_zmq(urev)) != 0)
					sbx_sandbox_relay_done(s, ref->relay);
				break;
			}
			case S_REF_LISTEN:
				sbx_sandbox_on_accept(s);
				break;
			case S_REF_CTL:
				sbx_sandbox_on_ctl(s);
				break;
			default:
				break;
			}
		}
		/* The one-shots answered just now lose their sandboxes before
		 * anything else is served: what follows may wait on the
		 * privileged parent (a cgroup's removal) long enough for the
		 * client to exit and someone's List to arrive, which must not
		 * find the sandbox still there. */
		s_run_reap(self);
		if (self->items[2].revents)
			s_on_zygote(self);
		if (self->items[1].revents)
			s_on_signals(self);
		/* Always drain: ZMQ_POLLIN is edge-like after a partial drain. */
		for (int i = 0; i < S_RPC_BATCH; i++) {
			ahp_rpc_req_t *req = NULL;
			if (ahp_rpc_server_recv(self->rpc, &req) <= 0)
				break;
			s_dispatch(self, &req);
		}
		s_run_events(self, n);
		s_run_reap(self); /* after the replies of this turn */
		s_pool_fill(self);
	}
	return 0;
}

/* ------------------------------------------------------------ lifecycle -- */

sbx_daemon_t *
sbx_daemon_new(const sbx_config_t *cfg, int async, int call, char *err, size_t errlen)
{
	sbx_daemon_t *self = calloc(1, sizeof(*self));
	if (self == NULL) {
		snprintf(err, errlen, "out of memory");
		close(async);
		close(call);
		return NULL;
	}
	self->cfg = *cfg;
	self->sigfd = -1;
	self->run_listen = -1;
	self->zygote = async;
	self->call = call;
	self->slots = calloc(cfg->uid_count / 8 + 1, 1);
	self->discarding = calloc(cfg->uid_count / 8 + 1, 1);
	if (self->slots == NULL || self->discarding == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	/* The parent made the layout and gave sandboxes/ and execs/ to us. */
	self->store = sbx_store_new(cfg->state_dir);
	if (self->store == NULL) {
		snprintf(err, errlen, "cannot use state_dir %s", cfg->state_dir);
		goto fail;
	}
	sbx_store_meta_each(self->store, s_mark_slot, self);

	/* The parent blocked these before forking us; they arrive on a descriptor. */
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	self->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (self->sigfd < 0) {
		snprintf(err, errlen, "signalfd: %s", strerror(errno));
		goto fail;
	}
	s_fd_budget(&self->cfg);
	/* the exec socket listens before the RPC endpoint appears (tests and
	 * scripts wait for that one) */
	self->run_rx = malloc(SBX_RUN_REQ_MAX + 1);
	if (self->run_rx == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (s_run_listen(self, err, errlen) != 0)
		goto fail;
	self->zctx = zmq_ctx_new();
	if (self->zctx == NULL) {
		snprintf(err, errlen, "zmq_ctx_new failed");
		goto fail;
	}
	/* the allow-list at bind: peers it does not name are closed at accept */
	self->rpc = ahp_rpc_server_new(self->zctx, cfg->endpoint, S_RPC_MAX_MSG, &cfg->allow);
	if (self->rpc == NULL) {
		snprintf(err, errlen, "cannot serve on %s", cfg->endpoint);
		goto fail;
	}
	return self;
fail:
	sbx_daemon_destroy(&self);
	return NULL;
}

void
sbx_daemon_destroy(sbx_daemon_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	sbx_daemon_t *self = *self_p;
	/* Whatever still lives is killed by the parent (asked here, and it kills
	 * every init it has when the worker is gone anyway). */
	for (size_t i = 0; i < self->n_sbx; i++)
		sbx_sandbox_destroy(&self->sbx[i]);
	self->n_sbx = 0;
	free(self->sbx);
	if (self->zygote >= 0)
		close(self->zygote);
	if (self->call >= 0)
		close(self->call);
	ahp_rpc_server_destroy(&self->rpc);
	if (self->zctx != NULL)
		zmq_ctx_term(self->zctx);
	if (self->sigfd >= 0)
		close(self->sigfd);
	sbx_store_destroy(&self->store);
	free(self->slots);
	free(self->discarding);
	free(self->items);
	free(self->refs);
	free(self->retained);
	for (size_t i = 0; i < self->n_runs; i++) {
		if (self->runs[i]->fd >= 0)
			close(self->runs[i]->fd);
		free(self->runs[i]);
	}
	free(self->runs);
	if (self->run_listen >= 0)
		close(self->run_listen);
	free(self->run_rx);
	ahp_profiles_destroy(&self->profiles);
	free(self->profile_errs);
	free(self);
	*self_p = NULL;
}
