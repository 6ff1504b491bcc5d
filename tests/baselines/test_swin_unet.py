"""Swin-Unet (baselines/swin_unet.py): the official size, shifted-window attention and its mask on a hand example,
patch merging and expanding, the method interface, and loading Microsoft's Swin-T checkpoint key layout."""
from __future__ import annotations

import pytest
import torch

from baselines.official_weights import CheckpointError
from baselines.swin_unet import DropPath, PatchExpand, PatchMerging, SwinBlock, SwinUnet, shifted_window_mask
from tests.baselines.segmenter_checks import check_trains_and_predicts, data_size, n_parameters, section

TINY = dict(img_size=64, embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=2)
M = -100.0


def test_the_paper_configuration_has_the_official_parameter_count():
    # 27,168,900: the official SwinTransformerSys of swin_tiny_patch4_window7_224_lite.yaml, 9 classes, counted
    assert n_parameters(SwinUnet(1, 9, img_size=224, window_size=7)) == 27_168_900
    # window 8 at 256 px: each stage's relative-position table has 15^2 instead of 13^2 rows per head (encoder
    # 3+6+12+24 heads x 2 blocks, decoder 3+6+12 x 2), and 5 fewer classes on the 96-channel 1x1 head
    paper = SwinUnet(1, 4, **section("paper", "swin-unet"))
    assert n_parameters(paper) == 27_168_900 + (15 ** 2 - 13 ** 2) * 2 * (45 + 21) - 5 * 96 == 27_175_812


def test_the_shifted_window_mask_on_a_hand_example():
    # 4 x 4 tokens, window 2, shift 1: the shifted map's regions are rows {0,1},{2},{3} x cols {0,1},{2},{3}
    mask = shifted_window_mask(4, 4, 2, 1)
    assert mask.shape == (4, 4, 4)
    torch.testing.assert_close(mask[0], torch.zeros(4, 4))  # one region
    torch.testing.assert_close(mask[1], torch.tensor([[0, M, 0, M], [M, 0, M, 0], [0, M, 0, M], [M, 0, M, 0]]))
    torch.testing.assert_close(mask[2], torch.tensor([[0, 0, M, M], [0, 0, M, M], [M, M, 0, 0], [M, M, 0, 0]]))
    torch.testing.assert_close(mask[3], torch.full((4, 4), M).fill_diagonal_(0))  # four regions


def perturbed_positions(block: SwinBlock, at: tuple[int, int]) -> set[tuple[int, int]]:
    """The token positions of a 4 x 4 grid whose output changes when the input token ``at`` changes."""
    x = torch.randn(1, 16, 8)
    y = x.clone()
    y[0, at[0] * 4 + at[1]] += torch.randn(8)  # not a constant, which the LayerNorm would remove
    diff = (block(x) - block(y)).abs().sum(-1).view(4, 4)
    return {(i, j) for i in range(4) for j in range(4) if diff[i, j] > 1e-6}


def test_windows_confine_attention_and_the_mask_stops_the_cyclic_shift_wrapping_around():
    torch.manual_seed(0)
    plain = SwinBlock(8, (4, 4), heads=2, window=2, shift=0, mlp_ratio=4.0, drop_path=0.0).eval()
    assert perturbed_positions(plain, (0, 0)) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    shifted = SwinBlock(8, (4, 4), heads=2, window=2, shift=1, mlp_ratio=4.0, drop_path=0.0).eval()
    # rolled by -1, token (0,0) shares a window with (0,3), (3,0), (3,3): neighbours only across the wrap-around
    assert perturbed_positions(shifted, (0, 0)) == {(0, 0)}
    shifted.attn_mask = None
    assert perturbed_positions(shifted, (0, 0)) == {(0, 0), (0, 3), (3, 0), (3, 3)}
    # (1,1) shares its shifted window with (1,2), (2,1), (2,2), all one region
    assert perturbed_positions(SwinBlock(8, (4, 4), 2, 2, 1, 4.0, 0.0).eval(), (1, 1)) == {(1, 1), (1, 2), (2, 1),
                                                                                          (2, 2)}


