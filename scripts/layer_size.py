"""Does every function still deploy? The shared layer, installed for the Lambda platform, plus each function's code.

    .venv/bin/python scripts/layer_size.py [--uv .tools/bin/uv]

Installs ``layers/soracharge/requirements.txt`` (what ``sam build`` installs into the layer, exported
from ``uv.lock``) for CPython 3.13 on manylinux2014 x86_64, the template's runtime and architecture,
binary wheels only, into a temporary folder; adds the ``soracharge`` package; and checks that the
layer and each function's code, unzipped, stay under Lambda's 250 MB. Prints the sizes, the largest
packages first; exits 1 when a function would not deploy.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "soracharge"
FUNCTIONS = ROOT / "functions"
#: Lambda's limit on a function's code and layers, unzipped (262,144,000 bytes).
LIMIT = 250 * 1024 * 1024
RUNTIME, PLATFORM = "3.13", "x86_64-manylinux2014"


def size_of(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file() and "__pycache__" not in file.parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uv", default=str(ROOT / ".tools" / "bin" / "uv"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soracharge-layer-") as tmp:
        target = Path(tmp) / "python"
        subprocess.run(  # noqa: S603 - uv from this repository's tools
            [
                args.uv, "pip", "install", "--quiet", "--target", str(target),
                "--python-platform", PLATFORM, "--python-version", RUNTIME, "--only-binary", ":all:",
                "-r", str(LAYER / "requirements.txt"),
            ],
            check=True,
        )  # fmt: skip
        packages = sorted(((size_of(p), p.name) for p in target.iterdir() if p.is_dir()), reverse=True)
        dependencies = size_of(target)
    own = size_of(LAYER / "soracharge")
    layer = dependencies + own
    print(f"Shared layer for python{RUNTIME} {PLATFORM}, unzipped: {layer / 2**20:.1f} MB")
    print(f"  the soracharge package: {own / 2**20:.1f} MB; the largest dependencies:")
    for size, name in packages[:6]:
        print(f"  {name:32} {size / 2**20:7.1f} MB")
    worst = 0
    for function in sorted(p for p in FUNCTIONS.iterdir() if p.is_dir()):
        total = layer + size_of(function)
        worst = max(worst, total)
        print(f"  {function.name:24} layer + code {total / 2**20:7.1f} MB")
    room = (LIMIT - worst) / 2**20
    print(f"Largest function {worst / 2**20:.1f} MB of Lambda's 250 MB: {room:.1f} MB to spare")
    if worst > LIMIT:
        print("A function would not deploy: its code and layers exceed 250 MB unzipped.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
