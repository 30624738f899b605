"""The DICOM node's configuration: validated (pydantic) from YAML, like the training configs.

    spool: /var/lib/meddenoise/spool
    listen: {host: 127.0.0.1, port: 11112, ae_title: MEDDENOISE}
    destination: {host: 127.0.0.1, port: 4242, ae_title: ORTHANC}
    access: {calling_ae_titles: [ORTHANC, CT_SCANNER], addresses: [127.0.0.1, 10.1.0.0/16]}
    processing: {method: default, quiet_seconds: 10}

Every field has a default but `spool`, `destination` and `access.calling_ae_titles`: a node that
accepts anyone, or has nowhere to send, is a choice the configuration states.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator

from meddenoise.config import ConfigError, Strict, validated

__all__ = ["AccessConfig", "NodeConfig", "load_node_config"]


def _ae_title(title: str) -> str:
    """An AE title as DICOM PS3.5 allows: 1-16 characters of printable ASCII but backslash."""
    stripped = title.strip()
    if not 0 < len(stripped) <= 16:
        raise ValueError(f"AE title {title!r} must be 1-16 characters")
    if any(not 32 <= ord(char) < 127 or char == "\\" for char in stripped):
        raise ValueError(f"AE title {title!r} holds a control character or backslash")
    return stripped


class Endpoint(Strict):
    host: str = Field("127.0.0.1", description="address to listen on, or of the peer")
    port: int = Field(11112, ge=1, le=65535, description="TCP port")
    ae_title: str = Field("MEDDENOISE", description="application entity title (1-16 chars)")

    @field_validator("ae_title")
    @classmethod
    def valid_title(cls, title: str) -> str:
        return _ae_title(title)


class AccessConfig(Strict):
    calling_ae_titles: list[str] = Field(
        min_length=1,
        description='calling AE titles allowed to connect; ["*"] allows any (stated, not default)',
    )
    addresses: list[str] = Field(
        default_factory=list,
        description="peer addresses or networks (CIDR) allowed to connect; empty: any address",
    )

    @field_validator("calling_ae_titles")
    @classmethod
    def valid_titles(cls, titles: list[str]) -> list[str]:
        return titles if titles == ["*"] else [_ae_title(title) for title in titles]

    @field_validator("addresses")
    @classmethod
    def valid_networks(cls, addresses: list[str]) -> list[str]:
        for address in addresses:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ValueError(f"{address!r} is not an IP address or network") from None
        return addresses

    def allows_title(self, title: str) -> bool:
        """Whether a calling AE title may associate."""
        return self.calling_ae_titles == ["*"] or title.strip() in self.calling_ae_titles

    def allows_address(self, address: str) -> bool:
        """Whether a peer address may associate (any, when no address is listed)."""
        if not self.addresses:
            return True
        try:
            peer = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(peer in ipaddress.ip_network(net, strict=False) for net in self.addresses)


class LimitsConfig(Strict):
    max_instance_mib: float = Field(
        1024.0, gt=0, description="largest instance accepted (MiB); larger ones are refused"
    )
    spool_limit_gib: float = Field(
        20.0, gt=0, description="received and derived files kept at most (GiB) before refusing"
    )
    min_free_disk_gib: float = Field(
        1.0, ge=0, description="refuse new instances when the disk would keep less free (GiB)"
    )
    max_pixels: int = Field(
        400_000_000, gt=0, description="refuse instances whose image holds more pixels"
    )


class ProcessingConfig(Strict):
    method: str = Field("default", description="denoising method (see `meddenoise methods`)")
    sigma: float | None = Field(
        None, gt=0, description="Gaussian noise level in 0-255 units; estimated when unset"
    )
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="network precision")
    quiet_seconds: float = Field(
        10.0, gt=0, description="a series is complete when no instance arrived for this long"
    )
    workers: int = Field(1, ge=1, le=16, description="series denoised at once, one model each")


class DeliveryConfig(Strict):
    retry_initial_seconds: float = Field(2.0, gt=0, description="first wait after a failure")
    retry_max_seconds: float = Field(300.0, gt=0, description="longest wait between attempts")
    max_rejections: int = Field(
        5,
        ge=1,
        description="a series the destination refuses (a failure status) this many times "
        "fails; an unreachable destination is retried without limit",
    )
    timeout_seconds: float = Field(30.0, gt=0, description="network timeout of each send")


class NodeConfig(Strict):
    spool: Path = Field(description="folder for received instances, derived series and state")
    listen: Endpoint = Field(default_factory=Endpoint)  # type: ignore[arg-type]
    destination: Endpoint = Field(description="where derived series are sent (C-STORE)")
    access: AccessConfig
    limits: LimitsConfig = Field(default_factory=LimitsConfig)  # type: ignore[arg-type]
    processing: ProcessingConfig = Field(default_factory=ProcessingConfig)  # type: ignore[arg-type]
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)  # type: ignore[arg-type]


def load_node_config(source: str | Path | dict[str, Any]) -> NodeConfig:
    """Read a node configuration from YAML (or a dict) and validate it; errors name the field.

    Parameters
    ----------
    source
        A YAML file or the mapping it would hold.  A relative ``spool`` is taken relative to
        the file's folder.

    Returns
    -------
    NodeConfig
        The validated configuration.

    Raises
    ------
    ConfigError
        One message listing every invalid field.
    """
    base = Path.cwd()
    if isinstance(source, dict):
        tree = dict(source)
    else:
        path = Path(source)
        base = path.resolve().parent
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"{path}: cannot read node config: {error}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: a node config is a mapping of fields")
    config = validated(NodeConfig, tree, "node config")
    if not config.spool.is_absolute():
        config.spool = base / config.spool
    return config
