"""Evidence that selection acts on LoRA adapters (a real run on the bundled model).

    python runs/lora_selection.py                         # runs/lora.toml, sigmas 0.05 and 0.1
    python runs/lora_selection.py --sigmas 0.01 --generations 3

Runs the LoRA recipe with the given perturbation scales, records the population
after every generation, and then, for every child made by ``mut_lora`` whose
adapter carries weights, compares it with its parent on the tasks both were scored
on (same batch, greedy, from the journal):

- how many of its completions differ from the parent's (do adapters change outputs?);
- correct answers and fitness against the parent's score on the same batch;
- whether selection kept it in the population.

Prints a table and a summary, writes OUT_DIR/lora-selection/lora_selection.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from evo.rundir import checkpoint
from evo.config.sections import load_config
from evo.engine.run import run_evolution
from evo.rundir.files import RunDir
from fitness.journal import Journal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="runs/lora.toml")
    parser.add_argument("--sigmas", default="0.05,0.1")
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--out-dir", default="runs/out")
    args = parser.parse_args()
    sigmas = [float(s) for s in args.sigmas.split(",")]
    config = load_config(args.config, {"run": {"name": "lora-selection", "out_dir": args.out_dir,
                                               "generations": args.generations},
                                       "population": {"lora_sigmas": sigmas}})
    populations: dict[int, set[int]] = {}

    def remember_population(record):
        saved = checkpoint.load_latest(config.run_dir)
        populations[saved.generation] = {saved.state["individuals"][i]["id"] for i in saved.state["population"]}

    run_evolution(config, overwrite=True, on_generation=remember_population)
    rows = RunDir(config.run_dir).read_jsonl("lineage.jsonl")
    first_row = {}
    for row in rows:
        first_row.setdefault(row["id"], row)
    with Journal(config.run_dir / "journal.sqlite") as journal:
        by_genome: dict[str, dict[str, object]] = {}
        for _, r in journal.all_results():
            by_genome.setdefault(r.strategy_hash, {})[r.task_id] = r

    children = []
    latest_row: dict[int, dict] = {}  # id -> its latest score so far, in file order
    for row in rows:
        lora = row["strategy"].get("lora") or {}
        parent = latest_row.get(row["parents"][0]) if row["parents"] else None
        is_birth = row is first_row[row["id"]]
        latest_row[row["id"]] = row
        # The parent's latest row before the child's is its score on the child's batch: the
        # batch changes only when the frontier moves, and then survivors are re-scored
        # (logged before the offspring of the same call).
        if row["op"] != "mut_lora" or not is_birth or parent is None:
            continue
        mine, theirs = by_genome.get(row["hash"], {}), by_genome.get(parent["hash"], {})
        shared = sorted(set(mine) & set(theirs))
        if not shared:
            continue
        changed = sum(mine[t].completion != theirs[t].completion for t in shared)
        children.append({
            "id": row["id"], "generation": row["generation"], "parent": parent["id"],
            "adapter_on": bool(lora.get("enabled")),
            "tasks": len(shared), "outputs_changed": changed,
            "correct_child": sum(mine[t].correct for t in shared), "correct_parent": sum(theirs[t].correct for t in shared),
            "fitness_child": row["fitness"][0], "fitness_parent": parent["fitness"][0],
            "kept": row["id"] in populations.get(row["generation"], set()),
        })

    print(f"{'id':>4} {'gen':>3} {'parent':>6} {'on':>3} {'changed':>9} {'correct':>9} {'fitness':>17} kept")
    for c in children:
        print(f"{c['id']:>4} {c['generation']:>3} {c['parent']:>6} {'y' if c['adapter_on'] else 'n':>3} "
              f"{c['outputs_changed']:>3}/{c['tasks']:<5} {c['correct_child']:>3} vs {c['correct_parent']:<3} "
              f"{c['fitness_child']:+.3f} vs {c['fitness_parent']:+.3f} {'yes' if c['kept'] else 'no'}")
    active = [c for c in children if c["adapter_on"]]
    changed = [c for c in active if c["outputs_changed"]]
    better = [c for c in changed if c["fitness_child"] > c["fitness_parent"]]
    worse = [c for c in changed if c["fitness_child"] < c["fitness_parent"]]
    kept_rate = lambda cs: (sum(c["kept"] for c in cs) / len(cs)) if cs else None  # noqa: E731
    final = json.loads((config.run_dir / "best.json").read_text())["hall_of_fame"]
    summary = {
        "sigmas": sigmas, "generations": args.generations,
        "lora_children": len(active), "with_changed_outputs": len(changed),
        "share_of_outputs_changed": (sum(c["outputs_changed"] for c in active) / sum(c["tasks"] for c in active)) if active else None,
        "fitter_than_parent": len(better), "less_fit_than_parent": len(worse),
        "more_correct_than_parent": sum(c["correct_child"] > c["correct_parent"] for c in changed),
        "fewer_correct_than_parent": sum(c["correct_child"] < c["correct_parent"] for c in changed),
        "kept_rate_fitter": kept_rate(better), "kept_rate_less_fit": kept_rate(worse),
        "kept_rate_all_lora_children": kept_rate(active),
        "final_population_with_adapter": sum(
            1 for row in (first_row[i] for i in populations[max(populations)])
            if (row["strategy"].get("lora") or {}).get("enabled")),
        "final_population_size": len(populations[max(populations)]),
        "hall_of_fame_with_adapter": sum(1 for h in final if (h["strategy"].get("lora") or {}).get("enabled")),
        "children": children,
    }
    Path(config.run_dir / "lora_selection.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "children"}, indent=2))


if __name__ == "__main__":
    main()
