"""The local kubelet's mapping of a pod to processes: argv, env, volumes, probes, remapped paths."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from sglang_dev.cluster import kubelet, podplan, volumes
from sglang_dev.cluster.podplan import PodContext, PodError, VolumePlan, plan_pod

ROOT = Path(__file__).resolve().parents[2]


def _ctx(tmp_path: Path, **kw: Any) -> PodContext:
    base = {"pod_ip": "127.77.1.3", "pod_dir": tmp_path / "pod", "pvc_root": tmp_path / "pvcs",
            "engine_path": "/venv/bin/sglang-engine", "host_env": {"PATH": "/usr/bin", "HOME": "/home/u"},
            "config_maps": {"cm": {"k": "from-cm"}}, "secrets": {"sec": {"token": "s3cret"}},
            "markers": {"SGLANG_DEV_CLUSTER": "c1"}}
    return PodContext(**{**base, **kw})


def _pod(container: dict[str, Any], volumes_: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "p1", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "engine", "image": "img", "command": ["sglang-engine"],
                                     **container}], "volumes": volumes_ or []}}


def test_operator_pod_maps_to_a_local_engine(tmp_path: Path) -> None:
    """The seam with the operator: its real Deployment template runs here with host and paths rewritten."""
    from sglang_operator.render import render_documents

    docs = list(yaml.safe_load_all((ROOT / "examples" / "tiny.yaml").read_text()))
    deployment = next(c for c in render_documents(docs) if c["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    pod = {"metadata": {"name": "tiny-abc-x", "namespace": "default", "uid": "u", **template["metadata"]},
           "spec": template["spec"]}
    plan = plan_pod(pod, _ctx(tmp_path))
    engine = plan.containers[0]
    argv = list(engine.argv)
    assert argv[0] == "/venv/bin/sglang-engine" and argv[1] == "serve"
    assert argv[argv.index("--host") + 1] == "127.77.1.3"
    config = argv[argv.index("--config") + 1]
    assert config == str(tmp_path / "pod" / "volumes" / "config" / "config.json")
    assert engine.env["SGLANG_ENGINE_CACHE"].startswith(str(tmp_path / "pod" / "volumes"))
    assert engine.readiness is not None and engine.readiness.port == 8001  # the engine's --probe-port
    assert engine.readiness.host == "127.77.1.3" and engine.readiness.path == "/readyz"
    assert engine.startup is not None and engine.liveness is not None
    assert {v.kind for v in plan.volumes} >= {"configMap", "emptyDir"}
    assert json.loads(engine.env["SGLANG_DEV_MOUNTS"])["/etc/sglang-operator"].endswith("volumes/config")
    assert engine.env["SGLANG_DEV_CLUSTER"] == "c1"
    # Its last words go to the container's termination message file (the kubelet's terminationMessagePath).
    assert engine.termination_log == tmp_path / "pod" / "termination-log.engine"
    assert argv[argv.index("--termination-log") + 1] == str(engine.termination_log)
    assert engine.fallback_to_logs  # the operator's terminationMessagePolicy


SIM_ENV = {"SGLANG_ENGINE_SGLANG_PYTHON": "/repo/.cache/sglang-venv/bin/python",
           "SGLANG_ENGINE_SGLANG_MODULE": "sglang_dev.sglang_sim"}


def test_the_sglang_backend_runs_the_simulator_from_the_nodes_environment(tmp_path: Path) -> None:
    """The operator's backend: sglang pod, unchanged, gets the node's SGLang (the side venv's python and the
    simulator module) through the engine's environment, and an event says the scheduler is simulated."""
    from sglang_operator.render import render_documents

    cr = {"apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
          "metadata": {"name": "s", "namespace": "default"},
          "spec": {"model": "builtin:tiny", "backend": "sglang"}}
    deployment = next(c for c in render_documents([cr]) if c["kind"] == "Deployment")
    pod = {"metadata": {"name": "s-abc-x", "namespace": "default", "uid": "u"},
           "spec": deployment["spec"]["template"]["spec"]}
    # A /tmp path in the node's environment stays as it is (the pod's /tmp is an emptyDir, which remaps).
    node_env = {**SIM_ENV, "SGLANG_ENGINE_SGLANG_PYTHON": "/tmp/repo/.cache/sglang-venv/bin/python"}
    plan = plan_pod(pod, _ctx(tmp_path, sglang_env=node_env))
    assert node_env.items() <= plan.containers[0].env.items()
    # So does the node's TMPDIR (pytest's tmp_path is under /tmp too): SGLang's IPC sockets go there.
    assert plan.containers[0].env["TMPDIR"] == str(tmp_path / "pod" / "tmp")
    assert any("SIMULATED scheduler" in note for note in plan.notes), plan.notes
    unbuilt = plan_pod(pod, _ctx(tmp_path))
    assert "SGLANG_ENGINE_SGLANG_MODULE" not in unbuilt.containers[0].env
    assert any("make sglang-sim" in note for note in unbuilt.notes), unbuilt.notes


