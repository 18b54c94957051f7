"""Deployment: values.yaml (the one source of names) and the generators that read it (manifests.py writes k8s/:
SparkApplications from spark_apps.py and RBAC from rbac.py, and seldon/: the SeldonDeployment from
seldon_deployment.py; pods.py holds the pod hardening they share), the Kubeflow pipeline (kubeflow/), the
Dockerfiles and the Spark image's entrypoint.

The lookup service and the snapshot contract live in the serving package, not here.
"""
