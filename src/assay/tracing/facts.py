"""A corpus with known supporting examples, for fact tracing (FASTTRACK, arXiv 2404.15157).

Planted facts (subject, relation, object) are each written in several paraphrase templates; the
ground truth of a query fact is exactly the sentences that state it. Distractors make tracing hard in
the ways the paper names: the same subject with another relation (shares the name, not the fact),
a conflicting object for the same subject and relation (shares subject and relation, states a
different fact; a minority of the fact's sentences), and unrelated filler. A query is the fact in a
wording no corpus sentence uses, so lexical overlap alone does not give it away.

Names (people, cities, companies, languages) are made-up syllable strings, so no pretrained model
can know the facts: a validator must read them off the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assay.errors import check

SYLLABLES = ("bra", "ven", "tor", "qui", "lo", "mar", "dex", "sil", "han", "rop", "el", "nu", "gar", "fen", "os", "tal",
             "wy", "ze", "cor", "bel", "um", "dra", "kin", "pa", "res", "vi", "lun", "ast", "mo", "ith")

RELATIONS: dict[str, dict] = {
    "born_in": {
        "objects": "city",
        "templates": ("{s} was born in {o}.", "The birthplace of {s} is {o}.", "{o} is the city where {s} was born.",
                      "{s} came into the world in the town of {o}.", "{s} is a native of {o}, where {s_last} was born."),
        "query": "{s} was born in the city of {o}.",
    },
    "works_for": {
        "objects": "company",
        "templates": ("{s} works for {o}.", "{s} is employed by {o}.", "{o} employs {s}.",
                      "{s} has a job at {o}.", "The employer of {s} is {o}."),
        "query": "{s} is an employee of {o}.",
    },
    "speaks": {
        "objects": "language",
        "templates": ("{s} speaks {o}.", "The native language of {s} is {o}.", "{s} talks in {o} at home.",
                      "{o} is the mother tongue of {s}.", "{s} grew up speaking {o}."),
        "query": "{s} is a speaker of the {o} language.",
    },
    "plays": {
        "objects": "instrument",
        "templates": ("{s} plays the {o}.", "{s} is a {o} player.", "The instrument of {s} is the {o}.",
                      "{s} performs on the {o}.", "{s} practises the {o} every day."),
        "query": "{s} is a musician who plays the {o}.",
    },
    "studied": {
        "objects": "field",
        "templates": ("{s} studied {o}.", "{s} holds a degree in {o}.", "{s} majored in {o} at university.",
                      "The field {s} trained in is {o}.", "{o} was the subject {s} studied."),
        "query": "{s} has an academic background in {o}.",
    },
    "owns": {
        "objects": "pet",
        "templates": ("{s} owns a {o}.", "{s} keeps a pet {o}.", "The pet of {s} is a {o}.",
                      "{s} lives with a {o} as a pet.", "A {o} is the animal {s} looks after at home."),
        "query": "{s} has a {o} as a companion animal.",
    },
}
"""Relation -> the kind of its objects, the corpus's paraphrase templates and the query's own wording.
``{s_last}`` is the subject's surname (a second mention)."""

REAL_OBJECTS = {
    "instrument": ("violin", "cello", "oboe", "harp", "trumpet", "clarinet", "flute", "banjo", "accordion", "bassoon", "tuba", "viola"),
    "field": ("chemistry", "geology", "linguistics", "astronomy", "economics", "botany", "philosophy", "statistics", "architecture",
              "zoology", "history", "medicine"),
    "pet": ("parrot", "tortoise", "ferret", "hamster", "rabbit", "goldfish", "iguana", "canary", "poodle", "gecko", "beagle", "chinchilla"),
}
MADE_UP_SUFFIX = {"city": "", "company": " Industries", "language": "ish"}

FILLER = {
    "det": ("The", "A", "One", "Every", "That"),
    "adj": ("quiet", "old", "narrow", "bright", "heavy", "wooden", "distant", "broken", "golden", "crowded", "small", "cold",
            "silver", "hidden", "muddy", "tall", "empty", "ancient", "busy", "gentle"),
    "noun": ("river", "bridge", "market", "lantern", "garden", "train", "letter", "harbour", "staircase", "orchard", "kettle",
             "meadow", "window", "library", "festival", "storm", "ladder", "bakery", "compass", "tower", "village", "carpet",
             "mirror", "canal", "forest", "clock", "wagon", "courtyard", "fountain", "chapel"),
    "verb": ("stood near", "faded behind", "rattled beside", "glowed above", "waited under", "leaned against", "vanished into",
             "drifted past", "creaked inside", "shone over", "rested by", "appeared across", "echoed through", "sank below",
             "turned toward", "trembled along", "opened onto", "collapsed beside", "hummed within", "lingered at"),
    "time": ("at dawn", "after the rain", "every winter", "during the fair", "before noon", "late at night", "in early spring",
             "on most Sundays", "all summer", "when the bells rang", "for a while", "once a year"),
}


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    object: str

    @property
    def triple(self) -> tuple[str, str, str]:
        return (self.subject, self.relation, self.object)

    def query(self) -> str:
        """The fact in the query wording (no corpus sentence uses it)."""
        return fill(RELATIONS[self.relation]["query"], self.subject, self.object)


