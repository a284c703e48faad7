import docker
import pytest

from .hubfixture import remove_user_objects, start_hub

TEST_USERS = set()


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.engine)


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"no Docker engine answers ({e}); run scripts/docker-engine.sh")
    return client


@pytest.fixture(scope="session")
def k8s_node():
    """The single-node Kubernetes (scripts/k8s-node.sh) for the session's `k8s` tests: up once,
    down at the end if it was down before; yields the environment for kubectl and helm."""
    from .k8snode import node_up

    yield from node_up()


@pytest.fixture(scope="session")
def stack_tags(docker_client):
    """The stack tags built on this engine, newest weekly first (at least two needed)."""
    from spawner.core.catalog import catalog_from_images

    cat = catalog_from_images(docker_client.api.images(name="stackhub/lsst-stack"), "stackhub/lsst-stack",
                              recommended=None)
    names = [n for n in cat.names() if not n.startswith("exp_")]  # tests make exp_ tags of their own
    if len(names) < 3:  # the session tests lock, hide and recommend three different tags
        pytest.fail(f"need at least three stack images, found {names}: run `make images`")
    return names


@pytest.fixture(scope="session", autouse=True)
def bystander(tmp_path_factory, docker_client, stack_tags, request):
    """A deployment beside the test one (as a tutorial's `make up` would be): the whole session must
    leave it exactly as it was (tests/integration/bystander.py). A session of Kubernetes tests
    only (-m k8s) deploys nothing on Docker: no bystander, and no wait for the deployment lock."""
    if request.session.items and all(i.get_closest_marker("k8s") for i in request.session.items):
        yield None
        return
    from .bystander import remove_bystander, start_bystander
    from .hubfixture import checkout_hub_image, hold_deployment_lock

    hold_deployment_lock()
    b = start_bystander(docker_client, tmp_path_factory.mktemp("bystander"), checkout_hub_image(docker_client),
                        stack_tags[0])
    before = b.snapshot()
    yield b
    try:
        after = b.snapshot()
        assert after == before, f"the test session changed the deployment beside it:\n{before}\n{after}"
        assert b.server_answers(), "the bystander's user server no longer answers through its proxy"
    finally:
        remove_bystander(b)


@pytest.fixture(scope="session")
def hub(tmp_path_factory, docker_client, stack_tags, request):
    h = start_hub(tmp_path_factory.mktemp("hub"))
    yield h
    h.dump_logs("session")
    h.deployment.down()
    remove_user_objects(docker_client, TEST_USERS)


@pytest.fixture(scope="module", autouse=True)
def _hub_is_default_at_module_start(request):
    """Modules that reconfigure the session's hub restore it; if one failed to, the next module
    starts from the test default again instead of failing for a reason of another module's."""
    if "hub" not in request.fixturenames:
        yield
        return
    import yaml

    from .hubfixture import TEST_CONFIG

    hub = request.getfixturevalue("hub")
    if yaml.safe_load(hub.config_file.read_text()) != TEST_CONFIG or hub.api("GET", "/").status_code != 200:
        hub.reconfigure()
    yield


@pytest.fixture
def user(hub):
    """A fresh test user name per test (registered for cleanup)."""
    import uuid

    def make(base="t"):
        name = f"{base}-{uuid.uuid4().hex[:6]}"
        TEST_USERS.add(name)
        hub.create_user(name)
        return name
    return make


@pytest.fixture(autouse=True)
def _logs_on_failure(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and "hub" in request.fixturenames:
        request.getfixturevalue("hub").dump_logs(request.node.name)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
