# syntax=docker/dockerfile:1
# Two images from one file; build from the repository root:
#   docker build --target operator -t ghcr.io/sglang-operator/sglang-operator:0.1.0 .
#   docker build --target engine   -t ghcr.io/sglang-operator/sglang-engine:0.1.0 .
# Pins that must move together (tests/packaging/test_packaging_lint.py: test_pins_agree_with_the_project):
#   VERSION      = [project].version in pyproject.toml (and the chart's appVersion)
#   SGLANG_IMAGE = the official SGLang image of the SGLang version the engine targets (0.5.23).
# Every pip install takes hashed lock files (requirements/*.txt, written by scripts/lock_images.py from
# pyproject.toml; tests/packaging/test_image_locks.py). The base images are pinned by tag, not digest: see
# docs/security.md (no image registry is reachable where the project is developed, so no digest is invented).
ARG VERSION=0.1.0
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG SGLANG_IMAGE=lmsysorg/sglang:v0.5.23

# ---- wheel: the project is pure Python; build it once and install it into both targets.
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY requirements/build.txt /tmp/build.txt
RUN pip install --no-cache-dir --require-hashes -r /tmp/build.txt
COPY pyproject.toml README.md ./
COPY engine/ engine/
COPY operator/ operator/
# No build isolation: the hashed setuptools above builds it, nothing floating is fetched.
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

# ---- operator: slim Python, only the operator's dependencies (kopf, kubernetes client; no torch).
FROM ${PYTHON_IMAGE} AS operator
ARG VERSION
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels /wheels
COPY requirements/operator-image.txt /tmp/requirements.txt
# The whole closure from the lock (every package pinned and hashed), then the project alone.
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.txt \
    && pip install --no-cache-dir --no-deps "/wheels/sglang_operator-${VERSION}-py3-none-any.whl" \
    && rm -rf /wheels /tmp/requirements.txt \
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
COPY requirements/engine-image.txt /tmp/requirements.txt
# --no-deps: SGLang's image already has torch, transformers, aiohttp, pydantic, pyyaml and prometheus-client,
# and reinstalling any of them (torch above all) could break SGLang's pinned stack. peft (and accelerate, which
# peft imports) are what it lacks: the transformers backend loads LoRA adapters with them (hashed lock).
# PIP_BREAK_SYSTEM_PACKAGES: the image's Python is the distribution's; installing into it is its intended use.
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-deps --require-hashes \
        -r /tmp/requirements.txt \
    && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-deps \
        "/wheels/sglang_operator-${VERSION}-py3-none-any.whl" \
    && rm -rf /wheels /tmp/requirements.txt \
    && mkdir -p /cache /models \
    && chown 1000:0 /cache /models \
    && chmod g=u /cache /models
# Engine pods run as UID 1000 (runAsUser; the base image may already name it, so no useradd) with a read-only
# root filesystem: every cache lives under /cache (an emptyDir in the pod, owned by 1000 here so `docker run`
# works too) and the Hugging Face cache under /models (the model cache PVC or an emptyDir). HOME points into
# /cache because Triton, FlashInfer and others write below it. Group 0 keeps them writable under an arbitrary
# UID (OpenShift). The values match the pod anatomy in operator/sglang_operator/builders/deployment.py.
ENV HOME=/cache/home \
    USER=engine \
    XDG_CACHE_HOME=/cache \
    TRITON_CACHE_DIR=/cache/triton \
    SGLANG_ENGINE_CACHE=/cache/sglang-engine \
    HF_HOME=/models/hf
USER 1000:1000
WORKDIR /cache
# 8000: the OpenAI-compatible API (and probes, /status, /metrics); 8001: probes, /status and /metrics alone,
# when started with --probe-port 8001 as the operator does. SGLang listens on 127.0.0.1:30000 inside the pod.
EXPOSE 8000 8001
ENTRYPOINT ["sglang-engine"]
# Default: the built-in tiny model on CPU (`docker run -p 8000:8000 IMAGE`); the operator sets its own args.
CMD ["serve", "--model", "builtin:tiny", "--backend", "transformers", "--host", "0.0.0.0", "--port", "8000"]
