"""Helpers for testing clickloop and projects built on it (real servers on loopback)."""
