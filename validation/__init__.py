"""Data-quality gates: great-expectations suites per stage, drift checks against the last good run, a gate runner.

    suites.py   the expectations of each stage, in code
    drift.py    one-pass table profiles and their comparison with the previous successful run
    runner.py   great-expectations plumbing: an ephemeral context, Spark batches, Data Docs
    gate.py     runs a stage's targets through suite + drift, returns a GateResult (validation/report.py)

The lake-facing side (which tables a stage reads, the meta/validation_runs table, JSON reports, exit codes)
lives in jobs/validate.py.
"""

# The stages a gate can check, in pipeline order.
STAGES = ("raw", "silver", "training", "recommendations", "snapshot")
