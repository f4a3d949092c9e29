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

/* Tools a profile may list whose daemons this build does not talk to yet.
 * They are not offered to the model; said once per profile and load. */
static void
s_note_missing_tools(const ahp_profile_t *p)
{
	for (unsigned i = 0; i < p->n_tools; i++) {
		if (!orch_tool_offered(p, p->tools[i]))
			log_warn(
			    "profile %s lists tool %s, which this orchestrator does not provide "
			    "yet; it is not offered to the model",
			    p->name, p->tools[i]);
	}
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
	for (size_t i = 0; i < ahp_profiles_count(ps->set); i++)
		s_note_missing_tools(ahp_profiles_at(ps->set, i));
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

void
orch_profiles_reload(orch_t *o)
{
	orch_profset_t *ps = orch_profset_load(o->profiles_dir, o->etc_dir);
	if (ps == NULL) {
		log_error("profile reload failed; keeping the %zu loaded profiles",
		          ahp_profiles_count(o->profiles->set));
		return;
	}
	/* Running runs keep the set they started with until they end. */
	orch_profset_unref(&o->profiles);
	o->profiles = ps;
	log_info("profiles reloaded: %zu loaded, %zu skipped", ahp_profiles_count(ps->set),
	         ahp_profiles_errors(ps->set));
}
