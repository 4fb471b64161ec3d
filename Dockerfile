# syntax=docker/dockerfile:1
# Lookout as a container: run it with the host's / mounted read-only at /rootfs (see docker-compose.yml,
# deploy/kubernetes/ and docs/DEPLOY.md):
#
#   docker build -t lookout .
#   docker run -d --name lookout -p 9338:9338 --read-only \
#     -v /:/rootfs:ro -v /var/run/docker.sock:/var/run/docker.sock:ro -v lookout-state:/var/lib/lookout \
#     lookout
#
# The base image is pinned by version and digest; bump both together.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY collectors ./collectors
COPY exporters ./exporters
# Wheels for Lookout and its dependencies (all have manylinux wheels: no compiler in the image).
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels lookout \
    && mkdir -p /var/lib/lookout /rootfs
LABEL org.opencontainers.image.title="lookout" \
      org.opencontainers.image.description="cAdvisor-compatible container metrics and lossless container log shipping" \
      org.opencontainers.image.licenses="Apache-2.0"
# Root, read-only: the agent reads the host's cgroups, /proc and root-owned container log files, and
# writes only its checkpoints and dead letters (mount a volume at /var/lib/lookout).
VOLUME /var/lib/lookout
EXPOSE 9338
# Docker has one health, and nothing restarts an unhealthy container but Swarm: it is what `docker ps` and Compose's
# `depends_on: condition: service_healthy` read, so it is readiness (/readyz: no cgroups under /rootfs, no collection
# yet, a route failed for good), not liveness (/healthz, the Kubernetes livenessProbe). With --tls-cert, override it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9338/readyz', timeout=4)"]
ENTRYPOINT ["lookout", "run"]
CMD ["--host-root", "/rootfs", "--log-format", "json"]
