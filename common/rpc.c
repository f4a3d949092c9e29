/* ZeroMQ RPC: ROUTER servers and DEALER clients with request ids, typed transport errors. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#include "ahp/log.h"
#include "ahp/rpc.h"
#include "ahp/text.h"
#include "ahp/util.h"

#define ENDPOINT_MAX 256
/* Replies a client accepts: the server is trusted more than a client, but a
 * buffer grown from another process still has a ceiling. */
#define CLIENT_MAX_MSG (64 * 1024 * 1024)
/* A server answers bodies up to max_msg; bodies over it but under this many
 * extra bytes still arrive and get a typed ERR_TOO_LARGE. Anything bigger is
 * cut off by libzmq (ZMQ_MAXMSGSIZE), which drops that connection: memory
 * stays bounded at the price of a timeout instead of a reply. */
#define TOO_LARGE_SLACK (1024 * 1024)
/* How long a client waits for its connection before it asks whether the
 * server closes it at accept (a peer it does not admit). */
#define S_REFUSED_PROBE_MS 150
/* Pending connections an ipc:// server's socket queues (libzmq's default is 100). */
#define S_LISTEN_BACKLOG 128

static const uint8_t s_magic[4] = {'A', 'H', 'P', '1'};

/* --- framing --- */

void
ahp_rpc_hdr_pack(uint8_t out[AHP_RPC_HDR_LEN], uint32_t kind, uint64_t request_id)
{
	memcpy(out, s_magic, 4);
	for (int i = 0; i < 4; i++)
		out[4 + i] = (uint8_t)(kind >> (24 - 8 * i));
	for (int i = 0; i < 8; i++)
		out[8 + i] = (uint8_t)(request_id >> (56 - 8 * i));
}

int
ahp_rpc_hdr_unpack(const uint8_t *buf, size_t len, uint32_t *kind, uint64_t *request_id)
{
	uint32_t k = 0;
	uint64_t id = 0;
	if (buf == NULL || len != AHP_RPC_HDR_LEN || memcmp(buf, s_magic, 4) != 0)
		return -1;
	for (int i = 0; i < 4; i++)
		k = (k << 8) | buf[4 + i];
	for (int i = 0; i < 8; i++)
		id = (id << 8) | buf[8 + i];
	if (k < AHP_RPC_KIND_REQUEST || k > AHP_RPC_KIND_ERROR)
		return -1;
	if (kind)
		*kind = k;
	if (request_id)
		*request_id = id;
	return 0;
}

/* Only ipc:// (and inproc:// for tests) are served: tcp:// would need CURVE
 * keys, which this version does not support, and plain TCP would expose the
 * daemon's control API to the network. */
static int
s_check_endpoint(const char *endpoint, const char *who)
{
	if (endpoint == NULL || strlen(endpoint) >= ENDPOINT_MAX) {
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "rpc: endpoint missing or too long", "role",
		           who, NULL);
		return -1;
	}
	if (strncmp(endpoint, "ipc://", 6) == 0 && endpoint[6] != '\0')
		return 0;
	if (strncmp(endpoint, "inproc://", 9) == 0 && endpoint[9] != '\0')
		return 0;
	if (strncmp(endpoint, "tcp://", 6) == 0)
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL,
		           "rpc: tcp:// endpoints require CURVE keys, which this version does not "
		           "support; use ipc://",
		           "role", who, "endpoint", endpoint, NULL);
	else
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "rpc: unsupported endpoint (use ipc://PATH)",
		           "role", who, "endpoint", endpoint, NULL);
	return -1;
}

/* --- server --- */

struct ahp_rpc_server {
	void *ctx;
	int own_ctx;
	void *sock;
	size_t max_msg;
	int is_ipc;
	int bound;
	dev_t sock_dev; /* identity of the ipc socket file we created */
	ino_t sock_ino;
	char endpoint[ENDPOINT_MAX];
	int allow_set; /* 0: whoever can open the 0600 file (owner, root) */
	ahp_rpc_allow_t allow;
	/* The peers libzmq's listener admits at accept (ZMQ_IPC_FILTER_UID /
	 * _GID, fixed when it is made: libzmq copies a socket's options into the
	 * listener): every list given so far (a later list that names new peers
	 * gets a new listener; one that names fewer keeps it, s_admitted refuses
	 * the rest). */
	int listen_set;
	ahp_rpc_allow_t listen;
	int lfd; /* ipc://: our listening socket (libzmq listens on a dup) */
	char last_ep[ENDPOINT_MAX + 16]; /* ZMQ_LAST_ENDPOINT, for zmq_unbind */
	/* Supplementary-group verdicts per uid, so that a chatty peer costs
	 * one group-database lookup per MEMBER_TTL_MS, not one per message. */
	struct {
		uid_t uid;
		int ok;
		int64_t until;
	} member[8];
	unsigned member_next;
};

#define MEMBER_TTL_MS 10000

/* Refuses to take over a socket path another live server is answering on
 * (libzmq would silently unlink it), and a directory others may write to
 * (they could swap the socket file). A stale file from a crash is fine:
 * libzmq replaces it. */
static int
s_ipc_precheck(const char *path)
{
	char dir[PATH_MAX];
	struct stat st;
	struct sockaddr_un sun;

	if (strlen(path) >= sizeof sun.sun_path) {
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "rpc: ipc path too long for a unix socket",
		           "path", path, NULL);
		return -1;
	}
	if (ahp_strlcpy(dir, path, sizeof dir) < 0)
		return -1;
	char *slash = strrchr(dir, '/');
	if (slash == NULL)
		snprintf(dir, sizeof dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "rpc: socket directory does not exist", "dir",
		           dir, NULL);
		return -1;
	}
	if ((st.st_mode & 0022) && !(st.st_mode & S_ISVTX)) {
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL,
		           "rpc: socket directory is group/world-writable; refusing to bind", "dir",
		           dir, NULL);
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	int rc = connect(fd, (struct sockaddr *)&sun, sizeof sun);
	close(fd);
	if (rc == 0) {
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL,
		           "rpc: another server is already listening on this socket", "path", path,
		           NULL);
		return -1;
	}
	return 0;
}

/* Sets libzmq's accept-time filter on an ipc:// ROUTER before it binds: a
 * connection from any other peer is closed by the listener as it is
 * accepted (SO_PEERCRED; a gid admits its members, as s_admitted does),
 * before the ZMTP handshake. The message-level check (s_refuse) alone let
 * any local user who could open the 0666 file hold descriptors in the
 * daemon without sending a byte, until libzmq, at EMFILE in accept, aborts
 * the process (src/ipc_listener.cpp asserts on every accept error but a
 * few). An empty list admits nobody: libzmq admits everyone when no filter
 * is set, so the impossible uid (uid_t)-1 stands in for "nobody". 0 / -1. */
