"""A LoRA run's adapter names a base that stays loadable when the run moves.

``adapter_config.json``'s ``base_model_name_or_path`` is what peft loads the base from. It is

- the Hub id the run trained on (``model.name_or_path=HuggingFaceTB/SmolLM2-135M-Instruct``);
- a path **relative to the adapter directory** when the base lies in the run itself (``base_model/``,
  written when the base exists only in this run: a config-built model, a de-quantised GGUF) or beside
  it (the final ``model/`` of an earlier stage of the same recipe, or of a run in the same folder):
  moving the run, or the recipe's folder, keeps it loadable;
- the absolute path otherwise (one's own base directory elsewhere on the machine).

peft resolves a relative path against the working directory, so :func:`load_adapter` resolves it
against the adapter directory instead (peft's own ``AutoPeftModelForCausalLM.from_pretrained('.')``
works from inside the adapter directory). Each adapter directory gets a ``README.md`` saying which
base it needs and how to load it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from assay.errors import UserError


def portable_base(base: str, adapter_dir: Path) -> str:
    """``base`` as the adapter should name it (see the module docstring)."""
    path = Path(base).expanduser()
    if not path.is_absolute() and not path.exists():
        return base  # a Hub id
    path, adapter_dir = path.resolve(), Path(adapter_dir).resolve()
    run_dir = adapter_dir.parent
    if path.is_relative_to(run_dir.parent):  # in this run, or beside it (a recipe's earlier stage)
        return os.path.relpath(path, adapter_dir)
    return str(path)


def base_of(adapter_dir: Path) -> str:
    """Where the base of the adapter in ``adapter_dir`` loads from: a Hub id or an existing path
    (a relative one resolved against the adapter directory)."""
    adapter_dir = Path(adapter_dir)
    config = adapter_dir / "adapter_config.json"
    if not config.is_file():
        raise UserError("adapter", str(adapter_dir), "has no adapter_config.json: point at a LoRA run's adapter/ directory")
    base = json.loads(config.read_text())["base_model_name_or_path"]
    relative = (adapter_dir / base)
    if not Path(base).is_absolute() and relative.exists():
        return str(relative.resolve())
    return base


def load_adapter(adapter_dir: str | Path, merge: bool = False, **from_pretrained: Any):
    """The adapter in ``adapter_dir`` on its base (a ``PeftModel``; merged into a plain model with
    ``merge=True``), from any working directory."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter_dir = Path(adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(base_of(adapter_dir), **from_pretrained)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    return model.merge_and_unload() if merge else model


def write_adapter_card(adapter_dir: Path, base: str, origin: Optional[str] = None) -> None:
    """``README.md`` of an adapter directory: its base and how to load it (replaces peft's empty template)."""
    hub = not Path(base).is_absolute() and not (adapter_dir / base).exists()
    relative = not hub and not Path(base).is_absolute()
    where = ("the Hub model `" + base + "`" if hub else
             f"`{base}`, relative to this directory" if relative else f"`{base}`")
    lines = ["---", "library_name: peft", *([f"base_model: {base}"] if hub else []), "tags:", "- lora", "- assay", "---", "",
             "# LoRA adapter trained with assay", "",
             f"Base weights: {where}" + (f" ({origin})" if origin else "") + ".", ""]
    if relative:
        lines += ["The base is named relative to this directory, so the run (or the recipe's folder) can move as a whole. "
                  "peft resolves it against the working directory: load from inside this directory, or with assay from anywhere.", ""]
    lines += ["```python", "from assay.models.adapters import load_adapter", f"model = load_adapter({str(adapter_dir)!r})  # merge=True for a plain model",
              "```", "", "```python", "from peft import AutoPeftModelForCausalLM",
              f"model = AutoPeftModelForCausalLM.from_pretrained({'.' if relative else str(adapter_dir)!r})" + ("  # from inside this directory" if relative else ""),
              "```", ""]
    (adapter_dir / "README.md").write_text("\n".join(lines))
