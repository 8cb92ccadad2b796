"""`evo eval STRATEGY --tasks ...`: score one strategy (or a routes file: a strategy
per task family, as `evo export` writes it) on a task set.

Everything the user can get wrong (strategy file, task specs, model path, output
location) is checked before the model loads, so mistakes cost no waiting.

Each strategy is answered by the model its ``decoding.model`` names: "default" (the
bundled model), a packaged model or a path, or a name from a run's ``[models]``
table, resolved with ``--config`` (that run's config file or run directory). A
routes file whose strategies name several models gets one backend per model
(:mod:`fitness.backends.multi`); ``--model`` serves everything with one model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fitness.backends.model_store import DTYPES, check_model
from fitness.evaluate import ExampleResult, FamilySummary, evaluate_answerer, summarise
from fitness.tasks import SPLITS, TEST, load_tasks, parse_task_specs
from genomes.errors import InputError
from genomes.routes import Routes, load_answerer, route_jobs, strategies_of
from genomes.strategy import Strategy


def add_parser(sub) -> None:
    ev = sub.add_parser("eval", help="score one strategy file on a task set",
                        description="Score one strategy (prompt + chain template + decoding) on tasks.")
    ev.add_argument("strategy", help="strategy file (.json/.toml/.yaml), a shipped seed name (direct, stepwise, "
                                     "fewshot), or a routes.json from `evo export` (a strategy per family)")
    ev.add_argument("--tasks", required=True,
                    help="comma-separated: reasoning-gym family, family@LEVEL, or a .jsonl file (e.g. chain_sum@1,letter_counting)")
    ev.add_argument("--n", type=int, default=16, help="tasks per entry of --tasks (default 16)")
    ev.add_argument("--split", choices=SPLITS, default=TEST,
                    help="task split: test (reported only; the default), validation (what a run's choices read), "
                         "train, or heldout (validation and test)")
    ev.add_argument("--seed", type=int, default=0, help="task draw and sampling seed (default 0)")
    ev.add_argument("--split-seed", type=int, default=0, help="salt of the train/validation/test partition (default 0, as in a run config)")
    ev.add_argument("--out", help="per-example JSONL output (default runs/out/eval-<strategy>.jsonl)")
    g = ev.add_argument_group("model and backend")
    g.add_argument("--model", help="'default' (bundled SmolLM2-135M-Instruct) or a local HF model directory; "
                                   "serves every strategy, whatever its decoding.model")
    g.add_argument("--config", help="a run's config file, run directory or `evo export` directory: the model "
                                    "names of its [model] and [models] tables, and their settings, serve the "
                                    "strategies that name them")
    g.add_argument("--cache-dir", help="where the converted default model is cached (default $EVO_CACHE_DIR or ~/.cache/evo)")
    g.add_argument("--device", default=None, help="torch device (default: the config's, else cpu)")
    g.add_argument("--dtype", choices=DTYPES, default=None,
                   help="weights and activations (default: the config's, else auto: bfloat16 where the device "
                        "multiplies it natively)")
    g.add_argument("--token-budget", type=int, default=None,
                   help="padded tokens in the running batch (default: auto, 32768 on the lean bf16 forward, else 16384)")


def command(args: argparse.Namespace) -> int:
    answerer = load_answerer(args.strategy)
    strategy = answerer.default if isinstance(answerer, Routes) else answerer
    specs = parse_task_specs(args.tasks)
    if not specs:
        raise InputError("--tasks is empty")
    out = Path(args.out) if args.out else Path("runs/out") / f"eval-{strategy.name}.jsonl"
    _check_writable(out)
    spec, sources = eval_backend_spec(answerer, args)
    _stage_trained_adapters(answerer, spec, Path(args.strategy))
    tasks = load_tasks(specs, n=args.n, split=args.split, seed=args.seed, split_seed=args.split_seed)
    _say(f"strategy {strategy.name} ({strategy.content_hash()}), {len(tasks)} {args.split} tasks, "
         f"model {', '.join(f'{name} = {source}' if name != source else name for name, source in sources.items())}")
    if isinstance(answerer, Routes):
        for family, routed in sorted(answerer.routes.items()):
            _say(f"  {family}: routed to {routed.name} ({routed.content_hash()})")

    started = time.perf_counter()
    from fitness.backends.factory import build_backend_from_spec

    backend = build_backend_from_spec(spec)
    _say("models load on first use" if spec.kind == "multi" else f"model ready in {time.perf_counter() - started:.1f}s")
    results = _evaluate_with_progress(answerer, tasks, backend, args.seed)
    elapsed = time.perf_counter() - started

    _write_jsonl(out, results)
    print(format_table(summarise(results)))
    tokens = sum(r.completion_tokens for r in results)
    print(f"\n{len(results)} examples, {tokens} tokens generated in {elapsed:.1f}s; results: {out}")
    return 0


def eval_backend_spec(answerer: Strategy | Routes, args: argparse.Namespace):
    """The backend that serves ``answerer`` (one model, or one per model its strategies
    name) and ``{model name: source}``; every model is checked, none is loaded."""
    from evo.config.sections import served_models
    from evo.engine.backend import model_spec
    from fitness.backends.factory import BackendSpec

    strategies = strategies_of(answerer)
    config = load_eval_config(args.config) if args.config else None
    overrides = {k: v for k, v in {"cache_dir": args.cache_dir, "device": args.device, "dtype": args.dtype,
                                   "token_budget": args.token_budget}.items() if v is not None}
    if args.model:
        names = {args.model: args.model}
    else:
        names = {}
        for s in strategies:
            name = s.decoding.model or "default"
            if config is not None:
                name = _configured(config, name, s, served_models(config))
            names[name] = name
    specs = {}
    for name in names:
        if config is not None and not args.model:
            spec = model_spec(config, name)
            if spec.kind == "hf":  # the command line's settings win; vLLM's stay the config's
                spec = BackendSpec("hf", {**spec.options, **overrides})
        else:
            spec = BackendSpec("hf", {"model": name, "device": "cpu", "dtype": "auto", **overrides})
        _check_model(spec.options["model"], name, config is not None)
        specs[name], names[name] = spec, spec.options["model"]
    if len(specs) == 1:
        return next(iter(specs.values())), names
    # requests for the bundled/primary model carry no name ("" goes to the primary)
    primary = "default" if "default" in specs else next(iter(specs))
    return BackendSpec("multi", {"primary": primary, "models": specs, "max_resident": len(specs)}), names


def _stage_trained_adapters(answerer: Strategy | Routes, spec, strategy_path: Path) -> None:
    """Trained adapters travel with an `evo export` directory (``trained-adapters/``), not
    in the store a backend reads them from: copy the ones the strategies name there."""
    from evo.rundir.inject import stage_exported_adapters
    from fitness.backends.model_store import default_adapter_store

    def store_of(strategy: Strategy) -> str:
        served = spec
        if spec.kind == "multi":
            model = strategy.decoding.model or "default"
            served = spec.options["models"].get(model) or spec.options["models"][spec.options["primary"]]
        return served.options.get("adapter_store") or str(default_adapter_store())

    strategies = strategies_of(answerer)
    _check_fixed_adapters(strategies, strategy_path)
    search = []
    if strategy_path.is_file():  # DIR/routes.json or DIR/rank-R-<hash>/strategy.json of an export
        for export in (strategy_path.parent, strategy_path.parent.parent):
            search += [export / "adapter", *sorted(export.glob("trained-adapters/*")),
                       *sorted(export.glob("rank-*/adapter"))]
    stage_exported_adapters(strategies, store_of, search)


def _check_fixed_adapters(strategies: list[Strategy], strategy_path: Path) -> None:
    """A fixed adapter (``lora = {"adapter_dir": PATH}``, as `evo improve` writes its
    champion) must be there before the model loads; a relative PATH is read from the
    current directory, as the run that wrote it was. A PATH that is not there because
    the run directory moved or was renamed since is found in the run the strategy file
    lies in (see :func:`_moved_adapter`); the strategy then reads it there (one line says so)."""
    from fitness.backends.lora_weights import missing_adapter_files

    for strategy in strategies:
        lora = strategy.lora
        if isinstance(lora, dict) and lora.get("adapter_dir"):
            where = Path(lora["adapter_dir"])
            missing = missing_adapter_files(where)
            if not missing:
                continue
            moved = _moved_adapter(where, strategy_path)
            if moved is not None:
                _say(f"strategy {strategy.name}: lora.adapter_dir {where} is not there; reading the same adapter "
                     f"(its content hash is its name) from {moved}")
                lora["adapter_dir"] = str(moved)
                continue
            hint = "" if where.is_absolute() else " (a relative path: run evo eval where the run was started)"
            raise InputError(f"strategy {strategy.name}: lora.adapter_dir {where} lacks {', '.join(missing)}{hint}")


def _moved_adapter(where: Path, strategy_path: Path) -> Path | None:
    """``adapters/trained/<name>`` of a directory holding the strategy file (up to three
    levels: ``RUN/improve/champion.json`` lies two below its run) whose content hash is
    ``<name>``, as a trained adapter's directory name is; None when there is none."""
    from fitness.backends.lora_weights import adapter_hash, missing_adapter_files

    if where.parent.name != "trained" or not strategy_path.is_file():
        return None
    for run in list(strategy_path.resolve().parents)[:3]:
        candidate = run / "adapters" / "trained" / where.name
        if not missing_adapter_files(candidate) and adapter_hash(candidate) == where.name:
            return candidate
    return None


