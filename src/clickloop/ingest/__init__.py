"""Acquisition: batch import, the stream ingester and the HTTP collector."""
