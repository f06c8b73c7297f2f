"""The Brain-Semantoks encoder: shapes, sizes, the long convolution, masking and the importer."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from brainscale.models.config import reference_network_map
from brainscale.models.layers import Block
from brainscale.objectives.semantoks.model import LongConv, ProjectionHead, SemantoksEncoder
from brainscale.objectives.semantoks.reference import ReferenceImportError, import_reference_state_dict, map_reference_key
from brainscale.objectives.semantoks.spec import MODEL_SIZES, SemantoksConfig



def tiny(**overrides) -> SemantoksEncoder:
    torch.manual_seed(0)
    return SemantoksEncoder(SemantoksConfig(**{**MODEL_SIZES["tiny"], **overrides}))


def test_shapes_and_features():
    encoder = tiny()
    tokens = encoder(torch.randn(3, 457, 100))
    assert tokens.shape == (3, 1 + 9 * 5, 64)
    features = encoder.cls_avg(tokens)
    assert features.shape == (3, 128)
    assert torch.allclose(features[:, :64], tokens[:, 1:].mean(1)) and torch.allclose(features[:, 64:], tokens[:, 0])
    assert ProjectionHead(encoder.config)(tokens[:, 0]).norm(dim=-1).allclose(torch.ones(3))


def test_base_model_has_the_reference_parameter_count():
    encoder = SemantoksEncoder(SemantoksConfig(**MODEL_SIZES["base"]))
    total = sum(p.numel() for p in encoder.parameters())
    tokenizers = sum(p.numel() for p in encoder.tokenizers.parameters())
    assert abs(total - 58.7e6) < 0.1e6 and abs(tokenizers - 2.0e6) < 0.05e6
    assert abs(sum(p.numel() for p in ProjectionHead(encoder.config).parameters()) - 0.92e6) < 0.01e6
    assert [len(c) for c in encoder.channels_of_network] == [61, 77, 46, 47, 26, 52, 91, 50, 7]


@pytest.mark.parametrize("overrides, words", [
    ({"token_width": 512}, "token_width"),
    ({"patch_length": 30}, "does not divide"),
    ({"width": 66}, "multiple of head_dim"),
])
def test_impossible_configs_are_refused(overrides, words):
    with pytest.raises(ValueError, match=words):
        SemantoksConfig(**{**MODEL_SIZES["tiny"], **overrides})


def test_long_convolution_matches_a_direct_computation():
    torch.manual_seed(1)
    layer = LongConv(n_rois=3, heads=2)
    x = torch.randn(2, 3, 20)
    out = layer(x).detach().numpy()
    kernels = layer.kernels
    taps = np.concatenate([kernels[0].detach().numpy() * 4, kernels[1].detach().numpy() * 2,
                           np.repeat(kernels[2].detach().numpy(), 2, axis=-1)], axis=-1)  # (heads, R, 16)
    taps = taps / np.linalg.norm(taps, axis=-1, keepdims=True)
    skip = layer.skip.detach().numpy()
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (7, 8)))
    for b in range(2):
        for roi in range(3):
            for head in range(2):
                for t in range(20):
                    # true convolution: y[t] = sum_j k[j] x[t + 8 - j] (+ skip)
                    value = sum(taps[head, roi, j] * padded[b, roi, t + 15 - j] for j in range(16))
                    value += skip[head, roi] * x[b, roi, t].item()
                    assert out[b, roi * 2 + head, t] == pytest.approx(value, abs=1e-5)


def test_masked_and_missing_networks_hide_their_data():
    encoder = tiny().eval()
    x = torch.randn(2, 457, 100)
    changed = x.clone()
    cerebellum = torch.tensor(reference_network_map()) == 8
    changed[:, cerebellum] = torch.randn(2, int(cerebellum.sum()), 100)
    missing = cerebellum.expand(2, -1)
    with torch.no_grad():
        assert not torch.allclose(encoder(x), encoder(changed))
        assert torch.allclose(encoder(x, missing_channels=missing), encoder(changed, missing_channels=missing), atol=1e-6)
        mask = torch.zeros(2, 9, 5, dtype=torch.bool)
        mask[:, 8] = True
        assert torch.allclose(encoder(x, mask=mask), encoder(changed, mask=mask), atol=1e-6)


def test_reference_checkpoint_import(reference_state):
    state = reference_state
    encoder = SemantoksEncoder(SemantoksConfig(**MODEL_SIZES["base"]))
    head = ProjectionHead(encoder.config)
    import_reference_state_dict(state, encoder, head)
    ours = encoder.state_dict()
    assert torch.equal(ours["tokenizers.3.long_conv.kernels.2"],
                       state["teacher_encoder.network_tokenizers.schaefer400.3.branches.1.slconv.kernel_list.2"])
    assert torch.equal(ours["blocks.7.mlp.2.weight"],
                       state["teacher_encoder.inter_network_transformer.transformer_blocks.7.mlp.3.weight"])
    assert torch.equal(ours["norm.weight"], state["teacher_encoder.norm.weight"])
    assert torch.equal(ours["mask_embedding"], state["teacher_encoder.inter_network_transformer.mask_embedding"][0])
    assert torch.equal(head.state_dict()["mlp.2.weight"], state["teacher_predictor.mlp.2.weight"])
    # Every encoder tensor came from the checkpoint: none keeps its initial value.
    fresh = SemantoksEncoder(SemantoksConfig(**MODEL_SIZES["base"])).state_dict()
    for name, tensor in ours.items():
        if name not in ("patch_embedding",) and not name.endswith("multiplier"):
            assert not torch.equal(tensor, fresh[name]), name
    with pytest.raises(ReferenceImportError, match="config does not match"):
        import_reference_state_dict(state, SemantoksEncoder(SemantoksConfig(**MODEL_SIZES["small"])))
    assert map_reference_key("network_tokenizers.schaefer400.0.branches.1.slconv.kernel_norm_initialized") is None
    with pytest.raises(ReferenceImportError, match="unknown reference key"):
        map_reference_key("some_other_module.weight")


def test_one_block_serves_full_causal_and_padded_attention():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 32)
    causal = Block(32, 16, 2.0, None, causal=True).eval()
    assert not any(key.startswith(("ls1", "ls2")) for key in causal.state_dict())  # the plain GPT block
    later_changed = x.clone()
    later_changed[:, 4:] += 1.0
    assert torch.allclose(causal(x)[:, :4], causal(later_changed)[:, :4], atol=1e-6)
    assert not torch.allclose(causal(x)[:, 4:], causal(later_changed)[:, 4:])
    full = Block(32, 16).eval()
    valid = torch.tensor([[True] * 4 + [False] * 2] * 2)  # the last two tokens are padding
    assert torch.allclose(full(x, valid)[:, :4], full(x[:, :4]), atol=1e-5)
    with pytest.raises(ValueError, match="causal"):
        causal(x, valid)
