"""Which git URLs a course may come from (course_sources): schemes, addresses, allow-list, credentials."""

import pytest

from spawner.courses.sources import (
    GitPolicy,
    SourceRefused,
    address_problem,
    check_git_url,
    parse_git_url,
    scrub,
    strip_credentials,
)


def resolver(table):
    def resolve(host, port):
        if host not in table:
            raise OSError("no such host")
        return table[host]
    return resolve


PUBLIC = resolver({"github.com": ["140.82.121.4"], "gitlab.example.org": ["93.184.216.34", "2606:2800:220:1::1"],
                   "sneaky.example.org": ["93.184.216.34", "10.0.0.5"], "metadata.example": ["169.254.169.254"],
                   "gitlab.internal": ["10.1.2.3"], "mapped.example": ["::ffff:127.0.0.1"]})


@pytest.mark.parametrize("address,kind", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("10.1.2.3", "private"), ("172.17.0.2", "private"), ("192.168.1.1", "private"), ("fd00::1", "private"),
    ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"), ("100.64.0.1", "non-public"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"),
])
def test_non_public_addresses_are_named_by_kind(address, kind):
    assert address_problem(address) == kind


@pytest.mark.parametrize("address", ["140.82.121.4", "93.184.216.34", "2606:2800:220:1::1"])
def test_public_addresses_pass(address):
    assert address_problem(address) is None


def test_https_url_to_a_public_host_is_pinned_to_its_checked_addresses():
    t = check_git_url("https://gitlab.example.org/org/tut.git", GitPolicy(), PUBLIC)
    assert (t.scheme, t.host, t.port) == ("https", "gitlab.example.org", 443)
    assert t.curl_resolve == ["gitlab.example.org:443:93.184.216.34,[2606:2800:220:1::1]"]


@pytest.mark.parametrize("url,needle", [
    ("https://127.0.0.1/x.git", "127.0.0.1 is a loopback address"),
    ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("https://10.0.0.1:8443/x.git", "10.0.0.1 is a private address"),
    ("https://[::1]/x.git", "::1 is a loopback address"),
    ("https://metadata.example/x", "metadata.example resolves to 169.254.169.254, a link-local address"),
    ("https://sneaky.example.org/x", "resolves to 10.0.0.5, a private address"),  # every address is checked
    ("https://mapped.example/x", "a loopback address"),
])
def test_urls_to_private_loopback_or_link_local_addresses_are_refused_naming_the_rule(url, needle):
    with pytest.raises(SourceRefused) as e:
        check_git_url(url, GitPolicy(), PUBLIC)
    assert needle in str(e.value) and "courses.gitAllowedHosts" in str(e.value)


@pytest.mark.parametrize("url,scheme", [
    ("http://github.com/x.git", "http"), ("git://github.com/x.git", "git"), ("ssh://git@github.com/x.git", "ssh"),
    ("git@github.com:org/x.git", "ssh"),
])
def test_only_https_unless_the_config_opens_a_scheme(url, scheme):
    with pytest.raises(SourceRefused, match=f"scheme {scheme} is not allowed \\(allowed: https://\\)"):
        check_git_url(url, GitPolicy(), PUBLIC)
    assert check_git_url(url, GitPolicy(schemes=("https", scheme)), PUBLIC).scheme == scheme


@pytest.mark.parametrize("url", ["file:///srv/stackhub/secrets", "/etc", "ext::sh -c touch% /tmp/x",
                                 "https://", "ftp://github.com/x", "https://github.com/a b"])
def test_what_is_not_a_network_url_is_refused(url):
    with pytest.raises(SourceRefused):
        check_git_url(url, GitPolicy(schemes=("https", "http", "git", "ssh")), PUBLIC)


def test_option_lookalike_is_refused():
    with pytest.raises(SourceRefused, match="needs a URL"):
        check_git_url("--upload-pack=touch /tmp/x", GitPolicy(), PUBLIC)


def test_allow_list_opens_a_host_by_name_or_a_network():
    by_name = check_git_url("https://gitlab.internal/x.git", GitPolicy(allowed_hosts=("GitLab.Internal",)), PUBLIC)
    assert by_name.host == "gitlab.internal" and by_name.curl_resolve == []
    by_net = check_git_url("https://gitlab.internal/x.git", GitPolicy(allowed_hosts=("10.1.0.0/16",)), PUBLIC)
    assert by_net.addresses == ("10.1.2.3",)
    with pytest.raises(SourceRefused, match="private"):
        check_git_url("https://gitlab.internal/x.git", GitPolicy(allowed_hosts=("10.2.0.0/16",)), PUBLIC)


def test_unresolvable_host_is_a_clear_error():
    with pytest.raises(SourceRefused, match="host nowhere.invalid does not resolve"):
        check_git_url("https://nowhere.invalid/x.git", GitPolicy(), PUBLIC)


@pytest.mark.parametrize("url,stripped", [
    ("https://oauth2:glpat-SECRET@gitlab.example.org/org/x.git", "https://gitlab.example.org/org/x.git"),
    ("https://SECRET@github.com/x.git", "https://github.com/x.git"),
    ("https://u:p%40ss@host:8443/x?y=1", "https://host:8443/x?y=1"),
    ("https://github.com/x.git", "https://github.com/x.git"),
    ("git@github.com:org/x.git", "git@github.com:org/x.git"),  # an ssh user, not a secret
    ("uploaded bundle", "uploaded bundle"),
])
def test_credentials_are_stripped_from_urls(url, stripped):
    assert strip_credentials(url) == stripped


def test_scrub_removes_credentials_from_any_text_and_refusals_never_show_them():
    msg = "fatal: unable to access 'https://oauth2:SECRET@gitlab.example.org/x.git/': 403"
    assert scrub(msg) == "fatal: unable to access 'https://gitlab.example.org/x.git/': 403"
    with pytest.raises(SourceRefused) as e:
        check_git_url("http://oauth2:SECRET@github.com/x.git", GitPolicy(), PUBLIC)
    assert "SECRET" not in str(e.value)
    with pytest.raises(SourceRefused) as e:
        check_git_url("https://oauth2:SECRET@10.0.0.1/x.git", GitPolicy(), PUBLIC)
    assert "SECRET" not in str(e.value)


def test_parse_git_url_default_ports():
    assert parse_git_url("https://h/x") == ("https", "h", 443)
    assert parse_git_url("ssh://git@h:2222/x") == ("ssh", "h", 2222)
    assert parse_git_url("me@h:x.git") == ("ssh", "h", 22)
