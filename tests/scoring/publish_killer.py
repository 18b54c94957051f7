"""Run flow.publish in this process and die (os._exit, no cleanup, no finally) right after one of its steps.

    python -m tests.scoring.publish_killer --lake LAKE --model-version V --kill-after STEP [--force]

Exits with KILLED when the process was killed at STEP, 0 when publish finished without reaching it. Used by
tests/scoring/test_publish.py to leave the snapshot root exactly as a crash at that instant would.
"""
from __future__ import annotations

import argparse
import os
import sys

KILLED = 77


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lake", required=True)
    parser.add_argument("--model-version", required=True)
    parser.add_argument("--kill-after", required=True)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)

    from flow.publish import PublishOptions, publish
    from jobs.spark_session import build_spark
    from lake.registry import Lake
    from tests.conftest import TEST_SPARK_CONF

    spark = build_spark("publish-killer", master="local[1]", log_level="ERROR",
                        conf={**TEST_SPARK_CONF, "spark.sql.shuffle.partitions": "1"})

    def kill_after(step: str) -> None:
        if step == args.kill_after:
            print(f"killed after {step}", flush=True)
            os._exit(KILLED)

    publish(spark, Lake(args.lake), PublishOptions(model_version=args.model_version, force=args.force),
            on_step=kill_after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
