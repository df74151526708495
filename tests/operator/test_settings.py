"""Operator settings: env first, flags override, bad values name their source."""

import pytest
from sglang_operator.settings import DEFAULT_ENGINE_IMAGE, SettingsError, load_settings


def test_defaults_are_cluster_wide_text_logs_and_a_versioned_image():
    s = load_settings([], {})
    assert s.cluster_wide and s.namespaces == ()
    assert s.engine_image == DEFAULT_ENGINE_IMAGE and ":" in s.engine_image
    assert (s.resync_seconds, s.log_format, s.liveness) == (60.0, "text", None)


def test_env_is_read_and_flags_override_it():
    env = {
        "SGLANG_OPERATOR_NAMESPACES": "a, b,,",
        "SGLANG_OPERATOR_ENGINE_IMAGE": "reg/engine:1",
        "SGLANG_OPERATOR_LOG_FORMAT": "json",
        "SGLANG_OPERATOR_HEALTH_PORT": "8080",
        "SGLANG_OPERATOR_POD_DEFAULTS": '{"nodeSelector": {"gpu": "a100"}, "imagePullSecrets": ["regcred"]}',
    }
    s = load_settings([], env)
    assert s.namespaces == ("a", "b")
    assert s.liveness == "http://0.0.0.0:8080/healthz"
    assert s.pod_defaults.nodeSelector == {"gpu": "a100"} and s.pod_defaults.imagePullSecrets == ("regcred",)
    s = load_settings(["--namespace", "c", "--log-format", "text", "--engine-image", "x/y:2"], env)
    assert (s.namespaces, s.log_format, s.engine_image) == (("c",), "text", "x/y:2")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SGLANG_OPERATOR_RESYNC_SECONDS": "0"}, "SGLANG_OPERATOR_RESYNC_SECONDS"),
        ({"SGLANG_OPERATOR_LOG_FORMAT": "xml"}, "SGLANG_OPERATOR_LOG_FORMAT"),
        ({"SGLANG_OPERATOR_POD_DEFAULTS": "{not json"}, "SGLANG_OPERATOR_POD_DEFAULTS"),
        ({"SGLANG_OPERATOR_POD_DEFAULTS": '{"nodeSelectr": {}}'}, "nodeSelectr"),
        ({"SGLANG_OPERATOR_HEALTH_PORT": "http://x"}, "SGLANG_OPERATOR_HEALTH_PORT"),
        ({"SGLANG_OPERATOR_IMAGE_PULL_POLICY": "Sometimes"}, "SGLANG_OPERATOR_IMAGE_PULL_POLICY"),
    ],
)
def test_bad_values_name_their_source(env, named):
    with pytest.raises(SettingsError, match=named):
        load_settings([], env)
