"""The ``evo`` command line: :mod:`evo.cli.main` parses, one thin module per command."""
