"""The configured modalities: which are known, which one a step that needs a particular sequence uses, and which one
registration takes as its reference.

``modalities`` (``configs/inference.yaml``) names one to five of :data:`scripts.KNOWN_MODALITIES` (T1, T1Gd, T2, FLAIR,
PD) in the order of the image's channels. Steps that assume a sequence ask for it here and stop with one line when the
configuration lacks it (the FLAIR-threshold baseline, EPDiff's FLAIR term, a named healthy-slice or overview
modality).
"""

from __future__ import annotations

from collections.abc import Sequence

from scripts import KNOWN_MODALITIES
from scripts.errors import StudyError

ATLAS_CONTRAST = "t1"
"""The contrast of the atlases the bundle registers to (SRI24's and MNI152's T1 brain templates)."""


def checked(modalities: Sequence[str]) -> list[str]:
    """``modalities`` as a list, each known and named once; StudyError (one line) otherwise."""
    names = [str(m) for m in ([modalities] if isinstance(modalities, str) else modalities)]
    unknown = [m for m in names if m not in KNOWN_MODALITIES]
    if unknown or not names:
        raise StudyError(
            f"modalities {names}: {', '.join(unknown) or 'none'} not known; use one or more of "
            f"{', '.join(KNOWN_MODALITIES)}"
        )
    doubles = sorted({m for m in names if names.count(m) > 1})
    if doubles:
        raise StudyError(f"modalities {names}: {', '.join(doubles)} named twice")
    return names


def channel_of(modalities: Sequence[str], modality: str, needed_by: str) -> int:
    """The channel of ``modality`` among ``modalities``; StudyError naming the step that needs it when it is absent.

    Example: ``channel_of(["t1", "t2"], "flair", "the FLAIR-threshold baseline")`` stops with
    ``modalities [t1, t2] hold no flair, which the FLAIR-threshold baseline needs``.
    """
    names = checked(modalities)
    if modality not in names:
        raise StudyError(
            f"modalities [{', '.join(names)}] hold no {modality}, which {needed_by} needs; add {modality} to "
            "--modalities or choose another setting"
        )
    return names.index(modality)


def preferred(modalities: Sequence[str], wanted: str | None = "flair") -> str:
    """``wanted`` when configured, else the first configured modality (the overview's and the healthy-slice rule's
    default: FLAIR, as the paper, where there is one)."""
    names = checked(modalities)
    return wanted if wanted is not None and wanted in names else names[0]


def reference_modality(modalities: Sequence[str], wanted: str | None = None) -> str:
    """The modality registered to the atlas: ``wanted`` when given (StudyError unless configured), else T1 when
    configured (the atlas is a T1 template, so T1 to T1 is matched best), else the first modality (matched to the T1
    atlas by mutual information, which tolerates a change of contrast)."""
    names = checked(modalities)
    if wanted not in (None, "", "auto", "null"):
        channel_of(names, str(wanted), "reference_modality")
        return str(wanted)
    return ATLAS_CONTRAST if ATLAS_CONTRAST in names else names[0]
