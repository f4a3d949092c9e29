/* The platform CA in the sandboxes' trust store: credproxy's CA certificate, checked and
 * added to the host's bundle in the /etc template every sandbox mounts read-only. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ahp/log.h"
#include "ahp/util.h"
#include "sbx.h"

#define S_HOST_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define S_BUNDLE_MAX (8u << 20) /* the host bundle is ~200 KiB */
#define S_CERTS_MAX 8           /* certificates taken from proxy_ca_file */

/* What was installed last: the CA file is read again only when it changed. */
static struct {
	bool have;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	int result;
} s_seen;
static bool s_warned_missing;
static bool s_warned_rootfs;

/* Reads the whole regular file fd into buf (cap bytes). Returns the length or -1. */
static ssize_t
s_read_fd(int fd, char *buf, size_t cap)
{
	size_t used = 0;
	for (;;) {
		if (used == cap)
			return -1; /* grew past the bound since fstat */
		ssize_t n = read(fd, buf + used, cap - used);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			return (ssize_t)used;
		used += (size_t)n;
	}
}

/* The CA certificates in the PEM text (len bytes), re-encoded: only what
 * parses as a CA certificate goes into the sandbox, never other bytes of the
 * file. Caller frees *out. Returns the count, 0 when there is none, -1 on
 * allocation failure. */
