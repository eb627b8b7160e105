"""The Detailer Heads (0.5k / 1k / 4k / 8k / 10k): official keys and shapes, detection, forward sizes and refusals,
receptive radius, exact tiling and the memory estimate.

Facts checked against /work/shared/research/uhr-heads.md §2-§4 and l2p-technical.md §1.3. Runs with 2 CPU
cores: heavy checks (receptive field, tiling) use *slim* copies of the head classes, subclasses with the same
stages, pooling, patch, grid and forward code but one channel per conv. Spatial dependencies do not depend on
channel counts, so these exercise exactly the code paths of the real heads at a fraction of the cost.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

import l2p.head as head_mod
import l2p.head_tiling as tiling_mod
from l2p.head import (
    HEAD_VARIANTS,
    DetailerHead,
    DetailerHead1K,
    build_head,
    detect_head_variant,
    head_multiple,
    variant_for_patch,
)
from l2p.head_tiling import (
    LiveBytes,
    auto_tile_size,
    fewest_tiles_tile,
    head_memory_bytes,
    peak_activation_channels,
    peak_activation_elements,
    run_head_tiled,
    tile_grid,
    tile_halo,
    tiled_memory_bytes,
)

VARIANTS = ("0.5k", "1k", "4k", "8k", "10k")
D = 3840


def _table(rows: str) -> dict[str, tuple[int, ...]]:
    """``name ci co`` rows -> {key: shape}: enc/dec 3x3 at .0, up 3x3 at .1, bottleneck/out_conv 1x1."""
    out = {}
    for row in rows.split(";"):
        name, ci, co = row.split()
        ci, co = int(ci), int(co)
        if name in ("bottleneck", "out_conv"):
            prefix, k = ("bottleneck.0" if name == "bottleneck" else "out_conv"), 1
        else:
            prefix, k = f"{name}.1" if name.startswith("up") else f"{name}.0", 3
        out[f"{prefix}.weight"] = (co, ci, k, k)
        out[f"{prefix}.bias"] = (co,)
    return out


# Written out from uhr-heads.md §2 (4k/8k/10k) and l2p-technical.md §1.3 (1k), D = 3840; 0.5k (the pack's own, for
# 8-pixel patches) is the 1k table without its innermost level.
_4K_CORE = ("enc0 3 16; enc0b 16 32; enc1 32 64; enc2 64 128; enc3 128 256; enc4 256 512; bottleneck 4352 512; "
            "up4 512 512; dec4 1024 256; up3 256 256; dec3 512 128; up2 128 128; dec2 256 64; up1 64 64; "
            "dec1 128 32; up0b 32 32; dec0b 64 16; up0 16 16; dec0 32 16")
OFFICIAL = {
    "0.5k": _table("enc1 3 64; enc2 64 128; enc3 128 256; bottleneck 4096 512; up3 512 256; dec3 512 128; "
                   "up2 128 128; dec2 256 64; up1 64 64; dec1 128 64; out_conv 64 3"),
    "1k": _table("enc1 3 64; enc2 64 128; enc3 128 256; enc4 256 512; bottleneck 4352 512; up4 512 512; "
                 "dec4 1024 256; up3 256 256; dec3 512 128; up2 128 128; dec2 256 64; up1 64 64; dec1 128 64; "
                 "out_conv 64 3"),
    "4k": _table(_4K_CORE + "; out_conv 16 3"),
    "8k": _table("enc_8k 3 3; " + _4K_CORE + "; up_8k 16 16; dec_8k 19 16; out_conv 16 3"),
    "10k": _table("enc_10k_a 3 3; enc0 3 16; enc0b 16 32; enc1 32 64; enc2 64 128; enc3 128 256; "
                  "bottleneck 4096 512; up3 512 256; dec3 512 128; up2 128 128; dec2 256 64; up1 64 64; "
                  "dec1 128 32; up0b 32 32; dec0b 64 16; up0 16 16; dec0 32 16; up_10k_a 16 16; "
                  "dec_10k_a 19 16; out_conv 16 3"),
}
PARAMS = {"0.5k": 4_644_355, "1k": 10_085_123, "4k": 10_095_299, "8k": 10_100_455, "10k": 4_659_687}
PATCH = {"0.5k": 8, "1k": 16, "4k": 64, "8k": 128, "10k": 160}
MULTIPLE = {"0.5k": 8, "1k": 16, "4k": 64, "8k": 128, "10k": 320}
RADIUS = {"0.5k": 28, "1k": 60, "4k": 252, "8k": 508, "10k": 252}  # 4k/8k/10k: uhr-heads.md §4; 1k: measured below
HALO = {"0.5k": 32, "1k": 64, "4k": 256, "8k": 512, "10k": 320}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP threads contend and these small ops run ~5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def slim(variant: str) -> type[DetailerHead]:
    """The variant's head class with one channel per conv (same stages, pooling, patch, grid, forward)."""
    cls = HEAD_VARIANTS[variant].cls
    stages = tuple(st._replace(enc_out=1, up_out=1, dec_out=1) for st in cls.STAGES)
    return type(f"Slim{cls.__name__}", (cls,), {"STAGES": stages, "bottleneck_out": 1})


