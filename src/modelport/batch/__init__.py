"""Batch scoring: a CSV or Parquet file through one version, chunk by chunk (``scoring``), and a version as a Spark pandas UDF (``spark``)."""
