"""FedBiOT through the collaborative path (``server_main`` and ``ClientSide`` with Flower's messages
and FedAvg strategy, delivered in-process by test_collab_rules_run's loopback grid): two clients, two
rounds. Each round's bytes are exactly the serialized adapter and emulator layers, the clients train
on the emulator the server sent, and the plugged-in global adapter is the mean of their replies."""

import json

import numpy as np
import pytest

import assay.config  # noqa: F401  (registers every schema, as assay-train does)
from tests.integration.test_collab_run import TINY
from tests.integration.test_collab_rules_run import LoopbackGrid, _train_states

pytest.importorskip("flwr")
pytestmark = [pytest.mark.integration]


def test_fedbiot_two_clients_two_rounds(tmp_path, compose_cfg):
    from flwr.app import Array

    from assay.collab.emulator import build_emulator
    from assay.collab.local import client_memory_bytes
    from assay.collab.run import run_collab
    from assay.collab.server import ServerSide, server_main

    run = tmp_path / "run"
    overrides = [*TINY, "selection=none", "collab.num_clients=2", "collab.corruption=[0.0,0.2]", "collab.rounds=2", "collab.eval_every_round=false",
                 "model.num_layers=4", "collab/aggregation=fedbiot", "collab.aggregation.adapter_layers=1", "collab.aggregation.drop_ratio=0.5",
                 "collab.aggregation.initial_align_passes=2", "collab.aggregation.align_steps=1", "collab.prepare_only=true"]
    assert run_collab(compose_cfg(overrides, run))["status"] == "prepared"
    grid = LoopbackGrid(run, 2)
    server_main(grid, run)
    assert not (run / "server" / "error.json").is_file(), (run / "server" / "error.json").read_text()[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and np.isfinite(summary["metrics"]["test/loss"])

    srv = ServerSide(run)
    final, emulator = srv.arrays("global"), srv.arrays("emulator")
    assert final and all(".layers.3." in k and "lora_" in k for k in final)  # the adapter: LoRA of the last layer only
    assert all(".layers.0." in k or ".layers.1." in k for k in emulator)  # 3 layers below the adapter -> K = 2: layers 0 and 2, renumbered
    # what travelled: down, the adapter and the emulator's layers to each client; up, each client's adapter
    size = lambda arrays: sum(len(Array(np.ascontiguousarray(a)).data) for a in arrays.values())
    rounds = summary["collab"]["rounds"]
    assert [h["phase"] for h in rounds] == ["train", "train"]
    for h in rounds:
        assert h["collab/bytes_down"] == 2 * (size(final) + size(emulator)) and h["collab/bytes_up"] == 2 * size(final)
        assert np.isfinite(h["align/loss"])
    emu = build_emulator(srv.model, 1, 0.5)
    assert emu.source == [0, 2, 3]
    assert rounds[0]["collab/client_memory_bytes"] == client_memory_bytes(emu.model) < client_memory_bytes(srv.model)
    assert summary["metrics"]["collab/total_bytes_up"] == 4 * size(final)
    # each client trained on the emulator of the last round (the full model is gone from its memory)
    for side in grid.sides.values():
        assert side.model is None and side.emulator.source == [0, 2, 3]
        for key, value in side.emulator.layer_state().items():
            np.testing.assert_array_equal(value, emulator[key], err_msg=key)
    # the global adapter is the example-weighted mean of the last round's replies, in full-model names
    last = _train_states(grid)[2:]
    n = sum(c for _, c, _ in last)
    for key in final:
        np.testing.assert_allclose(final[key], sum(s[key] * c for s, c, _ in last) / n, rtol=1e-5, atol=1e-6, err_msg=key)
