"""Method cards: what exactly each registered method is.

Every option of a method registry carries a :class:`MethodCard` as its ``card`` class attribute,
next to the code it describes: the paper, the authors' code it was checked against, the paper's
defaults and whether assay's follow them, and every deviation with its reason. ``assay-list <group>
<option>`` prints a card; ``docs/methods.md`` lists them all (``assay-list --write-methods-doc``, see
``assay.catalog``, which also enumerates the method options); a test fails when an option lacks a card or a card names a field its option does not have.

    card: ClassVar[MethodCard] = MethodCard(
        paper="Xie et al. 2023, DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining",
        arxiv="2305.10429",
        code="sangmichaelxie/doremi: doremi/trainer.py (update_domain_weights)",
        defaults={"eta": "1 (paper: 1); follows", "smoothing": "1e-3 (run scripts); follows"},
        deviations=("...: why",),
        checked="tests/unit/test_mixing_rules.py: the update against hand-derived numbers",
    )
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class MethodCard:
    paper: str = ""
    """Authors, year and title; empty for a baseline that is no paper's method (then say so in ``notes``)."""
    arxiv: Optional[str] = None
    """arXiv id (e.g. ``2305.10429``), or null where the paper has none (then ``paper`` names the venue)."""
    code: Optional[str] = None
    """The authors' (or the reference) implementation it was checked against: ``owner/repo: path``; null
    when none was released (say so in ``notes``)."""
    defaults: dict[str, str] = field(default_factory=dict)
    """Option field -> the paper's value and whether assay's default follows it (``follows`` / ``differs:
    why``). Only fields of the option may be named."""
    deviations: tuple[str, ...] = ()
    """Every way this option differs from the paper / released recipe, each with its reason."""
    checked: str = ""
    """The test that checks it, and against what (hand-derived numbers, the authors' code, a peer)."""
    notes: str = ""
    """Anything else a user choosing this option should know (what a baseline is, cost, scale)."""


def option_fields(cls: type) -> set[str]:
    """The names a card's ``defaults`` may use: a dataclass's fields, else the constructor's parameters
    and the class's public attributes."""
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls)}
    names = {n for n in vars(cls) if not n.startswith("_")}
    for klass in cls.__mro__:
        names |= {n for n in vars(klass) if not n.startswith("_")}
    try:
        names |= set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        pass
    return names


def card_of(obj: Any) -> Optional[MethodCard]:
    card = getattr(obj, "card", None)
    return card if isinstance(card, MethodCard) else None


# --------------------------------------------------------------------------------------------------
# Rendering


def render_text(group: str, option: str, card: Optional[MethodCard], summary: str = "") -> str:
    lines = [f"{group}={option}" + (f": {summary}" if summary else "")]
    if card is None:
        return "\n".join(lines + ["  (no method card)"])
    lines.append(f"  paper:      {card.paper or '(none: not a published method)'}" + (f" (arXiv {card.arxiv})" if card.arxiv else ""))
    lines.append(f"  code:       {card.code or '(no released code)'}")
    if card.defaults:
        lines.append("  defaults:")
        width = max(len(k) for k in card.defaults)
        lines += [f"    {k:<{width}}  {v}" for k, v in card.defaults.items()]
    lines.append("  deviations:" + ("" if card.deviations else " none"))
    lines += [f"    - {d}" for d in card.deviations]
    if card.checked:
        lines.append(f"  checked:    {card.checked}")
    if card.notes:
        lines.append(f"  notes:      {card.notes}")
    return "\n".join(lines)
