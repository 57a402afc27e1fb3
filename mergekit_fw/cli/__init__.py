"""The `mergekit-fw` command, lm-eval evaluation, the built-in tiny zoo and `make demo`."""
