"""`evo.report.html`: plots and HTML for a run directory (finished, killed, generation 0
only, scalar and multi mode), and its pure helpers on hand-built data."""

from __future__ import annotations

import dataclasses
import html
import json
import random
import shutil
from pathlib import Path

import pytest
from fakes import ArithmeticOracle, config

from evo.engine.run import run_evolution
from evo.report.data import load_run, pareto_front
from evo.report.html import write_report
from evo.report.plots import PLOTS
from evo.report.tree import plot_lineage, tree_layout
from evo.rundir.lineage import ancestors
from genomes.errors import InputError
from genomes.strategy import Strategy

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---- run directories (made once per module: each run takes a fraction of a second) ----
@pytest.fixture(scope="module")
def scalar_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scalar")
    run_evolution(config(root, run={"generations": 4}), backend=ArithmeticOracle(), show_progress=False)
    return root / "t"


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multi")
    run_evolution(config(root, run={"generations": 3}, population={"mode": "multi"}), backend=ArithmeticOracle(),
                  show_progress=False)
    return root / "t"


def copy_run(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / run.name
    shutil.copytree(run, target)
    return target


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_report(page: Path, min_png_bytes: int = 8_000) -> str:
    assert page.name == "index.html" and page.is_file()
    text = page.read_text(encoding="utf-8")
    for name in PLOTS:
        png = page.parent / name
        data = png.read_bytes()
        assert data[:8] == PNG_SIGNATURE, name
        assert len(data) > min_png_bytes, (name, len(data))
        assert f'src="{name}"' in text, name
    assert "could not be drawn" not in text
    return text


def closure(lineage_rows: list[dict], best_id: int) -> set[int]:
    """Every ancestor id of best_id, computed the plain way (last row per id)."""
    parents = {}
    for row in lineage_rows:
        parents[row["id"]] = row["parents"]
    out, todo = set(), [best_id]
    while todo:
        for p in parents[todo.pop()]:
            if p not in out:
                out.add(p)
                todo.append(p)
    return out


# ---- pure helpers -----------------------------------------------------------------------
def test_pareto_front_on_hand_built_points():
    points = [
        (1.0, 10.0),  # 0: front (most accurate, fewest tokens at that accuracy)
        (0.5, 5.0),  # 1: front
        (0.5, 8.0),  # 2: dominated by 1 (same accuracy, more tokens)
        (1.0, 12.0),  # 3: dominated by 0
        (0.2, 5.0),  # 4: dominated by 1 (same tokens, less accurate)
        (0.5, 5.0),  # 5: equal to 1: both stay
        (float("nan"), 1.0),  # 6: incomplete: never on the front
        (0.9, 10.0),  # 7: dominated by 0
        (0.0, 1.0),  # 8: front (fewest tokens)
        (0.8, 20.0),  # 9: dominated by 0
    ]
    assert pareto_front(points) == [0, 1, 5, 8]
    assert pareto_front([]) == []
    assert pareto_front([(0.3, 7.0)]) == [0]


def test_pareto_front_matches_the_definition_on_random_points():
    rng = random.Random(0)
    for _ in range(50):
        points = [(rng.choice([0, 0.25, 0.5, 0.75, 1.0]), float(rng.randint(1, 8))) for _ in range(rng.randint(1, 25))]
        dominated = {
            j for j, (a2, t2) in enumerate(points)
            if any(a1 >= a2 and t1 <= t2 and (a1 > a2 or t1 < t2) for a1, t1 in points)
        }
        assert pareto_front(points) == [i for i in range(len(points)) if i not in dominated]


HAND_LINEAGE = [
    {"id": 0, "parents": [], "op": "seed", "generation": 0, "fitness": [1.0]},
    {"id": 1, "parents": [], "op": "seed", "generation": 0, "fitness": [1.1]},
    {"id": 2, "parents": [0], "op": "mut_chain", "generation": 0, "fitness": [1.2]},
    {"id": 3, "parents": [1], "op": "mut_prompt", "generation": 1, "fitness": [0.9]},  # not an ancestor
    {"id": 4, "parents": [2, 1], "op": "cx_strategy", "generation": 1, "fitness": [1.3]},
    {"id": 2, "parents": [0], "op": "mut_chain", "generation": 0, "fitness": [1.25]},  # re-evaluated: this row wins
    {"id": 5, "parents": [4, 99], "op": "mut_decoding", "generation": 3, "fitness": [1.4]},  # 99: torn from the log
    {"id": 6, "parents": [5], "op": "mut_prompt", "generation": 4, "fitness": [1.5]},
    {"id": 7, "parents": [0], "op": "mut_prompt", "generation": 4, "fitness": [1.0]},  # not an ancestor
]


def test_ancestors_on_a_hand_built_lineage():
    rows = ancestors(HAND_LINEAGE, 6)
    assert [r["id"] for r in rows] == [0, 1, 2, 4, 5, 6]  # by generation, then id
    assert next(r for r in rows if r["id"] == 2)["fitness"] == [1.25]  # the last row per id
    assert [r["id"] for r in ancestors(HAND_LINEAGE, 6, include_self=False)] == [0, 1, 2, 4, 5]
    assert [r["id"] for r in ancestors(HAND_LINEAGE, 1)] == [1]
    assert ancestors(HAND_LINEAGE, 12345) == []
    cyclic = [{"id": 0, "parents": [1], "generation": 0}, {"id": 1, "parents": [0], "generation": 0}]
    assert [r["id"] for r in ancestors(cyclic, 1)] == [0, 1]


def test_tree_layout_points_every_edge_right_and_keeps_boxes_apart():
    rows = ancestors(HAND_LINEAGE, 6)
    layout = tree_layout(rows, 6)
    assert set(layout.nodes) == {r["id"] for r in rows}
    assert layout.nodes[6][1] == 0.0  # the best sits on the axis
    for r in rows:
        for p in r["parents"]:
            if p in layout.nodes:
                assert layout.nodes[p][0] < layout.nodes[r["id"]][0]
                assert (p, r["id"]) in layout.routes
    # 2 is a mutant of a seed born in generation 0: it gets its own column after the seeds
    assert layout.nodes[0][0] == layout.nodes[1][0] < layout.nodes[2][0]
    assert layout.column_generation[layout.nodes[2][0]] == 0
    # 1 -> 4 skips the column of 2: the edge passes through a reserved point there
    assert [x for x, _ in layout.routes[(1, 4)]] == [layout.nodes[2][0]]
    by_column = {}
    for x, y in layout.nodes.values():
        by_column.setdefault(x, []).append(y)
    for ys in by_column.values():
        ys.sort()
        assert all(b - a >= 1.0 - 1e-9 for a, b in zip(ys, ys[1:]))


# ---- whole reports ----------------------------------------------------------------------
def test_scalar_run_report(scalar_run, tmp_path):
    out = tmp_path / "report"
    page = write_report(scalar_run, out)
    assert page == out / "index.html"
    text = assert_report(page)
    metrics = lines(scalar_run / "metrics.jsonl")
    best = json.loads((scalar_run / "best.json").read_text())["hall_of_fame"][0]
    assert best["hash"] in text
    assert metrics[-1]["best_hash"] in text
    # the hall's rank-1 row ends with the batches its fitness covers
    assert f"<td>{best['hash']}</td>" in text and "<th>batches</th>" in text
    hall = text.split("<h2>Hall of fame</h2>")[1]
    row = hall.split(f"<td>{best['hash']}</td>")[1].split("</tr>")[0]
    assert row.endswith(f"<td>{len(best['scored_on'])}</td>")
    assert f"{metrics[-1]['heldout_accuracy']:.1%}" in text
    assert "finished (best.json written)" in text
    system = Strategy.decode(best["strategy"]).render("{question}").messages[0]["content"]
    assert html.escape(system) in text and "&lt;cot&gt;" in text
    assert f"{metrics[-1]['rollouts']:,} new" in text and f"{metrics[-1]['tokens']:,}" in text


def test_lineage_tree_holds_every_ancestor_of_the_best(scalar_run, multi_run, tmp_path):
    for run_dir in (scalar_run, multi_run):
        run = load_run(run_dir)
        rows = lines(run_dir / "lineage.jsonl")
        best_id = run.best["id"]
        assert best_id == json.loads((run_dir / "best.json").read_text())["hall_of_fame"][0]["id"]
        drawn = plot_lineage(run, tmp_path / f"{run.mode}.png")
        assert set(drawn) == closure(rows, best_id) | {best_id}
        assert (tmp_path / f"{run.mode}.png").read_bytes()[:8] == PNG_SIGNATURE
        # whoever the best is, check the individual with the longest ancestry of the run too
        deepest = max(run.lineage.values(), key=lambda r: (len(closure(rows, r["id"])), r["id"]))
        assert len(closure(rows, deepest["id"])) >= 2
        drawn = plot_lineage(dataclasses.replace(run, best=deepest), tmp_path / "deep.png")
        assert set(drawn) == closure(rows, deepest["id"]) | {deepest["id"]}


def test_multi_mode_report(multi_run, tmp_path):
    text = assert_report(write_report(multi_run, tmp_path / "r"))
    metrics = lines(multi_run / "metrics.jsonl")
    assert "<td>multi</td>" in text
    assert metrics[-1]["best_hash"] in text
    assert f"{metrics[-1]['heldout_accuracy']:.1%}" in text
    run = load_run(multi_run)
    assert run.mode == "multi" and all(len(r["fitness"]) == 2 for r in run.lineage.values())


def test_default_out_dir_is_inside_the_run(scalar_run, tmp_path):
    run_dir = copy_run(scalar_run, tmp_path)
    page = write_report(str(run_dir))
    assert page == run_dir / "report" / "index.html"
    assert_report(page)


def test_killed_run_with_torn_lines_uses_the_latest_checkpoint(scalar_run, tmp_path):
    from evo.rundir import checkpoint
    run_dir = copy_run(scalar_run, tmp_path)
    (run_dir / "best.json").unlink()
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"generation": 5, "evaluated": 4, "best_fi')  # torn by the kill
    with open(run_dir / "lineage.jsonl", "a") as f:
        f.write('{"id": 40, "hash": "ab')
    text = assert_report(write_report(run_dir, tmp_path / "r"))
    saved = checkpoint.load_latest(run_dir).state
    best = saved["individuals"][saved["hall"][0]]
    assert Strategy.decode(best["strategy"]).content_hash() in text
    assert "not finished" in text and f"latest checkpoint (generation {saved['generation']})" in text
    run = load_run(run_dir)
    assert [m["generation"] for m in run.metrics] == [0, 1, 2, 3, 4]


def test_run_that_only_reached_generation_0(tmp_path):
    """What a kill during generation 1 leaves: generation 0's checkpoint, metrics and
    lineage rows, no best.json."""
    run_evolution(config(tmp_path, run={"generations": 1}), backend=ArithmeticOracle(), show_progress=False)
    run_dir = tmp_path / "t"
    (run_dir / "best.json").unlink()
    shutil.rmtree(run_dir / "checkpoints" / "gen-000001")
    for name in ("metrics.jsonl", "lineage.jsonl"):
        rows = [r for r in lines(run_dir / name) if r["generation"] == 0]
        (run_dir / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = lines(run_dir / "metrics.jsonl")
    assert len(metrics) == 1
    text = assert_report(write_report(run_dir, tmp_path / "r"))
    assert metrics[0]["best_hash"] in text
    assert f"{metrics[0]['heldout_accuracy']:.1%}" in text
    assert "latest checkpoint (generation 0)" in text


def test_no_checkpoint_falls_back_to_the_metrics_best(scalar_run, tmp_path):
    run_dir = copy_run(scalar_run, tmp_path)
    (run_dir / "best.json").unlink()
    shutil.rmtree(run_dir / "checkpoints")
    run = load_run(run_dir)
    assert run.best["hash"] == lines(run_dir / "metrics.jsonl")[-1]["best_hash"]
    assert_report(write_report(run_dir, tmp_path / "r"))


def test_a_directory_without_metrics_is_an_input_error(tmp_path):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(InputError, match="not-a-run"):
        write_report(empty)
    (empty / "metrics.jsonl").write_text('{"generation": 0, "evalu')  # only a torn line
    with pytest.raises(InputError, match="not-a-run"):
        write_report(empty)
    with pytest.raises(InputError, match="missing-dir"):
        write_report(tmp_path / "missing-dir")
    assert not (empty / "report").exists()


def test_number_helpers_survive_missing_values():
    from evo.report.fmt import duration as _duration, pct as _pct

    assert _pct(None) == "–" and _pct(0.5) == "50.0%"
    assert _duration(None) == "–" and _duration(75) == "1 min 15 s" and _duration(3725) == "1 h 2 min"
