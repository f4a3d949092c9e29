/* credproxy's TLS: the platform CA, leaf certificates minted per host and
 * cached, and the server (interception) and client (upstream) contexts. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "ahp/log.h"
#include "ahp/util.h"
#include "cp.h"

#define CA_DAYS 3652 /* ten years */
#define LEAF_DAYS 30
#define BACKDATE_S 3600      /* a client whose clock is a little behind still accepts */
#define REMINT_S (24 * 3600) /* a cached leaf is minted again a day before it expires */
#define PEM_MAX (64 * 1024)  /* ca.key / ca.crt larger than this are refused */
#define LEAF_CACHE_MAX 1024  /* cached hosts (leaf, upstream sessions); LRU goes first */
#define LEAF_BUCKETS 2048    /* power of two */
#define CN_MAX 64            /* ub-common-name, RFC 5280 appendix A */
#define CA_CN_PREFIX "ahp credproxy CA "
#define SESSION_CACHE_MAX 8192 /* server-side TLS sessions kept for resumption */
#define UP_SESSIONS 4          /* upstream TLS sessions kept per host */

/* The only application protocol spoken on either side (ALPN wire format). */
static const unsigned char s_alpn[] = "\x08http/1.1";
#define ALPN_LEN (sizeof s_alpn - 1)

/* What is cached per host: its leaf certificate (minted on the first
 * interception) and the latest sessions with its upstream (resumed by the
 * next upstream connections, as nginx's proxy_ssl_session_reuse does). */
typedef struct s_host {
	struct s_host *hnext;       /* bucket chain */
	struct s_host *prev, *next; /* LRU list, most recently used first */
	uint64_t hash;
	X509 *cert; /* NULL until minted */
	time_t not_after;
	unsigned char sid_ctx[SHA256_DIGEST_LENGTH]; /* session id context: SHA-256(host) */
	SSL_SESSION *up[UP_SESSIONS];                /* oldest first */
	unsigned n_up;
	char host[];
} s_host_t;

struct cp_tls {
	char ca_path[PATH_MAX];
	EVP_PKEY *ca_key;
	X509 *ca_cert;
	time_t ca_not_after;
	/* One key for every leaf: minting a leaf is then one ECDSA signature
	 * instead of a key generation plus a signature, and the server context
	 * holds the key once instead of one context per host. Sharing it gives
	 * nothing away: it lives in the same process as the CA key, which can
	 * sign anything. */
	EVP_PKEY *leaf_key;
	SSL_CTX *server_ctx;
	SSL_CTX *client_ctx;
	s_host_t *buckets[LEAF_BUCKETS];
	s_host_t *lru_head, *lru_tail;
	size_t n_hosts;
	uint64_t seed;
};

/* The host of an SSL (ex_data): what an intercepting SSL expects in the
 * client's SNI, and what an upstream SSL's sessions are cached under. */
typedef struct {
	bool ip;
	char host[];
} s_expect_t;

static int s_ex_expect = -1;

/* ---- errors ------------------------------------------------------------- */

/* Writes a message into err, followed by the reason of the last OpenSSL
 * error when there is one; clears OpenSSL's error queue. */
static void s_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void
s_err(char *err, size_t errlen, const char *fmt, ...)
{
	if (err != NULL && errlen > 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
		unsigned long e = ERR_peek_last_error();
		if (e != 0) {
			size_t n = strlen(err);
			const char *r = ERR_reason_error_string(e);
			char buf[256];
			if (r == NULL) {
				ERR_error_string_n(e, buf, sizeof buf);
				r = buf;
			}
			snprintf(err + n, errlen - n, ": %s", r);
		}
	}
	ERR_clear_error();
}

/* Logs a failure of a per-connection call with OpenSSL's reason. */
static void
s_log_ssl(const char *msg, const char *host)
{
	char why[256] = "";
	unsigned long e = ERR_peek_last_error();
	if (e != 0)
		ERR_error_string_n(e, why, sizeof why);
	ahp_log_kv(AHP_LOG_WARN, NULL, NULL, msg, "host", host, "error", why, NULL);
	ERR_clear_error();
}

/* ---- hosts -------------------------------------------------------------- */

/*
 * Checks host (a normalised name or IP text) and writes its canonical form
 * to out (CP_HOST_MAX+1 bytes): ASCII lower case, one trailing dot removed,
 * IP addresses as inet_ntop writes them. A name must be LDH labels of 1..63
 * bytes. Sets *ip. 0 / -1.
 */
