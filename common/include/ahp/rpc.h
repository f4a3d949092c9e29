/*
 * ZeroMQ RPC: ROUTER servers, DEALER clients, many requests in flight.
 *
 * Wire format (every message, both directions), two frames after the ROUTER
 * identity:
 *   frame 1: header, 16 bytes: "AHP1" | u32 kind (BE) | u64 request_id (BE)
 *            kind 1 = request, 2 = reply, 3 = transport error
 *   frame 2: body: the daemon's protobuf Request/Reply (or ahp.TransportError)
 * A server that cannot read a frame (bad header, wrong frame count, over
 * max size) answers kind 3 with a typed ahp.Error when it can address the
 * peer, logs, and keeps serving. Request bodies are decoded by the daemon.
 */
#ifndef AHP_RPC_H
#define AHP_RPC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common.pb-c.h"

#define AHP_RPC_MAX_MSG_DEFAULT (4 * 1024 * 1024)

typedef struct ahp_rpc_server ahp_rpc_server_t;
typedef struct ahp_rpc_client ahp_rpc_client_t;

/* One received request. The server hands it to the caller, who replies
 * (now or later) with ahp_rpc_server_reply(), which frees it. */
typedef struct {
	uint64_t request_id;
	uint8_t *body; /* protobuf bytes, owned by the request */
	size_t body_len;
	void *peer; /* opaque routing identity */
	size_t peer_len;
	uint32_t peer_uid; /* SO_PEERCRED uid on ipc://, (uint32_t)-1 when unknown */
	uint32_t peer_gid; /* SO_PEERCRED gid on ipc://, (uint32_t)-1 when unknown */
} ahp_rpc_req_t;

/* --- server --- */

/* Who may talk to a server: peers whose SO_PEERCRED uid is in uids, or whose
 * gid (primary, or a supplementary group per the group database) is in gids. */
#define AHP_RPC_ALLOW_MAX 32
typedef struct {
	uid_t uids[AHP_RPC_ALLOW_MAX];
	size_t n_uids;
	gid_t gids[AHP_RPC_ALLOW_MAX];
	size_t n_gids;
} ahp_rpc_allow_t;

/* Binds a ROUTER on endpoint (ipc://path: the socket file is made 0600 and
 * its directory must exist; tcp:// refused unless CURVE keys configured,
 * which this version does not support). max_msg caps ZMQ_MAXMSGSIZE (0 =
 * default). allow (ipc:// only; copied; NULL: none): the peers admitted, as
 * ahp_rpc_server_allow says; libzmq's listener closes a connection from any
 * other peer as it accepts it (SO_PEERCRED), before the ZMTP handshake, so
 * that a peer who is not admitted cannot hold a descriptor of the server
 * (an unprivileged flood of idle connections made libzmq abort the daemon
 * at EMFILE). Its client learns it from ahp_rpc_call (ERR_PERMISSION_DENIED);
 * the server logs nothing of it. NULL on failure with a log line.
 * Details: zctx NULL = the server owns a private context. The directory
 * must not be group/world-writable (unless sticky), and binding is refused
 * while another live server answers on the same path (a stale file is
 * replaced). Bodies over max_msg get ERR_TOO_LARGE; bodies over max_msg +
 * 1 MiB are cut off by libzmq, which drops that connection (the client
 * times out). inproc:// is accepted too (tests). */
ahp_rpc_server_t *ahp_rpc_server_new(void *zctx, const char *endpoint, size_t max_msg,
                                     const ahp_rpc_allow_t *allow);
void ahp_rpc_server_destroy(ahp_rpc_server_t **self_p);

/* Fills *out from comma-separated user and group names (either may be NULL
 * or empty), resolved now with getpwnam/getgrnam; keeps what *out already
 * holds (call with a zeroed struct to start empty) and skips duplicates.
 * -1 with err ("user \"x\" does not exist", "more than 32 users") on a name
 * that does not resolve or over AHP_RPC_ALLOW_MAX entries. With skip_missing
 * a name that does not resolve is logged and left out instead: for a
 * daemon's built-in defaults, so that a host without the optional system
 * users still starts, admitting fewer peers (never more). */
int ahp_rpc_allow_parse(ahp_rpc_allow_t *out, const char *users, const char *groups,
                        int skip_missing, char *err, size_t errlen);
