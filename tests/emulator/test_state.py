"""`--state-file`: objects and custom resource types survive a restart; versions never go back."""

from __future__ import annotations

from helpers import DEFAULT, WIDGETS_CRD, rt, widget
from sglang_dev.emulator import run_emulator


async def test_state_file_round_trip(tmp_path):
    state_file = tmp_path / "state.json"
    async with run_emulator(tmp_path / "kc", crds=[WIDGETS_CRD], state_file=state_file) as first:
        created = first.api.create(
            rt(first.api, "example.dev/v1alpha1", "widgets"), "default", widget(), DEFAULT
        )
        saved_rv = first.store.rv
    assert state_file.exists()
    async with run_emulator(tmp_path / "kc", crds=[WIDGETS_CRD], state_file=state_file) as second:
        widgets = rt(second.api, "example.dev/v1alpha1", "widgets")
        assert second.api.get(widgets, "default", "w1")["metadata"]["uid"] == created.obj["metadata"]["uid"]
        assert second.store.rv >= saved_rv
        again = second.api.create(widgets, "default", widget("w2"), DEFAULT).obj
        assert int(again["metadata"]["resourceVersion"]) > saved_rv