static int
s_listen_filter(void *sock, const ahp_rpc_allow_t *allow)
{
	if (zmq_setsockopt(sock, ZMQ_IPC_FILTER_UID, NULL, 0) < 0 ||
	    zmq_setsockopt(sock, ZMQ_IPC_FILTER_GID, NULL, 0) < 0)
		return -1;
	for (size_t i = 0; i < allow->n_uids; i++)
		if (zmq_setsockopt(sock, ZMQ_IPC_FILTER_UID, &allow->uids[i], sizeof(uid_t)) < 0)
			return -1;
	for (size_t i = 0; i < allow->n_gids; i++)
		if (zmq_setsockopt(sock, ZMQ_IPC_FILTER_GID, &allow->gids[i], sizeof(gid_t)) < 0)
			return -1;
	/* libzmq admits a group's members by the peer's current gid or the
	 * group's member list; the message-level check (getgrouplist) also by
	 * the primary group passwd gives a user. Those users by uid, so that
	 * both admit the same peers. (getpwent: called before the daemon's own
	 * threads use the passwd database; libzmq's uses getpwuid, apart.) */
	if (allow->n_gids > 0) {
		setpwent();
		for (struct passwd *pw; (pw = getpwent()) != NULL;)
			for (size_t i = 0; i < allow->n_gids; i++)
				if (pw->pw_gid == allow->gids[i] &&
				    zmq_setsockopt(sock, ZMQ_IPC_FILTER_UID, &pw->pw_uid,
				                   sizeof(uid_t)) < 0) {
					endpwent();
					return -1;
				}
		endpwent();
	}
	if (allow->n_uids == 0 && allow->n_gids == 0) {
		uid_t none = (uid_t)-1;
		if (zmq_setsockopt(sock, ZMQ_IPC_FILTER_UID, &none, sizeof none) < 0)
			return -1;
	}
	return 0;
}

static int s_server_allow(ahp_rpc_server_t *self, const ahp_rpc_allow_t *allow);

/* Our own listening socket on path, made 0600 (never reachable by others,
 * not even between bind() and a chmod()). libzmq listens on a duplicate of
 * it (ZMQ_USE_FD), so that its listener, whose accept-time filter is fixed
 * when it is made, can be replaced (SIGHUP) without a new file: a daemon
 * that dropped its privileges may not create one in its socket directory.
 * The fd (close-on-exec), or -1 with errno. */
