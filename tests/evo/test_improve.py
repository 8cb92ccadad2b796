"""`evo improve`: rounds of evolve → mine → train → evaluate → decide on the scripted
backend with a stand-in trainer (the real TRL training has its own tests); resume
after a kill at any step, skipped and failed rounds, the one look at test."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import pytest
from fakes import AdapterHelps, FakeTrainer, config, read_jsonl

from evo.cli.main import main
from evo.distill.pairs import canonical_strategy
from evo.distill.train import TrainSettings
from evo.improve.rounds import ImproveSettings, improve
from evo.improve.state import ImproveState
from fitness.backends.base import Completion
from genomes.chat_format import format_completion
from genomes.errors import InputError
from genomes.strategy import Strategy


def settings(rounds=2, min_pairs=1):
    return ImproveSettings(rounds=rounds, generations_per_round=1, validation_per_family=6, test_per_family=8,
                           min_pairs=min_pairs, harvest_per_family=0, train=TrainSettings(steps=1))


def test_two_rounds_inject_a_helpful_adapter_and_score_test_once(tmp_path, capsys):
    cfg = config(tmp_path)
    backend, trainer = AdapterHelps(), FakeTrainer()
    state = improve(cfg, settings(), backend=backend, trainer=trainer)
    assert [r["status"] for r in state.rounds] == ["done", "done"] and trainer.calls == 2
    first, second = (r["steps"] for r in state.rounds)
    assert first["evolve"]["generations"] == 1 and second["evolve"]["generations"] == 2
    assert first["mine"]["pairs"] >= 1 and first["mine"]["prompts"] == "canonical"
    assert first["evaluate"]["best+adapter"] == 1.0 > first["evaluate"]["best"]
    assert first["decide"]["helps"] and second["evolve"]["injected"] == first["train"]["adapter"]
    injected = [row for row in read_jsonl(cfg.run_dir / "lineage.jsonl") if row["op"] == "inject"]
    assert injected and all(row["generation"] == 2 for row in injected)
    final = state.final
    assert final["rounds"] == 2 and final["tasks"] == 8 and final["accuracy"]["best+adapter"] == 1.0
    assert final["gain_over_first"]["ci"][0] <= final["gain_over_first"]["mean"] <= final["gain_over_first"]["ci"][1]
    # the champion: round 1's best + adapter (1.0 on validation), kept on round 2's ties
    assert first["decide"]["champion"]["from"] == "round 1's best + round 1's adapter"
    assert second["decide"]["champion"]["from"] == "round 1's best + round 1's adapter"
    assert second["evaluate"]["champion"] == second["evaluate"]["champion+adapter"] == 1.0
    assert final["champion_from"] == "round 1's best + round 1's adapter" and final["accuracy"]["champion"] == 1.0
    assert final["gain_over_first"]["of"] == "champion" and set(final["gains_over_first"]) == {"champion",
                                                                                              "best+adapter"}
    champion_file = json.loads((cfg.run_dir / "improve" / "champion.json").read_text())
    assert champion_file["lora"]["adapter_dir"] == first["train"]["adapter"]
    report = (cfg.run_dir / "improve" / "report.md").read_text()
    assert "| 1 | done | 1 |" in report and "| 2 | done | 2 |" in report and "first round's best" in report
    err = capsys.readouterr().err
    assert "improve: round 2/2: train" in err and "helps: injected next round" in err
    # everything recorded: the same command again does nothing new
    again = FakeTrainer()
    improve(cfg, settings(), backend=AdapterHelps(), trainer=again)
    assert again.calls == 0


def _decide_with(tmp_path, scores_by_round):
    """decide() over hand-written rounds: each round's evaluate scores are given."""
    from evo.improve import steps

    class Loop:
        state = ImproveState(tmp_path / "improve")

        def say(self, text):
            pass

    loop = Loop()
    for number, scores in enumerate(scores_by_round, start=1):
        best = Strategy.decode({"name": f"round {number}"}, where="test")
        loop.state.record(number, "evolve", {"best_strategy": best.encode()})
        loop.state.record(number, "train", {"adapter": f"adapters/r{number}"})
        loop.state.record(number, "evaluate", {"canonical": 0.0, "canonical+adapter": 0.0} | scores)
        result, status = steps.decide(loop, number)
        loop.state.record(number, "decide", result, status)
    return loop.state


