/* sandboxd private header: shared types, the sandboxd<->init wire format, prototypes by file. */
#ifndef SBX_H
#define SBX_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/filter.h>

#include "ahp/cfg.h"
#include "ahp/limit_table.h"
#include "ahp/rpc.h"
#include "sandboxd.pb-c.h"

#define SBX_ID_MAX 64 /* run / sandbox id: [A-Za-z0-9-]{1,64} */
/* The one-shots' id space (Run on the exec socket): a Run's run_id must start
 * with this (sandboxd picks "cli-" + 16 hex when it is empty), and Create on
 * the RPC endpoint refuses such an id. The orchestrator's run ids ("r-" + 16
 * hex, orchestrator/run.c) are therefore only ever a Create's: a one-shot
 * cannot take the id of a run, whose end makes the orchestrator destroy it. */
#define SBX_ONESHOT_PREFIX "cli-"
#define SBX_ONESHOT_ID_ERROR "a sandbox id starting with cli- is a one-shot's (sandboxd exec)"
#define SBX_RUN_ID_ERROR "a one-shot's run_id must start with cli- (the other ids are Create's)"
/* A Run with keep_workspace on a sandboxd that keeps no workspace
 * (retain_failed_max = 0 and keep_workspaces off) is refused up front. */
#define SBX_KEEP_OFF_ERROR                                                                         \
	"--keep: this sandboxd keeps no workspace (retain_failed_max = 0 in sandboxd.conf)"
#define SBX_EXEC_ID_MAX 128                  /* exec id: [A-Za-z0-9._:-]{1,128}, no leading '.' */
#define SBX_PROFILE_MAX 64                   /* profile name, logs only */
#define SBX_CMD_MAX AHP_LIM_EXEC_COMMAND_MAX /* command bytes (limits table) */
#define SBX_OUTPUT_KB_MAX AHP_LIM_OUTPUT_KB_MAX /* per stream (limits table) */
#define SBX_REQ_MAX (SBX_CMD_MAX + 16 * 1024)   /* RPC request ceiling (ZMQ_MAXMSGSIZE) */
#define SBX_INSIDE_UID 1000                     /* the agent's uid and gid inside every sandbox */
#define SBX_PROXY_PORT 3128                     /* egress listener inside proxy-mode sandboxes */
/* The exec socket (one-shot Run, loop.c / cli.c): a request packet's cap, checked
 * before decoding; replies up to SBX_RUN_INLINE_MAX bytes go in the packet, larger
 * ones (up to SBX_RUN_REPLY_MAX) in a sealed memfd passed with it. */
#define SBX_RUN_REQ_MAX (SBX_CMD_MAX + 1024)
#define SBX_RUN_INLINE_MAX (64 * 1024)
#define SBX_RUN_REPLY_MAX (2u * SBX_OUTPUT_KB_MAX * 1024u + 64u * 1024u)
#define SBX_QUEUE_MAX 64   /* pending execs per sandbox */
#define SBX_WAITERS_MAX 16 /* requests waiting on one exec id */
#define SBX_CWD_MAX 1024   /* longest cwd we persist */
#define SBX_HOSTNAME "sandbox"
/* Create refuses a proxy-mode sandbox whose run id or profile cannot go into the
 * PROXY v2 header credproxy requires (ahp/proxyv2.h): */
#define SBX_PROXY_NAME_ERROR                                                                       \
	"network proxy needs a profile name and a run id of 1..128 bytes of [A-Za-z0-9._:-] "      \
	"(credproxy applies that profile's egress rules)"
#define SBX_CA_FILE_MAX (64 * 1024)                        /* proxy_ca_file, bytes */
#define SBX_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt" /* inside: system bundle + CA */
#define SBX_CA_CERT "/etc/ahp/ca.crt"                      /* inside: the platform CA alone */

/* Limits of one sandbox, already defaulted and range-checked. */
typedef struct {
	uint32_t memory_mb;
	uint32_t pids_max;
	uint32_t cpu_seconds;
	uint32_t timeout_s;
	uint32_t output_kb;
	uint32_t file_size_mb;
	uint32_t open_files;
	uint32_t disk_mb;    /* size of the sandbox's filesystem (/workspace + /tmp) */
	uint32_t cpus_milli; /* CPU bandwidth, thousandths of a CPU */
} sbx_limits_t;

/* Daemon configuration, resolved from the cfg table (main.c). */
typedef struct {
	char home[PATH_MAX];
	char state_dir[PATH_MAX];
	char endpoint[PATH_MAX + 16];
	char exec_socket[108];        /* sun_path: the one-shot Run socket (loop.c) */
	char proxy_socket[108];       /* sun_path */
	char proxy_ca_file[PATH_MAX]; /* credproxy's CA certificate; "" = none */
	char rootfs[PATH_MAX];        /* empty: host allowlist */
	char ro_bind[4096];           /* "HOST:SANDBOX,..." */
	bool keep_workspaces;
	uint32_t uid_base;
	uint32_t uid_count;
	uint32_t max_sandboxes;
	uint32_t relay_max_conns;
	uint32_t pool_size;
	uint32_t retain_failed_max; /* workspaces kept by Destroy keep_workspace, at most */
	uint32_t retain_failed_s;   /* ... and for at most this long */
	ahp_rpc_allow_t allow;      /* peers admitted on endpoint */
	char user[64];              /* the worker's user ("root": no drop, with a warning) */
} sbx_config_t;

