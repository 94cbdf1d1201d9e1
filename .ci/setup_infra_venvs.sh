#!/usr/bin/env bash
# Creates the two virtual environments the infrastructure checks (tests/infra) run in:
#   .local/venvs/hcl      python-hcl2, driven by .ci/hcl_dump.py
#   .local/venvs/checkov  checkov
# They are separate because both packages ship a top-level `hcl2` module and clobber each
# other; neither goes into the project venv. Idempotent: a venv whose tool already imports
# is left alone, so a second run costs a couple of seconds and no network.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# The repository root; a source tree without .git (a Cloud Build upload) falls back to ..
root="$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/.." && pwd))"
venvs="$root/.local/venvs"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

# Pinned so a new release cannot change what the checks see without a commit here.
HCL2_SPEC="python-hcl2==${HCL2_VERSION:-8.1.4}"
CHECKOV_SPEC="checkov==${CHECKOV_VERSION:-3.3.30}"
# protoc for `make proto` and the check that the committed gRPC code is current (tests/grpc_serving).
PROTOC_SPEC="grpcio-tools==${GRPCIO_TOOLS_VERSION:-1.85.1}"

ensure_venv() {
    local name="$1" probe="$2" spec="$3"
    local venv="$venvs/$name"
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$probe" >/dev/null 2>&1; then
        echo "setup_infra_venvs: $name venv ready ($venv)"
        return 0
    fi
    echo "setup_infra_venvs: creating $name venv ($venv) with $spec"
    rm -rf "$venv"
    mkdir -p "$venvs"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$spec"
    "$venv/bin/python" -c "$probe"
}

# Side by side (independent venvs); fails if any failed, once all have finished.
pids=()
ensure_venv hcl "import hcl2" "$HCL2_SPEC" & pids+=($!)
ensure_venv checkov "import checkov.main" "$CHECKOV_SPEC" & pids+=($!)
ensure_venv protoc "import grpc_tools.protoc" "$PROTOC_SPEC" & pids+=($!)
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
exit "$failed"
