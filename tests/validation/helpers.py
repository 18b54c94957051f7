"""Helpers for the gate tests: small generated logs, and nightly's steps with the gates around them.

``run_gated_nightly`` is what jobs.nightly does once the gates are wired in: the gates of jobs.validate.gate_step
before and after each step of nightly.step_args, stopping at the first GateFailed. ``doctor`` lets a test
damage what a step wrote before the gate after it looks.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from jobs import generate_logs, nightly, validate
from jobs.validate import GateOptions

N = 5
ALS_FLAGS = ["--rank", "4", "--max-iter", "3", "--reg-param", "0.05"]


def write_logs(spark, folder: Path, *, seed: int, ratings: int = 1500, fault_rate: float = 0.01) -> str:
    args = generate_logs.build_parser().parse_args(
        ["--output", str(folder), "--users", "40", "--items", "150", "--ratings", str(ratings), "--clusters", "3",
         "--fault-rate", str(fault_rate), "--duplicate-rate", "0.01", "--files", "1", "--seed", str(seed)])
    generate_logs.run(spark, args)
    return str(folder)


def run_gated_nightly(spark, lake: str, logs: str, model_version: str, *, options: GateOptions | None = None,
                      doctor=None) -> dict:
    """nightly's steps with the gates around them; returns {step or "gate:<stage>": summary or GateResult}."""
    args = nightly.build_parser().parse_args(
        ["--lake", lake, "--input", logs, "--format", "movielens", "--n", str(N), "--model-version", model_version,
         *ALS_FLAGS])
    gate_kwargs = dict(lake=lake, model_version=model_version, n=N, options=options or GateOptions())
    done: dict = {}
    for name, module, argv in nightly.step_args(args):
        if name in ("score", "publish"):
            argv = argv + ["--model-version", model_version]
        for result in validate.gate_step(spark, "before", name, step_argv=argv, **gate_kwargs):
            done[f"gate:{result.stage}"] = result
        done[name] = module.run(spark, module.build_parser().parse_args(argv))
        if doctor is not None:
            doctor(name)
        for result in validate.gate_step(spark, "after", name, step_argv=argv, step_result=done[name], **gate_kwargs):
            done[f"gate:{result.stage}"] = result
    return done


def folder_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (to prove a snapshot was not touched)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
