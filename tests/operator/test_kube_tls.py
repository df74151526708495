"""TLS from a kubeconfig with inline (base64) CA, client certificate and key: loaded, no key left on disk."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path

import kopf
import pytest
from sglang_operator.kube import _ssl_context


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_inline_client_certificate_and_key_load_without_leaving_files(tmp_path: Path, monkeypatch) -> None:
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=test",
                    "-days", "1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    info = kopf.ConnectionInfo(server="https://127.0.0.1:6443", ca_data=b64(cert),
                               certificate_data=b64(cert), private_key_data=b64(key))
    ctx = _ssl_context(info)
    assert isinstance(ctx, ssl.SSLContext) and ctx.cert_store_stats()["x509_ca"] == 1
    assert list(scratch.iterdir()) == []  # the key material was written only for the load
