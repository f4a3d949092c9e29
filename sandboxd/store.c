/* sandboxd's state on disk: workspaces, sandbox metadata, exec intents and results, the trash. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ahp/log.h"
#include "ahp/util.h"
#include "sbx.h"

/*
 * Layout under state_dir:
 *   sandboxes/<id>.meta           key=value: profile, limits, uid slot, cwd... (the run id
 *                                 -> slot map; its absence means "no such sandbox")
 *   workspaces/s<slot>/           mount point of the sandbox's disk (disk.c); its ws/ is
 *                                 the /workspace, owned by its host uid, its tmp/ the /tmp
 *   disks/s<slot>.img             the disk: an ext4 image (disk.c)
 *   execs/s<slot>.log             exec intents and results (append-only, below)
 *   trash/<uid>.<rand>/           removed workspaces being deleted (by the zygote)
 *   root/                         empty: each sandbox attaches its new root here
 *   etc/                          the /etc template every sandbox sees (a small tmpfs, so
 *                                 a sandbox's mountinfo shows "/" as its root, no host path)
 * Workspaces and logs are named by uid slot, not run id: a pool spare is
 * built before its run id is known, and claiming it renames nothing.
 *
 * Nothing here is fsync()ed on the exec path. The records exist so an
 * orchestrator that restarts, or a sandboxd that crashes, learns what
 * happened: both are process crashes and the page cache survives them. After
 * a machine crash a lost intent makes Fetch answer "not found", which the
 * orchestrator (which journaled its own intent first) reports as interrupted
 * just like ERR_INTERRUPTED; the workspace itself is not synced either.
 */

#define S_RESULT_MAX (SBX_CTL_MSG_MAX + 4096)
#define S_RMTREE_DEPTH 256

struct sbx_store {
	char dir[PATH_MAX];
	char ws[PATH_MAX], meta[PATH_MAX], execs[PATH_MAX], trash[PATH_MAX], root[PATH_MAX],
	    etc[PATH_MAX], disks[PATH_MAX];
};

