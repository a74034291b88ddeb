"""Pure parts of the gateway edge: client addresses, the rate limiter, Host/Origin rules, body caps."""
from __future__ import annotations

from omniserve.config import GatewaySettings
from omniserve.gateway.auth import HostPolicy, host_name
from omniserve.gateway.edge import BodyLimits, RateLimiter, client_ip, rate_key


def scope(peer: str, xff: str | None = None) -> dict:
    headers = [(b"x-forwarded-for", xff.encode())] if xff is not None else []
    return {"type": "http", "client": (peer, 5000), "headers": headers}


def test_client_ip_believes_forwarded_for_only_from_trusted_proxies():
    assert client_ip(scope("198.51.100.4", "1.2.3.4"), []) == "198.51.100.4"
    assert client_ip(scope("198.51.100.4", "1.2.3.4"), ["10.0.0.0/8"]) == "198.51.100.4"
    assert client_ip(scope("10.0.0.2", "1.2.3.4"), ["10.0.0.0/8"]) == "1.2.3.4"
    # a client's own X-Forwarded-For entries are to the left of what our proxies appended
    assert client_ip(scope("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.9"), ["10.0.0.0/8"]) == "1.2.3.4"
    assert client_ip(scope("10.0.0.2", "garbage, 10.0.0.9"), ["10.0.0.0/8"]) == "10.0.0.9"
    assert client_ip(scope("10.0.0.2"), ["10.0.0.0/8"]) == "10.0.0.2"
    assert client_ip(scope("::ffff:127.0.0.1", "2001:db8::1"), ["127.0.0.1"]) == "2001:db8::1"
    assert client_ip({"type": "http", "headers": []}, []) == ""


def test_rate_key_groups_ipv6_by_64():
    assert rate_key("2001:db8:1:2:aaaa::1") == rate_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert rate_key("2001:db8:1:3::1") != rate_key("2001:db8:1:2::1")
    assert rate_key("192.0.2.1") == "192.0.2.1"


def test_rate_limiter_bucket_refills_and_stays_bounded():
    lim = RateLimiter(3, 3600.0, max_keys=2)
    assert [lim.allow("a", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert 1190 < lim.retry_after_s("a", now=0.0) <= 1200
    assert not lim.allow("a", now=1100.0) and lim.allow("a", now=1201.0)
    assert lim.allow("b", now=0.0) and lim.allow("c", now=0.0)
    assert len(lim._buckets) == 2                      # the least recently seen key was forgotten
    assert not RateLimiter(0, 60.0).allow("x", now=0.0)


def test_host_names_parsed_strictly():
    assert host_name("LocalHost:8006") == "localhost"
    assert host_name("[::1]:8006") == "::1"
    assert host_name("example.com.") == "example.com"
    for bad in (None, "", "a:b", "[::1", "[zz]:80", "evil.example:80:80", "a/b", "x@y", "h:1234567"):
        assert host_name(bad) is None, bad


def test_host_allow_list_and_origin_rule():
    p = HostPolicy(["gw.example.com", "https://other.example:8443"], ["https://app.partner.example"], own_name="box")
    for ok in ("localhost", "localhost:8006", "127.0.0.1:1", "[::1]:8006", "box:8006", "gw.example.com",
               "GW.example.com:443", "other.example"):
        assert p.host_allowed(ok), ok
    for bad in (None, "evil.example", "gw.example.com.evil.example", "127.0.0.2", "10.0.0.5:8006"):
        assert not p.host_allowed(bad), bad
    assert p.origin_allowed(None)                       # not a browser
    for ok in ("http://localhost:8006", "https://gw.example.com", "https://app.partner.example"):
        assert p.origin_allowed(ok), ok
    for bad in ("null", "", "http://evil.example", "https://app.partner.example.evil", "file://", "ws://evil.example"):
        assert not p.origin_allowed(bad), bad
    # the old rule "Origin equals Host" no longer lets a rebinding page in
    assert not HostPolicy([], [], own_name="").origin_allowed("http://evil.example:8006")  # Host is not consulted
    assert HostPolicy([], [], own_name="").origin_allowed("http://localhost:8006")
    assert HostPolicy(["gw.example.com"], [], own_name="").origin_allowed("https://gw.example.com")


def test_body_caps_by_route_class():
    s = GatewaySettings()
    caps = BodyLimits.of(s)
    assert caps.cap_for("PUT", "/api/admin/apps/omni") == s.edge.max_admin_body_bytes
    assert caps.cap_for("GET", "/api/admin/apps") == s.edge.max_admin_body_bytes
    assert caps.cap_for("PUT", "/api/config/eta") == s.edge.max_admin_body_bytes
    assert caps.cap_for("POST", "/api/workers/register") == s.edge.max_admin_body_bytes
    assert caps.cap_for("DELETE", "/api/queue/tk_1") == s.edge.max_admin_body_bytes
    assert caps.cap_for("POST", "/api/assets/ref_audio") > s.max_ref_audio_bytes      # base64 in JSON
    assert caps.cap_for("POST", "/api/sessions/abc/upload-recording") == s.max_upload_recording_bytes
    assert caps.cap_for("POST", "/api/sessions/abc/comment") == s.edge.max_body_bytes
    assert caps.cap_for("POST", "/api/sessions/a/b/upload-recording") == s.edge.max_body_bytes
