import pyarrow as pa

from pipeline.store import RoundStore


def test_atomic_write_leaves_no_temporaries(tmp_path):
    store = RoundStore(str(tmp_path / "round"))
    digest = store.write_bytes("a/b.bin", b"hello")
    assert store.read_bytes("a/b.bin") == b"hello"
    assert digest == store.file_digest("a/b.bin")
    assert [p.name for p in (tmp_path / "round/a").iterdir()] == ["b.bin"]


def test_temporaries_are_invisible_and_removable(tmp_path):
    store = RoundStore(str(tmp_path))
    store.write_bytes("stage/shard-00000-x.parquet", b"done")
    (tmp_path / "stage/.tmp-abc-shard-00001-y.parquet").write_bytes(b"half")
    assert store.list_files("stage", ".parquet") == ["stage/shard-00000-x.parquet"]
    assert store.remove_temporaries("stage") == 1
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == ["shard-00000-x.parquet"]


def test_same_rows_give_the_same_parquet_bytes(tmp_path):
    table = pa.table({"id": ["a", "b"], "value": [1.5, 2.5], "tags": [["x"], []]})
    first = RoundStore(str(tmp_path / "one")).write_table("t.parquet", table)
    second = RoundStore(str(tmp_path / "two")).write_table("t.parquet", table)
    assert first == second


def test_fsspec_url_round_trip():
    store = RoundStore("memory://songpref-test-round")
    store.write_json("manifest.json", {"a": 1})
    store.write_table("lyrics/s.parquet", pa.table({"x": [1, 2, 3]}))
    assert store.read_json("manifest.json") == {"a": 1}
    assert store.read_table("lyrics/s.parquet").num_rows == 3
