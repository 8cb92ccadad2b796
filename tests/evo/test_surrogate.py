"""The surrogate of accuracy over gene values (evo.engine.surrogate) and proposals:
evidence pooled over strategies steers children towards values that scored, K = 1
is plain variation, and a run with proposals resumes exactly."""

from __future__ import annotations

import dataclasses
import json
import random
import types

import pytest
from fakes import ArithmeticOracle, config
from test_resume import final_state

from evo.config.sections import RunConfig
from evo.engine.run import resume_evolution, run_evolution
from evo.engine.surrogate import Surrogate, strategy_features
from evo.engine.variation import Variation
from genomes.errors import InputError
from genomes.fragments import APPROACHES, ROLES
from genomes.strategy import Strategy

BASE = Strategy.load("direct")


def variant(approach: str, role: str = ROLES[0], max_new_tokens: int = 128) -> Strategy:
    return dataclasses.replace(BASE, prompt=dataclasses.replace(BASE.prompt, approach=approach, role=role),
                               decoding=dataclasses.replace(BASE.decoding, max_new_tokens=max_new_tokens))


def evidence(good: str) -> Surrogate:
    """Strategies with the ``good`` approach right 10 of 12 times, the others 1 of 12,
    over several roles so the approach, not the role, explains the scores."""
    surrogate = Surrogate()
    for i, approach in enumerate(APPROACHES[:4]):
        for role in ROLES[:3]:
            accuracy = 10 / 12 if approach == good else 1 / 12
            surrogate.observe(variant(approach, role), [f"batch{i % 2}"], accuracy, 12)
    return surrogate


def test_features_name_gene_values_not_the_display_name():
    a, b = variant(APPROACHES[0]), variant(APPROACHES[1])
    assert strategy_features(a) != strategy_features(b)
    assert strategy_features(a) == strategy_features(dataclasses.replace(a, name="renamed"))
    assert f"approach={APPROACHES[0]}" in strategy_features(a)
    assert "max_new_tokens=128" in strategy_features(a)
    adapter = {"adapter_dir": "/adapters/x"}
    with_a, with_b = (dataclasses.replace(s, lora=adapter) for s in (a, b))
    lora_of = [{f for f in strategy_features(s) if f.startswith("lora=")} for s in (with_a, with_b)]
    assert lora_of[0] and lora_of[0] == lora_of[1]  # one adapter, one value, under any prompt


def test_a_sample_ranks_the_value_with_good_evidence_first():
    good = APPROACHES[2]
    surrogate = evidence(good)
    rng = random.Random(0)
    wins = 0
    for _ in range(50):
        score = surrogate.sampler(rng)
        wins += score(variant(good, ROLES[4])) > max(score(variant(a, ROLES[4])) for a in APPROACHES[:4] if a != good)
    assert wins >= 45  # Thompson samples still explore, rarely


def test_an_unseen_value_gets_one_prior_draw_per_sample():
    score = evidence(APPROACHES[0]).sampler(random.Random(1))
    unseen = variant(APPROACHES[8])
    assert score(unseen) == score(unseen)


def test_observe_keeps_the_evidence_with_the_most_tasks():
    surrogate = Surrogate()
    s = variant(APPROACHES[0])
    surrogate.observe(s, ["b0", "b1"], 0.5, 24)
    surrogate.observe(s, ["b2"], 1.0, 4)  # a race slice: less evidence, not kept
    surrogate.observe(variant(APPROACHES[1]), ["b0"], 0.0, 0)  # no tasks: nothing to learn
    assert [row[2:] for row in surrogate.observations.values()] == [[0.5, 24]]


def test_the_state_survives_json_and_samples_the_same():
    surrogate = evidence(APPROACHES[1])
    back = Surrogate.from_state(json.loads(json.dumps(surrogate.to_state())))
    probe = variant(APPROACHES[1], ROLES[5])
    assert surrogate.sampler(random.Random(3))(probe) == back.sampler(random.Random(3))(probe)


class Proposer(Variation):
    """Variation's best_of with just what it reads."""

    def __init__(self, proposals: int, surrogate: Surrogate, seed: int) -> None:
        self.config = types.SimpleNamespace(population=types.SimpleNamespace(proposals=proposals))
        self.surrogate, self.rng = surrogate, random.Random(seed)


def picks_with(good: str, proposals: int) -> int:
    proposer = Proposer(proposals, evidence(good), seed=7)

    def draw():  # a mutation that sets the approach uniformly at random
        return variant(proposer.rng.choice(APPROACHES[:4]), ROLES[3]), "mut_prompt"

    return sum(proposer.best_of(draw, set())[0].prompt.approach == good for _ in range(200))


def test_proposals_steer_children_towards_values_that_scored():
    good = APPROACHES[1]
    plain, guided = picks_with(good, 1), picks_with(good, 4)
    assert 30 <= plain <= 70  # a quarter of uniform draws
    # the best of four holds it nearly whenever one of the four does: 1 - 0.75**4 = 68 %
    assert guided >= 120


def test_one_proposal_draws_from_the_rng_as_plain_variation():
    proposer = Proposer(1, evidence(APPROACHES[0]), seed=5)
    calls = []
    made = proposer.best_of(lambda: calls.append(1) or (BASE, "mut_prompt"), set())
    assert made == (BASE, "mut_prompt") and calls == [1]
    assert proposer.rng.random() == random.Random(5).random()


def test_proposals_prefer_a_genome_the_population_lacks():
    proposer = Proposer(3, evidence(APPROACHES[0]), seed=2)
    known_good = variant(APPROACHES[0], ROLES[3])
    draws = iter([(known_good, "a"), (variant(APPROACHES[2], ROLES[3]), "b"), (known_good, "c")])
    assert proposer.best_of(lambda: next(draws), {known_good.content_hash()})[1] == "b"


def test_a_run_with_proposals_resumes_exactly(tmp_path):
    sections = {"population": {"proposals": 4}, "tasks": {"rotate_every": 1}}
    run_evolution(config(tmp_path / "straight", run={"generations": 4}, **sections), backend=ArithmeticOracle(),
                  show_progress=False)
    expected = final_state(tmp_path / "straight" / "t")
    run_evolution(config(tmp_path / "split", run={"generations": 2}, **sections), backend=ArithmeticOracle(),
                  show_progress=False)
    resume_evolution(tmp_path / "split" / "t", generations=4, backend=ArithmeticOracle(), show_progress=False)
    assert final_state(tmp_path / "split" / "t") == expected


def test_proposals_below_one_name_the_field():
    with pytest.raises(InputError, match="population.proposals"):
        RunConfig.from_dict({"population": {"proposals": 0}})



def test_plain_variation_is_the_default():
    """Measured on three run seeds, proposals did not beat plain variation (docs/benchmarks.md)."""
    assert RunConfig.from_dict({}).population.proposals == 1


def test_plain_variation_keeps_no_surrogate_evidence(tmp_path):
    from evo.rundir import checkpoint

    run_evolution(config(tmp_path, run={"generations": 2}), backend=ArithmeticOracle(), show_progress=False)
    assert checkpoint.load_latest(tmp_path / "t").state["surrogate"] == []
    run_evolution(config(tmp_path / "k4", run={"generations": 2}, population={"proposals": 4}),
                  backend=ArithmeticOracle(), show_progress=False)
    assert checkpoint.load_latest(tmp_path / "k4" / "t").state["surrogate"]
