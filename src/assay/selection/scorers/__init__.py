"""Scorers, one module per family: each gives every training example a score (higher = keep).

- ``model_scores``: what one model says about each example (perplexity, IFD, EL2N, embedding
  similarity to a target, k-means coverage).
- ``dynamics_scores``: what training did to each example (data maps, forgetting, β-DPO's filter).
- ``gradient_scores``: per-sample gradients (GraNd, LESS, CLUES).
- ``lqs``: learnability-quality scores from two checkpoints.
- ``ot``: the shared optimal-transport scorer base; ``lava`` and ``gotd`` its two methods.
- ``forward_inf``: Forward-INF, the loss drop of every example after a few steps on the target set
  (the probe step of ``assay.models.probe``).
- ``delta_loss``: DataFlex's delta loss, each example's recorded loss drop in an earlier stage's store.
- ``near``: DataFlex's NEAR, every target example's nearest pool examples in turn (embeddings).
- ``tsds``: TSDS, a sampling distribution matching the target in OT with a density-aware diversity term.
- ``cluster_less``: DataFlex's cluster-LESS, LESS cosines of a few representatives' gradients per k-means
  cluster, shared by the cluster.
- ``nice``: NICE, loss gradients matched with reward-weighted policy gradients on the target prompts.
- ``mates``: MATES, a one-step oracle on sampled candidates, an influence model over the pool, re-fitted
  every stage of training (its regressor in ``assay.selection.influence_model``).
"""