static int
s_ipc_listen(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	size_t len = strlen(path);
	if (len >= sizeof sun.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sun.sun_path, path, len + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/* a stale file of a server that died: s_ipc_precheck made sure that
	 * nothing answers on it */
	(void)unlink(path);
	mode_t old = umask(0077);
	int rc = bind(fd, (struct sockaddr *)&sun, sizeof sun);
	int e = errno;
	umask(old);
	if (rc == 0 && ((rc = chmod(path, 0600)) != 0 || (rc = listen(fd, S_LISTEN_BACKLOG)) != 0))
		e = errno;
	if (rc != 0) {
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* Binds libzmq's listener on fd, a duplicate of self->lfd (ZMQ_USE_FD), with
 * the filter the socket holds now. libzmq owns fd once bound; on failure it
 * is closed here. 0 / -1 (errno). */
static int
s_zmq_bind_fd(ahp_rpc_server_t *self, int fd)
{
	if (zmq_setsockopt(self->sock, ZMQ_USE_FD, &fd, sizeof fd) < 0 ||
	    zmq_bind(self->sock, self->endpoint) < 0) {
		int e = zmq_errno();
		close(fd);
		errno = e;
		return -1;
	}
	size_t n = sizeof self->last_ep;
	if (zmq_getsockopt(self->sock, ZMQ_LAST_ENDPOINT, self->last_ep, &n) < 0)
		ahp_strlcpy(self->last_ep, self->endpoint, sizeof self->last_ep);
	return 0;
}

/* A libzmq listener on a duplicate of self->lfd, admitting at accept the
 * peers in *allow (NULL: the filter the socket holds; none at first, and the
 * 0600 file decides). 0 / -1. */
static int
s_zmq_listen(ahp_rpc_server_t *self, const ahp_rpc_allow_t *allow)
{
	int fd = fcntl(self->lfd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return -1;
	if (allow != NULL && s_listen_filter(self->sock, allow) < 0) {
		int e = zmq_errno();
		close(fd);
		errno = e;
		return -1;
	}
	return s_zmq_bind_fd(self, fd);
}

ahp_rpc_server_t *
ahp_rpc_server_new(void *zctx, const char *endpoint, size_t max_msg, const ahp_rpc_allow_t *allow)
{
	if (s_check_endpoint(endpoint, "server") < 0)
		return NULL;
	ahp_rpc_server_t *self = calloc(1, sizeof *self);
	if (self == NULL)
		return NULL;
	self->lfd = -1;
	ahp_strlcpy(self->endpoint, endpoint, sizeof self->endpoint);
	self->is_ipc = strncmp(endpoint, "ipc://", 6) == 0;
	self->max_msg = max_msg ? max_msg : AHP_RPC_MAX_MSG_DEFAULT;
	self->ctx = zctx;
	if (self->ctx == NULL) {
		self->ctx = zmq_ctx_new();
		self->own_ctx = 1;
		if (self->ctx == NULL)
			goto fail;
	}
	if (self->is_ipc && s_ipc_precheck(endpoint + 6) < 0)
		goto fail;

	self->sock = zmq_socket(self->ctx, ZMQ_ROUTER);
	if (self->sock == NULL)
		goto fail_zmq;
	int linger = 0, mandatory = 1;
	int64_t hard = (int64_t)self->max_msg + TOO_LARGE_SLACK;
	/* Mandatory routing turns a reply to a vanished client into
	 * EHOSTUNREACH (logged) rather than a silent drop. */
	if (zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
	    zmq_setsockopt(self->sock, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory) < 0 ||
	    zmq_setsockopt(self->sock, ZMQ_MAXMSGSIZE, &hard, sizeof hard) < 0)
		goto fail_zmq;
	if (!self->is_ipc) {
		if (zmq_bind(self->sock, endpoint) < 0)
			goto fail_zmq;
		self->bound = 1;
	} else {
		if ((self->lfd = s_ipc_listen(endpoint + 6)) < 0) {
			ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "rpc: cannot listen", "endpoint",
			           endpoint, "error", strerror(errno), NULL);
			goto fail;
		}
		self->bound = 1;
		struct stat st;
		if (stat(endpoint + 6, &st) < 0) {
			ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "rpc: socket file gone", "path",
			           endpoint + 6, "error", strerror(errno), NULL);
			goto fail;
		}
		self->sock_dev = st.st_dev;
		self->sock_ino = st.st_ino;
		if (s_zmq_listen(self, allow) < 0)
			goto fail_zmq;
		if (allow != NULL) {
			self->listen = *allow;
			self->listen_set = 1;
			if (s_server_allow(self, allow) != 0)
				goto fail;
		}
	}
	ahp_log_kv(AHP_LOG_DEBUG, NULL, NULL, "rpc: serving", "endpoint", endpoint, NULL);
	return self;
fail_zmq:
	ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "rpc: cannot bind", "endpoint", endpoint, "error",
	           zmq_strerror(zmq_errno()), NULL);
fail:
	ahp_rpc_server_destroy(&self);
	return NULL;
}

void
ahp_rpc_server_destroy(ahp_rpc_server_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	ahp_rpc_server_t *self = *self_p;
	if (self->sock)
		zmq_close(self->sock);
	if (self->lfd >= 0)
		close(self->lfd);
	/* libzmq 4.3 leaves the ipc file behind. Remove it, but only if it is
	 * still the one we bound (same inode), never a successor's. */
	struct stat st;
	if (self->bound && self->is_ipc && stat(self->endpoint + 6, &st) == 0 &&
	    st.st_dev == self->sock_dev && st.st_ino == self->sock_ino)
		unlink(self->endpoint + 6);
	if (self->own_ctx && self->ctx)
		zmq_ctx_term(self->ctx);
	free(self);
	*self_p = NULL;
}

void *
ahp_rpc_server_socket(ahp_rpc_server_t *self)
{
	return self ? self->sock : NULL;
}

/* Sends [peer][hdr][body] without blocking. A full queue or a vanished
 * peer drops the reply with a log line; the server never blocks on one
 * slow client. */
static int
s_server_send(ahp_rpc_server_t *self, const void *peer, size_t peer_len, uint32_t kind, uint64_t id,
              const void *body, size_t len)
{
	uint8_t hdr[AHP_RPC_HDR_LEN];
	ahp_rpc_hdr_pack(hdr, kind, id);
	if (zmq_send(self->sock, peer, peer_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
		int e = zmq_errno();
		ahp_log_kv(e == EHOSTUNREACH ? AHP_LOG_INFO : AHP_LOG_WARN, NULL, NULL,
		           "rpc: reply dropped", "reason",
		           e == EHOSTUNREACH ? "client gone" : zmq_strerror(e), NULL);
		return -1;
	}
	/* Once the first part is accepted libzmq takes the rest of the message. */
	if (zmq_send(self->sock, hdr, sizeof hdr, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
	    zmq_send(self->sock, body, len, ZMQ_DONTWAIT) < 0) {
		ahp_log_kv(AHP_LOG_WARN, NULL, NULL, "rpc: reply send failed", "error",
		           zmq_strerror(zmq_errno()), NULL);
		return -1;
	}
	return 0;
}

static void
s_transport_error(ahp_rpc_server_t *self, const void *peer, size_t peer_len, uint64_t id,
                  int status, const char *message)
{
	Ahp__TransportError te = AHP__TRANSPORT_ERROR__INIT;
	Ahp__Error e;
	uint8_t buf[512];

	ahp_log_kv(AHP_LOG_WARN, NULL, NULL, "rpc: bad request frame", "status",
	           ahp_status_str(status), "reason", message, "endpoint", self->endpoint, NULL);
	if (peer == NULL || peer_len == 0)
		return;
	ahp_error_set(&e, status, message);
	te.error = &e;
	if (ahp__transport_error__get_packed_size(&te) > sizeof buf)
		return;
	size_t n = ahp__transport_error__pack(&te, buf);
	s_server_send(self, peer, peer_len, AHP_RPC_KIND_ERROR, id, buf, n);
}

/* The credentials of the process at the other end of an ipc:// connection,
 * as the kernel recorded them at connect() (SO_PEERCRED). libzmq reads them
 * when it accepts the connection and exposes them in the "Peer-Address"
 * property as "<addr>:<uid>:<gid>:<pid>"; that is race-free, unlike
 * ZMQ_SRCFD (the fd may be closed and reused meanwhile), which is only the
 * fallback. 0, or -1 when unknown. */
typedef struct {
	uint32_t uid, gid;
	long pid;
} s_cred_t;

static int
s_field(const char *from, const char *to, long max, long *out)
{
	char num[24];
	size_t n = (size_t)(to - from);
	if (n == 0 || n >= sizeof num)
		return -1;
	memcpy(num, from, n);
	num[n] = '\0';
	return ahp_parse_long(num, 0, max, out);
}

static int
s_peer_cred(zmq_msg_t *msg, s_cred_t *c)
{
	c->uid = c->gid = (uint32_t)-1;
	c->pid = 0;
	const char *pa = zmq_msg_gets(msg, "Peer-Address");
	if (pa != NULL) {
		const char *f[3] = {NULL, NULL, NULL}; /* last three colons */
		for (const char *p = pa; *p; p++)
			if (*p == ':') {
				f[0] = f[1];
				f[1] = f[2];
				f[2] = p;
			}
		long uid, gid, pid;
		if (f[0] != NULL && s_field(f[0] + 1, f[1], UINT32_MAX - 1, &uid) == 0 &&
		    s_field(f[1] + 1, f[2], UINT32_MAX - 1, &gid) == 0 &&
		    s_field(f[2] + 1, f[2] + 1 + strlen(f[2] + 1), INT32_MAX, &pid) == 0) {
			c->uid = (uint32_t)uid;
			c->gid = (uint32_t)gid;
			c->pid = pid;
			return 0;
		}
	}
	int fd = zmq_msg_get(msg, ZMQ_SRCFD);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	struct ucred cred;
	socklen_t cl = sizeof cred;
	if (fd < 0)
		return -1;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 || ss.ss_family != AF_UNIX)
		return -1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0)
		return -1;
	c->uid = (uint32_t)cred.uid;
	c->gid = (uint32_t)cred.gid;
	c->pid = (long)cred.pid;
	return 0;
}

/* --- who may talk to a server --- */

int
ahp_rpc_allow_add_uid(ahp_rpc_allow_t *self, uid_t uid)
{
	for (size_t i = 0; i < self->n_uids; i++)
		if (self->uids[i] == uid)
			return 0;
	if (self->n_uids == AHP_RPC_ALLOW_MAX)
		return -1;
	self->uids[self->n_uids++] = uid;
	return 0;
}

int
ahp_rpc_allow_add_gid(ahp_rpc_allow_t *self, gid_t gid)
{
	for (size_t i = 0; i < self->n_gids; i++)
		if (self->gids[i] == gid)
			return 0;
	if (self->n_gids == AHP_RPC_ALLOW_MAX)
		return -1;
	self->gids[self->n_gids++] = gid;
	return 0;
}

/* One comma-separated list of names; is_group picks the database. */
static int
s_allow_names(ahp_rpc_allow_t *out, const char *list, int is_group, int skip_missing, char *err,
              size_t errlen)
{
	const char *what = is_group ? "group" : "user";
	const char *p = list ? list : "";
	while (*p != '\0') {
		size_t n = strcspn(p, ",");
		char name[64];
		const char *start = p;
		p += n;
		if (*p == ',')
			p++;
		while (n > 0 && (*start == ' ' || *start == '\t')) {
			start++;
			n--;
		}
		while (n > 0 && (start[n - 1] == ' ' || start[n - 1] == '\t'))
			n--;
		if (n == 0)
			continue;
		if (n >= sizeof name) {
			snprintf(err, errlen, "%s name too long: \"%.*s\"", what, (int)n, start);
			return -1;
		}
		memcpy(name, start, n);
		name[n] = '\0';
		int rc;
		if (is_group) {
			struct group *gr = getgrnam(name);
			if (gr == NULL && skip_missing) {
				ahp_log_kv(AHP_LOG_WARN, NULL, NULL,
				           "rpc: group does not exist; not admitted", "group", name,
				           NULL);
				continue;
			}
			if (gr == NULL) {
				snprintf(err, errlen, "group \"%s\" does not exist", name);
				return -1;
			}
			rc = ahp_rpc_allow_add_gid(out, gr->gr_gid);
		} else {
			struct passwd *pw = getpwnam(name);
			if (pw == NULL && skip_missing) {
				ahp_log_kv(AHP_LOG_WARN, NULL, NULL,
				           "rpc: user does not exist; not admitted", "user", name,
				           NULL);
				continue;
			}
			if (pw == NULL) {
				snprintf(err, errlen, "user \"%s\" does not exist", name);
				return -1;
			}
			rc = ahp_rpc_allow_add_uid(out, pw->pw_uid);
		}
		if (rc != 0) {
			snprintf(err, errlen, "more than %d %ss", AHP_RPC_ALLOW_MAX, what);
			return -1;
		}
	}
	return 0;
}

int
ahp_rpc_allow_parse(ahp_rpc_allow_t *out, const char *users, const char *groups, int skip_missing,
                    char *err, size_t errlen)
{
	if (s_allow_names(out, users, 0, skip_missing, err, errlen) != 0)
		return -1;
	return s_allow_names(out, groups, 1, skip_missing, err, errlen);
}

/* Whether every uid and gid of a is in b. */
static int
s_allow_within(const ahp_rpc_allow_t *a, const ahp_rpc_allow_t *b)
{
	for (size_t i = 0; i < a->n_uids; i++) {
		size_t j = 0;
		while (j < b->n_uids && b->uids[j] != a->uids[i])
			j++;
		if (j == b->n_uids)
			return 0;
	}
	for (size_t i = 0; i < a->n_gids; i++) {
		size_t j = 0;
		while (j < b->n_gids && b->gids[j] != a->gids[i])
			j++;
		if (j == b->n_gids)
			return 0;
	}
	return 1;
}

/* *out = a, plus what b names that a does not. 0, or -1 (ENOSPC) over
 * AHP_RPC_ALLOW_MAX entries. */
static int
s_allow_union(const ahp_rpc_allow_t *a, const ahp_rpc_allow_t *b, ahp_rpc_allow_t *out)
{
	*out = *a;
	for (size_t i = 0; i < b->n_uids; i++)
		if (ahp_rpc_allow_add_uid(out, b->uids[i]) != 0)
			goto full;
	for (size_t i = 0; i < b->n_gids; i++)
		if (ahp_rpc_allow_add_gid(out, b->gids[i]) != 0)
			goto full;
	return 0;
full:
	errno = ENOSPC;
	return -1;
}

/* Replaces the libzmq listener with one that admits *allow. What can fail
 * for want of a descriptor (the dup) is done before the old listener goes, so
 * a failure leaves it in place. 0 / -1 (errno). */
static int
s_zmq_relisten(ahp_rpc_server_t *self, const ahp_rpc_allow_t *allow)
{
	int fd = fcntl(self->lfd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return -1;
	if (s_listen_filter(self->sock, allow) < 0 || zmq_unbind(self->sock, self->last_ep) < 0) {
		int e = zmq_errno();
		(void)s_listen_filter(self->sock, &self->listen);
		close(fd);
		errno = e;
		return -1;
	}
	if (s_zmq_bind_fd(self, fd) != 0) {
		int e = errno;
		/* the old filter back on a new listener: its dup is the last try */
		if (s_listen_filter(self->sock, &self->listen) == 0)
			(void)s_zmq_listen(self, NULL);
		errno = e;
		return -1;
	}
	return 0;
}

static int
s_server_allow(ahp_rpc_server_t *self, const ahp_rpc_allow_t *allow)
{
	/* connect() on a unix socket needs write permission on its file. Once
	 * is enough: a later call (SIGHUP) may come after a privilege drop. */
	if (!self->allow_set && chmod(self->endpoint + 6, 0666) < 0) {
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "rpc: chmod socket file failed", "path",
		           self->endpoint + 6, "error", strerror(errno), NULL);
		return -1;
	}
	/* A list that names peers the listener does not admit needs a new
	 * listener (libzmq fixes its filter when it makes it), on the same
	 * listening socket: connections meanwhile wait in its backlog. libzmq
	 * ends the old listener's sessions with it, so the peers connected at
	 * that moment are reset once (their clients reconnect; a reply in
	 * flight is lost). A narrower or equal list keeps the listener: the
	 * message-level check (s_admitted) refuses what it no longer names. */
	if (self->listen_set && !s_allow_within(allow, &self->listen)) {
		ahp_rpc_allow_t wider;
		if (s_allow_union(&self->listen, allow, &wider) != 0 ||
		    s_zmq_relisten(self, &wider) != 0) {
			ahp_log_kv(AHP_LOG_ERROR, NULL, NULL,
			           "rpc: cannot admit the peers added to the allow-list (the "
			           "listener stays as it was)",
			           "endpoint", self->endpoint, "error", strerror(errno), NULL);
			return -1;
		}
		self->listen = wider;
	}
	self->allow = *allow;
	self->allow_set = 1;
	memset(self->member, 0, sizeof self->member);
	return 0;
}

int
ahp_rpc_server_allow(ahp_rpc_server_t *self, const ahp_rpc_allow_t *allow)
{
	if (self == NULL || allow == NULL || !self->is_ipc)
		return -1;
	/* A server bound without a list admits its owner and root through the
	 * 0600 file; opening the file to everyone needs the accept-time filter,
	 * which only a list given at ahp_rpc_server_new sets (fail closed). */
	if (!self->listen_set) {
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL,
		           "rpc: an allow-list must be given when the server is made", "endpoint",
		           self->endpoint, NULL);
		return -1;
	}
	return s_server_allow(self, allow);
}

