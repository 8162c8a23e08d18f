"""A study as a spec: ``<study>/study.yaml`` names the arms, the seeds, one primary metric and the
declared comparisons, before any run exists (pre-registration: the headline table can only hold
what was declared here; everything else a report prints is labelled exploratory).

    question: Does conservative DPO beat DPO when 20 % of the preference pairs are flipped?
    base: [experiment=noisy_prefs, logger=csv]        # overrides every run shares
    setup:                                            # runs made once, before the arms (optional)
      sft: [data.format=sft, trainer.max_steps=300]   #   an arm refers to one as {setup:sft}
    arms:                                             # name -> overrides (the arm has the last word)
      dpo: [objective=dpo, "model.init_from={setup:sft}"]
      cdpo: [objective=cdpo, objective.epsilon=0.1, "model.init_from={setup:sft}"]
    cross:                                            # optional: every arm at every level of a factor
      flip: {"0.0": [noise.p=0.0], "0.2": [noise.p=0.2]}
      sft: {a: ["model.init_from={setup:sft}"]}       #   (a level may name a setup run: one SFT model per level)
    seeds: [0, 1, 2, 3, 4, 5]
    primary: test/pref_acc
    secondary: [test/loss]
    comparisons:                                      # the declared family, on the primary metric
      - {arm: cdpo, baseline: dpo}                    #   (within every level of `cross`)
    one_sample:                                       # claims against a constant, also in the family
      - {arm: dpo, metric: test/pref_acc, constant: 0.5}
    correction: holm                                  # or bh
    launcher: [hydra/launcher=slurm_local]            # optional, added to every launch

``{run:<arm>}`` in an arm's overrides is that arm's run directory at the same seed (and level), so
an arm can depend on another (DoReMi's reference run); the runner launches arms in dependency order.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from assay.errors import UserError

SPEC_FILE = "study.yaml"
KEYS = {"question", "base", "setup", "arms", "cross", "seeds", "primary", "secondary", "comparisons", "one_sample", "correction", "launcher"}
METRIC_PREFIXES = ("test/", "val/", "train/", "selection/", "mixing/", "collab/", "mechanism/")
"""Where a run's summary metrics live: a declared metric outside them cannot be in any run."""
NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
PLACEHOLDER = re.compile(r"\{(run|setup):([^}]*)\}")
PLAIN_VALUE = re.compile(r"^[\w./:@${}+-]*$")


def hydra_value(path: str) -> str:
    """``path`` as the value of a Hydra override: as it is, or single-quoted where it holds a character
    the override grammar reads otherwise (a crossed cell's directory, ``dpo@flip=0.4``, holds ``=``)."""
    if PLAIN_VALUE.match(path):
        return path
    return "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"



@dataclass(frozen=True)
class Cell:
    """One arm at one level of the crossed factors: the unit that is run for every seed."""

    arm: str
    level: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return self.arm + "".join(f"@{k}={v}" for k, v in self.level)


@dataclass(frozen=True)
class Declared:
    """One comparison of the declared family: an arm against a baseline arm, or against a constant."""

    arm: str
    metric: str
    baseline: Optional[str] = None
    constant: Optional[float] = None