static int
s_host_canon(const char *host, char *out, bool *ip)
{
	if (host == NULL)
		return -1;
	size_t len = strnlen(host, CP_HOST_MAX + 2);
	if (len > 0 && host[len - 1] == '.')
		len--;
	if (len == 0 || len > CP_HOST_MAX)
		return -1;
	memcpy(out, host, len);
	out[len] = '\0';

	unsigned char a[sizeof(struct in6_addr)];
	int af = strchr(out, ':') != NULL ? AF_INET6 : AF_INET;
	if (inet_pton(af, out, a) == 1) {
		*ip = true;
		return inet_ntop(af, a, out, CP_HOST_MAX + 1) != NULL ? 0 : -1;
	}
	*ip = false;
	size_t label = 0;
	for (size_t i = 0; i < len; i++) {
		char c = out[i];
		if (c >= 'A' && c <= 'Z')
			out[i] = c = (char)(c - 'A' + 'a');
		if (c == '.') {
			if (label == 0)
				return -1;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return -1;
		if (++label > 63)
			return -1;
	}
	return 0;
}

/* ---- files -------------------------------------------------------------- */

/*
 * Reads name in the directory dfd into a new buffer (caller owns *buf and
 * wipes it). A symlink, a non-regular file or one larger than PEM_MAX is
 * refused; so is a private file (ca.key) not owned by this user or open to
 * group or others. 0, 1 when the file does not exist, -1 with err.
 */
static int
s_read_file(int dfd, const char *dir, const char *name, bool private, char **buf, size_t *len,
            char *err, size_t errlen)
{
	struct stat st;
	*buf = NULL;
	int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 && errno == ENOENT)
		return 1;
	if (fd < 0) {
		s_err(err, errlen, "%s/%s: %s", dir, name,
		      errno == ELOOP ? "is a symlink (refused)" : strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		s_err(err, errlen, "%s/%s: not a regular file", dir, name);
		goto fail;
	}
	if (private && st.st_uid != geteuid()) {
		s_err(err, errlen, "%s/%s: owned by uid %u, not by this user (uid %u)", dir, name,
		      (unsigned)st.st_uid, (unsigned)geteuid());
		goto fail;
	}
	if (private && (st.st_mode & (S_IRWXG | S_IRWXO))) {
		s_err(err, errlen, "%s/%s: mode %03o is open to group/others (chmod 600 it)", dir,
		      name, (unsigned)(st.st_mode & 0777));
		goto fail;
	}
	if (st.st_size > PEM_MAX) {
		s_err(err, errlen, "%s/%s: larger than %d bytes", dir, name, PEM_MAX);
		goto fail;
	}
	/* One spare byte detects a file that grew after fstat. */
	size_t cap = (size_t)st.st_size + 1, used = 0;
	char *b = malloc(cap);
	if (b == NULL) {
		s_err(err, errlen, "out of memory");
		goto fail;
	}
	for (;;) {
		ssize_t r = read(fd, b + used, cap - used);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			break;
		if (r > 0)
			used += (size_t)r;
		if (r < 0 || used == cap) {
			s_err(err, errlen, "%s/%s: %s", dir, name,
			      r < 0 ? strerror(errno) : "changed while reading");
			explicit_bzero(b, cap);
			free(b);
			goto fail;
		}
	}
	close(fd);
	*buf = b;
	*len = used;
	return 0;
fail:
	close(fd);
	return -1;
}

/*
 * Writes data to name in the directory dfd so that name is either absent,
 * the old file or the whole new one, never a part: a new file created with
 * O_EXCL|O_NOFOLLOW, written, fsynced, given exactly mode (whatever the
 * umask), then renamed over name and the directory fsynced. With noreplace
 * an existing name is left alone and the call fails (two starts racing to
 * make the CA: the first one wins). 0 / -1 with err.
 */
static int
s_write_atomic(int dfd, const char *dir, const char *name, const void *data, size_t len,
               mode_t mode, bool noreplace, char *err, size_t errlen)
{
	char id[32], tmp[64];
	ahp_random_id("", id, sizeof id);
	snprintf(tmp, sizeof tmp, ".%s.tmp-%s", name, id);
	int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		s_err(err, errlen, "%s/%s: %s", dir, tmp, strerror(errno));
		return -1;
	}
	if (ahp_write_all(fd, data, len) < 0 || fchmod(fd, mode) < 0 || fsync(fd) < 0) {
		s_err(err, errlen, "%s/%s: %s", dir, tmp, strerror(errno));
		close(fd);
		goto fail;
	}
	if (close(fd) < 0) {
		s_err(err, errlen, "%s/%s: %s", dir, tmp, strerror(errno));
		goto fail;
	}
	int rc;
	if (noreplace) {
		rc = renameat2(dfd, tmp, dfd, name, RENAME_NOREPLACE);
		if (rc < 0 && (errno == EINVAL || errno == ENOSYS)) {
			/* A file system without RENAME_NOREPLACE: link(2) also
			 * refuses to replace. */
			rc = linkat(dfd, tmp, dfd, name, 0);
			if (rc == 0)
				unlinkat(dfd, tmp, 0);
		}
	} else {
		rc = renameat(dfd, tmp, dfd, name);
	}
	if (rc < 0) {
		s_err(err, errlen, "%s/%s: %s", dir, name, strerror(errno));
		goto fail;
	}
	fsync(dfd);
	return 0;
fail:
	unlinkat(dfd, tmp, 0);
	return -1;
}

