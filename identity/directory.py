"""Reading the whole directory for the sync: one bound connection, paged searches, no writes.

django-auth-ldap handles logins; this module is the sync's only door to LDAP. It reads with the
same settings (server, bind, StartTLS, user and group searches, group type), so what the sync
mirrors is what a login would. Every python-ldap error leaves as DirectoryUnavailable or
DirectoryError, raised before the sync has changed anything: a failing directory changes nothing.
"""

import logging
import re
from dataclasses import dataclass, field

import ldap
import ldap.dn
from django.conf import settings
from django.contrib.auth import get_user_model
from django_auth_ldap.config import LDAPSearchUnion, MemberDNGroupType, NestedMemberDNGroupType, PosixGroupType
from ldap.cidict import cidict
from ldap.controls import SimplePagedResultsControl

log = logging.getLogger(__name__)

# Errors that mean "the directory cannot be reached or is too busy", not "it said no".
UNAVAILABLE_ERRORS = (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR, ldap.BUSY, ldap.UNAVAILABLE)
# Seconds one page of results may take before the sync gives up (the connection's own
# timeouts cover connecting and binding).
PAGE_TIMEOUT_SECONDS = 120
_RANGED = re.compile(r"^(?P<attr>[^;]+);range=(?P<start>\d+)-(?P<end>\d+|\*)$", re.IGNORECASE)


class DirectoryError(Exception):
    """The directory answered, but not with something the sync can trust; nothing was changed."""


class DirectoryUnavailable(DirectoryError):
    """The directory did not answer; nothing was changed."""


def describe(exc: ldap.LDAPError) -> str:
    """A one-line description of a python-ldap error (its desc and the server's info; never a credential)."""
    details = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    text = details.get("desc") or type(exc).__name__
    if details.get("info"):
        text = f"{text}: {details['info']}"
    return text


def normalize_dn(dn: str) -> str:
    """One spelling per DN (spacing, escaping, case), so member values match entry DNs."""
    try:
        return ldap.dn.dn2str(ldap.dn.str2dn(dn.strip())).lower()
    except ldap.DECODING_ERROR:
        return dn.strip().lower()


@dataclass(frozen=True)
class DirectoryUserEntry:
    username: str  # the Django user name: the directory's, lower-cased (as django-auth-ldap makes it)
    dn: str
    fields: dict  # Django user field -> value, from AUTH_LDAP_USER_ATTR_MAP


@dataclass(frozen=True)
class DirectoryGroupEntry:
    dn: str
    name: str


@dataclass
class DirectorySnapshot:
    users: dict[str, DirectoryUserEntry]
    groups: dict[str, DirectoryGroupEntry]
    memberships: dict[str, set[str]]  # username -> DNs of their groups (transitive for nested types)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DirectoryConfig:
    uri: str
    bind_dn: str
    bind_password: str = field(repr=False)
    start_tls: bool
    options: dict
    user_searches: tuple
    group_search: object
    group_type: object
    username_attr: str
    attr_map: dict
    page_size: int

    @classmethod
    def from_settings(cls) -> "DirectoryConfig":
        if not getattr(settings, "LDAP_ENABLED", False):
            raise DirectoryError("LDAP is not configured: AUTH_LDAP_SERVER_URI is unset.")
        user_search = settings.AUTH_LDAP_USER_SEARCH
        searches = user_search.searches if isinstance(user_search, LDAPSearchUnion) else (user_search,)
        group_type = settings.AUTH_LDAP_GROUP_TYPE
        if not isinstance(group_type, (PosixGroupType, MemberDNGroupType, NestedMemberDNGroupType)):
            raise DirectoryError(f"the sync does not know the group type {type(group_type).__name__}")
        user_fields = {f.name for f in get_user_model()._meta.concrete_fields}
        attr_map = dict(getattr(settings, "AUTH_LDAP_USER_ATTR_MAP", {}))
        unknown = sorted(set(attr_map) - user_fields)
        if unknown:
            raise DirectoryError(f"AUTH_LDAP_USER_ATTR_MAP names fields the user has not: {', '.join(unknown)}")
        return cls(
            uri=settings.AUTH_LDAP_SERVER_URI,
            bind_dn=getattr(settings, "AUTH_LDAP_BIND_DN", ""),
            bind_password=getattr(settings, "AUTH_LDAP_BIND_PASSWORD", ""),
            start_tls=getattr(settings, "AUTH_LDAP_START_TLS", False),
            options=dict(getattr(settings, "AUTH_LDAP_CONNECTION_OPTIONS", {})),
            user_searches=tuple(searches),
            group_search=settings.AUTH_LDAP_GROUP_SEARCH,
            group_type=group_type,
            username_attr=settings.VDI_LDAP_USERNAME_ATTR,
            attr_map=attr_map,
            page_size=int(getattr(settings, "VDI_LDAP_SYNC_PAGE_SIZE", 500)),
        )


