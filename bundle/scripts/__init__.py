"""ANDi bundle code: small modules with one job each, imported by the bundle configs as ``scripts``.

MONAI's bundle runner puts ``bundle_root`` on ``sys.path``, so configs use ``$import scripts`` and refer to
``scripts.noise``, ``scripts.scoring`` and so on. Nothing here is installed as a top-level package.
"""

MODALITIES: tuple[str, ...] = ("t1", "t1c", "t2", "flair")
"""Channel order of every image tensor in the bundle: T1, T1Gd, T2, FLAIR."""
