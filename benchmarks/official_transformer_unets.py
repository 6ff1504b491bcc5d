"""Our TransUNet, Swin-Unet and MT-UNet against their official code: parameter counts at the papers' 224 px, and the
outputs of the same weights on the same input.

    python benchmarks/official_transformer_unets.py TRANSUNET_DIR SWIN_UNET_DIR MT_UNET_DIR

Each DIR is a checkout of github.com/Beckschen/TransUNet, github.com/HuCaoFighting/Swin-Unet and
github.com/Dootmaan/MT-UNet (their ``networks/`` or ``model/`` folders are imported from there, never copied).
``ml_collections`` and ``timm`` (only their config dict, ``to_2tuple``, ``trunc_normal_`` and ``DropPath`` are
used) are stood in for when they cannot be imported; MT-UNet's hard-coded ``.cuda()`` calls are made no-ops.

Prints the official networks' parameter counts at 224 px with 9 classes (the tests pin ours against them) and, for
small configurations at 64 px in eval mode with the official weights copied into ours, the largest output
difference: float rounding means the same network. The figures are in benchmarks/NOTES.md.
"""
from __future__ import annotations

import copy
import importlib
import re
import sys
import types

import torch
from torch import nn

from baselines.mt_unet import MTUNetNet
from baselines.swin_unet import SwinUnetNet
from baselines.transunet import TransUNetNet


def stand_ins() -> None:
    """Minimal ``ml_collections.ConfigDict`` and ``timm.models.layers`` where the packages do not import."""
    try:
        importlib.import_module("ml_collections")
    except ImportError:
        class ConfigDict(dict):
            __getattr__ = dict.__getitem__
            __setattr__ = dict.__setitem__

            def __deepcopy__(self, memo):
                return ConfigDict({k: copy.deepcopy(v, memo) for k, v in self.items()})
        sys.modules["ml_collections"] = types.SimpleNamespace(ConfigDict=ConfigDict)
    try:
        importlib.import_module("timm.models.layers")
    except Exception:  # timm missing, or failing on a torchvision mismatch
        layers = types.SimpleNamespace(DropPath=lambda p: nn.Identity(), to_2tuple=lambda x: (x, x),
                                       trunc_normal_=lambda t, std=1.0: nn.init.trunc_normal_(t, std=std))
        sys.modules.update({"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
                            "timm.models.layers": layers})


def import_from(root: str, module: str):
    """``module`` imported from the checkout ``root`` (TransUNet and Swin-Unet both name their package
    ``networks``: the other's is forgotten first)."""
    for name in [n for n in sys.modules if n.split(".")[0] in ("networks", "model")]:
        del sys.modules[name]
    sys.path.insert(0, root)
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(root)


