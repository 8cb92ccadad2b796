"""The evolution loop with a scripted backend (fast) and one short real run on the
bundled model (slow)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import re

import pytest

from evo.engine.run import run_evolution
from fakes import ArithmeticOracle, config, read_jsonl

from fitness.backends.base import Completion
from genomes.chat_format import format_completion


def test_selection_finds_the_signal_and_writes_the_run_dir(tmp_path):
    backend = ArithmeticOracle()
    result = run_evolution(config(tmp_path, run={"generations": 4}), backend=backend, show_progress=False)
    run_dir = tmp_path / "t"
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    lineage = read_jsonl(run_dir / "lineage.jsonl")
    assert [m["generation"] for m in metrics] == [0, 1, 2, 3, 4]
    assert result.hall_of_fame[0]["accuracy"] == 1.0
    assert result.best.decoding.max_new_tokens >= 96
    assert metrics[-1]["heldout_accuracy"] == 1.0
    assert metrics[-1]["mean_accuracy"] >= metrics[0]["mean_accuracy"]
    assert json.loads((run_dir / "config.json").read_text())["population"]["size"] == 4
    assert (run_dir / "journal.sqlite").exists() and (run_dir / "best.json").exists()
    ids = {row["id"] for row in lineage}
    for row in lineage:  # every child names parents that exist, and how it was made
        assert row["op"] in {"seed", "pair_up", "constrain", "mut_prompt", "mut_chain", "mut_decoding", "cx_strategy"}
        assert all(p in ids for p in row["parents"])
        assert (row["op"] == "seed") == (row["parents"] == [])


def test_only_new_individuals_are_evaluated(tmp_path):
    backend = ArithmeticOracle()
    run_evolution(config(tmp_path, run={"generations": 5}), backend=backend, show_progress=False)
    metrics = read_jsonl(tmp_path / "t" / "metrics.jsonl")
    lineage = read_jsonl(tmp_path / "t" / "lineage.jsonl")
    assert metrics[0]["evaluated"] == 4
    frontiers = [{"chain_sum": 0}] + [m["frontier"] for m in metrics]
    steady = 0
    for gen in range(1, len(metrics)):
        if frontiers[gen] == frontiers[gen - 1]:  # same batch: survivors keep their fitness
            assert metrics[gen]["evaluated"] <= 4
            steady += 1
        else:  # the frontier moved, the batch changed: survivors (and the hall of fame) are scored again
            assert metrics[gen]["evaluated"] <= 8 + 5
    assert steady >= 1
    assert sum(m["evaluated"] for m in metrics) == len(lineage)
    # no request is ever generated twice: repeats (held-out re-scoring, duplicate
    # genomes) come from the journal
    sent = [(json.dumps(r.messages), r.sampling) for r in backend.requests]
    assert len(set(sent)) == len(sent)
    assert metrics[-1]["reused"] > 0
    assert metrics[-1]["rollouts"] <= len(sent)


@contextlib.contextmanager
def bare_loop(cfg, backend):
    """The engine's loop outside run_evolution (run dir created, journal open), with
    its initial population unscored: for driving evaluate() generation by generation."""
    from evo.engine.backend import Counters, TimedBackend
    from evo.engine.loop import Loop
    from evo.rundir.files import RunDir
    from fitness.journal import Journal
    from genomes.strategy import Strategy

    run_dir = RunDir(cfg.run_dir)
    run_dir.create(cfg.to_dict())
    counters = Counters()
    loop = Loop(cfg, TimedBackend(backend, counters), run_dir, counters, False)
    with Journal(run_dir.journal_path) as journal:
        loop.journal = journal
        yield loop, loop.initial_population([Strategy.load(s) for s in cfg.population.seeds])


def test_hall_of_fame_members_are_rescored_when_the_batch_changes(tmp_path):
    """A hall member that left the population must not keep a score from an older
    (easier) batch: it would outrank every newcomer for good."""
    cfg = config(tmp_path, run={"generations": 1})
    with bare_loop(cfg, ArithmeticOracle()) as (loop, population):
        loop.evaluate(population, 0)
        outsider = population.pop()  # left the population, still in the hall
        assert any(h is outsider for h in loop.hall)
        outsider.fitness.values = (99.0,)  # as if scored on an easier batch
        outsider.l_total = -99.0
        loop.frontier_moved = True
        loop.evaluate(population, 1)
        assert outsider.fitness.values != (99.0,) and outsider.l_total != -99.0  # scored again
        assert loop.hall[0].l_total > -99.0
    rows = read_jsonl(cfg.run_dir / "lineage.jsonl")
    assert sum(row["id"] == outsider.id for row in rows) == 2  # its second score is in the lineage


def test_pareto_front_is_rescored_when_the_batch_changes(tmp_path):
    """Multi-objective mode: the Pareto front holds copies; after a batch change none
    of them may keep a score from the older batch."""
    with bare_loop(config(tmp_path, population={"mode": "multi"}), ArithmeticOracle()) as (loop, population):
        loop.evaluate(population, 0)
        stale = loop.pareto[0]
        stale.fitness.values = (2.0, 0.0)  # impossible now: as if from an older, easier batch
        population = [ind for ind in population if ind.strategy.content_hash() != stale.strategy.content_hash()]
        loop.frontier_moved = True
        loop.evaluate(population, 1)
        assert len(loop.pareto) > 0
        assert all(ind.fitness.values != (2.0, 0.0) for ind in loop.pareto)  # scored again or dropped


class ParityOracle(ArithmeticOracle):
    """Like ArithmeticOracle, but the right answer only when it is even: how well a
    strategy does then depends on which tasks a batch holds, as with a real model."""

    def generate(self, requests, progress=None):
        out = super().generate(requests, progress)
        for i, request in enumerate(requests):
            match = re.search(r"problem: (.*) =", request.messages[-1]["content"])
            if match and eval(match.group(1)) % 2:
                out[i] = Completion(format_completion([match.group(1)], "12345"), 10, 20, "stop")
        return out


def _sum_tasks(path, n=60):
    rng = random.Random(3)
    with open(path, "w") as f:
        for _ in range(n):
            a, b = rng.randrange(100), rng.randrange(100)
            f.write(json.dumps({"question": f"Solve this problem: {a} + {b} =", "answer": str(a + b)}) + "\n")
    return str(path)


def test_rotating_batches_retest_survivors_and_accumulate_evidence(tmp_path):
    """rotate_every = 1: each generation draws a fresh batch; survivors are scored on
    it too, and their fitness covers all their batches (older ones from the journal)."""
    from fitness.curriculum import estimate_ability
    from fitness.loss import LossWeights, individual_loss

    family = _sum_tasks(tmp_path / "sums.jsonl")  # one level: the frontier cannot move
    cfg = config(tmp_path, tasks={"families": [family], "per_family": 4, "rotate_every": 1})
    backend = ParityOracle()
    with bare_loop(cfg, backend) as (loop, population):
        loop.evaluate(population, 0)
        before = {ind.id: ind.fitness.values for ind in population}
        first, sent = loop.training_batch(0), len(backend.requests)
        loop.evaluate(population, 1)
        second = loop.training_batch(1)
        assert {t.id for t in first} != {t.id for t in second}
        union = {t.id for t in first} | {t.id for t in second}
        # only the new batch was generated; the first came back from the journal
        assert len(backend.requests) - sent == len(population) * len(second)
        for ind in population:
            assert ind.scored_on == (0, 1)
            assert sorted(r.task_id for r in ind.results) == sorted(union)
            tasks = loop.evidence_tasks((0, 1))
            expected = -individual_loss(ind.results, tasks, estimate_ability(ind.results),
                                        LossWeights(), cfg.loss.reference_tokens)[0]
            assert ind.fitness.values == (pytest.approx(expected),)
        assert any(before[ind.id] != ind.fitness.values for ind in population)  # re-tested, not kept
        loop.evaluate(population, 1)  # same generation again: nothing new to score
        assert loop.counters.evaluated == 0


def test_rotation_off_keeps_one_batch(tmp_path):
    family = _sum_tasks(tmp_path / "sums.jsonl")
    result = run_evolution(config(tmp_path, tasks={"families": [family]}), backend=ParityOracle(), show_progress=False)
    assert len(result.training_batches) == 1
    assert all(m["evaluated"] <= 4 for m in result.metrics[1:])  # only the offspring are scored


def test_a_rotating_run_draws_a_batch_per_generation(tmp_path):
    family = _sum_tasks(tmp_path / "sums.jsonl")
    cfg = config(tmp_path, run={"generations": 4}, tasks={"families": [family], "rotate_every": 2})
    result = run_evolution(cfg, backend=ParityOracle(), show_progress=False)
    assert len(result.training_batches) == 3  # generations 0-1, 2-3, 4
    assert all(m["evaluated"] >= 4 for i, m in enumerate(result.metrics) if i % 2 == 0)


def _renamed(strategy):
    return dataclasses.replace(strategy, prompt=dataclasses.replace(strategy.prompt, role="A newcomer."))


@pytest.mark.parametrize("min_batches", [1, 2])
def test_a_lucky_newcomer_leads_the_hall_only_without_the_evidence_rule(tmp_path, min_batches):
    """hall_min_batches = 2: a newcomer with the best fitness on its one batch does not
    outrank a strategy re-tested on two; once it has two batches too, fitness decides.
    With 1 (the default) the one lucky batch is enough to lead."""
    family = _sum_tasks(tmp_path / "sums.jsonl")
    cfg = config(tmp_path, tasks={"families": [family], "rotate_every": 1}, population={"hall_min_batches": min_batches})
    with bare_loop(cfg, ParityOracle()) as (loop, population):
        loop.evaluate(population, 0)
        loop.evaluate(population, 1)
        proven = loop.hall[0]
        assert len(proven.scored_on) == 2
        newcomer = loop.new_individual(_renamed(population[0].strategy), (), "mut_prompt", 1)
        newcomer.scored_on, newcomer.l_total = (1,), proven.l_total - 1.0
        loop.update_hall([newcomer])
        assert loop.hall[0] is (newcomer if min_batches == 1 else proven) and newcomer in loop.hall
        newcomer.scored_on = (1, 2)
        loop.update_hall([newcomer])
        assert loop.hall[0] is newcomer


def test_a_run_with_the_evidence_rule_reports_a_retested_best(tmp_path):
    family = _sum_tasks(tmp_path / "sums.jsonl")
    cfg = config(tmp_path, run={"generations": 3}, tasks={"families": [family], "rotate_every": 1},
                 population={"hall_min_batches": 2})
    result = run_evolution(cfg, backend=ParityOracle(), show_progress=False)
    # one frontier level, so evidence never resets: from generation 1 on the best has been re-tested
    assert result.metrics[0]["best_batches"] == 1
    assert all(m["best_batches"] >= 2 for m in result.metrics[1:])
    best = json.loads((tmp_path / "t" / "best.json").read_text())["hall_of_fame"][0]
    assert best["hash"] == result.metrics[-1]["best_hash"] == result.best.content_hash()


@pytest.mark.parametrize("min_batches", [1, 2])
def test_the_frontier_holds_in_the_generations_the_final_hall_needs(tmp_path, min_batches):
    """A frontier move resets every fitness. With hall_min_batches = 2 (one batch a
    generation) the frontier may not move after generation 2 of 4, so the final hall
    is compared on two batches; with 1 it moves whenever the evidence says so (the
    last generation's move is recorded; a run extended later starts from it)."""
    cfg = config(tmp_path, run={"generations": 4}, tasks={"rotate_every": 1}, curriculum={"min_evidence": 1},
                 population={"hall_min_batches": min_batches})
    metrics = run_evolution(cfg, backend=ArithmeticOracle(), show_progress=False).metrics
    levels = [m["frontier"]["chain_sum"] for m in metrics]
    assert levels[0] < levels[1] < levels[2]  # the oracle is always right: up at every free update
    assert (levels[3] == levels[2]) == (min_batches == 2) and (levels[4] == levels[3]) == (min_batches == 2)
    assert (metrics[-1]["best_batches"] >= 2) == (min_batches == 2)


def test_same_seed_same_run(tmp_path):
    first = run_evolution(config(tmp_path / "a"), backend=ArithmeticOracle(), show_progress=False)
    second = run_evolution(config(tmp_path / "b"), backend=ArithmeticOracle(), show_progress=False)
    strip = lambda rows: [{k: v for k, v in m.items() if k not in ("wall_s", "backend_s")} for m in rows]
    assert strip(first.metrics) == strip(second.metrics)
    assert read_jsonl(tmp_path / "a" / "t" / "lineage.jsonl") == read_jsonl(tmp_path / "b" / "t" / "lineage.jsonl")


def test_garbage_model_gives_a_valid_run_with_zero_scores(tmp_path):
    result = run_evolution(config(tmp_path), backend=ArithmeticOracle(garbage=True), show_progress=False)
    assert all(m["best_accuracy"] == 0 and m["heldout_accuracy"] == 0 for m in result.metrics)
    assert len(result.metrics) == 4


def test_multi_objective_mode_keeps_a_pareto_front(tmp_path):
    run_evolution(config(tmp_path, population={"mode": "multi"}), backend=ArithmeticOracle(), show_progress=False)
    best = json.loads((tmp_path / "t" / "best.json").read_text())
    assert best["pareto_front"] and best["hall_of_fame"]
    assert all(len(row["fitness"]) == 2 for row in best["pareto_front"])


@pytest.mark.slow
def test_short_real_evolution_on_the_bundled_model(tmp_path):
    cfg = config(tmp_path, run={"generations": 1}, population={"size": 2, "offspring": 2},
                 tasks={"per_family": 2, "heldout_per_family": 2})
    result = run_evolution(cfg, show_progress=False)
    metrics = read_jsonl(tmp_path / "t" / "metrics.jsonl")
    assert len(metrics) == 2 and metrics[-1]["rollouts"] > 0 and metrics[-1]["tokens"] > 0
    assert 0.0 <= metrics[-1]["heldout_accuracy"] <= 1.0
    assert result.hall_of_fame[0]["l_total"] == -result.hall_of_fame[0]["fitness"][0]


def test_an_existing_run_is_not_overwritten_by_accident(tmp_path):
    from genomes.errors import InputError

    cfg = config(tmp_path, run={"generations": 1})
    run_evolution(cfg, backend=ArithmeticOracle(), show_progress=False)
    with pytest.raises(InputError, match="already holds a run"):
        run_evolution(cfg, backend=ArithmeticOracle(), show_progress=False)
    backend = ArithmeticOracle()
    run_evolution(cfg, backend=backend, show_progress=False, overwrite=True)
    assert backend.requests  # a fresh journal: everything generated again


def test_llm_rewrite_mutation_goes_through_the_backend(tmp_path):
    backend = ArithmeticOracle()
    cfg = config(tmp_path, run={"generations": 2}, population={"llm_rewrite_prob": 1.0, "crossover_prob": 0.0,
                                                               "mutation_prob": 1.0})
    run_evolution(cfg, backend=backend, show_progress=False)
    rewritten = [row for row in read_jsonl(tmp_path / "t" / "lineage.jsonl") if row["op"] == "mut_llm_rewrite"]
    assert len(rewritten) == 8  # every child of generations 1 and 2
    for row in rewritten:
        prompt = row["strategy"]["prompt"]
        assert "Check every digit twice." in (prompt["role"], prompt["approach"], prompt["cautions"], prompt["answer_format"])
    asked = [r for r in backend.requests if "instruction" in r.messages[-1]["content"]]
    assert len(asked) == 8 and all(r.sampling.temperature > 0 for r in asked)


def test_on_generation_sees_every_record_and_can_stop_the_run(tmp_path):
    seen = []
    run_evolution(config(tmp_path / "a"), backend=ArithmeticOracle(), show_progress=False, on_generation=seen.append)
    assert [r["generation"] for r in seen] == [0, 1, 2, 3]

    class Stop(Exception):
        pass

    def stop_at_one(record):
        if record["generation"] == 1:
            raise Stop

    with pytest.raises(Stop):
        run_evolution(config(tmp_path / "b"), backend=ArithmeticOracle(), show_progress=False, on_generation=stop_at_one)
    from evo.rundir import checkpoint
    assert checkpoint.load_latest(tmp_path / "b" / "t").generation == 1  # stopped after a complete checkpoint


class AdapterOracle(ArithmeticOracle):
    """Answers correctly only through a LoRA adapter, so selection must find genes
    that are switched on and carry weights."""

    def __init__(self):
        super().__init__()
        self.materialised = []

    def materialise_lora(self, gene):
        self.materialised.append(gene.weights_hash())
        return f"/adapters/{gene.weights_hash()}"

    def generate(self, requests, progress=None):
        base = super().generate(requests, progress)
        return [c if r.adapter else type(c)("no adapter, no answer", 1, 1, "stop") for c, r in zip(base, requests)]


def test_selection_acts_on_lora_genes(tmp_path):
    backend = AdapterOracle()
    cfg = config(tmp_path, run={"generations": 6}, population={
        "operators": ["mut_prompt", "mut_chain", "mut_decoding", "cx_strategy", "mut_lora"]})
    result = run_evolution(cfg, backend=backend, show_progress=False)
    lineage = read_jsonl(tmp_path / "t" / "lineage.jsonl")
    assert any(row["op"] == "mut_lora" for row in lineage)
    assert backend.materialised  # active genes were turned into adapters through the backend
    best = result.best
    assert best.lora is not None and best.lora.is_active and best.lora.has_weights
    assert result.hall_of_fame[0]["accuracy"] > 0
    seeds = [row for row in lineage if row["op"] == "seed"]
    assert all(row["accuracy"] == 0 for row in seeds)  # the seeds have no adapter: the gain came from LoRA genes


@pytest.mark.slow
def test_short_real_lora_evolution_changes_outputs(tmp_path):
    from fitness.journal import Journal

    cfg = config(tmp_path, run={"generations": 1}, population={
        "size": 2, "offspring": 2, "crossover_prob": 0.0, "mutation_prob": 1.0, "operators": ["mut_lora"],
        "lora_sigmas": [0.03]}, tasks={"per_family": 2, "heldout_per_family": 2})
    run_evolution(cfg, show_progress=False)
    lineage = read_jsonl(tmp_path / "t" / "lineage.jsonl")
    children = [row for row in lineage if row["op"] == "mut_lora"]
    assert len(children) == 2 and all(row["strategy"]["lora"]["enabled"] for row in children)
    materialised = [p for p in (tmp_path / "t" / "adapters").iterdir() if (p / "adapter_model.safetensors").is_file()]
    assert materialised  # served through PEFT from the run's adapter store
    by_id = {row["id"]: row for row in lineage}
    with Journal(tmp_path / "t" / "journal.sqlite") as journal:
        texts = {}
        for _, r in journal.all_results():
            texts[(r.strategy_hash, r.task_id)] = r.completion
    changed = 0
    for child in children:
        parent = by_id[child["parents"][0]]
        shared = [t for (h, t) in texts if h == child["hash"] and (parent["hash"], t) in texts]
        assert shared
        changed += sum(texts[(child["hash"], t)] != texts[(parent["hash"], t)] for t in shared)
    assert changed > 0  # the adapters act on the real model's outputs


def test_the_hall_keeps_the_retested_copy_of_a_genome(tmp_path):
    """A newer copy of a strategy (crossover often gives a parent back) scored on one
    batch must not replace, in the hall, the copy re-tested on two."""
    family = _sum_tasks(tmp_path / "sums.jsonl")
    cfg = config(tmp_path, tasks={"families": [family], "rotate_every": 1}, population={"hall_min_batches": 2})
    with bare_loop(cfg, ParityOracle()) as (loop, population):
        loop.evaluate(population, 0)
        loop.evaluate(population, 1)
        proven = loop.hall[0]
        copy = loop.new_individual(proven.strategy, (proven.id,), "cx_strategy", 1)
        loop.evaluate([copy], 1)
        assert copy.scored_on == (1,)
        loop.update_hall([proven, copy])  # the order evaluate() met them in a real run
        assert loop.hall[0] is proven
        assert [ind.strategy.content_hash() for ind in loop.hall].count(proven.strategy.content_hash()) == 1


def test_selection_keeps_one_copy_per_genome(tmp_path):
    with bare_loop(config(tmp_path), ArithmeticOracle()) as (loop, population):
        loop.evaluate(population, 0)
        copies = [loop.copy_individual(ind) for ind in population]
        chosen = loop.select(copies + population, 4)
        assert len({ind.strategy.content_hash() for ind in chosen}) == 4
        # too few distinct genomes: copies fill the rest instead of leaving it short
        assert len(loop.select(copies[:2] + population[:2], 3)) == 3


def test_variation_draws_again_rather_than_repeat_a_genome(tmp_path):
    """Crossover of a strategy with its own copy gives it back: with crossover only and
    half the population copies, the old loop returned known genomes; now every child
    is a genome neither the population nor an earlier child has."""
    cfg = config(tmp_path, population={"crossover_prob": 1.0, "mutation_prob": 0.0, "offspring": 6})
    with bare_loop(cfg, ArithmeticOracle()) as (loop, population):
        loop.evaluate(population, 0)
        population = population[:2] + [loop.copy_individual(ind) for ind in population[:2]]
        known = {ind.strategy.content_hash() for ind in population}
        offspring = loop.vary(population, 1)
        hashes = [ind.strategy.content_hash() for ind in offspring]
        assert len(offspring) == 6 and len(set(hashes)) == 6 and not known & set(hashes)
        assert all(ind.op == "cx_strategy" for ind in offspring)


def test_mutation_draws_exemplars_that_fit_the_runs_tasks(tmp_path):
    """A chain-sum run adds and swaps in only chain-sum exemplars (the library's two
    and labeled training tasks): the library's syllogisms or letter counting could
    only cost prompt tokens there."""
    from genomes.fragments import EXEMPLARS

    cfg = config(tmp_path, population={"seeds": ["fewshot"], "mutation_prob": 1.0, "crossover_prob": 0.0,
                                       "operators": ["mut_prompt"]})
    with bare_loop(cfg, ArithmeticOracle()) as (loop, population):
        assert [EXEMPLARS.index(e) for e in loop.exemplars.library] == [0, 1]  # the two chain-sum ones
        assert loop.exemplars.labeled and all(e.source.startswith("labeled:train:chain_sum/")
                                              for e in loop.exemplars.labeled)
        own = set(population[0].strategy.prompt.exemplars)
        brought = set()
        for _ in range(60):
            child, op = loop.mutate(population[0].strategy)
            brought |= set(child.prompt.exemplars) - own
        assert brought <= set(EXEMPLARS[:2]) | set(loop.exemplars.labeled)
        assert brought & set(EXEMPLARS[:2]) and brought & set(loop.exemplars.labeled)


def test_without_llguidance_the_run_goes_on_unconstrained(tmp_path, monkeypatch, capsys):
    from evo.engine import loop
    from fitness.backends import grammar_rows

    monkeypatch.setattr(grammar_rows, "available", lambda: False)
    cfg = config(tmp_path, run={"generations": 3},
                 population={"operators": ["mut_decoding"], "mutation_prob": 1.0, "crossover_prob": 0.0})
    modes = loop.usable_constrain_modes(cfg, loop.TaskPool(cfg), show_progress=True)
    assert modes == ("off",)
    err = capsys.readouterr().err.strip()
    assert "llguidance" in err and "\n" not in err  # one line
    run_evolution(cfg, backend=ArithmeticOracle(), show_progress=False)
    strategies = [row["strategy"] for row in read_jsonl(tmp_path / "t" / "lineage.jsonl")]
    assert all("constrain" not in s["decoding"] for s in strategies)


def test_mut_decoding_gives_strategies_constrained_decoding(tmp_path):
    pytest.importorskip("llguidance")
    cfg = config(tmp_path, run={"generations": 3},
                 population={"operators": ["mut_decoding"], "mutation_prob": 1.0, "crossover_prob": 0.0})
    run_evolution(cfg, backend=ArithmeticOracle(), show_progress=False)
    strategies = [row["strategy"] for row in read_jsonl(tmp_path / "t" / "lineage.jsonl")]
    assert len({s["decoding"].get("constrain", "off") for s in strategies}) >= 2


def test_the_initial_population_has_a_constrained_twin_of_the_paired_seed(tmp_path):
    pytest.importorskip("llguidance")
    backend = ArithmeticOracle()
    run_evolution(config(tmp_path, run={"generations": 1}), backend=backend, show_progress=False)
    lineage = {row["id"]: row for row in read_jsonl(tmp_path / "t" / "lineage.jsonl")}
    twins = [row for row in lineage.values() if row["op"] == "constrain"]
    assert len(twins) == 1
    twin, parent = twins[0], lineage[twins[0]["parents"][0]]
    assert parent["op"] == "pair_up" and twin["strategy"]["decoding"]["constrain"] == "answer"
    assert twin["strategy"]["prompt"] == parent["strategy"]["prompt"]
    assert any(r.grammar for r in backend.requests) and any(r.grammar is None for r in backend.requests)
    # "off" alone: no twin, and no request carries a grammar
    backend = ArithmeticOracle()
    run_evolution(config(tmp_path / "off", run={"generations": 1}, population={"constrain_modes": ["off"]}),
                  backend=backend, show_progress=False)
    assert not any(r.grammar for r in backend.requests)
