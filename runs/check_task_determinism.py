"""Which reasoning-gym families draw other tasks in another process, and whether ours do.

    python runs/check_task_determinism.py            # every family, ~2 min on 2 cores
    python runs/check_task_determinism.py --families ransom_note,chain_sum

Draws ``--size`` items of each family (level 0, seed 0) in two processes started
with different ``PYTHONHASHSEED`` values, twice: straight from reasoning-gym
(``fitness.canonical_draws.generate_items``: what the tool drew before its draws were
made canonical) and through the tool's own path (``draw_items``). Prints the families
whose raw draws differ, and fails (exit 1) if any family's draws through the tool
differ: that would make a run's splits depend on the process it runs in.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "digests: "


def _child(families: list[str], size: int, through_tool: bool) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    from fitness.canonical_draws import draw_items, generate_items

    draw = draw_items if through_tool else generate_items
    digests = {}
    for family in families:
        try:
            items = draw(family, 0, 0, size)
            digests[family] = hashlib.sha256(repr([(i["question"], i["answer"]) for i in items]).encode()).hexdigest()
        except Exception as error:  # a family that fails to generate fails the same way everywhere
            digests[family] = f"error: {type(error).__name__}"
    print(MARK + json.dumps(digests))  # generators may print too


def _draws(families: list[str], size: int, through_tool: bool, hash_seed: str) -> dict[str, str]:
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'runs')!r}); import check_task_determinism as c; "
            f"c._child({families!r}, {size}, {through_tool})")
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.rsplit(MARK, 1)[1].splitlines()[0])  # a generator may print without a newline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="", help="comma-separated (default: every reasoning-gym family)")
    parser.add_argument("--size", type=int, default=4, help="items drawn per family (default 4)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from fitness.tasks import reasoning_gym_families

    families = [f for f in args.families.split(",") if f] or reasoning_gym_families()
    raw = [_draws(families, args.size, False, seed) for seed in ("1", "2")]
    tool = [_draws(families, args.size, True, seed) for seed in ("1", "2")]
    follow = sorted(f for f in families if raw[0][f] != raw[1][f])
    broken = sorted(f for f in families if tool[0][f] != tool[1][f])
    print(f"{len(families)} families; raw reasoning-gym draws follow the hash seed in {len(follow)}: "
          f"{', '.join(follow) or 'none'}")
    print(f"through the tool (fitness.canonical_draws): {len(broken)} differ between processes: "
          f"{', '.join(broken) or 'none'}")
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    main()
