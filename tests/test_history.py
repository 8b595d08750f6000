import threading
from types import SimpleNamespace

import pytest
from PIL import Image

from img2img.history import History
from img2img.images import read_infotext


@pytest.fixture(scope="module")
def result(tiny_sd, square_path):
    from img2img import Engine

    return Engine(str(tiny_sd)).transform(square_path, "a harbour at dusk", seed=21, steps=4, batch_size=2)


def test_add_list_get_delete(tmp_path, result):
    history = History(tmp_path)
    entries = history.add(result, origin="ui")
    assert [e.seed for e in entries] == [21, 22]
    assert [e.seed for e in history.list()] == [22, 21]  # newest first
    first = history.get(entries[0].id)
    assert first.prompt == "a harbour at dusk" and first.parameters["Seed"] == "21" and first.origin == "ui"
    assert first.image.is_file() and read_infotext(first.image) == result.infotexts[0]
    assert Image.open(first.image).tobytes() == result.images[0].tobytes()
    assert history.delete(first.id) and not first.image.exists() and history.get(first.id) is None
    assert history.count() == 1 and not history.delete(first.id)


def test_persists_across_instances(tmp_path, result):
    History(tmp_path).add(result)
    again = History(tmp_path)
    assert again.count() == 2 and again.notices == []


def test_corrupt_database_is_set_aside_and_rebuilt_from_files(tmp_path, result):
    history = History(tmp_path)
    history.add(result)
    images = sorted(p.name for p in (tmp_path / "images").rglob("*.png"))
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"history.sqlite3{suffix}").unlink(missing_ok=True)
    (tmp_path / "history.sqlite3").write_bytes(b"this is not a database" * 100)
    recovered = History(tmp_path)
    assert recovered.notices and "was unreadable" in recovered.notices[0]
    assert list(tmp_path.glob("history.sqlite3.corrupt-*"))  # the bad file is kept for inspection
    assert sorted(e.image.name for e in recovered.list()) == images  # no image lost
    assert {e.seed for e in recovered.list()} == {21, 22} and {e.origin for e in recovered.list()} == {"rebuilt"}


def test_missing_database_is_rebuilt(tmp_path, result):
    History(tmp_path).add(result)
    for path in tmp_path.glob("history.sqlite3*"):
        path.unlink()
    recovered = History(tmp_path)
    assert recovered.count() == 2 and "rebuilt from the image files" in recovered.notices[0]


def test_concurrent_writers(tmp_path, result):
    histories = [History(tmp_path), History(tmp_path)]  # e.g. the API and the UI
    assert _add_from_two_threads_each(histories, result) == []
    entries = History(tmp_path).list(limit=None)
    assert len(entries) == 40 and len({e.image for e in entries}) == 40
    assert all(e.image.is_file() for e in entries)


def test_many_concurrent_writers_never_lose_an_image_to_a_name_collision(tmp_path, result, monkeypatch):
    """Names are time + seed + a random part; when two writers draw the same name in the same second, the
    second one must take another name, not fail (or overwrite). Short random parts from a pool of four
    make such collisions certain here."""
    import random

    import img2img.history as history_module

    real = history_module.secrets.token_hex
    pool = random.Random(3)
    monkeypatch.setattr(history_module, "secrets", SimpleNamespace(
        token_hex=lambda n: f"{pool.randrange(4):06x}" if n == 3 else real(n)))
    monkeypatch.setattr(history_module.time, "strftime", lambda fmt, *a: "2024-01-01" if "%Y" in fmt else "120000")
    histories = [History(tmp_path) for _ in range(4)]
    assert _add_from_two_threads_each(histories, result) == []
    entries = History(tmp_path).list(limit=None)
    assert len(entries) == 80 and len({e.image for e in entries}) == 80
    assert len(list((tmp_path / "images").rglob("*.png"))) == 80
    for entry in entries:  # every file holds its own entry's image: nothing was overwritten
        assert read_infotext(entry.image) == entry.infotext and f"Seed: {entry.seed}," in entry.infotext


def _add_from_two_threads_each(histories, result, adds: int = 5) -> list:
    """Two threads per History add `result` `adds` times each, all starting together; the errors raised."""
    errors = []
    start = threading.Barrier(2 * len(histories))

    def writer(history):
        start.wait()
        try:
            for _ in range(adds):
                history.add(result)
        except Exception as exc:  # pragma: no cover - the caller's assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(h,)) for h in histories for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
