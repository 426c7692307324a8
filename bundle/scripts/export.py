"""The ``export`` workflow: the trained network as TorchScript, traced with both of its inputs, and as a
``torch.export`` program (``.pt2``), the format that outlives TorchScript (deprecated in torch 2.13).

MONAI's ``ckpt_export`` cannot do it for this network: it scripts by default, and ``torch.jit.script`` fails on
``DiffusionModelUNet``'s attention block (MONAI 1.6), while its tracing option passes one example input and the UNet
also takes the timesteps. So this traces ``network(x_t, t)`` with MONAI's own helpers and saves it with the bundle's
metadata and configs (``save_net_with_metadata``), as ``ckpt_export`` would:

    python -m monai.bundle run export --meta_file configs/metadata.json \\
        --config_file "['configs/inference.yaml','configs/export.yaml']"

A trace records the device it ran on (the timestep embedding is built there): export on the device you will run on.
The program (:func:`export_program`) is loaded with ``torch.export.load(path).module()`` and called as
``net(x_t, t)`` on any batch size.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import save_net_with_metadata
from monai.networks.utils import convert_to_torchscript
from scripts.files import atomic_write_bytes


def export_torchscript(
    network: torch.nn.Module,
    path: str | os.PathLike,
    image_size: int,
    in_channels: int,
    meta: Mapping[str, object] | None = None,
    config_files: Sequence[str | os.PathLike] = (),
) -> Path:
    """Trace ``network`` (eval mode) on a batch of two (N, C, H, W) slices and two timesteps, and write it to ``path``
    atomically with ``meta`` and the merged ``config_files`` (as ``configs.json``) inside."""
    network = network.eval()
    device = next(network.parameters()).device
    example = [
        torch.rand(2, in_channels, image_size, image_size, device=device),
        torch.tensor([75, 199], device=device),
    ]
    extra = {"configs.json": json.dumps(ConfigParser.load_config_files([str(f) for f in config_files])).encode()}
    buffer = io.BytesIO()
    # quiet: the trace notes that shape checks become constants (the shapes are fixed here), and torch.jit is
    # deprecated in favour of torch.export, which the model zoo does not read
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = convert_to_torchscript(network, inputs=example, use_trace=True, check_trace=False)
        save_net_with_metadata(
            traced,
            buffer,
            include_config_vals=False,
            append_timestamp=False,
            meta_values=dict(meta or {}),
            more_extra_files=extra if config_files else None,
        )
    return atomic_write_bytes(buffer.getvalue(), path)


def export_program(
    network: torch.nn.Module, path: str | os.PathLike, image_size: int, in_channels: int, max_batch: int = 4096
) -> Path:
    """``torch.export`` ``network`` (eval mode) with inputs x_t (N, C, H, W) and t (N,), N dynamic up to
    ``max_batch``, and save the program to ``path`` (``.pt2``) atomically."""
    network = network.eval()
    device = next(network.parameters()).device
    example = (
        torch.rand(2, in_channels, image_size, image_size, device=device),
        torch.tensor([75, 199], device=device),
    )
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    program = torch.export.export(network, example, dynamic_shapes=({0: batch}, {0: batch}))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return atomic_write_bytes(buffer.getvalue(), path)
