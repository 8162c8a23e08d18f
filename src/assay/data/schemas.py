"""Row schemas of the tabular sources (``data.schema``): how a row of a Hub dataset or a local file
becomes our columns (``prompt`` and ``completion``, or ``prompt``, ``chosen`` and ``rejected``).

Each schema is one entry of ``SCHEMAS``: the raw columns it needs (checked before any row is read)
and the mapping of one row. ``columns`` renames the raw columns (``our name -> the file's name``).

- ``plain``: our columns, renamed by ``columns``
- ``alpaca``: instruction / input / output (SFT only)
- ``hh``: Anthropic HH full transcripts, the prompt being everything up to the last shared assistant turn
- ``ultrafeedback``: a prompt and message lists, binarized (the last assistant message is the response)
- ``messages``: conversations (``messages`` for SFT; ``chosen`` / ``rejected`` message lists, with or
  without a ``prompt`` message list, for preferences); the last assistant message is the trained reply
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from assay.errors import UserError

FORMATS = {"sft": ("prompt", "completion"), "preference": ("prompt", "chosen", "rejected"), "unpaired": ("prompt", "completion")}
"""Our text columns of each ``data.format``."""
LABEL = "label"
ROW_COLUMNS = {"unpaired": (LABEL,)}
"""Our columns of each ``data.format`` beyond the text ones: ``unpaired`` rows (KTO, Ethayarajh et al.
2024, arXiv 2402.01306; TRL's unpaired preference format) carry ``label``, True for a desirable
completion and False for an undesirable one."""


def as_label(value: Any, field_name: str, row_id: Any = None) -> bool:
    """A desirability label: a bool (or 0/1, "true"/"false"); one line naming the field otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    where = "" if row_id is None else f" (row {row_id})"
    raise UserError(field_name, f"{value!r}{where}", "must be a desirability label: true (desirable) or false (undesirable)")

Columns = Callable[[str], str]
"""Our column name -> the raw column that holds it."""


@dataclass(frozen=True)
class RowSchema:
    required: Callable[[Columns, str, tuple[str, ...]], list[str]]
    """(columns, format, our text columns) -> the raw columns every row must have."""
    map_row: Callable[[dict, Columns, str, str], dict]
    """(row, columns, format, prompt template) -> our text columns of that row."""
    text: Callable[[Columns, str, tuple[str, ...]], list[str]] | None = None
    """(columns, format, our text columns) -> the raw columns that must hold a string in every row
    (checked where a file is first read); None: every required column."""

    def text_columns(self, col: Columns, fmt: str, text_columns: tuple[str, ...]) -> list[str]:
        return (self.text or self.required)(col, fmt, text_columns)


SCHEMAS: dict[str, RowSchema] = {}


def schema(name: str, required: Callable[[Columns, str, tuple[str, ...]], list[str]], text: Callable[[Columns, str, tuple[str, ...]], list[str]] | None = None) -> Callable:
    """Register ``map_row`` as row schema ``name`` (what ``data.schema=name`` selects); ``text``: the
    raw columns that must be strings (default: every required one)."""

    def wrap(map_row: Callable[[dict, Columns, str, str], dict]) -> Callable:
        SCHEMAS[name] = RowSchema(required, map_row, text)
        return map_row

    return wrap


def lookup_schema(name: str) -> RowSchema:
    if name not in SCHEMAS:
        raise UserError("data.schema", name, f"must be one of {list(SCHEMAS)}")
    return SCHEMAS[name]


def _last_assistant(messages: Any) -> str:
    """UltraFeedback-binarized stores a conversation as a list of {role, content} messages."""
    if isinstance(messages, str):
        return messages
    for m in reversed(messages):
        if m.get("role") == "assistant":
            return m.get("content", "")
    return messages[-1].get("content", "") if messages else ""


def _split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Anthropic HH stores full transcripts; the prompt is everything up to the last 'Assistant:' turn
    they share, the responses are what follows it."""
    marker = "\n\nAssistant:"
    cut = chosen.rfind(marker)
    if cut < 0:
        return "", chosen, rejected
    prompt = chosen[: cut + len(marker)]
    if not rejected.startswith(prompt):
        common = os.path.commonprefix([chosen, rejected])
        cut = common.rfind(marker)
        prompt = common[: cut + len(marker)] if cut >= 0 else common
    return prompt, chosen[len(prompt):].strip(), rejected[len(prompt):].strip()


# --------------------------------------------------------------------------------------------------
# Chat data: conversations as lists of {role, content} messages (TRL's conversational format; the
# ShareGPT spelling {from: human|gpt, value} of LLaMA-Factory is read too).

SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}
CHAT_ROLES = ("system", "user", "assistant", "tool")
"""The roles chat templates render (TRL's conversational format); another role would be rendered
as a line no template knows, or dropped, without a word."""


def as_messages(value: Any, field_name: str) -> list[dict[str, str]]:
    """A conversation as [{role, content}, ...]; one line naming the field when it is not one."""
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise UserError(field_name, str(value)[:80], "must be a list of {role, content} messages")
    out = []
    for m in value:
        role = m.get("role") or SHAREGPT_ROLES.get(str(m.get("from")))
        content = m.get("content", m.get("value"))
        if role is None or content is None:
            raise UserError(field_name, str(m)[:80], "each message needs a role and a content")
        if str(role) not in CHAT_ROLES:
            raise UserError(field_name, str(m)[:80], f"role {role!r} is not one of the chat roles {list(CHAT_ROLES)}")
        out.append({"role": str(role), "content": str(content)})
    return out


def split_last_reply(messages: list[dict[str, str]], field_name: str) -> tuple[list[dict[str, str]], str]:
    """(the conversation before the last assistant message, that message's content)."""
    if not messages or messages[-1]["role"] != "assistant":
        raise UserError(field_name, str(messages)[-80:], "must end with an assistant message (the reply that is trained on)")
    return messages[:-1], messages[-1]["content"]


def plain_chat(messages: list[dict[str, str]]) -> str:
    """The plain template, for tokenizers without a chat template (``tiny_llama``) and for every
    text-based component (noise, embeddings): one ``role: content`` line per message, then
    ``assistant:``; the reply follows after ``data.separator``."""
    return "\n".join([f"{m['role']}: {m['content']}" for m in messages] + ["assistant:"])


# --------------------------------------------------------------------------------------------------
# The schemas


@schema("plain", required=lambda col, fmt, text_columns: [col(c) for c in (*text_columns, *ROW_COLUMNS.get(fmt, ()))],
        text=lambda col, fmt, text_columns: [col(c) for c in text_columns])
def _plain(row: dict, col: Columns, fmt: str, template: str) -> dict:
    out = {c: row[col(c)] for c in FORMATS[fmt]}
    if fmt == "unpaired":
        out[LABEL] = as_label(row[col(LABEL)], f"data.columns.{LABEL} ({col(LABEL)})", row.get("id"))
    return out


@schema("alpaca", required=lambda col, fmt, text_columns: [col("instruction"), col("output")])
def _alpaca(row: dict, col: Columns, fmt: str, template: str) -> dict:
    instruction, extra = row[col("instruction")], row.get(col("input")) or ""
    prompt = template.format(instruction=instruction, input=extra) if extra else instruction
    if fmt == "preference":
        raise UserError("data.schema", "alpaca", "alpaca rows have one response; use format=sft")
    return {"prompt": prompt, "completion": row[col("output")]}


@schema("hh", required=lambda col, fmt, text_columns: [col("chosen"), col("rejected")])
def _hh(row: dict, col: Columns, fmt: str, template: str) -> dict:
    prompt, chosen, rejected = _split_hh(row[col("chosen")], row[col("rejected")])
    if fmt == "sft":
        return {"prompt": prompt, "completion": chosen}
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


@schema("ultrafeedback", required=lambda col, fmt, text_columns: [col(c) for c in text_columns], text=lambda col, fmt, text_columns: [col("prompt")])
def _ultrafeedback(row: dict, col: Columns, fmt: str, template: str) -> dict:
    out = {"prompt": row[col("prompt")]}
    if fmt == "sft":
        out["completion"] = _last_assistant(row[col("chosen")] if col("chosen") in row else row[col("completion")])
    else:
        out["chosen"], out["rejected"] = _last_assistant(row[col("chosen")]), _last_assistant(row[col("rejected")])
    return out


@schema("messages", required=lambda col, fmt, text_columns: [col("messages")] if fmt == "sft" else [col("chosen"), col("rejected")], text=lambda col, fmt, text_columns: [])
def _conversation(row: dict, col: Columns, fmt: str, template: str) -> dict:
    """Message lists -> ``prompt_messages`` (the conversation before the reply) and the reply text;
    ``prompt`` is the plain rendering of the conversation."""
    if fmt == "sft":
        messages = as_messages(row[col("messages")], f"data.columns.messages ({col('messages')})")
        context, reply = split_last_reply(messages, col("messages"))
        out = {"completion": reply}
    else:
        chosen = as_messages(row[col("chosen")], col("chosen"))
        rejected = as_messages(row[col("rejected")], col("rejected"))
        prompt = row.get(col("prompt"))
        if isinstance(prompt, list):  # explicit prompt: chosen/rejected hold the reply alone
            context = as_messages(prompt, col("prompt"))
        else:  # implicit prompt: two whole conversations that differ in the last reply
            context = chosen[:-1]
            if rejected[:-1] != context:
                raise UserError(col("rejected"), str(rejected)[:80], "must share every message but the last with chosen (or give a prompt message list)")
        out = {"chosen": split_last_reply(chosen, col("chosen"))[1], "rejected": split_last_reply(rejected, col("rejected"))[1]}
    if not context:
        raise UserError(col("messages") if fmt == "sft" else col("chosen"), "[assistant only]", "needs at least one message before the assistant reply")
    return {"prompt": plain_chat(context), "prompt_messages": context, **out}
