"""A credential's scope: what one workspace's settings may change only for itself."""

from deepseek_engine.errors import TLSError, UnavailableError
from deepseek_engine.health import HealthBook
from deepseek_engine.retry import RetryPolicy
from deepseek_engine.settings import parse_settings

URL = "http://gpu-1:8000/v1"


def _scope(**creds) -> str:
    return parse_settings({"endpoint_urls": URL, **creds}).scope


def test_a_scope_names_the_credential_without_revealing_it():
    a = _scope(api_key="sk-team-a-123")
    assert a == _scope(api_key="sk-team-a-123") and "sk-team-a" not in a
    assert len({a, _scope(api_key="sk-team-b-456"), _scope(),
                _scope(tls_mode="custom", tls_verify="false", api_key="sk-team-a-123")}) == 4


def test_a_credential_fault_sets_the_endpoint_aside_for_that_credential_alone():
    book = HealthBook()
    a, b = _scope(api_key="key-a"), _scope(api_key="key-b")
    book.failure(URL, "certificate not trusted", severe=True, scope=a, cause=TLSError("x"))
    assert book.all_down(parse_settings({"endpoint_urls": URL}).endpoints, a)
    assert not book.all_down(parse_settings({"endpoint_urls": URL}).endpoints, b)
    book.failure(URL, "503", severe=True, cause=UnavailableError("y"))  # the server's: everyone's
    assert book.all_down(parse_settings({"endpoint_urls": URL}).endpoints, b)


def test_one_credentials_retries_never_spend_anothers_budget():
    policy = RetryPolicy()
    a, b = policy.scoped("a"), policy.scoped("b")
    assert policy.scoped("a") is a
    while a.budget.try_spend():
        pass
    assert b.budget.try_spend()