/* ---- certificates ------------------------------------------------------- */

/* A random positive 128-bit serial number (RFC 5280 section 4.1.2.2). */
static int
s_set_serial(X509 *x)
{
	BIGNUM *bn = BN_new();
	int ok = bn != NULL;
	do {
		ok = ok && BN_rand(bn, 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY);
	} while (ok && BN_is_zero(bn)); /* zero is no serial number */
	ok = ok && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
	BN_free(bn);
	return ok ? 0 : -1;
}

static int
s_add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	if (e == NULL)
		return -1;
	int ok = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok ? 0 : -1;
}

static time_t
s_asn1_time(const ASN1_TIME *t)
{
	struct tm tm;
	if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
		return 0;
	return timegm(&tm);
}

/* Self-signs the CA certificate for key: "ahp credproxy CA <hostname>",
 * ten years from an hour ago. Caller owns the result; NULL on failure. */
static X509 *
s_ca_issue(EVP_PKEY *key)
{
	char hn[256] = "", cn[CN_MAX + 1];
	if (gethostname(hn, sizeof hn - 1) < 0 || hn[0] == '\0')
		snprintf(hn, sizeof hn, "localhost");
	hn[sizeof hn - 1] = '\0';
	/* The CN is a label for people (and ub-common-name caps it at 64). */
	for (char *p = hn; *p; p++)
		if (*p < 0x21 || *p > 0x7e)
			*p = '-';
	snprintf(cn, sizeof cn, CA_CN_PREFIX "%.*s", (int)(CN_MAX - strlen(CA_CN_PREFIX)), hn);

	time_t now = time(NULL);
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	X509V3_CTX ctx;
	if (x == NULL || name == NULL || !X509_set_version(x, X509_VERSION_3) ||
	    s_set_serial(x) < 0 || !ASN1_TIME_set(X509_getm_notBefore(x), now - BACKDATE_S) ||
	    !ASN1_TIME_set(X509_getm_notAfter(x), now + (time_t)CA_DAYS * 86400) ||
	    !X509_set_pubkey(x, key) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
	                                -1, 0) ||
	    !X509_set_subject_name(x, name) || !X509_set_issuer_name(x, name))
		goto fail;
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	if (s_add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
	    s_add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
	    s_add_ext(x, &ctx, NID_subject_key_identifier, "hash") < 0 ||
	    X509_sign(x, key, EVP_sha256()) <= 0)
		goto fail;
	X509_NAME_free(name);
	return x;
fail:
	X509_NAME_free(name);
	X509_free(x);
	return NULL;
}

/* Adds subjectAltName DNS:host or IP:host, built as a structure (never
 * parsed from a config string, so no host can add a second name). */
static int
s_add_san(X509 *x, const char *host, bool ip, bool critical)
{
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *gn = GENERAL_NAME_new();
	int ok = 0;
	if (gens == NULL || gn == NULL)
		goto out;
	if (ip) {
		ASN1_OCTET_STRING *o = a2i_IPADDRESS(host);
		if (o == NULL)
			goto out;
		GENERAL_NAME_set0_value(gn, GEN_IPADD, o);
	} else {
		ASN1_IA5STRING *s = ASN1_IA5STRING_new();
		if (s == NULL)
			goto out;
		if (!ASN1_STRING_set(s, host, -1)) {
			ASN1_IA5STRING_free(s);
			goto out;
		}
		GENERAL_NAME_set0_value(gn, GEN_DNS, s);
	}
	if (!sk_GENERAL_NAME_push(gens, gn))
		goto out;
	gn = NULL;
	ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, critical, X509V3_ADD_DEFAULT) == 1;
out:
	GENERAL_NAME_free(gn);
	GENERAL_NAMES_free(gens);
	return ok ? 0 : -1;
}

/* Mints the leaf for host: SAN = host, CN = host (when it fits), 30 days
 * from an hour ago (never past the CA), EKU serverAuth, signed by the CA.
 * Caller owns the result; NULL on failure. */
