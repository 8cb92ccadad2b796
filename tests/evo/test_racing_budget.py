"""Racing (successive halving of the children) and the hard rollout budget
(evo.engine.racing), on the fake backend: who sees how many tasks, who may be
selected, what is counted, and that a resumed run matches an uninterrupted one."""

from __future__ import annotations

import json
import math

import pytest

from evo.engine.run import resume_evolution, run_evolution
from evo.rundir import checkpoint
from fakes import ArithmeticOracle, config, read_jsonl
from genomes.errors import InputError

RACE = {"race_share": 0.34, "race_keep": 0.5, "offspring": 6}
TASKS = {"per_family": 6}


def requests_per_genome(backend) -> dict[str, int]:
    counts: dict[str, int] = {}
    for request in backend.requests:
        key = json.dumps(request.messages[:-1])  # the strategy's rendering without the question
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_children_race_on_a_slice_and_only_the_best_half_goes_on(tmp_path):
    backend = ArithmeticOracle()
    run_evolution(config(tmp_path, run={"generations": 3}, population=RACE, tasks=TASKS), backend=backend,
                  show_progress=False)
    run_dir = tmp_path / "t"
    lineage = read_jsonl(run_dir / "lineage.jsonl")
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    raced_out = [row for row in lineage if row.get("raced_out")]
    assert raced_out and all(m["raced_out"] == sum(1 for r in raced_out if r["generation"] == m["generation"])
                             for m in metrics)
    assert metrics[0]["raced_out"] == 0  # the initial population is scored whole
    for m in metrics[1:]:  # every child born in the generation races; the best half goes on
        racers = sum(1 for row in lineage if row["generation"] == m["generation"])
        assert racers >= 2 and m["raced_out"] == racers - math.ceil(0.5 * racers)
    # the raced out never compete: not in any population, hall or later parentage
    out_ids = {row["id"] for row in raced_out}
    state = checkpoint.load_latest(run_dir).state
    kept_ids = {state["individuals"][i]["id"] for i in state["population"] + state["hall"]}
    assert not out_ids & kept_ids
    assert not out_ids & {p for row in lineage for p in row["parents"]}
    # a raced-out child was scored on the slice: 2 of the batch's 6 tasks (6 * 0.34 rounded up)
    slice_size = math.ceil(0.34 * 6)
    assert all(row["terms"] is not None for row in raced_out)
    assert any(count == slice_size for count in requests_per_genome(backend).values())


def test_racing_saves_rollouts_at_equal_children(tmp_path):
    raced, full = ArithmeticOracle(), ArithmeticOracle()
    run_evolution(config(tmp_path / "raced", run={"generations": 3}, population=RACE, tasks=TASKS), backend=raced,
                  show_progress=False)
    run_evolution(config(tmp_path / "full", run={"generations": 3}, population={**RACE, "race_share": 0.0},
                         tasks=TASKS), backend=full, show_progress=False)
    raced_m = read_jsonl(tmp_path / "raced" / "t" / "metrics.jsonl")[-1]
    full_m = read_jsonl(tmp_path / "full" / "t" / "metrics.jsonl")[-1]
    assert raced_m["search_rollouts"] < full_m["search_rollouts"]


def test_a_resumed_racing_run_equals_an_uninterrupted_one(tmp_path):
    from test_resume import final_state

    run_evolution(config(tmp_path / "straight", run={"generations": 4}, population=RACE, tasks=TASKS),
                  backend=ArithmeticOracle(), show_progress=False)
    run_evolution(config(tmp_path / "split", run={"generations": 2}, population=RACE, tasks=TASKS),
                  backend=ArithmeticOracle(), show_progress=False)
    resume_evolution(tmp_path / "split" / "t", generations=4, backend=ArithmeticOracle(), show_progress=False)
    assert final_state(tmp_path / "split" / "t") == final_state(tmp_path / "straight" / "t")