/* Adds one uid / gid (duplicates ignored). 0 / -1 when full. */
int ahp_rpc_allow_add_uid(ahp_rpc_allow_t *self, uid_t uid);
int ahp_rpc_allow_add_gid(ahp_rpc_allow_t *self, gid_t gid);

/* Replaces the list of an ipc:// server made with one (ahp_rpc_server_new;
 * copied), e.g. at SIGHUP. A message from a peer the list does not name is
 * answered with a transport error ERR_PERMISSION_DENIED and logged ("peer
 * uid=U gid=G pid=P refused on EP") before its body is looked at; the daemon
 * never sees it. A list that names peers the listener was not made for gets
 * a new listener admitting every peer named so far (libzmq fixes a listener's
 * filter when it makes it; the peers connected then are reset once and
 * reconnect, a reply in flight is lost); one that names fewer keeps the
 * listener, and the per-message check refuses the rest. The socket file is
 * 0666 once a server has a list: the list, not the file mode, decides (the
 * directories above it still have to be traversable). A server made without
 * a list admits whoever can open its 0600 file (its owner and root), and this
 * call then fails (fail closed). 0, or -1 on a non-ipc server, one made
 * without a list, a file that cannot be chmod'ed, or a listener that cannot
 * be replaced (the old one stays). */
int ahp_rpc_server_allow(ahp_rpc_server_t *self, const ahp_rpc_allow_t *allow);

/* Whether the server at an ipc:// endpoint closes this process's
 * connections as it accepts them, i.e. does not admit its uid (the listener's
 * filter: ahp_rpc_server_new). A client whose connection is not up after a
 * moment asks this once: a plain connection then reads end-of-file within
 * wait_ms where an admitted one reads the server's ZMTP greeting. 1 refused;
 * 0 not, or unknown (no server, another endpoint kind, no answer in time). */
#define AHP_RPC_REFUSED_WAIT_MS 500
int ahp_rpc_refused_at_accept(const char *endpoint, int wait_ms);
/* Writes the standard text of that refusal for this process ("uid U (gid G)
 * may not use this socket (the daemon closes its connections at accept)")
 * into buf (len bytes, NUL-terminated). snprintf's return. */
int ahp_rpc_refused_message(char *buf, size_t len);

/* The zmq socket, for zmq_poll (ZMQ_POLLIN). */
void *ahp_rpc_server_socket(ahp_rpc_server_t *self);

/* Non-blocking: receives one request. Returns 1 and sets *req_p (caller owns
 * it until it replies), 0 when nothing is pending, -1 on a socket error.
 * Malformed frames are answered and dropped internally (return 0). */
int ahp_rpc_server_recv(ahp_rpc_server_t *self, ahp_rpc_req_t **req_p);

/* Sends a reply body for *req_p and frees the request (sets *req_p NULL).
 * Takes no ownership of body. 0 / -1. */
int ahp_rpc_server_reply(ahp_rpc_server_t *self, ahp_rpc_req_t **req_p, const void *body,
                         size_t len);

/* Answers *req_p with a transport error (kind 3, ahp.TransportError with
 * status and message) instead of a daemon reply, and frees it. 0 / -1. */
int ahp_rpc_server_reply_error(ahp_rpc_server_t *self, ahp_rpc_req_t **req_p, int status,
                               const char *message);

/* Frees a request without replying (e.g. shutting down). */
void ahp_rpc_req_free(ahp_rpc_req_t **req_p);

/* --- client --- */

/* Connects a DEALER to endpoint (zctx NULL = private context). The socket
 * uses ZMQ_IMMEDIATE: while no server is connected, sends fail instead of
 * queueing (ahp_rpc_client_send returns 0 with errno EAGAIN). NULL on
 * failure. */
ahp_rpc_client_t *ahp_rpc_client_new(void *zctx, const char *endpoint);
void ahp_rpc_client_destroy(ahp_rpc_client_t **self_p);
void *ahp_rpc_client_socket(ahp_rpc_client_t *self);

/* Asynchronous use: send returns the request id (never 0), 0 on failure. */
uint64_t ahp_rpc_client_send(ahp_rpc_client_t *self, const void *body, size_t len);

