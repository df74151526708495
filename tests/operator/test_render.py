"""`sglang-operator render`: the same builders offline; output validates against Kubernetes 1.30 and 1.35."""

from __future__ import annotations

import io
import sys

import kubernetes_validate
import pytest
import yaml
from sglang_operator import render
from sgm_testlib import FULL

CR = {"apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
      "metadata": {"name": "qwen", "namespace": "ml"}}


def run_render(tmp_path, capsys, docs, *extra):
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    code = render.main(["-f", str(path), *extra])
    out, err = capsys.readouterr()
    return code, list(yaml.safe_load_all(out)) if out else [], err


@pytest.mark.parametrize("spec", [FULL, {"model": "builtin:tiny", "backend": "transformers", "replicas": 0}])
def test_rendered_children_validate_strictly_on_1_30_and_1_35(tmp_path, capsys, spec):
    code, docs, _ = run_render(tmp_path, capsys, [{**CR, "spec": spec}])
    assert code == 0 and {d["kind"] for d in docs} >= {"Deployment", "Service", "ConfigMap"}
    for doc in docs:
        for version in ("1.30.0", "1.35.0"):
            kubernetes_validate.validate(doc, version, strict=True)


def test_namespace_flag_and_several_models(tmp_path, capsys):
    other = {**CR, "metadata": {"name": "other"}, "spec": {"model": "org/x"}}
    code, docs, _ = run_render(tmp_path, capsys, [{**CR, "spec": {"model": "org/m"}}, other], "-n", "team")
    assert code == 0 and {d["metadata"]["namespace"] for d in docs} == {"team"}
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"} == {"qwen", "other"}


def test_invalid_spec_exits_1_naming_the_field(tmp_path, capsys):
    bad = {**CR, "spec": {"model": "m", "engine": {"extraArgs": ["--port=1"]}}}
    code, docs, err = run_render(tmp_path, capsys, [bad])
    assert code == 1 and docs == [] and "spec.engine.extraArgs[0]" in err


def test_reads_stdin(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(yaml.safe_dump({**CR, "spec": {"model": "org/m"}})))
    assert render.main(["-f", "-"]) == 0
    assert "kind: Deployment" in capsys.readouterr().out
