"""Courses end to end (issue 5): the hub's course service, the real engine, real git.

Instructors publish with the ``stackhub course`` CLI (a local git repository, sent as a bundle) and
the REST API; attendees' servers get the notebooks at spawn and on "sync now"; edits survive.
"""

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from .hubfixture import OWN, container_name

REPO_ROOT = Path(__file__).resolve().parents[2]
COURSE_API = "services/stackhub-courses/api"


def nb(text: str) -> str:
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                       "cells": [{"cell_type": "markdown", "metadata": {}, "id": "c0", "source": [text]}]})


def git(repo, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "Instructor", "GIT_AUTHOR_EMAIL": "i@example.org",
           "GIT_COMMITTER_NAME": "Instructor", "GIT_COMMITTER_EMAIL": "i@example.org"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.strip()


def course_api(hub, method, path, token=None, **kw):
    headers = {"Authorization": f"token {token or hub.token}", **kw.pop("headers", {})}
    return requests.request(method, f"{hub.url}{COURSE_API}/{path}", headers=headers, verify=hub.ca,
                            timeout=180, **kw)


def token_for(hub, name):
    r = hub.api("POST", f"/users/{name}/tokens", json={"note": "course test"})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def make_instructor(hub, name):
    r = hub.api("POST", "/groups/instructors/users", json={"users": [name]})
    assert r.status_code == 200, r.text


def cli(hub, *args, token=None):
    """``stackhub course ...`` against the test deployment (its state dir, CA and config)."""
    env = {**os.environ, "STACKHUB_STATE": str(hub.deployment.paths.root), "STACKHUB_CONFIG": str(hub.config_file)}
    if token:
        env["STACKHUB_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "spawner.cli.main", "course", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def sh(hub, name, cmd):
    code, out = hub.client.containers.get(container_name(name)).exec_run(["bash", "-lc", cmd], user="1000")
    return code, out.decode()


def read(hub, name, rel):
    code, out = sh(hub, name, f"cat ~/notebooks/{rel}")
    return out if code == 0 else None


def wait_course_service(hub, timeout=60):
    """The hub answers before its managed services are routed: wait for the course service."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = course_api(hub, "GET", "courses")
        if r.status_code == 200 and r.headers.get("Content-Type", "").startswith("application/json"):
            return
        time.sleep(0.5)
    raise AssertionError(f"the course service did not answer: {r.status_code} {r.text[:200]}")


@pytest.fixture(autouse=True)
def service_up(hub):
    wait_course_service(hub)


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "tutorial"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "A.ipynb").write_text(nb("A version 1"))
    (r / "B.ipynb").write_text(nb("B version 1"))
    (r / "data").mkdir()
    (r / "data/README.md").write_text("small inputs\n")
    git(r, "add", ".")
    git(r, "commit", "-q", "-m", "v1")
    return r


def test_publish_spawn_edit_update_sync(hub, user, repo):
    course = f"tut-{os.urandom(3).hex()}"
    instructor = user("inst")
    make_instructor(hub, instructor)
    token = token_for(hub, instructor)

    # v1 from a local git repository through the CLI, with the instructor's token
    v1 = git(repo, "rev-parse", "HEAD")
    out = cli(hub, "publish", course, str(repo), "--ref", "main", token=token)
    assert out.returncode == 0, out.stderr
    assert f"{course}: published version {v1[:12]} (3 files)" in out.stdout

    # the first spawn of an attendee has the notebooks before JupyterLab is up
    editor, other = user("att"), user("att")
    hub.spawn(editor)
    assert read(hub, editor, f"{course}/A.ipynb") == nb("A version 1")
    assert read(hub, editor, f"{course}/data/README.md") == "small inputs\n"
    code, out = sh(hub, editor, f"ls -ln ~/notebooks/{course}/A.ipynb")
    assert out.split()[2] == "1000"  # owned by the user, so JupyterLab can save it

    # the attendee edits A; the instructor changes A and B and publishes v2 (REST API, bundle)
    code, _ = sh(hub, editor, f"python3 - <<'EOF'\nimport pathlib\np = pathlib.Path.home() / 'notebooks/{course}/A.ipynb'\n"
                              f"p.write_text({nb('A with my notes')!r})\nEOF")
    assert code == 0
    (repo / "A.ipynb").write_text(nb("A version 2"))
    (repo / "B.ipynb").write_text(nb("B version 2"))
    git(repo, "commit", "-qam", "v2")
    v2 = git(repo, "rev-parse", "HEAD")
    bundle = subprocess.run(["git", "-C", str(repo), "bundle", "create", "-", "HEAD", "--branches"],
                            capture_output=True, check=True).stdout
    r = course_api(hub, "PUT", f"courses/{course}?ref=main&source=laptop", token=token, data=bundle,
                   headers={"Content-Type": "application/x-git-bundle"})
    assert r.status_code == 201, r.text
    assert r.json()["version"] == v2[:12] and r.json()["publisher"] == instructor

    # the second attendee starts after v2 was published: v2 of everything
    hub.spawn(other)
    # "sync now" from the page's API brings v2 into the running server without a restart
    r = course_api(hub, "POST", "sync", token=token, json={"users": [editor, other], "courses": [course]})
    assert r.status_code == 200, r.text
    assert r.json()["synced"] == 2 and r.json()["failed"] == [], r.text
    assert r.json()["users"][editor]["courses"][course]["counts"] == {"beside": 1, "update": 1, "same": 1}

    assert read(hub, editor, f"{course}/B.ipynb") == nb("B version 2")
    assert read(hub, editor, f"{course}/A.ipynb") == nb("A with my notes")
    assert read(hub, editor, f"{course}/A.upstream.ipynb") == nb("A version 2")
    assert "kept your edit of A.ipynb" in read(hub, editor, ".stackhub/sync.log")
    assert read(hub, other, f"{course}/A.ipynb") == nb("A version 2")
    assert read(hub, other, f"{course}/B.ipynb") == nb("B version 2")
    assert read(hub, other, f"{course}/A.upstream.ipynb") is None

    # from the lab: a terminal runs the same sync (nothing new now)
    code, out = sh(hub, editor, "stackhub-course-sync")
    assert code == 0 and f"{course}: version {v2[:12]}: up to date" in out, out
    # nbgitpuller links keep working: the extension is installed and enabled in the image
    code, out = sh(hub, editor, "jupyter server extension list 2>&1")
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)  # the list colours "enabled" and "OK"
    assert re.search(r"^\s*nbgitpuller enabled$", plain, re.M), out  # its own line, not another extension's
    assert re.search(r"^\s*nbgitpuller \S+ OK$", plain, re.M), out  # and it loads

    # the page's data: the published version and how many users have it
    r = course_api(hub, "GET", "courses", token=token)
    assert r.status_code == 200
    info = next(c for c in r.json()["courses"] if c["course"] == course)
    assert info["version"] == v2[:12] and info["users"].get(v2[:12], 0) >= 2
    out = cli(hub, "list", token=token)
    assert out.returncode == 0 and course in out.stdout and v2[:12] in out.stdout

    # the page itself answers an instructor's browser session
    s = hub.session(instructor)
    page = s.get(f"{hub.url}services/stackhub-courses/")
    assert page.status_code == 200 and "Published courses" in page.text

    # restart: the edit is still kept, nothing is re-added
    hub.stop(editor)
    hub.spawn(editor)
    assert read(hub, editor, f"{course}/A.ipynb") == nb("A with my notes")
    for name in (editor, other):
        hub.stop(name)
    assert cli(hub, "remove", course, token=token).returncode == 0


def test_only_instructors_and_admins_may_publish(hub, user, repo):
    plain = user("plain")
    token = token_for(hub, plain)
    r = course_api(hub, "PUT", "courses/nope", token=token, json={"git": "https://example.org/x.git"})
    assert r.status_code == 403, r.text
    assert "instructors" in r.json()["message"]
    assert course_api(hub, "GET", "courses", token=token).status_code == 403
    out = cli(hub, "publish", "nope", str(repo), token=token)
    assert out.returncode == 2 and "403" in out.stderr
    r = requests.get(f"{hub.url}{COURSE_API}/courses", verify=hub.ca, timeout=30)
    assert r.status_code in (401, 403)
    # a browser session of a plain user is refused too
    s = hub.session(plain)
    assert s.get(f"{hub.url}services/stackhub-courses/").status_code == 403
    # the admin token may
    assert course_api(hub, "GET", "courses").status_code == 200


def test_an_instructor_may_not_replace_or_remove_another_instructors_course(hub, user, repo):
    """Courses have owners: kim, an instructor too, gets 403 on ivy's course and nothing changes;
    once ivy shares it with her she may publish it; an admin may remove any."""
    ivy, kim = user("ivy"), user("kim")
    make_instructor(hub, ivy)
    make_instructor(hub, kim)
    ivy_token, kim_token = token_for(hub, ivy), token_for(hub, kim)
    course = f"own-{uuid.uuid4().hex[:4]}"
    out = cli(hub, "publish", course, str(repo), token=ivy_token)
    assert out.returncode == 0, out.stderr
    before = course_api(hub, "GET", "courses").json()["courses"]
    mine = next(c for c in before if c["course"] == course)
    assert mine["owners"] == {"owner": ivy, "shared": []}

    (repo / "A.ipynb").write_text(nb("kim's replacement"))
    git(repo, "commit", "-qam", "kim")
    out = cli(hub, "publish", course, str(repo), token=kim_token)
    assert out.returncode == 2 and "403" in out.stderr and f"belongs to {ivy}" in out.stderr, out.stderr
    r = course_api(hub, "DELETE", f"courses/{course}", token=kim_token)
    assert r.status_code == 403, r.text
    r = course_api(hub, "PUT", f"courses/{course}/owners", token=kim_token, json={"shared": [kim]})
    assert r.status_code == 403, r.text
    after = next(c for c in course_api(hub, "GET", "courses").json()["courses"] if c["course"] == course)
    assert after["version"] == mine["version"] and after["owners"] == mine["owners"]

    out = cli(hub, "share", course, kim, token=ivy_token)
    assert out.returncode == 0 and f"{ivy} ({kim})" in out.stdout, out.stdout + out.stderr
    assert cli(hub, "publish", course, str(repo), token=kim_token).returncode == 0
    assert course_api(hub, "DELETE", f"courses/{course}").status_code == 200  # the admin token


def homes_listing(hub, name):
    """The files of the user's notebooks (not status.json's sync times, which each "sync now" renews)."""
    return sh(hub, name, "find ~/notebooks -type f ! -name status.json 2>/dev/null | sort")[1]


def courses_volume(hub):
    """What the courses volume holds, besides the store's work directory (.staging, emptied after each
    publish, refused or not: its contents are listed, so a leftover there still shows)."""
    ls = hub.client.containers.get(OWN.hub).exec_run(["sh", "-c", "cd /srv/stackhub/courses && ls -A && ls -A .staging 2>/dev/null"])
    return [n for n in ls[1].decode().split() if n != ".staging"]


def test_bad_input_is_a_clear_error_and_writes_nothing(hub, user, repo, tmp_path):
    instructor = user("inst")
    make_instructor(hub, instructor)
    token = token_for(hub, instructor)
    bystander = user("by")
    hub.spawn(bystander)
    # courses other tests of the session published are synced first: what follows must add nothing
    assert course_api(hub, "POST", "sync", token=token, json={"users": [bystander]}).status_code == 200
    before_home, before_volume = homes_listing(hub, bystander), courses_volume(hub)

    def put(name, **kw):
        return course_api(hub, "PUT", "courses/" + requests.utils.quote(name, safe=""), token=token, **kw)

    good = {"json": {"git": "https://127.0.0.1:9/x.git"}}
    for name, needle in (("a/b", "must not contain '/'"), ("a..b", "must not contain '..'"), ("", "needs a name")):
        r = put(name, **good)
        assert r.status_code == 400 and needle in r.json()["message"], (name, r.text)
    # a bare ".." cannot travel in a URL path (clients and the proxy resolve it): the CLI says so first
    for name, needle in (("..", "must not contain '..'"), ("a/b", "must not contain '/'"), ("", "needs a name")):
        out = cli(hub, "publish", name, str(repo), token=token)
        assert out.returncode == 2 and needle in out.stderr, (name, out.stderr)
    r = put("x", json={"git": "https://stackhub-nowhere.invalid/tutorial.git"})
    assert r.status_code == 400 and "cannot fetch the git repository" in r.json()["message"], r.text
    out = cli(hub, "publish", "x", str(repo), "--ref", "no-such-branch", token=token)
    assert out.returncode == 2 and "unknown git ref 'no-such-branch'" in out.stderr and "main" in out.stderr
    os.symlink("/etc/passwd", repo / "passwd.ipynb")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "link out")
    out = cli(hub, "publish", "x", str(repo), token=token)
    assert out.returncode == 2 and "passwd.ipynb is a symlink to /etc/passwd, outside the course" in out.stderr

    r = course_api(hub, "POST", "sync", token=token, json={"users": [bystander]})
    assert r.status_code == 200
    assert homes_listing(hub, bystander) == before_home
    status = sh(hub, bystander, "cat ~/notebooks/.stackhub/status.json 2>/dev/null")[1]
    assert '"x"' not in status, status  # the refused course is nowhere in the user's record either
    assert courses_volume(hub) == before_volume and "x" not in courses_volume(hub)
    hub.stop(bystander)


# --- issue 10: the course service trusts neither users' containers nor course sources -----------

HUB_STATE_SEEN = "/srv/stackhub/state/courses-seen.json"


def hub_exec(hub, cmd):
    code, out = hub.client.containers.get(OWN.hub).exec_run(cmd)
    return code, out.decode(errors="replace")


def hub_logs(hub):
    return hub.client.containers.get(OWN.hub).logs(tail=2000).decode(errors="replace")


def fetch_containers(hub):
    return hub.client.containers.list(all=True, filters={"label": "stackhub.role=course-fetch"})


def test_a_status_json_symlink_to_dev_zero_does_not_hurt_the_service(hub, user):
    victim = user("zero")
    hub.spawn(victim)
    code, out = sh(hub, victim, "mkdir -p ~/notebooks/.stackhub && ln -sf /dev/zero ~/notebooks/.stackhub/status.json")
    assert code == 0, out
    t0 = time.monotonic()
    r = course_api(hub, "GET", "users?refresh=1")
    assert r.status_code == 200, r.text
    assert time.monotonic() - t0 < 30 and victim not in r.json()["users"]
    # a FIFO (a read would block) and a huge regular file are not read either
    sh(hub, victim, "cd ~/notebooks/.stackhub && rm status.json && mkfifo status.json")
    assert course_api(hub, "GET", "users?refresh=1").status_code == 200
    sh(hub, victim, "cd ~/notebooks/.stackhub && rm status.json && head -c 5000000 /dev/zero > status.json")
    r = course_api(hub, "GET", "users?refresh=1")
    assert r.status_code == 200 and victim not in r.json()["users"]
    assert "larger than 64 KiB" in hub_logs(hub)
    assert course_api(hub, "GET", "courses").status_code == 200
    hub.stop(victim)


def test_a_wrong_typed_status_value_is_not_stored_and_courses_still_answer(hub, user):
    liar = user("liar")
    hub.spawn(liar)
    status = json.dumps({"evil": {"version": ["not", "a", "string"]}, "fine": {"version": "v9", "synced": "now"},
                         "../up": {"version": "v1"}})
    code, out = sh(hub, liar, f"mkdir -p ~/notebooks/.stackhub && cat > ~/notebooks/.stackhub/status.json <<'EOF'\n{status}\nEOF")
    assert code == 0, out
    r = course_api(hub, "GET", "users?refresh=1")
    assert r.status_code == 200, r.text
    assert r.json()["users"][liar] == {"fine": {"version": "v9", "synced": "now"}}
    code, stored = hub_exec(hub, ["cat", HUB_STATE_SEEN])
    assert code == 0 and json.loads(stored)[liar] == {"fine": {"version": "v9", "synced": "now"}}
    assert "evil: version: Input should be a valid string; dropped" in hub_logs(hub)
    assert course_api(hub, "GET", "courses").status_code == 200
    hub.stop(liar)


def test_a_publish_with_credentials_in_the_url_stores_and_logs_no_credentials(hub, user, repo):
    instructor = user("inst")
    make_instructor(hub, instructor)
    token = token_for(hub, instructor)
    secret = f"glpat-{os.urandom(8).hex()}"
    course = f"cred-{os.urandom(3).hex()}"
    bundle = subprocess.run(["git", "-C", str(repo), "bundle", "create", "-", "HEAD", "--branches"],
                            capture_output=True, check=True).stdout
    where = requests.utils.quote(f"https://oauth2:{secret}@gitlab.example.org/org/tutorial.git", safe="")
    r = course_api(hub, "PUT", f"courses/{course}?ref=main&source={where}", token=token, data=bundle,
                   headers={"Content-Type": "application/x-git-bundle"})
    assert r.status_code == 201, r.text
    assert r.json()["source"]["location"] == "https://gitlab.example.org/org/tutorial.git"
    # a git URL with a token: refused (the host does not resolve), and the token is nowhere
    r = course_api(hub, "PUT", f"courses/{course}-git", token=token,
                   json={"git": f"https://oauth2:{secret}@stackhub-nowhere.invalid/org/tutorial.git"})
    assert r.status_code == 400 and "https://stackhub-nowhere.invalid/org/tutorial.git" in r.json()["message"]
    assert secret not in r.text
    info = next(c for c in course_api(hub, "GET", "courses", token=token).json()["courses"] if c["course"] == course)
    assert secret not in json.dumps(info)
    code, out = hub_exec(hub, ["grep", "-rl", secret, "/srv/stackhub/courses", "/srv/stackhub/state"])
    assert code == 1 and out == "", out  # grep found nothing
    assert secret not in hub_logs(hub)
    assert cli(hub, "remove", course, token=token).returncode == 0


@pytest.mark.parametrize("url,needle", [
    ("https://127.0.0.1/tutorial.git", "127.0.0.1 is a loopback address"),
    ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("https://10.11.12.13/tutorial.git", "10.11.12.13 is a private address"),
    (f"https://{OWN.hub}:8081/hub/api", "a private address"),  # the hub's own name on its network
    ("http://example.org/tutorial.git", "scheme http is not allowed (allowed: https://)"),
    ("git@github.com:org/tutorial.git", "scheme ssh is not allowed"),
])
def test_git_urls_to_internal_addresses_are_refused_naming_the_rule(hub, url, needle):
    before = courses_volume(hub)
    r = course_api(hub, "PUT", "courses/internal", json={"git": url})
    assert r.status_code == 400 and needle in r.json()["message"], r.text
    assert "courses.git" in r.json()["message"]  # says how an operator opens it
    assert courses_volume(hub) == before and fetch_containers(hub) == []


def test_publishing_leaves_no_fetch_container_behind(hub, repo):
    r = course_api(hub, "PUT", "courses/leftover?source=test", data=subprocess.run(
        ["git", "-C", str(repo), "bundle", "create", "-", "HEAD", "--branches"], capture_output=True, check=True).stdout,
        headers={"Content-Type": "application/x-git-bundle"})
    assert r.status_code == 201, r.text
    assert fetch_containers(hub) == []
    assert course_api(hub, "DELETE", "courses/leftover").status_code == 200


# --- issue 17: what docs/courses.md promises about sources and --restore -----------------------


def published_files(hub, course, version):
    """``path type`` of everything in a published version, as the hub's course volume holds it."""
    base = f"/srv/stackhub/courses/{course}/versions/{version}"
    code, out = hub_exec(hub, ["find", base, "-mindepth", "1", "-printf", "%P %y\n"])
    assert code == 0, out
    return sorted(line for line in out.splitlines() if line)


