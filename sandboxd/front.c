/*
 * sandboxd, the program people and scripts run: a lean front.
 *
 * `sandboxd exec` (cli.c) and --version run here; every other command
 * (serve, policy, --check-config, --health, --help, and anything it does
 * not know) execve()s the full program with the same argv. The front links
 * libc, protobuf-c and common's util/cfg/text only: a one-shot's cost is
 * mostly process start, and the full program loads 27 libraries (libzmq
 * alone adds ~2 ms). The full program is ../libexec/ahp/sandboxd relative
 * to this binary's own directory, found through /proc/self/exe (never
 * PATH): build/bin/sandboxd runs build/libexec/ahp/sandboxd, and an image
 * with /usr/local/bin/sandboxd has /usr/local/libexec/ahp/sandboxd. The pid
 * stays the same across the execve (scripts and tests wait on it).
 */
#include <errno.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ahp/text.h"
#include "ahp/util.h"
#include "sbx.h"

#define S_FULL_REL "../libexec/ahp/sandboxd"
/* The front's own failure (no /proc, no full program, its configuration):
 * 125, as `sandboxd exec` and docker / env use it, never a code a command
 * or the full program's own errors (1, 2) could mean (docs/operations.md). */
#define S_EXIT_OWN 125

/* Replaces this process with the full program. Returns only on failure
 * (S_EXIT_OWN, with the reason on stderr). */
static int
s_exec_full(char **argv)
{
	char self[PATH_MAX], path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0) {
		fprintf(stderr,
		        "sandboxd: cannot find the full program: /proc/self/exe: %s (is /proc "
		        "mounted?)\n",
		        strerror(errno));
		return S_EXIT_OWN;
	}
	self[n] = '\0';
	char *slash = strrchr(self, '/');
	if (slash == NULL) {
		fprintf(stderr, "sandboxd: /proc/self/exe is not a path: %s\n", self);
		return S_EXIT_OWN;
	}
	*slash = '\0';
	if (snprintf(path, sizeof(path), "%s/%s", self, S_FULL_REL) >= (int)sizeof(path)) {
		fprintf(stderr, "sandboxd: the install path is too long\n");
		return S_EXIT_OWN;
	}
	execv(path, argv);
	ahp_term_printf(stderr, "sandboxd: cannot run the full program %s: %s\n", path,
	                strerror(errno));
	return S_EXIT_OWN;
}

#ifndef __GLIBC__
/* dl_iterate_phdr callback: makes the PT_GNU_RELRO pages read-only (1), as glibc's
 * static-pie start does itself (and as ld.so does for a dynamic program). */
static int
s_relro_phdr(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	(void)arg;
	long page = sysconf(_SC_PAGESIZE);
	for (int i = 0; i < info->dlpi_phnum && page > 0; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_GNU_RELRO)
			continue;
		uintptr_t start = (info->dlpi_addr + ph->p_vaddr) & ~(uintptr_t)(page - 1);
		uintptr_t end =
		    (info->dlpi_addr + ph->p_vaddr + ph->p_memsz) & ~(uintptr_t)(page - 1);
		if (end > start && mprotect((void *)start, end - start, PROT_READ) != 0)
			return -1;
	}
	return 1; /* the program itself comes first: nothing else to see */
}
#endif

int
main(int argc, char **argv)
{
#ifndef __GLIBC__
	/* Linked with musl (CMakeLists.txt: glibc's start costs 0.65 ms in a VM), whose
	 * static-pie start relocates but leaves RELRO writable: seal it before anything
	 * is read. */
	if (dl_iterate_phdr(s_relro_phdr, NULL) < 0) {
		fprintf(stderr, "sandboxd: RELRO: %s\n", strerror(errno));
		return S_EXIT_OWN;
	}
#endif
	const char *home_flag = NULL;
	const char *sets[64];
	int n_sets = 0, i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--version") == 0) {
			printf("sandboxd %s\n", AHP_VERSION);
			return 0;
		}
		if (strcmp(a, "--home") == 0 && i + 1 < argc) {
			home_flag = argv[++i];
		} else if (strncmp(a, "--home=", 7) == 0) {
			home_flag = a + 7;
		} else if (strcmp(a, "--set") == 0 && i + 1 < argc &&
		           n_sets < (int)(sizeof(sets) / sizeof(sets[0]))) {
			sets[n_sets++] = argv[++i];
		} else if (a[0] == '-') {
			return s_exec_full(argv); /* --help, --health, ..., or its error */
		} else {
			break;
		}
	}
	if (i >= argc || strcmp(argv[i], "exec") != 0)
		return s_exec_full(argv);
	const char *home = ahp_home(home_flag);
	char err[512], sock[108];
	ahp_cfg_t *c = NULL;
	int rc = sbx_conf_load(home, sets, n_sets, &c, err, sizeof(err));
	if (rc == 0)
		rc = sbx_conf_exec_socket(c, home, sock, sizeof(sock), err, sizeof(err));
	ahp_cfg_destroy(&c);
	if (rc != 0) {
		ahp_term_printf(stderr, "sandboxd: %s\n", err);
		return S_EXIT_OWN;
	}
	return sbx_cli_exec(home, sock, argc - i - 1, argv + i + 1);
}
