"""Fixtures shared by every test level.

Each level lives in its own directory (``unit/``, ``contract/``, ``functions/``, ``infra/``,
``e2e/``, ``reliability/``) with a ``conftest.py`` for what only it needs. The store fixtures,
parametrized over every backend, are in ``tests/contract/conftest.py``; fixtures that more than
one level needs move up to this file.
"""
