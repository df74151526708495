"""Model and adapter sources as the engine sees them: pvc://<claim>/<path> -> /mnt/pvc/<claim>/<path>."""

from __future__ import annotations

from sglang_operator import names
from sglang_operator.spec import ModelSpec, pvc_source


def engine_path(source: str) -> str:
    pvc = pvc_source(source)
    return f"{names.PVC_MOUNT_ROOT}/{pvc[0]}/{pvc[1]}" if pvc else source


def pvc_claims(spec: ModelSpec) -> list[str]:
    """Claims to mount read-only, sorted: the model's and every adapter's.

    An adapter on a claim not yet mounted needs a new volume, so adding it rolls the pods (the one adapter
    change that does); adapters on an already-mounted claim or from the Hub never do.
    """
    sources = [spec.model, *(a.source for a in spec.lora_adapters)]
    return sorted({pvc[0] for s in sources if (pvc := pvc_source(s))})