def test_patch_merging_and_expanding_shapes_and_the_neighbours_they_gather():
    x = torch.randn(2, 8 * 8, 6)
    assert PatchMerging((8, 8), 6)(x).shape == (2, 16, 12)
    assert PatchExpand((8, 8), 6, 2, 3)(x).shape == (2, 16 * 16, 3)
    assert PatchExpand((8, 8), 6, 4, 6)(x).shape == (2, 32 * 32, 6)
    merge, y = PatchMerging((8, 8), 6), x.clone()
    y[:, 8 * 3 + 5] += torch.randn(6)  # token (3, 5) merges into (1, 2) of the 4 x 4 grid
    changed = (merge(x) - merge(y)).abs().sum(-1) > 0
    assert changed.view(2, 4, 4)[:, 1, 2].all() and changed.sum() == 2
    expand, y = PatchExpand((8, 8), 6, 4, 6), x.clone()
    y[:, 8 * 3 + 5] += torch.randn(6)  # token (3, 5) expands into rows 12-15, columns 20-23 of the 32 x 32 grid
    changed = ((expand(x) - expand(y)).abs().sum(-1) > 0).view(2, 32, 32)
    assert changed[:, 12:16, 20:24].all() and changed.sum() == 2 * 16


def test_the_decoder_has_the_encoder_depths_and_the_final_expand_is_x4():
    net = SwinUnet(3, 2, **TINY).net
    assert [len(stage.blocks) for stage in net.layers] == [2, 2, 2, 2]
    assert [len(stage.blocks) for stage in net.layers_up[1:]] == [2, 2, 2]
    assert net.up.scale == 4 and net.output.bias is None


def test_stochastic_depth_drops_whole_samples_in_training_only():
    drop, x = DropPath(0.5), torch.ones(2000, 3, 4)
    torch.manual_seed(0)
    y = drop(x)
    kept = y[:, 0, 0] > 0
    assert set(y.unique().tolist()) == {0.0, 2.0} and (y == y[:, :1, :1]).all()  # one draw per sample, scaled
    assert 0.45 < kept.float().mean() < 0.55
    assert torch.equal(drop.eval()(x), x)


def test_trains_and_predicts_with_every_parameter_reached():
    check_trains_and_predicts(SwinUnet(1, 3, **TINY), 1, 3)


# At 64 px, as cpu-64 runs it: at the 32 px of the default and cpu-full its last stage is one window, whose
# relative-position (Swin-Unet) or attention (MT-UNet) parameters get no gradient (profiles/cpu-full.yaml says so).
@pytest.mark.parametrize("profile", ["cpu-64"])
def test_the_cpu_profiles_sections_build_a_network_at_their_size(profile):
    check_trains_and_predicts(SwinUnet(1, 4, **section(profile, "swin-unet")), 1, 4, size=data_size(profile))


def official_checkpoint(window: int) -> dict[str, torch.Tensor]:
    """Random tensors under the keys and shapes of Microsoft's swin_tiny_patch4_window7_224.pth ``model``, for
    TINY's widths and a checkpoint window of ``window`` (the last stage, 2 x 2 tokens at 64 px: one 2 x 2 window)."""
    g = torch.Generator().manual_seed(0)
    a = lambda *shape: torch.randn(shape, generator=g)
    e, heads = 8, (1, 2, 2, 4)
    out = {"patch_embed.proj.weight": a(e, 3, 4, 4), "patch_embed.proj.bias": a(e), "patch_embed.norm.weight": a(e),
           "patch_embed.norm.bias": a(e), "norm.weight": a(8 * e), "norm.bias": a(8 * e), "head.weight": a(10, 8 * e),
           "head.bias": a(10)}
    for i, depth in enumerate((2, 2, 6, 2)):   # Swin-T's depths; Swin-Unet's lite configuration takes 2 of stage 3's 6
        c, w = e * 2 ** i, window if i < 3 else 2
        for j in range(depth):
            b = f"layers.{i}.blocks.{j}"
            for n in ("norm1", "norm2"):
                out[f"{b}.{n}.weight"], out[f"{b}.{n}.bias"] = a(c), a(c)
            out[f"{b}.attn.relative_position_bias_table"] = a((2 * w - 1) ** 2, heads[i])
            out[f"{b}.attn.relative_position_index"] = torch.zeros(w * w, w * w, dtype=torch.int64)
            out[f"{b}.attn.qkv.weight"], out[f"{b}.attn.qkv.bias"] = a(3 * c, c), a(3 * c)
            out[f"{b}.attn.proj.weight"], out[f"{b}.attn.proj.bias"] = a(c, c), a(c)
            out[f"{b}.mlp.fc1.weight"], out[f"{b}.mlp.fc1.bias"] = a(4 * c, c), a(4 * c)
            out[f"{b}.mlp.fc2.weight"], out[f"{b}.mlp.fc2.bias"] = a(c, 4 * c), a(c)
            if j % 2 == 1 and i < 3:
                out[f"{b}.attn_mask"] = torch.zeros(4, w * w, w * w)
        if i < 3:
            out[f"layers.{i}.downsample.reduction.weight"] = a(2 * c, 4 * c)
            out[f"layers.{i}.downsample.norm.weight"], out[f"layers.{i}.downsample.norm.bias"] = a(4 * c), a(4 * c)
    return out