/* Whether uid's supplementary groups (group database) meet an allowed gid. */
static int
s_member(ahp_rpc_server_t *self, uid_t uid)
{
	int64_t now = ahp_mono_ms();
	for (size_t i = 0; i < sizeof self->member / sizeof self->member[0]; i++)
		if (self->member[i].until > now && self->member[i].uid == uid)
			return self->member[i].ok;
	int ok = 0;
	struct passwd pw, *res = NULL;
	char buf[4096];
	if (getpwuid_r(uid, &pw, buf, sizeof buf, &res) == 0 && res != NULL) {
		gid_t groups[256];
		int n = (int)(sizeof groups / sizeof groups[0]);
		if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) >= 0)
			for (int i = 0; i < n && !ok; i++)
				for (size_t j = 0; j < self->allow.n_gids && !ok; j++)
					ok = groups[i] == self->allow.gids[j];
	}
	unsigned k = self->member_next++ % (sizeof self->member / sizeof self->member[0]);
	self->member[k].uid = uid;
	self->member[k].ok = ok;
	self->member[k].until = now + MEMBER_TTL_MS;
	return ok;
}

static int
s_admitted(ahp_rpc_server_t *self, const s_cred_t *c)
{
	if (c->uid == (uint32_t)-1)
		return 0; /* unknown peer: fail closed */
	for (size_t i = 0; i < self->allow.n_uids; i++)
		if (self->allow.uids[i] == c->uid)
			return 1;
	for (size_t i = 0; i < self->allow.n_gids; i++)
		if (self->allow.gids[i] == c->gid)
			return 1;
	return self->allow.n_gids > 0 && s_member(self, c->uid);
}

