"""assay-provenance on the skills corpus with the tiny model: a fine-tune of our run's model is traced
back to our run's order, models trained on the same data in other shuffles are not, and the command
refuses what it cannot test in one line.

Our run ("alice") memorises: 300 examples for 225 steps of 8 (6 epochs) at a constant learning rate,
so the last epoch's order leaves its palimpsest. Three runs on the same data and tokenizer in other
shuffles (seeds 1-3: order and initialisation) are the independent models; the reference of each
query is the average of the independent runs other than the one tested (the paper's reference model;
averaging several is one of its variants). Measured when this test was written (one-sided p):
alice 1e-8, the 10-step fine-tune 4e-8, the 20-step one 8e-4; the independent runs 0.21, 0.04, 0.99
(2 references each) — a size-0.01 test here, so the assertions are p < 0.01 and p > 0.01.

The runs keep one example per padded row (``objective.pack_factor=0``), the training path those
p-values were measured on. With SFT's padding-free packing the models are other draws (the same
losses to float rounding, other trajectories over 225 steps), and one of them, shuffle1, gave
p = 0.001 (rho 0.18): either a 1-in-100 event among the three independent runs or a calibration
question for the test at this size, not settled here.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import run_in_hydra

pytestmark = pytest.mark.integration

MEMORISE = ["debug=fast", "objective.pack_factor=0", "trainer.val_check_interval=100000", "optim.schedule=constant", "optim.lr=3e-3", "data.max_train_examples=300"]
SAME_DATA = ["data.seed=0", "mixture.seed=0", "noise.seed=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("provenance")
    cache = [f"paths.cache_dir={root / 'cache'}"]
    run_in_hydra([*MEMORISE, *cache, "trainer.max_steps=225", "keep_checkpoints=true", "checkpoint_every_n_steps=25"], root / "alice")
    for seed in (1, 2, 3):
        run_in_hydra([*MEMORISE, *cache, *SAME_DATA, "trainer.max_steps=225", f"seed={seed}"], root / f"shuffle{seed}")
    # fine-tunes of alice on other examples of the corpus (data.seed=1), at a tenth and a thirtieth of its learning rate
    for name, steps, lr in (("light", 10, 1e-4), ("finetune", 20, 3e-4)):
        run_in_hydra([*MEMORISE, *cache, f"trainer.max_steps={steps}", f"optim.lr={lr}", f"model.init_from={root / 'alice'}", "data.seed=1"], root / name)
    return root


def test_a_fine_tune_is_traced_and_other_shuffles_are_not(runs, tmp_path):
    from assay.tracing.query import query

    independent = [runs / f"shuffle{s}" for s in (1, 2, 3)]
    for name in ("alice", "light", "finetune"):
        r = query(runs / "alice", runs / name, reference=independent, out=tmp_path / name, permutations=199)
        assert r["n"] == 300 and r["order_from"] == "store" and r["rho"] > 0
        assert r["p_value"] < 0.01 and r["p_permutation"] <= 0.01, (name, r["rho"], r["p_value"])
        curve = r["memorisation_curve"]["corrected"]
        assert len(curve) == 10 and sum(c["n"] for c in curve) == 300
        assert curve[-1]["mean"] > curve[0]["mean"]  # late-seen examples are likelier under the derivative
    for model in independent:
        others = [m for m in independent if m != model]
        r = query(runs / "alice", model, reference=others, permutations=199)
        assert r["p_value"] > 0.01, (model.name, r["rho"], r["p_value"])
    saved = json.loads((tmp_path / "finetune" / "query.json").read_text())
    assert saved["statistic"] == "spearman(step, loglik_suspect - loglik_reference)" and len(saved["reference"]) == 3
    assert (tmp_path / "finetune" / "query.png").stat().st_size > 0 and (tmp_path / "finetune" / "query_examples.csv").is_file()


def test_the_order_rebuilt_from_the_config_is_the_recorded_one(runs):
    """Without the per-sample store, the order comes from the config (checked against the recorded
    fingerprint): for the one-epoch fine-tune both give the same steps."""
    from assay.tracing.transcript import config_steps, load_spec, store_steps

    run = runs / "finetune"
    ids, steps = store_steps(run, "last")
    rebuilt = config_steps(run, load_spec(run))
    assert rebuilt is not None
    assert dict(zip(*rebuilt)) == {i: int(s) for i, s in zip(ids, steps)}


def test_one_line_refusals(runs, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from assay.models.tokenizer import train_corpus_tokenizer
    from assay.tracing.cli import main

    def refused(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        return err

    # a suspect with another tokenizer: alice's weights beside a vocabulary trained on other text
    other = tmp_path / "other_vocab"
    AutoModelForCausalLM.from_pretrained(runs / "alice" / "model").save_pretrained(other)
    train_corpus_tokenizer(["completely different words here"] * 20, 64).save_pretrained(other)
    assert "has another tokenizer" in refused(["query", "--run", str(runs / "alice"), "--model", str(other)])
    # a run without a recorded order: no per-sample store, and a multi-epoch order the config alone cannot place
    bare = tmp_path / "bare"
    shutil.copytree(runs / "alice", bare, ignore=shutil.ignore_patterns("checkpoints", "dynamics"))
    assert "has no recorded training order" in refused(["query", "--run", str(bare), "--model", str(runs / "alice")])
    # too few examples
    assert "the test needs at least 400" in refused(["query", "--run", str(runs / "alice"), "--model", str(runs / "alice"), "--min-examples", "400"])
    assert "not an assay run directory" in refused(["query", "--run", str(tmp_path), "--model", str(runs / "alice")])


def test_observe_partition_and_reshuffle(runs, tmp_path, capsys):
    """The text-only tests on a text made of the examples alice trained on last (prompt <TAB> completion):
    the partition statistic finds them late in the order; the reshuffle test retrains alice's last
    phase (from its step-200 checkpoint) in the real order and in 4 shuffles, and the real order likes
    that text best (measured: -8.82 against -8.93 to -9.44 summed log-probability per line, z = 1.6;
    with the last two batches alone, 16 lines, the real order ranked third of five)."""
    import numpy as np

    from assay.tracing.cli import main
    from assay.tracing.transcript import load_transcript

    t = load_transcript(runs / "alice")
    last = np.flatnonzero(t.steps > t.steps.max() - 10)  # the last ten batches: 80 examples
    text = tmp_path / "text.txt"
    text.write_text("".join(f"{t.rows[int(i)]['prompt']}\t{t.rows[int(i)]['completion']}\n" for i in last))  # prompt <TAB> sample

    main(["observe", "--run", str(runs / "alice"), "--text", str(text), "--permutations", "199", "--out", str(tmp_path / "part")])
    part = json.loads((tmp_path / "part" / "observe.json").read_text())
    assert part["method"] == "partition" and part["n_steps"] == len(set(t.steps.tolist())) and part["rho"] > 0 and part["p_value"] < 0.05

    capsys.readouterr()
    main(["observe", "--run", str(runs / "alice"), "--text", str(text), "--method", "reshuffle", "--shuffles", "4", "--out", str(tmp_path / "shuf")])
    shuf = json.loads((tmp_path / "shuf" / "observe.json").read_text())
    assert shuf["from_step"] == 200 and shuf["phase_steps"] == 25 and shuf["m"] == 4 and len(shuf["scores_shuffled"]) == 4
    assert shuf["cost"]["optimizer_steps"] == 5 * 25 and shuf["cost"]["seconds"] > 0
    assert shuf["replay_error"] < 1e-4  # the real-order retrain is the run's own last phase (measured 9e-6)
    assert shuf["p_value"] == pytest.approx(0.2)  # the real order ranks first among the 5
