"""The `depthkd` command-line interface: one module per subcommand."""
