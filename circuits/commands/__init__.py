"""One module per ``p0-circuits`` subcommand (see ``circuits.cli``)."""
