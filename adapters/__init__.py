"""Adapters: the edges of the pipeline (bank-file ingestion, partner connectors, the broker)."""
