"""Zip the project's Python packages, for spark-submit's --py-files.

    python -m jobs.package_code --out dist/recsys-code.zip
    spark-submit --master spark://host:7077 --py-files dist/recsys-code.zip jobs/ingest.py ...

Optional: on a cluster master every job ships the same zip itself (jobs.shipping); the batch image has the
project installed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.shipping import build_zip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="dist/recsys-code.zip")
    args = parser.parse_args(argv)
    print(build_zip(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
