"""Mixture numerics: allocation helpers, schedules, the domain-drawing sampler and online mixers.

The mixture *configs* live in ``assay.data.mixture`` (static and scheduled) and
``assay.data.mixers`` (online); this package holds what they compute with:

- ``rules``     pure update rules of the online mixers (DoReMi, ODM/EXP3, Skill-it), state as arrays
- ``sampler``   ``DomainSampler``: draws each batch's domains by the current weights, resumable
- ``callbacks`` the online-mixer callback and the per-epoch realised-mixture recorder
- ``reference`` DoReMi's reference per-example losses (computed once, cached on disk)
- ``run``       wires the above into a run (one call from ``train.py``)
"""
