"""The host: the mergekit merge method, the `run_merge` wrapper, the streamed write, recipe
checks, and the factor-space variant's writer.
"""
