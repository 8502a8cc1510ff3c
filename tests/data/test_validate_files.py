"""validate on crafted bad files: each kind gets the right status and a reason that names the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from corpus import BAD_KINDS, good_class, good_jpeg, tree_digest, write

from visionops.config import ValidateParams
from visionops.stages.validate import ValidationFailed, validate

PARAMS = ValidateParams(min_images_per_class=3, min_side=16)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, dict, dict, dict]:
    """One data folder holding every bad kind next to two healthy classes, validated once."""
    base = tmp_path_factory.mktemp("corpus")
    root = base / "data"
    good_class(root, "cat", 6)
    good_class(root, "dog", 6)
    for rel, make, _, _ in BAD_KINDS.values():
        write(root, rel, make())
    outside = write(base, "outside/secret.jpg", good_jpeg(99))
    os.symlink(outside, root / "cat" / "link_out.jpg")
    os.symlink(root / "cat" / "img_000.jpg", root / "cat" / "link_in.jpg")
    os.symlink(base / "outside", root / "dog" / "linked_folder")
    (root / "empty_class").mkdir()
    write(root, "bird/.hidden.jpg", good_jpeg(12))  # a folder holding only hidden files is empty too
    before = tree_digest(root)
    report = validate(root, PARAMS, base / "out", workers=2)
    return base, report.manifest, report.summary, before, tree_digest(root)


def _row(manifest: pd.DataFrame, path: str) -> dict:
    rows = manifest[manifest["path"] == path]
    assert len(rows) == 1, f"{path} not in the manifest: {sorted(manifest['path'])}"
    return rows.iloc[0].to_dict()


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_each_kind_gets_its_status_and_reason(corpus_run, kind: str) -> None:
    _, manifest, _, _, _ = corpus_run
    rel, _, status, code = BAD_KINDS[kind]
    row = _row(manifest, rel)
    assert row["status"] == status, row
    if code:
        assert row["reason"].startswith(code), row["reason"]
        assert len(row["reason"]) > len(code) + 10, "the reason must explain, not only name a code"


def test_symlinks(corpus_run) -> None:
    _, manifest, _, _, _ = corpus_run
    out = _row(manifest, "cat/link_out.jpg")
    assert out["status"] == "quarantined" and out["reason"].startswith("symlink_outside_data")
    assert pd.isna(out["sha256"]), "a symlink leaving data/ must not be read"
    assert _row(manifest, "cat/link_in.jpg")["status"] == "ok"
    folder = _row(manifest, "dog/linked_folder/")
    assert folder["status"] == "quarantined" and "symlink_outside_data" in folder["reason"]
    assert not manifest["path"].str.contains("secret").any()


def test_facts_of_odd_but_valid_images(corpus_run) -> None:
    _, manifest, _, _, _ = corpus_run
    assert _row(manifest, BAD_KINDS["grayscale"][0])["channels"] == 1
    assert _row(manifest, BAD_KINDS["rgba"][0])["channels"] == 4
    assert _row(manifest, BAD_KINDS["png_16bit"][0])["bit_depth"] == 16
    assert _row(manifest, BAD_KINDS["cmyk_jpeg"][0])["mode"] == "CMYK"
    rotated = _row(manifest, BAD_KINDS["exif_rotated"][0])
    assert (rotated["width"], rotated["height"], rotated["exif_orientation"]) == (40, 64, 6)
    png = _row(manifest, BAD_KINDS["png_named_jpg"][0])
    assert png["format"] == "PNG" and "'.jpg'" in png["note"]
    assert _row(manifest, BAD_KINDS["nested_subfolder"][0])["label"] == "cat"
    bomb = _row(manifest, BAD_KINDS["bomb_header"][0])
    assert (bomb["width"], bomb["height"]) == (100_000, 100_000)


def test_summary_and_outputs(corpus_run) -> None:
    base, manifest, summary, _, _ = corpus_run
    assert set(summary["classes"]) == {"cat", "dog"}, "empty and hidden-only folders are not classes"
    assert any("empty_class" in w for w in summary["warnings"])
    assert any("bird" in w for w in summary["warnings"])
    assert summary["quarantine_reasons"]["corrupt"] == 1
    assert summary["usable"] == int((manifest["status"] == "ok").sum())
    quarantine = pd.read_csv(base / "out" / "quarantine.csv")
    assert set(quarantine["path"]) == set(manifest[manifest["status"] == "quarantined"]["path"])
    html = (base / "out" / "data_docs" / "index.html").read_text()
    assert "files" in html and "classes" in html
    assert (base / "out" / "params.json").is_file()


def test_no_file_under_data_changed(corpus_run) -> None:
    _, _, _, before, after = corpus_run
    assert before == after


def test_label_conflict_quarantines_both_copies(tmp_path: Path) -> None:
    root = tmp_path / "data"
    good_class(root, "cat", 4)
    good_class(root, "dog", 4)
    write(root, "dog/copy_of_cat.jpg", (root / "cat" / "img_000.jpg").read_bytes())
    write(root, "cat/twin.jpg", (root / "cat" / "img_001.jpg").read_bytes())  # same label: kept
    manifest = validate(root, PARAMS, tmp_path / "out").manifest
    conflict = manifest[manifest["reason"].str.startswith("label_conflict")]
    assert set(conflict["path"]) == {"cat/img_000.jpg", "dog/copy_of_cat.jpg"}
    assert "cat, dog" in conflict.iloc[0]["reason"]
    assert _row(manifest, "cat/twin.jpg")["status"] == "ok"


def test_class_with_one_image_fails_with_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "data"
    good_class(root, "cat", 4)
    good_class(root, "dog", 1)
    with pytest.raises(ValidationFailed) as info:
        validate(root, PARAMS, tmp_path / "out")
    message = str(info.value)
    assert "class 'dog' has 1 usable image" in message and "validate.min_images_per_class=3" in message
    assert (tmp_path / "out" / "manifest.csv").is_file(), "outputs are written for inspection even on failure"


def test_imbalance_and_single_class_fail(tmp_path: Path) -> None:
    root = tmp_path / "data"
    good_class(root, "cat", 40)
    good_class(root, "dog", 3)
    with pytest.raises(ValidationFailed, match=r"class 'dog' has 3 images.*max_imbalance_ratio=10.0"):
        validate(root, PARAMS, tmp_path / "out")
    solo = tmp_path / "solo"
    good_class(solo, "cat", 5)
    with pytest.raises(ValidationFailed, match="fewer than 2 classes"):
        validate(solo, PARAMS, tmp_path / "out2")


def test_explicit_classes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for label in ("cat", "dog", "cow"):
        good_class(root, label, 3)
    params = PARAMS.model_copy(update={"classes": ["cat", "dog", "fox"]})
    with pytest.raises(ValidationFailed, match="class 'fox' has 0 usable image"):
        validate(root, params, tmp_path / "out")
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    cow = manifest[manifest["label"] == "cow"]
    assert (cow["status"] == "quarantined").all() and cow["reason"].str.startswith("unknown_label").all()


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dvc pull"):
        validate(tmp_path / "nope", PARAMS, tmp_path / "out")
