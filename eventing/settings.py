"""Settings from the environment, validated once into a frozen typed object.

func-python hands `start(cfg)` a copy of the environment (func.yaml `run.envs`,
Kubernetes Secrets); nothing else reads os.environ. A bad setting stops the
function at start with the variable's name, never its value (it may be a secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ONE_MIB = 1024 * 1024


class SettingsError(Exception):
    """The environment does not describe a runnable function."""


class EnvSettings(BaseModel):
    """A frozen view of environment variables, each field aliased to its variable."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        try:
            return cls.model_validate(dict(env))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise SettingsError(f"invalid settings: {problems}") from None


class Settings(EnvSettings):
    """What every function reads. Functions extend it with their own fields."""

    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    max_event_bytes: int = Field(default=ONE_MIB, alias="MAX_EVENT_BYTES", gt=0)
    log_level: str = Field(default="INFO", alias="LOG_LEVEL",
                           pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    database_pool_size: int = Field(default=4, alias="DATABASE_POOL_SIZE", ge=1, le=64)
    # Where facts go (a SinkBinding injects it): functions with an outbox relay there.
    k_sink: str | None = Field(default=None, alias="K_SINK", pattern=r"^https?://")