def read_directory(config: DirectoryConfig) -> DirectorySnapshot:
    """Every user and group the configured searches find, and who is in which group."""
    connection = _connect(config)
    try:
        index = _read_users(connection, config)
        groups, direct_users, subgroups = _read_groups(connection, config, index)
    except UNAVAILABLE_ERRORS as exc:
        raise DirectoryUnavailable(f"the directory stopped answering during the sync: {describe(exc)}") from None
    except ldap.SIZELIMIT_EXCEEDED:
        raise DirectoryError(
            "the directory cut the result short (size limit): allow the bind DN more entries or paged results"
        ) from None
    except ldap.LDAPError as exc:
        raise DirectoryError(f"the directory refused a search: {describe(exc)}") from None
    finally:
        try:
            connection.unbind_s()
        except ldap.LDAPError:
            pass

    nested = isinstance(config.group_type, NestedMemberDNGroupType)
    memberships: dict[str, set[str]] = {}
    for group_dn in groups:
        for username in _members_of(group_dn, direct_users, subgroups if nested else {}):
            memberships.setdefault(username, set()).add(group_dn)
    return DirectorySnapshot(users=index.users, groups=groups, memberships=memberships, warnings=index.warnings)


def _connect(config: DirectoryConfig):
    try:
        connection = ldap.initialize(config.uri)
        for option, value in config.options.items():
            connection.set_option(option, value)
        if config.start_tls:
            try:
                connection.start_tls_s()
            except (ldap.CONNECT_ERROR, ldap.PROTOCOL_ERROR, ldap.UNAVAILABLE) as exc:
                raise DirectoryUnavailable(
                    f"StartTLS with {config.uri} failed ({describe(exc)}): the directory offers no TLS, or its "
                    "certificate is not signed by AUTH_LDAP_CA_CERT_FILE's CA or not issued for its host name"
                ) from None
        connection.simple_bind_s(config.bind_dn, config.bind_password)
        return connection
    except UNAVAILABLE_ERRORS as exc:
        raise DirectoryUnavailable(f"cannot reach the directory at {config.uri}: {describe(exc)}") from None
    except ldap.INVALID_CREDENTIALS:
        raise DirectoryError(
            f"the directory refused the bind DN {config.bind_dn!r} and its password "
            "(AUTH_LDAP_BIND_DN, AUTH_LDAP_BIND_PASSWORD)"
        ) from None
    except ldap.LDAPError as exc:
        raise DirectoryError(f"cannot bind to the directory at {config.uri}: {describe(exc)}") from None


def _paged_search(connection, config: DirectoryConfig, base: str, scope: int, filterstr: str, attrlist: list):
    """Yield (dn, attributes) of every entry, page by page (Active Directory serves 1,000 per
    search, OpenLDAP 500 by default); a server that ignores paging answers in one go."""
    control = SimplePagedResultsControl(criticality=False, size=config.page_size, cookie="")
    while True:
        msgid = connection.search_ext(base, scope, filterstr, attrlist, serverctrls=[control])
        _, entries, _, server_controls = connection.result3(msgid, timeout=PAGE_TIMEOUT_SECONDS)
        for dn, attrs in entries:
            if dn is not None:  # search references (referrals) carry no entry
                yield dn, cidict(attrs)
        cookies = [c.cookie for c in server_controls or () if c.controlType == SimplePagedResultsControl.controlType]
        if not cookies or not cookies[0]:
            return
        control.cookie = cookies[0]


def _text(values) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values or ()]


@dataclass
class _UserIndex:
    users: dict[str, DirectoryUserEntry]
    warnings: list[str]
    uid_to_username: dict[str, str]  # posixGroup: memberUid values name users by their uid
    gid_of: dict[str, str]  # posixGroup: username -> primary gidNumber


