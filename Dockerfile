# syntax=docker/dockerfile:1
# Dockerfile: the orders images, built in stages from one source tree.
#
#   docker build -t orders .                             # target runtime: the daemons, orderctl
#   docker build --target migrate -t orders-migrate .    # the one-shot migration job
#
# build    compiles the five daemons, orderctl and orders-healthcheck; every -dev package
#          lives only here
# base     Debian bookworm-slim, the runtime libraries and nothing else, user orders (10001)
# migrate  base + psql, tools/migrate.sh, migrations/ and orderctl: `orderctl migrate`, then exit
# runtime  base + the daemons and orderctl (the default target). CMD is orders-api; run a
#          consumer by giving its name as the command (orders-inventory, orders-payment,
#          orders-order, orders-cart): docker-compose.yml and deploy/k8s/ do so.
#
# The daemons run as uid/gid 10001 (numeric, so that Kubernetes' runAsNonRoot can check it)
# and write nothing to the image's file system: it can be mounted read-only.

ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       build-essential cmake pkg-config protobuf-c-compiler libprotobuf-c-dev \
       librabbitmq-dev libpq-dev libhiredis-dev libmicrohttpd-dev libcmocka-dev \
       libjansson-dev libsodium-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# .dockerignore lets in only the sources CMake needs (an allowlist).
COPY . .
# Only what the images ship is built; the tests run in `make test`, not here.
# Stripped: the images carry no debug information.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DORDERS_WERROR=ON \
    && cmake --build /build -j"$(nproc)" --target orders-api orders-inventory \
       orders-payment orders-order orders-cart orderctl orders-healthcheck \
    && install -D -s -m 0755 -t /out/bin /build/api/orders-api \
       /build/consumers/orders-inventory /build/consumers/orders-payment \
       /build/consumers/orders-order /build/consumers/orders-cart /build/tools/orderctl \
       /build/tools/orders-healthcheck \
    && install -D -m 0755 tools/migrate.sh /out/share/orders/migrate.sh \
    && install -D -m 0644 -t /out/share/orders/migrations migrations/*.sql

# The libraries the binaries link (readelf -d: NEEDED) and nothing else; their own
# dependencies (libgnutls30 for libmicrohttpd12, libssl3 for libpq5, ...) come with them.
FROM ${DEBIAN_IMAGE} AS base
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       librabbitmq4 libpq5 libhiredis0.14 libmicrohttpd12 libprotobuf-c1 \
       libjansson4 libsodium23 libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 orders \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin orders
# Amazon RDS's CA bundle (every region's CAs): the DSNs verify the database's certificate
# and name against it (sslmode=verify-full&sslrootcert=/usr/local/share/orders/rds-ca.pem).
# Amazon MQ's certificates chain to public CAs: ca-certificates above covers amqps://.
ADD --chmod=644 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem \
    /usr/local/share/orders/rds-ca.pem
# In a container the daemons must listen on every interface (the default is loopback).
ENV ORDERS_HTTP_BIND=0.0.0.0
LABEL org.opencontainers.image.title="orders" \
      org.opencontainers.image.description="Order-processing backend: API and queue consumers" \
      org.opencontainers.image.base.name="debian:bookworm-slim"

# The migration job: orderctl migrate runs /usr/local/share/orders/migrate.sh (found beside
# the binary as ../share/orders), which needs psql and takes ORDERS_PG_DSN. It writes its
# generated script with mktemp: give it a writable /tmp (an emptyDir in Kubernetes).
FROM base AS migrate
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-15 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/bin/orderctl /usr/local/bin/orderctl
COPY --from=build /out/share/orders/ /usr/local/share/orders/
USER 10001:10001
# A one-shot job: there is nothing to health-check.
HEALTHCHECK NONE
ENTRYPOINT ["orderctl", "migrate"]

FROM base AS runtime
COPY --from=build /out/bin/ /usr/local/bin/
USER 10001:10001
# The API's port, then the consumers' ops ports (inventory, payment, order, cart).
EXPOSE 8080 9101 9102 9103 9104
STOPSIGNAL SIGTERM
# Liveness of whichever daemon runs: orders-healthcheck finds its port, and speaks HTTPS to
# an API with ORDERS_TLS_CERT_FILE set (tools/healthcheck/main.c).
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["orders-healthcheck", "healthz"]
CMD ["orders-api"]
