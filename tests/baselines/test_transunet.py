"""TransUNet (baselines/transunet.py): the official size, the hybrid encoder and its skips, the method interface,
and loading Google's R50+ViT-B_16.npz key layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.official_weights import CheckpointError
from baselines.transunet import StdConv2d, TransUNet
from tests.baselines.segmenter_checks import check_trains_and_predicts, data_size, n_parameters, section

TINY = dict(img_size=64, resnet_width=8, resnet_units=(1, 2, 1), norm_groups=4, hidden_size=16, num_layers=2,
            num_heads=2, mlp_dim=32, decoder_channels=(16, 8, 8, 4), head_channels=16)


def test_the_paper_configuration_has_the_official_parameter_count():
    # 105,277,081: the official VisionTransformer(R50-ViT-B_16, img_size=224, n_classes=9) counted from its code
    assert n_parameters(TransUNet(1, 9, img_size=224)) == 105_277_081
    # at 256 px the position embedding has 16 x 16 instead of 14 x 14 tokens of 768: 60 x 768 more (and 4 classes)
    paper = TransUNet(1, 4, **section("paper", "transunet"))
    assert n_parameters(paper) == 105_277_081 + 60 * 768 - 5 * (16 * 9 + 1) == 105_322_436


def test_the_hybrid_encoder_gives_tokens_of_the_stride_16_grid_and_three_skips():
    net = TransUNet(2, 3, **TINY).net.eval()
    tokens, skips = net.encode(torch.randn(2, 2, 64, 64))
    assert tokens.shape == (2, 4 * 4, 16)
    assert [tuple(s.shape) for s in skips] == [(2, 64, 8, 8), (2, 32, 16, 16), (2, 8, 32, 32)]
    # max-pooling (3, stride 2, no padding) floors 32 to 15; the 1/4 skip is zero-padded back to 16 as officially
    assert skips[1][..., -1, :].abs().sum() == 0 and skips[1][..., -1].abs().sum() == 0
    assert skips[1][..., :-1, :-1].abs().sum() > 0


def test_weight_standardisation_makes_a_convolution_blind_to_its_filters_scale_and_offset():
    conv = StdConv2d(3, 4, 3, padding=1, bias=False)
    x = torch.randn(1, 3, 8, 8)
    before = conv(x)
    with torch.no_grad():
        conv.weight.mul_(5.0).add_(torch.randn(4, 1, 1, 1))
    torch.testing.assert_close(conv(x), before, atol=1e-2, rtol=1e-2)  # not exact: eps 1e-5 in the variance


def test_trains_and_predicts_with_every_parameter_reached():
    check_trains_and_predicts(TransUNet(1, 3, **TINY), 1, 3)


@pytest.mark.parametrize("profile", ["default", "cpu-64"])
def test_the_cpu_profiles_sections_build_a_network_at_their_size(profile):
    check_trains_and_predicts(TransUNet(1, 4, **section(profile, "transunet")), 1, 4, size=data_size(profile))


def official_npz(old_grid: int) -> dict[str, np.ndarray]:
    """Random arrays under the keys and Flax shapes of Google's R50+ViT-B_16.npz, for TINY (C = 1 -> 3)."""
    rng = np.random.default_rng(0)
    a = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    d, heads, w = 16, 2, 8
    out = {"cls": a(1, 1, d), "head/kernel": a(d, 10), "head/bias": a(10), "embedding/kernel": a(1, 1, 16 * w, d),
           "embedding/bias": a(d), "Transformer/posembed_input/pos_embedding": a(1, 1 + old_grid ** 2, d),
           "Transformer/encoder_norm/scale": a(d), "Transformer/encoder_norm/bias": a(d),
           "conv_root/kernel": a(7, 7, 3, w), "gn_root/scale": a(w), "gn_root/bias": a(w)}
    for i in range(2):
        b = f"Transformer/encoderblock_{i}"
        for n in ("query", "key", "value"):
            out[f"{b}/MultiHeadDotProductAttention_1/{n}/kernel"] = a(d, heads, d // heads)
            out[f"{b}/MultiHeadDotProductAttention_1/{n}/bias"] = a(heads, d // heads)
        out[f"{b}/MultiHeadDotProductAttention_1/out/kernel"] = a(heads, d // heads, d)
        out[f"{b}/MultiHeadDotProductAttention_1/out/bias"] = a(d)
        out[f"{b}/MlpBlock_3/Dense_0/kernel"], out[f"{b}/MlpBlock_3/Dense_0/bias"] = a(d, 32), a(32)
        out[f"{b}/MlpBlock_3/Dense_1/kernel"], out[f"{b}/MlpBlock_3/Dense_1/bias"] = a(32, d), a(d)
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            out[f"{b}/{ln}/scale"], out[f"{b}/{ln}/bias"] = a(d), a(d)
    # (cin, cout, cmid) of each stage's first unit; later units take cout in; units (1, 2, 1)
    for s, (cin, cout, cmid, units) in enumerate([(w, 4 * w, w, 1), (4 * w, 8 * w, 2 * w, 2),
                                                  (8 * w, 16 * w, 4 * w, 1)]):
        for u in range(units):
            p = f"block{s + 1}/unit{u + 1}"
            out[f"{p}/conv1/kernel"] = a(1, 1, cin if u == 0 else cout, cmid)
            out[f"{p}/conv2/kernel"], out[f"{p}/conv3/kernel"] = a(3, 3, cmid, cmid), a(1, 1, cmid, cout)
            for k, c in ((1, cmid), (2, cmid), (3, cout)):
                out[f"{p}/gn{k}/scale"], out[f"{p}/gn{k}/bias"] = a(c), a(c)
            if u == 0:
                out[f"{p}/conv_proj/kernel"] = a(1, 1, cin, cout)
                out[f"{p}/gn_proj/scale"], out[f"{p}/gn_proj/bias"] = a(cout), a(cout)
    return out


def test_the_official_npz_fills_every_encoder_weight_with_the_official_conversions(tmp_path):
    arrays = official_npz(old_grid=3)
    path = tmp_path / "R50+ViT-B_16.npz"
    np.savez(path, **arrays)
    torch.manual_seed(0)
    scratch = TransUNet(1, 3, **TINY).net
    torch.manual_seed(0)
    net = TransUNet(1, 3, **TINY, pretrained=str(path)).net
    old, new = dict(scratch.named_parameters()), dict(net.named_parameters())
    encoder = [n for n in new if n.startswith(("resnet.", "patch_embeddings", "position_embeddings", "layers.",
                                               "encoder_norm"))]
    assert len(encoder) == len(arrays) - 3  # one parameter per Flax array but cls, head/kernel, head/bias
    assert all(not torch.equal(old[n], new[n]) for n in encoder)
    assert all(torch.equal(old[n], new[n]) for n in new if n not in encoder), "the decoder keeps its initialisation"
    q = arrays["Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel"]
    torch.testing.assert_close(new["layers.1.query.weight"], torch.from_numpy(q.reshape(16, 16).T))
    o = arrays["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/out/kernel"]
    torch.testing.assert_close(new["layers.0.out.weight"], torch.from_numpy(o.reshape(16, 16).T))
    torch.testing.assert_close(new["resnet.root_conv.weight"],
                               torch.from_numpy(arrays["conv_root/kernel"].transpose(3, 2, 0, 1)))
    # the 3 x 3 grid (after the class token) resized to 4 x 4 with corners aligned: the corners are kept
    grid = torch.from_numpy(arrays["Transformer/posembed_input/pos_embedding"][0, 1:]).view(3, 3, 16)
    pos = new["position_embeddings"].detach().view(4, 4, 16)
    for (i, j), (k, m) in (((0, 0), (0, 0)), ((0, 2), (0, 3)), ((2, 0), (3, 0)), ((2, 2), (3, 3))):
        torch.testing.assert_close(pos[k, m], grid[i, j])


@pytest.mark.parametrize("change", ["missing", "unknown", "shape"])
def test_a_checkpoint_that_does_not_fit_is_one_error_naming_the_file_and_changes_nothing(tmp_path, change):
    arrays = official_npz(old_grid=4)
    if change == "missing":
        del arrays["Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"]
    elif change == "unknown":
        arrays["Transformer/encoderblock_2/LayerNorm_0/scale"] = arrays["Transformer/encoder_norm/scale"]
    else:
        arrays["gn_root/scale"] = arrays["gn_root/scale"][:4]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    net = TransUNet(1, 3, **TINY).net
    before = {n: p.clone() for n, p in net.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"bad\.npz: not a checkpoint of this configuration") as e:
        net.load_official(path)
    assert {"missing": "Dense_0/bias", "unknown": "encoderblock_2", "shape": "gn_root/scale"}[change] in str(e.value)
    assert all(torch.equal(before[n], p) for n, p in net.state_dict().items())


def test_a_pickled_npz_is_refused_without_being_unpickled(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, **{"embedding/kernel": np.array([{"code": "runs?"}], dtype=object)})
    with pytest.raises(CheckpointError, match=r"pickled\.npz: cannot read"):
        TransUNet(1, 3, **TINY, pretrained=str(path))