/* The refusal. Only the fixed 16-byte header is read, and only to put the
 * request id on the reply so that the client can match it (a bad header gets
 * id 0); the body is never copied, decoded or shown to the daemon. This is
 * why the check lives here rather than in a ZAP handler: ZAP would refuse the
 * connection before any frame, but the client could only time out, with no
 * typed reason. */
static void
s_refuse(ahp_rpc_server_t *self, zmq_msg_t *parts, size_t nparts, const s_cred_t *c)
{
	uint32_t kind = 0;
	uint64_t id = 0;
	if (nparts < 2 ||
	    ahp_rpc_hdr_unpack(zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), &kind, &id) != 0 ||
	    kind != AHP_RPC_KIND_REQUEST)
		id = 0;
	log_warn("peer uid=%ld gid=%ld pid=%ld refused on %s",
	         c->uid == (uint32_t)-1 ? -1L : (long)c->uid,
	         c->gid == (uint32_t)-1 ? -1L : (long)c->gid, c->pid, self->endpoint);
	Ahp__TransportError te = AHP__TRANSPORT_ERROR__INIT;
	Ahp__Error e;
	uint8_t buf[256];
	char msg[96];
	if (c->uid == (uint32_t)-1)
		snprintf(msg, sizeof msg,
		         "peer credentials unknown; this socket admits listed users only");
	else
		snprintf(msg, sizeof msg, "uid %u (gid %u) may not use this socket", c->uid,
		         c->gid);
	ahp_error_set(&e, AHP__STATUS__ERR_PERMISSION_DENIED, msg);
	te.error = &e;
	if (ahp__transport_error__get_packed_size(&te) > sizeof buf)
		return;
	size_t n = ahp__transport_error__pack(&te, buf);
	s_server_send(self, zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]), AHP_RPC_KIND_ERROR,
	              id, buf, n);
}

int
ahp_rpc_server_recv(ahp_rpc_server_t *self, ahp_rpc_req_t **req_p)
{
	zmq_msg_t parts[3];
	size_t nparts = 0, extra = 0;
	int more = 0, rc = 0;
	size_t more_len = sizeof more;
	s_cred_t cred = {(uint32_t)-1, (uint32_t)-1, 0};

	*req_p = NULL;
	for (;;) {
		zmq_msg_t m;
		zmq_msg_init(&m);
		int flags = nparts == 0 && extra == 0 ? ZMQ_DONTWAIT : 0;
		if (zmq_msg_recv(&m, self->sock, flags) < 0) {
			int e = zmq_errno();
			zmq_msg_close(&m);
			if (nparts == 0 && (e == EAGAIN || e == EINTR))
				return 0;
			log_warn("rpc: recv failed: %s", zmq_strerror(e));
			rc = -1;
			goto out;
		}
		/* Frame 1 (after the routing id, which libzmq makes up) carries
		 * the connection's metadata. */
		if (nparts == 1 && self->is_ipc)
			(void)s_peer_cred(&m, &cred);
		zmq_getsockopt(self->sock, ZMQ_RCVMORE, &more, &more_len);
		/* Keep the first three frames; drain the rest of a bad multipart
		 * message so the next recv starts at a message boundary. */
		if (nparts < 3)
			parts[nparts++] = m;
		else {
			extra++;
			zmq_msg_close(&m);
		}
		if (!more)
			break;
	}

	/* Who is asking is settled before anything of the message is read. */
	if (self->allow_set && !s_admitted(self, &cred)) {
		s_refuse(self, parts, nparts, &cred);
		goto out;
	}

	const void *peer = zmq_msg_data(&parts[0]);
	size_t peer_len = zmq_msg_size(&parts[0]);
	uint32_t kind = 0;
	uint64_t id = 0;
	int hdr_ok = nparts >= 2 && ahp_rpc_hdr_unpack(zmq_msg_data(&parts[1]),
	                                               zmq_msg_size(&parts[1]), &kind, &id) == 0;
	if (!hdr_ok) {
		s_transport_error(self, peer, peer_len, 0, AHP__STATUS__ERR_BAD_REQUEST,
		                  "bad header frame (want 16 bytes: AHP1, kind, request id)");
		goto out;
	}
	if (kind != AHP_RPC_KIND_REQUEST || id == 0) {
		s_transport_error(self, peer, peer_len, id, AHP__STATUS__ERR_BAD_REQUEST,
		                  "header is not a request (kind 1, non-zero request id)");
		goto out;
	}
	if (nparts != 3 || extra != 0) {
		s_transport_error(self, peer, peer_len, id, AHP__STATUS__ERR_BAD_REQUEST,
		                  "wrong frame count (want header and body)");
		goto out;
	}
	size_t body_len = zmq_msg_size(&parts[2]);
	if (body_len > self->max_msg) {
		char msg[96];
		snprintf(msg, sizeof msg, "message of %zu bytes exceeds the limit of %zu", body_len,
		         self->max_msg);
		s_transport_error(self, peer, peer_len, id, AHP__STATUS__ERR_TOO_LARGE, msg);
		goto out;
	}

	ahp_rpc_req_t *req = calloc(1, sizeof *req + peer_len + body_len + 1);
	if (req == NULL) {
		s_transport_error(self, peer, peer_len, id, AHP__STATUS__ERR_INTERNAL,
		                  "out of memory");
		goto out;
	}
	uint8_t *p = (uint8_t *)(req + 1);
	req->request_id = id;
	req->peer = p;
	req->peer_len = peer_len;
	memcpy(p, peer, peer_len);
	req->body = p + peer_len;
	req->body_len = body_len;
	if (body_len)
		memcpy(req->body, zmq_msg_data(&parts[2]), body_len);
	req->peer_uid = cred.uid;
	req->peer_gid = cred.gid;
	*req_p = req;
	rc = 1;
out:
	for (size_t i = 0; i < nparts; i++)
		zmq_msg_close(&parts[i]);
	return rc;
}

