"""Volumes as folders, with the kubelet's atomic update of configMap and secret volumes.

Layout of a configMap/secret volume (the same as the real kubelet's "atomic writer"):
    <volume>/..2026_11_27_14_05_01.123456/<files>   one folder per version
    <volume>/..data -> ..2026_...    swapped with rename(2): readers see old or new, never half
    <volume>/<key> -> ..data/<key>                   stable names
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from sglang_dev.cluster.podplan import PodError, VolumePlan

DATA_LINK = "..data"


def project(plan: VolumePlan, data: Mapping[str, str] | None) -> dict[str, str]:
    """Files (relative path -> content) a configMap/secret volume shows; PodError names what is missing."""
    if data is None:
        if plan.optional:
            return {}
        raise PodError("CreateContainerConfigError",
                       f'volume {plan.name}: {plan.kind} "{plan.source}" not found')
    if not plan.items:
        return dict(data)
    files = {}
    for key, rel in plan.items:
        if key not in data:
            if plan.optional:
                continue
            raise PodError("CreateContainerConfigError",
                           f'volume {plan.name}: key "{key}" not found in {plan.kind} "{plan.source}"')
        if rel.startswith("/") or ".." in rel.split("/"):
            raise PodError("CreateContainerConfigError", f"volume {plan.name}: item path {rel!r} must be "
                           "relative without '..'")
        files[rel] = data[key]
    return files


def current_files(root: Path) -> dict[str, str] | None:
    """What the volume shows now (None if it was never written)."""
    data = root / DATA_LINK
    if not data.exists():
        return None
    out = {}
    for path in data.rglob("*"):
        if path.is_file():
            out[str(path.relative_to(data))] = path.read_text()
    return out


def write_atomic(root: Path, files: Mapping[str, str]) -> bool:
    """Swap the volume's content to `files` atomically; False (and no write) when it is unchanged."""
    if current_files(root) == dict(files):
        return False
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    version = root / stamp
    version.mkdir()
    for rel, content in files.items():
        target = version / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    old = os.readlink(root / DATA_LINK) if (root / DATA_LINK).is_symlink() else None
    tmp_link = root / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    tmp_link.symlink_to(stamp)
    os.replace(tmp_link, root / DATA_LINK)
    tops = {rel.split("/", 1)[0] for rel in files}
    for top in tops:
        link = root / top
        if not link.is_symlink():
            link.symlink_to(f"{DATA_LINK}/{top}")
    for entry in root.iterdir():  # keys that disappeared
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()
    if old and old != stamp:
        shutil.rmtree(root / old, ignore_errors=True)
    return True


def prepare(plan: VolumePlan, data: Mapping[str, str] | None = None) -> bool:
    """Create or refresh one volume's folder; returns True when content changed."""
    if plan.kind in ("emptyDir", "persistentVolumeClaim"):
        plan.host_path.mkdir(parents=True, exist_ok=True)
        return False
    if plan.kind == "projected":
        return write_atomic(plan.host_path, dict(plan.files))
    return write_atomic(plan.host_path, project(plan, data))
