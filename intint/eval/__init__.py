"""Models from the run config and checkpoints (`models`), distributed evaluation (`distributed`), metrics and
fusion (`metrics`), the fusion weight chosen on validation (`fusion_tuning`), what an evaluation leaves
behind: results file names, class names, per-video Parquet (`outputs`), `intint export` (`export`),
single-video prediction (`predict`)."""