/* Non-blocking receive of one reply. Returns 1 with *request_id, *body
 * (caller frees with free()) and *len; 0 when nothing pending; -1 on error.
 * A transport error reply (kind 3) returns 1 with *terr set to the status
 * and *body holding the message text (NUL-terminated); otherwise *terr = 0. */
int ahp_rpc_client_recv(ahp_rpc_client_t *self, uint64_t *request_id, uint8_t **body, size_t *len,
                        int *terr);

/* Synchronous call for CLIs and simple clients: sends body, waits up to
 * timeout_ms for the reply with the same request id, discarding others.
 * When `idempotent` is non-zero it retries up to `retries` times on timeout
 * (reconnecting the socket). Returns 0 with *reply (caller frees) or -1 with
 * err filled (status ERR_TIMEOUT / ERR_UNAVAILABLE / transport status and a
 * message, written into errbuf). The same request id is used for every
 * retry. Replies to other ids are discarded, so do not mix ahp_rpc_call with
 * asynchronous sends on one client. timeout_ms applies per attempt. */
int ahp_rpc_call(ahp_rpc_client_t *self, const void *body, size_t len, int timeout_ms,
                 int idempotent, int retries, uint8_t **reply, size_t *reply_len, int *status,
                 char *errbuf, size_t errlen);

/* For event loops that wait on a ZeroMQ socket beside other fds (curl multi,
 * libevent, poll): the socket's ZMQ_FD, or -1 (sock NULL or no such option).
 * The fd belongs to the socket; never close or read it. It is
 * EDGE-triggered: it says "something changed", not "input waits", so ask
 * ahp_zmq_readable before sleeping and after every send or receive, which
 * may consume the edge (ZeroMQ's zmq_getsockopt(3), ZMQ_FD). */
int ahp_zmq_fd(void *sock);
/* True when a message waits on sock (ZMQ_EVENTS has ZMQ_POLLIN); false for
 * NULL or on error. */
int ahp_zmq_readable(void *sock);

/* The body of every daemon's --health: one call of `body` (len bytes, a
 * cheap request the daemon's loop answers at once) on endpoint, one attempt
 * of timeout_ms. An ipc:// endpoint whose socket file does not exist fails at
 * once (a stopped daemon, not a slow one). Any reply means the loop is
 * serving: a success, an application error, or a transport error with status
 * ERR_PERMISSION_DENIED (the probe's uid is not admitted, yet the daemon
 * answered). Returns 0, or -1 with err filled ("<path>: No such file or
 * directory", "cannot connect", or ahp_rpc_call's message). */
int ahp_rpc_probe(const char *endpoint, const void *body, size_t len, int timeout_ms, char *err,
                  size_t errlen);

/* Prints "<daemon>: serving at <endpoint>" on stdout (and, when the daemon
 * does not admit this user, "<daemon>: note: <why>" on stderr), or "<daemon>:
 * not healthy at <endpoint>: <why>" on stderr, after ahp_rpc_probe; returns
 * the process exit code (0 healthy, 1 not). */
int ahp_rpc_health(const char *daemon, const char *endpoint, const void *body, size_t len);

/* Low-level framing, exposed for unit tests and fuzzing. */
#define AHP_RPC_HDR_LEN 16
enum { AHP_RPC_KIND_REQUEST = 1, AHP_RPC_KIND_REPLY = 2, AHP_RPC_KIND_ERROR = 3 };
void ahp_rpc_hdr_pack(uint8_t out[AHP_RPC_HDR_LEN], uint32_t kind, uint64_t request_id);
/* 0 when buf is a valid header (sets kind, request_id), -1 otherwise. */
int ahp_rpc_hdr_unpack(const uint8_t *buf, size_t len, uint32_t *kind, uint64_t *request_id);
/* Decodes a reply as ahp_rpc_client_recv does, from its two frames: header
 * (hdr_len bytes) and body (n bytes; untrusted). Returns 0 with *request_id and
 * *body, *len and *terr as ahp_rpc_client_recv documents (caller frees *body), or
 * -1 with errno EPROTO (not a reply header) or ENOMEM, *body NULL. */
int ahp_rpc_reply_decode(const uint8_t *hdr, size_t hdr_len, const uint8_t *frame, size_t n,
                         uint64_t *request_id, uint8_t **body, size_t *len, int *terr);

#endif
