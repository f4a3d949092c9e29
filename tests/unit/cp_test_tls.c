/* Unit tests for credproxy's TLS: the platform CA on disk, leaf minting and
 * caching, and real in-memory handshakes on both sides (BIO pairs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "ahp/log.h"
#include "cp.h"

static char s_dir[64];
static char s_err[256];

static int
s_setup(void **state)
{
	(void)state;
	ahp_log_init("test_cp_tls", AHP_LOG_ERROR);
	snprintf(s_dir, sizeof s_dir, "/tmp/ahp-test-cp-tls-XXXXXX");
	return mkdtemp(s_dir) ? 0 : -1;
}

static int
s_teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* A fresh state dir path under s_dir (not created). */
static void
s_path(const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", s_dir, name);
}

static void
s_file(const char *dir, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

/* cp_tls_new; a refusal's text lands in s_err. */
static cp_tls_t *
s_tls(const char *dir, const char *ca_file)
{
	s_err[0] = '\0';
	return cp_tls_new(dir, ca_file, s_err, sizeof s_err);
}

/* cp_tls_new that must succeed (and says why when it does not). */
static cp_tls_t *
s_tls_ok(const char *dir, const char *ca_file)
{
	cp_tls_t *t = s_tls(dir, ca_file);
	if (t == NULL)
		fail_msg("cp_tls_new: %s", s_err);
	return t;
}

static X509 *
s_read_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

static void
s_fp(X509 *x, unsigned char md[32])
{
	unsigned int n = 0;
	assert_true(X509_digest(x, EVP_sha256(), md, &n));
	assert_int_equal(n, 32);
}

static mode_t
s_mode(const char *path)
{
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	return st.st_mode & 07777;
}

static uint64_t
s_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long
s_span(const ASN1_TIME *from, const ASN1_TIME *to)
{
	int days = 0, secs = 0;
	assert_true(ASN1_TIME_diff(&days, &secs, from, to));
	return (long)days * 86400 + secs;
}

/* ---- handshakes over a BIO pair ----------------------------------------- */

typedef struct {
	bool c_ok, s_ok;
	int c_reason, s_reason; /* ERR_GET_REASON of the side's first error */
} hs_t;

static void
s_step(SSL *ssl, bool *ok, bool *failed, int *reason)
{
	if (*ok || *failed)
		return;
	ERR_clear_error();
	int r = SSL_do_handshake(ssl);
	if (r == 1) {
		*ok = true;
		return;
	}
	int e = SSL_get_error(ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return;
	*failed = true;
	*reason = ERR_GET_REASON(ERR_peek_error());
}

/* Runs the handshake between c and s in memory until both sides finished
 * or failed (a failing side's alert reaches the other). */
static hs_t
s_handshake(SSL *c, SSL *s)
{
	BIO *bc = NULL, *bs = NULL;
	assert_true(BIO_new_bio_pair(&bc, 0, &bs, 0));
	SSL_set_bio(c, bc, bc);
	SSL_set_bio(s, bs, bs);
	hs_t h = {0};
	bool cf = false, sf = false;
	for (int i = 0; i < 32 && !((h.c_ok || cf) && (h.s_ok || sf)); i++) {
		s_step(c, &h.c_ok, &cf, &h.c_reason);
		s_step(s, &h.s_ok, &sf, &h.s_reason);
	}
	ERR_clear_error();
	return h;
}

/* Sends a line each way: the connection really carries data. */
static void
s_exchange(SSL *c, SSL *s)
{
	char buf[16];
	assert_int_equal(SSL_write(c, "ping", 4), 4);
	assert_int_equal(SSL_read(s, buf, sizeof buf), 4);
	assert_memory_equal(buf, "ping", 4);
	assert_int_equal(SSL_write(s, "pong", 4), 4);
	assert_int_equal(SSL_read(c, buf, sizeof buf), 4);
	assert_memory_equal(buf, "pong", 4);
}

/* A plain OpenSSL client context trusting only ca_file. No client session
 * cache: it drops a TLS 1.3 session after one use, and test_resumption
 * reuses one on purpose (closing each connection with close_notify, as a
 * session freed unclosed is not offered again). */
static SSL_CTX *
s_client_ctx(const char *ca_file, const char *alpn, size_t alpn_len)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(ctx);
	assert_true(SSL_CTX_load_verify_locations(ctx, ca_file, NULL));
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (alpn != NULL)
		assert_int_equal(
		    SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)alpn, (unsigned)alpn_len),
		    0);
	return ctx;
}

/* A client SSL sending sni (NULL: none) and verifying the name check. */
static SSL *
s_client(SSL_CTX *ctx, const char *sni, const char *check)
{
	SSL *c = SSL_new(ctx);
	assert_non_null(c);
	if (sni != NULL)
		assert_true(SSL_set_tlsext_host_name(c, sni));
	if (check != NULL && strchr(check, ':') == NULL &&
	    strspn(check, "0123456789.") != strlen(check))
		assert_true(SSL_set1_host(c, check));
	else if (check != NULL)
		assert_true(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c), check));
	SSL_set_connect_state(c);
	return c;
}