static int
s_path(char *buf, size_t len, const char *fmt, const char *a, const char *b, const char *c)
{
	int n = snprintf(buf, len, fmt, a, b, c);
	if (n < 0 || (size_t)n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

sbx_store_t *
sbx_store_new(const char *state_dir)
{
	sbx_store_t *self = calloc(1, sizeof(*self));
	if (self == NULL)
		return NULL;
	if (ahp_strlcpy(self->dir, state_dir, sizeof(self->dir)) != 0)
		goto fail;
	struct {
		char *buf;
		const char *name;
		int mode;
	} dirs[] = {{self->ws, "workspaces", 0700}, {self->meta, "sandboxes", 0700},
	            {self->execs, "execs", 0700},   {self->trash, "trash", 0700},
	            {self->root, "root", 0755},     {self->etc, "etc", 0755},
	            {self->disks, "disks", 0700}};
	if (ahp_mkdirs(state_dir, 0700) != 0)
		goto fail;
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		if (s_path(dirs[i].buf, PATH_MAX, "%s/%s%s", state_dir, dirs[i].name, "") != 0)
			goto fail;
		if (mkdir(dirs[i].buf, (mode_t)dirs[i].mode) != 0 && errno != EEXIST)
			goto fail;
		struct stat st;
		if (lstat(dirs[i].buf, &st) != 0 || !S_ISDIR(st.st_mode)) {
			errno = ENOTDIR;
			goto fail;
		}
	}
	return self;
fail:
	log_error("state dir %s: %s", state_dir, strerror(errno));
	free(self);
	return NULL;
}

void
sbx_store_destroy(sbx_store_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	free(*self_p);
	*self_p = NULL;
}

const char *
sbx_store_dir(const sbx_store_t *self, const char *sub)
{
	if (strcmp(sub, "root") == 0)
		return self->root;
	if (strcmp(sub, "etc") == 0)
		return self->etc;
	if (strcmp(sub, "workspaces") == 0)
		return self->ws;
	if (strcmp(sub, "execs") == 0)
		return self->execs;
	if (strcmp(sub, "trash") == 0)
		return self->trash;
	if (strcmp(sub, "sandboxes") == 0)
		return self->meta;
	if (strcmp(sub, "disks") == 0)
		return self->disks;
	return self->dir;
}

int
sbx_store_workspace_path(const sbx_store_t *self, uint32_t slot, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/s%u/ws", self->ws, slot);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int
s_log_path(const sbx_store_t *self, uint32_t slot, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/s%u.log", self->execs, slot);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* ---- metadata ---- */

int
sbx_store_meta_write(sbx_store_t *self, const char *id, const sbx_meta_t *m, bool fresh)
{
	char p[PATH_MAX], tmp[PATH_MAX], buf[4096];
	if (s_path(p, sizeof(p), "%s/%s.meta%s", self->meta, id, "") != 0 ||
	    s_path(tmp, sizeof(tmp), "%s/.%s.meta%s", self->meta, id, ".tmp") != 0)
		return -1;
	int n =
	    snprintf(buf, sizeof(buf),
	             "profile=%s\nnetwork=%d\nslot=%u\nmemory_mb=%u\npids_max=%u\ncpu_seconds=%u\n"
	             "timeout_s=%u\noutput_kb=%u\nfile_size_mb=%u\nopen_files=%u\ndisk_mb=%u\n"
	             "cpus_milli=%u\ncreated_ms=%lld\nexecs=%u\nkept=%d\nkept_ms=%lld\ncwd=%s\n",
	             m->profile, m->network, m->slot, m->lim.memory_mb, m->lim.pids_max,
	             m->lim.cpu_seconds, m->lim.timeout_s, m->lim.output_kb, m->lim.file_size_mb,
	             m->lim.open_files, m->lim.disk_mb, m->lim.cpus_milli, (long long)m->created_ms,
	             m->execs, m->kept ? 1 : 0, (long long)m->kept_ms, m->cwd);
	if (n < 0 || (size_t)n >= sizeof(buf))
		return -1;
	/* A new sandbox's record is written in place (one create, no rename:
	 * this is on Create's path); updates go through a rename so a crash
	 * between truncate and write cannot leave an empty record. */
	int fd = open(fresh ? p : tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -1;
	ssize_t w = write(fd, buf, (size_t)n);
	close(fd);
	if (fresh)
		return w == n ? 0 : -1;
	if (w != n || rename(tmp, p) != 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

int
sbx_store_meta_unlink(sbx_store_t *self, const char *id)
{
	char p[PATH_MAX];
	if (s_path(p, sizeof(p), "%s/%s.meta%s", self->meta, id, "") != 0)
		return -1;
	return unlink(p) == 0 || errno == ENOENT ? 0 : -1;
}

static int
s_u32(const char *v, uint32_t *out)
{
	long x;
	if (ahp_parse_long(v, 0, UINT32_MAX, &x) != 0)
		return -1;
	*out = (uint32_t)x;
	return 0;
}

/* One key=value line of a metadata record into m. 0 / -1. */
static int
s_meta_field(sbx_meta_t *m, const char *k, const char *v, bool *seen_slot)
{
	struct {
		const char *key;
		uint32_t *field;
	} u32[] = {{"slot", &m->slot},
	           {"memory_mb", &m->lim.memory_mb},
	           {"pids_max", &m->lim.pids_max},
	           {"cpu_seconds", &m->lim.cpu_seconds},
	           {"timeout_s", &m->lim.timeout_s},
	           {"output_kb", &m->lim.output_kb},
	           {"file_size_mb", &m->lim.file_size_mb},
	           {"open_files", &m->lim.open_files},
	           {"disk_mb", &m->lim.disk_mb},
	           {"cpus_milli", &m->lim.cpus_milli},
	           {"execs", &m->execs}};
	for (size_t i = 0; i < sizeof(u32) / sizeof(u32[0]); i++) {
		if (strcmp(k, u32[i].key) != 0)
			continue;
		if (u32[i].field == &m->slot)
			*seen_slot = true;
		return s_u32(v, u32[i].field);
	}
	long x;
	if (strcmp(k, "profile") == 0)
		return ahp_strlcpy(m->profile, v, sizeof(m->profile));
	if (strcmp(k, "cwd") == 0)
		return v[0] == '/' ? ahp_strlcpy(m->cwd, v, sizeof(m->cwd)) : -1;
	if (strcmp(k, "created_ms") == 0 || strcmp(k, "kept_ms") == 0) {
		if (ahp_parse_long(v, 0, INT64_MAX, &x) != 0)
			return -1;
		if (k[0] == 'c')
			m->created_ms = x;
		else
			m->kept_ms = x;
		return 0;
	}
	if (strcmp(k, "network") == 0 || strcmp(k, "kept") == 0) {
		if (ahp_parse_long(v, 0, 1, &x) != 0)
			return -1;
		if (k[0] == 'n')
			m->network = (int)x;
		else
			m->kept = x != 0;
		return 0;
	}
	return 0; /* a key from a newer version: ignored */
}

/* A record of at most S_META_MAX bytes, NUL-terminated (caller frees). The
 * worker writes sandboxes/, root reads it (start, worker restarts, stop):
 * only a regular file is read, never a symlink (O_NOFOLLOW), and a FIFO or
 * device is never opened in a way that blocks (O_NONBLOCK) or kept. 0 / -1. */
#define S_META_MAX 8192
static int
s_read_record(const char *path, char **buf, size_t *len)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > S_META_MAX) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	*buf = malloc(S_META_MAX + 1);
	ssize_t r = *buf != NULL ? read(fd, *buf, S_META_MAX + 1) : -1;
	close(fd);
	if (r < 0 || r > S_META_MAX) {
		free(*buf);
		*buf = NULL;
		return -1;
	}
	(*buf)[r] = '\0';
	*len = (size_t)r;
	return 0;
}

int
sbx_store_meta_read(sbx_store_t *self, const char *id, sbx_meta_t *m)
{
	char p[PATH_MAX], *buf = NULL;
	size_t n;
	memset(m, 0, sizeof(*m));
	if (s_path(p, sizeof(p), "%s/%s.meta%s", self->meta, id, "") != 0)
		return -1;
	if (s_read_record(p, &buf, &n) != 0)
		return -1;
	int rc = 0;
	bool seen_slot = false;
	char *save = NULL;
	for (char *l = strtok_r(buf, "\n", &save); l != NULL && rc == 0;
	     l = strtok_r(NULL, "\n", &save)) {
		char *eq = strchr(l, '=');
		if (eq == NULL) {
			rc = -1;
			break;
		}
		*eq = '\0';
		rc = s_meta_field(m, l, eq + 1, &seen_slot);
	}
	free(buf);
	if (rc != 0 || !seen_slot) {
		log_warn("sandbox metadata %s is damaged: ignored", p);
		return -1;
	}
	if (m->cwd[0] == '\0')
		memcpy(m->cwd, "/workspace", sizeof("/workspace"));
	/* records written before these limits existed */
	if (m->lim.disk_mb == 0)
		m->lim.disk_mb = AHP_LIM_DISK_MB_DEF;
	if (m->lim.cpus_milli == 0)
		m->lim.cpus_milli = AHP_LIM_CPUS_MILLI_DEF;
	return 0;
}

void
sbx_store_meta_each(sbx_store_t *self,
                    void (*fn)(void *arg, const char *id, const sbx_meta_t *meta), void *arg)
{
	DIR *d = opendir(self->meta);
	if (d == NULL)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		size_t l = strlen(e->d_name);
		if (l <= 5 || l - 5 > SBX_ID_MAX || strcmp(e->d_name + l - 5, ".meta") != 0)
			continue;
		char id[SBX_ID_MAX + 1];
		memcpy(id, e->d_name, l - 5);
		id[l - 5] = '\0';
		if (!sbx_valid_id(id))
			continue;
		sbx_meta_t m;
		if (sbx_store_meta_read(self, id, &m) == 0)
			fn(arg, id, &m);
	}
	closedir(d);
}

/* ---- deletion ---- */

/* Deletes everything below dirfd. Runs in a child that already switched to
 * the workspace's uid: a symlink is unlinked, never followed (O_NOFOLLOW on
 * every open), so nothing outside the tree can be reached. */
static int
s_rmtree(int dirfd, int depth)
{
	if (depth > S_RMTREE_DEPTH)
		return -1;
	int dup_fd = dup(dirfd);
	if (dup_fd < 0)
		return -1;
	DIR *d = fdopendir(dup_fd);
	if (d == NULL) {
		close(dup_fd);
		return -1;
	}
	int rc = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		struct stat st;
		if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			int fd = openat(dirfd, e->d_name,
			                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0 && errno == EACCES) {
				/* a dir the agent made unreadable: it is ours */
				int pfd = openat(dirfd, e->d_name,
				                 O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
				char proc[64];
				snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
				if (pfd >= 0 && chmod(proc, 0700) == 0)
					fd =
					    openat(dirfd, e->d_name,
					           O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
				if (pfd >= 0)
					close(pfd);
			}
			if (fd < 0) {
				rc = -1;
				continue;
			}
			if (!(st.st_mode & S_IWUSR))
				(void)fchmod(fd, 0700);
			if (s_rmtree(fd, depth + 1) != 0)
				rc = -1;
			close(fd);
			if (unlinkat(dirfd, e->d_name, AT_REMOVEDIR) != 0)
				rc = -1;
		} else if (unlinkat(dirfd, e->d_name, 0) != 0) {
			rc = -1;
		}
	}
	closedir(d);
	return rc;
}

int
sbx_rmtree_at(int dirfd)
{
	return s_rmtree(dirfd, 0);
}

/* Slot of a name "s<N>" + suffix, or -1. */
static long
s_slot_of(const char *name, const char *suffix)
{
	size_t l = strlen(name), sl = strlen(suffix);
	if (l <= sl + 1 || name[0] != 's' || strcmp(name + l - sl, suffix) != 0 || l - sl > 12)
		return -1;
	char num[16];
	memcpy(num, name + 1, l - sl - 1);
	num[l - sl - 1] = '\0';
	long v;
	return ahp_parse_long(num, 0, UINT32_MAX - 1, &v) == 0 ? v : -1;
}

void
sbx_store_orphans(sbx_store_t *self, bool (*used)(void *arg, uint32_t slot),
                  void (*fn)(void *arg, uint32_t slot), void *arg)
{
	const char *dirs[3] = {self->ws, self->execs, self->disks};
	const char *suffix[3] = {"", ".log", ".img"};
	for (int k = 0; k < 3; k++) {
		DIR *d = opendir(dirs[k]);
		if (d == NULL)
			continue;
		struct dirent *e;
		while ((e = readdir(d)) != NULL) {
			long slot = s_slot_of(e->d_name, suffix[k]);
			if (slot >= 0 && !used(arg, (uint32_t)slot))
				fn(arg, (uint32_t)slot);
		}
		closedir(d);
	}
}

/* ---- exec records: one append-only log per sandbox ---- */

/*
 * execs/<id>.log holds records written with one write(2) each (no rename, no
 * new file per exec: on this path every metadata operation costs more than
 * the command). A record is an 8-byte header {'X', type, id_len, 0, u32 LE
 * payload length}, the exec id, then the payload: nothing for an intent, a
 * packed ExecResult for a result. A torn tail (sandboxd killed mid-write) is
 * cut off when the log is next opened for writing.
 */
#define S_REC_HDR 8
#define S_REC_INTENT 'I'
#define S_REC_RESULT 'R'

typedef struct {
	char *id; /* NULL: empty slot */
	bool has_result;
	off_t off; /* payload offset of the result */
	uint32_t len;
} s_slot_t;

struct sbx_execlog {
	int fd;
	off_t end;
	s_slot_t *tab;
	size_t cap, n; /* cap is a power of two, at most half full */
};

static uint32_t
s_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

static s_slot_t *
s_slot(sbx_execlog_t *self, const char *id)
{
	for (size_t i = s_hash(id) & (self->cap - 1);; i = (i + 1) & (self->cap - 1))
		if (self->tab[i].id == NULL || strcmp(self->tab[i].id, id) == 0)
			return &self->tab[i];
}

static const s_slot_t *
s_slot_find(sbx_execlog_t *self, const char *id)
{
	if (self->cap == 0)
		return NULL;
	const s_slot_t *sl = s_slot(self, id);
	return sl->id != NULL ? sl : NULL;
}

static int
s_index(sbx_execlog_t *self, const char *id, bool result, off_t off, uint32_t len)
{
	if ((self->n + 1) * 2 > self->cap) {
		size_t ncap = self->cap ? self->cap * 2 : 64;
		s_slot_t *old = self->tab;
		size_t ocap = self->cap;
		self->tab = calloc(ncap, sizeof(*self->tab));
		if (self->tab == NULL) {
			self->tab = old;
			return -1;
		}
		self->cap = ncap;
		for (size_t i = 0; i < ocap; i++)
			if (old[i].id != NULL)
				*s_slot(self, old[i].id) = old[i];
		free(old);
	}
	s_slot_t *sl = s_slot(self, id);
	if (sl->id == NULL) {
		sl->id = strdup(id);
		if (sl->id == NULL)
			return -1;
		self->n++;
	}
	if (result) {
		sl->has_result = true;
		sl->off = off;
		sl->len = len;
	}
	return 0;
}

/* Reads every record header; returns the offset after the last whole one. */
static off_t
s_scan(sbx_execlog_t *self)
{
	struct stat st;
	if (fstat(self->fd, &st) != 0)
		return 0;
	off_t off = 0;
	while (off + S_REC_HDR <= st.st_size) {
		uint8_t h[S_REC_HDR + SBX_EXEC_ID_MAX + 1];
		ssize_t n = pread(self->fd, h, sizeof(h), off);
		if (n < S_REC_HDR)
			break;
		uint8_t type = h[1], idl = h[2];
		uint32_t len = (uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 |
		               (uint32_t)h[7] << 24;
		if (h[0] != 'X' || (type != S_REC_INTENT && type != S_REC_RESULT) || idl == 0 ||
		    idl > SBX_EXEC_ID_MAX || n < S_REC_HDR + idl ||
		    off + S_REC_HDR + idl + (off_t)len > st.st_size)
			break;
		char id[SBX_EXEC_ID_MAX + 1];
		memcpy(id, h + S_REC_HDR, idl);
		id[idl] = '\0';
		if (!sbx_valid_exec_id(id))
			break;
		if (s_index(self, id, type == S_REC_RESULT, off + S_REC_HDR + idl, len) != 0)
			break;
		off += S_REC_HDR + idl + (off_t)len;
	}
	return off;
}

sbx_execlog_t *
sbx_execlog_open(sbx_store_t *store, uint32_t slot, bool create)
{
	char p[PATH_MAX];
	if (s_log_path(store, slot, p, sizeof(p)) != 0)
		return NULL;
	int flags = create ? O_RDWR | O_CREAT | O_APPEND : O_RDONLY;
	int fd = open(p, flags | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return NULL;
	sbx_execlog_t *self = calloc(1, sizeof(*self));
	if (self == NULL) {
		close(fd);
		return NULL;
	}
	self->fd = fd;
	self->end = s_scan(self);
	struct stat st;
	if (create && fstat(fd, &st) == 0 && st.st_size > self->end) {
		log_warn("exec log %s: dropping %lld torn bytes at its end", p,
		         (long long)(st.st_size - self->end));
		if (ftruncate(fd, self->end) != 0)
			log_warn("exec log %s: truncate: %s", p, strerror(errno));
	}
	return self;
}

void
sbx_execlog_close(sbx_execlog_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	sbx_execlog_t *self = *self_p;
	for (size_t i = 0; i < self->cap; i++)
		free(self->tab[i].id);
	free(self->tab);
	close(self->fd);
	free(self);
	*self_p = NULL;
}

static int
s_append(sbx_execlog_t *self, uint8_t type, const char *exec_id, const uint8_t *buf, uint32_t len)
{
	size_t idl = strlen(exec_id);
	uint8_t h[S_REC_HDR] = {'X',
	                        type,
	                        (uint8_t)idl,
	                        0,
	                        (uint8_t)len,
	                        (uint8_t)(len >> 8),
	                        (uint8_t)(len >> 16),
	                        (uint8_t)(len >> 24)};
	struct iovec iov[3] = {{h, sizeof(h)}, {(void *)exec_id, idl}, {(void *)buf, len}};
	size_t total = sizeof(h) + idl + len;
	ssize_t n = writev(self->fd, iov, len ? 3 : 2);
	if (n != (ssize_t)total) {
		/* a short write leaves a torn record: cut it so the log stays whole */
		if (n > 0 && ftruncate(self->fd, self->end) != 0)
			log_warn("exec log: truncate after short write: %s", strerror(errno));
		if (n >= 0)
			errno = ENOSPC;
		return -1;
	}
	off_t payload = self->end + (off_t)(sizeof(h) + idl);
	self->end += (off_t)total;
	return s_index(self, exec_id, type == S_REC_RESULT, payload, len);
}

int
sbx_execlog_intent(sbx_execlog_t *self, const char *exec_id)
{
	if (s_slot_find(self, exec_id) != NULL) {
		errno = EEXIST;
		return -1;
	}
	return s_append(self, S_REC_INTENT, exec_id, NULL, 0);
}

int
sbx_execlog_result(sbx_execlog_t *self, const char *exec_id, const uint8_t *buf, size_t len)
{
	if (len > UINT32_MAX) {
		errno = EFBIG;
		return -1;
	}
	return s_append(self, S_REC_RESULT, exec_id, buf, (uint32_t)len);
}

int
sbx_execlog_lookup(sbx_execlog_t *self, const char *exec_id, uint8_t **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	if (self == NULL)
		return -1;
	const s_slot_t *sl = s_slot_find(self, exec_id);
	if (sl == NULL)
		return 0;
	if (!sl->has_result)
		return 1;
	if (sl->len > S_RESULT_MAX)
		return -1;
	uint8_t *b = malloc(sl->len ? sl->len : 1);
	if (b == NULL)
		return -1;
	if (pread(self->fd, b, sl->len, sl->off) != (ssize_t)sl->len) {
		free(b);
		return -1;
	}
	*buf = b;
	*len = sl->len;
	return 2;
}

int
sbx_store_exec_lookup(sbx_store_t *self, uint32_t slot, const char *exec_id, uint8_t **buf,
                      size_t *len)
{
	*buf = NULL;
	*len = 0;
	sbx_execlog_t *log = sbx_execlog_open(self, slot, false);
	if (log == NULL)
		return errno == ENOENT ? 0 : -1;
	int r = sbx_execlog_lookup(log, exec_id, buf, len);
	sbx_execlog_close(&log);
	return r;
}