int
ahp_rpc_server_reply(ahp_rpc_server_t *self, ahp_rpc_req_t **req_p, const void *body, size_t len)
{
	if (req_p == NULL || *req_p == NULL)
		return -1;
	ahp_rpc_req_t *req = *req_p;
	int rc = s_server_send(self, req->peer, req->peer_len, AHP_RPC_KIND_REPLY, req->request_id,
	                       body, len);
	ahp_rpc_req_free(req_p);
	return rc;
}

/* Not in the header's first version: lets a daemon answer one request with
 * a transport-level error (kind 3), e.g. while shutting down. */
int
ahp_rpc_server_reply_error(ahp_rpc_server_t *self, ahp_rpc_req_t **req_p, int status,
                           const char *message)
{
	Ahp__TransportError te = AHP__TRANSPORT_ERROR__INIT;
	Ahp__Error e;
	uint8_t buf[1024];
	if (req_p == NULL || *req_p == NULL)
		return -1;
	ahp_error_set(&e, status, message);
	te.error = &e;
	int rc = -1;
	if (ahp__transport_error__get_packed_size(&te) <= sizeof buf) {
		size_t n = ahp__transport_error__pack(&te, buf);
		rc = s_server_send(self, (*req_p)->peer, (*req_p)->peer_len, AHP_RPC_KIND_ERROR,
		                   (*req_p)->request_id, buf, n);
	}
	ahp_rpc_req_free(req_p);
	return rc;
}

void
ahp_rpc_req_free(ahp_rpc_req_t **req_p)
{
	if (req_p == NULL || *req_p == NULL)
		return;
	free(*req_p); /* peer and body live in the same allocation */
	*req_p = NULL;
}

/* --- client --- */

struct ahp_rpc_client {
	void *ctx;
	int own_ctx;
	void *sock;
	uint64_t next_id;
	char endpoint[ENDPOINT_MAX];
};

static void *
s_client_socket(ahp_rpc_client_t *self)
{
	void *s = zmq_socket(self->ctx, ZMQ_DEALER);
	if (s == NULL)
		return NULL;
	int linger = 0, immediate = 1;
	int64_t max = CLIENT_MAX_MSG;
	/* IMMEDIATE: queue only to a connected server, so a call to an absent
	 * server fails as unavailable instead of waiting in a hidden queue. */
	if (zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
	    zmq_setsockopt(s, ZMQ_IMMEDIATE, &immediate, sizeof immediate) < 0 ||
	    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max, sizeof max) < 0 ||
	    zmq_connect(s, self->endpoint) < 0) {
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "rpc: cannot connect", "endpoint",
		           self->endpoint, "error", zmq_strerror(zmq_errno()), NULL);
		zmq_close(s);
		return NULL;
	}
	return s;
}

ahp_rpc_client_t *
ahp_rpc_client_new(void *zctx, const char *endpoint)
{
	if (s_check_endpoint(endpoint, "client") < 0)
		return NULL;
	ahp_rpc_client_t *self = calloc(1, sizeof *self);
	if (self == NULL)
		return NULL;
	ahp_strlcpy(self->endpoint, endpoint, sizeof self->endpoint);
	self->ctx = zctx;
	if (self->ctx == NULL) {
		self->ctx = zmq_ctx_new();
		self->own_ctx = 1;
		if (self->ctx == NULL) {
			free(self);
			return NULL;
		}
	}
	/* Ids start at a random point so a restarted client does not reuse the
	 * ids of its previous life while old replies may still be in flight. */
	ahp_random_bytes(&self->next_id, sizeof self->next_id);
	self->next_id = (self->next_id >> 2) + 1;
	self->sock = s_client_socket(self);
	if (self->sock == NULL) {
		ahp_rpc_client_destroy(&self);
		return NULL;
	}
	return self;
}

void
ahp_rpc_client_destroy(ahp_rpc_client_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	ahp_rpc_client_t *self = *self_p;
	if (self->sock)
		zmq_close(self->sock);
	if (self->own_ctx && self->ctx)
		zmq_ctx_term(self->ctx);
	free(self);
	*self_p = NULL;
}

void *
ahp_rpc_client_socket(ahp_rpc_client_t *self)
{
	return self ? self->sock : NULL;
}

static uint64_t
s_next_id(ahp_rpc_client_t *self)
{
	uint64_t id = self->next_id++;
	if (id == 0)
		id = self->next_id++;
	return id;
}

/* Sends one request without blocking; -1 with errno EAGAIN when no server
 * is connected (ZMQ_IMMEDIATE) or the queue is full. */
