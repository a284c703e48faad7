import re

from spawner.core.names import container_name, escape_name, home_volume_name

DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
TRICKY = ["ann", "Ann", "ANN", "a.b", "a+b", "a_b", "a-b", "jürgen", "jurgen", "Jürgen", "李", "a-2eb", "x--y"]


def test_escaped_names_are_valid_docker_names():
    for user in TRICKY:
        assert DOCKER_NAME.match(container_name(user)), user
        assert DOCKER_NAME.match(home_volume_name(user)), user
        assert DOCKER_NAME.match(container_name(user, "My Server")), user


def test_similar_usernames_never_share_a_container_or_volume():
    assert len({container_name(u) for u in TRICKY}) == len(TRICKY)
    assert len({home_volume_name(u) for u in TRICKY}) == len(TRICKY)


def test_server_names_cannot_forge_another_users_container():
    # user "a" with server "b" vs a user whose escaped name could look like "a--b"
    names = {container_name("a", "b"), container_name("a--b"), container_name("a-", "-b"), container_name("a-2d-2db")}
    assert len(names) == 4


def test_named_servers_share_the_users_home_volume():
    assert home_volume_name("ann") == "stackhub-home-ann"
    assert container_name("ann", "big") != container_name("ann")
    assert escape_name("ann") == "ann"


def test_user_servers_live_in_a_namespace_the_deployment_never_uses():
    from spawner.core.names import Deployment
    from spawner.core.names import COURSES_SERVICE, SESSIONS_SERVICE

    own = Deployment()
    infra = {own.hub, own.proxy, own.proxy_api, COURSES_SERVICE, SESSIONS_SERVICE}
    for user in ("hub", "proxy", "courses", "sessions", "user-hub", "-hub"):
        assert container_name(user) not in infra
        assert container_name(user).startswith("stackhub-user-")
    assert container_name("hub") == "stackhub-user-hub"


def test_a_second_deployment_on_the_engine_shares_no_name_with_the_first():
    from spawner.core.names import Deployment

    live, test = Deployment("stackhub"), Deployment("stackhub-test")
    assert {live.hub, live.proxy, live.proxy_api}.isdisjoint({test.hub, test.proxy, test.proxy_api})
    assert live.server("ann") != test.server("ann") and test.server("ann") == "stackhub-test-user-ann"
    # no user of one can be named into the other's objects
    assert live.server("test-user-ann") != test.server("ann")
    assert live.labels("server")["stackhub.deployment"] != test.labels("server")["stackhub.deployment"]
