"""``assay-list [group]``: the options of each config group, one line each.

    assay-list              # every group
    assay-list selection    # one group
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

import assay.config  # noqa: F401  (registers every entry)
from assay.paths import CONF_DIR
from assay.registry import describe, options, yaml_options

NESTED = ("objective/aggregator", "objective/controller", "selection/selector")
"""Groups nested in a group's options: chosen with ``objective/aggregator=dr_dpo``."""
OVERLAYS = ("collab", "paths", "hydra/launcher", "hydra/sweeper", "experiment", "sweep", "debug")


def _yaml_comment(path: Path) -> str:
    """The YAML file's leading comment block, cut to about one line (package directives skipped)."""
    lines = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("# @package"):
            continue
        if not line.startswith("#"):
            if lines:
                break
            continue
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    if len(text) <= 160:
        return text
    # The last whole sentence that fits on a line; "et al." and "Dr." do not end a sentence.
    ends = [m.end() for m in re.finditer(r"\w{4,}[.)]\.? ", text[:161])]
    return text[: ends[-1]].rstrip() if ends and ends[-1] > 40 else text[:157] + "..."


def group_options(group: str) -> dict[str, str]:
    """Every option of ``group`` with its one-line description: the registered entries (with or
    without a YAML file) and the YAML-only options (overlays such as experiments and launchers)."""
    folder = CONF_DIR / group
    registered = options(group)
    if not folder.is_dir() and not registered:
        raise KeyError(group)
    out = {}
    for key in sorted(set(yaml_options(group)) | set(registered)):
        path = folder / f"{key}.yaml"
        schema = _schema_of(path) if path.is_file() else f"{key}_schema"
        cls = registered.get(schema[: -len("_schema")]) if schema else None
        out[key] = describe(cls) if cls is not None else _yaml_comment(path)
    return out


def _schema_of(path: Path) -> str | None:
    data = yaml.safe_load(path.read_text()) or {}
    for entry in data.get("defaults", []) if isinstance(data, dict) else []:
        if isinstance(entry, str) and entry.endswith("_schema"):
            return entry
    return None


def groups() -> list[str]:
    from assay.config import GROUPS

    return list(GROUPS) + list(NESTED) + list(OVERLAYS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="assay-list", description="List the options of assay's config groups.")
    parser.add_argument("group", nargs="?", help=f"one of: {', '.join(groups())}")
    args = parser.parse_args(argv)
    chosen = [args.group] if args.group else groups()
    for group in chosen:
        try:
            opts = group_options(group)
        except KeyError:
            print(f"error: group={group!r}: unknown group; choose one of {groups()}", file=sys.stderr)
            sys.exit(2)
        print(f"{group}:")
        width = max(len(k) for k in opts) if opts else 0
        for key, text in opts.items():
            print(f"  {key:<{width}}  {text}")


if __name__ == "__main__":
    main()
