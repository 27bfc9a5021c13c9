"""load_data: any catalog and interaction tables into LoadedData, and every way bad data is refused."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recserve_serving import synthetic
from recserve_serving.dataspec import DataSpec
from recserve_serving.errors import DataError, RecserveError
from recserve_serving.example_data import EXAMPLE_DATA
from recserve_serving.loaded_data import INTERACTION_COLUMNS, ITEM_COLUMNS, LoadedData
from recserve_serving.paths import bundled_data_dir
from recserve_serving.tabular import load_data

pytestmark = pytest.mark.unit

SERVING = Path(__file__).resolve().parents[2] / "serving" / "recserve_serving"
NEW_MODULES = ("dataspec.py", "tabular.py", "tabular_columns.py", "synthetic.py")

MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation
2,Heat (1995),Action|Crime
3,Up (2009),
"""
RATINGS = """userId,movieId,rating,timestamp
10,1,4.0,964982703
10,2,3.0,964982224
11,3,5.0,964983815
"""
SHOP: dict[str, Any] = {
    "catalog": {
        "uri": "bundled://synthetic-shop/items.parquet",
        "idColumn": "sku",
        "titleColumn": "product_name",
        "text": "{product_name} | {brand} | {department} | {tags}",
        "categoryColumn": "tags",
    },
    "interactions": {
        "uri": "bundled://synthetic-shop/interactions.parquet",
        "userColumn": "customer",
        "itemColumn": "product",
        "timestampColumn": "event_time",
        "weightColumn": "strength",
        "positiveThreshold": 3,
    },
}


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


