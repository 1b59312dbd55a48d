#!/usr/bin/env bash
# The Binder recipe without Docker (`make test-binder`): do what repo2docker does with binder/
# in a fresh venv, from a clean clone of the committed tree (no gradwidget/static, no
# node_modules), then run every notebook under nbval with that venv as the kernel.
#   1. pip install -r binder/requirements.txt    (repo2docker's Python buildpack)
#   2. pip wheel . from the clean tree            -> the wheel has the built front-end
#   3. binder/postBuild from the repo root        (pip install --no-deps ., builds the JS)
#   4. nbval --nbval-lax on notebooks/ in a kernel of that venv
# Usage: binder/test-recipe.sh [PYTHON_WITH_PYTEST]   (default: .venv/bin/python of this repo)
# KEEP=1 keeps the temporary directory.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
pytest_py=${1:-$src/.venv/bin/python}
tmp=$(mktemp -d /tmp/gradwidget-binder.XXXXXX)
if [ "${KEEP:-0}" = 1 ]; then echo "keeping $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi

timings=()
timed() {  # timed LABEL CMD...: run CMD, remember how long it took
  local label=$1 t0=$SECONDS
  shift
  echo "== $label"
  "$@"
  timings+=("$(printf '%-26s %4d s' "$label" $((SECONDS - t0)))")
}

git clone -q "$src" "$tmp/repo"
cd "$tmp/repo"
echo "== testing commit $(git log --oneline -1), with binder/ from the working tree"
cp -r "$src/binder/." binder/  # so recipe changes are tested before they are committed
py=python$(sed -n 's/^python-//p' binder/runtime.txt)
timed "venv ($py)" "$py" -m venv "$tmp/venv"
export PATH="$tmp/venv/bin:$PATH" VIRTUAL_ENV="$tmp/venv"
# The CPU torch index in requirements.txt is unreachable on these machines: with pip's default
# retries every package page it asks there costs ~7 s (15 min measured for the whole install).
# Without retries pip moves on at once and takes torch from the local wheels.
export PIP_RETRIES=0 PIP_TIMEOUT=5

timed "requirements.txt" pip install -q -r binder/requirements.txt
timed "wheel from clean tree" pip wheel -q --no-deps -w "$tmp/dist" .
wheel=$(ls "$tmp"/dist/gradwidget-*.whl)
GRADWIDGET_WHEEL=$wheel "$pytest_py" -m pytest -q -p no:cacheprovider \
  "$src/tests/test_notebooks.py" -k test_wheel_ships_the_front_end
git clean -qfdx -e /binder/  # a clean clone again, for postBuild

timed "postBuild" binder/postBuild
# Imported from site-packages (not the clone), with its front-end.
(cd / && python -c '
import gradwidget, pathlib, sys
static = pathlib.Path(gradwidget.__file__).parent / "static"
assert "site-packages" in gradwidget.__file__, gradwidget.__file__
files = sorted(p.name for p in static.iterdir())
assert {"widget.js", "stub.js", "loader.js", "jacobian.js", "viz.mjs.gz"} <= set(files), files
print("installed:", gradwidget.__file__, files)
')

python -m ipykernel install --prefix "$tmp/jupyter" --name gradwidget-binder >/dev/null 2>&1
export JUPYTER_PATH=$tmp/jupyter/share/jupyter
kernel_py=$("$pytest_py" -c 'from jupyter_client.kernelspec import KernelSpecManager as K
print(K().get_kernel_spec("gradwidget-binder").argv[0])')
[ "$kernel_py" = "$tmp/venv/bin/python" ] || { echo "kernel runs $kernel_py" >&2; exit 1; }
timed "notebooks (nbval-lax)" "$pytest_py" -m pytest -q -p no:cacheprovider \
  --nbval-lax --nbval-kernel-name gradwidget-binder --nbval-cell-timeout 300 \
  --nbval-sanitize-with notebooks/sanitize.cfg notebooks

echo "== timings"
printf '%s\n' "${timings[@]}"
