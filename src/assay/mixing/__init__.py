"""Mixture numerics: the domain-drawing sampler and the online mixers, one module per method.

Where each kind of mixture lives, and why: the static and scheduled mixtures (``single``,
``weights``, ``temperature``, ``schedule``) are in ``assay.data.mixture``, because the data layer
builds the training examples with them (a static mixture resamples the pool before tokenization) and
the data layer sits below this one (``tests/unit/test_import_layers.py``): moving them here would make
the data layer import upward. Everything that changes the weights during training is here:

- ``base``      ``OnlineMixture`` (the config base), ``Mixer`` (the runtime base), ``DomainStats``
- ``odm``       ``mixture=odm``: config, mixer and the EXP3 rule (Albalak et al. 2023)
- ``skill_it``  ``mixture=skill_it``: config, mixer, the multiplicative-weights rule and the gradient probe
  (Chen et al. 2023); ``skill_graph`` learns its graph from short training runs
- ``doremi_resample`` ``mixture=doremi_resample``: config, mixer, the update rule and the reference's
  cached per-example losses (DoReMi's update used to resample; not the recipe)
- ``doremi``    ``mixture=doremi``: DoReMi's proxy stage as its authors ran it; ``group_dro`` its runtime
- ``sampler``   ``DomainSampler``: draws each batch's domains by the current weights, resumable
- ``callbacks`` the online-mixer callback and the per-epoch realised-mixture recorder
- ``run``       wires the above into a run (one call from ``train.py``)

A new online mixer is one module: a registered ``OnlineMixture`` subclass whose ``mixer()`` builds a
``Mixer`` subclass (its update rule beside it), plus a YAML in ``conf/mixture/`` only for a preset.
"""
