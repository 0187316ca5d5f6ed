#!/usr/bin/env bash
# Run pytest with the project's interpreter and treat "no tests collected"
# (pytest exit code 5) as a failure: this suite always has tests.
#   PY=.venv/bin/python scripts/pytest.sh -q tests
set -uo pipefail
py=${PY:-.venv/bin/python}
"$py" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests in: $*" >&2
  exit 1
fi
exit "$rc"
