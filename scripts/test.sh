#!/usr/bin/env bash
# The tests, as CI (.ci/run) and the README run them, in three passes, each its
# own process (a Keras backend is fixed at import):
#   1. TensorFlow: the whole suite;
#   2. JAX:     the backend-neutral tests (-m backends: ops, losses, layers,
#               metrics, index, ...; tests/conftest.py deselects the rest);
#   3. PyTorch: the same.
# All three run even if one fails; the exit status is non-zero if any failed.
#   bash scripts/test.sh                      # after bash scripts/setup.sh
#   bash scripts/test.sh tests/test_ops.py    # other paths / pytest options
# PYTHON picks the interpreter (default .venv/bin/python), TEST_WORKERS the
# pytest-xdist workers (default 2). JAX or torch not
# installed: that pass is skipped with a warning, and fails under CI=true.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
ARGS=("$@")
CUSTOM=1
[ ${#ARGS[@]} -eq 0 ] && ARGS=(tests) && CUSTOM=0
# --durations: each pass ends with its slowest tests, to keep the suite's time in view.
PYTEST=("$PY" -m pytest -q -rs -p no:cacheprovider --durations=15)
# Two workers (pytest-xdist, the test extra): the passes are CPU-bound on
# compiling (XLA, tf.function) and take about half the time on 2 cores.
# TEST_WORKERS=0 runs in one process.
if "$PY" -c "import xdist" 2>/dev/null && [ "${TEST_WORKERS:-2}" != 0 ]; then
  PYTEST+=(-n "${TEST_WORKERS:-2}")
fi

status=0
summary=()
run_pass() {   # name, optional module ("" if required), pytest arguments...
  local name=$1 module=$2
  shift 2
  if [ -n "$module" ] && ! "$PY" -c "import $module" 2>/dev/null; then
    if [ "${CI:-}" = "true" ]; then
      summary+=("test.sh: $name pass: FAILED ($module is not installed; see scripts/setup.sh)")
      status=1
    else
      summary+=("test.sh: $name pass: skipped ($module is not installed; under CI=true this fails)")
    fi
    return
  fi
  echo "=== test.sh: $name pass: KERAS_BACKEND=$name ${PYTEST[*]:1} $*"
  local start=$SECONDS rc=0
  KERAS_BACKEND=$name "${PYTEST[@]}" "$@" || rc=$?
  local verdict="FAILED (exit $rc)"
  [ $rc -eq 0 ] && verdict=passed
  # pytest's 5: nothing selected. On the whole suite that is a broken pass;
  # on paths given by hand it only means they hold no backend-neutral test.
  if [ $rc -eq 5 ] && [ "$CUSTOM" = 1 ]; then verdict="no tests selected"; rc=0; fi
  local line="test.sh: $name pass: $verdict in $((SECONDS - start)) s"
  echo "$line"
  summary+=("$line")
  [ $rc -eq 0 ] || status=1
}

run_pass tensorflow "" "${ARGS[@]}"     # TensorFlow is a dependency: never skipped
run_pass jax jax -m backends "${ARGS[@]}"
run_pass torch torch -m backends "${ARGS[@]}"

echo
printf '%s\n' "${summary[@]}"
exit $status
