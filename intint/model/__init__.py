"""The network (`slowonly`), PYSKL checkpoint import and export (`pyskl_checkpoint`) and training checkpoint
folders (`checkpoint`)."""
