"""DSPy's optimizers (MIPROv2, BootstrapFewShotWithRandomSearch) over our backend.

The program is one ``dspy.Predict`` of ``question -> steps, answer`` whose
instructions start as the ``direct`` seed's (:func:`evo.peers.render.base_instruction`).
What DSPy optimises (the instructions, the demos) is rendered into our strategy
format by :func:`strategy_of_program`, during the search and for the final score, so
the prompts DSPy sees are the prompts our verifier scores on the test tasks.

- :class:`BackendEngine`: the engine of a ``dspy.LM`` (DSPy 3.4's contract:
  ``complete(lm15.Request) -> lm15.Response``) that generates with our backend. DSPy
  calls its LM one example at a time from ``num_threads`` threads; the engine gathers
  the calls that arrive together into one batched ``generate`` (the hf backend is
  10x faster on a batch than one request at a time). A trailing assistant message is
  the assistant turn's prefill, as our strategies render it (``<cot>``).
- :class:`StrategyAdapter` (a ``dspy.Adapter``): the task signature is formatted by
  our own renderer (system text, demos as worked examples, the question) and parsed
  by our parser (``<cot>`` steps, the answer block). Any other signature (MIPROv2's
  proposers: dataset summary, program description, instruction proposal) gets plain
  text in and the whole completion as its first output field, so a 135M model's
  free text is still read rather than failing DSPy's ``[[ ## field ## ]]`` format.
- Budget: DSPy has no hard limit on rollouts. The task model's engine counts every
  completion through :class:`evo.peers.budget.CountingBackend`; once the budget is
  spent it generates nothing more and answers :data:`BUDGET_SPENT` (no answer block:
  scored 0), so candidates evaluated after that cannot win. The proposal model's
  completions (MIPROv2's instruction proposals) are counted apart, as GEPA's
  reflections are. The optimizers' sizes are chosen from the budget
  (:func:`mipro_sizes`, :func:`random_search_candidates`) so that they fit it.
"""

from __future__ import annotations

import functools
import itertools
import threading
import warnings
from collections.abc import Sequence
from typing import Any

from evo.peers.render import base_instruction, strategy_of
from fitness.backends.base import Request, SamplingParams
from fitness.verify import FULL_CREDIT, score_answer
from fitness.format import parse_completion
from genomes.errors import InputError
from genomes.strategy import Exemplar, Strategy

QUESTION, STEPS, ANSWER = "question", "steps", "answer"
BUDGET_SPENT = "(the rollout budget is spent: nothing was generated)"
PROPOSAL_TOKENS = 192  # what a proposal completion may write (GEPA's reflections get the same)


def require_dspy():
    try:
        import dspy
    except ImportError:
        raise InputError("the DSPy peers need dspy: pip install -e '.[peers]' (dspy==3.4.1)") from None
    return dspy


