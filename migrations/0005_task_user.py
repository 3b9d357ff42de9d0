"""Tasks record who created them (the login name), so run listings can say who ran a run.
Rows from before have none.
"""

from peewee import CharField
from playhouse.migrate import migrate


def up(migrator, db):
    migrate(migrator.add_column("task", "user", CharField(null=True)))
