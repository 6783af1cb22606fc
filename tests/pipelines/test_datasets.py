from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.datasets import LASTFM_TIMESTAMP, read_lastfm, read_movielens
from recsys.columns import EVENT_COLUMNS, ITEM_COLUMNS
from tests.conftest import require_datasets as dataset


def assert_canonical(items: pd.DataFrame, events: pd.DataFrame) -> None:
    assert tuple(items.columns) == ITEM_COLUMNS
    assert tuple(events.columns) == EVENT_COLUMNS
    assert items["item_id"].is_unique
    assert items["tags"].map(lambda tags: isinstance(tags, list)).all()
    assert items["tags"].map(lambda tags: len(tags) == len(set(tags))).all()
    assert items["tags"].map(lambda tags: all(t == t.lower() and t for t in tags)).all()
    assert items["category"].map(lambda c: c is None or isinstance(c, str)).all()
    assert all(isinstance(v, str) for v in events["user_id"].head(100))
    assert all(isinstance(v, str) for v in events["item_id"].head(100))
    assert events["event_id"].isna().all()
    assert events["dwell_seconds"].isna().all()
    assert events["timestamp"].notna().all()
    assert events["timestamp"].dtype == np.float64
    assert events["value"].dtype == np.float64


# --- real datasets ----------------------------------------------------------------------


@pytest.mark.datasets
def test_movielens_latest_small() -> None:
    items, events = read_movielens(dataset("ml-latest-small"))
    assert_canonical(items, events)
    assert len(events) == 100_836
    assert events["user_id"].nunique() == 610
    assert len(items) == 9_742
    assert set(events["type"]) == {"rating"}
    assert events["value"].between(0.5, 5.0).all()
    assert set(events["item_id"]) <= set(items["item_id"])

    toy_story = items.set_index("item_id").loc["1"]
    assert toy_story["title"] == "Toy Story (1995)"
    assert {"adventure", "animation", "children", "comedy", "fantasy"} <= set(toy_story["tags"])
    assert {"pixar", "fun"} <= set(toy_story["tags"])  # user tags from tags.csv
    assert toy_story["category"] == "adventure"
    assert "Toy Story" in toy_story["text"] and "pixar" in toy_story["text"]
    assert "Animation" in toy_story["text"]
    first = events.iloc[0]
    assert (first["user_id"], first["item_id"], first["value"]) == ("1", "1", 4.0)
    assert first["timestamp"] == 964_982_703.0
    # Movies listed without genres have no category.
    assert items["category"].isna().sum() == 34


@pytest.mark.datasets
def test_lastfm() -> None:
    directory = dataset("hetrec2011-lastfm-2k")
    items, events = read_lastfm(directory)
    assert_canonical(items, events)
    assert len(events) == 92_834
    assert events["user_id"].nunique() == 1_892
    assert len(items) == 17_632
    assert events["item_id"].nunique() == 17_632
    assert set(events["type"]) == {"play"}
    assert (events["timestamp"] == LASTFM_TIMESTAMP).all()
    assert (events["value"] >= 1).all()
    first = events.iloc[0]
    assert (first["user_id"], first["item_id"], first["value"]) == ("2", "51", 13_883.0)
    titles = items.set_index("item_id")["title"]
    assert titles["1"] == "MALICE MIZER"
    assert "Beyoncé" in set(titles)
    assert not titles.str.contains("\ufffd").any()
    if (
        not (directory / "user_taggedartists.dat").exists()
        and not (directory / "user_taggedartists-timestamps.dat").exists()
    ):
        assert items["tags"].map(len).eq(0).all()
        assert items["category"].isna().all()


# --- synthetic layouts ------------------------------------------------------------------


def _flags(*on: int) -> str:
    return "|".join("1" if i in on else "0" for i in range(19))


