from .backups import DataDiskBackup
from .desktops import Desktop, DesktopState, IllegalTransition
from .entitlements import Entitlement
from .events import BrokerEvent, DesktopEvent
from .farms import PublishedApp
from .hosts import Host
from .images import GoldenImage, GoldenImageVersion
from .jobs import Job
from .live_migrations import LiveMigration
from .networks import PoolNetwork
from .pools import Pool
from .schedules import PoolScheduleRule
from .sessions import ConsoleSession
from .tickets import ConsoleTicket

__all__ = [
    "DataDiskBackup",
    "BrokerEvent",
    "ConsoleSession",
    "ConsoleTicket",
    "Desktop",
    "DesktopEvent",
    "DesktopState",
    "Entitlement",
    "GoldenImage",
    "GoldenImageVersion",
    "Host",
    "IllegalTransition",
    "Job",
    "LiveMigration",
    "Pool",
    "PoolNetwork",
    "PoolScheduleRule",
    "PublishedApp",
]
