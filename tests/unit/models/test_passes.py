"""The model-pass layer: padded batches, token weights and the hidden-state pooling every scorer shares."""

import datasets
import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from assay.data.collate import IGNORE
from assay.models.passes import pad_rows, padded_batches, pool_hidden, pooled_hidden_states, token_weights


def test_pad_rows_right_pads_and_labels_the_response():
    b = pad_rows([[5, 6], [7]], [[8], [9, 10, 11]], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 8, 0], [7, 9, 10, 11]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert b["labels"].tolist() == [[IGNORE, IGNORE, 8, IGNORE], [IGNORE, 9, 10, 11]]
    alone = pad_rows([[5, 6]], [[8]], pad_id=0, with_prompt=False, bos_id=1)
    assert alone["input_ids"].tolist() == [[1, 8]] and alone["labels"].tolist() == [[IGNORE, 8]]


def test_token_weights():
    b = pad_rows([[5, 6], [7, 7]], [[8], []], pad_id=0)
    assert token_weights(b).tolist() == [[1, 1, 1], [1, 1, 0]]
    assert token_weights(b, "position").tolist() == [[1, 2, 3], [1, 2, 0]]
    # response tokens only; a row without a response keeps all its tokens
    assert token_weights(b, "position", response_only=True).tolist() == [[0, 0, 3], [1, 2, 0]]


def test_pooling_does_not_depend_on_the_batch_a_row_is_in():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))
    ds = datasets.Dataset.from_dict({"prompt_ids": [[3, 4], [5], [6, 7, 8]], "completion_ids": [[9], [10, 11, 12, 13], [14]]})
    together = pooled_hidden_states(model, padded_batches(ds, 0, 3), normalize=True)
    alone = pooled_hidden_states(model, padded_batches(ds, 0, 1), normalize=True)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-6)
    hidden = torch.arange(6.0).view(1, 3, 2)
    assert pool_hidden(hidden, torch.tensor([[1.0, 0.0, 3.0]])).tolist() == [[3.0, 4.0]]
