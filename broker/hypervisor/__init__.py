"""The one door to the hypervisor: callers use `driver_for_host()` and the errors in base.py."""

from .base import (
    BalloonInfo,
    DomainInfo,
    DomainNotFound,
    DomainSpec,
    GraphicsPorts,
    HostCapacity,
    HostUnreachable,
    HostUsage,
    HypervisorDriver,
    HypervisorError,
    ImageUnavailable,
    MigrationProgress,
    NetworkInfo,
    NicSpec,
    StorageFull,
    VolumeInfo,
)
from .registry import driver_for_host, driver_for_uri

__all__ = [
    "BalloonInfo",
    "DomainInfo",
    "DomainNotFound",
    "DomainSpec",
    "GraphicsPorts",
    "HostCapacity",
    "HostUnreachable",
    "HostUsage",
    "HypervisorDriver",
    "HypervisorError",
    "ImageUnavailable",
    "MigrationProgress",
    "NetworkInfo",
    "NicSpec",
    "StorageFull",
    "VolumeInfo",
    "driver_for_host",
    "driver_for_uri",
]