static X509 *
s_leaf_issue(cp_tls_t *self, const char *host, bool ip, time_t *not_after)
{
	time_t now = time(NULL);
	time_t na = now + (time_t)LEAF_DAYS * 86400;
	if (na > self->ca_not_after)
		na = self->ca_not_after;
	bool has_cn = strlen(host) <= CN_MAX;
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	X509V3_CTX ctx;
	if (x == NULL || name == NULL || !X509_set_version(x, X509_VERSION_3) ||
	    s_set_serial(x) < 0 || !ASN1_TIME_set(X509_getm_notBefore(x), now - BACKDATE_S) ||
	    !ASN1_TIME_set(X509_getm_notAfter(x), na) || !X509_set_pubkey(x, self->leaf_key) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(self->ca_cert)))
		goto fail;
	if (has_cn && !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	                                          (const unsigned char *)host, -1, -1, 0))
		goto fail;
	if (!X509_set_subject_name(x, name))
		goto fail;
	X509V3_set_ctx(&ctx, self->ca_cert, x, NULL, NULL, 0);
	/* An empty subject makes the SAN critical (RFC 5280 section 4.2.1.6). */
	if (s_add_san(x, host, ip, !has_cn) < 0 ||
	    s_add_ext(x, &ctx, NID_basic_constraints, "CA:FALSE") < 0 ||
	    s_add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature") < 0 ||
	    s_add_ext(x, &ctx, NID_ext_key_usage, "serverAuth") < 0 ||
	    s_add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always") < 0 ||
	    X509_sign(x, self->ca_key, EVP_sha256()) <= 0)
		goto fail;
	X509_NAME_free(name);
	*not_after = na;
	return x;
fail:
	X509_NAME_free(name);
	X509_free(x);
	return NULL;
}

static void
s_fingerprint(X509 *x, char *out, size_t outlen)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	out[0] = '\0';
	if (!X509_digest(x, EVP_sha256(), md, &n))
		return;
	for (unsigned i = 0; i < n && 2 * i + 2 < outlen; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---- the CA ------------------------------------------------------------- */

/* Writes x (or, with key, the private key) as PEM to name in dfd: the key
 * 0600 through memory that OpenSSL wipes when it frees it, never replacing
 * an existing ca.key; the certificate 0644. 0 / -1 with err. */
static int
s_write_pem(int dfd, const char *dir, const char *name, X509 *x, EVP_PKEY *key, char *err,
            size_t errlen)
{
	BIO *b = key != NULL ? BIO_new(BIO_s_secmem()) : BIO_new(BIO_s_mem());
	char *data;
	int rc = -1;
	if (b == NULL ||
	    (key != NULL && !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)) ||
	    (key == NULL && !PEM_write_bio_X509(b, x))) {
		s_err(err, errlen, "%s/%s: encoding", dir, name);
		goto out;
	}
	long len = BIO_get_mem_data(b, &data);
	rc = s_write_atomic(dfd, dir, name, data, (size_t)len, key != NULL ? 0600 : 0644,
	                    key != NULL, err, errlen);
out:
	BIO_free(b);
	return rc;
}

/* An encrypted ca.key is refused rather than prompted for on the terminal
 * (OpenSSL's default when no callback is given). */
static int
s_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

/* Loads ca.key and ca.crt from state_dir, or makes what is missing: no key
 * means a new CA (a certificate without its key is useless); a key without
 * a certificate (a crash between the two writes) gets a new certificate. */
