"""l2p/format as the one owner of the checkpoint format: the atomic writer, the one safetensors reader, the
export (plan + ``l2p.*`` metadata) every writer shares, prefix stripping, and one check per load."""

from __future__ import annotations

import importlib
import os

import pytest
import safetensors
import torch

from l2p import pack_version
from l2p.format.atomic import atomic_file
from l2p.format.export import COMMON, OWN, export_metadata, plan_export
from l2p.format.keys import HEAD_PREFIX, has_head, head_part, strip_prefix, with_head_prefix
from l2p.format.layouts import COMFY, OFFICIAL, detect_layout, infer_config, official_to_comfy
from l2p.format.tensor_io import (
    PlannedTensor,
    open_source,
    read_safetensors,
    save_safetensors_atomic,
    write_safetensors,
)
from l2p.pixel_dit import official_state_dict
from l2p.tiny import tiny_l2p, tiny_latent_zimage


@pytest.fixture(scope="module")
def l2p_sd() -> dict[str, torch.Tensor]:
    return official_state_dict(*tiny_l2p(seed=0))


# ---------------------------------------------------------------------------------------------- atomic writer

def test_atomic_file_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "bank.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError, match="stop"), atomic_file(str(path), "w") as f:
        f.write("half of the new")
        raise RuntimeError("stop")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["bank.jsonl"]  # no temp file left
    with atomic_file(str(path), "w") as f:
        f.write("new\n")
    assert path.read_text() == "new\n" and os.listdir(tmp_path) == ["bank.jsonl"]


def test_atomic_file_without_overwrite_never_replaces(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"first")
    with pytest.raises(FileExistsError), atomic_file(str(path), overwrite=False) as f:
        f.write(b"second")
    assert path.read_bytes() == b"first" and os.listdir(tmp_path) == ["model.safetensors"]
    with atomic_file(str(tmp_path / "new.bin"), overwrite=False) as f:
        f.write(b"x")
    assert (tmp_path / "new.bin").read_bytes() == b"x"


@pytest.mark.skipif(os.name != "posix", reason="file modes and the umask are POSIX")
@pytest.mark.parametrize("umask,expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)],
                         ids=["umask022", "umask002", "umask077"])
def test_atomic_file_gives_the_users_normal_mode(tmp_path, umask, expected):
    """Not mkstemp's 0600: a written file (new or replacing one) has the mode open() gives, 0666 & ~umask."""
    old = os.umask(umask)
    try:
        for name, mode in (("model.safetensors", "wb"), ("bank.jsonl", "w")):
            path = tmp_path / name
            for _ in range(2):  # a new file, then one replacing it
                with atomic_file(str(path), mode) as f:
                    f.write(b"x" if "b" in mode else "x")
                assert os.stat(path).st_mode & 0o777 == expected, oct(os.stat(path).st_mode)
        save_safetensors_atomic({"a": torch.ones(2)}, str(tmp_path / "sub" / "w.safetensors"))
        assert os.stat(tmp_path / "sub" / "w.safetensors").st_mode & 0o777 == expected
    finally:
        os.umask(old)
    assert sorted(os.listdir(tmp_path)) == ["bank.jsonl", "model.safetensors", "sub"]  # no temp file left


def test_a_failing_checkpoint_write_leaves_no_half_file(tmp_path):
    def boom() -> torch.Tensor:
        raise RuntimeError("interrupted")

    items = [PlannedTensor("a", torch.empty(4, device="meta"), lambda: torch.ones(4)),
             PlannedTensor("b", torch.empty(4, device="meta"), boom)]
    with pytest.raises(RuntimeError, match="interrupted"):
        write_safetensors(str(tmp_path / "out.safetensors"), items)
    assert os.listdir(tmp_path) == []


