"""Build a shard set: the same command as ``intint build-shards`` (see shards/README.md).

Kept as a script so it can be a Ray job entry point
(``ray job submit --working-dir . -- python shards/build.py ANNOTATIONS -o s3://... --ray``), where the
package may be importable only from the uploaded working directory.
"""

import sys
from pathlib import Path

try:
    import intint  # noqa: F401
except ImportError:  # running from a checkout without an install (e.g. a Ray job's working_dir)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import typer  # noqa: E402

from intint.cli import build_shards  # noqa: E402

if __name__ == "__main__":
    typer.run(build_shards)