def test_movielens_100k_layout(tmp_path: Path) -> None:
    names = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime")
    names += ("Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery")
    names += ("Romance", "Sci-Fi", "Thriller", "War", "Western")
    genres = "\n".join(f"{name}|{i}" for i, name in enumerate(names))
    (tmp_path / "u.genre").write_text(genres + "\n\n", encoding="latin-1")
    lines = [
        f"1|Toy Story (1995)|01-Jan-1995||http://example.com/toy|{_flags(3, 4, 5)}",
        f"2|GoldenEye (1995)|01-Jan-1995||http://example.com/ge|{_flags(1, 2, 16)}",
        f"3|Café au lait (1993)|01-Jan-1993||http://example.com/cafe|{_flags(5, 1)}",
        f"267|unknown||||{_flags(0)}",
    ]
    (tmp_path / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (tmp_path / "u.data").write_text(
        "196\t1\t3\t881250949\n186\t2\t3\t891717742\n22\t3\t1\t878887116\n196\t267\t5\t881251000\n"
    )

    items, events = read_movielens(tmp_path)
    assert_canonical(items, events)
    assert list(items["item_id"]) == ["1", "2", "3", "267"]
    by_id = items.set_index("item_id")
    assert by_id.loc["1", "tags"] == ["animation", "children's", "comedy"]
    assert by_id.loc["1", "category"] == "animation"
    assert by_id.loc["2", "tags"] == ["action", "adventure", "thriller"]
    assert by_id.loc["3", "title"] == "Café au lait (1993)"
    assert by_id.loc["3", "tags"] == ["action", "comedy"]
    assert by_id.loc["267", "tags"] == []
    assert by_id.loc["267", "category"] is None
    assert "Comedy" in by_id.loc["1", "text"]
    assert list(events["user_id"]) == ["196", "186", "22", "196"]
    assert list(events["item_id"]) == ["1", "2", "3", "267"]
    assert list(events["value"]) == [3.0, 3.0, 1.0, 5.0]
    assert list(events["timestamp"]) == [881250949.0, 891717742.0, 878887116.0, 881251000.0]
    assert set(events["type"]) == {"rating"}


def test_movielens_100k_without_genre_file(tmp_path: Path) -> None:
    (tmp_path / "u.item").write_text(f"5|Copycat (1995)|01-Jan-1995||url|{_flags(6, 8, 16)}\n")
    (tmp_path / "u.data").write_text("1\t5\t4\t874965758\n")
    items, events = read_movielens(tmp_path)
    assert items["tags"].iloc[0] == ["crime", "drama", "thriller"]
    assert len(events) == 1


def test_movielens_latest_layout(tmp_path: Path) -> None:
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n"
        '1,"American President, The (1995)",Comedy|Drama|Romance\n'
        "2,Nothing Here (2018),(no genres listed)\n"
        "3,Solo (2018),Action\n"
    )
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.5,964982703\n2,3,0.5,1445714994\n"
    )
    (tmp_path / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n"
        "1,1,politics,1\n2,1, Romance ,2\n3,1,White House,3\n4,1,white  house,4\n"
        "5,2,Obscure,5\n"
    )
    items, events = read_movielens(tmp_path)
    assert_canonical(items, events)
    by_id = items.set_index("item_id")
    assert by_id.loc["1", "title"] == "American President, The (1995)"
    # Genres first, then user tags by how often they were applied; no duplicates.
    assert by_id.loc["1", "tags"] == ["comedy", "drama", "romance", "white house", "politics"]
    assert by_id.loc["1", "category"] == "comedy"
    assert by_id.loc["2", "tags"] == ["obscure"]
    assert by_id.loc["2", "category"] is None
    assert by_id.loc["3", "tags"] == ["action"]
    assert items["created_at"].isna().all() and items["duration_seconds"].isna().all()
    assert list(events["value"]) == [4.5, 0.5]
    assert list(events["item_id"]) == ["1", "3"]


