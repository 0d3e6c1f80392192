"""Write small phantom NIfTI folders shaped like BTCV, AMOS22 and TotalSegmentator (scenarios.organ_fixtures).

    python scripts/make_organ_fixtures.py DIR [--protocol btcv|amos|totalseg|all] [--cases 8] [--size 48] [--slices 24]

writes DIR/<protocol>/..., ready for
``cl-suite run --scenario organ-nifti --strategy loco-lora --tiny --set scenario.root=DIR/btcv --set scenario.protocol=btcv``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scenarios.organ_fixtures import write_fixture

PROTOCOLS = ("btcv", "amos", "totalseg")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--protocol", choices=(*PROTOCOLS, "all"), default="all")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--slices", type=int, default=24)
    args = parser.parse_args(argv)
    for name in PROTOCOLS if args.protocol == "all" else (args.protocol,):
        path = write_fixture(args.out / name, name, cases=args.cases, size=args.size, slices=args.slices)
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