/* The ALPN protocol negotiated on ssl ("" when none). */
static void
s_alpn(SSL *ssl, char *out, size_t len)
{
	const unsigned char *p = NULL;
	unsigned n = 0;
	SSL_get0_alpn_selected(ssl, &p, &n);
	snprintf(out, len, "%.*s", (int)n, p != NULL ? (const char *)p : "");
}

/* ---- the CA on disk ----------------------------------------------------- */

static void
test_ca_create(void **state)
{
	(void)state;
	char dir[128], key[160], crt[160];
	s_path("create/state/credproxy", dir, sizeof dir);
	cp_tls_t *t = s_tls_ok(dir, NULL);
	s_file(dir, "ca.key", key, sizeof key);
	s_file(dir, "ca.crt", crt, sizeof crt);
	assert_string_equal(cp_tls_ca_path(t), crt);
	assert_int_equal(s_mode(dir), 0700);
	assert_int_equal(s_mode(key), 0600);
	assert_int_equal(s_mode(crt), 0644);

	/* Exactly the two files: no temporary left behind. */
	DIR *d = opendir(dir);
	assert_non_null(d);
	int n = 0;
	for (struct dirent *de = readdir(d); de != NULL; de = readdir(d))
		if (de->d_name[0] != '.' || strncmp(de->d_name, ".ca", 3) == 0)
			n++;
	closedir(d);
	assert_int_equal(n, 2);

	X509 *ca = s_read_cert(crt);
	/* Self-signed, a CA for one level, EC P-256, ten years. */
	assert_int_equal(X509_check_issued(ca, ca), X509_V_OK);
	assert_int_equal(X509_check_ca(ca), 1);
	char cn[128];
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(ca), NID_commonName, cn,
	                                      sizeof cn) > 0);
	char hn[256] = "";
	gethostname(hn, sizeof hn - 1);
	char want[128];
	snprintf(want, sizeof want, "ahp credproxy CA %.47s", hn);
	assert_string_equal(cn, want);
	assert_int_equal(X509_get_version(ca), X509_VERSION_3);
	assert_int_equal(X509_get_pathlen(ca), 0);
	assert_int_equal(X509_get_key_usage(ca), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	int crit = -1;
	BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(ca, NID_basic_constraints, &crit, NULL);
	assert_non_null(bc);
	assert_true(bc->ca);
	assert_int_equal(crit, 1);
	BASIC_CONSTRAINTS_free(bc);
	ASN1_BIT_STRING *ku = X509_get_ext_d2i(ca, NID_key_usage, &crit, NULL);
	assert_non_null(ku);
	assert_int_equal(crit, 1);
	ASN1_BIT_STRING_free(ku);
	assert_non_null(X509_get0_subject_key_id(ca));
	EVP_PKEY *pk = X509_get0_pubkey(ca);
	char group[64];
	assert_int_equal(EVP_PKEY_get_base_id(pk), EVP_PKEY_EC);
	assert_true(EVP_PKEY_get_group_name(pk, group, sizeof group, NULL));
	assert_string_equal(group, "prime256v1");
	assert_int_equal(s_span(X509_get0_notBefore(ca), X509_get0_notAfter(ca)),
	                 3652L * 86400 + 3600);
	/* notBefore is an hour back (a minute of slack for a slow run). */
	long back = s_span(X509_get0_notBefore(ca), NULL);
	assert_in_range(back, 3600, 3660);
	/* A 128-bit random serial. */
	BIGNUM *sn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(ca), NULL);
	assert_non_null(sn);
	assert_in_range(BN_num_bits(sn), 100, 128);
	assert_false(BN_is_negative(sn));
	BN_free(sn);
	X509_free(ca);
	cp_tls_destroy(&t);
	assert_null(t);
	cp_tls_destroy(&t); /* NULL-safe */
}

/* Makes a CA in a fresh dir and returns its paths. */
static void
s_make_ca(const char *name, char *dir, size_t dlen, char *key, char *crt, size_t len)
{
	s_path(name, dir, dlen);
	cp_tls_t *t = s_tls_ok(dir, NULL);
	cp_tls_destroy(&t);
	s_file(dir, "ca.key", key, len);
	s_file(dir, "ca.crt", crt, len);
}

static void
test_ca_reuse(void **state)
{
	(void)state;
	char dir[128], key[160], crt[160];
	unsigned char a[32], b[32];
	s_make_ca("reuse", dir, sizeof dir, key, crt, sizeof key);
	X509 *ca1 = s_read_cert(crt);
	s_fp(ca1, a);
	cp_tls_t *t = s_tls_ok(dir, NULL);
	X509 *ca2 = s_read_cert(crt);
	s_fp(ca2, b);
	assert_memory_equal(a, b, 32);
	/* And the reloaded CA signs leaves that the first ca.crt verifies. */
	SSL *s = cp_tls_server_ssl(t, "wiki.local");
	assert_non_null(s);
	assert_int_equal(X509_verify(SSL_get_certificate(s), X509_get0_pubkey(ca1)), 1);
	SSL_free(s);
	X509_free(ca1);
	X509_free(ca2);
	cp_tls_destroy(&t);
}

