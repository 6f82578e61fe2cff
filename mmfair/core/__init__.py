"""The library behind the CLI: it never prints; it logs and returns dataframes and dataclasses."""
