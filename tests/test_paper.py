"""The `paper` profile and the paper preset: the authors' choices in one overlay, their UNet's shape."""

from __future__ import annotations

import torch
from monai.networks.blocks.spatialattention import SpatialAttentionBlock

from benchmarks.bench.configs import config_parser
from scripts.networks import NETWORK_PRESETS, make_network


def test_paper_preset_has_the_authors_shape_and_its_stated_size():
    """Planted bug: "a preset's channels or attention levels changed" (the size pin and the shape fail)."""
    net = make_network("paper")
    # A regression pin, copied from the code's output (not derived): MONAI's DiffusionModelUNet with the preset's
    # arguments has this many parameters, and the model card states it. A change means the preset (or MONAI's UNet)
    # changed: the card's figure, and weights trained with the preset, no longer hold. (The authors': 9,720,964.)
    assert sum(p.numel() for p in net.parameters()) == 17_983_908
    assert [int(c) for c in net.block_out_channels] == [32, 64, 128, 256, 256]
    heads = {m.attn.num_heads for m in net.modules() if isinstance(m, SpatialAttentionBlock)}
    assert heads == {4}, "4 heads at every attention level, as the authors' nn.MultiheadAttention(channels, 4)"
    assert net(torch.zeros(1, 4, 128, 128), timesteps=torch.tensor([100])).shape == (1, 4, 128, 128)


def test_paper_profile_sets_every_choice_of_the_authors():
    inference = config_parser(["evaluate.yaml", "paper.yaml"])
    assert inference.get_parsed_content("inferer").timesteps == list(range(75, 200))
    assert inference.get_parsed_content("inferer").all_slices
    expected = {
        "network_preset": "paper",
        "diffusion_range": [-1, 1],
        "median_filter_size": 5,
        "voxel_set": "volume",
        "max_segmented_fraction": None,
        "ceil_grid": [0.01, 0.3, 0.001],
        "aggregation": "geometric",
        "channel_reduction": "max",
        "scoring_noise": "gaussian",
    }
    assert {k: inference.get_parsed_content(k) for k in expected} == expected
    assert not inference.get_parsed_content("post#mask_brain").enabled
    assert inference.get_parsed_content("evaluation_voxel_sets") == ["volume", "brain"]
    training = config_parser(["train.yaml", "paper.yaml"])
    assert training.get_parsed_content("noise_type") == "pyramid_authors"
    recorded = training.get_parsed_content("training_record")  # the network's shape, for the record
    assert recorded["network.block_out_channels"] == list(NETWORK_PRESETS["paper"]["channels"])
    assert recorded["pre.resize.resizer.antialias"] is True  # the slices' preprocessing: torch's antialiased resize
    diffusion_range = training.get_parsed_content("prepare_batch").diffusion_range
    assert (diffusion_range.low, diffusion_range.high) == (-1.0, 1.0)
