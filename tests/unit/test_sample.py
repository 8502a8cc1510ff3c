"""The embedded sample generator: deterministic, additive, never overwrites."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from visionops.data.sample import SHAPES, generate_sample
from visionops.files import sha256_file


def _hashes(paths: list[Path], root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in paths}


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    one = _hashes(generate_sample(tmp_path / "a", per_class=5, size=48), tmp_path / "a")
    two = _hashes(generate_sample(tmp_path / "b", per_class=5, size=48), tmp_path / "b")
    assert one == two and len(one) == 5 * len(SHAPES) >= 20
    assert len(set(one.values())) == len(one), "every image is distinct"


def test_more_images_keep_the_existing_ones(tmp_path: Path) -> None:
    few = _hashes(generate_sample(tmp_path / "a", per_class=3, size=48), tmp_path / "a")
    many = _hashes(generate_sample(tmp_path / "b", per_class=6, size=48), tmp_path / "b")
    assert all(many[k] == v for k, v in few.items())


@pytest.mark.parametrize(("size", "height"), [(64, None), (80, 60)])
def test_images_are_upright_scenes(tmp_path: Path, size: int, height: int | None) -> None:
    for path in generate_sample(tmp_path / "a", per_class=2, size=size, height=height):
        img = cv2.imread(str(path))
        assert img.shape == (height or size, size, 3)
        top, bottom = img[:5].mean(axis=(0, 1)), img[-5:].mean(axis=(0, 1))
        assert top[0] > bottom[0], "sky (blue) on top, ground at the bottom: orientation is learnable"


def test_workers_write_the_same_files(tmp_path: Path) -> None:
    one = _hashes(generate_sample(tmp_path / "a", per_class=3, size=80, height=60), tmp_path / "a")
    two = _hashes(generate_sample(tmp_path / "b", per_class=3, size=80, height=60, workers=2), tmp_path / "b")
    assert one == two


def test_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    keep = tmp_path / "data" / "mine.txt"
    keep.write_text("user file")
    with pytest.raises(FileExistsError, match="refusing"):
        generate_sample(tmp_path / "data", per_class=1)
    assert keep.read_text() == "user file"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="per_class"):
        generate_sample(tmp_path / "x", per_class=0)
    with pytest.raises(ValueError, match="height"):
        generate_sample(tmp_path / "x", height=8)
    assert not (tmp_path / "x").exists()
