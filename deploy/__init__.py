"""Serving side: snapshot format, Seldon Core wrapper, Kubernetes manifests. No pyspark imports here."""
