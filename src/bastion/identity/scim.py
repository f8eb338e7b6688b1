"""SCIM 2.0 (RFC 7643 / RFC 7644) users and groups, kept in the catalog's directory.

An identity provider (Okta, Microsoft Entra ID, ...) creates, changes, disables and deletes
Bastion users and groups through ``/scim/v2`` (:mod:`bastion.server.routes.scim`). This module
is the protocol logic: the resource models Bastion publishes, how they map onto the catalog,
and the rules of what SCIM may change. Parsing, filters and PATCH semantics come from
``scim2-models``.

Identifiers, as ACLs see them:

* a user's SCIM ``id`` is its Bastion user id, which is the ``userName`` it was created with
  (ACL label ``user:<id>``). ``userName`` is published as *immutable*: a rename is refused.
* a group's SCIM ``id`` is its Bastion group name (ACL label ``group:<name>``): the
  ``displayName`` it was created with, lower-cased, with spaces and other characters a group
  name cannot hold turned into ``-`` (:func:`group_name`). Changing ``displayName`` later keeps
  the name, so ACLs keep working.

Rules: SCIM sees and changes only users and groups of origin ``scim`` (and ``local`` ones when
``[scim] manage_local`` is true; they become ``scim`` at their first change). Roles change only
through ``[scim] role_groups``. Disabling a user (``active: false``) ends its sessions and stops
its API keys at once.

>>> group_name("Finance Team (EMEA)")
'finance-team-emea'
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from pydantic import Field, ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.accounts import role_rank
from bastion.catalog.models import GroupRow, MembershipRow, UserRow, utcnow
from bastion.core.config import ScimConfig
from bastion.core.errors import AccessError, ConfigError
from bastion.directory import Directory, _check  # _check: the directory's own rule for user names

try:
    from scim2_models import (
        URN,
        AuthenticationScheme,
        Bulk,
        CaseExact,
        ChangePassword,
        ComplexAttribute,
        ConflictException,
        Context,
        ETag,
        Filter,
        InvalidValueException,
        Meta,
        Mutability,
        MutabilityException,
        NotFoundException,
        Patch,
        PatchOp,
        PreconditionFailedException,
        Reference,
        Required,
        Resource,
        ResourceType,
        Schema,
        SCIMException,
        ScimFilter,
        ScimPolicy,
        SearchRequest,
        ServiceProviderConfig,
        Sort,
        Uniqueness,
    )
except ImportError as exc:  # the scim extra is missing
    raise ConfigError("[scim] needs the scim extra: pip install 'bastion[scim]'") from exc

SCHEMA_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SCHEMA_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
# what Okta and Microsoft Entra ID send is read as they mean it: attributes Bastion does not keep
# are ignored, a remove with a value removes that value, a filtered path with no match adds it
POLICY = ScimPolicy(unknown=ScimPolicy.Unknown.ignore, remove_value_as_filter=ScimPolicy.RemoveValue.apply,
                    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create)
ORIGIN = "scim"
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.@\-\u0080-\uffff]+")


class UserEmail(ComplexAttribute):
    """An email address (Bastion keeps one per user: the first)."""

    value: Annotated[str | None, Required.true] = Field(None, max_length=320)


class UserGroup(ComplexAttribute):
    """A group the user is a member of (read only: change it on the group)."""

    value: Annotated[str | None, Mutability.read_only] = None
    ref: Annotated[Reference[Group] | None, Mutability.read_only] = Field(
        None, serialization_alias="$ref", validation_alias="$ref")
    display: Annotated[str | None, Mutability.read_only] = None


class User(Resource[Any]):
    """A Bastion user: its id is the userName it was created with."""

    __schema__ = URN(SCHEMA_USER)
    user_name: Annotated[str | None, Required.true, Mutability.immutable, Uniqueness.server] = Field(
        None, max_length=200)
    display_name: str | None = Field(None, max_length=200)
    emails: list[UserEmail] | None = Field(None, max_length=50)
    active: bool | None = None
    groups: Annotated[list[UserGroup] | None, Mutability.read_only] = None


class GroupMember(ComplexAttribute):
    """A member of a group: a user, named by its id."""

    value: Annotated[str | None, Mutability.immutable, CaseExact.true, Required.true] = Field(None, max_length=200)
    ref: Annotated[Reference[User] | None, Mutability.immutable] = Field(
        None, serialization_alias="$ref", validation_alias="$ref")
    type: Annotated[str | None, Mutability.immutable] = Field(None, examples=["User"])


class Group(Resource[Any]):
    """A Bastion group: its id is the group name ACLs use (``group:<id>``)."""

    __schema__ = URN(SCHEMA_GROUP)
    display_name: Annotated[str | None, Required.true] = Field(None, max_length=400)
    members: list[GroupMember] | None = Field(None, max_length=100_000)


UserGroup.model_rebuild()
R = TypeVar("R", User, Group)


def group_name(display_name: str) -> str:
    """The Bastion group name (and ACL label) a SCIM group created as ``display_name`` gets."""
    text = unicodedata.normalize("NFKC", display_name).strip().lower()
    name = _NOT_NAME.sub("-", text).strip("-.")[:200].strip("-.")
    return name or "group-" + hashlib.sha256(display_name.encode()).hexdigest()[:10]


def service_provider_config(max_results: int, docs: str | None = None) -> ServiceProviderConfig:
    return ServiceProviderConfig(
        documentation_uri=docs, patch=Patch(supported=True), bulk=Bulk(supported=False, max_operations=0,
                                                                        max_payload_size=0),
        filter=Filter(supported=True, max_results=max_results), change_password=ChangePassword(supported=False),
        sort=Sort(supported=False), etag=ETag(supported=True),
        authentication_schemes=[AuthenticationScheme(
            type=AuthenticationScheme.Type.oauthbearertoken, name="Bearer token", primary=True,
            description="The token in the environment variable named by [scim] token_env")])


def resource_types() -> list[ResourceType]:
    return [ResourceType(id="User", name="User", endpoint="/Users", schema_=URN(SCHEMA_USER),
                         description="Bastion users"),
            ResourceType(id="Group", name="Group", endpoint="/Groups", schema_=URN(SCHEMA_GROUP),
                         description="Bastion groups (ACL label group:<id>)")]


def schemas() -> list[Schema]:
    return [User.to_schema(), Group.to_schema(), ResourceType.to_schema(), ServiceProviderConfig.to_schema(),
            Schema.to_schema()]


def version(resource: Resource[Any]) -> str:
    """A weak ETag of the resource's content (``meta`` aside)."""
    body = resource.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE, exclude={"meta"})
    return 'W/"' + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20] + '"'


