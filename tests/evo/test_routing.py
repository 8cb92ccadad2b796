"""Routes (evo.engine.routing, genomes.routes): a strategy per family, chosen on
training evidence, confirmed on validation, exported and evaluated; and a budget
that counts validation."""

from __future__ import annotations

import json
import re

import pytest

from evo.engine.routing import choose_specialists, gather_evidence, routes_of_run, shrunk_accuracy
from evo.engine.run import run_evolution
from evo.rundir.export import export_top
from fakes import config, read_jsonl
from fitness.backends.base import Completion
from fitness.evaluate import evaluate_answerer
from fitness.journal import Journal
from genomes.chat_format import format_completion
from genomes.errors import InputError
from genomes.routes import Routes, load_answerer, route_jobs
from genomes.strategy import Strategy


class FamiliesDisagree:
    """chain_sum is answered right only under the ``direct`` seed's approach ("as few
    steps"), basic_arithmetic only under any other: no single strategy answers both,
    a strategy per family answers all."""

    def __init__(self):
        self.requests = []

    def generate(self, requests, progress=None):
        self.requests += requests
        out = []
        for r in requests:
            question = r.messages[-1]["content"]
            chain = re.search(r"problem: (.*) =", question)
            arith = re.match(r"Calculate (.*)\.$", question)
            direct = "as few steps" in r.messages[0]["content"]
            if chain:
                answer = str(eval(chain.group(1))) if direct else "12345"
            elif arith:
                answer = "12345" if direct else f"{eval(arith.group(1)):g}"
            else:
                answer = "?"
            out.append(Completion(format_completion(["work"], answer, "done"), 10, 20, "stop"))
        if progress:
            progress(len(requests))
        return out

    def count_tokens(self, text):
        return len(text.split())


FAMILIES = {"families": ["chain_sum", "basic_arithmetic"], "per_family": 4, "rotate_every": 1,
            "heldout_per_family": 6}


def routed_run(tmp_path, **sections):
    backend = FamiliesDisagree()
    sections = {"routing": {"min_tasks": 4}, **sections}
    cfg = config(tmp_path, run={"generations": 4}, tasks=FAMILIES,
                 population={"size": 4, "offspring": 6, "seeds": ["direct", "stepwise", "fewshot"]}, **sections)
    return cfg, backend, run_evolution(cfg, backend=backend, show_progress=False)


# ---- the choice, pure --------------------------------------------------------------
def test_evidence_counts_training_rows_only_and_keeps_first_appearance_order():
    rows = [("a", "t1", "f", 1.0), ("b", "t1", "f", 0.0), ("a", "v1", "f", 1.0), ("a", "t2", "g", 0.5)]
    evidence = gather_evidence(rows, excluded_tasks={"v1"})
    assert evidence == {"f": {"a": [1, 1], "b": [0, 1]}, "g": {"a": [0, 1]}}  # half credit is not correct
    assert list(evidence["f"]) == ["a", "b"]


def test_a_few_lucky_tasks_do_not_beat_steady_evidence():
    # 3/3 right against 14/16: shrunk towards the family mean, the longer record wins
    evidence = {"f": {"lucky": [3, 3], "steady": [14, 16], "poor": [2, 16]}}
    chosen = choose_specialists(evidence, min_tasks=3, prior_tasks=4)
    assert chosen["f"][0] == "steady"
    assert shrunk_accuracy(3, 3, 19 / 35, 4) < shrunk_accuracy(14, 16, 19 / 35, 4)
    # without shrinkage the lucky one would win; below min_tasks nobody is a candidate
    assert choose_specialists(evidence, min_tasks=3, prior_tasks=0)["f"][0] == "lucky"
    assert choose_specialists(evidence, min_tasks=17, prior_tasks=4) == {}


def test_equal_evidence_goes_to_the_earliest():
    chosen = choose_specialists({"f": {"x": [2, 8], "y": [2, 8]}}, min_tasks=8, prior_tasks=4)
    assert chosen["f"] == ("x", 2, 8)


# ---- in a run ---------------------------------------------------------------------
def test_a_run_routes_each_family_to_the_strategy_that_answers_it(tmp_path):
    cfg, backend, _ = routed_run(tmp_path)
    last = read_jsonl(tmp_path / "t" / "metrics.jsonl")[-1]
    routes = last["routes"]
    assert set(routes) == {"chain_sum", "basic_arithmetic"}
    taken = [f for f, row in routes.items() if row["taken"]]
    assert len(taken) == 1, routes  # the default answers one family, a route the other
    row = routes[taken[0]]
    assert row["validation"] == 1.0 and row["default_validation"] == 0.0
    assert row["train"][1] >= 4

    answerer = routes_of_run(tmp_path / "t")
    assert isinstance(answerer, Routes) and set(answerer.routes) == set(taken)
    from evo.engine.task_pool import TaskPool

    test = TaskPool(cfg).test(6, fewer_ok=True)
    routed = evaluate_answerer(answerer, test, FamiliesDisagree())
    single = evaluate_answerer(answerer.default, test, FamiliesDisagree())
    assert [r.task_id for r in routed] == [t.id for t in test]  # back in task order
    assert sum(r.correct for r in routed) == len(test) > sum(r.correct for r in single)