def _read_users(connection, config: DirectoryConfig) -> _UserIndex:
    posix = isinstance(config.group_type, PosixGroupType)
    attrs = {config.username_attr, *config.attr_map.values(), *(("uid", "gidNumber") if posix else ())}
    users: dict[str, DirectoryUserEntry] = {}
    ambiguous: set[str] = set()
    uid_to_username: dict[str, str] = {}
    gid_of: dict[str, str] = {}
    warnings: list[str] = []
    for search in config.user_searches:
        filterstr = search.filterstr % {"user": "*"}
        for dn, entry in _paged_search(connection, config, search.base_dn, search.scope, filterstr, sorted(attrs)):
            names = _text(entry.get(config.username_attr))
            if not names:
                warnings.append(f"{dn}: no {config.username_attr}; skipped")
                continue
            username = names[0].strip().lower()
            if username in users or username in ambiguous:
                # A login would refuse a name that matches two entries; so does the sync.
                ambiguous.add(username)
                users.pop(username, None)
                continue
            fields = {}
            for field_name, attr in config.attr_map.items():
                values = _text(entry.get(attr))
                fields[field_name] = values[0] if values else ""
            users[username] = DirectoryUserEntry(username=username, dn=normalize_dn(dn), fields=fields)
            if posix:
                for uid in _text(entry.get("uid")):
                    uid_to_username[uid.lower()] = username
                gids = _text(entry.get("gidNumber"))
                if gids:
                    gid_of[username] = gids[0]
    for username in sorted(ambiguous):
        warnings.append(f"{username}: more than one directory entry has this name; skipped")
    return _UserIndex(
        users=users,
        warnings=warnings,
        uid_to_username={uid: name for uid, name in uid_to_username.items() if name in users},
        gid_of={name: gid for name, gid in gid_of.items() if name in users},
    )


def _read_groups(connection, config: DirectoryConfig, index: _UserIndex):
    group_type = config.group_type
    posix = isinstance(group_type, PosixGroupType)
    member_attr = "memberUid" if posix else group_type.member_attr
    attrs = [group_type.name_attr, member_attr, *(("gidNumber",) if posix else ())]
    username_by_dn = {user.dn: name for name, user in index.users.items()}
    search = config.group_search
    groups: dict[str, DirectoryGroupEntry] = {}
    raw_members: dict[str, list[str]] = {}
    gid_by_group: dict[str, str] = {}
    for dn, entry in _paged_search(connection, config, search.base_dn, search.scope, search.filterstr, attrs):
        names = _text(entry.get(group_type.name_attr))
        if not names:
            continue  # django-auth-ldap maps a group without a name to no Django group, so do we
        group_dn = normalize_dn(dn)
        groups[group_dn] = DirectoryGroupEntry(dn=group_dn, name=names[0].strip()[:150])
        raw_members[group_dn] = _text(_member_values(connection, dn, entry, member_attr))
        if posix:
            gids = _text(entry.get("gidNumber"))
            if gids:
                gid_by_group[group_dn] = gids[0]

    users_by_gid: dict[str, set[str]] = {}
    for name, gid in index.gid_of.items():
        users_by_gid.setdefault(gid, set()).add(name)
    direct_users: dict[str, set[str]] = {}
    subgroups: dict[str, set[str]] = {}
    for group_dn, values in raw_members.items():
        members, children = set(), set()
        for value in values:
            if posix:
                username = index.uid_to_username.get(value.strip().lower())
                if username:
                    members.add(username)
                continue
            # A uniqueMember value with an optional UID ("dn#'0101'B") does not match the bare DN
            # under the directory's own matching rule, so a login would not count it: neither do we.
            member_dn = normalize_dn(value)
            if member_dn in username_by_dn:
                members.add(username_by_dn[member_dn])
            elif member_dn in groups:
                children.add(member_dn)
        if posix and group_dn in gid_by_group:
            # A user's primary group counts as membership (as django-auth-ldap's PosixGroupType has it).
            members |= users_by_gid.get(gid_by_group[group_dn], set())
        direct_users[group_dn] = members
        subgroups[group_dn] = children
    return groups, direct_users, subgroups


def _member_values(connection, dn: str, entry, member_attr: str) -> list:
    """The member attribute's values, fetching the rest of a ranged attribute (Active Directory
    returns member;range=0-1499 for groups larger than that, and the rest on request)."""
    values = list(entry.get(member_attr) or ())
    for key in list(entry.keys()):
        match = _RANGED.match(key)
        if not match or match["attr"].lower() != member_attr.lower():
            continue
        values.extend(entry[key])
        end = match["end"]
        while end != "*":
            start = int(end) + 1
            result = connection.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", [f"{member_attr};range={start}-*"])
            more = cidict(result[0][1]) if result else {}
            end = None
            for more_key, more_values in more.items():
                more_match = _RANGED.match(more_key)
                if more_match and more_match["attr"].lower() == member_attr.lower():
                    values.extend(more_values)
                    end = more_match["end"]
            if end is None:
                raise DirectoryError(f"{dn}: the directory stopped returning {member_attr} values at {start}")
    return values


def _members_of(group_dn: str, direct_users: dict, subgroups: dict) -> set[str]:
    """Users of a group and, for nested types, of the groups inside it, at any depth (cycles
    are cut). For non-nested types `subgroups` is empty."""
    seen, pending, members = {group_dn}, [group_dn], set()
    while pending:
        current = pending.pop()
        members |= direct_users.get(current, set())
        for child in subgroups.get(current, ()):
            if child not in seen:
                seen.add(child)
                pending.append(child)
    return members
