"""Agents and leases: who serves which queues, and how many claims a queued task may have.

``agent`` holds one row per ``pipekit agent`` process (its queues, the task it runs, its last
heartbeat), so a step can tell a busy queue from one nobody listens to. A queue entry's
``max_attempts`` bounds how often a task whose worker was lost is claimed again.
"""

from peewee import CharField, FloatField, IntegerField, Model, TextField
from playhouse.migrate import migrate


def up(migrator, db):
    class Agent(Model):
        id = CharField(primary_key=True, max_length=32)
        host = CharField()
        pid = IntegerField()
        pid_started = FloatField()
        queues = TextField(default="[]")  # JSON list of queue names
        workers = IntegerField(default=1)
        started = FloatField()
        heartbeat = FloatField(index=True)
        tasks = TextField(default="[]")  # JSON list of the task ids it runs now
        state = CharField(default="running")  # running | stopping | stopped

        class Meta:
            database = db
            table_name = "agent"

    db.create_tables([Agent])
    migrate(
        migrator.add_column("queue_entry", "max_attempts", IntegerField(default=2)),
        migrator.add_index("queue_entry", ("lease_expires",), False),
    )
