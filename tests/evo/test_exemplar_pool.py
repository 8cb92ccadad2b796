"""Exemplars from the run's own data (evo.engine.exemplar_pool): labeled training
tasks and the model's own verified-correct completions, never a held-out question,
each with its provenance, the same for reasoning-gym families and JSONL files."""

from __future__ import annotations

import json

from fakes import ArithmeticOracle, config, read_jsonl

from evo.engine.run import resume_evolution, run_evolution
from evo.engine.task_pool import TaskPool
from evo.rundir import checkpoint
from fitness.tasks import HELDOUT
from genomes.strategy import Exemplar, PromptGene, Strategy


def exemplar_turns(request) -> list[str]:
    """Every message text a request shows before its own question."""
    return [m["content"] for m in request.messages[:-1]]


def pool_state(run_dir):
    return checkpoint.load_latest(run_dir).state["exemplar_pool"]


def test_no_heldout_question_ever_reaches_a_prompt(tmp_path):
    backend = ArithmeticOracle()
    cfg = config(tmp_path, run={"generations": 4}, tasks={"per_family": 4, "heldout_per_family": 12})
    run_evolution(cfg, backend=backend, show_progress=False)
    heldout = {task.question for task in TaskPool(cfg).validation()}
    assert len(heldout) == 12
    shown = [text for request in backend.requests for text in exemplar_turns(request)]
    assert not [q for q in heldout if any(q in text for text in shown)]
    # no test question reaches any turn of any request: the test split is never read
    test = {task.question for task in TaskPool(cfg).test(40, fewer_ok=True)}
    assert len(test) >= 12 and not test & heldout
    every_turn = [m["content"] for request in backend.requests for m in request.messages]
    assert not [q for q in test if any(q in text for text in every_turn)]
    # the check has teeth: pool exemplars (labeled and bootstrapped) did reach prompts
    bootstrapped = pool_state(tmp_path / "t")["bootstrapped"]
    assert bootstrapped, "the oracle answers chain sums: correct completions must be harvested"
    pool_questions = {row[3]["question"] for row in bootstrapped}
    assert any(q in shown for q in pool_questions)


def test_every_pool_exemplar_records_where_it_came_from(tmp_path):
    cfg = config(tmp_path, run={"generations": 3})
    run_evolution(cfg, backend=ArithmeticOracle(), show_progress=False)
    run_dir = tmp_path / "t"
    lineage = {row["id"]: row for row in read_jsonl(run_dir / "lineage.jsonl")}
    pool = TaskPool(cfg)
    train_ids = {t.id for tasks in pool.labeled_tasks(4).values() for t in tasks}
    for task_id, tokens, family, data in pool_state(run_dir)["bootstrapped"]:
        kind, split, rest = data["source"].split(":", 2)
        source_task, individual = rest.rsplit(":", 1)
        assert (kind, split, source_task, family) == ("bootstrapped", "train", task_id, "chain_sum")
        assert int(individual.lstrip("#")) in lineage  # the individual whose completion it was
        assert data["answer"] and data["steps"]
    paired = [row for row in lineage.values() if row["op"] == "pair_up"]
    assert len(paired) == 1
    sources = [e["source"] for e in paired[0]["strategy"]["prompt"]["exemplars"]]
    assert sources and all(s.startswith("labeled:train:chain_sum/") or s == "" for s in sources)
    assert {s.split(":", 2)[2] for s in sources if s} <= train_ids


def test_jsonl_tasks_feed_labeled_exemplars_from_their_training_split(tmp_path):
    rows = [{"question": f"Solve this problem: {a} + {b} =", "answer": str(a + b)} for a in range(1, 9) for b in range(1, 6)]
    tasks_file = tmp_path / "sums.jsonl"
    tasks_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config(tmp_path, tasks={"families": [str(tasks_file)], "per_family": 4, "heldout_per_family": 6},
                 run={"generations": 2})
    backend = ArithmeticOracle()
    run_evolution(cfg, backend=backend, show_progress=False)
    pool = TaskPool(cfg)
    heldout = {t.question for t in pool.held_out(HELDOUT, 40)}  # validation and test
    labeled = [t for tasks in pool.labeled_tasks(4).values() for t in tasks]
    assert len(labeled) == 4 and not heldout & {t.question for t in labeled}
    shown = [text for request in backend.requests for text in exemplar_turns(request)]
    assert any(t.question in shown for t in labeled)
    assert not [q for q in heldout if any(q in text for text in shown)]


def test_a_file_too_small_for_exemplars_is_one_note_and_the_run_goes_on(tmp_path, capsys):
    tasks_file = tmp_path / "tiny.jsonl"
    tasks_file.write_text("".join(json.dumps({"question": f"Solve this problem: {a} + 1 =", "answer": ""}) + "\n"
                                  for a in range(6)).replace('"answer": ""', '"answer": "?"'))
    cfg = config(tmp_path, tasks={"families": [str(tasks_file)], "per_family": 2, "heldout_per_family": 1},
                 run={"generations": 1}, exemplars={"max_question_chars": 20})
    run_evolution(cfg, backend=ArithmeticOracle(), show_progress=True)
    err = capsys.readouterr().err
    assert err.count("no labeled exemplars for jsonl:tiny") == 1
    assert (tmp_path / "t" / "best.json").exists()


def test_resume_mutates_from_the_same_pool(tmp_path):
    straight = config(tmp_path, run={"name": "straight", "generations": 4})
    split = config(tmp_path, run={"name": "split", "generations": 2})
    run_evolution(straight, backend=ArithmeticOracle(), show_progress=False)
    run_evolution(split, backend=ArithmeticOracle(), show_progress=False)
    resume_evolution(tmp_path / "split", generations=4, backend=ArithmeticOracle(), show_progress=False)
    assert pool_state(tmp_path / "split") == pool_state(tmp_path / "straight")
    assert read_jsonl(tmp_path / "split" / "lineage.jsonl") == read_jsonl(tmp_path / "straight" / "lineage.jsonl")


def test_sources_can_be_switched_off(tmp_path):
    cfg = config(tmp_path, exemplars={"sources": ["library"]}, run={"generations": 2})
    run_evolution(cfg, backend=ArithmeticOracle(), show_progress=False)
    assert pool_state(tmp_path / "t") == {"bootstrapped": []}
    lineage = read_jsonl(tmp_path / "t" / "lineage.jsonl")
    assert all(e.get("source", "") == "" for row in lineage for e in row["strategy"]["prompt"]["exemplars"])


def test_render_never_shows_a_question_as_its_own_exemplar():
    own = Exemplar("Solve this problem: 2 + 2 =", ("2 + 2 = 4",), "4", source="labeled:train:x/L0/1")
    other = Exemplar("Solve this problem: 3 + 3 =", ("3 + 3 = 6",), "6")
    strategy = Strategy(prompt=PromptGene(exemplars=(own, other)))
    assert [m["content"] for m in strategy.render(own.question).messages].count(own.question) == 1  # the question
    assert own.question in [m["content"] for m in strategy.render(other.question).messages]


def test_provenance_is_kept_and_library_hashes_do_not_change():
    library = Strategy.load("fewshot")
    assert "source" not in json.dumps(library.encode())  # hashes of every earlier run stay valid
    labeled = Exemplar("Q?", ("step",), "A", source="labeled:train:fam/L0/abc")
    strategy = Strategy(prompt=PromptGene(exemplars=(labeled,)))
    again = Strategy.decode(strategy.encode())
    assert again == strategy and again.prompt.exemplars[0].source == "labeled:train:fam/L0/abc"