def published_version(hub, course):
    return next((c["version"] for c in course_api(hub, "GET", "courses").json()["courses"] if c["course"] == course),
                None)


def test_the_cli_warns_about_uncommitted_changes_and_publishes_only_commits(hub, repo):
    course = f"dirty-{os.urandom(3).hex()}"
    head = git(repo, "rev-parse", "HEAD")
    (repo / "A.ipynb").write_text(nb("A not committed"))
    (repo / "new.ipynb").write_text(nb("not even added"))
    out = cli(hub, "publish", course, str(repo))
    assert out.returncode == 0, out.stderr
    assert f"note: {repo.resolve()} has uncommitted changes; only commits are published" in out.stderr
    assert f"{course}: published version {head[:12]} (3 files)" in out.stdout
    assert published_files(hub, course, head[:12]) == ["A.ipynb f", "B.ipynb f", "data d", "data/README.md f"]
    code, text = hub_exec(hub, ["cat", f"/srv/stackhub/courses/{course}/versions/{head[:12]}/A.ipynb"])
    assert code == 0 and text == nb("A version 1")
    # once committed, there is nothing to warn about and the new commit is the version
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "v2")
    out = cli(hub, "publish", course, str(repo))
    assert out.returncode == 0 and "uncommitted" not in out.stderr, out.stderr
    assert f"published version {git(repo, 'rev-parse', 'HEAD')[:12]} (4 files)" in out.stdout
    assert cli(hub, "remove", course).returncode == 0


