"""EK-FAC influence through ``kronfluence``: the library-backed second-order row of the LDS evaluation.

The influence of a training example z_i on a measurement m(z) of a test example (Koh & Liang 2017;
Grosse, Bae, Anil et al. 2023, arXiv 2308.03296) is

    s(z, z_i) = ∇m(z)ᵀ (G + λI)⁻¹ ∇L(z_i),

with G the Gauss-Newton Hessian (the Fisher) of the training loss. EK-FAC (George et al. 2018, arXiv
1806.03884) approximates G per ``nn.Linear`` layer by the eigenbasis of its Kronecker factors
A = E[a aᵀ] (input activations) and S = E[g gᵀ] (gradients at the layer's output), with the
eigenvalues refitted to the per-example gradients: Λ_kl = E[(Q_Sᵀ ∇W Q_A)_kl²]. kronfluence fits the
factors on the training set and scores every (test, train) pair; this module only states the task
(what the loss and the measurement are) and turns the scores into the LDS's τ.

Sign. Upweighting z_i by ε moves θ by −ε (G + λI)⁻¹ ∇L(z_i), so m(z) moves by −ε s(z, z_i). The
measurement here is z's loss (lower = better), so a positive score means that training on z_i lowers
z's loss: τ(z)_i = s(z, z_i) is the LDS's "helps" sign without a flip (kronfluence issue #9).

kronfluence is imported only when a score is asked for; it is installed apart from the ``attribution``
extra (``pip install --no-deps kronfluence==1.0.1``): its metadata requires torchvision, which it never
imports, and the PyPI torchvision wheel does not load with a CPU build of torch (and, once installed,
breaks ``transformers``' model imports).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from typing import Any, Callable, Optional

import numpy as np

from assay.errors import UserError

MISSING = ("needs kronfluence: pip install -e '.[attribution]' && pip install --no-deps kronfluence==1.0.1 "
           "(not plain `pip install kronfluence`: its torchvision breaks a CPU torch)")


def require_kronfluence() -> None:
    """Raise a one-line ``UserError`` naming the install when kronfluence is not importable."""
    try:
        import kronfluence  # noqa: F401
    except ImportError:
        raise UserError("--methods", "ekfac", MISSING) from None


def influence_scores(model, task, train, query, collate: Optional[Callable] = None, damping: Optional[float] = None,
                     empirical_fisher: bool = False, batch_size: int = 16) -> np.ndarray:
    """[len(query), len(train)] EK-FAC pairwise scores s(z, z_i) of ``task`` (a kronfluence ``Task``).

    The factors are fitted on ``train`` (all of it: the caps of 100,000 examples are far above these
    sets). ``damping``: λ added to the refitted eigenvalues; None is kronfluence's heuristic,
    0.1 × the mean eigenvalue of each layer. ``empirical_fisher``: the factors from the gradients at the
    true labels rather than at labels drawn from the model. ``model`` itself is not changed (the
    library wraps its layers in place, so a copy is wrapped), and every file kronfluence writes (factors,
    scores, logs of its arguments) goes to a temporary directory removed afterwards."""
    require_kronfluence()
    import torch
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.utils.dataset import DataLoaderKwargs

    wrapped = prepare_model(copy.deepcopy(model), task)
    cpu = next(wrapped.parameters()).device.type == "cpu"
    loader = DataLoaderKwargs(collate_fn=collate)
    with tempfile.TemporaryDirectory(prefix="assay-ekfac-") as tmp, warnings.catch_warnings():
        # kronfluence 1.0.1 builds torch.cuda.amp.GradScaler, which torch now flags as deprecated
        warnings.filterwarnings("ignore", category=FutureWarning, module="kronfluence")
        analyzer = Analyzer("ekfac", wrapped, task, cpu=cpu, disable_tqdm=True, output_dir=tmp, log_level=logging.WARNING)
        analyzer.fit_all_factors("ekfac", train, per_device_batch_size=batch_size, dataloader_kwargs=loader,
                                 factor_args=FactorArguments(strategy="ekfac", use_empirical_fisher=empirical_fisher))
        analyzer.compute_pairwise_scores("pairs", "ekfac", query, train, per_device_query_batch_size=batch_size,
                                         per_device_train_batch_size=batch_size, dataloader_kwargs=loader,
                                         score_args=ScoreArguments(damping_factor=damping))
        scores = analyzer.load_pairwise_scores("pairs")["all_modules"]
    return scores.to(torch.float64).cpu().numpy()


def response_nll_task() -> Any:
    """The kronfluence ``Task`` of a causal LM on padded prompt + response batches (``pad_rows``):
    the per-example loss is the mean response NLL (``row_losses``, what the LDS's f_j(z) = −loss
    negates), summed over the batch as kronfluence requires; the measurement is the same loss of the
    test example. Every ``nn.Linear`` is tracked (attention and MLP projections, the untied LM head);
    the embeddings are not (kronfluence tracks Linear and Conv2d only). The padding is masked out of
    the factors."""
    import torch
    from kronfluence.task import Task

    from assay.data.collate import IGNORE
    from assay.models.grads import row_losses
    from assay.models.passes import forward

    class ResponseNLL(Task):
        def compute_train_loss(self, batch: dict, model, sample: bool = False):
            logits = forward(model, batch).logits
            labels = batch["labels"].to(logits.device)
            if sample:
                # The true Fisher: each response token's label drawn from the model's own prediction
                # at that position (the logits at t predict the token at t + 1).
                with torch.no_grad():
                    probs = torch.softmax(logits[:, :-1].detach().float(), -1)
                    drawn = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).view(probs.shape[:2])
                    labels = labels.clone()
                    labels[:, 1:] = torch.where(labels[:, 1:] != IGNORE, drawn, labels[:, 1:])
            return row_losses(logits, labels).sum()

        def compute_measurement(self, batch: dict, model):
            logits = forward(model, batch).logits
            return row_losses(logits, batch["labels"].to(logits.device)).sum()

        def get_attention_mask(self, batch: dict):
            return batch["attention_mask"]

    return ResponseNLL()


def pad_collate(pad_id: int) -> Callable:
    """DataLoader collate of tokenized rows (``prompt_ids``, ``completion_ids``) into ``pad_rows`` batches."""

    def collate(rows: list[dict]) -> dict:
        from assay.models.passes import pad_rows

        return pad_rows([r["prompt_ids"] for r in rows], [r["completion_ids"] for r in rows], pad_id)

    return collate


def ekfac_attribution(ctx, damping: Optional[float] = None, seed: int = 0) -> np.ndarray:
    """[T, n] τ(z)_i = EK-FAC influence of training example i on test example z's response NLL, at the
    full-data model, factors fitted on the training set with labels sampled from the model (seeded)."""
    require_kronfluence()
    import torch

    torch.manual_seed(seed)
    train = ctx.train.select_columns(["prompt_ids", "completion_ids"])
    test = ctx.splits["val"].select_columns(["prompt_ids", "completion_ids"])
    return influence_scores(ctx.model, response_nll_task(), train, test, pad_collate(0), damping=damping)
