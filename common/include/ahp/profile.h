/* Agent profiles: YAML (libcyaml) -> validated structs, with file:line:column errors. */
#ifndef AHP_PROFILE_H
#define AHP_PROFILE_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sandboxd.pb-c.h"

enum ahp_net_mode { AHP_NET_NONE = 0, AHP_NET_PROXY = 1 };

typedef struct {
	char *name;
	char *value; /* may hold {{secret:NAME}} templates; never a value */
} ahp_kv_t;

typedef struct {
	char *host;     /* as written: exact or "*.example.com", optionally ":port"
	                   ("wiki.local:8443", "[::1]:8080"); lower-case, checked at load */
	char **methods; /* upper-case; NULL/0 = GET only */
	unsigned n_methods;
	char **paths; /* path prefixes, each starting with '/'; NULL/0 = any path */
	unsigned n_paths;
	ahp_kv_t *inject;
	unsigned n_inject;
} ahp_egress_t;

/*
 * Host-name syntax shared by the profile loader and credproxy (one check, so
 * what loads is what matches). s (len bytes, need not be NUL-terminated) is a
 * lower-case host without brackets, port or trailing dot. Accepted: a strict
 * dotted-quad IPv4 address ("127.0.0.1"), or LDH labels (a-z 0-9 '-', 1..63
 * bytes, no leading/trailing '-'), 253 bytes in all, whose last label is not
 * a number. A last label that is a number (all digits, or 0x + hex: the
 * WHATWG URL "ends in a number" rule) makes the host an IPv4 candidate, which
 * must then be a dotted quad: "127.1", "0x7f.1", "2130706433", "0177.0.0.1"
 * are refused, never read the way inet_aton would. Non-ASCII is refused (an
 * international name arrives as punycode, xn--). 0, or -1 with *why set to a
 * static reason.
 */
int ahp_host_check(const char *s, size_t len, const char **why);

/*
 * A header name a rule (or a provider) may inject: an RFC 9110 token of at
 * most 128 bytes, and none of the headers that frame or route a request
 * (Host, Content-Length, Transfer-Encoding, Connection, Keep-Alive, TE,
 * Trailer, Upgrade, Proxy-*; compared case-insensitively). 0, or -1 with
 * *why set to a static reason.
 */
int ahp_inject_header_check(const char *name, const char **why);

/* Parses a CPU count as the profile's `sandbox.cpus` takes it (like Docker's
 * --cpus): digits, optionally '.' and 1..3 more digits ("0.5", "1", "2",
 * "1.25"); no sign, exponent, leading '.', trailing '.', leading zero before
 * another digit ("01"), or more than 3 decimals. The range is not checked
 * here (AHP_LIMIT_CPUS_MILLI is). 0 with *milli = the value in thousandths of
 * a CPU, or -1 with *why set to a static reason. Pure. */
int ahp_cpus_parse(const char *s, uint32_t *milli, const char **why);
/* True when s[0, len) is an RFC 9110 token (section 5.6.2): one or more of
 * letters, digits and !#$%&'*+-.^_`|~ — what a header field name must be. */
bool ahp_http_token(const char *s, size_t len);

typedef struct {
	char *service; /* exactly one of service / tool is set */
	char *tool;
	char *match;       /* optional POSIX ERE on the command / args JSON */
	char *expires;     /* as written, e.g. "24h"; "24h" when not written */
	long expires_s;    /* parsed; default 86400 */
	regex_t *match_re; /* match compiled once at load (REG_EXTENDED | REG_NOSUB); NULL
	                      without match */
} ahp_approval_t;

typedef struct {
	int network;          /* enum ahp_net_mode, default none */
	uint32_t memory_mb;   /* default 256 */
	uint32_t pids_max;    /* default 64 */
	uint32_t cpu_seconds; /* default 10 */
	uint32_t timeout_s;   /* default 30 */
	uint32_t output_kb;   /* default 64 */
	uint32_t disk_mb;     /* default 1024: /workspace and /tmp together */
	uint32_t cpus_milli;  /* `cpus` as thousandths of a CPU; default 1000 */
} ahp_sandbox_cfg_t;

typedef struct {
	uint32_t max_turns;       /* default 30 */
	uint32_t max_model_calls; /* default 50 */
} ahp_limits_t;

typedef struct {
	char *name;  /* [a-z0-9-]{1,64} */
	char *model; /* provider:model */
	char *system_prompt;
	char **tools;
	unsigned n_tools;
	char **services;
	unsigned n_services;
	char *skills; /* as written (relative to the profile's base dir) */
	ahp_sandbox_cfg_t sandbox;
	ahp_egress_t *egress;
	unsigned n_egress;
	ahp_approval_t *approvals;
	unsigned n_approvals;
	ahp_limits_t limits;

	/* derived, filled by the loader */
	char *path;       /* the file it came from */
	char *skills_dir; /* absolute, realpath()ed; NULL when no skills */
	char *provider;   /* part of model before ':' */
	char *model_name; /* part after ':' */
	unsigned refs;    /* ahp_profile_ref / ahp_profile_destroy; 1 after load */
} ahp_profile_t;

/* Tools and services the platform knows. A profile naming anything else is
 * refused. NULL-terminated. */
extern const char *const ahp_known_tools[];
extern const char *const ahp_known_services[];

