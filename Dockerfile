# CapLiquify edge gateway: nginx + ngx_tenant_module, on Debian 12.
#
#   docker build -t gateway .
#   docker run --rm --env-file .env gateway --check    # validate only
#   docker run --rm -p 8080:8080 --env-file .env gateway
#
# Every step below runs a project script that `make test` also runs
# (t/052-container.t): scripts/deps.sh, scripts/build-module.sh,
# scripts/entrypoint.sh.  Without Docker: scripts/image-build.sh (buildah);
# make image-test builds and runs the image (t/160-image.t).

# ---- build: the module against Debian's nginx-dev, as CI builds it --------
FROM debian:bookworm AS build
WORKDIR /src
# The packages first: a layer that a change of the sources does not undo.
COPY scripts/deps.sh scripts/
RUN scripts/deps.sh --build
COPY . .
RUN scripts/build-module.sh --no-deps /out

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# nginx-core: the nginx the module is built for; libpq5, libjansson4,
# libssl3: the module's libraries; perl (JSON::PP for CLERK_JWKS_FILE) and
# openssl: render-conf.sh; postgresql-client: migrate.sh
# (MIGRATE_ON_START=1); curl: the HEALTHCHECK; ca-certificates: https
# upstreams.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        nginx-core libpq5 libjansson4 libssl3 \
        bash perl openssl postgresql-client curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*

COPY --from=build /out/ngx_tenant_module.so /usr/lib/nginx/modules/ngx_tenant_module.so
# The template only: not the demo upstream of make run
# (conf/demo-upstream.conf.template), which the image never serves.
COPY conf/nginx.conf.template /srv/gateway/conf/
COPY migrations/ /srv/gateway/migrations/
COPY scripts/entrypoint.sh scripts/render-conf.sh scripts/migrate.sh /srv/gateway/scripts/
# sourced by render-conf.sh: worker_processes from the container's CPUs
COPY scripts/cpu-count.sh /srv/gateway/scripts/

RUN useradd --system --no-create-home --home-dir /srv/gateway \
        --shell /usr/sbin/nologin gateway \
 && install -d -o gateway -g gateway -m 0700 /run/gateway

ENV RUN_DIR=/run/gateway \
    TENANT_MODULE=/usr/lib/nginx/modules/ngx_tenant_module.so \
    PORT=8080 \
    MIGRATE_ON_START=0

USER gateway
WORKDIR /srv/gateway
EXPOSE 8080
# The entrypoint (PID 1, nginx its child) turns SIGTERM, SIGQUIT and SIGINT
# into nginx's graceful stop (SIGQUIT), bounded by SHUTDOWN_TIMEOUT (25 s):
# Render sends SIGTERM whatever this line says.  docker stop waits 10 s
# before its SIGKILL unless told otherwise (docker stop -t 30).
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${PORT}/api/health/live" >/dev/null || exit 1
ENTRYPOINT ["/srv/gateway/scripts/entrypoint.sh"]
