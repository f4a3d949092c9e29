/* A wrong row in the seccomp table fails the build of the policy: sandboxd/seccomp.c compiled
 * with one extra row (SBX_SECCOMP_TEST_ROW) must refuse to build, and say which name is wrong
 * (ctest checks the log line with PASS_REGULAR_EXPRESSION). Exit 0 when refused, 1 when built. */
#include <stdio.h>
#include <stdlib.h>

#include "ahp/log.h"
#include "sbx.h"

int
main(void)
{
	struct sock_fprog prog;

	ahp_log_init("seccomp_table_test", AHP_LOG_INFO);
	if (sbx_seccomp_build(&prog) == 0) {
		free(prog.filter);
		printf("BUILT: the wrong row was accepted\n");
		return 1;
	}
	printf("REFUSED\n");
	return 0;
}
