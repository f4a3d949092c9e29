/* A daemon's asynchronous client for another daemon: the one pattern the orchestrator's
 * sandboxd client follows, and the servicesd and approvald clients will.
 *
 * It wraps a DEALER (ahp_rpc_client) and adds what every such client needs:
 * - a table of requests in flight, each with its owner and deadline, so a reply, a
 *   timeout or the loss of the server reaches exactly the owner that asked, once;
 * - presence: on ipc:// a missing socket file means the server is not running;
 * - a connection monitor: when the server goes away, every request in flight is
 *   finished at once with ERR_INTERRUPTED instead of waiting for its deadline.
 * Callbacks may send new requests and forget others: the table is never walked while
 * a callback runs. Single-threaded, for one event loop. */
#ifndef AHP_CLIENT_H
#define AHP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct ahp_client ahp_client_t;

/* Called exactly once per request sent with an owner, unless it is forgotten
 * first. status 0: body/len is the server's reply body (borrowed, valid only
 * during the call). Otherwise status is an ahp.Status: the server's transport
 * refusal (message is its text), ERR_TIMEOUT (no answer before the deadline),
 * or ERR_INTERRUPTED (the connection was lost while the request was in flight:
 * the server may or may not have acted on it). message is borrowed. */
typedef void(ahp_client_done_fn)(void *owner, uint64_t id, int status, const char *message,
                                 const uint8_t *body, size_t len);

/* Connects to endpoint. name is the server's name for messages ("sandboxd").
 * zctx is the caller's ZeroMQ context (also used for the monitor's inproc
 * socket). NULL on failure, logged. */
ahp_client_t *ahp_client_new(void *zctx, const char *name, const char *endpoint,
                             ahp_client_done_fn *done);
/* NULL-safe; pending requests are dropped without callbacks. */
void ahp_client_destroy(ahp_client_t **self_p);

/* 1 when the server may be running (always 1 for non-ipc endpoints). */
int ahp_client_present(const ahp_client_t *self);

/* Sends body (borrowed) on behalf of owner, with a deadline timeout_ms from
 * now. Returns the request id (never 0), or 0 when it cannot be sent now
 * (server absent or not connected yet; errno EAGAIN) or at all (errno set):
 * the caller decides whether to try again later. */
uint64_t ahp_client_send(ahp_client_t *self, void *owner, const void *body, size_t len,
                         long timeout_ms);

/* Sends a request whose reply nobody waits for (it is dropped). 0 / -1. */
int ahp_client_post(ahp_client_t *self, const void *body, size_t len);

/* Forgets request id (its owner is going away): no callback will come; a
 * late reply is dropped. Unknown ids are ignored. */
void ahp_client_forget(ahp_client_t *self, uint64_t id);

/* Number of requests in flight. */
size_t ahp_client_pending(const ahp_client_t *self);

/* Sockets for the caller's poll set (ZMQ_FD / ZMQ_EVENTS). The monitor is
 * NULL when it could not be set up (losses are then found by deadlines). */
void *ahp_client_socket(ahp_client_t *self);
void *ahp_client_monitor_socket(ahp_client_t *self);

/* Drains replies and hands them to their owners. */
void ahp_client_recv(ahp_client_t *self);
/* Reads monitor events; on a disconnect finishes every request in flight
 * with ERR_INTERRUPTED. Call after ahp_client_recv, so that a reply which
 * arrived before the disconnect counts. */
void ahp_client_monitor_recv(ahp_client_t *self);
/* Finishes requests whose deadline is at or before now (monotonic ms) with
 * ERR_TIMEOUT. Returns ms until the next deadline, or max when sooner. */
long ahp_client_timers(ahp_client_t *self, int64_t now, long max);

#endif
