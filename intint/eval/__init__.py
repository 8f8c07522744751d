"""Models from the run config and checkpoints (`models`), distributed evaluation (`distributed`), metrics and
fusion (`metrics`), single-video prediction (`predict`)."""
