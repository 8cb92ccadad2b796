"""runs/crash_test.py on the scripted backend: random SIGKILLs (some before the first
checkpoint), the EVO_FAULT points, and every damage to every checkpoint file all end
in the uninterrupted run's state or a one-line refusal, with no completion journaled
twice (counted in the journal's own transactions, so a kill between generating a
batch and committing it cannot look like a duplicate)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_crash_test_script_passes_every_case(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("crash_test", ROOT / "runs" / "crash_test.py")
    crash_test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(crash_test)
    status = crash_test.main(["--kills", "4", "--early", "2", "--delay", "0.01", "--out-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert status == 0, out
    summary = out.strip().splitlines()[-1]
    passed, total = summary.split(" cases passed")[0].split("/")
    assert passed == total == "21" and "journaled twice: 0" in summary  # 4 kills, 4 fault points, 13 damages
    assert "(before 1st checkpoint)" in out and "state.json: version" in out and "refused" in out
