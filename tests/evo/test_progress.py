"""What a person sees while requests are generated: off a terminal, a line at the
start and at least every 30 s (done / total, rate, ETA); on a terminal, a bar."""

from __future__ import annotations

import io

from evo.engine.progress import RequestProgress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_off_a_terminal_a_line_at_the_start_and_every_30_seconds():
    out, clock = io.StringIO(), Clock()
    with RequestProgress("generation 0", 100, stream=out, interactive=False, clock=clock) as bar:
        assert out.getvalue() == "generation 0: 0/100 requests, 0.00 req/s, ETA -\n"  # at once, before any result
        clock.now += 10
        bar.update(10)
        assert out.getvalue().count("\n") == 1  # not yet 30 s
        clock.now += 20
        bar.update(10)
    lines = out.getvalue().splitlines()
    assert lines[1] == "generation 0: 20/100 requests, 0.67 req/s, ETA 2 min 00 s"


def test_disabled_or_empty_prints_nothing():
    out = io.StringIO()
    with RequestProgress("x", 10, enabled=False, stream=out, interactive=False) as bar:
        bar.update(10)
    with RequestProgress("x", 0, stream=out, interactive=False):
        pass
    assert out.getvalue() == ""


def test_on_a_terminal_a_live_bar():
    out = io.StringIO()
    with RequestProgress("generation 1", 4, stream=out, interactive=True) as bar:
        bar.update(4)
    assert out.getvalue().startswith("\rgeneration 1:") and "0/4" in out.getvalue()  # a tqdm bar, redrawn in place


def test_the_line_shows_tokens_per_second_when_the_backend_counts_them():
    out, clock = io.StringIO(), Clock()
    with RequestProgress("generation 2", 10, stream=out, interactive=False, clock=clock) as bar:
        clock.now += 40
        bar.update(4, tokens=1000)
    assert out.getvalue().splitlines()[1] == "generation 2: 4/10 requests, 0.10 req/s, 25.0 tok/s, ETA 1 min 00 s"


def test_the_generation_line_says_when_a_level_moved():
    from evo.engine.progress import generation_line

    record = {"generation": 2, "rollouts": 186, "reused": 48, "best_fitness": 1.247, "tokens": 7441, "wall_s": 21.2,
              "frontier": {"basic_arithmetic": 0, "chain_sum": 1}}
    line = generation_line(record, 3, 0.556, 0.167, {"basic_arithmetic": 0, "chain_sum": 0})
    assert line.startswith("gen   2/3  rollouts   186 (+48 reused)  best +1.247  train acc 55.6%  val acc 16.7%")
    assert line.endswith("(level moved: chain_sum 0->1; next batch at the new level)")
    steady = generation_line(record, 3, 0.556, None, dict(record["frontier"]))
    assert "level moved" not in steady and "val acc   n/a" in steady
    assert "level moved" not in generation_line(record, 3, 0.556, None, None)  # the first generation
