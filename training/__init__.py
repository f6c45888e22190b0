"""Training for geodemo (Lightning): ``python -m training --help``.

Library entry points: ``training.fit.train``, ``training.fit.cross_validate``, ``training.evaluate.evaluate``.
"""
