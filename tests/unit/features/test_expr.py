"""The expression language: parsing, errors, and identical results in DuckDB and Arrow."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickloop.features.expr import EVENT_COLUMNS, ExpressionError, check, parse
from clickloop.features.translate import evaluate, sql_string, to_sql

PROPS = pa.map_(pa.string(), pa.string())


def sql_col(ref: str) -> str:
    if ref.startswith("props."):
        return f"ev.props[{sql_string(ref[6:])}]"
    return f'ev."{ref}"'


def arrow_col(table: pa.Table):
    def get(ref: str) -> pa.Array:
        if ref.startswith("props."):
            return pc.map_lookup(
                table.column("props").combine_chunks(), pa.scalar(ref[6:]), "first"
            )
        return table.column(ref).combine_chunks()

    return get


CON = duckdb.connect()
CON.sql("SET TimeZone = 'UTC'")


def both(src: str, table: pa.Table) -> tuple[list, list]:
    node = check(parse(src), EVENT_COLUMNS)
    CON.register("t", table.append_column("_i", pa.array(range(table.num_rows))))
    got_sql = CON.sql(f"SELECT {to_sql(node, sql_col)} AS v FROM t ev ORDER BY _i")
    via_sql = got_sql.to_arrow_table().column("v").to_pylist()
    via_arrow = evaluate(node, arrow_col(table), table.num_rows).to_pylist()
    return via_sql, via_arrow


def events(rows: list[dict]) -> pa.Table:
    return pa.table({
        "type": pa.array([r.get("type") for r in rows], pa.string()),
        "user_id": pa.array([r.get("user_id") for r in rows], pa.string()),
        "ts": pa.array([r.get("ts") for r in rows], pa.timestamp("us", tz="UTC")),
        "props": pa.array([r.get("props") for r in rows], PROPS),
    })  # fmt: skip


# -- typed random expressions -----------------------------------------------------------

texts = st.sampled_from(["'x'", "'page_view'", "'12.5'", "'Ab%'", "''", "'it''s'", "'-3'"])
str_cols = st.sampled_from(["type", "user_id", "props.a", "props.b"])
nums = st.sampled_from(["0", "1", "2.5", "12.5", "-3", "1e3", ".5", "100"])


def _s(children):
    return st.one_of(
        st.tuples(st.sampled_from(["lower", "upper"]), children).map(lambda x: f"{x[0]}({x[1]})"),
        st.tuples(children, children).map(lambda x: f"coalesce({x[0]}, {x[1]})"),
    )


STR = st.recursive(st.one_of(str_cols, texts), _s, max_leaves=3)


def _n(children):
    return st.one_of(
        st.tuples(children, st.sampled_from(["+", "-", "*", "/"]), children).map(
            lambda x: f"({x[0]} {x[1]} {x[2]})"
        ),
        children.map(lambda x: f"-{x}"),
        children.map(lambda x: f"abs({x})"),
        st.tuples(children, children).map(lambda x: f"coalesce({x[0]}, {x[1]})"),
    )


NUM = st.recursive(
    st.one_of(nums, STR.map(lambda s: f"num({s})"), STR.map(lambda s: f"length({s})"),
              st.sampled_from(["hour(ts)", "dow(ts)", "props.a"])),
    _n, max_leaves=4,
)  # fmt: skip
CMP = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])
BOOL_LEAF = st.one_of(
    st.sampled_from(["true", "false", "type IS NULL", "props.a IS NOT NULL"]),
    st.tuples(STR, CMP, STR).map(lambda x: f"{x[0]} {x[1]} {x[2]}"),
    st.tuples(NUM, CMP, NUM).map(lambda x: f"{x[0]} {x[1]} {x[2]}"),
    st.tuples(STR, st.sampled_from(["IN", "NOT IN"])).map(lambda x: f"{x[0]} {x[1]} ('x', 'a')"),
    st.tuples(NUM, st.sampled_from(["IN", "NOT IN"])).map(lambda x: f"{x[0]} {x[1]} (1, 2.5)"),
    st.tuples(STR, st.sampled_from(["LIKE", "NOT LIKE"]),
              st.sampled_from(["'a%'", "'%5'", "'_'", "'%\\_%'", "'it''%'"])).map(
        lambda x: f"{x[0]} {x[1]} {x[2]}"),
    st.tuples(st.sampled_from(["contains", "starts_with", "ends_with"]), STR).map(
        lambda x: f"{x[0]}({x[1]}, 'a')"),
    st.tuples(NUM, NUM, NUM).map(lambda x: f"{x[0]} BETWEEN {x[1]} AND {x[2]}"),
)  # fmt: skip
BOOL = st.recursive(
    BOOL_LEAF,
    lambda c: st.one_of(
        st.tuples(c, st.sampled_from(["AND", "OR"]), c).map(lambda x: f"({x[0]} {x[1]} {x[2]})"),
        c.map(lambda x: f"NOT ({x})"),
        st.tuples(c, c).map(lambda x: f"({x[0]}) = ({x[1]})"),
    ),
    max_leaves=4,
)
EXPR = st.one_of(BOOL, NUM, STR, st.tuples(BOOL, NUM, NUM).map(
    lambda x: f"if({x[0]}, {x[1]}, {x[2]})"))  # fmt: skip

prop_values = st.one_of(
    st.none(),
    st.sampled_from(["12.5", "x", "-3", "1e3", "a%b", "", "0", "it's", "Ab", "1e400", " 7", "NaN"]),
)
event_rows = st.lists(st.fixed_dictionaries({
    "type": st.one_of(st.none(), st.sampled_from(["page_view", "click", "x", "Ab%c"])),
    "user_id": st.sampled_from(["u1", "a", "12.5"]),
    "ts": st.sampled_from([datetime(2026, 11, 1, h, tzinfo=UTC) for h in (0, 9, 23)]
                          + [datetime(2026, 11, 4, 5, tzinfo=UTC)]),
    "props": st.one_of(st.none(), st.fixed_dictionaries({}, optional={"a": prop_values,
                                                                      "b": prop_values}).map(
        lambda d: [(k, v) for k, v in d.items() if v is not None])),
}), min_size=1, max_size=8)  # fmt: skip


@given(EXPR, event_rows)
def test_duckdb_and_arrow_agree_on_random_expressions(src: str, rows: list[dict]) -> None:
    via_sql, via_arrow = both(src, events(rows))
    assert via_sql == via_arrow, src


# -- behaviour a user sees ---------------------------------------------------------------


def test_property_values_read_as_numbers_in_numeric_context() -> None:
    table = events([{"props": [("price", "12.5")]}, {"props": [("price", "abc")]}, {}])
    assert both("props.price > 10", table) == ([True, None, None], [True, None, None])
    assert both("props.price * 2", table)[1] == [25.0, None, None]


def test_null_logic_and_division_by_zero() -> None:
    table = events([{"type": "click", "props": [("n", "0")]}])
    assert both("1 / num(props.n)", table)[1] == [None]
    assert both("props.missing = 'x' OR type = 'click'", table)[1] == [True]
    assert both("props.missing IN ('x')", table)[1] == [None]


def test_time_functions_read_utc() -> None:
    table = events([{"ts": datetime(2026, 11, 2, 23, 30, tzinfo=UTC)}])  # a Monday
    assert both("hour(ts)", table) == ([23.0], [23.0])
    assert both("dow(ts)", table) == ([1.0], [1.0])
    assert both("ts >= '2026-11-02T12:00:00Z'", table) == ([True], [True])


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("tpye = 'click'", "unknown column 'tpye'; did you mean 'type'"),
        ("type = ", "expected a value"),
        ("type = 'click' AND", "expected a value"),
        ("lowr(type)", "did you mean lower()"),
        ("type LIKE 3", "quoted pattern"),
        ("ts + 1", "not a number"),
        ("NOT type", "needs a true/false"),
        ("type = 'a' 'b'", "unexpected"),
        ("type = 'a' ; drop table x", "unexpected character ';'"),
        ("type IN (user_id)", "literal values"),
    ],
)
def test_bad_expressions_say_what_and_where(src: str, message: str) -> None:
    with pytest.raises(ExpressionError) as err:
        check(parse(src), EVENT_COLUMNS)
    assert message in str(err.value)


def test_string_literals_cannot_break_out_of_sql() -> None:
    table = events([{"type": "x'); DROP TABLE t; --"}])
    src = "type = 'x''); DROP TABLE t; --'"
    assert both(src, table) == ([True], [True])
