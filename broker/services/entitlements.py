"""Granting and withdrawing a pool to a user or a group (the admin's inline does the same through
the model; the API and scripts come here). Withdrawing ends the access it gave: the post_delete
signal (broker/signals.py) revokes what the pool's users lost."""

from django.db import transaction

from ..models import BrokerEvent, Entitlement


def grant_entitlement(*, pool, user=None, group=None, actor=None) -> Entitlement:
    """Entitle one user or one group (not both) to `pool`; an existing entitlement is returned as is."""
    if (user is None) == (group is None):
        raise ValueError("entitle either one user or one group")
    with transaction.atomic():
        entitlement, created = Entitlement.objects.get_or_create(pool=pool, user=user, group=group)
        if created:
            who = actor.get_username() if actor else "the broker"
            BrokerEvent.objects.create(kind=BrokerEvent.Kind.POOL, pool=pool,
                                       message=f"{entitlement} entitled by {who}"[:2000])
    return entitlement


def withdraw_entitlement(*, entitlement: Entitlement, actor=None) -> None:
    with transaction.atomic():
        who = actor.get_username() if actor else "the broker"
        BrokerEvent.objects.create(kind=BrokerEvent.Kind.POOL, pool_id=entitlement.pool_id,
                                   message=f"{entitlement} withdrawn by {who}"[:2000])
        entitlement.delete()
