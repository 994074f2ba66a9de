"""Repo-level pytest setup: notebooks run under nbval at the `smoke` profile.

nbval's kernels inherit this process's environment, and every notebook's parameters cell reads
GLAMD_PROFILE, so setting it here is all it takes.
"""

import os

os.environ.setdefault("GLAMD_PROFILE", "smoke")
