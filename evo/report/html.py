"""The run report: PNG plots and one ``index.html`` for a run directory.

    write_report(RUN_DIR)             # -> RUN_DIR/report/index.html
    write_report(RUN_DIR, "out/rep")  # -> out/rep/index.html

Files written in the output directory:

    fitness.png     best / mean fitness (-L_total) per generation, and best train,
                    mean train and validation accuracy of the best
    cost.png        mean chain tokens per generation, cumulative rollouts (new,
                    validation share, reused from the journal) and generated tokens
    pareto.png      every evaluated individual, accuracy against chain tokens, the
                    non-dominated ones (max accuracy, min tokens) highlighted
    lineage.png     the best individual and all its ancestors, generation on the x axis
    curriculum.png  the curriculum frontier level of each family per generation
    models.png      (a run over several models) accuracy against cost, one colour per
                    model, and the front across them
    index.html      summary table, the plots, the hall of fame, the best strategy's
                    rendered system prompt and the per-generation metrics

Works on finished runs, runs killed mid-way (no ``best.json``: the best comes from
the latest checkpoint), runs that only reached generation 0, scalar and multi mode.
Torn or unparsable lines in the JSONL files are skipped. Matplotlib is imported only
when plots are drawn, and through its object API on the Agg canvas (no pyplot, so
the caller's pyplot backend and global state are left alone).
"""


from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from evo.report import fmt
from evo.report.data import RunData, _num, load_run
from evo.report.plots import (
    MODELS_PLOT,
    PLOTS,
    plot_cost,
    plot_curriculum,
    plot_fitness,
    plot_models,
    plot_pareto,
    run_models,
)
from evo.report.tree import plot_lineage
from genomes.errors import InputError


def system_prompt(row: dict[str, Any] | None) -> str | None:
    """The rendered system prompt of a lineage row's strategy (None if it has none)."""
    if not row or not isinstance(row.get("strategy"), dict):
        return None
    from genomes.strategy import Strategy

    return Strategy.decode(row["strategy"]).render("{question}").messages[0]["content"]


