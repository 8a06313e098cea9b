import io
import json
import logging

from clickloop import logs


def test_json_lines_carry_extra_fields_and_mask_secrets():
    stream = io.StringIO()
    logs.configure("json", "DEBUG", stream=stream)
    log = logging.getLogger("clickloop.test")
    log.info(
        "connected to %s",
        "postgresql://app:hunter2@db:5432/x",
        extra={"rows": 12, "api_token": "abc"},
    )
    record = json.loads(stream.getvalue().strip())
    assert record["level"] == "info"
    assert record["logger"] == "clickloop.test"
    assert record["rows"] == 12
    assert record["api_token"] == "***"
    assert "hunter2" not in stream.getvalue()
    assert record["message"] == "connected to postgresql://app:***@db:5432/x"


def test_console_lines_are_readable_and_configure_is_idempotent():
    stream = io.StringIO()
    logs.configure("console", "INFO", stream=stream)
    logs.configure("console", "INFO", stream=stream)
    logging.getLogger("clickloop.x").warning("disk at %d%%", 91, extra={"path": "/data"})
    logging.getLogger("clickloop.x").debug("hidden")
    lines = stream.getvalue().strip().splitlines()
    assert len(lines) == 1
    assert "warning" in lines[0] and "disk at 91%" in lines[0] and "path=/data" in lines[0]
