#!/usr/bin/env bash
# Stops set-up early, with a message that says what to install, when Java 17+ or the Python version asked for
# (usage: check_prereqs.sh 3.13 /path/to/python) is missing.
set -euo pipefail
want="${1:?usage: check_prereqs.sh MAJOR.MINOR PYTHON}"
py="${2:-}"
fail=0
if ! command -v java >/dev/null 2>&1; then
  echo "ERROR: java not found. Spark 4.1 needs Java 17 or 21: apt-get install openjdk-17-jre-headless (or set JAVA_HOME and PATH)." >&2
  fail=1
else
  major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
  if [ -z "$major" ] || [ "$major" -lt 17 ]; then
    echo "ERROR: java is version '${major:-unknown}'; Spark 4.1 needs Java 17 or 21: apt-get install openjdk-17-jre-headless." >&2
    fail=1
  fi
fi
if [ -z "$py" ] || ! "$py" -c "import sys; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$want' else 1)" >/dev/null 2>&1; then
  echo "ERROR: Python $want not found (looked for python$want on PATH and ~/.pyenv/versions/$want*)." >&2
  echo "       Install it (pyenv install $want, or apt-get install python$want python$want-venv) or run: make PYTHON_${want/./}=/path/to/python$want ..." >&2
  fail=1
fi
if ! ldconfig -p 2>/dev/null | grep -q 'libopenblas'; then
  # not fatal: Spark ALS still runs, on netlib's Java BLAS, several times slower
  echo "WARNING: no native BLAS (OpenBLAS) found; Spark ALS will be slow. Fix: make blas (apt-get install libopenblas0-pthread)." >&2
fi
exit $fail
