"""Mixture numerics: allocation helpers, schedules, the domain-drawing sampler and online mixers.

The static and scheduled mixture configs live in ``assay.data.mixture``; this package holds the
online mixers' configs and what every mixture computes with:

- ``mixers``    the online mixers' configs (config group ``mixture``: doremi, odm, skill_it)
- ``rules``     pure update rules of the online mixers (DoReMi, ODM/EXP3, Skill-it), state as arrays
- ``sampler``   ``DomainSampler``: draws each batch's domains by the current weights, resumable
- ``callbacks`` the online-mixer callback and the per-epoch realised-mixture recorder
- ``reference`` DoReMi's reference per-example losses (computed once, cached on disk)
- ``run``       wires the above into a run (one call from ``train.py``)
"""
