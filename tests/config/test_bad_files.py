"""Bad files, paths and a full disk: one line naming what is wrong, exit 2, no traceback, no summary.

Each case here used to end in a Python traceback (or, for the empty file, in a crash of the error
handler itself)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import run_assay as assay_train

FAST = ["debug=fast", "logger=none", "trainer.enable_progress_bar=false"]





def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def assert_no_summary(root: Path) -> None:
    assert not list(root.rglob("summary.json"))


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(n: int = 40, **extra) -> list[dict]:
    return [{"prompt": f"q {i}", "completion": f"a {i}", **extra} for i in range(n)]


# ---- data files ----------------------------------------------------------------------------------


@pytest.mark.cli
def test_empty_jsonl_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = assay_train([*FAST, "data=jsonl", f"data.train_file={empty}"], tmp_path)
    assert_one_line_error(proc, "data.train_file", "empty.jsonl", "file is empty")
    assert_no_summary(tmp_path)


@pytest.mark.cli
def test_non_utf8_jsonl_file(tmp_path):
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows(40, source_note="café")).encode("latin-1"))
    proc = assay_train([*FAST, "data=jsonl", f"data.train_file={latin1}"], tmp_path)
    assert_one_line_error(proc, "data.train_file", "latin1.jsonl", "not UTF-8", "0xe9", "line 1")


@pytest.mark.cli
def test_non_integer_difficulty(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", rows(20, difficulty=1) + rows(20, difficulty="hard"))
    proc = assay_train([*FAST, "data=jsonl", f"data.train_file={f}"], tmp_path)
    assert_one_line_error(proc, "data.train_file", "difficulty", "whole numbers", "'hard'")


def test_whole_number_difficulty_in_any_spelling_is_read():
    from assay.data.tables import JsonlData

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        f = jsonl(Path(d) / "d.jsonl", [{**r, "difficulty": v} for r, v in zip(rows(40), [1, 2.0, "3", None] * 10)])
        splits = JsonlData(train_file=str(f), seed=0).load()
    assert sorted(set(splits["train"]["difficulty"]) | set(splits["val"]["difficulty"]) | set(splits["test"]["difficulty"])) == [-1, 1, 2, 3]


@pytest.mark.cli
def test_garbage_gguf(tmp_path):
    garbage = tmp_path / "model.gguf"
    garbage.write_bytes(os.urandom(4096))
    proc = assay_train([*FAST, "model=smollm2_135m", f"model.gguf_path={garbage}"], tmp_path)
    assert_one_line_error(proc, "model.gguf_path", "model.gguf", "not a readable GGUF")


@pytest.mark.cli
def test_garbage_parquet_for_ordering_scores(tmp_path):
    garbage = tmp_path / "scores.parquet"
    garbage.write_text("id,score\nx,1\n")
    proc = assay_train([*FAST, "ordering=curriculum", f"ordering.score_from={garbage}"], tmp_path)
    assert_one_line_error(proc, "ordering.score_from", "scores.parquet", "not a readable Parquet file")


@pytest.mark.cli
def test_local_model_directory_that_does_not_exist(tmp_path):
    proc = assay_train([*FAST, "model=hf", f"model.name_or_path={tmp_path}/no/such/model"], tmp_path)
    line = assert_one_line_error(proc, "model.name_or_path", "no/such/model", "directory does not exist")
    assert "repo id" not in line.lower() and "repo_id" not in line


# ---- damaged models and checkpoints of another shape ---------------------------------------------


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """Two finished tiny runs: ``good`` (the default tiny_llama) and ``other`` (hidden_size 48), whose
    model directories and checkpoints the cases below copy and damage."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ASSAY_CACHE", str(tmp_path_factory.getbasetemp() / "assay-cache"))
        for name, extra in (("good", []), ("other", ["model.hidden_size=48"])):
            proc = assay_train([*FAST, *extra, f"hydra.run.dir={root / name}"], root)
            assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.mark.cli
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_init_from_a_run_with_damaged_weights(tmp_path, trained_runs, damage):
    run = tmp_path / "run"
    for part in ("model", "tokenizer"):
        shutil.copytree(trained_runs / "good" / part, run / part)
    weights = run / "model" / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(os.urandom(4096) if damage == "garbage" else good[: len(good) // 2])
    proc = assay_train([*FAST, f"model.init_from={run}", f"hydra.run.dir={tmp_path / 'out'}"], tmp_path)
    assert_one_line_error(proc, "model.init_from", str(weights), "not a readable safetensors file", "damaged or was cut short")
    assert_no_summary(tmp_path)


@pytest.mark.cli
@pytest.mark.parametrize("contents", ["tokenizer_only", "empty"])
def test_local_model_directory_without_a_model(tmp_path, trained_runs, contents):
    local = tmp_path / "local_model"
    local.mkdir()
    if contents == "tokenizer_only":
        for f in (trained_runs / "good" / "model").glob("tokenizer*"):
            shutil.copy(f, local)
    proc = assay_train([*FAST, "model=hf", f"model.name_or_path={local}", f"hydra.run.dir={tmp_path / 'out'}"], tmp_path)
    expected = "no config.json" if contents == "tokenizer_only" else "is an empty directory"
    assert_one_line_error(proc, "model.name_or_path", "local_model", expected, "save_pretrained")


@pytest.mark.cli
def test_local_model_directory_with_an_unknown_model_type(tmp_path, trained_runs):
    local = tmp_path / "local_model"
    shutil.copytree(trained_runs / "good" / "model", local)
    config = json.loads((local / "config.json").read_text())
    (local / "config.json").write_text(json.dumps({**config, "model_type": "nosuchmodel"}))
    proc = assay_train([*FAST, "model=hf", f"model.name_or_path={local}", f"hydra.run.dir={tmp_path / 'out'}"], tmp_path)
    assert_one_line_error(proc, "model.name_or_path", "local_model", "model_type 'nosuchmodel'", "does not know")


@pytest.mark.cli
def test_checkpoint_of_a_model_of_another_shape(tmp_path, trained_runs):
    ckpt = trained_runs / "other" / "checkpoints" / "last.ckpt"
    proc = assay_train([*FAST, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'new'}"], tmp_path)
    assert_one_line_error(proc, "ckpt_path", str(ckpt), "saved from a model of another shape", "embed_tokens.weight", "48] there", "128] here")
    assert_no_summary(tmp_path)


# ---- output directory, trainer, options ----------------------------------------------------------


@pytest.mark.cli
@pytest.mark.parametrize("where", ["proc", "under_a_file"])
def test_output_dir_that_cannot_be_created(tmp_path, where):
    if where == "proc":
        if not Path("/proc").is_dir():
            pytest.skip("no /proc on this system")
        target = "/proc/assay-run"
    else:
        (tmp_path / "a_file").write_text("x")
        target = f"{tmp_path}/a_file/run"
    proc = assay_train([*FAST, f"hydra.run.dir={target}"], tmp_path)
    assert_one_line_error(proc, "hydra.run.dir", target, "cannot be created")
    assert not list(tmp_path.glob(".assay-probe-*"))


def test_output_dir_check_accepts_a_new_nested_directory(tmp_path):
    from assay.errors import check_output_dir

    check_output_dir(tmp_path / "logs" / "train" / "runs" / "x", "hydra.run.dir")
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing behind


@pytest.mark.cli
def test_val_check_interval_zero(tmp_path):
    proc = assay_train([*FAST, "trainer.val_check_interval=0"], tmp_path)
    assert_one_line_error(proc, "trainer.val_check_interval=0", "positive number of training batches")


@pytest.mark.parametrize("value, ok", [(0, False), (-3, False), (0.0, False), (1.5, False), (True, False), ("often", False), (1, True), (200, True), (0.25, True), (1.0, True), (None, True)])
def test_val_check_interval_values(value, ok):
    from assay.trainers import valid_val_check_interval

    assert valid_val_check_interval(value) is ok


@pytest.mark.cli
def test_unknown_objective_lists_no_internal_schemas(tmp_path):
    proc = assay_train([*FAST, "objective=dpoo"], tmp_path)
    line = assert_one_line_error(proc, "objective='dpoo'", "'dpo'", "'sft'")
    assert "_schema" not in line


def test_internal_schema_is_not_an_option(compose_cfg):
    from assay.config import validate
    from assay.errors import UserError

    with pytest.raises(UserError, match=r"objective='dpo_schema'.*unknown option") as e:
        validate(compose_cfg(["objective=dpo_schema", "data.format=preference"]))
    assert "_schema" not in str(e.value).split("choose one of")[1]


# ---- disk full while checkpointing -----------------------------------------------------------------

ENOSPC_ON_CHECKPOINT = (
    "import errno, os, sys\n"
    "import lightning_fabric.plugins.io.torch_io as torch_io\n"
    "def full(checkpoint, path):\n"
    "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))\n"
    "torch_io._atomic_save = full\n"
    "from assay.train import main\n"
    "sys.argv = ['assay-train', *sys.argv[1:]]\n"
    "main()\n"
)


@pytest.mark.cli
def test_disk_full_while_checkpointing(tmp_path):
    """The checkpoint writer fails as a full disk does (OSError ENOSPC): one line, exit 2, no summary."""
    run = tmp_path / "run"
    proc = assay_train([*FAST, f"hydra.run.dir={run}"], tmp_path, launcher=[sys.executable, "-c", ENOSPC_ON_CHECKPOINT])
    assert_one_line_error(proc, "disk full", "last.ckpt", "No space left on device")
    assert (run / "config.yaml").is_file()  # the run did start
    assert_no_summary(tmp_path)


@pytest.mark.cli
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root")
def test_disk_full_on_a_real_tiny_filesystem(tmp_path):
    """The same on a real 1 MiB tmpfs mounted as the run's checkpoint directory (a tiny_llama
    checkpoint with its Adam moments is about 13 MB)."""
    run = tmp_path / "run"
    ckpt = run / "checkpoints"
    ckpt.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(ckpt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        proc = assay_train([*FAST, f"hydra.run.dir={run}"], tmp_path)
    finally:
        subprocess.run(["umount", str(ckpt)], capture_output=True)
    assert_one_line_error(proc, "disk full", "No space left on device")
    assert_no_summary(tmp_path)
