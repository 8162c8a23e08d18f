"""``assay-attribution fasttrack``: FASTTRACK fact tracing against top-k baselines on planted facts.

    assay-attribution fasttrack --seeds 0 1 2 3 4 5 --out fasttrack/   # fasttrack.csv, fasttrack.md, fasttrack.png

Per seed a fresh corpus (:func:`assay.tracing.facts.generate_facts`); per query and method one CSV
row; the summary averages over all queries; with two seeds or more, the declared comparisons (the
first FASTTRACK row against each baseline, per-seed mean F1, paired over seeds, Holm) follow.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional

from assay.attribution.fasttrack import BASELINES, Settings, evaluate_corpus
from assay.errors import UserError, check
from assay.tracing.fasttrack import LABEL_TERMS, MATCH_CUTOFF, MAX_CLUSTERS, THRESHOLD, LLMValidator, OracleValidator


def _smollm2(corpus, a):
    if getattr(a, "_llm", None) is None:
        from assay.models.presets import SmolLM2

        path = SmolLM2(gguf_path=a.smollm2_gguf).resolved_path()
        check(path.is_file(), "--smollm2-gguf", str(path), "no SmolLM2-135M-Instruct GGUF there; run `assay-fetch smollm2` or pass --smollm2-gguf")
        a._llm = LLMValidator(gguf_path=a.smollm2_gguf, batch_size=a.batch_size, margin=a.margin).load()
    return a._llm


VALIDATORS: dict[str, Callable] = {
    "smollm2": _smollm2,
    "oracle": lambda corpus, a: OracleValidator(corpus.triples),
}
"""name -> (corpus, parsed arguments) -> validator. The first named is the FASTTRACK row the
comparisons and ``--k fasttrack`` use."""


def add_parser(sub) -> None:
    q = sub.add_parser("fasttrack", help="FASTTRACK fact tracing (arXiv 2404.15157) vs embedding, BM25 and TracIn top-k on planted facts")
    q.add_argument("--facts", type=int, default=30, help="planted query facts per corpus")
    q.add_argument("--paraphrases", type=int, default=4, help="supporting sentences per fact (distinct templates, 1-5)")
    q.add_argument("--conflict-rate", type=float, default=0.3, help="fraction of facts with one conflicting-object sentence")
    q.add_argument("--other-relation", type=int, default=1, help="sentences per subject stating another relation")
    q.add_argument("--fillers", type=int, default=1000, help="unrelated filler sentences")
    q.add_argument("--seeds", type=int, nargs="+", default=[0], help="one corpus per seed (the comparisons need two or more)")
    q.add_argument("--validators", nargs="+", default=["smollm2", "oracle"], help=f"FASTTRACK validators, among {list(VALIDATORS)}")
    q.add_argument("--baselines", nargs="*", default=list(BASELINES), help=f"top-k baselines, among {list(BASELINES)}")
    q.add_argument("--k", default="truth", help="baselines' k: 'truth' (the query's supporting count), 'fasttrack' "
                   "(the size of the first FASTTRACK row's set) or an integer")
    q.add_argument("--threshold", type=int, default=THRESHOLD, help="largest leaf cluster of the recursive k-means")
    q.add_argument("--label-terms", type=int, default=LABEL_TERMS, help="TF-IDF terms per cluster label")
    q.add_argument("--match-cutoff", type=float, default=MATCH_CUTOFF, help="difflib ratio for a keyword to match a label term")
    q.add_argument("--max-clusters", type=int, default=MAX_CLUSTERS, help="candidate clusters per query")
    q.add_argument("--embedder", choices=["minilm", "tfidf"], default="minilm", help="sentence vectors of the index and the embed row")
    q.add_argument("--minilm-path", help="all-MiniLM-L6-v2 directory (default: where `assay-fetch minilm` puts it)")
    q.add_argument("--smollm2-gguf", help="SmolLM2-135M-Instruct GGUF file (default: where `assay-fetch smollm2` puts it)")
    q.add_argument("--batch-size", type=int, default=16, help="validator prompts per forward pass")
    q.add_argument("--margin", type=float, default=0.0, help="validator says Yes when logit(Yes) - logit(No) > margin")
    q.add_argument("--tracin-epochs", type=int, default=3, help="epochs of the tiny model TracIn differentiates")
    q.add_argument("--out", type=Path, default=Path("fasttrack"), help="folder for fasttrack.csv, fasttrack.md, fasttrack.png")


def check_args(a) -> None:
    """One line for what can be refused before any corpus is built or weights are loaded."""
    check(a.facts >= 1, "--facts", a.facts, "need at least one planted fact to trace")
    unknown = [v for v in a.validators if v not in VALIDATORS] + [b for b in a.baselines if b not in BASELINES]
    check(not unknown, "--validators/--baselines", unknown, f"validators are {list(VALIDATORS)}, baselines {list(BASELINES)}")
    check(bool(a.validators), "--validators", [], "name at least one FASTTRACK validator")
    check(a.max_clusters >= 1 and a.label_terms >= 1 and 0 < a.match_cutoff <= 1, "--max-clusters/--label-terms/--match-cutoff",
          (a.max_clusters, a.label_terms, a.match_cutoff), "need >= 1, >= 1 and a ratio in (0, 1]")
    if a.embedder == "minilm":
        from assay.embeddings.minilm import MiniLM

        try:
            MiniLM(path=a.minilm_path).model_dir()
        except UserError as e:
            raise UserError("--minilm-path", e.value, "no all-MiniLM-L6-v2 weights there; run `assay-fetch minilm` or pass it") from None


def evaluate(a) -> list[dict]:
    from assay.tracing.facts import generate_facts

    check_args(a)
    s = Settings(a.threshold, a.label_terms, a.match_cutoff, a.max_clusters, a.k, a.embedder, a.minilm_path, a.tracin_epochs)
    rows = []
    for seed in a.seeds:
        corpus = generate_facts(a.facts, a.paraphrases, a.conflict_rate, a.other_relation, a.fillers, seed)
        validators = [VALIDATORS[v](corpus, a) for v in a.validators]
        rows += evaluate_corpus(corpus, validators, a.baselines, s, seed)
    return rows


def summary(df) -> "object":
    """Mean over all queries (and seeds) per method, in the order the rows first appear."""
    g = df.groupby("method", sort=False)
    out = g[["precision", "recall", "f1", "seconds", "offline_s"]].mean()
    out["candidate_recall"] = g["candidate_recall"].apply(lambda c: c.replace("", float("nan")).astype(float).mean())
    out["queries"] = g.size()
    return out.rename(columns={"seconds": "s_per_query", "offline_s": "offline_s_per_corpus"}).reset_index()


def comparisons(df, primary: str) -> Optional[str]:
    """The declared family: ``primary`` vs every baseline row, per-seed mean F1, paired t over seeds, Holm."""
    from assay.compare.stats import markdown, paired_comparison

    per_seed = df.groupby(["method", "seed"])["f1"].mean()
    seeds = sorted(df["seed"].unique())
    baselines = [m for m in df["method"].unique() if not m.startswith("fasttrack_")]
    if len(seeds) < 2 or not baselines:
        return None
    cs = [paired_comparison(per_seed[primary].to_dict(), per_seed[b].to_dict(), arm=primary, baseline=b, metric="f1 (per-seed mean)")
          for b in baselines]
    return markdown(cs, correction="holm")


def write(rows: list[dict], out: Path, header: str, primary: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from assay.attribution.lds import markdown_table  # a leaf: lds imports nothing of fasttrack

    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "fasttrack.csv", index=False)
    summ = summary(df)
    text = header + "\n\n" + markdown_table(summ.to_dict("records")) + "\n"
    stats = comparisons(df, primary)
    if stats:
        text += "\nDeclared comparisons (per-seed mean F1):\n\n" + stats
    (out / "fasttrack.md").write_text(text)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in summ.itertuples():
        ax.scatter(r.s_per_query, r.f1)
        ax.annotate(r.method, (r.s_per_query, r.f1), fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per query (online, log)")
    ax.set_ylabel("F1 (mean over queries)")
    ax.set_ylim(0, 1.05)
    fig.tight_layout()
    fig.savefig(out / "fasttrack.png", dpi=120)
    plt.close(fig)
    return text


def run(a) -> int:
    try:
        rows = evaluate(a)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    header = (f"Fact tracing on planted facts (facts={a.facts}, paraphrases={a.paraphrases}, conflict_rate={a.conflict_rate}, "
              f"other_relation={a.other_relation}, fillers={a.fillers}, seeds={a.seeds}); index: {a.embedder}, threshold={a.threshold}, "
              f"label_terms={a.label_terms}, match_cutoff={a.match_cutoff}, max_clusters={a.max_clusters}; baselines' k={a.k}")
    print(write(rows, a.out, header, next(r["method"] for r in rows if r["method"].startswith("fasttrack_"))))
    return 0
