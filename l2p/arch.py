"""Source architectures behind one small interface: what the converter, loader and trainer need to know.

An adapter says which tensors embed latent patches, which form the final layer, the ordered main blocks
(the trainable-set policies count them), the prediction convention, the default shift, the latent space
(channels, patch, VAE downscale) and the constants a checkpoint's shapes cannot tell (RoPE theta, time
scale, modulation style). Z-Image and Lumina-Image 2.0 (both NextDiT) are implemented. A Flux-style
double/single-stream model or an SD3-style MMDiT fits the same fields (``img_in``/``x_embedder``,
``final_layer``, ``double_blocks`` + ``single_blocks`` or ``joint_blocks``) and needs an adapter here
plus a trunk class on the ComfyUI side; until then they get a one-line error naming what is supported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .format.keys import L2PFormatError, strip_prefix


@dataclass(frozen=True)
class SourceArch:
    name: str  # stored in checkpoint metadata as l2p.arch
    label: str
    patch_embedder: tuple[str, ...]  # key prefixes of the latent patch embedder (ComfyUI and official names)
    final_layer: tuple[str, ...]  # key prefixes dropped by the conversion
    block_groups: tuple[str, ...]  # main-block prefixes in execution order
    prediction: str
    default_shift: float
    text_encoder: str
    latent_channels: int = 16
    latent_patch: int = 2
    vae_downscale: int = 8
    # The model's latent space from a raw VAE latent z: (z - shift) * scale. Both are Flux-VAE models
    # (ComfyUI's latent_formats.Flux); a diffusers VAE folder carries its own in its config.
    latent_scale: float = 0.3611
    latent_shift: float = 0.1159
    # Constants of the NextDiT family that tensor shapes do not carry:
    rope_theta: float = 256.0
    time_scale: float = 1000.0
    z_image_modulation: bool = True
    axes_fractions: tuple[float, float, float] = (0.25, 0.375, 0.375)
    official_layout: bool = True  # the released L2P (diffusers-style) key names exist for this architecture
    marker: str = ""  # a key only this architecture has (prefix stripped)
    marker_pattern: str = ""  # the same kind of key in any block: one missing tensor does not change the arch
    # Released sizes, (dim, caption width) -> (main blocks, refiner blocks per stream): a file of a released
    # width must have at least that depth, so one that lost its last block reads as incomplete, not shallower.
    releases: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = ()

    def released_depth(self, dim: int, cap_feat_dim: int) -> tuple[int, int] | None:
        """(main blocks, refiners) of the released model of this width, None for other sizes (tiny, custom)."""
        return dict(self.releases).get((dim, cap_feat_dim))

    def matches(self, keys: set[str]) -> bool:
        if "cap_embedder.1.weight" not in keys:
            return False
        if not self.marker or self.marker in keys:
            return True
        return bool(self.marker_pattern) and any(re.match(self.marker_pattern, k) for k in keys)

    def blocks(self, keys: Iterable[str]) -> list[str]:
        """Main-block prefixes (``layers.0`` ...) in execution order."""
        out: list[str] = []
        for group in self.block_groups:
            idx = sorted({int(m.group(1)) for k in keys if (m := re.match(rf"^{group}\.(\d+)\.", k))})
            out += [f"{group}.{i}" for i in idx]
        return out

    def axes_dims(self, head_dim: int) -> tuple[int, int, int]:
        """The 3-axis RoPE split of one attention head (each part even)."""
        dims = tuple(int(head_dim * f) for f in self.axes_fractions)
        if sum(dims) != head_dim or any(d % 2 for d in dims):
            raise L2PFormatError(f"head size {head_dim} cannot be split into {self.label}'s RoPE axes "
                                 f"{self.axes_fractions}: this model size is not supported")
        return dims  # type: ignore[return-value]

    @property
    def pixels_per_latent_token(self) -> int:
        return self.latent_patch * self.vae_downscale


_NEXTDIT = {
    "patch_embedder": ("x_embedder.", "all_x_embedder."),
    "final_layer": ("final_layer.", "all_final_layer.", "norm_final."),
    "block_groups": ("layers",),
    "prediction": "flow: model returns noise - x0 for x = (1 - sigma) x0 + sigma noise, model time 1 - sigma",
}

ZIMAGE = SourceArch(name="z-image", label="Z-Image (Turbo or base)", default_shift=3.0,
                    text_encoder="Qwen3-4B", releases=(((3840, 2560), (30, 2)),),  # l2p-technical.md §1.3
                    **_NEXTDIT)
LUMINA2 = SourceArch(name="lumina2", label="Lumina-Image 2.0", default_shift=6.0, text_encoder="Gemma-2-2B",
                     rope_theta=10000.0, time_scale=1.0, z_image_modulation=False,
                     axes_fractions=(1 / 3, 1 / 3, 1 / 3), official_layout=False,
                     marker="layers.0.adaLN_modulation.1.weight",
                     marker_pattern=r"^(?:layers|noise_refiner)\.\d+\.adaLN_modulation\.1\.(?:weight|bias)$",
                     **_NEXTDIT)

# Most specific first: detection takes the first match.
ARCHITECTURES: dict[str, SourceArch] = {a.name: a for a in (LUMINA2, ZIMAGE)}
_NOT_YET = {"double_blocks.": "Flux-style (double/single-stream)", "joint_blocks.": "SD3-style MMDiT"}


def supported_list() -> str:
    return ", ".join(a.label for a in reversed(ARCHITECTURES.values()))


def detect_arch(keys: Iterable[str]) -> SourceArch:
    """The adapter for a state dict's keys (any prefix, either layout); one-line error when none fits."""
    names = set(strip_prefix(dict.fromkeys(keys)).keys())
    for arch in ARCHITECTURES.values():
        if arch.matches(names):
            return arch
    for prefix, what in _NOT_YET.items():
        if any(k.startswith(prefix) for k in names):
            raise L2PFormatError(f"{what} models are not supported yet: supported sources are {supported_list()}")
    raise L2PFormatError(f"this is not a supported diffusion model ({len(names)} tensors): supported sources are "
                         f"{supported_list()}")