def test_dataset_and_prompt_writers_use_the_atomic_writer(tmp_path):
    from dataset.folder import DatasetItem, DatasetWriter
    from dataset.prompts.records import PromptRecord, read_jsonl, write_jsonl

    records = [PromptRecord(i, "a/b/c", f"prompt {i}", i) for i in range(3)]
    bank = str(tmp_path / "bank.jsonl")
    assert write_jsonl(bank, records) == 3 and read_jsonl(bank) == records

    def failing():
        yield records[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(bank, failing())
    assert read_jsonl(bank) == records  # the old bank, whole
    DatasetWriter(str(tmp_path / "ds")).write(DatasetItem(0, "a cat", 1), b"png bytes")
    assert (tmp_path / "ds" / "00000.png").read_bytes() == b"png bytes"
    assert sorted(os.listdir(tmp_path)) == ["bank.jsonl", "ds"]
    assert not [n for n in os.listdir(tmp_path / "ds") if n.startswith(".partial")]


# ---------------------------------------------------------------------------------------------- reader

def test_one_reader_with_one_line_errors(tmp_path, l2p_sd):
    good = tmp_path / "m.safetensors"
    save_safetensors_atomic(l2p_sd, str(good), metadata={"l2p.policy": "paper"})
    sd, meta = read_safetensors(str(good))
    assert meta == {"l2p.policy": "paper"} and all(torch.equal(sd[k], l2p_sd[k]) for k in l2p_sd)

    pickle = tmp_path / "m.ckpt"
    pickle.write_bytes(b"\x80\x04")
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(good.read_bytes()[:100])
    for path, message in ((pickle, "m.ckpt is not a .safetensors file: only safetensors weights are loaded"),
                          (corrupt, "bad.safetensors is truncated or corrupt")):
        for read in (read_safetensors, open_source):  # the lazy source refuses with the same words
            with pytest.raises(ValueError, match=message) as e:
                read(str(path))
            assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------- keys

def test_prefix_stripping_and_head_names(l2p_sd):
    prefixed = {f"model.diffusion_model.{k}": v for k, v in l2p_sd.items()} | {"vae.x": torch.zeros(1)}
    assert strip_prefix(prefixed) == l2p_sd  # other models' tensors in the same file are dropped
    assert strip_prefix({f"diffusion_model.{k}": v for k, v in l2p_sd.items()}) == l2p_sd
    assert strip_prefix(l2p_sd) == l2p_sd
    head = head_part(l2p_sd)
    assert head and not any(k.startswith(HEAD_PREFIX) for k in head)
    assert with_head_prefix(head) == {k: v for k, v in l2p_sd.items() if k.startswith(HEAD_PREFIX)}
    assert has_head(l2p_sd) and not has_head(tiny_latent_zimage())


def test_the_trainer_loads_a_prefixed_comfy_checkpoint(tmp_path, l2p_sd):
    from training.model import load_model

    comfy = {f"model.diffusion_model.{k}": v for k, v in official_to_comfy(l2p_sd).items()}
    save_safetensors_atomic(comfy, str(tmp_path / "comfy.safetensors"))
    loaded = load_model(str(tmp_path / "comfy.safetensors"), "paper")
    assert loaded.official.keys() == l2p_sd.keys()
    assert all(torch.equal(loaded.official[k], l2p_sd[k]) for k in l2p_sd)


# ---------------------------------------------------------------------------------------------- export

def test_export_metadata_common_keys_are_the_exports_own():
    inherited = {"l2p.policy": "paper", "l2p.layout": "comfy", "l2p.pack_version": "0.0.1", "other": "dropped"}
    meta = export_metadata(OFFICIAL, {"steps": 3, "layout": OWN, "ema": 0.5}, inherited)
    assert list(meta) == ["l2p.policy", "l2p.layout", "l2p.pack_version", "l2p.steps", "l2p.ema"]
    assert meta["l2p.layout"] == OFFICIAL and meta["l2p.pack_version"] == pack_version()
    assert meta["l2p.steps"] == "3" and meta["l2p.ema"] == "0.5"
    # A caller cannot record another layout than the one written, and without a place the keys go last.
    meta = export_metadata(COMFY, {"layout": "official", "arch": "z-image"})
    assert list(meta) == ["l2p.layout", "l2p.arch", "l2p.pack_version"] and meta["l2p.layout"] == COMFY


def test_export_metadata_keeps_no_absolute_paths():
    """A file travels: its metadata names files, never where they were on the machine that wrote it."""
    inherited = {"l2p.train_config": 'model = "/home/me/models/l2p/one.safetensors"\n'
                                     'dataset = "/srv/my data/set"\n'
                                     'empty_conditioning = "C:\\\\Users\\\\me\\\\empty.cond.safetensors"\n'
                                     'share = "\\\\\\\\nas\\\\runs\\\\run-3"\nhome = "~/l2p"\nlr = 0.0001\n'}
    meta = export_metadata(OFFICIAL, {"source": "/tmp/x/Z-Image-Turbo/", "note": "from /mnt/a/b.safetensors, 3/30",
                                      "policy_report": "official: 1,234 of 5,678 parameters trainable (21.7%)",
                                      "url": "https://example.org/a/b ./rel/c d/e"}, inherited)
    assert meta["l2p.train_config"] == ('model = "one.safetensors"\ndataset = "set"\n'
                                        'empty_conditioning = "empty.cond.safetensors"\nshare = "run-3"\n'
                                        'home = "l2p"\nlr = 0.0001\n')
    assert meta["l2p.source"] == "Z-Image-Turbo" and meta["l2p.note"] == "from b.safetensors, 3/30"
    assert meta["l2p.policy_report"] == "official: 1,234 of 5,678 parameters trainable (21.7%)"
    assert meta["l2p.url"] == "https://example.org/a/b ./rel/c d/e"  # URLs and relative paths stay


@pytest.mark.parametrize("layout", [OFFICIAL, COMFY])
def test_plan_export_writes_the_layout_it_records(tmp_path, l2p_sd, layout):
    path = str(tmp_path / "out.safetensors")
    plan_export(official_to_comfy(l2p_sd), layout, 16, {"layout": OWN, "pack_version": OWN}).write(path)
    sd, meta = read_safetensors(path)
    assert detect_layout(sd) == meta["l2p.layout"] == layout
    assert infer_config(sd) == infer_config(l2p_sd)


def _common(path: str) -> dict[str, str]:
    with safetensors.safe_open(path, "pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    assert meta["l2p.layout"] == detect_layout(keys)
    return {k: meta[k] for k in meta if k[len("l2p."):] in COMMON}


def test_every_writer_records_the_same_common_keys(tmp_path):
    """The converter, the re-head, the trainer's export and L2P Save Checkpoint all write through export."""
    from l2p.convert import main as convert
    from training.config import TrainConfig
    from training.trainer import Trainer

    save_safetensors_atomic(tiny_latent_zimage(seed=1), str(tmp_path / "src.safetensors"))
    conv, rehead = str(tmp_path / "conv.safetensors"), str(tmp_path / "rehead.safetensors")
    assert convert(["--source", str(tmp_path / "src.safetensors"), "--out", conv, "--layout", "comfy"]) == 0
    assert convert(["--source", conv, "--out", rehead, "--head", "4k", "--layout", "official"]) == 0

    from PIL import Image
    from safetensors.torch import save

    from dataset.folder import DatasetItem, DatasetWriter, png_bytes

    writer = DatasetWriter(str(tmp_path / "ds"))
    for i in range(2):
        writer.write(DatasetItem(i, f"prompt {i}", i, "a/b/c", 32, 32), png_bytes(Image.new("RGB", (32, 32))),
                     save({"cap_feats": torch.zeros(5, 64)}))
    trainer = Trainer(TrainConfig(model=conv, dataset=str(tmp_path / "ds"), output_dir=str(tmp_path / "run"),
                                  export_layout="official"))
    trained, _ = trainer.export()

    from harness.inprocess import import_pack

    pack = import_pack()
    core = importlib.import_module(f"{pack.__name__}.nodes.comfy_core")
    files = importlib.import_module(f"{pack.__name__}.nodes.files")
    convert_nodes = importlib.import_module(f"{pack.__name__}.nodes.convert")
    model = core.load_l2p_file(conv)
    saved = str(tmp_path / "saved.safetensors")
    with pytest.MonkeyPatch.context() as mp:  # a private models/l2p so nothing lands in the shared one
        import folder_paths

        mp.setattr(folder_paths, "models_dir", str(tmp_path))
        (name,) = convert_nodes.L2PSaveCheckpoint.execute(model, "saved", OFFICIAL).args
        os.replace(tmp_path / files.L2P_FOLDER / name, saved)

    common = {p: _common(p) for p in (conv, rehead, trained, saved)}
    assert common[conv] == {"l2p.layout": COMFY, "l2p.pack_version": pack_version()}
    assert all(c == {"l2p.layout": OFFICIAL, "l2p.pack_version": pack_version()} for p, c in common.items()
               if p != conv)


# ---------------------------------------------------------------------------------------------- one load

def test_a_load_reads_checks_and_infers_once(tmp_path, l2p_sd, monkeypatch):
    """L2PModelLoader's path: the file is read once, checked once and its configuration inferred once."""
    from harness.inprocess import import_pack

    pack = import_pack()
    core = importlib.import_module(f"{pack.__name__}.nodes.comfy_core")
    layouts = importlib.import_module(f"{pack.__name__}.l2p.format.layouts")
    tensor_io = importlib.import_module(f"{pack.__name__}.l2p.format.tensor_io")
    calls: list[str] = []

    def counted(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counted(layouts, "check_l2p")
    counted(layouts, "trunk_config")
    counted(tensor_io, "_check_name")
    path = str(tmp_path / "m.safetensors")
    save_safetensors_atomic(l2p_sd, path)
    model = core.load_l2p_file(path, dtype=torch.float32)
    assert sorted(calls) == ["_check_name", "check_l2p", "trunk_config"]
    assert model.model.diffusion_model.local_decoder is not None
    got = model.model.diffusion_model.state_dict()
    want = official_to_comfy(l2p_sd)
    assert all(torch.equal(got[k], want[k]) for k in want)
