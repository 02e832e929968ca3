"""Python behind every UDF of codeintel-sql: one module per family, each with a ``REGISTRY``."""
