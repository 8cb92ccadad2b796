"""Subprocess body for the crash tests: runs or resumes an evolution on the scripted
backend, appending its request counts to a file (a SIGKILLed process reports nothing
at exit). Usage: crash_runner.py run CONFIG_JSON COUNT_FILE | resume RUN_DIR GENERATIONS COUNT_FILE"""

from __future__ import annotations

import json
import sys

from fakes import ArithmeticOracle

from evo.config.sections import RunConfig
from evo.engine.run import resume_evolution, run_evolution

if __name__ == "__main__":
    command = sys.argv[1]
    if command == "run":
        config = RunConfig.from_dict(json.loads(sys.argv[2]))
        run_evolution(config, backend=ArithmeticOracle(count_file=sys.argv[3]), show_progress=False)
    else:
        resume_evolution(sys.argv[2], int(sys.argv[3]), backend=ArithmeticOracle(count_file=sys.argv[4]), show_progress=False)