# ---- the engine ----------------------------------------------------------------------
class BackendEngine:
    """``dspy.LM(engine=...)`` over our backend (see the module doc).

    ``backend``: a :class:`~evo.peers.budget.CountingBackend`. ``scored``: True for the
    task model (completions are rollouts, refused past the budget), False for the
    proposal model (``backend.propose``). ``max_new_tokens`` applies where DSPy's
    request sets none. Sampled calls (DSPy raises the temperature to draw new
    bootstraps) get seeds ``seed, seed + 1, ...`` in the order batches are made."""

    def __init__(self, backend, scored: bool, max_new_tokens: int, seed: int = 0, window_s: float = 0.05,
                 max_batch: int = 64) -> None:
        self.backend, self.scored, self.max_new_tokens = backend, scored, max_new_tokens
        self.window_s, self.max_batch = window_s, max_batch
        self._seeds = itertools.count(seed)
        self._cond = threading.Condition()
        self._waiting: list[_Call] = []
        self._running = False
        self.refused = 0  # scored calls answered BUDGET_SPENT
        self.batches = 0

    def complete(self, request):
        from dspy.lm15 import Message, Response, TextPart, Usage

        call = _Call(self._our_request(request))
        with self._cond:
            self._waiting.append(call)
            self._cond.notify_all()
            while not call.done:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True  # this thread runs the next batch: first let the others' calls arrive
                self._cond.wait_for(lambda: len(self._waiting) >= self.max_batch, timeout=self.window_s)
                batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch:]
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
        if call.error is not None:
            raise call.error
        completion = call.completion
        text = completion.text if completion.text.strip() else " "  # DSPy refuses an empty response
        return Response(id=None, model="evo-backend", message=Message.assistant((TextPart(text),)),
                        finish_reason="length" if completion.finish_reason == "length" else "stop",
                        usage=Usage(input_tokens=completion.prompt_tokens, output_tokens=completion.completion_tokens,
                                    total_tokens=completion.prompt_tokens + completion.completion_tokens))

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass

    def _run(self, batch: list[_Call]) -> None:
        from fitness.backends.base import Completion

        self.batches += 1
        try:
            if not self.scored:
                outs = self.backend.propose([c.request for c in batch])
            else:
                allowed = min(len(batch), self.backend.left)
                outs = self.backend.generate([c.request for c in batch[:allowed]]) if allowed else []
                self.refused += len(batch) - allowed
                outs += [Completion(BUDGET_SPENT, 0, 0, "stop")] * (len(batch) - allowed)
            for call, out in zip(batch, outs, strict=True):
                call.completion = out
        except Exception as e:  # every caller of the batch sees it, none waits forever
            for call in batch:
                call.error = e
        finally:
            for call in batch:
                call.done = True

    def _our_request(self, request) -> Request:
        messages = []
        if request.system:
            system = request.system if isinstance(request.system, str) else "".join(
                getattr(part, "text", "") or "" for part in request.system)
            messages.append({"role": "system", "content": system})
        for message in request.messages:
            role = message.role if message.role in ("system", "assistant") else "user"
            messages.append({"role": role, "content": message.text or ""})
        prefill = ""
        if len(messages) > 1 and messages[-1]["role"] == "assistant":  # the assistant turn's start
            prefill = messages.pop()["content"]
        config = request.config
        temperature = float(config.temperature or 0.0)
        sampling = SamplingParams(temperature, float(config.top_p or 1.0), int(config.max_tokens or self.max_new_tokens),
                                  next(self._seeds) if temperature > 0 else 0)
        return Request(tuple(messages), sampling, prefill=prefill)


class _Call:
    __slots__ = ("request", "completion", "error", "done")

    def __init__(self, request: Request) -> None:
        self.request, self.completion, self.error, self.done = request, None, None, False


# ---- the adapter and the program -------------------------------------------------------
def is_task_signature(signature) -> bool:
    return set(signature.input_fields) == {QUESTION} and set(signature.output_fields) == {STEPS, ANSWER}


def demo_exemplars(demos: Sequence[Any], max_question_chars: int | None = None) -> tuple[Exemplar, ...]:
    """DSPy demos (labeled: question and gold answer; bootstrapped: the model's
    verified steps and answer too) as our exemplars; a demo that would make an invalid
    one (no answer, a format marker inside, a question longer than
    ``max_question_chars``, default ``exemplars.max_question_chars``) is left out."""
    from evo.config.sections import ExemplarsSection
    from evo.engine.exemplar_pool import make_exemplar, stated_answer

    if max_question_chars is None:
        max_question_chars = ExemplarsSection().max_question_chars

    out = []
    for demo in demos:
        get = demo.get if hasattr(demo, "get") else lambda name, default=None, d=demo: getattr(d, name, default)
        question, answer = str(get(QUESTION, "") or ""), str(get(ANSWER, "") or "").strip()
        steps = [s for s in str(get(STEPS, "") or "").split("\n") if s.strip()] or [stated_answer(answer)]
        kind = "bootstrapped" if get(STEPS, None) else "labeled"
        exemplar = make_exemplar(question, steps, answer, stated_answer(answer), f"dspy-{kind}:train",
                                 max_question_chars)
        if exemplar is not None:
            out.append(exemplar)
    return tuple(out)


