"""``stackhub backup|restore`` and ``stackhub users reset-password|delete|prune``: the operator's
care of a deployment's data.

``backup``/``restore`` work on the engine and ``var/`` directly (spawner.deploy.backup), so they run
whether the hub is up or not. ``users`` calls the hub's REST API with the admin token and, for
homes, the engine: a home volume is deleted only when the operator says so (``--purge``, or
``prune`` without ``--dry-run``), and every command says what it kept and what it deleted.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path
from urllib.parse import quote

from spawner.cli.client import ApiError, client, config_file, guard, host_paths, table
from spawner.core import names
from spawner.core.config import load_config
from spawner.core.disk import human

_AGE = re.compile(r"^(\d+)([mhdw])$")
_AGE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> dt.timedelta:
    """``30d``, ``12h``, ``2w``, ``90m`` -> a timedelta; anything else is a clear error."""
    m = _AGE.match(text.strip())
    if not m:
        raise ApiError(f"age {text!r} must be a number and a unit: m, h, d or w (e.g. 30d)")
    return dt.timedelta(**{_AGE_UNITS[m.group(2)]: int(m.group(1))})


def _docker():
    import docker

    return docker.from_env()


def _archiver(log=print):
    from spawner.deploy.backup import Archiver

    return Archiver(client=_docker(), cfg=load_config(), paths=host_paths(), log=log)


def _fail(e) -> int:
    import sys

    print(f"stackhub: {e}", file=sys.stderr)
    return 2


# --- backup / restore -------------------------------------------------------------------------------


def cmd_backup(args) -> int:
    from spawner.deploy.backup import BackupError

    start = time.monotonic()
    try:
        manifest = _archiver().backup(Path(args.dest), homes=args.homes, data=args.data, dry_run=args.dry_run)
    except BackupError as e:
        return _fail(e)
    if not args.dry_run:
        print(f"took {time.monotonic() - start:.1f} s")
    failed = manifest.get("failed") or []
    if failed:  # the others are in the backup; these are not
        import sys

        print(f"stackhub: {len(failed)} volumes could not be backed up: "
              + ", ".join(f"{f['source']} ({f['error'][-200:]})" for f in failed), file=sys.stderr)
        return 1
    return 0


def cmd_restore(args) -> int:
    from spawner.deploy.backup import BackupError
    from spawner.deploy.single_host import Deployment

    arch = _archiver()

    def stop():
        Deployment(client=arch.client, cfg=arch.cfg, paths=arch.paths, config_file=config_file()).down()

    start = time.monotonic()
    try:
        arch.restore(Path(args.src), force=args.force, dry_run=args.dry_run, stop=stop)
    except BackupError as e:
        return _fail(e)
    if not args.dry_run:
        print(f"took {time.monotonic() - start:.1f} s")
    return 0


# --- users ----------------------------------------------------------------------------------------------


def cmd_reset_password(args) -> int:
    """A new generated tutorial password for USER, printed once; every session of USER ends."""
    out = client(service=None)("POST", f"stackhub/users/{quote(args.user, safe='')}/password")
    print(f"user: {out['name']}")
    print(f"password: {out['password']}")
    print(f"ended: {out.get('tokens', 0)} tokens and every login; servers stopped: "
          f"{', '.join(out.get('stopped') or []) or 'none'}")
    return 0


def cmd_take_over(args) -> int:
    """A name an attendee claimed becomes staff: the attendee's sessions, servers and password end."""
    body = {"instructor": not args.admin or args.instructor, "admin": args.admin}
    out = client(service=None)("POST", f"stackhub/users/{quote(args.user, safe='')}/take-over", body)
    roles = " and ".join(r for r in ("instructor", "admin") if out.get(r))
    print(f"took over {out['name']} as {roles}; servers stopped: {', '.join(out.get('stopped') or []) or 'none'}; "
          f"{out.get('tokens', 0)} tokens ended")
    print(f"give it a password: stackhub users reset-password {out['name']}")
    return 0


def release_name(api, user: str) -> None:
    """A deleted user's name may be claimed again once their home is gone (tutorial login only)."""
    try:
        out = api("POST", f"stackhub/users/{quote(user, safe='')}/release")
    except ApiError as e:  # an OAuth hub has no tutorial names to release
        if ": 404 " in str(e):
            return
        raise
    if out.get("released"):
        print(f"the name {user} may be claimed again")


def _user(api, name: str) -> dict | None:
    try:
        return api("GET", f"users/{quote(name, safe='')}")
    except ApiError as e:
        if ": 404 " in str(e):
            return None
        raise


def home_of(arch, user: str) -> str | None:
    """``user``'s home volume of this deployment: by its labels, else by the configured name."""
    labelled = arch.homes().get(user)
    if labelled:
        return labelled
    name = names.home_volume_name(user, arch.cfg.volumes.home_volume)
    return name if arch.exists(name) else None