static int
s_ca_load(cp_tls_t *self, const char *dir, char *err, size_t errlen)
{
	char *kbuf = NULL, *cbuf = NULL;
	size_t klen = 0, clen = 0;
	int rc = -1;

	if (ahp_mkdirs(dir, 0700) < 0) {
		s_err(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat st;
	if (dfd < 0 || fstat(dfd, &st) < 0) {
		s_err(err, errlen, "%s: %s", dir, strerror(errno));
		goto out;
	}
	/* Others who may write here could swap ca.crt (or a key-less CA). */
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		s_err(err, errlen, "%s: writable by group/others (chmod 700 it)", dir);
		goto out;
	}
	int kr = s_read_file(dfd, dir, "ca.key", true, &kbuf, &klen, err, errlen);
	if (kr < 0)
		goto out;
	int cr = kr == 0 ? s_read_file(dfd, dir, "ca.crt", false, &cbuf, &clen, err, errlen) : 1;
	if (cr < 0)
		goto out;

	if (kr == 1) {
		self->ca_key = EVP_EC_gen("P-256");
		if (self->ca_key == NULL) {
			s_err(err, errlen, "generating the CA key");
			goto out;
		}
	} else {
		BIO *b = BIO_new_mem_buf(kbuf, (int)klen);
		self->ca_key =
		    b != NULL ? PEM_read_bio_PrivateKey(b, NULL, s_no_passphrase, NULL) : NULL;
		BIO_free(b);
		if (self->ca_key == NULL) {
			s_err(err, errlen, "%s/ca.key: not a PEM private key", dir);
			goto out;
		}
	}
	if (cr == 1) {
		self->ca_cert = s_ca_issue(self->ca_key);
		if (self->ca_cert == NULL) {
			s_err(err, errlen, "issuing the CA certificate");
			goto out;
		}
	} else {
		BIO *b = BIO_new_mem_buf(cbuf, (int)clen);
		self->ca_cert = b != NULL ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
		BIO_free(b);
		if (self->ca_cert == NULL) {
			s_err(err, errlen, "%s/ca.crt: not a PEM certificate", dir);
			goto out;
		}
		if (!X509_check_private_key(self->ca_cert, self->ca_key)) {
			s_err(err, errlen, "%s/ca.crt does not belong to ca.key", dir);
			goto out;
		}
		if (X509_check_ca(self->ca_cert) != 1 ||
		    X509_get0_subject_key_id(self->ca_cert) == NULL) {
			s_err(err, errlen,
			      "%s/ca.crt: not a CA certificate with a subjectKeyIdentifier", dir);
			goto out;
		}
	}
	self->ca_not_after = s_asn1_time(X509_get0_notAfter(self->ca_cert));
	if (self->ca_not_after <= time(NULL)) {
		s_err(err, errlen,
		      "%s/ca.crt has expired: move ca.key and ca.crt away to make a new CA", dir);
		goto out;
	}

	if (self->ca_not_after - time(NULL) < (time_t)LEAF_DAYS * 86400) {
		char when[32];
		snprintf(when, sizeof when, "%lld", (long long)self->ca_not_after);
		ahp_log_kv(AHP_LOG_WARN, NULL, NULL,
		           "tls: the platform CA expires within 30 days: move ca.key and ca.crt "
		           "away to make a new one",
		           "path", self->ca_path, "not_after", when, NULL);
	}

	char fp[2 * EVP_MAX_MD_SIZE + 1];
	s_fingerprint(self->ca_cert, fp, sizeof fp);
	/* A certificate left without its key is replaced: say so. */
	bool stale_crt = kr == 1 && fstatat(dfd, "ca.crt", &st, AT_SYMLINK_NOFOLLOW) == 0;
	if (kr == 1 && s_write_pem(dfd, dir, "ca.key", NULL, self->ca_key, err, errlen) < 0)
		goto out;
	if (cr == 1 && s_write_pem(dfd, dir, "ca.crt", self->ca_cert, NULL, err, errlen) < 0)
		goto out;
	if (stale_crt)
		ahp_log_kv(AHP_LOG_WARN, NULL, NULL,
		           "tls: ca.key was missing: made a new platform CA and replaced ca.crt "
		           "(sandboxes started before trust the old one)",
		           "path", self->ca_path, "sha256", fp, NULL);
	else if (kr == 1)
		ahp_log_kv(AHP_LOG_INFO, NULL, NULL, "tls: made a new platform CA", "path",
		           self->ca_path, "sha256", fp, NULL);
	else if (cr == 1)
		ahp_log_kv(AHP_LOG_WARN, NULL, NULL,
		           "tls: ca.crt was missing: issued it again for the existing ca.key",
		           "path", self->ca_path, "sha256", fp, NULL);
	else
		ahp_log_kv(AHP_LOG_DEBUG, NULL, NULL, "tls: loaded the platform CA", "path",
		           self->ca_path, "sha256", fp, NULL);
	rc = 0;
out:
	if (kbuf != NULL) {
		explicit_bzero(kbuf, klen);
		free(kbuf);
	}
	free(cbuf);
	if (dfd >= 0)
		close(dfd);
	return rc;
}

/* ---- the leaf cache ----------------------------------------------------- */

/* FNV-1a with a per-process seed. Hosts reach the cache only once a rule
 * allowed them, and a chain never holds more than LEAF_CACHE_MAX entries. */
static uint64_t
s_hash(uint64_t seed, const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ seed;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void
s_lru_unlink(cp_tls_t *self, s_host_t *e)
{
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		self->lru_head = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	else
		self->lru_tail = e->prev;
	e->prev = e->next = NULL;
}

static void
s_lru_push(cp_tls_t *self, s_host_t *e)
{
	e->prev = NULL;
	e->next = self->lru_head;
	if (self->lru_head != NULL)
		self->lru_head->prev = e;
	self->lru_head = e;
	if (self->lru_tail == NULL)
		self->lru_tail = e;
}

/* Unlinks e from the cache and frees it (an SSL using its certificate or
 * one of its sessions holds its own reference). */
static void
s_host_drop(cp_tls_t *self, s_host_t *e)
{
	s_host_t **pp = &self->buckets[e->hash & (LEAF_BUCKETS - 1)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	s_lru_unlink(self, e);
	self->n_hosts--;
	X509_free(e->cert);
	for (unsigned i = 0; i < e->n_up; i++)
		SSL_SESSION_free(e->up[i]);
	free(e);
}

/* The entry of host (canonical), made the most recently used; with create,
 * a new empty one when absent (the least recently used goes when the cache
 * is full). NULL when absent or out of memory. */
static s_host_t *
s_host_find(cp_tls_t *self, const char *host, bool create)
{
	uint64_t h = s_hash(self->seed, host);
	s_host_t *e = self->buckets[h & (LEAF_BUCKETS - 1)];
	while (e != NULL && (e->hash != h || strcmp(e->host, host) != 0))
		e = e->hnext;
	if (e != NULL) {
		s_lru_unlink(self, e);
		s_lru_push(self, e);
		return e;
	}
	if (!create)
		return NULL;
	size_t n = strlen(host);
	e = calloc(1, sizeof *e + n + 1);
	if (e == NULL)
		return NULL;
	memcpy(e->host, host, n + 1);
	e->hash = h;
	SHA256((const unsigned char *)host, n, e->sid_ctx);
	if (self->n_hosts == LEAF_CACHE_MAX)
		s_host_drop(self, self->lru_tail);
	e->hnext = self->buckets[h & (LEAF_BUCKETS - 1)];
	self->buckets[h & (LEAF_BUCKETS - 1)] = e;
	s_lru_push(self, e);
	self->n_hosts++;
	return e;
}

/* The entry of host with its leaf, minted when absent or about to expire
 * (a day before: the daemon may run for months). NULL on failure. */
static s_host_t *
s_leaf_get(cp_tls_t *self, const char *host, bool ip)
{
	s_host_t *e = s_host_find(self, host, true);
	if (e == NULL)
		return NULL;
	if (e->cert != NULL && time(NULL) + REMINT_S < e->not_after)
		return e;
	time_t not_after;
	X509 *x = s_leaf_issue(self, host, ip, &not_after);
	if (x == NULL)
		return NULL;
	X509_free(e->cert);
	e->cert = x;
	e->not_after = not_after;
	return e;
}

/* ---- server side -------------------------------------------------------- */

static void
s_expect_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	free(ptr);
}

/*
 * The ClientHello callback: the SNI (RFC 6066 section 3) must name the host
 * the client asked to CONNECT to, compared case-insensitively with one
 * trailing dot removed; a ClientHello without SNI passes only when that
 * host is an IP address. Otherwise the handshake ends with the
 * unrecognized_name alert (a malformed extension: decode_error).
 */
static int
s_client_hello(SSL *ssl, int *al, void *arg)
{
	(void)arg;
	const s_expect_t *want = SSL_get_ex_data(ssl, s_ex_expect);
	const unsigned char *p;
	size_t len;
	if (want == NULL) {
		*al = SSL_AD_INTERNAL_ERROR;
		return SSL_CLIENT_HELLO_ERROR;
	}
	if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len)) {
		if (want->ip)
			return SSL_CLIENT_HELLO_SUCCESS;
		ahp_log_kv(AHP_LOG_WARN, NULL, NULL, "tls: client sent no SNI", "host", want->host,
		           NULL);
		*al = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_CLIENT_HELLO_ERROR;
	}
	/* ServerNameList: u16 length, then exactly one host_name entry (type
	 * 0, u16 length, name), as OpenSSL itself accepts it. */
	if (len < 5 || (size_t)(p[0] << 8 | p[1]) != len - 2 || p[2] != TLSEXT_NAMETYPE_host_name ||
	    (size_t)(p[3] << 8 | p[4]) != len - 5) {
		*al = SSL_AD_DECODE_ERROR;
		return SSL_CLIENT_HELLO_ERROR;
	}
	const unsigned char *name = p + 5;
	size_t n = len - 5;
	if (n > 0 && name[n - 1] == '.')
		n--;
	size_t hl = strlen(want->host);
	bool ok = n == hl;
	for (size_t i = 0; ok && i < n; i++) {
		unsigned char c = name[i];
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		ok = c == (unsigned char)want->host[i];
	}
	if (!ok) {
		/* The name is the client's: bounded here, escaped by the log. */
		char sni[CP_HOST_MAX + 3];
		snprintf(sni, sizeof sni, "%.*s", (int)(n < sizeof sni - 1 ? n : sizeof sni - 1),
		         (const char *)name);
		ahp_log_kv(AHP_LOG_WARN, NULL, NULL,
		           "tls: client SNI does not name the CONNECT host", "host", want->host,
		           "sni", sni, NULL);
		*al = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_CLIENT_HELLO_ERROR;
	}
	return SSL_CLIENT_HELLO_SUCCESS;
}

