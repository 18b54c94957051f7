"""Helpers for the gate tests: small generated logs, and nightly's steps with the gates after them.

``run_gated_nightly`` is what jobs.nightly does with the gates wired in: ingest -> build_training -> train ->
score -> publish, each followed by validation.gates.gates_after, stopping at the first GateFailed. ``doctor``
lets a test damage what a step wrote before the gate after it looks.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from flow.ingest import IngestOptions, ingest
from jobs import build_training, generate_logs, publish, score, train
from lake.registry import Lake
from validation.gates import GateOptions, gates_after

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
    """nightly's steps with the gates after them; returns {step or "gate:<stage>": summary or GateResult}."""
    lake_flag = ["--lake", lake]
    steps = [("build_training", build_training, lake_flag + ["--mode", "implicit"]),
             ("train", train, lake_flag + ALS_FLAGS + ["--model-version", model_version]),
             ("score", score, lake_flag + ["--n", str(N), "--model-version", model_version]),
             ("publish", publish, lake_flag + ["--model-version", model_version])]
    ingest_options = IngestOptions()
    gate_kwargs = dict(options=options or GateOptions(), model_version=model_version, n=N)
    done: dict = {"ingest": ingest(spark, Lake(lake), logs, "movielens", ingest_options)}
    _after(spark, "ingest", lake, done, doctor, ingest_summary=done["ingest"], ingest_options=ingest_options,
           fmt="movielens", **gate_kwargs)
    for name, module, argv in steps:
        done[name] = module.run(spark, module.build_parser().parse_args(argv))
        _after(spark, name, lake, done, doctor, **gate_kwargs)
    return done


def _after(spark, step: str, lake: str, done: dict, doctor, **gate_kwargs) -> None:
    if doctor is not None:
        doctor(step)
    for result in gates_after(spark, step, Lake(lake), **gate_kwargs):
        done[f"gate:{result.stage}"] = result


def folder_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (to prove a snapshot was not touched)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
