# syntax=docker/dockerfile:1
# Two images from one file; build from the repository root:
#   docker build --target operator -t ghcr.io/sglang-operator/sglang-operator:0.1.0 .
#   docker build --target engine   -t ghcr.io/sglang-operator/sglang-engine:0.1.0 .
# Pins that must move together (tests/packaging/test_dockerfile.py checks them):
#   VERSION      = [project].version in pyproject.toml (and the chart's appVersion)
#   SGLANG_IMAGE = the official SGLang image of the SGLang version the engine targets (0.5.23).
ARG VERSION=0.1.0
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG SGLANG_IMAGE=lmsysorg/sglang:v0.5.23

# ---- wheel: the project is pure Python; build it once and install it into both targets.
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine/ engine/
COPY operator/ operator/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- operator: slim Python, only the operator's dependencies (kopf, kubernetes client; no torch).
FROM ${PYTHON_IMAGE} AS operator
ARG VERSION
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir "/wheels/sglang_operator-${VERSION}-py3-none-any.whl[operator]" \
    && rm -rf /wheels \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin operator
# Numeric user: the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
# kopf's liveness endpoint (the chart's probes and `helm test` use it).
EXPOSE 8080
ENTRYPOINT ["sglang-operator"]
CMD ["run"]

# ---- engine: the official SGLang image (CUDA, torch, SGLang and its Python stack) with the engine on top.
FROM ${SGLANG_IMAGE} AS engine
ARG VERSION
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels /wheels
# --no-deps: SGLang's image already has torch, transformers, aiohttp, pydantic, pyyaml and prometheus-client,
# and reinstalling any of them (torch above all) could break SGLang's pinned stack. peft (and accelerate, which
# peft imports) are what it lacks: the transformers backend loads LoRA adapters with them.
# PIP_BREAK_SYSTEM_PACKAGES: the image's Python is the distribution's; installing into it is its intended use.
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-deps \
        "/wheels/sglang_operator-${VERSION}-py3-none-any.whl" peft==0.21.2 accelerate==1.15.0 \
    && rm -rf /wheels \
    && mkdir -p /home/engine/.cache /models \
    && chown -R 1000:0 /home/engine /models \
    && chmod -R g=u /home/engine /models
# UID 1000 is what the operator's engine pods run as (runAsUser; the base image may already name it, so no
# useradd). Group 0 ownership keeps the home writable under an arbitrary UID too (OpenShift). USER and HOME
# are set because some libraries ask for a user name or home directory.
# HF_HOME: the pod mounts the model cache PVC (or an emptyDir) at /models.
ENV HOME=/home/engine \
    USER=engine \
    HF_HOME=/models/hf \
    SGLANG_ENGINE_CACHE=/home/engine/.cache/sglang-engine
USER 1000:1000
WORKDIR /home/engine
# The OpenAI-compatible API, probes and metrics; SGLang itself listens on 127.0.0.1:30000 inside the pod.
EXPOSE 8000
ENTRYPOINT ["sglang-engine"]
# Default: the built-in tiny model on CPU (`docker run -p 8000:8000 IMAGE`); the operator sets its own args.
CMD ["serve", "--model", "builtin:tiny", "--backend", "transformers", "--host", "0.0.0.0", "--port", "8000"]
