"""Thin entry points: each job parses its flags, builds the session, calls one ``flow`` function, prints the result.

Every job runs as ``python -m jobs.<name>``, as ``spark-submit jobs/<name>.py`` and as a SparkApplication. May
import everything else; never another job. ``cli`` (shared flags), ``spark_session`` (the session factory),
``shipping`` (the project's code for cluster executors), ``package_code`` and ``delta_jars`` are the jobs'
support, not jobs.
"""
