"""The lookup service: the snapshot contract, the look-ups over a loaded snapshot, and the Seldon Core wrapper.

* snapshot: the contract between batch and serving (LATEST, the version folders, the manifest and its checks);
  the batch's publish step writes snapshots with it, the service reads them with it.
* ids: the id contract (normal form, length, forbidden characters) that ingest, build_training, the snapshot check
  and the service all apply.
* lookup, snapshot_cache, reloader: load a snapshot into arrays, memory-map them from a per-pod cache, and swap to a
  new snapshot in the background only once it is verified and loaded.
* api, openapi, service_metrics: the request/answer format and its limits, the OpenAPI document, the counters.
* recommender_service: the Seldon Core wrapper; serve: start it (or, from another venv, run it as a child process);
  client: REST and gRPC look-ups against a running service.

Imports: the standard library, numpy and pyarrow; seldon-core (with flask, protobuf, swagger-ui-bundle) in the
wrapper (recommender_service) and the gRPC client only. Never pyspark, never jobs, models, flow, lake or
validation: this package runs in the serving venv and image, which have none of them.
"""
