"""peewee tables of the store, bound to one :class:`peewee.DatabaseProxy`.

Only :mod:`pipekit.store` imports this module. The schema here must equal what the migrations
in ``migrations/`` build (a test compares them); a change to it is a new migration.
Timestamps are POSIX seconds (floats): cheap to write, trivially ordered, zone-free.
"""

from __future__ import annotations

from peewee import (
    BlobField,
    BooleanField,
    CharField,
    DatabaseProxy,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

proxy = DatabaseProxy()


class Base(Model):
    class Meta:
        database = proxy
        legacy_table_names = False


class Project(Base):
    name = CharField(unique=True)
    created = FloatField()


class Task(Base):
    id = CharField(primary_key=True, max_length=32)
    project = ForeignKeyField(Project, backref="tasks", on_delete="CASCADE")
    name = CharField()
    type = CharField(default="training")
    status = CharField(default="created", index=True)
    status_reason = TextField(default="")
    parent = CharField(null=True, index=True, max_length=32)
    script = TextField(default="{}")  # JSON: path, argv, working_dir, entry_point …
    code_digest = CharField(null=True, max_length=64)
    code = TextField(null=True)  # function source for function steps
    created = FloatField()
    started = FloatField(null=True)
    ended = FloatField(null=True)
    last_update = FloatField()
    worker = CharField(null=True)
    tags = TextField(default="[]")  # JSON list
    archived = BooleanField(default=False)
    comment = TextField(default="")
    log_path = TextField(null=True)
    log_size = IntegerField(default=0)
    cache_key = CharField(null=True, max_length=64, index=True)  # migration 0002
    user = CharField(null=True)  # migration 0005: who created it (the login name)

    class Meta:
        indexes = ((("project", "name"), False),)


class Parameter(Base):
    task = ForeignKeyField(Task, backref="parameters", on_delete="CASCADE")
    section = CharField()
    name = CharField()
    value = TextField()
    type = CharField(default="str")
    description = TextField(default="")

    class Meta:
        indexes = ((("task", "section", "name"), True),)


class Configuration(Base):
    task = ForeignKeyField(Task, backref="configurations", on_delete="CASCADE")
    name = CharField()
    value = TextField()
    kind = CharField(default="json")  # json | text

    class Meta:
        indexes = ((("task", "name"), True),)


class Artifact(Base):
    task = ForeignKeyField(Task, backref="artifacts", on_delete="CASCADE")
    name = CharField()
    digest = CharField(max_length=64, index=True)
    size = IntegerField()
    serializer = CharField()
    type = CharField()
    filename = CharField()  # what a local copy is called
    inline = BlobField(null=True)
    metadata = TextField(default="{}")
    preview = TextField(default="")
    created = FloatField()

    class Meta:
        indexes = ((("task", "name"), True),)


class OutputModel(Base):
    id = CharField(primary_key=True, max_length=32)
    task = ForeignKeyField(Task, backref="models", on_delete="CASCADE")
    name = CharField()
    framework = CharField(null=True)
    digest = CharField(max_length=64, index=True)
    size = IntegerField()
    serializer = CharField()
    type = CharField()
    filename = CharField()  # what a local copy is called
    inline = BlobField(null=True)
    created = FloatField()

    class Meta:
        table_name = "model"


class Scalar(Base):
    task = ForeignKeyField(Task, backref="scalars", on_delete="CASCADE")
    title = CharField()
    series = CharField()
    iteration = IntegerField()
    value = FloatField()
    ts = FloatField()

    class Meta:
        indexes = ((("task", "title", "series", "iteration"), False),)


class SingleValue(Base):
    task = ForeignKeyField(Task, backref="single_values", on_delete="CASCADE")
    name = CharField()
    value = FloatField()

    class Meta:
        indexes = ((("task", "name"), True),)


class Report(Base):
    task = ForeignKeyField(Task, backref="reports", on_delete="CASCADE")
    kind = CharField()  # text | table | plot
    title = CharField(default="")
    series = CharField(default="")
    iteration = IntegerField(null=True)
    content = TextField()
    ts = FloatField()


class Queue(Base):
    name = CharField(unique=True)
    created = FloatField()


class QueueEntry(Base):
    queue = ForeignKeyField(Queue, backref="entries", on_delete="CASCADE")
    task = ForeignKeyField(Task, unique=True, on_delete="CASCADE")
    priority = IntegerField(default=0)
    enqueued = FloatField()
    worker = CharField(null=True)
    attempt = IntegerField(default=0)
    lease_expires = FloatField(null=True, index=True)  # index: migration 0003
    max_attempts = IntegerField(default=2)  # migration 0003


class Agent(Base):  # migration 0003
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


class Pipeline(Base):
    project = ForeignKeyField(Project, on_delete="CASCADE")
    name = CharField()
    version = CharField()
    structure_hash = CharField(max_length=64)
    created = FloatField()

    class Meta:
        indexes = ((("project", "name", "version"), True),)


class Run(Base):
    task = ForeignKeyField(Task, primary_key=True, on_delete="CASCADE")
    pipeline = ForeignKeyField(Pipeline, null=True, on_delete="SET NULL")
    version = CharField(null=True)
    structure_hash = CharField(null=True, max_length=64)
    origin = CharField(null=True, max_length=32)
    dag = TextField(default="{}")
    created = FloatField()
    owner = CharField(null=True)  # migration 0004: host:pid of the controller driving it
    heartbeat = FloatField(null=True)  # migration 0004: its last heartbeat


class Node(Base):
    run = ForeignKeyField(Run, backref="nodes", on_delete="CASCADE")
    name = CharField()
    task = CharField(null=True, max_length=32, index=True)
    status = CharField(default="pending")
    parents = TextField(default="[]")
    cache_key = CharField(null=True, max_length=64)
    attempt = IntegerField(default=0)
    started = FloatField(null=True)
    ended = FloatField(null=True)

    class Meta:
        indexes = ((("run", "name"), True),)


class LogChunk(Base):  # migration 0006: logs copied into a shared database
    task = CharField(max_length=32, index=True)
    source = CharField()  # host:path of the log file the bytes came from
    offset = IntegerField()  # where they start in that file
    size = IntegerField()
    data = BlobField()
    ts = FloatField()

    class Meta:
        indexes = ((("task", "source", "offset"), True),)


ALL_TABLES = [Project, Task, Parameter, Configuration, Artifact, OutputModel, Scalar,
              SingleValue, Report, Queue, QueueEntry, Agent, Pipeline, Run, Node, LogChunk]