def test_pycache_is_left_out_and_dangling_and_directory_symlinks_are_refused(hub, tmp_path, repo):
    course = f"links-{os.urandom(3).hex()}"
    d = tmp_path / "folder"
    (d / "lib/__pycache__").mkdir(parents=True)
    (d / "__pycache__").mkdir()
    (d / ".ipynb_checkpoints").mkdir()
    (d / "A.ipynb").write_text(nb("A"))
    (d / "lib/helpers.py").write_text("X = 1\n")
    (d / "lib/__pycache__/helpers.cpython-313.pyc").write_bytes(b"\x00compiled")
    (d / "__pycache__/top.cpython-313.pyc").write_bytes(b"\x00compiled")
    (d / ".ipynb_checkpoints/A-checkpoint.ipynb").write_text(nb("checkpoint"))
    os.symlink("A.ipynb", d / "same-as-A.ipynb")  # a link to a file inside the course becomes a copy
    out = cli(hub, "publish", course, str(d))
    assert out.returncode == 0, out.stderr
    version = published_version(hub, course)
    assert f"{course}: published version {version} (3 files)" in out.stdout
    assert published_files(hub, course, version) == ["A.ipynb f", "lib d", "lib/helpers.py f", "same-as-A.ipynb f"]

    for link, target, needle in [("dangling.ipynb", "missing.ipynb", "dangling.ipynb is a symlink to missing.ipynb, "
                                                                      "which does not exist"),
                                 ("libdir", "lib", "libdir is a symlink to a directory: not supported")]:
        os.symlink(target, d / link)
        out = cli(hub, "publish", course, str(d))
        assert out.returncode == 2 and needle in out.stderr, (link, out.stdout, out.stderr)
        assert published_version(hub, course) == version  # nothing was published
        (d / link).unlink()
    # the same checks hold for a git repository's tree
    os.symlink("missing.ipynb", repo / "dangling.ipynb")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "dangling link")
    out = cli(hub, "publish", course, str(repo))
    assert out.returncode == 2 and "dangling.ipynb is a symlink to missing.ipynb, which does not exist" in out.stderr
    assert published_version(hub, course) == version
    assert fetch_containers(hub) == []
    assert cli(hub, "remove", course).returncode == 0


