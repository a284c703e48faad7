"""``stackhub``: the operator's command line (``make up`` / ``down`` / ``token`` call it).

Subcommands: ``up``, ``down``, ``token``, ``check``, ``schema``, ``images`` (stack and hub images);
the admins' ``tags``, ``session``, ``start``, ``prewarm`` and ``audit`` (see ``cli_sessions``);
the instructors' ``course publish|list|remove|sync`` (see ``cli_courses``); the operator's ``backup``,
``restore`` and ``users reset-password|delete|prune`` (see ``cli_ops``).
Errors end in one line on stderr and exit status 2; nothing is printed that holds a secret except
what the command is for (``token`` prints the admin token, ``up`` the shared tutorial password).
"""

from __future__ import annotations

import argparse
import json
import sys

from spawner.cli.client import config_file, host_paths
from spawner.core.config import ConfigError, json_schema, load_config
from spawner.core.names import SESSIONS_SERVICE



def _docker():
    import docker

    return docker.from_env()


def with_backend(cfg, backend: str | None, paths):
    """``--backend NAME``: the config with that backend, written (0600) to the state directory so the
    hub reads the very same config by its one route (the file); without it, the config as loaded."""
    if not backend or backend == cfg.spawner.backend.type:
        return cfg, config_file()
    import yaml

    from spawner.core.config import StackhubConfig
    from spawner.deploy.tls import write_private

    data = cfg.model_dump(mode="json", by_alias=True, exclude_unset=True)
    data.setdefault("spawner", {})["backend"] = {"type": backend}
    cfg = StackhubConfig.model_validate(data)
    path = paths.root / "stackhub.effective.yaml"
    paths.root.mkdir(parents=True, exist_ok=True)
    write_private(path, yaml.safe_dump(data, sort_keys=False).encode())
    return cfg, path


def cmd_up(args) -> int:
    from spawner.hub.auth import hub_environment
    from spawner.deploy.swarm import deployment_for

    paths = host_paths()
    cfg, config = with_backend(load_config(), args.backend, paths)
    environment = hub_environment(cfg)  # the OAuth client secret; a missing one stops here
    dep = deployment_for(cfg)(client=_docker(), cfg=cfg, paths=paths, config_file=config)
    tls = dep.up(environment=environment)
    from spawner.cli.courses import publish_shipped

    publish_shipped(cfg, paths.root)
    port = cfg.hub.port_suffix
    print()
    print(f"url: https://{cfg.hub.public_host}{port}/")
    if cfg.auth.type == "shared-password":
        password_file = cfg.auth.password_file or paths.secrets / "shared-password"
        print("user: a free name of one's own, claimed at the first login with the room code and a password "
              "of one's own (admins: " + ", ".join(cfg.hub.admin_users) + ", with the admin password)")
        print(f"room-code: {password_file.read_text().strip()}")
        print(f"admin-password-file: {paths.secrets / 'admin-password'}")
        print("reset a user's password: stackhub users reset-password NAME")
    else:
        print(f"login: {cfg.auth.type} (OAuth)")
    print(f"ca: {tls.ca if tls.ca else '(operator certificate ' + str(tls.cert) + ')'}")
    print(origins_line(cfg))
    print(f"token: {paths.secrets / 'admin-token'} (or `make token`)")
    print(f"admins: https://{cfg.hub.public_host}{port}/services/{SESSIONS_SERVICE}/ "
          "(stack tags, sessions, pre-warm; docs/sessions.md)")
    print(f"logs: {dep.logs_command} {dep.own.hub}; {dep.logs_command} {dep.own.proxy}")
    return 0


def origins_line(cfg) -> str:
    """What `up` says of the user servers' origins: in subdomain mode, what the site must provide."""
    hub = cfg.hub
    if not hub.subdomains:
        port = hub.port_suffix
        return (f"servers: https://{hub.public_host}{port}/user/<name>/ on the hub's origin (hub.subdomains: false; "
                "docs/security.md says what helpers must not open)")
    domain, port = hub.user_domain, hub.port_suffix
    dns = ("browsers resolve it by themselves" if domain.endswith("localhost")
           else f"the site needs a wildcard DNS record *.{domain} pointing here")
    return (f"servers: each user's own origin, https://<name>.{domain}{port}/ ({dns}; the certificate must hold "
            f"*.{domain}, as the generated one does)")


def cmd_down(args) -> int:
    from spawner.deploy.swarm import deployment_for

    paths = host_paths()
    cfg, config = with_backend(load_config(), args.backend, paths)
    deployment_for(cfg)(client=_docker(), cfg=cfg, paths=paths, config_file=config).down()
    return 0


def cmd_token(args) -> int:
    path = host_paths().secrets / "admin-token"
    if not path.exists():
        raise SystemExit(f"stackhub: no admin token at {path}; run `make up` first")
    print(path.read_text().strip())
    return 0


def cmd_schema(args) -> int:
    if args.helm:
        from spawner.deploy.helm import schema_text

        sys.stdout.write(schema_text())
        return 0
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


def cmd_check(args) -> int:
    cfg = load_config(args.file)
    print(f"{args.file or '(defaults)'}: valid; backend {cfg.spawner.backend.type}, auth {cfg.auth.type}")
    return 0


def cmd_images(args) -> int:
    from spawner.build import images

    return images.main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stackhub", description="Run and operate a stackhub deployment.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, func, text in (("up", cmd_up, "start (or restart) hub and proxy; print URL, login and CA"),
                             ("down", cmd_down, "stop hub, proxy and user servers; keep homes and hub state")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--backend", choices=["docker", "swarm"],
                         help="run on this backend instead of spawner.backend of the config (swarm: Swarm services)")
        cmd.set_defaults(func=func)
    sub.add_parser("token", help="print the admin API token").set_defaults(func=cmd_token)
    schema = sub.add_parser("schema", help="print the config's JSON schema")
    schema.add_argument("--helm", action="store_true",
                        help="the Helm chart's values.schema.json (the config plus the chart's own section)")
    schema.set_defaults(func=cmd_schema)
    check = sub.add_parser("check", help="validate a stackhub.yaml")
    check.add_argument("file", nargs="?")
    check.set_defaults(func=cmd_check)
    img = sub.add_parser("images", help="build stack and hub images (see images/README.md)", add_help=False)
    img.add_argument("rest", nargs=argparse.REMAINDER)
    img.set_defaults(func=cmd_images)
    from spawner.cli import courses as cli_courses
    from spawner.cli import ops as cli_ops
    from spawner.cli import sessions as cli_sessions

    cli_sessions.register(sub)
    cli_courses.register(sub)
    cli_ops.register(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"stackhub: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # deployment failures: the message says what and where to look
        print(f"stackhub: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
