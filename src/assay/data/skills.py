"""The embedded default corpus: seeded synthetic skills with ground truth.

Five domains, each an algorithmic skill whose answer is checkable by exact match, at three
difficulty levels (longer inputs / more digits are harder):

    copy     copy : k d a m =          ->  k d a m
    reverse  reverse : k d a m =       ->  m a d k
    sort     sort : 7 3 9 1 =          ->  1 3 7 9
    count    count b : b a b c b =     ->  3
    add      add : 4 7 + 3 8 =         ->  8 5

Every prompt also comes with rated alternative responses (used for preference pairs and for
Curry-DPO's multi-response ranking): the exact answer (rating 3), a near miss that differs in one
position or by one (2), a far miss of the right shape (1) and garbage (0). The preference format's
``rejected`` is the near miss: a plausible wrong answer.

Symbols are space separated so that any tokenizer, including the one trained on this corpus, sees
one token per symbol; exact match compares whitespace-normalised strings.
"""

from __future__ import annotations

import random
from typing import Callable

LETTERS = list("abcdefghijklmnop")
DIGITS = list("0123456789")
RATINGS = (3.0, 2.0, 1.0, 0.0)  # exact, near miss, far miss, garbage
RESPONSE_KINDS = ("exact", "near", "far", "garbage")  # the order of ``responses`` and ``ratings``


def _lengths(difficulty: int, base: tuple[int, int, int]) -> int:
    return base[difficulty - 1]


def _near_miss_seq(seq: list[str], alphabet: list[str], rng: random.Random) -> list[str]:
    """One position replaced by a different symbol: wrong, but only just."""
    out = list(seq)
    i = rng.randrange(len(out))
    out[i] = rng.choice([s for s in alphabet if s != out[i]])
    return out


def _copy(difficulty: int, rng: random.Random) -> tuple[str, list[str], list[str], list[str]]:
    n = rng.randint(*[(2, 3), (4, 5), (6, 7)][difficulty - 1])
    seq = [rng.choice(LETTERS) for _ in range(n)]
    far = [rng.choice(LETTERS) for _ in range(n)]
    return f"copy : {' '.join(seq)} =", seq, _near_miss_seq(seq, LETTERS, rng), far


def _reverse(difficulty: int, rng: random.Random):
    n = rng.randint(*[(2, 3), (4, 5), (6, 7)][difficulty - 1])
    seq = [rng.choice(LETTERS) for _ in range(n)]
    while seq == seq[::-1]:
        seq = [rng.choice(LETTERS) for _ in range(n)]
    answer = seq[::-1]
    # The classic near miss for reversal is to copy instead of reversing.
    near = seq if rng.random() < 0.5 else _near_miss_seq(answer, LETTERS, rng)
    far = [rng.choice(LETTERS) for _ in range(n)]
    return f"reverse : {' '.join(seq)} =", answer, near, far


def _sort(difficulty: int, rng: random.Random):
    n = [3, 5, 7][difficulty - 1]
    seq = [rng.choice(DIGITS) for _ in range(n)]
    while len(set(seq)) < 2:
        seq = [rng.choice(DIGITS) for _ in range(n)]
    answer = sorted(seq)
    near = list(answer)
    # swap two adjacent unequal elements: almost sorted
    pairs = [i for i in range(n - 1) if near[i] != near[i + 1]]
    i = rng.choice(pairs)
    near[i], near[i + 1] = near[i + 1], near[i]
    far = [rng.choice(DIGITS) for _ in range(n)]
    return f"sort : {' '.join(seq)} =", answer, near, far


def _count(difficulty: int, rng: random.Random):
    n = [4, 6, 8][difficulty - 1]
    pool = LETTERS[:4]
    target = rng.choice(pool)
    seq = [rng.choice(pool) for _ in range(n)]
    k = seq.count(target)
    near = [str(k + 1 if k == 0 or rng.random() < 0.5 else k - 1)]
    far = [str(rng.choice([c for c in range(n + 1) if abs(c - k) > 1] or [n + 2]))]
    return f"count {target} : {' '.join(seq)} =", [str(k)], near, far


