"""``RUN_DIR/improve/report.md``: accuracy per round on validation, and the test
scores of the final look (:mod:`evo.improve.rounds`)."""

from __future__ import annotations

from pathlib import Path

from evo.config.sections import RunConfig
from evo.improve.state import ImproveState


def _pct(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def round_rows(state: ImproveState) -> list[str]:
    rows = ["| round | status | generations | pairs | canonical | canonical + adapter | best | best + adapter | "
            "injected next | champion |", "|---|---|---|---|---|---|---|---|---|---|"]
    for entry in state.rounds:
        steps = entry["steps"]
        scores, decision = steps.get("evaluate", {}), steps.get("decide", {})
        rows.append(f"| {entry['round']} | {entry['status']} | {steps.get('evolve', {}).get('generations', '–')} | "
                    f"{steps.get('mine', {}).get('pairs', '–')} | {_pct(scores.get('canonical'))} | "
                    f"{_pct(scores.get('canonical+adapter'))} | {_pct(scores.get('best'))} | "
                    f"{_pct(scores.get('best+adapter'))} | {'yes' if decision.get('inject') else 'no'} | "
                    f"{_champion_cell(decision.get('champion'))} |")
    return rows


def _champion_cell(champion: dict | None) -> str:
    if not champion:
        return "–"
    routes = "".join(f"; {family}: {route['from']}{' (kept)' if route.get('kept') else ''} "
                     f"({_pct(route['validation'])} vs {_pct(route['champion_validation'])})"
                     for family, route in sorted((champion.get("routes") or {}).items()))
    routed = f", {_pct(champion['validation_routed'])} with routes" if routes else ""
    return f"{champion['from']} ({_pct(champion['validation'])}{routed}){routes}"


def test_rows(final: dict | None) -> list[str]:
    if not final:
        return ["Not scored on test yet."]
    if "skipped" in final:
        return [f"Test split not scored: {final['skipped']}."]
    acc, formed, per_family = final["accuracy"], final["well_formed"], final.get("per_family", {})
    families = sorted({family for scores in per_family.values() for family in scores})
    rows = [f"{final['tasks']} test tasks (reported only: no round read them).", "",
            "| strategy | accuracy | well-formed |" + "".join(f" {f} |" for f in families),
            "|---|---|---|" + "---|" * len(families)]
    rows += [f"| {name} | {_pct(acc[name])} | {_pct(formed[name])} |"
             + "".join(f" {_pct(per_family.get(name, {}).get(f))} |" for f in families) for name in acc]
    if final.get("champion_from"):
        rows += ["", f"champion = {final['champion_from']} (`improve/champion.json`)."]
    if final.get("champion_routes"):
        rows += ["champion + routes = the champion, but " + "; ".join(
            f"{family} answered by {source}" for family, source in sorted(final["champion_routes"].items()))
            + " (`improve/routes.json`)."]
    rows.append("")
    for gain in final.get("gains_over_first", {"": final["gain_over_first"]}).values():
        rows.append(f"{gain['of']} − first round's best: **{gain['mean'] * 100:+.1f} points** "
                    f"[{gain['ci'][0] * 100:+.1f}, {gain['ci'][1] * 100:+.1f}] (paired bootstrap, 95 %)  ")
    return rows


def _mix_text(state: ImproveState) -> str:
    mixes = [entry["steps"]["evaluate"]["mix"] for entry in state.rounds
             if (entry["steps"].get("evaluate") or {}).get("mix")]
    if not mixes:
        return ""
    return " (" + ", ".join(f"{family} {share:.0%}" for family, share in mixes[-1].items()) + ")"


def write_report(state: ImproveState, config: RunConfig) -> Path:
    lines = [f"# evo improve: {config.run.name}", "",
             "Accuracy per round on the validation split (every decision reads it), each family weighted by "
             "its share of the test tasks, so that validation estimates the figure the test reports"
             f"{_mix_text(state)}; the adapter of a round is "
             "injected into the next round's evolution when best + adapter beats best. The champion is the "
             "best on validation of the previous champion (with and without the round's adapter), the round's "
             "best and best + adapter; ties keep the incumbent. It is what the loop hands back "
             "(`improve/champion.json`, a strategy file `evo eval` takes). A family routes to another variant "
             "where that variant beats the champion on the family's validation tasks in a one-sided sign test "
             "(`improve/routes.json`, a routes file `evo eval` takes).", "",
             *round_rows(state), "", "## Test", "", *test_rows(state.final), ""]
    path = state.path / "report.md"
    state.path.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
