# qpoold container image, Debian 12, built from this repository.
#
#   docker build -t qpool:dev .
#   docker run --rm --network host qpool:dev --upstream 127.0.0.1:6335
#
# As a Kubernetes sidecar (deploy/kubernetes/), qpoold listens on 127.0.0.1:6334 inside the pod,
# where the app reaches it, and serves its admin endpoint (/metrics, /livez, /readyz, /startupz)
# on the pod's address for the kubelet and Prometheus. The image's HEALTHCHECK runs
# `qpoold healthcheck` against /readyz on 127.0.0.1:6336 (the default admin address; an admin
# address on "[::]" or "0.0.0.0" answers there too): the image has no curl.
FROM debian:12-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config ca-certificates \
      libnghttp2-dev libboost-dev libboost-system-dev \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
      libyaml-cpp-dev prometheus-cpp-dev libspdlog-dev libfmt-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake --preset release -DQPOOL_BUILD_BENCHMARKS=OFF \
 && cmake --build --preset release --target qpoold \
 && mkdir -p /out \
 && cp build/release/bin/qpoold /out/ \
 && scripts/runtime-packages /out/qpoold > /out/runtime-packages

FROM debian:12-slim
COPY --from=build /out/runtime-packages /tmp/runtime-packages
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive xargs -a /tmp/runtime-packages \
      apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages
COPY --from=build /out/qpoold /usr/local/bin/qpoold
COPY config/qpool.yaml /etc/qpool/qpool.example.yaml
COPY LICENSE /usr/share/doc/qpool/LICENSE
# An unprivileged user; qpoold needs no capabilities (its ports are above 1024).
USER 65532:65532
EXPOSE 6334 6336
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/qpoold", "healthcheck", "--url", "http://127.0.0.1:6336/readyz", "--timeout", "2s"]
ENTRYPOINT ["/usr/local/bin/qpoold"]
