"""Distillation pairs: the rules on a constructed journal, and `evo distill` on a run."""

from __future__ import annotations

import json

import pytest
from fakes import ArithmeticOracle, config, read_jsonl

from evo.cli.main import main
from evo.distill.pairs import (
    INCORRECT, LONGER, Lineages, PairRules, build_pairs, canonical_strategy, distill_run, read_pairs,
)
from evo.engine.run import run_evolution
from fitness.evaluate import ExampleResult
from fitness.journal import Journal
from fitness.tasks import TRAIN, split_of
from genomes.chat_format import format_completion
from genomes.errors import InputError
from genomes.strategy import Strategy

LINEAGE = Lineages({"good": (1,), "also": (2,)}, top=2)


def result(genome: str, task: str, correct: bool, chain_tokens: int, text: str | None = None,
           question: str = "What is 2 + 2?", finish: str = "stop") -> ExampleResult:
    answer = "4" if correct else "5"
    text = text or format_completion([f"step by {genome} " + "x " * chain_tokens], answer, f"It is {answer}.")
    return ExampleResult(
        strategy_hash=genome, task_id=task, family="basic_arithmetic", level=0, difficulty=0.0, question=question,
        gold="4", answer=answer if "<begin_constrained_output>" in text else None, answer_problem=None, score=1.0 if correct else 0.0, steps=("s",), response="r",
        chain_tokens=chain_tokens, completion_tokens=chain_tokens + 5, finish_reason=finish, votes=1, completion=text)


def test_chosen_is_the_shortest_correct_chain_of_the_fittest_lineages():
    results = [
        result("good", "t1", True, 30),
        result("also", "t1", True, 12),
        result("outsider", "t1", True, 3),  # shorter, but not in the fittest lineages
        result("outsider", "t1", False, 10),
    ]
    [pair] = build_pairs(results, LINEAGE, PairRules(rejected_per_task=1))
    assert pair.chosen.strategy_hash == "also" and pair.chosen.chain_tokens == 12
    assert pair.kind == INCORRECT and not pair.rejected.correct


def test_every_individual_may_give_the_chosen_side_by_default():
    results = [result("good", "t1", True, 30), result("outsider", "t1", True, 3), result("outsider", "t1", False, 10)]
    [pair] = build_pairs(results, Lineages({}, 0), PairRules(rejected_per_task=1))
    assert PairRules().top_lineages == 0
    assert pair.chosen.strategy_hash == "outsider" and pair.chosen.chain_tokens == 3


def test_a_chosen_is_never_wrong():
    results = [result("good", "t1", False, 5), result("outsider", "t1", True, 5), result("outsider", "t1", False, 9)]
    assert build_pairs(results, LINEAGE, PairRules()) == []


def test_rejected_prefers_wrong_answers_then_much_longer_correct_chains():
    results = [
        result("good", "t1", True, 10),
        result("x", "t1", False, 40, text="no answer block at all"),
        result("y", "t1", False, 50),  # has an answer block: preferred over the malformed one
        result("z", "t1", True, 25),  # correct and much longer (>= 2x and >= +8 tokens)
        result("w", "t1", True, 14),  # correct, not much longer: never rejected
    ]
    pairs = build_pairs(results, LINEAGE, PairRules(rejected_per_task=5))
    assert [(p.kind, p.rejected.strategy_hash) for p in pairs] == [(INCORRECT, "y"), (INCORRECT, "x"), (LONGER, "z")]
    only_longer = build_pairs(results, LINEAGE, PairRules(rejected_per_task=5, use_incorrect=False))
    assert [(p.kind, p.rejected.strategy_hash) for p in only_longer] == [(LONGER, "z")]
    only_wrong = build_pairs(results, LINEAGE, PairRules(rejected_per_task=5, use_longer=False))
    assert {p.kind for p in only_wrong} == {INCORRECT}


