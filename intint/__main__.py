"""`python -m intint`: the same command line as `intint` (see `intint.cli`)."""

from intint.cli import app

app(prog_name="intint")