static void
test_ca_key_mode(void **state)
{
	(void)state;
	char dir[128], key[160], crt[160];
	s_make_ca("mode", dir, sizeof dir, key, crt, sizeof key);
	assert_int_equal(chmod(key, 0644), 0);
	assert_null(s_tls(dir, NULL));
	char want[320];
	snprintf(want, sizeof want, "%s/ca.key: mode 644 is open to group/others (chmod 600 it)",
	         dir);
	assert_string_equal(s_err, want);
	assert_int_equal(chmod(key, 0640), 0);
	assert_null(s_tls(dir, NULL));
	assert_int_equal(chmod(key, 0400), 0);
	cp_tls_t *t = s_tls_ok(dir, NULL);
	cp_tls_destroy(&t);
}

static void
test_ca_key_symlink(void **state)
{
	(void)state;
	char dir[128], key[160], crt[160], moved[200];
	s_make_ca("symlink", dir, sizeof dir, key, crt, sizeof key);
	snprintf(moved, sizeof moved, "%s.real", key);
	assert_int_equal(rename(key, moved), 0);
	assert_int_equal(symlink(moved, key), 0);
	assert_null(s_tls(dir, NULL));
	char want[320];
	snprintf(want, sizeof want, "%s/ca.key: is a symlink (refused)", dir);
	assert_string_equal(s_err, want);
	/* A dangling one too: never "missing, so make a new CA". */
	assert_int_equal(unlink(moved), 0);
	assert_null(s_tls(dir, NULL));
	assert_string_equal(s_err, want);
}

static void
test_ca_bad_files(void **state)
{
	(void)state;
	char dir[128], key[160], crt[160], want[320];
	char dir2[128], key2[160], crt2[160];
	s_make_ca("bad", dir, sizeof dir, key, crt, sizeof key);
	s_make_ca("bad2", dir2, sizeof dir2, key2, crt2, sizeof key2);

	/* Another CA's certificate. */
	char cmd[512];
	snprintf(cmd, sizeof cmd, "cp '%s' '%s'", crt2, crt);
	assert_int_equal(system(cmd), 0);
	assert_null(s_tls(dir, NULL));
	snprintf(want, sizeof want, "%s/ca.crt does not belong to ca.key: key values mismatch",
	         dir);
	assert_string_equal(s_err, want);

	/* Encrypted: refused, never prompted for. */
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	assert_non_null(pk);
	FILE *f = fopen(key, "w");
	assert_non_null(f);
	assert_true(PEM_write_PrivateKey(f, pk, EVP_aes_256_cbc(), NULL, 0, NULL, "secret"));
	fclose(f);
	EVP_PKEY_free(pk);
	assert_null(s_tls(dir, NULL));
	snprintf(want, sizeof want, "%s/ca.key: not a PEM private key", dir);
	assert_int_equal(strncmp(s_err, want, strlen(want)), 0);

	/* Not PEM at all. */
	f = fopen(key, "w");
	assert_non_null(f);
	fputs("not a key\n", f);
	fclose(f);
	assert_null(s_tls(dir, NULL));
	snprintf(want, sizeof want, "%s/ca.key: not a PEM private key", dir);
	assert_int_equal(strncmp(s_err, want, strlen(want)), 0);

	/* Group-writable state dir. */
	assert_int_equal(chmod(dir2, 0770), 0);
	assert_null(s_tls(dir2, NULL));
	snprintf(want, sizeof want, "%s: writable by group/others (chmod 700 it)", dir2);
	assert_string_equal(s_err, want);
	assert_int_equal(chmod(dir2, 0700), 0);

	/* A missing upstream CA bundle. */
	assert_null(s_tls(dir2, "/nonexistent/ca.pem"));
	assert_int_equal(strncmp(s_err, "upstream_ca_file /nonexistent/ca.pem", 36), 0);
}

/* A crash between writing ca.key and ca.crt: the key is kept and the
 * certificate issued again for it. */
static void
test_ca_crt_missing(void **state)
{
	(void)state;
	char dir[128], key[160], crt[160];
	s_make_ca("crtmissing", dir, sizeof dir, key, crt, sizeof key);
	X509 *ca1 = s_read_cert(crt);
	assert_int_equal(unlink(crt), 0);
	cp_tls_t *t = s_tls_ok(dir, NULL);
	X509 *ca2 = s_read_cert(crt);
	assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(ca1), X509_get0_pubkey(ca2)), 1);
	assert_int_equal(s_mode(crt), 0644);
	X509_free(ca1);
	X509_free(ca2);
	cp_tls_destroy(&t);
}

/* ---- leaves ------------------------------------------------------------- */

/* X509_verify_cert of leaf against ca.crt alone, as `openssl verify
 * -CAfile ca.crt -purpose sslserver -verify_hostname host` does. Returns
 * the verify error (X509_V_OK when it verifies). */