def parse(model: type[R], payload: Any, ctx: Context) -> R:
    """A request body read as ``model``; a wrong type or a missing attribute raises with its SCIM error."""
    if not isinstance(payload, dict):
        raise InvalidSyntaxError(detail="the request body must be a JSON object")
    try:
        return model.model_validate(payload, scim_ctx=ctx, scim_policy=POLICY)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def parse_patch(model: type[R], payload: Any) -> PatchOp[Any]:
    if not isinstance(payload, dict):
        raise InvalidSyntaxError(detail="the request body must be a JSON object")
    if model is User:
        payload = _one_email(payload)
    try:
        patch: type[PatchOp[Any]] = PatchOp[model]  # type: ignore[valid-type]  # parameterised at run time
        return patch.model_validate(payload, scim_ctx=Context.RESOURCE_PATCH_REQUEST, scim_policy=POLICY)
    except ValidationError as exc:
        raise _validation_error(exc) from None


_EMAIL_PATH = re.compile(r"^(?:urn:ietf:params:scim:schemas:core:2\.0:User:)?emails\[[^\]]*\]\.value$", re.I)


def _one_email(payload: dict[str, Any]) -> dict[str, Any]:
    """Microsoft Entra ID writes the address as ``emails[type eq "work"].value``; Bastion keeps one
    address, so such an add or replace sets it, and a remove clears it."""
    ops = next((v for k, v in payload.items() if k.lower() == "operations"), None)
    if not isinstance(ops, list):
        return payload
    out = []
    for op in ops:
        if isinstance(op, dict):
            op = dict(op)
            verb = str(op.get("op", "")).lower()
            path, value = op.get("path"), op.get("value")
            if isinstance(path, str) and _EMAIL_PATH.match(path.strip()):
                op["path"] = "emails"
                if verb in ("add", "replace") and isinstance(value, str):
                    op["op"], op["value"] = "replace", [{"value": value}]
                elif verb == "remove":
                    op.pop("value", None)
            elif path is None and isinstance(value, dict):
                op["value"] = {("emails" if _EMAIL_PATH.match(k) else k): ([{"value": v}] if _EMAIL_PATH.match(k)
                                                                           and isinstance(v, str) else v)
                               for k, v in value.items()}
                if any(_EMAIL_PATH.match(k) for k in value) and verb == "add":
                    op["op"] = "replace"
        out.append(op)
    return {**{k: v for k, v in payload.items() if k.lower() != "operations"}, "Operations": out}


