"""The root settings model every entry point loads: ``<home>/vna.toml`` plus ``VNA_*``.

Composed of the packages' sections: the archive's at the top level of the file
(:class:`archive.api.ArchiveSettings`, so files written before the split read the same),
the gateway's under ``[gateway]`` (:class:`dicomweb.settings.GatewaySettings`). Each
package is handed its own section (the archive sees an ``ArchiveSettings``); only the
composition roots and ``deploy/`` know the whole.

Precedence, highest first: explicit arguments, environment (``VNA_DICOM_PORT``,
``VNA_STORAGE__ZSTD_LEVEL`` for nested fields), the TOML file, the embedded defaults.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from archive.api import ArchiveSettings
from dicomweb.settings import GatewaySettings
from security.api import InvalidInput

__all__ = ["Settings", "load_settings"]

# the TOML file of the settings being built; a context variable keeps load_settings reentrant
_toml_file: ContextVar[Path | None] = ContextVar("vna_toml_file", default=None)


class Settings(ArchiveSettings, BaseSettings):
    """The whole configuration: the archive's section and ``gateway``."""

    model_config = SettingsConfigDict(
        env_prefix="VNA_", env_nested_delimiter="__", extra="forbid", toml_file=None
    )

    gateway: GatewaySettings = GatewaySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = _toml_file.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


def load_settings(home: Path | str | None = None, **overrides: Any) -> Settings:
    """Load settings for the archive home ``home`` (else ``VNA_HOME``, else ``./var``)."""
    resolved = Path(home or os.environ.get("VNA_HOME") or "var").absolute()
    toml = Path(os.environ.get("VNA_CONFIG") or resolved / "vna.toml")
    token = _toml_file.set(toml if toml.exists() else None)
    try:
        return Settings(home=resolved, **overrides)
    except ValidationError as exc:
        raise InvalidInput(_explain(exc, toml)) from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{toml} is not valid TOML ({exc}); fix it and start again") from None
    finally:
        _toml_file.reset(token)


def _explain(exc: ValidationError, toml: Path) -> str:
    """One line per mistake, naming the setting; never the value given (it may be a secret)."""
    mistakes = []
    for error in exc.errors(include_input=False, include_url=False):
        name = ".".join(str(part) for part in error["loc"]) or "(the whole file)"
        if error["type"] == "extra_forbidden":
            mistakes.append(f"unknown setting '{name}'")
        else:
            mistakes.append(f"'{name}': {error['msg']}")
    where = f"{toml} or the VNA_* environment" if toml.exists() else "the VNA_* environment"
    return (
        f"the settings in {where} are not valid: {'; '.join(mistakes)} "
        f"(docs/configuration.md lists every setting)"
    )
