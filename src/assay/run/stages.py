"""Multi-stage recipes (``stages: [{name, overrides, init_from_previous}]``, e.g. ``experiment=sft_then_dpo``):
the stage entries, each stage's job overrides, and the check of every stage before the first starts.

A stage's job is the recipe's stage overrides, then the command line, then the command line's
overrides for that stage alone, then ``stage=<name> stages=[]``; every stage after the first also gets
``previous_stage=<previous stage's directory>`` (its overrides may interpolate ``${previous_stage}``)
and starts from that stage's final model unless it sets ``init_from_previous: false``.

Each stage takes its own data (or anything else) with a ``<stage>:`` prefix, no quoting needed:

    assay-train experiment=sft_then_dpo sft:data=jsonl sft:data.train_file=chat.jsonl \
        dpo:data=jsonl dpo:data.train_file=prefs.jsonl dpo:data.format=preference

:func:`stage_prefixed_args` turns those into ``stage_args.<stage>=[...]`` before Hydra parses the line.

Before anything trains, :func:`check_stages` composes and validates every stage's job, its data files
included (a DPO stage whose file lacks ``chosen``/``rejected`` is refused before the SFT stage runs).
What an earlier stage will produce (its directory, its model) cannot exist yet: errors about those
paths are left to the stage itself.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from assay.errors import UserError

STAGE_KEYS = ("name", "overrides", "init_from_previous")
PENDING = "/assay-stage-output-not-yet-written"
"""Stands for an earlier stage's directory while the stages are checked before any runs."""


STAGE_PREFIX = re.compile(r"^(?P<stage>[A-Za-z_][A-Za-z0-9_-]*):(?P<override>[^=:]+=.*)$")
"""``<stage>:<key>=<value>``: a colon before the first ``=`` (a Hydra key never holds one)."""


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def stage_prefixed_args(argv: list[str]) -> list[str]:
    """``dpo:data.train_file=p.jsonl`` -> ``++stage_args.dpo=['data.train_file=p.jsonl']`` (one entry per
    stage, in the order given); every other argument as it is."""
    rest, per_stage = [], {}
    for arg in argv:
        m = STAGE_PREFIX.match(arg)
        if m is None:
            rest.append(arg)
        else:
            per_stage.setdefault(m.group("stage"), []).append(m.group("override"))
    return rest + [f"++stage_args.{name}=[{','.join(_quoted(o) for o in overrides)}]" for name, overrides in per_stage.items()]


def stage_entries(cfg: DictConfig) -> list[dict[str, Any]]:
    """The recipe's stages with their overrides unresolved (``${previous_stage}`` is filled in per
    stage by Hydra, not here), each checked for unknown keys before any stage runs."""
    entries = []
    for i, stage in enumerate(OmegaConf.to_container(cfg.stages, resolve=False)):
        if not isinstance(stage, dict) or "name" not in stage:
            raise UserError(f"stages[{i}]", stage, "must be a mapping with a name and overrides")
        unknown = sorted(set(stage) - set(STAGE_KEYS))
        if unknown:
            raise UserError(f"stages[{i}].{unknown[0]}", stage[unknown[0]], f"is not a stage field; allowed: {list(STAGE_KEYS)}")
        init = stage.get("init_from_previous", True)
        if not isinstance(init, bool):
            raise UserError(f"stages[{i}].init_from_previous", init, "must be true or false")
        entries.append({"name": str(stage["name"]), "overrides": [str(o) for o in stage.get("overrides") or []], "init_from_previous": init,
                        "args": [str(o) for o in (cfg.get("stage_args") or {}).get(str(stage["name"])) or []]})
    names = [e["name"] for e in entries]
    for name in (cfg.get("stage_args") or {}):
        if name not in names:
            raise UserError(f"{name}:", name, f"is not a stage of this recipe; its stages: {names}" if names else
                            "names a stage, but this run has no stages (choose a multi-stage recipe, e.g. experiment=sft_then_dpo)")
    return entries


def stage_overrides(stage: dict[str, Any], command_line: list[str], previous: Optional[str]) -> list[str]:
    """The overrides of one stage's job: the recipe's stage overrides, the command line, the command
    line's overrides for this stage (each later one has the last word)."""
    out = [*stage["overrides"], *command_line, *stage["args"], f"stage={stage['name']}", "stages=[]"]
    if previous is not None:
        out.append(f"previous_stage={previous}")
        if stage["init_from_previous"]:
            out.append(f"model.init_from={previous}")
    return out


def check_stages(cfg: DictConfig, command_line: list[str], compose: Callable[[list[str]], Any],
                 check: Callable[[Any], None]) -> int:
    """Compose every stage's job (``compose(overrides)``) and run ``check(cfg)`` on it (validation and
    the data files); returns the number of stages checked. A refusal names the stage."""
    previous = None
    entries = stage_entries(cfg)
    for stage in entries:
        try:
            # The earlier stage's model is not there yet: the stage is checked on its own starting model.
            overrides = [o for o in stage_overrides(stage, command_line, previous) if o != f"model.init_from={PENDING}"]
            check(compose(overrides))
        except UserError as e:
            if PENDING in f"{e.value} {e.allowed}":
                pass  # about what the previous stage will write: checked when the stage starts
            else:
                raise UserError(e.field, e.value, f"{e.allowed} (in stage {stage['name']!r}, checked before any stage runs)") from None
        previous = PENDING
    return len(entries)
