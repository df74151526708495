"""app.kubernetes.io labels on every child; the selector is the stable subset (never the version)."""

from __future__ import annotations

import re

from sglang_operator import names

APP_NAME = "sglang-engine"
MANAGER = "sglang-operator"
MANAGED_BY = "app.kubernetes.io/managed-by"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
# The operator's children are found by this selector (child watches and the RBAC-scoped lists).
MANAGED_SELECTOR = {MANAGED_BY: MANAGER}


def selector(cr_name: str) -> dict[str, str]:
    """Pod selector of the Deployment, Service and PDB (immutable in a Deployment: keep it minimal)."""
    return {"app.kubernetes.io/name": APP_NAME, INSTANCE: names.instance(cr_name)}


ROUTER_APP_NAME = "sglang-router"


def router_selector(cr_name: str) -> dict[str, str]:
    """Pod selector of the router's Deployment (and of the model's Service while the router is on)."""
    return {"app.kubernetes.io/name": ROUTER_APP_NAME, INSTANCE: names.instance(cr_name)}


def selector_string(cr_name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector(cr_name).items()))


def version_label(image: str) -> str:
    """A label-safe version from the image tag (or digest), e.g. ghcr.io/x/engine:0.1.0 -> 0.1.0."""
    ref = image.rsplit("/", 1)[-1]
    if "@" in ref:  # a digest: its first hex digits
        tag = ref.split("@", 1)[1].split(":", 1)[-1][:12]
    else:
        tag = ref.split(":", 1)[1] if ":" in ref else "latest"
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", tag)[:63].strip("-_.")
    return tag or "latest"


def child_labels(cr_name: str, component: str, image: str) -> dict[str, str]:
    return {
        **(router_selector(cr_name) if component == "router" else selector(cr_name)),
        COMPONENT: component,
        "app.kubernetes.io/part-of": MANAGER,
        MANAGED_BY: MANAGER,
        "app.kubernetes.io/version": version_label(image),
    }