/* Loads and validates one profile. Relative `skills:` paths resolve against
 * base_dir (NULL = the directory above the profile's directory, i.e. the
 * AHP etc/ dir where profiles/ and skills/ sit side by side). On error
 * returns NULL and writes "file:line:column: message (hint)" into err
 * ("file: message" for file-level errors: not a regular file, a symlink,
 * larger than 256 KiB). {{secret:NAME}} templates are kept, never resolved.
 * Caller owns the result. */
ahp_profile_t *ahp_profile_load(const char *path, const char *base_dir, char *err, size_t errlen);
/* Drops one reference (a loaded profile has one) and frees the profile with the
 * last; NULL-safe, nulls *self_p. */
void ahp_profile_destroy(ahp_profile_t **self_p);
/* Takes one more reference (single-threaded users only); returns p. A set that
 * keeps an older set's profile through ahp_profiles_add shares it this way. */
ahp_profile_t *ahp_profile_ref(ahp_profile_t *p);

/* A profile's sandbox settings as sandboxd's Create takes them (proto/sandboxd.proto):
 * fills *out (the caller's, initialised with AHP__SBX__LIMITS__INIT; nothing is
 * allocated) and returns the network mode. The one mapping, for the orchestrator's
 * Create and sandboxd's one-shot Run. */
Ahp__Sbx__NetworkMode ahp_sandbox_limits(const ahp_sandbox_cfg_t *sc, Ahp__Sbx__Limits *out);

/* True when the profile lists the tool / service. */
int ahp_profile_has_tool(const ahp_profile_t *p, const char *tool);
int ahp_profile_has_service(const ahp_profile_t *p, const char *service);

/* The first approval rule of p that gates this call, NULL when none does.
 * A tool rule gates a call of that tool (tool equal) whose subject its match
 * regex matches, or every call of it when it has no match. A service rule
 * gates a call of that service (service equal; tool is then the calling tool,
 * e.g. exec_service) the same way. subject is what match applies to: the
 * command for exec, the arguments' JSON text otherwise (NULL reads as "").
 * tool or service may be NULL (not a tool call / not a service call). Pure:
 * no state, no allocation; the result is borrowed from p. */
const ahp_approval_t *ahp_profile_gate(const ahp_profile_t *p, const char *tool,
                                       const char *service, const char *subject);

/* Fields this build accepts but cannot enforce yet, so that run time refuses
 * them (fail closed): one line each, "<file>: warning: <what>". Calls fn once
 * per line; returns the number of lines. --check-config prints them. */
size_t ahp_profile_warnings(const ahp_profile_t *p, void (*fn)(void *arg, const char *line),
                            void *arg);

/* A set of profiles loaded from a directory (*.yaml, *.yml, in name order,
 * hidden files skipped). Bad files are reported through on_error
 * (file-prefixed message; on_error may be NULL) and skipped; the rest load.
 * A name already taken by an earlier file is an error for the later file.
 * NULL (reported) when dir cannot be read. */
typedef struct ahp_profiles ahp_profiles_t;
typedef void (*ahp_profile_err_fn)(void *arg, const char *message);
ahp_profiles_t *ahp_profiles_load_dir(const char *dir, const char *base_dir,
                                      ahp_profile_err_fn on_error, void *arg);
void ahp_profiles_destroy(ahp_profiles_t **self_p);
/* Borrowed; valid until the set is destroyed. NULL when unknown. */
const ahp_profile_t *ahp_profiles_get(const ahp_profiles_t *self, const char *name);
size_t ahp_profiles_count(const ahp_profiles_t *self);
const ahp_profile_t *ahp_profiles_at(const ahp_profiles_t *self, size_t i);
/* Number of files that failed to load in the last load. */
size_t ahp_profiles_errors(const ahp_profiles_t *self);

/* Files that failed in this load, in name order: i < ahp_profiles_errors()
 * (fewer only when recording ran out of memory).
 * path is the file, error the same file-prefixed message on_error got, name
 * the `name:` the file asks for when it could be read ("" when not; else the
 * file name without .yaml/.yml). Borrowed; NULL when i is out of range. */
const char *ahp_profiles_failed_path(const ahp_profiles_t *self, size_t i);
const char *ahp_profiles_failed_error(const ahp_profiles_t *self, size_t i);
const char *ahp_profiles_failed_name(const ahp_profiles_t *self, size_t i);

/* Warnings of this load that did not stop a file from loading (a file name
 * that differs from its `name:`), file-prefixed. Borrowed; NULL out of range. */
size_t ahp_profiles_warning_count(const ahp_profiles_t *self);
const char *ahp_profiles_warning(const ahp_profiles_t *self, size_t i);

/* Adds p to the set with a new reference (the set's own copy of an older
 * set's profile: last good version kept on reload). -1 when the name is
 * already in the set or out of memory. */
int ahp_profiles_add(ahp_profiles_t *self, const ahp_profile_t *p);

/* Puts p (new reference) in the place of the set's profile of the same name,
 * which is dropped and recorded as a failure of its file with message
 * (file-prefixed by the caller). -1 when no profile has that name or out of
 * memory (the set is then unchanged). */
int ahp_profiles_replace(ahp_profiles_t *self, const ahp_profile_t *p, const char *message);

#endif