def strategy_of_program(instructions: str, demos: Sequence[Any], name: str = "dspy") -> Strategy:
    """Our strategy for a DSPy predictor's instructions and demos: the instruction
    rendered as :func:`evo.peers.render.strategy_of` does, the demos as its exemplars."""
    import dataclasses

    base = strategy_of(instructions, name)
    return dataclasses.replace(base, prompt=dataclasses.replace(base.prompt, exemplars=demo_exemplars(demos)))


@functools.cache
def adapter_class():
    """``StrategyAdapter`` (see the module doc), built on first use: dspy is optional."""
    dspy = require_dspy()

    class StrategyAdapter(dspy.Adapter):
        def format(self, signature, demos, inputs):
            if is_task_signature(signature):
                rendered = strategy_of_program(signature.instructions, demos).render(str(inputs[QUESTION]))
                messages = list(rendered.messages)
                if rendered.prefill:
                    messages.append({"role": "assistant", "content": rendered.prefill})
                return messages
            wanted = "; ".join(f"{name} ({field.json_schema_extra.get('desc', '')})".replace(" ()", "")
                               for name, field in signature.output_fields.items())
            system = f"{signature.instructions}\n\nWrite only the {wanted}."
            user = "\n\n".join(f"{name}: {inputs[name]}" for name in signature.input_fields if name in inputs)
            return [{"role": "system", "content": system}, {"role": "user", "content": user or "(no input)"}]

        def parse(self, signature, completion):
            if is_task_signature(signature):
                parsed = parse_completion(completion)
                return {STEPS: "\n".join(parsed.steps), ANSWER: parsed.answer or ""}
            names = list(signature.output_fields)
            return {names[0]: completion.strip(), **{name: "" for name in names[1:]}}

    return StrategyAdapter


def task_program():
    """The program DSPy optimises: ``dspy.Predict(question -> steps, answer)``."""
    dspy = require_dspy()
    signature = dspy.Signature(
        {QUESTION: dspy.InputField(), STEPS: dspy.OutputField(desc="the reasoning steps, one per line"),
         ANSWER: dspy.OutputField(desc="the final answer, a bare value")},
        base_instruction())
    return dspy.Predict(signature)


def examples_of(tasks) -> list:
    """Our tasks as DSPy examples (question in, gold answer out); ``task_id`` finds the task again."""
    dspy = require_dspy()
    return [dspy.Example(question=t.question, answer=t.answer or "", task_id=t.id).with_inputs(QUESTION) for t in tasks]


def metric_for(tasks):
    """DSPy's metric: our verifier's full credit on the example's task (1.0 or 0.0)."""
    by_id = {t.id: t for t in tasks}

    def metric(example, prediction, trace=None, *args, **kwargs) -> float:
        answer = getattr(prediction, ANSWER, None) or None
        return float(score_answer(answer, by_id[example.task_id]) >= FULL_CREDIT)

    return metric