@pytest.mark.parametrize("race", [False, True])
def test_the_budget_is_a_hard_limit_and_every_vote_counts(tmp_path, race, capsys):
    limit = 70
    backend = ArithmeticOracle()
    cfg = config(tmp_path, run={"generations": 8}, budget={"rollouts": limit},
                 population={**(RACE if race else {}), "seeds": ["direct", "stepwise", "fewshot"]}, tasks=TASKS)
    run_evolution(cfg, backend=backend, show_progress=True)
    metrics = read_jsonl(tmp_path / "t" / "metrics.jsonl")
    last = metrics[-1]
    assert last["search_rollouts"] <= limit and last["budget_rollouts"] == limit
    # honest accounting: one rollout per request the backend saw, votes included
    assert last["rollouts"] == len(backend.requests)
    summary = json.loads((tmp_path / "t" / "best.json").read_text())["budget"]
    assert summary["search_rollouts_used"] == last["search_rollouts"] and summary["rollouts"] == limit
    assert summary["stopped_by_budget"] and len(metrics) < 9
    assert "budget.rollouts reached" in capsys.readouterr().err


def test_voting_strategies_cost_one_rollout_per_vote(tmp_path):
    seed = tmp_path / "voter.json"
    seed.write_text(json.dumps({"name": "voter", "decoding": {"temperature": 0.7, "votes": 3, "max_new_tokens": 128}}))
    backend = ArithmeticOracle()
    run_evolution(config(tmp_path, run={"generations": 1}, population={"seeds": [str(seed)], "size": 2,
                                                                        "offspring": 2}),
                  backend=backend, show_progress=False)
    last = read_jsonl(tmp_path / "t" / "metrics.jsonl")[-1]
    assert last["rollouts"] == len(backend.requests)
    assert sum(r.sampling.temperature > 0 for r in backend.requests) >= 3 * 3  # 3 tasks x 3 votes at least


def test_too_small_a_budget_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="budget.rollouts"):
        run_evolution(config(tmp_path, budget={"rollouts": 1}, tasks=TASKS), backend=ArithmeticOracle(),
                      show_progress=False)


def test_budget_and_race_settings_are_checked():
    with pytest.raises(InputError, match="budget.rollouts"):
        config("/tmp", budget={"rollouts": -1})
    with pytest.raises(InputError, match="population.race_keep"):
        config("/tmp", population={"race_keep": 0.0})
    with pytest.raises(InputError, match="population.race_share"):
        config("/tmp", population={"race_share": 1.5})


def test_a_budget_that_races_out_every_child_keeps_the_run_valid(tmp_path):
    """Without rotation (and on one level, so the frontier cannot move) only children
    are scored after generation 0; a budget that pays for some race slices but for no
    full batch races every child out and leaves the population as it was."""
    rows = [{"question": f"Solve this problem: {a} + {b} =", "answer": str(a + b)} for a in range(1, 12) for b in range(1, 6)]
    tasks_file = tmp_path / "sums.jsonl"
    tasks_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = {"families": [str(tasks_file)], "per_family": 6}
    cfg = config(tmp_path, run={"generations": 3}, population=RACE, tasks=tasks)
    run_evolution(cfg, backend=ArithmeticOracle(), show_progress=False)
    generation0 = read_jsonl(tmp_path / "t" / "metrics.jsonl")[0]["search_rollouts"]
    # room for generation 0 and the race slices of four children (3 tasks each), not one full batch more
    tight = config(tmp_path / "tight", run={"generations": 3}, population=RACE, tasks=tasks,
                   budget={"rollouts": generation0 + 4 * 3 + 1})
    run_evolution(tight, backend=ArithmeticOracle(), show_progress=False)
    metrics = read_jsonl(tmp_path / "tight" / "t" / "metrics.jsonl")
    assert (metrics[1]["left_out"], metrics[1]["raced_out"]) == (2, 4)  # 4 slices fit, no full batch does
    assert metrics[-1]["search_rollouts"] <= generation0 + 13
    summary = json.loads((tmp_path / "tight" / "t" / "best.json").read_text())
    assert summary["hall_of_fame"] and summary["budget"]["stopped_by_budget"]