@dataclass
class StudySpec:
    root: Path
    question: str
    base: list[str]
    arms: dict[str, list[str]]
    seeds: list[int]
    primary: str
    secondary: list[str] = field(default_factory=list)
    setup: dict[str, list[str]] = field(default_factory=dict)
    cross: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    comparisons: list[Declared] = field(default_factory=list)
    correction: str = "holm"
    launcher: list[str] = field(default_factory=list)

    # ---- the grid of runs
    def cells(self) -> list[Cell]:
        """Every (arm, level), arms in dependency order (an arm after the arms its {run:...} names)."""
        levels = list(itertools.product(*[[(k, v) for v in vs] for k, vs in self.cross.items()])) or [()]
        return [Cell(arm, tuple(level)) for arm in self.arm_order() for level in levels]

    def arm_order(self) -> list[str]:
        order: list[str] = []
        visiting: set[str] = set()

        def visit(arm: str) -> None:
            if arm in order:
                return
            if arm in visiting:
                raise UserError(f"arms.{arm}", self.arms[arm], "its {run:...} references form a cycle")
            visiting.add(arm)
            for kind, ref in (m.groups() for o in self.arms[arm] for m in PLACEHOLDER.finditer(o)):
                if kind == "run":
                    visit(ref)
            visiting.discard(arm)
            order.append(arm)

        for arm in self.arms:
            visit(arm)
        return order

    def run_dir(self, cell: Cell, seed: int) -> Path:
        return self.root / "runs" / cell.name / f"seed{seed}"

    def setup_dir(self, name: str) -> Path:
        return self.root / "setup" / name

    def overrides(self, cell: Cell, seed: Optional[int] = None) -> list[str]:
        """The run's overrides: base, then the level's, then the arm's (its {run:...} / {setup:...} references filled in); with
        ``seed`` None, ``{run:x}`` is written with Hydra's ``${seed}`` so one multirun covers every seed."""
        level = [self._fill(o, cell, seed) for k, v in cell.level for o in self.cross[k][v]]
        return [*self.base, *level, *(self._fill(o, cell, seed) for o in self.arms[cell.arm])]

    def _fill(self, text: str, cell: Cell, seed: Optional[int]) -> str:
        def one(m: re.Match) -> str:
            kind, ref = m.groups()
            if kind == "setup":
                path = str(self.setup_dir(ref).resolve())
            else:
                target = self.run_dir(Cell(ref, cell.level), 0).parent.resolve()
                path = str(target / (f"seed{seed}" if seed is not None else "seed${seed}"))
            quoted = m.start() > 0 and text[m.start() - 1] in "'\""  # the spec quoted the reference itself
            return path if quoted else hydra_value(path)

        return PLACEHOLDER.sub(one, text)

    def family(self) -> list[Declared]:
        return list(self.comparisons)


def _strings(value: Any, field_name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(v, (str, int, float, bool)) for v in value):
        raise UserError(field_name, value, "must be a list of overrides (key=value strings)")
    out = [str(v) for v in value]
    for o in out:
        if "=" not in o and not o.startswith("~"):
            raise UserError(field_name, o, "is not an override (write key=value)")
    return out


