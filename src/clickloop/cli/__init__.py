"""The ``clickloop`` command line (typer)."""
