"""What the course service keeps from users' containers (course_records): checked before it is stored."""

import json

import pytest

from spawner.courses.records import STATUS_MAX_BYTES, check_courses, check_seen, parse_status


def test_a_good_status_is_kept_as_version_and_synced_only():
    raw = json.dumps({"intro": {"version": "0123456789ab", "publication": "1-x", "synced": "2026-11-27T09:00:00+00:00"}})
    courses, problems = parse_status(raw.encode())
    assert courses == {"intro": {"version": "0123456789ab", "synced": "2026-11-27T09:00:00+00:00"}} and problems == []


@pytest.mark.parametrize("value,needle", [
    ({"version": 5}, "version"),
    ({"version": ["v1"]}, "version"),
    ({"version": {"a": 1}}, "version"),
    ({"version": ""}, "version"),
    ({"version": "v1", "synced": 7}, "synced"),
    ({"version": "x" * 65}, "version"),
    ({"version": "../../etc"}, "version"),
    ("v1", "intro"),
    (None, "intro"),
])
def test_a_wrong_typed_value_is_dropped_with_a_reason_and_the_rest_kept(value, needle):
    courses, problems = check_courses({"intro": value, "other": {"version": "v2"}}, "ann: status.json")
    assert courses == {"other": {"version": "v2", "synced": None}}
    assert len(problems) == 1 and problems[0].startswith("ann: status.json: intro") and needle in problems[0]


def test_a_course_name_that_is_not_one_is_dropped():
    courses, problems = check_courses({"../x": {"version": "v1"}, "": {"version": "v1"}}, "s")
    assert courses == {} and len(problems) == 2


@pytest.mark.parametrize("raw,needle", [
    (b"\0" * (STATUS_MAX_BYTES + 1), "larger than 64 KiB"),
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b"42", "not a JSON object"),
])
def test_a_status_that_is_too_large_or_not_an_object_is_ignored(raw, needle):
    courses, problems = parse_status(raw)
    assert courses == {} and needle in problems[0]


def test_an_empty_read_is_no_status():
    assert parse_status(b"") == ({}, [])
    assert parse_status(None) == ({}, [])


def test_a_stored_seen_file_is_checked_user_by_user():
    data = {"ann": {"intro": {"version": "v1"}}, "bob": {"intro": {"version": 3}}, "cy": "oops", "": {}}
    seen, problems = check_seen(data)
    assert seen == {"ann": {"intro": {"version": "v1", "synced": None}}}
    assert len(problems) == 3


@pytest.mark.parametrize("data", [[], "x", 3, None])
def test_a_stored_seen_file_of_the_wrong_shape_starts_empty(data):
    seen, problems = check_seen(data)
    assert seen == {} and "starting empty" in problems[0]
