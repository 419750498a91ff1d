"""Use cases: what the CLI and the HTTP API both do, with typed parameters. Neither calls the other."""