/* ---- sandboxd <-> init control messages (SOCK_SEQPACKET, one message per send) ---- */

enum {
	SBX_CTL_GO = 1, /* zygote -> init: maps written, cgroups joined; build the sandbox */
	SBX_CTL_READY,  /* init -> sandboxd: built (after GO) / claimed (after CLAIM, carrying
	                   the proxy listener by SCM_RIGHTS in proxy mode) */
	SBX_CTL_FAIL,   /* init -> sandboxd: setup failed; payload is a message, then init exits */
	SBX_CTL_EXEC,   /* sandboxd -> init: sbx_ctl_exec_t + cwd + command */
	SBX_CTL_DONE,   /* init -> sandboxd: sbx_ctl_done_t + stdout + stderr + cwd */
	SBX_CTL_CLAIM,  /* sandboxd -> init: sbx_ctl_claim_t; a built sandbox gets its run */
};

typedef struct {
	uint32_t network; /* AHP__SBX__NETWORK_MODE__* */
} sbx_ctl_claim_t;

typedef struct {
	uint32_t type;
	uint32_t len; /* payload bytes after this header */
} sbx_ctl_hdr_t;

typedef struct {
	uint32_t timeout_ms;
	uint32_t cpu_seconds;
	uint32_t output_cap; /* bytes per stream */
	uint32_t open_files;
	uint64_t file_size; /* bytes */
	uint32_t cwd_len;
	uint32_t cmd_len;
} sbx_ctl_exec_t;

#define SBX_DONE_TIMEOUT 0x1u   /* the wall clock ran out; everything was killed */
#define SBX_DONE_TRUNCATED 0x2u /* stdout or stderr went over the cap */
#define SBX_DONE_NOSPAWN 0x4u   /* /bin/sh could not be started */

typedef struct {
	int32_t wstatus; /* waitpid() status of /bin/sh */
	uint32_t flags;
	uint32_t duration_ms;
	uint32_t out_len;
	uint32_t err_len;
	uint32_t cwd_len; /* 0: unchanged / unknown */
	uint64_t cpu_us;  /* user + system time of the shell */
} sbx_ctl_done_t;

#define SBX_CTL_MSG_MAX                                                                            \
	(sizeof(sbx_ctl_hdr_t) + sizeof(sbx_ctl_done_t) + 2u * SBX_OUTPUT_KB_MAX * 1024u +         \
	 SBX_CWD_MAX + SBX_CMD_MAX)

/* ---- the root filesystem plan (sandbox.c builds it once, init.c executes it) ---- */

enum sbx_mnt_kind {
	SBX_MNT_DIR,       /* mkdir dst */
	SBX_MNT_SYMLINK,   /* symlink dst -> src */
	SBX_MNT_BIND,      /* bind host src at dst (SBX_MNT_F_*) */
	SBX_MNT_TMPFS,     /* tmpfs at dst: size_kb, mode */
	SBX_MNT_PROC,      /* fresh proc at dst */
	SBX_MNT_MASK,      /* host /dev/null over dst when dst exists */
	SBX_MNT_RDONLY,    /* make the existing dst read-only (a rebind inside proc) */
	SBX_MNT_SEAL,      /* make the mount at dst read-only (after filling it) */
	SBX_MNT_WORKSPACE, /* the sandbox's workspace, read-write */
	SBX_MNT_DISK,      /* bind src, a path on the sandbox's own disk (disk.c), at dst */
};

#define SBX_MNT_F_RO 0x1        /* read-only */
#define SBX_MNT_F_FILE 0x2      /* the source is not a directory */
#define SBX_MNT_F_DEV 0x4       /* a device node: keep device access (no nodev) */
#define SBX_MNT_F_OPTIONAL 0x8  /* skip when the source or target is missing */
#define SBX_MNT_F_NOFOLLOW 0x10 /* the source path itself must not be a symlink */

typedef struct {
	int kind;
	int flags;
	unsigned mode;
	unsigned size_kb;
	char dst[256];      /* inside the sandbox, relative to its root */
	char src[PATH_MAX]; /* host path, or symlink target */
} sbx_mnt_t;

#define SBX_MNT_MAX 96
typedef struct {
	int n;
	sbx_mnt_t m[SBX_MNT_MAX];
} sbx_plan_t;

#define SBX_CG_JOIN_MAX 4 /* v1 hierarchies a sandbox joins */

/* What init needs; filled by the privileged parent before clone() (the child gets a copy),
 * or, for the lean sandboxd-init, rebuilt by sbx_init_lean_main from what it inherits. */
typedef struct {
	int ctl;   /* init's end of the control socketpair */
	int errfd; /* where init writes its own diagnostics */
	const sbx_plan_t *plan;
	const struct sock_fprog *filter; /* seccomp program for commands */
	char workspace[PATH_MAX];        /* host path of /workspace */
	char root_dir[PATH_MAX];         /* empty host dir the new root is attached over */
	char *const *env_none;           /* command environment, network none */
	char *const *env_proxy;          /* ... and proxy (HTTP_PROXY and friends) */
	char *argv_area;                 /* sandboxd's argv strings, wiped in init */
	size_t argv_len;
	int joins[SBX_CG_JOIN_MAX]; /* cgroup task lists init joins first ("0"), then closes */
	int n_joins;
} sbx_init_args_t;

