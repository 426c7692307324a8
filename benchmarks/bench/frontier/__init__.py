"""What ``benchmarks/frontier.py`` is made of, one job a module: quality per second of ANDi's scoring on a CPU.

* :mod:`.studies`: the made test studies, preprocessed once;
* :mod:`.networks`: the networks compared and inference's configured inferer;
* :mod:`.cache`: log d_t per timestep on disk, and the geometric mean of any subset of it;
* :mod:`.timing`: the speed options (pairs per call, precision, ``torch.compile``) and their seconds per pair;
* :mod:`.quality`: AUPRC of subsets' maps, the rows (a subset's AUPRC with its seconds), the held-out check;
* :mod:`.spread`: the spread over noise seeds;
* :mod:`.plot` and :mod:`.report`: the figure and the Markdown.
"""

from __future__ import annotations


def log(text: str) -> None:
    """A line of progress, at once."""
    print(text, flush=True)