def _add(difficulty: int, rng: random.Random):
    lo, hi = [(0, 9), (10, 99), (100, 999)][difficulty - 1]
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    s = a + b
    near = s + rng.choice([-1, 1, -10, 10]) if s >= 10 else s + 1
    far = rng.randint(lo, 2 * hi)
    while far in (s, near):
        far = rng.randint(lo, 2 * hi + 2)
    spell = lambda x: list(str(x))  # noqa: E731 - digits as separate symbols
    return f"add : {' '.join(spell(a))} + {' '.join(spell(b))} =", spell(s), spell(near), spell(far)


GENERATORS: dict[str, Callable[[int, random.Random], tuple]] = {
    "copy": _copy,
    "reverse": _reverse,
    "sort": _sort,
    "count": _count,
    "add": _add,
}


def _garbage(rng: random.Random) -> list[str]:
    return [rng.choice(LETTERS + DIGITS + ["+", "="]) for _ in range(rng.randint(1, 8))]


def generate_skills(
    domains: list[str],
    per_split: dict[str, int],
    difficulties: list[int],
    seed: int,
) -> dict[str, list[dict]]:
    """Generate ``per_split[split]`` examples per domain for each split, with disjoint prompts.

    Held-out splits are drawn first and their prompts excluded from training, so exact-match on
    ``test`` measures generalisation, not memorisation. Ids are ``<domain>/<split>/<index>``: stable
    for a given seed and sizes.
    """
    out: dict[str, list[dict]] = {split: [] for split in per_split}
    order = sorted(per_split, key=lambda s: (s == "train", s))  # held-out splits first
    for d_index, domain in enumerate(domains):
        gen = GENERATORS[domain]
        rng = random.Random(seed * 1_000_003 + d_index)
        seen: set[str] = set()
        for split in order:
            n, attempts = per_split[split], 0
            rows: list[dict] = []
            while len(rows) < n:
                attempts += 1
                if attempts > 50 * n + 1000:
                    raise RuntimeError(
                        f"skills/{domain}: cannot draw {n} distinct {split} prompts at difficulties "
                        f"{difficulties}; lower the split size or add difficulty levels"
                    )
                difficulty = rng.choice(difficulties)
                prompt, answer, near, far = gen(difficulty, rng)
                if prompt in seen:
                    continue
                seen.add(prompt)
                responses = [" ".join(answer), " ".join(near), " ".join(far), " ".join(_garbage(rng))]
                rows.append(
                    {
                        "id": f"{domain}/{split}/{len(rows):05d}",
                        "source": domain,
                        "difficulty": difficulty,
                        "prompt": prompt,
                        "answer": responses[0],
                        "responses": responses,
                        "ratings": list(RATINGS),
                    }
                )
            out[split].extend(rows)
    return out


def pair_kind(kind: str) -> tuple[int, int]:
    """``"exact_vs_far"`` -> (0, 2): indices into ``responses`` of the chosen and the rejected response."""
    chosen, _, rejected = kind.partition("_vs_")
    return RESPONSE_KINDS.index(chosen), RESPONSE_KINDS.index(rejected)


def graded_pairs(rows: list[dict], kinds: list[str], seed: int) -> list[dict]:
    """One preference pair per prompt, of a kind drawn uniformly from ``kinds`` (seeded per prompt id).

    ``exact_vs_near`` … ``exact_vs_garbage`` grade how wrong the rejected answer is (a near miss is the hardest
    pair to tell apart, garbage the easiest); ``near_vs_far`` or ``far_vs_garbage`` are mixed-informativeness
    pairs in which both responses are wrong, to different degrees (β-DPO's motivating case, Wu et al.
    2024). The drawn kind is kept in the ``pair_kind`` column. A far miss or garbage string can land as
    close to the answer as the near miss; the pair is then oriented by the ground-truth reward
    (assay.data.rewards), so the clean label always prefers the better response (ties keep the rating order).
    """
    from assay.data.rewards import skill_reward

    out = []
    for r in rows:
        kind = kinds[0] if len(kinds) == 1 else kinds[random.Random(f"{seed}/{r['id']}").randrange(len(kinds))]
        c, j = pair_kind(kind)
        # a random far miss or garbage string can coincide with the chosen text: take the next lower-rated one
        j = next((k for k in range(j, len(r["responses"])) if r["responses"][k] != r["responses"][c]), j)
        chosen, rejected = r["responses"][c], r["responses"][j]
        if skill_reward(r["answer"], rejected) > skill_reward(r["answer"], chosen):
            chosen, rejected = rejected, chosen
        out.append({**r, "chosen": chosen, "rejected": rejected, "pair_kind": kind})
    return out
