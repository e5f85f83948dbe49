"""Uploads (dimalign/uploads.py): a participant's ImageFolder zip and state dict, size-limited,
checked whole before anything is written, unpacked into that owner's area only."""

import io
import stat
import zipfile

import pytest
import torch

from dimalign import uploads
from dimalign.config import build_config
from dimalign.store import StoreError
from dimalign.uploads import UploadRefused, owner_area, save_checkpoint, unpack_imagefolder


@pytest.fixture()
def area_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DIMALIGN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(uploads.UPLOAD_MB_ENV, raising=False)
    return tmp_path / "home"


def png_bytes(value: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (8, 8), value).save(out, format="PNG")
    return out.getvalue()


def make_zip(entries: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return out.getvalue()


def written(owner: str) -> list:
    """Everything in `owner`'s upload area (none: nothing was ever written)."""
    return list(owner_area(owner).rglob("*")) if owner_area(owner).exists() else []


def digits_zip(top: str = "my-images/") -> bytes:
    return make_zip({f"{top}class{c}/{i}.png": png_bytes(40 * c + i)
                     for c in range(3) for i in range(6)})


def test_a_zipped_image_folder_unpacks_into_the_owners_area_and_builds_an_experiment(
        area_home):
    root = unpack_imagefolder(digits_zip(), "alice")
    assert unpack_imagefolder(make_zip({"a/12:30:01.png": b"x", "b/x.png": b"y"}), "alice")
    assert root.parent.parent == owner_area("alice") and root.name == "my-images"
    assert sorted(p.name for p in root.iterdir()) == ["class0", "class1", "class2"]
    cfg = build_config("digits-class", ["dataset=imagefolder", f"dataset_root={root}",
                                        "image_size=8", "scenario.classes=0"])
    assert cfg.info.num_classes == 3
    assert unpack_imagefolder(digits_zip(), "alice") == root  # the same upload: one copy
    flat = unpack_imagefolder(digits_zip(top=""), "alice")  # class folders at the top
    assert sorted(p.name for p in flat.iterdir()) == ["class0", "class1", "class2"]


@pytest.mark.parametrize("entries,links", [
    ({"../evil.png": b"x"}, ()),
    ({"ok/../../evil.png": b"x"}, ()),
    ({"/abs/evil.png": b"x"}, ()),
    ({"..\\evil.png": b"x"}, ()),
    ({"C:evil.png": b"x"}, ()),
    ({"c:/windows/evil.png": b"x"}, ()),
    ({"class0/a.png": b"x"}, ("class0/link.png",)),
])
def test_a_zip_reaching_out_of_its_folder_or_holding_a_link_is_refused_whole(
        area_home, entries, links):
    data = make_zip({"class1/fine.png": png_bytes(1), **entries}, links)
    with pytest.raises(UploadRefused) as err:
        unpack_imagefolder(data, "mallory")
    assert "\n" not in str(err.value)
    assert written("mallory") == []  # nothing written, no staging folder left
    assert not (area_home.parent / "evil.png").exists()


def test_uploads_over_the_cap_and_zip_bombs_are_refused_in_one_line(area_home, monkeypatch):
    monkeypatch.setenv(uploads.UPLOAD_MB_ENV, "0.01")  # 10 kB
    with pytest.raises(UploadRefused, match="this server takes at most"):
        save_checkpoint(b"x" * 20_000, "alice")
    bomb = make_zip({"class0/zeros.png": bytes(200_000)})  # 200 kB of zeros, a tiny zip
    assert len(bomb) < 10_000
    with pytest.raises(UploadRefused, match="unpacks to more than"):
        unpack_imagefolder(bomb, "alice")
    assert written("alice") == []  # refused before anything was written


def patched(data: bytes, signature: bytes, offset: int, value: int, width: int = 4) -> bytes:
    """`data` with the little-endian field at `offset` of every `signature` record set (zipfile
    itself writes honest headers only)."""
    out, at = bytearray(data), data.find(signature)
    while at >= 0:
        out[at + offset: at + offset + width] = value.to_bytes(width, "little")
        at = data.find(signature, at + 1)
    return bytes(out)


def test_a_lying_damaged_or_encrypted_zip_is_refused_in_one_line_and_nothing_kept(area_home):
    good = make_zip({"class0/zeros.png": bytes(50_000), "class1/a.png": png_bytes(1)})
    # a header that understates a member's size (50 kB said to be 10 bytes): the budget sees
    # 10 bytes; the member reads back short of its CRC
    liar = patched(patched(good, b"PK\x01\x02", 24, 10), b"PK\x03\x04", 22, 10)
    # corrupt compressed data in the middle of the first member
    corrupt = bytearray(good)
    corrupt[60:90] = bytes(30)
    # the "encrypted" flag, in the central directory and the local header
    encrypted = patched(patched(good, b"PK\x01\x02", 8, 1, 2), b"PK\x03\x04", 6, 1, 2)
    for data, words in ((liar, "damaged"), (bytes(corrupt), "damaged"),
                        (encrypted, "encrypted")):
        with pytest.raises(UploadRefused, match=words) as err:
            unpack_imagefolder(data, "alice")
        assert "\n" not in str(err.value)
        assert written("alice") == []


def test_an_owners_uploads_have_a_quota(area_home, monkeypatch):
    monkeypatch.setenv(uploads.QUOTA_MB_ENV, "0.05")  # 50 kB
    save_checkpoint(b"x" * 30_000, "alice")
    with pytest.raises(UploadRefused, match="each participant may keep"):
        save_checkpoint(b"y" * 30_000, "alice")
    save_checkpoint(b"y" * 30_000, "bob")  # another owner's area is their own


def test_not_a_zip_an_empty_upload_and_a_bad_owner_are_one_line(area_home):
    with pytest.raises(UploadRefused, match="cannot be read as a zip"):
        unpack_imagefolder(b"PK not really", "alice")
    with pytest.raises(UploadRefused, match="empty"):
        save_checkpoint(b"", "alice")
    with pytest.raises(StoreError):
        owner_area("../etc")


def test_an_uploaded_state_dict_is_kept_by_its_hash_in_the_owners_area(area_home):
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    path = save_checkpoint(buffer.getvalue(), "alice")
    assert path.parent == owner_area("alice") and path.suffix == ".pt"
    assert torch.load(path, weights_only=True)["w"].shape == (2,)
    assert save_checkpoint(buffer.getvalue(), "alice") == path


def test_an_error_about_an_upload_shows_no_server_folder_on_the_page(area_home, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from dimalign.data import build_experiment
    from dimalign.errors import ConfigError
    from dimalign.uploads import hide_server_paths

    images = {f"class{c}/{i}.png": png_bytes(10 * c + i) for c in range(2) for i in range(3)}
    root = unpack_imagefolder(make_zip({**images, "class0/broken.png": b"not a png"}), "alice")
    own = ["dataset=imagefolder", f"dataset_root={root}", "image_size=8", "scenario.classes=0"]
    with pytest.raises(ConfigError) as err:  # the engine names the file: the CLI's user owns
        build_experiment(build_config("digits-class", own))  # the machine
    assert str(root) in str(err.value)
    assert hide_server_paths(str(err.value)).count("'your upload/class0/broken.png'") == 2
    monkeypatch.setattr("dimalign.daemon.ensure_scheduler", lambda: None)
    at = AppTest.from_file("../app.py", default_timeout=60)  # relative to this file
    at.session_state["overrides"], at.session_state["overrides_for"] = own, "digits-class"
    at.run()
    shown = " ".join(e.value for e in at.error)
    assert "could not be loaded" in shown and "your upload/class0/broken.png" in shown, shown
    assert str(area_home) not in shown


def test_an_upload_is_hidden_however_the_home_is_named(tmp_path, monkeypatch):
    from dimalign.uploads import hide_server_paths

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    for home in (tmp_path / "link", "link"):  # a link, and a relative path
        monkeypatch.setenv("DIMALIGN_HOME", str(home))
        root = unpack_imagefolder(digits_zip(), "alice")
        for named in (root, root.resolve()):
            shown = hide_server_paths(f"dataset_root: '{named}/class0' holds no images")
            assert shown == "dataset_root: 'your upload/my-images/class0' holds no images", shown
