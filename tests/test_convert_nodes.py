"""The conversion nodes in-process on tiny real-architecture sources: load a latent source (file or diffusers
folder), convert, save in both layouts, load back bit-identically; Lumina 2 sources; one-line refusals."""

from __future__ import annotations

import importlib
import json
import os

import pytest
import safetensors
import torch

from harness.inprocess import import_pack
from l2p.format.layouts import check_l2p, infer_config, official_to_comfy, strip_prefix
from l2p.format.tensor_io import save_safetensors_atomic
from l2p.tiny import FLUX_VAE_DDCONFIG, randomize_, tiny_latent_zimage


def pack_module(name: str):
    return importlib.import_module(f"{import_pack().__name__}.nodes.{name}")


@pytest.fixture
def models(tmp_path, monkeypatch):
    """A private models/ tree (diffusion_models, l2p) so nothing lands in the shared ComfyUI cache."""
    import_pack()
    import folder_paths

    for sub in ("diffusion_models", "l2p"):
        (tmp_path / sub).mkdir()
        monkeypatch.setitem(folder_paths.folder_names_and_paths, sub,
                            ([str(tmp_path / sub)], {".safetensors", ".sft"}))
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    return tmp_path


def lumina2_source(seed: int = 0) -> dict[str, torch.Tensor]:
    """A latent Lumina-Image 2.0 DiT of ComfyUI's own class: grouped-query attention, SiLU modulation."""
    import comfy.ops
    from comfy.ldm.lumina.model import NextDiT

    dit = NextDiT(patch_size=2, in_channels=16, dim=192, n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=1,
                  qk_norm=True, cap_feat_dim=64, axes_dims=[32, 32, 32], axes_lens=[300, 512, 512],
                  operations=comfy.ops.disable_weight_init)
    return {k: v.contiguous() for k, v in randomize_(dit, seed).state_dict().items() if not k.startswith("norm_final")}


def write_diffusers_folder(folder, sd: dict[str, torch.Tensor]) -> None:
    """Z-Image-Turbo's shape on disk: transformer/config.json + two shards + index."""
    tdir = folder / "transformer"
    tdir.mkdir(parents=True)
    names = sorted(sd)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": names[::2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_safetensors_atomic({k: sd[k] for k in keys}, str(tdir / shard))
    index = {"weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (tdir / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    (tdir / "config.json").write_text(json.dumps({"_class_name": "ZImageTransformer2DModel"}))


TINY_SOURCE = "tiny-zimage/"


def install_tiny_source(models_dir) -> str:
    """A tiny latent Z-Image as a diffusers folder in models/diffusion_models (once per server)."""
    folder = models_dir / "diffusion_models" / TINY_SOURCE.rstrip("/")
    if not folder.exists():
        write_diffusers_folder(folder, tiny_latent_zimage(seed=11))
    return TINY_SOURCE


def predict(model, x: torch.Tensor, sigma: float = 0.6) -> torch.Tensor:
    with torch.no_grad():
        return model.model.apply_model(x, torch.tensor([sigma]), c_crossattn=torch.ones(1, 5, 64) * 0.1,
                                       num_tokens=5)


def test_source_loader_reads_file_and_diffusers_folder_alike(models):
    convert = pack_module("convert")
    official = tiny_latent_zimage(seed=3)
    save_safetensors_atomic({f"model.diffusion_model.{k}": v for k, v in official_to_comfy(official).items()},
                            str(models / "diffusion_models" / "zimage-comfy.safetensors"))
    write_diffusers_folder(models / "diffusion_models" / "Z-Image-Tiny", official)
    names = pack_module("files").source_names()
    assert names == ["zimage-comfy.safetensors", "Z-Image-Tiny/"]
    a, text = convert.L2PSourceModelLoader.execute("zimage-comfy.safetensors", "fp32").args
    b, _ = convert.L2PSourceModelLoader.execute("Z-Image-Tiny/", "fp32").args
    assert text.startswith("Z-Image") and "2 blocks" in text and "16 channels" in text
    x = torch.randn(1, 16, 8, 12)
    pa, pb = predict(a, x), predict(b, x)
    assert pa.shape == x.shape and torch.isfinite(pa).all() and torch.equal(pa, pb)


def test_source_loader_matches_diffusers_z_image(models):
    """The latent source built from shapes computes what diffusers' Z-Image computes with the same weights."""
    from diffusers import ZImageTransformer2DModel

    official = tiny_latent_zimage(seed=5)
    save_safetensors_atomic(official, str(models / "diffusion_models" / "z.safetensors"))
    model, _ = pack_module("convert").L2PSourceModelLoader.execute("z.safetensors", "fp32").args
    ref = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=256, n_layers=2,
                                   n_refiner_layers=1, n_heads=4, n_kv_heads=4, cap_feat_dim=64,
                                   axes_dims=[16, 24, 24])
    ref.load_state_dict(official)
    x, cap, sigma = torch.randn(1, 16, 8, 8), torch.ones(5, 64) * 0.1, 0.6
    with torch.no_grad():
        out = ref([x[0].unsqueeze(1)], torch.tensor([1 - sigma]), [cap], patch_size=2)
    velocity = -(out[0] if isinstance(out, (list, tuple)) else out.sample)[0].squeeze(1)  # noise - x0
    got = predict(model, x, sigma)[0]  # ComfyUI's denoised x0 = x - sigma * velocity
    want = x[0] - sigma * velocity
    assert ((got - want).norm() / want.norm()).item() < 1e-4


