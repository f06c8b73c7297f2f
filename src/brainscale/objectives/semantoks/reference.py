"""Import checkpoints of the reference Brain-Semantoks implementation.

The reference stores ``model_state_dict`` with ``student_*`` and ``teacher_*`` entries (or a
released ``.pth`` holding the same dictionary). Inference uses the teacher. Key mapping onto
this project's modules (``<n>`` a network, ``<i>`` a block, ``<s>`` a scale):

=========================================================================================  ==============================
reference (after ``teacher_encoder.``)                                                     brainscale ``SemantoksEncoder``
=========================================================================================  ==============================
``network_tokenizers.schaefer400.<n>.branches.0.{weight,bias}``                            ``tokenizers.<n>.dense.*``
``network_tokenizers.schaefer400.<n>.branches.1.slconv.kernel_list.<s>``                   ``tokenizers.<n>.long_conv.kernels.<s>``
``network_tokenizers.schaefer400.<n>.branches.1.slconv.D``                                 ``tokenizers.<n>.long_conv.skip``
``network_tokenizers.schaefer400.<n>.branches.1.slconv.{multiplier,kernel_norm}``          ``tokenizers.<n>.long_conv.*``
``network_tokenizers.schaefer400.<n>.branches.1.projection.*``                             ``tokenizers.<n>.projection.*``
``network_tokenizers.schaefer400.<n>.norm.*``                                              ``tokenizers.<n>.norm.*``
``inter_network_transformer.cls_token`` (1, 1, D)                                          ``cls_token``
``inter_network_transformer.mask_embedding`` (1, D)                                        ``mask_embedding`` (D,)
``inter_network_transformer.network_learnable_pos_embedding.weight``                       ``network_embedding``
``inter_network_transformer.temporal_pos_embedding``                                       ``patch_embedding`` (checked)
``inter_network_transformer.transformer_blocks.<i>.{norm1,norm2,attn.qkv,attn.proj}.*``    ``blocks.<i>.*``
``inter_network_transformer.transformer_blocks.<i>.mlp.{0,3}.*``                           ``blocks.<i>.mlp.{0,2}.*``
``inter_network_transformer.transformer_blocks.<i>.ls{1,2}.gamma``                         ``blocks.<i>.ls{1,2}.gamma``
``norm.*`` (the final LayerNorm in use)                                                    ``norm.*``
``teacher_predictor.mlp.{0,2}.*``                                                          ``ProjectionHead.mlp.{0,2}.*``
=========================================================================================  ==============================

Ignored: ``slconv.kernel_norm_initialized``, the unused ``inter_network_transformer.norm``, the
unused ``network_tokenizers.tian3.*`` and ``.buckner7.*`` tokenizer sets, and everything
``student_*``, optimizer and scheduler state.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ...errors import BrainscaleError
from ...io import load_torch_file

__all__ = ["ReferenceImportError", "map_reference_key", "import_reference_state_dict", "load_reference_checkpoint"]

_RULES = [
    (r"network_tokenizers\.schaefer400\.(\d+)\.branches\.0\.(weight|bias)$", r"tokenizers.\1.dense.\2"),
    (r"network_tokenizers\.schaefer400\.(\d+)\.branches\.1\.slconv\.kernel_list\.(\d+)$", r"tokenizers.\1.long_conv.kernels.\2"),
    (r"network_tokenizers\.schaefer400\.(\d+)\.branches\.1\.slconv\.D$", r"tokenizers.\1.long_conv.skip"),
    (r"network_tokenizers\.schaefer400\.(\d+)\.branches\.1\.slconv\.(multiplier|kernel_norm)$", r"tokenizers.\1.long_conv.\2"),
    (r"network_tokenizers\.schaefer400\.(\d+)\.branches\.1\.projection\.(weight|bias)$", r"tokenizers.\1.projection.\2"),
    (r"network_tokenizers\.schaefer400\.(\d+)\.norm\.(weight|bias)$", r"tokenizers.\1.norm.\2"),
    (r"inter_network_transformer\.cls_token$", "cls_token"),
    (r"inter_network_transformer\.mask_embedding$", "mask_embedding"),
    (r"inter_network_transformer\.network_learnable_pos_embedding\.weight$", "network_embedding"),
    (r"inter_network_transformer\.temporal_pos_embedding$", "patch_embedding"),
    (r"inter_network_transformer\.transformer_blocks\.(\d+)\.mlp\.0\.(weight|bias)$", r"blocks.\1.mlp.0.\2"),
    (r"inter_network_transformer\.transformer_blocks\.(\d+)\.mlp\.3\.(weight|bias)$", r"blocks.\1.mlp.2.\2"),
    (r"inter_network_transformer\.transformer_blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj)\.(weight|bias)$",
     r"blocks.\1.\2.\3"),
    (r"inter_network_transformer\.transformer_blocks\.(\d+)\.(ls1|ls2)\.gamma$", r"blocks.\1.\2.gamma"),
    (r"norm\.(weight|bias)$", r"norm.\1"),
]
_IGNORED = [r"kernel_norm_initialized$", r"^inter_network_transformer\.norm\.", r"network_tokenizers\.(tian3|buckner7)\."]


class ReferenceImportError(BrainscaleError, ValueError):
    """The checkpoint does not fit the configured architecture."""


def map_reference_key(key: str) -> str | None:
    """This project's name for a reference encoder key (without ``teacher_encoder.``); None if ignored."""
    if any(re.search(pattern, key) for pattern in _IGNORED):
        return None
    for pattern, replacement in _RULES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    raise ReferenceImportError(f"unknown reference key '{key}': this checkpoint is not a Brain-Semantoks model "
                               "this importer knows.")


