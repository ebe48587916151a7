"""BUD_ENV=production refuses the dev stack's well-known secrets; `dev` keeps them as defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from core.settings import DevSecretsInProduction, Settings

ROOT = Path(__file__).resolve().parent.parent
SECRET_VARIABLES = ("BUD_DATABASE_URL", "BUD_S3_ACCESS_KEY", "BUD_S3_SECRET_KEY")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch):
    """The process environment as the API and workers read it, without whatever BUD_* the test run inherited."""
    for name in ("BUD_ENV", *SECRET_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_dev_starts_with_the_dev_stack_defaults(environment):
    settings = Settings()
    assert settings.env == "dev"
    assert settings.s3_access_key == "budadmin" and settings.database_url.startswith("postgresql://bud@127.0.0.1")


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
    with pytest.raises(DevSecretsInProduction) as refused:
        Settings()
    message = str(refused.value)
    assert "BUD_S3_ACCESS_KEY" in message
    assert "BUD_DATABASE_URL" not in message and "BUD_S3_SECRET_KEY" not in message
    assert "pg-password-123" not in message and "s3-secret-456" not in message


def test_production_with_its_own_secrets_starts(environment):
    environment.setenv("BUD_ENV", "production")
    environment.setenv("BUD_DATABASE_URL", "postgresql://bud:pg-password@db.internal:5432/bud")
    environment.setenv("BUD_S3_ACCESS_KEY", "prod-access")
    environment.setenv("BUD_S3_SECRET_KEY", "prod-secret")
    environment.setenv("BUD_SECRET_KEY", Fernet.generate_key().decode())
    settings = Settings()
    assert (settings.env, settings.s3_access_key, settings.s3_secret_key) == ("production", "prod-access", "prod-secret")


def test_the_compose_file_starts_in_production_once_the_operator_gives_the_s3_keys(environment):
    """docker-compose.temporal.yml runs BUD_ENV=production: its settings must pass, with the keys from the shell."""
    compose = yaml.safe_load((ROOT / "docker-compose.temporal.yml").read_text())
    operator = {"BUD_S3_ACCESS_KEY": "operator-access", "BUD_S3_SECRET_KEY": "operator-secret",
                "BUD_SECRET_KEY": Fernet.generate_key().decode()}
    for name, value in compose["services"]["api"]["environment"].items():
        # Compose interpolation: ${NAME:?message} takes NAME from the shell of whoever runs `docker compose up`.
        environment.setenv(name, re.sub(r"\$\{(\w+):\?[^}]*\}", lambda match: operator[match[1]], str(value)))
    settings = Settings()
    assert settings.env == "production" and settings.s3_secret_key == "operator-secret"


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
