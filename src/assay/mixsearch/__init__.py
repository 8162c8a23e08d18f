"""Mixture search from proxy runs: swarm → fit → propose → validate, plus DDO / AutoScale.

RegMix (Liu et al. 2024), Data Mixing Laws (Ye et al. 2024), BiMix (Ge et al. 2024) and AutoScale /
DDO (Kang et al. 2024) share one shape: train many small proxies on different mixtures, fit the
target metric as a function of the mixture (and scale), propose the best mixture, check it at the
target scale. The numerics (regressors, proposers, DDO) are pure functions over arrays; the swarm
and validation steps are ordinary ``assay-train`` multiruns.
"""
