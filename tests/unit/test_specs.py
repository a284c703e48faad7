from dataclasses import asdict

from spawner.core.config import StackhubConfig
from spawner.core.options import validate_options
from spawner.core.specs import build_server_spec


def test_server_spec_golden(catalog, golden):
    cfg = StackhubConfig()
    choice = validate_options({"image_tag": "v30_0_0", "size": "medium"}, catalog, cfg.sizes, default_size="small")
    golden("server_spec_jurgen_named", asdict(build_server_spec(cfg, "Jürgen.M", "big-run", choice)))


def test_home_is_shared_by_named_servers_and_data_is_read_only(catalog):
    cfg = StackhubConfig()
    choice = validate_options({}, catalog, cfg.sizes, default_size="small")
    a = build_server_spec(cfg, "ann", "", choice)
    b = build_server_spec(cfg, "ann", "two", choice)
    assert a.home_volume == b.home_volume and a.name != b.name
    home, data, courses = a.mounts
    assert (home.target, home.read_only) == ("/home", False)
    assert (data.target, data.read_only, data.type) == ("/data", True, "volume")
    assert (courses.source, courses.target, courses.read_only) == ("stackhub-courses", "/opt/stackhub/courses", True)
    assert a.environment["HOME"] == "/home/ann"


def test_courses_can_be_turned_off_or_kept_from_start(catalog):
    choice = validate_options({}, catalog, StackhubConfig().sizes, default_size="small")
    off = build_server_spec(StackhubConfig.model_validate({"courses": {"enabled": False}}), "ann", "", choice)
    assert [m.target for m in off.mounts] == ["/home", "/data"] and "STACKHUB_COURSES" not in off.environment
    lazy = build_server_spec(StackhubConfig.model_validate({"courses": {"syncOnSpawn": False}}), "ann", "", choice)
    assert lazy.environment["STACKHUB_COURSE_SYNC_ON_START"] == "0"


def test_docker_objects_for_a_user_golden(catalog, golden):
    """What Docker is asked for, for one user's named server (tutorial defaults)."""
    from spawner.backends.docker.objects import spawner_traits

    cfg = StackhubConfig()
    choice = validate_options({"image_tag": "w_2026_43", "size": "small"}, catalog, cfg.sizes, default_size="small")
    golden("docker_server_ada_named", spawner_traits(build_server_spec(cfg, "ada", "big-run", choice)))


def test_hub_and_proxy_containers_golden(golden, tmp_path):
    from spawner.core.config import StackhubConfig as Cfg
    from spawner.deploy.single_host import HostPaths, hub_container, proxy_container
    from spawner.deploy.tls import TLSFiles

    root = tmp_path / "state"
    paths = HostPaths(root)
    tls = TLSFiles(root / "tls/ca.pem", root / "tls/server.pem", root / "tls/server-key.pem")
    built = {"hub": hub_container(Cfg(), paths, None, {"STACKHUB_OAUTH_CLIENT_SECRET_FILE": "/srv/stackhub/secrets/env-x"}),
             "proxy": proxy_container(Cfg(), paths, tls)}
    golden("deploy_hub_and_proxy", json_safe(built, {str(root): "<state>"}))


def test_apply_config_on_a_plain_config_golden(golden, tmp_path):
    from traitlets.config import Config

    from spawner.hub.apply import TUTORIAL_TEMPLATES, HubPaths, apply_config

    for name in ("proxy-token", "admin-token", "shared-password", "admin-password"):
        (tmp_path / name).write_text(f"{name}-value\n")
    c = apply_config(Config(), StackhubConfig(), HubPaths(state=tmp_path, secrets=tmp_path))
    import sys

    golden("apply_config_defaults", json_safe(c, {str(tmp_path): "<state>", sys.executable: "<python>",
                                                  TUTORIAL_TEMPLATES: "<templates>"}))


def json_safe(value, replace: dict):
    """Plain JSON of built objects: classes by dotted name, other objects by type, paths made stable."""
    import json

    def default(o):
        if isinstance(o, type):
            return f"{o.__module__}.{o.__qualname__}"
        if hasattr(o, "items"):
            return dict(o.items())
        if isinstance(o, (set, frozenset)):
            return sorted(o, key=str)
        return f"<{type(o).__module__}.{type(o).__qualname__}>"

    text = json.dumps(value, default=default, sort_keys=True)
    for old, new in replace.items():
        text = text.replace(old, new)
    return json.loads(text)


def test_python_cpu_count_follows_the_size_rounded_up(catalog):
    """dask's LocalCluster() sizes itself from os.process_cpu_count(): PYTHON_CPU_COUNT carries the
    chosen size into the server (whole CPUs, at least one)."""
    from spawner.core.config import Size
    from spawner.core.specs import cpu_count

    assert [cpu_count(c) for c in (0.25, 1, 1.5, 2, 4)] == [1, 1, 2, 2, 4]
    cfg = StackhubConfig.model_validate({"sizes": [Size(name="tiny", cpu=0.5, memory="1G").model_dump(),
                                                   Size(name="big", cpu=3, memory="6G").model_dump()],
                                         "stack": {"defaultSize": "tiny"}})
    for size, want in (("tiny", "1"), ("big", "3")):
        choice = validate_options({"size": size}, catalog, cfg.sizes, default_size="tiny")
        assert build_server_spec(cfg, "ann", "", choice).environment["PYTHON_CPU_COUNT"] == want


def test_servers_find_dask_gateway_where_the_deployment_runs_one(catalog):
    """Kubernetes with spawner.backend.daskGateway: the client settings, and the server's own image
    as the clusters' default; no gateway (the default, Docker, Swarm): none of them."""
    on = StackhubConfig.model_validate({"hub": {"prefix": "tut"},
                                        "spawner": {"backend": {"type": "kubernetes", "daskGateway": {"enabled": True}}}})
    choice = validate_options({"image_tag": "w_2026_42"}, catalog, on.sizes, default_size="small")
    env = build_server_spec(on, "ann", "", choice).environment
    assert {k: v for k, v in env.items() if k.startswith("DASK_GATEWAY__")} == {
        "DASK_GATEWAY__ADDRESS": "http://tut-dask-gateway-traefik:80/services/dask-gateway",
        "DASK_GATEWAY__PROXY_ADDRESS": "gateway://tut-dask-gateway-traefik:8786",
        "DASK_GATEWAY__PUBLIC_ADDRESS": "/services/dask-gateway/",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
        "DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE": choice.entry.image,
    }
    assert choice.entry.image.endswith(":w_2026_42")
    for cfg in (StackhubConfig(), StackhubConfig.model_validate({"spawner": {"backend": {"type": "kubernetes"}}})):
        assert not [k for k in build_server_spec(cfg, "ann", "", choice).environment if k.startswith("DASK_GATEWAY")]
