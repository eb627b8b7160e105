"""Model-folder registration keeps what users configured (extra_model_paths.yaml runs before custom nodes)."""

from __future__ import annotations

import importlib
import os

from harness.inprocess import import_pack


def test_l2p_folder_keeps_user_paths_and_lists_only_safetensors(tmp_path):
    files = importlib.import_module(import_pack().__name__ + ".nodes.files")
    import folder_paths

    user_dir = tmp_path / "my_l2p_models"
    user_dir.mkdir()
    (user_dir / "mine.safetensors").write_bytes(b"")
    (user_dir / "pickled.ckpt").write_bytes(b"")
    folder_paths.folder_names_and_paths.pop("l2p", None)
    folder_paths.add_model_folder_path("l2p", str(user_dir))  # what an `l2p:` yaml entry does
    files.register_l2p_folder()
    files.register_l2p_folder()  # idempotent
    paths, exts = folder_paths.folder_names_and_paths["l2p"]
    shipped = os.path.join(files.SHIPPED_MODELS, "l2p")  # the trained shapes-world demo model, listed last
    assert paths == [str(user_dir), os.path.join(folder_paths.models_dir, "l2p"), shipped]
    assert folder_paths.get_folder_paths("text_encoders")[-1] == os.path.join(files.SHIPPED_MODELS, "text_encoders")
    assert exts == {".safetensors", ".sft"}
    assert "mine.safetensors" in files.checkpoint_names()
    assert "pickled.ckpt" not in files.checkpoint_names()
    assert files.checkpoint_path("mine.safetensors") == str(user_dir / "mine.safetensors")


def test_names_cannot_escape_the_model_folders(tmp_path):
    files = importlib.import_module(import_pack().__name__ + ".nodes.files")
    import pytest

    with pytest.raises(FileNotFoundError, match="not in models/l2p"):
        files.checkpoint_path("../../etc/passwd")


def test_non_safetensors_files_are_refused(tmp_path):
    files = importlib.import_module(import_pack().__name__ + ".nodes.files")
    import pytest

    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="not a .safetensors file: only safetensors weights are loaded"):
        files.load_safetensors(str(pt))