def test_the_champion_changes_only_on_validation_evidence(tmp_path):
    state = _decide_with(tmp_path, [
        {"best": 0.4, "best+adapter": 0.4},  # a tie: the adapter is not taken
        {"best": 0.3, "best+adapter": 0.35, "champion": 0.4, "champion+adapter": 0.5},
        {"best": 0.5, "best+adapter": 0.5, "champion": 0.5, "champion+adapter": 0.45},  # a tie keeps the incumbent
        {"best": 0.7, "best+adapter": 0.6, "champion": 0.5, "champion+adapter": 0.5},
        # the canonical prompt + adapter is no candidate (it won validation and lost test)
        {"best": 0.6, "best+adapter": 0.6, "champion": 0.7, "champion+adapter": 0.6, "canonical+adapter": 0.75}])
    froms = [r["steps"]["decide"]["champion"]["from"] for r in state.rounds]
    assert froms == ["round 1's best", "round 1's best + round 2's adapter", "round 1's best + round 2's adapter",
                     "round 4's best", "round 4's best"]
    third, fourth = (r["steps"]["decide"]["champion"] for r in state.rounds[2:4])
    assert third["strategy"]["name"] == "round 1" and third["strategy"]["lora"]["adapter_dir"] == "adapters/r2"
    assert fourth["strategy"]["name"] == "round 4" and fourth["strategy"].get("lora") is None
    assert fourth["validation"] == 0.7 and state.champion(before=5) == fourth and state.champion(before=4) == third
    assert state.champion() == dict(fourth, validation=0.7) and state.champion()["strategy"]["name"] == "round 4"
    assert json.loads((tmp_path / "improve" / "champion.json").read_text()) == json.loads(
        json.dumps(state.champion()["strategy"]))


def test_a_loop_killed_in_training_resumes_without_repeating_a_step(tmp_path):
    cfg = config(tmp_path)
    with pytest.raises(RuntimeError, match="killed"):
        improve(cfg, settings(), backend=AdapterHelps(), trainer=FakeTrainer(fail_at_call=2))
    state = ImproveState.load(cfg.run_dir / "improve")
    assert set(state.rounds[1]["steps"]) == {"evolve", "mine"} and state.rounds[1]["status"] == "running"
    backend, trainer = AdapterHelps(), FakeTrainer()
    trainer.calls = 1  # the adapter of round 1 is on disk as fake1
    state = improve(cfg, settings(), backend=backend, trainer=trainer)
    assert trainer.calls == 2 and [r["status"] for r in state.rounds] == ["done", "done"]
    injected = [row for row in read_jsonl(cfg.run_dir / "lineage.jsonl") if row["op"] == "inject"]
    assert len({row["generation"] for row in injected}) == 1  # injected once, not again on resume


