"""The quickstart evolution from Python instead of the CLI.

    python runs/quickstart.py

Builds the config in code (here: the recipe file with two fields changed), runs the
evolution, and prints the best strategy's rendered system prompt.
"""

from __future__ import annotations

import dataclasses

from evo import load_config, run_evolution


def main() -> None:
    config = load_config("runs/quickstart.toml")
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, name="quickstart-script", generations=2))
    result = run_evolution(config)
    best = result.best
    print("best strategy:", best.content_hash())
    print(best.render("<question>").messages[0]["content"])
    print("held-out accuracy per generation:", [m["heldout_accuracy"] for m in result.metrics])


if __name__ == "__main__":
    main()