def summary_rows(run: RunData) -> list[tuple[str, str]]:
    last = run.metrics[-1]
    configured = (run.config.get("run") or {}).get("generations")
    status = "finished (best.json written)" if run.finished else "not finished (killed, or still running): no best.json"
    heldout = [(m["generation"], _num(m.get("heldout_accuracy"))) for m in run.metrics
               if not math.isnan(_num(m.get("heldout_accuracy")))]
    best_heldout = max(heldout, key=lambda gv: (gv[1], -gv[0])) if heldout else None
    best = run.best or {}
    rollouts = f"{fmt.count(last.get('rollouts'))} new (of which {fmt.count(last.get('heldout_rollouts'))} validation), " \
               f"{fmt.count(last.get('reused'))} reused from the journal"
    if last.get("budget_rollouts"):
        rollouts += f"; search {fmt.count(last.get('search_rollouts'))} of a budget of {fmt.count(last['budget_rollouts'])}"
    raced = sum(m.get("raced_out") or 0 for m in run.metrics)
    if raced:
        rollouts += f"; {fmt.count(raced)} children raced out"
    return [
        ("run", run.name),
        ("directory", str(run.path)),
        ("status", status),
        ("selection mode", run.mode),
        ("generations", f"{last['generation']} of {configured if configured is not None else '?'} configured, "
                        f"after generation 0"
                        + ("" if len(run.metrics) == last["generation"] + 1 else f" ({len(run.metrics)} recorded)")),
        ("best strategy hash", str(best.get("hash") or last.get("best_hash") or "–")),
        ("best individual", f"#{best.get('id', '–')} · {best.get('op', '–')} · born in generation "
                            f"{best.get('generation', '–')} · from {run.best_source or '–'}"),
        ("best fitness (−L_total)", fmt.fitness(-_num(best["l_total"]) if "l_total" in best else last.get("best_fitness"))),
        ("best train accuracy", fmt.pct(best.get("accuracy", last.get("best_accuracy")))),
        ("validation accuracy, last generation", fmt.pct(last.get("heldout_accuracy"))),
        ("validation accuracy, best", f"{fmt.pct(best_heldout[1])} (generation {best_heldout[0]})" if best_heldout else "–"),
        ("rollouts", rollouts),
        ("tokens generated", fmt.count(last.get("tokens"))),
        ("wall time", f"{fmt.duration(last.get('wall_s'))} (backend {fmt.duration(last.get('backend_s'))})"),
        ("curriculum frontier", ", ".join(f"{k} {v}" for k, v in (last.get("frontier") or {}).items()) or "–"),
    ]


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1500px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
table.summary th { width: 16em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.8em; white-space: pre-wrap; max-width: 110ch; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0 1.2em; }
div.scroll { overflow-x: auto; }
div.scroll img { max-width: none; }
.note { color: #8a5a00; }
"""


def render_html(run: RunData, plots: dict[str, str | None]) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             f"<title>evo run report: {e(run.name)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
             f"<h1>Run report: {e(run.name)}</h1>\n"]
    for note in run.notes:
        parts.append(f"<p class=\"note\">{e(note)}</p>\n")
    summary = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>\n" for k, v in summary_rows(run))
    parts.append(f"<h2>Summary</h2>\n<table class=\"summary\">\n{summary}</table>\n")
    captions = {
        "fitness.png": "Fitness and accuracy per generation (validation: the best individual on the fixed validation set; selection never reads it)",
        "cost.png": "Chain length and cumulative cost per generation",
        "pareto.png": "All evaluated individuals: accuracy against chain tokens; the non-dominated front in red",
        "lineage.png": "Lineage of the best individual",
        "curriculum.png": "Curriculum frontier level over time",
        MODELS_PLOT: "Several models: accuracy against cost per model; the non-dominated front in red",
    }
    for name in PLOTS + ((MODELS_PLOT,) if MODELS_PLOT in plots else ()):
        parts.append(f"<h2>{e(captions[name])}</h2>\n")
        error = plots.get(name)
        if error:
            parts.append(f"<p class=\"note\">this plot could not be drawn: {e(error)}</p>\n")
        else:
            img = f"<img src=\"{e(name)}\" alt=\"{e(captions[name])}\">"
            if name == "lineage.png":  # a long ancestry is wide: scroll rather than shrink its labels
                img = f"<div class=\"scroll\"><a href=\"{e(name)}\">{img}</a></div>"
            parts.append(img + "\n")
    parts += _best_section(run.best)
    if run.hall:
        parts.append("<h2>Hall of fame</h2>\n")
        parts.append(_table(("rank", "id", "hash", "operator", "born", "fitness (−L_total)", "train accuracy", "chain tokens",
                             "batches"),
                            ((k + 1, r.get("id"), r.get("hash", ""), r.get("op", ""), r.get("generation", ""),
                              fmt.fitness(-_num(r.get("l_total"))), fmt.pct(r.get("accuracy")),
                              f"{_num(r.get('chain_tokens')):.1f}", len(r.get("scored_on") or []))
                             for k, r in enumerate(run.hall))))
    parts += _routes_section(run.metrics[-1].get("routes") if run.metrics else None)
    parts.append("\n<h2>Per generation</h2>\n<details open><summary>metrics.jsonl</summary>\n")
    parts.append(_table(("gen", "evaluated", "best fitness", "mean fitness", "best acc", "mean acc", "validation acc",
                         "mean chain tokens", "rollouts", "reused", "tokens", "wall", "best hash", "frontier"),
                        ((m["generation"], fmt.count(m.get("evaluated")), fmt.fitness(m.get("best_fitness")), fmt.fitness(m.get("mean_fitness")),
                          fmt.pct(m.get("best_accuracy")), fmt.pct(m.get("mean_accuracy")), fmt.pct(m.get("heldout_accuracy")),
                          f"{_num(m.get('mean_chain_tokens')):.1f}", fmt.count(m.get("rollouts")), fmt.count(m.get("reused")),
                          fmt.count(m.get("tokens")), fmt.duration(m.get("wall_s")), m.get("best_hash", ""),
                          ", ".join(f"{k} {v}" for k, v in (m.get("frontier") or {}).items()))
                         for m in run.metrics)))
    parts.append("\n</details>\n</body>\n</html>\n")
    return "".join(parts)


# ---- entry point --------------------------------------------------------------------------
PLOTTERS = {
    "fitness.png": plot_fitness,
    "cost.png": plot_cost,
    "pareto.png": plot_pareto,
    "lineage.png": plot_lineage,
    "curriculum.png": plot_curriculum,
    MODELS_PLOT: plot_models,  # only where the run used several models
}


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the plots and ``index.html`` for ``run_dir`` into ``out_dir`` (default
    ``RUN_DIR/report``); returns the path of ``index.html``. InputError if the
    directory holds no metrics. A plot that fails to draw is named in the page
    instead of stopping the report."""
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    errors: dict[str, str | None] = {}
    several_models = len(run_models(run)) > 1
    for name, plot in PLOTTERS.items():
        if name == MODELS_PLOT and not several_models:
            continue
        target = out / name
        try:
            plot(run, target)
            errors[name] = None
        except Exception as err:  # a plot is not worth losing the rest of the report
            target.unlink(missing_ok=True)
            errors[name] = f"{type(err).__name__}: {err}"
    page = out / "index.html"
    tmp = page.with_suffix(".html.tmp")
    tmp.write_text(render_html(run, errors), encoding="utf-8")
    tmp.replace(page)
    return page


def _best_section(best: dict | None) -> list[str]:
    """The best strategy: id, hash, name, rendered system prompt, chain and decoding genes."""
    e = html.escape
    parts = ["<h2>Best strategy</h2>\n"]
    if best is None:
        parts.append("<p>no best individual found</p>\n")
    else:
        strategy = best.get("strategy") or {}
        parts.append(f"<p>#{e(str(best.get('id')))} <code>{e(str(best.get('hash', '')))}</code> "
                     f"named <code>{e(str(strategy.get('name', '')))}</code>; rendered system prompt:</p>\n")
        try:
            prompt = system_prompt(best)
        except InputError as err:
            prompt, err_text = None, str(err)
        else:
            err_text = "the row carries no strategy"
        parts.append(f"<pre>{e(prompt)}</pre>\n" if prompt is not None else f"<p class=\"note\">{e(err_text)}</p>\n")
        details = {k: strategy.get(k) for k in ("chain", "decoding") if k in strategy}
        if details:
            parts.append(f"<details><summary>chain and decoding genes</summary><pre>{e(json.dumps(details, indent=2))}</pre></details>\n")
    return parts


def _routes_section(routes: dict | None) -> list[str]:
    """Per family, the specialist the last generation found and whether it is routed to
    (evo.engine.routing); nothing for a run that keeps no routes."""
    if not routes:
        return []
    rows = ((family, r.get("hash", ""), f"{r['train'][0]}/{r['train'][1]}", fmt.pct(r.get("validation")),
             fmt.pct(r.get("default_validation")), "routed" if r.get("taken") else r.get("why", ""))
            for family, r in sorted(routes.items()))
    return ["<h2>Routes: a strategy per family (evo export writes them as routes.json)</h2>\n",
            _table(("family", "specialist", "train correct", "validation", "best's validation", "taken"), rows)]