class InvalidSyntaxError(SCIMException):
    status, scim_type = 400, "invalidSyntax"


def _validation_error(exc: ValidationError) -> SCIMException:
    from scim2_models import Error

    errors = Error.from_validation_errors(exc)
    first = errors[0]
    detail = "; ".join(e.detail or "" for e in errors[:5])
    out = SCIMException(detail=detail)
    out.status, out.scim_type = int(first.status or 400), first.scim_type or "invalidValue"
    return out


@dataclass(frozen=True)
class Change:
    """What one write did, for the audit entry."""

    action: str
    target: str
    detail: dict[str, Any]


class ScimDirectory:
    """The directory as SCIM sees it: reads and writes resources, applies the origin and role rules.

    ``base`` is the absolute URL of ``/scim/v2`` (for ``meta.location`` and ``$ref``).
    Every method is blocking (catalog reads and writes).

    >>> from bastion.catalog.db import Catalog
    >>> scim = ScimDirectory(Directory(Catalog.open("sqlite:///:memory:")), ScimConfig(), "https://b.example/scim/v2")
    >>> carol, _ = scim.create_user(User(user_name="carol@example.com"))
    >>> sales, _ = scim.create_group(Group(display_name="Sales EMEA", members=[GroupMember(value=carol.id)]))
    >>> sales.id, scim.directory.principal("carol@example.com").labels() >= {"group:sales-emea"}
    ('sales-emea', True)
    """

    def __init__(self, directory: Directory, config: ScimConfig, base: str) -> None:
        self.directory, self.catalog, self.config, self.base = directory, directory.catalog, config, base.rstrip("/")

    # -- visibility ----------------------------------------------------------------------------
    def _origins(self) -> tuple[str, ...]:
        return (ORIGIN, "local") if self.config.manage_local else (ORIGIN,)

    def _location(self, kind: str, ident: str) -> str:
        return f"{self.base}/{kind}/{quote(ident, safe='@.-_~!$&()*+,;=:')}"

    # -- users ---------------------------------------------------------------------------------
    def _user_models(self, s: Session, rows: Iterable[UserRow]) -> list[User]:
        rows = list(rows)
        ids = [r.id for r in rows]
        groups: dict[str, list[tuple[str, str | None]]] = {i: [] for i in ids}
        if ids:
            q = (select(MembershipRow.user_id, GroupRow.name, GroupRow.display_name)
                 .join(GroupRow, GroupRow.name == MembershipRow.group_name)
                 .where(GroupRow.origin.in_(self._origins()), MembershipRow.user_id.in_(ids))
                 .order_by(GroupRow.name))
            for uid, name, display in s.execute(q):
                groups[uid].append((name, display))
        out = []
        for r in rows:
            user = User(id=r.id, user_name=r.id, external_id=r.external_id, display_name=r.display_name,
                        emails=[UserEmail(value=r.email)] if r.email else None, active=bool(r.active),
                        groups=[UserGroup(value=g, ref=self._location("Groups", g), display=d or g)
                                for g, d in groups[r.id]] or None)
            user.meta = Meta(resource_type="User", created=r.created_at.replace(tzinfo=UTC),
                             last_modified=(r.updated_at or r.created_at).replace(tzinfo=UTC),
                             location=self._location("Users", r.id), version=version(user))
            out.append(user)
        return out

    def _user_row(self, s: Session, user_id: str) -> UserRow:
        row = s.get(UserRow, user_id)
        if row is None or row.origin not in self._origins():
            raise NotFoundException(detail=f"no user with id {user_id!r}")
        return row

    def get_user(self, user_id: str) -> User:
        with self.catalog.session() as s:
            return self._user_models(s, [self._user_row(s, user_id)])[0]

    def users(self, filter: str | None = None) -> list[User]:
        """The users SCIM sees, matching ``filter`` (a SCIM filter), ordered by id."""
        flt = ScimFilter[User](filter) if filter else None
        with self.catalog.session() as s:
            q = select(UserRow).where(UserRow.origin.in_(self._origins())).order_by(UserRow.id)
            fast = _equality(flt, {"username": UserRow.id, "externalid": UserRow.external_id})
            if fast is not None:
                q = q.where(fast)
            found = self._user_models(s, s.scalars(q))
        return [u for u in found if flt is None or flt.match(u)]

    def create_user(self, user: User) -> tuple[User, Change]:
        name = _user_id(user.user_name)
        try:
            with self.catalog.session(write=True) as s:
                clash = s.scalars(select(UserRow).where(func.lower(UserRow.id) == name.lower())).first()
                if clash is not None:
                    raise _taken("user", name, clash.id, clash.origin, self.config.manage_local)
                s.add(UserRow(id=name, origin=ORIGIN, display_name=_display_name(user), external_id=user.external_id,
                              email=_email(user), active=user.active is not False, updated_at=utcnow()))
        except IntegrityError:  # created at the same moment by another process
            raise _taken("user", name, name, ORIGIN, self.config.manage_local) from None
        return self.get_user(name), Change("scim.user.create", name, {"active": user.active is not False})

    def replace_user(self, user_id: str, new: User, if_match: str | None = None) -> tuple[User, Change]:
        current = self.get_user(user_id)
        _check_version(current, if_match)
        try:
            new.replace(current)
        except MutabilityException as exc:
            raise _immutable_name(exc, current.user_name) from None
        return self._save_user(current, new, "scim.user.replace")

    def patch_user(self, user_id: str, patch: PatchOp[Any], if_match: str | None = None) -> tuple[User, Change]:
        current = self.get_user(user_id)
        _check_version(current, if_match)
        new = current.model_copy(deep=True)
        try:
            patch.patch(new, scim_policy=POLICY)
        except MutabilityException as exc:
            raise _immutable_name(exc, current.user_name) from None
        if new.active is None:
            raise MutabilityException(detail="active cannot be removed: every Bastion user is enabled or disabled; "
                                             "send active false to disable the user")
        return self._save_user(current, new, "scim.user.patch")

    def _save_user(self, current: User, new: User, action: str) -> tuple[User, Change]:
        assert current.id is not None
        active = new.active is not False
        with self.catalog.session(write=True) as s:
            row = self._user_row(s, current.id)
            row.display_name, row.external_id, row.email = _display_name(new), new.external_id, _email(new)
            row.origin, row.updated_at = ORIGIN, utcnow()
        if active != current.active:
            self.directory.set_active(current.id, active)  # disabling ends sessions; keys stop at once
        changed = sorted(k for k in ("display_name", "external_id", "emails", "active")
                         if getattr(new, k) != getattr(current, k))
        return self.get_user(current.id), Change(action, current.id, {"changed": changed, "active": active})

    def delete_user(self, user_id: str, if_match: str | None = None) -> Change:
        current = self.get_user(user_id)
        _check_version(current, if_match)
        self.directory.set_active(user_id, False)  # ends its sessions before the user goes
        self.directory.remove_user(user_id)
        return Change("scim.user.delete", user_id, {"groups": [g.value for g in current.groups or []]})

    # -- groups --------------------------------------------------------------------------------
    def _group_models(self, s: Session, rows: Iterable[GroupRow]) -> list[Group]:
        rows = list(rows)
        names = [r.name for r in rows]
        members: dict[str, list[str]] = {n: [] for n in names}
        if names:
            q = (select(MembershipRow.group_name, MembershipRow.user_id)
                 .join(UserRow, UserRow.id == MembershipRow.user_id)
                 .where(UserRow.origin.in_(self._origins()), MembershipRow.group_name.in_(names))
                 .order_by(MembershipRow.user_id))
            for g, u in s.execute(q):
                members[g].append(u)
        out = []
        for r in rows:
            group = Group(id=r.name, display_name=r.display_name or r.name, external_id=r.external_id,
                          members=[GroupMember(value=u, ref=self._location("Users", u), type="User")
                                   for u in members[r.name]] or None)
            group.meta = Meta(resource_type="Group", created=r.created_at.replace(tzinfo=UTC),
                              last_modified=(r.updated_at or r.created_at).replace(tzinfo=UTC),
                              location=self._location("Groups", r.name), version=version(group))
            out.append(group)
        return out

    def _group_row(self, s: Session, name: str) -> GroupRow:
        row = s.get(GroupRow, name)
        if row is None or row.origin not in self._origins():
            raise NotFoundException(detail=f"no group with id {name!r}")
        return row

    def get_group(self, name: str) -> Group:
        with self.catalog.session() as s:
            return self._group_models(s, [self._group_row(s, name)])[0]

    def groups(self, filter: str | None = None) -> list[Group]:
        flt = ScimFilter[Group](filter) if filter else None
        with self.catalog.session() as s:
            q = select(GroupRow).where(GroupRow.origin.in_(self._origins())).order_by(GroupRow.name)
            fast = _equality(flt, {"externalid": GroupRow.external_id})
            if fast is not None:
                q = q.where(fast)
            found = self._group_models(s, s.scalars(q))
        return [g for g in found if flt is None or flt.match(g)]

    def create_group(self, group: Group) -> tuple[Group, Change]:
        name = group_name(group.display_name or "")
        try:
            with self.catalog.session(write=True) as s:
                clash = s.get(GroupRow, name)
                if clash is not None:
                    raise _taken("group", name, clash.name, clash.origin, self.config.manage_local)
                wanted = self._members(s, group)
                s.add(GroupRow(name=name, origin=ORIGIN, display_name=group.display_name,
                               external_id=group.external_id, updated_at=utcnow()))
                s.flush()
                for u in sorted(wanted):
                    s.add(MembershipRow(user_id=u, group_name=name))
        except IntegrityError:  # created at the same moment by another process
            raise _taken("group", name, name, ORIGIN, self.config.manage_local) from None
        self._apply_roles(wanted)
        return self.get_group(name), Change("scim.group.create", name, {"added": sorted(wanted)})

    def replace_group(self, name: str, new: Group, if_match: str | None = None) -> tuple[Group, Change]:
        current = self.get_group(name)
        _check_version(current, if_match)
        new.replace(current)
        return self._save_group(current, new, "scim.group.replace")

    def patch_group(self, name: str, patch: PatchOp[Any], if_match: str | None = None) -> tuple[Group, Change]:
        current = self.get_group(name)
        _check_version(current, if_match)
        new = current.model_copy(deep=True)
        patch.patch(new, scim_policy=POLICY)
        if not new.display_name:
            raise MutabilityException(detail="displayName is required and cannot be removed")
        return self._save_group(current, new, "scim.group.patch")

    def _save_group(self, current: Group, new: Group, action: str) -> tuple[Group, Change]:
        assert current.id is not None
        before = {m.value for m in current.members or [] if m.value}
        with self.catalog.session(write=True) as s:
            wanted = self._members(s, new)
            row = self._group_row(s, current.id)
            row.display_name, row.external_id = new.display_name, new.external_id
            row.origin, row.updated_at = ORIGIN, utcnow()
            gone, added = before - wanted, wanted - before
            if gone:
                s.execute(delete(MembershipRow).where(MembershipRow.group_name == current.id,
                                                      MembershipRow.user_id.in_(gone)))
            for u in sorted(added):
                s.add(MembershipRow(user_id=u, group_name=current.id))
        self._apply_roles(gone | added)
        detail: dict[str, Any] = {"added": sorted(added), "removed": sorted(gone)}
        if new.display_name != current.display_name:
            detail["display_name"] = new.display_name
        return self.get_group(current.id), Change(action, current.id, detail)

    def delete_group(self, name: str, if_match: str | None = None) -> Change:
        current = self.get_group(name)
        _check_version(current, if_match)
        members = {m.value for m in current.members or [] if m.value}
        with self.catalog.session(write=True) as s:
            s.execute(delete(MembershipRow).where(MembershipRow.group_name == name))
            s.execute(delete(GroupRow).where(GroupRow.name == name))
        self._apply_roles(members)
        return Change("scim.group.delete", name, {"removed": sorted(members)})

    def _members(self, s: Session, group: Group) -> set[str]:
        """The user ids ``group`` lists; each must be a user SCIM manages."""
        wanted: set[str] = set()
        for m in group.members or []:
            if m.type not in (None, "User"):
                raise InvalidValueException(detail=f"member {m.value!r} is a {m.type}: Bastion groups hold users only")
            if not m.value:
                raise InvalidValueException(detail="a member needs a value (the user's id)")
            wanted.add(m.value)
        known: set[str] = set()
        ids = sorted(wanted)
        for i in range(0, len(ids), 500):
            known.update(s.scalars(select(UserRow.id).where(UserRow.id.in_(ids[i:i + 500]),
                                                            UserRow.origin.in_(self._origins()))))
        if missing := sorted(wanted - known):
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise InvalidValueException(detail=f"member {', '.join(map(repr, missing[:5]))}{more}: not a user "
                                               "provisioned over SCIM")
        return wanted

    def _apply_roles(self, user_ids: Iterable[str]) -> None:
        """With ``[scim] role_groups``, a user's role is the highest its groups map to (else member)."""
        mapping = self.config.role_groups
        if not mapping:
            return
        for uid in sorted(set(user_ids)):
            try:
                groups = self.directory.principal(uid).groups
            except AccessError:  # disabled: its groups are read from the catalog all the same
                groups = frozenset(g for g, members in self.directory.groups().items() if uid in members)
            roles = [mapping[g] for g in groups if g in mapping] or ["member"]
            self.directory.accounts.set_role(uid, max(roles, key=role_rank))