def seeded(cls, feature_dim: int, dtype=torch.float64, seed: int = 0) -> DetailerHead:
    torch.manual_seed(seed)
    return cls(feature_dim, dtype=dtype).requires_grad_(False)


# ---------------------------------------------------------------------------------------------- keys, shapes


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_keys_shapes_and_parameter_count(variant):
    head = build_head(variant, D, device="meta")
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == OFFICIAL[variant]
    assert sorted(HEAD_VARIANTS[variant].expected_keys()) == sorted(OFFICIAL[variant])
    assert sum(p.numel() for p in head.parameters()) == PARAMS[variant]


def test_spot_shapes_from_the_table():
    sd = {v: build_head(v, D, device="meta").state_dict() for v in VARIANTS}
    assert sd["4k"]["bottleneck.0.weight"].shape == (512, 4352, 1, 1)
    assert sd["10k"]["bottleneck.0.weight"].shape == (512, 4096, 1, 1)
    assert sd["10k"]["up3.1.weight"].shape == (256, 512, 3, 3)
    assert sd["4k"]["up3.1.weight"].shape == (256, 256, 3, 3)
    assert sd["8k"]["dec_8k.0.weight"].shape == (16, 19, 3, 3)
    assert sd["10k"]["dec_10k_a.0.weight"].shape == (16, 19, 3, 3)
    assert not any(k.startswith(("enc4", "up4", "dec4")) for k in sd["10k"])
    # 8K holds every 4K tensor with the same shape (uhr-heads.md §2, weight transfer)
    assert all(sd["8k"][k].shape == v.shape for k, v in sd["4k"].items())


def test_1k_keys_and_order_unchanged():
    head = DetailerHead1K(D, device="meta")
    assert list(head.state_dict()) == DetailerHead1K.expected_keys()
    assert DetailerHead1K.expected_keys()[:2] == ["enc1.0.weight", "enc1.0.bias"]
    assert DetailerHead1K.channels == (64, 128, 256, 512) and DetailerHead1K.levels == 4


@pytest.mark.parametrize("variant", VARIANTS)
def test_detection_from_key_sets(variant):
    keys = OFFICIAL[variant]
    assert detect_head_variant(f"local_decoder.{k}" for k in keys) == variant
    assert detect_head_variant(f"model.diffusion_model.local_decoder.{k}" for k in keys) == variant


def test_detection_defaults_to_1k_and_ignores_other_keys():
    assert detect_head_variant(["layers.0.attention.qkv.weight"]) == "1k"
    assert detect_head_variant(["enc0.0.weight"]) == "1k"  # not a local_decoder key


@pytest.mark.parametrize("variant", VARIANTS)
def test_class_attributes_and_registry(variant):
    cls = HEAD_VARIANTS[variant].cls
    assert (cls.patch_size, cls.multiple, cls.receptive_radius) == (PATCH[variant], MULTIPLE[variant],
                                                                    RADIUS[variant])
    assert cls.variant == variant
    assert cls.multiple % 2 ** cls.levels == 0 and cls.multiple % cls.patch_size == 0
    assert head_multiple(variant) == MULTIPLE[variant]
    assert variant_for_patch(PATCH[variant]) == variant
    assert (tile_grid(cls), tile_halo(cls)) == (MULTIPLE[variant], HALO[variant])


