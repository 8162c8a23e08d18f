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
