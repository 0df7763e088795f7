"""Developer tools, not part of the installed ragmart package: the sample generator and the
CDC file encoders it shares with the tests. Run from the repository root (python -m tools.sample).
"""
