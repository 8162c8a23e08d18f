import torch

from assay.data.collate import IGNORE, Collator
from assay.dynamics.store import PerSampleStore, read_store


def test_store_parts_and_truncation(tmp_path):
    store = PerSampleStore(tmp_path)
    for step in range(1, 7):
        store.append(step, {"id": ["a", "b"], "step": [step, step], "loss": [0.1 * step, 0.2]})
        if step % 3 == 0:
            store.flush()
    df = read_store(tmp_path)
    assert len(df) == 12 and list(df["step"].unique()) == [1, 2, 3, 4, 5, 6]
    store.truncate_after(4)
    df = read_store(tmp_path)
    assert df["step"].max() == 4 and len(df) == 8
    assert not df.duplicated(["id", "step"]).any()


def test_collator_masks_prompt_and_stacks_pairs():
    rows = [
        {"id": "a", "_row": 0, "source": "s", "prompt_ids": [5, 6], "chosen_ids": [7, 2], "rejected_ids": [8, 9, 2], "answer": "x"},
        {"id": "b", "_row": 1, "source": "s", "prompt_ids": [5], "chosen_ids": [7, 2], "rejected_ids": [9, 2], "answer": "y"},
    ]
    batch = Collator(pad_id=0, data_format="preference", with_generation=True)(rows)
    assert batch["input_ids"].shape == (4, 5)
    assert batch["input_ids"][0].tolist() == [5, 6, 7, 2, 0]
    assert batch["labels"][0].tolist() == [IGNORE, IGNORE, 7, 2, IGNORE]
    assert batch["labels"][2].tolist() == [IGNORE, IGNORE, 8, 9, 2]  # rejected of row a
    assert batch["prompt_input_ids"].tolist() == [[5, 6], [0, 5]]  # left-padded for generation
    assert batch["prompt_attention_mask"].tolist() == [[1, 1], [0, 1]]
    assert torch.equal(batch["index"], torch.tensor([0, 1]))


def test_store_keeps_dtypes_and_steps_with_different_columns(tmp_path):
    store = PerSampleStore(tmp_path)
    store.append(0, {"id": ["a", "b"], "step": [0, 0], "loss": [0.5, 0.25], "is_flipped": [True, False]})
    store.append(1, {"id": ["a", "b"], "step": [1, 1], "loss": [0.4, 0.2], "is_flipped": [False, False]})
    store.flush()
    store.append(2, {"id": ["a"], "step": [2], "loss": [0.3]})
    store.append(3, {"id": ["a"], "step": [3], "loss": [0.1], "kept": [1.0]})  # a column only some steps have
    store.flush()
    df = read_store(tmp_path)
    assert df["step"].tolist() == [0, 0, 1, 1, 2, 3] and str(df["step"].dtype) == "int64"
    assert df["loss"].tolist() == [0.5, 0.25, 0.4, 0.2, 0.3, 0.1]
    assert df["is_flipped"].iloc[:4].tolist() == [True, False, False, False]
    assert df["kept"].isna().tolist() == [True] * 5 + [False]