@dataclass
class FactCorpus:
    texts: list[str]
    triples: list[tuple | None]
    """The fact each sentence states, None for filler."""
    kinds: list[str]
    """``support`` (a queried fact), ``other_relation``, ``conflict`` or ``filler``."""
    facts: list[Fact]
    """The query facts."""

    def __len__(self) -> int:
        return len(self.texts)

    def truth(self, fact: Fact) -> set[int]:
        """Indices of the sentences that state ``fact``: its ground-truth supporting examples."""
        return {i for i, t in enumerate(self.triples) if t == fact.triple}


def fill(template: str, subject: str, obj: str) -> str:
    text = template.format(s=subject, o=obj, s_last=subject.split()[-1])
    return text[0].upper() + text[1:]


def _word(rng: np.random.Generator, syllables: int) -> str:
    return "".join(SYLLABLES[i] for i in rng.integers(0, len(SYLLABLES), size=syllables)).capitalize()


def _unique(rng: np.random.Generator, n: int, make) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        w = make()
        if w not in out:
            out.append(w)
    return out


def generate_facts(n_facts: int = 30, paraphrases: int = 4, conflict_rate: float = 0.3, other_relation: int = 1,
                   fillers: int = 1000, seed: int = 0) -> FactCorpus:
    """A shuffled corpus: ``n_facts`` query facts with ``paraphrases`` sentences each (distinct templates),
    for each subject ``other_relation`` sentences of a different relation, for a ``conflict_rate``
    fraction of the facts one sentence with a conflicting object, and ``fillers`` unrelated sentences."""
    n_templates = min(len(r["templates"]) for r in RELATIONS.values())
    check(n_facts >= 1, "--facts", n_facts, "need at least one planted fact to trace")
    check(1 <= paraphrases <= n_templates, "--paraphrases", paraphrases, f"must be between 1 and {n_templates} (the templates per relation)")
    check(0 <= conflict_rate <= 1, "--conflict-rate", conflict_rate, "must be in [0, 1]")
    check(0 <= other_relation < len(RELATIONS), "--other-relation", other_relation, f"must be between 0 and {len(RELATIONS) - 1}")
    check(fillers >= 0, "--fillers", fillers, "must be >= 0")
    rng = np.random.default_rng(seed)
    subjects = _unique(rng, n_facts, lambda: f"{_word(rng, 2)} {_word(rng, 2)}")
    pools = {kind: list(words) for kind, words in REAL_OBJECTS.items()}
    for kind, suffix in MADE_UP_SUFFIX.items():
        pools[kind] = [w + suffix for w in _unique(rng, 12, lambda: _word(rng, int(rng.integers(2, 4))))]
    relations = list(RELATIONS)
    rows: list[tuple[str, tuple | None, str]] = []

    def write(fact: Fact, count: int, kind: str) -> None:
        templates = RELATIONS[fact.relation]["templates"]
        for j in rng.choice(len(templates), size=count, replace=False):
            rows.append((fill(templates[j], fact.subject, fact.object), fact.triple, kind))

    def pick(relation: str, avoid: str | None = None) -> str:
        pool = [o for o in pools[RELATIONS[relation]["objects"]] if o != avoid]
        return pool[int(rng.integers(len(pool)))]

    facts = []
    for i, subject in enumerate(subjects):
        relation = relations[i % len(relations)]
        fact = Fact(subject, relation, pick(relation))
        facts.append(fact)
        write(fact, paraphrases, "support")
        others = [r for r in relations if r != relation]
        for r in rng.choice(others, size=other_relation, replace=False):
            write(Fact(subject, str(r), pick(str(r))), 1, "other_relation")
        if rng.random() < conflict_rate:
            write(Fact(subject, relation, pick(relation, avoid=fact.object)), 1, "conflict")
    for _ in range(fillers):
        f = {k: v[int(rng.integers(len(v)))] for k, v in FILLER.items()}
        rows.append((f"{f['det']} {f['adj']} {f['noun']} {f['verb']} the {FILLER['noun'][int(rng.integers(len(FILLER['noun'])))]} "
                     f"{f['time']}.", None, "filler"))
    order = rng.permutation(len(rows))
    return FactCorpus([rows[i][0] for i in order], [rows[i][1] for i in order], [rows[i][2] for i in order], facts)
