/* orchestrator: the skill tool (list, read, search) confined to the profile's skills directory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ahp/log.h"
#include "ahp/util.h"

#include "orch.h"

#define SKILL_READ_MAX (100 * 1024)     /* bytes returned by read */
#define SKILL_LIST_MAX 200              /* files returned by list */
#define SKILL_HITS_MAX 200              /* matches returned by search */
#define SKILL_PATH_MAX 1024             /* bytes of a requested path */
#define SKILL_QUERY_MAX 256             /* bytes of a search query */
#define SKILL_LINE_MAX 300              /* bytes of a matching line shown */
#define SKILL_WALK_DEPTH 16             /* directory levels walked */
#define SKILL_WALK_FILES 10000          /* files considered by one walk */
#define SKILL_SEARCH_FILE_MAX (1 << 20) /* bytes of one file searched */

typedef struct {
	char **v;
	size_t n, cap;
	int (*want)(const char *name);
	size_t seen;
} s_files_t;

static int
s_want_skill(const char *name)
{
	return strcmp(name, "SKILL.md") == 0;
}

static int
s_want_md(const char *name)
{
	size_t n = strlen(name);
	return n > 3 && strcmp(name + n - 3, ".md") == 0;
}

static int
s_push(s_files_t *f, const char *rel)
{
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 32;
		char **v = realloc(f->v, cap * sizeof *v);
		if (v == NULL)
			return -1;
		f->v = v;
		f->cap = cap;
	}
	f->v[f->n] = strdup(rel);
	if (f->v[f->n] == NULL)
		return -1;
	f->n++;
	return 0;
}

static void
s_files_free(s_files_t *f)
{
	for (size_t i = 0; i < f->n; i++)
		free(f->v[i]);
	free(f->v);
}

static int
s_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Walks a directory it owns (fd), never following symlinks; hidden entries
 * are skipped. Collects relative paths of the files f wants. */
static void
s_walk(int fd, const char *rel, int depth, s_files_t *f)
{
	DIR *d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return;
	}
	struct dirent *e;
	while ((e = readdir(d)) != NULL && f->seen < SKILL_WALK_FILES) {
		if (e->d_name[0] == '.')
			continue;
		int type = e->d_type;
		if (type == DT_UNKNOWN) {
			struct stat st;
			if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
				continue;
			type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_LNK;
		}
		char sub[SKILL_PATH_MAX];
		int n = snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
		if (n < 0 || (size_t)n >= sizeof sub)
			continue;
		f->seen++;
		if (type == DT_DIR && depth < SKILL_WALK_DEPTH) {
			int sfd = openat(dirfd(d), e->d_name,
			                 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sfd >= 0)
				s_walk(sfd, sub, depth + 1, f);
		} else if (type == DT_REG && f->want(e->d_name)) {
			if (s_push(f, sub) != 0)
				break;
		}
	}
	closedir(d);
}

static int
s_collect(const char *root, int (*want)(const char *), s_files_t *f)
{
	memset(f, 0, sizeof *f);
	f->want = want;
	int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	s_walk(fd, "", 0, f);
	/* f->v is NULL when nothing matched, and qsort's base must not be. */
	if (f->n > 1)
		qsort(f->v, f->n, sizeof *f->v, s_cmp);
	return 0;
}

/* Checks a model-supplied path: relative, no "." / ".." / empty components.
 * Returns NULL when fine, else why not. */
static const char *
s_path_problem(const char *path)
{
	size_t len = strlen(path);
	if (len == 0)
		return "path is empty";
	if (len >= SKILL_PATH_MAX)
		return "path is too long";
	if (path[0] == '/')
		return "absolute paths are not allowed; use a path relative to the skills "
		       "directory";
	const char *p = path;
	while (*p) {
		const char *end = strchr(p, '/');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return "'..' is not allowed: the path must stay inside the skills "
			       "directory";
		if (n == 0 || (n == 1 && p[0] == '.'))
			return "empty or '.' path components are not allowed";
		p += n;
		if (*p == '/')
			p++;
	}
	return NULL;
}

/* Opens path under root one component at a time with O_NOFOLLOW, so neither
 * a symlink nor a rename race can lead outside. Returns an fd or -1/errno. */
