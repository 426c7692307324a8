"""The baselines of the paper (Sec. 5.5, Table 1) as inferers with ANDi's contract, one module per method.

Every inferer maps preprocessed volumes (B, C, H, W, D) and a network to per-channel anomaly maps (B, C, H, W, D),
0 on slices with no brain, and is followed by ANDi's post-processing in the configs (max over modalities, 3D median
filter, Yen threshold + dilation), so that every method is scored the same way:

* :mod:`scripts.baselines.dae`: denoising autoencoder trained with coarse noise (Kascenas et al., MIDL 2022).
* :mod:`scripts.baselines.anoddpm`: DDPM trained and sampled with simplex noise (Wyatt et al., CVPRW 2022).
* :mod:`scripts.baselines.autoddpm`: mask, stitch and re-sample with a Gaussian DDPM (Bercea et al., ICML 2023).
* :mod:`scripts.baselines.flair`: FLAIR intensity thresholding, semi-supervised (Meissen et al., 2021).

Shared pieces: :class:`scripts.scoring.BrainSliceInferer` (volume -> brain slices -> volume, the contract) and
:mod:`scripts.baselines.sampling` (the DDPM reverse chain the two reconstruction methods run).
"""
