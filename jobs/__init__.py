"""Thin entry points: each job parses flags, builds the session, reads, calls library code, writes.

Every job runs as ``python -m jobs.<name>``, as ``spark-submit jobs/<name>.py`` and as a SparkApplication.
"""
