"""Test oracles: plain, independent restatements the library is checked against (not shipped)."""