def test_routes_read_no_test_task(tmp_path):
    cfg, backend, _ = routed_run(tmp_path)
    from evo.engine.task_pool import TaskPool

    pool = TaskPool(cfg)
    test_questions = {t.question for t in pool.test(50, fewer_ok=True)}
    validation = {t.question for t in pool.validation()}
    asked = {r.messages[-1]["content"] for r in backend.requests}
    assert not asked & test_questions and validation <= asked
    with Journal(tmp_path / "t" / "journal.sqlite") as journal:  # evidence: what the journal holds
        assert {f for _, _, f, _ in journal.scores(cfg.run.seed)} == {"chain_sum", "basic_arithmetic"}


def test_routing_is_off_for_one_family_and_when_disabled(tmp_path):
    cfg = config(tmp_path / "one", run={"generations": 2})
    from fakes import ArithmeticOracle

    run_evolution(cfg, backend=ArithmeticOracle(), show_progress=False)
    assert all(m["routes"] == {} for m in read_jsonl(tmp_path / "one" / "t" / "metrics.jsonl"))
    routed_run(tmp_path / "off", routing={"enabled": False, "min_tasks": 4})
    assert all(m["routes"] == {} for m in read_jsonl(tmp_path / "off" / "t" / "metrics.jsonl"))
    assert routes_of_run(tmp_path / "off" / "t").routes == {}


def test_export_writes_routes_that_eval_reads(tmp_path):
    routed_run(tmp_path)
    export_top(tmp_path / "t", 1, tmp_path / "export")
    path = tmp_path / "export" / "routes.json"
    answerer = load_answerer(path)
    assert isinstance(answerer, Routes) and answerer.routes
    data = json.loads(path.read_text())
    assert data["kind"] == "routes" and set(data["evidence"]) == set(data["routes"])
    # the default is the export's rank 1
    rank1 = next((tmp_path / "export").glob("rank-1-*"))
    assert answerer.default.content_hash() == Strategy.load(rank1 / "strategy.json").content_hash()


@pytest.mark.parametrize("keep", [False, True])
def test_a_resumed_routed_run_equals_an_uninterrupted_one(tmp_path, keep):
    from evo.engine.run import resume_evolution

    routing = {"min_tasks": 4, "keep_specialists": keep}
    routed_run(tmp_path / "whole", routing=routing)
    cfg = config(tmp_path / "cut", run={"generations": 2}, tasks=FAMILIES,
                 population={"size": 4, "offspring": 6, "seeds": ["direct", "stepwise", "fewshot"]}, routing=routing)
    run_evolution(cfg, backend=FamiliesDisagree(), show_progress=False)
    resume_evolution(tmp_path / "cut" / "t", generations=4, backend=FamiliesDisagree(), show_progress=False)
    whole = read_jsonl(tmp_path / "whole" / "t" / "metrics.jsonl")
    cut = read_jsonl(tmp_path / "cut" / "t" / "metrics.jsonl")
    assert [m["routes"] for m in whole] == [m["routes"] for m in cut]
    assert [m["best_hash"] for m in whole] == [m["best_hash"] for m in cut]
    assert read_jsonl(tmp_path / "whole" / "t" / "lineage.jsonl") == read_jsonl(tmp_path / "cut" / "t" / "lineage.jsonl")


# ---- the budget counts validation ----------------------------------------------------
def test_a_budget_that_counts_validation_covers_every_rollout(tmp_path):
    limit = 150
    cfg, backend, _ = routed_run(tmp_path, budget={"rollouts": limit, "counts_validation": True})
    last = read_jsonl(tmp_path / "t" / "metrics.jsonl")[-1]
    assert last["rollouts"] == len(backend.requests) <= limit
    assert last["heldout_rollouts"] > 0  # validation still ran, inside the budget


# ---- the file ----------------------------------------------------------------------
def test_routes_file_errors_name_the_field(tmp_path):
    good = Routes(Strategy.load("direct"), {"chain_sum": Strategy.load("stepwise")}).encode()
    path = tmp_path / "r.json"
    for broken, field in [({**good, "kind": "strategy"}, "kind"), ({k: v for k, v in good.items() if k != "default"},
                                                                     "default"),
                          ({**good, "routes": {"chain_sum": {"decoding": {"votes": 0}}}}, "routes.chain_sum"),
                          ({**good, "extra": 1}, "extra")]:
        path.write_text(json.dumps(broken))
        if broken.get("kind") != "routes":
            with pytest.raises(InputError):  # a strategy file with an unknown field
                load_answerer(path)
            continue
        with pytest.raises(InputError, match=field):
            load_answerer(path)
    assert load_answerer("direct").name == Strategy.load("direct").name  # seeds still load


def test_route_jobs_group_by_strategy():
    a, b = Strategy.load("direct"), Strategy.load("stepwise")

    class T:
        def __init__(self, family):
            self.family = family

    tasks = [T("x"), T("y"), T("x"), T("z")]
    jobs, positions = route_jobs(Routes(a, {"y": b}), tasks)
    assert [s.content_hash() for s, _ in jobs] == [a.content_hash(), b.content_hash()]
    assert positions == [[0, 2, 3], [1]]


