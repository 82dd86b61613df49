#!/usr/bin/env bash
# Generates the Python SDK (messages and gRPC stubs) from proto/ into
# sdk-tests/python/generated/ (git-ignored), with the protoc and the
# well-known types that grpcio-tools bundles. Run with the venv's python:
#   PYTHON=sdk-tests/python/.venv/bin/python bash sdk-tests/python/generate.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
python="${PYTHON:-python3}"
out=sdk-tests/python/generated
rm -rf "$out"
mkdir -p "$out"
well_known="$("$python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"
# shellcheck disable=SC2046 # one argument per proto file
"$python" -m grpc_tools.protoc -Iproto -I"$well_known" \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
    $(find proto -name '*.proto' | sed 's|^proto/||' | sort)
echo "generated the Python SDK into $out"