def parquet(path: Path, columns: dict[str, Any]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def data_spec(catalog: Path, interactions: Path, **changes: Any) -> DataSpec:
    """The small movie mapping over two local files, with ``block__field`` changes (None unsets)."""
    doc: dict[str, Any] = {
        "catalog": {
            "uri": catalog.as_uri(),
            "idColumn": "movieId",
            "titleColumn": "title",
            "text": "{title} | {genres}",
            "categoryColumn": "genres",
            "categorySeparator": "|",
        },
        "interactions": {
            "uri": interactions.as_uri(),
            "userColumn": "userId",
            "itemColumn": "movieId",
            "timestampColumn": "timestamp",
            "weightColumn": "rating",
            "positiveThreshold": 4.0,
        },
    }
    for key, value in changes.items():
        block, field = key.split("__")
        if value is None:
            doc[block].pop(field, None)
        else:
            doc[block][field] = value
    return DataSpec.model_validate(doc)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return write(tmp_path / "movies.csv", MOVIES), write(tmp_path / "ratings.csv", RATINGS)


def refused(spec: DataSpec) -> str:
    with pytest.raises(DataError) as caught:
        load_data(spec)
    return str(caught.value)


def test_small_csv_maps_onto_the_contract(files: tuple[Path, Path]) -> None:
    data = load_data(data_spec(*files))
    assert list(data.items.columns) == list(ITEM_COLUMNS)
    assert list(data.interactions.columns) == list(INTERACTION_COLUMNS)
    assert data.items.item_id.tolist() == [1, 2, 3]
    assert data.items.item_id.dtype == np.int64 and data.interactions.user_id.dtype == np.int64
    assert data.items.text.tolist() == [
        "Toy Story (1995) | Adventure|Animation",
        "Heat (1995) | Action|Crime",
        "Up (2009) |",
    ]
    assert data.items.categories.tolist() == [["Adventure", "Animation"], ["Action", "Crime"], []]
    assert data.interactions.timestamp.dtype == np.int64
    assert data.interactions.weight.dtype == np.float64
    assert data.interactions.weight.tolist() == [4.0, 3.0, 5.0]
    assert data.positive_threshold == 4.0
    assert re.fullmatch(r"[0-9a-f]{64}", data.digest)


def test_crlf_bom_and_padded_headers_read_the_same(tmp_path: Path, files: tuple[Path, Path]) -> None:
    plain = load_data(data_spec(*files))
    movies = "\ufeff" + MOVIES.replace("movieId,title,genres", " movieId , title,genres ").replace(
        "\n", "\r\n"
    )
    odd = write(tmp_path / "odd.csv", movies)
    again = load_data(data_spec(odd, files[1]))
    pd.testing.assert_frame_equal(again.items, plain.items)


def test_the_bundled_movie_ratings_load() -> None:
    spec = EXAMPLE_DATA
    data = load_data(spec)
    assert (len(data.items), len(data.interactions)) == (9742, 100836)
    assert data.items.loc[0, "text"] == "Toy Story (1995) | Adventure|Animation|Children|Comedy|Fantasy"
    assert data.items.loc[0, "categories"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert data.interactions.item_id.dtype == np.int64
    assert data.interactions.timestamp.min() > 800_000_000


def test_the_synthetic_shop_loads_with_string_ids() -> None:
    data = load_data(DataSpec.model_validate(SHOP))
    assert len(data.items) == 1500 and 39_000 < len(data.interactions) < 41_000
    assert data.items.item_id.dtype == object and data.items.item_id.iloc[0].startswith("sku-")
    assert data.interactions.user_id.iloc[0].startswith("cust-")
    assert data.interactions.user_id.nunique() == 400
    assert set(data.interactions.weight.unique()) == {1.0, 3.0, 5.0}
    span = data.interactions.timestamp.max() - data.interactions.timestamp.min()
    assert 85 * 86_400 < span <= 90 * 86_400
    first = data.items.iloc[0]
    assert first.text.startswith(first.title + " | ")
    assert first.categories and first.categories[-1] in synthetic.STYLES
    assert ", " in first.text, "a list column renders comma-joined"


def test_string_ids_round_trip(tmp_path: Path) -> None:
    items = write(tmp_path / "items.csv", "id,name\n007,Bond\n a-1 ,Alpha\n42,Answer\n")
    events = write(tmp_path / "events.csv", "user,item,t\nu-1,007,1\nu-2,42,2\nu-1,a-1,3\n")
    spec = data_spec(
        items,
        events,
        catalog__idColumn="id",
        catalog__titleColumn="name",
        catalog__text="{name}",
        catalog__categoryColumn=None,
        catalog__categorySeparator=None,
        interactions__userColumn="user",
        interactions__itemColumn="item",
        interactions__timestampColumn="t",
        interactions__weightColumn=None,
        interactions__positiveThreshold=None,
    )
    data = load_data(spec)
    assert data.items.item_id.tolist() == ["007", "a-1", "42"], "leading zeros and text ids stay as written"
    assert data.interactions.item_id.tolist() == ["007", "42", "a-1"]
    assert data.interactions.user_id.tolist() == ["u-1", "u-2", "u-1"]
    assert data.interactions.weight.tolist() == [1.0, 1.0, 1.0]
    assert data.positive_threshold == 0.0
    assert data.items.categories.tolist() == [[], [], []]


def test_parquet_strings_of_digits_stay_strings(tmp_path: Path, files: tuple[Path, Path]) -> None:
    items = parquet(tmp_path / "m.parquet", {"movieId": ["1", "2", "3"], "title": ["a", "b", "c"]})
    events = parquet(
        tmp_path / "r.parquet",
        {"userId": [1, 1], "movieId": [1, 3], "rating": [4.0, 5.0], "timestamp": [1, 2]},
    )
    spec = data_spec(
        items, events, catalog__text="{title}", catalog__categoryColumn=None, catalog__categorySeparator=None
    )
    data = load_data(spec)
    assert data.items.item_id.tolist() == ["1", "2", "3"]
    assert data.interactions.item_id.tolist() == ["1", "3"], "integer item ids become the catalog's strings"


def test_plain_integer_strings_match_an_integer_catalog(tmp_path: Path, files: tuple[Path, Path]) -> None:
    events = parquet(
        tmp_path / "r.parquet",
        {"userId": ["u"], "movieId": ["2"], "rating": [4.0], "timestamp": [5]},
    )
    data = load_data(data_spec(files[0], events))
    assert data.interactions.item_id.tolist() == [2] and data.interactions.item_id.dtype == np.int64


def test_other_strings_against_an_integer_catalog_are_refused(
    tmp_path: Path, files: tuple[Path, Path]
) -> None:
    events = parquet(
        tmp_path / "r.parquet",
        {"userId": ["u", "u"], "movieId": ["2", "02"], "rating": [4.0, 4.0], "timestamp": [5, 6]},
    )
    message = refused(data_spec(files[0], events))
    assert "data.interactions.itemColumn ('movieId' in r.parquet)" in message
    assert "'02' (row 2)" in message
    assert "data.catalog.idColumn in movies.csv) are integers" in message
    assert "fix the ids so that both files write each item's id the same way" in message


def test_missing_file_names_the_path_and_the_uri(tmp_path: Path, files: tuple[Path, Path]) -> None:
    absent = tmp_path / "nope.csv"
    message = refused(data_spec(absent, files[1]))
    assert message.startswith("data.catalog.uri: ")
    assert absent.as_uri() in message and f"names {absent}, which does not exist" in message


def test_missing_bundled_file_lists_the_bundled_sets(files: tuple[Path, Path]) -> None:
    spec = data_spec(files[0], files[1], interactions__uri="bundled://synthetic-shop/missing.parquet")
    message = refused(spec)
    assert "data.interactions.uri" in message
    assert "movielens-small" in message and "synthetic-shop" in message
    assert str(bundled_data_dir()) in message


def test_a_directory_is_not_a_file(tmp_path: Path, files: tuple[Path, Path]) -> None:
    (tmp_path / "dir.csv").mkdir()
    assert "is a directory, not a file" in refused(data_spec(tmp_path / "dir.csv", files[1]))


def test_pvc_uris_resolve_under_the_claims_root(
    tmp_path: Path, files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = data_spec(files[0], files[1], catalog__uri="pvc://shop-data/catalog/movies.csv")
    monkeypatch.delenv("RECSERVE_PVC_ROOT", raising=False)
    assert "set RECSERVE_PVC_ROOT" in refused(spec)
    claim = tmp_path / "claims" / "shop-data" / "catalog"
    claim.mkdir(parents=True)
    (claim / "movies.csv").write_text(MOVIES)
    monkeypatch.setenv("RECSERVE_PVC_ROOT", str(tmp_path / "claims"))
    assert len(load_data(spec).items) == 3


def test_an_unreadable_file_is_refused(tmp_path: Path, files: tuple[Path, Path]) -> None:
    broken = write(tmp_path / "movies.parquet", "movieId,title\n1,a\n")
    message = refused(data_spec(broken, files[1]))
    assert f"cannot read {broken}" in message and "as parquet" in message
    assert "set data.catalog.format to the format it is in" in message
    assert isinstance(DataError("x"), RecserveError) and DataError.http_status == 422


def test_a_format_that_does_not_fit_is_refused(tmp_path: Path, files: tuple[Path, Path]) -> None:
    events = parquet(tmp_path / "r.bin", {"userId": [1], "movieId": [1], "rating": [4.0], "timestamp": [1]})
    assert len(load_data(data_spec(files[0], events, interactions__format="parquet")).interactions) == 1
    message = refused(data_spec(files[0], events, interactions__format="csv"))
    assert "data.interactions.uri: cannot read" in message and "as csv" in message


def test_missing_columns_are_named_with_their_spec_fields(tmp_path: Path, files: tuple[Path, Path]) -> None:
    message = refused(
        data_spec(files[0], files[1], interactions__userColumn="userid", interactions__weightColumn="stars")
    )
    assert (
        "data.interactions.userColumn names column 'userid', which ratings.csv lacks (did you mean 'userId'?)"
        in message
    )
    assert "data.interactions.weightColumn names column 'stars'" in message
    assert "Columns found in" in message and "['userId', 'movieId', 'rating', 'timestamp']" in message


def test_a_template_naming_an_absent_column_is_refused(files: tuple[Path, Path]) -> None:
    message = refused(data_spec(*files, catalog__text="{title} ({year})"))
    assert "data.catalog.text {year} names column 'year', which movies.csv lacks" in message
    assert "['movieId', 'title', 'genres']" in message


def test_weights_must_be_numeric(tmp_path: Path, files: tuple[Path, Path]) -> None:
    events = write(tmp_path / "r.csv", RATINGS.replace("3.0", "three"))
    message = refused(data_spec(files[0], events))
    assert "data.interactions.weightColumn ('rating' in r.csv): is not numeric" in message
    assert "'three' at line 3" in message and "unset weightColumn" in message


def test_weights_must_be_present(tmp_path: Path, files: tuple[Path, Path]) -> None:
    events = write(tmp_path / "r.csv", RATINGS.replace("3.0", ""))
    assert "1 interactions have no weight (the first at line 3)" in refused(data_spec(files[0], events))


def test_duplicate_item_ids_are_counted(tmp_path: Path, files: tuple[Path, Path]) -> None:
    movies = write(tmp_path / "m.csv", MOVIES + "2,Heat again,Action\n1,Toy Story again,\n1,Toy Story 3,\n")
    message = refused(data_spec(movies, files[1]))
    assert "data.catalog.idColumn: 2 item ids appear more than once in m.csv (5 rows), e.g. [1, 2]" in message
    assert "merge or remove the duplicates" in message


def test_empty_tables_are_refused(tmp_path: Path, files: tuple[Path, Path]) -> None:
    header = write(tmp_path / "m.csv", "movieId,title,genres\n")
    assert "has no rows; the catalog needs at least one item" in refused(data_spec(header, files[1]))
    events = write(tmp_path / "r.csv", "userId,movieId,rating,timestamp\r\n")
    message = refused(data_spec(files[0], events))
    assert message.startswith("data.interactions.uri:") and "has no rows" in message


def test_null_ids_are_refused(tmp_path: Path, files: tuple[Path, Path]) -> None:
    movies = write(tmp_path / "m.csv", MOVIES + ",Nameless,Drama\n")
    message = refused(data_spec(movies, files[1]))
    assert (
        "data.catalog.idColumn ('movieId' in m.csv): 1 of 4 rows have no id (the first at line 5)" in message
    )
    events = parquet(
        tmp_path / "r.parquet",
        {"userId": ["a", None, " "], "movieId": [1, 2, 3], "rating": [1.0, 2.0, 3.0], "timestamp": [1, 2, 3]},
    )
    message = refused(data_spec(files[0], events))
    assert "userColumn ('userId' in r.parquet): 2 of 3 rows have no id (the first at row 2)" in message


def test_float_ids_are_refused(tmp_path: Path, files: tuple[Path, Path]) -> None:
    items = parquet(
        tmp_path / "m.parquet", {"movieId": [1.0, 2.0], "title": ["a", "b"], "genres": ["x", "y"]}
    )
    assert "holds floating-point values (e.g. 1.0 at row 1)" in refused(data_spec(items, files[1]))


def test_interactions_with_unknown_items_are_refused_not_dropped(
    tmp_path: Path, files: tuple[Path, Path]
) -> None:
    rows = "".join(f"12,{item},4.0,1000\n" for item in (1, 7, 8, 9, 10, 11, 12, 7))
    events = write(tmp_path / "r.csv", RATINGS + rows)
    message = refused(data_spec(files[0], events))
    assert "data.interactions.itemColumn ('movieId' in r.csv): 7 of 11 interactions (63.64%)" in message
    assert "name 6 items that are not in the catalog (movies.csv), e.g. [7, 8, 9, 10, 11]" in message
    assert "first at line 6" in message and "refused, not dropped" in message


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2024-05-01T12:00:00Z", 1714564800),
        ("2024-05-01T14:00:00+02:00", 1714564800),
        ("2024-05-01 12:00:00", 1714564800),
        ("1714564800.9", 1714564800),
    ],
)
def test_timestamps_from_text(tmp_path: Path, files: tuple[Path, Path], written: str, expected: int) -> None:
    events = write(tmp_path / "r.csv", f"userId,movieId,rating,timestamp\n1,1,4.0,{written}\n")
    assert load_data(data_spec(files[0], events)).interactions.timestamp.tolist() == [expected]


def test_parquet_timestamps_and_float_seconds(tmp_path: Path, files: tuple[Path, Path]) -> None:
    moments = pa.array([1714564800_000, 1714564801_500], pa.timestamp("ms", tz="Europe/Paris"))
    events = parquet(
        tmp_path / "r.parquet", {"userId": [1, 2], "movieId": [1, 2], "rating": [4, 5], "timestamp": moments}
    )
    assert load_data(data_spec(files[0], events)).interactions.timestamp.tolist() == [1714564800, 1714564801]
    floats = parquet(
        tmp_path / "f.parquet",
        {"userId": [1], "movieId": [1], "rating": [4], "timestamp": [1714564800.7]},
    )
    assert load_data(data_spec(files[0], floats)).interactions.timestamp.tolist() == [1714564800]


def test_unparseable_timestamps_show_a_sample(tmp_path: Path, files: tuple[Path, Path]) -> None:
    events = write(tmp_path / "r.csv", RATINGS.replace("964982224", "yesterday"))
    message = refused(data_spec(files[0], events))
    assert "data.interactions.timestampColumn ('timestamp' in r.csv)" in message
    assert "1 timestamps cannot be read, e.g. 'yesterday' at line 3" in message
    assert "Unix seconds" in message and "ISO-8601" in message


def test_millisecond_timestamps_are_caught(tmp_path: Path, files: tuple[Path, Path]) -> None:
    events = write(tmp_path / "r.csv", RATINGS.replace("964982224", "964982224000"))
    assert "looks like milliseconds" in refused(data_spec(files[0], events))


def test_missing_timestamps_are_refused(tmp_path: Path, files: tuple[Path, Path]) -> None:
    events = write(tmp_path / "r.csv", RATINGS.replace(",964982224", ","))
    assert "1 interactions have no timestamp (the first at line 3)" in refused(data_spec(files[0], events))


def test_a_template_that_renders_nothing_is_refused(tmp_path: Path, files: tuple[Path, Path]) -> None:
    items = parquet(
        tmp_path / "m.parquet",
        {
            "movieId": [1, 2, 3],
            "title": ["a", "b", "c"],
            "genres": ["x", None, " "],
            "tags": [["t"], [], None],
        },
    )
    spec = data_spec(items, files[1], catalog__text="{genres} / {tags}")
    message = refused(spec)
    assert "data.catalog.text: the template '{genres} / {tags}' renders no text for 2 of 3 items" in message
    assert "e.g. item ids [2, 3] (first at row 2)" in message


def test_blank_titles_are_refused(tmp_path: Path, files: tuple[Path, Path]) -> None:
    movies = write(tmp_path / "m.csv", MOVIES.replace("Heat (1995)", " "))
    message = refused(data_spec(movies, files[1]))
    assert "titleColumn ('title' in m.csv): 1 items have no title, e.g. [2]" in message


def test_without_title_or_template_the_id_is_the_text(files: tuple[Path, Path]) -> None:
    data = load_data(data_spec(*files, catalog__titleColumn=None, catalog__text=None))
    assert data.items.title.tolist() == ["1", "2", "3"] == data.items.text.tolist()


def test_digest_follows_bytes_and_mapping_not_history_or_location(
    tmp_path: Path, files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = load_data(data_spec(*files)).digest
    assert load_data(data_spec(*files)).digest == base
    assert load_data(data_spec(*files, interactions__positiveThreshold=3.5)).digest != base
    assert load_data(data_spec(*files, catalog__text="{title}")).digest != base
    assert load_data(data_spec(*files, catalog__format="csv")).digest == base, "auto is its resolved format"
    stored = data_spec(*files).model_dump(by_alias=True)
    stored["history"] = {"source": "store", "store": {"kind": "redis", "connectionString": "r:6379"}}
    assert load_data(DataSpec.model_validate(stored)).digest == base
    claim = tmp_path / "claims" / "c"
    claim.mkdir(parents=True)
    (claim / "ratings.csv").write_bytes(files[1].read_bytes())
    monkeypatch.setenv("RECSERVE_PVC_ROOT", str(tmp_path / "claims"))
    assert load_data(data_spec(*files, interactions__uri="pvc://c/ratings.csv")).digest == base
    files[1].write_bytes(files[1].read_bytes().replace(b"964982703", b"964982704"))
    assert load_data(data_spec(*files)).digest != base


def test_generator_is_deterministic(tmp_path: Path) -> None:
    small = {"items": 60, "users": 12, "interactions": 400}
    first = synthetic.generate(tmp_path / "a", seed=7, **small)
    second = synthetic.generate(tmp_path / "b", seed=7, **small)
    other = synthetic.generate(tmp_path / "c", seed=8, **small)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert [p.read_bytes() for p in first] != [p.read_bytes() for p in other]
    spec = DataSpec.model_validate(
        {
            "catalog": {**SHOP["catalog"], "uri": first[0].as_uri()},
            "interactions": {**SHOP["interactions"], "uri": first[1].as_uri()},
        }
    )
    data = load_data(spec)
    assert isinstance(data, LoadedData) and len(data.items) == 60
    assert data.interactions.user_id.nunique() == 12


def test_committed_shop_is_what_the_generator_writes(tmp_path: Path) -> None:
    committed = bundled_data_dir() / "synthetic-shop"
    for fresh in synthetic.generate(tmp_path):
        assert fresh.read_bytes() == (committed / fresh.name).read_bytes(), (
            f"{fresh.name} is stale: run python scripts/generate-synthetic-data.py"
        )
    assert sum(p.stat().st_size for p in committed.iterdir()) < 3 * 2**20


def test_shop_structure_is_learnable() -> None:
    """Customers stay in their departments: the next event's department repeats the last one
    far more often than the catalog's department mix would by chance."""
    data = load_data(DataSpec.model_validate(SHOP))
    department = dict(
        zip(data.items.item_id, data.items.text.str.split(" | ", regex=False).str[2], strict=True)
    )
    events = data.interactions.sort_values(["user_id", "timestamp"], kind="stable")
    kinds = events.item_id.map(department)
    same_user = events.user_id.eq(events.user_id.shift())
    repeat = (kinds.eq(kinds.shift()) & same_user).sum() / same_user.sum()
    chance = (kinds.value_counts(normalize=True) ** 2).sum()
    assert repeat > 3 * chance


def test_the_new_modules_know_no_particular_data_set() -> None:
    for name in NEW_MODULES:
        assert "movielens" not in (SERVING / name).read_text().lower(), name


def test_timestamps_of_two_kinds_are_refused(tmp_path: Path, files: tuple[Path, Path]) -> None:
    events = write(tmp_path / "r.csv", RATINGS.replace("964982224", "2024-05-01T12:00:00Z"))
    message = refused(data_spec(files[0], events))
    assert (
        "mixes Unix seconds ('964982703' at line 2) with ISO-8601 times ('2024-05-01T12:00:00Z' at line 3)"
        in message
    )
