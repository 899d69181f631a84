"""Replaying stored deliveries: applying again what an operator asks for (a failed or
rejected delivery, or an applied one to re-apply it; order-safe, as every delivery is)."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.exceptions import RedisError

from sync import admission, jobs
from sync.models import Delivery
from sync.runtime import Runtime


@dataclass
class Replayed:
    """What a replay did: how many deliveries are pending again, and why the others are not."""

    count: int = 0
    refused: list[str] = field(default_factory=list)


def replay(rt: Runtime, delivery_ids: list[int]) -> Replayed:
    """Make each delivery pending again if it passes today's checks, and queue a drain of
    its project (when Redis is down, the sweep queues it later: nothing is lost)."""
    done, projects = Replayed(), set()
    with rt.sessions() as session:
        for delivery_id in delivery_ids:
            row = session.get(Delivery, delivery_id)
            if row is None:
                done.refused.append(f"no delivery {delivery_id}")
            elif found := admission.readmit(row, rt.settings):
                problem = f"{found[0].path}: {found[0].message}"
                done.refused.append(f"delivery {delivery_id} is still invalid: {problem}")
            else:
                projects.add(row.project_id)
                done.count += 1
        session.commit()
    for project_id in projects:
        try:
            jobs.request_drain(rt.redis, rt.settings.queue_name, project_id)
        except RedisError:
            break
    return done
