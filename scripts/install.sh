#!/usr/bin/env bash
# Set up .venv for robosteer on a fresh machine: Debian packages for offscreen
# MuJoCo rendering, torch 2.13.0 (CPU wheel from local disk when present), then
# everything else under a torch==2.13.0 constraint so pip never swaps in a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

stamp="$VENV/.robosteer-installed"
want="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

# EGL + Mesa for headless MuJoCo rendering on the CPU; Chromium for the browser tests.
need_apt=()
# chromium: the headless browser the viewer and figure tests open (tests/test_browser.py)
for pkg in libegl1 libegl-mesa0 libgl1-mesa-dri libglib2.0-0 chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if (( ${#need_apt[@]} )); then
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "install.sh: please install Debian packages: ${need_apt[*]}" >&2
  fi
fi

[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
pip_install() {  # pip, minus its noise about local index folders this machine lacks
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
pip_install --upgrade pip
pip_install torch==2.13.0
constraints="$(mktemp)"
echo "torch==2.13.0" > "$constraints"
pip_install -c "$constraints" -e ".[all,dev]"
rm -f "$constraints"
echo "$want" > "$stamp"