@pytest.mark.parametrize("layout", ["official", "comfy"])
def test_convert_save_load_is_bit_identical(models, layout):
    convert, loader = pack_module("convert"), pack_module("loader")
    save_safetensors_atomic(tiny_latent_zimage(seed=1), str(models / "diffusion_models" / "src.safetensors"))
    source, _ = convert.L2PSourceModelLoader.execute("src.safetensors", "fp32").args
    pixel, report = convert.L2PConvert.execute(source, 16, "official", "paper", "", 7).args
    assert "paper:" in report and "trainable" in report
    x = torch.randn(1, 3, 32, 48)
    assert predict(pixel, x).shape == x.shape
    src_qkv = source.model.diffusion_model.layers[1].attention.qkv.weight
    assert torch.equal(pixel.model.diffusion_model.layers[1].attention.qkv.weight, src_qkv)  # copied, not re-init

    (name,) = convert.L2PSaveCheckpoint.execute(pixel, "converted/tiny", layout).args
    assert name == "converted/tiny_00001.safetensors"
    path = models / "l2p" / name
    with safetensors.safe_open(str(path), "pt") as f:
        meta = f.metadata()
        sd = {k: f.get_tensor(k) for k in f.keys()}
    check_l2p(strip_prefix(sd))
    assert infer_config(sd).patch_size == 16
    assert meta["l2p.layout"] == layout and meta["l2p.policy"] == "paper" and meta["l2p.arch"] == "z-image"
    assert meta["l2p.init"] == "official" and len(meta["l2p.source_hash"]) == 64 and meta["l2p.pack_version"]
    assert ("layers.0.attention.to_q.weight" in sd) == (layout == "official")

    (again,) = loader.L2PModelLoader.execute(name, "default").args
    a, b = pixel.model.diffusion_model.state_dict(), again.model.diffusion_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(predict(pixel, x), predict(again, x))
    (second,) = convert.L2PSaveCheckpoint.execute(again, "converted/tiny", layout).args
    assert second == "converted/tiny_00002.safetensors"  # never overwrites
    with safetensors.safe_open(str(models / "l2p" / second), "pt") as f:
        assert f.metadata()["l2p.source_hash"] == meta["l2p.source_hash"]  # metadata travels with the model


def test_lumina2_source_converts_and_keeps_its_conventions(models):
    convert, loader = pack_module("convert"), pack_module("loader")
    save_safetensors_atomic(lumina2_source(), str(models / "diffusion_models" / "lumina.safetensors"))
    source, text = convert.L2PSourceModelLoader.execute("lumina.safetensors", "fp32").args
    assert text.startswith("Lumina-Image 2.0") and "default shift 6" in text
    assert predict(source, torch.randn(1, 16, 8, 8)).isfinite().all()
    pixel, _ = convert.L2PConvert.execute(source, 16, "official", "official", "", 0).args
    assert type(pixel.model.model_config).__name__ == "Lumina2L2P"
    assert pixel.model.model_sampling.shift == pytest.approx(6.0)
    with pytest.raises(ValueError, match="official layout exists only for Z-Image"):
        convert.L2PSaveCheckpoint.execute(pixel, "lumina", "official")
    (name,) = convert.L2PSaveCheckpoint.execute(pixel, "lumina", "comfy").args
    (again,) = loader.L2PModelLoader.execute(name, "default").args
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(predict(pixel, x), predict(again, x))


