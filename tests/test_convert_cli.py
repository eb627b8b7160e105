"""`python -m l2p.convert` and the streamed safetensors I/O it stands on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import safetensors
import torch

from l2p.convert import latent_to_l2p
from l2p.format.layouts import check_l2p, infer_config
from l2p.format.tensor_io import (
    DictSource,
    PlannedTensor,
    open_source,
    save_safetensors_atomic,
    tensors_hash,
    write_safetensors,
)
from l2p.tiny import tiny_latent_zimage
from tests.test_convert_nodes import write_diffusers_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "l2p.convert", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def summary_rows(stdout: str) -> dict[str, str]:
    """The CLI's summary (``wrote PATH`` then ``  label  value`` rows) as label -> value; nothing else printed."""
    first, *rows = stdout.rstrip("\n").splitlines()
    assert first.startswith("wrote ") and all(r.startswith("  ") for r in rows), stdout
    return {"wrote": first[len("wrote "):], **dict(r.strip().split(None, 1) for r in rows)}


def test_cli_converts_a_diffusers_folder_like_the_library(tmp_path):
    source = tiny_latent_zimage(seed=4)
    write_diffusers_folder(tmp_path / "Z-Image-Tiny", source)
    out = tmp_path / "out" / "l2p.safetensors"
    done = run_cli("--source", str(tmp_path / "Z-Image-Tiny"), "--out", str(out), "--policy", "paper",
                   "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert "converting" in done.stderr  # the progress bar
    with safetensors.safe_open(str(out), "pt") as f:
        meta, sd = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    check_l2p(sd)
    assert infer_config(sd).patch_size == 16
    assert meta["l2p.policy"] == "paper" and meta["l2p.layout"] == "official"
    assert meta["l2p.source_hash"] == tensors_hash(DictSource(source))
    expected = latent_to_l2p(source, seed=3)
    assert sd.keys() == expected.keys() and all(torch.equal(sd[k], expected[k]) for k in sd)
    assert meta["l2p.source_name"] == "Z-Image-Tiny"  # the folder's name and the hash, never the path
    assert not [k for k, v in meta.items() if str(tmp_path) in v]
    summary = summary_rows(done.stdout)
    assert summary["wrote"] == str(out) and summary["architecture"] == "Z-Image (Turbo or base)"
    assert (summary["patch"], summary["head"], summary["layout"]) == ("16", "1k", "official")
    assert summary["source"] == f"Z-Image-Tiny (sha256 {meta['l2p.source_hash'][:12]})"
    assert summary["trainable"] == meta["l2p.policy_report"] and summary["trainable"].startswith("paper: ")
    total = sum(v.numel() for v in sd.values())
    head = sum(v.numel() for k, v in sd.items() if k.startswith("local_decoder."))
    assert summary["parameters"] == f"{total:,} ({head:,} in the Detailer Head)"

    again = run_cli("--source", str(tmp_path / "Z-Image-Tiny"), "--out", str(out))
    assert again.returncode == 2 and "exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_cli_comfy_layout_and_one_line_errors(tmp_path):
    from l2p.format.layouts import official_to_comfy

    src = tmp_path / "src.safetensors"
    save_safetensors_atomic(official_to_comfy(tiny_latent_zimage(seed=1)), str(src))
    out = tmp_path / "comfy.safetensors"
    done = run_cli("--source", str(src), "--out", str(out), "--layout", "comfy", "--patch", "32")
    assert done.returncode == 0, done.stderr
    with safetensors.safe_open(str(out), "pt") as f:
        assert f.get_slice("x_embedder.weight").get_shape() == [256, 32 * 32 * 3]
        assert "layers.0.attention.qkv.weight" in f.keys()
    for args, message in [
        (["--source", str(tmp_path / "missing.safetensors")], "does not exist"),
        (["--source", str(src), "--policy", "custom:0-9"], "outside 0-1"),
        (["--source", str(src), "--init", "vae_lsq"], "needs the source's VAE"),
        (["--source", str(out)], "already an L2P model"),
    ]:
        bad = run_cli(*args, "--out", str(tmp_path / "bad.safetensors"))
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad.safetensors").exists()


def test_streamed_writer_round_trips_dtypes_and_metadata(tmp_path):
    sd = {"w": torch.randn(3, 5), "h": torch.randn(7).to(torch.bfloat16), "s": torch.tensor(2.5),
          "f8": torch.randn(4, 4).to(torch.float8_e4m3fn), "i": torch.arange(6).reshape(2, 3)}
    path = tmp_path / "x.safetensors"
    save_safetensors_atomic(sd, str(path), metadata={"a": "b", "n": {"k": 1}})
    src = open_source(str(path))
    assert src.metadata == {"a": "b", "n": '{"k": 1}'}
    assert all(torch.equal(src.get(k).float(), sd[k].float()) and src.get(k).dtype == sd[k].dtype for k in sd)


def test_writer_never_leaves_half_files_and_can_refuse_to_overwrite(tmp_path):
    path = tmp_path / "model.safetensors"
    save_safetensors_atomic({"a": torch.ones(2)}, str(path))

    def boom() -> torch.Tensor:
        raise RuntimeError("stopped half way")

    plan = [PlannedTensor("a", torch.empty(2, device="meta"), lambda: torch.zeros(2)),
            PlannedTensor("b", torch.empty(2, device="meta"), boom)]
    with pytest.raises(RuntimeError, match="half way"):
        write_safetensors(str(path), plan)
    assert torch.equal(open_source(str(path)).get("a"), torch.ones(2))  # the old file is intact
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temp file left
    with pytest.raises(FileExistsError):
        write_safetensors(str(path), plan[:1], overwrite=False)
    assert torch.equal(open_source(str(path)).get("a"), torch.ones(2))


def test_diffusers_folder_with_a_missing_shard_is_refused(tmp_path):
    write_diffusers_folder(tmp_path / "Z", tiny_latent_zimage(seed=0))
    (tmp_path / "Z" / "transformer" / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ValueError, match="missing shard diffusion_pytorch_model-00002"):
        open_source(str(tmp_path / "Z"))


def test_cli_high_resolution_heads_from_latent_and_from_1k(tmp_path):
    from l2p.pixel_dit import official_state_dict
    from l2p.tiny import tiny_l2p

    src = tmp_path / "latent.safetensors"
    save_safetensors_atomic(tiny_latent_zimage(seed=1), str(src))
    direct = tmp_path / "direct-4k.safetensors"
    done = run_cli("--source", str(src), "--out", str(direct), "--head", "4k")
    assert done.returncode == 0, done.stderr
    with safetensors.safe_open(str(direct), "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    assert infer_config(sd).head_variant == "4k" and infer_config(sd).patch_size == 64

    one_k = tmp_path / "l2p-1k.safetensors"
    save_safetensors_atomic(official_state_dict(*tiny_l2p(seed=2)), str(one_k))
    for head, patch in (("8k", 128), ("10k", 160)):
        out = tmp_path / f"l2p-{head}.safetensors"
        done = run_cli("--source", str(one_k), "--out", str(out), "--head", head)
        assert done.returncode == 0, done.stderr
        with safetensors.safe_open(str(out), "pt") as f:
            meta, sd = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        check_l2p(sd)
        assert (infer_config(sd).head_variant, infer_config(sd).patch_size) == (head, patch)
        assert meta["l2p.init"] == "rehead_from_1k" and "dec2.0.weight" in meta["l2p.inherited_head"]
    refused = run_cli("--source", str(one_k), "--out", str(tmp_path / "x.safetensors"))
    assert refused.returncode == 2 and "pass --head" in refused.stderr


def test_cli_rehead_inherits_what_fits_honours_the_width_and_writes_no_paths(tmp_path):
    """Issue 17: a re-head of a 4x narrower 1K model inherited only out_conv (the new head was official-width),
    --head-width-div was ignored, the metadata carried absolute paths and the file was mode 0600."""
    from tests.test_hr_convert import INHERITED, one_k

    trained = {  # what a trained 1K model carries: its run's config with the trainer machine's paths
        "l2p.policy": "paper", "l2p.steps": "100",
        "l2p.train_config": f'model = "{tmp_path}/models/l2p-1k.safetensors"\ndataset = "{tmp_path}/my data"\n'
                            'export_path = "C:\\\\Users\\\\me\\\\l2p-trained.safetensors"\nlr = 0.0001\n',
    }
    src = tmp_path / "l2p-1k.safetensors"
    save_safetensors_atomic(one_k(4), str(src), metadata=trained)
    out = tmp_path / "l2p-4k.safetensors"
    done = run_cli("--source", str(src), "--out", str(out), "--head", "4k")
    assert done.returncode == 0, done.stderr
    summary = summary_rows(done.stdout)
    with safetensors.safe_open(str(out), "pt") as f:
        meta, sd = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    check_l2p(sd)
    assert infer_config(sd).head_width_div == 4 and infer_config(sd).head_variant == "4k"
    assert meta["l2p.inherited_head"].split(",") == INHERITED["4k"]
    assert summary["inherited"] == "24 of 40 Detailer Head tensors from the 1k head (listed in l2p.inherited_head)"
    assert summary["head"] == "4k (4x narrower than the official head)" and summary["patch"] == "64"
    assert summary["embedder"] == "resized from patch 16 to 64"
    assert meta["l2p.policy"] == "paper" and meta["l2p.policy_report"].startswith("paper: ")  # re-counted
    assert meta["l2p.source_name"] == "l2p-1k.safetensors" and len(meta["l2p.source_hash"]) == 64
    assert not [k for k, v in meta.items() if str(tmp_path) in v or "Users" in v], meta
    assert meta["l2p.train_config"] == ('model = "l2p-1k.safetensors"\ndataset = "my data"\n'
                                        'export_path = "l2p-trained.safetensors"\nlr = 0.0001\n')
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask  # the user's normal mode, not mkstemp's 0600

    wide = tmp_path / "l2p-4k-wide.safetensors"
    done = run_cli("--source", str(src), "--out", str(wide), "--head", "4k", "--head-width-div", "1",
                   "--print-metadata")
    assert done.returncode == 0, done.stderr
    rows, _, metadata = done.stdout.partition("\n{")
    assert summary_rows(rows)["head"] == "4k" and summary_rows(rows)["inherited"].startswith("2 of 40 ")
    with safetensors.safe_open(str(wide), "pt") as f:
        assert json.loads("{" + metadata) == f.metadata()
    assert infer_config(open_source(str(wide)).meta).head_width_div == 1
    assert json.loads("{" + metadata)["l2p.inherited_head"] == "out_conv.bias,out_conv.weight"
    assert os.path.getsize(wide) > os.path.getsize(out)

    for args, message in [(["--patch", "32"], "takes patch 64"), (["--init", "vae_lsq"], "--init is for latent"),
                          (["--head-width-div", "3"], "does not divide")]:
        bad = run_cli("--source", str(src), "--out", str(tmp_path / "bad.safetensors"), "--head", "4k", *args)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad.safetensors").exists()
