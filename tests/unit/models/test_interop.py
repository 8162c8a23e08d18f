"""Interoperability without training: tokenizer decoding, exact match on multi-character answers,
chat (message-list) data, extra data columns, and safe checkpoint loading."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from assay.data.collate import IGNORE, Collator, tokenize_split
from assay.models.tokenizer import train_corpus_tokenizer
from tests.conftest import USER_MODEL_CACHE

# SmolLM2-Instruct's template (the one its GGUF file carries), so these tests need no model files.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ANSWERS = ["74", "New York", "1990 and 2024", "3.14", "x-ray 12"]


def corpus_tokenizer(extra: list[str] = ()):
    texts = ["copy : k d a m =", "k d a m", "add : 4 7 + 3 8 =", "8 5", "a b\nc", *ANSWERS, *extra]
    alphabet = set("".join(texts)) - {" "}
    return train_corpus_tokenizer(texts, 256, alphabet)


def test_corpus_tokenizer_decodes_to_the_exact_text(tmp_path):
    tok = corpus_tokenizer()
    for text in [*ANSWERS, "7 4", "k d a m", "a  b\nc 1"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    # skills symbols stay one token each, spaces included
    assert tok.convert_ids_to_tokens(tok(" k d a m", add_special_tokens=False)["input_ids"]) == ["▁k", "▁d", "▁a", "▁m"]
    assert len(tok("add : 4 7 + 3 8 =", add_special_tokens=False)["input_ids"]) == 8
    # and so after a save / AutoTokenizer round trip (what model/ holds)
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.decode(again("74 and New York", add_special_tokens=False)["input_ids"]) == "74 and New York"


def test_exact_match_succeeds_on_multi_digit_and_multi_word_answers():
    """The evaluation's own code path: greedy generation -> decode -> normalise -> compare."""
    from assay.module import AssayModule

    tok = corpus_tokenizer()
    replies = [tok(" " + a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for a in ANSWERS]
    prompt = torch.ones(len(ANSWERS), 2, dtype=torch.long)

    class Echo:  # a "model" whose greedy continuation is exactly the gold answer
        def generate(self, input_ids, **kwargs):
            width = max(len(r) for r in replies)
            rows = [r + [tok.pad_token_id] * (width - len(r)) for r in replies]
            return torch.cat([input_ids, torch.tensor(rows)], dim=1)

    fake = SimpleNamespace(model=Echo(), tokenizer=tok, evaluation=SimpleNamespace(max_new_tokens=8))
    fake.greedy_texts = lambda model, batch: AssayModule.greedy_texts(fake, model, batch)
    batch = {"prompt_input_ids": prompt, "prompt_attention_mask": torch.ones_like(prompt), "answers": ANSWERS}
    exact, reward = AssayModule.greedy_scores(fake, batch)
    assert exact.tolist() == [1.0] * len(ANSWERS) and reward.tolist() == [1.0] * len(ANSWERS)
    batch["answers"] = ["7 4", "NewYork", "1990 and 2025", "3.14", "x-ray 12"]
    assert AssayModule.greedy_scores(fake, batch)[0].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def chat_rows(n: int) -> list[dict]:
    return [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"What is {i} + {i}?"},
                      {"role": "assistant", "content": f"{2 * i} exactly"}]}
        for i in range(10, 10 + n)
    ]


def test_messages_schema_maps_conversations_for_sft_and_preferences(tmp_path):
    from assay.data.tables import JsonlData

    sft = JsonlData(train_file=str(write_jsonl(tmp_path / "sft.jsonl", chat_rows(40))), schema="messages", seed=0).load()
    row = sft["train"][0]
    assert row["prompt_messages"][-1]["role"] == "user" and len(row["prompt_messages"]) == 2
    assert row["completion"] == row["answer"] and row["completion"].endswith("exactly")
    assert row["prompt"].startswith("system: Be brief.\nuser: What is") and row["prompt"].endswith("\nassistant:")

    # TRL's conversational preference rows: implicit prompt (whole conversations) and explicit prompt
    user = [{"role": "user", "content": "Capital of France?"}]
    implicit = [{"chosen": user + [{"role": "assistant", "content": "Paris"}], "rejected": user + [{"role": "assistant", "content": "Rome"}]}] * 20
    explicit = [{"prompt": user, "chosen": [{"role": "assistant", "content": "Paris"}], "rejected": [{"role": "assistant", "content": "Lyon"}]}] * 20
    for name, rows, rejected in (("implicit", implicit, "Rome"), ("explicit", explicit, "Lyon")):
        pref = JsonlData(train_file=str(write_jsonl(tmp_path / f"{name}.jsonl", rows)), schema="messages", format="preference", seed=0).load()
        r = pref["train"][0]
        assert (r["chosen"], r["rejected"], r["prompt_messages"]) == ("Paris", rejected, user)

    # ShareGPT spelling (LLaMA-Factory): {from: human|gpt, value}
    share = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello there"}]}] * 20
    data = JsonlData(train_file=str(write_jsonl(tmp_path / "share.jsonl", share)), schema="messages", columns={"messages": "conversations"}, seed=0)
    assert data.load()["train"][0]["prompt_messages"] == [{"role": "user", "content": "hi"}]


