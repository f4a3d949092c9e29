/* libahp: dropping root for good (priv.h). */
#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ahp/log.h"
#include "ahp/priv.h"
#include "ahp/util.h"

int
ahp_priv_drop(const char *user, const char *own_dir, int flags)
{
	if (geteuid() != 0 || user == NULL || user[0] == '\0')
		return 0;
	struct passwd *pw = getpwnam(user);
	if (pw == NULL)
		fatalx("user \"%s\" does not exist (create it, or set user = \"\")", user);
	if (pw->pw_uid == 0)
		fatalx("user \"%s\" is root: name an unprivileged user", user);
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	if (own_dir != NULL && own_dir[0] != '\0') {
		/* Made and given away while still root: the user alone may enter it. */
		if (ahp_mkdirs(own_dir, 0700) != 0)
			fatal("mkdir %s", own_dir);
		struct stat st;
		if (stat(own_dir, &st) == 0 && st.st_uid != uid && chown(own_dir, uid, gid) != 0)
			fatal("chown %s", own_dir);
	}
	if (setgroups(1, &gid) != 0)
		fatal("setgroups");
	if (setresgid(gid, gid, gid) != 0)
		fatal("setresgid");
	if (setresuid(uid, uid, uid) != 0)
		fatal("setresuid");
	if (setuid(0) == 0 || seteuid(0) == 0)
		fatalx("privilege drop: root could be regained");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		fatal("prctl(PR_SET_NO_NEW_PRIVS)");
	if ((flags & AHP_PRIV_NOT_DUMPABLE) && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		fatal("prctl(PR_SET_DUMPABLE)");
	log_info("running as user=%s uid=%u gid=%u", user, (unsigned)uid, (unsigned)gid);
	return 1;
}
