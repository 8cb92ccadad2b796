"""DPO preference pairs from a run's journal (docs/design.md, "Distillation → DPO"). No torch.

For each training task the journal holds completions of many strategies. A pair is::

    prompt    the canonical prompt of the task: the format rule and the question,
              no evolved instruction, exemplar or chain hint (:func:`canonical_strategy`);
              with ``prompt_strategies``, the pair once under each of their prompts
              (`evo improve` adds its best strategy's, so that the adapter learns
              under the prompt it will be used with, not only the bare one)
    chosen    a verified-correct completion of any individual of the run, every
              generation (``top_lineages = 0``, the default), or of the fittest
              lineages only (the best ``top_lineages`` of the hall of fame and all
              their ancestors), the one with the shortest chain (ties: not truncated, better response block,
              shorter text, then genome hash, so the choice is deterministic)
    rejected  an incorrect completion of the same task from any strategy (with an
              answer block first: a wrong answer teaches more than a broken format),
              or, failing that, a correct one whose chain is at least ``long_ratio``
              times and ``min_extra_tokens`` tokens longer than the chosen one

Rules that always hold (tested): a chosen is never wrong; the two sides of a pair
never have the same text; a (prompt, chosen, rejected) triple appears once; held-out
tasks (by the run's split seed) are never used, so held-out evaluation stays clean.

The output is TRL's conversational preference format, one JSON object per line with
exactly the keys ``prompt`` (system and user messages), ``chosen`` and ``rejected``
(one assistant message each); :class:`Pair` keeps the provenance for the summary.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evo.rundir import checkpoint
from evo.rundir.export import ancestry
from evo.rundir.files import RunDir
from fitness.evaluate import ExampleResult
from fitness.format import normalise_space
from fitness.journal import Journal
from fitness.loss import response_term
from fitness.tasks import TRAIN, split_of
from genomes.errors import InputError
from genomes.strategy import ChainGene, DecodingGene, PromptGene, Strategy
from genomes.validation import read_jsonl_objects

INCORRECT, LONGER = "incorrect", "longer"


def canonical_strategy(max_new_tokens: int = 128) -> Strategy:
    """The strategy distillation trains for and evaluates with: the answer-format
    rules of the reasoning format and the question, nothing evolved. No assistant
    prefill, so a pair's prompt is whole chat messages and the adapter learns to
    open the chain itself."""
    return Strategy(
        name="canonical",
        prompt=PromptGene(role="", approach="", cautions="", exemplars=()),
        chain=ChainGene(step_hints=(), max_steps=6, self_check=False, prefill=False),
        decoding=DecodingGene(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens, votes=1),
    )


@dataclass(frozen=True)
class PairRules:
    """How pairs are chosen; see the module docstring."""

    top_lineages: int = 0  # hall-of-fame members whose lineages may provide the chosen side (0: every individual)
    rejected_per_task: int = 2  # pairs per task, each with a different rejected completion
    long_ratio: float = 2.0  # a correct completion is "much longer" at this chain-length ratio...
    min_extra_tokens: int = 8  # ...and at least this many more chain tokens
    use_incorrect: bool = True  # pairs against wrong answers (the β preference)
    use_longer: bool = True  # pairs against much longer correct chains (the α preference)

    def check(self) -> None:
        if self.top_lineages < 0:
            raise InputError(f"--top-lineages must be >= 0 (0: every individual), got {self.top_lineages}")
        if self.rejected_per_task < 1:
            raise InputError(f"--per-task must be >= 1, got {self.rejected_per_task}")
        if not self.long_ratio > 1.0:
            raise InputError(f"--long-ratio must be > 1, got {self.long_ratio}")
        if self.min_extra_tokens < 0:
            raise InputError(f"--min-extra-tokens must be >= 0, got {self.min_extra_tokens}")
        if not (self.use_incorrect or self.use_longer):
            raise InputError("no pair kind enabled: with α = 0 and β = 0 there is no preference to learn")


@dataclass(frozen=True)
class Pair:
    task_id: str
    family: str
    level: int
    kind: str  # INCORRECT or LONGER
    prompt: tuple[dict[str, str], ...]
    chosen: ExampleResult
    rejected: ExampleResult
    prompt_hash: str = ""  # the strategy whose prompt this is (the canonical one's by default)

    def to_trl(self) -> dict[str, Any]:
        return {
            "prompt": [dict(m) for m in self.prompt],
            "chosen": [{"role": "assistant", "content": completion_text(self.chosen)}],
            "rejected": [{"role": "assistant", "content": completion_text(self.rejected)}],
        }

    def to_meta(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id, "family": self.family, "level": self.level, "kind": self.kind,
            "chosen_hash": self.chosen.strategy_hash, "rejected_hash": self.rejected.strategy_hash,
            "chosen_chain_tokens": self.chosen.chain_tokens, "rejected_chain_tokens": self.rejected.chain_tokens,
            "chosen_score": self.chosen.score, "rejected_score": self.rejected.score,
            "prompt_hash": self.prompt_hash,
        }


def completion_text(result: ExampleResult) -> str:
    """The assistant turn as the model wrote it (a strategy's ``<cot>`` prefill is
    part of ``result.completion``), trimmed of surrounding whitespace."""
    return result.completion.strip()


@dataclass(frozen=True)
class Lineages:
    """The fittest lineages of a run: genome hash -> hall-of-fame ranks it descends to;
    ``top = 0``: every genome qualifies."""

    ranks_of: dict[str, tuple[int, ...]]
    top: int

    def admits(self, strategy_hash: str) -> bool:
        return self.top == 0 or strategy_hash in self.ranks_of


def fittest_lineages(run_dir: Path, top: int) -> Lineages:
    """The best ``top`` hall-of-fame members of the latest checkpoint and all their
    ancestors (from ``lineage.jsonl``), by genome hash; ``top = 0``: every genome."""
    if top == 0:
        return Lineages({}, 0)
    saved = checkpoint.load_latest(run_dir)
    rows = saved.state["individuals"]
    hall = [rows[i] for i in saved.state["hall"]][:top]
    lineage = {row["id"]: row for row in RunDir(run_dir).read_jsonl("lineage.jsonl")}
    ranks_of: dict[str, set[int]] = defaultdict(set)
    for rank, row in enumerate(hall, 1):
        ranks_of[Strategy.decode(row["strategy"], where=f"hall of fame entry {rank}").content_hash()].add(rank)
        for ancestor in ancestry(lineage, row["id"]):  # the member itself first, then every ancestor
            ranks_of[lineage[ancestor["id"]]["hash"]].add(rank)
    return Lineages({h: tuple(sorted(r)) for h, r in ranks_of.items()}, len(hall))


def build_pairs(results: Iterable[ExampleResult], lineages: Lineages, rules: PairRules,
                is_training_task=lambda r: True, prompt_strategies: Sequence[Strategy] = ()) -> list[Pair]:
    """Pairs in task-id order (see the module docstring for the rules). ``results``
    may hold several completions per (genome, task), e.g. of several seeds. Each pair
    comes under the canonical prompt and then under each of ``prompt_strategies``'
    prompts (their system text, chain instruction and exemplars; the completion is
    the same). A strategy whose rendered prompt for a task equals one before it adds
    nothing there."""
    rules.check()
    by_task: dict[str, list[ExampleResult]] = defaultdict(list)
    for r in results:
        if is_training_task(r):
            by_task[r.task_id].append(r)
    strategies = [canonical_strategy(), *prompt_strategies]
    pairs: list[Pair] = []
    seen: set[tuple[str, str, str]] = set()
    for task_id in sorted(by_task):
        candidates = _unique_texts(by_task[task_id])
        chosen = _best_chosen([r for r in candidates if r.correct and lineages.admits(r.strategy_hash)])
        if chosen is None:
            continue
        made = []
        for kind, rejected in _rejected_candidates(candidates, chosen, rules):
            if normalise_space(completion_text(chosen)) != normalise_space(completion_text(rejected)):
                made.append((kind, rejected))
            if len(made) == rules.rejected_per_task:
                break
        for strategy in strategies:
            prompt = strategy.render(chosen.question).messages
            for kind, rejected in made:
                key = (json.dumps(prompt), completion_text(chosen), completion_text(rejected))
                if key not in seen:
                    seen.add(key)
                    pairs.append(Pair(task_id, chosen.family, chosen.level, kind, prompt, chosen, rejected,
                                      strategy.content_hash()))
    return pairs


def _unique_texts(results: Sequence[ExampleResult]) -> list[ExampleResult]:
    """One result per distinct completion text (the first in a deterministic order)."""
    out: dict[str, ExampleResult] = {}
    for r in sorted(results, key=lambda r: (r.strategy_hash, r.completion)):
        text = normalise_space(completion_text(r))
        if text and text not in out:
            out[text] = r
    return list(out.values())


def _best_chosen(correct: Sequence[ExampleResult]) -> ExampleResult | None:
    if not correct:
        return None
    return min(correct, key=lambda r: (r.chain_tokens, r.finish_reason == "length", response_term(r),
                                       len(r.completion), r.strategy_hash))


def _rejected_candidates(candidates: Sequence[ExampleResult], chosen: ExampleResult, rules: PairRules):
    if rules.use_incorrect:
        wrong = [r for r in candidates if not r.correct]
        for r in sorted(wrong, key=lambda r: (r.answer is None, r.chain_tokens, len(r.completion), r.strategy_hash)):
            yield INCORRECT, r
    if rules.use_longer:
        threshold = max(chosen.chain_tokens * rules.long_ratio, chosen.chain_tokens + rules.min_extra_tokens)
        longer = [r for r in candidates if r.correct and r.chain_tokens >= threshold]
        for r in sorted(longer, key=lambda r: (-r.chain_tokens, r.strategy_hash)):
            yield LONGER, r


# ---- a run directory -> files --------------------------------------------------------
@dataclass(frozen=True)
class DistillResult:
    pairs_path: Path
    summary: dict[str, Any]
    pairs: list[Pair]


def distill_run(run_dir: str | Path, out_dir: str | Path | None = None, rules: PairRules | None = None,
                prompt_strategies: Sequence[Strategy] = ()) -> DistillResult:
    """Build the pairs of ``run_dir`` (each also under ``prompt_strategies``' prompts,
    :func:`build_pairs`) and write, in ``out_dir`` (default RUN_DIR/distill)::

        pairs.jsonl       TRL preference rows: prompt, chosen, rejected
        pairs.meta.jsonl  line-aligned provenance: task, kind, genome hashes, lengths
        summary.json      counts, lineages used, chosen vs rejected lengths, accuracy
    """
    run_dir = Path(run_dir)
    if not RunDir(run_dir).journal_path.is_file():
        raise InputError(f"no run journal in {run_dir} (expected {RunDir(run_dir).journal_path.name}; "
                         "is this a directory written by `evo run`?)")
    saved = checkpoint.load_latest(run_dir)
    config = saved.state["config"]
    loss = config["loss"]
    if rules is None:  # the weights decide which preferences exist (see evo.distill.train)
        rules = PairRules(use_incorrect=loss["beta"] > 0, use_longer=loss["alpha"] > 0)
    rules.check()
    lineages = fittest_lineages(run_dir, rules.top_lineages)
    tasks_cfg = config["tasks"]

    def is_training_task(r: ExampleResult) -> bool:
        return split_of(r.family, r.question, tasks_cfg["split_seed"], tasks_cfg["heldout_fraction"]) == TRAIN

    with Journal(RunDir(run_dir).journal_path) as journal:
        results = [r for _, r in journal.all_results()]
    pairs = build_pairs(results, lineages, rules, is_training_task, prompt_strategies)
    out = Path(out_dir) if out_dir is not None else run_dir / "distill"
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "pairs.jsonl", (p.to_trl() for p in pairs))
    _write_jsonl(out / "pairs.meta.jsonl", (p.to_meta() for p in pairs))
    summary = summarise(pairs, results, lineages, rules, is_training_task)
    summary["run_dir"] = str(run_dir)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return DistillResult(out / "pairs.jsonl", summary, pairs)


def summarise(pairs: Sequence[Pair], results: Sequence[ExampleResult], lineages: Lineages, rules: PairRules,
              is_training_task) -> dict[str, Any]:
    training = [r for r in results if is_training_task(r)]
    used_ranks = sorted({rank for p in pairs for rank in lineages.ranks_of.get(p.chosen.strategy_hash, ())})

    def mean(values: Sequence[float]) -> float:
        return round(sum(values) / len(values), 2) if values else 0.0

    return {
        "pairs": len(pairs),
        "kinds": dict(Counter(p.kind for p in pairs)),
        "tasks_in_journal": len({r.task_id for r in training}),
        "tasks_with_pairs": len({p.task_id for p in pairs}),
        "heldout_completions_excluded": len(results) - len(training),
        "lineages": {"considered": lineages.top, "used": len(used_ranks), "ranks_used": used_ranks,
                     "genomes_in_lineages": len(lineages.ranks_of),
                     "genomes_providing_chosen": len({p.chosen.strategy_hash for p in pairs})},
        "chosen": {"mean_chain_tokens": mean([p.chosen.chain_tokens for p in pairs]),
                   "mean_completion_tokens": mean([p.chosen.completion_tokens for p in pairs]),
                   "accuracy": (sum(p.chosen.correct for p in pairs) / len(pairs)) if pairs else None},
        "rejected": {"mean_chain_tokens": mean([p.rejected.chain_tokens for p in pairs]),
                     "mean_completion_tokens": mean([p.rejected.completion_tokens for p in pairs]),
                     "accuracy": (sum(p.rejected.correct for p in pairs) / len(pairs)) if pairs else None},
        "families": dict(sorted(Counter(p.family for p in pairs).items())),
        "rules": dataclasses.asdict(rules),
    }


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    """TRL rows of a pairs file, checked: InputError naming the line for anything else."""
    rows = []
    for n, row in read_jsonl_objects(path, "pairs file"):
        if set(row) != {"prompt", "chosen", "rejected"}:
            raise InputError(f"{path}:{n}: a pair needs exactly the keys prompt, chosen, rejected")
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no pairs (the run has no training task with both a correct completion and a "
                         "rejected one; run more generations, or lower --top-lineages to 0: every individual)")
    return rows


__all__ = ["INCORRECT", "LONGER", "Pair", "PairRules", "DistillResult", "build_pairs", "canonical_strategy",
           "distill_run", "fittest_lineages", "read_pairs"]
