"""Confining the process that runs a job's model: its own job folder only, no network.

Called once in the child of :mod:`worker.contained`, after torch and the core are imported and
before the upload is opened. On Linux:

- **Landlock** (kernel 5.13+): the process and its threads keep read access to the Python
  installation and the code's packages, read/write access to the job's own folder, and nothing
  else of the file system - not the worker's artifact or upload folders (other tenants' files),
  not the dataset cache (only the job's own dataset file), not /etc, not /proc of other
  processes. ABI 4+ also refuses every TCP bind/connect; ABI 6+ refuses signals to, and abstract
  UNIX sockets of, processes outside the sandbox.
- **A network namespace** of its own (no interface but a loopback that is down), made with
  ``unshare`` (as root directly, else inside a new user namespace).
- The environment is emptied down to a few locale/thread variables: database URLs, API secrets
  and cloud credentials stay in the worker.

Where Landlock is missing (older kernels, other systems) the run goes on with the operator
allowlist (core/intake/operators.py) and the supervision of worker/contained.py only;
``Confinement`` says which layers took effect, and the child logs it.

Written with ctypes because Python's standard library has no Landlock binding and the PyPI ones
are pre-release or cover only the file-system rules of ABI 1 (no TCP or scope rules).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# x86_64 and aarch64 share these numbers (the generic syscall table).
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000

# File-system rights by the ABI that introduced them (include/uapi/linux/landlock.h).
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1, 1 << 1, 1 << 2, 1 << 3
_FS_ABI1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 1 << 1
_READ = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV

_KEPT_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_KEPT_PREFIXES = ("CUDA_", "NVIDIA_")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the kernel's header
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@dataclass
class Confinement:
    """Which layers took effect in this process."""

    landlock_abi: int = 0
    network_namespace: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        landlock = f"Landlock ABI {self.landlock_abi}" if self.landlock_abi else "no Landlock"
        network = "own network namespace" if self.network_namespace else "shared network"
        return f"{landlock}, {network}" + (f" ({'; '.join(self.notes)})" if self.notes else "")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where it has none (or this is not Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    libc = _libc()
    version = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)
    return max(int(version), 0)


def readable_code_paths() -> list[Path]:
    """What the contained process must still read: the interpreter, its libraries and the
    packages of this service (not the repository around them, which may hold var/)."""
    import core
    import worker

    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    paths |= {Path(p) for p in sys.path if p and Path(p).is_dir() and "site-packages" in p}
    paths |= {Path(core.__file__).parent, Path(worker.__file__).parent}
    # Package metadata (importlib.metadata: the report names the versions it ran with), wherever
    # the installation keeps it: an editable install's .egg-info sits in the repository.
    for distribution in importlib.metadata.distributions():
        location = getattr(distribution, "_path", None)
        if isinstance(location, Path):
            paths.add(location)
    paths |= {Path(p) for p in ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/share")}
    # CPU facts torch reads to pick its kernels (cpuinfo), not secrets.
    paths |= {Path("/sys/devices/system/cpu"), Path("/proc/cpuinfo"), Path("/proc/self")}
    paths.add(Path("/etc/ld.so.cache"))
    return sorted(p for p in paths if p.exists())


def confine(work: Path, *, readable: Sequence[Path] = (), network: bool = False) -> Confinement:
    """Confine this process (and its threads) to ``work`` (read/write) plus ``readable`` and the
    code paths (read only). Call it while the process has a single thread."""
    state = Confinement()
    _scrub_environment(work)
    if not network:
        state.network_namespace = _unshare_network(state)
    state.landlock_abi = _landlock(work, [*readable_code_paths(), *readable], state)
    return state


def _scrub_environment(work: Path) -> None:
    kept = {
        name: value
        for name, value in os.environ.items()
        if name in _KEPT_ENVIRONMENT or name.startswith(_KEPT_PREFIXES)
    }
    os.environ.clear()
    os.environ.update(kept)
    scratch = work / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {"TMPDIR": str(scratch), "HOME": str(scratch), "MPLCONFIGDIR": str(scratch / "mpl")}
    )
    import tempfile

    tempfile.tempdir = None  # re-read TMPDIR


def _unshare_network(state: Confinement) -> bool:
    libc = _libc()
    for flags in (_CLONE_NEWNET, _CLONE_NEWUSER | _CLONE_NEWNET):
        if libc.unshare(flags) == 0:
            return True
    state.notes.append(f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}")
    return False


def _landlock(work: Path, readable: list[Path], state: Confinement) -> int:
    abi = landlock_abi()
    if abi == 0:
        state.notes.append("the kernel has no Landlock")
        return 0
    libc = _libc()
    handled = _FS_ABI1
    if abi >= 2:
        handled |= _FS_REFER
    if abi >= 3:
        handled |= _FS_TRUNCATE
    if abi >= 5:
        handled |= _FS_IOCTL_DEV
    attr = _RulesetAttr(handled_access_fs=handled)
    size = 8
    if abi >= 4:  # no TCP bind or connect at all: no rule allows any port
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        size = 24
    ruleset = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        state.notes.append(f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
        return 0
    try:
        _allow(libc, ruleset, work, handled)
        for path in readable:
            _allow(libc, ruleset, path, _READ)
        for name in ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"):
            _allow(libc, ruleset, Path(name), _FS_READ_FILE | _FS_WRITE_FILE)
        for device in sorted(Path("/dev").glob("nvidia*")):  # CUDA talks to these by ioctl
            _allow(libc, ruleset, device, _FILE_RIGHTS & handled)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def _allow(libc: ctypes.CDLL, ruleset: int, path: Path, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EACCES):
            return
        raise
    try:
        if not path.is_dir():  # a file takes file rights only
            access &= _FILE_RIGHTS
        rule = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
        if libc.syscall(_SYS_LANDLOCK_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0):
            raise OSError(ctypes.get_errno(), f"landlock_add_rule({path})")
    finally:
        os.close(fd)