def test_too_few_pairs_skip_a_round_and_a_broken_adapter_fails_one(tmp_path, capsys):
    cfg = config(tmp_path)
    state = improve(cfg, settings(rounds=1, min_pairs=10_000), backend=AdapterHelps(), trainer=FakeTrainer())
    assert state.rounds[0]["status"].startswith("skipped: ") and "train" not in state.rounds[0]["steps"]
    assert "fewer than --min-pairs 10000" in capsys.readouterr().err
    other = config(tmp_path, run={"name": "broken"})
    state = improve(other, settings(rounds=2), backend=AdapterHelps(), trainer=FakeTrainer(broken=True))
    assert [r["status"] for r in state.rounds] == ["failed at evaluate"] * 2
    assert "adapter_model.safetensors is missing" in state.rounds[0]["steps"]["evaluate"]["error"]
    assert state.rounds[1]["steps"]["evolve"]["injected"] is None and state.final["rounds"] == 2


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    cfg = config(tmp_path)
    with pytest.raises(InputError, match="--rounds must be >= 1"):
        improve(cfg, settings(rounds=0), backend=AdapterHelps(), trainer=FakeTrainer())
    state_file = cfg.run_dir / "improve" / "state.json"
    state_file.parent.mkdir(parents=True)
    state_file.write_text("{not json")
    with pytest.raises(InputError, match="damaged improve state"):
        improve(cfg, settings(), backend=AdapterHelps(), trainer=FakeTrainer())
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert main(["improve", str(path), "--rounds", "1", "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_one_real_round_on_the_bundled_model(tmp_path, hf_backend):
    """The real path: bundled model, real TRL training on the unified loss, the adapter
    scored through the hf backend's fixed-adapter slot on validation, then on test."""
    cfg = config(tmp_path, run={"generations": 1}, population={"size": 3, "offspring": 2,
                                                               "seeds": ["direct", "stepwise", "fewshot"]},
                 tasks={"families": ["chain_sum@0"], "per_family": 4, "heldout_per_family": 3})
    s = ImproveSettings(rounds=1, validation_per_family=3, test_per_family=3, min_pairs=1, harvest_per_family=4,
                        harvest_strategies=1, train=TrainSettings(steps=2, batch_size=2, rank=4, targets=("q_proj", "v_proj"), max_length=384))
    state = improve(cfg, s, backend=hf_backend, show_progress=False)
    [entry] = state.rounds
    assert entry["status"] in ("done",) or entry["status"].startswith("skipped: ")
    if entry["status"] == "done":  # the journal had pairs: an adapter was trained and scored
        assert (tmp_path / "t" / "adapters" / "trained").is_dir()
        assert set(entry["steps"]["evaluate"]) >= {"canonical", "canonical+adapter", "best", "best+adapter"}
        assert state.final["tasks"] == 3 and "best+adapter" in state.final["accuracy"]
    else:
        assert entry["steps"]["mine"]["pairs"] < 1
    assert (tmp_path / "t" / "improve" / "report.md").is_file()


def test_pairs_under_the_best_strategys_prompt_too(tmp_path):
    cfg = config(tmp_path)
    state = improve(cfg, dataclasses.replace(settings(rounds=1), pair_prompts="canonical+best"), backend=AdapterHelps(),
                    trainer=FakeTrainer())
    mined = state.rounds[0]["steps"]["mine"]
    assert mined["prompts"] == "canonical+best"
    meta = read_jsonl(Path(mined["pairs_path"]).with_name("pairs.meta.jsonl"))
    best = Strategy.decode(state.rounds[0]["steps"]["evolve"]["best_strategy"], where="test")
    by_prompt = {row["prompt_hash"] for row in meta}
    assert by_prompt == {canonical_strategy().content_hash(), dataclasses.replace(best, lora=None).content_hash()}
    with pytest.raises(InputError, match="--pair-prompts must be one of canonical, canonical\\+best"):
        improve(cfg, dataclasses.replace(settings(), pair_prompts="best"), backend=AdapterHelps(), trainer=FakeTrainer())


def test_validation_weighs_each_family_by_its_share_of_the_test(tmp_path):
    """A family whose test split is small weighs as little in every decision as in the
    test figure: validation estimates what the test reports, not its own task mix."""
    from collections import Counter

    from evo.engine.task_pool import TaskPool
    from evo.improve import steps
    from evo.improve.report import write_report
    from evo.improve.rounds import _Loop
    from evo.improve.scoring import mixed_accuracy

    riddles = tmp_path / "riddles.jsonl"  # the fake backend answers none of these: 0 %
    riddles.write_text("".join(json.dumps({"question": f"Name the colour number {i}.", "answer": f"c{i}"}) + "\n"
                               for i in range(60)))
    cfg = config(tmp_path, tasks={"families": ["chain_sum", str(riddles)]})
    loop = _Loop(cfg, dataclasses.replace(settings(rounds=1), validation_per_family=12, test_per_family=12),
                 AdapterHelps(), FakeTrainer(), False)
    adapter = FakeTrainer()([{"prompt": "p"}], cfg.run_dir, None, None, example_weights=[1.0]).path
    loop.state.record(1, "evolve", {"best_strategy": canonical_strategy().encode()})
    loop.state.record(1, "train", {"adapter": str(adapter)})
    scores, _ = steps.evaluate(loop, 1)
    test_counts = Counter(t.family for t in TaskPool(cfg).held_out("test", 12, fewer_ok=True))
    validation_counts = Counter(t.family for t in TaskPool(cfg).held_out("validation", 12, fewer_ok=True))
    assert scores["mix"] == pytest.approx({f: n / sum(test_counts.values()) for f, n in test_counts.items()})
    assert test_counts["jsonl:riddles"] < validation_counts["jsonl:riddles"]  # 3 against 6: the mixes differ
    for name in ("canonical", "best+adapter", "canonical+adapter"):
        per_family = scores["per_family"][name]
        assert per_family["jsonl:riddles"] == 0.0
        assert scores[name] == pytest.approx(scores["mix"]["chain_sum"] * per_family["chain_sum"])
    plain = validation_counts["chain_sum"] / sum(validation_counts.values())  # best + adapter: every sum right
    assert scores["per_family"]["best+adapter"]["chain_sum"] == 1.0 and scores["best+adapter"] != pytest.approx(plain)
    loop.state.record(1, "evaluate", scores)
    assert "of the test tasks" in write_report(loop.state, cfg).read_text()
    assert mixed_accuracy({"a": [1.0, 1.0], "b": [0.0]}, {"a": 0.25, "b": 0.75}) == 0.25
    assert mixed_accuracy({"a": [1.0, 1.0], "b": [0.0]}, None) == pytest.approx(2 / 3)
    assert mixed_accuracy({"a": [1.0], "b": [0.0]}, {"a": 0.5, "c": 0.5}) == 1.0  # renormalised over shared families


class PromptMatters(AdapterHelps):
    """Right or wrong by the parity of the sum plus a hash of the strategy's turns and
    decoding: strategies unlike each other are right on other tasks, so most tasks
    can make a pair."""

    def generate(self, requests, progress=None):
        out = super().generate(requests, progress)
        for i, request in enumerate(requests):
            question = request.messages[-1]["content"]
            match = re.search(r"problem: (.*) =", question)
            if match and request.adapter is None:
                total = eval(match.group(1))
                shape = hashlib.sha256(repr((request.messages[:-1], request.sampling)).encode()).digest()[0]
                right = (total + shape) % 2 == 0
                out[i] = Completion(format_completion([match.group(1)], str(total if right else total + 1)), 10, 20,
                                    "stop")
        return out


def test_a_harvest_adds_training_completions_that_pairs_come_from(tmp_path):
    """Before mining, the hall's leading strategies answer fresh training tasks at the
    scored level; their completions reach the journal and the pairs, no held-out task
    is drawn, and a resumed round generates nothing again."""
    from evo.engine.task_pool import TaskPool
    from evo.improve.harvest import HARVEST_DRAW, harvest
    from evo.improve.rounds import _Loop
    from fitness.tasks import TRAIN, split_of

    plain = improve(config(tmp_path, run={"name": "plain"}), dataclasses.replace(settings(rounds=1), harvest_per_family=0),
                    backend=PromptMatters(), trainer=FakeTrainer())
    assert plain.rounds[0]["steps"]["mine"]["harvest"] == {"tasks": 0}
    cfg = config(tmp_path)
    chosen = dataclasses.replace(settings(rounds=1), harvest_per_family=12, harvest_strategies=4)
    state = improve(cfg, chosen, backend=PromptMatters(), trainer=FakeTrainer())
    mined = state.rounds[0]["steps"]["mine"]
    assert mined["harvest"]["tasks"] == 12 and mined["harvest"]["strategies"] == 4
    assert mined["harvest"]["rollouts"] == 48 and mined["pairs"] > plain.rounds[0]["steps"]["mine"]["pairs"]
    harvested = TaskPool(cfg).scored_level_training(12, HARVEST_DRAW - 1)
    t = cfg.tasks
    assert all(split_of(task.family, task.question, t.split_seed, t.heldout_fraction, t.test_share) == TRAIN
               and task.level == t.heldout_level for task in harvested)
    paired = {row["task_id"] for row in read_jsonl(Path(mined["pairs_path"]).with_name("pairs.meta.jsonl"))}
    assert paired & {task.id for task in harvested}  # pairs come from harvested tasks
    backend = PromptMatters()
    again = harvest(_Loop(cfg, chosen, backend, FakeTrainer(), False), 1)  # resumed: the journal has them
    assert again["rollouts"] == 0 and again["reused"] == 48 and backend.requests == []
    with pytest.raises(InputError, match="--harvest-per-family must be >= 0"):
        improve(cfg, dataclasses.replace(chosen, harvest_per_family=-1), backend=AdapterHelps(), trainer=FakeTrainer())


class AdapterSplitsFamilies(PromptMatters):
    """The adapter helps chain_sum (right on every sum, against about half of them,
    by the strategy, without it) and hurts the JSONL family, whose questions carry
    "[j]" (right without it, wrong with it): no single variant is best on both."""

    def generate(self, requests, progress=None):
        out = super().generate(requests, progress)
        for i, request in enumerate(requests):
            question = request.messages[-1]["content"]
            match = re.search(r"problem: (.*) =", question)
            if match and "[j]" in question:
                total = eval(match.group(1))
                answer = total if request.adapter is None else total + 1
                out[i] = Completion(format_completion([match.group(1)], str(answer)), 10, 20, "stop")
        return out


def test_a_family_the_adapter_hurts_routes_to_the_variant_without_it(tmp_path):
    """Per-family routes of the champion: the family where another variant wins its
    validation tasks in a sign test answers with it; the routed champion scores
    above the champion alone on test and is handed back as improve/routes.json."""
    from genomes.routes import Routes, load_answerer

    sums = tmp_path / "sums.jsonl"
    sums.write_text("".join(json.dumps({"question": f"[j] Solve the problem: {i} + {i + 2} = ?",
                                        "answer": str(2 * i + 2)}) + "\n" for i in range(80)))
    cfg = config(tmp_path, tasks={"families": ["chain_sum", str(sums)], "per_family": 3})
    chosen = dataclasses.replace(settings(rounds=2), validation_per_family=12, test_per_family=12)
    state = improve(cfg, chosen, backend=AdapterSplitsFamilies(), trainer=FakeTrainer())
    first, second = (r["steps"] for r in state.rounds)
    champion = first["decide"]["champion"]
    routed = set(champion["routes"])
    assert len(routed) == 1  # the family the champion's variant loses
    (family,) = routed
    route = champion["routes"][family]
    assert route["wins"] > 0 and route["losses"] == 0 and route["p"] <= cfg.routing.significance
    assert route["validation"] == 1.0 > route["champion_validation"]
    assert champion["validation_routed"] > champion["validation"]
    # round 2 scores the previous route on its family's tasks only, and keeps it on a tie
    assert second["evaluate"]["family_variants"]
    assert all(v["family"] in {"chain_sum", "jsonl:sums"} for v in second["evaluate"]["family_variants"].values())
    assert set(second["decide"]["champion"]["routes"]) == routed
    final = state.final
    assert final["accuracy"]["champion+routes"] == 1.0 > final["accuracy"]["champion"]
    assert final["gain_over_first"]["of"] == "champion+routes" and family in final["champion_routes"]
    answerer = load_answerer(cfg.run_dir / "improve" / "routes.json")
    assert isinstance(answerer, Routes) and set(answerer.routes) == routed
    assert answerer.default == Strategy.load(cfg.run_dir / "improve" / "champion.json")
    assert second["decide"]["champion"]["routes"][family]["from"] == route["from"]  # kept on a tie
    assert "routes" in (cfg.run_dir / "improve" / "report.md").read_text()
    # --no-routes: the champion alone, a routes file without routes
    plain = improve(config(tmp_path, run={"name": "plain"}, tasks={"families": ["chain_sum", str(sums)]}),
                    dataclasses.replace(chosen, routes=False), backend=AdapterSplitsFamilies(), trainer=FakeTrainer())
    assert "champion+routes" not in plain.final["accuracy"]
    assert not load_answerer(tmp_path / "plain" / "improve" / "routes.json").routes


def test_a_route_needs_a_sign_test_win_over_the_champion():
    from evo.improve.rounds import with_adapter
    from evo.improve.routes import choose_routes

    best = Strategy.decode({"name": "best"}, where="test")
    strategies = {"best": best.encode(), "best+adapter": with_adapter(best, "adapters/r1").encode(),
                  "canonical": canonical_strategy().encode()}
    origins = {"best": ("round 1's best", None), "best+adapter": ("round 1's best", "round 1's adapter"),
               "canonical": ("the canonical prompt", None)}
    scores = {"outcomes": {"best": {"a": "0000011111", "b": "1111100000"},
                           "best+adapter": {"a": "1111111111", "b": "1111110000"},  # a: 5 wins, p = 1/32
                           "canonical": {"a": "0000000000", "b": "1111111000"}}}  # b: 2 wins, p = 1/4
    routes = choose_routes(scores, "best", strategies, origins, significance=0.1)
    assert set(routes) == {"a"} and routes["a"]["from"] == "round 1's best + round 1's adapter"
    assert (routes["a"]["wins"], routes["a"]["losses"], routes["a"]["p"]) == (5, 0, 0.0312)
    assert choose_routes(scores, "best", strategies, origins, significance=0.01) == {}
    # the champion's own strategy under another name is no route
    same = dict(strategies, **{"best+adapter": best.encode()})
    assert choose_routes(scores, "best", same, origins, significance=0.1) == {}


def test_a_family_keeps_its_strategy_unless_a_variant_beats_it_in_a_sign_test():
    """The incumbent rule: a family answered by the previous strategy keeps it when
    the new champion leads there by too little to tell (a route to the incumbent,
    ``kept``), and changes when a variant beats the incumbent in a sign test."""
    from evo.improve.rounds import with_adapter
    from evo.improve.routes import choose_routes

    old, new = Strategy.decode({"name": "old"}, where="test"), Strategy.decode({"name": "new"}, where="test")
    strategies = {"champion": old.encode(), "best+adapter": with_adapter(new, "adapters/r2").encode()}
    origins = {"champion": ("round 1's best", None), "best+adapter": ("round 2's best", "round 2's adapter")}
    scores = {"outcomes": {"champion": {"a": "0000011111", "b": "0000000000"},
                           "best+adapter": {"a": "1100011111", "b": "1111100000"}}}  # a: +2 (p 1/4), b: +5 (p 1/32)
    incumbents = {"a": old.encode(), "b": old.encode()}
    routes = choose_routes(scores, "best+adapter", strategies, origins, 0.1, incumbents)
    assert set(routes) == {"a"}  # b changes to the new champion: no route
    assert routes["a"]["variant"] == "champion" and routes["a"]["kept"]
    assert (routes["a"]["validation"], routes["a"]["champion_validation"]) == (0.5, 0.7)
    # without incumbents the champion is every family's incumbent: no route
    assert choose_routes(scores, "best+adapter", strategies, origins, 0.1) == {}
    # an incumbent this round did not score falls back to the champion
    other = with_adapter(old, "adapters/elsewhere").encode()
    assert choose_routes(scores, "best+adapter", strategies, origins, 0.1, {"a": other, "b": other}) == {}
