"""The control plane's certificates, made by the Go binary's `certs` subcommand (crypto/x509 + client-go's
cert/keyutil: no hand-written crypto, and no Python crypto dependency in the dev tools).

Every start makes a new CA and new certificates in `<state>/pki/` (ECDSA P-256, about 0.1 s each), so a
certificate from an earlier run's CA can never be picked up by mistake.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The names the apiserver's serving certificate answers to: loopback, and the in-cluster names pods use.
APISERVER_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


class CertificateAuthority:
    """A CA in `pki_dir` (ca.crt, ca.key) that issues certificates with the k8s binary."""

    def __init__(self, k8s_binary: Path, pki_dir: Path):
        self.k8s = k8s_binary
        self.dir = pki_dir
        self.cert = pki_dir / "ca.crt"
        self.key = pki_dir / "ca.key"

    def _run(self, *args: str) -> None:
        result = subprocess.run([str(self.k8s), "certs", *args], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"k8s certs {args[0]} failed: {result.stderr.strip()}")

    def create(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._run("ca", "--cert", str(self.cert), "--key", str(self.key))

    def issue(
        self,
        name: str,
        cn: str,
        orgs: Sequence[str] = (),
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        usage: str = "both",
        days: int = 365,
    ) -> CertPair:
        """Issue `<name>.crt`/`<name>.key` in the PKI folder. For client certificates CN is the user name and
        each org a group (O=system:masters is cluster-admin); usage is server, client or both."""
        pair = CertPair(self.dir / f"{name}.crt", self.dir / f"{name}.key")
        args = ["issue", "--ca-cert", str(self.cert), "--ca-key", str(self.key)]
        args += [
            "--cert",
            str(pair.cert),
            "--key",
            str(pair.key),
            "--cn",
            cn,
            "--usage",
            usage,
            "--days",
            str(days),
        ]
        for flag, values in (("--org", orgs), ("--dns", dns), ("--ip", ips)):
            for value in values:
                args += [flag, value]
        self._run(*args)
        return pair

    def make_key(self, name: str) -> Path:
        """A bare private key (the ServiceAccount token signing key)."""
        path = self.dir / f"{name}.key"
        self._run("key", "--key", str(path))
        return path


def write_kubeconfig(
    path: Path,
    server: str,
    ca: Path,
    *,
    client: CertPair | None = None,
    token: str | None = None,
    user: str = "user",
) -> Path:
    """A kubeconfig with one cluster/user/context; the user is a client certificate or a bearer token."""
    if (client is None) == (token is None):
        raise ValueError("write_kubeconfig: give exactly one of client= or token=")
    if client is not None:
        user_lines = f"    client-certificate: {client.cert}\n    client-key: {client.key}\n"
    else:
        user_lines = f"    token: {token}\n"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n"
        f"users:\n- name: {user}\n  user:\n{user_lines}"
        f"contexts:\n- name: local\n  context:\n    cluster: local\n    user: {user}\n"
        "current-context: local\n"
    )
    path.chmod(0o600)
    return path
