"""`python -m cee_bench` (and `accelerate launch -m cee_bench`) runs the CLI."""

from cee_bench.cli import main

main()