def test_movielens_latest_without_tags(tmp_path: Path) -> None:
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n7,Sabrina (1995),Comedy\n")
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n9,7,3.0,1\n")
    items, events = read_movielens(tmp_path)
    assert items["tags"].iloc[0] == ["comedy"]
    assert events["user_id"].iloc[0] == "9"


def _write_lastfm(directory: Path) -> None:
    (directory / "user_artists.dat").write_text(
        "userID\tartistID\tweight\r\n2\t51\t13883\r\n2\t52\t11\r\n3\t51\t7\r\n"
    )
    (directory / "artists.dat").write_bytes(
        b"id\tname\turl\tpictureURL\n51\tDuran Duran\thttp://x\thttp://y\n"
        + b"52\tSigur R\xf3s\thttp://x\n"  # a Latin-1 byte in an otherwise UTF-8 file
        + "53\tBjörk\thttp://x\thttp://y\n".encode()
    )


def test_lastfm_layout_without_tag_assignments(tmp_path: Path) -> None:
    _write_lastfm(tmp_path)
    (tmp_path / "tags.dat").write_text("tagID\ttagValue\n1\tpop\n")
    items, events = read_lastfm(tmp_path)
    assert_canonical(items, events)
    assert list(items["title"]) == ["Duran Duran", "Sigur Rós", "Björk"]
    assert items["tags"].map(len).eq(0).all()
    assert items["category"].isna().all()
    assert list(events["value"]) == [13883.0, 11.0, 7.0]
    assert list(events["user_id"]) == ["2", "2", "3"]
    assert (events["timestamp"] == LASTFM_TIMESTAMP).all()
    assert set(events["type"]) == {"play"}


def test_lastfm_layout_with_tag_assignments(tmp_path: Path) -> None:
    _write_lastfm(tmp_path)
    (tmp_path / "tags.dat").write_bytes(
        b"tagID\ttagValue\r\n1\tNew Wave\r\n2\tpost-rock\r\n3\tfu\xdfball\r\n4\t80s\r\n"
    )
    (tmp_path / "user_taggedartists.dat").write_text(
        "userID\tartistID\ttagID\tday\tmonth\tyear\n"
        "2\t51\t4\t1\t4\t2009\n3\t51\t1\t1\t4\t2009\n4\t51\t1\t1\t4\t2009\n"
        "2\t52\t2\t1\t4\t2009\n2\t52\t3\t1\t4\t2009\n"
    )
    items, _ = read_lastfm(tmp_path)
    by_id = items.set_index("item_id")
    assert by_id.loc["51", "tags"] == ["new wave", "80s"]
    assert by_id.loc["51", "category"] == "new wave"
    assert by_id.loc["52", "tags"] == ["post-rock", "fußball"]
    assert by_id.loc["53", "tags"] == []
    assert by_id.loc["53", "category"] is None
    assert "new wave" in by_id.loc["51", "text"]


# --- wrong directories ------------------------------------------------------------------


def test_missing_directory_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=r"movies\.csv.*u\.item"):
        read_movielens(missing)
    with pytest.raises(FileNotFoundError, match=r"user_artists\.dat"):
        read_lastfm(missing)


def test_empty_directory_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"movies\.csv: missing file"):
        read_movielens(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"user_artists\.dat: missing file"):
        read_lastfm(tmp_path)


def test_partial_layouts_name_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n")
    with pytest.raises(FileNotFoundError, match=r"ratings\.csv: missing file"):
        read_movielens(tmp_path)
    other = tmp_path / "old"
    other.mkdir()
    (other / "u.data").write_text("1\t1\t1\t1\n")
    with pytest.raises(FileNotFoundError, match=r"u\.item: missing file.*u\.data"):
        read_movielens(other)
    lastfm = tmp_path / "lastfm"
    lastfm.mkdir()
    (lastfm / "user_artists.dat").write_text("userID\tartistID\tweight\n")
    with pytest.raises(FileNotFoundError, match=r"artists\.dat: missing file"):
        read_lastfm(lastfm)
