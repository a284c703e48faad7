"""Publishing a course from a git URL (docs/courses.md, "Which git URLs"): the hub's fetch container
clones a real git server over smart HTTP (``git http-backend`` behind Python's CGI server, in a
container of the hub image on the fetch network).

The server has a private address and speaks http, which the default config refuses; this module
reconfigures the test hub to allow exactly that address (``courses.gitSchemes``,
``courses.gitAllowedHosts``) and restores the test default afterwards, checking that it did.
"""

import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from .hubfixture import TEST_CONFIG
from .test_courses import course_api, fetch_containers, git, hub_exec, nb, published_files

GIT_PORT = 8000
CGI = """#!/bin/sh
export GIT_PROJECT_ROOT=/gitsrv/git GIT_HTTP_EXPORT_ALL=1
exec git http-backend
"""


def wait_for_courses(hub, timeout=60):
    deadline = time.monotonic() + timeout
    while (r := course_api(hub, "GET", "courses")).status_code != 200 or \
            not r.headers.get("Content-Type", "").startswith("application/json"):
        assert time.monotonic() < deadline, f"the course service did not answer: {r.status_code} {r.text[:200]}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def git_server(hub):
    """(container, work repository, its bare clone on the server, the clone's URL, the server's address).

    The server runs as nobody (Python's CGI server would drop root to nobody for the script anyway), so
    its files live in a world-readable directory of their own, not in pytest's private tmp dir.
    """
    root = Path(tempfile.mkdtemp(prefix="stackhub-test-gitsrv-"))
    root.chmod(0o755)
    (root / "git").mkdir()
    (root / "cgi-bin").mkdir()
    (root / "cgi-bin/git").write_text(CGI)
    (root / "cgi-bin/git").chmod(0o755)
    work = root / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    name = f"stackhub-test-gitsrv-{uuid.uuid4().hex[:6]}"
    network = hub.deployment.cfg.courses.fetch_network  # where the hub's fetch containers clone from
    container = hub.client.containers.run(
        hub.deployment.cfg.hub.image, ["-m", "http.server", "--cgi", "--directory", "/gitsrv", str(GIT_PORT)],
        entrypoint=["python3"], name=name, detach=True, user="65534:65534",
        environment={"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"},
        volumes={str(root): {"bind": "/gitsrv", "mode": "ro"}}, network=network, labels={"stackhub.test": "git-server"})
    try:
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        assert ip, container.attrs["NetworkSettings"]
        yield container, work, root / "git/course.git", f"http://{ip}:{GIT_PORT}/cgi-bin/git/course.git", ip
    finally:
        container.remove(force=True)
        shutil.rmtree(root)


@pytest.fixture(scope="module")
def allowed(hub, git_server):
    """The test hub, allowed to clone over http from the git server's address only."""
    *_, url, ip = git_server
    wait_for_courses(hub)
    # the test default refuses the URL, naming the key that opens it
    r = course_api(hub, "PUT", "courses/refused", json={"git": url})
    assert r.status_code == 400 and "scheme http is not allowed" in r.json()["message"], r.text
    hub.reconfigure({"courses": {**TEST_CONFIG["courses"], "gitSchemes": ["https", "http"],
                                 "gitAllowedHosts": [f"{ip}/32"]}})
    try:
        wait_for_courses(hub)
        yield
    finally:
        hub.reconfigure()
        wait_for_courses(hub)
        r = course_api(hub, "PUT", "courses/refused", json={"git": url})
        assert r.status_code == 400 and "scheme http is not allowed" in r.json()["message"], \
            f"the test default is not back: {r.text}"


def push(work, bare):
    """Make the server's bare repository a copy of ``work`` (branches and tags)."""
    if not bare.exists():
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    git(work, "push", "-q", "--force", "--tags", str(bare), "main")


def test_a_course_is_published_from_a_git_url_and_only_the_allowed_private_address_is_cloned(hub, git_server, allowed):
    _, work, bare, url, ip = git_server
    (work / "A.ipynb").write_text(nb("A version 1"))
    (work / "lesson").mkdir()
    (work / "lesson/B.ipynb").write_text(nb("B version 1"))
    (work / "lesson/__pycache__").mkdir()
    (work / "lesson/__pycache__/helpers.cpython-313.pyc").write_bytes(b"\x00compiled")
    (work / ".ipynb_checkpoints").mkdir()
    (work / ".ipynb_checkpoints/A-checkpoint.ipynb").write_text(nb("checkpoint"))
    git(work, "add", "-f", ".")
    git(work, "commit", "-q", "-m", "v1")
    git(work, "tag", "v1")
    v1 = git(work, "rev-parse", "HEAD")
    (work / "A.ipynb").write_text(nb("A version 2"))
    git(work, "commit", "-qam", "v2")
    v2 = git(work, "rev-parse", "HEAD")
    push(work, bare)
    course = f"git-{uuid.uuid4().hex[:6]}"

    r = course_api(hub, "PUT", f"courses/{course}", json={"git": url, "ref": "main"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["version"] == v2[:12] and body["source"]["location"] == url, body
    # __pycache__ and .ipynb_checkpoints, committed on purpose here, are never published
    assert body["files"] == 2, body
    assert published_files(hub, course, v2[:12]) == ["A.ipynb f", "lesson d", "lesson/B.ipynb f"]
    code, out = hub_exec(hub, ["cat", f"/srv/stackhub/courses/{course}/versions/{v2[:12]}/A.ipynb"])
    assert code == 0 and out == nb("A version 2"), out
    # a tag of the same URL is its commit
    r = course_api(hub, "PUT", f"courses/{course}", json={"git": url, "ref": "v1"})
    assert r.status_code == 201 and r.json()["version"] == v1[:12], r.text
    info = next(c for c in course_api(hub, "GET", "courses").json()["courses"] if c["course"] == course)
    assert info["version"] == v1[:12]
    # the allow-list names one address: another private one is still refused, and nothing is fetched
    r = course_api(hub, "PUT", f"courses/{course}", json={"git": "http://10.11.12.13/course.git"})
    assert r.status_code == 400 and "10.11.12.13 is a private address" in r.json()["message"], r.text
    assert fetch_containers(hub) == []
    assert course_api(hub, "DELETE", f"courses/{course}").status_code == 200


def test_an_unknown_ref_of_a_git_url_is_a_clear_400(hub, git_server, allowed):
    _, work, bare, url, _ = git_server
    if not bare.exists():  # this test alone: give the server a repository
        (work / "A.ipynb").write_text(nb("A"))
        git(work, "add", ".")
        git(work, "commit", "-q", "-m", "one")
        push(work, bare)
    r = course_api(hub, "PUT", "courses/no-such-ref", json={"git": url, "ref": "no-such-branch"})
    assert r.status_code == 400 and "unknown git ref 'no-such-branch'" in r.json()["message"], r.text
    assert "no-such-ref" not in [c["course"] for c in course_api(hub, "GET", "courses").json()["courses"]]
