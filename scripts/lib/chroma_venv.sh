# The project's Chroma virtualenv, shared by dev-up.sh and test.sh (sourced,
# not run). The caller sets VENV, PYTHON and CHROMA_VERSION.

# Prints the chromadb version installed in $VENV, or nothing.
installed_chroma_version() {
    [[ -x "$VENV/bin/python" && -x "$VENV/bin/chroma" ]] || return 0
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("chromadb"))' 2>/dev/null || true
}

# Creates $VENV if it is missing and installs chromadb==$CHROMA_VERSION into it.
install_chroma() {
    if [[ ! -x "$VENV/bin/python" ]]; then
        "$PYTHON" -m venv "$VENV" || {
            echo "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
            return 1
        }
    fi
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "$VENV/bin/python" -m pip install --quiet "chromadb==$CHROMA_VERSION"
}
