"""One module per ``harness`` command: ``NAME``, ``setup_arguments(subparsers)`` (adds the
command's parser and returns it) and ``run(args)`` (the exit code). ``harness.cli.main`` lists
them in one table; a new command is a new module here and one line there."""
