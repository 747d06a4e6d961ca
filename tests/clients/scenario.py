"""An admin's day with memberledger, through the client generated from openapi/openapi.json.

Run by tests/clients/run.sh against a freshly started server:

    python tests/clients/scenario.py --base-url http://127.0.0.1:PORT --token ADMIN_TOKEN

Only the generated package `memberledger_client` talks to the server: if the spec and the
server disagree (a status, a field, a type), a step fails here the way it would fail for
anyone who generates a client. Each step asserts on status codes and fields; the script
exits non-zero at the first failure and prints which operations it covered.

STEPS below is the list of flows; a new flow (member sign-in through the mail server, the
member dashboard, license validation, ...) is one more function appended to it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from memberledger_client import AuthenticatedClient, Client
from memberledger_client.api.members import (
    create_member,
    get_member,
    get_member_timeline,
    list_members,
    update_member,
)
from memberledger_client.api.auth import request_sign_in_code, sign_out, verify_sign_in
from memberledger_client.api.events import list_events
from memberledger_client.api.licenses import validate_license
from memberledger_client.api.me import get_me, get_my_dashboard
from memberledger_client.api.operations import healthz, readyz
from memberledger_client.api.stripe import (
    get_stripe_event,
    list_stripe_events,
    retry_stripe_event,
)
from memberledger_client.models import (
    CodeRequest,
    CreateMemberRequest,
    Dashboard,
    EventPage,
    LicenseValidation,
    SessionView,
    ValidateLicenseRequest,
    ValidationCode,
    VerifyRequest,
    CreateMemberSource,
    Health,
    Member,
    MemberDetail,
    MemberPage,
    MemberSource,
    MemberStatus,
    Problem,
    Readiness,
    StripeEventPage,
    StripeEventStatus,
    TimelinePage,
    UpdateMemberRequest,
)
from memberledger_client.types import UNSET, Response

PROBLEM_JSON = "application/problem+json"


class ScenarioError(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ScenarioError(message)


@dataclass
class Ctx:
    admin: AuthenticatedClient
    anonymous: Client
    # Unique per run, so the scenario also passes against a database with other data.
    tag: str
    members: list[Member] = field(default_factory=list)
    covered: set[str] = field(default_factory=set)
    base_url: str = ""
    # maildev's web API (http://host:port), to read sign-in emails; not part of our API.
    maildev: str | None = None
    member: AuthenticatedClient | None = None

    def call(self, operation_id: str, endpoint: Any, expect: int, **kwargs: Any) -> Response[Any]:
        """Calls a generated endpoint module's `sync_detailed`, checks the status (and, for
        an error, that the body is a problem+json `Problem` with that status)."""
        client = kwargs.pop("client", self.admin)
        response = endpoint.sync_detailed(client=client, **kwargs)
        self.covered.add(operation_id)
        body = response.content.decode(errors="replace")[:500]
        check(
            response.status_code == expect,
            f"{operation_id}: expected {expect}, got {int(response.status_code)}: {body}",
        )
        check(response.parsed is not None, f"{operation_id}: the client could not parse {body}")
        if expect >= 400:
            content_type = response.headers.get("content-type", "")
            check(
                content_type.startswith(PROBLEM_JSON),
                f"{operation_id}: a {expect} must be {PROBLEM_JSON}, was {content_type!r}",
            )
            problem = response.parsed
            check(isinstance(problem, Problem), f"{operation_id}: not a Problem: {body}")
            check(problem.status == expect, f"{operation_id}: problem.status {problem.status} != {expect}")
            check(problem.type_.startswith("/problems/"), f"{operation_id}: problem type {problem.type_!r}")
            check(
                response.headers.get("x-request-id") is not None,
                f"{operation_id}: no X-Request-Id on an error",
            )
        return response

    def email(self, i: int | str) -> str:
        return f"scenario-{self.tag}-{i}@example.com"


def unset(value: Any) -> Any:
    """UNSET as None, for comparisons."""
    return None if value is UNSET else value


def fields(problem: Problem) -> list[str]:
    """The fields a problem names (`errors` is absent when none is at fault)."""
    return [e.field for e in unset(problem.errors) or []]


# ---------------------------------------------------------------------------------- steps


def health(ctx: Ctx) -> None:
    live = ctx.call("healthz", healthz, 200, client=ctx.anonymous).parsed
    check(isinstance(live, Health) and live.status == "ok", f"healthz: {live}")
    ready = ctx.call("readyz", readyz, 200, client=ctx.anonymous).parsed
    check(isinstance(ready, Readiness), f"readyz: {ready}")
    check(ready.status == "ready", f"readyz status {ready.status}")
    check(ready.database and ready.migrations_applied, f"readyz: {ready.to_dict()}")
    names = [p.name for p in ready.projections]
    check("member_list" in names, f"readyz lists no member_list projection: {names}")


def create_members(ctx: Ctx) -> None:
    for i in range(5):
        body = CreateMemberRequest(
            email=ctx.email(i),
            name=f"Scenario Member {i}",
            labels=["scenario", f"n{i}"],
            note="created by tests/clients/scenario.py" if i == 0 else UNSET,
            source=CreateMemberSource.API if i == 4 else UNSET,
        )
        response = ctx.call("createMember", create_member, 201, body=body)
        member = response.parsed
        check(isinstance(member, Member), f"createMember: {member}")
        check(member.email == ctx.email(i), f"createMember: email {member.email}")
        check(member.name == f"Scenario Member {i}", f"createMember: name {member.name}")
        check(member.labels == ["scenario", f"n{i}"], f"createMember: labels {member.labels}")
        check(member.status == MemberStatus.FREE, f"createMember: status {member.status}")
        expected_source = MemberSource.API if i == 4 else MemberSource.ADMIN
        check(member.source == expected_source, f"createMember: source {member.source}")
        check(
            response.headers.get("location") == f"/v1/members/{member.id}",
            f"createMember: Location {response.headers.get('location')}",
        )
        ctx.members.append(member)
    check(unset(ctx.members[0].note) == "created by tests/clients/scenario.py", "note not kept")
    check(unset(ctx.members[1].note) is None, f"note should be null: {ctx.members[1].note!r}")


def rejected_creates(ctx: Ctx) -> None:
    # The same email, in other case: 409 naming the field.
    taken = CreateMemberRequest(email=ctx.email(0).upper())
    problem = ctx.call("createMember", create_member, 409, body=taken).parsed
    check(fields(problem) == ["email"], f"409 errors: {problem.to_dict()}")
    # Not an email: 422 naming the field.
    invalid = CreateMemberRequest(email="not an email")
    problem = ctx.call("createMember", create_member, 422, body=invalid).parsed
    check("email" in fields(problem), f"422 errors: {problem.to_dict()}")
    # No token: 401.
    ctx.call("createMember", create_member, 401, client=ctx.anonymous, body=CreateMemberRequest(email=ctx.email("x")))


def list_and_page(ctx: Ctx) -> None:
    created = [m.id for m in ctx.members]
    seen: list[uuid.UUID] = []
    cursor: Any = UNSET
    pages = 0
    while True:
        page = ctx.call("listMembers", list_members, 200, search=ctx.tag, limit=2, cursor=cursor).parsed
        check(isinstance(page, MemberPage), f"listMembers: {page}")
        pages += 1
        check(len(page.items) <= 2, f"listMembers: {len(page.items)} items with limit 2")
        seen.extend(m.id for m in page.items)
        cursor = unset(page.next_cursor)
        if cursor is None:
            break
        check(pages < 10, "listMembers: the cursor does not end")
    check(pages == 3, f"listMembers: 5 members with limit 2 took {pages} pages")
    check(seen == list(reversed(created)), f"listMembers: not newest first / not all: {seen} vs {created}")
    # Filters.
    page = ctx.call("listMembers", list_members, 200, search=ctx.email(3)).parsed
    check([m.id for m in page.items] == [ctx.members[3].id], f"search by email: {page.to_dict()}")
    check(unset(page.next_cursor) is None, "a single page has no next_cursor")
    page = ctx.call("listMembers", list_members, 200, search=ctx.tag, status=MemberStatus.PAID).parsed
    check(page.items == [], f"no scenario member is paid: {page.to_dict()}")
    # Bad input.
    problem = ctx.call("listMembers", list_members, 422, limit=0).parsed
    check(fields(problem) == ["limit"], f"limit=0: {problem.to_dict()}")
    problem = ctx.call("listMembers", list_members, 400, cursor="not-a-cursor").parsed
    check(fields(problem) == ["cursor"], f"bad cursor: {problem.to_dict()}")
    ctx.call("listMembers", list_members, 401, client=ctx.anonymous)


def get_one(ctx: Ctx) -> None:
    member = ctx.members[2]
    detail = ctx.call("getMember", get_member, 200, id=member.id).parsed
    check(isinstance(detail, MemberDetail), f"getMember: {detail}")
    check(detail.id == member.id and detail.email == member.email, f"getMember: {detail.to_dict()}")
    check(detail.subscriptions == [], f"getMember: subscriptions {detail.subscriptions}")
    check(detail.license_count == 0 and detail.active_license_count == 0, "getMember: licenses")
    check(detail.status == MemberStatus.FREE, f"getMember: status {detail.status}")
    ctx.call("getMember", get_member, 404, id=uuid.uuid4())
    ctx.call("getMember", get_member, 401, client=ctx.anonymous, id=member.id)


def update_one(ctx: Ctx) -> None:
    member = ctx.members[1]
    body = UpdateMemberRequest(name="Renamed", note="a note", labels=["vip"])
    updated = ctx.call("updateMember", update_member, 200, id=member.id, body=body).parsed
    check(isinstance(updated, Member), f"updateMember: {updated}")
    check(updated.name == "Renamed" and updated.note == "a note", f"updateMember: {updated.to_dict()}")
    check(updated.labels == ["vip"], f"updateMember: labels {updated.labels}")
    check(updated.email == member.email, "updateMember: email changed unasked")
    check(updated.updated_at >= member.updated_at, "updateMember: updated_at went back")
    # null clears the note; an absent name stays.
    cleared = ctx.call("updateMember", update_member, 200, id=member.id, body=UpdateMemberRequest(note=None)).parsed
    check(unset(cleared.note) is None and cleared.name == "Renamed", f"clearing the note: {cleared.to_dict()}")
    # A new email; another member's email is a conflict.
    new_email = ctx.email("renamed")
    moved = ctx.call("updateMember", update_member, 200, id=member.id, body=UpdateMemberRequest(email=new_email)).parsed
    check(moved.email == new_email, f"email change: {moved.to_dict()}")
    ctx.call("updateMember", update_member, 409, id=member.id, body=UpdateMemberRequest(email=ctx.email(0)))
    ctx.call("updateMember", update_member, 404, id=uuid.uuid4(), body=UpdateMemberRequest(name="nobody"))
    ctx.call("updateMember", update_member, 422, id=member.id, body=UpdateMemberRequest(email="nope"))
    fetched = ctx.call("getMember", get_member, 200, id=member.id).parsed
    check(fetched.email == new_email and fetched.name == "Renamed", f"after updates: {fetched.to_dict()}")


def timeline(ctx: Ctx) -> None:
    member = ctx.members[1]
    expected = ["MemberCreated", "MemberUpdated", "MemberUpdated", "MemberEmailChanged"]
    # The timeline is a read model a write does not wait for: poll briefly.
    deadline = time.monotonic() + 15
    while True:
        page = ctx.call("getMemberTimeline", get_member_timeline, 200, id=member.id, limit=100).parsed
        check(isinstance(page, TimelinePage), f"getMemberTimeline: {page}")
        types = [e.event_type for e in reversed(page.items)]
        if types == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    check(types == expected, f"timeline (oldest first): {types}, expected {expected}")
    for entry in page.items:
        check(entry.aggregate_id == str(member.id), f"timeline entry of another aggregate: {entry.to_dict()}")
        check(entry.summary != "", f"timeline entry without summary: {entry.to_dict()}")
    # Paged one by one, newest first, with the cursor.
    ids = []
    cursor: Any = UNSET
    while True:
        page = ctx.call("getMemberTimeline", get_member_timeline, 200, id=member.id, limit=1, cursor=cursor).parsed
        ids.extend(e.id for e in page.items)
        cursor = unset(page.next_cursor)
        if cursor is None or len(ids) > len(expected):
            break
    check(len(ids) == len(expected) and ids == sorted(ids, reverse=True), f"timeline pages: {ids}")
    ctx.call("getMemberTimeline", get_member_timeline, 404, id=uuid.uuid4())
    ctx.call("getMemberTimeline", get_member_timeline, 400, id=member.id, cursor="garbage")


def stripe_events(ctx: Ctx) -> None:
    # No webhook was sent to this server: the inbox is empty, with or without a filter.
    page = ctx.call("listStripeEvents", list_stripe_events, 200).parsed
    check(isinstance(page, StripeEventPage), f"listStripeEvents: {page}")
    check(page.items == [] and unset(page.next_cursor) is None, f"listStripeEvents: {page.to_dict()}")
    page = ctx.call("listStripeEvents", list_stripe_events, 200, status=StripeEventStatus.FAILED, limit=10).parsed
    check(page.items == [], f"listStripeEvents?status=failed: {page.to_dict()}")
    ctx.call("listStripeEvents", list_stripe_events, 422, limit=201)
    ctx.call("listStripeEvents", list_stripe_events, 401, client=ctx.anonymous)
    ctx.call("getStripeEvent", get_stripe_event, 404, id="evt_scenario_unknown")
    ctx.call("retryStripeEvent", retry_stripe_event, 404, id="evt_scenario_unknown")


def wait_for_code(ctx: Ctx, email: str) -> str:
    """The 6-digit code of the newest sign-in email to `email`, read from the mail server."""
    import httpx

    check(ctx.maildev is not None, "sign-in needs --maildev")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        messages = httpx.get(f"{ctx.maildev}/email", timeout=10).json()
        mine = [m for m in messages if any(t.get("address", "").lower() == email.lower() for t in m.get("to", []))]
        if mine:
            text = mine[-1].get("text", "")
            marker = "Your code: "
            start = text.find(marker)
            check(start >= 0, f"no code in the email: {text[:200]}")
            return text[start + len(marker) : start + len(marker) + 6]
        time.sleep(0.2)
    raise ScenarioError(f"no sign-in email to {email} arrived")


def sign_in(ctx: Ctx) -> None:
    email = ctx.members[0].email
    ctx.call("requestSignInCode", request_sign_in_code, 202, client=ctx.anonymous, body=CodeRequest(email=email))
    code = wait_for_code(ctx, email)
    ctx.call(
        "verifySignIn", verify_sign_in, 401, client=ctx.anonymous,
        body=VerifyRequest(email=email, code="000000" if code != "000000" else "111111"),
    )
    session = ctx.call("verifySignIn", verify_sign_in, 200, client=ctx.anonymous, body=VerifyRequest(email=email, code=code)).parsed
    check(isinstance(session, SessionView) and session.member.email == email, f"verifySignIn: {session}")
    ctx.member = AuthenticatedClient(base_url=ctx.base_url, token=session.session_token, timeout=30.0)
    me = ctx.call("getMe", get_me, 200, client=ctx.member).parsed
    check(me.email == email, f"getMe: {me.to_dict()}")
    # An admin token is not a member session.
    ctx.call("getMe", get_me, 401, client=ctx.admin)


def member_dashboard(ctx: Ctx) -> None:
    check(ctx.member is not None, "needs a signed-in member")
    dashboard = ctx.call("getMyDashboard", get_my_dashboard, 200, client=ctx.member).parsed
    check(isinstance(dashboard, Dashboard), f"getMyDashboard: {dashboard}")
    check(dashboard.email == ctx.members[0].email, f"getMyDashboard: {dashboard.to_dict()}")
    for section in ("subscriptions", "sites", "payments", "licenses", "customer_ids"):
        check(getattr(dashboard, section) == [], f"getMyDashboard: {section} should be empty")
    # 204 has no body to parse, so it is checked here rather than through ctx.call.
    signed_out = sign_out.sync_detailed(client=ctx.member)
    ctx.covered.add("signOut")
    check(signed_out.status_code == 204, f"signOut: expected 204, got {int(signed_out.status_code)}")
    ctx.call("getMyDashboard", get_my_dashboard, 401, client=ctx.member)


def license_validation(ctx: Ctx) -> None:
    body = ValidateLicenseRequest(key="KEY-AAAA-BBBB-CCCC", domain="example.com")
    result = ctx.call("validateLicense", validate_license, 200, client=ctx.anonymous, body=body).parsed
    check(isinstance(result, LicenseValidation), f"validateLicense: {result}")
    check(result.valid is False and result.code == ValidationCode.NOT_FOUND, f"validateLicense: {result.to_dict()}")
    bad = ValidateLicenseRequest(key="KEY-AAAA-BBBB-CCCC", domain="not a domain")
    ctx.call("validateLicense", validate_license, 422, client=ctx.anonymous, body=bad)


def event_log(ctx: Ctx) -> None:
    types: list[str] = []
    cursor: Any = UNSET
    for _ in range(1000):
        page = ctx.call("listEvents", list_events, 200, limit=25, after=cursor).parsed
        check(isinstance(page, EventPage), f"listEvents: {page}")
        if not page.items:
            break
        types.extend(item.event_type for item in page.items)
        cursor = page.next_cursor
    for expected in ("MemberCreated", "MemberUpdated", "MemberLoggedIn"):
        check(expected in types, f"listEvents: no {expected} in {sorted(set(types))}")
    ctx.call("listEvents", list_events, 400, after="not-a-cursor")
    ctx.call("listEvents", list_events, 401, client=ctx.anonymous)


# The flows, in order. A new flow is one more (name, function) here.
STEPS: list[tuple[str, Callable[[Ctx], None]]] = [
    ("health and readiness", health),
    ("create members", create_members),
    ("rejected creates (409, 422, 401)", rejected_creates),
    ("list members, page through them with the cursor", list_and_page),
    ("get a member", get_one),
    ("update a member", update_one),
    ("a member's timeline", timeline),
    ("the Stripe event inbox", stripe_events),
    ("a member signs in through the mail server", sign_in),
    ("the member's dashboard, then sign-out", member_dashboard),
    ("public license validation", license_validation),
    ("the event log, following the cursor", event_log),
]


def spec_operations(spec_path: str) -> list[str]:
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    ops = []
    for path_item in spec.get("paths", {}).values():
        for method, op in path_item.items():
            if method in {"get", "put", "post", "delete", "patch", "head", "options", "trace"}:
                ops.append(op.get("operationId", method))
    return sorted(ops)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--spec", help="openapi.json, to report operations the scenario did not cover")
    parser.add_argument("--maildev", help="maildev's web API, to read sign-in emails")
    args = parser.parse_args()

    ctx = Ctx(
        admin=AuthenticatedClient(base_url=args.base_url, token=args.token, timeout=30.0),
        anonymous=Client(base_url=args.base_url, timeout=30.0),
        tag=uuid.uuid4().hex[:12],
        base_url=args.base_url,
        maildev=args.maildev,
    )
    passed = 0
    with ctx.admin, ctx.anonymous:
        for name, run in STEPS:
            started = time.monotonic()
            try:
                run(ctx)
            except Exception as err:  # noqa: BLE001 - report any failure as the step's
                print(f"FAIL  {name}: {err}", file=sys.stderr)
                if not isinstance(err, ScenarioError):
                    traceback.print_exc()
                print(f"scenario: {passed} passed, 1 failed", file=sys.stderr)
                return 1
            passed += 1
            print(f"ok    {name} ({time.monotonic() - started:.2f}s)")

    print(f"operations covered ({len(ctx.covered)}): {', '.join(sorted(ctx.covered))}")
    if args.spec:
        missing = [op for op in spec_operations(args.spec) if op not in ctx.covered]
        print(f"operations in the spec not covered: {', '.join(missing) if missing else 'none'}")
    print(f"scenario: {passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