def test_restore_brings_back_a_deleted_file_once_per_publication(hub, user, tmp_path):
    course = f"rst-{os.urandom(3).hex()}"
    d = tmp_path / "course"
    d.mkdir()
    (d / "A.ipynb").write_text(nb("A 1"))
    (d / "B.ipynb").write_text(nb("B 1"))
    assert cli(hub, "publish", course, str(d)).returncode == 0
    attendee = user("rst")
    hub.spawn(attendee)

    def sync():
        r = course_api(hub, "POST", "sync", json={"users": [attendee], "courses": [course]})
        assert r.status_code == 200 and r.json()["synced"] == 1, r.text

    assert read(hub, attendee, f"{course}/B.ipynb") == nb("B 1")
    assert sh(hub, attendee, f"rm ~/notebooks/{course}/B.ipynb")[0] == 0
    # an update without --restore: the deletion stands
    (d / "A.ipynb").write_text(nb("A 2"))
    out = cli(hub, "publish", course, str(d))
    assert out.returncode == 0 and "restoring" not in out.stdout, out.stdout + out.stderr
    sync()
    assert read(hub, attendee, f"{course}/A.ipynb") == nb("A 2") and read(hub, attendee, f"{course}/B.ipynb") is None
    # with --restore it comes back, once
    (d / "A.ipynb").write_text(nb("A 3"))
    out = cli(hub, "publish", course, str(d), "--restore")
    assert out.returncode == 0 and "restoring deleted files" in out.stdout, out.stdout + out.stderr
    sync()
    assert read(hub, attendee, f"{course}/B.ipynb") == nb("B 1")
    assert sh(hub, attendee, f"rm ~/notebooks/{course}/B.ipynb")[0] == 0
    sync()
    assert read(hub, attendee, f"{course}/B.ipynb") is None  # that publication's restore is spent
    hub.stop(attendee)
    assert cli(hub, "remove", course).returncode == 0