def test_a_deep_pod_folder_gets_a_short_tmpdir_for_sglangs_ipc_sockets() -> None:
    shallow = Path("/work/repo/.state/dev/pods/default_tiny-6c9f8d7b5f-x2x9z")
    assert podplan.pod_tmp_dir(shallow, "0f9e8d7c-aaaa-bbbb", "/tmp") == shallow / "tmp"
    deep = Path("/home/someone/src/github.com/org/sglang-operator/.state/dev/pods/default_tiny-sglang-6c9f8d")
    short = podplan.pod_tmp_dir(deep, "0f9e8d7c-aaaa-bbbb-cccc-dddd", "/tmp")
    assert short == Path("/tmp/sglang-dev-pod-0f9e8d7c-aaaa-bbbb")
    # SGLang's socket files are TMPDIR/tmpXXXXXXXX; a Unix socket path holds at most 107 bytes.
    assert len(f"{short}/tmpabcdefgh") <= 107 and len(f"{shallow}/tmp/tmpabcdefgh") <= 107


def test_a_container_choosing_its_sglang_keeps_it(tmp_path: Path) -> None:
    own = {"env": [{"name": "SGLANG_ENGINE_SGLANG_MODULE", "value": "sglang_standin"}],
           "args": ["serve", "--backend", "sglang"]}
    plan = plan_pod(_pod(own), _ctx(tmp_path, sglang_env=SIM_ENV))
    env = plan.containers[0].env
    assert env["SGLANG_ENGINE_SGLANG_MODULE"] == "sglang_standin"
    assert "SGLANG_ENGINE_SGLANG_PYTHON" not in env  # the pair comes from one place: not mixed
    assert any("launches sglang_standin (the container's own choice)" in n for n in plan.notes), plan.notes
    on_a_node_without_the_side_venv = plan_pod(_pod(own), _ctx(tmp_path))
    assert any("launches sglang_standin" in n for n in on_a_node_without_the_side_venv.notes)
    transformers = plan_pod(_pod({"args": ["serve", "--backend", "transformers"]}), _ctx(tmp_path,
                                                                                          sglang_env=SIM_ENV))
    assert not any("sglang" in n for n in transformers.notes)


def test_host_rewrite_both_forms() -> None:
    assert podplan.rewrite_host(["--host", "0.0.0.0", "--port", "8000"], "127.1.1.1") == \
        ["--host", "127.1.1.1", "--port", "8000"]
    assert podplan.rewrite_host(["--host=::"], "127.1.1.1") == ["--host=127.1.1.1"]
    assert podplan.rewrite_host(["--host", "10.0.0.1"], "127.1.1.1") == ["--host", "10.0.0.1"]
    # SMG's metrics listener: any --<name>-host naming a wildcard binds the pod's own address too.
    assert podplan.rewrite_host(["--prometheus-host", "0.0.0.0", "--prometheus-host=::"], "127.1.1.1") == \
        ["--prometheus-host", "127.1.1.1", "--prometheus-host=127.1.1.1"]
    assert podplan.rewrite_host(["--hostname", "0.0.0.0"], "127.1.1.1") == ["--hostname", "0.0.0.0"]


