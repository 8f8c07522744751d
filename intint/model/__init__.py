"""The network (`slowonly`), PYSKL checkpoint import (`pyskl_checkpoint`) and training checkpoint
folders (`checkpoint`)."""
