/* Replays seed files through a fuzz harness without libFuzzer (gcc builds): the corpus as a
 * regression test. Usage: replay FILE|DIR... (a directory's regular files, in name order). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Harnesses that set up state once define this, as libFuzzer allows. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* Runs one file; the buffer is exactly its size, so ASan sees any over-read
 * as libFuzzer would. Returns 0, or -1 when the file cannot be read. */
static int
s_replay(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fileno(f), &st) != 0 || st.st_size < 0) {
		fclose(f);
		return -1;
	}
	size_t len = (size_t)st.st_size;
	uint8_t *buf = malloc(len ? len : 1);
	if (buf == NULL || fread(buf, 1, len, f) != len) {
		fprintf(stderr, "replay: %s: short read\n", path);
		free(buf);
		fclose(f);
		return -1;
	}
	fclose(f);
	fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
	LLVMFuzzerTestOneInput(len ? buf : NULL, len);
	free(buf);
	return 0;
}

static int
s_regular(const struct dirent *e)
{
	return e->d_name[0] != '.';
}

int
main(int argc, char **argv)
{
	if (LLVMFuzzerInitialize != NULL)
		LLVMFuzzerInitialize(&argc, &argv);
	size_t done = 0;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		if (!S_ISDIR(st.st_mode)) {
			if (s_replay(argv[i]) != 0)
				return 1;
			done++;
			continue;
		}
		struct dirent **names;
		int n = scandir(argv[i], &names, s_regular, alphasort);
		if (n < 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		int rc = 0;
		for (int k = 0; k < n; k++) {
			char path[4096];
			int l = snprintf(path, sizeof path, "%s/%s", argv[i], names[k]->d_name);
			if (rc == 0 && l > 0 && (size_t)l < sizeof path && stat(path, &st) == 0 &&
			    S_ISREG(st.st_mode)) {
				rc = s_replay(path);
				done++;
			}
			free(names[k]);
		}
		free(names);
		if (rc != 0)
			return 1;
	}
	/* An empty corpus would make the test pass without testing anything. */
	if (done == 0) {
		fprintf(stderr, "replay: no inputs\n");
		return 1;
	}
	printf("replay: %zu inputs, no crash\n", done);
	return 0;
}