def test_messages_schema_bad_rows_are_one_line(tmp_path):
    from assay.data.tables import JsonlData
    from assay.errors import UserError

    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]}] * 20
    with pytest.raises(UserError, match="must end with an assistant message"):
        JsonlData(train_file=str(write_jsonl(tmp_path / "bad.jsonl", rows)), schema="messages", seed=0).load()
    with pytest.raises(UserError, match="data.chat_template"):
        JsonlData(train_file="x.jsonl", chat_template="sometimes")


def test_chat_template_prompt_and_assistant_only_labels(tmp_path):
    """Prompt = the conversation rendered up to the assistant's turn; the labels cover the reply and
    its end-of-turn marker only (no doubled eos, no trailing newline)."""
    from assay.data.tables import JsonlData

    data = JsonlData(train_file=str(write_jsonl(tmp_path / "sft.jsonl", chat_rows(40))), schema="messages", seed=0)
    train = data.load()["train"]
    tok = corpus_tokenizer(extra=["<|im_start|>", "<|im_end|>", "system user assistant Be brief. What is exactly ?", *train["prompt"]])
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHATML
    ds = tokenize_split(train, tok, "sft", " ", 256, chat_template="messages")
    row = ds[0]
    assert tok.decode(row["prompt_ids"]) == tok.apply_chat_template(row["prompt_messages"], tokenize=False, add_generation_prompt=True)
    assert tok.decode(row["prompt_ids"]).endswith("<|im_start|>assistant\n")
    assert tok.decode(row["completion_ids"]) == row["completion"] + "<|im_end|>"
    assert row["completion_ids"].count(tok.eos_token_id) == 1
    batch = Collator(tok.pad_token_id, "sft", with_generation=True)([{**row, "_row": 0}])
    labels = batch["labels"][0]
    scored = labels[labels != IGNORE].tolist()
    assert scored == row["completion_ids"] and tok.decode(scored) == row["completion"] + "<|im_end|>"
    assert tok.decode(batch["prompt_input_ids"][0].tolist()).endswith("assistant\n")

    # preference pairs: both replies continue the same templated prompt
    pref = [{"prompt": [{"role": "user", "content": "What is 10 + 10?"}], "chosen": [{"role": "assistant", "content": "20 exactly"}],
             "rejected": [{"role": "assistant", "content": "21 exactly"}]}] * 20
    pdata = JsonlData(train_file=str(write_jsonl(tmp_path / "pref.jsonl", pref)), schema="messages", format="preference", seed=0)
    prow = tokenize_split(pdata.load()["train"], tok, "preference", " ", 256)[0]
    assert tok.decode(prow["chosen_ids"]) == "20 exactly<|im_end|>" and tok.decode(prow["rejected_ids"]) == "21 exactly<|im_end|>"
    assert tok.decode(prow["prompt_ids"]).endswith("<|im_start|>assistant\n")

    # never: the plain rendering even though the tokenizer has a template
    plain = tokenize_split(train, tok, "sft", " ", 256, chat_template="never")[0]
    assert tok.decode(plain["prompt_ids"]) == row["prompt"] and plain["completion_ids"][-1] == tok.eos_token_id


def test_without_a_chat_template_message_data_uses_the_plain_template(tmp_path):
    from assay.data.tables import JsonlData

    train = JsonlData(train_file=str(write_jsonl(tmp_path / "sft.jsonl", chat_rows(40))), schema="messages", seed=0).load()["train"]
    tok = corpus_tokenizer(extra=list(train["prompt"]) + list(train["completion"]))
    assert tok.chat_template is None
    row = tokenize_split(train, tok, "sft", " ", 256)[0]
    assert tok.decode(row["prompt_ids"]) == row["prompt"] and row["prompt"].endswith("assistant:")
    assert tok.decode(row["completion_ids"], skip_special_tokens=True) == " " + row["completion"]


def test_smollm2_template_from_its_gguf(tmp_path):
    """The real SmolLM2-Instruct tokenizer (from the fetched GGUF) renders message data with its template."""
    from assay.data.tables import JsonlData
    from assay.models.presets import SMOLLM2_FILE

    gguf = USER_MODEL_CACHE / SMOLLM2_FILE
    if not gguf.is_file():
        pytest.skip("run `assay-fetch smollm2` (make test does) for the SmolLM2 tokenizer")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    train = JsonlData(train_file=str(write_jsonl(tmp_path / "sft.jsonl", chat_rows(40))), schema="messages", seed=0).load()["train"]
    row = tokenize_split(train, tok, "sft", " ", 256)[0]
    assert tok.decode(row["prompt_ids"]).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert tok.decode(row["completion_ids"]) == row["completion"] + "<|im_end|>"


