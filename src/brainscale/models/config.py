"""What every encoder config shares: the reference channel layout, the derived sizes and the checks.

Torch-free, so that configs are built and checked when a workflow is parsed. An objective's
config is a dataclass that also derives from :class:`EncoderConfig`; its ``__post_init__`` calls
the checks it needs, and its fields are saved with every checkpoint and export (``to_dict``).
"""

from __future__ import annotations

from dataclasses import asdict

from ..errors import ArchitectureError

__all__ = ["REFERENCE_NETWORK_SIZES", "REFERENCE_CHANNELS", "reference_network_map", "EncoderConfig",
           "ArchitectureError"]

#: Channels per network in the reference order: 7 cortical (Schaefer-400, 7 networks), Tian S3, Buckner 7.
REFERENCE_NETWORK_SIZES = (61, 77, 46, 47, 26, 52, 91, 50, 7)
_PER_HEMISPHERE = ((31, 37, 23, 22, 13, 22, 52), (30, 40, 23, 25, 13, 30, 39))


def reference_network_map() -> list[int]:
    """(457,) network of each channel for Schaefer-400 (LH then RH, 7-network order), Tian S3, Buckner 7."""
    cortical = [net for hemisphere in _PER_HEMISPHERE for net, count in enumerate(hemisphere) for _ in range(count)]
    return cortical + [7] * 50 + [8] * 7


#: Channels of the brainscale atlases (the shards' groups), for config-time checks.
REFERENCE_CHANNELS = sum(REFERENCE_NETWORK_SIZES)


class EncoderConfig:
    """Base of the encoder configs (dataclasses with ``network_map`` and, where tokens are patches,
    ``crop_length`` and ``patch_length``)."""

    network_map: list

    @property
    def n_channels(self) -> int:
        return len(self.network_map)

    @property
    def n_networks(self) -> int:
        return max(self.network_map) + 1

    @property
    def n_patches(self) -> int:
        return self.crop_length // self.patch_length

    @property
    def n_tokens(self) -> int:
        """Tokens of one crop where every channel and time patch is one (JEPA, MAE)."""
        return self.n_channels * self.n_patches

    @property
    def heads(self) -> int:
        if self.head_dim < 1:
            raise ArchitectureError(f"head_dim ({self.head_dim}) must be at least 1.")
        return max(self.width // self.head_dim, 1)

    def to_dict(self) -> dict:
        return asdict(self)

    # --- checks that several configs share (each raises ArchitectureError naming the setting) ---------
    def check_heads(self, prefix: str = "", *, even: bool = True) -> None:
        """``{prefix}width`` is a multiple of ``{prefix}head_dim`` (and even: two sin-cos halves)."""
        width, head_dim = getattr(self, f"{prefix}width"), getattr(self, f"{prefix}head_dim")
        if head_dim < 1 or width % head_dim or (even and width % 2):
            parity = "even and " if even else ""
            raise ArchitectureError(f"{prefix}width ({width}) must be {parity}a multiple of {prefix}head_dim "
                                    f"({head_dim}).")

    def check_patches(self, reference: str) -> None:
        """``patch_length`` divides ``crop_length`` (``reference``: what the paper uses, for the message)."""
        if self.patch_length < 1 or self.crop_length % self.patch_length:
            raise ArchitectureError(f"patch_length ({self.patch_length}) does not divide crop_length "
                                    f"({self.crop_length}): choose a divisor (the reference uses {reference}).")

    def check_token_width(self) -> None:
        """A ``token_width`` other than null must equal ``width`` (tokens feed the transformer directly)."""
        token_width = getattr(self, "token_width", None)
        if token_width is not None and token_width != self.width:
            raise ArchitectureError(f"token_width ({token_width}) differs from width ({self.width}): tokens feed "
                                    "the transformer directly, set them equal (or leave token_width null).")

    def check_network_map(self) -> None:
        """Networks are numbered 0..N-1 consecutively."""
        networks = sorted(set(self.network_map))
        if networks != list(range(len(networks))):
            raise ArchitectureError(f"network_map must number networks 0..N-1 consecutively, found {networks}.")