static int
s_verify(const char *ca_file, X509 *leaf, const char *host, const char *ip)
{
	X509_STORE *store = X509_STORE_new();
	assert_non_null(store);
	assert_true(X509_STORE_load_file(store, ca_file));
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	assert_true(X509_STORE_CTX_init(ctx, store, leaf, NULL));
	assert_true(X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER));
	X509_VERIFY_PARAM *p = X509_STORE_CTX_get0_param(ctx);
	if (host != NULL)
		assert_true(X509_VERIFY_PARAM_set1_host(p, host, 0));
	if (ip != NULL)
		assert_true(X509_VERIFY_PARAM_set1_ip_asc(p, ip));
	int ok = X509_verify_cert(ctx);
	int e = X509_STORE_CTX_get_error(ctx);
	assert_true(ok == 1 ? e == X509_V_OK : e != X509_V_OK);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return e;
}

static void
test_leaf(void **state)
{
	(void)state;
	char dir[128], key[160], crt[160];
	s_make_ca("leaf", dir, sizeof dir, key, crt, sizeof key);
	cp_tls_t *t = s_tls_ok(dir, NULL);
	SSL *s = cp_tls_server_ssl(t, "wiki.local");
	assert_non_null(s);
	X509 *leaf = SSL_get_certificate(s);
	assert_non_null(leaf);

	assert_int_equal(s_verify(crt, leaf, "wiki.local", NULL), X509_V_OK);
	assert_int_equal(s_verify(crt, leaf, "other.local", NULL), X509_V_ERR_HOSTNAME_MISMATCH);
	assert_int_equal(s_verify(crt, leaf, "x.wiki.local", NULL), X509_V_ERR_HOSTNAME_MISMATCH);

	/* SAN is exactly DNS:wiki.local; CN the same. */
	GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
	assert_non_null(gens);
	assert_int_equal(sk_GENERAL_NAME_num(gens), 1);
	GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, 0);
	assert_int_equal(gn->type, GEN_DNS);
	assert_string_equal((const char *)ASN1_STRING_get0_data(gn->d.dNSName), "wiki.local");
	GENERAL_NAMES_free(gens);
	char cn[128];
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn,
	                                      sizeof cn) > 0);
	assert_string_equal(cn, "wiki.local");
	/* 30 days starting an hour back; serverAuth; not a CA; AKI = CA SKI. */
	assert_int_equal(s_span(X509_get0_notBefore(leaf), X509_get0_notAfter(leaf)),
	                 30L * 86400 + 3600);
	assert_in_range(s_span(X509_get0_notBefore(leaf), NULL), 3600, 3660);
	assert_int_equal(X509_get_extended_key_usage(leaf), XKU_SSL_SERVER);
	assert_int_equal(X509_check_ca(leaf), 0);
	X509 *ca = s_read_cert(crt);
	const ASN1_OCTET_STRING *aki = X509_get0_authority_key_id(leaf);
	assert_non_null(aki);
	assert_int_equal(ASN1_OCTET_STRING_cmp(aki, X509_get0_subject_key_id(ca)), 0);
	assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(leaf), X509_get_subject_name(ca)), 0);

	/* Another host: another random serial, the same (shared) key. */
	SSL *s2 = cp_tls_server_ssl(t, "docs.local");
	assert_non_null(s2);
	X509 *leaf2 = SSL_get_certificate(s2);
	assert_int_not_equal(
	    ASN1_INTEGER_cmp(X509_get0_serialNumber(leaf), X509_get0_serialNumber(leaf2)), 0);
	assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(leaf), X509_get0_pubkey(leaf2)), 1);

	/* An IP address: SAN IP, verifiable by address only. */
	SSL *s3 = cp_tls_server_ssl(t, "127.0.0.1");
	assert_non_null(s3);
	X509 *leaf3 = SSL_get_certificate(s3);
	assert_int_equal(s_verify(crt, leaf3, NULL, "127.0.0.1"), X509_V_OK);
	assert_int_equal(s_verify(crt, leaf3, NULL, "127.0.0.2"), X509_V_ERR_IP_ADDRESS_MISMATCH);
	gens = X509_get_ext_d2i(leaf3, NID_subject_alt_name, NULL, NULL);
	assert_int_equal(sk_GENERAL_NAME_num(gens), 1);
	assert_int_equal(sk_GENERAL_NAME_value(gens, 0)->type, GEN_IPADD);
	GENERAL_NAMES_free(gens);
	SSL *s4 = cp_tls_server_ssl(t, "::1");
	assert_non_null(s4);
	assert_int_equal(s_verify(crt, SSL_get_certificate(s4), NULL, "::1"), X509_V_OK);

	/* A name longer than a CN may be: no CN, a critical SAN. */
	char longname[200];
	memset(longname, 'a', 60);
	snprintf(longname + 60, sizeof longname - 60, ".%s", "example.com");
	SSL *s5 = cp_tls_server_ssl(t, longname);
	assert_non_null(s5);
	X509 *leaf5 = SSL_get_certificate(s5);
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(leaf5)), 0);
	assert_int_equal(s_verify(crt, leaf5, longname, NULL), X509_V_OK);

	X509_free(ca);
	SSL_free(s);
	SSL_free(s2);
	SSL_free(s3);
	SSL_free(s4);
	SSL_free(s5);
	cp_tls_destroy(&t);
}

