"""Tests of the bank-file parsers (adapters.ingest)."""
