/*
 * credproxy: the deny-by-default egress proxy that holds and injects
 * credentials, and the route to the model providers.
 *
 * Internal interfaces shared by the daemon's files. Everything a sandbox or
 * an upstream sends is untrusted; the pure parts (policy, addr, scrub,
 * providers) never allocate from an untrusted length without a bound and are
 * unit-tested (tests/unit/cp_test_*.c) and fuzzed (tests/fuzz/fuzz_cphost.c).
 *
 * Files:
 *   main.c      CLI (serve, --check-config, --help), config, privileges, signals
 *   proxy.c     listeners, one state machine per client connection (HTTP/1.1
 *               forward proxy, CONNECT, interception, provider routes)
 *   policy.c    host/authority normalisation, egress rules, decisions, injection
 *   addr.c      the SSRF guard: which resolved addresses are refused
 *   scrub.c     streaming redaction of injected secrets reflected upstream
 *   tls.c       the platform CA, per-host leaf certificates, TLS contexts
 *   providers.c providers.conf: model-provider routes
 *   egress.c    the durable egress log (SQLite) and the control socket
 */
#ifndef CP_H
#define CP_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "ahp/profile.h"
#include "ahp/secrets.h"

struct evbuffer;
struct event_base;

#define CP_HOST_MAX 253   /* RFC 1035 text form, no trailing dot */
#define CP_LABEL_MAX 140  /* "[redacted:NAME]" with the longest secret name, plus NUL */
#define CP_REASON_MAX 512 /* one-line refusal reason, shown to the client */

/* ---- policy.c ---------------------------------------------------------- */

/*
 * Normalises the host part of a request target or CONNECT authority so that
 * one spelling of a host matches one rule (RFC 3986 section 3.2.2, RFC 1123):
 * ASCII lower-case, one trailing dot removed, IPv4 only in dotted-quad
 * decimal (other numeric forms such as "0x7f.1", "2130706433", "127.1",
 * "0177.0.0.1" are refused, never reinterpreted), IPv6 only in brackets and
 * written canonically (inet_ntop) in out without brackets. A name must be
 * LDH labels of 1..63 bytes, 253 bytes in all. in need not be NUL-terminated.
 * Returns 0 and writes a NUL-terminated host to out (outlen >= CP_HOST_MAX+1),
 * or -1 with *why set to a static one-line reason.
 */
int cp_host_normalize(const char *in, size_t len, char *out, size_t outlen, const char **why);

/*
 * Parses "host[:port]" (a CONNECT request-target, RFC 9110 section 9.3.6, or
 * a URL authority). Userinfo ("user@host") is refused. The host goes through
 * cp_host_normalize. *port is 0 when absent (the caller picks 80 or 443 by
 * scheme). 0 / -1 with *why.
 */
int cp_authority_parse(const char *in, size_t len, char *host, size_t hostlen, uint16_t *port,
                       const char **why);

/* One header a rule injects: name as written in the profile, value with every
 * {{secret:NAME}} template expanded (owned; wiped on destroy). */
typedef struct {
	char *name;
	char *value;
	size_t value_len;
} cp_inject_t;

/* A secret an injecting rule uses: what the scrubber looks for. Borrowed
 * from the policy (which copies it from the secrets it was built with). */
typedef struct {
	const char *name;
	const uint8_t *value;
	size_t len;
} cp_secret_ref_t;

typedef struct {
	const char *profile; /* the profile the rule belongs to */
	unsigned index;      /* position in that profile's egress: list */
	char *host;          /* normalised; "*.example.com" matches sub-domains only */
	bool wildcard;       /* false: the rule names its host explicitly, which is what
	                        lets it reach a special address (cp_addr_special) */
	uint16_t port;       /* 0: ports 80 and 443 only */
	char **methods;      /* upper-case; GET when the profile gives none */
	unsigned n_methods;
	char **paths; /* path prefixes; none = any path. "/a/" matches what starts
	                 with it, "/a" matches "/a" and "/a/..." (not "/ab") */
	unsigned n_paths;
	cp_inject_t *inject;
	unsigned n_inject;
	cp_secret_ref_t *secrets; /* secrets the injected values hold */
	unsigned n_secrets;
} cp_rule_t;

typedef struct cp_policy cp_policy_t;

