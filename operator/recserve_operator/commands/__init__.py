"""One module per ``recserve`` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``."""
