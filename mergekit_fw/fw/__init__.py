"""The algorithm: Frank-Wolfe loop, soft variant, oracles, step rules, objectives.

Torch only: nothing here imports mergekit (tests/test_layout.py holds that), which is what
lets the Python API run the loop on any torch module.
"""
