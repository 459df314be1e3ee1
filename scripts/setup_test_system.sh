#!/usr/bin/env bash
# System packages the napari widget tests need on Linux: Xvfb (a virtual display, started by
# pytest-xvfb) and the xcb libraries that Qt's xcb platform plugin loads.
#
#   scripts/setup_test_system.sh          install what is missing (apt-get; sudo when not root)
#   scripts/setup_test_system.sh --check  only report; exit 1 if something is missing
#
# Where it cannot install (no apt-get, no root and no sudo) it prints what to install and exits 1.
# tests/napari/conftest.py runs the --check, so the tests name this script instead of crashing.
set -euo pipefail

# Debian/Ubuntu package and the file that shows it is there: a command or a shared library
REQUIRED=(
    "xvfb Xvfb"
    "xauth xauth"
    "libxcb-icccm4 libxcb-icccm.so.4"
    "libxcb-keysyms1 libxcb-keysyms.so.1"
    "libxcb-xinerama0 libxcb-xinerama.so.0"
    "libxcb-cursor0 libxcb-cursor.so.0"
)

if [ "$(uname -s)" != Linux ]; then
    echo "setup_test_system: nothing to install on $(uname -s) (Qt uses the native display)"
    exit 0
fi

ldconfig_cache() {
    local ldconfig
    ldconfig=$(PATH="$PATH:/sbin:/usr/sbin" command -v ldconfig || true)
    if [ -n "$ldconfig" ]; then "$ldconfig" -p; fi
}

present() {  # present FILE: a command on PATH or a library the dynamic loader knows
    case "$1" in
        *.so.*) awk -v lib="$1" '$1 == lib {found = 1} END {exit !found}' <<<"$LIBS" ;;
        *) command -v "$1" >/dev/null ;;
    esac
}

missing() {  # prints "package (file)" for each missing requirement
    LIBS=$(ldconfig_cache)
    local entry
    for entry in "${REQUIRED[@]}"; do
        set -- $entry
        if ! present "$2"; then echo "$1 ($2)"; fi
    done
}

tell_what_to_install() {
    echo "setup_test_system: the napari tests need these system packages (Debian/Ubuntu names):" >&2
    sed 's/^/    /' <<<"$1" >&2
    echo "install them, e.g.: sudo apt-get install --no-install-recommends $(cut -d' ' -f1 <<<"$1" | paste -sd' ')" >&2
    echo "(other distributions: the packages providing the files in brackets), then run this script again" >&2
}

NEEDED=$(missing)
if [ -z "$NEEDED" ]; then
    echo "setup_test_system: Xvfb and Qt's xcb libraries are installed"
    exit 0
fi
if [ "${1:-}" = --check ]; then
    tell_what_to_install "$NEEDED"
    exit 1
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else SUDO="none"; fi
fi
if ! command -v apt-get >/dev/null || [ "$SUDO" = none ]; then
    echo "setup_test_system: cannot install here (no apt-get, or neither root nor sudo)" >&2
    tell_what_to_install "$NEEDED"
    exit 1
fi

PACKAGES=$(cut -d' ' -f1 <<<"$NEEDED" | paste -sd' ')
echo "setup_test_system: installing $PACKAGES"
# shellcheck disable=SC2086
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null; }; then
    echo "setup_test_system: apt-get failed" >&2
    tell_what_to_install "$NEEDED"
    exit 1
fi

NEEDED=$(missing)
if [ -n "$NEEDED" ]; then
    echo "setup_test_system: still missing after apt-get install" >&2
    tell_what_to_install "$NEEDED"
    exit 1
fi
echo "setup_test_system: Xvfb and Qt's xcb libraries are installed"
