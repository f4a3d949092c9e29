# The platform's image: every daemon, both CLIs and the two mocks, one entrypoint
# (deploy/entrypoint DAEMON) that lays out the daemon's part of the home and starts it.
#
#   docker build -t ahp .            (compose.yaml does this: `docker compose build`)
#
# Two stages: `build` has the -dev packages of scripts/install-deps and compiles; the
# runtime stage has only the shared libraries the binaries link (worked out from their
# ldd output, so the list never goes stale), ca-certificates and curl (for the
# healthchecks of the mocks and for commands in sandboxes), e2fsprogs (sandboxd runs
# mke2fs for the sandboxes' disks; minbase has it, named here all the same), the
# system users with fixed numeric ids (the ipc sockets' SO_PEERCRED checks compare uids
# across containers), and the default configuration (deploy/etc) with the repository's
# profiles, skills and mock scenarios. No registry is reachable here:
# scripts/docker-base-image makes BASE locally.
# Only classic-builder features (docker-compose 1.29 builds without BuildKit).
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
ARG JOBS=2
ENV DEBIAN_FRONTEND=noninteractive
COPY scripts/install-deps /src/scripts/install-deps
RUN sh /src/scripts/install-deps && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN cmake -S /src -B /build >/dev/null \
	&& cmake --build /build -j "$JOBS" --target orchestrator orchctl sandboxd credproxy \
		servicesd approvald mock-llm mock-services -- --no-print-directory >/dev/null \
	&& mkdir -p /out/bin /out/libexec/ahp \
	&& for b in orchestrator orchctl sandboxd credproxy servicesd approvald mock-llm \
		mock-services; do strip -o "/out/bin/$b" "/build/bin/$b"; done \
	&& strip -o /out/libexec/ahp/sandboxd /build/libexec/ahp/sandboxd \
	&& if [ -e /build/libexec/ahp/sandboxd-init ]; then \
		strip -o /out/libexec/ahp/sandboxd-init /build/libexec/ahp/sandboxd-init; fi \
	&& for l in $(ldd /out/bin/* /out/libexec/ahp/sandboxd | awk '/=> \// { print $3 }' | sort -u); do \
		dpkg -S "$l" 2>/dev/null || dpkg -S "$(readlink -f "$l")"; \
	done | cut -d: -f1 | sort -u >/out/runtime-packages \
	&& echo "runtime packages: $(tr '\n' ' ' </out/runtime-packages)"

FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 AHP_HOME=/var/lib/ahp
COPY --from=build /out/runtime-packages /usr/local/lib/ahp/runtime-packages
RUN apt-get update -qq \
	&& apt-get install -y -qq --no-install-recommends ca-certificates curl e2fsprogs \
		$(cat /usr/local/lib/ahp/runtime-packages) >/dev/null \
	&& rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/*
# Fixed ids, the same in every container of the stack (docs/security.md, "Containers").
# Group ahp: the humans who may use orchctl and approvald's CLI (root is admitted too).
RUN groupadd --system --gid 9000 ahp \
	&& for u in orchestrator:9001 credproxy:9002 servicesd:9003 approvald:9004 \
		sandboxd:9005 mock:9006; do \
		n="ahp-${u%%:*}" i="${u##*:}"; \
		groupadd --system --gid "$i" "$n" \
		&& useradd --system --uid "$i" --gid "$i" --no-create-home \
			--home-dir /nonexistent --shell /usr/sbin/nologin "$n" || exit 1; \
	done
COPY --from=build /out/bin/ /usr/local/bin/
# sandboxd is two programs: /usr/local/bin/sandboxd, a lean front (`sandboxd exec` runs
# there, without libzmq), execs the full program at ../libexec/ahp/sandboxd for the rest;
# each sandbox's init runs ../libexec/ahp/sandboxd-init beside it (a lean static program).
COPY --from=build /out/libexec/ /usr/local/libexec/
COPY deploy/etc/ /var/lib/ahp/etc/
COPY profiles/ /var/lib/ahp/etc/profiles/
COPY skills/ /var/lib/ahp/etc/skills/
COPY mocks/mock-llm/scenarios/ /var/lib/ahp/etc/mock-llm/
COPY deploy/entrypoint /usr/local/lib/ahp/entrypoint
RUN chmod 0755 /usr/local/lib/ahp/entrypoint \
	&& mkdir -p /var/lib/ahp/run /var/lib/ahp/state /var/lib/ahp/ca \
	&& chmod 0711 /var/lib/ahp /var/lib/ahp/run /var/lib/ahp/state \
	&& chmod -R go+rX,go-w /var/lib/ahp/etc
WORKDIR /var/lib/ahp
ENTRYPOINT ["/usr/local/lib/ahp/entrypoint"]
CMD ["help"]