/* The lean init (libexec/ahp/sandboxd-init beside the full program, initmain.c): the privileged
 * parent's clone execs it with these descriptors and nothing else (0-2 as the parent's):
 *   SBX_INIT_FD_CTL     init's end of the control socket; its first message is an
 *                       sbx_init_spawn_t (the parent queues it before the clone)
 *   SBX_INIT_FD_DATA    a sealed memfd made once at start: sbx_init_data_t, the plan, the filter
 *   SBX_INIT_FD_JOIN0.. the n_joins cgroup task lists (v1)
 * argv is {"sandboxd-init", NULL}, the environment empty. */
#define SBX_INIT_EXE "sandboxd-init"
#define SBX_INIT_FD_CTL 3
#define SBX_INIT_FD_DATA 4
#define SBX_INIT_FD_JOIN0 5
#define SBX_INIT_MAGIC 0x31494253u /* "SBI1" */
typedef struct {
	uint32_t magic;
	uint32_t size;       /* bytes of the whole memfd */
	uint32_t plan_off;   /* an sbx_plan_t cut after its n entries (8-aligned) */
	uint32_t plan_len;   /* offsetof(sbx_plan_t, m) + n * sizeof(sbx_mnt_t) */
	uint32_t filter_off; /* struct sock_filter[filter_n] (8-aligned) */
	uint32_t filter_n;
} sbx_init_data_t;
typedef struct {
	uint32_t magic;
	int32_t n_joins;          /* 0..SBX_CG_JOIN_MAX */
	char workspace[PATH_MAX]; /* NUL-terminated, as sbx_init_args_t's */
	char root_dir[PATH_MAX];
} sbx_init_spawn_t;

typedef struct sbx_daemon sbx_daemon_t;
typedef struct sbx_sandbox sbx_sandbox_t;
typedef struct sbx_cgroup sbx_cgroup_t;
typedef struct sbx_relay sbx_relay_t;
typedef struct sbx_store sbx_store_t;

/* ---- main.c ---- */
extern const char *const sbx_version;
/* Where sandboxd's argv strings live: init overwrites them so a sandbox's
 * /proc/1/cmdline shows no host paths. */
extern char *sbx_argv_area;
extern size_t sbx_argv_len;

/* ---- fdpass.c ---- */
/* Sends buf as one message on a unix socket, with fd attached when fd >= 0
 * (the caller still owns fd). 0 / -1 with errno. */
int sbx_send_fd(int sock, const void *buf, size_t len, int fd);
/* Receives one message into buf (flags as recvmsg; MSG_CMSG_CLOEXEC is added).
 * *fd is the first descriptor it carried or -1; any others are closed. Returns
 * the byte count, 0 at EOF, -1 with errno (EMSGSIZE: the message or its fds
 * were cut short; nothing is kept). */
ssize_t sbx_recv_fd(int sock, void *buf, size_t len, int flags, int *fd);

/* ---- init.c (runs inside the sandbox) ---- */
/* A sandbox's init: the clone() entry point when init is a copy of the privileged parent
 * (no sandboxd-init), else called by sbx_init_lean_main. Never returns to its caller's code:
 * exits the process. Uses no malloc or stdio (in a copy, a libc lock may look held). */
int sbx_init_main(void *args);
/* main() of the lean sandboxd-init (see SBX_INIT_FD_CTL): reads and checks the spawn message
 * and maps the data memfd (a bad one ends it with exit status 1 and a FAIL message), then runs
 * sbx_init_main. Never returns. */
int sbx_init_lean_main(void);
/* The commands' environments (NULL-terminated), by network mode. */
extern char *const sbx_env_none[];
extern char *const sbx_env_proxy[];

/* One order from sandboxd, as sbx_init_parse_order validated it. */
typedef struct {
	uint32_t type; /* SBX_CTL_CLAIM or SBX_CTL_EXEC */
	sbx_ctl_claim_t claim;
	sbx_ctl_exec_t exec;
	char *cwd; /* EXEC: NUL-terminated inside the buffer; NULL = keep the current one */
	char *cmd; /* EXEC: NUL-terminated inside the buffer */
} sbx_order_t;

/* Validates the n-byte order sandboxd sent, in buf of cap bytes (cap >= n + 2:
 * cwd and command are NUL-terminated in place, so buf is modified). claimed:
 * a CLAIM was carried out already (a second CLAIM, or an EXEC before the
 * first, is refused). Returns 0 with *out filled (pointers into buf), or -1
 * with *why set to a static reason. Pure (no allocation, no I/O), so init may
 * call it and the fuzzer can. */
int sbx_init_parse_order(uint8_t *buf, size_t n, size_t cap, bool claimed, sbx_order_t *out,
                         const char **why);

/* One result from init, as sbx_init_parse_done validated it (pointers into
 * the message). */
typedef struct {
	sbx_ctl_done_t done;
	const uint8_t *out; /* done.out_len bytes */
	const uint8_t *err; /* done.err_len bytes */
	const char *cwd;    /* done.cwd_len bytes, not NUL-terminated; cwd_len 0: unknown */
} sbx_result_view_t;

