"""The ``statement-router`` command line (typer)."""