def test_no_identical_sides_and_no_duplicates():
    same = format_completion(["2 + 2 = 4"], "4", "It is 4.")
    results = [
        result("good", "t1", True, 5, text=same),
        result("also", "t1", True, 5, text=same + "  "),  # the same text up to whitespace
        result("x", "t1", False, 5, text="<cot> 2 + 2 <begin_constrained_output> 5 <end_constrained_output>"),
        result("y", "t1", False, 5, text="<cot> 2 + 2 <begin_constrained_output> 5 <end_constrained_output>"),
    ]
    pairs = build_pairs(results, LINEAGE, PairRules(rejected_per_task=5, use_longer=True))
    assert len(pairs) == 1
    triples = [json.dumps(p.to_trl()) for p in pairs]
    assert len(set(triples)) == len(triples)
    for p in pairs:
        row = p.to_trl()
        assert row["chosen"][0]["content"].strip() != row["rejected"][0]["content"].strip()


def test_heldout_tasks_are_never_used():
    results = [result("good", "t1", True, 5), result("x", "t1", False, 5),
               result("good", "t2", True, 5, question="held out?"), result("x", "t2", False, 5, question="held out?")]
    pairs = build_pairs(results, LINEAGE, PairRules(), is_training_task=lambda r: r.task_id != "t2")
    assert {p.task_id for p in pairs} == {"t1"}


def test_prompt_is_canonical_and_rows_are_trl_conversational():
    results = [result("good", "t1", True, 5), result("x", "t1", False, 5)]
    [pair] = build_pairs(results, LINEAGE, PairRules())
    row = pair.to_trl()
    assert set(row) == {"prompt", "chosen", "rejected"}
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert row["prompt"][1]["content"] == "What is 2 + 2?"
    system = row["prompt"][0]["content"]
    assert "<begin_constrained_output>" in system and "careful problem solver" not in system  # no evolved role
    assert row["prompt"] == [dict(m) for m in canonical_strategy().render("What is 2 + 2?").messages]
    assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"


def test_bad_rules_are_clear_errors():
    for rules, field in ((PairRules(top_lineages=-1), "--top-lineages"), (PairRules(long_ratio=1.0), "--long-ratio"),
                         (PairRules(rejected_per_task=0), "--per-task"),
                         (PairRules(use_incorrect=False, use_longer=False), "no pair kind")):
        with pytest.raises(InputError, match=field):
            build_pairs([], LINEAGE, rules)


@pytest.fixture
def oracle_run(tmp_path):
    """A run whose journal holds right (>= 96 tokens allowed) and wrong answers."""
    terse = tmp_path / "terse.json"  # the oracle answers it wrongly: too few new tokens
    data = Strategy.load("direct").encode()
    data["name"], data["decoding"]["max_new_tokens"] = "terse", 48
    terse.write_text(json.dumps(data))
    cfg = config(tmp_path, run={"generations": 3}, population={"seeds": ["direct", "stepwise", str(terse)]})
    run_evolution(cfg, backend=ArithmeticOracle(), show_progress=False)
    return cfg


