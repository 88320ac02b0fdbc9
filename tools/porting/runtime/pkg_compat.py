"""The part of pkg_resources a YOLOv5 tree uses, on importlib.metadata and packaging.

Written into the tree by `apply_patch.sh PATH --modernize` because setuptools no longer provides
pkg_resources on current Python stacks; removed by `--revert`.
"""
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import Version, parse as _parse


class DistributionNotFound(Exception):
    pass


class VersionConflict(Exception):
    pass


def parse_version(text):
    """A comparable version; text that is not a version compares as 0 instead of raising."""
    try:
        return _parse(str(text))
    except Exception:
        return Version('0')


def parse_requirements(lines):
    """Requirement objects (.name, .specifier) from requirement lines, skipping comments and options."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    for line in lines:
        line = line.split(' #')[0].strip()
        if not line or line.startswith(('#', '-')):
            continue
        try:
            yield Requirement(line)
        except InvalidRequirement:
            continue


def require(requirement):
    """Raise DistributionNotFound or VersionConflict unless the requirement is installed."""
    req = Requirement(str(requirement))
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        raise DistributionNotFound(f'{req.name} is not installed') from None
    if req.specifier and not req.specifier.contains(installed, prereleases=True):
        raise VersionConflict(f'{req.name} {installed} does not satisfy {req}')
    return [installed]
