"""What the user asked for: the `--device` string, visible-device variables, torchrun variables.

Pure parsing, no torch: `utils.device.devices` turns these requests into a real device. Kept apart so
the grammar and the environment rules can be read (and tested) without any accelerator.

`--device` grammar (case-insensitive, spaces ignored):
    ''               auto: the first available of CUDA, MLU, else CPU
    'cpu'            CPU
    '0' / '0,1,2,3'  CUDA indices (upstream YOLOv5 meaning)
    'cuda' / 'cuda:N' / 'cuda:0,1'
    'mlu'  / 'mlu:N'  / 'mlu:0,1'

We never *write* visible-device variables. Upstream sets CUDA_VISIBLE_DEVICES=-1 for 'cpu' and
CUDA_VISIBLE_DEVICES=<list> for '0,1'; torch_mlu 2.x also reads CUDA_VISIBLE_DEVICES when the MLU
variables are unset, so that would hide MLUs from later code, and it has no effect at all once
CUDA is initialised. Instead the chosen indices are carried explicitly (`Device.indices`), and the
variables are only read, to explain errors and to count cards without starting a driver.
"""
import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

from utils.errors import UserError

ACCELERATORS = ("cuda", "mlu")

# Order in which each runtime reads its visibility variable (torch_mlu 2.x: CN_, then MLU_, then
# CUDA_VISIBLE_DEVICES, so CUDA_VISIBLE_DEVICES=-1 alone also hides MLUs).
VISIBLE_DEVICE_VARIABLES = {
    "cuda": ("CUDA_VISIBLE_DEVICES",),
    "mlu": ("CN_VISIBLE_DEVICES", "MLU_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"),
}

_INDEX_LIST = re.compile(r"^\d+(,\d+)*$")
_HINTS = {
    "gpu": "for NVIDIA GPUs use 'cuda' or an index such as '0'",
    "mps": "Apple MPS is not supported by this trainer; use 'cpu'",
}
_GRAMMAR = "use '' (auto), 'cpu', CUDA indices like '0' or '0,1', 'cuda', 'cuda:N', 'mlu' or 'mlu:N'"


@dataclass(frozen=True)
class DeviceRequest:
    """A parsed `--device` value. `indices` is empty when no index was given."""

    text: str
    kind: str  # 'auto' | 'cpu' | 'cuda' | 'mlu'
    indices: Tuple[int, ...] = ()


def parse_device(text: Optional[str]) -> DeviceRequest:
    """Parse a `--device` value; raise UserError naming the accepted forms when it is not one."""
    raw = "" if text is None else str(text)
    norm = raw.strip().lower().replace(" ", "")
    if norm == "":
        return DeviceRequest(norm, "auto")
    if norm == "cpu":
        return DeviceRequest(norm, "cpu")
    if norm in ACCELERATORS:
        return DeviceRequest(norm, norm)
    kind, listed = "cuda", norm
    for accel in ACCELERATORS:
        if norm.startswith(accel + ":"):
            kind, listed = accel, norm[len(accel) + 1:]
            break
    if not _INDEX_LIST.match(listed):
        hint = _HINTS.get(norm.split(":")[0], _GRAMMAR)
        raise UserError(f"--device {raw!r} is not a device: {hint}")
    indices = tuple(int(i) for i in listed.split(","))
    if len(set(indices)) != len(indices):
        raise UserError(f"--device {raw!r} lists a device twice: list each index once, e.g. '0,1'")
    return DeviceRequest(norm, kind, indices)


@dataclass(frozen=True)
class VisibleDevices:
    """What a visibility variable allows. `entries is None` means no variable is set (all visible)."""

    variable: Optional[str]
    entries: Optional[Tuple[str, ...]]

    @property
    def count(self) -> Optional[int]:
        return None if self.entries is None else len(self.entries)

    def describe(self) -> str:
        if self.variable is None:
            return "no visible-device variable set"
        return f"{self.variable}={','.join(self.entries) or repr('')}"


def _parse_visible_list(value: str) -> Tuple[str, ...]:
    """Entries up to the first invalid one, as the CUDA and torch_mlu parsers do ('0,-1,2' -> 0)."""
    entries = []
    for item in value.split(","):
        item = item.strip()
        if item.isdigit() or re.match(r"^[A-Za-z]+-[0-9A-Za-z-]+$", item):  # ordinal or UUID
            entries.append(item)
        else:
            break
    return tuple(entries)


def visible_devices(kind: str, environ: Optional[Mapping[str, str]] = None) -> VisibleDevices:
    """Which devices of `kind` the runtime will show, according to its visibility variables."""
    env = os.environ if environ is None else environ
    for name in VISIBLE_DEVICE_VARIABLES.get(kind, ()):
        if name in env:
            return VisibleDevices(name, _parse_visible_list(env[name]))
    return VisibleDevices(None, None)


@dataclass(frozen=True)
class LaunchEnv:
    """Process placement set by torchrun (`python -m torch.distributed.run`); -1/1 when absent."""

    local_rank: int = -1
    rank: int = -1
    world_size: int = 1
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.local_rank >= 0


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer; it is set by "
                        f"torchrun, so unset it when not launching with torchrun") from None


def launch_env(environ: Optional[Mapping[str, str]] = None) -> LaunchEnv:
    """Read LOCAL_RANK, RANK, WORLD_SIZE, LOCAL_WORLD_SIZE (torchrun's variables)."""
    env = os.environ if environ is None else environ
    local_rank = _env_int(env, "LOCAL_RANK", -1)
    world_size = _env_int(env, "WORLD_SIZE", 1)
    local_world = _env_int(env, "LOCAL_WORLD_SIZE", world_size if local_rank >= 0 else 1)
    if local_rank >= 0 and not 0 <= local_rank < max(local_world, 1):
        raise UserError(f"LOCAL_RANK={local_rank} is outside LOCAL_WORLD_SIZE={local_world}; "
                        f"launch with torchrun, which sets both consistently")
    return LaunchEnv(local_rank, _env_int(env, "RANK", -1), world_size, local_world)