def test_distill_run_writes_trl_pairs_from_training_tasks_only(oracle_run, tmp_path):
    run_dir = oracle_run.run_dir
    out = distill_run(run_dir, tmp_path / "d")
    rows = read_pairs(out.pairs_path)
    meta = [json.loads(line) for line in (tmp_path / "d" / "pairs.meta.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert rows and len(rows) == len(meta) == summary["pairs"] == len(out.pairs)
    assert summary["chosen"]["accuracy"] == 1.0 and summary["rejected"]["accuracy"] == 0.0
    assert summary["heldout_completions_excluded"] > 0  # the journal holds held-out results, pairs do not
    assert summary["lineages"]["considered"] == 0  # the default: every individual may give a chosen side
    with Journal(run_dir / "journal.sqlite") as journal:
        stored = {(r.strategy_hash, r.task_id): r for _, r in journal.all_results()}
    for pair, m in zip(out.pairs, meta):
        chosen = stored[(m["chosen_hash"], m["task_id"])]
        assert chosen.correct and chosen.completion.strip() == pair.to_trl()["chosen"][0]["content"]
        assert split_of(pair.chosen.family, pair.chosen.question, 0, 0.2) == TRAIN


def test_distill_command(oracle_run, tmp_path, capsys):
    assert main(["distill", str(oracle_run.run_dir), "--out", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "d" / "pairs.jsonl")
    assert "| chosen |" in (tmp_path / "d" / "summary.md").read_text()
    assert main(["distill", str(tmp_path / "missing")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    # training arguments are checked before anything loads
    assert main(["distill", str(oracle_run.run_dir), "--train", "--rank", "0"]) == 2
    assert "--rank" in capsys.readouterr().err
    assert main(["distill", str(oracle_run.run_dir), "--train", "--targets", "q_proj,lm_head"]) == 2
    assert "lm_head" in capsys.readouterr().err


def test_read_pairs_refuses_malformed_files(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b"}\n')
    with pytest.raises(InputError, match=":1: a pair needs exactly"):
        read_pairs(bad)
    bad.write_text("{not json\n")
    with pytest.raises(InputError, match="malformed JSON"):
        read_pairs(bad)
    bad.write_text("")
    with pytest.raises(InputError, match="no pairs"):
        read_pairs(bad)


@pytest.mark.slow
def test_distill_command_trains_and_records_the_adapter(oracle_run, tmp_path, capsys):
    code = main(["distill", str(oracle_run.run_dir), "--out", str(tmp_path / "d"), "--train", "--steps", "1",
                 "--batch-size", "2", "--rank", "2", "--targets", "q_proj", "--max-length", "256"])
    assert code == 0
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    adapter = summary["adapter"]
    assert adapter["steps"] == 1 and adapter["path"].endswith(adapter["trained_hash"])
    assert (oracle_run.run_dir / "adapters" / "trained" / adapter["trained_hash"] / "adapter_model.safetensors").is_file()
    assert "--inject-adapter" in capsys.readouterr().err
    assert adapter["trained_hash"] in (tmp_path / "d" / "summary.md").read_text()


def test_fittest_lineages_are_the_hall_and_all_its_ancestors(oracle_run):
    from evo.rundir import checkpoint
    from evo.distill.pairs import fittest_lineages
    from evo.rundir.export import ancestry

    run_dir = oracle_run.run_dir
    saved = checkpoint.load_latest(run_dir)
    best = saved.state["individuals"][saved.state["hall"][0]]
    rows = {row["id"]: row for row in read_jsonl(run_dir / "lineage.jsonl")}
    expected = {rows[a["id"]]["hash"] for a in ancestry(rows, best["id"])}
    lineages = fittest_lineages(run_dir, 1)
    assert lineages.top == 1 and set(lineages.ranks_of) == expected
    assert all(ranks == (1,) for ranks in lineages.ranks_of.values())
    assert set(fittest_lineages(run_dir, 3).ranks_of) >= expected


def test_pairs_come_again_under_each_prompt_strategy_with_the_same_completions():
    results = [result("good", "t1", True, 12), result("good", "t1", False, 5), result("also", "t1", False, 30)]
    plain = build_pairs(results, LINEAGE, PairRules(rejected_per_task=2))
    fewshot = Strategy.load("fewshot")
    both = build_pairs(results, LINEAGE, PairRules(rejected_per_task=2), prompt_strategies=[fewshot])
    assert len(plain) == 2 and len(both) == 4 and both[:2] == plain
    assert all(p.prompt == canonical_strategy().render("What is 2 + 2?").messages for p in both[:2])
    for canonical_pair, other in zip(both[:2], both[2:]):
        assert other.prompt == fewshot.render("What is 2 + 2?").messages != canonical_pair.prompt
        assert other.prompt_hash == fewshot.content_hash() != canonical_pair.prompt_hash
        assert (other.chosen, other.rejected, other.kind) == (canonical_pair.chosen, canonical_pair.rejected,
                                                              canonical_pair.kind)
    # a strategy whose prompt is the canonical one adds nothing
    assert build_pairs(results, LINEAGE, PairRules(rejected_per_task=2),
                       prompt_strategies=[canonical_strategy(64)]) == plain