/*
 * Builds the egress rules of every loaded profile. A rule that names a
 * {{secret:NAME}} absent from secrets, a malformed host or an invalid header
 * name makes the whole build fail (err gets "profile: egress[i]: reason"),
 * so a reload keeps the previous policy. The policy copies what it needs;
 * profiles and secrets may be freed afterwards. NULL on failure.
 */
cp_policy_t *cp_policy_new(const ahp_profiles_t *profiles, ahp_secrets_t *secrets, char *err,
                           size_t errlen);
/* Wipes every expanded value and secret copy, then frees. NULL-safe. */
void cp_policy_destroy(cp_policy_t **self_p);
/* True when the profile is loaded (a refusal then names it). */
bool cp_policy_has_profile(const cp_policy_t *self, const char *profile);

enum cp_verdict {
	CP_ALLOW = 0,
	CP_DENY_PROFILE, /* unknown profile */
	CP_DENY_HOST,    /* no rule names this host */
	CP_DENY_PORT,    /* a rule names the host, but not this port */
	CP_DENY_METHOD,  /* ... but not this method */
	CP_DENY_PATH,    /* ... but not this path */
};

typedef struct {
	enum cp_verdict verdict;
	const cp_rule_t *rule;      /* the rule that allowed; NULL when refused */
	char reason[CP_REASON_MAX]; /* e.g. "no rule for evil.example in profile release-notes" */
} cp_decision_t;

/*
 * Decides one request. host is normalised (cp_host_normalize), port is the
 * effective port (80/443 filled in), method NULL and path NULL for a CONNECT
 * (then only host and port are checked and the rule must allow CONNECT's
 * eventual requests: any rule for host:port allows the tunnel). path is the
 * origin-form path without the query; it must be normalised first
 * (cp_path_check). The first matching rule in profile order wins.
 */
void cp_policy_decide(const cp_policy_t *self, const char *profile, const char *method,
                      const char *host, uint16_t port, const char *path, cp_decision_t *out);

/*
 * Checks a request path before prefix matching: it must start with '/',
 * hold no dot segments ("." / "..", also percent-encoded, also before a ';'
 * as in "/..;/"), no encoded '/', '\\' or NUL, no raw '\\', no malformed
 * percent-encoding, and no control bytes or spaces. 0 when it may be matched
 * as is, -1 with *why otherwise (the request is refused: 400).
 */
int cp_path_check(const char *path, size_t len, const char **why);

/* ---- addr.c ------------------------------------------------------------ */

/*
 * The SSRF guard. Returns NULL when sa may be connected to without a rule
 * naming the host, or a static class name when it is special: "loopback",
 * "private", "link-local", "cgnat", "multicast", "unspecified", "broadcast",
 * "reserved", "metadata", "ipv4-mapped", "ipv4-compatible", "nat64",
 * "6to4", "teredo", "unique-local", "documentation", "benchmarking"
 * (RFC 6890 special-purpose registries; IPv6 forms that embed an IPv4
 * address are judged by that address as well).
 */
const char *cp_addr_special(const struct sockaddr *sa);

/* ---- scrub.c ----------------------------------------------------------- */

typedef struct cp_scrub cp_scrub_t;

/*
 * A streaming redactor for one response. Each secret is searched for as its
 * raw bytes, in standard and URL-safe base64 (every alignment: the
 * characters that depend on the secret alone; at most one character on each
 * side mixes with its neighbours and stays) and percent-encoded (RFC 3986
 * unreserved bytes as they are, the rest %XX in upper or lower hex); a match
 * is replaced by "[redacted:NAME]", overlapping matches by one label per
 * secret. Secrets shorter than 8 bytes are not searched (they would match
 * ordinary text). At most window-1 bytes (the longest pattern) are held back
 * between calls. The scrubber copies what it needs (wiped on destroy).
 * Caller owns the result; NULL on allocation failure.
 */
cp_scrub_t *cp_scrub_new(const cp_secret_ref_t *secrets, unsigned n);
void cp_scrub_destroy(cp_scrub_t **self_p);
/*
 * Feeds len bytes; appends what is certainly clean to out. With final set,
 * flushes what was held back. Returns the number of redactions made by this
 * call, or -1 when out could not grow.
 */
int cp_scrub_feed(cp_scrub_t *self, const void *in, size_t len, struct evbuffer *out, bool final);
/* Forgets the stream (held bytes wiped) so the same patterns serve the next
 * response; building the patterns (base64 and percent forms) is the costly
 * part, done once per connection and rule. NULL-safe. */