def test_variant_for_unknown_patch_names_the_supported_ones():
    with pytest.raises(ValueError, match=r"patch size 32: supported patches are 8 \(0.5k\), 16 \(1k\), 64 \(4k\), "
                                         r"128 \(8k\), 160 \(10k\)$"):
        variant_for_patch(32)


# --------------------------------------------------------------------------------- forward, memory, refusals


SMALLEST = {"0.5k": (16, 24), "1k": (32, 48), "4k": (128, 192), "8k": (128, 256), "10k": (320, 640)}
# Tall enough that sampling decodes the outer level(s) in row strips (l2p.head.STREAM_MIN_ROWS); 1k: its
# second level, 264 rows, in 34-row strips and a shorter last one.
STREAMED = {"0.5k": (528, 64), "1k": (528, 64), "4k": (512, 128), "8k": (512, 256), "10k": (640, 320)}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("sizes", [SMALLEST, STREAMED], ids=["whole", "strips"])
def test_forward_shape_and_measured_peak_memory(variant, sizes):
    """Real heads: the estimate's trace (the forward on the meta device) matches the live bytes of the real
    sampling forward on the CPU exactly, and the sampling forward (SiLUs in place, outer skips recomputed,
    strips) gives the training forward's output: equal in float64, within float32 rounding in float32 (a conv on
    fewer rows may take another kernel, which sums in another order)."""
    height, width = sizes[variant]
    feature_dim = 2
    head = seeded(HEAD_VARIANTS[variant].cls, feature_dim, dtype=torch.float32)
    p = PATCH[variant]
    x = torch.randn(1, 3, height, width)
    f = torch.randn(1, feature_dim, height // p, width // p)
    mode = LiveBytes(x, f, *head.parameters())
    with torch.no_grad(), mode:
        out = head(x, f)
    assert out.shape == x.shape and torch.isfinite(out).all()
    estimate = peak_activation_elements(variant, height, width, feature_dim=feature_dim) * 4
    # the estimate also counts the 3 input channels (a tile slice may be copied); nothing else differs
    assert mode.peak == estimate - 3 * height * width * 4
    assert (out - head(x, f).detach()).abs().max().item() < 1e-6 * max(1.0, out.abs().max().item())
    head, x, f = head.double(), x.double(), f.double()
    with torch.no_grad():
        sampled = head(x, f)
    assert (sampled - head(x, f).detach()).abs().max().item() < 1e-12


def test_strips_and_recomputed_skips_are_what_lowers_the_peak(monkeypatch):
    """The trace is sensitive to the sampling layout: whole levels with kept skips peak far higher (measured)."""
    height, width = STREAMED["4k"]
    head = seeded(HEAD_VARIANTS["4k"].cls, 2, dtype=torch.float32)
    x, f = torch.randn(1, 3, height, width), torch.randn(1, 2, height // 64, width // 64)
    monkeypatch.setattr(head_mod, "stream_rows", lambda rows: rows)
    monkeypatch.setattr(head_mod, "RECOMPUTED_LEVELS", 0)
    mode = LiveBytes(x, f, *head.parameters())
    with torch.no_grad(), mode:
        head(x, f)
    monkeypatch.undo()
    assert mode.peak > 3 * peak_activation_elements("4k", height, width, 2) * 4


def test_10k_token_map_uses_legacy_nearest():
    """10240² official: 64 tokens -> 160 cells, src = floor(0.4 i); a 640-wide image: 4 tokens -> 10 cells."""
    head = seeded(slim("10k"), 1)
    f = torch.arange(4, dtype=torch.float64).reshape(1, 1, 1, 4).expand(1, 1, 2, 4)
    cells = head.fit_features(f, torch.Size((5, 10)), (320, 640))[0, 0, 0].tolist()
    assert cells == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert head.fit_features(torch.zeros(1, 1, 64, 64), torch.Size((160, 160)), (10240, 10240)).shape[-2:] == (160,
                                                                                                               160)


def test_1k_still_interpolates_a_coarser_feature_map():
    head = seeded(slim("1k"), 2)
    x = torch.randn(1, 3, 32, 64, dtype=torch.float64)
    f = torch.randn(1, 2, 1, 2, dtype=torch.float64)
    assert torch.equal(head(x, f), head(x, F.interpolate(f, size=(2, 4), mode="nearest")))


@pytest.mark.parametrize("variant,size", [("1k", (24, 32)), ("4k", (100, 128)), ("4k", (128, 96)),
                                          ("8k", (128, 192)), ("10k", (160, 320)), ("10k", (320, 480))])
def test_refuses_sizes_that_are_not_multiples(variant, size):
    head = seeded(slim(variant), 1)
    m = MULTIPLE[variant]
    x = torch.zeros(1, 3, *size, dtype=torch.float64)
    f = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=f"{variant} Detailer Head needs image sides that are multiples of {m}, got "
                                         f"{size[0]}x{size[1]}"):
        head(x, f)


@pytest.mark.parametrize("variant", ["4k", "8k"])
def test_4k_8k_refuse_a_feature_map_off_the_token_grid(variant):
    head = seeded(slim(variant), 1)
    p = PATCH[variant]
    x = torch.zeros(1, 3, 2 * p, 3 * p, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"H/{p} x W/{p} = 2x3 tokens for a {2 * p}x{3 * p} image, got 3x3"):
        head(x, torch.zeros(1, 1, 3, 3, dtype=torch.float64))


def test_tiling_refuses_a_feature_map_off_the_token_grid():
    head = seeded(slim("1k"), 1)
    with pytest.raises(ValueError, match="token grid, 4x4 for a 64x64 image, got 2x2"):
        run_head_tiled(head, torch.zeros(1, 3, 64, 64, dtype=torch.float64),
                       torch.zeros(1, 1, 2, 2, dtype=torch.float64), 16)


# ---------------------------------------------------------------------------------------- receptive radius


def _extents(levels: int, p: int) -> tuple[int, int]:
    """Exact 1-D support of output pixel p (left, right distance) by interval propagation through the U-Net."""

    @functools.cache
    def enc(level, a, b):  # enc output cells [a, b] at this level -> input pixels
        a, b = a - 1, b + 1  # 3x3 conv
        return (a, b) if level == 0 else enc(level - 1, 2 * a, 2 * b + 1)  # through the pool below

    @functools.cache
    def dec(level, a, b):  # decoder output (or bottleneck at level == levels) cells [a, b] -> input pixels
        if level == levels:
            return enc(level - 1, 2 * a, 2 * b + 1)
        a, b = a - 1, b + 1  # dec 3x3 conv over cat([up, skip])
        skip = enc(level, a, b)
        up = dec(level + 1, (a - 1) // 2, (b + 1) // 2)  # up 3x3 conv, then nearest 2x
        return min(skip[0], up[0]), max(skip[1], up[1])

    lo, hi = dec(0, p, p)
    return p - lo, hi - p


@pytest.mark.parametrize("variant", VARIANTS)
def test_receptive_radius_by_gradient_support(variant, monkeypatch):
    """Gradient support of single output columns (max-pool swapped for avg-pool, which has the same window but
    passes gradient to all four inputs) equals interval propagation at every position of a pooling cell (1k,
    4k) or at its extreme positions (8k, 10k); interval propagation over the whole cell gives the radius."""
    monkeypatch.setattr(head_mod, "_pool", lambda h: F.avg_pool2d(h, 2))
    cls = HEAD_VARIANTS[variant].cls
    cell, radius, m, p = 2 ** cls.levels, cls.receptive_radius, cls.multiple, cls.patch_size
    assert max(max(_extents(cls.levels, q)) for q in range(cell)) == radius
    width = -(-(cell + radius + 1) // m) * m
    # right extents near the left border, left extents near the right border (each side's other end is cut)
    # every position of a pooling cell for 1k/4k; for 8k/10k (costlier) the cell ends and the positions where
    # interval propagation puts the largest reach (q = 2 to the right, q = cell - 3 to the left)
    qs = range(cell) if variant in ("1k", "4k") else (0, 1, 2, 3, cell - 4, cell - 3, cell - 2, cell - 1)
    probes = [(q, "right") for q in qs] + [(width - cell + q, "left") for q in qs]
    head = seeded(slim(variant), 1)
    n = len(probes)
    x = torch.randn(n, 3, m, width, dtype=torch.float64, requires_grad=True)
    f = torch.randn(n, 1, m // p, width // p, dtype=torch.float64)
    out = head(x, f)
    cols = torch.tensor([q for q, _ in probes])
    (grad,) = torch.autograd.grad(out[torch.arange(n), :, :, cols].sum(), x)
    support = grad.abs().sum(dim=(1, 2)) != 0
    measured = []
    for b, (q, side) in enumerate(probes):
        idx = support[b].nonzero().flatten()
        got = int(idx.max()) - q if side == "right" else q - int(idx.min())
        left, right = _extents(cls.levels, q % cell)
        assert got == (right if side == "right" else left), (q, side)
        measured.append(got)
    assert max(measured) == radius == RADIUS[variant]


# ------------------------------------------------------------------------------------------------- tiling

TILED = [  # (variant, height, width, tile, batch): each case has tiles with halo edges inside the image
    ("1k", 128, 128, 32, 2),  # 4x4 tiles
    ("4k", 640, 384, 128, 1),  # 5x3 tiles
    ("8k", 1280, 256, 256, 1),  # 5x1 tiles (halo 512)
    ("8k", 128, 1024, 384, 1),  # 1x3 tiles, a core that is not a power of two
    ("10k", 320, 1280, 320, 1),  # 1x4 tiles: the floor(0.4 i) token mapping restarts at every 320 px origin
]


def _tiling_inputs(variant, height, width, batch=1, feature_dim=2):
    head = seeded(slim(variant), feature_dim)
    p = PATCH[variant]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, height, width, dtype=torch.float64, generator=gen)
    f = torch.randn(batch, feature_dim, height // p, width // p, dtype=torch.float64, generator=gen)
    return head, x, f


@pytest.mark.parametrize("variant,height,width,tile,batch", TILED)
def test_tiled_equals_untiled(variant, height, width, tile, batch):
    head, x, f = _tiling_inputs(variant, height, width, batch)
    with torch.no_grad():
        full = head(x, f)
        tiled = run_head_tiled(head, x, f, tile)
    assert tiled.shape == full.shape
    assert (tiled - full).abs().max().item() < 1e-12


def test_tiled_equals_untiled_real_4k_head():
    """The full-width 4k head (real channel counts) tiled along W: identical in float64."""
    head = seeded(HEAD_VARIANTS["4k"].cls, 2)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 3, 64, 640, dtype=torch.float64, generator=gen)
    f = torch.randn(1, 2, 1, 10, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        assert (run_head_tiled(head, x, f, 128) - head(x, f)).abs().max().item() < 1e-12


def test_halo_is_needed(monkeypatch):
    """The check above is sensitive: with a 32 px halo the 1k head's tiles differ. (48 px, below the 60 px
    radius, is still exact: tile edges are grid-aligned and the pixels that reach 60 px sit 13 px inside their
    16 px cell, so a halo of 3 * 2**levels = 48 suffices; run_head_tiled keeps the documented radius rule.)"""
    head, x, f = _tiling_inputs("1k", 128, 128)
    with torch.no_grad():
        full = head(x, f)
        monkeypatch.setattr(tiling_mod, "tile_halo", lambda h: 32)
        assert (run_head_tiled(head, x, f, 32) - full).abs().max().item() > 1e-9
        monkeypatch.setattr(tiling_mod, "tile_halo", lambda h: 48)
        assert (run_head_tiled(head, x, f, 32) - full).abs().max().item() < 1e-12


def test_tile_rounding_and_untiled_cases():
    head, x, f = _tiling_inputs("1k", 64, 96)
    with torch.no_grad():
        full = head(x, f)
        assert torch.equal(run_head_tiled(head, x, f, 0), full)
        assert torch.equal(run_head_tiled(head, x, f, 96), full)  # one tile covers the image
        assert (run_head_tiled(head, x, f, 20) - full).abs().max().item() < 1e-12  # rounded up to 32


# ------------------------------------------------------------------------------------------ memory estimate


def test_memory_estimates_scale_and_order():
    per_px = {v: round(peak_activation_channels(v), 1) for v in VARIANTS}  # at each head's native size
    assert per_px == {"0.5k": 95.0, "1k": 53.0, "4k": 14.1, "8k": 12.4, "10k": 12.4}  # whole levels: 275, 71, 54, 54
    b = head_memory_bytes("4k", 4096, 4096, 1, 2)
    assert abs(head_memory_bytes("4k", 4096, 4096, 2, 2) - 2 * b) <= 1  # linear in batch and element size
    assert abs(head_memory_bytes("4k", 4096, 4096, 1, 4) - 2 * b) <= 1
    assert tiled_memory_bytes("4k", 4096, 4096, 1, 2, 512) < b
    assert tiled_memory_bytes("4k", 4096, 4096, 1, 2, 0) == b


NATIVE = {"0.5k": (512, 512), "1k": (1024, 1024), "4k": (4096, 4096), "8k": (8192, 8192), "10k": (10240, 10240)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_auto_tile_size_is_monotonic_and_0_when_everything_fits(variant):
    height, width = NATIVE[variant]
    grid = MULTIPLE[variant]
    whole = head_memory_bytes(variant, height, width, 1, 2)
    assert auto_tile_size(variant, height, width, 1, whole, 2) == 0
    assert auto_tile_size(variant, height, width, 1, whole - 1, 2) > 0
    previous = 0
    for free in [int(whole * 2 ** (k / 4)) for k in range(-40, 4)]:
        tile = auto_tile_size(variant, height, width, 1, free, 2)
        size = math.inf if tile == 0 else tile
        assert size >= previous and (tile % grid == 0)
        if 0 < tile and tile > grid:  # it fits; the least memory with one tile fewer per side does not
            assert tiled_memory_bytes(variant, height, width, 1, 2, tile) <= free
            count = -(-max(height, width) // tile)
            fewer = fewest_tiles_tile(max(height, width), count - 1, grid)
            assert fewer >= max(height, width) or tiled_memory_bytes(variant, height, width, 1, 2, fewer) > free
            assert tile == fewest_tiles_tile(max(height, width), count, grid)  # the smallest tile for its count
        previous = size
    assert auto_tile_size(variant, height, width, 1, 1, 2) == grid  # nothing fits: the smallest tile


@pytest.mark.parametrize("variant", list(HEAD_VARIANTS))
def test_narrow_heads_keep_keys_and_are_detected_from_shapes(variant):
    """A width_div head (the CPU replication world's) has the official keys at 1/div of the widths."""
    from l2p.head import head_width_div

    official = build_head(variant, 32, device="meta")
    narrow = build_head(variant, 32, device="meta", width_div=4)
    assert list(narrow.state_dict()) == list(official.state_dict())
    assert narrow.bottleneck[0].out_channels == 128
    shapes = {f"local_decoder.{k}": v for k, v in narrow.state_dict().items()}
    assert head_width_div(shapes) == 4
    assert head_width_div({f"local_decoder.{k}": v for k, v in official.state_dict().items()}) == 1
    with pytest.raises(ValueError, match="does not divide"):
        build_head(variant, 32, device="meta", width_div=3)


def test_narrow_1k_head_runs_and_infer_config_reads_its_width():
    from l2p.format.layouts import infer_config
    from l2p.pixel_dit import official_state_dict
    from l2p.tiny import TINY_L2P, official_trunk

    head = build_head("1k", TINY_L2P["dim"], width_div=4)
    out = head(torch.randn(1, 3, 32, 48), torch.randn(1, TINY_L2P["dim"], 2, 3))
    assert out.shape == (1, 3, 32, 48)
    sd = official_state_dict(official_trunk(**TINY_L2P, device="meta"), head.to("meta"))
    assert infer_config(sd).head_width_div == 4
