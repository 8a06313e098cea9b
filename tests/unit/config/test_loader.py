from datetime import timedelta
from pathlib import Path

import pytest

from clickloop.config import (
    KafkaBusConfig,
    LocalBusConfig,
    ProjectConfig,
    RedisOnlineConfig,
    load_config,
)
from clickloop.config.template import PROJECT_YAML
from clickloop.errors import ConfigError


def fails(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config("proj/clickloop.yaml", text=text, env=env or {})
    assert info.value.exit_code == 2
    return str(info.value)


def test_empty_config_is_all_embedded_defaults():
    cfg = load_config(text="", env={})
    assert isinstance(cfg, ProjectConfig)
    assert isinstance(cfg.bus, LocalBusConfig)
    assert cfg.lake.type == "local"
    assert cfg.stores.online.type == "sqlite"
    assert cfg.stores.metadata.type == "sqlite"
    assert cfg.ingest.dedupe_horizon == timedelta(days=7)


def test_backend_sections_default_their_type():
    cfg = load_config(text="bus: {partitions: 8}\nstores: {online: {}}", env={})
    assert cfg.bus.type == "local" and cfg.bus.partitions == 8
    assert cfg.stores.online.type == "sqlite"


def test_discriminated_union_picks_the_backend():
    cfg = load_config(
        text="bus: {type: kafka, bootstrap: 'k1:9092'}\n"
        "stores: {online: {type: redis, url: 'redis://:pw@h:6379/0'}}",
        env={},
    )
    assert isinstance(cfg.bus, KafkaBusConfig)
    assert isinstance(cfg.stores.online, RedisOnlineConfig)
    assert "pw" not in repr(cfg.stores.online)  # SecretStr
    assert cfg.stores.online.url.get_secret_value() == "redis://:pw@h:6379/0"


def test_misspelt_key_names_file_line_path_and_closest_key():
    msg = fails("project: x\nbus:\n  type: kafka\n  bootstrp: 'k:9092'\n")
    assert "proj/clickloop.yaml" in msg
    assert "line 4: bus.bootstrp: unknown key; did you mean 'bootstrap'?" in msg
    assert "line 2: bus.bootstrap: required key is missing" in msg


def test_unknown_top_level_section_suggests_the_right_one():
    assert "loging: unknown key; did you mean 'logging'?" in fails("loging: {level: INFO}\n")


def test_unknown_backend_type_lists_valid_types():
    msg = fails("lake: {type: fspec, root: 's3://b'}\n")
    assert "lake: unknown type 'fspec'; did you mean 'fsspec'?" in msg
    assert "local, fsspec" in msg


def test_nested_errors_point_into_lists_and_maps():
    msg = fails(
        "features:\n  acts:\n    entity: user_id\n    aggregate:\n"
        "      - {op: count, windows: [1h]}\n      - {op: count, windows: [7x]}\n"
        "sources:\n  p:\n    type: files\n    path: x.csv\n    columns: {usr_id: uid}\n"
    )
    assert "line 6: features.acts.aggregate[1].windows[0]" in msg
    assert "'7x'" in msg
    assert "sources.p.columns.usr_id: unknown key; did you mean 'user_id'?" in msg


def test_value_errors_say_what_was_expected():
    msg = fails("serving: {port: abc}\n")
    assert "serving.port: input should be a valid integer" in msg and "'abc'" in msg


def test_model_level_rules_are_reported():
    msg = fails("features:\n  f:\n    entity: user_id\n    aggregate: [{op: sum}]\n")
    assert "op 'sum' needs a 'column'" in msg
    msg = fails(
        "experiments:\n  e:\n    variants: {a: {model: m@x}, b: {model: m@y}}\n"
        "    weights: [0.7, 0.7]\n    metrics: {primary: ctr}\n"
    )
    assert "weights must sum to 1" in msg


def test_env_expansion_with_default_and_missing_variable():
    cfg = load_config(
        text="stores: {online: {type: redis, url: '${R_URL}'}}\n"
        "serving: {host: '${HOST:-0.0.0.0}'}",
        env={"R_URL": "redis://h:1/0"},
    )
    assert cfg.stores.online.url.get_secret_value() == "redis://h:1/0"
    assert cfg.serving.host == "0.0.0.0"
    msg = fails("stores:\n  online: {type: redis, url: '${R_URL}'}\n")
    assert "line 2: stores.online.url: environment variable R_URL is not set" in msg


def test_env_overrides_typed_values_and_nested_keys():
    env = {
        "CLICKLOOP_BUS__TYPE": "kafka",
        "CLICKLOOP_BUS__BOOTSTRAP": "k1:9092,k2:9092",
        "CLICKLOOP_SERVING__PORT": "9090",
        "CLICKLOOP_PROJECT_DIR": "/ignored",
    }
    cfg = load_config(text="serving: {port: 8080}", env=env)
    assert cfg.bus.type == "kafka" and cfg.bus.bootstrap == "k1:9092,k2:9092"
    assert cfg.serving.port == 9090


def test_a_misspelt_override_names_the_environment_variable():
    msg = fails("", env={"CLICKLOOP_SERVNG__PORT": "1"})
    assert (
        "environment variable CLICKLOOP_SERVNG__PORT: servng: unknown key; "
        "did you mean 'serving'?" in msg
    )


def test_yaml_syntax_error_has_line_and_column():
    msg = fails("bus: {type: local\nlake: x\n")
    assert "proj/clickloop.yaml at line" in msg and "not valid YAML" in msg


def test_top_level_must_be_a_mapping():
    assert "top level must be a mapping" in fails("- a\n- b\n")


def test_missing_file_says_how_to_create_one(tmp_path: Path):
    with pytest.raises(ConfigError, match="clickloop init"):
        load_config(tmp_path / "nope.yaml", env={})


def test_the_init_template_is_valid():
    cfg = load_config(text=PROJECT_YAML.format(name="shop"), env={})
    assert cfg.project == "shop"
    assert cfg.sources["web"].type == "collector"
    assert cfg.urls.dictionaries["shop_categories"]["1"] == "clothes"
    assert cfg.features["user_activity"].aggregate[0].windows == ["1h", "1d", "7d"]
    assert cfg.models["ctr"].split.test == pytest.approx(0.2)


def test_client_options_mask_secret_looking_keys():
    cfg = load_config(
        text="bus: {type: kafka, bootstrap: 'h:1', "
        "client: {'ssl.key.password': 'pw', 'linger.ms': 5}}",
        env={},
    )
    assert "pw" not in repr(cfg.bus.client)
    from clickloop.config.base import reveal

    assert reveal(cfg.bus.client) == {"ssl.key.password": "pw", "linger.ms": 5}


def test_url_rules_must_reference_defined_dictionaries():
    msg = fails(
        "urls:\n  rules:\n    - pattern: 'https://a.com/x/:c'\n"
        "      fields: {c: {dictionary: cats}}\n"
    )
    assert "no dictionary named 'cats'" in msg