static int
s_open_contained(const char *root, const char *path)
{
	char buf[SKILL_PATH_MAX];
	if (ahp_strlcpy(buf, path, sizeof buf) != 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	char *p = buf;
	for (;;) {
		char *slash = strchr(p, '/');
		if (slash == NULL)
			break;
		*slash = '\0';
		int nfd = openat(dfd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int saved = errno;
		close(dfd);
		if (nfd < 0) {
			errno = saved;
			return -1;
		}
		dfd = nfd;
		p = slash + 1;
	}
	int fd = openat(dfd, p, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	int saved = errno;
	close(dfd);
	errno = saved;
	return fd;
}

/* Reads at most max bytes; *size gets the file size. Caller frees. */
static uint8_t *
s_read_fd(int fd, size_t max, size_t *got, uint64_t *size)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return NULL;
	if (!S_ISREG(st.st_mode)) {
		errno = EISDIR;
		return NULL;
	}
	*size = (uint64_t)st.st_size;
	uint8_t *buf = malloc(max + 1);
	if (buf == NULL)
		return NULL;
	size_t n = 0;
	while (n < max) {
		ssize_t r = read(fd, buf + n, max - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	*got = n;
	return buf;
}

static json_t *
s_open_error(const char *path, int err)
{
	switch (err) {
	case ENOENT:
		return orch_tool_error("not_found", "no such skill file: %s", path);
	case ELOOP:
	case EMLINK:
		return orch_tool_error(
		    "permission", "%s: symbolic links are not followed inside the skills directory",
		    path);
	case ENOTDIR:
		return orch_tool_error("not_found", "%s: a path component is not a directory",
		                       path);
	case EISDIR:
		return orch_tool_error("bad_request", "%s is a directory; use action=list", path);
	default:
		return orch_tool_error("internal", "%s: %s", path, strerror(err));
	}
}

static json_t *
s_list(const ahp_profile_t *p, char *summary, size_t len)
{
	s_files_t f;
	if (s_collect(p->skills_dir, s_want_skill, &f) != 0) {
		snprintf(summary, len, "list → error");
		return orch_tool_error("internal", "cannot read the skills directory");
	}
	json_t *files = json_array();
	for (size_t i = 0; i < f.n && i < SKILL_LIST_MAX; i++)
		json_array_append_new(files, json_string(f.v[i]));
	json_t *res = json_pack("{s:o}", "files", files);
	if (f.n > SKILL_LIST_MAX)
		json_object_set_new(res, "truncated", json_true());
	snprintf(summary, len, "list → %zu file%s", json_array_size(files),
	         json_array_size(files) == 1 ? "" : "s");
	s_files_free(&f);
	return res;
}

static json_t *
s_read(const ahp_profile_t *p, const char *path, char *summary, size_t len)
{
	const char *why = s_path_problem(path);
	if (why != NULL) {
		snprintf(summary, len, "read %.*s → refused", AHP_UTF8_CUT(path, 200));
		return orch_tool_error("permission", "%s", why);
	}
	int fd = s_open_contained(p->skills_dir, path);
	if (fd < 0) {
		int err = errno;
		snprintf(summary, len, "read %.*s → %s", AHP_UTF8_CUT(path, 200), strerror(err));
		return s_open_error(path, err);
	}
	size_t got = 0;
	uint64_t size = 0;
	uint8_t *buf = s_read_fd(fd, SKILL_READ_MAX, &got, &size);
	int err = errno;
	close(fd);
	if (buf == NULL) {
		snprintf(summary, len, "read %.*s → %s", AHP_UTF8_CUT(path, 200), strerror(err));
		return s_open_error(path, err);
	}
	int truncated = size > got;
	if (truncated && got > 0) {
		/* Do not end on half a UTF-8 sequence: drop an incomplete tail. */
		size_t lead = got - 1;
		while (lead > 0 && got - lead < 4 && (buf[lead] & 0xc0) == 0x80)
			lead--;
		size_t need = buf[lead] >= 0xf0   ? 4
		              : buf[lead] >= 0xe0 ? 3
		              : buf[lead] >= 0xc0 ? 2
		                                  : 1;
		if (lead + need > got)
			got = lead;
	}
	char *content = ahp_utf8_sanitize(buf, got, 0, NULL, NULL);
	free(buf);
	json_t *res =
	    json_pack("{s:s, s:s, s:b, s:I}", "path", path, "content", content ? content : "",
	              "truncated", truncated, "bytes", (json_int_t)size);
	free(content);
	char sz[32];
	snprintf(summary, len, "read %.*s (%s%s)", AHP_UTF8_CUT(path, 200),
	         orch_fmt_size(size, sz, sizeof sz), truncated ? ", truncated" : "");
	return res;
}

static json_t *
s_search(const ahp_profile_t *p, const char *query, char *summary, size_t len)
{
	if (*query == '\0' || strlen(query) > SKILL_QUERY_MAX) {
		snprintf(summary, len, "search → bad query");
		return orch_tool_error("bad_request", "query must be 1..%d bytes", SKILL_QUERY_MAX);
	}
	s_files_t f;
	if (s_collect(p->skills_dir, s_want_md, &f) != 0) {
		snprintf(summary, len, "search → error");
		return orch_tool_error("internal", "cannot read the skills directory");
	}
	json_t *matches = json_array();
	int truncated = 0;
	for (size_t i = 0; i < f.n && !truncated; i++) {
		int fd = s_open_contained(p->skills_dir, f.v[i]);
		if (fd < 0)
			continue;
		size_t got = 0;
		uint64_t size = 0;
		uint8_t *buf = s_read_fd(fd, SKILL_SEARCH_FILE_MAX, &got, &size);
		close(fd);
		if (buf == NULL)
			continue;
		char *line = (char *)buf;
		int lineno = 1;
		while (line != NULL && line < (char *)buf + got) {
			char *nl = strchr(line, '\n');
			if (nl != NULL)
				*nl = '\0';
			if (strcasestr(line, query) != NULL) {
				if (json_array_size(matches) >= SKILL_HITS_MAX) {
					truncated = 1;
					break;
				}
				size_t ll = strlen(line);
				char *text = ahp_utf8_sanitize(
				    line, ll > SKILL_LINE_MAX ? SKILL_LINE_MAX : ll, 0, NULL, NULL);
				json_array_append_new(matches, json_pack("{s:s, s:i, s:s}", "path",
				                                         f.v[i], "line", lineno,
				                                         "text", text ? text : ""));
				free(text);
			}
			line = nl ? nl + 1 : NULL;
			lineno++;
		}
		free(buf);
	}
	s_files_free(&f);
	snprintf(summary, len, "search \"%.*s\" → %zu match%s%s", AHP_UTF8_CUT(query, 100),
	         json_array_size(matches), json_array_size(matches) == 1 ? "" : "es",
	         truncated ? " (truncated)" : "");
	return json_pack("{s:o, s:b}", "matches", matches, "truncated", truncated);
}

json_t *
orch_skill_run(const ahp_profile_t *p, const json_t *args, char *summary, size_t len)
{
	const char *action = json_string_value(json_object_get(args, "action"));
	if (p->skills_dir == NULL) {
		snprintf(summary, len, "no skills directory");
		return orch_tool_error("not_found", "this agent has no skills directory");
	}
	if (action == NULL) {
		snprintf(summary, len, "missing action");
		return orch_tool_error("bad_request",
		                       "argument 'action' (list, read or search) is required");
	}
	if (strcmp(action, "list") == 0)
		return s_list(p, summary, len);
	if (strcmp(action, "read") == 0) {
		const char *path = json_string_value(json_object_get(args, "path"));
		if (path == NULL) {
			snprintf(summary, len, "read → missing path");
			return orch_tool_error("bad_request",
			                       "action=read needs a string argument 'path'");
		}
		return s_read(p, path, summary, len);
	}
	if (strcmp(action, "search") == 0) {
		const char *q = json_string_value(json_object_get(args, "query"));
		if (q == NULL) {
			snprintf(summary, len, "search → missing query");
			return orch_tool_error("bad_request",
			                       "action=search needs a string argument 'query'");
		}
		return s_search(p, q, summary, len);
	}
	snprintf(summary, len, "unknown action %.*s", AHP_UTF8_CUT(action, 50));
	return orch_tool_error("bad_request", "unknown action '%s' (use list, read or search)",
	                       action);
}
