#!/usr/bin/env bash
# Prints the path of a working Python 3.12 interpreter, or nothing. pyenv shims can exist without working,
# so every candidate is run, not just found.
for candidate in "${PY312:-}" $(ls -d "$HOME"/.pyenv/versions/3.12*/bin/python 2>/dev/null | sort -rV) \
                 /usr/local/bin/python3.12 /usr/bin/python3.12 "$(command -v python3.12 2>/dev/null)"; do
  [ -n "$candidate" ] || continue
  if "$candidate" -c 'import sys, venv; sys.exit(0 if sys.version_info[:2] == (3, 12) else 1)' >/dev/null 2>&1; then
    echo "$candidate"
    exit 0
  fi
done
exit 0