def _equality(flt: ScimFilter[Any] | None, columns: dict[str, Any]) -> Any:
    """A SQL condition for a top-level ``attr eq "value"`` filter on an indexed attribute (the rest is
    matched on the resources): what identity providers send before each create."""
    from scim2_models.path import CompareOperator, Comparison

    node = flt.ast if flt is not None else None
    if not isinstance(node, Comparison) or node.op != CompareOperator.eq or not isinstance(node.value, str):
        return None
    if node.attr_path.sub_attr or node.attr_path.uri:
        return None
    column = columns.get(node.attr_path.attr.lower())
    if column is None:
        return None
    # userName is not case-exact (a case-insensitive match); externalId is
    return func.lower(column) == node.value.lower() if column is UserRow.id else column == node.value


def _user_id(user_name: str | None) -> str:
    try:
        return _check("user", user_name or "")
    except AccessError as exc:
        raise InvalidValueException(detail=f"userName: {exc}") from None


def _display_name(user: User) -> str | None:
    """``displayName``, else the ``name`` Okta sends (``formatted``, or given and family name)."""
    if user.display_name:
        return user.display_name
    name = next((v for k, v in user.unknown_attributes.items() if k.lower() == "name"), None)
    if not isinstance(name, dict):
        return None
    parts = {k.lower(): v for k, v in name.items() if isinstance(v, str) and v.strip()}
    text = parts.get("formatted") or " ".join(p for p in (parts.get("givenname"), parts.get("familyname")) if p)
    return text.strip()[:200] or None