static void
test_bad_hosts(void **state)
{
	(void)state;
	char dir[128], key[160], crt[160];
	s_make_ca("badhosts", dir, sizeof dir, key, crt, sizeof key);
	cp_tls_t *t = s_tls_ok(dir, NULL);
	char big[300];
	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	const char *bad[] = {"",           ".",    "a..b",  "*.wiki.local", "wiki.local,DNS:evil",
	                     "wiki local", "a\nb", "[::1]", "a_b.local",    big};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_null(cp_tls_server_ssl(t, bad[i]));
		assert_null(cp_tls_client_ssl(t, bad[i]));
	}
	assert_null(cp_tls_server_ssl(t, NULL));
	cp_tls_destroy(&t);
}

/* Minting vs the cache: the 2nd interception of a host costs no signature. */
static void
test_cache(void **state)
{
	(void)state;
	char dir[128], key[160], crt[160];
	s_make_ca("cache", dir, sizeof dir, key, crt, sizeof key);
	cp_tls_t *t = s_tls_ok(dir, NULL);

	uint64_t t0 = s_now_ns();
	SSL *a = cp_tls_server_ssl(t, "wiki.local");
	uint64_t t1 = s_now_ns();
	SSL *b = cp_tls_server_ssl(t, "wiki.local");
	uint64_t t2 = s_now_ns();
	assert_non_null(a);
	assert_non_null(b);
	print_message("tls: server SSL with a new leaf (mint) %.1f us, from the cache %.1f us\n",
	              (double)(t1 - t0) / 1e3, (double)(t2 - t1) / 1e3);
	X509 *first = SSL_get_certificate(a);
	assert_ptr_equal(SSL_get_certificate(b), first);
	/* One spelling, one leaf: case and a trailing dot do not mint again. */
	SSL *c = cp_tls_server_ssl(t, "WIKI.Local.");
	assert_ptr_equal(SSL_get_certificate(c), first);
	SSL_free(b);
	SSL_free(c);

	/* 1024 other hosts push wiki.local out; the SSL a keeps its leaf. */
	uint64_t t3 = s_now_ns();
	for (int i = 0; i < 1024; i++) {
		char h[32];
		snprintf(h, sizeof h, "h%d.local", i);
		SSL *x = cp_tls_server_ssl(t, h);
		assert_non_null(x);
		SSL_free(x);
	}
	uint64_t t4 = s_now_ns();
	print_message("tls: 1024 mints %.1f us each\n", (double)(t4 - t3) / 1e3 / 1024);
	SSL *d = cp_tls_server_ssl(t, "wiki.local");
	assert_ptr_not_equal(SSL_get_certificate(d), first);
	assert_int_equal(SSL_get_certificate(a), first);
	/* h1023 was used last: still cached. */
	SSL *e = cp_tls_server_ssl(t, "h1023.local");
	SSL *f = cp_tls_server_ssl(t, "h1023.local");
	assert_ptr_equal(SSL_get_certificate(e), SSL_get_certificate(f));
	SSL_free(a);
	SSL_free(d);
	SSL_free(e);
	SSL_free(f);
	cp_tls_destroy(&t);
}

/* ---- the interception side ---------------------------------------------- */

