"""Every stage of a recipe is composed and validated, its data files included, before the first one
starts: a DPO stage whose file lacks chosen/rejected is one line, and nothing has trained."""

import json
import os

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("dpo_file, expected", [
    ("no_pairs.jsonl", "data.columns={}: train split lacks column(s) ['chosen', 'rejected'] needed for format=preference"),
    ("absent.jsonl", "file does not exist"),
])
def test_a_later_stage_with_bad_data_stops_before_the_first_trains(tmp_path, assay_cli, dpo_file, expected):
    sft = _write(tmp_path / "chat.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(40)])
    _write(tmp_path / "no_pairs.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(40)])
    r = assay_cli(["experiment=sft_then_dpo", "sft:data=jsonl", f"sft:data.train_file={sft}", "dpo:data=jsonl",
                   f"dpo:data.train_file={tmp_path / dpo_file}", f"paths.log_dir={tmp_path / 'logs'}"], tmp_path, env=ENV)
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0] and "in stage 'dpo', checked before any stage runs" in errors[0], r.stderr[-2000:]
    assert not (tmp_path / "logs").exists()  # no stage ran, no run directory


def test_a_prefix_naming_no_stage_is_one_line(tmp_path, assay_cli):
    r = assay_cli(["experiment=sft_then_dpo", "dop:optim.lr=1e-4", f"paths.log_dir={tmp_path / 'logs'}"], tmp_path, env=ENV)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        "error: dop:='dop': is not a stage of this recipe; its stages: ['sft', 'dpo']"), r.stderr[-2000:]
