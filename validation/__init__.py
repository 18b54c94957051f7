"""Data-quality gates: great-expectations suites per stage, drift checks against the last good run, the gate engine.

    gates.py     the engine: GateOptions, run_gate (one stage), gates_after (the gates after a nightly step)
    stages.py    what each stage checks: its targets, built from the lake (raw, silver, training, ...)
    rollback.py  what a failed gate undoes: silver RESTORE for a failed ingest run, LATEST back to the last good
    history.py   meta/validation_runs: one row per gate run, the drift baselines (previous successes)
    gate.py      runs a stage's targets through suite + drift, returns a GateResult (report.py)
    suites.py    the expectations of each stage, in code
    drift.py     one-pass table profiles and their comparison with the previous successful run
    runner.py    great-expectations plumbing: an ephemeral context, Spark batches, Data Docs
    report.py    GateResult, CheckResult, GateFailed and the JSON report

What it may import: lake (storage), flow (ingest's options and readers, the model registry), transforms, models
and serving.snapshot; never jobs/ (jobs/validate.py is the command line over gates.run_gate).
"""

# The stages a gate can check, in pipeline order.
STAGES = ("raw", "silver", "training", "recommendations", "snapshot")