def test_extra_columns_are_kept_when_asked(tmp_path):
    from assay.data.tables import JsonlData
    from assay.errors import UserError

    rows = [{"question": f"q{i}", "answer": f"a{i}", "embedding": [float(i), 1.0], "note": "x"} for i in range(40)]
    path = str(write_jsonl(tmp_path / "e.jsonl", rows))
    cols = {"prompt": "question", "completion": "answer"}
    assert "embedding" not in JsonlData(train_file=path, columns=cols, seed=0).load()["train"].column_names
    kept = JsonlData(train_file=path, columns=cols, keep_columns=["embedding"], seed=0).load()
    assert all("embedding" in kept[s].column_names and "note" not in kept[s].column_names for s in kept)
    with pytest.raises(UserError, match="data.keep_columns"):
        JsonlData(train_file=path, columns=cols, keep_columns=["vector"], seed=0).load()


def test_embedder_column_asks_the_loader_for_its_column(compose_cfg, tmp_path):
    from assay.config import validate

    spec = validate(compose_cfg(["data=jsonl", "data.train_file=x.jsonl", "selection=lava", "selection.embedder=column"]))
    assert spec.data.keep_columns == ["embedding"]
    spec = validate(compose_cfg(["data=jsonl", "data.train_file=x.jsonl", "selection=lava", "selection.embedder=column",
                                 "selection.embedder_options={column: vec}", "data.keep_columns=[vec]"]))
    assert spec.data.keep_columns == ["vec"]


class _Payload:
    """Unpickling this runs code: what a malicious ``dynamics_from`` checkpoint would carry."""

    def __reduce__(self):
        return (Path.touch, (Path(_Payload.marker),))


def test_gradient_checkpoints_are_loaded_without_unpickling_objects(tmp_path):
    from assay.dynamics.checkpoints import load_checkpoint
    from assay.errors import UserError

    model = torch.nn.Linear(2, 2)
    _Payload.marker = str(tmp_path / "ran")
    bad = tmp_path / "step=1.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "hook": _Payload()}, bad)
    with pytest.raises(UserError, match="selection.dynamics_from"):
        load_checkpoint(model, bad, ["weight"])
    assert not (tmp_path / "ran").exists()
    # tensors and plain values load as before
    good = tmp_path / "step=2.ckpt"
    torch.save({"state_dict": {f"model.{k}": v + 1 for k, v in model.state_dict().items()}, "lr_schedulers": [{"_last_lr": [0.5]}]}, good)
    lr, moments = load_checkpoint(model, good, ["weight"])
    assert lr == 0.5 and moments is None
    with pytest.raises(pickle.UnpicklingError):
        torch.load(bad, weights_only=True)


CLI = """
import sys
from assay.lazy import HEAVY
sys.argv = {argv!r}
try:
    if sys.argv[0] == "assay-list":
        from assay.catalog import main
        main(sys.argv[1:])
    else:
        from assay.train import main
        main()
    code = 0
except SystemExit as e:
    code = e.code
print("EXIT", code, "LOADED", sorted(m for m in HEAVY if m in sys.modules))
"""


@pytest.mark.parametrize(
    "argv, code",
    [
        (["assay-list"], 0),
        (["assay-list", "selection"], 0),
        (["assay-train", "--help"], 0),
        (["assay-train", "--cfg", "job", "objective=dpo", "data.format=preference"], 0),
        (["assay-train", "objective=dpoo"], 2),
        (["assay-train", "optim.lr=0"], 2),
        (["assay-train", "optim.lrr=0.1"], 2),
        (["assay-train", "-m", "seed=0,1", "data.batch_size=0"], 2),
    ],
)
@pytest.mark.cli
def test_listing_help_and_user_errors_do_not_import_the_training_stack(argv, code):
    """What decides how long these take is import time: they must not load torch, transformers,
    datasets, Lightning or pandas (a run imports them when it starts)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", CLI.format(argv=argv)], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    last = out.stdout.strip().splitlines()[-1]
    assert last == f"EXIT {code} LOADED []", (last, out.stderr[-1500:])
    if code == 2:
        assert out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.cli
def test_make_test_fetches_every_model_the_tests_use():
    import subprocess

    from tests.conftest import REPO

    out = subprocess.run(["make", "-n", "test", "models"], capture_output=True, text=True, cwd=REPO)
    fetches = [line for line in out.stdout.splitlines() if "assay-fetch" in line]
    assert len(fetches) == 2 and all("assay-fetch smollm2 minilm" in line for line in fetches), out.stdout