# ---- sizes from the budget --------------------------------------------------------------
def random_search_candidates(budget: int, train: int, val: int) -> int:
    """BootstrapFewShotWithRandomSearch's ``num_candidate_programs`` for ``budget``.

    It scores ``candidates + 3`` programs on the valset (zero-shot, labeled demos only,
    unshuffled bootstrap, then the candidates) and bootstraps ``candidates + 1`` of
    them; a bootstrap stops at its demos' worth of successes, which with a small model
    can take the whole trainset or a handful of tasks (333 of 600 rollouts used when
    sized for the worst case). So it is sized for bootstraps of half the trainset: a
    run that would go further is stopped by the engine at the budget, and the
    candidates it cuts short score 0 on what they did not see, so they cannot win."""
    return max(1, (budget - 3 * val - train // 2) // (val + train // 2))


def mipro_sizes(budget: int, train: int, val: int) -> dict[str, int]:
    """MIPROv2's sizes for ``budget``: ``num_candidates`` demo sets, of which all but
    two (zero-shot, labeled only) bootstrap over (at most) the trainset; the default
    program once on the valset; then trials of ``minibatch_size`` with a full valset
    score every ``minibatch_full_eval_steps`` trials."""
    candidates, every = 3, 5
    minibatch = max(1, min(val, 25))
    left = budget - (candidates - 2) * train - val
    trials = max(1, int(left / (minibatch + val / every)))
    return {"num_candidates": candidates, "num_trials": trials, "minibatch_size": minibatch,
            "minibatch_full_eval_steps": every}


# ---- the runs ---------------------------------------------------------------------------
def run_dspy(method: str, backend, trainset, valset, budget: int, seed: int = 0, max_new_tokens: int = 128,
             threads: int = 32, demos: int = 2) -> dict[str, Any]:
    """Run ``method`` (``"mipro"`` or ``"bootstrap_rs"``) within ``budget`` rollouts;
    returns the optimised instruction, the strategy it renders to, and what was used.
    ``backend`` is a :class:`~evo.peers.budget.CountingBackend`."""
    dspy = require_dspy()
    from dspy.teleprompt import MIPROv2, BootstrapFewShotWithRandomSearch

    task_engine = BackendEngine(backend, scored=True, max_new_tokens=max_new_tokens, seed=seed, max_batch=threads)
    proposal_engine = BackendEngine(backend, scored=False, max_new_tokens=PROPOSAL_TOKENS, seed=seed + 1,
                                    max_batch=threads)
    task_lm = dspy.LM("evo/task", engine=task_engine, cache=False, temperature=0.0, max_tokens=max_new_tokens)
    proposal_lm = dspy.LM("evo/proposer", engine=proposal_engine, cache=False, temperature=0.0,
                          max_tokens=PROPOSAL_TOKENS)
    tasks = list(trainset) + list(valset)
    metric = metric_for(tasks)
    train, val = examples_of(trainset), examples_of(valset)
    sizes: dict[str, int] = {}
    with warnings.catch_warnings(), dspy.context(lm=task_lm, adapter=adapter_class()()):
        warnings.simplefilter("ignore", DeprecationWarning)  # DSPy's own adapters call its deprecated messages= API
        if method == "bootstrap_rs":
            sizes = {"num_candidate_programs": random_search_candidates(budget, len(train), len(val))}
            optimizer = BootstrapFewShotWithRandomSearch(
                metric, max_bootstrapped_demos=demos, max_labeled_demos=demos, num_threads=threads, **sizes)
            best = optimizer.compile(task_program(), trainset=train, valset=val)
        elif method == "mipro":
            sizes = mipro_sizes(budget, len(train), len(val))
            optimizer = MIPROv2(metric, prompt_model=proposal_lm, task_model=task_lm, auto=None,
                                num_candidates=sizes["num_candidates"], num_threads=threads,
                                max_bootstrapped_demos=demos, max_labeled_demos=demos, seed=seed, verbose=False)
            best = optimizer.compile(task_program(), trainset=train, valset=val, num_trials=sizes["num_trials"],
                                     minibatch_size=sizes["minibatch_size"],
                                     minibatch_full_eval_steps=sizes["minibatch_full_eval_steps"])
        else:
            raise InputError(f"unknown DSPy method {method!r} (known: mipro, bootstrap_rs)")
    predictor = best.predictors()[0]
    instruction = predictor.signature.instructions
    strategy = strategy_of_program(instruction, predictor.demos, name=method)
    score = getattr(best, "score", None)  # MIPROv2 keeps its best valset score, in percent
    return {"instruction": instruction, "demos": len(strategy.prompt.exemplars), "strategy": strategy.encode(),
            "refused_past_budget": task_engine.refused, "batches": task_engine.batches + proposal_engine.batches,
            "sizes": sizes, "search_score": None if score is None else round(score / 100, 4)}
