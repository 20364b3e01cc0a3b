"""``python -m vidpress`` runs the command line."""

from vidpress.cli import main

main()
