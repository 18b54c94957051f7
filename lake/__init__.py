"""The one adapter to storage and to Spark's JVM.

Delta reads, writes and MERGEs (``lake.tables``), table addresses (``lake.registry``), the Hadoop FileSystem
(``lake.fs``) and every private JVM handle (``lake.jvm``) live here and nowhere else. May import pyspark and
delta; never jobs, flow, models, validation or serving.
"""
