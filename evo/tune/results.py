"""What a study leaves behind: the trial table, the best trial and its weights as a
config fragment, and plots (see :mod:`evo.tune.study`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evo.tune.setup import SYMBOLS, TRAINING, WEIGHTS, TuneSetup


# ---- results --------------------------------------------------------------------------
@dataclass
class TuneResult:
    """What a :func:`tune` call leaves: every trial of the study as a row (see
    :func:`trial_rows`), the best and the best baseline row (None when there is no
    COMPLETE one), the trials this call marked failed, and the files written."""

    study_name: str
    storage: str
    tune_dir: Path
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    baseline: dict[str, Any] | None
    stale_failed: list[int] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    test: dict[str, Any] | None = None  # the best's one score on the test split (evo.tune.on_test)


def trial_rows(study) -> list[dict[str, Any]]:
    """One dict per trial: number, state, the weights, validation accuracy and mean chain
    tokens (final for COMPLETE trials, last reported otherwise; None if none),
    generations reached, duration in seconds, baseline flag, run directory."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        progress = t.user_attrs.get("progress") or {}
        accuracy, tokens = progress.get("heldout_accuracy"), progress.get("mean_chain_tokens")
        if t.values is not None:
            accuracy = t.values[0]
            tokens = t.values[1] if len(t.values) > 1 else tokens
        duration = t.duration.total_seconds() if t.duration is not None else None
        rows.append({"number": t.number, "state": t.state.name, **{n: t.params.get(n) for n in WEIGHTS},
                     "heldout_accuracy": accuracy, "mean_chain_tokens": tokens,
                     "generations": progress.get("generation"), "duration_s": duration,
                     "baseline": bool(t.user_attrs.get("baseline")), "run_dir": t.user_attrs.get("run_dir"),
                     **{n: t.params[n] for n in TRAINING if n in t.params}, "train": t.user_attrs.get("train")})
    return rows


def pick_best(rows: list[dict[str, Any]], baseline: bool = False) -> dict[str, Any] | None:
    """The best COMPLETE row (see the module doc), among baseline rows if ``baseline``."""
    done = [r for r in rows if r["state"] == "COMPLETE" and (r["baseline"] or not baseline)]
    if not done:
        return None
    return min(done, key=lambda r: (-r["heldout_accuracy"], r["mean_chain_tokens"] or 0.0, r["number"]))