def _metric(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not value.startswith(METRIC_PREFIXES):
        raise UserError(field_name, value, f"must be a run metric, e.g. test/exact_match (one of the prefixes {', '.join(METRIC_PREFIXES)})")
    return value


def load(root: Path | str) -> StudySpec:
    """Read and check ``<root>/study.yaml``: every bad field is one :class:`UserError`."""
    import yaml

    root = Path(root)
    file = root / SPEC_FILE
    if not file.is_file():
        raise UserError("study", str(root), f"has no {SPEC_FILE} (a study is a folder with a {SPEC_FILE}; see `assay-study --help`)")
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as e:
        raise UserError("study", str(file), f"is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError("study", str(file), "must be a mapping (question, arms, seeds, primary, comparisons, ...)")
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise UserError("study", unknown[0], f"unknown key in {SPEC_FILE}; the keys are {', '.join(sorted(KEYS))}")
    for required in ("arms", "seeds", "primary"):
        if required not in raw:
            raise UserError("study", str(file), f"names no {required}")

    arms_raw = raw["arms"]
    if not isinstance(arms_raw, dict) or not arms_raw:
        raise UserError("arms", arms_raw, "must map each arm's name to its overrides")
    arms = {}
    for name, overrides in arms_raw.items():
        if not NAME.match(str(name)):
            raise UserError("arms", name, "an arm's name may hold letters, digits and . _ + - only (it names a directory)")
        arms[str(name)] = _strings(overrides, f"arms.{name}")
    setup = {}
    for name, overrides in (raw.get("setup") or {}).items():
        if not NAME.match(str(name)):
            raise UserError("setup", name, "a setup run's name may hold letters, digits and . _ + - only")
        setup[str(name)] = _strings(overrides, f"setup.{name}")
    cross: dict[str, dict[str, list[str]]] = {}
    for factor, levels in (raw.get("cross") or {}).items():
        if not isinstance(levels, dict) or not levels:
            raise UserError(f"cross.{factor}", levels, "must map each level's name to its overrides")
        cross[str(factor)] = {str(k): _strings(v, f"cross.{factor}.{k}") for k, v in levels.items()}
        for level in cross[str(factor)]:
            if not NAME.match(level) or not NAME.match(str(factor)):
                raise UserError(f"cross.{factor}", level, "factor and level names may hold letters, digits and . _ + - only")

    levels = [(f"cross.{f}.{v}", o) for f, vs in cross.items() for v, o in vs.items()]
    for where, overrides in [*((f"arms.{a}", o) for a, o in arms.items()), *((f"setup.{s}", o) for s, o in setup.items()), *levels]:
        for o in overrides:
            for kind, ref in PLACEHOLDER.findall(o):
                pool = arms if kind == "run" else setup
                if ref not in pool:
                    raise UserError(where, o, f"{{{kind}:{ref}}} names no {'arm' if kind == 'run' else 'setup run'}; there are: {', '.join(pool) or 'none'}")
                if kind == "run" and where.startswith("setup."):
                    raise UserError(where, o, "a setup run is made before the arms, so it cannot use an arm's run")
                if kind == "run" and where.startswith("cross."):
                    raise UserError(where, o, "a level of `cross` may name a setup run ({setup:...}, e.g. one SFT model per level), not an arm's run")

    seeds = raw["seeds"]
    if isinstance(seeds, int):
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError("seeds", seeds, "must be a list of distinct integers (or a count n for seeds 0..n-1)")

    primary = _metric(raw["primary"], "primary")
    secondary = [_metric(m, "secondary") for m in (raw.get("secondary") or [])]
    correction = str(raw.get("correction", "holm"))
    if correction not in ("holm", "bh"):
        raise UserError("correction", correction, "must be holm (family-wise error) or bh (false discovery rate)")

    declared = []
    for i, c in enumerate(raw.get("comparisons") or []):
        if not isinstance(c, dict) or set(c) - {"arm", "baseline", "metric"} or not {"arm", "baseline"} <= set(c):
            raise UserError(f"comparisons[{i}]", c, "write {arm: <arm>, baseline: <arm>} (metric optional: the primary by default)")
        for key in ("arm", "baseline"):
            if c[key] not in arms:
                raise UserError(f"comparisons[{i}].{key}", c[key], f"is not an arm of this study; the arms are {', '.join(arms)}")
        if c["arm"] == c["baseline"]:
            raise UserError(f"comparisons[{i}]", c, "compares an arm with itself")
        declared.append(Declared(str(c["arm"]), _metric(c.get("metric", primary), f"comparisons[{i}].metric"), baseline=str(c["baseline"])))
    for i, c in enumerate(raw.get("one_sample") or []):
        if not isinstance(c, dict) or set(c) - {"arm", "metric", "constant"} or not {"arm", "constant"} <= set(c):
            raise UserError(f"one_sample[{i}]", c, "write {arm: <arm>, constant: <number>} (metric optional: the primary by default)")
        if c["arm"] not in arms:
            raise UserError(f"one_sample[{i}].arm", c["arm"], f"is not an arm of this study; the arms are {', '.join(arms)}")
        if not isinstance(c["constant"], (int, float)) or isinstance(c["constant"], bool):
            raise UserError(f"one_sample[{i}].constant", c["constant"], "must be a number (e.g. 0.5 for an AUROC)")
        declared.append(Declared(str(c["arm"]), _metric(c.get("metric", primary), f"one_sample[{i}].metric"), constant=float(c["constant"])))
    if declared and len(seeds) < 2:
        raise UserError("seeds", seeds, "a declared comparison needs at least 2 seeds (paired over seeds)")
    if len(set(declared)) != len(declared):
        raise UserError("comparisons", [d.arm for d in declared], "declares the same comparison twice")

    spec = StudySpec(
        root=root, question=str(raw.get("question", "")), base=_strings(raw.get("base"), "base"), arms=arms, seeds=list(seeds),
        primary=primary, secondary=secondary, setup=setup, cross=cross, comparisons=declared, correction=correction,
        launcher=_strings(raw.get("launcher"), "launcher"),
    )
    spec.arm_order()  # a cycle of {run:...} references is one line here, not a hang later
    return spec


def check_overrides(spec: StudySpec) -> None:
    """Compose every setup run's and every cell's config (without running anything), so an unknown
    option or key in any arm is one line before the first run starts."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    import assay.config  # noqa: F401  (registers every option's schema, as assay-train does)
    from assay.paths import CONF_DIR

    todo = [(f"setup.{name}", [*spec.base, *o]) for name, o in spec.setup.items()]
    todo += [(f"arms.{cell.arm}" + "".join(f" at {k}={v}" for k, v in cell.level), [*spec.overrides(cell, spec.seeds[0]), f"seed={spec.seeds[0]}"]) for cell in spec.cells()]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            for where, overrides in todo:
                try:
                    compose(config_name="train", overrides=[o for o in overrides if not o.startswith("hydra/") and not o.startswith("hydra.")])
                except (HydraException, OmegaConfBaseException, ValueError) as e:
                    raise UserError(where, overrides, f"does not compose: {str(e).splitlines()[0]}") from None
    finally:
        GlobalHydra.instance().clear()