/* Validates a DONE payload of len bytes (after its header) that init sent for
 * a command whose output cap was cap bytes per stream: sizes within the caps
 * and adding up to len exactly. A cwd that is not absolute or holds control
 * characters is dropped (cwd_len 0): init checked it, but what crosses the
 * socket is checked again. Returns 0 with *v filled, or -1 with *why set to a
 * static reason. Pure, so the fuzzer can call it. */
int sbx_init_parse_done(const uint8_t *p, size_t len, uint32_t cap, sbx_result_view_t *v,
                        const char **why);

/* ---- seccomp.c ---- */
/* Builds the command filter once (libseccomp), exported as a BPF program.
 * Caller owns prog->filter (free()). 0 / -1 with a log line. */
int sbx_seccomp_build(struct sock_fprog *prog);
/* Builds the filter (so a table error fails here too), then writes the policy
 * to file (a FILE *): the default action, every row (names, action, reason)
 * and every argument rule, as text or, with as_json, as one JSON object
 * (scripts/gen-security-doc and tests/security read it). 0 / -1 (logged). */
int sbx_seccomp_describe(void *file, int as_json);

/* ---- cgroup.c ---- */
typedef struct {
	uint64_t oom_kills;   /* memory controller OOM kills */
	uint64_t pids_denied; /* forks refused at pids.max */
} sbx_cg_counters_t;

/* Finds the controllers (v2 when mounted with memory+pids, else v1) and makes
 * the instance directory named after `instance` under sandboxd's own cgroup;
 * removes leftovers of an earlier run of the same instance. 0 / -1. */
int sbx_cgroup_setup(const char *instance);
/* Kills (freezer first) and removes every sandbox cgroup of the instance:
 * the worker died and nothing may outlive it unseen. Blocks until done
 * (~0.5 s per stuck cgroup at most). Root only. */
void sbx_cgroup_kill_all(void);
/* Removes the instance directories at exit (when empty). */
void sbx_cgroup_teardown(void);
/* Describes the mode for logs ("v1", "v2"). */
const char *sbx_cgroup_mode(void);
/* Zygote side: makes the cgroup `name` (leftovers of that name are killed and
 * replaced), writes the limits, moves pid into it: 0 / -1 (errno). With pid
 * 0 (v1 only; ENOTSUP on v2) nothing is moved: joins gets the task list of
 * each hierarchy open for writing (the caller owns them) and the count is
 * returned; init writes "0" to each to join as a single thread, which does
 * not wait for an RCU grace period as moving another process does. */
int sbx_cgroup_create(const char *name, const sbx_limits_t *lim, pid_t pid,
                      int joins[SBX_CG_JOIN_MAX]);
/* Worker side: a read-only handle on an existing cgroup's counter files
 * (world-readable). NULL on failure. */
sbx_cgroup_t *sbx_cgroup_open(const char *name);
/* Reads the kill / refusal counters. 0 / -1. */
int sbx_cgroup_counters(sbx_cgroup_t *self, sbx_cg_counters_t *out);
/* The privileged parent's (root): new limits for a running cgroup (a spare
 * claimed by a run). 0 / -1. */
int sbx_cgroup_set_limits(const char *name, const sbx_limits_t *lim);
/* Removes cgroup `name` in every hierarchy; while tasks remain it kills them
 * so that a forking tree cannot race the kill: v2 cgroup.kill when present,
 * else freeze (v1 freezer hierarchy, v2 cgroup.freeze), SIGKILL each task,
 * thaw (blocks at most ~200 ms waiting for the freeze). 0 when gone (or
 * absent), -1 (EBUSY) while tasks are still exiting: call again later. */
int sbx_cgroup_remove(const char *name);
void sbx_cgroup_destroy(sbx_cgroup_t **self_p);

/* ---- disk.c (privileged side only: root, never inside a sandbox) ---- */
/* Makes ready the filesystem of uid slot `slot` before its init starts: an
 * ext4 image of lim->disk_mb MiB (reserved on the host in full with
 * fallocate; an existing image keeps the size it was made with) attached to
 * a loop device and mounted at workspaces/s<slot>, with ws/ (the workspace,
 * owned by uid), tmp/ (the sandbox's /tmp) and proc/ (sbx_disk_proc_files).
 * Idempotent: an image already mounted is reused. 0, or -1 with a message in
 * err (errlen bytes). */
int sbx_disk_attach(const sbx_store_t *store, uint32_t slot, uid_t uid, const sbx_limits_t *lim,
                    char *err, size_t errlen);
/* Makes disks/.ready-<mb>-0.img, a fresh image (reserved in full, formatted
 * from the template) that the next attach of a disk of that size takes by
 * rename instead of making one: fallocate and the template copy leave the
 * spawn path. Nothing is made when a ready image of mb exists (one made
 * ahead, or a discarded disk emptied by sbx_disk_discard); ready images of
 * other sizes are deleted; no template is made here (the caller runs it in
 * a child while the spawner may be making one). 0 / -1. */
int sbx_disk_prepare(const sbx_store_t *store, uint32_t mb);
/* How many emptied or prepared images of mb MiB are kept ready
 * (disks/.ready-<mb>-<k>.img, k below this). Each holds its whole reservation
 * on the host, so the count is bounded by bytes too: at most SBX_READY_MAX,
 * and at most SBX_READY_MB_MAX MiB of that size, but always one (8 of 1 GiB,
 * 2 of 4 GiB, 1 of anything above 8 GiB). Per size: other sizes' go when a
 * preparer runs, at a stop, or when a new image finds no room; none is kept
 * while the host is below its headroom. mb 0: SBX_READY_MAX. */
