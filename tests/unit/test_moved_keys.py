"""A config field that moved is declared by the class that had it (``moved_keys``), never filled into a
shared table when some module happens to be imported; the pointer is read from the refusing node's class,
or from the schemas of the config group the key's parent names."""

import dataclasses

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

import assay.config  # noqa: F401  (registers every schema)
import assay.errors
from assay.config import CollabConfig
from assay.errors import MOVED_KEYS_ATTRIBUTE, explain, moved_to
from assay.registry import _REGISTRY


def declaring_classes() -> list[type]:
    classes = {cls for entries in _REGISTRY.values() for cls in entries.values()} | {CollabConfig}
    return sorted((c for c in classes if getattr(c, MOVED_KEYS_ATTRIBUTE, None)), key=lambda c: c.__name__)


def test_no_shared_table_of_moved_keys():
    assert not any(isinstance(v, dict) and "moved" in k.lower() for k, v in vars(assay.errors).items())


def test_every_moved_key_is_a_field_the_class_no_longer_has():
    classes = declaring_classes()
    assert {c.__name__ for c in classes} >= {"CollabConfig", "SkillItMixture"} and any(c.__module__.startswith("assay.selection") for c in classes)
    for cls in classes:
        moved = getattr(cls, MOVED_KEYS_ATTRIBUTE)
        assert not set(moved) & {f.name for f in dataclasses.fields(cls)}, cls
        assert all(isinstance(v, str) and v for v in moved.values()), cls


def test_the_pointer_comes_from_the_refusing_class():
    node = OmegaConf.structured(CollabConfig)
    with pytest.raises((ConfigKeyError, ConfigAttributeError)) as e:
        node.mode = "merge"
    assert explain(e.value) == f"mode: unknown key; it moved to {CollabConfig.moved_keys['mode']}"
    assert moved_to("collab.density", CollabConfig) == CollabConfig.moved_keys["density"]
    assert moved_to("collab.rounds", CollabConfig) is None


def test_the_group_answers_when_the_refusing_node_is_another_class_or_none():
    from assay.mixing.skill_it import SkillItMixture

    assert moved_to("mixture.probe", None) == SkillItMixture.moved_keys["probe"]  # e.g. mixture=doremi_resample mixture.probe=true
    assert moved_to("collab.mode", None) == CollabConfig.moved_keys["mode"]  # no collab chosen: the node is None
    assert moved_to("collab.aggregation.density", None) is None  # a rule's field, not the former collab field
    assert moved_to("trainer.fraction", None) is None and moved_to("fraction", None) is None