def _wait_servers_gone(arch, user: str, timeout: float = 60) -> list[str]:
    own = names.Deployment(arch.cfg.hub.prefix)
    deadline = time.monotonic() + timeout
    while True:
        left = [c.name for c in arch.client.containers.list(
            all=True, filters={"label": [f"{names.LABEL_USER}={user}", f"{names.LABEL_ROLE}=server"]})
            if own.owns_server(c.labels)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def cmd_delete(args) -> int:
    api = client(service=None)
    arch = _archiver()
    model = _user(api, args.user)
    volume = home_of(arch, args.user)
    if model is None and not (args.purge and volume):
        raise ApiError(f"no user {args.user!r} in the hub" + ("" if volume else " and no home volume of theirs"))
    if model is not None:
        servers = sorted((n or "(default)") for n in (model.get("servers") or {}))
        api("DELETE", f"users/{quote(args.user, safe='')}")
        print(f"deleted user {args.user}" + (f"; stopped their servers: {', '.join(servers)}" if servers else
                                             " (no server was running)"))
        left = _wait_servers_gone(arch, args.user)
        if left:
            raise ApiError(f"containers of {args.user} are still there after 60 s: {', '.join(left)}; "
                           "see `docker logs` of the hub")
    if volume is None:
        print(f"{args.user} has no home volume")
        return 0
    if not arch.exists(volume):
        print(f"home volume {volume} was deleted by the hub (volumes.deleteHomeWithUser)")
        return 0
    size = human(arch.sizes([volume])[volume])
    if not args.purge:
        print(f"kept home volume {volume} ({size}); `stackhub users delete {args.user} --purge` deletes it")
        return 0
    arch.client.volumes.get(volume).remove()
    print(f"deleted home volume {volume} ({size})")
    release_name(api, args.user)
    return 0


def _when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def stale_homes(homes: dict[str, str], users: dict[str, dict | None], cutoff: dt.datetime) -> list[tuple[str, str, str]]:
    """(user, volume, why) of each home whose user is gone or inactive since before ``cutoff``
    (pure). A user with a server never has a stale home."""
    out = []
    for user in sorted(homes):
        model = users.get(user)
        if model is None:
            out.append((user, homes[user], "user deleted"))
            continue
        if model.get("servers") or model.get("pending"):
            continue
        last = _when(model.get("last_activity")) or _when(model.get("created"))
        if last is None or last < cutoff:
            out.append((user, homes[user], f"last active {last.isoformat(timespec='minutes') if last else 'never'}"))
    return out


def cmd_prune(args) -> int:
    age = parse_age(args.inactive)
    api = client(service=None)
    arch = _archiver()
    homes = arch.homes()
    users = {u: _user(api, u) for u in homes}
    stale = stale_homes(homes, users, dt.datetime.now(dt.timezone.utc) - age)
    sizes = arch.sizes([v for _, v, _ in stale])
    table([[u, v, human(sizes[v]), why] for u, v, why in stale], ["USER", "HOME VOLUME", "SIZE", "WHY"])
    total = human(sum(sizes.values()))
    if args.dry_run:
        print(f"{len(stale)} stale homes ({total}) of {len(homes)}; nothing deleted (without --dry-run they are)")
        return 0
    from docker.errors import APIError

    deleted = 0
    for user, volume, _ in stale:
        try:
            arch.client.volumes.get(volume).remove()
            deleted += 1
            print(f"deleted {volume}")
            if users.get(user) is None:
                release_name(api, user)
        except APIError as e:  # a container started meanwhile holds it
            print(f"kept {volume}: {e.explanation}")
    print(f"deleted {deleted} of {len(stale)} stale homes")
    return 0


def register(sub):
    bk = sub.add_parser("backup", help="back up hub database, policy, courses, secrets and CA (and homes) to DEST")
    bk.add_argument("dest", metavar="DEST", help="a new (or empty) directory; written 0700")
    bk.add_argument("--homes", action="store_true", help="also every user's home volume")
    bk.add_argument("--data", action="store_true", help="also the tutorial data volumes (volumes.data)")
    bk.add_argument("--dry-run", action="store_true", help="list what would be written, with sizes; write nothing")
    bk.set_defaults(func=cmd_backup)

    rs = sub.add_parser("restore", help="restore a backup into this deployment (stopped; then `make up`)")
    rs.add_argument("src", metavar="SRC", help="a directory written by `stackhub backup`")
    rs.add_argument("--force", action="store_true",
                    help="stop the running deployment and overwrite volumes and files that hold data")
    rs.add_argument("--dry-run", action="store_true", help="list what would be restored and replaced; change nothing")
    rs.set_defaults(func=cmd_restore)

    users = sub.add_parser("users", help="user accounts and their homes")
    usub = users.add_subparsers(dest="users_command", required=True)
    rp = usub.add_parser("reset-password", help="give USER a new generated password (prints it once); "
                                                 "also how instructors get theirs")
    rp.add_argument("user", metavar="USER")
    rp.set_defaults(func=guard(cmd_reset_password))
    to = usub.add_parser("take-over", help="make a name an attendee claimed an instructor (or --admin): the "
                                           "attendee's sessions, servers and password end")
    to.add_argument("user", metavar="USER")
    to.add_argument("--admin", action="store_true", help="make it a hub admin")
    to.add_argument("--instructor", action="store_true", help="also an instructor (the default without --admin)")
    to.set_defaults(func=guard(cmd_take_over))
    de = usub.add_parser("delete", help="delete USER (their servers stop); the home is kept unless --purge")
    de.add_argument("user", metavar="USER")
    de.add_argument("--purge", action="store_true", help="also delete the home volume (also of an already deleted user)")
    de.set_defaults(func=guard(cmd_delete))
    pr = usub.add_parser("prune", help="delete the homes of deleted users and of users inactive for AGE")
    pr.add_argument("--inactive", required=True, metavar="AGE", help="e.g. 30d, 2w, 12h")
    pr.add_argument("--dry-run", action="store_true", help="list the stale homes with their sizes; delete nothing")
    pr.set_defaults(func=guard(cmd_prune))