def test_the_run_summary_names_each_route(tmp_path):
    from evo.cli.run import route_lines

    routed_run(tmp_path)
    last = read_jsonl(tmp_path / "t" / "metrics.jsonl")[-1]
    lines = route_lines(last["routes"])
    taken = [f for f, row in last["routes"].items() if row["taken"]]
    assert len(lines) == len(taken) == 1
    assert lines[0].startswith(f"route {taken[0]}: strategy {last['routes'][taken[0]]['hash']}, validation 100.0%")


def test_the_report_shows_the_routes(tmp_path):
    from evo.report.html import write_report

    routed_run(tmp_path)
    page = write_report(tmp_path / "t").read_text()
    assert "Routes: a strategy per family" in page and "<td>routed</td>" in page


# ---- selection keeps specialists ---------------------------------------------------------
def test_selection_keeps_each_familys_best_when_asked():
    from types import SimpleNamespace

    from evo.engine.selection import Selection

    def ind(ident, fitness, right):  # right: family -> correct out of 4
        results = [SimpleNamespace(task_id=f"{f}{i}", family=f, score=float(i < right[f]))
                   for f in ("a", "b") for i in range(4)]
        return SimpleNamespace(id=ident, fitness=SimpleNamespace(values=(fitness,)), results=results,
                               strategy=SimpleNamespace(content_hash=lambda ident=ident: f"h{ident}"))

    generalists = [ind(i, 0.5 - i / 100, {"a": 3, "b": 1}) for i in range(4)]
    specialist = ind(9, 0.1, {"a": 0, "b": 4})  # worst overall, best on b
    for keep, expected in ((False, False), (True, True)):
        sel = Selection()
        sel.config = SimpleNamespace(routing=SimpleNamespace(keep_specialists=keep, prior_tasks=4.0))
        sel.mode, sel.pool = "scalar", SimpleNamespace(specs={"a": 0, "b": 0})
        chosen = sel.select(generalists + [specialist], 4)
        assert len(chosen) == 4 and (specialist in chosen) is expected
        assert [c.id for c in chosen] == sorted([c.id for c in chosen], key=lambda i: (i == 9, i))  # by fitness


def test_a_route_needs_a_significant_sign_test_and_the_best_validated_is_kept():
    from evo.engine.routing import route_row, sign_test_p

    assert sign_test_p(4, 0) == 1 / 16 and sign_test_p(3, 1) == 5 / 16 and sign_test_p(0, 0) == 1.0

    def option(name, validation, wins, losses):
        return {"hash": name, "train": [4, 8], "validation": validation, "wins": wins, "losses": losses}

    # 3 of 8 against the default's 1 of 8 (wins 3, losses 1): not evidence enough
    noisy = route_row([option("s1", 0.375, 3, 1)], "d", 1, 0.1, 0.125)
    assert not noisy["taken"] and "p = 0.31" in noisy["why"]
    clear = route_row([option("s1", 0.5, 4, 0)], "d", 1, 0.1, 0.0)
    assert clear["taken"] and clear["p"] == 0.0625
    # the route of the generation before comes first and wins a tie
    kept = route_row([option("s1", 0.5, 4, 0), option("s2", 0.5, 4, 0)], "d", 2, 0.1, 0.0)
    assert kept["hash"] == "s1" and kept["tried"] == 2
    better = route_row([option("s1", 0.5, 4, 0), option("s2", 0.75, 6, 0)], "d", 2, 0.1, 0.0)
    assert better["hash"] == "s2" and better["taken"]
    itself = route_row([option("d", 0.5, 0, 0)], "d", 1, 0.1, 0.5)
    assert not itself["taken"] and itself["why"] == "the default"
    nothing = route_row([], "d", 0, 0.1, 0.5)
    assert not nothing["taken"] and nothing["validation"] is None


def test_compare_counts_wins_and_losses_on_the_same_tasks():
    from types import SimpleNamespace

    from evo.engine.routing import compare

    results = [SimpleNamespace(task_id=t, correct=c) for t, c in [("a", True), ("b", True), ("c", False)]]
    row = compare("s", [1, 8], results, {"a": True, "b": False, "c": True})
    assert (row["wins"], row["losses"], row["validation"]) == (1, 1, 2 / 3)
    assert compare("s", [1, 8], [], {}) is None


def test_jobs_for_all_score_every_answerer_in_one_list():
    from genomes.routes import jobs_for_all

    a, b = Strategy.load("direct"), Strategy.load("stepwise")

    class T:
        def __init__(self, family, ident):
            self.family, self.id = family, ident

    tasks = [T("x", 0), T("y", 1)]
    jobs, per_answerer = jobs_for_all({"plain": a, "routed": Routes(a, {"y": b})}, tasks)
    assert len(jobs) == 3
    fake = [[(s.name, t.id) for t in group] for s, group in jobs]
    assert per_answerer(fake) == {"plain": [("direct", 0), ("direct", 1)], "routed": [("direct", 0), ("stepwise", 1)]}
