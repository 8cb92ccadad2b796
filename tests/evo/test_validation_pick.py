"""The run's best (evo.engine.validation, evo.rundir.export.ranked_candidates): the
highest validation accuracy of any generation, so a leader pushed out of the hall by a
luckier newcomer is not lost; the same pick in the loop, in export and after resume."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

from evo.engine.run import resume_evolution, run_evolution
from evo.rundir import checkpoint
from evo.rundir.export import export_top, pick_scores, pick_validation, ranked_candidates
from evo.tune.on_test import best_strategy_of
from fakes import config, read_jsonl
from fitness.backends.base import Completion
from genomes.chat_format import format_completion
from genomes.strategy import Strategy


class CoinPerStrategy:
    """Right on a task when a hash of (the whole prompt, the question) says so: each
    strategy is right on its own third of the tasks, so training and validation
    disagree on who is best, as they do on small batches with a real model."""

    def generate(self, requests, progress=None):
        out = []
        for r in requests:
            prompt = "\n".join(m["content"] for m in r.messages)
            lucky = hashlib.sha256(prompt.encode()).digest()[0] % 3 == 0
            out.append(Completion(format_completion(["work"], self._gold(r) if lucky else "no", "done"), 10, 20, "stop"))
        if progress:
            progress(len(requests))
        return out

    @staticmethod
    def _gold(request):
        import re

        question = request.messages[-1]["content"]
        chain = re.search(r"problem: (.*) =", question) or re.match(r".*Calculate (.*)\.$", question, re.S)
        return f"{eval(chain.group(1)):g}" if chain else "?"

    def count_tokens(self, text):
        return len(text.split())


TASKS = {"families": ["chain_sum", "basic_arithmetic"], "per_family": 3, "rotate_every": 1, "heldout_per_family": 6}
POPULATION = {"size": 4, "offspring": 6, "seeds": ["direct", "stepwise", "fewshot"]}


def run(tmp_path, generations=6, pick="best_validated", seed=3):
    cfg = config(tmp_path, run={"generations": generations, "seed": seed}, tasks={**TASKS, "pick": pick},
                 population=POPULATION)
    run_evolution(cfg, backend=CoinPerStrategy(), show_progress=False)
    return cfg, read_jsonl(tmp_path / "t" / "metrics.jsonl")


def test_scores_pool_every_generation_unless_asked_for_the_last():
    metrics = [{"validation_scores": {"a": 0.5}}, {"validation_scores": {"b": 0.25}},
               {"best_hash": "c", "heldout_accuracy": 0.1}]  # a record of a run made before validation_scores
    assert pick_scores(metrics, "best_validated") == {"a": 0.5, "b": 0.25, "c": 0.1}
    assert pick_scores(metrics, "last_generation") == {"c": 0.1}
    assert pick_validation({"heldout_accuracy": 0.2}) == 0.2
    assert pick_validation({"heldout_accuracy": 0.2, "pick_validation": 0.4}) == 0.4


def test_candidates_are_the_hall_then_the_validated_and_old_checkpoints_read_the_hall():
    rows = [{"strategy": Strategy.load(name).encode(), "id": i} for i, name in enumerate(("direct", "stepwise"))]
    hashes = [Strategy.load(name).content_hash() for name in ("direct", "stepwise")]
    state = {"individuals": rows, "hall": [0], "validated": [1, 0], "config": {"tasks": {"pick": "best_validated"}},
             "metrics": [{"validation_scores": {hashes[1]: 0.5}}, {"validation_scores": {hashes[0]: 0.25}}]}
    ranked, _ = ranked_candidates(SimpleNamespace(state=state))
    assert [r["id"] for r in ranked] == [1, 0]
    last = {**state, "config": {"tasks": {"pick": "last_generation"}}}
    assert [r["id"] for r in ranked_candidates(SimpleNamespace(state=last))[0]] == [0]
    old = {k: v for k, v in state.items() if k not in ("validated", "config")}
    assert [r["id"] for r in ranked_candidates(SimpleNamespace(state=old))[0]] == [0]


def test_the_runs_best_never_gets_worse_on_validation_and_export_takes_it(tmp_path):
    cfg, metrics = run(tmp_path)
    picks = [pick_validation(m) for m in metrics]
    assert picks == sorted(picks) and None not in picks  # the best so far is kept
    pooled = {}
    for m in metrics:
        pooled.update(m["validation_scores"])
        assert m["pick_validation"] == max(pooled.values())
    # the hall's best of some generation validated worse than an earlier leader: the
    # pick differs from it (else this run would not test anything)
    assert any(m["pick_hash"] != m["best_hash"] for m in metrics)
    exported = export_top(cfg.run_dir, 1, tmp_path / "export")
    assert exported[0].name.endswith(metrics[-1]["pick_hash"])
    assert best_strategy_of(cfg.run_dir).content_hash() == metrics[-1]["pick_hash"]


def test_last_generation_picks_the_halls_best(tmp_path):
    _, metrics = run(tmp_path)
    _, last = run(tmp_path / "last", pick="last_generation")
    assert all(m["pick_hash"] == m["best_hash"] for m in last)
    assert [m["best_hash"] for m in last] == [m["best_hash"] for m in metrics]  # selection never reads validation


def test_a_resumed_run_keeps_the_validated_and_picks_as_an_uninterrupted_one(tmp_path):
    _, whole = run(tmp_path / "whole")
    cfg, _ = run(tmp_path / "cut", generations=3)
    assert checkpoint.load_latest(cfg.run_dir).state["validated"]
    resume_evolution(cfg.run_dir, generations=6, backend=CoinPerStrategy(), show_progress=False)
    cut = read_jsonl(cfg.run_dir / "metrics.jsonl")
    assert [(m["pick_hash"], m["pick_validation"]) for m in whole] == [(m["pick_hash"], m["pick_validation"]) for m in cut]


def test_a_family_where_the_best_does_not_beat_a_constant_answer_is_named(tmp_path, capsys):
    """best.json keeps, per family, the best's validation accuracy beside always giving
    the family's most common training answer; a family where the best is no better
    gets one note (here every gold answer is "7" while the oracle answers the sum)."""
    import json
    import random

    from fakes import ArithmeticOracle

    rng, sevens = random.Random(0), tmp_path / "sevens.jsonl"
    with open(sevens, "w") as f:
        for _ in range(80):
            f.write(json.dumps({"question": f"Solve this problem: {rng.randrange(50)} + {rng.randrange(50)} =",
                                "answer": "7"}) + "\n")
    cfg = config(tmp_path, run={"generations": 1}, tasks={"families": ["chain_sum", str(sevens)]})
    run_evolution(cfg, backend=ArithmeticOracle(), show_progress=True)
    rows = json.loads((tmp_path / "t" / "best.json").read_text())["constant_answer"]
    assert rows["jsonl:sevens"]["answer"] == "7" and rows["jsonl:sevens"]["constant"] == 1.0
    assert rows["jsonl:sevens"]["best"] < 0.5 and rows["chain_sum"]["best"] == 1.0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("evo: note: ")]
    assert len([n for n in notes if "always answering '7'" in n and n.startswith("evo: note: jsonl:sevens")]) == 1
    assert not any("chain_sum" in n for n in notes)
    # a finished run resumed has nothing to do and keeps the same rows (from the journal)
    resume_evolution(tmp_path / "t", backend=ArithmeticOracle(), show_progress=False)
    assert json.loads((tmp_path / "t" / "best.json").read_text())["constant_answer"] == rows
