"""The options table: its defaults and validation."""

import ipaddress

import pytest

from smtpd_lite import options

DESIGN_DEFAULTS = {
    "max_size": 33554432, "max_recipients": 100, "request_queue_size": 1024,
    "max_line_length": 1000, "timeout": 300, "max_errors": 10, "bare_eol": "reject",
    "strict_addresses": True,
    "received_header": True, "reverse_dns": False, "log_protocol": False, "lmtp": False,
    "data_as_file": False, "spool_threshold": 1048576,
}


def test_defaults_match_the_design():
    settings = options.resolve({})
    for name, default in DESIGN_DEFAULTS.items():
        assert getattr(settings, name) == default, name


def test_every_option_is_documented():
    for option in options.OPTIONS:
        assert option.doc and option.doc.endswith("."), option.name


def test_every_row_is_an_attribute_of_settings_for_type_checkers():
    settings = options.resolve({})
    for option in options.OPTIONS:
        assert getattr(options.Settings, option.name) is option
        assert getattr(settings, option.name) == option.kind.check(option.name, option.default)


def test_trusted_proxies_are_parsed_once_into_networks():
    settings = options.resolve({"trusted_proxies": ["10.1.2.3/8", "2001:db8::1"]})
    assert settings.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),
                                        ipaddress.ip_network("2001:db8::1/128"))


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="max_sise"):
        options.resolve({"max_sise": 10})


@pytest.mark.parametrize("name, value", [
    ("max_size", -1), ("max_size", "10"), ("max_size", True), ("timeout", -5),
    ("bare_eol", "fix"), ("received_header", 1), ("rcpt_handler", "not callable"),
])
def test_bad_values_are_refused(name, value):
    with pytest.raises(ValueError, match=name):
        options.resolve({name: value})


@pytest.mark.parametrize("given, message", [
    ({"implicit_tls": True}, "implicit_tls needs tls_context"),
    ({"require_tls": True}, "require_tls needs tls_context"),
    ({"auth_required": True}, "auth_required needs auth_handler"),
    ({"proxy_protocol": True}, "proxy_protocol needs trusted_proxies"),
    ({"auth_handler": lambda *a: True, "auth_mechanisms": ()}, "auth_mechanisms is empty"),
])
def test_options_that_mean_nothing_alone_are_refused(given, message):
    with pytest.raises(ValueError, match=message):
        options.resolve(given)
