"""Agents: the ``pipekit agent`` processes serving queues, as they last reported themselves.

An agent registers when it starts, heartbeats (with the tasks it runs) while it lives, and
says when it stops. An agent whose last heartbeat is older than the lease TTL is presumed
dead: it no longer counts as listening on its queues, and its leases expire with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import pipekit.store.tables as t

from ..config import lease_ttl
from ..errors import QueueNotFound
from ..models import AgentInfo
from .base import StoreBase, new_id

__all__ = ["AgentStore"]


def _agent_info(row: t.Agent) -> AgentInfo:
    return AgentInfo(id=row.id, host=row.host, pid=row.pid, queues=tuple(json.loads(row.queues)),
                     workers=row.workers, started=row.started, heartbeat=row.heartbeat,
                     tasks=tuple(json.loads(row.tasks)), state=row.state)


class AgentStore(StoreBase):
    """Agents and which queues have a live one."""

    def register_agent(self, queues: Sequence[str], *, host: str, pid: int, pid_started: float,
                       workers: int = 1, create_queues: bool = False) -> str:
        """Record a starting agent; returns its id.

        :param create_queues: create queues that do not exist (else they are an error).
        :raises QueueNotFound: a queue does not exist (the message lists the known ones).
        """
        names = list(dict.fromkeys(queues))
        self._check()

        def insert() -> str:
            now = time.time()
            known = {q.name for q in t.Queue.select(t.Queue.name)}
            for name in names:
                if name not in known:
                    if not create_queues:
                        raise QueueNotFound(name, sorted(known))
                    t.Queue.insert(name=name, created=now).on_conflict_ignore().execute()
            agent_id = new_id()
            t.Agent.insert(id=agent_id, host=host, pid=pid, pid_started=pid_started,
                           queues=json.dumps(names), workers=workers, started=now,
                           heartbeat=now, tasks="[]", state="running").execute()
            return agent_id

        return self.write(insert)

    def agent_heartbeat(self, agent_id: str, tasks: Sequence[str],
                        state: str = "running") -> None:
        """An agent is alive, running ``tasks`` (``state``: running, stopping or stopped)."""
        self._check()
        self.write(lambda: t.Agent.update(heartbeat=time.time(), tasks=json.dumps(list(tasks)),
                                          state=state)
                   .where(t.Agent.id == agent_id).execute())

    def list_agents(self, *, live_within: float | None = None,
                    include_gone: bool = False) -> list[AgentInfo]:
        """Agents, newest first: those that heartbeat within ``live_within`` seconds (default:
        the lease TTL) and have not stopped, or every one with ``include_gone``.
        """
        self._check()
        query = t.Agent.select().order_by(t.Agent.started.desc(), t.Agent.id)
        if not include_gone:
            window = lease_ttl() if live_within is None else live_within
            query = query.where((t.Agent.heartbeat >= time.time() - window)
                                & (t.Agent.state != "stopped"))
        return [_agent_info(row) for row in query]
