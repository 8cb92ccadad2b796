"""`evo improve CONFIG --rounds K`: evolution and training in a loop.

Each round, in ``RUN_DIR`` (the config's run directory)::

    evolve    run or resume the evolution to generations_per_round × round generations,
              injecting the adapter the previous round found helpful (once: not when
              this round's evolution already has a checkpoint)
    mine      optionally a harvest first (evo.improve.harvest: the hall's leading strategies on
              fresh training tasks, into the journal), then
              DPO pairs from the whole journal: every verified-correct completion of
              every individual and generation (evo.distill.pairs), training tasks only,
              under the canonical prompt (and the round's best strategy's prompt,
              ``pair_prompts = "canonical+best"``)
    train     a LoRA adapter on the unified loss (evo.distill.train); seeded
    evaluate  on the validation split: the canonical prompt and the run's best strategy
              (the one evo export puts first), each with and without the adapter
    decide    the adapter helps when best + adapter beats best on validation; then the
              next round's evolution injects it. The round's champion (what the loop
              hands back, improve/champion.json) is the best on validation of the
              previous champion with and without the adapter, best and best + adapter;
              each family keeps its strategy unless a variant beats it on the
              family's validation tasks (routes, evo.improve.routes)

After the last round the loop takes its one look at the test split: the first round's
best strategy, the final best with and without the last adapter, and the canonical
prompt with and without it, with a paired bootstrap CI of the final best + adapter
against the first round's best. ``RUN_DIR/improve/report.md`` shows every round.

Every step is recorded in ``RUN_DIR/improve/state.json`` when it ends
(:mod:`evo.improve.state`): a loop killed anywhere resumes at the first step not
recorded, and the evolution resumes from its own checkpoints. A round with too few
pairs is *skipped* and one whose training or adapter fails is *failed*, each with one
line saying why; nothing earlier is lost and the next round goes on.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evo.config.sections import RunConfig
from evo.distill.train import TrainSettings
from evo.improve.state import ImproveState
from genomes.errors import InputError

IMPROVE_DIR = "improve"
PAIR_PROMPTS = ("canonical", "canonical+best")


@dataclass(frozen=True)
class ImproveSettings:
    rounds: int
    generations_per_round: int = 0  # 0: the config's run.generations
    # every decision reads these: at 32 a family, which answers a few tasks happened to
    # have decided (docs/benchmarks.md); 6 variants x 3 families x 100 is ~2 min on 2 cores
    validation_per_family: int = 100
    test_per_family: int = 64
    min_pairs: int = 4
    # the prompts pairs are trained under: the canonical one, or also the round's best
    # strategy's (the adapter serves both; evo.distill.pairs.build_pairs). Not the
    # default: the best's few-shot prompts made a training step ~5x longer on 2 cores
    # (75 against 11 s), and the gain is unmeasured
    pair_prompts: str = "canonical"
    # before mining, the hall's top harvest_strategies answer harvest_per_family fresh
    # training tasks per family (evo.improve.harvest): pairs from more tasks than the
    # evolution's batches hold. Off by default: at 64 (34 -> 110, 60 -> 225, 83 -> 316
    # pairs) the benchmark's champion moved +1.9 -> -0.8 points over the first round's
    # best and canonical + adapter 38.6 -> 22.9 % on test (docs/benchmarks.md)
    # With the champion's routes: +5.4 to +10.3 points over the first round's best in
    # five samples of the benchmark at 64 and 128 (docs/benchmarks.md, fourteenth)
    harvest_per_family: int = 0
    harvest_strategies: int = 4
    # per-family routes of the champion (evo.improve.routes): a family keeps the
    # strategy that answered it before unless a variant beats that on its validation
    # tasks in a sign test
    routes: bool = True
    train: TrainSettings = TrainSettings()

    def check(self) -> None:
        if self.pair_prompts not in PAIR_PROMPTS:
            raise InputError(f"--pair-prompts must be one of {', '.join(PAIR_PROMPTS)}, got {self.pair_prompts!r}")
        for name, low in (("rounds", 1), ("generations_per_round", 0), ("validation_per_family", 1),
                          ("test_per_family", 0), ("min_pairs", 1), ("harvest_per_family", 0),
                          ("harvest_strategies", 0)):
            if getattr(self, name) < low:
                raise InputError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        self.train.check()


def improve(config: RunConfig, settings: ImproveSettings, backend: Any = None, trainer: Callable | None = None,
            show_progress: bool = True) -> ImproveState:
    """Run (or resume) ``settings.rounds`` rounds; see the module doc. ``backend`` is
    shared by every step (default: the config's, built once); ``trainer`` replaces
    :func:`evo.distill.train.train_adapter` (tests)."""
    from evo.config.preflight import check_inputs
    from evo.distill.train import require_trl, train_adapter

    settings.check()
    check_inputs(config, model=backend is None)
    if trainer is None:
        require_trl()
    loop = _Loop(config, settings, backend, trainer or train_adapter, show_progress)
    for number in range(1, settings.rounds + 1):
        loop.run_round(number)
    if loop.state.final is None or loop.state.final.get("rounds") != settings.rounds:
        from evo.improve.scoring import final_test

        loop.say("test split: the one look, after every round")
        loop.state.final = final_test(loop, settings.rounds)
        loop.state.save()
    from evo.improve.report import write_report

    path = write_report(loop.state, config)
    loop.say(f"report: {path}")
    return loop.state


class _Loop:
    def __init__(self, config: RunConfig, settings: ImproveSettings, backend: Any, trainer: Callable,
                 show_progress: bool) -> None:
        self.config, self.settings, self.trainer, self.show_progress = config, settings, trainer, show_progress
        self.run_dir = Path(config.run_dir)
        self.state = ImproveState.load(self.run_dir / IMPROVE_DIR)
        self._backend = backend
        self.per_round = settings.generations_per_round or config.run.generations

    def say(self, text: str) -> None:
        if self.show_progress:
            print(f"improve: {text}", file=sys.stderr, flush=True)

    def backend(self):
        if self._backend is None:
            from evo.engine.backend import build_backend

            self._backend = build_backend(self.config)
        return self._backend

    def run_round(self, number: int) -> None:
        from evo.improve import steps

        entry = self.state.round(number)
        if entry["status"] != "running":
            return
        for name, step in (("evolve", steps.evolve), ("mine", steps.mine), ("train", steps.train),
                           ("evaluate", steps.evaluate), ("decide", steps.decide)):
            if name in entry["steps"]:
                continue
            self.say(f"round {number}/{self.settings.rounds}: {name}")
            try:
                result, status = step(self, number)
            except InputError as e:  # a bad adapter, a failed training: this round fails, the loop goes on
                result, status = {"error": str(e)}, f"failed at {name}"
                self.say(f"round {number}: {status}: {e}")
            self.state.record(number, name, result, status)
            if status is not None:  # the round ends here: done, skipped or failed
                if name != "decide":
                    self.state.record(number, "decide", {"inject": None, "why": status}, status)
                return


def seeded_rng(config: RunConfig, label: str) -> random.Random:
    return random.Random(f"{config.run.seed}/{label}")


def with_adapter(strategy, adapter_dir: str | None):
    """The strategy with a fixed adapter slot (None: as it is)."""
    return strategy if adapter_dir is None else dataclasses.replace(strategy, lora={"adapter_dir": adapter_dir})