#define SBX_READY_MAX 8
#define SBX_READY_MB_MAX 8192u
static inline int
sbx_disk_ready_max(uint32_t mb)
{
	uint32_t n = mb > 0 ? SBX_READY_MB_MAX / mb : SBX_READY_MAX;
	return n < 1 ? 1 : n > SBX_READY_MAX ? SBX_READY_MAX : (int)n;
}
/* Whether a ready image of mb MiB is there (a few access(2) calls): the
 * spawner forks no preparer then. */
bool sbx_disk_ready(const sbx_store_t *store, uint32_t mb);
/* Writes proc/meminfo (MemTotal = lim->memory_mb) and proc/cpuinfo
 * (ceil(lim->cpus_milli / 1000) processors) of a mounted disk, in place: a
 * running sandbox sees the new content (at claim). 0 / -1 (errno). */
int sbx_disk_proc_files(const sbx_store_t *store, uint32_t slot, const sbx_limits_t *lim);
/* Unmounts (lazily) the disk of a slot; its loop device clears itself once
 * the last user lets go. With recycle, waits (at most 2 s) for that and
 * empties the image for a later disk of its size (every byte reads as zero
 * again, the template's metadata copied in: disk.c s_recycle) under a ready
 * name; else, or when it cannot, deletes it. Nothing of the slot's data is
 * left either way. recycle may block: only in a child. 0 / -1. */
int sbx_disk_discard(const sbx_store_t *store, uint32_t slot, bool recycle);
/* At start, before any disk is mounted: takes the mark of a clean stop
 * (disks/.stopped) away, durably, and mounts every image under disks/ that is
 * not mounted (after a restart, so retained and resumable workspaces are there
 * again), each checked first when the mark was not there (disk.c). -1 with err
 * set when the mark cannot be taken away durably (the start must fail: a
 * crash after it would leave disks mounted since unchecked); a disk that
 * cannot be mounted is logged, not an error. */
int sbx_disk_restore(const sbx_store_t *store, char *err, size_t errlen);
/* At a clean stop: unmounts the /etc template's tmpfs (sandbox.c),
 * discards the disks no sandbox record claims (pool spares) and unmounts
 * (lazily) the others, whose images stay for sbx_disk_restore: a stopped
 * sandboxd leaves no mount and no loop device behind. */
void sbx_disk_stop(sbx_store_t *store);

/* ---- zygote.c: the privileged parent (privilege separation) ----
 *
 * sandboxd serve is two processes. The one started as root stays root and
 * single-threaded for its whole life and is the spawner: namespaces, uid
 * maps, cgroups, workspaces, reaping inits. Before anything else it forks the
 * worker, which drops to the unprivileged `user` and runs the RPC loop, the
 * exec store and the egress relay. They talk over two SOCK_SEQPACKET pairs
 * with the fixed-size messages below, each validated on receipt by the
 * parent (a type it knows, a uid slot below uid_count, limits within the
 * limits table; the uid and cgroup name are derived from the slot, never
 * taken from the worker):
 *   async (worker -> parent): SPAWN, DISCARD, SWEEP, KILL
 *   async (parent -> worker): SPAWNED (+ the init's control socket), EXITED,
 *                             DISCARDED (a slot's disk is gone: it may be reused)
 *   call  (worker -> parent, one reply each): LIMITS, RMCG, CA
 */
enum {
	SBX_ZY_SPAWN = 1, /* make the workspace and exec log of a slot, then its init */
	SBX_ZY_DISCARD,   /* a slot's workspace to the trash, its exec log away; delete */
	SBX_ZY_SWEEP,     /* delete what is in the trash */
	SBX_ZY_KILL,      /* kill the slot's cgroup tree (freezer) and its init */
	SBX_ZY_LIMITS,    /* call: new limits for the slot's running cgroup (a claimed spare) */
	SBX_ZY_RMCG,      /* call: remove the slot's cgroup; rc -1/EBUSY while tasks exit */
	SBX_ZY_CA,        /* call: refresh the platform CA in the /etc template (ca.c) */
	SBX_ZY_SPAWNED,   /* parent -> worker: the answer to SPAWN */
	SBX_ZY_EXITED,    /* parent -> worker: the slot's init was reaped (pid, status) */
	SBX_ZY_DISCARDED, /* parent -> worker: a DISCARD is done; the slot may be used again */
};

typedef struct {
	uint32_t type;
	uint32_t slot; /* the sandbox's uid slot (also the reply's cookie) */
	uint32_t uid;  /* informational: the parent uses uid_base + slot */
	sbx_limits_t lim;
	char cgname[32]; /* informational: the parent uses "s<slot>" */
} sbx_spawn_req_t;

typedef struct {
	uint32_t type; /* SBX_ZY_SPAWNED, SBX_ZY_EXITED or SBX_ZY_DISCARDED */
	uint32_t slot;
	int32_t pid;    /* > 0 when an init exists: the parent's child, reaped by it */
	int32_t status; /* EXITED: the waitpid() status */
	char err[200];  /* SPAWNED: empty on success */
} sbx_spawn_rep_t;      /* SPAWNED: + the worker's end of the control socket (SCM_RIGHTS) */

