"""Models from the run config and checkpoints (`models`), distributed evaluation (`distributed`), metrics and
fusion (`metrics`), the fusion weight chosen on validation (`fusion_tuning`), single-video prediction
(`predict`)."""