def n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def transunet(root: str) -> None:
    official_module = import_from(root, "networks.vit_seg_modeling")
    CONFIGS, VisionTransformer = official_module.CONFIGS, official_module.VisionTransformer

    def config(img: int, classes: int, **changes):
        cfg = copy.deepcopy(CONFIGS["R50-ViT-B_16"])
        cfg.n_classes, cfg.n_skip, cfg.patches.grid = classes, 3, (img // 16, img // 16)
        for k, v in changes.items():
            cfg[k] = v
        return cfg
    print("transunet params official", n_parameters(VisionTransformer(config(224, 9), img_size=224, num_classes=9)))
    cfg = config(64, 3, hidden_size=64)
    cfg.transformer.update(num_heads=4, num_layers=2, mlp_dim=128)
    cfg.resnet.num_layers = (1, 2, 1)
    official = VisionTransformer(cfg, img_size=64, num_classes=3).eval()
    ours = TransUNetNet(1, 3, 64, 64, (1, 2, 1), 32, 64, 2, 4, 128, 0.1, 0.0, (256, 128, 64, 16), 512, 3).eval()
    rules = [(r"transformer\.embeddings\.hybrid_model\.root\.(conv|gn)", r"resnet.root_\1"),
             (r"transformer\.embeddings\.hybrid_model\.body\.block(\d)\.unit(\d+)",
              lambda m: f"resnet.body.{int(m[1]) - 1}.{int(m[2]) - 1}"),
             (r"transformer\.embeddings\.", ""),
             (r"transformer\.encoder\.layer\.(\d+)\.(attn\.|ffn\.)?", r"layers.\1."),
             (r"transformer\.encoder\.", ""), (r"decoder\.", ""), (r"segmentation_head\.0", "segmentation_head")]
    state = {}
    for name, value in official.state_dict().items():
        for pattern, repl in rules:
            name = re.sub(pattern, repl, name)
        state[name] = value
    ours.load_state_dict(state)
    with torch.no_grad():
        ours.position_embeddings.normal_()   # both zero at initialisation: compare a non-zero one
        official.transformer.embeddings.position_embeddings.copy_(ours.position_embeddings)
    compare("transunet", official, ours, torch.randn(2, 1, 64, 64))


def swin_unet(root: str) -> None:
    SwinTransformerSys = import_from(root, "networks.swin_transformer_unet_skip_expand_decoder_sys").SwinTransformerSys

    print("swin-unet params official", n_parameters(SwinTransformerSys(
        img_size=224, num_classes=9, depths=[2, 2, 2, 2], num_heads=[3, 6, 12, 24], window_size=7,
        drop_path_rate=0.2)))
    official = SwinTransformerSys(img_size=64, num_classes=3, embed_dim=24, depths=[2, 2, 2, 2],
                                  num_heads=[1, 2, 2, 4], window_size=2, drop_path_rate=0.0).eval()
    ours = SwinUnetNet(3, 3, 64, 4, 24, (2, 2, 2, 2), (1, 2, 2, 4), 2, 4.0, 0.0).eval()
    ours.load_state_dict({k: v for k, v in official.state_dict().items()
                          if not k.endswith(("relative_position_index", "attn_mask"))})
    compare("swin-unet", official, ours, torch.randn(2, 3, 64, 64))


def mt_unet(root: str) -> None:
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    MTUNet = import_from(root, "model.MTUNet").MTUNet

    print("mt-unet params official", n_parameters(MTUNet(9)))
    official = MTUNet(3)
    official.stem.position_embedding = nn.Parameter(torch.randn(1, 64, 256))   # 64 px: 8 x 8 tokens
    official.eval()
    ours = MTUNetNet(3, 3, 64, (64, 128, 256), 256, 2, 8, 4, 4, 64).eval()
    # the official parameters in ours' order: without the idle ones; the decoder stem's transposed convolutions
    # before its double convolutions; the Gaussian width where ours registers it, before the fusion convolution
    idle = r"global_atten\.out\.|gaussiantrans\.bias"
    source = [(n, p) for n, p in official.named_parameters() if not re.search(idle, n)]
    stem = [(n, p) for n, p in source if n.startswith("decoder_stem")]
    source = ([(n, p) for n, p in source if not n.startswith(("decoder_stem", "SegmentationHead"))]
              + [x for x in stem if ".trans" in x[0]] + [x for x in stem if ".res" in x[0]]
              + [(n, p) for n, p in source if n.startswith("SegmentationHead")])
    names = [n for n, _ in ours.named_parameters() if not n.endswith("local_global.shift")]
    for shift in [n for n, _ in ours.named_parameters() if n.endswith("local_global.shift")]:
        names.insert(names.index(shift.replace("shift", "fuse.weight")), shift)
    params = dict(ours.named_parameters())
    with torch.no_grad():
        for (_, value), name in zip(source, names, strict=True):
            params[name].copy_(value)
    compare("mt-unet", official, ours, torch.randn(2, 3, 64, 64))


def compare(name: str, official: nn.Module, ours: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        print(f"{name} same weights, 64 px: max |official - ours| = {(official(x) - ours(x)).abs().max():.2e}")


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    stand_ins()
    torch.manual_seed(0)
    transunet(sys.argv[1])
    swin_unet(sys.argv[2])
    mt_unet(sys.argv[3])


if __name__ == "__main__":
    main()
