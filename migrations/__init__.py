"""Numbered schema migrations, installed as ``pipekit_migrations``.

Each ``NNNN_name.py`` defines ``up(migrator, db)``. A migration defines the models it needs
inline, frozen as they were when it was written, and never imports ``pipekit.store.tables``:
the current schema moves on, a migration must not.
"""
