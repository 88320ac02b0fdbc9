"""Environment report for bug reports and benchmark records: `python utils_mlu/collect_env.py`.

Reports OS, Python, CPU and memory, torch / torchvision, the CUDA stack (build version, cuDNN,
driver), the Cambricon stack (torch_mlu, NEUWARE_HOME, driver from `cnmon`, CNToolkit library
versions from the .so names) and the devices each runtime shows. Works without torch_mlu, CUDA
or even torch: whatever is missing is reported as missing. `--json` prints the same as JSON.
The device probing goes through `yolov5/utils/device/devices.py`, the one module that knows device kinds.
"""
import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections import OrderedDict
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
KEY_PACKAGES = ("numpy", "opencv-python-headless", "opencv-python", "PyYAML", "matplotlib",
                "scipy", "pycocotools", "pillow", "tqdm", "psutil", "pytest")
CNTOOLKIT_LIBS = ("cnrt", "cndrv", "cndev", "cnnl", "cncl", "mluops")
MISSING = "not installed"


def _run(cmd, timeout=15):
    """stdout of a command, or None when it is absent or fails."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _version(dist_name):
    try:
        return metadata.version(dist_name)
    except metadata.PackageNotFoundError:
        return None


def system_info():
    info = OrderedDict()
    os_name = platform.platform()
    release = Path("/etc/os-release")
    if release.is_file():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} ({platform.machine()})"
    info["os"] = os_name
    info["kernel"] = platform.release()
    info["python"] = f"{platform.python_version()} ({platform.python_implementation()}, " \
                     f"{sys.maxsize.bit_length() + 1}-bit) at {sys.executable}"
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    info["cpu"] = f"{cpu}, {os.cpu_count()} logical cores"
    info["memory"] = _host_memory()
    return info


def _host_memory():
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2 ** 20:.1f} GiB"
    return "unknown"


def torch_info():
    info = OrderedDict()
    try:
        import torch
    except Exception as e:  # report, never fail: this tool exists for broken setups too
        info["torch"] = f"{MISSING} or broken ({type(e).__name__}: {e})"
        return info, None
    info["torch"] = torch.__version__
    info["torch_debug_build"] = bool(torch.version.debug)
    info["torchvision"] = _version("torchvision") or MISSING
    info["cuda_build"] = torch.version.cuda or "none (CPU or other accelerator build)"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    info["cudnn"] = str(cudnn) if cudnn else "none"
    smi = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    info["nvidia_driver"] = smi.splitlines()[0].strip() if smi else "none found (nvidia-smi)"
    if str(REPO_ROOT / "yolov5") not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / "yolov5"))
    try:
        from utils.device.devices import inventory
        inv = inventory()
    except Exception as e:
        inv = {"error": f"{type(e).__name__}: {e}"}
    return info, inv


def cambricon_info(inventory):
    info = OrderedDict()
    mlu = (inventory or {}).get("mlu", {})
    info["torch_mlu"] = mlu.get("version") or _version("torch_mlu") or MISSING
    info["torch_mlu_status"] = mlu.get("status", "unknown") + (
        f" ({mlu['detail']})" if mlu.get("detail") else "")
    home = os.environ.get("NEUWARE_HOME") or ("/usr/local/neuware"
                                               if Path("/usr/local/neuware").is_dir() else None)
    info["neuware_home"] = home or "not set"
    info["cntoolkit_libraries"] = _library_versions(home) if home else "none"
    cnmon = _run(["cnmon"])
    driver = re.search(r"Driver\s+(v?\d+\.\d+\.\d+)", cnmon or "")
    info["mlu_driver"] = driver.group(1) if driver else "none found (cnmon)"
    return info


def _library_versions(home):
    """Versions from versioned .so names (libcnrt.so.6.2.1 -> cnrt 6.2.1) under NEUWARE_HOME."""
    found = OrderedDict()
    for lib in CNTOOLKIT_LIBS:
        names = sorted(p.name for sub in ("lib64", "lib") for p in Path(home, sub).glob(f"lib{lib}.so.*"))
        if names:
            found[lib] = max(names, key=len).split(".so.", 1)[1]
    return ", ".join(f"{k} {v}" for k, v in found.items()) or "none found"


def devices_info(inventory):
    lines = OrderedDict()
    if not inventory or "error" in inventory:
        lines["devices"] = f"not probed ({(inventory or {}).get('error', 'torch missing')})"
        return lines
    for kind in ("cuda", "mlu"):
        entry = inventory[kind]
        devs = entry["devices"]
        shown = "; ".join(f"{kind.upper()}:{d['index']} {d['name']} "
                          f"{d['total_memory'] / 2 ** 20:.0f}MB" for d in devs)
        lines[f"{kind}_devices"] = f"{len(devs)}" + (f" ({shown})" if devs else "") + \
            f", {entry['visible']}"
        if entry.get("standin"):  # YOLOV5_STANDIN_MLU=1: the test device, say so plainly
            lines[f"{kind}_devices"] += f"; {entry['detail']}"
    return lines


def packages_info():
    return OrderedDict((name, _version(name) or MISSING) for name in KEY_PACKAGES)


def collect():
    """The whole report as {section: {key: value}}."""
    torch_part, inventory = torch_info()
    return OrderedDict([
        ("system", system_info()),
        ("pytorch", torch_part),
        ("cambricon", cambricon_info(inventory)),
        ("devices", devices_info(inventory)),
        ("packages", packages_info()),
    ])


def render(report) -> str:
    out = []
    for section, items in report.items():
        out.append(f"[{section}]")
        width = max(len(k) for k in items) if items else 0
        out.extend(f"  {k.ljust(width)} : {v}" for k, v in items.items())
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = collect()
    print(json.dumps(report, indent=2) if args.json else render(report))


if __name__ == "__main__":
    main()
