/* Secrets directory reader: one private file per secret, values wiped on free. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ahp/log.h"
#include "ahp/secrets.h"

#define SECRET_MAX (64 * 1024)
#define SECRET_NAME_MAX 128
#define SECRETS_COUNT_MAX 1024

typedef struct {
	char *name;
	char *value; /* NUL-terminated; len excludes the NUL */
	size_t len;
} s_secret_t;

struct ahp_secrets {
	s_secret_t *items;
	size_t n;
};

bool
ahp_secrets_name_valid(const char *name)
{
	if (name == NULL || name[0] == '.')
		return false;
	size_t n = strnlen(name, SECRET_NAME_MAX + 1);
	if (n == 0 || n > SECRET_NAME_MAX)
		return false;
	for (const char *p = name; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

/* Reads one secret file relative to dfd. Names are logged, never values. */
static int
s_read_one(int dfd, const char *dir, const char *name, s_secret_t *out)
{
	struct stat st;
	char *buf = NULL;
	size_t used = 0;

	/* O_NOFOLLOW: a symlink could point the daemon at any file it can
	 * read; O_NONBLOCK: a FIFO planted here must not hang the load. */
	int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL,
		           errno == ELOOP ? "secrets: refusing symlink" : "secrets: cannot open",
		           "dir", dir, "name", name, "error", strerror(errno), NULL);
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "secrets: not a regular file", "dir", dir,
		           "name", name, NULL);
		goto fail;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL,
		           "secrets: file is accessible by group/others (chmod 600 it)", "dir", dir,
		           "name", name, NULL);
		goto fail;
	}
	if (st.st_size > SECRET_MAX) {
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "secrets: file larger than 64 KiB", "dir",
		           dir, "name", name, NULL);
		goto fail;
	}
	/* One spare byte detects a file that grew after fstat. */
	size_t cap = (size_t)st.st_size + 1;
	buf = malloc(cap + 1);
	if (buf == NULL)
		goto fail;
	for (;;) {
		ssize_t r = read(fd, buf + used, cap - used);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto fail;
		if (r == 0)
			break;
		used += (size_t)r;
		if (used == cap) {
			ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "secrets: file changed while reading",
			           "dir", dir, "name", name, NULL);
			goto fail;
		}
	}
	close(fd);
	if (used > 0 && buf[used - 1] == '\n') {
		used--;
		if (used > 0 && buf[used - 1] == '\r')
			used--;
	}
	buf[used] = '\0';
	out->name = strdup(name);
	if (out->name == NULL) {
		explicit_bzero(buf, cap + 1);
		free(buf);
		return -1;
	}
	out->value = buf;
	out->len = used;
	return 0;
fail:
	if (buf != NULL) {
		explicit_bzero(buf, cap + 1);
		free(buf);
	}
	close(fd);
	return -1;
}

ahp_secrets_t *
ahp_secrets_load(const char *dir)
{
	ahp_secrets_t *self = calloc(1, sizeof *self);
	if (self == NULL)
		return NULL;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "secrets: cannot open directory", "dir", dir,
		           "error", strerror(errno), NULL);
		free(self);
		return NULL;
	}
	DIR *d = fdopendir(dfd);
	if (d == NULL) {
		close(dfd);
		free(self);
		return NULL;
	}
	size_t cap = 0;
	int ok = 1;
	for (;;) {
		struct dirent *de = readdir(d);
		if (de == NULL)
			break;
		/* Dotfiles are skipped: ".", "..", editor and mount artefacts. */
		if (de->d_name[0] == '.')
			continue;
		if (!ahp_secrets_name_valid(de->d_name)) {
			ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "secrets: invalid file name", "dir",
			           dir, "name", de->d_name, NULL);
			ok = 0;
			break;
		}
		if (self->n == SECRETS_COUNT_MAX) {
			ahp_log_kv(AHP_LOG_ERROR, NULL, NULL, "secrets: too many files", "dir", dir,
			           NULL);
			ok = 0;
			break;
		}
		if (self->n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			s_secret_t *n = realloc(self->items, ncap * sizeof *n);
			if (n == NULL) {
				ok = 0;
				break;
			}
			self->items = n;
			cap = ncap;
		}
		if (s_read_one(dirfd(d), dir, de->d_name, &self->items[self->n]) < 0) {
			ok = 0;
			break;
		}
		self->n++;
	}
	closedir(d);
	if (!ok) {
		ahp_secrets_destroy(&self);
		return NULL;
	}
	return self;
}

void
ahp_secrets_destroy(ahp_secrets_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	ahp_secrets_t *self = *self_p;
	for (size_t i = 0; i < self->n; i++) {
		explicit_bzero(self->items[i].value, self->items[i].len + 1);
		free(self->items[i].value);
		free(self->items[i].name);
	}
	free(self->items);
	free(self);
	*self_p = NULL;
}

const char *
ahp_secrets_get(ahp_secrets_t *self, const char *name, size_t *len)
{
	if (self == NULL || name == NULL)
		return NULL;
	for (size_t i = 0; i < self->n; i++) {
		if (strcmp(self->items[i].name, name) == 0) {
			if (len)
				*len = self->items[i].len;
			return self->items[i].value;
		}
	}
	return NULL;
}

size_t
ahp_secrets_count(ahp_secrets_t *self)
{
	return self ? self->n : 0;
}

const char *
ahp_secrets_name_at(ahp_secrets_t *self, size_t i)
{
	return self && i < self->n ? self->items[i].name : NULL;
}

int
ahp_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
	const volatile uint8_t *pa = a;
	const volatile uint8_t *pb = b;
	/* Time depends on alen only (pass the secret as b); every byte of a
	 * is compared, with b wrapped when it is shorter. */
	uint8_t diff = (uint8_t)(alen != blen);
	for (size_t i = 0; i < alen; i++)
		diff |= pa[i] ^ (blen ? pb[i % blen] : 0xff);
	return diff == 0;
}