static int
s_ca_pem(const char *pem, size_t len, char **out, size_t *out_len, char *why, size_t whylen)
{
	*out = NULL;
	*out_len = 0;
	BIO *in = BIO_new_mem_buf(pem, (int)len);
	BIO *mem = BIO_new(BIO_s_mem());
	int n = 0;
	if (in == NULL || mem == NULL) {
		BIO_free(in);
		BIO_free(mem);
		return -1;
	}
	X509 *x;
	while ((x = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL) {
		if (n == S_CERTS_MAX) {
			X509_free(x);
			snprintf(why, whylen, "more than %d certificates", S_CERTS_MAX);
			n = 0;
			break;
		}
		if (X509_check_ca(x) < 1) {
			X509_free(x);
			snprintf(why, whylen, "certificate %d is not a CA certificate", n + 1);
			n = 0;
			break;
		}
		if (PEM_write_bio_X509(mem, x) != 1) {
			X509_free(x);
			n = -1;
			break;
		}
		X509_free(x);
		n++;
	}
	ERR_clear_error(); /* the end of the input is reported as an error */
	if (n == 0 && why[0] == '\0')
		snprintf(why, whylen, "no PEM certificate in it");
	if (n > 0) {
		char *p;
		long l = BIO_get_mem_data(mem, &p);
		*out = l > 0 ? malloc((size_t)l) : NULL;
		if (*out == NULL) {
			n = -1;
		} else {
			memcpy(*out, p, (size_t)l);
			*out_len = (size_t)l;
		}
	}
	BIO_free(in);
	BIO_free(mem);
	return n;
}

/* Writes a file in dirfd atomically (a temp name, then rename), mode 0644. */
static int
s_replace(int dirfd, const char *name, const char *a, size_t alen, const char *b, size_t blen)
{
	char tmp[64];
	snprintf(tmp, sizeof(tmp), ".%s.new", name);
	(void)unlinkat(dirfd, tmp, 0);
	int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -1;
	int rc = ahp_write_all(fd, a, alen);
	if (rc == 0 && blen > 0)
		rc = ahp_write_all(fd, b, blen);
	if (rc == 0)
		rc = fchmod(fd, 0644);
	if (close(fd) != 0)
		rc = -1;
	if (rc == 0)
		rc = renameat(dirfd, tmp, dirfd, name);
	if (rc != 0)
		(void)unlinkat(dirfd, tmp, 0);
	return rc;
}

/* Opens (making it) the directory `name` in dirfd, never through a symlink. */
static int
s_subdir(int dirfd, const char *name)
{
	if (mkdirat(dirfd, name, 0755) != 0 && errno != EEXIST)
		return -1;
	return openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* Puts bundle (host bundle + CA) and the CA alone into the /etc template. */
static int
s_install(const char *etc, const char *ca, size_t ca_len)
{
	char *host = NULL;
	size_t host_len = 0;
	if (ahp_read_file(S_HOST_BUNDLE, S_BUNDLE_MAX, &host, &host_len) != 0) {
		if (errno != ENOENT)
			log_warn("reading %s: %s (the sandbox bundle holds the platform CA only)",
			         S_HOST_BUNDLE, strerror(errno));
		free(host);
		host = NULL;
		host_len = 0;
	}
	/* the CA starts on a line of its own */
	char *bundle = malloc(host_len + 1 + ca_len);
	if (bundle == NULL) {
		free(host);
		return -1;
	}
	size_t bl = 0;
	if (host_len > 0) {
		memcpy(bundle, host, host_len);
		bl = host_len;
		if (host[host_len - 1] != '\n')
			bundle[bl++] = '\n';
	}
	free(host);
	int rc = -1;
	int e = open(etc, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int ssl = e >= 0 ? s_subdir(e, "ssl") : -1;
	int certs = ssl >= 0 ? s_subdir(ssl, "certs") : -1;
	int ahp = e >= 0 ? s_subdir(e, "ahp") : -1;
	if (certs >= 0 && ahp >= 0 &&
	    s_replace(certs, "ca-certificates.crt", bundle, bl, ca, ca_len) == 0 &&
	    s_replace(ahp, "ca.crt", ca, ca_len, NULL, 0) == 0)
		rc = 0;
	int saved = errno;
	int fds[] = {e, ssl, certs, ahp};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(bundle);
	errno = saved;
	return rc;
}

int
sbx_ca_refresh(const sbx_config_t *cfg, sbx_store_t *store)
{
	if (cfg->proxy_ca_file[0] == '\0' || store == NULL)
		return 0;
	if (cfg->rootfs[0] != '\0') {
		if (!s_warned_rootfs)
			log_warn("rootfs is set: the platform CA (%s) is not added to the "
			         "sandboxes' trust store",
			         cfg->proxy_ca_file);
		s_warned_rootfs = true;
		return 0;
	}
	/* O_NOFOLLOW and O_NONBLOCK: the file lives in credproxy's directory;
	 * a symlink or FIFO planted there must neither redirect nor hang us. */
	int fd = open(cfg->proxy_ca_file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (!s_warned_missing)
			log_warn("proxy_ca_file %s: %s; proxy-mode sandboxes trust the system "
			         "bundle only (plain HTTP and tunnels work, intercepted HTTPS "
			         "does not verify)",
			         cfg->proxy_ca_file, strerror(errno));
		s_warned_missing = true;
		return s_seen.have ? s_seen.result : 0;
	}
	s_warned_missing = false;
	struct stat st;
	if (fstat(fd, &st) != 0) {
		log_warn("proxy_ca_file %s: %s; not used", cfg->proxy_ca_file, strerror(errno));
		close(fd);
		return -1;
	}
	if (s_seen.have && s_seen.dev == st.st_dev && s_seen.ino == st.st_ino &&
	    s_seen.size == st.st_size && s_seen.mtime.tv_sec == st.st_mtim.tv_sec &&
	    s_seen.mtime.tv_nsec == st.st_mtim.tv_nsec) {
		close(fd);
		return s_seen.result; /* unchanged: said and done already */
	}
	s_seen.have = true;
	s_seen.dev = st.st_dev;
	s_seen.ino = st.st_ino;
	s_seen.size = st.st_size;
	s_seen.mtime = st.st_mtim;
	s_seen.result = -1;
	if (!S_ISREG(st.st_mode) || st.st_size == 0 || st.st_size > SBX_CA_FILE_MAX) {
		close(fd);
		log_warn("proxy_ca_file %s: not a regular file of 1..%d bytes; not used",
		         cfg->proxy_ca_file, SBX_CA_FILE_MAX);
		return -1;
	}
	char buf[SBX_CA_FILE_MAX];
	ssize_t len = s_read_fd(fd, buf, sizeof(buf));
	close(fd);
	if (len <= 0) {
		log_warn("proxy_ca_file %s: cannot read it; not used", cfg->proxy_ca_file);
		return -1;
	}
	char *ca = NULL, why[96] = "";
	size_t ca_len = 0;
	int n = s_ca_pem(buf, (size_t)len, &ca, &ca_len, why, sizeof(why));
	if (n <= 0) {
		log_warn("proxy_ca_file %s: %s; not used", cfg->proxy_ca_file,
		         n < 0 ? "out of memory" : why);
		return -1;
	}
	if (s_install(sbx_store_dir(store, "etc"), ca, ca_len) != 0) {
		log_error("installing the platform CA in the /etc template: %s", strerror(errno));
		free(ca);
		return -1;
	}
	free(ca);
	log_info("platform CA from %s added to the sandboxes' trust store (%s, %s)",
	         cfg->proxy_ca_file, SBX_CA_BUNDLE, SBX_CA_CERT);
	s_seen.result = 1;
	return 1;
}
