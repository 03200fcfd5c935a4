#!/usr/bin/env bash
# Run the whole suite; pytest's exit code 5 ("no tests collected") counts as success of nothing.
set -u
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -n auto "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests (exit 5): treated as success"
  exit 0
fi
exit "$rc"
