"""Schemathesis hooks for Parley's suite (test/e2e/schemathesis.test.ts loads them).

Authentication: the cases share the bearer token of a user registered for the run, so that a
stateful scenario finds what it created. Generated cases include POST /auth/revoke (and
/auth/logout), which end the sessions of that user: after one succeeds, or once the token is
refused, the next case registers a new user.

Generation: a few rules of the API are documented in the operations' descriptions but have no
JSON Schema form. For positive cases (those schemathesis expects to be accepted) the hooks keep
to them, each named below with its reason; negative cases are left as generated.
"""

import os
import itertools
import re
import time
import uuid

import requests
import schemathesis
from schemathesis import GenerationMode

GATEWAY = os.environ["PARLEY_GATEWAY_URL"]
MAIL_API = os.environ.get("PARLEY_MAIL_API_URL", "http://127.0.0.1:8025")

# Fully-qualified emoji of every kind the reaction routes accept (single code point, skin tone,
# ZWJ sequence, flag, keycap): "exactly one RGI emoji" is a Unicode property, not a pattern.
EMOJI = ["👍", "❤️", "🎉", "👋🏽", "👩‍💻", "🇫🇷", "1️⃣"]

# What JavaScript's String.prototype.trim removes (the chat service trims message bodies).
TRIMMED = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
MAX_BODY_LENGTH = 4000


def register(full=False):
    response = requests.post(
        f"{GATEWAY}/api/v1/auth/register",
        json={
            "email": f"st.{uuid.uuid4().hex[:12]}@schemathesis.parley.test",
            "displayName": "Schemathesis",
            "password": f"pw-{uuid.uuid4()}",
        },
        timeout=10,
    )
    response.raise_for_status()
    return response.json() if full else response.json()["accessToken"]


# Users a positive case may name in a conversation: ids in a body must be known users (422
# otherwise), and the chat service learns of users from events, so they are registered up front.
KNOWN_USERS = [register(full=True)["user"]["id"] for _ in range(3)]
time.sleep(3)
# Taken in turn (not at random: hypothesis wants its own randomness only).
KNOWN_USER_TURN = itertools.cycle(KNOWN_USERS)
EMOJI_TURN = itertools.cycle(EMOJI)


SESSION = {"token": None}
SESSION_ENDING = {"/api/v1/auth/revoke", "/api/v1/auth/logout"}


@schemathesis.auth(refresh_interval=None)
class RunUser:
    def get(self, case, ctx):
        if SESSION["token"] is None:
            SESSION["token"] = register()
        return SESSION["token"]

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


def positive(case):
    return case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE


@schemathesis.hook
def map_case(ctx, case):
    if not positive(case):
        return case
    path = case.operation.path
    method = case.operation.method.upper()
    # `cursor`: opaque, valid only as issued by the server (its shape is documented, its content
    # is the server's); a positive case starts at the first page.
    if case.query and "cursor" in case.query:
        del case.query["cursor"]
    # GET /users: exactly one of `q` (search) and `ids` (batch lookup), documented, with no
    # OpenAPI 3.0 form; the positive cases search.
    if path == "/api/v1/users" and method == "GET":
        case.query = case.query or {}
        case.query.pop("ids", None)
        case.query.setdefault("q", "schemathesis")
    # POST /conversations, POST …/participants: the users named must exist (a reference, not a
    # shape: 422 naming the field otherwise).
    if isinstance(case.body, dict) and method == "POST":
        if path == "/api/v1/conversations" and "participantIds" in case.body:
            case.body["participantIds"] = [next(KNOWN_USER_TURN)]
        if path.endswith("/participants") and "userIds" in case.body:
            case.body["userIds"] = [next(KNOWN_USER_TURN)]
    # POST /attachments: the accepted types and the size cap are deployment settings
    # (CHAT_ATTACHMENT_CONTENT_TYPES, CHAT_ATTACHMENT_MAX_BYTES), and a file name must keep a
    # character once path and control characters are dropped.
    if path == "/api/v1/attachments" and method == "POST" and isinstance(case.body, dict):
        case.body.update({"contentType": "text/plain", "filename": "notes.txt", "size": 12})
    # GET …/messages: `after` and `before` are mutually exclusive (422 naming query.before);
    # OpenAPI 3.0 cannot say so for query parameters.
    if path.endswith("/conversations/{id}/messages") and method == "GET" and case.query:
        if "after" in case.query and "before" in case.query:
            del case.query["before"]
        # A cursor may also be a message id (the previous format): one of this conversation only.
        for name in ("after", "before"):
            if "-" in str(case.query.get(name, "")):
                del case.query[name]
    # …/reactions/{emoji}: one RGI emoji (see EMOJI).
    if path.endswith("/reactions/{emoji}") and case.path_parameters:
        case.path_parameters["emoji"] = next(EMOJI_TURN)
    # POST …/messages: the body may be blank only when the message has attachments, and its
    # limit counts characters after trimming: a rule across two fields and a transformation.
    # PATCH …/messages/{messageId} (an edit) has the same limit, attachments aside.
    sends = path.endswith("/conversations/{id}/messages") and method == "POST"
    edits = path.endswith("/messages/{messageId}") and method == "PATCH"
    if (sends or edits) and isinstance(case.body, dict):
        text = case.body.get("body")
        trimmed = len(text.strip(TRIMMED)) if isinstance(text, str) else 0
        if not (sends and case.body.get("attachmentIds")) and not (1 <= trimmed <= MAX_BODY_LENGTH):
            case.body["body"] = "Hello from schemathesis"
    return case


def mailed_code(authorization):
    """Requests a verification code for the case's user and reads it from the SMTP sink."""
    headers = {"Authorization": authorization}
    email = requests.get(f"{GATEWAY}/api/v1/auth/me", headers=headers, timeout=10).json()["email"]
    requests.post(f"{GATEWAY}/api/v1/auth/verify-email/request", headers=headers, timeout=10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        mails = requests.get(f"{MAIL_API}/api/v1/messages", params={"to": email}, timeout=10).json()
        for mail in mails.get("messages", []):
            found = re.search(r"\b(\d{6})\b", mail.get("text", ""))
            if found:
                return found.group(1)
        time.sleep(0.2)
    return None


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if not positive(case):
        return
    authorization = (case.headers or {}).get("Authorization") or ""
    path = case.operation.path
    # GET /sync: `since` is opaque (a position the server encodes); a positive case resumes from
    # a cursor the server issued to this very user, fetched with the case's own token.
    if path == "/api/v1/sync" and case.query and "since" in case.query:
        issued = requests.get(f"{GATEWAY}/api/v1/sync", headers={"Authorization": authorization}, timeout=10)
        if issued.ok:
            case.query["since"] = issued.json()["cursor"]
    # POST /auth/verify-email/confirm: a well-formed code is still a secret mailed to the user;
    # a positive case confirms with the code really sent (the SMTP sink keeps it).
    if path == "/api/v1/auth/verify-email/confirm" and isinstance(case.body, dict) and authorization:
        code = mailed_code(authorization)
        if code:
            case.body["code"] = code


@schemathesis.hook
def after_call(ctx, case, response):
    sent = (case.headers or {}).get("Authorization", "")
    ended = case.operation.path in SESSION_ENDING and response.status_code < 300
    refused = response.status_code == 401 and SESSION["token"] is not None and sent.endswith(SESSION["token"])
    if ended or refused:
        SESSION["token"] = None
