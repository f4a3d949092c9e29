/* sandboxd-init: the lean program a sandbox's init runs (static, with musl where it is built),
 * exec'd by the privileged parent's clone (zygote.c s_spawn); everything is in init.c. */
#include "sbx.h"

int
main(void)
{
	return sbx_init_lean_main();
}
