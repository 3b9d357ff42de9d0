"""Runs know their owner: the controller process that drives them, and its last heartbeat, so
a run whose controller died can be told from one that is merely slow ("controller lost").
"""

from peewee import CharField, FloatField
from playhouse.migrate import migrate


def up(migrator, db):
    migrate(
        migrator.add_column("run", "owner", CharField(null=True)),
        migrator.add_column("run", "heartbeat", FloatField(null=True)),
    )