static void
test_server_handshake(void **state)
{
	(void)state;
	char dir[128], key[160], crt[160], proto[32];
	s_make_ca("server", dir, sizeof dir, key, crt, sizeof key);
	cp_tls_t *t = s_tls_ok(dir, NULL);
	SSL_CTX *cctx = s_client_ctx(crt, "\x02h2\x08http/1.1", 12);

	/* SNI wiki.local: verified against ca.crt, ALPN http/1.1 (not h2). */
	SSL *c = s_client(cctx, "wiki.local", "wiki.local");
	SSL *s = cp_tls_server_ssl(t, "wiki.local");
	assert_non_null(s);
	uint64_t t0 = s_now_ns();
	hs_t h = s_handshake(c, s);
	uint64_t t1 = s_now_ns();
	print_message("tls: full interception handshake in memory %.1f us (both sides)\n",
	              (double)(t1 - t0) / 1e3);
	assert_true(h.c_ok);
	assert_true(h.s_ok);
	assert_int_equal(SSL_get_verify_result(c), X509_V_OK);
	assert_true(SSL_version(c) >= TLS1_2_VERSION);
	s_alpn(c, proto, sizeof proto);
	assert_string_equal(proto, "http/1.1");
	s_exchange(c, s);
	SSL_free(c);
	SSL_free(s);

	/* Case and one trailing dot in the SNI are forgiven. */
	c = s_client(cctx, "Wiki.LOCAL.", "wiki.local");
	s = cp_tls_server_ssl(t, "wiki.local");
	h = s_handshake(c, s);
	assert_true(h.c_ok);
	assert_true(h.s_ok);
	SSL_free(c);
	SSL_free(s);

	/* SNI other.local for a CONNECT to wiki.local: unrecognized_name. */
	c = s_client(cctx, "other.local", "wiki.local");
	s = cp_tls_server_ssl(t, "wiki.local");
	h = s_handshake(c, s);
	assert_false(h.c_ok);
	assert_false(h.s_ok);
	assert_int_equal(h.c_reason, SSL_R_TLSV1_UNRECOGNIZED_NAME);
	assert_int_equal(h.s_reason, SSL_R_CALLBACK_FAILED);
	SSL_free(c);
	SSL_free(s);

	/* No SNI for a name: refused the same way. */
	c = s_client(cctx, NULL, "wiki.local");
	s = cp_tls_server_ssl(t, "wiki.local");
	h = s_handshake(c, s);
	assert_false(h.c_ok);
	assert_int_equal(h.c_reason, SSL_R_TLSV1_UNRECOGNIZED_NAME);
	SSL_free(c);
	SSL_free(s);

	/* No SNI for an IP address: accepted, verified by address. */
	c = s_client(cctx, NULL, "127.0.0.1");
	s = cp_tls_server_ssl(t, "127.0.0.1");
	h = s_handshake(c, s);
	assert_true(h.c_ok);
	assert_true(h.s_ok);
	assert_int_equal(SSL_get_verify_result(c), X509_V_OK);
	SSL_free(c);
	SSL_free(s);
	/* ... but a name as SNI for an IP address is not. */
	c = s_client(cctx, "wiki.local", "127.0.0.1");
	s = cp_tls_server_ssl(t, "127.0.0.1");
	h = s_handshake(c, s);
	assert_int_equal(h.c_reason, SSL_R_TLSV1_UNRECOGNIZED_NAME);
	SSL_free(c);
	SSL_free(s);
	SSL_CTX_free(cctx);

	/* A client offering only h2: no_application_protocol. */
	cctx = s_client_ctx(crt, "\x02h2", 3);
	c = s_client(cctx, "wiki.local", "wiki.local");
	s = cp_tls_server_ssl(t, "wiki.local");
	h = s_handshake(c, s);
	assert_false(h.c_ok);
	assert_int_equal(h.c_reason, SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL);
	SSL_free(c);
	SSL_free(s);
	SSL_CTX_free(cctx);

	/* No ALPN at all: HTTP/1.1 by default, nothing negotiated. */
	cctx = s_client_ctx(crt, NULL, 0);
	c = s_client(cctx, "wiki.local", "wiki.local");
	s = cp_tls_server_ssl(t, "wiki.local");
	h = s_handshake(c, s);
	assert_true(h.c_ok);
	s_alpn(c, proto, sizeof proto);
	assert_string_equal(proto, "");
	SSL_free(c);
	SSL_free(s);

	/* TLS 1.1: protocol_version, even for a client that allows it. */
	c = s_client(cctx, "wiki.local", "wiki.local");
	SSL_set_security_level(c, 0);
	assert_true(SSL_set_cipher_list(c, "DEFAULT:@SECLEVEL=0"));
	assert_true(SSL_set_min_proto_version(c, TLS1_VERSION));
	assert_true(SSL_set_max_proto_version(c, TLS1_1_VERSION));
	s = cp_tls_server_ssl(t, "wiki.local");
	h = s_handshake(c, s);
	assert_false(h.c_ok);
	assert_false(h.s_ok);
	assert_int_equal(h.s_reason, SSL_R_UNSUPPORTED_PROTOCOL);
	assert_int_equal(h.c_reason, SSL_R_TLSV1_ALERT_PROTOCOL_VERSION);
	SSL_free(c);
	SSL_free(s);
	SSL_CTX_free(cctx);
	cp_tls_destroy(&t);
}

