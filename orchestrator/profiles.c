/* orchestrator: the loaded profile set, shared by runs through a reference count, and SIGHUP
 * reload. */
#include <stdlib.h>
#include <string.h>

#include "ahp/log.h"

#include "orch.h"

static void
s_on_error(void *arg, const char *message)
{
	(void)arg;
	log_error("profile skipped: %s", message);
}

/* Tools a profile may list that this orchestrator does not offer (a skill
 * tool without skills). Once per profile and load. */
static void
s_note_missing_tools(const ahp_profile_t *p)
{
	for (unsigned i = 0; i < p->n_tools; i++) {
		const char *t = p->tools[i];
		if (!orch_tool_offered(p, t))
			log_warn(
			    "profile %s lists tool %s, which this orchestrator does not provide "
			    "yet; it is not offered to the model",
			    p->name, t);
	}
}

static void
s_warn_line(void *arg, const char *line)
{
	(void)arg;
	log_warn("%s", line);
}

orch_profset_t *
orch_profset_load(const char *dir, const char *etc_dir)
{
	orch_profset_t *ps = calloc(1, sizeof *ps);
	if (ps == NULL)
		return NULL;
	ps->set = ahp_profiles_load_dir(dir, etc_dir, s_on_error, NULL);
	if (ps->set == NULL) {
		log_error("cannot load profiles from %s", dir);
		free(ps);
		return NULL;
	}
	ps->refs = 1;
	static uint64_t generation;
	ps->generation = ++generation;
	for (size_t i = 0; i < ahp_profiles_warning_count(ps->set); i++)
		log_warn("%s", ahp_profiles_warning(ps->set, i));
	for (size_t i = 0; i < ahp_profiles_count(ps->set); i++) {
		s_note_missing_tools(ahp_profiles_at(ps->set, i));
		ahp_profile_warnings(ahp_profiles_at(ps->set, i), s_warn_line, NULL);
	}
	return ps;
}

orch_profset_t *
orch_profset_ref(orch_profset_t *ps)
{
	if (ps != NULL)
		ps->refs++;
	return ps;
}

void
orch_profset_unref(orch_profset_t **ps_p)
{
	if (ps_p == NULL || *ps_p == NULL)
		return;
	orch_profset_t *ps = *ps_p;
	*ps_p = NULL;
	if (--ps->refs > 0)
		return;
	ahp_profiles_destroy(&ps->set);
	free(ps);
}

/* The profile of the old set that came from path, if any. */
static const ahp_profile_t *
s_from_file(const ahp_profiles_t *set, const char *path)
{
	for (size_t i = 0; i < ahp_profiles_count(set); i++) {
		const ahp_profile_t *p = ahp_profiles_at(set, i);
		if (p->path != NULL && strcmp(p->path, path) == 0)
			return p;
	}
	return NULL;
}

/* An edit that breaks a profile must not take it away from the runs that
 * use it: for each file the new load refused, the version that file loaded
 * last time keeps serving under its name — also when another file, refused
 * before as a duplicate of that name, now loads alone. The refusal stays recorded in the new set
 * for orch_profiles_why. A file that was removed takes its profile away. */
void
orch_profiles_reload(orch_t *o)
{
	orch_profset_t *ps = orch_profset_load(o->profiles_dir, o->etc_dir);
	if (ps == NULL) {
		log_error("profile reload failed; keeping the %zu loaded profiles",
		          ahp_profiles_count(o->profiles->set));
		return;
	}
	size_t kept = 0;
	for (size_t i = 0; i < ahp_profiles_errors(ps->set); i++) {
		const char *path = ahp_profiles_failed_path(ps->set, i);
		const ahp_profile_t *old = path ? s_from_file(o->profiles->set, path) : NULL;
		if (old == NULL)
			continue;
		const ahp_profile_t *cur = ahp_profiles_get(ps->set, old->name);
		if (cur != NULL && strcmp(cur->path, old->path) != 0) {
			/* Another file claims the name only because the file that held
			 * it broke (it was a refused duplicate before): the name stays
			 * with its file's last good version, the claimant stays refused. */
			char msg[1200];
			snprintf(msg, sizeof msg,
			         "%s: profile name '%s' is already used by %s (kept at its last "
			         "good version while that file is broken)",
			         cur->path, old->name, old->path);
			if (ahp_profiles_replace(ps->set, old, msg) != 0)
				continue;
			kept++;
			log_warn("%s", msg);
			log_warn("profile %s: keeping the last good version; the edited file was "
			         "refused: %s",
			         old->name, ahp_profiles_failed_error(ps->set, i));
			continue;
		}
		if (cur != NULL)
			continue;
		if (ahp_profiles_add(ps->set, old) != 0) {
			log_error("profile %s: out of memory keeping the last good version",
			          old->name);
			continue;
		}
		kept++;
		log_warn("profile %s: keeping the last good version; the edited file was "
		         "refused: %s",
		         old->name, ahp_profiles_failed_error(ps->set, i));
	}
	/* Running runs keep the set they started with until they end. */
	orch_profset_unref(&o->profiles);
	o->profiles = ps;
	log_info("profiles reloaded: %zu loaded (%zu last good kept), %zu refused",
	         ahp_profiles_count(ps->set), kept, ahp_profiles_errors(ps->set));
}

const char *
orch_profiles_why(const orch_t *o, const char *name)
{
	const ahp_profiles_t *set = o && o->profiles ? o->profiles->set : NULL;
	for (size_t i = 0; name && i < ahp_profiles_errors(set); i++) {
		const char *n = ahp_profiles_failed_name(set, i);
		if (n != NULL && strcmp(n, name) == 0)
			return ahp_profiles_failed_error(set, i);
	}
	return NULL;
}
