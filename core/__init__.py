"""The bottom layer: pure helpers every app imports and that import nothing of ours.

``money`` (the one rounding function, decimal parsing), ``periods`` (billing months) and
``vocabulary`` (the names the API fixes, docs/api.md: customer categories, line kinds). No
Django, no I/O.
"""