def load_eval_config(path: str):
    """``--config``: a config file, or a run or export directory's ``config.json`` (read
    as the run wrote it: fields added since take the values that run used)."""
    from evo.config.sections import RunConfig, load_config
    from genomes.validation import read_structured

    where = Path(path)
    if not where.is_dir():
        return load_config(where)
    if not (where / "config.json").is_file():
        raise InputError(f"--config: {where} holds no config.json (a run or `evo export` directory has one)")
    return RunConfig.from_saved(read_structured(where / "config.json"), str(where / "config.json"))


def _configured(config, name: str, strategy: Strategy, served: tuple[str, ...]) -> str:
    from evo.config.sections import gene_model

    canonical = gene_model(config, name)
    if canonical not in served:
        raise InputError(f"strategy {strategy.name}: decoding.model {name!r} is not one of the config's models "
                         f"({', '.join(served)})")
    return canonical


def _check_model(source: str, name: str, configured: bool) -> None:
    try:
        check_model(source)
    except InputError as e:
        if configured or name != source:
            raise
        raise InputError(f"{e}; a name from a run's [models] table needs --config (that run's config, run "
                         "directory or `evo export` directory), or pass --model") from None


def _evaluate_with_progress(answerer: Strategy | Routes, tasks, backend, seed: int) -> list[ExampleResult]:
    from evo.engine.progress import RequestProgress

    total = sum(len(group) * s.decoding.votes for s, group in route_jobs(answerer, tasks)[0])
    with RequestProgress("generating", total) as bar:
        return evaluate_answerer(answerer, tasks, backend, seed=seed, progress=bar.update)


def _check_writable(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output directory {out.parent}: {e.strerror}") from None
    if out.is_dir():
        raise InputError(f"--out is a directory: {out}")


def _write_jsonl(out: Path, results: list[ExampleResult]) -> None:
    tmp = out.with_suffix(out.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
    tmp.replace(out)


def format_table(rows: list[FamilySummary]) -> str:
    header = f"{'family':<24} {'n':>4} {'accuracy':>8} {'steps':>6} {'chain tok':>9} {'gen tok':>8} {'answered':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.family:<24} {r.n:>4} {r.accuracy:>8.1%} {r.mean_steps:>6.2f} {r.mean_chain_tokens:>9.1f} "
            f"{r.mean_completion_tokens:>8.1f} {r.well_formed:>8.1%}"
        )
    return "\n".join(lines)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