void cp_scrub_reset(cp_scrub_t *self);
/* Redacts a whole value (a header) with self's patterns into out
 * (NUL-terminated, truncated to outlen), leaving the stream state alone.
 * Returns the number of redactions. */
int cp_scrub_apply(cp_scrub_t *self, const char *in, size_t len, char *out, size_t outlen);
/* Redacts a whole header value in place into out (NUL-terminated, truncated
 * to outlen). Returns the number of redactions. */
int cp_scrub_string(const cp_secret_ref_t *secrets, unsigned n, const char *in, size_t len,
                    char *out, size_t outlen);

/* ---- tls.c ------------------------------------------------------------- */

typedef struct cp_tls cp_tls_t;

/*
 * Loads the platform CA from state_dir (ca.key 0600 owned by this user,
 * ca.crt 0644), creating both at first start (EC P-256, 10 years,
 * basicConstraints CA:TRUE pathlen 0, keyUsage keyCertSign). upstream_ca_file
 * (NULL or "" = the system trust store) verifies upstream servers.
 * NULL with err on failure.
 */
cp_tls_t *cp_tls_new(const char *state_dir, const char *upstream_ca_file, char *err, size_t errlen);
void cp_tls_destroy(cp_tls_t **self_p);
/* Path of ca.crt (what sandboxd mounts into sandboxes). Borrowed. */
const char *cp_tls_ca_path(const cp_tls_t *self);
/*
 * A server-side SSL for intercepting a CONNECT to host (normalised name or
 * IP text): the leaf certificate is minted on first use (SAN = host, 30
 * days, signed by the CA) and cached. The handshake fails unless the
 * client's SNI equals host (a client without SNI is accepted only when host
 * is an IP address). Caller owns the SSL. NULL on failure.
 */
SSL *cp_tls_server_ssl(cp_tls_t *self, const char *host);
/*
 * A client-side SSL to an upstream: SNI set to host (unless an IP address),
 * peer verification on against the trust store, host name (or IP) checked
 * with X509_VERIFY_PARAM. Caller owns the SSL. NULL on failure.
 */
SSL *cp_tls_client_ssl(cp_tls_t *self, const char *host);

/* ---- providers.c ------------------------------------------------------- */

enum cp_auth { CP_AUTH_NONE = 0, CP_AUTH_BEARER, CP_AUTH_X_API_KEY, CP_AUTH_HEADER };

typedef struct {
	char *name;   /* [a-z0-9-]{1,64}, as in the model string "name:model" */
	char *scheme; /* "http" or "https" */
	char *host;   /* normalised */
	uint16_t port;
	char *base_path; /* without trailing '/', "" for none */
	enum cp_auth auth;
	char *header; /* CP_AUTH_HEADER: the header name */
	char *secret; /* secret name; NULL with CP_AUTH_NONE */
} cp_provider_t;

typedef struct cp_providers cp_providers_t;

/*
 * Reads providers.conf: one provider per line,
 *     NAME  BASE-URL  AUTH  [SECRET]
 * AUTH is none, bearer, x-api-key or header:NAME; '#' starts a comment line.
 * Every secret named must exist in secrets (checked, never printed). A
 * missing file is an empty list. Errors are "path:line: reason". NULL on
 * failure.
 */
cp_providers_t *cp_providers_load(const char *path, ahp_secrets_t *secrets, char *err,
                                  size_t errlen);
void cp_providers_destroy(cp_providers_t **self_p);
const cp_provider_t *cp_providers_find(const cp_providers_t *self, const char *name);
size_t cp_providers_count(const cp_providers_t *self);
const cp_provider_t *cp_providers_at(const cp_providers_t *self, size_t i);

/* ---- egress.c ---------------------------------------------------------- */

/* One request's outcome. Strings are borrowed for the call; none holds a
 * secret value (injected holds header names only). */
typedef struct {
	const char *run;     /* "" for provider routes */
	const char *profile; /* "" for provider routes (their rule is "provider:NAME") */
	const char *method;  /* "CONNECT" for tunnels */
	const char *host;
	uint16_t port;
	const char *path;    /* "" for CONNECT */
	int status;          /* HTTP status sent to the client; 0 if none */
	uint64_t bytes_up;   /* request body bytes forwarded upstream */
	uint64_t bytes_down; /* response body bytes sent to the client */
	uint32_t duration_ms;
	bool allowed;         /* the decision */
	const char *rule;     /* "profile#i" that allowed, or "" */
	const char *reason;   /* refusal or failure reason, or "" */
	const char *injected; /* comma-separated header names, or "" */
	unsigned redactions;
} cp_egress_rec_t;

