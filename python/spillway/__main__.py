"""`python -m spillway`: the same as the `spillway` command."""

from spillway import main

main()
