"""The promotion gate: re-evaluate challenger and champion, decide, record, move the alias."""
