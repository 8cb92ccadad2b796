"""GEPA (reflective Pareto prompt evolution, PyPI ``gepa``) over our backend.

The candidate is one component, ``instruction`` (rendered into our strategy format by
:mod:`evo.peers.render`). :class:`GepaAdapter` implements GEPA's adapter protocol:

- ``evaluate(batch, candidate, capture_traces)``: the rendered strategy on a batch of
  our tasks, in one batched ``generate`` call; score 1 for a verified answer, else 0;
  traces keep the question, the completion, the gold answer and our parser's verdict;
- ``make_reflective_dataset``: per example, the input, the model's output and
  feedback from our parser and verifier ("correct", "wrong: expected 42, answered 41",
  "no answer block: ...") — what GEPA's reflection prompt shows the reflection model.

The reflection model is the bundled model through our backend (:class:`BackendLM`,
greedy, its completions counted as proposals, not rollouts). The budget is GEPA's
``max_metric_calls``: one metric call per example evaluated, i.e. one rollout; the
:class:`evo.peers.budget.CountingBackend` under the adapter checks it. ``run_dir``
gives GEPA's own checkpointing, so a killed GEPA run resumes where it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evo.peers.render import base_instruction, strategy_of
from fitness.backends.base import Request, SamplingParams
from genomes.errors import InputError

COMPONENT = "instruction"


def require_gepa():
    try:
        import gepa
    except ImportError:
        raise InputError("the GEPA peer needs gepa: pip install -e '.[peers]' (gepa==0.1.4)") from None
    return gepa


class BackendLM:
    """GEPA's ``LanguageModel`` (prompt or chat messages -> text) on our backend."""

    def __init__(self, backend, max_new_tokens: int = 192) -> None:
        self.backend, self.max_new_tokens = backend, max_new_tokens

    def __call__(self, prompt: str | list[dict[str, Any]]) -> str:
        messages = ({"role": "user", "content": prompt},) if isinstance(prompt, str) else \
            tuple({"role": m["role"], "content": _text(m["content"])} for m in prompt)
        request = Request(messages, SamplingParams(max_new_tokens=self.max_new_tokens))
        return self.backend.propose([request])[0].text


def _text(content: Any) -> str:
    """Chat content as text (GEPA may send a list of typed parts)."""
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if isinstance(part, dict))


class GepaAdapter:
    """GEPA's adapter protocol over our evaluator (see the module doc)."""

    # GEPA reads this attribute before every reflection: None = its own reflective
    # proposer (with the reflection LM). Without it gepa 0.1.4 raised AttributeError
    # inside each reflection, caught it, and proposed nothing all run.
    propose_new_texts = None

    def __init__(self, backend, seed: int = 0) -> None:
        self.backend, self.seed = backend, seed

    def evaluate(self, batch, candidate: dict[str, str], capture_traces: bool = False):
        from gepa.core.adapter import EvaluationBatch

        from fitness.evaluate import evaluate

        results = evaluate(strategy_of(candidate[COMPONENT]), list(batch), self.backend, seed=self.seed)
        scores = [float(r.correct) for r in results]
        traces = [{"question": r.question, "completion": r.completion, "gold": r.gold, "answer": r.answer,
                   "problem": r.answer_problem} for r in results] if capture_traces else None
        return EvaluationBatch(outputs=[r.completion for r in results], scores=scores, trajectories=traces)

    def make_reflective_dataset(self, candidate, eval_batch, components_to_update):
        rows = [{"Inputs": t["question"], "Generated Outputs": t["completion"], "Feedback": feedback(t, score)}
                for t, score in zip(eval_batch.trajectories or [], eval_batch.scores)]
        return {name: rows for name in components_to_update}


def feedback(trace: dict[str, Any], score: float) -> str:
    """Our parser's and verifier's verdict on one completion, in words."""
    if score >= 1.0:
        return "Correct."
    if trace.get("answer") is None:
        return (f"No usable answer ({trace.get('problem') or 'no answer block'}). The answer must be written between "
                f"<begin_constrained_output> and <end_constrained_output>; the expected answer was {trace['gold']}.")
    return f"Wrong: answered {trace['answer']!r}, expected {trace['gold']!r}."


def run_gepa(backend, trainset, valset, budget: int, out_dir: Path, seed: int = 0,
             minibatch: int = 3) -> dict[str, Any]:
    """Run GEPA within ``budget`` rollouts; returns the best instruction, GEPA's own
    validation score of it, and the rollouts and proposals used. ``backend`` is a
    :class:`~evo.peers.budget.CountingBackend`."""
    gepa = require_gepa()
    out_dir.mkdir(parents=True, exist_ok=True)
    result = gepa.optimize(
        seed_candidate={COMPONENT: base_instruction()}, trainset=list(trainset), valset=list(valset),
        adapter=GepaAdapter(backend, seed), reflection_lm=BackendLM(backend), max_metric_calls=budget,
        reflection_minibatch_size=minibatch, run_dir=str(out_dir / "gepa_state"), seed=seed,
        display_progress_bar=False, raise_on_exception=True)
    best = result.best_candidate
    instruction = best[COMPONENT] if isinstance(best, dict) else str(best)
    return {"instruction": instruction, "search_score": result.val_aggregate_scores[result.best_idx],
            "candidates": len(result.candidates), "metric_calls": result.total_metric_calls}