SA_MOUNT = {"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            "readOnly": True}
SA_VOLUME = {"name": "kube-api-access-x", "projected": {"sources": [
    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}
ROUTER_CR = {"apiVersion": "serving.sglang-operator.io/v1alpha1", "kind": "SGLangModel",
             "metadata": {"name": "r", "namespace": "team"},
             "spec": {"model": "builtin:tiny", "replicas": 2, "router": {"enabled": True}}}


def _admitted(template: dict[str, Any], name: str) -> dict[str, Any]:
    """A Deployment's pod as the apiserver admits it: the ServiceAccount admission plugin adds the token
    volume and mounts it into every container, unless the pod opts out."""
    spec = template["spec"]
    meta = {"name": name, "namespace": "team", "uid": "u", **template["metadata"]}
    if spec.get("automountServiceAccountToken") is False:
        return {"metadata": meta, "spec": spec}
    containers = [{**c, "volumeMounts": [*c.get("volumeMounts", []), SA_MOUNT]} for c in spec["containers"]]
    return {"metadata": meta,
            "spec": {**spec, "containers": containers, "volumes": [*spec.get("volumes", []), SA_VOLUME]}}


def test_the_operators_router_pod_runs_smg_with_pod_network_and_service_account(tmp_path: Path) -> None:
    """The seam with spec.router: the router's pod runs the local `smg` with its listeners on the pod's
    address, HTTP_PROXY to the pod gateway (it calls engines by podIP) and a kubeconfig standing for the
    in-cluster config: the apiserver's URL, the mounted CA and the pod's own token file."""
    from sglang_operator.render import render_documents

    children = render_documents([ROUTER_CR])
    router = next(c for c in children if c["kind"] == "Deployment" and c["metadata"]["name"] == "r-router")
    engines = next(c for c in children if c["kind"] == "Deployment" and c["metadata"]["name"] == "r")
    ctx = _ctx(tmp_path, executables={"smg": "/venv/bin/smg"}, pod_gateway="http://127.0.0.1:4000",
               api_server="https://127.0.0.1:6443", config_maps={"kube-root-ca.crt": {"ca.crt": "CA"}},
               service_account_token="TOKEN")
    plan = plan_pod(_admitted(router["spec"]["template"], "r-router-x"), ctx)
    (smg,) = plan.containers
    argv = list(smg.argv)
    assert argv[:2] == ["/venv/bin/smg", "launch"] and "--sglang-port" not in argv
    assert argv[argv.index("--host") + 1] == argv[argv.index("--prometheus-host") + 1] == "127.77.1.3"
    assert smg.readiness is not None
    assert (smg.readiness.host, smg.readiness.path) == ("127.77.1.3", "/readiness")
    assert smg.env["HTTP_PROXY"] == "http://127.0.0.1:4000" and "127.0.0.1" in smg.env["NO_PROXY"].split(",")
    token_dir = tmp_path / "pod" / "volumes" / "kube-api-access-x"
    assert smg.env["KUBECONFIG"] == str(tmp_path / "pod" / "kubeconfig")
    ((path, text),) = plan.files
    assert path == tmp_path / "pod" / "kubeconfig"
    config = yaml.safe_load(text)
    assert config["clusters"][0]["cluster"] == {"server": "https://127.0.0.1:6443",
                                                 "certificate-authority": str(token_dir / "ca.crt")}
    assert config["users"][0] == {"name": "system:serviceaccount:team:r-router",
                                  "user": {"tokenFile": str(token_dir / "token")}}
    assert config["contexts"][0]["context"]["namespace"] == "team"
    kubelet.write_plan_files(plan)
    assert path.read_text() == text and path.stat().st_mode & 0o777 == 0o600

    # The engine has no token (automountServiceAccountToken: false) and calls no pod: no proxy either (its
    # downloads go straight out).
    engine = plan_pod(_admitted(engines["spec"]["template"], "r-x"), ctx)
    assert engine.files == () and "HTTP_PROXY" not in engine.containers[0].env
    # ... and its KUBECONFIG names a file that is not there: never the host's ~/.kube/config (HOME is shared).
    assert engine.containers[0].env["KUBECONFIG"] == str(path)
    # No smg next to the cluster's Python: said, naming the extra that installs it.
    with pytest.raises(PodError, match=r"'smg' is not installed.*\[router\]") as err:
        plan_pod(_admitted(router["spec"]["template"], "r-router-x"), _ctx(tmp_path, **{
            **asdict(ctx), "executables": {}}))
    assert err.value.reason == "ImageNotSupported"
    # A container's own KUBECONFIG wins; no apiserver URL (the emulator): no kubeconfig.
    own = _admitted(router["spec"]["template"], "r-router-x")
    own["spec"]["containers"][0]["env"] = [{"name": "KUBECONFIG", "value": "/etc/kube/config"}]
    assert plan_pod(own, ctx).files == () and plan_pod(own, ctx).containers[0].env["KUBECONFIG"] == \
        "/etc/kube/config"
    bare = plan_pod(_admitted(router["spec"]["template"], "r-router-x"),
                    _ctx(tmp_path, **{**asdict(ctx), "pod_gateway": None, "api_server": None}))
    assert bare.files == () and bare.containers[0].env["KUBECONFIG"] == str(path)
    assert "HTTP_PROXY" not in bare.containers[0].env


def test_each_pod_gets_its_own_sglang_port() -> None:
    argv = ["/e", "serve", "--model", "m", "--", "--extra", "1"]
    assert podplan.add_sglang_port(argv, 31001) == \
        ["/e", "serve", "--model", "m", "--sglang-port", "31001", "--", "--extra", "1"]
    chosen = ["/e", "serve", "--sglang-port=5"]
    assert podplan.add_sglang_port(chosen, 31001) == chosen
    assert podplan.add_sglang_port(["/e", "serve"], None) == ["/e", "serve"]


def test_paths_under_mounts_are_remapped(tmp_path: Path) -> None:
    mounts = (podplan.Mount("/etc/cfg/sub", tmp_path / "b"), podplan.Mount("/etc/cfg", tmp_path / "a"))
    assert podplan.remap_value("/etc/cfg/x.json", mounts) == f"{tmp_path}/a/x.json"
    assert podplan.remap_value("/etc/cfg/sub/y", mounts) == f"{tmp_path}/b/y"  # longest mount wins
    assert podplan.remap_value("--config=/etc/cfg", mounts) == f"--config={tmp_path}/a"
    assert podplan.remap_value("/etc/cfg:/usr/lib", mounts) == f"{tmp_path}/a:/usr/lib"
    assert podplan.remap_value("/etc/cfgx", mounts) == "/etc/cfgx"  # a prefix is not a parent
    assert podplan.remap_value("relative/etc/cfg", mounts) == "relative/etc/cfg"


def test_env_sources(tmp_path: Path) -> None:
    pod = _pod({"env": [
        {"name": "A", "value": "plain"},
        {"name": "B", "value": "$(A)-x-$$(A)"},
        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
        {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
        {"name": "O", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
    ], "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}]})
    env = plan_pod(pod, _ctx(tmp_path)).containers[0].env
    assert (env["A"], env["B"], env["S"], env["C"]) == ("plain", "plain-x-$(A)", "s3cret", "from-cm")
    assert "O" not in env
    assert (env["N"], env["IP"], env["L"], env["CM_k"]) == ("p1", "127.77.1.3", "x", "from-cm")
    assert env["PATH"].startswith("/venv/bin")


@pytest.mark.parametrize(("env", "field"), [
    ({"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "missing"}}},
     'spec.containers[0].env[0].valueFrom.secretKeyRef: key "missing" not found in secret "sec"'),
    ({"name": "S", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}},
     'spec.containers[0].env[0].valueFrom.configMapKeyRef: configmap "gone" not found'),
    ({"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}},
     "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath"),
])
def test_env_errors_name_the_field(tmp_path: Path, env: dict[str, Any], field: str) -> None:
    with pytest.raises(PodError) as err:
        plan_pod(_pod({"env": [env]}), _ctx(tmp_path))
    assert err.value.reason == "CreateContainerConfigError"
    assert field in err.value.message


def test_only_the_engine_runs(tmp_path: Path) -> None:
    pod = _pod({"command": ["nginx"], "image": "nginx:1.27"})
    with pytest.raises(PodError) as err:
        plan_pod(pod, _ctx(tmp_path))
    assert err.value.reason == "ImageNotSupported"
    assert "nginx:1.27" in err.value.message and "spec.containers[0]" in err.value.message
    no_command = _pod({})
    del no_command["spec"]["containers"][0]["command"]
    with pytest.raises(PodError, match="only runs the engine"):
        plan_pod(no_command, _ctx(tmp_path))


def test_volumes_probes_and_gpu_note(tmp_path: Path) -> None:
    pod = _pod({"args": ["serve", "--model", "/models/m"],
                "ports": [{"name": "http", "containerPort": 8000}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
                "livenessProbe": {"tcpSocket": {"port": 8000}},
                "resources": {"limits": {"nvidia.com/gpu": 2}},
                "volumeMounts": [{"name": "m", "mountPath": "/models"}, {"name": "s", "mountPath": "/sec"}]},
               [{"name": "m", "persistentVolumeClaim": {"claimName": "weights"}},
                {"name": "s", "secret": {"secretName": "sec", "items": [{"key": "token", "path": "t/tok"}]}}])
    plan = plan_pod(pod, _ctx(tmp_path))
    engine = plan.containers[0]
    assert engine.argv[3] == f"{tmp_path}/pvcs/ns/weights/m"
    assert engine.readiness and engine.readiness.port == 8000 and engine.readiness.period_s == 5
    assert engine.liveness and engine.liveness.kind == "tcp"
    assert any("nvidia.com/gpu=2" in note and "ignored" in note for note in plan.notes)
    secret = next(v for v in plan.volumes if v.kind == "secret")
    assert secret.items == (("token", "t/tok"),)


def test_probe_period_cap(tmp_path: Path) -> None:
    pod = _pod({"ports": [{"name": "http", "containerPort": 8000}],
                "startupProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 10,
                                 "failureThreshold": 30},
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1}})
    spec_periods = plan_pod(pod, _ctx(tmp_path)).containers[0]
    assert spec_periods.startup and spec_periods.startup.period_s == 10
    capped = plan_pod(pod, _ctx(tmp_path, probe_period_cap=2.0)).containers[0]
    # The startup window (10 s x 30 = 300 s) is kept: 2 s x 150.
    assert capped.startup and capped.startup.period_s == 2.0 and capped.startup.failure_threshold == 150
    assert capped.readiness and capped.readiness.period_s == 1


def test_unsupported_volume_and_probe_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PodError, match=r"spec.volumes\[0\] \(h\): unsupported volume type \['hostPath'\]"):
        plan_pod(_pod({}, [{"name": "h", "hostPath": {"path": "/"}}]), _ctx(tmp_path))
    with pytest.raises(PodError, match="startupProbe: only httpGet and tcpSocket"):
        plan_pod(_pod({"startupProbe": {"exec": {"command": ["true"]}}}), _ctx(tmp_path))


def test_configmap_volume_atomic_swap(tmp_path: Path) -> None:
    root = tmp_path / "vol"
    plan = VolumePlan("config", "configMap", root, "cm")
    assert volumes.prepare(plan, {"config.json": "{}", "other": "1"})
    first = (root / "..data").resolve()
    assert (root / "config.json").read_text() == "{}"
    assert not volumes.prepare(plan, {"config.json": "{}", "other": "1"})  # unchanged: no write
    assert volumes.prepare(plan, {"config.json": '{"a": 1}'})
    assert (root / "config.json").read_text() == '{"a": 1}'
    assert (root / "config.json").is_symlink() and (root / "..data").is_symlink()
    assert not (root / "other").exists() and not first.exists()  # removed key gone, old version cleaned
    with pytest.raises(PodError, match='configMap "cm" not found'):
        volumes.prepare(plan, None)