def test_the_official_checkpoint_fills_the_encoder_and_the_decoder_blocks_of_the_same_scale(tmp_path):
    weights = official_checkpoint(window=2)
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": weights}, path)
    torch.manual_seed(0)
    scratch = dict(SwinUnet(1, 3, **TINY).net.named_parameters())
    torch.manual_seed(0)
    new = dict(SwinUnet(1, 3, **TINY, pretrained=str(path)).net.named_parameters())
    encoder = [n for n in new if n.startswith(("patch_embed.", "layers.", "norm."))]
    beyond = tuple(f"layers.2.blocks.{j}." for j in range(2, 6))   # Swin-T's stage 3 beyond depth 2
    assert len(encoder) == len([k for k in weights if not k.startswith(("head.", *beyond))
                                and not k.endswith(("relative_position_index", "attn_mask"))])
    assert all(torch.equal(new[n], weights[n]) for n in encoder)
    for i in range(3):  # decoder stage 3 - i starts from encoder stage i (the official load_from)
        for j in range(2):
            assert torch.equal(new[f"layers_up.{3 - i}.blocks.{j}.attn.qkv.weight"],
                               weights[f"layers.{i}.blocks.{j}.attn.qkv.weight"])
    untouched = [n for n in new if n.startswith(("concat_back_dim", "norm_up", "up.", "output"))
                 or "upsample" in n or n.startswith("layers_up.0.")]
    assert untouched and all(torch.equal(new[n], scratch[n]) for n in untouched)


def test_a_checkpoint_of_another_window_has_its_bias_tables_resized(tmp_path):
    weights = official_checkpoint(window=3)
    for k in weights:
        if k.endswith("relative_position_bias_table"):
            weights[k] = torch.full_like(weights[k], 0.5) + torch.arange(weights[k].shape[1])
    path = tmp_path / "window3.pth"
    torch.save({"model": weights}, path)
    net = SwinUnet(1, 3, **TINY, pretrained=str(path)).net
    table = net.layers[2].blocks[1].attn.relative_position_bias_table
    # 5 x 5 offsets of window 3 resized bicubically to window 2's 3 x 3: a table constant per head stays so
    assert table.shape == (9, 2)
    torch.testing.assert_close(table.detach(), torch.tensor([[0.5, 1.5]]).expand(9, 2))
    assert torch.equal(net.layers_up[1].blocks[1].attn.relative_position_bias_table, table)


@pytest.mark.parametrize("change", ["missing", "unknown", "shape"])
def test_a_checkpoint_that_does_not_fit_is_one_error_naming_the_file_and_changes_nothing(tmp_path, change):
    weights = official_checkpoint(window=2)
    if change == "missing":
        del weights["layers.2.blocks.1.mlp.fc2.bias"]
    elif change == "unknown":
        weights["layers.1.downsample.extra.weight"] = weights["norm.weight"]
    else:
        weights["patch_embed.proj.weight"] = weights["patch_embed.proj.weight"][:, :1]
    path = tmp_path / "bad.pth"
    torch.save({"model": weights}, path)
    net = SwinUnet(1, 3, **TINY).net
    before = {n: p.clone() for n, p in net.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"bad\.pth: not a checkpoint of this configuration") as e:
        net.load_official(path)
    key = {"missing": "layers.2.blocks.1.mlp.fc2.bias", "unknown": "layers.1.downsample.extra",
           "shape": "patch_embed.proj.weight"}
    assert key[change] in str(e.value)
    assert all(torch.equal(before[n], p) for n, p in net.state_dict().items())


class NotWeights:
    """A pickled object: ``torch.load(weights_only=True)`` must refuse to build it."""


def test_a_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "objects.pth"
    torch.save({"model": {"patch_embed.proj.weight": NotWeights()}}, path)
    with pytest.raises(CheckpointError, match=r"objects\.pth: cannot read as a weights-only torch checkpoint"):
        SwinUnet(1, 3, **TINY, pretrained=str(path))
