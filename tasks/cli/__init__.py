"""The command line: parsers, the command table, and the views that print plans, status and results."""

