"""The library functions the jobs call: one module per step of the nightly flow.

Each step takes a Spark session, a ``lake.registry.Lake`` and typed options, reads and writes tables through
``lake``, and returns a typed result; ``flow.nightly`` chains them with the gates of ``validation``. May import
lake, transforms, models, validation, ``serving.snapshot`` (the snapshot contract that publish writes and
the service reads) and ``serving.storage`` (where snapshots live: a folder or object storage); never jobs or the
rest of serving.
"""
