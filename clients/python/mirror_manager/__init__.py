"""The mirror manager's Python API, served by mirrorhost.

    from mirror_manager import MirrorManagementManager, AuthMethod
    mgr = MirrorManagementManager("http://127.0.0.1:8080", token)
"""

from .errors import MirrorManagerError, TransportError
from .manager import (
    AuthMethod,
    Auth,
    Bandwidth,
    Conflicts,
    MirrorManagementManager,
    Monitoring,
    Plugins,
    Projects,
    PullMirrors,
    PushMirrors,
    Resolution,
    Runs,
    Scheduler,
)

__all__ = [
    "Auth",
    "AuthMethod",
    "Bandwidth",
    "Conflicts",
    "MirrorManagementManager",
    "MirrorManagerError",
    "Monitoring",
    "Plugins",
    "Projects",
    "PullMirrors",
    "PushMirrors",
    "Resolution",
    "Runs",
    "Scheduler",
    "TransportError",
]
