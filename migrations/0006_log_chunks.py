"""Task logs copied into the database, so every machine that shares a database server can
read them: ``log_chunk`` holds the bytes of each task's log file, as appended, under the file
they came from (``source``: host and path) and their offset in it. A chunk is inserted only
at the end of what its source shipped (the unique index), so two processes copying the same
file never store a byte twice.
"""

from peewee import BlobField, CharField, FloatField, IntegerField, Model


def up(migrator, db):
    class LogChunk(Model):
        task = CharField(max_length=32, index=True)
        source = CharField()
        offset = IntegerField()
        size = IntegerField()
        data = BlobField()
        ts = FloatField()

        class Meta:
            database = db
            table_name = "log_chunk"
            indexes = ((("task", "source", "offset"), True),)

    db.create_tables([LogChunk])