typedef struct cp_egress cp_egress_t;

/*
 * Opens (creating) the egress log at db_path (WAL; records are committed in
 * one transaction per event-loop turn) and binds the control endpoint
 * (ipc://...; peers checked against allow before a frame is decoded; allow
 * NULL = the socket file's owner and root only). Called as root (before the
 * privilege drop, for the socket), the database is opened in the first loop
 * turn instead, so that its files belong to the user credproxy runs as.
 * NULL with err on failure.
 */
cp_egress_t *cp_egress_new(struct event_base *base, const char *db_path, const char *ctl_endpoint,
                           const void *allow /* ahp_rpc_allow_t */, char *err, size_t errlen);
void cp_egress_destroy(cp_egress_t **self_p);
/* Records older than days (> 0) are deleted, checked at most once an hour
 * when records are written; 0 keeps everything. */
void cp_egress_set_retention(cp_egress_t *self, long days);
/* Writes the logfmt line and queues the record for the log. Never fails the
 * caller: a full queue or a database error is logged and counted. self NULL:
 * the line alone. */
void cp_egress_record(cp_egress_t *self, const cp_egress_rec_t *rec);

/* ---- proxy.c ----------------------------------------------------------- */

/* What one configuration generation holds: rules, providers, the secrets
 * they were built from. Reference-counted: an exchange keeps the generation
 * it started with across a SIGHUP reload. */
typedef struct cp_gen cp_gen_t;

/* Takes ownership of all three (NULL providers = none). Refcount 1. */
cp_gen_t *cp_gen_new(cp_policy_t *policy, cp_providers_t *providers, ahp_secrets_t *secrets);
void cp_gen_unref(cp_gen_t *gen);

typedef struct {
	const char *relay_socket; /* sandboxd relays here; PROXY v2 header required */
	const char *api_socket;   /* /providers/<name>/... for the orchestrator */
	const char *dev_listen;   /* "127.0.0.1:PORT" or "" */
	const char *dev_profile;
	const void *relay_allow; /* ahp_rpc_allow_t: who may connect to relay_socket */
	const void *api_allow;   /* ... to api_socket */
	const char *hosts_file;  /* extra name -> address pairs, or "" */
	const char *resolv_conf; /* nameservers; "" = none (hosts files only) */
	size_t max_header_bytes; /* request or response head */
	unsigned max_headers;
	unsigned header_timeout_s; /* a request head must arrive within this */
	unsigned idle_timeout_s;   /* no byte either way for this long closes */
	unsigned connect_timeout_s;
	unsigned response_timeout_s; /* no byte from the upstream for this long: 504 */
	unsigned max_conns;
} cp_proxy_cfg_t;

typedef struct cp_proxy cp_proxy_t;

/*
 * Binds the listeners (unix sockets are made 0666: who may connect is
 * decided by SO_PEERCRED against the allow lists, before a byte is read)
 * and sets up DNS. Serving starts when the event loop runs. NULL with err.
 */
cp_proxy_t *cp_proxy_new(struct event_base *base, const cp_proxy_cfg_t *cfg, char *err,
                         size_t errlen);
/* Late parts: TLS and the egress log are opened after the privilege drop.
 * Borrowed; both outlive the proxy. */
void cp_proxy_set_tls(cp_proxy_t *self, cp_tls_t *tls);
void cp_proxy_set_egress(cp_proxy_t *self, cp_egress_t *egress);
/* Installs a new generation (owned); exchanges in flight keep theirs. */
void cp_proxy_set_gen(cp_proxy_t *self, cp_gen_t *gen);
/* Serves an already connected client socket (owned from here) as if a
 * listener had accepted it, without a peer check: role 0 = relay (PROXY v2
 * header expected), 1 = api, 2 = dev (dev_profile). For tests and fuzzing. */
void cp_proxy_adopt(cp_proxy_t *self, int fd, int role);
/* Client connections open now (tests, fuzzing). */
unsigned cp_proxy_conns(const cp_proxy_t *self);
/* Closes listeners and every connection. NULL-safe. */
void cp_proxy_destroy(cp_proxy_t **self_p);

#endif
