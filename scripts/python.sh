# Sourced by scripts/serve and scripts/test: sets PYTHON to an interpreter >= 3.12.
#
# Django 6 needs Python 3.12 or newer. Candidates are tried by running them,
# because a pyenv shim can exist on PATH and still fail to run.

python_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
    local candidate
    local candidates=(python3.13 python3.12 python3)
    if command -v pyenv >/dev/null 2>&1; then
        local root
        root="$(pyenv root 2>/dev/null || true)"
        if [ -n "$root" ]; then
            for candidate in "$root"/versions/3.1[2-9]*/bin/python3; do
                candidates+=("$candidate")
            done
        fi
    fi
    for candidate in /usr/bin/python3.1[2-9] /usr/local/bin/python3.1[2-9]; do
        candidates+=("$candidate")
    done
    for candidate in "${candidates[@]}"; do
        if python_ok "$candidate"; then
            command -v "$candidate" 2>/dev/null || echo "$candidate"
            return 0
        fi
    done
    return 1
}

if ! PYTHON="$(find_python)"; then
    echo "error: Python >= 3.12 not found (tried python3.13, python3.12, python3, pyenv versions, /usr/bin/python3.1x)." >&2
    echo "Install Python 3.12 or newer (e.g. apt-get install python3.12, or pyenv install 3.12) and retry." >&2
    return 1 2>/dev/null || exit 1
fi
export PYTHON

# Create .venv with $PYTHON unless it exists and is usable.
ensure_venv() {
    local venv="$1"
    if [ -x "$venv/bin/python" ] && python_ok "$venv/bin/python"; then
        return 0
    fi
    if [ -e "$venv" ]; then
        echo "Recreating $venv (missing or older than Python 3.12)" >&2
        rm -rf "$venv"
    fi
    echo "Creating $venv with $PYTHON ($("$PYTHON" -V 2>&1))" >&2
    "$PYTHON" -m venv "$venv"
}