/* ALPN (RFC 7301): http/1.1 or nothing. A client that offers only other
 * protocols (h2 alone) gets no_application_protocol; one that offers no
 * ALPN at all speaks HTTP/1.1 by default. */
static int
s_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
              unsigned int inlen, void *arg)
{
	(void)ssl, (void)arg;
	unsigned char *sel;
	if (SSL_select_next_proto(&sel, outlen, s_alpn, ALPN_LEN, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = s_alpn + 1;
	*outlen = s_alpn[0];
	return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *
s_server_ctx(cp_tls_t *self)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_use_PrivateKey(ctx, self->leaf_key)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* One context for every host: each SSL gets its host's leaf with
	 * SSL_use_certificate (the key is shared). The chain is the leaf
	 * alone (clients hold the CA), so no chain is built per handshake;
	 * idle connections give their buffers back; a client may not start a
	 * renegotiation. */
	SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN | SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_client_hello_cb(ctx, s_client_hello, NULL);
	SSL_CTX_set_alpn_select_cb(ctx, s_alpn_select, NULL);
	/* Sessions and tickets are resumed only for the host they were made
	 * for: each SSL's session id context is SHA-256(host). */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_sess_set_cache_size(ctx, SESSION_CACHE_MAX);
	return ctx;
}

/* ---- client side -------------------------------------------------------- */

/*
 * A new upstream session (TLS 1.2 at the end of a handshake, TLS 1.3 on each
 * NewSessionTicket, both after the certificate was verified): a copy is
 * cached under the SSL's host. A copy, because OpenSSL marks the SSL's own
 * session unusable when the connection ends without close_notify.
 */
static int
s_new_session(SSL *ssl, SSL_SESSION *sess)
{
	cp_tls_t *self = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	const s_expect_t *want = SSL_get_ex_data(ssl, s_ex_expect);
	if (self == NULL || want == NULL || !SSL_SESSION_is_resumable(sess))
		return 0;
	s_host_t *e = s_host_find(self, want->host, true);
	SSL_SESSION *copy = e != NULL ? SSL_SESSION_dup(sess) : NULL;
	if (copy == NULL)
		return 0;
	if (e->n_up == UP_SESSIONS) {
		SSL_SESSION_free(e->up[0]);
		memmove(e->up, e->up + 1, (UP_SESSIONS - 1) * sizeof e->up[0]);
		e->n_up--;
	}
	e->up[e->n_up++] = copy;
	return 0; /* OpenSSL keeps its reference to sess */
}

/*
 * Offers ssl the newest usable session cached for host. A TLS 1.3 session
 * is taken out of the cache (RFC 8446 appendix C.4: a ticket is used once;
 * the resumed connection brings new ones); a TLS 1.2 one stays and ssl gets
 * a copy.
 */
static void
s_offer_session(cp_tls_t *self, const char *host, SSL *ssl)
{
	s_host_t *e = s_host_find(self, host, false);
	time_t now = time(NULL);
	while (e != NULL && e->n_up > 0) {
		SSL_SESSION *sess = e->up[--e->n_up];
		if (!SSL_SESSION_is_resumable(sess) ||
		    (time_t)SSL_SESSION_get_time(sess) + (time_t)SSL_SESSION_get_timeout(sess) <=
		        now) {
			SSL_SESSION_free(sess);
			continue;
		}
		if (SSL_SESSION_get_protocol_version(sess) == TLS1_3_VERSION) {
			SSL_set_session(ssl, sess);
			SSL_SESSION_free(sess);
			return;
		}
		SSL_SESSION *copy = SSL_SESSION_dup(sess);
		e->up[e->n_up++] = sess;
		if (copy != NULL) {
			SSL_set_session(ssl, copy);
			SSL_SESSION_free(copy);
		}
		return;
	}
}

static SSL_CTX *
s_client_ctx(cp_tls_t *self, const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    SSL_CTX_set_alpn_protos(ctx, s_alpn, ALPN_LEN) != 0) {
		s_err(err, errlen, "upstream TLS context");
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (ca_file != NULL && ca_file[0] != '\0') {
		if (!SSL_CTX_load_verify_locations(ctx, ca_file, NULL)) {
			s_err(err, errlen, "upstream_ca_file %s", ca_file);
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (!SSL_CTX_set_default_verify_paths(ctx)) {
		s_err(err, errlen, "the system trust store");
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* Upstream sessions live in the per-host cache, not OpenSSL's. */
	SSL_CTX_set_app_data(ctx, self);
	SSL_CTX_set_session_cache_mode(ctx,
	                               SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, s_new_session);
	X509_VERIFY_PARAM_set_hostflags(SSL_CTX_get0_param(ctx),
	                                X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	return ctx;
}

/* ---- interface ---------------------------------------------------------- */

/* Records host (canonical) as ssl's host. 0 / -1. */
static int
s_set_host(SSL *ssl, const char *host, bool ip)
{
	size_t n = strlen(host);
	s_expect_t *want = malloc(sizeof *want + n + 1);
	if (want == NULL)
		return -1;
	want->ip = ip;
	memcpy(want->host, host, n + 1);
	if (!SSL_set_ex_data(ssl, s_ex_expect, want)) {
		free(want);
		return -1;
	}
	return 0;
}

cp_tls_t *
cp_tls_new(const char *state_dir, const char *upstream_ca_file, char *err, size_t errlen)
{
	ERR_clear_error();
	if (s_ex_expect < 0) {
		s_ex_expect = SSL_get_ex_new_index(0, "cp_tls sni", NULL, NULL, s_expect_free);
		if (s_ex_expect < 0) {
			s_err(err, errlen, "SSL_get_ex_new_index");
			return NULL;
		}
	}
	cp_tls_t *self = calloc(1, sizeof *self);
	if (self == NULL) {
		s_err(err, errlen, "out of memory");
		return NULL;
	}
	if (snprintf(self->ca_path, sizeof self->ca_path, "%s/ca.crt", state_dir) >=
	    (int)sizeof self->ca_path) {
		s_err(err, errlen, "%s: path too long", state_dir);
		goto fail;
	}
	ahp_random_bytes(&self->seed, sizeof self->seed);
	if (s_ca_load(self, state_dir, err, errlen) < 0)
		goto fail;
	self->leaf_key = EVP_EC_gen("P-256");
	if (self->leaf_key == NULL) {
		s_err(err, errlen, "generating the leaf key");
		goto fail;
	}
	self->server_ctx = s_server_ctx(self);
	if (self->server_ctx == NULL) {
		s_err(err, errlen, "interception TLS context");
		goto fail;
	}
	self->client_ctx = s_client_ctx(self, upstream_ca_file, err, errlen);
	if (self->client_ctx == NULL)
		goto fail;
	return self;
fail:
	cp_tls_destroy(&self);
	return NULL;
}

void
cp_tls_destroy(cp_tls_t **self_p)
{
	if (self_p == NULL || *self_p == NULL)
		return;
	cp_tls_t *self = *self_p;
	while (self->lru_head != NULL)
		s_host_drop(self, self->lru_head);
	SSL_CTX_free(self->server_ctx);
	SSL_CTX_free(self->client_ctx);
	EVP_PKEY_free(self->leaf_key);
	EVP_PKEY_free(self->ca_key);
	X509_free(self->ca_cert);
	free(self);
	*self_p = NULL;
}

const char *
cp_tls_ca_path(const cp_tls_t *self)
{
	return self->ca_path;
}

SSL *
cp_tls_server_ssl(cp_tls_t *self, const char *host)
{
	char h[CP_HOST_MAX + 1];
	bool ip;
	if (s_host_canon(host, h, &ip) < 0) {
		ahp_log_kv(AHP_LOG_WARN, NULL, NULL, "tls: no leaf for an invalid host", "host",
		           host != NULL ? host : "", NULL);
		return NULL;
	}
	s_host_t *l = s_leaf_get(self, h, ip);
	if (l == NULL) {
		s_log_ssl("tls: minting a leaf certificate failed", h);
		return NULL;
	}
	SSL *ssl = SSL_new(self->server_ctx);
	if (ssl == NULL || s_set_host(ssl, h, ip) < 0 || !SSL_use_certificate(ssl, l->cert) ||
	    !SSL_set_session_id_context(ssl, l->sid_ctx, sizeof l->sid_ctx))
		goto fail;
	SSL_set_accept_state(ssl);
	return ssl;
fail:
	s_log_ssl("tls: interception SSL failed", h);
	SSL_free(ssl);
	return NULL;
}

SSL *
cp_tls_client_ssl(cp_tls_t *self, const char *host)
{
	char h[CP_HOST_MAX + 1];
	bool ip;
	if (s_host_canon(host, h, &ip) < 0) {
		ahp_log_kv(AHP_LOG_WARN, NULL, NULL, "tls: upstream TLS to an invalid host", "host",
		           host != NULL ? host : "", NULL);
		return NULL;
	}
	SSL *ssl = SSL_new(self->client_ctx);
	if (ssl == NULL || s_set_host(ssl, h, ip) < 0)
		goto fail;
	X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
	/* RFC 6066: SNI carries names only, never an address. */
	if (ip ? !X509_VERIFY_PARAM_set1_ip_asc(param, h)
	       : (!SSL_set_tlsext_host_name(ssl, h) || !X509_VERIFY_PARAM_set1_host(param, h, 0)))
		goto fail;
	s_offer_session(self, h, ssl);
	SSL_set_connect_state(ssl);
	return ssl;
fail:
	s_log_ssl("tls: upstream SSL failed", h);
	SSL_free(ssl);
	return NULL;
}