/* A session is resumed for the host it was made for, never for another. */
static void
test_resumption(void **state)
{
	(void)state;
	char dir[128], key[160], crt[160];
	s_make_ca("resume", dir, sizeof dir, key, crt, sizeof key);
	cp_tls_t *t = s_tls_ok(dir, NULL);
	SSL_CTX *cctx = s_client_ctx(crt, "\x08http/1.1", 9);

	SSL *c = s_client(cctx, "wiki.local", "wiki.local");
	SSL *s = cp_tls_server_ssl(t, "wiki.local");
	hs_t h = s_handshake(c, s);
	assert_true(h.c_ok);
	s_exchange(c, s); /* the client reads the TLS 1.3 tickets */
	SSL_SESSION *sess = SSL_get1_session(c);
	assert_non_null(sess);
	assert_true(SSL_SESSION_is_resumable(sess));
	SSL_shutdown(c);
	SSL_free(c);
	SSL_free(s);

	c = s_client(cctx, "wiki.local", "wiki.local");
	assert_true(SSL_SESSION_is_resumable(sess));
	assert_true(SSL_set_session(c, sess));
	s = cp_tls_server_ssl(t, "wiki.local");
	uint64_t t0 = s_now_ns();
	h = s_handshake(c, s);
	uint64_t t1 = s_now_ns();
	print_message("tls: resumed interception handshake in memory %.1f us (both sides)\n",
	              (double)(t1 - t0) / 1e3);
	assert_true(h.c_ok);
	assert_true(h.s_ok);
	assert_int_equal(SSL_session_reused(s), 1);
	SSL_shutdown(c);
	SSL_free(c);
	SSL_free(s);

	/* Control for what follows: a client offering this session for
	 * other.local is resumed when only the session id context (SHA-256
	 * of the host) is made to match. */
	unsigned char sid[32];
	SHA256((const unsigned char *)"wiki.local", 10, sid);
	c = s_client(cctx, "other.local", "other.local");
	assert_true(SSL_SESSION_is_resumable(sess));
	assert_true(SSL_set_session(c, sess));
	s = cp_tls_server_ssl(t, "other.local");
	assert_true(SSL_set_session_id_context(s, sid, sizeof sid));
	h = s_handshake(c, s);
	assert_true(h.s_ok);
	assert_int_equal(SSL_session_reused(s), 1);
	SSL_shutdown(c);
	SSL_free(c);
	SSL_free(s);

	/* The real thing: refused, a full handshake instead. */
	c = s_client(cctx, "other.local", "other.local");
	assert_true(SSL_SESSION_is_resumable(sess));
	assert_true(SSL_set_session(c, sess));
	s = cp_tls_server_ssl(t, "other.local");
	h = s_handshake(c, s);
	assert_true(h.c_ok);
	assert_true(h.s_ok);
	assert_int_equal(SSL_session_reused(s), 0);
	assert_int_equal(SSL_get_verify_result(c), X509_V_OK);
	SSL_shutdown(c);
	SSL_free(c);
	SSL_free(s);

	SSL_SESSION_free(sess);
	SSL_CTX_free(cctx);
	cp_tls_destroy(&t);
}

/* ---- the upstream side -------------------------------------------------- */

/* A plain server presenting the leaf cp_tls minted for host (no SNI check):
 * stands for an upstream. */
static SSL *
s_upstream(cp_tls_t *t, const char *host, SSL_CTX **ctx_p)
{
	SSL *minted = cp_tls_server_ssl(t, host);
	assert_non_null(minted);
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(ctx);
	assert_true(SSL_CTX_use_certificate(ctx, SSL_get_certificate(minted)));
	assert_true(SSL_CTX_use_PrivateKey(ctx, SSL_get_privatekey(minted)));
	SSL_free(minted);
	SSL *s = SSL_new(ctx);
	assert_non_null(s);
	SSL_set_accept_state(s);
	*ctx_p = ctx;
	return s;
}

