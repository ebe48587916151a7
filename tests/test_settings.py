"""BUD_ENV=production refuses the dev stack's well-known secrets; `dev` keeps them as defaults and takes the dev
stack's generated PostgreSQL and Redis passwords from the state folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from core.settings import DevSecretsInProduction, Settings

ROOT = Path(__file__).resolve().parent.parent
SECRET_VARIABLES = ("BUD_DATABASE_URL", "BUD_S3_ACCESS_KEY", "BUD_S3_SECRET_KEY", "BUD_REDIS_URL")
PRODUCTION_REDIS = "redis://:redis-password@redis.internal:6379/0"


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The process environment as the API and workers read it, without whatever BUD_* the test run inherited, and
    a state folder of its own (a checkout's .bud/ may hold the dev stack's passwords)."""
    for name in ("BUD_ENV", "BUD_SECRET_KEY", *SECRET_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BUD_STATE_DIR", str(tmp_path))
    return monkeypatch


def test_dev_starts_with_the_dev_stack_defaults(environment):
    settings = Settings()
    assert settings.env == "dev"
    assert settings.s3_access_key == "budadmin" and settings.database_url == "postgresql://bud@127.0.0.1:55432/bud"
    assert settings.redis_url == "redis://127.0.0.1:56379/0"


def test_dev_takes_the_dev_stack_passwords_from_the_state_folder(environment, tmp_path: Path):
    """What `bud dev up` generated reaches a process started by hand (`python -m api`) without any BUD_* set."""
    (tmp_path / "postgres-password").write_text("pg-generated\n")
    (tmp_path / "redis-password").write_text("redis-generated\n")
    settings = Settings()
    assert settings.database_url == "postgresql://bud:pg-generated@127.0.0.1:55432/bud"
    assert settings.redis_url == "redis://:redis-generated@127.0.0.1:56379/0"
    # A URL with its own password, or to another machine, is left as given.
    environment.setenv("BUD_DATABASE_URL", "postgresql://bud:mine@127.0.0.1:5432/bud")
    environment.setenv("BUD_REDIS_URL", "redis://redis.internal:6379/0")
    settings = Settings()
    assert settings.database_url == "postgresql://bud:mine@127.0.0.1:5432/bud"
    assert settings.redis_url == "redis://redis.internal:6379/0"


def test_production_never_takes_the_dev_stack_passwords(environment, tmp_path: Path):
    (tmp_path / "redis-password").write_text("redis-generated\n")
    environment.setenv("BUD_ENV", "production")
    environment.setenv("BUD_DATABASE_URL", "postgresql://bud:pg-password@db.internal:5432/bud")
    environment.setenv("BUD_S3_ACCESS_KEY", "prod-access")
    environment.setenv("BUD_S3_SECRET_KEY", "prod-secret")
    environment.setenv("BUD_SECRET_KEY", Fernet.generate_key().decode())
    with pytest.raises(DevSecretsInProduction, match="BUD_REDIS_URL"):
        Settings()
    environment.setenv("BUD_REDIS_URL", "redis://redis.internal:6379/0")  # its own server, still no password
    with pytest.raises(DevSecretsInProduction, match="BUD_REDIS_URL"):
        Settings()


def test_production_with_the_defaults_names_every_variable_to_set(environment):
    environment.setenv("BUD_ENV", "production")
    with pytest.raises(DevSecretsInProduction) as refused:
        Settings()
    for variable in SECRET_VARIABLES:
        assert variable in str(refused.value)


def test_production_names_only_what_is_missing_and_never_echoes_a_secret(environment):
    environment.setenv("BUD_ENV", "production")
    environment.setenv("BUD_DATABASE_URL", "postgresql://bud:pg-password-123@db.internal:5432/bud")
    environment.setenv("BUD_S3_SECRET_KEY", "s3-secret-456")
    environment.setenv("BUD_REDIS_URL", "redis://:redis-789@redis.internal:6379/0")
    with pytest.raises(DevSecretsInProduction) as refused:
        Settings()
    message = str(refused.value)
    assert "BUD_S3_ACCESS_KEY" in message
    assert "BUD_DATABASE_URL" not in message and "BUD_S3_SECRET_KEY" not in message and "BUD_REDIS_URL" not in message
    assert "pg-password-123" not in message and "s3-secret-456" not in message and "redis-789" not in message


def test_production_with_its_own_secrets_starts(environment):
    environment.setenv("BUD_ENV", "production")
    environment.setenv("BUD_DATABASE_URL", "postgresql://bud:pg-password@db.internal:5432/bud")
    environment.setenv("BUD_S3_ACCESS_KEY", "prod-access")
    environment.setenv("BUD_S3_SECRET_KEY", "prod-secret")
    environment.setenv("BUD_REDIS_URL", PRODUCTION_REDIS)
    environment.setenv("BUD_SECRET_KEY", Fernet.generate_key().decode())
    settings = Settings()
    assert (settings.env, settings.s3_access_key, settings.s3_secret_key) == ("production", "prod-access", "prod-secret")
    assert settings.redis_url == PRODUCTION_REDIS


def test_the_compose_file_starts_in_production_once_the_operator_gives_the_s3_keys(environment):
    """docker-compose.temporal.yml runs BUD_ENV=production: its settings must pass, with the keys from the shell."""
    compose = yaml.safe_load((ROOT / "docker-compose.temporal.yml").read_text())
    operator = {"BUD_S3_ACCESS_KEY": "operator-access", "BUD_S3_SECRET_KEY": "operator-secret",
                "BUD_REDIS_PASSWORD": "operator-redis", "BUD_SECRET_KEY": Fernet.generate_key().decode()}
    for name, value in compose["services"]["api"]["environment"].items():
        # Compose interpolation: ${NAME:?message} takes NAME from the shell of whoever runs `docker compose up`.
        environment.setenv(name, re.sub(r"\$\{(\w+):\?[^}]*\}", lambda match: operator[match[1]], str(value)))
    settings = Settings()
    assert settings.env == "production" and settings.s3_secret_key == "operator-secret"
    assert settings.redis_url == "redis://:operator-redis@redis:6379/0"
    for service in ("worker-control", "worker-optimizer"):
        assert compose["services"][service]["environment"] == compose["services"]["api"]["environment"]
    # Redis reads its password from the environment into a config file: no command line carries it.
    assert "${BUD_REDIS_PASSWORD" not in " ".join(compose["services"]["redis"]["command"])


def test_production_needs_its_own_key_for_secrets_at_rest(environment):
    environment.setenv("BUD_ENV", "production")
    environment.setenv("BUD_DATABASE_URL", "postgresql://bud:pg-password@db.internal:5432/bud")
    environment.setenv("BUD_S3_ACCESS_KEY", "prod-access")
    environment.setenv("BUD_S3_SECRET_KEY", "prod-secret")
    with pytest.raises(DevSecretsInProduction, match="BUD_SECRET_KEY"):
        Settings()


def test_dev_seals_with_a_key_of_its_own_state_folder(tmp_path):
    settings = Settings(state_dir=tmp_path)
    sealed = settings.secret_box().seal("kubeconfig text")
    assert Settings(state_dir=tmp_path).secret_box().open(sealed) == "kubeconfig text"
    assert (tmp_path / "secret-key").stat().st_mode & 0o077 == 0
