"""Every collaborative rule composes and runs through the server's and the clients' code (``server_main``,
``ClientSide``), with Flower's own messages and FedAvg strategy, on the fast three-client setup of
test_collab_run.py. Messages go through an in-process loopback grid instead of Ray (the simulation
engine is exercised by test_collab_run.py, which sweeps fedavg, local and ties), so five rules cost no
Flower start-up. What the server made of the clients' replies is checked against each rule."""

import json

import numpy as np
import pytest

import assay.config  # noqa: F401  (registers every schema, as assay-train does)
from tests.integration.test_collab_run import TINY

pytest.importorskip("flwr")
pytestmark = [pytest.mark.integration]

RULES = ["fedavg", "local", "merge_linear", "ties", "ties_factors"]


class LoopbackGrid:
    """The part of Flower's ``Grid`` the server uses (node ids, send and receive), delivering every
    message to a client's handlers in this process, as the ClientApp does, and keeping the replies."""

    def __init__(self, run_dir, num_clients: int):
        from assay.collab.apps import ClientSide

        self.sides = {k + 1: ClientSide(run_dir, k) for k in range(num_clients)}
        self.replies: list = []

    def get_node_ids(self):
        return list(self.sides)

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.app import MessageType

        from assay.collab.apps import _reply

        out = []
        for msg in messages:
            side = self.sides[msg.metadata.dst_node_id]
            kind = msg.metadata.message_type
            handle = {MessageType.TRAIN: side.handle_train, MessageType.EVALUATE: side.handle_evaluate}.get(kind, side.handle_select)
            out.append(_reply(msg, handle(msg.content)))
        self.replies += [(msg.metadata.message_type, r) for msg, r in zip(messages, out)]
        return out


def _train_states(grid) -> list[tuple[dict, int, int]]:
    """(arrays, example count, client index) of every training reply, in the order received."""
    from flwr.app import MessageType

    from assay.collab.apps import from_record

    return [(from_record(r.content["arrays"]), int(r.content["metrics"]["num-examples"]), int(r.metadata.src_node_id) - 1)
            for kind, r in grid.replies if kind == MessageType.TRAIN]


@pytest.mark.parametrize("rule", RULES)
def test_rules_compose_and_run_through_the_collaborative_path(rule, tmp_path, compose_cfg):
    from assay.collab.merging import lora_layers, merge_task_vectors
    from assay.collab.rules import COLLAB_RULES, rule_of
    from assay.collab.run import run_collab
    from assay.collab.server import ServerSide, server_main

    run = tmp_path / "run"
    overrides = [*TINY, "selection=none", "collab.rounds=2", "collab.eval_every_round=false", f"collab/aggregation={rule}", "collab.prepare_only=true"]
    if rule in ("ties", "ties_factors"):
        overrides.append("collab.aggregation.density=0.5")
    assert run_collab(compose_cfg(overrides, run))["status"] == "prepared"
    assert json.loads((run / "global" / "run.json").read_text())["choices"]["aggregation"] == rule

    grid = LoopbackGrid(run, 3)
    server_main(grid, run)
    assert not (run / "server" / "error.json").is_file(), (run / "server" / "error.json").read_text()[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and np.isfinite(summary["metrics"]["test/loss"])

    srv = ServerSide(run)
    cls = COLLAB_RULES[rule]
    assert type(srv.rule) is cls and srv.rule == rule_of({"name": rule, **({"density": 0.5} if "ties" in rule else {})})
    initial, final = srv.arrays("initial"), srv.arrays("global")
    states = _train_states(grid)
    phases = [h["phase"] for h in summary["collab"]["rounds"]]
    if cls.trains_once:  # one training round of rounds x local_steps, one merge
        assert phases == ["merge"] and len(states) == 3
        assert [k for _, _, k in states] == [0, 1, 2]  # sent to nodes 1, 2, 3 in order: the server merges in node order
        ordered = [s for s, _, _ in states]
        if rule == "ties":
            expected = merge_task_vectors(lora_layers(srv.model), initial, ordered, 0.5)
            for key, value in expected.items():
                np.testing.assert_allclose(final[key], value, rtol=1e-5, atol=1e-7, err_msg=key)
        else:  # through PEFT: the merged adapter is no client's and moved off the initial state
            assert all(not np.allclose(final[k], s[k]) for s in ordered for k in final if "lora_B" in k)
        assert not all(np.allclose(final[k], initial[k]) for k in final)
    elif cls.rounds_of_aggregation:  # fedavg: the global state is the example-weighted mean of the last round
        assert phases == ["train", "train"] and len(states) == 6
        last = states[3:]
        n = sum(c for _, c, _ in last)
        for key in final:
            np.testing.assert_allclose(final[key], sum(s[key] * c for s, c, _ in last) / n, rtol=1e-5, atol=1e-6, err_msg=key)
    else:  # local: no global model; every client kept its own and was evaluated on it
        assert phases == ["train", "train"] and cls.clients_keep_models
        for key in final:
            np.testing.assert_array_equal(final[key], initial[key])
        for k, name in enumerate(["copy", "reverse", "sort"]):
            own = dict(np.load(run / "clients" / f"{k}-{name}" / "local_model.npz"))
            second = next(s for s, _, client in states[3:] if client == k)  # its round-2 reply
            for key in own:
                np.testing.assert_array_equal(own[key], second[key])
        assert "test/loss" in summary["metrics"]
