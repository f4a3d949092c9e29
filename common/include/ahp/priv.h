/* Dropping root for good, OpenBSD style: the one way every daemon that starts as root and
 * does not need it becomes its own user. */
#ifndef AHP_PRIV_H
#define AHP_PRIV_H

/* Flags of ahp_priv_drop. */
#define AHP_PRIV_NOT_DUMPABLE                                                                      \
	1 /* PR_SET_DUMPABLE 0: memory that holds secrets gets no core                             \
	     dump and no ptrace from the same uid */

/* When running as root and user is not "": makes own_dir (may be NULL; its parents too)
 * mode 0700 and gives it to user, then setgroups to the user's own group only, setresgid,
 * setresuid, checks that neither setuid(0) nor seteuid(0) succeeds, and sets
 * PR_SET_NO_NEW_PRIVS (and PR_SET_DUMPABLE 0 with AHP_PRIV_NOT_DUMPABLE). Logs
 * "running as user=U uid=N gid=N". A failure is a setup failure: fatal, the daemon does
 * not start. Returns 1 when it dropped, 0 when there was nothing to drop (not root, or
 * user "": the caller says why running as root is acceptable). */
int ahp_priv_drop(const char *user, const char *own_dir, int flags);

#endif
