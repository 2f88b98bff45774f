"""The model: backbones and the fusion network, the bundle on disk, training, calibration, evaluation."""
