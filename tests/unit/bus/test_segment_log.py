"""The local log's file format, writer and reader: torn tails, rolling, retention, index."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickloop.bus.log import PartitionReader, PartitionWriter, read_head
from clickloop.bus.segment import (
    HEADER_SIZE,
    MAX_BATCH_BYTES,
    decode,
    encode,
    list_segments,
    parse_header,
    segment_name,
)
from clickloop.errors import DataError, PayloadTooLargeError, UsageError

records_st = st.lists(
    st.tuples(st.none() | st.binary(max_size=20), st.binary(max_size=300)), max_size=60
)


def writer(path: Path, **kw) -> PartitionWriter:
    kw.setdefault("segment_bytes", 64 << 20)
    kw.setdefault("retention_ms", 7 * 86_400_000)
    return PartitionWriter(path, **kw)


def read_all(path: Path, start: int = 0) -> list:
    r = PartitionReader(path, "t", 0, start)
    try:
        out = []
        while got := r.read(1000):
            out += got
        return out
    finally:
        r.close()


@given(records_st)
def test_encode_decode_round_trip(records):
    batches = encode(records)
    got = []
    base = 0
    for b in batches:
        b.seal(base, 1234)
        head = parse_header(bytes(b.header) + b.body)
        assert head is not None and head.count == b.count
        got += decode("t", 0, head, b.body)
        base += b.count
    assert [(m.key, m.value) for m in got] == [(k, v) for k, v in records]
    assert [m.offset for m in got] == list(range(len(records)))


def test_records_are_grouped_into_bounded_batches():
    recs = [(None, b"x" * 1000)] * 3000
    batches = encode(recs)
    assert len(batches) > 1
    assert all(len(b.body) <= MAX_BATCH_BYTES + 1100 for b in batches)
    assert sum(b.count for b in batches) == 3000
    assert [b.count for b in encode(recs[:5], one_per_batch=True)] == [1] * 5


@pytest.mark.parametrize("bad", [["ab"], [("k", b"v")], [(b"k", "v")], [(b"k",)], [None]])
def test_records_that_are_not_byte_pairs_are_a_usage_error(bad):
    with pytest.raises(UsageError, match="pairs of bytes"):
        encode(bad)


def test_oversized_record_is_refused():
    with pytest.raises(PayloadTooLargeError, match="exceeds the limit"):
        encode([(None, b"\0" * ((64 << 20) + 1))])


def test_header_checksum_catches_any_flipped_byte():
    (b,) = encode([(b"k", b"value")])
    b.seal(7, 99)
    raw = bytes(b.header)
    assert parse_header(raw) is not None
    for i in range(HEADER_SIZE):
        broken = bytearray(raw)
        broken[i] ^= 0x01
        assert parse_header(bytes(broken)) is None, i


def test_append_then_read_back_with_dense_offsets(tmp_path):
    w = writer(tmp_path)
    first, nxt, _ = w.append(encode([(b"a", b"1"), (None, b"2")]))
    assert (first, nxt) == (0, 2)
    first, nxt, upto = w.append(encode([(b"c", b"3")]))
    w.sync(upto)
    assert (first, nxt) == (2, 3)
    got = read_all(tmp_path)
    assert [(m.offset, m.key, m.value) for m in got] == [
        (0, b"a", b"1"),
        (1, None, b"2"),
        (2, b"c", b"3"),
    ]
    assert read_head(tmp_path)[2] == 3
    assert [m.offset for m in read_all(tmp_path, start=1)] == [1, 2]
    w.close()


def test_reader_serves_new_records_as_they_arrive(tmp_path):
    w = writer(tmp_path)
    r = PartitionReader(tmp_path, "t", 0, 0)
    assert r.read(10) == []
    w.append(encode([(None, b"a")]))
    assert [m.value for m in r.read(10)] == [b"a"]
    assert r.read(10) == []
    w.append(encode([(None, b"b"), (None, b"c")]))
    assert [m.value for m in r.read(1)] == [b"b"]
    assert [m.value for m in r.read(10)] == [b"c"]
    r.close()
    w.close()


def _segment(path: Path) -> Path:
    return path / segment_name(list_segments(path)[-1])


def test_torn_tail_is_never_served_and_is_truncated_by_the_next_writer(tmp_path):
    w = writer(tmp_path)
    w.append(encode([(b"k", b"kept-%d" % i) for i in range(10)]))
    w.close()
    seg = _segment(tmp_path)
    good_size = seg.stat().st_size
    (torn,) = encode([(b"k", b"torn" * 100)])
    torn.seal(10, 1)
    with seg.open("ab") as f:  # a writer killed half-way through its pwrite
        f.write((bytes(torn.header) + torn.body)[:150])
    r = PartitionReader(tmp_path, "t", 0, 0)
    assert [m.value for m in r.read(100)] == [b"kept-%d" % i for i in range(10)]
    assert r.read(100) == []  # the torn batch is not a record
    w2 = writer(tmp_path)
    assert seg.stat().st_size == good_size
    first, _, _ = w2.append(encode([(b"k", b"after")]))
    assert first == 10
    assert [m.value for m in r.read(100)] == [b"after"]
    r.close()
    w2.close()


def test_garbage_with_a_valid_looking_length_is_not_served(tmp_path):
    w = writer(tmp_path)
    w.append(encode([(None, b"ok")]))
    seg = _segment(tmp_path)
    with seg.open("ab") as f:
        f.write(os.urandom(4000))
    assert [m.value for m in read_all(tmp_path)] == [b"ok"]
    assert w.recover() == 1
    w.append(encode([(None, b"next")]))
    assert [m.value for m in read_all(tmp_path)] == [b"ok", b"next"]
    w.close()


def test_batch_written_but_head_not_moved_is_kept(tmp_path):
    """A writer killed between its data write and its head write: the batch is valid, keep it."""
    w = writer(tmp_path)
    w.append(encode([(None, b"a")]))
    head = (tmp_path / "head").read_bytes()
    w.append(encode([(None, b"b")]))
    (tmp_path / "head").write_bytes(head)
    w2 = writer(tmp_path)
    first, _, _ = w2.append(encode([(None, b"c")]))
    assert first == 2
    assert [m.value for m in read_all(tmp_path)] == [b"a", b"b", b"c"]
    w.close()
    w2.close()


def test_segments_roll_and_readers_follow(tmp_path):
    w = writer(tmp_path, segment_bytes=2000)
    for i in range(50):
        w.append(encode([(None, b"%03d" % i + b"." * 200)]))
    assert len(list_segments(tmp_path)) >= 5
    got = read_all(tmp_path)
    assert [m.offset for m in got] == list(range(50))
    assert [m.value[:3] for m in got] == [b"%03d" % i for i in range(50)]
    # seeking into the middle of a later segment uses the index
    assert [m.offset for m in read_all(tmp_path, start=37)] == list(range(37, 50))
    w.close()


def test_a_reader_at_the_end_of_a_segment_follows_the_roll(tmp_path):
    w = writer(tmp_path, segment_bytes=1000)
    r = PartitionReader(tmp_path, "t", 0, 0)
    seen = []
    for _ in range(30):
        w.append(encode([(None, b"x" * 300)]))
        seen += [m.offset for m in r.read(100)]
    assert seen == list(range(30))
    r.close()
    w.close()


def test_retention_deletes_old_sealed_segments_and_readers_skip_ahead(tmp_path):
    w = writer(tmp_path, segment_bytes=1000, retention_ms=300)
    for _ in range(10):
        w.append(encode([(None, b"x" * 600)]))
    before = list_segments(tmp_path)
    assert before[0] == 0 and len(before) >= 5
    time.sleep(0.4)
    w.append(encode([(None, b"y" * 600)]))  # rolls, then applies retention
    after = list_segments(tmp_path)
    assert after[0] > 0 and len(after) <= 2
    got = read_all(tmp_path, start=0)  # offset 0 is gone: resume at the oldest kept
    assert got and got[0].offset == after[0]
    assert got[-1].value == b"y" * 600
    w.close()


def test_corruption_inside_a_sealed_segment_is_an_error(tmp_path):
    w = writer(tmp_path, segment_bytes=1000)
    for _ in range(6):
        w.append(encode([(None, b"z" * 400)]))
    w.close()
    first = tmp_path / segment_name(0)
    data = bytearray(first.read_bytes())
    data[HEADER_SIZE + 20] ^= 0xFF  # flip a byte in the first batch's body
    first.write_bytes(bytes(data))
    r = PartitionReader(tmp_path, "t", 0, 0)
    with pytest.raises(DataError, match="corrupt"):
        r.read(10)
    r.close()


def test_concurrent_threads_share_one_writer(tmp_path):
    import threading

    w = writer(tmp_path)

    def work(n: int) -> None:
        for i in range(200):
            w.sync(w.append(encode([(b"t%d" % n, b"%d-%d" % (n, i))]))[2])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = read_all(tmp_path)
    assert [m.offset for m in got] == list(range(800))
    for n in range(4):
        mine = [m.value for m in got if m.key == b"t%d" % n]
        assert mine == [b"%d-%d" % (n, i) for i in range(200)]
    w.close()


def test_a_reader_inside_a_segment_deleted_by_retention_finishes_it_and_moves_on(tmp_path):
    w = writer(tmp_path, segment_bytes=1000, retention_ms=200)
    for i in range(6):
        w.append(encode([(None, b"%02d" % i + b"-" * 400)]))
    r = PartitionReader(tmp_path, "t", 0, 0)
    assert [m.offset for m in r.read(1)] == [0]
    time.sleep(0.3)
    w.append(encode([(None, b"99" + b"-" * 400)]))  # rolls and deletes the expired segments
    assert list_segments(tmp_path)[0] > 0
    rest = []
    while got := r.read(100):
        rest += got
    offsets = [m.offset for m in rest]
    assert offsets == sorted(set(offsets)) and offsets[-1] == 6, "nothing twice, up to the end"
    assert offsets[0] == 1, "the open segment is still read to its end"
    r.close()
    w.close()
