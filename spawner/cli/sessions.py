"""``stackhub tags|session|start|prewarm|audit``: the admins' commands, through the sessions service.

They call the ``stackhub-sessions`` REST API at ``https://<publicHost>:<httpsPort>/services/
stackhub-sessions/api/`` with the admin token (``var/secrets/admin-token``, as ``make token``),
trusting the deployment's CA (``var/tls/ca.pem``; the system's CAs for an operator certificate).
``STACKHUB_URL`` overrides the base URL. Times without an offset are the host's local time.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from urllib.parse import quote

from spawner.cli.client import ApiError, Client, client, guard, table

DONE = {"ready", "running", "stopped", "not running", "failed"}


def local_iso(value: str | None) -> str | None:
    """An ISO time as typed (local if no offset) to an aware ISO string."""
    if not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(f"time {value!r} is not ISO 8601, e.g. 2026-12-01T09:00") from None
    return (t if t.tzinfo else t.astimezone()).isoformat()


# --- tags -----------------------------------------------------------------------------------------


def cmd_tags(args) -> int:
    api = client()
    if args.tags_command == "list":
        data = api("GET", "tags")
    elif args.tags_command in ("hide", "show"):
        for tag in args.tag:
            data = api("PUT", f"tags/{quote(tag, safe='')}", {"hidden": args.tags_command == "hide"})
            print(f"{tag}: {'hidden' if args.tags_command == 'hide' else 'shown'}")
    else:
        data = api("PUT", "recommended", {"tag": None if args.tag == "config" else args.tag})
        print(f"recommended: {data['recommended']}" + (" (from the config)" if args.tag == "config" else ""))
        return 0
    if args.tags_command == "list":
        rows = [[t["name"], t["class"], t["build_date"] or "-",
                 ", ".join(s for s, on in (("recommended", t["recommended"]), ("hidden", t["hidden"]),
                                           ("not pulled", not t["present"])) if on) or "offered"]
                for t in data["tags"]]
        table(rows, ["TAG", "CLASS", "BUILT", "STATE"])
    return 0


# --- sessions -------------------------------------------------------------------------------------


def cmd_session(args) -> int:
    api = client()
    if args.session_command == "open":
        body = {"tag": args.tag, "group": args.group, "start": local_iso(args.start), "end": local_iso(args.end)}
        s = api("PUT", f"sessions/{quote(args.name, safe='')}", body)
        who = s["group"] or "everyone"
        print(f"session {s['name']!r}: {who} locked to {s['tag']} ({s['status']}; "
              f"{s['start'] or 'now'} to {s['end'] or 'until closed'})")
    elif args.session_command in ("status", "repair"):
        if args.session_command == "repair":
            p = api("POST", "policy/repair", {"empty": args.empty})
            print("repaired: " + ("the policy is now empty" if args.empty else "the last good policy is restored"))
        else:
            p = api("GET", "policy")
        print(f"policy {p['file']}: " + ("ok" if p["ok"] else f"UNUSABLE: {p['problem']}"))
        print(p["enforcing"])
        return 0 if p["ok"] else 1
    elif args.session_command == "close":
        api("DELETE", f"sessions/{quote(args.name, safe='')}")
        print(f"session {args.name!r} closed")
    else:
        data = api("GET", "sessions")
        table([[s["name"], s["tag"], s["group"] or "(everyone)", s["start"] or "-", s["end"] or "-", s["status"],
                 s["opened_by"]] for s in data["sessions"]],
               ["NAME", "TAG", "GROUP", "START", "END", "STATUS", "OPENED BY"])
    return 0


# --- starts, pre-warm -----------------------------------------------------------------------------


def follow(api: Client, job: dict, *, out=print, poll: float = 1.0) -> int:
    """Print a line per user as its state changes until the job is done; 1 if any failed."""
    seen: dict[str, str] = {}
    total = job["total"]
    while True:
        for row in job["users"]:
            if seen.get(row["user"]) != row["state"]:
                seen[row["user"]] = row["state"]
                done = sum(1 for s in seen.values() if s in DONE)
                took = f" ({row['seconds']}s)" if row["state"] in DONE and row["seconds"] is not None else ""
                msg = f": {row['message']}" if row["message"] else ""
                out(f"[{done}/{total}] {row['user']}: {row['state']}{took}{msg}")
        if job["done"]:
            break
        time.sleep(poll)
        job = api("GET", f"jobs/{job['id']}")
    counts = ", ".join(f"{n} {state}" for state, n in sorted(job["counts"].items()))
    out(f"{job['action']} {'group ' + job['group'] if job['group'] else job['users'][0]['user']}: {counts} "
        f"in {job['seconds']}s")
    return 1 if job["counts"].get("failed") else 0


def cmd_start(args) -> int:
    api = client()
    body = {"action": "start", "user": args.user, "tag": args.tag}
    if args.size:
        body["size"] = args.size
    job = api("POST", "jobs", body)
    return follow(api, job) if not args.no_wait else 0


def cmd_prewarm(args) -> int:
    api = client()
    if args.stop:
        body = {"action": "stop", "group": args.group}
    else:
        if not args.tag:
            raise ApiError("prewarm needs --tag TAG (or --stop)")
        body = {"action": "start", "group": args.group, "tag": args.tag}
        if args.size:
            body["size"] = args.size
    if args.concurrency:
        body["concurrency"] = args.concurrency
    job = api("POST", "jobs", body)
    verb = "stopping" if args.stop else f"starting {args.tag} for"
    print(f"{verb} {job['total']} servers of group {args.group}, {job['concurrency']} at a time")
    return follow(api, job)


def cmd_audit(args) -> int:
    data = client()("GET", f"audit?limit={args.limit}")
    table([[a["at"], a["who"], a["action"], json.dumps(a["detail"], sort_keys=True)] for a in data["audit"]],
           ["WHEN", "WHO", "WHAT", "DETAILS"])
    return 0


def register(sub):
    """Add the admins' subcommands to the ``stackhub`` parser."""
    tags = sub.add_parser("tags", help="list, hide, show or recommend stack tags (run-time policy)")
    tsub = tags.add_subparsers(dest="tags_command", required=True)
    tsub.add_parser("list", help="tags with their state (recommended, hidden)")
    for name, what in (("hide", "stop offering TAG to non-admin users"), ("show", "offer TAG again")):
        p = tsub.add_parser(name, help=what)
        p.add_argument("tag", nargs="+", metavar="TAG")
    rec = tsub.add_parser("recommend", help="make TAG the recommended one ('config': back to stackhub.yaml)")
    rec.add_argument("tag", metavar="TAG")
    tags.set_defaults(func=guard(cmd_tags))

    sess = sub.add_parser("session", help="tutorial session locks: open, close, list")
    ssub = sess.add_subparsers(dest="session_command", required=True)
    op = ssub.add_parser("open", help="lock a group (or everyone) to one tag, optionally between two times")
    op.add_argument("name", metavar="NAME", help='session name, e.g. "DM tutorial 2026-12"')
    op.add_argument("--tag", required=True, help="the stack tag the session uses")
    op.add_argument("--group", help="hub group it applies to (default: everyone who is not an admin)")
    op.add_argument("--start", metavar="ISO", help="start time, e.g. 2026-12-01T09:00 (local) or with an offset")
    op.add_argument("--end", metavar="ISO", help="end time (exclusive)")
    cl = ssub.add_parser("close", help="end a session now and restore the normal menu")
    cl.add_argument("name", metavar="NAME")
    ssub.add_parser("list", help="sessions and their status (scheduled, active, ended)")
    ssub.add_parser("status", help="is the stored policy usable? (exit 1 if not: what is enforced instead)")
    rp = ssub.add_parser("repair", help="replace an unusable policy.json with the last good policy")
    rp.add_argument("--empty", action="store_true",
                    help="replace it with an empty policy instead (drops every hidden tag and session lock)")
    sess.set_defaults(func=guard(cmd_session))

    st = sub.add_parser("start", help="start USER's server with a tag (as an admin) and wait until it is ready")
    st.add_argument("user", metavar="USER")
    st.add_argument("--tag", required=True)
    st.add_argument("--size")
    st.add_argument("--no-wait", action="store_true", help="return once the start is accepted")
    st.set_defaults(func=guard(cmd_start))

    pw = sub.add_parser("prewarm", help="start (or --stop) the servers of every member of GROUP, with progress")
    pw.add_argument("group", metavar="GROUP")
    pw.add_argument("--tag", help="stack tag to start")
    pw.add_argument("--size")
    pw.add_argument("--stop", action="store_true", help="stop the group's servers instead")
    pw.add_argument("--concurrency", type=int, help="servers starting at the same time (default: the service's)")
    pw.set_defaults(func=guard(cmd_prewarm))

    au = sub.add_parser("audit", help="recent changes of tags and sessions, starts and pre-warms: who, what, when")
    au.add_argument("--limit", type=int, default=30)
    au.set_defaults(func=guard(cmd_audit))