def test_vae_init_fits_the_embedder_through_a_real_comfy_vae(models):
    """A ComfyUI VAE of the Flux/Z-Image architecture (random weights): the least-squares embedder reproduces
    the source's embedding of the VAE latents far better than the official random init."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    convert = pack_module("convert")
    vae = comfy.sd.VAE(sd=randomize_(AutoencoderKL(ddconfig=FLUX_VAE_DDCONFIG, embed_dim=16), seed=0).state_dict())
    save_safetensors_atomic(tiny_latent_zimage(seed=2), str(models / "diffusion_models" / "src.safetensors"))
    source, _ = convert.L2PSourceModelLoader.execute("src.safetensors", "fp32").args
    images = torch.rand(2, 64, 64, 3)
    pairs = convert._fit_pairs(source.model, vae, images, pack_module("comfy_core").ARCHITECTURES["z-image"], 16)
    latent_embedder = source.model.diffusion_model.x_embedder
    target = latent_embedder(pairs[1])  # what the source's first layer sees for these patches
    errors = {}
    for init in ("official", "vae_lsq", "vae_orth"):
        pixel, report = convert.L2PConvert.execute(source, 16, init, "official", "", 0, vae, images).args
        assert f"init {init}" in report
        with torch.no_grad():
            errors[init] = ((pixel.model.diffusion_model.x_embedder(pairs[0]) - target) ** 2).mean().item()
    assert errors["vae_lsq"] < 0.1 * errors["official"]
    assert errors["vae_orth"] != errors["official"]  # orthonormal: exact noise statistics, not the least error
    with pytest.raises(ValueError, match="needs the source's VAE"):
        convert.L2PConvert.execute(source, 16, "vae_lsq", "official", "", 0)


def test_distill_init_through_the_node_aligns_and_leaves_the_source_alone(models, monkeypatch):
    """L2P Convert with init distill on a 4-block source and a real ComfyUI VAE: the report says what it trained,
    the model carries l2p.distill, samples, and the source MODEL's weights are untouched."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    convert = pack_module("convert")
    monkeypatch.setattr(convert, "DISTILL_SIZE", 32)  # the real-width VAE on 256 px images is slow on a CPU
    vae = comfy.sd.VAE(sd=randomize_(AutoencoderKL(ddconfig=FLUX_VAE_DDCONFIG, embed_dim=16), seed=0).state_dict())
    save_safetensors_atomic(tiny_latent_zimage(seed=2, n_layers=4), str(models / "diffusion_models" / "s.safetensors"))
    source, _ = convert.L2PSourceModelLoader.execute("s.safetensors", "fp32").args
    before = {k: v.clone() for k, v in source.model.diffusion_model.state_dict().items()}
    images = torch.rand(3, 40, 48, 3)
    pixel, report = convert.L2PConvert.execute(source, 16, "distill", "paper", "", 0, vae, images, 2).args
    assert "distill: tokens aligned at block 1 by all_x_embedder.16-1, layers.0, noise_refiner.0" in report
    meta = pixel.get_attachment(pack_module("comfy_core").METADATA)
    assert meta["l2p.init"] == "distill" and json.loads(meta["l2p.distill"])["images"] == 2 * 2 * 2
    after = source.model.diffusion_model.state_dict()
    # bit for bit: 0.3.75's unused norm_final is left uninitialised by core, and may hold NaN
    bits = lambda t: t.reshape(-1).view(torch.uint8)  # noqa: E731
    assert all(torch.equal(bits(before[k]), bits(after[k])) for k in before)
    x = torch.randn(1, 3, 32, 32)
    assert predict(pixel, x).isfinite().all()
    with pytest.raises(ValueError, match="needs the source's VAE"):
        convert.L2PConvert.execute(source, 16, "distill", "paper", "", 0)


def test_refusals_are_one_line(models):
    convert = pack_module("convert")
    save_safetensors_atomic({"double_blocks.0.img_attn.qkv.weight": torch.zeros(6, 2)},
                            str(models / "diffusion_models" / "flux-like.safetensors"))
    with pytest.raises(ValueError, match="Flux-style .* not supported yet: supported sources are Z-Image") as e:
        convert.L2PSourceModelLoader.execute("flux-like.safetensors", "default")
    assert "\n" not in str(e.value)
    save_safetensors_atomic(tiny_latent_zimage(seed=1), str(models / "diffusion_models" / "src.safetensors"))
    source, _ = convert.L2PSourceModelLoader.execute("src.safetensors", "fp32").args
    with pytest.raises(ValueError, match="convert it with L2P Convert first"):
        convert.L2PSaveCheckpoint.execute(source, "x", "official")
    pixel, _ = convert.L2PConvert.execute(source, 16, "official", "official", "", 0).args
    with pytest.raises(ValueError, match="already an L2P pixel model"):
        convert.L2PConvert.execute(pixel, 16, "official", "official", "", 0)
    with pytest.raises(ValueError, match="bad block range"):
        convert.L2PConvert.execute(source, 16, "official", "custom", "0-x", 0)
    for bad in ("../escape", "/abs/path", "a/../../b"):
        with pytest.raises(ValueError, match="inside l2p"):
            convert.L2PSaveCheckpoint.execute(pixel, bad, "official")
    assert not any(p.name.startswith(".partial") for p in (models / "l2p").rglob("*"))
    assert sorted(os.listdir(models)) == ["diffusion_models", "l2p"]
