import pytest

from clickloop import errors as e


@pytest.mark.parametrize(
    ("cls", "builtin", "status", "exit_code"),
    [
        (e.ConfigError, ValueError, 500, 2),
        (e.UsageError, ValueError, 400, 2),
        (e.InvalidInputError, ValueError, 400, 1),
        (e.NotFoundError, LookupError, 404, 1),
        (e.ConflictError, RuntimeError, 409, 1),
        (e.AuthError, PermissionError, 401, 1),
        (e.PayloadTooLargeError, ValueError, 413, 1),
        (e.BackendUnavailableError, ConnectionError, 503, 1),
        (e.DataError, RuntimeError, 500, 1),
    ],
)
def test_each_error_is_a_clickloop_error_and_its_builtin(cls, builtin, status, exit_code):
    err = cls("model 'ctr' not found", hint="train one first", model="ctr")
    assert isinstance(err, e.ClickloopError)
    assert isinstance(err, builtin)
    assert err.http_status == status
    assert err.exit_code == exit_code
    assert err.to_dict()["details"] == {"model": "ctr"}
    assert "hint: train one first" in str(err)


def test_overloaded_carries_retry_after():
    err = e.OverloadedError("bus is full", retry_after=2.5)
    assert err.http_status == 503
    assert err.retry_after == 2.5
    assert err.to_dict()["details"]["retry_after"] == 2.5


def test_require_names_the_extra_to_install():
    with pytest.raises(e.MissingExtraError) as info:
        e.require("clickloop_no_such_module", "kafka", feature="the Kafka bus")
    assert isinstance(info.value, ImportError)
    assert "pip install 'clickloop[kafka]'" in str(info.value)
    assert info.value.exit_code == e.EXIT_USAGE