typedef struct {
	uint32_t type; /* the call's */
	uint32_t slot;
	int32_t rc;  /* 0 / -1 */
	int32_t err; /* errno when rc is -1 */
} sbx_call_rep_t;

/* serve: the privileged parent's whole life (started as root, single
 * threaded): prepares the state dirs, plan, filter and cgroups, forks the
 * worker (restarted after a crash, at most a few times a minute) and serves
 * it until SIGTERM/SIGINT or the worker stops. Returns the exit code. */
int sbx_priv_run(const sbx_config_t *cfg);
/* One sandboxd per state_dir: makes state_dir (0700) when missing and takes a
 * POSIX write lock on state_dir/sandboxd.lock, held until this process ends
 * (zygote.c). Before anything in state_dir or run/ is written. 0 (also when
 * already held), or -1 with err set ("another sandboxd (pid N) uses state_dir
 * D" when one holds it). */
int sbx_priv_lock(const char *state_dir, char *err, size_t errlen);

/* ---- store.c ---- */
typedef struct {
	char profile[SBX_PROFILE_MAX + 1];
	int network;
	uint32_t slot;
	sbx_limits_t lim;
	int64_t created_ms;
	uint32_t execs;
	bool kept;       /* destroyed with keep_workspace: not recreated on Exec */
	int64_t kept_ms; /* when it was kept (retention applies); 0: kept for good */
	char cwd[SBX_CWD_MAX];
	/* in memory only, never written: a one-shot's (Run) sandbox, which has no record
	 * on disk (nor exec log entries) while it runs: a sandboxd that dies under it
	 * finds its slot unowned at restart and discards it, like a spare's. A Destroy
	 * that keeps its workspace (exec --keep) writes the record then. */
	bool oneshot;
} sbx_meta_t;

/* Opens (creating) the state directory layout. NULL on failure. */
sbx_store_t *sbx_store_new(const char *state_dir);
void sbx_store_destroy(sbx_store_t **self_p);
/* "root", "etc", "workspaces", "execs", "trash", "sandboxes", "disks": directories of the
 * layout. */
const char *sbx_store_dir(const sbx_store_t *self, const char *sub);
/* Host path of the workspace of uid slot `slot` into buf: the ws/ directory
 * of its disk (disk.c), mounted at workspaces/s<slot>. 0 / -1. */
int sbx_store_workspace_path(const sbx_store_t *self, uint32_t slot, char *buf, size_t len);
/* fresh: a new record, written in place; else replaced atomically. 0 / -1. */
int sbx_store_meta_write(sbx_store_t *self, const char *id, const sbx_meta_t *meta, bool fresh);
int sbx_store_meta_unlink(sbx_store_t *self, const char *id);
/* 0 found, -1 absent or unreadable. */
int sbx_store_meta_read(sbx_store_t *self, const char *id, sbx_meta_t *meta);
/* Calls fn for every sandbox with metadata on disk. */
void sbx_store_meta_each(sbx_store_t *self,
                         void (*fn)(void *arg, const char *id, const sbx_meta_t *meta), void *arg);
/* Calls fn for each slot with a workspace or exec log on disk that `used`
 * does not claim (leftovers of a crash). */
void sbx_store_orphans(sbx_store_t *self, bool (*used)(void *arg, uint32_t slot),
                       void (*fn)(void *arg, uint32_t slot), void *arg);
/* Deletes everything below dirfd without following symlinks. 0 / -1. */
int sbx_rmtree_at(int dirfd);

/* Exec records of one sandbox (an append-only log, kept open while it runs). */
typedef struct sbx_execlog sbx_execlog_t;
/* Opens (create: or makes) the log of a slot and indexes it. NULL on failure (errno). */
sbx_execlog_t *sbx_execlog_open(sbx_store_t *store, uint32_t slot, bool create);
void sbx_execlog_close(sbx_execlog_t **self_p);
/* Records that an exec starts. -1 with EEXIST when the id is already known. */
int sbx_execlog_intent(sbx_execlog_t *self, const char *exec_id);
int sbx_execlog_result(sbx_execlog_t *self, const char *exec_id, const uint8_t *buf, size_t len);
/* 2: result (*buf caller frees), 1: intent only, 0: never seen, -1 error. */
int sbx_execlog_lookup(sbx_execlog_t *self, const char *exec_id, uint8_t **buf, size_t *len);
/* The same for a sandbox that is not running (opens its log read-only). */
int sbx_store_exec_lookup(sbx_store_t *self, uint32_t slot, const char *exec_id, uint8_t **buf,
                          size_t *len);

/* ---- ca.c ---- */
/* Puts the platform CA (cfg->proxy_ca_file: PEM, at most SBX_CA_FILE_MAX
 * bytes, only CA certificates, re-encoded) into the /etc template every
 * sandbox mounts read-only: SBX_CA_BUNDLE becomes the host's bundle plus the
 * CA, SBX_CA_CERT the CA alone. Reads the file again only when it changed
 * (stat), so it is cheap to call before each proxy-mode sandbox; files are
 * replaced by rename, so running sandboxes see the new ones. A missing or
 * unusable file is logged once and leaves the trust store as it was (proxy
 * mode still works for plain HTTP and tunnels). Not done with rootfs (its own
 * /etc). Returns 1 when the CA is installed, 0 when there is none, -1 when
 * the file is unusable. Runs as root in sandboxd, never in a sandbox. */
