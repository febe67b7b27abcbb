"""The directory sync: accounts, names, e-mails and group memberships follow the directory on their own.

`run_directory_sync()` first reads the whole directory (identity.directory); if that fails,
nothing changes. Then: directory groups are mirrored as Django groups of the same name (so an
admin can entitle a group before any member logged in); members of entitled groups get
accounts; names, e-mails and memberships are brought in line; users gone from the directory, or
in no entitled group, are deactivated and taken out of the directory groups. Removals that look
like a directory fault (an emptied group, an ACL that hides members: more than
VDI_LDAP_SYNC_MAX_REMOVAL_PERCENT at once) are held back until an admin allows them.

Memberships change through `user.groups` / `group.user_set`, never bulk SQL, so the broker's
signals close consoles and schedule desktop deletions for the access that was lost.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models.functions import Lower
from django.utils import timezone

from ..directory import DirectoryConfig, DirectoryError, DirectorySnapshot, DirectoryUserEntry, read_directory
from ..models import AuditEvent, DirectoryAccount, DirectoryGroup, DirectorySyncRun
from . import accounts, audit
from broker.enqueue import enqueue_after_commit

log = logging.getLogger(__name__)
User = get_user_model()
Status = DirectorySyncRun.Status
Reason = DirectoryAccount.InactiveReason
# A run still "running" after this long belongs to a worker that died; it no longer blocks others.
STALE_AFTER = timedelta(hours=1)
MAX_ERRORS_KEPT = 100


@dataclass
class SyncStats:
    users_seen: int = 0
    groups_seen: int = 0
    users_created: int = 0
    users_updated: int = 0
    users_deactivated: int = 0
    users_reactivated: int = 0
    groups_created: int = 0
    memberships_added: int = 0
    memberships_removed: int = 0
    removals_held: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def changed_anything(self) -> bool:
        return any((self.users_created, self.users_updated, self.users_deactivated, self.users_reactivated,
                    self.groups_created, self.memberships_added, self.memberships_removed))


def queue_sync(*, trigger: str, requested_by=None, allow_mass_removal: bool = False) -> DirectorySyncRun:
    return DirectorySyncRun.objects.create(trigger=trigger, requested_by=requested_by,
                                           allow_mass_removal=allow_mass_removal)


def request_sync(*, requested_by, allow_mass_removal: bool = False, request=None) -> DirectorySyncRun:
    """An admin asked for a sync now: a queued run row, and the task once it is committed."""
    with transaction.atomic():
        run = queue_sync(trigger=DirectorySyncRun.Trigger.ADMIN, requested_by=requested_by,
                         allow_mass_removal=allow_mass_removal)
        audit.record_event(kind=AuditEvent.Kind.DIRECTORY_SYNC, request=request, actor=requested_by,
                           target=f"directory sync #{run.pk}",
                           message="requested" + (", applying removals however many" if allow_mass_removal else ""))
        enqueue_after_commit("identity.tasks.sync_directory_task", run.pk)
    return run


def run_directory_sync(*, run_id: int, progress=None) -> DirectorySyncRun:
    """Run a queued sync to the end and record what it did; a duplicate call does nothing.
    `progress` (a job's JobProgress) hears of each phase; a sync is not stopped midway."""
    now = timezone.now()
    DirectorySyncRun.objects.filter(status=Status.RUNNING, started_at__lt=now - STALE_AFTER).update(
        status=Status.FAILED, finished_at=now, errors=["interrupted: its worker stopped before the end"]
    )
    try:
        with transaction.atomic():
            started = DirectorySyncRun.objects.filter(pk=run_id, status=Status.QUEUED).update(
                status=Status.RUNNING, started_at=now
            )
    except IntegrityError:  # one_directory_sync_at_a_time: another run is busy
        DirectorySyncRun.objects.filter(pk=run_id, status=Status.QUEUED).update(
            status=Status.SKIPPED, finished_at=now, errors=["another directory sync was running"]
        )
        return DirectorySyncRun.objects.get(pk=run_id)
    run = DirectorySyncRun.objects.get(pk=run_id)
    if not started:
        return run

    stats = SyncStats()
    try:
        if progress is not None:
            progress.step(done=0, total=2, message="reading the directory", force=True, may_stop=False)
        snapshot = read_directory(DirectoryConfig.from_settings())
        if not snapshot.users:
            raise DirectoryError("the directory returned no users for the user search; nothing was changed")
        if progress is not None:
            progress.step(done=1, message=f"applying {len(snapshot.users)} users and {len(snapshot.groups)} groups",
                          force=True, may_stop=False)
        stats = apply_snapshot(snapshot, allow_mass_removal=run.allow_mass_removal)
        status = Status.HELD if stats.removals_held else Status.SUCCEEDED
    except DirectoryError as exc:
        log.warning("directory sync #%s failed: %s", run.pk, exc)
        status = Status.FAILED
        stats.errors.append(str(exc))
    except Exception as exc:
        log.exception("directory sync #%s failed", run.pk)
        status = Status.FAILED
        stats.errors.append(f"unexpected error, see the worker's log: {exc!r}"[:2000])

    if len(stats.errors) > MAX_ERRORS_KEPT:
        stats.errors[MAX_ERRORS_KEPT:] = [f"... and {len(stats.errors) - MAX_ERRORS_KEPT} more"]
    counts = {name: getattr(stats, name) for name in (
        "users_seen", "groups_seen", "users_created", "users_updated", "users_deactivated", "users_reactivated",
        "groups_created", "memberships_added", "memberships_removed", "removals_held")}
    DirectorySyncRun.objects.filter(pk=run.pk).update(status=status, finished_at=timezone.now(),
                                                      errors=stats.errors, **counts)
    run.refresh_from_db()
    if status != Status.SUCCEEDED or stats.changed_anything:
        audit.record_event(kind=AuditEvent.Kind.DIRECTORY_SYNC, actor=run.requested_by,
                           target=f"directory sync #{run.pk}", message=summary(run))
    log.info("directory sync #%s: %s", run.pk, summary(run))
    return run


def summary(run: DirectorySyncRun) -> str:
    text = (f"{run.get_status_display().lower()}: {run.users_seen} users and {run.groups_seen} groups in the "
            f"directory; {run.users_created} created, {run.users_updated} updated, {run.users_deactivated} "
            f"deactivated, {run.users_reactivated} reactivated; memberships +{run.memberships_added} "
            f"-{run.memberships_removed}")
    if run.removals_held:
        text += f"; {run.removals_held} removals held back"
    if run.errors:
        text += f"; {len(run.errors)} error(s): {run.errors[0]}"
    return text


# -- applying a snapshot ----------------------------------------------------------------------


_UNCHANGED = object()


@dataclass
class _Plan:
    account: DirectoryAccount
    fields: dict = field(default_factory=dict)
    dn: str | None = None
    missing_since: object = _UNCHANGED  # or the new value: a time, or None to clear it
    add: set = field(default_factory=set)
    remove: set = field(default_factory=set)
    deactivate: str = ""  # a Reason, or empty
    reactivate: bool = False

    @property
    def changes_account(self) -> bool:
        return self.dn is not None or self.missing_since is not _UNCHANGED


def apply_snapshot(snapshot: DirectorySnapshot, *, allow_mass_removal: bool = False) -> SyncStats:
    stats = SyncStats(users_seen=len(snapshot.users), groups_seen=len(snapshot.groups), errors=list(snapshot.warnings))
    now = timezone.now()

    group_of_dn = _mirror_groups(snapshot, stats, now)
    managed = accounts.directory_group_ids()
    entitled_groups = accounts.entitled_group_ids()
    entitled_users = accounts.directly_entitled_user_ids()
    target_of = {name: {group_of_dn[dn] for dn in dns if dn in group_of_dn}
                 for name, dns in snapshot.memberships.items()}

    known = set(DirectoryAccount.objects.annotate(name=Lower("user__username")).values_list("name", flat=True))
    wanted = [entry for name, entry in snapshot.users.items()
              if name not in known and target_of.get(name, set()) & entitled_groups]
    _create_accounts(wanted, target_of, stats)

    current_of: dict[int, set[int]] = defaultdict(set)
    memberships = User.groups.through.objects.filter(group_id__in=managed, user__directory_account__isnull=False)
    for user_id, group_id in memberships.values_list("user_id", "group_id").iterator(chunk_size=5000):
        current_of[user_id].add(group_id)

    plans = []
    for account in DirectoryAccount.objects.select_related("user").iterator(chunk_size=2000):
        user = account.user
        name = user.get_username().lower()
        plan = _plan_account(account, snapshot.users.get(name), target_of.get(name, set()), current_of[user.pk],
                             entitled_groups, entitled_users, now)
        if plan is not None:
            plans.append(plan)

    held = _too_many_removals(plans, current_of, allow_mass_removal, stats)
    for plan in plans:
        try:
            _apply(plan, held, stats)
        except DatabaseError as exc:
            log.exception("directory sync could not update %s", plan.account.user)
            stats.errors.append(f"{plan.account.user.get_username()}: {exc}"[:500])
    return stats


def _mirror_groups(snapshot: DirectorySnapshot, stats: SyncStats, now) -> dict[str, int]:
    """Django group id of each directory group, making the new ones; mark the vanished ones."""
    existing = {group.dn: group for group in DirectoryGroup.objects.all()}
    group_of_dn = {}
    for dn, entry in snapshot.groups.items():
        known = existing.get(dn)
        if known is not None and known.name == entry.name and known.missing_since is None:
            group_of_dn[dn] = known.group_id
            continue
        directory_group, created = accounts.link_directory_group(entry)
        group_of_dn[dn] = directory_group.group_id
        stats.groups_created += created
    vanished = [dn for dn, group in existing.items() if dn not in snapshot.groups and group.missing_since is None]
    if vanished:
        DirectoryGroup.objects.filter(dn__in=vanished).update(missing_since=now)
    return group_of_dn


def _create_accounts(wanted: list[DirectoryUserEntry], target_of: dict, stats: SyncStats) -> None:
    """Accounts for members of entitled groups who never logged in, with their memberships."""
    if not wanted:
        return
    by_name = {entry.username: entry for entry in wanted}
    existing = {user.username.lower(): user
                for user in User.objects.annotate(name=Lower("username")).filter(name__in=list(by_name))}
    new_users, adopted = [], []
    for name, entry in by_name.items():
        user = existing.get(name)
        if user is None:
            user = User(username=name, is_active=True, **accounts.fitted_user_fields(entry.fields))
            user.set_unusable_password()
            new_users.append(user)
        elif user.has_usable_password():
            stats.errors.append(f"{name}: a local account (with its own password) has this name; "
                                "the directory user was not linked to it")
        else:
            adopted.append(user)  # made by hand without a password, or by a login before this app
    try:
        with transaction.atomic():
            User.objects.bulk_create(new_users, batch_size=1000)
    except IntegrityError:
        # A login created one of them meanwhile: make them one by one, skipping those.
        created = []
        for user in new_users:
            try:
                with transaction.atomic():
                    user.save(force_insert=True)
                created.append(user)
            except IntegrityError:
                user.pk = None
        new_users = created
    linked = new_users + adopted
    DirectoryAccount.objects.bulk_create(
        [DirectoryAccount(user=user, dn=by_name[user.username.lower()].dn) for user in linked],
        batch_size=1000, ignore_conflicts=True,
    )
    stats.users_created += len(new_users)

    # One insert per group rather than per user; `group.user_set` sends the m2m signals too.
    members_of: dict[int, list[int]] = defaultdict(list)
    for user in new_users:
        for group_id in target_of.get(user.username, ()):
            members_of[group_id].append(user.pk)
    groups = Group.objects.in_bulk(list(members_of))
    with transaction.atomic():
        for group_id, user_ids in members_of.items():
            groups[group_id].user_set.add(*user_ids)
            stats.memberships_added += len(user_ids)


def _plan_account(account, entry, target, current, entitled_groups, entitled_users, now) -> _Plan | None:
    user = account.user
    plan = _Plan(account=account)
    if entry is None:
        if account.missing_since is None:
            plan.missing_since = now
        if user.is_active or current:
            plan.deactivate, plan.remove = Reason.LEFT_DIRECTORY, set(current)
    else:
        plan.fields = {name: value for name, value in accounts.fitted_user_fields(entry.fields).items()
                       if getattr(user, name) != value}
        if account.dn != entry.dn:
            plan.dn = entry.dn
        if account.missing_since is not None:
            plan.missing_since = None
        if not accounts.deserves_access(user=user, group_ids=target, entitled_groups=entitled_groups,
                                        entitled_users=entitled_users):
            if user.is_active or current:
                plan.deactivate, plan.remove = Reason.NO_ENTITLEMENT, set(current)
        else:
            plan.reactivate = not user.is_active and bool(account.inactive_reason)
            plan.add, plan.remove = target - current, current - target
    if plan.fields or plan.changes_account or plan.add or plan.remove or plan.deactivate or plan.reactivate:
        return plan
    return None


def _too_many_removals(plans, current_of, allow_mass_removal: bool, stats: SyncStats) -> bool:
    deactivations = sum(1 for plan in plans if plan.deactivate and plan.account.user.is_active)
    removals = sum(len(plan.remove) for plan in plans)
    if not deactivations and not removals:
        return False
    active = DirectoryAccount.objects.filter(user__is_active=True).count()
    memberships = sum(len(groups) for groups in current_of.values())
    percent = settings.VDI_LDAP_SYNC_MAX_REMOVAL_PERCENT
    floor = settings.VDI_LDAP_SYNC_ALWAYS_ALLOWED_REMOVALS
    too_many = (deactivations > max(floor, active * percent / 100)
                or removals > max(floor, memberships * percent / 100))
    if not too_many or allow_mass_removal:
        return False
    stats.removals_held = deactivations + removals
    stats.errors.insert(0, 
        f"held back {deactivations} deactivation(s) of {active} active directory users and {removals} "
        f"membership removal(s) of {memberships}: more than {percent:g}% at once looks like a directory fault "
        "(an emptied group, a search base or ACL change). If the directory is right, run the sync with removals "
        "allowed: the admin's \"Run now, applying removals\" or `manage.py ldap_sync --allow-mass-removal`."
    )
    return True


def _apply(plan: _Plan, held: bool, stats: SyncStats) -> None:
    """One user's changes, in one transaction (a failure leaves that user as they were)."""
    account, user = plan.account, plan.account.user
    counts = defaultdict(int)
    with transaction.atomic():
        if plan.fields:
            for name, value in plan.fields.items():
                setattr(user, name, value)
            user.save(update_fields=list(plan.fields))
        if plan.changes_account:
            if plan.dn is not None:
                account.dn = plan.dn
            if plan.missing_since is not _UNCHANGED:
                account.missing_since = plan.missing_since
            account.save(update_fields=["dn", "missing_since"])
        counts["users_updated"] += bool(plan.fields or plan.dn is not None)
        if plan.reactivate:
            accounts.reactivate(user=user, account=account, note="back in an entitled directory group")
            counts["users_reactivated"] += 1
        if plan.add:
            user.groups.add(*plan.add)
            counts["memberships_added"] += len(plan.add)
        if plan.deactivate and not held:
            counts["users_deactivated"] += user.is_active
            note = ("gone from the directory" if plan.deactivate == Reason.LEFT_DIRECTORY
                    else "in no entitled directory group any more")
            counts["memberships_removed"] += accounts.deactivate(
                user=user, account=account, reason=plan.deactivate, current=plan.remove, note=note
            )
        elif plan.remove and not held:
            user.groups.remove(*plan.remove)
            counts["memberships_removed"] += len(plan.remove)
    for name, value in counts.items():
        setattr(stats, name, getattr(stats, name) + value)


def start_sync_job(*, requested_by, allow_mass_removal: bool = False, request=None):
    """An admin's sync as a job (its phases on a progress bar); the run row is made when it starts."""
    from broker.services.jobs import start_job

    job = start_job(kind="directory_sync", target_key="directory", target_label="the directory",
                    started_by=requested_by, params={"allow_mass_removal": allow_mass_removal})
    audit.record_event(kind=AuditEvent.Kind.DIRECTORY_SYNC, request=request, actor=requested_by,
                       target=f"directory sync job #{job.pk}",
                       message="requested" + (", applying removals however many" if allow_mass_removal else ""))
    return job


def directory_sync_job(job, progress):
    """Job runner: a run row, then the sync itself."""
    from broker.services.jobs import failed, succeeded

    run = queue_sync(trigger=DirectorySyncRun.Trigger.ADMIN, requested_by=job.started_by,
                     allow_mass_removal=job.params.get("allow_mass_removal", False))
    run = run_directory_sync(run_id=run.pk, progress=progress)
    result = {"run": run.pk, "status": run.status, "summary": summary(run), "errors": run.errors[:20]}
    if run.status in (Status.FAILED, Status.SKIPPED):
        return failed(result, summary(run))
    return succeeded(result, summary(run))
