"""Test-only export of our ``Recognizer`` weights under PYSKL's key names, to write PYSKL-shaped checkpoints.

The library only imports PYSKL checkpoints (``intint.model.pyskl_checkpoint``); the tests need the way back to
build such checkpoints from a model whose weights they know.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from intint.model.pyskl_checkpoint import intint_to_pyskl_key


def to_pyskl_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A ``Recognizer.state_dict()`` renamed to PYSKL's key names."""
    return {intint_to_pyskl_key(k): v for k, v in state.items()}
