"""Tasks remember the cache key they were run under, so a later run can reuse them."""

from peewee import CharField
from playhouse.migrate import migrate


def up(migrator, db):
    migrate(
        migrator.add_column("task", "cache_key", CharField(null=True, max_length=64)),
        migrator.add_index("task", ("cache_key",), False),
    )