int sbx_ca_refresh(const sbx_config_t *cfg, sbx_store_t *store);

/* ---- relay.c ---- */
/* One relayed connection: client (inside the sandbox netns) <-> proxy_socket.
 * header (hlen bytes, at most AHP_PP2_HEADER_MAX: the PROXY v2 header naming
 * the sandbox) is sent upstream before any byte of the client. Takes
 * client_fd; when proxy_socket cannot be reached, the client's connection is
 * reset (RST) and NULL returned: a sandbox never gets around the proxy. */
sbx_relay_t *sbx_relay_new(int client_fd, const char *proxy_socket, const uint8_t *header,
                           size_t hlen);
void sbx_relay_destroy(sbx_relay_t **self_p);
/* Poll interest for both ends (fd -1 when closed). */
void sbx_relay_events(const sbx_relay_t *self, int *cfd, short *cev, int *ufd, short *uev);
/* Moves bytes after poll; returns 0 while alive, -1 when finished (destroy it). */
int sbx_relay_io(sbx_relay_t *self, short crev, short urev);

/* ---- sandbox.c ---- */
/* Builds the root filesystem plan (host allowlist or rootfs, ro_bind) and the
 * /etc template under the state dir. 0 / -1 with err. */
int sbx_plan_build(const sbx_config_t *cfg, const sbx_store_t *store, sbx_plan_t *plan, char *err,
                   size_t errlen);

/* A live (or starting) sandbox. */
sbx_sandbox_t *sbx_sandbox_new(sbx_daemon_t *d, const char *id, const sbx_meta_t *meta,
                               uint32_t slot);
void sbx_sandbox_destroy(sbx_sandbox_t **self_p);
/* The run id; ".spare-N" for a pool spare, ".gone-N" once destroyed. */
const char *sbx_sandbox_id(const sbx_sandbox_t *self);
bool sbx_sandbox_is_spare(const sbx_sandbox_t *self);
/* Asks the zygote for an init (id NULL at new(): a pool spare). 0 / -1. */
int sbx_sandbox_start(sbx_sandbox_t *self, char *err, size_t errlen);
/* The zygote's answer to start(). */
void sbx_sandbox_on_spawned(sbx_sandbox_t *self, const sbx_spawn_rep_t *rep, int ctl);
/* A spare becomes run `id` with meta's limits and network: a ready one at
 * once, one still starting when it is built (its Create waits). 0 / -1. */
int sbx_sandbox_claim(sbx_sandbox_t *self, const char *id, const sbx_meta_t *meta, char *err,
                      size_t errlen);
/* After Destroy (or an unexpected death): the id is free for a new sandbox.
 * discard: once its processes are gone, its workspace and exec log are
 * deleted and its uid slot freed (the caller does it, see frees_slot). */
void sbx_sandbox_retire(sbx_sandbox_t *self, bool discard);
bool sbx_sandbox_discards(const sbx_sandbox_t *self);
/* Kills the sandbox's processes; pending requests are answered with status. */
void sbx_sandbox_kill(sbx_sandbox_t *self, int status, const char *why);
bool sbx_sandbox_alive(const sbx_sandbox_t *self);
bool sbx_sandbox_ready(const sbx_sandbox_t *self);
bool sbx_sandbox_claiming(const sbx_sandbox_t *self); /* a Create waits for it */
/* How far a sandbox's start is: 2 built by init, 1 spawned by the zygote, 0 not starting. */
int sbx_sandbox_start_stage(const sbx_sandbox_t *self);
bool sbx_sandbox_gone(const sbx_sandbox_t *self); /* init reaped and cgroup removed */
pid_t sbx_sandbox_init_pid(const sbx_sandbox_t *self);
/* Queues a reply to the Create request for when the sandbox is ready. */
void sbx_sandbox_wait_ready(sbx_sandbox_t *self, ahp_rpc_req_t **req, bool existed);
/* Exec: takes ownership of *req. Looks up stored results, attaches to a
 * running or queued exec of the same id, or queues a new one. */
void sbx_sandbox_exec(sbx_sandbox_t *self, ahp_rpc_req_t **req, const Ahp__Sbx__ExecRequest *er);
/* Fetch: stored result, wait for a running one, or a typed error. */
void sbx_sandbox_fetch(sbx_sandbox_t *self, ahp_rpc_req_t **req, const char *exec_id);
/* Event-loop hooks. */
int sbx_sandbox_ctl_fd(const sbx_sandbox_t *self);
int sbx_sandbox_listener_fd(const sbx_sandbox_t *self);
/* The worker's user (config key user): its uid and gid; "root" is 0/0. -1
 * with err when it does not exist or is another name for uid 0 (conf.c). */
int sbx_conf_worker_user(const char *user, uid_t *uid, gid_t *gid, char *err, size_t errlen);
/* A profile name as profiles are named ([a-z0-9-], 1 to SBX_PROFILE_MAX
 * bytes): what the exec socket and the CLI accept (conf.c). */
bool sbx_profile_name_ok(const char *s);
/* Caps the relayed connections of all sandboxes together (the worker's
 * descriptors allow so many: loop.c s_fd_budget); SIZE_MAX until set. */