static int
s_client_send_id(ahp_rpc_client_t *self, uint64_t id, const void *body, size_t len)
{
	uint8_t hdr[AHP_RPC_HDR_LEN];
	ahp_rpc_hdr_pack(hdr, AHP_RPC_KIND_REQUEST, id);
	if (zmq_send(self->sock, hdr, sizeof hdr, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
		errno = zmq_errno();
		return -1;
	}
	if (zmq_send(self->sock, body, len, ZMQ_DONTWAIT) < 0) {
		errno = zmq_errno();
		return -1;
	}
	return 0;
}

uint64_t
ahp_rpc_client_send(ahp_rpc_client_t *self, const void *body, size_t len)
{
	uint64_t id = s_next_id(self);
	if (s_client_send_id(self, id, body, len) < 0)
		return 0;
	return id;
}

int
ahp_rpc_client_recv(ahp_rpc_client_t *self, uint64_t *request_id, uint8_t **body, size_t *len,
                    int *terr)
{
	*body = NULL;
	*len = 0;
	*terr = 0;
	for (;;) {
		zmq_msg_t parts[2];
		size_t nparts = 0, extra = 0;
		int more = 0;
		size_t more_len = sizeof more;
		for (;;) {
			zmq_msg_t m;
			zmq_msg_init(&m);
			int flags = nparts == 0 && extra == 0 ? ZMQ_DONTWAIT : 0;
			if (zmq_msg_recv(&m, self->sock, flags) < 0) {
				int e = zmq_errno();
				zmq_msg_close(&m);
				for (size_t i = 0; i < nparts; i++)
					zmq_msg_close(&parts[i]);
				if (nparts == 0 && extra == 0 && (e == EAGAIN || e == EINTR))
					return 0;
				errno = e;
				return -1;
			}
			zmq_getsockopt(self->sock, ZMQ_RCVMORE, &more, &more_len);
			if (nparts < 2)
				parts[nparts++] = m;
			else {
				extra++;
				zmq_msg_close(&m);
			}
			if (!more)
				break;
		}
		int rc = -1, e = EPROTO;
		if (nparts == 2 && extra == 0) {
			rc = ahp_rpc_reply_decode(zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]),
			                          zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]),
			                          request_id, body, len, terr);
			e = errno;
		}
		for (size_t i = 0; i < nparts; i++)
			zmq_msg_close(&parts[i]);
		if (rc != 0) {
			if (e == ENOMEM) {
				errno = ENOMEM;
				return -1;
			}
			ahp_log_kv(AHP_LOG_WARN, NULL, NULL, "rpc: malformed reply dropped",
			           "endpoint", self->endpoint, NULL);
			continue;
		}
		return 1;
	}
}

int
ahp_rpc_reply_decode(const uint8_t *hdr, size_t hdr_len, const uint8_t *frame, size_t n,
                     uint64_t *request_id, uint8_t **body, size_t *len, int *terr)
{
	uint32_t kind = 0;
	uint64_t id = 0;
	*body = NULL;
	*len = 0;
	*terr = 0;
	errno = EPROTO;
	if (ahp_rpc_hdr_unpack(hdr, hdr_len, &kind, &id) != 0 || kind == AHP_RPC_KIND_REQUEST)
		return -1;
	if (kind == AHP_RPC_KIND_ERROR) {
		Ahp__TransportError *te = ahp__transport_error__unpack(NULL, n, frame);
		const char *text = "transport error";
		int status = AHP__STATUS__ERR_INTERNAL;
		if (te && te->error) {
			if (te->error->status != AHP__STATUS__OK)
				status = te->error->status;
			if (te->error->message && *te->error->message)
				text = te->error->message;
		}
		*body = (uint8_t *)strdup(text);
		*len = *body ? strlen(text) : 0;
		*terr = status;
		if (te)
			ahp__transport_error__free_unpacked(te, NULL);
	} else {
		*body = malloc(n + 1); /* NUL-terminated for convenience */
		if (*body) {
			if (n)
				memcpy(*body, frame, n);
			(*body)[n] = 0;
			*len = n;
		}
	}
	if (*body == NULL) {
		*terr = 0;
		errno = ENOMEM;
		return -1;
	}
	*request_id = id;
	return 0;
}

static int
s_reconnect(ahp_rpc_client_t *self)
{
	zmq_close(self->sock);
	self->sock = s_client_socket(self);
	return self->sock ? 0 : -1;
}

static void s_set_err(int *status, char *errbuf, size_t errlen, int st, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void
s_set_err(int *status, char *errbuf, size_t errlen, int st, const char *fmt, ...)
{
	if (status)
		*status = st;
	if (errbuf && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(errbuf, errlen, fmt, ap);
		va_end(ap);
	}
}

/* Polls the socket for ev until deadline (monotonic ms). 1 ready, 0 timed
 * out, -1 error. */
static int
s_wait(void *sock, short ev, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - ahp_mono_ms();
		if (left < 0)
			left = 0;
		zmq_pollitem_t it = {sock, 0, ev, 0};
		int rc = zmq_poll(&it, 1, (long)left);
		if (rc < 0 && zmq_errno() == EINTR) {
			if (left == 0)
				return 0;
			continue;
		}
		if (rc < 0)
			return -1;
		if (rc > 0 && (it.revents & ev))
			return 1;
		if (left == 0)
			return 0;
	}
}

int
ahp_rpc_refused_at_accept(const char *endpoint, int wait_ms)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (endpoint == NULL || strncmp(endpoint, "ipc://", 6) != 0 ||
	    strlen(endpoint + 6) >= sizeof sun.sun_path)
		return 0;
	memcpy(sun.sun_path, endpoint + 6, strlen(endpoint + 6) + 1);
	/* never blocks: a unix connect() to a full backlog would wait for as
	 * long as the server does not accept (a wedged daemon), and this runs
	 * in CLIs, health checks and daemons' loops; that is "unknown" */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return 0;
	int refused = 0;
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0) {
		struct pollfd pf = {fd, POLLIN, 0};
		uint8_t b;
		if (poll(&pf, 1, wait_ms > 0 ? wait_ms : 0) == 1 &&
		    recv(fd, &b, 1, MSG_DONTWAIT) == 0)
			refused = 1;
	}
	close(fd);
	return refused;
}

int
ahp_rpc_refused_message(char *buf, size_t len)
{
	return snprintf(buf, len,
	                "uid %u (gid %u) may not use this socket (the daemon closes its "
	                "connections at accept)",
	                (unsigned)geteuid(), (unsigned)getegid());
}

