"""Feature stores: online (SQLite, Redis) and offline (Parquet in the lake)."""
