"""Ground-truth rewards for responses to the embedded skills tasks.

Every skills prompt has one exact answer, so any response (a rated alternative or a model's greedy
generation) has a checkable reward: 1 for the exact answer, otherwise partial credit by the symbol-level
edit distance to it,

    r(response) = 1 − lev(answer, response) / max(|answer|, |response|)

over whitespace-separated symbols (the corpus spells every symbol, digit or letter, as its own token).
A near miss (one symbol wrong) of a 4-symbol answer earns 0.75, an unrelated string of the same length
about 0. This is the scalar that plays the role of the papers' reward model: it orders pairs by how
informative they are (the reward gap) and scores generations for win rates against a baseline model.
"""

from __future__ import annotations


def symbol_edit_distance(a: list[str], b: list[str]) -> int:
    """Levenshtein distance between two symbol sequences (unit cost insert / delete / substitute)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def skill_reward(answer: str, response: str) -> float:
    """The ground-truth reward of ``response`` for a prompt whose exact answer is ``answer``, in [0, 1]."""
    a, r = answer.split(), response.split()
    if a == r:
        return 1.0
    longest = max(len(a), len(r))
    return 1.0 - symbol_edit_distance(a, r) / longest
