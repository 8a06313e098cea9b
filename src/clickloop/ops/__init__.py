"""Operations: health checks (doctor), pipelines, scheduling, metrics, alerts."""
