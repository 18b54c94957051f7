"""The parts of the spark-operator v1beta2 CRDs (sparkoperator.k8s.io) our manifests use, as JSON Schema.

Written from the operator's published CRD (charts/spark-operator-chart/crds, v1beta2): field names, types,
enums and required keys for the fields we set. additionalProperties is false where we set the object, so a
misspelt key (e.g. `restartpolicy`) fails here instead of being dropped silently by the API server.

``driver.template`` / ``executor.template`` are Kubernetes PodTemplateSpecs (the CRD keeps them as
preserve-unknown-fields objects and the operator hands them to Spark as pod template files); POD_TEMPLATE checks
the parts of a PodSpec we set, with the core/v1 field names.
"""

QUANTITY = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?([kmgtKMGT]i?|m)?$"}
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
VOLUME_MOUNTS = {"type": "array", "items": {"type": "object", "required": ["name", "mountPath"],
                                             "properties": {"name": {"type": "string"}, "mountPath": {"type": "string"}}}}

CAPABILITIES = {"type": "object", "additionalProperties": False,
                "properties": {"add": {"type": "array"}, "drop": {"type": "array", "items": {"type": "string"}}}}
SECCOMP = {"type": "object", "additionalProperties": False, "required": ["type"],
           "properties": {"type": {"enum": ["RuntimeDefault", "Localhost", "Unconfined"]},
                          "localhostProfile": {"type": "string"}}}
CONTAINER_SECURITY_CONTEXT = {
    "type": "object", "additionalProperties": False,
    "properties": {"runAsNonRoot": {"type": "boolean"}, "runAsUser": {"type": "integer"},
                   "runAsGroup": {"type": "integer"}, "readOnlyRootFilesystem": {"type": "boolean"},
                   "allowPrivilegeEscalation": {"type": "boolean"}, "privileged": {"type": "boolean"},
                   "capabilities": CAPABILITIES, "seccompProfile": SECCOMP},
}
POD_SECURITY_CONTEXT = {
    "type": "object", "additionalProperties": False,
    "properties": {"runAsNonRoot": {"type": "boolean"}, "runAsUser": {"type": "integer"},
                   "runAsGroup": {"type": "integer"}, "fsGroup": {"type": "integer"}, "seccompProfile": SECCOMP},
}
ENV_VAR = {
    "type": "object", "additionalProperties": False, "required": ["name"],
    "properties": {"name": {"type": "string"}, "value": {"type": "string"}, "valueFrom": {
        "type": "object", "additionalProperties": False,
        "properties": {"secretKeyRef": {"type": "object", "additionalProperties": False, "required": ["name", "key"],
                                        "properties": {"name": {"type": "string"}, "key": {"type": "string"},
                                                       "optional": {"type": "boolean"}}}}}},
}
CONTAINER = {
    "type": "object", "additionalProperties": False, "required": ["name"],
    "properties": {"name": {"type": "string"}, "image": {"type": "string"},
                   "command": {"type": "array", "items": {"type": "string"}},
                   "env": {"type": "array", "items": ENV_VAR}, "volumeMounts": VOLUME_MOUNTS,
                   "securityContext": CONTAINER_SECURITY_CONTEXT},
}
POD_VOLUME = {
    "type": "object", "additionalProperties": False, "required": ["name", "emptyDir"],
    "properties": {"name": {"type": "string"},
                   "emptyDir": {"type": "object", "additionalProperties": False,
                                "properties": {"sizeLimit": QUANTITY, "medium": {"type": "string"}}}},
}
POD_TEMPLATE = {
    "type": "object", "additionalProperties": False, "required": ["spec"],
    "properties": {"metadata": {"type": "object"}, "spec": {
        "type": "object", "additionalProperties": False, "required": ["containers"],
        "properties": {"automountServiceAccountToken": {"type": "boolean"},
                       "securityContext": POD_SECURITY_CONTEXT,
                       "initContainers": {"type": "array", "items": CONTAINER},
                       "containers": {"type": "array", "minItems": 1, "maxItems": 1, "items": CONTAINER},
                       "volumes": {"type": "array", "items": POD_VOLUME}}}},
}

DRIVER = {
    "type": "object", "additionalProperties": False,
    "properties": {"cores": {"type": "integer", "minimum": 1}, "coreLimit": {"type": "string"}, "memory": QUANTITY,
                   "serviceAccount": {"type": "string"}, "labels": LABELS, "volumeMounts": VOLUME_MOUNTS,
                   "template": POD_TEMPLATE},
}
EXECUTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {"instances": {"type": "integer", "minimum": 1}, "cores": {"type": "integer", "minimum": 1},
                   "memory": QUANTITY, "serviceAccount": {"type": "string"}, "labels": LABELS,
                   "volumeMounts": VOLUME_MOUNTS, "template": POD_TEMPLATE},
}

SPARK_APPLICATION_SPEC = {
    "type": "object", "additionalProperties": False,
    "required": ["driver", "executor", "sparkVersion", "type"],
    "properties": {
        "type": {"enum": ["Java", "Python", "Scala", "R"]},
        "pythonVersion": {"enum": ["2", "3"]},
        "mode": {"enum": ["cluster", "client", "in-cluster-client"]},
        "image": {"type": "string"},
        "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        "mainApplicationFile": {"type": "string"},
        "arguments": {"type": "array", "items": {"type": "string"}},
        "sparkVersion": {"type": "string"},
        "sparkConf": {"type": "object", "additionalProperties": {"type": "string"}},
        "restartPolicy": {
            "type": "object", "additionalProperties": False,
            "properties": {"type": {"enum": ["Never", "Always", "OnFailure"]},
                           "onFailureRetries": {"type": "integer", "minimum": 0},
                           "onFailureRetryInterval": {"type": "integer", "minimum": 1},
                           "onSubmissionFailureRetries": {"type": "integer", "minimum": 0},
                           "onSubmissionFailureRetryInterval": {"type": "integer", "minimum": 1}},
        },
        "timeToLiveSeconds": {"type": "integer", "minimum": 1},
        "driver": DRIVER,
        "executor": EXECUTOR,
        "volumes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
    },
}

METADATA = {
    "type": "object", "required": ["name"],
    "properties": {"name": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                   "namespace": {"type": "string"}, "labels": LABELS},
}

SPARK_APPLICATION = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {"apiVersion": {"const": "sparkoperator.k8s.io/v1beta2"}, "kind": {"const": "SparkApplication"},
                   "metadata": METADATA, "spec": SPARK_APPLICATION_SPEC},
}

SCHEDULED_SPARK_APPLICATION = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "sparkoperator.k8s.io/v1beta2"}, "kind": {"const": "ScheduledSparkApplication"},
        "metadata": METADATA,
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["schedule", "template"],
            "properties": {"schedule": {"type": "string"}, "timeZone": {"type": "string"},
                           "concurrencyPolicy": {"enum": ["Allow", "Forbid", "Replace"]},
                           "suspend": {"type": "boolean"},
                           "successfulRunHistoryLimit": {"type": "integer", "minimum": 1},
                           "failedRunHistoryLimit": {"type": "integer", "minimum": 1},
                           "template": SPARK_APPLICATION_SPEC},
        },
    },
}
