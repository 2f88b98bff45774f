"""core.data.root: the only folder tree the pages may read; `..`, links out and paths elsewhere refused."""
from __future__ import annotations

import pytest

from core.data.root import DATA_ENV, data_root, resolve_under
from core.errors import InputError


@pytest.fixture
def root(tmp_path):
    (tmp_path / "root" / "ham10000").mkdir(parents=True)
    (tmp_path / "root" / "ham10000" / "HAM10000_metadata.csv").write_text("image_id\n")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "patients.csv").write_text("name\n")
    return tmp_path / "root"


def test_paths_inside_the_root_are_resolved(root):
    assert resolve_under(root, "ham10000") == (root / "ham10000").resolve()
    assert resolve_under(root, "ham10000/HAM10000_metadata.csv").is_file()
    assert resolve_under(root, str(root / "ham10000")) == (root / "ham10000").resolve()  # absolute, inside
    assert resolve_under(root, ".") == root.resolve()
    assert resolve_under(root, "ham10000/../ham10000") == (root / "ham10000").resolve()
    (root / "alias").symlink_to(root / "ham10000", target_is_directory=True)  # a link that stays inside
    assert resolve_under(root, "alias") == (root / "ham10000").resolve()


@pytest.mark.parametrize("typed", ["..", "../..", "../secret", "ham10000/../../secret/patients.csv", "/etc",
                                   "/etc/passwd", "~"])
def test_paths_leading_outside_are_refused(root, typed):
    with pytest.raises(InputError, match="leads outside the data folder") as refused:
        resolve_under(root, typed)
    assert "symbolic link" not in str(refused.value)


def test_an_absolute_path_next_to_the_root_is_refused(root):
    with pytest.raises(InputError, match="leads outside the data folder"):
        resolve_under(root, root.parent / "secret")
    with pytest.raises(InputError, match="leads outside the data folder"):
        resolve_under(root, f"{root}-other")  # shares the root's name as a prefix


def test_a_symbolic_link_out_of_the_root_is_refused(root):
    (root / "shortcut").symlink_to(root.parent / "secret", target_is_directory=True)
    (root / "ham10000" / "linked.csv").symlink_to(root.parent / "secret" / "patients.csv")
    for typed in ("shortcut", "shortcut/patients.csv", "ham10000/linked.csv"):
        with pytest.raises(InputError, match="leads outside the data folder .* through a symbolic link"):
            resolve_under(root, typed)


def test_the_root_comes_from_the_environment(root, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert data_root() is None
    monkeypatch.setenv(DATA_ENV, "  ")
    assert data_root() is None
    monkeypatch.setenv(DATA_ENV, str(root / "missing"))
    assert data_root() is None
    monkeypatch.setenv(DATA_ENV, str(root / "ham10000" / ".."))
    assert data_root() == root.resolve()


def test_linked_images_and_datasets_outside_the_root_are_not_read(root, monkeypatch):
    """A dataset inside the root whose image files (or whose folder) link elsewhere: those images are
    dropped from what the pages read, and a linked dataset folder is not offered."""
    import pandas as pd

    from core.data.root import confine_images, inside
    from ui.explorer import datasets_under

    images = root / "ham10000" / "HAM10000_images_part_1"
    images.mkdir()
    (images / "ISIC_0000001.jpg").write_bytes(b"inside")
    (root.parent / "secret" / "ISIC_0000002.jpg").write_bytes(b"outside")
    (images / "ISIC_0000002.jpg").symlink_to(root.parent / "secret" / "ISIC_0000002.jpg")
    frame = pd.DataFrame({"image_id": ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"],
                          "image_path": [str(images / "ISIC_0000001.jpg"), str(images / "ISIC_0000002.jpg"), None]})
    kept = confine_images(frame, root)
    assert kept["image_path"].iloc[0] == str(images / "ISIC_0000001.jpg")
    assert kept["image_path"].notna().tolist() == [True, False, False]
    untouched = frame.iloc[[0, 2]]
    assert confine_images(untouched, root) is untouched
    assert inside(root, root / "ham10000") and not inside(root, images / "ISIC_0000002.jpg")

    (root.parent / "secret" / "HAM10000_metadata.csv").write_text(
        "lesion_id,image_id,dx,dx_type,age,sex,localization\nHAM_1,ISIC_0000002,nv,histo,50,male,back\n")
    (root / "elsewhere").symlink_to(root.parent / "secret", target_is_directory=True)
    datasets_under.clear()
    offered = datasets_under(str(root))
    assert all(inside(root, path) for path in offered.values())
    assert not any("elsewhere" in label for label in offered)