def _email(user: User) -> str | None:
    emails = [e.value for e in user.emails or [] if e.value]
    return emails[0] if emails else None


def _taken(kind: str, wanted: str, existing: str, origin: str, manage_local: bool) -> ConflictException:
    exc = ConflictException(detail=_taken_detail(kind, wanted, existing, origin, manage_local))
    exc.scim_type = "uniqueness"
    return exc


def _taken_detail(kind: str, wanted: str, existing: str, origin: str, manage_local: bool) -> str:
    what = f"a {kind} {existing!r} already exists"
    if origin == ORIGIN or (origin == "local" and manage_local):
        return what
    hint = " (set [scim] manage_local = true to let SCIM manage local ones)" if origin == "local" else ""
    return f"{what} with origin {origin!r}, which SCIM does not manage{hint}"


def _immutable_name(exc: MutabilityException, user_name: str | None) -> MutabilityException:
    return MutabilityException(detail=f"{exc.detail}; userName is the Bastion user id {user_name!r} that ACLs "
                                      "name, so it cannot change")


def _check_version(current: Resource[Any], if_match: str | None) -> None:
    if if_match is None or if_match.strip() == "*":
        return
    wanted = {v.strip() for v in if_match.split(",")}
    have = current.meta.version if current.meta else None
    if have not in wanted and (have or "").removeprefix("W/") not in {w.removeprefix("W/") for w in wanted}:
        raise PreconditionFailedException(detail=f"the resource's version is {have}, not {if_match}")


__all__ = ["Change", "Context", "NotFoundException", "Resource", "SCIMException",
           "SearchRequest", "Group", "GroupMember", "POLICY", "ScimDirectory", "User", "UserEmail", "UserGroup",
           "group_name", "parse", "parse_patch", "resource_types", "schemas", "service_provider_config", "version"]
