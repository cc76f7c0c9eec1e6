"""CLI subcommands, one module each (see tl_glasses.cli)."""
