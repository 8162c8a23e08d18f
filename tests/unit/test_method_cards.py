"""Every method option carries a method card (``assay.cards``) that names only its own fields, and
docs/methods.md is the rendering of the cards as they are now."""

from __future__ import annotations

import re

import pytest

from assay import catalog
from assay.cards import MethodCard, card_of, option_fields

OPTIONS = catalog.method_options()
PAIRS = [(group, option) for group, entries in OPTIONS.items() for option in sorted(entries)]
IDS = [f"{group}={option}" for group, option in PAIRS]

WITHOUT_CARD: set[tuple[str, str]] = set()
"""Options allowed to lack a card, each with the reason on its line. Empty: a method without a card
(a new option, or one whose owner has not written it yet) fails here until it has one."""

ARXIV = re.compile(r"^\d{4}\.\d{4,5}$")


@pytest.mark.parametrize("group,option", PAIRS, ids=IDS)
def test_every_method_option_has_a_card(group, option):
    if (group, option) in WITHOUT_CARD:
        pytest.skip("allowed without a card (see WITHOUT_CARD)")
    card = card_of(OPTIONS[group][option])
    assert isinstance(card, MethodCard), f"{group}={option} has no method card: give its class `card: ClassVar[MethodCard] = MethodCard(...)`"


@pytest.mark.parametrize("group,option", PAIRS, ids=IDS)
def test_a_card_names_only_fields_of_its_option_and_a_well_formed_arxiv_id(group, option):
    obj = OPTIONS[group][option]
    card = card_of(obj)
    if card is None:
        pytest.skip("no card (the test above reports it)")
    unknown = sorted(set(card.defaults) - option_fields(obj))
    assert not unknown, f"{group}={option}: the card's defaults name {unknown}, which are not fields of {getattr(obj, '__name__', obj)}"
    assert card.arxiv is None or ARXIV.match(card.arxiv), f"{group}={option}: arXiv id {card.arxiv!r} is not of the form NNNN.NNNNN"
    assert card.paper or card.notes, f"{group}={option}: a card without a paper says in notes what the option is a baseline for"


def test_a_card_is_a_class_attribute_not_a_config_field():
    import dataclasses

    for group, option in PAIRS:
        obj = OPTIONS[group][option]
        if dataclasses.is_dataclass(obj):
            assert "card" not in {f.name for f in dataclasses.fields(obj)}, f"{group}={option}: annotate card as ClassVar[MethodCard]"


def test_methods_doc_is_current():
    text = catalog.METHODS_DOC.read_text() if catalog.METHODS_DOC.is_file() else ""
    assert text == catalog.render_markdown(), "docs/methods.md is out of date: regenerate it with `assay-list --write-methods-doc`"


def test_assay_list_prints_the_card_of_an_option(capsys):
    catalog.main(["objective", "dpo"])
    out = capsys.readouterr().out
    assert out.startswith("objective=dpo: ")
    assert "paper:" in out and "arXiv 2305.18290" in out and "defaults:" in out and "beta" in out and "deviations:" in out


def test_assay_list_describes_a_preset_and_a_non_method_option(capsys):
    catalog.main(["objective", "dr_dpo"])
    assert capsys.readouterr().out.startswith("objective=dr_dpo: ")
    catalog.main(["trainer", "cpu"])
    assert capsys.readouterr().out.strip() == f"trainer=cpu: {catalog.group_options('trainer')['cpu']}"
    catalog.main(["mixsearch/proposer", "simulation"])
    assert "arXiv 2407.01492" in capsys.readouterr().out


@pytest.mark.parametrize("argv,fragment", [
    (["objective", "nope"], "objective=nope: unknown option"),
    (["trainer", "nope"], "trainer=nope: unknown option"),
    (["nogroup", "dpo"], "group='nogroup': unknown group"),
])
def test_an_unknown_option_or_group_is_one_line_and_exit_2(capsys, argv, fragment):
    with pytest.raises(SystemExit) as e:
        catalog.main(argv)
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and fragment in captured.err


def test_write_methods_doc(tmp_path):
    path = catalog.write_methods_doc(tmp_path / "methods.md")
    assert path.read_text() == catalog.render_markdown()
