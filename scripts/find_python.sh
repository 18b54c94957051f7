#!/usr/bin/env bash
# Prints the path of a working Python of the version given (e.g. 3.13), or nothing. pyenv shims can exist without
# working, so every candidate is run, not just found. $PYTHON_<MAJOR><MINOR> (e.g. PYTHON_313) is tried first.
want="${1:?usage: find_python.sh MAJOR.MINOR}"
override_var="PYTHON_${want/./}"
for candidate in "${!override_var:-}" $(ls -d "$HOME"/.pyenv/versions/"$want"*/bin/python 2>/dev/null | sort -rV) \
                 "/usr/local/bin/python$want" "/usr/bin/python$want" "$(command -v "python$want" 2>/dev/null)"; do
  [ -n "$candidate" ] || continue
  if "$candidate" -c "import sys, venv; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$want' else 1)" >/dev/null 2>&1; then
    echo "$candidate"
    exit 0
  fi
done
exit 0
