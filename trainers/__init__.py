"""Command-line programs: `python -m trainers.<name> --help`."""
