"""``python -m modelport.cli``: the ``modelport`` command."""

from modelport.cli.main import main

main()
