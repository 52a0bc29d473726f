"""The `depthkd` command-line interface: one module per subcommand."""

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # as the shell reports Ctrl-C
