"""The coordinator's consortium settings (``consortium.toml``): its address, names and validity."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from common.validation import StrictModel, read_table, validated


class ConsortiumSettings(StrictModel):
    """The coordinator's side of a consortium: what its certificate names and its kits announce.

    ``address`` is the one place sites connect to (the Fleet-only proxy); its host is always a
    name in the coordinator's certificate, so a kit can never point sites at a name that fails
    TLS verification. ``hostnames`` adds further DNS names or IP addresses the same certificate
    must cover (another interface, a load balancer's name).
    """

    name: str = Field("insite consortium", min_length=1, description="shown in the CA's subject")
    address: str = Field(description="host:port sites connect to; goes into every site kit")
    hostnames: tuple[str, ...] = ()
    listen: str = Field("0.0.0.0", description="interface the public endpoint binds to")
    certificate_days: int = Field(365, ge=1, le=3650)
    ca_days: int = Field(3650, ge=1)
    renew_before_days: int = Field(30, ge=1, description="'insite coord status' warns from here on")

    @field_validator("address")
    @classmethod
    def _host_port(cls, address: str) -> str:
        found = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):([0-9]{1,5})", address)
        if not found or not 0 < int(found[2]) < 65536:
            raise ValueError(f"'{address}' is not host:port (e.g. coordinator.example.org:9092, [2001:db8::1]:9092)")
        return address

    @model_validator(mode="after")
    def _ca_outlives_certificate(self) -> ConsortiumSettings:
        if self.certificate_days > self.ca_days:
            raise ValueError("certificate_days must not exceed ca_days (the CA would expire first)")
        return self

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


def load_consortium_settings(path: Path) -> ConsortiumSettings:
    """Read ``consortium.toml``; its one ``[consortium]`` table holds :class:`ConsortiumSettings`."""
    return validated(ConsortiumSettings, read_table(path, "consortium"), str(path))