def import_reference_state_dict(state_dict: dict, encoder, head=None, *, side: str = "teacher") -> None:
    """Load the ``side`` encoder (and predictor, when ``head`` is given) of a reference state dict.

    Every tensor of ``encoder`` must be provided with the same shape; the fixed patch embedding
    must match. Raises ReferenceImportError naming the first mismatch.
    """
    prefix = f"{side}_encoder."
    mapped = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            name = map_reference_key(key[len(prefix):])
            if name is not None:
                mapped[name] = value
    mapped["mask_embedding"] = mapped["mask_embedding"].reshape(-1) if "mask_embedding" in mapped else None
    target = encoder.state_dict()
    for name, tensor in target.items():
        if name not in mapped or mapped[name] is None:
            raise ReferenceImportError(f"the checkpoint lacks '{name}' (reference {side}_encoder): "
                                       "it was trained with another architecture; check model size and network map.")
        if tuple(mapped[name].shape) != tuple(tensor.shape):
            raise ReferenceImportError(f"'{name}': checkpoint shape {tuple(mapped[name].shape)}, model shape "
                                       f"{tuple(tensor.shape)}: the model config does not match the checkpoint.")
    if not torch.allclose(mapped["patch_embedding"].float(), target["patch_embedding"], atol=1e-5):
        raise ReferenceImportError("the checkpoint's temporal position embedding differs from the sin-cos table.")
    encoder.load_state_dict({name: mapped[name] for name in target}, strict=True)
    if head is not None:
        head_state = {key[len(f"{side}_predictor."):]: value for key, value in state_dict.items()
                      if key.startswith(f"{side}_predictor.")}
        head.load_state_dict(head_state, strict=True)


def load_reference_checkpoint(path: str | Path) -> dict:
    """The reference ``model_state_dict`` from a training checkpoint or a released ``.pth``."""
    payload = load_torch_file(path, ReferenceImportError)
    if isinstance(payload, dict) and "model_state_dict" in payload:
        return payload["model_state_dict"]
    if isinstance(payload, dict) and any(k.startswith("teacher_encoder.") for k in payload):
        return payload
    raise ReferenceImportError(f"{path}: neither a reference training checkpoint (model_state_dict) nor a "
                               "state dict with teacher_encoder.* keys.")
