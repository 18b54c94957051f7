"""Spark batch recommender: Delta lake ingest, ALS training, top-N tables, Seldon lookups.

Two environments, because their pins conflict (see README): install with the extra that matches.
Exact, tested versions live in requirements/*.lock; the ranges here say what the code needs.
"""
from setuptools import find_packages, setup

BATCH = [
    "pyspark>=4.1,<4.2",
    "delta-spark==4.4.0",
    "great-expectations[spark]>=1.24,<1.25",
    "pandas>=2.2,<3",
    "pyarrow>=15",
    "numpy",
    "numba>=0.61",
    "threadpoolctl>=3",
    "kfp==2.17.0",
    "pyyaml",
]
SERVING = [
    "seldon-core==1.19.0",
    "numpy<2",
    "pyarrow>=15,<26",
    "swagger-ui-bundle==1.1.0",
]
DEV = ["pytest", "requests", "schemathesis==4.32.5"]

setup(
    name="spark-recommender",
    version="0.1.0",
    description="Spark batch recommender: Delta ingest, MLlib ALS, precomputed top-N, Seldon Core lookups",
    python_requires=">=3.12",
    packages=find_packages(include=["jobs", "jobs.*", "transforms", "transforms.*", "models", "models.*",
                                    "validation", "validation.*", "lake", "lake.*", "flow", "flow.*",
                                    "serving", "serving.*", "deploy", "deploy.*"]),
    install_requires=[],
    extras_require={"batch": BATCH, "serving": SERVING, "dev": DEV},
)
