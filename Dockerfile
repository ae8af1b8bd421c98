# Dockerfile: one image with every daemon; docker-compose.yml picks the command.
FROM debian:12-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config protobuf-c-compiler libprotobuf-c-dev \
      librabbitmq-dev libpq-dev libhiredis-dev libmicrohttpd-dev libcmocka-dev \
      libjansson-dev libsodium-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DORDERS_WERROR=ON \
    && cmake --build /build -j"$(nproc)" \
    && install -D -t /out/bin /build/api/orders-api /build/consumers/orders-inventory \
         /build/consumers/orders-payment /build/consumers/orders-order \
         /build/consumers/orders-cart /build/tools/orderctl \
    && install -D -t /out/share/orders /src/tools/migrate.sh \
    && cp -r /src/migrations /out/share/orders/

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      librabbitmq4 libpq5 libhiredis0.14 libmicrohttpd12 libprotobuf-c1 \
      libjansson4 libsodium23 postgresql-client curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --shell /usr/sbin/nologin orders
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build /out/share/orders/ /usr/local/share/orders/
USER orders
EXPOSE 8080 9101 9102 9103 9104
CMD ["orders-api"]
