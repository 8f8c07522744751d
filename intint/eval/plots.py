"""What every intint picture shares: the pathway colours, the resolution, and the atomic PNG write.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never pyplot, so plotting keeps no
global state, needs no display and is safe in loader or Ray worker processes. `save_png` writes the file
atomically (`fsio.atomic_write`), so a half-written PNG never appears under its final name; paths may be
any fsspec URL. The demo's pictures (`intint.demo.plots`) and the ablation's bar chart
(`intint.ablation.results_table`) both draw with these.
"""

from __future__ import annotations

import io
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from intint.store import fsio

DPI = 110   # pixels per inch of the PNGs; lower it for thumbnails (e.g. W&B media), raise it for print
PATHWAY_COLOURS: dict[str, str] = {"integrity": "tab:blue", "intensity": "tab:orange", "fused": "tab:green"}


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> str:
    """Render `fig` to PNG bytes in memory, then write them atomically; returns the path written."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    url = os.fspath(path)
    fsio.atomic_write(url, buffer.getvalue())
    return url