int
ahp_rpc_call(ahp_rpc_client_t *self, const void *body, size_t len, int timeout_ms, int idempotent,
             int retries, uint8_t **reply, size_t *reply_len, int *status, char *errbuf,
             size_t errlen)
{
	int attempts = idempotent ? 1 + (retries > 0 ? retries : 0) : 1;
	uint64_t id = s_next_id(self);
	int last = AHP__STATUS__ERR_TIMEOUT;

	*reply = NULL;
	*reply_len = 0;
	if (status)
		*status = AHP__STATUS__OK;
	if (errbuf && errlen)
		errbuf[0] = '\0';
	if (timeout_ms <= 0)
		timeout_ms = 1;

	for (int attempt = 0; attempt < attempts; attempt++) {
		if (attempt > 0) {
			ahp_log_kv(AHP_LOG_INFO, NULL, NULL, "rpc: retrying idempotent call",
			           "endpoint", self->endpoint, "after", ahp_status_str(last), NULL);
			if (s_reconnect(self) < 0) {
				s_set_err(status, errbuf, errlen, AHP__STATUS__ERR_INTERNAL,
				          "cannot reconnect to %s", self->endpoint);
				return -1;
			}
		}
		int64_t deadline = ahp_mono_ms() + timeout_ms;

		/* With ZMQ_IMMEDIATE a send fails with EAGAIN until the
		 * connection is up: wait for POLLOUT until the deadline. A
		 * connection not up after S_REFUSED_PROBE_MS is checked once:
		 * a server that does not admit us closes it at accept, and
		 * says nothing more (s_listen_filter). */
		int sent = 0, probed = 0;
		int64_t probe_at = ahp_mono_ms() + S_REFUSED_PROBE_MS;
		for (;;) {
			if (s_client_send_id(self, id, body, len) == 0) {
				sent = 1;
				break;
			}
			if (errno != EAGAIN && errno != EINTR) {
				s_set_err(status, errbuf, errlen, AHP__STATUS__ERR_INTERNAL,
				          "send to %s failed: %s", self->endpoint,
				          zmq_strerror(errno));
				return -1;
			}
			if (!probed && ahp_mono_ms() >= probe_at) {
				probed = 1;
				int64_t left = deadline - ahp_mono_ms();
				if (ahp_rpc_refused_at_accept(self->endpoint,
				                              left < AHP_RPC_REFUSED_WAIT_MS
				                                  ? (int)(left > 0 ? left : 0)
				                                  : AHP_RPC_REFUSED_WAIT_MS)) {
					char m[160];
					ahp_rpc_refused_message(m, sizeof m);
					s_set_err(status, errbuf, errlen,
					          AHP__STATUS__ERR_PERMISSION_DENIED, "%s", m);
					return -1;
				}
			}
			if (s_wait(self->sock, ZMQ_POLLOUT,
			           probed || probe_at > deadline ? deadline : probe_at) < 0)
				break;
			if (ahp_mono_ms() >= deadline)
				break;
		}
		if (!sent) {
			last = AHP__STATUS__ERR_UNAVAILABLE;
			continue;
		}

		for (;;) {
			int w = s_wait(self->sock, ZMQ_POLLIN, deadline);
			if (w < 0) {
				s_set_err(status, errbuf, errlen, AHP__STATUS__ERR_INTERNAL,
				          "poll failed: %s", zmq_strerror(zmq_errno()));
				return -1;
			}
			if (w == 0)
				break;
			uint64_t rid = 0;
			uint8_t *b = NULL;
			size_t n = 0;
			int terr = 0;
			int rc = ahp_rpc_client_recv(self, &rid, &b, &n, &terr);
			if (rc < 0) {
				s_set_err(status, errbuf, errlen, AHP__STATUS__ERR_INTERNAL,
				          "receive failed: %s", zmq_strerror(errno));
				return -1;
			}
			if (rc == 0)
				continue;
			if (rid != id) {
				/* A late reply to an earlier, timed-out call. */
				free(b);
				continue;
			}
			if (terr != 0) {
				/* The status travels apart (*status); the text is
				 * the server's, so that a caller printing both does
				 * not say the status twice. */
				s_set_err(status, errbuf, errlen, terr, "%s", (const char *)b);
				free(b);
				return -1;
			}
			*reply = b;
			*reply_len = n;
			return 0;
		}
		last = AHP__STATUS__ERR_TIMEOUT;
	}
	if (last == AHP__STATUS__ERR_UNAVAILABLE)
		s_set_err(status, errbuf, errlen, last, "no server at %s (waited %d ms)",
		          self->endpoint, timeout_ms);
	else
		s_set_err(status, errbuf, errlen, last, "no reply from %s within %d ms",
		          self->endpoint, timeout_ms);
	return -1;
}

int
ahp_rpc_probe(const char *endpoint, const void *body, size_t len, int timeout_ms, char *err,
              size_t errlen)
{
	struct stat st;
	if (strncmp(endpoint, "ipc://", 6) == 0 && stat(endpoint + 6, &st) != 0) {
		snprintf(err, errlen, "%s: %s", endpoint + 6, strerror(errno));
		return -1;
	}
	ahp_rpc_client_t *cl = ahp_rpc_client_new(NULL, endpoint);
	if (cl == NULL) {
		snprintf(err, errlen, "cannot connect");
		return -1;
	}
	uint8_t *reply = NULL;
	size_t rlen = 0;
	int status = 0;
	/* Not idempotent-retried: one attempt. */
	int rc = ahp_rpc_call(cl, body, len, timeout_ms, 0, 0, &reply, &rlen, &status, err, errlen);
	free(reply);
	ahp_rpc_client_destroy(&cl);
	if (rc != 0 && status != AHP__STATUS__ERR_PERMISSION_DENIED)
		return -1;
	return 0;
}

int
ahp_rpc_health(const char *daemon, const char *endpoint, const void *body, size_t len)
{
	char err[256] = "";
	if (ahp_rpc_probe(endpoint, body, len, 2000, err, sizeof err) != 0) {
		ahp_term_printf(stderr, "%s: not healthy at %s: %s\n", daemon, endpoint, err);
		return 1;
	}
	/* serving, though maybe not for this user (a refusal is an answer) */
	printf("%s: serving at %s\n", daemon, endpoint);
	if (err[0] != '\0')
		ahp_term_printf(stderr, "%s: note: %s\n", daemon, err);
	return 0;
}

int
ahp_zmq_fd(void *sock)
{
	int fd = -1;
	size_t sz = sizeof fd;
	if (sock == NULL || zmq_getsockopt(sock, ZMQ_FD, &fd, &sz) != 0)
		return -1;
	return fd;
}

int
ahp_zmq_readable(void *sock)
{
	int ev = 0;
	size_t sz = sizeof ev;
	if (sock == NULL || zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &sz) != 0)
		return 0;
	return (ev & ZMQ_POLLIN) != 0;
}