void sbx_relay_budget_set(size_t n);
void sbx_sandbox_on_ctl(sbx_sandbox_t *self);
void sbx_sandbox_on_accept(sbx_sandbox_t *self);
void sbx_sandbox_on_init_exit(sbx_sandbox_t *self, int status);
int sbx_sandbox_relays(sbx_sandbox_t *self, sbx_relay_t ***relays);
void sbx_sandbox_relay_done(sbx_sandbox_t *self, int i);
/* Retries cgroup removal after death; 1 when fully gone. */
int sbx_sandbox_reap_cgroup(sbx_sandbox_t *self);
void sbx_sandbox_info(const sbx_sandbox_t *self, Ahp__Sbx__SandboxInfo *info);
const sbx_meta_t *sbx_sandbox_meta(const sbx_sandbox_t *self);
uint32_t sbx_sandbox_slot(const sbx_sandbox_t *self);

/* ---- loop.c (the worker) ---- */
/* Sends an async request to the privileged parent. 0 / -1. */
int sbx_daemon_zygote(sbx_daemon_t *self, const sbx_spawn_req_t *req);
/* A call to the privileged parent (LIMITS, RMCG, CA): sends req, waits for its
 * reply (at most 10 s). Returns the reply's rc with errno set from it, -1 with
 * EPIPE when the parent is gone. */
int sbx_daemon_call(sbx_daemon_t *self, const sbx_spawn_req_t *req);
/* Asks the parent to kill the slot's tree (async). */
void sbx_daemon_kill_slot(sbx_daemon_t *self, uint32_t slot);
/* The worker: async and call are its ends of the parent's sockets (it owns
 * them). The RPC socket is bound by the caller's process before the drop. */
/* A pool spare's start ended: ok resets the refill backoff; a failure holds
 * refills for 100 ms, doubling per failure in a row up to 30 s. */
void sbx_daemon_pool_result(sbx_daemon_t *self, bool ok);
sbx_daemon_t *sbx_daemon_new(const sbx_config_t *cfg, int async, int call, char *err,
                             size_t errlen);
void sbx_daemon_destroy(sbx_daemon_t **self_p);
/* Serves until SIGTERM/SIGINT. 0 on a clean stop. */
int sbx_daemon_run(sbx_daemon_t *self);
/* Accessors used by sandbox.c. */
const sbx_config_t *sbx_daemon_config(const sbx_daemon_t *self);
sbx_store_t *sbx_daemon_store(sbx_daemon_t *self);
/* Replies; each frees *req. */
void sbx_reply_error(sbx_daemon_t *self, ahp_rpc_req_t **req, int status, const char *msg);
void sbx_reply_exec_packed(sbx_daemon_t *self, ahp_rpc_req_t **req, const uint8_t *res, size_t len);
void sbx_reply_create(sbx_daemon_t *self, ahp_rpc_req_t **req, const char *id, bool existed,
                      const char *workspace);

/* ---- conf.c (the full program and the lean front) ---- */
#define SBX_ALLOW_USERS_DEFAULT "root,ahp-orchestrator"
/* The configuration keys, defaults and help text. */
extern const ahp_cfg_def_t sbx_cfg_defs[];
/* Loads HOME/etc/sandboxd.conf (optional) over the defaults, then each of the
 * n_sets "key=value" overrides, and validates: *out (caller owns it), or -1
 * with a message in err. Needs only cfg.c and util.c (the front links it). */
int sbx_conf_load(const char *home, const char *const *sets, int n_sets, ahp_cfg_t **out, char *err,
                  size_t errlen);
/* The exec socket's path into buf (len bytes): exec_socket (absolute), else
 * HOME/run/sandboxd-exec.sock. -1 with err when it does not fit sun_path. */
int sbx_conf_exec_socket(const ahp_cfg_t *c, const char *home, char *buf, size_t len, char *err,
                         size_t errlen);

/* ---- cli.c (linked into the lean front: no libzmq, no daemon libraries) ---- */
/* `sandboxd exec ...`; argv starts after "exec". One Run request on the exec
 * socket at sock_path (loop.c serves it). Returns the process exit code: the
 * command's, 128+signal when killed, 2 for bad usage or an unknown profile,
 * 125 when sandboxd is unreachable or fails (docs/operations.md, "sandboxd
 * exec"; stderr names a --keep run's sandbox and whether its workspace was
 * kept), 130 when interrupted. */
int sbx_cli_exec(const char *home, const char *sock_path, int argc, char **argv);

/* ---- shared validators (loop.c) ---- */
bool sbx_valid_id(const char *s);
/* Whether id (NULL: no) is in the one-shots' id space (SBX_ONESHOT_PREFIX). */
bool sbx_oneshot_id(const char *id);
bool sbx_valid_exec_id(const char *s);

/* request.c: request field ranges, from the one limits table (ahp/limit_table.h) */
/* Fills out from a CreateRequest's limits (NULL or 0 fields: the defaults).
 * -1 with "<name> <v> is out of range (allowed <min>..<max>)" in err. */
int sbx_request_limits(const Ahp__Sbx__Limits *in, sbx_limits_t *out, char *err, size_t errlen);
void sbx_default_limits(sbx_limits_t *out);
/* The command length and timeout_s of an ExecRequest. 0 / -1 with a message. */
int sbx_exec_request_range(const Ahp__Sbx__ExecRequest *er, char *err, size_t errlen);

#endif