static void
test_client(void **state)
{
	(void)state;
	char dir[128], key[160], crt[160], proto[32];
	s_make_ca("client", dir, sizeof dir, key, crt, sizeof key);
	cp_tls_t *t = s_tls_ok(dir, NULL);
	cp_tls_t *up = s_tls_ok(dir, crt); /* trusts ca.crt for upstreams */
	SSL_CTX *sctx;

	/* The right name: verified, SNI sent, ALPN http/1.1 offered. */
	SSL *s = s_upstream(t, "a.test", &sctx);
	SSL *c = cp_tls_client_ssl(up, "a.test");
	assert_non_null(c);
	hs_t h = s_handshake(c, s);
	assert_true(h.c_ok);
	assert_true(h.s_ok);
	assert_int_equal(SSL_get_verify_result(c), X509_V_OK);
	assert_string_equal(SSL_get_servername(s, TLSEXT_NAMETYPE_host_name), "a.test");
	s_exchange(c, s);
	SSL_free(c);
	SSL_free(s);

	/* A certificate for a.test where b.test was asked for. */
	s = SSL_new(sctx);
	SSL_set_accept_state(s);
	c = cp_tls_client_ssl(up, "b.test");
	h = s_handshake(c, s);
	assert_false(h.c_ok);
	assert_int_equal(h.c_reason, SSL_R_CERTIFICATE_VERIFY_FAILED);
	assert_int_equal(SSL_get_verify_result(c), X509_V_ERR_HOSTNAME_MISMATCH);
	SSL_free(c);
	SSL_free(s);

	/* The system trust store does not know the platform CA. */
	s = SSL_new(sctx);
	SSL_set_accept_state(s);
	c = cp_tls_client_ssl(t, "a.test");
	h = s_handshake(c, s);
	assert_false(h.c_ok);
	assert_int_equal(SSL_get_verify_result(c), X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
	SSL_free(c);
	SSL_free(s);
	SSL_CTX_free(sctx);

	/* An IP address: no SNI, the address checked. */
	s = s_upstream(t, "127.0.0.1", &sctx);
	c = cp_tls_client_ssl(up, "127.0.0.1");
	h = s_handshake(c, s);
	assert_true(h.c_ok);
	assert_int_equal(SSL_get_verify_result(c), X509_V_OK);
	assert_null(SSL_get_servername(s, TLSEXT_NAMETYPE_host_name));
	SSL_free(c);
	SSL_free(s);
	s = SSL_new(sctx);
	SSL_set_accept_state(s);
	c = cp_tls_client_ssl(up, "127.0.0.2");
	h = s_handshake(c, s);
	assert_false(h.c_ok);
	assert_int_equal(SSL_get_verify_result(c), X509_V_ERR_IP_ADDRESS_MISMATCH);
	SSL_free(c);
	SSL_free(s);
	SSL_CTX_free(sctx);

	/* Both halves of an interception together. */
	s = cp_tls_server_ssl(t, "wiki.local");
	c = cp_tls_client_ssl(up, "wiki.local");
	h = s_handshake(c, s);
	assert_true(h.c_ok);
	assert_true(h.s_ok);
	s_alpn(c, proto, sizeof proto);
	assert_string_equal(proto, "http/1.1");
	s_exchange(c, s);
	SSL_free(c);
	SSL_free(s);

	cp_tls_destroy(&t);
	cp_tls_destroy(&up);
}

/* One upstream connection to the server context sctx: whether it resumed. */
static bool
s_upstream_conn(cp_tls_t *up, SSL_CTX *sctx, const char *host, hs_t *h, uint64_t *ns)
{
	SSL *s = SSL_new(sctx);
	assert_non_null(s);
	SSL_set_accept_state(s);
	SSL *c = cp_tls_client_ssl(up, host);
	assert_non_null(c);
	uint64_t t0 = s_now_ns();
	*h = s_handshake(c, s);
	if (ns != NULL)
		*ns = s_now_ns() - t0;
	bool reused = SSL_session_reused(c) == 1;
	if (h->c_ok && h->s_ok) {
		assert_int_equal(SSL_get_verify_result(c), X509_V_OK);
		s_exchange(c, s); /* the client reads the TLS 1.3 tickets */
	}
	/* No close_notify, as connections often end: the cached copy of the
	 * session must survive it. */
	SSL_free(c);
	SSL_free(s);
	return reused;
}

/* Upstream sessions are cached per host and resumed by the next connection. */
static void
test_client_resumption(void **state)
{
	(void)state;
	char dir[128], key[160], crt[160];
	s_make_ca("upresume", dir, sizeof dir, key, crt, sizeof key);
	cp_tls_t *t = s_tls_ok(dir, NULL);
	cp_tls_t *up = s_tls_ok(dir, crt);
	SSL_CTX *sctx;
	SSL_free(s_upstream(t, "a.test", &sctx));
	hs_t h;
	uint64_t full_ns, resumed_ns;

	/* TLS 1.3: each connection resumes with a ticket the one before
	 * brought. */
	assert_false(s_upstream_conn(up, sctx, "a.test", &h, &full_ns));
	assert_true(h.c_ok && h.s_ok);
	assert_true(s_upstream_conn(up, sctx, "a.test", &h, &resumed_ns));
	assert_true(h.c_ok && h.s_ok);
	assert_true(s_upstream_conn(up, sctx, "a.test", &h, NULL));
	assert_true(h.c_ok && h.s_ok);
	print_message("tls: upstream handshake in memory, full %.1f us, resumed %.1f us\n",
	              (double)full_ns / 1e3, (double)resumed_ns / 1e3);
	/* Never offered to another host: b.test gets a full handshake, and
	 * the certificate for a.test fails it. */
	assert_false(s_upstream_conn(up, sctx, "b.test", &h, NULL));
	assert_false(h.c_ok);
	assert_int_equal(h.c_reason, SSL_R_CERTIFICATE_VERIFY_FAILED);
	/* An instance with another trust store has sessions of its own. */
	cp_tls_t *up2 = s_tls_ok(dir, crt);
	assert_false(s_upstream_conn(up2, sctx, "a.test", &h, NULL));
	assert_true(h.c_ok && h.s_ok);
	cp_tls_destroy(&up2);
	SSL_CTX_free(sctx);

	/* TLS 1.2: the session stays cached and is resumed again and again. */
	SSL_free(s_upstream(t, "c.test", &sctx));
	assert_true(SSL_CTX_set_max_proto_version(sctx, TLS1_2_VERSION));
	assert_false(s_upstream_conn(up, sctx, "c.test", &h, NULL));
	assert_true(h.c_ok && h.s_ok);
	assert_true(s_upstream_conn(up, sctx, "c.test", &h, NULL));
	assert_true(h.c_ok && h.s_ok);
	assert_true(s_upstream_conn(up, sctx, "c.test", &h, NULL));
	assert_true(h.c_ok && h.s_ok);
	SSL_CTX_free(sctx);

	cp_tls_destroy(&t);
	cp_tls_destroy(&up);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ca_create),
	    cmocka_unit_test(test_ca_reuse),
	    cmocka_unit_test(test_ca_key_mode),
	    cmocka_unit_test(test_ca_key_symlink),
	    cmocka_unit_test(test_ca_bad_files),
	    cmocka_unit_test(test_ca_crt_missing),
	    cmocka_unit_test(test_leaf),
	    cmocka_unit_test(test_bad_hosts),
	    cmocka_unit_test(test_cache),
	    cmocka_unit_test(test_server_handshake),
	    cmocka_unit_test(test_resumption),
	    cmocka_unit_test(test_client),
	    cmocka_unit_test(test_client_resumption),
	};
	return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