def format_table(rows: list[dict[str, Any]], best: dict[str, Any] | None) -> str:
    """A Markdown table of the trials."""
    trained = any(r.get("train_steps") is not None for r in rows)  # tune.train: the training side too
    head = ["trial", "state", *(SYMBOLS[n] for n in WEIGHTS),
            *(("steps", "lr", "sft", "best / + adapter") if trained else ()),
            "validation acc", "chain tokens", "gens", "time", ""]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        note = ", ".join(x for x, on in (("best", best is not None and r["number"] == best["number"]),
                                         ("baseline", r["baseline"])) if on)
        extra = []
        if trained:
            train = r.get("train") or {}
            extra = [_num(r.get("train_steps"), "d"), _num(r.get("learning_rate"), ".1e"), _num(r.get("sft"), ".2f"),
                     f"{_num(train.get('best'), '.1%')} / {_num(train.get('best+adapter'), '.1%')}"]
        cells = [str(r["number"]), r["state"].lower(), *(_num(r[n], ".3f") for n in WEIGHTS), *extra,
                 _num(r["heldout_accuracy"], ".1%"), _num(r["mean_chain_tokens"], ".1f"),
                 _num(r["generations"], "d"), _num(r["duration_s"], ".0f", "s"), note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(value: Any, spec: str, suffix: str = "") -> str:
    return "–" if value is None else format(value, spec) + suffix


def _weights_text(weights: dict[str, float]) -> str:
    return "  ".join(f"{SYMBOLS[n]}={weights[n]:.3f}" for n in WEIGHTS)


def headline(result_best: dict[str, Any] | None, baseline: dict[str, Any] | None, n_trials: int) -> str:
    """One line: the best weights and their validation score against the baseline's."""
    if result_best is None:
        return f"no complete trial yet ({n_trials} trials in the study)"
    text = (f"best: trial {result_best['number']}  {_weights_text(result_best)}  "
            f"validation accuracy {result_best['heldout_accuracy']:.1%}")
    if result_best["baseline"]:
        text += "  (the config's own weights: no sampled weights beat them)"
    elif baseline is not None:
        text += f"  (config weights, trial {baseline['number']}: {baseline['heldout_accuracy']:.1%})"
    return text


def write_best(setup: TuneSetup, best: dict[str, Any]) -> dict[str, Path]:
    """``best_weights.toml`` (a ``[loss]`` fragment) and ``best_config.json`` (the
    tuning config with the best weights, full ``run.generations``)."""
    weights = {n: float(best[n]) for n in WEIGHTS}
    fragment = setup.tune_dir / "best_weights.toml"
    full = setup.tune_dir / "best_config.json"
    fragment.write_text(
        f"# Best loss weights of Optuna study {setup.section.study_name!r}: trial {best['number']}, validation accuracy "
        f"{best['heldout_accuracy']:.1%}\n# after {best['generations']} generations. Paste this section into a run "
        f"config, or run the whole tuned config:\n#   evo run {full}\n" + _training_comment(best, full) + "[loss]\n"
        + "".join(f"{n} = {weights[n]!r}\n" for n in WEIGHTS), encoding="utf-8")
    c = setup.config
    config = dataclasses.replace(c, run=dataclasses.replace(c.run, name=f"{setup.section.study_name}-best"),
                                 loss=dataclasses.replace(c.loss, **weights))
    full.write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    return {"best_weights": fragment, "best_config": full}


def _training_comment(best: dict[str, Any], full: Path) -> str:
    """With tune.train: the training settings of the best trial, as the evo improve
    command that uses them with these weights."""
    if best.get("train_steps") is None:
        return ""
    return (f"# Training settings of that trial (the unified loss uses these same weights):\n"
            f"#   evo improve {full} --rounds 3 --steps {best['train_steps']} "
            f"--learning-rate {best['learning_rate']:.3g} --sft {best['sft']:.3g}\n")


def plot_trials(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Held-out accuracy per trial (colour = state) and the best so far, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    scored = [r for r in rows if r["heldout_accuracy"] is not None]
    if not scored:
        return None
    fig = Figure(figsize=(6.4, 3.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colours = {"COMPLETE": "tab:blue", "PRUNED": "tab:orange", "FAIL": "tab:red", "RUNNING": "tab:gray"}
    for state, colour in colours.items():
        pts = [r for r in scored if r["state"] == state]
        if pts:
            ax.scatter([r["number"] for r in pts], [r["heldout_accuracy"] for r in pts], c=colour,
                       label=state.lower(), zorder=3)
    done = [r for r in scored if r["state"] == "COMPLETE"]
    if done:
        best, xs, ys = -1.0, [], []
        for r in done:
            best = max(best, r["heldout_accuracy"])
            xs.append(r["number"])
            ys.append(best)
        ax.step(xs, ys, where="post", color="black", lw=1, label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize="small")
    fig.savefig(path, facecolor="white")
    return path


def plot_optuna(study, tune_dir: Path, multi: bool) -> dict[str, Path]:
    """Optuna's interactive plots (HTML), only where plotly is installed: optimisation
    history and parameter importances, or the Pareto front in a multi study. A plot
    that cannot be drawn yet (too few trials) is skipped."""
    if importlib.util.find_spec("plotly") is None:
        return {}
    from optuna import visualization as vis

    wanted = {"pareto_front": lambda: vis.plot_pareto_front(study, target_names=["validation accuracy", "chain tokens"])} \
        if multi else {"optimization_history": lambda: vis.plot_optimization_history(study),
                       "param_importances": lambda: vis.plot_param_importances(study)}
    written = {}
    for name, draw in wanted.items():
        try:
            path = tune_dir / f"{name}.html"
            with warnings.catch_warnings():  # e.g. "importances will be equal" on a handful of trials
                warnings.simplefilter("ignore")
                figure = draw()
            figure.write_html(str(path), include_plotlyjs="directory")  # plotly.min.js beside it: works offline
            written[name] = path
        except Exception as e:  # noqa: BLE001 - a plot is optional; e.g. importances need 2 complete trials
            print(f"evo tune: {name} plot skipped: {e}", file=sys.stderr)
    return written


def write_outputs(study, setup: TuneSetup, stale: list[int]) -> TuneResult:
    """Summary table, plots and (when a trial is COMPLETE) the best-weights files."""
    rows = trial_rows(study)
    best, baseline = pick_best(rows), pick_best(rows, baseline=True)
    table = format_table(rows, best)
    s = setup.section
    text = (f"# Optuna study {s.study_name!r}\n\nstorage: `{setup.storage}`; objective: {s.objective}; "
            f"{s.generations} generations per trial; sampler seed {s.sampler_seed}\n\n"
            f"{headline(best, baseline, len(rows))}\n\n{table}\n")
    files = {"summary": setup.tune_dir / "summary.md"}
    files["summary"].write_text(text, encoding="utf-8")
    if best is not None:
        files.update(write_best(setup, best))
    png = plot_trials(rows, setup.tune_dir / "trials.png")
    if png is not None:
        files["plot"] = png
    files.update(plot_optuna(study, setup.tune_dir, multi=s.objective == "multi"))
    return TuneResult(s.study_name, setup.storage, setup.tune_dir, rows, best, baseline, stale, files)
